"""QuantizeLinear / DequantizeLinear and the QLinear*/Integer ops, as OpenVINO converts them.

QuantizeLinear becomes a FakeQuantize onto the integer grid followed by a Convert to the
integer type; DequantizeLinear becomes ``Convert -> Subtract(zero point) -> Multiply(scale)``
(the weight-decompression pattern when its input is a constant). A QuantizeLinear whose result
feeds a DequantizeLinear with the same scale and zero point becomes one FakeQuantize that stays
in floating point, as in OpenVINO's IR of a Q/DQ model.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.loader import element_type
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const, convert, i64, rank_of
from ember.graph.core_ops import Constant
from ember.graph.node import Output, constant_value
from ember.graph.types import Type, integer_range

_FLOAT8 = (Type.f8e4m3, Type.f8e5m2, Type.f4e2m1, Type.f8e8m0)


@dataclass(frozen=True)
class _Quantized:
    """What a QuantizeLinear made, for a following DequantizeLinear to fuse with."""

    source: Output
    input_low: Output
    input_high: Output
    levels: int
    scale: Output
    zero_point: Output | None


def _broadcastable(v: Output, x_rank: int, axis: int, block: int, x: Output) -> Output:
    """A per-axis (1-D) or blocked scale / zero point shaped to broadcast against ``x``."""
    ps = v.partial_shape
    if not ps.rank_is_static or len(ps) == 0 or (len(ps) == 1 and ps[0] == 1 and block == 0):
        return v
    if block > 0:
        dim = x.partial_shape[axis]
        if not dim.is_static:
            raise ValueError("blocked quantization needs a static quantized axis")
        expanded = ops.unsqueeze(v, i64([axis + 1])).output(0)
        shape = [d.get_length() if d.is_static else -1 for d in ps]
        tgt = shape[: axis + 1] + [block] + shape[axis + 1:]
        merged = shape[:axis] + [shape[axis] * block] + shape[axis + 1:]
        rep = ops.broadcast(expanded, i64(tgt)).output(0)
        flat = ops.reshape(rep, i64(merged), False).output(0)
        return ops.slice(flat, i64([0]), i64([dim.get_length()]), i64([1]), i64([axis])).output(0)
    if len(ps) == 1 and x_rank > 1:
        target = [1] * x_rank
        target[axis] = -1
        data = constant_value(v)
        if data is not None and isinstance(v.node, Constant):
            shape = [1] * x_rank
            shape[axis] = int(data.size)
            return Constant.from_array(np.asarray(data.reshape(shape), order="C"), v.element_type).output(0)
        return ops.reshape(v, i64(target), False).output(0)
    return v


def _axis(ctx: NodeContext, x: Output) -> int:
    r = rank_of(x)
    axis = ctx.attr("axis", 1)
    return axis + r if axis < 0 and r else axis


def _target_type(ctx: NodeContext, zp: Output | None) -> Type:
    if zp is not None:
        return zp.element_type
    if ctx.attr("output_dtype", 0):
        return element_type(ctx.attr("output_dtype"))
    return Type.u8


@converter("QuantizeLinear", since=10)
def quantize_linear(ctx: NodeContext) -> Output:
    x, scale = ctx.req(0), ctx.req(1)
    zp = ctx.input(2) if ctx.has_input(2) else None
    et = _target_type(ctx, zp)
    r = rank_of(x)
    axis = _axis(ctx, x) if ctx.opset >= 13 else 1
    block = ctx.attr("block_size", 0)
    work = Type.f32 if x.element_type is not Type.f64 else Type.f64
    xf = convert(x, work)
    s = _broadcastable(convert(scale, work), r, axis, block, x)
    if et in _FLOAT8:
        y = ops.divide(xf, s).output(0)
        if zp is not None:
            y = ops.add(y, _broadcastable(convert(zp, work), r, axis, block, x)).output(0)
        if ctx.attr("saturate", 1):
            hi = float(ml_dtypes.finfo(et.dtype).max)
            y = ops.clamp(y, -hi, hi).output(0)
        return convert(y, et)
    if not et.is_integral_number:
        raise ctx.fail(f"quantizing to {et} is not supported")
    lo, hi = integer_range(et)
    z = const(0.0, work) if zp is None else _broadcastable(convert(zp, work), r, axis, block, x)
    in_low, in_high = _range(lo, hi, z, s, r, work)
    # the integer result is computed exactly as ONNX defines it (round half to even of x / scale);
    # a following DequantizeLinear fuses with this into one FakeQuantize (see dequantize_linear)
    q = ops.add(ops.round(ops.divide(xf, s), "half_to_even"), z).output(0)
    y = convert(ops.clamp(q, float(lo), float(hi)).output(0), et)
    ctx.graph.notes[y] = _Quantized(xf, in_low, in_high, hi - lo + 1, scale, zp)
    return y


def _range(lo: int, hi: int, z: Output, s: Output, rank: int, work: Type) -> tuple[Output, Output]:
    """FakeQuantize's input range ``(lo - zp) * scale .. (hi - zp) * scale``: constants shaped to
    the data's rank when scale and zero point are known (as OpenVINO's IR has them), else nodes."""
    zv, sv = constant_value(z), constant_value(s)
    if zv is not None and sv is not None:
        low = (np.float64(lo) - zv.astype(np.float64)) * sv.astype(np.float64)
        high = (np.float64(hi) - zv.astype(np.float64)) * sv.astype(np.float64)
        shape = (1,) * (rank - low.ndim) + low.shape if low.ndim < rank else low.shape
        return (Constant.from_array(np.asarray(low.reshape(shape), dtype=work.dtype, order="C"), work).output(0),
                Constant.from_array(np.asarray(high.reshape(shape), dtype=work.dtype, order="C"), work).output(0))
    return (ops.multiply(ops.subtract(const(float(lo), work), z), s).output(0),
            ops.multiply(ops.subtract(const(float(hi), work), z), s).output(0))


def _same(a: Output | None, b: Output | None) -> bool:
    if a is None or b is None:
        return a is None and b is None or _all_zero(a if a is not None else b)
    if a == b:
        return True
    va, vb = constant_value(a), constant_value(b)
    return va is not None and vb is not None and va.shape == vb.shape and np.array_equal(va, vb)


def _all_zero(v: Output | None) -> bool:
    data = None if v is None else constant_value(v)
    return data is not None and not np.any(data)


@converter("DequantizeLinear", since=10)
def dequantize_linear(ctx: NodeContext) -> Output:
    x, scale = ctx.req(0), ctx.req(1)
    zp = ctx.input(2) if ctx.has_input(2) else None
    q = ctx.graph.notes.get(x)
    out_type = element_type(ctx.attr("output_dtype")) if ctx.attr("output_dtype", 0) else scale.element_type
    if isinstance(q, _Quantized) and _same(q.scale, scale) and _same(q.zero_point, zp):
        fq = ops.fake_quantize(q.source, q.input_low, q.input_high, q.input_low, q.input_high, q.levels)
        return convert(fq.output(0), out_type)
    r = rank_of(x)
    axis = _axis(ctx, x) if ctx.opset >= 13 else 1
    block = ctx.attr("block_size", 0)
    work = out_type if out_type.is_real else Type.f32
    y = convert(x, work)
    if x.node.type_name == "Const" and y.node.type_name == "Convert":
        # an integer weight stays integer in the IR (folding passes keep decompression Converts)
        y.node.rt_info["decompression"] = {"version": "0"}
    if zp is not None and not _all_zero(zp) and x.element_type not in _FLOAT8:
        y = ops.subtract(y, _broadcastable(convert(zp, work), r, axis, block, x)).output(0)
    y = ops.multiply(y, _broadcastable(convert(scale, work), r, axis, block, x)).output(0)
    return convert(y, out_type)


def _dequantized(x: Output, scale: Output, zp: Output | None, axis: int | None = None) -> Output:
    """``(x - zp) * scale`` in f32; a 1-D scale/zp applies along ``axis``."""
    y = convert(x, Type.f32)
    if x.node.type_name == "Const" and y.node.type_name == "Convert":  # integer weights stay integer
        y.node.rt_info["decompression"] = {"version": "0"}
    r = rank_of(x)
    if zp is not None and not _all_zero(zp):
        z = convert(zp, Type.f32)
        y = ops.subtract(y, _broadcastable(z, r, axis, 0, x) if axis is not None else z).output(0)
    s = convert(scale, Type.f32)
    return ops.multiply(y, _broadcastable(s, r, axis, 0, x) if axis is not None else s).output(0)


def _requantized(y: Output, scale: Output, zp: Output | None, et: Type) -> Output:
    lo, hi = integer_range(et)
    s = convert(scale, Type.f32)
    z = const(0.0, Type.f32) if zp is None else convert(zp, Type.f32)
    in_low, in_high = _range(lo, hi, z, s, rank_of(y), Type.f32)
    fq = ops.fake_quantize(y, in_low, in_high, const(float(lo), Type.f32), const(float(hi), Type.f32),
                           hi - lo + 1).output(0)
    return convert(fq, et)


def _conv_like(ctx: NodeContext, x: Output, w: Output) -> Output:
    from ember.frontends.onnx.ops.nn import _grouped_filters, _spatial_rank, _window_attrs

    n = _spatial_rank(ctx, x, w)
    strides, dilations, pb, pe, auto_pad = _window_attrs(ctx, n)
    group = ctx.attr("group", 1)
    if group == 1:
        return ops.convolution(x, w, strides, pb, pe, dilations, auto_pad).output(0)
    return ops.group_convolution(x, _grouped_filters(w, group), strides, pb, pe, dilations, auto_pad).output(0)


@converter("QLinearConv")
def qlinear_conv(ctx: NodeContext) -> Output:
    x = _dequantized(ctx.req(0), ctx.req(1), ctx.req(2))
    w = _dequantized(ctx.req(3), ctx.req(4), ctx.req(5), axis=0)
    y = _conv_like(ctx, x, w)
    if ctx.has_input(8):
        r = rank_of(y)
        bscale = ops.multiply(convert(ctx.req(1), Type.f32), convert(ctx.req(4), Type.f32)).output(0)
        b = ops.multiply(convert(ctx.req(8), Type.f32), bscale).output(0)
        y = ops.add(y, ops.reshape(b, i64([1, -1] + [1] * (r - 2)), False)).output(0)
    zp = ctx.req(7) if ctx.has_input(7) else None
    return _requantized(y, ctx.req(6), zp, zp.element_type if zp is not None else Type.u8)


@converter("QLinearMatMul")
def qlinear_matmul(ctx: NodeContext) -> Output:
    a_scale, b_scale = ctx.req(1), ctx.req(4)
    a = _dequantized(ctx.req(0), a_scale, ctx.req(2),
                     axis=rank_of(ctx.req(0)) - 2 if a_scale.partial_shape.rank_is_static and
                     len(a_scale.partial_shape) == 1 and a_scale.partial_shape[0] != 1 else None)
    b = _dequantized(ctx.req(3), b_scale, ctx.req(5))
    y = ops.matmul(a, b, False, False).output(0)
    zp = ctx.req(7) if ctx.has_input(7) else None
    out_type = zp.element_type if zp is not None else Type.u8
    y = convert(y, ctx.req(6).element_type) if ctx.req(6).element_type is not Type.f32 else y
    return _requantized(convert(y, Type.f32), ctx.req(6), zp, out_type)


def _int_operand(x: Output, zp: Output | None, axis: int | None) -> Output:
    y = convert(x, Type.i32)
    if zp is not None:
        z = convert(zp, Type.i32)
        if axis is not None and zp.partial_shape.rank_is_static and len(zp.partial_shape) == 1:
            z = _broadcastable(z, rank_of(x), axis, 0, x)
        y = ops.subtract(y, z).output(0)
    return y


@converter("MatMulInteger")
def matmul_integer(ctx: NodeContext) -> Output:
    a, b = ctx.req(0), ctx.req(1)
    ia = _int_operand(a, ctx.input(2) if ctx.has_input(2) else None, rank_of(a) - 2)
    ib = _int_operand(b, ctx.input(3) if ctx.has_input(3) else None, None)
    return ops.matmul(ia, ib, False, False).output(0)


@converter("ConvInteger")
def conv_integer(ctx: NodeContext) -> Output:
    x, w = ctx.req(0), ctx.req(1)
    xi = convert(_int_operand(x, ctx.input(2) if ctx.has_input(2) else None, None), Type.f32)
    wi = convert(_int_operand(w, ctx.input(3) if ctx.has_input(3) else None, 0), Type.f32)
    return convert(_conv_like(ctx, xi, wi), Type.i32)
