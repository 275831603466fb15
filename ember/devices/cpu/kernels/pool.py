"""Pooling and reductions: windowed max/average pooling over NHWC tensors, and reductions
over the middle axis of a ``[outer, R, inner]`` view (global pooling, ReduceMean/Sum/Max/Min).

Both vectorize over the contiguous channel (or inner) axis with masked tails. Max pooling
follows OpenVINO's reference: every window starts from the lowest finite float and takes a
real element only when it is greater, so NaN never wins and padding never counts. Average
pooling multiplies the window sum by per-row and per-column factors computed at bind time
(1 / kernel size, or 1 / the number of real elements with ``exclude-pad``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.gemm import load_bf16, store_bf16
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I16, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout, f32_bits
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import lane_mask, masked_load, masked_store, vmax, vmin
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.errors import EmberError

LOWEST = -3.4028234663852886e38
BLOCK_VECTORS = 4  # channel vectors pooled at once (independent max/add chains, one window walk)

POOL_CONTEXT = ContextLayout(
    "pool",
    ("x", "y", "h", "w", "c", "oh", "ow", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pl", "ldx", "xn", "ldy",
     "yn", "avg", "invh", "invw", "cb", "ncb", "idx", "idx64", "mn", "mc", "my"),
    pointers=("x", "y", "invh", "invw", "idx"))
REDUCE_CONTEXT = ContextLayout(
    "reduce",
    ("x", "y", "r", "inner", "xs_o", "xs_r", "ys_o", "op", "scale", "ib", "nib"),
    pointers=("x", "y"))
RED_OPS = {"sum": 0, "max": 1, "min": 2}


def _emit_pool(m: ir.Module, prefix: str, lanes: int, indices: bool = False, bf16: bool = False) -> None:
    """pool_task(ctx, task): task -> (image, output row, channel block). With ``indices``
    (max pooling only, ``pool_idx_task``) it also writes the flat input index of each maximum
    into ``idx`` (plain NCHW order, i32 or i64): ``img * mn + c * mc + iy * my + ix``. With
    ``bf16`` (max pooling only, ``pool_bf16_task``) X and Y are bf16 bits, widened exactly as
    they are read and rounded to nearest even as they are stored (every maximum is an element
    of X, so only a window without one, the lowest float, rounds: to -inf, as a reader that
    rounds an f32 Y would)."""
    name = "idx_" if indices else "bf16_" if bf16 else ""
    fn = Emitter.function(m, f"{prefix}_pool_{name}task", VOID, [PTR, I64])
    ET = I16 if bf16 else F32  # the element type of X and Y in memory

    def vload(ptr: ir.Value, mask: ir.Value | None) -> ir.Value:
        return load_bf16(e, ptr, mask, lanes) if bf16 else masked_load(e, vt, ptr, mask)

    def vstore(v: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
        if bf16:
            store_bf16(e, v, ptr, mask)
        else:
            masked_store(e, v, ptr, mask)

    e = ContextEmitter(m, fn, POOL_CONTEXT)
    b = e.b
    task = fn.args[1]
    vt = vec(F32, lanes)
    oh, ncb, cb, c = e.arg("oh"), e.arg("ncb"), e.arg("cb"), e.arg("c")
    blk = b.srem(task, ncb)
    rest = b.sdiv(task, ncb)
    oy, img = b.srem(rest, oh), b.sdiv(rest, oh)
    c0 = b.mul(blk, cb)
    c1 = e.min(c, b.add(c0, cb))
    avg = b.icmp_signed("!=", e.arg("avg"), c64(0))
    H, W, kh, kw = e.arg("h"), e.arg("w"), e.arg("kh"), e.arg("kw")
    ldx, ldy = e.arg("ldx"), e.arg("ldy")
    x = e.gep(ET, e.arg("x", PTR), b.mul(img, e.arg("xn")))
    y = e.gep(ET, e.arg("y", PTR), b.add(b.mul(img, e.arg("yn")), b.mul(b.mul(oy, e.arg("ow")), ldy)))
    iy0 = b.sub(b.mul(oy, e.arg("sh")), e.arg("pt"))
    fh = e.load(F32, e.gep(F32, e.arg("invh", PTR), oy))
    lowest = ir.Constant(vt, [LOWEST] * lanes)
    zero = ir.Constant(vt, None)
    with e.loop(0, e.arg("ow"), name="ox") as ox:
        ix0 = b.sub(b.mul(ox, e.arg("sw")), e.arg("pl"))
        factor = e.splat(b.fmul(fh, e.load(F32, e.gep(F32, e.arg("invw", PTR), ox))), lanes)
        yrow = e.gep(ET, y, b.mul(ox, ldy))

        def block(ch: ir.Value, count: int) -> None:
            """``count`` whole channel vectors from ``ch``: independent chains, one window walk."""
            accs = [e.var(vt, b.select(avg, zero, lowest)) for _ in range(count)]
            with e.loop(0, kh, name="by") as ky:
                iy = b.add(iy0, b.mul(ky, e.arg("dh")))
                with b.if_then(b.icmp_unsigned("<", iy, H)):
                    xrow = e.gep(ET, x, b.mul(b.mul(iy, W), ldx))
                    with e.loop(0, kw, name="bx") as kx:
                        ix = b.add(ix0, b.mul(kx, e.arg("dw")))
                        with b.if_then(b.icmp_unsigned("<", ix, W)):
                            src = e.gep(ET, xrow, b.add(b.mul(ix, ldx), ch))
                            for i, acc in enumerate(accs):
                                v = vload(e.gep(ET, src, c64(i * lanes)), None)
                                a = e.load(vt, acc)
                                b.store(b.select(avg, b.fadd(a, v), vmax(b, a, v)), acc)
            for i, acc in enumerate(accs):
                a = e.load(vt, acc)
                vstore(b.select(avg, b.fmul(a, factor), a), e.gep(ET, yrow, b.add(ch, c64(i * lanes))), None)

        def channels(ch: ir.Value, mask: ir.Value | None) -> None:
            acc = e.var(vt)
            b.store(b.select(avg, zero, lowest), acc)
            if indices:  # the index of a window without a winner: its channel's first element
                iv = vec(I64, lanes)
                lane = ir.Constant(iv, list(range(lanes)))
                chan = b.add(b.mul(b.add(e.splat(ch, lanes), lane), e.splat(e.arg("mc"), lanes)),
                             e.splat(b.mul(img, e.arg("mn")), lanes))
                best = e.var(iv, chan)
            with e.loop(0, kh, name="ky") as ky:
                iy = b.add(iy0, b.mul(ky, e.arg("dh")))
                with b.if_then(b.icmp_unsigned("<", iy, H)):
                    xrow = e.gep(ET, x, b.mul(b.mul(iy, W), ldx))
                    with e.loop(0, kw, name="kx") as kx:
                        ix = b.add(ix0, b.mul(kx, e.arg("dw")))
                        with b.if_then(b.icmp_unsigned("<", ix, W)):
                            v = vload(e.gep(ET, xrow, b.add(b.mul(ix, ldx), ch)), mask)
                            a = e.load(vt, acc)
                            if indices:
                                take = b.fcmp_ordered(">", v, a)
                                b.store(b.select(take, v, a), acc)
                                pos = e.splat(b.add(b.mul(iy, e.arg("my")), ix), lanes)
                                b.store(b.select(take, b.add(chan, pos), e.load(iv, best)), best)
                            else:
                                b.store(b.select(avg, b.fadd(a, v), vmax(b, a, v)), acc)
            a = e.load(vt, acc)
            out = b.select(avg, b.fmul(a, factor), a)
            vstore(out, e.gep(ET, yrow, ch), mask)
            if indices:  # plain NCHW order: lanes (channels) are oh * ow apart
                ohw = b.mul(oh, e.arg("ow"))
                first = b.add(b.mul(b.add(b.mul(img, c), ch), ohw), b.add(b.mul(oy, e.arg("ow")), ox))
                vals = e.load(iv, best)
                wide = b.icmp_signed("!=", e.arg("idx64"), c64(0))
                for k in range(lanes):
                    def put(k: int = k) -> None:
                        val = b.extract_element(vals, c32(k))
                        at = b.add(first, b.mul(c64(k), ohw))
                        with b.if_else(wide) as (i64, i32):
                            with i64:
                                b.store(val, e.gep(I64, e.arg("idx", PTR), at))
                            with i32:
                                b.store(b.trunc(val, I32), e.gep(I32, e.arg("idx", PTR), at))
                    if mask is None:
                        put()
                    else:
                        with b.if_then(b.icmp_signed("<", b.add(ch, c64(k)), c1)):
                            put()

        nfull = b.add(c0, b.mul(b.sdiv(b.sub(c1, c0), c64(lanes)), c64(lanes)))
        start = c0
        if not indices:  # blocks of BLOCK_VECTORS channel vectors, then single ones
            step = BLOCK_VECTORS * lanes
            start = b.add(c0, b.mul(b.sdiv(b.sub(nfull, c0), c64(step)), c64(step)))
            with e.loop(c0, start, step, name="cb") as ch:
                block(ch, BLOCK_VECTORS)
        with e.loop(start, nfull, lanes, name="cv") as ch:
            channels(ch, None)
        with b.if_then(b.icmp_signed("<", nfull, c1)):
            channels(nfull, lane_mask(e, b.sub(c1, nfull), lanes))
    b.ret_void()


def _emit_reduce(m: ir.Module, prefix: str, lanes: int) -> None:
    """reduce_task(ctx, task): y[o, i] = op over r of x[o, r, i] (times scale); task ->
    (outer index, inner block). inner == 1 reduces along contiguous rows."""
    fn = Emitter.function(m, f"{prefix}_reduce_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, REDUCE_CONTEXT)
    b = e.b
    task = fn.args[1]
    vt = vec(F32, lanes)
    nib, ib, inner, R = e.arg("nib"), e.arg("ib"), e.arg("inner"), e.arg("r")
    o = b.sdiv(task, nib)
    i0 = b.mul(b.srem(task, nib), ib)
    i1 = e.min(inner, b.add(i0, ib))
    op = e.arg("op")
    is_sum, is_max = b.icmp_signed("==", op, c64(0)), b.icmp_signed("==", op, c64(1))
    scale = e.arg("scale", F32)
    x = e.gep(F32, e.arg("x", PTR), b.mul(o, e.arg("xs_o")))
    y = e.gep(F32, e.arg("y", PTR), b.mul(o, e.arg("ys_o")))
    xs_r = e.arg("xs_r")
    init_s = b.select(is_sum, ir.Constant(F32, 0.0), b.select(is_max, ir.Constant(F32, -math.inf),
                                                               ir.Constant(F32, math.inf)))
    init = e.splat(init_s, lanes)

    def combine(a: ir.Value, v: ir.Value) -> ir.Value:
        nan = b.fcmp_unordered("uno", v, v)
        mx = b.select(nan, v, vmax(b, a, v))
        mn = b.select(nan, v, vmin(b, a, v))
        # NaN sticks once seen (as numpy's max/min)
        mx = b.select(b.fcmp_unordered("uno", a, a), a, mx)
        mn = b.select(b.fcmp_unordered("uno", a, a), a, mn)
        return b.select(is_sum, b.fadd(a, v), b.select(is_max, mx, mn))

    with b.if_else(b.icmp_signed("==", inner, c64(1))) as (rows, cols):
        with rows:  # reduce a contiguous row of R elements
            acc = e.var(vt, init)
            rmain = b.mul(b.sdiv(R, c64(lanes)), c64(lanes))
            with e.loop(0, rmain, lanes, name="r") as r:
                b.store(combine(e.load(vt, acc), e.load(vt, e.gep(F32, x, r), align=4)), acc)
            with b.if_then(b.icmp_signed("<", rmain, R)):
                mask = lane_mask(e, b.sub(R, rmain), lanes)
                v = masked_load(e, vt, e.gep(F32, x, rmain), mask)
                v = b.select(mask, v, init)
                b.store(combine(e.load(vt, acc), v), acc)
            vals = e.load(vt, acc)
            s = b.extract_element(vals, ir.Constant(ir.IntType(32), 0))
            for lane in range(1, lanes):
                v1 = b.extract_element(vals, ir.Constant(ir.IntType(32), lane))
                s = combine(e.splat(s, lanes), e.splat(v1, lanes))
                s = b.extract_element(s, ir.Constant(ir.IntType(32), 0))
            b.store(b.select(is_sum, b.fmul(s, scale), s), y)
        with cols:  # vectorized over the inner axis
            def block(i: ir.Value, mask: ir.Value | None) -> None:
                acc = e.var(vt, init)
                with e.loop(0, R, name="r") as r:
                    v = masked_load(e, vt, e.gep(F32, x, b.add(b.mul(r, xs_r), i)), mask)
                    b.store(combine(e.load(vt, acc), v), acc)
                a = e.load(vt, acc)
                masked_store(e, b.select(is_sum, b.fmul(a, e.splat(scale, lanes)), a), e.gep(F32, y, i), mask)

            nfull = b.add(i0, b.mul(b.sdiv(b.sub(i1, i0), c64(lanes)), c64(lanes)))
            with e.loop(i0, nfull, lanes, name="iv") as i:
                block(i, None)
            with b.if_then(b.icmp_signed("<", nfull, i1)):
                block(nfull, lane_mask(e, b.sub(i1, nfull), lanes))
    b.ret_void()


def _build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_pool(m, prefix, isa.f32_lanes)
    _emit_pool(m, prefix, isa.f32_lanes, indices=True)
    _emit_pool(m, prefix, isa.f32_lanes, bf16=True)
    _emit_reduce(m, prefix, isa.f32_lanes)
    return m


@functools.cache
def _library(isa: Isa) -> jit.Library:
    return jit.load(f"pool|{isa.level}|b{BLOCK_VECTORS}", isa, lambda p: _build(p, isa))


def _avg_factors(n_in: int, n_out: int, k: int, s: int, d: int, pb: int, full: bool) -> np.ndarray:
    if full:
        return np.full(n_out, 1.0 / k, np.float32)
    pos = np.arange(n_out)[:, None] * s + np.arange(k)[None, :] * d - pb
    count = ((pos >= 0) & (pos < n_in)).sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore"):
        return np.where(count > 0, 1.0 / count, 0.0).astype(np.float32)


def pool2d(x: np.ndarray, y: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
           dilations: tuple[int, int], pads_begin: tuple[int, int], pads_end: tuple[int, int], mode: str,
           exclude_pad: bool, threads: int, isa: Isa | None = None, padded: bool | None = None,
           indices: np.ndarray | None = None, axis: int = 0) -> BoundKernel:
    """A bound NHWC pooling kernel (``mode`` ``max`` or ``avg``) from ``x`` into ``y``.

    Average pooling divides like OpenVINO: by the kernel size when there is padding and
    ``exclude_pad`` is off, else by the number of real elements (0 when a window holds none
    and there is padding, NaN when there is none). ``padded`` says whether the pooling this
    call is part of has padding (default: whether this call's pads do; a 3-D pooling runs as
    two calls that must divide alike).

    ``indices`` (max pooling): an int32 or int64 array ``[N, C, OH, OW]`` (plain order) that
    receives the flat index of each maximum in the NCHW input, flattened from ``axis`` on
    (MaxPool-8's second output).

    ``x`` and ``y`` both uint16 (bf16 bits, max pooling without indices): the same maxima,
    stored as bf16 (see :func:`_emit_pool`)."""
    bf16 = x.dtype == np.uint16
    if bf16 and (y.dtype != np.uint16 or mode != "max" or indices is not None):
        raise EmberError("ember: bf16 pooling is max pooling from bf16 into bf16, without indices")
    esz = x.itemsize
    n, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    isa = isa or host_isa()
    ctx = POOL_CONTEXT.new()
    lanes = isa.f32_lanes
    cb = max(lanes, min(c, 256) // lanes * lanes) if c >= lanes else lanes
    ncb = -(-c // cb)
    if padded is None:
        padded = any(pads_begin) or any(pads_end)
    full = padded and not exclude_pad
    fh = _avg_factors(h, oh, kernel[0], strides[0], dilations[0], pads_begin[0], full)
    fw = _avg_factors(w, ow, kernel[1], strides[1], dilations[1], pads_begin[1], full)
    if not padded:  # a window with no real element divides 0 by 0
        fh = np.where(fh == 0, np.float32(np.nan), fh).astype(np.float32)
        fw = np.where(fw == 0, np.float32(np.nan), fw).astype(np.float32)
    invh, invw = aligned_empty(max(oh, 1)), aligned_empty(max(ow, 1))
    invh[:oh], invw[:ow] = fh, fw
    vals = dict(x=x.ctypes.data, y=y.ctypes.data, h=h, w=w, c=c, oh=oh, ow=ow, kh=kernel[0], kw=kernel[1],
                sh=strides[0], sw=strides[1], dh=dilations[0], dw=dilations[1], pt=pads_begin[0],
                pl=pads_begin[1], ldx=x.strides[2] // esz, xn=x.strides[0] // esz, ldy=y.strides[2] // esz,
                yn=y.strides[0] // esz, avg=int(mode == "avg"), invh=invh.ctypes.data, invw=invw.ctypes.data, cb=cb,
                ncb=ncb)
    task = "pool_bf16_task" if bf16 else "pool_task"
    if indices is not None:
        if mode != "max" or indices.shape != (n, c, oh, ow) or indices.dtype not in (np.int32, np.int64) \
                or not indices.flags.c_contiguous:
            raise EmberError(f"ember: max pooling indices must be a contiguous int32/int64 array of {(n, c, oh, ow)}")
        # the NCHW flat index, reduced modulo the size of the axes from ``axis`` on
        vals.update(idx=indices.ctypes.data, idx64=int(indices.dtype == np.int64), mn=c * h * w if axis == 0 else 0,
                    mc=h * w if axis <= 1 else 0, my=w if axis <= 2 else 0)
        task = "pool_idx_task"
    for k, v in vals.items():
        ctx[POOL_CONTEXT[k]] = v
    n_tasks = n * oh * ncb if y.size else 0
    return BoundKernel(_library(isa).address(task), ctx, n_tasks, threads, (x, y, invh, invw, indices),
                       layout=POOL_CONTEXT)


def reduce_middle(x: np.ndarray, y: np.ndarray, op: str, scale: float, threads: int,
                  isa: Isa | None = None) -> BoundKernel:
    """``y[o, i] = op_r x[o, r, i]`` (times ``scale`` for ``sum``): ``x`` is ``[outer, R, inner]``
    with contiguous inner elements (any outer/R strides), ``y`` is ``[outer, inner]``."""
    outer, r, inner = x.shape
    isa = isa or host_isa()
    lanes = isa.f32_lanes
    ctx = REDUCE_CONTEXT.new()
    if inner == 1:
        ib, nib = 1, 1
        xs_r = 1
    else:
        ib = max(lanes, min(inner, 256))
        ib = -(-ib // lanes) * lanes
        nib = -(-inner // ib)
        xs_r = x.strides[1] // 4
    vals = dict(x=x.ctypes.data, y=y.ctypes.data, r=r, inner=inner, xs_o=x.strides[0] // 4, xs_r=xs_r,
                ys_o=y.strides[0] // 4, op=RED_OPS[op], scale=f32_bits(scale), ib=ib, nib=nib)
    for k, v in vals.items():
        ctx[REDUCE_CONTEXT[k]] = v
    return BoundKernel(_library(isa).address("reduce_task"), ctx, outer * nib if y.size else 0, threads, (x, y), layout=REDUCE_CONTEXT)
