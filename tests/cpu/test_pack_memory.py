"""Packing weights holds no copy of the whole weight (issue 20, peak memory): a layer's panels are
packed a few at a time straight into the packed array, so the compile's peak is the packed
weights plus a megabyte or two, not the f32 weight three or four times over (a 1280 x 1000
classifier took 36 MB of temporaries). tracemalloc sees numpy's buffers; the packed bytes are
checked against the GEMM they feed."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ember.devices.cpu.kernels.gemm import PACK_BLOCK, Gemm, bf16_supported, pack_b, pack_weights, round_to_bf16
from ember.devices.cpu.llvm.isa import host_isa

PRECISIONS = ["f32"] + (["bf16"] if bf16_supported() else [])


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", [(1, 1, 1280, 1000), (1, 9, 512, 512), (4, 9, 64, 96)],
                         ids=lambda s: "x".join(map(str, s)))
def test_packing_peak_is_the_packed_weights(precision, shape):
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    tracemalloc.start()
    try:
        packed = pack_weights(w, host_isa(), precision=precision)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current >= packed.data.nbytes
    # temporaries: one block of panels (PACK_BLOCK bytes of f32, or one panel) a few times over
    panel = shape[0] * shape[1] * shape[2] * packed.nr * 4
    assert peak - current <= 6 * max(PACK_BLOCK, panel), (peak - current) / 2**20


@pytest.mark.parametrize("precision", PRECISIONS)
def test_blocked_packing_feeds_the_gemm(precision):
    """A classifier's weight (several blocks of panels, the last one short): the GEMM equals numpy."""
    rng = np.random.default_rng(1)
    k, n, m = 1280, 1000, 3
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    Gemm(pack_b(w, precision=precision), m, num_threads=1)(a, c)
    if precision == "bf16":
        a, w = round_to_bf16(a), round_to_bf16(w)
    want = a.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))
