"""The TorchScript path: a ``ScriptModule`` (or a saved archive) -> frozen, inlined graph -> Model.

This is the path OpenVINO's PyTorch frontend takes by default, and the one for models that
``torch.export`` refuses (data-dependent control flow, scripted modules). The module is frozen
(attributes become constants, methods are inlined), then converted node by node: ``aten::``
nodes go through the same converters as the export path (arguments matched to the op's schema
by name); ``prim::`` nodes that only move Python values (lists, tuples, constants, casts of sizes)
are evaluated at conversion time; a ``prim::If`` whose condition is known at conversion time
(shape checks, ``len(state)``) is replaced by the branch it takes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ember.opset as ops
from ember.errors import ConversionError, UnsupportedOpError
from ember.frontends.pytorch.context import Call, const, convert, element_type, folded, i64, rank_of
from ember.frontends.pytorch.exported import tensor_constant, unsupported_message
from ember.frontends.pytorch.registry import find_converter
from ember.graph.core_ops import Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Output
from ember.graph.shape import PartialShape
from ember.graph.types import Type

# prim:: (and a few aten::) nodes handled here, on Python values or by small graph pieces.
_PRIM = ("prim::Constant", "prim::ListConstruct", "prim::ListUnpack", "prim::TupleConstruct", "prim::TupleUnpack",
         "prim::If", "prim::RaiseException", "prim::device", "prim::dtype", "prim::data", "prim::NumToTensor",
         "prim::unchecked_cast", "prim::Uninitialized", "prim::TupleIndex", "prim::min", "prim::max",
         "prim::GetAttr", "prim::layout", "prim::requires_grad", "prim::is_cuda", "prim::isinstance",
         "aten::__getitem__", "aten::len", "aten::__not__", "aten::__is__", "aten::__isnot__", "aten::__contains__",
         "aten::format", "aten::Int", "aten::Float", "aten::Bool", "aten::ScalarImplicit", "aten::IntImplicit",
         "aten::FloatImplicit", "aten::__and__", "aten::__or__", "aten::str", "aten::list", "aten::warn",
         "aten::__range_length", "aten::__derive_index", "prim::Print", "aten::append", "prim::Loop")
MAX_UNROLL = 4096


def load_script(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """A TorchScript archive, loaded on the CPU."""
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"ember: model file '{p}' does not exist")
    try:
        return torch.jit.load(str(p), map_location="cpu")
    except RuntimeError as e:
        raise ConversionError(f"ember: '{p}' is not a TorchScript archive ({str(e).splitlines()[0]}); a state "
                              "dict or pickled module needs its Python class: build the module and pass it "
                              "with example_input") from None


def freeze(module: Any) -> torch._C.Graph:
    """The module's forward graph with attributes folded in and every call inlined."""
    if isinstance(module, torch.jit.ScriptFunction):
        graph = module.graph.copy()
    else:
        module = module.eval()
        try:
            frozen = torch.jit.freeze(module)
        except (RuntimeError, AttributeError):
            frozen = module
        graph = frozen.graph.copy() if hasattr(frozen, "graph") else frozen.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    torch._C._jit_pass_remove_mutation(graph)  # in-place ops become functional where that is safe
    return graph


def convert_script(module: Any, example_input: Any, specs: Sequence[Any] = ()) -> Model:
    """Convert a ScriptModule / ScriptFunction; input shapes and types come from ``example_input``
    (and ``input=``)."""
    graph = freeze(module)
    stateful = sorted({n.s("name") for n in _all_nodes(graph.block()) if n.kind() == "prim::SetAttr"})
    if stateful:
        raise UnsupportedOpError(f"ember: the TorchScript module changes its own attributes in forward "
                                 f"({', '.join(stateful)}): a stateful module cannot be one OpenVINO model; "
                                 "convert the submodule that takes the state as an input and returns the new "
                                 "one (for Silero VAD: jit._model)")
    missing: dict[tuple[str, str], str] = {}
    _find_missing(graph.block(), missing)
    if missing:
        raise UnsupportedOpError(unsupported_message(missing))
    inputs = list(graph.inputs())
    if inputs and inputs[0].type().kind() == "ClassType":
        inputs = inputs[1:]
    from ember.frontends.pytorch.exported import _specs_by_name

    names = [_name(v) for v in inputs]
    if isinstance(example_input, dict):
        unknown = set(example_input) - set(names)
        if unknown:
            raise ConversionError(f"ember: example_input names {', '.join(sorted(unknown))}, but the TorchScript "
                                  f"model's inputs are: {', '.join(names)}")
        examples = [example_input.get(n) for n in names]
    else:
        examples = _examples(example_input, len(inputs))
    by_name = _specs_by_name(specs, names)
    env: dict[Any, Any] = {}
    params: list[Parameter] = []
    for v, name, ex in zip(inputs, names, examples + [None] * (len(inputs) - len(examples))):
        value = _input_value(v, name, ex, by_name.get(name))
        if isinstance(value, Parameter):
            params.append(value)
            value = value.output(0)
        env[v] = value
    conv = _Converter(env)
    conv.block(graph.block())
    outs = [conv.env[o] for o in graph.outputs()]
    flat: list[Any] = []

    def flatten(v: Any) -> None:
        if isinstance(v, (list, tuple)):
            for item in v:
                flatten(item)
        else:
            flat.append(v)

    flatten(outs)
    results = []
    for i, v in enumerate(flat):
        if not isinstance(v, Output):
            if isinstance(v, (int, float, bool)):
                v = const(v, Type.f32 if isinstance(v, float) else Type.boolean if isinstance(v, bool) else Type.i64)
            else:
                raise ConversionError(f"ember: output {i} of the TorchScript model is a {type(v).__name__}, "
                                      "not a tensor")
        name = f"output_{i}" if len(flat) > 1 else "output"
        v.add_names({name})
        results.append(Result([v], None, f"{name}/sink_port_0"))
    return Model(results, params, "torchscript_model")


def _name(v: Any) -> str:
    return v.debugName().split(".")[0]


def _examples(example_input: Any, n: int) -> list[Any]:
    if example_input is None:
        return []
    if isinstance(example_input, (list, tuple)):
        return list(example_input)
    return [example_input]


def _input_value(v: Any, name: str, example: Any, spec: Any) -> Any:
    kind = v.type().kind()
    if kind != "TensorType":
        if example is None:
            raise ConversionError(f"ember: TorchScript input '{name}' is a {v.type()}; give its value in "
                                  "example_input (it is fixed at conversion time)")
        return example.item() if isinstance(example, torch.Tensor) and example.numel() == 1 else example
    shape = PartialShape.dynamic()
    et: Type | None = None
    if example is not None:
        arr = example.detach().cpu() if isinstance(example, torch.Tensor) else torch.from_numpy(np.asarray(example))
        shape = PartialShape(list(arr.shape))
        et = element_type(arr.dtype)
    if spec is not None:
        if spec.shape is not None:
            shape = spec.shape
        if spec.element_type is not None:
            et = spec.element_type
    if et is None and spec is not None and spec.shape is not None:
        et = Type.f32  # a shape without a type: f32, as ovc assumes
    if et is None:
        raise ConversionError(f"ember: TorchScript input '{name}' needs an example (example_input) or a shape "
                              "and type (input=)")
    p = Parameter(et, shape, name)
    p.output(0).set_names({name})
    return p


def _op_of(node: Any) -> tuple[str, str]:
    kind = node.kind()
    ns, _, op = kind.partition("::")
    overload = ""
    try:
        overload = torch._C.parse_schema(node.schema()).overload_name if node.schema() != "(no schema)" else ""
    except RuntimeError:
        pass
    if op.endswith("_") and not op.endswith("__") and find_converter(f"{ns}.{op}", overload) is None:
        op = op[:-1]  # an in-place op left after remove_mutation: its functional twin
    return f"{ns}.{op}", overload or "default"


def _where(node: Any) -> str:
    rng = node.sourceRange() if hasattr(node, "sourceRange") else ""
    first = str(rng).splitlines()[0] if rng else ""
    return first.strip().lstrip("#").strip() or node.kind()


def _all_nodes(block: Any) -> list[Any]:
    out = []
    for node in block.nodes():
        out.append(node)
        for b in node.blocks():
            out.extend(_all_nodes(b))
    return out


def _find_missing(block: Any, missing: dict[tuple[str, str], str]) -> None:
    for node in block.nodes():
        kind = node.kind()
        for b in node.blocks():
            _find_missing(b, missing)
        if kind in _PRIM:
            continue
        op, overload = _op_of(node)
        if find_converter(op, overload) is None:
            missing.setdefault((op, overload), _where(node))


class _Converter:
    """Converts the nodes of a block; a branch body converted for an ``If`` has a ``parent`` and
    captures the parent's tensors it reads as body Parameters."""

    def __init__(self, env: dict[Any, Any], parent: _Converter | None = None) -> None:
        self.env = env
        self.parent = parent
        self.captured: list[tuple[Output, Parameter]] = []

    def block(self, block: Any) -> None:
        for node in block.nodes():
            self.node(node)

    def lookup(self, v: Any) -> Any:
        if v in self.env:
            return self.env[v]
        if self.parent is None:
            return None
        outer = self.parent.lookup(v)
        if isinstance(outer, Output):
            p = Parameter(outer.element_type, outer.partial_shape, f"{_name(v)}_in")
            self.captured.append((outer, p))
            self.env[v] = p.output(0)
            return self.env[v]
        return outer

    def node(self, node: Any) -> None:
        kind = node.kind()
        ins = [self.lookup(v) for v in node.inputs()]
        outs = list(node.outputs())
        handler = getattr(self, "prim_" + kind.replace("::", "_"), None)
        if handler is not None:
            result = handler(node, ins)
        else:
            op, overload = _op_of(node)
            fn = find_converter(op, overload)
            assert fn is not None
            schema = torch._C.parse_schema(node.schema())
            args = {a.name: ins[i] if i < len(ins) else None for i, a in enumerate(schema.arguments)}
            result = fn(Call(op, overload, args, _where(node), [], node.kind()))
        if len(outs) == 1:
            self.env[outs[0]] = result
        elif len(outs) > 1:
            if isinstance(result, Output):
                raise ConversionError(f"ember: {kind} at {_where(node)} gives one tensor for {len(outs)} outputs")
            for o, r in zip(outs, result):
                self.env[o] = r

    # -- prim ops on Python values -----------------------------------------------------------------
    def prim_prim_Constant(self, node: Any, ins: list[Any]) -> Any:
        out = node.output()
        if out.type().kind() == "NoneType" or not node.hasAttributes():
            return None
        value = out.toIValue()
        return self._ivalue(value)

    def _ivalue(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return tensor_constant(value)
        if isinstance(value, (list, tuple)):
            return type(value)(self._ivalue(v) for v in value)
        if isinstance(value, torch.device):
            return str(value)
        return value

    def prim_prim_ListConstruct(self, node: Any, ins: list[Any]) -> Any:
        return list(ins)

    def prim_prim_TupleConstruct(self, node: Any, ins: list[Any]) -> Any:
        return tuple(ins)

    def prim_prim_ListUnpack(self, node: Any, ins: list[Any]) -> Any:
        seq = ins[0]
        n = len(list(node.outputs()))
        if isinstance(seq, Output):
            return [ops.gather(seq, i64(i), i64(0)).output(0) for i in range(n)]
        return list(seq)

    prim_prim_TupleUnpack = prim_prim_ListUnpack

    def prim_prim_If(self, node: Any, ins: list[Any]) -> Any:
        cond = folded(ins[0])
        if isinstance(cond, list) and len(cond) == 1:
            cond = cond[0]
        blocks = list(node.blocks())
        raises = [any(n.kind() == "prim::RaiseException" for n in b.nodes()) for b in blocks]
        if isinstance(cond, Output) and any(raises) and not all(raises):
            cond = not raises[0]  # a run-time check that raises: the model is converted for valid inputs
        if isinstance(cond, Output):
            return self._runtime_if(node, cond, blocks)
        chosen = blocks[0] if bool(cond) else blocks[1]
        self.block(chosen)
        outs = [self.lookup(v) for v in chosen.outputs()]
        return outs[0] if len(outs) == 1 else outs

    def _runtime_if(self, node: Any, cond: Output, blocks: list[Any]) -> Any:
        """An OpenVINO ``If`` with both branches converted as bodies."""
        bodies = []
        for block in blocks:
            sub = _Converter({}, self)
            sub.block(block)
            results = []
            for v in block.outputs():
                out = sub.lookup(v)
                if not isinstance(out, Output):
                    if isinstance(out, (int, float, bool)):
                        out = _port(out)
                    else:
                        raise UnsupportedOpError(f"ember: a run-time branch (prim::If at {_where(node)}) gives a "
                                                 f"{type(out).__name__}; only tensor results are supported")
                results.append(Result([out], None))
            bodies.append((sub, results))
        c = convert(cond, Type.boolean)
        if rank_of(c):
            c = ops.reshape(c, i64([]), False).output(0)
        if_node = ops.if_op(c)
        (then, then_results), (other, else_results) = bodies
        if_node.set_then_body(Model(then_results, [p for _, p in then.captured], "then_body"))
        if_node.set_else_body(Model(else_results, [p for _, p in other.captured], "else_body"))
        for outer, p in then.captured:
            if_node.set_input(outer, p, None)
        for outer, p in other.captured:
            if_node.set_input(outer, None, p)
        outs = [if_node.set_output(t, e) for t, e in zip(then_results, else_results)]
        return outs[0] if len(outs) == 1 else outs

    def prim_prim_Loop(self, node: Any, ins: list[Any]) -> Any:
        """A loop whose trip count and condition are known at conversion time, unrolled."""
        trips, cond = folded(ins[0]), folded(ins[1])
        carried = list(ins[2:])
        if isinstance(trips, Output) or isinstance(cond, Output):
            return self._runtime_loop(node, ins)
        body = list(node.blocks())[0]
        params = list(body.inputs())
        i = 0
        while cond and i < int(trips):
            if i >= MAX_UNROLL:
                raise UnsupportedOpError(f"ember: a TorchScript loop runs more than {MAX_UNROLL} times "
                                         f"(prim::Loop at {_where(node)}); it is not unrolled")
            self.env[params[0]] = i
            for p, v in zip(params[1:], carried):
                self.env[p] = v
            self.block(body)
            outs = [self.lookup(v) for v in body.outputs()]
            cond = folded(outs[0])
            if isinstance(cond, list) and len(cond) == 1:
                cond = cond[0]
            if isinstance(cond, Output):  # the loop stops on a run-time value: convert it as a Loop
                for p in params:
                    self.env.pop(p, None)
                return self._runtime_loop(node, [int(trips) - i - 1, cond] + outs[1:], offset=i + 1)
            carried = outs[1:]
            i += 1
        return carried[0] if len(carried) == 1 else carried

    def _runtime_loop(self, node: Any, ins: list[Any], offset: int = 0) -> Any:
        """An OpenVINO ``Loop``: the body converted once, carried values merged, outer tensors invariant
        (``offset``: iterations already unrolled before the condition became a run-time value)."""
        body = list(node.blocks())[0]
        params = list(body.inputs())
        carried = [_port(folded(v)) if not isinstance(v, Output) else v for v in ins[2:]]
        if any(isinstance(v, (list, tuple)) for v in ins[2:]):
            raise UnsupportedOpError(f"ember: a run-time TorchScript loop carries a list (prim::Loop at "
                                     f"{_where(node)}); only tensors and numbers are supported")
        sub = _Converter({}, self)
        iteration = Parameter(Type.i64, PartialShape([]), "iteration")
        sub.env[params[0]] = ops.add(iteration, i64(offset)).output(0) if offset else iteration.output(0)
        body_params = []
        for p, v in zip(params[1:], carried):
            shape = PartialShape.dynamic(len(v.partial_shape)) if v.partial_shape.rank_is_static else v.partial_shape
            bp = Parameter(v.element_type, shape, f"{_name(p)}_carried")
            sub.env[p] = bp.output(0)
            body_params.append(bp)
        sub.block(body)
        outs = [sub.lookup(v) for v in body.outputs()]
        cond_out = convert(_port(folded(outs[0])) if not isinstance(outs[0], Output) else outs[0], Type.boolean)
        if rank_of(cond_out):
            cond_out = ops.reshape(cond_out, i64([]), False).output(0)
        results = [Result([cond_out], None)]
        for v, init in zip(outs[1:], carried):
            v = v if isinstance(v, Output) else _port(folded(v))
            results.append(Result([convert(v, init.element_type)], None))
        trips, cond = folded(ins[0]), folded(ins[1])
        trip = convert(trips, Type.i64) if isinstance(trips, Output) else const(min(int(trips), 2 ** 62), Type.i64)
        if rank_of(trip):
            trip = ops.reshape(trip, i64([]), False).output(0)
        start = convert(cond, Type.boolean) if isinstance(cond, Output) else const(bool(cond), Type.boolean)
        if rank_of(start):
            start = ops.reshape(start, i64([]), False).output(0)
        loop = ops.loop(trip, start)
        loop.set_function(Model(results, [iteration, *body_params, *(p for _, p in sub.captured)], "loop_body"))
        loop.set_special_body_ports([0, 0])
        for bp, init, r in zip(body_params, carried, results[1:]):
            loop.set_merged_input(bp, init, r.output(0))
        for outer, p in sub.captured:
            loop.set_invariant_input(p, outer)
        finals = [loop.get_iter_value(r.output(0), -1) for r in results[1:]]
        return finals[0] if len(finals) == 1 else finals

    def prim_prim_RaiseException(self, node: Any, ins: list[Any]) -> None:
        raise ConversionError(f"ember: the TorchScript model raises for these inputs ({ins[0]!s}) at "
                              f"{_where(node)}")

    def prim_prim_Uninitialized(self, node: Any, ins: list[Any]) -> None:
        return None

    def prim_prim_device(self, node: Any, ins: list[Any]) -> str:
        return "cpu"

    def prim_prim_dtype(self, node: Any, ins: list[Any]) -> Any:
        inv = {Type.f32: 6, Type.f64: 7, Type.f16: 5, Type.i64: 4, Type.i32: 3, Type.boolean: 11, Type.u8: 0,
               Type.i8: 1, Type.bf16: 15, Type.i16: 2}
        return inv[ins[0].element_type]

    def prim_prim_data(self, node: Any, ins: list[Any]) -> Any:
        return ins[0]

    prim_prim_unchecked_cast = prim_prim_data
    prim_aten_list = prim_prim_data

    def prim_prim_NumToTensor(self, node: Any, ins: list[Any]) -> Any:
        v = folded(ins[0])
        if isinstance(v, Output):
            return v
        return const(v, Type.f32 if isinstance(v, float) else Type.boolean if isinstance(v, bool) else Type.i64)

    def _scalar(self, node: Any, ins: list[Any], py: Any, et: Type) -> Any:
        v = folded(ins[0])
        if isinstance(v, list) and len(v) == 1:
            v = v[0]
        if isinstance(v, Output):
            v = ops.reshape(v, i64([]), False).output(0) if rank_of(v) else v
            return convert(v, et)
        return py(v)

    def prim_aten_Int(self, node: Any, ins: list[Any]) -> Any:
        return self._scalar(node, ins, int, Type.i64)

    prim_aten_IntImplicit = prim_aten_Int

    def prim_aten_Float(self, node: Any, ins: list[Any]) -> Any:
        return self._scalar(node, ins, float, Type.f32)

    prim_aten_FloatImplicit = prim_aten_Float

    def prim_aten_Bool(self, node: Any, ins: list[Any]) -> Any:
        return self._scalar(node, ins, bool, Type.boolean)

    def prim_aten_ScalarImplicit(self, node: Any, ins: list[Any]) -> Any:
        v = folded(ins[0])
        if isinstance(v, list) and len(v) == 1:
            return v[0]
        return self._scalar(node, ins, lambda x: x, ins[0].element_type) if isinstance(v, Output) else v

    def prim_aten___getitem__(self, node: Any, ins: list[Any]) -> Any:
        seq, idx = ins
        idx = folded(idx)
        if isinstance(seq, Output):
            return ops.gather(seq, convert(idx, Type.i64) if isinstance(idx, Output) else i64(int(idx)),
                              i64(0)).output(0)
        if isinstance(idx, Output):
            raise ConversionError(f"ember: a list index known only at run time at {_where(node)}")
        return seq[idx]

    prim_prim_TupleIndex = prim_aten___getitem__

    def prim_aten_len(self, node: Any, ins: list[Any]) -> Any:
        v = ins[0]
        if isinstance(v, Output):
            d = v.partial_shape[0] if rank_of(v) else None
            if d is not None and d.is_static:
                return d.get_length()
            return ops.gather(ops.shape_of(v, "i64"), i64(0), i64(0)).output(0)
        return len(v)

    def prim_aten___not__(self, node: Any, ins: list[Any]) -> Any:
        v = folded(ins[0])
        return (not v) if not isinstance(v, Output) else ops.logical_not(convert(v, Type.boolean)).output(0)

    def prim_aten___is__(self, node: Any, ins: list[Any]) -> bool:
        return ins[0] is ins[1] or (ins[0] is None and ins[1] is None)

    def prim_aten___isnot__(self, node: Any, ins: list[Any]) -> bool:
        return not self.prim_aten___is__(node, ins)

    def prim_aten___contains__(self, node: Any, ins: list[Any]) -> Any:
        seq, v = ins[0], folded(ins[1])
        if isinstance(v, Output) or isinstance(seq, Output):
            raise ConversionError(f"ember: 'in' on values known only at run time at {_where(node)}")
        return v in seq

    def prim_aten___and__(self, node: Any, ins: list[Any]) -> Any:
        a, b = folded(ins[0]), folded(ins[1])
        if isinstance(a, Output) or isinstance(b, Output):
            return ops.logical_and(convert(_port(a), Type.boolean), convert(_port(b), Type.boolean)).output(0)
        return a and b

    def prim_aten___or__(self, node: Any, ins: list[Any]) -> Any:
        a, b = folded(ins[0]), folded(ins[1])
        if isinstance(a, Output) or isinstance(b, Output):
            return ops.logical_or(convert(_port(a), Type.boolean), convert(_port(b), Type.boolean)).output(0)
        return a or b

    def prim_prim_min(self, node: Any, ins: list[Any]) -> Any:
        return self._minmax(ins, min, ops.minimum)

    def prim_prim_max(self, node: Any, ins: list[Any]) -> Any:
        return self._minmax(ins, max, ops.maximum)

    def _minmax(self, ins: list[Any], py: Any, build: Any) -> Any:
        vals = [folded(v) for v in (ins if len(ins) > 1 else ins[0])]
        if all(not isinstance(v, Output) for v in vals):
            return py(vals)
        out = _port(vals[0])
        for v in vals[1:]:
            out = build(out, _port(v)).output(0)
        return out

    def prim_aten_format(self, node: Any, ins: list[Any]) -> str:
        return str(ins[0])

    prim_aten_str = prim_aten_format

    def prim_aten_warn(self, node: Any, ins: list[Any]) -> None:
        return None

    prim_prim_Print = prim_aten_warn

    def prim_prim_GetAttr(self, node: Any, ins: list[Any]) -> Any:
        raise ConversionError(f"ember: attribute '{node.s('name')}' is still read at run time after freezing "
                              f"({_where(node)})")

    def prim_prim_layout(self, node: Any, ins: list[Any]) -> int:
        return 0

    def prim_prim_requires_grad(self, node: Any, ins: list[Any]) -> bool:
        return False

    def prim_prim_is_cuda(self, node: Any, ins: list[Any]) -> bool:
        return False

    def prim_prim_isinstance(self, node: Any, ins: list[Any]) -> bool:
        raise ConversionError(f"ember: isinstance checks are not supported ({_where(node)})")

    def prim_aten___range_length(self, node: Any, ins: list[Any]) -> int:
        lo, hi, step = (int(folded(v)) for v in ins)
        return max(0, -(-(hi - lo) // step)) if step > 0 else max(0, -(-(lo - hi) // -step))

    def prim_aten___derive_index(self, node: Any, ins: list[Any]) -> int:
        index, start, step = (int(folded(v)) for v in ins)
        return start + index * step

    def prim_aten_append(self, node: Any, ins: list[Any]) -> Any:
        ins[0].append(ins[1])
        return ins[0]


def _port(v: Any) -> Output:
    if isinstance(v, Output):
        return v
    return const(v, Type.f32 if isinstance(v, float) else Type.boolean if isinstance(v, bool) else Type.i64)
