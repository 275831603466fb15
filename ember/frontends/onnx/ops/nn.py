"""Convolution, pooling, matrix products and normalization ONNX ops."""

from __future__ import annotations

import numpy as np

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const_like, convert, i64, rank_of, reshape, shape_of
from ember.graph.node import Output
from ember.graph.types import Type

_AUTO_PAD = {"NOTSET": "explicit", "SAME_UPPER": "same_upper", "SAME_LOWER": "same_lower", "VALID": "valid"}


def _spatial_rank(ctx: NodeContext, x: Output, w: Output | None = None) -> int:
    ks = ctx.attr("kernel_shape", None)
    if ks is not None:
        return len(ks)
    if w is not None and w.partial_shape.rank_is_static:
        return len(w.partial_shape) - 2
    return rank_of(x) - 2


def _window_attrs(ctx: NodeContext, n: int) -> tuple[list[int], list[int], list[int], list[int], str]:
    strides = ctx.attr("strides", [1] * n)
    dilations = ctx.attr("dilations", [1] * n)
    pads = ctx.attr("pads", [0] * (2 * n))
    auto_pad = _AUTO_PAD.get(ctx.attr("auto_pad", "NOTSET"))
    if auto_pad is None:
        raise ctx.fail(f"auto_pad '{ctx.attr('auto_pad')}' is not supported")
    if auto_pad != "explicit":
        pads = [0] * (2 * n)
    return strides, dilations, pads[:n], pads[n:], auto_pad


def _channel_bias(bias: Output, rank: int) -> Output:
    """A per-channel 1-D bias as ``[1, C, 1, ...]`` for an output of ``rank``."""
    return ops.reshape(bias, i64([1, -1] + [1] * (rank - 2)), False).output(0)


def _grouped_filters(w: Output, group: int, transposed: bool = False) -> Output:
    """ONNX ``[O, C/G, *K]`` filters as OpenVINO's ``[G, O/G, C/G, *K]``."""
    ps = w.partial_shape
    if ps.is_static:
        dims = [d.get_length() for d in ps]
        return reshape(w, [group, dims[0] // group] + dims[1:])
    rest = ops.slice(shape_of(w), i64([1]), i64([np.iinfo(np.int64).max]), i64([1])).output(0)
    return ops.reshape(w, ops.concat([i64([group, -1]), rest], 0), False).output(0)


@converter("Conv")
def conv(ctx: NodeContext) -> Output:
    x, w = ctx.req(0), ctx.req(1)
    n = _spatial_rank(ctx, x, w)
    strides, dilations, pb, pe, auto_pad = _window_attrs(ctx, n)
    group = ctx.attr("group", 1)
    if group == 1:
        y = ops.convolution(x, w, strides, pb, pe, dilations, auto_pad).output(0)
    else:
        y = ops.group_convolution(x, _grouped_filters(w, group), strides, pb, pe, dilations, auto_pad).output(0)
    if ctx.has_input(2):
        y = ops.add(y, _channel_bias(ctx.req(2), n + 2)).output(0)
    return y


@converter("ConvTranspose")
def conv_transpose(ctx: NodeContext) -> Output:
    x, w = ctx.req(0), ctx.req(1)
    n = _spatial_rank(ctx, x, w)
    strides = ctx.attr("strides", [1] * n)
    dilations = ctx.attr("dilations", [1] * n)
    out_pad = ctx.attr("output_padding", [0] * n)
    group = ctx.attr("group", 1)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    out_shape = ctx.attr("output_shape", None)
    pads = ctx.attr("pads", None)
    kernel = ctx.attr("kernel_shape", None)
    if kernel is None:
        if not w.partial_shape.is_static:
            raise ctx.fail("kernel_shape is needed when the filters' shape is dynamic")
        kernel = [d.get_length() for d in w.partial_shape][2:]
    if out_shape is not None and len(out_shape) > n:
        out_shape = out_shape[-n:]
    if pads is None and (auto_pad in ("SAME_UPPER", "SAME_LOWER") or out_shape is not None):
        xs = x.partial_shape
        if not xs.rank_is_static or not all(d.is_static for d in list(xs)[2:]):
            raise ctx.fail("output_shape/auto_pad need static spatial input dimensions")
        sizes = [d.get_length() for d in list(xs)[2:]]
        if out_shape is None:
            out_shape = [s * st for s, st in zip(sizes, strides)]
        total = [strides[i] * (sizes[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - out_shape[i]
                 for i in range(n)]
        if auto_pad == "SAME_UPPER":
            pb, pe = [t // 2 for t in total], [t - t // 2 for t in total]
        else:
            pb, pe = [t - t // 2 for t in total], [t // 2 for t in total]
    else:
        pads = pads if pads is not None else [0] * (2 * n)
        pb, pe = pads[:n], pads[n:]
    if group == 1:
        y = ops.convolution_backprop_data(x, w, strides, None, pb, pe, dilations, "explicit", out_pad).output(0)
    else:
        y = ops.group_convolution_backprop_data(x, _grouped_filters(w, group), strides, None, pb, pe, dilations,
                                                "explicit", out_pad).output(0)
    if ctx.has_input(2):
        y = ops.add(y, _channel_bias(ctx.req(2), n + 2)).output(0)
    return y


def _rounding(ctx: NodeContext) -> str:
    return "ceil_torch" if ctx.attr("ceil_mode", 0) else "floor"


@converter("MaxPool")
def max_pool(ctx: NodeContext) -> list[Output]:
    x = ctx.req(0)
    kernel = ctx.attr("kernel_shape")
    n = len(kernel)
    strides, dilations, pb, pe, auto_pad = _window_attrs(ctx, n)
    node = ops.max_pool(x, strides, dilations, pb, pe, kernel, _rounding(ctx), auto_pad, "i64", 0)
    values, indices = node.outputs()
    if ctx.output_used(1) and ctx.attr("storage_order", 0):
        indices = _column_major(indices, x, n)
    return [values, indices]


def _column_major(indices: Output, x: Output, n: int) -> Output:
    """Row-major flat indices into ``x`` as ONNX's storage_order=1 (column-major spatial) ones."""
    if n != 2 or not x.partial_shape.is_static:
        raise ValueError("storage_order=1 is supported for 2-D pooling of static shapes")
    h, w = [d.get_length() for d in x.partial_shape][2:]
    hw = ops.floor_mod(indices, i64(h * w)).output(0)
    row = ops.divide(hw, i64(w)).output(0)
    col = ops.floor_mod(hw, i64(w)).output(0)
    base = ops.subtract(indices, hw).output(0)
    return ops.add(base, ops.add(ops.multiply(col, i64(h)), row)).output(0)


@converter("AveragePool")
def average_pool(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    kernel = ctx.attr("kernel_shape")
    n = len(kernel)
    strides, dilations, pb, pe, auto_pad = _window_attrs(ctx, n)
    exclude = not ctx.attr("count_include_pad", 0)
    # dilations written out even when all ones: OpenVINO 2026.4's CPU plugin crashes on an
    # AvgPool-16 whose dilations are empty
    return ops.avg_pool(x, strides, pb, pe, kernel, exclude, _rounding(ctx), auto_pad, dilations).output(0)


@converter(["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
def global_pool(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    axes = i64(list(range(2, rank_of(x))))
    if ctx.op_type == "GlobalAveragePool":
        return ops.reduce_mean(x, axes, True).output(0)
    if ctx.op_type == "GlobalMaxPool":
        return ops.reduce_max(x, axes, True).output(0)
    p = ctx.attr("p", 2)
    s = ops.reduce_sum(ops.power(ops.absolute(x), const_like(p, x)), axes, True).output(0)
    return ops.power(s, const_like(1.0 / p, x)).output(0)


@converter("LpPool")
def lp_pool(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    kernel = ctx.attr("kernel_shape")
    n = len(kernel)
    strides, dilations, pb, pe, auto_pad = _window_attrs(ctx, n)
    p = float(ctx.attr("p", 2))
    powered = ops.power(ops.absolute(x), const_like(p, x)).output(0)
    avg = ops.avg_pool(powered, strides, pb, pe, kernel, False, _rounding(ctx), auto_pad, dilations).output(0)
    total = ops.multiply(avg, const_like(float(np.prod(kernel)), x)).output(0)
    return ops.power(total, const_like(1.0 / p, x)).output(0)


@converter("MatMul")
def matmul(ctx: NodeContext) -> Output:
    return ops.matmul(ctx.req(0), ctx.req(1), False, False).output(0)


@converter("Gemm")
def gemm(ctx: NodeContext) -> Output:
    a, b = ctx.req(0), ctx.req(1)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if ctx.opset < 7 and a.partial_shape.rank_is_static and len(a.partial_shape) > 2:
        raise ctx.fail("Gemm inputs must be matrices")
    y = ops.matmul(a, b, bool(ctx.attr("transA", 0)), bool(ctx.attr("transB", 0))).output(0)
    if alpha != 1.0:
        y = ops.multiply(y, const_like(alpha, y)).output(0)
    if ctx.has_input(2) and beta != 0.0:
        c = ctx.req(2)
        if beta != 1.0:
            c = ops.multiply(c, const_like(beta, c)).output(0)
        y = ops.add(y, c).output(0)
    return y


@converter("Einsum")
def einsum(ctx: NodeContext) -> Output:
    xs = [x for x in ctx.inputs() if x is not None]
    eq = ctx.attr("equation").replace(" ", "")
    et = xs[0].element_type
    if et is Type.bf16:  # accumulate in f32, as OpenVINO's CPU plugin does for bf16
        y = ops.einsum([convert(x, Type.f32) for x in xs], eq).output(0)
        return convert(y, et)
    return ops.einsum(xs, eq).output(0)


# -- normalization ---------------------------------------------------------------------
@converter("BatchNormalization")
def batch_norm(ctx: NodeContext) -> list[Output]:
    x, scale, bias, mean, var = (ctx.req(i) for i in range(5))
    eps = ctx.attr("epsilon", 1e-5)
    if ctx.opset >= 14 and ctx.attr("training_mode", 0) or ctx.opset < 14 and ctx.num_outputs > 1 and \
            ctx.opset >= 9 and any(ctx.output_used(i) for i in range(1, 5)):
        return _batch_norm_training(ctx, x, scale, bias, mean, var, eps)
    if ctx.opset < 7 and not ctx.attr("spatial", 1):
        raise ctx.fail("spatial=0 is not supported")
    return [ops.batch_norm_inference(x, scale, bias, mean, var, eps).output(0)]


def _batch_norm_training(ctx: NodeContext, x: Output, scale: Output, bias: Output, mean: Output,
                         var: Output, eps: float) -> list[Output]:
    r = rank_of(x)
    axes = i64([0] + list(range(2, r)))
    momentum = ctx.attr("momentum", 0.9)
    cur_mean = ops.reduce_mean(x, axes, False).output(0)
    cur_var = ops.reduce_mean(ops.squared_difference(x, ops.reduce_mean(x, axes, True)), axes, False).output(0)
    y = ops.batch_norm_inference(x, scale, bias, cur_mean, cur_var, eps).output(0)
    m = const_like(momentum, mean)
    m1 = const_like(1.0 - momentum, mean)
    run_mean = ops.add(ops.multiply(mean, m), ops.multiply(convert(cur_mean, mean.element_type), m1)).output(0)
    run_var = ops.add(ops.multiply(var, m), ops.multiply(convert(cur_var, var.element_type), m1)).output(0)
    return [y, run_mean, run_var]


@converter("InstanceNormalization")
def instance_norm(ctx: NodeContext) -> Output:
    x, scale, bias = ctx.req(0), ctx.req(1), ctx.req(2)
    r = rank_of(x)
    y = ops.mvn(x, i64(list(range(2, r))), True, ctx.attr("epsilon", 1e-5), "inside_sqrt").output(0)
    y = ops.multiply(y, _channel_bias(scale, r)).output(0)
    return ops.add(y, _channel_bias(bias, r)).output(0)


@converter("LayerNormalization")
def layer_norm(ctx: NodeContext) -> list[Output]:
    x, scale = ctx.req(0), ctx.req(1)
    r = rank_of(x)
    axis = ctx.attr("axis", -1)
    axis = axis + r if axis < 0 else axis
    eps = ctx.attr("epsilon", 1e-5)
    axes = i64(list(range(axis, r)))
    stash = Type.f32 if ctx.attr("stash_type", 1) == 1 else x.element_type
    xs = convert(x, stash)
    y = ops.mvn(xs, axes, True, eps, "inside_sqrt").output(0)
    y = convert(y, x.element_type)
    y = ops.multiply(y, scale).output(0)
    if ctx.has_input(2):
        y = ops.add(y, ctx.req(2)).output(0)
    outs = [y]
    if ctx.output_used(1) or ctx.output_used(2):
        mean = ops.reduce_mean(xs, axes, True).output(0)
        var = ops.reduce_mean(ops.squared_difference(xs, mean), axes, True).output(0)
        inv = ops.divide(const_like(1.0, var), ops.sqrt(ops.add(var, const_like(eps, var)))).output(0)
        outs += [mean, inv]
    return outs


@converter("GroupNormalization")
def group_norm(ctx: NodeContext) -> Output:
    x, scale, bias = ctx.req(0), ctx.req(1), ctx.req(2)
    groups = ctx.attr("num_groups")
    eps = ctx.attr("epsilon", 1e-5)
    r = rank_of(x)
    stash = Type.f32 if ctx.attr("stash_type", 1) == 1 else x.element_type
    grouped = ops.reshape(convert(x, stash), i64([0, groups, -1]), True).output(0)
    norm = ops.mvn(grouped, i64([2]), True, eps, "inside_sqrt").output(0)
    y = convert(ops.reshape(norm, shape_of(x), False).output(0), x.element_type)
    if ctx.opset < 21:
        # scale and bias hold one value per group: repeat each over the group's channels
        c = ops.gather(shape_of(x), i64([1]), i64(0)).output(0)
        per = ops.divide(c, i64([groups])).output(0)
        tgt = ops.concat([i64([groups]), per], 0).output(0)
        scale = ops.reshape(ops.broadcast(ops.unsqueeze(scale, i64([1])), tgt), i64([-1]), False).output(0)
        bias = ops.reshape(ops.broadcast(ops.unsqueeze(bias, i64([1])), tgt), i64([-1]), False).output(0)
    y = ops.multiply(y, _channel_bias(scale, r)).output(0)
    return ops.add(y, _channel_bias(bias, r)).output(0)


@converter("RMSNormalization")
def rms_norm(ctx: NodeContext) -> Output:
    x, scale = ctx.req(0), ctx.req(1)
    r = rank_of(x)
    axis = ctx.attr("axis", -1)
    axis = axis + r if axis < 0 else axis
    stash = Type.f32 if ctx.attr("stash_type", 1) == 1 else x.element_type
    xs = convert(x, stash)
    ms = ops.reduce_mean(ops.multiply(xs, xs), i64(list(range(axis, r))), True).output(0)
    rms = ops.sqrt(ops.add(ms, const_like(ctx.attr("epsilon", 1e-5), ms))).output(0)
    y = convert(ops.divide(xs, rms).output(0), x.element_type)
    return ops.multiply(y, scale).output(0)


@converter("LRN")
def lrn(ctx: NodeContext) -> Output:
    return ops.lrn(ctx.req(0), i64([1]), ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0),
                   ctx.attr("size")).output(0)


@converter("LpNormalization")
def lp_norm(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    p = ctx.attr("p", 2)
    axes = i64([ctx.attr("axis", -1)])
    if p == 1:
        norm = ops.reduce_l1(x, axes, True).output(0)
    elif p == 2:
        norm = ops.reduce_l2(x, axes, True).output(0)
    else:
        raise ctx.fail(f"p={p} is not supported (1 or 2)")
    # a zero norm means a zero slice: divide by 1 there so that it stays zero
    safe = ops.select(ops.equal(norm, const_like(0, norm)), const_like(1, norm), norm).output(0)
    return ops.divide(x, safe).output(0)


@converter("MeanVarianceNormalization")
def mean_variance_norm(ctx: NodeContext) -> Output:
    axes = ctx.attr("axes", [0, 2, 3])
    return ops.mvn(ctx.req(0), i64(axes), True, 1e-9, "outside_sqrt").output(0)


@converter("Col2Im")
def col2im(ctx: NodeContext) -> Output:
    ps = ctx.req(1).partial_shape
    k = ps[0].get_length() if ps.rank_is_static and len(ps) == 1 and ps[0].is_static else 2
    if k != 2:  # OpenVINO's Col2Im is 2-D: ember's own N-D op
        return ops.col2im_nd(ctx.req(0), ctx.req(1), ctx.req(2), ctx.attr("strides", [1] * k),
                             ctx.attr("dilations", [1] * k), ctx.attr("pads", [0] * (2 * k))).output(0)
    pads = ctx.attr("pads", [0, 0, 0, 0])
    return ops.col2im(ctx.req(0), convert(ctx.req(1), Type.i64), convert(ctx.req(2), Type.i64),
                      ctx.attr("strides", [1, 1]), ctx.attr("dilations", [1, 1]), pads[:2], pads[2:]).output(0)
