"""Reductions over axes given as an input (ReduceSum, ReduceMean, ... ReduceLogicalOr) and CumSum.

Every reduction is one table row: ``(IR type, version, builder name, kernel, kind)``. The axes
input may hold negative and repeated values; an empty axes tensor leaves the data unchanged.
Reducing an empty dimension gives the identity of the reduction (0 for sums and means, 1 for
products, the type's lowest/highest value for max/min), as OpenVINO's CPU plugin does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type


def reduction_axes(node: Node, axes: Any, rank: int) -> list[int]:
    """Normalise an axes value against ``rank``: negative axes wrap, duplicates collapse."""
    out: list[int] = []
    for a in np.asarray(axes).reshape(-1).tolist():
        a = int(a)
        if rank == 0 and a in (0, -1):  # a scalar's only "axis": nothing to reduce
            continue
        if not -rank <= a < rank:
            raise node.fail(f"axis {a} is out of range for rank {rank} (allowed [{-rank}, {rank - 1}])")
        a = a + rank if a < 0 else a
        if a not in out:
            out.append(a)
    return sorted(out)


def reduced_shape(node: Node, data: PartialShape, axes_port: int, keep_dims: bool) -> PartialShape:
    """Output shape of a reduction whose axes come from input ``axes_port``."""
    axes_shape = node.input_shape(axes_port)
    if axes_shape.rank_is_static and len(axes_shape) > 1:
        raise node.fail(f"axes must be a scalar or 1-D tensor, got shape {axes_shape}")
    axes = node.input_value(axes_port)
    if data.rank_is_static and axes is not None:
        rank = len(data)
        ax = reduction_axes(node, axes, rank)
        if keep_dims:
            return PartialShape([Dimension(1) if i in ax else d for i, d in enumerate(data)])
        return PartialShape([d for i, d in enumerate(data) if i not in ax])
    if not data.rank_is_static:
        return PartialShape.dynamic()
    if keep_dims:
        return PartialShape.dynamic(len(data))
    # One axis (a scalar or a 1-element vector) removes exactly one dimension.
    if axes_shape.is_static and int(np.prod(axes_shape.to_shape())) == 1:
        return PartialShape.dynamic(len(data) - 1)
    return PartialShape.dynamic()


def _check_axes_type(node: Node, port: int) -> None:
    t = node.input_type(port)
    if not (t.is_integral_number or t.is_dynamic):
        raise node.fail(f"axes must be an integer tensor, got {t}")


class Reduction(Node):
    """Reduce input 0 over the axes in input 1; ``keep_dims`` keeps reduced axes as size 1."""

    num_inputs = (2, 2)
    attributes = (Attr("keep_dims", "bool", False),)
    kind = "numeric"  # or "logical"
    kernel: Callable[..., np.ndarray]

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = self.input_type(0)
        if self.kind == "logical" and t is not Type.boolean and not t.is_dynamic:
            raise self.fail(f"data must be boolean, got {t}")
        if self.kind == "numeric" and t in (Type.boolean, Type.string):
            raise self.fail(f"data must be numeric, got {t}")
        _check_axes_type(self, 1)
        return [(t, reduced_shape(self, self.input_shape(0), 1, self.attrs["keep_dims"]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, axes = inputs
        ax = tuple(reduction_axes(self, axes, x.ndim))
        keep = self.attrs["keep_dims"]
        if not ax:
            return [np.array(x, copy=True)]
        with np.errstate(all="ignore"):
            out = type(self).kernel(x, ax)
        out = np.asarray(out)
        if keep:
            out = out.reshape([1 if i in ax else s for i, s in enumerate(x.shape)])
        return [_cast(out, x.dtype)]


def _cast(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the data's element type; float results for integer data truncate toward zero."""
    if dtype.kind in "iu" and out.dtype.kind == "f":
        out = np.trunc(out)
        info = np.iinfo(dtype)
        out = np.clip(np.nan_to_num(out), info.min, info.max)
    return np.asarray(out).astype(dtype)


def _acc(x: np.ndarray) -> np.ndarray:
    # floats (f16, bf16, f8 too) accumulate in f64; integers wrap in their own type as OpenVINO's do
    return x if x.dtype.kind in "iub" else x.astype(np.float64)


def _sum(x: np.ndarray, ax: tuple[int, ...]) -> np.ndarray:
    return np.sum(_acc(x), axis=ax, dtype=None if x.dtype.kind not in "iu" else x.dtype)


def _mean(x: np.ndarray, ax: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod([x.shape[a] for a in ax]))
    s = _sum(x, ax)
    if n == 0:
        return np.zeros_like(s)
    if x.dtype.kind in "iu":
        # integer mean is the integer sum divided with truncation toward zero
        q = np.abs(s.astype(np.int64)) // n
        return np.where(s < 0, -q, q)
    return s / n


def _extreme(x: np.ndarray, ax: tuple[int, ...], largest: bool) -> np.ndarray:
    if x.size == 0:  # the identity of max/min: the type's lowest/highest finite value
        shape = [s for i, s in enumerate(x.shape) if i not in ax]
        lo, hi = _finite_range(x.dtype)
        return np.full(shape, lo if largest else hi, dtype=x.dtype)
    return np.max(x, axis=ax) if largest else np.min(x, axis=ax)


def _finite_range(dtype: np.dtype) -> tuple[Any, Any]:
    if dtype.kind in "iu":
        return np.iinfo(dtype).min, np.iinfo(dtype).max
    if dtype.kind == "b":
        return False, True
    import ml_dtypes

    info = ml_dtypes.finfo(dtype)
    return info.min, info.max


def _prod(x: np.ndarray, ax: tuple[int, ...]) -> np.ndarray:
    return np.prod(_acc(x), axis=ax, dtype=None if x.dtype.kind not in "iu" else x.dtype)


def _l1(x: np.ndarray, ax: tuple[int, ...]) -> np.ndarray:
    return _sum(np.abs(x), ax)


def _l2(x: np.ndarray, ax: tuple[int, ...]) -> np.ndarray:
    a = _acc(x) if x.dtype.kind not in "iu" else x.astype(np.float64)
    return np.sqrt(np.sum(a * a, axis=ax))


_REDUCTIONS: list[tuple[str, str, str, Callable[..., np.ndarray], str]] = [
    ("ReduceSum", "opset1", "reduce_sum", _sum, "numeric"),
    ("ReduceMean", "opset1", "reduce_mean", _mean, "numeric"),
    ("ReduceProd", "opset1", "reduce_prod", _prod, "numeric"),
    ("ReduceMax", "opset1", "reduce_max", lambda x, ax: _extreme(x, ax, True), "numeric"),
    ("ReduceMin", "opset1", "reduce_min", lambda x, ax: _extreme(x, ax, False), "numeric"),
    ("ReduceL1", "opset4", "reduce_l1", _l1, "numeric"),
    ("ReduceL2", "opset4", "reduce_l2", _l2, "numeric"),
    ("ReduceLogicalAnd", "opset1", "reduce_logical_and", lambda x, ax: np.all(x, axis=ax), "logical"),
    ("ReduceLogicalOr", "opset1", "reduce_logical_or", lambda x, ax: np.any(x, axis=ax), "logical"),
]


def _make_reduction(type_name: str, version: str, bname: str, fn: Callable[..., np.ndarray], kind: str) -> type:
    cls = type(type_name, (Reduction,), {
        "type_name": type_name, "version": version, "kernel": staticmethod(fn), "kind": kind,
        "__doc__": f"OpenVINO {type_name} ({version}): reduce over the axes of input 1.",
    })
    register_op(cls)

    def build(node: Any, reduction_axes: Any, keep_dims: bool = False, name: str | None = None) -> Node:
        return cls([node, reduction_axes], {"keep_dims": keep_dims}, name)

    build.__name__ = bname
    build.__doc__ = f"Build a {type_name} node reducing ``node`` over ``reduction_axes``."
    builder(build)
    return cls


for _row in _REDUCTIONS:
    globals()[_row[0]] = _make_reduction(*_row)


@register_op
class CumSum(Node):
    """Cumulative sum along a scalar ``axis`` input (default 0); ``exclusive`` shifts by one,
    ``reverse`` sums from the end."""

    type_name = "CumSum"
    version = "opset3"
    num_inputs = (1, 2)
    attributes = (Attr("exclusive", "bool", False), Attr("reverse", "bool", False))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = self.input_type(0)
        if t in (Type.boolean, Type.string):
            raise self.fail(f"data must be numeric, got {t}")
        if self.get_input_size() > 1:
            _check_axes_type(self, 1)
            s = self.input_shape(1)
            if s.rank_is_static and len(s) != 0:
                raise self.fail(f"axis must be a scalar, got shape {s}")
            axis = self.input_value(1)
            data = self.input_shape(0)
            if axis is not None and data.rank_is_static:
                reduction_axes(self, axis, len(data))
        return [(t, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        if x.ndim == 0:
            return [np.array(x, copy=True)]
        axis = reduction_axes(self, inputs[1], x.ndim)[0] if len(inputs) > 1 else 0
        acc = np.float64 if x.dtype.kind not in "iu" else x.dtype
        y = np.flip(x, axis) if self.attrs["reverse"] else x
        with np.errstate(all="ignore"):
            c = np.cumsum(y.astype(acc), axis=axis, dtype=acc)
        if self.attrs["exclusive"]:
            pad = [(0, 0)] * x.ndim
            pad[axis] = (1, 0)
            c = np.pad(c, pad)[tuple(slice(0, -1) if i == axis else slice(None) for i in range(x.ndim))]
        if self.attrs["reverse"]:
            c = np.flip(c, axis)
        return [np.ascontiguousarray(c).astype(x.dtype)]


@builder
def cumsum(arg: Any, axis: Any, exclusive: bool = False, reverse: bool = False, name: str | None = None) -> Node:
    """Build a CumSum node: running sums of ``arg`` along the scalar ``axis``."""
    return CumSum([arg, axis], {"exclusive": exclusive, "reverse": reverse}, name)
