"""The native thread pool: every task runs once, thread counts are honoured, idle costs nothing."""

import ctypes
import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from ember.devices.cpu.kernels.gemm import Gemm, pack_b
from ember.devices.cpu.runtime import threadpool as tp
from ember.devices.cpu.runtime.threadpool import TASK_FN, ThreadPool
from ember.errors import EmberError


def _counter_task(counts, thread_ids):
    @TASK_FN
    def task(ctx, t):
        counts[t] += 1
        thread_ids.add(threading.get_native_id())

    return task


@pytest.mark.parametrize("pool_threads", [1, 2, 3])
@pytest.mark.parametrize("n_tasks", [0, 1, 2, 3, 17, 1000])
def test_every_task_runs_once(pool_threads, n_tasks):
    pool = ThreadPool(pool_threads)
    try:
        counts = np.zeros(max(n_tasks, 1), np.int64)
        ids = set()
        task = _counter_task(counts, ids)
        addr = ctypes.cast(task, ctypes.c_void_p).value
        for _ in range(3):
            counts[:] = 0
            pool.parallel_for(addr, 0, n_tasks)
            assert (counts[:n_tasks] == 1).all()
        counts[:] = 0
        pool.parallel_for(addr, 0, n_tasks, num_threads=1)  # capped: only the caller runs
        assert (counts[:n_tasks] == 1).all()
    finally:
        pool.close()


def test_caller_takes_part_and_workers_help():
    pool = ThreadPool(2)
    try:
        counts = np.zeros(2000, np.int64)
        ids = set()
        task = _counter_task(counts, ids)
        pool.parallel_for(ctypes.cast(task, ctypes.c_void_p).value, 0, 2000)
        assert (counts == 1).all()
        assert 1 <= len(ids) <= 2
    finally:
        pool.close()


def test_idle_pool_burns_no_cpu():
    """After work, the workers spin briefly, then sleep: about zero CPU time over a second."""
    pool = ThreadPool(3)  # more threads than this machine has cores: sleeping must still be free
    try:
        counts = np.zeros(64, np.int64)
        task = _counter_task(counts, set())
        for _ in range(20):
            pool.parallel_for(ctypes.cast(task, ctypes.c_void_p).value, 0, 64)
        time.sleep(0.05)  # past the spin budget
        t0 = time.process_time()
        time.sleep(1.0)
        used = time.process_time() - t0
        assert used < 0.05, f"idle pool used {used:.3f} s of CPU in 1 s"
    finally:
        pool.close()


def test_concurrent_callers_share_a_pool():
    """Two Python threads using one pool at once: the busy pool runs the second job inline."""
    pool = ThreadPool(2)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 200), np.float32)
    b = rng.standard_normal((200, 150), np.float32)
    want = a.astype(np.float64) @ b
    g = Gemm(pack_b(b), 300, num_threads=2)
    errors = []

    def worker():
        c = np.empty((300, 150), np.float32)
        for _ in range(30):
            g(a, c, pool=pool)
            if not np.allclose(c, want, rtol=1e-4, atol=1e-3):
                errors.append("mismatch")

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.close()
    assert not errors


def test_straggling_worker_makes_the_pool_go_serial():
    """A worker that keeps finishing late (its core busy elsewhere) is left out for a while."""
    pool = ThreadPool(2, backoff_ms=10_000)
    main = threading.get_native_id()
    ran_on = []

    @TASK_FN
    def task(ctx, t):
        ran_on.append(threading.get_native_id())
        if threading.get_native_id() != main:
            time.sleep(0.02)  # the worker is "descheduled"
        elif t == 0:
            time.sleep(0.005)  # let the worker wake up and take a task

    try:
        addr = ctypes.cast(task, ctypes.c_void_p).value
        for _ in range(30):  # three slow jobs in a row trip it (a loaded machine may need more tries)
            pool.parallel_for(addr, 0, 50)
            if pool.serial_fallbacks:
                break
        assert pool.serial_fallbacks == 1
        ran_on.clear()
        pool.parallel_for(addr, 0, 50)
        assert set(ran_on) == {main} and len(ran_on) == 50
    finally:
        pool.close()


def test_pool_works_in_a_forked_child():
    pool = ThreadPool(2)
    try:
        g = Gemm(pack_b(np.eye(8, dtype=np.float32)), 40, num_threads=2)
        a = np.arange(320, dtype=np.float32).reshape(40, 8)
        g(a, np.empty((40, 8), np.float32), pool=pool)
        pid = os.fork()
        if pid == 0:  # child: no worker threads exist; jobs must still complete
            try:
                c = np.empty((40, 8), np.float32)
                g(a, c, pool=pool)
                pool.close()
                os._exit(0 if np.array_equal(c, a) else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
    finally:
        pool.close()


def test_close():
    pool = ThreadPool(2)
    pool.close()
    pool.close()
    with pytest.raises(EmberError):
        pool.parallel_for(0, 0, 1)
    with pytest.raises(EmberError):
        ThreadPool(0)


def _new_threads(make):
    before = set(os.listdir("/proc/self/task"))
    obj = make()
    return obj, [int(t) for t in set(os.listdir("/proc/self/task")) - before]


def _faked_load_pool(monkeypatch):
    """A two-thread pool whose load judgement reads faked counters (``usage``: CPU-seconds and
    context switches of its workers; the machine's counters unreadable), and a counter task for
    it (kept alive: the pool calls it). Returns (pool, worker tids, usage, counts, task, address)."""
    monkeypatch.delenv("EMBER_PIN_THREADS", raising=False)
    monkeypatch.setattr(tp, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(tp, "load_counters", lambda cpus: None)
    usage = [0.0, 0]
    monkeypatch.setattr(tp, "_usage", lambda tids: (usage[0], usage[1]))
    pool, tids = _new_threads(lambda: ThreadPool(2))
    counts = np.zeros(8, np.int64)
    task = _counter_task(counts, set())
    return pool, tids, usage, counts, task, ctypes.cast(task, ctypes.c_void_p).value


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
@pytest.mark.parametrize("pin", [True, False])
def test_workers_pinned_to_their_own_cpu(pin):
    """Pinned workers each get one CPU of the process's set (the least used by live pools)."""
    allowed = sorted(os.sched_getaffinity(0))
    pool, tids = _new_threads(lambda: ThreadPool(2, pin=pin))
    try:
        assert len(tids) == 1
        got = os.sched_getaffinity(tids[0])
        if pin and len(allowed) > 1:
            assert pool.pinned_cpus == sorted(got) and len(got) == 1 and got <= set(allowed)
        elif not pin:
            assert pool.pinned_cpus == [] and sorted(got) == allowed
        counts = np.zeros(64, np.int64)
        task = _counter_task(counts, set())
        pool.parallel_for(ctypes.cast(task, ctypes.c_void_p).value, 0, 64)
        assert (counts == 1).all()
    finally:
        pool.close()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs")
def test_pools_of_the_whole_machine_pin_the_same_cpus():
    """Two pools with a thread per CPU (two LATENCY models) pin their workers to the same CPUs,
    never the caller's first CPU; a smaller pool (a stream's) takes the least used ones."""
    n = len(os.sched_getaffinity(0))
    first = min(os.sched_getaffinity(0))
    a, b = ThreadPool(n, pin=True), ThreadPool(n, pin=True)
    try:
        assert a.pinned_cpus == b.pinned_cpus and len(a.pinned_cpus) == n - 1
        assert first not in a.pinned_cpus
        if n >= 3:
            c, d = ThreadPool(2, pin=True), ThreadPool(2, pin=True)
            try:
                assert c.pinned_cpus != d.pinned_cpus  # streams spread
            finally:
                c.close()
                d.close()
    finally:
        a.close()
        b.close()


def test_pinning_follows_the_environment(monkeypatch):
    monkeypatch.setenv("EMBER_PIN_THREADS", "0")
    pool = ThreadPool(2)
    assert pool.pinned_cpus == []
    pool.close()


def test_a_late_last_task_shorter_than_the_callers_work_counts_as_straggling():
    """The caller works 10 ms; the worker's one task ends 3 ms after the caller is done. The
    job took longer than the caller alone would have (its pace times every task), so it
    straggled, though the caller waited less than it worked (the old test missed this: a
    worker at half speed on a shared core)."""
    pool = ThreadPool(2, backoff_ms=10_000)
    main = threading.get_native_id()
    n = 50
    done_by_main = [0]

    @TASK_FN
    def task(ctx, t):
        if threading.get_native_id() == main:
            if done_by_main[0] == 0:
                time.sleep(0.01)  # let the worker wake up and take a task
            done_by_main[0] += 1
        else:
            deadline = time.monotonic() + 1.0
            while done_by_main[0] < n - 1 and time.monotonic() < deadline:
                time.sleep(0.0002)
            time.sleep(0.003)

    try:
        addr = ctypes.cast(task, ctypes.c_void_p).value
        for _ in range(40):
            done_by_main[0] = 0
            pool.parallel_for(addr, 0, n)
            if pool.serial_fallbacks:
                break
        assert pool.serial_fallbacks == 1
    finally:
        pool.close()


def _wait_until(cond, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.001)
    return cond()


def test_stats_count_parallel_serial_and_held_back_jobs():
    """jobs counts parallel jobs only; a job run inline because the pool is busy (a nested call
    from a task) is a serial job; every task still runs once."""
    pool = ThreadPool(2)
    counts = np.zeros(64, np.int64)
    inner = _counter_task(counts, set())
    inner_addr = ctypes.cast(inner, ctypes.c_void_p).value

    @TASK_FN
    def outer(ctx, t):
        if t == 0:
            pool.parallel_for(inner_addr, 0, 64)  # nested: the pool is held by this job

    try:
        before = pool.stats()
        pool.parallel_for(inner_addr, 0, 64)
        pool.parallel_for(inner_addr, 0, 64, num_threads=1)  # capped to the caller: not a pool job
        pool.parallel_for(inner_addr, 0, 1)  # one task: never a pool job
        d = pool.stats() - before
        assert (d.jobs, d.serial_jobs) == (1, 0)
        assert counts[0] == 3 and (counts[1:] == 2).all()
        counts[:] = 0
        pool.parallel_for(ctypes.cast(outer, ctypes.c_void_p).value, 0, 4)
        d = pool.stats() - before
        assert (d.jobs, d.serial_jobs) == (2, 1)
        assert (counts == 1).all()
        assert d.wait_us >= 0.0 and d.serial_fallbacks == 0
    finally:
        pool.close()


def test_a_sleeping_worker_is_counted_and_wake_readies_it():
    """With no spin budget, an idle worker sleeps on its futex and the next job must wake it
    (counted). wake() without a job rouses it: it runs nothing, and once it is up and spinning
    (a long budget now), a job needs no futex wake-up."""
    pool = ThreadPool(2, spin_us=0.0)
    counts = np.zeros(16, np.int64)
    task = _counter_task(counts, set())  # (kept alive: the pool calls it)
    addr = ctypes.cast(task, ctypes.c_void_p).value
    sleeping = tp._W0 + tp._W_SLEEPING
    try:
        assert _wait_until(lambda: pool._state[sleeping] == 1)
        before = pool.stats()
        pool.parallel_for(addr, 0, 16)
        assert (pool.stats() - before).wakes == 1
        assert (counts == 1).all()
        assert _wait_until(lambda: pool._state[sleeping] == 1)
        pool._state[tp._SPIN] = 1 << 40  # from now on a woken worker spins (a long while)
        pool.wake()
        assert _wait_until(lambda: pool._state[sleeping] == 0)
        assert (counts == 1).all()  # woken without a job: nothing ran
        before = pool.stats()
        pool.parallel_for(addr, 0, 16)
        assert (pool.stats() - before).wakes == 0
        assert (counts == 2).all()
    finally:
        pool._state[tp._SPIN] = 1
        pool.wake()
        pool.close()
    pool.wake()  # closed: nothing to wake, no error


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs")
def test_pinning_adapts_to_a_busy_machine(monkeypatch):
    """Where the machine's counters cannot be read: workers are let go (any allowed CPU) when
    they are preempted often per CPU-second they use, and pinned again after a longer quiet
    window; the counters are faked."""
    monkeypatch.setattr(tp, "UNPIN_WHEN_BUSY", True)  # (the A/B rule: see test_busy_keeps_the_workers_pinned)
    allowed = sorted(os.sched_getaffinity(0))
    pool, tids, usage, counts, task, addr = _faked_load_pool(monkeypatch)
    try:
        assert pool.adaptive_pinning and len(pool.pinned_cpus) == 1
        usage[:] = [tp.BUSY_WINDOW_S / 2, 1000]  # a busy rate, but the window is too short to judge
        pool.adapt()
        assert len(pool.pinned_cpus) == 1
        usage[:] = [tp.BUSY_WINDOW_S, 1000]  # 10,000 switches per CPU-second
        pool.adapt()
        assert pool.pinned_cpus == [] and pool.unpinned_for_load == 1 and pool.busy
        assert sorted(os.sched_getaffinity(tids[0])) == allowed
        pool.parallel_for(addr, 0, 8)
        assert (counts == 1).all()
        usage[:] = [tp.BUSY_WINDOW_S + tp.QUIET_WINDOW_S / 2, 1000]  # quiet so far, not for a whole window
        pool.adapt()
        assert pool.pinned_cpus == []
        usage[:] = [tp.BUSY_WINDOW_S + tp.QUIET_WINDOW_S / 2, 1002]  # 4 per CPU-second over a short
        pool._window_start -= tp.WINDOW_WALL_S  # window, but a long wall time (the workers hardly ran)
        pool.adapt()
        assert len(pool.pinned_cpus) == 1 and sorted(os.sched_getaffinity(tids[0])) == pool.pinned_cpus
        pool.finished()
        assert not pool.busy and len(pool.chooser.reference) == 0  # no reference without the machine's counters
        pool.parallel_for(addr, 0, 8)
        assert (counts == 2).all()
    finally:
        pool.close()


def test_busy_keeps_the_workers_pinned(monkeypatch):
    """By default a busy machine leaves the workers pinned (the chooser decides serial or
    parallel runs); the workers still run jobs."""
    pool, tids, usage, counts, task, addr = _faked_load_pool(monkeypatch)
    try:
        assert pool.adaptive_pinning and len(pool.pinned_cpus) == 1
        pinned = list(pool.pinned_cpus)
        usage[:] = [tp.BUSY_WINDOW_S, 1000]  # 10,000 switches per CPU-second: busy
        pool.adapt()
        assert pool.busy and pool.pinned_cpus == pinned and pool.unpinned_for_load == 0
        assert sorted(os.sched_getaffinity(tids[0])) == pinned
        pool.parallel_for(addr, 0, 8)
        assert (counts == 1).all()
    finally:
        pool.close()


def test_fixed_pinning_does_not_adapt(monkeypatch):
    monkeypatch.setattr(tp, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(tp, "load_counters", lambda cpus: None)
    usage = [0.0, 0]
    monkeypatch.setattr(tp, "_usage", lambda tids: (usage[0], usage[1]))
    for pool in (ThreadPool(2, pin=True), ThreadPool(2, pin=False), ThreadPool(1)):
        try:
            before = list(pool.pinned_cpus)
            usage[:] = [usage[0] + 10.0, usage[1] + 100_000]
            pool.adapt()
            assert not pool.adaptive_pinning and pool.pinned_cpus == before and pool.unpinned_for_load == 0
        finally:
            pool.close()


def test_a_plan_run_wakes_its_workers_and_adapts(monkeypatch):
    """Each run of a plan with parallel steps wakes the pool's workers (as many as its widest
    step uses) and lets the pool judge the load, before any kernel; a one-thread plan does
    neither. Results match numpy either way."""
    import ember
    import ember.opset as ops

    calls = []
    monkeypatch.setattr(ThreadPool, "wake", lambda self, n=None: calls.append(("wake", n)))
    monkeypatch.setattr(ThreadPool, "adapt", lambda self, user=None: calls.append(("adapt", None)))
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    x = ops.parameter([64, 256], np.float32, name="x")
    model = ember.Model([ops.relu(ops.matmul(x, ops.constant(w), False, False))], [x], "mm")
    a = rng.standard_normal((64, 256)).astype(np.float32)
    for threads, want in ((2, [("adapt", None), ("wake", 2)]), (1, [])):
        compiled = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})
        calls.clear()
        out = compiled([a])[0]
        np.testing.assert_allclose(out, np.maximum(a @ w, 0), rtol=1e-4, atol=1e-3)
        assert calls == want, threads


def test_serial_pool_runs_every_job_on_the_caller():
    pool = ThreadPool(2)
    main = threading.get_native_id()
    counts = np.zeros(200, np.int64)
    ids = set()
    task = _counter_task(counts, ids)  # (kept alive: the pool calls it)
    addr = ctypes.cast(task, ctypes.c_void_p).value
    try:
        pool.serial = True
        before = pool.stats()
        pool.parallel_for(addr, 0, 200)
        d = pool.stats() - before
        assert pool.serial and ids == {main} and (counts == 1).all()
        assert (d.jobs, d.serial_jobs) == (0, 1)
        pool.serial = False
        pool.parallel_for(addr, 0, 200)
        assert (counts == 2).all() and (pool.stats() - before).jobs == 1
    finally:
        pool.close()


@pytest.mark.parametrize("gaps, busy, want", [
    ([], False, 100.0),                      # too few gaps known: the base budget
    ([50.0, 60.0], False, 100.0),
    ([10.0, 20.0, 30.0], False, 100.0),      # short gaps: never below the base
    ([200.0, 300.0, 250.0], False, 500.0),   # back to back: twice the median gap
    ([400.0, 450.0, 900.0, 420.0], False, 900.0),
    ([600.0, 700.0, 650.0], False, 1000.0),  # capped
    ([2000.0, 3000.0, 2500.0], False, 100.0),  # longer gaps than the cap: sleep, wake() rouses
    ([200.0, 300.0, 250.0], True, 100.0),    # a busy machine: no long spinning
    ([200.0, 5000.0, 250.0, 6000.0, 7000.0], False, 100.0),  # the median decides
])
def test_spin_budget_follows_the_gap_between_runs(gaps, busy, want):
    assert tp.spin_budget_us(gaps, 100.0, 1000.0, busy) == want


def test_a_pool_spins_longer_while_runs_come_back_to_back(monkeypatch):
    """During a run (adapt() to finished()) the workers spin up to max_spin_us; after it, after
    three short gaps between runs, longer than the base, after long gaps the base again."""
    pool = ThreadPool(2, spin_us=50.0, max_spin_us=20_000.0)
    monkeypatch.setattr(pool, "_judge", lambda: None)  # busy only when the test says so
    clock = [time.perf_counter()]  # the gaps between runs on a clock of the test's own (a loaded
    # machine stretches a real 2 ms sleep past max_spin_us)
    monkeypatch.setattr(tp, "time", SimpleNamespace(
        perf_counter=lambda: clock[0], monotonic=time.monotonic, process_time=time.process_time,
        perf_counter_ns=time.perf_counter_ns, sleep=time.sleep))

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    base = int(pool._state[tp._SPIN])
    longest = pool._pauses(20_000.0)
    try:
        pool.adapt()  # a run starts: the longest budget while it lasts
        assert pool._state[tp._SPIN] == longest
        pool.finished()  # no gaps known yet: the base after it
        assert pool._state[tp._SPIN] == base
        for _ in range(3):
            sleep(0.002)
            pool.adapt()
            pool.finished()
        assert 2 * base < pool._state[tp._SPIN] < longest  # gaps of 2+ ms: about 4 ms of spinning
        assert pool._state[tp._CALLER_SPIN] == base  # the caller's wait for stragglers is not stretched
        for _ in range(8):
            sleep(0.025)  # longer than max_spin_us
            pool.adapt()
            pool.finished()
        assert pool._state[tp._SPIN] == base
        pool.busy = True  # a busy machine: the base budget during runs too
        pool.adapt()
        assert pool._state[tp._SPIN] == base
    finally:
        pool.close()


def test_busy_judgement_reads_the_workers_own_counters():
    """The pool knows its workers' kernel thread ids, and _usage sums their own CPU time and
    preemptions (/proc/self/task/<tid>), not the whole process's: CPU time burnt by the
    calling thread does not show, the workers' spinning does."""
    pool = ThreadPool(3)
    try:
        tasks = {int(t) for t in os.listdir("/proc/self/task")}
        assert len(pool._tids) == 2 and set(pool._tids) <= tasks
        assert threading.get_native_id() not in pool._tids
        cpu0, _ = tp._usage(pool._tids)
        t0 = time.process_time()
        while time.process_time() - t0 < 0.2:  # the caller alone burns 0.2 s
            pass
        cpu1, _ = tp._usage(pool._tids)
        assert cpu1 - cpu0 < 0.1
        pool._state[tp._SPIN] = pool._pauses(30_000.0)  # woken, the workers spin 30 ms
        pool.wake()
        time.sleep(0.2)
        cpu2, _ = tp._usage(pool._tids)
        assert cpu2 - cpu1 > 0.005
    finally:
        pool.close()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs")
@pytest.mark.parametrize("rescue_ms", [2.0, 0.0])
def test_a_worker_the_caller_waits_for_is_moved_to_its_cpu_and_back(rescue_ms):
    """A worker still inside a job RESCUE_MS after the caller ran out of tasks (here: it
    sleeps, as if descheduled behind another process on its pinned CPU) is moved to the
    caller's CPU, and returns to its own CPU when it leaves the job; rescue_ms=0 never moves it."""
    pool = ThreadPool(2, pin=True, rescue_ms=rescue_ms, backoff_ms=0.0)
    main = threading.get_native_id()
    seen: list[set[int]] = []

    @TASK_FN
    def task(ctx, t):
        if threading.get_native_id() != main:
            time.sleep(0.03)
            seen.append(set(os.sched_getaffinity(0)))
        elif t == 0:
            time.sleep(0.005)  # let the worker wake up and take a task

    try:
        home = list(pool.pinned_cpus)
        assert len(home) == 1
        tid = pool._tids[0]
        for _ in range(20):
            pool.parallel_for(ctypes.cast(task, ctypes.c_void_p).value, 0, 2)
            if seen:
                break
        assert len(seen) == 1
        if rescue_ms:
            assert pool.rescues == 1 and len(seen[0]) == 1
        else:
            assert pool.rescues == 0 and seen[0] == set(home)
        assert _wait_until(lambda: sorted(os.sched_getaffinity(tid)) == home)
        pool.adapt()  # notices the rescue: re-applies the homes (no change here)
        assert sorted(os.sched_getaffinity(tid)) == home
    finally:
        pool.close()


def test_mode_chooser_keeps_the_faster_mode_and_measures_again():
    """Fake run times: serial runs take 1.0, parallel 2.0 (every thread waiting for a core).
    The chooser alternates for 2 * pairs runs, then runs serially for `exploit` runs, then
    measures again; the same verdict again doubles the runs until the next spell; when
    parallel becomes faster it goes back to parallel at the next verdict."""
    ch = tp.ModeChooser(pairs=3, exploit=10, max_exploit=40, max_exploit_s=1e9)
    modes = []
    for _ in range(6 + 10 + 6 + 20 + 6 + 40 + 6 + 40):
        serial = ch.choose()
        modes.append(serial)
        ch.record(serial, 1.0 if serial else 2.0)
    assert modes[:6] == [False, True] * 3 and modes[6:16] == [True] * 10
    assert modes[16:22] == [False, True] * 3 and modes[22:42] == [True] * 20  # doubled
    assert modes[42:48] == [False, True] * 3 and modes[48:88] == [True] * 40  # doubled, capped next
    assert modes[88:94] == [False, True] * 3 and modes[94:134] == [True] * 40
    for _ in range(6):  # the machine frees up: parallel runs take 0.6
        serial = ch.choose()
        ch.record(serial, 1.0 if serial else 0.6)
    assert [ch.choose() for _ in range(10)] == [False] * 10 and ch.run_for == 10  # a new verdict: 10 again
    ch.reset()
    assert ch.choose() is False and ch.step == 1


def test_a_busy_pool_runs_serially_when_that_is_faster(monkeypatch):
    """adapt() on a busy machine asks the chooser and sets the run's mode (serial_run), finished()
    tells it the run's time; the user's serial setting wins; a quiet machine runs parallel."""
    pool = ThreadPool(2, pin=False)
    monkeypatch.setattr(pool, "_judge", lambda: None)
    main = threading.get_native_id()
    ran_on = []

    @TASK_FN
    def task(ctx, t):
        ran_on.append(threading.get_native_id())
        if threading.get_native_id() != main:
            time.sleep(0.01)  # the worker is slow (shares its core): parallel runs lose
        elif t == 0:
            time.sleep(0.002)

    addr = ctypes.cast(task, ctypes.c_void_p).value
    try:
        pool.busy = True
        modes = []
        for _ in range(12):
            pool.adapt()
            modes.append(pool.serial_run)
            pool.parallel_for(addr, 0, 4)
            pool.finished()
        assert not pool.serial
        assert modes[8:12] == [True] * 4  # serial won the measuring spell (4 pairs)
        pool.serial = True  # the user's setting: serial whatever the chooser says
        pool.adapt()
        assert pool.serial_run and pool.serial
        pool.serial = False
        pool.busy = False
        pool.adapt()
        assert not pool.serial_run
        ran_on.clear()
        pool.parallel_for(addr, 0, 4)
        assert len(ran_on) == 4
    finally:
        pool.close()


def test_load_judge_follows_the_load_both_ways():
    """Fed synthetic counters (others' CPU time growing at a chosen rate), the judge calls the
    machine busy within a window of another process taking a core, quiet within a window of it
    leaving, and keeps its verdict in the band between the two thresholds."""
    judge = tp.LoadJudge(threads=2, cpus=2, window_s=0.1, min_window_s=0.05)
    t, others, own = 0.0, 0.0, 0.0

    def run(rate: float, seconds: float, own_rate: float = 2.0) -> list[bool]:
        nonlocal t, others, own
        verdicts = []
        for _ in range(round(seconds / 0.025)):
            t += 0.025
            others += rate * 0.025
            own += own_rate * 0.025  # ember's own threads: never load
            verdicts.append(judge.feed(t, others + own, own))
        return verdicts

    assert judge.feed(t, 0.0, 0.0) is False and judge.load is None  # one sample: nothing judged
    assert not any(run(0.0, 0.5))
    assert judge.load == pytest.approx(0.0, abs=1e-9)
    busy = run(1.0, 0.5)  # a spinner takes one of the two cores
    assert busy[-1] and busy.index(True) <= 4 and judge.load == pytest.approx(1.0)
    assert all(run(0.4, 0.5))  # between the thresholds: still busy
    quiet = run(0.1, 0.5)
    assert not quiet[-1] and quiet.index(False) <= 4
    assert not any(run(0.4, 0.5))  # between the thresholds: still quiet
    run(0.0, 0.1)
    t += 0.025
    own += 0.05
    assert not judge.feed(t, others + own + 0.08, own)  # one read 80 ms high: a window's load over 0.5
    assert judge.load > 0.5
    assert not any(run(0.0, 0.1))  # the next reads are right: never judged busy
    wide = tp.LoadJudge(threads=2, cpus=8)  # two threads on eight cores: a spinner leaves plenty
    for i in range(20):
        wide.feed(0.025 * i, 1.0 * 0.025 * i, 0.0)
    assert not wide.busy and wide.load == pytest.approx(1.0)


def _feed(ch, times, n, load=None):
    modes = []
    for _ in range(n):
        serial = ch.choose(load)
        modes.append(serial)
        ch.record(serial, times[serial])
    return modes


def test_mode_chooser_probes_parallel_before_it_tries_serial():
    """With quiet parallel times known, a measuring spell first runs `pairs` parallel runs: not
    slower than gate x the quiet median, parallel wins with no serial run at all (the explored
    serial runs were the p99); slower, serial and parallel alternate and the faster wins."""
    ch = tp.ModeChooser(pairs=3, exploit=10, max_exploit=40, gate=1.5, max_exploit_s=1e9)
    for _ in range(5):
        ch.quiet(1.0)
    modes = _feed(ch, {False: 1.2, True: 1.8}, 200)  # a busy machine that does not hurt parallel runs
    assert not any(modes)
    ch.reset()
    modes = _feed(ch, {False: 3.0, True: 1.8}, 3 + 6 + 10)  # parallel hurt (bf16 under a spinner)
    assert modes[:3] == [False] * 3 and modes[3:9] == [False, True] * 3 and modes[9:] == [True] * 10
    assert len(ch.reference) == 5  # reset keeps the quiet reference


def test_mode_chooser_measures_again_when_the_load_changes():
    """Exploiting parallel runs, a rise of the load by `relevel` cores starts a new spell at once
    (not after up to max_exploit runs); smaller changes do not, nor changes while serial runs
    are exploited (the others' share rises as the pool leaves them a core); after
    max_exploit_s seconds of runs a spell starts whatever the count."""
    ch = tp.ModeChooser(pairs=2, exploit=100, relevel=0.5, max_exploit_s=1e9)
    modes = _feed(ch, {False: 1.0, True: 2.0}, 20, load=0.6)
    assert modes[:4] == [False, True] * 2 and modes[4:] == [False] * 16
    assert _feed(ch, {False: 1.0, True: 2.0}, 10, load=0.9) == [False] * 10  # a small rise: no spell
    modes = _feed(ch, {False: 3.0, True: 2.0}, 10, load=1.2)  # a spinner arrived: measured at once
    assert modes[:4] == [False, True] * 2 and modes[4:] == [True] * 6
    assert _feed(ch, {False: 3.0, True: 2.0}, 20, load=2.0) == [True] * 20  # serial: the load is no signal
    timed = tp.ModeChooser(pairs=2, exploit=1000, max_exploit_s=1.0)
    modes = _feed(timed, {False: 0.25, True: 0.5}, 4 + 4 + 4)
    assert modes[4:8] == [False] * 4 and modes[8:12] == [False, True] * 2  # 1 s of runs: measured again


def test_pool_busy_follows_the_machine_counters(monkeypatch):
    """The pool's busy judgement from (faked) machine counters: another process taking a core
    makes it busy (the chooser consulted; with the A/B rule ``UNPIN_WHEN_BUSY`` the workers
    unpinned) within a window's worth of runs, and its leaving makes it quiet again as fast
    (workers pinned, runs parallel, native serial spells back to their shortest); quiet runs'
    times become the chooser's reference. Counts of runs, each at least 10 ms apart, never
    wall-time thresholds."""
    monkeypatch.delenv("EMBER_PIN_THREADS", raising=False)
    monkeypatch.setattr(tp, "UNPIN_WHEN_BUSY", True)
    monkeypatch.setattr(tp, "SAMPLE_EVERY_S", 0.0)
    state = {"rate": 0.0, "acc": 0.0, "last": time.monotonic()}

    def counters(cpus):
        now = time.monotonic()
        state["acc"] += state["rate"] * (now - state["last"])
        state["last"] = now
        return state["acc"], 0.0

    def set_rate(rate):
        counters(None)
        state["rate"] = rate

    monkeypatch.setattr(tp, "load_counters", counters)
    pool = ThreadPool(2)
    try:
        def runs_until(cond, limit=40):
            for i in range(limit):
                time.sleep(0.01)
                pool.adapt()
                pool.finished()
                if cond():
                    return i + 1
            return limit + 1

        assert runs_until(lambda: False, 12) == 13 and not pool.busy
        # quiet parallel runs are the probe's reference, once a window was judged (not the first runs)
        assert 3 <= len(pool.chooser.reference) < 12
        set_rate(1.0)
        assert runs_until(lambda: pool.busy) <= 12
        if pool.adaptive_pinning:
            assert pool.pinned_cpus == [] and pool.unpinned_for_load == 1
        assert pool.chooser.step > 0  # consulted for the busy runs
        pool._state[tp._BACKOFF_CUR] = 64 * pool._state[tp._BACKOFF]  # a long native spell is due
        set_rate(0.0)
        assert runs_until(lambda: not pool.busy) <= 12
        pool.adapt()
        assert not pool.serial_run and pool.chooser.step == 0
        assert pool._state[tp._BACKOFF_CUR] == pool._state[tp._BACKOFF]
        if pool.adaptive_pinning:
            assert len(pool.pinned_cpus) == 1
    finally:
        pool.close()


def test_loaded_windows_before_the_busy_verdict_are_not_quiet():
    """A process started on a busy machine: the first windows under load come before two in a
    row make the judge call it busy, and must not count as quiet (they would become the run-mode
    chooser's quiet reference, every probe of parallel runs would pass against them, and the
    model would stay parallel however slow)."""
    judge = tp.LoadJudge(threads=2, cpus=2, window_s=0.1, min_window_s=0.05)
    assert not judge.quiet_now  # nothing judged yet
    t = 0.0
    judge.feed(t, 0.0, 0.0)
    verdicts, quiet = [], []
    for _ in range(1, 8):  # another process spins on one core from the start
        t += 0.025
        verdicts.append(judge.feed(t, 1.0 * t, 0.0))
        quiet.append(judge.quiet_now)
    assert not verdicts[1] and verdicts[-1]  # not busy at once, busy after two windows
    assert not any(quiet)  # but never quiet meanwhile
    calm = tp.LoadJudge(threads=2, cpus=2, window_s=0.1, min_window_s=0.05)
    for i in range(8):
        calm.feed(0.025 * i, 0.05 * 0.025 * i, 0.0)
    assert calm.quiet_now and not calm.busy
