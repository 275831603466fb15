"""``convert``: an ONNX model (file or proto) to an ember ``Model``.

The steps, each a plain function: load the proto, read the ``input=`` / ``output=`` /
``example_input=`` requests, pick the nodes the requested outputs need, check that every one
of them is supported (one error listing all that are not), then convert node by node.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ember.errors import ConversionError, UnsupportedOpError
from ember.frontends.onnx import loader
from ember.frontends.onnx.graph import (
    GraphConverter,
    _graphs_of,
    boundary_input,
    boundary_output,
    mark_boundary,
    node_reads,
    value_kind,
)
from ember.frontends.onnx.registry import (
    find_converter,
    function_version,
    is_supported,
    normalize_domain,
    schema,
)
from ember.graph.core_ops import Parameter, Result
from ember.graph.model import Model
from ember.graph.shape import Dimension, PartialShape, as_partial_shape
from ember.graph.types import Type, as_type
from ember.ops.sequence import SEQUENCE_SHAPE


@dataclass(frozen=True)
class InputSpec:
    """One entry of ``input=``: a tensor name (or position), a shape and an element type."""

    name: str | None = None
    shape: PartialShape | None = None
    element_type: Type | None = None


def convert(model: str | os.PathLike | onnx.ModelProto, input: Any = None, output: Any = None,
            example_input: Any = None) -> Model:
    """Convert an ONNX model into an ember ``Model``.

    ``model``: a path to an ``.onnx`` file (external data files are read from its folder and may
    not point outside it) or an ``onnx.ModelProto`` (its external data must already be loaded).

    ``input``: overrides of the model inputs, as ``ovc``/``convert_model`` accept them: a name,
    a shape (``[1, 3, -1, Dimension(16, 64)]``, ``"1,3,?,16..64"``), a ``(name, shape)`` or
    ``(name, shape, type)`` tuple, a list of these, or a ``{name: shape | type | (shape, type)}``
    dict. A name of an internal tensor makes it a new input and drops what computes it.

    ``output``: a tensor name or a list of names; the model computes only these.

    ``example_input``: arrays (a list in input order, or a dict by name) whose shapes and
    dtypes become the input shapes and types where ``input`` does not set them.

    Raises ``UnsupportedOpError`` (listing every unsupported op) before building anything,
    ``ConversionError`` for malformed models.
    """
    proto, base_dir = loader.load_model(model)
    if not proto.graph.output:
        where = f"'{model}'" if isinstance(model, (str, os.PathLike)) else "the model given"
        raise ConversionError(f"ember: {where} is not an ONNX model: it has no graph outputs "
                              f"({'an empty file' if not proto.ByteSize() else 'nothing to compute'})")
    specs = parse_input(input)
    specs = _merge_examples(specs, example_input, proto.graph)
    outputs = _parse_output(output)
    return _convert_proto(proto, base_dir, specs, outputs)


def _convert_proto(proto: onnx.ModelProto, base_dir: Path | None, specs: list[InputSpec],
                   outputs: list[str] | None) -> Model:
    graph = proto.graph
    opsets = _opsets(proto)
    functions = {(normalize_domain(f.domain), f.name): f for f in proto.functions}
    init_names = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    graph_inputs = [vi for vi in graph.input if vi.name not in init_names]

    named = [s for s in specs if s.name is not None]
    unnamed = [s for s in specs if s.name is None]
    if unnamed and named:
        raise ConversionError("ember: input= mixes named and unnamed entries; name all or none")
    if unnamed:
        if len(unnamed) > len(graph_inputs):
            raise ConversionError(f"ember: input= gives {len(unnamed)} shapes but the model has "
                                  f"{len(graph_inputs)} inputs")
        named = [InputSpec(vi.name, s.shape, s.element_type) for vi, s in zip(graph_inputs, unnamed)]
    by_name = {s.name: s for s in named}

    producers: dict[str, onnx.NodeProto] = {}
    for n in graph.node:
        for o in n.output:
            if o:
                producers[o] = n
    known = init_names | {vi.name for vi in graph.input} | set(producers)
    for name in list(by_name):
        if name not in known:
            raise ConversionError(f"ember: input=: the model has no tensor named '{name}'; its inputs are: "
                                  f"{', '.join(vi.name for vi in graph_inputs)}")
    for name in outputs or []:
        if name not in known:
            raise ConversionError(f"ember: output=: the model has no tensor named '{name}'; its outputs are: "
                                  f"{', '.join(o.name for o in graph.output)}")
    out_names = outputs if outputs is not None else [o.name for o in graph.output]
    cut = {n for n in by_name if n in producers}
    nodes = _needed_nodes(graph, out_names, cut, producers)

    missing = unsupported_nodes(nodes, opsets, functions)
    if missing:
        raise UnsupportedOpError(_unsupported_message(missing))

    conv = GraphConverter(base_dir, functions)
    conv.add_initializers(graph)
    reads = {r for n in nodes for r in node_reads(n)} | set(out_names)
    params: list[Parameter] = []
    value_infos = {vi.name: vi for vi in graph.input}
    for vi in graph.value_info:
        value_infos.setdefault(vi.name, vi)
    for vi in graph.output:
        value_infos.setdefault(vi.name, vi)
    if any(name not in value_infos for name in cut):
        value_infos.update(_inferred_value_infos(proto, set(cut) - set(value_infos)))
    for vi in graph_inputs:
        if (outputs is not None or cut) and vi.name not in reads:
            continue
        params.append(_parameter(vi.name, value_infos.get(vi.name), by_name.get(vi.name)))
    for name in sorted(cut, key=lambda x: list(by_name).index(x)):
        params.append(_parameter(name, value_infos.get(name), by_name[name]))
    for p in params:
        conv.define(p.friendly_name, boundary_input(p))
    from ember import progress

    conv.convert_nodes(progress.bar(nodes, len(nodes), "converting"), opsets)

    results = []
    for name in out_names:
        v, kind, item = boundary_output(conv.lookup(name))
        if kind == "sequence" and v.rt_info.get("sequence_of_maps"):
            kind = "sequence.map"  # ZipMap's list of {label: probability} dicts
        v.add_names({name})
        r = Result([v], None, f"{name}/sink_port_0")
        mark_boundary(r, kind, item)
        results.append(r)
    m = Model(results, params, graph.name or "onnx_model")
    return m


def _inferred_value_infos(proto: onnx.ModelProto, names: set[str]) -> dict[str, onnx.ValueInfoProto]:
    """Types of internal tensors the model does not annotate, from onnx's shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is a best effort; the caller reports what is missing
        return {}
    return {vi.name: vi for vi in inferred.graph.value_info if vi.name in names}


def _opsets(proto: onnx.ModelProto) -> dict[str, int]:
    opsets: dict[str, int] = {}
    for o in proto.opset_import:
        opsets[normalize_domain(o.domain)] = int(o.version)
    if "" not in opsets and proto.ir_version < 3:
        opsets[""] = 1
    return opsets


def _parameter(name: str, vi: onnx.ValueInfoProto | None, spec: InputSpec | None) -> Parameter:
    et: Type | None = None
    shape = PartialShape.dynamic()
    if vi is not None:
        kind, et, shape = loader.value_info_type(vi)
        if kind != "tensor":
            p = Parameter(Type.sequence, SEQUENCE_SHAPE, name)
            p.output(0).set_names({name})
            mark_boundary(p, value_kind(vi.type), et)
            return p
    if spec is not None:
        if spec.shape is not None:
            if shape.rank_is_static and spec.shape.rank_is_static and len(shape) != len(spec.shape) and \
                    vi is not None:
                raise ConversionError(f"ember: input '{name}': shape {spec.shape} has rank {len(spec.shape)} "
                                      f"but the model declares {shape}")
            shape = spec.shape
        if spec.element_type is not None:
            et = spec.element_type
    if et is None:
        raise ConversionError(f"ember: input '{name}' has no element type in the model; give one with "
                              f"input=[('{name}', shape, type)]")
    p = Parameter(et, shape, name)
    p.output(0).set_names({name})
    return p


def _needed_nodes(graph: onnx.GraphProto, outputs: Sequence[str], stop: set[str],
                  producers: dict[str, onnx.NodeProto]) -> list[onnx.NodeProto]:
    """The nodes the outputs depend on (not crossing ``stop`` tensors), in topological order."""
    needed: dict[int, onnx.NodeProto] = {}
    stack = list(outputs)
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or name in stop:
            continue
        seen.add(name)
        n = producers.get(name)
        if n is None or id(n) in needed:
            continue
        needed[id(n)] = n
        stack.extend(node_reads(n))
    order = [n for n in graph.node if id(n) in needed]
    return _toposort(order, producers, stop)


def _toposort(nodes: list[onnx.NodeProto], producers: dict[str, onnx.NodeProto],
              stop: set[str]) -> list[onnx.NodeProto]:
    ids = {id(n) for n in nodes}
    done: set[int] = set()
    out: list[onnx.NodeProto] = []
    pending = list(nodes)
    while pending:
        progress = []
        rest = []
        for n in pending:
            deps = [producers.get(r) for r in node_reads(n) if r not in stop]
            if all(d is None or id(d) not in ids or id(d) in done or d is n for d in deps):
                progress.append(n)
                done.add(id(n))
            else:
                rest.append(n)
        if not progress:
            names = ", ".join(n.name or n.op_type for n in rest[:5])
            raise ConversionError(f"ember: the ONNX graph has a cycle through nodes {names}")
        out.extend(progress)
        pending = rest
    return out


# -- the support check ------------------------------------------------------------------
def unsupported_nodes(nodes: Sequence[onnx.NodeProto], opsets: dict[str, int],
                      functions: dict[tuple[str, str], onnx.FunctionProto]) -> dict[tuple[str, str, int], str]:
    """``{(domain, op type, opset): first node name}`` for every op nothing can convert."""
    missing: dict[tuple[str, str, int], str] = {}
    _check(nodes, opsets, functions, missing, set())
    return missing


def _check(nodes: Sequence[onnx.NodeProto], opsets: dict[str, int],
           functions: dict[tuple[str, str], onnx.FunctionProto], missing: dict[tuple[str, str, int], str],
           visiting: set[tuple[str, str]]) -> None:
    for n in nodes:
        dom = normalize_domain(n.domain)
        opset = opsets.get(dom, -1)
        key = (dom, n.op_type, opset)
        if opset < 0:
            missing.setdefault(key, n.name or n.op_type)
        elif find_converter(dom, n.op_type, opset) is None:
            local = functions.get((dom, n.op_type))
            if local is not None and (dom, n.op_type) not in visiting:
                inner = dict(opsets)
                inner.update({normalize_domain(o.domain): o.version for o in local.opset_import})
                _check(local.node, inner, functions, missing, visiting | {(dom, n.op_type)})
            elif local is None and not is_supported(dom, n.op_type, opset):
                missing.setdefault(key, n.name or n.op_type)
            elif local is None:
                sch = schema(dom, n.op_type, opset)
                version, dependent = function_version(sch, opset)  # type: ignore[misc]
                if not dependent:
                    fp = onnx.FunctionProto()
                    fp.ParseFromString(sch.get_function_with_opset_version(version))
                    inner = dict(opsets)
                    inner.update({normalize_domain(o.domain): o.version for o in fp.opset_import})
                    _check(fp.node, inner, functions, missing, visiting)
        for a in n.attribute:
            for g in _graphs_of(a):
                _check(g.node, opsets, functions, missing, visiting)


def _unsupported_message(missing: dict[tuple[str, str, int], str]) -> str:
    parts = []
    for (dom, op, opset), first in sorted(missing.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        where = f"opset {opset}" if opset >= 0 else "domain not imported by the model"
        parts.append(f"{op} (domain '{dom or 'ai.onnx'}', {where}, first node '{first}')")
    return (f"ember: the ONNX model uses {len(parts)} unsupported op type(s): " + "; ".join(parts) +
            ". ember.frontends.onnx.supported_ops() lists what converts (plus any op ONNX defines by a "
            "function body)")


def unsupported_ops(model: str | os.PathLike | onnx.ModelProto) -> list[tuple[str, str, int, str]]:
    """Every ``(domain, op type, opset, first node name)`` of ``model`` ember cannot convert."""
    proto, _ = loader.load_model(model)
    opsets = _opsets(proto)
    functions = {(normalize_domain(f.domain), f.name): f for f in proto.functions}
    missing = unsupported_nodes(list(proto.graph.node), opsets, functions)
    return [(d, op, v, first) for (d, op, v), first in sorted(missing.items())]


# -- input= / output= / example_input= ------------------------------------------------------
_SPEC_RE = re.compile(r"^\s*([^\[\]{}]*?)\s*(\{([^}]*)\})?\s*(\[([^\]]*)\])?\s*$")


def parse_input(value: Any) -> list[InputSpec]:
    """Read ``input=`` in any of the forms ``convert_model`` accepts into InputSpecs."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [_spec_from(name, v) for name, v in value.items()]
    if isinstance(value, (str, InputSpec, PartialShape, Type)):
        return [_one_spec(value)]
    if isinstance(value, (list, tuple)):
        if _is_shape(value):
            return [InputSpec(None, _shape(value), None)]
        if isinstance(value, tuple) and _is_single_entry(value):
            return [_one_spec(value)]  # ("x", [1, 3, 48, 192]) or ("x", shape, type): one input, as OpenVINO
        return [_one_spec(v) for v in value]
    raise ConversionError(f"ember: cannot read input={value!r}")


def _is_single_entry(v: tuple) -> bool:
    """A tuple that describes one input (a name followed by a shape and/or a type, or a shape with a
    type) rather than a sequence of inputs."""
    def is_type(x: Any) -> bool:
        return isinstance(x, (Type, np.dtype)) or (isinstance(x, type) and issubclass(x, np.generic))

    if any(is_type(x) for x in v):
        return True
    def is_type_name(x: str) -> bool:
        try:
            as_type(x)
        except Exception:  # noqa: BLE001 - not a type name
            return False
        return True

    return len(v) >= 2 and isinstance(v[0], str) and not _looks_like_shape(v[0]) and all(
        x is None or isinstance(x, PartialShape) or _is_shape(x) or
        (isinstance(x, str) and (_looks_like_shape(x) or not x.strip(" []") or is_type_name(x))) for x in v[1:])


def _spec_from(name: str, v: Any) -> InputSpec:
    if v is None:
        return InputSpec(name)
    if isinstance(v, (Type, np.dtype)) or (isinstance(v, type) and issubclass(v, np.generic)):
        return InputSpec(name, None, as_type(v))
    if isinstance(v, tuple) and len(v) == 2 and not _is_shape(v):
        return InputSpec(name, _shape(v[0]), as_type(v[1]))
    return InputSpec(name, _shape(v), None)


def _one_spec(v: Any) -> InputSpec:
    if isinstance(v, InputSpec):
        return v
    if isinstance(v, str):
        m = _SPEC_RE.match(v)
        if m is None:
            raise ConversionError(f"ember: cannot read input entry '{v}'")
        name = m.group(1) or None
        et = as_type(m.group(3).strip()) if m.group(3) else None
        shape = _shape(m.group(5)) if m.group(4) else None
        return InputSpec(name, shape, et)
    if isinstance(v, Type):
        return InputSpec(None, None, v)
    if isinstance(v, PartialShape):
        return InputSpec(None, v, None)
    if isinstance(v, (list, tuple)):
        if _is_shape(v):
            return InputSpec(None, _shape(v), None)
        items = list(v)
        name = items.pop(0) if items and isinstance(items[0], str) and not _looks_like_shape(items[0]) else None
        shape = et = None
        for it in items:
            if it is None:  # ("x", None, "i64"): the type only, the model's shape
                continue
            if isinstance(it, (Type, np.dtype)) or (isinstance(it, type) and issubclass(it, np.generic)):
                et = as_type(it)
            elif isinstance(it, str) and it.strip(" []") and not _looks_like_shape(it):  # "" or "[]": a scalar
                et = as_type(it)
            else:
                shape = _shape(it)
        return InputSpec(name, shape, et)
    raise ConversionError(f"ember: cannot read input entry {v!r}")


def _looks_like_shape(s: str) -> bool:
    return bool(re.fullmatch(r"[\s\[\]\d?.,\-]*", s)) and any(c.isdigit() or c == "?" for c in s)


def _is_shape(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(
        isinstance(d, (int, np.integer, Dimension)) or
        (isinstance(d, tuple) and len(d) == 2 and all(isinstance(x, (int, np.integer)) for x in d))
        for d in v)


def _shape(v: Any) -> PartialShape:
    if isinstance(v, PartialShape):
        return v
    if isinstance(v, str):
        return PartialShape(v)
    if isinstance(v, (list, tuple)):
        dims = []
        for d in v:
            if isinstance(d, tuple):
                dims.append(Dimension(int(d[0]), int(d[1])))
            elif isinstance(d, Dimension):
                dims.append(d)
            elif isinstance(d, str):
                dims.append(Dimension.parse(d))
            else:
                dims.append(Dimension(int(d)))
        return PartialShape(dims)
    return as_partial_shape(v)


def _parse_output(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return [str(v) for v in value]


def _merge_examples(specs: list[InputSpec], example: Any, graph: onnx.GraphProto) -> list[InputSpec]:
    if example is None:
        return specs
    init = {t.name for t in graph.initializer}
    names = [vi.name for vi in graph.input if vi.name not in init]
    if isinstance(example, Mapping):
        pairs = [(k, np.asarray(v)) for k, v in example.items()]
    else:
        arrays = [example] if isinstance(example, np.ndarray) else list(example)
        if len(arrays) > len(names):
            raise ConversionError(f"ember: example_input has {len(arrays)} arrays for {len(names)} inputs")
        pairs = [(n, np.asarray(a)) for n, a in zip(names, arrays)]
    given = {s.name: s for s in specs if s.name is not None}
    if any(s.name is None for s in specs):
        given = {n: InputSpec(n, s.shape, s.element_type) for n, s in zip(names, specs)}
    for name, arr in pairs:
        old = given.get(name, InputSpec(name))
        given[name] = InputSpec(name, old.shape if old.shape is not None else PartialShape(arr.shape),
                                old.element_type if old.element_type is not None else Type.from_dtype(arr.dtype))
    return list(given.values())
