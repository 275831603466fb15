"""AMX tile kernels (int8 ``tdpbusd``) against the AVX-512 VNNI path and numpy integer math,
from one table of shapes (odd M/N/K, K not a multiple of 4 or 64, tails, convolutions that
load A straight from the activations and ones that copy it). Both paths run on an AMX host:
``host_isa("amx")`` and ``host_isa("avx512")`` (what ``EMBER_CPU_ISA=avx512`` gives)."""

import numpy as np
import pytest

from ember.devices.cpu.kernels.amx import amx_split
from ember.devices.cpu.kernels.conv import ConvGeometry
from ember.devices.cpu.kernels.gemm import Epilogue
from ember.devices.cpu.kernels.int8_gemm import (
    FusedQuantize,
    Int8Conv2d,
    Int8Gemm,
    QuantizeParams,
    int8_kernels,
    pack_int8_weights,
    padded_channels,
)
from ember.devices.cpu.llvm import isa as isa_mod
from ember.errors import EmberError

AMX = isa_mod.amx_supported()
needs_amx = pytest.mark.skipif(not AMX, reason="this CPU (or its OS) has no AMX tiles")
EPILOGUES = {"none": Epilogue(), "relu": Epilogue.relu(), "clamp": Epilogue.clamp(-0.5, 0.75)}
FUSED = QuantizeParams(-0.7, 0.8, -0.7, 0.8, 256)


def test_amx_split_covers_k():
    """A tap's k4 groups run in nck steps of kq <= 16 groups, exactly when a divisor >= 8 exists."""
    for k4 in range(1, 300):
        kq, nck, ktap = amx_split(k4)
        assert 1 <= kq <= 16 and kq * nck == ktap >= k4
        if ktap > k4:
            assert kq == 16 and ktap - k4 < 16
    assert amx_split(24) == (12, 2, 24) and amx_split(64) == (16, 4, 64) and amx_split(37) == (16, 3, 48)


def test_isa_levels_name_amx():
    """``amx`` is accepted where the host has it; ``avx512`` switches the tiles off."""
    if "avx512" in isa_mod.supported_levels():
        plain = isa_mod.host_isa("avx512")
        assert not plain.amx_int8 and "+amx-tile" not in plain.features.split(",")
    if AMX:
        isa = isa_mod.host_isa("amx")
        assert isa.level == "avx512" and isa.amx_int8 and isa.amx_bf16 and isa == isa_mod.host_isa()
        assert int8_kernels(isa).exec_type == "jit_avx512_amx_I8"
        assert int8_kernels(isa).vector_exec_type == "jit_avx512_vnni_I8"  # depthwise: no tiles
        assert isa_mod.amx_permitted()
    else:
        with pytest.raises(EmberError, match="AMX"):
            isa_mod.host_isa("amx")


def _scales(rng, n):
    return (rng.random(n) * 0.02 + 0.001).astype(np.float32), rng.standard_normal(n).astype(np.float32)


# (M, K, N, zero point, epilogue, residual, fused: None / "end" / "u8" / "also")
GEMM_CASES = [
    (1, 1, 1, 0, "none", False, None),
    (1, 768, 1000, 3, "none", False, None),       # a classifier row: one A half, many panels
    (17, 45, 70, 7, "relu", True, None),          # K not a multiple of 4: copied rows
    (32, 64, 32, 255, "clamp", False, "u8"),      # one whole block, A straight from memory
    (100, 257, 65, 3, "relu", True, "end"),       # k4 = 65: 5 steps of 13 groups
    (40, 268, 20, 5, "none", False, None),        # k4 = 67 (prime): padded tap, A copied
    (33, 1000, 17, 128, "none", False, "also"),   # k4 = 250: steps of 10 groups
    (77, 96, 16, 0, "none", True, None),          # k4 = 24: two steps of 12, one B tile
    (130, 520, 300, 9, "relu", False, "u8"),      # several tiles and panels per task
]


@needs_amx
@pytest.mark.parametrize("case", GEMM_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-{c[6]}")
def test_amx_int8_gemm_matches_vnni_and_numpy(case):
    m, k, n, zp, epi_name, has_res, fused = case
    rng = np.random.default_rng(m * 7919 + k * 31 + n)
    a = rng.integers(0, 256, (m, padded_channels(k))).astype(np.uint8)  # padding bytes: any value
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    scale = np.full(n, 2.0 / (k * 128 * 60), np.float32)
    shift = (rng.standard_normal(n) * 0.3).astype(np.float32)
    res = (rng.standard_normal((m, n)) * 0.2).astype(np.float32) if has_res else None
    epi = EPILOGUES[epi_name]
    quantize = FusedQuantize(FUSED, "end", fused == "u8") if fused in ("end", "u8") else None
    also = FUSED if fused == "also" else None
    got = {}
    for level in ("amx", "avx512"):
        gemm = Int8Gemm(w, m, scale, shift, zp, epi, num_threads=2, isa=isa_mod.host_isa(level), quantize=quantize,
                        also_quantize=also)
        assert gemm.packed.amx == (level == "amx")
        if also is not None:
            y, q = np.zeros((m, n), np.float32), np.zeros((m, padded_channels(n)), np.uint8)
            gemm.bind(a, y, res, q).run()
            got[level] = (y, q)
        else:
            got[level] = (gemm(a, None, res),)
    for x, y in zip(got["amx"], got["avx512"]):
        np.testing.assert_array_equal(x, y)  # integer sums, the same f32 epilogue: bit for bit
    if fused is None:
        acc = ((a[:, :k].astype(np.int64) - zp) @ w.astype(np.int64)).astype(np.float32)
        want = epi.apply(acc * scale + shift + (0 if res is None else res))
        np.testing.assert_allclose(got["amx"][0], want, rtol=1e-6, atol=1e-6)


def conv_reference(x, w, geo, zp):
    """Integer convolution of u8 NHWC ``x - zp`` with s8 OIHW weights (numpy, float64)."""
    n, h, wd, cin = geo.batch, geo.h, geo.w, geo.cin
    (sh, sw), (dh, dw), (pt, pl) = geo.strides, geo.dilations, geo.pads_begin
    xs = x[..., :cin].astype(np.float64) - zp
    out = np.zeros(geo.output_shape, np.float64)
    cg, og = cin // geo.groups, geo.cout // geo.groups
    for ky in range(geo.kh):
        for kx in range(geo.kw):
            iy = np.arange(geo.oh) * sh - pt + ky * dh
            ix = np.arange(geo.ow) * sw - pl + kx * dw
            oky, okx = (iy >= 0) & (iy < h), (ix >= 0) & (ix < wd)
            patch = np.zeros((n, geo.oh, geo.ow, cin))
            patch[:, oky[:, None] & okx[None, :]] = xs[:, iy[oky]][:, :, ix[okx]].reshape(n, -1, cin)
            for g in range(geo.groups):
                wt = w[g * og:(g + 1) * og, :, ky, kx].astype(np.float64).T
                out[..., g * og:(g + 1) * og] += patch[..., g * cg:(g + 1) * cg] @ wt
    return out


# (batch, h, w, cin, cout, kh, kw, strides, dilations, pads_begin, pads_end, groups, zp, epilogue, residual)
CONV_CASES = [
    (1, 7, 9, 3, 17, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1, 128, "relu", False),    # a stem: taps gathered
    (2, 9, 11, 8, 40, 3, 3, (2, 1), (1, 2), (1, 2), (1, 0), 2, 7, "none", False),    # strided, dilated, grouped
    (1, 6, 6, 16, 33, 1, 1, (1, 1), (1, 1), (0, 0), (0, 0), 1, 0, "none", True),     # 1x1 + residual
    (2, 20, 20, 64, 64, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1, 3, "relu", True),   # rows inside a line: direct
    (1, 17, 19, 256, 48, 1, 1, (2, 2), (1, 1), (0, 0), (0, 0), 1, 11, "clamp", False),  # strided 1x1
    (1, 9, 40, 36, 20, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1, 200, "none", False),  # k4 = 9 per tap
    (1, 23, 21, 3, 64, 7, 7, (2, 2), (1, 1), (3, 3), (3, 3), 1, 128, "relu", False),  # ResNet's stem
]


@needs_amx
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[3]}to{c[4]}-k{c[5]}x{c[6]}-s{c[7][0]}-g{c[11]}")
def test_amx_int8_conv_matches_vnni_and_numpy(case):
    n, h, wd, cin, cout, kh, kw, s, d, pb, pe, groups, zp, epi_name, has_res = case
    geo = ConvGeometry(n, h, wd, cin, cout, kh, kw, s, d, pb, pe, groups)
    rng = np.random.default_rng(cin * 131 + cout)
    x = rng.integers(0, 256, (n, h, wd, padded_channels(cin))).astype(np.uint8)
    w = rng.integers(-128, 128, (cout, cin // groups, kh, kw)).astype(np.int8)
    scale, shift = _scales(rng, cout)
    scale = scale / np.float32(kh * kw * cin)
    res = rng.standard_normal(geo.output_shape).astype(np.float32) if has_res else None
    epi = EPILOGUES[epi_name]
    want = epi.apply(conv_reference(x, w, geo, zp) * scale.astype(np.float64) + shift + (0 if res is None else res))
    got = {}
    for level in ("amx", "avx512"):
        y = np.full(geo.output_shape, np.nan, np.float32)
        Int8Conv2d(geo, w, scale, shift, zp, epi, num_threads=2, isa=isa_mod.host_isa(level))(x, y, res)
        got[level] = y
    np.testing.assert_array_equal(got["amx"], got["avx512"])
    np.testing.assert_allclose(got["amx"], want, rtol=1e-6, atol=1e-5 * np.abs(want).max() + 1e-6)


@needs_amx
def test_amx_weights_pad_a_tap_only_when_needed():
    isa = isa_mod.host_isa("amx")
    w = np.ones((1, 9, 64, 8), np.int8)
    assert pack_int8_weights(w, isa).ktap == 16
    odd = pack_int8_weights(np.ones((1, 1, 268, 8), np.int8), isa)  # k4 = 67: no divisor >= 8
    assert odd.k4 == 67 and odd.ktap == 80
    assert pack_int8_weights(w, isa_mod.host_isa("avx512")).ktap == 16


# ---------------------------------------------------------------------------- bf16
def _bf16(x):
    from ember.devices.cpu.kernels.gemm import round_to_bf16

    return round_to_bf16(np.ascontiguousarray(x, np.float32)).astype(np.float64)


# (M, K, N, epilogue, bias, residual)
BF16_GEMM_CASES = [
    (1, 1, 1, "none", False, False),
    (1, 768, 1000, "none", True, False),    # a classifier row
    (17, 45, 70, "relu", True, True),       # odd K: a zero pair, 23 pairs padded to 32
    (32, 64, 32, "clamp", False, False),    # one whole block
    (100, 257, 65, "relu", False, True),    # 129 pairs (prime-ish): padded steps
    (77, 96, 16, "none", True, False),      # one B tile
    (130, 1000, 300, "none", True, True),   # 500 pairs: steps of 10 (no padding), several panels
    (200, 6000, 200, "relu", True, True),   # 1.9 MB of panels: groups of 2 row tiles, the last one short
    (100, 96, 1000, "clamp", True, True),   # 6 KB panels, 190 KB of them: the 4 row tiles in one group
]


@needs_amx
@pytest.mark.parametrize("case", BF16_GEMM_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-{c[3]}")
def test_amx_bf16_gemm_matches_numpy(case):
    """bf16 GEMM on tiles = the exact product of the bf16-rounded operands, f32 accumulation."""
    from ember.devices.cpu.kernels.gemm import Gemm, pack_b

    m, k, n, epi_name, has_bias, has_res = case
    rng = np.random.default_rng(m + 3 * k + 7 * n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if has_bias else None
    res = rng.standard_normal((m, n)).astype(np.float32) if has_res else None
    epi = EPILOGUES[epi_name]
    want = epi.apply(_bf16(a) @ _bf16(w) + (0 if bias is None else bias) + (0 if res is None else res))
    got = {}
    for level in ("amx", "avx512"):
        packed = pack_b(w, isa_mod.host_isa(level), precision="bf16")
        assert packed.amx == (level == "amx")
        c = np.full((m, n), np.nan, np.float32)
        Gemm(packed, m, epi, num_threads=2)(a, c, bias, res)
        got[level] = c
    tol = 2e-6 * np.sqrt(k) * max(1.0, np.abs(want).max())
    np.testing.assert_allclose(got["amx"], want, rtol=1e-5, atol=tol)
    np.testing.assert_allclose(got["amx"], got["avx512"], rtol=1e-5, atol=tol)


# (batch, h, w, cin, cout, kh, kw, strides, dilations, pads_begin, pads_end, groups)
BF16_CONV_CASES = [
    (1, 7, 9, 3, 17, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1),       # a stem: taps gathered
    (2, 30, 27, 3, 40, 7, 7, (2, 2), (1, 1), (3, 3), (3, 3), 1),     # a 7x7 stem: rows loaded before stored
    (1, 21, 20, 3, 16, 5, 5, (2, 2), (1, 1), (2, 2), (2, 2), 1),     # 5x5 (3x3 above), the same
    (2, 9, 11, 8, 40, 3, 3, (2, 1), (1, 2), (1, 2), (1, 0), 2),      # strided, dilated, grouped
    (2, 12, 10, 64, 64, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1),
    (1, 9, 8, 35, 20, 1, 1, (1, 1), (1, 1), (0, 0), (0, 0), 1),      # odd channels
]


@needs_amx
@pytest.mark.parametrize("case", BF16_CONV_CASES, ids=lambda c: f"{c[3]}to{c[4]}-k{c[5]}x{c[6]}-g{c[11]}")
def test_amx_bf16_conv_matches_avx512(case):
    """Convolution through the bf16 tiles against the AVX512_BF16 kernel (a residual too)."""
    from ember.devices.cpu.kernels.conv import Conv2d

    n, h, wd, cin, cout, kh, kw, s, d, pb, pe, groups = case
    geo = ConvGeometry(n, h, wd, cin, cout, kh, kw, s, d, pb, pe, groups)
    rng = np.random.default_rng(cin + cout)
    x = rng.standard_normal((n, h, wd, cin)).astype(np.float32)
    w = rng.standard_normal((cout, cin // groups, kh, kw)).astype(np.float32)
    res = rng.standard_normal(geo.output_shape).astype(np.float32)
    got = {}
    for level in ("amx", "avx512"):
        conv = Conv2d(geo, w, Epilogue.relu(), 2, isa_mod.host_isa(level), "bf16")
        assert conv.packed.amx == (level == "amx")
        got[level] = conv(x, None, None, res)
    tol = 2e-5 * np.sqrt(cin // groups * kh * kw) + 1e-5
    np.testing.assert_allclose(got["amx"], got["avx512"], rtol=tol, atol=tol)


@needs_amx
def test_fake_quantize_steps_at_ties():
    """The quantize kernel's division (a reciprocal and an FMA correction) rounds like numpy's
    f32 division at the values where the step changes (k + 1/2 steps, a few ulps either side)."""
    from ember.devices.cpu.kernels.int8_gemm import Quantize

    rng = np.random.default_rng(1)
    for _ in range(40):
        il = np.float32(rng.standard_normal() * 10 ** rng.uniform(-4, 2))
        ih = np.float32(il + abs(rng.standard_normal()) * 10 ** rng.uniform(-5, 3) + 1e-30)
        levels = int(rng.choice([256, 255, 16, 2]))
        p = QuantizeParams(il, ih, il, ih, levels)
        if not p.valid():
            continue
        x0 = (il + (rng.integers(0, levels - 1, 2048) + 0.5) * ((np.float64(ih) - il) / (levels - 1))).astype(np.float32)
        xs = [x0]
        for direction in (np.inf, -np.inf):
            x = x0
            for _ in range(3):
                x = np.nextafter(x, np.float32(direction))
                xs.append(x)
        x = np.concatenate(xs).reshape(-1, 1)
        y = np.zeros((x.shape[0], 4), np.uint8)
        Quantize(p, x.shape[0], 1, isa=isa_mod.host_isa("amx"))(x, y)
        np.testing.assert_array_equal(y[:, :1], p.quantize(x))


@pytest.mark.parametrize("level", ["avx512", "avx2", "generic"])
@pytest.mark.parametrize("c, cpad, per_channel", [(3, 4, False), (3, 4, True), (1, 4, False), (4, 4, True),
                                                  (2, 8, False), (5, 8, True)])
def test_quantize_packs_pixels_of_few_channels(level, c, cpad, per_channel):
    """An image's few channels, dense rows, u8 out: whole pixels per vector (lane j = channel
    j % cpad), the padding bytes the fill; equal to numpy's steps, any number of rows."""
    from ember.devices.cpu.kernels.int8_gemm import Quantize

    if level not in isa_mod.supported_levels():
        pytest.skip(f"no {level} here")
    rng = np.random.default_rng(c * 10 + cpad)
    lo = (-rng.random(c) if per_channel else np.float32(-0.8)).astype(np.float32)
    hi = (rng.random(c) + 0.2 if per_channel else np.float32(1.1)).astype(np.float32)
    p = QuantizeParams(lo, hi, lo, hi, 256)
    for rows in (1, 5, 37, 4099):
        x = (rng.standard_normal((rows, c)) * 1.2).astype(np.float32)
        y = np.zeros((rows, cpad), np.uint8)
        Quantize(p, rows, c, fill=77, num_threads=2, isa=isa_mod.host_isa(level))(x, y)
        np.testing.assert_array_equal(y[:, :c], p.quantize(x))
        assert (y[:, c:] == 77).all()


@needs_amx
@pytest.mark.parametrize("residual", [None, "plain", "quantized"])
@pytest.mark.parametrize("out", ["f32", "mid", "end", "u8", "also"])
def test_amx_int8_epilogue_flag_sets(residual, out):
    """Every epilogue flag set (the specialised row loops and the general one) against VNNI,
    bit for bit: residual none / plain / through its FakeQuantize x f32, FakeQuantize before the
    residual or last, u8 steps, f32 and a second u8 output."""
    m, k, n = 45, 100, 40
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (m, padded_channels(k))).astype(np.uint8)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    scale = np.full(n, 2.0 / (k * 128 * 60), np.float32)
    shift = (rng.standard_normal(n) * 0.3).astype(np.float32)
    res = (rng.standard_normal((m, n)) * 0.4).astype(np.float32) if residual else None
    res_q = QuantizeParams(-0.5, 0.6, -0.5, 0.6, 256) if residual == "quantized" else None
    quantize = {"mid": FusedQuantize(FUSED, "mid"), "end": FusedQuantize(FUSED, "end"),
                "u8": FusedQuantize(FUSED, "end", True)}.get(out)
    also = FUSED if out == "also" else None
    got = {}
    for level in ("amx", "avx512"):
        gemm = Int8Gemm(w, m, scale, shift, 9, Epilogue.relu(), 2, isa_mod.host_isa(level), quantize, res_q, also)
        y = np.zeros((m, padded_channels(n)) if out == "u8" else (m, n), np.uint8 if out == "u8" else np.float32)
        q = np.zeros((m, padded_channels(n)), np.uint8) if also else None
        gemm.bind(a, y, res, q).run()
        got[level] = (y, q)
    np.testing.assert_array_equal(got["amx"][0], got["avx512"][0])
    if also:
        np.testing.assert_array_equal(got["amx"][1], got["avx512"][1])


# (h, w, c, kh, kw, strides, dilations, pads_begin, pads_end)
DW_CASES = [
    (6, 23, 37, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1)),   # unit stride: blocks of 4 pixels, tails, channel tail
    (9, 30, 16, 3, 3, (2, 2), (1, 1), (0, 1), (1, 0)),   # strided: one pixel at a time inside
    (7, 19, 24, 5, 5, (1, 1), (1, 1), (2, 2), (2, 2)),
    (8, 14, 20, 3, 3, (1, 1), (2, 2), (2, 2), (2, 2)),   # dilated: inside one pixel at a time
    (3, 3, 8, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1)),     # no pixel inside
]


@pytest.mark.parametrize("level", ["amx", "avx512", "avx2"])
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-k{c[3]}-s{c[5][0]}-d{c[6][0]}")
def test_int8_depthwise_inside_and_border(level, case):
    """The unrolled depthwise kernel: taps inside the image summed without selects (4 pixels
    sharing columns at unit stride), border pixels with them; equal to numpy's integer sums."""
    from ember.devices.cpu.kernels.int8_gemm import Int8Depthwise

    if level == "amx" and not AMX or level != "amx" and level not in isa_mod.supported_levels():
        pytest.skip(f"no {level} here")
    h, w, c, kh, kw, s, d, pb, pe = case
    geo = ConvGeometry(2, h, w, c, c, kh, kw, s, d, pb, pe, c)
    rng = np.random.default_rng(h * w + c)
    x = rng.integers(0, 256, (2, h, w, padded_channels(c))).astype(np.uint8)
    wt = rng.integers(-128, 128, (c, 1, kh, kw)).astype(np.int8)
    zp = rng.integers(0, 256, c)
    scale, shift = _scales(rng, c)
    want = np.zeros(geo.output_shape)
    for ch in range(c):
        g1 = ConvGeometry(2, h, w, 1, 1, kh, kw, s, d, pb, pe, 1)
        want[..., ch:ch + 1] = conv_reference(x[..., ch:ch + 1], wt[ch:ch + 1], g1, zp[ch])
    want = want * scale.astype(np.float64) + shift
    got = Int8Depthwise(geo, wt, scale, shift, zp, Epilogue(), 2, isa_mod.host_isa(level))(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5 * np.abs(want).max())


@needs_amx
def test_amx_only_where_the_a_buffer_fits_the_stack():
    """A tile task keeps a tile's A rows on its stack: K beyond STACK_LIMIT packs for AVX-512."""
    from ember.devices.cpu.kernels.amx import STACK_LIMIT, fits_stack
    from ember.devices.cpu.kernels.gemm import pack_b

    isa = isa_mod.host_isa("amx")
    assert fits_stack(9, 2048) and not fits_stack(1, STACK_LIMIT)
    big = STACK_LIMIT // 32 + 64  # bytes of K per row: just past the limit
    assert not pack_int8_weights(np.ones((1, 1, big, 4), np.int8), isa).amx
    assert pack_int8_weights(np.ones((1, 1, 4096, 4), np.int8), isa).amx
    assert not pack_b(np.ones((big // 2 + 64, 4), np.float32), isa, precision="bf16").amx
    a = np.ones((3, big), np.uint8)
    y = Int8Gemm(np.ones((big, 4), np.int8), 3, np.ones(4, np.float32), isa=isa)(a)
    np.testing.assert_array_equal(y, np.full((3, 4), big, np.float32))
