"""The implicit GEMM's k-paired narrow last vector (``PackedWeights.pair_tail``: 24, 40, 8, 1
output channels...) vs a float64 numpy convolution: odd and even K, K chunks with an odd last
chunk, merged taps, groups, channel slices, the fused epilogue, infinities, 1 and 2 threads,
every ISA level (the pairs exist on AVX-512; elsewhere the same cases run the plain kernel)."""

import numpy as np
import pytest

from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry
from ember.devices.cpu.kernels.gemm import PAIR_MR, Epilogue, pairs_supported
from ember.devices.cpu.llvm.isa import host_isa, supported_levels

LEVELS = supported_levels()


def direct(x, w, bias, pad, stride, groups):
    """float64 NHWC convolution by explicit taps (independent of the kernels)."""
    n, h, wd, c = x.shape
    oc, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, oh, ow, oc))
    og = oc // groups
    for g in range(groups):
        for ky in range(kh):
            for kx in range(kw):
                patch = xp[:, ky:ky + stride * (oh - 1) + 1:stride, kx:kx + stride * (ow - 1) + 1:stride,
                           g * cg:(g + 1) * cg]
                out[..., g * og:(g + 1) * og] += patch @ w[g * og:(g + 1) * og, :, ky, kx].T.astype(np.float64)
    return out + (0 if bias is None else bias)


# (h, w, cin, cout, k, stride, groups): cout's last vector holds at most 8 columns
CASES = [
    (9, 11, 96, 24, 3, 1, 1),     # PP-OCR's neck: K = 96 per tap, even
    (7, 6, 5, 24, 3, 1, 1),       # 5 channels: taps merged into K = 45 (odd: a last single k)
    (6, 7, 33, 40, 3, 2, 1),      # 32 + 8 columns, K = 33 per tap
    (8, 8, 301, 24, 3, 1, 1),     # K chunks of 56 channels, the last one 21 (odd)
    (5, 9, 7, 1, 1, 1, 1),        # one output channel
    (4, 4, 17, 8, 1, 1, 1),       # 8 columns: one paired vector alone
    (6, 6, 12, 48, 3, 1, 2),      # two groups of 24
    (3, 29, 16, 20, 3, 1, 1),     # 16 + 4 columns; 29 pixels a row: tiles of PAIR_MR rows and a remainder
    (1, 1, 2, 24, 1, 1, 1),       # K = 2, one pixel
]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CASES, ids=[f"{c[2]}to{c[3]}k{c[4]}s{c[5]}g{c[6]}" for c in CASES])
def test_paired_tail_matches_reference(level, case):
    h, w, cin, cout, k, stride, groups = case
    isa = host_isa(level)
    rng = np.random.default_rng(cin * 1000 + cout)
    x = rng.standard_normal((1, h, w, cin)).astype(np.float32)
    wt = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    pad = k // 2
    geo = ConvGeometry(1, h, w, cin, cout, k, k, (stride, stride), (1, 1), (pad, pad), (pad, pad), groups)
    want = direct(x, wt, bias, pad, stride, groups)
    for threads in (1, 2):
        conv = Conv2d(geo, wt, num_threads=threads, isa=isa)
        assert conv.packed is not None and conv.packed.pair_tail == pairs_supported(isa)
        got = conv(x, bias=bias)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(cin * k * k))


@pytest.mark.parametrize("level", LEVELS)
def test_paired_tail_epilogue_slices_and_infinity(level):
    """Residual + clamp epilogue, X and Y channel slices of wider buffers, and an infinite input:
    the paired lanes of padding columns and of an odd last k must not turn an inf into NaN."""
    isa = host_isa(level)
    rng = np.random.default_rng(5)
    h, w, cin, cout = 5, 2 * PAIR_MR + 3, 7, 24  # K = 63 (odd) per row with merged taps
    xbuf = rng.standard_normal((1, h, w, cin + 5)).astype(np.float32)
    x = xbuf[..., 2:2 + cin]
    x[0, 2, 3, 4] = np.inf
    wt = np.abs(rng.standard_normal((cout, cin, 3, 3))).astype(np.float32) + 0.1  # positive: +inf stays +inf
    res = rng.standard_normal((1, h, w, cout)).astype(np.float32)
    geo = ConvGeometry(1, h, w, cin, cout, 3, 3, pads_begin=(1, 1), pads_end=(1, 1))
    conv = Conv2d(geo, wt, Epilogue.clamp(-2.0, np.inf), num_threads=2, isa=isa)
    ybuf = np.full((1, h, w, cout + 8), 7.0, np.float32)
    y = ybuf[..., 8:]
    conv.bind(x, y, None, res).run()
    want = np.maximum(direct(x, wt, None, 1, 1, 1) + res, -2.0)
    assert np.isposinf(want).sum() == 9 * cout
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(want))
    assert not np.isnan(y).any()
    fin = np.isfinite(want)
    np.testing.assert_allclose(y[fin], want[fin], rtol=1e-4, atol=1e-3)
    assert (ybuf[..., :8] == 7.0).all()  # the columns before the slice untouched
