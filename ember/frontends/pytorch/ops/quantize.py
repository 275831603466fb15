"""Fake quantization (as NNCF and torch.ao insert it) as OpenVINO's FakeQuantize."""

from __future__ import annotations

from typing import Any

import ember.opset as ops
from ember.frontends.pytorch.context import Call, const, convert, i64, rank_of
from ember.frontends.pytorch.registry import converter
from ember.graph.node import Output


def _fake_quantize(x: Output, scale: Output, zero_point: Output, qmin: int, qmax: int) -> Output:
    et = x.element_type
    scale, zp = convert(scale, et), convert(zero_point, et)
    lo = ops.multiply(ops.subtract(const(qmin, et), zp), scale).output(0)
    hi = ops.multiply(ops.subtract(const(qmax, et), zp), scale).output(0)
    return ops.fake_quantize(x, lo, hi, lo, hi, qmax - qmin + 1).output(0)


@converter("aten.fake_quantize_per_tensor_affine", "aten.fake_quantize_per_tensor_affine_cachemask")
def per_tensor(call: Call) -> Any:
    x = call.tensor("self")
    y = _fake_quantize(x, call.tensor("scale", x), call.tensor("zero_point", x), call.int("quant_min"),
                       call.int("quant_max"))
    return (y, None) if call.op.endswith("cachemask") else y


@converter("aten.fake_quantize_per_channel_affine", "aten.fake_quantize_per_channel_affine_cachemask")
def per_channel(call: Call) -> Any:
    x = call.tensor("self")
    r = rank_of(x)
    axis = call.int("axis") % r
    shape = i64([-1] + [1] * (r - axis - 1))

    def along_axis(v: Output) -> Output:
        return ops.reshape(v, shape, False).output(0)

    y = _fake_quantize(x, along_axis(call.tensor("scale")), along_axis(call.tensor("zero_point")),
                       call.int("quant_min"), call.int("quant_max"))
    return (y, None) if call.op.endswith("cachemask") else y
