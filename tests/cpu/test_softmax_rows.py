"""SoftMax / LogSoftmax on the CPU row kernel (``kernels/norm.py``: the maximum, then
``exp(x - max)`` stored and summed with an exp that knows its argument is at most 0, then a
multiply by ``1 / sum``) against REFERENCE, on long rows (PP-OCR rec's 40 x 6625 classifier
output) and short ones, with huge values, infinities and NaN, on one and two threads."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.graph.model import Model

RNG = np.random.default_rng(7)


def _rows(shape: tuple[int, ...], fill: str) -> np.ndarray:
    x = (RNG.standard_normal(shape) * 6).astype(np.float32)
    flat = x.reshape(-1, shape[-1])
    if fill == "huge":  # differences far beyond exp's range; the largest values near f32's limit
        flat[:, ::3] = 3e38
        flat[:, 1::5] = -3e38
        flat[::2, 2::7] = 1e30
    elif fill == "inf":  # -inf entries, a row of only -inf (NaN, as numpy), a +inf (NaN row)
        flat[:, ::4] = -np.inf
        flat[0] = -np.inf
        if len(flat) > 1:
            flat[1, -1] = np.inf
    elif fill == "nan":  # a NaN anywhere makes its row NaN; the other rows are untouched
        flat[0, shape[-1] // 2] = np.nan
        flat[-1, -1] = np.nan
    elif fill == "tiny":  # differences below exp's normal range: zeros, never subnormal garbage
        flat[:, 1::2] -= 200.0
    return x


# (op, shape, axis, fill)
CASES = [
    ("softmax", (1, 40, 6625), -1, "normal"),  # PP-OCR rec's output: whole vectors, a 1-lane tail
    ("softmax", (1, 40, 6625), 2, "huge"),
    ("softmax", (40, 6625), 1, "inf"),
    ("softmax", (3, 6625), 1, "nan"),
    ("softmax", (1, 8, 40, 40), 3, "normal"),  # the recognizer's attention rows
    ("softmax", (5, 33), -1, "tiny"),  # two vectors and a 1-lane tail
    ("softmax", (4, 16), 1, "inf"),
    ("softmax", (7, 1), 1, "normal"),  # rows of one: all ones
    ("softmax", (2, 3), 1, "nan"),  # shorter than a vector: the tail alone
    ("log_softmax", (6, 1000), 1, "normal"),
    ("log_softmax", (3, 6625), 1, "huge"),
    ("log_softmax", (4, 47), 1, "inf"),
]


def _id(case: tuple) -> str:
    op, shape, axis, fill = case
    return f"{op}-{'x'.join(map(str, shape))}-a{axis}-{fill}"


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # REFERENCE's -3e38 - 3e38
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_softmax_rows_match_reference(case: tuple, threads: int) -> None:
    op, shape, axis, fill = case
    x = ops.parameter(list(shape), np.float32, name="x")
    y = ops.softmax(x, axis) if op == "softmax" else ops.log_softmax(x, axis)
    model = Model([y], [x], op)
    feeds = [_rows(shape, fill)]
    want = ember.Core().compile_model(model, "REFERENCE")(feeds)[0]
    cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})
    assert op.replace("_", "").lower() in {o.type_name.lower() for o in cm._executable.program.ops}, \
        "not on the native row kernel"
    got = cm(feeds)[0]
    assert np.array_equal(np.isnan(got), np.isnan(want))
    if op == "softmax":
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-30)
        ok = ~np.isnan(want).any(axis=axis)
        np.testing.assert_allclose(got.sum(axis=axis)[ok], 1.0, rtol=1e-4)
        assert np.all(got[~np.isnan(got)] >= 0)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
