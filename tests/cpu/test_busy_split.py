"""On a machine the pool judges busy, a parallel run can use a step table whose GEMMs and
convolutions are cut into more, smaller tasks (``Instance.busy_table``, ``EMBER_BUSY_SPLIT``): the
results must be those of numpy / REFERENCE, model inputs read in place included, and a quiet or
serial run keeps the plan's own table. The busy judgement is set by hand (no timing)."""

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.runtime import instance as instance_module
from ember.devices.cpu.runtime.threadpool import ThreadPool


def _models():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((256, 192)) / 16).astype(np.float32)
    x = ops.parameter([96, 256], np.float32, name="x")
    mm = ember.Model([ops.relu(ops.matmul(x, ops.constant(w), False, False))], [x], "mm")  # reads x in place
    k = (rng.standard_normal((48, 16, 3, 3)) / 12).astype(np.float32)
    xi = ops.parameter([1, 16, 28, 28], np.float32, name="img")
    conv = ops.convolution(xi, ops.constant(k), [1, 1], [1, 1], [1, 1], [1, 1])
    cv = ember.Model([ops.relu(conv)], [xi], "conv")
    return [(mm, lambda a: np.maximum(a @ w, 0), (96, 256)), (cv, None, (1, 16, 28, 28))]


def _reference(model, a):
    return ember.Core().compile_model(model, "REFERENCE")([a])[0]


@pytest.mark.parametrize("case", [0, 1], ids=["matmul", "conv"])
def test_a_busy_machine_runs_finer_tasks_with_the_same_results(case, monkeypatch):
    monkeypatch.setenv("EMBER_BUSY_SPLIT", "3")  # off by default (a knob for A/B runs)
    model, oracle, shape = _models()[case]
    cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 2})
    lease = cm._executable.pool
    inst = cm._executable._instances[()]
    table, busy = inst.table, inst.busy_table
    assert busy is not table and (busy[:, 2] >= table[:, 2]).all() and (busy[:, 2] > table[:, 2]).any()
    monkeypatch.setattr(ThreadPool, "_judge", lambda self: None)  # the judgement is set by hand below
    pool = lease.pool
    lease.chooser = None  # busy runs go parallel
    rng = np.random.default_rng(1 + case)
    try:
        pool.busy = True
        for _ in range(3):  # new arrays each run: the in-place input pointers of both tables are patched
            a = rng.standard_normal(shape).astype(np.float32)
            want = oracle(a) if oracle is not None else _reference(model, a)
            np.testing.assert_allclose(cm([a])[0], want, rtol=1e-4, atol=1e-4)
            assert inst._table is busy
        lease.serial = True  # a serial run keeps the plan's coarse tasks
        cm([a])
        assert inst._table is table
        lease.serial = False
    finally:
        pool.busy = False
    a = rng.standard_normal(shape).astype(np.float32)
    want = oracle(a) if oracle is not None else _reference(model, a)
    np.testing.assert_allclose(cm([a])[0], want, rtol=1e-4, atol=1e-4)
    assert inst._table is table


@pytest.mark.parametrize("env,split", [(None, instance_module.BUSY_SPLIT), ("0", 0), ("1", 1), ("3", 3)])
def test_busy_split_knob(env, split, monkeypatch):
    if env is None:
        monkeypatch.delenv("EMBER_BUSY_SPLIT", raising=False)
    else:
        monkeypatch.setenv("EMBER_BUSY_SPLIT", env)
    assert instance_module.busy_split() == split
    model = _models()[0][0]
    inst = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 2})._executable._instances[()]
    assert (inst.busy_table is inst.table) == (split <= 1)


def test_a_plan_can_keep_its_own_tasks_when_busy(monkeypatch):
    monkeypatch.setenv("EMBER_BUSY_SPLIT", "3")
    inst = ember.Core().compile_model(_models()[0][0], "CPU", {"INFERENCE_NUM_THREADS": 2})._executable._instances[()]
    assert inst.busy_table is not inst.table
    inst.busy_table = inst.table  # what load_alone.py --coarse does
    assert inst.busy_table is inst.table
    with pytest.raises(ember.EmberError):
        inst.busy_table = inst.table.copy()
