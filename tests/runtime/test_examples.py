"""The seed examples run on ember, and the same files with OpenVINO's imports agree with them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ember
import ember.opset as ops

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _classifier() -> ember.Model:
    rng = np.random.default_rng(1)
    x = ops.parameter([1, 3, 32, 32], np.float32, name="image")
    c = ops.convolution(x, ops.constant(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) / 300),
                        [2, 2], [1, 1], [1, 1], [1, 1])
    c = ops.relu(ops.add(c, ops.constant(rng.standard_normal((1, 8, 1, 1)).astype(np.float32))))
    g = ops.reduce_mean(c, ops.constant(np.array([2, 3], np.int64)), False)
    logits = ops.matmul(g, ops.constant(rng.standard_normal((8, 10)).astype(np.float32)), False, False)
    probs = ops.softmax(logits, 1, name="probs")
    probs.output(0).set_names({"probs"})
    return ember.Model([ops.result(probs)], [x], "tiny_classifier")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("classify")
    ember.save_model(_classifier(), d / "model.xml")
    y, x = np.mgrid[0:48, 0:64]
    image = np.stack([x * 4 % 256, y * 5 % 256, (x * y) % 256], axis=-1).astype(np.uint8)
    np.save(d / "image.npy", image)
    return d


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _as_openvino(tmp_path: Path, name: str, swaps: dict[str, str]) -> Path:
    """A copy of an example with only its imports switched to OpenVINO."""
    text = (EXAMPLES / name).read_text()
    for a, b in swaps.items():
        assert a in text
        text = text.replace(a, b)
    (tmp_path / "classify.py").write_text((EXAMPLES / "classify.py").read_text())
    out = tmp_path / f"ov_{name}"
    out.write_text(text)
    return out


@pytest.mark.parametrize("device", ["CPU", "AUTO", "REFERENCE", None])
def test_classic_example(files, device, capsys, tmp_path):
    mod = _load(EXAMPLES / "classify.py", "ember_example_classify")
    argv = [str(files / "model.xml"), str(files / "image.npy")] + (["--device", device] if device else [])
    top5 = mod.main(argv)
    printed = capsys.readouterr().out
    want_device = device or ("CPU" if "CPU" in ember.Core().available_devices else "AUTO")
    assert f"device: {want_device}; input 1x3x32x32" in printed
    pytest.importorskip("openvino")
    ov_file = _as_openvino(tmp_path, "classify.py", {"from ember.runtime import Core": "from openvino import Core"})
    theirs = _load(ov_file, "ov_example_classify").main(argv[:2] + ["--device", "CPU"])
    assert top5 == theirs


@pytest.mark.parametrize("device", ["CPU", "AUTO", "REFERENCE"])
def test_newer_style_example(files, device, capsys, tmp_path):
    mod = _load(EXAMPLES / "classify_ov.py", "ember_example_classify_ov")
    argv = [str(files / "model.xml"), str(files / "image.npy"), "--device", device]
    top10 = mod.main(argv)
    assert "class_id probability" in capsys.readouterr().out
    pytest.importorskip("openvino")
    ov_file = _as_openvino(tmp_path, "classify_ov.py", {
        "import ember as ov": "import openvino as ov",
        "from ember.preprocess import": "from openvino.preprocess import"})
    theirs = _load(ov_file, "ov_example_classify_ov").main(argv[:2] + ["--device", "CPU"])
    assert top10[:5] == theirs[:5]


def test_input_shape_unpacks_as_four_ints(files):
    cm = ember.Core().compile_model(files / "model.xml", "AUTO")
    N, C, H, W = cm.input(0).shape
    assert (N, C, H, W) == (1, 3, 32, 32) and all(type(v) is int for v in (N, C, H, W))


def test_runs_as_a_script(files):
    out = subprocess.run([sys.executable, str(EXAMPLES / "classify.py"), str(files / "model.xml"),
                          "--device", "REFERENCE"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "top class" in out.stdout
