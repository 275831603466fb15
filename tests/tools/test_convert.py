"""``ember convert`` and ``convert_model``: ovc flags, optimization levels, IR that OpenVINO reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ember
from ember.convert import convert_model, parse_input_arg, parse_values
from ember.errors import EmberError
from ember.tools.cli import main

ort = pytest.importorskip("onnxruntime")
ONNX = Path(__file__).parent.parent / "data" / "ir_examples" / "convreluadd.onnx"


def _ort(x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(ONNX)).run(None, {"x": x})[0]


def test_cli_convert_then_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(ONNX), "-o", str(tmp_path), "--report", "--compress_to_fp16=false"]) == 0
    out = capsys.readouterr().out
    assert "fold_constants" in out and "saved" in out
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(tmp_path / "convreluadd.xml"), "-d", "REFERENCE", "-i", f"x={tmp_path / 'x.npy'}",
                 "-o", str(tmp_path / "res")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "res" / "y.npy"), _ort(x), rtol=1e-5, atol=1e-5)


def test_fp16_default_loads_in_openvino(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    assert main(["convert", str(ONNX), "-o", str(tmp_path)]) == 0
    xml = (tmp_path / "convreluadd.xml").read_text()
    assert 'element_type="f16"' in xml and "decompression" in xml
    x = np.random.default_rng(1).random((1, 3, 8, 8), dtype=np.float32)
    c = ov.Core().compile_model(str(tmp_path / "convreluadd.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(c([x])[0], _ort(x), rtol=1e-2, atol=1e-2)


def test_mean_scale_reverse_layout_are_embedded() -> None:
    x = np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32) * 255
    mean, scale = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]
    m = convert_model(ONNX, mean_values=mean, scale_values=scale, reverse_input_channels=True, layout="NCHW")
    got = ember.compile_model(m, "REFERENCE")([x])[0]
    pre = (x[:, ::-1] - np.float32(mean).reshape(1, 3, 1, 1)) / np.float32(scale).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(got, _ort(np.ascontiguousarray(pre, dtype=np.float32)), rtol=1e-4, atol=1e-4)
    assert str(m.get_parameters()[0].get_layout()) == "[N,C,H,W]"
    assert m.inputs[0].names == {"x"}


@pytest.mark.parametrize("level", [0, 1, 2])
def test_levels_keep_outputs(level: int) -> None:
    x = np.random.default_rng(3).random((1, 3, 8, 8), dtype=np.float32)
    m = convert_model(ONNX, opt_level=level)
    np.testing.assert_allclose(ember.compile_model(m, "REFERENCE")([x])[0], _ort(x), rtol=1e-5, atol=1e-5)


def test_argument_parsers() -> None:
    assert parse_values("[1,2,3]") == [1.0, 2.0, 3.0]
    assert parse_values("data[1,2],x[3]") == {"data": [1.0, 2.0], "x": [3.0]}
    assert parse_input_arg("data[1,3,224,224],mask{i64}[1,?]") == [("data", "1,3,224,224"), ("mask", "1,?", "i64")]
    assert parse_input_arg("a,b") == [("a",), ("b",)]


def test_bad_sources() -> None:
    with pytest.raises(EmberError, match="does not exist"):
        convert_model("missing.onnx")
    with pytest.raises(EmberError, match="supported formats"):
        convert_model(__file__)
