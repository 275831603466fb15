"""Helpers shared by op modules: broadcasting rules, axis normalisation, dtype checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.errors import ShapeInferenceError
from ember.graph.shape import Dimension, PartialShape


def broadcast_shapes(a: PartialShape, b: PartialShape, mode: str = "numpy") -> PartialShape:
    """The result shape of an elementwise op under ``auto_broadcast`` ``mode``."""
    mode = mode.lower()
    if mode in ("none", "explicit"):  # OpenVINO: EXPLICIT is NONE for elementwise ops
        if a.rank_is_static and b.rank_is_static:
            if len(a) != len(b):
                raise ShapeInferenceError(f"ember: auto_broadcast=none needs equal shapes, got {a} and {b}")
            return PartialShape([x.merge(y) for x, y in zip(a, b)])
        return a if a.rank_is_static else b
    if not a.rank_is_static or not b.rank_is_static:
        return PartialShape.dynamic()
    if mode == "pdpd":
        # b broadcasts onto a; the output has a's shape.
        return a
    n = max(len(a), len(b))
    da = [Dimension(1)] * (n - len(a)) + list(a)
    db = [Dimension(1)] * (n - len(b)) + list(b)
    out = []
    for x, y in zip(da, db):
        if x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        elif x.is_static and y.is_static:
            if x != y:
                raise ShapeInferenceError(f"ember: shapes {a} and {b} do not broadcast")
            out.append(x)
        else:
            try:
                out.append(x.merge(y) if not (x.min_length <= 1 or y.min_length <= 1) else _loose(x, y))
            except Exception:
                raise ShapeInferenceError(f"ember: shapes {a} and {b} do not broadcast") from None
    return PartialShape(out)


def _loose(x: Dimension, y: Dimension) -> Dimension:
    # One side may be 1 at run time. A static side other than 1 decides the result.
    for d in (x, y):
        if d.is_static and d.get_length() != 1:
            return d
    lo = max(x.min_length, y.min_length)
    hi = -1 if -1 in (x.max_length, y.max_length) else max(x.max_length, y.max_length)
    return Dimension(lo, hi)


def numpy_broadcast(arrays: Sequence[np.ndarray], mode: str = "numpy", axis: int = -1) -> list[np.ndarray]:
    """Make ``arrays`` broadcast under OpenVINO's ``auto_broadcast`` for numpy evaluation."""
    mode = mode.lower()
    if mode == "pdpd" and len(arrays) == 2:
        a, b = arrays
        if a.ndim > b.ndim:
            ax = axis if axis >= 0 else a.ndim - b.ndim
            shape = [1] * ax + list(b.shape) + [1] * (a.ndim - ax - b.ndim)
            b = b.reshape(shape)
        return [a, b]
    return list(arrays)


def normalize_axis(axis: int, rank: int, node: str = "") -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeInferenceError(f"ember: {node + ': ' if node else ''}axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def static_ints(value: Any) -> list[int]:
    return [int(x) for x in np.asarray(value).reshape(-1)]


# -- interval arithmetic on dimensions, as OpenVINO's shape inference does it ---------------
# A max_length of -1 means unbounded; subtraction clips at 0 like OpenVINO's Interval.

def _hi(d: Dimension) -> int | None:
    return None if d.max_length == -1 else d.max_length


def _dim(lo: int, hi: int | None) -> Dimension:
    return Dimension(lo) if hi == lo else Dimension(lo, -1 if hi is None else hi)


def dim_sub(a: Dimension, b: Dimension | int) -> Dimension:
    """``a - b`` on intervals, clipped at zero."""
    b = b if isinstance(b, Dimension) else Dimension(int(b))
    a_hi, b_hi = _hi(a), _hi(b)
    lo = 0 if b_hi is None else max(a.min_length - b_hi, 0)
    hi = None if a_hi is None else max(a_hi - b.min_length, 0)
    return _dim(lo, hi)


def dim_floor_div(a: Dimension, k: int) -> Dimension:
    hi = _hi(a)
    return _dim(a.min_length // k, None if hi is None else hi // k)


def dim_ceil_div(a: Dimension, k: int) -> Dimension:
    hi = _hi(a)
    return _dim(-(-a.min_length // k), None if hi is None else -(-hi // k))


def dim_div_exact(a: Dimension, k: int) -> Dimension | None:
    """``a / k`` keeping only exact quotients; None when no multiple of ``k`` fits ``a``."""
    hi = _hi(a)
    lo, top = -(-a.min_length // k), None if hi is None else hi // k
    if top is not None and top < lo:
        return None
    return _dim(lo, top)


def broadcast_merge(a: Dimension, b: Dimension) -> Dimension | None:
    """One broadcast dimension of two (None when they cannot broadcast)."""
    a1, b1 = a.contains(1), b.contains(1)
    if a1 and b1:
        ha, hb = _hi(a), _hi(b)
        return _dim(min(a.min_length, b.min_length), None if None in (ha, hb) else max(ha, hb))
    if a1:
        return b
    if b1:
        return a
    return a.merge(b) if a.compatible(b) else None


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1, upper: bool = True) -> tuple[int, int]:
    """(begin, end) padding for auto_pad same_upper (extra at the end) or same_lower."""
    eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + eff - size)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)
