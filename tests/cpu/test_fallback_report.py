"""What ran where: ops on reference kernels inside a CPU plan are named in profiling (exec type
``ref_any``), in ``ember benchmark -pc`` (with their share of the time) and in the DEBUG log."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.graph.model import Model
from ember.tools.benchmark import Benchmark, BenchmarkConfig


def _model() -> Model:
    """A convolution (native) and a middle-axis softmax (reference kernel)."""
    x = ops.parameter([1, 3, 6, 6], np.float32, name="x")
    w = np.random.default_rng(3).standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = ops.relu(ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1], name="conv"))
    return Model([ops.softmax(ops.reshape(y, np.array([1, 4, 36], np.int64), False), 1, name="sm")], [x], "mixed")


def test_profiling_names_reference_kernels() -> None:
    cm = ember.Core().compile_model(_model(), "CPU", {"PERF_COUNT": True})
    req = cm.create_infer_request()
    req.infer([np.ones((1, 3, 6, 6), np.float32)])
    kinds = {p.node_name: p.exec_type for p in req.get_profiling_info()}
    assert kinds["sm"] == "ref_any"
    assert kinds["conv"] != "ref_any"


def test_debug_log_names_each_reference_op_and_its_share(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="ember.cpu"):
        cm = ember.Core().compile_model(_model(), "CPU")
        x = np.ones((1, 3, 6, 6), np.float32)
        first = cm([x])[0]
        np.testing.assert_allclose(cm([x])[0], first)
    text = caplog.text
    assert "SoftMax 'sm' -> reference kernel" in text
    assert "reference kernel SoftMax 'sm':" in text and "% of the run" in text
    assert "1 op(s) on reference kernels" in text
    np.testing.assert_allclose(first, ember.Core().compile_model(_model(), "REFERENCE")([x])[0], rtol=1e-5, atol=1e-6)


def test_benchmark_pc_lists_reference_kernels(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "mixed.xml"
    ember.serialize(_model(), path)
    lines: list[str] = []
    Benchmark(BenchmarkConfig(str(path), device="CPU", niter=3, perf_counts=True, progress=False),
              log=lines.append).run_all()
    at = next(i for i, line in enumerate(lines) if line.startswith("Reference kernels: 1 op(s)"))
    assert "sm" in lines[at + 1] and "SoftMax" in lines[at + 1] and "ref_any" in lines[at + 1]
