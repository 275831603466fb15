"""DFT and STFT onto OpenVINO's DFT/IDFT/RDFT/IRDFT and STFT."""

from __future__ import annotations

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const_like, convert, i64, rank_of
from ember.graph.node import Output
from ember.graph.types import Type


def _axis(ctx: NodeContext, rank: int) -> Output:
    """The transformed axis as a 1-D i64 tensor, counted on the data with its complex dim."""
    if ctx.opset < 20:
        a = ctx.attr("axis", 1)
        return i64([a + rank if a < 0 else a])
    if not ctx.has_input(2):
        return i64([rank - 2])
    a = ops.reshape(convert(ctx.req(2), Type.i64), i64([1]), False).output(0)
    return ops.select(ops.less(a, i64(0)), ops.add(a, i64(rank)), a).output(0)


@converter("DFT", since=17)
def dft(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    r = rank_of(x)
    axes = _axis(ctx, r)
    length = ops.reshape(convert(ctx.req(1), Type.i64), i64([1]), False).output(0) if ctx.has_input(1) else None
    inverse, onesided = bool(ctx.attr("inverse", 0)), bool(ctx.attr("onesided", 0))
    last = x.partial_shape[r - 1]
    real = last.is_static and last.get_length() == 1
    if onesided and not inverse:
        if not real:
            raise ctx.fail("a one-sided DFT needs a real input")
        return ops.rdft(ops.squeeze(x, i64([r - 1])), axes, length).output(0)
    if onesided and inverse:
        y = ops.irdft(x, axes, length).output(0)
        return ops.unsqueeze(y, i64([r - 1])).output(0)
    if real:
        x = ops.concat([x, ops.multiply(x, const_like(0, x))], r - 1).output(0)
    return (ops.idft if inverse else ops.dft)(x, axes, length).output(0)


@converter("STFT", since=17)
def stft(ctx: NodeContext) -> Output:
    signal = ctx.req(0)
    r = rank_of(signal)
    last = signal.partial_shape[r - 1]
    if not (last.is_static and last.get_length() == 1):
        raise ctx.fail("only real signals ([batch, length, 1]) are supported")
    if not ctx.attr("onesided", 1):
        raise ctx.fail("onesided=0 is not supported (OpenVINO's STFT is one-sided)")
    x = ops.squeeze(signal, i64([r - 1])).output(0)
    step = ops.reshape(convert(ctx.req(1), Type.i64), i64([]), False).output(0)
    if ctx.has_input(3):
        size = ops.reshape(convert(ctx.req(3), Type.i64), i64([]), False).output(0)
    elif ctx.has_input(2):
        size = ops.gather(ops.shape_of(ctx.req(2), "i64"), i64(0), i64(0)).output(0)
    else:
        raise ctx.fail("needs a window or a frame_length")
    window = ctx.req(2) if ctx.has_input(2) else ops.broadcast(const_like(1, x), ops.reshape(size, i64([1]), False))
    return ops.stft(x, window, size, step, False).output(0)
