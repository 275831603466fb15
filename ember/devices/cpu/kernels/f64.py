"""f64 kernels for the ops whose fast kernels are f32 only, computed in f64 as the reference
kernels compute them (no narrowing to f32):

- ``rows64``: SoftMax / LogSoftmax / MVN along one axis of ``[outer, n, inner]`` data (any
  ``inner``: a row's elements are ``inner`` apart): the reference's formulas, ``x - max``, the C
  library's ``exp`` and ``log``, sums in order; MVN's mean, then the mean square of ``x - mean``;
- ``avgpool64``: average (or max) pooling from a tap table (the flat source of every tap of every
  output position, -1 in the padding) and a divisor per output position, both computed at compile
  time; taps are added in kernel order from +0, as the reference does (max: from the lowest finite
  value, a real element taken when greater, so NaN and -inf never win, as the reference);
- ``matmul64``: batched ``C = A @ B`` with any strides: ``B`` contiguous along ``N`` runs a
  vector row update (``C[i, :] += A[i, k] * B[k, :]``, fused multiply-adds), otherwise one dot
  product per element.

A task is a block of rows (SoftMax/MVN: the positions outside the axis; AvgPool: output
positions; MatMul: rows of ``C``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import I64, PTR, VOID, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import lane_mask
from ember.devices.cpu.runtime.kernel_call import BoundKernel

F64 = ir.DoubleType()
ROWS_KINDS = ("softmax", "logsoftmax", "mvn")

ROWS64_CONTEXT = ContextLayout("rows64", ("x", "y", "n", "inner", "eps", "rpt", "rows"), pointers=("x", "y"))
POOL64_CONTEXT = ContextLayout(
    "pool64", ("x", "y", "tab", "div", "taps", "in_plane", "out_plane", "rpt", "rows"),
    pointers=("x", "y", "tab", "div"))
MATMUL64_CONTEXT = ContextLayout(
    "matmul64", ("a", "b", "c", "aoff", "boff", "m", "mb", "n", "k", "a_m", "a_k", "b_k", "b_n", "rpt", "rows"),
    pointers=("a", "b", "c", "aoff", "boff"))


def _d(x: float) -> ir.Constant:
    return ir.Constant(F64, x)


def _rows_of(e: ContextEmitter, task: ir.Value) -> tuple[ir.Value, ir.Value]:
    b = e.b
    r0 = b.mul(task, e.arg("rpt"))
    return r0, e.min(e.arg("rows"), b.add(r0, e.arg("rpt")))


def _emit_rows(m: ir.Module, prefix: str, kind: str, variance: bool, inside: bool, mvec: int = 0) -> None:
    """``mvec``: lanes of glibc's vector ``exp`` for contiguous rows (``inner`` = 1), 0: scalar calls."""
    fn = ContextEmitter.function(m, f"{prefix}_rows64_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, ROWS64_CONTEXT)
    b = e.b
    x, y = e.arg("x", PTR), e.arg("y", PTR)
    n, inner = e.arg("n"), e.arg("inner")
    r0, r1 = _rows_of(e, fn.args[1])
    with e.loop(r0, r1, name="r") as r:
        base = b.add(b.mul(b.mul(b.sdiv(r, inner), n), inner), b.srem(r, inner))

        def at(p: ir.Value, k: ir.Value) -> ir.Value:
            return e.gep(F64, p, b.add(base, b.mul(k, inner)))

        acc = e.var(F64)
        if kind in ("softmax", "logsoftmax"):
            top = e.var(F64, _d(-math.inf))
            first = c64(0)

            def bigger(v: ir.Value, cur: ir.Value) -> ir.Value:
                take = b.or_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered(">", v, cur))  # NaN wins, as np.max
                return b.select(take, v, cur)

            if mvec:
                vt = vec(F64, mvec)
                vtop = e.var(vt)
                b.store(ir.Constant(vt, [-math.inf] * mvec), vtop)
                main = b.mul(b.sdiv(n, c64(mvec)), c64(mvec))
                with e.loop(0, main, mvec, name="vm") as k:
                    b.store(bigger(e.load(vt, at(x, k), align=8), e.load(vt, vtop)), vtop)
                vs = e.load(vt, vtop)
                for lane in range(mvec):
                    b.store(bigger(b.extract_element(vs, c32(lane)), e.load(F64, top)), top)
                first = main
            with e.loop(first, n, name="mx") as k:
                b.store(bigger(e.load(F64, at(x, k)), e.load(F64, top)), top)
            mx = e.load(F64, top)
            b.store(_d(0.0), acc)
            start = c64(0)
            if mvec:  # contiguous rows: w lanes at a time through the vector exp
                vt = vec(F64, mvec)
                vacc = e.var(vt)
                b.store(ir.Constant(vt, [0.0] * mvec), vacc)
                main = b.mul(b.sdiv(n, c64(mvec)), c64(mvec))
                with e.loop(0, main, mvec, name="vx") as k:
                    ev = e.call(f"ember_mvec{mvec}_exp", vt, [b.fsub(e.load(vt, at(x, k), align=8), e.splat(mx, mvec))])
                    if kind == "softmax":
                        b.store(ev, at(y, k), align=8)
                    b.store(b.fadd(e.load(vt, vacc), ev), vacc)
                vs = e.load(vt, vacc)
                part = b.extract_element(vs, c32(0))
                for lane in range(1, mvec):
                    part = b.fadd(part, b.extract_element(vs, c32(lane)))
                b.store(part, acc)
                start = main
            with e.loop(start, n, name="ex") as k:
                ev = e.call("ember_libm_exp", F64, [b.fsub(e.load(F64, at(x, k)), mx)])
                if kind == "softmax":
                    b.store(ev, at(y, k))
                b.store(b.fadd(e.load(F64, acc), ev), acc)
            total = e.load(F64, acc)
            if kind == "softmax":
                first = c64(0)
                if mvec:
                    vt = vec(F64, mvec)
                    main = b.mul(b.sdiv(n, c64(mvec)), c64(mvec))
                    with e.loop(0, main, mvec, name="vd") as k:
                        b.store(b.fdiv(e.load(vt, at(y, k), align=8), e.splat(total, mvec)), at(y, k), align=8)
                    first = main
                with e.loop(first, n, name="dv") as k:
                    b.store(b.fdiv(e.load(F64, at(y, k)), total), at(y, k))
            else:
                ls = e.call("ember_libm_log", F64, [total])
                with e.loop(0, n, name="ls") as k:
                    b.store(b.fsub(b.fsub(e.load(F64, at(x, k)), mx), ls), at(y, k))
        else:
            nf = b.sitofp(n, F64)
            b.store(_d(0.0), acc)
            with e.loop(0, n, name="sm") as k:
                b.store(b.fadd(e.load(F64, acc), e.load(F64, at(x, k))), acc)
            mean = b.fdiv(e.load(F64, acc), nf)
            den = _d(1.0)
            if variance:
                b.store(_d(0.0), acc)
                with e.loop(0, n, name="sq") as k:
                    d = b.fsub(e.load(F64, at(x, k)), mean)
                    b.store(b.fadd(e.load(F64, acc), b.fmul(d, d)), acc)
                var = b.fdiv(e.load(F64, acc), nf)
                eps = b.bitcast(e.arg("eps"), F64)
                if inside:
                    den = e.call("llvm.sqrt.f64", F64, [b.fadd(var, eps)])
                else:
                    den = b.fadd(e.call("llvm.sqrt.f64", F64, [var]), eps)
            with e.loop(0, n, name="out") as k:
                d = b.fsub(e.load(F64, at(x, k)), mean)
                b.store(b.fdiv(d, den) if variance else d, at(y, k))
    b.ret_void()


def _emit_pool(m: ir.Module, prefix: str, is_max: bool = False) -> None:
    fn = ContextEmitter.function(m, f"{prefix}_pool64_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, POOL64_CONTEXT)
    b = e.b
    x, y, tab, div = e.arg("x", PTR), e.arg("y", PTR), e.arg("tab", PTR), e.arg("div", PTR)
    taps, in_plane, out_plane = e.arg("taps"), e.arg("in_plane"), e.arg("out_plane")
    r0, r1 = _rows_of(e, fn.args[1])
    acc = e.var(F64)
    with e.loop(r0, r1, name="r") as r:
        plane = e.gep(F64, x, b.mul(b.sdiv(r, out_plane), in_plane))
        o = b.srem(r, out_plane)
        row = e.gep(I64, tab, b.mul(o, taps))
        b.store(_d(-np.finfo(np.float64).max if is_max else 0.0), acc)
        with e.loop(0, taps, name="t") as t:
            s = e.load(I64, e.gep(I64, row, t), align=8)
            with b.if_then(b.icmp_signed(">=", s, c64(0))):
                v, cur = e.load(F64, e.gep(F64, plane, s)), e.load(F64, acc)
                b.store(b.select(b.fcmp_ordered(">", v, cur), v, cur) if is_max else b.fadd(cur, v), acc)
        res = e.load(F64, acc)
        b.store(res if is_max else b.fdiv(res, e.load(F64, e.gep(F64, div, o))), e.gep(F64, y, r))
    b.ret_void()


#: rows of C one step of the vector MatMul computes (their A values splat, each B vector loaded once)
MM_ROWS = 4


def _emit_matmul(m: ir.Module, prefix: str, lanes: int, unit_n: bool) -> None:
    fn = ContextEmitter.function(m, f"{prefix}_matmul64_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, MATMUL64_CONTEXT)
    b = e.b
    pa, pb, pc = e.arg("a", PTR), e.arg("b", PTR), e.arg("c", PTR)
    mm, nn, kk, mb = e.arg("m"), e.arg("n"), e.arg("k"), e.arg("mb")
    a_m, a_k, b_k, b_n = e.arg("a_m"), e.arg("a_k"), e.arg("b_k"), e.arg("b_n")
    r0, r1 = _rows_of(e, fn.args[1])
    rows_per = MM_ROWS if unit_n else 1
    unroll = 4 if lanes >= 8 else 2
    vt = vec(F64, lanes)
    zero = ir.Constant(vt, [0.0] * lanes)
    with e.loop(r0, r1, name="r") as r:  # r: a block of rows_per rows of one matrix
        bt = b.sdiv(r, mb)
        i0 = b.mul(b.srem(r, mb), c64(rows_per))
        a_at = e.load(I64, e.gep(I64, e.arg("aoff", PTR), bt), align=8)
        bmat = e.gep(F64, pb, e.load(I64, e.gep(I64, e.arg("boff", PTR), bt), align=8))
        # the last block's missing rows repeat row m-1 (same values written twice)
        rows_i = [e.min(b.add(i0, c64(q)), b.sub(mm, c64(1))) for q in range(rows_per)]
        arows = [e.gep(F64, pa, b.add(a_at, b.mul(i, a_m))) for i in rows_i]
        crows = [e.gep(F64, pc, b.mul(b.add(b.mul(bt, mm), i), nn)) for i in rows_i]
        if unit_n:  # C[i, j:j+U*L] = sum_k A[i, k] * B[k, j:j+U*L] for MM_ROWS rows i, U vectors of L lanes
            accs = [[e.var(vt) for _ in range(unroll)] for _ in range(rows_per)]
            width = lanes * unroll

            def block(j: ir.Value, masked: bool) -> None:
                masks = [lane_mask(e, b.sub(nn, b.add(j, c64(u * lanes))), lanes) if masked else None
                         for u in range(unroll)]
                for row in accs:
                    for a_ in row:
                        b.store(zero, a_)
                with e.loop(0, kk, name="k") as k:
                    brow = e.gep(F64, bmat, b.add(b.mul(k, b_k), j))
                    bvs = []
                    for u in range(unroll):
                        ptr = e.gep(F64, brow, c64(u * lanes))
                        bvs.append(e.load(vt, ptr, align=8) if not masked else e.call(
                            f"llvm.masked.load.v{lanes}f64.p0", vt, [ptr, c32(8), masks[u], ir.Constant(vt, None)]))
                    for q in range(rows_per):
                        av = e.splat(e.load(F64, e.gep(F64, arows[q], b.mul(k, a_k))), lanes)
                        for u in range(unroll):
                            acc = accs[q][u]
                            b.store(e.call(f"llvm.fmuladd.v{lanes}f64", vt, [av, bvs[u], e.load(vt, acc)]), acc)
                for q in range(rows_per):
                    for u in range(unroll):
                        ptr = e.gep(F64, crows[q], b.add(j, c64(u * lanes)))
                        if masked:
                            e.call(f"llvm.masked.store.v{lanes}f64.p0", VOID, [e.load(vt, accs[q][u]), ptr, c32(8),
                                                                              masks[u]])
                        else:
                            b.store(e.load(vt, accs[q][u]), ptr, align=8)

            main = b.mul(b.sdiv(nn, c64(width)), c64(width))
            with e.loop(0, main, width, name="j") as j:
                block(j, False)
            with b.if_then(b.icmp_signed("<", main, nn)):
                block(main, True)
        else:  # one dot product per element
            acc = e.var(F64)
            with e.loop(0, nn, name="j") as j:
                bcol = e.gep(F64, bmat, b.mul(j, b_n))
                b.store(_d(0.0), acc)
                with e.loop(0, kk, name="k") as k:
                    p = b.fmul(e.load(F64, e.gep(F64, arows[0], b.mul(k, a_k))),
                               e.load(F64, e.gep(F64, bcol, b.mul(k, b_k))))
                    b.store(b.fadd(e.load(F64, acc), p), acc)
                b.store(e.load(F64, acc), e.gep(F64, crows[0], j))
    b.ret_void()


@functools.cache
def _library(isa: Isa, what: str) -> jit.Library:
    from ember.devices.cpu.kernels.eltwise import libm_symbols

    libm_symbols()  # the C library's exp/log, resolved when the kernels load

    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        head, *rest = what.split("|")
        if head == "rows":
            _emit_rows(m, prefix, rest[0], rest[1] == "1", rest[2] == "1", int(rest[3]))
        elif head == "pool":
            _emit_pool(m, prefix, rest == ["max"])
        else:
            _emit_matmul(m, prefix, max(1, isa.f32_lanes // 2), rest[0] == "1")
        return m
    return jit.load(f"f64|{isa.level}|{what}", isa, build)


def _blocks(rows: int, threads: int, cost: int) -> tuple[int, int]:
    """(rows per task, tasks): about 64k element visits per task, at least 4 tasks per thread."""
    rpt = max(1, (1 << 16) // max(cost, 1))
    if -(-rows // rpt) < 4 * threads:
        rpt = max(1, -(-rows // (4 * threads)))
    return rpt, -(-rows // rpt) if rows else 0


def rows64(x: np.ndarray, y: np.ndarray, *, outer: int, n: int, inner: int, kind: str, threads: int,
           eps: float = 0.0, normalize_variance: bool = True, eps_inside: bool = True,
           isa: Isa | None = None) -> BoundKernel:
    """A bound SoftMax / LogSoftmax / MVN (``kind``) of contiguous f64 ``x`` (``[outer, n, inner]``)
    along its middle axis into ``y`` (same shape)."""
    assert kind in ROWS_KINDS
    rows = outer * inner
    rpt, tasks = _blocks(rows, threads, 3 * n)
    ctx = ROWS64_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, n=n, inner=max(inner, 1),
                             eps=int(np.array(eps, np.float64).view(np.int64)), rpt=rpt, rows=rows)
    from ember.devices.cpu.kernels.eltwise import mvec_width

    isa = isa or host_isa()
    mvec = mvec_width(isa) if inner == 1 and kind != "mvn" else 0
    what = f"rows|{kind}|{int(normalize_variance)}|{int(eps_inside)}|{mvec}"
    return BoundKernel(_library(isa, what).address("rows64_task"), ctx, tasks if n else 0, threads,
                       (x, y), layout=ROWS64_CONTEXT)


def pool_tables(in_spatial: tuple[int, ...], kernel: list[int], strides: list[int], dil: list[int], pb: list[int],
                out: list[int], exclude_pad: bool, padded: bool) -> tuple[np.ndarray, np.ndarray]:
    """(taps table ``(prod(out), prod(kernel))`` of flat sources in a plane, -1 outside the input;
    divisor per output position): the reference's divisor (the window's real elements with
    ``exclude_pad`` or no padding, else the kernel size; a window with nothing real gives 0
    with padding (divisor inf) and NaN without (divisor 0))."""
    per_axis = []
    for size, k, s, d, p, o in zip(in_spatial, kernel, strides, dil, pb, out):
        pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - p
        per_axis.append(np.where((pos >= 0) & (pos < size), pos, -1))
    nd = len(out)
    grids = []
    for a, src in enumerate(per_axis):  # (out..., kernel...) broadcast of each axis's source
        shape = [1] * (2 * nd)
        shape[a], shape[nd + a] = src.shape
        grids.append(src.reshape(shape))
    full = np.broadcast_shapes(*[g.shape for g in grids])
    valid = np.logical_and.reduce([np.broadcast_to(g >= 0, full) for g in grids])
    flat = np.zeros(full, np.int64)
    for a, g in enumerate(grids):
        flat = flat * in_spatial[a] + np.maximum(g, 0)
    tab = np.where(valid, flat, -1).reshape(int(np.prod(out)), int(np.prod(kernel)))
    if not exclude_pad and padded:
        div = np.full(tab.shape[0], float(np.prod(kernel)))
    else:
        count = (tab >= 0).sum(axis=1).astype(np.float64)
        div = np.where(count > 0, count, np.inf if padded else 0.0)
    return np.ascontiguousarray(tab), np.ascontiguousarray(div)


def avgpool64(x: np.ndarray, y: np.ndarray, tab: np.ndarray, div: np.ndarray, threads: int,
              isa: Isa | None = None, is_max: bool = False) -> BoundKernel:
    """A bound average (``is_max``: max) pooling of contiguous f64 ``x`` (``[planes, in_plane]``)
    into ``y`` (``[planes, out_plane]``) with the tables of :func:`pool_tables`."""
    planes, in_plane = x.shape
    out_plane, taps = tab.shape
    rows = planes * out_plane
    rpt, tasks = _blocks(rows, threads, taps)
    ctx = POOL64_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, tab=tab.ctypes.data, div=div.ctypes.data, taps=taps,
                             in_plane=in_plane, out_plane=max(out_plane, 1), rpt=rpt, rows=rows)
    return BoundKernel(_library(isa or host_isa(), "pool|max" if is_max else "pool").address("pool64_task"), ctx,
                       tasks, threads,
                       (x, y, tab, div), layout=POOL64_CONTEXT)


def matmul64(a: np.ndarray, b: np.ndarray, c: np.ndarray, *, m: int, n: int, k: int, a_offsets: np.ndarray,
             b_offsets: np.ndarray, a_strides: tuple[int, int], b_strides: tuple[int, int], threads: int,
             isa: Isa | None = None) -> BoundKernel:
    """A bound ``C[bt] = A[bt] @ B[bt]`` of f64 matrices; ``a_offsets``/``b_offsets`` (int64, one
    per batch) where each batch's matrix starts, ``a_strides`` = (m, k) and ``b_strides`` = (k, n)
    in elements; ``c`` contiguous ``[batch, m, n]``."""
    batch = a_offsets.size
    unit_n = b_strides[1] == 1 or n == 1
    per = MM_ROWS if unit_n else 1
    mb = -(-m // per)
    rows = batch * mb
    rpt, tasks = _blocks(rows, threads, per * n * k)
    ctx = MATMUL64_CONTEXT.new(a=a.ctypes.data, b=b.ctypes.data, c=c.ctypes.data, aoff=a_offsets.ctypes.data,
                               boff=b_offsets.ctypes.data, m=max(m, 1), mb=max(mb, 1), n=n, k=k, a_m=a_strides[0], a_k=a_strides[1],
                               b_k=b_strides[0], b_n=b_strides[1], rpt=rpt, rows=rows)
    lib = _library(isa or host_isa(), f"matmul|{int(unit_n)}")
    return BoundKernel(lib.address("matmul64_task"), ctx, tasks if n else 0, threads, (a, b, c, a_offsets, b_offsets),
                       layout=MATMUL64_CONTEXT)
