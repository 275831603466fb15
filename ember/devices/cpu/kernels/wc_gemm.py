"""Weight-compressed MatMul: ``y = x @ W.T`` with ``W[n, k] = (q[n, k] - zp[n, g]) * s[n, g]``
(``g = k // group_size``), the INT8 per-channel and INT4 group-wise weights that
``compress_weights`` (NNCF, ``ember.nncf``) and OpenVINO write. The weights stay 8 or 4 bits in
memory; the kernel decompresses them inside its inner loop and multiplies in f32, so a large
MatMul at batch 1 reads a quarter (INT8) or an eighth (INT4) of the f32 weight bytes.

Packing (once, at compile time): codes are made unsigned (i8 + 128, i4 + 8, zero points moved
alike), columns are grouped into panels of ``NR = 4 * lanes`` (64 on AVX-512), and a panel is
stored k-major: ``[panel][k][NR]`` bytes for INT8, ``[panel][k / 2][NR]`` bytes for INT4 (k even
in the low nibble, k odd in the high one). Per panel and group, ``s`` and ``-zp * s`` are f32
vectors of NR. The inner step for one k: load NR codes, widen to i32, convert to f32,
``w = q * s + (-zp * s)`` (one fma), and one fma per row of x. Tasks: panels x row blocks, so
threads split N (and M when it is large).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I8, I32, I64, PTR, VOID, Emitter, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import fmuladd, lane_mask, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import aligned_empty

WC_CONTEXT = ContextLayout(
    "wc_gemm",
    ("x", "y", "w", "s", "zs", "bias", "m", "n", "k", "groups", "gsize", "ldx", "ldy", "mb", "nmb"),
    pointers=("x", "y", "w", "s", "zs", "bias"))

_NV = 4  # vectors per panel


def _rows(isa: Isa) -> int:
    """Rows of x per step: 4 x 4 accumulators + s, zs, w vectors fit 32 AVX-512 registers."""
    return 4 if isa.registers >= 32 else 2


def _emit(m: ir.Module, prefix: str, isa: Isa, bits: int) -> None:
    """wc_task(ctx, task): task -> (panel, row block); y rows of the block, NR columns."""
    lanes = isa.f32_lanes
    nr = lanes * _NV
    vt = vec(F32, lanes)
    fn = Emitter.function(m, f"{prefix}_wc{bits}_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, WC_CONTEXT)
    b = e.b
    task = fn.args[1]
    nmb, mb = e.arg("nmb"), e.arg("mb")
    panel, rb = b.sdiv(task, nmb), b.srem(task, nmb)
    m0 = b.mul(rb, mb)
    m1 = e.min(e.arg("m"), b.add(m0, mb))
    K, G, gs = e.arg("k"), e.arg("groups"), e.arg("gsize")
    ldx, ldy = e.arg("ldx"), e.arg("ldy")
    kbytes = K if bits == 8 else b.sdiv(K, c64(2))  # packed rows per panel
    wpanel = e.gep(I8, e.arg("w", PTR), b.mul(b.mul(panel, kbytes), c64(nr)))
    spanel = e.gep(F32, e.arg("s", PTR), b.mul(b.mul(panel, G), c64(nr)))
    zpanel = e.gep(F32, e.arg("zs", PTR), b.mul(b.mul(panel, G), c64(nr)))
    col0 = b.mul(panel, c64(nr))
    left = b.sub(e.arg("n"), col0)  # columns of this panel that exist (may exceed nr)
    masks = [lane_mask(e, b.sub(left, c64(v * lanes)), lanes) for v in range(_NV)]
    full = b.icmp_signed(">=", left, c64(nr))
    bytes_t = vec(I8, lanes)
    i32v = vec(I32, lanes)
    x_base = e.arg("x", PTR)
    y_base = e.arg("y", PTR)

    def block(rows: int, r0: ir.Value) -> None:
        accs = [[e.var(vt, ir.Constant(vt, None)) for _ in range(_NV)] for _ in range(rows)]
        xrows = [e.gep(F32, x_base, b.mul(b.add(r0, c64(r)), ldx)) for r in range(rows)]
        with e.loop(0, G, name="g") as g:
            svec = [e.load(vt, e.gep(F32, spanel, b.add(b.mul(g, c64(nr)), c64(v * lanes))), align=4)
                    for v in range(_NV)]
            zvec = [e.load(vt, e.gep(F32, zpanel, b.add(b.mul(g, c64(nr)), c64(v * lanes))), align=4)
                    for v in range(_NV)]
            k0 = b.mul(g, gs)
            step = 1 if bits == 8 else 2
            with e.loop(k0, b.add(k0, gs), step, name="k") as k:
                row = k if bits == 8 else b.sdiv(k, c64(2))
                wrow = e.gep(I8, wpanel, b.mul(row, c64(nr)))
                codes = []
                for v in range(_NV):
                    raw = b.zext(e.load(bytes_t, e.gep(I8, wrow, c64(v * lanes)), align=1), i32v)
                    if bits == 8:
                        codes.append([raw])
                    else:
                        lo = b.and_(raw, ir.Constant(i32v, [15] * lanes))
                        hi = b.lshr(raw, ir.Constant(i32v, [4] * lanes))
                        codes.append([lo, hi])
                for sub in range(step):
                    ws = [fmuladd(e, b.sitofp(codes[v][sub], vt), svec[v], zvec[v]) for v in range(_NV)]
                    kk = b.add(k, c64(sub))
                    for r in range(rows):
                        xv = e.splat(e.load(F32, e.gep(F32, xrows[r], kk), align=4), lanes)
                        for v in range(_NV):
                            b.store(fmuladd(e, xv, ws[v], e.load(vt, accs[r][v])), accs[r][v])
        for r in range(rows):
            store(accs[r], b.add(r0, c64(r)))

    def single(r0: ir.Value) -> None:
        """One row (batch 1, the memory-bound case): per group, sum x * q in the code domain and
        apply ``s`` and ``-zp * s`` once at the group's end (``w = q * s - zp * s``), so the inner
        step is a convert and one fma per vector."""
        ys = [e.var(vt, ir.Constant(vt, None)) for _ in range(_NV)]
        xrow = e.gep(F32, x_base, b.mul(r0, ldx))
        with e.loop(0, G, name="g1") as g:
            accs = [e.var(vt, ir.Constant(vt, None)) for _ in range(_NV)]
            xsum = e.var(F32, ir.Constant(F32, 0.0))
            k0 = b.mul(g, gs)
            step = 1 if bits == 8 else 2
            with e.loop(k0, b.add(k0, gs), step, name="k1") as k:
                row = k if bits == 8 else b.sdiv(k, c64(2))
                wrow = e.gep(I8, wpanel, b.mul(row, c64(nr)))
                raws = [b.zext(e.load(bytes_t, e.gep(I8, wrow, c64(v * lanes)), align=1), i32v) for v in range(_NV)]
                for sub in range(step):
                    xk = e.load(F32, e.gep(F32, xrow, b.add(k, c64(sub))), align=4)
                    b.store(b.fadd(e.load(F32, xsum), xk), xsum)
                    xv = e.splat(xk, lanes)
                    for v in range(_NV):
                        code = raws[v]
                        if bits == 4:
                            code = b.and_(raw_shift(code, sub), ir.Constant(i32v, [15] * lanes))
                        b.store(fmuladd(e, xv, b.sitofp(code, vt), e.load(vt, accs[v])), accs[v])
            xs = e.splat(e.load(F32, xsum), lanes)
            for v in range(_NV):
                sv = e.load(vt, e.gep(F32, spanel, b.add(b.mul(g, c64(nr)), c64(v * lanes))), align=4)
                zv = e.load(vt, e.gep(F32, zpanel, b.add(b.mul(g, c64(nr)), c64(v * lanes))), align=4)
                yv = fmuladd(e, sv, e.load(vt, accs[v]), e.load(vt, ys[v]))
                b.store(fmuladd(e, zv, xs, yv), ys[v])
        store(ys, r0)

    def raw_shift(code: ir.Value, sub: int) -> ir.Value:
        return code if sub == 0 else b.lshr(code, ir.Constant(i32v, [4] * lanes))

    bias = e.gep(F32, e.arg("bias", PTR), col0)  # padded to whole panels (zeros: no bias)

    def store(accs: list[ir.Value], r: ir.Value) -> None:
        yrow = e.gep(F32, y_base, b.add(b.mul(r, ldy), col0))
        outs = [b.fadd(e.load(vt, accs[v]), e.load(vt, e.gep(F32, bias, c64(v * lanes)), align=4)) for v in range(_NV)]
        with b.if_else(full) as (whole, part):
            with whole:
                for v in range(_NV):
                    masked_store(e, outs[v], e.gep(F32, yrow, c64(v * lanes)), None)
            with part:
                for v in range(_NV):
                    masked_store(e, outs[v], e.gep(F32, yrow, c64(v * lanes)), masks[v])

    mr = _rows(isa)
    nmain = b.add(m0, b.mul(b.sdiv(b.sub(m1, m0), c64(mr)), c64(mr)))
    with e.loop(m0, nmain, mr, name="rows") as r0:
        block(mr, r0)
    with e.loop(nmain, m1, 1, name="row") as r0:
        single(r0)
    b.ret_void()


def _build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit(m, prefix, isa, 8)
    _emit(m, prefix, isa, 4)
    return m


@functools.cache
def _library(isa: Isa) -> jit.Library:
    return jit.load(f"wc_gemm|{isa.level}", isa, lambda p: _build(p, isa))


def exec_type(isa: Isa, bits: int) -> str:
    """What profiling reports for the kernel: f32 arithmetic on ``bits``-bit weights."""
    return f"jit_{isa.level}_FP32_W{bits}"


@dataclass
class CompressedWeights:
    """Packed weights of one MatMul (see the module doc); ``nbytes`` is what a run reads."""

    bits: int
    n: int
    k: int
    group_size: int
    packed: np.ndarray
    scale: np.ndarray
    zero_scale: np.ndarray
    nr: int

    @property
    def nbytes(self) -> int:
        """Bytes of weights, scales and zero points one inference reads."""
        return int(self.packed.nbytes + self.scale.nbytes + self.zero_scale.nbytes)


def pack(codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, bits: int, isa: Isa | None = None
         ) -> CompressedWeights:
    """Pack ``W[n, k] = (codes[n, k] - zero_point[n, g]) * scale[n, g]``: ``codes`` [N, K] integers
    (signed or unsigned, ``bits`` wide), ``scale``/``zero_point`` [N, G] with G dividing K."""
    isa = isa or host_isa()
    n, k = codes.shape
    groups = scale.shape[1]
    if bits not in (4, 8) or k % groups or zero_point.shape != scale.shape or scale.shape[0] != n:
        raise ValueError(f"ember: internal: bad compressed weights {codes.shape} / {scale.shape} ({bits} bits)")
    gsize = k // groups
    if bits == 4 and gsize % 2:
        raise ValueError("ember: internal: INT4 groups need an even size")
    lo = -(1 << (bits - 1)) if codes.dtype.kind == "i" else 0
    q = (codes.astype(np.int32) - lo).astype(np.uint8)  # unsigned codes
    zp = zero_point.astype(np.float64) - lo
    nr = isa.f32_lanes * _NV
    panels = -(-n // nr)
    npad = panels * nr
    qp = np.zeros((npad, k), np.uint8)
    qp[:n] = q
    qp = qp.reshape(panels, nr, k).transpose(0, 2, 1)  # [panel][k][nr]
    if bits == 4:
        qp = qp[:, 0::2, :] | (qp[:, 1::2, :] << 4)
    packed = aligned_empty(qp.shape, np.uint8)
    packed[...] = qp
    s = np.zeros((npad, groups), np.float32)
    s[:n] = scale
    zs = np.zeros((npad, groups), np.float32)
    zs[:n] = -(zp * scale.astype(np.float64))
    sp, zsp = aligned_empty((panels, groups, nr)), aligned_empty((panels, groups, nr))
    sp[...] = s.reshape(panels, nr, groups).transpose(0, 2, 1)
    zsp[...] = zs.reshape(panels, nr, groups).transpose(0, 2, 1)
    return CompressedWeights(bits, n, k, gsize, packed, sp, zsp, nr)


def bind(weights: CompressedWeights, x: np.ndarray, y: np.ndarray, threads: int, isa: Isa | None = None,
         bias: np.ndarray | None = None) -> BoundKernel:
    """``y[M, N] = x[M, K] @ W.T (+ bias[N])`` (rows of x and y may be strided; elements contiguous)."""
    isa = isa or host_isa()
    padded_bias = aligned_empty(weights.packed.shape[0] * weights.nr)
    padded_bias[...] = 0
    if bias is not None:
        padded_bias[:weights.n] = bias
    m = x.shape[0]
    panels = weights.packed.shape[0]
    mb = m if m <= 64 or panels >= 4 * max(threads, 1) else 32  # split M only when N gives too few tasks
    mb = max(mb, 1)
    nmb = -(-m // mb) if m else 0
    ctx = WC_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, w=weights.packed.ctypes.data, s=weights.scale.ctypes.data,
                         zs=weights.zero_scale.ctypes.data, bias=padded_bias.ctypes.data, m=m, n=weights.n,
                         k=weights.k,
                         groups=weights.scale.shape[1], gsize=weights.group_size, ldx=x.strides[0] // 4,
                         ldy=y.strides[0] // 4, mb=mb, nmb=nmb)
    task = _library(isa).address(f"wc{weights.bits}_task")
    return BoundKernel(task, ctx, panels * nmb, threads,
                       (x, y, weights.packed, weights.scale, weights.zero_scale, padded_bias), layout=WC_CONTEXT)


# --------------------------------------------------------------------------- compressed Gather
GATHER_CONTEXT = ContextLayout(
    "wc_gather",
    ("w", "s", "zs", "idx", "y", "rows", "vocab", "h", "groups", "gsize", "rpt", "neg", "idx64"),
    pointers=("w", "s", "zs", "idx", "y"))


def _emit_gather(m: ir.Module, prefix: str, lanes: int, bits: int) -> None:
    """gather{bits}_task(ctx, task): rows ``[task * rpt, ...)`` of ``y[r, :] = W[idx[r], :]``,
    ``W[v, k] = q[v, k] * s[v, g] + zs[v, g]``; an index out of range gives a row of zeros."""
    fn = Emitter.function(m, f"{prefix}_gather{bits}_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, GATHER_CONTEXT)
    b = e.b
    task = fn.args[1]
    vt, i32v = vec(F32, lanes), vec(I32, lanes)
    rpt, rows, V, H = e.arg("rpt"), e.arg("rows"), e.arg("vocab"), e.arg("h")
    G, gs = e.arg("groups"), e.arg("gsize")
    r0 = b.mul(task, rpt)
    r1 = e.min(rows, b.add(r0, rpt))
    rowbytes = H if bits == 8 else b.sdiv(H, c64(2))
    vector = b.icmp_signed("==", b.srem(gs, c64(lanes)), c64(0))
    with e.loop(r0, r1, name="r") as r:
        i64v = e.load(I64, e.gep(I64, e.arg("idx", PTR), r), align=8)
        i32i = b.sext(e.load(I32, e.gep(I32, e.arg("idx", PTR), r), align=4), I64)
        i = b.select(b.icmp_signed("!=", e.arg("idx64"), c64(0)), i64v, i32i)
        i = b.select(b.and_(b.icmp_signed("!=", e.arg("neg"), c64(0)), b.icmp_signed("<", i, c64(0))), b.add(i, V), i)
        ok = b.and_(b.icmp_signed(">=", i, c64(0)), b.icmp_signed("<", i, V))
        yrow = e.gep(F32, e.arg("y", PTR), b.mul(r, H))
        with b.if_else(ok) as (inside, outside):
            with inside:
                wrow = e.gep(I8, e.arg("w", PTR), b.mul(i, rowbytes))
                srow = e.gep(F32, e.arg("s", PTR), b.mul(i, G))
                zrow = e.gep(F32, e.arg("zs", PTR), b.mul(i, G))
                with b.if_else(vector) as (fast, slow):
                    with fast:
                        with e.loop(0, H, lanes, name="kv") as k:
                            g = b.sdiv(k, gs)
                            sv = e.splat(e.load(F32, e.gep(F32, srow, g)), lanes)
                            zv = e.splat(e.load(F32, e.gep(F32, zrow, g)), lanes)
                            if bits == 8:
                                q = b.zext(e.load(vec(I8, lanes), e.gep(I8, wrow, k), align=1), i32v)
                            else:
                                half = lanes // 2
                                raw = b.zext(e.load(vec(I8, half), e.gep(I8, wrow, b.sdiv(k, c64(2))), align=1),
                                             vec(I32, half))
                                lo = b.and_(raw, ir.Constant(vec(I32, half), [15] * half))
                                hi = b.lshr(raw, ir.Constant(vec(I32, half), [4] * half))
                                order = [j // 2 + (half if j % 2 else 0) for j in range(lanes)]
                                q = b.shuffle_vector(lo, hi, ir.Constant(vec(I32, lanes), order))
                            b.store(fmuladd(e, b.sitofp(q, vt), sv, zv), e.gep(F32, yrow, k), align=4)
                    with slow:
                        with e.loop(0, H, name="ks") as k:
                            g = b.sdiv(k, gs)
                            if bits == 8:
                                q = b.zext(e.load(I8, e.gep(I8, wrow, k)), I32)
                            else:
                                byte = b.zext(e.load(I8, e.gep(I8, wrow, b.sdiv(k, c64(2)))), I32)
                                shift = b.trunc(b.mul(b.srem(k, c64(2)), c64(4)), I32)
                                q = b.and_(b.lshr(byte, shift), ir.Constant(I32, 15))
                            w = b.fadd(b.fmul(b.sitofp(q, F32), e.load(F32, e.gep(F32, srow, g))),
                                       e.load(F32, e.gep(F32, zrow, g)))
                            b.store(w, e.gep(F32, yrow, k))
            with outside:
                with e.loop(0, H, name="kz") as k:
                    b.store(ir.Constant(F32, 0.0), e.gep(F32, yrow, k))
    b.ret_void()


def _gather_build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_gather(m, prefix, isa.f32_lanes, 8)
    _emit_gather(m, prefix, isa.f32_lanes, 4)
    return m


@functools.cache
def _gather_library(isa: Isa) -> jit.Library:
    return jit.load(f"wc_gather|{isa.level}", isa, lambda p: _gather_build(p, isa))


@dataclass
class CompressedTable:
    """Row-compressed table ``W[v, k] = q[v, k] * s[v, g] + zs[v, g]`` (unsigned codes, INT4 two
    per byte along k); ``nbytes`` is what it keeps in memory."""

    bits: int
    vocab: int
    h: int
    codes: np.ndarray
    scale: np.ndarray
    zero_scale: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.scale.nbytes + self.zero_scale.nbytes)


def pack_table(codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, bits: int) -> CompressedTable:
    """Pack an embedding table ``W[v, k] = (codes[v, k] - zero_point[v, g]) * scale[v, g]``."""
    v, h = codes.shape
    if bits not in (4, 8) or h % scale.shape[1] or zero_point.shape != scale.shape or (bits == 4 and h % 2):
        raise ValueError(f"ember: internal: bad compressed table {codes.shape} / {scale.shape} ({bits} bits)")
    lo = -(1 << (bits - 1)) if codes.dtype.kind == "i" else 0
    q = (codes.astype(np.int32) - lo).astype(np.uint8)
    if bits == 4:
        q = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    packed = aligned_empty(q.shape, np.uint8)
    packed[...] = q
    zs = -((zero_point.astype(np.float64) - lo) * scale.astype(np.float64))
    return CompressedTable(bits, v, h, packed, np.ascontiguousarray(scale, np.float32),
                           np.ascontiguousarray(zs, np.float32))


def bind_gather(table: CompressedTable, indices: np.ndarray, y: np.ndarray, negative: bool, threads: int,
                isa: Isa | None = None) -> BoundKernel:
    """``y[r, :] = W[indices[r], :]`` (``indices`` i32 or i64, contiguous; ``y`` [rows, H] f32)."""
    isa = isa or host_isa()
    rows = int(indices.size)
    rpt = max(1, min(64, -(-rows // max(4 * threads, 1))))
    ctx = GATHER_CONTEXT.new(w=table.codes.ctypes.data, s=table.scale.ctypes.data, zs=table.zero_scale.ctypes.data,
                             idx=indices.ctypes.data, y=y.ctypes.data, rows=rows, vocab=table.vocab, h=table.h,
                             groups=table.scale.shape[1], gsize=table.h // table.scale.shape[1], rpt=rpt,
                             neg=int(negative), idx64=int(indices.dtype.itemsize == 8))
    task = _gather_library(isa).address(f"gather{table.bits}_task")
    return BoundKernel(task, ctx, -(-rows // rpt) if rows else 0, threads,
                       (table.codes, table.scale, table.zero_scale, indices, y), layout=GATHER_CONTEXT)


__all__ = ["CompressedTable", "CompressedWeights", "bind", "bind_gather", "exec_type", "pack", "pack_table"]
