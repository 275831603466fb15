"""Elementwise ONNX ops: arithmetic, comparisons, logic, activations, Cast, Clip, Where."""

from __future__ import annotations

import math
from functools import reduce
from typing import Any

import ml_dtypes
import numpy as np

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.loader import element_type
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const, const_like, convert, rank_of, reshape, shape_of
from ember.graph.node import Output
from ember.graph.registry import get_op
from ember.graph.types import Type

_BINARY = {
    "Add": "add", "Sub": "subtract", "Mul": "multiply", "Equal": "equal", "Less": "less",
    "Greater": "greater", "LessOrEqual": "less_equal", "GreaterOrEqual": "greater_equal",
    "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor",
    "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor",
}


def _legacy_broadcast(ctx: NodeContext, a: Output, b: Output) -> tuple[Output, Output]:
    """Opset < 7 binary ops broadcast ``b`` onto ``a`` starting at attribute ``axis``."""
    if ctx.opset >= 7 or not ctx.attr("broadcast", 0):
        return a, b
    ra, rb = rank_of(a), rank_of(b)
    axis = ctx.attr("axis", ra - rb)
    axis = axis + ra if axis < 0 else axis
    if rb and b.partial_shape.is_static:
        dims = [d.get_length() for d in b.partial_shape]
        b = reshape(b, dims + [1] * (ra - axis - rb))
    return a, b


@converter(list(_BINARY))
def binary(ctx: NodeContext) -> Output:
    a, b = _legacy_broadcast(ctx, ctx.req(0), ctx.req(1))
    return getattr(ops, _BINARY[ctx.op_type])(a, b).output(0)


@converter("Div")
def div(ctx: NodeContext) -> Output:
    a, b = _legacy_broadcast(ctx, ctx.req(0), ctx.req(1))
    return get_op("Divide")([a, b], {"m_pythondiv": False}).output(0)


@converter("Pow")
def power(ctx: NodeContext) -> Output:
    a, b = ctx.req(0), ctx.req(1)
    return ops.power(a, convert(b, a.element_type)).output(0)


def _c_remainder(a: Output, b: Output) -> Output:
    """fmod for floats, exact where OpenVINO's Mod gives NaN: x % +-inf is x for finite x."""
    r = ops.mod(a, b).output(0)
    inf = const_like(np.inf, b)
    keep = ops.logical_and(ops.equal(ops.absolute(b), inf), ops.less(ops.absolute(a), const_like(np.inf, a)))
    return ops.select(keep, a, r).output(0)


@converter("Mod")
def mod(ctx: NodeContext) -> Output:
    a, b = ctx.req(0), ctx.req(1)
    if not a.element_type.is_real:
        return (ops.mod if ctx.attr("fmod", 0) else ops.floor_mod)(a, b).output(0)
    r = _c_remainder(a, b)
    if ctx.attr("fmod", 0):
        return r
    # Python's float %: the C remainder moved onto the divisor's side
    zero = const_like(0, r)
    flip = ops.logical_and(ops.not_equal(r, zero),
                           ops.not_equal(ops.less(r, zero), ops.less(b, const_like(0, b)))).output(0)
    return ops.select(flip, ops.add(r, b), r).output(0)


@converter("BitShift")
def bit_shift(ctx: NodeContext) -> Output:
    a, b = ctx.req(0), ctx.req(1)
    left = ctx.attr("direction") == "LEFT"
    return (ops.bitwise_left_shift if left else ops.bitwise_right_shift)(a, b).output(0)


_VARIADIC = {"Max": "maximum", "Min": "minimum", "Sum": "add", "Mean": "add"}


@converter(list(_VARIADIC))
def variadic(ctx: NodeContext) -> Output:
    xs = [x for x in ctx.inputs() if x is not None]
    if not xs:
        raise ctx.fail("needs at least one input")
    fn = getattr(ops, _VARIADIC[ctx.op_type])
    outp = reduce(lambda a, b: fn(a, b).output(0), xs)
    if ctx.op_type == "Mean" and len(xs) > 1:
        outp = ops.divide(outp, const_like(len(xs), outp)).output(0)
    return outp


_UNARY = {
    "Abs": "absolute", "Neg": "negative", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Floor": "floor",
    "Ceil": "ceiling", "Sign": "sign", "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin",
    "Acos": "acos", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh", "Acosh": "acosh",
    "Atanh": "atanh", "Erf": "erf", "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Not": "logical_not",
    "BitwiseNot": "bitwise_not", "Softplus": "softplus", "Softsign": "softsign", "Mish": "mish",
    "HardSwish": "hswish", "IsNaN": "is_nan",
}


@converter(list(_UNARY))
def unary(ctx: NodeContext) -> Output:
    return getattr(ops, _UNARY[ctx.op_type])(ctx.req(0)).output(0)


@converter("Round")
def round_(ctx: NodeContext) -> Output:
    return ops.round(ctx.req(0), "half_to_even").output(0)


@converter("Reciprocal")
def reciprocal(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    return ops.divide(const_like(1, x), x).output(0)


@converter(["Identity", "Dropout"], until=6)
@converter("Identity", since=7)
def identity(ctx: NodeContext) -> list[Any]:
    return [ctx.value(0)]


@converter("Dropout", since=7)
def dropout(ctx: NodeContext) -> list[Output]:
    x = ctx.req(0)
    training = ctx.const(2) if ctx.has_input(2) else np.array(False)
    ratio = ctx.const(1) if ctx.has_input(1) else np.array(ctx.attr("ratio", 0.5))
    if training is None or bool(np.asarray(training).reshape(-1)[0]) and (
            ratio is None or float(np.asarray(ratio).reshape(-1)[0]) != 0.0):
        # training mode (or a mode known only at run time): ember's random TrainingDropout
        r = convert(ctx.req(1), Type.f32) if ctx.has_input(1) else const(ctx.attr("ratio", 0.5), Type.f32)
        t = ctx.req(2) if ctx.has_input(2) else const(False, Type.boolean)
        node = ops.training_dropout(x, r, t, ctx.attr("seed", None))
        return node.outputs()[: max(1, ctx.num_outputs)]
    outs = [x]
    if ctx.output_used(1):
        outs.append(ops.broadcast(const(True, Type.boolean), shape_of(x)).output(0))
    return outs


@converter("Elu")
def elu(ctx: NodeContext) -> Output:
    return ops.elu(ctx.req(0), ctx.attr("alpha", 1.0)).output(0)


@converter("Selu")
def selu(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    alpha = ctx.attr("alpha", 1.67326319217681884765625)
    gamma = ctx.attr("gamma", 1.05070102214813232421875)
    return ops.selu(x, const_like([alpha], x), const_like([gamma], x)).output(0)


@converter("LeakyRelu")
def leaky_relu(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    return ops.prelu(x, const_like([ctx.attr("alpha", 0.01)], x)).output(0)


@converter("PRelu")
def prelu(ctx: NodeContext) -> Output:
    x, slope = ctx.req(0), ctx.req(1)
    return ops.prelu(x, slope).output(0)


@converter("ThresholdedRelu")
def thresholded_relu(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    mask = ops.greater(x, const_like(ctx.attr("alpha", 1.0), x)).output(0)
    return ops.select(mask, x, const_like(0, x)).output(0)


@converter("HardSigmoid")
def hard_sigmoid(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    alpha, beta = ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5)
    y = ops.add(ops.multiply(x, const_like(alpha, x)), const_like(beta, x)).output(0)
    return ops.clamp(y, 0.0, 1.0).output(0)


@converter("Celu")
def celu(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    alpha = ctx.attr("alpha", 1.0)
    scaled = ops.divide(x, const_like(alpha, x)).output(0)
    neg = ops.multiply(const_like(alpha, x), ops.elu(scaled, 1.0)).output(0)
    return ops.select(ops.greater(x, const_like(0, x)), x, neg).output(0)


@converter("Shrink")
def shrink(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    lambd, bias = ctx.attr("lambd", 0.5), ctx.attr("bias", 0.0)
    zero = const_like(0, x)
    lo = ops.select(ops.less(x, const_like(-lambd, x)), ops.add(x, const_like(bias, x)), zero).output(0)
    return ops.select(ops.greater(x, const_like(lambd, x)), ops.subtract(x, const_like(bias, x)), lo).output(0)


@converter("Gelu")
def gelu(ctx: NodeContext) -> Output:
    mode = ctx.attr("approximate", "none")
    return ops.gelu(ctx.req(0), "tanh" if mode == "tanh" else "erf").output(0)


@converter("Swish")
def swish(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    alpha = ctx.attr("alpha", 1.0)
    return ops.swish(x, const_like(alpha, x) if alpha != 1.0 else None).output(0)


@converter("IsInf")
def is_inf(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    pos, neg = ctx.attr("detect_positive", 1), ctx.attr("detect_negative", 1)
    hits = []
    if pos:
        hits.append(ops.equal(x, const_like(np.inf, x)).output(0))
    if neg:
        hits.append(ops.equal(x, const_like(-np.inf, x)).output(0))
    if not hits:
        return ops.broadcast(const(False, Type.boolean), shape_of(x)).output(0)
    return hits[0] if len(hits) == 1 else ops.logical_or(hits[0], hits[1]).output(0)


@converter("Where")
def where(ctx: NodeContext) -> Output:
    return ops.select(ctx.req(0), ctx.req(1), ctx.req(2)).output(0)


_WRAPPED = {Type.i4: (4, True), Type.u4: (4, False), Type.u2: (2, False), Type.i2: (2, True)}
_FLOAT8 = (Type.f8e4m3, Type.f8e5m2, Type.f8e4m3fnuz, Type.f8e5m2fnuz)


def _cast(ctx: NodeContext, x: Output, to: Type) -> Output:
    """ONNX Cast: integers into sub-byte integers wrap around (the spec: "discard higher bits"),
    floats into integers saturate (the spec leaves out-of-range undefined; ember's Convert
    saturates everywhere, as ONNX Runtime does for int4), float8 targets saturate unless
    saturate=0."""
    if x.element_type is to:
        return x
    if to in _WRAPPED and x.element_type.is_integral_number:
        bits, signed = _WRAPPED[to]
        v = convert(x, Type.i64)
        span, off = 1 << bits, (1 << (bits - 1)) if signed else 0
        v = ops.subtract(ops.floor_mod(ops.add(v, const(off, Type.i64)), const(span, Type.i64)),
                         const(off, Type.i64)).output(0)
        return convert(v, to)
    if to is Type.f8e8m0 and x.element_type.is_real:
        return _to_e8m0(ctx, x)
    if to in _FLOAT8 and x.element_type.is_real and ctx.attr("saturate", 1):
        hi = float(ml_dtypes.finfo(to.dtype).max)
        x = ops.clamp(x, -hi, hi).output(0)
    return convert(x, to)


def _to_e8m0(ctx: NodeContext, x: Output) -> Output:
    """float8 E8M0 keeps a power of two: the f32 exponent, rounded by ``round_mode`` (the sign is
    dropped; zero and subnormals have exponent -127; NaN and inf become NaN)."""
    mode = ctx.attr("round_mode", "up")
    f = ops.absolute(convert(x, Type.f32)).output(0)
    tiny = const(2.0 ** -126, Type.f32)
    normal = ops.greater_equal(f, tiny).output(0)
    safe = ops.select(normal, f, const(1.0, Type.f32)).output(0)
    e = ops.floor(ops.divide(ops.log(safe), const(np.log(2.0), Type.f32))).output(0)
    # log2 may land one off near powers of two: fix e so that 2^e <= f < 2^(e+1)
    p = ops.power(const(2.0, Type.f32), e).output(0)
    e = ops.select(ops.greater(p, safe), ops.subtract(e, const(1.0, Type.f32)), e).output(0)
    e = ops.select(ops.less_equal(ops.multiply(ops.power(const(2.0, Type.f32), e), const(2.0, Type.f32)), safe),
                   ops.add(e, const(1.0, Type.f32)), e).output(0)
    exact = ops.equal(ops.power(const(2.0, Type.f32), e), safe).output(0)
    if mode == "up":
        e = ops.select(exact, e, ops.add(e, const(1.0, Type.f32))).output(0)
    elif mode == "nearest":
        mant = ops.divide(safe, ops.power(const(2.0, Type.f32), e)).output(0)  # in [1, 2)
        e = ops.select(ops.greater_equal(mant, const(1.5, Type.f32)), ops.add(e, const(1.0, Type.f32)), e).output(0)
    sub = ops.select(ops.equal(f, const(0.0, Type.f32)), const(-127.0, Type.f32),
                     const(-126.0 if mode == "up" else -127.0, Type.f32)).output(0)
    e = ops.select(normal, e, sub).output(0)
    if ctx.attr("saturate", 1):
        e = ops.minimum(e, const(127.0, Type.f32)).output(0)
    y = ops.power(const(2.0, Type.f32), e).output(0)
    special = ops.logical_or(ops.is_nan(f), ops.equal(f, const(np.inf, Type.f32))).output(0)
    y = ops.select(special, const(np.nan, Type.f32), y).output(0)
    return convert(y, Type.f8e8m0)


@converter("Cast")
def cast(ctx: NodeContext) -> Output:
    return _cast(ctx, ctx.req(0), element_type(ctx.attr("to")))


@converter("CastLike")
def cast_like(ctx: NodeContext) -> Output:
    x, like = ctx.req(0), ctx.req(1)
    if like.element_type.is_dynamic:
        return ops.convert_like(x, like).output(0)
    return _cast(ctx, x, like.element_type)


def _limits(et: Type) -> tuple[float, float]:
    if et.is_real:
        info = np.finfo(et.dtype) if et.dtype.kind == "f" else None
        return (float(info.min), float(info.max)) if info is not None else (-math.inf, math.inf)
    info_i = np.iinfo(et.dtype)
    return float(info_i.min), float(info_i.max)


@converter("Clip", until=10)
def clip_attrs(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    lo, hi = _limits(x.element_type)
    return ops.clamp(x, ctx.attr("min", lo), ctx.attr("max", hi)).output(0)


@converter("Clip", since=11)
def clip(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    lo_in = ctx.input(1) if ctx.has_input(1) else None
    hi_in = ctx.input(2) if ctx.has_input(2) else None
    lo_v = ctx.const(1) if lo_in is not None else None
    hi_v = ctx.const(2) if hi_in is not None else None
    if x.element_type.is_real and (lo_in is None or lo_v is not None) and (hi_in is None or hi_v is not None):
        lo, hi = _limits(x.element_type)
        lo = lo if lo_v is None else float(np.asarray(lo_v).reshape(-1)[0])
        hi = hi if hi_v is None else float(np.asarray(hi_v).reshape(-1)[0])
        if not (math.isnan(lo) or math.isnan(hi)):
            return ops.clamp(x, lo, hi).output(0)
    y = x
    if lo_in is not None:
        y = ops.maximum(y, convert(lo_in, x.element_type)).output(0)
    if hi_in is not None:
        y = ops.minimum(y, convert(hi_in, x.element_type)).output(0)
    return y
