"""The zoo's ONNX models (PP-OCR det/rec/cls, Silero VAD) converted by ember's ONNX frontend give
what onnxruntime gives on the original files."""

from __future__ import annotations

import numpy as np
import pytest

from ember import zoo
from ember.errors import UnsupportedOpError
from ember.runtime import Core

rng = np.random.default_rng(0)
FEEDS = {
    "ppocr-det": {"x": rng.uniform(-1, 1, (1, 3, 96, 128)).astype(np.float32)},
    "ppocr-rec": {"x": rng.uniform(-1, 1, (1, 3, 48, 160)).astype(np.float32)},
    "ppocr-cls": {"x": rng.uniform(-1, 1, (2, 3, 48, 192)).astype(np.float32)},
    "silero-vad": {"input": (0.1 * rng.standard_normal((1, 576))).astype(np.float32),
                   "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FEEDS))
def test_onnx_zoo_model_matches_onnxruntime(name: str, zoo_fetch) -> None:
    ort = pytest.importorskip("onnxruntime")
    try:
        prepared = zoo_fetch(name)
    except UnsupportedOpError as e:
        pytest.skip(f"ember's ONNX frontend is missing what {name} needs: {e}")
    onnx_file = next(iter(prepared.files.values()))
    feeds = FEEDS[name]
    want = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = Core().compile_model(str(prepared.xml), "REFERENCE")(feeds).to_tuple()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)


def test_onnx_entries_record_their_files() -> None:
    for name in FEEDS:
        entry = zoo.get_entry(name)
        assert entry.converter == "ember.zoo.onnx_models:convert"
        assert len(entry.files) == 1 and entry.files[0].endswith(".onnx")
