"""What a TFLite converter sees: its operator, its inputs in either layout, constants, outputs.

A TFLite tensor is held as a ``Value``. Activations of rank 4 are NHWC in TFLite; a converter
of a layout-aware op (convolution, pooling, elementwise, pad, concat, ...) asks for
``ctx.nchw(i)`` and declares an NCHW result, so chains of such ops never transpose: a Transpose
appears only where an op needs TFLite's own layout (``ctx.plain(i)``: reshape, fully connected,
softmax on the last axis, model outputs), once per tensor.

Quantized tensors (int8/uint8/int16 with a scale) are held in floating point: a constant as the
weight-decompression pattern ``Convert -> Subtract(zero point) -> Multiply(scale)`` (or f16 +
``Convert`` for FLOAT16 weights), an activation as the output of a ``FakeQuantize`` onto its
grid, as OpenVINO's TFLite frontend does; the CPU device's low-precision pass runs those as
int8 kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import ember.opset as ops
from ember.errors import ConversionError
from ember.frontends.tflite.schema import Operator, Quantization, Tensor
from ember.graph.core_ops import Constant
from ember.graph.node import Output, constant_value
from ember.graph.types import Type

if TYPE_CHECKING:
    from ember.frontends.tflite.convert import SubgraphConverter

TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)
_QUANTIZED = (Type.i8, Type.u8, Type.i16, Type.i32)


@dataclass
class Value:
    """One TFLite tensor during conversion.

    ``plain``/``nchw``: the tensor as a port in TFLite's layout / transposed to NCHW (either may
    be missing until asked for). ``data``: the stored array of a constant (after DENSIFY),
    ``quant`` its dequantization (None: use ``data`` as it is). ``fq``: the ``(scale, zero
    point)`` a quantized activation was last fake-quantized with.
    """

    plain: Output | None = None
    nchw: Output | None = None
    data: np.ndarray | None = None
    quant: Quantization | None = None
    fq: tuple | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    def rank(self) -> int | None:
        """The tensor's rank, or None when it is dynamic."""
        if self.data is not None:
            return self.data.ndim
        port = self.plain if self.plain is not None else self.nchw
        ps = port.partial_shape  # type: ignore[union-attr]
        return len(ps) if ps.rank_is_static else None

    def float_value(self) -> np.ndarray:
        """The constant's real value (dequantized, as float32 when it was quantized or f16)."""
        assert self.data is not None
        if self.quant is None:
            return self.data.astype(np.float32) if self.data.dtype == np.float16 else self.data
        return _dequantize(self.data, self.quant)


def _contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` in C order, keeping its rank (``np.ascontiguousarray`` makes 0-d arrays 1-d)."""
    return np.asarray(a, order="C")


def _expand(q: Quantization, ndim: int, values: np.ndarray) -> np.ndarray:
    if not q.per_axis or ndim == 0:
        return values.reshape(()) if values.size == 1 else values
    shape = [1] * ndim
    shape[q.axis] = values.size
    return values.reshape(shape)


def _dequantize(data: np.ndarray, q: Quantization) -> np.ndarray:
    s = _expand(q, data.ndim, q.scale.astype(np.float64))
    z = _expand(q, data.ndim, q.zero_point.astype(np.float64))
    return ((data.astype(np.float64) - z) * s).astype(np.float32)


def _squeeze_constant_axes(a: np.ndarray) -> np.ndarray:
    """``a`` reduced to size 1 along every axis it does not vary on (kept broadcastable)."""
    for ax in range(a.ndim):
        if a.shape[ax] > 1:
            first = np.take(a, [0], axis=ax)
            if np.array_equal(np.broadcast_to(first, a.shape), a):
                a = first
    return _contiguous(a)


# Constants up to this many values that are not weights of a convolution or matrix product
# (biases, PReLU slopes, elementwise operands) are stored dequantized in f32: they are small, and
# as plain constants the CPU device fuses them into the producing kernel's epilogue.
SMALL_CONSTANT = 4096


def decompression(data: np.ndarray, quant: Quantization | None, transform: Callable[[np.ndarray], np.ndarray],
                  name: str, weight: bool = True) -> Output:
    """A constant ``transform(data)`` as a port in f32: stored in its own type followed by
    OpenVINO's decompression pattern when it is f16 or quantized (a small non-``weight``
    constant is dequantized at conversion instead)."""
    if not weight and data.size <= SMALL_CONSTANT and (quant is not None or data.dtype == np.float16):
        real = _contiguous(transform(_dequantize(data, quant) if quant is not None else data.astype(np.float32)))
        return Constant.from_array(real, Type.f32, name=name).output(0)
    stored = _contiguous(transform(data))
    if quant is None and data.dtype != np.float16:
        return Constant.from_array(stored, Type.from_dtype(stored.dtype), name=name).output(0)
    c = Constant.from_array(stored, Type.from_dtype(stored.dtype), name=name)
    y = ops.convert(c, Type.f32, name=name + "/convert").output(0)
    y.node.rt_info["decompression"] = {"version": "0"}
    if quant is None:
        return y
    full = np.broadcast_to
    zp = _squeeze_constant_axes(transform(_contiguous(full(_expand(quant, data.ndim, quant.zero_point),
                                                                    data.shape))).astype(np.float32))
    if np.any(zp):
        y = ops.subtract(y, Constant.from_array(zp, Type.f32, name=name + "/zero_point")).output(0)
    scale = _squeeze_constant_axes(transform(_contiguous(full(_expand(quant, data.ndim, quant.scale),
                                                                       data.shape))).astype(np.float32))
    return ops.multiply(y, Constant.from_array(scale, Type.f32, name=name + "/scale")).output(0)


class OpContext:
    """One TFLite operator being converted: ``ctx.plain(i)``/``ctx.nchw(i)`` read inputs,
    ``ctx.const(i)`` a constant input's value, ``ctx.opt("stride_w")`` an option,
    ``ctx.out(port, nchw=...)`` defines an output."""

    def __init__(self, op: Operator, graph: SubgraphConverter) -> None:
        self.op = op
        self.graph = graph

    # -- identity ------------------------------------------------------------------
    @property
    def name(self) -> str:
        outs = [self.graph.tensors[t].name for t in self.op.outputs if t >= 0]
        return outs[0] if outs else f"{self.op.op}_{self.op.index}"

    def fail(self, reason: str) -> ConversionError:
        return ConversionError(f"ember: TFLite {self.op.op} operator {self.op.index} ('{self.name}'): {reason}")

    def opt(self, key: str, default: Any = None) -> Any:
        return self.op.options.get(key, default)

    # -- inputs ---------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.op.inputs)

    def has_input(self, i: int) -> bool:
        return i < len(self.op.inputs) and self.op.inputs[i] >= 0

    def tensor(self, i: int) -> Tensor:
        return self.graph.tensors[self.op.inputs[i]]

    def out_tensor(self, j: int = 0) -> Tensor:
        return self.graph.tensors[self.op.outputs[j]]

    def value(self, i: int) -> Value:
        if not self.has_input(i):
            raise self.fail(f"input {i} is missing")
        return self.graph.value(self.op.inputs[i])

    def rank(self, i: int) -> int:
        rank = self.value(i).rank()
        if rank is None:
            raise self.fail(f"input {i} has a dynamic rank")
        return rank

    def is_nchw(self, i: int) -> bool:
        """Whether input ``i`` is already available in NCHW (reading it so costs nothing)."""
        return self.has_input(i) and self.value(i).nchw is not None

    def const(self, i: int) -> np.ndarray | None:
        """The value of input ``i`` when it is a constant (dequantized), else None."""
        if not self.has_input(i):
            return None
        v = self.value(i)
        if v.is_const:
            return v.float_value()
        port = v.plain if v.plain is not None else None
        return None if port is None else constant_value(port)

    def req_const(self, i: int, what: str) -> np.ndarray:
        c = self.const(i)
        if c is None:
            raise self.fail(f"{what} (input {i}) must be a constant")
        return c

    def weight(self, i: int, transform: Callable[[np.ndarray], np.ndarray] = lambda a: a,
               weight: bool = True) -> Output:
        """Constant input ``i`` (a weight) transformed in numpy, kept in its stored precision
        (f16 or quantized) behind a decompression pattern; a non-constant input is transformed
        by a graph op only when ``transform`` is the identity."""
        v = self.value(i)
        if not v.is_const:
            raise self.fail(f"input {i} ('{self.tensor(i).name}') must be a constant")
        return decompression(v.data, v.quant, transform, self.tensor(i).name, weight)  # type: ignore[arg-type]

    def plain(self, i: int) -> Output:
        """Input ``i`` in TFLite's layout."""
        v = self.value(i)
        if v.plain is None:
            if v.is_const:
                v.plain = decompression(v.data, v.quant, lambda a: a, self.tensor(i).name,  # type: ignore[arg-type]
                                        weight=False)
            else:
                assert v.nchw is not None
                v.plain = ops.transpose(v.nchw, ops.constant(np.array(TO_NHWC, np.int64))).output(0)
        return v.plain

    def nchw(self, i: int) -> Output:
        """Rank-4 input ``i`` transposed to NCHW (a constant is transposed in numpy)."""
        v = self.value(i)
        if v.nchw is None:
            if v.is_const:
                v.nchw = decompression(v.data, v.quant, lambda a: a.transpose(TO_NCHW),  # type: ignore[arg-type]
                                       self.tensor(i).name + "/nchw", weight=False)
            else:
                v.nchw = ops.transpose(self.plain(i), ops.constant(np.array(TO_NCHW, np.int64))).output(0)
        return v.nchw

    def folded_pad(self, i: int) -> tuple[OpContext, list[int], list[int]] | None:
        """When input ``i`` is made by a PAD of zeros on H and W only (an explicit pad before a
        VALID convolution), ``(the PAD's context, pads begin, pads end)`` so that the
        convolution pads by itself and the Pad (a separate pass over memory) is not needed."""
        prod = self.graph.producers.get(self.op.inputs[i])
        if prod is None or prod.op not in ("PAD", "PADV2"):
            return None
        pad = OpContext(prod, self.graph)
        pads = pad.const(1)
        if pads is None or pads.shape != (4, 2) or np.any(pads[[0, 3]]) or np.any(pads < 0):
            return None
        if prod.op == "PADV2" and pad.has_input(2):
            value = pad.const(2)
            if value is None or np.any(value):
                return None
        if pad.value(0).is_const or pad.rank(0) != 4:
            return None
        return pad, [int(pads[1, 0]), int(pads[2, 0])], [int(pads[1, 1]), int(pads[2, 1])]

    def as4d_nchw(self, i: int) -> Output:
        """Input ``i`` of rank <= 4 broadcast-aligned to rank 4 and put in NCHW, for an
        elementwise op whose other operand is NCHW."""
        r = self.rank(i)
        if r == 4:
            return self.nchw(i)
        v = self.value(i)
        lift = lambda a: a.reshape((1,) * (4 - a.ndim) + a.shape).transpose(TO_NCHW)
        if v.is_const:
            return decompression(v.data, v.quant, lift, self.tensor(i).name + "/nchw",  # type: ignore[arg-type]
                                 weight=False)
        x = self.plain(i)
        if r < 4:
            x = ops.unsqueeze(x, ops.constant(np.arange(4 - r, dtype=np.int64))).output(0)
        return ops.transpose(x, ops.constant(np.array(TO_NCHW, np.int64))).output(0)

    # -- outputs --------------------------------------------------------------------
    def out(self, port: Output, j: int = 0, nchw: bool = False, passthrough: int | None = None) -> None:
        """Define output ``j``. ``nchw``: ``port`` holds the NCHW transpose of the tensor.
        ``passthrough``: the op only moves the values of that input (no fake-quantization is
        needed when the output's quantization equals the input's)."""
        self.graph.define_output(self, j, port, nchw, passthrough)

    def activation(self, y: Output, key: str = "activation") -> Output:
        """The op's fused activation applied to ``y``."""
        act = self.opt(key, 0)
        if act == 0:
            return y
        if act == 1:
            return ops.relu(y).output(0)
        if act == 2:
            return ops.clamp(y, -1.0, 1.0).output(0)
        if act == 3:
            return ops.clamp(y, 0.0, 6.0).output(0)
        if act == 4:
            return ops.tanh(y).output(0)
        raise self.fail(f"fused activation {act} (SIGN_BIT) is not supported")
