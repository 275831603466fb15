"""Reductions and index selection: Reduce*, ArgMax/ArgMin, TopK, Hardmax, Softmax, CumProd."""

from __future__ import annotations

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const_like, convert, flatten_2d, i64, rank_of, shape_of
from ember.graph.node import Output
from ember.graph.types import Type

# (builder, opset from which axes are an input)
_REDUCE = {
    "ReduceSum": ("reduce_sum", 13), "ReduceMean": ("reduce_mean", 18), "ReduceMax": ("reduce_max", 18),
    "ReduceMin": ("reduce_min", 18), "ReduceProd": ("reduce_prod", 18), "ReduceL1": ("reduce_l1", 18),
    "ReduceL2": ("reduce_l2", 18), "ReduceLogSum": ("reduce_sum", 18), "ReduceLogSumExp": ("reduce_sum", 18),
    "ReduceSumSquare": ("reduce_sum", 18),
}


def all_axes(x: Output) -> Output:
    """``[0, 1, ..., rank-1]`` of ``x`` (computed in the graph when the rank is dynamic)."""
    if x.partial_shape.rank_is_static:
        return i64(list(range(len(x.partial_shape))))
    rank = ops.reshape(shape_of(shape_of(x)), i64([]), False).output(0)
    return ops.range(i64(0), rank, i64(1), "i64").output(0)


def _or_all_when_empty(x: Output, axes: Output) -> Output:
    """``axes``, or every axis of ``x`` when ``axes`` turns out empty at run time."""
    count = ops.reduce_prod(shape_of(axes), i64([0]), False).output(0)
    empty = convert(ops.equal(count, i64(0)).output(0), Type.i64)
    rank = ops.reshape(shape_of(shape_of(x)), i64([]), False).output(0)
    extra = ops.range(i64(0), ops.multiply(rank, empty), i64(1), "i64").output(0)
    return ops.concat([ops.reshape(axes, i64([-1]), False), extra], 0).output(0)


@converter(list(_REDUCE))
def reduce(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    name, since = _REDUCE[ctx.op_type]
    keep = bool(ctx.attr("keepdims", 1))
    if ctx.opset < since:
        a = ctx.attr("axes", None)
        axes = all_axes(x) if a is None else i64(a)
    elif ctx.has_input(1):
        axes = convert(ctx.req(1), Type.i64)
        c = ctx.const(1)
        if c is not None and c.size == 0:
            if ctx.attr("noop_with_empty_axes", 0):
                return x
            axes = all_axes(x)
        elif c is None and not ctx.attr("noop_with_empty_axes", 0):
            axes = _or_all_when_empty(x, axes)
    else:
        if ctx.attr("noop_with_empty_axes", 0):
            return x
        axes = all_axes(x)
    op = ctx.op_type
    if x.element_type is Type.boolean and op in ("ReduceMax", "ReduceMin"):
        fn = ops.reduce_logical_or if op == "ReduceMax" else ops.reduce_logical_and
        return fn(x, axes, keep).output(0)
    if op == "ReduceSumSquare":
        x = ops.multiply(x, x).output(0)
    elif op == "ReduceLogSumExp":
        x = ops.exp(x).output(0)
    y = getattr(ops, name)(x, axes, keep).output(0)
    if op in ("ReduceLogSum", "ReduceLogSumExp"):
        y = ops.log(y).output(0)
    return y


def _arg(ctx: NodeContext, mode: str) -> Output:
    x = ctx.req(0)
    axis = ctx.attr("axis", 0)
    r = rank_of(x)
    axis = axis + r if axis < 0 else axis
    last = bool(ctx.attr("select_last_index", 0))
    data = x
    if last:
        data = ops.reverse(x, i64([axis]), "index").output(0)
    idx = ops.topk(data, i64(1), axis, mode, "value", "i64", True).output(1)
    if last:
        dim = ops.gather(shape_of(x), i64([axis]), i64(0)).output(0)
        idx = ops.subtract(ops.subtract(dim, i64(1)), idx).output(0)
    if not ctx.attr("keepdims", 1):
        idx = ops.squeeze(idx, i64([axis])).output(0)
    return idx


@converter("ArgMax")
def arg_max(ctx: NodeContext) -> Output:
    return _arg(ctx, "max")


@converter("ArgMin")
def arg_min(ctx: NodeContext) -> Output:
    return _arg(ctx, "min")


@converter("TopK")
def topk(ctx: NodeContext) -> list[Output]:
    x = ctx.req(0)
    k = i64(ctx.attr("k")) if ctx.opset < 10 else ops.reshape(convert(ctx.req(1), Type.i64), i64([]), False)
    mode = "max" if ctx.attr("largest", 1) else "min"
    # ONNX breaks ties by the lower index; OpenVINO's stable sort by value does the same
    node = ops.topk(x, k, ctx.attr("axis", -1), mode, "value", "i64", True)
    return node.outputs()


def _hardmax_last(x: Output, axis: int) -> Output:
    idx = ops.topk(x, i64(1), axis, "max", "value", "i64", True).output(1)
    depth = ops.reshape(ops.gather(shape_of(x), i64([axis]), i64(0)), i64([]), False).output(0)
    hot = ops.one_hot(ops.squeeze(idx, i64([axis])), depth, const_like(1, x), const_like(0, x), axis).output(0)
    return hot


@converter("Hardmax")
def hardmax(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    r = rank_of(x)
    if ctx.opset < 13:
        flat = flatten_2d(x, ctx.attr("axis", 1))
        return ops.reshape(_hardmax_last(flat, 1), shape_of(x), False).output(0)
    axis = ctx.attr("axis", -1)
    return _hardmax_last(x, axis + r if axis < 0 else axis)


def _softmax(ctx: NodeContext, fn_name: str) -> Output:
    x = ctx.req(0)
    fn = getattr(ops, fn_name)
    if ctx.opset < 13:
        axis = ctx.attr("axis", 1)
        r = rank_of(x)
        axis = axis + r if axis < 0 else axis
        if axis == r - 1:
            return fn(x, axis).output(0)
        flat = flatten_2d(x, axis)
        return ops.reshape(fn(flat, 1), shape_of(x), False).output(0)
    return fn(x, ctx.attr("axis", -1)).output(0)


@converter("Softmax")
def softmax(ctx: NodeContext) -> Output:
    return _softmax(ctx, "softmax")


@converter("LogSoftmax")
def log_softmax(ctx: NodeContext) -> Output:
    return _softmax(ctx, "log_softmax")


@converter("CumProd")
def cumprod(ctx: NodeContext) -> Output:
    """Products over a masked square: ``y[i] = prod_j (mask[i, j] ? x[j] : 1)`` along the axis.
    A run-time axis selects among the results for every possible axis."""
    x = ctx.req(0)
    r = rank_of(x)
    exclusive, reverse = bool(ctx.attr("exclusive", 0)), bool(ctx.attr("reverse", 0))
    axis_v = ctx.const_ints(1)
    if axis_v is not None:
        return _cumprod_along(x, axis_v[0] + r if axis_v[0] < 0 else axis_v[0], exclusive, reverse)
    axis = ops.reshape(convert(ctx.req(1), Type.i64), i64([]), False).output(0)
    axis = ops.select(ops.less(axis, i64(0)), ops.add(axis, i64(r)), axis).output(0)
    y = _cumprod_along(x, r - 1, exclusive, reverse)
    for a in range(r - 1):
        y = ops.select(ops.equal(axis, i64(a)), _cumprod_along(x, a, exclusive, reverse), y).output(0)
    return y


def _cumprod_along(x: Output, axis: int, exclusive: bool, reverse: bool) -> Output:
    r = rank_of(x)
    perm = [d for d in range(r) if d != axis] + [axis]
    inv = [perm.index(d) for d in range(r)]
    xt = ops.transpose(x, i64(perm)).output(0)
    n = ops.reshape(ops.gather(shape_of(x), i64([axis]), i64(0)), i64([]), False).output(0)
    pos = ops.range(i64(0), n, i64(1), "i64").output(0)
    i_idx = ops.unsqueeze(pos, i64([1])).output(0)
    j_idx = ops.unsqueeze(pos, i64([0])).output(0)
    cmp = {(False, False): ops.less_equal, (True, False): ops.less,
           (False, True): ops.greater_equal, (True, True): ops.greater}[(exclusive, reverse)]
    mask = cmp(j_idx, i_idx).output(0)
    rows = ops.unsqueeze(xt, i64([r - 1])).output(0)
    square = ops.select(mask, rows, const_like(1, x)).output(0)
    y = ops.reduce_prod(square, i64([r]), False).output(0)
    return ops.transpose(y, i64(inv)).output(0)
