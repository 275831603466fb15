"""The op-coverage networks (tests/models/op_models.py: BiLSTM tagger, GRU encoder with lengths,
CRNN, 1-D U-Net, graph network, image decoder) on the CPU device against ONNX Runtime, and which
ops they leave on reference kernels (benchmarks/op_coverage.py times them)."""

from __future__ import annotations

import numpy as np
import pytest

import ember

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from models.op_models import NAMES, example_inputs, export  # noqa: E402


@pytest.mark.parametrize("name", NAMES)
def test_op_model_matches_onnxruntime(name: str) -> None:
    path = export(name)
    feeds = example_inputs(name)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    compiled = ember.Core().compile_model(ember.convert_model(str(path)), "CPU")
    got = compiled(feeds).to_tuple()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape
        err = float(np.abs(g.astype(np.float64) - w).max() / max(float(np.abs(w).max()), 1e-6))
        assert err < 1e-4, f"{name}: relative error {err:.2e}"
