"""Latency on a busy machine: ember (all cores), ember on one thread and OpenVINO, idle and
while another process spins on one core (``compare.BackgroundLoad``), in alternating rounds.

    python benchmarks/busy_machine.py --models efficientnet-lite0,ppocr-rec,minilm,resnet50

The question it answers (issue 20): under load, is ember ever slower than ember on one thread
(it must not be), and how far is it from OpenVINO? Prints one table; medians in ms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # noqa: E402


def engines(spec: compare.ModelSpec) -> list[tuple[str, compare.Compiled]]:
    """(label, compiled) for ember on all cores, ember on one thread, OpenVINO; f32, LATENCY."""
    import openvino

    import ember

    model = ember.convert_model(str(spec.path), input=compare._input_arg(spec), opt_level=2)
    out = []
    for label, extra in (("ember", {}), ("ember 1T", {"INFERENCE_NUM_THREADS": 1})):
        compiled = ember.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                              "INFERENCE_PRECISION_HINT": "f32", **extra})
        out.append((label, compare._OVApiCompiled(ember, compiled)))
    ov_model = openvino.Core().read_model(str(spec.path))
    if spec.shapes:
        ov_model.reshape(compare._static_shapes(spec))
    ov = openvino.Core().compile_model(ov_model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    out.append(("OpenVINO", compare._OVApiCompiled(openvino, ov)))
    return out


def measure(name: str, seconds: float, rounds: int) -> dict[str, tuple[float, float]]:
    """{label: (idle median ms, loaded median ms)}."""
    spec = compare.model_spec(name)
    feeds = spec.make_inputs(0)
    pairs = engines(spec)
    config = compare.CompareConfig(models=(spec,), time_s=seconds, rounds=rounds)
    rows = [compare.EngineResult(label, "x", "f32") for label, _ in pairs]
    compiled = [c for _, c in pairs]
    compare.measure_latency(compiled, rows, feeds, config)
    with compare.BackgroundLoad():
        compare.measure_latency(compiled, rows, feeds, config, under_load=True)
    return {r.engine: (r.latency.median_ms, r.load_latency.median_ms) for r in rows}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="efficientnet-lite0,ppocr-rec,minilm,resnet50")
    p.add_argument("--time", type=float, default=4.0, help="seconds per engine and phase")
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    print(f"{'model':20s} {'ember':>8s} {'1T':>8s} {'OV':>8s} | {'ember@load':>10s} {'1T@load':>8s} {'OV@load':>8s}"
          f" | {'load/1T':>7s} {'load/OV':>7s}")
    for name in args.models.split(","):
        r = measure(name, args.time, args.rounds)
        e, one, ov = r["ember"], r["ember 1T"], r["OpenVINO"]
        print(f"{name:20s} {e[0]:8.2f} {one[0]:8.2f} {ov[0]:8.2f} | {e[1]:10.2f} {one[1]:8.2f} {ov[1]:8.2f}"
              f" | {e[1] / one[1]:7.2f} {e[1] / ov[1]:7.2f}", flush=True)


if __name__ == "__main__":
    main()
