"""benchmarks/busy_load.py end to end on a tiny network (structure only, never speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_busy_load_prints_the_three_engines(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["z"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 16, 16])], [w])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "busy_load.py"), "--model", str(path),
                          "--spin", "any", "--rounds", "1", "--slice", "0.05"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "| ember |" in out and "| ember, 1 thread |" in out and "| OpenVINO |" in out
    assert "ember / OpenVINO:" in out
