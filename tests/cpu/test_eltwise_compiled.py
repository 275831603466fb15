"""Compiled elementwise programs (``kernels/eltwise.py``: ``COMPILE_FROM`` / ``COMPILE_BELOW``):
an f32 program over short rows gets a module of its own instead of the interpreter. Checked
against numpy and bit for bit against the interpreter (same ops, same order), on short rows,
masked tails, broadcasts along and across rows, rows written into a wider buffer (a Concat's
channel slice), selects and NaN, on one and two threads; and PP-OCR det's neck blocks on the
CPU device against REFERENCE."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.kernels import eltwise
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.graph.model import Model

RNG = np.random.default_rng(71)


def _f(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _hswish(x: np.ndarray) -> np.ndarray:
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


# name -> (output shape, input shapes, program, numpy twin)
CASES = {
    # PP-OCR det's RSE branch: x * se + x, se per channel
    "x*se+x-24": ((1, 30, 40, 24), [(1, 30, 40, 24), (1, 1, 1, 24)],
                  [("load", 0, 0, 0, 0, 0), ("load", 1, 1, 0, 0, 0), ("mul", 2, 0, 1, 0, 0), ("add", 2, 2, 0, 0, 0),
                   ("store", 0, 2, 0, 0, 0)],
                  lambda x, se: x * se + x),
    # three operands, 96 channels, a 1-lane-short tail per row (95)
    "fma-chain-95": ((2, 20, 17, 95), [(2, 20, 17, 95), (1, 1, 1, 95), (2, 20, 17, 95)],
                     [("load", 0, 0, 0, 0, 0), ("load", 1, 1, 0, 0, 0), ("mul", 0, 0, 1, 0, 0), ("load", 3, 2, 0, 0, 0),
                      ("add", 0, 0, 3, 0, 0), ("store", 0, 0, 0, 0, 0)],
                     lambda x, s, u: x * s + u),
    # immediates: clamp, hswish, scalar multiply-add (the learnable affine)
    # (a bias broadcast over the first axis keeps the rows apart: 210 long)
    "clamp-hswish-affine-7": ((64, 30, 7), [(64, 30, 7), (1, 30, 7)],
                              [("load", 0, 0, 0, 0, 0), ("load", 2, 1, 0, 0, 0), ("add", 0, 0, 2, 0, 0),
                               ("clamp", 0, 0, 0, -2.5, 4.0), ("hswish", 1, 0, 0, 0, 0),
                               ("mulc", 1, 1, 0, 0.75, 0), ("addc", 1, 1, 0, -0.25, 0), ("store", 0, 1, 0, 0, 0)],
                              lambda x, b: _hswish(np.clip(x + b, -2.5, 4.0)) * np.float32(0.75) + np.float32(-0.25)),
    # a per-row scalar (inner stride 0; rows under 64 would be widened with a gather instead)
    "div-by-row-scalar-65": ((40, 30, 65), [(40, 30, 65), (40, 30, 1)],
                             [("load", 0, 0, 0, 0, 0), ("load", 1, 1, 0, 0, 0), ("div", 0, 0, 1, 0, 0),
                              ("sigmoid", 0, 0, 0, 0, 0), ("store", 0, 0, 0, 0, 0)],
                             lambda x, d: 1.0 / (1.0 + np.exp(-(x / d)))),
    # select on a comparison (Where), NaN through max/min
    "select-nan-48": ((1, 50, 40, 48), [(1, 50, 40, 48), (1, 50, 1, 48)],
                      [("load", 0, 0, 0, 0, 0), ("load", 1, 1, 0, 0, 0), ("gt", 2, 0, 1, 0, 0),
                       ("max", 3, 0, 1, 0, 0), ("min", 1, 0, 1, 0, 0), ("select", 0, 2, 3, 1, 0), ("store", 0, 0, 0, 0, 0)],
                      lambda a, b: np.where(a > b, np.where(a < b, b, a), np.where(b < a, b, a))),  # std::max/min
}


def _inputs(name: str) -> list[np.ndarray]:
    rng = np.random.default_rng(len(name) * 131 + sum(map(ord, name)))
    xs = [rng.standard_normal(s).astype(np.float32) for s in CASES[name][1]]
    if name == "select-nan-48":
        xs[0].reshape(-1)[::97] = np.nan
        xs[1].reshape(-1)[5::89] = np.nan
    if name == "div-by-row-scalar-65":
        xs[1] = np.abs(xs[1]) + 0.5
    return xs


def _run(name: str, threads: int, compile_from: int | None, monkeypatch: pytest.MonkeyPatch,
         slot: bool = False) -> tuple[np.ndarray, np.ndarray]:
    shape, _, program, _ = CASES[name]
    monkeypatch.setattr(eltwise, "COMPILE_FROM", compile_from)
    xs = _inputs(name)
    if slot:  # the rows are channels [8, 8 + C) of a buffer 3 C + 8 wide, as a Concat's part
        wide = aligned_empty(shape[:-1] + (3 * shape[-1] + 8,))
        wide[:] = -7.0
        y = wide[..., 8:8 + shape[-1]]
    else:
        wide = y = aligned_empty(shape)
    y[...] = np.nan
    k = eltwise.eltwise_kernel(y, xs, program, threads)
    assert k is not None
    compiled = k.task != eltwise._eltwise_library(eltwise.host_isa(), "f32", False).address("eltwise_task")
    assert compiled == (compile_from is not None)
    k.run()
    return y.copy(), wide


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_compiled_program_matches_numpy_and_the_interpreter(name: str, threads: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    got, _ = _run(name, threads, 0, monkeypatch)
    interp, _ = _run(name, threads, None, monkeypatch)
    np.testing.assert_array_equal(got, interp)  # the same f32 ops in the same order
    with np.errstate(all="ignore"):
        want = CASES[name][3](*_inputs(name))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["x*se+x-24", "clamp-hswish-affine-7"])
def test_compiled_program_writes_a_channel_slice(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    got, wide = _run(name, 2, 0, monkeypatch, slot=True)
    interp, _ = _run(name, 2, None, monkeypatch, slot=True)
    np.testing.assert_array_equal(got, interp)
    c = CASES[name][0][-1]
    assert np.all(wide[..., :8] == -7.0) and np.all(wide[..., 8 + c:] == -7.0)  # nothing outside the slice


def test_small_and_long_rows_stay_interpreted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under COMPILE_FROM elements, or rows of COMPILE_BELOW and more, no program is compiled."""
    program = [("load", 0, 0, 0, 0, 0), ("relu", 0, 0, 0, 0, 0), ("store", 0, 0, 0, 0, 0)]
    base = eltwise._eltwise_library(eltwise.host_isa(), "f32", False).address("eltwise_task")
    for shape in [(4, 8, 24), (2, 2 * eltwise.COMPILE_BELOW)]:
        x = _f(*shape)
        y = np.empty_like(x)
        k = eltwise.eltwise_kernel(y, [x], program, 1)
        assert k is not None and k.task == base
        k.run()
        np.testing.assert_array_equal(y, np.maximum(x, 0))


def _neck(c: int, h: int, w: int, up: bool) -> tuple[Model, list[np.ndarray]]:
    """PP-OCR det's RSE block: x * hardsigmoid(conv(mean(x))) + x (+ a nearest x2 upsampling)."""
    x = ops.parameter([1, c, h, w], np.float32, name="x")
    y = ops.convolution(x, (_f(c, c, 1, 1) / np.sqrt(c)).astype(np.float32), [1, 1], [0, 0], [0, 0], [1, 1])
    pooled = ops.reduce_mean(y, np.array([2, 3], np.int64), True)
    se = ops.hsigmoid(ops.convolution(pooled, (_f(c, c, 1, 1) / np.sqrt(c)).astype(np.float32), [1, 1], [0, 0], [0, 0], [1, 1]))
    out = ops.add(ops.multiply(y, se), y)
    params, feeds = [x], [_f(1, c, h, w)]
    if up:
        p = ops.parameter([1, c, h // 2, w // 2], np.float32, name="p")
        u = ops.interpolate(ops.relu(p), np.array([1, 1, 2, 2], np.float32), "nearest", "scales")
        out = ops.add(out, u)
        params.append(p)
        feeds.append(_f(1, c, h // 2, w // 2))
    return Model([out], params, "neck"), feeds


@pytest.mark.parametrize("c,h,w,up", [(24, 60, 80, False), (96, 30, 40, True)])
def test_det_neck_blocks_match_reference(c: int, h: int, w: int, up: bool) -> None:
    model, feeds = _neck(c, h, w, up)
    ref = ember.Core().compile_model(model, "REFERENCE")(feeds)[0]
    for threads in (1, 2):
        got = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})(feeds)[0]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
