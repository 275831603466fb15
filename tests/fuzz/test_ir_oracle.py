"""Real OpenVINO as the oracle of the IR reader: every mutated IR that OpenVINO refuses,
ember refuses too (ember may refuse more: a declared shape that disagrees with the inferred
one, duplicate ids, cycles). Runs in a child process: a crash of either reader fails the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = int(os.environ.get("EMBER_FUZZ_ORACLE_CASES", "500"))
SEED = int(os.environ.get("EMBER_FUZZ_SEED", "0"))

_CHILD = """
import json, logging, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
import fuzzlib
import openvino as ov
from ember.errors import EmberError
from ember.io import read_ir_bytes

core = ov.Core()
counts = {"both read": 0, "both refuse": 0, "ember stricter": 0, "ember accepts, OpenVINO refuses": 0}
bad = []
for seed in range(int(sys.argv[1]), int(sys.argv[1]) + int(sys.argv[2])):
    xml, weights = fuzzlib.make_case("ir", seed)
    try:
        text = xml.decode("utf-8")
    except UnicodeDecodeError:
        continue  # OpenVINO's Python API takes text: nothing to compare
    try:
        core.read_model(text, ov.Tensor(np.frombuffer(weights or b"\\0", np.uint8).copy()))
        ov_ok = True
    except Exception:
        ov_ok = False
    try:
        read_ir_bytes(xml, weights)
        ember_ok = True
    except EmberError:
        ember_ok = False
    key = ("both read" if ember_ok else "ember stricter") if ov_ok else \\
        ("ember accepts, OpenVINO refuses" if ember_ok else "both refuse")
    counts[key] += 1
    if key == "ember accepts, OpenVINO refuses":
        bad.append(seed)
print(json.dumps({"counts": counts, "bad": bad}))
"""


def test_ir_mutants_openvino_refuses_are_refused() -> None:
    pytest.importorskip("openvino")
    here = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parents[1]), str(here), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", _CHILD, str(SEED), str(CASES)], capture_output=True, text=True,
                       timeout=600, env=env, cwd=here)
    assert r.returncode == 0, f"the child died ({r.returncode}): {r.stderr[-2000:]}"
    report = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"\nIR mutants vs OpenVINO: {report['counts']}")
    assert report["counts"]["both refuse"] > 0 and report["counts"]["both read"] > 0
    assert not report["bad"], f"OpenVINO refuses, ember accepts: seeds {report['bad'][:20]}"
