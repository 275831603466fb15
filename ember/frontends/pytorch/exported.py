"""The torch.export path: ``nn.Module`` -> ExportedProgram -> core ATen graph -> ember Model.

Steps, each a plain function: build example arguments and ``dynamic_shapes`` from
``example_input`` / ``input=``; export; decompose to the core ATen opset except the high-level
ops ember converts better whole (``KEPT_OPS``); check that every op has a converter (one error
listing all that do not); bind parameters, buffers and constants from the program's state as
constants; convert node by node.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember.errors import ConversionError, UnsupportedOpError
from ember.frontends.pytorch.context import Call, element_type
from ember.frontends.pytorch.registry import find_converter
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Output
from ember.graph.shape import Dimension, PartialShape

# High-level ops OpenVINO converts whole and ember has a better op (or fused kernel) for:
# they stay in the graph instead of being decomposed into core ATen.
KEPT_OPS = ("linear.default", "scaled_dot_product_attention.default", "layer_norm.default", "gelu.default",
            "silu.default", "hardswish.default", "hardsigmoid.default", "upsample_nearest2d.vec",
            "upsample_bilinear2d.vec", "upsample_nearest2d.default", "upsample_bilinear2d.default",
            "batch_norm.default", "matmul.default", "group_norm.default", "pixel_shuffle.default", "lstm.input",
            "gru.input")

# Python-level ops on sizes (SymInt arithmetic) that torch.export graphs contain.
_PY_OPS = {operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.floordiv: "floordiv",
           operator.truediv: "truediv", operator.mod: "mod", operator.neg: "neg", operator.pow: "pow",
           operator.getitem: "getitem", operator.eq: "eq", operator.ne: "ne", operator.lt: "lt", operator.le: "le",
           operator.gt: "gt", operator.ge: "ge"}


def export(model: torch.nn.Module, example_input: Any, specs: Sequence[Any]) -> torch.export.ExportedProgram:
    """torch.export of ``model`` on ``example_input`` with dynamic dims from the input specs."""
    args, kwargs = _example_args(example_input)
    # input= alone (no example): as OpenVINO, one example of zeros per forward() argument it shapes
    names = _forward_names(model, len(args) if args or kwargs else len(specs), kwargs)
    specs_by_name = _specs_by_name(specs, names)
    args, kwargs, dynamic = _dynamic_shapes(args, kwargs, names, specs_by_name)
    try:
        return torch.export.export(model.eval(), tuple(args), kwargs or None, dynamic_shapes=dynamic, strict=False)
    except Exception as e:  # noqa: BLE001 - torch raises many types; all mean "cannot export"
        raise ConversionError(f"ember: torch.export could not export the model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); script it with torch.jit.script "
                              "and convert the ScriptModule, or export it to ONNX") from e


def decompose(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Core ATen, keeping ``KEPT_OPS`` whole."""
    table = torch.export.default_decompositions()
    for name in KEPT_OPS:
        packet, overload = name.split(".")
        op = getattr(getattr(torch.ops.aten, packet, None), overload, None)
        if op is not None and op in table:
            del table[op]
    return ep.run_decompositions(table)


def convert_exported(ep: torch.export.ExportedProgram, specs: Sequence[Any] = ()) -> Model:
    """Convert an ExportedProgram (decomposed here) into an ember Model."""
    ep = decompose(ep)
    graph = ep.graph
    missing = _missing(graph)
    if missing:
        raise UnsupportedOpError(unsupported_message(missing))

    sig = ep.graph_signature
    kinds = {spec.arg.name: spec for spec in sig.input_specs if hasattr(spec.arg, "name")}
    user_names = [s.arg.name for s in sig.input_specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    specs_by_name = _specs_by_name(specs, user_names)
    env: dict[Any, Any] = {}
    params: list[Parameter] = []
    for node in graph.nodes:
        if node.op == "placeholder":
            spec = kinds.get(node.name)
            if spec is None or spec.kind == torch.export.graph_signature.InputKind.USER_INPUT:
                p = _parameter(node, ep, specs_by_name.get(node.name))
                if p is None:
                    env[node] = _python_value(node.meta.get("val"))
                    continue
                params.append(p)
                env[node] = p.output(0)
            else:
                env[node] = _state_constant(ep, spec)
        elif node.op == "call_function":
            env[node] = convert_node(node, env)
        elif node.op == "output":
            outs = node.args[0]
            user = [s for s in sig.output_specs
                    if s.kind == torch.export.graph_signature.OutputKind.USER_OUTPUT]
            results = []
            for spec, value in zip(sig.output_specs, outs):
                if spec not in user:
                    continue
                v = env.get(value) if isinstance(value, torch.fx.Node) else value
                if not isinstance(v, Output):
                    if isinstance(v, (int, float, bool)):
                        v = Constant(np.asarray(v)).output(0)
                    else:
                        raise ConversionError(f"ember: model output '{spec.arg.name}' is not a tensor")
                v.add_names({spec.arg.name})
                results.append(Result([v], None, f"{spec.arg.name}/sink_port_0"))
            return Model(results, params, "torch_model")
    raise ConversionError("ember: the exported graph has no output node")


def _missing(graph: torch.fx.Graph) -> dict[tuple[str, str], str]:
    missing: dict[tuple[str, str], str] = {}
    for node in graph.nodes:
        if node.op == "call_function":
            op, overload = op_name(node.target)
            if find_converter(op, overload) is None:
                missing.setdefault((op, overload), location(node))
        elif node.op in ("call_module", "call_method", "get_attr") and node.users:
            missing.setdefault((f"fx.{node.op}", str(node.target)), location(node))
    return missing


def missing_ops(ep: torch.export.ExportedProgram) -> list[tuple[str, str, str]]:
    """``(op, overload, first location)`` of every op of a decomposed program without a converter."""
    return [(op, ov, where) for (op, ov), where in sorted(_missing(ep.graph).items())]


def convert_node(node: torch.fx.Node, env: Mapping[Any, Any]) -> Any:
    op, overload = op_name(node.target)
    fn = find_converter(op, overload)
    assert fn is not None
    args = normalize_args(node, env)
    val = node.meta.get("val")
    vals = val if isinstance(val, (tuple, list)) else [val]
    out_types = [element_type(v.dtype) if isinstance(v, torch.Tensor) else None for v in vals]
    call = Call(op, overload, args, location(node), out_types, node.name)
    result = fn(call)
    if isinstance(result, Output) and isinstance(val, torch.Tensor):
        want = element_type(val.dtype)
        if result.element_type is not want:
            import ember.opset as ops

            result = ops.convert(result, want).output(0)
    return result


def op_name(target: Any) -> tuple[str, str]:
    """``("aten.add", "Tensor")`` for an OpOverload, ``("operator.mul", "")`` for a Python op."""
    if isinstance(target, torch._ops.OpOverload):
        name = target.name()  # "aten::add.Tensor"
        ns, _, rest = name.partition("::")
        packet, _, overload = rest.partition(".")
        return f"{ns}.{packet}", overload or "default"
    if target in _PY_OPS:
        return f"operator.{_PY_OPS[target]}", ""
    mod = getattr(target, "__module__", None) or "python"
    return f"{mod.split('.')[0].lstrip('_')}.{getattr(target, '__name__', str(target))}", ""


def normalize_args(node: torch.fx.Node, env: Mapping[Any, Any]) -> dict[str, Any]:
    """The node's arguments by schema name (defaults filled in), nodes replaced by their values."""

    def value(a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return env[a]
        if isinstance(a, (list, tuple)):
            return [value(x) for x in a]
        return a

    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        out: dict[str, Any] = {}
        for i, arg in enumerate(target._schema.arguments):
            if i < len(node.args) and not arg.kwarg_only:
                out[arg.name] = value(node.args[i])
            elif arg.name in node.kwargs:
                out[arg.name] = value(node.kwargs[arg.name])
            elif arg.has_default_value():
                out[arg.name] = arg.default_value
            else:
                out[arg.name] = None
        return out
    out = {"a": value(node.args[0]) if node.args else None}
    if len(node.args) > 1:
        out["b"] = value(node.args[1])
    return out


def location(node: torch.fx.Node) -> str:
    """``file:line`` of the user code that made ``node`` (the last frame of its stack trace)."""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', trace)
    torch_dir = str(Path(torch.__file__).parent)
    frames = [f for f in frames if not f[0].startswith(torch_dir)] or frames  # the model's code, not torch's
    if frames:
        f, line = frames[-1]
        return f"{f}:{line}"
    return f"node '{node.name}'"


def unsupported_message(missing: Mapping[tuple[str, str], str]) -> str:
    parts = [f"{op}.{ov}" + (f" (first at {where})" if where else "") if ov else f"{op} (first at {where})"
             for (op, ov), where in sorted(missing.items())]
    return (f"ember: the PyTorch model uses {len(parts)} unsupported op(s): " + "; ".join(parts) +
            ". ember.frontends.pytorch.supported_ops() lists what converts")


# -- inputs --------------------------------------------------------------------------------------
def _example_args(example_input: Any) -> tuple[list[Any], dict[str, Any]]:
    if example_input is None:
        return [], {}
    if isinstance(example_input, Mapping):
        return [], {k: _as_tensor(v) for k, v in example_input.items()}
    if isinstance(example_input, (list, tuple)):
        return [_as_tensor(v) for v in example_input], {}
    return [_as_tensor(example_input)], {}


def _as_tensor(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(v))
    if hasattr(v, "data") and type(v).__name__ == "Tensor" and not isinstance(v, torch.Tensor):
        return torch.from_numpy(np.asarray(v.data))  # an ember/OpenVINO Tensor
    return v


def _forward_names(model: torch.nn.Module, n_args: int, kwargs: Mapping[str, Any]) -> list[str]:
    import inspect

    try:
        params = [p.name for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = params[:n_args] + [f"input_{i}" for i in range(len(params), n_args)]
    return names + list(kwargs)


def _specs_by_name(specs: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    named = {s.name: s for s in specs if s.name is not None}
    unnamed = [s for s in specs if s.name is None]
    if named and unnamed:
        raise ConversionError("ember: input= mixes named and unnamed entries; name all or none")
    if len(unnamed) > len(names):
        raise ConversionError(f"ember: input= gives {len(unnamed)} shapes but the model has {len(names)} inputs")
    for name in named:
        if name not in names:
            raise ConversionError(f"ember: the model has no input named '{name}'; its inputs are: "
                                  f"{', '.join(names)}")
    named.update({n: s for n, s in zip(names, unnamed)})
    return named


def _dynamic_shapes(args: list[Any], kwargs: dict[str, Any], names: Sequence[str],
                    specs: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any], Any]:
    """torch.export's ``dynamic_shapes`` from dims -1 / ranges in ``input=`` (None when all static).

    A dynamic axis whose example size is 0 or 1 is widened to 2 in the example (torch
    specializes sizes 0 and 1), repeating the data along that axis.
    """
    values = list(args) + list(kwargs.values())
    if not values and specs:
        values = [_zeros_for(specs[n]) for n in names if n in specs]
        args = values
        names = [n for n in names if n in specs]
    dyn: list[Any] = []
    any_dynamic = False
    for i, (name, v) in enumerate(zip(names, values)):
        spec = specs.get(name)
        if spec is None or spec.shape is None or not isinstance(v, torch.Tensor) or not spec.shape.rank_is_static:
            dyn.append(None)
            continue
        if len(spec.shape) != v.dim():
            raise ConversionError(f"ember: input '{name}': input= gives rank {len(spec.shape)} but the example "
                                  f"has shape {list(v.shape)}")
        axes: dict[int, Any] = {}
        for axis, d in enumerate(spec.shape):
            if d.is_static:
                continue
            lo = d.get_min_length()
            hi = d.get_max_length()
            axes[axis] = torch.export.Dim.DYNAMIC(min=max(lo, 0), max=hi if hi >= 0 else None)
            if v.shape[axis] < 2 and (hi < 0 or hi >= 2):
                v = torch.cat([v] * 2, dim=axis) if v.shape[axis] == 1 else v.new_zeros(
                    *[2 if a == axis else s for a, s in enumerate(v.shape)])
        if axes:
            any_dynamic = True
        values[i] = v
        dyn.append(axes or None)
    n = len(args)
    args = values[:n]
    kwargs = dict(zip(list(kwargs), values[n:]))
    if not any_dynamic:
        return args, kwargs, None
    if kwargs:
        return args, kwargs, {name: d for name, d in zip(names, dyn)}
    return args, kwargs, tuple(dyn)


def _zeros_for(spec: Any) -> torch.Tensor:
    if spec.shape is None or not spec.shape.rank_is_static:
        raise ConversionError("ember: give example_input (or input= with shapes) to convert a PyTorch module")
    dims = [d.get_length() if d.is_static else max(d.get_min_length(), 2) for d in spec.shape]
    et = spec.element_type
    dtype = getattr(torch, {"f32": "float32", "i64": "int64", "i32": "int32", "boolean": "bool", "f16": "float16",
                            "u8": "uint8", "f64": "float64"}.get(et.name if et else "f32", "float32"))
    return torch.zeros(dims, dtype=dtype)


def _dimension(d: Any, ep_ranges: Mapping[Any, Any]) -> Dimension:
    if not isinstance(d, torch.SymInt):
        return Dimension(int(d))
    expr = d.node.expr
    if expr.is_number:
        return Dimension(int(expr))
    vr = ep_ranges.get(expr)
    if vr is None:
        return Dimension.dynamic()
    lo, hi = _finite(vr.lower, 0), _finite(vr.upper, -1)
    hi = -1 if hi >= (1 << 62) else hi
    lo = 1 if lo == 2 else lo  # torch's lower bound 2 is an artifact of its 0/1 specialization
    return Dimension(lo, hi) if hi >= 0 else (Dimension.dynamic() if lo <= 1 else Dimension(lo, -1))


def _finite(v: Any, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return default


def _parameter(node: torch.fx.Node, ep: Any, spec: Any) -> Parameter | None:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return None
    dims = [_dimension(d, ep.range_constraints) for d in val.shape]
    if spec is not None and spec.shape is not None and spec.shape.rank_is_static and len(spec.shape) == len(dims):
        dims = [s if s.is_dynamic and d.is_dynamic else d for s, d in zip(spec.shape, dims)]
    shape = PartialShape(dims)
    et = element_type(val.dtype)
    if spec is not None and spec.element_type is not None:
        et = spec.element_type
    p = Parameter(et, shape, node.name)
    p.output(0).set_names({node.name})
    return p


def _python_value(val: Any) -> Any:
    if isinstance(val, (int, float, bool)) or val is None:
        return val
    raise ConversionError(f"ember: a model input of type {type(val).__name__} is not supported")


def _state_constant(ep: Any, spec: Any) -> Any:
    target = spec.target
    t = ep.state_dict.get(target) if target in ep.state_dict else ep.constants.get(target)
    if t is None:
        raise ConversionError(f"ember: the exported program has no value for '{target}'")
    if not isinstance(t, torch.Tensor):
        raise ConversionError(f"ember: '{target}' is a {type(t).__name__}, not a tensor; custom objects "
                              "are not supported")
    return tensor_constant(t, target)


def tensor_constant(t: torch.Tensor, name: str | None = None) -> Output:
    """A torch tensor as an ember Constant (bf16 through f32, kept bf16)."""
    t = t.detach().cpu()
    et = element_type(t.dtype)
    arr = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
    c = Constant.from_array(np.array(arr, dtype=et.dtype, order="C"), et)
    if name:
        c.friendly_name = name
    return c.output(0)


__all__ = ["KEPT_OPS", "convert_exported", "decompose", "export", "missing_ops", "tensor_constant"]
