"""Row kernels: SoftMax / LogSoftmax and MVN (LayerNorm) over the contiguous last axis.

``row_task(ctx, task)`` handles a block of rows of ``x[rows, n]`` (row strides ``ldx``,
``ldy``). SoftMax: max, ``exp(x - max)`` stored and summed, then a multiply by ``1 / sum``
(LogSoftmax: ``(x - max) - log(sum)``). Three passes over a row that stays in L1: an online
max-and-sum pass would take an exp per element twice. MVN: the mean, then the variance of ``x - mean`` (two passes, as
the reference computes it), then ``(x - mean) / sqrt(var + eps)`` (or ``sqrt(var) + eps``),
optionally times a per-column scale plus a per-column shift (LayerNorm's affine tail).
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I64, PTR, VOID, Emitter, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import VectorMath, hmax, hsum, lane_mask, masked_load, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel

ROWS_CONTEXT = ContextLayout(
    "rows",
    ("x", "y", "rows", "n", "ldx", "ldy", "kind", "eps", "flags", "scale", "shift", "rpt"),
    pointers=("x", "y", "scale", "shift"))
KINDS = {"softmax": 0, "logsoftmax": 1, "mvn": 2}
F_VARIANCE, F_EPS_INSIDE, F_SCALE, F_SHIFT = 1, 2, 4, 8


def _emit_rows(m: ir.Module, prefix: str, lanes: int) -> None:
    fn = Emitter.function(m, f"{prefix}_row_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, ROWS_CONTEXT)
    b = e.b
    task = fn.args[1]
    vt = vec(F32, lanes)
    mth = VectorMath(e, lanes)
    n, rpt = e.arg("n"), e.arg("rpt")
    r0 = b.mul(task, rpt)
    r1 = e.min(e.arg("rows"), b.add(r0, rpt))
    kind = e.arg("kind")
    flags = e.arg("flags")

    def flag(bit: int) -> ir.Value:
        return b.icmp_unsigned("!=", b.and_(flags, c64(bit)), c64(0))

    nmain = b.mul(b.sdiv(n, c64(lanes)), c64(lanes))
    has_tail = b.icmp_signed("<", nmain, n)
    tail = lane_mask(e, b.sub(n, nmain), lanes)
    nf = b.sitofp(n, F32)

    def over_row(body) -> None:  # noqa: ANN001 - body(i, mask)
        with e.loop(0, nmain, lanes, name="c") as i:
            body(i, None)
        with b.if_then(has_tail):
            body(nmain, tail)

    n4 = b.mul(b.sdiv(n, c64(4 * lanes)), c64(4 * lanes))

    def reduce(load_fn, combine, init: ir.Value, hreduce) -> ir.Value:  # noqa: ANN001
        """Four independent accumulators over blocks of 4 vectors (an add's latency is 4
        cycles: one chain would wait on it), then the rest vector by vector."""
        accs = [e.var(vt, e.splat(init, lanes)) for _ in range(4)]
        with e.loop(0, n4, 4 * lanes, name="c4") as i:
            for k in range(4):
                v = load_fn(b.add(i, c64(k * lanes)), None)
                b.store(combine(e.load(vt, accs[k]), v), accs[k])

        def body(i: ir.Value, mask: ir.Value | None) -> None:
            v = load_fn(i, mask)
            if mask is not None:
                v = b.select(mask, v, e.splat(init, lanes))
            b.store(combine(e.load(vt, accs[0]), v), accs[0])

        with e.loop(n4, nmain, lanes, name="c") as i:
            body(i, None)
        with b.if_then(has_tail):
            body(nmain, tail)
        a01 = combine(e.load(vt, accs[0]), e.load(vt, accs[1]))
        a23 = combine(e.load(vt, accs[2]), e.load(vt, accs[3]))
        return hreduce(e, combine(a01, a23), lanes)

    with e.loop(r0, r1, name="row") as r:
        x = e.gep(F32, e.arg("x", PTR), b.mul(r, e.arg("ldx")))
        y = e.gep(F32, e.arg("y", PTR), b.mul(r, e.arg("ldy")))

        def xload(i: ir.Value, mask: ir.Value | None) -> ir.Value:
            return masked_load(e, vt, e.gep(F32, x, i), mask)

        with b.if_else(b.icmp_signed("<", kind, c64(KINDS["mvn"]))) as (soft, mvn):
            with soft:
                mx = reduce(xload, lambda a, v: b.select(b.fcmp_ordered(">", v, a), v, a),
                            ir.Constant(F32, float("-inf")), hmax)
                vmx = e.splat(mx, lanes)
                totals = [e.var(vt, ir.Constant(vt, None)) for _ in range(2)]

                def exp_pass(store: bool) -> None:
                    """exp(x - max) summed (two sums: two vectors' exps overlap), stored if ``store``."""
                    def expo(i: ir.Value, mask: ir.Value | None, part: int = 0) -> None:
                        ex = mth.exp(b.fsub(xload(i, mask), vmx), nonpositive=True)
                        if mask is not None:
                            ex = b.select(mask, ex, ir.Constant(vt, None))
                        b.store(b.fadd(e.load(vt, totals[part]), ex), totals[part])
                        if store:
                            masked_store(e, ex, e.gep(F32, y, i), mask)

                    n2 = b.mul(b.sdiv(n, c64(2 * lanes)), c64(2 * lanes))
                    with e.loop(0, n2, 2 * lanes, name="c2") as i:
                        expo(i, None, 0)
                        expo(b.add(i, c64(lanes)), None, 1)
                    with e.loop(n2, nmain, lanes, name="c") as i:
                        expo(i, None, 0)
                    with b.if_then(has_tail):
                        expo(nmain, tail, 0)

                with b.if_else(b.icmp_signed("==", kind, c64(KINDS["softmax"]))) as (sm, lsm):
                    with sm:
                        exp_pass(True)
                    with lsm:
                        exp_pass(False)
                ssum = hsum(e, b.fadd(e.load(vt, totals[0]), e.load(vt, totals[1])), lanes)
                s = e.splat(ssum, lanes)
                with b.if_else(b.icmp_signed("==", kind, c64(KINDS["softmax"]))) as (sm, lsm):
                    with sm:
                        # a multiply by 1 / sum: a vector division costs 10-16 cycles a vector
                        # (two thirds of the row's time at 40 x 6625), a product 0.5
                        vinv = e.splat(b.fdiv(ir.Constant(F32, 1.0), ssum), lanes)

                        def scale_row(i: ir.Value, mask: ir.Value | None) -> None:
                            p = e.gep(F32, y, i)
                            masked_store(e, b.fmul(masked_load(e, vt, p, mask), vinv), p, mask)
                        over_row(scale_row)
                    with lsm:
                        # (x - max) - log(sum), not x - (max + log(sum)): near f32's largest
                        # values max + log(sum) rounds back to max
                        logs = mth.log(s)

                        def logsub(i: ir.Value, mask: ir.Value | None) -> None:
                            v = b.fsub(b.fsub(xload(i, mask), vmx), logs)
                            masked_store(e, v, e.gep(F32, y, i), mask)
                        over_row(logsub)
            with mvn:
                mean = b.fdiv(reduce(xload, b.fadd, ir.Constant(F32, 0.0), hsum), nf)
                vmean = e.splat(mean, lanes)

                def centered_sq(i: ir.Value, mask: ir.Value | None) -> ir.Value:
                    d = b.fsub(xload(i, mask), vmean)
                    return b.fmul(d, d)

                var = b.fdiv(reduce(centered_sq, b.fadd, ir.Constant(F32, 0.0), hsum), nf)
                eps = e.arg("eps", F32)
                one = ir.Constant(F32, 1.0)
                sq_in = e.call("llvm.sqrt.f32", F32, [b.fadd(var, eps)])
                sq_out = b.fadd(e.call("llvm.sqrt.f32", F32, [var]), eps)
                denom = b.select(flag(F_EPS_INSIDE), sq_in, sq_out)
                rstd = b.select(flag(F_VARIANCE), b.fdiv(one, denom), one)
                vr = e.splat(rstd, lanes)
                scale, shift = e.arg("scale", PTR), e.arg("shift", PTR)
                has_scale, has_shift = flag(F_SCALE), flag(F_SHIFT)

                def normalizer(with_scale: bool, with_shift: bool):  # noqa: ANN202
                    def normalize(i: ir.Value, mask: ir.Value | None) -> None:
                        v = b.fmul(b.fsub(xload(i, mask), vmean), vr)
                        if with_scale:
                            v = b.fmul(v, masked_load(e, vt, e.gep(F32, scale, i), mask))
                        if with_shift:
                            v = b.fadd(v, masked_load(e, vt, e.gep(F32, shift, i), mask))
                        masked_store(e, v, e.gep(F32, y, i), mask)
                    return normalize

                # the affine's flags decided once per row, not per vector
                with b.if_else(has_scale) as (scaled, plain):
                    for block, with_scale in ((scaled, True), (plain, False)):
                        with block:
                            with b.if_else(has_shift) as (shifted, unshifted):
                                with shifted:
                                    over_row(normalizer(with_scale, True))
                                with unshifted:
                                    over_row(normalizer(with_scale, False))
    b.ret_void()


def _build(prefix: str, isa: Isa) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_rows(m, prefix, isa.f32_lanes)
    return m


@functools.cache
def _library(isa: Isa) -> jit.Library:
    return jit.load(f"rows|{isa.level}|acc4", isa, lambda p: _build(p, isa))


def row_kernel(x: np.ndarray, y: np.ndarray, kind: str, threads: int, *, eps: float = 0.0,
               normalize_variance: bool = True, eps_inside: bool = True, scale: np.ndarray | None = None,
               shift: np.ndarray | None = None, isa: Isa | None = None) -> BoundKernel:
    """A bound row kernel over ``x[rows, n]`` into ``y[rows, n]`` (rows contiguous, any row
    stride). ``kind``: ``softmax``, ``logsoftmax`` or ``mvn`` (with ``eps``, ``scale``/``shift``
    float32 vectors of ``n``)."""
    rows, n = x.shape
    isa = isa or host_isa()
    ctx = ROWS_CONTEXT.new()
    rpt = max(1, (1 << 13) // max(n, 1))
    if -(-rows // rpt) < 4 * threads:
        rpt = max(1, -(-rows // (4 * threads)))
    flags = (F_VARIANCE if normalize_variance else 0) | (F_EPS_INSIDE if eps_inside else 0) | \
        (F_SCALE if scale is not None else 0) | (F_SHIFT if shift is not None else 0)
    vals = dict(x=x.ctypes.data, y=y.ctypes.data, rows=rows, n=n, ldx=x.strides[0] // 4, ldy=y.strides[0] // 4,
                kind=KINDS[kind], eps=int(np.array([eps], np.float32).view(np.uint32)[0]), flags=flags,
                scale=0 if scale is None else scale.ctypes.data, shift=0 if shift is None else shift.ctypes.data,
                rpt=rpt)
    for k, v in vals.items():
        ctx[ROWS_CONTEXT[k]] = v
    n_tasks = -(-rows // rpt) if x.size else 0
    return BoundKernel(_library(isa).address("row_task"), ctx, n_tasks, threads, (x, y, scale, shift), layout=ROWS_CONTEXT)
