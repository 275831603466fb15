"""ember's random ops (ember.ops.random) through the ONNX frontend: a seed gives the same values
on every run and every device (numpy's legacy RandomState stream), the draws have the asked
distribution, and the converted models run where they did not convert before."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.frontends.onnx import convert

F = TensorProto.FLOAT


def _model(node: onnx.NodeProto, inputs: list, out_type: int = F, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", out_type, None)])
    m = helper.make_model(g, opset_imports=[helper.make_operatorsetid("", opset)])
    m.ir_version = 8
    return m


def _run(model: onnx.ModelProto, feeds: dict[str, Any], device: str = "REFERENCE") -> np.ndarray:
    return ember.Core().compile_model(convert(model), device)(feeds)[0]


X = helper.make_tensor_value_info("x", F, [400, 50])
P = helper.make_tensor_value_info("x", F, [20000])
# (name, node, inputs, feeds, output type, check(values) -> None)
CASES = [
    ("normal", helper.make_node("RandomNormal", [], ["y"], shape=[400, 50], mean=2.0, scale=3.0, seed=5.0),
     [], {}, F, lambda y: (abs(y.mean() - 2.0) < 0.1 and abs(y.std() - 3.0) < 0.1, y.shape == (400, 50))),
    ("normal_like_f64", helper.make_node("RandomNormalLike", ["x"], ["y"], seed=1.0, dtype=TensorProto.DOUBLE),
     [X], {"x": np.zeros((400, 50), np.float32)}, TensorProto.DOUBLE,
     lambda y: (y.dtype == np.float64, abs(y.mean()) < 0.05)),
    ("uniform", helper.make_node("RandomUniform", [], ["y"], shape=[20000], low=-2.0, high=4.0, seed=3.0),
     [], {}, F, lambda y: (y.min() >= -2.0, y.max() < 4.0, abs(y.mean() - 1.0) < 0.1)),
    ("uniform_like", helper.make_node("RandomUniformLike", ["x"], ["y"], seed=3.0),
     [X], {"x": np.zeros((400, 50), np.float32)}, F, lambda y: (y.shape == (400, 50), 0.45 < y.mean() < 0.55)),
    ("bernoulli", helper.make_node("Bernoulli", ["x"], ["y"], seed=2.0),
     [P], {"x": np.full(20000, 0.3, np.float32)}, F, lambda y: (set(np.unique(y)) <= {0.0, 1.0},
                                                                 abs(y.mean() - 0.3) < 0.02)),
    ("multinomial", helper.make_node("Multinomial", ["x"], ["y"], sample_size=20000, seed=4.0),
     [helper.make_tensor_value_info("x", F, [2, 3])],
     {"x": np.log(np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], np.float32) + 1e-30)}, TensorProto.INT32,
     lambda y: (y.shape == (2, 20000), np.allclose(np.bincount(y[0], minlength=3) / 20000, [0.2, 0.3, 0.5],
                                                   atol=0.02), (y[1] == 0).all())),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_distribution_and_seed(case: tuple) -> None:
    _, node, inputs, feeds, out_type, check = case
    model = _model(node, inputs, out_type, opset=22 if node.op_type == "Bernoulli" else 17)
    y = _run(model, feeds)
    assert all(check(y))
    np.testing.assert_array_equal(y, _run(model, feeds))  # the seed makes it repeatable
    np.testing.assert_array_equal(y, _run(model, feeds, "CPU"))


def test_seed_is_numpys_legacy_stream() -> None:
    node = helper.make_node("RandomUniform", [], ["y"], shape=[3, 4], seed=7.0)
    y = _run(_model(node, []), {})
    np.testing.assert_array_equal(y, np.random.RandomState(7).uniform(0.0, 1.0, (3, 4)).astype(np.float32))


def test_without_seed_draws_differ() -> None:
    node = helper.make_node("RandomNormal", [], ["y"], shape=[64])
    compiled = ember.Core().compile_model(convert(_model(node, [])), "REFERENCE")
    assert not np.array_equal(compiled({})[0], compiled({})[0])


@pytest.mark.parametrize("training", [True, False])
def test_training_dropout_matches_onnx_definition(training: bool) -> None:
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y", "m"], seed=0)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F, [3, 4, 5]),
                                        helper.make_tensor_value_info("r", F, []),
                                        helper.make_tensor_value_info("t", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", F, None),
                           helper.make_tensor_value_info("m", TensorProto.BOOL, None)])
    m = helper.make_model(g, opset_imports=[helper.make_operatorsetid("", 13)])
    m.ir_version = 8
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    y, mask = ember.Core().compile_model(convert(m), "CPU")({"x": x, "r": np.float32(0.75),
                                                             "t": np.bool_(training)}).to_tuple()
    want_mask = np.random.RandomState(0).uniform(0, 1, x.shape) >= 0.75 if training else np.ones(x.shape, bool)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_allclose(y, x * want_mask * (4.0 if training else 1.0), rtol=1e-6)
