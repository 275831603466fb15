"""What a new user (and an OpenVINO user) hits in the first hour: one test per fixed fault."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember as ov
import ember.opset as ops
from ember.tools.cli import main


def _conv_model(batch: int = -1, hw: int = 8) -> ov.Model:
    rng = np.random.default_rng(0)
    x = ops.parameter([batch, 3, hw, hw], np.float32, name="x")
    x.output(0).set_names({"x"})
    w = ops.constant(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    y = ops.relu(ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1]))
    y.output(0).set_names({"y"})
    return ov.Model([y], [x], "dyn")


@pytest.fixture()
def dyn_ir(tmp_path: Path) -> Path:
    path = tmp_path / "dyn.xml"
    ov.save_model(_conv_model(), path)
    return path


@pytest.fixture()
def onnx_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).astype(np.float32))
    g = helper.make_graph([helper.make_node("Conv", ["data", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["prob"])], "g",
                          [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                          [helper.make_tensor_value_info("prob", TensorProto.FLOAT, None)], [w])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


# -- dynamic shapes at the command line ---------------------------------------------------------

def test_run_random_on_dynamic_model_names_the_dimension(dyn_ir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(dyn_ir), "--random"]) == 2
    err = capsys.readouterr().err
    assert "dynamic dimensions" in err and "x[?,3,8,8]" in err and "--shape" in err


def test_run_with_shape_reshapes(dyn_ir: Path, tmp_path: Path) -> None:
    assert main(["run", str(dyn_ir), "--random", "-shape", "x[2,3,8,8]", "-d", "CPU", "-o", str(tmp_path / "o")]) == 0
    assert np.load(tmp_path / "o" / "y.npy").shape == (2, 4, 8, 8)


def test_run_without_inputs_mentions_i_and_random(dyn_ir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(dyn_ir)]) == 2
    err = capsys.readouterr().err
    assert "-i" in err and "--random" in err


def test_run_output_must_be_a_folder(dyn_ir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["run", str(dyn_ir), "--random", "--shape", "[1,3,8,8]", "-o", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_benchmark_dynamic_model_needs_shape(dyn_ir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", str(dyn_ir), "-niter", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dynamic dimensions" in err and "-data_shape" in err and "-shape" in err


def test_benchmark_app_flags(dyn_ir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rep = tmp_path / "rep"
    assert main(["benchmark", "-m", str(dyn_ir), "-data_shape", "[2,3,8,8]", "-niter", "3", "-d", "CPU",
                 "-report_type", "average_counters", "-report_folder", str(rep), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Device: CPU," in out and "(CPU)" not in out
    rows = list(csv.reader(open(rep / "benchmark_report.csv"), delimiter=";"))
    assert any(r and r[0] == "total number of iterations" for r in rows)
    counters = list(csv.reader(open(rep / "benchmark_average_counters_report.csv"), delimiter=";"))
    assert counters[0][0] == "layerName" and any(r[2] == "Convolution" for r in counters[1:])


def test_benchmark_batch_and_input_files(dyn_ir: Path, tmp_path: Path) -> None:
    from PIL import Image

    from ember.tools.benchmark import Benchmark, BenchmarkConfig

    img = tmp_path / "img.png"
    Image.fromarray(np.full((20, 30, 3), 7, np.uint8)).save(img)
    b = Benchmark(BenchmarkConfig(str(dyn_ir), device="CPU", niter=2, batch=3, input_files=(str(img),),
                                  progress=False), log=lambda line: None)
    model = b.reshape(b.read_model()[0])
    assert list(model.input(0).partial_shape.to_shape()) == [3, 3, 8, 8]
    compiled = b.compile(model)[0]
    (feeds,) = b.make_inputs(compiled, 1)
    assert feeds[0].shape == (3, 3, 8, 8) and np.all(feeds[0] == 7)


# -- conversion -------------------------------------------------------------------------------

def test_convert_input_on_ir_reshapes(dyn_ir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.xml"
    assert main(["convert", str(dyn_ir), "--input", "x[1,3,16,16]", "-o", str(out)]) == 0
    assert out.is_file()  # -o x.xml names the file, it is not a folder
    assert list(ov.Core().read_model(out).input(0).partial_shape.to_shape()) == [1, 3, 16, 16]


def test_convert_model_input_tuple(onnx_file: Path) -> None:
    model = ov.convert_model(onnx_file, input=("data", [1, 3, 48, 192]))
    assert list(model.input(0).partial_shape.to_shape()) == [1, 3, 48, 192]
    model = ov.convert_model(onnx_file, input=[1, 3, 10, 12])
    assert list(model.input(0).partial_shape.to_shape()) == [1, 3, 10, 12]
    model = ov.convert_model(onnx_file, input={"data": [2, 3, 8, 8]})
    assert list(model.input(0).partial_shape.to_shape()) == [2, 3, 8, 8]


def test_mo_command_line_matches_model_optimizer_layout(onnx_file: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "openvino_model"
    assert main(["mo", "--input_model", str(onnx_file), "--output_dir", str(out), "--input_shape", "[1,3,16,16]",
                 "--mean_values", "[1,2,3]", "--scale_values", "[2,2,2]", "--model_name", "net"]) == 0
    xml = out / "net.xml"
    assert xml.is_file() and (out / "net.bin").is_file()
    nodes = int(capsys.readouterr().out.split("(")[1].split(" nodes")[0])
    assert main(["info", str(xml)]) == 0
    assert f"ops: {nodes} nodes" in capsys.readouterr().out  # convert and info count the same nodes
    # the same IR real OpenVINO reads, with the normalization inside
    import openvino

    x = np.random.default_rng(2).random((1, 3, 16, 16)).astype(np.float32) * 255
    ours = ov.Core().compile_model(str(xml), "REFERENCE")([x])[0]
    theirs = openvino.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})([x])[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-2, atol=1e-2)


def test_mo_python_api(onnx_file: Path) -> None:
    from ember.tools import mo

    model = mo.convert_model(str(onnx_file), input="data", input_shape=[1, 3, 20, 20], model_name="m")
    assert model.friendly_name == "m" and list(model.input(0).partial_shape.to_shape()) == [1, 3, 20, 20]
    with pytest.raises(ov.EmberError, match="does not support"):
        mo.convert_model(str(onnx_file), transformations_config="x.json")


def test_opt_level_3_accepted(onnx_file: Path, tmp_path: Path) -> None:
    assert main(["convert", str(onnx_file), "--opt-level", "3", "-o", str(tmp_path)]) == 0


# -- bad files --------------------------------------------------------------------------------

def test_empty_onnx_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert main(["convert", str(empty), "-o", str(tmp_path)]) == 2
    assert "not an ONNX model" in capsys.readouterr().err
    with pytest.raises(ov.EmberError, match="not an ONNX model"):
        ov.Core().read_model(str(empty))


def test_missing_bin_is_not_found(dyn_ir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dyn_ir.with_suffix(".bin").unlink()
    assert main(["info", str(dyn_ir)]) == 2
    assert "was not found" in capsys.readouterr().err


def test_output_selection_error_lists_outputs(onnx_file: Path) -> None:
    with pytest.raises(ov.EmberError, match="its outputs are: prob"):
        ov.convert_model(onnx_file, output="nosuch")


# -- the command itself -----------------------------------------------------------------------

def test_version_and_log_level_after_subcommand(dyn_ir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("ember ")
    assert main(["info", str(dyn_ir), "--log-level", "debug"]) == 0


def test_broken_pipe_is_quiet(dyn_ir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "ember", "info", str(dyn_ir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.read(5)
    proc.stdout.close()
    proc.wait(timeout=60)
    assert b"Traceback" not in proc.stderr.read()


# -- OpenVINO API pieces ----------------------------------------------------------------------

def test_layout_helpers() -> None:
    model = _conv_model(1)
    ov.layout_helpers.set_layout(model.input(0), ov.Layout("NCHW"))
    layout = ov.layout_helpers.get_layout(model.input(0))
    assert ov.layout_helpers.height_idx(layout) == 2 and ov.layout_helpers.channels_idx(layout) == 1
    assert ov.layout_helpers.has_batch(layout) and not ov.layout_helpers.has_depth(layout)


def test_import_model_picks_the_exported_device() -> None:
    core = ov.Core()
    blob = core.compile_model(_conv_model(1), "CPU").export_model()
    assert list(core.import_model(blob).get_property("EXECUTION_DEVICES")) == ["CPU"]


# -- progress -----------------------------------------------------------------------------------

def test_progress_bars_only_when_shown_and_worth_it(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    from ember import progress

    items = list(range(600))
    assert progress.bar(items, len(items), "converting") is items  # not shown: the iterable itself
    with progress.shown():
        assert progress.bar(items[:10], 10, "converting") == items[:10]  # small work: no bar
        assert sum(progress.bar(items, len(items), "converting")) == sum(items)
    assert "converting" in capsys.readouterr().err


def test_big_onnx_conversion_shows_a_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    from ember import progress

    nodes = [helper.make_node("Relu" if i % 2 else "Neg", [f"t{i}"], [f"t{i + 1}"]) for i in range(700)]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("t700", TensorProto.FLOAT, [4])])
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    with progress.shown():
        ov.convert_model(path, opt_level=0)
    assert "converting" in capsys.readouterr().err
