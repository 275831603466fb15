"""TFLite files made with TensorFlow (a small CNN and Keras MobileNetV2, seeded weights) in
float32, float16 (DEQUANTIZE), dynamic-range int8 and full-integer int8, against LiteRT.

Float models match within 1e-4 of the output's magnitude. LiteRT's quantized kernels compute
in integers (dynamic-range ones quantize activations on the fly), so those are compared within
a few quantization steps of the output; on the CPU device the full-integer model runs through
the low-precision path that reads its FakeQuantize / decompression patterns.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from test_tflite import litert_run, run_on
from tflite_makers import MODES, many_ops_file, photos, tflite_file

import ember as ov
from ember.frontends.tflite import convert
from ember.frontends.tflite.schema import read_model

pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is a test extra")
pytest.importorskip("tensorflow", reason="tensorflow-cpu is a test extra")

# (limit relative to the output's magnitude, limit in output quantization steps)
LIMITS = {"float32": (1e-4, None), "float16": (1e-4, None), "dynamic_int8": (2e-2, None), "full_int8": (None, 2)}


@functools.cache
def _file(name: str, mode: str) -> Path:
    return tflite_file(name, mode)


def _output_step(path: Path) -> float:
    """The quantization scale of the tensor the model's float output is dequantized from."""
    sg = read_model(path.read_bytes()).subgraphs[0]
    out = sg.outputs[0]
    for op in sg.operators:
        if out in op.outputs and op.op == "DEQUANTIZE":
            q = sg.tensors[op.inputs[0]].quant
            assert q is not None
            return float(q.scale.max())
    q = sg.tensors[out].quant
    return float(q.scale.max()) if q is not None else 0.0


def _check(path: Path, device: str, mode: str) -> None:
    model = convert(path)
    shape = tuple(d.get_length() if d.is_static else 1 for d in model.inputs[0].partial_shape)
    rel, steps = LIMITS[mode]
    for x in photos(shape[1:3], 2, seed=7):
        got, want = run_on(model, [x], device)[0], litert_run(path, [x])[0]
        err = np.abs(got.astype(np.float64) - want).max()
        if rel is not None:
            assert err <= rel * np.abs(want).max(), f"{err / np.abs(want).max():.2e} of the output's magnitude"
        else:
            step = _output_step(path)
            assert err <= steps * step + 1e-7, f"{err / step:.1f} quantization steps"
        assert np.argmax(got) == np.argmax(want) or mode != "float32"


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
@pytest.mark.parametrize("mode", MODES)
def test_small_cnn(mode: str, device: str) -> None:
    _check(_file("small_cnn", mode), device, mode)


@pytest.mark.slow
@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
@pytest.mark.parametrize("mode", MODES)
def test_mobilenet_v2(mode: str, device: str) -> None:
    _check(_file("mobilenet_v2", mode), device, mode)


def test_quantized_patterns() -> None:
    """f16 weights stay f16 behind a decompression Convert; full-integer weights are int8
    constants in Convert -> Multiply; activations are FakeQuantize'd (256 levels)."""
    f16 = convert(_file("small_cnn", "float16"))
    consts = [n for n in f16.get_ordered_ops() if n.type_name == "Const" and n.element_type == ov.Type.f16]
    assert len(consts) >= 6
    assert all(c.output(0).targets[0].node.rt_info.get("decompression") is not None for c in consts)
    q = convert(_file("small_cnn", "full_int8"))
    ops = q.get_ordered_ops()
    assert sum(n.type_name == "Const" and n.element_type == ov.Type.i8 for n in ops) >= 5
    fqs = [n for n in ops if n.type_name == "FakeQuantize"]
    assert len(fqs) >= 10 and all(n.attrs["levels"] == 256 for n in fqs)


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
def test_many_builtin_ops(device: str) -> None:
    """About 35 builtin ops (pad, pooling, depth/space moves, resize, reductions with and without
    kept dims, transpose and strided slice of NCHW-held tensors, split/pack/gather, fully
    connected, softmax, L2 norm, arg max, mirror pad, tile...) in one TF-made model."""
    path = many_ops_file()
    x = photos((8, 8), 1, seed=5)[0][..., :3]
    x = np.concatenate([x, x[..., :1]], axis=3)
    got, want = run_on(convert(path), [x], device), litert_run(path, [x])
    assert len(got) == len(want) == 7
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert np.abs(g - w).max() <= 1e-5 * max(np.abs(w).max(), 1.0)


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
def test_int8_model_inputs_and_outputs(device: str) -> None:
    """A full-integer model whose input and output are int8 tensors keeps them int8: the input
    is dequantized after the Parameter, the output quantized before the Result."""
    path = _file("small_cnn", "full_int8_io")
    model = convert(path)
    assert model.inputs[0].element_type == ov.Type.i8 and model.outputs[0].element_type == ov.Type.i8
    sg = read_model(path.read_bytes()).subgraphs[0]
    q = sg.tensors[sg.inputs[0]].quant
    assert q is not None
    for x in photos((32, 32), 2, seed=9):
        xq = np.clip(np.round(x / q.scale[0] + q.zero_point[0]), -128, 127).astype(np.int8)
        got, want = run_on(model, [xq], device)[0], litert_run(path, [xq])[0]
        assert got.dtype == want.dtype == np.int8
        assert np.abs(got.astype(np.int32) - want).max() <= 2


@pytest.mark.slow
def test_full_integer_model_runs_on_the_int8_path() -> None:
    """A full-integer TFLite MobileNetV2 runs its convolutions on the CPU device's int8 kernels
    (profiling names the kernel only for ops that really ran in int8)."""
    import collections

    import ember

    model = convert(_file("mobilenet_v2", "full_int8"))
    shape = [d.get_length() if d.is_static else 1 for d in model.input(0).partial_shape]
    model.reshape({0: shape})
    compiled = ember.Core().compile_model(model, "CPU", {"PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer([np.random.default_rng(0).random(shape).astype(np.float32)])
    kinds = collections.Counter((p.node_type, p.exec_type) for p in request.get_profiling_info())
    int8_convs = sum(n for (t, e), n in kinds.items() if t == "Int8Convolution" and "I8" in e)
    float_convs = sum(n for (t, _), n in kinds.items() if t in ("Convolution", "GroupConvolution"))
    assert int8_convs >= 50 and float_convs == 0, kinds
