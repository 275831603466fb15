"""Reductions of f32 tensors viewed as ``[outer, R, inner]``: ``y[o, i] = post(op_r pre(x[o, r, i]))``.

Three task shapes, chosen by the host function :func:`reduce_kernel`:

- ``short``: ``inner == 1``, a short contiguous row (``R <= SHORT_MAX``, R compiled in) and at
  least ``lanes`` rows:
  ``lanes`` rows at a time are read as R contiguous vectors and split into R columns with
  shuffles, so a ReduceMax over an innermost axis of 3 runs at memory speed;
- ``rows``: ``inner == 1``, any R: a vector accumulator along the row, then across its lanes;
- ``mid``: ``inner > 1``: vectors across the contiguous inner axis, accumulated over R row
  by row (a task's block of up to ``MID_BLOCK`` elements; narrower blocks when the outer
  rows give the threads too few tasks).

``op`` is sum, max, min or prod; ``pre`` is nothing, ``abs`` (ReduceL1) or ``square``
(ReduceL2); the result is multiplied by ``scale`` (ReduceMean) or square-rooted (ReduceL2).
Several passes make a reduction over axes that are not adjacent (``pre`` on the first,
the scale or root on the last). max/min propagate NaN, as numpy and REFERENCE do.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout, f32_bits
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import lane_mask, masked_load, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel

SHORT_MAX = 16
MID_BLOCK = 256  # inner elements per ``mid`` task at most (its accumulators)
#: ``mid`` tasks wanted per thread on two or more threads: fewer outer rows than that get
#: narrower inner blocks (PP-OCR det's SE means, one outer row of 96 or 24 channels, were a
#: single task); 0: blocks of ``MID_BLOCK`` whatever the threads (``layers.py --ab`` flips it)
MID_TASKS_PER_THREAD = 4
OPS = ("sum", "max", "min", "prod")
PRES = ("none", "abs", "square")
REDUCE_CONTEXT = ContextLayout(
    "reduce_any",
    ("x", "y", "outer", "r", "inner", "xs_o", "xs_r", "ys_o", "rpt", "ib", "nib", "sqrt", "scale"),
    pointers=("x", "y"))
_IDENTITY = {"sum": 0.0, "max": -math.inf, "min": math.inf, "prod": 1.0}
F64 = ir.DoubleType()


def _scale(e: ContextEmitter, et: ir.Type) -> ir.Value:
    """The context's scale word: f64 bits for f64 reductions, else f32 bits."""
    return e.b.bitcast(e.arg("scale"), F64) if et == F64 else e.arg("scale", F32)


class _Red:
    """The arithmetic of one (op, pre) pair on vectors or scalars of f32, i32 or i64."""

    def __init__(self, e: Emitter, op: str, pre: str, et: ir.Type = F32) -> None:
        self.e, self.b, self.op, self.pre, self.et = e, e.b, op, pre, et
        self.is_float = et in (F32, F64)
        self.fsfx = "f64" if et == F64 else "f32"

    def const(self, t: ir.Type, x: float) -> ir.Constant:
        v = x if self.is_float else int(x)
        return ir.Constant(t, [v] * t.count) if isinstance(t, ir.VectorType) else ir.Constant(t, v)

    def identity(self, t: ir.Type) -> ir.Constant:
        if self.is_float or self.op in ("sum", "prod"):
            return self.const(t, _IDENTITY[self.op] if self.is_float else int(self.op == "prod"))
        top = (1 << (self.et.width - 1))
        return self.const(t, -top if self.op == "max" else top - 1)

    def prep(self, v: ir.Value) -> ir.Value:
        b = self.b
        if self.pre == "abs":
            if not self.is_float:
                return b.select(b.icmp_signed("<", v, self.const(v.type, 0)), b.sub(self.const(v.type, 0), v), v)
            suffix = f"v{v.type.count}{self.fsfx}" if isinstance(v.type, ir.VectorType) else self.fsfx
            return self.e.call(f"llvm.fabs.{suffix}", v.type, [v])
        if self.pre == "square":
            return b.fmul(v, v) if self.is_float else b.mul(v, v)
        return v

    def combine(self, acc: ir.Value, v: ir.Value) -> ir.Value:
        b = self.b
        if not self.is_float:  # integers wrap in their own type, as REFERENCE's
            if self.op == "sum":
                return b.add(acc, v)
            if self.op == "prod":
                return b.mul(acc, v)
            return b.select(b.icmp_signed(">" if self.op == "max" else "<", v, acc), v, acc)
        if self.op == "sum":
            return b.fadd(acc, v)
        if self.op == "prod":
            return b.fmul(acc, v)
        better = b.fcmp_ordered(">" if self.op == "max" else "<", v, acc)
        picked = b.select(better, v, acc)
        return b.select(b.fcmp_unordered("uno", acc, v), b.fadd(acc, v), picked)  # NaN sticks

    def finish(self, acc: ir.Value, sqrt: ir.Value, scale: ir.Value) -> ir.Value:
        if not self.is_float:
            return acc
        b = self.b
        vector = isinstance(acc.type, ir.VectorType)
        suffix = f"v{acc.type.count}{self.fsfx}" if vector else self.fsfx
        root = self.e.call(f"llvm.sqrt.{suffix}", acc.type, [acc])
        s = self.e.splat(scale, acc.type.count) if vector else scale
        return b.select(b.icmp_signed("!=", sqrt, c64(0)), root, b.fmul(acc, s))

    def horizontal(self, v: ir.Value, lanes: int) -> ir.Value:
        b = self.b
        s = b.extract_element(v, ir.Constant(I32, 0))
        for k in range(1, lanes):
            s = self.combine(s, b.extract_element(v, ir.Constant(I32, k)))
        return s

    def load(self, vt: ir.VectorType, ptr: ir.Value, mask: ir.Value | None) -> ir.Value:
        if self.et == F32:
            return masked_load(self.e, vt, ptr, mask)
        if mask is None:
            return self.e.load(vt, ptr, align=1)
        name = f"llvm.masked.load.v{vt.count}{self._name}.p0"
        return self.e.call(name, vt, [ptr, c32(1), mask, ir.Constant(vt, None)])

    @property
    def _name(self) -> str:
        return "f64" if self.et == F64 else f"i{self.et.width}"

    def store(self, v: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
        if self.et == F32:
            masked_store(self.e, v, ptr, mask)
        elif mask is None:
            self.b.store(v, ptr, align=1)
        else:
            self.e.call(f"llvm.masked.store.v{v.type.count}{self._name}.p0", VOID, [v, ptr, c32(1), mask])


def _concat(b: ir.IRBuilder, vs: list[ir.Value]) -> ir.Value:
    """One vector holding ``vs`` (equal widths) one after another."""
    width = 1
    while width < len(vs):
        width *= 2
    vs = vs + [ir.Constant(vs[0].type, ir.Undefined)] * (width - len(vs))
    while len(vs) > 1:
        w = vs[0].type.count
        idx = ir.Constant(vec(I32, 2 * w), list(range(2 * w)))
        vs = [b.shuffle_vector(vs[k], vs[k + 1], idx) for k in range(0, len(vs), 2)]
    return vs[0]


def _emit_short(m: ir.Module, prefix: str, lanes: int, r: int, op: str, pre: str, et: ir.Type = F32) -> None:
    """short_task(ctx, task): rows [task * rpt, ...) of a contiguous [outer, r] tensor."""
    fn = Emitter.function(m, f"{prefix}_short_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, REDUCE_CONTEXT)
    b = e.b
    red = _Red(e, op, pre, et)
    vt = vec(et, lanes)
    task = fn.args[1]
    outer, rpt = e.arg("outer"), e.arg("rpt")
    r0 = b.mul(task, rpt)
    r1 = e.min(outer, b.add(r0, rpt))
    x, y = e.arg("x", PTR), e.arg("y", PTR)
    sqrt, scale = e.arg("sqrt"), _scale(e, et)
    nfull = b.add(r0, b.mul(b.sdiv(b.sub(r1, r0), c64(lanes)), c64(lanes)))
    with e.loop(r0, nfull, lanes, name="o") as o:
        base = e.gep(et, x, b.mul(o, c64(r)))
        vs = [e.load(vt, e.gep(et, base, c64(k * lanes)), align=1) for k in range(r)]
        big = _concat(b, vs) if r > 1 else vs[0]
        acc = None
        for j in range(r):
            col = b.shuffle_vector(big, ir.Constant(big.type, ir.Undefined),
                                   ir.Constant(vec(I32, lanes), [i * r + j for i in range(lanes)])) if r > 1 else big
            col = red.prep(col)
            acc = col if acc is None else red.combine(acc, col)
        assert acc is not None
        b.store(red.finish(acc, sqrt, scale), e.gep(et, y, o), align=1)
    with e.loop(nfull, r1, name="t") as o:
        base = e.gep(et, x, b.mul(o, c64(r)))
        acc = None
        for j in range(r):
            v = red.prep(e.load(et, e.gep(et, base, c64(j))))
            acc = v if acc is None else red.combine(acc, v)
        assert acc is not None
        b.store(red.finish(acc, sqrt, scale), e.gep(et, y, o))
    b.ret_void()


def _emit_rows(m: ir.Module, prefix: str, lanes: int, op: str, pre: str, et: ir.Type = F32) -> None:
    """rows_task(ctx, task): rows of R elements (any R, contiguous), a block of rows per task."""
    fn = Emitter.function(m, f"{prefix}_rows_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, REDUCE_CONTEXT)
    b = e.b
    red = _Red(e, op, pre, et)
    vt = vec(et, lanes)
    task = fn.args[1]
    outer, rpt, R = e.arg("outer"), e.arg("rpt"), e.arg("r")
    r0 = b.mul(task, rpt)
    r1 = e.min(outer, b.add(r0, rpt))
    x, y = e.arg("x", PTR), e.arg("y", PTR)
    xs_o, ys_o = e.arg("xs_o"), e.arg("ys_o")
    sqrt, scale = e.arg("sqrt"), _scale(e, et)
    rmain = b.mul(b.sdiv(R, c64(lanes)), c64(lanes))
    with e.loop(r0, r1, name="o") as o:
        row = e.gep(et, x, b.mul(o, xs_o))
        acc = e.var(vt, red.identity(vt))
        with e.loop(0, rmain, lanes, name="r") as k:
            b.store(red.combine(e.load(vt, acc), red.prep(e.load(vt, e.gep(et, row, k), align=1))), acc)
        with b.if_then(b.icmp_signed("<", rmain, R)):
            mask = lane_mask(e, b.sub(R, rmain), lanes)
            v = b.select(mask, red.prep(red.load(vt, e.gep(et, row, rmain), mask)), red.identity(vt))
            b.store(red.combine(e.load(vt, acc), v), acc)
        s = red.horizontal(e.load(vt, acc), lanes)
        b.store(red.finish(s, sqrt, scale), e.gep(et, y, b.mul(o, ys_o)))
    b.ret_void()


def _emit_mid(m: ir.Module, prefix: str, lanes: int, op: str, pre: str, et: ir.Type = F32) -> None:
    """mid_task(ctx, task): task -> (outer index, inner block); vectors over the inner axis.
    The block's vectors are accumulated row by row (one accumulator each, on the stack), so
    a task reads its rows in memory order once: a squeeze-excitation's global mean over
    120 x 160 pixels of 96 channels read them in six strided passes, one per vector (each
    sum is still taken over R in order: the same results)."""
    fn = Emitter.function(m, f"{prefix}_mid_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, REDUCE_CONTEXT)
    b = e.b
    red = _Red(e, op, pre, et)
    vt = vec(et, lanes)
    task = fn.args[1]
    nib, ib, inner, R = e.arg("nib"), e.arg("ib"), e.arg("inner"), e.arg("r")
    o = b.sdiv(task, nib)
    i0 = b.mul(b.srem(task, nib), ib)
    i1 = e.min(inner, b.add(i0, ib))
    x = e.gep(et, e.arg("x", PTR), b.add(b.mul(o, e.arg("xs_o")), i0))
    y = e.gep(et, e.arg("y", PTR), b.add(b.mul(o, e.arg("ys_o")), i0))
    xs_r = e.arg("xs_r")
    sqrt, scale = e.arg("sqrt"), _scale(e, et)
    n = b.sub(i1, i0)
    nfull = b.sdiv(n, c64(lanes))
    tail = b.icmp_signed("<", b.mul(nfull, c64(lanes)), n)
    mask = lane_mask(e, b.sub(n, b.mul(nfull, c64(lanes))), lanes)
    acc = e.var(vt, count=MID_BLOCK // lanes)
    with e.loop(0, b.add(nfull, b.zext(tail, I64)), name="a0") as j:
        b.store(red.identity(vt), e.gep(vt, acc, j))
    with e.loop(0, R, name="r") as r:
        row = e.gep(et, x, b.mul(r, xs_r))
        with e.loop(0, nfull, name="v") as j:
            v = red.prep(red.load(vt, e.gep(et, row, b.mul(j, c64(lanes))), None))
            slot = e.gep(vt, acc, j)
            b.store(red.combine(e.load(vt, slot), v), slot)
        with b.if_then(tail):
            v = red.prep(red.load(vt, e.gep(et, row, b.mul(nfull, c64(lanes))), mask))
            slot = e.gep(vt, acc, nfull)
            b.store(red.combine(e.load(vt, slot), v), slot)
    with e.loop(0, nfull, name="st") as j:
        red.store(red.finish(e.load(vt, e.gep(vt, acc, j)), sqrt, scale), e.gep(et, y, b.mul(j, c64(lanes))), None)
    with b.if_then(tail):
        red.store(red.finish(e.load(vt, e.gep(vt, acc, nfull)), sqrt, scale),
                  e.gep(et, y, b.mul(nfull, c64(lanes))), mask)
    b.ret_void()


_ELEMENT = {np.dtype(np.float32): F32, np.dtype(np.int32): I32, np.dtype(np.int64): I64, np.dtype(np.float64): F64}


@functools.cache
def _library(isa: Isa, op: str, pre: str, short: int, dtype: str = "float32") -> jit.Library:
    """``short`` > 0: the short-row kernel for that R; 0: the rows and mid kernels."""
    et = _ELEMENT[np.dtype(dtype)]

    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        if short:
            _emit_short(m, prefix, isa.f32_lanes, short, op, pre, et)
        else:
            _emit_rows(m, prefix, isa.f32_lanes, op, pre, et)
            _emit_mid(m, prefix, isa.f32_lanes, op, pre, et)
        return m
    return jit.load(f"reduce|{isa.level}|{op}|{pre}|s{short}|{dtype}", isa, build)


def reduce_kernel(x: np.ndarray, y: np.ndarray, op: str, threads: int, pre: str = "none", scale: float = 1.0,
                  sqrt: bool = False, isa: Isa | None = None) -> BoundKernel:
    """``y[o, i] = op_r pre(x[o, r, i])``, then times ``scale`` or square-rooted (``sqrt``).

    ``x`` is an ``[outer, R, inner]`` view with a contiguous inner axis (any outer and R
    strides), ``y`` an ``[outer, inner]`` view with a contiguous inner axis; f32, f64, or int32/int64
    (sums and products wrap; no scale or root)."""
    if op not in OPS or pre not in PRES or x.dtype not in _ELEMENT or y.dtype != x.dtype:
        raise ValueError(f"ember: internal: reduction {op}/{pre} of {x.dtype}")
    item = x.itemsize
    outer, r, inner = x.shape
    isa = isa or host_isa()
    lanes = isa.f32_lanes
    ctx = REDUCE_CONTEXT.new()
    scale_word = int(np.array([scale], np.float64).view(np.int64)[0]) if x.dtype == np.float64 else f32_bits(scale)
    items = outer * r * max(inner, 1)
    xs_o, xs_r, ys_o = x.strides[0] // item, x.strides[1] // item, y.strides[0] // item
    if inner == 1:
        # rows per task: about 16K elements, at least 4 tasks per thread when there is work
        rpt = max(1, (1 << 14) // max(r, 1))
        if -(-outer // rpt) < 4 * threads and items > 4096:
            rpt = max(1, -(-outer // (4 * threads)))
        # (R is compiled into the short kernel: only worth a module of its own when there are rows
        # for its vectors; a dynamic model's few rows of every length would compile one per length)
        short = 1 < r <= SHORT_MAX and outer >= lanes and xs_o == r and xs_r == 1 and ys_o == 1
        if short:
            rpt = max(lanes, -(-rpt // lanes) * lanes)
        n_tasks = -(-outer // rpt)
        ctx[:] = REDUCE_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, outer=outer, r=r, inner=1, xs_o=xs_o,
                                    xs_r=1, ys_o=ys_o, rpt=rpt, sqrt=int(sqrt), scale=scale_word)
        if r > 1 and xs_r != 1 and not short:  # rows must be contiguous: read them as [outer*?]
            raise ValueError("ember: internal: reduce rows need a contiguous reduced axis")
        lib = _library(isa, op, pre, r if short else 0, x.dtype.name)
        task = lib.address("short_task" if short else "rows_task")
    else:
        ib = max(lanes, min(inner, MID_BLOCK))
        ib = -(-ib // lanes) * lanes
        nib = -(-inner // ib)
        want = MID_TASKS_PER_THREAD * threads if threads > 1 else 1
        if outer * nib < want and items > 4096:  # few outer rows: narrower blocks, one per task
            ib = -(-max(lanes, -(-inner // -(-want // outer))) // lanes) * lanes
            nib = -(-inner // ib)
        n_tasks = outer * nib
        ctx[:] = REDUCE_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, outer=outer, r=r, inner=inner, xs_o=xs_o,
                                    xs_r=xs_r, ys_o=ys_o, ib=ib, nib=nib, sqrt=int(sqrt), scale=scale_word)
        task = _library(isa, op, pre, 0, x.dtype.name).address("mid_task")
    if y.size == 0:
        n_tasks = 0
    return BoundKernel(task, ctx, n_tasks, threads, (x, y), layout=REDUCE_CONTEXT)
