"""ONNX ops with no OpenVINO counterpart: BitCast, Det, MelWeightMatrix (ember's own ops,
``ember.ops.onnx_only``) and the ai.onnx.preview.training optimizers Adagrad, Adam and Momentum
(plain elementwise OpenVINO ops)."""

from __future__ import annotations

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.loader import element_type
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const, convert
from ember.graph.node import Output
from ember.graph.types import Type

TRAINING = "ai.onnx.preview.training"


@converter("BitCast", since=26)
def bitcast(ctx: NodeContext) -> Output:
    return ops.bitcast(ctx.req(0), element_type(ctx.attr("to"))).output(0)


@converter("Det", since=11)
def det(ctx: NodeContext) -> Output:
    return ops.det(ctx.req(0)).output(0)


@converter("MelWeightMatrix", since=17)
def mel_weight_matrix(ctx: NodeContext) -> Output:
    return ops.mel_weight_matrix(*[ctx.req(i) for i in range(5)],
                                 output_type=element_type(ctx.attr("output_datatype", 1))).output(0)


def _c(v: float, like: Output) -> Output:
    return const(v, like.element_type)


def _groups(ctx: NodeContext, k: int) -> list[list[Output]]:
    """Inputs after R and T in ``k`` equal groups (X..., G..., ...)."""
    rest = [ctx.req(i) for i in range(2, ctx.num_inputs)]
    if len(rest) % k:
        raise ctx.fail(f"expected {k} groups of tensors after R and T, got {len(rest)} tensors")
    n = len(rest) // k
    return [rest[g * n:(g + 1) * n] for g in range(k)]


def _regularized(x: Output, g: Output, norm: float) -> Output:
    return ops.add(ops.multiply(_c(norm, x), x), g).output(0) if norm else g


@converter("Adagrad", domain=TRAINING)
def adagrad(ctx: NodeContext) -> list[Output]:
    xs, gs, hs = _groups(ctx, 3)
    decay, eps, norm = ctx.attr("decay_factor", 0.0), ctx.attr("epsilon", 0.0), ctx.attr("norm_coefficient", 0.0)
    new_x, new_h = [], []
    for x, g, h in zip(xs, gs, hs):
        r = convert(ctx.req(0), x.element_type)
        t = convert(ctx.req(1), x.element_type)
        rate = ops.divide(r, ops.add(_c(1.0, x), ops.multiply(t, _c(decay, x)))).output(0)
        g_reg = _regularized(x, g, norm)
        h2 = ops.add(h, ops.multiply(g_reg, g_reg)).output(0)
        denom = ops.add(ops.sqrt(h2), _c(eps, x)).output(0)
        new_x.append(ops.subtract(x, ops.divide(ops.multiply(rate, g_reg), denom)).output(0))
        new_h.append(h2)
    return new_x + new_h


@converter("Momentum", domain=TRAINING)
def momentum(ctx: NodeContext) -> list[Output]:
    xs, gs, vs = _groups(ctx, 3)
    alpha, beta = ctx.attr("alpha"), ctx.attr("beta")
    nesterov = ctx.attr("mode", "standard") == "nesterov"
    norm = ctx.attr("norm_coefficient", 0.0)
    new_x, new_v = [], []
    for x, g, v in zip(xs, gs, vs):
        r = convert(ctx.req(0), x.element_type)
        first = ops.greater(ctx.req(1), const(0, ctx.req(1).element_type)).output(0)
        b = ops.select(first, _c(beta, x), _c(1.0, x)).output(0)
        g_reg = _regularized(x, g, norm)
        v2 = ops.add(ops.multiply(_c(alpha, x), v), ops.multiply(b, g_reg)).output(0)
        step = ops.add(g_reg, ops.multiply(_c(alpha, x), v2)).output(0) if nesterov else v2
        new_x.append(ops.subtract(x, ops.multiply(r, step)).output(0))
        new_v.append(v2)
    return new_x + new_v


@converter("Adam", domain=TRAINING)
def adam(ctx: NodeContext) -> list[Output]:
    xs, gs, vs, hs = _groups(ctx, 4)
    alpha, beta = ctx.attr("alpha", 0.9), ctx.attr("beta", 0.999)
    eps, norm, post = ctx.attr("epsilon", 1e-6), ctx.attr("norm_coefficient", 0.0), \
        ctx.attr("norm_coefficient_post", 0.0)
    new_x, new_v, new_h = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs):
        r = convert(ctx.req(0), Type.f64)
        t = convert(ctx.req(1), Type.f64)
        g_reg = _regularized(x, g, norm)
        v2 = ops.add(ops.multiply(_c(alpha, x), v), ops.multiply(_c(1.0 - alpha, x), g_reg)).output(0)
        h2 = ops.add(ops.multiply(_c(beta, x), h),
                     ops.multiply(_c(1.0 - beta, x), ops.multiply(g_reg, g_reg))).output(0)
        denom = ops.add(ops.sqrt(h2), _c(eps, x)).output(0)
        one = const(1.0, Type.f64)
        bias = ops.divide(ops.sqrt(ops.subtract(one, ops.power(const(beta, Type.f64), t))),
                          ops.subtract(one, ops.power(const(alpha, Type.f64), t))).output(0)
        first = ops.greater(t, const(0.0, Type.f64)).output(0)
        rate = convert(ops.select(first, ops.multiply(r, bias), r).output(0), x.element_type)
        x2 = ops.subtract(x, ops.divide(ops.multiply(rate, v2), denom)).output(0)
        if post:
            x2 = ops.multiply(_c(1.0 - post, x), x2).output(0)
        new_x.append(x2)
        new_v.append(v2)
        new_h.append(h2)
    return new_x + new_v + new_h


@converter("ImageDecoder", since=20)
def image_decoder(ctx: NodeContext) -> Output:
    return ops.image_decoder(ctx.req(0), ctx.attr("pixel_format", "RGB")).output(0)
