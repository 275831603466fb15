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
    if mode == "none":
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
    # One side may be 1 at run time: the result is at least the larger minimum.
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
