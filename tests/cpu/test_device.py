"""The CPU device against REFERENCE: one table of small graphs (each lowered op and fusion),
the device's registration and properties, and the real networks (slow)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.graph.model import Model

RNG = np.random.default_rng(1234)


def _f(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _w(*shape: int) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return _f(*shape, scale=1.0 / np.sqrt(max(fan_in, 1)))


def _param(shape: tuple[int, ...], name: str = "x", dtype=np.float32):  # noqa: ANN202
    return ops.parameter(list(shape), dtype, name=name)


def _model(out, params) -> Model:  # noqa: ANN001
    return Model([out] if not isinstance(out, list) else out, params, "case")


# -- graph builders ---------------------------------------------------------------------------

def conv_chain(n: int, c: int, h: int, w: int, oc: int, k: int, stride: int = 1, pad: int = 0, dil: int = 1,
               groups: int = 1, bias: bool = True, act: str | None = "relu", residual: bool = False):  # noqa: ANN201
    def build() -> Model:
        x = _param((n, c, h, w))
        if groups == 1:
            y = ops.convolution(x, _w(oc, c, k, k), [stride] * 2, [pad] * 2, [pad] * 2, [dil] * 2)
        else:
            y = ops.group_convolution(x, _w(groups, oc // groups, c // groups, k, k), [stride] * 2, [pad] * 2,
                                      [pad] * 2, [dil] * 2)
        if bias:
            y = ops.add(y, _f(1, oc, 1, 1))
        if residual:
            y = ops.add(y, ops.relu(ops.convolution(x, _w(oc, c, k, k), [stride] * 2, [pad] * 2, [pad] * 2,
                                                    [dil] * 2)))
        if act == "relu":
            y = ops.relu(y)
        elif act == "relu6":
            y = ops.clamp(y, 0.0, 6.0)
        elif act == "sigmoid":
            y = ops.sigmoid(y)
        return _model(y, [x])
    return build, [(n, c, h, w)]


def matmul_chain(shape: tuple[int, ...], n: int, transpose_b: bool = False, bias: bool = True,
                 act: str | None = None, residual: bool = False):  # noqa: ANN201
    def build() -> Model:
        x = _param(shape)
        k = shape[-1]
        w = _w(n, k) if transpose_b else _w(k, n)
        y = ops.matmul(x, w, False, transpose_b)
        if bias:
            y = ops.add(_f(n), y)
        if residual:
            y = ops.add(y, ops.matmul(x, _w(k, n), False, False))
        if act == "relu":
            y = ops.relu(y)
        elif act == "gelu":
            y = ops.gelu(y)
        return _model(y, [x])
    return build, [shape]


CASES = {
    # convolutions with their fused tails
    "conv3x3-bias-relu": conv_chain(1, 3, 8, 8, 5, 3, pad=1),
    "conv1x1-17ch": conv_chain(1, 17, 5, 7, 17, 1, act=None),
    "conv-stride2-relu6": conv_chain(2, 8, 9, 9, 16, 3, stride=2, pad=1, act="relu6"),
    "conv-dilated-nobias": conv_chain(1, 4, 11, 11, 3, 3, pad=2, dil=2, bias=False),
    "conv-residual-relu": conv_chain(1, 8, 6, 6, 8, 3, pad=1, residual=True),
    "conv-sigmoid-tail": conv_chain(1, 3, 7, 7, 4, 3, pad=1, act="sigmoid"),
    "conv-7x7-stem": conv_chain(1, 3, 20, 20, 16, 7, stride=2, pad=3),
    "conv-1x1-1ch": conv_chain(1, 1, 1, 1, 1, 1),
    "grouped-conv": conv_chain(1, 8, 9, 9, 12, 3, pad=1, groups=4),
    "depthwise-relu6": conv_chain(1, 17, 10, 10, 17, 3, pad=1, groups=17, act="relu6"),
    "depthwise-stride2": conv_chain(1, 32, 12, 12, 32, 3, stride=2, pad=1, groups=32),
    # matrix products
    "matmul-bias": matmul_chain((3, 17), 5),
    "matmul-3d-bias-relu": matmul_chain((1, 17, 33), 19, act="relu"),
    "matmul-transpose-b": matmul_chain((2, 3, 16), 8, transpose_b=True),
    "matmul-residual": matmul_chain((4, 32), 32, residual=True),
    "matmul-gelu": matmul_chain((5, 24), 40, act="gelu"),
    "matmul-1x1000": matmul_chain((1, 64), 1000, bias=True),
}


def _inputs(shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    return [_f(*s) for s in shapes]


def _run(model: Model, device: str, inputs: list[np.ndarray], config: dict | None = None) -> list[np.ndarray]:
    cm = ember.Core().compile_model(model, device, config or {})
    res = cm(inputs)
    return [res[i] for i in range(len(model.outputs))]


@pytest.mark.parametrize("name", list(CASES))
def test_case_matches_reference(name: str) -> None:
    build, shapes = CASES[name]
    model = build()
    inputs = _inputs(shapes)
    want = _run(model, "REFERENCE", inputs)
    got = _run(model, "CPU", inputs)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5 * max(1.0, float(np.abs(w).max())))


# -- the device itself ------------------------------------------------------------------------

def test_registered_without_importing_llvmlite() -> None:
    code = ("import sys, ember; assert 'llvmlite' not in sys.modules; "
            "assert 'CPU' in ember.Core().available_devices; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_auto_prefers_cpu() -> None:
    build, shapes = CASES["conv3x3-bias-relu"]
    cm = ember.Core().compile_model(build(), "AUTO")
    assert cm.get_property("EXECUTION_DEVICES") == ["CPU"]
