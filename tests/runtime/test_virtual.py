"""AUTO, HETERO and MULTI with REFERENCE and fake devices that run only some ops."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from runtime_helpers import SMALL_OPS, FakeDevice, small_expected, small_model

import ember.properties as props
import ember.properties.hint as hints
from ember.devices.base import register_device, unregister_device
from ember.errors import EmberError
from ember.runtime import AsyncInferQueue, Core

X = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)


@pytest.fixture
def devices():
    """FULL runs every op of small_model; PART only Add and Multiply (not ReLU/Subtract)."""
    made = {"FULL": FakeDevice("FULL", SMALL_OPS, rank=10),
            "PART": FakeDevice("PART", {"Add", "Multiply"}, rank=5),
            "SLOW": FakeDevice("SLOW", SMALL_OPS, rank=200)}
    for name, dev in made.items():
        register_device(name, lambda d=dev: d)
    yield made
    for name in made:
        unregister_device(name)


# -- AUTO --------------------------------------------------------------------------------------

def test_auto_with_only_reference():
    # AUTO prefers CPU (ember's native device) whenever it is registered
    want = "CPU" if "CPU" in Core().available_devices else "REFERENCE"
    cm = Core().compile_model(small_model(), "AUTO")
    assert cm.get_property(props.execution_devices) == [want]
    np.testing.assert_allclose(cm([X])["y"], small_expected(X))


def test_auto_picks_best_capable_device_and_logs(devices, caplog):
    with caplog.at_level(logging.INFO, logger="ember"):
        cm = Core().compile_model(small_model(), "AUTO")
    # PART ranks best but cannot run ReLU: AUTO passes over it (a fallback, logged as a warning)
    assert cm.get_property(props.execution_devices) == ["FULL"]
    assert any("fell back to FULL" in r.getMessage() and "PART" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    np.testing.assert_allclose(cm([X])["y"], small_expected(X))
    assert devices["FULL"].runs == 1 and not devices["PART"].compiled


def test_auto_choice_is_logged_at_info(devices, caplog):
    m = small_model()
    with caplog.at_level(logging.INFO, logger="ember"):
        cm = Core().compile_model(m, "AUTO:FULL,REFERENCE")
    assert cm.get_property(props.execution_devices) == ["FULL"]
    assert any("AUTO chose FULL" in r.getMessage() for r in caplog.records)


def test_auto_priority_list_is_followed(devices):
    cm = Core().compile_model(small_model(), "AUTO:REFERENCE,FULL")
    assert cm.get_property(props.execution_devices) == ["REFERENCE"]
    cm = Core().compile_model(small_model(), "AUTO:SLOW,FULL")
    assert cm.get_property(props.execution_devices) == ["SLOW"]


def test_auto_fallback_can_be_an_error(devices):
    core = Core()
    with pytest.raises(EmberError, match="ALLOW_FALLBACK") as e:
        core.compile_model(small_model(), "AUTO:PART,REFERENCE", {props.allow_fallback: False})
    assert "PART" in str(e.value) and "ReLU" in str(e.value)
    core.set_property("AUTO", {props.allow_fallback: False})
    with pytest.raises(EmberError, match="ALLOW_FALLBACK"):
        core.compile_model(small_model(), "AUTO:PART,REFERENCE")
    # no fallback needed: fine
    core.compile_model(small_model(), "AUTO:FULL,REFERENCE")


def test_auto_unknown_and_missing_devices(devices, caplog):
    with caplog.at_level(logging.WARNING, logger="ember"):
        cm = Core().compile_model(small_model(), "AUTO:CPU_NOT_HERE,REFERENCE")
    assert cm.get_property(props.execution_devices) == ["REFERENCE"]
    assert any("CPU_NOT_HERE" in r.getMessage() for r in caplog.records)
    with pytest.raises(EmberError, match="no device"):
        Core().compile_model(small_model(), "AUTO:PART")


def test_auto_cumulative_throughput_uses_all_capable_devices(devices):
    cm = Core().compile_model(small_model(), "AUTO:FULL,PART,REFERENCE",
                              {hints.performance_mode: hints.PerformanceMode.CUMULATIVE_THROUGHPUT})
    assert cm.get_property(props.execution_devices) == ["FULL", "REFERENCE"]


def test_auto_passes_properties_to_the_chosen_device(devices):
    core = Core()
    core.set_property("FULL", {props.enable_profiling: True})
    cm = core.compile_model(small_model(), "AUTO:FULL", {props.num_streams: 2})
    assert cm.get_property(props.num_streams) == 2 and cm.get_property(props.enable_profiling) is True


def test_query_model_per_device(devices):
    core = Core()
    m = small_model()
    assert set(core.query_model(m, "PART")) >= {"add", "mul"}
    assert not {"relu", "sub"} & set(core.query_model(m, "PART"))
    assert set(core.query_model(m, "REFERENCE")) >= {"add", "relu", "mul", "sub"}


# -- HETERO ------------------------------------------------------------------------------------

def test_hetero_splits_by_supported_ops(devices, caplog):
    core = Core()
    m = small_model()
    placement = core.query_model(m, "HETERO:PART,REFERENCE")
    assert placement["add"] == "PART" and placement["mul"] == "PART"
    assert placement["relu"] == "REFERENCE" and placement["sub"] == "REFERENCE"
    with caplog.at_level(logging.INFO, logger="ember"):
        cm = core.compile_model(m, "HETERO:PART,REFERENCE")
    np.testing.assert_allclose(cm([X])["y"], small_expected(X))
    assert cm.get_property(props.execution_devices) == ["PART", "REFERENCE"]
    # add | relu | mul | sub alternate devices: four subgraphs, PART compiled two of them
    assert len(devices["PART"].compiled) == 2
    assert all({n.type_name for n in sub.get_ordered_ops()} <= {"Add", "Multiply", "Parameter", "Const", "Result"}
               for sub in devices["PART"].compiled)
    assert any("HETERO placed ops" in r.getMessage() and "ReLU" in r.getMessage() for r in caplog.records)
    assert any("4 subgraph" in r.getMessage() for r in caplog.records)


def test_hetero_keeps_independent_ops_together():
    """Two branches, one per device: the order groups each device's ops (2 subgraphs, not 4)."""
    import ember.opset as ops
    from ember.graph.model import Model

    dev = FakeDevice("ADDONLY", {"Add"}, rank=5)
    register_device("ADDONLY", lambda: dev)
    try:
        x = ops.parameter([3], np.float32, name="x")
        a1 = ops.add(x, ops.constant(np.float32(1)), name="a1")
        r1 = ops.relu(x, name="r1")
        a2 = ops.add(a1, ops.constant(np.float32(2)), name="a2")
        r2 = ops.relu(r1, name="r2")
        m = Model([ops.result(a2, name="o1"), ops.result(r2, name="o2")], [x], "branches")
        cm = Core().compile_model(m, "HETERO:ADDONLY,REFERENCE")
        xs = np.array([-1, 0, 2], np.float32)
        out = cm([xs])
        np.testing.assert_array_equal(out[0], xs + 3)
        np.testing.assert_array_equal(out[1], np.maximum(xs, 0))
        assert len(dev.compiled) == 1
    finally:
        unregister_device("ADDONLY")


def test_hetero_errors(devices):
    core = Core()
    with pytest.raises(EmberError, match="HETERO:PART cannot run"):
        core.compile_model(small_model(), "HETERO:PART")
    with pytest.raises(EmberError, match="needs a device list"):
        core.compile_model(small_model(), "HETERO")
    with pytest.raises(EmberError, match="ALLOW_FALLBACK"):
        core.compile_model(small_model(), "HETERO:PART,REFERENCE", {props.allow_fallback: False})


def test_hetero_profiling_and_async(devices):
    cm = Core().compile_model(small_model(), "HETERO:PART,REFERENCE", {props.enable_profiling: True})
    q = AsyncInferQueue(cm, 3)
    got = {}
    q.set_callback(lambda r, u: got.__setitem__(u, (r.get_output_tensor().data.copy(),
                                                    {p.node_name for p in r.get_profiling_info()})))
    for i in range(6):
        q.start_async({"x": X + i}, i)
    q.wait_all()
    for i in range(6):
        np.testing.assert_allclose(got[i][0], small_expected(X + i))
        assert {"add", "relu", "mul", "sub"} <= got[i][1]


# -- MULTI -------------------------------------------------------------------------------------

def test_multi_spreads_concurrent_requests(devices):
    gate = threading.Barrier(2, timeout=60)  # generous: only a loaded machine makes the two runs meet late
    cm = Core().compile_model(small_model(), "MULTI:FULL,SLOW")
    assert cm.get_property(props.execution_devices) == ["FULL", "SLOW"]
    assert cm.get_property(props.num_streams) >= 2
    multi = cm._executable
    # hold each device's first run until both run at once: only possible if requests are spread
    original = {name: e.run for name, e in zip(multi.execution_devices, multi._exes)}
    for name, exe in zip(multi.execution_devices, multi._exes):
        def run(inputs, profile=None, _name=name):
            if multi.runs[_name] == 1:
                gate.wait()
            return original[_name](inputs, profile)
        exe.run = run
    q = AsyncInferQueue(cm, 4)
    results = {}
    q.set_callback(lambda r, u: results.__setitem__(u, r.get_output_tensor().data.copy()))
    for i in range(12):
        q.start_async({"x": X * i}, i)
    q.wait_all()
    assert sorted(results) == list(range(12))
    for i in range(12):
        np.testing.assert_allclose(results[i], small_expected(X * i))
    assert multi.runs["FULL"] >= 1 and multi.runs["SLOW"] >= 1
    assert multi.runs["FULL"] + multi.runs["SLOW"] == 12


def test_multi_needs_every_device_to_run_the_model(devices):
    with pytest.raises(EmberError, match="MULTI: PART cannot run"):
        Core().compile_model(small_model(), "MULTI:FULL,PART")
    with pytest.raises(EmberError, match="unknown device"):
        Core().compile_model(small_model(), "MULTI:FULL,NOPE")


def test_virtual_devices_are_not_available_devices(devices):
    avail = Core().available_devices
    assert {"FULL", "PART", "REFERENCE"} <= set(avail)
    assert not {"AUTO", "HETERO", "MULTI"} & set(avail)
