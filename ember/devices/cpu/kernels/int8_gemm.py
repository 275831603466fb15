"""INT8 GEMM and implicit-GEMM convolution: u8 activations x s8 weights -> s32, f32 epilogue;
and the quantize kernel that makes the u8 activations (FakeQuantize's arithmetic).

One native task function, ``int8_task(ctx, task)``, computes a block of

    Y[p, n] = clamp(float(sum_{tap, c} X[row(p, tap), c] * W[tap, c, n] + comp[n]) * scale[n]
                    + shift[n] + R[p, n], lo, hi)

with ``X`` u8 (NHWC pixels, or GEMM rows), ``W`` s8 and integer accumulation. ``comp[n]`` is
the zero-point compensation ``-zp * sum(W[:, :, n])``, computed when the weights are packed,
so that the sum is over ``X - zp``; a padding tap reads a row filled with ``zp`` and so adds
exactly nothing (the activation 0.0). The epilogue (``finish_tile``) is f32: scale and shift,
then optionally a FakeQuantize, the residual (optionally through its own FakeQuantize), the
clamp, a last FakeQuantize; it stores f32, or the u8 steps of a FakeQuantize (requantize), or
both (a second u8 output). Fused FakeQuantize steps are computed as the reference does.

Few channels per tap (a network's stem): each task gathers its pixels' taps into one row
(``merge``) and runs as a single tap. Depthwise convolutions have their own task
(``dw_task``, and ``dw3x3``/``dw5x5`` with the taps unrolled): channel vectors in i32 with a
zero point per channel, padding taps skipped, the same epilogue.

Like the f32 kernel (:mod:`ember.devices.cpu.kernels.gemm`), each task fills a table of
row pointers for its pixels once (no im2col), then runs a register-blocked micro-kernel over
(N panel, M tile). The micro-kernel broadcasts 4 bytes of a row (4 consecutive k) and
multiplies them with a vector of ``lanes`` columns x 4 k of W:

- AVX512-VNNI: ``vpdpbusd`` on zmm (14 x 32 tile), AVX-VNNI: ``vpdpbusd`` on ymm (6 x 16);
- without VNNI (and on non-x86 targets): the same dot product written as widening multiplies
  and adds, which LLVM turns into ``pmaddwd``-style code. It is exact (no ``vpmaddubsw``
  saturation, so no 7-bit rule is needed), and slower;
- with AMX (``isa.amx_int8``): ``amx_int8_task`` instead, 32 x 32 blocks of ``tdpbusd`` on
  tiles (:mod:`ember.devices.cpu.kernels.amx`), A read in place where rows are uniformly
  strided, the same weights' layout (a tap's K zero padded to whole tile steps when no step
  size divides it), the same epilogue, run row by row from the stored C tiles.

Weights ``W[groups, taps, cin, cout]`` are packed once as ``[group][panel][tap][k4][NR][4]``
(``k4 = ceil(cin / 4)``, zero padded). A row must be readable for ``4 * k4`` bytes past its
start: the activations of a convolution have their pixel stride padded to a multiple of 4
(:func:`padded_channels`), as the quantize kernel writes them.

The quantize kernel, ``quantize_task``, computes FakeQuantize's ``q = rint((x - il) / (ih - il)
* (levels - 1))`` (0 below ``il``, ``levels - 1`` above ``ih``) in f32 with the reference's
operation order and round-half-to-even, and stores ``q`` as u8 (padding channels filled with
the zero point), or ``q / (levels - 1) * (oh - ol) + ol`` as f32 (a plain FakeQuantize).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.amx import (
    STACK_LIMIT,
    TILE_ROWS,
    amx_split,
    amx_split_tight,
    byte_mask,
    copy_bytes,
    copy_rows,
    emit_tile_block,
    emit_tile_config,
    fits_stack,
    store_c_tiles,
    store_pixel_channels,
    tap_descriptors,
    tile_release,
    two_by_two,
)
from ember.devices.cpu.kernels.conv import MERGE_BELOW_CHANNELS, ConvGeometry
from ember.devices.cpu.kernels.gemm import (
    ACT_SHIFT,
    AMX_L2_WEIGHTS,
    AMX_PF_DIST,
    AMX_PF_DIST_ONE_TILE,
    AMX_TILE,
    EPILOGUE_ACTIVATIONS,
    NO_EPILOGUE,
    Epilogue,
    TaskBlock,
    Tile,
    call_microkernel,
    emit_activation,
    emit_next_pixel,
    emit_prefetch_slice,
    plan_blocks,
    task_block,
)
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I1, I8, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout, f32_bits
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import aligned_alloca, fmuladd, lane_mask, masked_load, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.devices.cpu.runtime.threadpool import ThreadPool, default_pool
from ember.errors import EmberError

#: register tiles: ``mr`` rows x ``nv`` vectors of ``lanes`` i32 accumulators
INT8_TILES = {"avx512": Tile(14, 2, 16, 1), "avx2": Tile(6, 2, 8, 1), "generic": Tile(4, 2, 4, 1)}

INT8_CONTEXT = ContextLayout(
    "int8_gemm",
    ("x", "ldx", "xn", "h", "w", "oh", "ow", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pl", "k4", "xg", "y",
     "ldy", "yg", "cout", "bp", "bg", "comp", "scale", "shift", "res", "ldr", "zero", "m", "tm", "tn", "gm", "gn",
     "flags", "lo", "hi", "fq", "fqs", "merge", "cin", "kpad", "q", "ldq", "kq", "nck", "ktap", "direct"),
    pointers=("x", "y", "bp", "comp", "scale", "shift", "res", "zero", "fq", "q"))
FLAG_RES, FLAG_FQ_MID, FLAG_FQ_END, FLAG_U8, FLAG_RES_FQ, FLAG_ALSO_U8 = 1, 2, 4, 8, 16, 32
#: the residual is the u8 steps of its FakeQuantize (rows of ``ldr`` bytes), dequantized in the
#: epilogue with the residual's FakeQuantize rows (``q * (oh - ol) / steps + ol``); with FLAG_RES_FQ
FLAG_RES_U8 = 64
#: the fast FakeQuantize arithmetic (as OpenVINO's CPU plugin folds it): ``q = clamp(rint(x * a + b),
#: 0, steps)`` with ``a = steps / (ih - il)``, ``b = -il * a``, and ``q * (oh - ol) / steps + ol`` without
#: selects; a value within a few ulps of a rounding tie may land one step away from REFERENCE's
FLAG_FAST = 128
#: AMX only, with FLAG_FAST | FLAG_FQ_END | FLAG_U8 and nothing between (no residual, no clamp, no
#: activation): the output's steps in one FMA from the accumulator, ``t = acc * A + B`` with
#: ``A = scale * a`` and ``B = (shift + comp * scale) * a + b`` folded at compile time (the context's
#: scale and shift point at A and B; comp is not added), then ``min(t, steps)``, the conversion's
#: rounding and the two saturating packs: 4 vector operations per 16 outputs instead of 7
FLAG_FOLDED = 1 << 12
#: FLAG_FOLDED on a ResNet block's end (:data:`FOLDED_BLOCK_END`): the FakeQuantize mid-way in one
#: FMA from the accumulator (``q = clamp(rint(acc * A + B), 0, steps)``), then the next steps
#: ``t = q * C + r * D + E`` from it and the u8 residual ``r`` (C, D, E: the dequantizations and the
#: second FakeQuantize folded, in the residual FakeQuantize's first three rows of the parameter
#: block, :func:`folded_block_end`), ``min(t, steps2)``; the ReLU between is dropped (its bound is
#: at or under the second FakeQuantize's il)
#: the f32 rows of a fused FakeQuantize, one value per output channel: il, ih, ih - il, steps, ol, oh,
#: (oh - ol) / steps (the steps are exact, as the reference's; the f32 value is within an ulp of it),
#: 1 / (ih - il) rounded to f32 (for :func:`divide`); a kernel's parameter block holds three: the
#: output's, the residual's (FLAG_RES_FQ), the second u8 output's (FLAG_ALSO_U8)
FQ_WORDS = 8
FQ_ROWS = 3 * FQ_WORDS
FOLD_C, FOLD_D, FOLD_E = FQ_WORDS, FQ_WORDS + 1, FQ_WORDS + 2

QUANT_CONTEXT = ContextLayout(
    "quantize",
    ("x", "ldx", "y", "ldy", "rows", "c", "cpad", "per_task", "ranges", "rstride", "steps", "fill", "mode", "pix",
     "tiled"),
    pointers=("x", "y", "ranges", "tiled"))
QUANT_U8, QUANT_F32 = 0, 1
#: ``merge`` of INT8_CONTEXT: each tap's channels padded to 4 bytes in the gathered row, or packed
MERGE_PADDED, MERGE_PACKED = 1, 2


def packed_taps_disabled() -> bool:
    """``EMBER_INT8_PADDED_TAPS=1``: a 1-3 channel stem gathers its taps padded to 4 bytes each
    (as before packed taps; for A/B measurements)."""
    import os

    return os.environ.get("EMBER_INT8_PADDED_TAPS", "") not in ("", "0")


def padded_channels(c: int) -> int:
    """The pixel stride (bytes) of u8 activations with ``c`` channels: a multiple of 4."""
    return -(-c // 4) * 4


# --------------------------------------------------------------------------- code generation
def dot4(e: Emitter, isa: Isa, acc: ir.Value, a: ir.Value, w: ir.Value) -> ir.Value:
    """acc[l] += sum_j u8(a[l] byte j) * s8(w[l] byte j), lane by lane (<L x i32> each)."""
    lanes = acc.type.count
    if isa.vnni and isa.level in ("avx512", "avx2"):
        return e.call(f"llvm.x86.avx512.vpdpbusd.{32 * lanes}", acc.type, [acc, a, w])
    b = e.b
    bytes_t = vec(I8, 4 * lanes)
    wide = vec(I32, 4 * lanes)
    prod = b.mul(b.zext(b.bitcast(a, bytes_t), wide), b.sext(b.bitcast(w, bytes_t), wide))
    for j in range(4):
        part = b.shuffle_vector(prod, ir.Constant(wide, ir.Undefined),
                                ir.Constant(vec(I32, lanes), [4 * i + j for i in range(lanes)]))
        acc = b.add(acc, part)
    return acc


def divide(e: Emitter, a: ir.Value, d: ir.Value, inv: ir.Value) -> ir.Value:
    """``a / d`` rounded to nearest as ``fdiv`` gives it, from ``inv`` = 1 / d rounded to f32,
    with two FMAs and a multiply instead of a division (a vector ``vdivps`` costs 10-16 cycles,
    as much as an AMX tile product). Markstein's correction: ``q0 = a * inv``, the remainder
    ``r = a - d * q0`` is exact, ``q0 + r * inv`` rounds to the correctly rounded quotient
    (``d`` and ``inv`` normal and finite; a tiny ``a`` may differ by an ulp of a value far
    below a quantization step)."""
    b = e.b
    t = a.type
    fma = f"llvm.fma.v{t.count}f32"
    q0 = b.fmul(a, inv)
    r = e.call(fma, t, [b.fneg(q0), d, a])
    return e.call(fma, t, [r, inv, q0])


def _fixed(value: ir.Value) -> Callable[[int], ir.Value]:
    """A row function that gives ``value`` for every row (a one-row tile)."""
    def row(r: int) -> ir.Value:
        return value
    return row


def finish_tile(e: Emitter, out: list[list[ir.Value]], masks: list[ir.Value | None], flags: ir.Value,
                lo: ir.Value, hi: ir.Value, fq: list[list[ir.Value]], res_row: Callable[[int], ir.Value],
                out_offset: Callable[[int], ir.Value], cp: ir.Value,
                also: tuple[ir.Value, Callable[[int], ir.Value]] | None = None, activations: bool = False) -> None:
    """:func:`_finish_tile` with the exact FakeQuantize arithmetic, or the fast one (FLAG_FAST);
    ``activations``: the activation coded in the flags (from ACT_SHIFT) after the clamp (the AMX
    epilogue, one row at a time)."""
    b = e.b
    with b.if_else(b.icmp_unsigned("!=", b.and_(flags, c32(FLAG_FAST)), c32(0))) as (fast, exact):
        with fast:
            _finish_tile(e, out, masks, flags, lo, hi, fq, res_row, out_offset, cp, also, True, activations)
        with exact:
            _finish_tile(e, out, masks, flags, lo, hi, fq, res_row, out_offset, cp, also, False, activations)


def _finish_tile(e: Emitter, out: list[list[ir.Value]], masks: list[ir.Value | None], flags: ir.Value,
                 lo: ir.Value, hi: ir.Value, fq: list[list[ir.Value]], res_row: Callable[[int], ir.Value],
                 out_offset: Callable[[int], ir.Value], cp: ir.Value,
                 also: tuple[ir.Value, Callable[[int], ir.Value]] | None, fast: bool, activations: bool) -> None:
    """The f32 end of an int8 epilogue, for ``out[r][v]`` (variables of <L x f32>, scale and
    shift applied): [FakeQuantize (FLAG_FQ_MID)] -> + residual row ``res_row(r)`` (FLAG_RES)
    -> clamp(lo, hi) -> [FakeQuantize (FLAG_FQ_END)] -> stored at ``cp`` + ``out_offset(r)``
    elements: f32, or u8 steps with FLAG_U8. ``fq[i][v]``: the FQ_ROWS per-channel vectors (the
    residual goes through the second FakeQuantize first with FLAG_RES_FQ)."""
    b = e.b
    L = fq[0][0].type.count
    vf = vec(F32, L)
    mr, nv = len(out), len(out[0])

    def flag(bit: int) -> ir.Value:
        return b.icmp_unsigned("!=", b.and_(flags, c32(bit)), c32(0))

    fma = f"llvm.fma.v{L}f32"

    def steps_of(x: ir.Value, v: int, base: int = 0) -> ir.Value:
        il, ih, rng, steps = (fq[base + i][v] for i in range(4))
        if fast:  # a and b are loop invariants (hoisted out of the row loops)
            a = b.fdiv(steps, rng)
            t = e.call(fma, vf, [x, a, b.fneg(b.fmul(il, a))])
            q = e.call(f"llvm.roundeven.v{L}f32", vf, [t])
            q = e.call(f"llvm.maxnum.v{L}f32", vf, [q, ir.Constant(vf, None)])
            return e.call(f"llvm.minnum.v{L}f32", vf, [q, steps])
        t = b.fmul(divide(e, b.fsub(x, il), rng, fq[base + 7][v]), steps)
        q = e.call(f"llvm.roundeven.v{L}f32", vf, [t])
        return b.select(b.fcmp_ordered("<=", x, il), ir.Constant(vf, None),
                        b.select(b.fcmp_ordered(">", x, ih), steps, q))

    def fast_steps(x: ir.Value, v: int, base: int) -> ir.Value:
        """The fast steps as i32, rounded by the conversion (to nearest even) from at most
        ``steps``; below 0 (and NaN) saturate to step 0 in :func:`packed_steps`."""
        il, _, rng, steps = (fq[base + i][v] for i in range(4))
        a = b.fdiv(steps, rng)
        t = e.call(fma, vf, [x, a, b.fneg(b.fmul(il, a))])
        t = b.select(b.fcmp_ordered(">", t, steps), steps, t)
        return round_to_i32(e, t)

    def fq_value(x: ir.Value, v: int, base: int = 0) -> ir.Value:
        il, ih, _, steps, ol, oh, ostep = (fq[base + i][v] for i in range(7))
        if fast:  # step 0 gives ol exactly, the last step oh within an ulp
            return e.call(fma, vf, [steps_of(x, v, base), ostep, ol])
        deq = b.fadd(b.fmul(steps_of(x, v, base), ostep), ol)  # q * step: within an ulp of q / steps * (oh - ol)
        return b.select(b.fcmp_ordered("<=", x, il), ol, b.select(b.fcmp_ordered(">", x, ih), oh, deq))

    def fake_quantize() -> None:
        for r in range(mr):
            for v in range(nv):
                b.store(fq_value(e.load(vf, out[r][v]), v), out[r][v])

    with b.if_then(flag(FLAG_FQ_MID)):
        fake_quantize()
    def from_f32(rrow: ir.Value, v: int) -> ir.Value:
        rv = masked_load(e, vf, e.gep(F32, rrow, v * L), masks[v])
        return b.select(res_fq, fq_value(rv, v, FQ_WORDS), rv)

    def dequantized(rrow: ir.Value, v: int) -> ir.Value:
        bt = vec(I8, L)
        ptr = e.gep(I8, rrow, v * L)
        if masks[v] is None:
            qb = e.load(bt, ptr, align=1)
        else:
            qb = e.call(f"llvm.masked.load.v{L}i8.p0", bt, [ptr, c32(1), masks[v], ir.Constant(bt, None)])
        ol, ostep = fq[FQ_WORDS + 4][v], fq[FQ_WORDS + 6][v]
        if fast:
            return e.call(fma, vf, [b.uitofp(qb, vf), ostep, ol])
        return b.fadd(b.fmul(b.uitofp(qb, vf), ostep), ol)

    def add_residual(value: Callable[[ir.Value, int], ir.Value]) -> None:
        for r in range(mr):
            rrow = res_row(r)
            for v in range(nv):
                b.store(b.fadd(e.load(vf, out[r][v]), value(rrow, v)), out[r][v])

    with b.if_then(flag(FLAG_RES)):
        res_fq = flag(FLAG_RES_FQ)
        with b.if_else(flag(FLAG_RES_U8)) as (res_u8, res_f32):
            with res_u8:
                add_residual(dequantized)
            with res_f32:
                add_residual(from_f32)
    bounded = b.or_(b.fcmp_ordered("!=", lo, ir.Constant(F32, -math.inf)),
                    b.fcmp_ordered("!=", hi, ir.Constant(F32, math.inf)))
    with b.if_then(bounded):
        vlo, vhi = e.splat(lo, L), e.splat(hi, L)
        for r in range(mr):
            for v in range(nv):
                x = e.load(vf, out[r][v])
                x = b.select(b.fcmp_ordered("<", x, vlo), vlo, x)
                b.store(b.select(b.fcmp_ordered(">", x, vhi), vhi, x), out[r][v])
    if activations:
        code = b.and_(b.lshr(flags, c32(ACT_SHIFT)), c32(0xF))
        for k, name in enumerate(EPILOGUE_ACTIVATIONS):
            if name:
                with b.if_then(b.icmp_unsigned("==", code, c32(k))):
                    for r in range(mr):
                        for v in range(nv):
                            b.store(emit_activation(e, name, e.load(vf, out[r][v]), L), out[r][v])
    def store_row_steps(row: ir.Value, r: int, base: int) -> None:
        # a row's steps as one vector of nv * L bytes, one (masked) store
        if fast and L in (8, 16) and nv in (1, 2):
            qb = [packed_steps(e, [fast_steps(e.load(vf, out[r][v]), v, base) for v in range(nv)])]
        else:
            qb = [b.trunc(b.fptosi(steps_of(e.load(vf, out[r][v]), v, base), vec(I32, L)), vec(I8, L))
                  for v in range(nv)]
        if len(qb) == 1 and nv > 1:
            whole = qb[0]
            full = ir.Constant(vec(I1, L), [1] * L)
            if all(mk is None for mk in masks):
                b.store(whole, row, align=1)
            else:
                mask = concat_vectors(b, [mk if mk is not None else full for mk in masks])
                e.call(f"llvm.masked.store.v{nv * L}i8.p0", VOID, [whole, row, c32(1), mask])
            return
        if nv & (nv - 1):  # not a power of two: a store per vector
            for v in range(nv):
                mask = masks[v] if masks[v] is not None else ir.Constant(vec(I1, L), [1] * L)
                e.call(f"llvm.masked.store.v{L}i8.p0", VOID, [qb[v], e.gep(I8, row, v * L), c32(1), mask])
            return
        whole = concat_vectors(b, qb)
        if all(mk is None for mk in masks):
            b.store(whole, row, align=1)
            return
        full = ir.Constant(vec(I1, L), [1] * L)
        mask = concat_vectors(b, [mk if mk is not None else full for mk in masks])
        e.call(f"llvm.masked.store.v{nv * L}i8.p0", VOID, [whole, row, c32(1), mask])

    with b.if_else(flag(FLAG_U8)) as (as_u8, as_f32):
        def store_steps(base: int) -> None:
            for r in range(mr):
                store_row_steps(e.gep(I8, cp, out_offset(r)), r, base)

        with as_u8:  # FLAG_U8 with FLAG_ALSO_U8: the steps of the second FakeQuantize only (after a mid one)
            with b.if_else(flag(FLAG_ALSO_U8)) as (second, first):
                with second:
                    store_steps(2 * FQ_WORDS)
                with first:
                    store_steps(0)
        with as_f32:
            with b.if_then(flag(FLAG_FQ_END)):
                fake_quantize()
            for r in range(mr):
                crow = e.gep(F32, cp, out_offset(r))
                for v in range(nv):
                    masked_store(e, e.load(vf, out[r][v]), e.gep(F32, crow, v * L), masks[v])
            if also is not None:  # FLAG_ALSO_U8: the f32 values, and their u8 steps for the next int8 op
                qp, q_offset = also
                with b.if_then(flag(FLAG_ALSO_U8)):
                    for r in range(mr):
                        store_row_steps(e.gep(I8, qp, q_offset(r)), r, 2 * FQ_WORDS)


def round_to_i32(e: Emitter, x: ir.Value) -> ir.Value:
    """<L x f32> to <L x i32> rounded to nearest even by the conversion itself (``vcvtps2dq``;
    out of range and NaN: INT_MIN), L = 8 (AVX2) or 16 (AVX-512)."""
    n = x.type.count
    if n == 16:
        return e.call("llvm.x86.avx512.mask.cvtps2dq.512", vec(I32, 16),
                      [x, ir.Constant(vec(I32, 16), None), ir.Constant(ir.IntType(16), -1), c32(4)])
    return e.call("llvm.x86.avx.cvt.ps2dq.256", vec(I32, 8), [x])


def packed_steps(e: Emitter, parts: list[ir.Value]) -> ir.Value:
    """One or two <L x i32> vectors as L or 2L bytes saturated to [0, 255] (``packssdw`` then
    ``packuswb``, then one permutation back to column order: the packs work per 128-bit lane)."""
    b = e.b
    n = parts[0].type.count
    lo, hi = parts[0], parts[-1]
    if n == 16:
        words = e.call("llvm.x86.avx512.packssdw.512", vec(ir.IntType(16), 32), [lo, hi])
        bytes_ = e.call("llvm.x86.avx512.packuswb.512", vec(I8, 64), [words, words])
    else:
        words = e.call("llvm.x86.avx2.packssdw", vec(ir.IntType(16), 16), [lo, hi])
        bytes_ = e.call("llvm.x86.avx2.packuswb", vec(I8, 32), [words, words])
    # lane k (16 bytes) holds lo[4k:4k+4], hi[4k:4k+4], then the same again
    pick = [16 * (j // 4) + j % 4 for j in range(n)]
    if len(parts) == 2:
        pick += [16 * (j // 4) + 4 + j % 4 for j in range(n)]
    return b.shuffle_vector(bytes_, ir.Constant(bytes_.type, None), ir.Constant(vec(I32, len(pick)), pick))


def concat_vectors(b: ir.IRBuilder, parts: list[ir.Value]) -> ir.Value:
    """The vectors ``parts`` (equal types, a power of two of them) side by side as one vector."""
    while len(parts) > 1:
        n = parts[0].type.count
        parts = [b.shuffle_vector(parts[i], parts[i + 1], ir.Constant(vec(I32, 2 * n), list(range(2 * n))))
                 for i in range(0, len(parts), 2)]
    return parts[0]


def _emit_microkernel(m: ir.Module, name: str, tile: Tile, mr: int, nv: int, isa: Isa,
                      epi: ir.Function | None = None) -> ir.Function:
    """ukr(rows, ntaps, k4, bp, c, ldc, ncols, comp, scale, shift, res, ldr, lo, hi, flags, fq, fqs, q, ldq).

    ``rows`` holds ntaps groups of tile.mr row pointers (first mr used); the B micro-panel at
    bp is [tap][k4][NR][4] bytes; the C tile at c (f32, or u8 with FLAG_U8) has row stride
    ldc elements; ncols <= NR. ``fq`` points at the FQ_WORDS rows (stride fqs) of a fused FakeQuantize, applied
    before the residual (FLAG_FQ_MID) or last (FLAG_FQ_END; with FLAG_U8 its steps are stored); with
    FLAG_ALSO_U8 the f32 tile is stored and its steps too, at q (row stride ldq bytes). ``epi``
    (the row epilogue of :func:`_emit_int8_epilogue`, 32-column tiles): flags with an activation
    store the i32 tile on the stack and finish it there, row by row (the activations' code lives
    once in that function, not in every micro-kernel)."""
    fn = Emitter.function(m, name, VOID, [PTR, I64, I64, PTR, PTR, I64, I64, PTR, PTR, PTR, PTR, I64, F32, F32, I32,
                                          PTR, I64, PTR, I64], internal=True, noinline=True)
    rows, ntaps, k4, bp, cp, ldc, ncols, compp, scalep, shiftp, resp, ldr, lo, hi, flags, fqp, fqs, qp, ldq = fn.args
    for arg in (bp, cp):
        arg.add_attribute("noalias")
    e = Emitter(m, fn)
    b = e.b
    L, NR, MR = tile.lanes, tile.nr, tile.mr
    vi, vf = vec(I32, L), vec(F32, L)
    acc = [[e.var(vi, ir.Constant(vi, None)) for _ in range(nv)] for _ in range(mr)]
    bcur = e.var(PTR, bp)
    with e.loop(0, ntaps, name="tap") as t:
        base = b.mul(t, c64(MR))
        arow = [e.load(PTR, e.gep(PTR, rows, b.add(base, c64(r)))) for r in range(mr)]
        bpt = e.load(PTR, bcur)
        with e.loop(0, k4, name="k") as k:
            vals = [[e.load(vi, acc[r][v]) for v in range(nv)] for r in range(mr)]
            wv = [e.load(vi, e.gep(I32, bpt, b.add(b.mul(k, c64(NR)), c64(v * L))), align=64) for v in range(nv)]
            for r in range(mr):
                a = e.splat(e.load(I32, e.gep(I32, arow[r], k), align=1), L)
                for v in range(nv):
                    vals[r][v] = dot4(e, isa, vals[r][v], a, wv[v])
            for r in range(mr):
                for v in range(nv):
                    b.store(vals[r][v], acc[r][v])
        b.store(e.gep(I32, bpt, b.mul(k4, c64(NR))), bcur)

    def epilogue(masked: bool) -> None:
        masks = [lane_mask(e, b.sub(ncols, c64(v * L)), L) if masked else None for v in range(nv)]
        comp = [b.bitcast(masked_load(e, vf, e.gep(I32, compp, v * L), masks[v]), vi) for v in range(nv)]
        scale = [masked_load(e, vf, e.gep(F32, scalep, v * L), masks[v]) for v in range(nv)]
        shift = [masked_load(e, vf, e.gep(F32, shiftp, v * L), masks[v]) for v in range(nv)]
        out = [[e.var(vf) for _ in range(nv)] for _ in range(mr)]
        for r in range(mr):
            for v in range(nv):
                x = b.sitofp(b.add(e.load(vi, acc[r][v]), comp[v]), vf)
                b.store(b.fadd(b.fmul(x, scale[v]), shift[v]), out[r][v])
        fq = [[masked_load(e, vf, e.gep(F32, fqp, b.add(b.mul(c64(i), fqs), c64(v * L))), masks[v])
               for v in range(nv)] for i in range(FQ_ROWS)]
        resz = b.select(b.icmp_unsigned("!=", b.and_(flags, c32(FLAG_RES_U8)), c32(0)), c64(1), c64(4))
        finish_tile(e, out, masks, flags, lo, hi, fq, lambda r: e.gep(I8, resp, b.mul(b.mul(ldr, c64(r)), resz)),
                    lambda r: b.mul(ldc, c64(r)), cp, (qp, lambda r: b.mul(ldq, c64(r))))

    def tile_epilogue() -> None:
        with b.if_else(b.icmp_signed(">=", ncols, c64(NR))) as (full, part):
            with full:
                epilogue(False)
            with part:
                epilogue(True)

    if epi is None:
        tile_epilogue()
    else:
        act = b.icmp_unsigned("!=", b.and_(b.lshr(flags, c32(ACT_SHIFT)), c32(0xF)), c32(0))
        with b.if_else(act) as (rows_epi, in_regs):
            with rows_epi:
                cbuf = aligned_alloca(e, I32, c64(mr * NR), 64)
                for r in range(mr):
                    for v in range(nv):
                        b.store(e.load(vi, acc[r][v]), e.gep(I32, cbuf, c64(r * NR + v * L)), align=64)
                b.call(epi, [cbuf, c64(mr), ncols, cp, ldc, compp, scalep, shiftp, resp, ldr, lo, hi, flags, fqp,
                             fqs, qp, ldq])
            with in_regs:
                tile_epilogue()
    b.ret_void()
    return fn


@contextmanager
def _pixels(e: Emitter, m0: ir.Value, m1: ir.Value, OH: ir.Value, OW: ir.Value,
            name: str) -> Iterator[tuple[ir.Value, ir.Value, ir.Value, ir.Value]]:
    """``for p in range(m0, m1)`` with its (image, oy, ox), advanced incrementally: two
    divisions per task instead of four per pixel (a 64-bit division costs tens of cycles)."""
    b = e.b
    ohw = b.mul(OH, OW)
    q0 = b.urem(m0, ohw)
    v_img, v_oy, v_ox = e.var(I64, b.udiv(m0, ohw)), e.var(I64, b.udiv(q0, OW)), e.var(I64, b.urem(q0, OW))
    with e.loop(m0, m1, name=name) as p:
        yield p, e.load(I64, v_img), e.load(I64, v_oy), e.load(I64, v_ox)
        emit_next_pixel(e, v_img, v_oy, v_ox, OH, OW)


def emit_row_table(e: ContextEmitter, blk: TaskBlock, MR: int, fill_tail: bool = False,
                   wide_copy: bool = False, per_tap: bool = True) -> tuple[ir.Value, ir.Value]:
    """The row pointer table of a task's pixels: ``rows[(tile * ntaps + tap) * MR + r]`` (a
    padding tap points at the zero-point row); with few channels per tap the taps are gathered
    into one row per pixel first (``merge``). Returns (rows, taps per row: 1 when merged).
    ``fill_tail`` points the rows of the last tile past the task's pixels at the zero-point row;
    ``wide_copy`` gathers a kernel row with masked 64-byte vectors (AVX-512) instead of words;
    ``per_tap=False``: only the merged rows (the caller finds the per-tap rows itself)."""
    b = e.b
    a = e.arg
    g, m0, m1, ntiles = blk.outer, blk.m0, blk.m1, blk.ntiles
    kh, kw = a("kh"), a("kw")
    ntaps = b.mul(kh, kw)
    rows = b.alloca(PTR, size=b.mul(b.mul(ntiles, ntaps), c64(MR)))
    if fill_tail:
        # the last tile's slots of either layout (merged: one tap, slots [last, last + MR); else
        # ntaps taps of MR from the last tile's first slot); the real rows are written over it below
        last_tile = b.sub(ntiles, c64(1))
        merged_taps = b.select(b.icmp_signed("!=", a("merge"), c64(0)), c64(1), ntaps)
        first = b.mul(b.mul(last_tile, merged_taps), c64(MR))
        with e.loop(first, b.mul(b.mul(ntiles, merged_taps), c64(MR)), name="zt") as q:
            b.store(a("zero", PTR), e.gep(PTR, rows, q))
    H, W, OH, OW = a("h"), a("w"), a("oh"), a("ow")
    ldx, xn = a("ldx"), a("xn")
    sh, sw, dh, dw, pt, pl = a("sh"), a("sw"), a("dh"), a("dw"), a("pt"), a("pl")
    zero_row = a("zero", PTR)
    xgroup = e.gep(I8, a("x", PTR), b.mul(g, a("xg")))
    # the row table: rows[(tile * ntaps + tap) * MR + r], a padding tap points at the zero-point row
    merge = b.icmp_signed("!=", a("merge"), c64(0))
    with b.if_else(merge) as (merged, tapwise):
        with tapwise:
            if per_tap:
                with _pixels(e, m0, m1, OH, OW, "p") as (p, img, oy, ox):
                    rel = b.sub(p, m0)
                    slot0 = b.add(b.mul(b.mul(b.sdiv(rel, c64(MR)), ntaps), c64(MR)), b.srem(rel, c64(MR)))
                    iy0 = b.sub(b.mul(oy, sh), pt)
                    ix0 = b.sub(b.mul(ox, sw), pl)
                    ximg = e.gep(I8, xgroup, b.mul(img, xn))
                    with e.loop(0, kh, name="ky") as ky:
                        iy = b.add(iy0, b.mul(ky, dh))
                        yok = b.icmp_unsigned("<", iy, H)
                        xrow = e.gep(I8, ximg, b.mul(b.mul(iy, W), ldx))
                        trow = b.mul(b.mul(ky, kw), c64(MR))
                        with e.loop(0, kw, name="kx") as kx:
                            ix = b.add(ix0, b.mul(kx, dw))
                            ok = b.and_(yok, b.icmp_unsigned("<", ix, W))
                            ptr = b.select(ok, e.gep(I8, xrow, b.mul(ix, ldx)), zero_row)
                            b.store(ptr, e.gep(PTR, rows, b.add(b.add(slot0, trow), b.mul(kx, c64(MR)))))
        with merged:
            kpad = a("kpad")
            gbuf = aligned_alloca(e, I8, b.mul(b.mul(ntiles, c64(MR)), kpad))
            with b.if_else(b.icmp_signed("==", a("merge"), c64(MERGE_PACKED))) as (packed_taps, padded_taps):
                with packed_taps:
                    _gather_packed_taps(e, blk, rows, gbuf, xgroup, zero_row, wide_copy)
                with padded_taps:
                    _gather_padded_taps(e, blk, rows, gbuf, xgroup, zero_row, wide_copy)
    return rows, b.select(merge, c64(1), ntaps)


def _gather_padded_taps(e: ContextEmitter, blk: TaskBlock, rows: ir.Value, gbuf: ir.Value, xgroup: ir.Value,
                        zero_row: ir.Value, wide_copy: bool) -> None:
    """Few channels per tap (a stem): gather each pixel's taps into one row of kpad bytes
    (tap-major, cin bytes each: the pixel stride padded to 4), a kernel row at once where it
    lies inside a dense image; then run as one tap of kpad / 4 k-groups."""
    b = e.b
    a = e.arg
    m0, m1 = blk.m0, blk.m1
    H, W, OH, OW, kh, kw = a("h"), a("w"), a("oh"), a("ow"), a("kh"), a("kw")
    ldx, xn = a("ldx"), a("xn")
    sh, sw, dh, dw, pt, pl = a("sh"), a("sw"), a("dh"), a("dw"), a("pt"), a("pl")
    kpad, cin = a("kpad"), a("cin")
    words = b.sdiv(cin, c64(4))
    row_words = b.mul(words, kw)
    dense = b.and_(b.icmp_signed("==", ldx, cin), b.icmp_signed("==", dw, c64(1)))
    with _pixels(e, m0, m1, OH, OW, "gp") as (p, img, oy, ox):
        dst = e.gep(I8, gbuf, b.mul(b.sub(p, m0), kpad))
        b.store(dst, e.gep(PTR, rows, b.sub(p, m0)))
        iy0 = b.sub(b.mul(oy, sh), pt)
        ix0 = b.sub(b.mul(ox, sw), pl)
        ximg = e.gep(I8, xgroup, b.mul(img, xn))
        inside_x = b.and_(b.and_(b.icmp_signed(">=", ix0, c64(0)),
                                 b.icmp_signed("<", b.add(ix0, b.mul(b.sub(kw, c64(1)), dw)), W)), dense)
        with e.loop(0, kh, name="gky") as ky:
            iy = b.add(iy0, b.mul(ky, dh))
            yok = b.icmp_unsigned("<", iy, H)
            xrow = e.gep(I8, ximg, b.mul(b.mul(iy, W), ldx))
            drow = e.gep(I8, dst, b.mul(b.mul(ky, kw), cin))
            with b.if_else(b.and_(yok, inside_x)) as (whole, taps):
                with whole:  # the kernel row lies inside a dense image: one contiguous copy
                    src = e.gep(I8, xrow, b.mul(ix0, ldx))
                    if wide_copy:  # masked 64-byte vectors (AVX-512BW)
                        copy_bytes(e, src, drow, b.mul(row_words, c64(4)))
                    else:
                        with e.loop(0, row_words, name="gr") as j:
                            b.store(e.load(I32, e.gep(I32, src, j), align=4), e.gep(I32, drow, j), align=4)
                with taps:
                    with e.loop(0, kw, name="gkx") as kx:
                        ix = b.add(ix0, b.mul(kx, dw))
                        ok = b.and_(yok, b.icmp_unsigned("<", ix, W))
                        src = b.select(ok, e.gep(I8, xrow, b.mul(ix, ldx)), zero_row)
                        tdst = e.gep(I8, drow, b.mul(kx, cin))
                        with e.loop(0, words, name="gw") as j:
                            v = e.load(I32, e.gep(I32, src, j), align=4)
                            b.store(v, e.gep(I32, tdst, j), align=4)


def _gather_packed_taps(e: ContextEmitter, blk: TaskBlock, rows: ir.Value, gbuf: ir.Value, xgroup: ir.Value,
                        zero_row: ir.Value, wide_copy: bool) -> None:
    """1-3 channels per tap (an RGB stem): gather each pixel's taps into one row with no padding
    between taps (``kh * kw * cin`` bytes, (ky, kx, c) order: K = 147 for a 7x7x3 stem, not 196),
    so the tiles multiply no padding bytes. A tap is copied as a 4-byte word at ``tap * cin``
    (its last byte overwritten by the next tap, the last one's landing in the row's slack: the
    weights are zero there); a kernel row inside an image of 4-byte pixels at once, its bytes
    compacted with one shuffle (AVX-512BW masked stores)."""
    b = e.b
    a = e.arg
    m0, m1 = blk.m0, blk.m1
    H, W, OH, OW, kh, kw = a("h"), a("w"), a("oh"), a("ow"), a("kh"), a("kw")
    ldx, xn = a("ldx"), a("xn")
    sh, sw, dh, dw, pt, pl = a("sh"), a("sw"), a("dh"), a("dw"), a("pt"), a("pl")
    kpad, cin = a("kpad"), a("cin")
    v64 = vec(I8, 64)
    whole_ok = b.and_(b.and_(b.icmp_signed("==", ldx, c64(4)), b.icmp_signed("==", dw, c64(1))),
                      b.icmp_signed("<=", kw, c64(16)))
    with _pixels(e, m0, m1, OH, OW, "kp") as (p, img, oy, ox):
        dst = e.gep(I8, gbuf, b.mul(b.sub(p, m0), kpad))
        b.store(dst, e.gep(PTR, rows, b.sub(p, m0)))
        iy0 = b.sub(b.mul(oy, sh), pt)
        ix0 = b.sub(b.mul(ox, sw), pl)
        ximg = e.gep(I8, xgroup, b.mul(img, xn))
        inside_x = b.and_(b.and_(b.icmp_signed(">=", ix0, c64(0)),
                                 b.icmp_signed("<", b.add(ix0, b.mul(b.sub(kw, c64(1)), dw)), W)), whole_ok)
        with e.loop(0, kh, name="kky") as ky:
            iy = b.add(iy0, b.mul(ky, dh))
            yok = b.icmp_unsigned("<", iy, H)
            xrow = e.gep(I8, ximg, b.mul(b.mul(iy, W), ldx))
            drow = e.gep(I8, dst, b.mul(b.mul(ky, kw), cin))

            def taps() -> None:
                with e.loop(0, kw, name="kkx") as kx:
                    ix = b.add(ix0, b.mul(kx, dw))
                    ok = b.and_(yok, b.icmp_unsigned("<", ix, W))
                    src = b.select(ok, e.gep(I8, xrow, b.mul(ix, ldx)), zero_row)
                    b.store(e.load(I32, src, align=1), e.gep(I8, drow, b.mul(kx, cin)), align=1)

            if not wide_copy:
                taps()
            else:
                with b.if_else(b.and_(yok, inside_x)) as (whole, per_tap):
                    with whole:  # 4-byte pixels side by side: one masked load, one shuffle, one masked store
                        src = e.gep(I8, xrow, b.mul(ix0, c64(4)))
                        row = e.call("llvm.masked.load.v64i8.p0", v64,
                                     [src, c32(1), byte_mask(e, b.mul(kw, c64(4))), ir.Constant(v64, None)])
                        store_pixel_channels(e, row, drow, byte_mask(e, b.mul(kw, cin)), cin)
                    with per_tap:
                        taps()


def _emit_task(m: ir.Module, name: str, tile: Tile, ukrs: dict[tuple[int, int], ir.Function]) -> None:
    fn = Emitter.function(m, name, VOID, [PTR, I64])
    e = ContextEmitter(m, fn, INT8_CONTEXT)
    task = fn.args[1]
    b = e.b
    MR, NR = tile.mr, tile.nr
    a = e.arg
    M, N = a("m"), a("cout")
    blk = task_block(e, task, a("gm"), a("gn"), a("tm"), a("tn"), M, N, tile)
    g, m0, m1, j0, j1, ntiles = blk.outer, blk.m0, blk.m1, blk.j0, blk.j1, blk.ntiles
    rows, ntaps = emit_row_table(e, blk, MR, wide_copy=tile.lanes == 16)
    k4 = a("k4")
    ldy, yg, ldr = a("ldy"), a("yg"), a("ldr")
    esz = b.select(b.icmp_unsigned("!=", b.and_(a("flags"), c64(FLAG_U8)), c64(0)), c64(1), c64(4))
    ygroup = e.gep(I8, a("y", PTR), b.mul(b.mul(g, yg), esz))
    resz = b.select(b.icmp_unsigned("!=", b.and_(a("flags"), c64(FLAG_RES_U8)), c64(0)), c64(1), c64(4))
    res_g = e.gep(I8, a("res", PTR), b.mul(b.mul(g, yg), resz))
    comp_g = e.gep(I32, a("comp", PTR), b.mul(g, yg))
    scale_g = e.gep(F32, a("scale", PTR), b.mul(g, yg))
    shift_g = e.gep(F32, a("shift", PTR), b.mul(g, yg))
    fq_g = e.gep(F32, a("fq", PTR), b.mul(g, yg))
    q_g = e.gep(I8, a("q", PTR), b.mul(g, yg))
    bgroup = e.gep(I8, a("bp", PTR), b.mul(g, a("bg")))
    panel_bytes = b.mul(b.mul(ntaps, k4), c64(NR * 4))
    flags = b.trunc(a("flags"), I32)
    lo, hi = a("lo", F32), a("hi", F32)
    with e.loop(j0, j1, name="jp") as jp:
        ncols = e.min(c64(NR), b.sub(N, b.mul(jp, c64(NR))))
        nvec = e.cdiv(ncols, tile.lanes)
        bpan = e.gep(I8, bgroup, b.mul(jp, panel_bytes))
        col = b.mul(jp, c64(NR))
        with e.loop(0, ntiles, name="tile") as it:
            p0 = b.add(m0, b.mul(it, c64(MR)))
            mr = e.min(c64(MR), b.sub(m1, p0))
            args = [e.gep(PTR, rows, b.mul(b.mul(it, ntaps), c64(MR))), ntaps, k4, bpan,
                    e.gep(I8, ygroup, b.mul(b.add(b.mul(p0, ldy), col), esz)), ldy, ncols,
                    e.gep(I32, comp_g, col), e.gep(F32, scale_g, col), e.gep(F32, shift_g, col),
                    e.gep(I8, res_g, b.mul(b.add(b.mul(p0, ldr), col), resz)), ldr, lo, hi, flags, e.gep(F32, fq_g, col),
                    a("fqs"), e.gep(I8, q_g, b.add(b.mul(p0, a("ldq")), col)), a("ldq")]
            call_microkernel(e, ukrs, MR, mr, nvec, args)
    b.ret_void()


def _emit_quantize(m: ir.Module, name: str, lanes: int) -> None:
    """quantize_task(ctx, task): rows [task * per_task, ...) of FakeQuantize, u8 or f32 out."""
    fn = Emitter.function(m, name, VOID, [PTR, I64])
    e = ContextEmitter(m, fn, QUANT_CONTEXT)
    b = e.b
    a = e.arg
    vf = vec(F32, lanes)
    L = lanes
    x, y = a("x", PTR), a("y", PTR)
    ldx, ldy, c, cpad = a("ldx"), a("ldy"), a("c"), a("cpad")
    ranges, rstride = a("ranges", PTR), a("rstride")
    steps = e.splat(a("steps", F32), L)
    fill = a("fill", I8)
    as_u8 = b.icmp_signed("==", a("mode"), c64(QUANT_U8))
    r0 = b.mul(fn.args[1], a("per_task"))
    r1 = e.min(a("rows"), b.add(r0, a("per_task")))
    zero = ir.Constant(vf, None)
    pix = a("pix")
    packed = b.icmp_signed("!=", pix, c64(0))
    with b.if_then(packed):
        # few channels (an image's 3), dense rows, u8 out: ``pix`` pixels per vector, lane
        # j is channel j % cpad of its pixel (channels past c take the fill); the ranges
        # come tiled the same way
        lane = ir.Constant(vec(I64, L), list(range(L)))
        chan = b.urem(lane, e.splat(cpad, L))
        real = b.icmp_unsigned("<", chan, e.splat(c, L))
        tiled = a("tiled", PTR)
        il, ih, rng, inv = (e.load(vf, e.gep(F32, tiled, i * L), align=4) for i in (0, 1, 2, 6))
        fills = e.splat(fill, L)
        with e.loop(r0, r1, pix, name="prow") as r:
            used = b.mul(e.min(pix, b.sub(r1, r)), cpad)
            lmask = b.icmp_signed("<", lane, e.splat(used, L))
            xv = e.call(f"llvm.masked.expandload.v{L}f32", vf,
                        [e.gep(F32, x, b.mul(r, ldx)), b.and_(lmask, real), zero])
            q = e.call(f"llvm.roundeven.v{L}f32", vf, [b.fmul(divide(e, b.fsub(xv, il), rng, inv), steps)])
            qc = b.select(b.fcmp_ordered("<=", xv, il), zero, b.select(b.fcmp_ordered(">", xv, ih), steps, q))
            qb = b.select(real, b.fptoui(qc, vec(I8, L)), fills)
            e.call(f"llvm.masked.store.v{L}i8.p0", VOID, [qb, e.gep(I8, y, b.mul(r, ldy)), c32(1), lmask])
    r1 = b.select(packed, r0, r1)  # the row loop below runs when not packed
    with e.loop(r0, r1, name="row") as r:
        src = e.gep(F32, x, b.mul(r, ldx))
        with e.loop(0, c, L, name="c") as j:
            mask = lane_mask(e, b.sub(c, j), L)
            il, ih, rng, ol, oh, orng, inv = (
                masked_load(e, vf, e.gep(F32, ranges, b.add(b.mul(c64(i), rstride), j)), mask) for i in range(7))
            xv = masked_load(e, vf, e.gep(F32, src, j), mask)
            t = b.fmul(divide(e, b.fsub(xv, il), rng, inv), steps)
            q = e.call(f"llvm.roundeven.v{L}f32", vf, [t])
            low = b.fcmp_ordered("<=", xv, il)
            high = b.fcmp_ordered(">", xv, ih)
            with b.if_else(as_u8) as (u8, f32):
                with u8:
                    qc = b.select(low, zero, b.select(high, steps, q))
                    qb = b.fptoui(qc, vec(I8, L))
                    dst = e.gep(I8, y, b.add(b.mul(r, ldy), j))
                    e.call(f"llvm.masked.store.v{L}i8.p0", VOID, [qb, dst, c32(1), mask])
                with f32:
                    deq = b.fadd(b.fmul(b.fdiv(q, steps), orng), ol)
                    out = b.select(low, ol, b.select(high, oh, deq))
                    masked_store(e, out, e.gep(F32, y, b.add(b.mul(r, ldy), j)), mask)
        with b.if_then(as_u8):
            with e.loop(c, cpad, name="pad") as j:
                b.store(fill, e.gep(I8, y, b.add(b.mul(r, ldy), j)))
    b.ret_void()


DW8_CONTEXT = ContextLayout(
    "int8_depthwise",
    ("x", "ldx", "xn", "h", "w", "oh", "ow", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pl", "c", "y", "ldy", "yn",
     "wp", "cp", "zp", "scale", "shift", "res", "ldr", "flags", "lo", "hi", "fq", "fqs"),
    pointers=("x", "y", "wp", "zp", "scale", "shift", "res", "fq"))


def _emit_depthwise(m: ir.Module, name: str, lanes: int) -> None:
    """dw_task(ctx, row): one output row of a depthwise convolution on u8 NHWC pixels,
    ``sum_taps (x - zp[c]) * w[tap, c]`` in i32 over channel vectors (padding taps skipped:
    they are the zero point, which adds nothing), then the int8 epilogue (``finish_tile``)."""
    fn = Emitter.function(m, name, VOID, [PTR, I64])
    e = ContextEmitter(m, fn, DW8_CONTEXT)
    b = e.b
    a = e.arg
    L = lanes
    vi, vf = vec(I32, L), vec(F32, L)
    row = fn.args[1]
    OH, OW, H, W = a("oh"), a("ow"), a("h"), a("w")
    img, oy = b.sdiv(row, OH), b.srem(row, OH)
    x, ldx, c, cp = a("x", PTR), a("ldx"), a("c"), a("cp")
    ximg = e.gep(I8, x, b.mul(img, a("xn")))
    esz = b.select(b.icmp_unsigned("!=", b.and_(a("flags"), c64(FLAG_U8)), c64(0)), c64(1), c64(4))
    kh, kw, dh, dw = a("kh"), a("kw"), a("dh"), a("dw")
    iy0 = b.sub(b.mul(oy, a("sh")), a("pt"))
    flags = b.trunc(a("flags"), I32)
    acc = e.var(vi)
    out = e.var(vf)
    with e.loop(0, OW, name="ox") as ox:
        ix0 = b.sub(b.mul(ox, a("sw")), a("pl"))
        pix = b.add(b.mul(img, a("yn")), b.mul(b.add(b.mul(oy, OW), ox), a("ldy")))
        ypix = e.gep(I8, a("y", PTR), b.mul(pix, esz))
        rpix = e.gep(F32, a("res", PTR), b.add(b.mul(img, b.mul(b.mul(OH, OW), a("ldr"))),
                                              b.mul(b.add(b.mul(oy, OW), ox), a("ldr"))))
        with e.loop(0, c, L, name="cb") as cb:
            mask = lane_mask(e, b.sub(c, cb), L)
            zpv = e.load(vi, e.gep(I32, a("zp", PTR), cb), align=4)
            b.store(ir.Constant(vi, None), acc)
            with e.loop(0, kh, name="ky") as ky:
                iy = b.add(iy0, b.mul(ky, dh))
                with b.if_then(b.icmp_unsigned("<", iy, H)):
                    xrow = e.gep(I8, ximg, b.mul(b.mul(iy, W), ldx))
                    with e.loop(0, kw, name="kx") as kx:
                        ix = b.add(ix0, b.mul(kx, dw))
                        with b.if_then(b.icmp_unsigned("<", ix, W)):
                            src = e.gep(I8, xrow, b.add(b.mul(ix, ldx), cb))
                            xb = e.call(f"llvm.masked.load.v{L}i8.p0", vec(I8, L),
                                        [src, c32(1), mask, ir.Constant(vec(I8, L), None)])
                            xv = b.sub(b.zext(xb, vi), zpv)
                            wv = e.load(vi, e.gep(I32, a("wp", PTR), b.add(b.mul(b.add(b.mul(ky, kw), kx), cp), cb)),
                                        align=4)
                            b.store(b.add(e.load(vi, acc), b.mul(xv, wv)), acc)
            sc = e.load(vf, e.gep(F32, a("scale", PTR), cb), align=4)
            sh = e.load(vf, e.gep(F32, a("shift", PTR), cb), align=4)
            b.store(b.fadd(b.fmul(b.sitofp(e.load(vi, acc), vf), sc), sh), out)
            fq = [[e.load(vf, e.gep(F32, a("fq", PTR), b.add(b.mul(c64(i), a("fqs")), cb)), align=4)]
                  for i in range(FQ_ROWS)]
            finish_tile(e, [[out]], [mask], flags, a("lo", F32), a("hi", F32), fq,
                        _fixed(e.gep(F32, rpix, cb)), _fixed(cb), ypix)
    b.ret_void()


DW_UNROLLED = ((3, 3), (5, 5))


def _emit_depthwise_unrolled(m: ir.Module, name: str, lanes: int, KH: int, KW: int) -> None:
    """The depthwise task for a KH x KW kernel known at compile time: channel vectors outside,
    pixels inside, the taps' weights in registers; a tap outside the image reads pixel 0 and is
    masked to zero (no branches). The products and sums are integers below 2**24, so f32 FMA
    computes them exactly (and faster than i32 multiplies)."""
    fn = Emitter.function(m, name, VOID, [PTR, I64])
    e = ContextEmitter(m, fn, DW8_CONTEXT)
    b = e.b
    a = e.arg
    L = lanes
    vi, vf = vec(I32, L), vec(F32, L)
    row = fn.args[1]
    OH, OW, H, W = a("oh"), a("ow"), a("h"), a("w")
    img, oy = b.sdiv(row, OH), b.srem(row, OH)
    x, ldx, c, cp = a("x", PTR), a("ldx"), a("c"), a("cp")
    ximg = e.gep(I8, x, b.mul(img, a("xn")))
    esz = b.select(b.icmp_unsigned("!=", b.and_(a("flags"), c64(FLAG_U8)), c64(0)), c64(1), c64(4))
    dh, dw, sw, pl = a("dh"), a("dw"), a("sw"), a("pl")
    iy0 = b.sub(b.mul(oy, a("sh")), a("pt"))
    rows_ok, rows = [], []
    for ky in range(KH):
        iy = b.add(iy0, b.mul(c64(ky), dh))
        ok = b.icmp_unsigned("<", iy, H)
        rows_ok.append(ok)
        rows.append(e.gep(I8, ximg, b.mul(b.mul(b.select(ok, iy, c64(0)), W), ldx)))
    flags = b.trunc(a("flags"), I32)
    out = e.var(vf)
    pix0 = b.add(b.mul(img, a("yn")), b.mul(b.mul(oy, OW), a("ldy")))
    rrow0 = b.add(b.mul(img, b.mul(b.mul(OH, OW), a("ldr"))), b.mul(b.mul(oy, OW), a("ldr")))
    with e.loop(0, c, L, name="cb") as cb:
        mask = lane_mask(e, b.sub(c, cb), L)
        # exact in f32: |x - zp| <= 255, |w| <= 128, and 25 taps of such products stay below 2**24
        zpv = b.sitofp(e.load(vi, e.gep(I32, a("zp", PTR), cb), align=4), vf)
        wv = [b.sitofp(e.load(vi, e.gep(I32, a("wp", PTR), b.add(b.mul(c64(t), cp), cb)), align=4), vf)
              for t in range(KH * KW)]
        sc = e.load(vf, e.gep(F32, a("scale", PTR), cb), align=4)
        sh = e.load(vf, e.gep(F32, a("shift", PTR), cb), align=4)
        fq = [[e.load(vf, e.gep(F32, a("fq", PTR), b.add(b.mul(c64(i), a("fqs")), cb)), align=4)]
              for i in range(FQ_ROWS)]
        def finish(ox: ir.Value, acc: ir.Value) -> None:
            b.store(b.fadd(b.fmul(acc, sc), sh), out)
            ypix = e.gep(I8, a("y", PTR), b.mul(b.add(pix0, b.mul(ox, a("ldy"))), esz))
            rpix = e.gep(F32, a("res", PTR), b.add(rrow0, b.mul(ox, a("ldr"))))
            finish_tile(e, [[out]], [mask], flags, a("lo", F32), a("hi", F32), fq,
                        _fixed(e.gep(F32, rpix, cb)), _fixed(cb), ypix)

        def pixels(x: ir.Value, col: ir.Value) -> ir.Value:
            xb = e.call(f"llvm.masked.load.v{L}i8.p0", vec(I8, L), [e.gep(I8, x, col), c32(1), mask,
                                                                  ir.Constant(vec(I8, L), None)])
            return b.uitofp(xb, vf)

        def border(lo: ir.Value, hi: ir.Value) -> None:
            with e.loop(lo, hi, name="ox") as ox:
                ix0 = b.sub(b.mul(ox, sw), pl)
                acc = ir.Constant(vf, None)
                for kx in range(KW):
                    ix = b.add(ix0, b.mul(c64(kx), dw))
                    xok = b.icmp_unsigned("<", ix, W)
                    col = b.add(b.mul(b.select(xok, ix, c64(0)), ldx), cb)
                    for ky in range(KH):
                        ok = b.and_(xok, rows_ok[ky])
                        xv = b.select(ok, b.fsub(pixels(rows[ky], col), zpv), ir.Constant(vf, None))
                        acc = fmuladd(e, xv, wv[ky * KW + kx], acc)
                finish(ox, acc)

        # inside the image (every tap readable): sum x * w, then - zp * sum(w), no selects;
        # with unit strides 4 pixels share their columns (each loaded and converted once)
        wsum = wv[0]
        for t in range(1, KH * KW):
            wsum = b.fadd(wsum, wv[t])
        zsw = b.fmul(zpv, wsum)  # exact: |zp| <= 255, |sum w| <= 25 * 128

        def inside_one(lo: ir.Value, hi: ir.Value) -> None:
            with e.loop(lo, hi, name="oxi") as ox:
                ix0 = b.sub(b.mul(ox, sw), pl)
                acc = ir.Constant(vf, None)
                for kx in range(KW):
                    col = b.add(b.mul(b.add(ix0, b.mul(c64(kx), dw)), ldx), cb)
                    for ky in range(KH):
                        acc = fmuladd(e, pixels(rows[ky], col), wv[ky * KW + kx], acc)
                finish(ox, b.fsub(acc, zsw))

        P = 4

        def inside_unit(lo: ir.Value, hi: ir.Value) -> ir.Value:
            end = b.add(lo, b.mul(b.sdiv(b.sub(hi, lo), c64(P)), c64(P)))
            with e.loop(lo, end, P, name="oxu") as ox:
                ix0 = b.sub(ox, pl)
                cols = [[pixels(rows[ky], b.add(b.mul(b.add(ix0, c64(j)), ldx), cb)) for j in range(P + KW - 1)]
                        for ky in range(KH)]
                for q in range(P):
                    acc = ir.Constant(vf, None)
                    for ky in range(KH):
                        for kx in range(KW):
                            acc = fmuladd(e, cols[ky][q + kx], wv[ky * KW + kx], acc)
                    finish(b.add(ox, c64(q)), b.fsub(acc, zsw))
            return end

        all_rows = rows_ok[0]
        for ok in rows_ok[1:]:
            all_rows = b.and_(all_rows, ok)
        first = e.min(OW, e.cdiv(pl, sw))  # the first ox whose taps start inside
        span = b.sub(b.add(b.sub(W, c64(1)), pl), b.mul(c64(KW - 1), dw))
        last = b.select(b.icmp_signed("<", span, c64(0)), c64(0), b.add(b.sdiv(span, sw), c64(1)))
        lo = b.select(all_rows, first, OW)
        hi = b.select(all_rows, e.max(lo, e.min(OW, last)), OW)
        border(c64(0), lo)
        unit = b.and_(b.icmp_signed("==", sw, c64(1)), b.icmp_signed("==", dw, c64(1)))
        mid = e.var(I64, lo)
        with b.if_then(unit):
            b.store(inside_unit(lo, hi), mid)
        inside_one(e.load(I64, mid), hi)
        border(hi, OW)
    b.ret_void()


def _build_module(prefix: str, isa: Isa, tile: Tile, activations: bool = False) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    epi = _emit_int8_epilogue(m, f"{prefix}_epi") if activations else None
    ukrs = {(r, v): _emit_microkernel(m, f"{prefix}_ukr_{r}x{v}", tile, r, v, isa, epi)
            for v in range(1, tile.nv + 1) for r in range(1, tile.mr + 1)}
    _emit_task(m, f"{prefix}_int8_task", tile, ukrs)
    _emit_quantize(m, f"{prefix}_quantize_task", isa.f32_lanes)
    _emit_depthwise(m, f"{prefix}_dw_task", isa.f32_lanes)
    for kh, kw in DW_UNROLLED:
        _emit_depthwise_unrolled(m, f"{prefix}_dw{kh}x{kw}_task", isa.f32_lanes, kh, kw)
    return m


class Int8Kernels:
    """The compiled int8 module for one ISA level (VNNI or not)."""

    def __init__(self, isa: Isa, activations: bool = False):
        self.isa = isa
        self.tile = INT8_TILES[isa.level]
        #: whether the micro-kernels finish tiles with an activation (:func:`vnni_activations`)
        self.activations = activations
        t = self.tile
        sig = f"int8gemm|{isa.level}|vnni{int(isa.vnni)}|mr{t.mr}|nv{t.nv}|l{t.lanes}|act{int(activations)}"
        self.lib = jit.load(sig, isa, lambda p: _build_module(p, isa, t, activations))
        self.task_address = self.lib.address("int8_task")
        self.quantize_address = self.lib.address("quantize_task")
        self.depthwise_address = self.lib.address("dw_task")
        #: the depthwise tasks with unrolled taps, by kernel size
        self.depthwise_unrolled = {k: self.lib.address(f"dw{k[0]}x{k[1]}_task") for k in DW_UNROLLED}

    @property
    def exec_type(self) -> str:
        """How the kernels multiply, OpenVINO-style (``jit_avx512_amx_I8``, ``jit_avx512_vnni_I8``,
        ``jit_avx2_I8`` ...)."""
        if self.isa.amx_int8:
            return "jit_avx512_amx_I8"
        return self.vector_exec_type

    @property
    def vector_exec_type(self) -> str:
        """The exec type of kernels that use the vector units only (depthwise, pooling), also on
        an AMX machine (``jit_avx512_vnni_I8`` ...)."""
        vnni = "_vnni" if self.isa.vnni and self.isa.level != "generic" else ""
        return f"jit_{self.isa.level}{vnni}_I8"


@functools.cache
def _kernels_for(isa: Isa, activations: bool) -> Int8Kernels:
    return Int8Kernels(isa, activations)


def int8_kernels(isa: Isa | None = None) -> Int8Kernels:
    """The int8 kernels for ``isa`` (default: the host's best), with activation tiles where
    :func:`vnni_activations` says so now."""
    isa = isa or host_isa()
    return _kernels_for(isa, vnni_activations(isa))


# --------------------------------------------------------------------------- AMX tiles
def _emit_int8_epilogue(m: ir.Module, name: str) -> ir.Function:
    """epi(cbuf, mr, ncols, c, ldc, comp, scale, shift, res, ldr, lo, hi, flags, fq, fqs, q, ldq):
    the int8 epilogue of the VNNI micro-kernel for ``mr`` rows of a 32 x 32 i32 block in
    ``cbuf`` (row stride 32), ``ncols`` valid columns, row by row."""

    fn = Emitter.function(m, name, VOID, [PTR, I64, I64, PTR, I64, PTR, PTR, PTR, PTR, I64, F32, F32, I32,
                                          PTR, I64, PTR, I64], internal=True, noinline=True)
    cbuf, mr, ncols, cp, ldc, compp, scalep, shiftp, resp, ldr, lo, hi, flags, fqp, fqs, qp, ldq = fn.args
    e = Emitter(m, fn)
    b = e.b
    L, nv = AMX_TILE.lanes, AMX_TILE.nv
    vi, vf = vec(I32, L), vec(F32, L)
    masks = [lane_mask(e, b.sub(ncols, c64(v * L)), L) for v in range(nv)]
    comp = [b.bitcast(masked_load(e, vf, e.gep(I32, compp, v * L), masks[v]), vi) for v in range(nv)]
    scale = [masked_load(e, vf, e.gep(F32, scalep, v * L), masks[v]) for v in range(nv)]
    shift = [masked_load(e, vf, e.gep(F32, shiftp, v * L), masks[v]) for v in range(nv)]
    fq = [[masked_load(e, vf, e.gep(F32, fqp, b.add(b.mul(c64(i), fqs), c64(v * L))), masks[v])
           for v in range(nv)] for i in range(FQ_ROWS)]
    out = [[e.var(vf) for _ in range(nv)]]

    def folded_rows(block_end: bool) -> None:
        """FLAG_FOLDED: scale, shift hold A, B; the u8 steps of the FakeQuantize out, or of the
        second one after a residual block's end (block_end)."""
        full = ir.Constant(vec(I1, L), [1] * L)
        mask = concat_vectors(b, [mk if mk is not None else full for mk in masks])
        fma = f"llvm.fma.v{L}f32"
        zero = ir.Constant(vf, None)
        with e.loop(0, mr, name="ef") as r:
            crow = e.gep(I32, cbuf, b.mul(r, c64(AMX_TILE.nr)))
            rrow = e.gep(I8, resp, b.mul(ldr, r))
            parts = []
            for v in range(nv):
                x = b.sitofp(e.load(vi, e.gep(I32, crow, v * L), align=64), vf)
                t = e.call(fma, vf, [x, scale[v], shift[v]])
                if block_end:
                    q = e.call(f"llvm.roundeven.v{L}f32", vf, [t])
                    q = e.call(f"llvm.maxnum.v{L}f32", vf, [q, zero])
                    q = e.call(f"llvm.minnum.v{L}f32", vf, [q, fq[3][v]])
                    bt = vec(I8, L)
                    rb = e.call(f"llvm.masked.load.v{L}i8.p0", bt,
                                [e.gep(I8, rrow, v * L), c32(1), masks[v], ir.Constant(bt, None)])
                    t = e.call(fma, vf, [b.uitofp(rb, vf), fq[FOLD_D][v], fq[FOLD_E][v]])
                    t = e.call(fma, vf, [q, fq[FOLD_C][v], t])
                    top = fq[2 * FQ_WORDS + 3][v]
                else:
                    top = fq[3][v]
                t = b.select(b.fcmp_ordered(">", t, top), top, t)
                parts.append(round_to_i32(e, t))
            e.call(f"llvm.masked.store.v{nv * L}i8.p0", VOID,
                   [packed_steps(e, parts), e.gep(I8, cp, b.mul(ldc, r)), c32(1), mask])

    def rows(fl: ir.Value) -> None:
        with e.loop(0, mr, name="er") as r:
            crow = e.gep(I32, cbuf, b.mul(r, c64(AMX_TILE.nr)))
            for v in range(nv):
                acc = e.load(vi, e.gep(I32, crow, v * L), align=64)
                x = b.sitofp(b.add(acc, comp[v]), vf)
                b.store(b.fadd(b.fmul(x, scale[v]), shift[v]), out[0][v])
            resz = b.select(b.icmp_unsigned("!=", b.and_(fl, c32(FLAG_RES_U8)), c32(0)), c64(1), c64(4))
            finish_tile(e, out, masks, fl, lo, hi, fq, lambda _: e.gep(I8, resp, b.mul(b.mul(ldr, r), resz)),
                        lambda _: b.mul(ldc, r), cp, (qp, lambda _: b.mul(ldq, r)), activations=True)

    # the common flag sets get a row loop of their own (the flags constant: no tests per row,
    # and only the FakeQuantize rows they use stay live); any other set runs the general loop
    done = fn.append_basic_block("epi.done")
    general = fn.append_basic_block("epi.general")
    switch = b.switch(flags, general)
    for combo in EPILOGUE_VARIANTS:
        blk = fn.append_basic_block(f"epi.{combo}")
        switch.add_case(c32(combo), blk)
        b.position_at_end(blk)
        if combo in (FOLDED_FLAGS, FOLDED_BLOCK_END):
            folded_rows(combo == FOLDED_BLOCK_END)
        else:
            rows(c32(combo))
        b.branch(done)
    b.position_at_end(general)
    rows(flags)
    b.branch(done)
    b.position_at_end(done)
    b.ret_void()
    return fn


#: flag sets with a specialised AMX epilogue loop: no residual, a residual, a residual through its
#: FakeQuantize, the u8 steps of a residual's FakeQuantize; each with f32 out, u8 steps out, or f32 and a second u8 output;
#: and a ResNet block's end (FakeQuantize, residual through its own, ReLU, the next block's u8 steps only)
EPILOGUE_VARIANTS = tuple(res | out for res in (0, FLAG_RES, FLAG_RES | FLAG_RES_FQ,
                                                FLAG_RES | FLAG_RES_FQ | FLAG_RES_U8)
                          for out in (0, FLAG_FQ_END | FLAG_U8, FLAG_ALSO_U8)) + tuple(
    FLAG_RES | FLAG_RES_FQ | res | FLAG_FQ_MID | FLAG_U8 | FLAG_ALSO_U8 for res in (0, FLAG_RES_U8))
#: an activation after the bias (a transformer's FFN: GELU), f32 out or the next op's u8 steps
EPILOGUE_VARIANTS += tuple((EPILOGUE_ACTIVATIONS.index(act) << ACT_SHIFT) | out
                           for act in ("gelu_erf", "gelu_tanh", "swish") for out in (0, FLAG_FQ_END | FLAG_U8))
#: the graph's int8 ops run the fast FakeQuantize arithmetic: those flag sets are specialised (the
#: exact ones run the general loop on AMX)
EPILOGUE_VARIANTS = tuple(FLAG_FAST | v for v in EPILOGUE_VARIANTS)
#: the only flag set FLAG_FOLDED goes with (:meth:`Int8Call.bind` sets it on exactly these flags)
FOLDED_FLAGS = FLAG_FOLDED | FLAG_FAST | FLAG_FQ_END | FLAG_U8
#: and a ResNet block's end (FakeQuantize mid-way, u8 residual through its own, the next steps only)
FOLDED_BLOCK_END = (FLAG_FOLDED | FLAG_FAST | FLAG_FQ_MID | FLAG_RES | FLAG_RES_FQ | FLAG_RES_U8 | FLAG_U8
                    | FLAG_ALSO_U8)
EPILOGUE_VARIANTS += (FOLDED_FLAGS, FOLDED_BLOCK_END)


def _emit_int8_task(m: ir.Module, name: str, epi: ir.Function) -> None:

    fn = Emitter.function(m, name, VOID, [PTR, I64])
    e = ContextEmitter(m, fn, INT8_CONTEXT)
    b = e.b
    a = e.arg
    MR, NR, H = AMX_TILE.mr, AMX_TILE.nr, TILE_ROWS
    M, N = a("m"), a("cout")
    blk = task_block(e, fn.args[1], a("gm"), a("gn"), a("tm"), a("tn"), M, N, AMX_TILE)
    g, m0, m1, j0, j1, ntiles = blk.outer, blk.m0, blk.m1, blk.j0, blk.j1, blk.ntiles
    rows, ntaps = emit_row_table(e, blk, MR, fill_tail=True, wide_copy=True, per_tap=False)
    k4, kq, nck, ktap = a("k4"), a("kq"), a("nck"), a("ktap")
    direct = b.icmp_signed("!=", a("direct"), c64(0))
    kbytes, qbytes = b.mul(k4, c64(4)), b.mul(kq, c64(4))
    kp = b.mul(e.cdiv(b.mul(b.mul(nck, qbytes), c64(1)), 64), c64(64))  # a copied row, zero padded
    # A descriptors of a group of tiles at once (as many as STACK_LIMIT holds copies of), so that the
    # panels run outside the tiles: each panel of weights is read once per group, not once per tile
    # (batch 1: a 7x7 map is 2 tiles, a 14x14 one 7: the weights of the last stages streamed once)
    tile_bytes = b.mul(b.mul(ntaps, c64(MR)), kp)
    tg = e.max(c64(1), e.min(ntiles, b.sdiv(c64(STACK_LIMIT), tile_bytes)))
    abuf = aligned_alloca(e, I8, b.mul(tg, tile_bytes))
    desc_ptr = b.alloca(PTR, size=b.mul(b.mul(tg, ntaps), c64(2)))
    desc_ld = b.alloca(I64, size=b.mul(b.mul(tg, ntaps), c64(2)))
    # two C buffers: a tile's C goes to one while the epilogue reads the previous tile's from the other
    cbuf2 = aligned_alloca(e, I32, c64(2 * MR * NR))
    emit_tile_config(e, qbytes, kq)
    merged = b.icmp_signed("!=", a("merge"), c64(0))
    xgroup = e.gep(I8, a("x", PTR), b.mul(g, a("xg")))
    # a 1x1 stride-1 convolution over one image or contiguous images (or a GEMM): pixel p's row is x + p * ldx
    contiguous = b.and_(b.icmp_signed("==", b.mul(a("kh"), a("kw")), c64(1)),
                        b.icmp_signed("==", b.add(b.mul(a("sh"), a("sw")), b.add(a("pt"), a("pl"))), c64(1)))
    contiguous = b.and_(contiguous, b.and_(b.icmp_signed("==", a("ow"), a("w")), b.icmp_signed("==", a("oh"), a("h"))))
    one_image = b.icmp_signed("<=", a("m"), b.mul(a("oh"), a("ow")))  # a GEMM's rows (xn 0) too
    contiguous = b.and_(contiguous, b.or_(one_image, b.icmp_signed("==", a("xn"), b.mul(b.mul(a("h"), a("w")), a("ldx")))))

    ldy, yg, ldr, ldq = a("ldy"), a("yg"), a("ldr"), a("ldq")
    esz = b.select(b.icmp_unsigned("!=", b.and_(a("flags"), c64(FLAG_U8)), c64(0)), c64(1), c64(4))
    ygroup = e.gep(I8, a("y", PTR), b.mul(b.mul(g, yg), esz))
    resz = b.select(b.icmp_unsigned("!=", b.and_(a("flags"), c64(FLAG_RES_U8)), c64(0)), c64(1), c64(4))
    res_g = e.gep(I8, a("res", PTR), b.mul(b.mul(g, yg), resz))
    comp_g = e.gep(I32, a("comp", PTR), b.mul(g, yg))
    scale_g = e.gep(F32, a("scale", PTR), b.mul(g, yg))
    shift_g = e.gep(F32, a("shift", PTR), b.mul(g, yg))
    fq_g = e.gep(F32, a("fq", PTR), b.mul(g, yg))
    q_g = e.gep(I8, a("q", PTR), b.mul(g, yg))
    bgroup = e.gep(I8, a("bp", PTR), b.mul(g, a("bg")))
    tap_bytes = b.mul(ktap, c64(4 * NR))
    panel_bytes = b.mul(ntaps, tap_bytes)
    flags = b.trunc(a("flags"), I32)
    lo, hi = a("lo", F32), a("hi", F32)
    step_bytes = b.mul(kq, c64(4 * NR))
    # the first group of row tiles reads each B panel from memory (a layer's weights, once per
    # inference): it streams them pf_dist ahead into L2, as the bf16 tile task does
    b_start = e.gep(I8, bgroup, b.mul(j0, panel_bytes))
    b_end = e.gep(I8, bgroup, b.mul(j1, panel_bytes))
    task_b = b.mul(b.sub(j1, j0), panel_bytes)
    pf_dist = b.select(b.icmp_signed("<=", ntiles, c64(1)), c64(AMX_PF_DIST_ONE_TILE), c64(AMX_PF_DIST))
    emit_prefetch_slice(e, b_start, e.min(task_b, pf_dist), c64(0), c64(1))
    grp_var = e.var(I64, c64(0))

    def block(two_m: bool, two_n: bool, jp: ir.Value, lt: ir.Value) -> None:
        grp_v = e.load(I64, grp_var)
        bpan = e.gep(I8, bgroup, b.mul(jp, panel_bytes))

        def a_of_tap(tap: ir.Value) -> tuple[list[ir.Value], list[ir.Value]]:
            d0 = b.mul(b.add(b.mul(lt, ntaps), tap), c64(2))
            return ([e.load(PTR, e.gep(PTR, desc_ptr, b.add(d0, c64(h)))) for h in range(2)],
                    [e.load(I64, e.gep(I64, desc_ld, b.add(d0, c64(h)))) for h in range(2)])

        def prefetch(bc: ir.Value) -> None:  # the first tile of a group streams the weights pf_dist ahead
            ahead = e.gep(I8, bc, pf_dist)
            with b.if_then(b.and_(pf, b.icmp_unsigned("<", b.ptrtoint(ahead, I64), b.ptrtoint(b_end, I64)))):
                with e.loop(0, step_bytes, 64, name="pfk") as ln:
                    e.call("llvm.prefetch.p0", VOID, [e.gep(I8, ahead, ln), c32(0), c32(2), c32(1)])

        pf = b.and_(b.icmp_signed("==", lt, c64(0)),
                    b.or_(b.icmp_signed("==", grp_v, c64(0)), b.icmp_signed(">", task_b, c64(AMX_L2_WEIGHTS))))
        emit_tile_block(e, "tdpbusd", two_m, two_n, ntaps, nck, a_of_tap,
                        lambda tap: e.gep(I8, bpan, b.mul(tap, tap_bytes)), qbytes, step_bytes, prefetch)

    with e.loop(0, e.cdiv(ntiles, tg), name="tgrp") as grp:
        b.store(grp, grp_var)
        t0 = b.mul(grp, tg)
        t1 = e.min(ntiles, b.add(t0, tg))
        with e.loop(t0, t1, name="tile") as it:
            lt = b.sub(it, t0)
            # A of this tile: per tap and half, a base and a row stride (straight from the
            # activations when the half's 16 rows are uniformly strided, else a zero-padded copy)
            with b.if_else(merged) as (gathered, tapwise):
                with gathered:  # a stem's gathered rows: one tap, from the row table
                    with e.loop(0, ntaps, name="atap") as tap:
                        for h in range(2):
                            slot = b.add(b.mul(b.add(b.mul(it, ntaps), tap), c64(MR)), c64(h * H))
                            src = [e.load(PTR, e.gep(PTR, rows, b.add(slot, c64(r)))) for r in range(H)]
                            addr = [b.ptrtoint(p, I64) for p in src]
                            step = b.sub(addr[1], addr[0])
                            ok = direct
                            for r in range(2, H):
                                ok = b.and_(ok, b.icmp_unsigned("==", addr[r], b.add(addr[0], b.mul(step, c64(r)))))
                            d = b.add(b.mul(b.add(b.mul(lt, ntaps), tap), c64(2)), c64(h))
                            with b.if_else(ok) as (uniform, gather):
                                with uniform:
                                    b.store(src[0], e.gep(PTR, desc_ptr, d))
                                    b.store(step, e.gep(I64, desc_ld, d))
                                with gather:
                                    dst = e.gep(I8, abuf, b.mul(b.mul(d, c64(H)), kp))
                                    copy_rows(e, src, dst, kp, kbytes, kp)
                                    b.store(dst, e.gep(PTR, desc_ptr, d))
                                    b.store(kp, e.gep(I64, desc_ld, d))
                with tapwise:
                    for h in range(2):
                        tap_descriptors(e, xgroup, b.add(m0, b.add(b.mul(it, c64(MR)), c64(h * H))), lt, h, ntaps, direct,
                                         contiguous, desc_ptr, desc_ld, abuf, kp, kbytes)

        with e.loop(j0, j1, name="jp") as jp:
            col = b.mul(jp, c64(NR))
            ncols = e.min(c64(NR), b.sub(N, col))
            def cbuf_of(t: ir.Value) -> ir.Value:
                return e.gep(I32, cbuf2, b.mul(b.and_(b.sub(t, t0), c64(1)), c64(MR * NR)))

            def epilogue(t: ir.Value) -> None:
                p0 = b.add(m0, b.mul(t, c64(MR)))
                mr = e.min(c64(MR), b.sub(m1, p0))
                b.call(epi, [cbuf_of(t), mr, ncols, e.gep(I8, ygroup, b.mul(b.add(b.mul(p0, ldy), col), esz)), ldy,
                             e.gep(I32, comp_g, col), e.gep(F32, scale_g, col), e.gep(F32, shift_g, col),
                             e.gep(I8, res_g, b.mul(b.add(b.mul(p0, ldr), col), resz)), ldr, lo, hi, flags,
                             e.gep(F32, fq_g, col), a("fqs"), e.gep(I8, q_g, b.add(b.mul(p0, ldq), col)), ldq])

            # software pipelined: a tile's products are issued, then the previous tile's epilogue
            # runs on the vector units while the tile unit multiplies, then the C tiles are stored
            # (tile registers are not touched by the epilogue)
            with e.loop(t0, t1, name="btile") as it:
                lt = b.sub(it, t0)
                p0 = b.add(m0, b.mul(it, c64(MR)))
                mr = e.min(c64(MR), b.sub(m1, p0))
                two_by_two(e, b.icmp_signed(">", mr, c64(H)), b.icmp_signed(">", ncols, c64(16)),
                           lambda tm_, tn_: block(tm_, tn_, jp, lt))
                with b.if_then(b.icmp_signed(">", it, t0)):
                    epilogue(b.sub(it, c64(1)))
                store_c_tiles(e, cbuf_of(it))
            epilogue(b.sub(t1, c64(1)))
    tile_release(e)
    b.ret_void()


def _build_int8(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    epi = _emit_int8_epilogue(m, f"{prefix}_epi")
    _emit_int8_task(m, f"{prefix}_int8_task", epi)
    return m


class AmxInt8Kernels:
    """The compiled AMX int8 module (``int8_task`` over ``INT8_CONTEXT``)."""

    def __init__(self, isa: Isa):
        if not isa.amx_int8:
            raise EmberError(f"ember: the AMX int8 kernels need AMX tiles, which ISA {isa.level!r} here lacks")
        self.isa = isa
        self.lib = jit.load("amx-int8|mr32|nr32", isa, lambda p: _build_int8(p, isa))
        self.task_address = self.lib.address("int8_task")


@functools.cache
def amx_int8_kernels(isa: Isa) -> AmxInt8Kernels:
    """The AMX int8 kernels for ``isa`` (which must have ``amx_int8``)."""
    return AmxInt8Kernels(isa)


# --------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class Int8Weights:
    """s8 weights packed for the micro-kernel: ``[groups][panels][taps][ktap][NR][4]`` bytes
    (``ktap`` = ``k4``, or for AMX tiles ``k4`` zero padded to whole tile steps, see
    :func:`~ember.devices.cpu.kernels.amx.amx_split`).

    ``sums[g, n]`` is the sum of the weights of output channel ``n`` of group ``g`` (for the
    zero-point compensation). ``amx``: packed for the AMX kernel (``isa.amx_int8``)."""

    data: np.ndarray
    sums: np.ndarray
    groups: int
    taps: int
    cin: int
    cout: int
    nr: int
    isa: Isa
    amx: bool = False
    ktap: int = 0
    group_bytes: int = 0
    kq: int = 0
    nck: int = 0

    @property
    def k4(self) -> int:
        return -(-self.cin // 4)

    @property
    def group_stride(self) -> int:
        return self.group_bytes or self.data.size // self.groups


def pack_int8_weights(w: np.ndarray, isa: Isa | None = None, tight: bool = False) -> Int8Weights:
    """Pack ``w[groups, taps, cin, cout]`` (integers in [-128, 127]) for ``isa``. ``tight``: the
    A rows are copied anyway (a stem's gathered rows), so AMX tile steps need not divide ``k4``:
    the fewest zero groups (:func:`~ember.devices.cpu.kernels.amx.amx_split_tight`)."""
    isa = isa or host_isa()
    w = np.asarray(w)
    if w.ndim != 4 or w.dtype.kind not in "iu":
        raise EmberError(f"ember: pack_int8_weights wants integer w[groups, taps, cin, cout], got {w.dtype}{w.shape}")
    if w.size and (w.min() < -128 or w.max() > 127):
        raise EmberError("ember: int8 weights must lie in [-128, 127]")
    nr = INT8_TILES[isa.level].nr
    groups, taps, cin, cout = w.shape
    k4, npan = -(-cin // 4), -(-cout // nr)
    split = amx_split_tight if tight else amx_split
    amx = isa.amx_int8 and k4 > 0 and fits_stack(taps, 4 * split(k4)[2])
    kq, nck, ktap = split(k4) if amx else (0, 0, k4)
    wp = np.zeros((groups, taps, ktap * 4, npan * nr), np.int8)
    wp[:, :, :cin, :cout] = w
    wp = wp.reshape(groups, taps, ktap, 4, npan, nr).transpose(0, 4, 1, 2, 5, 3)
    data = aligned_empty(max(wp.size, 64), np.int8)
    data[:] = 0
    data[:wp.size] = wp.reshape(-1)
    sums = w.astype(np.int64).sum(axis=(1, 2))
    return Int8Weights(data, sums, groups, taps, cin, cout, nr, isa, amx, ktap, wp.size // max(groups, 1), kq, nck)


# --------------------------------------------------------------------------- binding
def fq_stride(n: int) -> int:
    """Floats per row of a fused FakeQuantize's parameters for ``n`` channels."""
    return -(-max(n, 1) // 16) * 16 + 16


def fq_block(n: int, output: QuantizeParams | None, residual: QuantizeParams | None,
             also: QuantizeParams | None = None) -> np.ndarray:
    """The FQ_ROWS parameter rows for ``n`` channels: the output's FakeQuantize, the
    residual's, the second u8 output's (rows of ones where there is none), 64-byte aligned
    rows of ``fq_stride(n)``."""
    out = aligned_empty((FQ_ROWS, fq_stride(n)))
    out[:] = 1
    for base, p in ((0, output), (FQ_WORDS, residual), (2 * FQ_WORDS, also)):
        if p is not None:
            v = p.vectors(n)  # il, ih, ih - il, ol, oh, oh - ol
            steps = np.full(n, p.steps, np.float32)
            out[base:base + FQ_WORDS, :n] = np.stack([v[0], v[1], v[2], steps, v[3], v[4], v[5] / steps,
                                                      p.reciprocal(n)])
    return out


@dataclass(frozen=True)
class FusedQuantize:
    """A FakeQuantize (scalar or per output channel ranges) fused into the int8 epilogue: ``at="mid"`` right
    after scale and shift (before the residual and the clamp), ``at="end"`` last; with
    ``u8=True`` (only at the end) the output holds its u8 steps instead of f32 values."""

    params: QuantizeParams
    at: str = "end"
    u8: bool = False

    def __post_init__(self) -> None:
        if self.at not in ("mid", "end") or (self.u8 and self.at != "end"):
            raise EmberError(f"ember: a fused FakeQuantize goes 'mid' or 'end' (u8 only at the end), got {self}")
        if not self.params.valid():
            raise EmberError("ember: a fused FakeQuantize needs valid ranges")


    @property
    def flags(self) -> int:
        return (FLAG_FQ_MID if self.at == "mid" else FLAG_FQ_END) | (FLAG_U8 if self.u8 else 0)


class Int8Call:
    """An int8 implicit-GEMM operation bound to its geometry, weights, scales and schedule.

    ``y = clamp(scale * sum((x - zero_point) * w) + shift + residual, lo, hi)`` per output
    channel; ``scale`` and ``shift`` are f32 vectors of ``groups * cout``; ``quantize`` fuses a
    FakeQuantize (:class:`FusedQuantize`), ``residual_quantize`` the residual's own FakeQuantize
    (applied to it before the add), ``also_quantize`` a second output: the u8 steps of the f32
    output (``q`` of :meth:`bind`), for a value that an int8 op and a float op both read. Build once, then :meth:`bind` buffer addresses
    (x: bytes with pixel stride ``ldx``; residual: floats; y: floats, or bytes for u8 output)."""

    def __init__(self, packed: Int8Weights, *, m: int, x_geometry: dict[str, int], ldx: int, ldy: int,
                 scale: np.ndarray, shift: np.ndarray, zero_point: int = 0, epilogue: Epilogue = NO_EPILOGUE,
                 ldr: int | None = None, xg: int | None = None, num_threads: int | None = None,
                 quantize: FusedQuantize | None = None, merged_cin: int = 0,
                 residual_quantize: QuantizeParams | None = None, also_quantize: QuantizeParams | None = None,
                 residual_u8: bool = False, steps_only: bool = False, fast: bool = False):
        self.packed = packed
        if steps_only and (also_quantize is None or (quantize is not None and quantize.u8)):
            raise EmberError("ember: steps_only stores the u8 steps of also_quantize in place of the f32 output")
        if residual_u8 and residual_quantize is None:
            raise EmberError("ember: an u8 residual needs its FakeQuantize's ranges (residual_quantize)")
        self.kernels = int8_kernels(packed.isa)
        self.tile = AMX_TILE if packed.amx else self.kernels.tile
        self.task_address = amx_int8_kernels(packed.isa).task_address if packed.amx else self.kernels.task_address
        if packed.nr != self.tile.nr:
            raise EmberError("ember: int8 weights were packed for another ISA level")
        if not 0 <= zero_point <= 255:
            raise EmberError(f"ember: an u8 zero point must lie in [0, 255], got {zero_point}")
        total = packed.groups * packed.cout
        self.scale = _f32_vector("scale", scale, total)
        self.shift = _f32_vector("shift", shift, total)
        self.comp = np.ascontiguousarray((-zero_point * packed.sums).reshape(-1), np.int32)
        self.threads = num_threads or default_pool().num_threads
        geo = dict(h=m, w=1, oh=m, ow=1, kh=1, kw=1, sh=1, sw=1, dh=1, dw=1, pt=0, pl=0, xn=0)
        geo.update(x_geometry)
        if geo["kh"] * geo["kw"] != packed.taps and not merged_cin:
            raise EmberError("ember: packed int8 weights do not match the kernel size")
        self._zero = aligned_empty(max(4 * packed.k4, 1) + 64, np.uint8)
        self._zero[:] = zero_point
        self.m, self.plain = m, not x_geometry
        tm, tn, gm, gn = self._blocks(m)
        lo, hi = epilogue.lo, epilogue.hi
        if epilogue.activation and not packed.amx and not self.kernels.activations:
            raise EmberError("ember: an int8 epilogue activation runs on AMX tiles or AVX-512 only "
                             "(int8_activation_fits)")
        if quantize is not None and quantize.at == "end" and also_quantize is None and hi == math.inf \
                and not epilogue.activation and lo <= float(np.min(quantize.params.il)):
            # the last FakeQuantize gives every value under its il (so under lo) step 0: the clamp
            # (a ReLU's) changes nothing, in the exact arithmetic and in the fast one (monotone)
            lo = -math.inf
        if also_quantize is not None and quantize is not None and quantize.u8 and not steps_only:
            raise EmberError("ember: a second u8 output needs the f32 output")
        self.fq = fq_block(total, None if quantize is None else quantize.params, residual_quantize, also_quantize)
        self.flags = ((0 if quantize is None else quantize.flags) | (FLAG_RES_FQ if residual_quantize else 0)
                      | (FLAG_ALSO_U8 if also_quantize else 0) | (FLAG_RES_U8 if residual_u8 else 0)
                      | (FLAG_U8 if steps_only else 0) | (FLAG_FAST if fast else 0)
                      | (epilogue.activation_code << ACT_SHIFT))
        self.steps_only = steps_only
        #: FLAG_FOLDED's A and B (in place of scale and shift) when a call without a residual can take it
        self.folded: tuple[np.ndarray, np.ndarray] | None = None
        #: FLAG_FOLDED's A, B and parameter block of a block end (FOLDED_BLOCK_END), taken with a residual
        self.folded_end: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if (packed.amx and fast and quantize is not None and quantize.u8 and self.flags == FOLDED_FLAGS & ~FLAG_FOLDED
                and lo == -math.inf and hi == math.inf):
            self.folded = folded_epilogue(self.scale, self.shift, self.comp, quantize.params)
        if (packed.amx and quantize is not None and residual_quantize is not None and also_quantize is not None
                and self.flags == FOLDED_BLOCK_END & ~(FLAG_FOLDED | FLAG_RES) and hi == math.inf
                and lo <= float(np.min(also_quantize.il))):
            fa, fb = folded_epilogue(self.scale, self.shift, self.comp, quantize.params)
            self.folded_end = (fa, fb, folded_block_end(self.fq, total, quantize.params, residual_quantize,
                                                        also_quantize))
        kq, nck, ktap = (packed.kq, packed.nck, packed.ktap) if packed.amx else (0, 0, packed.k4)
        # gathered rows (a stem) are padded to whole tile steps (B is zero there), so AMX reads them in
        # place; packed taps (merged_cin < 4) write a 4-byte word per tap: 4 bytes of slack per row
        packed_taps = 0 < merged_cin < 4
        self.ctx = INT8_CONTEXT.new(kq=kq, nck=nck, ktap=ktap, direct=int(ktap == packed.k4 or merged_cin > 0),
                                    fq=self.fq.ctypes.data, fqs=fq_stride(total),
                                    merge=0 if not merged_cin else MERGE_PACKED if packed_taps else MERGE_PADDED,
                                    cin=merged_cin, kpad=4 * ktap + (4 if packed_taps else 0),
            **geo, ldx=ldx, ldy=ldy, ldr=ldy if ldr is None else ldr, k4=packed.k4,
            xg=packed.cin if xg is None else xg, yg=packed.cout, cout=packed.cout, m=m,
            bp=packed.data.ctypes.data, bg=packed.group_stride, comp=self.comp.ctypes.data,
            scale=self.scale.ctypes.data, shift=self.shift.ctypes.data, zero=self._zero.ctypes.data,
            tm=tm, tn=tn, gm=gm, gn=gn, lo=f32_bits(lo), hi=f32_bits(hi))
        self.n_tasks = packed.groups * gm * gn if m > 0 and packed.cout > 0 else 0

    def _blocks(self, m: int) -> tuple[int, int, int, int]:
        """(tm, tn, gm, gn): the schedule of ``m`` output rows."""
        packed = self.packed
        tm, tn, gm, gn = plan_blocks(m, packed.cout, packed.k4, packed.taps, packed.groups, self.tile, self.threads)
        if gn == 1 and packed.groups == 1:
            tm = balanced_row_blocks(-(-m // self.tile.mr), tm, self.threads)
            gm = -(-m // (tm * self.tile.mr))
            tn, gn = split_panels(-(-m // self.tile.mr), tm, gm, -(-packed.cout // self.tile.nr), self.threads)
        return tm, tn, gm, gn

    def with_rows(self, m: int) -> Int8Call:
        """This plain GEMM call (no convolution geometry) for ``m`` rows: the parameters shared,
        the schedule made for ``m`` as a call built for it has it."""
        if not self.plain:
            raise EmberError("ember: internal: with_rows on an int8 convolution")
        if m == self.m:
            return self
        c = copy.copy(self)
        tm, tn, gm, gn = c._blocks(m)
        c.m, c.ctx = m, self.ctx.copy()
        INT8_CONTEXT.fill(c.ctx, h=m, oh=m, m=m, tm=tm, tn=tn, gm=gm, gn=gn)
        c.n_tasks = self.packed.groups * gm * gn if m > 0 and self.packed.cout > 0 else 0
        return c

    def bind(self, x: int, y: int, residual: int = 0, keep: tuple = (), q: int = 0, ldq: int = 0) -> BoundKernel:
        """The call for these buffer addresses (residual 0: none; q: the u8 steps of
        ``also_quantize``, rows of ``ldq`` bytes); each bound call has its own
        context, so streams can run the same operation on their own buffers at once."""
        if bool(self.flags & FLAG_ALSO_U8) != bool(q) and not self.steps_only:
            raise EmberError("ember: a second u8 output goes with also_quantize, and only then")
        ctx = self.ctx.copy()
        INT8_CONTEXT.fill(ctx, x=x, y=y, res=residual, flags=self.flags | (FLAG_RES if residual else 0), q=q, ldq=ldq)
        if self.folded is not None and not residual:
            fa, fb = self.folded
            INT8_CONTEXT.fill(ctx, flags=FOLDED_FLAGS, scale=fa.ctypes.data, shift=fb.ctypes.data)
            keep = (*keep, fa, fb)
        elif self.folded_end is not None and residual:
            fa, fb, fq = self.folded_end
            INT8_CONTEXT.fill(ctx, flags=FOLDED_BLOCK_END, scale=fa.ctypes.data, shift=fb.ctypes.data,
                              fq=fq.ctypes.data)
            keep = (*keep, fa, fb, fq)
        return BoundKernel(self.task_address, ctx, self.n_tasks, self.threads,
                           (self.packed, self._zero, self.comp, self.scale, self.shift, self.fq, *keep),
                           layout=INT8_CONTEXT)


def folded_block_end(fq: np.ndarray, n: int, mid: QuantizeParams, res: QuantizeParams,
                     nxt: QuantizeParams) -> np.ndarray:
    """A copy of the parameter block ``fq`` with FOLDED_BLOCK_END's C, D, E (f64, rounded once)
    in rows FOLD_C, FOLD_D, FOLD_E: ``t = q * C + r * D + E`` is the next FakeQuantize's fast
    argument ``(q * step1 + ol1 + r * step_r + ol_r - il2) * a2`` (``a2 = steps2 / (ih2 - il2)``)."""
    out = aligned_empty(fq.shape)
    out[:] = fq
    vm, vr, vn = (p.vectors(n).astype(np.float64) for p in (mid, res, nxt))  # il, ih, ih - il, ol, oh, oh - ol
    a2 = nxt.steps / vn[2]
    step1 = fq[6, :n].astype(np.float64)  # (oh - ol) / steps in f32, as the exact epilogue's
    step_r = fq[FQ_WORDS + 6, :n].astype(np.float64)
    out[FOLD_C, :n] = step1 * a2
    out[FOLD_D, :n] = step_r * a2
    out[FOLD_E, :n] = (vm[3] + vr[3] - vn[0]) * a2
    return out


def folded_epilogue(scale: np.ndarray, shift: np.ndarray, comp: np.ndarray,
                    params: QuantizeParams) -> tuple[np.ndarray, np.ndarray]:
    """FLAG_FOLDED's per-channel ``A = scale * a`` and ``B = (shift + comp * scale) * a + b``
    (``a = steps / (ih - il)``, ``b = -il * a``: the fast FakeQuantize's), computed in f64 and
    rounded once to f32: ``acc * A + B`` is the fast steps' argument up to rounding."""
    n = comp.shape[0]  # scale and shift may be padded further (zeros)
    v = params.vectors(n).astype(np.float64)  # il, ih, ih - il, ...
    a = params.steps / v[2]
    sc = scale[:n].astype(np.float64)
    fa = aligned_empty(scale.shape[0])
    fb = aligned_empty(scale.shape[0])
    fa[:], fb[:] = 0, 0
    fa[:n] = sc * a
    fb[:n] = (shift[:n].astype(np.float64) + comp.astype(np.float64) * sc) * a - v[0] * a
    return fa, fb


#: AVX-512 vector int8 kernels take an epilogue activation too (their tiles are 32 columns,
#: finished by the AMX row epilogue when an activation is set); off: AMX only (A/B runs)
VNNI_ACTIVATIONS = True


def vnni_activations(isa: Isa) -> bool:
    """Whether the vector int8 micro-kernels of ``isa`` finish activation tiles row by row."""
    return VNNI_ACTIVATIONS and isa.level == "avx512" and INT8_TILES["avx512"].nr == AMX_TILE.nr


def int8_activation_fits(isa: Isa, k: int, taps: int = 1) -> bool:
    """Whether an int8 GEMM/convolution of ``k`` input channels per tap and ``taps`` taps can
    take an epilogue activation (:data:`EPILOGUE_ACTIVATIONS`): its weights pack for AMX tiles,
    or the AVX-512 vector kernels finish it (:func:`vnni_activations`)."""
    k4 = -(-k // 4)
    if k4 <= 0:
        return False
    if isa.amx_int8:
        return fits_stack(taps, 4 * amx_split(k4)[2])
    return vnni_activations(isa)


def balanced_row_blocks(ntiles: int, tm: int, threads: int) -> int:
    """Tiles per row block, at most ``tm`` and at least half of it, whose blocks end together on
    ``threads`` threads (a 56 x 56 map: 98 tiles of 32 rows in blocks of 7, not 13 blocks of 8
    that leave one thread a block more: 49 tiles of time, not 56)."""
    if threads <= 1:
        return tm

    def span(t: int) -> int:
        blocks = -(-ntiles // t)
        return -(-blocks // threads) * t

    return min(range(tm, max(1, tm // 2) - 1, -1), key=span)


def split_panels(ntiles: int, tm: int, gm: int, npanels: int, threads: int) -> tuple[int, int]:
    """(panels per block, panel blocks): all ``npanels`` in one block, or split in ``threads``
    blocks when the ``gm`` row blocks of ``tm`` tiles alone leave a thread idle more than a
    tenth of the time (a 28 x 28 map, 25 tiles: 5 blocks of 5 on 2 threads end at 15 tiles of
    time for 12.5 of work; split over the panels too, 10 tasks of half the columns end together;
    the row blocks' A rows are then read once per panel block)."""
    if threads <= 1 or npanels < threads:
        return npanels, 1
    span = -(-gm // threads) * tm
    if span * threads <= 1.1 * ntiles:
        return npanels, 1
    tn = -(-npanels // threads)
    return tn, -(-npanels // tn)


def _f32_vector(name: str, v: np.ndarray, n: int) -> np.ndarray:
    v = np.asarray(v, np.float32).reshape(-1)
    if v.size == 1:
        v = np.full(n, v[0], np.float32)
    if v.shape != (n,):
        raise EmberError(f"ember: int8 {name} must be a vector of {n}, got {v.shape}")
    out = aligned_empty(max(n, 1) + 16)  # masked loads never reach past it, but keep it padded
    out[:n] = v
    out[n:] = 0  # (defined: two calls with equal parameters compare equal, see runtime/generic.py)
    return out


def _u8_rows(name: str, a: np.ndarray, readable: int) -> int:
    """Row (pixel) stride in bytes of a u8 array whose rows must be readable for ``readable`` bytes."""
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.strides[-1] != 1:
        raise EmberError(f"ember: {name} must be a uint8 array with contiguous channels")
    ld = a.strides[-2] if a.ndim > 1 else a.shape[-1]
    if ld < readable:
        raise EmberError(f"ember: {name} rows must be padded to {readable} bytes (see padded_channels), got {ld}")
    return ld


def _f32_rows(name: str, a: np.ndarray, shape: tuple[int, ...]) -> int:
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != shape or a.strides[-1] != 4:
        raise EmberError(f"ember: {name} must be a float32 array of shape {shape} with contiguous rows")
    return a.strides[-2] // 4 if a.ndim > 1 else shape[-1]


def _out_rows(name: str, a: np.ndarray, shape: tuple[int, ...], quantize: FusedQuantize | None,
              steps_only: bool = False) -> int:
    """Row stride (elements) of an output: f32 of ``shape``, or u8 rows at least as long for u8 steps."""
    if (quantize is None or not quantize.u8) and not steps_only:
        return _f32_rows(name, a, shape)
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.shape[:-1] != shape[:-1] or a.shape[-1] < shape[-1] \
            or a.strides[-1] != 1:
        raise EmberError(f"ember: {name} must be a uint8 array of shape {shape} (rows may be longer)")
    return a.strides[-2] if a.ndim > 1 else a.shape[-1]


def _u8_out(name: str, a: np.ndarray, shape: tuple[int, ...]) -> int:
    """Row stride (bytes) of a u8 output of ``shape`` whose rows may be longer."""
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.shape[:-1] != shape[:-1] or a.shape[-1] < shape[-1] \
            or a.strides[-1] != 1:
        raise EmberError(f"ember: {name} must be a uint8 array of shape {shape} (rows may be longer)")
    return a.strides[-2] if a.ndim > 1 else a.shape[-1]


class Int8Gemm:
    """``C[M, N] = clamp(scale * ((A - zero_point) @ W) + shift + R, lo, hi)``, A u8, W s8.

    ``A`` rows must be readable for ``4 * ceil(K / 4)`` bytes (pad K to a multiple of 4)."""

    def __init__(self, w: np.ndarray, m: int, scale: np.ndarray, shift: np.ndarray | None = None,
                 zero_point: int = 0, epilogue: Epilogue = NO_EPILOGUE, num_threads: int | None = None,
                 isa: Isa | None = None, quantize: FusedQuantize | None = None,
                 residual_quantize: QuantizeParams | None = None, also_quantize: QuantizeParams | None = None,
                 residual_u8: bool = False, steps_only: bool = False, fast: bool = False,
                 packed: Int8Weights | None = None):
        self.residual_u8, self.steps_only, self.fast = residual_u8, steps_only, fast
        w = np.asarray(w)
        self.quantize, self.residual_quantize, self.also_quantize = quantize, residual_quantize, also_quantize
        if w.ndim != 2:
            raise EmberError(f"ember: Int8Gemm wants W[K, N], got shape {w.shape}")
        #: ``packed``: ``pack_int8_weights(w[None, None], isa)`` made before (shared by the plans
        #: of a model's input shapes)
        self.packed = packed if packed is not None else pack_int8_weights(w[None, None], isa)
        self.m, self.k, self.n = m, w.shape[0], w.shape[1]
        self.scale, self.zero_point, self.epilogue = scale, zero_point, epilogue
        self.shift = np.zeros(self.n, np.float32) if shift is None else shift
        self.num_threads = num_threads
        self._calls: dict[tuple[int, int, int], Int8Call] = {}

    def bind(self, a: np.ndarray, c: np.ndarray, residual: np.ndarray | None = None,
             q: np.ndarray | None = None, any_rows: bool = False) -> BoundKernel:
        """The call for these buffers; ``any_rows``: A (and C, R, Q) may have another row count
        than this GEMM's (a plan bound at another input shape: the call scheduled for their
        rows, once per row count)."""
        m = a.shape[0] if any_rows and a.ndim == 2 else self.m
        if a.ndim != 2 or a.shape[0] != m or a.shape[1] < self.k:
            raise EmberError(f"ember: Int8Gemm of {m}x{self.k} got A{a.shape}")
        lda = _u8_rows("A", a, 4 * self.packed.k4)
        ldc = _out_rows("C", c, (m, self.n), self.quantize, self.steps_only)
        if residual is None:
            ldr = ldc
        elif self.residual_u8:
            ldr = _u8_out("residual", residual, (m, self.n))
        else:
            ldr = _f32_rows("residual", residual, (m, self.n))
        key = (lda, ldc, ldr)
        call = self._calls.get(key)
        if call is None:
            call = Int8Call(self.packed, m=self.m, x_geometry={}, ldx=lda, ldy=ldc, ldr=ldr, scale=self.scale,
                            shift=self.shift, zero_point=self.zero_point, epilogue=self.epilogue,
                            num_threads=self.num_threads, quantize=self.quantize,
                            residual_quantize=self.residual_quantize, also_quantize=self.also_quantize,
                            residual_u8=self.residual_u8, steps_only=self.steps_only, fast=self.fast)
            self._calls[key] = call
        call = call.with_rows(m)
        ldq = _u8_out("q", q, (m, self.n)) if q is not None else 0
        return call.bind(a.ctypes.data, c.ctypes.data, 0 if residual is None else residual.ctypes.data,
                         q=0 if q is None else q.ctypes.data, ldq=ldq)

    def __call__(self, a: np.ndarray, c: np.ndarray | None = None, residual: np.ndarray | None = None,
                 pool: ThreadPool | None = None) -> np.ndarray:
        if c is None:
            u8 = (self.quantize is not None and self.quantize.u8) or self.steps_only
            c = aligned_empty((self.m, padded_channels(self.n) if u8 else self.n), np.uint8 if u8 else np.float32)
        self.bind(a, c, residual).run(pool)
        return c


class Int8Conv2d:
    """A 2-D int8 convolution on NHWC u8 activations (pixel stride a multiple of 4 bytes, see
    :func:`padded_channels`), f32 NHWC output.

    ``weights`` are integers ``[OC, IC / groups, KH, KW]`` in [-128, 127]; ``scale``/``shift``
    f32 vectors of OC; padding reads the activation ``zero_point``. Grouped convolutions need
    ``IC / groups`` to be a multiple of 4 (or one group)."""

    def __init__(self, geometry: ConvGeometry, weights: np.ndarray, scale: np.ndarray, shift: np.ndarray | None = None,
                 zero_point: int = 0, epilogue: Epilogue = NO_EPILOGUE, num_threads: int | None = None,
                 isa: Isa | None = None, quantize: FusedQuantize | None = None,
                 residual_quantize: QuantizeParams | None = None, also_quantize: QuantizeParams | None = None,
                 residual_u8: bool = False, steps_only: bool = False, fast: bool = False, row_pack: bool = True):
        self.residual_u8, self.steps_only, self.fast = residual_u8, steps_only, fast
        g = geometry
        self.quantize, self.residual_quantize, self.also_quantize = quantize, residual_quantize, also_quantize
        self.geometry = g
        w = np.asarray(weights)
        cg = g.cin // g.groups
        if w.shape != (g.cout, cg, g.kh, g.kw):
            raise EmberError(f"ember: int8 convolution weights have shape {w.shape}, expected "
                             f"{(g.cout, cg, g.kh, g.kw)}")
        if g.groups > 1 and cg % 4:
            raise EmberError("ember: a grouped int8 convolution needs a multiple of 4 input channels per group")
        groups = g.groups
        wg = w.reshape(groups, g.cout // groups, cg, g.kh * g.kw).transpose(0, 3, 2, 1)
        taps = g.kh * g.kw
        self.scale, self.zero_point, self.epilogue = scale, zero_point, epilogue
        self.shift = np.zeros(g.cout, np.float32) if shift is None else shift
        self.num_threads = num_threads
        self._calls: dict[tuple[int, ...], Int8Call] = {}
        #: a stem run as a (ceil(KH / SH) x 1) convolution over its input packed by rows
        #: (:func:`~ember.devices.cpu.kernels.int8_misc.pack_rows_u8`), or None
        self.row_packed: Int8Conv2d | None = None
        if row_pack and row_pack_fits(g):
            self.row_packed = Int8Conv2d(row_packed_geometry(g), row_packed_weights(w, g.strides[0]), scale,
                                         shift, zero_point, epilogue, num_threads, isa, quantize, residual_quantize,
                                         also_quantize, residual_u8, steps_only, fast)
            self.packed: Int8Weights = self.row_packed.packed
            self.merged_cin = 0
            # for an input that is not contiguous 4-byte pixels: the taps gathered per task
            self._gathered: Callable[[], Int8Conv2d] = functools.cache(lambda: Int8Conv2d(
                geometry, weights, scale, shift, zero_point, epilogue, num_threads, isa, quantize,
                residual_quantize, also_quantize, residual_u8, steps_only, fast, row_pack=False))
            self._zero = aligned_empty(64, np.uint8)
            self._zero[:] = zero_point
            return
        #: bytes per tap when the taps are gathered into one row (a stem), else 0
        self.merged_cin = cg if groups == 1 and taps > 1 and cg < MERGE_BELOW_CHANNELS and taps * cg <= 1024 else 0
        if self.merged_cin and (cg % 4 == 0 or cg > 3 or packed_taps_disabled()):
            # the gathered row holds each tap's channels padded to 4 bytes
            ctap = padded_channels(cg)
            wm = np.zeros((1, taps, ctap, g.cout), np.int8)
            wm[:, :, :cg] = wg
            wg = wm.reshape(1, 1, taps * ctap, g.cout)
            self.merged_cin = ctap
        elif self.merged_cin:  # 1-3 channels: the taps side by side, (ky, kx, c), no padding between
            wg = wg.reshape(1, 1, taps * cg, g.cout)
        self.packed = pack_int8_weights(wg, isa, tight=bool(self.merged_cin))

    def bind_steps(self, x: np.ndarray, y: np.ndarray, residual: np.ndarray | None = None,
                   q: np.ndarray | None = None) -> list[BoundKernel]:
        """The calls to run in order for these buffers: a row-packed stem packs its input into a
        buffer of this binding's own (zero filled once), then convolves it; else :meth:`bind`."""
        if self.row_packed is None:
            return [self.bind(x, y, residual, q)]
        from ember.devices.cpu.kernels.int8_misc import pack_rows_u8

        g, inner = self.geometry, self.row_packed.geometry
        if x.ndim != 4 or x.shape != (g.batch, g.h, g.w, 4) or not x.flags.c_contiguous:
            return [self._gathered().bind(x, y, residual, q)]
        rows = aligned_empty((inner.batch, inner.h, inner.w, inner.cin), np.uint8)
        rows[:] = 0
        pack = pack_rows_u8(x, rows, self._zero, g.cin, g.kw, g.strides, g.dilations[1], g.pads_begin,
                            self.num_threads or default_pool().num_threads, self.packed.isa)
        return [pack, self.row_packed.bind(rows, y, residual, q)]

    def bind(self, x: np.ndarray, y: np.ndarray, residual: np.ndarray | None = None,
             q: np.ndarray | None = None) -> BoundKernel:
        """The one call for these buffers (a row-packed stem has two: :meth:`bind_steps`)."""
        g = self.geometry
        if self.row_packed is not None:
            raise EmberError("ember: internal: a row-packed stem runs as two calls (bind_steps)")
        if x.ndim != 4 or x.shape[:3] != (g.batch, g.h, g.w) or x.shape[3] < g.cin:
            raise EmberError(f"ember: int8 convolution input has shape {x.shape}, expected {(g.batch, g.h, g.w, g.cin)}")
        readable = padded_channels(g.cin) if self.merged_cin else 4 * self.packed.k4
        ldx = _u8_rows("x", x, readable + (g.groups - 1) * (g.cin // g.groups))
        if x.strides[1] != g.w * ldx:
            raise EmberError("ember: int8 convolution input pixels must be uniformly strided")
        ldy = _out_rows("y", y, g.output_shape, self.quantize, self.steps_only)
        if y.strides[0] != g.oh * g.ow * ldy * y.itemsize or y.strides[1] != g.ow * ldy * y.itemsize:
            raise EmberError("ember: int8 convolution output images must be contiguous")
        ldr = ldy
        if residual is not None:
            ldr = (_u8_out if self.residual_u8 else _f32_rows)("residual", residual, g.output_shape)
            if residual.strides[0] != g.oh * g.ow * ldr * residual.itemsize \
                    or residual.strides[1] != g.ow * ldr * residual.itemsize:
                raise EmberError("ember: the residual's images must be contiguous")
        key = (ldx, x.strides[0], ldy, ldr)
        call = self._calls.get(key)
        if call is None:
            (sh, sw), (dh, dw), (pt, pl) = g.strides, g.dilations, g.pads_begin
            geo = dict(h=g.h, w=g.w, oh=g.oh, ow=g.ow, kh=g.kh, kw=g.kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=pt, pl=pl,
                       xn=x.strides[0])
            call = Int8Call(self.packed, m=g.batch * g.oh * g.ow, x_geometry=geo, ldx=ldx, ldy=ldy, ldr=ldr,
                            xg=g.cin // g.groups, scale=self.scale, shift=self.shift, zero_point=self.zero_point,
                            epilogue=self.epilogue, num_threads=self.num_threads, quantize=self.quantize,
                            merged_cin=self.merged_cin, residual_quantize=self.residual_quantize,
                            also_quantize=self.also_quantize, residual_u8=self.residual_u8,
                            steps_only=self.steps_only, fast=self.fast)
            self._calls[key] = call
        ldq = 0
        if q is not None:
            ldq = _u8_out("q", q, g.output_shape)
            if q.strides[0] != g.oh * g.ow * ldq or q.strides[1] != g.ow * ldq:
                raise EmberError("ember: the u8 output's images must be contiguous")
        return call.bind(x.ctypes.data, y.ctypes.data, 0 if residual is None else residual.ctypes.data,
                         q=0 if q is None else q.ctypes.data, ldq=ldq)

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None, residual: np.ndarray | None = None,
                 pool: ThreadPool | None = None) -> np.ndarray:
        if y is None:
            shape = self.geometry.output_shape
            if (self.quantize is not None and self.quantize.u8) or self.steps_only:
                y = aligned_empty((*shape[:3], padded_channels(shape[3])), np.uint8)
            else:
                y = aligned_empty(shape)
        for call in self.bind_steps(x, y, residual):
            call.run(pool)
        return y


def row_pack_fits(g: ConvGeometry) -> bool:
    """Whether a convolution runs as a row-packed stem: 1-3 input channels, one group, no
    dilation along the height, more than one kernel row, a packed pixel of at most 64 bytes
    (one AMX step, one masked vector)."""
    from ember.devices.cpu.kernels.int8_misc import packed_row_bytes

    return (g.groups == 1 and 1 <= g.cin <= 3 and g.kh > 1 and g.dilations[0] == 1
            and packed_row_bytes(g.cin, g.kw, g.strides[0]) <= 64 and g.kw <= 16 and not packed_taps_disabled())


def row_packed_geometry(g: ConvGeometry) -> ConvGeometry:
    """The convolution over the packed rows: ceil(KH / SH) x 1 taps of stride 1, no padding."""
    from ember.devices.cpu.kernels.int8_misc import packed_row_bytes

    taps = -(-g.kh // g.strides[0])
    return ConvGeometry(g.batch, g.oh + taps - 1, g.ow, packed_row_bytes(g.cin, g.kw, g.strides[0]), g.cout,
                        taps, 1)


def row_packed_weights(w: np.ndarray, sh: int) -> np.ndarray:
    """``w[OC, C, KH, KW]`` as the packed rows' weights ``[OC, CK, ceil(KH / SH), 1]``: packed
    tap ``j`` byte ``(dy * KW + kx) * C + c`` is ``w[:, c, j * SH + dy, kx]`` (zero past KH and in
    the slack)."""
    from ember.devices.cpu.kernels.int8_misc import packed_row_bytes

    oc, c, kh, kw = w.shape
    taps = -(-kh // sh)
    wt = np.zeros((oc, taps * sh, kw, c), np.int8)
    wt[:, :kh] = np.asarray(w).transpose(0, 2, 3, 1)
    out = np.zeros((oc, taps, packed_row_bytes(c, kw, sh)), np.int8)
    out[:, :, :sh * kw * c] = wt.reshape(oc, taps, sh * kw * c)
    return np.ascontiguousarray(out.transpose(0, 2, 1)[..., None])


class DepthwiseCall:
    """``kernel(x)``/``kernel(x, y, residual)`` for the int8 depthwise kernels (generic and per
    shape): the output allocated as the epilogue writes it (u8 steps padded, or f32), then one
    bound run. Needs ``geometry``, ``quantize`` and ``bind(x, y, residual)``."""

    geometry: ConvGeometry
    quantize: FusedQuantize | None

    def bind(self, x: np.ndarray, y: np.ndarray, residual: np.ndarray | None = None) -> BoundKernel:
        raise NotImplementedError

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None, residual: np.ndarray | None = None,
                 pool: ThreadPool | None = None) -> np.ndarray:
        if y is None:
            shape = self.geometry.output_shape
            if self.quantize is not None and self.quantize.u8:
                y = aligned_empty((*shape[:3], padded_channels(shape[3])), np.uint8)
            else:
                y = aligned_empty(shape)
        self.bind(x, y, residual).run(pool)
        return y


class Int8Depthwise(DepthwiseCall):
    """A depthwise int8 convolution (groups == channels, one filter each) on NHWC u8 pixels:
    ``y[c] = scale[c] * sum_taps (x[c] - zero_point[c]) * w[c, tap] + shift[c]``, then the int8
    epilogue (residual, clamp, fused FakeQuantize or u8 steps). Zero points and scales may be
    per channel (an activation FakeQuantize with per-channel ranges); padding adds nothing."""

    def __init__(self, geometry: ConvGeometry, weights: np.ndarray, scale: np.ndarray, shift: np.ndarray | None = None,
                 zero_point: Any = 0, epilogue: Epilogue = NO_EPILOGUE, num_threads: int | None = None,
                 isa: Isa | None = None, quantize: FusedQuantize | None = None,
                 residual_quantize: QuantizeParams | None = None, fast: bool = False):
        g = geometry
        if not (g.groups == g.cin == g.cout) or np.shape(weights) != (g.cout, 1, g.kh, g.kw):
            raise EmberError(f"ember: an int8 depthwise convolution wants weights [C, 1, KH, KW], got {np.shape(weights)}")
        self.geometry, self.quantize, self.epilogue = g, quantize, epilogue
        self.kernels = int8_kernels(isa)
        self.threads = num_threads or default_pool().num_threads
        c = g.cin
        cp = -(-c // 16) * 16 + 16
        w = np.asarray(weights).reshape(c, g.kh * g.kw)
        if w.size and (w.min() < -128 or w.max() > 127):
            raise EmberError("ember: int8 weights must lie in [-128, 127]")
        self.wp = aligned_empty((g.kh * g.kw, cp), np.int32)
        self.wp[:] = 0
        self.wp[:, :c] = w.T
        self.zp = aligned_empty(cp, np.int32)
        self.zp[:] = 0
        self.zp[:c] = np.broadcast_to(np.asarray(zero_point, np.int64), (c,))
        self.scale = _f32_vector("scale", scale, c)
        self.shift = _f32_vector("shift", np.zeros(c, np.float32) if shift is None else shift, c)
        self.fq = fq_block(c, None if quantize is None else quantize.params, residual_quantize)
        (sh, sw), (dh, dw), (pt, pl) = g.strides, g.dilations, g.pads_begin
        self.ctx = DW8_CONTEXT.new(h=g.h, w=g.w, oh=g.oh, ow=g.ow, kh=g.kh, kw=g.kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=pt,
                                   pl=pl, c=c, cp=cp, wp=self.wp.ctypes.data, zp=self.zp.ctypes.data,
                                   scale=self.scale.ctypes.data, shift=self.shift.ctypes.data,
                                   lo=f32_bits(epilogue.lo), hi=f32_bits(epilogue.hi), fq=self.fq.ctypes.data,
                                   fqs=fq_stride(c))
        self.flags = ((0 if quantize is None else quantize.flags) | (FLAG_RES_FQ if residual_quantize else 0)
                      | (FLAG_FAST if fast else 0))

    def bind(self, x: np.ndarray, y: np.ndarray, residual: np.ndarray | None = None) -> BoundKernel:
        g = self.geometry
        if x.ndim != 4 or x.shape[:3] != (g.batch, g.h, g.w) or x.shape[3] < g.cin:
            raise EmberError(f"ember: int8 depthwise input has shape {x.shape}, expected {(g.batch, g.h, g.w, g.cin)}")
        ldx = _u8_rows("x", x, g.cin)
        if x.strides[1] != g.w * ldx:
            raise EmberError("ember: int8 depthwise input pixels must be uniformly strided")
        ldy = _out_rows("y", y, g.output_shape, self.quantize)
        if y.strides[0] != g.oh * g.ow * ldy * y.itemsize or y.strides[1] != g.ow * ldy * y.itemsize:
            raise EmberError("ember: int8 depthwise output images must be contiguous")
        ldr = ldy
        if residual is not None:
            ldr = _f32_rows("residual", residual, g.output_shape)
            if residual.strides[0] != g.oh * g.ow * ldr * 4 or residual.strides[1] != g.ow * ldr * 4:
                raise EmberError("ember: the residual's images must be contiguous")
        ctx = self.ctx.copy()
        DW8_CONTEXT.fill(ctx, x=x.ctypes.data, ldx=ldx, xn=x.strides[0], y=y.ctypes.data, ldy=ldy, yn=g.oh * g.ow * ldy,
                         res=0 if residual is None else residual.ctypes.data, ldr=ldr,
                         flags=self.flags | (FLAG_RES if residual is not None else 0))
        task = self.kernels.depthwise_unrolled.get((g.kh, g.kw), self.kernels.depthwise_address)
        return BoundKernel(task, ctx, g.batch * g.oh, self.threads,
                           (self.wp, self.zp, self.scale, self.shift, self.fq), layout=DW8_CONTEXT)



# --------------------------------------------------------------------------- quantize
@dataclass(frozen=True)
class QuantizeParams:
    """FakeQuantize: ``q = rint((x - il) / (ih - il) * (levels - 1))``, 0 for ``x <= il`` and
    ``levels - 1`` for ``x > ih``; its value is ``q * scale + ol``. The ranges are floats, or
    float32 vectors along the channel axis (the last axis of a row, the C of NHWC pixels)."""

    il: Any
    ih: Any
    ol: Any
    oh: Any
    levels: int

    @property
    def steps(self) -> int:
        return self.levels - 1

    @property
    def per_channel(self) -> bool:
        return any(np.ndim(v) for v in (self.il, self.ih, self.ol, self.oh))

    @property
    def scale(self) -> Any:
        """The value of one step (the activation scale), float64 of the f32 difference."""
        f = np.float32
        return ((np.asarray(self.oh, f) - np.asarray(self.ol, f)) / f(self.steps)).astype(np.float64)

    @property
    def zero_point(self) -> Any:
        """The step that stands for 0.0 (an integer when 0.0 is exactly representable)."""
        sc = self.scale
        return np.where(sc != 0, -np.asarray(self.ol, np.float64) / np.where(sc != 0, sc, 1.0), 0.0)

    def valid(self) -> bool:
        """Whether the kernel takes these ranges (il < ih, ol < oh, finite, 2..256 levels, the
        f32 width ih - il a normal number with a finite reciprocal)."""
        il, ih, ol, oh = (np.asarray(v, np.float64) for v in (self.il, self.ih, self.ol, self.oh))
        if not (1 < self.levels <= 256 and np.all(il < ih) and np.all(ol < oh)
                and all(np.all(np.isfinite(v)) for v in (il, ih, ol, oh))):
            return False
        f = np.float32
        width = np.asarray(np.asarray(self.ih, f) - np.asarray(self.il, f), f)
        with np.errstate(all="ignore"):
            return bool(np.all(width >= np.finfo(f).tiny) and np.all(np.isfinite(f(1) / width)))

    def vectors(self, c: int) -> np.ndarray:
        """``[6, c]`` float32 rows il, ih, ih - il, ol, oh, oh - ol (each difference in f32)."""
        f = np.float32
        il, ih, ol, oh = (np.broadcast_to(np.asarray(v, f).reshape(-1), (c,)) for v in (self.il, self.ih, self.ol, self.oh))
        return np.stack([il, ih, ih - il, ol, oh, oh - ol]).astype(f)

    def reciprocal(self, c: int) -> np.ndarray:
        """``1 / (ih - il)`` per channel, the f32 difference's reciprocal rounded to f32."""
        with np.errstate(all="ignore"):
            return (np.float32(1) / self.vectors(c)[2]).astype(np.float32)

    def quantize(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        """The numpy twin of the u8 kernel (the reference's f32 arithmetic); vector ranges lie
        along ``axis`` of ``x``."""
        f = np.float32
        shape = [1] * x.ndim
        shape[axis] = -1

        def r(v: Any) -> np.ndarray:
            return np.asarray(v, f).reshape(shape) if np.ndim(v) else np.asarray(v, f)

        il, ih = r(self.il), r(self.ih)
        with np.errstate(all="ignore"):
            q = np.rint((x.astype(f) - il) / (ih - il) * f(self.steps))
            q = np.where(x <= il, f(0), np.where(x > ih, f(self.steps), q))
        return q.astype(np.uint8)


class Quantize:
    """FakeQuantize over ``rows`` rows of ``c`` floats: u8 steps (``mode=QUANT_U8``, rows
    padded with ``fill`` up to the output's row length) or the f32 FakeQuantize value.
    Vector ranges run along the row (one value per channel)."""

    def __init__(self, params: QuantizeParams, rows: int, c: int, mode: int = QUANT_U8, fill: int = 0,
                 num_threads: int | None = None, isa: Isa | None = None):
        if not params.valid():
            raise EmberError("ember: the quantize kernel needs finite ranges with il < ih, ol < oh and 2..256 levels")
        self.kernels = int8_kernels(isa)
        self.params, self.rows, self.c, self.mode, self.fill = params, rows, c, mode, fill
        self.threads = num_threads or default_pool().num_threads
        per_task = self._per_task(rows)
        self.per_task = per_task
        stride = -(-max(c, 1) // 16) * 16 + 16
        self.ranges = aligned_empty((7, stride))
        self.ranges[:] = 0
        self.ranges[:6, :c] = params.vectors(c)
        self.ranges[6, :c] = params.reciprocal(c)
        self.lanes = self.kernels.isa.f32_lanes
        self.ctx = QUANT_CONTEXT.new(rows=rows, c=c, per_task=per_task, ranges=self.ranges.ctypes.data,
                                     rstride=stride, steps=f32_bits(params.steps), fill=fill, mode=mode)

    def _per_task(self, rows: int) -> int:
        return max(1, -(-rows // (8 * self.threads)), 4096 // max(self.c, 1))

    def bind(self, x: np.ndarray, y: np.ndarray, any_rows: bool = False) -> BoundKernel:
        """The call over these rows; ``any_rows``: ``x`` and ``y`` may have another row count
        than this kernel's (a plan bound at another input shape: tasks split for their rows)."""
        rows = x.shape[0] if any_rows and x.ndim == 2 else self.rows
        ldx = _f32_rows("x", x, (rows, self.c))
        want = np.uint8 if self.mode == QUANT_U8 else np.float32
        if y.dtype != want or y.ndim != 2 or y.shape[0] != rows or y.shape[1] < self.c or y.strides[-1] != y.itemsize:
            raise EmberError(f"ember: quantize output must be {np.dtype(want)} rows of at least {self.c}")
        ctx = self.ctx.copy()
        per_task = self.per_task
        if rows != self.rows:
            per_task = self._per_task(rows)
            QUANT_CONTEXT.fill(ctx, rows=rows, per_task=per_task)
        ldy, cpad = y.strides[0] // y.itemsize, y.shape[1] if self.mode == QUANT_U8 else self.c
        pix = 0
        L = self.lanes
        tiled = aligned_empty((7, L))  # lane j: channel j % cpad of whole pixels (dense rows only)
        tiled[:] = 0  # (unused otherwise: zeros, so two bindings of one call compare equal)
        if self.mode == QUANT_U8 and ldx == self.c and ldy == cpad and cpad <= L and L % cpad == 0:
            pix = L // cpad
            chan = np.arange(L) % cpad
            tiled[:] = self.ranges[:, np.where(chan < self.c, chan, 0)]  # padding lanes: any finite ranges
        QUANT_CONTEXT.fill(ctx, x=x.ctypes.data, ldx=ldx, y=y.ctypes.data, ldy=ldy, cpad=cpad, pix=pix,
                           tiled=tiled.ctypes.data)
        n_tasks = -(-rows // per_task) if self.c else 0
        return BoundKernel(self.kernels.quantize_address, ctx, n_tasks, self.threads, (self.ranges, tiled),
                           layout=QUANT_CONTEXT)

    def __call__(self, x: np.ndarray, y: np.ndarray, pool: ThreadPool | None = None) -> np.ndarray:
        self.bind(x, y).run(pool)
        return y


__all__ = ["INT8_TILES", "FusedQuantize", "Int8Call", "Int8Conv2d", "Int8Depthwise", "Int8Gemm", "Int8Kernels", "Int8Weights", "Quantize",
           "QuantizeParams", "int8_activation_fits", "int8_kernels", "pack_int8_weights", "padded_channels", "row_pack_fits",
           "row_packed_geometry", "row_packed_weights"]
