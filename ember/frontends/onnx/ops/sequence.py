"""ONNX sequences and optionals: resolved at conversion time where possible, else at run time.

OpenVINO models carry tensors only, so a sequence whose items are known while the graph is
converted stays a Python list of ports (``SequenceValue``) and an optional an
``OptionalValue``; ops on them become plain tensor ops. Where the length is known only at run
time (a sequence-typed model input, a sequence carried through a Loop, a split computed at
run time, a sequence returned by the model) the value becomes a ``Type.sequence`` port and
the ops ember's own sequence ops (``ember.ops.sequence``). An optional whose presence is known
only at run time is a ``Type.sequence`` port of zero or one item.
"""

from __future__ import annotations

from typing import Any

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext, OptionalValue, SequenceValue
from ember.frontends.onnx.loader import element_type
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const, convert, i64, rank_of
from ember.graph.node import Output
from ember.graph.types import Type, as_type


def is_runtime_sequence(v: Any) -> bool:
    return isinstance(v, Output) and v.element_type is Type.sequence


def item_type(v: Any) -> Type:
    """The element type of a sequence's items, dynamic when unknown."""
    if isinstance(v, SequenceValue):
        return v.elem_type or Type.dynamic
    if isinstance(v, Output):
        t = v.rt_info.get("sequence_element_type")
        return Type.dynamic if t is None else as_type(t)
    return Type.dynamic


def _tag(port: Output, et: Type | None) -> Output:
    if et is not None and not et.is_dynamic:
        port.rt_info["sequence_element_type"] = et
    return port


def materialize(v: Any) -> Output:
    """A run-time value for ``v``: a sequence port for a sequence, a port of zero or one item
    for an optional, the port itself for a tensor."""
    if isinstance(v, SequenceValue):
        return _tag(ops.sequence_construct(v.items).output(0), v.elem_type)
    if isinstance(v, OptionalValue):
        if v.runtime:
            return v.value
        if v.value is None:
            return ops.sequence_empty().output(0)
        return ops.sequence_construct([materialize(v.value)]).output(0)
    return v


def optional_get(ctx: NodeContext, v: OptionalValue) -> Any:
    """The value a run-time optional holds (a tensor or a sequence port)."""
    if v.kind == "sequence":
        return _tag(ops.sequence_at(v.value, i64(0), Type.sequence).output(0), v.elem_type)
    return ops.sequence_at(v.value, i64(0), v.elem_type or Type.dynamic).output(0)


def _seq(ctx: NodeContext, i: int) -> SequenceValue | Output:
    v = ctx.value(i)
    if isinstance(v, OptionalValue):
        v = optional_get(ctx, v) if v.runtime else v.value
    if not isinstance(v, SequenceValue) and not is_runtime_sequence(v):
        raise ctx.fail(f"input {i} must be a sequence")
    return v


def _position(ctx: NodeContext, i: int, length: int, insert: bool = False) -> int | None:
    """The constant position of input ``i`` (None when it is known only at run time)."""
    if not ctx.has_input(i):
        return length if insert else length - 1
    p = ctx.const_ints(i)
    if p is None:
        return None
    pos = p[0] + length if p[0] < 0 else p[0]
    if not 0 <= pos <= (length if insert else length - 1):
        raise ctx.fail(f"position {p[0]} is out of range for a sequence of {length}")
    return pos


def _runtime_position(ctx: NodeContext, i: int) -> Output | None:
    return convert(ctx.req(i), Type.i64) if ctx.has_input(i) else None


@converter("SequenceEmpty", since=11)
def sequence_empty(ctx: NodeContext) -> SequenceValue:
    return SequenceValue([], element_type(ctx.attr("dtype", 1)))


@converter("SequenceConstruct", since=11)
def sequence_construct(ctx: NodeContext) -> SequenceValue:
    items = [x for x in ctx.inputs() if x is not None]
    return SequenceValue(items, items[0].element_type if items else None)


@converter("SequenceLength", since=11)
def sequence_length(ctx: NodeContext) -> Output:
    seq = _seq(ctx, 0)
    if isinstance(seq, SequenceValue):
        return const(len(seq.items), Type.i64)
    return ops.sequence_length(seq).output(0)


@converter("SequenceAt", since=11)
def sequence_at(ctx: NodeContext) -> Output:
    seq = _seq(ctx, 0)
    if isinstance(seq, SequenceValue):
        if ctx.const_ints(1) is None and seq.items:
            stacked = ops.concat([ops.unsqueeze(x, i64([0])) for x in seq.items], 0).output(0)
            n = len(seq.items)
            p = ops.reshape(convert(ctx.req(1), Type.i64), i64([]), False).output(0)
            p = ops.select(ops.less(p, i64(0)), ops.add(p, i64(n)), p).output(0)
            return ops.gather(stacked, p, i64(0)).output(0)
        pos = _position(ctx, 1, len(seq.items))
        assert pos is not None
        return seq.items[pos]
    return ops.sequence_at(seq, convert(ctx.req(1), Type.i64), item_type(seq)).output(0)


@converter("SequenceInsert", since=11)
def sequence_insert(ctx: NodeContext) -> SequenceValue | Output:
    seq, x = _seq(ctx, 0), ctx.req(1)
    if isinstance(seq, SequenceValue):
        pos = _position(ctx, 2, len(seq.items), insert=True)
        if pos is not None:
            items = list(seq.items)
            items.insert(pos, x)
            return SequenceValue(items, seq.elem_type or x.element_type)
    et = item_type(seq)
    port = ops.sequence_insert(materialize(seq), x, _runtime_position(ctx, 2)).output(0)
    return _tag(port, x.element_type if et.is_dynamic else et)


@converter("SequenceErase", since=11)
def sequence_erase(ctx: NodeContext) -> SequenceValue | Output:
    seq = _seq(ctx, 0)
    if isinstance(seq, SequenceValue):
        pos = _position(ctx, 1, len(seq.items))
        if pos is not None:
            items = list(seq.items)
            del items[pos]
            return SequenceValue(items, seq.elem_type)
    port = ops.sequence_erase(materialize(seq), _runtime_position(ctx, 1)).output(0)
    return _tag(port, item_type(seq))


@converter("ConcatFromSequence", since=11)
def concat_from_sequence(ctx: NodeContext) -> Output:
    seq = _seq(ctx, 0)
    axis = ctx.attr("axis")
    new_axis = bool(ctx.attr("new_axis", 0))
    if not isinstance(seq, SequenceValue):
        return ops.concat_from_sequence(seq, axis, new_axis, item_type(seq)).output(0)
    if not seq.items:
        raise ctx.fail("cannot concatenate an empty sequence")
    items = seq.items
    if new_axis:
        r = rank_of(items[0]) + 1
        axis = axis + r if axis < 0 else axis
        items = [ops.unsqueeze(x, i64([axis])).output(0) for x in items]
    return ops.concat(items, axis).output(0)


@converter("SplitToSequence", since=11)
def split_to_sequence(ctx: NodeContext) -> SequenceValue | Output:
    x = ctx.req(0)
    axis = ctx.attr("axis", 0)
    keepdims = bool(ctx.attr("keepdims", 1))
    ps = x.partial_shape
    dim = ps[axis + len(ps) if axis < 0 else axis] if ps.rank_is_static else None
    split = ctx.const_ints(1) if ctx.has_input(1) else None
    static = dim is not None and dim.is_static and (split is not None or not ctx.has_input(1))
    if not static:
        port = ops.split_to_sequence(x, ctx.req(1) if ctx.has_input(1) else None, axis, keepdims).output(0)
        return _tag(port, x.element_type)
    axis = axis + len(ps) if axis < 0 else axis
    assert dim is not None
    if split is not None:
        if len(ctx.req(1).partial_shape) == 0:
            n, size = dim.get_length(), split[0]
            split = [min(size, n - k) for k in range(0, n, size)]
        parts = ops.variadic_split(x, i64(axis), i64(split)).outputs()
        return SequenceValue(parts, x.element_type)
    parts = ops.split(x, i64(axis), dim.get_length()).outputs() if dim.get_length() > 1 else [x]
    if not keepdims:
        parts = [ops.squeeze(p, i64([axis])).output(0) for p in parts]
    return SequenceValue(parts, x.element_type)


@converter("Optional", since=15)
def optional(ctx: NodeContext) -> OptionalValue:
    if ctx.has_input(0):
        v = ctx.value(0)
        seq = isinstance(v, SequenceValue) or is_runtime_sequence(v)
        et = item_type(v) if seq else getattr(v, "element_type", None)
        return OptionalValue(v, et, "sequence" if seq else "tensor")
    tp = ctx.attr("type", None)
    kind = "sequence" if tp is not None and tp.WhichOneof("value") == "sequence_type" else "tensor"
    return OptionalValue(None, None, kind)


@converter("OptionalHasElement", since=15)
def optional_has_element(ctx: NodeContext) -> Output:
    v = ctx.value(0) if ctx.has_input(0) else None
    if isinstance(v, OptionalValue) and v.runtime:
        return ops.greater(ops.sequence_length(v.value), i64(0)).output(0)
    has = v is not None and not (isinstance(v, OptionalValue) and v.value is None)
    return const(has, Type.boolean)


@converter("OptionalGetElement", since=15)
def optional_get_element(ctx: NodeContext) -> Output | SequenceValue:
    v = ctx.value(0)
    if isinstance(v, OptionalValue):
        if v.runtime:
            return optional_get(ctx, v)
        if v.value is None:
            raise ctx.fail("the optional is empty")
        return v.value
    return v
