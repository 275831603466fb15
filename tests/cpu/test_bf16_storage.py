"""bf16 activations in memory (INFERENCE_PRECISION_HINT=bf16): the implicit GEMM reading X as
bf16 and storing Y as bf16 gives the very bits of the f32-in / f32-out kernel rounded (AVX512-BF16
and AMX), and networks of convolutions lowered with bf16 tensors between them stay within the bf16
tolerance of REFERENCE while f32 compiles keep no bf16 tensor at all."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry
from ember.devices.cpu.kernels.gemm import (
    Epilogue,
    Gemm,
    IGemmCall,
    bf16_supported,
    pack_b,
    round_to_bf16,
    to_bf16_bits,
    y_bf16_ok,
)
from ember.devices.cpu.llvm.isa import amx_supported, host_isa
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.errors import EmberError
from ember.graph.model import Model

pytestmark = pytest.mark.skipif(not bf16_supported(), reason="no AVX512_BF16 here")

LEVELS = ["avx512"] + (["amx"] if bf16_supported() and amx_supported() and host_isa("amx").amx_bf16 else [])

# (h, w, cin, cout, k, stride): tails of vectors and tiles, one-chunk and many-chunk K (bf16 convolutions
# take K up to 4608 in one chunk: 600 x 9 is many)
# AMX reads a half tile of bf16 X in place when its 16 rows are uniformly strided (1x1: 8x8 and
# 13x13's rows; 3x3 at 36 wide: 16 pixels inside an output row, the border taps and row wraps copied);
# the AVX-512 kernel reads a 3x3 tap of a 14-row tile in place when its rows are inside one output
# row and the image (56 and 28 wide: tiles fit rows; 36: some do, some wrap)
CASES = [(9, 11, 24, 40, 3, 1), (7, 7, 64, 33, 1, 1), (5, 6, 300, 70, 3, 1), (12, 10, 17, 16, 3, 2),
         (6, 6, 130, 96, 1, 2), (8, 8, 64, 48, 1, 1), (13, 13, 32, 40, 1, 1), (5, 36, 32, 32, 3, 1),
         (9, 40, 64, 24, 3, 2), (4, 56, 64, 64, 3, 1), (6, 28, 48, 32, 3, 1), (4, 5, 600, 40, 3, 1)]
EPILOGUES = [Epilogue(), Epilogue(0.0, 6.0), Epilogue(activation="hswish", affine=(1.5, -0.25)),
             Epilogue(activation="gelu_erf")]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_conv_bf16_in_and_out_are_the_f32_kernel_rounded(level: str, case: tuple) -> None:
    h, w, ci, co, k, st = case
    rng = np.random.default_rng(h * w + ci)
    geo = ConvGeometry(1, h, w, ci, co, k, k, (st, st), (1, 1), (k // 2, k // 2), (k // 2, k // 2), 1)
    wt = (rng.standard_normal((co, ci, k, k)) / np.sqrt(ci * k * k)).astype(np.float32)
    x = rng.standard_normal((1, h, w, ci)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    bias = rng.standard_normal(co).astype(np.float32)
    res = rng.standard_normal(geo.output_shape).astype(np.float32)
    x16 = aligned_empty(x.shape, np.uint16)
    x16[:] = to_bf16_bits(x)
    for epi in EPILOGUES:
        conv = Conv2d(geo, wt, epi, isa=host_isa(level), precision="bf16")
        want = conv(round_to_bf16(x), None, bias, res)  # f32 in memory: X rounded as it is packed
        got = aligned_empty(geo.output_shape)
        conv.bind(x16, got, bias, res).run()
        np.testing.assert_array_equal(got, want)
        if conv.y_bf16_ok():
            got16 = aligned_empty(geo.output_shape, np.uint16)
            conv.bind(x16, got16, bias, res).run()
            np.testing.assert_array_equal(got16, to_bf16_bits(want))
        else:
            assert level == "avx512" and ci > conv.packed.chunk


def test_bf16_output_needs_one_chunk_and_bf16_weights() -> None:
    many = pack_b(np.ones((2048, 32), np.float32), host_isa("avx512"), precision="bf16")
    with pytest.raises(EmberError, match="one chunk"):
        IGemmCall(many, m=4, x_geometry={}, ldx=2048, ldy=32, y_bf16=True)
    with pytest.raises(EmberError, match="bf16"):
        IGemmCall(pack_b(np.ones((8, 32), np.float32)), m=4, x_geometry={}, ldx=8, ldy=32, x_bf16=True)


# -- lowering: bf16 tensors between convolutions ---------------------------------------------

def _w(*shape: int) -> np.ndarray:
    fan = int(np.prod(shape[1:]))
    return (np.random.default_rng(sum(shape)).standard_normal(shape) / np.sqrt(fan)).astype(np.float32)


def _conv(x, cout: int, cin: int, k: int, stride: int = 1):
    y = ops.convolution(x, _w(cout, cin, k, k), [stride] * 2, [k // 2] * 2, [k // 2] * 2, [1, 1])
    return ops.add(y, _w(1, cout, 1, 1) * 0.1)


def bottleneck(c: int = 64, mid: int = 32, hw: int = 14) -> Model:
    """ResNet-50's block: 1x1 -> ReLU -> 3x3 -> ReLU -> 1x1 + input -> ReLU, then a HSwish 1x1
    whose output two convolutions read, and a max pool (an f32 reader) at the end."""
    x = ops.parameter([1, c, hw, hw], np.float32, name="x")
    y = ops.relu(_conv(x, mid, c, 1))
    y = ops.relu(_conv(y, mid, mid, 3))
    y = ops.relu(ops.add(_conv(y, c, mid, 1), x))
    z = ops.hswish(_conv(y, mid, c, 1))
    z = ops.add(_conv(z, c, mid, 3, 2), _conv(z, c, mid, 1, 2))
    return Model([ops.max_pool(z, [1, 1], [1, 1], [0, 0], [0, 0], [2, 2]).output(0)], [x], "bottleneck")


def _u16_tensors(cm) -> int:
    return sum(t.dtype == np.uint16 for t in cm._executable.program.tensors)


def test_bottleneck_bf16_storage_matches_reference() -> None:
    model = bottleneck()
    x = np.random.default_rng(0).standard_normal((1, 64, 14, 14)).astype(np.float32)
    ref = ember.Core().compile_model(model, "REFERENCE")([x])[0]
    cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    # conv1 -> conv2, conv2 -> conv3, the block's output -> the HSwish 1x1, that one -> both strided
    # convolutions, and one of those as the other's residual: bf16 in memory; the pool reads f32
    assert _u16_tensors(cm) == 5
    assert not cm._executable.program.stats["fallbacks"]
    got = cm([x])[0]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
    f32 = ember.Core().compile_model(model, "CPU")
    assert _u16_tensors(f32) == 0
    np.testing.assert_allclose(f32([x])[0], ref, rtol=1e-4, atol=1e-4)


def inverted_residual(c: int = 24, expand: int = 4, hw: int = 12, k: int = 3) -> Model:
    """MobileNetV2's block twice: 1x1 expand -> ReLU6 -> depthwise kxk -> ReLU6 -> 1x1 project
    (+ input in the second)."""
    x = ops.parameter([1, c, hw, hw], np.float32, name="x")
    e = c * expand
    y = x
    for i in range(2):
        z = ops.clamp(_conv(y, e, c, 1), 0.0, 6.0)
        z = ops.group_convolution(z, _w(e, 1, 1, k, k), [1, 1], [k // 2] * 2, [k // 2] * 2, [1, 1])
        z = ops.clamp(ops.add(z, _w(1, e, 1, 1) * 0.1), 0.0, 6.0)
        z = _conv(z, c, e, 1)
        y = ops.add(z, y) if i else z
    return Model([y], [x], "inverted_residual")


@pytest.mark.parametrize("k", [3, 5])
def test_inverted_residual_bf16_storage_matches_reference(k: int) -> None:
    model = inverted_residual(k=k)
    x = np.random.default_rng(k).standard_normal((1, 24, 12, 12)).astype(np.float32)
    ref = ember.Core().compile_model(model, "REFERENCE")([x])[0]
    cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    # per block the depthwise output, and the first projection (read by the second expansion and
    # as the second projection's residual); the expanded tensors stay f32 for the depthwise
    # kernels (DW_BF16_MAX_TAPS); a depthwise layer fused with its projection (dw_pointwise) stores
    # no output at all
    fused = sum("+" in op.name for op in cm._executable.program.ops)
    assert _u16_tensors(cm) == 3 - fused
    got = cm([x])[0]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("level", LEVELS)
def test_conv_bf16_residual(level: str) -> None:
    rng = np.random.default_rng(12)
    for h, w, ci, co, k in [(9, 11, 24, 40, 3), (7, 7, 64, 33, 1), (5, 6, 300, 70, 3)]:
        geo = ConvGeometry(1, h, w, ci, co, k, k, (1, 1), (1, 1), (k // 2, k // 2), (k // 2, k // 2), 1)
        wt = (rng.standard_normal((co, ci, k, k)) / np.sqrt(ci * k * k)).astype(np.float32)
        x = rng.standard_normal((1, h, w, ci)).astype(np.float32)
        res = rng.standard_normal(geo.output_shape).astype(np.float32)
        r16 = aligned_empty(geo.output_shape, np.uint16)
        r16[:] = to_bf16_bits(res)
        conv = Conv2d(geo, wt, Epilogue.relu(), isa=host_isa(level), precision="bf16")
        want = conv(x, None, None, round_to_bf16(res))
        got = aligned_empty(geo.output_shape)
        conv.bind(x, got, None, r16).run()
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("level", LEVELS)
def test_pointwise_bf16_batches_and_row_tails(level: str) -> None:
    """1x1 convolutions whose bf16 rows AMX reads in place without a row table: batches (the
    images' rows one after another), a last tile of a few rows (copied, not read past X), a
    strided X (a channel slice of a wider tensor), against the f32-in kernel bit for bit."""
    rng = np.random.default_rng(17)
    for n, h, w, ci, co, ldx in [(2, 7, 9, 64, 40, 64), (3, 5, 5, 32, 16, 32), (1, 6, 7, 32, 48, 96)]:
        geo = ConvGeometry(n, h, w, ci, co, 1, 1, (1, 1), (1, 1), (0, 0), (0, 0), 1)
        wt = (rng.standard_normal((co, ci, 1, 1)) / np.sqrt(ci)).astype(np.float32)
        wide = rng.standard_normal((n, h, w, ldx)).astype(np.float32)
        x = np.ascontiguousarray(wide[..., :ci])
        bias = rng.standard_normal(co).astype(np.float32)
        conv = Conv2d(geo, wt, Epilogue.relu(), isa=host_isa(level), precision="bf16")
        want = conv(round_to_bf16(x), None, bias)
        x16 = aligned_empty(wide.shape, np.uint16)
        x16[:] = to_bf16_bits(wide)
        got = aligned_empty(geo.output_shape, np.uint16)
        conv.bind(x16[..., :ci], got, bias).run()
        np.testing.assert_array_equal(got, to_bf16_bits(want))


# (n, h, w, cin, cout, kh, kw, stride, dilation, pads_begin, pads_end, groups, ldx): the bf16 kernel
# finds each tile's taps from the geometry (batches, groups, dilations, asymmetric padding, a
# channel slice of a wider tensor, tiles wrapping rows and images)
GEOMETRIES = [(2, 9, 15, 32, 48, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1, 32),
              (2, 8, 20, 32, 32, 3, 3, (2, 1), (1, 2), (0, 2), (1, 1), 2, 48),
              (1, 11, 30, 24, 16, 5, 3, (1, 2), (2, 1), (2, 0), (2, 1), 1, 40),
              (3, 4, 5, 64, 24, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 2, 80),
              (1, 6, 33, 64, 32, 1, 3, (1, 1), (1, 1), (0, 1), (0, 1), 1, 64)]


@pytest.mark.parametrize("case", GEOMETRIES, ids=lambda c: "x".join(map(str, c[:7])))
def test_conv_bf16_taps_from_the_geometry(case: tuple) -> None:
    n, h, w, ci, co, kh, kw, st, dil, pb, pe, groups, ldx = case
    rng = np.random.default_rng(n * h + w)
    geo = ConvGeometry(n, h, w, ci, co, kh, kw, st, dil, pb, pe, groups)
    wt = (rng.standard_normal((co, ci // groups, kh, kw)) / np.sqrt(ci * kh * kw)).astype(np.float32)
    wide = rng.standard_normal((n, h, w, ldx)).astype(np.float32)
    bias = rng.standard_normal(co).astype(np.float32)
    conv = Conv2d(geo, wt, Epilogue.relu(), isa=host_isa("avx512"), precision="bf16")
    want = conv(np.ascontiguousarray(round_to_bf16(wide)[..., :ci]), None, bias)  # f32 X, packed rows
    x16 = aligned_empty(wide.shape, np.uint16)
    x16[:] = to_bf16_bits(wide)
    got = aligned_empty(geo.output_shape)
    conv.bind(x16[..., :ci], got, bias).run()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("level", LEVELS[:1])
def test_depthwise_bf16_in_and_out(level: str) -> None:
    rng = np.random.default_rng(11)
    for h, w, c, k, st in [(14, 14, 96, 3, 1), (15, 15, 40, 5, 2), (7, 7, 37, 3, 1)]:
        geo = ConvGeometry(1, h, w, c, c, k, k, (st, st), (1, 1), (k // 2, k // 2), (k // 2, k // 2), c)
        wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
        x = rng.standard_normal((1, h, w, c)).astype(np.float32)
        bias = rng.standard_normal(c).astype(np.float32)
        x16 = aligned_empty(x.shape, np.uint16)
        x16[:] = to_bf16_bits(x)
        for act in ("", "hswish"):
            conv = Conv2d(geo, wt, Epilogue() if act else Epilogue(0.0, 6.0), isa=host_isa(level), precision="bf16",
                          activation=act)
            want = conv(round_to_bf16(x), None, bias)
            got = aligned_empty(geo.output_shape, np.uint16)
            conv.bind(x16, got, bias).run()
            np.testing.assert_array_equal(got, to_bf16_bits(want))


@pytest.mark.parametrize("level", LEVELS)
def test_gemm_bf16_a_c_and_residual(level: str) -> None:
    rng = np.random.default_rng(13)
    for m, k, n in [(37, 64, 70), (128, 384, 96), (5, 1536, 40)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        res = rng.standard_normal((m, n)).astype(np.float32)
        gemm_ = Gemm(pack_b(b, host_isa(level), precision="bf16"), m, Epilogue(activation="gelu_tanh"))
        want = gemm_(round_to_bf16(a), aligned_empty((m, n)), None, round_to_bf16(res))
        a16, r16 = aligned_empty((m, k), np.uint16), aligned_empty((m, n), np.uint16)
        a16[:], r16[:] = to_bf16_bits(a), to_bf16_bits(res)
        got = aligned_empty((m, n), np.uint16)
        if not y_bf16_ok(gemm_.packed):
            got = aligned_empty((m, n))
            gemm_.bind(a16, got, None, r16).run()
            np.testing.assert_array_equal(got, want)
            continue
        gemm_.bind(a16, got, None, r16).run()
        np.testing.assert_array_equal(got, to_bf16_bits(want))


def ffn(d: int = 48, hidden: int = 192, tokens: int = 9) -> Model:
    """A transformer's feed-forward block twice: the up-projection's GELU output is read by the
    down-projection only (bf16); the down-projection's output by a residual Add (f32)."""
    x = ops.parameter([1, tokens, d], np.float32, name="x")
    y = x
    for _ in range(2):  # the down-projection's weights transposed, as PyTorch's Linear exports them
        h = ops.gelu(ops.add(ops.matmul(y, _w(d, hidden), False, False), _w(hidden) * 0.1))
        y = ops.add(ops.add(ops.matmul(h, _w(d, hidden), False, True), _w(d) * 0.1), y)
    return Model([y], [x], "ffn")


def test_ffn_bf16_storage_matches_reference() -> None:
    model = ffn()
    x = np.random.default_rng(5).standard_normal((1, 9, 48)).astype(np.float32)
    ref = ember.Core().compile_model(model, "REFERENCE")([x])[0]
    cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    assert _u16_tensors(cm) == 2
    got = cm([x])[0]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
    assert _u16_tensors(ember.Core().compile_model(model, "CPU")) == 0


# -- max pooling on bf16 (ResNet-50's pool after the stem) -------------------------------------

# (n, h, w, c, kernel, stride, pads_begin, pads_end): channel tails, blocks of 4 vectors, a
# window wholly in the padding (the lowest float, which rounds to -inf as a reader would round it)
POOL_CASES = [(1, 20, 18, 64, 3, 2, 1, 1), (2, 9, 7, 37, 3, 2, 1, 0), (1, 6, 5, 3, 2, 1, 0, 1),
              (1, 6, 6, 80, 2, 2, 2, 0)]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_bf16_max_pool_is_the_f32_pool_rounded(case: tuple, threads: int) -> None:
    from ember.devices.cpu.kernels.pool import pool2d

    n, h, w, c, k, s, pb, pe = case
    x = np.random.default_rng(c).standard_normal((n, h, w, c)).astype(np.float32)
    x[0, 0, 0, :2] = [-0.0, np.nan]
    x16 = aligned_empty((n, h, w, c), dtype=np.uint16)
    x16[:] = to_bf16_bits(x)
    oh, ow = (h + pb + pe - k) // s + 1, (w + pb + pe - k) // s + 1
    y, y16 = aligned_empty((n, oh, ow, c)), aligned_empty((n, oh, ow, c), dtype=np.uint16)
    args = ((k, k), (s, s), (1, 1), (pb, pb), (pe, pe), "max", False, threads)
    pool2d(round_to_bf16(x), y, *args).run()
    pool2d(x16, y16, *args).run()
    np.testing.assert_array_equal(y16, to_bf16_bits(y))
    with pytest.raises(EmberError, match="bf16"):
        pool2d(x16, y16, (k, k), (s, s), (1, 1), (pb, pb), (pe, pe), "avg", False, threads)


def stem_pool(hw: int = 30) -> Model:
    """ResNet-50's entry: a 7x7/2 stem -> ReLU -> max pool 3x3/2 -> two 1x1 convolutions, one
    the other's residual."""
    x = ops.parameter([1, 3, hw, hw], np.float32, name="x")
    y = ops.relu(_conv(x, 64, 3, 7, 2))
    p = ops.max_pool(y, [2, 2], [1, 1], [1, 1], [1, 1], [3, 3])
    z = ops.add(_conv(ops.relu(_conv(p.output(0), 32, 64, 1)), 64, 32, 1), _conv(p.output(0), 64, 64, 1))
    return Model([ops.relu(z)], [x], "stem_pool")


@pytest.mark.parametrize("threads", ["1", "2"])
def test_stem_max_pool_bf16_storage(threads: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.devices.cpu.lowering import conv

    model = stem_pool()
    x = np.random.default_rng(1).standard_normal((1, 3, 30, 30)).astype(np.float32)
    cfg = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads}
    cm = ember.Core().compile_model(model, "CPU", cfg)
    monkeypatch.setattr(conv, "BF16_MAX_POOL", False)
    f32_pool = ember.Core().compile_model(model, "CPU", cfg)
    # the stem's and the pool's outputs too are bf16 now: the same bits reach the 1x1 layers
    assert _u16_tensors(cm) == _u16_tensors(f32_pool) + 2
    assert not cm._executable.program.stats["fallbacks"]
    got = cm([x])[0]
    np.testing.assert_array_equal(got, f32_pool([x])[0])
    ref = ember.Core().compile_model(model, "REFERENCE")([x])[0]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
