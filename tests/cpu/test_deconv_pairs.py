"""Transposed convolutions whose GEMM has a narrow last vector (``taps x cout / groups`` columns
with at most 8 in the last 16-lane vector: PP-OCR det's 24 -> 1 head at k 2x2 has 4) pack it
k-paired (``PackedWeights.pair_tail``); vs a float64 numpy transposed convolution, with bias,
ReLU and a residual, odd K, K chunks, groups, 1 and 2 threads, every ISA level (the pairs exist
on AVX-512; elsewhere the same cases run the plain kernel)."""

import numpy as np
import pytest

from ember.devices.cpu.kernels.deconv import ConvTranspose, DeconvGeometry
from ember.devices.cpu.kernels.gemm import Epilogue, pairs_supported
from ember.devices.cpu.llvm.isa import host_isa, supported_levels
from ember.ops.conv import conv_backprop

# (batch, spatial, out spatial, cin, cout, kernel, strides, pads_begin, groups, paired)
CASES = [
    (1, (12, 16), (24, 32), 24, 1, (2, 2), (2, 2), (0, 0), 1, True),    # PP-OCR det's head: N = 4
    (1, (5, 6), (10, 12), 24, 24, (2, 2), (2, 2), (0, 0), 1, False),    # its 24 -> 24: N = 96, no tail
    (2, (13,), (28,), 70, 2, (4,), (2,), (1,), 1, True),                # 1-D, N = 8: one paired vector
    (1, (4, 5), (8, 10), 10, 4, (2, 2), (2, 2), (0, 0), 2, True),       # two groups of N = 8
    (1, (7, 3), (14, 6), 7, 1, (2, 2), (2, 2), (0, 0), 1, True),        # K = 7: a last single k
    (1, (3, 4), (6, 8), 301, 1, (2, 2), (2, 2), (0, 0), 1, True),       # K in chunks, the last odd
    (1, (6, 5), (13, 11), 9, 5, (3, 3), (2, 2), (1, 1), 1, False),      # N = 45: 13 in the last vector
    (1, (5, 6), (11, 12), 8, 4, (3, 3), (2, 2), (1, 1), 4, False),      # one channel per group, taps overlap
    (1, (2, 3, 3), (4, 6, 7), 4, 1, (2, 2, 2), (2, 2, 2), (0, 0, 0), 1, True),  # 3-D, output padding
    (1, (3, 37), (6, 74), 5, 1, (2, 2), (2, 2), (0, 0), 1, True),       # rows of 74: a partial column block
    (1, (4, 5), (9, 11), 6, 60, (3, 3), (2, 2), (1, 1), 1, False),      # gather: 3 full vectors + 12 lanes
    (1, (3, 4), (6, 8), 7, 72, (2, 2), (2, 2), (0, 0), 1, False),       # gather: a block of 4 vectors + 8 lanes
]


@pytest.mark.parametrize("level", supported_levels())
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{len(c[1])}d-{c[3]}to{c[4]}-g{c[8]}")
def test_conv_transpose_paired_tail_matches_numpy(level: str, case: tuple) -> None:
    n, sp, out, cin, cout, k, s, pb, g, paired = case
    isa = host_isa(level)
    rng = np.random.default_rng(cin * 100 + cout)
    x = rng.standard_normal((n, *sp, cin)).astype(np.float32)
    w = (rng.standard_normal((g, cin // g, cout // g, *k)) / np.sqrt(cin // g)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    res = rng.standard_normal((n, *out, cout)).astype(np.float32)
    d = (1,) * len(sp)
    geo = DeconvGeometry(n, sp, out, cin, cout, k, s, d, pb, g)
    want = np.moveaxis(conv_backprop(np.moveaxis(x.astype(np.float64), -1, 1), w.astype(np.float64), s, d, pb, out),
                       1, -1)
    want = np.maximum(want + bias + res, 0)
    for threads in (1, 2):
        conv = ConvTranspose(geo, w, Epilogue.relu(), num_threads=threads, isa=isa)
        assert conv.packed is not None
        assert conv.packed.pair_tail == (paired and pairs_supported(isa))
        y = conv(x, None, bias, res)
        np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5)


def test_one_channel_gather_into_a_channel_slice() -> None:
    """The one-channel gather (columns vectorized) writes into a channel slice of a wider
    buffer and reads a residual slice: pixel strides other than 1."""
    geo = DeconvGeometry(1, (4, 9), (8, 18), 6, 2, (2, 2), (2, 2), (1, 1), (0, 0), 2)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 4, 9, 6)).astype(np.float32)
    w = rng.standard_normal((2, 3, 1, 2, 2)).astype(np.float32)
    bias = rng.standard_normal(2).astype(np.float32)
    wide, rwide = np.full((1, 8, 18, 7), np.nan, np.float32), rng.standard_normal((1, 8, 18, 5)).astype(np.float32)
    y, res = wide[..., 3:5], rwide[..., 1:3]
    for k in ConvTranspose(geo, w, num_threads=2).bind(x, y, np.empty(geo.cols_shape, np.float32), bias, res):
        k.run()
    want = np.moveaxis(conv_backprop(np.moveaxis(x.astype(np.float64), -1, 1), w.astype(np.float64), (2, 2), (1, 1),
                                     (0, 0), (8, 18)), 1, -1) + bias + res
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5)
    assert np.isnan(wide[..., :3]).all() and np.isnan(wide[..., 5:]).all()


def _axis_table_by_loops(n_in: int, n_out: int, k: int, s: int, d: int, pad: int, pixel: int, tap: int,
                         wtap: int) -> np.ndarray:
    """The definition of ``axis_table``, position by position and tap by tap."""
    pairs = []
    for o in range(n_out):
        here = []
        for t in range(k):
            q = o + pad - t * d
            if q % s == 0 and 0 <= q // s < n_in:
                here.append((q // s * pixel + t * tap, t * wtap))
        pairs.append(here)
    width = max([len(p) for p in pairs] + [1])
    table = np.zeros((max(n_out, 1), 1 + 2 * width), np.int64)
    for o, here in enumerate(pairs):
        table[o, 0] = len(here)
        for j, (so, wo) in enumerate(here):
            table[o, 1 + 2 * j], table[o, 2 + 2 * j] = so, wo
    return table


def test_axis_table_is_its_definition() -> None:
    """The vectorized (and memoized, read-only) tap tables equal the loops that define them:
    strides, dilations, negative and large pads, empty axes."""
    from ember.devices.cpu.kernels.deconv import axis_table

    rng = np.random.default_rng(5)
    for _ in range(1500):
        args = (int(rng.integers(0, 40)), int(rng.integers(0, 90)), int(rng.integers(1, 8)), int(rng.integers(1, 5)),
                int(rng.integers(1, 4)), int(rng.integers(-3, 7)), int(rng.integers(1, 500)), int(rng.integers(0, 300)),
                int(rng.integers(0, 200)))
        got = axis_table(*args)
        np.testing.assert_array_equal(got, _axis_table_by_loops(*args), err_msg=str(args))
        assert not got.flags.writeable
