"""The depthwise convolution fused with the 1x1 after it (kernels/dw_pointwise.py): the kernel
against an independent float64 numpy reference (depthwise tap by tap, then the 1x1 as a
matrix product) on a table of shapes, on 1 and 2 threads; the lowering rule on MobileNet-style
blocks against REFERENCE, with the fusion on and off."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.devices.cpu.kernels import dw_pointwise
from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry
from ember.devices.cpu.kernels.dw_pointwise import DwPointwise, band_rows, fusable
from ember.devices.cpu.kernels.gemm import Epilogue, bf16_supported, to_bf16_bits
from ember.devices.cpu.llvm.isa import host_isa, supported_levels
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.errors import EmberError
from tests.cpu.test_depthwise_fused import BLOCKS, block


def reference(x: np.ndarray, wd: np.ndarray, bd: np.ndarray | None, geo: ConvGeometry, dw_epi: Epilogue,
              act: str, affine: tuple[float, float] | None, wp: np.ndarray, bp: np.ndarray | None,
              res: np.ndarray | None, pw_epi: Epilogue) -> np.ndarray:
    """float64: depthwise (+ bias, clamp, HSwish, affine), then the 1x1 (+ bias, + residual, clamp,
    activation)."""
    g = geo
    xp = np.pad(x.astype(np.float64), ((0, 0), (g.pads_begin[0], g.pads_end[0]), (g.pads_begin[1], g.pads_end[1]),
                                       (0, 0)))
    (sh, sw), (dh, dw) = g.strides, g.dilations
    d = np.zeros((g.batch, g.oh, g.ow, g.cin))
    for ky in range(g.kh):
        for kx in range(g.kw):
            d += xp[:, ky * dh:ky * dh + sh * (g.oh - 1) + 1:sh, kx * dw:kx * dw + sw * (g.ow - 1) + 1:sw] \
                * wd[:, 0, ky, kx].astype(np.float64)
    d = np.clip(d + (0.0 if bd is None else bd), dw_epi.lo, dw_epi.hi)
    if act == "hswish":
        d = d * np.clip(d + 3.0, 0.0, 6.0) / 6.0
    if affine is not None:
        d = d * affine[0] + affine[1]
    y = d @ wp[:, :, 0, 0].T.astype(np.float64) + (0.0 if bp is None else bp) + (0.0 if res is None else res)
    y = np.clip(y, pw_epi.lo, pw_epi.hi)
    if pw_epi.activation:
        assert pw_epi.activation == "hswish"
        y = y * np.clip(y + 3.0, 0.0, 6.0) / 6.0
    if pw_epi.affine is not None:
        y = y * pw_epi.affine[0] + pw_epi.affine[1]
    return y


RELU6 = Epilogue.clamp(0.0, 6.0)
# (batch, h, w, channels, k, stride, pads_begin, pads_end, 1x1 outputs, depthwise epilogue
#  (epilogue, activation, affine), 1x1 epilogue, biases, residual, x a channel slice, y a channel slice)
CASES = [
    (1, 14, 14, 37, 3, (1, 1), (1, 1), (1, 1), 19, (RELU6, "", None), Epilogue(), True, True, False, False),
    (1, 15, 13, 96, 3, (2, 2), (1, 1), (1, 1), 24, (RELU6, "", None), Epilogue(), True, False, False, False),
    (1, 14, 14, 96, 3, (2, 2), (0, 0), (1, 1), 24, (RELU6, "", None), Epilogue(), True, False, False, True),
    (2, 7, 9, 33, 5, (1, 1), (2, 2), (2, 2), 16, (Epilogue(), "hswish", (0.75, -0.25)), RELU6, False, True, True, False),
    (1, 28, 28, 144, 3, (1, 1), (1, 1), (1, 1), 24, (RELU6, "", None), Epilogue(), True, True, False, False),
    (1, 56, 56, 96, 3, (2, 2), (0, 0), (1, 1), 24, (RELU6, "", None), Epilogue(), True, False, False, False),
    (1, 7, 7, 160, 3, (1, 1), (1, 1), (1, 1), 160, (RELU6, "", None), Epilogue(), True, True, False, False),
    (1, 14, 14, 672, 5, (1, 1), (2, 2), (2, 2), 112, (RELU6, "", None), Epilogue(), True, False, False, False),
    (1, 1, 1, 20, 3, (1, 1), (1, 1), (1, 1), 5, (RELU6, "", None), Epilogue.relu(), True, True, False, False),
    (1, 3, 3, 48, 3, (2, 2), (1, 1), (1, 1), 17, (Epilogue(), "hswish", None), Epilogue(activation="hswish"),
     True, False, False, False),
    (1, 4, 5, 24, 5, (1, 1), (2, 2), (2, 2), 40, (Epilogue.relu(), "", None), Epilogue(affine=(1.5, 0.5)),
     False, True, False, False),
    (1, 12, 80, 240, 5, (2, 1), (2, 2), (2, 2), 48, (Epilogue(), "hswish", (1.25, -0.5)), Epilogue(), True, False,
     False, False),
    (1, 6, 320, 64, 3, (1, 1), (1, 1), (1, 1), 32, (RELU6, "", None), Epilogue(), True, True, False, False),
]


def _id(c: tuple) -> str:
    return f"n{c[0]}-{c[1]}x{c[2]}x{c[3]}-k{c[4]}-s{c[5][0]}{c[5][1]}-o{c[8]}" + ("-r" if c[12] else "") + \
        ("-xs" if c[13] else "") + ("-ys" if c[14] else "")


def _run_case(case: tuple, threads: int, level: str | None = None) -> None:
    n, h, w, c, k, s, pb, pe, co, (dw_epi, act, affine), pw_epi, biases, with_res, xs, ys = case
    rng = np.random.default_rng(h * 31 + c + co)
    geo = ConvGeometry(n, h, w, c, c, k, k, s, (1, 1), pb, pe, c)
    wide = rng.standard_normal((n, h, w, c + 3 if xs else c), np.float32)
    x = wide[..., 1:1 + c] if xs else wide
    wd = rng.standard_normal((c, 1, k, k), np.float32) / k
    wp = (rng.standard_normal((co, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    bd = rng.standard_normal(c).astype(np.float32) if biases else None
    bp = rng.standard_normal(co).astype(np.float32) if biases else None
    out_shape = (n, geo.oh, geo.ow, co)
    res = rng.standard_normal(out_shape, np.float32) if with_res else None
    kernel = DwPointwise(geo, wd, wp, dw_epi, pw_epi, num_threads=threads, isa=host_isa(level) if level else None,
                         activation=act, affine=affine)
    ybuf = aligned_empty((n, geo.oh, geo.ow, co + 7 if ys else co))
    ybuf[:] = np.nan
    y = ybuf[..., 4:4 + co] if ys else ybuf
    kernel.bind(x, y, bd, bp, res).run()
    want = reference(x, wd, bd, geo, dw_epi, act, affine, wp, bp, res, pw_epi)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    if ys:  # the channels around the slice are not written
        assert np.isnan(ybuf[..., :4]).all() and np.isnan(ybuf[..., 4 + co:]).all()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_fused_matches_numpy(case: tuple, threads: int) -> None:
    _run_case(case, threads)


@pytest.mark.parametrize("level", [lv for lv in supported_levels() if lv != host_isa().level])
def test_fused_other_isa_levels(level: str) -> None:
    for case in (CASES[0], CASES[3]):
        _run_case(case, 2, level)


def test_bands_fit_the_buffer_and_cover_the_rows() -> None:
    for batch, oh, ow, c, threads in [(1, 112, 112, 32, 2), (1, 56, 56, 144, 2), (1, 14, 14, 576, 2),
                                      (1, 7, 7, 960, 1), (2, 28, 28, 192, 3), (1, 6, 320, 64, 2)]:
        rows = band_rows(batch, oh, ow, c, threads)
        assert 1 <= rows <= oh
        assert rows * ow * c * 4 <= dw_pointwise.SCRATCH_BYTES
    # a row wider than the buffer: not fusable
    assert band_rows(1, 4, 2000, 512, 2) == 0
    dw = ConvGeometry(1, 4, 2000, 512, 512, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 512)
    pw = ConvGeometry(1, 4, 2000, 512, 64, 1, 1)
    assert not fusable(dw, pw)
    with pytest.raises(EmberError):
        DwPointwise(dw, np.zeros((512, 1, 3, 3), np.float32), np.zeros((64, 512, 1, 1), np.float32))


def _fused_ops(cm: ember.CompiledModel) -> list[str]:
    return [op.name for op in cm._executable.program.ops if "+" in op.name]


@pytest.mark.parametrize("name", list(BLOCKS))
def test_blocks_fused_match_reference(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every block fused (the size rule off) and not fused, on CPU against REFERENCE."""
    monkeypatch.setattr(dw_pointwise, "MIN_PIXELS_PER_COUT", 0.0)
    model = block(*BLOCKS[name])
    c, hw = BLOCKS[name][:2]
    x = np.random.default_rng(hw).standard_normal((1, c, hw, hw)).astype(np.float32)
    ref = ember.Core().compile_model(model, "REFERENCE")
    want = ref([x])[ref.output(0)]
    for enabled in (True, False):
        monkeypatch.setattr(dw_pointwise, "ENABLED", enabled)
        cm = ember.Core().compile_model(model, "CPU")
        assert len(_fused_ops(cm)) == int(enabled)
        assert not cm._executable.program.stats["fallbacks"]
        np.testing.assert_allclose(cm([x])[cm.output(0)], want, rtol=1e-4, atol=1e-4)


def test_size_rule_keeps_small_maps_unfused() -> None:
    """7x7 with 960 -> 160 (49 pixels < 160 output channels) stays two kernels by default."""
    small = ember.Core().compile_model(block(160, 7, 6, 3, 1, "relu6", True), "CPU")
    large = ember.Core().compile_model(block(24, 28, 6, 3, 1, "relu6", True), "CPU")
    assert not _fused_ops(small)
    assert len(_fused_ops(large)) == int(dw_pointwise.ENABLED)


@pytest.mark.skipif(not bf16_supported(), reason="no AVX512_BF16 on this host")
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[4], CASES[9], CASES[12]], ids=_id)
@pytest.mark.parametrize("io16", [False, True])
def test_bf16_equals_the_two_kernels(case: tuple, io16: bool) -> None:
    """Under bf16 the fused kernel gives the bits of the depthwise kernel storing bf16 and then
    the bf16 1x1 with AMX (within an ulp or two with AVX512-BF16 only; with ``io16``: Y and the
    residual bf16 in memory too); both near float64."""
    n, h, w, c, k, s, pb, pe, co, (dw_epi, act, affine), pw_epi, biases, with_res, xs, ys = case
    rng = np.random.default_rng(h * 31 + c + co)
    geo = ConvGeometry(n, h, w, c, c, k, k, s, (1, 1), pb, pe, c)
    x = rng.standard_normal((n, h, w, c), np.float32)
    wd = rng.standard_normal((c, 1, k, k), np.float32) / k
    wp = (rng.standard_normal((co, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    bd = rng.standard_normal(c).astype(np.float32) if biases else None
    bp = rng.standard_normal(co).astype(np.float32) if biases else None
    out_shape = (n, geo.oh, geo.ow, co)
    res = rng.standard_normal(out_shape, np.float32) if with_res else None
    res_in = to_bf16_bits(res) if io16 and res is not None else res

    def output() -> np.ndarray:
        return aligned_empty(out_shape, np.uint16) if io16 else aligned_empty(out_shape)

    fused = DwPointwise(geo, wd, wp, dw_epi, pw_epi, num_threads=2, activation=act, affine=affine, precision="bf16")
    y = output()
    fused.bind(x, y, bd, bp, res_in).run()
    dw = Conv2d(geo, wd, dw_epi, num_threads=2, activation=act, affine=affine, precision="bf16")
    mid = aligned_empty((n, geo.oh, geo.ow, c), np.uint16)
    dw.bind(x, mid, bd).run()
    pw = Conv2d(ConvGeometry(n, geo.oh, geo.ow, c, co, 1, 1), wp, pw_epi, num_threads=2, precision="bf16")
    want = output()
    pw.bind(mid, want, bp, res_in).run()
    as_f32 = (y.astype(np.uint32) << 16).view(np.float32) if io16 else y
    if host_isa().amx_bf16:
        np.testing.assert_array_equal(y, want)
    else:
        # vdpbf16ps micro-kernels split a short row tile's sums over more accumulators (a band's
        # last tile is not the whole layer's): the same products, summed within an ulp or two
        want_f32 = (want.astype(np.uint32) << 16).view(np.float32) if io16 else want
        ulp = 2.0 ** -7 if io16 else 2.0 ** -22
        np.testing.assert_allclose(as_f32, want_f32, rtol=ulp, atol=ulp * float(np.abs(want_f32).max()))
    exact = reference(x, wd, bd, geo, dw_epi, act, affine, wp, bp, res, pw_epi)
    np.testing.assert_allclose(as_f32, exact, rtol=0.05, atol=0.05 * max(1.0, float(np.abs(exact).max())))


@pytest.mark.skipif(not bf16_supported(), reason="no AVX512_BF16 on this host")
@pytest.mark.parametrize("name", ["mbv2-14x14-s2-relu6", "lite0-5x5-relu6-res", "lcnetv3-5x5-hswish-affine-s2"])
def test_bf16_blocks_fused_equal_unfused(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 blocks: depthwise + 1x1 fused, and with the expand 1x1 too, give the unfused bits."""
    monkeypatch.setattr(dw_pointwise, "MIN_PIXELS_PER_COUT", 0.0)
    monkeypatch.setattr(dw_pointwise, "EXPAND_MIN_BYTES", 0)
    model = block(*BLOCKS[name])
    c, hw = BLOCKS[name][:2]
    x = np.random.default_rng(hw).standard_normal((1, c, hw, hw)).astype(np.float32)
    outs = {}
    for enabled, expand in ((True, True), (True, False), (False, False)):
        monkeypatch.setattr(dw_pointwise, "ENABLED", enabled)
        monkeypatch.setattr(dw_pointwise, "EXPAND", expand)
        cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
        assert [n.count("+") for n in _fused_ops(cm)] == ([1 + expand] if enabled else [])
        outs[(enabled, expand)] = cm([x])[cm.output(0)]
    np.testing.assert_array_equal(outs[(True, True)], outs[(False, False)])
    np.testing.assert_array_equal(outs[(True, False)], outs[(False, False)])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", [CASES[i] for i in (0, 1, 2, 3, 6, 8, 9, 10, 11)], ids=_id)
def test_expand_fused_matches_numpy(case: tuple, threads: int) -> None:
    """The expand 1x1 (+ bias, ReLU6) fused in front: each band's window of the expansion."""
    n, h, w, c, k, s, pb, pe, co, (dw_epi, act, affine), pw_epi, biases, with_res, xs, _ = case
    rng = np.random.default_rng(h * 17 + c + co)
    cin = 5 + c % 13
    geo = ConvGeometry(n, h, w, c, c, k, k, s, (1, 1), pb, pe, c)
    wide = rng.standard_normal((n, h, w, cin + 3 if xs else cin), np.float32)
    x = wide[..., 2:2 + cin] if xs else wide
    we = (rng.standard_normal((c, cin, 1, 1)) / np.sqrt(cin)).astype(np.float32)
    be = rng.standard_normal(c).astype(np.float32) if biases else None
    wd = rng.standard_normal((c, 1, k, k), np.float32) / k
    wp = (rng.standard_normal((co, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    bd = rng.standard_normal(c).astype(np.float32) if biases else None
    bp = rng.standard_normal(co).astype(np.float32) if biases else None
    res = rng.standard_normal((n, geo.oh, geo.ow, co), np.float32) if with_res else None
    expanded = np.clip(x.astype(np.float64) @ we[:, :, 0, 0].T.astype(np.float64) + (0.0 if be is None else be),
                       0.0, 6.0)
    want = reference(expanded, wd, bd, geo, dw_epi, act, affine, wp, bp, res, pw_epi)
    kernel = DwPointwise(geo, wd, wp, dw_epi, pw_epi, num_threads=threads, activation=act, affine=affine,
                         expand=(we, RELU6))
    assert kernel.nb * kernel.rows >= geo.oh
    y = aligned_empty((n, geo.oh, geo.ow, co))
    y[:] = np.nan
    kernel.bind(x, y, bd, bp, res, be).run()
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_blocks_with_expand_fused_match_reference(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole blocks (expand, depthwise, project) as one kernel, on CPU against REFERENCE."""
    monkeypatch.setattr(dw_pointwise, "MIN_PIXELS_PER_COUT", 0.0)
    monkeypatch.setattr(dw_pointwise, "ENABLED", True)
    monkeypatch.setattr(dw_pointwise, "EXPAND", True)
    monkeypatch.setattr(dw_pointwise, "EXPAND_MIN_BYTES", 0)
    model = block(*BLOCKS[name])
    c, hw = BLOCKS[name][:2]
    x = np.random.default_rng(hw).standard_normal((1, c, hw, hw)).astype(np.float32)
    ref = ember.Core().compile_model(model, "REFERENCE")
    cm = ember.Core().compile_model(model, "CPU")
    assert [n.count("+") for n in _fused_ops(cm)] == [2]
    np.testing.assert_allclose(cm([x])[cm.output(0)], ref([x])[ref.output(0)], rtol=1e-4, atol=1e-4)


def test_expand_rule_keeps_small_expansions_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The expand 1x1 joins only when the expanded tensor has EXPAND_MIN_BYTES (56x56x144 does,
    28x28x144 does not); depthwise + 1x1 are fused in both."""
    monkeypatch.setattr(dw_pointwise, "ENABLED", True)
    monkeypatch.setattr(dw_pointwise, "EXPAND", True)
    assert 56 * 56 * 144 * 4 >= dw_pointwise.EXPAND_MIN_BYTES > 28 * 28 * 144 * 4
    large = ember.Core().compile_model(block(24, 56, 6, 3, 1, "relu6", True), "CPU")
    small = ember.Core().compile_model(block(24, 28, 6, 3, 1, "relu6", True), "CPU")
    assert [n.count("+") for n in _fused_ops(large)] == [2]
    assert [n.count("+") for n in _fused_ops(small)] == [1]


@pytest.mark.skipif(not bf16_supported(), reason="no AVX512_BF16 on this host")
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[5]], ids=_id)
@pytest.mark.parametrize("io16", [False, True])
def test_bf16_expand_equals_the_three_kernels(case: tuple, io16: bool) -> None:
    """Under bf16 the whole block (expand 1x1, depthwise, 1x1) gives the bits of the three
    kernels: the expansion in bf16 stored f32, the depthwise output stored bf16 (with ``io16``
    X, Y and the residual bf16 in memory)."""
    n, h, w, c, k, s, pb, pe, co, (dw_epi, act, affine), pw_epi, biases, with_res, _, _ = case
    rng = np.random.default_rng(h * 7 + c + co)
    cin = 16 + c % 5
    geo = ConvGeometry(n, h, w, c, c, k, k, s, (1, 1), pb, pe, c)
    x = rng.standard_normal((n, h, w, cin), np.float32)
    x_in = to_bf16_bits(x) if io16 else x
    we = (rng.standard_normal((c, cin, 1, 1)) / np.sqrt(cin)).astype(np.float32)
    be = rng.standard_normal(c).astype(np.float32)
    wd = rng.standard_normal((c, 1, k, k), np.float32) / k
    wp = (rng.standard_normal((co, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    bd = rng.standard_normal(c).astype(np.float32) if biases else None
    bp = rng.standard_normal(co).astype(np.float32) if biases else None
    out_shape = (n, geo.oh, geo.ow, co)
    res = rng.standard_normal(out_shape, np.float32) if with_res else None
    res_in = to_bf16_bits(res) if io16 and res is not None else res

    def output() -> np.ndarray:
        return aligned_empty(out_shape, np.uint16) if io16 else aligned_empty(out_shape)

    fused = DwPointwise(geo, wd, wp, dw_epi, pw_epi, num_threads=2, activation=act, affine=affine, precision="bf16",
                        expand=(we, RELU6))
    y = output()
    fused.bind(x_in, y, bd, bp, res_in, be).run()
    ex = Conv2d(ConvGeometry(n, h, w, cin, c, 1, 1), we, RELU6, num_threads=2, precision="bf16")
    expanded = aligned_empty((n, h, w, c))
    ex.bind(x_in, expanded, be).run()
    dw = Conv2d(geo, wd, dw_epi, num_threads=2, activation=act, affine=affine, precision="bf16")
    mid = aligned_empty((n, geo.oh, geo.ow, c), np.uint16)
    dw.bind(expanded, mid, bd).run()
    pw = Conv2d(ConvGeometry(n, geo.oh, geo.ow, c, co, 1, 1), wp, pw_epi, num_threads=2, precision="bf16")
    want = output()
    pw.bind(mid, want, bp, res_in).run()
    np.testing.assert_array_equal(y, want)
