"""The README is current: its commands, its generated figures and its OpenVINO script.

The figures come from the tools that measure them (``benchmarks/readme_tables.py`` renders
each ``<!-- generated:NAME -->`` block from its source); these tests fail when a block and
its source disagree, so a README cannot quote numbers the tools no longer produce.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import readme_tables  # noqa: E402

README = (ROOT / "README.md").read_text()


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)


def test_two_commands_come_first_and_ci_runs_the_test_command() -> None:
    blocks = _code_blocks(README)
    assert blocks[0].strip() == 'pip install -e ".[demo]" && ember demo'
    install = 'pip install -e ".[test]" -c .ci/constraints.txt'
    assert blocks[1].strip() == f"{install} && python -m pytest -q -n 2"
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci and "python -m pytest -q -n 2" in ci
    pins = [line.split("==")[0].lower() for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert {"numpy", "onnx", "llvmlite", "torch", "openvino"} <= set(pins)
    assert "venv" in ci  # a fresh virtual environment per run


@pytest.mark.parametrize("name", ["compare", "passes", "conformance"])
def test_generated_block_is_current(name: str) -> None:
    diff = readme_tables.check(name)
    assert diff is None, f"README block '{name}' is stale; run python benchmarks/readme_tables.py --write\n{diff}"


def test_conformance_results_match_the_baseline() -> None:
    results = json.loads((ROOT / "tests" / "conformance" / "results.json").read_text())["summary"]
    baseline = json.loads((ROOT / "tests" / "conformance" / "baseline.json").read_text())
    assert (results["passed"], results["total"]) == (baseline["passed"], baseline["total"]), \
        "tests/conformance/results.json is not the baseline's run: run tests/conformance/run_node_tests.py"


def test_readme_has_no_figures_from_outside_the_repository() -> None:
    assert "shared/" not in README and "BENCHMARKS.md" not in README


@pytest.mark.slow
def test_optimizer_block_is_current() -> None:
    pytest.importorskip("torch")
    diff = readme_tables.check("optimizer")
    assert diff is None, f"README optimizer table is stale; run python benchmarks/readme_tables.py --write\n{diff}"


def _readme_script() -> str:
    m = re.search(r"<!-- example:openvino_classic -->\n```python\n(.*?)```", README, re.S)
    assert m, "README lost its OpenVINO script block"
    return m.group(1)


def test_readme_script_is_the_example_file() -> None:
    assert _readme_script() == (ROOT / "examples" / "openvino_classic.py").read_text()


@pytest.mark.slow
def test_openvino_classic_script_on_the_zoo_ir(tmp_path: Path, effnet: object) -> None:
    """The README's script, unchanged but for its import, on ``ember zoo fetch --output_dir``'s IR,
    names scikit-image's cat and coffee photos; the same script on real OpenVINO agrees."""
    cv2 = pytest.importorskip("cv2")
    import skimage.data

    from ember.tools.cli import main

    assert main(["zoo", "fetch", "efficientnet-lite0", "--output_dir", str(tmp_path / "openvino_model")]) == 0
    cv2.imwrite(str(tmp_path / "cat.jpg"), skimage.data.chelsea()[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "coffee.jpg"), skimage.data.coffee()[:, :, ::-1])
    script = _readme_script()
    (tmp_path / "ours.py").write_text(script)
    theirs = script.replace("import ember as ov", "import openvino as ov")
    assert theirs != script
    (tmp_path / "theirs.py").write_text(theirs)
    want = {"cat.jpg": {281, 282, 285}, "coffee.jpg": {967}}  # tabby, tiger cat, Egyptian cat; espresso
    for image, classes in want.items():
        got = []
        for script_file in ("ours.py", "theirs.py"):
            proc = subprocess.run([sys.executable, script_file, image], cwd=tmp_path, capture_output=True,
                                  text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-2000:]
            got.append(int(proc.stdout.split()[-1]))
        assert got[0] in classes, f"{image}: class {got[0]}"
        assert got[0] == got[1], f"{image}: ember says {got[0]}, OpenVINO {got[1]}"
    shutil.rmtree(tmp_path / "openvino_model")


def test_newest_compare_is_the_latest_run_not_the_last_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Result files are named by session ("s9", "s10"), which sort the wrong way as text: the
    README's table comes from the run that started last."""
    for name, date in (("2026-12-04-s9-x-compare.json", "2026-12-04T16:29:32"),
                       ("2026-12-04-s10-x-compare.json", "2026-12-04T18:55:00"),
                       ("2026-12-03-s8-x-compare.json", "2026-12-03T10:00:00")):
        (tmp_path / name).write_text(json.dumps({"environment": {"date": date}}))
    (tmp_path / "2026-12-05-broken-compare.json").write_text("{not json")
    monkeypatch.setattr(readme_tables, "RESULTS", tmp_path)
    assert readme_tables.newest_compare().name == "2026-12-04-s10-x-compare.json"
