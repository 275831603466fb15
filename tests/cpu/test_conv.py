"""Convolution kernels (implicit GEMM and depthwise) vs a numpy reference, every ISA level."""

import numpy as np
import pytest

from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry, conv2d
from ember.devices.cpu.kernels.gemm import Epilogue, Precision, bf16_supported
from ember.devices.cpu.llvm.isa import host_isa, supported_levels
from ember.errors import EmberError

LEVELS = supported_levels()


def reference(x, w, bias, strides, dilations, pads_begin, pads_end, groups):
    """Direct convolution in float64 over NHWC x and OIHW w, written independently of the kernel."""
    n, h, wd, c = x.shape
    oc, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pads_begin[0], pads_end[0]), (pads_begin[1], pads_end[1]), (0, 0)))
    oh = (h + pads_begin[0] + pads_end[0] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + pads_begin[1] + pads_end[1] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((n, oh, ow, oc))
    ocg = oc // groups
    for g in range(groups):
        for ky in range(kh):
            for kx in range(kw):
                y0, x0 = ky * dilations[0], kx * dilations[1]
                patch = xp[:, y0:y0 + strides[0] * (oh - 1) + 1:strides[0],
                           x0:x0 + strides[1] * (ow - 1) + 1:strides[1], g * cg:(g + 1) * cg]
                out[..., g * ocg:(g + 1) * ocg] += patch @ w[g * ocg:(g + 1) * ocg, :, ky, kx].T.astype(np.float64)
    if bias is not None:
        out += bias
    return out


# (batch, h, w, cin, cout, kh, kw, strides, dilations, pads_begin, pads_end, groups)
CASES = [
    (1, 8, 8, 3, 5, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1),
    (2, 7, 9, 17, 33, 3, 3, (2, 2), (1, 1), (0, 1), (1, 0), 1),       # asymmetric padding, batch 2
    (1, 20, 20, 3, 8, 7, 7, (2, 2), (1, 1), (3, 3), (3, 3), 1),       # ResNet stem-like
    (1, 14, 14, 64, 64, 1, 1, (2, 2), (1, 1), (0, 0), (0, 0), 1),     # strided 1x1 (downsample)
    (1, 9, 9, 8, 12, 3, 3, (1, 1), (2, 2), (2, 2), (2, 2), 4),        # dilated, grouped
    (1, 1, 1, 1, 1, 1, 1, (1, 1), (1, 1), (0, 0), (0, 0), 1),
    (1, 1, 17, 1000, 3, 1, 3, (1, 1), (1, 1), (0, 1), (0, 1), 1),     # 1000 input channels
    (1, 3, 3, 17, 1000, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1),     # 1000 output channels
    (1, 6, 5, 4, 6, 2, 4, (3, 2), (1, 2), (0, 3), (2, 0), 2),
    (1, 7, 7, 4, 8, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 4),         # depth multiplier 2 (grouped path)
    (1, 12, 11, 15, 20, 7, 7, (1, 1), (1, 1), (3, 3), (3, 3), 1),     # taps merged into K = 735: f32 K chunks
    (1, 5, 5, 16, 16, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 16),      # depthwise
    (1, 10, 11, 17, 17, 5, 3, (2, 1), (2, 1), (2, 0), (1, 3), 17),    # depthwise, channel tail
    (1, 12, 12, 40, 40, 3, 3, (2, 2), (1, 1), (0, 0), (1, 1), 40),
    (2, 19, 23, 3, 3, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 3),       # depthwise, 3 channels, long rows
    (1, 4, 4, 8, 8, 5, 5, (1, 1), (1, 1), (2, 2), (2, 2), 8),         # depthwise, no interior columns
    (1, 12, 13, 20, 20, 9, 9, (1, 2), (1, 1), (4, 3), (4, 5), 20),    # depthwise, taps not unrolled
    (1, 9, 9, 1000, 1000, 3, 3, (2, 2), (1, 1), (1, 1), (1, 1), 1000),  # depthwise, 1000 channels
]

EPILOGUES = [Epilogue(), Epilogue.relu(), Epilogue.clamp(0.0, 6.0)]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"-s{c[7][0]}g{c[11]}")
def test_conv_matches_reference(level, case):
    n, h, w, c, oc, kh, kw, s, d, pb, pe, g = case
    rng = np.random.default_rng(h * 131 + c * 7 + oc + kh)
    x = rng.standard_normal((n, h, w, c), np.float32)
    wt = rng.standard_normal((oc, c // g, kh, kw), np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    epi = EPILOGUES[(h + c) % 3]
    for threads in (1, 2):
        y = conv2d(x, wt, bias, s, d, pb, pe, g, epi, num_threads=threads, isa=host_isa(level))
        want = epi.apply(reference(x, wt, bias, s, d, pb, pe, g))
        tol = 2e-5 * np.sqrt(c // g * kh * kw) + 1e-5
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"-s{c[7][0]}g{c[11]}")
def test_conv_bf16_matches_reference(level, case):
    """bf16 convolution = exact convolution of the bf16-rounded input and weights, within f32
    summation error; depthwise convolutions run in f32."""
    n, h, w, c, oc, kh, kw, s, d, pb, pe, g = case
    isa = host_isa(level)
    rng = np.random.default_rng(h * 131 + c * 7 + oc + kh)
    x = rng.standard_normal((n, h, w, c), np.float32)
    wt = rng.standard_normal((oc, c // g, kh, kw), np.float32)
    geo = ConvGeometry(n, h, w, c, oc, kh, kw, s, d, pb, pe, g)
    if not bf16_supported(isa):
        if not geo.depthwise:
            with pytest.raises(EmberError, match="AVX512_BF16"):
                Conv2d(geo, wt, isa=isa, precision="bf16")
        return
    bias = rng.standard_normal(oc).astype(np.float32)
    epi = EPILOGUES[(h + c) % 3]
    conv = Conv2d(geo, wt, epi, isa=isa, precision="bf16")
    assert conv.precision is (Precision.F32 if geo.depthwise else Precision.BF16)
    if geo.depthwise:
        xr, wr = x, wt
    else:
        ml_dtypes = pytest.importorskip("ml_dtypes")
        xr, wr = (t.astype(ml_dtypes.bfloat16).astype(np.float32) for t in (x, wt))
    for threads in (1, 2):
        y = Conv2d(geo, wt, epi, threads, isa, "bf16")(x, None, bias)
        want = epi.apply(reference(xr, wr, bias, s, d, pb, pe, g))
        tol = 2e-5 * np.sqrt(c // g * kh * kw) + 1e-5
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("groups", [1, 24])
@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_channel_slices_and_residual(level, groups, precision):
    """Input and output may be channel slices of wider NHWC buffers; residual add is fused."""
    if precision == "bf16" and not bf16_supported(host_isa(level)):
        pytest.skip("no AVX512_BF16 at this level")
    rng = np.random.default_rng(groups)
    xbig = rng.standard_normal((2, 9, 10, 40), np.float32)
    x = xbig[..., 5:29]  # 24 channels, pixel stride 40
    geo = ConvGeometry(2, 9, 10, 24, 24, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), groups)
    wt = rng.standard_normal((24, 24 // groups, 3, 3), np.float32)
    ybig = np.full((2, 9, 10, 50), 3.0, np.float32)
    y = ybig[..., 10:34]
    res = rng.standard_normal((2, 9, 10, 24)).astype(np.float32)
    Conv2d(geo, wt, Epilogue.relu(), isa=host_isa(level), precision=precision)(x, y, None, res)
    if precision == "bf16" and groups == 1:
        ml_dtypes = pytest.importorskip("ml_dtypes")
        x, wt = (t.astype(ml_dtypes.bfloat16).astype(np.float32) for t in (x, wt))
    want = np.maximum(reference(x, wt, None, (1, 1), (1, 1), (1, 1), (1, 1), groups) + res, 0)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    assert (ybig[..., :10] == 3).all() and (ybig[..., 34:] == 3).all()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_merged_taps_on_channel_slice(level, precision):
    """Few input channels fold the taps into K; the gather handles a non-dense input (a
    channel slice), dilation and padding on every side."""
    if precision == "bf16" and not bf16_supported(host_isa(level)):
        pytest.skip("no AVX512_BF16 at this level")
    rng = np.random.default_rng(11)
    xbig = rng.standard_normal((2, 13, 11, 7)).astype(np.float32)
    x = xbig[..., 2:5]
    wt = rng.standard_normal((20, 3, 5, 5)).astype(np.float32)
    for dil in (1, 2):
        geo = ConvGeometry(2, 13, 11, 3, 20, 5, 5, (2, 1), (dil, dil), (2, 3), (3, 2))
        conv = Conv2d(geo, wt, isa=host_isa(level), precision=precision)
        assert conv.packed.merged_taps == 25
        y = conv(x)
        xr, wr = x, wt
        if precision == "bf16":
            ml_dtypes = pytest.importorskip("ml_dtypes")
            xr, wr = (t.astype(ml_dtypes.bfloat16).astype(np.float32) for t in (x, wt))
        want = reference(xr, wr, None, (2, 1), (dil, dil), (2, 3), (3, 2), 1)
        np.testing.assert_allclose(y, want, rtol=2e-4, atol=2e-4)


def test_nan_propagates():
    x = np.ones((1, 5, 5, 16), np.float32)
    x[0, 2, 2, 3] = np.nan
    for groups in (1, 16):
        wt = np.ones((16, 16 // groups, 3, 3), np.float32)
        y = conv2d(x, wt, pads_begin=(1, 1), pads_end=(1, 1), groups=groups, epilogue=Epilogue.relu())
        want = reference(x, wt, None, (1, 1), (1, 1), (1, 1), (1, 1), groups)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(want))


def test_bad_geometry():
    with pytest.raises(EmberError):
        ConvGeometry(1, 4, 4, 6, 8, 3, 3, groups=4)
    with pytest.raises(EmberError):
        ConvGeometry(1, 2, 2, 4, 4, 5, 5)
    geo = ConvGeometry(1, 4, 4, 4, 4, 3, 3)
    with pytest.raises(EmberError):
        Conv2d(geo, np.ones((4, 4, 2, 2), np.float32))
    conv = Conv2d(geo, np.ones((4, 4, 3, 3), np.float32))
    with pytest.raises(EmberError):
        conv(np.ones((1, 4, 4, 5), np.float32))
