"""The depthwise convolution kernel (groups == input channels == output channels) on NHWC
activations: it vectorizes over channels, one task per output row; for kernels up to 7x7 the
taps are unrolled and a channel vector's weights stay in registers while the pixels stream
by. :class:`~ember.devices.cpu.kernels.conv.Conv2d` binds it.
"""

from __future__ import annotations

import functools

from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I32, I64, PTR, VOID, Emitter, c32, c64, vec
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
