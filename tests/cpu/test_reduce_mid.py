"""The ``mid`` reduction (``kernels/reduce.py``: ``[outer, R, inner]`` reduced over R, vectors
across the inner axis, accumulated row by row in memory order; narrower inner blocks when the
outer rows give two threads too few tasks) against numpy: PP-OCR det's squeeze-excitation
means (19,200 rows of 96 and 24 channels), tails, blocks wider than ``MID_BLOCK``, every op,
NaN, f32 and the integer and f64 types, one and two threads; and a global average pool
model on the CPU device against REFERENCE."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.kernels import reduce as rd
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.graph.model import Model

# (outer, R, inner, op, pre, dtype)
CASES = [
    (1, 19200, 96, "sum", "none", "float32"),  # det's 120x160x96 mean (scaled below)
    (1, 4800, 24, "max", "none", "float32"),
    (3, 50, 100, "min", "abs", "float32"),   # 6 full vectors and a 4-lane tail
    (2, 33, 300, "sum", "square", "float32"),  # wider than MID_BLOCK: two blocks
    (1, 7, 17, "prod", "none", "float32"),
    (1, 640, 40, "sum", "none", "int32"),
    (2, 100, 70, "max", "none", "float64"),
]


def _id(c: tuple) -> str:
    return f"{c[0]}x{c[1]}x{c[2]}-{c[3]}-{c[4]}-{c[5]}"


def _numpy(x: np.ndarray, op: str, pre: str) -> np.ndarray:
    v = np.abs(x) if pre == "abs" else x * x if pre == "square" else x
    return {"sum": np.sum, "max": np.max, "min": np.min, "prod": np.prod}[op](v, axis=1)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_mid_reduction_matches_numpy(case: tuple, threads: int) -> None:
    outer, r, inner, op, pre, dtype = case
    rng = np.random.default_rng(outer * 7 + r + inner)
    x = aligned_empty((outer, r, inner), np.dtype(dtype))
    if dtype == "int32":
        x[:] = rng.integers(-50, 50, x.shape)
    else:
        x[:] = rng.standard_normal(x.shape) * (0.2 if op == "prod" else 1.0) + (1.0 if op == "prod" else 0.0)
    if op in ("max", "min") and dtype != "int32":
        x[0, r // 2, 3] = np.nan  # propagates, as numpy's
    scale = 1.0 / r if op == "sum" and dtype == "float32" else 1.0
    y = aligned_empty((outer, inner), np.dtype(dtype))
    y[:] = 0
    k = rd.reduce_kernel(x, y, op, threads, pre=pre, scale=scale)
    if threads > 1 and outer * r * inner > 4096 and inner > 16:
        assert k.n_tasks >= 2 * outer  # blocks narrower than the row: both threads get work
    k.run()
    want = _numpy(x.astype(np.float64), op, pre) * scale
    if dtype == "int32":
        np.testing.assert_array_equal(y, want.astype(np.int64).astype(np.int32))
    else:
        np.testing.assert_allclose(y, want, rtol=2e-5 if dtype == "float32" else 1e-12, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_global_average_pool_matches_reference(threads: int) -> None:
    x = ops.parameter([1, 24, 60, 80], np.float32, name="x")
    w = (np.random.default_rng(2).standard_normal((24, 24, 1, 1)) / 5).astype(np.float32)
    y = ops.convolution(x, w, [1, 1], [0, 0], [0, 0], [1, 1])  # NHWC rows of 24 channels
    model = Model([ops.reduce_mean(y, np.array([2, 3], np.int64), True)], [x], "gap")
    feeds = [np.random.default_rng(3).standard_normal((1, 24, 60, 80)).astype(np.float32)]
    ref = ember.Core().compile_model(model, "REFERENCE")(feeds)[0]
    got = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})(feeds)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
