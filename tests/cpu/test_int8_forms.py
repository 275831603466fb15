"""Quantized model forms end to end on the CPU device's int8 kernels: ONNX Runtime's
quantize_static (QOperator: QLinearConv/QLinearMatMul; QDQ), per tensor and per channel, u8 and
s8 (asymmetric) activations; ConvInteger and MatMulInteger built with onnx.helper; an FQ graph
with TFLite-style asymmetric activations and TensorFlow's full-integer TFLite models (slow). Each runs its convolutions/MatMuls on int8 kernels
(the plan's exec types say so) and matches REFERENCE (the same graph in float) and ONNX Runtime
within int8 rounding."""

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")

import onnx  # noqa: E402
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

import ember  # noqa: E402

SHAPE = [1, 8, 14, 14]


def _tiny_cnn(path, seed=0):
    """Conv 3x3 stride 2 + ReLU, Conv 1x1 + ReLU, Reshape, MatMul: f32, for quantize_static."""
    rng = np.random.default_rng(seed)
    inits = [nh.from_array((rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32), "w1"),
             nh.from_array((rng.standard_normal(16) * 0.1).astype(np.float32), "b1"),
             nh.from_array((rng.standard_normal((24, 16, 1, 1)) * 0.2).astype(np.float32), "w2"),
             nh.from_array((rng.standard_normal(24) * 0.1).astype(np.float32), "b2"),
             nh.from_array(np.array([1, 24 * 7 * 7], np.int64), "shape"),
             nh.from_array((rng.standard_normal((24 * 7 * 7, 10)) * 0.05).astype(np.float32), "wf")]
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
             h.make_node("Relu", ["c2"], ["r2"]),
             h.make_node("Reshape", ["r2", "shape"], ["f"]),
             h.make_node("MatMul", ["f", "wf"], ["y"])]
    g = h.make_graph(nodes, "tiny", [h.make_tensor_value_info("x", T.FLOAT, SHAPE)],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 10])], inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)


def _ort_quantized(folder, fmt, per_channel, activation):
    q = quantization
    src = folder / "f32.onnx"
    if not src.exists():
        _tiny_cnn(src)
    out = folder / f"{fmt}-{per_channel}-{activation}.onnx"
    rng = np.random.default_rng(1)

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    q.quantize_static(str(src), str(out), Reader(),
                      quant_format=q.QuantFormat.QOperator if fmt == "qoperator" else q.QuantFormat.QDQ,
                      per_channel=per_channel, weight_type=q.QuantType.QInt8,
                      activation_type=q.QuantType.QUInt8 if activation == "u8" else q.QuantType.QInt8)
    return out


def _integer_model(path, kind, seed=0):
    """QuantizeLinear -> ConvInteger / MatMulInteger -> Cast -> Mul(scale): the dynamic-range
    form with static ranges (u8 activations with zero point 100; u8 weights with zero point 120
    for the convolution, s8 symmetric for the MatMul)."""
    rng = np.random.default_rng(seed)
    s_x, zp_x = 0.02, 100
    inits = [nh.from_array(np.array(s_x, np.float32), "sx"), nh.from_array(np.array(zp_x, np.uint8), "zx")]
    nodes = [h.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"])]
    if kind == "conv_integer":
        w = rng.integers(60, 180, (16, 8, 3, 3)).astype(np.uint8)
        inits += [nh.from_array(w, "w"), nh.from_array(np.array(120, np.uint8), "zw"),
                  nh.from_array(np.array(s_x * 0.01, np.float32), "s")]
        nodes += [h.make_node("ConvInteger", ["xq", "w", "zx", "zw"], ["acc"], pads=[1, 1, 1, 1])]
        out_shape = [1, 16, 14, 14]
    else:
        w = rng.integers(-127, 128, (14, 9)).astype(np.int8)
        inits += [nh.from_array(w, "w"), nh.from_array(np.array(s_x * 0.01, np.float32), "s")]
        nodes += [h.make_node("MatMulInteger", ["xq", "w", "zx"], ["acc"])]
        out_shape = [1, 8, 14, 9]
    nodes += [h.make_node("Cast", ["acc"], ["accf"], to=T.FLOAT), h.make_node("Mul", ["accf", "s"], ["y"])]
    g = h.make_graph(nodes, kind, [h.make_tensor_value_info("x", T.FLOAT, SHAPE)],
                     [h.make_tensor_value_info("y", T.FLOAT, out_shape)], inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), path)


# (form, per_channel, activation, int8 ops)
CASES = [
    ("qoperator", False, "u8", 3),
    ("qoperator", True, "u8", 3),
    ("qoperator", True, "s8", 3),
    ("qdq", False, "s8", 3),
    ("qdq", True, "u8", 3),
    ("conv_integer", False, "u8", 1),
    ("matmul_integer", False, "u8", 1),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("int8_forms")


@pytest.mark.parametrize("form, per_channel, activation, int8_ops", CASES,
                         ids=[f"{c[0]}-{'pc' if c[1] else 'pt'}-{c[2]}" for c in CASES])
def test_onnx_quantized_form_runs_int8(folder, form, per_channel, activation, int8_ops):
    if form in ("conv_integer", "matmul_integer"):
        path = folder / f"{form}.onnx"
        _integer_model(path, form)
    else:
        path = folder / f"{form}-{per_channel}-{activation}.onnx"
        if not path.exists():
            path = _ort_quantized(folder, form, per_channel, activation)
    x = (np.random.default_rng(5).standard_normal(SHAPE) * 0.8).astype(np.float32)
    core = ember.Core()
    cm = core.compile_model(ember.convert_model(path), "CPU")
    got = cm(x)[0]
    stats = cm._executable.program.stats
    # the model's s8 output (QuantizeLinear + DequantizeLinear at the end) converts f32 <-> i8 on
    # reference kernels (the elementwise kernel has no i8 Convert); nothing else may fall back
    assert stats.get("int8_ops", 0) == int8_ops and set(stats["fallbacks"]) <= ({"Convert"} if activation == "s8" else set())
    assert sum(t.endswith("_I8") for t in stats["exec_types"].values()) == int8_ops
    ops = [n.type_name for n in cm.get_runtime_model().get_ordered_ops()]
    assert "Convolution" not in ops and "MatMul" not in ops  # nothing left in float
    ref = core.compile_model(ember.convert_model(path), "REFERENCE")(x)[0]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    mag = float(np.abs(want).max())
    # the same steps as the float graph: equal but for f32 summation order and, where ONNX's
    # QuantizeLinear (x / s rounded) became FakeQuantize arithmetic, a rare tie one step away
    assert float(np.abs(got - ref).max()) <= 1e-2 * mag
    assert float(np.mean(np.abs(got - ref))) <= 1e-4 * mag
    assert float(np.abs(got - want).max()) <= 2e-2 * mag


def test_tflite_style_asymmetric_activations():
    """TFLite's quantized activations: asymmetric s8/u8 ranges whose zero point is far from the
    middle (here -0.36 .. 4.74 on 256 levels, zero point 18, and a ReLU6-like 0 .. 6 range on the next layer),
    written as FakeQuantize; int8 on CPU, equal to REFERENCE within f32 summation error."""
    import ember.opset as ops
    from ember.graph.types import Type

    rng = np.random.default_rng(3)
    f = np.float32
    x = ops.parameter([1, 8, 9, 9], Type.f32, name="x")
    lo, hi = f(-0.36), f(-0.36 + 255 * 0.02)
    a = ops.fake_quantize(x, lo, hi, lo, hi, 256)

    def weights(shape):
        q = rng.integers(-127, 128, shape).astype(np.int8)
        scale = (rng.random((shape[0],) + (1,) * (len(shape) - 1)) * 0.02 + 0.005).astype(f)
        return ops.multiply(ops.convert(ops.constant(q), "f32"), ops.constant(scale))

    c = ops.clamp(ops.convolution(a, weights((12, 8, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1]), 0.0, 6.0)
    c = ops.convolution(ops.fake_quantize(c, f(0), f(6), f(0), f(6), 256), weights((4, 12, 1, 1)), [1, 1], [0, 0],
                        [0, 0], [1, 1])
    model = ember.Model([c], [x], "tflite-style")
    xin = (rng.standard_normal((1, 8, 9, 9)) * 2).astype(np.float32)
    core = ember.Core()
    cm = core.compile_model(model, "CPU")
    got = cm(xin)[0]
    assert cm._executable.program.stats.get("int8_ops") == 2
    want = core.compile_model(model, "REFERENCE")(xin)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.slow  # importing TensorFlow (for its converter's cache key) takes 15-20 s
@pytest.mark.parametrize("name, int8_ops", [("small_cnn", 5), ("mobilenet_v2", 53)])
def test_tflite_full_integer_model_runs_int8(name, int8_ops):
    """A full-integer TFLite model (TensorFlow's converter, u8/s8 asymmetric activations with
    per-tensor zero points, per-channel s8 weights): every convolution/FullyConnected runs on
    the int8 kernels, within 2 output quantization steps of LiteRT and of REFERENCE."""
    import sys
    from pathlib import Path

    pytest.importorskip("tensorflow", reason="tensorflow-cpu is a test extra")
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is a test extra")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))
    from tflite_makers import photos, tflite_file

    from ember.frontends.tflite import convert
    from ember.frontends.tflite.schema import read_model

    path = tflite_file(name, "full_int8")
    sg = read_model(path.read_bytes()).subgraphs[0]
    step = next(float(sg.tensors[op.inputs[0]].quant.scale.max()) for op in sg.operators
                if sg.outputs[0] in op.outputs and op.op == "DEQUANTIZE")
    model = convert(path)
    shape = tuple(d.get_length() if d.is_static else 1 for d in model.inputs[0].partial_shape)
    core = ember.Core()
    cm = core.compile_model(model, "CPU")
    ref = core.compile_model(model, "REFERENCE")
    for x in photos(shape[1:3], 2, seed=7):
        got = cm(x)[0]
        stats = cm._executable.program.stats
        assert stats.get("int8_ops") == int8_ops
        assert sum(t.endswith("_I8") for t in stats["exec_types"].values()) >= int8_ops
        it = litert.Interpreter(model_path=str(path))
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        want = it.get_tensor(it.get_output_details()[0]["index"])
        assert float(np.abs(got - want).max()) <= 2 * step + 1e-7
        assert float(np.abs(got - ref(x)[0]).max()) <= 2 * step + 1e-7
