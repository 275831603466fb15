"""2-D convolution on NHWC activations: implicit GEMM (any kernel, stride, dilation,
asymmetric padding, groups) and a dedicated depthwise kernel, both with the fused epilogue
``clamp(conv + bias + residual, lo, hi)``.

Activations are NHWC float32; a tensor may be a channel slice of a wider buffer (its pixel
stride larger than its channel count), so a convolution can read from or write into part
of a concatenation. Weights come in the ONNX/OpenVINO layout ``[OC, IC / groups, KH, KW]``
and are packed once, when the convolution is built.

The general path is the GEMM module's ``igemm_task`` (see :mod:`ember.devices.cpu.kernels.gemm`);
depthwise convolution (groups == input channels == output channels) has its own kernel
that vectorizes over channels, one task per output row; for kernels up to 7x7 the taps
are unrolled and a channel vector's weights stay in registers while the pixels stream by.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.gemm import (
    NO_EPILOGUE,
    Epilogue,
    IGemmCall,
    PackedWeights,
    Precision,
    as_precision,
    check_bias,
    pack_weights,
)
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import fmuladd, lane_mask, masked_load, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.devices.cpu.runtime.threadpool import ThreadPool, default_pool
from ember.errors import EmberError

MERGE_BELOW_CHANNELS = 16  # input channels per group under which taps are folded into K
MERGE_MAX_K = 1024  # the gathered rows of a task (tiles x 14 x K floats) stay under ~0.5 MB of stack


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


def merge_taps_for(cin_per_group: int, taps: int) -> bool:
    """Whether a convolution runs with its taps folded into K (few channels per tap, as in a
    network's stem): each task gathers its pixels' taps into contiguous rows first."""
    return taps > 1 and cin_per_group < MERGE_BELOW_CHANNELS and cin_per_group * taps <= MERGE_MAX_K


def pack_conv_weights(w: np.ndarray, groups: int = 1, isa: Isa | None = None,
                      precision: Precision | str = Precision.F32, merge_taps: bool | None = None) -> PackedWeights:
    """Pack ``w[OC, IC / groups, KH, KW]`` for the implicit-GEMM kernel (f32 or bf16).

    ``merge_taps`` (default: :func:`merge_taps_for`) folds the taps into K."""
    w = np.asarray(w, np.float32)
    if w.ndim != 4 or w.shape[0] % groups:
        raise EmberError(f"ember: convolution weights must be [OC, IC/groups, KH, KW], got {w.shape}")
    oc, cg, kh, kw = w.shape
    wg = w.reshape(groups, oc // groups, cg, kh, kw).transpose(0, 3, 4, 2, 1)
    if merge_taps is None:
        merge_taps = merge_taps_for(cg, kh * kw)
    return pack_weights(wg.reshape(groups, kh * kw, cg, oc // groups), isa, precision=precision,
                        merge_taps=merge_taps)


# --------------------------------------------------------------------------- depthwise kernel
# One task per output row. Rows and columns whose taps all fall inside the input
# ("interior") run without bounds tests; border rows test each kernel row, border columns
# each tap. Kernel sizes up to 7x7 get a module of their own (taps unrolled).
DEPTHWISE_CONTEXT = ContextLayout("depthwise", ("x", "ldx", "xn", "h", "w", "oh", "ow", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pl",
             "c", "y", "ldy", "wp", "cp", "bias", "res", "ldr", "flags", "lo", "hi", "ox_lo", "ox_hi",
             "oy_lo", "oy_hi"),
                   pointers=('x', 'y', 'wp', 'bias', 'res'))
_DW_BIAS, _DW_RES = 1, 2
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
        with b.if_then(self.flag(_DW_RES)):
            rp = self.gep(F32, self.arg("res", PTR), b.add(b.mul(pix, self.arg("ldr")), ch))
            b.store(b.fadd(self.load(self.vt, out), masked_load(self, self.vt, rp, mask)), out)
        x = self.load(self.vt, out)
        vlo, vhi = self.splat(self.arg("lo", F32), self.lanes), self.splat(self.arg("hi", F32), self.lanes)
        x = b.select(b.fcmp_ordered("<", x, vlo), vlo, x)
        return b.select(b.fcmp_ordered(">", x, vhi), vhi, x)

    def bias_vec(self, ch: ir.Value, mask: ir.Value | None) -> ir.Value:
        b = self.b
        bv = self.var(self.vt, ir.Constant(self.vt, None))
        with b.if_then(self.flag(_DW_BIAS)):
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
            for ky in range(kh):
                ok, xrow = rows[ky]
                guarded(ok if check_rows else None,
                        lambda xrow=xrow, ky=ky: [tap(xrow, c64(kx), wv[ky * kw + kx], ky) for kx in range(kw)])
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


def _interior(n_out: int, n_in: int, k: int, stride: int, dilation: int, pad: int) -> tuple[int, int]:
    """[lo, hi) of output positions whose k taps all land inside [0, n_in)."""
    lo = min(n_out, -(-pad // stride))
    last = n_in - 1 - (k - 1) * dilation + pad  # position * stride <= last
    hi = min(n_out, last // stride + 1) if last >= 0 else 0
    return lo, max(lo, hi)


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

    ``precision="bf16"`` runs the implicit GEMM in bf16 (weights rounded once, activations
    converted as they are read, f32 accumulation and epilogue; activations stay f32 in
    memory). It raises :class:`~ember.errors.EmberError` without AVX512_BF16 (see
    :func:`~ember.devices.cpu.kernels.gemm.bf16_supported`). Depthwise convolutions are memory
    bound and always run in f32 (``self.precision`` says which was used).
    """

    def __init__(self, geometry: ConvGeometry, weights: np.ndarray, epilogue: Epilogue = NO_EPILOGUE,
                 num_threads: int | None = None, isa: Isa | None = None,
                 precision: Precision | str = Precision.F32):
        g = geometry
        self.geometry, self.epilogue = g, epilogue
        self.isa = isa or host_isa()
        self.precision = as_precision(precision)
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
            self.task_address = depthwise_task_address(g.kh, g.kw, self.isa)
            self.precision = Precision.F32
        else:
            self.packed = pack_conv_weights(w, g.groups, self.isa, self.precision)

    def _dw_ctx(self, ldx: int, xn: int, ldy: int, ldr: int) -> np.ndarray:
        g = self.geometry
        ctx = DEPTHWISE_CONTEXT.new()
        (sh, sw), (dh, dw), (pt, pl) = g.strides, g.dilations, g.pads_begin
        vals = dict(ldx=ldx, xn=xn, h=g.h, w=g.w, oh=g.oh, ow=g.ow, kh=g.kh, kw=g.kw, sh=sh, sw=sw, dh=dh,
                    dw=dw, pt=pt, pl=pl, c=g.cin, ldy=ldy, wp=self._dw_weights.ctypes.data, cp=self._cp,
                    ldr=ldr)
        ox_lo, ox_hi = _interior(g.ow, g.w, g.kw, sw, dw, pl)
        oy_lo, oy_hi = _interior(g.oh, g.h, g.kh, sh, dh, pt)
        vals.update(ox_lo=ox_lo, ox_hi=ox_hi, oy_lo=oy_lo, oy_hi=oy_hi)
        for k, v in vals.items():
            ctx[DEPTHWISE_CONTEXT[k]] = v
        lohi = np.array([self.epilogue.lo, self.epilogue.hi], np.float32).view(np.uint32)
        ctx[DEPTHWISE_CONTEXT["lo"]], ctx[DEPTHWISE_CONTEXT["hi"]] = int(lohi[0]), int(lohi[1])
        return ctx

    def _gemm_call(self, ldx: int, xn: int, ldy: int, ldr: int) -> IGemmCall:
        g = self.geometry
        (sh, sw), (dh, dw), (pt, pl) = g.strides, g.dilations, g.pads_begin
        geo = dict(h=g.h, w=g.w, oh=g.oh, ow=g.ow, kh=g.kh, kw=g.kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=pt, pl=pl,
                   xn=xn)
        return IGemmCall(self.packed, m=g.batch * g.oh * g.ow, x_geometry=geo, ldx=ldx, ldy=ldy, ldr=ldr,
                         epilogue=self.epilogue, num_threads=self.num_threads)

    def bind(self, x: np.ndarray, y: np.ndarray, bias: np.ndarray | None = None,
             residual: np.ndarray | None = None) -> BoundKernel:
        """Fix the buffers (arrays, or views of a plan's arena) of a call; checks shapes once."""
        g = self.geometry
        ldx, xn = _pixel_stride("x", x, (g.batch, g.h, g.w, g.cin))
        ldy, yn = _pixel_stride("y", y, g.output_shape)
        if yn != g.oh * g.ow * ldy:
            raise EmberError("ember: the output's images must be contiguous")
        ldr = ldy
        if residual is not None:
            ldr, rn = _pixel_stride("residual", residual, g.output_shape)
            if rn != g.oh * g.ow * ldr:
                raise EmberError("ember: the residual's images must be contiguous")
        check_bias(bias, g.cout)
        key = (ldx, xn, ldy, ldr)
        call = self._calls.get(key)
        if call is None:
            call = self._dw_ctx(*key) if g.depthwise else self._gemm_call(*key)
            self._calls[key] = call
        bias_p = 0 if bias is None else bias.ctypes.data
        res_p = 0 if residual is None else residual.ctypes.data
        if isinstance(call, IGemmCall):
            return call.bind(x.ctypes.data, y.ctypes.data, bias_p, res_p, keep=(bias,))
        ctx = call.copy()
        ctx[DEPTHWISE_CONTEXT["x"]], ctx[DEPTHWISE_CONTEXT["y"]], ctx[DEPTHWISE_CONTEXT["bias"]], ctx[DEPTHWISE_CONTEXT["res"]] = x.ctypes.data, y.ctypes.data, bias_p, res_p
        ctx[DEPTHWISE_CONTEXT["flags"]] = (_DW_BIAS if bias_p else 0) | (_DW_RES if res_p else 0)
        return BoundKernel(self.task_address, ctx, g.batch * g.oh, self.num_threads, (self._dw_weights, bias), layout=DEPTHWISE_CONTEXT)

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None, bias: np.ndarray | None = None,
                 residual: np.ndarray | None = None, pool: ThreadPool | None = None) -> np.ndarray:
        """Compute into ``y`` (allocated when None) and return it."""
        if y is None:
            y = aligned_empty(self.geometry.output_shape)
        self.bind(x, y, bias, residual).run(pool)
        return y


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None, strides: tuple[int, int] = (1, 1),
           dilations: tuple[int, int] = (1, 1), pads_begin: tuple[int, int] = (0, 0),
           pads_end: tuple[int, int] = (0, 0), groups: int = 1, epilogue: Epilogue = NO_EPILOGUE,
           residual: np.ndarray | None = None, num_threads: int | None = None, isa: Isa | None = None,
           precision: Precision | str = Precision.F32) -> np.ndarray:
    """One-shot convolution of NHWC ``x`` with ``w[OC, IC/groups, KH, KW]``; returns NHWC."""
    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise EmberError(f"ember: conv2d wants NHWC input, got shape {x.shape}")
    n, h, wd, c = x.shape
    geo = ConvGeometry(n, h, wd, c, w.shape[0], w.shape[2], w.shape[3], tuple(strides), tuple(dilations),
                       tuple(pads_begin), tuple(pads_end), groups)
    return Conv2d(geo, w, epilogue, num_threads, isa, precision)(x, None, bias, residual)


__all__ = ["Conv2d", "ConvGeometry", "conv2d", "pack_conv_weights"]
