"""Shape and data-movement ONNX ops: Constant, Shape, Reshape, Concat, Slice, Gather, Pad..."""

from __future__ import annotations

import numpy as np

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.loader import element_type
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const, const_like, convert, flatten_2d, i64, rank_of, reshape, shape_of
from ember.graph.core_ops import Constant
from ember.graph.node import Output
from ember.graph.types import Type

_INT64_MAX = np.iinfo(np.int64).max


@converter("Constant")
def constant(ctx: NodeContext) -> Output:
    for name in ("value", "sparse_value"):
        t = ctx.attr_tensor(name)
        if t is not None:
            arr, et = t
            return Constant.from_array(np.asarray(arr, order="C"), et).output(0)
    if ctx.has_attr("value_float"):
        return const(np.float32(ctx.attr("value_float")), Type.f32)
    if ctx.has_attr("value_floats"):
        return const(np.asarray(ctx.attr("value_floats"), np.float32), Type.f32)
    if ctx.has_attr("value_int"):
        return const(np.int64(ctx.attr("value_int")), Type.i64)
    if ctx.has_attr("value_ints"):
        return const(np.asarray(ctx.attr("value_ints"), np.int64), Type.i64)
    if ctx.has_attr("value_string"):
        return Constant(np.array(ctx.attr("value_string"), dtype=object)).output(0)
    if ctx.has_attr("value_strings"):
        return Constant(np.array(ctx.attr("value_strings"), dtype=object)).output(0)
    raise ctx.fail("has no value attribute")


@converter("ConstantOfShape")
def constant_of_shape(ctx: NodeContext) -> Output:
    t = ctx.attr_tensor("value")
    arr, et = t if t is not None else (np.zeros(1, np.float32), Type.f32)
    value = Constant.from_array(np.asarray(arr.reshape(()), order="C"), et).output(0)
    return ops.broadcast(value, convert(ctx.req(0), Type.i64)).output(0)


@converter("Shape")
def shape(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    s = shape_of(x)
    start, end = ctx.attr("start", 0), ctx.attr("end", None)
    if start == 0 and end is None:
        return s
    return ops.slice(s, i64([start]), i64([_INT64_MAX if end is None else end]), i64([1])).output(0)


@converter("Size")
def size(ctx: NodeContext) -> Output:
    return ops.reduce_prod(shape_of(ctx.req(0)), i64(0), False).output(0)


@converter("Reshape")
def reshape_(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    target = i64(ctx.attr("shape")) if ctx.opset < 5 else convert(ctx.req(1), Type.i64)
    return ops.reshape(x, target, not ctx.attr("allowzero", 0)).output(0)


@converter("Flatten")
def flatten(ctx: NodeContext) -> Output:
    return flatten_2d(ctx.req(0), ctx.attr("axis", 1))


def _axes_input(ctx: NodeContext, since: int, index: int = 1) -> Output | None:
    """Axes given as an attribute before opset ``since`` and as input ``index`` from it on."""
    if ctx.opset < since:
        axes = ctx.attr("axes", None)
        return None if axes is None else i64(axes)
    return convert(ctx.req(index), Type.i64) if ctx.has_input(index) else None


@converter("Squeeze")
def squeeze(ctx: NodeContext) -> Output:
    axes = _axes_input(ctx, 13)
    return (ops.squeeze(ctx.req(0)) if axes is None else ops.squeeze(ctx.req(0), axes)).output(0)


@converter("Unsqueeze")
def unsqueeze(ctx: NodeContext) -> Output:
    axes = _axes_input(ctx, 13)
    if axes is None:
        raise ctx.fail("axes are required")
    return ops.unsqueeze(ctx.req(0), axes).output(0)


@converter("Concat")
def concat(ctx: NodeContext) -> Output:
    xs = [x for x in ctx.inputs() if x is not None]
    return ops.concat(xs, ctx.attr("axis") if ctx.opset >= 4 else ctx.attr("axis", 1)).output(0)


@converter("Split")
def split(ctx: NodeContext) -> list[Output]:
    x = ctx.req(0)
    axis = ctx.attr("axis", 0)
    n = ctx.num_outputs
    if ctx.opset < 13:
        lengths = ctx.attr("split", None)
        if lengths is None and ctx.opset < 2 and ctx.has_input(1):
            lengths = ctx.const_ints(1)
        split_in = None if lengths is None else i64(lengths)
    else:
        split_in = convert(ctx.req(1), Type.i64) if ctx.has_input(1) else None
    if split_in is None:
        num = ctx.attr("num_outputs", n)
        dim = x.partial_shape[axis] if x.partial_shape.rank_is_static else None
        if dim is not None and dim.is_static and dim.get_length() % num:
            # chunks of ceil(n / num); the last ones take what is left (possibly nothing)
            size, total = -(-dim.get_length() // num), dim.get_length()
            lengths = [max(0, min(size, total - size * k)) for k in range(num)]
            return ops.variadic_split(x, i64(axis), i64(lengths)).outputs()
        return ops.split(x, i64(axis), num).outputs()
    return ops.variadic_split(x, i64(axis), split_in).outputs()


@converter("Transpose")
def transpose(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    perm = ctx.attr("perm", None)
    if perm is None:
        perm = list(range(rank_of(x)))[::-1]
    return ops.transpose(x, i64(perm)).output(0)


@converter("Expand")
def expand(ctx: NodeContext) -> Output:
    return ops.broadcast(ctx.req(0), convert(ctx.req(1), Type.i64), broadcast_spec="BIDIRECTIONAL").output(0)


@converter("Tile")
def tile(ctx: NodeContext) -> Output:
    if ctx.opset < 6:
        raise ctx.fail("Tile before opset 6 (tiles/axis inputs) is not supported")
    return ops.tile(ctx.req(0), convert(ctx.req(1), Type.i64)).output(0)


@converter("Slice")
def slice_(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes = ctx.attr("axes", list(range(len(starts))))
        return ops.slice(x, i64(starts), i64(ends), i64([1] * len(starts)), i64(axes)).output(0)
    starts, ends = convert(ctx.req(1), Type.i64), convert(ctx.req(2), Type.i64)
    axes = convert(ctx.req(3), Type.i64) if ctx.has_input(3) else None
    if ctx.has_input(4):
        steps = convert(ctx.req(4), Type.i64)
    else:
        steps = ops.broadcast(i64(1), shape_of(starts)).output(0)
    if axes is None:
        return ops.slice(x, starts, ends, steps).output(0)
    return ops.slice(x, starts, ends, steps, axes).output(0)


@converter("Gather")
def gather(ctx: NodeContext) -> Output:
    return ops.gather(ctx.req(0), ctx.req(1), i64(ctx.attr("axis", 0))).output(0)


@converter("GatherElements")
def gather_elements(ctx: NodeContext) -> Output:
    return ops.gather_elements(ctx.req(0), ctx.req(1), ctx.attr("axis", 0)).output(0)


@converter("GatherND")
def gather_nd(ctx: NodeContext) -> Output:
    return ops.gather_nd(ctx.req(0), ctx.req(1), ctx.attr("batch_dims", 0)).output(0)


_REDUCTIONS = {"none": "none", "add": "sum", "mul": "prod", "max": "max", "min": "min"}


@converter(["ScatterElements", "Scatter"])
def scatter_elements(ctx: NodeContext) -> Output:
    reduction = _REDUCTIONS.get(ctx.attr("reduction", "none"))
    if reduction is None:
        raise ctx.fail(f"reduction '{ctx.attr('reduction')}' is not supported")
    return ops.scatter_elements_update(ctx.req(0), ctx.req(1), ctx.req(2), i64(ctx.attr("axis", 0)),
                                       reduction=reduction, use_init_val=True).output(0)


@converter("ScatterND")
def scatter_nd(ctx: NodeContext) -> Output:
    reduction = _REDUCTIONS.get(ctx.attr("reduction", "none"))
    if reduction is None:
        raise ctx.fail(f"reduction '{ctx.attr('reduction')}' is not supported")
    return ops.scatter_nd_update(ctx.req(0), ctx.req(1), ctx.req(2), reduction).output(0)


@converter("Pad")
def pad(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads = ctx.attr("pads" if ctx.opset >= 2 else "paddings")
        value: Output | None = const_like(ctx.attr("value", 0.0), x)
        n = len(pads) // 2
        begins, ends = i64(pads[:n]), i64(pads[n:])
    else:
        value = ctx.input(2) if ctx.has_input(2) else None
        r = rank_of(x)
        pads_in = convert(ctx.req(1), Type.i64)
        pads_v = ctx.const_ints(1)
        axes = ctx.const_ints(3) if ctx.has_input(3) else None
        if pads_v is not None and (axes is not None or not ctx.has_input(3)):
            n = len(pads_v) // 2
            axes = list(range(r)) if axes is None else [a + r if a < 0 else a for a in axes]
            b, e = [0] * r, [0] * r
            for k, a in enumerate(axes):
                b[a], e[a] = pads_v[k], pads_v[n + k]
            begins, ends = i64(b), i64(e)
            if mode == "wrap":
                return _wrap_pad(x, b, e)
        else:
            if mode == "wrap" and ctx.has_input(3):
                raise ctx.fail("wrap padding with run-time pads needs all axes")
            if mode == "wrap":
                return _wrap_pad_dynamic(x, pads_in, r)
            halves = ops.split(pads_in, i64(0), 2).outputs()
            begins, ends = halves[0], halves[1]
            if ctx.has_input(3):
                # scatter the per-axis pads into full-rank zero vectors
                ax = convert(ctx.req(3), Type.i64)
                ax = ops.select(ops.less(ax, i64(0)), ops.add(ax, i64(r)), ax).output(0)
                zeros = i64([0] * r)
                begins = ops.scatter_elements_update(zeros, ax, begins, i64(0)).output(0)
                ends = ops.scatter_elements_update(zeros, ax, ends, i64(0)).output(0)
        if value is not None:
            value = ops.reshape(value, i64([]), False).output(0) if value.partial_shape != [] else value
    if mode == "constant":
        return ops.pad(x, begins, ends, "constant", value if value is not None else const_like(0, x)).output(0)
    return ops.pad(x, begins, ends, {"edge": "edge", "reflect": "reflect"}[mode]).output(0)


def _wrap_pad(x: Output, begins: list[int], ends: list[int]) -> Output:
    """Pad ``x`` cyclically: each side takes the slice from the other end."""
    y = x
    for axis, (b, e) in enumerate(zip(begins, ends)):
        if b == 0 and e == 0:
            continue
        parts = []
        if b > 0:
            parts.append(ops.slice(y, i64([-b]), i64([_INT64_MAX]), i64([1]), i64([axis])).output(0))
        core = y
        if b < 0 or e < 0:
            core = ops.slice(y, i64([max(-b, 0)]), i64([e if e < 0 else _INT64_MAX]), i64([1]),
                             i64([axis])).output(0)
        parts.append(core)
        if e > 0:
            parts.append(ops.slice(y, i64([0]), i64([e]), i64([1]), i64([axis])).output(0))
        y = ops.concat(parts, axis).output(0) if len(parts) > 1 else parts[0]
    return y


def _wrap_pad_dynamic(x: Output, pads: Output, rank: int) -> Output:
    """Cyclic padding with pads known at run time: per axis, the tail, the (cropped) core and
    the head, each a Slice whose bounds are computed in the graph."""
    y = x
    zero = i64([0])
    for axis in range(rank):
        b = ops.gather(pads, i64([axis]), i64(0)).output(0)
        e = ops.gather(pads, i64([axis + rank]), i64(0)).output(0)
        dim = ops.gather(shape_of(y), i64([axis]), i64(0)).output(0)
        bp, ep = ops.maximum(b, zero).output(0), ops.maximum(e, zero).output(0)
        bn = ops.maximum(ops.negative(b), zero).output(0)
        en = ops.maximum(ops.negative(e), zero).output(0)
        ax = i64([axis])
        one = i64([1])
        tail = ops.slice(y, ops.subtract(dim, bp), dim, one, ax).output(0)
        core = ops.slice(y, bn, ops.subtract(dim, en), one, ax).output(0)
        head = ops.slice(y, zero, ep, one, ax).output(0)
        y = ops.concat([tail, core, head], axis).output(0)
    return y


@converter("TensorScatter", since=24)
def tensor_scatter(ctx: NodeContext) -> Output:
    """Write ``update`` into ``past_cache`` at per-batch positions along ``axis`` (wrapping
    around in circular mode), as one ScatterElementsUpdate with computed indices."""
    past, update = ctx.req(0), ctx.req(1)
    r = rank_of(past)
    axis = ctx.attr("axis", -2)
    axis = axis + r if axis < 0 else axis
    ushape = shape_of(update)
    length = ops.reshape(ops.gather(ushape, i64([axis]), i64(0)), i64([]), False).output(0)
    steps = ops.range(i64(0), length, i64(1), "i64").output(0)
    steps = ops.reshape(steps, i64([1] * axis + [-1] + [1] * (r - axis - 1)), False).output(0)
    if ctx.has_input(2):
        start = ops.reshape(convert(ctx.req(2), Type.i64), i64([-1] + [1] * (r - 1)), False).output(0)
        idx = ops.add(steps, start).output(0)
    else:
        idx = steps
    if ctx.attr("mode", "linear") == "circular":
        size = ops.gather(shape_of(past), i64([axis]), i64(0)).output(0)
        idx = ops.floor_mod(idx, size).output(0)
    idx = ops.broadcast(idx, ushape).output(0)
    return ops.scatter_elements_update(past, idx, update, i64(axis)).output(0)


@converter("DepthToSpace")
def depth_to_space(ctx: NodeContext) -> Output:
    mode = "depth_first" if ctx.attr("mode", "DCR") == "CRD" else "blocks_first"
    return ops.depth_to_space(ctx.req(0), mode, ctx.attr("blocksize")).output(0)


@converter("SpaceToDepth")
def space_to_depth(ctx: NodeContext) -> Output:
    mode = "depth_first" if ctx.attr("mode", "DCR") == "CRD" else "blocks_first"
    return ops.space_to_depth(ctx.req(0), mode, ctx.attr("blocksize")).output(0)


@converter("Range")
def range_(ctx: NodeContext) -> Output:
    start, limit, delta = ctx.req(0), ctx.req(1), ctx.req(2)
    scal = [ops.reshape(v, i64([]), False).output(0) if v.partial_shape != [] else v for v in (start, limit, delta)]
    return ops.range(*scal, start.element_type.name).output(0)


@converter("EyeLike")
def eye_like(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    et = element_type(ctx.attr("dtype")) if ctx.has_attr("dtype") else x.element_type
    s = shape_of(x)
    rows = ops.gather(s, i64([0]), i64(0)).output(0)
    cols = ops.gather(s, i64([1]), i64(0)).output(0)
    return ops.eye(rows, cols, i64([ctx.attr("k", 0)]), et.name).output(0)


@converter("OneHot")
def one_hot(ctx: NodeContext) -> Output:
    indices, depth, values = ctx.req(0), ctx.req(1), ctx.req(2)
    depth_i = ops.reshape(convert(depth, Type.i64), i64([]), False).output(0)
    idx = convert(indices, Type.i64)
    idx = ops.select(ops.less(idx, i64(0)), ops.add(idx, depth_i), idx).output(0)
    off = ops.gather(values, i64(0), i64(0)).output(0)
    on = ops.gather(values, i64(1), i64(0)).output(0)
    return ops.one_hot(idx, depth_i, on, off, ctx.attr("axis", -1)).output(0)


@converter("NonZero")
def non_zero(ctx: NodeContext) -> Output:
    return ops.non_zero(ctx.req(0), "i64").output(0)


@converter("Compress")
def compress(ctx: NodeContext) -> Output:
    x, cond = ctx.req(0), ctx.req(1)
    idx = ops.reshape(ops.non_zero(cond, "i64"), i64([-1]), False).output(0)
    axis = ctx.attr("axis", None)
    if axis is None:
        return ops.gather(reshape(x, [-1]), idx, i64(0)).output(0)
    return ops.gather(x, idx, i64(axis)).output(0)


@converter("Trilu")
def trilu(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    r = rank_of(x)
    k = ops.reshape(convert(ctx.req(1), Type.i64), i64([]), False).output(0) if ctx.has_input(1) else i64(0)
    s = shape_of(x)
    rows = ops.reshape(ops.gather(s, i64([r - 2]), i64(0)), i64([]), False).output(0)
    cols = ops.reshape(ops.gather(s, i64([r - 1]), i64(0)), i64([]), False).output(0)
    ri = ops.unsqueeze(ops.range(i64(0), rows, i64(1), "i64"), i64([1])).output(0)
    ci = ops.unsqueeze(ops.range(i64(0), cols, i64(1), "i64"), i64([0])).output(0)
    diff = ops.subtract(ci, ri).output(0)
    keep = ops.greater_equal(diff, k) if ctx.attr("upper", 1) else ops.less_equal(diff, k)
    return ops.select(keep, x, const_like(0, x)).output(0)


@converter("ReverseSequence")
def reverse_sequence(ctx: NodeContext) -> Output:
    return ops.reverse_sequence(ctx.req(0), ctx.req(1), ctx.attr("batch_axis", 1),
                                ctx.attr("time_axis", 0)).output(0)


@converter("Unique")
def unique(ctx: NodeContext) -> list[Output]:
    x = ctx.req(0)
    axis = ctx.attr("axis", None)
    sort = bool(ctx.attr("sorted", 1))
    node = ops.unique(x, None if axis is None else i64([axis]), sort, "i64", "i64")
    y, first, inverse, counts = node.outputs()
    return [y, first, inverse, counts]


@converter("CumSum")
def cumsum(ctx: NodeContext) -> Output:
    axis = ops.reshape(ctx.req(1), i64([]), False).output(0)
    return ops.cumsum(ctx.req(0), axis, bool(ctx.attr("exclusive", 0)), bool(ctx.attr("reverse", 0))).output(0)
