"""Python-level ops on sizes (``SymInt`` arithmetic in torch.export graphs), ``getitem`` of
multi-output ops, and assertion nodes (dropped)."""

from __future__ import annotations

import math
import operator
from typing import Any

import ember.opset as ops
from ember.frontends.pytorch.context import Call, const, convert, folded, i64
from ember.frontends.pytorch.registry import converter
from ember.graph.node import Output
from ember.graph.types import Type


@converter("aten._assert_tensor_metadata", "aten._assert_scalar", "aten.sym_constrain_range_for_size",
           "aten.sym_constrain_range", "aten._assert_async", "aten._functional_assert_async",
           "aten._functional_assert_scalar", "aten._functional_sym_constrain_range",
           "aten._functional_sym_constrain_range_for_size", "aten._assert_size_stride", "aten.warn")
def dropped(call: Call) -> None:
    return None


@converter("operator.getitem")
def getitem(call: Call) -> Any:
    seq, idx = call["a"], folded(call["b"])
    if isinstance(seq, Output):
        return ops.gather(seq, convert(idx, Type.i64) if isinstance(idx, Output) else i64(int(idx)), i64(0)).output(0)
    v = seq[idx]
    if v is None:
        raise call.fail(f"output {idx} of a multi-output op is not converted (only used in training)")
    return v


def _scalar(v: Any) -> Output:
    if isinstance(v, Output):
        return v
    return const(v, Type.f32) if isinstance(v, float) else i64(int(v))


_PY = {"add": (operator.add, ops.add), "sub": (operator.sub, ops.subtract), "mul": (operator.mul, ops.multiply),
       "floordiv": (operator.floordiv, None), "truediv": (operator.truediv, None),
       "mod": (operator.mod, ops.floor_mod), "pow": (operator.pow, ops.power),
       "eq": (operator.eq, ops.equal), "ne": (operator.ne, ops.not_equal), "lt": (operator.lt, ops.less),
       "le": (operator.le, ops.less_equal), "gt": (operator.gt, ops.greater), "ge": (operator.ge, ops.greater_equal)}


@converter(*(f"operator.{n}" for n in _PY))
def python_binary(call: Call) -> Any:
    name = call.op.split(".")[1]
    a, b = folded(call["a"]), folded(call["b"])
    if isinstance(a, list) and len(a) == 1:
        a = a[0]
    if isinstance(b, list) and len(b) == 1:
        b = b[0]
    py, build = _PY[name]
    if not isinstance(a, Output) and not isinstance(b, Output):
        return py(a, b)
    is_float = any(isinstance(v, float) or (isinstance(v, Output) and v.element_type.is_real) for v in (a, b))
    et = Type.f32 if is_float or name == "truediv" else Type.i64
    x, y = convert(_scalar(a), et), convert(_scalar(b), et)
    if name == "floordiv":
        if et is Type.i64:
            q = ops.floor(ops.divide(convert(x, Type.f64), convert(y, Type.f64)))
            return convert(q.output(0), Type.i64)
        return ops.floor(ops.divide(x, y)).output(0)
    if name == "truediv":
        return ops.divide(x, y).output(0)
    return build(x, y).output(0)


@converter("operator.neg")
def python_neg(call: Call) -> Any:
    a = folded(call["a"])
    return -a if not isinstance(a, Output) else ops.negative(a).output(0)


@converter("torch.sym_float", "torch.sym_int", "torch.sym_sqrt", "math.ceil", "math.floor", "math.sqrt",
           "torch.sym_max", "torch.sym_min", "torch.sym_not")
def sym_math(call: Call) -> Any:
    a = folded(call["a"])
    b = folded(call.args.get("b"))
    name = call.op.split(".")[1]
    if not isinstance(a, Output) and not isinstance(b, Output):
        fn = {"sym_float": float, "sym_int": int, "sym_sqrt": math.sqrt, "ceil": math.ceil, "floor": math.floor,
              "sqrt": math.sqrt, "sym_not": operator.not_}
        if name in ("sym_max", "sym_min"):
            return max(a, b) if name == "sym_max" else min(a, b)
        return fn[name](a)
    if name == "sym_float":
        return convert(a, Type.f32)
    if name in ("sym_int", "floor"):
        return convert(ops.floor(convert(a, Type.f64)).output(0), Type.i64)
    if name == "ceil":
        return convert(ops.ceiling(convert(a, Type.f64)).output(0), Type.i64)
    if name in ("sym_sqrt", "sqrt"):
        return ops.sqrt(convert(a, Type.f32)).output(0)
    if name in ("sym_max", "sym_min"):
        fn2 = ops.maximum if name == "sym_max" else ops.minimum
        return fn2(convert(_scalar(a), Type.i64), convert(_scalar(b), Type.i64)).output(0)
    return ops.logical_not(convert(a, Type.boolean)).output(0)


@converter("aten.item", "aten._local_scalar_dense")
def item(call: Call) -> Any:
    x = call.tensor("self")
    return ops.reshape(x, i64([]), False).output(0)
