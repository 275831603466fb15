"""A native worker pool generated in LLVM IR.

Workers are native threads (``pthread_create`` from libc) that never touch Python. A job is
``parallel_for(pool, fn, ctx, n_tasks, n_threads)``: ``fn(ctx, task)`` runs once for every
``task`` in ``range(n_tasks)``; tasks are handed out one at a time from an atomic counter, so
a thread that was descheduled simply takes fewer of them. The calling thread takes part. The
caller takes tasks from the front (0, 1, ...) and the workers from the back (n - 1, n - 2, ...)
until they meet (:attr:`ThreadPool.tasks_from_ends`): on two threads each keeps the same end of
every job, so consecutive layers split by rows read mostly rows their own core wrote (a shared
counter handed them out alternately).

A worker *joins* a job before it takes tasks (one atomic step on the job's state word, which
holds the job number, a closed flag and the count of workers inside); when the caller has run
out of tasks it *closes* the job and waits only for the workers that joined and are still in a
task. A worker whose core is busy elsewhere and that wakes after the caller did all the work
finds the job closed and goes back to sleep: on a busy machine the caller never waits for a
worker to be scheduled, only for one that was descheduled in the middle of a task (and when
that keeps happening, the pool runs jobs on the caller alone for a while, longer each time it
happens again right after).

Waiting, both for work (workers) and for stragglers (the caller), spins on ``pause`` for a
short while (``spin_us``, default 100 microseconds) and then sleeps on a Linux futex, so an
idle pool costs no CPU time. A plan's run tells the pool when it starts (:meth:`ThreadPool.adapt`)
and ends (:meth:`ThreadPool.finished`): during a run the workers spin up to ``MAX_SPIN_US``
(1 ms) between jobs, and after it as long as the recent gaps between runs suggest (twice the
median gap, at most ``MAX_SPIN_US``; :func:`spin_budget_us`), so while inferences come back to
back a run's first jobs find them awake. A busy machine (see below) keeps ``spin_us``.

A worker still inside a job ``RESCUE_MS`` after the caller ran out of tasks is, on a loaded
machine, usually descheduled behind another process on its own CPU, where a pinned worker
must wait out that process's time slice (tens of milliseconds were seen). The caller then
moves it to its own CPU (``pthread_setaffinity_np``) before it sleeps, so the worker resumes
there at once; the worker moves back to its own CPUs (its *home* mask) as it leaves the job
(:attr:`ThreadPool.rescues` counts). Each worker has its own futex word: a job wakes only the
workers it uses. If the pool is busy (another Python thread's job, or a nested call from a
task), ``parallel_for`` runs the tasks on the calling thread instead of waiting.
:meth:`ThreadPool.wake` wakes the workers without a job: a plan calls it as an inference
starts, so the futex wake-up (tens of microseconds on an idle core) overlaps the Python work
before the first kernel instead of delaying the first job's workers.
:meth:`ThreadPool.stats` counts jobs, futex wake-ups and the time callers waited for workers
(``benchmarks/op_coverage.py --diagnose`` reports them per inference).

Workers are pinned, each to its own CPU, while the machine is quiet: a worker woken after a
long idle spell otherwise tends to land on its waker's CPU, and the next milliseconds of jobs
run at single-thread speed (measured: a BERT layer stack after 100 ms idle took 10-12 ms
unpinned, 6 ms pinned, 5.6 ms back to back). On a busy machine a pinned worker waits in its
own CPU's run queue behind other processes (op-coverage networks once ran 1.2-1.7x slower than
on one thread that way), so :meth:`ThreadPool.adapt` (called by a plan at each run) judges
the load every ``SAMPLE_EVERY_S`` (25 ms) from the last ~100 ms of the machine's counters
(:class:`LoadJudge`: the cores other processes used, ``/proc/stat`` minus this process's CPU
time; threads of this process, such as another engine's spinning workers, do not count): busy,
a :class:`ModeChooser` picks each run's mode (parallel, or serial on the caller alone); quiet
again, runs go parallel at once. The workers stay pinned while busy (:data:`UNPIN_WHEN_BUSY`:
since the chooser falls back to serial runs, letting them roam only lost the share of the busy
CPU a pinned worker gets). The counters do not need the workers to run, so a serial spell ends within
about 100 ms of the other process leaving. Where /proc/stat cannot be read, the workers' own
involuntary context switches per CPU-second they use decide (``BUSY_PREEMPTIONS``,
``QUIET_PREEMPTIONS``, over longer windows). ``EMBER_PIN_THREADS=0``/``1`` (or ``pin=``)
fixes the pinning.

Compiled models share pools: :func:`lease_pool` gives each model (each stream) a
:class:`PoolLease` on the process's pool for its thread count and pinning (OpenVINO's models
share one TBB arena the same way), so a second compile starts no thread and a model run right
after another finds the workers awake. The lease keeps what is one model's (its
:class:`ModeChooser`, its ``serial`` setting); the load judgement, pinning and spin are the
pool's. ``EMBER_SHARE_POOLS=0`` gives every lease a pool of its own (A/B runs).

Calling :meth:`ThreadPool.parallel_for` from Python is one ctypes call that releases the GIL.
Native code (a plan runner) can call the ``parallel_for`` function at
:attr:`ThreadPool.parallel_for_address` directly with :attr:`ThreadPool.handle`.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import platform
import resource
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import I32, I64, PTR, VOID, Emitter, c32, c64
from ember.devices.cpu.llvm.isa import host_isa
from ember.errors import EmberError

# Pool state: a 64-byte aligned block of i64 words. Hot, shared fields sit on their own
# cache lines (8 words). Worker w's private line starts at word _W0 + 8 * w.
_GEN = 0          # unused by workers; keeps line 0 cold
_FN, _CTX, _NTASKS = 8, 9, 10
_NEXT = 16        # atomic task counter
_STATE = 24       # job state: job number << 32 | CLOSED | workers inside (low half: the caller's futex)
_CALLER_WAITS = 25
_BUSY = 32        # i64 lock word taken by the caller for a job
_SHUTDOWN = 33
_NWORKERS = 34
_SPIN = 35        # pause iterations before sleeping
_STRAGGLE = 36    # consecutive jobs whose caller waited longer than it worked
_SERIAL_UNTIL = 37  # cycle-counter deadline: until then jobs run on the caller alone
_BACKOFF = 38     # ticks to stay serial after repeated straggling
_MIN_WAIT = 39    # waits shorter than this many ticks never count as straggling
_FALLBACKS = 40   # times the pool went serial (for tests and profiling)
_BACKOFF_MAX = 41  # the longest serial spell, in ticks
_BACKOFF_CUR = 42  # the next serial spell (doubles when straggling resumes right after one)
_CALM = 43        # parallel jobs in a row without straggling (resets the spell length)
# counters (read by PoolStats): parallel jobs; worker wake-ups that needed a futex wake (the
# worker was asleep); cycle-counter ticks callers spent waiting for workers after their own
# tasks; jobs run on the caller alone because of a serial spell or a busy pool
_JOBS, _WAKES, _WAIT_TICKS, _SERIAL_JOBS = 44, 45, 46, 47
_FORCED_SERIAL = 48  # nonzero: every job runs on the caller alone (ThreadPool.serial)
_CALLER_SPIN = 49  # pause iterations the caller spins for stragglers before it sleeps (_SPIN: workers)
_RESCUE_NS = 50   # nanoseconds a caller waits for stragglers before it moves them to its own CPU (0: never)
_RESCUES = 51     # workers moved so (counter)
_RESCUE_TICKS = 52  # _RESCUE_NS in cycle-counter ticks
_FROM_BACK = 53   # nonzero: workers take tasks from the back (n-1, n-2, ...), the caller from the front
_CLOSED = 1 << 31
_COUNT_MASK = _CLOSED - 1
_W0 = 64          # per worker: [gen (i32 futex) | sleeping | pool ptr | id | thread handle | rescued |
_WSTRIDE = 16     #   inside a job | home affinity mask (pointer, 0: none)], then on a second line: [tid]
_W_GEN, _W_SLEEPING, _W_POOL, _W_ID, _W_THREAD, _W_RESCUED, _W_INSIDE, _W_HOME, _W_TID = range(9)
#: bytes of a CPU mask as the affinity calls take it (glibc's cpu_set_t: 1024 CPUs)
MASK_BYTES = 128

_FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 128, 129
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98, "ppc64le": 221,
              "s390x": 238}

TASK_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)


#: gettid's system call number (glibc's gettid() wrapper only exists since 2.30)
_SYS_GETTID = {"x86_64": 186, "amd64": 186, "aarch64": 178, "arm64": 178, "riscv64": 178, "ppc64le": 207,
               "s390x": 236}


def _futex_number() -> int:
    if sys.platform != "linux":
        raise EmberError(f"ember: the native thread pool needs Linux futexes; this is {sys.platform}")
    nr = _SYS_FUTEX.get(platform.machine().lower())
    if nr is None:
        raise EmberError(f"ember: unknown futex syscall number for {platform.machine()}")
    return nr


def _build(prefix: str, triple: str, sys_futex: int, little_endian: bool = True, sys_gettid: int = 0) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = triple
    x86 = triple.startswith(("x86_64", "i386", "i686"))
    task_ptr = ir.PointerType(ir.FunctionType(VOID, [PTR, I64]))

    def word(e: Emitter, base: ir.Value, i: int | ir.Value) -> ir.Value:
        return e.gep(I64, base, i)

    def pause(e: Emitter) -> None:
        if x86:
            e.call("llvm.x86.sse2.pause", VOID, [])

    def futex(e: Emitter, addr: ir.Value, op: int, val: ir.Value, timeout: ir.Value | None = None) -> None:
        fn = e.declare("syscall", I64, [I64], var_arg=True)
        e.b.call(fn, [c64(sys_futex), addr, c32(op), val, timeout or ir.Constant(PTR, None), ir.Constant(PTR, None),
                      c32(0)])

    def set_affinity(e: Emitter, thread: ir.Value, mask: ir.Value) -> None:
        fn = e.declare("pthread_setaffinity_np", I32, [I64, I64, PTR])
        e.b.call(fn, [thread, c64(MASK_BYTES), mask])

    def wait_change(e: Emitter, pool: ir.Value, addr: ir.Value, old: ir.Value, flag: ir.Value) -> ir.Value:
        """Spin (``_SPIN`` pauses), then futex-sleep, until the i32 at addr differs from old;
        returns the new value. flag (an i64 word) is 1 while sleeping so wakers know to call
        futex_wake."""
        b = e.b
        spin_limit = b.load_atomic(word(e, pool, _SPIN), "monotonic", 8, typ=I64)  # Python adapts it
        spins = e.var(I64, c64(0))
        hdr = e.fn.append_basic_block("wait.hdr")
        spin = e.fn.append_basic_block("wait.spin")
        sleep = e.fn.append_basic_block("wait.sleep")
        done = e.fn.append_basic_block("wait.done")
        b.branch(hdr)
        b.position_at_end(hdr)
        cur = b.load_atomic(addr, "acquire", 4, typ=I32)
        b.cbranch(b.icmp_unsigned("!=", cur, old), done, spin)
        b.position_at_end(spin)
        n = e.load(I64, spins)
        b.store(b.add(n, c64(1)), spins)
        spin2 = e.fn.append_basic_block("wait.pause")
        b.cbranch(b.icmp_signed(">=", n, spin_limit), sleep, spin2)
        b.position_at_end(spin2)
        pause(e)
        b.branch(hdr)
        b.position_at_end(sleep)
        e.store_atomic(c64(1), flag, "seq_cst")
        again = b.load_atomic(addr, "seq_cst", 4, typ=I32)
        with b.if_then(b.icmp_unsigned("==", again, old)):
            futex(e, addr, _FUTEX_WAIT_PRIVATE, old)
        e.store_atomic(c64(0), flag, "seq_cst")
        b.store(c64(0), spins)
        b.branch(hdr)
        b.position_at_end(done)
        return cur

    def state_low(e: Emitter, pool: ir.Value) -> ir.Value:
        """The 32-bit half of the state word holding the closed flag and the count (a futex)."""
        return e.gep(I32, pool, _STATE * 2 + (0 if little_endian else 1))

    def ticks(e: Emitter) -> ir.Value:
        return e.call("llvm.readcyclecounter", I64, [])

    def run_tasks(e: Emitter, pool: ir.Value, fnp: ir.Value, ctx: ir.Value, n: ir.Value,
                  count: ir.Value | None = None) -> None:
        """Take tasks until none is left; ``count`` (an i64 variable) counts the ones taken."""
        b = e.b
        hdr = e.fn.append_basic_block("tasks.hdr")
        body = e.fn.append_basic_block("tasks.body")
        done = e.fn.append_basic_block("tasks.done")
        b.branch(hdr)
        b.position_at_end(hdr)
        # _NEXT counts the tasks taken from the front (low half) and from the back (high half);
        # a claim is good while the two together are below n. The caller takes from the front,
        # workers from the back when _FROM_BACK is set: on two threads each keeps the same end
        # of every job (the same rows from layer to layer), the middle balanced dynamically.
        back = c64(0) if count is not None else b.zext(
            b.icmp_signed("!=", e.load(I64, word(e, pool, _FROM_BACK)), c64(0)), I64)
        step = b.select(b.icmp_signed("!=", back, c64(0)), c64(1 << 32), c64(1))
        old = b.atomic_rmw("add", word(e, pool, _NEXT), step, "monotonic")
        lo, hi = b.and_(old, c64(0xFFFFFFFF)), b.lshr(old, c64(32))
        t = b.select(b.icmp_signed("!=", back, c64(0)), b.sub(b.sub(n, c64(1)), hi), lo)
        b.cbranch(b.icmp_signed("<", b.add(lo, hi), n), body, done)
        b.position_at_end(body)
        b.call(fnp, [ctx, t])
        if count is not None:
            b.store(b.add(e.load(I64, count), c64(1)), count)
        b.branch(hdr)
        b.position_at_end(done)

    # ---- worker thread: void* worker_main(void* wline)
    fn = Emitter.function(m, f"{prefix}_worker_main", PTR, [PTR])
    e = Emitter(m, fn)
    b = e.b
    wl = fn.args[0]
    pool = e.load(PTR, word(e, wl, _W_POOL))
    gen_addr = word(e, wl, _W_GEN)
    local = e.var(I32, c32(0))  # the state starts zeroed; a wake may come before we run
    if sys_gettid > 0:
        sc = e.declare("syscall", I64, [I64], var_arg=True)
        e.store_atomic(b.call(sc, [c64(sys_gettid)]), word(e, wl, _W_TID), "release")
    top = fn.append_basic_block("top")
    quit_ = fn.append_basic_block("quit")
    b.branch(top)
    b.position_at_end(top)
    # moved to a caller's CPU while it waited for this worker (a rescue): back to its own CPUs
    rescued = b.load_atomic(word(e, wl, _W_RESCUED), "acquire", 8, typ=I64)
    with b.if_then(b.icmp_signed("!=", rescued, c64(0))):
        e.store_atomic(c64(0), word(e, wl, _W_RESCUED), "seq_cst")
        home = e.load(PTR, word(e, wl, _W_HOME))
        with b.if_then(b.icmp_unsigned("!=", b.ptrtoint(home, I64), c64(0))):
            set_affinity(e, e.call("pthread_self", I64, []), home)
    cur = wait_change(e, pool, gen_addr, e.load(I32, local), word(e, wl, _W_SLEEPING))
    b.store(cur, local)
    stop = b.load_atomic(word(e, pool, _SHUTDOWN), "acquire", 8, typ=I64)
    work = fn.append_basic_block("work")
    b.cbranch(b.icmp_signed("!=", stop, c64(0)), quit_, work)
    b.position_at_end(work)
    # join the open job (if any): state + 1 while it is open and still the same job
    state = word(e, pool, _STATE)
    seen = e.var(I64, b.load_atomic(state, "acquire", 8, typ=I64))
    join_hdr = fn.append_basic_block("join.hdr")
    join_try = fn.append_basic_block("join.try")
    joined = fn.append_basic_block("joined")
    b.branch(join_hdr)
    b.position_at_end(join_hdr)
    st = e.load(I64, seen)
    is_closed = b.icmp_unsigned("!=", b.and_(st, c64(_CLOSED)), c64(0))
    b.cbranch(is_closed, top, join_try)
    b.position_at_end(join_try)
    res = b.cmpxchg(state, st, b.add(st, c64(1)), "acq_rel", "acquire")
    b.store(b.extract_value(res, 0), seen)
    b.cbranch(b.extract_value(res, 1), joined, join_hdr)
    b.position_at_end(joined)
    e.store_atomic(c64(1), word(e, wl, _W_INSIDE), "seq_cst")
    fnp = e.load(task_ptr, word(e, pool, _FN))
    ctx = e.load(PTR, word(e, pool, _CTX))
    n = e.load(I64, word(e, pool, _NTASKS))
    run_tasks(e, pool, fnp, ctx, n)
    e.store_atomic(c64(0), word(e, wl, _W_INSIDE), "seq_cst")
    old = b.atomic_rmw("sub", state, c64(1), "seq_cst")
    low = b.and_(b.sub(old, c64(1)), c64(0xFFFFFFFF))
    with b.if_then(b.icmp_unsigned("==", low, c64(_CLOSED))):  # closed, and the last one out
        waits = b.load_atomic(word(e, pool, _CALLER_WAITS), "seq_cst", 8, typ=I64)
        with b.if_then(b.icmp_signed("!=", waits, c64(0))):
            futex(e, state_low(e, pool), _FUTEX_WAKE_PRIVATE, c32(1))
    b.branch(top)
    b.position_at_end(quit_)
    b.ret(ir.Constant(PTR, None))

    def wake_worker(e: Emitter, pool: ir.Value, i: ir.Value, count: bool = False) -> None:
        b = e.b
        line = word(e, pool, b.add(c64(_W0), b.mul(i, c64(_WSTRIDE))))
        b.atomic_rmw("add", word(e, line, _W_GEN), c32(1), "seq_cst")
        sleeping = b.load_atomic(word(e, line, _W_SLEEPING), "seq_cst", 8, typ=I64)
        with b.if_then(b.icmp_signed("!=", sleeping, c64(0))):
            futex(e, word(e, line, _W_GEN), _FUTEX_WAKE_PRIVATE, c32(1))
            if count:
                b.atomic_rmw("add", word(e, pool, _WAKES), c64(1), "monotonic")

    # ---- void parallel_for(pool, fn, ctx, n_tasks, n_threads)
    fn = Emitter.function(m, f"{prefix}_parallel_for", VOID, [PTR, task_ptr, PTR, I64, I64])
    e = Emitter(m, fn)
    b = e.b
    pool, fnp, ctx, n, nthreads = fn.args
    serial = fn.append_basic_block("serial")
    try_lock = fn.append_basic_block("try_lock")
    par = fn.append_basic_block("parallel")
    nw = e.min(e.min(b.sub(nthreads, c64(1)), e.load(I64, word(e, pool, _NWORKERS))), b.sub(n, c64(1)))
    check_clock = fn.append_basic_block("check_clock")
    b.cbranch(b.icmp_signed("<=", nw, c64(0)), serial, check_clock)
    b.position_at_end(check_clock)
    t_start = ticks(e)
    backing_off = b.or_(b.icmp_unsigned("<", t_start, e.load(I64, word(e, pool, _SERIAL_UNTIL))),
                        b.icmp_signed("!=", e.load(I64, word(e, pool, _FORCED_SERIAL)), c64(0)))
    held_back = fn.append_basic_block("held_back")
    b.cbranch(backing_off, held_back, try_lock)
    b.position_at_end(try_lock)
    got = b.cmpxchg(word(e, pool, _BUSY), c64(0), c64(1), "acquire", "monotonic")
    b.cbranch(b.extract_value(got, 1), par, held_back)
    b.position_at_end(held_back)
    b.atomic_rmw("add", word(e, pool, _SERIAL_JOBS), c64(1), "monotonic")
    b.branch(serial)
    b.position_at_end(serial)
    with e.loop(0, n, name="t") as t:
        b.call(fnp, [ctx, t])
    b.ret_void()
    b.position_at_end(par)
    b.store(fnp, word(e, pool, _FN))
    b.store(ctx, word(e, pool, _CTX))
    b.store(n, word(e, pool, _NTASKS))
    e.store_atomic(c64(0), word(e, pool, _NEXT), "release")
    # open job k+1 (the previous one is closed and empty: its caller waited for that)
    state = word(e, pool, _STATE)
    prev = b.load_atomic(state, "acquire", 8, typ=I64)
    job = b.add(b.and_(prev, c64(~0xFFFFFFFF)), c64(1 << 32))
    e.store_atomic(job, state, "seq_cst")
    with e.loop(0, nw, name="w") as i:
        wake_worker(e, pool, i, count=True)
    own_tasks = e.var(I64, c64(0))
    run_tasks(e, pool, fnp, ctx, n, own_tasks)
    t_own = ticks(e)
    # close it; wait only for the workers that joined and are still inside
    old = b.atomic_rmw("or", state, c64(_CLOSED), "seq_cst")
    with b.if_then(b.icmp_unsigned("!=", b.and_(old, c64(_COUNT_MASK)), c64(0))):
        low_addr = state_low(e, pool)
        hdr = fn.append_basic_block("close.hdr")
        # spin (_CALLER_SPIN), then sleep until the last worker leaves; but a worker still
        # inside after _RESCUE_NS is likely descheduled behind another process on its own CPU:
        # it is moved to this one (where this thread is about to sleep) and moves back to its
        # own CPUs when it leaves (see the worker's top)
        tries = e.var(I64, c64(0))
        rescued = e.var(I64, c64(0))
        rescue_ns = e.load(I64, word(e, pool, _RESCUE_NS))
        ts = e.var(I64, count=2)
        b.branch(hdr)
        b.position_at_end(hdr)
        now = b.load_atomic(low_addr, "acquire", 4, typ=I32)
        body = fn.append_basic_block("close.body")
        spin = fn.append_basic_block("close.spin")
        sleep = fn.append_basic_block("close.sleep")
        emptied = fn.append_basic_block("close.done")
        b.cbranch(b.icmp_unsigned("==", b.and_(now, c32(_COUNT_MASK)), c32(0)), emptied, body)
        b.position_at_end(body)
        n_try = e.load(I64, tries)
        b.store(b.add(n_try, c64(1)), tries)
        b.cbranch(b.icmp_signed("<", n_try, e.load(I64, word(e, pool, _CALLER_SPIN))), spin, sleep)
        b.position_at_end(spin)
        pause(e)
        b.branch(hdr)
        b.position_at_end(sleep)
        # sleep bounded by the rescue delay until the rescue is done (when rescues are on)
        timed = b.and_(b.icmp_signed("==", e.load(I64, rescued), c64(0)), b.icmp_signed(">", rescue_ns, c64(0)))
        b.store(b.sdiv(rescue_ns, c64(1_000_000_000)), e.gep(I64, ts, 0))
        b.store(b.srem(rescue_ns, c64(1_000_000_000)), e.gep(I64, ts, 1))
        flag = word(e, pool, _CALLER_WAITS)
        e.store_atomic(c64(1), flag, "seq_cst")
        again = b.load_atomic(low_addr, "seq_cst", 4, typ=I32)
        with b.if_then(b.icmp_unsigned("==", again, now)):
            futex(e, low_addr, _FUTEX_WAIT_PRIVATE, now, b.select(timed, ts, ir.Constant(PTR, None)))
        e.store_atomic(c64(0), flag, "seq_cst")
        late = b.load_atomic(low_addr, "acquire", 4, typ=I32)
        overdue = b.icmp_unsigned(">=", b.sub(ticks(e), t_own), e.load(I64, word(e, pool, _RESCUE_TICKS)))
        with b.if_then(b.and_(b.and_(timed, overdue), b.icmp_unsigned("!=", b.and_(late, c32(_COUNT_MASK)), c32(0)))):
            b.store(c64(1), rescued)
            cpu = b.sext(e.call("sched_getcpu", I32, []), I64)
            with b.if_then(b.icmp_signed(">=", cpu, c64(0))):
                mask = e.var(I64, count=MASK_BYTES // 8)
                with e.loop(0, MASK_BYTES // 8, name="m") as mi:
                    b.store(c64(0), e.gep(I64, mask, mi))
                b.store(b.shl(c64(1), b.srem(cpu, c64(64))), e.gep(I64, mask, b.sdiv(cpu, c64(64))))
                with e.loop(0, nw, name="r") as ri:
                    line = word(e, pool, b.add(c64(_W0), b.mul(ri, c64(_WSTRIDE))))
                    inside = b.load_atomic(word(e, line, _W_INSIDE), "acquire", 8, typ=I64)
                    home = e.load(I64, word(e, line, _W_HOME))
                    with b.if_then(b.and_(b.icmp_signed("!=", inside, c64(0)), b.icmp_signed("!=", home, c64(0)))):
                        set_affinity(e, e.load(I64, word(e, line, _W_THREAD)), mask)
                        e.store_atomic(c64(1), word(e, line, _W_RESCUED), "seq_cst")
                        b.atomic_rmw("add", word(e, pool, _RESCUES), c64(1), "monotonic")
        b.branch(hdr)
        b.position_at_end(emptied)
    # Busy cores: a worker that was descheduled holds its task while the caller waits.
    # After a few such jobs in a row, run jobs on the caller alone for a while.
    # A job straggled when it took longer than the caller alone would have: the caller's
    # pace (its time over the k tasks it ran) times all n tasks, plus _MIN_WAIT. Waiting
    # longer than its own time, the old test, missed a worker running at half speed on a
    # shared core for the job's last task (a third slower than serial, never flagged).
    t_end = ticks(e)
    for idx, add in ((_JOBS, c64(1)), (_WAIT_TICKS, b.sub(t_end, t_own))):  # under the busy lock
        b.store(b.add(e.load(I64, word(e, pool, idx)), add), word(e, pool, idx))
    k = e.max(e.load(I64, own_tasks), c64(1))  # none taken: the workers did it all, no straggler
    total = b.sub(t_end, t_start)
    serial_est = b.add(b.udiv(b.mul(b.sub(t_own, t_start), n), k), e.load(I64, word(e, pool, _MIN_WAIT)))
    serial_est = b.select(b.icmp_signed("==", e.load(I64, own_tasks), c64(0)), c64(2**62), serial_est)
    # A leaky score: +4 a straggling job, -1 a fine one; at 12 the pool goes serial for a
    # spell that doubles (up to _BACKOFF_MAX) while straggling resumes right after each
    # spell, and is back to _BACKOFF after 4096 fine jobs in a row.
    straggle = word(e, pool, _STRAGGLE)
    calm = word(e, pool, _CALM)
    cur_spell = word(e, pool, _BACKOFF_CUR)
    with b.if_else(b.icmp_unsigned(">", total, serial_est)) as (slow, fine):
        with slow:
            b.store(c64(0), calm)
            count = b.add(e.load(I64, straggle), c64(4))
            b.store(count, straggle)
            with b.if_then(b.icmp_signed(">=", count, c64(12))):
                spell = e.max(e.load(I64, cur_spell), e.load(I64, word(e, pool, _BACKOFF)))
                b.store(b.add(t_end, spell), word(e, pool, _SERIAL_UNTIL))
                b.store(e.min(b.mul(spell, c64(2)), e.load(I64, word(e, pool, _BACKOFF_MAX))), cur_spell)
                b.store(c64(0), straggle)
                fallbacks = word(e, pool, _FALLBACKS)
                b.store(b.add(e.load(I64, fallbacks), c64(1)), fallbacks)
        with fine:
            b.store(e.max(b.sub(e.load(I64, straggle), c64(1)), c64(0)), straggle)
            quiet = b.add(e.load(I64, calm), c64(1))
            b.store(quiet, calm)
            with b.if_then(b.icmp_signed(">=", quiet, c64(4096))):
                b.store(e.load(I64, word(e, pool, _BACKOFF)), cur_spell)
    e.store_atomic(c64(0), word(e, pool, _BUSY), "release")
    b.ret_void()

    # ---- i64 start(pool): create the worker threads; returns the number that failed
    fn = Emitter.function(m, f"{prefix}_start", I64, [PTR])
    e = Emitter(m, fn)
    b = e.b
    pool = fn.args[0]
    failed = e.var(I64, c64(0))
    create = e.declare("pthread_create", I32, [PTR, PTR, PTR, PTR])
    worker_main = m.get_global(f"{prefix}_worker_main")
    with e.loop(0, e.load(I64, word(e, pool, _NWORKERS)), name="w") as i:
        line = word(e, pool, b.add(c64(_W0), b.mul(i, c64(_WSTRIDE))))
        b.store(pool, word(e, line, _W_POOL))
        b.store(i, word(e, line, _W_ID))
        rc = b.call(create, [word(e, line, _W_THREAD), ir.Constant(PTR, None), worker_main, line])
        with b.if_then(b.icmp_signed("!=", rc, c32(0))):
            b.store(b.add(e.load(I64, failed), c64(1)), failed)
    b.ret(e.load(I64, failed))

    # ---- void stop(pool): ask every worker to quit and join it
    fn = Emitter.function(m, f"{prefix}_stop", VOID, [PTR])
    e = Emitter(m, fn)
    b = e.b
    pool = fn.args[0]
    join = e.declare("pthread_join", I32, [I64, PTR])
    e.store_atomic(c64(1), word(e, pool, _SHUTDOWN), "seq_cst")
    nwk = e.load(I64, word(e, pool, _NWORKERS))
    with e.loop(0, nwk, name="w") as i:
        wake_worker(e, pool, i)
    with e.loop(0, nwk, name="j") as i:
        line = word(e, pool, b.add(c64(_W0), b.mul(i, c64(_WSTRIDE))))
        b.call(join, [e.load(I64, word(e, line, _W_THREAD)), ir.Constant(PTR, None)])
    b.ret_void()

    # ---- void wake(pool, n): wake up to n workers without a job (they spin, ready for the next)
    fn = Emitter.function(m, f"{prefix}_wake", VOID, [PTR, I64])
    e = Emitter(m, fn)
    b = e.b
    pool, n = fn.args
    with e.loop(0, e.min(n, e.load(I64, word(e, pool, _NWORKERS))), name="w") as i:
        wake_worker(e, pool, i)
    b.ret_void()

    # ---- i64 ticks(): the cycle counter (0 where the target has none)
    fn = Emitter.function(m, f"{prefix}_ticks", I64, [])
    e = Emitter(m, fn)
    e.b.ret(ticks(e))

    # ---- void spin(n): n pause instructions (to calibrate the spin budget)
    fn = Emitter.function(m, f"{prefix}_spin", VOID, [I64])
    e = Emitter(m, fn)
    with e.loop(0, fn.args[0], name="s"):
        pause(e)
    e.b.ret_void()
    return m


_lib_lock = threading.Lock()


def _library() -> jit.Library:
    isa = host_isa("generic")
    nr = _futex_number()
    little = sys.byteorder == "little"
    tid = _SYS_GETTID.get(platform.machine().lower(), 0)
    return jit.load(f"threadpool|futex{nr}|gettid{tid}|{sys.byteorder}", isa,
                    lambda p: _build(p, isa.triple, nr, little, tid))


_spin_ns: float | None = None


def _pause_ns(lib: jit.Library) -> float:
    """Measured cost of one ``pause`` instruction, in nanoseconds."""
    global _spin_ns
    if _spin_ns is None:
        spin = lib.cfunc("spin", None, ctypes.c_int64)
        spin(1000)
        n, best = 4000, float("inf")
        for _ in range(5):  # the fastest of several: a descheduled measurement reads too slow
            t0 = time.perf_counter_ns()
            spin(n)
            best = min(best, (time.perf_counter_ns() - t0) / n)
        _spin_ns = max(best, 0.5)
    return _spin_ns


_tick_hz: float | None = None


def _ticks_per_second(lib: jit.Library) -> float:
    """Rate of the native cycle counter (0.0 if the target has none)."""
    global _tick_hz
    if _tick_hz is None:
        ticks = lib.cfunc("ticks", ctypes.c_int64)
        t0, c0 = time.perf_counter(), ticks()
        time.sleep(0.01)
        t1, c1 = time.perf_counter(), ticks()
        _tick_hz = max(0.0, (c1 - c0) / (t1 - t0))
    return _tick_hz


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


PIN_ENV = "EMBER_PIN_THREADS"
_pinned: dict[int, int] = {}  # CPU -> workers of live pools pinned to it
_pin_lock = threading.RLock()  # re-entrant: a pool's __del__ may run inside _pin_workers


def _pin_default(num_threads: int) -> bool:
    env = os.environ.get(PIN_ENV)
    if env is not None and env.strip():
        return env.strip().lower() not in ("0", "no", "off", "false")
    return num_threads <= available_cores()


def _set_affinity(handle: int, cpus: list[int]) -> bool:
    """Let thread ``handle`` (a pthread_t) run on ``cpus`` only; False when the platform cannot."""
    try:
        setaff = ctypes.CDLL(None).pthread_setaffinity_np
    except (AttributeError, OSError):
        return False
    setaff.argtypes = [ctypes.c_ulong, ctypes.c_size_t, ctypes.c_void_p]
    mask = (ctypes.c_ulong * (max(cpus) // 64 + 1))()
    for cpu in cpus:
        mask[cpu // 64] |= 1 << (cpu % 64)
    return bool(setaff(ctypes.c_ulong(handle), ctypes.sizeof(mask), ctypes.byref(mask)) == 0)


def _pin_workers(handles: list[int]) -> list[int]:
    """Bind each worker thread to its own allowed CPU, leaving the first CPU for the caller as
    long as others are free.

    A pool with a thread for every allowed CPU (a LATENCY model's) pins its workers to the
    same CPUs as every other such pool: such pools take turns (a pipeline's models, called one
    after another by the same thread), and a second pool's worker pinned to the first CPU would
    share it with the caller, who stays there after the first pool's run (PP-OCR rec right after
    det ran 2.7x its own time that way: 35 futex wake-ups per run). A smaller pool (a stream's)
    takes the CPUs least used by the other live pools, so that streams running at the same
    time spread over the machine.

    Without pinning, a worker woken after a long sleep is often queued on the caller's CPU (the
    scheduler places a wakee near its waker) and the job runs at single-thread speed until
    the load balancer moves it, milliseconds later. Returns the CPUs used (empty when the
    platform cannot pin)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return []
    order = cpus[1:] + cpus[:1]
    whole_machine = len(handles) + 1 >= len(cpus)
    used: list[int] = []
    with _pin_lock:
        for handle in handles:
            cpu = min(order, key=lambda c: ((0 if whole_machine else _pinned.get(c, 0)) + used.count(c),
                                            order.index(c)))
            if not _set_affinity(handle, [cpu]):
                break
            used.append(cpu)
        for cpu in used:
            _pinned[cpu] = _pinned.get(cpu, 0) + 1
    return used


def _thread_usage(tid: int) -> tuple[float, int] | None:
    """(CPU seconds, involuntary context switches) of thread ``tid`` of this process so far,
    from /proc (None where it cannot be read)."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            cpu = int(f.read().split()[0]) * 1e-9
        with open(f"/proc/self/task/{tid}/status") as f:
            for line in f:
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    return cpu, int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _usage(tids: list[int]) -> tuple[float, int]:
    """(CPU seconds, involuntary context switches) of the worker threads ``tids`` so far: their
    own counters, so the preemptions of other threads of the process (the Python thread, another
    engine's spinning workers) do not count. Where /proc cannot tell, the whole process's."""
    cpu, switches = 0.0, 0
    for tid in tids:
        got = _thread_usage(tid) if tid > 0 else None
        if got is None:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            return ru.ru_utime + ru.ru_stime, ru.ru_nivcsw
        cpu, switches = cpu + got[0], switches + got[1]
    return cpu, switches


def load_counters(cpus: Sequence[int]) -> tuple[float, float] | None:
    """(CPU-seconds the CPUs ``cpus`` were not idle, CPU-seconds of this process) so far: the
    first from ``/proc/stat`` (user, nice, system, irq, softirq and steal time of each CPU's
    line), the second from :func:`time.process_time`; None where /proc/stat cannot be read.
    Their difference over a window is what *other processes* used of those CPUs (a read costs
    about 20 microseconds)."""
    try:
        with open("/proc/stat") as f:
            text = f.read()
    except OSError:
        return None
    want = {f"cpu{c}" for c in cpus}
    busy, seen = 0, 0
    for line in text.splitlines():
        if not line.startswith("cpu"):
            break
        parts = line.split()
        if parts[0] in want and len(parts) >= 9:
            try:
                v = [int(x) for x in parts[1:9]]
            except ValueError:
                return None
            busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
            seen += 1
    if not seen:
        return None
    return busy / _CLOCK_TICKS, time.process_time()


try:
    _CLOCK_TICKS = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):
    _CLOCK_TICKS = 100.0

#: wall seconds of the machine's counters the load is judged from (:class:`LoadJudge`), and the
#: shortest window judged at all (the first runs of a pool)
LOAD_WINDOW_S, MIN_LOAD_WINDOW_S = 0.1, 0.05
#: wall seconds between two samples of the machine's counters (a sample costs about 25 us)
SAMPLE_EVERY_S = 0.025
#: the machine is busy when fewer than ``threads - BUSY_SPARE`` cores are left by other
#: processes, quiet again when ``threads - QUIET_SPARE`` are (2 cores, 2 threads: busy above
#: 0.5 core used by others, quiet at 0.25 or less)
BUSY_SPARE, QUIET_SPARE = 0.5, 0.25


class LoadJudge:
    """Whether other processes leave a pool of ``threads`` threads its cores, judged from the
    last ``window_s`` (about 100 ms) of the machine's counters: the CPU time the allowed
    ``cpus`` were busy minus this process's own (:func:`load_counters`), per wall second, is
    :attr:`load`, the cores other processes used. Busy when ``cpus - load < threads -
    BUSY_SPARE`` in two samples in a row, quiet again when ``cpus - load >= threads -
    QUIET_SPARE`` (the counters come in 10 ms clock ticks: +-0.2 cores over a 100 ms window at
    worst, +-0.15 measured between the 5th and 95th percentiles). The counters do
    not depend on the workers running (unlike their preemption counts), so a serial spell's end
    is seen as quickly as its start. Threads of this process (another engine's spinning
    workers) are not load: they are this process's own business, and a benchmark's peers. A
    pure function of the samples it is fed (deterministic tests)."""

    def __init__(self, threads: int, cpus: int, window_s: float = LOAD_WINDOW_S,
                 min_window_s: float = MIN_LOAD_WINDOW_S) -> None:
        self.threads, self.cpus = threads, cpus
        self.window_s, self.min_window_s = window_s, min_window_s
        self.samples: deque[tuple[float, float]] = deque()
        #: other processes' cores over the last window (None until a window was judged)
        self.load: float | None = None
        self.busy = False
        self._over = 0  # samples in a row above the busy threshold

    def feed(self, t: float, busy_cpu_s: float, own_cpu_s: float) -> bool:
        """A sample at wall time ``t`` of the counters (cumulative seconds); returns :attr:`busy`."""
        self.samples.append((t, busy_cpu_s - own_cpu_s))
        while len(self.samples) > 2 and t - self.samples[1][0] >= self.window_s:
            self.samples.popleft()
        t0, others0 = self.samples[0]
        if t - t0 < self.min_window_s:
            return self.busy
        self.load = max(0.0, (busy_cpu_s - own_cpu_s - others0) / (t - t0))
        spare = self.cpus - self.load
        self._over = self._over + 1 if spare < self.threads - BUSY_SPARE else 0
        if not self.busy and self._over >= 2:  # two samples in a row: one window's noise is not load
            self.busy = True
        elif self.busy and spare >= self.threads - QUIET_SPARE:
            self.busy = False
        return self.busy

    @property
    def quiet_now(self) -> bool:
        """Whether the last window left the pool its cores by the *quiet* threshold (not merely
        "not judged busy yet": the first loaded windows, before two in a row make it busy, are
        not quiet)."""
        return self.load is not None and self.cpus - self.load >= self.threads - QUIET_SPARE


#: where the machine's counters cannot be read (:func:`load_counters` gives None), the workers'
#: own preemptions: involuntary context switches per CPU-second of the workers above which the
#: machine counts as busy (pinned workers are let go), and below which it counts as quiet again
BUSY_PREEMPTIONS, QUIET_PREEMPTIONS = 50.0, 10.0
#: workers' CPU-seconds a measuring window spans: short to notice a busy machine, long to trust
#: a quiet one
BUSY_WINDOW_S, QUIET_WINDOW_S = 0.1, 1.0
#: wall seconds after which a window shorter in CPU time (but at least MIN_WINDOW_S) is judged
WINDOW_WALL_S, MIN_WINDOW_S = 5.0, 0.01
#: the longest a worker spins for the next job (adaptive spin, :func:`spin_budget_us`)
MAX_SPIN_US = 1000.0
#: a caller that waited this long for a worker still inside a job moves it to its own CPU
RESCUE_MS = 1.0
#: let the workers run on any CPU while the machine is busy (the adaptive pinning's old rule).
#: Off: they stay pinned, and the :class:`ModeChooser` runs a plan serially when its parallel
#: runs are slower. Unpinned, a woken worker is queued on its waker's CPU and parallel runs lose
#: to serial ones; pinned, it takes its share of the busy CPU (session 11, a process spinning on
#: the worker's CPU: BERT-like f32 12.8 -> 10.0 ms, ResNet-50 31.5 -> 26.1, MobileNetV2 2.98 ->
#: 2.39; OpenVINO 11.7, 31.5, 3.1; spinning on the caller's CPU 12.8 -> 12.4; on both 22.0 -> 16.7).
#: ``EMBER_UNPIN_WHEN_BUSY=1`` restores it (A/B).
UNPIN_WHEN_BUSY = os.environ.get("EMBER_UNPIN_WHEN_BUSY", "").strip().lower() in ("1", "yes", "on", "true")


def spin_budget_us(gaps_us: Sequence[float], base_us: float, max_us: float, busy: bool) -> float:
    """How long an idle worker spins before it sleeps, from the recent gaps between one
    inference's end and the next one's start: long enough to bridge the usual gap (twice the
    median, at most ``max_us``) while inferences come back to back, so the first jobs of a run
    find the workers awake; ``base_us`` when the gaps are longer than ``max_us`` (the workers
    sleep and :meth:`ThreadPool.wake` rouses them), when fewer than three gaps are known, or
    on a busy machine (a spinning worker takes CPU time another process was waiting for)."""
    if busy or len(gaps_us) < 3:
        return base_us
    g = _median(gaps_us)
    if g > max_us:
        return base_us
    return min(max_us, max(base_us, 2.0 * g))


def _mask(cpus: Sequence[int]) -> np.ndarray:
    """A CPU mask of ``cpus`` as the affinity calls take it (MASK_BYTES)."""
    words = np.zeros(MASK_BYTES // 8, np.uint64)
    for cpu in cpus:
        if cpu < MASK_BYTES * 8:
            words[cpu // 64] |= np.uint64(1 << (cpu % 64))
    return words
#: wall seconds between two reads of the counters (a read is a system call, about 2 us)
CHECK_EVERY_S = 0.05


def _unpin(cpus: list[int]) -> None:
    with _pin_lock:
        for cpu in cpus:
            _pinned[cpu] = max(0, _pinned.get(cpu, 0) - 1)


class ModeChooser:
    """While the machine is busy, whether a plan's next run goes parallel or on the caller alone
    (serial). It measures in short spells, then runs ``exploit`` runs in the mode that was
    faster, then measures again; each verdict that repeats the last one doubles the runs until
    the next spell (up to ``max_exploit``), so a mode that keeps winning is rarely left (a
    measuring run of the slower mode is a slow run in the tail).

    A spell first *probes*: when the pool told it the times of parallel runs on a quiet machine
    (:meth:`quiet`), ``pairs`` parallel runs; if their median is within ``gate`` times the quiet
    median (``gate`` 1.25), parallel is hardly hurt by the load and wins without a serial run
    (a plan whose two threads gain more than 25% on a quiet machine cannot run faster serially;
    one that gains less has little to win either way). Otherwise (or with no quiet times
    known) ``pairs`` runs of each mode alternating (so a change of the load falls on both
    alike), and the lower median wins. While parallel runs are exploited, a rise of the load
    (:meth:`choose`'s ``load``, other processes' cores) by ``relevel`` or more since the verdict
    starts a new spell at once (a falling load is the judge's: quiet means parallel; and while
    serial runs are exploited the others' share rises by itself, since the pool leaves them a
    core). Whatever the runs' count, a new spell starts after ``max_exploit_s`` seconds of runs.
    On a machine where every thread waits for a core, two threads can lose to one (each job
    waits for the later of two threads to get a slice); this keeps a plan at the faster of the
    two. A pure function of the times it is told (deterministic tests)."""

    def __init__(self, pairs: int = 4, exploit: int = 56, max_exploit: int = 1024, gate: float = 1.25,
                 relevel: float = 0.5, keep: int = 16, max_exploit_s: float = 5.0) -> None:
        self.pairs, self.exploit, self.max_exploit, self.max_exploit_s = pairs, exploit, max_exploit, max_exploit_s
        self.gate, self.relevel = gate, relevel
        #: parallel run times on a quiet machine (the latest ``keep``)
        self.reference: deque[float] = deque(maxlen=keep)
        self.reset()

    def reset(self) -> None:
        """Forget the busy spell's measurements and verdicts (the machine is quiet again); the
        quiet reference is kept."""
        self.times: dict[bool, list[float]] = {False: [], True: []}
        self.step = 0  # runs into the current cycle: the spell's `plan`, then `run_for` in the winner's mode
        self.run_for = self.exploit
        self.winner = False
        self.verdicts = 0
        self.level: float | None = None  # the load at the last verdict
        self.spent = 0.0  # seconds of the runs since the last verdict
        self.plan = self._spell()

    def _spell(self, probe: bool = True) -> list[bool]:
        if probe and len(self.reference) >= 3:
            return [False] * self.pairs
        return [False, True] * self.pairs

    def quiet(self, seconds: float) -> None:
        """The time of a parallel run on a quiet machine (the reference a probe compares with)."""
        self.reference.append(seconds)

    def choose(self, load: float | None = None) -> bool:
        """True: run the next run serially. ``load``: other processes' cores now (see
        :class:`LoadJudge`), None if unknown."""
        if self.step > len(self.plan):
            if (not self.winner and load is not None and self.level is not None
                    and load - self.level >= self.relevel):
                self.step, self.run_for, self.verdicts = 0, self.exploit, 0  # the load rose: measure now
            elif self.spent >= self.max_exploit_s:
                self.step = 0
        if self.step >= len(self.plan) + self.run_for:
            self.step = 0
        if self.step == 0:
            self.plan = self._spell()
            self.times[False].clear()
            self.times[True].clear()
        k = self.step
        self.step += 1
        if k < len(self.plan):
            return self.plan[k]
        if k == len(self.plan):  # the spell is over: its verdict
            ser, par = self.times[True], self.times[False]
            if not ser and par and len(self.reference) >= 3 and _median(par) > self.gate * _median(self.reference):
                self.plan = self.plan + self._spell(probe=False)  # hurt: measure serial runs too, alternating
                par.clear()
                return self.plan[k]
            if par:
                winner = bool(ser) and _median(ser) < _median(par)
                same = self.verdicts > 0 and winner == self.winner
                self.run_for = min(2 * self.run_for, self.max_exploit) if same else self.exploit
                self.winner = winner
                self.verdicts += 1
                self.level = load
                self.spent = 0.0
        return self.winner

    def record(self, serial: bool, seconds: float) -> None:
        """The time of the run :meth:`choose` was last asked for (kept while measuring)."""
        self.spent += seconds
        if 0 < self.step <= len(self.plan):
            self.times[serial].append(seconds)


def _median(xs: Sequence[float]) -> float:
    return sorted(xs)[len(xs) // 2]


@dataclass(frozen=True)
class PoolStats:
    """Counters of a pool since it started (subtract two snapshots for an interval).

    ``jobs``: jobs run in parallel; ``wakes``: times such a job found a worker asleep on its
    futex and had to wake it (the worker joins late, tens of microseconds or, on a busy core,
    a scheduler slice later); ``wait_us``: time callers spent waiting for workers after their
    own share of the tasks; ``serial_jobs``: jobs run on the caller alone because of a serial
    spell (``serial_fallbacks``) or because another thread's job held the pool; ``rescues``:
    workers a waiting caller moved to its own CPU (``RESCUE_MS``).
    """

    jobs: int = 0
    wakes: int = 0
    wait_us: float = 0.0
    serial_jobs: int = 0
    serial_fallbacks: int = 0
    rescues: int = 0

    def __sub__(self, other: PoolStats) -> PoolStats:
        return PoolStats(self.jobs - other.jobs, self.wakes - other.wakes, self.wait_us - other.wait_us,
                         self.serial_jobs - other.serial_jobs, self.serial_fallbacks - other.serial_fallbacks,
                         self.rescues - other.rescues)


class ThreadPool:
    """A pool of ``num_threads - 1`` native workers plus the calling thread.

    ``spin_us`` is how long a waiting thread spins before it sleeps on a futex. When the
    caller of a job keeps waiting for a worker much longer than it worked itself (the
    worker's core is busy with another process), the pool runs jobs on the caller alone
    for ``backoff_ms`` before it tries its workers again (:attr:`serial_fallbacks` counts);
    if they straggle again right away, the next spell is twice as long, up to
    ``max_backoff_ms``.

    ``pin`` binds each worker to one CPU of the process's affinity set (the first CPU is
    left to the caller, which is not pinned); by default workers are pinned when the pool
    has no more threads than available cores, and let go while the machine is busy
    (:meth:`adapt`, :attr:`unpinned_for_load` counts); ``EMBER_PIN_THREADS=0``/``1`` or
    ``pin`` fixes the choice. :attr:`pinned_cpus` lists the CPUs used (empty: not pinned).
    """

    def __init__(self, num_threads: int | None = None, spin_us: float = 100.0, backoff_ms: float = 50.0,
                 pin: bool | None = None, max_backoff_ms: float = 1000.0, max_spin_us: float | None = None,
                 rescue_ms: float | None = None):
        if num_threads is None:
            num_threads = available_cores()
        if num_threads < 1:
            raise EmberError(f"ember: a thread pool needs at least 1 thread, got {num_threads}")
        self._lib = _library()
        workers = num_threads - 1
        words = _W0 + _WSTRIDE * max(workers, 1)
        raw = np.zeros(words + 8, np.int64)  # +8 words of slack for 64-byte alignment
        off = (-raw.ctypes.data % 64) // 8
        self._state = raw[off:off + words]
        self._state[_NWORKERS] = workers
        self._state[_SPIN] = self._state[_CALLER_SPIN] = self._pauses(spin_us)
        #: the spin budget while the machine is quiet and runs are not back to back (microseconds)
        self.spin_us = spin_us
        #: the longest adaptive spin budget (microseconds; see :func:`spin_budget_us`)
        self.max_spin_us = max(spin_us, MAX_SPIN_US if max_spin_us is None else max_spin_us)
        self._gaps: deque[float] = deque(maxlen=8)
        self._last_end: float | None = None
        #: on a busy machine, runs go parallel or serial by what recent runs of each took (None:
        #: always parallel)
        self.chooser: ModeChooser | None = ModeChooser()
        self._run_start: float | None = None
        self._run_serial = False  # the mode the chooser gave the current run
        self._user_serial = False  # ThreadPool.serial as the user set it
        self._run_quiet = False  # the current run started on a quiet machine (its time is the chooser's reference)
        #: the models sharing this pool (:func:`lease_pool`), each with its own run-mode chooser
        self._leases: weakref.WeakSet[PoolLease] = weakref.WeakSet()
        self._users = 0  # live leases (the pool closes when the last one is released)
        self._adapt_lock = threading.Lock()  # adapt/finished of models called from several threads
        hz = _ticks_per_second(self._lib)
        self._state[_BACKOFF] = self._state[_BACKOFF_CUR] = int(hz * backoff_ms / 1000)
        self._state[_BACKOFF_MAX] = int(hz * max(backoff_ms, max_backoff_ms) / 1000)
        self._state[_STATE] = _CLOSED  # no job yet
        self._state[_MIN_WAIT] = int(hz * 20e-6) if hz else 2**62  # 20 us
        self._state[_FROM_BACK] = 1
        self.num_threads = num_threads
        self.handle = self._state.ctypes.data
        self.parallel_for_address = self._lib.address("parallel_for")
        self._pfor = self._lib.cfunc("parallel_for", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_int64, ctypes.c_int64)
        self._stop = self._lib.cfunc("stop", None, ctypes.c_void_p)
        self._wake = self._lib.cfunc("wake", None, ctypes.c_void_p, ctypes.c_int64)
        self._us_per_tick = 1e6 / hz if hz else 0.0
        failed = self._lib.cfunc("start", ctypes.c_int64, ctypes.c_void_p)(self.handle)
        self._closed = False
        self.pinned_cpus: list[int] = []
        _pools.add(self)
        if failed:
            self._stop(self.handle)
            self._closed = True
            raise EmberError(f"ember: could not start {failed} of {workers} worker threads")
        #: the pinning follows the machine's load (pin and the environment left unset)
        self.adaptive_pinning = bool(workers and pin is None and not os.environ.get(PIN_ENV, "").strip()
                                     and _pin_default(num_threads))
        #: times the workers were let go because the machine was busy (adaptive pinning)
        self.unpinned_for_load = 0
        self._tids = self._worker_tids()
        self._window = _usage(self._tids)
        self._window_start = time.monotonic()
        self._next_check = 0.0
        #: the machine looked busy in the last window of :meth:`adapt` (see :class:`LoadJudge`)
        self.busy = False
        try:
            self._cpus = sorted(os.sched_getaffinity(0))
        except AttributeError:
            self._cpus = list(range(os.cpu_count() or 1))
        #: judges the load from the machine's counters (:func:`load_counters`); where they cannot
        #: be read, from the workers' own preemptions (BUSY_PREEMPTIONS)
        self.judge = LoadJudge(num_threads, len(self._cpus))
        self._machine_counters = True
        # each worker's own CPUs, where it returns after a caller moved it (a rescue)
        self._homes = np.zeros((max(workers, 1), MASK_BYTES // 8), np.uint64)
        self._rescues_seen = 0
        if workers and (_pin_default(num_threads) if pin is None else pin):
            self.pinned_cpus = _pin_workers(self._worker_handles())
        self._set_homes(apply=False)
        self.rescue_ms = RESCUE_MS if rescue_ms is None else rescue_ms

    def _pauses(self, us: float) -> int:
        return max(1, int(us * 1000 / _pause_ns(self._lib)))

    def _worker_handles(self) -> list[int]:
        n = int(self._state[_NWORKERS])
        return [int(self._state[_W0 + _WSTRIDE * i + _W_THREAD]) for i in range(n)]

    def _worker_tids(self) -> list[int]:
        """The workers' kernel thread ids (each stores its own as it starts; 0 if not yet)."""
        n = int(self._state[_NWORKERS])
        slots = [_W0 + _WSTRIDE * i + _W_TID for i in range(n)]
        if platform.machine().lower() not in _SYS_GETTID:
            return [0] * n  # unknown: the busy judgement reads the process's counters
        deadline = time.monotonic() + 1.0
        while any(self._state[w] == 0 for w in slots) and time.monotonic() < deadline:
            time.sleep(0.0001)
        return [int(self._state[w]) for w in slots]

    def _set_homes(self, apply: bool) -> None:
        """Record each worker's CPUs (its pinned CPU, or all allowed ones) as its home, where it
        returns after a rescue; ``apply``: also set them now."""
        try:
            allowed = sorted(os.sched_getaffinity(0))
        except AttributeError:
            return
        for i, handle in enumerate(self._worker_handles()):
            cpus = [self.pinned_cpus[i]] if i < len(self.pinned_cpus) else allowed
            self._homes[i] = _mask(cpus)
            self._state[_W0 + _WSTRIDE * i + _W_HOME] = self._homes[i].ctypes.data
            if apply:
                _set_affinity(handle, cpus)

    @property
    def rescue_ms(self) -> float:
        """How long a caller waits for a worker still inside a job before it moves the worker to
        its own CPU (0: never; see the module docstring)."""
        return float(self._state[_RESCUE_NS]) / 1e6

    @rescue_ms.setter
    def rescue_ms(self, ms: float) -> None:
        hz = _ticks_per_second(self._lib)
        on = ms > 0 and hz and hasattr(os, "sched_getaffinity")
        self._state[_RESCUE_TICKS] = int(hz * ms / 1000) if on else 0
        self._state[_RESCUE_NS] = int(ms * 1e6) if on else 0

    @property
    def rescues(self) -> int:
        """Times a caller moved a worker it had waited for (``RESCUE_MS``) to its own CPU."""
        return int(self._state[_RESCUES])

    def finished(self, user: Any = None) -> None:
        """A plan calls this as each run ends: the workers' spin budget until the next run
        follows the recent gaps between runs (:func:`spin_budget_us`); the gap to the next
        run's :meth:`adapt` is recorded. ``user``: whose run it was (a :class:`PoolLease`,
        holding that model's :class:`ModeChooser`; default the pool's own)."""
        u = self if user is None else user
        with self._adapt_lock:
            self._set_spin(spin_budget_us(self._gaps, self.spin_us, self.max_spin_us, self.busy))
            self._last_end = time.perf_counter()
            if u._run_start is not None and u.chooser is not None:
                if u._run_quiet:
                    u.chooser.quiet(self._last_end - u._run_start)
                else:
                    u.chooser.record(u._run_serial, self._last_end - u._run_start)
            u._run_start = None

    def _set_spin(self, us: float) -> None:
        spin = self._pauses(us)
        if spin != self._state[_SPIN]:
            self._state[_SPIN] = spin

    def adapt(self, user: Any = None) -> None:
        """Judge whether the machine is busy (:attr:`busy`) and pin or free the workers
        accordingly (see the module docstring), set the workers' spin budget for the run, and on
        a busy machine choose whether this run goes parallel or serial (:class:`ModeChooser`):
        a plan calls this as each run starts, and :meth:`finished` as it ends. The counters are
        read once per window. ``user``: whose run it is (a :class:`PoolLease`: the mode is chosen
        by that model's chooser, from that model's times; default the pool's own)."""
        if not self._state[_NWORKERS] or self._closed:
            return
        u = self if user is None else user
        with self._adapt_lock:
            now_pc = time.perf_counter()
            if self._last_end is not None:
                self._gaps.append((now_pc - self._last_end) * 1e6)
                self._last_end = None
            rescues = int(self._state[_RESCUES])
            if rescues != self._rescues_seen:  # a rescued worker moves back by itself; this makes sure
                self._rescues_seen = rescues
                self._set_homes(apply=True)
            self._judge()
            # during a run the next job is never far: the longest budget (unless the machine is busy)
            self._set_spin(self.spin_us if self.busy else self.max_spin_us)
            if self.busy and not u._user_serial and u.chooser is not None:
                u._run_serial = u.chooser.choose(self.judge.load)
                self._state[_FORCED_SERIAL] = int(u._run_serial)
                u._run_start, u._run_quiet = now_pc, False
            else:
                u._run_serial = False
                # a quiet run's time is the chooser's reference only once the machine was judged
                # quiet (the first runs of a pool come before any window; so do those of a pool
                # judged from the workers' preemptions)
                # (and only while the last window was really quiet: a process started on a busy
                # machine must not take its loaded runs for the quiet reference, which would let
                # every probe pass and keep its runs parallel however slow)
                u._run_quiet = self._machine_counters and self.judge.quiet_now
                u._run_start = now_pc if u._run_quiet and not u._user_serial else None
                self._state[_FORCED_SERIAL] = int(u._user_serial)

    def _judge(self) -> None:
        """Update :attr:`busy` (and the pinning) from the machine's counters every
        ``SAMPLE_EVERY_S`` (:class:`LoadJudge`), or where they cannot be read, from the workers'
        preemptions once per window."""
        now = time.monotonic()
        if now < self._next_check:
            return
        counters = load_counters(self._cpus) if self._machine_counters else None
        if counters is None:
            self._machine_counters = False
            self._next_check = now + CHECK_EVERY_S
            busy = self._judge_preemptions(now)
            if busy is not None:
                self._set_busy(busy)
            return
        self._next_check = now + SAMPLE_EVERY_S
        self._set_busy(self.judge.feed(now, *counters))
        if not self.busy and self.judge.load is not None:
            # the cores are free: a serial spell of the native straggling check (run alone after
            # workers kept straggling) stays at its shortest, not doubled up to max_backoff_ms
            self._state[_BACKOFF_CUR] = self._state[_BACKOFF]

    def _judge_preemptions(self, now: float) -> bool | None:
        """Busy or not from the workers' involuntary context switches per CPU-second they used,
        once a window is complete (None before)."""
        cpu, switches = _usage(self._tids)
        spent = cpu - self._window[0]
        # a window is the workers' CPU time, or, when they hardly run (a busy machine's runs
        # gone serial), WINDOW_WALL_S of wall time with at least a little of it
        if spent < (QUIET_WINDOW_S if self.busy else BUSY_WINDOW_S) and not (
                now - self._window_start >= WINDOW_WALL_S and spent >= MIN_WINDOW_S):
            return None
        rate = (switches - self._window[1]) / spent
        self._window = (cpu, switches)
        self._window_start = now
        if not self.busy and rate > BUSY_PREEMPTIONS:
            return True
        if self.busy and rate < QUIET_PREEMPTIONS:
            return False
        return self.busy

    def _set_busy(self, busy: bool) -> None:
        """The machine turned busy (workers unpinned) or quiet (pinned again, the chooser's busy
        spell forgotten: runs go parallel at once)."""
        if busy == self.busy:
            return
        self.busy = busy
        if busy:
            if UNPIN_WHEN_BUSY and self.adaptive_pinning and self.pinned_cpus:
                if all(_set_affinity(h, self._cpus) for h in self._worker_handles()):
                    _unpin(self.pinned_cpus)
                    self.pinned_cpus = []
                    self.unpinned_for_load += 1
                    self._set_homes(apply=False)
        else:
            for chooser in [self.chooser, *(le.chooser for le in self._leases)]:
                if chooser is not None:
                    chooser.reset()
            if self.adaptive_pinning and not self.pinned_cpus:
                self.pinned_cpus = _pin_workers(self._worker_handles())
                self._set_homes(apply=False)

    @property
    def serial(self) -> bool:
        """When True, every job runs on the calling thread alone and the workers stay asleep
        (counted as ``serial_jobs``): for measuring a plan's one-thread time on the same plan
        and arena, or for a caller that knows the other cores are taken. (On a busy machine
        :meth:`adapt` may also run single runs serially: :attr:`serial_run`.)"""
        return self._user_serial

    @serial.setter
    def serial(self, on: bool) -> None:
        self._user_serial = bool(on)
        self._run_start = None  # a run measured across the change would mislead the chooser
        self._state[_FORCED_SERIAL] = int(bool(on))

    @property
    def tasks_from_ends(self) -> bool:
        """True (the default): workers take a job's tasks from its back, the caller from its
        front; False: all from the front, in the order threads ask (for measuring the two)."""
        return bool(self._state[_FROM_BACK])

    @tasks_from_ends.setter
    def tasks_from_ends(self, on: bool) -> None:
        self._state[_FROM_BACK] = int(bool(on))

    @property
    def serial_run(self) -> bool:
        """Jobs run on the caller alone now: :attr:`serial`, or the :class:`ModeChooser`'s
        choice for the current run on a busy machine."""
        return bool(self._state[_FORCED_SERIAL])

    def parallel_for(self, fn: int, ctx: int, n_tasks: int, num_threads: int | None = None) -> None:
        """Run native ``fn(ctx, task)`` for every task in ``range(n_tasks)``; returns when all ran.

        ``fn`` and ``ctx`` are addresses. ``num_threads`` (default: the pool's) caps how
        many threads, the caller included, take part. The GIL is released meanwhile.
        """
        if self._closed:
            raise EmberError("ember: the thread pool is closed")
        self._pfor(self.handle, fn, ctx, n_tasks, self.num_threads if num_threads is None else num_threads)

    def wake(self, num_threads: int | None = None) -> None:
        """Wake the workers a job of ``num_threads`` threads (default: the pool's) would use,
        without giving them work: they spin for ``spin_us``, so a job started within that time
        finds them awake instead of paying their futex wake-up. Cheap when they are awake."""
        if not self._closed:
            self._wake(self.handle, (self.num_threads if num_threads is None else num_threads) - 1)

    def stats(self) -> PoolStats:
        """The pool's counters so far (see :class:`PoolStats`)."""
        st = self._state
        return PoolStats(int(st[_JOBS]), int(st[_WAKES]), float(st[_WAIT_TICKS]) * self._us_per_tick,
                         int(st[_SERIAL_JOBS]), int(st[_FALLBACKS]), int(st[_RESCUES]))

    @property
    def serial_fallbacks(self) -> int:
        """How many times the pool fell back to running jobs on the caller alone."""
        return int(self._state[_FALLBACKS])

    def close(self) -> None:
        """Stop and join the workers. Idempotent."""
        if not self._closed:
            self._closed = True
            self._stop(self.handle)
            _unpin(self.pinned_cpus)
            self.pinned_cpus = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


_default: ThreadPool | None = None
_pools: weakref.WeakSet[ThreadPool] = weakref.WeakSet()

#: compiled models with the same thread count and pinning share one pool (:func:`lease_pool`);
#: ``EMBER_SHARE_POOLS=0`` gives each its own, as before session 7 (for A/B runs)
SHARE_POOLS_ENV = "EMBER_SHARE_POOLS"
_shared: dict[tuple[Any, ...], ThreadPool] = {}
_shared_lock = threading.RLock()  # re-entrant: a collection inside lease_pool may release another lease


def share_pools() -> bool:
    """Whether :func:`lease_pool` shares pools (``EMBER_SHARE_POOLS``, default on)."""
    return os.environ.get(SHARE_POOLS_ENV, "1").strip().lower() not in ("0", "no", "off", "false")


class PoolLease:
    """One compiled model's (one stream's) share of a process-wide :class:`ThreadPool`.

    Compiled models with the same thread count and pinning share one set of workers, as
    OpenVINO's models share one TBB arena: a second compile starts no threads, and a model run
    right after another finds the workers awake (the first model's spinning worker is its own).
    A lease behaves as the pool (attributes it does not hold are the pool's: ``handle``,
    ``stats()``, ``busy``, ``judge``, ``rescue_ms``...; the counters are the pool's, every
    model's jobs together) but keeps what belongs to one model: its run-mode :attr:`chooser`
    (whose quiet reference is that model's run time) and :attr:`serial`. The machine's load
    (:class:`LoadJudge`), the pinning and the spin budget are the pool's.

    Jobs of two models called at once from two Python threads are correct: a job that finds the
    pool taken by another thread's job runs on its own caller (``serial_jobs`` counts them).
    :meth:`close` releases the lease; the pool stops when its last lease is released (and at
    exit)."""

    _OWN = frozenset({"_pool", "_key", "chooser", "_run_start", "_run_serial", "_run_quiet", "_user_serial",
                      "_released", "__weakref__"})

    def __init__(self, pool: ThreadPool, key: tuple[Any, ...]) -> None:
        object.__setattr__(self, "_pool", pool)
        object.__setattr__(self, "_key", key)
        #: this model's run-mode chooser on a busy machine (None: always parallel)
        self.chooser: ModeChooser | None = ModeChooser()
        self._run_start: float | None = None
        self._run_serial = False
        self._run_quiet = False
        self._user_serial = False
        self._released = False
        pool._leases.add(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_pool"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in PoolLease._OWN or isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        else:
            setattr(self._pool, name, value)

    @property
    def pool(self) -> ThreadPool:
        """The shared pool."""
        return self._pool

    def adapt(self) -> None:
        """:meth:`ThreadPool.adapt` for a run of this model."""
        self._pool.adapt(self)

    def finished(self) -> None:
        """:meth:`ThreadPool.finished` for a run of this model."""
        self._pool.finished(self)

    @property
    def serial(self) -> bool:
        """This model's jobs run on the calling thread alone (see :attr:`ThreadPool.serial`)."""
        return self._user_serial

    @serial.setter
    def serial(self, on: bool) -> None:
        self._user_serial = bool(on)
        self._run_start = None
        self._pool._state[_FORCED_SERIAL] = int(bool(on))

    @property
    def serial_run(self) -> bool:
        """This model's current run goes on the caller alone (its :attr:`serial`, or its chooser's
        choice on a busy machine)."""
        return self._user_serial or self._run_serial

    def parallel_for(self, fn: int, ctx: int, n_tasks: int, num_threads: int | None = None) -> None:
        """:meth:`ThreadPool.parallel_for` (an error once this lease is closed)."""
        if self._released:
            raise EmberError("ember: the thread pool is closed")
        self._pool.parallel_for(fn, ctx, n_tasks, num_threads)

    @property
    def closed(self) -> bool:
        return self._released

    def close(self) -> None:
        """Release this lease (idempotent); the pool stops when its last lease goes."""
        if not self._released:
            self._released = True
            _release(self._pool, self._key)


def lease_pool(num_threads: int | None = None, pin: bool | None = None, slot: int = 0) -> PoolLease:
    """A share of the process's pool of ``num_threads`` threads and pinning ``pin`` (created on
    first use; see :class:`PoolLease`). ``slot`` tells apart pools of the same size that must
    run at the same time: stream ``k`` of a THROUGHPUT model takes slot ``k``, so the streams of
    one model never share workers, while stream ``k`` of two models do. With
    ``EMBER_SHARE_POOLS=0`` every lease gets a pool of its own."""
    threads = available_cores() if num_threads is None else num_threads
    key: tuple[Any, ...] = (threads, pin, os.environ.get(PIN_ENV, "").strip(), slot)
    with _shared_lock:
        pool = _shared.get(key) if share_pools() else None
        if pool is None or pool._closed:
            pool = ThreadPool(threads, pin=pin)
            if share_pools():
                _shared[key] = pool
        pool._users += 1
    return PoolLease(pool, key)


def _release(pool: ThreadPool, key: tuple[Any, ...]) -> None:
    with _shared_lock:
        pool._users -= 1
        if pool._users > 0:
            return
        if _shared.get(key) is pool:
            del _shared[key]
    pool.close()


def shared_pools() -> list[ThreadPool]:
    """The live shared pools (for tests and diagnostics)."""
    with _shared_lock:
        return list(_shared.values())


def _close_shared() -> None:
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for pool in pools:
        pool.close()


atexit.register(_close_shared)


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's worker threads: its pools run jobs serially
    (and models compiled in the child get new pools)."""
    global _default, _shared_lock
    for pool in list(_pools):
        pool._state[_NWORKERS] = 0  # so stop() joins nothing and parallel_for runs on the caller
        pool._state[_BUSY] = 0
        pool._state[_STATE] = _CLOSED
        pool.pinned_cpus = []
        pool.adaptive_pinning = False
        pool._adapt_lock = threading.Lock()  # another thread may have held it at the fork
    _pinned.clear()
    _shared.clear()
    _shared_lock = threading.RLock()
    _default = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def default_pool() -> ThreadPool:
    """The process-wide pool, sized to the available cores (``EMBER_NUM_THREADS`` overrides)."""
    global _default
    with _lib_lock:
        if _default is None:
            env = os.environ.get("EMBER_NUM_THREADS")
            # the shared pool of that size (a LATENCY model's): its lease is never released
            _default = lease_pool(int(env) if env else None).pool
            atexit.register(_default.close)
        return _default
