"""Depthwise border rows (``border_row_sets`` in ``kernels/depthwise.py``): on maps a few rows
high (PP-OCR rec's 5x5 layers on 12x80, 6x80 and 3x80) the output rows whose kernel reaches
into the padding run loops of their own without those kernel rows. Checked against an
independent float64 numpy convolution, one and two threads, every epilogue the PP-OCR layers
use, and the choice of row sets itself."""

from __future__ import annotations

import numpy as np
import pytest

from ember.devices.cpu.kernels import depthwise
from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry
from ember.devices.cpu.kernels.gemm import Epilogue
from ember.devices.cpu.llvm.isa import host_isa
from ember.devices.cpu.runtime.memory import aligned_empty


def _numpy_depthwise(x: np.ndarray, w: np.ndarray, bias: np.ndarray, s: tuple[int, int], d: tuple[int, int],
                     pb: tuple[int, int], pe: tuple[int, int]) -> np.ndarray:
    """NHWC depthwise convolution in float64 over an explicitly zero-padded input."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (pb[0], pe[0]), (pb[1], pe[1]), (0, 0)))
    oh = (h + pb[0] + pe[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    ow = (wd + pb[1] + pe[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    out = np.zeros((n, oh, ow, c)) + bias
    for oy in range(oh):
        for ox in range(ow):
            win = xp[:, oy * s[0]:oy * s[0] + d[0] * (kh - 1) + 1:d[0], ox * s[1]:ox * s[1] + d[1] * (kw - 1) + 1:d[1]]
            out[:, oy, ox] += np.einsum("nyxc,cyx->nc", win, w[:, 0].astype(np.float64))
    return out


# (h, w, channels, k, strides, dilations, pads_begin, pads_end, epilogue)
CASES = [
    (12, 80, 240, 5, (1, 1), (1, 1), (2, 2), (2, 2), "hswish-affine"),  # rec's 12x80 layers
    (12, 80, 240, 5, (2, 1), (1, 1), (2, 2), (2, 2), "hswish-affine"),  # 12x80 -> 6x80
    (6, 80, 480, 5, (2, 1), (1, 1), (2, 2), (2, 2), "hswish-affine"),   # 6x80 -> 3x80
    (3, 80, 480, 5, (1, 1), (1, 1), (2, 2), (2, 2), "hswish-affine"),   # 3 rows: 40% of taps padding
    (3, 21, 37, 5, (1, 1), (1, 1), (2, 2), (2, 2), "relu6"),             # odd channels (masked part)
    (2, 9, 16, 5, (1, 1), (1, 1), (2, 2), (2, 2), "none"),               # every row reaches both borders
    (5, 17, 24, 5, (1, 1), (2, 2), (4, 4), (4, 4), "relu"),              # dilated rows
    (4, 10, 20, 3, (1, 1), (1, 1), (1, 1), (1, 1), "hswish"),            # 3x3 on 4 rows
    (7, 12, 32, 3, (2, 2), (1, 1), (0, 0), (1, 1), "none"),              # asymmetric pad: bottom only
    (1, 30, 48, 3, (1, 1), (1, 1), (1, 1), (1, 1), "relu6"),             # one row: both borders at once
]
EPILOGUES = {"none": (Epilogue(), "", None), "relu": (Epilogue.relu(), "", None),
             "relu6": (Epilogue.clamp(0.0, 6.0), "", None), "hswish": (Epilogue(), "hswish", None),
             "hswish-affine": (Epilogue(), "hswish", (0.75, -0.25))}


def _id(c: tuple) -> str:
    return f"{c[0]}x{c[1]}x{c[2]}-k{c[3]}-s{c[4][0]}{c[4][1]}-d{c[5][0]}-p{c[6][0]}{c[7][0]}-{c[8]}"


def _run(case: tuple, threads: int, wt: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, Conv2d]:
    h, w, c, k, s, d, pb, pe, epi_name = case
    rng = np.random.default_rng(h * 100 + w + c)
    x = rng.standard_normal((1, h, w, c), np.float32)
    if wt is None:
        wt = (rng.standard_normal((c, 1, k, k)) / k).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    epi, act, affine = EPILOGUES[epi_name]
    want = epi.apply(_numpy_depthwise(x, wt, bias, s, d, pb, pe))
    if act:
        want = want * np.clip(want + 3.0, 0.0, 6.0) / 6.0
    if affine:
        want = want * affine[0] + affine[1]
    geo = ConvGeometry(1, h, w, c, c, k, k, s, d, pb, pe, c)
    conv = Conv2d(geo, wt, epi, num_threads=threads, isa=host_isa(), activation=act, affine=affine)
    y = aligned_empty(geo.output_shape)
    y[:] = np.nan
    conv.bind(x, y, bias).run()
    return y, want, conv


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_border_rows_match_numpy(case: tuple, threads: int) -> None:
    y, want, _ = _run(case, threads)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * case[3])


@pytest.mark.parametrize("case", CASES[:6], ids=_id)
def test_same_values_without_row_sets(case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Skipping the padding rows' taps changes no value: they added zeros."""
    with_sets, _, conv = _run(case, 1)
    assert conv._row_sets  # these layers do get loops of their own
    monkeypatch.setattr(depthwise, "ROW_SETS_FROM", 2.0)
    without, _, conv = _run(case, 1)
    assert conv._row_sets == ()
    np.testing.assert_array_equal(with_sets, without)


def test_row_sets_chosen_by_the_padding_share() -> None:
    f = depthwise.border_row_sets
    assert f(3, 3, 5, 1, 1, 2) == ((0, 3), (1, 4), (2, 5))  # 3x80: every row is a border row
    assert f(12, 12, 5, 1, 1, 2) == ((0, 3), (0, 4), (1, 5), (2, 5))
    assert f(3, 6, 5, 2, 1, 2) == ((0, 4), (2, 5))  # 6 -> 3 rows, stride 2
    assert f(112, 112, 3, 1, 1, 1) == ()  # 2 of 336 kernel rows: not worth a copy of the loops
    assert f(14, 14, 3, 1, 1, 1) == ((0, 2), (1, 3))  # 2 of 42: 4.8%
    assert f(1, 1, 3, 1, 1, 5) == ()  # no kernel row inside the image: the general loops


def test_padding_times_infinite_weight_stays_nan() -> None:
    """An inf weight on a padding row makes REFERENCE's border outputs NaN (0 * inf): those
    layers keep reading the zero rows."""
    case = (3, 16, 16, 5, (1, 1), (1, 1), (2, 2), (2, 2), "none")
    wt = (np.random.default_rng(3).standard_normal((16, 1, 5, 5)) / 5).astype(np.float32)
    wt[:, 0, 0, 2] = np.inf
    with np.errstate(invalid="ignore"):
        y, want, conv = _run(case, 1, wt)
    assert conv._row_sets == ()
    assert np.isnan(want).any()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
