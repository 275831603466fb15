"""Converters of TensorFlow GraphDef ops (those Keras models freeze into), following OpenVINO's
TensorFlow frontend. NHWC convolutions, pooling and elementwise chains run in NCHW."""

from __future__ import annotations

import numpy as np

import ember.opset as ops
from ember.frontends.tensorflow.convert import NodeContext, converter
from ember.frontends.tflite.context import TO_NCHW
from ember.graph.node import Output
from ember.graph.types import Type

_I64_MAX = np.iinfo(np.int64).max


def _i64(v: object) -> Output:
    return ops.constant(np.asarray(v, np.int64)).output(0)


def _int(ctx: NodeContext, i: int) -> Output:
    c = ctx.const(i)
    if c is not None:
        return _i64(c)
    return ops.convert(ctx.plain(i), Type.i64).output(0)


def _nhwc(ctx: NodeContext) -> bool:
    fmt = ctx.attr("data_format", "NHWC")
    if fmt not in ("NHWC", "NCHW"):
        raise ctx.fail(f"data_format {fmt} is not supported")
    return fmt == "NHWC"


@converter(["Identity", "IdentityN", "StopGradient", "PreventGradient", "Snapshot", "EnsureShape",
            "PlaceholderWithDefault"])
def identity(ctx: NodeContext) -> None:
    for j in range(ctx.num_inputs if ctx.op == "IdentityN" else 1):
        ctx.alias(j, j)


def _operands(ctx: NodeContext, idx: list[int]) -> tuple[list[Output], bool]:
    ranks = [ctx.rank(i) for i in idx]
    if any(ctx.is_nchw(i) for i in idx) and max(ranks) == 4:
        return [ctx.as4d_nchw(i) for i in idx], True
    return [ctx.plain(i) for i in idx], False


_BINARY = {
    "Add": ops.add, "AddV2": ops.add, "Sub": ops.subtract, "Mul": ops.multiply, "RealDiv": ops.divide,
    "Div": ops.divide, "Maximum": ops.maximum, "Minimum": ops.minimum, "Pow": ops.power,
    "SquaredDifference": ops.squared_difference, "FloorMod": ops.floor_mod, "Less": ops.less,
    "LessEqual": ops.less_equal, "Greater": ops.greater, "GreaterEqual": ops.greater_equal, "Equal": ops.equal,
    "NotEqual": ops.not_equal, "LogicalAnd": ops.logical_and, "LogicalOr": ops.logical_or,
}


@converter(list(_BINARY))
def binary(ctx: NodeContext) -> None:
    (a, b), nchw = _operands(ctx, [0, 1])
    ctx.out(_BINARY[ctx.op](a, b).output(0), nchw=nchw)


@converter("BiasAdd")
def bias_add(ctx: NodeContext) -> None:
    if _nhwc(ctx) and ctx.rank(0) == 4 and ctx.is_nchw(0):
        b = ops.reshape(ctx.plain(1), _i64([1, -1, 1, 1]), False).output(0)
        ctx.out(ops.add(ctx.nchw(0), b).output(0), nchw=True)
    elif _nhwc(ctx):
        ctx.out(ops.add(ctx.plain(0), ctx.plain(1)).output(0))
    else:
        r = ctx.rank(0)
        b = ops.reshape(ctx.plain(1), _i64([1, -1] + [1] * (r - 2)), False).output(0)
        ctx.out(ops.add(ctx.plain(0), b).output(0))


@converter("AddN")
def add_n(ctx: NodeContext) -> None:
    xs, nchw = _operands(ctx, list(range(ctx.num_inputs)))
    y = xs[0]
    for x in xs[1:]:
        y = ops.add(y, x).output(0)
    ctx.out(y, nchw=nchw)


def _c(x: Output, v: float) -> Output:
    return ops.constant(np.array(v, x.element_type.dtype)).output(0)


_UNARY = {
    "Relu": lambda x: ops.relu(x), "Relu6": lambda x: ops.clamp(x, 0.0, 6.0), "Sigmoid": lambda x: ops.sigmoid(x),
    "Tanh": lambda x: ops.tanh(x), "Exp": lambda x: ops.exp(x), "Log": lambda x: ops.log(x),
    "Sqrt": lambda x: ops.sqrt(x), "Rsqrt": lambda x: ops.divide(_c(x, 1.0), ops.sqrt(x)),
    "Square": lambda x: ops.multiply(x, x), "Neg": lambda x: ops.negative(x), "Abs": lambda x: ops.absolute(x),
    "Floor": lambda x: ops.floor(x), "Ceil": lambda x: ops.ceiling(x), "Round": lambda x: ops.round(x, "half_to_even"),
    "Erf": lambda x: ops.erf(x), "Elu": lambda x: ops.elu(x, 1.0), "Softplus": lambda x: ops.softplus(x),
    "Sin": lambda x: ops.sin(x), "Cos": lambda x: ops.cos(x), "LogicalNot": lambda x: ops.logical_not(x),
    "Sign": lambda x: ops.sign(x), "Reciprocal": lambda x: ops.divide(_c(x, 1.0), x),
    "Selu": lambda x: ops.selu(x, _c(x, 1.6732632423543772), _c(x, 1.0507009873554805)),
}


@converter(list(_UNARY))
def unary(ctx: NodeContext) -> None:
    (x,), nchw = _operands(ctx, [0])
    ctx.out(_UNARY[ctx.op](x).output(0), nchw=nchw)


@converter("LeakyRelu")
def leaky_relu(ctx: NodeContext) -> None:
    (x,), nchw = _operands(ctx, [0])
    ctx.out(ops.prelu(x, ops.constant(np.array([ctx.attr("alpha", 0.2)], np.float32))).output(0), nchw=nchw)


@converter("Cast")
def cast(ctx: NodeContext) -> None:
    et = ctx.attr("DstT")
    if et is None:
        raise ctx.fail("unsupported destination type")
    (x,), nchw = _operands(ctx, [0])
    ctx.out(ops.convert(x, et).output(0), nchw=nchw)


def _pad_mode(ctx: NodeContext) -> str:
    p = ctx.attr("padding", "VALID")
    if p == "SAME":
        return "same_upper"
    if p == "VALID":
        return "valid"
    raise ctx.fail(f"padding {p} is not supported")


def _spatial(values: list[int], nhwc: bool) -> list[int]:
    return list(values[1:3]) if nhwc else list(values[2:4])


@converter(["Conv2D", "DepthwiseConv2dNative"])
def conv2d(ctx: NodeContext) -> None:
    nhwc = _nhwc(ctx)
    x = ctx.nchw(0) if nhwc else ctx.plain(0)
    w = ctx.req_const(1, "the filters")  # [H, W, I, O] or [H, W, C, M]
    strides = _spatial(ctx.attr("strides", [1, 1, 1, 1]), nhwc)
    dil = _spatial(ctx.attr("dilations", [1, 1, 1, 1]), nhwc)
    mode = _pad_mode(ctx)
    kh, kw, i, o = w.shape
    if ctx.op == "DepthwiseConv2dNative":
        f = ctx.weight(1, lambda a: a.transpose(2, 3, 0, 1).reshape(i, o, 1, kh, kw))
        y = ops.group_convolution(x, f, strides, [0, 0], [0, 0], dil, mode).output(0)
    else:
        cin = x.partial_shape[1]
        groups = cin.get_length() // i if cin.is_static else 1
        if groups == 1:
            f = ctx.weight(1, lambda a: a.transpose(3, 2, 0, 1))
            y = ops.convolution(x, f, strides, [0, 0], [0, 0], dil, mode).output(0)
        else:
            f = ctx.weight(1, lambda a: a.transpose(3, 2, 0, 1).reshape(groups, o // groups, i, kh, kw))
            y = ops.group_convolution(x, f, strides, [0, 0], [0, 0], dil, mode).output(0)
    ctx.out(y, nchw=nhwc)


@converter(["MaxPool", "AvgPool"])
def pool(ctx: NodeContext) -> None:
    nhwc = _nhwc(ctx)
    x = ctx.nchw(0) if nhwc else ctx.plain(0)
    k = _spatial(ctx.attr("ksize"), nhwc)
    s = _spatial(ctx.attr("strides"), nhwc)
    if ctx.op == "MaxPool":
        y = ops.max_pool(x, s, [1, 1], [0, 0], [0, 0], k, "floor", _pad_mode(ctx)).output(0)
    else:
        y = ops.avg_pool(x, s, [0, 0], [0, 0], k, True, "floor", _pad_mode(ctx), [1, 1]).output(0)
    ctx.out(y, nchw=nhwc)


@converter(["FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"])
def fused_batch_norm(ctx: NodeContext) -> None:
    nhwc = _nhwc(ctx)
    x = ctx.nchw(0) if nhwc else ctx.plain(0)
    scale, offset, mean, var = (ctx.req_const(i, "batch norm parameters").astype(np.float64) for i in range(1, 5))
    mul = scale / np.sqrt(var + ctx.attr("epsilon", 1e-3))
    shift = offset - mean * mul
    y = ops.multiply(x, ops.constant(mul.astype(np.float32).reshape(1, -1, 1, 1))).output(0)
    y = ops.add(y, ops.constant(shift.astype(np.float32).reshape(1, -1, 1, 1))).output(0)
    ctx.out(y, nchw=nhwc)


@converter("MatMul")
def matmul(ctx: NodeContext) -> None:
    y = ops.matmul(ctx.plain(0), ctx.plain(1), bool(ctx.attr("transpose_a", False)),
                   bool(ctx.attr("transpose_b", False))).output(0)
    ctx.out(y)


@converter(["BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"])
def batch_matmul(ctx: NodeContext) -> None:
    y = ops.matmul(ctx.plain(0), ctx.plain(1), bool(ctx.attr("adj_x", False)), bool(ctx.attr("adj_y", False)))
    ctx.out(y.output(0))


@converter("Softmax")
def softmax(ctx: NodeContext) -> None:
    ctx.out(ops.softmax(ctx.plain(0), -1).output(0))


@converter("LogSoftmax")
def log_softmax(ctx: NodeContext) -> None:
    ctx.out(ops.log_softmax(ctx.plain(0), -1).output(0))


@converter("Reshape")
def reshape(ctx: NodeContext) -> None:
    ctx.out(ops.reshape(ctx.plain(0), _int(ctx, 1), False).output(0))


@converter("Squeeze")
def squeeze(ctx: NodeContext) -> None:
    dims = ctx.attr("squeeze_dims", [])
    x = ctx.plain(0)
    ctx.out((ops.squeeze(x, _i64(dims)) if dims else ops.squeeze(x)).output(0))


@converter("ExpandDims")
def expand_dims(ctx: NodeContext) -> None:
    ctx.out(ops.unsqueeze(ctx.plain(0), _int(ctx, 1)).output(0))


@converter("Transpose")
def transpose(ctx: NodeContext) -> None:
    ctx.out(ops.transpose(ctx.plain(0), _int(ctx, 1)).output(0))


@converter("ConcatV2")
def concat(ctx: NodeContext) -> None:
    n = ctx.num_inputs - 1
    axis = int(ctx.req_const(n, "axis"))
    idx = list(range(n))
    if all(ctx.rank(i) == 4 for i in idx) and any(ctx.is_nchw(i) for i in idx):
        ctx.out(ops.concat([ctx.nchw(i) for i in idx], TO_NCHW.index(axis % 4)).output(0), nchw=True)
        return
    ctx.out(ops.concat([ctx.plain(i) for i in idx], axis).output(0))


@converter("Pack")
def pack(ctx: NodeContext) -> None:
    axis = ctx.attr("axis", 0)
    r = ctx.rank(0)
    a = axis + r + 1 if axis < 0 else axis
    ctx.out(ops.concat([ops.unsqueeze(ctx.plain(i), _i64([a])).output(0) for i in range(ctx.num_inputs)], a).output(0))


@converter("Unpack")
def unpack(ctx: NodeContext) -> None:
    axis, num = ctx.attr("axis", 0), ctx.attr("num")
    for j, p in enumerate(ops.split(ctx.plain(0), _i64(axis), num).outputs()):
        ctx.out(ops.squeeze(p, _i64([axis])).output(0), j)


@converter("Split")
def split(ctx: NodeContext) -> None:
    axis = int(ctx.req_const(0, "axis"))
    for j, p in enumerate(ops.split(ctx.plain(1), _i64(axis), ctx.attr("num_split")).outputs()):
        ctx.out(p, j)


@converter("SplitV")
def split_v(ctx: NodeContext) -> None:
    axis = int(ctx.req_const(2, "axis"))
    for j, p in enumerate(ops.variadic_split(ctx.plain(0), _i64(axis), _int(ctx, 1)).outputs()):
        ctx.out(p, j)


def _bits(mask: int, n: int) -> list[int]:
    return [(mask >> i) & 1 for i in range(n)]


@converter("StridedSlice")
def strided_slice(ctx: NodeContext) -> None:
    b = ctx.const(1)
    n = len(b) if b is not None else 8
    y = ops.strided_slice(ctx.plain(0), _int(ctx, 1), _int(ctx, 2), _int(ctx, 3),
                          _bits(ctx.attr("begin_mask", 0), n), _bits(ctx.attr("end_mask", 0), n),
                          _bits(ctx.attr("new_axis_mask", 0), n), _bits(ctx.attr("shrink_axis_mask", 0), n),
                          _bits(ctx.attr("ellipsis_mask", 0), n))
    ctx.out(y.output(0))


@converter("Slice")
def slice_op(ctx: NodeContext) -> None:
    b, s = _int(ctx, 1), _int(ctx, 2)
    stop = ops.select(ops.equal(s, _i64(-1)), _i64(_I64_MAX), ops.add(b, s)).output(0)
    step = ops.add(ops.multiply(b, _i64(0)), _i64(1)).output(0)
    ctx.out(ops.slice(ctx.plain(0), b, stop, step).output(0))


@converter(["Pad", "PadV2", "MirrorPad"])
def pad(ctx: NodeContext) -> None:
    pads = ctx.req_const(1, "paddings").astype(np.int64)
    mode = "constant"
    if ctx.op == "MirrorPad":
        mode = "reflect" if ctx.attr("mode", "REFLECT") == "REFLECT" else "symmetric"
    value = None
    if ctx.op == "PadV2":
        value = ops.reshape(ctx.plain(2), _i64([]), False).output(0)
    if ctx.rank(0) == 4 and ctx.is_nchw(0):
        p = pads[list(TO_NCHW)]
        ctx.out(ops.pad(ctx.nchw(0), _i64(p[:, 0]), _i64(p[:, 1]), mode, value).output(0), nchw=True)
        return
    ctx.out(ops.pad(ctx.plain(0), _i64(pads[:, 0]), _i64(pads[:, 1]), mode, value).output(0))


_REDUCE = {"Mean": ops.reduce_mean, "Sum": ops.reduce_sum, "Max": ops.reduce_max, "Min": ops.reduce_min,
           "Prod": ops.reduce_prod, "Any": ops.reduce_logical_or, "All": ops.reduce_logical_and}


@converter(list(_REDUCE))
def reduce(ctx: NodeContext) -> None:
    fn = _REDUCE[ctx.op]
    keep = bool(ctx.attr("keep_dims", False))
    axes = ctx.const(1)
    if axes is not None and ctx.rank(0) == 4 and ctx.is_nchw(0):
        ax = sorted({int(a) % 4 for a in np.atleast_1d(axes)})
        kept = [d for d in TO_NCHW if d not in ax]
        if keep or kept == sorted(kept):
            ctx.out(fn(ctx.nchw(0), _i64([TO_NCHW.index(a) for a in ax]), keep).output(0), nchw=keep)
            return
    ctx.out(fn(ctx.plain(0), _int(ctx, 1), keep).output(0))


@converter(["ArgMax", "ArgMin"])
def arg_max(ctx: NodeContext) -> None:
    axis = int(ctx.req_const(1, "axis"))
    et = ctx.attr("output_type") or Type.i64
    node = ops.topk(ctx.plain(0), _i64(1), axis, "max" if ctx.op == "ArgMax" else "min", "none",
                    "i32" if et is Type.i32 else "i64")
    ctx.out(ops.squeeze(node.output(1), _i64([axis])).output(0))


@converter(["GatherV2", "ResourceGather"])
def gather(ctx: NodeContext) -> None:
    axis = _int(ctx, 2) if ctx.num_inputs > 2 else _i64(0)
    ctx.out(ops.gather(ctx.plain(0), ctx.plain(1), axis, ctx.attr("batch_dims", 0)).output(0))


@converter("GatherNd")
def gather_nd(ctx: NodeContext) -> None:
    ctx.out(ops.gather_nd(ctx.plain(0), ctx.plain(1)).output(0))


@converter("Shape")
def shape(ctx: NodeContext) -> None:
    et = ctx.attr("out_type") or Type.i32
    v = ctx.value(0)
    if v.plain is None and v.nchw is not None:
        y = ops.gather(ops.shape_of(v.nchw, "i64"), _i64([0, 2, 3, 1]), _i64(0)).output(0)
    else:
        y = ops.shape_of(ctx.plain(0), "i64").output(0)
    ctx.out(ops.convert(y, et).output(0))


@converter("Fill")
def fill(ctx: NodeContext) -> None:
    ctx.out(ops.broadcast(ctx.plain(1), _int(ctx, 0)).output(0))


@converter("Range")
def range_op(ctx: NodeContext) -> None:
    et = ctx.attr("Tidx") or Type.i32
    r = [ops.reshape(ctx.plain(i), _i64([]), False).output(0) for i in range(3)]
    ctx.out(ops.range(r[0], r[1], r[2], et).output(0))


@converter(["Select", "SelectV2"])
def select(ctx: NodeContext) -> None:
    ctx.out(ops.select(ctx.plain(0), ctx.plain(1), ctx.plain(2)).output(0))


@converter("Tile")
def tile(ctx: NodeContext) -> None:
    ctx.out(ops.tile(ctx.plain(0), _int(ctx, 1)).output(0))


@converter("BroadcastTo")
def broadcast_to(ctx: NodeContext) -> None:
    ctx.out(ops.broadcast(ctx.plain(0), _int(ctx, 1)).output(0))


@converter(["ResizeBilinear", "ResizeNearestNeighbor"])
def resize(ctx: NodeContext) -> None:
    x = ctx.nchw(0)
    align, half = ctx.attr("align_corners", False), ctx.attr("half_pixel_centers", False)
    sizes = _int(ctx, 1)
    if ctx.op == "ResizeNearestNeighbor":
        coord, nearest = (("align_corners", "round_prefer_ceil") if align else
                          ("tf_half_pixel_for_nn", "floor") if half else ("asymmetric", "floor"))
        y = ops.interpolate(x, sizes, "nearest", "sizes", coordinate_transformation_mode=coord,
                            nearest_mode=nearest, axes=_i64([2, 3]))
    else:
        coord = "align_corners" if align else "half_pixel" if half else "asymmetric"
        y = ops.interpolate(x, sizes, "linear_onnx", "sizes", coordinate_transformation_mode=coord, axes=_i64([2, 3]))
    ctx.out(y.output(0), nchw=True)


@converter(["DepthToSpace", "SpaceToDepth"])
def depth_space(ctx: NodeContext) -> None:
    if not _nhwc(ctx):
        raise ctx.fail("only NHWC DepthToSpace/SpaceToDepth are supported")
    fn = ops.depth_to_space if ctx.op == "DepthToSpace" else ops.space_to_depth
    ctx.out(fn(ctx.nchw(0), "blocks_first", ctx.attr("block_size", 1)).output(0), nchw=True)

