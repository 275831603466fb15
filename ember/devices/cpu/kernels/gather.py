"""Index gathers: GatherND (rows addressed by index tuples, batch dims) and GatherElements.

``nd_task``: output row ``r`` (``inner`` bytes) is the data row at
``(r / M) * bstride + sum_m norm(idx[r * k + m], dims[m]) * astr[m]``, copied with vector moves.
``el_task``: output element ``e = (o * K + j) * inner + c`` is
``data[o * ostride + norm(idx[e], n) * inner + c]`` (GatherElements along an axis: ``outer`` and
``inner`` are the index's dims before and after the axis, equal to the data's).
Negative indices count from the end; an index still out of range gives zeros (the reference
kernel raises). A task is a block of output rows.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import I1, I8, I16, I32, I64, PTR, VOID, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import lane_mask
from ember.devices.cpu.runtime.kernel_call import BoundKernel

MAX_INDEX_DIMS = 8

GATHER_ND_CONTEXT = ContextLayout(
    "gather_nd",
    ("data", "idx", "out", "dims", "astr", "M", "bstride", "k", "inner", "rpt", "rows"),
    pointers=("data", "idx", "out", "dims", "astr"))
GATHER_EL_CONTEXT = ContextLayout(
    "gather_elements",
    ("data", "idx", "out", "tab_io", "tab_ic", "K", "n", "inner", "ostride", "is_j", "row_index", "rpt", "rows"),
    pointers=("data", "idx", "out", "tab_io", "tab_ic"))


def _load_index(e: ContextEmitter, idx: ir.Value, pos: ir.Value, idx64: bool) -> ir.Value:
    if idx64:
        return e.load(I64, e.gep(I64, idx, pos), align=8)
    return e.b.sext(e.load(I32, e.gep(I32, idx, pos), align=4), I64)


def _norm(e: ContextEmitter, v: ir.Value, n: ir.Value) -> tuple[ir.Value, ir.Value]:
    b = e.b
    v = b.select(b.icmp_signed("<", v, c64(0)), b.add(v, n), v)
    return v, b.icmp_unsigned("<", v, n)


def _emit_nd(m: ir.Module, prefix: str, lanes32: int, idx64: bool) -> None:
    fn = ContextEmitter.function(m, f"{prefix}_nd_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, GATHER_ND_CONTEXT)
    b = e.b
    task = fn.args[1]
    lanes = 4 * lanes32  # rows move as bytes
    vt = vec(I8, lanes)
    data, idx, out = e.arg("data", PTR), e.arg("idx", PTR), e.arg("out", PTR)
    dims, astr = e.arg("dims", PTR), e.arg("astr", PTR)
    k, inner = e.arg("k"), e.arg("inner")
    r0 = b.mul(task, e.arg("rpt"))
    r1 = e.min(e.arg("rows"), b.add(r0, e.arg("rpt")))
    nmain = b.mul(b.sdiv(inner, c64(lanes)), c64(lanes))
    tail = lane_mask(e, b.sub(inner, nmain), lanes)
    zero = ir.Constant(vt, None)
    M = e.arg("M")
    batch = e.var(I64, b.sdiv(r0, M))  # the batch of row r and r's place in it, kept without divisions
    in_batch = e.var(I64, b.srem(r0, M))
    with e.loop(r0, r1, name="r") as r:
        off = e.var(I64, b.mul(e.load(I64, batch), e.arg("bstride")))
        nxt = b.add(e.load(I64, in_batch), c64(1))
        wrap = b.icmp_signed("==", nxt, M)
        b.store(b.select(wrap, c64(0), nxt), in_batch)
        b.store(b.add(e.load(I64, batch), b.zext(wrap, I64)), batch)
        ok = e.var(I1, ir.Constant(I1, 1))
        with e.loop(c64(0), k, name="m") as mm:
            v, good = _norm(e, _load_index(e, idx, b.add(b.mul(r, k), mm), idx64),
                            e.load(I64, e.gep(I64, dims, mm), align=8))
            b.store(b.add(e.load(I64, off), b.mul(v, e.load(I64, e.gep(I64, astr, mm), align=8))), off)
            b.store(b.and_(e.load(I1, ok), good), ok)
        dst = e.gep(I8, out, b.mul(r, inner))
        src = e.gep(I8, data, e.load(I64, off))
        with b.if_else(e.load(I1, ok)) as (good_row, bad_row):
            with good_row:
                with e.loop(c64(0), nmain, lanes, name="c") as c:
                    b.store(e.load(vt, e.gep(I8, src, c), align=1), e.gep(I8, dst, c), align=1)
                with b.if_then(b.icmp_signed("<", nmain, inner)):
                    v = e.call(f"llvm.masked.load.v{lanes}i8.p0", vt, [e.gep(I8, src, nmain), c32(1), tail, zero])
                    e.call(f"llvm.masked.store.v{lanes}i8.p0", VOID, [v, e.gep(I8, dst, nmain), c32(1), tail])
            with bad_row:
                with e.loop(c64(0), nmain, lanes, name="z") as c:
                    b.store(zero, e.gep(I8, dst, c), align=1)
                with b.if_then(b.icmp_signed("<", nmain, inner)):
                    e.call(f"llvm.masked.store.v{lanes}i8.p0", VOID, [zero, e.gep(I8, dst, nmain), c32(1), tail])
    b.ret_void()


def _emit_elements(m: ir.Module, prefix: str, lanes32: int, idx64: bool, t: ir.IntType) -> None:
    fn = ContextEmitter.function(m, f"{prefix}_el_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, GATHER_EL_CONTEXT)
    b = e.b
    task = fn.args[1]
    data, idx, out = e.arg("data", PTR), e.arg("idx", PTR), e.arg("out", PTR)
    tab_io, tab_ic = e.arg("tab_io", PTR), e.arg("tab_ic", PTR)
    K, n, inner = e.arg("K"), e.arg("n"), e.arg("inner")
    r0 = b.mul(task, e.arg("rpt"))
    r1 = e.min(e.arg("rows"), b.add(r0, e.arg("rpt")))
    size = t.width // 8
    lanes = lanes32 * 4 // size
    units = inner  # a row of items
    vt = vec(t, lanes)
    tn = f"i{t.width}"
    nmain = b.mul(b.sdiv(units, c64(lanes)), c64(lanes))
    tail = lane_mask(e, b.sub(units, nmain), lanes)
    zero = ir.Constant(vt, None)
    o_var = e.var(I64, b.sdiv(r0, K))  # row r is (o, j): kept without divisions
    j_var = e.var(I64, b.srem(r0, K))
    with e.loop(r0, r1, name="r") as r:
        o, j = e.load(I64, o_var), e.load(I64, j_var)
        nxt = b.add(j, c64(1))
        wrap = b.icmp_signed("==", nxt, K)
        b.store(b.select(wrap, c64(0), nxt), j_var)
        b.store(b.add(o, b.zext(wrap, I64)), o_var)
        base = e.gep(t, data, b.mul(o, e.arg("ostride")))
        row = b.mul(r, inner)
        irow = b.add(e.load(I64, e.gep(I64, tab_io, o), align=8), b.mul(j, e.arg("is_j")))
        with b.if_else(b.icmp_signed("!=", e.arg("row_index"), c64(0))) as (one, many):
            with one:  # one index for the whole row: a vector copy of a data row
                v, good = _norm(e, _load_index(e, idx, irow, idx64), n)
                src = e.gep(t, base, b.mul(b.select(good, v, c64(0)), inner))
                dst = e.gep(t, out, row)
                with b.if_else(good) as (copy, clear):
                    with copy:
                        with e.loop(c64(0), nmain, lanes, name="c") as c:
                            b.store(e.load(vt, e.gep(t, src, c), align=size), e.gep(t, dst, c), align=size)
                        with b.if_then(b.icmp_signed("<", nmain, units)):
                            x = e.call(f"llvm.masked.load.v{lanes}{tn}.p0", vt,
                                       [e.gep(t, src, nmain), c32(size), tail, zero])
                            e.call(f"llvm.masked.store.v{lanes}{tn}.p0", VOID, [x, e.gep(t, dst, nmain), c32(size), tail])
                    with clear:
                        with e.loop(c64(0), units, name="z") as c:
                            b.store(ir.Constant(t, 0), e.gep(t, dst, c), align=size)
            with many:
                with e.loop(c64(0), inner, name="c") as c:
                    el = b.add(row, c)
                    pos = b.add(irow, e.load(I64, e.gep(I64, tab_ic, c), align=8))
                    v, good = _norm(e, _load_index(e, idx, pos, idx64), n)
                    v = b.select(good, v, c64(0))
                    x = e.load(t, e.gep(t, base, b.add(b.mul(v, inner), c)))
                    b.store(b.select(good, x, ir.Constant(t, 0)), e.gep(t, out, el))
    b.ret_void()


@functools.cache
def _library(isa: Isa, idx64: bool) -> jit.Library:
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit_nd(m, prefix, isa.f32_lanes, idx64)
        for t in (I8, I16, I32, I64):
            _emit_elements(m, f"{prefix}_{t.width}", isa.f32_lanes, idx64, t)
        return m
    return jit.load(f"gather_nd|{isa.level}|i{64 if idx64 else 32}", isa, build)


def _rows_per_task(rows: int, unit_cost: int, threads: int) -> int:
    rpt = max(1, (1 << 13) // max(unit_cost, 1))
    if -(-rows // rpt) < 4 * threads:
        rpt = max(1, -(-rows // (4 * threads)))
    return rpt


def gather_nd(data: np.ndarray, idx: np.ndarray, out: np.ndarray, *, rows: int, M: int, bstride: int,
              dims: list[int], astr: list[int], inner: int, threads: int, isa: Isa | None = None) -> BoundKernel:
    """A bound GatherND: ``rows`` output rows of ``inner`` bytes (``M`` per batch, batches
    ``bstride`` bytes apart in ``data``); ``dims``/``astr`` the addressed dims and their strides in
    bytes. Arrays contiguous; ``idx`` int32 or int64."""
    isa = isa or host_isa()
    d = np.array(dims or [1], np.int64)
    s = np.array(astr or [0], np.int64)
    rpt = _rows_per_task(rows, inner, threads)
    ctx = GATHER_ND_CONTEXT.new(data=data.ctypes.data, idx=idx.ctypes.data, out=out.ctypes.data, dims=d.ctypes.data,
                                astr=s.ctypes.data, M=max(M, 1), bstride=bstride, k=len(dims), inner=inner, rpt=rpt,
                                rows=rows)
    n_tasks = -(-rows // rpt) if rows and inner else 0
    return BoundKernel(_library(isa, idx.dtype.itemsize == 8).address("nd_task"), ctx, n_tasks, threads,
                       (data, idx, out, d, s), layout=GATHER_ND_CONTEXT)


def gather_elements(data: np.ndarray, idx: np.ndarray, out: np.ndarray, *, outer: int, K: int, n: int, inner: int,
                    tab_io: np.ndarray, is_j: int, tab_ic: np.ndarray, threads: int,
                    isa: Isa | None = None) -> BoundKernel:
    """A bound GatherElements of contiguous ``data`` (``[outer, n, inner]``, 1-, 2-, 4- or 8-byte items)
    into ``out`` (``[outer, K, inner]``) by ``idx`` (int32/int64): the index of output element
    ``(o, j, c)`` is at ``tab_io[o] + j * is_j + tab_ic[c]`` (a broadcast index has zeros there;
    all-zero ``tab_ic`` makes each output row one vector copy)."""
    isa = isa or host_isa()
    lib = _library(isa, idx.dtype.itemsize == 8)
    name = f"{8 * data.dtype.itemsize}_el_task"
    rows = outer * K
    rpt = _rows_per_task(rows, inner, threads)
    tab_io = np.ascontiguousarray(tab_io if tab_io.size else np.zeros(1), np.int64)
    tab_ic = np.ascontiguousarray(tab_ic if tab_ic.size else np.zeros(1), np.int64)
    ctx = GATHER_EL_CONTEXT.new(data=data.ctypes.data, idx=idx.ctypes.data, out=out.ctypes.data,
                                tab_io=tab_io.ctypes.data, tab_ic=tab_ic.ctypes.data, K=max(K, 1), n=n, inner=inner,
                                ostride=n * inner, is_j=is_j, row_index=int(not tab_ic.any()), rpt=rpt, rows=rows)
    n_tasks = -(-rows // rpt) if rows and inner else 0
    return BoundKernel(lib.address(name), ctx, n_tasks, threads, (data, idx, out, tab_io, tab_ic),
                       layout=GATHER_EL_CONTEXT)
