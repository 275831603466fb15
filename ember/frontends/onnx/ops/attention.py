"""Attention ops that ONNX defines by function bodies, computed in f32 for 16-bit inputs.

ONNX's Attention, RotaryEmbedding and friends expand into plain ops; with f16/bf16 data the
softmax and the accumulations lose precision that OpenVINO's CPU plugin keeps by computing in
f32. These converters widen the floating inputs, expand the function, and narrow the outputs.
"""

from __future__ import annotations

from typing import Any

from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import convert
from ember.graph.node import Output
from ember.graph.types import Type

_NARROW = (Type.f16, Type.bf16)


@converter("Attention", since=23)
def attention(ctx: NodeContext) -> list[Any]:
    values = [ctx.value(i) if ctx.has_input(i) else None for i in range(ctx.num_inputs)]
    narrow = next((v.element_type for v in values if isinstance(v, Output) and v.element_type in _NARROW), None)
    if narrow is None or ctx.has_attr("softmax_precision"):
        return ctx.graph.expand_with(ctx, values)
    wide = [convert(v, Type.f32) if isinstance(v, Output) and v.element_type is narrow else v for v in values]
    outs = ctx.graph.expand_with(ctx, wide)
    return [convert(o, narrow) if isinstance(o, Output) and o.element_type is Type.f32 else o for o in outs]
