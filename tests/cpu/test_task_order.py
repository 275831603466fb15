"""The pool's task order (``ThreadPool.tasks_from_ends``): the caller takes a job's tasks from
the front and the workers from the back until they meet, so on two threads each thread keeps
one end of every job. Every task still runs exactly once, either order."""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

from ember.devices.cpu.runtime.threadpool import TASK_FN, ThreadPool


def _recording_task(counts: np.ndarray, owner: np.ndarray):
    @TASK_FN
    def task(ctx, t):
        counts[t] += 1
        owner[t] = threading.get_native_id()

    return task


@pytest.mark.parametrize("from_ends", [True, False])
@pytest.mark.parametrize("pool_threads", [2, 3])
@pytest.mark.parametrize("n_tasks", [1, 2, 3, 17, 500])
def test_every_task_runs_once_either_order(from_ends: bool, pool_threads: int, n_tasks: int) -> None:
    pool = ThreadPool(pool_threads)
    try:
        pool.tasks_from_ends = from_ends
        assert pool.tasks_from_ends is from_ends
        counts = np.zeros(n_tasks, np.int64)
        owner = np.zeros(n_tasks, np.int64)
        task = _recording_task(counts, owner)
        for _ in range(3):
            counts[:] = 0
            pool.parallel_for(ctypes.cast(task, ctypes.c_void_p).value, 0, n_tasks)
            assert (counts == 1).all()
    finally:
        pool.close()


def test_the_caller_keeps_the_front_and_the_worker_the_back() -> None:
    pool = ThreadPool(2)
    assert pool.tasks_from_ends  # the default
    try:
        n = 400
        counts = np.zeros(n, np.int64)
        owner = np.zeros(n, np.int64)
        task = _recording_task(counts, owner)
        me = threading.get_native_id()
        for _ in range(5):
            counts[:] = 0
            pool.parallel_for(ctypes.cast(task, ctypes.c_void_p).value, 0, n)
            assert (counts == 1).all()
            mine = owner == me
            k = int(mine.sum())
            # however the tasks were shared (a late or descheduled worker takes fewer, none when
            # the job ran serially), the caller's are a prefix and the worker's the rest
            assert mine[:k].all() and not mine[k:].any()
    finally:
        pool.close()
