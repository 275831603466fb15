"""The fused attention kernel (``kernels/attention.py``) against numpy, on every ISA level:
each score kind (no mask, a scalar mask, a row of S values, a full [B,H,L,S] mask, causal,
causal with a mask), S and Ev not multiples of the vector width, heads broadcast by stride 0,
strided (head-split) views, fully masked rows (NaN, as the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from ember.devices.cpu.kernels.attention import attention_kernel
from ember.devices.cpu.llvm.isa import host_isa, supported_levels


def _reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, scale: float,
               causal: bool) -> np.ndarray:
    s = (q.astype(np.float64) @ np.swapaxes(k.astype(np.float64), -1, -2)) * scale
    if mask is not None:
        s = s + mask
    if causal:
        L, S = s.shape[-2:]
        s = np.where(np.triu(np.ones((L, S), bool), 1), -np.inf, s)
    with np.errstate(invalid="ignore"):
        s = np.exp(s - s.max(-1, keepdims=True))
        p = s / s.sum(-1, keepdims=True)
    return p @ v.astype(np.float64)


# (B, H, L, S, E, Ev, mask shape or None or "causal" / "causal+row")
CASES = [
    (1, 12, 128, 128, 32, 32, (1, 1, 1, 128)),  # MiniLM's layer
    (1, 12, 128, 128, 32, 32, None),
    (2, 3, 17, 33, 24, 40, (2, 1, 1, 33)),
    (1, 2, 7, 5, 8, 72, ()),  # scalar mask; Ev beyond 4 vectors, partial
    (2, 2, 19, 21, 16, 16, (2, 2, 19, 21)),  # a full mask
    (1, 4, 20, 20, 64, 64, "causal"),
    (1, 2, 13, 13, 8, 20, "causal+row"),
    (1, 1, 1, 1, 4, 3, None),
    (1, 2, 6, 70, 16, 48, (1, 1, 6, 70)),
]


@pytest.mark.parametrize("level", supported_levels())
@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_attention_matches_numpy(level: str, case: tuple) -> None:
    B, H, L, S, E, Ev, mk = case
    rng = np.random.default_rng(L * 131 + S)
    # head-split views, as the lowering passes them: [B, L, H, E] transposed
    q = rng.standard_normal((B, L, H, E), np.float32).transpose(0, 2, 1, 3)
    k = rng.standard_normal((B, S, H, E), np.float32).transpose(0, 2, 1, 3)
    v = rng.standard_normal((B, S, H, Ev), np.float32).transpose(0, 2, 1, 3)
    causal = isinstance(mk, str) and mk.startswith("causal")
    mask = None
    if mk == "causal+row":
        mask = np.where(rng.random((1, 1, 1, S)) < 0.3, -1e4, 0.0).astype(np.float32)
    elif isinstance(mk, tuple):
        mask = (rng.standard_normal(mk) * 3).astype(np.float32)
    out = np.full((B, L, H, Ev), np.nan, np.float32)
    scale = 1.0 / np.sqrt(E)
    attention_kernel(q, k, v, mask, out.transpose(0, 2, 1, 3), scale, causal, 1, host_isa(level)).run()
    ref = _reference(q, k, v, mask, scale, causal).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("level", supported_levels())
def test_attention_broadcast_heads_and_masked_rows(level: str) -> None:
    B, H, L, S, E = 2, 3, 9, 18, 16
    rng = np.random.default_rng(1)
    q = rng.standard_normal((B, H, L, E), np.float32)
    k = np.broadcast_to(rng.standard_normal((B, 1, S, E), np.float32), (B, H, S, E))  # stride 0 heads
    v = np.broadcast_to(rng.standard_normal((B, 1, S, E), np.float32), (B, H, S, E))
    mask = np.zeros((B, 1, L, S), np.float32)
    mask[0, 0, 3] = -np.inf  # a fully masked row: NaN, as the reference
    mask[1, 0, :, 5:] = -np.inf
    out = np.zeros((B, H, L, E), np.float32)
    attention_kernel(q, k, v, mask, out, 0.3, False, 2, host_isa(level)).run()
    ref = _reference(q, k, v, mask, 0.3, False)
    assert np.isnan(out[0, :, 3]).all()
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)
