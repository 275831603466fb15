"""Elementwise ops as table rows: binary arithmetic and comparisons, logical ops, unary math.

Each row is ``(IR type name, version, builder name, numpy function)``; the classes are made
from the rows, so adding an elementwise op is one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import PartialShape
from ember.graph.types import Type
from ember.ops._util import broadcast_shapes, numpy_broadcast

_BROADCAST = Attr("auto_broadcast", "str", "numpy", ("numpy", "none", "pdpd", "explicit"))


class BinaryElementwise(Node):
    """Two inputs of one element type, broadcast under ``auto_broadcast``."""

    num_inputs = (2, 2)
    attributes: tuple[Attr, ...] = (_BROADCAST,)
    fn: Callable[..., np.ndarray]
    returns_bool = False
    logical = False

    def infer(self) -> list[tuple[Type, PartialShape]]:
        a, b = self.input_type(0), self.input_type(1)
        if not a.compatible(b):
            raise self.fail(f"input element types differ: {a} and {b}")
        if self.logical and a is not Type.boolean and not a.is_dynamic:
            raise self.fail(f"inputs must be boolean, got {a}")
        mode = self.attrs["auto_broadcast"].lower()
        shape = broadcast_shapes(self.input_shape(0), self.input_shape(1), mode)
        et = Type.boolean if self.returns_bool else (a if not a.is_dynamic else b)
        return [(et, shape)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        # OpenVINO's builders and IR reader leave the pdpd axis at 0 unless one is given
        a, b = numpy_broadcast(inputs, self.attrs["auto_broadcast"], self.attrs.get("axis", 0))
        with np.errstate(all="ignore"):
            out = type(self).fn(self, a, b)
        et = Type.boolean if self.returns_bool else self.input_type(0)
        return [np.asarray(out).astype(et.dtype, copy=False)]


class UnaryElementwise(Node):
    """One input; the output has its type and shape."""

    num_inputs = (1, 1)
    fn: Callable[..., np.ndarray]
    float_only = False

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = self.input_type(0)
        if self.float_only and not (t.is_real or t.is_dynamic):
            raise self.fail(f"needs a floating-point input, got {t}")
        return [(t, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        with np.errstate(all="ignore"):
            out = type(self).fn(self, x)
        return [np.asarray(out).astype(x.dtype, copy=False)]


def _int_div(a: np.ndarray, b: np.ndarray, python: bool) -> np.ndarray:
    safe_b = np.where(b == 0, 1, b)
    if python:
        q = np.floor_divide(a, safe_b)
    else:  # C's truncating division, exact (a float quotient rounds above 2**53)
        q = np.floor_divide(a, safe_b)
        q = np.where((a % safe_b != 0) & ((a < 0) != (b < 0)), q + 1, q) if a.dtype.kind == "i" else q
    return np.where(b == 0, 0, q)


def _divide(self: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return _int_div(a, b, self.attrs["m_pythondiv"])
    return np.true_divide(a, b)


def _power(self: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        # Integer powers are computed in float and truncated, then wrap into the type like C;
        # a value no integer holds (0 ** -1 = inf) becomes the minimum, as x86 (and OpenVINO)
        # convert it, without numpy's undefined cast.
        with np.errstate(all="ignore"):
            f = np.trunc(np.power(a.astype(np.float64), b.astype(np.float64)))
        small = np.iinfo(np.int32 if a.dtype.itemsize <= 4 else np.int64)
        ok = np.isfinite(f) & (f >= small.min) & (f <= small.max)
        return np.where(ok, f, small.min).astype(small.dtype).astype(a.dtype)
    return np.power(a, b)


def _floor_mod(self: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return np.where(b == 0, 0, np.mod(a, np.where(b == 0, 1, b)))
    return a - np.floor(a / b) * b  # OpenVINO's formula: an infinite divisor gives NaN


def _mod(self: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return np.where(b == 0, 0, np.fmod(a, np.where(b == 0, 1, b)))
    return a - np.trunc(a / b) * b  # OpenVINO's formula: an infinite divisor gives NaN


_BINARY: list[tuple[str, str, str, Callable[..., Any], str]] = [
    # (IR type, version, builder, fn(self, a, b), result: "same" | "bool" | "logical")
    ("Add", "opset1", "add", lambda s, a, b: a + b, "same"),
    ("Subtract", "opset1", "subtract", lambda s, a, b: a - b, "same"),
    ("Multiply", "opset1", "multiply", lambda s, a, b: a * b, "same"),
    ("Divide", "opset1", "divide", _divide, "same"),
    ("Power", "opset1", "power", _power, "same"),
    # std::max / std::min as OpenVINO has them: NaN wins only as the first operand
    ("Maximum", "opset1", "maximum", lambda s, a, b: np.where(a < b, b, a), "same"),
    ("Minimum", "opset1", "minimum", lambda s, a, b: np.where(b < a, b, a), "same"),
    ("SquaredDifference", "opset1", "squared_difference", lambda s, a, b: (a - b) * (a - b), "same"),
    ("FloorMod", "opset1", "floor_mod", _floor_mod, "same"),
    ("Mod", "opset1", "mod", _mod, "same"),
    ("Equal", "opset1", "equal", lambda s, a, b: a == b, "bool"),
    ("NotEqual", "opset1", "not_equal", lambda s, a, b: a != b, "bool"),
    ("Greater", "opset1", "greater", lambda s, a, b: a > b, "bool"),
    ("GreaterEqual", "opset1", "greater_equal", lambda s, a, b: a >= b, "bool"),
    ("Less", "opset1", "less", lambda s, a, b: a < b, "bool"),
    ("LessEqual", "opset1", "less_equal", lambda s, a, b: a <= b, "bool"),
    ("LogicalAnd", "opset1", "logical_and", lambda s, a, b: np.logical_and(a, b), "logical"),
    ("LogicalOr", "opset1", "logical_or", lambda s, a, b: np.logical_or(a, b), "logical"),
    ("LogicalXor", "opset2", "logical_xor", lambda s, a, b: np.logical_xor(a, b), "logical"),
    ("BitwiseAnd", "opset13", "bitwise_and", lambda s, a, b: np.bitwise_and(a, b), "same"),
    ("BitwiseOr", "opset13", "bitwise_or", lambda s, a, b: np.bitwise_or(a, b), "same"),
    ("BitwiseXor", "opset13", "bitwise_xor", lambda s, a, b: np.bitwise_xor(a, b), "same"),
]


def _make_binary(type_name: str, version: str, bname: str, fn: Callable[..., Any], result: str) -> type:
    attrs: tuple[Attr, ...] = (_BROADCAST,)
    if type_name == "Divide":
        attrs = (_BROADCAST, Attr("m_pythondiv", "bool", True))
    cls = type(type_name, (BinaryElementwise,), {
        "type_name": type_name, "version": version, "fn": fn, "attributes": attrs,
        "returns_bool": result in ("bool", "logical"), "logical": result == "logical",
        "__doc__": f"OpenVINO {type_name} ({version}): elementwise, with broadcasting.",
    })
    register_op(cls)

    def build(left: Any, right: Any, auto_broadcast: str = "NUMPY", name: str | None = None) -> Node:
        return cls([left, right], {"auto_broadcast": auto_broadcast.lower()}, name)

    if bname is not None:
        build.__name__ = bname
        build.__doc__ = f"Build a {type_name} node."
        builder(build)
    return cls


for _row in _BINARY:
    globals()[_row[0]] = _make_binary(*_row)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x.astype(np.float64)), dtype=np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return np.where(x64 >= 0, 1.0 / (1.0 + np.exp(-np.abs(x64))), np.exp(-np.abs(x64)) / (1.0 + np.exp(-np.abs(x64))))


def _softplus(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return np.logaddexp(0.0, x64)


def _round(self: Node, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "iub":
        return x
    if self.attrs["mode"] == "half_to_even":
        return np.round(x)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


_UNARY: list[tuple[str, str, str, Callable[..., Any], bool]] = [
    # (IR type, version, builder, fn(self, x), float only)
    ("ReLU", "opset1", "relu", lambda s, x: np.maximum(x, np.zeros((), x.dtype)), False),
    ("Sigmoid", "opset1", "sigmoid", lambda s, x: _sigmoid(x), False),
    ("Tanh", "opset1", "tanh", lambda s, x: np.tanh(x), False),
    ("Exp", "opset1", "exp", lambda s, x: np.exp(x), False),
    ("Log", "opset1", "log", lambda s, x: np.log(x), False),
    ("Sqrt", "opset1", "sqrt", lambda s, x: np.sqrt(x), False),
    ("Abs", "opset1", "absolute", lambda s, x: np.abs(x), False),
    ("Negative", "opset1", "negative", lambda s, x: np.negative(x), False),
    ("Erf", "opset1", "erf", lambda s, x: _erf(x), False),
    ("Floor", "opset1", "floor", lambda s, x: np.floor(x) if x.dtype.kind == "f" else x, False),
    ("Ceiling", "opset1", "ceiling", lambda s, x: np.ceil(x) if x.dtype.kind == "f" else x, False),
    ("Sign", "opset1", "sign", lambda s, x: np.sign(x), False),
    ("Sin", "opset1", "sin", lambda s, x: np.sin(x), False),
    ("Cos", "opset1", "cos", lambda s, x: np.cos(x), False),
    ("Tan", "opset1", "tan", lambda s, x: np.tan(x), False),
    ("Asin", "opset1", "asin", lambda s, x: np.arcsin(x), False),
    ("Acos", "opset1", "acos", lambda s, x: np.arccos(x), False),
    ("Atan", "opset1", "atan", lambda s, x: np.arctan(x), False),
    ("Sinh", "opset1", "sinh", lambda s, x: np.sinh(x), False),
    ("Cosh", "opset1", "cosh", lambda s, x: np.cosh(x), False),
    ("Asinh", "opset4", "asinh", lambda s, x: np.arcsinh(x), False),
    ("Acosh", "opset4", "acosh", lambda s, x: np.arccosh(x), False),
    ("Atanh", "opset4", "atanh", lambda s, x: np.arctanh(x), False),
    ("SoftPlus", "opset4", "softplus", lambda s, x: _softplus(x), True),
    ("SoftSign", "opset9", "softsign", lambda s, x: x / (1 + np.abs(x)), True),
    ("HSwish", "opset4", "hswish", lambda s, x: x * np.clip(x + 3, 0, 6) / 6, True),
    ("HSigmoid", "opset5", "hsigmoid", lambda s, x: np.clip(x + 3, 0, 6) / 6, True),
    ("Mish", "opset4", "mish", lambda s, x: x * np.tanh(_softplus(x)), True),
    ("LogicalNot", "opset1", "logical_not", lambda s, x: np.logical_not(x), False),
    ("BitwiseNot", "opset13", "bitwise_not", lambda s, x: np.invert(x), False),
    ("IsNaN", "opset10", "is_nan", lambda s, x: np.isnan(x), True),
]


def _make_unary(type_name: str, version: str, bname: str | None, fn: Callable[..., Any], float_only: bool,
                attributes: tuple[Attr, ...] = ()) -> type:
    """An op class (and its builder ``bname``; None when the op has a hand-written builder)."""
    cls = type(type_name, (UnaryElementwise,), {
        "type_name": type_name, "version": version, "fn": fn, "float_only": float_only,
        "attributes": attributes, "__doc__": f"OpenVINO {type_name} ({version}): elementwise.",
    })
    register_op(cls)

    def build(node: Any, name: str | None = None, **attrs: Any) -> Node:
        return cls([node], attrs, name)

    if bname is not None:
        build.__name__ = bname
        build.__doc__ = f"Build a {type_name} node."
        builder(build)
    return cls


for _row in _UNARY:
    globals()[_row[0]] = _make_unary(*_row)

IsNaN.infer = lambda self: [(Type.boolean, self.input_shape(0))]  # type: ignore[name-defined]  # noqa: F821
IsNaN.evaluate = lambda self, i: [np.isnan(i[0])]  # type: ignore[name-defined]  # noqa: F821


class _FloatTest(Node):
    """A boolean test of each element of a floating-point tensor."""

    num_inputs = (1, 1)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = self.input_type(0)
        if not (t.is_real or t.is_dynamic):
            raise self.fail(f"needs a floating-point input, got {t}")
        return [(Type.boolean, self.input_shape(0))]


@register_op
class IsInf(_FloatTest):
    """IsInf-10: whether each element is +inf (``detect_positive``) or -inf (``detect_negative``)."""

    type_name = "IsInf"
    version = "opset10"
    attributes = (Attr("detect_negative", "bool", True), Attr("detect_positive", "bool", True))

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        pos, neg = bool(self.attrs["detect_positive"]), bool(self.attrs["detect_negative"])
        return [np.asarray(((x == np.inf) & pos) | ((x == -np.inf) & neg), dtype=np.bool_)]


@register_op
class IsFinite(_FloatTest):
    """IsFinite-10: whether each element is neither infinite nor NaN."""

    type_name = "IsFinite"
    version = "opset10"

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.isfinite(inputs[0])]


@builder
def is_inf(data: Any, attributes: dict | None = None, name: str | None = None) -> Node:
    """Build an IsInf (opset10) node; ``attributes`` may set ``detect_negative``/``detect_positive``."""
    return IsInf([data], dict(attributes or {}), name)


@builder
def is_finite(data: Any, name: str | None = None) -> Node:
    """Build an IsFinite (opset10) node."""
    return IsFinite([data], None, name)
Round = _make_unary("Round", "opset5", "round", _round, False, (Attr("mode", "str", "half_to_even"),))
Elu = _make_unary("Elu", "opset1", None, lambda s, x: np.where(x > 0, x, s.attrs["alpha"] * (np.exp(x) - 1)),
                  True, (Attr("alpha", "float"),))


def _clamp(self: Node, x: np.ndarray) -> np.ndarray:
    lo, hi = self.attrs["min"], self.attrs["max"]
    if x.dtype.kind in "iu":
        lo, hi = math.ceil(lo), math.floor(hi)
        info = np.iinfo(x.dtype)
        lo, hi = max(lo, info.min), min(hi, info.max)
    return np.clip(x, lo, hi)


Clamp = _make_unary("Clamp", "opset1", None, _clamp, False, (Attr("min", "float"), Attr("max", "float")))


def _gelu(self: Node, x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    if self.attrs.get("approximation_mode", "ERF").upper() == "TANH":
        return 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    return 0.5 * x64 * (1 + _erf(x64 / math.sqrt(2)))


Gelu2 = _make_unary("Gelu", "opset2", None, _gelu, True)
Gelu = _make_unary("Gelu", "opset7", None, _gelu, True, (Attr("approximation_mode", "str", "ERF"),))


@builder
def gelu(node: Any, approximation_mode: str = "erf", name: str | None = None) -> Node:
    """Build a Gelu (opset7) node; ``approximation_mode`` is ``"erf"`` or ``"tanh"``."""
    return Gelu([node], {"approximation_mode": approximation_mode.upper()}, name)


@builder
def clamp(data: Any, min_value: float, max_value: float, name: str | None = None) -> Node:
    return Clamp([data], {"min": min_value, "max": max_value}, name)


@builder
def elu(data: Any, alpha: float, name: str | None = None) -> Node:
    return Elu([data], {"alpha": alpha}, name)


@register_op
class Swish(Node):
    """x * sigmoid(beta * x); beta is an optional scalar input (default 1)."""

    type_name = "Swish"
    version = "opset4"
    num_inputs = (1, 2)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.input_type(0), self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        beta = inputs[1].astype(np.float64) if len(inputs) > 1 else 1.0
        with np.errstate(all="ignore"):
            out = x.astype(np.float64) * _sigmoid(beta * x.astype(np.float64))
        return [out.astype(x.dtype)]


@builder
def swish(data: Any, beta: Any = None, name: str | None = None) -> Node:
    return Swish([data] if beta is None else [data, beta], None, name)


@register_op
class PRelu(Node):
    """x if x >= 0 else slope * x; a 1-D slope of length C applies along axis 1."""

    type_name = "PRelu"
    num_inputs = (2, 2)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.input_type(0), self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, slope = inputs
        if slope.ndim == 1 and x.ndim >= 2 and slope.shape[0] == x.shape[1] and slope.shape[0] != x.shape[-1]:
            slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
        return [np.where(x < 0, x * slope, x).astype(x.dtype)]


@builder
def prelu(data: Any, slope: Any, name: str | None = None) -> Node:
    return PRelu([data, slope], None, name)


@register_op
class Selu(Node):
    """lambda * (x if x > 0 else alpha * (exp(x) - 1)); alpha and lambda are inputs."""

    type_name = "Selu"
    num_inputs = (3, 3)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.input_type(0), self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, alpha, lam = inputs
        with np.errstate(all="ignore"):
            out = lam * np.where(x > 0, x, alpha * (np.exp(x) - 1))
        return [out.astype(x.dtype)]


@builder
def selu(data: Any, alpha: Any, lambda_value: Any, name: str | None = None) -> Node:
    return Selu([data, alpha, lambda_value], None, name)


@register_op
class Select(Node):
    """cond ? then : else, with numpy (or pdpd / none) broadcasting of all three inputs."""

    type_name = "Select"
    num_inputs = (3, 3)
    attributes = (_BROADCAST,)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        if self.input_type(0) is not Type.boolean and not self.input_type(0).is_dynamic:
            raise self.fail(f"the condition must be boolean, got {self.input_type(0)}")
        a, b = self.input_type(1), self.input_type(2)
        if not a.compatible(b):
            raise self.fail(f"then/else element types differ: {a} and {b}")
        mode = self.attrs["auto_broadcast"].lower()
        if mode == "pdpd":
            shape = broadcast_shapes(self.input_shape(1), self.input_shape(2), mode)
        else:
            shape = broadcast_shapes(broadcast_shapes(self.input_shape(0), self.input_shape(1), mode),
                                     self.input_shape(2), mode)
        return [(a if not a.is_dynamic else b, shape)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        c, a, b = inputs
        if self.attrs["auto_broadcast"].lower() == "pdpd":  # else onto then, cond onto the result
            a, b = numpy_broadcast([a, b], "pdpd", 0)
            c = numpy_broadcast([a, c], "pdpd", 0)[1]
        return [np.where(c, a, b).astype(self.output(0).element_type.dtype)]


@builder
def select(cond: Any, then_node: Any, else_node: Any, auto_broadcast: str = "numpy",
           name: str | None = None) -> Node:
    return Select([cond, then_node, else_node], {"auto_broadcast": auto_broadcast.lower()}, name)


@register_op
class HardSigmoid(Node):
    """max(0, min(1, alpha * x + beta)); alpha and beta are scalar inputs."""

    type_name = "HardSigmoid"
    num_inputs = (3, 3)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        for i in (1, 2):
            s = self.input_shape(i)
            if s.is_static and int(np.prod(s.to_shape())) != 1:
                raise self.fail(f"input {i} must hold one value, got shape {s}")
        return [(self.input_type(0), self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, alpha, beta = inputs
        a, b = alpha.reshape(-1)[0], beta.reshape(-1)[0]
        return [np.clip(a * x + b, 0, 1).astype(x.dtype)]


@builder
def hard_sigmoid(data: Any, alpha: Any, beta: Any, name: str | None = None) -> Node:
    return HardSigmoid([data, alpha, beta], None, name)
