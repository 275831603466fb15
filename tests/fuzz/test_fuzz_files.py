"""Mutation fuzzing of the IR reader and the ONNX loader (seeded, time-bounded).

Each case runs in a worker process (a crash is a failed case, not a dead test run); see
``fuzzlib`` for the outcome classes. ``EMBER_FUZZ_SECONDS`` and ``EMBER_FUZZ_SEED`` change the
budget and the first seed; ``python tests/fuzz/fuzz.py`` runs longer on demand.
"""

from __future__ import annotations

import os

import fuzzlib
import pytest

SECONDS = float(os.environ.get("EMBER_FUZZ_SECONDS", "8"))
SEED = int(os.environ.get("EMBER_FUZZ_SEED", "0"))


@pytest.mark.parametrize("kind", fuzzlib.KINDS)
def test_mutated_model_files(kind: str) -> None:
    report = fuzzlib.run_cases((kind,), seconds=SECONDS, start_seed=SEED, min_cases=40)
    print(f"\n{report.table()}")
    counts = report.counts[kind]
    assert counts["correct"] > 0 and counts["clean_error"] > 0, "the mutants should cover both outcomes"
    bad = "\n".join(f"  {k} seed {s}: {o}: {d}" for k, s, o, d in report.bad[:20])
    assert not report.bad, f"{len(report.bad)} bad cases (reproduce with fuzzlib.run_case(kind, seed)):\n{bad}"
