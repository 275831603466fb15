"""Lowering rule for fused elementwise chains (one program per chain, see
:mod:`ember.devices.cpu.kernels.eltwise`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ember.devices.cpu.kernels.eltwise import NATIVE_BINARY, NATIVE_UNARY
from ember.devices.cpu.lowering.driver import (
    F32,
    Lowering,
    const_of,
    lowers,
    reshaper,
    scalar_of,
    static_shape,
)
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op, Tensor
from ember.errors import EmberError
from ember.graph.node import Node, Output

LOADABLE = {np.dtype(d) for d in (np.float32, np.int32, np.int64, np.uint8, np.bool_)}


def _ew_unary(node: Node) -> tuple[str, float, float] | None:
    """(op, imm0, imm1) of a unary elementwise node, or None."""
    t = node.type_name
    if t == "Convert":  # to f32 from an integer or bool input: the load converts
        return "mulc", 1.0, 0.0
    if t in NATIVE_UNARY and len(node.input_values()) == 1:
        return NATIVE_UNARY[t], 0.0, 0.0
    if t == "Clamp":
        return "clamp", float(node.attrs["min"]), float(node.attrs["max"])
    if t == "Elu":
        return "elu", float(node.attrs["alpha"]), 0.0
    if t == "Gelu":
        mode = str(node.attrs.get("approximation_mode", "ERF")).upper()
        return ("gelu_tanh" if mode == "TANH" else "gelu_erf"), 0.0, 0.0
    if t == "Swish":
        beta = 1.0 if len(node.input_values()) == 1 else scalar_of(node.input_values()[1])
        return None if beta is None else ("swish", beta, 0.0)
    if t == "Power":
        ex = scalar_of(node.input_values()[1])
        if ex is None or node.input_values()[1].partial_shape.rank.get_length() > len(node.output(0).partial_shape):
            return None
        if ex == 2.0:
            return "square", 0.0, 0.0
        if ex == 0.5:
            return "sqrt", 0.0, 0.0
        if ex == 1.0:
            return "mulc", 1.0, 0.0
        if ex == -1.0:
            return "rdivc", 1.0, 0.0
        if ex != math.floor(ex):
            return "powc", ex, 0.0
    return None


def _ew_ok(node: Node) -> bool:
    if len(node.outputs()) != 1 or node.output(0).element_type.dtype != F32:
        return False
    if node.type_name == "Convert":
        return node.input_values()[0].element_type.dtype in LOADABLE
    if any(s.element_type.dtype != F32 for s in node.input_values()):
        return False
    mode = str(node.attrs.get("auto_broadcast", "numpy")).lower()
    return mode in ("numpy", "none")


def _prelu_slope(node: Node, slope_shape: tuple[int, ...]) -> tuple[int, ...]:
    """PRelu's 1-D slope applies along axis 1 (as its reference kernel does)."""
    x = node.input_shape(0)
    if len(slope_shape) == 1 and len(x) >= 2 and x[1].is_static and slope_shape[0] == x[1].get_length() \
            and (not x[-1].is_static or slope_shape[0] != x[-1].get_length()):
        return (slope_shape[0],) + (1,) * (len(x) - 2)
    return slope_shape


@lowers(*NATIVE_UNARY, *NATIVE_BINARY, "Clamp", "Elu", "Gelu", "Swish", "Power", "Convert")
def lower_eltwise(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.eltwise import eltwise_fits, eltwise_kernel

    if not _ew_ok(node):
        return False
    out_port = node.output(0)
    out_shape = static_shape(out_port)
    rank = len(out_shape)
    # operands: ("tensor", Tensor, logical shape) or ("const", array)
    operands: list[tuple[str, Any, tuple[int, ...]]] = []

    def operand(port: Output, shape_override: tuple[int, ...] | None = None) -> int:
        c = const_of(port)
        shape = shape_override or static_shape(port)
        if c is not None:
            keep = c.dtype if c.dtype in LOADABLE else F32
            operands.append(("const", np.ascontiguousarray(c, keep).reshape(shape), shape))
        else:
            operands.append(("tensor", lowering.tensor(port), shape))
        return len(operands) - 1

    prog: list[tuple] = []  # (op, dst, a, b, imm0, imm1) with operand indices in 'load'

    def emit(n: Node, chain: Output | None) -> bool:
        u = _ew_unary(n)
        if u is not None and (n.type_name != "Power" or chain is None or n.input_values()[0] == chain):
            if chain is None:
                prog.append(("load", 0, operand(n.input_values()[0]), 0, 0.0, 0.0))
            if n.type_name != "Convert":
                prog.append((u[0], 0, 0, 0, u[1], u[2]))
            return True
        if n.type_name not in NATIVE_BINARY or len(n.input_values()) != 2:
            return False
        op = NATIVE_BINARY[n.type_name]
        a, b_ = n.input_values()
        if chain is None:
            prog.append(("load", 0, operand(a), 0, 0.0, 0.0))
            shape = _prelu_slope(n, static_shape(b_)) if op == "prelu" else None
            prog.append(("load", 1, operand(b_, shape), 0, 0.0, 0.0))
            prog.append((op, 0, 0, 1, 0.0, 0.0))
            return True
        first = a == chain
        other = b_ if first else a
        if other == chain:
            prog.append((op, 0, 0, 0, 0.0, 0.0))
            return True
        s = scalar_of(other)
        if s is not None and op in ("add", "mul") or (s is not None and op == "sub" and first):
            imm = -s if op == "sub" else s
            prog.append(("mulc" if op == "mul" else "addc", 0, 0, 0, imm, 0.0))
            return True
        if s is not None and op in ("sub", "div") and not first:
            prog.append(("rsubc" if op == "sub" else "rdivc", 0, 0, 0, s, 0.0))
            return True
        if op == "prelu" and not first:
            return False
        shape = _prelu_slope(n, static_shape(other)) if op == "prelu" else None
        if const_of(other) is None and not lowering.has(other):
            return False
        prog.append(("load", 1, operand(other, shape), 0, 0.0, 0.0))
        prog.append((op, 0, 0, 1, 0.0, 0.0) if first else (op, 0, 1, 0, 0.0, 0.0))
        return True

    if not emit(node, None):
        return False
    last, fused = node, []
    while len(prog) < 20:
        nxt = lowering.sole_consumer(last)
        if nxt is None or not _ew_ok(nxt) or static_shape(nxt.output(0)) != out_shape:
            break
        mark = (len(prog), len(operands))
        if not emit(nxt, last.output(0)):
            del prog[mark[0]:]
            del operands[mark[1]:]
            break
        last = nxt
        fused.append(nxt)
    if len(operands) > 8:
        return False
    prog.append(("store", 0, 0, 0, 0.0, 0.0))
    from ember.devices.cpu.kernels.eltwise import LOAD_FOR

    prog = [(LOAD_FOR[operands[a][1].dtype], dst, a, *rest) if op == "load" else (op, dst, a, *rest)
            for op, dst, a, *rest in prog]
    # layout: NHWC when a full-size input is NHWC and every other tensor input can be viewed so
    tensors = [t for kind, t, _ in operands if kind == "tensor"]
    nhwc = rank == 4 and any(t.layout == NHWC and shp == out_shape for (kind, t, shp) in operands
                             if kind == "tensor")
    ins: list[Tensor] = []
    makers: list[Callable[[np.ndarray], np.ndarray]] = []
    for kind, t, shp in operands:
        full = (1,) * (rank - len(shp)) + tuple(shp)
        if kind == "const":
            arr = t.reshape(full)
            if nhwc:
                arr = np.ascontiguousarray(arr.transpose(0, 2, 3, 1))
            ins.append(lowering.program.const(arr))
            makers.append(lambda a: a)
            continue
        if nhwc:
            if t.layout == NHWC:
                src = lowering.native_input(t, NHWC)
                makers.append(lambda a: a)
            elif full[2] == 1 and full[3] == 1:  # [n, c, 1, 1] has the same memory in both layouts
                src = lowering.native_input(t, PLAIN)
                makers.append(reshaper((full[0], 1, 1, full[1])))
            else:
                src = lowering.native_input(t, NHWC)
                makers.append(lambda a: a)
        else:
            src = lowering.native_input(t, PLAIN)
            makers.append(reshaper(full))
        ins.append(src)
    phys = (out_shape[0], out_shape[2], out_shape[3], out_shape[1]) if nhwc else out_shape
    layout = NHWC if nhwc else PLAIN
    if not eltwise_fits(phys, [mk(np.empty(t.shape, np.float32)).shape for mk, t in zip(makers, ins)]):
        return False
    y: Tensor | None = None
    for (kind, t, _), src in zip(operands, ins):  # in place over a dying full-size input
        if kind == "tensor" and src is t and t.kind == "value" and t.producer is not None and t.producer.native \
                and t.shape == phys and t.layout == layout and len(tensors) >= 1 and _dies_here(lowering, t, node):
            y = lowering.program.view(t, phys, lambda a: a, layout=layout, name=last.friendly_name)
            break
    if y is None:
        y = lowering.value(phys, layout, name=last.friendly_name)
    threads = lowering.threads

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        k = eltwise_kernel(outs[0], [mk(a) for mk, a in zip(makers, arrs)], prog, threads, lowering.isa)
        if k is None:
            raise EmberError(f"ember: internal: elementwise chain at '{node.friendly_name}' does not fit the kernel")
        return [k]

    lowering.program.add(Op(node.friendly_name, "Eltwise:" + "+".join(n.type_name for n in [node, *fused]), ins,
                            [y], native=True, bind=bind))
    lowering.finish(last, y, fused)
    return True


def _dies_here(lowering: Lowering, t: Tensor, node: Node) -> bool:
    """Whether ``node`` is the last reader of ``t`` (so its output may reuse t's memory)."""
    keys = [key for key, v in lowering.ports.items() if v is t]
    if len(keys) != 1 or any(v.base is t for v in lowering.program.tensors if v.kind == "view"):
        return False
    for s in node.input_values():
        if (id(s.node), s.index) == keys[0]:
            return all(c.node is node for c in s.targets) and not lowering.is_result(s)
    return False
