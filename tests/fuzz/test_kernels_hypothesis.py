"""Property-based tests: CPU kernels against REFERENCE over shapes and attributes (hypothesis).

Every example builds a one-op model, compiles it with ``compile_model`` on "CPU" and on
"REFERENCE", runs both on the same seeded inputs and compares. Examples are derandomized
(the same in every run); ``EMBER_HYPOTHESIS_EXAMPLES`` raises how many each property tries
(``python tests/fuzz/fuzz.py --hypothesis 500``). Zero-size dimensions are left to the CPU
device's own regression tests (tests/cpu).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ember
from ember import opset

EXAMPLES = int(os.environ.get("EMBER_HYPOTHESIS_EXAMPLES", "12"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check(build: Callable[[list], ember.Node | list], inputs: list[np.ndarray], rtol: float = 1e-4,
           atol: float = 1e-5) -> None:
    params = [opset.parameter(list(a.shape), a.dtype, name=f"in{i}") for i, a in enumerate(inputs)]
    out = build(params)
    outs = out if isinstance(out, list) else [out]
    model = ember.Model(outs, params, "prop")
    want = ember.compile_model(model, "REFERENCE")(inputs).to_tuple()
    got = ember.compile_model(model, "CPU")(inputs).to_tuple()
    for w, g in zip(want, got):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)


def _data(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


_BINARY = {"add": opset.add, "subtract": opset.subtract, "multiply": opset.multiply, "maximum": opset.maximum,
           "minimum": opset.minimum, "divide": opset.divide}


@SETTINGS
@given(op=st.sampled_from(sorted(_BINARY)),
       shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, min_side=1, max_side=9),
       seed=st.integers(0, 2**16))
def test_binary_elementwise(op: str, shapes, seed: int) -> None:  # noqa: ANN001 - hypothesis value
    a, b = (_data(s, seed + i) for i, s in enumerate(shapes.input_shapes))
    if op == "divide":
        b = np.where(np.abs(b) < 0.1, 1.0, b).astype(np.float32)
    _check(lambda p: _BINARY[op](p[0], p[1]), [a, b])


_UNARY = {"relu": opset.relu, "sigmoid": opset.sigmoid, "tanh": opset.tanh, "exp": opset.exp}


@SETTINGS
@given(op=st.sampled_from(sorted(_UNARY)), shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=12),
       seed=st.integers(0, 2**16))
def test_unary_elementwise(op: str, shape: tuple[int, ...], seed: int) -> None:
    _check(lambda p: _UNARY[op](p[0]), [_data(shape, seed)])


@SETTINGS
@given(batch=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, min_side=1, max_side=3),
       m=st.integers(1, 33), k=st.integers(1, 40), n=st.integers(1, 33), ta=st.booleans(), tb=st.booleans(),
       const_b=st.booleans(), seed=st.integers(0, 2**16))
def test_matmul(batch, m: int, k: int, n: int, ta: bool, tb: bool, const_b: bool, seed: int) -> None:  # noqa: ANN001
    sa, sb = batch.input_shapes
    a = _data(tuple(sa) + ((k, m) if ta else (m, k)), seed)
    b = _data(tuple(sb) + ((n, k) if tb else (k, n)), seed + 1)
    if const_b:
        _check(lambda p: opset.matmul(p[0], opset.constant(b), ta, tb), [a], rtol=1e-3, atol=1e-4)
    else:
        _check(lambda p: opset.matmul(p[0], p[1], ta, tb), [a, b], rtol=1e-3, atol=1e-4)


@st.composite
def _conv_cases(draw):  # noqa: ANN001, ANN202 - hypothesis strategy
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans()) and groups > 1
    cin = groups if depthwise else groups * draw(st.integers(1, 4))
    cout = groups * draw(st.integers(1, 4))
    k = [draw(st.integers(1, 3)) for _ in range(2)]
    s = [draw(st.integers(1, 2)) for _ in range(2)]
    d = [draw(st.integers(1, 2)) for _ in range(2)]
    pb = [draw(st.integers(0, 2)) for _ in range(2)]
    pe = [draw(st.integers(0, 2)) for _ in range(2)]
    hw = [draw(st.integers(max(1, (k[i] - 1) * d[i] + 1 - pb[i] - pe[i]), 12)) for i in range(2)]
    return groups, cin, cout, k, s, d, pb, pe, hw, draw(st.integers(1, 2)), draw(st.integers(0, 2**16))


@SETTINGS
@given(case=_conv_cases())
def test_convolution(case) -> None:  # noqa: ANN001
    groups, cin, cout, k, s, d, pb, pe, hw, batch, seed = case
    x = _data((batch, cin, *hw), seed)
    if groups == 1:
        w = _data((cout, cin, *k), seed + 1)
        _check(lambda p: opset.convolution(p[0], opset.constant(w), s, pb, pe, d), [x], rtol=1e-3, atol=1e-4)
    else:
        w = _data((groups, cout // groups, cin // groups, *k), seed + 1)
        _check(lambda p: opset.group_convolution(p[0], opset.constant(w), s, pb, pe, d), [x], rtol=1e-3, atol=1e-4)


@SETTINGS
@given(kind=st.sampled_from(["max", "avg"]), k=st.integers(1, 3), s=st.integers(1, 3), pad=st.integers(0, 1),
       hw=st.tuples(st.integers(3, 11), st.integers(3, 11)), c=st.integers(1, 6), exclude=st.booleans(),
       ceil=st.booleans(), seed=st.integers(0, 2**16))
def test_pooling(kind: str, k: int, s: int, pad: int, hw: tuple[int, int], c: int, exclude: bool, ceil: bool,
                 seed: int) -> None:
    pad = min(pad, k - 1)  # OpenVINO requires pads smaller than the kernel
    rounding = "ceil" if ceil else "floor"
    x = _data((1, c, *hw), seed)
    if kind == "max":
        _check(lambda p: opset.max_pool(p[0], [s, s], [1, 1], [pad, pad], [pad, pad], [k, k], rounding).output(0),
               [x])
    else:
        _check(lambda p: opset.avg_pool(p[0], [s, s], [pad, pad], [pad, pad], [k, k], exclude, rounding), [x])


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=10), data=st.data(), seed=st.integers(0, 2**16))
def test_softmax(shape: tuple[int, ...], data, seed: int) -> None:  # noqa: ANN001
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    _check(lambda p: opset.softmax(p[0], axis), [_data(shape, seed) * 4])


_REDUCE = {"sum": opset.reduce_sum, "mean": opset.reduce_mean, "max": opset.reduce_max}


@SETTINGS
@given(op=st.sampled_from(sorted(_REDUCE)), shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=9),
       data=st.data(), keep=st.booleans(), seed=st.integers(0, 2**16))
def test_reduce(op: str, shape: tuple[int, ...], data, keep: bool, seed: int) -> None:  # noqa: ANN001
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape), unique=True))
    axes_const = opset.constant(np.array(axes, np.int64))
    _check(lambda p: _REDUCE[op](p[0], axes_const, keep), [_data(shape, seed)], rtol=1e-4, atol=1e-4)


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=5, max_side=8), data=st.data(), seed=st.integers(0, 2**16))
def test_transpose(shape: tuple[int, ...], data, seed: int) -> None:  # noqa: ANN001
    perm = data.draw(st.permutations(list(range(len(shape)))))
    _check(lambda p: opset.transpose(p[0], opset.constant(np.array(perm, np.int64))), [_data(shape, seed)])


def test_settings_are_reproducible() -> None:
    assert SETTINGS.derandomize and SETTINGS.database is None
    if EXAMPLES < 1:
        pytest.fail("EMBER_HYPOTHESIS_EXAMPLES must be >= 1")
