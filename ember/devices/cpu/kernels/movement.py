"""Memory movement kernels: strided copies, gathers, tiled transposes and the NCHW -> NHWC
channel interleave.

``copy_task(ctx, task)`` copies a tensor of up to 8 dimensions with arbitrary element
strides on both sides (4-byte elements; 8-byte ones as pairs). The innermost loop is chosen where it is cheapest:
contiguous on both sides (vector copy), contiguous on one side (vector load + scatter, or
gather + vector store), else scalar. A task is a block of rows of the outer dimensions.
``gather_task`` gathers rows by index (Gather, nearest-neighbour Resize); ``tr_task``
transposes 2-D tiles in registers; ``il_task`` interleaves up to 16 channels.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import lane_mask, masked_load, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.errors import EmberError

MAX_DIMS = 8
COPY_CONTEXT = ContextLayout(
    "copy",
    ("src", "dst", "rpt", "rows", *(f"d{i}" for i in range(MAX_DIMS)), *(f"s{i}" for i in range(MAX_DIMS)),
     *(f"t{i}" for i in range(MAX_DIMS))),
    pointers=("src", "dst"))


def _emit_copy(m: ir.Module, prefix: str, lanes: int, et: ir.Type = F32) -> None:
    """copy_task for items of type ``et`` (f32 moves every 4-byte item; i8/i16 the small ones)."""
    fn = Emitter.function(m, f"{prefix}_copy_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    vt = vec(et, lanes)
    tname = "f32" if et == F32 else f"i{et.width}"
    size = 4 if et == F32 else et.width // 8

    def mload(ptr: ir.Value, mask: ir.Value | None) -> ir.Value:
        if mask is None:
            return e.load(vt, ptr, align=size)
        return e.call(f"llvm.masked.load.v{lanes}{tname}.p0", vt, [ptr, c32(size), mask, ir.Constant(vt, None)])

    def mstore(v: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
        if mask is None:
            b.store(v, ptr, align=size)
        else:
            e.call(f"llvm.masked.store.v{lanes}{tname}.p0", VOID, [v, ptr, c32(size), mask])

    def addresses(base: ir.Value, index: ir.Value) -> ir.Value:
        return b.inttoptr(b.add(e.splat(b.ptrtoint(base, I64), lanes), b.mul(index, e.splat(c64(size), lanes))),
                          vec(PTR, lanes))
    vi = vec(I64, lanes)
    arg = {k: e.field(ctx, i) for k, i in COPY_CONTEXT.index.items()}
    src, dst = b.inttoptr(arg["src"], PTR), b.inttoptr(arg["dst"], PTR)
    rpt, rows = arg["rpt"], arg["rows"]
    r0 = b.mul(task, rpt)
    r1 = e.min(rows, b.add(r0, rpt))
    n = arg[f"d{MAX_DIMS - 1}"]
    s_in, t_in = arg[f"s{MAX_DIMS - 1}"], arg[f"t{MAX_DIMS - 1}"]
    lane_idx = ir.Constant(vi, list(range(lanes)))
    nmain = b.mul(b.sdiv(n, c64(lanes)), c64(lanes))
    both = b.and_(b.icmp_signed("==", s_in, c64(1)), b.icmp_signed("==", t_in, c64(1)))
    src_c = b.icmp_signed("==", s_in, c64(1))
    dst_c = b.icmp_signed("==", t_in, c64(1))
    with e.loop(r0, r1, name="r") as r:
        # row r -> (i0..i4), offsets into src and dst
        rem = e.var(I64, r)
        so = e.var(I64, c64(0))
        do = e.var(I64, c64(0))
        for d in range(MAX_DIMS - 2, -1, -1):
            dim = arg[f"d{d}"]
            cur = e.load(I64, rem)
            idx = b.srem(cur, dim)
            b.store(b.sdiv(cur, dim), rem)
            b.store(b.add(e.load(I64, so), b.mul(idx, arg[f"s{d}"])), so)
            b.store(b.add(e.load(I64, do), b.mul(idx, arg[f"t{d}"])), do)
        sp = e.gep(et, src, e.load(I64, so))
        dp = e.gep(et, dst, e.load(I64, do))

        def vector_loop(body) -> None:  # noqa: ANN001
            with e.loop(0, nmain, lanes, name="v") as i:
                body(i, None)
            with b.if_then(b.icmp_signed("<", nmain, n)):
                body(nmain, lane_mask(e, b.sub(n, nmain), lanes))

        def contiguous(i: ir.Value, mask: ir.Value | None) -> None:
            mstore(mload(e.gep(et, sp, i), mask), e.gep(et, dp, i), mask)

        def scatter(i: ir.Value, mask: ir.Value | None) -> None:
            v = mload(e.gep(et, sp, i), mask)
            ptrs = addresses(dp, b.mul(b.add(e.splat(i, lanes), lane_idx), e.splat(t_in, lanes)))
            m_ = mask if mask is not None else ir.Constant(vec(ir.IntType(1), lanes), [1] * lanes)
            e.call(f"llvm.masked.scatter.v{lanes}{tname}.v{lanes}p0", VOID, [v, ptrs, c32(size), m_])

        def gather(i: ir.Value, mask: ir.Value | None) -> None:
            ptrs = addresses(sp, b.mul(b.add(e.splat(i, lanes), lane_idx), e.splat(s_in, lanes)))
            m_ = mask if mask is not None else ir.Constant(vec(ir.IntType(1), lanes), [1] * lanes)
            v = e.call(f"llvm.masked.gather.v{lanes}{tname}.v{lanes}p0", vt, [ptrs, c32(size), m_, ir.Constant(vt, None)])
            mstore(v, e.gep(et, dp, i), mask)

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
                                    it = I32 if et == F32 else et
                                    x = e.load(it, e.gep(it, sp, b.mul(k, s_in)))
                                    b.store(x, e.gep(it, dp, b.mul(k, t_in)))
    b.ret_void()


GATHER_CONTEXT = ContextLayout(
    "gather",
    ("data", "idx", "out", "outer", "n", "inner", "k", "idx64", "neg", "rpt", "rows", "ostride"),
    pointers=("data", "idx", "out"))


def _emit_gather(m: ir.Module, prefix: str, lanes: int, et: ir.Type = I32) -> None:
    """gather_task(ctx, task): out[o, j, :] = data[o, idx[j], :] for a block of (o, j) rows
    (units of ``et``: 4 bytes, or 1/2 for small items; output rows ``ostride`` units apart; an
    index out of [0, n) gives zeros; negative ones count from the end when ``neg``)."""
    fn = Emitter.function(m, f"{prefix}_gather_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    vt = vec(et, lanes)
    size = et.width // 8
    arg = {k: e.field(ctx, i) for k, i in GATHER_CONTEXT.index.items()}
    data, idxp, out = (b.inttoptr(arg[k], PTR) for k in ("data", "idx", "out"))
    n, inner, k = arg["n"], arg["inner"], arg["k"]
    r0 = b.mul(task, arg["rpt"])
    r1 = e.min(arg["rows"], b.add(r0, arg["rpt"]))
    nmain = b.mul(b.sdiv(inner, c64(lanes)), c64(lanes))
    tail = lane_mask(e, b.sub(inner, nmain), lanes)
    zero = ir.Constant(vt, None)
    with e.loop(r0, r1, name="row") as row:
        o, j = b.sdiv(row, k), b.srem(row, k)
        i64v = e.load(I64, e.gep(I64, idxp, j))
        i32v = b.sext(e.load(I32, e.gep(I32, idxp, j)), I64)
        i = b.select(b.icmp_signed("!=", arg["idx64"], c64(0)), i64v, i32v)
        i = b.select(b.and_(b.icmp_signed("!=", arg["neg"], c64(0)), b.icmp_signed("<", i, c64(0))), b.add(i, n), i)
        ok = b.icmp_unsigned("<", i, n)
        dst = e.gep(et, out, b.mul(row, arg["ostride"]))
        src = e.gep(et, data, b.mul(b.add(b.mul(o, n), i), inner))

        def masked(ptr: ir.Value, mask: ir.Value | None) -> ir.Value:
            if mask is None:
                return e.load(vt, ptr, align=size)
            return e.call(f"llvm.masked.load.v{lanes}i{et.width}.p0", vt, [ptr, c32(size), mask, zero])

        def put(v: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
            if mask is None:
                b.store(v, ptr, align=size)
            else:
                e.call(f"llvm.masked.store.v{lanes}i{et.width}.p0", VOID, [v, ptr, c32(size), mask])

        with b.if_else(ok) as (good, bad):
            with good:
                with e.loop(0, nmain, lanes, name="c") as c:
                    put(masked(e.gep(et, src, c), None), e.gep(et, dst, c), None)
                with b.if_then(b.icmp_signed("<", nmain, inner)):
                    put(masked(e.gep(et, src, nmain), tail), e.gep(et, dst, nmain), tail)
            with bad:
                with e.loop(0, nmain, lanes, name="z") as c:
                    put(zero, e.gep(et, dst, c), None)
                with b.if_then(b.icmp_signed("<", nmain, inner)):
                    put(zero, e.gep(et, dst, nmain), tail)
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


@functools.cache
def _small_library(isa: Isa, bits: int) -> jit.Library:
    """The copy and gather kernels for 1-, 2- or 8-byte items."""
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit_copy(m, prefix, isa.f32_lanes, ir.IntType(bits))
        _emit_gather(m, prefix, isa.f32_lanes, ir.IntType(bits))
        return m
    return jit.load(f"movement|{isa.level}|copy{bits}", isa, build)


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
    """A bound kernel that copies ``src`` into ``dst`` (same shape, 1-, 2-, 4- or 8-byte items,
    any strides); None when the copy does not fit the kernel (more than 8 collapsed dims)."""
    item = src.dtype.itemsize
    if src.shape != dst.shape or item not in (1, 2, 4, 8) or dst.dtype.itemsize != item:
        return None
    unit = item  # 8-byte items move as i64 (as two 4-byte words, the pair became the inner loop)
    if any(s % unit for s in src.strides + dst.strides):
        return None
    shape, ss, ts = list(src.shape), [s // unit for s in src.strides], [s // unit for s in dst.strides]
    dims, ss, ts = _collapse(shape, ss, ts)
    if len(dims) > MAX_DIMS:
        return None
    pad = MAX_DIMS - len(dims)
    dims, ss, ts = [1] * pad + dims, [0] * pad + ss, [0] * pad + ts
    isa = isa or host_isa()
    lib = _library(isa) if unit == 4 else _small_library(isa, 8 * unit)
    ctx = COPY_CONTEXT.new()
    ctx[COPY_CONTEXT["src"]], ctx[COPY_CONTEXT["dst"]] = src.ctypes.data, dst.ctypes.data
    rows = int(np.prod(dims[:-1]))
    inner = dims[-1]
    per_task = max(1, (1 << 14) // max(inner, 1))
    n_tasks = -(-rows // per_task)
    if n_tasks < 4 * threads and rows > 1:
        per_task = max(1, -(-rows // (4 * threads)))
        n_tasks = -(-rows // per_task)
    ctx[COPY_CONTEXT["rpt"]], ctx[COPY_CONTEXT["rows"]] = per_task, rows
    for i in range(MAX_DIMS):
        ctx[COPY_CONTEXT[f"d{i}"]], ctx[COPY_CONTEXT[f"s{i}"]], ctx[COPY_CONTEXT[f"t{i}"]] = dims[i], ss[i], ts[i]
    if src.size == 0:
        n_tasks = 0
    return BoundKernel(lib.address("copy_task"), ctx, n_tasks, threads, (src, dst), layout=COPY_CONTEXT)


def gather_rows(data: np.ndarray, idx: np.ndarray, out: np.ndarray, axis: int, negative: bool, threads: int,
                isa: Isa | None = None) -> BoundKernel:
    """A bound Gather (batch_dims 0): ``out = take(data, idx, axis)`` with zeros for indices out
    of range. ``data`` contiguous, ``out`` contiguous or a 3-D ``(outer, k, row)`` array whose
    rows are evenly spaced (a channel slice of an NHWC buffer: a Concat's part written in place;
    any item size: rows of a multiple of 4 bytes move in 4-byte units, others in their own
    items); ``idx`` contiguous int32 or int64."""
    outer = int(np.prod(data.shape[:axis]))
    n = data.shape[axis]
    row_bytes = int(np.prod(data.shape[axis + 1:])) * data.dtype.itemsize
    word = 4 if row_bytes % 4 == 0 else min(data.dtype.itemsize, 2) if row_bytes % 2 == 0 else 1
    inner = row_bytes // word
    k = idx.size
    rows = outer * k
    ostride = inner
    if not out.flags.c_contiguous and out.size:
        step = out.strides[1] if out.ndim == 3 else 0
        if out.ndim != 3 or out.shape[2] * out.itemsize != row_bytes or out.strides[2] != out.itemsize \
                or step % word or (out.shape[0] > 1 and out.strides[0] != step * k):
            raise EmberError("ember: internal: a gather's output rows are not evenly spaced")
        ostride = step // word
    rpt = max(1, (1 << 13) // max(inner, 1))
    if -(-rows // rpt) < 4 * threads:
        rpt = max(1, -(-rows // (4 * threads)))
    isa = isa or host_isa()
    ctx = GATHER_CONTEXT.new()
    vals = dict(data=data.ctypes.data, idx=idx.ctypes.data, out=out.ctypes.data, outer=outer, n=n, inner=inner,
                k=k, idx64=int(idx.dtype.itemsize == 8), neg=int(negative), rpt=rpt, rows=rows,
                ostride=ostride)
    for key, v in vals.items():
        ctx[GATHER_CONTEXT[key]] = v
    n_tasks = -(-rows // rpt) if rows and inner else 0
    lib = _library(isa) if word == 4 else _small_library(isa, 8 * word)
    return BoundKernel(lib.address("gather_task"), ctx, n_tasks, threads, (data, idx, out), layout=GATHER_CONTEXT)


# --------------------------------------------------------------------------- batched 2-D transposes
TRANSPOSE_CONTEXT = ContextLayout(
    "transpose",
    ("src", "dst", "nb", "sb", "db", "y", "x", "lds", "ldd", "ntile_y", "ntile_x", "tpt", "ntiles"),
    pointers=("src", "dst"))


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
    arg = {k: e.field(ctx, i) for k, i in TRANSPOSE_CONTEXT.index.items()}
    Y, X, lds, ldd = arg["y"], arg["x"], arg["lds"], arg["ldd"]
    t0 = b.mul(task, arg["tpt"])
    t1 = e.min(arg["ntiles"], b.add(t0, arg["tpt"]))
    per_batch = b.mul(arg["ntile_y"], arg["ntile_x"])
    zero = ir.Constant(vt, None)
    with e.loop(t0, t1, name="t") as t:
        n = b.sdiv(t, per_batch)
        r = b.srem(t, per_batch)
        ty, tx = b.sdiv(r, arg["ntile_x"]), b.srem(r, arg["ntile_x"])
        i0, j0 = b.mul(ty, c64(lanes)), b.mul(tx, c64(lanes))
        ni = e.min(c64(lanes), b.sub(Y, i0))  # valid src rows in the tile
        nj = e.min(c64(lanes), b.sub(X, j0))  # valid src columns
        src = e.gep(F32, b.inttoptr(arg["src"], PTR), b.add(b.mul(n, arg["sb"]), b.add(b.mul(i0, lds), j0)))
        dst = e.gep(F32, b.inttoptr(arg["dst"], PTR), b.add(b.mul(n, arg["db"]), b.add(b.mul(j0, ldd), i0)))
        cmask = lane_mask(e, nj, lanes)
        rmask = lane_mask(e, ni, lanes)
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
                        b.store(masked_load(e, vt, e.gep(F32, src, b.mul(c64(k), lds)), cmask), slot)
                    rows.append(e.load(vt, slot))
                for k, v in enumerate(_transpose_rows(b, rows, lanes)):
                    with b.if_then(b.icmp_signed("<", c64(k), nj)):
                        masked_store(e, v, e.gep(F32, dst, b.mul(c64(k), ldd)), rmask)
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
    ctx = TRANSPOSE_CONTEXT.new()
    vals = dict(src=src.ctypes.data, dst=dst.ctypes.data, nb=nb, sb=sb, db=db, y=c, x=a, lds=sc, ldd=da,
                ntile_y=ntile_y, ntile_x=ntile_x, tpt=tpt, ntiles=ntiles)
    for k, v in vals.items():
        ctx[TRANSPOSE_CONTEXT[k]] = v
    return BoundKernel(_transpose_library(isa).address("tr_task"), ctx, -(-ntiles // tpt), threads, (src, dst), layout=TRANSPOSE_CONTEXT)


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
INTERLEAVE_CONTEXT = ContextLayout(
    "interleave",
    ("src", "dst", "hw", "plane", "xn", "yn", "pb", "nblk"),
    pointers=("src", "dst"))
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
    arg = {k: e.field(ctx, i) for k, i in INTERLEAVE_CONTEXT.index.items()}
    nblk, pb, hw = arg["nblk"], arg["pb"], arg["hw"]
    img = b.sdiv(task, nblk)
    p0 = b.mul(b.srem(task, nblk), pb)
    p1 = e.min(hw, b.add(p0, pb))
    src = e.gep(F32, b.inttoptr(arg["src"], PTR), b.mul(img, arg["xn"]))
    dst = e.gep(F32, b.inttoptr(arg["dst"], PTR), b.mul(img, arg["yn"]))
    plane = arg["plane"]
    order = [ch * lanes + p for p in range(lanes) for ch in range(c)]

    def block(p: ir.Value, count: ir.Value | None) -> None:
        mask = None if count is None else lane_mask(e, count, lanes)
        vs = [masked_load(e, vt, e.gep(F32, src, b.add(b.mul(c64(ch), plane), p)), mask) for ch in range(c)]
        allv = _concat(b, vs, lanes) if c > 1 else vs[0]
        out = b.shuffle_vector(allv, ir.Constant(allv.type, ir.Undefined), ir.Constant(vec(I32, lanes * c), order))
        ptr = e.gep(F32, dst, b.mul(p, c64(c)))
        if count is None:
            b.store(out, ptr, align=4)
        else:
            e.call(f"llvm.masked.store.v{lanes * c}f32.p0", VOID,
                   [out, ptr, c32(4), lane_mask(e, b.mul(count, c64(c)), lanes * c)])

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
    ctx = INTERLEAVE_CONTEXT.new()
    vals = dict(src=src.ctypes.data, dst=dst.ctypes.data, hw=hw, plane=st[1], xn=st[0], yn=hw * c, pb=pb, nblk=nblk)
    for k, v in vals.items():
        ctx[INTERLEAVE_CONTEXT[k]] = v
    return BoundKernel(_interleave_library(isa, c).address("il_task"), ctx, n * nblk if src.size else 0, threads,
                       (src, dst), layout=INTERLEAVE_CONTEXT)
