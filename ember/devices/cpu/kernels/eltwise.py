"""Memory movement and elementwise kernels.

Movement: a strided copy (transposes, layout conversions, slices, concat).

``copy_task(ctx, task)`` copies a tensor of up to 6 dimensions with arbitrary element
strides on both sides (4-byte elements). The innermost loop is chosen where it is cheapest:
contiguous on both sides (vector copy), contiguous on one side (vector load + scatter, or
gather + vector store), else scalar. A task is a block of rows of the outer dimensions.

Elementwise: ``eltwise_task(ctx, task)`` runs a small program (a fused chain of unary and
binary ops with broadcasting) over blocks of the output; see :func:`eltwise_kernel`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.gemm import BoundKernel, _lane_mask, _masked_load, _masked_store
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.runtime.plan import Op, Tensor

MAX_DIMS = 6
COPY_FIELDS = ("src", "dst", "rpt", "rows", *(f"d{i}" for i in range(MAX_DIMS)),
               *(f"s{i}" for i in range(MAX_DIMS)), *(f"t{i}" for i in range(MAX_DIMS)))
CF = {n: i for i, n in enumerate(COPY_FIELDS)}


def _addresses(e: Emitter, base: ir.Value, index: ir.Value, lanes: int) -> ir.Value:
    """<lanes x ptr> of ``base + 4 * index`` (built from integers: llvmlite has no vector GEP)."""
    b = e.b
    addr = b.add(e.splat(b.ptrtoint(base, I64), lanes), b.mul(index, e.splat(c64(4), lanes)))
    return b.inttoptr(addr, vec(PTR, lanes))


def _emit_copy(m: ir.Module, prefix: str, lanes: int) -> None:
    fn = Emitter.function(m, f"{prefix}_copy_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    vt = vec(F32, lanes)
    vi = vec(I64, lanes)
    f = {k: e.field(ctx, i) for k, i in CF.items()}
    src, dst = b.inttoptr(f["src"], PTR), b.inttoptr(f["dst"], PTR)
    rpt, rows = f["rpt"], f["rows"]
    r0 = b.mul(task, rpt)
    r1 = e.min(rows, b.add(r0, rpt))
    n = f["d5"]
    s5, t5 = f["s5"], f["t5"]
    lane_idx = ir.Constant(vi, list(range(lanes)))
    nmain = b.mul(b.sdiv(n, c64(lanes)), c64(lanes))
    both = b.and_(b.icmp_signed("==", s5, c64(1)), b.icmp_signed("==", t5, c64(1)))
    src_c = b.icmp_signed("==", s5, c64(1))
    dst_c = b.icmp_signed("==", t5, c64(1))
    with e.loop(r0, r1, name="r") as r:
        # row r -> (i0..i4), offsets into src and dst
        rem = e.var(I64, r)
        so = e.var(I64, c64(0))
        do = e.var(I64, c64(0))
        for d in range(MAX_DIMS - 2, -1, -1):
            dim = f[f"d{d}"]
            cur = e.load(I64, rem)
            idx = b.srem(cur, dim)
            b.store(b.sdiv(cur, dim), rem)
            b.store(b.add(e.load(I64, so), b.mul(idx, f[f"s{d}"])), so)
            b.store(b.add(e.load(I64, do), b.mul(idx, f[f"t{d}"])), do)
        sp = e.gep(F32, src, e.load(I64, so))
        dp = e.gep(F32, dst, e.load(I64, do))

        def vector_loop(body) -> None:  # noqa: ANN001
            with e.loop(0, nmain, lanes, name="v") as i:
                body(i, None)
            with b.if_then(b.icmp_signed("<", nmain, n)):
                body(nmain, _lane_mask(e, b.sub(n, nmain), lanes))

        def contiguous(i: ir.Value, mask: ir.Value | None) -> None:
            _masked_store(e, _masked_load(e, vt, e.gep(F32, sp, i), mask), e.gep(F32, dp, i), mask)

        def scatter(i: ir.Value, mask: ir.Value | None) -> None:
            v = _masked_load(e, vt, e.gep(F32, sp, i), mask)
            ptrs = _addresses(e, dp, b.mul(b.add(e.splat(i, lanes), lane_idx), e.splat(t5, lanes)), lanes)
            m_ = mask if mask is not None else ir.Constant(vec(ir.IntType(1), lanes), [1] * lanes)
            e.call(f"llvm.masked.scatter.v{lanes}f32.v{lanes}p0", VOID, [v, ptrs, c32(4), m_])

        def gather(i: ir.Value, mask: ir.Value | None) -> None:
            ptrs = _addresses(e, sp, b.mul(b.add(e.splat(i, lanes), lane_idx), e.splat(s5, lanes)), lanes)
            m_ = mask if mask is not None else ir.Constant(vec(ir.IntType(1), lanes), [1] * lanes)
            v = e.call(f"llvm.masked.gather.v{lanes}f32.v{lanes}p0", vt, [ptrs, c32(4), m_, ir.Constant(vt, None)])
            _masked_store(e, v, e.gep(F32, dp, i), mask)

        with b.if_else(both) as (yes, no):
            with yes:
                vector_loop(contiguous)
            with no:
                with b.if_else(src_c) as (s_yes, s_no):
                    with s_yes:
                        vector_loop(scatter)
                    with s_no:
                        with b.if_else(dst_c) as (d_yes, d_no):
                            with d_yes:
                                vector_loop(gather)
                            with d_no:
                                with e.loop(0, n, name="k") as k:
                                    x = e.load(I32, e.gep(I32, sp, b.mul(k, s5)))
                                    b.store(x, e.gep(I32, dp, b.mul(k, t5)))
    b.ret_void()


GATHER_FIELDS = ("data", "idx", "out", "outer", "n", "inner", "k", "idx64", "neg", "rpt", "rows")
GF = {n: i for i, n in enumerate(GATHER_FIELDS)}


def _emit_gather(m: ir.Module, prefix: str, lanes: int) -> None:
    """gather_task(ctx, task): out[o, j, :] = data[o, idx[j], :] for a block of (o, j) rows
    (4-byte units; an index out of [0, n) gives zeros; negative ones count from the end
    when ``neg``)."""
    fn = Emitter.function(m, f"{prefix}_gather_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    vt = vec(I32, lanes)
    f = {k: e.field(ctx, i) for k, i in GF.items()}
    data, idxp, out = (b.inttoptr(f[k], PTR) for k in ("data", "idx", "out"))
    n, inner, k = f["n"], f["inner"], f["k"]
    r0 = b.mul(task, f["rpt"])
    r1 = e.min(f["rows"], b.add(r0, f["rpt"]))
    nmain = b.mul(b.sdiv(inner, c64(lanes)), c64(lanes))
    tail = _lane_mask(e, b.sub(inner, nmain), lanes)
    zero = ir.Constant(vt, None)
    with e.loop(r0, r1, name="row") as row:
        o, j = b.sdiv(row, k), b.srem(row, k)
        i64v = e.load(I64, e.gep(I64, idxp, j))
        i32v = b.sext(e.load(I32, e.gep(I32, idxp, j)), I64)
        i = b.select(b.icmp_signed("!=", f["idx64"], c64(0)), i64v, i32v)
        i = b.select(b.and_(b.icmp_signed("!=", f["neg"], c64(0)), b.icmp_signed("<", i, c64(0))), b.add(i, n), i)
        ok = b.icmp_unsigned("<", i, n)
        dst = e.gep(I32, out, b.mul(row, inner))
        src = e.gep(I32, data, b.mul(b.add(b.mul(o, n), i), inner))

        def masked(ptr: ir.Value, mask: ir.Value | None) -> ir.Value:
            if mask is None:
                return e.load(vt, ptr, align=4)
            return e.call(f"llvm.masked.load.v{lanes}i32.p0", vt, [ptr, c32(4), mask, zero])

        def put(v: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
            if mask is None:
                b.store(v, ptr, align=4)
            else:
                e.call(f"llvm.masked.store.v{lanes}i32.p0", VOID, [v, ptr, c32(4), mask])

        with b.if_else(ok) as (good, bad):
            with good:
                with e.loop(0, nmain, lanes, name="c") as c:
                    put(masked(e.gep(I32, src, c), None), e.gep(I32, dst, c), None)
                with b.if_then(b.icmp_signed("<", nmain, inner)):
                    put(masked(e.gep(I32, src, nmain), tail), e.gep(I32, dst, nmain), tail)
            with bad:
                with e.loop(0, nmain, lanes, name="z") as c:
                    put(zero, e.gep(I32, dst, c), None)
                with b.if_then(b.icmp_signed("<", nmain, inner)):
                    put(zero, e.gep(I32, dst, nmain), tail)
    b.ret_void()


def _build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_copy(m, prefix, isa.f32_lanes)
    _emit_gather(m, prefix, isa.f32_lanes)
    return m


@functools.cache
def _library(isa: Isa) -> jit.Library:
    return jit.load(f"movement|{isa.level}|gather", isa, lambda p: _build(p, isa))


def _collapse(shape: list[int], ss: list[int], ts: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Drop size-1 dims, merge dims contiguous on both sides, pick the cheapest inner dim."""
    dims = [(d, s, t) for d, s, t in zip(shape, ss, ts) if d != 1]
    merged: list[tuple[int, int, int]] = []
    for d, s, t in dims:
        if merged and merged[-1][1] == s * d and merged[-1][2] == t * d:
            pd, _, _ = merged[-1]
            merged[-1] = (pd * d, s, t)
        else:
            merged.append((d, s, t))
    if not merged:
        merged = [(1, 1, 1)]

    def cost(i: int) -> tuple[int, int]:
        d, s, t = merged[i]
        kind = 0 if s == 1 and t == 1 else (1 if s == 1 or t == 1 else 2)
        return (kind, -d)

    inner = min(range(len(merged)), key=cost)
    merged.append(merged.pop(inner))
    return [d for d, _, _ in merged], [s for _, s, _ in merged], [t for _, _, t in merged]


def strided_copy(src: np.ndarray, dst: np.ndarray, threads: int, isa: Isa | None = None) -> BoundKernel | None:
    """A bound kernel that copies ``src`` into ``dst`` (same shape, 4-byte items, any strides);
    None when the copy does not fit the kernel (more than 6 collapsed dims, odd strides)."""
    if src.shape != dst.shape or src.dtype.itemsize != 4 or dst.dtype.itemsize != 4:
        return None
    if any(s % 4 for s in src.strides + dst.strides):
        return None
    dims, ss, ts = _collapse(list(src.shape), [s // 4 for s in src.strides], [s // 4 for s in dst.strides])
    if len(dims) > MAX_DIMS:
        return None
    pad = MAX_DIMS - len(dims)
    dims, ss, ts = [1] * pad + dims, [0] * pad + ss, [0] * pad + ts
    isa = isa or host_isa()
    lib = _library(isa)
    ctx = np.zeros(len(COPY_FIELDS), np.int64)
    ctx[CF["src"]], ctx[CF["dst"]] = src.ctypes.data, dst.ctypes.data
    rows = int(np.prod(dims[:-1]))
    inner = dims[-1]
    per_task = max(1, (1 << 14) // max(inner, 1))
    n_tasks = -(-rows // per_task)
    if n_tasks < 4 * threads and rows > 1:
        per_task = max(1, -(-rows // (4 * threads)))
        n_tasks = -(-rows // per_task)
    ctx[CF["rpt"]], ctx[CF["rows"]] = per_task, rows
    for i in range(MAX_DIMS):
        ctx[CF[f"d{i}"]], ctx[CF[f"s{i}"]], ctx[CF[f"t{i}"]] = dims[i], ss[i], ts[i]
    if src.size == 0:
        n_tasks = 0
    return BoundKernel(lib.address("copy_task"), ctx, n_tasks, threads, (src, dst))


def gather_rows(data: np.ndarray, idx: np.ndarray, out: np.ndarray, axis: int, negative: bool, threads: int,
                isa: Isa | None = None) -> BoundKernel:
    """A bound Gather (batch_dims 0): ``out = take(data, idx, axis)`` with zeros for indices out
    of range. ``data`` and ``out`` contiguous with items of a multiple of 4 bytes; ``idx``
    contiguous int32 or int64."""
    unit = data.dtype.itemsize // 4
    outer = int(np.prod(data.shape[:axis]))
    n = data.shape[axis]
    inner = int(np.prod(data.shape[axis + 1:])) * unit
    k = idx.size
    rows = outer * k
    rpt = max(1, (1 << 13) // max(inner, 1))
    if -(-rows // rpt) < 4 * threads:
        rpt = max(1, -(-rows // (4 * threads)))
    isa = isa or host_isa()
    ctx = np.zeros(len(GATHER_FIELDS), np.int64)
    vals = dict(data=data.ctypes.data, idx=idx.ctypes.data, out=out.ctypes.data, outer=outer, n=n, inner=inner,
                k=k, idx64=int(idx.dtype.itemsize == 8), neg=int(negative), rpt=rpt, rows=rows)
    for key, v in vals.items():
        ctx[GF[key]] = v
    n_tasks = -(-rows // rpt) if rows and inner else 0
    return BoundKernel(_library(isa).address("gather_task"), ctx, n_tasks, threads, (data, idx, out))


# --------------------------------------------------------------------------- batched 2-D transposes
TR_FIELDS = ("src", "dst", "nb", "sb", "db", "y", "x", "lds", "ldd", "ntile_y", "ntile_x", "tpt", "ntiles")
TRF = {n: i for i, n in enumerate(TR_FIELDS)}


def _transpose_rows(b: ir.IRBuilder, rows: list[ir.Value], lanes: int) -> list[ir.Value]:
    """Transpose a lanes x lanes tile held as ``lanes`` vectors (recursive block swaps)."""
    rows = list(rows)
    blk = lanes // 2
    while blk >= 1:
        lo = ir.Constant(vec(I32, lanes), [k if not k & blk else lanes + k - blk for k in range(lanes)])
        hi = ir.Constant(vec(I32, lanes), [k + blk if not k & blk else lanes + k for k in range(lanes)])
        for i in range(lanes):
            if i & blk:
                continue
            a, c = rows[i], rows[i + blk]
            rows[i], rows[i + blk] = b.shuffle_vector(a, c, lo), b.shuffle_vector(a, c, hi)
        blk //= 2
    return rows


def _emit_transpose(m: ir.Module, prefix: str, lanes: int) -> None:
    """tr_task(ctx, task): dst[n][j][i] = src[n][i][j] (src rows of x floats, stride lds;
    dst rows of y floats, stride ldd) for a run of lanes x lanes tiles."""
    fn = Emitter.function(m, f"{prefix}_tr_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    vt = vec(F32, lanes)
    f = {k: e.field(ctx, i) for k, i in TRF.items()}
    Y, X, lds, ldd = f["y"], f["x"], f["lds"], f["ldd"]
    t0 = b.mul(task, f["tpt"])
    t1 = e.min(f["ntiles"], b.add(t0, f["tpt"]))
    per_batch = b.mul(f["ntile_y"], f["ntile_x"])
    zero = ir.Constant(vt, None)
    with e.loop(t0, t1, name="t") as t:
        n = b.sdiv(t, per_batch)
        r = b.srem(t, per_batch)
        ty, tx = b.sdiv(r, f["ntile_x"]), b.srem(r, f["ntile_x"])
        i0, j0 = b.mul(ty, c64(lanes)), b.mul(tx, c64(lanes))
        ni = e.min(c64(lanes), b.sub(Y, i0))  # valid src rows in the tile
        nj = e.min(c64(lanes), b.sub(X, j0))  # valid src columns
        src = e.gep(F32, b.inttoptr(f["src"], PTR), b.add(b.mul(n, f["sb"]), b.add(b.mul(i0, lds), j0)))
        dst = e.gep(F32, b.inttoptr(f["dst"], PTR), b.add(b.mul(n, f["db"]), b.add(b.mul(j0, ldd), i0)))
        cmask = _lane_mask(e, nj, lanes)
        rmask = _lane_mask(e, ni, lanes)
        full = b.and_(b.icmp_signed("==", ni, c64(lanes)), b.icmp_signed("==", nj, c64(lanes)))
        with b.if_else(full) as (whole, edge):
            with whole:
                rows = [e.load(vt, e.gep(F32, src, b.mul(c64(k), lds)), align=4) for k in range(lanes)]
                for k, v in enumerate(_transpose_rows(b, rows, lanes)):
                    b.store(v, e.gep(F32, dst, b.mul(c64(k), ldd)), align=4)
            with edge:
                rows = []
                for k in range(lanes):
                    ok = b.icmp_signed("<", c64(k), ni)
                    slot = e.var(vt, zero)
                    with b.if_then(ok):
                        b.store(_masked_load(e, vt, e.gep(F32, src, b.mul(c64(k), lds)), cmask), slot)
                    rows.append(e.load(vt, slot))
                for k, v in enumerate(_transpose_rows(b, rows, lanes)):
                    with b.if_then(b.icmp_signed("<", c64(k), nj)):
                        _masked_store(e, v, e.gep(F32, dst, b.mul(c64(k), ldd)), rmask)
    b.ret_void()


@functools.cache
def _transpose_library(isa: Isa) -> jit.Library:
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit_transpose(m, prefix, isa.f32_lanes)
        return m
    return jit.load(f"transpose|{isa.level}", isa, build)


def transpose_copy(src: np.ndarray, dst: np.ndarray, threads: int, isa: Isa | None = None) -> BoundKernel | None:
    """A bound kernel for a copy that is a batch of 2-D transposes (NCHW <-> NHWC with many
    channels, K^T...): register-tile transposes, contiguous loads and stores. None otherwise."""
    if src.shape != dst.shape or src.dtype.itemsize != 4 or dst.dtype.itemsize != 4 or src.size == 0:
        return None
    if any(x % 4 for x in src.strides + dst.strides):
        return None
    dims, ss, ts = _merge(list(src.shape), [x // 4 for x in src.strides], [x // 4 for x in dst.strides])
    if len(dims) == 2:
        dims, ss, ts = [1] + dims, [0] + ss, [0] + ts
    if len(dims) != 3:
        return None
    (nb, a, c), (sb, sa, sc), (db, da, dc) = dims, ss, ts
    # src contiguous along a (its rows run over c), dst contiguous along c
    if sa != 1 or dc != 1 or sc == 1 or da == 1:
        return None
    isa = isa or host_isa()
    lanes = isa.f32_lanes
    if a < lanes or c < lanes:
        return None
    ntile_y, ntile_x = -(-c // lanes), -(-a // lanes)
    ntiles = nb * ntile_y * ntile_x
    tpt = max(1, min(64, -(-ntiles // (8 * threads))))
    ctx = np.zeros(len(TR_FIELDS), np.int64)
    vals = dict(src=src.ctypes.data, dst=dst.ctypes.data, nb=nb, sb=sb, db=db, y=c, x=a, lds=sc, ldd=da,
                ntile_y=ntile_y, ntile_x=ntile_x, tpt=tpt, ntiles=ntiles)
    for k, v in vals.items():
        ctx[TRF[k]] = v
    return BoundKernel(_transpose_library(isa).address("tr_task"), ctx, -(-ntiles // tpt), threads, (src, dst))


def _merge(shape: list[int], ss: list[int], ts: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Drop size-1 dims and merge neighbours contiguous on both sides (order kept)."""
    out: list[tuple[int, int, int]] = []
    for d, s, t in zip(shape, ss, ts):
        if d == 1:
            continue
        if out and out[-1][1] == s * d and out[-1][2] == t * d:
            out[-1] = (out[-1][0] * d, s, t)
        else:
            out.append((d, s, t))
    return [x[0] for x in out], [x[1] for x in out], [x[2] for x in out]


# --------------------------------------------------------------------------- NCHW -> NHWC, few channels
IL_FIELDS = ("src", "dst", "hw", "plane", "xn", "yn", "pb", "nblk")
ILF = {n: i for i, n in enumerate(IL_FIELDS)}
IL_MAX_C = 16
IL_PIXELS = 1024  # pixels per task


def _concat(b: ir.IRBuilder, vs: list[ir.Value], lanes: int) -> ir.Value:
    """One vector holding ``vs`` (each ``lanes`` wide) one after another."""
    acc = vs[0]
    for v in vs[1:]:
        n = acc.type.count
        w = max(n, lanes)
        ext = b.shuffle_vector(v, ir.Constant(v.type, ir.Undefined),
                               ir.Constant(vec(I32, w), list(range(lanes)) + [0] * (w - lanes)))
        if n < w:
            acc = b.shuffle_vector(acc, ir.Constant(acc.type, ir.Undefined),
                                   ir.Constant(vec(I32, w), list(range(n)) + [0] * (w - n)))
        acc = b.shuffle_vector(acc, ext, ir.Constant(vec(I32, n + lanes), list(range(n)) +
                                                      [w + i for i in range(lanes)]))
    return acc


def _emit_interleave(m: ir.Module, prefix: str, lanes: int, c: int) -> None:
    """il_task(ctx, task): dst[n, p, ch] = src[n, ch, p] for a block of pixels p, C = c."""
    fn = Emitter.function(m, f"{prefix}_il_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    vt = vec(F32, lanes)
    f = {k: e.field(ctx, i) for k, i in ILF.items()}
    nblk, pb, hw = f["nblk"], f["pb"], f["hw"]
    img = b.sdiv(task, nblk)
    p0 = b.mul(b.srem(task, nblk), pb)
    p1 = e.min(hw, b.add(p0, pb))
    src = e.gep(F32, b.inttoptr(f["src"], PTR), b.mul(img, f["xn"]))
    dst = e.gep(F32, b.inttoptr(f["dst"], PTR), b.mul(img, f["yn"]))
    plane = f["plane"]
    order = [ch * lanes + p for p in range(lanes) for ch in range(c)]

    def block(p: ir.Value, count: ir.Value | None) -> None:
        mask = None if count is None else _lane_mask(e, count, lanes)
        vs = [_masked_load(e, vt, e.gep(F32, src, b.add(b.mul(c64(ch), plane), p)), mask) for ch in range(c)]
        allv = _concat(b, vs, lanes) if c > 1 else vs[0]
        out = b.shuffle_vector(allv, ir.Constant(allv.type, ir.Undefined), ir.Constant(vec(I32, lanes * c), order))
        ptr = e.gep(F32, dst, b.mul(p, c64(c)))
        if count is None:
            b.store(out, ptr, align=4)
        else:
            e.call(f"llvm.masked.store.v{lanes * c}f32.p0", VOID,
                   [out, ptr, c32(4), _lane_mask(e, b.mul(count, c64(c)), lanes * c)])

    pmain = b.add(p0, b.mul(b.sdiv(b.sub(p1, p0), c64(lanes)), c64(lanes)))
    with e.loop(p0, pmain, lanes, name="p") as p:
        block(p, None)
    with b.if_then(b.icmp_signed("<", pmain, p1)):
        block(pmain, b.sub(p1, pmain))
    b.ret_void()


@functools.cache
def _interleave_library(isa: Isa, c: int) -> jit.Library:
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit_interleave(m, prefix, isa.f32_lanes, c)
        return m
    return jit.load(f"interleave|{isa.level}|c{c}", isa, build)


def nchw_to_nhwc(src: np.ndarray, dst: np.ndarray, threads: int, isa: Isa | None = None) -> BoundKernel | None:
    """A bound kernel writing NCHW ``src`` (each image contiguous) as NHWC ``dst`` (contiguous)
    for at most 16 channels, interleaving in registers; None otherwise."""
    if src.ndim != 4 or src.dtype.itemsize != 4 or dst.dtype.itemsize != 4:
        return None
    n, c, h, w = src.shape
    if not 1 < c <= IL_MAX_C or dst.shape != (n, h, w, c) or src.size == 0:
        return None
    st = [x // 4 for x in src.strides]
    if st[3] != 1 or st[2] != w or st[1] != h * w or not dst.flags.c_contiguous:
        return None
    isa = isa or host_isa()
    hw = h * w
    pb = IL_PIXELS
    nblk = -(-hw // pb)
    if n * nblk < 4 * threads:
        per = -(-hw // max(1, -(-4 * threads // n)))
        pb = max(isa.f32_lanes, -(-per // isa.f32_lanes) * isa.f32_lanes)
        nblk = -(-hw // pb)
    ctx = np.zeros(len(IL_FIELDS), np.int64)
    vals = dict(src=src.ctypes.data, dst=dst.ctypes.data, hw=hw, plane=st[1], xn=st[0], yn=hw * c, pb=pb, nblk=nblk)
    for k, v in vals.items():
        ctx[ILF[k]] = v
    return BoundKernel(_interleave_library(isa, c).address("il_task"), ctx, n * nblk if src.size else 0, threads,
                       (src, dst))


def copy_op(name: str, src: Tensor, dst: Tensor, perm: tuple[int, ...] | None, threads: int) -> Op:
    """An op writing ``transpose(src, perm)`` (physical arrays) into ``dst``."""

    def view(a: np.ndarray) -> np.ndarray:
        return a if perm is None else a.transpose(perm)

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[BoundKernel]:
        k = nchw_to_nhwc(ins[0], outs[0], threads) if perm == (0, 2, 3, 1) else None
        k = k or transpose_copy(view(ins[0]), outs[0], threads)
        k = k or strided_copy(view(ins[0]), outs[0], threads)
        if k is None:
            raise _Unbindable
        return [k]

    if src.dtype.itemsize != 4 or len(src.shape) > MAX_DIMS:
        return Op(name, "Reorder", [src], [dst], native=False, physical=True,
                  fn=lambda a: [np.asarray(view(a[0]), order="C")])
    return Op(name, "Reorder", [src], [dst], native=True, bind=bind)


class _Unbindable(Exception):
    pass


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
EH = {n: i for i, n in enumerate(EW_HEAD)}
EW_IN0, EW_IN_WORDS = 16, 5       # per input: ptr, s0, s1, s2, inner stride (0 or 1)
EW_PROG0, EW_INSTR_WORDS = EW_IN0 + MAX_INPUTS * EW_IN_WORDS, 6  # op, dst, a, b, imm0, imm1
EW_WORDS = EW_PROG0 + MAX_INSTR * EW_INSTR_WORDS

UNARY_OPS = ("neg", "abs", "relu", "clamp", "exp", "log", "sqrt", "sigmoid", "tanh", "erf", "gelu_erf",
             "gelu_tanh", "swish", "hswish", "hsigmoid", "elu", "floor", "ceil", "softplus", "mish", "square",
             "mulc", "addc", "rsubc", "rdivc", "powc")
BINARY_OPS = ("add", "sub", "mul", "div", "max", "min", "sqdiff", "prelu")
OPCODES = {"load": 0, "store": 1, "load_i32": 2, "load_i64": 3, "load_u8": 4}
#: the LOAD opcode for an input's numpy dtype (converted to f32 as it is read)
LOAD_FOR = {np.dtype(np.float32): "load", np.dtype(np.int32): "load_i32", np.dtype(np.int64): "load_i64",
            np.dtype(np.uint8): "load_u8", np.dtype(np.bool_): "load_u8"}
for _i, _n in enumerate(UNARY_OPS):
    OPCODES[_n] = 10 + _i
for _i, _n in enumerate(BINARY_OPS):
    OPCODES[_n] = 60 + _i


class _Math:
    """Vector math in LLVM IR for ``lanes`` x f32 (polynomials; no libm calls)."""

    def __init__(self, e: Emitter, lanes: int):
        self.e, self.b, self.lanes = e, e.b, lanes
        self.vt = vec(F32, lanes)
        self.vi = vec(I32, lanes)

    def c(self, x: float) -> ir.Constant:
        return ir.Constant(self.vt, [float(x)] * self.lanes)

    def ci(self, x: int) -> ir.Constant:
        return ir.Constant(self.vi, [int(x)] * self.lanes)

    def poly(self, x: ir.Value, coeffs: list[float]) -> ir.Value:
        """coeffs[0] * x^n + ... + coeffs[n] (Horner)."""
        acc = self.c(coeffs[0])
        for k in coeffs[1:]:
            acc = _fma(self.e, acc, x, self.c(k))
        return acc

    def sel(self, cond: ir.Value, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.select(cond, a, c)

    def lt(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.fcmp_ordered("<", a, c)

    def gt(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.fcmp_ordered(">", a, c)

    def isnan(self, a: ir.Value) -> ir.Value:
        return self.b.fcmp_unordered("uno", a, a)

    def abs(self, x: ir.Value) -> ir.Value:
        return self.e.call(f"llvm.fabs.v{self.lanes}f32", self.vt, [x])

    def floor(self, x: ir.Value) -> ir.Value:
        return self.e.call(f"llvm.floor.v{self.lanes}f32", self.vt, [x])

    def ceil(self, x: ir.Value) -> ir.Value:
        return self.e.call(f"llvm.ceil.v{self.lanes}f32", self.vt, [x])

    def sqrt(self, x: ir.Value) -> ir.Value:
        return self.e.call(f"llvm.sqrt.v{self.lanes}f32", self.vt, [x])

    def copysign(self, mag: ir.Value, sign: ir.Value) -> ir.Value:
        b = self.b
        bits = b.or_(b.and_(b.bitcast(mag, self.vi), self.ci(0x7FFFFFFF)),
                     b.and_(b.bitcast(sign, self.vi), self.ci(-0x80000000)))
        return b.bitcast(bits, self.vt)

    def exp(self, x: ir.Value) -> ir.Value:
        b = self.b
        xc = self.sel(self.lt(x, self.c(-87.33654)), self.c(-87.33654), x)
        xc = self.sel(self.gt(xc, self.c(88.72283)), self.c(88.72283), xc)
        k = self.floor(_fma(self.e, xc, self.c(1.4426950408889634), self.c(0.5)))
        r = _fma(self.e, k, self.c(-0.693359375), xc)
        r = _fma(self.e, k, self.c(2.12194440e-4), r)
        p = self.poly(r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                          1.6666665459e-1, 5.0000001201e-1])
        p = _fma(self.e, p, b.fmul(r, r), b.fadd(r, self.c(1.0)))
        ki = b.fptosi(k, self.vi)
        scale = b.bitcast(b.shl(b.add(ki, self.ci(127)), self.ci(23)), self.vt)
        y = b.fmul(p, scale)
        y = self.sel(self.gt(x, self.c(88.72283)), self.c(math.inf), y)
        y = self.sel(self.lt(x, self.c(-87.33654)), self.c(0.0), y)
        return self.sel(self.isnan(x), x, y)

    def log(self, x: ir.Value) -> ir.Value:
        b = self.b
        bits = b.bitcast(x, self.vi)
        e_ = b.sub(b.and_(b.lshr(bits, self.ci(23)), self.ci(0xFF)), self.ci(126))
        m = b.bitcast(b.or_(b.and_(bits, self.ci(0x007FFFFF)), self.ci(0x3F000000)), self.vt)
        ef = b.sitofp(e_, self.vt)
        small = self.lt(m, self.c(0.707106781186547524))
        ef = self.sel(small, b.fsub(ef, self.c(1.0)), ef)
        m = self.sel(small, b.fsub(b.fadd(m, m), self.c(1.0)), b.fsub(m, self.c(1.0)))
        z = b.fmul(m, m)
        y = self.poly(m, [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                          3.3333331174e-1])
        y = b.fmul(b.fmul(y, m), z)
        y = _fma(self.e, ef, self.c(-2.12194440e-4), y)
        y = _fma(self.e, z, self.c(-0.5), y)
        r = b.fadd(m, y)
        r = _fma(self.e, ef, self.c(0.693359375), r)
        r = self.sel(b.fcmp_ordered("==", x, self.c(0.0)), self.c(-math.inf), r)
        r = self.sel(self.lt(x, self.c(0.0)), self.c(math.nan), r)
        r = self.sel(b.fcmp_ordered("==", x, self.c(math.inf)), x, r)
        return self.sel(self.isnan(x), x, r)

    def sigmoid(self, x: ir.Value) -> ir.Value:
        b = self.b
        return b.fdiv(self.c(1.0), b.fadd(self.c(1.0), self.exp(b.fneg(x))))

    def tanh(self, x: ir.Value) -> ir.Value:
        b = self.b
        a = self.abs(x)
        big = b.fsub(self.c(1.0), b.fdiv(self.c(2.0), b.fadd(self.exp(b.fadd(a, a)), self.c(1.0))))
        x2 = b.fmul(x, x)
        small = b.fmul(x, self.poly(x2, [-1382 / 155925, 62 / 2835, -17 / 315, 2 / 15, -1 / 3, 1.0]))
        return self.sel(self.lt(a, self.c(0.4)), small, self.copysign(big, x))

    def erf(self, x: ir.Value) -> ir.Value:
        b = self.b
        a = self.abs(x)
        t = b.fdiv(self.c(1.0), _fma(self.e, a, self.c(0.3275911), self.c(1.0)))
        p = b.fmul(t, self.poly(t, [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592]))
        big = b.fsub(self.c(1.0), b.fmul(p, self.exp(b.fneg(b.fmul(a, a)))))
        x2 = b.fmul(x, x)
        c = 2 / math.sqrt(math.pi)
        small = b.fmul(x, self.poly(x2, [-c / 1320, c / 216, -c / 42, c / 10, -c / 3, c]))
        return self.sel(self.lt(a, self.c(0.5)), small, self.copysign(big, x))

    def softplus(self, x: ir.Value) -> ir.Value:
        b = self.b
        y = self.log(b.fadd(self.c(1.0), self.exp(x)))
        return self.sel(self.gt(x, self.c(20.0)), x, y)


def _fma(e: Emitter, a: ir.Value, b_: ir.Value, c: ir.Value) -> ir.Value:
    t = a.type
    return e.call(f"llvm.fmuladd.v{t.count}f32", t, [a, b_, c])


def _unary(mth: _Math, name: str, x: ir.Value, imm0: ir.Value, imm1: ir.Value) -> ir.Value:
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
        inner = b.fmul(c(math.sqrt(2 / math.pi)), _fma(mth.e, b.fmul(b.fmul(x, x), x), c(0.044715), x))
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


def _binary(mth: _Math, name: str, x: ir.Value, y: ir.Value) -> ir.Value:
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
    mth = _Math(e, lanes)
    h = {k: e.field(ctx, i) for k, i in EH.items()}
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
            tail_mask = _lane_mask(e, b.sub(n, b.mul(b.sub(nv, c64(1)), c64(lanes))), lanes)
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
                    _masked_store(e, e.load(vt, reg(ra, last)), e.gep(F32, p, b.mul(last, c64(lanes))), tail_mask)

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


def _f32_bits(v: float) -> int:
    return int(np.array([v], np.float32).view(np.uint32)[0])


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
        out, acc = [], 1
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
        st = contiguous(full)
        strides.append([0 if d == 1 else s for d, s in zip(full, st)])
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
        return BoundKernel(_eltwise_library(isa).address("eltwise_task"), np.zeros(EW_WORDS, np.int64), 0,
                           threads, (y, *inputs))
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
    ctx = np.zeros(EW_WORDS, np.int64)
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
        ctx[EH[k]] = v
    for i, v in enumerate(views):
        base = EW_IN0 + i * EW_IN_WORDS
        ctx[base:base + EW_IN_WORDS] = [v.ctypes.data, st[i + 1][0], st[i + 1][1], st[i + 1][2], st[i + 1][3]]
    for j, (op, dst, a, b_, imm0, imm1) in enumerate(program):
        base = EW_PROG0 + j * EW_INSTR_WORDS
        ctx[base:base + EW_INSTR_WORDS] = [OPCODES[op], dst, a, b_, _f32_bits(imm0), _f32_bits(imm1)]
    n_tasks = -(-nrows // rpt) * ncb if y.size else 0
    return BoundKernel(_eltwise_library(isa).address("eltwise_task"), ctx, n_tasks, threads, (y, *inputs))
