"""``ember benchmark``: each step of the Benchmark class, and the command line over it."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
from runtime_helpers import small_model

import ember
from ember.errors import EmberError
from ember.graph.shape import PartialShape
from ember.tools.benchmark import Benchmark, BenchmarkConfig, LatencyStats, Progress, parse_shapes, random_inputs


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "small.xml"
    ember.serialize(small_model(shape=[-1, 3]), path)
    return path


SHAPES = [
    ("[1,3,224,224]", PartialShape([1, 3, 224, 224])),
    ("[?,3,-1,1..8]", PartialShape("?,3,?,1..8")),
    ("data[1,3],mask[2,?]", {"data": PartialShape([1, 3]), "mask": PartialShape("2,?")}),
    (" x [ 4 , 3 ] ", {"x": PartialShape([4, 3])}),
]


@pytest.mark.parametrize("text, want", SHAPES)
def test_parse_shapes(text, want):
    assert parse_shapes(text) == want


@pytest.mark.parametrize("text", ["1,3", "[1,3]x", "a[1],[2]", "[a,b]", ""])
def test_parse_shapes_errors(text):
    with pytest.raises(EmberError, match="-shape"):
        parse_shapes(text)


@pytest.mark.parametrize("kwargs, words", [
    ({"api": "fast"}, "sync or async"), ({"hint": "quick"}, "latency, throughput"),
    ({"niter": 0}, "niter"), ({"num_requests": 0}, "num_requests"), ({"duration_s": -1}, "-t")])
def test_config_validation(kwargs, words):
    with pytest.raises(EmberError, match=words):
        BenchmarkConfig("m.xml", **kwargs)


def test_default_hint_follows_api():
    assert BenchmarkConfig("m").effective_hint == "THROUGHPUT"
    assert BenchmarkConfig("m", api="sync").effective_hint == "LATENCY"
    assert BenchmarkConfig("m", hint="none").effective_hint is None
    assert BenchmarkConfig("m", hint="cumulative_throughput").effective_hint == "CUMULATIVE_THROUGHPUT"


def test_latency_stats_against_numpy():
    rng = np.random.default_rng(0)
    lat = list(rng.exponential(3.0, 1001))
    s = LatencyStats.of(lat)
    assert s.median == pytest.approx(np.median(lat)) and s.p90 == pytest.approx(np.percentile(lat, 90))
    assert (s.min, s.max, s.average) == pytest.approx((min(lat), max(lat), np.mean(lat)))
    with pytest.raises(EmberError, match="no inference"):
        LatencyStats.of([])


def test_random_inputs_follow_types_and_bounds():
    import ember.opset as ops

    a = ops.parameter([ember.Dimension(2, 5), 3], np.uint8, name="a")
    b = ops.parameter([2], np.float32, name="b")
    m = ember.Model([ops.result(ops.convert(a, "f32")), ops.result(b)], [a, b])
    sets = random_inputs(m.inputs, 3, seed=1)
    assert len(sets) == 3 and sets[0][0].shape == (2, 3) and sets[0][0].dtype == np.uint8
    assert sets[0][1].dtype == np.float32 and not np.array_equal(sets[0][1], sets[1][1])


@pytest.mark.parametrize("api", ["sync", "async"])
def test_steps_one_by_one(model_path, api, tmp_path):
    lines = []
    b = Benchmark(BenchmarkConfig(str(model_path), device="REFERENCE", api=api, niter=37, shape="[4,3]",
                                  progress=False, num_requests=3), log=lines.append)
    model, read_ms = b.read_model()
    model = b.reshape(model)
    assert str(model.input().partial_shape) == "[4,3]"
    compiled, compile_ms = b.compile(model)
    want_hint = "THROUGHPUT" if api == "async" else "LATENCY"
    assert compiled.get_property("PERFORMANCE_HINT") == want_hint
    assert b.num_requests(compiled) == (3 if api == "async" else 1)
    inputs = random_inputs(compiled.inputs, 3)
    latencies, total_ms, first_ms = b.run(compiled, inputs)
    assert len(latencies) == 37 and all(v > 0 for v in latencies) and total_ms > 0 and first_ms > 0
    result = b.summarize(compiled, latencies, total_ms, first_ms, read_ms, compile_ms, [])
    assert result.iterations == 37 and result.throughput_fps > 0
    text = "\n".join(b.format(result))
    for word in ("Median", "Average", "Min", "Max", "90 percentile", "Throughput", "FPS"):
        assert word in text
    report = json.loads(b.write_report(result, tmp_path).read_text())
    assert report["result"]["iterations"] == 37 and len(report["result"]["latencies_ms"]) == 37
    assert report["config"]["api"] == api
    compiled.close()


def test_duration_limit_stops(model_path):
    b = Benchmark(BenchmarkConfig(str(model_path), device="REFERENCE", duration_s=0.3, progress=False, shape="[1,3]"),
                  log=lambda _: None)
    result = b.run_all()
    # the loop checks the clock before each start, so it ran at least the 0.3 s; the upper bound
    # only says that it stopped (a loaded machine can stretch the last inferences a lot)
    assert result.iterations > 0 and 250 <= result.duration_ms < 60_000


def test_perf_counts(model_path):
    lines = []
    result = Benchmark(BenchmarkConfig(str(model_path), device="REFERENCE", niter=5, perf_counts=True,
                                       progress=False, shape="[2,3]"), log=lines.append).run_all()
    assert {o.node_name for o in result.per_op} >= {"add", "relu", "mul", "sub"}
    assert any("Per-op counters" in line for line in lines) and any("ReLU" in line for line in lines)


def test_histogram_png(model_path, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "h.png"
    Benchmark(BenchmarkConfig(str(model_path), device="REFERENCE", niter=20, progress=False, shape="[1,3]",
                              histogram=str(png)), log=lambda _: None).run_all()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_histogram_without_matplotlib_is_a_one_line_hint(model_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    cfg = BenchmarkConfig(str(model_path), device="REFERENCE", niter=5, progress=False, histogram="h.png")
    with pytest.raises(EmberError, match="pip install matplotlib") as e:
        Benchmark(cfg, log=lambda _: None).run_all()
    assert "\n" not in str(e.value)


def test_progress_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    p = Progress(10, "iterations", stream=out)
    p.update(5, force=True)
    p.close()
    assert "50.0%" in out.getvalue() and "#" * 20 in out.getvalue()
    quiet = io.StringIO()
    Progress(10, "s", stream=quiet).update(5, force=True)
    assert quiet.getvalue() == ""


def test_command_line(model_path, tmp_path, capsys):
    from ember.tools.benchmark import main

    code = main([str(model_path), "-d", "REFERENCE", "-niter", "12", "-api", "sync", "-shape", "[3,3]",
                 "-report_folder", str(tmp_path), "--no-progress", "-nstreams", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Count:            12 iterations" in out and "Throughput" in out
    report = json.loads((tmp_path / "benchmark_report.json").read_text())
    assert report["result"]["streams"] == 2 and report["result"]["api"] == "sync"
    assert main([str(model_path), "-niter", "1", "-shape", "[x]"]) == 2
    assert "cannot parse -shape" in capsys.readouterr().err


def test_ember_cli_subcommand(model_path, capsys):
    cli = pytest.importorskip("ember.tools.cli")
    code = cli.main(["benchmark", str(model_path), "-d", "AUTO", "-niter", "4", "-shape", "[1,3]", "--no-progress",
                     "-hint", "latency"])
    assert code == 0 and "hint LATENCY" in capsys.readouterr().out


def test_benchmark_app_flags(model_path, tmp_path, capsys):
    """-nthreads, -latency_percentile, -ip/-op/-iop, -layout with -b, -exec_graph_path,
    -load_config/-dump_config, as benchmark_app takes them."""
    from ember.tools.benchmark import main

    cfg = tmp_path / "in.json"
    cfg.write_text(json.dumps({"CPU": {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2"}}))
    graph, dump = tmp_path / "exec" / "g.xml", tmp_path / "out.json"
    code = main([str(model_path), "-d", "CPU", "-niter", "20", "-nthreads", "1", "-latency_percentile", "99",
                 "-ip", "u8", "-iop", "y:f16", "-layout", "x[NC]", "-b", "5", "-exec_graph_path", str(graph),
                 "-load_config", str(cfg), "-dump_config", str(dump), "-report_folder", str(tmp_path),
                 "--no-progress", "-inference_only"])
    assert code == 0
    out = capsys.readouterr().out
    assert "99 percentile:" in out and "1 stream(s)" in out  # -nthreads 1 caps the config's 2 streams
    dumped = json.loads(dump.read_text())["CPU"]
    assert dumped["INFERENCE_NUM_THREADS"] == 1 and dumped["PERFORMANCE_HINT"] == "THROUGHPUT"
    runtime = ember.Core().read_model(graph)
    assert runtime.inputs[0].element_type.name == "u8" and list(runtime.inputs[0].partial_shape) == [5, 3]
    assert runtime.outputs[0].element_type.name == "f16"
    report = json.loads((tmp_path / "benchmark_report.json").read_text())["result"]
    lat = report["latency_ms"]
    assert lat["percentile"] == 99 and lat["min"] <= lat["at_percentile"] <= lat["max"]


@pytest.mark.parametrize("flags, words", [
    (["-ip", "q7"], "unknown element type"),
    (["-iop", "nosuch:u8"], "no input or output named"),
    (["-layout", "NCHW"], "-layout takes"),
    (["-latency_percentile", "0"], "between 1 and 100"),
    (["-nthreads", "0"], "between 1 and 4096"),
    (["-load_config", "/nonexistent/cfg.json"], "cannot read -load_config"),
])
def test_benchmark_app_flag_errors(model_path, capsys, flags, words):
    from ember.tools.benchmark import main

    assert main([str(model_path), "-d", "REFERENCE", "-niter", "2", "--no-progress", "-shape", "[1,3]", *flags]) == 2
    assert words in capsys.readouterr().err
