"""Latency on a busy machine: ember (all cores), ember with its workers always pinned, ember on
one thread and OpenVINO, idle and while another process spins on one core
(``compare.BackgroundLoad``), in alternating phases and rounds.

    python benchmarks/busy_machine.py --models efficientnet-lite0,ppocr-rec,minilm,resnet50
    python benchmarks/busy_machine.py --models decoder,bilstm_tagger,crnn   # op-coverage networks

The question it answers (issue 20): under load, is ember ever slower than ember on one thread
(it must not be), and how far is it from OpenVINO? The phases alternate (idle, loaded, idle,
loaded...; ``--phases`` pairs), and within a phase the engines alternate in rounds, so that the
machine's own load (other people's processes) falls on every engine and both phases alike.
Prints one table of medians in ms and the ratios under load; ``pinned`` is ember with
``EMBER_PIN_THREADS=1`` (the workers stay on their CPUs even when the machine is busy; the
default lets them go, see ``ThreadPool.adapt``), ``unpins`` how many times ember's default pool
let its workers go.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "tests", ROOT / "benchmarks"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import compare  # noqa: E402

LABELS = ("ember", "pinned", "1T", "OpenVINO")


def spec_of(name: str) -> compare.ModelSpec:
    """A zoo/builtin model of compare.py, or an op-coverage network (tests/models/op_models.py)."""
    try:
        from models.op_models import NAMES, example_inputs, export
    except ImportError:  # torch missing: zoo models only
        NAMES = ()
    if name in NAMES:
        return compare.ModelSpec(name, export(name), inputs=lambda path, seed, n=name: example_inputs(n, seed))
    return compare.model_spec(name)


def engines(spec: compare.ModelSpec) -> list[tuple[str, compare.Compiled]]:
    """(label, compiled) for ember on all cores (default pinning), ember with pinned workers,
    ember on one thread, OpenVINO; f32, LATENCY."""
    import openvino

    import ember

    model = ember.convert_model(str(spec.path), input=compare._input_arg(spec), opt_level=2)
    out = []
    for label, extra, pin in (("ember", {}, None), ("pinned", {}, "1"), ("1T", {"INFERENCE_NUM_THREADS": 1}, None)):
        saved = os.environ.pop("EMBER_PIN_THREADS", None)
        if pin is not None:
            os.environ["EMBER_PIN_THREADS"] = pin
        try:
            compiled = ember.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                                  "INFERENCE_PRECISION_HINT": "f32", **extra})
        finally:
            os.environ.pop("EMBER_PIN_THREADS", None)
            if saved is not None:
                os.environ["EMBER_PIN_THREADS"] = saved
        out.append((label, compare._OVApiCompiled(ember, compiled)))
    ov_model = openvino.Core().read_model(str(spec.path))
    if spec.shapes:
        ov_model.reshape(compare._static_shapes(spec))
    ov = openvino.Core().compile_model(ov_model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    out.append(("OpenVINO", compare._OVApiCompiled(openvino, ov)))
    return out


def measure(name: str, seconds: float, rounds: int, phases: int) -> dict[str, Any]:
    """{label: (idle median ms, loaded median ms)} over all phases, and ember's pool counters."""
    spec = spec_of(name)
    feeds = spec.make_inputs(0)
    pairs = engines(spec)
    config = compare.CompareConfig(models=(spec,), time_s=seconds / phases, rounds=rounds)
    times: dict[str, list[list[float]]] = {label: [[], []] for label, _ in pairs}
    compiled = [c for _, c in pairs]
    for _ in range(phases):
        for loaded in (False, True):
            rows = [compare.EngineResult(label, "x", "f32") for label, _ in pairs]
            if loaded:
                with compare.BackgroundLoad():
                    compare.measure_latency(compiled, rows, feeds, config, under_load=True)
            else:
                compare.measure_latency(compiled, rows, feeds, config)
            for (label, _), r in zip(pairs, rows):
                stats = r.load_latency if loaded else r.latency
                times[label][int(loaded)].append(stats.median_ms)
    pool = getattr(getattr(pairs[0][1].compiled, "_executable", None), "pool", None)
    out: dict[str, Any] = {label: (float(np.median(v[0])), float(np.median(v[1]))) for label, v in times.items()}
    out["unpins"] = getattr(pool, "unpinned_for_load", 0)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="efficientnet-lite0,ppocr-rec,minilm,resnet50")
    p.add_argument("--time", type=float, default=8.0, help="seconds per engine and load state, over all phases")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds per phase")
    p.add_argument("--phases", type=int, default=2, help="idle/loaded phase pairs")
    args = p.parse_args(argv)
    head = " ".join(f"{x:>8s}" for x in LABELS)
    print(f"{'model':16s} {head} | {head} | {'ember/1T':>8s} {'pin/1T':>7s} {'ember/OV':>8s} {'unpins':>6s}")
    print(f"{'':16s} {'idle':^35s} | {'one core busy':^35s} |")
    for name in args.models.split(","):
        r = measure(name, args.time, args.rounds, args.phases)
        idle = " ".join(f"{r[x][0]:8.2f}" for x in LABELS)
        load = " ".join(f"{r[x][1]:8.2f}" for x in LABELS)
        print(f"{name:16s} {idle} | {load} | {r['ember'][1] / r['1T'][1]:8.2f} {r['pinned'][1] / r['1T'][1]:7.2f}"
              f" {r['ember'][1] / r['OpenVINO'][1]:8.2f} {r['unpins']:6d}", flush=True)


if __name__ == "__main__":
    main()
