"""Scaled dot-product attention: ``softmax(Q K^T * scale + mask) V`` in one kernel.

``attention_task(ctx, task)`` computes a block of query rows of one (batch, head). It first
transposes that head's K into a stack buffer (``kt[e][s]``, gathered), then for each tile of
``MR`` query rows: the scores ``Q K^T`` in registers (``MR x NV`` vectors, broadcasting one
Q element per row), scaled and masked into a row buffer; a softmax over each row (the sums
kept aside); and ``P V`` accumulated in registers, divided by the row sums when stored.

Q, K, V and the output are strided views (the head's vectors contiguous), so the Transposes
that split and merge heads around attention cost nothing; the mask broadcasts by strides.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.batched_gemm import transpose_block
from ember.devices.cpu.kernels.gemm import exp_nonpositive
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import (
    VectorMath,
    fmuladd,
    lane_mask,
    masked_load,
    masked_store,
)
from ember.devices.cpu.runtime.kernel_call import BoundKernel

ATTENTION_CONTEXT = ContextLayout(
    "attention",
    ("q", "k", "v", "m", "o", "B", "H", "L", "S", "E", "Ev", "qb", "qh", "ql", "kb", "kh", "ks", "vb", "vh",
     "vs", "mb", "mh", "ml", "ms", "ob", "oh", "ol", "scale", "causal", "hasmask", "lblk", "nlb", "spad"),
    pointers=("q", "k", "v", "m", "o"))
MAX_STACK_FLOATS = 1 << 18  # K^T and the score rows live on the stack


def tiles(isa: Isa) -> tuple[int, int]:
    """(MR query rows, NV vectors of columns) per register tile."""
    return (6, 4) if isa.registers >= 32 else (3, 2)


def _emit(m: ir.Module, prefix: str, isa: Isa) -> None:
    lanes = isa.f32_lanes
    MR, NV = tiles(isa)
    fn = Emitter.function(m, f"{prefix}_attention_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, ATTENTION_CONTEXT)
    b = e.b
    task = fn.args[1]
    vt = vec(F32, lanes)
    mth = VectorMath(e, lanes)
    zero = ir.Constant(vt, None)
    neg_inf = ir.Constant(vt, [-math.inf] * lanes)
    I32 = ir.IntType(32)
    lane_i32 = ir.Constant(vec(I32, lanes), list(range(lanes)))  # column compares on 32-bit lanes
    nlb, H, L, S, E, Ev = e.arg("nlb"), e.arg("H"), e.arg("L"), e.arg("S"), e.arg("E"), e.arg("Ev")
    lb = b.srem(task, nlb)
    bh = b.sdiv(task, nlb)
    h, bb = b.srem(bh, H), b.sdiv(bh, H)
    l0 = b.mul(lb, e.arg("lblk"))
    l1 = e.min(L, b.add(l0, e.arg("lblk")))

    def base(ptr: str, sb: str, sh: str) -> ir.Value:
        return e.gep(F32, e.arg(ptr, PTR), b.add(b.mul(bb, e.arg(sb)), b.mul(h, e.arg(sh))))

    q, k, v = base("q", "qb", "qh"), base("k", "kb", "kh"), base("v", "vb", "vh")
    mk, o = base("m", "mb", "mh"), base("o", "ob", "oh")
    ql, ks, vs, ml, ms, ol = e.arg("ql"), e.arg("ks"), e.arg("vs"), e.arg("ml"), e.arg("ms"), e.arg("ol")
    spad = e.arg("spad")
    scale = e.splat(e.arg("scale", F32), lanes)
    causal = b.icmp_signed("!=", e.arg("causal"), c64(0))
    hasmask = b.icmp_signed("!=", e.arg("hasmask"), c64(0))
    s32 = e.splat(b.trunc(S, I32), lanes)
    kt_slot = b.alloca(F32, size=b.mul(E, spad))
    kt_slot.align = 64
    st_slot = b.alloca(F32, size=b.mul(c64(MR), spad))
    st_slot.align = 64

    def opaque(p: ir.Value) -> ir.Value:  # llvmlite types allocas; the buffers hold vectors and floats
        return b.inttoptr(b.ptrtoint(p, I64), PTR)

    kt, st = opaque(kt_slot), opaque(st_slot)
    rowsum = opaque(b.alloca(F32, size=c64(MR)))

    # ---- K^T: kt[e * spad + s] = K[s, e] (zero for s >= S), lanes x lanes blocks transposed
    # in registers (a gather per vector cost 3x as much)
    with e.loop(0, spad, lanes, name="ps") as s0:
        with e.loop(0, E, lanes, name="pe") as e0:
            emask = lane_mask(e, b.sub(E, e0), lanes)
            rows = []
            for i in range(lanes):
                si = b.add(s0, c64(i))
                live = b.and_(emask, e.splat(b.icmp_signed("<", si, S), lanes))
                rows.append(masked_load(e, vt, e.gep(F32, k, b.add(b.mul(si, ks), e0)), live))
            cols = transpose_block(e, rows)
            for j in range(lanes):
                with b.if_then(b.icmp_signed("<", b.add(e0, c64(j)), E)):
                    b.store(cols[j], e.gep(F32, kt, b.add(b.mul(b.add(e0, c64(j)), spad), s0)), align=4)

    ncv = b.sdiv(spad, c64(lanes))

    def hreduce(v: ir.Value, op: str) -> ir.Value:
        """Lane 0 of a halving tree over ``v``: the maximum (ordered ``>``) or the sum."""
        w = lanes // 2
        while w >= 1:
            hi = b.shuffle_vector(v, v, ir.Constant(vec(ir.IntType(32), lanes), [(i + w) % lanes for i in range(lanes)]))
            v = b.select(b.fcmp_ordered(">", hi, v), hi, v) if op == "max" else b.fadd(v, hi)
            w //= 2
        return b.extract_element(v, c32(0))

    def qk_block(mr: int, nv: int, r0: ir.Value, cv: ir.Value, mode: str, rmax: list[ir.Value]) -> None:
        accs = [[e.var(vt, zero) for _ in range(nv)] for _ in range(mr)]
        qrows = [e.gep(F32, q, b.mul(b.add(r0, c64(r)), ql)) for r in range(mr)]
        with e.loop(0, E, name="qe") as ee:
            krow = e.gep(F32, kt, b.add(b.mul(ee, spad), b.mul(cv, c64(lanes))))
            kv = [e.load(vt, e.gep(F32, krow, j * lanes), align=4) for j in range(nv)]
            for r in range(mr):
                a = e.splat(e.load(F32, e.gep(F32, qrows[r], ee)), lanes)
                for j in range(nv):
                    b.store(fmuladd(e, a, kv[j], e.load(vt, accs[r][j])), accs[r][j])
        for r in range(mr):
            row = b.add(r0, c64(r))
            mrow = e.gep(F32, mk, b.mul(row, ml))
            for j in range(nv):
                col = b.mul(b.add(cv, c64(j)), c64(lanes))
                cidx = b.add(e.splat(b.trunc(col, I32), lanes), lane_i32)
                x = b.fmul(e.load(vt, accs[r][j]), scale)
                inside = b.icmp_signed("<", cidx, s32)
                if mode == "scalar":
                    x = b.fadd(x, e.splat(e.load(F32, mrow), lanes))
                elif mode == "row":
                    x = b.fadd(x, masked_load(e, vt, e.gep(F32, mrow, col), inside))
                if mode == "causal":
                    x = b.select(b.icmp_signed(">", cidx, e.splat(b.trunc(row, I32), lanes)), neg_inf, x)
                x = b.select(inside, x, neg_inf)
                b.store(x, e.gep(F32, st, b.add(b.mul(c64(r), spad), col)), align=4)
                cur = e.load(vt, rmax[r])  # the row maximum, kept while the scores are made
                b.store(b.select(b.fcmp_ordered(">", x, cur), x, cur), rmax[r])

    def softmax_rows(mr: int, rmax: list[ir.Value]) -> None:
        for r in range(mr):
            srow = e.gep(F32, st, b.mul(c64(r), spad))
            # a fully masked row (max -inf) gives NaN, as the reference does
            vmax = e.splat(hreduce(e.load(vt, rmax[r]), "max"), lanes)
            tot = e.var(vt, zero)
            with e.loop(0, spad, lanes, name="se") as c:
                p = e.gep(F32, srow, c)
                ex = exp_nonpositive(e, mth, b.fsub(e.load(vt, p, align=4), vmax))  # x - max <= 0, or NaN
                b.store(ex, p, align=4)
                b.store(b.fadd(e.load(vt, tot), ex), tot)
            b.store(hreduce(e.load(vt, tot), "sum"), e.gep(F32, rowsum, c64(r)))

    def pv_block(mr: int, nv: int, r0: ir.Value, ev0: ir.Value, full: bool) -> None:
        accs = [[e.var(vt, zero) for _ in range(nv)] for _ in range(mr)]
        masks = [None if full else lane_mask(e, b.sub(Ev, b.add(ev0, c64(j * lanes))), lanes) for j in range(nv)]
        with e.loop(0, S, name="pv") as s:
            vrow = e.gep(F32, v, b.add(b.mul(s, vs), ev0))
            vv = [masked_load(e, vt, e.gep(F32, vrow, j * lanes), masks[j]) for j in range(nv)]
            for r in range(mr):
                p = e.splat(e.load(F32, e.gep(F32, st, b.add(b.mul(c64(r), spad), s))), lanes)
                for j in range(nv):
                    b.store(fmuladd(e, p, vv[j], e.load(vt, accs[r][j])), accs[r][j])
        for r in range(mr):
            inv = e.splat(b.fdiv(ir.Constant(F32, 1.0), e.load(F32, e.gep(F32, rowsum, c64(r)))), lanes)
            orow = e.gep(F32, o, b.add(b.mul(b.add(r0, c64(r)), ol), ev0))
            for j in range(nv):
                masked_store(e, b.fmul(e.load(vt, accs[r][j]), inv), e.gep(F32, orow, j * lanes), masks[j])

    rmaxes = [e.var(vt) for _ in range(MR)]

    def tile(mr: int, r0: ir.Value, mode: str) -> None:
        for r in range(mr):
            b.store(neg_inf, rmaxes[r])
        cmain = b.mul(b.sdiv(ncv, c64(NV)), c64(NV))
        with e.loop(0, cmain, NV, name="cv") as cv:
            qk_block(mr, NV, r0, cv, mode, rmaxes)
        with e.loop(cmain, ncv, name="cr") as cv:
            qk_block(mr, 1, r0, cv, mode, rmaxes)
        softmax_rows(mr, rmaxes)
        with e.loop(0, Ev, NV * lanes, name="ev") as ev0:
            left = e.cdiv(b.sub(Ev, ev0), lanes)
            nvs = e.min(left, c64(NV))
            # case nv: nv whole vectors of V columns (no lane masks); NV + nv: the last one partial
            partial = b.icmp_signed("<", b.sub(Ev, ev0), b.mul(nvs, c64(lanes)))
            done = fn.append_basic_block("pv.done")
            sw = b.switch(b.add(nvs, b.select(partial, c64(NV), c64(0))), done)
            for nv in range(1, NV + 1):
                for full in (True, False):
                    blk = fn.append_basic_block(f"pv.{mr}x{nv}{'' if full else 'm'}")
                    sw.add_case(c64(nv if full else NV + nv), blk)
                    b.position_at_end(blk)
                    pv_block(mr, nv, r0, ev0, full)
                    b.branch(done)
            b.position_at_end(done)

    rmain = b.add(l0, b.mul(b.sdiv(b.sub(l1, l0), c64(MR)), c64(MR)))
    # one copy of the row loops per score kind (no mask, a scalar mask, a row of S mask values,
    # causal; the lowering never passes a mask with causal): no branch among the unrolled
    # score vectors
    done = fn.append_basic_block("masks.done")
    kind = b.select(hasmask, b.select(b.icmp_signed("==", ms, c64(0)), c64(1), c64(2)), c64(0))
    sw = b.switch(b.select(causal, c64(3), kind), done)
    for code, mode in enumerate(("none", "scalar", "row", "causal")):
        blk = fn.append_basic_block(f"mask.{mode}")
        sw.add_case(c64(code), blk)
        b.position_at_end(blk)
        with e.loop(l0, rmain, MR, name="rt") as r0:
            tile(MR, r0, mode)
        with e.loop(rmain, l1, name="rr") as r0:
            tile(1, r0, mode)
        b.branch(done)
    b.position_at_end(done)
    b.ret_void()


def _build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit(m, prefix, isa)
    return m


@functools.cache
def _library(isa: Isa) -> jit.Library:
    mr, nv = tiles(isa)
    return jit.load(f"attention|{isa.level}|mr{mr}|nv{nv}|m6", isa, lambda p: _build(p, isa))


def fits(s: int, e: int, isa: Isa | None = None) -> bool:
    """Whether a head with ``s`` keys of width ``e`` fits the kernel's stack buffers."""
    isa = isa or host_isa()
    lanes = isa.f32_lanes
    spad = -(-max(s, 1) // lanes) * lanes
    return spad * (e + tiles(isa)[0]) <= MAX_STACK_FLOATS


def _strides4(a: np.ndarray) -> list[int]:
    return [s // 4 for s in a.strides]


def attention_kernel(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, out: np.ndarray,
                     scale: float, causal: bool, threads: int, isa: Isa | None = None) -> BoundKernel:
    """A bound attention kernel. ``q [B,H,L,E]``, ``k [B,H,S,E]``, ``v [B,H,S,Ev]`` and ``out
    [B,H,L,Ev]`` are float32 views with a contiguous last axis (batch and head axes may
    broadcast with stride 0); ``mask`` broadcasts to ``[B,H,L,S]`` (last stride 1 or 0)."""
    isa = isa or host_isa()
    B, H, L, Ev = out.shape
    S, E = k.shape[2], k.shape[3]
    lanes = isa.f32_lanes
    mr, _ = tiles(isa)
    spad = -(-max(S, 1) // lanes) * lanes
    ctx = ATTENTION_CONTEXT.new()
    qs, ks_, vs_, os_ = _strides4(q), _strides4(k), _strides4(v), _strides4(out)
    if mask is not None and causal:  # the kernel has no causal-and-mask variant: fold the two
        future = np.triu(np.ones((L, S), bool), 1)
        mask = np.where(future, np.float32(-np.inf), np.broadcast_to(mask, (B, H, L, S))).astype(np.float32)
        causal = False
    if mask is not None:
        mask = np.broadcast_to(mask, (B, H, L, S))
        ms_ = _strides4(mask)
    else:
        ms_ = [0, 0, 0, 0]
    groups = B * H
    lblk = L
    if groups < 4 * threads and L > mr:
        per = -(-L // max(1, -(-4 * threads // groups)))
        lblk = max(mr, -(-per // mr) * mr)
    nlb = -(-L // lblk)
    vals = dict(q=q.ctypes.data, k=k.ctypes.data, v=v.ctypes.data, m=0 if mask is None else mask.ctypes.data,
                o=out.ctypes.data, B=B, H=H, L=L, S=S, E=E, Ev=Ev, qb=qs[0], qh=qs[1], ql=qs[2], kb=ks_[0],
                kh=ks_[1], ks=ks_[2], vb=vs_[0], vh=vs_[1], vs=vs_[2], mb=ms_[0], mh=ms_[1], ml=ms_[2], ms=ms_[3],
                ob=os_[0], oh=os_[1], ol=os_[2], scale=int(np.array([scale], np.float32).view(np.uint32)[0]),
                causal=int(causal), hasmask=int(mask is not None), lblk=lblk, nlb=nlb, spad=spad)
    for key, val in vals.items():
        ctx[ATTENTION_CONTEXT[key]] = val
    n_tasks = groups * nlb if out.size else 0
    return BoundKernel(_library(isa).address("attention_task"), ctx, n_tasks, threads, (q, k, v, mask, out), layout=ATTENTION_CONTEXT)
