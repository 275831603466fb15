"""Lowering rule for fused elementwise chains (one program per chain, see
:mod:`ember.devices.cpu.kernels.eltwise`).

A chain runs in one register type: f32, f64, or i64 (int32 values too, wrapped to 32 bits after
each arithmetic op). Booleans (comparisons, logical ops, IsNaN...) are 0/1 in any register type,
so ``Select(Less(a, b), x, y)`` is one program. A Convert fuses as the load of a chain (its input
converted as it is read), inside a chain when the register type stays, or as its store.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ember.devices.cpu.kernels.eltwise import (
    BF16,
    LOAD_FOR,
    NATIVE_BINARY,
    NATIVE_UNARY,
    ROUND_FOR,
    STORE_FOR,
    SUPPORTED,
)
from ember.devices.cpu.lowering.driver import (
    F32,
    Lowering,
    const_of,
    lowers,
    reshaper,
    scalar_of,
    shape_or_none,
    static_shape,
)
from ember.devices.cpu.lowering.movement import UPSAMPLED, concat_slot
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op, Tensor
from ember.errors import EmberError
from ember.graph.node import Node, Output
from ember.graph.types import Type

LOADABLE = set(LOAD_FOR)
BOOL = np.dtype(np.bool_)
I32 = np.dtype(np.int32)
#: the register type a value of each dtype computes in (bool fits any; u8 only loads and stores)
KIND = {F32: "f32", np.dtype(np.float64): "f64", I32: "i64", np.dtype(np.int64): "i64", np.dtype(np.int16): "i64",
        np.dtype(np.int8): "i64", np.dtype(np.uint8): "i64", np.dtype(np.float16): "f32", BF16: "f32"}
#: the op that wraps an i64 register to a narrower integer type
WRAP = {I32: "wrap32", np.dtype(np.int16): "wrap16", np.dtype(np.int8): "wrap8", np.dtype(np.uint8): "wrapu8"}
#: ops after which an int32 result held in i64 registers wraps to 32 bits
_WRAPS = frozenset({"add", "sub", "mul", "div", "pydiv", "neg", "abs", "sqdiff", "square", "bnot", "ipow32"})
#: bitwise ops on booleans are the logical ones
_BITWISE_BOOL = {"band": "and", "bor": "or", "bxor": "xor", "bnot": "not"}
#: ops that take boolean operands as they are (0/1 in any register type)
_BOOL_OK = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "and", "or", "xor", "not", "select"})
#: ops whose f32 result needs no rounding to f16/bf16 when their operands are f16/bf16 values
_EXACT = frozenset({"", "neg", "abs", "relu", "max", "min", "select", "sign", "floor", "ceil", "round_even",
                    "round_away", "round_f16", "round_bf16"})
_MAX_PROGRAM = 20


@dataclass
class _Spec:
    """How one node runs in a program: ``op`` over the ``data`` inputs (``""``: nothing to do)."""

    op: str
    data: tuple[int, ...]
    kind: str | None   # register type it needs (None: any)
    imm: tuple[float, float] = (0.0, 0.0)
    last: bool = False  # a Convert the chain's store performs: the chain ends here


def _unary_op(node: Node, kind: str | None) -> tuple[str, float, float] | None:
    """(op, imm0, imm1) of a one-input node, or None."""
    t = node.type_name
    ins = node.input_values()
    if t in NATIVE_UNARY and len(ins) == 1:
        return NATIVE_UNARY[t], 0.0, 0.0
    if t == "Clamp":
        lo, hi = float(node.attrs["min"]), float(node.attrs["max"])
        if kind == "i64":  # integer clamps round the bounds inwards, within the type
            info = np.iinfo(ins[0].element_type.dtype)
            lo, hi = max(math.ceil(lo), info.min), min(math.floor(hi), info.max)
        return "clamp", lo, hi
    if t == "Elu":
        return "elu", float(node.attrs["alpha"]), 0.0
    if t == "Gelu":
        mode = str(node.attrs.get("approximation_mode", "ERF")).upper()
        return ("gelu_tanh" if mode == "TANH" else "gelu_erf"), 0.0, 0.0
    if t == "Swish":
        beta = 1.0 if len(ins) == 1 else scalar_of(ins[1])
        return None if beta is None else ("swish", beta, 0.0)
    if t in ("Selu", "HardSigmoid"):
        a, b = scalar_of(ins[1]), scalar_of(ins[2])
        return None if a is None or b is None else ("selu" if t == "Selu" else "hardsigmoid", a, b)
    if t == "Round":
        mode = str(node.attrs.get("mode", "half_to_even")).lower()
        return ("round_even" if mode == "half_to_even" else "round_away"), 0.0, 0.0
    if t == "IsInf":
        pos, neg = bool(node.attrs.get("detect_positive", True)), bool(node.attrs.get("detect_negative", True))
        if not (pos or neg):
            return None
        return ("isinf" if pos and neg else "isinf_pos" if pos else "isinf_neg"), 0.0, 0.0
    if t == "Power":
        ex = scalar_of(ins[1])
        if ex is None or kind != "f32" or ins[1].partial_shape.rank.get_length() > len(node.output(0).partial_shape):
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


#: element types whose numpy dtype is what they mean (sub-byte and nf4 unpack into u8/i8 codes)
_PLAIN_TYPES = frozenset({Type.f32, Type.f64, Type.i32, Type.i64, Type.u8, Type.i8, Type.i16, Type.boolean, Type.f16,
                          Type.bf16})


def _plain(port: Output) -> bool:
    return port.element_type in _PLAIN_TYPES


def _spec(node: Node, chain: Output | None, kind: str | None) -> _Spec | None:
    """How ``node`` runs in a chain of register type ``kind`` (None: it starts the chain)."""
    if len(node.outputs()) != 1 or not all(_plain(p) for p in (*node.input_values(), node.output(0))):
        return None
    t = node.type_name
    ins = node.input_values()
    out = node.output(0).element_type.dtype
    if t == "Convert":
        src = ins[0].element_type.dtype
        if src not in LOADABLE:
            return None
        ks, kd = KIND.get(src), KIND.get(out)
        to_bool = out == BOOL
        if chain is None:
            if ks in ("f32", "f64") and out in WRAP:
                return _Spec("", (0,), ks, last=True)  # f32 -> i32/i16/i8/u8: the store saturates
            k = kd or ks or "f32"
            return _Spec("tobool" if to_bool else WRAP.get(out, "") if k == "i64" else ROUND_FOR.get(out, ""),
                         (0,), k)
        if to_bool:
            return _Spec("tobool", (0,), kind)
        if kd == kind and not (kind == "i64" and src.kind == "f"):
            return _Spec(WRAP.get(out, "") if kind == "i64" else ROUND_FOR.get(out, ""), (0,), kind)
        return _Spec("", (0,), kind, last=True)
    if t == "Select":
        if ins[0].element_type.dtype != BOOL or str(node.attrs.get("auto_broadcast", "numpy")).lower() not in (
                "numpy", "none"):
            return None
        dt = ins[1].element_type.dtype
        if dt not in LOADABLE or (dt != BOOL and dt not in KIND):
            return None
        return _Spec("select", (0, 1, 2), KIND.get(dt))
    if t in NATIVE_BINARY and len(ins) == 2:
        op = NATIVE_BINARY[t]
        if str(node.attrs.get("auto_broadcast", "numpy")).lower() not in ("numpy", "none"):
            return None
        bdt = ins[0].element_type.dtype
        if bdt == BOOL:
            op = _BITWISE_BOOL.get(op, op)
            return _Spec(op, (0, 1), None) if op in _BOOL_OK else None
        if bdt not in KIND or ins[1].element_type.dtype != bdt:
            return None
        k = KIND[bdt]
        if op == "div" and k == "i64" and node.attrs.get("m_pythondiv", True):
            op = "pydiv"
        return _Spec(op, (0, 1), k)
    udt = ins[0].element_type.dtype if ins else None
    if udt == BOOL and t in ("LogicalNot", "BitwiseNot"):
        return _Spec("not", (0,), None)
    if udt not in KIND:
        return None
    if KIND[udt] == "i64" and t in ("Floor", "Ceiling", "Round"):  # integers are already whole
        return _Spec("", (0,), "i64")
    u = _unary_op(node, KIND[udt])
    if u is None:
        if t == "Power" and ins[1].element_type.dtype == udt and str(
                node.attrs.get("auto_broadcast", "numpy")).lower() in ("numpy", "none"):
            if KIND[udt] == "i64":  # in f64, truncated, the type's minimum when out of range
                return _Spec("ipow32" if udt.itemsize <= 4 else "ipow64", (0, 1), "i64")
            return _Spec("pow", (0, 1), KIND[udt])
        return None
    return _Spec(u[0], (0,), KIND[udt], (u[1], u[2]))


def _prelu_slope(node: Node, slope_shape: tuple[int, ...]) -> tuple[int, ...]:
    """PRelu's 1-D slope applies along axis 1 (as its reference kernel does)."""
    x = node.input_shape(0)
    if len(slope_shape) == 1 and len(x) >= 2 and x[1].is_static and slope_shape[0] == x[1].get_length() \
            and (not x[-1].is_static or slope_shape[0] != x[-1].get_length()):
        return (slope_shape[0],) + (1,) * (len(x) - 2)
    return slope_shape


_TYPES = (*NATIVE_UNARY, *NATIVE_BINARY, "Clamp", "Elu", "Gelu", "Swish", "Power", "Convert", "Select", "Selu",
          "HardSigmoid", "Round", "IsInf")


@lowers(*_TYPES)
def lower_eltwise(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.eltwise import eltwise_fits, eltwise_kernels, views_fit

    if _fold_constant(lowering, node):
        return True
    out_port = node.output(0)
    out_shape = static_shape(out_port)
    rank = len(out_shape)
    # operands: ("tensor", Tensor, logical shape) or ("const", array)
    operands: list[tuple[str, Any, tuple[int, ...]]] = []
    state: dict[str, Any] = {"kind": None, "last": False}

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
        spec = _spec(n, chain, state["kind"])
        if spec is None or not _halves_ok(lowering, n):
            return False
        kind = state["kind"] if chain is not None else (spec.kind or "f32")
        if spec.kind is not None and spec.kind != kind:
            return False
        if spec.op and spec.op != "select" and spec.op not in SUPPORTED[kind]:
            return False
        ins = n.input_values()
        data = [ins[i] for i in spec.data]
        if chain is not None and chain not in data:
            return False
        if any(p.element_type.dtype not in LOADABLE for p in data):
            return False
        state["kind"] = kind
        op = spec.op
        # f32 chains take scalar constants as immediates (x / s stays a division, as REFERENCE's)
        if kind == "f32" and chain is not None and op in ("add", "sub", "mul", "div"):
            first = data[0] == chain
            other = data[1] if first else data[0]
            s = scalar_of(other) if other != chain else None
            if s is not None and (op in ("add", "mul") or (op == "sub" and first)):
                prog.append(("mulc" if op == "mul" else "addc", 0, 0, 0, -s if op == "sub" else s, 0.0))
                return _after(n, op, kind)
            if s is not None and not first:
                prog.append(("rsubc" if op == "sub" else "rdivc", 0, 0, 0, s, 0.0))
                return _after(n, op, kind)
        regs: dict[Any, int] = {}
        if chain is not None:
            regs[chain] = 0
        for i, p in enumerate(data):
            if p in regs:
                continue
            if const_of(p) is None and not lowering.has(p):
                return False
            r = len(regs) if chain is not None else i
            if n.type_name == "PRelu" and i == 1:
                idx = operand(p, _prelu_slope(n, static_shape(p)))
            else:
                idx = operand(p)
            prog.append(("load", r, idx, 0, 0.0, 0.0))
            regs[p] = r
        rr = [regs[p] for p in data]
        if op == "select":
            prog.append(("select", 0, rr[0], rr[1], rr[2], 0.0))
        elif op and len(rr) == 2:
            prog.append((op, 0, rr[0], rr[1], 0.0, 0.0))
        elif op:
            prog.append((op, 0, rr[0], 0, spec.imm[0], spec.imm[1]))
        if spec.last:
            state["last"] = True
        return _after(n, op, kind)

    def _after(n: Node, op: str, kind: str) -> bool:
        out = n.output(0).element_type.dtype
        wrap = WRAP.get(out)
        if kind == "i64" and wrap is not None and op in _WRAPS:
            prog.append((wrap, 0, 0, 0, 0.0, 0.0))
        if kind == "f32" and out in ROUND_FOR and op not in _EXACT:  # f16/bf16 round after each op, as numpy
            prog.append((ROUND_FOR[out], 0, 0, 0, 0.0, 0.0))
        return True

    if not emit(node, None):
        return False
    last, fused = node, []
    while len(prog) < _MAX_PROGRAM and not state["last"]:
        nxt = lowering.sole_consumer(last)
        if nxt is None or nxt.get_output_size() != 1 or shape_or_none(nxt.output(0)) != out_shape:
            break
        mark = (len(prog), len(operands), dict(state))
        # (an operand past the kernel's 8 ends the chain here: past it, the whole rule gave up)
        if not emit(nxt, last.output(0)) or len(prog) > _MAX_PROGRAM or len(operands) > 8:
            del prog[mark[0]:]
            del operands[mark[1]:]
            state.clear()
            state.update(mark[2])
            break
        last = nxt
        fused.append(nxt)
    if len(operands) > 8 or not operands:
        return False
    out_dtype = last.output(0).element_type.dtype
    prog.append((STORE_FOR[out_dtype], 0, 0, 0, 0.0, 0.0))
    prog = [(LOAD_FOR[operands[a][1].dtype], dst, a, *rest) if op == "load" else (op, dst, a, *rest)
            for op, dst, a, *rest in prog]
    # layout: NHWC when a full-size input is NHWC and every other tensor input can be viewed so
    tensors = [t for kind, t, _ in operands if kind == "tensor"]
    nhwc = rank == 4 and any(t.layout == NHWC and shp == out_shape for (kind, t, shp) in operands
                             if kind == "tensor")
    ins: list[Tensor] = []
    makers: list[Callable[[np.ndarray], np.ndarray]] = []
    ups, factors = _upsampled_operands(lowering, operands, out_shape) if nhwc else ({}, (1, 1))
    for i, (kind, t, shp) in enumerate(operands):
        full = (1,) * (rank - len(shp)) + tuple(shp)
        if i in ups:  # a nearest upsampling's output: its source, each pixel read fy x fx times
            ins.append(lowering.native_input(ups[i], NHWC))
            makers.append(lambda a: a)
            continue
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
            makers.append(_left_padded(rank))  # = reshaper(full), at any input shape (shape-generic plans)
        ins.append(src)
    phys = (out_shape[0], out_shape[2], out_shape[3], out_shape[1]) if nhwc else out_shape
    layout = NHWC if nhwc else PLAIN
    out_view: Callable[[np.ndarray], np.ndarray] = lambda a: a  # noqa: E731
    if ups:
        fy, fx = factors
        out_view = _split_pixels(fy, fx, False)
        makers = [_then(mk, _split_pixels(fy, fx, i in ups)) for i, mk in enumerate(makers)]
        if not views_fit(out_view(np.empty(phys, out_dtype)), [mk(np.empty(t.shape, t.dtype))
                                                               for mk, t in zip(makers, ins)]):
            return False
    elif not eltwise_fits(phys, [mk(np.empty(t.shape, np.float32)).shape for mk, t in zip(makers, ins)]):
        return False
    y: Tensor | None = concat_slot(lowering, last.output(0), out_dtype) if nhwc else None
    for (kind, t, _), src in zip(operands, ins):  # in place over a dying full-size input
        if y is not None:
            break
        if kind == "tensor" and src is t and t.kind == "value" and t.producer is not None and t.producer.native \
                and t.shape == phys and t.layout == layout and t.dtype == out_dtype and len(tensors) >= 1 \
                and _dies_here(lowering, t, node):
            y = lowering.program.view(t, phys, lambda a: a, layout=layout, name=last.friendly_name)
            break
    if y is None:
        y = lowering.value(phys, layout, out_dtype, name=last.friendly_name)
    threads = lowering.threads
    rtype = state["kind"]
    constant = [t.kind == "const" for t in ins]
    name = node.friendly_name  # (the binder keeps no graph node: a cached plan does not keep its graph alive)

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        ks = eltwise_kernels(out_view(outs[0]), [mk(a) for mk, a in zip(makers, arrs)], prog, threads, lowering.isa,
                             rtype, constant)
        if ks is None:
            raise EmberError(f"ember: internal: elementwise chain at '{name}' does not fit the kernel")
        return ks

    lowering.program.add(Op(node.friendly_name, "Eltwise:" + "+".join(n.type_name for n in [node, *fused]), ins,
                            [y], native=True, bind=bind))
    lowering.finish(last, y, fused)
    return True


def _left_padded(rank: int) -> Callable[[np.ndarray], np.ndarray]:
    """A view maker: the array with size-1 axes in front up to ``rank`` (numpy broadcasting),
    sized by the array it is given (a shape-generic plan binds its ops at other input shapes)."""
    return lambda a: a.reshape((1,) * (rank - a.ndim) + a.shape)


_FOLD_MAX = 1 << 24
_F16 = np.dtype(np.float16)


def _upsampled_operands(lowering: Lowering, operands: list[tuple[str, Any, tuple[int, ...]]],
                        out_shape: tuple[int, ...]) -> tuple[dict[int, Tensor], tuple[int, int]]:
    """{operand index: source} of the full-size operands that are nearest upsamplings by the
    same whole factors (``movement.UPSAMPLED``): the program reads their sources instead (an
    FPN's ``x + up(y)`` without the upsampled map in memory), and the factors (fy, fx)."""
    known = UPSAMPLED.get(lowering, {})
    found: dict[int, Tensor] = {}
    factors: tuple[int, int] | None = None
    for i, (kind, t, shp) in enumerate(operands):
        if kind != "tensor" or tuple(shp) != tuple(out_shape) or t.id not in known:
            continue
        src, fy, fx = known[t.id]
        if factors in (None, (fy, fx)) and src.dtype == t.dtype:
            factors = (fy, fx)
            found[i] = src
    return found, factors or (1, 1)


def _then(first: Callable[[np.ndarray], np.ndarray],
          second: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: second(first(a))


def _split_pixels(fy: int, fx: int, source: bool) -> Callable[[np.ndarray], np.ndarray]:
    """An NHWC array (or one broadcast along H or W) as ``[fy, fx, n, h, w, c]`` (output row
    ``y * fy + i``, column ``x * fx + j`` at ``[i, j, :, y, x]``); ``source``: the small map
    of an upsampling, the same pixel for every ``i, j`` (stride 0). A view, never a copy."""
    as_strided = np.lib.stride_tricks.as_strided

    def split(a: np.ndarray) -> np.ndarray:
        n, h, w, c = a.shape
        s0, s1, s2, s3 = a.strides
        if source:
            v = as_strided(a, (n, h, 1, w, 1, c), (s0, s1, 0, s2, 0, s3))
        else:
            gy, gx = (fy if h > 1 else 1), (fx if w > 1 else 1)
            v = as_strided(a, (n, h // gy, gy, w // gx, gx, c), (s0, s1 * gy, s1, s2 * gx, s2, s3))
        return v.transpose(2, 4, 0, 1, 3, 5)

    return split


def _halves_ok(lowering: Lowering, node: Node) -> bool:
    """f16 tensors convert with F16C on x86 (without it LLVM would call a runtime helper)."""
    from ember.devices.cpu.kernels.eltwise import halves_ok

    if not halves_ok(lowering.isa):
        return all(p.element_type.dtype != _F16 for p in (*node.input_values(), *node.outputs()))
    return True


def _fold_constant(lowering: Lowering, node: Node) -> bool:
    """An elementwise node of constants only (an FP16-compressed weight's Convert the
    optimizer kept, say) is computed once here: its value becomes a constant of the plan."""
    tensors = [lowering.tensor(p) if lowering.has(p) else None for p in node.input_values()]
    maybe = [t.data if t is not None and t.kind == "const" else const_of(p)
             for t, p in zip(tensors, node.input_values())]
    values = [v for v in maybe if v is not None]
    if not values or len(values) != len(maybe) or len(node.outputs()) != 1:
        return False
    if not node.output(0).partial_shape.is_static or node.output(0).element_type.name in ("string", "sequence"):
        return False
    if int(np.prod(static_shape(node.output(0)))) > _FOLD_MAX:
        return False
    out = np.asarray(node.evaluate(values)[0])
    lowering.bind_port(node.output(0), lowering.program.const(np.ascontiguousarray(out), node.friendly_name))
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
