"""A 4-D channel Concat whose inputs' producers write straight into its buffer (an FPN's
upsampled maps and its last elementwise branch, PP-OCR det's neck): nearest resizes and
elementwise programs write their channel slice, the Concat copies only the other parts.
Every case is checked against REFERENCE, and the plan is checked for what was copied."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.graph.model import Model

RNG = np.random.default_rng(6)


def _f(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _up(x: Any, k: int) -> Any:
    return ops.interpolate(x, np.array([1, 1, k, k], np.float32), "nearest", "scales")


def _branch(x: Any, kind: str, c: int) -> Any:
    """One input of the Concat, built from ``x`` ([1, c, 4, 6] NHWC after its convolution)."""
    h = ops.convolution(x, _f(c, c, 1, 1) / 3, [1, 1], [0, 0], [0, 0], [1, 1])
    if kind == "up2":  # a nearest upsampling written in place
        return _up(ops.max_pool(h, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]).output(0), 2)
    if kind == "up4":
        return _up(ops.max_pool(h, [4, 4], [1, 1], [0, 0], [0, 0], [4, 4]).output(0), 4)
    if kind == "rse":  # x * se + x: an elementwise program written in place
        se = ops.sigmoid(ops.reduce_mean(h, np.array([2, 3], np.int64), True))
        return ops.add(ops.multiply(h, se), h)
    if kind == "hswish":
        return ops.hswish(h)
    if kind == "conv":
        return h
    if kind == "conv3":  # 3x3, wide enough for Winograd
        return ops.convolution(h, _f(c, c, 3, 3) / 9, [1, 1], [1, 1], [1, 1], [1, 1])
    if kind == "dw":  # depthwise with its HSwish epilogue
        return ops.hswish(ops.group_convolution(h, _f(c, 1, 1, 3, 3) / 3, [1, 1], [1, 1], [1, 1], [1, 1]))
    if kind == "pool":
        return ops.max_pool(h, [1, 1], [1, 1], [1, 1], [1, 1], [3, 3]).output(0)
    if kind == "deconv":  # transposed, stride 2, from a pooled map
        small = ops.max_pool(h, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]).output(0)
        return ops.convolution_backprop_data(small, _f(c, c, 2, 2) / 2, [2, 2], None, [0, 0], [0, 0])
    if kind == "residual":  # a convolution with a residual Add in its epilogue
        return ops.add(ops.convolution(h, _f(c, c, 1, 1) / 3, [1, 1], [0, 0], [0, 0], [1, 1]), h)
    if kind == "const":
        return ops.constant(_f(1, c, 8, 12))
    raise AssertionError(kind)


# (inputs of the Concat, channels per input, Concat parts copied by the plan)
CASES = [
    (["up4", "up2", "rse"], [4, 4, 4], 0),  # PP-OCR det's neck: nothing copied
    (["up2", "conv", "hswish"], [8, 3, 5], 0),
    (["const", "up2", "rse"], [2, 6, 16], 1),  # a constant part is copied
    (["rse", "rse"], [3, 17], 0),  # odd widths: masked tails, rows 20 channels apart
    (["up2"], [7], 0),
    (["conv3", "dw", "pool"], [16, 24, 8], 0),
    (["deconv", "residual", "conv"], [8, 40, 1], 0),
    (["conv3", "up4"], [64, 32], 0),
]


def _model(kinds: list[str], widths: list[int], extra: str = "") -> tuple[Model, list[np.ndarray]]:
    x = ops.parameter([1, 3, 8, 12], np.float32, name="x")
    parts = []
    for kind, c in zip(kinds, widths):
        stem = ops.convolution(x, _f(c, 3, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1])
        parts.append(_branch(stem, kind, c))
    cat = ops.concat(parts, 1)
    outs = [ops.relu(ops.convolution(cat, _f(5, sum(widths), 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]))]
    if extra == "second reader":  # the first part is read by another node too: it is copied
        outs.append(ops.relu(parts[0]))
    elif extra == "result":  # the Concat is a model output
        outs = [cat]
    elif extra == "part result":
        outs.append(parts[0])
    return Model(outs, [x], "cat"), [_f(1, 3, 8, 12)]


def _run(model: Model, feeds: list[np.ndarray], threads: int = 1) -> tuple[list[np.ndarray], Any]:
    ref = ember.Core().compile_model(model, "REFERENCE")(feeds)
    cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})
    got = cm(feeds)
    for a, b in zip(ref.values(), got.values()):
        scale = float(np.abs(np.asarray(a)).max(initial=1.0))  # (Winograd rounds differently)
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5 * scale)
    return list(got.values()), cm._executable.program


def _copies(program: Any) -> int:
    return sum(len(op.inputs) for op in program.ops if op.type_name == "Concat")


@pytest.mark.parametrize("kinds,widths,copied", CASES, ids=["-".join(k) for k, _, _ in CASES])
@pytest.mark.parametrize("threads", [1, 2])
def test_producers_write_into_the_concat(kinds: list[str], widths: list[int], copied: int, threads: int) -> None:
    model, feeds = _model(kinds, widths)
    _, program = _run(model, feeds, threads)
    assert _copies(program) == copied


@pytest.mark.parametrize("extra", ["second reader", "result", "part result"])
def test_parts_with_other_readers_are_copied(extra: str) -> None:
    """A part read by another node or returned by the model, or a Concat that is itself a model
    output, keeps its own buffer and is copied (every part is still right)."""
    model, feeds = _model(["up2", "rse"], [4, 4], extra)
    _, program = _run(model, feeds)
    assert _copies(program) >= 1


def test_batch_of_two() -> None:
    """Upsampled rows stay evenly spaced across images of a batch."""
    x = ops.parameter([2, 4, 3, 5], np.float32, name="x")
    h = ops.convolution(x, _f(4, 4, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1])
    g = ops.convolution(x, _f(6, 4, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1])
    cat = ops.concat([_up(h, 2), _up(g, 2), _up(ops.hswish(g), 2)], 1)
    model = Model([ops.convolution(cat, _f(3, 16, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1])], [x], "b2")
    _, program = _run(model, [_f(2, 4, 3, 5)], 2)
    assert _copies(program) == 0


# -- an elementwise program reading a nearest upsampling's source ------------------------------

def _fpn(small: tuple[int, int], factors: tuple[int, int], order: str, extra: str = "") -> Model:
    """``x * se + x + up(s)`` (PP-OCR det's RSE neck; ``order``: where ``up`` enters) with
    ``up`` a nearest upsampling of ``s`` by whole ``factors``."""
    c, (h, w), (fy, fx) = 8, small, factors
    x = ops.parameter([2, c, h * fy, w * fx], np.float32, name="x")
    s = ops.parameter([2, c, h, w], np.float32, name="s")
    xc = ops.convolution(x, _f(c, c, 1, 1) / 3, [1, 1], [0, 0], [0, 0], [1, 1])
    sc = ops.convolution(s, _f(c, c, 1, 1) / 3, [1, 1], [0, 0], [0, 0], [1, 1])
    up = ops.interpolate(sc, np.array([1, 1, fy, fx], np.float32), "nearest", "scales")
    se = ops.sigmoid(ops.reduce_mean(xc, np.array([2, 3], np.int64), True))
    if order == "last":
        y = ops.add(ops.add(ops.multiply(xc, se), xc), up)
    elif order == "first":  # (a pooled operand: a convolution's epilogue would take the Add)
        y = ops.hswish(ops.add(up, ops.max_pool(xc, [1, 1], [1, 1], [1, 1], [1, 1], [3, 3]).output(0)))
    else:  # twice, with a per-row constant
        y = ops.multiply(ops.add(up, ops.multiply(up, xc)), _f(1, 1, h * fy, 1))
    outs = [ops.convolution(y, _f(4, c, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1])]
    if extra == "program":  # another program reads it too: from the source as well
        outs.append(ops.relu(up))
    elif extra == "convolution":  # a convolution reads it: the upsampled map is made
        outs.append(ops.convolution(up, _f(4, c, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]))
    return Model(outs, [x, s], "fpn")


UPSAMPLINGS = [((15, 20), (2, 2), "last"), ((3, 5), (4, 4), "first"), ((4, 3), (2, 3), "twice"),
               ((5, 7), (1, 2), "last"), ((6, 4), (3, 1), "first")]


@pytest.mark.parametrize("small,factors,order", UPSAMPLINGS, ids=[f"{f[0]}x{f[1]}-{o}" for _, f, o in UPSAMPLINGS])
@pytest.mark.parametrize("threads", [1, 2])
def test_elementwise_reads_the_upsampling_source(small: tuple[int, int], factors: tuple[int, int], order: str,
                                                 threads: int) -> None:
    """The program reads the small map (stride 0 over the repeated rows and columns) and the
    upsampling's own op is pruned; same values as REFERENCE."""
    model = _fpn(small, factors, order)
    h, w = small
    feeds = [_f(2, 8, h * factors[0], w * factors[1]), _f(2, 8, h, w)]
    _, program = _run(model, feeds, threads)
    assert not [op for op in program.ops if op.type_name == "Interpolate"]


@pytest.mark.parametrize("extra,made", [("program", 0), ("convolution", 1)])
def test_an_upsampling_with_other_readers(extra: str, made: int) -> None:
    model = _fpn((4, 5), (2, 2), "last", extra)
    _, program = _run(model, [_f(2, 8, 8, 10), _f(2, 8, 4, 5)])
    assert len([op for op in program.ops if op.type_name == "Interpolate"]) == made
