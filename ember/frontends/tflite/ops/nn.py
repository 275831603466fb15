"""Convolutions, pooling, fully connected layers and softmax, computed in NCHW."""

from __future__ import annotations

import struct

import numpy as np

import ember.opset as ops
from ember.frontends.tflite.context import OpContext
from ember.frontends.tflite.registry import converter
from ember.graph.node import Output

_PADDING = {0: "same_upper", 1: "valid"}


def _pad_mode(ctx: OpContext) -> str:
    mode = _PADDING.get(ctx.opt("padding", 0))
    if mode is None:
        raise ctx.fail(f"padding {ctx.opt('padding')} is not supported")
    return mode


def _bias(ctx: OpContext, y: Output, i: int) -> Output:
    if not ctx.has_input(i):
        return y
    b = ctx.weight(i, lambda a: a.reshape(1, -1, 1, 1), weight=False)
    return ops.add(y, b).output(0)


def _input_and_pads(ctx: OpContext) -> tuple[Output, list[int], list[int], str]:
    """The NCHW input and padding of a convolution, taking over a zero PAD in front of it."""
    mode = _pad_mode(ctx)
    if mode == "valid":
        folded = ctx.folded_pad(0)
        if folded is not None:
            pad, pb, pe = folded
            return pad.nchw(0), pb, pe, "explicit"
    return ctx.nchw(0), [0, 0], [0, 0], mode


@converter("CONV_2D")
def conv_2d(ctx: OpContext) -> None:
    x, pb, pe, mode = _input_and_pads(ctx)
    w_shape = ctx.tensor(1).shape  # [O, H, W, I]
    cin = x.partial_shape[1]
    groups = cin.get_length() // w_shape[3] if cin.is_static and w_shape[3] else 1
    strides = [ctx.opt("stride_h", 1), ctx.opt("stride_w", 1)]
    dil = [ctx.opt("dilation_h", 1), ctx.opt("dilation_w", 1)]
    if groups == 1:
        w = ctx.weight(1, lambda a: a.transpose(0, 3, 1, 2))
        y = ops.convolution(x, w, strides, pb, pe, dil, mode).output(0)
    else:
        o = w_shape[0]
        w = ctx.weight(1, lambda a: a.transpose(0, 3, 1, 2).reshape(groups, o // groups, *a.shape[3:], *a.shape[1:3]))
        y = ops.group_convolution(x, w, strides, pb, pe, dil, mode).output(0)
    ctx.out(ctx.activation(_bias(ctx, y, 2)), nchw=True)


@converter("DEPTHWISE_CONV_2D")
def depthwise_conv_2d(ctx: OpContext) -> None:
    x, pb, pe, mode = _input_and_pads(ctx)
    _, kh, kw, cm = ctx.tensor(1).shape  # [1, H, W, C * M]
    cin = x.partial_shape[1]
    c = cin.get_length() if cin.is_static else cm // max(ctx.opt("depth_multiplier", 1), 1)
    m = cm // c
    w = ctx.weight(1, lambda a: a.reshape(kh, kw, c, m).transpose(2, 3, 0, 1).reshape(c, m, 1, kh, kw))
    strides = [ctx.opt("stride_h", 1), ctx.opt("stride_w", 1)]
    dil = [ctx.opt("dilation_h", 1), ctx.opt("dilation_w", 1)]
    y = ops.group_convolution(x, w, strides, pb, pe, dil, mode).output(0)
    ctx.out(ctx.activation(_bias(ctx, y, 2)), nchw=True)


def _transposed(ctx: OpContext, x: Output, w: Output, kernel: list[int], strides: list[int], padding: int,
                out_hw: list[int]) -> Output:
    """ConvolutionBackpropData giving ``out_hw`` as TensorFlow's conv2d_transpose does (SAME pads
    the forward convolution's way: the smaller half first)."""
    xs = x.partial_shape
    if not all(xs[i].is_static for i in (2, 3)):
        raise ValueError("transposed convolution needs static spatial input dimensions")
    pb, pe, extra = [], [], []
    for k in range(2):
        full = (xs[2 + k].get_length() - 1) * strides[k] + kernel[k]
        total = full - out_hw[k] if padding == 0 else 0
        if padding != 0 and out_hw[k] > full:
            extra.append(out_hw[k] - full)
        else:
            extra.append(0)
        begin = max(total, 0) // 2
        pb.append(begin)
        pe.append(max(total, 0) - begin)
    return ops.convolution_backprop_data(x, w, strides, None, pb, pe, [1, 1], "explicit", extra).output(0)


@converter("TRANSPOSE_CONV")
def transpose_conv(ctx: OpContext) -> None:
    shape = ctx.req_const(0, "output_shape").astype(np.int64)
    x = ctx.nchw(2)
    kh, kw = ctx.tensor(1).shape[1:3]
    w = ctx.weight(1, lambda a: a.transpose(3, 0, 1, 2))  # [O, H, W, I] -> [I, O, H, W]
    strides = [ctx.opt("stride_h", 1), ctx.opt("stride_w", 1)]
    try:
        y = _transposed(ctx, x, w, [kh, kw], strides, ctx.opt("padding", 0), [int(shape[1]), int(shape[2])])
    except ValueError as e:
        raise ctx.fail(str(e)) from None
    y = _bias(ctx, y, 3) if ctx.num_inputs > 3 else y
    ctx.out(ctx.activation(y), nchw=True)


@converter("Convolution2DTransposeBias", custom=True)
def convolution_2d_transpose_bias(ctx: OpContext) -> None:
    """MediaPipe's transposed convolution with bias; options are TfLiteTransposeConvParams
    (padding: 1 SAME, 2 VALID; stride_w; stride_h)."""
    raw = ctx.op.custom_options
    if len(raw) < 12:
        raise ctx.fail("custom options are missing (expected padding, stride_w, stride_h)")
    padding, sw, sh = struct.unpack_from("<iii", raw, 0)
    if padding not in (1, 2):
        raise ctx.fail(f"padding {padding} is not supported")
    x = ctx.nchw(0)
    kh, kw = ctx.tensor(1).shape[1:3]
    w = ctx.weight(1, lambda a: a.transpose(3, 0, 1, 2))
    out_shape = ctx.out_tensor(0).shape
    try:
        y = _transposed(ctx, x, w, [kh, kw], [sh, sw], 0 if padding == 1 else 1, out_shape[1:3])
    except ValueError as e:
        raise ctx.fail(str(e)) from None
    ctx.out(_bias(ctx, y, 2), nchw=True)


def _pool(ctx: OpContext, kind: str) -> None:
    x = ctx.nchw(0)
    kernel = [ctx.opt("filter_h", 1), ctx.opt("filter_w", 1)]
    strides = [ctx.opt("stride_h", 1), ctx.opt("stride_w", 1)]
    mode = _pad_mode(ctx)
    if kind == "max":
        y = ops.max_pool(x, strides, [1, 1], [0, 0], [0, 0], kernel, "floor", mode).output(0)
    else:
        y = ops.avg_pool(x, strides, [0, 0], [0, 0], kernel, True, "floor", mode, [1, 1]).output(0)
    ctx.out(ctx.activation(y), nchw=True, passthrough=0 if kind == "max" else None)


@converter("MAX_POOL_2D")
def max_pool_2d(ctx: OpContext) -> None:
    _pool(ctx, "max")


@converter("AVERAGE_POOL_2D")
def average_pool_2d(ctx: OpContext) -> None:
    _pool(ctx, "avg")


@converter("L2_POOL_2D")
def l2_pool_2d(ctx: OpContext) -> None:
    x = ctx.nchw(0)
    kernel = [ctx.opt("filter_h", 1), ctx.opt("filter_w", 1)]
    strides = [ctx.opt("stride_h", 1), ctx.opt("stride_w", 1)]
    sq = ops.multiply(x, x).output(0)
    y = ops.avg_pool(sq, strides, [0, 0], [0, 0], kernel, True, "floor", _pad_mode(ctx), [1, 1]).output(0)
    ctx.out(ctx.activation(ops.sqrt(y).output(0)), nchw=True)


@converter("FULLY_CONNECTED")
def fully_connected(ctx: OpContext) -> None:
    x = ctx.plain(0)
    o, i = ctx.tensor(1).shape
    w = ctx.weight(1) if ctx.value(1).is_const else ctx.plain(1)
    keep = ctx.opt("keep_num_dims", False)
    xs = x.partial_shape
    if not (xs.rank_is_static and len(xs) == 2 and xs[1] == i) and not keep:
        x = ops.reshape(x, ops.constant(np.array([-1, i], np.int64)), False).output(0)
    y = ops.matmul(x, w, False, True).output(0)
    if ctx.has_input(2):
        y = ops.add(y, ctx.weight(2, weight=False) if ctx.value(2).is_const else ctx.plain(2)).output(0)
    ctx.out(ctx.activation(y))


@converter("BATCH_MATMUL")
def batch_matmul(ctx: OpContext) -> None:
    y = ops.matmul(ctx.plain(0), ctx.plain(1), bool(ctx.opt("adj_x")), bool(ctx.opt("adj_y"))).output(0)
    ctx.out(y)


@converter("SOFTMAX")
def softmax(ctx: OpContext) -> None:
    x = ctx.plain(0)
    beta = ctx.opt("beta", 1.0)
    if beta != 1.0:
        x = ops.multiply(x, ops.constant(np.array(beta, np.float32))).output(0)
    ctx.out(ops.softmax(x, -1).output(0))


@converter("LOG_SOFTMAX")
def log_softmax(ctx: OpContext) -> None:
    ctx.out(ops.log_softmax(ctx.plain(0), -1).output(0))


@converter("L2_NORMALIZATION")
def l2_normalization(ctx: OpContext) -> None:
    x = ctx.plain(0)
    y = ops.normalize_l2(x, ops.constant(np.array([-1], np.int64)), 1e-6, "max").output(0)
    ctx.out(ctx.activation(y))
