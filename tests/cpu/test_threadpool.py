"""The native thread pool: every task runs once, thread counts are honoured, idle costs nothing."""

import ctypes
import os
import threading
import time

import numpy as np
import pytest

from ember.devices.cpu.kernels.gemm import Gemm, pack_b
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
