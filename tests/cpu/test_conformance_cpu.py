"""The ONNX backend node tests on the CPU device: every case that passes on REFERENCE (in the
conformance run's recorded results) must pass on CPU too, with the cases' own tolerances."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import ember

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance"
SHARDS = 6  # the cases split so that test workers share them (each case compiles its kernels)


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SHARDS))
def test_reference_passing_cases_pass_on_cpu(monkeypatch: pytest.MonkeyPatch, shard: int) -> None:
    pytest.importorskip("onnx")
    sys.path.insert(0, str(CONFORMANCE))
    import run_node_tests

    import ember.devices.reference as reference

    core = ember.Core()

    def run_on_cpu(model, inputs):  # noqa: ANN001, ANN202 - run_model's signature
        ordered = []
        for p in model.get_parameters():
            keys = set(p.output(0).names) | {p.friendly_name}
            ordered.append(np.asarray(next(inputs[k] for k in keys if k in inputs)))
        return core.compile_model(model, "CPU")._executable.run(ordered)

    monkeypatch.setattr(reference, "run_model", run_on_cpu)
    recorded = json.loads((CONFORMANCE / "results.json").read_text())["tests"]
    failures = []
    ran = 0
    for i, case in enumerate(run_node_tests.collect()):
        if i % SHARDS != shard or recorded.get(case.name, {}).get("status") != "pass":
            continue
        ran += 1
        status, reason = run_node_tests.run_case(case)
        if status != "pass":
            failures.append(f"{case.name}: {reason}")
    assert ran > 1000 // SHARDS
    assert not failures, "\n".join(failures[:20])
