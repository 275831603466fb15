"""Depthwise convolution: the specialized small-kernel path (kernels up to 5x5: taps at constant
offsets, tasks of row bands x channel groups, zero rows for padding) against an independent
numpy reference on every ISA level, and MobileNet-style blocks (expand 1x1 -> depthwise ->
project 1x1, ReLU6 / HardSwish, residual) on the CPU device against REFERENCE."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.kernels import depthwise
from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry
from ember.devices.cpu.kernels.gemm import Epilogue
from ember.devices.cpu.llvm.isa import host_isa, supported_levels
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.errors import EmberError
from ember.graph.model import Model

LEVELS = supported_levels()


def reference(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, s: tuple[int, int], d: tuple[int, int],
              pb: tuple[int, int], pe: tuple[int, int]) -> np.ndarray:
    """Depthwise convolution in float64 over NHWC ``x`` and ``w[C, 1, KH, KW]``, tap by tap."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (pb[0], pe[0]), (pb[1], pe[1]), (0, 0)))
    oh = (h + pb[0] + pe[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    ow = (wd + pb[1] + pe[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    out = np.zeros((n, oh, ow, c))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky * d[0]:ky * d[0] + s[0] * (oh - 1) + 1:s[0], kx * d[1]:kx * d[1] + s[1] * (ow - 1) + 1:s[1]]
            out += patch * w[:, 0, ky, kx].astype(np.float64)
    return out + (0.0 if bias is None else bias)


# (batch, h, w, channels, kh, kw, strides, dilations, pads_begin, pads_end, bias, residual, channel slice)
CASES = [
    (1, 7, 7, 960, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), True, False, False),     # MobileNetV2 last block
    (1, 14, 14, 577, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), True, True, False),    # odd channels, residual
    (1, 14, 14, 96, 3, 3, (2, 2), (1, 1), (0, 0), (1, 1), True, False, False),    # TF-style asymmetric pad
    (2, 9, 11, 37, 5, 5, (1, 1), (1, 1), (2, 2), (2, 2), False, True, False),     # 5x5, batch 2, no bias
    (1, 15, 15, 40, 5, 5, (2, 2), (1, 1), (2, 2), (2, 2), True, False, True),     # 5x5 stride 2, slice input
    (1, 4, 4, 24, 5, 5, (1, 1), (1, 1), (2, 2), (2, 2), True, False, False),      # no interior at all
    (1, 1, 1, 33, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), True, False, False),      # 1x1 map
    (1, 13, 10, 19, 3, 3, (1, 2), (2, 2), (2, 1), (2, 3), True, True, True),      # dilated, mixed strides
    (1, 40, 33, 3, 3, 1, (1, 1), (1, 1), (1, 0), (1, 0), True, False, False),     # 3x1, 3 channels
    (1, 20, 20, 64, 1, 1, (2, 2), (1, 1), (0, 0), (0, 0), True, False, False),    # 1x1 depthwise
    (1, 56, 56, 16, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), True, True, False),     # many bands, 1 vector
    (1, 3, 80, 50, 5, 5, (1, 1), (1, 1), (2, 2), (2, 2), True, True, False),      # rows cut into segments
    (1, 6, 81, 24, 3, 3, (2, 2), (1, 1), (1, 1), (0, 0), True, False, True),      # segments, stride 2
]

# the epilogue of each case: clamp bounds, then the fused activation
EPILOGUES = {"none": (Epilogue(), "", None), "relu": (Epilogue.relu(), "", None),
             "relu6": (Epilogue.clamp(0.0, 6.0), "", None), "hswish": (Epilogue(), "hswish", None),
             "hswish-affine": (Epilogue(), "hswish", (0.75, -0.25)), "relu6-affine": (Epilogue.clamp(0.0, 6.0), "", (-1.5, 2.0))}
CASE_EPILOGUES = ["relu6", "hswish-affine", "none", "hswish", "relu6-affine", "none", "hswish", "relu", "hswish-affine",
                  "relu6", "hswish", "hswish-affine", "relu6"]


def hswish(x: np.ndarray) -> np.ndarray:
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _id(c: tuple) -> str:
    return CASE_EPILOGUES[CASES.index(c)] + f"-n{c[0]}-{c[1]}x{c[2]}x{c[3]}-k{c[4]}x{c[5]}-s{c[6][0]}{c[6][1]}-d{c[7][0]}" + \
        ("-b" if c[10] else "") + ("-r" if c[11] else "") + ("-slice" if c[12] else "")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_depthwise_matches_reference(level: str, case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    n, h, w, c, kh, kw, s, d, pb, pe, with_bias, with_res, sliced = case
    monkeypatch.setattr(depthwise, "SERIAL_BELOW", 0)  # these small layers split as large ones do
    assert kh * kw <= depthwise.DW_SPEC_MAX_TAPS  # the specialized path
    rng = np.random.default_rng(h * 31 + c)
    wide = rng.standard_normal((n, h, w, c + 5 if sliced else c), np.float32)
    x = wide[..., 2:2 + c] if sliced else wide
    wt = rng.standard_normal((c, 1, kh, kw), np.float32)
    bias = rng.standard_normal(c).astype(np.float32) if with_bias else None
    geo = ConvGeometry(n, h, w, c, c, kh, kw, s, d, pb, pe, c)
    res = rng.standard_normal(geo.output_shape, np.float32) if with_res else None
    epi, act, affine = EPILOGUES[CASE_EPILOGUES[CASES.index(case)]]
    want = epi.apply(reference(x, wt, bias, s, d, pb, pe) + (0.0 if res is None else res))
    if act:
        want = hswish(want)
    if affine:
        want = want * affine[0] + affine[1]
    for threads in (1, 2):
        conv = Conv2d(geo, wt, epi, num_threads=threads, isa=host_isa(level), activation=act, affine=affine)
        y = aligned_empty(geo.output_shape)
        y[:] = np.nan
        conv.bind(x, y, bias, res).run()
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.sqrt(kh * kw))


def test_activation_needs_the_specialized_kernel() -> None:
    with pytest.raises(EmberError):
        Conv2d(ConvGeometry(1, 9, 9, 8, 8, 7, 7, (1, 1), (1, 1), (3, 3), (3, 3), 8), np.ones((8, 1, 7, 7), np.float32),
               activation="hswish")
    with pytest.raises(EmberError):
        Conv2d(ConvGeometry(1, 9, 9, 8, 16, 1, 1), np.ones((16, 8, 1, 1), np.float32), activation="hswish")


def test_depthwise_nan_and_inf() -> None:
    x = np.ones((1, 6, 6, 20), np.float32)
    x[0, 2, 3, 5], x[0, 0, 0, 7] = np.nan, np.inf
    wt = np.ones((20, 1, 3, 3), np.float32)
    y = Conv2d(ConvGeometry(1, 6, 6, 20, 20, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 20), wt, num_threads=2)(x)
    want = reference(x, wt, None, (1, 1), (1, 1), (1, 1), (1, 1))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(y[np.isinf(want)], want[np.isinf(want)])


def _w(*shape: int, fan: int) -> np.ndarray:
    return (np.random.default_rng(sum(shape)).standard_normal(shape) / np.sqrt(fan)).astype(np.float32)


def _act(y, kind: str):
    return ops.clamp(y, 0.0, 6.0) if kind == "relu6" else ops.hswish(y)


def block(c: int, hw: int, expand: int, k: int, stride: int, act: str, residual: bool, affine: bool = False) -> Model:
    """expand 1x1 + act -> depthwise kxk + act [* scale + shift when ``affine``, as PP-LCNetV3's
    learnable affine] -> project 1x1 (+ input when ``residual``)."""
    x = ops.parameter([1, c, hw, hw], np.float32, name="x")
    e = c * expand
    y = _act(ops.add(ops.convolution(x, _w(e, c, 1, 1, fan=c), [1, 1], [0, 0], [0, 0], [1, 1]),
                     _w(1, e, 1, 1, fan=4)), act)
    y = ops.group_convolution(y, _w(e, 1, 1, k, k, fan=k * k), [stride] * 2, [k // 2] * 2, [k // 2] * 2, [1, 1])
    y = _act(ops.add(y, _w(1, e, 1, 1, fan=4)), act)
    if affine:
        y = ops.add(ops.multiply(np.float32(1.25), y), np.array(-0.5, np.float32))
    y = ops.add(ops.convolution(y, _w(c, e, 1, 1, fan=e), [1, 1], [0, 0], [0, 0], [1, 1]), _w(1, c, 1, 1, fan=4))
    if residual:
        y = ops.add(y, x)
    return Model([y], [x], "block")


BLOCKS = {
    "mbv2-7x7-relu6-res": (160, 7, 6, 3, 1, "relu6", True),
    "mbv2-14x14-s2-relu6": (64, 14, 6, 3, 2, "relu6", False),
    "lite0-5x5-relu6-res": (40, 14, 6, 5, 1, "relu6", True),
    "lcnet-5x5-hswish": (33, 12, 2, 5, 2, "hswish", False),
    "lcnet-3x3-hswish-res": (17, 9, 3, 3, 1, "hswish", True),
    "lcnetv3-3x3-hswish-affine": (24, 10, 2, 3, 1, "hswish", False, True),
    "lcnetv3-5x5-relu6-affine-res": (21, 11, 2, 5, 1, "relu6", True, True),
    "lcnetv3-5x5-hswish-affine-s2": (21, 11, 2, 5, 2, "hswish", False, True),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_blocks_match_reference(name: str) -> None:
    model = block(*BLOCKS[name])
    c, hw = BLOCKS[name][:2]  # (channels, size, expansion, kernel, stride, activation, residual[, affine])
    x = np.random.default_rng(hw).standard_normal((1, c, hw, hw)).astype(np.float32)
    outs = {}
    for device in ("REFERENCE", "CPU"):
        cm = ember.Core().compile_model(model, device)
        outs[device] = cm([x])[cm.output(0)]
        if device == "CPU":
            program = cm._executable.program
            assert not program.stats["fallbacks"]
            # the depthwise layer's tail (bias, clamp or HSwish, scalar affine) is in its kernel, the
            # expand convolution's HSwish in the implicit GEMM's epilogue: no elementwise op is left
            kinds = [op.type_name for op in program.ops]
            assert kinds.count("GroupConvolution") == 1
            assert not any(k.startswith("Eltwise") for k in kinds), kinds
    np.testing.assert_allclose(outs["CPU"], outs["REFERENCE"], rtol=1e-4, atol=1e-4)
