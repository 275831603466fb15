"""benchmarks/compare.py end to end on a tiny network, so that the tool does not rot.

Asserts the structure of what it measures and writes, never speed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    spec = importlib.util.spec_from_file_location("ember_benchmarks_compare", ROOT / "benchmarks" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


compare = _load_tool()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Conv 3x3 -> Relu -> GlobalAveragePool -> Flatten -> Gemm: a CNN in five nodes."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], [w, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("compare") / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def _config(path: Path, **kw) -> compare.CompareConfig:
    base = dict(models=(compare.ModelSpec("tiny", path),), device=compare.default_device(), time_s=0.04, rounds=2,
                warmup=1, warmup_s=0.1, ort_threads=2, pause_s=0.0)
    return compare.CompareConfig(**(base | kw))


def test_run_compare_structure(tiny_onnx: Path, tmp_path: Path) -> None:
    result = compare.run_compare(_config(tiny_onnx), log=lambda line: None)
    assert set(result) == {"environment", "config", "models"}
    (model,) = result["models"]
    assert model["model"] == "tiny" and model["check_passed"] and not model["error"]
    kinds = [r["kind"] for r in model["engines"]]
    assert kinds == ["ember", "openvino", "onnxruntime"]
    for r in model["engines"]:
        assert r["latency"]["runs"] >= 2
        assert 0 < r["latency"]["min_ms"] <= r["latency"]["median_ms"] <= r["latency"]["p90_ms"]
        assert r["throughput_ips"] > 0 and r["throughput_runs"] >= 2 and r["throughput_setup"]
        assert r["compile_cold_s"] > 0
        assert r["max_rel_diff"] <= 1e-3
    ember, ov, ort = model["engines"]
    assert ember["latency_ratio"] is None and ov["latency_ratio"] > 0 and ort["throughput_ratio"] > 0
    assert ember["compile_cached_s"] > 0 and ov["compile_cached_s"] > 0 and ort["compile_cached_s"] is None
    assert ov["loaded_from_cache"] is True

    table = compare.format_table(result)
    assert "tiny" in table and "median ms" in table and len(table.splitlines()) == 2 + 3
    json_path, md_path = compare.write_results(result, tmp_path / "out" / "res")
    assert json.loads(json_path.read_text())["models"][0]["model"] == "tiny"
    assert md_path.read_text().count("| tiny |") == 3


def test_bf16_adds_columns_and_skip_flags(tiny_onnx: Path) -> None:
    config = _config(tiny_onnx, precisions=("f32", "bf16"), throughput=False, compile_time=False, rounds=1)
    (model,) = compare.run_compare(config, log=lambda line: None)["models"]
    engines = model["engines"]
    assert [(r["kind"], r["engine"].split()[-1]) for r in engines] == [
        ("ember", "f32"), ("ember", "bf16"), ("openvino", "f32"), ("openvino", "bf16"), ("onnxruntime", "f32")]
    assert model["check_passed"]
    assert all(r["throughput_ips"] is None and r["compile_cold_s"] is None for r in engines)
    # each peer is compared with the ember engine of its precision
    assert engines[3]["latency_ratio"] == pytest.approx(engines[1]["latency"]["median_ms"]
                                                        / engines[3]["latency"]["median_ms"])


def test_int8_rows(tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """int8: the NNCF IR to ember and OpenVINO, the QDQ model to ONNX Runtime, checked against
    ONNX Runtime f32 (the last row) and timed; peers compared with ember int8."""
    pytest.importorskip("nncf")
    monkeypatch.setattr(compare, "INT8_CACHE", tmp_path / "int8")
    config = _config(tiny_onnx, precisions=("int8",), throughput=False, compile_time=False, rounds=1)
    (model,) = compare.run_compare(config, log=lambda line: None)["models"]
    engines = model["engines"]
    assert [(r["kind"], r["precision"]) for r in engines] == [
        ("ember", "int8"), ("openvino", "int8"), ("onnxruntime", "int8"), ("onnxruntime", "f32")]
    assert model["check_passed"], model["error"]
    assert 0 < engines[0]["max_rel_diff"] <= compare.TOLERANCE["int8"]  # quantized: not the f32 output
    assert all(r["latency"]["runs"] >= 1 for r in engines)
    if engines[0]["engine"].startswith("ember CPU"):  # the tiny CNN's convolution and Gemm
        assert engines[0]["int8_ops"] == 2
    assert engines[2]["latency_ratio"] == pytest.approx(engines[0]["latency"]["median_ms"]
                                                        / engines[2]["latency"]["median_ms"])
    ir, qdq = compare.int8_models(config.models[0])  # cached: the same files again
    assert ir.exists() and qdq.exists() and ir.parent.parent == tmp_path / "int8"


def test_main_end_to_end(tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp.json"
    code = compare.main(["--models", str(tiny_onnx), "--time", "0.02", "--rounds", "1", "--warmup", "1",
                         "--skip-compile", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "ember/x lat" in text and out.exists() and out.with_suffix(".md").exists()
    assert compare.main(["--models", "no_such_net"]) == 2


@pytest.mark.parametrize("a, b, expected", [
    ([np.array([1.0, 2.0])], [np.array([1.0, 2.0])], 0.0),
    ([np.array([1.0, 2.1])], [np.array([1.0, 2.0])], 0.05),       # relative to the largest magnitude
    ([np.array([1e-6, 0.0])], [np.zeros(2)], 1e24),                # a zero reference: absolute over a tiny scale
    ([np.array([1.0])], [np.array([1.0, 2.0])], float("inf")),    # shapes differ
    ([np.array([np.nan, 1.0])], [np.array([0.0, 1.0])], float("inf")),
    ([np.array([np.inf, 1.0])], [np.array([np.inf, 1.0])], 0.0),
    ([np.zeros((0, 3))], [np.zeros((0, 3))], 0.0),
    ([np.ones(2)], [np.ones(2), np.ones(2)], float("inf")),        # output counts differ
])
def test_max_rel_diff(a: list[np.ndarray], b: list[np.ndarray], expected: float) -> None:
    assert compare.max_rel_diff(a, b) == pytest.approx(expected, rel=1e-6)


def test_default_inputs_by_type(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["o"])], "g",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 4]),
                               helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, 4]),
                               helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor_value_info("o", TensorProto.INT64, [1, 4])])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    feeds = compare.default_inputs(path, 0)
    assert feeds["attention_mask"].tolist() == [[1, 1, 1, 1]] and feeds["input_ids"].dtype == np.int64
    assert feeds["x"].shape == (1, 2) and feeds["x"].dtype == np.float32
    assert np.array_equal(compare.default_inputs(path, 0)["x"], feeds["x"])


def test_config_validation(tiny_onnx: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        _config(tiny_onnx, precisions=("f16",))
    with pytest.raises(ValueError):
        _config(tiny_onnx, rounds=0)


def test_mismatch_is_not_timed(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs that disagree stop the network before timing, and show as MISMATCH."""
    real = compare._OVApiCompiled.infer
    monkeypatch.setattr(compare._OVApiCompiled, "infer", lambda self, feeds: [o + 1.0 for o in real(self, feeds)])
    result = compare.run_compare(_config(tiny_onnx, compile_time=False), log=lambda line: None)
    (model,) = result["models"]
    assert not model["check_passed"] and model["error"].startswith("outputs disagree")
    assert all(r["latency"] is None and r["throughput_ips"] is None for r in model["engines"])
    assert model["engines"][0]["max_rel_diff"] > 1e-3
    assert compare.table_rows(result)[0][2] == "MISMATCH"


def test_failing_engine_keeps_other_models(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that raises on one network marks it FAILED; the next network is still measured."""
    real = compare.EmberEngine.prepare

    def prepare(self, spec):
        if spec.name == "broken":
            raise RuntimeError("no kernel for Foo")
        return real(self, spec)

    monkeypatch.setattr(compare.EmberEngine, "prepare", prepare)
    specs = (compare.ModelSpec("broken", tiny_onnx), compare.ModelSpec("tiny", tiny_onnx))
    result = compare.run_compare(_config(tiny_onnx, models=specs, compile_time=False, throughput=False),
                                 log=lambda line: None)
    broken, tiny = result["models"]
    assert not broken["check_passed"] and broken["error"] == "RuntimeError: no kernel for Foo"
    assert tiny["check_passed"] and tiny["engines"][0]["latency"]["runs"] >= 2
    assert compare.table_rows(result)[0][2] == "FAILED"
    assert any("no kernel for Foo" in line for line in compare.notes(result))


def test_default_device_switches_to_cpu_when_registered() -> None:
    import ember
    from ember.devices.base import register_device, unregister_device

    if "CPU" in ember.Core().available_devices:
        assert compare.default_device() == "CPU"
        return
    assert compare.default_device() == "REFERENCE"
    from ember.devices.reference.device import ReferenceDevice

    class FakeCpu(ReferenceDevice):
        name = "CPU"

    register_device("CPU", FakeCpu)
    try:
        assert compare.default_device() == "CPU"
    finally:
        unregister_device("CPU")
    assert compare.default_device() == "REFERENCE"


def test_load_and_rss_columns(tiny_onnx: Path) -> None:
    """--load measures latency again under a spinning process; --rss each engine's peak memory
    in a process of its own; both get ember / peer ratios and table cells."""
    config = _config(tiny_onnx, models=(compare.model_spec(str(tiny_onnx)),), throughput=False,
                     compile_time=False, rounds=1, load=True, rss=True)
    result = compare.run_compare(config, log=lambda line: None)
    (model,) = result["models"]
    assert model["check_passed"], model["error"]
    ember, ov, ort = model["engines"]
    for r in model["engines"]:
        assert r["load_latency"]["runs"] >= 1
        assert r["peak_rss_mb"] is not None and 0 <= r["peak_rss_mb"] < 4096
    assert ov["load_ratio"] == pytest.approx(ember["load_latency"]["median_ms"] / ov["load_latency"]["median_ms"])
    assert ort["rss_ratio"] == pytest.approx(ember["peak_rss_mb"] / ort["peak_rss_mb"]) or not ort["peak_rss_mb"]
    header = compare.format_table(result).splitlines()[0]
    assert "load ms" in header and "peak MB" in header


def test_ir_model_runs_without_onnxruntime(tiny_onnx: Path, tmp_path: Path) -> None:
    """An IR network (as the zoo writes for models built from weights) runs on ember and
    OpenVINO only, checked against OpenVINO f32, at the spec's fixed input shapes."""
    import ember

    xml = tmp_path / "tiny.xml"
    ember.save_model(ember.convert_model(str(tiny_onnx)), xml, compress_to_fp16=False)
    spec = compare.ModelSpec("tiny-ir", xml, shapes={"x": [1, 3, 8, 8]})
    (model,) = compare.run_compare(_config(tiny_onnx, models=(spec,), compile_time=False, throughput=False),
                                   log=lambda line: None)["models"]
    assert model["check_passed"], model["error"]
    assert [r["kind"] for r in model["engines"]] == ["ember", "openvino"]
    assert model["engines"][1]["max_rel_diff"] == 0.0 and model["engines"][0]["max_rel_diff"] <= 1e-3
    assert compare.reference_index([compare.EmberEngine("REFERENCE", "f32")]) == 0


def test_zoo_names_resolve() -> None:
    assert set(compare.ZOO_MODELS) <= set(compare.ALL_MODELS)
    assert compare.ALIASES["all-minilm-l6-v2"] == "minilm"
    with pytest.raises(ValueError, match="known"):
        compare.model_spec("no_such_net")


def test_int8_rows_are_judged_against_each_other() -> None:
    """ember's int8 and OpenVINO's run the same quantized IR: a quantized model far from f32 (both
    alike) is timed; an ember int8 output that leaves OpenVINO's is a mismatch."""
    from types import SimpleNamespace as NS

    def run(ember8: float, ov8: float) -> tuple[bool, list]:
        engines = [NS(kind="ember", precision="f32"), NS(kind="ember", precision="int8"),
                   NS(kind="openvino", precision="f32"), NS(kind="openvino", precision="int8")]
        values = [1.0, ember8, 1.0, ov8]
        compiled = [NS(infer=lambda feeds, v=v: [np.array([v, 2.0], np.float32)]) for v in values]
        rows = [compare.EngineResult(engine=f"{e.kind} {e.precision}", kind=e.kind, precision=e.precision)
                for e in engines]
        return compare.check_outputs(compiled, engines, rows, {}), rows

    ok, rows = run(0.0, 0.0)  # both int8 rows 0.5 off f32, equal to each other
    assert ok and rows[1].max_rel_diff == pytest.approx(0.5) and rows[1].check_diff == 0.0
    ok, rows = run(0.0, 1.0)  # ember's int8 leaves OpenVINO's
    assert not ok and rows[1].check_diff == pytest.approx(0.5)


def test_ratios_pair_the_rounds() -> None:
    """A machine that slows down between rounds: the ratio pairs each round's slices (1.0 here,
    the engines equal in every round), where pooled medians would read the drift as a gap."""
    ember = compare.EngineResult("ember CPU f32", "ember", "f32")
    ov = compare.EngineResult("OpenVINO CPU f32", "openvino", "f32")
    ember.latency = compare.LatencyStats.of([0.010] * 3 + [0.020] * 5, [[0.010] * 3, [0.020] * 5])
    ov.latency = compare.LatencyStats.of([0.010] * 5 + [0.020] * 3, [[0.010] * 5, [0.020] * 3])
    ember.throughput_ips, ember.throughput_rounds = 60.0, [100.0, 50.0]
    ov.throughput_ips, ov.throughput_rounds = 90.0, [110.0, 55.0]
    engines = [types.SimpleNamespace(kind="ember", precision="f32"), types.SimpleNamespace(kind="openvino", precision="f32")]
    compare.add_ratios(engines, [ember, ov])
    assert ember.latency.round_medians_ms == [10.0, 20.0]
    assert ov.latency_ratio_pooled == pytest.approx(2.0) and ov.latency_ratio == pytest.approx(1.0)
    assert ov.throughput_ratio == pytest.approx(1.1) and ov.throughput_ratio_pooled == pytest.approx(1.5)
    # rounds that do not pair up (a peer that ran fewer): the pooled ratio
    ov.latency = compare.LatencyStats.of([0.010] * 5, [[0.010] * 5])
    compare.add_ratios(engines, [ember, ov])
    assert ov.latency_ratio == ov.latency_ratio_pooled == pytest.approx(2.0)
