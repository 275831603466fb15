"""Reference kernels inside a CPU plan run with numpy's BLAS held to one thread, and the
previous setting comes back after the run (runtime/blas.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.runtime import blas
from ember.graph.model import Model


def _blas_threads() -> list[int]:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]


def test_reference_kernels_run_with_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _blas_threads()
    if not before:
        pytest.skip("numpy's BLAS is not one threadpoolctl sees")
    seen: list[list[int]] = []
    x = ops.parameter([2, 5, 3], np.float32, name="x")
    sm = ops.softmax(ops.relu(x), 1)  # a middle-axis softmax: reference kernel
    model = Model([sm], [x], "fallback")
    cls = type(sm)
    original = cls.evaluate

    def spy(self, inputs):  # noqa: ANN001, ANN202
        seen.append(_blas_threads())
        return original(self, inputs)

    monkeypatch.setattr(cls, "evaluate", spy)
    cm = ember.Core().compile_model(model, "CPU")
    assert "SoftMax" in cm._executable.program.stats["fallbacks"]
    a = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    got = cm([a])[0]
    assert seen and all(s == [blas.BLAS_THREADS] * len(before) for s in seen)
    assert _blas_threads() == before
    e = np.exp(np.maximum(a, 0))
    np.testing.assert_allclose(got, e / e.sum(1, keepdims=True), rtol=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fallback reads /proc/self/maps")
def test_openblas_fallback_sets_what_threadpoolctl_sees() -> None:
    before = _blas_threads()
    setters = blas._openblas_setters()
    if not before or not setters:
        pytest.skip("numpy is not linked with OpenBLAS")
    (get, put), = setters[:1]
    # several BLAS libraries may be loaded (numpy's, scipy's, torch's): compare as a multiset
    start = get()
    assert start in before
    if start == 1:
        pytest.skip("the first BLAS library already runs one thread")
    try:
        put(1)
        after = _blas_threads()
        assert after.count(1) == before.count(1) + 1 and get() == 1
    finally:
        put(start)
    assert _blas_threads() == before
