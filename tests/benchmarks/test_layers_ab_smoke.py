"""benchmarks/layers.py --ab end to end on a small network (a 3x3 convolution large enough
for Winograd F(4x4) and a 1x1 one with a residual Add), so that the tool does not rot: every
variant compiles and runs. Asserts the table's structure, never speed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")  # layers.py imports compare.py, which needs the peers
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("ember_benchmarks_layers", ROOT / "benchmarks" / "layers.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_ab_table_runs_every_variant(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w3 = numpy_helper.from_array((rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32), "w3")
    w1 = numpy_helper.from_array((rng.standard_normal((64, 64, 1, 1)) / 8).astype(np.float32), "w1")
    nodes = [helper.make_node("Conv", ["x", "w3"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w1"], ["d"]),
             helper.make_node("Add", ["d", "r"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "ab", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 24, 24])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 24, 24])], [w3, w1])
    path = tmp_path / "ab.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    layers = _load_tool()
    table = layers.ab_table(str(path), rounds=2, seed=0, runs=1)
    for label in ("default (2 threads)", "Winograd F(2x2) only", "residuals apart", "1 thread"):
        assert label in table
    from ember.devices.cpu.kernels import winograd
    from ember.devices.cpu.runtime import memory

    assert winograd.F4_MAX_SHARE > 0 and memory.IN_PLACE  # the knobs restored
