"""Shape chains folded into Reshape (level 1).

Exporters write a Flatten or a view with a dynamic batch as a small graph that computes the
target shape at run time: ``ShapeOf -> Gather/Slice/StridedSlice -> ReduceProd -> Concat ->
Reshape``. When every element of that shape is a copy of the Reshape input's own dimension at
the same position, a static value, or one remaining unknown (a product, a dimension from
elsewhere), the chain is a constant pattern for a ``special_zero`` Reshape: 0 copies the input
dimension, -1 is inferred. Graphs get smaller and shape inference sees the static dims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import ember.opset as ops
from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.ops.elementwise import BinaryElementwise, UnaryElementwise
from ember.passes.matcher import Match, Pattern, rewrite, rule
from ember.passes.pipeline import note_fired, register_pass


@dataclass(frozen=True)
class Dim:
    """Dimension ``axis`` of the tensor ``port`` (known only at run time)."""

    port: Output
    axis: int


class _Opaque:
    """A value the analysis cannot name (a product of dynamic dims, arithmetic...)."""

    def __repr__(self) -> str:
        return "?"


OPAQUE = _Opaque()
Elem = int | Dim | _Opaque


@dataclass(frozen=True)
class ShapeValue:
    """A small integer vector (or scalar) computed from shapes, element by element."""

    elems: tuple[Elem, ...]
    scalar: bool = False


def _const_ints(port: Output) -> np.ndarray | None:
    node = port.node
    if isinstance(node, Constant) and node.data.dtype.kind in "iu":
        return node.data
    return None


def _vector(port: Output, limit: int = 64) -> ShapeValue | None:
    """What ``port`` computes, element by element, or None when it is not a shape chain."""
    node = port.node
    data = _const_ints(port)
    if data is not None:
        if data.ndim > 1 or data.size > limit:
            return None
        return ShapeValue(tuple(int(v) for v in data.reshape(-1)), data.ndim == 0)
    handler = _HANDLERS.get(node.type_name)
    return handler(node) if handler is not None else None


def _shape_of(node: Node) -> ShapeValue | None:
    src = node.input_values()[0]
    shape = src.partial_shape
    if not shape.rank_is_static:
        return None
    return ShapeValue(tuple(d.get_length() if d.is_static else Dim(src, i) for i, d in enumerate(shape)))


def _gather(node: Node) -> ShapeValue | None:
    if node.attrs.get("batch_dims", 0) != 0:
        return None
    ins = node.input_values()
    data, idx, axis = _vector(ins[0]), _const_ints(ins[1]), _const_ints(ins[2])
    if data is None or data.scalar or idx is None or axis is None or idx.ndim > 1:
        return None
    if int(axis.reshape(-1)[0]) not in (0, -1):
        return None
    n = len(data.elems)
    picked = []
    for i in (int(v) for v in idx.reshape(-1)):
        if i < 0 and node.version == "opset8":
            i += n
        if not 0 <= i < n:
            return None  # out of range: Gather gives 0 (or fails), leave it to the device
        picked.append(data.elems[i])
    return ShapeValue(tuple(picked), idx.ndim == 0)


def _slice(node: Node) -> ShapeValue | None:
    ins = node.input_values()
    data = _vector(ins[0])
    bounds = [_const_ints(p) for p in ins[1:]]
    if data is None or data.scalar or any(b is None or b.size != 1 for b in bounds):
        return None
    start, stop, step = (int(b.reshape(-1)[0]) for b in bounds[:3])  # type: ignore[union-attr]
    if len(bounds) == 4 and int(bounds[3].reshape(-1)[0]) not in (0, -1):  # type: ignore[union-attr]
        return None
    if step == 0:
        return None
    return ShapeValue(data.elems[slice(start, stop, step)])


def _strided_slice(node: Node) -> ShapeValue | None:
    ins = node.input_values()
    data = _vector(ins[0])
    bounds = [_const_ints(p) for p in ins[1:]]
    if data is None or data.scalar or any(b is None or b.size != 1 for b in bounds):
        return None
    a = node.attrs
    if any(a.get(k) and any(a[k][:1]) for k in ("new_axis_mask", "ellipsis_mask")) or \
            any(any(a.get(k, [])[1:]) for k in ("begin_mask", "end_mask", "shrink_axis_mask")):
        return None
    begin, end = (int(b.reshape(-1)[0]) for b in bounds[:2])  # type: ignore[union-attr]
    step = int(bounds[2].reshape(-1)[0]) if len(bounds) > 2 else 1  # type: ignore[union-attr]
    if step == 0:
        return None
    first = lambda k: bool(a.get(k)) and bool(a[k][0])  # noqa: E731
    if first("shrink_axis_mask"):
        n = len(data.elems)
        i = begin + n if begin < 0 else begin
        return ShapeValue((data.elems[i],), True) if 0 <= i < n else None
    s = slice(None if first("begin_mask") else begin, None if first("end_mask") else end, step)
    return ShapeValue(data.elems[s])


def _product(elems: tuple[Elem, ...]) -> Elem:
    known = [e for e in elems if isinstance(e, int)]
    rest = [e for e in elems if not isinstance(e, int)]
    value = math.prod(known)
    if not rest:
        return value
    if len(rest) == 1 and value == 1:
        return rest[0]
    return OPAQUE


def _reduce_prod(node: Node) -> ShapeValue | None:
    data = _vector(node.input_values()[0])
    axes = _const_ints(node.input_values()[1])
    if data is None or axes is None or (not data.scalar and not set(axes.reshape(-1).tolist()) <= {0, -1}):
        return None
    keep = bool(node.attrs.get("keep_dims", False)) and not data.scalar
    return ShapeValue((_product(data.elems),), not keep)


def _concat(node: Node) -> ShapeValue | None:
    if node.attrs.get("axis") not in (0, -1):
        return None
    elems: list[Elem] = []
    for p in node.input_values():
        v = _vector(p)
        if v is None or v.scalar:
            return None
        elems += v.elems
    return ShapeValue(tuple(elems))


def _to_vector(node: Node) -> ShapeValue | None:
    """Unsqueeze / Reshape / Squeeze between a scalar and a one-element vector."""
    v = _vector(node.input_values()[0])
    if v is None or len(v.elems) != 1:
        return None
    out = node.output(0).partial_shape
    if not out.rank_is_static or len(out) > 1:
        return None
    return ShapeValue(v.elems, len(out) == 0)


def _same(node: Node) -> ShapeValue | None:
    """Convert to i32/i64 from an integer type: shape values stay."""
    if node.output(0).element_type.name not in ("i32", "i64") or not node.input_type(0).is_integral_number:
        return None
    return _vector(node.input_values()[0])


def _multiply(node: Node) -> ShapeValue | None:
    a, b = (_vector(p) for p in node.input_values())
    if a is None or b is None:
        return None
    if len(a.elems) == 1 and len(b.elems) != 1:
        a = ShapeValue(a.elems * len(b.elems), b.scalar)
    if len(b.elems) == 1 and len(a.elems) != 1:
        b = ShapeValue(b.elems * len(a.elems), a.scalar)
    if len(a.elems) != len(b.elems):
        return None
    return ShapeValue(tuple(_product((x, y)) for x, y in zip(a.elems, b.elems)), a.scalar and b.scalar)


_HANDLERS = {"ShapeOf": _shape_of, "Gather": _gather, "Slice": _slice, "StridedSlice": _strided_slice,
             "ReduceProd": _reduce_prod, "Concat": _concat, "Unsqueeze": _to_vector, "Squeeze": _to_vector,
             "Reshape": _to_vector, "Convert": _same, "Multiply": _multiply}


# --- which dims are the same: walk back through ops that keep a dimension ----------------

_POINTWISE = {"Convert", "Clamp", "Swish", "HardSigmoid", "Selu", "SoftMax", "LogSoftmax", "MVN", "NormalizeL2",
              "LRN", "GRN", "CumSum", "Reverse", "Roll"}
_BROADCASTING = {"PRelu", "Select", "FakeQuantize"}
_KEEP_BATCH = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
               "DeformableConvolution", "MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool"}
_REDUCES = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
            "ReduceLogicalAnd", "ReduceLogicalOr"}


def _rank(port: Output) -> int | None:
    shape = port.partial_shape
    return len(shape) if shape.rank_is_static else None


def _dim_is_one(port: Output, axis: int) -> bool:
    d = port.partial_shape[axis]
    return d.is_static and d.get_length() == 1


def _step(port: Output, axis: int) -> list[tuple[Output, int]] | None:
    """Inputs (and their axes) whose dimension ``axis`` of ``port`` is a copy of, or None."""
    node = port.node
    ins = node.input_values()
    t = node.type_name
    rank = _rank(port)
    if rank is None or port.index != 0:
        return None
    if isinstance(node, UnaryElementwise) or t in _POINTWISE:
        return [(ins[0], axis)] if _rank(ins[0]) == rank else None
    if t == "BatchNormInference":
        data = ins[2] if node.version == "opset1" else ins[0]
        return [(data, axis)] if _rank(data) == rank else None
    if isinstance(node, BinaryElementwise) or t in _BROADCASTING:
        if str(node.attrs.get("auto_broadcast", "numpy")).lower() != "numpy":
            return None
        picked = []
        for p in ins:
            r = _rank(p)
            if r is None:
                return None
            a = axis - (rank - r)
            if a >= 0 and not _dim_is_one(p, a):
                picked.append((p, a))
        return picked or None
    if t in _KEEP_BATCH:
        return [(ins[0], 0)] if axis == 0 else None
    if t in _REDUCES:
        axes = _const_ints(ins[1])
        r = _rank(ins[0])
        if axes is None or r is None:
            return None
        reduced = {int(a) + r if a < 0 else int(a) for a in axes.reshape(-1)}
        kept = [a for a in range(r) if node.attrs.get("keep_dims") or a not in reduced]
        src = kept[axis] if axis < len(kept) else None
        return [(ins[0], src)] if src is not None and src not in reduced else None
    if t == "Pad":
        begin, end = _const_ints(ins[1]), _const_ints(ins[2])
        if begin is None or end is None or axis >= begin.size or axis >= end.size:
            return None
        return [(ins[0], axis)] if begin.reshape(-1)[axis] == 0 and end.reshape(-1)[axis] == 0 else None
    if t == "Transpose":
        perm = _const_ints(ins[1])
        return [(ins[0], int(perm.reshape(-1)[axis]))] if perm is not None and perm.size == rank else None
    if t == "Reshape":
        target = _const_ints(ins[1])
        if target is None or not node.attrs.get("special_zero") or axis >= target.size:
            return None
        return [(ins[0], axis)] if target.reshape(-1)[axis] == 0 else None
    if t == "Concat":
        cat = node.attrs.get("axis", 0)
        return [(ins[0], axis)] if (cat + rank if cat < 0 else cat) != axis else None
    return None


def origin(port: Output, axis: int, memo: dict[tuple[Output, int], tuple[Output, int]] | None = None
           ) -> tuple[Output, int]:
    """The earliest tensor dimension that ``port``'s dimension ``axis`` is known to equal.

    Two dims with the same origin are equal at run time (a batch carried through
    convolutions, pooling, elementwise ops...). ``memo`` caches answers across calls."""
    memo = {} if memo is None else memo
    start = (port, axis)
    path = []
    while (port, axis) not in memo:
        path.append((port, axis))
        steps = _step(port, axis)
        if not steps:
            break
        first = origin(*steps[0], memo) if len(steps) > 1 else None
        if first is not None and any(origin(p, a, memo) != first for p, a in steps[1:]):
            break  # inputs broadcast dims from different places
        port, axis = steps[0]
    found = memo.get((port, axis), (port, axis))
    for key in path:
        memo[key] = found
    return memo.get(start, found)


def _same_dim(e: Dim, data: Output, axis: int, memo: dict[tuple[Output, int], tuple[Output, int]]) -> bool:
    try:
        return origin(e.port, e.axis, memo) == origin(data, axis, memo)
    except RecursionError:  # residual branches nested deeper than Python's stack: no proof, no fold
        return False


def reshape_pattern(data: Output, target: ShapeValue, special_zero: bool) -> list[int] | None:
    """The ``special_zero`` pattern equal to reshaping ``data`` to ``target``, or None."""
    in_shape = data.partial_shape
    memo: dict[tuple[Output, int], tuple[Output, int]] = {}
    pattern: list[int] = []
    for j, e in enumerate(target.elems):
        if isinstance(e, Dim) and in_shape.rank_is_static and j < len(in_shape) and _same_dim(e, data, j, memo):
            pattern.append(0)
        elif isinstance(e, int) and e == 0:
            # a literal 0 means "copy" only when the original already said so (or the dim is 0)
            static_zero = in_shape.rank_is_static and j < len(in_shape) and in_shape[j].is_static \
                and in_shape[j].get_length() == 0
            if not (special_zero or static_zero):
                return None
            pattern.append(0)
        elif isinstance(e, int) and e >= -1:
            pattern.append(e)
        elif isinstance(e, int):
            return None
        else:
            pattern.append(-1)
    return pattern if pattern.count(-1) <= 1 else None


def _dynamic_target(n: Node) -> bool:
    return not isinstance(n.input_values()[1].node, Constant)


@rule(Pattern("Reshape", name="reshape", pred=_dynamic_target))
def shape_chain_reshape(m: Match) -> Output | None:
    node = m["reshape"]
    data, target = node.input_values()
    value = _vector(target)
    if value is None or value.scalar:
        return None
    pattern = reshape_pattern(data, value, bool(node.attrs.get("special_zero", False)))
    if pattern is None:
        return None
    shape = ops.constant(np.asarray(pattern, dtype=np.int64))
    return ops.reshape(data, shape, True, name=node.friendly_name).output(0)


@register_pass("fold_shape_chains", level=1)
def fold_shape_chains(model: Model) -> Model:
    """Fold ShapeOf -> Gather/Slice/ReduceProd -> Concat chains into a constant Reshape pattern.

    The Reshape gets ``special_zero``: 0 copies the input dim, -1 is inferred."""
    note_fired(sum(rewrite(model, [shape_chain_reshape]).values()))
    return model
