"""One thread pool per process: compiled models with the same thread count and pinning share one
set of workers (``lease_pool``); their results, checked against numpy, stay right when several
Python threads call them at once; the pool closes with its last model. No timing: counters and
identities only (the machine may be busy)."""

import gc
import os
import threading

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.runtime import threadpool as tp
from ember.devices.cpu.runtime.threadpool import ModeChooser, PoolLease, ThreadPool, lease_pool


def _mlp(seed: int, n: int = 96):
    """A two-layer MatMul model (parallel GEMM jobs) and its numpy oracle."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    w2 = (rng.standard_normal((n, 64)) / np.sqrt(n)).astype(np.float32)
    x = ops.parameter([48, n], np.float32, name="x")
    h = ops.relu(ops.matmul(x, ops.constant(w1), False, False))
    model = ember.Model([ops.matmul(h, ops.constant(w2), False, False)], [x], f"mlp{seed}")
    return model, lambda a: np.maximum(a @ w1, 0) @ w2


def _compile(model, threads=2):
    return ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})


def _threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def test_models_of_the_same_size_share_one_pool_and_start_no_threads():
    models = [_mlp(s) for s in range(3)]
    first = _compile(models[0][0])
    before = _threads()
    others = [_compile(m) for m, _ in models[1:]]
    assert _threads() - before == set()  # the second and third compile started no worker
    leases = [cm._executable.pool for cm in (first, *others)]
    assert all(isinstance(le, PoolLease) for le in leases)
    assert leases[0].pool is leases[1].pool is leases[2].pool
    assert len({id(le.chooser) for le in leases}) == 3  # each model keeps its own run-mode chooser
    one = _compile(models[0][0], threads=1)
    assert one._executable.pool.pool is not leases[0].pool
    a = np.random.default_rng(9).standard_normal((48, 96)).astype(np.float32)
    for cm, (_, oracle) in zip((first, *others), models):
        np.testing.assert_allclose(cm([a])[0], oracle(a), rtol=1e-4, atol=1e-4)


def test_models_called_from_several_threads_at_once_are_right():
    """Three models on one pool, each called from its own Python thread: a job that finds the
    pool taken by another thread's job runs on its caller; every result matches numpy."""
    models = [_mlp(10 + s) for s in range(3)]
    compiled = [_compile(m) for m, _ in models]
    pool = compiled[0]._executable.pool.pool
    assert all(cm._executable.pool.pool is pool for cm in compiled)
    s0 = pool.stats()
    errors: list[BaseException] = []
    start = threading.Barrier(3, timeout=60)
    runs = 25

    def work(i: int) -> None:
        try:
            rng = np.random.default_rng(100 + i)
            req = compiled[i].create_infer_request()
            oracle = models[i][1]
            start.wait()
            for _ in range(runs):
                a = rng.standard_normal((48, 96)).astype(np.float32)
                np.testing.assert_allclose(req.infer([a])[0], oracle(a), rtol=1e-4, atol=1e-4)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert not any(t.is_alive() for t in threads)
    d = pool.stats() - s0
    # every job of every run went somewhere: in parallel, or on its caller (held back or serial runs)
    assert d.jobs + d.serial_jobs > 0


def test_the_pool_closes_with_its_last_model_and_opens_again():
    (ma, fa), (mb, fb) = _mlp(20), _mlp(21)
    a_cm, b_cm = _compile(ma, threads=3), _compile(mb, threads=3)  # a size no other test keeps alive
    pool = a_cm._executable.pool.pool
    assert b_cm._executable.pool.pool is pool and pool._users >= 2
    x = np.random.default_rng(1).standard_normal((48, 96)).astype(np.float32)
    a_cm._executable.close()
    a_cm._executable.close()  # idempotent: released once
    assert not pool._closed
    np.testing.assert_allclose(b_cm([x])[0], fb(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ember.EmberError):
        a_cm._executable.pool.parallel_for(0, 0, 1)
    del b_cm
    gc.collect()
    assert pool._closed and pool not in tp.shared_pools()  # the last model went: workers stopped
    c_cm = _compile(ma, threads=3)
    assert c_cm._executable.pool.pool is not pool and not c_cm._executable.pool.pool._closed
    np.testing.assert_allclose(c_cm([x])[0], fa(x), rtol=1e-4, atol=1e-4)


def test_streams_of_one_model_never_share_but_stream_k_of_two_models_does():
    (ma, _), (mb, _) = _mlp(30), _mlp(31)
    ea, eb = _compile(ma)._executable, _compile(mb)._executable
    a1, a2, b1 = ea.clone(), ea.clone(), eb.clone()
    pools = [e.pool.pool for e in (ea, a1, a2)]
    assert len({id(p) for p in pools}) == 3
    assert b1.pool.pool is a1.pool.pool and eb.pool.pool is ea.pool.pool


def test_share_pools_knob_gives_each_model_its_own(monkeypatch):
    monkeypatch.setenv(tp.SHARE_POOLS_ENV, "0")
    a, b = lease_pool(2), lease_pool(2)
    try:
        assert a.pool is not b.pool
    finally:
        a.close()
        b.close()
    assert a.pool._closed and b.pool._closed


def test_each_model_chooses_its_mode_from_its_own_times_and_quiet_resets_all(monkeypatch):
    """The run-mode chooser is per model (its quiet reference is that model's time); the load
    judgement is the pool's: turning quiet resets every model's chooser."""
    monkeypatch.setattr(tp, "load_counters", lambda cpus: None)  # the judgement is driven by hand
    a, b = lease_pool(2, slot=97), lease_pool(2, slot=97)
    try:
        pool = a.pool
        assert b.pool is pool and a.chooser is not b.chooser
        for le in (a, b):
            le.chooser = ModeChooser(pairs=2)
        pool._set_busy(True)
        for le, serial in ((a, None), (b, None)):
            for _ in range(3):
                le.adapt()
                serial = le.serial_run if serial is None else serial
                le.finished()
        assert a.chooser.step == 3 and b.chooser.step == 3  # each counted its own runs only
        assert len(a.chooser.times[False]) + len(a.chooser.times[True]) == 3
        pool._set_busy(False)
        assert a.chooser.step == 0 and b.chooser.step == 0
        a.serial = True
        a.adapt()
        assert a.serial_run and not b.serial
        b.adapt()
        assert not b.serial_run  # a's setting is a's
    finally:
        a.close()
        b.close()


def test_a_model_compiled_before_a_fork_runs_in_the_child():
    model, oracle = _mlp(40)
    cm = _compile(model)
    x = np.random.default_rng(2).standard_normal((48, 96)).astype(np.float32)
    np.testing.assert_allclose(cm([x])[0], oracle(x), rtol=1e-4, atol=1e-4)
    parent_pool = cm._executable.pool.pool
    pid = os.fork()
    if pid == 0:  # child: no worker threads; old pools run on the caller, new leases get new pools
        try:
            ok = np.allclose(cm([x])[0], oracle(x), rtol=1e-4, atol=1e-4)
            fresh = lease_pool(2)
            ok = ok and fresh.pool is not parent_pool and isinstance(fresh.pool, ThreadPool)
            fresh.close()
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_a_lease_released_while_a_pool_is_being_made_does_not_deadlock(monkeypatch):
    """A garbage collection inside ``lease_pool`` (it allocates) may run a dead model's finalizer,
    which releases its lease: the registry's lock must let it (a hang here is the failure)."""
    other = lease_pool(2, slot=95)
    real_init = ThreadPool.__init__

    def init(self, *args, **kwargs):
        other.close()  # what a finalizer run by a collection at this point does
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(ThreadPool, "__init__", init)
    made = []
    t = threading.Thread(target=lambda: made.append(lease_pool(2, slot=94)), daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive() and len(made) == 1
    assert other.pool._closed and not made[0].pool._closed
    made[0].close()
