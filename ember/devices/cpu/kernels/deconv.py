"""Transposed convolution (ConvolutionBackpropData, GroupConvolutionBackpropData) on
channel-last activations, 1-D to 3-D: a GEMM into per-pixel columns, then a gather that sums
each output pixel's columns (col2im, with the epilogue fused).

Input pixel ``i`` and kernel tap ``t`` land on output ``o = i * stride + t * dilation - pad``
(per spatial axis). The GEMM (:class:`~ember.devices.cpu.kernels.gemm.IGemmCall`, weights
packed once) computes ``cols[pixel, group, tap, co] = sum_ci x[pixel, group, ci] * w[group,
ci, co, tap]``. The gather then writes every output pixel once:
``y[o, c] = clamp(bias[c] + residual[o, c] + sum over the (tap, i) pairs that land on o of
cols[i, tap, c])``. Which pairs land on an output position is a small table per axis built at
bind time (count, then ``(source offset, weight offset)`` pairs), so strides, dilations,
pads (negative ones too), output padding and an explicit output shape are all one code path,
and no division runs per pixel.

Depthwise transposed convolutions (groups == input channels == output channels) skip the
GEMM: the gather reads the input itself (a tap stride of 0) and multiplies by the tap's
per-channel weight.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.gemm import (
    NO_EPILOGUE,
    Epilogue,
    IGemmCall,
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

COL2IM_CONTEXT = ContextLayout(
    "col2im",
    ("src", "dst", "w", "bias", "res", "xt", "yt", "zt", "srcn", "dstn", "resn", "od", "oh", "ow", "jx", "jy",
     "jz", "cg", "groups", "gs", "ldy", "ldr", "flags", "lo", "hi"),
    pointers=("src", "dst", "w", "bias", "res", "xt", "yt", "zt"))
FLAG_BIAS, FLAG_RES = 1, 2
BLOCK_VECTORS = 4  # channel vectors summed at once (independent chains, one table walk)


def _emit_col2im(m: ir.Module, name: str, lanes: int, weighted: bool) -> None:
    """task(ctx, t): output row t = (image, oz, oy), every column and channel."""
    fn = Emitter.function(m, name, VOID, [PTR, I64])
    e = ContextEmitter(m, fn, COL2IM_CONTEXT)
    b = e.b
    task = fn.args[1]
    L = lanes
    vt = vec(F32, L)
    zero = ir.Constant(vt, None)
    OD, OH, OW = e.arg("od"), e.arg("oh"), e.arg("ow")
    rows = b.mul(OD, OH)
    img, r = b.sdiv(task, rows), b.srem(task, rows)
    oz, oy = b.sdiv(r, OH), b.srem(r, OH)
    row = b.mul(b.add(b.mul(oz, OH), oy), OW)
    src = e.gep(F32, e.arg("src", PTR), b.mul(img, e.arg("srcn")))
    dst = e.gep(F32, e.arg("dst", PTR), b.add(b.mul(img, e.arg("dstn")), b.mul(row, e.arg("ldy"))))
    res = e.gep(F32, e.arg("res", PTR), b.add(b.mul(img, e.arg("resn")), b.mul(row, e.arg("ldr"))))
    wts = e.arg("w", PTR)
    flags = b.trunc(e.arg("flags"), I32)
    has_bias = b.icmp_unsigned("!=", b.and_(flags, c32(FLAG_BIAS)), c32(0))
    has_res = b.icmp_unsigned("!=", b.and_(flags, c32(FLAG_RES)), c32(0))
    vlo, vhi = e.splat(e.arg("lo", F32), L), e.splat(e.arg("hi", F32), L)
    cg, gs, ldy, ldr = e.arg("cg"), e.arg("gs"), e.arg("ldy"), e.arg("ldr")

    def entry(table: str, width: str, pos: ir.Value) -> ir.Value:
        return e.gep(I64, e.arg(table, PTR), b.mul(pos, b.add(b.mul(e.arg(width), c64(2)), c64(1))))

    ztab, ytab = entry("zt", "jz", oz), entry("yt", "jy", oy)
    nz, ny = e.load(I64, ztab), e.load(I64, ytab)

    def pair(tab: ir.Value, j: ir.Value) -> tuple[ir.Value, ir.Value]:
        k = b.add(b.mul(j, c64(2)), c64(1))
        return e.load(I64, e.gep(I64, tab, k)), e.load(I64, e.gep(I64, tab, b.add(k, c64(1))))

    def per_pixel() -> None:
        """Each output pixel, its channels in vectors."""
        with e.loop(0, OW, name="ox") as ox:
            xtab = entry("xt", "jx", ox)
            nx = e.load(I64, xtab)
            drow = e.gep(F32, dst, b.mul(ox, ldy))
            rrow = e.gep(F32, res, b.mul(ox, ldr))

            def block(g: ir.Value, co: ir.Value, count: int, tail: ir.Value | None) -> None:
                """``count`` channel vectors from ``co``; ``tail`` masks the last one."""
                ch = b.add(b.mul(g, cg), co)  # output channel of the first lane
                soff = b.add(b.mul(g, gs), co)
                accs = []
                for v in range(count):
                    mask = tail if v == count - 1 else None
                    a = e.var(vt, zero)
                    with b.if_then(has_bias):
                        b.store(masked_load(e, vt, e.gep(F32, e.arg("bias", PTR), b.add(ch, c64(v * L))), mask), a)
                    accs.append(a)
                with e.loop(0, nz, name="jz") as jz:
                    zs, zw = pair(ztab, jz)
                    with e.loop(0, ny, name="jy") as jy:
                        ys, yw = pair(ytab, jy)
                        szy, wzy = b.add(zs, ys), b.add(zw, yw)
                        with e.loop(0, nx, name="jx") as jx:
                            xs, xw = pair(xtab, jx)
                            sp = e.gep(F32, src, b.add(b.add(szy, xs), soff))
                            wp = e.gep(F32, wts, b.add(b.add(wzy, xw), ch)) if weighted else None
                            for v, a in enumerate(accs):
                                mask = tail if v == count - 1 else None
                                val = masked_load(e, vt, e.gep(F32, sp, v * L), mask)
                                if weighted:
                                    wv = masked_load(e, vt, e.gep(F32, wp, v * L), mask)
                                    b.store(fmuladd(e, val, wv, e.load(vt, a)), a)
                                else:
                                    b.store(b.fadd(e.load(vt, a), val), a)
                for v, a in enumerate(accs):
                    mask = tail if v == count - 1 else None
                    with b.if_then(has_res):
                        rv = masked_load(e, vt, e.gep(F32, rrow, b.add(ch, c64(v * L))), mask)
                        b.store(b.fadd(e.load(vt, a), rv), a)
                    x = e.load(vt, a)
                    x = b.select(b.fcmp_ordered("<", x, vlo), vlo, x)
                    x = b.select(b.fcmp_ordered(">", x, vhi), vhi, x)
                    masked_store(e, x, e.gep(F32, drow, b.add(ch, c64(v * L))), mask)

            with e.loop(0, e.arg("groups"), name="g") as g:
                wide = BLOCK_VECTORS * L
                nblk = b.mul(b.sdiv(cg, c64(wide)), c64(wide))
                with e.loop(0, nblk, wide, name="cb") as co:
                    block(g, co, BLOCK_VECTORS, None)
                # the rest (under BLOCK_VECTORS vectors) in one walk of the tables, the last vector masked
                rest = b.sub(cg, nblk)
                nv = e.cdiv(rest, L)
                tail = lane_mask(e, b.sub(rest, b.mul(b.sub(nv, c64(1)), c64(L))), L)
                for count in range(1, BLOCK_VECTORS + 1):
                    with b.if_then(b.icmp_signed("==", nv, c64(count))):
                        block(g, nblk, count, tail)

    def one_channel() -> None:
        """One channel per group: L output columns at once, their (tap, input) pairs gathered."""
        iota = ir.Constant(vec(I64, L), list(range(L)))
        xt, jxw = e.arg("xt", PTR), b.add(b.mul(e.arg("jx"), c64(2)), c64(1))
        vjxw = e.splat(jxw, L)

        def addresses(base: ir.Value, index: ir.Value, size: int) -> ir.Value:
            addr = b.add(e.splat(b.ptrtoint(base, I64), L), b.mul(index, e.splat(c64(size), L)))
            return b.inttoptr(addr, vec(PTR, L))

        def gather(base: ir.Value, typ: ir.Type, index: ir.Value, mask: ir.Value) -> ir.Value:
            size = 8 if typ is I64 else 4
            return e.call(f"llvm.masked.gather.v{L}{'i64' if typ is I64 else 'f32'}.v{L}p0", vec(typ, L),
                          [addresses(base, index, size), c32(size), mask, ir.Constant(vec(typ, L), None)])

        with e.loop(0, e.arg("groups"), name="g") as g:
            soff = b.mul(g, gs)
            with e.loop(0, OW, L, name="ox") as ox0:
                oxv = b.add(e.splat(ox0, L), iota)
                live = b.icmp_signed("<", oxv, e.splat(OW, L))
                acc = e.var(vt, zero)
                with b.if_then(has_bias):
                    b.store(e.splat(e.load(F32, e.gep(F32, e.arg("bias", PTR), g)), L), acc)
                row = b.mul(oxv, vjxw)
                nxv = gather(xt, I64, row, live)
                with e.loop(0, nz, name="jz") as jz:
                    zs, _ = pair(ztab, jz)
                    with e.loop(0, ny, name="jy") as jy:
                        ys, _ = pair(ytab, jy)
                        szy = e.splat(b.add(b.add(zs, ys), soff), L)
                        with e.loop(0, e.arg("jx"), name="jx") as jx:
                            m_ = b.and_(live, b.icmp_signed("<", e.splat(jx, L), nxv))
                            xs = gather(xt, I64, b.add(row, e.splat(b.add(b.mul(jx, c64(2)), c64(1)), L)), m_)
                            val = gather(src, F32, b.add(szy, xs), m_)
                            b.store(b.fadd(e.load(vt, acc), val), acc)
                x = e.load(vt, acc)
                with b.if_then(has_res):
                    rv = gather(res, F32, b.add(b.mul(oxv, e.splat(ldr, L)), e.splat(g, L)), live)
                    b.store(b.fadd(x, rv), acc)
                x = e.load(vt, acc)
                x = b.select(b.fcmp_ordered("<", x, vlo), vlo, x)
                x = b.select(b.fcmp_ordered(">", x, vhi), vhi, x)
                ptrs = addresses(dst, b.add(b.mul(oxv, e.splat(ldy, L)), e.splat(g, L)), 4)
                e.call(f"llvm.masked.scatter.v{L}f32.v{L}p0", VOID, [x, ptrs, c32(4), live])

    if weighted:
        per_pixel()
    else:
        with b.if_else(b.icmp_signed("==", cg, c64(1))) as (one, many):
            with one:
                one_channel()
            with many:
                per_pixel()
    b.ret_void()


def _build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_col2im(m, f"{prefix}_col2im_task", isa.f32_lanes, weighted=False)
    _emit_col2im(m, f"{prefix}_col2im_dw_task", isa.f32_lanes, weighted=True)
    return m


@functools.cache
def _library(isa: Isa) -> jit.Library:
    return jit.load(f"deconv|{isa.level}|v{BLOCK_VECTORS}|g1|t", isa, lambda p: _build(p, isa))


# --------------------------------------------------------------------------- geometry
@functools.lru_cache(maxsize=512)
def axis_table(n_in: int, n_out: int, k: int, s: int, d: int, pad: int, pixel: int, tap: int,
               wtap: int) -> np.ndarray:
    """For each output position ``o`` of one axis: the number of (tap, input) pairs landing on
    it, then ``(i * pixel + t * tap, t * wtap)`` for each (taps in order), padded with zeros to
    the widest position. Read-only and memoized: a plan bound at another input shape makes the
    tables of its sizes again, and sizes repeat between shapes."""
    o = np.arange(n_out, dtype=np.int64)[:, None]
    t = np.arange(k, dtype=np.int64)[None, :]
    q = o + pad - t * d
    valid = (q >= 0) & (q % s == 0) & (q // s < n_in)
    counts = valid.sum(axis=1)
    width = max(int(counts.max(initial=0)), 1)
    order = np.argsort(~valid, axis=1, kind="stable")[:, :width]  # the valid taps first, in order
    taps = np.broadcast_to(t, valid.shape)
    tt, qq, vv = (np.take_along_axis(a, order, axis=1) for a in (taps, q, valid))
    table = np.zeros((max(n_out, 1), 1 + 2 * width), np.int64)
    if n_out:
        table[:, 0] = counts
        table[:, 1::2] = np.where(vv, qq // s * pixel + tt * tap, 0)[:, :width]
        table[:, 2::2] = np.where(vv, tt * wtap, 0)[:, :width]
    table.flags.writeable = False
    return table


@dataclass(frozen=True)
class DeconvGeometry:
    """A transposed convolution over channel-last data ``[batch, *spatial, cin]`` (1 to 3
    spatial axes) into ``[batch, *out_spatial, cout]``; ``pads_begin`` may be negative and
    ``out_spatial`` is the output size (output padding and explicit output shapes included)."""

    batch: int
    spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]
    cin: int
    cout: int
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    groups: int = 1

    def __post_init__(self) -> None:
        n = len(self.spatial)
        if not 1 <= n <= 3 or any(len(t) != n for t in (self.out_spatial, self.kernel, self.strides,
                                                          self.dilations, self.pads_begin)):
            raise EmberError("ember: transposed convolution wants 1 to 3 spatial axes, the same count everywhere")
        if self.groups < 1 or self.cin % self.groups or self.cout % self.groups:
            raise EmberError(f"ember: transposed convolution channels {self.cin}->{self.cout} do not split "
                             f"into {self.groups} groups")
        if min(self.strides) < 1 or min(self.dilations) < 1 or min(self.kernel) < 1:
            raise EmberError("ember: transposed convolution strides, dilations and kernel must be >= 1")

    @property
    def depthwise(self) -> bool:
        return self.groups == self.cin == self.cout and self.groups > 1

    @property
    def taps(self) -> int:
        return math.prod(self.kernel)

    @property
    def pixels(self) -> int:
        return self.batch * math.prod(self.spatial)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.spatial, self.cin)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.out_spatial, self.cout)

    @property
    def cols_shape(self) -> tuple[int, int]:
        """The GEMM's output: ``[pixels, groups * taps * cout / groups]``."""
        return (self.pixels, self.taps * self.cout)

    def padded3(self, t: tuple[int, ...], fill: int) -> tuple[int, int, int]:
        """``t`` with leading ``fill`` values up to three axes (D, H, W)."""
        return (fill,) * (3 - len(t)) + tuple(t)  # type: ignore[return-value]


def _strides(name: str, a: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int]:
    """(pixel stride, image stride) in floats of a channel-last array, which may be a channel
    slice of a wider buffer; its pixels must be uniformly strided within each image."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != shape:
        raise EmberError(f"ember: {name} must be a float32 array of shape {shape}")
    s = [x // 4 for x in a.strides]
    if any(x % 4 for x in a.strides) or (shape[-1] > 1 and s[-1] != 1):
        raise EmberError(f"ember: {name} must have contiguous channels")
    pix = s[-2]
    for i in range(len(shape) - 2, 1, -1):
        if shape[i - 1] > 1 and s[i - 1] != s[i] * shape[i]:
            raise EmberError(f"ember: {name} must have uniformly strided pixels")
    return pix, s[0]


class ConvTranspose:
    """A transposed convolution with weights packed once, ready to bind to channel-last buffers.

    ``weights`` are ``[groups, cin / groups, cout / groups, *kernel]`` (OpenVINO's
    GroupConvolutionBackpropData layout; ConvolutionBackpropData's ``[cin, cout, *kernel]`` is
    the one-group case). :meth:`bind` returns the kernel calls of one run: the GEMM into
    ``cols`` (an array of :attr:`DeconvGeometry.cols_shape`) and the gather into ``y``.
    Depthwise ones need no ``cols``. ``precision="bf16"`` runs the GEMM in bf16 (AVX512_BF16).
    """

    def __init__(self, geometry: DeconvGeometry, weights: np.ndarray, epilogue: Epilogue = NO_EPILOGUE,
                 num_threads: int | None = None, isa: Isa | None = None,
                 precision: Precision | str = Precision.F32):
        g = geometry
        self.geometry, self.epilogue = g, epilogue
        self.isa = isa or host_isa()
        self.num_threads = num_threads or default_pool().num_threads
        self.precision = as_precision(precision)
        cg, og = g.cin // g.groups, g.cout // g.groups
        w = np.asarray(weights, np.float32)
        if w.shape != (g.groups, cg, og, *g.kernel):
            raise EmberError(f"ember: transposed convolution weights have shape {w.shape}, expected "
                             f"{(g.groups, cg, og, *g.kernel)}")
        w = w.reshape(g.groups, cg, og, g.taps)
        self._tables: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        self._gemms: dict[tuple[int, int], IGemmCall] = {}
        if g.depthwise:
            lanes = self.isa.f32_lanes
            self._cp = -(-g.cout // lanes) * lanes
            wt = aligned_empty(g.taps * self._cp)
            wt[:] = 0
            wt.reshape(g.taps, self._cp)[:, :g.cout] = w.reshape(g.cout, g.taps).T
            self._weights = wt
            self.packed = None
            self.precision = Precision.F32
        else:
            self._cp = 0
            self._weights = aligned_empty(16)
            cols = w.transpose(0, 1, 3, 2).reshape(g.groups, 1, cg, g.taps * og)
            # N = taps x cout/groups columns: PP-OCR det's 24 -> 1 head at k 2x2 has 4, its
            # last vector k-paired (see gemm.PackedWeights.pair_tail)
            self.packed = pack_weights(cols, self.isa, precision=self.precision, pair_tail=True)
        self._lib = _library(self.isa)

    def with_input(self, batch: int, spatial: tuple[int, ...], out_spatial: tuple[int, ...]) -> ConvTranspose:
        """This transposed convolution on ``batch`` inputs of ``spatial`` into ``out_spatial`` (a
        plan bound at another input shape): weights shared, tables and GEMM calls made again."""
        k = copy.copy(self)
        k.geometry = replace(self.geometry, batch=batch, spatial=tuple(spatial), out_spatial=tuple(out_spatial))
        k._tables, k._gemms = {}, {}
        return k

    def _axis_tables(self, src_pixel: int, tap_unit: int) -> tuple[np.ndarray, ...]:
        """(z, y, x) tables for a source whose pixel stride is ``src_pixel`` floats and whose
        taps are ``tap_unit`` floats apart (0: the depthwise gather reads the input itself)."""
        g = self.geometry
        (id_, ih, iw), (od, oh, ow) = g.padded3(g.spatial, 1), g.padded3(g.out_spatial, 1)
        (kd, kh, kw), (sd, sh, sw) = g.padded3(g.kernel, 1), g.padded3(g.strides, 1)
        (dd, dh, dw), (pd, ph, pw) = g.padded3(g.dilations, 1), g.padded3(g.pads_begin, 0)
        wunit = self._cp
        return (axis_table(id_, od, kd, sd, dd, pd, ih * iw * src_pixel, kh * kw * tap_unit, kh * kw * wunit),
                axis_table(ih, oh, kh, sh, dh, ph, iw * src_pixel, kw * tap_unit, kw * wunit),
                axis_table(iw, ow, kw, sw, dw, pw, src_pixel, tap_unit, wunit))

    def bind(self, x: np.ndarray, y: np.ndarray, cols: np.ndarray | None = None, bias: np.ndarray | None = None,
             residual: np.ndarray | None = None) -> list[BoundKernel]:
        """The calls of one run over these buffers (arrays or views of a plan's arena)."""
        g = self.geometry
        ldx, xn = _strides("x", x, g.input_shape)
        ldy, yn = _strides("y", y, g.output_shape)
        ldr, rn = (ldy, yn) if residual is None else _strides("residual", residual, g.output_shape)
        check_bias(bias, g.cout)
        calls = []
        og = g.cout // g.groups
        if g.depthwise:
            src, src_pixel, srcn, tap_unit, gs = x, ldx, xn, 0, 0
            groups, cg = 1, g.cout
        else:
            if cols is None or not isinstance(cols, np.ndarray) or cols.dtype != np.float32 \
                    or cols.shape != g.cols_shape or not cols.flags.c_contiguous:
                raise EmberError(f"ember: cols must be a contiguous float32 array of {g.cols_shape}")
            width = g.cols_shape[1]
            key = (ldx, xn)
            gemm = self._gemms.get(key)
            if gemm is None:
                size = math.prod(g.spatial)
                assert self.packed is not None  # not depthwise
                gemm = IGemmCall(self.packed, m=g.pixels, x_geometry=dict(h=size, oh=size, xn=xn), ldx=ldx,
                                 ldy=width, num_threads=self.num_threads)
                self._gemms[key] = gemm
            calls.append(gemm.bind(x.ctypes.data, cols.ctypes.data))
            src, src_pixel, srcn, tap_unit, gs = cols, width, width * math.prod(g.spatial), og, g.taps * og
            groups, cg = g.groups, og
        tkey = (src_pixel, tap_unit)
        if tkey not in self._tables:
            self._tables[tkey] = self._axis_tables(src_pixel, tap_unit)
        zt, yt, xt = self._tables[tkey]
        od, oh, ow = g.padded3(g.out_spatial, 1)
        lohi = np.array([self.epilogue.lo, self.epilogue.hi], np.float32).view(np.uint32)
        flags = (FLAG_BIAS if bias is not None else 0) | (FLAG_RES if residual is not None else 0)
        ctx = COL2IM_CONTEXT.new(
            src=src.ctypes.data, dst=y.ctypes.data, w=self._weights.ctypes.data,
            bias=0 if bias is None else bias.ctypes.data, res=0 if residual is None else residual.ctypes.data,
            xt=xt.ctypes.data, yt=yt.ctypes.data, zt=zt.ctypes.data, srcn=srcn, dstn=yn, resn=rn, od=od, oh=oh,
            ow=ow, jx=(xt.shape[1] - 1) // 2, jy=(yt.shape[1] - 1) // 2, jz=(zt.shape[1] - 1) // 2, cg=cg,
            groups=groups, gs=gs, ldy=ldy, ldr=ldr, flags=flags, lo=int(lohi[0]), hi=int(lohi[1]))
        name = "col2im_dw_task" if g.depthwise else "col2im_task"
        n_tasks = g.batch * od * oh if y.size else 0
        calls.append(BoundKernel(self._lib.address(name), ctx, n_tasks, self.num_threads,
                                 (src, self._weights, bias, xt, yt, zt), layout=COL2IM_CONTEXT))
        return calls

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None, bias: np.ndarray | None = None,
                 residual: np.ndarray | None = None, pool: ThreadPool | None = None) -> np.ndarray:
        """Compute into ``y`` (allocated when None) and return it."""
        g = self.geometry
        if y is None:
            y = aligned_empty(g.output_shape)
        cols = None if g.depthwise else aligned_empty(g.cols_shape)
        for k in self.bind(x, y, cols, bias, residual):
            k.run(pool)
        return y


# --------------------------------------------------------------------------- 1-D by output phase
@dataclass(frozen=True)
class PhasePlan:
    """One output phase of a strided 1-D transposed convolution as an ordinary convolution.

    Outputs ``phase, phase + stride, ...`` (``count`` of them) take input pixel
    ``j + offset`` through kernel tap ``t`` for every tap with ``phase + pad - t * dilation ==
    offset * stride``: a convolution of the input pixels ``lo .. lo + width`` with those taps
    (ascending offset, so descending ``t``), ``dilation`` apart, padded ``pad_begin`` /
    ``pad_end`` pixels."""

    phase: int
    count: int
    lo: int
    width: int
    taps: tuple[int, ...]
    dilation: int
    pad_begin: int
    pad_end: int


def phase_plans(n_in: int, n_out: int, k: int, s: int, d: int, pad: int) -> list[PhasePlan] | None:
    """The output phases of a 1-D transposed convolution (see :class:`PhasePlan`), or None when
    some phase has no tap reaching the input (its outputs would be the bias alone)."""
    plans = []
    for r in range(min(s, n_out)):
        count = -(-(n_out - r) // s)
        offsets = {t: (r + pad - t * d) // s for t in range(k) if (r + pad - t * d) % s == 0}
        taps = sorted((t for t, e in offsets.items() if -(count - 1) <= e <= n_in - 1), key=lambda t: offsets[t])
        if not taps:
            return None
        es = [offsets[t] for t in taps]
        step = es[1] - es[0] if len(es) > 1 else 1
        lo = max(0, es[0])
        hi = min(n_in, count + es[-1])
        span = step * (len(es) - 1) + 1
        pb = lo - es[0]
        plans.append(PhasePlan(r, count, lo, hi - lo, tuple(taps), step, pb, count - 1 + span - (hi - lo) - pb))
    return plans


def _nhwc_view(a: np.ndarray, images: int, pixels: int, image_stride: int, pixel_stride: int) -> np.ndarray:
    """A ``[images, 1, pixels, C]`` view of ``a``'s memory (strides in floats) as the
    convolution kernel reads it (its one row spans its pixels)."""
    row = pixels * pixel_stride
    return np.lib.stride_tricks.as_strided(a, (images, 1, pixels, a.shape[-1]),
                                           (image_stride * 4, row * 4, pixel_stride * 4, 4))


class PhaseConvTranspose1d:
    """A strided 1-D transposed convolution as ``stride`` ordinary convolutions, one per output
    phase (:func:`phase_plans`), each writing its outputs (every ``stride``-th pixel) in place
    with the epilogue fused: no column buffer, no gather pass.

    Same weights and buffers as :class:`ConvTranspose` (``x [N, W, C]``, ``y [N, OW, CO]``,
    channel slices allowed); raises :class:`~ember.errors.EmberError` when a phase has no tap
    (check :func:`phase_plans` first)."""

    def __init__(self, geometry: DeconvGeometry, weights: np.ndarray, epilogue: Epilogue = NO_EPILOGUE,
                 num_threads: int | None = None, isa: Isa | None = None,
                 precision: Precision | str = Precision.F32):
        g = geometry
        if len(g.spatial) != 1:
            raise EmberError("ember: PhaseConvTranspose1d is for 1-D transposed convolutions")
        plans = phase_plans(g.spatial[0], g.out_spatial[0], g.kernel[0], g.strides[0], g.dilations[0],
                            g.pads_begin[0])
        if plans is None:
            raise EmberError("ember: a phase of this transposed convolution has no tap")
        self.geometry, self.plans = g, plans
        cg, og = g.cin // g.groups, g.cout // g.groups
        w = np.asarray(weights, np.float32)
        if w.shape != (g.groups, cg, og, *g.kernel):
            raise EmberError(f"ember: transposed convolution weights have shape {w.shape}, expected "
                             f"{(g.groups, cg, og, *g.kernel)}")
        self._weights = [np.ascontiguousarray(w[..., list(p.taps)].transpose(0, 2, 1, 3).reshape(
            g.cout, cg, 1, len(p.taps))) for p in plans]
        self._args = (epilogue, num_threads, isa, precision)
        self._convs: dict[int, list[Any]] = {}
        self.precision = self._phase_convs(g.batch if g.batch > 0 else 1)[0].precision

    def _phase_convs(self, images: int) -> list[Any]:
        """One Conv2d per phase over ``images`` images (built once per count)."""
        from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry

        convs = self._convs.get(images)
        if convs is None:
            g = self.geometry
            convs = [Conv2d(ConvGeometry(images, 1, p.width, g.cin, g.cout, 1, len(p.taps), dilations=(1, p.dilation),
                                         pads_begin=(0, p.pad_begin), pads_end=(0, p.pad_end), groups=g.groups),
                            w, *self._args) for p, w in zip(self.plans, self._weights)]
            self._convs[images] = convs
        return convs

    def bind(self, x: np.ndarray, y: np.ndarray, bias: np.ndarray | None = None,
             residual: np.ndarray | None = None) -> list[BoundKernel]:
        """The calls of one run over these buffers (arrays or views of a plan's arena)."""
        g = self.geometry
        ldx, xn = _strides("x", x, g.input_shape)
        ldy, yn = _strides("y", y, g.output_shape)
        ldr, rn = (ldy, yn) if residual is None else _strides("residual", residual, g.output_shape)
        s, n_out = g.strides[0], g.out_spatial[0]
        # one call per phase over the whole batch when each phase's outputs are evenly spaced
        # across images (as the kernel wants), else one per image and phase
        whole = g.batch > 1 and n_out % s == 0 and yn == n_out * ldy and rn == n_out * ldr
        images = g.batch if whole else 1
        calls = []
        for img in range(0, g.batch, images):
            for p, conv in zip(self.plans, self._phase_convs(images)):
                out_stride = p.count * s  # pixels between images, as the kernel reads them
                xv = _nhwc_view(x[img:, p.lo:], images, p.width, xn, ldx)
                yv = _nhwc_view(y[img:, p.phase:], images, p.count, out_stride * ldy, s * ldy)
                rv = None if residual is None else _nhwc_view(residual[img:, p.phase:], images, p.count,
                                                               out_stride * ldr, s * ldr)
                calls.append(conv.bind(xv, yv, bias, rv))
        return calls

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None, bias: np.ndarray | None = None,
                 residual: np.ndarray | None = None, pool: ThreadPool | None = None) -> np.ndarray:
        """Compute into ``y`` (allocated when None) and return it."""
        if y is None:
            y = aligned_empty(self.geometry.output_shape)
        for k in self.bind(x, y, bias, residual):
            k.run(pool)
        return y


__all__ = ["COL2IM_CONTEXT", "ConvTranspose", "DeconvGeometry", "PhaseConvTranspose1d", "axis_table", "phase_plans"]
