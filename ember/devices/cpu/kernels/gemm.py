"""FP32/BF16 GEMM and implicit-GEMM convolution: the register-blocked micro-kernel and its loop nest.

One native task function, ``igemm_task(ctx, task)``, computes a block of

    Y[p, n] = clamp(sum_{tap, c} X[row(p, tap), c] * B[tap, c, n] + bias[n] + R[p, n], lo, hi)

where ``row(p, tap)`` maps output pixel ``p`` and kernel tap to an input pixel (or to a row
of zeros for padding). A plain GEMM is the 1x1 case (``row(p) = p``, stride ``lda``); a
convolution over NHWC activations is the general case, so convolution needs no im2col.
Each task fills a small table of row pointers for its pixels once, then runs the
micro-kernel over (K chunk, N panel, M tile). All loops run in native code; Python makes
one call per operation (``ThreadPool.parallel_for`` over the tasks).

B (the weights) is packed once into panels ``NR = nv * lanes`` columns wide:
``[group][panel][chunk][tap][c][NR]``, zero padded, 64-byte aligned. The micro-kernel keeps
an ``MR x NR`` tile of C in vector registers, broadcasts one A element per row and k, and
does ``MR * nv`` FMAs per k. Tile sizes per ISA level are in :data:`TILES`.

Few input channels per tap (a network's stem): with weights packed ``merge_taps=True``,
each task first gathers its pixels' taps into contiguous rows (im2col for its own tiles
only, a kernel row at a time where it lies inside a dense image) and runs as a one-tap
GEMM with K = taps x channels.

bf16 (``precision="bf16"``, AVX512_BF16): weights are packed once as bf16 channel pairs
``[..][chunk / 2][NR][2]``; each task converts its A rows per K chunk into a bf16 buffer
``[tile][tap][MR][pairs]`` (round to nearest even, as ``vcvtneps2bf16``) and the
micro-kernel runs ``vdpbf16ps`` (two products per lane, f32 accumulation) with the same f32
epilogue. With AMX (``isa.amx_bf16``) the weights are one chunk of all of K (its pairs zero
padded to whole tile steps) and ``amx_bf16_task`` runs instead: per 32-row tile, A rows
converted to bf16 once (bf16 X: tiles read in place where a half tile's 16 rows are uniformly
strided, found without a row table), 32 x 32 blocks of ``tdpbf16ps``
(:mod:`ember.devices.cpu.kernels.amx`), the f32 epilogue row by row one block behind. Both bf16
kernels may also read X (``FLAG_XBF16``: not converted) and the residual (``FLAG_RES16``) as
bf16 and store Y as bf16 (``FLAG_YBF16``,
rounded after the whole f32 epilogue; all of K in one chunk or AMX): the lowering keeps
activations bf16 between such kernels under the bf16 hint.

The epilogue may end in an activation (:data:`EPILOGUE_ACTIVATIONS`: HSwish, HSigmoid,
Swish, GELU, Sigmoid) and a scalar affine: one function per module
(:func:`emit_activation_rows`) runs them on each finished output tile while it is in L1,
with the elementwise kernel's formulas (fused and unfused give the same bits). The f32
micro-kernels apply the affine and the activations of :data:`REGISTER_ACTIVATIONS` (HSwish,
HSigmoid) to their accumulators before the single store instead, dividing by 6 as a product by
``RN(1/6)`` (within an ulp; :func:`emit_hard_activation_tile`); ``ACT_IN_REGISTERS = False``
turns that off.

Parameters of a call live in a *context*, an int64 array (field names in
:data:`IGEMM_CONTEXT`), built once when the operation is bound to its buffers; a lowered plan
keeps contexts alive and calls ``parallel_for(task, ctx, n_tasks)`` per op.
"""

from __future__ import annotations

import functools
import heapq
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.amx import (
    A_TILES,
    B_TILES,
    BLOCK,
    C_TILES,
    TILE_ROWS,
    amx_split,
    byte_mask,
    emit_tile_config,
    fits_stack,
    tap_descriptors,
    tile_dot,
    tile_load,
    tile_release,
    tile_store,
    tile_zero,
    two_by_two,
)
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import BF16, F32, I8, I16, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import VectorMath, aligned_alloca, fmuladd, lane_mask, masked_load, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.devices.cpu.runtime.threadpool import ThreadPool, default_pool
from ember.errors import EmberError


@dataclass(frozen=True)
class Tile:
    """Register tile of the micro-kernel: ``mr`` rows by ``nv`` vectors of ``lanes`` floats."""

    mr: int
    nv: int
    lanes: int
    unroll: int = 4  # k steps per iteration of the inner loop

    @property
    def nr(self) -> int:
        return self.nv * self.lanes


TILES = {"avx512": Tile(14, 2, 16, 1), "avx2": Tile(6, 2, 8, 4), "generic": Tile(6, 2, 4, 1)}
#: the AMX kernels' block (bf16 here, int8 in int8_gemm): 2 x 2 tiles, the AVX-512 panel width
AMX_TILE = Tile(BLOCK, 2, 16, 1)

IGEMM_CONTEXT = ContextLayout(
    "igemm",
    ("x", "ldx", "xn", "h", "w", "oh", "ow", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pl", "cin", "xg", "y",
     "ldy", "yg", "cout", "bp", "bg", "bias", "res", "ldr", "zero", "m", "cb", "tm", "tn", "gm", "gn", "flags",
     "lo", "hi", "merge", "kq", "nck", "ktap", "pmul", "padd"),
    pointers=("x", "y", "bias", "res", "bp", "zero"))
FLAG_BIAS, FLAG_RES = 1, 2
# micro-kernel mode bits
MODE_ACC, MODE_FINAL, MODE_BIAS, MODE_RES, MODE_SCALE = 1, 2, 4, 8, 16
MODE_RES16 = 32  # bf16 micro-kernels: the residual is bf16 in memory
MODE_Y16 = 64  # bf16 micro-kernels: C is bf16 (ldc in bf16 elements), rounded after the epilogue
MODE_AFFINE = 1 << 12  # f32 micro-kernels: the activation (code from ACT_SHIFT on) and y * pmul + padd in registers


#: activations an epilogue can end with (after the clamp), numbered by their place here (0: none);
#: the formulas are the elementwise kernel's, so a fused activation gives the same bits (except
#: HSwish and HSigmoid in the f32 micro-kernels: a product by RN(1/6), see REGISTER_ACTIVATIONS)
EPILOGUE_ACTIVATIONS = ("", "hswish", "hsigmoid", "swish", "gelu_erf", "gelu_tanh", "sigmoid")
ACT_SHIFT = 8  # the activation's code sits in the context's flags from this bit on
FLAG_AFFINE = 1 << 12  # then y * pmul + padd (scalars)
FLAG_XBF16 = 1 << 13  # bf16 kernels: the activations X are bf16 in memory (no conversion when packing A)
FLAG_YBF16 = 1 << 14  # bf16 kernels: Y is stored bf16 (rounded to nearest even after the whole epilogue)
FLAG_RES16 = 1 << 15  # bf16 kernels: the residual is bf16 in memory
FLAG_PAIRS = 1 << 16  # f32 weights packed with a k-paired last vector (PackedWeights.pair_tail)
FLAG_ACT_ROWS = 1 << 17  # f32: the activation and affine as a pass over the stored tile (ACT_IN_REGISTERS off)
PAIR_MR = 13  # rows of the k-paired micro-kernels (row tiles of a task whose weights have pair_tail)
_TAIL_BITS = (0xF << ACT_SHIFT) | FLAG_AFFINE | FLAG_YBF16
#: activations the f32 micro-kernels apply to their accumulators before the single store (with the
#: affine); the others run as a pass over the stored tile (:func:`emit_activation_rows`)
REGISTER_ACTIVATIONS = ("hswish", "hsigmoid")
#: the knob (read when an f32 call is built): False runs every activation and affine as a pass
#: over the stored tile, as before session 7 (``layers.py --ab``: "activation rows pass")
ACT_IN_REGISTERS = True


@dataclass(frozen=True)
class Epilogue:
    """Elementwise tail fused into a kernel:
    ``y = activation(min(max(acc + bias + residual, lo), hi))``.

    Bias and residual buffers are given when the kernel is bound; ``lo``/``hi`` make ReLU
    (``lo=0``), ReLU6 (``0, 6``) or any clamp. NaN passes through the clamp unchanged.
    ``activation`` is one of :data:`EPILOGUE_ACTIVATIONS` (HSwish, HSigmoid, Swish with beta 1,
    GELU in its erf and tanh forms, Sigmoid), then ``affine=(s, t)`` computes ``y * s + t``
    (PP-LCNetV3's learnable affine): the implicit-GEMM kernels (f32, bf16, AMX) run both on
    each output tile while it is still in cache.
    """

    lo: float = -math.inf
    hi: float = math.inf
    activation: str = ""
    affine: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.activation not in EPILOGUE_ACTIVATIONS:
            raise EmberError(f"ember: unknown epilogue activation {self.activation!r}; known: "
                             f"{', '.join(a for a in EPILOGUE_ACTIVATIONS if a)}")

    @property
    def activation_code(self) -> int:
        """The activation's number in :data:`EPILOGUE_ACTIVATIONS` (0: none)."""
        return EPILOGUE_ACTIVATIONS.index(self.activation)

    @staticmethod
    def relu() -> Epilogue:
        return Epilogue(0.0)

    @staticmethod
    def clamp(lo: float, hi: float) -> Epilogue:
        return Epilogue(float(lo), float(hi))

    def apply(self, y: np.ndarray) -> np.ndarray:
        """The numpy twin (for tests and fallbacks)."""
        if self.lo != -math.inf:
            y = np.where(y < self.lo, np.float32(self.lo), y)
        if self.hi != math.inf:
            y = np.where(y > self.hi, np.float32(self.hi), y)
        y = activation_reference(self.activation, np.asarray(y, np.float32))
        if self.affine is not None:
            y = (y * np.float32(self.affine[0]) + np.float32(self.affine[1])).astype(np.float32)
        return y

    @property
    def tail_flags(self) -> int:
        """The context flag bits of the activation and affine (0: neither)."""
        return (self.activation_code << ACT_SHIFT) | (FLAG_AFFINE if self.affine is not None else 0)


def activation_reference(name: str, x: np.ndarray) -> np.ndarray:
    """numpy twin of an epilogue activation (float32 in, float32 out)."""
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "hswish":
            return (x * np.clip(x + 3, 0, 6) / 6).astype(np.float32)
        if name == "hsigmoid":
            return (np.clip(x + 3, 0, 6) / 6).astype(np.float32)
        if name == "sigmoid":
            return (1 / (1 + np.exp(-x))).astype(np.float32)
        if name == "swish":
            return (x / (1 + np.exp(-x))).astype(np.float32)
        if name == "gelu_erf":
            from math import erf
            return (0.5 * x * (1 + np.vectorize(erf, otypes=[np.float64])(x / math.sqrt(2)))).astype(np.float32)
        if name == "gelu_tanh":
            return (0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))).astype(np.float32)
    return x


NO_EPILOGUE = Epilogue()


# --------------------------------------------------------------------------- code generation
@dataclass(frozen=True)
class UkrKind:
    """How a micro-kernel reads A and multiplies.

    ``"rows"``: A is a table of MR row pointers per tap, k contiguous, f32 FMA.
    ``"cols"``: A is stored transposed (m contiguous): one pointer per tap, a runtime k stride.
    ``"bf16"``: A is packed bf16 pairs ``[tap][MR][rs]`` (i32 units), B bf16 pairs, ``vdpbf16ps``.
    ``"bf16tab"``: as ``"bf16"``, but A is a table of ``(address, row stride in i32 units)``
    int64 pairs, one per tap: each tap's rows packed, or read in place from bf16 X.
    """

    a: str = "rows"

    @property
    def bf16(self) -> bool:
        return self.a in ("bf16", "bf16tab")


def _dpbf16(e: Emitter, acc: ir.Value, a: ir.Value, b: ir.Value) -> ir.Value:
    lanes = acc.type.count
    bt = vec(BF16, 2 * lanes)
    bits = {16: 512, 8: 256, 4: 128}[lanes]
    return e.call(f"llvm.x86.avx512bf16.dpbf16ps.{bits}", acc.type, [acc, e.b.bitcast(a, bt), e.b.bitcast(b, bt)])


def _memory_barrier(e: Emitter, ptr: ir.Value) -> None:
    """An empty inline asm that may read and write ``ptr`` (and any memory): loads after it
    cannot take values stored before it."""
    asm = ir.InlineAsm(ir.FunctionType(VOID, [PTR]), "", "r,~{memory}", side_effect=True)
    e.b.call(asm, [ptr])


def emit_microkernel(m: ir.Module, name: str, tile: Tile, mr: int, nv: int, always_mask: bool,
              kind: UkrKind = UkrKind(), pairs: bool = False, tail: bool = False,
              prefetch: bool = False) -> ir.Function:
    """ukr(a, ntaps, koff, kc, bp, c, ldc, ncols, mode, bias, res, ldr, lo, hi, ks, alpha[, pmul, padd]).

    rows: ``a`` holds ntaps groups of tile.mr row pointers (first mr used), row r of tap t
    reads A at ``a[t][r] + koff + k``. cols: only ``a[t][0]`` is used, row r at
    ``a[t][0] + r + (koff + k) * ks``. bf16: ``a`` is
    the packed tile, row r of tap t at ``a + (t * MR + r) * koff`` (i32 units), kc counts
    k pairs. bf16tab: ``a`` holds an (address, row stride) int64 pair per tap, and ``koff`` is
    the address of ``ks`` lines of B to prefetch into L2, one per k step (two when they
    outnumber the steps). The B micro-panel at bp is [tap][kc][NR] (4-byte units: floats or bf16 pairs).
    The C tile is at c with row stride ldc; ncols <= NR valid columns; alpha scales the
    product when mode has MODE_SCALE.

    ``pairs`` (f32 rows, a last vector of at most lanes / 2 valid columns): the last vector
    of B row k (k even) holds columns and k pairs interleaved, ``(b[k][j], b[k + 1][j])``
    (row k + 1's slot unused; an odd kc's last row pairs with zero), multiplied by A's
    ``(a[k], a[k + 1])`` broadcast as one 64-bit value: half the FMAs of a masked vector.
    Adjacent lanes are summed before the epilogue.

    ``tail`` (f32): four more arguments (pmul, padd, and the address and count of B lines to
    prefetch into L2, one per k step, as bf16tab's koff and ks, used with ``prefetch``), and
    after the clamp the activation of ``mode``'s bits
    from ACT_SHIFT on (one of :data:`REGISTER_ACTIVATIONS`) and, with MODE_AFFINE, ``y * pmul +
    padd`` applied to the accumulators before the store (the formulas of
    :func:`emit_activation_rows`, the same bits, except HSwish and HSigmoid's division by 6, a
    product here: :func:`emit_hard_activation_tile`)."""
    fn = Emitter.function(m, name, VOID, [PTR, I64, I64, I64, PTR, PTR, I64, I64, I32, PTR, PTR, I64, F32, F32,
                                          I64, F32] + ([F32, F32, I64, I64] if tail else []), internal=True,
                          noinline=True)
    ap, ntaps, koff, kc, bp, cp, ldc, ncols, mode, biasp, resp, ldr, lo, hi, ks, alpha = fn.args[:16]
    pmul, padd = fn.args[16:18] if tail else (None, None)
    for a in (bp, cp):
        a.add_attribute("noalias")
    e = Emitter(m, fn)
    b = e.b
    L, NR = tile.lanes, tile.nr
    vt = vec(F32, L)
    zero = ir.Constant(vt, None)
    # Small tiles have too few independent FMA chains to hide the FMA latency: give them
    # several accumulator sets that take turns over k, summed before the epilogue.
    copies = max(1, min(4, 8 // (mr * nv)))
    U = max(tile.unroll, copies)
    if pairs:  # whole k pairs per step, one accumulator set per pair
        U = 2 * copies
    sets = [[[e.var(vt, zero) for _ in range(nv)] for _ in range(mr)] for _ in range(copies)]
    acc = sets[0]
    bcur = e.var(PTR, bp)
    if pairs:
        # 13 x 2 accumulators, 3 B vectors and an A pair fill the 32 vector registers: keep the
        # epilogue's scalars in memory over the k loops (else LLVM spills accumulators instead)
        kept = (lo, hi, alpha, pmul, padd) if tail else (lo, hi, alpha)
        stash = b.alloca(F32, size=c64(len(kept)))
        for i, val in enumerate(kept):
            b.store(val, e.gep(F32, stash, i))
        _memory_barrier(e, stash)
    bvt = vec(I32, L) if kind.bf16 else vt

    def a_value(arow: ir.Value, kk: ir.Value) -> ir.Value:
        if kind.bf16:
            return e.splat(e.load(I32, e.gep(I32, arow, kk), align=4), L)
        return e.splat(e.load(F32, e.gep(F32, arow, kk), align=4), L)

    pv = nv - 1 if pairs else -1  # the k-paired vector

    def a_pair(arow: ir.Value, kk: ir.Value, single: bool) -> ir.Value:
        """(a[k], a[k + 1]) (or (a[k], 0)) in every lane pair."""
        v2 = vec(F32, 2)
        if single:
            two = b.insert_element(ir.Constant(v2, None), e.load(F32, e.gep(F32, arow, kk), align=4), c32(0))
        else:
            two = e.load(v2, e.gep(F32, arow, kk), align=4)
        return b.shuffle_vector(two, two, ir.Constant(vec(I32, L), [j % 2 for j in range(L)]))

    def ksteps(arow: list[ir.Value], bpt: ir.Value, k: ir.Value, count: int, single: bool = False) -> None:
        vals = [[[e.load(vt, s[r][v]) for v in range(nv)] for r in range(mr)] for s in sets]
        for u in range(count):
            kk = b.add(k, c64(u)) if u else k
            cur = vals[(u // 2 if pairs else u) % copies]
            bvec = [e.load(bvt, e.gep(F32, bpt, b.add(b.mul(kk, c64(NR)), c64(v * L))), align=64)
                    for v in range(nv - (1 if pairs else 0))]
            if kind.a == "cols":
                acol = e.gep(F32, arow[0], b.mul(kk, ks))
            for r in range(mr if bvec else 0):
                a = e.splat(e.load(F32, e.gep(F32, acol, r), align=4), L) if kind.a == "cols" else a_value(arow[r], kk)
                for v in range(len(bvec)):
                    cur[r][v] = (_dpbf16(e, cur[r][v], bvec[v], a) if kind.bf16
                                 else fmuladd(e, a, bvec[v], cur[r][v]))
            if pairs and (u % 2 == 1 or count == 1):
                # the paired vector: rows k and k + 1 at once, after both rows' single loads of A (so
                # that LLVM does not take those from the 64-bit load through a general register)
                k0 = b.sub(kk, c64(1)) if u % 2 else kk
                bp_ = e.load(vt, e.gep(F32, bpt, b.add(b.mul(k0, c64(NR)), c64(pv * L))), align=64)
                for r in range(mr):
                    cur[r][pv] = fmuladd(e, a_pair(arow[r], k0, single), bp_, cur[r][pv])
        for s_, vs in zip(sets, vals):
            for r in range(mr):
                for v in range(nv):
                    b.store(vs[r][v], s_[r][v])

    # f32 (tail): only the kernels built with ``prefetch`` (the task's full tiles of many k steps;
    # the prefetch code cost the others' register allocation: a 12 -> 96 1x1 17% slower), every
    # KB-th k step, outside the inner k loop (a test per k step took the general registers the
    # row pointers need: PP-OCRv4 det's 3x3 layers of 24 channels 1.7x slower)
    prefetching = kind.a == "bf16tab" or (tail and prefetch and not pairs)
    if kind.a == "bf16tab":  # koff: the address of B lines to prefetch, ks: how many
        pf_base, pf_n = b.inttoptr(koff, PTR), ks
    elif prefetching:  # the last two arguments
        pf_base, pf_n = b.inttoptr(fn.args[18], PTR), fn.args[19]
    if prefetching:
        pf_steps = b.mul(ntaps, kc)
    KB = 8  # f32: k steps per prefetch block

    def prefetch_step(step: ir.Value) -> None:
        """bf16tab and tail: the step-th line of the prefetch slice (and the one a whole k loop
        later when the slice is longer than the k steps), into L2."""
        for extra in (c64(0), pf_steps):
            line = b.add(step, extra)
            with b.if_then(b.icmp_signed("<", line, pf_n)):
                emit_prefetch_line(e, pf_base, line)

    with e.loop(0, ntaps, name="tap") as t:
        base = b.mul(t, c64(tile.mr))
        if kind.a == "bf16tab":
            ent = e.gep(I64, ap, b.mul(t, c64(2)))
            abase = b.inttoptr(e.load(I64, ent), PTR)
            astride = e.load(I64, e.gep(I64, ent, c64(1)))
            arow = [e.gep(I32, abase, b.mul(c64(r), astride)) for r in range(mr)]
        elif kind.bf16:
            arow = [e.gep(I32, ap, b.mul(b.add(base, c64(r)), koff)) for r in range(mr)]
        elif kind.a == "cols":
            arow = [e.gep(F32, e.load(PTR, e.gep(PTR, ap, base)), b.mul(koff, ks))]
        else:
            arow = [e.gep(F32, e.load(PTR, e.gep(PTR, ap, b.add(base, c64(r)))), koff) for r in range(mr)]
        bpt = e.load(PTR, bcur)
        kmain = b.mul(b.sdiv(kc, c64(U)), c64(U))
        if kind.a == "bf16tab":
            with e.loop(0, kmain, U, name="k") as k:
                prefetch_step(b.add(b.mul(t, kc), k))
                ksteps(arow, bpt, k, U)
        elif prefetching:  # blocks of KB * U k steps, their lines prefetched first
            def lines(first: ir.Value, count: ir.Value) -> None:
                """Prefetch lines first .. first + count of the slice, those below pf_n (and the
                ones a whole k loop later, when the slice is longer than the k steps)."""
                for extra in (c64(0), pf_steps):
                    lo_ = b.add(first, extra)
                    with e.loop(lo_, e.min(b.add(lo_, count), pf_n), name="pfl") as ln:
                        emit_prefetch_line(e, pf_base, ln)

            with b.if_else(b.icmp_signed(">", pf_n, c64(0))) as (pf_on, pf_off):
                with pf_on:
                    kblk = b.mul(b.sdiv(kmain, c64(KB * U)), c64(KB * U))
                    with e.loop(0, kblk, KB * U, name="kb") as kb:
                        lines(b.add(b.mul(t, kc), kb), c64(KB * U))
                        with e.loop(kb, b.add(kb, c64(KB * U)), U, name="k") as k:
                            ksteps(arow, bpt, k, U)
                    lines(b.add(b.mul(t, kc), kblk), b.sub(kmain, kblk))
                    with e.loop(kblk, kmain, U, name="kt") as k:
                        ksteps(arow, bpt, k, U)
                with pf_off:  # nothing to prefetch (the last panel, one panel, small weights)
                    with e.loop(0, kmain, U, name="k") as k:
                        ksteps(arow, bpt, k, U)
        else:
            with e.loop(0, kmain, U, name="k") as k:
                ksteps(arow, bpt, k, U)
        if pairs:  # the remaining whole pairs, then an odd last k (paired with zero)
            keven = b.mul(b.sdiv(kc, c64(2)), c64(2))
            with e.loop(kmain, keven, 2, name="kr") as k:
                ksteps(arow, bpt, k, 2)
            with b.if_then(b.icmp_signed("<", keven, kc)):
                ksteps(arow, bpt, keven, 1, single=True)
        else:
            with e.loop(kmain, kc, name="kr") as k:
                ksteps(arow, bpt, k, 1)
        b.store(e.gep(F32, bpt, b.mul(kc, c64(NR))), bcur)
    if pairs:  # the scalars back from memory (see above)
        _memory_barrier(e, stash)
        lo, hi, alpha = (e.load(F32, e.gep(F32, stash, i)) for i in range(3))
        if tail:
            pmul, padd = (e.load(F32, e.gep(F32, stash, i)) for i in (3, 4))
    for extra in sets[1:]:
        for r in range(mr):
            for v in range(nv):
                b.store(b.fadd(e.load(vt, acc[r][v]), e.load(vt, extra[r][v])), acc[r][v])
    if pairs:
        # lane pairs summed: the paired vector's L / 2 columns in its low lanes (the high lanes,
        # copies, are never stored). Full-width shuffles only: a narrower value would tie the
        # accumulators to the VEX registers 0-15 and spill them.
        swap = ir.Constant(vec(I32, L), [j ^ 1 for j in range(L)])
        evens = ir.Constant(vec(I32, L), [(2 * j) % L for j in range(L)])
        for r in range(mr):
            x = e.load(vt, acc[r][pv])
            s_ = b.fadd(x, b.shuffle_vector(x, x, swap))
            b.store(b.shuffle_vector(s_, s_, evens), acc[r][pv])

    def flag(bit: int) -> ir.Value:
        return b.icmp_unsigned("!=", b.and_(mode, c32(bit)), c32(0))

    def by_half(bit: int, emit: Callable[[bool], None]) -> None:
        """``emit(True)`` where bf16 kernels have mode ``bit`` (a bf16 operand), else ``emit(False)``."""
        if not kind.bf16:
            emit(False)
            return
        with b.if_else(flag(bit)) as (half, full):
            with half:
                emit(True)
            with full:
                emit(False)

    def epilogue(masked: bool) -> None:
        masks = [lane_mask(e, b.sub(ncols, c64(v * L)), L) if masked else None for v in range(nv)]
        crow = [e.gep(F32, cp, b.mul(ldc, c64(r))) for r in range(mr)]
        with b.if_then(flag(MODE_ACC)):
            for r in range(mr):
                for v in range(nv):
                    old = masked_load(e, vt, e.gep(F32, crow[r], v * L), masks[v])
                    b.store(b.fadd(e.load(vt, acc[r][v]), old), acc[r][v])
        with b.if_then(flag(MODE_FINAL)):
            with b.if_then(flag(MODE_SCALE)):
                va = e.splat(alpha, L)
                for r in range(mr):
                    for v in range(nv):
                        b.store(b.fmul(e.load(vt, acc[r][v]), va), acc[r][v])
            with b.if_then(flag(MODE_BIAS)):
                for v in range(nv):
                    bv = masked_load(e, vt, e.gep(F32, biasp, v * L), masks[v])
                    for r in range(mr):
                        b.store(b.fadd(e.load(vt, acc[r][v]), bv), acc[r][v])
            def add_residual(half: bool) -> None:
                for r in range(mr):
                    rrow = e.gep(I16 if half else F32, resp, b.mul(ldr, c64(r)))
                    for v in range(nv):
                        if half:
                            rv = load_bf16(e, e.gep(I16, rrow, v * L), masks[v], L)
                        else:
                            rv = masked_load(e, vt, e.gep(F32, rrow, v * L), masks[v])
                        b.store(b.fadd(e.load(vt, acc[r][v]), rv), acc[r][v])

            with b.if_then(flag(MODE_RES)):
                by_half(MODE_RES16, add_residual)
            bounded = b.or_(b.fcmp_ordered("!=", lo, ir.Constant(F32, -math.inf)),
                            b.fcmp_ordered("!=", hi, ir.Constant(F32, math.inf)))
            with b.if_then(bounded):  # no clamp: skip 2 compares and selects per vector
                vlo, vhi = e.splat(lo, L), e.splat(hi, L)
                for r in range(mr):
                    for v in range(nv):
                        x = e.load(vt, acc[r][v])
                        x = b.select(b.fcmp_ordered("<", x, vlo), vlo, x)
                        x = b.select(b.fcmp_ordered(">", x, vhi), vhi, x)
                        b.store(x, acc[r][v])
            if tail:
                assert pmul is not None and padd is not None
                code = b.and_(b.lshr(mode, c32(ACT_SHIFT)), c32(0xF))
                for act in REGISTER_ACTIVATIONS:
                    with b.if_then(b.icmp_unsigned("==", code, c32(EPILOGUE_ACTIVATIONS.index(act)))):
                        if act in ("hswish", "hsigmoid"):
                            emit_hard_activation_tile(e, act, [acc[r][v] for r in range(mr) for v in range(nv)], L)
                        else:
                            for r in range(mr):
                                for v in range(nv):
                                    b.store(emit_activation(e, act, e.load(vt, acc[r][v]), L), acc[r][v])
                with b.if_then(flag(MODE_AFFINE)):
                    vmul, vadd = e.splat(pmul, L), e.splat(padd, L)
                    for r in range(mr):
                        for v in range(nv):
                            b.store(fmuladd(e, e.load(vt, acc[r][v]), vmul, vadd), acc[r][v])
        def store(half: bool) -> None:
            for r in range(mr):
                for v in range(nv):
                    if half:  # as the rows pass rounds it (store_bf16): the same bits
                        store_bf16(e, e.load(vt, acc[r][v]), e.gep(I16, cp, b.add(b.mul(ldc, c64(r)), c64(v * L))),
                                   masks[v])
                    else:
                        masked_store(e, e.load(vt, acc[r][v]), e.gep(F32, crow[r], v * L), masks[v])

        by_half(MODE_Y16, store)

    if always_mask:
        epilogue(True)
    else:
        with b.if_else(b.icmp_signed(">=", ncols, c64(NR))) as (full, part):
            with full:
                epilogue(False)
            with part:
                epilogue(True)
    b.ret_void()
    return fn


def call_microkernel(e: Emitter, ukrs: dict[tuple[int, int], ir.Function], MR: int, mr: ir.Value, nvec: ir.Value,
              args: list[ir.Value]) -> None:
    """Call the micro-kernel specialised for ``mr`` rows and ``nvec`` vectors (runtime values)."""
    b = e.b
    sel = b.add(b.mul(b.sub(nvec, c64(1)), c64(MR)), b.sub(mr, c64(1)))
    done = e.fn.append_basic_block("ukr.done")
    sw_ = b.switch(sel, done)
    for (r, v), u in ukrs.items():
        blk = e.fn.append_basic_block(f"ukr.{r}x{v}")
        sw_.add_case(c64((v - 1) * MR + r - 1), blk)
        b.position_at_end(blk)
        b.call(u, args)
        b.branch(done)
    b.position_at_end(done)


def emit_to_bf16(e: Emitter, src: ir.Value, dst: ir.Value, count: ir.Value, lanes: int) -> None:
    """Convert ``count`` floats at src to bf16 (round to nearest even) at dst, 64-byte aligned.

    Writes whole blocks of ``2 * lanes`` values; the tail of the last block is zero."""
    b = e.b
    vt = vec(F32, lanes)
    both = ir.Constant(vec(I32, 2 * lanes), list(range(2 * lanes)))
    def block(j: ir.Value, masked: bool) -> None:
        rest = b.sub(count, j)
        m_lo = lane_mask(e, rest, lanes) if masked else None
        m_hi = lane_mask(e, b.sub(rest, c64(lanes)), lanes) if masked else None
        lo = masked_load(e, vt, e.gep(F32, src, j), m_lo)
        hi = masked_load(e, vt, e.gep(F32, src, b.add(j, c64(lanes))), m_hi)
        v = b.fptrunc(b.shuffle_vector(lo, hi, both), vec(BF16, 2 * lanes))
        b.store(v, e.gep(I32, dst, b.sdiv(j, c64(2))), align=64)

    full = b.mul(b.sdiv(count, c64(2 * lanes)), c64(2 * lanes))
    with e.loop(0, full, 2 * lanes, name="cvt") as j:
        block(j, False)
    with b.if_then(b.icmp_signed("<", full, count)):
        block(full, True)


def _reciprocal(e: Emitter, mth: VectorMath, x: ir.Value, lanes: int) -> ir.Value:
    """1 / x for finite x >= 1: the hardware estimate (``vrcp14ps``, 14 bits; ``vrcpps``, 12
    bits) and one Newton step (a few ulps), instead of a ``vdivps`` (10-16 cycles per 16
    lanes, most of a GELU's time). Other vector widths divide."""
    b = e.b
    if lanes == 16:
        r = e.call("llvm.x86.avx512.rcp14.ps.512", x.type, [x, ir.Constant(x.type, None), ir.Constant(ir.IntType(16), -1)])
    elif lanes == 8:
        r = e.call("llvm.x86.avx.rcp.ps.256", x.type, [x])
    else:
        return b.fdiv(mth.c(1.0), x)
    return fmuladd(e, r, fmuladd(e, b.fneg(x), r, mth.c(1.0)), r)


def exp_nonpositive(e: Emitter, mth: VectorMath, x: ir.Value) -> ir.Value:
    """e**x for x <= 0 (or NaN, which propagates): ``VectorMath.exp`` without its overflow
    and NaN selects, results below the smallest normal 0."""
    b = e.b
    low = -87.33654
    xc = mth.sel(mth.lt(x, mth.c(low)), mth.c(low), x)
    k = mth.floor(fmuladd(e, xc, mth.c(1.4426950408889634), mth.c(0.5)))
    r = fmuladd(e, k, mth.c(-0.693359375), xc)
    r = fmuladd(e, k, mth.c(2.12194440e-4), r)
    p = mth.poly(r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                     1.6666665459e-1, 5.0000001201e-1])
    p = fmuladd(e, p, b.fmul(r, r), b.fadd(r, mth.c(1.0)))
    y = b.fmul(p, b.bitcast(b.shl(b.add(b.fptosi(k, mth.vi), mth.ci(127)), mth.ci(23)), mth.vt))
    return mth.sel(mth.lt(x, mth.c(low)), mth.c(0.0), y)


def _gelu_erf(e: Emitter, mth: VectorMath, x: ir.Value, lanes: int) -> ir.Value:
    """``0.5 x (1 + erf(x / sqrt 2))`` with Abramowitz-Stegun 7.1.26 (|error| of erf below
    1.5e-7): ``q = t P(t) exp(-z^2)`` is ``1 - erf(|z|)``, so ``1 + erf(z)`` is ``q`` for
    z < 0 (no cancellation) and ``2 - q`` above; ``t = 1 / (1 + 0.3275911 |z|)`` by
    :func:`_reciprocal` (|z| clamped to 10, where q is 0 in f32, so that the estimate never
    sees an infinity). About half the instructions of the erf of the elementwise kernels
    (no series branch, no overflow selects), the same results within a few ulps."""
    b = e.b
    z = b.fmul(x, mth.c(1 / math.sqrt(2)))
    a = mth.abs(z)
    ac = mth.sel(mth.gt(a, mth.c(10.0)), mth.c(10.0), a)
    t = _reciprocal(e, mth, fmuladd(e, ac, mth.c(0.3275911), mth.c(1.0)), lanes)
    p = b.fmul(t, mth.poly(t, [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592]))
    q = b.fmul(p, exp_nonpositive(e, mth, b.fneg(b.fmul(a, a))))
    one_plus = mth.sel(mth.lt(x, mth.c(0.0)), q, b.fsub(mth.c(2.0), q))
    return b.fmul(b.fmul(mth.c(0.5), x), one_plus)


def emit_activation(e: Emitter, name: str, x: ir.Value, lanes: int) -> ir.Value:
    """An epilogue activation of the vector ``x`` (the elementwise kernel's formulas)."""
    mth = VectorMath(e, lanes)
    b, c = e.b, mth.c
    if name in ("hswish", "hsigmoid"):
        h = b.fadd(x, c(3.0))
        h = mth.sel(mth.lt(h, c(0.0)), c(0.0), h)
        h = mth.sel(mth.gt(h, c(6.0)), c(6.0), h)
        return b.fdiv(b.fmul(x, h), c(6.0)) if name == "hswish" else b.fdiv(h, c(6.0))
    if name == "swish":
        return b.fmul(x, mth.sigmoid(x))
    if name == "sigmoid":
        return mth.sigmoid(x)
    if name == "gelu_erf":
        return _gelu_erf(e, mth, x, lanes)
    if name == "gelu_tanh":
        inner = b.fmul(c(math.sqrt(2 / math.pi)), fmuladd(e, b.fmul(b.fmul(x, x), x), c(0.044715), x))
        return b.fmul(b.fmul(c(0.5), x), b.fadd(c(1.0), mth.tanh(inner)))
    raise EmberError(f"ember: no epilogue activation {name!r}")


#: HSwish and HSigmoid in the f32 micro-kernels multiply by RN(1/6) (as OpenVINO's CPU plugin)
SIXTH = float(np.float32(1 / 6))


def emit_hard_activation_tile(e: Emitter, name: str, accs: list[ir.Value], lanes: int) -> None:
    """HSwish or HSigmoid in place on the vectors held in ``accs`` (variables): the formula of
    :func:`emit_activation` with its division by 6 (a ``vdivps``, which made the activation
    most of a small-K 1x1 layer's epilogue) as a product by ``RN(1/6)``: within an ulp of the
    quotient (about 1.2e-7 relative; 0 and the signs of zeros, infinities and NaN as the
    division gives them)."""
    b = e.b
    mth = VectorMath(e, lanes)
    c = mth.c
    vt = vec(F32, lanes)
    for var in accs:
        x = e.load(vt, var)
        h = b.fadd(x, c(3.0))
        h = mth.sel(mth.lt(h, c(0.0)), c(0.0), h)
        h = mth.sel(mth.gt(h, c(6.0)), c(6.0), h)
        b.store(b.fmul(b.fmul(x, h) if name == "hswish" else h, c(SIXTH)), var)


def emit_copy_bf16(e: Emitter, src: ir.Value, dst: ir.Value, count: ir.Value, lanes: int) -> None:
    """Copy ``count`` bf16 values from src to dst (64-byte aligned) in whole blocks of
    ``2 * lanes`` values, the tail of the last block zero (as :func:`emit_to_bf16` leaves it)."""
    b = e.b
    n = 2 * lanes
    vt = vec(I16, n)
    full = b.mul(b.sdiv(count, c64(n)), c64(n))
    with e.loop(0, full, n, name="cpb") as j:
        b.store(e.load(vt, e.gep(I16, src, j), align=2), e.gep(I16, dst, j), align=64)
    with b.if_then(b.icmp_signed("<", full, count)):
        mask = lane_mask(e, b.sub(count, full), n)
        v = e.call(f"llvm.masked.load.v{n}i16.p0", vt, [e.gep(I16, src, full), c32(2), mask, ir.Constant(vt, None)])
        b.store(v, e.gep(I16, dst, full), align=64)


def load_bf16(e: Emitter, ptr: ir.Value, mask: ir.Value | None, lanes: int) -> ir.Value:
    """``lanes`` bf16 values at ``ptr`` widened to an f32 vector (exactly)."""
    b = e.b
    vi16, vi32 = vec(I16, lanes), vec(I32, lanes)
    if mask is None:
        h = e.load(vi16, ptr, align=2)
    else:
        h = e.call(f"llvm.masked.load.v{lanes}i16.p0", vi16, [ptr, c32(2), mask, ir.Constant(vi16, None)])
    return b.bitcast(b.shl(b.zext(h, vi32), ir.Constant(vi32, [16] * lanes)), vec(F32, lanes))


def store_bf16(e: Emitter, v: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
    """Store the f32 vector ``v`` as bf16 (round to nearest even) at ``ptr``."""
    lanes = v.type.count
    h = e.b.bitcast(e.b.fptrunc(v, vec(BF16, lanes)), vec(I16, lanes))
    if mask is None:
        e.b.store(h, ptr, align=2)
    else:
        e.call(f"llvm.masked.store.v{lanes}i16.p0", VOID, [h, ptr, c32(2), mask])


def emit_activation_rows(m: ir.Module, name: str, lanes: int, bf16_out: bool = False) -> ir.Function:
    """fin(src, lds, dst, ldd, rows, ncols, tail, pmul, padd): the activation and affine of the
    flag bits ``tail`` (:attr:`Epilogue.tail_flags`) applied to ``rows x ncols`` floats at
    ``src`` (row stride ``lds``), written to ``dst`` (row stride ``ldd``): in place (``src ==
    dst``) for f32, or as bf16 when ``tail`` has FLAG_YBF16 (``bf16_out`` modules). Run on an
    output tile right after the epilogue stored it, while it is in L1."""
    fn = Emitter.function(m, name, VOID, [PTR, I64, PTR, I64, I64, I64, I64, F32, F32], internal=True, noinline=True)
    sp, lds, dp, ldd, rows, ncols, tail, pmul, padd = fn.args
    e = Emitter(m, fn)
    b = e.b
    vt = vec(F32, lanes)
    vmul, vadd = e.splat(pmul, lanes), e.splat(padd, lanes)
    done = fn.append_basic_block("act.done")
    sw_ = b.switch(b.and_(tail, c64(_TAIL_BITS)), done)
    for out16 in (False, True) if bf16_out else (False,):
        for k, act in enumerate(EPILOGUE_ACTIVATIONS):
            for affine in (False, True):
                if not act and not affine and not out16:
                    continue
                blk = fn.append_basic_block(f"act.{act}.{int(affine)}.{int(out16)}")
                sw_.add_case(c64((k << ACT_SHIFT) | (FLAG_AFFINE if affine else 0) | (FLAG_YBF16 if out16 else 0)), blk)
                b.position_at_end(blk)
                full = b.mul(b.sdiv(ncols, c64(lanes)), c64(lanes))
                with e.loop(0, rows, name="ar") as r:
                    srow = e.gep(F32, sp, b.mul(r, lds))
                    drow = e.gep(I16 if out16 else F32, dp, b.mul(r, ldd))

                    def vector(j: ir.Value, mask: ir.Value | None, act: str = act, affine: bool = affine,
                               out16: bool = out16, srow: ir.Value = srow, drow: ir.Value = drow) -> None:
                        y = masked_load(e, vt, e.gep(F32, srow, j), mask)
                        if act:
                            y = emit_activation(e, act, y, lanes)
                        if affine:
                            y = fmuladd(e, y, vmul, vadd)
                        if out16:
                            store_bf16(e, y, e.gep(I16, drow, j), mask)
                        else:
                            masked_store(e, y, e.gep(F32, drow, j), mask)

                    with e.loop(0, full, lanes, name="ac") as j:
                        vector(j, None)
                    with b.if_then(b.icmp_signed("<", full, ncols)):
                        vector(full, lane_mask(e, b.sub(ncols, full), lanes))
                b.branch(done)
    b.position_at_end(done)
    b.ret_void()
    return fn


@dataclass(frozen=True)
class TaskBlock:
    """The output block one task of a blocked GEMM computes: tasks are numbered over
    ``(outer, row block, panel block)`` with ``gm x gn`` blocks per outer index (a group, a batch);
    a block is rows ``m0..m1`` (``ntiles`` tiles of MR rows) and NR-wide panels ``j0..j1``."""

    outer: ir.Value
    m0: ir.Value
    m1: ir.Value
    j0: ir.Value
    j1: ir.Value
    ntiles: ir.Value


def task_block(e: Emitter, task: ir.Value, gm: ir.Value, gn: ir.Value, tm: ir.Value, tn: ir.Value,
               m: ir.Value, n: ir.Value, tile: Tile) -> TaskBlock:
    """Emit the decomposition of ``task`` into its TaskBlock (``tm`` row tiles and ``tn`` panels
    per block; ``m`` rows and ``n`` columns in all)."""
    b = e.b
    per_outer = b.mul(gm, gn)
    outer = b.sdiv(task, per_outer)
    rest = b.srem(task, per_outer)
    bm, bn = b.sdiv(rest, gn), b.srem(rest, gn)
    m0 = b.mul(bm, b.mul(tm, c64(tile.mr)))
    m1 = e.min(m, b.add(m0, b.mul(tm, c64(tile.mr))))
    j0 = b.mul(bn, tn)
    j1 = e.min(e.cdiv(n, tile.nr), b.add(j0, tn))
    return TaskBlock(outer, m0, m1, j0, j1, e.cdiv(b.sub(m1, m0), tile.mr))


def emit_next_pixel(e: Emitter, v_img: ir.Value, v_oy: ir.Value, v_ox: ir.Value, OH: ir.Value, OW: ir.Value) -> None:
    """Advance the pixel held in the variables ``(v_img, v_oy, v_ox)`` to the next one in NHWC
    order (the next column, wrapping to the next output row and image)."""
    b = e.b
    img, oy, ox = e.load(I64, v_img), e.load(I64, v_oy), e.load(I64, v_ox)
    nx = b.add(ox, c64(1))
    wrap_x = b.icmp_signed(">=", nx, OW)
    b.store(b.select(wrap_x, c64(0), nx), v_ox)
    ny = b.select(wrap_x, b.add(oy, c64(1)), oy)
    wrap_y = b.icmp_signed(">=", ny, OH)
    b.store(b.select(wrap_y, c64(0), ny), v_oy)
    b.store(b.select(wrap_y, b.add(img, c64(1)), img), v_img)


def emit_linear_rows(e: Emitter, f: Callable[..., ir.Value], m: ir.Value) -> ir.Value:
    """Whether pixel p of X is at ``x + p * ldx`` for the ``m`` rows of an implicit GEMM whose
    context field ``name`` is ``f(name)``: a 1x1 convolution at unit stride without padding or
    merged taps (a MatMul's rows too), whose images follow each other (or one image)."""
    b = e.b
    one, zero = c64(1), c64(0)
    linear = b.and_(b.and_(b.icmp_signed("==", b.mul(f("kh"), f("kw")), one),
                           b.icmp_signed("==", b.mul(f("sh"), f("sw")), one)),
                    b.and_(b.icmp_signed("==", b.or_(f("pt"), f("pl")), zero),
                           b.icmp_signed("==", f("merge"), zero)))
    linear = b.and_(linear, b.and_(b.icmp_signed("==", f("w"), f("ow")), b.icmp_signed("==", f("h"), f("oh"))))
    return b.and_(linear, b.or_(b.icmp_signed("==", f("xn"), b.mul(b.mul(f("h"), f("w")), f("ldx"))),
                                b.icmp_signed("<=", m, b.mul(f("oh"), f("ow")))))


def emit_f32_rows(e: Emitter, f: Callable[..., ir.Value], blk: TaskBlock, tile: Tile,
                  xbytes: ir.Value | None = None, per: ir.Value | None = None,
                  skip: ir.Value | None = None, gather16: ir.Value | None = None
                  ) -> tuple[ir.Value, ir.Value, ir.Value]:
    """The row pointer table of a task's f32 pixels, ``rows[(tile * ntaps + tap) * MR + r]``
    (padding taps point at a row of zeros), or with ``merge`` each pixel's taps gathered into
    one row first. ``f(name, type)`` reads an IGEMM_CONTEXT field. Returns (rows, taps per
    row, K per row): (table, 1, taps x cin) when merged. ``xbytes`` (a runtime 2 or 4, bf16
    kernels) is the size of an element of X in the row table (merging needs f32). ``per``
    (at most MR, default MR): rows per tile, tile ``i`` holding the block's rows
    ``i * per ..`` (balanced tiles). ``skip`` (i1): leave the per-tap table unfilled (a caller
    that finds its rows without it). ``gather16`` (bytes, a multiple of 64 holding the merged
    K): merged rows are gathered as bf16 (rounded to nearest even) at that row stride, zero
    padded to it, so that tiles read them as they are."""
    b = e.b
    MR, L = tile.mr, tile.lanes
    per = c64(MR) if per is None else per
    g, m0, m1, ntiles = blk.outer, blk.m0, blk.m1, blk.ntiles
    cin = f("cin")
    kh, kw = f("kh"), f("kw")
    ntaps = b.mul(kh, kw)
    rows = b.alloca(PTR, size=b.mul(b.mul(ntiles, ntaps), c64(MR)))
    merge = b.icmp_signed("!=", f("merge"), c64(0))

    x, ldx, xn, H, W = f("x", PTR), f("ldx"), f("xn"), f("h"), f("w")
    OH, OW = f("oh"), f("ow")
    sh, sw, dh, dw, pt, pl = f("sh"), f("sw"), f("dh"), f("dw"), f("pt"), f("pl")
    zero_row = f("zero", PTR)

    def xgep(p: ir.Value, idx: ir.Value) -> ir.Value:
        return e.gep(F32, p, idx) if xbytes is None else e.gep(I8, p, b.mul(idx, xbytes))

    xgroup = xgep(x, b.mul(g, f("xg")))

    def pixels(body) -> None:
        """body(p, img, oy, ox) for the task's pixels; coordinates advance incrementally
        (one division per task, not per pixel)."""
        ohw = b.mul(OH, OW)
        v_img = e.var(I64, b.udiv(m0, ohw))
        q0 = b.urem(m0, ohw)
        v_oy = e.var(I64, b.udiv(q0, OW))
        v_ox = e.var(I64, b.urem(q0, OW))
        with e.loop(m0, m1, name="p") as p:
            body(p, e.load(I64, v_img), e.load(I64, v_oy), e.load(I64, v_ox))
            emit_next_pixel(e, v_img, v_oy, v_ox, OH, OW)

    # ---- row pointer table: rows[(tile * ntaps + tap) * MR + r]
    tap_stride = c64(MR)
    # the pixel's (tile, r) slot advances with it: a division per pixel by the runtime rows per
    # tile cost a 1x1 bf16 GEMM of K = 28 a fifth of its time
    v_r, v_tile0 = e.var(I64), e.var(I64)
    tile_slots = b.mul(ntaps, c64(MR))

    def table_row(p: ir.Value, img: ir.Value, oy: ir.Value, ox: ir.Value) -> None:
        r_, t0_ = e.load(I64, v_r), e.load(I64, v_tile0)
        slot0 = b.add(t0_, r_)
        nxt = b.add(r_, c64(1))
        wrap = b.icmp_signed(">=", nxt, per)
        b.store(b.select(wrap, c64(0), nxt), v_r)
        b.store(b.select(wrap, b.add(t0_, tile_slots), t0_), v_tile0)
        iy0 = b.sub(b.mul(oy, sh), pt)
        ix0 = b.sub(b.mul(ox, sw), pl)
        ximg = xgep(xgroup, b.mul(img, xn))
        with e.loop(0, kh, name="ky") as ky:
            iy = b.add(iy0, b.mul(ky, dh))
            yok = b.icmp_unsigned("<", iy, H)
            xrow = xgep(ximg, b.mul(b.mul(iy, W), ldx))
            trow = b.mul(b.mul(ky, kw), tap_stride)
            with e.loop(0, kw, name="kx") as kx:
                ix = b.add(ix0, b.mul(kx, dw))
                ok = b.and_(yok, b.icmp_unsigned("<", ix, W))
                ptr = b.select(ok, xgep(xrow, b.mul(ix, ldx)), zero_row)
                b.store(ptr, e.gep(PTR, rows, b.add(b.add(slot0, trow), b.mul(kx, tap_stride))))

    # ---- merged taps (few channels per tap): gather each pixel's taps into one contiguous
    # row of ntaps * cin values (a kernel row at once where it lies inside a dense image),
    # then run as a one-tap GEMM with K = ntaps * cin
    kmerged = b.mul(ntaps, cin)
    vt = vec(F32, L)

    def copy(dst: ir.Value, src: ir.Value, count: ir.Value, small: tuple[ir.Value, ir.Value]) -> None:
        """count floats; ``small`` = (count <= L, its lane mask), computed once per task."""
        fits, mask0 = small
        with b.if_else(fits) as (one, loop):
            with one:
                masked_store(e, masked_load(e, vt, src, mask0), dst, mask0)
            with loop:
                with e.loop(0, count, L, name="cp") as c:
                    mask = lane_mask(e, b.sub(count, c), L)
                    masked_store(e, masked_load(e, vt, e.gep(F32, src, c), mask), e.gep(F32, dst, c), mask)

    with b.if_else(merge) as (merged, per_tap):
        with per_tap:
            b.store(c64(0), v_r)
            b.store(c64(0), v_tile0)
            # a 1x1 convolution at unit stride without padding, or GEMM rows: pixel p is at
            # x + p ldx (no coordinates, no tests: a K = 28 GEMM spent a third of its time here)
            linear = emit_linear_rows(e, f, f("m"))
            todo = ir.Constant(ir.IntType(1), 1) if skip is None else b.not_(skip)
            with b.if_then(todo):
                with b.if_else(linear) as (lin, general):
                    with lin:
                        with e.loop(0, ntiles, name="lt") as t_:
                            p0 = b.add(m0, b.mul(t_, per))
                            with e.loop(0, e.min(per, b.sub(m1, p0)), name="lr") as r_:
                                b.store(xgep(xgroup, b.mul(b.add(p0, r_), ldx)),
                                        e.gep(PTR, rows, b.add(b.mul(t_, c64(MR)), r_)))
                    with general:
                        pixels(table_row)
        with merged:
            kpad = b.mul(e.cdiv(kmerged, L), c64(L))
            if gather16 is None:
                gbuf = aligned_alloca(e, F32, b.mul(b.mul(ntiles, c64(MR)), kpad))
            else:  # kpad in bytes of bf16 rows; copies convert
                kpad = gather16
                gbuf = aligned_alloca(e, I8, b.mul(b.mul(ntiles, c64(MR)), kpad))

                def copy(dst: ir.Value, src: ir.Value, count: ir.Value, small: tuple[ir.Value, ir.Value]) -> None:
                    fits, mask0 = small
                    with b.if_else(fits) as (one, loop):
                        with one:
                            store_bf16(e, masked_load(e, vt, src, mask0), dst, mask0)
                        with loop:
                            with e.loop(0, count, L, name="cp16") as c:
                                mask = lane_mask(e, b.sub(count, c), L)
                                store_bf16(e, masked_load(e, vt, e.gep(F32, src, c), mask), e.gep(I16, dst, c), mask)

            def dgep(p: ir.Value, idx: ir.Value) -> ir.Value:
                return e.gep(F32, p, idx) if gather16 is None else e.gep(I16, p, idx)
            dense = b.and_(b.icmp_signed("==", ldx, cin), b.icmp_signed("==", dw, c64(1)))
            span = b.mul(b.sub(kw, c64(1)), dw)
            krow = b.mul(kw, cin)
            small_row = (b.icmp_signed("<=", krow, c64(L)), lane_mask(e, krow, L))
            small_tap = (b.icmp_signed("<=", cin, c64(L)), lane_mask(e, cin, L))

            v32 = vec(F32, 2 * L)
            fit32, mask32 = b.icmp_signed("<=", krow, c64(2 * L)), lane_mask(e, krow, 2 * L)
            fit16, mask16 = b.icmp_signed("<=", krow, c64(L)), lane_mask(e, krow, L)

            def gather_row(p: ir.Value, img: ir.Value, oy: ir.Value, ox: ir.Value) -> None:
                if gather16 is None:
                    dst = e.gep(F32, gbuf, b.mul(b.sub(p, m0), kpad))
                else:
                    dst = e.gep(I8, gbuf, b.mul(b.sub(p, m0), kpad))
                iy0 = b.sub(b.mul(oy, sh), pt)
                ix0 = b.sub(b.mul(ox, sw), pl)
                inside_x = b.and_(b.icmp_signed(">=", ix0, c64(0)), b.icmp_signed("<", b.add(ix0, span), W))
                ximg = e.gep(F32, xgroup, b.mul(img, xn))
                # a pixel whose kernel rows (all of them, 3, 5 or 7) lie inside the image, each
                # one masked load of up to 2L values: every load before the stores (a load
                # behind the pixel's stores waits on them: the 7x7 bf16 stem's gather 1.4x
                # faster, PP-OCR det's f32 3x3/2 3->16 stem 1325 -> 1140 us one thread)
                ylast = b.add(iy0, b.mul(b.sub(kh, c64(1)), dh))
                fast = b.and_(b.and_(b.and_(inside_x, dense), fit32),
                              b.and_(b.icmp_signed(">=", iy0, c64(0)), b.icmp_signed("<", ylast, H)))
                fast = b.and_(fast, functools.reduce(b.or_, [b.icmp_signed("==", kh, c64(n)) for n in GATHER_ROWS]))
                def gather_fast(nrows: int, vt_: ir.Type, mask_: ir.Value) -> None:
                    loaded = []
                    for kyc in range(nrows):
                        iy = b.add(iy0, b.mul(c64(kyc), dh))
                        loaded.append(masked_load(e, vt_, e.gep(F32, ximg, b.mul(b.add(b.mul(iy, W), ix0), ldx)), mask_))
                    for kyc, v in enumerate(loaded):
                        if gather16 is None:
                            masked_store(e, v, dgep(dst, b.mul(c64(kyc), krow)), mask_)
                        else:
                            store_bf16(e, v, dgep(dst, b.mul(c64(kyc), krow)), mask_)

                for nrows in GATHER_ROWS:
                    with b.if_then(b.and_(fast, b.icmp_signed("==", kh, c64(nrows)))):
                        # a kernel row of at most L values (a 3x3 RGB stem: 9) in one vector
                        with b.if_else(fit16) as (one, two):
                            with one:
                                gather_fast(nrows, vt, mask16)
                            with two:
                                gather_fast(nrows, v32, mask32)
                with b.if_then(b.not_(fast)):
                    with e.loop(0, kh, name="gky") as ky:
                        iy = b.add(iy0, b.mul(ky, dh))
                        yok = b.icmp_unsigned("<", iy, H)
                        xrow = e.gep(F32, ximg, b.mul(b.mul(iy, W), ldx))
                        drow = dgep(dst, b.mul(ky, krow))
                        with b.if_else(b.and_(b.and_(yok, inside_x), dense)) as (whole, taps):
                            with whole:
                                copy(drow, e.gep(F32, xrow, b.mul(ix0, ldx)), krow, small_row)
                            with taps:
                                with e.loop(0, kw, name="gkx") as kx:
                                    ix = b.add(ix0, b.mul(kx, dw))
                                    ok = b.and_(yok, b.icmp_unsigned("<", ix, W))
                                    src = b.select(ok, e.gep(F32, xrow, b.mul(ix, ldx)), zero_row)
                                    copy(dgep(drow, b.mul(kx, cin)), src, cin, small_tap)
                if gather16 is not None:  # then the padding after K zero
                    k2 = b.mul(kmerged, c64(2))
                    with e.loop(b.mul(b.sdiv(k2, c64(64)), c64(64)), kpad, 64, name="gz") as z:
                        e.call("llvm.masked.store.v64i8.p0", VOID, [ir.Constant(vec(I8, 64), None), e.gep(I8, dst, z), c32(1),
                                                                   b.not_(byte_mask(e, b.sub(k2, z)))])

            pixels(gather_row)
            with e.loop(0, b.mul(ntiles, c64(MR)), name="gp") as q:  # slot (tile, r): row tile * per + r
                grow = e.min(b.add(b.mul(b.sdiv(q, c64(MR)), per), b.srem(q, c64(MR))), b.sub(b.mul(ntiles, c64(MR)), c64(1)))
                b.store(e.gep(F32 if gather16 is None else I8, gbuf, b.mul(grow, kpad)), e.gep(PTR, rows, q))
    ntaps = b.select(merge, c64(1), ntaps)
    cin = b.select(merge, kmerged, cin)
    return rows, ntaps, cin


#: kernel heights of a stem whose rows are gathered with all their loads first (bf16 AMX rows)
GATHER_ROWS = (3, 5, 7)


#: lines of the next B panel the f32/bf16 implicit GEMM prefetches after each row tile, at most:
#: a burst of hundreds (a 3x3 panel of a 7x7x512 layer, 4 row tiles) filled the miss queue and
#: stalled the micro-kernel's own loads (cold weights: ResNet-50 layer4 3x3 f32 735 -> 560 us,
#: bf16 363 -> 303 us on Zen 5); the hardware prefetcher follows the rest of the panel
PREFETCH_LINES_PER_TILE = 32


def emit_prefetch_line(e: Emitter, base: ir.Value, line: ir.Value) -> None:
    """Prefetch the 64-byte line ``line`` from ``base`` into L2 (``prefetcht1``)."""
    e.call("llvm.prefetch.p0", VOID, [e.gep(I8, base, e.b.mul(line, c64(64))), c32(0), c32(2), c32(1)])


def emit_prefetch_slice(e: Emitter, base: ir.Value, nbytes: ir.Value, part: ir.Value, parts: ir.Value,
                        max_lines: int | None = None) -> None:
    """Prefetch (into L2, ``prefetcht1``) slice ``part`` of ``parts`` of the ``nbytes`` at
    ``base``, a 64-byte line at a time: spread over the row tiles of one B panel, the next
    panel streams in while this one is computed (a layer's weights are read once per
    inference, from memory: without it the first tile of each panel waited on them).
    ``max_lines``: at most that many lines per slice (the start of each slice)."""
    b = e.b
    lines = e.cdiv(nbytes, 64)
    per = e.cdiv(lines, e.max(parts, c64(1)))
    if max_lines is not None:
        per = e.min(per, c64(max_lines))
    l0 = b.mul(part, per)
    with e.loop(l0, e.min(lines, b.add(l0, per)), name="pf") as ln:
        emit_prefetch_line(e, base, ln)


#: bf16 micro-kernels store a bf16 Y themselves when no activation or affine follows the
#: epilogue (``EMBER_BF16_Y_IN_KERNEL=0``: through an f32 tile and the rows pass)
Y16_IN_KERNEL = os.environ.get("EMBER_BF16_Y_IN_KERNEL", "1") != "0"

#: bf16 micro-kernels prefetch their tile's slice of the next B panel themselves, a line per k
#: step (``EMBER_GEMM_PF_IN_KERNEL=0``: after the tile, at most PREFETCH_LINES_PER_TILE lines)
PF_IN_KERNEL = os.environ.get("EMBER_GEMM_PF_IN_KERNEL", "1") != "0"
#: k steps (taps x k per tap, in 4-byte units) a tile needs for the micro-kernel to prefetch
PF_MIN_STEPS = 64
#: f32: rows a tile needs to prefetch in the micro-kernel (balanced tiles of 128 rows have 13, of
#: a 7x7 map 12-13); smaller tiles prefetch after the tile
PF_MIN_ROWS = 10

#: bf16 micro-kernels read X in place when it is bf16 with one tap at a uniform row stride
#: (``EMBER_BF16_A_IN_PLACE=0``: always packed)
A_IN_PLACE = os.environ.get("EMBER_BF16_A_IN_PLACE", "1") != "0"


def emit_uniform_rows(e: Emitter, rows: ir.Value, slot0: ir.Value, mr: ir.Value, stride_var: ir.Value) -> ir.Value:
    """Whether the ``mr`` row pointers from ``rows[slot0]`` are 4-byte aligned and equally spaced
    by a positive multiple of 4 bytes (1 for one row); that spacing goes to ``stride_var``."""
    b = e.b
    p0 = b.ptrtoint(e.load(PTR, e.gep(PTR, rows, slot0)), I64)
    one = b.icmp_signed("<=", mr, c64(1))
    p1 = b.ptrtoint(e.load(PTR, e.gep(PTR, rows, b.add(slot0, b.select(one, c64(0), c64(1))))), I64)
    d = b.select(one, c64(4), b.sub(p1, p0))
    b.store(d, stride_var)
    ok = e.var(ir.IntType(1), b.and_(b.icmp_signed(">", d, c64(0)),
                          b.icmp_signed("==", b.and_(b.or_(d, p0), c64(3)), c64(0))))
    with e.loop(2, mr, name="ur") as r:
        pr = b.ptrtoint(e.load(PTR, e.gep(PTR, rows, b.add(slot0, r))), I64)
        pq = b.ptrtoint(e.load(PTR, e.gep(PTR, rows, b.add(slot0, b.sub(r, c64(1))))), I64)
        b.store(b.and_(e.load(ir.IntType(1), ok), b.icmp_signed("==", b.sub(pr, pq), d)), ok)
    return e.load(ir.IntType(1), ok)


def _emit_igemm_task(m: ir.Module, name: str, tile: Tile, ukrs: dict[tuple[int, int], ir.Function],
                     act: ir.Function, bf16: bool = False,
                     pair_ukrs: dict[tuple[int, int], ir.Function] | None = None,
                     pf_ukrs: dict[tuple[int, int], ir.Function] | None = None) -> None:
    fn = Emitter.function(m, name, VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    MR, NR, L = tile.mr, tile.nr, tile.lanes

    def f(name: str, typ: ir.Type = I64) -> ir.Value:
        return e.field(ctx, IGEMM_CONTEXT[name], typ)

    M, N, cb = f("m"), f("cout"), f("cb")
    blk = task_block(e, task, f("gm"), f("gn"), f("tm"), f("tn"), M, N, tile)
    g, m0, m1, j0, j1, ntiles = blk.outer, blk.m0, blk.m1, blk.j0, blk.j1, blk.ntiles
    x_bf16 = b.icmp_unsigned("!=", b.and_(f("flags"), c64(FLAG_XBF16)), c64(0))
    y_bf16 = b.icmp_unsigned("!=", b.and_(f("flags"), c64(FLAG_YBF16)), c64(0))
    # balanced row tiles: 128 rows are 8 x 14 + 2 x 8, not 9 x 14 + 2 (a 2-row tile runs its
    # few accumulators at FMA latency)
    cap: int | ir.Value = MR
    if pair_ukrs is not None:  # k-paired kernels hold PAIR_MR rows: more, shorter tiles
        cap = b.select(b.icmp_unsigned("!=", b.and_(f("flags"), c64(FLAG_PAIRS)), c64(0)), c64(PAIR_MR), c64(MR))
        ntiles = e.cdiv(b.sub(m1, m0), cap)
        blk = TaskBlock(g, m0, m1, j0, j1, ntiles)
    per = e.max(e.cdiv(b.sub(m1, m0), e.max(e.cdiv(b.sub(m1, m0), cap), c64(1))), c64(1))
    linear = None
    if bf16:
        # a 1x1 convolution at unit stride without padding, or GEMM rows: pixel p of X is at
        # x + p ldx, so the bf16 tiles find their rows without a row table (building it cost a
        # K = 28 GEMM a third of its time)
        xbytes = b.select(x_bf16, c64(2), c64(4))
        linear = emit_linear_rows(e, f, M)
        ldxb = b.mul(f("ldx"), xbytes)
        xgroup_b = e.gep(I8, f("x", PTR), b.mul(b.mul(g, f("xg")), xbytes))
        v_row0, v_row0_r = e.var(PTR), e.var(PTR)
        v_img, v_oy, v_ox = e.var(I64), e.var(I64), e.var(I64)
        IH, IW, OH, OW, XN, LDX = f("h"), f("w"), f("oh"), f("ow"), f("xn"), f("ldx")
        SH, SW, DH, DW, PT, PL, KW = f("sh"), f("sw"), f("dh"), f("dw"), f("pt"), f("pl"), f("kw")
        ohw = b.mul(OH, OW)
    if bf16:  # A converted per chunk: [tile][tap][MR][rs] bf16 pairs, rows 64-byte aligned
        rs = b.mul(e.cdiv(e.cdiv(cb, 2), L), c64(L))
        # a stem's taps (merged into one row per pixel, all of K one chunk) are gathered as bf16
        # rows of rs pairs and read in place: one copy, not a gather and then a conversion
        merged = b.icmp_signed("!=", f("merge"), c64(0))
    # bf16 kernels find their rows from the geometry: a row table only for a stem's gathered rows
    rows, ntaps, cin = emit_f32_rows(e, f, blk, tile, xbytes if bf16 else None, per,
                                     skip=b.not_(merged) if bf16 else None,
                                     gather16=b.mul(rs, c64(4)) if bf16 else None)
    if bf16:
        apack = aligned_alloca(e, I32, b.mul(b.mul(b.mul(ntiles, ntaps), c64(MR)), rs))
        ctile = aligned_alloca(e, F32, c64(MR * NR))  # a bf16 Y's f32 tile (one K chunk only)
        # each tile's A for the micro-kernel, per tap: (address, row stride in i32 units) of its
        # pairs packed, or of X itself
        a_tab = b.alloca(I64, size=b.mul(b.mul(ntiles, ntaps), c64(2)))
        a_stride, in_place_var = e.var(I64), e.var(ir.IntType(1))

    # ---- compute: chunk -> panel -> tile
    y, ldy, yg = f("y", PTR), f("ldy"), f("yg")
    bias, res, ldr = f("bias", PTR), f("res", PTR), f("ldr")
    bgroup = e.gep(F32, f("bp", PTR), b.mul(g, f("bg")))
    ygroup = e.gep(I8, y, b.mul(b.mul(g, yg), b.select(y_bf16, c64(2), c64(4)) if bf16 else c64(4)))
    bias_g = e.gep(F32, bias, b.mul(g, yg))
    res16 = b.icmp_unsigned("!=", b.and_(f("flags"), c64(FLAG_RES16)), c64(0))
    rbytes = b.select(res16, c64(2), c64(4)) if bf16 else c64(4)
    res_g = e.gep(I8, res, b.mul(b.mul(g, yg), rbytes))
    flags = b.trunc(f("flags"), I32)
    tail = b.and_(f("flags"), c64(_TAIL_BITS))
    pmul, padd = f("pmul", F32), f("padd", F32)
    lo, hi = f("lo", F32), f("hi", F32)
    epi_bits = b.or_(b.select(b.icmp_unsigned("!=", b.and_(flags, c32(FLAG_BIAS)), c32(0)), c32(MODE_BIAS), c32(0)),
                     b.select(b.icmp_unsigned("!=", b.and_(flags, c32(FLAG_RES)), c32(0)), c32(MODE_RES), c32(0)))
    rows_pass = b.icmp_unsigned("!=", tail, c64(0))  # the activation / affine as a pass over the stored tile
    if bf16:
        epi_bits = b.or_(epi_bits, b.select(res16, c32(MODE_RES16), c32(0)))
    else:  # f32: the micro-kernel applies the activations it has and the affine in registers
        code = b.and_(b.lshr(tail, c64(ACT_SHIFT)), c64(0xF))
        known = b.icmp_unsigned("==", code, c64(0))
        for a_ in REGISTER_ACTIVATIONS:
            known = b.or_(known, b.icmp_unsigned("==", code, c64(EPILOGUE_ACTIVATIONS.index(a_))))
        in_regs = b.and_(known, b.icmp_unsigned("==", b.and_(f("flags"), c64(FLAG_ACT_ROWS)), c64(0)))
        epi_bits = b.or_(epi_bits, b.select(in_regs, b.trunc(b.and_(tail, c64((0xF << ACT_SHIFT) | FLAG_AFFINE)), I32),
                                            c32(0)))
        rows_pass = b.and_(rows_pass, b.not_(in_regs))
    if bf16:  # a bf16 Y with nothing after the epilogue: the micro-kernel stores it (no f32 tile)
        direct16 = b.and_(b.icmp_unsigned("==", tail, c64(FLAG_YBF16)),
                          ir.Constant(ir.IntType(1), int(Y16_IN_KERNEL)))
        epi_bits = b.or_(epi_bits, b.select(direct16, c32(MODE_Y16), c32(0)))
        rows_pass = b.and_(rows_pass, b.not_(direct16))
    kdepth = e.cdiv(cin, 2) if bf16 else cin  # B rows per tap, in 4-byte units
    panel_stride = b.mul(b.mul(ntaps, kdepth), c64(NR))
    kend = e.max(cin, c64(1))  # cin == 0 still runs one (empty) chunk to write the epilogue
    with e.loop(0, kend, cb, name="c0") as c0:
        kc = e.max(e.min(cb, b.sub(cin, c0)), c64(0))
        first = b.icmp_signed("==", c0, c64(0))
        last = b.icmp_signed(">=", b.add(c0, cb), cin)
        mode = b.or_(b.select(first, c32(0), c32(MODE_ACC)), b.select(last, b.or_(epi_bits, c32(MODE_FINAL)), c32(0)))
        koff_b = b.mul(b.mul(ntaps, b.sdiv(c0, c64(2)) if bf16 else c0), c64(NR))
        kdepth_c = e.cdiv(kc, 2) if bf16 else kc  # this chunk's B rows per tap, 4-byte units
        if bf16:
            # whole pairs from a 4-byte boundary: an even chunk start and length, X bf16
            in_place_chunk = b.and_(x_bf16, b.icmp_signed("==", b.and_(b.or_(c0, kc), c64(1)), c64(0)))
            in_place_chunk = b.and_(in_place_chunk, ir.Constant(ir.IntType(1), int(A_IN_PLACE)))
            with e.loop(0, ntiles, name="pt") as it:
                p0 = b.add(m0, b.mul(it, per))
                mr = e.min(per, b.sub(m1, p0))
                # the tile's first pixel; its pixels' taps are found from the geometry (no row
                # table: building one cost a 3x3 layer a tenth of its time at one thread)
                img0 = b.udiv(p0, ohw)
                q0 = b.urem(p0, ohw)
                oy0, ox0 = b.udiv(q0, OW), b.urem(q0, OW)
                same_row = b.icmp_signed("<=", b.add(ox0, mr), OW)
                with e.loop(0, ntaps, name="ptap") as tap:
                    slot0 = b.mul(b.add(b.mul(it, ntaps), tap), c64(MR))
                    ent = e.gep(I64, a_tab, b.mul(b.add(b.mul(it, ntaps), tap), c64(2)))
                    ky, kx = b.sdiv(tap, KW), b.srem(tap, KW)
                    # bf16 X whose rows of this tap sit at one stride (a 1x1 convolution, a MatMul,
                    # a tap of a tile inside one output row and the image): the micro-kernel reads
                    # the pairs in place, nothing copied
                    b.store(ir.Constant(ir.IntType(1), 0), in_place_var)
                    with b.if_else(linear) as (lin, other):
                        with lin:  # (ntaps is 1)
                            row0 = e.gep(I8, xgroup_b, b.mul(p0, ldxb))
                            b.store(row0, v_row0)
                            b.store(ldxb, a_stride)
                            aligned = b.icmp_signed("==", b.and_(b.or_(b.ptrtoint(row0, I64), ldxb), c64(3)), c64(0))
                            b.store(b.and_(in_place_chunk, aligned), in_place_var)
                        with other:
                            with b.if_else(merged) as (gathered, taps):
                                with gathered:  # bf16 rows of rs pairs, one chunk
                                    b.store(e.load(PTR, e.gep(PTR, rows, slot0)), v_row0)
                                    b.store(b.mul(rs, c64(4)), a_stride)
                                    b.store(ir.Constant(ir.IntType(1), 1), in_place_var)
                                with taps:
                                    iy = b.add(b.sub(b.mul(oy0, SH), PT), b.mul(ky, DH))
                                    ixf = b.add(b.sub(b.mul(ox0, SW), PL), b.mul(kx, DW))
                                    ixl = b.add(ixf, b.mul(b.sub(mr, c64(1)), SW))
                                    inside = b.and_(b.and_(same_row, b.icmp_unsigned("<", iy, IH)),
                                                    b.and_(b.icmp_signed(">=", ixf, c64(0)), b.icmp_signed("<", ixl, IW)))
                                    with b.if_then(b.and_(in_place_chunk, inside)):
                                        row0 = e.gep(I8, xgroup_b, b.mul(b.add(b.mul(img0, XN),
                                                                             b.mul(b.add(b.mul(iy, IW), ixf), LDX)),
                                                                       xbytes))
                                        stride = b.mul(b.mul(SW, LDX), xbytes)
                                        b.store(row0, v_row0)
                                        b.store(stride, a_stride)
                                        b.store(b.icmp_signed("==", b.and_(b.or_(b.ptrtoint(row0, I64), stride), c64(3)),
                                                              c64(0)), in_place_var)
                    in_place = e.load(ir.IntType(1), in_place_var)
                    with b.if_else(in_place) as (direct, packed_):
                        with direct:
                            row0 = e.load(PTR, v_row0)
                            b.store(b.ptrtoint(e.gep(I16, row0, c0), I64), ent)
                            b.store(b.ashr(e.load(I64, a_stride), c64(2)), e.gep(I64, ent, c64(1)))
                        with packed_:
                            # each row's pixel from the tile's first, advancing (rows may wrap to
                            # the next output row or image)
                            b.store(img0, v_img)
                            b.store(oy0, v_oy)
                            b.store(ox0, v_ox)
                            with e.loop(0, mr, name="pr") as r:
                                slot = b.add(slot0, r)
                                with b.if_else(linear) as (lin, other):
                                    with lin:
                                        b.store(e.gep(I8, xgroup_b, b.mul(b.add(p0, r), ldxb)), v_row0_r)
                                    with other:
                                        img, oy, ox = e.load(I64, v_img), e.load(I64, v_oy), e.load(I64, v_ox)
                                        iy = b.add(b.sub(b.mul(oy, SH), PT), b.mul(ky, DH))
                                        ix = b.add(b.sub(b.mul(ox, SW), PL), b.mul(kx, DW))
                                        ok = b.and_(b.icmp_unsigned("<", iy, IH), b.icmp_unsigned("<", ix, IW))
                                        src = e.gep(I8, xgroup_b, b.mul(b.add(b.mul(img, XN),
                                                                              b.mul(b.add(b.mul(iy, IW), ix), LDX)),
                                                                        xbytes))
                                        b.store(b.select(ok, src, f("zero", PTR)), v_row0_r)
                                        emit_next_pixel(e, v_img, v_oy, v_ox, OH, OW)
                                row = e.load(PTR, v_row0_r)
                                dst = e.gep(I32, apack, b.mul(slot, rs))
                                with b.if_else(x_bf16) as (as_is, convert):
                                    with as_is:
                                        emit_copy_bf16(e, e.gep(I16, row, c0), dst, kc, L)
                                    with convert:
                                        emit_to_bf16(e, e.gep(F32, row, c0), dst, kc, L)
                            b.store(b.ptrtoint(e.gep(I32, apack, b.mul(slot0, rs)), I64), ent)
                            b.store(rs, e.gep(I64, ent, c64(1)))
        with e.loop(j0, j1, name="jp") as jp:
            ncols = e.min(c64(NR), b.sub(N, b.mul(jp, c64(NR))))
            bpan = e.gep(F32, bgroup, b.add(b.mul(jp, panel_stride), koff_b))
            col = b.mul(jp, c64(NR))
            nvec = e.cdiv(ncols, L)
            with e.loop(0, ntiles, name="tile") as it:
                p0 = b.add(m0, b.mul(it, per))
                mr = e.min(per, b.sub(m1, p0))
                tile_slot = b.mul(b.mul(it, ntaps), c64(MR))
                # the next panel of this chunk, or after the last one the next chunk's first
                has_next = b.icmp_signed("<", b.add(jp, c64(1)), j1)
                nxt_chunk = b.icmp_signed("<", b.add(c0, cb), cin)
                kc_next = b.select(has_next, kc, e.max(e.min(cb, b.sub(cin, b.add(c0, cb))), c64(0)))
                nbytes = b.mul(b.mul(b.mul(ntaps, e.cdiv(kc_next, 2) if bf16 else kc_next), c64(NR)), c64(4))
                target = b.select(has_next, e.gep(F32, bpan, panel_stride),
                                  e.gep(F32, bgroup, b.add(b.mul(j0, panel_stride),
                                                           b.add(koff_b, b.mul(b.mul(ntaps, kdepth_c), c64(NR))))))
                pf_addr, pf_lines = c64(0), c64(0)
                # a tile of few k steps prefetches after it, as before (the micro-kernel's
                # bookkeeping cost a 1x1 of 12 -> 96 channels 17%)
                paired = ir.Constant(ir.IntType(1), 0)
                if pair_ukrs is not None:  # weights packed with a k-paired last vector (the last panel's, when narrow)
                    paired = b.and_(b.icmp_unsigned("!=", b.and_(f("flags"), c64(FLAG_PAIRS)), c64(0)),
                                    b.icmp_signed("<=", b.sub(ncols, b.mul(b.sub(nvec, c64(1)), c64(L))),
                                                  c64(L // 2)))
                in_kernel = ir.Constant(ir.IntType(1), 0)
                if PF_IN_KERNEL:  # this tile's slice of the next panel, a line per k step or two
                    in_kernel = b.icmp_signed(">=", b.mul(ntaps, kdepth_c), c64(PF_MIN_STEPS))
                    if not bf16:  # f32: tiles of at least PF_MIN_ROWS rows, not k-paired (pf_ukrs)
                        in_kernel = b.and_(b.and_(in_kernel, b.icmp_signed(">=", mr, c64(min(PF_MIN_ROWS, MR)))),
                                           b.not_(paired))
                    lines = b.select(b.and_(in_kernel, b.or_(has_next, nxt_chunk)), e.cdiv(nbytes, 64), c64(0))
                    per_t = e.cdiv(lines, e.max(ntiles, c64(1)))
                    l0 = b.mul(it, per_t)
                    pf_lines = e.max(b.sub(e.min(lines, b.add(l0, per_t)), l0), c64(0))
                    pf_addr = b.ptrtoint(e.gep(I8, target, b.mul(l0, c64(64))), I64)
                if bf16:
                    a_args = [e.gep(I64, a_tab, b.mul(b.mul(it, ntaps), c64(2))), ntaps, pf_addr, e.cdiv(kc, 2)]
                else:
                    a_args = [e.gep(PTR, rows, tile_slot), ntaps, c0, kc]
                cptr = e.gep(F32, ygroup, b.add(b.mul(p0, ldy), col))
                ctarget, ldc = cptr, ldy
                y16p = e.gep(I16, ygroup, b.add(b.mul(p0, ldy), col)) if bf16 else None
                if bf16:  # a bf16 Y: the tile in f32 on the stack first, then the tail writes Y
                    ctarget = b.select(direct16, y16p, b.select(y_bf16, ctile, cptr))
                    ldc = b.select(b.and_(y_bf16, b.not_(direct16)), c64(NR), ldy)
                args = [*a_args, bpan, ctarget, ldc, ncols, mode,
                        e.gep(F32, bias_g, col), e.gep(I8, res_g, b.mul(b.add(b.mul(p0, ldr), col), rbytes)), ldr,
                        lo, hi, pf_lines if bf16 else c64(1), ir.Constant(F32, 1.0)] + \
                    ([] if bf16 else [pmul, padd, pf_addr, pf_lines])

                def plain_call() -> None:
                    if pair_ukrs is None:
                        call_microkernel(e, ukrs, MR, mr, nvec, args)
                    else:
                        with b.if_else(paired) as (two_k, one_k):
                            with two_k:
                                call_microkernel(e, pair_ukrs, MR, mr, nvec, args)
                            with one_k:
                                call_microkernel(e, ukrs, MR, mr, nvec, args)

                if pf_ukrs is not None and PF_IN_KERNEL:  # f32: full tiles that prefetch
                    with b.if_else(in_kernel) as (pf_call, other_call):
                        with pf_call:
                            call_microkernel(e, pf_ukrs, MR, mr, nvec, args)
                        with other_call:
                            plain_call()
                else:
                    plain_call()
                # the k-paired kernels (or with the knob off): the slice after the tile
                after = b.or_(paired, b.not_(in_kernel))
                with b.if_then(b.and_(after, b.or_(has_next, nxt_chunk))):
                    emit_prefetch_slice(e, target, nbytes, it, ntiles, PREFETCH_LINES_PER_TILE)
                ydst = b.select(y_bf16, y16p, cptr) if bf16 else cptr
                with b.if_then(b.and_(last, rows_pass)):
                    b.call(act, [ctarget, ldc, ydst, ldy, mr, ncols, tail, pmul, padd])
    b.ret_void()


def _build_module(prefix: str, isa: Isa, tile: Tile, bf16: bool = False, pairs: bool = False) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    always_mask = isa.level == "avx512"
    kind = UkrKind("bf16tab" if bf16 else "rows")
    ukrs = {(r, v): emit_microkernel(m, f"{prefix}_ukr_{r}x{v}", tile, r, v, always_mask, kind, tail=not bf16)
            for v in range(1, tile.nv + 1) for r in range(1, tile.mr + 1)}
    pair_ukrs = None
    if pairs:
        pair_ukrs = {(r, v): emit_microkernel(m, f"{prefix}_ukr_{r}x{v}p", tile, r, v, always_mask, kind, pairs=True,
                                              tail=True)
                     for v in range(1, tile.nv + 1) for r in range(1, PAIR_MR + 1)}
    pf_ukrs = None
    if not bf16:  # tiles of many k steps prefetch the next panel with these (bf16 micro-kernels all do):
        # the balanced tiles of PF_MIN_ROWS rows or more (a full set doubled the module's compile time)
        pf_ukrs = {(r, v): emit_microkernel(m, f"{prefix}_ukr_{r}x{v}pf", tile, r, v, always_mask, kind, tail=True,
                                            prefetch=True)
                   for v in range(1, tile.nv + 1) for r in range(min(PF_MIN_ROWS, tile.mr), tile.mr + 1)}
    act = emit_activation_rows(m, f"{prefix}_act", tile.lanes, bf16_out=bf16)
    _emit_igemm_task(m, f"{prefix}_igemm_task", tile, ukrs, act, bf16, pair_ukrs, pf_ukrs)
    return m


class Precision(StrEnum):
    """Arithmetic of a GEMM or convolution: ``F32``, or ``BF16`` (inputs rounded to bf16,
    products and sums in f32; needs AVX512_BF16, see :func:`bf16_supported`)."""

    F32 = "f32"
    BF16 = "bf16"


def as_precision(precision: Precision | str) -> Precision:
    """``precision`` as a :class:`Precision` (accepts ``"f32"``/``"bf16"``, any case)."""
    try:
        return Precision(str(getattr(precision, "value", precision)).lower())
    except ValueError:
        raise EmberError(f"ember: unknown kernel precision {precision!r}; known: f32, bf16") from None


def bf16_supported(isa: Isa | None = None) -> bool:
    """Whether ``isa`` (default: the host's) runs the bf16 kernels (AVX-512 with AVX512_BF16)."""
    isa = isa or host_isa()
    return isa.level == "avx512" and isa.bf16


def check_bf16(isa: Isa) -> None:
    if not bf16_supported(isa):
        raise EmberError(f"ember: bf16 kernels need AVX512_BF16, which ISA level {isa.level!r} on "
                         f"{isa.cpu} lacks; use precision='f32' (check bf16_supported() first)")


class IGemmKernels:
    """The compiled implicit-GEMM module for one ISA level and precision; with ``pairs`` (f32
    on AVX-512) the module that also has the k-paired micro-kernels (for weights packed with
    ``pair_tail``), compiled only when such weights are first used."""

    def __init__(self, isa: Isa, precision: Precision | str = Precision.F32, pairs: bool = False):
        self.isa = isa
        self.precision = as_precision(precision)
        self.tile = TILES[isa.level]
        t = self.tile
        bf16 = self.precision is Precision.BF16
        if bf16:
            check_bf16(isa)
        if pairs and (bf16 or not pairs_supported(isa)):
            raise EmberError("ember: k-paired micro-kernels are f32 on AVX-512 only")
        name = "igemm-bf16" if bf16 else "igemm-pairs" if pairs else "igemm"
        sig = f"{name}|{isa.level}|mr{t.mr}|nv{t.nv}|l{t.lanes}|u{t.unroll}|act{len(EPILOGUE_ACTIVATIONS)}a|io16r2"
        if not bf16:
            sig += "|reg-" + "-".join(REGISTER_ACTIVATIONS) + f"|pfk{int(PF_IN_KERNEL)}-{PF_MIN_STEPS}-{PF_MIN_ROWS}"
        if pairs:
            sig += f"|pmr{PAIR_MR}"
        if bf16:  # the knobs that change the bf16 task's IR (the kernel cache keys on it)
            sig += f"|aip{int(A_IN_PLACE)}|y16k{int(Y16_IN_KERNEL)}|tab|pfk{int(PF_IN_KERNEL)}-{PF_MIN_STEPS}"
        self.lib = jit.load(sig, isa, lambda p: _build_module(p, isa, t, bf16, pairs))
        self.task_address = self.lib.address("igemm_task")


@functools.cache
def _kernels_for(isa: Isa, precision: Precision, pairs: bool = False) -> IGemmKernels:
    return IGemmKernels(isa, precision, pairs)


def pairs_supported(isa: Isa) -> bool:
    """Whether the f32 implicit GEMM has k-paired micro-kernels on ``isa`` (AVX-512): see
    :class:`PackedWeights` ``pair_tail``."""
    return isa.level == "avx512"


def igemm_kernels(isa: Isa | None = None, precision: Precision | str = Precision.F32,
                  pairs: bool = False) -> IGemmKernels:
    """The implicit-GEMM kernels for ``isa`` (default: the host's best, see ``EMBER_CPU_ISA``);
    ``pairs``: the module with the k-paired micro-kernels too (see :class:`IGemmKernels`)."""
    return _kernels_for(isa or host_isa(), as_precision(precision), pairs)


# --------------------------------------------------------------------------- AMX tiles
def _emit_f32_epilogue(m: ir.Module, name: str) -> ir.Function:
    """epi(cbuf, mr, ncols, y, ldy, bias, res, ldr, lo, hi, flags): the f32 GEMM epilogue
    (+ bias, + residual, clamp) for ``mr`` rows of a 32 x 32 f32 block in ``cbuf``, written to
    ``y`` as f32, or as bf16 (round to nearest even) when the tail bits of ``flags`` are
    FLAG_YBF16 alone (no activation or affine to run after it). One row loop per residual kind,
    bound and output type, so that no flag is tested per row."""

    fn = Emitter.function(m, name, VOID, [PTR, I64, I64, PTR, I64, PTR, PTR, I64, F32, F32, I64],
                          internal=True, noinline=True)
    cbuf, mr, ncols, yp, ldy, biasp, resp, ldr, lo, hi, flags = fn.args
    e = Emitter(m, fn)
    b = e.b
    L, nv = AMX_TILE.lanes, AMX_TILE.nv
    vf = vec(F32, L)
    masks = [lane_mask(e, b.sub(ncols, c64(v * L)), L) for v in range(nv)]
    bias = [e.var(vf, ir.Constant(vf, None)) for _ in range(nv)]
    with b.if_then(b.icmp_unsigned("!=", b.and_(flags, c64(FLAG_BIAS)), c64(0))):
        for v in range(nv):
            b.store(masked_load(e, vf, e.gep(F32, biasp, v * L), masks[v]), bias[v])
    bv = [e.load(vf, x) for x in bias]
    has_res = b.icmp_unsigned("!=", b.and_(flags, c64(FLAG_RES)), c64(0))
    res16 = b.icmp_unsigned("!=", b.and_(flags, c64(FLAG_RES16)), c64(0))
    res_kind = b.select(has_res, b.select(res16, c64(2), c64(1)), c64(0))
    lo_b = b.zext(b.fcmp_ordered("!=", lo, ir.Constant(F32, -math.inf)), I64)
    hi_b = b.zext(b.fcmp_ordered("!=", hi, ir.Constant(F32, math.inf)), I64)
    out16 = b.zext(b.icmp_unsigned("==", b.and_(flags, c64(_TAIL_BITS)), c64(FLAG_YBF16)), I64)
    key = b.or_(b.or_(res_kind, b.shl(lo_b, c64(2))), b.or_(b.shl(hi_b, c64(3)), b.shl(out16, c64(4))))
    vlo, vhi = e.splat(lo, L), e.splat(hi, L)
    done = fn.append_basic_block("epi.done")
    sw_ = b.switch(key, done)
    for kind in range(3):
        for clo in (False, True):
            for chi in (False, True):
                for o16 in (False, True):
                    blk = fn.append_basic_block(f"epi.{kind}{int(clo)}{int(chi)}{int(o16)}")
                    sw_.add_case(c64(kind | clo << 2 | chi << 3 | o16 << 4), blk)
                    b.position_at_end(blk)
                    with e.loop(0, mr, name="er") as r:
                        crow = e.gep(F32, cbuf, b.mul(r, c64(AMX_TILE.nr)))
                        out = [b.fadd(e.load(vf, e.gep(F32, crow, v * L), align=64), bv[v]) for v in range(nv)]
                        if kind == 2:
                            rrow = e.gep(I16, resp, b.mul(r, ldr))
                            out = [b.fadd(out[v], load_bf16(e, e.gep(I16, rrow, v * L), masks[v], L)) for v in range(nv)]
                        elif kind == 1:
                            rrow = e.gep(F32, resp, b.mul(r, ldr))
                            out = [b.fadd(out[v], masked_load(e, vf, e.gep(F32, rrow, v * L), masks[v]))
                                   for v in range(nv)]
                        if clo:  # NaN passes the clamp unchanged
                            out = [b.select(b.fcmp_ordered("<", x, vlo), vlo, x) for x in out]
                        if chi:
                            out = [b.select(b.fcmp_ordered(">", x, vhi), vhi, x) for x in out]
                        if o16:
                            yrow = e.gep(I16, yp, b.mul(r, ldy))
                            for v in range(nv):
                                store_bf16(e, out[v], e.gep(I16, yrow, v * L), masks[v])
                        else:
                            yrow = e.gep(F32, yp, b.mul(r, ldy))
                            for v in range(nv):
                                masked_store(e, out[v], e.gep(F32, yrow, v * L), masks[v])
                    b.branch(done)
    b.position_at_end(done)
    b.ret_void()
    return fn


AMX_PREFETCH = 4  # B panels (24 KB each at K = 384) prefetched ahead of the first row tile
#: bytes of weights the first tile of a group prefetches ahead of the step it multiplies (0: whole
#: panels, AMX_PREFETCH ahead, at the start of each), and for a task of one row tile (a batch-1
#: classifier: nothing but weight streaming, so further ahead). One thread, weights cold, 16 KB
#: against 128 KB: 0.90-1.0 at 49-196 rows (ResNet-50's layers 3-4), 0.92-0.99 at 128 rows; one
#: row: 128 KB (16 KB was 1.04-1.12)
AMX_PF_DIST, AMX_PF_DIST_ONE_TILE = 16 << 10, 128 << 10
#: the most bytes of converted A rows a task holds at once: a group of row tiles that each B panel
#: serves in turn (M = 128 at K = 384: all four tiles, 96 KB), kept inside L2 (2 MB)
AMX_GROUP_BYTES = 1 << 20
#: B panels up to this size stay in L1 (48 KB) next to one tile's A; a task's panels beyond
#: AMX_L2_WEIGHTS bytes would come from L3 or memory once per tile
AMX_L1_PANEL, AMX_L2_WEIGHTS = 32 << 10, 1 << 20


def _emit_bf16_task(m: ir.Module, name: str, epi: ir.Function, act: ir.Function) -> None:

    fn = Emitter.function(m, name, VOID, [PTR, I64])
    e = ContextEmitter(m, fn, IGEMM_CONTEXT)
    b = e.b
    a = e.arg
    MR, NR, H, L = AMX_TILE.mr, AMX_TILE.nr, TILE_ROWS, AMX_TILE.lanes
    M, N = a("m"), a("cout")
    blk = task_block(e, fn.args[1], a("gm"), a("gn"), a("tm"), a("tn"), M, N, AMX_TILE)
    g, m0, m1, j0, j1, ntiles = blk.outer, blk.m0, blk.m1, blk.j0, blk.j1, blk.ntiles
    x_bf16 = b.icmp_unsigned("!=", b.and_(a("flags"), c64(FLAG_XBF16)), c64(0))
    y_bf16 = b.icmp_unsigned("!=", b.and_(a("flags"), c64(FLAG_YBF16)), c64(0))
    # a 1x1 convolution at unit stride without padding, or GEMM rows: row p of X is at x + p ldx,
    # so bf16 tiles are read in place without a row table
    linear = emit_linear_rows(e, a, M)
    TRUE, FALSE = ir.Constant(ir.IntType(1), 1), ir.Constant(ir.IntType(1), 0)
    in_place = b.and_(x_bf16, b.and_(b.icmp_signed("==", a("merge"), c64(0)),
                                     b.icmp_signed("==", a("cin"), b.mul(a("ktap"), c64(2)))))
    # linear rows that are copied (f32 X converted, or a padded K): no row table either
    lin_copy = b.and_(b.and_(linear, b.icmp_signed("==", a("merge"), c64(0))), b.not_(in_place))
    linear = b.and_(linear, in_place)
    rsb = b.mul(e.cdiv(b.mul(a("ktap"), c64(4)), 64), c64(64))  # bytes of a converted row: ktap bf16 pairs
    # a stem's taps (merged into one row per pixel) are gathered as bf16 rows of rsb bytes
    merged = b.icmp_signed("!=", a("merge"), c64(0))
    rows, ntaps, cin = emit_f32_rows(e, a, blk, AMX_TILE, b.select(x_bf16, c64(2), c64(4)),
                                     skip=b.or_(in_place, lin_copy), gather16=rsb)
    xe = b.select(x_bf16, c64(2), c64(4))
    xgx = e.gep(I8, a("x", PTR), b.mul(b.mul(g, a("xg")), xe))
    ldx2 = b.mul(a("ldx"), c64(2))
    xg16 = e.gep(I8, a("x", PTR), b.mul(b.mul(g, a("xg")), c64(2)))
    kq, nck, ktap = a("kq"), a("nck"), a("ktap")
    qbytes = b.mul(kq, c64(4))
    # a group of row tiles converted at once (as many as AMX_GROUP_BYTES of A rows hold, at least
    # one), so that the B panels run outside the group's tiles: when a panel fits L1 next to a
    # tile's A (AMX_L1_PANEL) but the task's panels do not, or the task's panels do not fit L2
    # (AMX_L2_WEIGHTS); otherwise a tile's A stays in L1 over the panels (one tile per group:
    # a stem's or a 1x1's few small panels, 1.05-1.07x grouped)
    panel_b = b.mul(b.mul(ntaps, ktap), c64(4 * NR))
    task_w = b.mul(b.sub(j1, j0), panel_b)
    grouped = b.or_(b.and_(b.icmp_signed("<=", panel_b, c64(AMX_L1_PANEL)),
                           b.icmp_signed(">", task_w, c64(2 * AMX_L1_PANEL))),
                    b.icmp_signed(">", task_w, c64(AMX_L2_WEIGHTS)))
    tg = e.max(c64(1), e.min(b.select(grouped, ntiles, c64(1)),
                             b.sdiv(c64(AMX_GROUP_BYTES), b.mul(b.mul(ntaps, c64(MR)), rsb))))
    apack = aligned_alloca(e, I8, b.mul(tg, b.mul(b.mul(ntaps, c64(MR)), rsb)))
    # each (tile of the group, tap, half): where its A tile is loaded from, and the row stride
    aptr = b.alloca(PTR, size=b.mul(tg, b.mul(ntaps, c64(2))))
    alds = b.alloca(I64, size=b.mul(tg, b.mul(ntaps, c64(2))))
    cbuf = aligned_alloca(e, F32, c64(MR * NR))
    emit_tile_config(e, qbytes, kq)

    y, ldy, yg = a("y", PTR), a("ldy"), a("yg")
    ldr = a("ldr")
    ygroup = e.gep(I8, y, b.mul(b.mul(g, yg), b.select(y_bf16, c64(2), c64(4))))
    bias_g = e.gep(F32, a("bias", PTR), b.mul(g, yg))
    rbytes = b.select(b.icmp_unsigned("!=", b.and_(a("flags"), c64(FLAG_RES16)), c64(0)), c64(2), c64(4))
    res_g = e.gep(I8, a("res", PTR), b.mul(b.mul(g, yg), rbytes))
    bgroup = e.gep(I32, a("bp", PTR), b.mul(g, a("bg")))
    tap_bytes = b.mul(ktap, c64(4 * NR))
    panel_bytes = b.mul(ntaps, tap_bytes)
    lo, hi, flags = a("lo", F32), a("hi", F32), a("flags")
    tail = b.and_(flags, c64(_TAIL_BITS))
    direct16 = b.icmp_unsigned("==", tail, c64(FLAG_YBF16))  # the epilogue writes the bf16 Y itself
    pmul, padd = a("pmul", F32), a("padd", F32)
    b_stride = c64(4 * NR)
    step_bytes = b.mul(kq, c64(4 * NR))

    # the first group of row tiles reads each B panel from memory (a layer's weights, once per
    # inference): keep AMX_PREFETCH panels in flight ahead of it (into L2)
    b_start = e.gep(I8, bgroup, b.mul(j0, panel_bytes))
    b_end = e.gep(I8, bgroup, b.mul(j1, panel_bytes))
    task_b = b.mul(b.sub(j1, j0), panel_bytes)
    pf_dist = b.select(b.icmp_signed("<=", ntiles, c64(1)), c64(AMX_PF_DIST_ONE_TILE), c64(AMX_PF_DIST))
    if AMX_PF_DIST:
        emit_prefetch_slice(e, b_start, e.min(task_b, pf_dist), c64(0), c64(1))
    else:
        emit_prefetch_slice(e, b_start, b.mul(b.sub(e.min(j1, b.add(j0, c64(AMX_PREFETCH))), j0), panel_bytes),
                            c64(0), c64(1))
    row_tiles = b.mul(b.mul(ntaps, c64(MR)), rsb)  # bytes of one tile's converted A rows

    def block(two_m: bool, two_n: bool, jp: ir.Value, lt: ir.Value, pf: ir.Value) -> None:
        for t in C_TILES:
            tile_zero(e, t)
        bpan = e.gep(I8, bgroup, b.mul(jp, panel_bytes))
        with e.loop(0, ntaps, name="ctap") as tap:
            slot = b.mul(b.add(b.mul(lt, ntaps), tap), c64(2))
            pa = [e.load(PTR, e.gep(PTR, aptr, b.add(slot, c64(h)))) for h in range(2)]
            lda = [e.load(I64, e.gep(I64, alds, b.add(slot, c64(h)))) for h in range(2)]
            bt = e.gep(I8, bpan, b.mul(tap, tap_bytes))
            with e.loop(0, nck, name="kc") as c:
                aoff = b.mul(c, qbytes)
                bc = e.gep(I8, bt, b.mul(c, step_bytes))
                if AMX_PF_DIST:  # the first tile of a group streams the weights pf_dist ahead
                    ahead = e.gep(I8, bc, pf_dist)
                    with b.if_then(b.and_(pf, b.icmp_unsigned("<", b.ptrtoint(ahead, I64), b.ptrtoint(b_end, I64)))):
                        with e.loop(0, step_bytes, 64, name="pfk") as ln:
                            e.call("llvm.prefetch.p0", VOID, [e.gep(I8, ahead, ln), c32(0), c32(2), c32(1)])
                tile_load(e, A_TILES[0], e.gep(I8, pa[0], aoff), lda[0])
                if two_m:
                    tile_load(e, A_TILES[1], e.gep(I8, pa[1], aoff), lda[1])
                tile_load(e, B_TILES[0], bc, b_stride)
                if two_n:
                    tile_load(e, B_TILES[1], e.gep(I8, bc, 64), b_stride)
                for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
                    if (i and not two_m) or (j and not two_n):
                        continue
                    tile_dot(e, "tdpbf16ps", C_TILES[2 * i + j], A_TILES[i], B_TILES[j])

    pending = {k: e.var(I64, c64(-1 if k == "mr" else 0)) for k in ("mr", "ncols", "p0", "col")}

    def finish_pending() -> None:
        """The epilogue of the last stored block (if any), from ``cbuf``."""
        mr = e.load(I64, pending["mr"])
        with b.if_then(b.icmp_signed(">=", mr, c64(0))):
            ncols, p0, col = (e.load(I64, pending[k]) for k in ("ncols", "p0", "col"))
            yblk = e.gep(F32, ygroup, b.add(b.mul(p0, ldy), col))
            ydst = b.select(y_bf16, e.gep(I16, ygroup, b.add(b.mul(p0, ldy), col)), yblk)
            # a bf16 Y: the epilogue stores it (nothing after the clamp), or runs in place in
            # the f32 block and the tail writes Y
            etarget = b.select(direct16, ydst, b.select(y_bf16, cbuf, yblk))
            lde = b.select(b.and_(y_bf16, b.not_(direct16)), c64(NR), ldy)
            b.call(epi, [cbuf, mr, ncols, etarget, lde,
                         e.gep(F32, bias_g, col), e.gep(I8, res_g, b.mul(b.add(b.mul(p0, ldr), col), rbytes)),
                         ldr, lo, hi, flags])
            with b.if_then(b.and_(b.icmp_unsigned("!=", tail, c64(0)), b.not_(direct16))):
                b.call(act, [etarget, lde, ydst, ldy, mr, ncols, tail, pmul, padd])
        b.store(c64(-1), pending["mr"])

    with e.loop(0, e.cdiv(ntiles, tg), name="tgrp") as grp:
        t0 = b.mul(grp, tg)
        t1 = e.min(ntiles, b.add(t0, tg))
        # the group's A: where X is bf16 and a tap's K fills whole tile steps, each half tile
        # (16 rows of a tap) is read in place when its rows are uniformly strided (1x1
        # convolutions and GEMM rows; a 3x3's 16 pixels inside one output row and the image),
        # found from the geometry with no row table; vector stores right before a tile load of
        # the same lines stall it. Other halves (and f32 X) are copied (converted) to bf16 pairs
        # in apack, [tile][tap][half][16 rows][rsb bytes], zero padded; rows past a tile's mr
        # stay unread garbage (their C rows are not stored)
        with e.loop(t0, t1, name="atile") as it:
            mr = e.min(c64(MR), b.sub(m1, b.add(m0, b.mul(it, c64(MR)))))
            abase = e.gep(I8, apack, b.mul(b.sub(it, t0), row_tiles))
            with b.if_then(b.and_(in_place, b.not_(linear))):  # the halves' taps from the geometry
                for h in range(2):
                    with b.if_then(b.icmp_signed(">", b.sub(mr, c64(h * H)), c64(0))):
                        tap_descriptors(e, xg16, b.add(b.add(m0, b.mul(it, c64(MR))), c64(h * H)), b.sub(it, t0), h,
                                        ntaps, TRUE, FALSE, aptr, alds, apack, rsb, b.mul(cin, c64(2)), elem=2)
            with e.loop(0, ntaps, name="atap") as tap:
                for h in range(2):
                    hrows = b.sub(mr, c64(h * H))
                    slot = b.add(b.mul(b.add(b.mul(b.sub(it, t0), ntaps), tap), c64(2)), c64(h))
                    tab = e.gep(PTR, rows, b.add(b.mul(b.add(b.mul(it, ntaps), tap), c64(MR)), c64(h * H)))
                    with b.if_then(b.and_(linear, b.icmp_signed(">", hrows, c64(0)))):
                        xhalf = e.gep(I8, xg16, b.mul(b.add(b.add(m0, b.mul(it, c64(MR))), c64(h * H)), ldx2))
                        with b.if_else(b.icmp_signed(">=", hrows, c64(H))) as (whole, part):
                            with whole:
                                b.store(xhalf, e.gep(PTR, aptr, slot))
                                b.store(ldx2, e.gep(I64, alds, slot))
                            with part:  # the last rows: a tile load must not read past X
                                hbase = e.gep(I8, abase, b.mul(b.add(b.mul(tap, c64(MR)), c64(h * H)), rsb))
                                b.store(hbase, e.gep(PTR, aptr, slot))
                                b.store(rsb, e.gep(I64, alds, slot))
                                with e.loop(0, hrows, name=f"lr{h}") as r:
                                    emit_copy_bf16(e, e.gep(I8, xhalf, b.mul(r, ldx2)),
                                                   e.gep(I8, hbase, b.mul(r, rsb)), cin, L)
                    with b.if_then(b.and_(merged, b.icmp_signed(">", hrows, c64(0)))):
                        # a stem's gathered bf16 rows, all of the tiles' rows on the stack
                        b.store(e.load(PTR, tab), e.gep(PTR, aptr, slot))
                        b.store(rsb, e.gep(I64, alds, slot))
                    with b.if_then(b.and_(b.not_(b.or_(in_place, merged)), b.icmp_signed(">", hrows, c64(0)))):
                        hbase = e.gep(I8, abase, b.mul(b.add(b.mul(tap, c64(MR)), c64(h * H)), rsb))
                        b.store(hbase, e.gep(PTR, aptr, slot))
                        b.store(rsb, e.gep(I64, alds, slot))
                        with e.loop(0, e.min(hrows, c64(H)), name=f"ar{h}") as r:
                            xr = b.add(b.add(b.add(m0, b.mul(it, c64(MR))), c64(h * H)), r)
                            src = b.select(lin_copy, e.gep(I8, xgx, b.mul(b.mul(xr, a("ldx")), xe)),
                                           e.load(PTR, e.gep(PTR, tab, r)))
                            dst = e.gep(I8, hbase, b.mul(r, rsb))
                            with b.if_else(x_bf16) as (as_is, convert):
                                with as_is:
                                    emit_copy_bf16(e, src, dst, cin, L)
                                with convert:
                                    emit_to_bf16(e, src, dst, cin, L)

        # panels outside the group's tiles: each panel is read from L2 (or memory) once per
        # group and stays in L1 for the group's other tiles
        with e.loop(j0, j1, name="jp") as jp:
            col = b.mul(jp, c64(NR))
            ncols = e.min(c64(NR), b.sub(N, col))
            if not AMX_PF_DIST:
                ahead = b.add(jp, c64(AMX_PREFETCH))
                with b.if_then(b.icmp_signed("<", ahead, j1)):
                    emit_prefetch_slice(e, e.gep(I8, bgroup, b.mul(ahead, panel_bytes)), panel_bytes, c64(0), c64(1))
            with e.loop(t0, t1, name="tile") as it:
                p0 = b.add(m0, b.mul(it, c64(MR)))
                mr = e.min(c64(MR), b.sub(m1, p0))
                lt = b.sub(it, t0)
                # prefetching: the group's first tile, in the first group or when the task's
                # weights do not stay in L2 between groups
                pf = b.and_(b.icmp_signed("==", lt, c64(0)),
                            b.or_(b.icmp_signed("==", grp, c64(0)), b.icmp_signed(">", task_b, c64(AMX_L2_WEIGHTS))))
                two_by_two(e, b.icmp_signed(">", mr, c64(H)), b.icmp_signed(">", ncols, c64(16)),
                           lambda tm_, tn_: block(tm_, tn_, jp, lt, pf))
                # the previous block's epilogue runs while this block's products are computed
                # (its C tiles stay in their registers until then): a block's stored tiles are
                # read a block later, not right after the tile store
                finish_pending()
                two_m, two_n = b.icmp_signed(">", mr, c64(H)), b.icmp_signed(">", ncols, c64(16))
                ldc = c64(4 * NR)
                for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):  # only the tiles the block used
                    cond = [two_m] * i + [two_n] * j
                    with b.if_then(functools.reduce(b.and_, cond, ir.Constant(ir.IntType(1), 1))):
                        tile_store(e, C_TILES[2 * i + j], e.gep(I8, cbuf, (i * H * NR + j * 16) * 4), ldc)
                for key, val in (("mr", mr), ("ncols", ncols), ("p0", p0), ("col", col)):
                    b.store(val, pending[key])
    finish_pending()
    tile_release(e)
    b.ret_void()


def _build_bf16(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    epi = _emit_f32_epilogue(m, f"{prefix}_epi")
    _emit_bf16_task(m, f"{prefix}_bf16_task", epi, emit_activation_rows(m, f"{prefix}_act", AMX_TILE.lanes, True))
    return m


class AmxBf16Kernels:
    """The compiled AMX bf16 module (``bf16_task`` over ``IGEMM_CONTEXT``, f32 epilogue)."""

    def __init__(self, isa: Isa):
        if not isa.amx_bf16:
            raise EmberError(f"ember: the AMX bf16 kernels need AMX tiles, which ISA {isa.level!r} here lacks")
        self.isa = isa
        self.lib = jit.load(f"amx-bf16|mr32|nr32|act{len(EPILOGUE_ACTIVATIONS)}a|io16r2|g{AMX_GROUP_BYTES}-{AMX_L1_PANEL}x2-{AMX_L2_WEIGHTS}|pf{AMX_PF_DIST}-{AMX_PF_DIST_ONE_TILE}", isa, lambda p: _build_bf16(p, isa))
        self.task_address = self.lib.address("bf16_task")


@functools.cache
def amx_bf16_kernels(isa: Isa) -> AmxBf16Kernels:
    """The AMX bf16 kernels for ``isa`` (which must have ``amx_bf16``)."""
    return AmxBf16Kernels(isa)


# --------------------------------------------------------------------------- weights
def default_chunk(ntaps: int, cin: int, precision: Precision | str = Precision.F32) -> int:
    """Channels per K chunk: keeps one packed micro-panel (taps x chunk x NR) near 64 KB.

    bf16 chunks are twice as long (half the bytes per channel) and even, so that every
    chunk but the last holds whole k pairs."""
    if as_precision(precision) is Precision.BF16:
        c = max(16, 1024 // max(ntaps, 1))
        return max(1, cin if c >= cin else c - c % 2)
    return max(1, min(cin, max(16, 512 // max(ntaps, 1))))


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """The bf16 bit patterns (uint16) of float32 ``x``, rounded to nearest even (as the
    hardware converts); NaN stays NaN (quieted), values beyond bf16's range become inf."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    # in place where possible: weights are packed through here a block at a time
    rounded = bits >> np.uint32(16)
    rounded &= np.uint32(1)
    rounded += np.uint32(0x7FFF)
    rounded += bits
    rounded >>= np.uint32(16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if nan.any():
        rounded[nan] = (bits[nan] >> np.uint32(16)) | np.uint32(0x40)
    return rounded.astype(np.uint16)


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to bf16 precision, as float32 (the values the bf16 kernels multiply)."""
    return (to_bf16_bits(x).astype(np.uint32) << np.uint32(16)).view(np.float32)


@dataclass(frozen=True)
class PackedWeights:
    """Weights packed for the micro-kernel.

    f32: ``[groups][panels][chunks][taps][chunk][NR]`` floats. bf16:
    ``[groups][panels][chunks][taps][chunk / 2][NR][2]`` bf16 bits (uint16; channel pairs,
    an odd last chunk padded with zero). ``data`` is flat and 64-byte aligned;
    ``group_stride`` is its length per group, in elements of ``data``.
    With ``merged_taps > 1`` the taps are folded into K (``taps == 1``, ``cin`` = taps x
    channels, tap-major): the kernel gathers each output pixel's taps into one row first,
    which suits convolutions with few input channels (a network's stem).
    bf16 for AMX tiles (``amx``, when the ISA has ``amx_bf16``): one chunk of all of K, its
    pairs zero padded to ``ktap`` per tap (whole tile steps, see
    :func:`~ember.devices.cpu.kernels.amx.amx_split`).
    ``pair_tail`` (f32): the last panel's last vector holds at most lanes / 2 columns, stored
    k-paired (see :func:`emit_microkernel`'s ``pairs``): a 24-channel output runs 3/4 of the
    FMAs of two full vectors.
    """

    data: np.ndarray
    groups: int
    taps: int
    cin: int
    cout: int
    chunk: int
    nr: int
    isa: Isa
    precision: Precision = Precision.F32
    merged_taps: int = 1
    amx: bool = False
    ktap: int = 0
    pair_tail: bool = False

    @property
    def elem_bytes(self) -> int:
        """Bytes an element of A and B takes in the kernel (2 for bf16, 4 for f32): the block plan's unit."""
        return 2 if self.precision is Precision.BF16 else 4

    @property
    def taps_per_row(self) -> int:
        """Kernel taps behind one packed row of K: ``taps``, or the merged count."""
        return self.taps * self.merged_taps

    @property
    def group_stride(self) -> int:
        return self.data.size // self.groups


#: f32 bytes of weights packed at once (the temporaries are a few times this)
PACK_BLOCK = 256 << 10
_F32_TINY = np.float32(np.finfo(np.float32).tiny)


def flush_subnormals(w: np.ndarray) -> np.ndarray:
    """Set ``w``'s subnormal float32 values to zero, in place (and return it). Packed weights
    hold none: an FMA with a subnormal operand takes a microcode assist, and trained weights
    have them (PP-OCRv4 rec's SE convolutions: 31k; its 480 -> 120 one ran 11x slower than
    with them zeroed; OpenVINO's layer does not pay it). Each product with one was below
    1.2e-38 times its input."""
    w[np.abs(w) < _F32_TINY] = 0
    return w


def pack_weights(w: np.ndarray, isa: Isa | None = None, chunk: int | None = None,
                 precision: Precision | str = Precision.F32, merge_taps: bool = False,
                 pair_tail: bool = False) -> PackedWeights:
    """Pack ``w[groups, taps, cin, cout]`` (float32) for the micro-kernel of ``isa``.

    ``precision="bf16"`` rounds the weights to bf16 (nearest even) and packs channel pairs;
    it raises :class:`~ember.errors.EmberError` when ``isa`` lacks AVX512_BF16.
    ``merge_taps`` folds the taps into K (see :class:`PackedWeights`). ``pair_tail`` packs a
    narrow last vector k-paired (f32 on AVX-512 only, when the last vector has at most half
    its lanes; otherwise ignored: see ``PackedWeights.pair_tail``)."""
    isa = isa or host_isa()
    prec = as_precision(precision)
    bf16 = prec is Precision.BF16
    if bf16:
        check_bf16(isa)
    tile = TILES[isa.level]
    w = np.asarray(w, np.float32)
    if w.ndim != 4:
        raise EmberError(f"ember: pack_weights wants w[groups, taps, cin, cout], got shape {w.shape}")
    merged = 1
    if merge_taps and w.shape[1] > 1:
        merged = w.shape[1]
        w = w.reshape(w.shape[0], 1, -1, w.shape[3])
    groups, taps, cin, cout = w.shape
    nr = tile.nr
    npan = -(-cout // nr)
    amx = bf16 and isa.amx_bf16 and cin > 0 and fits_stack(taps, 4 * amx_split(-(-cin // 2))[2])
    ktap = amx_split(-(-cin // 2))[2] if amx else 0
    cb = chunk or default_chunk(taps, cin, prec)
    if bf16 and cb < cin and cb % 2:
        raise EmberError(f"ember: a bf16 K chunk must be even, got {cb}")
    if amx:  # the tiles run all of K in one chunk
        cb = cin
    lanes = tile.lanes
    last = cout - (npan - 1) * nr - 1  # the last panel's last column
    pv = last // lanes  # its vector
    pair_tail = (pair_tail and not bf16 and pairs_supported(isa) and cout > 0 and cin > 0
                 and last - pv * lanes < lanes // 2)
    dtype = np.uint16 if bf16 else np.float32
    # K rows per chunk in the packed panel (bf16: whole pairs, AMX: all of K padded to ktap pairs)
    kpad = [2 * ktap if amx else (kc + kc % 2 if bf16 else kc)
            for kc in (min(cb, cin - c0) for c0 in range(0, cin, cb))]
    per_panel = taps * nr * sum(kpad)
    data = aligned_empty(max(groups * npan * per_panel, 2), dtype)
    data[groups * npan * per_panel:] = 0
    out = data[:groups * npan * per_panel].reshape(groups, npan, per_panel)
    # a few panels at a time (PACK_BLOCK bytes of f32), written straight into ``data``: no f32 copy
    # of the whole weight (a 1280 x 1000 classifier's temporaries were 36 MB, the compile's peak)
    step = max(1, PACK_BLOCK // max(1, groups * taps * cin * nr * 4))
    for p0 in range(0, npan, step):
        p1 = min(npan, p0 + step)
        c1 = min(cout, p1 * nr)
        wp = np.zeros((groups, taps, cin, (p1 - p0) * nr), np.float32)
        wp[..., :c1 - p0 * nr] = w[..., p0 * nr:c1]
        flush_subnormals(wp)
        # [g, tap, c, panel, nr] -> [g, panel, (chunk, tap, c_in_chunk), nr]
        wp5 = wp.reshape(groups, taps, cin, p1 - p0, nr).transpose(0, 3, 1, 2, 4)
        at = 0
        for c0, kp in zip(range(0, cin, cb), kpad):
            part = wp5[:, :, :, c0:c0 + cb, :]
            size = taps * kp * nr
            dst = out[:, p0:p1, at:at + size]
            if pair_tail and p1 == npan:  # the last vector's rows k, k + 1 (k even) interleaved into row k
                part = part.copy()
                seg = part[:, p1 - 1 - p0, :, :, pv * lanes:(pv + 1) * lanes]  # [g, tap, kc, lanes]
                kc = seg.shape[2]
                src = np.zeros((groups, taps, kc + kc % 2, lanes // 2), np.float32)
                src[:, :, :kc] = seg[..., :lanes // 2]
                pairs = src.reshape(groups, taps, -1, 2, lanes // 2).transpose(0, 1, 2, 4, 3)
                seg[...] = 0
                seg[:, :, 0::2] = pairs.reshape(groups, taps, -1, lanes)
            if bf16:  # [.., kc, nr] -> [.., kc / 2, nr, 2] with an odd kc padded by a zero channel
                padded = np.zeros((groups, p1 - p0, taps, kp, nr), np.float32)
                padded[:, :, :, :part.shape[3]] = part
                pairs = padded.reshape(groups, p1 - p0, taps, kp // 2, 2, nr).transpose(0, 1, 2, 3, 5, 4)
                dst[...] = to_bf16_bits(pairs).reshape(groups, p1 - p0, size)
            else:
                dst[...] = part.reshape(groups, p1 - p0, size)
            at += size
    return PackedWeights(data, groups, taps, cin, cout, cb, nr, isa, prec, merged, amx, ktap, pair_tail)


def pack_b(B: np.ndarray, isa: Isa | None = None, chunk: int | None = None,
           precision: Precision | str = Precision.F32) -> PackedWeights:
    """Pack a GEMM right-hand side ``B[K, N]`` (a 1x1, one-group convolution weight)."""
    B = np.asarray(B, np.float32)
    if B.ndim != 2:
        raise EmberError(f"ember: pack_b wants a 2-D B[K, N], got shape {B.shape}")
    return pack_weights(B[None, None], isa, chunk, precision)


# --------------------------------------------------------------------------- scheduling
PEAK_FLOPS_PER_THREAD = 250e9
#: row tiles per task at most (the A block a task keeps in L2 while B panels stream by)
MAX_ROW_TILES = 8
#: when B is larger than ``B_REREAD_BYTES`` (it comes from memory, not L2, once per row block),
#: a task may take up to ``A_BLOCK_BYTES`` of A rows (transformers' M = 128 tokens in one row
#: block: each 2-thread half of the weights read once, not twice; MiniLM f32 1.13 -> 1.02x
#: OpenVINO). ``EMBER_GEMM_A_BLOCK_BYTES=0`` restores the 8-tile cap.
def _a_block_bytes(default: int = 1 << 20) -> int:
    """``EMBER_GEMM_A_BLOCK_BYTES`` when it is a whole number of bytes (at least 0), else the default."""
    text = os.environ.get("EMBER_GEMM_A_BLOCK_BYTES", "").strip()
    try:
        return max(0, int(text)) if text else default
    except ValueError:
        return default


A_BLOCK_BYTES = _a_block_bytes()
B_REREAD_BYTES = 512 << 10
TASK_OVERHEAD_S = 1.5e-6
MEM_BYTES_PER_S = 40e9


def _makespan(costs: list[float], threads: int) -> float:
    """Finish time of ``costs`` taken in order, each by the least-loaded of ``threads``."""
    if threads == 2:  # the common case, without a heap (ties are symmetric: same result)
        a = b = 0.0
        for c in costs:
            if a <= b:
                a += c
            else:
                b += c
        return max(a, b)
    heap = [0.0] * threads
    for c in costs:
        t = heapq.heappop(heap)
        heapq.heappush(heap, t + c)
    return max(heap)


def block_cost(rows: int, panels: int, nr: int, kdepth: int, elem: int = 4) -> float:
    """Seconds the schedule model gives a task of ``rows`` rows by ``panels`` panels of ``nr``
    columns over ``kdepth``: FMA time + per-task overhead + the bytes of A and B it streams
    (``elem`` bytes an element: 2 for bf16, whose products also run twice as fast)."""
    flops = 2.0 * rows * panels * nr * kdepth
    mem = float(elem) * (panels * nr * kdepth + rows * kdepth)
    return flops * elem / (4.0 * PEAK_FLOPS_PER_THREAD) + TASK_OVERHEAD_S + mem / MEM_BYTES_PER_S


def _row_tiles_cap(max_tm: int, ntm: int, n: int, kdepth: int, taps: int, tile: Tile, elem: int = 4) -> int:
    """Row tiles a task may take when the row blocks are few: more than ``max_tm`` when B is
    large enough to come from memory once per row block (see :data:`A_BLOCK_BYTES`)."""
    if n * kdepth * elem <= B_REREAD_BYTES:
        return max_tm
    return max(max_tm, min(ntm, A_BLOCK_BYTES // max(tile.mr * kdepth * elem, 1), 4096 // max(taps, 1)))


@functools.lru_cache(maxsize=8192)
def plan_blocks(m: int, n: int, k_per_tap: int, taps: int, groups: int, tile: Tile, threads: int,
                max_tm: int | None = None, elem: int = 4) -> tuple[int, int, int, int]:
    """Choose tiles per M block (tm), panels per N block (tn) and the block counts (gm, gn).

    Minimizes a simple makespan model of dynamic scheduling over ``threads`` threads:
    FMA time + per-task overhead + the bytes of A and B each task streams (``elem`` bytes an
    element: 4 for f32, 2 for bf16). A pure function of
    integers, memoized: a model lowered again at a new input shape (a new sentence length)
    plans each distinct GEMM geometry once per process, not once per GEMM and shape."""
    ntm = max(1, -(-m // tile.mr))
    ntn = max(1, -(-n // tile.nr))
    if max_tm is None:
        max_tm = MAX_ROW_TILES
    max_tm = max(1, min(max_tm, ntm, 4096 // max(taps, 1)))
    kdepth = k_per_tap * taps
    if threads <= 1 or -(-ntm // max_tm) >= 4 * threads:  # one thread, or plenty of row blocks
        return max_tm, ntn, -(-ntm // max_tm), 1
    max_tm = _row_tiles_cap(max_tm, ntm, n, kdepth, taps, tile, elem)

    nr, mr = tile.nr, tile.mr

    def cost(rows: int, panels: int) -> float:
        return block_cost(rows, panels, nr, kdepth, elem)

    def span(gm: int, gn: int, c_full: list[float], c_last: list[float]) -> int:
        costs = []
        for im, (c_cols, c_end) in ((gm - 1, c_full), (1, c_last)):
            costs += ([c_cols] * (gn - 1) + [c_end]) * im
        return round(_makespan(costs * groups, threads) * 1e8)

    # the column-block counts that split the panels evenly
    gns = [gn for gn in range(1, min(ntn, 8 * threads) + 1) if -(-ntn // -(-ntn // gn)) == gn]
    # candidates from the largest row blocks down (the cheapest plans are usually among them, so
    # the bound below skips more); the choice is the one the ascending order gives: ties on the
    # span and the block count go to the smallest (tm, gn)
    best: tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None = None
    for tm in range(max_tm, 0, -1):
        gm = -(-ntm // tm)
        full_rows, last_rows = tm * mr, m - (gm - 1) * tm * mr
        for gn in gns:
            tn = -(-ntn // gn)
            last_cols = ntn - (gn - 1) * tn
            c_full = [cost(full_rows, tn), cost(full_rows, last_cols)]
            c_last = [cost(last_rows, tn), cost(last_rows, last_cols)]
            if best is not None:
                # no list schedule beats the work shared evenly, nor its largest task: a candidate
                # whose bound is above a span already found cannot be chosen
                work = ((gm - 1) * ((gn - 1) * c_full[0] + c_full[1]) + (gn - 1) * c_last[0] + c_last[1]) * groups
                largest = max(c_last[1], c_last[0] if gn > 1 else 0.0,
                              *((c_full[1], c_full[0] if gn > 1 else 0.0) if gm > 1 else ()))
                if round(max(work / threads, largest) * (1 - 1e-9) * 1e8) > best[0][0]:
                    continue
            key = (span(gm, gn, c_full, c_last), gm * gn, tm, gn)
            if best is None or key < best[0]:
                best = (key, (tm, tn, gm, gn))
    assert best is not None  # tm = 1, gn = 1 always fits
    return best[1]


# --------------------------------------------------------------------------- binding
_ZERO_ROWS: dict[int, np.ndarray] = {}


def zero_row(n: int) -> np.ndarray:
    """A read-only, 64-byte aligned row of at least ``n`` f32 zeros (the padding taps' source),
    shared by every call: one per size class (powers of two), not one per bound GEMM."""
    size = 1 << max(n - 1, 15).bit_length()
    row = _ZERO_ROWS.get(size)
    if row is None:
        row = aligned_empty(size)
        row[:] = 0
        row.flags.writeable = False
        row = _ZERO_ROWS.setdefault(size, row)
    return row


class IGemmCall:
    """An implicit-GEMM operation bound to its geometry, weights and schedule.

    Build it once (at compile time), then :meth:`bind` buffer addresses into a
    :class:`BoundKernel` and run that as often as needed.
    """

    def __init__(self, packed: PackedWeights, *, m: int, x_geometry: dict[str, int],
                 ldx: int, ldy: int, epilogue: Epilogue = NO_EPILOGUE, ldr: int | None = None,
                 num_threads: int | None = None, x_bf16: bool = False, y_bf16: bool = False,
                 res_bf16: bool = False):
        if (x_bf16 or y_bf16 or res_bf16) and packed.precision is not Precision.BF16:
            raise EmberError("ember: bf16 activations in memory need weights packed for bf16")
        if x_bf16 and packed.merged_taps > 1:
            raise EmberError("ember: a convolution with merged taps reads f32 activations only")
        if y_bf16 and not packed.amx and packed.chunk < packed.cin:
            raise EmberError("ember: a bf16 output needs all of K in one chunk (see y_bf16_ok)")
        if packed.merged_taps > 1 and packed.precision is Precision.BF16 and packed.chunk < packed.cin:
            raise EmberError("ember: internal: bf16 weights with merged taps must be one K chunk")
        self.packed = packed
        self.kernels = igemm_kernels(packed.isa, packed.precision, packed.pair_tail)
        self.tile = AMX_TILE if packed.amx else self.kernels.tile
        if packed.nr != self.tile.nr:
            raise EmberError("ember: weights were packed for another ISA level")
        self.threads = num_threads or default_pool().num_threads
        ctx = IGEMM_CONTEXT.new()
        self.ctx = ctx
        geo = dict(h=m, w=1, oh=m, ow=1, kh=1, kw=1, sh=1, sw=1, dh=1, dw=1, pt=0, pl=0, xn=0)
        geo.update(x_geometry)
        for key, val in geo.items():
            ctx[IGEMM_CONTEXT[key]] = val
        if geo["kh"] * geo["kw"] != packed.taps_per_row:
            raise EmberError("ember: packed weights do not match the kernel size")
        ctx[IGEMM_CONTEXT["ldx"]] = ldx
        ctx[IGEMM_CONTEXT["ldy"]] = ldy
        ctx[IGEMM_CONTEXT["ldr"]] = ldy if ldr is None else ldr
        ctx[IGEMM_CONTEXT["cin"]] = packed.cin // packed.merged_taps  # channels per tap
        ctx[IGEMM_CONTEXT["xg"]] = packed.cin // packed.merged_taps
        ctx[IGEMM_CONTEXT["merge"]] = int(packed.merged_taps > 1)
        if packed.amx:
            ctx[IGEMM_CONTEXT["kq"]], ctx[IGEMM_CONTEXT["nck"]], _ = amx_split(-(-packed.cin // 2))
            ctx[IGEMM_CONTEXT["ktap"]] = packed.ktap
        ctx[IGEMM_CONTEXT["cout"]] = packed.cout
        ctx[IGEMM_CONTEXT["yg"]] = packed.cout
        ctx[IGEMM_CONTEXT["m"]] = m
        ctx[IGEMM_CONTEXT["cb"]] = packed.chunk
        ctx[IGEMM_CONTEXT["bp"]] = packed.data.ctypes.data
        # in 4-byte units: floats, or bf16 pairs
        ctx[IGEMM_CONTEXT["bg"]] = packed.group_stride // (2 if packed.precision is Precision.BF16 else 1)
        self._zero = zero_row(max(packed.cin, 1) + 16)
        ctx[IGEMM_CONTEXT["zero"]] = self._zero.ctypes.data
        tm, tn, gm, gn = plan_blocks(m, packed.cout, packed.cin, packed.taps, packed.groups, self.tile,
                                     self.threads, elem=packed.elem_bytes)
        ctx[IGEMM_CONTEXT["tm"]], ctx[IGEMM_CONTEXT["tn"]], ctx[IGEMM_CONTEXT["gm"]], ctx[IGEMM_CONTEXT["gn"]] = tm, tn, gm, gn
        self.n_tasks = packed.groups * gm * gn if m > 0 and packed.cout > 0 else 0
        lohi = np.array([epilogue.lo, epilogue.hi], np.float32).view(np.uint32)
        ctx[IGEMM_CONTEXT["lo"]], ctx[IGEMM_CONTEXT["hi"]] = int(lohi[0]), int(lohi[1])
        self.act_flags = (epilogue.tail_flags | (FLAG_XBF16 if x_bf16 else 0) | (FLAG_YBF16 if y_bf16 else 0)
                          | (FLAG_RES16 if res_bf16 else 0) | (FLAG_PAIRS if packed.pair_tail else 0)
                          | (0 if ACT_IN_REGISTERS else FLAG_ACT_ROWS))
        pm = np.array(epilogue.affine or (1.0, 0.0), np.float32).view(np.uint32)
        ctx[IGEMM_CONTEXT["pmul"]], ctx[IGEMM_CONTEXT["padd"]] = int(pm[0]), int(pm[1])
        self.task_address = (amx_bf16_kernels(packed.isa).task_address if packed.amx
                             else self.kernels.task_address)

    def with_rows(self, m: int) -> IGemmCall:
        """This plain GEMM call (no convolution geometry) for ``m`` rows: the context's rows, block
        plan and task count patched, nothing else built again (a plan bound at a new input shape)."""
        call = object.__new__(IGemmCall)
        call.__dict__.update(self.__dict__)
        call.ctx = self.ctx.copy()
        call.n_tasks = self._set_rows(call.ctx, m)
        return call

    def _set_rows(self, ctx: np.ndarray, m: int) -> int:
        """Patch context ``ctx`` of this plain GEMM call for ``m`` rows (rows and block plan);
        returns its task count."""
        if ctx[IGEMM_CONTEXT["w"]] != 1 or ctx[IGEMM_CONTEXT["ow"]] != 1 or ctx[IGEMM_CONTEXT["h"]] != ctx[IGEMM_CONTEXT["m"]] \
                or ctx[IGEMM_CONTEXT["kh"]] * ctx[IGEMM_CONTEXT["kw"]] != 1:
            raise EmberError("ember: internal: new rows are for plain GEMM calls")
        ctx[IGEMM_CONTEXT["h"]] = ctx[IGEMM_CONTEXT["oh"]] = ctx[IGEMM_CONTEXT["m"]] = m
        packed = self.packed
        tm, tn, gm, gn = plan_blocks(m, packed.cout, packed.cin, packed.taps, packed.groups, self.tile, self.threads,
                                     elem=packed.elem_bytes)
        ctx[IGEMM_CONTEXT["tm"]], ctx[IGEMM_CONTEXT["tn"]], ctx[IGEMM_CONTEXT["gm"]], ctx[IGEMM_CONTEXT["gn"]] = tm, tn, gm, gn
        return packed.groups * gm * gn if m > 0 and packed.cout > 0 else 0

    def bind(self, x: int, y: int, bias: int = 0, residual: int = 0, keep: tuple = (),
             rows: int | None = None) -> BoundKernel:
        """The call for these buffer addresses (0 = no bias / no residual); ``rows``: of a plain
        GEMM call, bound for that many rows instead (its rows, block plan and task count patched
        as :meth:`with_rows` does, in the bound context only).

        Each bound call has its own context, so several threads (streams) can run the same
        operation on their own buffers at once."""
        ctx = self.ctx.copy()
        n_tasks = self.n_tasks
        if rows is not None and rows != ctx[IGEMM_CONTEXT["m"]]:
            n_tasks = self._set_rows(ctx, rows)
        ctx[IGEMM_CONTEXT["x"]], ctx[IGEMM_CONTEXT["y"]] = x, y
        ctx[IGEMM_CONTEXT["bias"]], ctx[IGEMM_CONTEXT["res"]] = bias, residual
        ctx[IGEMM_CONTEXT["flags"]] = (FLAG_BIAS if bias else 0) | (FLAG_RES if residual else 0) | self.act_flags
        return BoundKernel(self.task_address, ctx, n_tasks, self.threads, (self.packed, self._zero, *keep),
                           layout=IGEMM_CONTEXT, finer=functools.partial(self.finer_split, ctx))

    def finer_split(self, ctx: np.ndarray, threads: int) -> tuple[np.ndarray, int] | None:
        """A copy of ``ctx`` (a context of this call) with the block plan made for ``threads``
        threads, and its task count; None when that plan has no more tasks than this one. The
        same work cut into smaller tasks (:attr:`BoundKernel.finer`: a plan runs it on a busy
        machine, where a worker that loses its core holds a smaller part of the job)."""
        packed = self.packed
        m = int(ctx[IGEMM_CONTEXT["m"]])
        tm, tn, gm, gn = plan_blocks(m, packed.cout, packed.cin, packed.taps, packed.groups, self.tile, threads,
                                     elem=packed.elem_bytes)
        n = packed.groups * gm * gn if m > 0 and packed.cout > 0 else 0
        if n <= packed.groups * int(ctx[IGEMM_CONTEXT["gm"]]) * int(ctx[IGEMM_CONTEXT["gn"]]):  # (this context's tasks)
            return None
        fine = ctx.copy()
        fine[IGEMM_CONTEXT["tm"]], fine[IGEMM_CONTEXT["tn"]], fine[IGEMM_CONTEXT["gm"]], fine[IGEMM_CONTEXT["gn"]] = tm, tn, gm, gn
        return fine, n


def y_bf16_ok(packed: PackedWeights) -> bool:
    """Whether a GEMM with these weights can store its output as bf16 (bf16 weights, and all of
    K in one chunk or AMX tiles: the f32 tile is finished before it is rounded)."""
    return packed.precision is Precision.BF16 and (packed.amx or packed.chunk >= packed.cin)


def _check_f32(name: str, a: np.ndarray, ndim: int, bf16: bool = False) -> None:
    """``a`` is float32 (or with ``bf16`` also uint16: bf16 bits) with contiguous rows."""
    if not isinstance(a, np.ndarray) or a.ndim != ndim or a.dtype not in ((np.float32, np.uint16) if bf16 else (np.float32,)):
        raise EmberError(f"ember: {name} must be a {ndim}-D float32 array" + (" (or uint16: bf16)" if bf16 else ""))
    size = a.itemsize
    if a.size and ((a.shape[-1] > 1 and a.strides[-1] != size) or a.strides[0] % size):
        raise EmberError(f"ember: {name} must have contiguous rows")


class Gemm:
    """``C[M, N] = epilogue(A[M, K] @ B[K, N] + bias[N] + R[M, N])`` with B packed once.

    ``A`` and ``C`` (and ``R``) may have any row stride (``lda``, ``ldc``), rows contiguous.
    The arithmetic is the packed weights' precision: B packed with ``precision="bf16"``
    gives the bf16 kernel (A converted to bf16 as it is read, f32 accumulation, the same
    epilogue in f32). The bf16 kernel also takes A, C and R as uint16 arrays of bf16 bits
    (activations kept bf16 in memory; C only when :func:`y_bf16_ok`).
    """

    def __init__(self, packed: PackedWeights, m: int, epilogue: Epilogue = NO_EPILOGUE,
                 num_threads: int | None = None):
        if packed.groups != 1 or packed.taps != 1:
            raise EmberError("ember: Gemm needs weights packed with pack_b")
        self.packed, self.m, self.epilogue, self.num_threads = packed, m, epilogue, num_threads
        self._calls: dict[tuple[int, ...], IGemmCall] = {}

    def with_rows(self, m: int) -> Gemm:
        """This GEMM for ``m`` rows; the calls made so far are patched (:meth:`IGemmCall.with_rows`),
        not built again."""
        g = Gemm(self.packed, m, self.epilogue, self.num_threads)
        g._calls = {key: call.with_rows(m) for key, call in self._calls.items()}
        return g

    def _call(self, lda: int, ldc: int, ldr: int, a16: bool = False, c16: bool = False,
              r16: bool = False) -> IGemmCall:
        key = (lda, ldc, ldr, a16, c16, r16)
        call = self._calls.get(key)
        if call is None:
            call = IGemmCall(self.packed, m=self.m, x_geometry={}, ldx=lda, ldy=ldc, ldr=ldr,
                             epilogue=self.epilogue, num_threads=self.num_threads, x_bf16=a16, y_bf16=c16,
                             res_bf16=r16)
            self._calls[key] = call
        return call

    def bind(self, a: np.ndarray, c: np.ndarray, bias: np.ndarray | None = None,
             residual: np.ndarray | None = None, any_rows: bool = False) -> BoundKernel:
        """Fix the buffers (arrays, or views of a plan's arena) of a call; checks shapes once.
        ``any_rows``: A and C may have another row count than this GEMM's (a plan bound at another
        input shape: the call's context patched for their rows, as :meth:`with_rows` would)."""
        m, k, n = self.m, self.packed.cin, self.packed.cout
        if any_rows and isinstance(a, np.ndarray) and a.ndim == 2:
            m = a.shape[0]
        bf16 = self.packed.precision is Precision.BF16
        _check_f32("A", a, 2, bf16)
        _check_f32("C", c, 2, bf16)
        if a.shape != (m, k) or c.shape != (m, n):
            raise EmberError(f"ember: Gemm of {m}x{k}x{n} got A{a.shape}, C{c.shape}")
        check_bias(bias, n)
        if residual is not None:
            _check_f32("residual", residual, 2, bf16)
            if residual.shape != (m, n):
                raise EmberError(f"ember: residual must be {m}x{n}")
        ldr = residual.strides[0] // residual.itemsize if residual is not None else c.strides[0] // c.itemsize
        call = self._call(a.strides[0] // a.itemsize, c.strides[0] // c.itemsize, ldr, a.dtype == np.uint16,
                          c.dtype == np.uint16, residual is not None and residual.dtype == np.uint16)
        return call.bind(a.ctypes.data, c.ctypes.data, 0 if bias is None else bias.ctypes.data,
                         0 if residual is None else residual.ctypes.data, keep=(bias,),
                         rows=m if m != self.m else None)

    def __call__(self, a: np.ndarray, c: np.ndarray, bias: np.ndarray | None = None,
                 residual: np.ndarray | None = None, pool: ThreadPool | None = None) -> np.ndarray:
        """Compute into ``c`` and return it."""
        self.bind(a, c, bias, residual).run(pool)
        return c


def residual_in_place_ok(packed: PackedWeights) -> bool:
    """Whether a GEMM or convolution with these weights may write Y over its residual (the
    same buffer): all of K in one chunk, so the micro-kernel's epilogue reads each residual
    element before its single store of that element (with several chunks the first one stores
    partial sums into Y). AMX kernels are left out (not measured)."""
    return not packed.amx and packed.chunk >= packed.cin


def check_bias(bias: np.ndarray | None, n: int) -> None:
    if bias is not None and (not isinstance(bias, np.ndarray) or bias.dtype != np.float32
                             or bias.shape != (n,) or not bias.flags.c_contiguous):
        raise EmberError(f"ember: bias must be a contiguous float32 vector of {n}")


def gemm(a: np.ndarray, b: np.ndarray | PackedWeights, bias: np.ndarray | None = None,
         epilogue: Epilogue = NO_EPILOGUE, residual: np.ndarray | None = None, out: np.ndarray | None = None,
         num_threads: int | None = None, isa: Isa | None = None,
         precision: Precision | str | None = None) -> np.ndarray:
    """One-shot GEMM (packs ``b`` if needed): ``epilogue(a @ b + bias + residual)``.

    ``precision`` (default f32, or the precision ``b`` was packed with) may be ``"bf16"``."""
    if isinstance(b, PackedWeights):
        packed = b
        if precision is not None and as_precision(precision) is not packed.precision:
            raise EmberError(f"ember: B was packed for {packed.precision.value}, not {as_precision(precision).value}")
    else:
        packed = pack_b(b, isa, precision=precision or Precision.F32)
    a = np.asarray(a, np.float32)
    if a.ndim != 2 or a.shape[1] != packed.cin:
        raise EmberError(f"ember: gemm of A{a.shape} with B of {packed.cin}x{packed.cout}")
    if a.strides[-1] != 4:
        a = np.ascontiguousarray(a)
    if out is None:
        out = aligned_empty((a.shape[0], packed.cout))
    return Gemm(packed, a.shape[0], epilogue, num_threads)(a, out, bias, residual)
