"""Data movement ops: Transpose, StridedSlice, Slice, SliceScatter, Gather, GatherElements,
GatherND, ScatterUpdate, ScatterElementsUpdate, ScatterNDUpdate, Pad, DepthToSpace,
SpaceToDepth, Reverse, ReverseSequence, Roll, OneHot, Einsum.

Index inputs are read with ``const_ints`` when inference needs their values; without them the
output keeps what is still certain (rank, untouched dimensions, upper bounds).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ember.errors import InferenceError
from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type
from ember.ops._util import static_ints
from ember.ops.shape_ops import (
    INF,
    bidirectional_shape,
    bounds_of,
    check_int_input,
    check_rank_at_most,
    const_ints,
    dim_div,
    dim_of,
    int_list,
    merge_dims,
    merge_types,
    normalize,
    value_bounds,
)


def _upto(d: Dimension) -> Dimension:
    """Any length from 0 up to ``d``'s largest."""
    return dim_of(0, bounds_of(d)[1])


# -- Transpose ----------------------------------------------------------------------------------


@register_op
class Transpose(Node):
    """Transpose-1: permute the axes of ``data`` by ``input_order`` (empty: reverse them)."""

    type_name = "Transpose"
    version = "opset1"
    num_inputs = (2, 2)

    def _order(self, order: list[int], rank: int) -> list[int]:
        if not order:
            return list(range(rank - 1, -1, -1))
        if len(order) != rank:
            raise self.fail(f"input_order {order} does not match the data rank {rank}")
        norm = [normalize(a, rank, self, "input_order entry") for a in order]
        if sorted(norm) != list(range(rank)):
            raise self.fail(f"input_order {order} is not a permutation of 0..{rank - 1}")
        return norm

    def infer(self) -> list[tuple[Type, PartialShape]]:
        check_int_input(self, 1, "input_order")
        check_rank_at_most(self, 1, 1, "input_order")
        data = self.input_shape(0)
        order = const_ints(self, 1)
        et = self.input_type(0)
        if not data.rank_is_static:
            if order:
                return [(et, PartialShape.dynamic(len(order)))]
            return [(et, PartialShape.dynamic())]
        if order is None:
            # every output dimension is one of the input's: bound it by their hull
            if not len(data):
                return [(et, data)]
            lo = min(d.min_length for d in data)
            hi = max(bounds_of(d)[1] for d in data)
            return [(et, PartialShape([dim_of(lo, hi)] * len(data)))]
        return [(et, PartialShape([data[a] for a in self._order(order, len(data))]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, order = inputs
        return [np.ascontiguousarray(np.transpose(x, self._order(static_ints(order), x.ndim)))]


@builder
def transpose(data: Any, input_order: Any, name: str | None = None) -> Node:
    return Transpose([data, int_list(input_order)], None, name)


# -- slicing helpers ----------------------------------------------------------------------------


def _slice_len(d: int, start: int | None, stop: int | None, step: int) -> int:
    return len(range(*slice(start, stop, step).indices(d)))


def slice_dim(dim: Dimension, start: int | None, stop: int | None, step: int) -> Dimension:
    """The length of ``x[start:stop:step]`` along a dimension that may be an interval."""
    if dim.is_static:
        return Dimension(_slice_len(dim.get_length(), start, stop, step))
    lo, hi = bounds_of(dim)
    # The length is piecewise linear in the dimension, with breaks where start/stop wrap or clamp.
    points = {lo}
    for v in (start, stop):
        if v is not None:
            for c in (abs(v) - 1, abs(v), abs(v) + 1):
                points.add(c)
    cands = [p for p in points if p >= lo and p <= hi]
    if hi < INF:
        cands.append(hi)
    lens = [_slice_len(p, start, stop, step) for p in cands]
    if hi >= INF:
        far = max(points) + (1 << 40)
        far_len = _slice_len(far, start, stop, step)
        lens.append(far_len)
        if far_len > (1 << 39):
            return dim_of(min(lens), INF)
    return dim_of(min(lens), max(lens))


@dataclass
class _Item:
    kind: str  # "slice", "shrink", "new"
    axis: int = -1  # the input axis it reads
    start: int | None = None
    stop: int | None = None
    step: int | None = 1
    known: bool = True


def _mask(m: Sequence[int], i: int) -> bool:
    return i < len(m) and m[i] == 1


def strided_plan(node: Node, rank: int, n: int, begin: list[int] | None, end: list[int] | None,
                 stride: list[int] | None) -> list[_Item]:
    """StridedSlice as a list of per-output-axis items over an input of ``rank``; ``n`` is the
    length of begin/end/stride (which may be unknown)."""
    a = node.attrs
    bm, em, nm, sm, ellm = (a["begin_mask"], a["end_mask"], a["new_axis_mask"], a["shrink_axis_mask"],
                            a["ellipsis_mask"])
    ell = [i for i in range(n) if _mask(ellm, i)]
    if len(ell) > 1:
        raise node.fail(f"ellipsis_mask {ellm} sets more than one ellipsis")
    consumed = sum(1 for i in range(n) if not _mask(nm, i) and not _mask(ellm, i))
    if consumed > rank:
        raise node.fail(f"{consumed} sliced axes for input rank {rank}")
    items: list[_Item] = []
    axis = 0
    for i in range(n):
        if _mask(ellm, i):
            for _ in range(rank - consumed):
                items.append(_Item("slice", axis, None, None, 1))
                axis += 1
        elif _mask(nm, i):
            items.append(_Item("new"))
        else:
            b = None if begin is None else begin[i]
            e = None if end is None else end[i]
            s = None if stride is None else stride[i]
            if s == 0:
                raise node.fail("strides must not be 0")
            known = begin is not None and end is not None and stride is not None
            if _mask(sm, i):
                items.append(_Item("shrink", axis, 0 if _mask(bm, i) or b is None else b, known=known))
            else:
                items.append(_Item("slice", axis, None if _mask(bm, i) else b, None if _mask(em, i) else e, s,
                                   known=known or (_mask(bm, i) and _mask(em, i) and s is not None)))
            axis += 1
    for k in range(axis, rank):
        items.append(_Item("slice", k, None, None, 1))
    return items


def _plan_shape(node: Node, data: PartialShape, items: list[_Item]) -> PartialShape:
    out = []
    for it in items:
        if it.kind == "new":
            out.append(Dimension(1))
            continue
        d = data[it.axis]
        if it.kind == "shrink":
            if it.known and d.is_static and not -d.get_length() <= it.start < d.get_length():
                raise node.fail(f"shrink_axis index {it.start} is out of range for dimension {d}")
            continue
        if not it.known or it.step is None:
            out.append(_upto(d))
        else:
            out.append(slice_dim(d, it.start, it.stop, it.step))
    return PartialShape(out)


def _plan_index(items: list[_Item]) -> tuple[Any, ...]:
    idx: list[Any] = []
    for it in items:
        if it.kind == "new":
            idx.append(None)
        elif it.kind == "shrink":
            idx.append(it.start)
        else:
            idx.append(slice(it.start, it.stop, it.step))
    return tuple(idx)


# -- StridedSlice -------------------------------------------------------------------------------


_MASKS = ("begin_mask", "end_mask", "new_axis_mask", "shrink_axis_mask", "ellipsis_mask")


@register_op
class StridedSlice(Node):
    """StridedSlice-1: numpy-style ``data[begin:end:stride]`` with TensorFlow's masks (a mask bit
    of 1 ignores begin/end, adds a new axis, drops an axis, or stands for the ellipsis)."""

    type_name = "StridedSlice"
    version = "opset1"
    num_inputs = (3, 4)
    attributes = (Attr("begin_mask", "ints"), Attr("end_mask", "ints"), Attr("new_axis_mask", "ints", []),
                  Attr("shrink_axis_mask", "ints", []), Attr("ellipsis_mask", "ints", []))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        n = None
        for i, what in ((1, "begin"), (2, "end"), (3, "strides")):
            if i >= self.get_input_size():
                continue
            check_int_input(self, i, what)
            s = self.input_shape(i)
            if s.rank_is_static and len(s) != 1:
                raise self.fail(f"{what} must be 1-D, got shape {s}")
            if s.rank_is_static and s[0].is_static:
                if n is not None and n != s[0].get_length():
                    raise self.fail(f"begin, end and strides differ in length ({n} and {s[0]})")
                n = s[0].get_length()
        data = self.input_shape(0)
        et = self.input_type(0)
        if not data.rank_is_static or n is None:
            return [(et, PartialShape.dynamic())]
        begin, end = const_ints(self, 1), const_ints(self, 2)
        stride = const_ints(self, 3) if self.get_input_size() == 4 else [1] * n
        items = strided_plan(self, len(data), n, begin, end, stride)
        return [(et, _plan_shape(self, data, items))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        begin, end = static_ints(inputs[1]), static_ints(inputs[2])
        stride = static_ints(inputs[3]) if len(inputs) == 4 else [1] * len(begin)
        items = strided_plan(self, x.ndim, len(begin), begin, end, stride)
        for it in items:
            if it.kind == "shrink" and not -x.shape[it.axis] <= it.start < x.shape[it.axis]:
                raise InferenceError(f"ember: StridedSlice '{self.friendly_name}': shrink_axis index {it.start} "
                                     f"is out of range for dimension {x.shape[it.axis]}")
        return [np.array(x[_plan_index(items)])]


@builder
def strided_slice(data: Any, begin: Any, end: Any, strides: Any, begin_mask: Sequence[int],
                  end_mask: Sequence[int], new_axis_mask: Sequence[int] | None = None,
                  shrink_axis_mask: Sequence[int] | None = None, ellipsis_mask: Sequence[int] | None = None,
                  name: str | None = None) -> Node:
    attrs = {"begin_mask": begin_mask, "end_mask": end_mask, "new_axis_mask": new_axis_mask or [],
             "shrink_axis_mask": shrink_axis_mask or [], "ellipsis_mask": ellipsis_mask or []}
    return StridedSlice([data, int_list(begin), int_list(end), int_list(strides)], attrs, name)


# -- Slice / SliceScatter -----------------------------------------------------------------------


def _slice_params(node: Node, first: int) -> tuple[int | None, list[int] | None, list[int] | None,
                                                     list[int] | None, list[int] | None]:
    """(count, start, stop, step, axes) of Slice-like inputs starting at ``first``."""
    n = None
    names = ("start", "stop", "step", "axes")
    for k, what in enumerate(names):
        i = first + k
        if i >= node.get_input_size():
            continue
        check_int_input(node, i, what)
        s = node.input_shape(i)
        if s.rank_is_static and len(s) != 1:
            raise node.fail(f"{what} must be 1-D, got shape {s}")
        if s.rank_is_static and s[0].is_static:
            if n is not None and n != s[0].get_length():
                raise node.fail(f"start, stop, step and axes differ in length ({n} and {s[0]})")
            n = s[0].get_length()
    vals = [const_ints(node, first + k) for k in range(3)]
    axes = const_ints(node, first + 3) if node.get_input_size() > first + 3 else (
        None if n is None else list(range(n)))
    if vals[2] is not None and any(v == 0 for v in vals[2]):
        raise node.fail("step must not be 0")
    return n, vals[0], vals[1], vals[2], axes


def _slice_axes(node: Node, axes: list[int], rank: int) -> list[int]:
    norm = [normalize(a, rank, node) for a in axes]
    if len(set(norm)) != len(norm):
        raise node.fail(f"axes {axes} repeat an axis")
    return norm


def slice_shape(node: Node, data: PartialShape, first: int) -> PartialShape:
    if not data.rank_is_static:
        return PartialShape.dynamic()
    n, start, stop, step, axes = _slice_params(node, first)
    if axes is None:
        return PartialShape([_upto(d) for d in data])
    axes = _slice_axes(node, axes, len(data))
    out = list(data)
    for k, a in enumerate(axes):
        if start is None or stop is None or step is None:
            out[a] = _upto(data[a])
        else:
            out[a] = slice_dim(data[a], start[k], stop[k], step[k])
    return PartialShape(out)


def _slice_index(node: Node, ndim: int, inputs: Sequence[np.ndarray], first: int) -> tuple[slice, ...]:
    start, stop, step = (static_ints(inputs[first + k]) for k in range(3))
    axes = static_ints(inputs[first + 3]) if len(inputs) > first + 3 else list(range(len(start)))
    if any(s == 0 for s in step):
        raise InferenceError(f"ember: {node.type_name} '{node.friendly_name}': step must not be 0")
    idx = [slice(None)] * ndim
    for a, b, e, s in zip(_slice_axes(node, axes, ndim), start, stop, step):
        idx[a] = slice(b, e, s)
    return tuple(idx)


@register_op
class Slice(Node):
    """Slice-8: ``data[start:stop:step]`` along ``axes`` (default 0..n-1), indices clamped like numpy."""

    type_name = "Slice"
    version = "opset8"
    num_inputs = (4, 5)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.input_type(0), slice_shape(self, self.input_shape(0), 1))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.array(inputs[0][_slice_index(self, inputs[0].ndim, inputs, 1)])]


@builder
def slice_(data: Any, start: Any, stop: Any, step: Any, axes: Any = None, name: str | None = None) -> Node:
    """Slice-8 (``ember.opset.slice``)."""
    ins = [data, int_list(start), int_list(stop), int_list(step)] + ([] if axes is None else [int_list(axes)])
    return Slice(ins, None, name)


@register_op
class SliceScatter(Node):
    """SliceScatter-15: a copy of ``data`` with the slice ``data[start:stop:step]`` replaced by ``updates``."""

    type_name = "SliceScatter"
    version = "opset15"
    num_inputs = (5, 6)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        et = merge_types(self, [self.input_type(0), self.input_type(1)], "data and updates")
        data = self.input_shape(0)
        sliced = slice_shape(self, data, 2)
        upd = self.input_shape(1)
        if sliced.rank_is_static and upd.rank_is_static:
            if len(sliced) != len(upd):
                raise self.fail(f"updates {upd} do not match the slice's shape {sliced}")
            for a, b in zip(sliced, upd):
                if not a.compatible(b):
                    raise self.fail(f"updates {upd} do not match the slice's shape {sliced}")
        return [(et, data)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = np.array(inputs[0], copy=True)
        idx = _slice_index(self, out.ndim, inputs, 2)
        if out[idx].shape != inputs[1].shape:
            raise InferenceError(f"ember: SliceScatter '{self.friendly_name}': updates of shape {inputs[1].shape} "
                                 f"do not match the slice's shape {out[idx].shape}")
        out[idx] = inputs[1]
        return [out]


@builder
def slice_scatter(data: Any, updates: Any, start: Any, stop: Any, step: Any, axes: Any = None,
                  name: str | None = None) -> Node:
    ins = [data, updates, int_list(start), int_list(stop), int_list(step)]
    ins += [] if axes is None else [int_list(axes)]
    return SliceScatter(ins, None, name)


# -- Gather -------------------------------------------------------------------------------------


class _GatherBase(Node):
    num_inputs = (3, 3)
    negative_indices = False  # v8: -1 is the last element; before: out of range (zeros)

    def _batch_dims(self, indices_rank: int | None) -> int:
        bd = self.attrs.get("batch_dims", 0)
        if bd < 0:
            if indices_rank is None:
                return -1
            bd += indices_rank
            if bd < 0:
                raise self.fail(f"batch_dims {self.attrs['batch_dims']} is out of range for indices rank {indices_rank}")
        return bd

    def infer(self) -> list[tuple[Type, PartialShape]]:
        check_int_input(self, 1, "indices")
        check_int_input(self, 2, "axis")
        s = self.input_shape(2)
        if s.rank_is_static and not (len(s) == 0 or (len(s) == 1 and s[0].compatible(1))):
            raise self.fail(f"axis must be a scalar or a 1-element tensor, got shape {s}")
        data, idx = self.input_shape(0), self.input_shape(1)
        et = self.input_type(0)
        bd = self._batch_dims(len(idx) if idx.rank_is_static else None)
        if idx.rank_is_static and bd > len(idx):
            raise self.fail(f"batch_dims {bd} exceeds the indices rank {len(idx)}")
        ax = const_ints(self, 2)
        if not data.rank_is_static or not idx.rank_is_static or bd < 0:
            return [(et, PartialShape.dynamic())]
        if ax is None:
            return [(et, PartialShape.dynamic(len(data) - 1 + len(idx) - bd))]
        axis = normalize(ax[0], len(data), self)
        if bd > axis:
            raise self.fail(f"batch_dims {bd} must be <= axis {axis}")
        batch = [merge_dims(self, a, b, "batch dimension") for a, b in zip(data[:bd], idx[:bd])]
        return [(et, PartialShape(batch + list(data[bd:axis]) + list(idx[bd:]) + list(data[axis + 1:])))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        data, idx, ax = inputs
        idx = np.asarray(idx, dtype=np.int64)
        bd = self._batch_dims(idx.ndim)
        axis = normalize(static_ints(ax)[0], data.ndim, self)
        n = data.shape[axis]
        if self.negative_indices:
            idx = np.where(idx < 0, idx + n, idx)
        valid = (idx >= 0) & (idx < n)
        safe = np.where(valid, idx, 0)
        bshape = data.shape[:bd]
        b = math.prod(bshape)
        d = data.reshape((b,) + data.shape[bd:])
        i = safe.reshape((b,) + safe.shape[bd:])
        v = valid.reshape(i.shape)
        k = axis - bd  # gather axis inside one batch
        parts = []
        for j in range(b):
            g = np.take(d[j], i[j], axis=k) if n else np.zeros(d[j].shape[:k] + i[j].shape + d[j].shape[k + 1:],
                                                                 data.dtype)
            mask = v[j].reshape((1,) * k + v[j].shape + (1,) * (d.ndim - 2 - k))
            parts.append(np.where(mask, g, np.zeros((), data.dtype)))
        out_shape = bshape + data.shape[bd:axis] + idx.shape[bd:] + data.shape[axis + 1:]
        if not parts:
            return [np.zeros(out_shape, data.dtype)]
        return [np.stack(parts).reshape(out_shape).astype(data.dtype, copy=False)]


@register_op
class Gather1(_GatherBase):
    """Gather-1: take slices of ``data`` at ``indices`` along ``axis``; out-of-range indices give 0."""

    type_name = "Gather"
    version = "opset1"


@register_op
class Gather7(_GatherBase):
    """Gather-7: Gather-1 with ``batch_dims`` leading dimensions shared by data and indices."""

    type_name = "Gather"
    version = "opset7"
    attributes = (Attr("batch_dims", "int", 0),)


@register_op
class Gather(_GatherBase):
    """Gather-8: Gather-7 where a negative index counts from the end."""

    type_name = "Gather"
    version = "opset8"
    attributes = (Attr("batch_dims", "int", 0),)
    negative_indices = True


@builder
def gather(data: Any, indices: Any, axis: Any, batch_dims: int | None = 0, name: str | None = None) -> Node:
    return Gather([data, int_list(indices), int_list(axis)], {"batch_dims": batch_dims or 0}, name)


def _normalize_indices(node: Node, idx: np.ndarray, n: int | np.ndarray, what: str = "index") -> np.ndarray:
    idx = np.asarray(idx, dtype=np.int64)
    idx = np.where(idx < 0, idx + n, idx)
    if np.any((idx < 0) | (idx >= n)):
        raise InferenceError(f"ember: {node.type_name} '{node.friendly_name}': an {what} is out of range")
    return idx


@register_op
class GatherElements(Node):
    """GatherElements-6: ``out[i][j][k] = data[i][indices[i][j][k]][k]`` for ``axis`` = 1 (and so on)."""

    type_name = "GatherElements"
    version = "opset6"
    num_inputs = (2, 2)
    attributes = (Attr("axis", "int", 0),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        check_int_input(self, 1, "indices")
        data, idx = self.input_shape(0), self.input_shape(1)
        et = self.input_type(0)
        if not data.rank_is_static and not idx.rank_is_static:
            return [(et, PartialShape.dynamic())]
        rank = len(data) if data.rank_is_static else len(idx)
        if rank == 0:
            raise self.fail("data must have rank >= 1")
        axis = normalize(self.attrs["axis"], rank, self)
        if not idx.rank_is_static:
            return [(et, PartialShape([Dimension() if i == axis else d for i, d in enumerate(data)]))]
        if not data.rank_is_static:
            return [(et, idx)]
        if len(data) != len(idx):
            raise self.fail(f"data {data} and indices {idx} differ in rank")
        out = [d if i == axis else merge_dims(self, d, e, f"axis {i}") for i, (e, d) in enumerate(zip(data, idx))]
        return [(et, PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        data, idx = inputs
        axis = normalize(self.attrs["axis"], data.ndim, self)
        idx = _normalize_indices(self, idx, data.shape[axis])
        return [np.take_along_axis(data, idx, axis=axis)]


@builder
def gather_elements(data: Any, indices: Any, axis: int | None = 0, name: str | None = None) -> Node:
    return GatherElements([data, indices], {"axis": axis or 0}, name)


class _GatherNDBase(Node):
    num_inputs = (2, 2)
    attributes = (Attr("batch_dims", "int", 0),)
    keep_batch = True  # v8 keeps the batch dimensions; v5 flattens them into one

    def infer(self) -> list[tuple[Type, PartialShape]]:
        check_int_input(self, 1, "indices")
        data, idx = self.input_shape(0), self.input_shape(1)
        et = self.input_type(0)
        bd = self.attrs["batch_dims"]
        if bd < 0:
            raise self.fail(f"batch_dims must be >= 0, got {bd}")
        if not data.rank_is_static or not idx.rank_is_static:
            return [(et, PartialShape.dynamic())]
        if len(idx) < 1 or len(data) < 1:
            raise self.fail("data and indices must have rank >= 1")
        if bd >= min(len(data), len(idx)):
            raise self.fail(f"batch_dims {bd} must be less than the ranks of data and indices")
        k = idx[-1]
        if not k.is_static:
            return [(et, PartialShape.dynamic())]
        k = k.get_length()
        if bd + k > len(data):
            raise self.fail(f"indices address {k} dimensions after {bd} batch dimensions of data {data}")
        batch = [merge_dims(self, a, b, "batch dimension") for a, b in zip(data[:bd], idx[:bd])]
        tail = list(idx[bd:-1]) + list(data[bd + k:])
        if self.keep_batch or bd == 0:
            return [(et, PartialShape(batch + tail))]
        prod = Dimension(1)
        for d in batch:
            prod = prod * d
        return [(et, PartialShape([prod] + tail))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        data, idx = inputs
        bd = self.attrs["batch_dims"]
        k = idx.shape[-1]
        bshape = data.shape[:bd]
        b = math.prod(bshape)
        d = data.reshape((b,) + data.shape[bd:])
        i = np.asarray(idx, dtype=np.int64).reshape((b, -1, k))
        i = _normalize_indices(self, i, np.array(data.shape[bd:bd + k], dtype=np.int64))
        parts = [d[j][tuple(i[j, :, m] for m in range(k))] for j in range(b)]
        tail = idx.shape[bd:-1] + data.shape[bd + k:]
        out = np.stack(parts) if parts else np.zeros((0,) + tail, data.dtype)
        shape = (bshape + tail) if self.keep_batch or bd == 0 else ((b,) + tail)
        return [out.reshape(shape)]


@register_op
class GatherND5(_GatherNDBase):
    """GatherND-5: gather slices of ``data`` addressed by the last axis of ``indices``; the batch
    dimensions are flattened into one in the output."""

    type_name = "GatherND"
    version = "opset5"
    keep_batch = False


@register_op
class GatherND(_GatherNDBase):
    """GatherND-8: GatherND-5 that keeps the batch dimensions in the output."""

    type_name = "GatherND"
    version = "opset8"


@builder
def gather_nd(data: Any, indices: Any, batch_dims: int | None = 0, name: str | None = None) -> Node:
    return GatherND([data, indices], {"batch_dims": batch_dims or 0}, name)


# -- Scatter ------------------------------------------------------------------------------------


def _same_data_shape(node: Node) -> list[tuple[Type, PartialShape]]:
    et = merge_types(node, [node.input_type(0), node.input_type(2)], "data and updates")
    check_int_input(node, 1, "indices")
    return [(et, node.input_shape(0))]


@register_op
class ScatterUpdate(Node):
    """ScatterUpdate-3: ``data`` with the slices at ``indices`` along ``axis`` replaced by ``updates``
    (of shape ``data[:axis] + indices + data[axis+1:]``)."""

    type_name = "ScatterUpdate"
    version = "opset3"
    num_inputs = (4, 4)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        out = _same_data_shape(self)
        check_int_input(self, 3, "axis")
        data, idx, upd = self.input_shape(0), self.input_shape(1), self.input_shape(2)
        ax = const_ints(self, 3)
        if ax is not None and data.rank_is_static and idx.rank_is_static and upd.rank_is_static:
            axis = normalize(ax[0], len(data), self)
            want = list(data[:axis]) + list(idx) + list(data[axis + 1:])
            if len(want) != len(upd) or not all(a.compatible(b) for a, b in zip(want, upd)):
                raise self.fail(f"updates {upd} must have shape {PartialShape(want)}")
        return out

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        data, idx, upd, ax = inputs
        axis = normalize(static_ints(ax)[0], data.ndim, self)
        n = data.shape[axis]
        flat = np.asarray(idx, dtype=np.int64).reshape(-1)
        if np.any((flat < 0) | (flat >= n)):
            raise InferenceError(f"ember: ScatterUpdate '{self.friendly_name}': an index is out of range [0, {n})")
        out = np.array(data, copy=True)
        u = np.asarray(upd).reshape(data.shape[:axis] + (flat.size,) + data.shape[axis + 1:])
        om, um = np.moveaxis(out, axis, 0), np.moveaxis(u, axis, 0)
        last = _last_occurrence(flat)
        om[flat[last]] = um[last]
        return [out]


@builder
def scatter_update(data: Any, indices: Any, updates: Any, axis: Any, name: str | None = None) -> Node:
    return ScatterUpdate([data, int_list(indices), updates, int_list(axis)], None, name)


def _last_occurrence(flat: np.ndarray) -> np.ndarray:
    """Positions of the last write to each target, so that later updates win deterministically."""
    rev = flat[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    return np.sort(flat.size - 1 - first_in_rev)


_REDUCE = {
    "sum": np.add, "sub": np.subtract, "prod": np.multiply, "min": np.minimum, "max": np.maximum,
}


def _identity(kind: str, dtype: np.dtype) -> Any:
    if kind in ("sum", "mean", "sub"):
        return 0
    if kind == "prod":
        return 1
    if dtype.kind == "f" or dtype.kind == "V":
        return np.inf if kind == "min" else -np.inf
    if dtype.kind == "b":
        return kind == "min"
    info = np.iinfo(dtype)
    return info.max if kind == "min" else info.min


def _scatter_reduce(node: Node, out: np.ndarray, flat_targets: np.ndarray, values: np.ndarray, kind: str,
                    use_init: bool) -> np.ndarray:
    """Apply ``values`` at the flat positions ``flat_targets`` of ``out`` (rows of a 2-D view)."""
    view = out.reshape(out.shape[0], -1) if out.ndim > 1 else out
    values = values.reshape((len(flat_targets),) + view.shape[1:])
    if kind == "none":
        last = _last_occurrence(flat_targets)
        view[flat_targets[last]] = values[last]
        return out
    touched = np.unique(flat_targets)
    if not use_init:
        view[touched] = _identity(kind, out.dtype)
    if kind == "mean":
        acc = view.astype(np.float64) if out.dtype.kind == "f" else view.astype(np.int64)
        np.add.at(acc, flat_targets, values.astype(acc.dtype))
        count = np.zeros(view.shape[0], np.int64)
        np.add.at(count, flat_targets, 1)
        count = count + (1 if use_init else 0)
        shape = (-1,) + (1,) * (view.ndim - 1)
        c = np.maximum(count, 1).reshape(shape)
        if out.dtype.kind == "f":
            mean = acc / c
        else:
            mean = np.trunc(acc / c)  # integer mean rounds toward zero
        view[touched] = mean[touched].astype(out.dtype)
        return out
    ufunc = _REDUCE[kind]
    if out.dtype.kind == "b":
        if kind == "sum":
            ufunc = np.logical_or
        elif kind == "prod":
            ufunc = np.logical_and
    ufunc.at(view, flat_targets, values.astype(out.dtype))
    return out


class _ScatterElementsBase(Node):
    num_inputs = (4, 4)
    reductions: tuple[str, ...] = ("none",)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        red = self.attrs.get("reduction", "none").lower()
        if red not in self.reductions:
            raise self.fail(f"unknown reduction '{red}'; known: {', '.join(self.reductions)}")
        out = _same_data_shape(self)
        check_int_input(self, 3, "axis")
        data, idx, upd = self.input_shape(0), self.input_shape(1), self.input_shape(2)
        if idx.rank_is_static and upd.rank_is_static:
            if len(idx) != len(upd) or not all(a.compatible(b) for a, b in zip(idx, upd)):
                raise self.fail(f"indices {idx} and updates {upd} must have the same shape")
        if data.rank_is_static and idx.rank_is_static and len(data) != len(idx):
            raise self.fail(f"indices {idx} must have the rank of data {data}")
        ax = const_ints(self, 3)
        if ax is not None and data.rank_is_static:
            normalize(ax[0], len(data), self)
        return out

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        data, idx, upd, ax = inputs
        axis = normalize(static_ints(ax)[0], data.ndim, self)
        idx = _normalize_indices(self, idx, data.shape[axis])
        coords = list(np.indices(idx.shape, sparse=False)) if idx.ndim else []
        coords[axis] = idx
        out = np.array(data, copy=True)
        if idx.size == 0:
            return [out]
        flat = np.ravel_multi_index(tuple(c.reshape(-1) for c in coords), data.shape)
        red = self.attrs.get("reduction", "none").lower()
        res = _scatter_reduce(self, out.reshape(-1), flat, np.asarray(upd).reshape(-1), red,
                              self.attrs.get("use_init_val", True))
        return [res.reshape(data.shape)]


@register_op
class ScatterElementsUpdate3(_ScatterElementsBase):
    """ScatterElementsUpdate-3: ``out[... indices[p] ...] = updates[p]`` along ``axis``."""

    type_name = "ScatterElementsUpdate"
    version = "opset3"


@register_op
class ScatterElementsUpdate(_ScatterElementsBase):
    """ScatterElementsUpdate-12: with ``reduction`` (none, sum, prod, min, max, mean) of the updates
    that hit one element, starting from the data when ``use_init_val``."""

    type_name = "ScatterElementsUpdate"
    version = "opset12"
    attributes = (Attr("reduction", "str", "none"), Attr("use_init_val", "bool", True))
    reductions = ("none", "sum", "prod", "min", "max", "mean")


@builder
def scatter_elements_update(data: Any, indices: Any, updates: Any, axis: Any, reduction: str | None = "None",
                            use_init_val: bool | None = True, name: str | None = None) -> Node:
    attrs = {"reduction": (reduction or "none").lower(), "use_init_val": True if use_init_val is None else use_init_val}
    return ScatterElementsUpdate([data, indices, updates, int_list(axis)], attrs, name)


class _ScatterNDBase(Node):
    num_inputs = (3, 3)
    reductions: tuple[str, ...] = ("none",)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        red = self.attrs.get("reduction", "none").lower()
        if red not in self.reductions:
            raise self.fail(f"unknown reduction '{red}'; known: {', '.join(self.reductions)}")
        out = _same_data_shape(self)
        data, idx, upd = self.input_shape(0), self.input_shape(1), self.input_shape(2)
        if data.rank_is_static and idx.rank_is_static and upd.rank_is_static and len(idx) and idx[-1].is_static:
            k = idx[-1].get_length()
            if k > len(data):
                raise self.fail(f"indices address {k} dimensions of data {data}")
            want = list(idx[:-1]) + list(data[k:])
            if len(want) != len(upd) or not all(a.compatible(b) for a, b in zip(want, upd)):
                raise self.fail(f"updates {upd} must have shape {PartialShape(want)}")
        return out

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        data, idx, upd = inputs
        k = idx.shape[-1]
        i = np.asarray(idx, dtype=np.int64).reshape(-1, k)
        i = _normalize_indices(self, i, np.array(data.shape[:k], dtype=np.int64))
        out = np.array(data, copy=True)
        rows = out.reshape((math.prod(data.shape[:k]),) + data.shape[k:])
        flat = np.ravel_multi_index(tuple(i[:, m] for m in range(k)), data.shape[:k]) if k else np.zeros(
            i.shape[0], np.int64)
        vals = np.asarray(upd).reshape((i.shape[0],) + data.shape[k:])
        if i.shape[0]:
            _scatter_reduce(self, rows, flat, vals, self.attrs.get("reduction", "none").lower(), True)
        return [rows.reshape(data.shape)]


@register_op
class ScatterNDUpdate3(_ScatterNDBase):
    """ScatterNDUpdate-3: write ``updates`` at the positions listed by the last axis of ``indices``."""

    type_name = "ScatterNDUpdate"
    version = "opset4"


@register_op
class ScatterNDUpdate(_ScatterNDBase):
    """ScatterNDUpdate-15: with ``reduction`` (none, sum, sub, prod, min, max)."""

    type_name = "ScatterNDUpdate"
    version = "opset15"
    attributes = (Attr("reduction", "str", "none"),)
    reductions = ("none", "sum", "sub", "prod", "min", "max")


@builder
def scatter_nd_update(data: Any, indices: Any, updates: Any, reduction: str | None = None,
                      name: str | None = None) -> Node:
    return ScatterNDUpdate([data, indices, updates], {"reduction": (reduction or "none").lower()}, name)


# -- Pad ----------------------------------------------------------------------------------------


class _PadBase(Node):
    num_inputs = (3, 4)
    attributes = (Attr("pad_mode", "str", "constant"),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        mode = self.attrs["pad_mode"].lower()
        if mode not in ("constant", "edge", "reflect", "symmetric"):
            raise self.fail(f"unknown pad_mode '{mode}'; known: constant, edge, reflect, symmetric")
        for i, what in ((1, "pads_begin"), (2, "pads_end")):
            check_int_input(self, i, what)
            s = self.input_shape(i)
            if s.rank_is_static and len(s) != 1:
                raise self.fail(f"{what} must be 1-D, got shape {s}")
        if self.get_input_size() == 4:
            s = self.input_shape(3)
            if s.rank_is_static and len(s) != 0:
                raise self.fail(f"pad_value must be a scalar, got shape {s}")
            if not self.input_type(0).compatible(self.input_type(3)):
                raise self.fail(f"pad_value type {self.input_type(3)} differs from data type {self.input_type(0)}")
        data = self.input_shape(0)
        et = self.input_type(0)
        if not data.rank_is_static:
            return [(et, data)]
        rank = len(data)
        for i in (1, 2):
            s = self.input_shape(i)
            if s.rank_is_static and s[0].is_static and s[0].get_length() != rank:
                raise self.fail(f"pads of length {s[0]} do not match the data rank {rank}")
        begin, end = const_ints(self, 1), const_ints(self, 2)
        out = []
        for a, d in enumerate(data):
            if begin is None or end is None:
                out.append(Dimension())
                continue
            b, e = begin[a], end[a]
            if d.is_static:
                n = d.get_length()
                if mode == "reflect" and max(b, e) > n - 1:
                    raise self.fail(f"reflect mode needs pads <= dimension - 1 on axis {a} (pads {b}, {e}, "
                                    f"dimension {n})")
                if mode == "symmetric" and max(b, e) > n:
                    raise self.fail(f"symmetric mode needs pads <= dimension on axis {a} (pads {b}, {e}, "
                                    f"dimension {n})")
                if n + b + e < 0:
                    raise self.fail(f"pads {b}, {e} remove more than the {n} elements of axis {a}")
                out.append(Dimension(n + b + e))
            else:
                lo, hi = bounds_of(d)
                out.append(dim_of(lo + b + e, hi if hi >= INF else hi + b + e))
        return [(et, PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        begin, end = static_ints(inputs[1]), static_ints(inputs[2])
        mode = self.attrs["pad_mode"].lower()
        widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
        if mode == "constant":
            value = inputs[3] if len(inputs) == 4 else np.zeros((), x.dtype)
            y = np.pad(x, widths, mode="constant", constant_values=np.asarray(value).astype(x.dtype))
        else:
            y = np.pad(x, widths, mode=mode)
        # negative pads crop the padded result
        crop = tuple(slice(max(-b, 0), n - max(-e, 0)) for b, e, n in zip(begin, end, y.shape))
        if any(s.stop < s.start for s in crop):
            raise InferenceError(f"ember: Pad '{self.friendly_name}': pads {begin}, {end} remove more than "
                                 f"the data's shape {x.shape}")
        return [np.ascontiguousarray(y[crop])]


@register_op
class Pad1(_PadBase):
    """Pad-1: pad ``data`` by ``pads_begin``/``pads_end`` (constant, edge, reflect, symmetric)."""

    type_name = "Pad"
    version = "opset1"


@register_op
class Pad(_PadBase):
    """Pad-12: Pad-1 where negative pads remove elements (applied after the padding)."""

    type_name = "Pad"
    version = "opset12"


@builder
def pad(arg: Any, pads_begin: Any, pads_end: Any, pad_mode: str, arg_pad_value: Any = None,
        name: str | None = None) -> Node:
    ins = [arg, int_list(pads_begin), int_list(pads_end)]
    if arg_pad_value is not None:
        ins.append(arg_pad_value)
    return Pad(ins, {"pad_mode": pad_mode.lower()}, name)


# -- DepthToSpace / SpaceToDepth ----------------------------------------------------------------


def _block_checks(node: Node) -> tuple[PartialShape, int, str]:
    bs = node.attrs["block_size"]
    mode = node.attrs["mode"].lower()
    if bs <= 0:
        raise node.fail(f"block_size must be positive, got {bs}")
    if mode not in ("blocks_first", "depth_first"):
        raise node.fail(f"unknown mode '{mode}'; known: blocks_first, depth_first")
    data = node.input_shape(0)
    if data.rank_is_static and len(data) < 3:
        raise node.fail(f"data must have rank >= 3, got {data}")
    return data, bs, mode


_BLOCK_ATTRS = (Attr("block_size", "int", 1), Attr("mode", "str"))


@register_op
class DepthToSpace(Node):
    """DepthToSpace-1: move blocks of channels into ``block_size`` x ... spatial blocks."""

    type_name = "DepthToSpace"
    version = "opset1"
    num_inputs = (1, 1)
    attributes = _BLOCK_ATTRS

    def infer(self) -> list[tuple[Type, PartialShape]]:
        data, bs, _ = _block_checks(self)
        if not data.rank_is_static:
            return [(self.input_type(0), data)]
        k = len(data) - 2
        c = data[1]
        div = bs ** k
        if c.is_static and c.get_length() % div:
            raise self.fail(f"channels {c} are not divisible by block_size^{k} = {div}")
        out = [data[0], dim_div(c, div)] + [d * bs for d in data[2:]]
        return [(self.input_type(0), PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        bs = self.attrs["block_size"]
        n, c, *sp = x.shape
        k = len(sp)
        cc = c // bs ** k
        if self.attrs["mode"].lower() == "blocks_first":
            y = x.reshape([n] + [bs] * k + [cc] + sp)
            order = [0, k + 1] + [a for i in range(k) for a in (k + 2 + i, 1 + i)]
        else:
            y = x.reshape([n, cc] + [bs] * k + sp)
            order = [0, 1] + [a for i in range(k) for a in (k + 2 + i, 2 + i)]
        return [np.ascontiguousarray(y.transpose(order)).reshape([n, cc] + [d * bs for d in sp])]


@register_op
class SpaceToDepth(Node):
    """SpaceToDepth-1: move ``block_size`` x ... spatial blocks into channels."""

    type_name = "SpaceToDepth"
    version = "opset1"
    num_inputs = (1, 1)
    attributes = _BLOCK_ATTRS

    def infer(self) -> list[tuple[Type, PartialShape]]:
        data, bs, _ = _block_checks(self)
        if not data.rank_is_static:
            return [(self.input_type(0), data)]
        k = len(data) - 2
        for d in data[2:]:
            if d.is_static and d.get_length() % bs:
                raise self.fail(f"spatial dimension {d} is not divisible by block_size {bs}")
        out = [data[0], data[1] * (bs ** k)] + [dim_div(d, bs) for d in data[2:]]
        return [(self.input_type(0), PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        bs = self.attrs["block_size"]
        n, c, *sp = x.shape
        k = len(sp)
        y = x.reshape([n, c] + [a for d in sp for a in (d // bs, bs)])
        blocks = [3 + 2 * i for i in range(k)]
        spatial = [2 + 2 * i for i in range(k)]
        if self.attrs["mode"].lower() == "blocks_first":
            order = [0] + blocks + [1] + spatial
        else:
            order = [0, 1] + blocks + spatial
        return [np.ascontiguousarray(y.transpose(order)).reshape([n, c * bs ** k] + [d // bs for d in sp])]


@builder
def depth_to_space(node: Any, mode: str, block_size: int = 1, name: str | None = None) -> Node:
    return DepthToSpace([node], {"mode": mode.lower(), "block_size": block_size}, name)


@builder
def space_to_depth(data: Any, mode: str, block_size: int = 1, name: str | None = None) -> Node:
    return SpaceToDepth([data], {"mode": mode.lower(), "block_size": block_size}, name)


# -- Reverse / ReverseSequence / Roll -----------------------------------------------------------


@register_op
class Reverse(Node):
    """Reverse-1: flip ``data`` along ``axis`` (``mode`` "index": axis numbers; "mask": one bool per axis)."""

    type_name = "Reverse"
    version = "opset1"
    num_inputs = (2, 2)
    attributes = (Attr("mode", "str"),)

    def _axes(self, axes: np.ndarray, rank: int) -> list[int]:
        mode = self.attrs["mode"].lower()
        flat = np.asarray(axes).reshape(-1)
        if mode == "mask":
            if flat.size != rank:
                raise self.fail(f"the mask has {flat.size} entries for data rank {rank}")
            return [i for i, m in enumerate(flat) if m]
        axes_n = [normalize(int(a), rank, self) for a in flat]
        if len(set(axes_n)) != len(axes_n):
            raise self.fail(f"axes {list(flat)} repeat an axis")
        return axes_n

    def infer(self) -> list[tuple[Type, PartialShape]]:
        mode = self.attrs["mode"].lower()
        if mode not in ("index", "mask"):
            raise self.fail(f"unknown mode '{mode}'; known: index, mask")
        check_rank_at_most(self, 1, 1, "axis")
        t = self.input_type(1)
        if mode == "mask" and not (t is Type.boolean or t.is_dynamic):
            raise self.fail(f"mask mode needs a boolean axis input, got {t}")
        if mode == "index":
            check_int_input(self, 1, "axis")
        data = self.input_shape(0)
        v = self.input_value(1)
        if v is not None and data.rank_is_static:
            self._axes(v, len(data))
        return [(self.input_type(0), data)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        axes = self._axes(inputs[1], x.ndim)
        return [np.ascontiguousarray(np.flip(x, axes)) if axes else np.array(x)]


@builder
def reverse(data: Any, axis: Any, mode: str, name: str | None = None) -> Node:
    """Reverse-1 (``openvino.opset1`` lists no builder; this follows the op's inputs)."""
    return Reverse([data, int_list(axis)], {"mode": mode.lower()}, name)


@register_op
class ReverseSequence(Node):
    """ReverseSequence-1: along ``seq_axis``, reverse the first ``seq_lengths[b]`` elements of each
    batch entry ``b`` (of ``batch_axis``)."""

    type_name = "ReverseSequence"
    version = "opset1"
    num_inputs = (2, 2)
    attributes = (Attr("batch_axis", "int", 0), Attr("seq_axis", "int", 1))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = self.input_type(1)
        if not (t.is_real or t.is_integral_number or t.is_dynamic):
            raise self.fail(f"seq_lengths must be numeric, got {t}")
        data, lens = self.input_shape(0), self.input_shape(1)
        if lens.rank_is_static and len(lens) != 1:
            raise self.fail(f"seq_lengths must be 1-D, got shape {lens}")
        if not data.rank_is_static:
            return [(self.input_type(0), data)]
        if len(data) < 2:
            raise self.fail(f"data must have rank >= 2, got {data}")
        b = normalize(self.attrs["batch_axis"], len(data), self, "batch_axis")
        normalize(self.attrs["seq_axis"], len(data), self, "seq_axis")
        out = list(data)
        if lens.rank_is_static:
            out[b] = merge_dims(self, data[b], lens[0], "batch dimension and seq_lengths")
        return [(self.input_type(0), PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, lens = inputs
        b = normalize(self.attrs["batch_axis"], x.ndim, self, "batch_axis")
        s = normalize(self.attrs["seq_axis"], x.ndim, self, "seq_axis")
        out = np.array(x, copy=True)
        n = x.shape[s]
        for i, length in enumerate(np.asarray(lens).reshape(-1)):
            m = int(length)
            if m > n or m < 0:
                raise InferenceError(f"ember: ReverseSequence '{self.friendly_name}': seq_lengths[{i}] = {m} is "
                                     f"outside [0, {n}]")
            src = [slice(None)] * x.ndim
            src[b] = i
            src[s] = slice(0, m)
            dst_view = out[tuple(src)]
            dst_view[...] = np.flip(x[tuple(src)], axis=s - (1 if b < s else 0))
        return [out]


@builder
def reverse_sequence(input: Any, seq_lengths: Any, batch_axis: int, seq_axis: int,  # noqa: A002
                     name: str | None = None) -> Node:
    return ReverseSequence([input, int_list(seq_lengths)], {"batch_axis": int(batch_axis), "seq_axis": int(seq_axis)},
                           name)


@register_op
class Roll(Node):
    """Roll-7: shift elements of ``data`` cyclically by ``shift`` along ``axes`` (shifts on a repeated
    axis add up; a scalar shift applies to every axis)."""

    type_name = "Roll"
    version = "opset7"
    num_inputs = (3, 3)

    def _pairs(self, shift: list[int], axes: list[int], rank: int) -> tuple[list[int], list[int]]:
        if len(shift) == 1 and len(axes) > 1:
            shift = shift * len(axes)
        if len(shift) != len(axes):
            raise self.fail(f"shift {shift} and axes {axes} differ in length")
        return shift, [normalize(a, rank, self) for a in axes]

    def infer(self) -> list[tuple[Type, PartialShape]]:
        check_int_input(self, 1, "shift")
        check_int_input(self, 2, "axes")
        check_rank_at_most(self, 1, 1, "shift")
        check_rank_at_most(self, 2, 1, "axes")
        data = self.input_shape(0)
        shift, axes = const_ints(self, 1), const_ints(self, 2)
        if shift is not None and axes is not None and data.rank_is_static:
            self._pairs(shift, axes, len(data))
        return [(self.input_type(0), data)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, shift, axes = inputs
        s, a = self._pairs(static_ints(shift), static_ints(axes), x.ndim)
        return [np.roll(x, s, a) if a else np.array(x)]


@builder
def roll(data: Any, shift: Any, axes: Any, name: str | None = None) -> Node:
    return Roll([data, int_list(shift), int_list(axes)], None, name)


# -- OneHot -------------------------------------------------------------------------------------


class _OneHotBase(Node):
    num_inputs = (4, 4)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        check_int_input(self, 0, "indices")
        check_int_input(self, 1, "depth")
        for i, what in ((1, "depth"), (2, "on_value"), (3, "off_value")):
            s = self.input_shape(i)
            if s.rank_is_static and not (len(s) == 0 or (len(s) == 1 and s[0].compatible(1))):
                raise self.fail(f"{what} must be a scalar, got shape {s}")
        et = merge_types(self, [self.input_type(2), self.input_type(3)], "on_value and off_value")
        mode = self.attrs.get("negative_indices_mode", "ignore_negative").lower()
        if mode not in ("ignore_negative", "normalize"):
            raise self.fail(f"unknown negative_indices_mode '{mode}'; known: ignore_negative, normalize")
        idx = self.input_shape(0)
        if not idx.rank_is_static:
            return [(et, PartialShape.dynamic())]
        axis = normalize(self.attrs["axis"], len(idx) + 1, self)
        depth = value_bounds(self.input(1).source)
        if depth is not None and len(depth) == 1 and depth[0][1] < 0:
            raise self.fail(f"depth must be non-negative, got {depth[0][0]}")
        d = dim_of(*depth[0]) if depth is not None and len(depth) == 1 else Dimension()
        out = list(idx)
        out.insert(axis, d)
        return [(et, PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        idx, depth, on, off = inputs
        n = int(np.asarray(depth).reshape(-1)[0])
        axis = normalize(self.attrs["axis"], idx.ndim + 1, self)
        i = np.asarray(idx, dtype=np.int64)
        if self.attrs.get("negative_indices_mode", "ignore_negative").lower() == "normalize":
            i = np.where(i < 0, i + n, i)
        hot = i[..., None] == np.arange(n)
        et = self.output(0).element_type.dtype
        out = np.where(hot, np.asarray(on).reshape(()).astype(et), np.asarray(off).reshape(()).astype(et))
        return [np.ascontiguousarray(np.moveaxis(out, -1, axis))]


@register_op
class OneHot1(_OneHotBase):
    """OneHot-1: ``on_value`` where the new ``axis`` index equals ``indices``, else ``off_value``
    (negative or too large indices give an all-off row)."""

    type_name = "OneHot"
    version = "opset1"
    attributes = (Attr("axis", "int"),)


@register_op
class OneHot(_OneHotBase):
    """OneHot-16: OneHot-1 where ``negative_indices_mode="normalize"`` counts negative indices from ``depth``."""

    type_name = "OneHot"
    version = "opset16"
    attributes = (Attr("axis", "int"), Attr("negative_indices_mode", "str", "ignore_negative"))


@builder
def one_hot(indices: Any, depth: Any, on_value: Any, off_value: Any, axis: int,
            negative_indices_mode: str | None = None, name: str | None = None) -> Node:
    attrs = {"axis": axis, "negative_indices_mode": (negative_indices_mode or "ignore_negative").lower()}
    return OneHot([indices, depth, on_value, off_value], attrs, name)


# -- Einsum -------------------------------------------------------------------------------------

_TERM = re.compile(r"^([a-zA-Z]|\.\.\.)*$")


def _parse_einsum(node: Node, equation: str, n_inputs: int) -> tuple[list[list[str]], list[str] | None]:
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != n_inputs:
        raise node.fail(f"equation '{equation}' has {len(terms)} inputs, the node has {n_inputs}")
    for t in terms + ([rhs] if arrow else []):
        if not _TERM.match(t) or t.count("...") > 1:
            raise node.fail(f"equation '{equation}': bad term '{t}'")
    split = [re.findall(r"\.\.\.|[a-zA-Z]", t) for t in terms]
    return split, (re.findall(r"\.\.\.|[a-zA-Z]", rhs) if arrow else None)


@register_op
class Einsum(Node):
    """Einsum-7: Einstein summation over the inputs as ``equation`` says (numpy's einsum rules)."""

    type_name = "Einsum"
    version = "opset7"
    num_inputs = (1, None)
    attributes = (Attr("equation", "str"),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        n = self.get_input_size()
        et = merge_types(self, [self.input_type(i) for i in range(n)])
        terms, out_labels = _parse_einsum(self, self.attrs["equation"], n)
        if out_labels is None:
            counts: dict[str, int] = {}
            for t in terms:
                for lab in t:
                    counts[lab] = counts.get(lab, 0) + 1
            ell = ["..."] if any("..." in t for t in terms) else []
            out_labels = ell + sorted(lab for lab, c in counts.items() if c == 1 and lab != "...")
        dims: dict[str, Dimension] = {}
        ellipsis: PartialShape | None = PartialShape([])
        for i, t in enumerate(terms):
            s = self.input_shape(i)
            if not s.rank_is_static:
                if "..." in t:
                    ellipsis = None
                continue
            n_named = sum(1 for lab in t if lab != "...")
            if len(s) < n_named or ("..." not in t and len(s) != n_named):
                raise self.fail(f"input {i} of shape {s} does not fit the term '{''.join(t)}'")
            k = 0
            for lab in t:
                if lab == "...":
                    m = len(s) - n_named
                    if ellipsis is not None:
                        ellipsis = bidirectional_shape(self, ellipsis, PartialShape(list(s)[k:k + m]))
                    k += m
                else:
                    dims[lab] = merge_dims(self, dims.get(lab, Dimension()), s[k], f"label '{lab}'")
                    k += 1
        if "..." in out_labels and ellipsis is None:
            return [(et, PartialShape.dynamic())]
        out: list[Dimension] = []
        for lab in out_labels:
            if lab == "...":
                out.extend(ellipsis or [])
            elif lab not in dims and not any(lab in t for t in terms):
                raise self.fail(f"output label '{lab}' of '{self.attrs['equation']}' is not an input label")
            else:
                out.append(dims.get(lab, Dimension()))
        return [(et, PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        eq = self.attrs["equation"].replace(" ", "")
        out = np.einsum(eq, *inputs)
        return [np.asarray(out).astype(self.output(0).element_type.dtype, copy=False)]


@builder
def einsum(inputs: Sequence[Any], equation: str, name: str | None = None) -> Node:
    return Einsum(list(inputs), {"equation": equation}, name)
