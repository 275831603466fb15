"""Separable resize of NHWC tensors from precomputed tap tables (linear, linear_onnx, cubic
Interpolate): ``out[n, oy, ox, :] = sum_ky sum_kx wy[oy, ky] * wx[ox, kx] * src[n, iy[oy, ky], ix[ox, kx], :]``.

The tables (source row/column and weight of each tap) are computed once at compile time from
the op's own weight matrices; the kernel vectorizes over channels. A task is a block of output
rows (``n * OH`` rows in all); ``KY`` and ``KX`` (taps per output row / column) are constants of
the compiled kernel. f32 data has f32 weights; f64 data has f64 weights and sums in f64 (the
reference kernel's precision).
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I64, PTR, VOID, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import lane_mask
from ember.devices.cpu.runtime.kernel_call import BoundKernel

RESIZE_CONTEXT = ContextLayout(
    "resize",
    ("src", "dst", "ytab", "ywt", "xtab", "xwt", "h", "w", "c", "oh", "ow", "rpt", "rows"),
    pointers=("src", "dst", "ytab", "ywt", "xtab", "xwt"))
#: most taps per axis a kernel is built for (linear: 2, cubic: 4)
MAX_TAPS = 4


F64 = ir.DoubleType()


def _emit(m: ir.Module, prefix: str, lanes32: int, ky: int, kx: int, f64: bool = False) -> None:
    fn = ContextEmitter.function(m, f"{prefix}_resize_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, RESIZE_CONTEXT)
    b = e.b
    task = fn.args[1]
    et, size, tn = (F64, 8, "f64") if f64 else (F32, 4, "f32")
    lanes = lanes32 // 2 if f64 else lanes32
    vt = vec(et, lanes)

    def masked_load(ptr: ir.Value, mask: ir.Value | None) -> ir.Value:
        if mask is None:
            return e.load(vt, ptr, align=size)
        return e.call(f"llvm.masked.load.v{lanes}{tn}.p0", vt, [ptr, c32(size), mask, ir.Constant(vt, None)])

    def masked_store(v: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
        if mask is None:
            b.store(v, ptr, align=size)
        else:
            e.call(f"llvm.masked.store.v{lanes}{tn}.p0", VOID, [v, ptr, c32(size), mask])

    def fmuladd(x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
        return e.call(f"llvm.fmuladd.v{lanes}{tn}", vt, [x, y, z])

    src, dst = e.arg("src", PTR), e.arg("dst", PTR)
    ytab, ywt, xtab, xwt = e.arg("ytab", PTR), e.arg("ywt", PTR), e.arg("xtab", PTR), e.arg("xwt", PTR)
    h, w, c, oh, ow = e.arg("h"), e.arg("w"), e.arg("c"), e.arg("oh"), e.arg("ow")
    r0 = b.mul(task, e.arg("rpt"))
    r1 = e.min(e.arg("rows"), b.add(r0, e.arg("rpt")))
    cmain = b.mul(b.sdiv(c, c64(lanes)), c64(lanes))
    tail = lane_mask(e, b.sub(c, cmain), lanes)
    with e.loop(r0, r1, name="r") as r:
        n = b.sdiv(r, oh)
        oy = b.srem(r, oh)
        rows, wys = [], []
        for k in range(ky):
            t = b.add(b.mul(oy, c64(ky)), c64(k))
            iy = e.load(I64, e.gep(I64, ytab, t), align=8)
            rows.append(e.gep(et, src, b.mul(b.mul(b.add(b.mul(n, h), iy), w), c)))
            wys.append(e.load(et, e.gep(et, ywt, t), align=size))
        out_row = e.gep(et, dst, b.mul(b.mul(r, ow), c))
        with e.loop(0, ow, name="x") as ox:
            taps = []
            for k in range(kx):
                t = b.add(b.mul(ox, c64(kx)), c64(k))
                off = b.mul(e.load(I64, e.gep(I64, xtab, t), align=8), c)
                wx = e.load(et, e.gep(et, xwt, t), align=size)
                for row, wy in zip(rows, wys):
                    taps.append((e.gep(et, row, off), e.splat(b.fmul(wy, wx), lanes)))
            dp = e.gep(et, out_row, b.mul(ox, c))

            def chunk(ch: ir.Value, mask: ir.Value | None) -> None:
                acc = ir.Constant(vt, None)
                for ptr, wv in taps:
                    acc = fmuladd(wv, masked_load(e.gep(et, ptr, ch), mask), acc)
                masked_store(acc, e.gep(et, dp, ch), mask)

            with e.loop(0, cmain, lanes, name="c") as ch:
                chunk(ch, None)
            with b.if_then(b.icmp_signed("<", cmain, c)):
                chunk(cmain, tail)
    b.ret_void()


@functools.cache
def _library(isa: Isa, ky: int, kx: int, f64: bool = False) -> jit.Library:
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit(m, prefix, isa.f32_lanes, ky, kx, f64)
        return m
    return jit.load(f"resize|{isa.level}|{ky}x{kx}" + ("|f64" if f64 else ""), isa, build)


def tap_table(weights: np.ndarray, required: np.ndarray | None = None,
              dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray] | None:
    """An (out, in) weight matrix as (source index, weight) tables of shape (out, K), K the most
    nonzero weights of a row (rows with fewer repeat a tap with weight 0); None above MAX_TAPS.
    ``required`` (out, k) columns are taps even where their weight is 0 (a NaN there still
    reaches the output, as in OpenVINO's kernels). The weights are of ``dtype`` (the data's)."""
    nz = weights != 0
    if required is not None:
        nz = nz.copy()
        nz[np.arange(weights.shape[0])[:, None], required] = True
    k = max(1, int(nz.sum(axis=1).max(initial=0)))
    if k > MAX_TAPS:
        return None
    out = weights.shape[0]
    idx = np.zeros((out, k), np.int64)
    wt: np.ndarray = np.zeros((out, k), dtype)
    for o in range(out):
        cols = np.nonzero(nz[o])[0]
        idx[o, :cols.size] = cols
        idx[o, cols.size:] = cols[0] if cols.size else 0  # padding re-reads a tap (a NaN elsewhere stays out)
        wt[o, :cols.size] = weights[o, cols]
    return idx, wt


def resize_nhwc(src: np.ndarray, dst: np.ndarray, ytaps: tuple[np.ndarray, np.ndarray],
                xtaps: tuple[np.ndarray, np.ndarray], threads: int, isa: Isa | None = None) -> BoundKernel:
    """A bound resize of contiguous f32 or f64 NHWC ``src`` (n, h, w, c) into ``dst`` (n, oh, ow, c)
    with the tap tables of :func:`tap_table` for the rows (``ytaps``) and columns (``xtaps``)."""
    n, h, w, c = src.shape
    _, oh, ow, _ = dst.shape
    (yi, yw), (xi, xw) = ytaps, xtaps
    isa = isa or host_isa()
    rows = n * oh
    per_row = max(1, ow * c * yi.shape[1] * xi.shape[1])
    rpt = max(1, (1 << 15) // per_row)
    if -(-rows // rpt) < 4 * threads:
        rpt = max(1, -(-rows // (4 * threads)))
    ctx = RESIZE_CONTEXT.new(src=src.ctypes.data, dst=dst.ctypes.data, ytab=yi.ctypes.data, ywt=yw.ctypes.data,
                             xtab=xi.ctypes.data, xwt=xw.ctypes.data, h=h, w=w, c=c, oh=oh, ow=ow, rpt=rpt, rows=rows)
    n_tasks = -(-rows // rpt) if dst.size and src.size else 0
    lib = _library(isa, yi.shape[1], xi.shape[1], src.dtype == np.float64)
    return BoundKernel(lib.address("resize_task"), ctx, n_tasks, threads, (src, dst, yi, yw, xi, xw),
                       layout=RESIZE_CONTEXT)
