"""CumSum along an axis of f32, f64 or integer data of any width (``exclusive``, ``reverse``;
integers wrap around as numpy's do in their own type).

The data is ``[outer, n, inner]``; a task is a block of ``(outer, inner-run)`` columns. With
``inner`` of a vector or more, the running sums of a run of up to :data:`MAX_WIDTH` columns stay
in a buffer while the rows are walked in order (contiguous vector loads and stores); a short
``inner`` (an innermost axis) runs one scalar sum per column. f32 sums accumulate in f32 (the
reference kernel in f64), f64 sums in f64.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I32, I64, PTR, VOID, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import lane_mask
from ember.devices.cpu.runtime.kernel_call import BoundKernel

F64 = ir.DoubleType()
DTYPES = {"float32": F32, "float64": F64, "int32": I32, "int64": I64, "uint32": I32, "uint64": I64,
          "int8": ir.IntType(8), "uint8": ir.IntType(8), "int16": ir.IntType(16), "uint16": ir.IntType(16)}
#: the widest run of columns one task sums (its running sums stay in a stack buffer)
MAX_WIDTH = 512

CUMSUM_CONTEXT = ContextLayout(
    "cumsum", ("src", "dst", "n", "inner", "blocks", "width", "cpt", "columns"), pointers=("src", "dst"))


def _emit(m: ir.Module, prefix: str, lanes32: int, dtype: str, exclusive: bool, reverse: bool) -> None:
    fn = ContextEmitter.function(m, f"{prefix}_cumsum_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, CUMSUM_CONTEXT)
    b = e.b
    task = fn.args[1]
    t = DTYPES[dtype]
    fl = t in (F32, F64)
    size = {F32: 4, F64: 8}[t] if fl else t.width // 8
    lanes = lanes32 * 4 // size
    vt = vec(t, lanes)
    tn = {F32: "f32", F64: "f64"}[t] if fl else f"i{t.width}"
    src, dst = e.arg("src", PTR), e.arg("dst", PTR)
    n, inner, width = e.arg("n"), e.arg("inner"), e.arg("width")
    blocks = e.arg("blocks")
    c0 = b.mul(task, e.arg("cpt"))
    c1 = e.min(e.arg("columns"), b.add(c0, e.arg("cpt")))
    zero = c64(0)
    acc_buf = b.inttoptr(b.ptrtoint(e.var(t, count=MAX_WIDTH + lanes), I64), PTR)  # an opaque pointer

    def add(a: ir.Value, x: ir.Value) -> ir.Value:
        return b.fadd(a, x) if fl else b.add(a, x)

    def step_index(s: ir.Value) -> ir.Value:
        return b.sub(b.sub(n, c64(1)), s) if reverse else s

    with e.loop(c0, c1, name="col") as col:
        o, blk = b.sdiv(col, blocks), b.srem(col, blocks)
        start = b.mul(blk, width)
        cnt = e.min(width, b.sub(inner, start))
        base = b.add(b.mul(b.mul(o, n), inner), start)
        with b.if_else(b.icmp_signed(">=", inner, c64(lanes))) as (vector, scalar):
            with vector:  # the running sums of the run live in a buffer; rows are walked in order
                with e.loop(zero, cnt, lanes, name="z") as v:
                    b.store(ir.Constant(vt, None), e.gep(t, acc_buf, v), align=size)
                with e.loop(zero, n, name="s") as s:
                    row = b.add(base, b.mul(step_index(s), inner))
                    with e.loop(zero, cnt, lanes, name="v") as v:
                        mask = lane_mask(e, b.sub(cnt, v), lanes)
                        at = b.add(row, v)
                        x = e.call(f"llvm.masked.load.v{lanes}{tn}.p0", vt,
                                   [e.gep(t, src, at), c32(size), mask, ir.Constant(vt, None)])
                        pa = e.gep(t, acc_buf, v)
                        a = e.load(vt, pa, align=size)
                        nxt = add(a, x)
                        e.call(f"llvm.masked.store.v{lanes}{tn}.p0", VOID,
                               [a if exclusive else nxt, e.gep(t, dst, at), c32(size), mask])
                        b.store(nxt, pa, align=size)
            with scalar:
                with e.loop(zero, cnt, name="c") as c:
                    acc = e.var(t, ir.Constant(t, None))
                    b.store(ir.Constant(t, 0.0 if fl else 0), acc)
                    with e.loop(zero, n, name="s") as s:
                        at = b.add(b.add(base, b.mul(step_index(s), inner)), c)
                        a = e.load(t, acc)
                        nxt = add(a, e.load(t, e.gep(t, src, at)))
                        b.store(a if exclusive else nxt, e.gep(t, dst, at))
                        b.store(nxt, acc)
    b.ret_void()


@functools.cache
def _library(isa: Isa, dtype: str, exclusive: bool, reverse: bool) -> jit.Library:
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit(m, prefix, isa.f32_lanes, dtype, exclusive, reverse)
        return m
    return jit.load(f"cumsum|{isa.level}|{dtype}|x{int(exclusive)}|r{int(reverse)}", isa, build)


def supported(dtype: np.dtype) -> bool:
    return dtype.name in DTYPES


def cumsum(src: np.ndarray, dst: np.ndarray, *, outer: int, n: int, inner: int, exclusive: bool, reverse: bool,
           threads: int, isa: Isa | None = None) -> BoundKernel:
    """A bound CumSum of contiguous ``src`` (``[outer, n, inner]``) into ``dst`` along the middle axis."""
    isa = isa or host_isa()
    lanes = isa.f32_lanes * 4 // src.dtype.itemsize
    # columns: runs of the inner axis (whole vectors), so tasks can split wide rows too
    width = inner if inner < lanes else max(lanes, -(-inner // max(1, -(-4 * threads // max(outer, 1)))))
    width = min(-(-width // lanes) * lanes, MAX_WIDTH) if inner >= lanes else width
    blocks = -(-inner // width) if inner else 1
    columns = outer * blocks
    cpt = max(1, -(-columns // (4 * threads)))
    ctx = CUMSUM_CONTEXT.new(src=src.ctypes.data, dst=dst.ctypes.data, n=n, inner=inner, blocks=blocks, width=width,
                             cpt=cpt, columns=columns)
    n_tasks = -(-columns // cpt) if src.size else 0
    return BoundKernel(_library(isa, src.dtype.name, exclusive, reverse).address("cumsum_task"), ctx, n_tasks,
                       threads, (src, dst), layout=CUMSUM_CONTEXT)
