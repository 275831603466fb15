"""Elementwise kernels: ``eltwise_task(ctx, task)`` runs a small program (a fused chain of
unary and binary ops with broadcasting) over blocks of the output; see :func:`eltwise_kernel`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextLayout, f32_bits
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import VectorMath, fmuladd, lane_mask, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel

# =========================================================================== elementwise programs
# A fused elementwise chain runs as a small program over blocks of BLOCK elements: each
# instruction loops over the block in vector registers (scratch rows on the stack), so one
# compiled kernel serves every chain. Inputs broadcast by strides (0 along broadcast dims);
# the output is collapsed to [d0, d1, d2, inner] with contiguous or broadcast inner loads.

BLOCK = 256
MAX_INPUTS = 8
MAX_INSTR = 24
REGS = 4
EW_HEAD = ("y", "d0", "d1", "d2", "inner", "ys0", "ys1", "ys2", "rpt", "nrows", "cb", "ncb", "ninstr")
EW_IN0, EW_IN_WORDS = 16, 5       # per input: ptr, s0, s1, s2, inner stride (0 or 1)
EW_PROG0, EW_INSTR_WORDS = EW_IN0 + MAX_INPUTS * EW_IN_WORDS, 6  # op, dst, a, b, imm0, imm1
#: the head, then the inputs and the program (indexed by register and instruction number in IR)
ELTWISE_CONTEXT = ContextLayout(
    "eltwise",
    (*EW_HEAD, *(f"unused{i}" for i in range(len(EW_HEAD), EW_IN0)),
     *(f"in{i}_{w}" for i in range(MAX_INPUTS) for w in ("ptr", "s0", "s1", "s2", "s3")),
     *(f"op{j}_{w}" for j in range(MAX_INSTR) for w in ("code", "dst", "a", "b", "imm0", "imm1"))),
    pointers=("y", *(f"in{i}_ptr" for i in range(MAX_INPUTS))))
EW_WORDS = ELTWISE_CONTEXT.words
assert ELTWISE_CONTEXT["in0_ptr"] == EW_IN0 and ELTWISE_CONTEXT["op0_code"] == EW_PROG0

UNARY_OPS = ("neg", "abs", "relu", "clamp", "exp", "log", "sqrt", "sigmoid", "tanh", "erf", "gelu_erf",
             "gelu_tanh", "swish", "hswish", "hsigmoid", "elu", "floor", "ceil", "softplus", "mish", "square",
             "mulc", "addc", "rsubc", "rdivc", "powc")
BINARY_OPS = ("add", "sub", "mul", "div", "max", "min", "sqdiff", "prelu")
#: op types that run as one opcode of the program (the elementwise lowering rule reads these
#: tables: a new native unary op is a row here, a name in UNARY_OPS and its IR in ``_unary``)
NATIVE_UNARY = {"Negative": "neg", "Abs": "abs", "ReLU": "relu", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
                "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf", "HSwish": "hswish", "HSigmoid": "hsigmoid",
                "Floor": "floor", "Ceiling": "ceil", "SoftPlus": "softplus", "Mish": "mish"}
NATIVE_BINARY = {"Add": "add", "Subtract": "sub", "Multiply": "mul", "Divide": "div", "Maximum": "max",
                 "Minimum": "min", "SquaredDifference": "sqdiff", "PRelu": "prelu"}
assert set(NATIVE_UNARY.values()) <= set(UNARY_OPS) and set(NATIVE_BINARY.values()) <= set(BINARY_OPS)
OPCODES = {"load": 0, "store": 1, "load_i32": 2, "load_i64": 3, "load_u8": 4}
#: the LOAD opcode for an input's numpy dtype (converted to f32 as it is read)
LOAD_FOR = {np.dtype(np.float32): "load", np.dtype(np.int32): "load_i32", np.dtype(np.int64): "load_i64",
            np.dtype(np.uint8): "load_u8", np.dtype(np.bool_): "load_u8"}
for _i, _n in enumerate(UNARY_OPS):
    OPCODES[_n] = 10 + _i
for _i, _n in enumerate(BINARY_OPS):
    OPCODES[_n] = 60 + _i


def _unary(mth: VectorMath, name: str, x: ir.Value, imm0: ir.Value, imm1: ir.Value) -> ir.Value:
    b = mth.b
    c = mth.c
    if name == "neg":
        return b.fneg(x)
    if name == "abs":
        return mth.abs(x)
    if name == "relu":
        return mth.sel(mth.lt(x, c(0.0)), c(0.0), x)
    if name == "clamp":
        y = mth.sel(mth.lt(x, imm0), imm0, x)
        return mth.sel(mth.gt(y, imm1), imm1, y)
    if name == "exp":
        return mth.exp(x)
    if name == "log":
        return mth.log(x)
    if name == "sqrt":
        return mth.sqrt(x)
    if name == "sigmoid":
        return mth.sigmoid(x)
    if name == "tanh":
        return mth.tanh(x)
    if name == "erf":
        return mth.erf(x)
    if name == "gelu_erf":
        return b.fmul(b.fmul(c(0.5), x), b.fadd(c(1.0), mth.erf(b.fmul(x, c(1 / math.sqrt(2))))))
    if name == "gelu_tanh":
        inner = b.fmul(c(math.sqrt(2 / math.pi)), fmuladd(mth.e, b.fmul(b.fmul(x, x), x), c(0.044715), x))
        return b.fmul(b.fmul(c(0.5), x), b.fadd(c(1.0), mth.tanh(inner)))
    if name == "swish":
        return b.fmul(x, mth.sigmoid(b.fmul(x, imm0)))
    if name in ("hswish", "hsigmoid"):
        r = b.fadd(x, c(3.0))
        r = mth.sel(mth.lt(r, c(0.0)), c(0.0), r)
        r = mth.sel(mth.gt(r, c(6.0)), c(6.0), r)
        return b.fdiv(b.fmul(x, r), c(6.0)) if name == "hswish" else b.fdiv(r, c(6.0))
    if name == "elu":
        return mth.sel(mth.gt(x, c(0.0)), x, b.fmul(imm0, b.fsub(mth.exp(x), c(1.0))))
    if name == "floor":
        return mth.floor(x)
    if name == "ceil":
        return mth.ceil(x)
    if name == "softplus":
        return mth.softplus(x)
    if name == "mish":
        return b.fmul(x, mth.tanh(mth.softplus(x)))
    if name == "square":
        return b.fmul(x, x)
    if name == "mulc":
        return b.fmul(x, imm0)
    if name == "addc":
        return b.fadd(x, imm0)
    if name == "rsubc":
        return b.fsub(imm0, x)
    if name == "rdivc":
        return b.fdiv(imm0, x)
    if name == "powc":  # x ** imm0 for x > 0 (other cases are lowered differently)
        return mth.exp(b.fmul(imm0, mth.log(x)))
    raise AssertionError(name)


def _binary(mth: VectorMath, name: str, x: ir.Value, y: ir.Value) -> ir.Value:
    b = mth.b
    if name == "add":
        return b.fadd(x, y)
    if name == "sub":
        return b.fsub(x, y)
    if name == "mul":
        return b.fmul(x, y)
    if name == "div":
        return b.fdiv(x, y)
    if name == "max":  # OpenVINO's std::max: NaN wins only as the first operand
        return mth.sel(mth.lt(x, y), y, x)
    if name == "min":
        return mth.sel(mth.lt(y, x), y, x)
    if name == "sqdiff":
        d = b.fsub(x, y)
        return b.fmul(d, d)
    if name == "prelu":
        return mth.sel(mth.lt(x, mth.c(0.0)), b.fmul(x, y), x)
    raise AssertionError(name)


def _emit_eltwise(m: ir.Module, prefix: str, lanes: int) -> None:
    fn = Emitter.function(m, f"{prefix}_eltwise_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    vt = vec(F32, lanes)
    nvec = BLOCK // lanes
    mth = VectorMath(e, lanes)
    h = {k: e.field(ctx, ELTWISE_CONTEXT[k]) for k in EW_HEAD}
    regs = e.var(vt, count=REGS * nvec)
    rb, cbk = b.sdiv(task, h["ncb"]), b.srem(task, h["ncb"])
    r0 = b.mul(rb, h["rpt"])
    r1 = e.min(h["nrows"], b.add(r0, h["rpt"]))
    c0 = b.mul(cbk, h["cb"])
    c1 = e.min(h["inner"], b.add(c0, h["cb"]))
    ninstr = h["ninstr"]
    y = b.inttoptr(h["y"], PTR)

    def reg(r: ir.Value, v: int | ir.Value) -> ir.Value:
        return e.gep(vt, regs, b.add(b.mul(r, c64(nvec)), v if isinstance(v, ir.Value) else c64(v)))

    def word(i: ir.Value) -> ir.Value:
        return e.load(I64, e.gep(I64, ctx, i))

    with e.loop(r0, r1, name="row") as row:
        i2 = b.srem(row, h["d2"])
        t = b.sdiv(row, h["d2"])
        i1, i0 = b.srem(t, h["d1"]), b.sdiv(t, h["d1"])
        yrow = e.gep(F32, y, b.add(b.add(b.mul(i0, h["ys0"]), b.mul(i1, h["ys1"])), b.mul(i2, h["ys2"])))
        with e.loop(c0, c1, BLOCK, name="blk") as col:
            n = e.min(c64(BLOCK), b.sub(c1, col))
            nv = e.cdiv(n, lanes)
            tail_mask = lane_mask(e, b.sub(n, b.mul(b.sub(nv, c64(1)), c64(lanes))), lanes)
            with e.loop(0, ninstr, name="ins") as ins:
                base = b.add(c64(EW_PROG0), b.mul(ins, c64(EW_INSTR_WORDS)))
                op = word(base)
                dst = word(b.add(base, c64(1)))
                ra = word(b.add(base, c64(2)))
                rb_ = word(b.add(base, c64(3)))
                imm0 = e.splat(b.bitcast(b.trunc(word(b.add(base, c64(4))), I32), F32), lanes)
                imm1 = e.splat(b.bitcast(b.trunc(word(b.add(base, c64(5))), I32), F32), lanes)
                done = fn.append_basic_block("op.done")
                sw = b.switch(op, done)

                def case(code: int, body) -> None:  # noqa: ANN001
                    blk = fn.append_basic_block(f"op.{code}")
                    sw.add_case(c64(code), blk)
                    b.position_at_end(blk)
                    body()
                    b.branch(done)

                def load_input(etype: ir.Type, kind: str) -> Any:
                    """LOAD of an input of element type ``etype`` (converted to f32)."""
                    ivt = vec(etype, lanes)

                    def convert(v: ir.Value) -> ir.Value:
                        if kind == "f":
                            return v
                        return b.sitofp(v, vt) if kind == "i" else b.uitofp(v, vt)

                    def vload(p: ir.Value, mask: ir.Value | None) -> ir.Value:
                        if mask is None:
                            return e.load(ivt, p, align=1)
                        name = f"llvm.masked.load.v{lanes}{'f32' if kind == 'f' else f'i{etype.width}'}.p0"
                        return e.call(name, ivt, [p, c32(1), mask, ir.Constant(ivt, None)])

                    def body() -> None:
                        ib = b.add(c64(EW_IN0), b.mul(ra, c64(EW_IN_WORDS)))
                        ptr = b.inttoptr(word(ib), PTR)
                        off = b.add(b.add(b.mul(i0, word(b.add(ib, c64(1)))), b.mul(i1, word(b.add(ib, c64(2))))),
                                    b.mul(i2, word(b.add(ib, c64(3)))))
                        src = e.gep(etype, ptr, off)
                        si = word(b.add(ib, c64(4)))
                        with b.if_else(b.icmp_signed("==", si, c64(0))) as (bcast, contig):
                            with bcast:
                                x = e.load(etype, src)
                                x = x if kind == "f" else (b.sitofp(x, F32) if kind == "i" else b.uitofp(x, F32))
                                v = e.splat(x, lanes)
                                with e.loop(0, nv, name="lv") as k:
                                    b.store(v, reg(dst, k))
                            with contig:
                                p = e.gep(etype, src, col)
                                last = b.sub(nv, c64(1))
                                with e.loop(0, last, name="lc") as k:
                                    b.store(convert(vload(e.gep(etype, p, b.mul(k, c64(lanes))), None)), reg(dst, k))
                                b.store(convert(vload(e.gep(etype, p, b.mul(last, c64(lanes))), tail_mask)),
                                        reg(dst, last))
                    return body

                def store() -> None:
                    p = e.gep(F32, yrow, col)
                    last = b.sub(nv, c64(1))
                    with e.loop(0, last, name="sc") as k:
                        b.store(e.load(vt, reg(ra, k)), e.gep(F32, p, b.mul(k, c64(lanes))), align=4)
                    masked_store(e, e.load(vt, reg(ra, last)), e.gep(F32, p, b.mul(last, c64(lanes))), tail_mask)

                def unary(name: str) -> Any:
                    def body() -> None:
                        with e.loop(0, nv, name="u") as k:
                            b.store(_unary(mth, name, e.load(vt, reg(ra, k)), imm0, imm1), reg(dst, k))
                    return body

                def binary(name: str) -> Any:
                    def body() -> None:
                        with e.loop(0, nv, name="bi") as k:
                            b.store(_binary(mth, name, e.load(vt, reg(ra, k)), e.load(vt, reg(rb_, k))),
                                    reg(dst, k))
                    return body

                case(OPCODES["load"], load_input(F32, "f"))
                case(OPCODES["load_i32"], load_input(I32, "i"))
                case(OPCODES["load_i64"], load_input(I64, "i"))
                case(OPCODES["load_u8"], load_input(ir.IntType(8), "u"))
                case(OPCODES["store"], store)
                for name in UNARY_OPS:
                    case(OPCODES[name], unary(name))
                for name in BINARY_OPS:
                    case(OPCODES[name], binary(name))
                b.position_at_end(done)
    b.ret_void()


def _build_eltwise(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_eltwise(m, prefix, isa.f32_lanes)
    return m


@functools.cache
def _eltwise_library(isa: Isa) -> jit.Library:
    return jit.load(f"eltwise|{isa.level}|b{BLOCK}|r{REGS}", isa, lambda p: _build_eltwise(p, isa))


def _collapse_operands(shape: tuple[int, ...], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Merge adjacent dims where every operand is contiguous across them; drop size-1 dims."""
    dims: list[int] = []
    st: list[list[int]] = [[] for _ in strides]
    for i, d in enumerate(shape):
        if d == 1:
            continue
        if dims and all(s[-1] == o[i] * d for s, o in zip(st, strides)):
            dims[-1] *= d
            for s, o in zip(st, strides):
                s[-1] = o[i]
            continue
        dims.append(d)
        for s, o in zip(st, strides):
            s.append(o[i])
    return dims, st


def eltwise_fits(out_shape: tuple[int, ...], input_shapes: list[tuple[int, ...]]) -> bool:
    """Whether contiguous inputs of these shapes, broadcast to ``out_shape``, fit the kernel."""
    if len(input_shapes) > MAX_INPUTS:
        return False
    def contiguous(shape: tuple[int, ...]) -> list[int]:
        out: list[int] = []
        acc = 1
        for d in reversed(shape):
            out.append(acc if d != 1 else 0)
            acc *= d
        return list(reversed(out))

    rank = len(out_shape)
    strides = [contiguous(out_shape)]
    for shp in input_shapes:
        full = (1,) * (rank - len(shp)) + tuple(shp)
        if any(d not in (1, o) for d, o in zip(full, out_shape)):
            return False
        full_strides = contiguous(full)
        strides.append([0 if d == 1 else s for d, s in zip(full, full_strides)])
    dims, st = _collapse_operands(out_shape, strides)
    return len(dims) <= 4 and (not dims or all(s[-1] in (0, 1) for s in st))


def eltwise_kernel(y: np.ndarray, inputs: list[np.ndarray], program: list[tuple], threads: int,
                   isa: Isa | None = None) -> BoundKernel | None:
    """A bound elementwise program writing ``y`` (float32, contiguous innermost axis).

    ``inputs`` are arrays broadcastable to ``y`` (float32, or int32/int64/uint8/bool read
    with ``load_i32``/``load_i64``/``load_u8``); ``program`` is a list of ``(op, dst, a, b,
    imm0, imm1)`` with ``op`` a name in :data:`OPCODES` (``load``: register ``dst`` = input
    ``a``; ``store``: ``y`` = register ``a``). None when the shapes do not fit
    the kernel (more than 4 collapsed dims, an input whose innermost stride is not 0 or 1)."""
    if len(inputs) > MAX_INPUTS or len(program) > MAX_INSTR:
        return None
    isa = isa or host_isa()
    if y.size == 0:  # nothing to compute (numpy gives empty arrays arbitrary strides)
        return BoundKernel(_eltwise_library(isa).address("eltwise_task"), ELTWISE_CONTEXT.new(), 0,
                           threads, (y, *inputs), layout=ELTWISE_CONTEXT)
    views = [np.broadcast_to(a, y.shape) for a in inputs]
    strides = [[s // 4 for s in y.strides]] + [[s // v.itemsize for s in v.strides] for v in views]
    dims, st = _collapse_operands(y.shape, strides)
    if not dims:
        dims, st = [1], [[1] for _ in strides]
    if len(dims) > 4 or st[0][-1] != 1 or any(s[-1] not in (0, 1) for s in st[1:]):
        return None
    pad = 4 - len(dims)
    dims = [1] * pad + dims
    st = [[0] * pad + s for s in st]
    ctx = ELTWISE_CONTEXT.new()
    inner = dims[3]
    nrows = dims[0] * dims[1] * dims[2]
    target = 1 << 14
    if inner >= target:
        cb, rpt = target, 1
    else:
        cb, rpt = max(inner, 1), max(1, target // max(inner, 1))
    ncb = -(-inner // cb)
    want = 4 * threads
    if -(-nrows // rpt) * ncb < want and nrows * inner > 4096:
        if nrows >= want:
            rpt = -(-nrows // want)
        else:
            rpt = 1
            per = -(-inner * nrows // want)
            cb = max(BLOCK, -(-per // BLOCK) * BLOCK)
            ncb = -(-inner // cb)
    head = dict(y=y.ctypes.data, d0=dims[0], d1=dims[1], d2=dims[2], inner=inner, ys0=st[0][0], ys1=st[0][1],
                ys2=st[0][2], rpt=rpt, nrows=nrows, cb=cb, ncb=ncb, ninstr=len(program))
    for k, v in head.items():
        ctx[ELTWISE_CONTEXT[k]] = v
    for i, view in enumerate(views):
        base = EW_IN0 + i * EW_IN_WORDS
        ctx[base:base + EW_IN_WORDS] = [view.ctypes.data, st[i + 1][0], st[i + 1][1], st[i + 1][2], st[i + 1][3]]
    for j, (op, dst, a, b_, imm0, imm1) in enumerate(program):
        base = EW_PROG0 + j * EW_INSTR_WORDS
        ctx[base:base + EW_INSTR_WORDS] = [OPCODES[op], dst, a, b_, f32_bits(imm0), f32_bits(imm1)]
    n_tasks = -(-nrows // rpt) * ncb if y.size else 0
    return BoundKernel(_eltwise_library(isa).address("eltwise_task"), ctx, n_tasks, threads, (y, *inputs), layout=ELTWISE_CONTEXT)
