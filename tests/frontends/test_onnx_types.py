"""Element types ONNX has and OpenVINO does not (float8 E4M3FNUZ/E5M2FNUZ, int2): Cast in and
out of them on REFERENCE, against onnx's ReferenceEvaluator, edge values included."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from ember.devices.reference import run_model
from ember.frontends.onnx import convert
from ember.frontends.onnx.loader import from_ember_array

F = TensorProto.FLOAT
EDGES = np.array([0.0, -0.0, 0.3, -1.7, 239.0, 241.0, 1e6, -1e6, np.inf, -np.inf, np.nan, 57344.0, 1e-9],
                 dtype=np.float32)


def _cast_chain(to: int, saturate: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Cast", ["x"], ["q"], to=to, saturate=saturate),
             helper.make_node("Cast", ["q"], ["y"], to=F)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [len(EDGES)])],
                          [helper.make_tensor_value_info("q", to, None), helper.make_tensor_value_info("y", F, None)])
    m = helper.make_model(g, opset_imports=[helper.make_operatorsetid("", 21)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize("saturate", [0, 1])
@pytest.mark.parametrize("to", [TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2FNUZ])
def test_float8_fnuz_cast(to: int, saturate: int) -> None:
    model = _cast_chain(to, saturate)
    want_q, want_y = ReferenceEvaluator(model).run(None, {"x": EDGES})
    q, y = run_model(convert(model), {"x": EDGES})
    np.testing.assert_array_equal(from_ember_array(q, to).astype(np.float32), want_q.astype(np.float32))
    np.testing.assert_array_equal(y, want_y)


def test_int2_cast_wraps_integers() -> None:
    x = np.arange(-6, 7, dtype=np.int32)
    nodes = [helper.make_node("Cast", ["x"], ["q"], to=TensorProto.INT2),
             helper.make_node("Cast", ["q"], ["y"], to=TensorProto.INT32)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT32, [13])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, None)])
    m = helper.make_model(g, opset_imports=[helper.make_operatorsetid("", 25)])
    m.ir_version = 12
    (y,) = run_model(convert(m), {"x": x})
    np.testing.assert_array_equal(y, ((x + 2) % 4) - 2)  # the low two bits, sign-extended
