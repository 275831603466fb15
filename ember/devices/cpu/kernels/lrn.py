"""Local response normalization along one axis of an f32 ``[outer, C, inner]`` view:
``y = x / (bias + scale * sum(x[c'] ** 2 for c' in [c - half, c + half])) ** beta``.

``lrn_task(ctx, task)``: with ``inner > 1`` (an NCHW tensor across channels) the vectors run
along the contiguous inner axis and the window along C; with ``inner == 1`` (an NHWC tensor,
channels innermost) the vectors run along C and each window tap is a masked load shifted by
the tap. The power is ``exp(-beta * log(base))`` (VectorMath), so a base of 0 gives inf as
REFERENCE does.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I64, PTR, VOID, Emitter, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout, f32_bits
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import VectorMath, lane_mask, masked_load, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel

LRN_CONTEXT = ContextLayout(
    "lrn",
    ("x", "y", "outer", "c", "inner", "half", "bias", "scale", "nbeta", "ib", "nib", "rpt"),
    pointers=("x", "y"))


#: what a task stores: the normalized x (LRN over one axis), or the window sums of x squared or
#: of x itself (the passes of an LRN over several axes, see :func:`window_sum`)
MODES = ("normalize", "squares", "sum")


def _emit(m: ir.Module, prefix: str, lanes: int, mode: str = "normalize") -> None:
    fn = Emitter.function(m, f"{prefix}_lrn_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, LRN_CONTEXT)
    b = e.b
    mth = VectorMath(e, lanes)
    vt = vec(F32, lanes)
    task = fn.args[1]
    x, y = e.arg("x", PTR), e.arg("y", PTR)
    C, inner, half = e.arg("c"), e.arg("inner"), e.arg("half")
    bias = e.splat(e.arg("bias", F32), lanes)
    scale = e.splat(e.arg("scale", F32), lanes)
    nbeta = e.splat(e.arg("nbeta", F32), lanes)
    zero = ir.Constant(vt, None)

    def normalize(v: ir.Value, s: ir.Value) -> ir.Value:
        if mode != "normalize":
            return s
        base = b.fadd(bias, b.fmul(scale, s))
        return b.fmul(v, mth.exp(b.fmul(nbeta, mth.log(base))))

    def tap(v: ir.Value) -> ir.Value:
        return v if mode == "sum" else b.fmul(v, v)

    with b.if_else(b.icmp_signed("==", inner, c64(1))) as (rows, cols):
        with rows:  # channels innermost: vectors along C, taps as shifted masked loads
            r0 = b.mul(task, e.arg("rpt"))
            r1 = e.min(e.arg("outer"), b.add(r0, e.arg("rpt")))
            lane_ids = ir.Constant(vec(I64, lanes), list(range(lanes)))
            with e.loop(r0, r1, name="o") as o:
                xr = e.gep(F32, x, b.mul(o, C))
                yr = e.gep(F32, y, b.mul(o, C))
                with e.loop(0, C, lanes, name="c") as c0:
                    here = lane_mask(e, b.sub(C, c0), lanes)
                    acc = e.var(vt, zero)
                    with e.loop(b.sub(c64(0), half), b.add(half, c64(1)), name="k") as k:
                        pos = b.add(e.splat(b.add(c0, k), lanes), lane_ids)
                        ok = b.and_(b.icmp_signed(">=", pos, e.splat(c64(0), lanes)),
                                    b.icmp_signed("<", pos, e.splat(C, lanes)))
                        v = masked_load(e, vt, e.gep(F32, xr, b.add(c0, k)), ok)
                        b.store(b.fadd(e.load(vt, acc), tap(v)), acc)
                    v = masked_load(e, vt, e.gep(F32, xr, c0), here)
                    masked_store(e, normalize(v, e.load(vt, acc)), e.gep(F32, yr, c0), here)
        with cols:  # vectors along the inner axis, the window along C
            nib, ib = e.arg("nib"), e.arg("ib")
            rest = b.sdiv(task, nib)
            i0 = b.mul(b.srem(task, nib), ib)
            i1 = e.min(inner, b.add(i0, ib))
            o = b.sdiv(rest, C)
            c = b.srem(rest, C)
            plane = b.mul(C, inner)
            xo = e.gep(F32, x, b.mul(o, plane))
            lo = e.max(c64(0), b.sub(c, half))
            hi = e.min(C, b.add(b.add(c, half), c64(1)))

            def block(i: ir.Value, mask: ir.Value | None) -> None:
                acc = e.var(vt, zero)
                with e.loop(lo, hi, name="k") as k:
                    v = masked_load(e, vt, e.gep(F32, xo, b.add(b.mul(k, inner), i)), mask)
                    b.store(b.fadd(e.load(vt, acc), tap(v)), acc)
                off = b.add(b.mul(o, plane), b.add(b.mul(c, inner), i))
                v = masked_load(e, vt, e.gep(F32, x, off), mask)
                masked_store(e, normalize(v, e.load(vt, acc)), e.gep(F32, y, off), mask)

            nfull = b.add(i0, b.mul(b.sdiv(b.sub(i1, i0), c64(lanes)), c64(lanes)))
            with e.loop(i0, nfull, lanes, name="iv") as i:
                block(i, None)
            with b.if_then(b.icmp_signed("<", nfull, i1)):
                block(nfull, lane_mask(e, b.sub(i1, nfull), lanes))
    b.ret_void()


@functools.cache
def _library(isa: Isa, mode: str = "normalize") -> jit.Library:
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit(m, prefix, isa.f32_lanes, mode)
        return m
    return jit.load(f"lrn|{isa.level}" if mode == "normalize" else f"lrn|{isa.level}|{mode}", isa, build)


def window_sum(x: np.ndarray, y: np.ndarray, half: int, squares: bool, threads: int,
               isa: Isa | None = None) -> BoundKernel:
    """A bound sum over the window of ``half`` elements either side along axis 1 of contiguous
    f32 ``[outer, C, inner]`` arrays (of ``x`` squared with ``squares``): one pass of an LRN
    over several axes (a window sum along each axis in turn is the sum over the box)."""
    return lrn_kernel(x, y, half, 0.0, 1.0, 0.0, threads, isa, "squares" if squares else "sum")


def lrn_kernel(x: np.ndarray, y: np.ndarray, half: int, bias: float, scale: float, beta: float, threads: int,
               isa: Isa | None = None, mode: str = "normalize") -> BoundKernel:
    """A bound LRN over axis 1 of contiguous f32 ``[outer, C, inner]`` arrays ``x`` and ``y``
    (the window spans ``half`` elements either side; ``scale`` is alpha / size ** len(axes));
    ``mode`` other than ``normalize``: the window sums (:data:`MODES`)."""
    outer, c, inner = x.shape
    isa = isa or host_isa()
    lanes = isa.f32_lanes
    ctx = LRN_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, outer=outer, c=c, inner=inner, half=half,
                          bias=f32_bits(bias), scale=f32_bits(scale), nbeta=f32_bits(-beta))
    if inner == 1:
        rpt = max(1, (1 << 12) // max(c, 1))
        if -(-outer // rpt) < 4 * threads:
            rpt = max(1, -(-outer // (4 * threads)))
        LRN_CONTEXT.fill(ctx, rpt=rpt)
        n_tasks = -(-outer // rpt)
    else:
        ib = -(-max(lanes, min(inner, 1024)) // lanes) * lanes
        nib = -(-inner // ib)
        LRN_CONTEXT.fill(ctx, ib=ib, nib=nib)
        n_tasks = outer * c * nib
    if y.size == 0:
        n_tasks = 0
    return BoundKernel(_library(isa, mode).address("lrn_task"), ctx, n_tasks, threads, (x, y), layout=LRN_CONTEXT)
