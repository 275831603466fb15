"""The per-shape int8 depthwise kernel (kernels/int8_depthwise.py) against numpy integer math,
from one table of layer shapes: 3x3/5x5 and odd kernels, strides 1/2, dilation, odd sizes,
padding (symmetric, TF-style asymmetric, none), channel counts that are not multiples of the
vector blocks, zero points 0 / 128 (i8 activations as u8 steps) / per channel, every epilogue
the lowering gives it; then whole networks against REFERENCE."""


import numpy as np
import pytest

from cpu.test_int8 import ISAS  # the ISA levels of the int8 kernels (VNNI, and AVX2 without it)
from ember.devices.cpu.kernels.conv import ConvGeometry
from ember.devices.cpu.kernels.gemm import Epilogue
from ember.devices.cpu.kernels.int8_depthwise import Int8DepthwiseConv, block_order, int8_depthwise, supported
from ember.devices.cpu.kernels.int8_gemm import FusedQuantize, QuantizeParams, padded_channels
from ember.errors import EmberError

BEST = ISAS[0]
OUT_Q = QuantizeParams(0.0, 6.0, 0.0, 6.0, 256)  # ReLU6's range, as NNCF puts after a depthwise layer
MID_Q = QuantizeParams(-1.5, 2.5, -1.5, 2.5, 256)
RES_Q = QuantizeParams(-0.5, 0.6, -0.5, 0.6, 256)
EPILOGUES = {"none": Epilogue(), "relu": Epilogue.relu(), "relu6": Epilogue.clamp(0.0, 6.0),
             "clamp": Epilogue.clamp(-0.5, 0.75)}

# (batch, h, w, channels, kh, kw, strides, dilations, pads_begin, pads_end, extra pixel bytes,
#  epilogue, residual ("", "f32", "fq"), output ("f32", "mid", "end", "u8"), zero points)
CASES = [
    (1, 9, 11, 32, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 0, "clamp", "", "f32", "asym"),
    (2, 8, 7, 19, 3, 3, (2, 2), (1, 1), (1, 1), (0, 1), 0, "relu", "f32", "end", "sym"),
    (1, 6, 6, 40, 5, 5, (1, 1), (2, 1), (4, 2), (4, 2), 8, "none", "", "u8", "asym"),
    (1, 5, 9, 7, 1, 3, (1, 2), (1, 1), (0, 1), (0, 1), 0, "none", "", "mid", "zero"),
    (1, 14, 13, 144, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 0, "relu6", "", "u8", "asym"),
    (1, 15, 15, 100, 5, 5, (2, 2), (1, 1), (2, 2), (2, 2), 0, "relu6", "", "u8", "sym"),
    (1, 3, 3, 130, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 0, "clamp", "fq", "end", "asym"),
    (1, 7, 7, 64, 3, 3, (1, 1), (1, 1), (0, 0), (0, 0), 0, "none", "", "f32", "zero"),
    (1, 1, 1, 24, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 0, "relu", "", "u8", "asym"),
    (1, 10, 6, 33, 2, 2, (1, 1), (1, 1), (0, 0), (1, 1), 4, "relu6", "f32", "u8", "asym"),
    (1, 12, 12, 96, 3, 3, (2, 2), (1, 1), (0, 0), (1, 1), 0, "relu6", "", "u8", "zero"),
    (1, 9, 12, 48, 3, 3, (1, 1), (1, 2), (1, 2), (1, 2), 0, "relu6", "", "u8", "asym"),
]


def _ids(c):
    return f"c{c[3]}-k{c[4]}x{c[5]}-s{c[6][0]}{c[6][1]}-{c[12] or 'nores'}-{c[13]}-{c[14]}"


def _layer(case, seed=0):
    n, h, wd, c, kh, kw, s, d, pb, pe, extra, epi, res, out, zps = case
    geo = ConvGeometry(n, h, wd, c, c, kh, kw, s, d, pb, pe, c)
    rng = np.random.default_rng(c * 7 + kh + seed)
    x = rng.integers(0, 256, (n, h, wd, padded_channels(c) + extra)).astype(np.uint8)
    w = rng.integers(-128, 128, (c, 1, kh, kw)).astype(np.int8)
    zp = {"zero": np.zeros(c, np.int64), "sym": np.full(c, 128), "asym": rng.integers(0, 256, c)}[zps]
    if zps == "zero":  # after a ReLU: small steps
        x = (x // 4).astype(np.uint8)
    scale = (rng.random(c) * 0.002 + 0.0005).astype(np.float32)
    shift = (rng.standard_normal(c) * 0.3 + (2.0 if out == "u8" else 0.0)).astype(np.float32)
    residual = (rng.standard_normal(geo.output_shape) * 0.4).astype(np.float32) if res else None
    quantize = None
    if out in ("mid", "end", "u8"):
        quantize = FusedQuantize(MID_Q if out == "mid" else OUT_Q, "mid" if out == "mid" else "end", out == "u8")
    return geo, x, w, zp, scale, shift, residual, quantize, EPILOGUES[epi], RES_Q if res == "fq" else None


def _reference(case, geo, x, w, zp, scale, shift, residual, quantize, epi, res_q):
    """numpy, tap by tap in int64, then the epilogue in f32 with FakeQuantize's own arithmetic."""
    n, h, wd, c, kh, kw, (sh, sw), (dh, dw), pb, pe = case[:10]
    xi = np.pad(x[..., :c].astype(np.int64) - zp, ((0, 0), (pb[0], pe[0]), (pb[1], pe[1]), (0, 0)))
    acc = np.zeros(geo.output_shape, np.int64)
    for ky in range(kh):
        for kx in range(kw):
            acc += xi[:, ky * dh: ky * dh + sh * (geo.oh - 1) + 1: sh, kx * dw: kx * dw + sw * (geo.ow - 1) + 1: sw] \
                * w[:, 0, ky, kx].astype(np.int64)
    v = acc.astype(np.float32) * scale + shift
    if quantize is not None and quantize.at == "mid":
        v = _fake_quantize(v, quantize.params)
    if residual is not None:
        v = v + (residual if res_q is None else _fake_quantize(residual, res_q))
    v = epi.apply(v).astype(np.float32)
    if quantize is not None and quantize.u8:
        return quantize.params.quantize(v)
    if quantize is not None and quantize.at == "end":
        v = _fake_quantize(v, quantize.params)
    return v


def _fake_quantize(v, p):
    q = p.quantize(v).astype(np.float32)
    return (q / np.float32(p.steps) * (np.float32(p.oh) - np.float32(p.ol)) + np.float32(p.ol)).astype(np.float32)


def _run(kernel, x, geo, quantize, residual):
    shape = geo.output_shape
    if quantize is not None and quantize.u8:
        y = np.full((*shape[:3], padded_channels(shape[3])), 77, np.uint8)
    else:
        y = np.full(shape, np.nan, np.float32)
    kernel.bind(x, y, residual).run()
    return y[..., :shape[3]]


def _check(got, want, quantize):
    if want.dtype == np.uint8:
        np.testing.assert_array_equal(got, want)
    else:
        step = 6.0 / 255 if quantize is None else float(quantize.params.scale)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * max(1.0, step))


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matches_numpy(case):
    """Exact arithmetic (REFERENCE's FakeQuantize steps) on the host's best ISA, 1 and 2 threads."""
    geo, x, w, zp, scale, shift, residual, quantize, epi, res_q = _layer(case)
    want = _reference(case, geo, x, w, zp, scale, shift, residual, quantize, epi, res_q)
    for threads in (1, 2):
        kernel = Int8DepthwiseConv(geo, w, scale, shift, zp, epi, threads, BEST.values[0], quantize, res_q)
        _check(_run(kernel, x, geo, quantize, residual), want, quantize)


LEVEL_CASES = [CASES[1], CASES[2], CASES[4], CASES[9]]


@pytest.mark.parametrize("isa", ISAS[1:] or [BEST])
@pytest.mark.parametrize("case", LEVEL_CASES, ids=_ids)
def test_every_isa_level(isa, case):
    """The same kernel on the lower ISA levels (AVX-VNNI ymm, the portable dot product, generic
    vectors): the unpacks, packs and channel order hold for every vector width."""
    geo, x, w, zp, scale, shift, residual, quantize, epi, res_q = _layer(case, 1)
    want = _reference(case, geo, x, w, zp, scale, shift, residual, quantize, epi, res_q)
    kernel = Int8DepthwiseConv(geo, w, scale, shift, zp, epi, 2, isa, quantize, res_q)
    _check(_run(kernel, x, geo, quantize, residual), want, quantize)


@pytest.mark.parametrize("case", [CASES[4], CASES[5], CASES[9]], ids=_ids)
def test_fast_epilogue_within_one_step(case):
    """The fast FakeQuantize arithmetic (the default in compiled models) against the exact one:
    at most one step apart, on exact ties only (accumulators in 32nds of a step)."""
    geo, x, w, zp, scale, shift, residual, quantize, epi, res_q = _layer(case, 2)
    scale = np.full(geo.cin, np.float32(6.0 / 255 / 32))
    outs = [_run(Int8DepthwiseConv(geo, w, scale, shift, zp, epi, 1, BEST.values[0], quantize, res_q, fast=fast),
                 x, geo, quantize, residual) for fast in (False, True)]
    diff = np.abs(outs[0].astype(np.float64) - outs[1].astype(np.float64))
    assert diff.max() <= 1
    assert np.mean(diff > 0.5) < 0.05


def test_block_order_is_undone_by_the_packs():
    """Lane j of accumulator k holds channel 16 * (j // 4) + 4 * k + j % 4; the order is a
    permutation of each block, for every vector width."""
    for lanes in (4, 8, 16):
        order = block_order(lanes)
        assert sorted(order) == list(range(4 * lanes))
    assert list(block_order(4)[:8]) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert list(block_order(16)[:8]) == [0, 1, 2, 3, 16, 17, 18, 19]


def test_dispatch_and_errors():
    """7x7 and larger keep the generic kernel; bad weights, zero points and inputs are refused."""
    small = ConvGeometry(1, 8, 8, 16, 16, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 16)
    large = ConvGeometry(1, 8, 8, 16, 16, 7, 7, (1, 1), (1, 1), (3, 3), (3, 3), 16)
    assert supported(small) and not supported(large)
    ones = np.ones(16, np.float32)
    assert isinstance(int8_depthwise(small, np.ones((16, 1, 3, 3), np.int8), ones), Int8DepthwiseConv)
    with pytest.raises(EmberError, match="at most 25 taps"):  # the generic kernel's job (int8_depthwise picks it)
        Int8DepthwiseConv(large, np.ones((16, 1, 7, 7), np.int8), ones)
    with pytest.raises(EmberError, match="127"):
        Int8DepthwiseConv(small, np.full((16, 1, 3, 3), 200), ones)
    with pytest.raises(EmberError, match="zero points"):
        Int8DepthwiseConv(small, np.ones((16, 1, 3, 3), np.int8), ones, zero_point=300)
    kernel = Int8DepthwiseConv(small, np.ones((16, 1, 3, 3), np.int8), ones)
    with pytest.raises(EmberError, match="u8"):
        kernel(np.zeros((1, 8, 8, 16), np.float32))


@pytest.mark.slow
def test_mobilenet_v2_depthwise_layers(tmp_path, monkeypatch):
    """NNCF-quantized MobileNetV2: its 17 depthwise layers run the per-shape kernel, and the
    logits are within int8 rounding of REFERENCE (the FakeQuantize graph in float) and of the
    generic depthwise kernel's run."""
    import ember
    import ember.devices.cpu.kernels.int8_depthwise as dw_module
    from cpu.test_int8 import _nncf_ir

    q = _nncf_ir("mobilenet_v2", tmp_path)
    x = np.random.default_rng(11).standard_normal([1, 3, 224, 224]).astype(np.float32)
    core = ember.Core()
    built = []

    class Counted(Int8DepthwiseConv):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self.geometry)

    monkeypatch.setattr(dw_module, "Int8DepthwiseConv", Counted)
    compiled = core.compile_model(core.read_model(q), "CPU")
    got = compiled(x)[0]
    assert len(built) == 17
    # the depthwise kernel runs on the vector units: profiling never names it AMX
    depthwise = [n for n in compiled.get_runtime_model().get_ordered_ops()
                 if n.type_name == "Int8Convolution" and n.rt_info.get("execType", "").endswith("_I8")
                 and "amx" not in n.rt_info["execType"]]
    assert len(depthwise) >= 17
    monkeypatch.setattr(dw_module, "supported", lambda geometry: False)
    generic = core.compile_model(core.read_model(q), "CPU")(x)[0]
    ref = core.compile_model(core.read_model(q), "REFERENCE")(x)[0]
    mag = float(np.abs(ref).max())
    assert float(np.abs(got - ref).max()) <= 0.02 * mag
    assert float(np.abs(got - generic).max()) <= 0.02 * mag
    assert int(np.argmax(got)) == int(np.argmax(ref))
