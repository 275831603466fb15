"""The TFLite frontend against LiteRT (ai-edge-litert) on MediaPipe's models and real photos.

MediaPipe's ``.tflite`` files come from the mediapipe 0.10.21 wheel (fetched once with
``pip download --no-deps`` and cached by the zoo). Each model runs on scikit-image's photos on
REFERENCE and CPU and must match LiteRT within 1e-4 of the output's magnitude.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

import ember as ov
from ember.devices.reference.executor import run_model
from ember.errors import ConversionError, UnsupportedOpError
from ember.frontends.tflite import convert, supported_ops

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is a test extra")

MEDIAPIPE = ["hand_landmark_lite", "palm_detection_lite", "iris_landmark", "face_landmark", "pose_detection"]


@functools.cache
def mediapipe(name: str) -> Path:
    from ember.zoo.tflite_models import mediapipe_file

    return mediapipe_file(name)


@functools.cache
def converted(name: str) -> ov.Model:
    return convert(mediapipe(name))


def photo(shape: tuple[int, ...], which: str = "astronaut") -> np.ndarray:
    """A scikit-image photo resized (nearest) to ``shape`` = [1, H, W, 3], values in [0, 1]."""
    from skimage import data

    img = getattr(data, which)()[..., :3].astype(np.float32) / 255.0
    _, h, w, _ = shape
    ys = (np.arange(h) * img.shape[0] / h).astype(int)
    xs = (np.arange(w) * img.shape[1] / w).astype(int)
    return np.ascontiguousarray(img[ys][:, xs][None])


def litert_run(path: Path, feeds: list[np.ndarray]) -> list[np.ndarray]:
    it = litert.Interpreter(model_path=str(path))
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), feeds):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]


def assert_close(got: list[np.ndarray], want: list[np.ndarray], rel: float) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = np.asarray(g)
        assert g.shape == w.shape
        err = np.abs(g.astype(np.float64) - w).max() / max(np.abs(w).max(), 1e-6)
        assert err <= rel, f"max difference {err:.2e} of the output's magnitude (limit {rel:.0e})"


def run_on(model: ov.Model, feeds: list[np.ndarray], device: str) -> list[np.ndarray]:
    if device == "REFERENCE":
        return [np.asarray(o) for o in run_model(model, feeds)]
    compiled = ov.Core().compile_model(model, device)
    res = compiled(feeds)
    return [res[o] for o in compiled.outputs]


@pytest.mark.slow
@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
@pytest.mark.parametrize("name", MEDIAPIPE)
def test_mediapipe_model_matches_litert_on_photos(name: str, device: str) -> None:
    model = converted(name)
    shape = tuple(d.get_length() for d in model.inputs[0].partial_shape)
    for which in ("astronaut", "coffee"):
        x = photo(shape, which)
        assert_close(run_on(model, [x], device), litert_run(mediapipe(name), [x]), 1e-4)


def _neighbours(node: object) -> list[str]:
    prod = [p.node.type_name for p in node.input_values()]  # type: ignore[attr-defined]
    cons = [i.node.type_name for o in node.outputs() for i in o.targets]  # type: ignore[attr-defined]
    return prod + cons


@pytest.mark.parametrize("name", ["palm_detection_lite", "pose_detection"])
def test_no_transposes_around_convolutions(name: str) -> None:
    """NHWC is handled by computing convolution chains in NCHW: a Transpose appears only at the
    input and where an op needs TFLite's layout (a Reshape before an output), never next to a
    convolution, also after the optimizer ran."""
    for model in (converted(name), ov.convert_model(mediapipe(name))):
        transposes = [n for n in model.get_ordered_ops() if n.type_name == "Transpose"]
        convs = [n for n in model.get_ordered_ops() if "Convolution" in n.type_name]
        assert len(convs) > 50
        for t in transposes:
            src = t.input_values()[0].node
            if src.type_name == "Parameter" or src.type_name == "Pad" and \
                    src.input_values()[0].node.type_name == "Parameter":
                continue  # the model's NHWC input, once
            if all(i.node.type_name == "Reshape" for o in t.outputs() for i in o.targets):
                continue  # TFLite's layout for a Reshape (a detector head), as an ONNX export has it
            assert not {"Convolution", "GroupConvolution"} & set(_neighbours(t)), t.friendly_name
        reshapes = sum(n.type_name == "Reshape" for n in model.get_ordered_ops())
        assert len(transposes) <= 1 + reshapes


def test_custom_ops_are_listed_in_one_error() -> None:
    from ember.zoo.tflite_models import mediapipe_file

    with pytest.raises(UnsupportedOpError) as err:
        convert(mediapipe_file("face_landmark_with_attention"))
    msg = str(err.value)
    for op in ("Landmarks2TransformMatrix", "TransformTensorBilinear", "TransformLandmarks"):
        assert op in msg
    assert "custom ops" in msg and "3 unsupported op type(s)" in msg
    assert "Convolution2DTransposeBias" in supported_ops()["custom"]


@pytest.mark.slow
def test_convolution_2d_transpose_bias_matches_litert() -> None:
    """MediaPipe's custom transposed convolution (selfie segmentation); LiteRT's XNNPACK
    delegate runs it."""
    path = mediapipe("selfie_segmentation")
    model = convert(path)
    assert any(n.type_name == "ConvolutionBackpropData" for n in model.get_ordered_ops())
    x = photo((1, 256, 256, 3), "astronaut")
    assert_close(run_on(model, [x], "REFERENCE"), litert_run(path, [x]), 1e-4)


def test_read_model_convert_model_and_ir_read_by_openvino(tmp_path: Path) -> None:
    openvino = pytest.importorskip("openvino")
    path = mediapipe("iris_landmark")
    model = ov.Core().read_model(str(path))
    assert [p.any_name for p in model.outputs] == ["output_eyes_contours_and_brows", "output_iris"]
    x = photo((1, 64, 64, 3))
    want = litert_run(path, [x])
    optimized = ov.convert_model(path)
    assert_close(run_on(optimized, [x], "REFERENCE"), want, 1e-4)
    ov.save_model(optimized, tmp_path / "iris.xml", compress_to_fp16=False)
    compiled = openvino.Core().compile_model(str(tmp_path / "iris.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled([x])
    assert_close([res[o] for o in compiled.outputs], want, 1e-4)


def test_cli_info_and_graph_read_tflite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ember.tools.cli import main

    path = mediapipe("face_landmark")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "input_1" in out and "conv2d_21" in out and "Convolution" in out
    assert main(["graph", str(path), "-o", str(tmp_path / "g.html")]) == 0
    assert (tmp_path / "g.html").stat().st_size > 1000


@pytest.mark.parametrize("data, match", [
    (b"", "shorter than a header"),
    (b"\x08\x00\x00\x00XXXX" + bytes(16), "not a TFLite model"),
    (b"\xff\xff\xff\x7fTFL3" + bytes(16), "outside the file"),
    (b"\x0c\x00\x00\x00TFL3" + bytes(4) + b"\x00\x01\x00\x00" + bytes(8), "malformed"),
])
def test_malformed_files_raise_conversion_errors(data: bytes, match: str) -> None:
    with pytest.raises(ConversionError, match=match):
        convert(data)


def test_truncated_real_file_raises_conversion_error() -> None:
    data = mediapipe("iris_landmark").read_bytes()
    with pytest.raises(ConversionError):
        convert(data[: len(data) // 3])
