"""2-D convolution on NHWC activations: implicit GEMM (any kernel, stride, dilation,
asymmetric padding, groups) and a dedicated depthwise kernel, both with the fused epilogue
``clamp(conv + bias + residual, lo, hi)``.

Activations are NHWC float32; a tensor may be a channel slice of a wider buffer (its pixel
stride larger than its channel count), so a convolution can read from or write into part
of a concatenation. Weights come in the ONNX/OpenVINO layout ``[OC, IC / groups, KH, KW]``
and are packed once, when the convolution is built.

The general path is the GEMM module's ``igemm_task`` (see :mod:`ember.devices.cpu.gemm`);
depthwise convolution (groups == input channels == output channels) has its own kernel
that vectorizes over channels and keeps a row of output pixels in registers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ember.devices.cpu import jit
from ember.devices.cpu.codegen import F32, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.gemm import (
    NO_EPILOGUE,
    Epilogue,
    IGemmCall,
    PackedWeights,
    _fmuladd,
    _lane_mask,
    _masked_load,
    _masked_store,
    aligned_empty,
    pack_weights,
)
from ember.devices.cpu.isa import Isa, host_isa
from ember.devices.cpu.threadpool import ThreadPool, default_pool
from ember.errors import EmberError

VERSION = 1
DW_PIXELS = 8  # output pixels kept in registers by the depthwise kernel


@dataclass(frozen=True)
class ConvGeometry:
    """Shape of a 2-D convolution: input ``[batch, h, w, cin]`` NHWC, kernel ``kh x kw``."""

    batch: int
    h: int
    w: int
    cin: int
    cout: int
    kh: int
    kw: int
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    pads_begin: tuple[int, int] = (0, 0)
    pads_end: tuple[int, int] = (0, 0)
    groups: int = 1

    def __post_init__(self) -> None:
        if self.groups < 1 or self.cin % self.groups or self.cout % self.groups:
            raise EmberError(f"ember: convolution channels {self.cin}->{self.cout} do not split into "
                             f"{self.groups} groups")
        if min(self.strides) < 1 or min(self.dilations) < 1 or min(self.kh, self.kw) < 1:
            raise EmberError("ember: convolution strides, dilations and kernel size must be >= 1")
        if min(*self.pads_begin, *self.pads_end) < 0:
            raise EmberError("ember: negative convolution padding")
        if self.oh < 1 or self.ow < 1:
            raise EmberError(f"ember: convolution output would be empty ({self.oh}x{self.ow})")

    @property
    def oh(self) -> int:
        span = self.dilations[0] * (self.kh - 1) + 1
        return (self.h + self.pads_begin[0] + self.pads_end[0] - span) // self.strides[0] + 1

    @property
    def ow(self) -> int:
        span = self.dilations[1] * (self.kw - 1) + 1
        return (self.w + self.pads_begin[1] + self.pads_end[1] - span) // self.strides[1] + 1

    @property
    def depthwise(self) -> bool:
        return self.groups == self.cin == self.cout and self.groups > 1

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.oh, self.ow, self.cout)

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.oh * self.ow * self.cout * (self.cin // self.groups) * self.kh * self.kw


def pack_conv_weights(w: np.ndarray, groups: int = 1, isa: Isa | None = None) -> PackedWeights:
    """Pack ``w[OC, IC / groups, KH, KW]`` for the implicit-GEMM kernel."""
    w = np.asarray(w, np.float32)
    if w.ndim != 4 or w.shape[0] % groups:
        raise EmberError(f"ember: convolution weights must be [OC, IC/groups, KH, KW], got {w.shape}")
    oc, cg, kh, kw = w.shape
    wg = w.reshape(groups, oc // groups, cg, kh, kw).transpose(0, 3, 4, 2, 1)
    return pack_weights(wg.reshape(groups, kh * kw, cg, oc // groups), isa)


# --------------------------------------------------------------------------- depthwise kernel
DW_FIELDS = ("x", "ldx", "xn", "h", "w", "oh", "ow", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pl",
             "c", "y", "ldy", "wp", "cp", "bias", "res", "ldr", "flags", "lo", "hi", "ox_lo", "ox_hi")
DWF = {name: i for i, name in enumerate(DW_FIELDS)}
_DW_BIAS, _DW_RES = 1, 2


def _emit_dw_block(m: ir.Module, name: str, lanes: int, px: int, checked: bool, masked: bool) -> ir.Function:
    """block(ctx, img, oy, ox, cv): ``px`` output pixels from ``ox``, channel vector ``cv``."""
    fn = Emitter.function(m, name, VOID, [PTR, I64, I64, I64, I64], internal=True, noinline=True)
    ctx, img, oy, ox, cv = fn.args
    e = Emitter(m, fn)
    b = e.b

    def f(key: str, typ: ir.Type = I64) -> ir.Value:
        return e.field(ctx, DWF[key], typ)

    vt = vec(F32, lanes)
    zero = ir.Constant(vt, None)
    H, W, kh, kw = f("h"), f("w"), f("kh"), f("kw")
    sh, sw, dh, dw, pt, pl = f("sh"), f("sw"), f("dh"), f("dw"), f("pt"), f("pl")
    ldx, cp = f("ldx"), f("cp")
    ch = b.mul(cv, c64(lanes))
    mask = _lane_mask(e, b.sub(f("c"), ch), lanes) if masked else None
    xbase = e.gep(F32, f("x", PTR), b.add(b.mul(img, f("xn")), ch))
    wbase = e.gep(F32, f("wp", PTR), ch)
    acc = [e.var(vt, zero) for _ in range(px)]
    iy0 = b.sub(b.mul(oy, sh), pt)
    ix0 = [b.sub(b.mul(b.add(ox, c64(p)), sw), pl) for p in range(px)]
    with e.loop(0, kh, name="ky") as ky:
        iy = b.add(iy0, b.mul(ky, dh))
        with b.if_then(b.icmp_unsigned("<", iy, H)):
            xrow = e.gep(F32, xbase, b.mul(b.mul(iy, W), ldx))
            with e.loop(0, kw, name="kx") as kx:
                wv = e.load(vt, e.gep(F32, wbase, b.mul(b.add(b.mul(ky, kw), kx), cp)), align=4)
                kxd = b.mul(kx, dw)
                for p in range(px):
                    ix = b.add(ix0[p], kxd)

                    def tap(p: int = p, ix: ir.Value = ix) -> None:
                        xv = _masked_load(e, vt, e.gep(F32, xrow, b.mul(ix, ldx)), mask)
                        b.store(_fmuladd(e, xv, wv, e.load(vt, acc[p])), acc[p])

                    if checked:
                        with b.if_then(b.icmp_unsigned("<", ix, W)):
                            tap()
                    else:
                        tap()
    flags = b.trunc(f("flags"), I32)
    with b.if_then(b.icmp_unsigned("!=", b.and_(flags, c32(_DW_BIAS)), c32(0))):
        bv = _masked_load(e, vt, e.gep(F32, f("bias", PTR), ch), mask)
        for p in range(px):
            b.store(b.fadd(e.load(vt, acc[p]), bv), acc[p])
    pix0 = b.add(b.mul(b.add(b.mul(img, f("oh")), oy), f("ow")), ox)
    with b.if_then(b.icmp_unsigned("!=", b.and_(flags, c32(_DW_RES)), c32(0))):
        rbase = e.gep(F32, f("res", PTR), b.add(b.mul(pix0, f("ldr")), ch))
        for p in range(px):
            rv = _masked_load(e, vt, e.gep(F32, rbase, b.mul(c64(p), f("ldr"))), mask)
            b.store(b.fadd(e.load(vt, acc[p]), rv), acc[p])
    vlo, vhi = e.splat(f("lo", F32), lanes), e.splat(f("hi", F32), lanes)
    ybase = e.gep(F32, f("y", PTR), b.add(b.mul(pix0, f("ldy")), ch))
    for p in range(px):
        x = e.load(vt, acc[p])
        x = b.select(b.fcmp_ordered("<", x, vlo), vlo, x)
        x = b.select(b.fcmp_ordered(">", x, vhi), vhi, x)
        _masked_store(e, x, e.gep(F32, ybase, b.mul(c64(p), f("ldy"))), mask)
    b.ret_void()
    return fn


def _emit_dw_task(m: ir.Module, prefix: str, lanes: int) -> None:
    blocks = {(px, chk, msk): _emit_dw_block(m, f"{prefix}_dw_{px}_{int(chk)}_{int(msk)}", lanes, px, chk, msk)
              for px, chk in ((DW_PIXELS, False), (1, False), (1, True)) for msk in (False, True)}
    fn = Emitter.function(m, f"{prefix}_dw_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    oh = e.field(ctx, DWF["oh"])
    img, oy = b.sdiv(task, oh), b.srem(task, oh)
    c = e.field(ctx, DWF["c"])
    nfull = b.sdiv(c, c64(lanes))
    has_tail = b.icmp_signed("!=", b.srem(c, c64(lanes)), c64(0))

    def channels(px: int, checked: bool, ox: ir.Value) -> None:
        with e.loop(0, nfull, name="cv") as cv:
            b.call(blocks[(px, checked, False)], [ctx, img, oy, ox, cv])
        with b.if_then(has_tail):
            b.call(blocks[(px, checked, True)], [ctx, img, oy, ox, nfull])

    ox_lo, ox_hi, ow = e.field(ctx, DWF["ox_lo"]), e.field(ctx, DWF["ox_hi"]), e.field(ctx, DWF["ow"])
    with e.loop(0, ox_lo, name="left") as ox:
        channels(1, True, ox)
    span = b.sub(ox_hi, ox_lo)
    main_end = b.add(ox_lo, b.mul(b.sdiv(e.max(span, c64(0)), c64(DW_PIXELS)), c64(DW_PIXELS)))
    with e.loop(ox_lo, main_end, DW_PIXELS, name="mid") as ox:
        channels(DW_PIXELS, False, ox)
    with e.loop(main_end, ox_hi, name="midr") as ox:
        channels(1, False, ox)
    with e.loop(e.max(ox_hi, ox_lo), ow, name="right") as ox:
        channels(1, True, ox)
    b.ret_void()


def _build_dw(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_dw_task(m, prefix, isa.f32_lanes)
    return m


@functools.cache
def _dw_library(isa: Isa) -> jit.Library:
    return jit.load(f"depthwise|v{VERSION}|{isa.level}|px{DW_PIXELS}", isa, lambda p: _build_dw(p, isa))


def depthwise_task_address(isa: Isa | None = None) -> int:
    return _dw_library(isa or host_isa()).address("dw_task")


# --------------------------------------------------------------------------- Python-facing ops
def _pixel_stride(name: str, a: np.ndarray, shape: tuple[int, int, int, int]) -> tuple[int, int]:
    """(pixel stride, image stride) in floats of an NHWC array, which may be a channel slice."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 4:
        raise EmberError(f"ember: {name} must be a 4-D float32 NHWC array")
    if a.shape != shape:
        raise EmberError(f"ember: {name} has shape {a.shape}, expected {shape}")
    s = [x // 4 for x in a.strides]
    if a.strides[3] != 4 or s[1] != shape[2] * s[2] or any(x % 4 for x in a.strides):
        raise EmberError(f"ember: {name} must be NHWC with contiguous channels and uniformly strided pixels")
    return s[2], s[0]


class Conv2d:
    """A 2-D convolution with packed weights, ready to run on NHWC buffers.

    ``weights`` is ``[OC, IC / groups, KH, KW]``. Depthwise convolutions (groups == IC ==
    OC) use the depthwise kernel; everything else the implicit-GEMM kernel.
    Calling it writes into ``y`` (allocated when omitted) and returns it; ``bias`` is a
    float32 vector of OC, ``residual`` an NHWC tensor of the output's shape.
    """

    def __init__(self, geometry: ConvGeometry, weights: np.ndarray, epilogue: Epilogue = NO_EPILOGUE,
                 num_threads: int | None = None, isa: Isa | None = None):
        g = geometry
        self.geometry, self.epilogue = g, epilogue
        self.isa = isa or host_isa()
        self.num_threads = num_threads or default_pool().num_threads
        w = np.asarray(weights, np.float32)
        if w.shape != (g.cout, g.cin // g.groups, g.kh, g.kw):
            raise EmberError(f"ember: convolution weights have shape {w.shape}, expected "
                             f"{(g.cout, g.cin // g.groups, g.kh, g.kw)}")
        self._calls: dict[tuple[int, ...], object] = {}
        if g.depthwise:
            lanes = self.isa.f32_lanes
            cp = -(-g.cin // lanes) * lanes
            wp = aligned_empty(max(g.kh * g.kw * cp, 1))
            wp[:] = 0
            wp[:g.kh * g.kw * cp].reshape(g.kh * g.kw, cp)[:, :g.cin] = w.reshape(g.cin, -1).T
            self._dw_weights, self._cp = wp, cp
            self.packed = None
            self.task_address = depthwise_task_address(self.isa)
        else:
            self.packed = pack_conv_weights(w, g.groups, self.isa)

    def _dw_ctx(self, ldx: int, xn: int, ldy: int, ldr: int) -> np.ndarray:
        g = self.geometry
        ctx = np.zeros(len(DW_FIELDS), np.int64)
        (sh, sw), (dh, dw), (pt, pl) = g.strides, g.dilations, g.pads_begin
        vals = dict(ldx=ldx, xn=xn, h=g.h, w=g.w, oh=g.oh, ow=g.ow, kh=g.kh, kw=g.kw, sh=sh, sw=sw, dh=dh,
                    dw=dw, pt=pt, pl=pl, c=g.cin, ldy=ldy, wp=self._dw_weights.ctypes.data, cp=self._cp,
                    ldr=ldr)
        # interior columns: every kx tap lands inside the row
        ox_lo = min(g.ow, -(-pl // sw))
        last = g.w - 1 - (g.kw - 1) * dw + pl  # ox * sw <= last
        ox_hi = max(ox_lo, min(g.ow, last // sw + 1)) if last >= 0 else ox_lo
        vals.update(ox_lo=ox_lo, ox_hi=ox_hi)
        for k, v in vals.items():
            ctx[DWF[k]] = v
        lohi = np.array([self.epilogue.lo, self.epilogue.hi], np.float32).view(np.uint32)
        ctx[DWF["lo"]], ctx[DWF["hi"]] = int(lohi[0]), int(lohi[1])
        return ctx

    def _gemm_call(self, ldx: int, xn: int, ldy: int, ldr: int) -> IGemmCall:
        g = self.geometry
        (sh, sw), (dh, dw), (pt, pl) = g.strides, g.dilations, g.pads_begin
        geo = dict(h=g.h, w=g.w, oh=g.oh, ow=g.ow, kh=g.kh, kw=g.kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=pt, pl=pl,
                   xn=xn)
        return IGemmCall(self.packed, m=g.batch * g.oh * g.ow, x_geometry=geo, ldx=ldx, ldy=ldy, ldr=ldr,
                         epilogue=self.epilogue, num_threads=self.num_threads)

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None, bias: np.ndarray | None = None,
                 residual: np.ndarray | None = None, pool: ThreadPool | None = None) -> np.ndarray:
        g = self.geometry
        ldx, xn = _pixel_stride("x", x, (g.batch, g.h, g.w, g.cin))
        if y is None:
            y = np.empty(g.output_shape, np.float32)
        ldy, _ = _pixel_stride("y", y, g.output_shape)
        if y.strides[0] // 4 != g.oh * g.ow * ldy:
            raise EmberError("ember: the output's images must be contiguous")
        ldr = ldy
        if residual is not None:
            ldr, rn = _pixel_stride("residual", residual, g.output_shape)
            if rn != g.oh * g.ow * ldr:
                raise EmberError("ember: the residual's images must be contiguous")
        if bias is not None and (bias.dtype != np.float32 or bias.shape != (g.cout,) or not bias.flags.c_contiguous):
            raise EmberError(f"ember: bias must be a contiguous float32 vector of {g.cout}")
        key = (ldx, xn, ldy, ldr)
        call = self._calls.get(key)
        if call is None:
            call = self._dw_ctx(*key) if g.depthwise else self._gemm_call(*key)
            self._calls[key] = call
        bias_p = 0 if bias is None else bias.ctypes.data
        res_p = 0 if residual is None else residual.ctypes.data
        if isinstance(call, IGemmCall):
            call.run(call.bind(x.ctypes.data, y.ctypes.data, bias_p, res_p), pool)
        else:
            ctx = call.copy()
            ctx[DWF["x"]], ctx[DWF["y"]], ctx[DWF["bias"]], ctx[DWF["res"]] = x.ctypes.data, y.ctypes.data, bias_p, res_p
            ctx[DWF["flags"]] = (_DW_BIAS if bias_p else 0) | (_DW_RES if res_p else 0)
            (pool or default_pool()).parallel_for(self.task_address, ctx.ctypes.data, g.batch * g.oh,
                                                  self.num_threads)
        return y


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None, strides: tuple[int, int] = (1, 1),
           dilations: tuple[int, int] = (1, 1), pads_begin: tuple[int, int] = (0, 0),
           pads_end: tuple[int, int] = (0, 0), groups: int = 1, epilogue: Epilogue = NO_EPILOGUE,
           residual: np.ndarray | None = None, num_threads: int | None = None, isa: Isa | None = None) -> np.ndarray:
    """One-shot convolution of NHWC ``x`` with ``w[OC, IC/groups, KH, KW]``; returns NHWC."""
    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise EmberError(f"ember: conv2d wants NHWC input, got shape {x.shape}")
    n, h, wd, c = x.shape
    geo = ConvGeometry(n, h, wd, c, w.shape[0], w.shape[2], w.shape[3], tuple(strides), tuple(dilations),
                       tuple(pads_begin), tuple(pads_end), groups)
    return Conv2d(geo, w, epilogue, num_threads, isa)(x, None, bias, residual)


__all__ = ["Conv2d", "ConvGeometry", "conv2d", "pack_conv_weights"]
