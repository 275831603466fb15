"""int8 pooling on u8 NHWC steps: max pooling (u8 out) and average pooling (f32 out); the row
packing of a stem's input.

The input is what ``Int8Quantize`` (or an int8 epilogue writing u8) leaves for the int8
convolutions: u8 NHWC pixels whose channel rows are padded to a multiple of 4 bytes (the pad
bytes hold the zero point). Max pooling of FakeQuantize steps equals the steps of the max
pooling in float (FakeQuantize is monotone), so a MaxPool between two int8 layers runs on the
u8 bytes, a quarter of the f32 traffic. A window starts from 0 (the lowest step) and takes
only real pixels, so padding never wins, as OpenVINO's MaxPool; the pad channels stay the
zero point. Vectorized over the channel bytes (64 per AVX-512 register); task = (image,
output row).

Average pooling sums ``step - zero point`` over a window's real pixels in i32 (exact) and
multiplies by a per-output-pixel factor (the activation scale over the window's divisor, from
the pooling's own semantics, so padding counts as 0.0 exactly when OpenVINO's AvgPool counts
it): the f32 average of the FakeQuantize values, read from a quarter of the bytes.

Row packing (:func:`pack_rows_u8`) turns a stem (1-3 channels, a KH x KW kernel of stride
``(SH, SW)``) into a convolution whose taps are read in place: packed row ``r``, column ``ox``
holds the ``SH * KW * C`` bytes ``x[r * SH - PT + dy, ox * SW - PL + kx, c]`` side by side,
(dy, kx, c) order, the zero point where that pixel is padding. A (ceil(KH / SH) x 1)
convolution of stride 1 over the packed rows is the stem (each input byte is copied about
KW / SW times, once per inference, instead of KH x KW / (SH x SW) times by each task's
gathering), and its A rows are uniformly strided, so AMX tiles load them straight.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.amx import byte_mask, store_pixel_channels
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I8, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.runtime.kernel_call import BoundKernel

POOL_U8_CONTEXT = ContextLayout(
    "pool_u8",
    ("x", "y", "h", "w", "c", "oh", "ow", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pl", "xn", "yn"),
    pointers=("x", "y"))


AVG_U8_CONTEXT = ContextLayout(
    "avg_pool_u8",
    ("x", "y", "f", "h", "w", "cx", "c", "oh", "ow", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pl", "xn", "yn", "zp"),
    pointers=("x", "y", "f"))

PACK_ROWS_CONTEXT = ContextLayout(
    "pack_rows_u8",
    ("x", "y", "zero", "h", "w", "ldx", "c", "rows", "ow", "g", "kw", "sw", "dw", "pt", "pl", "ck", "xn", "yn"),
    pointers=("x", "y", "zero"))


def _emit_max_pool(m: ir.Module, prefix: str, lanes: int) -> None:
    fn = Emitter.function(m, f"{prefix}_max_pool_u8_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, POOL_U8_CONTEXT)
    b = e.b
    task = fn.args[1]
    vt = vec(I8, lanes)
    oh, c = e.arg("oh"), e.arg("c")
    oy, img = b.srem(task, oh), b.sdiv(task, oh)
    H, W, kh, kw = e.arg("h"), e.arg("w"), e.arg("kh"), e.arg("kw")
    x = e.gep(I8, e.arg("x", PTR), b.mul(img, e.arg("xn")))
    y = e.gep(I8, e.arg("y", PTR), b.add(b.mul(img, e.arg("yn")), b.mul(b.mul(oy, e.arg("ow")), c)))
    iy0 = b.sub(b.mul(oy, e.arg("sh")), e.arg("pt"))

    def window(ox: ir.Value, ch: ir.Value, typ: ir.Type) -> ir.Value:
        acc = e.var(typ, ir.Constant(typ, None))
        ix0 = b.sub(b.mul(ox, e.arg("sw")), e.arg("pl"))
        with e.loop(0, kh, name="ky") as ky:
            iy = b.add(iy0, b.mul(ky, e.arg("dh")))
            with b.if_then(b.icmp_unsigned("<", iy, H)):
                with e.loop(0, kw, name="kx") as kx:
                    ix = b.add(ix0, b.mul(kx, e.arg("dw")))
                    with b.if_then(b.icmp_unsigned("<", ix, W)):
                        v = e.load(typ, e.gep(I8, x, b.add(b.mul(b.add(b.mul(iy, W), ix), c), ch)), align=1)
                        a = e.load(typ, acc)
                        b.store(b.select(b.icmp_unsigned(">", v, a), v, a), acc)
        return e.load(typ, acc)

    with e.loop(0, e.arg("ow"), name="ox") as ox:
        yrow = e.gep(I8, y, b.mul(ox, c))
        nfull = b.mul(b.sdiv(c, c64(lanes)), c64(lanes))
        with e.loop(0, nfull, lanes, name="cv") as ch:
            b.store(window(ox, ch, vt), e.gep(I8, yrow, ch), align=1)
        with e.loop(nfull, c, 1, name="cs") as ch:
            b.store(window(ox, ch, I8), e.gep(I8, yrow, ch))
    b.ret_void()


def _emit_avg_pool(m: ir.Module, prefix: str, lanes: int) -> None:
    """y[f32] = factor[oy, ox] * sum over the window's real pixels of (x[u8] - zero point)."""
    fn = Emitter.function(m, f"{prefix}_avg_pool_u8_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, AVG_U8_CONTEXT)
    b = e.b
    task = fn.args[1]
    i32v, f32v = vec(I32, lanes), vec(F32, lanes)
    oh, ow, cx, c = e.arg("oh"), e.arg("ow"), e.arg("cx"), e.arg("c")
    oy, img = b.srem(task, oh), b.sdiv(task, oh)
    H, W, kh, kw = e.arg("h"), e.arg("w"), e.arg("kh"), e.arg("kw")
    zp = b.trunc(e.arg("zp"), I32)
    x = e.gep(I8, e.arg("x", PTR), b.mul(img, e.arg("xn")))
    y = e.gep(F32, e.arg("y", PTR), b.add(b.mul(img, e.arg("yn")), b.mul(b.mul(oy, ow), c)))
    factors = e.gep(F32, e.arg("f", PTR), b.mul(oy, ow))
    iy0 = b.sub(b.mul(oy, e.arg("sh")), e.arg("pt"))

    def window(ox: ir.Value, ch: ir.Value, n: int) -> ir.Value:
        it = i32v if n > 1 else I32
        acc = e.var(it, ir.Constant(it, None))
        zv = e.splat(zp, n) if n > 1 else zp
        ix0 = b.sub(b.mul(ox, e.arg("sw")), e.arg("pl"))
        with e.loop(0, kh, name="ky") as ky:
            iy = b.add(iy0, b.mul(ky, e.arg("dh")))
            with b.if_then(b.icmp_unsigned("<", iy, H)):
                with e.loop(0, kw, name="kx") as kx:
                    ix = b.add(ix0, b.mul(kx, e.arg("dw")))
                    with b.if_then(b.icmp_unsigned("<", ix, W)):
                        ptr = e.gep(I8, x, b.add(b.mul(b.add(b.mul(iy, W), ix), cx), ch))
                        v = b.zext(e.load(vec(I8, n) if n > 1 else I8, ptr, align=1), it)
                        b.store(b.add(e.load(it, acc), b.sub(v, zv)), acc)
        return b.sitofp(e.load(it, acc), f32v if n > 1 else F32)

    with e.loop(0, ow, name="ox") as ox:
        f = e.load(F32, e.gep(F32, factors, ox))
        yrow = e.gep(F32, y, b.mul(ox, c))
        nfull = b.mul(b.sdiv(c, c64(lanes)), c64(lanes))
        with e.loop(0, nfull, lanes, name="cv") as ch:
            b.store(b.fmul(window(ox, ch, lanes), e.splat(f, lanes)), e.gep(F32, yrow, ch), align=4)
        with e.loop(nfull, c, 1, name="cs") as ch:
            b.store(b.fmul(window(ox, ch, 1), f), e.gep(F32, yrow, ch))
    b.ret_void()


def _emit_pack_rows(m: ir.Module, prefix: str, wide: bool) -> None:
    """Task = (image, packed row): ``g`` input rows, each ``ow`` windows of ``kw`` pixels of
    ``c`` bytes. A pixel is copied as a 4-byte word at ``kx * c`` (its last bytes overwritten by
    the next tap's; the packed row's slack takes the last one's); ``wide`` (AVX-512BW): a window
    inside an image of 4-byte pixels is one masked load, one shuffle, one masked store."""
    fn = Emitter.function(m, f"{prefix}_pack_rows_u8_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, PACK_ROWS_CONTEXT)
    b = e.b
    a = e.arg
    task = fn.args[1]
    rows = a("rows")
    r, img = b.srem(task, rows), b.sdiv(task, rows)
    H, W, ldx, c, ow, kw, sw, dw, ck = a("h"), a("w"), a("ldx"), a("c"), a("ow"), a("kw"), a("sw"), a("dw"), a("ck")
    zero = a("zero", PTR)
    x = e.gep(I8, a("x", PTR), b.mul(img, a("xn")))
    yrow = e.gep(I8, a("y", PTR), b.add(b.mul(img, a("yn")), b.mul(b.mul(r, ow), ck)))
    span = b.mul(kw, c)
    whole_ok = b.and_(b.and_(b.icmp_signed("==", ldx, c64(4)), b.icmp_signed("==", dw, c64(1))),
                      b.icmp_signed("<=", kw, c64(16)))
    with e.loop(0, a("g"), name="dy") as dy:
        iy = b.add(b.sub(b.mul(r, a("g")), a("pt")), dy)
        yok = b.icmp_unsigned("<", iy, H)
        xr = e.gep(I8, x, b.mul(b.mul(iy, W), ldx))
        with e.loop(0, ow, name="ox") as ox:
            dst = e.gep(I8, yrow, b.add(b.mul(ox, ck), b.mul(dy, span)))
            ix0 = b.sub(b.mul(ox, sw), a("pl"))

            def taps() -> None:
                with e.loop(0, kw, name="kx") as kx:
                    ix = b.add(ix0, b.mul(kx, dw))
                    ok = b.and_(yok, b.icmp_unsigned("<", ix, W))
                    src = b.select(ok, e.gep(I8, xr, b.mul(ix, ldx)), zero)
                    b.store(e.load(I32, src, align=1), e.gep(I8, dst, b.mul(kx, c)), align=1)

            if not wide:
                taps()
            else:
                _whole_windows(e, yok, whole_ok, ix0, kw, W, xr, dst, span, c, taps)
    b.ret_void()


def _whole_windows(e: ContextEmitter, yok: ir.Value, whole_ok: ir.Value, ix0: ir.Value, kw: ir.Value, W: ir.Value,
                   xr: ir.Value, dst: ir.Value, span: ir.Value, c: ir.Value, taps: Callable[[], None]) -> None:
    """A window inside the image: its 4-byte pixels compacted to ``c`` bytes each with one
    masked load, one shuffle and one masked store (AVX-512BW); else ``taps``."""
    b = e.b
    v64 = vec(I8, 64)
    inside = b.and_(b.and_(yok, whole_ok), b.and_(
        b.icmp_signed(">=", ix0, c64(0)), b.icmp_signed("<", b.add(ix0, b.sub(kw, c64(1))), W)))
    with b.if_else(inside) as (whole, per_tap):
        with whole:
            row = e.call("llvm.masked.load.v64i8.p0", v64, [e.gep(I8, xr, b.mul(ix0, c64(4))), c32(1),
                                                            byte_mask(e, b.mul(kw, c64(4))), ir.Constant(v64, None)])
            store_pixel_channels(e, row, dst, byte_mask(e, span), c)
        with per_tap:
            taps()


def _build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_max_pool(m, prefix, isa.vector_bits // 8)
    _emit_avg_pool(m, prefix, isa.f32_lanes)
    _emit_pack_rows(m, prefix, isa.vector_bits >= 512)
    return m


@functools.cache
def _library(isa: Isa) -> jit.Library:
    return jit.load(f"int8_misc|{isa.level}", isa, lambda p: _build(p, isa))


def max_pool_u8(x: np.ndarray, y: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
                dilations: tuple[int, int], pads_begin: tuple[int, int], threads: int,
                isa: Isa | None = None) -> BoundKernel:
    """A bound max pooling of u8 NHWC ``x`` [N, H, W, C] into ``y`` [N, OH, OW, C] (both
    contiguous, the same C: the padded channel rows are pooled too)."""
    n, h, w, c = x.shape
    _, oh, ow, cy = y.shape
    if cy != c or x.dtype != np.uint8 or y.dtype != np.uint8 or not (x.flags.c_contiguous and y.flags.c_contiguous):
        raise ValueError("ember: internal: max_pool_u8 needs contiguous u8 NHWC arrays with the same channels")
    isa = isa or host_isa()
    ctx = POOL_U8_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, h=h, w=w, c=c, oh=oh, ow=ow, kh=kernel[0],
                              kw=kernel[1], sh=strides[0], sw=strides[1], dh=dilations[0], dw=dilations[1],
                              pt=pads_begin[0], pl=pads_begin[1], xn=h * w * c, yn=oh * ow * c)
    return BoundKernel(_library(isa).address("max_pool_u8_task"), ctx, n * oh if y.size else 0, threads, (x, y),
                       layout=POOL_U8_CONTEXT)


def avg_pool_u8(x: np.ndarray, y: np.ndarray, factors: np.ndarray, kernel: tuple[int, int],
                strides: tuple[int, int], dilations: tuple[int, int], pads_begin: tuple[int, int], zero_point: int,
                threads: int, isa: Isa | None = None) -> BoundKernel:
    """A bound average pooling of u8 NHWC steps ``x`` [N, H, W, Cx] into f32 NHWC ``y``
    [N, OH, OW, C] (C <= Cx): ``factors[oy, ox] * sum(x - zero_point)`` over each window's real
    pixels (``factors`` holds the scale over the divisor, so padding counts as 0.0 or not)."""
    n, h, w, cx = x.shape
    _, oh, ow, c = y.shape
    if c > cx or x.dtype != np.uint8 or y.dtype != np.float32 or factors.shape != (oh, ow) \
            or factors.dtype != np.float32 or not (x.flags.c_contiguous and y.flags.c_contiguous
                                                     and factors.flags.c_contiguous):
        raise ValueError("ember: internal: avg_pool_u8 needs contiguous u8 NHWC in, f32 NHWC out, [OH, OW] factors")
    isa = isa or host_isa()
    ctx = AVG_U8_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, f=factors.ctypes.data, h=h, w=w, cx=cx, c=c, oh=oh,
                             ow=ow, kh=kernel[0], kw=kernel[1], sh=strides[0], sw=strides[1], dh=dilations[0],
                             dw=dilations[1], pt=pads_begin[0], pl=pads_begin[1], xn=h * w * cx, yn=oh * ow * c,
                             zp=zero_point)
    return BoundKernel(_library(isa).address("avg_pool_u8_task"), ctx, n * oh if y.size else 0, threads,
                       (x, y, factors), layout=AVG_U8_CONTEXT)


def packed_row_bytes(c: int, kw: int, rows_per_pack: int) -> int:
    """Bytes per packed pixel of :func:`pack_rows_u8`: ``rows_per_pack * kw * c`` and the slack
    its last 4-byte word needs, rounded up to 4."""
    return -(-(rows_per_pack * kw * c + 4 - c) // 4) * 4


def pack_rows_u8(x: np.ndarray, y: np.ndarray, zero: np.ndarray, c: int, kw: int, strides: tuple[int, int],
                 dilation_w: int, pads_begin: tuple[int, int], threads: int, isa: Isa | None = None) -> BoundKernel:
    """A bound row packing of u8 NHWC ``x`` [N, H, W, Cx] (``c`` <= 3 real channels, Cx = 4:
    4-byte pixels) into ``y`` [N, R, OW, CK] (:func:`packed_row_bytes`): ``y[n, r, ox, (dy * kw
    + kx) * c + ch] = x[n, r * SH - PT + dy, ox * SW - PL + kx * dilation_w, ch]`` for dy < SH,
    ``zero`` (at least 4 bytes of the zero point) where that pixel is padding. Bytes of ``y``
    past a pixel's ``SH * kw * c`` are not meaningful (the packed weights are zero there)."""
    n, h, w, cx = x.shape
    _, rows, ow, ck = y.shape
    sh, sw = strides
    if not 1 <= c <= 3 or cx != 4 or ck < packed_row_bytes(c, kw, sh) or x.dtype != np.uint8 \
            or y.dtype != np.uint8 or zero.size < 4 or not (x.flags.c_contiguous and y.flags.c_contiguous):
        raise ValueError("ember: internal: pack_rows_u8 needs contiguous u8 NHWC arrays of 4-byte pixels")
    isa = isa or host_isa()
    ctx = PACK_ROWS_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, zero=zero.ctypes.data, h=h, w=w, ldx=cx, c=c,
                                rows=rows, ow=ow, g=sh, kw=kw, sw=sw, dw=dilation_w, pt=pads_begin[0],
                                pl=pads_begin[1], ck=ck, xn=h * w * cx, yn=rows * ow * ck)
    return BoundKernel(_library(isa).address("pack_rows_u8_task"), ctx, n * rows if y.size else 0, threads,
                       (x, y, zero), layout=PACK_ROWS_CONTEXT)


__all__ = ["avg_pool_u8", "max_pool_u8", "pack_rows_u8", "packed_row_bytes"]
