"""The optimizer on real network shapes exported from PyTorch: ResNet-50 and a BERT-like
encoder (all-MiniLM-L6-v2's shape). Outputs stay equal on REFERENCE; structure as the README says."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from ember.devices.reference import run_model
from ember.frontends.onnx import convert
from ember.passes import OptimizationReport, optimize

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def _optimized(name: str) -> tuple:
    from models.torch_models import export

    model = convert(export(name))
    rep = OptimizationReport(2)
    return model, optimize(model, 2, report=rep), rep


def _counts(m: object) -> collections.Counter:
    return collections.Counter(n.type_name for n in m.get_ordered_ops())  # type: ignore[attr-defined]


def test_resnet50() -> None:
    before, after, rep = _optimized("resnet50")
    c0, c = _counts(before), _counts(after)
    assert c0["BatchNormInference"] == 53 and c["BatchNormInference"] == 0
    assert sum(c.values()) < sum(c0.values())
    marked = [n for n in after.get_ordered_ops() if "fused_group" in n.rt_info and n.type_name == "Convolution"]
    assert len(marked) == 53
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    a, b = run_model(before, [x])[0], run_model(after, [x])[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_bert_like() -> None:
    before, after, rep = _optimized("bert_like")
    c0, c = _counts(before), _counts(after)
    assert c["Gelu"] == 6 and c["Erf"] == 0
    assert c["MVN"] == 13
    assert c["ScaledDotProductAttention"] == 6 and c["SoftMax"] == 0
    assert sum(c.values()) < sum(c0.values()) * 0.5
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30522, (1, 128)).astype(np.int64)
    mask = np.ones((1, 128), np.int64)
    mask[0, 100:] = 0
    a, b = run_model(before, [ids, mask])[0], run_model(after, [ids, mask])[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
