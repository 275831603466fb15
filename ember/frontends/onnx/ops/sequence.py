"""ONNX sequences and optionals, resolved at conversion time.

OpenVINO models carry tensors only, so a sequence is kept as a Python list of ports while the
graph is converted (``SequenceValue``) and an optional as ``OptionalValue``. Every op whose
result depends only on the sequence's structure (its length, an item at a constant position)
converts; a sequence that reaches a model input or output cannot.
"""

from __future__ import annotations

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext, OptionalValue, SequenceValue
from ember.frontends.onnx.loader import element_type
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const, convert, i64, rank_of
from ember.graph.node import Output
from ember.graph.types import Type


def _seq(ctx: NodeContext, i: int) -> SequenceValue:
    v = ctx.value(i)
    if isinstance(v, OptionalValue):
        v = v.value
    if not isinstance(v, SequenceValue):
        raise ctx.fail(f"input {i} must be a sequence")
    return v


def _position(ctx: NodeContext, i: int, length: int, insert: bool = False) -> int:
    if not ctx.has_input(i):
        return length if insert else length - 1
    p = ctx.const_ints(i)
    if p is None:
        raise ctx.fail("the position must be known at conversion time")
    pos = p[0] + length + (1 if insert else 0) if p[0] < 0 else p[0]
    if not 0 <= pos <= (length if insert else length - 1):
        raise ctx.fail(f"position {p[0]} is out of range for a sequence of {length}")
    return pos


@converter("SequenceEmpty", since=11)
def sequence_empty(ctx: NodeContext) -> SequenceValue:
    return SequenceValue([], element_type(ctx.attr("dtype", 1)))


@converter("SequenceConstruct", since=11)
def sequence_construct(ctx: NodeContext) -> SequenceValue:
    items = [x for x in ctx.inputs() if x is not None]
    return SequenceValue(items, items[0].element_type if items else None)


@converter("SequenceLength", since=11)
def sequence_length(ctx: NodeContext) -> Output:
    return const(len(_seq(ctx, 0).items), Type.i64)


@converter("SequenceAt", since=11)
def sequence_at(ctx: NodeContext) -> Output:
    seq = _seq(ctx, 0)
    if ctx.const_ints(1) is None and seq.items:
        stacked = ops.concat([ops.unsqueeze(x, i64([0])) for x in seq.items], 0).output(0)
        n = len(seq.items)
        p = ops.reshape(convert(ctx.req(1), Type.i64), i64([]), False).output(0)
        p = ops.select(ops.less(p, i64(0)), ops.add(p, i64(n)), p).output(0)
        return ops.gather(stacked, p, i64(0)).output(0)
    return seq.items[_position(ctx, 1, len(seq.items))]


@converter("SequenceInsert", since=11)
def sequence_insert(ctx: NodeContext) -> SequenceValue:
    seq = _seq(ctx, 0)
    items = list(seq.items)
    items.insert(_position(ctx, 2, len(items), insert=True), ctx.req(1))
    return SequenceValue(items, seq.elem_type or ctx.req(1).element_type)


@converter("SequenceErase", since=11)
def sequence_erase(ctx: NodeContext) -> SequenceValue:
    seq = _seq(ctx, 0)
    items = list(seq.items)
    del items[_position(ctx, 1, len(items))]
    return SequenceValue(items, seq.elem_type)


@converter("ConcatFromSequence", since=11)
def concat_from_sequence(ctx: NodeContext) -> Output:
    seq = _seq(ctx, 0)
    if not seq.items:
        raise ctx.fail("cannot concatenate an empty sequence")
    axis = ctx.attr("axis")
    items = seq.items
    if ctx.attr("new_axis", 0):
        r = rank_of(items[0]) + 1
        axis = axis + r if axis < 0 else axis
        items = [ops.unsqueeze(x, i64([axis])).output(0) for x in items]
    return ops.concat(items, axis).output(0)


@converter("SplitToSequence", since=11)
def split_to_sequence(ctx: NodeContext) -> SequenceValue:
    x = ctx.req(0)
    axis = ctx.attr("axis", 0)
    r = rank_of(x)
    axis = axis + r if axis < 0 else axis
    dim = x.partial_shape[axis]
    if ctx.has_input(1):
        split = ctx.const_ints(1)
        if split is None:
            raise ctx.fail("split must be known at conversion time")
        if ctx.req(1).partial_shape.rank_is_static and len(ctx.req(1).partial_shape) == 0:
            if not dim.is_static:
                raise ctx.fail("splitting into chunks needs a static dimension")
            n, size = dim.get_length(), split[0]
            split = [min(size, n - k) for k in range(0, n, size)]
        parts = ops.variadic_split(x, i64(axis), i64(split)).outputs()
        return SequenceValue(parts, x.element_type)
    if not dim.is_static:
        raise ctx.fail("splitting into single items needs a static dimension")
    parts = ops.split(x, i64(axis), dim.get_length()).outputs() if dim.get_length() > 1 else [x]
    if not ctx.attr("keepdims", 1):
        parts = [ops.squeeze(p, i64([axis])).output(0) for p in parts]
    return SequenceValue(parts, x.element_type)


@converter("Optional", since=15)
def optional(ctx: NodeContext) -> OptionalValue:
    if ctx.has_input(0):
        v = ctx.value(0)
        kind = "sequence" if isinstance(v, SequenceValue) else "tensor"
        return OptionalValue(v, getattr(v, "element_type", None), kind)
    return OptionalValue(None, None)


@converter("OptionalHasElement", since=15)
def optional_has_element(ctx: NodeContext) -> Output:
    v = ctx.value(0) if ctx.has_input(0) else None
    has = v is not None and not (isinstance(v, OptionalValue) and v.value is None)
    return const(has, Type.boolean)


@converter("OptionalGetElement", since=15)
def optional_get_element(ctx: NodeContext) -> Output | SequenceValue:
    v = ctx.value(0)
    if isinstance(v, OptionalValue):
        if v.value is None:
            raise ctx.fail("the optional is empty")
        return v.value
    return v
