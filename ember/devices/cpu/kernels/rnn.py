"""Recurrent sequences and cells: LSTM, GRU (both reset orders) and RNN, the whole time loop in
native code.

A sequence op runs as three kernel calls. First the input projection of every time step at
once, ``XW[batch * seq, dirs * gates * H] = X @ W^T + bias``, as one call of the f32 GEMM
(:mod:`~ember.devices.cpu.kernels.gemm`). Then ``rnn_init(ctx, d)`` copies direction ``d``'s
initial states into scratch rows and zeroes its step counters, and ``rnn_task(ctx, task)``
runs the time loop. Its tasks form groups, one per (direction, block of batch rows):
directions and batch rows are independent, so groups never wait for each other.

A step computes, per block of ``lanes`` hidden units, the recurrent product ``H_prev @ R^T``
for every gate of the block at once from weights packed gate-interleaved
(``[block][k][gate][lanes]``, one contiguous stream), for up to four batch rows per pass over
the weights, then the gates and the cell update in registers. When threads are left over and
a step is long, a group has several tasks that share its hidden blocks: at each step a task
claims blocks (its own share first, so each core keeps its part of ``R`` in cache, then any
block still unclaimed) with a compare-and-swap on a per-block step stamp, then waits until
the step's blocks are all done. A task only ever waits for blocks another task has claimed
and is computing, so tasks run one after the other on one thread (a busy pool) still finish.

GRU without ``linear_before_reset`` needs ``r`` of every hidden unit before ``(r * h) @ Rh^T``:
its step is two passes (z and r, then h with its own packed weights), each a round of claims.
States ping-pong between two scratch rows per batch item; the cell state updates in place.

Sequence lengths: a row is active at step ``s`` while ``s < len``; the forward direction reads
position ``s``, the reverse one ``len - 1 - s``. An inactive row keeps its states and writes
zeros to ``Y`` at position ``s``, so every position at or past its length reads zero; a block
whose rows are all inactive skips its products. A row of length 0 ends with zero states
(OpenVINO's and ONNX Runtime's result, not its initial ones).
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ember.devices.cpu.kernels.gemm import Epilogue, Gemm, bf16_supported, pack_b, to_bf16_bits
from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import BF16, F32, I32, I64, PTR, VOID, Emitter, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout, f32_bits
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import VectorMath, fmuladd, lane_mask, masked_load, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.errors import EmberError

RNN_CONTEXT = ContextLayout(
    "rnn",
    ("xw", "ldxw", "h0", "c0", "lens", "r", "rdir", "rph", "rb", "y", "ho", "co", "scratch", "sdir", "ssync",
     "batch", "seq", "hidden", "hp", "dirs", "reverse", "bpt", "nbt", "ns", "clip", "flags", "adapt"),
    pointers=("xw", "h0", "c0", "lens", "r", "rb", "y", "ho", "co", "scratch", "adapt"))
F_C0, F_LENS, F_LENS64, F_Y, F_CO = 1, 2, 4, 8, 16
#: i64 words per step counter (one cache line each: tasks of a group claim blocks concurrently)
SYNC_WORDS = 8
#: multiply-adds per step below which a group's time loop is not split over threads
SPLIT_MIN_MACS = 1 << 17
#: f32 bytes of R per direction beyond which bf16 products pay off at any batch (about L2's share)
BF16_MIN_R_BYTES = 1 << 20
#: cycle-counter ticks a split time loop runs on one task per group after a run whose tasks
#: waited longer than they worked (a partner core busy with other work: about 50 ms)
SOLO_TICKS = 1 << 27


def _registers(lanes: int) -> int:
    """Vector registers of the ISA level (AVX-512: 32, else 16)."""
    return 32 if lanes >= 16 else 16


def tile_rows(lanes: int, gates: int) -> int:
    """Batch rows sharing one pass over the recurrent weights: as many as keep their
    accumulators, the weight vectors and a broadcast in registers (at most 4)."""
    return max(1, min(4, (_registers(lanes) - gates - 1) // gates))

#: cell kind -> (gates in W and XW, gates per pass over R)
CELLS = {"lstm": (4, (4,)), "gru": (3, (2, 1)), "gru_lbr": (3, (3,)), "rnn": (1, (1,)),
         # ONNX LSTM: with peepholes (p), with input and forget gates coupled (f = 1 - i), both
         "lstm_p": (4, (4,)), "lstm_f": (4, (4,)), "lstm_pf": (4, (4,))}

#: activations the kernel computes natively, with default (alpha, beta) as OpenVINO's spec gives
NATIVE_ACTIVATIONS = {
    "sigmoid": (0.0, 0.0), "tanh": (0.0, 0.0), "relu": (0.0, 0.0), "affine": (1.0, 0.0),
    "leakyrelu": (0.01, 0.0), "thresholdedrelu": (1.0, 0.0), "scaledtanh": (1.0, 1.0),
    "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0), "softsign": (0.0, 0.0), "softplus": (0.0, 0.0),
}
_USES = {"affine": (True, True), "leakyrelu": (True, False), "thresholdedrelu": (True, False),
         "scaledtanh": (True, True), "hardsigmoid": (True, True), "elu": (True, False)}


@dataclass(frozen=True)
class Activation:
    """One activation of a cell with its alpha/beta bound (compile-time constants)."""

    name: str
    alpha: float = 0.0
    beta: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.name}:{self.alpha!r}:{self.beta!r}"


def bind_activations(names: Sequence[str], alphas: Sequence[float], betas: Sequence[float]) -> tuple[Activation, ...] | None:
    """The activations as the reference kernel binds them (alpha/beta consumed in order by the
    activations that use them), or None when one has no native code."""
    alphas, betas = list(alphas), list(betas)
    out = []
    for raw in names:
        name = raw.lower()
        if name not in NATIVE_ACTIVATIONS:
            return None
        da, db = NATIVE_ACTIVATIONS[name]
        ua, ub = _USES.get(name, (False, False))
        a = float(alphas.pop(0)) if ua and alphas else da
        b = float(betas.pop(0)) if ub and betas else db
        out.append(Activation(name, a, b))
    return tuple(out)


def _activation_body(m: VectorMath, act: Activation, x: ir.Value) -> ir.Value:
    b = m.b
    zero, one = m.c(0.0), m.c(1.0)
    name, a, bb = act.name, act.alpha, act.beta
    if name == "sigmoid":
        return m.sigmoid(x)
    if name == "tanh":
        return m.tanh(x)
    if name == "relu":  # NaN passes: a compare with NaN is false
        return m.sel(m.lt(x, zero), zero, x)
    if name == "affine":
        return fmuladd(m.e, m.c(a), x, m.c(bb))
    if name == "leakyrelu":
        return m.sel(m.lt(x, zero), b.fmul(x, m.c(a)), x)
    if name == "thresholdedrelu":
        return m.sel(b.fcmp_unordered("ule", x, m.c(a)), zero, x)
    if name == "scaledtanh":
        return b.fmul(m.c(a), m.tanh(b.fmul(m.c(bb), x)))
    if name == "hardsigmoid":
        y = fmuladd(m.e, m.c(a), x, m.c(bb))
        y = m.sel(m.lt(y, zero), zero, y)
        return m.sel(m.gt(y, one), one, y)
    if name == "elu":
        neg = b.fmul(m.c(a), b.fsub(m.exp(m.sel(m.lt(x, zero), x, zero)), one))
        return m.sel(m.lt(x, zero), neg, x)
    if name == "softsign":
        return b.fdiv(x, b.fadd(one, m.abs(x)))
    if name == "softplus":
        return m.softplus(x)
    raise EmberError(f"ember: internal: no native RNN activation {name}")


def _activate(m: VectorMath, act: Activation, x: ir.Value) -> ir.Value:
    """``act(x)`` through one internal function per activation and module (the cell math calls
    each activation many times over: emitted once, the module builds and compiles faster)."""
    module, vt = m.e.module, m.vt
    name = f"act_{act.name}_{zlib.crc32(act.key.encode()):08x}_{m.lanes}"  # stable: the IR is a cache key
    try:
        fn = module.get_global(name)
    except KeyError:
        fn = Emitter.function(module, name, vt, [vt], internal=True)
        inner = Emitter(module, fn)
        inner.b.ret(_activation_body(VectorMath(inner, m.lanes), act, fn.args[0]))
    return m.b.call(fn, [x])


def _dpbf16(e: Emitter, acc: ir.Value, a: ir.Value, w: ir.Value) -> ir.Value:
    """``acc + a[2i] * w[2i] + a[2i + 1] * w[2i + 1]`` per lane (``vdpbf16ps``; a, w: i32 pairs)."""
    lanes = acc.type.count
    bt = vec(BF16, 2 * lanes)
    return e.call(f"llvm.x86.avx512bf16.dpbf16ps.{32 * lanes}", acc.type,
                  [acc, e.b.bitcast(a, bt), e.b.bitcast(w, bt)])


def _store_bf16(e: Emitter, v: ir.Value, ptr: ir.Value, j0: ir.Value, mask: ir.Value) -> None:
    """Lanes of ``v`` (zero past ``mask``) as bf16 at ``ptr[j0:]`` (the rows the bf16 products read)."""
    b = e.b
    v = b.select(mask, v, ir.Constant(v.type, None))
    b.store(b.fptrunc(v, vec(BF16, v.type.count)), e.gep(BF16, ptr, j0), align=2 * v.type.count)


# --------------------------------------------------------------------------- code generation
def _emit_init(m: ir.Module, prefix: str, lanes: int, cell: str, bf16: bool) -> None:
    """``rnn_init(ctx, d)``: direction ``d``'s initial states into its scratch rows, and its
    step counters zeroed."""
    fn = Emitter.function(m, f"{prefix}_rnn_init", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, RNN_CONTEXT)
    b = e.b
    d = fn.args[1]
    vt = vec(F32, lanes)
    hidden, hp, dirs = e.arg("hidden"), e.arg("hp"), e.arg("dirs")
    scratch = e.gep(F32, e.arg("scratch", PTR), b.mul(d, e.arg("sdir")))
    bh = b.mul(e.arg("batch"), hp)
    cbuf = e.gep(F32, scratch, b.mul(bh, c64(2)))
    has_c0 = b.icmp_unsigned("!=", b.and_(e.arg("flags"), c64(F_C0)), c64(0))
    nblocks = b.sdiv(hp, c64(lanes))
    with e.loop(0, e.arg("batch"), name="row") as row:
        src = b.mul(b.add(b.mul(row, dirs), d), hidden)
        h0 = e.gep(F32, e.arg("h0", PTR), src)
        c0 = e.gep(F32, e.arg("c0", PTR), src)
        sh = e.gep(F32, scratch, b.mul(row, hp))
        sc = e.gep(F32, cbuf, b.mul(row, hp))
        with e.loop(0, nblocks, name="jb") as jb:
            j0 = b.mul(jb, c64(lanes))
            mask = lane_mask(e, b.sub(hidden, j0), lanes)
            hv = masked_load(e, vt, e.gep(F32, h0, j0), mask)
            masked_store(e, hv, e.gep(F32, sh, j0), None)
            if bf16:  # the bf16 copy the products read: [h16 rows] after the five f32 areas
                _store_bf16(e, hv, e.gep(BF16, e.gep(F32, scratch, b.mul(bh, c64(5))), b.mul(row, hp)), j0, mask)
            if cell.startswith("lstm"):
                cv = e.var(vt, ir.Constant(vt, None))
                with b.if_then(has_c0):
                    b.store(masked_load(e, vt, e.gep(F32, c0, j0), mask), cv)
                masked_store(e, e.load(vt, cv), e.gep(F32, sc, j0), None)
    sync = e.gep(F32, scratch, e.arg("ssync"))
    with e.loop(0, b.mul(e.arg("nbt"), b.mul(b.add(nblocks, c64(1)), c64(SYNC_WORDS))), name="z") as i:
        b.store(c64(0), e.gep(I64, sync, i))
    b.ret_void()


def _emit_task(m: ir.Module, prefix: str, isa: Isa, cell: str, acts: tuple[Activation, ...], clip: bool,
               bf16: bool) -> None:
    lanes = isa.f32_lanes
    x86 = isa.triple.startswith(("x86_64", "i386", "i686"))
    fn = Emitter.function(m, f"{prefix}_rnn_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, RNN_CONTEXT)
    b = e.b
    task = fn.args[1]
    vt = vec(F32, lanes)
    mth = VectorMath(e, lanes)
    gx, passes = CELLS[cell]
    npass = len(passes)

    flags = e.arg("flags")

    def flag(bit: int) -> ir.Value:
        return b.icmp_unsigned("!=", b.and_(flags, c64(bit)), c64(0))

    hidden, hp, seq, dirs = e.arg("hidden"), e.arg("hp"), e.arg("seq"), e.arg("dirs")
    nbt, bpt, ns = e.arg("nbt"), e.arg("bpt"), e.arg("ns")
    group = b.sdiv(task, ns)
    part = b.srem(task, ns)
    d = b.sdiv(group, nbt)
    bt = b.srem(group, nbt)
    r0 = b.mul(bt, bpt)
    r1 = e.min(e.arg("batch"), b.add(r0, bpt))
    rev = b.icmp_unsigned("!=", b.and_(b.lshr(e.arg("reverse"), d), c64(1)), c64(0))
    f32p = lambda base, off: e.gep(F32, base, off)  # noqa: E731
    scratch = f32p(e.arg("scratch", PTR), b.mul(d, e.arg("sdir")))
    bh = b.mul(e.arg("batch"), hp)
    hbuf = [scratch, f32p(scratch, bh)]
    cbuf = f32p(scratch, b.mul(bh, c64(2)))
    zbuf = f32p(scratch, b.mul(bh, c64(3)))
    rhbuf = f32p(scratch, b.mul(bh, c64(4)))
    # bf16 copies of the rows the recurrent products read (h ping-pong, r * h), [batch][hp] each
    h16 = [f32p(scratch, b.mul(bh, c64(5))), e.gep(BF16, f32p(scratch, b.mul(bh, c64(5))), bh)]
    rh16 = f32p(scratch, b.mul(bh, c64(6)))
    kpairs = b.sdiv(b.add(hidden, c64(1)), c64(2))
    kdepth = kpairs if bf16 else hidden  # packed rows of R per block: k pairs (bf16) or k
    nblocks = b.sdiv(hp, c64(lanes))
    # step counters of this group: a done count, then one claim word per block (a line each)
    sync = e.gep(I64, f32p(scratch, e.arg("ssync")), b.mul(bt, b.mul(b.add(nblocks, c64(1)), c64(SYNC_WORDS))))
    done = sync
    rbase = f32p(e.arg("r", PTR), b.mul(d, e.arg("rdir")))
    rph2 = f32p(rbase, e.arg("rph"))
    rb = f32p(e.arg("rb", PTR), b.mul(d, hp))
    # ONNX LSTM: peephole weights i, f, o of this direction, hp floats each (in the rb words)
    peep, coupled = cell in ("lstm_p", "lstm_pf"), cell in ("lstm_f", "lstm_pf")
    peeps = f32p(e.arg("rb", PTR), b.mul(d, b.mul(hp, c64(3))))
    xw0 = f32p(e.arg("xw", PTR), b.mul(d, b.mul(c64(gx), hidden)))
    ldxw = e.arg("ldxw")
    y = e.arg("y", PTR)
    lens_p = e.arg("lens", PTR)
    clipv = e.splat(e.arg("clip", F32), lanes)
    nclipv = b.fneg(clipv)
    zero_v = ir.Constant(vt, None)

    def state_row(base: ir.Value, row: ir.Value) -> ir.Value:  # [batch, dirs, H]
        return f32p(base, b.mul(b.add(b.mul(row, dirs), d), hidden))

    def row_length(row: ir.Value) -> ir.Value:
        ln = e.var(I64, seq)
        with b.if_then(flag(F_LENS)):
            with b.if_else(flag(F_LENS64)) as (l64, l32):
                with l64:
                    b.store(e.load(I64, e.gep(I64, lens_p, row)), ln)
                with l32:
                    b.store(b.sext(e.load(I32, e.gep(I32, lens_p, row)), I64), ln)
        return e.min(e.max(e.load(I64, ln), c64(0)), seq)

    def clipped(v: ir.Value) -> ir.Value:
        if not clip:
            return v
        v = mth.sel(mth.lt(v, nclipv), nclipv, v)
        return mth.sel(mth.gt(v, clipv), clipv, v)

    def gemv(rows: list[ir.Value], packed: ir.Value, gp: int) -> list[list[ir.Value]]:
        """acc[m][g] = sum_k rows[m][k] * packed[k][g][:] over k < hidden."""
        mb = len(rows)
        unroll = 2 if 2 * mb * gp + gp + 1 <= _registers(lanes) else 1
        accs = [[[e.var(vt, zero_v) for _ in range(gp)] for _ in range(mb)] for _ in range(unroll)]

        vi = vec(I32, lanes)

        def kstep(k: ir.Value, u: int) -> None:
            wp = f32p(packed, b.mul(k, c64(gp * lanes)))
            if bf16:  # k is a pair of rows of R: bf16 pairs, two products per lane
                ws = [e.load(vi, f32p(wp, g * lanes), align=64) for g in range(gp)]
                for mi, rowp in enumerate(rows):
                    hk = e.splat(e.load(I32, e.gep(I32, rowp, k)), lanes)
                    for g in range(gp):
                        slot = accs[u][mi][g]
                        b.store(_dpbf16(e, e.load(vt, slot), hk, ws[g]), slot)
                return
            ws = [e.load(vt, f32p(wp, g * lanes), align=64) for g in range(gp)]
            for mi, rowp in enumerate(rows):
                hk = e.splat(e.load(F32, f32p(rowp, k)), lanes)
                for g in range(gp):
                    slot = accs[u][mi][g]
                    b.store(fmuladd(e, hk, ws[g], e.load(vt, slot)), slot)

        kmain = b.mul(b.sdiv(kdepth, c64(unroll)), c64(unroll))
        with e.loop(0, kmain, unroll, name="k") as k:
            for u in range(unroll):
                kstep(b.add(k, c64(u)) if u else k, u)
        if unroll > 1:
            with b.if_then(b.icmp_signed("<", kmain, kdepth)):
                kstep(kmain, 0)
        out = []
        for mi in range(mb):
            vals = []
            for g in range(gp):
                v = e.load(vt, accs[0][mi][g])
                for u in range(1, unroll):
                    v = b.fadd(v, e.load(vt, accs[u][mi][g]))
                vals.append(v)
            out.append(vals)
        return out

    def block(s: ir.Value, last: ir.Value, p: int, b0: ir.Value, mb: int, jb: ir.Value) -> None:
        """Pass ``p`` of step ``s`` over hidden block ``jb`` for rows ``b0 .. b0 + mb``."""
        cur = b.and_(s, c64(1))
        hprev_buf = b.select(b.icmp_signed("==", cur, c64(0)), hbuf[0], hbuf[1])
        hnext_buf = b.select(b.icmp_signed("==", cur, c64(0)), hbuf[1], hbuf[0])
        hprev16 = b.select(b.icmp_signed("==", cur, c64(0)), h16[0], h16[1])
        hnext16 = b.select(b.icmp_signed("==", cur, c64(0)), h16[1], h16[0])
        j0 = b.mul(jb, c64(lanes))
        mask = lane_mask(e, b.sub(hidden, j0), lanes)
        rows = []
        any_active = ir.Constant(ir.IntType(1), 0)
        for mi in range(mb):
            row = e.load(I64, e.gep(I64, order, b.add(b.sub(b0, r0), c64(mi))))
            length = row_length(row)
            active = b.icmp_signed("<", s, length)
            any_active = b.or_(any_active, active)
            pos = b.select(b.and_(rev, active), b.sub(b.sub(length, c64(1)), s), s)
            off = b.mul(row, hp)
            rows.append(dict(
                active=e.splat(active, lanes), ran=e.splat(b.icmp_signed(">", length, c64(0)), lanes),
                xw=f32p(xw0, b.mul(b.add(b.mul(row, seq), pos), ldxw)),
                hprev=f32p(hprev_buf, off), hnext=f32p(hnext_buf, off), c=f32p(cbuf, off),
                z=f32p(zbuf, off), rh=f32p(rhbuf, off),
                hprev16=e.gep(BF16, hprev16, off), hnext16=e.gep(BF16, hnext16, off), rh16=e.gep(BF16, rh16, off),
                ho=state_row(e.arg("ho", PTR), row), co=state_row(e.arg("co", PTR), row),
                y=f32p(y, b.mul(b.add(b.mul(b.add(b.mul(row, dirs), d), seq), pos), hidden))))

        def xw(rw: dict, g: int) -> ir.Value:
            return masked_load(e, vt, f32p(rw["xw"], b.add(b.mul(c64(g), hidden), j0)), mask)

        def final(rw: dict, out: ir.Value, value: ir.Value) -> None:
            """At the last step: a final state (zeros for a row of length 0)."""
            with b.if_then(last):
                masked_store(e, mth.sel(rw["ran"], value, zero_v), f32p(out, j0), mask)

        def finish(rw: dict, h_new: ir.Value, h_old: ir.Value) -> None:
            h = mth.sel(rw["active"], h_new, h_old)
            b.store(h, f32p(rw["hnext"], j0))
            if bf16:
                _store_bf16(e, h, rw["hnext16"], j0, mask)
            with b.if_then(flag(F_Y)):
                masked_store(e, mth.sel(rw["active"], h_new, zero_v), f32p(rw["y"], j0), mask)
            final(rw, rw["ho"], h)

        def lstm_c_final(rw: dict, c: ir.Value) -> None:
            with b.if_then(flag(F_CO)):
                final(rw, rw["co"], c)

        with b.if_else(any_active) as (busy, idle):
            with busy:
                if p == 0:
                    blk = f32p(rbase, b.mul(jb, b.mul(kdepth, c64(passes[0] * lanes))))
                    acc = gemv([rw["hprev16" if bf16 else "hprev"] for rw in rows], blk, passes[0])
                else:
                    blk = f32p(rph2, b.mul(jb, b.mul(kdepth, c64(lanes))))
                    acc = gemv([rw["rh16" if bf16 else "rh"] for rw in rows], blk, 1)
                for mi, rw in enumerate(rows):
                    h_old = e.load(vt, f32p(rw["hprev"], j0))
                    if cell.startswith("lstm"):
                        f_act, g_act, h_act = acts
                        gf, gi, gc, go = (b.fadd(acc[mi][g], xw(rw, g)) for g in range(4))
                        cp = f32p(rw["c"], j0)
                        c_old = e.load(vt, cp)
                        if peep:  # i and f see the old cell state, o the new one
                            gi = fmuladd(e, e.load(vt, f32p(peeps, j0)), c_old, gi)
                            gf = fmuladd(e, e.load(vt, f32p(peeps, b.add(hp, j0))), c_old, gf)
                        i_gate = _activate(mth, f_act, clipped(gi))
                        f_gate = b.fsub(e.splat(ir.Constant(F32, 1.0), lanes), i_gate) if coupled \
                            else _activate(mth, f_act, clipped(gf))
                        c_new = fmuladd(e, f_gate, c_old, b.fmul(i_gate, _activate(mth, g_act, clipped(gc))))
                        c_keep = mth.sel(rw["active"], c_new, c_old)
                        b.store(c_keep, cp)
                        lstm_c_final(rw, c_keep)
                        if peep:
                            go = fmuladd(e, e.load(vt, f32p(peeps, b.add(b.mul(hp, c64(2)), j0))), c_new, go)
                        h_new = b.fmul(_activate(mth, f_act, clipped(go)), _activate(mth, h_act, c_new))
                    elif cell == "rnn":
                        h_new = _activate(mth, acts[0], clipped(b.fadd(acc[mi][0], xw(rw, 0))))
                    elif cell == "gru_lbr":
                        f_act, g_act = acts
                        z = _activate(mth, f_act, clipped(b.fadd(acc[mi][0], xw(rw, 0))))
                        r = _activate(mth, f_act, clipped(b.fadd(acc[mi][1], xw(rw, 1))))
                        rh = b.fmul(r, b.fadd(acc[mi][2], e.load(vt, f32p(rb, j0))))
                        hh = _activate(mth, g_act, clipped(b.fadd(xw(rw, 2), rh)))
                        h_new = fmuladd(e, z, b.fsub(h_old, hh), hh)  # (1 - z) * hh + z * h
                    elif p == 0:  # gru, first pass: z and r * h
                        z = _activate(mth, acts[0], clipped(b.fadd(acc[mi][0], xw(rw, 0))))
                        r = _activate(mth, acts[0], clipped(b.fadd(acc[mi][1], xw(rw, 1))))
                        b.store(z, f32p(rw["z"], j0))
                        rh_v = b.fmul(r, h_old)
                        b.store(rh_v, f32p(rw["rh"], j0))
                        if bf16:
                            _store_bf16(e, rh_v, rw["rh16"], j0, mask)
                        continue
                    else:  # gru, second pass: h
                        z = e.load(vt, f32p(rw["z"], j0))
                        hh = _activate(mth, acts[1], clipped(b.fadd(acc[mi][0], xw(rw, 2))))
                        h_new = fmuladd(e, z, b.fsub(h_old, hh), hh)
                    finish(rw, h_new, h_old)
            with idle:  # no row of the tile runs this step: states stay, Y reads zero
                if p == npass - 1:
                    for rw in rows:
                        h_old = e.load(vt, f32p(rw["hprev"], j0))
                        finish(rw, h_old, h_old)
                        if cell.startswith("lstm"):
                            lstm_c_final(rw, e.load(vt, f32p(rw["c"], j0)))

    rows_max = tile_rows(lanes, max(passes))
    start = b.sdiv(b.mul(part, nblocks), ns)  # this task's own blocks come first (they stay in its cache)
    # a busy partner core makes every step wait for it: after a run that waited longer than it
    # worked, the group's other tasks sit out for a while (any mix of modes is correct: blocks
    # are claimed, never assigned)
    adapt = e.arg("adapt", PTR)
    t_begin = e.call("llvm.readcyclecounter", I64, [])
    solo_until = b.load_atomic(adapt, "monotonic", 8, typ=I64)
    with b.if_then(b.and_(b.icmp_signed(">", part, c64(0)), b.icmp_unsigned("<", t_begin, solo_until))):
        b.ret_void()
    waited = e.var(I64, c64(0))
    worked = e.var(I64, c64(0))
    # the group's rows in step order: rows still running first, then the rest (their tiles are idle)
    with b.goto_block(e.entry):  # (before the entry block's branch: llvmlite's goto_block)
        order = b.alloca(I64, size=e.max(bpt, c64(1)))
    with e.loop(0, seq, name="s") as s:
        last = b.icmp_signed("==", s, b.sub(seq, c64(1)))
        count = e.var(I64, c64(0))
        n_running = e.var(I64, c64(0))
        for want_active in (True, False):
            with e.loop(r0, r1, name="ord") as row:
                running = b.icmp_signed("<", s, row_length(row))
                with b.if_then(running if want_active else b.not_(running)):
                    n = e.load(I64, count)
                    b.store(row, e.gep(I64, order, n))
                    b.store(b.add(n, c64(1)), count)
            if want_active:
                b.store(e.load(I64, count), n_running)
        for p in range(npass):
            idx = b.add(b.mul(s, c64(npass)), c64(p))
            with e.loop(0, nblocks, name="q") as q:
                jb = b.add(start, q)
                jb = b.select(b.icmp_signed(">=", jb, nblocks), b.sub(jb, nblocks), jb)
                claim = e.gep(I64, sync, b.mul(b.add(jb, c64(1)), c64(SYNC_WORDS)))
                got = b.cmpxchg(claim, idx, b.add(idx, c64(1)), "acq_rel", "monotonic")
                with b.if_then(b.extract_value(got, 1)):
                    t0 = e.call("llvm.readcyclecounter", I64, [])
                    # tiles of running rows, then tiles of idle ones (never mixed)
                    split = b.add(r0, e.load(I64, n_running))
                    cursor = e.var(I64, r0)
                    hdr = fn.append_basic_block("bt.hdr")
                    body = fn.append_basic_block("bt.body")
                    out = fn.append_basic_block("bt.done")
                    b.branch(hdr)
                    b.position_at_end(hdr)
                    b0 = e.load(I64, cursor)
                    b.cbranch(b.icmp_signed("<", b0, r1), body, out)
                    b.position_at_end(body)
                    lim = b.select(b.icmp_signed("<", b0, split), split, r1)
                    mb = e.min(b.sub(lim, b0), c64(rows_max))
                    sw = b.switch(mb, fn.append_basic_block("mb.none"))
                    after = fn.append_basic_block("mb.after")
                    for k in range(1, rows_max + 1):
                        blk = fn.append_basic_block(f"mb.{k}")
                        sw.add_case(c64(k), blk)
                        b.position_at_end(blk)
                        block(s, last, p, b0, k, jb)
                        b.branch(after)
                    b.position_at_end(sw.default)
                    b.branch(after)
                    b.position_at_end(after)
                    b.store(b.add(b0, mb), cursor)
                    b.branch(hdr)
                    b.position_at_end(out)
                    b.atomic_rmw("add", done, c64(1), "seq_cst")
                    t1 = e.call("llvm.readcyclecounter", I64, [])
                    b.store(b.add(e.load(I64, worked), b.sub(t1, t0)), worked)
            # every block of this pass must be done before the next reads its states
            target = b.mul(b.add(idx, c64(1)), nblocks)
            t_wait = e.call("llvm.readcyclecounter", I64, [])
            wait = fn.append_basic_block("wait")
            spin = fn.append_basic_block("wait.spin")
            ready = fn.append_basic_block("wait.done")
            b.branch(wait)
            b.position_at_end(wait)
            now = b.load_atomic(done, "acquire", 8, typ=I64)
            b.cbranch(b.icmp_signed(">=", now, target), ready, spin)
            b.position_at_end(spin)
            if x86:
                e.call("llvm.x86.sse2.pause", VOID, [])
            b.branch(wait)
            b.position_at_end(ready)
            t_ready = e.call("llvm.readcyclecounter", I64, [])
            b.store(b.add(e.load(I64, waited), b.sub(t_ready, t_wait)), waited)
    with b.if_then(b.and_(b.icmp_signed(">", ns, c64(1)),
                          b.icmp_signed(">", e.load(I64, waited), e.load(I64, worked)))):
        e.store_atomic(b.add(e.call("llvm.readcyclecounter", I64, []), c64(SOLO_TICKS)), adapt, "monotonic")
    b.ret_void()


def _build(prefix: str, isa: Isa, cell: str, acts: tuple[Activation, ...], clip: bool, bf16: bool) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_init(m, prefix, isa.f32_lanes, cell, bf16)
    _emit_task(m, prefix, isa, cell, acts, clip, bf16)
    return m


@functools.cache
def _library(isa: Isa, cell: str, acts: tuple[Activation, ...], clip: bool, bf16: bool = False) -> jit.Library:
    sig = f"rnn|{cell}|{','.join(a.key for a in acts)}|{int(clip)}|{int(bf16)}|{isa.level}"
    return jit.load(sig, isa, lambda p: _build(p, isa, cell, acts, clip, bf16))


# --------------------------------------------------------------------------- host side
def _pack_recurrent(r: np.ndarray, gates: Sequence[int], hidden: int, lanes: int, bf16: bool = False) -> np.ndarray:
    """``r[G * H, H]`` -> ``[block][k][gate][lanes]`` floats for the gates of one pass (zero
    padded); bf16: ``[block][k / 2][gate][lanes][2]`` bf16 pairs, as uint32 words."""
    nb = -(-hidden // lanes)
    gp = len(gates)
    rg = r.reshape(-1, hidden, hidden)[list(gates)]  # [gp, out, in]
    if not bf16:
        pad = np.zeros((gp, nb * lanes, hidden), np.float32)
        pad[:, :hidden] = rg
        return pad.reshape(gp, nb, lanes, hidden).transpose(1, 3, 0, 2).reshape(-1)
    kp = -(-hidden // 2)
    pad = np.zeros((gp, nb * lanes, 2 * kp), np.float32)
    pad[:, :hidden, :hidden] = rg
    pairs = pad.reshape(gp, nb, lanes, kp, 2).transpose(1, 3, 0, 2, 4)  # [nb, kp, gp, lanes, 2]
    return np.ascontiguousarray(to_bf16_bits(pairs)).view(np.uint32).reshape(-1)


class Recurrent:
    """A recurrent sequence (or cell, ``seq == 1``) with its weights packed once.

    ``w[dirs, gates * H, I]``, ``r[dirs, gates * H, H]``, ``bias[dirs, gates * H]`` (GRU with
    ``linear_before_reset``: ``4 * H``) as OpenVINO orders them (gates f, i, c, o for LSTM;
    cells ``lstm_p``/``lstm_pf`` take ``peepholes[dirs, 3 * H]`` ordered i, f, o, and
    ``lstm_f``/``lstm_pf`` couple the gates, f = 1 - i, as ONNX LSTM does); ``reverse[d]`` says whether
    direction ``d`` runs backwards. ``precision`` (``"f32"`` or ``"bf16"``) is the arithmetic of
    the input projection, and of the recurrent products where they stream their weights. :meth:`bind` gives the kernel calls (input projection, initial
    states, time loop) for one set of buffers.
    """

    def __init__(self, cell: str, w: np.ndarray, r: np.ndarray, bias: np.ndarray, hidden: int,
                 reverse: Sequence[bool], batch: int, seq: int, acts: tuple[Activation, ...], clip: float,
                 threads: int, isa: Isa | None = None, precision: str = "f32",
                 peepholes: np.ndarray | None = None) -> None:
        self.isa = isa or host_isa()
        #: bf16 recurrent products (``precision="bf16"`` on a CPU with AVX512_BF16) where a step
        #: streams its weights (batch 1, or R beyond 1 MB): half the bytes. With several rows per
        #: weight pass a step is bound by arithmetic, where vdpbf16ps gains nothing over FMA.
        #: The states and the cell math stay f32.
        self.bf16 = precision == "bf16" and bf16_supported(self.isa) and (
            batch == 1 or CELLS[cell][0] * hidden * hidden * 4 > BF16_MIN_R_BYTES)
        self.cell, self.hidden, self.batch, self.seq = cell, hidden, batch, seq
        self.dirs = len(reverse)
        self.reverse = tuple(bool(x) for x in reverse)
        self.threads = max(1, threads)
        self.clip = float(clip)
        self.acts = acts
        lanes = self.isa.f32_lanes
        self.lanes = lanes
        self.hp = -(-hidden // lanes) * lanes
        gx, passes = CELLS[cell]
        self.gx = gx
        w = np.asarray(w, np.float32)
        r = np.asarray(r, np.float32)
        bias = np.asarray(bias, np.float32).reshape(self.dirs, -1)
        self.input_size = int(w.shape[-1])
        n = self.dirs * gx * hidden
        self.ldxw = n
        self.bias = np.ascontiguousarray(bias[:, :gx * hidden].reshape(-1))
        # the projection follows the compile precision (bf16 when asked for); the recurrence stays f32
        self.gemm = Gemm(pack_b(np.ascontiguousarray(w.reshape(n, self.input_size).T), self.isa, precision=precision),
                         batch * seq, Epilogue(), num_threads=self.threads)
        # recurrent weights, gate-interleaved per pass
        if cell == "gru":
            groups = [(0, 1), (2,)]
        else:
            groups = [tuple(range(gx))]
        per_dir = []
        for d in range(self.dirs):
            per_dir.append([_pack_recurrent(r[d], gs, hidden, lanes, self.bf16) for gs in groups])
        self.rph = per_dir[0][0].size
        self.rdir = sum(p.size for p in per_dir[0])
        rp = aligned_empty(max(self.rdir * self.dirs, 1), np.uint32 if self.bf16 else np.float32)
        for d, parts in enumerate(per_dir):
            rp[d * self.rdir:(d + 1) * self.rdir] = np.concatenate(parts) if parts else []
        self.packed_r = rp
        rbh = np.zeros((self.dirs, self.hp), np.float32)
        if cell == "gru_lbr":
            rbh[:, :hidden] = bias[:, 3 * hidden:4 * hidden]
        if cell in ("lstm_p", "lstm_pf"):  # peepholes [dirs, 3 * H] (i, f, o), one padded row each
            if peepholes is None:
                raise EmberError("ember: internal: an LSTM with peepholes needs their weights")
            rbh = np.zeros((self.dirs, 3, self.hp), np.float32)
            rbh[:, :, :hidden] = np.asarray(peepholes, np.float32).reshape(self.dirs, 3, hidden)
            rbh = rbh.reshape(self.dirs, 3 * self.hp)
        self.rbh = rbh
        # task groups: one per direction and block of batch rows (independent); a group's time
        # loop is split over `ns` tasks sharing its hidden blocks when threads are left over
        # and a step is long enough to pay for the per-step wait
        # and a step is long enough to pay for the per-step wait. Rows of one tile share a pass
        # over R, so batch rows split over threads by whole tiles only (a step streams R from
        # cache: splitting a tile's rows would stream it twice); hidden blocks split without that cost
        per_dir_threads = max(1, self.threads // self.dirs)
        rows = tile_rows(lanes, max(passes))
        tiles = -(-batch // rows)
        self.nbt = min(per_dir_threads, tiles)
        self.bpt = rows * -(-tiles // self.nbt)
        self.nbt = -(-batch // self.bpt)
        nblocks = self.hp // lanes
        step_macs = self.gx * hidden * hidden * min(self.bpt, batch)
        self.ns = 1
        if per_dir_threads > self.nbt and step_macs >= SPLIT_MIN_MACS:
            self.ns = max(1, min(per_dir_threads // self.nbt, nblocks // 2))
        states = -(-7 * batch * self.hp // 16) * 16  # five f32 areas, then the bf16 rows
        self.ssync = states
        self.sdir = states + self.nbt * (nblocks + 1) * SYNC_WORDS * 2
        self._library = _library(self.isa, cell, acts, self.clip > 0, self.bf16)

    @property
    def xw_floats(self) -> int:
        """Scratch floats of the input projection (``batch * seq * dirs * gates * H``)."""
        return self.batch * self.seq * self.ldxw

    @property
    def scratch_floats(self) -> int:
        """All scratch floats :meth:`bind` needs: the projection, then the states."""
        return self.xw_floats + 16 + self.dirs * self.sdir

    def bind(self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray | None, lens: np.ndarray | None,
             y: np.ndarray | None, ho: np.ndarray, co: np.ndarray | None, scratch: np.ndarray) -> list[BoundKernel]:
        """The kernel calls over these buffers: ``x[batch, seq, I]`` (or ``[batch, I]``),
        states ``[batch, dirs, H]`` (or ``[batch, H]``), ``lens[batch]`` int32/int64 or None,
        ``y[batch, dirs, seq, H]`` or None, ``scratch`` a float32 vector of
        :attr:`scratch_floats`. All contiguous."""
        for name, a in (("x", x), ("h0", h0), ("c0", c0), ("y", y), ("ho", ho), ("co", co), ("lens", lens),
                        ("scratch", scratch)):
            if a is not None and not a.flags.c_contiguous:
                raise EmberError(f"ember: internal: RNN buffer {name} must be contiguous")
        if scratch.size < self.scratch_floats:
            raise EmberError("ember: internal: RNN scratch too small")
        xw = scratch[:self.xw_floats].reshape(self.batch * self.seq, self.ldxw)
        states = scratch[self.xw_floats:]
        states = states[(-states.ctypes.data // 4) % 16:]
        proj = self.gemm.bind(x.reshape(self.batch * self.seq, self.input_size), xw, self.bias)
        flags = (F_C0 if c0 is not None else 0) | (F_Y if y is not None else 0) | (F_CO if co is not None else 0)
        if lens is not None:
            flags |= F_LENS | (F_LENS64 if lens.dtype.itemsize == 8 else 0)
        adapt = aligned_empty(8, np.int64)  # this binding's own: [0] = solo until (cycle counter)
        adapt[:] = 0
        ctx = RNN_CONTEXT.new(adapt=adapt.ctypes.data,
            xw=xw.ctypes.data, ldxw=self.ldxw, h0=h0.ctypes.data, c0=0 if c0 is None else c0.ctypes.data,
            lens=0 if lens is None else lens.ctypes.data, r=self.packed_r.ctypes.data, rdir=self.rdir,
            rph=self.rph, rb=self.rbh.ctypes.data, y=0 if y is None else y.ctypes.data, ho=ho.ctypes.data,
            co=0 if co is None else co.ctypes.data, scratch=states.ctypes.data, sdir=self.sdir, ssync=self.ssync,
            batch=self.batch, seq=self.seq, hidden=self.hidden, hp=self.hp, dirs=self.dirs,
            reverse=sum(1 << d for d, rv in enumerate(self.reverse) if rv), bpt=self.bpt, nbt=self.nbt, ns=self.ns,
            clip=f32_bits(self.clip if self.clip > 0 else math.inf), flags=flags)
        keep = (self.packed_r, self.rbh, x, h0, c0, lens, y, ho, co, scratch, adapt)
        init = BoundKernel(self._library.address("rnn_init"), ctx.copy(), self.dirs, self.threads, keep,
                           layout=RNN_CONTEXT)
        loop = BoundKernel(self._library.address("rnn_task"), ctx, self.dirs * self.nbt * self.ns, self.threads,
                           keep, layout=RNN_CONTEXT)
        return [proj, init, loop]
