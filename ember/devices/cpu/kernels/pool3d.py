"""3-D max pooling with the indices output (MaxPool-8/14 over ``[N, C, D, H, W]`` f32), as
OpenVINO computes it: each window starts from the lowest finite f32 and index 0 of its
channel, and takes a real (non-padding) element only when it is greater, so NaN never wins;
an index is the element's position in the input flattened from axis 0 (modulo the size from
``axis`` on). The separable 3-D pooling of ``kernels/pool.py`` cannot track indices: this
kernel walks each window, one output row of W per task step, scalar.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I32, I64, PTR, VOID, Emitter, c64
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.runtime.kernel_call import BoundKernel

_GEOMETRY = ("d", "h", "w", "od", "oh", "ow", "kd", "kh", "kw", "sd", "sh", "sw", "dd", "dh", "dw", "pd", "ph", "pw")
POOL3D_CONTEXT = ContextLayout("maxpool3d_indices", ("x", "y", "idx", "rows", "rpt", "modulus", *_GEOMETRY),
                               pointers=("x", "y", "idx"))
_LOWEST = float(np.finfo(np.float32).min)


def _emit(m: ir.Module, prefix: str, idx64: bool) -> None:
    fn = Emitter.function(m, f"{prefix}_pool_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, POOL3D_CONTEXT)
    b = e.b
    task = fn.args[1]
    g = {k: e.arg(k) for k in _GEOMETRY}
    rows, rpt, modulus = e.arg("rows"), e.arg("rpt"), e.arg("modulus")
    x, y, idx = e.arg("x", PTR), e.arg("y", PTR), e.arg("idx", PTR)
    it = I64 if idx64 else I32
    plane = b.mul(b.mul(g["d"], g["h"]), g["w"])
    r0 = b.mul(task, rpt)
    r1 = e.min(rows, b.add(r0, rpt))
    with e.loop(r0, r1, name="row") as row:  # row = (nc, od, oh)
        oh_ = b.srem(row, g["oh"])
        t = b.sdiv(row, g["oh"])
        od_, nc = b.srem(t, g["od"]), b.sdiv(t, g["od"])
        base = b.mul(nc, plane)
        out_row = b.mul(row, g["ow"])
        with e.loop(0, g["ow"], name="ow") as ow_:
            best = e.var(F32, ir.Constant(F32, _LOWEST))
            where = e.var(I64, c64(0))
            z0 = b.sub(b.mul(od_, g["sd"]), g["pd"])
            y0 = b.sub(b.mul(oh_, g["sh"]), g["ph"])
            x0 = b.sub(b.mul(ow_, g["sw"]), g["pw"])
            with e.loop(0, g["kd"], name="kd") as i:
                z = b.add(z0, b.mul(i, g["dd"]))
                zin = b.and_(b.icmp_signed(">=", z, c64(0)), b.icmp_signed("<", z, g["d"]))
                with b.if_then(zin):
                    with e.loop(0, g["kh"], name="kh") as j:
                        yy = b.add(y0, b.mul(j, g["dh"]))
                        yin = b.and_(b.icmp_signed(">=", yy, c64(0)), b.icmp_signed("<", yy, g["h"]))
                        with b.if_then(yin):
                            with e.loop(0, g["kw"], name="kw") as k:
                                xx = b.add(x0, b.mul(k, g["dw"]))
                                xin = b.and_(b.icmp_signed(">=", xx, c64(0)), b.icmp_signed("<", xx, g["w"]))
                                with b.if_then(xin):
                                    pos = b.add(b.mul(b.add(b.mul(z, g["h"]), yy), g["w"]), xx)
                                    v = e.load(F32, e.gep(F32, x, b.add(base, pos)))
                                    with b.if_then(b.fcmp_ordered(">", v, e.load(F32, best))):
                                        b.store(v, best)
                                        b.store(pos, where)
            out = b.add(out_row, ow_)
            b.store(e.load(F32, best), e.gep(F32, y, out))
            flat = b.add(base, e.load(I64, where))
            flat = b.select(b.icmp_signed(">", modulus, c64(0)), b.srem(flat, e.max(modulus, c64(1))), flat)
            b.store(flat if idx64 else b.trunc(flat, it), e.gep(it, idx, out))
    b.ret_void()


@functools.cache
def _library(isa: Isa, idx64: bool) -> jit.Library:
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit(m, prefix, idx64)
        return m
    return jit.load(f"maxpool3d_indices|{isa.level}|i{64 if idx64 else 32}", isa, build)


def maxpool3d_indices(x: np.ndarray, y: np.ndarray, indices: np.ndarray, kernel: Sequence[int],
                      strides: Sequence[int], dilations: Sequence[int], pads_begin: Sequence[int], axis: int,
                      threads: int, isa: Isa | None = None) -> BoundKernel:
    """A bound 3-D max pooling of contiguous ``x [N, C, D, H, W]`` f32 into ``y`` and
    ``indices`` (``[N, C, OD, OH, OW]``, int32 or int64, contiguous); the indices flattened from
    axis 0, then taken modulo the size of ``x`` from ``axis`` on (``axis`` 0: no modulo)."""
    isa = isa or host_isa()
    n, c, d, h, w = x.shape
    od, oh, ow = y.shape[2:]
    rows = n * c * od * oh
    rpt = max(1, -(-rows // (8 * threads)))
    n_tasks = -(-rows // rpt) if y.size else 0
    modulus = int(np.prod(x.shape[axis:])) if axis else 0
    lib = _library(isa, indices.dtype.itemsize == 8)
    geo = dict(zip(_GEOMETRY, (d, h, w, od, oh, ow, *kernel, *strides, *dilations, *pads_begin)))
    ctx = POOL3D_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, idx=indices.ctypes.data, rows=rows, rpt=rpt,
                             modulus=modulus, **{k: int(v) for k, v in geo.items()})
    return BoundKernel(lib.address("pool_task"), ctx, n_tasks, threads, (x, y, indices), layout=POOL3D_CONTEXT)
