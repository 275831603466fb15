"""Elementwise TFLite ops, activations, casts and (de)quantization.

An elementwise op keeps the layout of its inputs: when a rank-4 input is already NCHW, the op
runs in NCHW (constants are transposed in numpy), so it adds no Transpose.
"""

from __future__ import annotations

import numpy as np

import ember.opset as ops
from ember.frontends.tflite.context import OpContext
from ember.frontends.tflite.registry import converter
from ember.frontends.tflite.schema import TENSOR_TYPES
from ember.graph.node import Output
from ember.graph.types import Type


def _in_nchw(ctx: OpContext, idx: list[int]) -> bool:
    """Whether to compute in NCHW: some input is NCHW already and the output has rank 4."""
    return any(ctx.is_nchw(i) for i in idx) and len(ctx.out_tensor(0).shape) == 4 and \
        all(ctx.rank(i) <= 4 for i in idx)


def _operands(ctx: OpContext, idx: list[int]) -> tuple[list[Output], bool]:
    if _in_nchw(ctx, idx):
        return [ctx.as4d_nchw(i) for i in idx], True
    return [ctx.plain(i) for i in idx], False


_BINARY = {
    "ADD": ops.add, "SUB": ops.subtract, "MUL": ops.multiply, "DIV": ops.divide, "MAXIMUM": ops.maximum,
    "MINIMUM": ops.minimum, "POW": ops.power, "SQUARED_DIFFERENCE": ops.squared_difference,
    "FLOOR_MOD": ops.floor_mod, "LESS": ops.less, "LESS_EQUAL": ops.less_equal, "GREATER": ops.greater,
    "GREATER_EQUAL": ops.greater_equal, "EQUAL": ops.equal, "NOT_EQUAL": ops.not_equal,
    "LOGICAL_AND": ops.logical_and, "LOGICAL_OR": ops.logical_or,
}


@converter(list(_BINARY))
def binary(ctx: OpContext) -> None:
    (a, b), nchw = _operands(ctx, [0, 1])
    y = _BINARY[ctx.op.op](a, b).output(0)
    ctx.out(ctx.activation(y), nchw=nchw)


@converter("FLOOR_DIV")
def floor_div(ctx: OpContext) -> None:
    (a, b), nchw = _operands(ctx, [0, 1])
    y = ops.divide(a, b).output(0)
    if a.element_type.is_real:
        y = ops.floor(y).output(0)
    else:  # integer division rounding toward -inf
        y = ops.subtract(y, ops.convert(ops.logical_and(
            ops.not_equal(ops.multiply(y, b), a),
            ops.less(ops.multiply(a, b), ops.constant(np.zeros((), a.element_type.dtype)))), a.element_type)).output(0)
    ctx.out(y, nchw=nchw)


@converter("ADD_N")
def add_n(ctx: OpContext) -> None:
    xs, nchw = _operands(ctx, list(range(ctx.num_inputs)))
    y = xs[0]
    for x in xs[1:]:
        y = ops.add(y, x).output(0)
    ctx.out(y, nchw=nchw)


def _unary(fn) -> object:  # noqa: ANN001
    def convert(ctx: OpContext) -> None:
        (x,), nchw = _operands(ctx, [0])
        ctx.out(fn(x), nchw=nchw)

    return convert


def _const_like(x: Output, v: float) -> Output:
    return ops.constant(np.array(v, x.element_type.dtype)).output(0)


_UNARY = {
    "RELU": lambda x: ops.relu(x).output(0),
    "RELU6": lambda x: ops.clamp(x, 0.0, 6.0).output(0),
    "RELU_N1_TO_1": lambda x: ops.clamp(x, -1.0, 1.0).output(0),
    "RELU_0_TO_1": lambda x: ops.clamp(x, 0.0, 1.0).output(0),
    "LOGISTIC": lambda x: ops.sigmoid(x).output(0),
    "TANH": lambda x: ops.tanh(x).output(0),
    "EXP": lambda x: ops.exp(x).output(0),
    "LOG": lambda x: ops.log(x).output(0),
    "SQRT": lambda x: ops.sqrt(x).output(0),
    "RSQRT": lambda x: ops.divide(_const_like(x, 1.0), ops.sqrt(x)).output(0),
    "ABS": lambda x: ops.absolute(x).output(0),
    "NEG": lambda x: ops.negative(x).output(0),
    "SIN": lambda x: ops.sin(x).output(0),
    "COS": lambda x: ops.cos(x).output(0),
    "FLOOR": lambda x: ops.floor(x).output(0),
    "CEIL": lambda x: ops.ceiling(x).output(0),
    "ROUND": lambda x: ops.round(x, "half_to_even").output(0),
    "SQUARE": lambda x: ops.multiply(x, x).output(0),
    "SIGN": lambda x: ops.sign(x).output(0),
    "HARD_SWISH": lambda x: ops.hswish(x).output(0),
    "ELU": lambda x: ops.elu(x, 1.0).output(0),
    "LOGICAL_NOT": lambda x: ops.logical_not(x).output(0),
}

for _name, _fn in _UNARY.items():
    converter(_name)(_unary(_fn))


@converter("GELU")
def gelu(ctx: OpContext) -> None:
    (x,), nchw = _operands(ctx, [0])
    ctx.out(ops.gelu(x, "tanh" if ctx.opt("approximate") else "erf").output(0), nchw=nchw)


@converter("LEAKY_RELU")
def leaky_relu(ctx: OpContext) -> None:
    (x,), nchw = _operands(ctx, [0])
    alpha = ops.constant(np.array([ctx.opt("alpha", 0.2)], np.float32))
    ctx.out(ops.prelu(x, alpha).output(0), nchw=nchw)


@converter("PRELU")
def prelu(ctx: OpContext) -> None:
    (x, alpha), nchw = _operands(ctx, [0, 1])
    xr, ar = ctx.rank(0), ctx.rank(1)
    if not nchw and ar < xr:  # numpy broadcasting, never OpenVINO's 1-D slope on axis 1
        alpha = ops.unsqueeze(alpha, ops.constant(np.arange(xr - ar, dtype=np.int64))).output(0)
    ctx.out(ops.prelu(x, alpha).output(0), nchw=nchw)


@converter("CAST")
def cast(ctx: OpContext) -> None:
    et = TENSOR_TYPES.get(ctx.out_tensor(0).type_code)
    if et is None:
        raise ctx.fail(f"cast to TFLite type {ctx.out_tensor(0).type_code} is not supported")
    (x,), nchw = _operands(ctx, [0])
    ctx.out(ops.convert(x, et).output(0), nchw=nchw)


@converter("DEQUANTIZE")
def dequantize(ctx: OpContext) -> None:
    """Values are held dequantized already: a constant stays lazy (its consumer decides the
    layout and keeps the stored precision), an activation passes through."""
    v = ctx.value(0)
    if v.is_const:
        ctx.graph.values[ctx.op.outputs[0]] = v
        return
    (x,), nchw = _operands(ctx, [0])
    if not x.element_type.is_real:  # an integer input with no scale
        x = ops.convert(x, Type.f32).output(0)
    ctx.out(x, nchw=nchw)


@converter("QUANTIZE")
def quantize(ctx: OpContext) -> None:
    (x,), nchw = _operands(ctx, [0])
    ctx.out(x, nchw=nchw)


@converter("DENSIFY")
def densify_op(ctx: OpContext) -> None:
    """The sparse constant was densified when it was read."""
    ctx.graph.values[ctx.op.outputs[0]] = ctx.value(0)


@converter(["SELECT", "SELECT_V2"])
def select(ctx: OpContext) -> None:
    (c, a, b), nchw = _operands(ctx, [0, 1, 2])
    ctx.out(ops.select(c, a, b).output(0), nchw=nchw)


@converter("ZEROS_LIKE")
def zeros_like(ctx: OpContext) -> None:
    (x,), nchw = _operands(ctx, [0])
    ctx.out(ops.multiply(x, _const_like(x, 0)).output(0), nchw=nchw)
