"""Pad of a contiguous 4-D tensor (any physical layout, 1-, 2-, 4- or 8-byte items: pure data
movement, the element type only sets the item width) from per-axis source maps.

Every Pad mode (constant, edge, reflect, symmetric, negative pads) is separable: output element
``(o0, o1, o2, o3)`` is ``src[m0[o0], m1[o1], m2[o2], m3[o3]]``, or the pad value when any map
says -1. The maps are computed once at compile time; the kernel copies the innermost axis's
middle run ``[lo, hi)`` with vector moves and its borders element by element. A task is a block
of output rows (the three outer axes).
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

PAD_CONTEXT = ContextLayout(
    "pad",
    ("src", "dst", "tab", "o0", "o1", "o2", "o3", "st0", "st1", "st2", "lo", "hi", "slo", "value", "rpt", "rows"),
    pointers=("src", "dst", "tab"))


#: the LLVM type that moves an item of each width (4-byte items as f32, as before)
ITEM_TYPES = {1: ir.IntType(8), 2: ir.IntType(16), 4: F32, 8: I64}


def _emit(m: ir.Module, prefix: str, lanes32: int, size: int = 4) -> None:
    fn = ContextEmitter.function(m, f"{prefix}_pad_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, PAD_CONTEXT)
    b = e.b
    task = fn.args[1]
    et = ITEM_TYPES[size]
    lanes = lanes32 * 4 // size
    vt = vec(et, lanes)
    tname = "f32" if et == F32 else f"i{8 * size}"

    def masked_load(e: ContextEmitter, vt: ir.VectorType, ptr: ir.Value, mask: ir.Value | None) -> ir.Value:
        if mask is None:
            return e.load(vt, ptr, align=size)
        return e.call(f"llvm.masked.load.v{lanes}{tname}.p0", vt, [ptr, c32(size), mask, ir.Constant(vt, None)])

    def masked_store(e: ContextEmitter, v: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
        if mask is None:
            e.b.store(v, ptr, align=size)
        else:
            e.call(f"llvm.masked.store.v{lanes}{tname}.p0", VOID, [v, ptr, c32(size), mask])
    src, dst, tab = e.arg("src", PTR), e.arg("dst", PTR), e.arg("tab", PTR)
    o0, o1, o2, o3 = (e.arg(f"o{i}") for i in range(4))
    lo, hi, slo = e.arg("lo"), e.arg("hi"), e.arg("slo")
    value = e.arg("value", et)
    vvalue = e.splat(value, lanes)
    r0 = b.mul(task, e.arg("rpt"))
    r1 = e.min(e.arg("rows"), b.add(r0, e.arg("rpt")))
    off1 = o0
    off2 = b.add(off1, o1)
    off3 = b.add(off2, o2)
    zero = c64(0)

    def vector_run(start: ir.Value, stop: ir.Value, body) -> None:  # noqa: ANN001
        n = b.sub(stop, start)
        nmain = b.add(start, b.mul(b.sdiv(n, c64(lanes)), c64(lanes)))
        with e.loop(start, nmain, lanes, name="v") as i:
            body(i, None)
        with b.if_then(b.icmp_signed("<", nmain, stop)):
            body(nmain, lane_mask(e, b.sub(stop, nmain), lanes))

    with e.loop(r0, r1, name="r") as r:
        i2 = b.srem(r, o2)
        rest = b.sdiv(r, o2)
        i1 = b.srem(rest, o1)
        i0 = b.sdiv(rest, o1)
        s0 = e.load(I64, e.gep(I64, tab, i0), align=8)
        s1 = e.load(I64, e.gep(I64, tab, b.add(off1, i1)), align=8)
        s2 = e.load(I64, e.gep(I64, tab, b.add(off2, i2)), align=8)
        outside = b.icmp_signed("<", b.or_(b.or_(s0, s1), s2), zero)
        drow = e.gep(et, dst, b.mul(r, o3))
        with b.if_else(outside) as (pad_row, data_row):
            with pad_row:
                vector_run(zero, o3, lambda i, mask: masked_store(e, vvalue, e.gep(et, drow, i), mask))
            with data_row:
                base = b.add(b.add(b.mul(s0, e.arg("st0")), b.mul(s1, e.arg("st1"))), b.mul(s2, e.arg("st2")))
                srow = e.gep(et, src, base)
                shift = b.sub(slo, lo)

                def move(i: ir.Value, mask: ir.Value | None) -> None:
                    v = masked_load(e, vt, e.gep(et, srow, b.add(i, shift)), mask)
                    masked_store(e, v, e.gep(et, drow, i), mask)

                vector_run(lo, hi, move)
                for start, stop in ((zero, lo), (hi, o3)):
                    with e.loop(start, stop, name="b") as i:
                        s3 = e.load(I64, e.gep(I64, tab, b.add(off3, i)), align=8)
                        slot = e.var(et)
                        b.store(value, slot)
                        with b.if_then(b.icmp_signed(">=", s3, zero)):
                            b.store(e.load(et, e.gep(et, srow, s3), align=size), slot)
                        b.store(e.load(et, slot), e.gep(et, drow, i), align=size)
    b.ret_void()


@functools.cache
def _library(isa: Isa, size: int = 4) -> jit.Library:
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit(m, prefix, isa.f32_lanes, size)
        return m
    return jit.load(f"pad|{isa.level}" + ("" if size == 4 else f"|{size}"), isa, build)


def inner_run(m3: np.ndarray) -> tuple[int, int, int]:
    """The longest run ``[lo, hi)`` of ``m3`` that copies consecutive source elements, and its
    first source index (an empty run at 0 when there is none)."""
    best = (0, 0, 0)
    o = 0
    while o < m3.size:
        if m3[o] < 0:
            o += 1
            continue
        end = o + 1
        while end < m3.size and m3[end] == m3[end - 1] + 1:
            end += 1
        if end - o > best[1] - best[0]:
            best = (o, end, int(m3[o]))
        o = end
    return best


def pad_4d(src: np.ndarray, dst: np.ndarray, maps: list[np.ndarray], value_bits: int, threads: int,
           isa: Isa | None = None) -> BoundKernel:
    """A bound pad of contiguous 4-D ``src`` into contiguous ``dst`` (1-, 2-, 4- or 8-byte items,
    same physical layout); ``maps`` (int64, one per physical axis, -1: pad value) from
    :func:`axis_maps`; ``value_bits`` the pad value's bit pattern (as a signed integer of the item's width)."""
    tab = np.ascontiguousarray(np.concatenate(maps).astype(np.int64))
    o = dst.shape
    lo, hi, slo = inner_run(maps[3])
    st = [s // src.dtype.itemsize for s in src.strides]
    rows = o[0] * o[1] * o[2]
    rpt = max(1, (1 << 16) // max(o[3] * src.dtype.itemsize, 1))
    if -(-rows // rpt) < 4 * threads:
        rpt = max(1, -(-rows // (4 * threads)))
    ctx = PAD_CONTEXT.new(src=src.ctypes.data, dst=dst.ctypes.data, tab=tab.ctypes.data, o0=o[0], o1=o[1], o2=o[2],
                          o3=o[3], st0=st[0], st1=st[1], st2=st[2], lo=lo, hi=hi, slo=slo, value=value_bits,
                          rpt=rpt, rows=rows)
    n_tasks = -(-rows // rpt) if dst.size else 0
    return BoundKernel(_library(isa or host_isa(), src.dtype.itemsize).address("pad_task"), ctx, n_tasks, threads, (src, dst, tab),
                       layout=PAD_CONTEXT)
