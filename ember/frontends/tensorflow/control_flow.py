"""TensorFlow's functional ``While`` as OpenVINO's ``Loop``, with the TensorList ops Keras' RNN
layers use inside it (as OpenVINO's TensorFlow frontend converts them).

A TensorList is held at conversion time as ``TensorList``: the stacked tensor of its items when
it comes from ``TensorListFromTensor`` (read in the loop with ``TensorListGetItem``: a Gather),
or a reserved list that the loop body fills with ``TensorListSetItem``. A list written at a
constant index of a one-element list keeps the last iteration's item; a list written at the
loop's step index collects every iteration's item (the Loop's concatenated output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import ember.opset as ops
from ember.frontends.tensorflow.convert import GraphConverter, NodeContext, _needed, converter, function_graph
from ember.frontends.tflite.context import Value
from ember.graph.core_ops import Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Output, constant_value
from ember.graph.shape import PartialShape
from ember.graph.types import Type


@dataclass
class TensorList:
    tensor: Output | None = None          # the stacked items
    reserved: int | None = None           # TensorListReserve's num_elements (tensor is None)
    writes: list[tuple[Output, Output]] = field(default_factory=list)  # (index, item) set in a body


def _i64(v: object) -> Output:
    return ops.constant(np.asarray(v, np.int64)).output(0)


def _list(ctx: NodeContext, i: int) -> TensorList:
    v = ctx.graph.values[ctx.inputs[i]]
    if not isinstance(v, TensorList):
        raise ctx.fail(f"input {i} is not a TensorList")
    return v


def _set(ctx: NodeContext, v: Any, j: int = 0) -> None:
    ctx.graph.values[(ctx.node.name, j)] = v


@converter("TensorListFromTensor")
def tensor_list_from_tensor(ctx: NodeContext) -> None:
    _set(ctx, TensorList(tensor=ctx.plain(0)))


@converter("TensorListReserve")
def tensor_list_reserve(ctx: NodeContext) -> None:
    n = ctx.const(1)
    _set(ctx, TensorList(reserved=int(n) if n is not None else None))


@converter("TensorListGetItem")
def tensor_list_get_item(ctx: NodeContext) -> None:
    lst = _list(ctx, 0)
    if lst.tensor is None:
        raise ctx.fail("reading a TensorList that holds no stacked tensor is not supported")
    index = ops.convert(ctx.plain(1), Type.i64).output(0)
    ctx.out(ops.gather(lst.tensor, index, _i64(0)).output(0))


@converter("TensorListSetItem")
def tensor_list_set_item(ctx: NodeContext) -> None:
    lst = _list(ctx, 0)
    if lst.tensor is not None:
        raise ctx.fail("writing into a TensorList made from a tensor is not supported")
    _set(ctx, TensorList(reserved=lst.reserved, writes=[*lst.writes, (ctx.plain(1), ctx.plain(2))]))


@converter("TensorListStack")
def tensor_list_stack(ctx: NodeContext) -> None:
    lst = _list(ctx, 0)
    if lst.tensor is None:
        raise ctx.fail("stacking a TensorList outside the loop that fills it is not supported")
    ctx.out(lst.tensor)


def _subgraph(ctx: NodeContext, name: str, inputs: list[Any]) -> tuple[GraphConverter, list[Any]]:
    """Convert library function ``name`` with its arguments bound to ``inputs``; its outputs."""
    nodes, outs, args = function_graph(ctx.graph.library[name])
    g = GraphConverter(ctx.graph.library)
    for a, v in zip(args, inputs):
        g.values[(a, 0)] = v
    g.run(nodes, _needed(nodes, [o for o, _ in outs], set(args)))
    return g, [g.values[o] for o in outs]


def _scalar_bool(ctx: NodeContext, g: GraphConverter, v: Any) -> Output:
    sub = NodeContext(ctx.node, g)
    g.values[("__cond__", 0)] = v
    sub.inputs = [("__cond__", 0)]
    c = sub.plain(0)
    return ops.reshape(ops.convert(c, Type.boolean), _i64([]), False).output(0)


def _passthrough(name: str, library: dict[str, Any]) -> set[int]:
    """Indices of the loop variables a body function returns unchanged (through Identity)."""
    nodes, outs, args = function_graph(library[name])
    same = set()
    for k, (node, _) in enumerate(outs):
        while node in nodes and nodes[node].op in ("Identity", "IdentityN"):
            node = [i for i in nodes[node].input if not i.startswith("^")][0].split(":")[0]
        if k < len(args) and node == args[k]:
            same.add(k)
    return same


@converter(["While", "StatelessWhile"])
def while_loop(ctx: NodeContext) -> None:
    body_name, cond_name = ctx.attr("body"), ctx.attr("cond")
    outer = [ctx.value(i) for i in range(ctx.num_inputs)]
    fixed = _passthrough(body_name, ctx.graph.library)
    body_inputs: list[Any] = []
    params: dict[int, Parameter] = {}
    for k, v in enumerate(outer):
        if isinstance(v, TensorList):
            if v.tensor is not None:
                p = Parameter(v.tensor.element_type, v.tensor.partial_shape, f"list_{k}")
                params[k] = p
                body_inputs.append(TensorList(tensor=p.output(0)))
            else:
                body_inputs.append(TensorList(reserved=v.reserved))
        elif v.is_const and k in fixed:
            body_inputs.append(v)  # a weight: a constant inside the body
        else:
            port = ctx.plain(k)
            p = Parameter(port.element_type, port.partial_shape, f"var_{k}")
            params[k] = p
            body_inputs.append(Value(plain=p.output(0)))
    g, body_out = _subgraph(ctx, body_name, body_inputs)
    gc, (cond_next,) = _subgraph(ctx, cond_name, body_out)
    results: list[Result] = [Result([_scalar_bool(ctx, gc, cond_next)])]
    carried: dict[int, Result] = {}
    for k, p in params.items():
        if isinstance(body_inputs[k], TensorList):
            continue  # a stacked tensor only read
        out_v = body_out[k]
        if out_v is body_inputs[k]:
            continue  # unchanged: an invariant
        sub = NodeContext(ctx.node, g)
        g.values[("__out__", k)] = out_v
        sub.inputs = [("__out__", k)]
        port = sub.plain(0)
        if port.partial_shape != p.partial_shape:
            p.set_partial_shape(PartialShape.dynamic(len(p.partial_shape)) if p.partial_shape.rank_is_static
                                else PartialShape.dynamic())
        carried[k] = Result([port])
        results.append(carried[k])
    written: dict[int, tuple[Result, bool]] = {}
    for k, v in enumerate(body_out):
        if isinstance(v, TensorList) and v.writes:
            index, item = v.writes[-1]
            if len(v.writes) > 1:
                raise ctx.fail("a loop body that writes one TensorList twice is not supported")
            last = constant_value(index) is not None and outer[k].reserved == 1
            r = Result([item if last else ops.unsqueeze(item, _i64([0])).output(0)])
            written[k] = (r, last)
            results.append(r)
    _, (cond0,) = _subgraph(ctx, cond_name, outer)
    loop = ops.loop(_i64(-1), _scalar_bool(ctx, ctx.graph, cond0))
    body = Model(results, list(params.values()), f"{ctx.node.name}/body")
    loop.set_function(body)
    loop.set_special_body_ports([-1, 0])
    for k, p in params.items():
        src = outer[k].tensor if isinstance(outer[k], TensorList) else ctx.plain(k)
        if k in carried:
            loop.set_merged_input(p, src, carried[k].output(0))
        else:
            loop.set_invariant_input(p, src)
    for k in range(len(outer)):
        if k in carried:
            ctx.out(loop.get_iter_value(carried[k].output(0), -1), k)
        elif k in written:
            r, last = written[k]
            if last:
                tensor = ops.unsqueeze(loop.get_iter_value(r.output(0), -1), _i64([0])).output(0)
            else:
                tensor = loop.get_concatenated_slices(r.output(0), 0, 1, 1, -1, 0)
            _set(ctx, TensorList(tensor=tensor), k)
        else:
            _set(ctx, outer[k], k)
