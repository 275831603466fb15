"""INT8 kernels (u8 x s8 GEMM, implicit-GEMM convolution, quantize) vs numpy integer math, on
every ISA level this CPU supports, with and without VNNI."""

import dataclasses

import numpy as np
import pytest

from ember.devices.cpu.kernels.conv import ConvGeometry
from ember.devices.cpu.kernels.gemm import Epilogue
from ember.devices.cpu.kernels.int8_gemm import (
    FLAG_FOLDED,
    INT8_CONTEXT,
    QUANT_F32,
    FusedQuantize,
    Int8Conv2d,
    Int8Gemm,
    Quantize,
    QuantizeParams,
    int8_kernels,
    padded_channels,
    row_pack_fits,
)
from ember.devices.cpu.llvm.isa import host_isa, supported_levels
from ember.errors import EmberError


def _isas():
    out = []
    for level in supported_levels():
        isa = host_isa(level)
        out.append(pytest.param(isa, id=f"{level}-vnni" if isa.vnni else level))
        if isa.vnni and level == "avx2":  # the portable dot product, as on an AVX2 CPU without VNNI
            out.append(pytest.param(dataclasses.replace(isa, vnni=False), id=f"{level}-novnni"))
    return out


ISAS = _isas()


def _vnni_and_amx():
    """The VNNI levels, and AMX tiles where the host has them (the epilogue is emitted for both)."""
    from ember.devices.cpu.llvm import isa as isa_mod

    out = [p for p in ISAS if "novnni" not in p.id]
    if isa_mod.amx_supported():
        out.append(pytest.param(isa_mod.host_isa("amx"), id="amx"))
    return out


EPILOGUE_ISAS = _vnni_and_amx()
EPILOGUES = {"none": Epilogue(), "relu": Epilogue.relu(), "clamp": Epilogue.clamp(-0.5, 0.75)}

# (M, K, N, zero point, epilogue, residual)
GEMM_CASES = [
    (1, 1, 1, 0, "none", False),
    (1, 3, 33, 128, "relu", False),
    (13, 45, 70, 7, "none", True),
    (29, 64, 32, 255, "clamp", False),
    (100, 257, 65, 3, "relu", True),
    (3, 1000, 17, 128, "none", False),
    (15, 4, 31, 0, "none", False),
]


def _scales(rng, n):
    return (rng.random(n) * 0.02 + 0.001).astype(np.float32), rng.standard_normal(n).astype(np.float32)


FUSED = QuantizeParams(-0.7, 0.8, -0.7, 0.8, 256)


def _fake_quantize(v, params):
    import ember.opset as ops

    ranges = [np.array(r, np.float32) for r in (params.il, params.ih, params.ol, params.oh)]
    v = v.astype(np.float32)
    return ops.fake_quantize(v, *ranges, params.levels).evaluate([v, *ranges])[0]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("at", ["mid", "end", "u8", "also"])
@pytest.mark.parametrize("case", GEMM_CASES[2:5], ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-zp{c[3]}-{c[4]}")
@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_gemm_fused_fake_quantize(isa, at, case, per_channel):
    """A FakeQuantize fused into the epilogue: before the residual, last, or as u8 steps;
    ranges per tensor or per output channel."""
    m, k, n, zp, epi_name, has_res = case
    rng = np.random.default_rng(m + k + n)
    fused_params = FUSED
    if per_channel:
        lo = (-rng.random(n) * 0.8).astype(np.float32)
        hi = (rng.random(n) * 0.8 + 0.1).astype(np.float32)
        fused_params = QuantizeParams(lo, hi, lo, hi, 256)
    a = rng.integers(0, 256, (m, padded_channels(k))).astype(np.uint8)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    scale = np.full(n, 2.0 / (k * 128 * 60), np.float32)
    shift = (rng.standard_normal(n) * 0.3).astype(np.float32)
    res = (rng.standard_normal((m, n)) * 0.2).astype(np.float32) if has_res else None
    epi = EPILOGUES[epi_name]
    fused = None if at == "also" else FusedQuantize(fused_params, at if at == "mid" else "end", at == "u8")
    acc = ((a[:, :k].astype(np.int64) - zp) @ w.astype(np.int64)).astype(np.float32)
    v = acc * scale + shift  # f32, as the kernel computes it
    if at == "mid":
        v = _fake_quantize(v, fused_params)
    if res is not None:
        v = v + res
    v = epi.apply(v).astype(np.float32)
    gemm = Int8Gemm(w, m, scale, shift, zp, epi, num_threads=2, isa=isa, quantize=fused,
                    also_quantize=fused_params if at == "also" else None)
    if at == "also":  # f32 values as they are, and their u8 steps beside
        got = np.zeros((m, n), np.float32)
        steps = np.zeros((m, padded_channels(n)), np.uint8)
        gemm.bind(a, got, res, steps).run()
        np.testing.assert_allclose(got, v, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(steps[:, :n], fused_params.quantize(v))
        return
    got = gemm(a, None, res)
    if at == "u8":
        assert got.dtype == np.uint8 and got.shape == (m, padded_channels(n))
        np.testing.assert_array_equal(got[:, :n], fused_params.quantize(v))
    else:
        want = _fake_quantize(v, fused_params) if at == "end" else v
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("isa", [p for p in ISAS if "novnni" not in p.id])
@pytest.mark.parametrize("depthwise", [False, True])
def test_residual_fake_quantize(isa, depthwise):
    """The residual goes through its own FakeQuantize before the add (NNCF's quantized
    residual branch), per tensor; the output FakeQuantize stays independent."""
    from ember.devices.cpu.kernels.int8_gemm import Int8Depthwise

    rng = np.random.default_rng(5)
    res_q = QuantizeParams(-0.5, 0.6, -0.5, 0.6, 256)
    geo = ConvGeometry(1, 6, 7, 24, 24, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 24 if depthwise else 1)
    x = rng.integers(0, 256, (1, 6, 7, 24)).astype(np.uint8)
    w = rng.integers(-128, 128, (24, 1 if depthwise else 24, 3, 3)).astype(np.int8)
    scale = np.full(24, 1e-4, np.float32)
    res = (rng.standard_normal(geo.output_shape) * 0.4).astype(np.float32)
    cls = Int8Depthwise if depthwise else Int8Conv2d
    got = cls(geo, w, scale, None, 3, Epilogue.relu(), 2, isa, FusedQuantize(FUSED, "end"), res_q)(x, None, res)
    pre = cls(geo, w, scale, None, 3, Epilogue(), 2, isa)(x)  # the same kernel without the tail
    want = _fake_quantize(np.maximum(pre + _fake_quantize(res, res_q), np.float32(0)), FUSED)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("isa", EPILOGUE_ISAS)
@pytest.mark.parametrize("at", ["mid", "end", "u8", "also", "residual"])
def test_fast_fake_quantize_within_one_step(isa, at):
    """The fast epilogue (``fast=True``: ``rint(x * a + b)`` clamped, one FMA per dequantized
    value) against the exact one (REFERENCE's FakeQuantize arithmetic, tested above): at most
    one step apart, and only at rounding ties (accumulators scaled so that many outputs sit
    exactly on ``k + 1/2`` steps)."""
    rng = np.random.default_rng(21)
    m, k, n = 67, 36, 45
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    params = QuantizeParams(-0.7, 0.8, -0.7, 0.8, 256)
    step = np.float32(1.5 / 255)
    scale = np.full(n, step / 64, np.float32)  # accumulators in 64ths of a step: ties are common
    shift = np.full(n, -0.7 + step * 0.5, np.float32)
    res_q = QuantizeParams(-0.5, 0.6, -0.5, 0.6, 256)
    res = (rng.standard_normal((m, n)) * 0.4).astype(np.float32)
    quantize = None if at == "also" else FusedQuantize(params, "end" if at in ("end", "u8") else "mid",
                                                       u8=at == "u8")
    also = params if at == "also" else None
    outs = []
    for fast in (False, True):
        kernel = Int8Gemm(w, m, scale, shift, 5, Epilogue(), 1, isa, quantize,
                          res_q if at == "residual" else None, also, fast=fast)
        c = np.zeros((m, padded_channels(n)), np.uint8) if at == "u8" else np.zeros((m, n), np.float32)
        q = np.zeros((m, padded_channels(n)), np.uint8) if also else None
        kernel.bind(a, c, res if at == "residual" else None, q).run()
        outs.append(q if also else c)
    exact, fast = outs
    if exact.dtype == np.uint8:
        diff = np.abs(exact[:, :n].astype(int) - fast[:, :n].astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.05, (diff.max(), diff.mean())
    else:
        tol = step * (1.0 if at != "residual" else 2.0) + 1e-6
        assert np.abs(exact - fast).max() <= tol
        assert np.mean(np.abs(exact - fast) > step / 2) < 0.05  # else an ulp (one FMA instead of two roundings)


@pytest.mark.parametrize("levels", [256, 16])
def test_folded_epilogue_steps(levels):
    """AMX's one-FMA u8 epilogue (FLAG_FOLDED: ``acc * A + B`` with scale, shift, the zero-point
    compensation and the FakeQuantize folded at compile time; a ReLU under il dropped): taken for
    a convolution + ReLU + FakeQuantize writing u8 steps and not with a residual; its steps against
    numpy's (f64 arithmetic, per-channel ranges, fewer levels than 256 clamped at the top) at most
    one step apart, and against the exact epilogue's."""
    from ember.devices.cpu.llvm import isa as isa_mod

    if not isa_mod.amx_supported():
        pytest.skip("no AMX tiles here")
    isa = isa_mod.host_isa("amx")
    rng = np.random.default_rng(5)
    geo = ConvGeometry(1, 11, 13, 36, 45, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1))
    x = rng.integers(0, 256, (1, 11, 13, 36)).astype(np.uint8)
    w = rng.integers(-128, 128, (45, 36, 3, 3)).astype(np.int8)
    ih = (rng.random(45) * 2 + 0.5).astype(np.float32)
    params = QuantizeParams(np.zeros(45, np.float32), ih, np.zeros(45, np.float32), ih, levels)
    scale = (ih / 3e5).astype(np.float32)
    shift = (rng.standard_normal(45) * ih / 4).astype(np.float32)
    zp = 9
    outs = []
    for fast in (False, True):
        conv = Int8Conv2d(geo, w, scale, shift, zp, Epilogue.relu(), 1, isa, FusedQuantize(params, "end", u8=True),
                          fast=fast)
        outs.append(conv(x)[..., :45].astype(np.int64))
        call = next(iter(conv._calls.values()))
        assert (call.folded is not None) == fast
        flags = INT8_CONTEXT["flags"]
        assert bool(call.bind(x.ctypes.data, 1).ctx[flags] & FLAG_FOLDED) == fast
        assert not call.bind(x.ctypes.data, 1, 1).ctx[flags] & FLAG_FOLDED  # a residual: the general epilogue
    xp = np.pad(x.astype(np.int64) - zp, ((0, 0), (1, 1), (1, 1), (0, 0)))
    acc = np.zeros((11, 13, 45), np.int64)
    for ky in range(3):
        for kx in range(3):
            acc += xp[0, ky:ky + 11, kx:kx + 13] @ w[:, :, ky, kx].T.astype(np.int64)
    val = np.maximum(acc * scale.astype(np.float64) + shift, 0.0)
    want = np.clip(np.rint(val / ih * (levels - 1)), 0, levels - 1)
    for got in outs:
        diff = np.abs(got[0] - want)
        assert diff.max() <= 1 and diff.mean() < 0.05, (diff.max(), diff.mean())
    assert outs[1].max() == levels - 1 and (outs[1] == 0).any()  # both ends reached
    assert np.abs(outs[0] - outs[1]).max() <= 1


def test_folded_block_end_steps():
    """AMX's folded ResNet block end (FOLDED_BLOCK_END): 1x1 convolution + bias -> FakeQuantize
    -> + the u8 steps of the residual's FakeQuantize -> ReLU -> the next block's u8 steps only, in
    three FMAs from the accumulator: taken with the residual, within one step of numpy's f64
    arithmetic and of the exact epilogue."""
    from ember.devices.cpu.llvm import isa as isa_mod

    if not isa_mod.amx_supported():
        pytest.skip("no AMX tiles here")
    isa = isa_mod.host_isa("amx")
    rng = np.random.default_rng(6)
    h, w_, cin, n = 7, 9, 40, 70
    geo = ConvGeometry(1, h, w_, cin, n, 1, 1)
    x = rng.integers(0, 256, (1, h, w_, cin)).astype(np.uint8)
    w = rng.integers(-128, 128, (n, cin, 1, 1)).astype(np.int8)
    mid = QuantizeParams(-2.0, 2.5, -2.0, 2.5, 256)
    res_q = QuantizeParams(0.0, 3.0, 0.0, 3.0, 256)
    nxt = QuantizeParams(0.0, 4.0, 0.0, 4.0, 256)
    scale = np.full(n, 4.0 / 3e5, np.float32)
    shift = (rng.standard_normal(n) * 0.5).astype(np.float32)
    res = rng.integers(0, 256, (1, h, w_, padded_channels(n))).astype(np.uint8)
    outs = []
    for fast in (False, True):
        conv = Int8Conv2d(geo, w, scale, shift, 4, Epilogue.relu(), 1, isa, FusedQuantize(mid, "mid"), res_q,
                          nxt, residual_u8=True, steps_only=True, fast=fast)
        outs.append(conv(x, None, res)[..., :n].astype(np.int64))
        call = next(iter(conv._calls.values()))
        assert (call.folded_end is not None) == fast
        assert bool(call.bind(x.ctypes.data, 1, 1).ctx[INT8_CONTEXT["flags"]] & FLAG_FOLDED) == fast
    acc = (x.astype(np.int64) - 4) @ w[:, :, 0, 0].T.astype(np.int64)
    v = acc * scale.astype(np.float64) + shift
    q1 = np.clip(np.rint((v + 2.0) / 4.5 * 255), 0, 255)
    y = np.maximum(q1 * 4.5 / 255 - 2.0 + res[..., :n] * 3.0 / 255, 0.0)
    want = np.clip(np.rint(y / 4.0 * 255), 0, 255)
    for got in outs:
        diff = np.abs(got - want)
        assert diff.max() <= 1 and diff.mean() < 0.05, (diff.max(), diff.mean())
    assert outs[1].max() == 255 and (outs[1] == 0).any()
    assert np.abs(outs[0] - outs[1]).max() <= 1


@pytest.mark.parametrize("isa", [p for p in ISAS if "novnni" not in p.id])
@pytest.mark.parametrize("u8", [False, True])
def test_fast_depthwise_within_one_step(isa, u8):
    """The depthwise kernel's fast epilogue (MobileNetV2's 3x3 layers, ReLU6, u8 steps out)
    against its exact one: at most one step apart, on exact ties."""
    from ember.devices.cpu.kernels.int8_gemm import Int8Depthwise

    rng = np.random.default_rng(8)
    geo = ConvGeometry(1, 9, 10, 40, 40, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 40)
    x = rng.integers(0, 256, (1, 9, 10, 40)).astype(np.uint8)
    w = rng.integers(-128, 128, (40, 1, 3, 3)).astype(np.int8)
    params = QuantizeParams(0.0, 6.0, 0.0, 6.0, 256)
    step = np.float32(6.0 / 255)
    scale = np.full(40, step / 32, np.float32)
    outs = [Int8Depthwise(geo, w, scale, np.full(40, 3.0, np.float32), 7, Epilogue.clamp(0.0, 6.0), 1, isa,
                          FusedQuantize(params, "end", u8=u8), fast=fast)(x) for fast in (False, True)]
    diff = np.abs(outs[0][..., :40].astype(np.float64) - outs[1][..., :40].astype(np.float64))
    assert diff.max() <= (1 if u8 else step + 1e-6)
    assert np.mean(diff > (0.5 if u8 else step / 2)) < 0.05


def test_exact_int8_arithmetic_on_request(monkeypatch):
    """``EMBER_INT8_EXACT=1``: the graph's int8 epilogues use REFERENCE's FakeQuantize arithmetic
    (equal to REFERENCE within f32 summation); by default the fast one, within int8 rounding."""
    import ember as ov

    model, xin, _ = _graph("resnet-blocks", np.random.default_rng(3))
    want = ov.Core().compile_model(model, "REFERENCE")(xin)[0]
    monkeypatch.setenv("EMBER_INT8_EXACT", "1")
    exact = ov.Core().compile_model(model, "CPU")(xin)[0]
    np.testing.assert_allclose(exact, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    monkeypatch.delenv("EMBER_INT8_EXACT")
    fast = ov.Core().compile_model(model, "CPU")(xin)[0]
    assert float(np.abs(fast - want).max()) <= 0.02 * float(np.abs(want).max())


# (residual FakeQuantize, output: "f32" / "u8" / "also", conv or gemm, M/pixels, channels)
RES_U8_CASES = [
    (QuantizeParams(0.0, 2.5, 0.0, 2.5, 256), "f32", "conv", 6, 24),       # a ResNet block output after ReLU
    (QuantizeParams(0.0, 2.5, 0.0, 2.5, 256), "u8", "conv", 7, 70),        # odd channels: padded rows
    (QuantizeParams(-0.5, 0.6, -0.5, 0.6, 256), "also", "gemm", 29, 33),
    (QuantizeParams(-0.5, 0.6, -0.4, 0.7, 255), "u8", "gemm", 100, 64),    # output ranges differ from input's
]


@pytest.mark.parametrize("isa", EPILOGUE_ISAS)
@pytest.mark.parametrize("case", RES_U8_CASES, ids=lambda c: f"{c[2]}-{c[1]}-{c[4]}")
def test_residual_read_as_u8_steps(isa, case):
    """A residual given as the u8 steps of its FakeQuantize (what the producer wrote for the
    next int8 layer) gives what the f32 residual through that FakeQuantize gives (REFERENCE's
    FakeQuantize values, within an ulp of the step's value)."""
    res_q, out, kind, m, c = case
    rng = np.random.default_rng(11)
    quantize = FusedQuantize(FUSED, "end", u8=out == "u8")
    also = FUSED if out == "also" else None
    scale = np.full(c, 2e-4, np.float32)
    if kind == "conv":
        geo = ConvGeometry(1, m, 5, 32, c, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1)
        x = rng.integers(0, 256, (1, m, 5, 32)).astype(np.uint8)
        w = rng.integers(-128, 128, (c, 32, 3, 3)).astype(np.int8)
        shape = geo.output_shape

        def make(**kw):
            return Int8Conv2d(geo, w, scale, None, 3, Epilogue.relu(), 2, isa, quantize, res_q, also, **kw)
    else:
        x = rng.integers(0, 256, (m, 64)).astype(np.uint8)
        w = rng.integers(-128, 128, (64, c)).astype(np.int8)
        shape = (m, c)

        def make(**kw):
            return Int8Gemm(w, m, scale, None, 3, Epilogue.relu(), 2, isa, quantize, res_q, also, **kw)
    res = (rng.standard_normal(shape) * 1.2).astype(np.float32)
    rows = int(np.prod(shape[:-1]))
    steps = np.zeros((*shape[:-1], padded_channels(c)), np.uint8)
    Quantize(res_q, rows, c, isa=isa)(res.reshape(rows, c), steps.reshape(rows, -1))

    def run(kernel, r):
        y = (np.zeros((*shape[:-1], padded_channels(c)), np.uint8) if out == "u8"
             else np.zeros(shape, np.float32))
        q = np.zeros((*shape[:-1], padded_channels(c)), np.uint8) if also else None
        kernel.bind(x, y, r, q).run()
        return y, q

    want, want_q = run(make(), res)
    got, got_q = run(make(residual_u8=True), steps)
    if out == "u8":
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        assert np.mean(got != want) < 0.01
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    if also:
        assert np.abs(got_q.astype(int) - want_q.astype(int)).max() <= 1
    with pytest.raises(EmberError, match="residual"):
        run(make(residual_u8=True), res)  # f32 given where u8 steps are expected


def test_row_packed_stem_reads_strided_images():
    """Images that are not back to back (every other one of a batch): the stem gathers its taps
    per task instead of packing rows, with the same integers."""
    geo = ConvGeometry(2, 21, 19, 3, 16, 7, 7, (2, 2), (1, 1), (3, 3), (3, 3))
    rng = np.random.default_rng(3)
    whole = rng.integers(0, 256, (4, 21, 19, 4)).astype(np.uint8)
    x = whole[::2]
    assert not x.flags.c_contiguous
    w = rng.integers(-128, 128, (16, 3, 7, 7)).astype(np.int8)
    conv = Int8Conv2d(geo, w, np.ones(16, np.float32), None, 40, num_threads=2)
    assert conv.row_packed is not None
    np.testing.assert_array_equal(conv(x), conv_reference(x, w, geo, 40).astype(np.float32))


@pytest.mark.parametrize("isa", [p for p in EPILOGUE_ISAS if p.id == "amx"])
@pytest.mark.parametrize("act", ["gelu_erf", "gelu_tanh", "swish"])
@pytest.mark.parametrize("out", ["f32", "u8"])
def test_int8_gemm_epilogue_activation(isa, act, out):
    """An activation after the bias in the AMX epilogue (a transformer's FFN GELU), f32 out or
    the next op's u8 steps: numpy's activation of the integer product, the steps within one."""
    m, k, n, zp = 45, 100, 70, 9
    rng = np.random.default_rng(len(act) * 13 + len(out))
    a = np.zeros((m, padded_channels(k)), np.uint8)
    a[:, :k] = rng.integers(0, 256, (m, k))
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    scale = np.full(n, 4e-5, np.float32) * rng.uniform(0.5, 1.5, n).astype(np.float32)
    shift = rng.uniform(-0.5, 0.5, n).astype(np.float32)
    acc = (a[:, :k].astype(np.int64) - zp) @ w.astype(np.int64)
    want = Epilogue(activation=act).apply((acc * scale.astype(np.float64) + shift).astype(np.float32))
    quantize = FusedQuantize(QuantizeParams(-0.2, 1.5, -0.2, 1.5, 256), "end", u8=True) if out == "u8" else None
    kernel = Int8Gemm(w, m, scale, shift, zp, Epilogue(activation=act), 2, isa, quantize, fast=True)
    if out == "u8":
        got = kernel(a, np.zeros((m, padded_channels(n)), np.uint8))[:, :n]
        assert np.abs(got.astype(int) - quantize.params.quantize(want).astype(int)).max() <= 1
    else:
        got = kernel(a, np.full((m, n), np.nan, np.float32))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    with pytest.raises(EmberError, match="AMX"):  # the vector kernels' epilogue has no activation
        Int8Gemm(w, m, scale, shift, zp, Epilogue(activation=act), 2, host_isa("avx512"))(a)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", GEMM_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-zp{c[3]}-{c[4]}")
@pytest.mark.parametrize("threads", [1, 2])
def test_int8_gemm_matches_numpy(isa, case, threads):
    m, k, n, zp, epi_name, has_res = case
    rng = np.random.default_rng(m * 7919 + k * 31 + n)
    a = np.zeros((m, padded_channels(k)), np.uint8)
    a[:, :k] = rng.integers(0, 256, (m, k))
    a[:, k:] = rng.integers(0, 256, (m, a.shape[1] - k))  # padding bytes: any value, never counted
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    w[0, 0], w[-1, -1] = -128, 127
    scale, shift = _scales(rng, n)
    res = rng.standard_normal((m, n)).astype(np.float32) if has_res else None
    epi = EPILOGUES[epi_name]
    c = np.full((m, n), np.nan, np.float32)
    Int8Gemm(w, m, scale, shift, zp, epi, num_threads=threads, isa=isa)(a, c, res)
    acc = (a[:, :k].astype(np.int64) - zp) @ w.astype(np.int64)
    want = acc * scale.astype(np.float64) + shift + (0 if res is None else res)
    want = epi.apply(want)
    np.testing.assert_allclose(c, want, rtol=1e-6, atol=1e-5 * np.abs(want).max() + 1e-6)


def conv_reference(x, w, geo, zp):
    """Integer convolution of NHWC u8 ``x`` minus ``zp`` (padding = ``zp``) with w[OC, IC/g, KH, KW]."""
    (sh, sw), (dh, dw), (pt, pl), (pb, pr) = geo.strides, geo.dilations, geo.pads_begin, geo.pads_end
    xi = np.pad(x[..., :geo.cin].astype(np.int64) - zp, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    cg, og = geo.cin // geo.groups, geo.cout // geo.groups
    out = np.zeros((geo.batch, geo.oh, geo.ow, geo.cout), np.int64)
    for ky in range(geo.kh):
        for kx in range(geo.kw):
            patch = xi[:, ky * dh: ky * dh + sh * (geo.oh - 1) + 1: sh, kx * dw: kx * dw + sw * (geo.ow - 1) + 1: sw]
            for g in range(geo.groups):
                wt = w[g * og:(g + 1) * og, :, ky, kx].astype(np.int64).T  # [cg, og]
                out[..., g * og:(g + 1) * og] += patch[..., g * cg:(g + 1) * cg] @ wt
    return out


# (batch, h, w, cin, cout, kh, kw, strides, dilations, pads_begin, pads_end, groups, zp, epilogue, residual)
CONV_CASES = [
    (1, 7, 9, 3, 17, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1, 128, "relu", False),   # a stem: cin 3 padded
    (2, 9, 11, 8, 40, 3, 3, (2, 1), (1, 2), (1, 2), (1, 0), 2, 7, "none", False),   # strided, dilated, grouped
    (1, 6, 6, 16, 33, 1, 1, (1, 1), (1, 1), (0, 0), (0, 0), 1, 0, "none", True),    # 1x1 + residual
    (1, 5, 5, 12, 8, 5, 5, (2, 2), (1, 1), (2, 2), (2, 2), 1, 255, "clamp", False),
    (1, 3, 3, 64, 64, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 4, 3, "relu", True),
    (3, 4, 5, 5, 7, 1, 3, (1, 2), (1, 1), (0, 1), (0, 1), 1, 200, "none", False),
    (1, 23, 21, 3, 64, 7, 7, (2, 2), (1, 1), (3, 3), (3, 3), 1, 128, "relu", False),  # ResNet's stem: taps gathered
    # packed taps (1-3 channels side by side in the gathered row): whole kernel rows and border taps,
    # 2 images, a dilated one (per tap only), one channel, the last tap's word in the row's slack
    (2, 13, 17, 1, 24, 5, 5, (1, 1), (1, 1), (2, 2), (2, 2), 1, 9, "none", True),
    (1, 11, 12, 2, 40, 3, 3, (1, 2), (2, 2), (2, 1), (1, 2), 1, 250, "clamp", False),
    (2, 30, 29, 3, 33, 7, 7, (2, 2), (1, 1), (3, 3), (3, 2), 1, 0, "none", False),
    (1, 8, 8, 3, 8, 2, 2, (1, 1), (1, 1), (0, 0), (0, 0), 1, 77, "none", False),  # K = 12: a multiple of 4
    # rows of 16 pixels or more (AMX reads a half tile in place when its pixels share an output row and
    # the tap stays inside: interior, border, row wrap, wholly padded rows, images side by side)
    (2, 5, 37, 64, 48, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1, 3, "relu", True),
    (1, 6, 70, 32, 40, 3, 3, (2, 2), (1, 1), (1, 1), (1, 1), 1, 5, "none", False),
    (1, 7, 40, 16, 20, 3, 3, (1, 1), (2, 2), (2, 2), (2, 2), 1, 9, "none", False),
    (1, 4, 33, 16, 16, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 2, 0, "none", False),
    (3, 5, 20, 64, 36, 1, 1, (1, 1), (1, 1), (0, 0), (0, 0), 1, 11, "none", True),  # 1x1 over whole images
    (2, 8, 40, 32, 32, 1, 1, (2, 2), (1, 1), (0, 0), (0, 0), 1, 0, "none", False),  # a downsample
]


@pytest.mark.parametrize("isa", ISAS + [p for p in EPILOGUE_ISAS if p.id == "amx"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[3]}to{c[4]}-k{c[5]}x{c[6]}-s{c[7][0]}-g{c[11]}")
def test_int8_conv_matches_numpy(isa, case):
    n, h, wd, cin, cout, kh, kw, s, d, pb, pe, groups, zp, epi_name, has_res = case
    geo = ConvGeometry(n, h, wd, cin, cout, kh, kw, s, d, pb, pe, groups)
    rng = np.random.default_rng(cin * 131 + cout)
    x = rng.integers(0, 256, (n, h, wd, padded_channels(cin))).astype(np.uint8)
    w = rng.integers(-128, 128, (cout, cin // groups, kh, kw)).astype(np.int8)
    scale, shift = _scales(rng, cout)
    res = rng.standard_normal(geo.output_shape).astype(np.float32) if has_res else None
    epi = EPILOGUES[epi_name]
    want = epi.apply(conv_reference(x, w, geo, zp) * scale.astype(np.float64) + shift + (0 if res is None else res))
    for threads in (1, 2):
        y = np.full(geo.output_shape, np.nan, np.float32)
        Int8Conv2d(geo, w, scale, shift, zp, epi, num_threads=threads, isa=isa)(x, y, res)
        np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-5 * np.abs(want).max() + 1e-6)
    if row_pack_fits(geo):  # a stem: also the taps gathered per task (the row packing is the default)
        y = np.full(geo.output_shape, np.nan, np.float32)
        Int8Conv2d(geo, w, scale, shift, zp, epi, num_threads=2, isa=isa, row_pack=False)(x, y, res)
        np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-5 * np.abs(want).max() + 1e-6)


def test_row_blocks_split_over_panels_for_two_threads():
    """A 28 x 28 map (25 tiles of 32 rows on AMX) on 2 threads: 5 row blocks alone would leave
    a thread idle a third of the time, so the columns split in two as well (10 equal tasks);
    a 56 x 56 map's 14 row blocks stay whole. Same numbers as one thread and numpy."""
    from ember.devices.cpu.kernels.int8_gemm import split_panels

    assert split_panels(25, 5, 5, 4, 2) == (2, 2)
    assert split_panels(98, 7, 14, 2, 2) == (2, 1)
    assert split_panels(25, 5, 5, 4, 1) == (4, 1) and split_panels(25, 5, 5, 1, 2) == (1, 1)
    geo = ConvGeometry(1, 28, 28, 32, 128, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1))
    rng = np.random.default_rng(12)
    x = rng.integers(0, 256, (1, 28, 28, 32)).astype(np.uint8)
    w = rng.integers(-128, 128, (128, 32, 3, 3)).astype(np.int8)
    scale, shift = _scales(rng, 128)
    want = conv_reference(x, w, geo, 6) * scale.astype(np.float64) + shift
    outs = []
    for threads in (1, 2):
        conv = Int8Conv2d(geo, w, scale, shift, 6, Epilogue(), threads)
        outs.append(conv(x))
        call = next(iter(conv._calls.values()))
        if threads == 2 and conv.packed.amx:
            assert call.n_tasks == 10
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[1], want, rtol=1e-6, atol=1e-5 * np.abs(want).max())


# (batch, h, w, cin, cout, kh, kw, strides, dilation_w, pads_begin, pads_end): stems packed by rows
ROW_PACK_CASES = [
    (1, 224, 224, 3, 64, 7, 7, (2, 2), 1, (3, 3), (3, 3)),   # ResNet-50's stem (a packed pixel: 44 bytes)
    (2, 19, 23, 3, 40, 7, 7, (2, 2), 1, (3, 3), (2, 1)),    # 2 images, uneven padding, a partial panel
    (1, 17, 15, 1, 24, 5, 5, (1, 1), 1, (2, 2), (2, 2)),    # one channel, stride 1: 5 taps of 8 bytes
    (1, 16, 18, 2, 32, 3, 3, (3, 2), 2, (1, 2), (0, 1)),    # stride 3 over rows, dilated columns
    (1, 12, 12, 3, 16, 3, 3, (2, 2), 1, (1, 1), (1, 1)),    # MobileNet's stem: 2 taps of 20 bytes
]


@pytest.mark.parametrize("isa", EPILOGUE_ISAS)
@pytest.mark.parametrize("case", ROW_PACK_CASES, ids=lambda c: f"{c[1]}x{c[2]}x{c[3]}-k{c[5]}-s{c[7][0]}")
def test_row_packed_stem_matches_numpy(isa, case):
    """A stem run over its input packed by rows (pack_rows_u8, then a ceil(KH/SH) x 1 convolution)
    gives the integers of numpy's convolution, u8 steps out as in a network, 1 and 2 threads."""
    n, h, wd, cin, cout, kh, kw, s, dw, pb, pe = case
    geo = ConvGeometry(n, h, wd, cin, cout, kh, kw, s, (1, dw), pb, pe)
    assert row_pack_fits(geo)
    rng = np.random.default_rng(h * 7 + cout)
    x = rng.integers(0, 256, (n, h, wd, 4)).astype(np.uint8)
    w = rng.integers(-128, 128, (cout, cin, kh, kw)).astype(np.int8)
    zp = int(rng.integers(0, 256))
    acc = conv_reference(x, w, geo, zp)
    scale = np.full(cout, 1.0 / max(1, np.abs(acc).max()), np.float32)
    quantize = FusedQuantize(QuantizeParams(0.0, 1.0, 0.0, 1.0, 256), "end", u8=True)
    want = Int8Conv2d(geo, w, scale, None, zp, Epilogue.relu(), 2, isa, quantize, row_pack=False)(x)
    for threads in (1, 2):
        conv = Int8Conv2d(geo, w, scale, None, zp, Epilogue.relu(), threads, isa, quantize)
        assert conv.row_packed is not None
        np.testing.assert_array_equal(conv(x), want)
    y = np.full(geo.output_shape, np.nan, np.float32)
    Int8Conv2d(geo, w, np.ones(cout, np.float32), None, zp, num_threads=2, isa=isa)(x, y)
    np.testing.assert_array_equal(y, acc.astype(np.float32))



def test_amx_split_tight_pads_least():
    from ember.devices.cpu.kernels.amx import amx_split, amx_split_tight

    for k4 in range(1, 200):
        kq, nck, ktap = amx_split_tight(k4)
        assert kq <= 16 and kq * nck == ktap >= k4 and nck == -(-k4 // 16) and ktap - k4 < nck
        assert nck <= amx_split(k4)[1]  # the fewest steps, then the fewest zero groups
    assert amx_split_tight(37) == (13, 3, 39)  # a 7x7x3 stem's taps packed: 148 bytes


@pytest.mark.parametrize("isa", EPILOGUE_ISAS)
def test_stem_taps_packed_or_padded(isa, monkeypatch):
    """A 3-channel 7x7/2 stem gathers its taps packed (K = 147) or, with EMBER_INT8_PADDED_TAPS=1,
    each padded to 4 bytes (K = 196): the same integers, both equal to numpy's."""
    geo = ConvGeometry(1, 40, 37, 3, 48, 7, 7, (2, 2), (1, 1), (3, 3), (3, 3))
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (1, 40, 37, 4)).astype(np.uint8)
    w = rng.integers(-128, 128, (48, 3, 7, 7)).astype(np.int8)
    scale, shift = _scales(rng, 48)
    want = conv_reference(x, w, geo, 5) * scale.astype(np.float64) + shift
    got = []
    for padded in ("0", "1"):
        monkeypatch.setenv("EMBER_INT8_PADDED_TAPS", padded)
        conv = Int8Conv2d(geo, w, scale, shift, 5, num_threads=2, isa=isa, row_pack=False)
        assert conv.merged_cin == (4 if padded == "1" else 3)
        got.append(conv(x))
    np.testing.assert_array_equal(got[0], got[1])
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-5 * np.abs(want).max() + 1e-6)

def test_amx_tile_groups_share_each_panel():
    """AMX: a task runs the weights' panels outside a group of tiles (each panel read once per
    group); the A copies of a group are bounded by STACK_LIMIT, so a 3x3 convolution of 1024
    channels over 10 tiles runs as tasks of 8 and 2 tiles, the first in two groups (7 + 1),
    border tiles copied, the last one partial."""
    from ember.devices.cpu.llvm import isa as isa_mod

    if not isa_mod.amx_supported():
        pytest.skip("no AMX tiles on this CPU")
    geo = ConvGeometry(1, 17, 17, 1024, 16, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1))
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1, 17, 17, 1024)).astype(np.uint8)
    w = rng.integers(-128, 128, (16, 1024, 3, 3)).astype(np.int8)
    scale, shift = _scales(rng, 16)
    want = conv_reference(x, w, geo, 11) * scale.astype(np.float64) + shift
    y = np.full(geo.output_shape, np.nan, np.float32)
    Int8Conv2d(geo, w, scale, shift, 11, num_threads=1, isa=isa_mod.host_isa("amx"))(x, y)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-5 * np.abs(want).max() + 1e-6)

# (batch, h, w, c, kh, kw, strides, dilations, pads_begin, pads_end, epilogue, residual, fused)
DW_CASES = [
    (1, 9, 11, 32, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), "clamp", False, None),
    (2, 8, 7, 19, 3, 3, (2, 2), (1, 1), (1, 1), (0, 1), "relu", True, "end"),
    (1, 6, 6, 40, 5, 5, (1, 1), (2, 1), (4, 2), (4, 2), "none", False, "u8"),
    (1, 5, 9, 7, 1, 3, (1, 2), (1, 1), (0, 1), (0, 1), "none", False, "mid"),
]


@pytest.mark.parametrize("isa", [p for p in ISAS if "novnni" not in p.id])
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: f"c{c[3]}-k{c[4]}x{c[5]}-s{c[6][0]}-{c[12]}")
def test_int8_depthwise_matches_numpy(isa, case):
    """Depthwise int8 with per-channel zero points and scales (padding reads the zero point)."""
    from ember.devices.cpu.kernels.int8_gemm import Int8Depthwise

    n, h, wd, c, kh, kw, s, d, pb, pe, epi_name, has_res, at = case
    geo = ConvGeometry(n, h, wd, c, c, kh, kw, s, d, pb, pe, c)
    rng = np.random.default_rng(c * 7 + kh)
    x = rng.integers(0, 256, (n, h, wd, padded_channels(c))).astype(np.uint8)
    w = rng.integers(-128, 128, (c, 1, kh, kw)).astype(np.int8)
    zp = rng.integers(0, 256, c)
    scale = (rng.random(c) * 0.002 + 0.0005).astype(np.float32)
    shift = (rng.standard_normal(c) * 0.3).astype(np.float32)
    res = (rng.standard_normal(geo.output_shape) * 0.2).astype(np.float32) if has_res else None
    epi = EPILOGUES[epi_name]
    (sh, sw), (dh, dw) = s, d
    xi = np.pad(x[..., :c].astype(np.int64) - zp, ((0, 0), (pb[0], pe[0]), (pb[1], pe[1]), (0, 0)))
    acc = np.zeros(geo.output_shape, np.int64)
    for ky in range(kh):
        for kx in range(kw):
            acc += xi[:, ky * dh: ky * dh + sh * (geo.oh - 1) + 1: sh, kx * dw: kx * dw + sw * (geo.ow - 1) + 1: sw] \
                * w[:, 0, ky, kx].astype(np.int64)
    v = acc.astype(np.float32) * scale + shift
    fused = None if at is None else FusedQuantize(FUSED, "mid" if at == "mid" else "end", at == "u8")
    if at == "mid":
        v = _fake_quantize(v, FUSED)
    if res is not None:
        v = v + res
    v = epi.apply(v).astype(np.float32)
    got = Int8Depthwise(geo, w, scale, shift, zp, epi, 2, isa, fused)(x, None, res)
    if at == "u8":
        np.testing.assert_array_equal(got[..., :c], FUSED.quantize(v))
    else:
        want = _fake_quantize(v, FUSED) if at == "end" else v
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_int8_rows_must_be_padded():
    geo = ConvGeometry(1, 4, 4, 3, 8, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1)
    conv = Int8Conv2d(geo, np.ones((8, 3, 3, 3), np.int8), np.ones(8, np.float32))
    with pytest.raises(EmberError, match="padded"):
        conv(np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(EmberError, match=r"\[-128, 127\]"):
        Int8Gemm(np.full((4, 4), 200), 1, np.ones(4, np.float32))
    with pytest.raises(EmberError, match="multiple of 4"):
        Int8Conv2d(ConvGeometry(1, 4, 4, 6, 6, 1, 1, groups=3), np.ones((6, 2, 1, 1), np.int8), np.ones(6, np.float32))


QUANT_CASES = [
    QuantizeParams(-1.0, 2.0, -1.0, 2.0, 256),
    QuantizeParams(0.0, 6.0, 0.0, 6.0, 256),
    QuantizeParams(-1.28, 1.27, -1.28, 1.27, 256),
    QuantizeParams(-0.5, 0.5, -0.25, 0.75, 255),
    QuantizeParams(0.1, 0.9, 0.0, 1.0, 16),
]


@pytest.mark.parametrize("isa", [p for p in ISAS if "novnni" not in p.id])
@pytest.mark.parametrize("params", QUANT_CASES, ids=str)
def test_quantize_matches_fakequantize(isa, params):
    """u8 steps equal the reference FakeQuantize's (same f32 arithmetic, ties to even); the f32
    mode equals the reference op's output bit for bit."""
    import ember.opset as ops

    rng = np.random.default_rng(1)
    rows, c = 37, 21
    x = (rng.standard_normal((rows, c)) * 1.5).astype(np.float32)
    steps = np.float32(params.steps)
    grid = (np.arange(c, dtype=np.float32) + 0.5) / steps * (np.float32(params.ih) - np.float32(params.il))
    x[0] = grid + np.float32(params.il)  # exact ties
    x[1, :4] = [params.il, params.ih, np.inf, -np.inf]
    y = np.full((rows, padded_channels(c) + 4), 9, np.uint8)
    Quantize(params, rows, c, fill=77, isa=isa)(x, y)
    np.testing.assert_array_equal(y[:, :c], params.quantize(x))
    assert (y[:, c:] == 77).all()
    ranges = [np.array(v, np.float32) for v in (params.il, params.ih, params.ol, params.oh)]
    want = ops.fake_quantize(x, *ranges, params.levels).evaluate([x, *ranges])[0]
    out = np.full((rows, c), np.nan, np.float32)
    Quantize(params, rows, c, mode=QUANT_F32, isa=isa)(x, out)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("isa", [p for p in ISAS if "novnni" not in p.id])
def test_quantize_per_channel(isa):
    rng = np.random.default_rng(2)
    rows, c = 23, 19
    il = -rng.random(c).astype(np.float32)
    ih = (rng.random(c) + 0.1).astype(np.float32)
    params = QuantizeParams(il, ih, il * 2, ih * 2, 256)
    x = rng.standard_normal((rows, c)).astype(np.float32)
    y = np.zeros((rows, padded_channels(c)), np.uint8)
    Quantize(params, rows, c, isa=isa)(x, y)
    np.testing.assert_array_equal(y[:, :c], params.quantize(x))
    import ember.opset as ops

    ranges = [il, ih, il * 2, ih * 2]
    want = ops.fake_quantize(x, *ranges, 256).evaluate([x, *ranges])[0]
    out = np.zeros((rows, c), np.float32)
    Quantize(params, rows, c, mode=QUANT_F32, isa=isa)(x, out)
    np.testing.assert_array_equal(out, want)


# (N, H, W, C padded, kernel, strides, dilations, pads begin, pads end)
POOL_CASES = [
    (1, 7, 9, 4, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)),
    (2, 5, 5, 68, (2, 2), (2, 2), (1, 1), (0, 0), (1, 1)),
    (1, 8, 6, 132, (3, 2), (1, 2), (2, 1), (2, 0), (2, 1)),
    (1, 1, 1, 64, (1, 1), (1, 1), (1, 1), (0, 0), (0, 0)),
]


@pytest.mark.parametrize("isa", [p for p in ISAS if "novnni" not in p.id])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_max_pool_u8_matches_reference(isa, case):
    """The u8 NHWC max pooling kernel against Int8MaxPool's numpy kernel (padding never wins)."""
    import ember.opset as ops
    from ember.devices.cpu.kernels.int8_misc import max_pool_u8
    from ember.devices.cpu.ops import Int8MaxPool
    from ember.graph.types import Type

    n, h, w, c, kernel, strides, dil, pb, pe = case
    x = np.random.default_rng(c + h).integers(0, 256, (n, h, w, c)).astype(np.uint8)
    node = Int8MaxPool([ops.parameter([n, c, h, w], Type.u8)], dict(kernel=list(kernel), strides=list(strides),
                                                                     dilations=list(dil), pads_begin=list(pb),
                                                                     pads_end=list(pe)))
    want = node.evaluate([x.transpose(0, 3, 1, 2)])[0].transpose(0, 2, 3, 1)
    y = np.full(want.shape, 7, np.uint8)
    max_pool_u8(x, y, kernel, strides, dil, pb, 2, isa).run()
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("isa", [p for p in ISAS if "novnni" not in p.id])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_avg_pool_u8_matches_reference(isa, case):
    """The u8 -> f32 average pooling kernel against Int8AvgPool's numpy kernel (integer sums
    of step - zero point over real pixels, times a per-pixel factor); fewer channels out."""
    import ember.opset as ops
    from ember.devices.cpu.kernels.int8_misc import avg_pool_u8
    from ember.devices.cpu.ops import Int8AvgPool
    from ember.graph.types import Type

    n, h, w, cx, kernel, strides, dil, pb, pe = case
    rng = np.random.default_rng(cx + w)
    x = rng.integers(0, 256, (n, h, w, cx)).astype(np.uint8)
    oh = (h + pb[0] + pe[0] - dil[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    ow = (w + pb[1] + pe[1] - dil[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    factors = (rng.random((oh, ow)) * 0.01).astype(np.float32)
    c = cx - 3 if cx > 4 else cx
    node = Int8AvgPool([ops.parameter([n, cx, h, w], Type.u8), ops.constant(factors)],
                       dict(kernel=list(kernel), strides=list(strides), dilations=list(dil), pads_begin=list(pb),
                            zero_point=77))
    want = node.evaluate([x.transpose(0, 3, 1, 2), factors])[0].transpose(0, 2, 3, 1)[..., :c]
    y = np.full(want.shape, 7.0, np.float32)
    avg_pool_u8(x, y, factors, kernel, strides, dil, pb, 77, 2, isa).run()
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def test_exec_type_names_the_instruction_set():
    k = int8_kernels()
    assert k.exec_type.endswith("_I8") and k.exec_type.startswith("jit_")


# --------------------------------------------------------------------------- whole graphs
def _fq(x, lo, hi, levels=256, out=None):
    import ember.opset as ops

    f = np.float32
    olo, ohi = out or (lo, hi)
    return ops.fake_quantize(x, f(lo), f(hi), f(olo), f(ohi), levels)


def _weights(q, scale, zp=None):
    """NNCF/OpenVINO weight form: integer Const -> Convert -> (Subtract zero point) -> Multiply scale."""
    import ember.opset as ops

    c = ops.convert(ops.constant(q), "f32")
    if zp is not None:
        c = ops.subtract(c, ops.constant(np.asarray(zp, np.float32)))
    return ops.multiply(c, ops.constant(np.asarray(scale, np.float32)))


def _graph(kind, rng):
    """A small quantized graph of ``kind``: (model, input, int8 ops expected)."""
    import ember as ov
    import ember.opset as ops
    from ember.graph.types import Type

    x = ops.parameter([2, 8, 11, 13], Type.f32, name="x")
    xin = (rng.standard_normal((2, 8, 11, 13)) * 1.5).astype(np.float32)
    if kind == "conv-chain":  # symmetric signed input, bias + ReLU, ReLU-range u8, strided, then a MatMul
        a = _fq(x, -2.0, 2.0 * 127 / 128)
        w1 = rng.integers(-127, 128, (16, 8, 3, 3)).astype(np.int8)
        c = ops.convolution(a, _weights(w1, rng.random((16, 1, 1, 1)) * 0.02), [1, 1], [1, 1], [1, 1], [1, 1])
        c = ops.relu(ops.add(c, ops.constant(rng.standard_normal((1, 16, 1, 1)).astype(np.float32))))
        side = ops.multiply(c, ops.constant(np.float32(2.0)))  # a float reader too: f32 and u8 steps both written
        w2 = rng.integers(-127, 128, (24, 16, 3, 3)).astype(np.int8)
        c = ops.convolution(_fq(c, 0.0, 4.0), _weights(w2, rng.random((24, 1, 1, 1)) * 0.02), [2, 2], [0, 0], [1, 1],
                            [1, 1])
        g = ops.reshape(ops.reduce_mean(c, ops.constant(np.array([2, 3], np.int64)), True),
                        ops.constant(np.array([2, 24], np.int64)), False)
        w3 = rng.integers(-127, 128, (10, 24)).astype(np.int8)
        out, n_int8 = [ops.matmul(_fq(g, -1.0, 1.0), _weights(w3, rng.random((10, 1)) * 0.05), False, True), side], 3
    elif kind == "asymmetric":  # u8 with zero point 77, weights with a per-channel zero point, residual add
        a = _fq(x, -77 * 0.02, 178 * 0.02)
        w = rng.integers(-100, 100, (8, 8, 3, 3)).astype(np.int8)
        zp = rng.integers(-20, 20, (8, 1, 1, 1))
        c = ops.convolution(a, _weights(w, rng.random((8, 1, 1, 1)) * 0.03, zp), [1, 1], [1, 1], [1, 1], [1, 1])
        out, n_int8 = ops.relu(ops.add(c, _fq(x, -1.0, 1.0))), 1  # a quantized residual branch
    elif kind == "grouped":  # GroupConvolution, 4 channels per group, then a depthwise one
        a = _fq(x, -1.5, 1.5, 255)
        w = rng.integers(-127, 128, (2, 6, 4, 3, 3)).astype(np.int8)
        c = ops.group_convolution(a, _weights(w, rng.random((2, 6, 1, 1, 1)) * 0.05), [1, 2], [1, 1], [1, 0], [1, 1])
        wd = rng.integers(-127, 128, (12, 1, 1, 3, 3)).astype(np.int8)
        out = ops.group_convolution(_fq(c, -3.0, 3.0 * 127 / 128), _weights(wd, rng.random((12, 1, 1, 1, 1)) * 0.05), [1, 1],
                                    [1, 1], [1, 1], [1, 1])
        n_int8 = 2
    elif kind == "fractional-zero-point":  # 0.0 is not a step: 1x1 and MatMul take it, a padded 3x3 stays f32
        a = _fq(x, -0.333, 1.0)
        w = rng.integers(-127, 128, (8, 8, 1, 1)).astype(np.int8)
        c = ops.convolution(a, _weights(w, rng.random((8, 1, 1, 1)) * 0.1), [1, 1], [0, 0], [0, 0], [1, 1])
        w3 = rng.integers(-127, 128, (8, 8, 3, 3)).astype(np.int8)
        c3 = ops.convolution(a, _weights(w3, rng.random((8, 1, 1, 1)) * 0.1), [1, 1], [1, 1], [1, 1], [1, 1])
        wm = rng.integers(-127, 128, (13, 5)).astype(np.int8)
        m = ops.matmul(a, _weights(wm, rng.random(5) * 0.1), False, False)
        out, n_int8 = [c, c3, m], 2
    elif kind == "maxpool-per-channel":  # FQ -> MaxPool -> conv: int8 on the FQ grid; per-channel FQ -> depthwise
        a = ops.max_pool(_fq(x, 0.0, 3.0), [2, 2], [1, 1], [0, 0], [1, 1], [3, 3], "floor", "explicit")
        w = rng.integers(-127, 128, (8, 8, 1, 1)).astype(np.int8)
        c = ops.convolution(a.output(0), _weights(w, rng.random((8, 1, 1, 1)) * 0.1), [1, 1], [0, 0], [0, 0], [1, 1])
        step = (rng.random((1, 8, 1, 1)) * 0.01 + 0.002).astype(np.float32)
        zp = rng.integers(0, 200, (1, 8, 1, 1)).astype(np.float32)  # per-channel integer zero points
        lo, hi = -zp * step, (255 - zp) * step
        pc = ops.fake_quantize(c, lo, hi, lo, hi, 256)
        wd = rng.integers(-127, 128, (8, 1, 1, 3, 3)).astype(np.int8)
        out = ops.group_convolution(pc, _weights(wd, rng.random((8, 1, 1, 1, 1)) * 0.05), [1, 1], [1, 1], [1, 1],
                                    [1, 1])
        n_int8 = 2
    elif kind == "pool-u8":  # conv -> ReLU -> FQ -> MaxPool (3x3 s2, padded, ceil) -> conv: the first conv
        # writes u8 steps, the pooling runs on them; the f32 pooled tensor is also an output
        a = _fq(x, -2.0, 2.0 * 127 / 128)
        w1 = rng.integers(-127, 128, (12, 8, 3, 3)).astype(np.int8)
        c = ops.relu(ops.convolution(a, _weights(w1, rng.random((12, 1, 1, 1)) * 0.02), [1, 1], [1, 1], [1, 1],
                                     [1, 1]))
        p = ops.max_pool(_fq(c, 0.0, 3.0), [2, 2], [1, 1], [1, 1], [1, 1], [3, 3], "ceil", "explicit")
        w2 = rng.integers(-127, 128, (16, 12, 1, 1)).astype(np.int8)
        c2 = ops.convolution(p.output(0), _weights(w2, rng.random((16, 1, 1, 1)) * 0.05), [1, 1], [0, 0], [0, 0],
                             [1, 1])
        out, n_int8 = [c2, p.output(0)], 2
    elif kind == "concat-u8":  # two int8 convs (6 and 10 channels) -> ReLU -> FQ on one grid -> Concat -> conv:
        # the convs write u8 steps into the concatenation, which the last conv reads
        a = _fq(x, -2.0, 2.0 * 127 / 128)
        branches = []
        for oc in (6, 10):
            w = rng.integers(-127, 128, (oc, 8, 3, 3)).astype(np.int8)
            c = ops.convolution(a, _weights(w, rng.random((oc, 1, 1, 1)) * 0.02), [1, 1], [1, 1], [1, 1], [1, 1])
            branches.append(_fq(ops.relu(c), 0.0, 2.5))
        w3 = rng.integers(-127, 128, (8, 16, 3, 3)).astype(np.int8)
        out = ops.convolution(ops.concat(branches, 1), _weights(w3, rng.random((8, 1, 1, 1)) * 0.03), [2, 2],
                              [1, 1], [1, 1], [1, 1])
        n_int8 = 3
    elif kind == "avgpool-u8":  # conv -> ReLU -> FQ -> AvgPool (padding counted) -> FQ -> conv; and an AvgPool
        # (exclude-pad, stride 2, ceil) of the same steps as an output: both pool the u8 steps (the second
        # FakeQuantize's range is not commensurate with the first's: averages of steps would sit on its ties)
        a = _fq(x, -2.0, 2.0 * 127 / 128)
        w1 = rng.integers(-127, 128, (12, 8, 3, 3)).astype(np.int8)
        c = _fq(ops.relu(ops.convolution(a, _weights(w1, rng.random((12, 1, 1, 1)) * 0.02), [1, 1], [1, 1], [1, 1],
                                         [1, 1])), 0.0, 3.0)
        p = ops.avg_pool(c, [1, 1], [1, 1], [1, 1], [3, 3], False, "floor", "explicit")
        w2 = rng.integers(-127, 128, (16, 12, 1, 1)).astype(np.int8)
        c2 = ops.convolution(_fq(p, 0.0, 2.13), _weights(w2, rng.random((16, 1, 1, 1)) * 0.05), [1, 1], [0, 0],
                             [0, 0], [1, 1])
        p2 = ops.avg_pool(c, [2, 2], [1, 0], [1, 1], [3, 2], True, "ceil", "explicit")
        out, n_int8 = [c2, p2], 2
    elif kind == "moves":  # FQ -> ReLU -> Pad(0) -> Slice, Concat with a same-grid FQ -> conv: int8;
        # a Concat of two grids -> conv stays f32
        hi = np.float32(1.5 * 127 / 128)
        a = ops.relu(_fq(x, -1.5, hi))  # zero point 128: 0.0 is a step
        a = ops.pad(a, [0, 0, 1, 1], [0, 0, 1, 0], "constant")
        a = ops.slice(a, np.array([1], np.int64), np.array([12], np.int64), np.array([1], np.int64),
                      np.array([2], np.int64))
        b = _fq(ops.multiply(x, ops.constant(np.float32(-0.7))), -1.5, hi)
        b = ops.pad(b, [0, 0, 0, 1], [0, 0, 0, 0], "edge")
        cat = ops.concat([a, b], 1)
        w = rng.integers(-127, 128, (6, 16, 3, 3)).astype(np.int8)
        c = ops.convolution(cat, _weights(w, rng.random((6, 1, 1, 1)) * 0.05), [1, 1], [1, 1], [1, 1], [1, 1])
        mixed = ops.concat([a, ops.pad(_fq(x, -1.0, 1.0), [0, 0, 0, 1], [0, 0, 0, 0], "constant")], 1)
        c2 = ops.convolution(mixed, _weights(w, rng.random((6, 1, 1, 1)) * 0.05), [1, 1], [1, 1], [1, 1], [1, 1])
        out, n_int8 = [c, c2], 1
    elif kind in ("resnet-blocks", "residual-fallback"):  # NNCF's ResNet: one FakeQuantize of a block's output
        # feeds the next block's convolution and its residual Add (read as the u8 steps the producer wrote);
        # "residual-fallback": that residual is added to a float tensor no int8 kernel makes
        a = _fq(x, -2.0, 2.0 * 127 / 128)
        w = rng.integers(-127, 128, (12, 8, 3, 3)).astype(np.int8)
        c = ops.convolution(a, _weights(w, rng.random((12, 1, 1, 1)) * 0.02), [1, 1], [1, 1], [1, 1], [1, 1])
        block = _fq(ops.relu(ops.add(c, ops.constant(rng.standard_normal((1, 12, 1, 1)).astype(np.float32)))),
                    0.0, 3.0)
        n_int8 = 1
        for i in range(2 if kind == "resnet-blocks" else 0):
            wb = rng.integers(-127, 128, (12, 12, 3 - 2 * i, 3 - 2 * i)).astype(np.int8)
            c = ops.convolution(block, _weights(wb, rng.random((12, 1, 1, 1)) * 0.01), [1, 1], [1 - i, 1 - i],
                                [1 - i, 1 - i], [1, 1])
            c = _fq(ops.add(c, ops.constant(rng.standard_normal((1, 12, 1, 1)).astype(np.float32))), -2.5, 2.5)
            block = _fq(ops.relu(ops.add(c, block)), 0.0, 3.5 + i, out=(0.0, 3.5 + i))
            n_int8 += 1
        if kind == "resnet-blocks":  # a last 1x1 conv reads the final block's steps: that FakeQuantize is fused
            w3 = rng.integers(-127, 128, (5, 12, 1, 1)).astype(np.int8)
            out = ops.convolution(block, _weights(w3, rng.random((5, 1, 1, 1)) * 0.05), [1, 1], [0, 0], [0, 0], [1, 1])
            n_int8 += 1
        else:
            w3 = rng.integers(-127, 128, (12, 12, 1, 1)).astype(np.int8)
            c3 = ops.convolution(block, _weights(w3, rng.random((12, 1, 1, 1)) * 0.05), [1, 1], [0, 0], [0, 0], [1, 1])
            out = [ops.add(block, ops.sigmoid(ops.multiply(c3, c3))), c3]
            n_int8 += 1
    elif kind == "downsample-block":  # ResNet's first block of a stage: Add(FQ(conv + bias), FQ(conv + bias))
        a = _fq(x, -2.0, 2.0 * 127 / 128)
        branches = []
        for k, lo in ((3, -2.37), (1, -1.93)):  # grids not commensurate: sums rarely sit on the next one's ties
            w = rng.integers(-127, 128, (12, 8, k, k)).astype(np.int8)
            c = ops.convolution(a, _weights(w, rng.random((12, 1, 1, 1)) * 0.02), [1, 1], [k // 2] * 2, [k // 2] * 2,
                                [1, 1])
            c = ops.add(c, ops.constant(rng.standard_normal((1, 12, 1, 1)).astype(np.float32)))
            branches.append(_fq(c, lo, -lo))
        block = _fq(ops.relu(ops.add(*branches)), 0.0, 3.13)
        w3 = rng.integers(-127, 128, (5, 12, 1, 1)).astype(np.int8)
        out = ops.convolution(block, _weights(w3, rng.random((5, 1, 1, 1)) * 0.05), [1, 1], [0, 0], [0, 0], [1, 1])
        n_int8 = 3
    else:
        raise AssertionError(kind)
    outs = out if isinstance(out, list) else [out]
    return ov.Model(outs, [x], kind), xin, n_int8


@pytest.mark.parametrize("kind", ["conv-chain", "asymmetric", "grouped", "fractional-zero-point",
                                  "maxpool-per-channel", "moves", "pool-u8", "concat-u8",
                                  "avgpool-u8", "resnet-blocks"])
def test_quantized_graph_matches_reference(kind):
    """The int8 lowering against REFERENCE running the FakeQuantize graph in float: the same
    rounding, so equal within f32 summation error; the runtime model says which ops are int8."""
    import ember as ov

    rng = np.random.default_rng(len(kind))
    model, xin, n_int8 = _graph(kind, rng)
    core = ov.Core()
    want = core.compile_model(model, "REFERENCE")(xin)
    cm = core.compile_model(model, "CPU", {"PERF_COUNT": True})
    request = cm.create_infer_request()
    got = request.infer({0: xin})
    for g, w in zip(got.values(), want.values()):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()))
    types = [n.type_name for n in cm.get_runtime_model().get_ordered_ops()]
    assert types.count("Int8Convolution") + types.count("Int8MatMul") == n_int8
    stats = cm._executable.program.stats
    assert stats.get("int8_ops", 0) == n_int8 and not stats["fallbacks"]
    assert all(t.endswith("_I8") for t in stats["exec_types"].values())
    # profiling names the int8 kernel for the int8 ops, and nothing else claims int8
    exec_types = {p.node_name: p.exec_type for p in request.get_profiling_info()}
    assert sorted(k for k, v in exec_types.items() if v.endswith("_I8")) == sorted(stats["exec_types"])
    assert all(n.rt_info.get("runtimePrecision") == "I8" for n in cm.get_runtime_model().get_ordered_ops()
               if n.type_name in ("Int8Convolution", "Int8MatMul"))


@pytest.mark.parametrize("exact", [False, True])
def test_ffn_gelu_and_smooth_quant_in_the_epilogue(exact, monkeypatch):
    """A transformer FFN as NNCF writes it: int8 MatMul + bias -> GELU -> smooth-quant Multiply
    (per channel) -> FakeQuantize -> int8 MatMul. With AMX or AVX-512 the GELU runs in the first
    MatMul's epilogue (elsewhere as its own elementwise op); with the fast requantize the Multiply
    folds into the FakeQuantize's ranges and the epilogue writes the second MatMul's u8 steps
    (EMBER_INT8_EXACT=1 keeps the Multiply). Against REFERENCE within one hidden step per value."""
    import ember as ov
    import ember.opset as ops
    from ember.devices.cpu.kernels.int8_gemm import int8_activation_fits
    from ember.devices.cpu.llvm.isa import host_isa
    from ember.graph.types import Type

    monkeypatch.setenv("EMBER_INT8_EXACT", "1" if exact else "0")
    rng = np.random.default_rng(5)
    x = ops.parameter([1, 16, 40], Type.f32, name="x")
    w1 = rng.integers(-127, 128, (40, 96)).astype(np.int8)
    s1 = (rng.random(96) * 0.02 + 0.005).astype(np.float32)
    h = ops.matmul(_fq(x, -2.0, 2.0 * 127 / 128), _weights(w1, s1), False, False)
    h = ops.gelu(ops.add(h, ops.constant(rng.standard_normal(96).astype(np.float32) * 0.3)), "erf")
    smooth = (rng.random((1, 1, 96)) + 0.5).astype(np.float32)
    lo, hi = -0.3, 2.5
    h = _fq(ops.multiply(h, ops.constant(smooth)), lo, hi)
    w2 = rng.integers(-127, 128, (96, 24)).astype(np.int8)
    s2 = (rng.random(24) * 0.01 + 0.002).astype(np.float32)
    model = ov.Model([ops.matmul(h, _weights(w2, s2), False, False)], [x])
    xin = (rng.standard_normal((1, 16, 40)) * 1.2).astype(np.float32)
    core = ov.Core()
    want = core.compile_model(model, "REFERENCE")(xin)[0]
    request = core.compile_model(model, "CPU", {"PERF_COUNT": True}).create_infer_request()
    got = request.infer({0: xin})[0]
    step = (hi - lo) / 255
    bound = step * float(np.max(np.abs(w2.astype(np.float64) * s2).sum(axis=0))) + 1e-4
    assert np.abs(got - want).max() <= bound
    ran = [p.node_type for p in request.get_profiling_info()]  # the kernels that ran, fused ops not listed
    fused = int8_activation_fits(host_isa(), 40)  # AMX, or AVX-512's vector kernels
    assert ran.count("Int8MatMul") == 2 and ("Gelu" not in ran) == fused and "Add" not in ran
    if fused:
        assert ("Multiply" in ran) == exact
    else:  # the Multiply, where it stays, joins the GELU's elementwise program
        steps = [op.type_name for op in request._compiled._executable.program.ops]
        assert ("Eltwise:Gelu+Multiply" in steps) == exact and ("Eltwise:Gelu" in steps) != exact


def test_residual_steps_read_by_the_epilogue():
    """NNCF's ResNet blocks: each block's output FakeQuantize becomes Int8Dequantize of the
    steps the next convolution reads, fused into the epilogue that adds it; no block output
    exists in f32 (only u8 steps), and the result is REFERENCE's."""
    import ember as ov

    model, xin, _ = _graph("resnet-blocks", np.random.default_rng(3))
    cm = ov.Core().compile_model(model, "CPU")
    program = cm._executable.program
    assert [op.type_name for op in program.ops].count("Int8Convolution") == 4
    # every convolution but the last writes u8 steps only (the first block's input too)
    kinds = [(op.outputs[0].dtype, len(op.outputs), len(op.inputs)) for op in program.ops
             if op.type_name == "Int8Convolution"]
    assert kinds[:3] == [(np.uint8, 1, 1), (np.uint8, 1, 2), (np.uint8, 1, 2)], kinds
    assert [n.type_name for n in cm.get_runtime_model().get_ordered_ops()].count("Int8Dequantize") == 2
    want = ov.Core().compile_model(model, "REFERENCE")(xin)[0]
    np.testing.assert_allclose(cm(xin)[0], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_downsample_residual_read_as_steps(monkeypatch):
    """Add(FakeQuantize(conv + bias), FakeQuantize(downsample + bias)): the first convolution
    writes its FakeQuantize's u8 steps, the second one's epilogue adds them; REFERENCE's values
    (exact arithmetic asked for, so within f32 summation)."""
    import ember as ov

    monkeypatch.setenv("EMBER_INT8_EXACT", "1")
    model, xin, _ = _graph("downsample-block", np.random.default_rng(6))
    cm = ov.Core().compile_model(model, "CPU")
    program = cm._executable.program
    convs = [op for op in program.ops if op.type_name == "Int8Convolution"]
    assert [(op.outputs[0].dtype, len(op.inputs)) for op in convs] == [(np.uint8, 1), (np.uint8, 2), (np.float32, 1)]
    assert not program.stats["fallbacks"]
    assert [n.type_name for n in cm.get_runtime_model().get_ordered_ops()].count("Int8Dequantize") == 1
    want = ov.Core().compile_model(model, "REFERENCE")(xin)[0]
    np.testing.assert_allclose(cm(xin)[0], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_dequantized_residual_without_int8_consumer():
    """A block output's FakeQuantize added to a float tensor (no int8 epilogue could take its
    steps) stays a FakeQuantize on its native kernel (no numpy dequantize); REFERENCE's values.
    Int8Dequantize's own numpy kernel is FakeQuantize's value of the steps (within an ulp)."""
    import ember as ov
    from ember.devices.cpu.ops import Int8Dequantize, Int8Quantize

    model, xin, _ = _graph("residual-fallback", np.random.default_rng(4))
    want = ov.Core().compile_model(model, "REFERENCE")(xin)
    cm = ov.Core().compile_model(model, "CPU")
    assert "Int8Dequantize" not in {n.type_name for n in cm.get_runtime_model().get_ordered_ops()}
    assert not cm._executable.program.stats["fallbacks"]
    for g, w in zip(cm(xin).values(), want.values()):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(np.abs(w).max()))
    x = np.concatenate([np.linspace(-3, 3, 2001, dtype=np.float32), [-np.inf, np.inf]]).astype(np.float32)
    r = [np.float32(v) for v in (-1.3, 2.1, -0.4, 0.9)]
    ranges = [ov.opset.constant(v).output(0) for v in r]
    steps = Int8Quantize([ov.opset.constant(x).output(0), *ranges], dict(levels=200)).evaluate([x, *r])[0]
    deq = Int8Dequantize([ov.opset.constant(steps).output(0), *ranges], dict(levels=200))
    np.testing.assert_allclose(deq.evaluate([steps, *r])[0], _fake_quantize(x, QuantizeParams(*r, 200)),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["asymmetric", "grouped", "maxpool-per-channel"])
def test_dynamic_batch_runs_int8(kind):
    """A quantized graph with a dynamic batch: each batch size is lowered with the int8 kernels
    (the rewrite needs only the channels), equal to REFERENCE on that batch."""
    import ember as ov

    rng = np.random.default_rng(len(kind))
    model, _, n_int8 = _graph(kind, rng)
    model.reshape({0: ov.PartialShape([-1, 8, 11, 13])})
    assert not model.inputs[0].partial_shape.is_static
    core = ov.Core()
    cm = core.compile_model(model, "CPU")
    ref = core.compile_model(model, "REFERENCE")
    for batch in (1, 3):
        xin = (rng.standard_normal((batch, 8, 11, 13)) * 1.5).astype(np.float32)
        got, want = cm(xin), ref(xin)
        for g, w in zip(got.values(), want.values()):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()))
        stats = cm._executable.program.stats
        assert stats.get("int8_ops", 0) == n_int8 and not stats["fallbacks"]


@pytest.mark.parametrize("declined", [None, "Int8MatMul", "Int8Convolution"])
def test_reported_precision_is_what_ran(declined, monkeypatch):
    """Profiling and the runtime model report int8 exactly for the ops the int8 kernels ran:
    a quantized convolution the rewrite leaves in float (0.0 not a step, padded) reports a
    float kernel, and an int8 op whose native rule declines (forced here) reports the
    reference kernel, with no I8 claim left in its rt_info, while the answer stays right."""
    import ember as ov
    from ember.devices.cpu.lowering import driver

    driver.load_rules()
    if declined:
        monkeypatch.setitem(driver.RULES, declined, lambda lowering, node: False)
    model, xin, n_int8 = _graph("fractional-zero-point", np.random.default_rng(11))
    core = ov.Core()
    cm = core.compile_model(model, "CPU", {"PERF_COUNT": True})
    request = cm.create_infer_request()
    got = request.infer({0: xin})
    want = core.compile_model(model, "REFERENCE")(xin)
    for g, w in zip(got.values(), want.values()):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()))
    nodes = {n.friendly_name: n for n in cm.get_runtime_model().get_ordered_ops()}
    exec_types = {p.node_name: p.exec_type for p in request.get_profiling_info()}
    claimed = {k for k, n in nodes.items() if n.rt_info.get("runtimePrecision") == "I8"}
    ran_int8 = {k for k, v in exec_types.items() if v.endswith("_I8")}
    int8_types = {k for k, n in nodes.items() if n.type_name in ("Int8Convolution", "Int8MatMul")}
    assert len(int8_types) == n_int8 and "Convolution" in {n.type_name for n in nodes.values()}
    expected = {k for k in int8_types if nodes[k].type_name != declined}
    assert claimed == ran_int8 == expected
    stats = cm._executable.program.stats
    assert stats.get("int8_ops", 0) == len(expected)
    for k in int8_types - expected:
        assert exec_types[k] == "ref_any" and stats["fallbacks"][declined] == 1
    f32_conv = [k for k, n in nodes.items() if n.type_name == "Convolution"]
    assert all(not exec_types.get(k, "").endswith("_I8") for k in f32_conv)


def test_int8_model_loads_from_cache_dir(tmp_path):
    """CACHE_DIR with an int8-compiled model: a fresh process reads the cached runtime model
    (its Int8* ops are registered CPU ops), skips the passes, runs the same int8 kernels and
    gives identical outputs; an entry whose int8 op is broken is refused and recompiled."""
    import json
    import subprocess
    import sys

    import ember as ov

    model, xin, n_int8 = _graph("conv-chain", np.random.default_rng(3))
    cache = tmp_path / "cache"
    first = ov.Core().compile_model(model, "CPU", {"CACHE_DIR": str(cache)})
    want = first(xin)
    assert not first._loaded_from_cache
    ov.save_model(model, tmp_path / "m.xml", compress_to_fp16=False)
    np.save(tmp_path / "x.npy", xin)
    script = f"""
import json, sys, numpy as np, ember as ov
core = ov.Core()
cm = core.compile_model(core.read_model({str(tmp_path / "m.xml")!r}), "CPU", {{"CACHE_DIR": {str(cache)!r}}})
out = cm(np.load({str(tmp_path / "x.npy")!r}))
for i, v in enumerate(out.values()):
    np.save({str(tmp_path)!r} + f"/y{{i}}.npy", v)
types = [n.type_name for n in cm.get_runtime_model().get_ordered_ops()]
print(json.dumps(dict(cached=cm._loaded_from_cache, int8=cm._executable.program.stats.get("int8_ops", 0),
                      ops=types.count("Int8Convolution") + types.count("Int8MatMul"))))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == dict(cached=True, int8=n_int8, ops=n_int8)
    for i, w in enumerate(want.values()):
        np.testing.assert_array_equal(np.load(tmp_path / f"y{i}.npy"), w)
    # an entry (checksums redone) with an Int8Quantize of 512 levels: refused, compiled again
    from ember.io import read_ir_bytes, serialize
    from ember.runtime import cache as cache_mod

    (entry,) = cache.glob("*.blob")
    got = cache_mod.unpack(entry.read_bytes())
    xml, weights = serialize(got.model, compress_to_fp16=False)
    bad = xml.replace(b'<data levels="256" layout="rows"', b'<data levels="512" layout="rows"')
    assert bad.count(b'levels="512"') == 1
    with pytest.raises(ov.EmberError, match="levels 512"):
        read_ir_bytes(bad, weights)
    entry.write_bytes(_repacked(cache_mod, entry.stem, bad, weights))
    again = ov.Core().compile_model(model, "CPU", {"CACHE_DIR": str(cache)})
    assert not again._loaded_from_cache
    for g, w in zip(again(xin).values(), want.values()):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("kind", ["pool-u8", "concat-u8", "avgpool-u8", "downsample-block"])
def test_int8_movement_ops_from_cache_dir(kind, tmp_path):
    """Int8MaxPool / Int8Concat / Int8AvgPool / Int8Dequantize survive the model cache's IR round trip."""
    import ember as ov

    model, xin, n_int8 = _graph(kind, np.random.default_rng(len(kind)))
    first = ov.Core().compile_model(model, "CPU", {"CACHE_DIR": str(tmp_path)})
    again = ov.Core().compile_model(model, "CPU", {"CACHE_DIR": str(tmp_path)})
    assert again._loaded_from_cache and again._executable.program.stats.get("int8_ops") == n_int8
    types = {n.type_name for n in again.get_runtime_model().get_ordered_ops()}
    assert types & {"Int8MaxPool", "Int8Concat", "Int8AvgPool", "Int8Dequantize"}
    assert not again._executable.program.stats["fallbacks"]
    for g, w in zip(again(xin).values(), first(xin).values()):
        np.testing.assert_array_equal(g, w)


def _repacked(cache_mod, key, xml, weights):
    """A cache entry with these model bytes and valid checksums (what an attacker with write
    access to the folder could write; the reader must still refuse a bad op)."""
    import hashlib
    import json
    import struct

    sections = [("model.xml", xml), ("model.bin", weights), ("device", b"")]
    header = {"format": cache_mod.FORMAT, "key": key, "device": "CPU", "ember": cache_mod._version(),
              "sections": [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in sections]}
    hb = json.dumps(header, sort_keys=True).encode()
    return b"".join([cache_mod.MAGIC, struct.pack("<I", len(hb)), hb] + [b for _, b in sections])


# --------------------------------------------------------------------------- NNCF-quantized networks
def _nncf_ir(name, tmp_path):
    """The NNCF int8 IR of test network ``name`` (seeded weights, 10 seeded calibration inputs),
    made once with real NNCF on OpenVINO and cached in ~/.cache/ember/int8 (as benchmarks/int8.py)."""
    import hashlib
    from pathlib import Path

    nncf = pytest.importorskip("nncf")
    ov = pytest.importorskip("openvino")
    pytest.importorskip("torch")
    from models.torch_models import export

    import ember

    onnx_path = export(name)
    key = hashlib.sha1(f"{onnx_path.name}-10-{nncf.__version__}-{ov.__version__}".encode()).hexdigest()[:10]
    folder = Path.home() / ".cache" / "ember" / "int8" / f"{name}-{key}"
    q = folder / "int8.xml"
    if not q.exists():
        folder.mkdir(parents=True, exist_ok=True)
        ember.save_model(ember.convert_model(onnx_path), folder / "float.xml", compress_to_fp16=False)
        model = ov.Core().read_model(folder / "float.xml")
        rng = np.random.default_rng(0)
        data = [rng.standard_normal([1, 3, 224, 224]).astype(np.float32) for _ in range(10)]
        ov.save_model(nncf.quantize(model, nncf.Dataset(data), subset_size=10), tmp_path / "int8.xml",
                      compress_to_fp16=False)
        for suffix in (".bin", ".xml"):  # the .xml last: its presence means the pair is complete
            (tmp_path / "int8.xml").with_suffix(suffix).replace(q.with_suffix(suffix))
    return q


@pytest.mark.slow
@pytest.mark.parametrize("name, int8_ops", [("resnet50", 54), ("mobilenet_v2", 53)])
def test_nncf_network_int8(name, int8_ops, tmp_path):
    """An NNCF-quantized IR on CPU: its convolutions and MatMul run int8, and the output is
    within int8 rounding of REFERENCE (the FakeQuantize graph in float) and of OpenVINO's int8."""
    import openvino

    import ember

    q = _nncf_ir(name, tmp_path)
    x = np.random.default_rng(7).standard_normal([1, 3, 224, 224]).astype(np.float32)
    core = ember.Core()
    cm = core.compile_model(core.read_model(q), "CPU")
    got = cm(x)[0]
    stats = cm._executable.program.stats
    assert stats["int8_ops"] == int8_ops and not stats["fallbacks"]
    ref = ember.compile_model(core.read_model(q), "REFERENCE")(x)[0]
    theirs = openvino.Core().compile_model(str(q), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    mag = float(np.abs(ref).max())
    # a rounding flip in one activation moves the logits by about a step of one layer: far below 2%
    assert float(np.abs(got - ref).max()) <= 0.02 * mag
    assert float(np.abs(got - theirs).max()) <= 0.02 * mag


@pytest.mark.slow
def test_ort_qdq_network_int8(tmp_path):
    """ONNX Runtime's quantize_static (QDQ, u8 activations, per-channel s8 weights) on
    MobileNetV2: ember converts the Q/DQ pairs to the same patterns and runs them int8,
    within int8 rounding of ONNX Runtime on the QDQ model."""
    ort = pytest.importorskip("onnxruntime")
    quant = pytest.importorskip("onnxruntime.quantization")
    pytest.importorskip("torch")
    from models.torch_models import export

    import ember

    rng = np.random.default_rng(0)
    samples = [rng.standard_normal([1, 3, 224, 224]).astype(np.float32) for _ in range(4)]

    class Reader(quant.CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": s} for s in samples])

        def get_next(self):
            return next(self.items, None)

    pre, q = tmp_path / "pre.onnx", tmp_path / "qdq.onnx"
    quant.quant_pre_process(str(export("mobilenet_v2")), str(pre))  # ORT's recommended step: BatchNorm folded
    quant.quantize_static(str(pre), str(q), Reader(), quant_format=quant.QuantFormat.QDQ,
                          per_channel=True, weight_type=quant.QuantType.QInt8,
                          activation_type=quant.QuantType.QUInt8)
    x = np.random.default_rng(7).standard_normal([1, 3, 224, 224]).astype(np.float32)
    cm = ember.compile_model(ember.convert_model(q), "CPU")
    got = cm(x)[0]
    stats = cm._executable.program.stats
    assert stats["int8_ops"] >= 50 and not stats["fallbacks"]
    want = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert float(np.abs(got - want).max()) <= 0.05 * float(np.abs(want).max())


# --------------------------------------------------------------------------- NNCF-quantized zoo models
SEQ = 32  # MiniLM's token count in the tests (static: the int8 lowering needs static shapes)


def _zoo_inputs(name, rng):
    """One input of zoo model ``name`` (by input name) and the static shapes to compile it with."""
    if name == "efficientnet-lite0":
        return {"image": rng.standard_normal([1, 3, 224, 224]).astype(np.float32)}
    ids = rng.integers(1000, 20000, (1, SEQ)).astype(np.int64)
    ids[0, 0], ids[0, -1] = 101, 102  # [CLS] ... [SEP]
    return {"input_ids": ids, "attention_mask": np.ones((1, SEQ), np.int64),
            "token_type_ids": np.zeros((1, SEQ), np.int64)}


def _nncf_zoo_ir(name):
    """Zoo model ``name`` quantized by real NNCF (10 seeded calibration inputs; MiniLM with
    ``ModelType.TRANSFORMER``), made once and cached in ~/.cache/ember/int8 beside the others."""
    import hashlib
    import json
    import tempfile
    from pathlib import Path

    nncf = pytest.importorskip("nncf")
    ov = pytest.importorskip("openvino")
    from ember import zoo

    prepared = zoo.fetch(name)
    stamp = json.loads(prepared.xml.with_name("zoo.json").read_text())
    key = hashlib.sha1(f"{stamp}-10-{nncf.__version__}-{ov.__version__}".encode()).hexdigest()[:10]
    q = Path.home() / ".cache" / "ember" / "int8" / f"{name}-{key}" / "int8.xml"
    if not q.exists():
        q.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        data = [_zoo_inputs(name, rng) for _ in range(10)]
        if name == "efficientnet-lite0":
            data = [d["image"] for d in data]
        options = {"model_type": nncf.ModelType.TRANSFORMER} if name == "all-minilm-l6-v2" else {}
        quantized = nncf.quantize(ov.Core().read_model(prepared.xml), nncf.Dataset(data), subset_size=10, **options)
        with tempfile.TemporaryDirectory(dir=q.parent) as tmp:
            out = Path(tmp) / "int8.xml"
            ov.save_model(quantized, out, compress_to_fp16=False)
            for suffix in (".bin", ".xml"):  # the .xml last: its presence means the pair is complete
                out.with_suffix(suffix).replace(q.with_suffix(suffix))
    return q


@pytest.mark.slow
@pytest.mark.parametrize("name, int8_ops, fallbacks", [
    ("efficientnet-lite0", 50, {}),  # every convolution (stem, depthwise, 1x1) and the classifier
    ("all-minilm-l6-v2", 36, {}),  # the 6 Linear layers of 6 blocks; attention stays f32
])
def test_nncf_zoo_model_int8(name, int8_ops, fallbacks):
    """A zoo model quantized by NNCF, compiled with static shapes: its convolutions/Linear layers
    run int8 (profiling says so, and nothing else claims int8), within int8 rounding of REFERENCE
    and of OpenVINO's int8 output."""
    import openvino

    import ember

    q = _nncf_zoo_ir(name)
    feeds = _zoo_inputs(name, np.random.default_rng(7))
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    core = ember.Core()

    def read():
        model = core.read_model(q)
        model.reshape(shapes)
        return model

    cm = core.compile_model(read(), "CPU", {"PERF_COUNT": True})
    request = cm.create_infer_request()
    got = request.infer(feeds)[0]
    stats = cm._executable.program.stats
    assert stats["int8_ops"] == int8_ops and stats["fallbacks"] == fallbacks
    exec_types = [p.exec_type for p in request.get_profiling_info()]
    assert sum(t.endswith("_I8") for t in exec_types) == int8_ops
    ref = core.compile_model(read(), "REFERENCE")(feeds)[0]
    ov_model = openvino.Core().read_model(q)
    ov_model.reshape(shapes)
    theirs = openvino.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(feeds)[0]
    mag = float(np.abs(ref).max())
    # OpenVINO's own int8 is 1.2e-2 (EfficientNet) / 2.4e-2 (MiniLM) of this magnitude from REFERENCE
    tol = 0.02 if name == "efficientnet-lite0" else 0.05
    assert float(np.abs(got - ref).max()) <= tol * mag
    assert float(np.abs(got - theirs).max()) <= tol * mag
    cos = float(np.sum(got * ref) / np.linalg.norm(got) / np.linalg.norm(ref))
    assert cos >= 0.999


@pytest.mark.parametrize("case", ["positive", "negative", "shared", "scalar"])
def test_smooth_quant_scale_folds_into_the_fake_quantize(case):
    """``FakeQuantize(x * c)`` before a quantized MatMul becomes ``FakeQuantize(x)`` with input
    ranges divided by ``c`` (positive finite per-channel or scalar ``c``, the Multiply read only
    there); a negative ``c`` or a Multiply another op reads stays. The results are REFERENCE's
    within one step of the FakeQuantize per value (rounding at a step's edge)."""
    import ember as ov
    import ember.opset as ops
    from ember.devices.cpu.lowering import low_precision
    from ember.graph.types import Type

    rng = np.random.default_rng(11)
    x = ops.parameter([2, 7, 32], Type.f32, name="x")
    c = (rng.random((1, 1, 32)) + 0.5).astype(np.float32)
    if case == "negative":
        c[0, 0, 3] = -0.7
    if case == "scalar":
        c = np.float32(1.7)
    m = ops.multiply(x, ops.constant(c))
    lo, hi = -1.5, 1.5 * 127 / 128
    w = rng.integers(-127, 128, (32, 16)).astype(np.int8)
    s = (rng.random(16) * 0.02 + 0.005).astype(np.float32)
    outs = [ops.matmul(_fq(m, lo, hi), _weights(w, s), False, False)]
    if case == "shared":
        outs.append(ops.relu(m))
    model = ov.Model(outs, [x])
    xin = rng.standard_normal((2, 7, 32)).astype(np.float32)
    folded = low_precision._fold_scales_into_fake_quantize(model.clone())
    assert folded == (1 if case in ("positive", "scalar") else 0)
    core = ov.Core()
    want = core.compile_model(model, "REFERENCE")(xin)[0]
    cm = core.compile_model(model, "CPU")
    got = cm(xin)[0]
    step = (hi - lo) / 255
    bound = step * float(np.max(np.abs(w.astype(np.float64) * s).sum(axis=0))) + 1e-4
    assert np.abs(got - want).max() <= bound
    types = [op.type_name for op in cm._executable.program.ops]
    assert types.count("Int8MatMul") == 1
    assert any("Multiply" in t for t in types) == (case in ("negative", "shared"))


@pytest.mark.parametrize("approximation", ["erf", "tanh"])
@pytest.mark.parametrize("rows", [5, 16, 131])
def test_int8_matmul_gelu_epilogue_matches_reference(approximation, rows, monkeypatch):
    """An int8 MatMul + bias + GELU with an f32 output: where the kernels take the activation
    (AMX, or AVX-512's vector kernels finishing the tile row by row), no GELU step runs and the
    values are REFERENCE's (the same FakeQuantize grid; f32 rounding only), and equal to the
    plan that runs the GELU on its own."""
    import ember as ov
    import ember.opset as ops
    from ember.devices.cpu.kernels import int8_gemm
    from ember.graph.types import Type

    rng = np.random.default_rng(rows)
    x = ops.parameter([1, rows, 40], Type.f32, name="x")
    w = rng.integers(-127, 128, (40, 72)).astype(np.int8)
    s = (rng.random(72) * 0.02 + 0.005).astype(np.float32)
    h = ops.matmul(_fq(x, -2.0, 2.0 * 127 / 128), _weights(w, s), False, False)
    model = ov.Model([ops.gelu(ops.add(h, ops.constant(rng.standard_normal(72).astype(np.float32) * 0.3)),
                               approximation)], [x])
    xin = (rng.standard_normal((1, rows, 40)) * 1.2).astype(np.float32)
    core = ov.Core()
    want = core.compile_model(model, "REFERENCE")(xin)[0]
    fused = core.compile_model(model, "CPU")
    got = fused(xin)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    steps = [op.type_name for op in fused._executable.program.ops]
    assert ("Eltwise:Gelu" in steps) != int8_gemm.int8_activation_fits(int8_gemm.host_isa(), 40)
    monkeypatch.setattr(int8_gemm, "VNNI_ACTIVATIONS", False)
    apart = core.compile_model(model, "CPU")(xin)[0]
    np.testing.assert_allclose(got, apart, rtol=1e-5, atol=1e-6)
