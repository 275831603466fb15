"""Elementwise ATen ops: arithmetic, comparisons, activations, casts."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

import ember.opset as ops
from ember.frontends.pytorch.context import Call, const, convert, folded, i64, promote, rank_of, shape_tensor
from ember.frontends.pytorch.registry import converter
from ember.graph.node import Output
from ember.graph.types import Type


def _operands(call: Call, a: str, b: str, et: Type | None = None) -> tuple[Output, Output, Type]:
    x, y = call[a], call[b]
    t = et or promote(x, y)
    return _as(x, t), _as(y, t), t


def _as(v: Any, et: Type) -> Output:
    return convert(v, et) if isinstance(v, Output) else const(v, et)


def _both_python(call: Call, a: str, b: str) -> tuple[Any, Any] | None:
    x, y = folded(call[a]), folded(call[b])
    if isinstance(x, Output) or isinstance(y, Output) or isinstance(x, list) or isinstance(y, list):
        return None
    return x, y


_ARITH = {"aten.add": (ops.add, operator.add), "aten.sub": (ops.subtract, operator.sub),
          "aten.mul": (ops.multiply, operator.mul), "aten.maximum": (ops.maximum, max),
          "aten.minimum": (ops.minimum, min),
          "aten.remainder": (ops.floor_mod, operator.mod), "aten.fmod": (ops.mod, math.fmod)}


@converter("aten.add", "aten.sub", "aten.mul", "aten.maximum", "aten.minimum", "aten.remainder", "aten.fmod")
def arithmetic(call: Call) -> Any:
    a, b = ("self", "other") if "other" in call.args else ("a", "b")
    build, py = _ARITH[call.op]
    alpha = call.get("alpha", 1)
    both = _both_python(call, a, b)
    if both is not None:
        x, y = both
        return py(x, y * alpha if call.op in ("aten.add", "aten.sub") else y)
    x, y, t = _operands(call, a, b, call.out_type if call.out_type and call.out_type.is_real else None)
    if alpha != 1 and call.op in ("aten.add", "aten.sub"):
        y = ops.multiply(y, const(alpha, t)).output(0)
    return build(x, y).output(0)


@converter("aten.pow")
def pow_(call: Call) -> Output:
    base = call["self"]
    exp = call["exponent"]
    if not isinstance(base, Output):
        t = call.out_type or promote(base, exp)
        return ops.power(const(base, t), _as(exp, t)).output(0)
    t = call.out_type or promote(base, exp)
    if not isinstance(exp, Output):
        if exp == 2:
            x = _as(base, t)
            return ops.multiply(x, x).output(0)
        if exp == 0.5:
            return ops.sqrt(_as(base, t)).output(0)
    return ops.power(_as(base, t), _as(exp, t)).output(0)


@converter("aten.rsub")
def rsub(call: Call) -> Output:
    x, y, t = _operands(call, "self", "other", call.out_type)
    alpha = call.get("alpha", 1)
    if alpha != 1:
        x = ops.multiply(x, const(alpha, t)).output(0)
    return ops.subtract(y, x).output(0)


@converter("aten.div")
def div(call: Call) -> Any:
    a, b = ("self", "other") if "other" in call.args else ("a", "b")
    mode = call.get("rounding_mode")
    both = _both_python(call, a, b)
    if both is not None:
        x, y = both
        return x / y if mode is None else (math.floor(x / y) if mode == "floor" else math.trunc(x / y))
    t = call.out_type or promote(call[a], call[b])
    if mode is None and not t.is_real:
        t = Type.f32
    x, y = _as(call[a], t), _as(call[b], t)
    if mode is None or not t.is_real:
        if mode == "floor" and not t.is_real:
            return ops.floor(ops.divide(convert(x, Type.f64), convert(y, Type.f64))).output(0)
        return ops.divide(x, y).output(0)
    q = ops.divide(x, y).output(0)
    return (ops.floor(q) if mode == "floor" else ops.multiply(ops.sign(q), ops.floor(ops.absolute(q)))).output(0)


@converter("aten.floor_divide", "aten.floordiv")
def floor_divide(call: Call) -> Any:
    if "a" in call.args:
        call.args["self"], call.args["other"] = call.args.pop("a"), call.args.pop("b")
    both = _both_python(call, "self", "other")
    if both is not None:
        return both[0] // both[1]
    x, y, t = _operands(call, "self", "other", call.out_type)
    if t.is_real:
        return ops.floor(ops.divide(x, y)).output(0)
    return convert(ops.floor(ops.divide(convert(x, Type.f64), convert(y, Type.f64))).output(0), t)


_COMPARE = {"aten.eq": ops.equal, "aten.ne": ops.not_equal, "aten.lt": ops.less, "aten.le": ops.less_equal,
            "aten.gt": ops.greater, "aten.ge": ops.greater_equal, "aten.logical_and": ops.logical_and,
            "aten.logical_or": ops.logical_or, "aten.logical_xor": ops.logical_xor}


@converter(*_COMPARE)
def compare(call: Call) -> Any:
    both = _both_python(call, "self", "other") if "self" in call.args else _both_python(call, "a", "b")
    if both is not None:
        import operator as op_

        fn = {"aten.eq": op_.eq, "aten.ne": op_.ne, "aten.lt": op_.lt, "aten.le": op_.le, "aten.gt": op_.gt,
              "aten.ge": op_.ge, "aten.logical_and": lambda a, b: bool(a) and bool(b),
              "aten.logical_or": lambda a, b: bool(a) or bool(b), "aten.logical_xor": lambda a, b: bool(a) != bool(b)}
        return fn[call.op](*both)
    if "self" not in call.args:
        call.args["self"], call.args["other"] = call.args.pop("a"), call.args.pop("b")
    a, b = call.args.get("self"), call.args.get("other")
    if isinstance(a, list) or isinstance(b, list):  # int lists (sizes) in TorchScript checks
        if call.op not in ("aten.eq", "aten.ne"):
            raise call.fail("ordering comparisons of lists are not supported")
        def items(v: Any) -> Any:
            return [folded(x) for x in v] if isinstance(v, list) else v

        def length(v: Any) -> int | None:
            if isinstance(v, list):
                return len(v)
            d = v.partial_shape[0] if v.partial_shape.rank_is_static and len(v.partial_shape) == 1 else None
            return d.get_length() if d is not None and d.is_static else None

        la, lb = items(a), items(b)
        if None not in (length(la), length(lb)) and length(la) != length(lb):
            return call.op == "aten.ne"
        if isinstance(la, list) and isinstance(lb, list) and not any(isinstance(v, Output) for v in la + lb):
            return (la == lb) == (call.op == "aten.eq")

        def port(v: Any) -> Output:
            return shape_tensor(v) if isinstance(v, list) else convert(v, Type.i64)

        same = ops.reduce_logical_and(ops.equal(port(la), port(lb)), i64([0]), False).output(0)
        return same if call.op == "aten.eq" else ops.logical_not(same).output(0)
    if call.op.startswith("aten.logical"):
        x, y, _ = _operands(call, "self", "other", Type.boolean)
    else:
        x, y, _ = _operands(call, "self", "other")
    return _COMPARE[call.op](x, y).output(0)


@converter("aten.bitwise_and", "aten.bitwise_or", "aten.bitwise_xor")
def bitwise(call: Call) -> Output:
    x, y, t = _operands(call, "self", "other")
    if t is Type.boolean:
        fn = {"aten.bitwise_and": ops.logical_and, "aten.bitwise_or": ops.logical_or,
              "aten.bitwise_xor": ops.logical_xor}[call.op]
    else:
        fn = {"aten.bitwise_and": ops.bitwise_and, "aten.bitwise_or": ops.bitwise_or,
              "aten.bitwise_xor": ops.bitwise_xor}[call.op]
    return fn(x, y).output(0)


@converter("aten.bitwise_not", "aten.logical_not")
def bitwise_not(call: Call) -> Output:
    x = call.tensor("self")
    if x.element_type is Type.boolean or call.op == "aten.logical_not":
        return ops.logical_not(convert(x, Type.boolean)).output(0)
    return ops.bitwise_not(x).output(0)


def _float(call: Call, name: str = "self") -> Output:
    x = call.tensor(name)
    return x if x.element_type.is_real else convert(x, call.out_type if call.out_type and call.out_type.is_real
                                                    else Type.f32)


_UNARY: dict[str, Callable[[Output], Any]] = {
    "aten.relu": ops.relu, "aten.sigmoid": ops.sigmoid, "aten.tanh": ops.tanh, "aten.exp": ops.exp,
    "aten.log": ops.log, "aten.sqrt": ops.sqrt, "aten.sin": ops.sin, "aten.cos": ops.cos, "aten.tan": ops.tan,
    "aten.erf": ops.erf, "aten.abs": ops.absolute, "aten.neg": ops.negative, "aten.floor": ops.floor,
    "aten.ceil": ops.ceiling, "aten.sign": ops.sign, "aten.asin": ops.asin, "aten.acos": ops.acos,
    "aten.atan": ops.atan, "aten.sinh": ops.sinh, "aten.cosh": ops.cosh, "aten.asinh": ops.asinh,
    "aten.acosh": ops.acosh, "aten.atanh": ops.atanh, "aten.mish": ops.mish, "aten.softsign": ops.softsign,
    "aten.hardswish": ops.hswish, "aten.hardsigmoid": ops.hsigmoid, "aten.silu": ops.swish,
}
_FLOAT_ONLY = {"aten.sigmoid", "aten.tanh", "aten.exp", "aten.log", "aten.sqrt", "aten.sin", "aten.cos", "aten.tan",
               "aten.erf", "aten.asin", "aten.acos", "aten.atan", "aten.sinh", "aten.cosh", "aten.asinh",
               "aten.acosh", "aten.atanh"}


@converter(*_UNARY)
def unary(call: Call) -> Any:
    x = folded(call["self"]) if "self" in call.args else folded(call["a"])
    if not isinstance(x, Output):
        if call.op == "aten.neg":
            return -x
        if call.op == "aten.abs":
            return abs(x)
        x = call.tensor("self")
    if call.op in _FLOAT_ONLY:
        x = _float(call)
    return _UNARY[call.op](x).output(0)


@converter("aten.rsqrt")
def rsqrt(call: Call) -> Output:
    x = _float(call)
    return ops.divide(const(1.0, x.element_type), ops.sqrt(x)).output(0)


@converter("aten.reciprocal")
def reciprocal(call: Call) -> Output:
    x = _float(call)
    return ops.divide(const(1.0, x.element_type), x).output(0)


@converter("aten.log1p")
def log1p(call: Call) -> Output:
    x = _float(call)
    return ops.log(ops.add(x, const(1.0, x.element_type))).output(0)


@converter("aten.expm1")
def expm1(call: Call) -> Output:
    x = _float(call)
    return ops.subtract(ops.exp(x), const(1.0, x.element_type)).output(0)


@converter("aten.log2", "aten.log10")
def log_base(call: Call) -> Output:
    x = _float(call)
    base = 2.0 if call.op == "aten.log2" else 10.0
    return ops.divide(ops.log(x), const(np.log(base), x.element_type)).output(0)


@converter("aten.round")
def round_(call: Call) -> Output:
    x = call.tensor("self")
    decimals = call.get("decimals", 0)
    if decimals:
        s = const(10.0 ** decimals, x.element_type)
        return ops.divide(ops.round(ops.multiply(x, s), mode="half_to_even"), s).output(0)
    return ops.round(x, mode="half_to_even").output(0)


@converter("aten.gelu")
def gelu(call: Call) -> Output:
    mode = call.get("approximate", "none")
    return ops.gelu(call.tensor("self"), "tanh" if mode == "tanh" else "erf").output(0)


@converter("aten.hardtanh", "aten.clamp", "aten.clip", "aten.relu6")
def clamp(call: Call) -> Output:
    x = call.tensor("self")
    if call.op == "aten.relu6":
        lo, hi = 0.0, 6.0
    elif call.op == "aten.hardtanh":
        lo, hi = call.get("min_val", -1.0), call.get("max_val", 1.0)
    else:
        lo, hi = call.args.get("min"), call.args.get("max")
    lo, hi = folded(lo), folded(hi)
    if isinstance(lo, Output) or isinstance(hi, Output):
        y = x
        if lo is not None:
            y = ops.maximum(y, _as(lo, x.element_type)).output(0)
        if hi is not None:
            y = ops.minimum(y, _as(hi, x.element_type)).output(0)
        return y
    if call.out_type is not None and call.out_type is not x.element_type:
        x = convert(x, call.out_type)
    if not x.element_type.is_real:
        y = x
        if lo is not None:
            y = ops.maximum(y, const(lo, x.element_type)).output(0)
        if hi is not None:
            y = ops.minimum(y, const(hi, x.element_type)).output(0)
        return y
    finfo = np.finfo(np.float32)
    return ops.clamp(x, float(finfo.min if lo is None else lo), float(finfo.max if hi is None else hi)).output(0)


@converter("aten.clamp_min", "aten.clamp_max")
def clamp_one(call: Call) -> Output:
    x = call.tensor("self")
    v = call["min" if call.op == "aten.clamp_min" else "max"]
    fn = ops.maximum if call.op == "aten.clamp_min" else ops.minimum
    return fn(x, _as(v, x.element_type)).output(0)


@converter("aten.leaky_relu")
def leaky_relu(call: Call) -> Output:
    x = call.tensor("self")
    slope = call.get("negative_slope", 0.01)
    return ops.prelu(x, const([slope], x.element_type)).output(0)


@converter("aten.elu")
def elu(call: Call) -> Output:
    x = call.tensor("self")
    alpha, scale, in_scale = call.get("alpha", 1.0), call.get("scale", 1.0), call.get("input_scale", 1.0)
    if in_scale != 1:
        x = ops.multiply(x, const(in_scale, x.element_type)).output(0)
    y = ops.elu(x, float(alpha)).output(0)
    return y if scale == 1 else ops.multiply(y, const(scale, x.element_type)).output(0)


@converter("aten.softplus")
def softplus(call: Call) -> Output:
    x = call.tensor("self")
    beta, threshold = call.get("beta", 1.0), call.get("threshold", 20.0)
    if beta == 1:
        y = ops.softplus(x).output(0)
    else:
        b = const(beta, x.element_type)
        y = ops.divide(ops.softplus(ops.multiply(x, b)), b).output(0)
    big = ops.greater(ops.multiply(x, const(beta, x.element_type)), const(threshold, x.element_type))
    return ops.select(big, x, y).output(0)


@converter("aten.where")
def where(call: Call) -> Output:
    cond = convert(call.tensor("condition"), Type.boolean)
    x, y, _ = _operands(call, "self", "other", call.out_type)
    return ops.select(cond, x, y).output(0)


@converter("aten.masked_fill")
def masked_fill(call: Call) -> Output:
    x = call.tensor("self")
    mask = convert(call.tensor("mask"), Type.boolean)
    return ops.select(mask, _as(call["value"], x.element_type), x).output(0)


@converter("aten.isnan")
def isnan(call: Call) -> Output:
    return ops.is_nan(call.tensor("self")).output(0)


@converter("aten.clone", "aten.alias", "aten.detach", "aten.contiguous", "aten.lift_fresh_copy", "aten.dropout",
           "aten.feature_dropout", "aten.alpha_dropout", "aten.lift_fresh", "aten.copy")
def identity(call: Call) -> Any:
    if call.op == "aten.copy":
        return convert(call.tensor("src"), call.tensor("self").element_type)
    v = call["self"] if "self" in call.args else call["input"]
    return v


@converter("aten._to_copy", "aten.to", "aten.type_as", "aten._to_dim_order_copy")
def to(call: Call) -> Any:
    x = call["self"]
    if call.op == "aten.type_as":
        return convert(x, call.tensor("other").element_type)
    et = call.out_type
    if et is None:
        if isinstance(call.args.get("other"), Output):
            et = call.args["other"].element_type
        else:
            et = call.dtype("dtype")
    if et is None:
        return x
    if not isinstance(x, Output):
        return const(x, et)
    return convert(x, et)


@converter("aten.trunc", "aten.fix")
def trunc(call: Call) -> Output:
    x = call.tensor("self")
    if not x.element_type.is_real:
        return x
    return ops.multiply(ops.sign(x), ops.floor(ops.absolute(x))).output(0)


@converter("aten.exp2")
def exp2(call: Call) -> Output:
    x = _float(call)
    return ops.power(const(2.0, x.element_type), x).output(0)


@converter("aten.prelu", "aten._prelu_kernel")
def prelu(call: Call) -> Output:
    x = call.tensor("self")
    w = convert(call.tensor("weight"), x.element_type)
    r = rank_of(x)
    wr = rank_of(w)
    if wr == 1 and r > 2 and w.partial_shape[0].is_static and w.partial_shape[0].get_length() > 1:
        w = ops.reshape(w, i64([-1] + [1] * (r - 2)), False).output(0)
    return ops.prelu(x, w).output(0)


@converter("aten.glu")
def glu(call: Call) -> Output:
    x = call.tensor("self")
    axis = call.int("dim", -1) % rank_of(x)
    parts = ops.split(x, const(axis, Type.i64), 2)
    return ops.multiply(parts.output(0), ops.sigmoid(parts.output(1))).output(0)


@converter("aten.log_sigmoid_forward", "aten.log_sigmoid")
def log_sigmoid(call: Call) -> Any:
    x = call.tensor("self")
    y = ops.negative(ops.softplus(ops.negative(x))).output(0)
    return y if call.op == "aten.log_sigmoid" else (y, None)


@converter("aten.native_dropout")
def native_dropout(call: Call) -> tuple[Output, None]:
    return call.tensor("input"), None


@converter("aten.logit")
def logit(call: Call) -> Output:
    x = _float(call)
    eps = call.args.get("eps")
    if eps is not None:
        x = ops.clamp(x, float(eps), 1.0 - float(eps)).output(0)
    return ops.log(ops.divide(x, ops.subtract(const(1.0, x.element_type), x))).output(0)
