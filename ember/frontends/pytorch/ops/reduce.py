"""Reductions: sum, mean, max/min (values and indices), prod, var/std, any/all, norms."""

from __future__ import annotations

from typing import Any

import ember.opset as ops
from ember.frontends.pytorch.context import Call, const, convert, i64, rank_of
from ember.frontends.pytorch.registry import converter
from ember.graph.node import Output
from ember.graph.types import Type


def _axes(call: Call, x: Output, name: str = "dim") -> list[int]:
    r = rank_of(x)
    dims = call.args.get(name)
    if dims is None or dims == []:
        return list(range(r))
    return [d % max(r, 1) for d in call.ints(name)]


_REDUCE = {"aten.sum": ops.reduce_sum, "aten.mean": ops.reduce_mean, "aten.amax": ops.reduce_max,
           "aten.amin": ops.reduce_min, "aten.prod": ops.reduce_prod, "aten.any": ops.reduce_logical_or,
           "aten.all": ops.reduce_logical_and}


@converter(*_REDUCE)
def reduce(call: Call) -> Output:
    x = call.tensor("self")
    et = call.out_type or call.dtype("dtype")
    if call.op in ("aten.any", "aten.all"):
        x = convert(x, Type.boolean)
    elif et is not None:
        x = convert(x, et)
    elif call.op in ("aten.sum", "aten.prod") and not x.element_type.is_real:
        x = convert(x, Type.i64)
    keep = bool(call.get("keepdim", False))
    if rank_of(x) == 0:
        return x
    return _REDUCE[call.op](x, i64(_axes(call, x)), keep).output(0)


@converter("aten.max", "aten.min")
def max_min(call: Call) -> Any:
    x = call.tensor("self")
    if "other" in call.args:
        y = convert(call.tensor("other"), x.element_type)
        return (ops.maximum if call.op == "aten.max" else ops.minimum)(x, y).output(0)
    if call.args.get("dim") is None:
        fn = ops.reduce_max if call.op == "aten.max" else ops.reduce_min
        return fn(x, i64(list(range(rank_of(x)))), False).output(0)
    return _topk(call, x, "max" if call.op == "aten.max" else "min")


def _topk(call: Call, x: Output, mode: str) -> tuple[Output, Output]:
    axis = call.int("dim") % rank_of(x)
    keep = bool(call.get("keepdim", False))
    node = ops.topk(x, i64(1), axis, mode, "none", "i64")
    vals, idx = node.output(0), node.output(1)
    if not keep:
        vals = ops.squeeze(vals, i64([axis])).output(0)
        idx = ops.squeeze(idx, i64([axis])).output(0)
    return vals, idx


@converter("aten.argmax", "aten.argmin")
def argmax(call: Call) -> Output:
    x = call.tensor("self")
    mode = "max" if call.op == "aten.argmax" else "min"
    if call.args.get("dim") is None:
        x = ops.reshape(x, i64([-1]), False).output(0)
        call.args["dim"] = 0
        call.args["keepdim"] = False
    return _topk(call, x, mode)[1]


@converter("aten.var", "aten.std", "aten.var_mean", "aten.std_mean")
def var(call: Call) -> Any:
    x = call.tensor("self")
    axes = i64(_axes(call, x))
    keep = bool(call.get("keepdim", False))
    correction = call.args.get("correction")
    if correction is None:
        correction = 1 if call.get("unbiased", True) else 0
    mean = ops.reduce_mean(x, axes, True).output(0)
    d = ops.subtract(x, mean).output(0)
    sq = ops.reduce_sum(ops.multiply(d, d), axes, keep).output(0)
    n = ops.reduce_prod(ops.gather(ops.shape_of(x), axes, i64(0)), i64([0]), False).output(0)
    n = ops.subtract(convert(n, x.element_type), const(float(correction), x.element_type)).output(0)
    v = ops.divide(sq, n).output(0)
    if call.op.startswith("aten.std"):
        v = ops.sqrt(v).output(0)
    if call.op.endswith("_mean"):
        return v, (mean if keep else ops.squeeze(mean, axes).output(0))
    return v


@converter("aten.linalg_vector_norm", "aten.norm")
def vector_norm(call: Call) -> Output:
    x = call.tensor("self")
    p = call.get("ord", call.get("p", 2))
    keep = bool(call.get("keepdim", False))
    axes = i64(_axes(call, x))
    if p == 2:
        return ops.reduce_l2(x, axes, keep).output(0)
    if p == 1:
        return ops.reduce_l1(x, axes, keep).output(0)
    if p == float("inf"):
        return ops.reduce_max(ops.absolute(x), axes, keep).output(0)
    pe = const(float(p), x.element_type)
    s = ops.reduce_sum(ops.power(ops.absolute(x), pe), axes, keep)
    return ops.power(s, ops.divide(const(1.0, x.element_type), pe)).output(0)


@converter("aten.logsumexp")
def logsumexp(call: Call) -> Output:
    x = call.tensor("self")
    axes = i64(_axes(call, x))
    keep = bool(call.get("keepdim", False))
    m = ops.reduce_max(x, axes, True).output(0)
    s = ops.reduce_sum(ops.exp(ops.subtract(x, m)), axes, keep).output(0)
    mm = m if keep else ops.squeeze(m, axes).output(0)
    return ops.add(ops.log(s), mm).output(0)
