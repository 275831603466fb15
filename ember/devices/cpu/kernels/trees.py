"""TreeEnsemble (ai.onnx.ml, scikit-learn's forests and boosted trees) over ``[N, F]`` f32 or f64
rows, computed as the reference kernel computes it: features compared in f64, every tree walked
from its root to a leaf, the leaf's (dense) per-target weights added in tree order from +0 (or
their min/max for the leaves that hold the target), then the average, ``base_values`` and the
post-transform (NONE, LOGISTIC, SOFTMAX) in f64, rounded once to the output type.

Node tables (compile time): feature, mode (BRANCH_LEQ/LT/GTE/GT/EQ/NEQ), split, the next entry
when the test holds and when it fails (a node index, or ``-(leaf + 1)`` for a leaf), and whether
a NaN feature takes the true branch. A task is a block of rows; each task has its own
score/hit scratch slot.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I8, I64, PTR, VOID, c64
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.runtime.kernel_call import BoundKernel

F64 = ir.DoubleType()
AGGREGATES = ("SUM", "AVERAGE", "MIN", "MAX")
TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX")

TREES_CONTEXT = ContextLayout(
    "trees",
    ("x", "y", "feat", "mode", "split", "tnext", "fnext", "miss", "roots", "weights", "has", "base", "scratch",
     "hits", "features", "targets", "trees", "rpt", "rows"),
    pointers=("x", "y", "feat", "mode", "split", "tnext", "fnext", "miss", "roots", "weights", "has", "base",
              "scratch", "hits"))


def _d(v: float) -> ir.Constant:
    return ir.Constant(F64, v)


def _emit(m: ir.Module, prefix: str, x64: bool, y64: bool, agg: str, transform: str) -> None:
    fn = ContextEmitter.function(m, f"{prefix}_trees_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, TREES_CONTEXT)
    b = e.b
    task = fn.args[1]
    xt, yt = (F64 if x64 else F32), (F64 if y64 else F32)
    x, y = e.arg("x", PTR), e.arg("y", PTR)
    feat, mode, split = e.arg("feat", PTR), e.arg("mode", PTR), e.arg("split", PTR)
    tnext, fnext, miss, roots = e.arg("tnext", PTR), e.arg("fnext", PTR), e.arg("miss", PTR), e.arg("roots", PTR)
    weights, has, base = e.arg("weights", PTR), e.arg("has", PTR), e.arg("base", PTR)
    nf, nt, ntrees = e.arg("features"), e.arg("targets"), e.arg("trees")
    score = e.gep(F64, e.arg("scratch", PTR), b.mul(task, nt))
    hit = e.gep(I8, e.arg("hits", PTR), b.mul(task, nt))
    r0 = b.mul(task, e.arg("rpt"))
    r1 = e.min(e.arg("rows"), b.add(r0, e.arg("rpt")))
    at = e.var(I64)

    def ld(t: ir.Type, p: ir.Value, i: ir.Value) -> ir.Value:
        return e.load(t, e.gep(t, p, i))

    with e.loop(r0, r1, name="row") as row:
        xrow = e.gep(xt, x, b.mul(row, nf))
        with e.loop(0, nt, name="z") as t:
            b.store(_d(0.0), e.gep(F64, score, t))
            b.store(ir.Constant(I8, 0), e.gep(I8, hit, t))
        with e.loop(0, ntrees, name="tree") as tree:
            b.store(ld(I64, roots, tree), at)
            hdr, body, done = (fn.append_basic_block(f"walk.{s}") for s in ("hdr", "body", "done"))
            b.branch(hdr)
            b.position_at_end(hdr)
            b.cbranch(b.icmp_signed(">=", e.load(I64, at), c64(0)), body, done)
            b.position_at_end(body)
            node = e.load(I64, at)
            v = ld(xt, xrow, ld(I64, feat, node))
            v = b.fpext(v, F64) if not x64 else v
            s = ld(F64, split, node)
            md = ld(I64, mode, node)
            tests = [b.fcmp_ordered("<=", v, s), b.fcmp_ordered("<", v, s), b.fcmp_ordered(">=", v, s),
                     b.fcmp_ordered(">", v, s), b.fcmp_ordered("==", v, s), b.fcmp_unordered("!=", v, s)]
            cond = tests[-1]
            for k in range(len(tests) - 2, -1, -1):
                cond = b.select(b.icmp_signed("==", md, c64(k)), tests[k], cond)
            nan_true = b.icmp_unsigned("!=", ld(I8, miss, node), ir.Constant(I8, 0))
            cond = b.select(b.fcmp_unordered("uno", v, v), nan_true, cond)
            b.store(b.select(cond, ld(I64, tnext, node), ld(I64, fnext, node)), at)
            b.branch(hdr)
            b.position_at_end(done)
            leaf = b.sub(c64(-1), e.load(I64, at))  # -(leaf + 1) -> leaf
            wrow = b.mul(leaf, nt)
            with e.loop(0, nt, name="w") as t:
                w = ld(F64, weights, b.add(wrow, t))
                ps = e.gep(F64, score, t)
                if agg in ("SUM", "AVERAGE"):
                    b.store(b.fadd(e.load(F64, ps), w), ps)
                else:
                    holds = b.icmp_unsigned("!=", ld(I8, has, b.add(wrow, t)), ir.Constant(I8, 0))
                    with b.if_then(holds):
                        cur = e.load(F64, ps)
                        first = b.icmp_unsigned("==", ld(I8, hit, t), ir.Constant(I8, 0))
                        better = b.fcmp_ordered("<" if agg == "MIN" else ">", w, cur)
                        # np.minimum/np.maximum: a NaN on either side wins
                        nan = b.or_(b.fcmp_unordered("uno", w, w), b.fcmp_unordered("uno", cur, cur))
                        newv = b.select(b.or_(first, better), w, cur)
                        newv = b.select(b.and_(nan, b.not_(first)), b.fadd(w, cur), newv)
                        b.store(newv, ps)
                        b.store(ir.Constant(I8, 1), e.gep(I8, hit, t))
        ntf = b.sitofp(ntrees, F64)
        with e.loop(0, nt, name="fin") as t:
            ps = e.gep(F64, score, t)
            val = e.load(F64, ps)
            if agg == "AVERAGE":
                val = b.select(b.icmp_signed(">", ntrees, c64(0)), b.fdiv(val, ntf), val)
            b.store(b.fadd(val, ld(F64, base, t)), ps)
        yrow = e.gep(yt, y, b.mul(row, nt))

        def put(t: ir.Value, val: ir.Value) -> None:
            b.store(val if y64 else b.fptrunc(val, F32), e.gep(yt, yrow, t))

        if transform == "SOFTMAX":
            top = e.var(F64, _d(-np.inf))
            with e.loop(0, nt, name="mx") as t:
                v = ld(F64, score, t)
                cur = e.load(F64, top)
                b.store(b.select(b.or_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered(">", v, cur)), v, cur), top)
            mx = e.load(F64, top)
            total = e.var(F64, _d(0.0))
            with e.loop(0, nt, name="ex") as t:
                ev = e.call("ember_libm_exp", F64, [b.fsub(ld(F64, score, t), mx)])
                b.store(ev, e.gep(F64, score, t))
                b.store(b.fadd(e.load(F64, total), ev), total)
            tot = e.load(F64, total)
            with e.loop(0, nt, name="out") as t:
                put(t, b.fdiv(ld(F64, score, t), tot))
        else:
            with e.loop(0, nt, name="out") as t:
                val = ld(F64, score, t)
                if transform == "LOGISTIC":
                    val = b.fdiv(_d(1.0), b.fadd(_d(1.0), e.call("ember_libm_exp", F64, [b.fneg(val)])))
                put(t, val)
    b.ret_void()


@functools.cache
def _library(isa: Isa, x64: bool, y64: bool, agg: str, transform: str) -> jit.Library:
    from ember.devices.cpu.kernels.eltwise import libm_symbols

    libm_symbols()

    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit(m, prefix, x64, y64, agg, transform)
        return m
    return jit.load(f"trees|{isa.level}|x{int(x64)}|y{int(y64)}|{agg}|{transform}", isa, build)


def tree_ensemble(x: np.ndarray, y: np.ndarray, arrays: list[np.ndarray], *, agg: str, transform: str,
                  threads: int, isa: Isa | None = None) -> BoundKernel:
    """A bound TreeEnsemble of contiguous ``x`` (``[rows, features]``, f32/f64) into ``y``
    (``[rows, targets]``, f32/f64) with the tables of ``lowering/trees.py``'s ``tree_tables``
    (feature, mode, split, true next, false next, NaN-goes-true, roots, weights, holds, base)."""
    feat, mode, split, tnext, fnext, miss, roots, weights, has, base = arrays
    rows, features = x.shape
    targets = y.shape[1]
    per_row = max(1, roots.size * 8 + targets)
    rpt = max(1, (1 << 14) // per_row)
    if -(-rows // rpt) < 4 * threads:
        rpt = max(1, -(-rows // (4 * threads)))
    tasks = -(-rows // rpt) if rows and targets else 0
    scratch = np.zeros(max(tasks, 1) * targets, np.float64)
    hits = np.zeros(max(tasks, 1) * targets, np.uint8)
    ctx = TREES_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, feat=feat.ctypes.data, mode=mode.ctypes.data,
                            split=split.ctypes.data, tnext=tnext.ctypes.data, fnext=fnext.ctypes.data,
                            miss=miss.ctypes.data, roots=roots.ctypes.data, weights=weights.ctypes.data,
                            has=has.ctypes.data, base=base.ctypes.data, scratch=scratch.ctypes.data,
                            hits=hits.ctypes.data, features=features, targets=targets, trees=roots.size, rpt=rpt,
                            rows=rows)
    lib = _library(isa or host_isa(), x.dtype == np.float64, y.dtype == np.float64, agg, transform)
    return BoundKernel(lib.address("trees_task"), ctx, tasks, threads, (x, y, *arrays, scratch, hits),
                       layout=TREES_CONTEXT)
