"""Small graph-building helpers shared by the ONNX converters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import ember.opset as ops
from ember.errors import ConversionError
from ember.graph.core_ops import Constant
from ember.graph.node import Output, as_output, constant_value
from ember.graph.types import Type, cast_array


def const(value: Any, et: Type) -> Output:
    """A constant of element type ``et``."""
    arr = np.asarray(value)
    if et is Type.string:
        return Constant(arr).output(0)
    src = Type.f64 if arr.dtype.kind == "f" else (Type.boolean if arr.dtype.kind == "b" else Type.i64)
    if arr.dtype.kind in "iu" and arr.dtype != np.int64:
        src = Type.from_dtype(arr.dtype)
    data = arr.astype(et.dtype) if et.is_real else cast_array(arr.astype(src.dtype), src, et)
    return Constant.from_array(np.asarray(data, order="C"), et).output(0)


def const_like(value: Any, like: Output) -> Output:
    """A constant in ``like``'s element type."""
    return const(value, like.element_type)


def i64(values: Any) -> Output:
    return const(np.asarray(values, dtype=np.int64), Type.i64)


def i32(values: Any) -> Output:
    return const(np.asarray(values, dtype=np.int32), Type.i32)


def out(x: Any) -> Output:
    return as_output(x)


def value_of(x: Output | None) -> np.ndarray | None:
    return None if x is None else constant_value(x)


def rank_of(x: Output, what: str = "input") -> int:
    ps = x.partial_shape
    if not ps.rank_is_static:
        raise ConversionError(f"ember: the rank of the {what} must be known at conversion time")
    return len(ps)


def shape_of(x: Output, et: Type = Type.i64) -> Output:
    """ShapeOf (kept in the graph so that a later reshape of the model stays correct)."""
    return ops.shape_of(x, et.name).output(0)


def reshape(x: Output, shape: Sequence[int] | Output, special_zero: bool = False) -> Output:
    target = shape if isinstance(shape, Output) else i64(list(shape))
    return ops.reshape(x, target, special_zero).output(0)


def unsqueeze(x: Output, axes: Sequence[int] | int) -> Output:
    ax = [axes] if isinstance(axes, int) else list(axes)
    return ops.unsqueeze(x, i64(ax)).output(0)


def squeeze(x: Output, axes: Sequence[int] | int | None = None) -> Output:
    if axes is None:
        return ops.squeeze(x).output(0)
    ax = [axes] if isinstance(axes, int) else list(axes)
    return ops.squeeze(x, i64(ax)).output(0)


def convert(x: Output, et: Type) -> Output:
    if x.element_type is et:
        return x
    return ops.convert(x, et).output(0)


def gather_dims(shape: Output, idx: Sequence[int]) -> Output:
    """Elements ``idx`` of a 1-D shape tensor."""
    return ops.gather(shape, i64(list(idx)), i64(0)).output(0)


def scalar(x: Output) -> Output:
    """A 1-element tensor as a scalar."""
    ps = x.partial_shape
    if ps.rank_is_static and len(ps) == 0:
        return x
    return reshape(x, [])


def flatten_2d(x: Output, axis: int) -> Output:
    """ONNX Flatten: dims before ``axis`` into the first, the rest into the second."""
    r = rank_of(x)
    axis = axis + r if axis < 0 else axis
    ps = x.partial_shape
    if ps.is_static:
        dims = [d.get_length() for d in ps]
        return reshape(x, [int(np.prod(dims[:axis], dtype=np.int64)), int(np.prod(dims[axis:], dtype=np.int64))])
    if axis == 0:
        return reshape(x, [1, -1])
    shp = shape_of(x)
    first = ops.reduce_prod(ops.slice(shp, i64([0]), i64([axis]), i64([1])), i64([0]), True).output(0)
    return reshape(x, ops.concat([first, i64([-1])], 0).output(0))


def np_type(et: Type) -> np.dtype:
    return et.dtype
