"""ONNX random ops onto ember's own random ops (``ember.ops.random``): RandomNormal,
RandomUniform, their ``*Like`` forms, Multinomial and Bernoulli. A ``seed`` attribute makes the
values the same on every run."""

from __future__ import annotations

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.loader import element_type
from ember.frontends.onnx.registry import converter
from ember.graph.node import Output
from ember.graph.types import Type


def _dtype(ctx: NodeContext, default: Type | None) -> Type:
    if ctx.has_attr("dtype"):
        return element_type(ctx.attr("dtype"))
    return default if default is not None else Type.f32


@converter("RandomNormal")
def random_normal(ctx: NodeContext) -> Output:
    return ops.random_normal(ctx.attr("shape"), ctx.attr("mean", 0.0), ctx.attr("scale", 1.0),
                             ctx.attr("seed", None), _dtype(ctx, Type.f32)).output(0)


@converter("RandomNormalLike")
def random_normal_like(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    return ops.random_normal((), ctx.attr("mean", 0.0), ctx.attr("scale", 1.0), ctx.attr("seed", None),
                             _dtype(ctx, x.element_type), like=x).output(0)


@converter("RandomUniform")
def random_uniform(ctx: NodeContext) -> Output:
    return ops.random_uniform_values(ctx.attr("shape"), ctx.attr("low", 0.0), ctx.attr("high", 1.0),
                                     ctx.attr("seed", None), _dtype(ctx, Type.f32)).output(0)


@converter("RandomUniformLike")
def random_uniform_like(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    return ops.random_uniform_values((), ctx.attr("low", 0.0), ctx.attr("high", 1.0), ctx.attr("seed", None),
                                     _dtype(ctx, x.element_type), like=x).output(0)


@converter("Bernoulli", since=15)
def bernoulli(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    return ops.bernoulli(x, ctx.attr("seed", None), _dtype(ctx, x.element_type)).output(0)


@converter("Multinomial", since=7)
def multinomial(ctx: NodeContext) -> Output:
    return ops.multinomial(ctx.req(0), ctx.attr("sample_size", 1), ctx.attr("seed", None),
                           _dtype(ctx, Type.i32)).output(0)
