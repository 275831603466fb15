"""``convert``: a ``.tflite`` file (or its bytes) to an ember ``Model``, without TensorFlow.

The steps, each a plain function: read the flatbuffer (``schema.read_model``), check that every
operator of the main subgraph has a converter (one error lists every unsupported builtin and
custom op), make the inputs, convert operator by operator (``ember.frontends.tflite.ops``),
make the outputs. Inputs and outputs keep TFLite's names, layouts (NHWC) and element types.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

import ember.opset as ops
from ember.errors import ConversionError, UnsupportedOpError
from ember.frontends.tflite.context import OpContext, Value, decompression
from ember.frontends.tflite.densify import densify
from ember.frontends.tflite.registry import find_converter, supported_ops
from ember.frontends.tflite.schema import Subgraph, Tensor, TFLiteModel, read_model
from ember.graph.core_ops import Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Output
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type, integer_range

_QUANT_TYPES = (Type.i8, Type.u8, Type.i16)
_TO_NHWC = np.array((0, 2, 3, 1), np.int64)
_TO_NCHW = (0, 3, 1, 2)


def load(model: Any) -> TFLiteModel:
    """Parse ``model`` (a path or the bytes of a ``.tflite`` file)."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return read_model(model)
    path = Path(os.fspath(model))
    if not path.is_file():
        raise ConversionError(f"ember: TFLite model '{path}' does not exist")
    return read_model(path.read_bytes())


def convert(model: Any, input: Any = None, output: Any = None, example_input: Any = None) -> Model:
    """Convert a TFLite model (a ``.tflite`` path or its bytes) into an ember ``Model``.

    ``input`` overrides input shapes/types as for ONNX (``[1, 224, 224, 3]``, ``{"name": shape}``,
    ``[("name", shape, type)]``); ``output`` names the tensors the model returns (default: the
    subgraph's outputs). ``example_input`` arrays give input shapes. Raises
    ``UnsupportedOpError`` listing every unsupported builtin and custom op before building.
    """
    tfl = load(model)
    sg = tfl.subgraphs[0]
    missing = unsupported(sg)
    if missing:
        raise UnsupportedOpError(_unsupported_message(missing))
    specs = _input_specs(sg, input, example_input)
    conv = SubgraphConverter(tfl, sg)
    params = [conv.add_input(t, specs.get(t)) for t in sg.inputs]
    for op in sg.operators:
        ctx = OpContext(op, conv)
        fn = find_converter(op.op, op.custom)
        assert fn is not None
        fn(ctx)
    out_tensors = sg.outputs if output is None else _output_tensors(sg, output)
    results = [conv.result(t) for t in out_tensors]
    return Model(results, params, sg.name or "tflite_model")


def unsupported(sg: Subgraph) -> dict[tuple[str, bool], list[Any]]:
    """``{(op, custom): [count, first output tensor name]}`` of the operators without a converter."""
    missing: dict[tuple[str, bool], list[Any]] = {}
    for op in sg.operators:
        if find_converter(op.op, op.custom) is None:
            entry = missing.setdefault((op.op, op.custom), [0, ""])
            if not entry[0]:
                outs = [sg.tensors[t].name for t in op.outputs if t >= 0]
                entry[1] = outs[0] if outs else f"operator {op.index}"
            entry[0] += 1
    return missing


def _unsupported_message(missing: dict[tuple[str, bool], list[Any]]) -> str:
    parts = []
    for kind in (False, True):
        items = [f"{op} ({n} operator{'s' if n > 1 else ''}, first '{first}')"
                 for (op, custom), (n, first) in sorted(missing.items()) if custom == kind]
        if items:
            parts.append(("custom ops: " if kind else "builtin ops: ") + ", ".join(items))
    return (f"ember: the TFLite model uses {len(missing)} unsupported op type(s): " + "; ".join(parts) +
            ". ember.frontends.tflite.supported_ops() lists what converts")


def _input_specs(sg: Subgraph, input: Any, example_input: Any) -> dict[int, Any]:
    from ember.frontends.onnx.convert import InputSpec, parse_input

    out: dict[int, Any] = {}
    names = {sg.tensors[t].name: t for t in sg.inputs}
    specs = parse_input(input) if input is not None else []
    for k, s in enumerate(specs):
        if s.name is None:
            if k >= len(sg.inputs):
                raise ConversionError(f"ember: input= gives {len(specs)} entries but the model has "
                                      f"{len(sg.inputs)} inputs")
            out[sg.inputs[k]] = s
        elif s.name in names:
            out[names[s.name]] = s
        else:
            raise ConversionError(f"ember: the TFLite model has no input named '{s.name}'; its inputs are: "
                                  f"{', '.join(names)}")
    if example_input is not None:
        items = example_input.items() if isinstance(example_input, dict) else \
            zip([sg.tensors[t].name for t in sg.inputs], example_input)
        for name, arr in items:
            t = names.get(name)
            if t is None:
                raise ConversionError(f"ember: example_input names '{name}', which is not a model input")
            if t not in out:
                a = np.asarray(arr)
                out[t] = InputSpec(name, PartialShape(list(a.shape)), Type.from_dtype(a.dtype))
    return out


def _output_tensors(sg: Subgraph, output: Any) -> list[int]:
    names = [output] if isinstance(output, str) else list(output)
    by_name = {t.name: t.index for t in sg.tensors}
    out = []
    for n in names:
        if n not in by_name:
            raise ConversionError(f"ember: the TFLite model has no tensor named '{n}'")
        out.append(by_name[n])
    return out


def quantized(t: Tensor) -> bool:
    """Whether ``t`` is an integer tensor that stands for real values (``scale * (q - zp)``)."""
    return t.quant is not None and t.type_code in (3, 7, 9)


def _fq_key(t: Tensor) -> tuple:
    assert t.quant is not None
    return tuple(t.quant.scale.tolist()), tuple(t.quant.zero_point.tolist()), t.quant.axis


class SubgraphConverter:
    """The values of one subgraph's tensors while its operators are converted."""

    def __init__(self, model: TFLiteModel, sg: Subgraph) -> None:
        self.model = model
        self.sg = sg
        self.tensors = sg.tensors
        self.values: dict[int, Value] = {}
        self._named: set[int] = set()
        self.producers = {t: op for op in sg.operators for t in op.outputs}

    def value(self, t: int) -> Value:
        v = self.values.get(t)
        if v is not None:
            return v
        tensor = self.tensors[t]
        buf = self.model.buffers[tensor.buffer] if 0 < tensor.buffer < len(self.model.buffers) else None
        if buf is None or buf.size == 0:
            raise ConversionError(f"ember: TFLite tensor '{tensor.name}' is read before any operator computes it")
        v = Value(data=_constant_data(tensor, buf),
                  quant=tensor.quant if tensor.quant is not None and tensor.type_code in (2, 3, 7, 9) else None)
        self.values[t] = v
        return v

    def add_input(self, t: int, spec: Any) -> Parameter:
        tensor = self.tensors[t]
        et = tensor.element_type
        dims = tensor.shape_signature if tensor.shape_signature is not None else tensor.shape
        shape = PartialShape([Dimension() if d < 0 else Dimension(d) for d in dims])
        if spec is not None:
            if spec.shape is not None:
                shape = spec.shape
            if spec.element_type is not None:
                et = spec.element_type
        p = Parameter(et, shape, tensor.name)
        p.output(0).set_names({tensor.name})
        x: Output = p.output(0)
        fq = None
        if quantized(tensor) and et.is_integral_number:
            q = tensor.quant
            assert q is not None
            x = ops.convert(x, Type.f32).output(0)
            zp = q.zero_point.astype(np.float32)
            if np.any(zp):
                x = ops.subtract(x, ops.constant(_per_axis(zp, q.axis, len(tensor.shape)))).output(0)
            x = ops.multiply(x, ops.constant(_per_axis(q.scale, q.axis, len(tensor.shape)))).output(0)
            fq = _fq_key(tensor)
        self.values[t] = Value(plain=x, fq=fq)
        return p

    def define_output(self, ctx: OpContext, j: int, port: Output, nchw: bool, passthrough: int | None) -> None:
        if j >= len(ctx.op.outputs) or ctx.op.outputs[j] < 0:
            return
        t = ctx.op.outputs[j]
        tensor = self.tensors[t]
        fq = None
        if quantized(tensor) and port.element_type.is_real:
            fq = _fq_key(tensor)
            src = ctx.value(passthrough) if passthrough is not None and ctx.has_input(passthrough) else None
            if src is None or src.fq != fq:
                port = _fake_quantize(port, tensor, nchw)
        if port.node._id not in self._named and not isinstance(port.node, Parameter):
            port.node.friendly_name = tensor.name
            self._named.add(port.node._id)
        self.values[t] = Value(nchw=port, fq=fq) if nchw else Value(plain=port, fq=fq)

    def result(self, t: int) -> Result:
        tensor = self.tensors[t]
        v = self.value(t)
        if v.plain is None:
            if v.is_const:
                v.plain = decompression(v.data, v.quant, lambda a: a, tensor.name)  # type: ignore[arg-type]
            else:
                v.plain = ops.transpose(v.nchw, ops.constant(_TO_NHWC)).output(0)
        y = v.plain
        if quantized(tensor) and y.element_type.is_real:
            et = tensor.element_type
            q = tensor.quant
            assert q is not None
            lo, hi = integer_range(et)
            r = len(tensor.shape)
            y = ops.divide(y, ops.constant(_per_axis(q.scale, q.axis, r))).output(0)
            y = ops.add(ops.round(y, "half_to_even"),
                        ops.constant(_per_axis(q.zero_point.astype(np.float32), q.axis, r))).output(0)
            y = ops.convert(ops.clamp(y, float(lo), float(hi)), et).output(0)
        y.add_names({tensor.name})
        return Result([y], None, f"{tensor.name}/sink_port_0")


def _per_axis(values: np.ndarray, axis: int, rank: int) -> np.ndarray:
    v = np.asarray(values, np.float32)
    if v.size == 1 or rank == 0:
        return v.reshape(())
    shape = [1] * rank
    shape[axis] = v.size
    return v.reshape(shape)


def _fake_quantize(x: Output, tensor: Tensor, nchw: bool) -> Output:
    q = tensor.quant
    assert q is not None
    lo, hi = integer_range(tensor.element_type)
    zp = q.zero_point.astype(np.float64)
    low = ((lo - zp) * q.scale).astype(np.float32)
    high = ((hi - zp) * q.scale).astype(np.float32)
    rank = len(tensor.shape)
    axis = _TO_NCHW.index(q.axis) if nchw and q.per_axis else q.axis
    low, high = _per_axis(low, axis, rank), _per_axis(high, axis, rank)
    lc, hc = ops.constant(low), ops.constant(high)
    return ops.fake_quantize(x, lc, hc, lc, hc, hi - lo + 1).output(0)


_NUMPY = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
          9: np.int8, 10: np.float64, 12: np.uint64, 15: np.uint32, 16: np.uint16}


def _constant_data(tensor: Tensor, buf: np.ndarray) -> np.ndarray:
    dt = _NUMPY.get(tensor.type_code)
    if dt is None:
        raise ConversionError(f"ember: TFLite constant '{tensor.name}' has a type ember cannot read "
                              f"({tensor.element_type})")
    if buf.size % np.dtype(dt).itemsize:
        raise ConversionError(f"ember: TFLite constant '{tensor.name}': buffer size {buf.size} is not a "
                              f"multiple of its element size")
    flat = np.frombuffer(buf, np.dtype(dt).newbyteorder("<"))
    if tensor.sparsity is not None:
        return densify(flat, tensor.shape, tensor.sparsity)
    if flat.size != int(np.prod(tensor.shape, dtype=np.int64)):
        raise ConversionError(f"ember: TFLite constant '{tensor.name}' holds {flat.size} values for shape "
                              f"{tensor.shape}")
    return flat.reshape(tensor.shape)


__all__ = ["convert", "load", "supported_ops", "unsupported"]
