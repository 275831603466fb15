"""The ONNX backend node tests through ember's ONNX frontend: the pass rate may not drop."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


@pytest.mark.slow
def test_pass_rate_does_not_drop(tmp_path: Path) -> None:
    import run_node_tests

    baseline = json.loads((HERE / "baseline.json").read_text())
    report = run_node_tests.run(jobs=2, out=tmp_path / "results.json", check_exclusions=True)
    s = report["summary"]
    assert s["total"] == baseline["total"], "the number of generated node tests changed"
    failed = [n for n, r in report["tests"].items() if r["status"] == "fail"]
    assert s["passed"] >= baseline["passed"], f"pass count fell to {s['passed']}; failing: {failed[:20]}"
    assert not s["excluded_but_passing"], f"stale exclusions: {s['excluded_but_passing']}"


def test_exclusions_file_is_well_formed() -> None:
    import run_node_tests

    rows = run_node_tests.load_exclusions()
    assert rows and all(cat in run_node_tests.CATEGORIES and reason for _, cat, reason in rows)
