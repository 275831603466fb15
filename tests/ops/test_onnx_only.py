"""ONNX ops OpenVINO lacks (BitCast, Det, MelWeightMatrix as ember ops; the training optimizers
Adagrad/Adam/Momentum as OpenVINO ops) against onnx's ReferenceEvaluator, REFERENCE and CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.frontends.onnx import convert

F = TensorProto.FLOAT
TRAINING = "ai.onnx.preview.training"
RNG = np.random.default_rng(11)


def _model(node: onnx.NodeProto, feeds: dict[str, np.ndarray], n_out: int = 1, opset: int = 26) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
              for k, v in feeds.items()]
    outputs = [helper.make_value_info(f"y{i}", onnx.TypeProto()) for i in range(n_out)]
    imports = [helper.make_operatorsetid("", opset)]
    if node.domain:
        imports.append(helper.make_operatorsetid(node.domain, 1))
    m = helper.make_model(helper.make_graph([node], "g", inputs, outputs), opset_imports=imports)
    m.ir_version = 13
    return m


def _f(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _training(op: str, groups: int, **attrs: Any) -> tuple:
    xs = {"r": np.array(0.1, np.float32), "t": np.array(3, np.int64)}
    names = "xgvh"[:groups] if op != "Adagrad" else "xgh"
    for g in names:
        for k in range(2):
            xs[f"{g}{k}"] = np.abs(_f(3, 2)) if g == "h" else _f(3, 2)
    n_out = (groups - 1) * 2
    node = helper.make_node(op, list(xs), [f"y{i}" for i in range(n_out)], domain=TRAINING, **attrs)
    return node, xs, n_out


CASES = {
    "bitcast_f32_i32": (helper.make_node("BitCast", ["x"], ["y0"], to=TensorProto.INT32),
                        {"x": np.array([1.0, -0.0, np.inf, np.nan, 3e-45], np.float32)}, 1),
    "bitcast_u16_f16": (helper.make_node("BitCast", ["x"], ["y0"], to=TensorProto.FLOAT16),
                        {"x": np.array([[0x3C00, 0x7C00], [0xFC01, 0]], np.uint16)}, 1),
    "bitcast_scalar_i64_f64": (helper.make_node("BitCast", ["x"], ["y0"], to=TensorProto.DOUBLE),
                               {"x": np.array(4607182418800017408, np.int64)}, 1),
    "det_batch": (helper.make_node("Det", ["x"], ["y0"]), {"x": _f(2, 3, 4, 4)}, 1),
    "det_singular": (helper.make_node("Det", ["x"], ["y0"]),
                     {"x": np.array([[1.0, 2.0], [2.0, 4.0]], np.float32)}, 1),
    "mel": (helper.make_node("MelWeightMatrix", ["n", "d", "s", "lo", "hi"], ["y0"]),
            {"n": np.array(10, np.int64), "d": np.array(64, np.int64), "s": np.array(16000, np.int64),
             "lo": np.array(20.0, np.float32), "hi": np.array(7000.0, np.float32)}, 1),
    "gridsample_3d_linear_reflection": (helper.make_node("GridSample", ["x", "g"], ["y0"], mode="linear",
                                                         padding_mode="reflection", align_corners=0),
                                        {"x": _f(1, 2, 3, 4, 5), "g": (RNG.random((1, 2, 3, 4, 3)) * 3 - 1.5
                                                                       ).astype(np.float32)}, 1),
    "gridsample_3d_nearest_border": (helper.make_node("GridSample", ["x", "g"], ["y0"], mode="nearest",
                                                      padding_mode="border", align_corners=1),
                                     {"x": _f(2, 1, 3, 3, 4), "g": (RNG.random((2, 2, 2, 2, 3)) * 3 - 1.5
                                                                    ).astype(np.float32)}, 1),
    "gridsample_3d_linear_zeros": (helper.make_node("GridSample", ["x", "g"], ["y0"], mode="linear"),
                                   {"x": _f(1, 1, 2, 3, 3), "g": (RNG.random((1, 1, 2, 5, 3)) * 2.4 - 1.2
                                                                  ).astype(np.float32)}, 1),
    "col2im_3d_strided_padded": (helper.make_node("Col2Im", ["x", "img", "blk"], ["y0"], strides=[1, 2, 1],
                                                  dilations=[1, 1, 2], pads=[0, 1, 1, 0, 1, 0]),
                                 {"x": _f(1, 2 * 2 * 2 * 2, 3 * 3 * 4), "img": np.array([4, 4, 5], np.int64),
                                  "blk": np.array([2, 2, 2], np.int64)}, 1),
    "resize_tf_crop_scales": (helper.make_node("Resize", ["x", "roi", "sc"], ["y0"], mode="linear",
                                               coordinate_transformation_mode="tf_crop_and_resize",
                                               extrapolation_value=7.0),
                              {"x": _f(1, 2, 5, 6), "roi": np.array([0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3], np.float32),
                               "sc": np.array([1, 1, 1.6, 0.7], np.float32)}, 1),
    "resize_symmetric_nearest_ceil": (helper.make_node("Resize", ["x", "", "", "sz"], ["y0"], mode="nearest",
                                                       coordinate_transformation_mode="half_pixel_symmetric",
                                                       nearest_mode="ceil"),
                                      {"x": _f(1, 1, 4, 7), "sz": np.array([1, 1, 9, 3], np.int64)}, 1),
    "resize_cubic_exclude_axes": (helper.make_node("Resize", ["x", "", "", "sz"], ["y0"], mode="cubic",
                                                   exclude_outside=1, cubic_coeff_a=-0.5, axes=[3, 2]),
                                  {"x": _f(2, 1, 5, 4), "sz": np.array([7, 3], np.int64)}, 1),
    "adagrad": _training("Adagrad", 3, decay_factor=0.1, epsilon=1e-5, norm_coefficient=0.01),
    "momentum": _training("Momentum", 3, alpha=0.9, beta=0.5, mode="standard", norm_coefficient=0.001),
    "nesterov": _training("Momentum", 3, alpha=0.8, beta=0.3, mode="nesterov", norm_coefficient=0.0),
    "adam": _training("Adam", 4, alpha=0.85, beta=0.95, epsilon=1e-4, norm_coefficient=0.01,
                      norm_coefficient_post=0.02),
}


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_against_onnx_reference(case: str, device: str) -> None:
    node, feeds, n_out = CASES[case]
    model = _model(node, feeds, n_out, opset=26 if node.op_type == "BitCast" else 18)
    want = ReferenceEvaluator(model).run(None, feeds)
    got = ember.Core().compile_model(convert(model), device)(feeds).to_tuple()
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype
        if case.startswith("bitcast"):
            np.testing.assert_array_equal(g.reshape(-1).view(np.uint8), w.reshape(-1).view(np.uint8))  # bit for bit, NaNs included
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_bitcast_needs_equal_widths() -> None:
    node = helper.make_node("BitCast", ["x"], ["y0"], to=TensorProto.INT64)
    with pytest.raises(Exception, match="bits"):
        convert(_model(node, {"x": np.zeros(3, np.float32)}))


@pytest.mark.parametrize("fmt", ["RGB", "BGR", "Grayscale"])
def test_image_decoder_png(fmt: str) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (5, 7, 3)).astype(np.uint8)).save(buf, format="PNG")
    feeds = {"x": np.frombuffer(buf.getvalue(), dtype=np.uint8).copy()}
    model = _model(helper.make_node("ImageDecoder", ["x"], ["y0"], pixel_format=fmt), feeds, 1, opset=20)
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    for device in ("REFERENCE", "CPU"):
        got = ember.Core().compile_model(convert(model), device)(feeds)[0]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("direction, input_forget", [("forward", 0), ("bidirectional", 0), ("reverse", 1)])
def test_lstm_peepholes_against_onnxruntime(direction: str, input_forget: int) -> None:
    ort = pytest.importorskip("onnxruntime")
    d, h, i, t, b = (2 if direction == "bidirectional" else 1), 3, 4, 5, 2
    feeds = {"x": _f(t, b, i), "w": _f(d, 4 * h, i), "r": _f(d, 4 * h, h), "b": _f(d, 8 * h),
             "lens": np.array([5, 3], np.int32), "h0": _f(d, b, h), "c0": _f(d, b, h), "p": _f(d, 3 * h)}
    node = helper.make_node("LSTM", list(feeds), ["y0", "y1", "y2"], hidden_size=h, direction=direction,
                            input_forget=input_forget, clip=2.5)
    model = _model(node, feeds, 3, opset=14)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for device in ("REFERENCE", "CPU"):
        got = ember.Core().compile_model(convert(model), device)(feeds).to_tuple()
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
