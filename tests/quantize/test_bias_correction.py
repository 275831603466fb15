"""BiasCorrection (``fast_bias_correction=False``) against real NNCF 3.4: the same corrected
biases on small convnets, each layer measured after the layers before it were corrected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import ember.nncf as nncf
import ember.opset as ops
from ember.graph.model import Model

from .nncf_oracle import biases, compare_placement, nncf_quantize

pytest.importorskip("nncf")
pytest.importorskip("openvino")


def _layers(seed: int) -> tuple[Callable[..., object], Callable[..., object]]:
    rng = np.random.default_rng(seed)

    def conv(x: object, cin: int, cout: int, name: str, k: int = 3, stride: int = 1) -> object:
        w = (rng.standard_normal((cout, cin, k, k)) * (1.5 / np.sqrt(cin * k * k))).astype(np.float32)
        c = ops.convolution(x, w, [stride, stride], [k // 2, k // 2], [k // 2, k // 2], [1, 1], name=name)
        return ops.add(c, (rng.standard_normal((1, cout, 1, 1)) * 0.2).astype(np.float32), name=f"{name}/bias")

    def fc(x: object, cin: int, cout: int, name: str) -> object:
        w = (rng.standard_normal((cout, cin)) / np.sqrt(cin)).astype(np.float32)
        return ops.add(ops.matmul(x, w, False, True, name=name), (rng.standard_normal(cout) * 0.2).astype(np.float32),
                       name=f"{name}/bias")

    return conv, fc


def chain() -> Model:
    conv, fc = _layers(7)
    x = ops.parameter([1, 3, 16, 16], np.float32, name="x")
    h = ops.relu(conv(x, 3, 8, "c1"), name="r1")
    h = ops.relu(conv(h, 8, 16, "c2", stride=2), name="r2")
    h = ops.relu(conv(h, 16, 16, "c3"), name="r3")
    h = ops.reshape(ops.reduce_mean(h, np.array([2, 3]), False, name="gap"), [1, 16], False, name="flat")
    return Model([fc(h, 16, 10, "fc")], [x])


def residual() -> Model:
    conv, fc = _layers(8)
    x = ops.parameter([1, 4, 12, 12], np.float32, name="x")
    a = ops.relu(conv(x, 4, 8, "c1"), name="r1")
    b = ops.relu(conv(a, 8, 8, "c2"), name="r2")
    c = ops.relu(ops.add(conv(b, 8, 8, "c3", k=1), a, name="res"), name="r3")
    mp = ops.max_pool(c, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2], name="mp").output(0)
    return Model([conv(mp, 8, 4, "c4")], [x])


#: per graph, the layers whose input NNCF takes from a stale sub-graph run (see the test)
MERGE_FED = {"chain": set(), "residual": {"c4/bias"}}


@pytest.mark.parametrize("build", [chain, residual], ids=["chain", "residual"])
def test_bias_correction_matches_nncf(build: Callable[[], Model], tmp_path: Path) -> None:
    """Every corrected bias equals NNCF's, except where a layer reads a merge of branches holding
    other corrected layers: NNCF feeds it the activations of the first sub-graph that computed
    them (c1's, before c2 and c3 were corrected), ember those after every layer before it was
    corrected; there the two shifts agree in sign and size only."""
    model = build()
    name = model.get_parameters()[0].friendly_name
    model.get_parameters()[0].output(0).set_names({name})
    rng = np.random.default_rng(3)
    shape = tuple(model.inputs[0].shape)
    data = [{name: np.abs(rng.standard_normal(shape)).astype(np.float32)} for _ in range(10)]
    theirs = nncf_quantize(model, data, tmp_path, fast_bias_correction=False)
    ours = nncf.quantize(model, nncf.Dataset(data), subset_size=10, fast_bias_correction=False)
    compare_placement(ours, theirs, model, bias_rtol=1e9)  # placement, ranges, weights; biases below
    b0, be, bn = biases(model), biases(ours), biases(theirs)
    assert sorted(be) == sorted(bn)
    for k in bn:
        shift_e, shift_n = (be[k] - b0[k]).ravel(), (bn[k] - b0[k]).ravel()
        scale = max(float(np.max(np.abs(shift_n))), 1e-7)
        tol = 0.6 if k in MERGE_FED[build.__name__] else 2e-3
        diff = float(np.max(np.abs(shift_e - shift_n)))
        assert diff <= tol * scale + 1e-5, f"bias shift of {k}: off by {diff:.3g}, NNCF shift up to {scale:.3g}"
    # and it is not FastBiasCorrection
    fast = biases(nncf.quantize(model, nncf.Dataset(data), subset_size=10))
    assert any(not np.allclose(be[k] - b0[k], fast[k] - b0[k], rtol=0.05, atol=1e-5) for k in b0)
