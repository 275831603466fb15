"""InferRequest and AsyncInferQueue: async equals sync, callbacks, tensors, copies, threads."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
from runtime_helpers import SMALL_OPS, FakeDevice, small_expected, small_model, two_input_model

import ember.properties as props
import ember.properties.hint as hints
from ember.devices.base import register_device, unregister_device
from ember.errors import EmberError, InferenceError
from ember.runtime import AsyncInferQueue, Core, Tensor

RNG = np.random.default_rng(7)


def _inputs(n, shape=(2, 3)):
    return [RNG.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _ember_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ember-stream")]


@pytest.fixture
def compiled():
    cm = Core().compile_model(small_model(), "REFERENCE", {hints.performance_mode: hints.PerformanceMode.THROUGHPUT,
                                                           props.num_streams: 2})
    yield cm
    cm.close()


def test_async_equals_sync(compiled):
    xs = _inputs(16)
    sync = [compiled.create_infer_request().infer({"x": x})["y"] for x in xs]
    reqs = [compiled.create_infer_request() for _ in xs]
    for r, x in zip(reqs, xs):
        r.start_async({0: x})
    for r, want, x in zip(reqs, sync, xs):
        r.wait()
        np.testing.assert_array_equal(r.get_output_tensor().data, want)
        np.testing.assert_allclose(want, small_expected(x), rtol=1e-6)


def test_request_callback_fires_once_with_userdata(compiled):
    req = compiled.create_infer_request()
    calls = []
    req.set_callback(lambda u: calls.append((u, threading.current_thread().name)), "first")
    req.start_async(_inputs(1)[0])
    req.wait()
    req.start_async(_inputs(1)[0], userdata="second")
    req.wait()
    assert [u for u, _ in calls] == ["first", "second"]
    assert all(name.startswith("ember-stream") for _, name in calls)  # callbacks run on a worker


def test_queue_callbacks_once_per_job_right_userdata(compiled):
    xs = _inputs(40)
    q = AsyncInferQueue(compiled, 4)
    seen: dict[int, np.ndarray] = {}
    count = [0]
    lock = threading.Lock()

    def cb(request, userdata):
        with lock:
            count[0] += 1
            assert userdata not in seen
            seen[userdata] = request.get_output_tensor(0).data.copy()

    q.set_callback(cb)
    for i, x in enumerate(xs):
        q.start_async({"x": x}, userdata=i)
    q.wait_all()
    assert count[0] == len(xs) and sorted(seen) == list(range(len(xs)))
    for i, x in enumerate(xs):
        np.testing.assert_allclose(seen[i], small_expected(x), rtol=1e-6)
    assert q.is_ready() and len(q) == 4 and q[0] is list(q)[0]
    assert q.userdata[q.get_idle_request_id()] is not None


def test_queue_default_jobs_is_optimal_requests(compiled):
    assert len(AsyncInferQueue(compiled)) == compiled.get_property(props.optimal_number_of_infer_requests)


def test_queue_is_ready_false_while_all_busy():
    gate = threading.Event()

    class Slow(FakeDevice):
        def compile(self, model, config):
            exe = super().compile(model, config)
            run = exe.run

            def slow_run(inputs, profile=None):
                gate.wait(60)  # the test opens it at once; 60 s only against a loaded machine
                return run(inputs, profile)
            exe.run = slow_run
            return exe

    register_device("SLOWFAKE", lambda: Slow("SLOWFAKE", SMALL_OPS))
    try:
        cm = Core().compile_model(small_model(), "SLOWFAKE", {props.num_streams: 2})
        q = AsyncInferQueue(cm, 2)
        q.start_async(_inputs(1)[0], 0)
        q.start_async(_inputs(1)[0], 1)
        assert not q.is_ready()
        assert not q[0].wait_for(10)
        gate.set()
        q.wait_all()
        assert q.is_ready()
        assert q[0].wait_for(0)
        cm.close()
    finally:
        gate.set()
        unregister_device("SLOWFAKE")


def test_errors_reach_wait_and_wait_all(compiled):
    def boom(request, userdata):
        raise ValueError("callback failed")

    q = AsyncInferQueue(compiled, 2)
    q.set_callback(boom)
    q.start_async(_inputs(1)[0], 0)
    with pytest.raises(ValueError, match="callback failed"):
        q.wait_all()
    q.wait_all()  # reported once
    req = compiled.create_infer_request()
    with pytest.raises(InferenceError, match="shape"):
        req.start_async(np.zeros((5, 5), np.float32))


def test_wait_inside_own_callback_is_an_error_not_a_deadlock(compiled):
    req = compiled.create_infer_request()
    errors = []

    def cb(_):
        try:
            req.wait()
        except EmberError as e:
            errors.append(e)

    req.set_callback(cb)
    req.start_async(_inputs(1)[0])
    req.wait()
    assert errors and "callback" in str(errors[0])


def test_busy_request_refuses_a_second_start():
    gate = threading.Event()
    dev = FakeDevice("GATEFAKE", SMALL_OPS)
    register_device("GATEFAKE", lambda: dev)
    try:
        cm = Core().compile_model(small_model(), "GATEFAKE")
        req = cm.create_infer_request()
        req.set_callback(lambda _: gate.wait(60))
        req.start_async(_inputs(1)[0])
        with pytest.raises(EmberError, match="running"):
            req.start_async(_inputs(1)[0])
        with pytest.raises(EmberError, match="running"):
            req.infer(_inputs(1)[0])
        gate.set()
        req.wait()
        cm.close()
    finally:
        gate.set()
        unregister_device("GATEFAKE")


def test_stress_many_threads_share_one_compiled_model():
    cm = Core().compile_model(small_model(), "REFERENCE", {hints.performance_mode: hints.PerformanceMode.THROUGHPUT})
    n_threads, per_thread = 12, 25
    results: dict[tuple[int, int], bool] = {}
    failures: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work(t):
        try:
            barrier.wait(60)  # generous: thread start-up is slow on a loaded machine
            own = cm.create_infer_request()
            q = AsyncInferQueue(cm, 2)
            got = {}
            q.set_callback(lambda r, u: got.__setitem__(u, r.get_output_tensor().data.copy()))
            for i in range(per_thread):
                x = np.full((2, 3), t * 1000 + i, np.float32) * (1 if i % 2 else -1)
                mode = i % 3
                if mode == 0:
                    y = cm({"x": x})["y"]
                elif mode == 1:
                    y = own.infer({"x": x})["y"]
                else:
                    q.start_async({"x": x}, userdata=i)
                    continue
                results[(t, i)] = bool(np.array_equal(y, small_expected(x)))
            q.wait_all()
            for i, y in got.items():
                x = np.full((2, 3), t * 1000 + i, np.float32) * (1 if i % 2 else -1)
                results[(t, i)] = bool(np.array_equal(y, small_expected(x)))
        except BaseException as e:  # noqa: BLE001
            failures.append(e)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(n_threads)]
    deadline = time.monotonic() + 180  # a deadlock, not a slow run: CI's load can stretch the run a lot
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(th.is_alive() for th in threads), "deadlock: a thread did not finish in time"
    assert not failures, failures
    assert len(results) == n_threads * per_thread, "lost inferences"
    assert all(results.values()), "wrong results"
    cm.close()


def test_no_thread_left_after_the_compiled_model_is_gone():
    before = set(_ember_threads())
    cm = Core().compile_model(small_model(), "REFERENCE", {props.num_streams: 3})
    assert set(_ember_threads()) == before  # workers start on the first async request
    q = AsyncInferQueue(cm, 3)
    for x in _inputs(6):
        q.start_async(x)
    q.wait_all()
    assert len(set(_ember_threads()) - before) == 3
    del q, cm
    gc.collect()
    deadline = time.monotonic() + 5
    while set(_ember_threads()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(_ember_threads()) - before == set()


def test_threads_stop_without_a_gc_pass():
    """No reference cycle keeps a compiled model alive: dropping the last reference is enough."""
    import gc as _gc

    before = set(_ember_threads())
    _gc.disable()
    try:
        cm = Core().compile_model(small_model(), "REFERENCE", {props.num_streams: 2})
        cm(_inputs(1)[0])
        q = AsyncInferQueue(cm, 2)
        q.set_callback(lambda r, u: None)
        for x in _inputs(4):
            q.start_async(x)
        q.wait_all()
        assert set(_ember_threads()) - before
        del q, cm
        deadline = time.monotonic() + 5
        while set(_ember_threads()) - before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert set(_ember_threads()) - before == set()
    finally:
        _gc.enable()


def test_streams_run_in_parallel_when_kernels_release_the_gil():
    # Overlap is shown by counting runs in flight, not by timing (timed asserts flake on a
    # loaded machine): with 4 streams, several sleeping "kernels" must be inside run at once.
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    class Sleepy(FakeDevice):
        def compile(self, model, config):
            exe = super().compile(model, config)
            run = exe.run

            def sleepy_run(inputs, profile=None):
                with lock:
                    state["now"] += 1
                    state["peak"] = max(state["peak"], state["now"])
                time.sleep(0.05)  # a native kernel that releases the GIL
                with lock:
                    state["now"] -= 1
                return run(inputs, profile)
            exe.run = sleepy_run
            return exe

    register_device("SLEEPY", lambda: Sleepy("SLEEPY", SMALL_OPS, thread_safe=False))
    try:
        cm = Core().compile_model(small_model(), "SLEEPY", {props.num_streams: 4})
        q = AsyncInferQueue(cm, 4)
        for x in _inputs(8):
            q.start_async(x)
        q.wait_all()
        assert state["peak"] >= 2, f"runs never overlapped on 4 streams (peak {state['peak']})"
        assert len(cm._executor.threads) == 4
        cm.close()
    finally:
        unregister_device("SLEEPY")


def test_close_stops_workers_and_refuses_new_async():
    cm = Core().compile_model(small_model(), "REFERENCE")
    req = cm.create_infer_request()
    req.start_async(_inputs(1)[0])
    req.wait()
    assert cm._executor.threads
    with cm:
        pass
    assert all(not t.is_alive() for t in cm._executor._threads) and not cm._executor.threads
    with pytest.raises(EmberError, match="closed"):
        req.start_async(_inputs(1)[0])
    req.infer(_inputs(1)[0])  # synchronous inference still works on the calling thread


def test_tensors_by_name_port_index():
    cm = Core().compile_model(two_input_model(), "REFERENCE")
    req = cm.create_infer_request()
    a = np.arange(4, dtype=np.float32).reshape(2, 2)
    b = np.full((2, 2), 2, np.float32)
    req.set_tensor("a", Tensor(a))
    req.set_tensor(cm.input(1), Tensor(b))
    req.infer()
    np.testing.assert_array_equal(req.get_tensor("s").data, a + b)
    np.testing.assert_array_equal(req.get_tensor(cm.output(1)).data, a * b)
    np.testing.assert_array_equal(req.get_output_tensor(0).data, a + b)
    np.testing.assert_array_equal(req.get_input_tensor(1).data, b)
    np.testing.assert_array_equal(req.get_tensor("a").data, a)
    req.set_input_tensor(0, Tensor(b))
    req.set_input_tensors({1: Tensor(a)})
    r = req.infer()
    np.testing.assert_array_equal(r["p"], a * b)
    np.testing.assert_array_equal(r[cm.output(0)], a + b)
    assert len(req.input_tensors) == 2 and len(req.output_tensors) == 2
    with pytest.raises(EmberError, match="no input named"):
        req.set_tensor("nope", Tensor(a))
    with pytest.raises(KeyError):
        r["nope"]


def test_output_tensor_receives_results():
    cm = Core().compile_model(two_input_model(), "REFERENCE")
    req = cm.create_infer_request()
    out = Tensor(np.zeros((2, 2), np.float32))
    req.set_output_tensor(1, out)
    a = np.ones((2, 2), np.float32) * 3
    req.infer({"a": a, "b": a})
    np.testing.assert_array_equal(out.data, a * a)
    assert req.get_output_tensor(1) is out


def test_share_inputs_and_outputs_semantics():
    cm = Core().compile_model(small_model(), "REFERENCE")
    req = cm.create_infer_request()
    x = np.ones((2, 3), np.float32)
    req.infer(x, share_inputs=False)
    x[:] = 5  # a copied input is not affected
    np.testing.assert_array_equal(req.get_input_tensor().data, np.ones((2, 3)))
    req.infer(x, share_inputs=True)
    assert np.shares_memory(req.get_input_tensor().data, x)  # a shared input is read in place
    t = Tensor(np.zeros((2, 3), np.float32), shared_memory=True)
    req.set_tensor("x", t)
    t.data[:] = 2  # Tensor inputs are always shared
    np.testing.assert_array_equal(req.infer()["y"], small_expected(np.full((2, 3), 2, np.float32)))
    r1 = req.infer(x, share_outputs=False)["y"]
    r1_copy = r1.copy()
    req.infer(x * 0)
    np.testing.assert_array_equal(r1, r1_copy)  # a copied result is the caller's
    r2 = req.infer(x, share_outputs=True)["y"]
    assert np.shares_memory(r2, req.get_output_tensor().data)
    f64 = np.ones((2, 3), np.float64)
    out = req.infer(f64, share_inputs=True)["y"]  # converting is a copy even when sharing
    assert out.dtype == np.float32 and not np.shares_memory(req.get_input_tensor().data, f64)


def test_profiling_info_per_op():
    cm = Core().compile_model(small_model(), "REFERENCE", {props.enable_profiling: True})
    req = cm.create_infer_request()
    req.infer(_inputs(1)[0])
    info = req.get_profiling_info()
    by_name = {p.node_name: p for p in info}
    assert {"add", "relu", "mul", "sub"} <= set(by_name)
    assert by_name["relu"].node_type == "ReLU"
    assert all(p.real_time.total_seconds() >= 0 and p.status == p.Status.EXECUTED for p in info)
    assert req.latency > 0
    off = Core().compile_model(small_model(), "REFERENCE").create_infer_request()
    off.infer(_inputs(1)[0])
    assert off.get_profiling_info() == []


def test_wrong_inputs_are_named():
    cm = Core().compile_model(two_input_model(), "REFERENCE")
    req = cm.create_infer_request()
    with pytest.raises(InferenceError, match="no value for input"):
        req.infer({"a": np.ones((2, 2), np.float32)})
    with pytest.raises(InferenceError, match="2 inputs"):
        req.infer([np.ones((2, 2), np.float32)])
    with pytest.raises(InferenceError, match="element type f32"):
        req.infer({"a": np.array([["x", "y"], ["z", "w"]]), "b": np.ones((2, 2))})


def test_unset_input_tensor_is_preallocated_and_feeds_the_request(compiled):
    """OpenVINO's samples fill ``ireq.get_tensor(input).data[:]`` before the first inference."""
    queue = AsyncInferQueue(compiled, 2)
    xs = _inputs(len(queue))
    for req, x in zip(queue, xs):
        t = req.get_tensor(compiled.inputs[0])
        assert list(t.shape) == [2, 3] and t.get_size() == 6 and not t.data.any()
        t.data[:] = x
        assert req.get_tensor("x") is t  # the same tensor object, as OpenVINO's request keeps it
    for _ in range(len(queue)):
        queue.start_async()
    queue.wait_all()
    for req, x in zip(queue, xs):
        np.testing.assert_allclose(req.get_output_tensor().data, small_expected(x), rtol=1e-6)


def test_unset_dynamic_input_tensor_is_empty_until_reshaped():
    cm = Core().compile_model(small_model(shape=(-1, 3)), "REFERENCE")
    req = cm.create_infer_request()
    t = req.get_input_tensor()
    assert list(t.shape) == [0, 3] and t.get_size() == 0
    t.shape = [4, 3]  # new storage: the request must read it, not the old empty array
    x = _inputs(1, (4, 3))[0]
    t.data[:] = x
    np.testing.assert_allclose(req.infer()["y"], small_expected(x), rtol=1e-6)
    y = _inputs(1, (2, 3))[0]  # a value passed to infer replaces the handed-out tensor
    np.testing.assert_allclose(req.infer({"x": y})["y"], small_expected(y), rtol=1e-6)
    assert req.get_input_tensor() is not t
    with pytest.raises(InferenceError):
        cm.create_infer_request().infer()  # nothing given and nothing handed out: an error
