"""Graph rewrites that take PP-OCR's (PP-LCNetV3 / MobileOne) elementwise tails off the memory
bus: a learnable scale and shift after a convolution's folded BatchNorm go into its weights and
bias (``fold_conv_scale``), so the CPU device runs conv + bias (+ ReLU) as one kernel. Each case
is checked on REFERENCE before and after the pass and on the CPU device against REFERENCE."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.reference.executor import run_model
from ember.graph.model import Model
from ember.passes import get_pass

RNG = np.random.default_rng(20)


def _f(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _conv(x: Any, kind: str, c: int) -> Any:
    if kind == "group":
        return ops.group_convolution(x, _f(c, 1, 1, 3, 3) / 3, [1, 1], [1, 1], [1, 1], [1, 1])
    if kind == "transposed":
        return ops.convolution_backprop_data(x, _f(c, c, 2, 2) / 2, [2, 2], None, [0, 0], [0, 0])
    return ops.convolution(x, _f(c, c, 3, 3) / 6, [1, 1], [1, 1], [1, 1], [1, 1])


def _tail(y: Any, tail: str, c: int) -> Any:
    """conv -> bias -> the tail's ops in order (s/S: scalar/per-channel scale, t/T: shift,
    h: HSwish, r: ReLU); constants on the left of Multiply (as PP-OCR's ONNX has them)."""
    y = ops.add(y, _f(1, c, 1, 1))
    for op in tail:
        if op in "sS":
            y = ops.multiply(_f(1) if op == "s" else _f(1, c, 1, 1), y)
        elif op in "tT":
            y = ops.add(y, _f(1) if op == "t" else _f(c, 1, 1))
        elif op == "h":
            y = ops.hswish(y)
        elif op == "r":
            y = ops.relu(y)
    return y


# (convolution kind, tail, elementwise ops left after the pass)
CASES = [
    ("conv", "st", {"Multiply": 0, "Add": 1}),  # MobileOne: learnable scale and shift
    ("conv", "sth", {"Multiply": 0, "Add": 1}),
    ("conv", "Str", {"Multiply": 0, "Add": 1}),  # then the CPU epilogue takes the ReLU too
    ("group", "STsthst", {"Multiply": 1, "Add": 2}),  # the tail after the HSwish stays
    ("transposed", "sT", {"Multiply": 0, "Add": 1}),
    ("conv", "tt", {"Multiply": 0, "Add": 1}),
]


def _model(kind: str, tail: str, c: int = 8) -> tuple[Model, list[np.ndarray]]:
    x = ops.parameter([1, c, 9, 11], np.float32, name="x")
    return Model([_tail(_conv(x, kind, c), tail, c)], [x], f"{kind}_{tail}"), [_f(1, c, 9, 11)]


@pytest.mark.parametrize("kind,tail,left", CASES, ids=[f"{k}-{t}" for k, t, _ in CASES])
def test_scale_and_shift_fold_into_the_convolution(kind: str, tail: str, left: dict[str, int]) -> None:
    model, feeds = _model(kind, tail)
    before = run_model(model, feeds)[0]
    folded = get_pass("fold_conv_scale").fn(model.clone())
    counts = Counter(n.type_name for n in folded.get_ordered_ops())
    assert {k: counts[k] for k in left} == left
    np.testing.assert_allclose(run_model(folded, feeds)[0], before, rtol=1e-4, atol=1e-4)
    cpu = ember.Core().compile_model(model, "CPU")
    np.testing.assert_allclose(cpu(feeds)[0], before, rtol=1e-4, atol=1e-4)


def _unfoldable(build: Callable[[Any, Any], Any]) -> None:
    x = ops.parameter([1, 4, 5, 5], np.float32, name="x")
    y = ops.add(ops.convolution(x, _f(4, 4, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]), _f(1, 4, 1, 1))
    model = Model(build(x, y) if isinstance(build(x, y), list) else [build(x, y)], [x])
    n_before = Counter(n.type_name for n in model.get_ordered_ops())
    folded = get_pass("fold_conv_scale").fn(model.clone())
    assert Counter(n.type_name for n in folded.get_ordered_ops()) == n_before


def test_what_must_not_fold() -> None:
    """A biased output used twice, a scale that broadcasts beyond the channels, a non-finite
    scale and a computed scale stay as they are."""
    _unfoldable(lambda x, y: [ops.multiply(y, _f(1)), ops.relu(y)])  # bias Add used twice
    _unfoldable(lambda x, y: ops.multiply(y, _f(1, 4, 5, 1)))  # per position, not per channel
    _unfoldable(lambda x, y: ops.multiply(y, np.array([np.inf], np.float32)))
    _unfoldable(lambda x, y: ops.multiply(y, x))


@pytest.mark.parametrize("neck", ["fpn", "se-fpn", "residual"])
def test_elementwise_chain_runs_through_a_late_operand(neck: str) -> None:
    """``order_chain_operands``: an elementwise chain whose next op adds an operand computed by
    another branch (an FPN's upsampled map) takes that op into the same program, whichever input
    order the model has; an epilogue residual keeps its fusion. Same values as REFERENCE."""
    c = 8
    x = ops.parameter([1, c, 8, 10], np.float32, name="x")
    h = ops.add(ops.convolution(x, _f(c, c, 1, 1) / 3, [1, 1], [0, 0], [0, 0], [1, 1]), _f(1, c, 1, 1))
    small = ops.max_pool(x, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]).output(0)
    up = ops.interpolate(small, np.array([1, 1, 2, 2], np.float32), "nearest", "scales")
    if neck == "fpn":  # hswish(conv) + up: two programs without the reorder
        y, programs = ops.add(ops.hswish(h), up), 1
    elif neck == "se-fpn":  # PP-OCR's RSE neck: h * se + h + up
        se = ops.sigmoid(ops.reduce_mean(h, np.array([2, 3], np.int64), True))
        y, programs = ops.add(ops.add(h, ops.multiply(h, se)), up), 2  # se's sigmoid is a program of its own
    else:  # a convolution with the chain as its residual: the epilogue takes the Add, no program for it
        chain = ops.hswish(ops.multiply(ops.relu(x), _f(1)))
        y, programs = ops.add(chain, ops.convolution(up, _f(c, c, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1])), 1
    model = Model([y], [x], neck)
    feeds = [_f(1, c, 8, 10)]
    ref = ember.Core().compile_model(model, "REFERENCE")(feeds)[0]
    cm = ember.Core().compile_model(model, "CPU")
    np.testing.assert_allclose(cm(feeds)[0], ref, rtol=1e-5, atol=1e-5)
    eltwise = [op.type_name for op in cm._executable.program.ops if op.type_name.startswith("Eltwise")]
    assert len(eltwise) == programs, eltwise
