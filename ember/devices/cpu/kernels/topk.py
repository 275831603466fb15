"""TopK along an axis of f32, f64, i32 or i64 data: values and indices (i32 or i64), modes max/min,
sorted by value or by index, stable.

Each element becomes an unsigned key of its own width (32 or 64 bits) whose ascending order is the
wanted order (floats:
sign-flipped bits, -0 as +0, every NaN the largest value as in the reference and PyTorch; max
mode inverts the key). Equal keys keep their input order, so the result is the stable one.

- small ``k`` (at most :data:`SMALL_K`): one pass over the axis keeping the best ``k`` in a sorted
  buffer (an element that does not beat the current k-th costs one compare);
- ``k`` up to an eighth of the axis: a heap of the best ``k`` (its root the worst of them, of equal
  keys the later index), one compare for an element that does not beat the root, then heapsort;
- otherwise (``k`` up to the axis length): a stable LSD radix sort of the keys (4 passes of 8
  bits, 8 for 64-bit keys; a pass whose digit is the same everywhere is skipped), then the first ``k``.

``sort = index`` puts the chosen indices in ascending order through a mark per element. A task
is a block of rows (the positions outside the axis); each task has its own scratch slot.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I8, I32, I64, PTR, VOID, c32, c64
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.runtime.kernel_call import BoundKernel

SMALL_K = 32
#: a k at most the axis length / HEAP_RATIO selects with a heap (else the radix sort)
HEAP_RATIO = 8
#: the scratch (keys, indices, histogram, marks per task) a bound TopK may hold
MAX_SCRATCH = 64 << 20
RADIX = 256
F64 = ir.DoubleType()
#: data type -> (LLVM type of an item, LLVM type of its key)
DTYPES = {"float32": (F32, I32), "int32": (I32, I32), "float64": (F64, I64), "int64": (I64, I64)}

TOPK_CONTEXT = ContextLayout(
    "topk",
    ("data", "values", "indices", "scratch", "n", "k", "inner", "rows", "rpt", "slot_words"),
    pointers=("data", "values", "indices", "scratch"))


def _emit_sift_down(m: ir.Module, name: str, kt: ir.IntType = I32) -> ir.Function:
    """sift(keys, idx, p, size): restore the heap below ``p``; the root of the heap is the *worst*
    entry (the larger key; of equal keys, the larger index)."""
    fn = ContextEmitter.function(m, name, VOID, [PTR, PTR, I64, I64], internal=True)
    keys, idx, p0, size = fn.args
    from ember.devices.cpu.llvm.codegen import Emitter

    e = Emitter(m, fn)
    b = e.b
    p = e.var(I64, p0)
    hdr, body, done = (fn.append_basic_block(x) for x in ("s.hdr", "s.body", "s.done"))
    b.branch(hdr)
    b.position_at_end(hdr)
    pv = e.load(I64, p)
    left = b.add(b.mul(pv, c64(2)), c64(1))
    b.cbranch(b.icmp_signed("<", left, size), body, done)
    b.position_at_end(body)

    def ld(ptr: ir.Value, i: ir.Value, t: ir.IntType = I32) -> ir.Value:
        return e.load(t, e.gep(t, ptr, i), align=4)

    def worse(i: ir.Value, j: ir.Value) -> ir.Value:
        ki, kj = ld(keys, i, kt), ld(keys, j, kt)
        return b.or_(b.icmp_unsigned(">", ki, kj),
                     b.and_(b.icmp_unsigned("==", ki, kj), b.icmp_signed(">", ld(idx, i), ld(idx, j))))

    right = b.add(left, c64(1))
    has_right = b.icmp_signed("<", right, size)
    pick_right = e.var(ir.IntType(1), ir.Constant(ir.IntType(1), 0))
    with b.if_then(has_right):
        b.store(worse(right, left), pick_right)
    c = b.select(e.load(ir.IntType(1), pick_right), right, left)
    swap = fn.append_basic_block("s.swap")
    b.cbranch(worse(c, pv), swap, done)
    b.position_at_end(swap)
    for ptr, t in ((keys, kt), (idx, I32)):
        a, z = ld(ptr, pv, t), ld(ptr, c, t)
        b.store(z, e.gep(t, ptr, pv), align=4)
        b.store(a, e.gep(t, ptr, c), align=4)
    b.store(c, p)
    b.branch(hdr)
    b.position_at_end(done)
    b.ret_void()
    return fn


def _emit(m: ir.Module, prefix: str, dtype: str, largest: bool, by_index: bool, idx64: bool) -> None:
    t, kt = DTYPES[dtype]
    kw = kt.width // 32  # 32-bit words per key
    sift = _emit_sift_down(m, f"{prefix}_sift", kt)
    fn = ContextEmitter.function(m, f"{prefix}_topk_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, TOPK_CONTEXT)
    b = e.b
    task = fn.args[1]
    data, values, indices = e.arg("data", PTR), e.arg("values", PTR), e.arg("indices", PTR)
    n, k, inner = e.arg("n"), e.arg("k"), e.arg("inner")
    zero = c64(0)
    slot = e.gep(I32, e.arg("scratch", PTR), b.mul(task, e.arg("slot_words")))
    k0, i0 = slot, e.gep(I32, slot, b.mul(n, c64(kw)))
    k1, i1 = e.gep(I32, slot, b.mul(n, c64(kw + 1))), e.gep(I32, slot, b.mul(n, c64(2 * kw + 1)))
    hist = e.gep(I32, slot, b.mul(n, c64(2 * kw + 2)))
    marks = e.gep(I32, hist, c64(RADIX))  # n bytes, all zero between rows
    r0 = b.mul(task, e.arg("rpt"))
    r1 = e.min(e.arg("rows"), b.add(r0, e.arg("rpt")))

    def kc(v: int) -> ir.Constant:
        return ir.Constant(kt, v)

    sign = -(1 << (kt.width - 1))

    def key(x: ir.Value) -> ir.Value:
        if t in (F32, F64):
            bits = b.bitcast(x, kt)
            bits = b.select(b.fcmp_ordered("==", x, ir.Constant(t, 0.0)), kc(0), bits)
            neg = b.icmp_signed("<", bits, kc(0))
            kv = b.select(neg, b.xor(bits, kc(-1)), b.or_(bits, kc(sign)))
            kv = b.select(b.fcmp_unordered("uno", x, x), kc(-1), kv)
        else:
            kv = b.xor(x, kc(sign))
        return b.xor(kv, kc(-1)) if largest else kv

    def ld(p: ir.Value, i: ir.Value) -> ir.Value:
        return e.load(I32, e.gep(I32, p, i), align=4)

    def st(v: ir.Value, p: ir.Value, i: ir.Value) -> None:
        b.store(v, e.gep(I32, p, i), align=4)

    def ldk(p: ir.Value, i: ir.Value) -> ir.Value:
        return e.load(kt, e.gep(kt, p, i), align=4)

    def stk(v: ir.Value, p: ir.Value, i: ir.Value) -> None:
        b.store(v, e.gep(kt, p, i), align=4)

    with e.loop(r0, r1, name="row") as row:
        o, i = b.sdiv(row, inner), b.srem(row, inner)
        base = e.gep(t, data, b.add(b.mul(b.mul(o, n), inner), i))
        small = b.icmp_signed("<=", k, c64(SMALL_K))
        with b.if_else(small) as (sel, srt):
            with sel:  # best k so far, sorted, in k1/i1
                cnt = e.var(I64, zero)
                with e.loop(zero, n, name="a") as a:
                    kv = key(e.load(t, e.gep(t, base, b.mul(a, inner))))
                    c = e.load(I64, cnt)
                    full = b.icmp_signed("==", c, k)
                    worst = ldk(k1, b.sub(k, c64(1)))
                    enter = b.or_(b.not_(full), b.icmp_unsigned("<", kv, worst))
                    with b.if_then(enter):
                        pos = e.var(I64, b.select(full, b.sub(k, c64(2)), b.sub(c, c64(1))))
                        hdr = fn.append_basic_block("ins.hdr")
                        body = fn.append_basic_block("ins.body")
                        done = fn.append_basic_block("ins.done")
                        b.branch(hdr)
                        b.position_at_end(hdr)
                        p = e.load(I64, pos)
                        ok = b.icmp_signed(">=", p, zero)
                        b.cbranch(ok, body, done)
                        b.position_at_end(body)
                        bigger = b.icmp_unsigned(">", ldk(k1, p), kv)
                        shift = fn.append_basic_block("ins.shift")
                        b.cbranch(bigger, shift, done)
                        b.position_at_end(shift)
                        stk(ldk(k1, p), k1, b.add(p, c64(1)))
                        st(ld(i1, p), i1, b.add(p, c64(1)))
                        b.store(b.sub(p, c64(1)), pos)
                        b.branch(hdr)
                        b.position_at_end(done)
                        at = b.add(e.load(I64, pos), c64(1))
                        stk(kv, k1, at)
                        st(b.trunc(a, I32), i1, at)
                        b.store(b.select(full, c, b.add(c, c64(1))), cnt)
                with e.loop(zero, k, name="cp") as s:
                    st(ld(i1, s), i0, s)
            with srt:
                use_heap = b.icmp_signed("<=", b.mul(k, c64(HEAP_RATIO)), n)
                with b.if_else(use_heap) as (heap, radix):
                    with heap:  # a heap of the best k (its root the worst of them), then heapsort
                        with e.loop(zero, k, name="hf") as a:
                            stk(key(e.load(t, e.gep(t, base, b.mul(a, inner)))), k1, a)
                            st(b.trunc(a, I32), i1, a)
                        with e.loop(zero, b.add(b.sdiv(k, c64(2)), c64(1)), name="hh") as q:
                            b.call(sift, [k1, i1, b.sub(b.sdiv(k, c64(2)), q), k])
                        with e.loop(k, n, name="hs") as a:
                            kv = key(e.load(t, e.gep(t, base, b.mul(a, inner))))
                            with b.if_then(b.icmp_unsigned("<", kv, ldk(k1, zero))):
                                stk(kv, k1, zero)
                                st(b.trunc(a, I32), i1, zero)
                                b.call(sift, [k1, i1, zero, k])
                        with e.loop(c64(1), k, name="hx") as q:
                            end = b.sub(k, q)
                            for ptr, get, put in ((k1, ldk, stk), (i1, ld, st)):
                                top, last = get(ptr, zero), get(ptr, end)
                                put(last, ptr, zero)
                                put(top, ptr, end)
                            b.call(sift, [k1, i1, zero, end])
                        with e.loop(zero, k, name="hc") as q:
                            st(ld(i1, q), i0, q)
                    with radix:  # stable LSD radix sort of all n keys into k0/i0
                        with e.loop(zero, n, name="a") as a:
                            stk(key(e.load(t, e.gep(t, base, b.mul(a, inner)))), k0, a)
                            st(b.trunc(a, I32), i0, a)
                        src_k, src_i = e.var(PTR, k0), e.var(PTR, i0)
                        dst_k, dst_i = e.var(PTR, k1), e.var(PTR, i1)
                        for shift in range(0, kt.width, 8):
                            sk, si, dk, di = (e.load(PTR, v) for v in (src_k, src_i, dst_k, dst_i))
                            with e.loop(zero, c64(RADIX), name="h0") as d:
                                st(c32(0), hist, d)

                            def digit(v: ir.Value, shift: int = shift) -> ir.Value:
                                d = b.and_(b.lshr(v, kc(shift)), kc(RADIX - 1))
                                return d if kt == I64 else b.zext(d, I64)

                            with e.loop(zero, n, name="h1") as a:
                                d = digit(ldk(sk, a))
                                st(b.add(ld(hist, d), c32(1)), hist, d)
                            first = digit(ldk(sk, zero))
                            with b.if_then(b.icmp_signed("!=", b.sext(ld(hist, first), I64), n)):  # else: nothing moves
                                acc = e.var(I32, c32(0))
                                with e.loop(zero, c64(RADIX), name="h2") as d:
                                    h = ld(hist, d)
                                    st(e.load(I32, acc), hist, d)
                                    b.store(b.add(e.load(I32, acc), h), acc)
                                with e.loop(zero, n, name="h3") as a:
                                    kv = ldk(sk, a)
                                    d = digit(kv)
                                    pos = b.sext(ld(hist, d), I64)
                                    st(b.add(ld(hist, d), c32(1)), hist, d)
                                    stk(kv, dk, pos)
                                    st(ld(si, a), di, pos)
                                b.store(dk, src_k)
                                b.store(di, src_i)
                                b.store(sk, dst_k)
                                b.store(si, dst_i)
                        res_i = e.load(PTR, src_i)
                        with b.if_then(b.icmp_unsigned("!=", b.ptrtoint(res_i, I64), b.ptrtoint(i0, I64))):
                            with e.loop(zero, k, name="cp2") as s:
                                st(ld(res_i, s), i0, s)
        if by_index:  # the chosen indices in ascending order
            with e.loop(zero, k, name="mk") as s:
                b.store(ir.Constant(I8, 1), e.gep(I8, marks, b.sext(ld(i0, s), I64)))
            out_pos = e.var(I64, zero)
            with e.loop(zero, n, name="sc") as a:
                pm = e.gep(I8, marks, a)
                with b.if_then(b.icmp_unsigned("!=", e.load(I8, pm), ir.Constant(I8, 0))):
                    b.store(ir.Constant(I8, 0), pm)
                    p = e.load(I64, out_pos)
                    st(b.trunc(a, I32), i0, p)
                    b.store(b.add(p, c64(1)), out_pos)
        obase = b.add(b.mul(b.mul(o, k), inner), i)
        with e.loop(zero, k, name="out") as s:
            src = b.sext(ld(i0, s), I64)
            at = b.add(obase, b.mul(s, inner))
            b.store(e.load(t, e.gep(t, base, b.mul(src, inner))), e.gep(t, values, at))
            if idx64:
                b.store(src, e.gep(I64, indices, at))
            else:
                b.store(b.trunc(src, I32), e.gep(I32, indices, at))
    b.ret_void()


@functools.cache
def _library(isa: Isa, dtype: str, largest: bool, by_index: bool, idx64: bool) -> jit.Library:
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit(m, prefix, dtype, largest, by_index, idx64)
        return m
    sig = f"topk|{isa.level}|{dtype}|{'max' if largest else 'min'}|{'index' if by_index else 'value'}|i{64 if idx64 else 32}"
    return jit.load(sig, isa, build)


def supported(dtype: np.dtype) -> bool:
    return dtype.name in DTYPES


def topk(data: np.ndarray, values: np.ndarray, indices: np.ndarray, *, outer: int, n: int, inner: int, k: int,
         largest: bool, by_index: bool, threads: int, isa: Isa | None = None) -> BoundKernel:
    """A bound TopK of contiguous ``data`` (``[outer, n, inner]``, f32, f64, i32 or i64) along its middle axis
    into ``values`` and ``indices`` (``[outer, k, inner]``, indices int32 or int64)."""
    isa = isa or host_isa()
    rows = outer * inner
    kw = data.dtype.itemsize // 4  # 32-bit words per key
    slot_words = (2 * kw + 2) * n + RADIX + -(-n // 4) + 16
    # one scratch slot per task: fewer tasks rather than more than MAX_SCRATCH bytes of slots
    n_tasks = min(rows, 4 * threads, max(1, MAX_SCRATCH // (4 * slot_words))) if rows and k else 0
    rpt = -(-rows // n_tasks) if n_tasks else 1
    n_tasks = -(-rows // rpt) if n_tasks else 0
    scratch = np.zeros(max(n_tasks, 1) * slot_words, np.int32)
    lib = _library(isa, data.dtype.name, largest, by_index, indices.dtype.itemsize == 8)
    ctx = TOPK_CONTEXT.new(data=data.ctypes.data, values=values.ctypes.data, indices=indices.ctypes.data,
                           scratch=scratch.ctypes.data, n=n, k=k, inner=inner, rows=rows, rpt=rpt,
                           slot_words=slot_words)
    return BoundKernel(lib.address("topk_task"), ctx, n_tasks, threads, (data, values, indices, scratch),
                       layout=TOPK_CONTEXT)
