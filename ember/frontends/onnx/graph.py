"""Converting an ONNX graph (the main graph or a subgraph body) node by node.

``GraphConverter`` keeps the map from ONNX tensor names to converted values, calls each node's
converter, names the results after the ONNX tensors, expands ONNX functions (model-local ones
and schema-defined ones) for ops without a converter, and turns subgraph bodies into Models
whose outer-scope references become extra Parameters (``Subgraph.captures``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import AttributeProto

import ember.graph.node as node_mod
from ember.errors import ConversionError, EmberError, UnsupportedOpError
from ember.frontends.onnx import loader
from ember.frontends.onnx.context import NodeContext, OptionalValue, SequenceValue
from ember.frontends.onnx.registry import find_converter, function_version, normalize_domain, schema
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.graph.shape import as_partial_shape
from ember.graph.types import Type
from ember.ops.sequence import SEQUENCE_SHAPE

_unique = itertools.count()


@dataclass
class Subgraph:
    """A converted subgraph body.

    ``model`` has the formal inputs first, then one Parameter per outer value the body reads
    (``captures``: ``(body parameter, outer port)``, in the model's parameter order).
    """

    model: Model
    inputs: list[Parameter]
    captures: list[tuple[Parameter, Output]] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)


def free_names(graph: onnx.GraphProto) -> set[str]:
    """Names a graph reads without defining them (outer-scope references), subgraphs included."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer} | \
        {t.values.name for t in graph.sparse_initializer}
    used: set[str] = set()
    for n in graph.node:
        for i in n.input:
            if i and i not in defined:
                used.add(i)
        for a in n.attribute:
            for g in _graphs_of(a):
                used |= free_names(g) - defined
        defined.update(o for o in n.output if o)
    used |= {o.name for o in graph.output if o.name not in defined}
    return used


def _graphs_of(a: AttributeProto) -> list[onnx.GraphProto]:
    if a.type == AttributeProto.GRAPH:
        return [a.g]
    if a.type == AttributeProto.GRAPHS:
        return list(a.graphs)
    return []


def node_reads(n: onnx.NodeProto) -> list[str]:
    """Every name a node reads: its inputs and its subgraphs' outer references."""
    names = [i for i in n.input if i]
    for a in n.attribute:
        for g in _graphs_of(a):
            names.extend(sorted(free_names(g)))
    return names


class GraphConverter:
    """Converts the nodes of one graph; a subgraph's converter has the outer one as parent."""

    def __init__(self, base_dir: Path | None, functions: dict[tuple[str, str], onnx.FunctionProto],
                 parent: GraphConverter | None = None, inline: bool = False) -> None:
        self.base_dir = base_dir
        self.functions = functions
        self.parent = parent
        #: an inlined subgraph reads outer values directly instead of capturing them
        self.inline = inline
        self.values: dict[str, Any] = {}
        self.captures: list[tuple[Parameter, Output]] = []
        #: what converters leave for later ones (e.g. QuantizeLinear for DequantizeLinear)
        self.notes: dict[Output, Any] = parent.notes if parent is not None else {}

    # -- values -------------------------------------------------------------------------
    def define(self, name: str, value: Any) -> None:
        self.values[name] = value

    def lookup(self, name: str, who: str = "") -> Any:
        if name in self.values:
            return self.values[name]
        if self.parent is not None:
            outer = self.parent.lookup(name, who)
            value = outer if self.inline else self._capture(name, outer)
            self.values[name] = value
            return value
        raise ConversionError(f"ember: ONNX tensor '{name}'{who} is used but never defined")

    def _capture(self, name: str, outer: Any) -> Any:
        if isinstance(outer, Output):
            if isinstance(outer.node, Constant):
                c = Constant.from_array(outer.node.data, outer.node.element_type, outer.node.friendly_name)
                c.output(0).set_names(outer.names)
                return c.output(0)
            p = Parameter(outer.element_type, outer.partial_shape, name)
            p.output(0).set_names({name})
            if "sequence_element_type" in outer.rt_info:
                p.output(0).rt_info["sequence_element_type"] = outer.rt_info["sequence_element_type"]
            self.captures.append((p, outer))
            return p.output(0)
        if isinstance(outer, SequenceValue):
            return SequenceValue([self._capture(name, o) for o in outer.items], outer.elem_type)
        if isinstance(outer, OptionalValue):
            return OptionalValue(None if outer.value is None else self._capture(name, outer.value),
                                 outer.elem_type, outer.kind, outer.runtime)
        return outer

    # -- attributes ---------------------------------------------------------------------
    def attribute_value(self, a: AttributeProto) -> Any:
        t = a.type
        if t == AttributeProto.FLOAT:
            return float(a.f)
        if t == AttributeProto.INT:
            return int(a.i)
        if t == AttributeProto.STRING:
            return a.s.decode("utf-8")
        if t == AttributeProto.TENSOR:
            return loader.tensor_value(a.t, self.base_dir)[0]
        if t == AttributeProto.SPARSE_TENSOR:
            return loader.sparse_value(a.sparse_tensor, self.base_dir)[0]
        if t == AttributeProto.GRAPH:
            return a.g
        if t == AttributeProto.FLOATS:
            return [float(x) for x in a.floats]
        if t == AttributeProto.INTS:
            return [int(x) for x in a.ints]
        if t == AttributeProto.STRINGS:
            return [s.decode("utf-8") for s in a.strings]
        if t == AttributeProto.TENSORS:
            return [loader.tensor_value(x, self.base_dir)[0] for x in a.tensors]
        if t == AttributeProto.GRAPHS:
            return list(a.graphs)
        if t == AttributeProto.TYPE_PROTO:
            return a.tp
        raise ConversionError(f"ember: attribute '{a.name}' has an unsupported kind {t}")

    # -- the graph's own tensors ----------------------------------------------------------
    def add_initializers(self, graph: onnx.GraphProto) -> None:
        for t in graph.initializer:
            arr, et = loader.tensor_value(t, self.base_dir)
            c = Constant.from_array(arr, et, t.name or None)
            if t.name:
                c.output(0).set_names({t.name})
            self.define(t.name, c.output(0))
        for s in graph.sparse_initializer:
            arr, et = loader.sparse_value(s, self.base_dir)
            c = Constant.from_array(arr, et, s.values.name or None)
            c.output(0).set_names({s.values.name})
            self.define(s.values.name, c.output(0))

    # -- nodes --------------------------------------------------------------------------
    def convert_nodes(self, nodes: Iterable[onnx.NodeProto], opsets: dict[str, int]) -> None:
        for n in nodes:
            self.convert_node(n, opsets)

    def convert_node(self, node: onnx.NodeProto, opsets: dict[str, int]) -> None:
        domain = normalize_domain(node.domain)
        if domain not in opsets:
            raise UnsupportedOpError(f"ember: ONNX node '{node.name or node.op_type}' uses domain "
                                     f"'{node.domain}' which the model does not import")
        opset = opsets[domain]
        who = f" (read by {node.op_type} node '{node.name}')"
        values = [self.lookup(i, who) if i else None for i in node.input]
        fn = find_converter(domain, node.op_type, opset)
        ctx = NodeContext(node, values, self, opsets)
        if fn is None:
            local = self.functions.get((domain, node.op_type))
            if local is not None:
                self.expand_function(node, local, opsets, default_attrs={})
                return
            sch = schema(domain, node.op_type, opset)
            if sch is None or function_version(sch, opset) is None:
                raise UnsupportedOpError(f"ember: ONNX op '{node.op_type}' (domain '{domain or 'ai.onnx'}', "
                                         f"opset {opset}) of node '{ctx.name}' is not supported")
            self.expand_schema_function(ctx, sch)
            return
        mark = next(node_mod._ids)
        try:
            result = fn(ctx)
        except ConversionError:
            raise
        except UnsupportedOpError as e:
            raise ctx.fail(_strip(e)) from e
        except EmberError as e:
            raise ctx.fail(_strip(e)) from e
        except (ValueError, TypeError, IndexError, KeyError, AttributeError, NotImplementedError,
                ZeroDivisionError) as e:
            raise ctx.fail(f"{type(e).__name__}: {e}") from e
        outs = _as_list(result)
        for i, name in enumerate(node.output):
            if not name:
                continue
            if i >= len(outs) or outs[i] is None:
                raise ctx.fail(f"output {i} ('{name}') was not produced")
            value = outs[i]
            if isinstance(value, Output):
                value.add_names({name})
                n = value.node
                if n._id > mark and not isinstance(n, (Parameter, Result)):
                    n.friendly_name = name if n.get_output_size() == 1 else (node.name or name)
            self.define(name, value)

    # -- functions ----------------------------------------------------------------------
    def expand_schema_function(self, ctx: NodeContext, sch: Any) -> None:
        version, dependent = function_version(sch, ctx.opset)  # type: ignore[misc]
        node = onnx.NodeProto()
        node.CopyFrom(ctx.node)
        have = {a.name for a in node.attribute}
        for name, spec in sch.attributes.items():
            if name not in have and spec.default_value.type != AttributeProto.UNDEFINED:
                node.attribute.append(spec.default_value)
        if dependent:
            types = [_type_proto(v).SerializeToString() for v in ctx._values]
            types += [onnx.TypeProto().SerializeToString()] * (len(node.input) - len(types))
            try:
                raw = sch.get_context_dependent_function_with_opset_version(
                    version, node.SerializeToString(), types)
            except Exception as e:  # noqa: BLE001 - onnx raises its own error types
                raise ctx.fail(f"cannot expand the op's function: {e}") from None
        else:
            raw = sch.get_function_with_opset_version(version)
        fp = onnx.FunctionProto()
        fp.ParseFromString(raw)
        if not fp.node:
            raise ctx.fail("the op's ONNX function could not be built for these input types")
        self.expand_function(node, fp, ctx.opsets, default_attrs={})

    def expand_with(self, ctx: NodeContext, values: Sequence[Any]) -> list[Any]:
        """Expand ``ctx``'s op from its ONNX function body on other input ``values``; returns the
        values of its outputs (a converter can so wrap the function, e.g. to compute in f32)."""
        sch = schema(ctx.domain, ctx.op_type, ctx.opset)
        if sch is None or function_version(sch, ctx.opset) is None:
            raise ctx.fail("the op has no ONNX function body to expand")
        tag = f"{ctx.name}/wrapped_{next(_unique)}/"
        node = onnx.NodeProto()
        node.CopyFrom(ctx.node)
        del node.input[:]
        del node.output[:]
        for i, v in enumerate(values):
            if v is None:
                node.input.append("")
            else:
                self.define(f"{tag}in{i}", v)
                node.input.append(f"{tag}in{i}")
        node.output.extend(f"{tag}out{i}" if o else "" for i, o in enumerate(ctx.node.output))
        inner = NodeContext(node, list(values), self, ctx.opsets)
        self.expand_schema_function(inner, sch)
        return [self.lookup(o) if o else None for o in node.output]

    def expand_function(self, node: onnx.NodeProto, fp: onnx.FunctionProto, opsets: dict[str, int],
                        default_attrs: dict[str, AttributeProto]) -> None:
        """Convert ``node`` by converting the body of function ``fp`` in its place."""
        prefix = f"{node.name or node.op_type}/{fp.name}_{next(_unique)}/"
        mapping: dict[str, str] = {}
        for i, formal in enumerate(fp.input):
            mapping[formal] = node.input[i] if i < len(node.input) else ""
        for i, formal in enumerate(fp.output):
            if i < len(node.output) and node.output[i]:
                mapping[formal] = node.output[i]
        attrs = {a.name: a for a in fp.attribute_proto}
        attrs.update(default_attrs)
        attrs.update({a.name: a for a in node.attribute})
        inner = dict(opsets)
        for o in fp.opset_import:
            inner[normalize_domain(o.domain)] = o.version
        for n in fp.node:
            self.convert_node(_rename_node(n, mapping, prefix, attrs), inner)
        for i, formal in enumerate(fp.output):
            if i < len(node.output) and node.output[i] and formal not in mapping:
                self.define(node.output[i], self.lookup(prefix + formal))

    # -- subgraphs ----------------------------------------------------------------------
    def inline_subgraph(self, g: onnx.GraphProto, inputs: Sequence[Any], opsets: dict[str, int]) -> list[Any]:
        """Convert a subgraph in place (no body Model): its inputs are ``inputs``, its outer
        references resolve to this graph's values; returns its output values."""
        sub = GraphConverter(self.base_dir, self.functions, parent=self, inline=True)
        sub.add_initializers(g)
        for vi, v in zip(g.input, inputs):
            sub.define(vi.name, v)
        sub.convert_nodes(g.node, opsets)
        return [sub.lookup(vo.name) for vo in g.output]

    def convert_subgraph(self, g: onnx.GraphProto, inputs: Sequence[tuple[Any, ...] | None] | None,
                         opsets: dict[str, int], name: str, optional_outputs: Sequence[int] = ()) -> Subgraph:
        sub = GraphConverter(self.base_dir, self.functions, parent=self)
        sub.add_initializers(g)
        params: list[Parameter] = []
        for k, vi in enumerate(g.input):
            kind, et, shape = loader.value_info_type(vi)
            given = inputs[k] if inputs is not None and k < len(inputs) else None
            if given is not None:
                et = given[0] if et is None or given[0] is not None else et
                shape = as_partial_shape(given[1]) if given[1] is not None else shape
            if et is None:
                raise ConversionError(f"ember: subgraph '{name}' input '{vi.name}' has no element type")
            if kind != "tensor" or et is Type.sequence:
                et, shape = Type.sequence, SEQUENCE_SHAPE
            p = Parameter(et, shape, vi.name)
            p.output(0).set_names({vi.name})
            if et is Type.sequence:
                item = given[2] if given is not None and len(given) > 2 else loader.value_info_type(vi)[1]
                mark_boundary(p, value_kind(vi.type) if kind != "tensor" else "sequence", item)
            params.append(p)
            sub.define(vi.name, boundary_input(p))
        sub.convert_nodes(g.node, opsets)
        outs: list[Output] = []
        for k, vo in enumerate(g.output):
            v = sub.lookup(vo.name)
            if k in optional_outputs and not isinstance(v, OptionalValue):
                v = OptionalValue(v, None, "sequence" if isinstance(v, SequenceValue) or (
                    isinstance(v, Output) and v.element_type is Type.sequence) else "tensor")
            v, _, _ = boundary_output(v)
            outs.append(v)
        results = [Result([o], None, f"{vo.name}/sink_port_0") for o, vo in zip(outs, g.output)]
        all_params = params + [p for p, _ in sub.captures]
        model = Model(results, all_params, name)
        return Subgraph(model, params, list(sub.captures), outs)


def _rename_node(n: onnx.NodeProto, mapping: dict[str, str], prefix: str,
                 attrs: dict[str, AttributeProto]) -> onnx.NodeProto:
    def rn(name: str) -> str:
        if not name:
            return ""
        return mapping[name] if name in mapping else prefix + name

    new = onnx.NodeProto()
    new.CopyFrom(n)
    del new.input[:]
    del new.output[:]
    del new.attribute[:]
    new.input.extend(rn(x) for x in n.input)
    new.output.extend(rn(x) for x in n.output)
    new.name = prefix + (n.name or n.op_type)
    for a in n.attribute:
        if a.ref_attr_name:
            src = attrs.get(a.ref_attr_name)
            if src is None:
                continue
            b = AttributeProto()
            b.CopyFrom(src)
            b.name = a.name
            new.attribute.append(b)
            continue
        b = AttributeProto()
        b.CopyFrom(a)
        for g in _graphs_of(b):
            _rename_graph(g, rn, attrs)
        new.attribute.append(b)
    return new


def _rename_graph(g: onnx.GraphProto, outer: Any, attrs: dict[str, AttributeProto]) -> None:
    """Rename a function body's subgraph in place: its outer references through ``outer``."""
    mapping = {name: outer(name) for name in free_names(g)}
    for n in list(g.node):
        renamed = _rename_node(n, mapping, "", attrs)
        renamed.name = n.name
        n.CopyFrom(renamed)
    for o in g.output:
        if o.name in mapping:
            o.name = mapping[o.name]


def _type_proto(v: Any) -> onnx.TypeProto:
    if isinstance(v, Output):
        et = v.element_type
        ps = v.partial_shape
        shape = None if not ps.rank_is_static else [d.get_length() if d.is_static else None for d in ps]
        if et.is_dynamic or et is Type.sequence:
            pass
        else:
            return onnx.helper.make_tensor_type_proto(loader.onnx_type(et), shape)
    if isinstance(v, SequenceValue) and v.elem_type is not None:
        return onnx.helper.make_sequence_type_proto(
            onnx.helper.make_tensor_type_proto(loader.onnx_type(v.elem_type), None))
    if isinstance(v, Output) and v.element_type is Type.sequence:
        item = _item_type(v)
        if not item.is_dynamic:
            return onnx.helper.make_sequence_type_proto(
                onnx.helper.make_tensor_type_proto(loader.onnx_type(item), None))
    return onnx.TypeProto()


# -- sequences and optionals at a graph's boundary -------------------------------------------
def value_kind(tp: onnx.TypeProto) -> str:
    """"tensor", "sequence", "optional" or "optional.sequence" for an ONNX value type."""
    kind = tp.WhichOneof("value")
    if kind == "sequence_type":
        return "sequence"
    if kind == "optional_type":
        inner = tp.optional_type.elem_type.WhichOneof("value")
        return "optional.sequence" if inner == "sequence_type" else "optional"
    return "tensor"


def mark_boundary(node: Node, kind: str | None, item: Type | None) -> None:
    """Note on a Parameter or Result that its value is a sequence or an optional."""
    from ember.ops.sequence import ITEM_TYPE, VALUE_KIND

    if kind is None or kind == "tensor":
        return
    node.rt_info[VALUE_KIND] = kind
    if item is not None and not item.is_dynamic:
        node.rt_info[ITEM_TYPE] = item.name
        if kind == "sequence" and isinstance(node, Parameter):
            node.output(0).rt_info["sequence_element_type"] = item


def _item_type(port: Output) -> Type:
    from ember.frontends.onnx.ops.sequence import item_type

    return item_type(port)


def boundary_input(p: Parameter) -> Any:
    """The converter value of a Parameter: the port, or a run-time optional around it."""
    from ember.ops.sequence import boundary_kind, item_type_name

    kind = boundary_kind(p)
    port = p.output(0)
    if kind in ("optional", "optional.sequence"):
        item = item_type_name(p)
        et = Type.from_name(item) if item else None
        return OptionalValue(port, et, "sequence" if kind == "optional.sequence" else "tensor", runtime=True)
    return port


def boundary_output(v: Any) -> tuple[Output, str | None, Type | None]:
    """``(port, value kind, item type)`` for a value leaving a graph: a sequence or an optional
    known at conversion time becomes a run-time value (``ember.ops.sequence``)."""
    from ember.frontends.onnx.ops.sequence import item_type, materialize

    if isinstance(v, OptionalValue):
        if not v.runtime and isinstance(v.value, Output) and v.value.element_type is not Type.sequence:
            return v.value, None, None
        seq = v.kind == "sequence" or isinstance(v.value, SequenceValue) or \
            (isinstance(v.value, Output) and v.value.element_type is Type.sequence)
        item = v.elem_type if v.elem_type is not None else (item_type(v.value) if v.value is not None else None)
        return materialize(v), "optional.sequence" if seq else "optional", item
    if isinstance(v, SequenceValue):
        return materialize(v), "sequence", v.elem_type
    if isinstance(v, Output):
        if v.element_type is Type.sequence:
            return v, "sequence", _item_type(v)
        return v, None, None
    raise ConversionError(f"ember: graph output {v!r} is not a value")


def _as_list(result: Any) -> list[Any]:
    if result is None:
        return []
    if isinstance(result, (Output, SequenceValue, OptionalValue)):
        return [result]
    if isinstance(result, Node):
        return result.outputs()
    return [r.output(0) if isinstance(r, Node) else r for r in result]


def _strip(e: Exception) -> str:
    msg = str(e)
    return msg[len("ember: "):] if msg.startswith("ember: ") else msg
