"""benchmarks/pipeline.py refuses bad arguments with a usage error, before compiling anything."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    spec = importlib.util.spec_from_file_location("ember_benchmarks_pipeline", ROOT / "benchmarks" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv,message", [
    (["--first", "nosuch"], "unknown model 'nosuch'"),
    (["--second", "resnet"], "unknown model 'resnet'"),
    (["--runs", "0"], "at least 1"),
    (["--pools", "both"], "--pools takes shared or own"),
])
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    tool = _load_tool()
    with pytest.raises(SystemExit) as e:
        tool.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
