"""The depthwise convolution kernel (groups == input channels == output channels) on NHWC
activations: it vectorizes over channels, one task per output row; for kernels up to 7x7 the
taps are unrolled and a channel vector's weights stay in registers while the pixels stream
by. :class:`~ember.devices.cpu.kernels.conv.Conv2d` binds it.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

from llvmlite import ir

from ember.devices.cpu.kernels.gemm import store_bf16
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I16, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import fmuladd, lane_mask, masked_load, masked_store

# --------------------------------------------------------------------------- depthwise kernel
# One task per output row. Rows and columns whose taps all fall inside the input
# ("interior") run without bounds tests; border rows test each kernel row, border columns
# each tap. Kernel sizes up to 7x7 get a module of their own (taps unrolled).
DEPTHWISE_CONTEXT = ContextLayout(
    "depthwise",
    ("x", "ldx", "xn", "h", "w", "oh", "ow", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pl", "c", "y", "ldy",
     "wp", "cp", "bias", "res", "ldr", "flags", "lo", "hi", "ox_lo", "ox_hi", "oy_lo", "oy_hi"),
    pointers=("x", "y", "wp", "bias", "res"))
DW_FLAG_BIAS, DW_FLAG_RES = 1, 2
DW_MAX_UNROLLED_TAPS = 49
DW_BLOCK = 32  # output pixels per block
DW_PIXELS = 1  # output pixels in registers at once


class DepthwiseEmitter(ContextEmitter):
    """A context emitter for the depthwise kernel, with its epilogue helpers."""

    def __init__(self, m: ir.Module, fn: ir.Function, lanes: int):
        super().__init__(m, fn, DEPTHWISE_CONTEXT)
        self.ctx.add_attribute("noalias")
        self.lanes = lanes
        self.vt = vec(F32, lanes)

    def flag(self, bit: int) -> ir.Value:
        return self.b.icmp_unsigned("!=", self.b.and_(self.b.trunc(self.arg("flags"), I32), c32(bit)), c32(0))

    def finish(self, acc: ir.Value, mask: ir.Value | None, ch: ir.Value, pix: ir.Value) -> ir.Value:
        """acc + residual, clamped (bias is added by the caller)."""
        b = self.b
        out = self.var(self.vt, acc)
        with b.if_then(self.flag(DW_FLAG_RES)):
            rp = self.gep(F32, self.arg("res", PTR), b.add(b.mul(pix, self.arg("ldr")), ch))
            b.store(b.fadd(self.load(self.vt, out), masked_load(self, self.vt, rp, mask)), out)
        x = self.load(self.vt, out)
        vlo, vhi = self.splat(self.arg("lo", F32), self.lanes), self.splat(self.arg("hi", F32), self.lanes)
        x = b.select(b.fcmp_ordered("<", x, vlo), vlo, x)
        return b.select(b.fcmp_ordered(">", x, vhi), vhi, x)

    def bias_vec(self, ch: ir.Value, mask: ir.Value | None) -> ir.Value:
        b = self.b
        bv = self.var(self.vt, ir.Constant(self.vt, None))
        with b.if_then(self.flag(DW_FLAG_BIAS)):
            b.store(masked_load(self, self.vt, self.gep(F32, self.arg("bias", PTR), ch), mask), bv)
        return self.load(self.vt, bv)


def _emit_dw_row(m: ir.Module, name: str, lanes: int, taps: tuple[int, int] | None, check_rows: bool,
                 px: int) -> ir.Function:
    """row(ctx, img, oy, ox0, ox1): output pixels [ox0, ox1) of row oy, all channels.

    Pixel blocks of DW_BLOCK, channel vectors inside: with a specialized kernel size the
    weights of one channel vector stay in registers while its pixels stream by, the border
    columns (outside [ox_lo, ox_hi), one at a time, each tap's column tested) then the
    interior ones (``px`` at a time, untested), so that small maps, whose borders are a
    large share of the pixels, load a channel vector's weights once per block rather than
    once per border pixel. ``check_rows`` tests each kernel row against the image."""
    fn = Emitter.function(m, name, VOID, [PTR, I64, I64, I64, I64], internal=True, noinline=True)
    _, img, oy, ox0, ox1 = fn.args
    e = DepthwiseEmitter(m, fn, lanes)
    b, vt, L = e.b, e.vt, lanes
    H, W, ldx, cp, ldy = e.arg("h"), e.arg("w"), e.arg("ldx"), e.arg("cp"), e.arg("ldy")
    ox_lo, ox_hi = e.arg("ox_lo"), e.arg("ox_hi")
    sw, dw, pl = e.arg("sw"), e.arg("dw"), e.arg("pl")
    iy0 = b.sub(b.mul(oy, e.arg("sh")), e.arg("pt"))
    ximg = e.gep(F32, e.arg("x", PTR), b.mul(img, e.arg("xn")))
    pixrow = b.mul(b.add(b.mul(img, e.arg("oh")), oy), e.arg("ow"))
    wp = e.arg("wp", PTR)

    def row_of(ky: ir.Value) -> tuple[ir.Value, ir.Value]:
        iy = b.add(iy0, b.mul(ky, e.arg("dh")))
        return b.icmp_unsigned("<", iy, H), e.gep(F32, ximg, b.mul(b.mul(iy, W), ldx))

    kh, kw = taps if taps is not None else (1, 1)
    if taps is not None:
        rows = [row_of(c64(ky)) for ky in range(kh)]

    def guarded(cond: ir.Value | None, body) -> None:
        if cond is None:
            body()
        else:
            with b.if_then(cond):
                body()

    def pixels(ox: ir.Value, n: int, ch: ir.Value, mask: ir.Value | None, wv: list[ir.Value] | None,
               bv: ir.Value, check_cols: bool) -> None:
        ix0 = [b.sub(b.mul(b.add(ox, c64(p)), sw), pl) for p in range(n)]
        # one accumulator per pixel and kernel row: short FMA chains, latency hidden
        nparts = kh if wv is not None else 1
        acc = [[e.var(vt, bv if part == 0 else ir.Constant(vt, None)) for part in range(nparts)]
               for _ in range(n)]

        def tap(xrow: ir.Value, kx: ir.Value, w: ir.Value, part: int) -> None:
            for p in range(n):
                ix = b.add(ix0[p], b.mul(kx, dw))

                def fma(p: int = p, ix: ir.Value = ix) -> None:
                    xv = masked_load(e, vt, e.gep(F32, xrow, b.add(b.mul(ix, ldx), ch)), mask)
                    b.store(fmuladd(e, xv, w, e.load(vt, acc[p][part])), acc[p][part])

                guarded(b.icmp_unsigned("<", ix, W) if check_cols else None, fma)

        if wv is not None:
            weights_all: list[ir.Value] = wv
            for ky in range(kh):
                ok, xrow = rows[ky]

                def kernel_row(xrow: ir.Value = xrow, ky: int = ky, weights: list[ir.Value] = weights_all) -> None:
                    for kx in range(kw):
                        tap(xrow, c64(kx), weights[ky * kw + kx], ky)

                guarded(ok if check_rows else None, kernel_row)
        else:
            kwr = e.arg("kw")
            with e.loop(0, e.arg("kh"), name="ky") as ky:
                ok, xrow = row_of(ky)

                def taps_of_row(ky: ir.Value = ky, xrow: ir.Value = xrow) -> None:
                    with e.loop(0, kwr, name="kx") as kx:
                        t = b.add(b.mul(ky, kwr), kx)
                        tap(xrow, kx, e.load(vt, e.gep(F32, wp, b.add(b.mul(t, cp), ch)), align=4), 0)

                guarded(ok if check_rows else None, taps_of_row)
        for p in range(n):
            total = e.load(vt, acc[p][0])
            for part in acc[p][1:]:
                total = b.fadd(total, e.load(vt, part))
            pix = b.add(pixrow, b.add(ox, c64(p)))
            y = e.finish(total, mask, ch, pix)
            masked_store(e, y, e.gep(F32, e.arg("y", PTR), b.add(b.mul(pix, ldy), ch)), mask)

    def channel_block(ch: ir.Value, mask: ir.Value | None, ob: ir.Value, oe: ir.Value) -> None:
        wv = None
        if taps is not None:
            wv = [e.load(vt, e.gep(F32, wp, b.add(b.mul(c64(t), cp), ch)), align=4) for t in range(kh * kw)]
        bv = e.bias_vec(ch, mask)
        ib, ie = e.max(ob, ox_lo), e.min(oe, ox_hi)  # interior part of the block (may be empty)
        ie = e.max(ib, ie)
        with e.loop(ob, e.min(oe, ib), name="oxl") as ox:
            pixels(ox, 1, ch, mask, wv, bv, True)
        main_end = b.add(ib, b.mul(b.sdiv(b.sub(ie, ib), c64(px)), c64(px)))
        with e.loop(ib, main_end, px, name="ox") as ox:
            pixels(ox, px, ch, mask, wv, bv, False)
        if px > 1:
            with e.loop(main_end, ie, name="oxr") as ox:
                pixels(ox, 1, ch, mask, wv, bv, False)
        with e.loop(e.max(ob, ie), oe, name="oxe") as ox:
            pixels(ox, 1, ch, mask, wv, bv, True)

    c = e.arg("c")
    nfull = b.sdiv(c, c64(L))
    with e.loop(ox0, ox1, DW_BLOCK, name="ob") as ob:
        oe = e.min(ox1, b.add(ob, c64(DW_BLOCK)))
        with e.loop(0, nfull, name="cv") as cv:
            channel_block(b.mul(cv, c64(L)), None, ob, oe)
        with b.if_then(b.icmp_signed("!=", b.srem(c, c64(L)), c64(0))):
            ch = b.mul(nfull, c64(L))
            channel_block(ch, lane_mask(e, b.sub(c, ch), L), ob, oe)
    b.ret_void()
    return fn


def _build_dw(prefix: str, isa: Isa, taps: tuple[int, int] | None) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    lanes = isa.f32_lanes
    inner = _emit_dw_row(m, f"{prefix}_row", lanes, taps, False, DW_PIXELS)
    inner_rows = _emit_dw_row(m, f"{prefix}_row_r", lanes, taps, True, DW_PIXELS)
    fn = Emitter.function(m, f"{prefix}_dw_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = DepthwiseEmitter(m, fn, lanes)
    b = e.b
    oh = e.arg("oh")
    img, oy = b.sdiv(task, oh), b.srem(task, oh)
    ow = e.arg("ow")
    inside = b.and_(b.icmp_signed(">=", oy, e.arg("oy_lo")), b.icmp_signed("<", oy, e.arg("oy_hi")))
    with b.if_else(inside) as (row_in, row_edge):
        with row_in:
            b.call(inner, [ctx, img, oy, c64(0), ow])
        with row_edge:
            b.call(inner_rows, [ctx, img, oy, c64(0), ow])
    b.ret_void()
    return m


@functools.cache
def _dw_library(isa: Isa, taps: tuple[int, int] | None) -> jit.Library:
    tag = "any" if taps is None else f"{taps[0]}x{taps[1]}"
    return jit.load(f"depthwise|{isa.level}|k{tag}|b{DW_BLOCK}|p{DW_PIXELS}", isa,
                    lambda p: _build_dw(p, isa, taps))


def depthwise_task_address(kh: int, kw: int, isa: Isa | None = None) -> int:
    """Address of the depthwise task for a ``kh x kw`` kernel (specialized when small)."""
    taps = (kh, kw) if kh * kw <= DW_MAX_UNROLLED_TAPS else None
    return _dw_library(isa or host_isa(), taps).address("dw_task")


def interior_range(n_out: int, n_in: int, k: int, stride: int, dilation: int, pad: int) -> tuple[int, int]:
    """[lo, hi) of output positions whose k taps all land inside [0, n_in)."""
    lo = min(n_out, -(-pad // stride))
    last = n_in - 1 - (k - 1) * dilation + pad  # position * stride <= last
    hi = min(n_out, last // stride + 1) if last >= 0 else 0
    return lo, max(lo, hi)


# --------------------------------------------------------------------------- specialized kernel
# Kernels up to 5x5 (DW_SPEC_MAX_TAPS) get a module per (kernel, column stride and dilation,
# pixel stride, residual): the column offsets of the taps are then constants, so the inner loop
# addresses every tap from one pointer per kernel row with an immediate displacement (with
# runtime strides, loop-strength reduction made one pointer per tap and spilled them on 7x7 and
# 14x14 maps). A task is (image, band of output rows, group of channel vectors): the weights
# of a channel vector stay in registers over the whole band (a 7x7 map reloads them once, not
# once per row), and small maps with many channels still split into enough tasks. Kernel rows
# outside the image read a zero buffer (no row tests); border columns pick the zero buffer per
# tap by a select. The epilogue is bias, residual, clamp, then optionally HSwish and a scalar
# multiply-add (PP-LCNet's depthwise layers end in HSwish and a learnable affine).
DW_SPEC_CONTEXT = ContextLayout(
    "depthwise_spec",
    ("x", "xn", "h", "w", "oh", "ow", "sh", "dh", "pt", "pl", "c", "y", "ldy", "wp", "cp", "bias", "res", "ldr",
     "lo", "hi", "ox_lo", "ox_hi", "zr", "band", "gv", "nb", "ng", "pmul", "padd", "seg", "ns"),
    pointers=("x", "y", "wp", "bias", "res", "zr"))
DW_SPEC_MAX_TAPS = 25
DW_SPEC_COLUMNS = 32  # output columns per block inside a task


@dataclass(frozen=True)
class DwSpec:
    """What a specialized depthwise module is compiled for."""

    kh: int
    kw: int
    sw: int
    dw: int
    ldx: int
    residual: bool
    activation: str = ""  # "" (the clamp only) or "hswish" (after the clamp)
    affine: bool = False  # y * pmul + padd after the activation (scalars)
    tail: bool = True  # the channel count is not a multiple of the vector width (a masked part)
    x_bf16: bool = False  # X is bf16 in memory (bf16 hint), widened to f32 as it is read
    y_bf16: bool = False  # Y is stored bf16 (rounded to nearest even after the epilogue)
    #: kernel-row ranges [first, end) that output rows at the top and bottom borders use, each
    #: compiled as a copy of the row's loops without the rows outside the image (see
    #: :func:`border_row_sets`); other border rows read the zero buffer for those rows
    row_sets: tuple[tuple[int, int], ...] = ()


#: the share of a layer's taps that fall on padding rows from which its border rows get loops
#: of their own (:func:`border_row_sets`): PP-OCR rec's 5x5 layers on 3-, 6- and 12-row maps
#: read 40%, 20% and 10% of their taps from the zero buffer
ROW_SETS_FROM = 0.04


def border_row_sets(oh: int, h: int, kh: int, sh: int, dh: int, pt: int) -> tuple[tuple[int, int], ...]:
    """The kernel-row ranges [first, end) inside the image of the output rows whose kernel
    reaches above or below it (empty ranges left out), when such rows' padding taps are at
    least ``ROW_SETS_FROM`` of the layer's taps; else ``()``."""
    sets: set[tuple[int, int]] = set()
    skipped = 0
    for oy in range(oh):
        valid = [ky for ky in range(kh) if 0 <= oy * sh - pt + ky * dh < h]
        if valid and len(valid) < kh:
            sets.add((valid[0], valid[-1] + 1))
            skipped += kh - len(valid)
    if skipped < ROW_SETS_FROM * oh * kh:
        return ()
    return tuple(sorted(sets))


#: stride-1 interior pixels of the specialized kernel share their input loads (``EMBER_DW_SHARED_LOADS=0``:
#: each pixel loads its own taps)
SHARED_LOADS = os.environ.get("EMBER_DW_SHARED_LOADS", "1") != "0"


def spec_blocking(isa: Isa, kh: int, kw: int) -> tuple[int, int]:
    """(pixels in registers at once, accumulators per pixel) that keep the weights, the bias,
    the clamp bounds and the accumulators in the vector registers of ``isa``."""
    regs = 32 if isa.f32_lanes >= 16 else 16
    budget = regs - 2 - (kh * kw + 3)
    # some weights are reloaded anyway: two pixels share each load (measured best). At a budget
    # of 2 (5x5 on AVX-512) one pixel left no register for the epilogue's constants and ran its
    # 25 FMAs in two chains: two pixels were 15-20% faster (one thread, PP-OCR rec's 12x80 and
    # 6x80 maps and 14x14 / 28x28 ones, with and without HSwish and the affine)
    if budget < 2 or (budget == 2 and regs == 32):
        return 2, 2 if kh > 1 else 1
    parts = max(1, min(kh, 3, budget))
    return max(1, min(4, budget // parts)), parts


def _build_dw_spec(prefix: str, isa: Isa, s: DwSpec) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    L = isa.f32_lanes
    px, parts = spec_blocking(isa, s.kh, s.kw)
    fn = Emitter.function(m, f"{prefix}_dw_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = ContextEmitter(m, fn, DW_SPEC_CONTEXT)
    ctx.add_attribute("noalias")
    b, vt = e.b, vec(F32, L)
    img, sg, oy0, oy1, v0, v1, nfull = emit_spec_task(e, task, L)
    oh, ow, H, W, c = e.arg("oh"), e.arg("ow"), e.arg("h"), e.arg("w"), e.arg("c")
    XT = I16 if s.x_bf16 else F32
    ximg = e.gep(XT, e.arg("x", PTR), b.mul(img, e.arg("xn")))
    rowstride = b.mul(W, c64(s.ldx))
    vi16, vi32 = vec(I16, L), vec(I32, L)

    def load_x(ptr: ir.Value, mask: ir.Value | None) -> ir.Value:
        if not s.x_bf16:
            return masked_load(e, vt, ptr, mask)
        if mask is None:
            h = e.load(vi16, ptr, align=2)
        else:
            h = e.call(f"llvm.masked.load.v{L}i16.p0", vi16, [ptr, c32(2), mask, ir.Constant(vi16, None)])
        return b.bitcast(b.shl(b.zext(h, vi32), ir.Constant(vi32, [16] * L)), vt)

    zr, wp, cp = e.arg("zr", PTR), e.arg("wp", PTR), e.arg("cp")
    ox_lo, ox_hi, pl = e.arg("ox_lo"), e.arg("ox_hi"), e.arg("pl")
    ldy, ldr = e.arg("ldy"), e.arg("ldr")
    vlo, vhi = e.splat(e.arg("lo", F32), L), e.splat(e.arg("hi", F32), L)
    vmul, vadd = e.splat(e.arg("pmul", F32), L), e.splat(e.arg("padd", F32), L)
    three, zero, six, sixth = (ir.Constant(vt, [ir.Constant(F32, v)] * L) for v in (3.0, 0.0, 6.0, 1.0 / 6.0))
    if s.activation not in ("", "hswish"):
        raise ValueError(f"depthwise activation {s.activation!r}")

    def channel_vector(ch: ir.Value, mask: ir.Value | None, sx0: ir.Value, sx1: ir.Value) -> None:
        wv = [e.load(vt, e.gep(F32, wp, b.add(b.mul(c64(t), cp), ch)), align=4) for t in range(s.kh * s.kw)]
        bv = masked_load(e, vt, e.gep(F32, e.arg("bias", PTR), ch), mask)
        zcol = e.gep(XT, zr, ch)
        with e.loop(oy0, oy1, name="oy") as oy:
            iy0 = b.sub(b.mul(oy, e.arg("sh")), e.arg("pt"))
            rows, ok = [], []
            for ky in range(s.kh):
                iy = b.add(iy0, b.mul(c64(ky), e.arg("dh")))
                ok.append(b.icmp_unsigned("<", iy, H))
                base = b.select(ok[-1], e.gep(XT, ximg, b.mul(iy, rowstride)), zr)
                rows.append(e.gep(XT, base, ch))
            pixrow = b.mul(b.add(b.mul(img, oh), oy), ow)

            def pixels(ox: ir.Value, n: int, checked: bool, kys: range) -> None:
                acc = [[bv if part == 0 else ir.Constant(vt, None) for part in range(parts)] for _ in range(n)]
                shared = n > 1 and not checked and s.sw == 1 and s.dw == 1 and SHARED_LOADS
                if shared:
                    # stride 1, interior: pixel p's tap kx is input column p + kx, so each of a
                    # kernel row's kw + n - 1 columns is loaded (and widened) once for all n
                    # pixels; each pixel's FMAs keep their order (ky, then kx): the same bits
                    ix0 = b.sub(ox, pl)
                    for ky in kys:
                        for j in range(s.kw + n - 1):
                            xv = load_x(e.gep(XT, rows[ky], b.mul(b.add(ix0, c64(j)), c64(s.ldx))), mask)
                            for p in range(n):
                                kx = j - p
                                if 0 <= kx < s.kw:
                                    part = ky % parts
                                    acc[p][part] = fmuladd(e, xv, wv[ky * s.kw + kx], acc[p][part])
                for p in range(n) if not shared else ():
                    ix = b.sub(b.mul(b.add(ox, c64(p)), c64(s.sw)), pl)
                    for ky in kys:
                        col = e.gep(XT, rows[ky], b.mul(ix, c64(s.ldx)))
                        for kx in range(s.kw):
                            ptr = e.gep(XT, col, c64(kx * s.dw * s.ldx))
                            if checked:
                                ok = b.icmp_unsigned("<", b.add(ix, c64(kx * s.dw)), W)
                                ptr = b.select(ok, ptr, zcol)
                            xv = load_x(ptr, mask)
                            part = ky % parts
                            acc[p][part] = fmuladd(e, xv, wv[ky * s.kw + kx], acc[p][part])
                for p in range(n):
                    total = acc[p][0]
                    for extra in acc[p][1:]:
                        total = b.fadd(total, extra)
                    pix = b.add(pixrow, b.add(ox, c64(p)))
                    if s.residual:
                        rp = e.gep(F32, e.arg("res", PTR), b.add(b.mul(pix, ldr), ch))
                        total = b.fadd(total, masked_load(e, vt, rp, mask))
                    total = b.select(b.fcmp_ordered("<", total, vlo), vlo, total)
                    total = b.select(b.fcmp_ordered(">", total, vhi), vhi, total)
                    if s.activation == "hswish":  # x * clamp(x + 3, 0, 6) / 6
                        t = b.fadd(total, three)
                        t = b.select(b.fcmp_ordered("<", t, zero), zero, t)
                        t = b.select(b.fcmp_ordered(">", t, six), six, t)
                        total = b.fmul(b.fmul(total, t), sixth)
                    if s.affine:
                        total = fmuladd(e, total, vmul, vadd)
                    if s.y_bf16:
                        store_bf16(e, total, e.gep(I16, e.arg("y", PTR), b.add(b.mul(pix, ldy), ch)), mask)
                    else:
                        masked_store(e, total, e.gep(F32, e.arg("y", PTR), b.add(b.mul(pix, ldy), ch)), mask)

            # the block's columns [sx0, sx1): the border and interior parts of them
            l1 = e.max(sx0, e.min(ox_lo, sx1))
            i0, i1 = l1, e.max(l1, e.min(ox_hi, sx1))
            main_end = b.add(i0, b.mul(b.sdiv(b.sub(i1, i0), c64(px)), c64(px)))

            def columns(kys: range) -> None:
                with e.loop(sx0, l1, name="oxl") as ox:
                    pixels(ox, 1, True, kys)
                with e.loop(i0, main_end, px, name="ox") as ox:
                    pixels(ox, px, False, kys)
                if px > 1:
                    with e.loop(main_end, i1, name="oxr") as ox:
                        pixels(ox, 1, False, kys)
                with e.loop(i1, sx1, name="oxe") as ox:
                    pixels(ox, 1, True, kys)

            def row_variants(sets: tuple[tuple[int, int], ...]) -> None:
                """A border row whose kernel rows inside the image are one of ``sets`` runs
                only those; any other row all kh (the zero buffer for those outside)."""
                if not sets:
                    columns(range(s.kh))
                    return
                first, end = sets[0]
                cond = b.and_(ok[first], ok[end - 1])
                if first > 0:
                    cond = b.and_(cond, b.not_(ok[first - 1]))
                if end < s.kh:
                    cond = b.and_(cond, b.not_(ok[end]))
                with b.if_else(cond) as (inside, other):
                    with inside:
                        columns(range(first, end))
                    with other:
                        row_variants(sets[1:])

            row_variants(s.row_sets)

    # this task's columns, in blocks of DW_SPEC_COLUMNS: the lines of a block's pixels that
    # one channel vector reads stay in L1 for the next vectors (adjacent-line prefetch)
    seg0 = b.mul(sg, e.arg("seg"))
    seg1 = e.min(ow, b.add(seg0, e.arg("seg")))
    with e.loop(seg0, seg1, DW_SPEC_COLUMNS, name="blk") as bx0:
        bx1 = e.min(seg1, b.add(bx0, c64(DW_SPEC_COLUMNS)))
        with e.loop(v0, e.min(v1, nfull), name="cv") as cv:
            channel_vector(b.mul(cv, c64(L)), None, bx0, bx1)
        if s.tail:
            with b.if_then(b.icmp_signed(">", v1, nfull)):
                ch = b.mul(nfull, c64(L))
                channel_vector(ch, lane_mask(e, b.sub(c, ch), L), bx0, bx1)
    b.ret_void()
    return m


@functools.cache
def _dw_spec_library(isa: Isa, spec: DwSpec) -> jit.Library:
    s = spec
    px, parts = spec_blocking(isa, s.kh, s.kw)
    return jit.load(f"depthwise_spec|{isa.level}|k{s.kh}x{s.kw}|s{s.sw}|d{s.dw}|ldx{s.ldx}|r{int(s.residual)}"
                    f"|a{s.activation or 'clamp'}|f{int(s.affine)}|t{int(s.tail)}|p{px}x{parts}|c{DW_SPEC_COLUMNS}"
                    f"|sl{int(SHARED_LOADS)}"
                    + (f"|x16{int(s.x_bf16)}|y16{int(s.y_bf16)}" if s.x_bf16 or s.y_bf16 else "")
                    + (f"|rs{'.'.join(f'{a}{c}' for a, c in s.row_sets)}" if s.row_sets else ""),
                    isa, lambda p: _build_dw_spec(p, isa, spec))


def dw_spec_task_address(spec: DwSpec, isa: Isa | None = None) -> int:
    """Address of the specialized depthwise task for ``spec``."""
    return _dw_spec_library(isa or host_isa(), spec).address("dw_task")


def emit_spec_task(e: ContextEmitter, task: ir.Value, width: int) -> tuple[ir.Value, ...]:
    """The emitted side of :func:`spec_tasks`: ``task`` -> (image, column segment, first and end
    output row of its band, first and end channel block of its group, full blocks of ``width``
    channels), from the context words ``nb ng ns band gv oh c``."""
    b = e.b
    nb, ng, ns = e.arg("nb"), e.arg("ng"), e.arg("ns")
    per_band = b.mul(ng, ns)
    per_img = b.mul(nb, per_band)
    img, r = b.sdiv(task, per_img), b.srem(task, per_img)
    band, r = b.sdiv(r, per_band), b.srem(r, per_band)
    grp, sg = b.sdiv(r, ns), b.srem(r, ns)
    c = e.arg("c")
    oy0 = b.mul(band, e.arg("band"))
    oy1 = e.min(e.arg("oh"), b.add(oy0, e.arg("band")))
    v0 = b.mul(grp, e.arg("gv"))
    v1 = e.min(e.cdiv(c, width), b.add(v0, e.arg("gv")))
    nfull = b.sdiv(c, c64(width))
    return img, sg, oy0, oy1, v0, v1, nfull


def spec_tasks(batch: int, oh: int, ow: int, channels: int, taps: int, lanes: int,
               threads: int) -> tuple[int, int, int, int, int, int]:
    """(rows per band, channel vectors per group, bands, groups, columns per segment, segments)
    of the specialized kernel: bands of about 64 output pixels, each task all channels of its
    pixels (they were written together by the layer before); on two or more threads, when that
    gives fewer than 4 tasks per thread, rows are cut into segments of at least 4 columns, and if
    there are still too few, the channels into groups of 256 bytes, halved until there are enough.
    Small maps (``WHOLE_ROWS_BELOW``, at most 32 columns) whose rows split evenly over the
    threads get one band of whole rows per thread instead."""
    nvec = -(-channels // lanes)
    band = max(1, min(oh, -(-64 // ow)))
    if (threads > 1 and batch == 1 and oh % threads == 0 and oh > threads and ow <= 32
            and oh * ow * nvec * (taps + 4) < WHOLE_ROWS_BELOW):
        # a small map whose rows split evenly: one band of whole rows per thread, no segments
        # or channel groups (see WHOLE_ROWS_BELOW); the caller takes the top band, a worker the
        # bottom one, as the 1x1 convolutions around it split their rows
        return oh // threads, nvec, threads, 1, ow, 1
    nb = -(-oh // band)
    # one thread: bands only (14x14 maps cut into 7-column segments cost 17-19% more CPU time)
    want = 4 * threads if threads > 1 else 1
    ns = max(1, min(-(-want // (batch * nb)), ow // 4))
    seg = -(-ow // ns)
    ns = -(-ow // seg)
    gv = nvec
    if batch * nb * ns < want:
        gv = max(1, min(nvec, 64 // lanes))
        while gv > 1 and batch * nb * ns * -(-nvec // gv) < want:
            gv = -(-gv // 2)
    if threads > 1 and batch * nb * ns * -(-nvec // gv) < BALANCE_BELOW * threads:
        band, ns, gv = _balance(batch, oh, ow, nvec, band, taps, threads, ns, gv)
        nb, seg = -(-oh // band), -(-ow // ns)
    return band, gv, nb, -(-nvec // gv), seg, ns


def spec_threads(batch: int, oh: int, ow: int, channels: int, taps: int, lanes: int, threads: int) -> int:
    """Threads for a specialized depthwise layer: one when its work (in :func:`task_costs`'
    units) is below ``SERIAL_BELOW``, else ``threads``. MobileNetV2's 14x14 and 7x7 layers
    (11-25 us on one thread) ran at 0.70-1.05x their one-thread time on two (quiet machine,
    ``layers.py --steps``): the split saves less than the fork-join and the rows the other core
    wrote cost."""
    work = batch * oh * ow * -(-channels // lanes) * (taps + 4)
    return 1 if work < SERIAL_BELOW else threads


#: work under which a map at most 32 columns wide whose rows split evenly over the threads gets
#: one band of whole rows per thread (wider maps, PP-OCR's, were not measured): the 4-task-per-thread split cuts 14x14 rows into 7-column segments, which cost
#: (one thread, CPU time, all tasks) 8-10% more work on 14x14x480/672 5x5 and 23% on 14x14x576
#: 3x3 than whole rows; 28x28x192 3x3 in 10 bands of 3 rows about 10% more
WHOLE_ROWS_BELOW = 300_000
#: work under which a depthwise layer runs on one thread: 0, off. Measured alone
#: (``layers.py --steps``) MobileNetV2's 14x14/7x7 layers ran no faster on two threads, but
#: in the whole network (``layers.py --ab``, quiet machine, 40 alternating rounds) splitting
#: them was faster than running them on one thread at ~110,000 units (about 30 us: 7x7x1152
#: 5x5 is 102,000): MobileNetV2 0.91x, EfficientNet-Lite0 0.95x the time (the rows stay on the
#: thread that wrote them, ``ThreadPool.tasks_from_ends``; a serial layer idles the other core)
SERIAL_BELOW = 0
BALANCE_BELOW = 16  # tasks per thread under which the segments and channel groups are rebalanced
TASK_COST = 400  # fixed cost of a task in the units of task_costs (about a pixel-vector-tap each)


def task_costs(batch: int, oh: int, ow: int, nvec: int, band: int, taps: int, ns: int, gv: int) -> list[int]:
    """The tasks' costs in :func:`emit_spec_task`'s order (the order a pool hands them out):
    its pixel-vectors' taps, the halo rows and columns it loads again (one thread, CPU time,
    3x3: bands of one row cost 15% more work than bands of two at 30x40x192, rows cut in two
    segments 3-7% more at 28x28 and 30x40) and a fixed cost."""
    seg = -(-ow // ns)
    halo = math.isqrt(taps) - 1
    rows = [min(band, oh - y) for y in range(0, oh, band)]
    cols = [min(seg, ow - x) for x in range(0, ow, seg)]
    vecs = [min(gv, nvec - v) for v in range(0, nvec, gv)]
    one = [v * (r * c * (taps + 4) + (2 * c + 8 * r) * halo) + TASK_COST for r in rows for v in vecs for c in cols]
    return one * batch


def task_makespan(costs: list[int], threads: int) -> int:
    """Finish time of ``costs`` handed out in order to whichever of ``threads`` is free first."""
    free = [0] * threads
    for c in costs:
        i = free.index(min(free))
        free[i] += c
    return max(free)


def _balance(batch: int, oh: int, ow: int, nvec: int, band: int, taps: int, threads: int, ns: int,
             gv: int) -> tuple[int, int, int]:
    """(rows per band, segments, channel vectors per group) whose tasks finish first on
    ``threads`` threads (a few tasks per thread leave one thread idle at the end: 9 equal tasks
    on two threads finish after 5): the given ones unless another choice is over 2% faster by
    :func:`task_makespan`; no fewer tasks than given or 4 per thread, bands of half to all the
    given rows, segments at least 4 columns wide, channel groups (when the channels were split
    at all) at most twice the given ones."""
    def tasks(bd: int, n_seg: int, g: int) -> int:
        return batch * -(-oh // bd) * n_seg * -(-nvec // g)

    best = (task_makespan(task_costs(batch, oh, ow, nvec, band, taps, ns, gv), threads), band, ns, gv)
    limit = best[0] * 0.98
    fewest = min(tasks(band, ns, gv), 4 * threads)  # slack for a thread that starts late
    groups = [gv] if gv == nvec else list(range(1, min(nvec, 2 * gv) + 1))
    segments = sorted({-(-ow // -(-ow // n)) for n in range(1, max(1, ow // 4) + 1)})  # counts widths really give
    for bd in range(max(1, band // 2), band + 1):
        for n_seg in segments:
            for g in groups:
                if not fewest <= tasks(bd, n_seg, g) <= BALANCE_BELOW * threads:
                    continue
                span = task_makespan(task_costs(batch, oh, ow, nvec, bd, taps, n_seg, g), threads)
                if span < limit and span < best[0]:
                    best = (span, bd, n_seg, g)
    return best[1], best[2], best[3]
