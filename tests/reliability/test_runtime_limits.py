"""Settings bounded by the machine, inference that can be stopped (timeout, cancel from
another thread), AsyncInferQueue callbacks that start jobs, and huge batches: each ends in
an ember error or a correct result, never a hang or a raw exception."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from reliability_helpers import counting_loop, small_model

import ember
import ember.properties as props
from ember import opset
from ember.errors import EmberError, InferenceCancelled, PropertyError

DEVICES = ["REFERENCE", "CPU"]
HOURS = np.int64(10**12)  # iterations: hours of work for the counting loop


def _in_thread(fn, timeout: float = 60.0):
    """Run ``fn`` on a daemon thread; a hang is a failed test, not a stuck test run."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"still running after {timeout} s (a hang)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# -- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("NUM_STREAMS", 2**31), ("NUM_STREAMS", 1000), ("INFERENCE_NUM_THREADS", 2**40),
    ("INFERENCE_NUM_THREADS", 1000), ("PERFORMANCE_HINT_NUM_REQUESTS", 2**62),
])
def test_numeric_properties_are_bounded_by_the_machine(key: str, value: int) -> None:
    def compile_it() -> None:
        ember.Core().compile_model(small_model(4), "REFERENCE", {key: value})

    with pytest.raises(PropertyError, match="more than this machine allows"):
        _in_thread(compile_it)
    with pytest.raises(PropertyError, match=key):
        ember.Core().set_property("CPU", {key: value})


def test_async_queue_jobs_bounded() -> None:
    cm = ember.compile_model(small_model(4), "REFERENCE")
    with pytest.raises(EmberError, match="jobs"):
        ember.AsyncInferQueue(cm, 2**31)


# -- AsyncInferQueue: a callback that starts the next job ---------------------------------------

@pytest.mark.parametrize("jobs", [1, 2])
def test_callback_calling_start_async_does_not_deadlock(jobs: int) -> None:
    cm = ember.compile_model(small_model(4), "REFERENCE")
    queue = ember.AsyncInferQueue(cm, jobs)
    x = np.ones((2, 4), np.float32)
    want = cm(x)[0]
    seen: list[int] = []

    def callback(request: ember.InferRequest, n: int) -> None:
        np.testing.assert_array_equal(request.get_output_tensor(0).data, want)
        seen.append(n)
        if n < 20:
            queue.start_async(x, n + jobs)

    queue.set_callback(callback)

    def run() -> None:
        for k in range(jobs):
            queue.start_async(x, k)
        queue.wait_all()

    _in_thread(run)
    assert sorted(seen) == list(range(20 + jobs))


def test_wait_all_from_a_callback_is_an_error() -> None:
    cm = ember.compile_model(small_model(4), "REFERENCE")
    queue = ember.AsyncInferQueue(cm, 1)
    queue.set_callback(lambda request, _: queue.wait_all())
    queue.start_async(np.ones((2, 4), np.float32))
    with pytest.raises(EmberError, match="never"):
        _in_thread(queue.wait_all)


# -- bounded inference ------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_inference_timeout_stops_a_data_driven_loop(device: str) -> None:
    cm = ember.compile_model(counting_loop(), device, {props.inference_timeout: 200})
    assert cm.get_property("INFERENCE_TIMEOUT") == 200
    x = np.zeros(4, np.float32)
    np.testing.assert_array_equal(cm([np.int64(5), x])[0], np.full(4, 5, np.float32))
    with pytest.raises(InferenceCancelled, match="INFERENCE_TIMEOUT=200"):
        _in_thread(lambda: cm([HOURS, x]))
    # the compiled model (and its stream) is still usable afterwards
    np.testing.assert_array_equal(cm([np.int64(7), x])[0], np.full(4, 7, np.float32))
    request = cm.create_infer_request()
    request.start_async([HOURS, x])
    with pytest.raises(InferenceCancelled):
        _in_thread(request.wait)


@pytest.mark.parametrize("device", DEVICES)
def test_cancel_from_another_thread(device: str) -> None:
    cm = ember.compile_model(counting_loop(), device)
    x = np.zeros(4, np.float32)
    request = cm.create_infer_request()
    timer = threading.Timer(0.2, request.cancel)
    timer.start()
    with pytest.raises(InferenceCancelled, match="cancel"):
        _in_thread(lambda: request.infer([HOURS, x]))
    request.start_async([HOURS, x])
    time.sleep(0.1)
    request.cancel()
    with pytest.raises(InferenceCancelled):
        _in_thread(request.wait)
    np.testing.assert_array_equal(request.infer([np.int64(3), x])[0], np.full(4, 3, np.float32))
    request.cancel()  # idle: nothing to stop, nothing raised later
    np.testing.assert_array_equal(request.infer([np.int64(2), x])[0], np.full(4, 2, np.float32))


def test_timeout_property_is_validated() -> None:
    with pytest.raises(PropertyError, match="INFERENCE_TIMEOUT"):
        ember.compile_model(small_model(4), "REFERENCE", {"INFERENCE_TIMEOUT": -1})


# -- huge batches -----------------------------------------------------------------------------

def _dynamic_model() -> ember.Model:
    x = opset.parameter([-1, 8], np.float32, name="x")
    return ember.Model([opset.relu(opset.multiply(x, opset.constant(np.float32(2))))], [x], "dyn")


HUGE = np.broadcast_to(np.float32(1), (2**37, 8))  # 4 TiB, as a zero-stride view


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", ["copy", "shared", "set_tensor", "tensor"])
def test_huge_batch_is_an_ember_error(device: str, path: str) -> None:
    cm = ember.compile_model(_dynamic_model(), device)
    request = cm.create_infer_request()
    with pytest.raises(EmberError) as info:
        if path == "copy":
            request.infer(HUGE)
        elif path == "shared":
            request.infer(HUGE, share_inputs=True)
        elif path == "set_tensor":
            request.set_tensor("x", HUGE)
            request.infer()
        else:
            request.set_tensor("x", ember.Tensor(HUGE))
            request.infer()
    assert "\n" not in str(info.value) and "137438953472" in str(info.value)
    np.testing.assert_array_equal(request.infer(np.ones((2, 8), np.float32))[0], np.full((2, 8), 2, np.float32))
