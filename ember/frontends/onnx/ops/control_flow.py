"""If, Loop and Scan onto OpenVINO's If, Loop and TensorIterator.

Each ONNX subgraph becomes a body Model; the outer values a body reads become extra body
Parameters fed as invariant inputs. Loop and Scan stack per-iteration outputs along a new
axis, so their bodies get an Unsqueeze before the concatenated output (and Scan an Squeeze
after each sliced input), as OpenVINO's ONNX frontend builds them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext, OptionalValue, SequenceValue
from ember.frontends.onnx.graph import Subgraph, value_kind
from ember.frontends.onnx.ops.sequence import is_runtime_sequence, item_type, materialize, optional_get
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const, i64, reshape
from ember.graph.core_ops import Parameter, Result
from ember.graph.node import Output
from ember.graph.shape import PartialShape
from ember.graph.types import Type


def _scalar(x: Output) -> Output:
    ps = x.partial_shape
    return x if ps.rank_is_static and len(ps) == 0 else reshape(x, [])


@converter("If")
def if_(ctx: NodeContext) -> list[Any]:
    known = ctx.const(0)
    if known is not None:
        # a condition known at conversion time keeps only the branch taken
        return ctx.inline("then_branch" if bool(np.asarray(known).reshape(-1)[0]) else "else_branch")
    cond = _scalar(ctx.req(0))
    declared = [value_kind(o.type) for o in ctx.attr("then_branch").output]
    optional = [k for k, kind in enumerate(declared) if kind.startswith("optional")]
    then = ctx.subgraph("then_branch", None, optional)
    other = ctx.subgraph("else_branch", None, optional)
    if len(then.outputs) != len(other.outputs):
        raise ctx.fail("the branches have different numbers of outputs")
    node = ops.if_op(cond)
    node.set_then_body(then.model)
    node.set_else_body(other.model)
    for p, outer in then.captures:
        node.set_input(outer, p, None)
    for p, outer in other.captures:
        node.set_input(outer, None, p)
    outs: list[Any] = []
    for k, (tr, er) in enumerate(zip(then.model.get_results(), other.model.get_results())):
        o = node.set_output(tr, er)
        item = item_type(tr.input_values()[0])
        if k in optional:
            o = OptionalValue(o, None if item.is_dynamic else item,
                              "sequence" if declared[k] == "optional.sequence" else "tensor", runtime=True)
        elif o.element_type is Type.sequence and not item.is_dynamic:
            o.rt_info["sequence_element_type"] = item
        outs.append(o)
    return outs


def _stacking_result(body: Subgraph, out: Output, axis: int) -> Result:
    """A new body Result holding ``out`` with a length-1 ``axis`` to concatenate on."""
    r = Result([ops.unsqueeze(out, i64([axis])).output(0)])
    body.model.add_results([r])
    return r


def _squeezed_parameter(body: Subgraph, k: int, axis: int) -> Parameter:
    """Replace formal input ``k`` by a Parameter with a length-1 ``axis``, squeezed for the body."""
    old = body.inputs[k]
    ps = old.partial_shape
    dims = list(ps) if ps.rank_is_static else None
    shape = PartialShape(dims[:axis] + [1] + dims[axis:]) if dims is not None else PartialShape.dynamic()
    new = Parameter(old.element_type, shape, old.friendly_name)
    new.output(0).set_names(old.output(0).names)
    old.output(0).replace(ops.squeeze(new, i64([axis])).output(0))
    index = body.model.get_parameter_index(old)
    body.model.replace_parameter(index, new)
    body.inputs[k] = new
    return new


@converter("Loop")
def loop(ctx: NodeContext) -> list[Output]:
    trip = _scalar(ops.convert(ctx.req(0), Type.i64).output(0)) if ctx.has_input(0) else const(-1, Type.i64)
    cond = _scalar(ctx.req(1)) if ctx.has_input(1) else const(True, Type.boolean)
    values = [ctx.value(i) for i in range(2, ctx.num_inputs)]
    kinds = [_kind(v) for v in values]
    carried = [materialize(v) for v in values]
    specs: list[tuple[Any, ...]] = [(Type.i64, PartialShape([])), (Type.boolean, PartialShape([]))]
    specs += [(v.element_type, v.partial_shape, _item(val)) for v, val in zip(carried, values)]
    optional = [1 + k for k, kind in enumerate(kinds) if kind.startswith("optional")]
    body = ctx.subgraph("body", specs, optional)
    n = len(carried)
    results = body.model.get_results()
    if len(results) < 1 + n:
        raise ctx.fail("the body has fewer outputs than loop-carried values")
    scans = [_stacking_result(body, r.input_values()[0], 0) for r in results[1 + n:]]
    node = ops.loop(trip, cond)
    node.set_function(body.model)
    node.set_special_body_ports([0, 0])
    node.set_merged_input(body.inputs[1], cond, results[0].output(0))
    for k, v in enumerate(carried):
        node.set_merged_input(body.inputs[2 + k], v, results[1 + k].output(0))
    for p, outer in body.captures:
        node.set_invariant_input(p, outer)
    outs: list[Any] = []
    for k in range(n):
        o = node.get_iter_value(results[1 + k].output(0), -1)
        if kinds[k].startswith("optional"):
            o = OptionalValue(o, _item(values[k]), "sequence" if kinds[k] == "optional.sequence" else "tensor",
                              runtime=True)
            declared = ctx.node.output[k] if k < ctx.num_outputs else ""
            if declared and _body_output_kind(ctx, 1 + k) == "sequence":
                o = optional_get(ctx, o)
        outs.append(o)
    for r in scans:
        if r.input_values()[0].element_type is Type.sequence:
            raise ctx.fail("a scan output of sequences is not supported")
        outs.append(node.get_concatenated_slices(r.output(0), 0, 1, 1, -1, 0))
    return outs


def _kind(v: Any) -> str:
    if isinstance(v, OptionalValue):
        return "optional.sequence" if v.kind == "sequence" else "optional"
    if isinstance(v, SequenceValue) or is_runtime_sequence(v):
        return "sequence"
    return "tensor"


def _item(v: Any) -> Type | None:
    if isinstance(v, OptionalValue):
        return v.elem_type
    return item_type(v) if isinstance(v, SequenceValue) or is_runtime_sequence(v) else None


def _body_output_kind(ctx: NodeContext, k: int) -> str:
    """The kind the Loop body declares for output ``k`` ("tensor" when it does not say)."""
    g = ctx.attr("body")
    return value_kind(g.output[k].type) if k < len(g.output) else "tensor"


@converter("Scan", since=9)
def scan(ctx: NodeContext) -> list[Output]:
    m = ctx.attr("num_scan_inputs")
    values = [ctx.req(i) for i in range(ctx.num_inputs)]
    n = len(values) - m
    return _scan(ctx, values[:n], values[n:], ctx.attr("scan_input_axes", [0] * m),
                 ctx.attr("scan_input_directions", [0] * m), ctx.attr("scan_output_axes", None),
                 ctx.attr("scan_output_directions", None))


@converter("Scan", since=8, until=8)
def scan8(ctx: NodeContext) -> list[Output]:
    """Scan-8 has a leading batch axis on every input: one TensorIterator per batch item."""
    if ctx.has_input(0):
        raise ctx.fail("sequence_lens is not supported")
    m = ctx.attr("num_scan_inputs")
    values = [ctx.req(i) for i in range(1, ctx.num_inputs)]
    n = len(values) - m
    batch = values[0].partial_shape[0]
    if not batch.is_static:
        raise ctx.fail("the batch dimension must be static")
    dirs = ctx.attr("directions", [0] * m)
    per_item = []
    for b in range(batch.get_length()):
        items = [ops.gather(v, i64(b), i64(0)).output(0) for v in values]
        per_item.append(_scan(ctx, items[:n], items[n:], [0] * m, dirs, None, None))
    return [ops.concat([ops.unsqueeze(outs[k], i64([0])) for outs in per_item], 0).output(0)
            for k in range(len(per_item[0]))]


def _scan(ctx: NodeContext, states: list[Output], scanned: list[Output], in_axes: list[int], in_dirs: list[int],
          out_axes: list[int] | None, out_dirs: list[int] | None) -> list[Output]:
    n, m = len(states), len(scanned)
    specs: list[tuple[Type, PartialShape] | None] = [(v.element_type, v.partial_shape) for v in states]
    norm_axes = []
    for v, a in zip(scanned, in_axes):
        ps = v.partial_shape
        r = len(ps) if ps.rank_is_static else None
        if a < 0 and r is None:
            raise ctx.fail("a negative scan axis needs inputs of known rank")
        a = a + r if a < 0 else a
        norm_axes.append(a)
        sliced = PartialShape([d for i, d in enumerate(ps) if i != a]) if r is not None else PartialShape.dynamic()
        specs.append((v.element_type, sliced))
    body = ctx.subgraph("body", specs)
    results = body.model.get_results()
    k_out = len(results) - n
    out_axes = out_axes if out_axes is not None else [0] * k_out
    out_dirs = out_dirs if out_dirs is not None else [0] * k_out
    node = ops.tensor_iterator()
    stacks = []
    for j, r in enumerate(results[n:]):
        src = r.input_values()[0]
        rank = len(src.partial_shape) + 1 if src.partial_shape.rank_is_static else None
        a = out_axes[j]
        if a < 0:
            if rank is None:
                raise ctx.fail("a negative scan output axis needs outputs of known rank")
            a += rank
        stacks.append((_stacking_result(body, src, a), a, out_dirs[j]))
    params = [_squeezed_parameter(body, n + j, norm_axes[j]) for j in range(m)]
    node.set_body(body.model)
    for k in range(n):
        node.set_merged_input(body.inputs[k], states[k], results[k].output(0))
    for j, (p, v) in enumerate(zip(params, scanned)):
        if in_dirs[j]:
            node.set_sliced_input(p, v, -1, -1, 1, 0, norm_axes[j])
        else:
            node.set_sliced_input(p, v, 0, 1, 1, -1, norm_axes[j])
    for p, outer in body.captures:
        node.set_invariant_input(p, outer)
    outs = [node.get_iter_value(results[k].output(0), -1) for k in range(n)]
    for r, a, d in stacks:
        if d:
            outs.append(node.get_concatenated_slices(r.output(0), -1, -1, 1, 0, a))
        else:
            outs.append(node.get_concatenated_slices(r.output(0), 0, 1, 1, -1, a))
    return outs
