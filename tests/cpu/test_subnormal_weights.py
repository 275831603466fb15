"""Packed weights hold no subnormal floats (an FMA with one takes a microcode assist: PP-OCRv4
rec's SE convolutions ran 11x slower with them): the packers zero them, and models whose
weights have them still match REFERENCE."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry
from ember.devices.cpu.kernels.gemm import flush_subnormals, pack_weights
from ember.graph.model import Model

RNG = np.random.default_rng(11)
TINY = np.finfo(np.float32).tiny


def _subnormal(a: np.ndarray) -> int:
    a = np.asarray(a)
    return int(np.count_nonzero((a != 0) & (np.abs(a) < TINY)))


def _weights(*shape: int) -> np.ndarray:
    """Normal weights, a third of them replaced by subnormals of both signs (and a -0.0)."""
    w = RNG.standard_normal(shape).astype(np.float32) / 4
    flat = w.reshape(-1)
    pick = RNG.random(flat.size) < 1 / 3
    flat[pick] = (RNG.integers(1, 1 << 23, pick.sum()).astype(np.uint32).view(np.float32)
                  * RNG.choice([-1, 1], pick.sum()).astype(np.float32))
    flat[0] = -0.0
    return w


def test_flush_subnormals_keeps_normal_values() -> None:
    w = _weights(7, 9)
    before = w.copy()
    flush_subnormals(w)
    assert _subnormal(w) == 0
    keep = np.abs(before) >= TINY
    np.testing.assert_array_equal(w[keep], before[keep])
    assert np.all(w[~keep] == 0)
    special = np.array([np.inf, -np.inf, np.nan, TINY, -TINY, 0.0], np.float32)
    out = flush_subnormals(special.copy())
    np.testing.assert_array_equal(out[:2], special[:2])
    assert np.isnan(out[2]) and out[3] == TINY and out[4] == -TINY


def test_packers_hold_no_subnormals() -> None:
    packed = pack_weights(_weights(1, 1, 40, 24))
    assert _subnormal(packed.data) == 0
    g = ConvGeometry(1, 5, 5, 24, 24, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 24)
    dw = Conv2d(g, _weights(24, 1, 3, 3), num_threads=1)
    assert _subnormal(dw._dw_weights) == 0


def _conv(kind: str, x: Any, c: int) -> Any:
    if kind == "pointwise":  # an SE block's squeeze convolution: one pixel
        return ops.convolution(x, _weights(c // 2, c, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1])
    if kind == "3x3":
        return ops.convolution(x, _weights(c, c, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1])
    if kind == "depthwise":
        return ops.group_convolution(x, _weights(c, 1, 1, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1])
    if kind == "matmul":
        return ops.matmul(x, _weights(x.get_partial_shape()[-1].get_length(), 40), False, False)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,shape", [("pointwise", [1, 48, 1, 1]), ("3x3", [1, 16, 6, 7]),
                                        ("depthwise", [1, 24, 6, 7]), ("matmul", [3, 5, 33])])
def test_models_with_subnormal_weights_match_reference(kind: str, shape: list[int]) -> None:
    x = ops.parameter(shape, np.float32, name="x")
    model = Model([ops.relu(_conv(kind, x, shape[1]))], [x], kind)
    feeds = [RNG.standard_normal(shape).astype(np.float32)]
    ref = ember.Core().compile_model(model, "REFERENCE")(feeds)[0]
    got = ember.Core().compile_model(model, "CPU")(feeds)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
