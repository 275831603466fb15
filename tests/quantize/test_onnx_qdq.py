"""ONNX Runtime's quantize_static (QDQ) models convert into the patterns ember.nncf writes:
FakeQuantize on activations, int8 constants with Convert / Multiply on weights; same outputs
as ONNX Runtime running the QDQ model, and the IR reads in OpenVINO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember

ort = pytest.importorskip("onnxruntime")
quant = pytest.importorskip("onnxruntime.quantization")
ov = pytest.importorskip("openvino")


def _float_onnx(path: Path) -> None:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1")
    b1 = numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "b1")
    w2 = numpy_helper.from_array((rng.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, b1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


class _Reader(quant.CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self.items = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)])

    def get_next(self) -> dict | None:
        return next(self.items, None)


@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
def test_ort_qdq_model_converts_to_nncf_patterns(weight_type: str, tmp_path: Path) -> None:
    _float_onnx(tmp_path / "f.onnx")
    quant.quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), _Reader(),
                          quant_format=quant.QuantFormat.QDQ, per_channel=True,
                          weight_type=getattr(quant.QuantType, weight_type),
                          activation_type=quant.QuantType.QUInt8)
    model = ember.convert_model(tmp_path / "q.onnx")
    types = [n.type_name for n in model.get_ordered_ops()]
    assert types.count("FakeQuantize") >= 2 and "DequantizeLinear" not in types
    convs = [n for n in model.get_ordered_ops() if n.type_name == "Convolution"]
    for conv in convs:  # weights: an integer constant decompressed in the graph
        n = conv._inputs[1].node
        chain = []
        while n.type_name != "Const":
            chain.append(n.type_name)
            n = n._inputs[0].node
        assert n.element_type.name in ("i8", "u8") and "Convert" in chain and "Multiply" in chain
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ember.compile_model(model, "REFERENCE")(x)[0]
    step = float(np.max(np.abs(want))) / 127
    assert np.max(np.abs(got - want)) <= 2 * step
    ember.save_model(model, tmp_path / "q.xml")
    ov_out = ov.Core().compile_model(str(tmp_path / "q.xml"), "CPU")(x)[0]
    assert np.max(np.abs(ov_out - got)) <= 2 * step
