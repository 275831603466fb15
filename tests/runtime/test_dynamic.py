"""Dynamic shapes: compile once, infer with changing shapes; reshape; bounds are enforced."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import small_expected, small_model

import ember
import ember.opset as ops
from ember.errors import InferenceError
from ember.graph.shape import Dimension, PartialShape
from ember.runtime import AsyncInferQueue, Core


def _conv_model(shape):
    x = ops.parameter(shape, np.float32, name="x")
    w = ops.constant(np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) / 50)
    c = ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1], name="conv")
    r = ops.reduce_mean(ops.relu(c), ops.constant(np.array([2, 3], np.int64)), False, name="gap")
    r.output(0).set_names({"y"})
    return ember.Model([ops.result(r)], [x], "conv")


def _conv_ref(x):
    import openvino as ov
    import openvino.opset13 as oo

    p = oo.parameter(list(x.shape), np.float32)
    w = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) / 50
    c = oo.convolution(p, oo.constant(w), [1, 1], [1, 1], [1, 1], [1, 1])
    r = oo.reduce_mean(oo.relu(c), oo.constant(np.array([2, 3], np.int64)), False)
    return ov.Core().compile_model(ov.Model([r], [p]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})([x])[0]


SHAPES = [(1, 3, 8, 8), (2, 3, 5, 7), (4, 3, 16, 3), (1, 3, 1, 1)]


@pytest.mark.parametrize("declared", [[-1, 3, -1, -1], PartialShape("?,3,?,?"),
                                      PartialShape([Dimension(1, 4), 3, Dimension(1, 16), Dimension(1, 16)])],
                         ids=["minus_one", "question_marks", "bounds"])
def test_compile_once_infer_many_shapes(declared):
    pytest.importorskip("openvino")
    cm = Core().compile_model(_conv_model(declared), "REFERENCE")
    assert cm.input(0).partial_shape.is_dynamic
    req = cm.create_infer_request()
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.standard_normal(shape).astype(np.float32)
        out = req.infer({"x": x})["y"]
        assert out.shape == (shape[0], 2)
        np.testing.assert_allclose(out, _conv_ref(x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cm([x])["y"], out)


def test_async_with_changing_shapes():
    cm = Core().compile_model(small_model(shape=[-1, -1]), "REFERENCE", {"NUM_STREAMS": 2})
    q = AsyncInferQueue(cm, 3)
    got = {}
    q.set_callback(lambda r, u: got.__setitem__(u, r.get_output_tensor().data.copy()))
    xs = [np.full((i + 1, 2 * i + 1), i - 3, np.float32) for i in range(8)]
    for i, x in enumerate(xs):
        q.start_async(x, i)
    q.wait_all()
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(got[i], small_expected(x))


def test_bounds_are_enforced():
    cm = Core().compile_model(small_model(shape=[Dimension(1, 4), 3]), "REFERENCE")
    cm([np.zeros((4, 3), np.float32)])
    with pytest.raises(InferenceError, match=r"1\.\.4"):
        cm([np.zeros((5, 3), np.float32)])
    with pytest.raises(InferenceError, match="shape"):
        cm([np.zeros((2, 4), np.float32)])


def test_reshape_then_compile():
    m = _conv_model([1, 3, 8, 8])
    m.reshape({"x": [2, 3, 12, 10]})
    cm = Core().compile_model(m, "REFERENCE")
    n, c, h, w = cm.input(0).shape
    assert (n, c, h, w) == (2, 3, 12, 10) and all(isinstance(d, int) for d in (n, c, h, w))
    assert tuple(cm.output(0).shape) == (2, 2)
    m.reshape([-1, 3, Dimension(4, 32), -1])
    cm = Core().compile_model(m, "REFERENCE")
    assert str(cm.input(0).partial_shape) == "[?,3,4..32,?]"
    assert cm.create_infer_request().infer(np.ones((3, 3, 5, 6), np.float32))["y"].shape == (3, 2)
