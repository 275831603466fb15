"""Shape, movement, reduction and resizing TFLite ops.

Pad, concatenation, reductions, resizing and depth/space moves run in NCHW when their input
is NCHW already (axes and paddings are permuted at conversion time); the others read TFLite's
layout.
"""

from __future__ import annotations

import numpy as np

import ember.opset as ops
from ember.frontends.tflite.context import TO_NCHW, OpContext
from ember.frontends.tflite.registry import converter
from ember.frontends.tflite.schema import TENSOR_TYPES
from ember.graph.node import Output
from ember.graph.types import Type

_I64_MAX = np.iinfo(np.int64).max


def _i64(values: object) -> Output:
    return ops.constant(np.asarray(values, np.int64)).output(0)


def _int_input(ctx: OpContext, i: int) -> Output:
    c = ctx.const(i)
    if c is not None:
        return _i64(c)
    return ops.convert(ctx.plain(i), Type.i64).output(0)


@converter("RESHAPE")
def reshape(ctx: OpContext) -> None:
    if ctx.has_input(1):
        shape = _int_input(ctx, 1)
    else:
        shape = _i64(ctx.opt("new_shape", []))
    ps = shape.partial_shape
    if ps.rank_is_static and len(ps) == 0:
        shape = ops.reshape(shape, _i64([1]), False).output(0)
    ctx.out(ops.reshape(ctx.plain(0), shape, False).output(0), passthrough=0)


@converter("SQUEEZE")
def squeeze(ctx: OpContext) -> None:
    dims = ctx.opt("squeeze_dims", [])
    x = ctx.plain(0)
    y = ops.squeeze(x, _i64(dims)) if dims else ops.squeeze(x)
    ctx.out(y.output(0), passthrough=0)


@converter("EXPAND_DIMS")
def expand_dims(ctx: OpContext) -> None:
    ctx.out(ops.unsqueeze(ctx.plain(0), _int_input(ctx, 1)).output(0), passthrough=0)


@converter("TRANSPOSE")
def transpose(ctx: OpContext) -> None:
    perm = ctx.const(1)
    if perm is not None and ctx.is_nchw(0) and len(perm) == 4:
        # compose with the NCHW view: y = x_nhwc.transpose(perm) = x_nchw.transpose(TO_NCHW[perm])
        composed = [TO_NCHW.index(int(p)) for p in perm]
        ctx.out(ops.transpose(ctx.nchw(0), _i64(composed)).output(0), passthrough=0)
        return
    ctx.out(ops.transpose(ctx.plain(0), _int_input(ctx, 1)).output(0), passthrough=0)


def _all_4d(ctx: OpContext, idx: list[int]) -> bool:
    return all(ctx.rank(i) == 4 for i in idx)


@converter("CONCATENATION")
def concatenation(ctx: OpContext) -> None:
    idx = list(range(ctx.num_inputs))
    axis = ctx.opt("axis", 0)
    if _all_4d(ctx, idx) and any(ctx.is_nchw(i) for i in idx):
        y = ops.concat([ctx.nchw(i) for i in idx], TO_NCHW.index(axis % 4)).output(0)
        ctx.out(ctx.activation(y), nchw=True)
        return
    y = ops.concat([ctx.plain(i) for i in idx], axis).output(0)
    ctx.out(ctx.activation(y))


@converter("PACK")
def pack(ctx: OpContext) -> None:
    axis = ctx.opt("axis", 0)
    r = ctx.rank(0)
    a = axis + r + 1 if axis < 0 else axis
    parts = [ops.unsqueeze(ctx.plain(i), _i64([a])).output(0) for i in range(ctx.num_inputs)]
    ctx.out(ops.concat(parts, a).output(0))


@converter("UNPACK")
def unpack(ctx: OpContext) -> None:
    x = ctx.plain(0)
    axis = ctx.opt("axis", 0)
    n = len(ctx.op.outputs)
    parts = ops.split(x, _i64(axis), n).outputs()
    for j, p in enumerate(parts):
        ctx.out(ops.squeeze(p, _i64([axis])).output(0), j)


@converter("SPLIT")
def split(ctx: OpContext) -> None:
    axis = int(ctx.req_const(0, "axis"))
    n = len(ctx.op.outputs)
    if ctx.rank(1) == 4 and ctx.is_nchw(1):
        for j, p in enumerate(ops.split(ctx.nchw(1), _i64(TO_NCHW.index(axis % 4)), n).outputs()):
            ctx.out(p, j, nchw=True, passthrough=1)
        return
    for j, p in enumerate(ops.split(ctx.plain(1), _i64(axis), n).outputs()):
        ctx.out(p, j, passthrough=1)


@converter("SPLIT_V")
def split_v(ctx: OpContext) -> None:
    axis = int(ctx.req_const(2, "axis"))
    sizes = _int_input(ctx, 1)
    if ctx.rank(0) == 4 and ctx.is_nchw(0):
        parts = ops.variadic_split(ctx.nchw(0), _i64(TO_NCHW.index(axis % 4)), sizes).outputs()
        for j, p in enumerate(parts):
            ctx.out(p, j, nchw=True, passthrough=0)
        return
    for j, p in enumerate(ops.variadic_split(ctx.plain(0), _i64(axis), sizes).outputs()):
        ctx.out(p, j, passthrough=0)


def _bits(mask: int, n: int) -> list[int]:
    return [(mask >> i) & 1 for i in range(n)]


@converter("STRIDED_SLICE")
def strided_slice(ctx: OpContext) -> None:
    begin, end, strides = _int_input(ctx, 1), _int_input(ctx, 2), _int_input(ctx, 3)
    n = ctx.tensor(1).shape[0] if ctx.tensor(1).shape else 1
    if ctx.opt("offset", False):
        end = ops.add(begin, end).output(0)
    y = ops.strided_slice(ctx.plain(0), begin, end, strides, _bits(ctx.opt("begin_mask", 0), n),
                          _bits(ctx.opt("end_mask", 0), n), _bits(ctx.opt("new_axis_mask", 0), n),
                          _bits(ctx.opt("shrink_axis_mask", 0), n), _bits(ctx.opt("ellipsis_mask", 0), n)).output(0)
    ctx.out(y, passthrough=0)


@converter("SLICE")
def slice_op(ctx: OpContext) -> None:
    begin, size = ctx.const(1), ctx.const(2)
    if begin is None or size is None:
        b, s = _int_input(ctx, 1), _int_input(ctx, 2)
        stop = ops.select(ops.equal(s, _i64(-1)), _i64(_I64_MAX), ops.add(b, s)).output(0)
        steps = ops.multiply(ops.convert(ops.shape_of(b), Type.i64), _i64(0)).output(0)
        steps = ops.add(steps, _i64(1)).output(0)
        ctx.out(ops.slice(ctx.plain(0), b, stop, steps).output(0), passthrough=0)
        return
    begin, size = begin.astype(np.int64), size.astype(np.int64)
    stop = np.where(size == -1, _I64_MAX, begin + size)
    ctx.out(ops.slice(ctx.plain(0), _i64(begin), _i64(stop), _i64(np.ones_like(begin))).output(0),
            passthrough=0)


def _pad(ctx: OpContext, mode: str, value: Output | None) -> None:
    pads = ctx.req_const(1, "paddings").astype(np.int64)
    if ctx.rank(0) == 4 and ctx.is_nchw(0):
        pads = pads[list(TO_NCHW)]
        y = ops.pad(ctx.nchw(0), _i64(pads[:, 0]), _i64(pads[:, 1]), mode, value).output(0)
        ctx.out(y, nchw=True, passthrough=0)
        return
    ctx.out(ops.pad(ctx.plain(0), _i64(pads[:, 0]), _i64(pads[:, 1]), mode, value).output(0), passthrough=0)


@converter("PAD")
def pad(ctx: OpContext) -> None:
    _pad(ctx, "constant", None)


@converter("PADV2")
def pad_v2(ctx: OpContext) -> None:
    value = ctx.plain(2) if ctx.has_input(2) else None
    if value is not None:
        value = ops.reshape(value, _i64([]), False).output(0)
    _pad(ctx, "constant", value)


@converter("MIRROR_PAD")
def mirror_pad(ctx: OpContext) -> None:
    _pad(ctx, "reflect" if ctx.opt("mode", 0) == 0 else "symmetric", None)


_REDUCE = {"MEAN": ops.reduce_mean, "SUM": ops.reduce_sum, "REDUCE_MAX": ops.reduce_max,
           "REDUCE_MIN": ops.reduce_min, "REDUCE_PROD": ops.reduce_prod, "REDUCE_ANY": ops.reduce_logical_or,
           "REDUCE_ALL": ops.reduce_logical_and}


@converter(list(_REDUCE))
def reduce(ctx: OpContext) -> None:
    fn = _REDUCE[ctx.op.op]
    keep = bool(ctx.opt("keep_dims", False))
    axes = ctx.const(1)
    if axes is not None and ctx.rank(0) == 4 and ctx.is_nchw(0):
        ax = sorted({int(a) % 4 for a in np.atleast_1d(axes)})
        mapped = [TO_NCHW.index(a) for a in ax]
        kept = [d for d in TO_NCHW if d not in ax]
        if keep or kept == sorted(kept):
            y = fn(ctx.nchw(0), _i64(mapped), keep).output(0)
            ctx.out(y, nchw=keep, passthrough=0 if ctx.op.op in ("REDUCE_MAX", "REDUCE_MIN") else None)
            return
    y = fn(ctx.plain(0), _int_input(ctx, 1), keep).output(0)
    ctx.out(y)


@converter(["ARG_MAX", "ARG_MIN"])
def arg_max(ctx: OpContext) -> None:
    axis = int(ctx.req_const(1, "axis"))
    et = TENSOR_TYPES.get(ctx.out_tensor(0).type_code) or Type.i64
    mode = "max" if ctx.op.op == "ARG_MAX" else "min"
    node = ops.topk(ctx.plain(0), _i64(1), axis, mode, "none", "i32" if et is Type.i32 else "i64")
    ctx.out(ops.squeeze(node.output(1), _i64([axis])).output(0))


@converter("TOPK_V2")
def topk_v2(ctx: OpContext) -> None:
    k = ops.reshape(_int_input(ctx, 1), _i64([]), False).output(0)
    node = ops.topk(ctx.plain(0), k, -1, "max", "value", "i32")
    ctx.out(node.output(0), 0)
    ctx.out(node.output(1), 1)


@converter("GATHER")
def gather(ctx: OpContext) -> None:
    y = ops.gather(ctx.plain(0), ctx.plain(1), _i64(ctx.opt("axis", 0)), ctx.opt("batch_dims", 0)).output(0)
    ctx.out(y, passthrough=0)


@converter("GATHER_ND")
def gather_nd(ctx: OpContext) -> None:
    ctx.out(ops.gather_nd(ctx.plain(0), ctx.plain(1)).output(0), passthrough=0)


@converter("TILE")
def tile(ctx: OpContext) -> None:
    ctx.out(ops.tile(ctx.plain(0), _int_input(ctx, 1)).output(0), passthrough=0)


@converter("BROADCAST_TO")
def broadcast_to(ctx: OpContext) -> None:
    ctx.out(ops.broadcast(ctx.plain(0), _int_input(ctx, 1)).output(0), passthrough=0)


@converter("SHAPE")
def shape(ctx: OpContext) -> None:
    et = TENSOR_TYPES.get(ctx.out_tensor(0).type_code) or Type.i32
    v = ctx.value(0)
    x = ctx.plain(0) if v.plain is not None or v.is_const else ctx.nchw(0)
    if v.plain is None and not v.is_const:
        y = ops.gather(ops.shape_of(x, "i64"), _i64([0, 2, 3, 1]), _i64(0)).output(0)
    else:
        y = ops.shape_of(x, "i64").output(0)
    ctx.out(ops.convert(y, et).output(0))


@converter("FILL")
def fill(ctx: OpContext) -> None:
    ctx.out(ops.broadcast(ctx.plain(1), _int_input(ctx, 0)).output(0))


@converter("RANGE")
def range_op(ctx: OpContext) -> None:
    et = TENSOR_TYPES.get(ctx.out_tensor(0).type_code) or Type.i32
    r = [ops.reshape(ctx.plain(i), _i64([]), False).output(0) for i in range(3)]
    ctx.out(ops.range(r[0], r[1], r[2], et).output(0))


@converter("REVERSE_V2")
def reverse_v2(ctx: OpContext) -> None:
    ctx.out(ops.reverse(ctx.plain(0), _int_input(ctx, 1), "index").output(0), passthrough=0)


@converter("CUMSUM")
def cumsum(ctx: OpContext) -> None:
    axis = ops.reshape(_int_input(ctx, 1), _i64([]), False).output(0)
    y = ops.cumsum(ctx.plain(0), axis, bool(ctx.opt("exclusive")), bool(ctx.opt("reverse"))).output(0)
    ctx.out(y)


def _space_depth(ctx: OpContext, fn) -> None:  # noqa: ANN001
    ctx.out(fn(ctx.nchw(0), "blocks_first", ctx.opt("block_size", 1)).output(0), nchw=True, passthrough=0)


@converter("DEPTH_TO_SPACE")
def depth_to_space(ctx: OpContext) -> None:
    _space_depth(ctx, ops.depth_to_space)


@converter("SPACE_TO_DEPTH")
def space_to_depth(ctx: OpContext) -> None:
    _space_depth(ctx, ops.space_to_depth)


def _resize(ctx: OpContext, mode: str) -> None:
    x = ctx.nchw(0)
    sizes = _int_input(ctx, 1)
    align, half = ctx.opt("align_corners", False), ctx.opt("half_pixel_centers", False)
    if mode == "nearest":
        coord, nearest = (("align_corners", "round_prefer_ceil") if align else
                          ("tf_half_pixel_for_nn", "floor") if half else ("asymmetric", "floor"))
        y = ops.interpolate(x, sizes, "nearest", "sizes", coordinate_transformation_mode=coord,
                            nearest_mode=nearest, axes=_i64([2, 3]))
    else:
        coord = "align_corners" if align else "half_pixel" if half else "asymmetric"
        y = ops.interpolate(x, sizes, "linear_onnx", "sizes", coordinate_transformation_mode=coord,
                            axes=_i64([2, 3]))
    ctx.out(y.output(0), nchw=True, passthrough=0 if mode == "nearest" else None)


@converter("RESIZE_BILINEAR")
def resize_bilinear(ctx: OpContext) -> None:
    _resize(ctx, "linear")


@converter("RESIZE_NEAREST_NEIGHBOR")
def resize_nearest_neighbor(ctx: OpContext) -> None:
    _resize(ctx, "nearest")
