"""2-D convolution on NHWC activations: implicit GEMM (any kernel, stride, dilation,
asymmetric padding, groups) and the depthwise kernel (``depthwise``), both with the fused epilogue
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

import copy
from dataclasses import dataclass, replace

import numpy as np

from ember.devices.cpu.kernels import depthwise as _dw
from ember.devices.cpu.kernels.depthwise import (
    DEPTHWISE_CONTEXT,
    DW_FLAG_BIAS,
    DW_FLAG_RES,
    DW_SPEC_CONTEXT,
    DwSpec,
    border_row_sets,
    depthwise_task_address,
    dw_spec_task_address,
    interior_range,
    spec_tasks,
    spec_threads,
)
from ember.devices.cpu.kernels.gemm import (
    NO_EPILOGUE,
    Epilogue,
    IGemmCall,
    PackedWeights,
    Precision,
    as_precision,
    check_bias,
    flush_subnormals,
    pack_weights,
    residual_in_place_ok,
    y_bf16_ok,
    zero_row,
)
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.devices.cpu.runtime.threadpool import ThreadPool, default_pool
from ember.errors import EmberError

MERGE_BELOW_CHANNELS = 16  # input channels per group under which taps are folded into K
MERGE_MAX_K = 1024  # the gathered rows of a task (tiles x 14 x K floats) stay under ~0.5 MB of stack
ONE_CHUNK_MAX_K = 2304  # f32 K (taps x channels per group) packed as one chunk: a panel <= 288 KB (bf16: 2x K)


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


def depthwise_activation_ok(g: ConvGeometry, activation: str) -> bool:
    """Whether the depthwise kernel fuses ``activation`` (``"hswish"``, or ``"affine"``: a scalar
    multiply-add after the activation) for ``g``."""
    return activation in ("hswish", "affine") and g.depthwise and g.kh * g.kw <= _dw.DW_SPEC_MAX_TAPS


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
    # K up to ONE_CHUNK_MAX_K (f32; twice as many bf16 values, the same bytes): one K chunk (each
    # tile's C written once, no short last chunk); measured 3-10% faster on CRNN's 3x3
    # convolutions of 128 and 256 channels in f32; in bf16 the output can then be stored bf16
    # (ResNet-50 bf16 4% faster: its 3x3 and 2048-channel 1x1 layers had f32 outputs)
    limit = ONE_CHUNK_MAX_K * (2 if as_precision(precision) is Precision.BF16 else 1)
    one_chunk = not merge_taps and 0 < cg * kh * kw <= limit
    # f32: a last vector of at most 8 output channels (24 channels: PP-OCR's detection neck and
    # head) k-paired, 3/4 of the FMAs of two full vectors
    return pack_weights(wg.reshape(groups, kh * kw, cg, oc // groups), isa, precision=precision,
                        merge_taps=merge_taps, chunk=cg if one_chunk else None, pair_tail=True)


# --------------------------------------------------------------------------- Python-facing ops
def _pixel_stride(name: str, a: np.ndarray, shape: tuple[int, int, int, int],
                  bf16: bool = False) -> tuple[int, int]:
    """(pixel stride, image stride) in elements of an NHWC array, which may be a channel slice:
    float32, or with ``bf16`` also uint16 (bf16 bit patterns)."""
    if not isinstance(a, np.ndarray) or a.ndim != 4 or a.dtype not in ((np.float32, np.uint16) if bf16 else (np.float32,)):
        raise EmberError(f"ember: {name} must be a 4-D float32 NHWC array" + (" (or uint16: bf16)" if bf16 else ""))
    if a.shape != shape:
        raise EmberError(f"ember: {name} has shape {a.shape}, expected {shape}")
    size = a.itemsize
    s = [x // size for x in a.strides]
    if a.strides[3] != size or s[1] != shape[2] * s[2] or any(x % size for x in a.strides):
        raise EmberError(f"ember: {name} must be NHWC with contiguous channels and uniformly strided pixels")
    return s[2], s[0]


def nhwc_strides(name: str, a: np.ndarray, shape: tuple[int, int, int, int], bf16: bool = False) -> tuple[int, int]:
    """(pixel stride, image stride) in elements of float32 NHWC ``a`` (a channel slice allowed;
    with ``bf16`` also uint16 arrays of bf16 bits)."""
    return _pixel_stride(name, a, shape, bf16)


class Conv2d:
    """A 2-D convolution with packed weights, ready to run on NHWC buffers.

    ``weights`` is ``[OC, IC / groups, KH, KW]``. Depthwise convolutions (groups == IC ==
    OC) use the depthwise kernel; everything else the implicit-GEMM kernel.
    Calling it writes into ``y`` (allocated when omitted) and returns it; ``bias`` is a
    float32 vector of OC, ``residual`` an NHWC tensor of the output's shape.

    ``activation="hswish"`` applies HSwish after the clamp, then ``affine=(s, t)`` computes
    ``y * s + t`` (depthwise convolutions with at most ``DW_SPEC_MAX_TAPS`` taps:
    :func:`depthwise_activation_ok`).

    ``precision="bf16"`` runs the implicit GEMM in bf16 (weights rounded once, activations
    converted as they are read, f32 accumulation and epilogue). It raises
    :class:`~ember.errors.EmberError` without AVX512_BF16 (see
    :func:`~ember.devices.cpu.kernels.gemm.bf16_supported`). Depthwise convolutions are memory
    bound and always compute in f32 (``self.precision`` says which was used). Under bf16,
    :meth:`bind` also takes X, Y (and a GEMM's residual) as uint16 arrays of bf16 bits
    (:attr:`bf16_io`, :meth:`x_bf16_ok`, :meth:`y_bf16_ok`): activations kept bf16 in memory.
    """

    def __init__(self, geometry: ConvGeometry, weights: np.ndarray, epilogue: Epilogue = NO_EPILOGUE,
                 num_threads: int | None = None, isa: Isa | None = None,
                 precision: Precision | str = Precision.F32, activation: str = "",
                 affine: tuple[float, float] | None = None):
        g = geometry
        self.geometry, self.epilogue = g, epilogue
        if activation and not depthwise_activation_ok(g, activation):
            raise EmberError(f"ember: activation {activation!r} is fused into depthwise convolutions up to "
                             f"{_dw.DW_SPEC_MAX_TAPS} taps only")
        if affine is not None and not depthwise_activation_ok(g, "affine"):
            raise EmberError(f"ember: a scalar affine is fused into depthwise convolutions up to "
                             f"{_dw.DW_SPEC_MAX_TAPS} taps only")
        self.activation, self.affine = activation, affine
        self.isa = isa or host_isa()
        self.precision = as_precision(precision)
        # depthwise kernels compute in f32, but the specialized one reads and writes bf16 under bf16
        self._dw_bf16_io = (g.depthwise and g.kh * g.kw <= _dw.DW_SPEC_MAX_TAPS
                            and self.precision is Precision.BF16)
        self.num_threads = num_threads or default_pool().num_threads
        w = np.asarray(weights, np.float32)
        if w.shape != (g.cout, g.cin // g.groups, g.kh, g.kw):
            raise EmberError(f"ember: convolution weights have shape {w.shape}, expected "
                             f"{(g.cout, g.cin // g.groups, g.kh, g.kw)}")
        # a GEMM call, a depthwise context, or a specialized depthwise call (context, task, zero row)
        self._calls: dict[tuple[int, ...], IGemmCall | np.ndarray | tuple[np.ndarray, int, np.ndarray, int]] = {}
        if g.depthwise:
            lanes = self.isa.f32_lanes
            cp = -(-g.cin // lanes) * lanes
            wp = aligned_empty(max(g.kh * g.kw * cp, 1))
            wp[:] = 0
            wp[:g.kh * g.kw * cp].reshape(g.kh * g.kw, cp)[:, :g.cin] = w.reshape(g.cin, -1).T
            flush_subnormals(wp)
            self._dw_weights, self._cp = wp, cp
            self._row_sets = self._border_rows(g)
            self.packed = None
            self.task_address = depthwise_task_address(g.kh, g.kw, self.isa)
            self.precision = Precision.F32
        else:
            self.packed = pack_conv_weights(w, g.groups, self.isa, self.precision)

    def _border_rows(self, g: ConvGeometry) -> tuple:
        """Border rows skip the padding rows' taps, unless a weight is inf or NaN (0 * inf is NaN,
        as REFERENCE computes it over the zero padding)."""
        (sh, _), (dh, _), (pt, _) = g.strides, g.dilations, g.pads_begin
        return border_row_sets(g.oh, g.h, g.kh, sh, dh, pt) if np.isfinite(self._dw_weights).all() else ()

    @property
    def input_sizes(self) -> tuple[int, int, int]:
        """(batch, height, width) of the input it is planned for."""
        return self.geometry.batch, self.geometry.h, self.geometry.w

    def with_input(self, batch: int, h: int, w: int) -> Conv2d:
        """This convolution on inputs of ``batch`` images of ``h`` x ``w`` (a plan bound at another
        input shape): the packed weights shared, what depends on the sizes made again, as a
        convolution built for that geometry has it."""
        k = copy.copy(self)
        k.geometry = replace(self.geometry, batch=batch, h=h, w=w)
        k._calls = {}
        if k.geometry.depthwise:
            k._row_sets = k._border_rows(k.geometry)
        return k

    def _dw_ctx(self, ldx: int, xn: int, ldy: int, ldr: int) -> np.ndarray:
        g = self.geometry
        ctx = DEPTHWISE_CONTEXT.new()
        (sh, sw), (dh, dw), (pt, pl) = g.strides, g.dilations, g.pads_begin
        vals = dict(ldx=ldx, xn=xn, h=g.h, w=g.w, oh=g.oh, ow=g.ow, kh=g.kh, kw=g.kw, sh=sh, sw=sw, dh=dh,
                    dw=dw, pt=pt, pl=pl, c=g.cin, ldy=ldy, wp=self._dw_weights.ctypes.data, cp=self._cp,
                    ldr=ldr)
        ox_lo, ox_hi = interior_range(g.ow, g.w, g.kw, sw, dw, pl)
        oy_lo, oy_hi = interior_range(g.oh, g.h, g.kh, sh, dh, pt)
        vals.update(ox_lo=ox_lo, ox_hi=ox_hi, oy_lo=oy_lo, oy_hi=oy_hi)
        for k, v in vals.items():
            ctx[DEPTHWISE_CONTEXT[k]] = v
        lohi = np.array([self.epilogue.lo, self.epilogue.hi], np.float32).view(np.uint32)
        ctx[DEPTHWISE_CONTEXT["lo"]], ctx[DEPTHWISE_CONTEXT["hi"]] = int(lohi[0]), int(lohi[1])
        return ctx

    def _dw_spec_call(self, ldx: int, xn: int, ldy: int, ldr: int, residual: bool, x_bf16: bool = False,
                      y_bf16: bool = False) -> tuple[np.ndarray, int, np.ndarray, int]:
        g = self.geometry
        (sh, sw), (dh, dw), (pt, pl) = g.strides, g.dilations, g.pads_begin
        zr = zero_row(g.w * ldx + self._cp)  # read only: shared by every call of its size class
        threads = spec_threads(g.batch, g.oh, g.ow, g.cin, g.kh * g.kw, self.isa.f32_lanes, self.num_threads)
        band, gv, nb, ng, seg, ns = spec_tasks(g.batch, g.oh, g.ow, g.cin, g.kh * g.kw, self.isa.f32_lanes, threads)
        ox_lo, ox_hi = interior_range(g.ow, g.w, g.kw, sw, dw, pl)
        ctx = DW_SPEC_CONTEXT.new(xn=xn, h=g.h, w=g.w, oh=g.oh, ow=g.ow, sh=sh, dh=dh, pt=pt, pl=pl, c=g.cin,
                                  ldy=ldy, wp=self._dw_weights.ctypes.data, cp=self._cp, ldr=ldr, ox_lo=ox_lo,
                                  ox_hi=ox_hi, zr=zr.ctypes.data, band=band, gv=gv, nb=nb, ng=ng, seg=seg,
                                  ns=ns)
        lohi = np.array([self.epilogue.lo, self.epilogue.hi], np.float32).view(np.uint32)
        ctx[DW_SPEC_CONTEXT["lo"]], ctx[DW_SPEC_CONTEXT["hi"]] = int(lohi[0]), int(lohi[1])
        if self.affine is not None:
            pm = np.array(self.affine, np.float32).view(np.uint32)
            ctx[DW_SPEC_CONTEXT["pmul"]], ctx[DW_SPEC_CONTEXT["padd"]] = int(pm[0]), int(pm[1])
        task = dw_spec_task_address(DwSpec(g.kh, g.kw, sw, dw, ldx, residual, self.activation,
                                           self.affine is not None, g.cin % self.isa.f32_lanes != 0, x_bf16, y_bf16,
                                           self._row_sets),
                                    self.isa)
        return ctx, task, zr, threads

    def spec_call(self, ldx: int, xn: int, ldy: int, x_bf16: bool = False,
                  y_bf16: bool = False) -> tuple[np.ndarray, int, tuple]:
        """The specialized depthwise kernel's (context, task address, arrays to keep alive) for
        these strides, no residual, X and Y not yet set (another kernel's task calls it: see
        :mod:`~ember.devices.cpu.kernels.dw_pointwise`); ``x_bf16``/``y_bf16``: X/Y bf16 in memory."""
        if not (self.geometry.depthwise and self.geometry.kh * self.geometry.kw <= _dw.DW_SPEC_MAX_TAPS):
            raise EmberError("ember: internal: spec_call on a convolution without the specialized depthwise kernel")
        ctx, task, zr, _ = self._dw_spec_call(ldx, xn, ldy, ldy, False, x_bf16, y_bf16)
        ctx = ctx.copy()
        DW_SPEC_CONTEXT.fill(ctx, bias=zr.ctypes.data)
        return ctx, task, (self._dw_weights, zr)

    @property
    def bf16_io(self) -> bool:
        """Whether :meth:`bind` takes bf16 activations (uint16 arrays of bf16 bits) for X and Y:
        the bf16 implicit GEMM (Y only when :meth:`y_bf16_ok`), or a specialized depthwise
        kernel built with ``precision="bf16"`` (its arithmetic stays f32)."""
        return self._dw_bf16_io or (self.packed is not None and self.packed.precision is Precision.BF16)

    def y_bf16_ok(self) -> bool:
        """Whether the output may be stored bf16 (see :func:`~ember.devices.cpu.kernels.gemm.y_bf16_ok`)."""
        return self._dw_bf16_io or (self.packed is not None and y_bf16_ok(self.packed))

    def residual_in_place_ok(self) -> bool:
        """Whether Y may be the residual's own buffer (see
        :func:`~ember.devices.cpu.kernels.gemm.residual_in_place_ok`; implicit GEMMs only)."""
        return self.packed is not None and residual_in_place_ok(self.packed)

    def x_bf16_ok(self) -> bool:
        """Whether the input may be bf16 (the bf16 implicit GEMM with taps not merged, or the
        specialized depthwise kernel)."""
        return self._dw_bf16_io or (self.bf16_io and self.packed is not None and self.packed.merged_taps == 1)

    def _gemm_call(self, ldx: int, xn: int, ldy: int, ldr: int, x_bf16: bool = False,
                   y_bf16: bool = False, res_bf16: bool = False) -> IGemmCall:
        g = self.geometry
        (sh, sw), (dh, dw), (pt, pl) = g.strides, g.dilations, g.pads_begin
        geo = dict(h=g.h, w=g.w, oh=g.oh, ow=g.ow, kh=g.kh, kw=g.kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=pt, pl=pl,
                   xn=xn)
        assert self.packed is not None  # not a depthwise convolution
        return IGemmCall(self.packed, m=g.batch * g.oh * g.ow, x_geometry=geo, ldx=ldx, ldy=ldy, ldr=ldr,
                         epilogue=self.epilogue, num_threads=self.num_threads, x_bf16=x_bf16, y_bf16=y_bf16,
                         res_bf16=res_bf16)

    def bind(self, x: np.ndarray, y: np.ndarray, bias: np.ndarray | None = None,
             residual: np.ndarray | None = None) -> BoundKernel:
        """Fix the buffers (arrays, or views of a plan's arena) of a call; checks shapes once."""
        g = self.geometry
        ldx, xn = _pixel_stride("x", x, (g.batch, g.h, g.w, g.cin), self.bf16_io)
        ldy, yn = _pixel_stride("y", y, g.output_shape, self.bf16_io)
        x16, y16 = x.dtype == np.uint16, y.dtype == np.uint16
        r16 = residual is not None and residual.dtype == np.uint16
        if yn != g.oh * g.ow * ldy:
            raise EmberError("ember: the output's images must be contiguous")
        ldr = ldy
        if residual is not None:  # bf16 residuals: the bf16 implicit GEMM's epilogue only
            ldr, rn = _pixel_stride("residual", residual, g.output_shape, self.packed is not None and self.bf16_io)
            if rn != g.oh * g.ow * ldr:
                raise EmberError("ember: the residual's images must be contiguous")
        check_bias(bias, g.cout)
        spec = g.depthwise and g.kh * g.kw <= _dw.DW_SPEC_MAX_TAPS
        key = (ldx, xn, ldy, ldr, residual is not None, x16, y16) if spec else (ldx, xn, ldy, ldr, x16, y16, r16)
        call = self._calls.get(key)
        if call is None:
            if spec:
                call = self._dw_spec_call(ldx, xn, ldy, ldr, residual is not None, x16, y16)
            else:
                call = (self._dw_ctx(ldx, xn, ldy, ldr) if g.depthwise
                        else self._gemm_call(ldx, xn, ldy, ldr, x16, y16, r16))
            self._calls[key] = call
        bias_p = 0 if bias is None else bias.ctypes.data
        res_p = 0 if residual is None else residual.ctypes.data
        if isinstance(call, IGemmCall):
            return call.bind(x.ctypes.data, y.ctypes.data, bias_p, res_p, keep=(bias,))
        if isinstance(call, tuple):
            ctx, task, zr, threads = call
            ctx = ctx.copy()
            if bias is None:
                bias = zr  # zeros, at least C long
            DW_SPEC_CONTEXT.fill(ctx, x=x.ctypes.data, y=y.ctypes.data, bias=bias.ctypes.data, res=res_p)
            nb, ng, ns = (int(ctx[DW_SPEC_CONTEXT[k]]) for k in ("nb", "ng", "ns"))
            return BoundKernel(task, ctx, g.batch * nb * ng * ns, threads, (self._dw_weights, bias, zr),
                               layout=DW_SPEC_CONTEXT)
        ctx = call.copy()
        DEPTHWISE_CONTEXT.fill(ctx, x=x.ctypes.data, y=y.ctypes.data, bias=bias_p, res=res_p,
                               flags=(DW_FLAG_BIAS if bias_p else 0) | (DW_FLAG_RES if res_p else 0))
        return BoundKernel(self.task_address, ctx, g.batch * g.oh, self.num_threads, (self._dw_weights, bias),
                           layout=DEPTHWISE_CONTEXT)

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
    sh, sw = strides
    dh, dw = dilations
    pt, pl = pads_begin
    pb, pr = pads_end
    geo = ConvGeometry(n, h, wd, c, w.shape[0], w.shape[2], w.shape[3], (sh, sw), (dh, dw), (pt, pl), (pb, pr), groups)
    return Conv2d(geo, w, epilogue, num_threads, isa, precision)(x, None, bias, residual)


__all__ = ["Conv2d", "ConvGeometry", "conv2d", "nhwc_strides", "pack_conv_weights"]
