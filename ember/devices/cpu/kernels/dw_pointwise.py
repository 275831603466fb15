"""A depthwise convolution fused with the 1x1 (pointwise) convolution that reads it, as in the
inverted residual blocks of MobileNetV2 and EfficientNet (depthwise 3x3/5x5 -> project 1x1):
one task computes a band of the depthwise output's rows into a stack buffer (it stays in L1/L2),
then the 1x1 GEMM of those rows straight into the output, epilogue as usual. The depthwise
output never goes to memory and the block is one parallel job instead of two. With ``expand``
the block's expand 1x1 runs first in the same task, on the window of input rows the band reads
(a second stack buffer): the whole block is one job and the expanded tensor is never stored.

The task reuses both kernels as they are: :mod:`depthwise`'s specialized task (its context copied
with Y pointed at the stack buffer) and :mod:`gemm`'s implicit-GEMM task (its context copied with
X the stack buffer and M the band's pixels, one block of all row tiles and panels).
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import replace

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry, pack_conv_weights
from ember.devices.cpu.kernels.depthwise import DW_SPEC_CONTEXT
from ember.devices.cpu.kernels.gemm import (
    IGEMM_CONTEXT,
    NO_EPILOGUE,
    Epilogue,
    IGemmCall,
    PackedWeights,
    Precision,
    as_precision,
    check_bias,
    y_bf16_ok,
)
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import I64, PTR, VOID, Emitter, c64
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import aligned_alloca
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.devices.cpu.runtime.threadpool import ThreadPool, default_pool
from ember.errors import EmberError

#: fuse a depthwise convolution with the 1x1 after it (``EMBER_DW_FUSE=0`` turns it off; the
#: lowering reads this module constant, so a benchmark can flip it between compiles)
ENABLED = os.environ.get("EMBER_DW_FUSE", "1") != "0"
#: the stack buffer of a task's band (depthwise output rows x channels) stays under this many bytes
SCRATCH_BYTES = 256 << 10
#: fixed cost of a band, in output pixels (the task's start, the 1x1 weights streamed again)
BAND_COST_PIXELS = 24
#: a layer qualifies when its output pixels are at least this many times the 1x1's output
#: channels: on 7x7 maps the unfused 1x1 splits its weights between the threads by output
#: channels, while fused bands each stream all of them (a 960 -> 160 1x1 is 600 KB)
MIN_PIXELS_PER_COUT = 1.0
#: also fuse the expand 1x1 before the depthwise layer (its output, the expanded tensor,
#: then never goes to memory either; ``EMBER_DW_FUSE_EXPAND=0`` turns it off): each band computes
#: the rows of the expansion it reads, so the rows two bands share are computed twice
EXPAND = os.environ.get("EMBER_DW_FUSE_EXPAND", "1") != "0"
#: the expand 1x1 is fused under bf16 too (the window stays f32: the depthwise kernel reads f32)
EXPAND_BF16 = True
#: the stack buffer of a band's window of the expanded tensor stays under this many bytes
EXPAND_SCRATCH_BYTES = 1 << 20
#: the expand 1x1 is fused when the expanded tensor has at least this many bytes: one thread,
#: per block, MobileNetV2's and EfficientNet-Lite0's 112x112x96 and 56x56x144 ones (1.8-4.8 MB)
#: ran 0.72-0.91x the expand + fused depthwise and 1x1; the 28x28 and 14x14 ones (150-600 KB,
#: in L2 anyway) 0.97-1.22x, the rows computed twice costing more than the traffic saved
EXPAND_MIN_BYTES = 1 << 20

DW_PW_CONTEXT = ContextLayout(
    "dw_pointwise",
    ("x", "y", "res", "dwfn", "dwctx", "gfn", "gctx", "nb", "band", "oh", "ow", "cs", "ldy", "ldr", "sb", "yb",
     "rb", "efn", "ectx", "h", "w", "sh", "pt", "kspan", "es", "win", "eldx", "exn", "xb"),
    pointers=("x", "y", "res"), nested={"dwctx": DW_SPEC_CONTEXT, "gctx": IGEMM_CONTEXT, "ectx": IGEMM_CONTEXT})


def _build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    task_ptr = ir.PointerType(ir.FunctionType(VOID, [PTR, I64]))
    fn = Emitter.function(m, f"{prefix}_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = ContextEmitter(m, fn, DW_PW_CONTEXT)
    b = e.b
    nb, band, oh, ow, cs = (e.arg(k) for k in ("nb", "band", "oh", "ow", "cs"))
    # bytes of an element of the stack buffer, Y and the residual (4, or 2: bf16)
    sb, yb, rb = e.arg("sb"), e.arg("yb"), e.arg("rb")
    img, bi = b.sdiv(task, nb), b.srem(task, nb)
    oy0 = b.mul(bi, band)
    oy1 = e.min(oh, b.add(oy0, band))
    npix = b.mul(b.sub(oy1, oy0), ow)
    pix0 = b.mul(b.add(b.mul(img, oh), oy0), ow)
    scratch = aligned_alloca(e, ir.FloatType(), b.mul(b.mul(band, ow), cs))

    def copy_context(src: ir.Value, words: int) -> ir.Value:
        dst = e.var(I64, count=words)
        e.call("llvm.memcpy.p0.p0.i64", VOID, [dst, src, c64(8 * words), ir.Constant(ir.IntType(1), 0)])
        return dst

    def put(c: ir.Value, layout: ContextLayout, name: str, v: ir.Value) -> None:
        if v.type != I64:
            v = b.ptrtoint(v, I64)
        b.store(v, e.gep(I64, c, layout[name]))

    def shifted(base: ir.Value, pixels: ir.Value, stride: ir.Value, size: ir.Value) -> ir.Value:
        """The address of pixel ``pixels`` of a buffer of pixel stride ``stride`` and ``size``-byte
        elements (0 stays 0)."""
        addr = b.add(base, b.mul(b.mul(pixels, stride), size))
        return b.select(b.icmp_unsigned("==", base, c64(0)), c64(0), addr)

    # the depthwise band into the stack buffer: its Y is placed so that the band's first pixel
    # (pixel pix0 of the whole output) lands on the buffer's start
    dwc = copy_context(e.arg("dwctx", PTR), DW_SPEC_CONTEXT.words)
    put(dwc, DW_SPEC_CONTEXT, "x", e.arg("x"))
    # with an expand 1x1 first (efn): the rows of its output the band reads (the window) into a
    # second stack buffer, and the depthwise kernel reads them there (its X placed so that row
    # iy of the image is row iy - iy_a of the window; its image stride is 0)
    with b.if_then(b.icmp_unsigned("!=", e.arg("efn"), c64(0))):
        H, W, es = e.arg("h"), e.arg("w"), e.arg("es")
        iy_a = e.max(c64(0), b.sub(b.mul(oy0, e.arg("sh")), e.arg("pt")))
        iy_b = e.min(H, b.add(b.sub(b.mul(b.sub(oy1, c64(1)), e.arg("sh")), e.arg("pt")), e.arg("kspan")))
        nin = b.mul(e.max(c64(0), b.sub(iy_b, iy_a)), W)
        window = aligned_alloca(e, ir.FloatType(), b.mul(b.mul(e.arg("win"), W), es))
        ec = copy_context(e.arg("ectx", PTR), IGEMM_CONTEXT.words)
        first = b.add(b.mul(img, e.arg("exn")), b.mul(b.mul(iy_a, W), e.arg("eldx")))
        put(ec, IGEMM_CONTEXT, "x", b.add(e.arg("x"), b.mul(first, e.arg("xb"))))
        put(ec, IGEMM_CONTEXT, "y", window)
        for name in ("m", "w", "ow"):
            put(ec, IGEMM_CONTEXT, name, nin)
        with b.if_then(b.icmp_signed(">", nin, c64(0))):
            b.call(b.inttoptr(e.arg("efn"), task_ptr), [ec, c64(0)])
        put(dwc, DW_SPEC_CONTEXT, "x", b.sub(b.ptrtoint(window, I64), b.mul(b.mul(b.mul(iy_a, W), es), c64(4))))
    put(dwc, DW_SPEC_CONTEXT, "y", b.sub(b.ptrtoint(scratch, I64), b.mul(b.mul(pix0, cs), sb)))
    b.call(b.inttoptr(e.arg("dwfn"), task_ptr), [dwc, task])
    # the 1x1 GEMM of the band's pixels: one block of every row tile and panel
    gc = copy_context(e.arg("gctx", PTR), IGEMM_CONTEXT.words)
    put(gc, IGEMM_CONTEXT, "x", scratch)
    put(gc, IGEMM_CONTEXT, "y", shifted(e.arg("y"), pix0, e.arg("ldy"), yb))
    put(gc, IGEMM_CONTEXT, "res", shifted(e.arg("res"), pix0, e.arg("ldr"), rb))
    for name in ("m", "w", "ow"):
        put(gc, IGEMM_CONTEXT, name, npix)
    b.call(b.inttoptr(e.arg("gfn"), task_ptr), [gc, c64(0)])
    b.ret_void()
    return m


@functools.cache
def _library(isa: Isa) -> jit.Library:
    return jit.load(f"dw_pointwise|{isa.level}|v4", isa, lambda p: _build(p, isa))


def band_rows(batch: int, oh: int, ow: int, channels: int, threads: int) -> int:
    """Output rows per band (a task): bands whose buffer (rows x ``ow`` x ``channels`` floats)
    fits ``SCRATCH_BYTES``, chosen to finish first when the tasks are shared by ``threads``
    (each band costs its pixels plus ``BAND_COST_PIXELS``); 0 when not even one row fits."""
    best: tuple[int, int] | None = None
    for rows in range(1, oh + 1):
        if rows * ow * channels * 4 > SCRATCH_BYTES:
            break
        tasks = batch * -(-oh // rows)
        span = -(-tasks // threads) * (rows * ow + BAND_COST_PIXELS)
        if best is None or span < best[0]:
            best = (span, rows)
    return 0 if best is None else best[1]


def window_rows(dw: ConvGeometry, rows: int) -> int:
    """Input rows of the depthwise layer a band of ``rows`` output rows reads (at most)."""
    return min(dw.h, (rows - 1) * dw.strides[0] + (dw.kh - 1) * dw.dilations[0] + 1)


def expand_band_rows(dw: ConvGeometry, cin: int, cout: int, channels: int, threads: int) -> int:
    """Output rows per band when an expand 1x1 of ``cin`` inputs runs first: its window of the
    expanded tensor (``window_rows`` x width x ``channels`` floats) fits ``EXPAND_SCRATCH_BYTES``
    and the depthwise band ``SCRATCH_BYTES``; the bands that finish first on ``threads``
    threads, each costing its multiply-adds (the window's rows of the expansion are computed
    again by the next band) plus ``BAND_COST_PIXELS`` output pixels; 0 when none fits."""
    best: tuple[float, int] | None = None
    per_out = dw.cin * (dw.kh * dw.kw + cout)
    for rows in range(1, dw.oh + 1):
        win = window_rows(dw, rows)
        if rows * dw.ow * channels * 4 > SCRATCH_BYTES or win * dw.w * channels * 4 > EXPAND_SCRATCH_BYTES:
            break
        tasks = dw.batch * -(-dw.oh // rows)
        cost = (rows * dw.ow + BAND_COST_PIXELS) * per_out + win * dw.w * cin * dw.cin
        span = -(-tasks // threads) * cost
        if best is None or span < best[0]:
            best = (span, rows)
    return 0 if best is None else best[1]


def worth_fusing_expand(dw: ConvGeometry) -> bool:
    """The lowering's rule for the expand 1x1: :data:`EXPAND`, and an expanded tensor (the
    depthwise input) of at least ``EXPAND_MIN_BYTES``."""
    return EXPAND and dw.batch * dw.h * dw.w * dw.cin * 4 >= EXPAND_MIN_BYTES


def fusable(dw: ConvGeometry, pw: ConvGeometry, isa: Isa | None = None) -> bool:
    """Whether depthwise ``dw`` followed by 1x1 ``pw`` can run as one fused kernel: a specialized
    depthwise layer (at most 25 taps), a 1x1 stride-1 unpadded convolution on its output, and a
    row of the depthwise output fits the stack buffer."""
    from ember.devices.cpu.kernels.depthwise import DW_SPEC_MAX_TAPS

    return (dw.depthwise and dw.kh * dw.kw <= DW_SPEC_MAX_TAPS and pw.groups == 1 and pw.kh == pw.kw == 1
            and pw.strides == (1, 1) and pw.pads_begin == pw.pads_end == (0, 0)
            and (pw.batch, pw.h, pw.w, pw.cin) == (dw.batch, dw.oh, dw.ow, dw.cout)
            and band_rows(dw.batch, dw.oh, dw.ow, _padded(dw.cout, isa or host_isa()), 1) > 0)


def worth_fusing(dw: ConvGeometry, pw: ConvGeometry) -> bool:
    """The lowering's rule: fuse when :func:`fusable`, :data:`ENABLED`, and the map is large
    enough for the 1x1's weights (``MIN_PIXELS_PER_COUT``)."""
    return ENABLED and fusable(dw, pw) and dw.batch * dw.oh * dw.ow >= MIN_PIXELS_PER_COUT * pw.cout


def _padded(channels: int, isa: Isa) -> int:
    return -(-channels // isa.f32_lanes) * isa.f32_lanes


class DwPointwise:
    """Depthwise convolution ``dw`` (its epilogue: bias, clamp, HSwish, scalar affine) then the
    1x1 convolution ``pw_weights`` ``[OC, C, 1, 1]`` with ``pw_epilogue`` (bias and a residual
    given to :meth:`bind`, clamp, activation), NHWC. Calling it writes the 1x1's output.

    ``precision="bf16"`` runs the 1x1 in bf16 (as :class:`~ember.devices.cpu.kernels.conv.Conv2d`
    does: the depthwise layer computes in f32 and its band is stored bf16 for the GEMM); then
    :meth:`bind` also takes X, Y and the residual as uint16 arrays of bf16 bits (Y only when
    :meth:`y_bf16_ok`).

    ``expand=(weights [C, IC, 1, 1], epilogue)`` runs the block's expand 1x1 first, in each band
    on the rows it reads (X is then its input, of IC channels; its bias goes to :meth:`bind`);
    under bf16 it computes in bf16 and keeps the window f32 (the depthwise kernel reads f32)."""

    def __init__(self, dw: ConvGeometry, dw_weights: np.ndarray, pw_weights: np.ndarray,
                 dw_epilogue: Epilogue = NO_EPILOGUE, pw_epilogue: Epilogue = NO_EPILOGUE,
                 num_threads: int | None = None, isa: Isa | None = None, activation: str = "",
                 affine: tuple[float, float] | None = None, precision: Precision | str = Precision.F32,
                 expand: tuple[np.ndarray, Epilogue] | None = None):
        self.isa = isa or host_isa()
        self.num_threads = num_threads or default_pool().num_threads
        self.precision = as_precision(precision)
        w = np.asarray(pw_weights, np.float32)
        if w.ndim != 4 or w.shape[1:] != (dw.cout, 1, 1):
            raise EmberError(f"ember: 1x1 weights have shape {w.shape}, expected [OC, {dw.cout}, 1, 1]")
        self.cs = _padded(dw.cout, self.isa)
        self.expand: PackedWeights | None = None
        self.expand_epilogue = NO_EPILOGUE
        self.cin = dw.cin  # channels of X
        if expand is not None:
            we = np.asarray(expand[0], np.float32)
            if we.ndim != 4 or we.shape[0] != dw.cin or we.shape[2:] != (1, 1):
                raise EmberError(f"ember: expand 1x1 weights have shape {we.shape}, expected [{dw.cin}, IC, 1, 1]")
            self.cin, self.expand_epilogue = we.shape[1], expand[1]
        self._plan(dw, w.shape[0], expand is not None)
        if expand is not None:
            self.expand = pack_conv_weights(we, 1, self.isa, self.precision)
        self.depthwise = Conv2d(dw, dw_weights, dw_epilogue, num_threads=1, isa=self.isa, activation=activation,
                                affine=affine, precision=self.precision)
        self.pw_epilogue = pw_epilogue
        self.packed = pack_conv_weights(w, 1, self.isa, self.precision)
        self._lib = _library(self.isa)
        self._calls: dict[tuple[int, ...], tuple[IGemmCall, np.ndarray, int, tuple, IGemmCall | None]] = {}

    def _plan(self, dw: ConvGeometry, cout: int, expanding: bool) -> None:
        """What depends on the sizes: the geometries, the band rows and their count."""
        self.geometry = dw
        self.pw = ConvGeometry(dw.batch, dw.oh, dw.ow, dw.cout, cout, 1, 1)
        if not fusable(dw, self.pw, self.isa):
            raise EmberError("ember: this depthwise + 1x1 pair does not fit the fused kernel (see fusable)")
        if expanding:
            self.rows = expand_band_rows(dw, self.cin, cout, self.cs, self.num_threads)
            if not self.rows:
                raise EmberError("ember: the expanded rows of a band do not fit the fused kernel's buffer")
        else:
            self.rows = band_rows(dw.batch, dw.oh, dw.ow, self.cs, self.num_threads)
        self.nb = -(-dw.oh // self.rows)

    @property
    def input_sizes(self) -> tuple[int, int, int]:
        """(batch, height, width) of the input it is planned for."""
        return self.geometry.batch, self.geometry.h, self.geometry.w

    def with_input(self, batch: int, h: int, w: int) -> DwPointwise:
        """This pair on inputs of ``batch`` images of ``h`` x ``w`` (a plan bound at another input
        shape): weights shared, the band plan made again as a pair built for that geometry has it."""
        k = copy.copy(self)
        k._plan(replace(self.geometry, batch=batch, h=h, w=w), self.pw.cout, self.expand is not None)
        k.depthwise = self.depthwise.with_input(batch, h, w)
        k._calls = {}
        return k

    @property
    def bf16(self) -> bool:
        return self.precision is Precision.BF16

    def y_bf16_ok(self) -> bool:
        """Whether the output may be stored bf16 (see :func:`~ember.devices.cpu.kernels.gemm.y_bf16_ok`)."""
        return y_bf16_ok(self.packed)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return self.pw.output_shape

    def bind(self, x: np.ndarray, y: np.ndarray, dw_bias: np.ndarray | None = None,
             pw_bias: np.ndarray | None = None, residual: np.ndarray | None = None,
             expand_bias: np.ndarray | None = None) -> BoundKernel:
        """Fix the buffers of a call (``x`` the depthwise input, or the expand 1x1's when it is
        fused, ``y`` the 1x1 output, NHWC float32 or under bf16 uint16, channel slices allowed)."""
        from ember.devices.cpu.kernels.conv import nhwc_strides

        g = self.geometry
        ldx, xn = nhwc_strides("x", x, (g.batch, g.h, g.w, self.cin), self.bf16)
        ldy, yn = nhwc_strides("y", y, self.pw.output_shape, self.bf16)
        if yn != g.oh * g.ow * ldy:
            raise EmberError("ember: the output's images must be contiguous")
        if y.dtype == np.uint16 and not self.y_bf16_ok():
            raise EmberError("ember: this 1x1 cannot store a bf16 output (see y_bf16_ok)")
        ldr = ldy
        if residual is not None:
            ldr, rn = nhwc_strides("residual", residual, self.pw.output_shape, self.bf16)
            if rn != g.oh * g.ow * ldr:
                raise EmberError("ember: the residual's images must be contiguous")
        check_bias(dw_bias, g.cout)
        check_bias(pw_bias, self.pw.cout)
        x16, y16 = x.dtype == np.uint16, y.dtype == np.uint16
        r16 = residual is not None and residual.dtype == np.uint16
        key = (ldx, xn, ldy, ldr, residual is not None, x16, y16, r16)
        call = self._calls.get(key)
        if call is None:
            # under bf16 the band is stored bf16: the GEMM rounds its X to bf16 anyway
            if self.expand is None:
                dwctx, dwfn, dwkeep = self.depthwise.spec_call(ldx, xn, self.cs, x16, self.bf16)
            else:  # the depthwise layer reads the window of the expansion (image stride 0)
                dwctx, dwfn, dwkeep = self.depthwise.spec_call(self.cs, 0, self.cs, False, self.bf16)
            DW_SPEC_CONTEXT.fill(dwctx, band=self.rows, nb=self.nb, ng=1, ns=1, seg=g.ow,
                                 gv=-(-g.cin // self.isa.f32_lanes))
            band_pixels = self.rows * g.ow
            gemm = IGemmCall(self.packed, m=band_pixels, x_geometry=dict(h=1, w=band_pixels, oh=1, ow=band_pixels),
                             ldx=self.cs, ldy=ldy, ldr=ldr, epilogue=self.pw_epilogue, num_threads=1,
                             x_bf16=self.bf16, y_bf16=y16, res_bf16=r16)
            egemm = None
            if self.expand is not None:
                m = window_rows(g, self.rows) * g.w
                egemm = IGemmCall(self.expand, m=m, x_geometry=dict(h=1, w=m, oh=1, ow=m), ldx=ldx, ldy=self.cs,
                                  epilogue=self.expand_epilogue, num_threads=1, x_bf16=x16)
            call = (gemm, dwctx, dwfn, dwkeep, egemm)
            self._calls[key] = call
        gemm, dwctx, dwfn, dwkeep, egemm = call
        dwctx = dwctx.copy()
        if dw_bias is not None:
            DW_SPEC_CONTEXT.fill(dwctx, bias=dw_bias.ctypes.data)
        gk = gemm.bind(0, 0, 0 if pw_bias is None else pw_bias.ctypes.data, 1 if residual is not None else 0)
        gctx = gk.ctx
        IGEMM_CONTEXT.fill(gctx, h=1, oh=1, gm=1, gn=1, tm=1 << 30, tn=1 << 30)
        ctx = DW_PW_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, res=0 if residual is None else residual.ctypes.data,
                                dwfn=dwfn, dwctx=dwctx.ctypes.data, gfn=gk.task, gctx=gctx.ctypes.data, nb=self.nb,
                                band=self.rows, oh=g.oh, ow=g.ow, cs=self.cs, ldy=ldy, ldr=ldr,
                                sb=2 if self.bf16 else 4, yb=2 if y16 else 4, rb=2 if r16 else 4)
        keep: tuple = ()
        if egemm is not None:
            check_bias(expand_bias, g.cin)
            ek = egemm.bind(0, 0, 0 if expand_bias is None else expand_bias.ctypes.data)
            IGEMM_CONTEXT.fill(ek.ctx, h=1, oh=1, gm=1, gn=1, tm=1 << 30, tn=1 << 30)
            (sh, _), (dh, _), (pt, _) = g.strides, g.dilations, g.pads_begin
            DW_PW_CONTEXT.fill(ctx, efn=ek.task, ectx=ek.ctx.ctypes.data, h=g.h, w=g.w, sh=sh, pt=pt,
                               kspan=(g.kh - 1) * dh + 1, es=self.cs, win=window_rows(g, self.rows), eldx=ldx, exn=xn,
                               xb=2 if x16 else 4)
            keep = (ek.ctx, ek.keep, expand_bias)
        return BoundKernel(self._lib.address("task"), ctx, g.batch * self.nb, self.num_threads,
                           (dwctx, gctx, dwkeep, gk.keep, dw_bias, pw_bias, *keep), layout=DW_PW_CONTEXT)

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None, dw_bias: np.ndarray | None = None,
                 pw_bias: np.ndarray | None = None, residual: np.ndarray | None = None,
                 pool: ThreadPool | None = None, expand_bias: np.ndarray | None = None) -> np.ndarray:
        """Compute into ``y`` (allocated when None, f32) and return it."""
        if y is None:
            y = aligned_empty(self.output_shape)
        self.bind(x, y, dw_bias, pw_bias, residual, expand_bias).run(pool)
        return y


__all__ = ["DwPointwise", "band_rows", "expand_band_rows", "fusable", "window_rows", "worth_fusing",
           "worth_fusing_expand"]
