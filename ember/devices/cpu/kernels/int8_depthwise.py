"""The int8 depthwise convolution compiled per layer shape: u8 NHWC pixels (per-channel zero
points) x s8 weights -> s32 with ``vpdpbusd`` over groups of 4 taps, then the int8 epilogue
(scale, shift, FakeQuantize, residual, clamp, u8 steps or f32 out).

``vpdpbusd`` sums 4 byte products per i32 lane. A depthwise layer has no reduction over
channels, so the 4 bytes of a lane are 4 taps of one channel: the kernel loads the pixels of 4
taps (``4 * lanes`` channels each, one vector per tap, channels in order) and interleaves them
with two rounds of in-lane unpacks (bytes, then words) into 4 vectors of channel quads. The
unpacks work inside 128-bit lanes, so vector ``k`` holds channels ``16 * (j // 4) + 4 * k + j % 4``
(lane ``j``): the weights, the zero-point compensation and every epilogue parameter are packed
in that order once, and the u8 steps go back to channel order with the two saturating packs
(dwords -> words -> bytes), which undo the unpacks exactly. 3x3 is 3 groups (the 12th to 9th
taps zero weights), 5x5 7 groups.

Padding taps read a row of zero-point bytes, and ``comp = -zp * sum(w)`` starts the
accumulator, so every tap is the same code (no per-tap selects inside the image) and a padding
tap adds exactly the 0.0 that the float graph pads with. The column stride and dilation, the
pixel stride and the epilogue's steps are compile-time constants (one module per layer shape,
like :mod:`ember.devices.cpu.kernels.depthwise`): each tap is an immediate displacement from
one pointer per kernel row, the weights stay in registers over a band of rows. Tasks are
(image, band of rows, column segment, channel blocks), split as the f32 kernel's
(:func:`~ember.devices.cpu.kernels.depthwise.spec_tasks`) so that small maps still give every
thread work.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.conv import ConvGeometry
from ember.devices.cpu.kernels.depthwise import emit_spec_task, spec_tasks
from ember.devices.cpu.kernels.gemm import NO_EPILOGUE, Epilogue
from ember.devices.cpu.kernels.int8_gemm import (
    FLAG_FAST,
    FLAG_FQ_END,
    FLAG_FQ_MID,
    FLAG_RES,
    FLAG_RES_FQ,
    FLAG_U8,
    DepthwiseCall,
    FusedQuantize,
    Int8Depthwise,
    QuantizeParams,
    divide,
    dot4,
)
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I8, I16, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout, f32_bits
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import lane_mask
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.devices.cpu.runtime.threadpool import default_pool
from ember.errors import EmberError

DW8_SPEC_CONTEXT = ContextLayout(
    "int8_depthwise_spec",
    ("x", "xn", "h", "w", "oh", "ow", "sh", "dh", "pt", "pl", "c", "y", "ldy", "yn", "wp", "prm", "ps", "res", "ldr",
     "lo", "hi", "zr", "band", "gv", "nb", "ng", "seg", "ns"),
    pointers=("x", "y", "wp", "prm", "res", "zr"))
#: kernels up to this many taps (5x5) are compiled per shape; larger ones keep the generic kernel
DW8_MAX_TAPS = 25
DW8_COLUMNS = 32  # output columns per block inside a task
#: rows of the parameter table (each ``ps`` floats, channels in the kernel's order): comp (i32
#: bits), scale, shift, then the output's and the residual's FakeQuantize (il, ih, ih - il,
#: steps, ol, oh, (oh - ol) / steps, 1 / (ih - il)), then the folded steps' ``a``, ``b``, lowest
#: and highest ``t`` (the step is ``rint(clamp(acc * a + b, lowest, highest))``)
P_COMP, P_SCALE, P_SHIFT, P_FQ, P_RES_FQ, P_FOLD = 0, 1, 2, 3, 11, 19
P_ROWS = 23


@dataclass(frozen=True)
class Dw8Spec:
    """What an int8 depthwise module is compiled for: kernel size, column stride and dilation,
    pixel stride (bytes), the epilogue's steps (int8_gemm's FLAG_* bits, without FLAG_RES when
    there is no residual), whether the last channel block is partial, whether lo/hi clamp."""

    kh: int
    kw: int
    sw: int
    dw: int
    ldx: int
    flags: int
    tail_lanes: int  # 0: no partial block; else the i32 lanes of the last block (4 * lanes channels)
    tail_mask: bool  # the last block has fewer channels than that
    bounded: bool
    folded: bool = False  # fast u8 steps out, nothing between: one FMA from the accumulator to the step
    folded_clamp: bool = True  # the folded steps need their clamp (else the packs' saturation is it)


def block_order(lanes: int) -> np.ndarray:
    """``order[k * lanes + j]``: the channel (within a block of ``4 * lanes``) that lane ``j`` of
    accumulator ``k`` holds after the byte and word unpacks."""
    j = np.arange(lanes)
    return np.concatenate([16 * (j // 4) + 4 * k + j % 4 for k in range(4)])


def _shuffle(e: Emitter, a: ir.Value, b_: ir.Value, mask: list[int]) -> ir.Value:
    return e.b.shuffle_vector(a, b_, ir.Constant(vec(I32, len(mask)), mask))


def _unpack(n: int, unit: int, high: bool) -> list[int]:
    """The mask of an in-128-bit-lane interleave of two vectors of ``n`` bytes, ``unit`` bytes
    at a time (punpck[lh]bw for 1, punpck[lh]wd for 2), low or high halves of each lane."""
    out = []
    for lane in range(0, n, 16):
        base = lane + (8 if high else 0)
        for i in range(0, 8, unit):
            out += [base + i + t for t in range(unit)] + [n + base + i + t for t in range(unit)]
    return out


def _pack(e: Emitter, isa: Isa, a: ir.Value, b_: ir.Value, to: ir.IntType) -> ir.Value:
    """In-lane saturating pack of two vectors (dwords -> words, words -> bytes), exact for
    values in [0, 255]."""
    n = a.type.count
    bits = n * a.type.element.width
    if isa.level in ("avx512", "avx2") and (bits < 512 or isa.level == "avx512"):
        name = {(512, I16): "avx512.packusdw.512", (512, I8): "avx512.packuswb.512", (256, I16): "avx2.packusdw",
                (256, I8): "avx2.packuswb", (128, I16): "sse41.packusdw", (128, I8): "sse2.packuswb.128"}[bits, to]
        return e.call(f"llvm.x86.{name}", vec(to, 2 * n), [a, b_])
    per = 16 // (a.type.element.width // 8)  # elements per 128-bit lane
    mask = []
    for lane in range(0, n, per):
        mask += list(range(lane, lane + per)) + [n + i for i in range(lane, lane + per)]
    return e.b.trunc(_shuffle(e, a, b_, mask), vec(to, 2 * n))


def _build(prefix: str, isa: Isa, s: Dw8Spec) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    L = isa.f32_lanes
    nbytes = 4 * L  # channels of a full block
    top = min(s.kh, 4)  # kernel rows grouped by column (a group: a column's taps, padded to 4)
    rest = [(ky, kx) for ky in range(4, s.kh) for kx in range(s.kw)]  # the rows below: 4 taps a group
    groups = s.kw + -(-len(rest) // 4)
    kept = s.kw - s.sw if s.dw == 1 else 0  # columns of a pixel that the next pixel uses again
    fn = Emitter.function(m, f"{prefix}_dw8_task", VOID, [PTR, I64])
    ctx, task = fn.args
    ctx.add_attribute("noalias")
    e = ContextEmitter(m, fn, DW8_SPEC_CONTEXT)
    b = e.b
    img, sg, oy0, oy1, v0, v1, nfull = emit_spec_task(e, task, nbytes)
    ow, H, W, c = e.arg("ow"), e.arg("h"), e.arg("w"), e.arg("c")
    ximg = e.gep(I8, e.arg("x", PTR), b.mul(img, e.arg("xn")))
    rowstride = b.mul(W, c64(s.ldx))
    zr, wp, prm, ps = e.arg("zr", PTR), e.arg("wp", PTR), e.arg("prm", PTR), e.arg("ps")
    pl = e.arg("pl")
    ldy, ldr = e.arg("ldy"), e.arg("ldr")
    yimg = b.mul(img, e.arg("yn"))
    rimg = b.mul(img, b.mul(e.arg("oh"), e.arg("ow")))
    u8 = bool(s.flags & FLAG_U8)
    fast = bool(s.flags & FLAG_FAST)
    # the interior column range: every tap of these output columns is inside the image
    first = e.min(ow, e.cdiv(pl, s.sw))
    span = b.sub(b.add(b.sub(W, c64(1)), pl), c64((s.kw - 1) * s.dw))
    last = b.select(b.icmp_signed("<", span, c64(0)), c64(0), b.add(b.sdiv(span, c64(s.sw)), c64(1)))
    ox_lo, ox_hi = first, e.max(first, e.min(ow, last))

    def block(blk: ir.Value, mask: ir.Value | None, sx0: ir.Value, sx1: ir.Value, L: int) -> None:
        """Block ``blk`` of ``4 * L`` channels (blocks before it are full ones) for columns [sx0, sx1)."""
        nbytes_ = 4 * L
        vi, vf, vb = vec(I32, L), vec(F32, L), vec(I8, nbytes_)
        fma = f"llvm.fma.v{L}f32"
        zero_f = ir.Constant(vf, None)
        order = [int(v) for v in block_order(L)]
        inverse = [int(v) for v in np.argsort(block_order(L))]
        vlo, vhi = e.splat(e.arg("lo", F32), L), e.splat(e.arg("hi", F32), L)
        ch = b.mul(blk, c64(nbytes))
        wblk = e.gep(I8, wp, b.mul(blk, c64(groups * 4 * nbytes)))
        wv = [[b.bitcast(e.load(vb, e.gep(I8, wblk, (g * 4 + k) * nbytes_), align=nbytes_), vi) for k in range(4)]
              for g in range(groups)]

        def row(i: int) -> list[ir.Value]:
            base = e.gep(F32, prm, b.add(b.mul(c64(i), ps), ch))
            return [e.load(vf, e.gep(F32, base, k * L), align=4) for k in range(4)]

        comp = [b.bitcast(v, vi) for v in row(P_COMP)]
        scale, shift = row(P_SCALE), row(P_SHIFT)
        fq = [row(P_FQ + i) for i in range(8)] if s.flags & (FLAG_FQ_MID | FLAG_FQ_END | FLAG_U8) else []
        rfq = [row(P_RES_FQ + i) for i in range(8)] if s.flags & FLAG_RES_FQ else []
        fold = [row(P_FOLD + i) for i in range(4)] if s.folded else []
        zcol = e.gep(I8, zr, ch)

        def steps_of(x: ir.Value, p: list[list[ir.Value]], k: int) -> ir.Value:
            il, ih, rng, steps = (p[i][k] for i in range(4))
            if fast:
                a = b.fdiv(steps, rng)
                t = e.call(fma, vf, [x, a, b.fneg(b.fmul(il, a))])
                q = e.call(f"llvm.roundeven.v{L}f32", vf, [t])
                q = e.call(f"llvm.maxnum.v{L}f32", vf, [q, zero_f])
                return e.call(f"llvm.minnum.v{L}f32", vf, [q, steps])
            t = b.fmul(divide(e, b.fsub(x, il), rng, p[7][k]), steps)
            q = e.call(f"llvm.roundeven.v{L}f32", vf, [t])
            return b.select(b.fcmp_ordered("<=", x, il), zero_f, b.select(b.fcmp_ordered(">", x, ih), steps, q))

        def fq_value(x: ir.Value, p: list[list[ir.Value]], k: int) -> ir.Value:
            il, ih, ol, oh_, ostep = p[0][k], p[1][k], p[4][k], p[5][k], p[6][k]
            if fast:
                return e.call(fma, vf, [steps_of(x, p, k), ostep, ol])
            deq = b.fadd(b.fmul(steps_of(x, p, k), ostep), ol)
            return b.select(b.fcmp_ordered("<=", x, il), ol, b.select(b.fcmp_ordered(">", x, ih), oh_, deq))

        def f32_mask() -> list[ir.Value | None]:
            if mask is None:
                return [None] * 4
            left = b.sub(c, ch)
            return [lane_mask(e, b.sub(left, c64(q * L)), L) for q in range(4)]

        def to_order(vs: list[ir.Value], perm: list[int]) -> list[ir.Value]:
            """4 vectors of L -> the same 4L values in another order (``perm`` of the concatenation)."""
            lo_ = _shuffle(e, vs[0], vs[1], list(range(2 * L)))
            hi_ = _shuffle(e, vs[2], vs[3], list(range(2 * L)))
            whole = _shuffle(e, lo_, hi_, list(range(4 * L)))
            return [_shuffle(e, whole, whole, perm[q * L:(q + 1) * L]) for q in range(4)]

        def store_steps(q32: list[ir.Value], pix: ir.Value) -> None:
            words = [_pack(e, isa, q32[0], q32[1], I16), _pack(e, isa, q32[2], q32[3], I16)]
            qb = _pack(e, isa, words[0], words[1], I8)
            dst = e.gep(I8, e.arg("y", PTR), b.add(b.add(yimg, b.mul(pix, ldy)), ch))
            if mask is None:
                b.store(qb, dst, align=1)
            else:
                e.call(f"llvm.masked.store.v{nbytes_}i8.p0", VOID, [qb, dst, c32(1), mask])

        def epilogue(acc: list[ir.Value], pix: ir.Value) -> None:
            if s.folded:  # t = acc * a + b, one rounding (the fast arithmetic's one-step contract)
                q32 = []
                for k in range(4):
                    t = e.call(fma, vf, [b.sitofp(acc[k], vf), fold[0][k], fold[1][k]])
                    if s.folded_clamp:
                        t = e.call(f"llvm.minnum.v{L}f32", vf, [e.call(f"llvm.maxnum.v{L}f32", vf, [t, fold[2][k]]),
                                                                 fold[3][k]])
                    q32.append(b.fptosi(e.call(f"llvm.roundeven.v{L}f32", vf, [t]), vi))
                store_steps(q32, pix)  # the packs saturate to [0, 255]
                return
            out = [b.fadd(b.fmul(b.sitofp(acc[k], vf), scale[k]), shift[k]) for k in range(4)]
            if s.flags & FLAG_FQ_MID:
                out = [fq_value(out[k], fq, k) for k in range(4)]
            if s.flags & FLAG_RES:
                rp = e.gep(F32, e.arg("res", PTR), b.add(b.mul(b.add(rimg, pix), ldr), ch))
                masks = f32_mask()
                rv = []
                for q in range(4):
                    ptr = e.gep(F32, rp, q * L)
                    if masks[q] is None:
                        rv.append(e.load(vf, ptr, align=4))
                    else:
                        rv.append(e.call(f"llvm.masked.load.v{L}f32.p0", vf, [ptr, c32(4), masks[q], zero_f]))
                rv = to_order(rv, order)
                if s.flags & FLAG_RES_FQ:
                    rv = [fq_value(rv[k], rfq, k) for k in range(4)]
                out = [b.fadd(out[k], rv[k]) for k in range(4)]
            if s.bounded:
                for k in range(4):
                    x = b.select(b.fcmp_ordered("<", out[k], vlo), vlo, out[k])
                    out[k] = b.select(b.fcmp_ordered(">", x, vhi), vhi, x)
            if u8:
                store_steps([b.fptosi(steps_of(out[k], fq, k), vi) for k in range(4)], pix)
                return
            if s.flags & FLAG_FQ_END:
                out = [fq_value(out[k], fq, k) for k in range(4)]
            out = to_order(out, inverse)
            dst = e.gep(F32, e.arg("y", PTR), b.add(b.add(yimg, b.mul(pix, ldy)), ch))
            masks = f32_mask()
            for q in range(4):
                ptr = e.gep(F32, dst, q * L)
                if masks[q] is None:
                    b.store(out[q], ptr, align=4)
                else:
                    e.call(f"llvm.masked.store.v{L}f32.p0", VOID, [out[q], ptr, c32(4), masks[q]])

        def load_tap(ptr: ir.Value) -> ir.Value:
            if mask is None:
                return e.load(vb, ptr, align=1)
            return e.call(f"llvm.masked.load.v{nbytes_}i8.p0", vb, [ptr, c32(1), mask, ir.Constant(vb, None)])

        with e.loop(oy0, oy1, name="oy") as oy:
            iy0 = b.sub(b.mul(oy, e.arg("sh")), e.arg("pt"))
            rows = []
            for ky in range(s.kh):
                iy = b.add(iy0, b.mul(c64(ky), e.arg("dh")))
                base = b.select(b.icmp_unsigned("<", iy, H), e.gep(I8, ximg, b.mul(iy, rowstride)), zr)
                rows.append(e.gep(I8, base, ch))
            pixrow = b.mul(oy, ow)  # pixels within the image (yimg and rimg add the image)

            def quads_of(xs: list[ir.Value]) -> list[ir.Value]:
                """4 tap vectors -> 4 vectors of channel quads (i32 lanes, the block's order)."""
                n = nbytes_
                t0, t1, t2, t3 = xs
                ab = [_shuffle(e, t0, t1, _unpack(n, 1, hi)) for hi in (False, True)]
                cd = [_shuffle(e, t2, t3, _unpack(n, 1, hi)) for hi in (False, True)]
                return [b.bitcast(_shuffle(e, ab[k // 2], cd[k // 2], _unpack(n, 2, bool(k % 2))), vi)
                        for k in range(4)]

            def tap_ptr(ix: ir.Value, ky: int, kx: int, checked: bool) -> ir.Value:
                ptr = e.gep(I8, rows[ky], b.mul(b.add(ix, c64(kx * s.dw)), c64(s.ldx)))
                if checked:
                    ptr = b.select(b.icmp_unsigned("<", b.add(ix, c64(kx * s.dw)), W), ptr, zcol)
                return ptr

            def column(ix: ir.Value, kx: int, checked: bool) -> list[ir.Value]:
                """The quads of kernel column ``kx`` (its top rows, the last repeated up to 4: zero weights)."""
                xs = [load_tap(tap_ptr(ix, ky, kx, checked)) for ky in range(top)]
                return quads_of(xs + [xs[-1]] * (4 - top))

            def rest_quads(ix: ir.Value, checked: bool) -> list[list[ir.Value]]:
                xs = [load_tap(tap_ptr(ix, ky, kx, checked)) for ky, kx in rest]
                while len(xs) % 4:
                    xs.append(xs[-1])  # a zero weight multiplies it
                return [quads_of(xs[4 * g:4 * g + 4]) for g in range(len(xs) // 4)]

            def accumulate(quads: list[list[ir.Value]]) -> list[ir.Value]:
                acc = list(comp)
                for g, q in enumerate(quads):
                    for k in range(4):
                        acc[k] = dot4(e, isa, acc[k], q[k], wv[g][k])
                return acc

            def pixel(ox: ir.Value, checked: bool) -> None:
                ix = b.sub(b.mul(ox, c64(s.sw)), pl)
                quads = [column(ix, kx, checked) for kx in range(s.kw)] + rest_quads(ix, checked)
                epilogue(accumulate(quads), b.add(pixrow, ox))

            l1 = e.max(sx0, e.min(ox_lo, sx1))
            i1 = e.max(l1, e.min(ox_hi, sx1))
            with e.loop(sx0, l1, name="oxl") as ox:
                pixel(ox, True)
            if kept > 0:  # pixel x + 1's first columns are pixel x's last ones: unpacked once
                window = [[e.var(vi) for _ in range(4)] for _ in range(kept)]
                with b.if_then(b.icmp_signed("<", l1, i1)):
                    ix0 = b.sub(b.mul(l1, c64(s.sw)), pl)
                    for j in range(kept):
                        for k, q in enumerate(column(ix0, j, False)):
                            b.store(q, window[j][k])
                    with e.loop(l1, i1, name="oxr") as ox:
                        ix = b.sub(b.mul(ox, c64(s.sw)), pl)
                        cols = [[e.load(vi, v) for v in w_] for w_ in window]
                        cols += [column(ix, kx, False) for kx in range(kept, s.kw)]
                        epilogue(accumulate(cols + rest_quads(ix, False)), b.add(pixrow, ox))
                        for j in range(kept):
                            for k in range(4):
                                b.store(cols[j + s.sw][k], window[j][k])
            else:
                with e.loop(l1, i1, name="ox") as ox:
                    pixel(ox, False)
            with e.loop(i1, sx1, name="oxe") as ox:
                pixel(ox, True)

    seg0 = b.mul(sg, e.arg("seg"))
    seg1 = e.min(ow, b.add(seg0, e.arg("seg")))
    with e.loop(seg0, seg1, DW8_COLUMNS, name="blk") as bx0:
        bx1 = e.min(seg1, b.add(bx0, c64(DW8_COLUMNS)))
        with e.loop(v0, e.min(v1, nfull), name="cv") as cv:
            block(cv, None, bx0, bx1, L)
        if s.tail_lanes:
            lt = s.tail_lanes
            with b.if_then(b.icmp_signed(">", v1, nfull)):
                mask = lane_mask(e, b.sub(c, b.mul(nfull, c64(nbytes))), 4 * lt) if s.tail_mask else None
                block(nfull, mask, bx0, bx1, lt)
    b.ret_void()
    return m


@functools.cache
def _library(isa: Isa, spec: Dw8Spec) -> jit.Library:
    s = spec
    return jit.load(f"int8_depthwise|{isa.level}|vnni{int(isa.vnni)}|k{s.kh}x{s.kw}|s{s.sw}|d{s.dw}|ldx{s.ldx}"
                    f"|f{s.flags}|t{s.tail_lanes}{'m' if s.tail_mask else ''}|b{int(s.bounded)}"
                    f"|x{int(s.folded)}{int(s.folded_clamp)}|c{DW8_COLUMNS}", isa, lambda p: _build(p, isa, spec))


def supported(geometry: ConvGeometry) -> bool:
    """Whether :class:`Int8DepthwiseConv` takes this layer (2-D depthwise, at most 5x5 taps)."""
    g = geometry
    return g.groups == g.cin == g.cout and g.kh * g.kw <= DW8_MAX_TAPS


class Int8DepthwiseConv(DepthwiseCall):
    """A depthwise int8 convolution compiled for its shape (groups == channels, one filter
    each) on NHWC u8 pixels: ``y[c] = scale[c] * sum_taps (x[c] - zero_point[c]) * w[c, tap] +
    shift[c]``, then the int8 epilogue (residual, clamp, fused FakeQuantize or u8 steps), as
    :class:`~ember.devices.cpu.kernels.int8_gemm.Int8Depthwise` computes it (same arguments,
    same results). Zero points and scales may be per channel."""

    def __init__(self, geometry: ConvGeometry, weights: np.ndarray, scale: np.ndarray, shift: np.ndarray | None = None,
                 zero_point: Any = 0, epilogue: Epilogue = NO_EPILOGUE, num_threads: int | None = None,
                 isa: Isa | None = None, quantize: FusedQuantize | None = None,
                 residual_quantize: QuantizeParams | None = None, fast: bool = False):
        g = geometry
        if not supported(g) or np.shape(weights) != (g.cout, 1, g.kh, g.kw):
            raise EmberError(f"ember: an int8 depthwise convolution wants weights [C, 1, KH, KW] of at most "
                             f"{DW8_MAX_TAPS} taps, got {np.shape(weights)}")
        self.geometry, self.quantize, self.epilogue = g, quantize, epilogue
        self.isa = isa or host_isa()
        self.threads = num_threads or default_pool().num_threads
        c, taps = g.cin, g.kh * g.kw
        L = self.isa.f32_lanes
        nbytes = 4 * L
        nfull, rem = divmod(c, nbytes)
        # the last, partial block: the narrowest vectors that hold it (a quarter or half of the full ones)
        self.tail_lanes = 0 if not rem else min(t for t in (4, 8, 16) if t >= L or 4 * t >= rem)
        lanes = [L] * nfull + ([self.tail_lanes] if rem else [])
        cpad = nfull * nbytes + 4 * self.tail_lanes
        w = np.asarray(weights).reshape(c, taps).astype(np.int64)
        if w.size and (w.min() < -128 or w.max() > 127):
            raise EmberError("ember: int8 weights must lie in [-128, 127]")
        zp = np.zeros(cpad, np.int64)
        zp[:c] = np.broadcast_to(np.asarray(zero_point, np.int64), (c,))
        if zp.min() < 0 or zp.max() > 255:
            raise EmberError("ember: u8 zero points must lie in [0, 255]")
        self.zero_points = zp[:c]
        top = min(g.kh, 4)  # as the kernel groups its taps (see _build)
        rest = [ky * g.kw + kx for ky in range(4, g.kh) for kx in range(g.kw)]
        groups = g.kw + -(-len(rest) // 4)
        # weights: [block][group][k][lane j][4 taps], lane j of k = channel order[k * lanes + j]
        wfull = np.zeros((cpad, groups * 4), np.int64)
        # group kx < kw, byte t: tap (t, kx) of the top rows; then the taps of the rows below, 4 a group
        wfull[:c, :4 * g.kw].reshape(c, g.kw, 4)[:, :, :top] = w.reshape(c, g.kh, g.kw)[:, :top].transpose(0, 2, 1)
        wfull[:c, 4 * g.kw:4 * g.kw + len(rest)] = w[:, rest]
        perm = np.concatenate([i * nbytes + block_order(n) for i, n in enumerate(lanes)])
        packed = np.concatenate([wfull[perm[i * nbytes:i * nbytes + 4 * n]].reshape(4, n, groups, 4)
                                 .transpose(2, 0, 1, 3).reshape(-1) for i, n in enumerate(lanes)])
        self.wp = aligned_empty(max(packed.size, 64), np.int8)
        self.wp[:] = 0
        self.wp[:packed.size] = packed.astype(np.int8)
        # parameters in the same order, one row each
        self.ps = cpad + 16
        self.prm = aligned_empty((P_ROWS, self.ps))
        self.prm[:] = 1
        comp = np.zeros(cpad, np.int64)
        comp[:c] = -zp[:c] * w.sum(axis=1)
        self.prm[P_COMP, :cpad] = comp[perm].astype(np.int32).view(np.float32)
        scale_v = np.zeros(cpad, np.float32)
        scale_v[:c] = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (c,))
        shift_v = np.zeros(cpad, np.float32)
        if shift is not None:
            shift_v[:c] = np.broadcast_to(np.asarray(shift, np.float32).reshape(-1), (c,))
        self.prm[P_SCALE, :cpad] = scale_v[perm]
        self.prm[P_SHIFT, :cpad] = shift_v[perm]
        for base, p in ((P_FQ, None if quantize is None else quantize.params), (P_RES_FQ, residual_quantize)):
            if p is not None:
                v = p.vectors(c)
                rows = np.stack([v[0], v[1], v[2], np.full(c, p.steps, np.float32), v[3], v[4],
                                 v[5] / np.float32(p.steps), p.reciprocal(c)]).astype(np.float32)
                full = np.ones((8, cpad), np.float32)
                full[:, :c] = rows
                self.prm[base:base + 8, :cpad] = full[:, perm]
        # fast u8 steps straight from the accumulator: t = acc * (scale * a) + (shift * a + b), clamped
        self.foldable = bool(fast and quantize is not None and quantize.u8 and residual_quantize is None)
        self.fold_clamp = True
        if self.foldable:
            assert quantize is not None
            p = quantize.params
            v = p.vectors(c)
            f = np.float32
            a = (f(p.steps) / v[2]).astype(f)  # as the fast epilogue: steps / (ih - il), - il * a
            bb = (-(v[0] * a)).astype(f)
            with np.errstate(over="ignore", invalid="ignore"):
                tlo = np.maximum(np.float64(epilogue.lo) * a + bb, 0.0)
                thi = np.minimum(np.float64(epilogue.hi) * a + bb, float(p.steps))
            big = np.abs(w).sum(axis=1) * 255 * np.abs(scale_v[:c] * a) + np.abs(shift_v[:c] * a + bb)
            self.fold_clamp = bool(np.any(tlo > 0) or np.any(thi < 255) or np.any(~(big < 2.0 ** 30)))
            for i, row in enumerate((scale_v[:c].astype(np.float64) * a, shift_v[:c].astype(np.float64) * a + bb,
                                     tlo, thi)):
                full_row = np.zeros(cpad, np.float32)
                full_row[:c] = row
                self.prm[P_FOLD + i, :cpad] = full_row[perm]
        # a row of zero-point pixels: padding taps read it
        self._zr_cache: dict[int, np.ndarray] = {}
        self.flags = ((0 if quantize is None else quantize.flags) | (FLAG_RES_FQ if residual_quantize else 0)
                      | (FLAG_FAST if fast else 0))
        (sh, _), (dh, _), (pt, pl) = g.strides, g.dilations, g.pads_begin
        band, gv, nb, ng, seg, ns = spec_tasks(g.batch, g.oh, g.ow, c, taps, nbytes, self.threads)
        self.n_tasks = g.batch * nb * ng * ns
        self.ctx = DW8_SPEC_CONTEXT.new(h=g.h, w=g.w, oh=g.oh, ow=g.ow, sh=sh, dh=dh, pt=pt, pl=pl, c=c,
                                        wp=self.wp.ctypes.data, prm=self.prm.ctypes.data, ps=self.ps,
                                        lo=f32_bits(epilogue.lo), hi=f32_bits(epilogue.hi), band=band, gv=gv,
                                        nb=nb, ng=ng, seg=seg, ns=ns)

    def spec(self, ldx: int, residual: bool) -> Dw8Spec:
        g = self.geometry
        e = self.epilogue
        rem = g.cin % (4 * self.isa.f32_lanes)
        return Dw8Spec(g.kh, g.kw, g.strides[1], g.dilations[1], ldx, self.flags | (FLAG_RES if residual else 0),
                       self.tail_lanes, bool(rem) and rem < 4 * self.tail_lanes,
                       bool(e.lo != -np.inf or e.hi != np.inf), self.foldable and not residual, self.fold_clamp)

    def _zero_row(self, ldx: int) -> np.ndarray:
        zr = self._zr_cache.get(ldx)
        if zr is None:
            g = self.geometry
            nbytes = 4 * self.isa.f32_lanes
            zr = aligned_empty(g.w * ldx + nbytes, np.uint8)
            zr[:] = 0
            pix = np.zeros(ldx, np.uint8)
            pix[:g.cin] = self.zero_points
            zr[:g.w * ldx] = np.tile(pix, g.w)
            zr[g.w * ldx:g.w * ldx + min(ldx, nbytes)] = pix[:min(ldx, nbytes)]
            self._zr_cache[ldx] = zr
        return zr

    def bind(self, x: np.ndarray, y: np.ndarray, residual: np.ndarray | None = None) -> BoundKernel:
        g = self.geometry
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (g.batch, g.h, g.w) \
                or x.shape[3] < g.cin or x.strides[3] != 1:
            raise EmberError(f"ember: int8 depthwise input must be u8 {(g.batch, g.h, g.w, g.cin)} NHWC, got "
                             f"{getattr(x, 'dtype', '?')}{getattr(x, 'shape', '?')}")
        ldx = x.strides[2]
        if x.strides[1] != g.w * ldx:
            raise EmberError("ember: int8 depthwise input pixels must be uniformly strided")
        u8 = self.quantize is not None and self.quantize.u8
        want = np.uint8 if u8 else np.float32
        n_, oh, ow, oc = g.output_shape
        if not isinstance(y, np.ndarray) or y.dtype != want or y.ndim != 4 or y.shape[:3] != (n_, oh, ow) \
                or y.shape[3] < oc or y.strides[3] != y.itemsize:
            raise EmberError(f"ember: int8 depthwise output must be {np.dtype(want)} {g.output_shape}")
        ldy = y.strides[2] // y.itemsize
        if y.strides[1] != ow * ldy * y.itemsize or y.strides[0] != oh * ow * ldy * y.itemsize:
            raise EmberError("ember: int8 depthwise output images must be contiguous")
        ldr = ldy
        if residual is not None:
            if residual.dtype != np.float32 or residual.shape != g.output_shape or residual.strides[3] != 4:
                raise EmberError(f"ember: the residual must be f32 {g.output_shape}")
            ldr = residual.strides[2] // 4
            if residual.strides[1] != ow * ldr * 4 or residual.strides[0] != oh * ow * ldr * 4:
                raise EmberError("ember: the residual's images must be contiguous")
        zr = self._zero_row(ldx)
        lib = _library(self.isa, self.spec(ldx, residual is not None))
        ctx = self.ctx.copy()
        DW8_SPEC_CONTEXT.fill(ctx, x=x.ctypes.data, xn=x.strides[0], y=y.ctypes.data, ldy=ldy, yn=oh * ow * ldy,
                              res=0 if residual is None else residual.ctypes.data, ldr=ldr, zr=zr.ctypes.data)
        return BoundKernel(lib.address("dw8_task"), ctx, self.n_tasks, self.threads, (self.wp, self.prm, zr),
                           layout=DW8_SPEC_CONTEXT)


def int8_depthwise(geometry: ConvGeometry, weights: np.ndarray, scale: np.ndarray, shift: np.ndarray | None = None,
                   zero_point: Any = 0, epilogue: Epilogue = NO_EPILOGUE, num_threads: int | None = None,
                   isa: Isa | None = None, quantize: FusedQuantize | None = None,
                   residual_quantize: QuantizeParams | None = None,
                   fast: bool = False) -> Int8DepthwiseConv | Int8Depthwise:
    """The per-shape kernel where it applies (:func:`supported`), else the generic one."""
    cls = Int8DepthwiseConv if supported(geometry) else Int8Depthwise
    return cls(geometry, weights, scale, shift, zero_point, epilogue, num_threads, isa, quantize, residual_quantize,
               fast=fast)


__all__ = ["Dw8Spec", "Int8DepthwiseConv", "block_order", "int8_depthwise", "supported"]
