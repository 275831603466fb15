"""A network's stem in f32 (few input channels: taps merged into K, each task gathering its
pixels' taps first): the pixels whose 3, 5 or 7 kernel rows all lie inside the image load
them all before storing any (``emit_f32_rows``); the border pixels take the general path.
Against a float64 numpy convolution, on every ISA level, one and two threads."""

from __future__ import annotations

import numpy as np
import pytest

from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry
from ember.devices.cpu.kernels.gemm import Epilogue
from ember.devices.cpu.llvm.isa import host_isa, supported_levels
from ember.devices.cpu.runtime.memory import aligned_empty

# (h, w, cin, cout, k, stride, pad)
CASES = [
    (48, 320, 3, 16, 3, 2, 1),   # PP-OCR rec's stem (det's is the same at 480x640)
    (23, 31, 3, 8, 5, 2, 2),     # 5x5 stride 2
    (17, 19, 4, 24, 7, 2, 3),    # 7x7: a kernel row of 28 values (two vectors on AVX2)
    (9, 13, 5, 7, 3, 1, 1),      # 15 values a kernel row, stride 1
    (6, 40, 2, 16, 5, 1, 0),     # no padding: every pixel inside
]


def _numpy(x: np.ndarray, w: np.ndarray, bias: np.ndarray, s: int, p: int) -> np.ndarray:
    n, h, wd, c = x.shape
    k = w.shape[2]
    xp = np.pad(x.astype(np.float64), ((0, 0), (p, p), (p, p), (0, 0)))
    oh, ow = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
    out = np.zeros((n, oh, ow, w.shape[0])) + bias
    for ky in range(k):
        for kx in range(k):
            out += xp[:, ky:ky + s * (oh - 1) + 1:s, kx:kx + s * (ow - 1) + 1:s] @ w[:, :, ky, kx].T.astype(np.float64)
    return out


@pytest.mark.parametrize("level", supported_levels())
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_stem_matches_numpy(level: str, case: tuple) -> None:
    h, w, c, oc, k, s, p = case
    rng = np.random.default_rng(h + w + c)
    x = rng.standard_normal((1, h, w, c), np.float32)
    wt = (rng.standard_normal((oc, c, k, k)) / k).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    geo = ConvGeometry(1, h, w, c, oc, k, k, (s, s), (1, 1), (p, p), (p, p), 1)
    want = _numpy(x, wt, bias, s, p)
    for threads in (1, 2):
        conv = Conv2d(geo, wt, Epilogue(), num_threads=threads, isa=host_isa(level))
        assert conv.packed is not None and conv.packed.merged_taps == k * k
        y = aligned_empty(geo.output_shape)
        y[:] = np.nan
        conv.bind(x, y, bias).run()
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * k)
