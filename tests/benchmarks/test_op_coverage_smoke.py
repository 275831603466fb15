"""benchmarks/op_coverage.py's measuring parts (the settle between engines and the per-run
diagnosis) on toy jobs, so that the tool does not rot. Asserts structure, never speed."""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ember.devices.cpu.runtime.threadpool import TASK_FN, ThreadPool

ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    spec = importlib.util.spec_from_file_location("ember_benchmarks_op_coverage", ROOT / "benchmarks" / "op_coverage.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def test_settle_waits_for_a_spinning_thread():
    assert tool.settle(window_s=0.005, max_s=0.5) < 0.5  # nothing spins: one window or a few
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    t = threading.Thread(target=spin)
    t.start()
    try:
        waited = tool.settle(window_s=0.005, max_s=0.05)
    finally:
        stop.set()
        t.join()
    assert waited >= 0.05  # never idle: it gives up at max_s


def test_measure_settles_after_every_round():
    settled = [[], []]
    out = tool.measure([lambda: None, lambda: None], runs=6, rounds=3, settled=settled)
    assert [len(r) for r in out[0]] == [2, 2, 2] and len(out[1]) == 3
    assert [len(s) for s in settled] == [3, 3] and min(min(s) for s in settled) > 0


def test_diagnosis_counts_collections_and_pool_jobs_per_run():
    pool = ThreadPool(2)
    counts = np.zeros(64, np.int64)

    @TASK_FN
    def task(ctx, t):
        counts[t] += 1

    addr = ctypes.cast(task, ctypes.c_void_p).value
    compiled = SimpleNamespace(compiled=SimpleNamespace(_executable=SimpleNamespace(pool=pool)))
    try:
        diagnosis = tool.Diagnosis(compiled)
        calls = [0]

        def job():
            calls[0] += 1
            pool.parallel_for(addr, 0, 64)
            if calls[0] == 3:
                gc.collect()  # a generation-2 collection inside run 3

        run = diagnosis.wrap(job)
        for _ in range(5):
            run()
        rows = np.asarray(diagnosis.rows)
        # one job per run: parallel, or on the caller alone when the pool's straggler check put it
        # in a serial spell (only when workers are late, i.e. on a busy machine such as CI's)
        assert rows.shape == (5, 10) and (rows[:, 4] + rows[:, 8] == 1).all()
        serial = ((rows[:, 4] == 0) & (rows[:, 8] == 1)).sum()  # 0 on a quiet machine
        # rescues per run add up to the pool's own count (a worker is late, and rescued, only
        # when the machine is busy: CI's load can make that happen, so no fixed figure here)
        assert (rows[:, 7] >= 0).all() and rows[:, 7].sum() == pool.stats().rescues
        assert rows[2, 3] >= 1
        summary = diagnosis.summary()
        assert summary["runs"] == 5 and summary["all"]["gc_gen2_runs"] >= 0.2
        assert set(summary["slowest_1pct"]) == {"ms", "gc_runs", "gc_gen2_runs", "jobs", "wakes", "wait_us",
                                                  "rescues", "serial_runs", "busy_runs"}
        assert summary["all"]["serial_runs"] == pytest.approx(serial / 5)
        pool.serial = True
        run()
        assert diagnosis.rows[-1][4] == 0 and diagnosis.rows[-1][8] == 1  # a serial run: its job on the caller
        assert diagnosis.summary()["all"]["serial_runs"] == pytest.approx((serial + 1) / 6)
        pool.serial = False
        result = {"model": "toy", "error": "", "fallbacks": {}, "diagnosis": summary,
                  "engines": [{"engine": "ember", "median_ms": 1.0, "p99_ms": 1.5, "p99_over_median": 1.5,
                               "round_spread": 1.0, "max_rel_diff": 0.0, "settle_ms": 10.0}]}
        text = tool.format_text([result])
        assert "settle ms" in text and "toy: ember slowest 1%" in text and "futex wake-ups" in text
        assert "serial runs" in text
    finally:
        pool.close()


def test_compare_rounds_settle_between_engines(monkeypatch):
    """compare.py's alternating rounds settle after every slice when pause_s > 0 (op_coverage's
    settle is the same function), and not at all with pause_s = 0."""
    calls = []
    monkeypatch.setattr(tool.compare, "settle", lambda: calls.append(1) or 0.0)
    out = tool.compare.alternate([lambda: "a", lambda: "b"], rounds=3, pause_s=0.001)
    assert out == [["a"] * 3, ["b"] * 3] and len(calls) == 6
    tool.compare.alternate([lambda: "a"], rounds=2, pause_s=0.0)
    assert len(calls) == 6


def test_settle_needs_consecutive_quiet_windows():
    """One quiet window is not enough: settle returns after `quiet_windows` in a row."""
    waited = tool.compare.settle(window_s=0.005, quiet_windows=4, max_s=1.0)
    assert waited >= 4 * 0.005
