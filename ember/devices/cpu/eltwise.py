"""Memory movement kernels: a strided copy (transposes, layout conversions, slices, concat).

``copy_task(ctx, task)`` copies a tensor of up to 6 dimensions with arbitrary element
strides on both sides (4-byte elements). The innermost loop is chosen where it is cheapest:
contiguous on both sides (vector copy), contiguous on one side (vector load + scatter, or
gather + vector store), else scalar. A task is a block of rows of the outer dimensions.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu import jit
from ember.devices.cpu.codegen import F32, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.gemm import BoundKernel, _lane_mask, _masked_load, _masked_store
from ember.devices.cpu.isa import Isa, host_isa
from ember.devices.cpu.plan import Op, Tensor

VERSION = 1
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


def _build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_copy(m, prefix, isa.f32_lanes)
    return m


@functools.cache
def _library(isa: Isa) -> jit.Library:
    return jit.load(f"movement|v{VERSION}|{isa.level}", isa, lambda p: _build(p, isa))


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


def copy_op(name: str, src: Tensor, dst: Tensor, perm: tuple[int, ...] | None, threads: int) -> Op:
    """An op writing ``transpose(src, perm)`` (physical arrays) into ``dst``."""

    def view(a: np.ndarray) -> np.ndarray:
        return a if perm is None else a.transpose(perm)

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[BoundKernel]:
        k = strided_copy(view(ins[0]), outs[0], threads)
        if k is None:
            raise _Unbindable
        return [k]

    if src.dtype.itemsize != 4 or len(src.shape) > MAX_DIMS:
        return Op(name, "Reorder", [src], [dst], native=False, physical=True,
                  fn=lambda a: [np.ascontiguousarray(view(a[0]))])
    return Op(name, "Reorder", [src], [dst], native=True, bind=bind)


class _Unbindable(Exception):
    pass
