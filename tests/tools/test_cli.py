"""The ``ember`` command line: info and run on a saved IR."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ember as ov
import ember.opset as ops
from ember.tools.cli import main


@pytest.fixture()
def ir(tmp_path: Path) -> Path:
    x = ops.parameter([1, 4], np.float32, name="x")
    w = ops.constant(np.arange(4, dtype=np.float32).reshape(1, 4))
    y = ops.relu(ops.multiply(x, w, name="scale"), name="act")
    y.output(0).set_names({"y"})
    path = tmp_path / "m.xml"
    ov.save_model(ov.Model([y], [x], "cli_model"), path)
    return path


def test_info(ir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(ir)]) == 0
    out = capsys.readouterr().out
    assert "x: f32[1,4]" in out and "y: f32[1,4]" in out
    assert "Multiply" in out and "ReLU" in out


def test_run_with_input_file(ir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.array([[1, -1, 2, 3]], np.float32))
    assert main(["run", str(ir), "-d", "REFERENCE", "--input", f"x={tmp_path / 'x.npy'}",
                 "-o", str(tmp_path / "out")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "out" / "y.npy"), [[0, 0, 4, 9]])


def test_run_errors_are_one_line(ir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((2, 2), np.float32))
    assert main(["run", str(ir), "--input", f"x={tmp_path / 'bad.npy'}"]) == 2
    err = capsys.readouterr().err
    assert "input 'x' expects shape [1,4], got [2, 2]" in err
    np.save(tmp_path / "obj.npy", np.array([object()], dtype=object), allow_pickle=True)
    assert main(["run", str(ir), "--input", f"x={tmp_path / 'obj.npy'}"]) == 2
    assert "object arrays are refused" in capsys.readouterr().err


def test_module_entry_point(ir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ember", "info", str(ir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "cli_model" in proc.stdout
