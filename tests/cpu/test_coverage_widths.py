"""The last reference-kernel gaps of issue 13's one-op probes (``benchmarks/native_coverage.py``),
closed natively: Pad and DepthToSpace/SpaceToDepth of 1-, 2- and 8-byte items (the movers are
byte-width generic), CumSum of f64 and of 1-/2-byte integers (wrapping as numpy does), TopK of
f64 and i64 (64-bit keys), and the f64 compute kernels. Each case runs on CPU against REFERENCE
from one table (odd sizes, NaN/inf, -0, ties, empty tensors) and must have no op on a reference
kernel."""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest
from native_case import native_case  # noqa: E402

import ember.opset as ops

RNG = np.random.default_rng(1316)
BF16 = np.dtype(ml_dtypes.bfloat16)
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 1.0, -1.0, 1e300, -1e-300], np.float64)


def _data(shape: tuple[int, ...], dtype: np.dtype | type, special: bool = True) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return RNG.integers(0, 2, shape).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = max(int(info.min), -1000), min(int(info.max), 1000)
        return RNG.integers(lo, hi + 1, shape).astype(dt)
    a = (RNG.standard_normal(shape) * 3).astype(dt)
    if special and a.size:
        flat = a.reshape(-1)
        k = min(flat.size, SPECIAL.size)
        with np.errstate(over="ignore"):  # 1e300 is inf in f16/bf16
            flat[RNG.permutation(flat.size)[:k]] = SPECIAL[:k].astype(dt)
    return a


def _check(fn: Callable[..., object], inputs: list[np.ndarray], rtol: float = 0.0) -> None:
    """CPU against REFERENCE (exact unless ``rtol``), with no op on a reference kernel."""
    model, want, cm = native_case(fn, inputs)
    outs = model.outputs
    fallbacks = cm._executable.program.stats["fallbacks"]
    assert not fallbacks, f"ran on reference kernels: {fallbacks}"
    got = cm(inputs)
    for k in range(len(outs)):
        g, w = np.asarray(got[k]), np.asarray(want[k])
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        if rtol and w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)
        else:
            np.testing.assert_array_equal(g.view(f"u{g.dtype.itemsize}") if g.dtype == BF16 else g,
                                          w.view(f"u{w.dtype.itemsize}") if w.dtype == BF16 else w)


def _i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


#: item types by width: each case of a table runs one type of each width, rotating through them
BY_WIDTH = [[np.uint8, np.bool_, np.int8], [np.float16, BF16, np.int16], [np.float64, np.int64]]


def _rotate(cases: list, groups: list[list]) -> list[tuple]:
    """(case, type) pairs: every case with one type of each group, the k-th case the k-th type."""
    return [(c, g[k % len(g)]) for k, c in enumerate(cases) for g in groups]


def _pair_id(p: object) -> str:
    return np.dtype(p).name if not isinstance(p, tuple) else str(p)

PAD = [  # (shape, begin, end, mode, value)
    ((5, 6), (1, 0), (0, 2), "constant", 7),
    ((3, 4, 5), (0, 2, 1), (1, 0, 3), "reflect", None),
    ((2, 3, 4, 7), (1, 1, 2, 3), (0, 2, 1, 5), "edge", None),
    ((2, 3, 4, 7), (0, 1, 3, 2), (1, 0, 2, 4), "symmetric", None),
    ((4, 9), (-1, 2), (1, -3), "constant", 1),
    ((33,), (5,), (17,), "constant", None),
    ((0, 5), (1, 2), (1, 0), "constant", 3),
    ((2, 3, 4, 3, 5), (0, 1, 2, 0, 1), (1, 0, 1, 2, 3), "reflect", None),  # 5-D: outer axes merged
    ((2, 1, 3, 2, 2, 3), (1, 0, 1, 0, 1, 1), (0, 1, 1, 1, 0, 2), "edge", None),
]


@pytest.mark.parametrize("case,dtype", _rotate(PAD, BY_WIDTH),
                         ids=lambda c: _pair_id(c) if not isinstance(c, tuple) else f"{c[3]}-{len(c[0])}d")
def test_pad_any_width(case: tuple, dtype: type) -> None:
    shape, begin, end, mode, value = case
    val = None if value is None else np.array(value).astype(dtype)
    _check(lambda x: ops.pad(x, _i64(*begin), _i64(*end), mode, val), [_data(shape, dtype)])


DEPTH = [((1, 8, 3, 3), "blocks_first", 2), ((2, 18, 2, 5), "depth_first", 3), ((0, 4, 2, 2), "blocks_first", 2)]


@pytest.mark.parametrize("case,dtype", _rotate(DEPTH, BY_WIDTH),
                         ids=lambda c: _pair_id(c) if not isinstance(c, tuple) else f"{c[1]}-{c[2]}-{c[0]}")
def test_depth_space_any_width(case: tuple, dtype: type) -> None:
    shape, mode, bs = case
    _check(lambda x: ops.depth_to_space(x, mode, bs), [_data(shape, dtype)])
    n, c, h, w = shape
    _check(lambda x: ops.space_to_depth(x, mode, bs), [_data((n, c // (bs * bs), h * bs, w * bs), dtype)])


CUMSUM = [  # (shape, axis, exclusive, reverse)
    ((5, 6), 1, False, False), ((7, 33), 1, True, False), ((3, 40, 17), 1, False, True), ((37,), 0, True, True),
    ((4, 3, 50), -1, False, False), ((2, 0, 3), 1, False, False)]


@pytest.mark.parametrize("case,dtype", _rotate(CUMSUM, [[np.float64], [np.uint8, np.int8], [np.uint16, np.int16, np.uint32,
                                                                                          np.uint64]]),
                         ids=lambda c: _pair_id(c) if not isinstance(c, tuple) else f"{c[0]}-a{c[1]}-x{int(c[2])}r{int(c[3])}")
def test_cumsum_f64_and_small_integers(case: tuple, dtype: type) -> None:
    shape, axis, exclusive, reverse = case
    x = _data(shape, dtype)  # integers wrap as numpy's do; f64 has NaN/inf
    _check(lambda p: ops.cumsum(p, np.int64(axis), exclusive, reverse), [x], rtol=1e-13)


TOPK = [  # (shape, axis, k, mode, sort) -- small k, heap, radix sort
    ((4, 50), 1, 5, "max", "value"), ((3, 17), 1, 3, "min", "index"), ((6, 300, 3), 1, 33, "max", "value"),
    ((2, 90), 1, 60, "min", "value"), ((2, 90), -1, 90, "max", "index"), ((33,), 0, 1, "min", "value"),
    ((0, 9), 1, 2, "max", "value")]


@pytest.mark.parametrize("case,dtype", _rotate(TOPK, [[np.float64], [np.int64]]),
                         ids=lambda c: _pair_id(c) if not isinstance(c, tuple) else f"{c[0]}-k{c[2]}-{c[3]}-{c[4]}")
def test_topk_64_bit(case: tuple, dtype: type) -> None:
    shape, axis, k, mode, sort = case
    index_type = "i64" if TOPK.index(case) % 2 else "i32"
    x = _data(shape, dtype)
    if x.size and np.dtype(dtype).kind == "f":
        x.reshape(-1)[::7] = 2.5  # ties: the stable order decides
    elif x.size:
        x.reshape(-1)[::5] = np.iinfo(np.int64).min if mode == "min" else np.iinfo(np.int64).max
    _check(lambda p: list(ops.topk(p, np.int64(k), axis, mode, sort, index_type).outputs()), [x])


RESIZE = [  # (shape, sizes of the last axes, mode, coordinate mode)
    ((1, 2, 5, 5), (10, 10), "linear", "half_pixel"), ((2, 3, 7, 4), (3, 9), "linear_onnx", "align_corners"),
    ((1, 5, 6, 6), (13, 5), "cubic", "asymmetric"), ((1, 2, 5, 7), (9, 3), "nearest", "tf_half_pixel_for_nn"),
    ((2, 9, 11), (23,), "linear_onnx", "pytorch_half_pixel"), ((1, 9, 4, 4), (8, 8), "cubic", "half_pixel")]


@pytest.mark.parametrize("case", RESIZE, ids=lambda c: f"{c[2]}-{c[3]}-{len(c[0])}d")
def test_interpolate_f64(case: tuple) -> None:
    shape, sizes, mode, coord = case
    rank = len(shape)
    axes = _i64(*range(rank - len(sizes), rank))
    # NaN/inf only through nearest: the reference's linear/cubic weight matrices spread a NaN over
    # whole rows (0 * NaN), OpenVINO's kernels (and ember's f32 and f64 ones) over its taps only
    x = _data(shape, np.float64, special=mode == "nearest")
    _check(lambda p: ops.interpolate(p, _i64(*sizes), mode, "sizes", coordinate_transformation_mode=coord, axes=axes),
           [x], rtol=1e-12)


# -- f64 compute: SoftMax, LogSoftmax, MVN, AvgPool, MatMul on their f64 kernels -------------------

ROWS = [  # (builder name, shape, axis or axes)
    ("softmax", (3, 17), 1), ("softmax", (4, 5, 6), 1), ("softmax", (2, 3, 33), -1), ("softmax", (7,), 0),
    ("log_softmax", (3, 17), 1), ("log_softmax", (2, 9, 5), 0), ("softmax", (0, 5), 1),
    ("mvn", (3, 17), (1,)), ("mvn", (2, 3, 4, 5), (2, 3)), ("mvn", (2, 3, 4, 5), (1, 2)), ("mvn", (4, 1), (1,))]


@pytest.mark.parametrize("case", ROWS, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_rows_f64(case: tuple) -> None:
    name, shape, axis = case
    x = _data(shape, np.float64, special=ROWS.index(case) % 2 == 1)  # NaN/inf in every other case
    if name == "mvn":
        for variance, mode in ((True, "inside_sqrt"), (True, "outside_sqrt"), (False, "inside_sqrt")):
            _check(lambda p: ops.mvn(p, _i64(*axis), variance, 1e-5, mode), [x], rtol=1e-12)
    else:
        _check(lambda p: getattr(ops, name)(p, axis), [x], rtol=1e-12)


POOLS = [  # (shape, kernel, strides, pads begin, pads end, exclude pad, rounding, dilations)
    ((1, 2, 6, 6), [2, 2], [2, 2], [0, 0], [0, 0], True, "floor", None),
    ((2, 3, 7, 9), [3, 3], [1, 2], [1, 1], [1, 1], False, "floor", None),
    ((2, 3, 7, 9), [3, 3], [2, 2], [1, 0], [1, 2], True, "ceil", None),
    ((1, 4, 11), [4], [3], [2], [0], False, "ceil", None),
    ((1, 2, 5, 6, 7), [2, 3, 2], [2, 1, 2], [0, 1, 1], [1, 1, 0], True, "floor", None),
    ((1, 2, 9, 9), [3, 3], [2, 2], [0, 0], [0, 0], True, "floor", [2, 2]),
    ((1, 1, 4, 4), [3, 3], [3, 3], [0, 0], [0, 0], True, "ceil", None)]


@pytest.mark.parametrize("case", POOLS, ids=lambda c: f"{len(c[1])}d-k{c[1][0]}-s{c[2][0]}-x{int(c[5])}-{c[6]}")
def test_pool_f64(case: tuple) -> None:
    shape, kernel, strides, pb, pe, exclude, rounding, dil = case
    x = _data(shape, np.float64)
    _check(lambda p: ops.avg_pool(p, strides, pb, pe, kernel, exclude, rounding, dilations=dil), [x], rtol=1e-13)
    # MaxPool values over the same windows (NaN and -inf never win; padding-only windows give the lowest finite)
    x.reshape(-1)[::5] = -np.inf
    _check(lambda p: ops.max_pool(p, strides, dil or [1] * len(kernel), pb, pe, kernel, rounding).output(0), [x])


MATMULS = [  # (a shape, b shape, transpose a, transpose b)
    ((3, 17), (17, 5), False, False), ((2, 8, 16), (2, 16, 12), False, False), ((5, 7), (9, 7), False, True),
    ((7, 5), (7, 9), True, False), ((3, 1, 6, 4), (5, 4, 33), False, False), ((17,), (17, 3), False, False),
    ((2, 4, 6), (6,), False, False), ((6, 4), (3, 5, 6), True, True), ((0, 3), (3, 4), False, False),
    ((4, 0), (0, 5), False, False)]


@pytest.mark.parametrize("case", MATMULS, ids=lambda c: f"{c[0]}x{c[1]}-t{int(c[2])}{int(c[3])}")
def test_matmul_f64(case: tuple) -> None:
    sa, sb, ta, tb = case
    const_b = MATMULS.index(case) % 2 == 1  # B a constant in every other case
    a, b = _data(sa, np.float64, special=False), _data(sb, np.float64, special=False)
    if const_b:
        _check(lambda p: ops.matmul(p, b, ta, tb), [a], rtol=1e-12)
    else:
        _check(lambda p, q: ops.matmul(p, q, ta, tb), [a, b], rtol=1e-12)


def test_matmul_f64_nan_inf() -> None:
    a, b = _data((4, 9), np.float64), _data((9, 21), np.float64)
    _check(lambda p, q: ops.matmul(p, q, False, False), [a, b], rtol=1e-12)

