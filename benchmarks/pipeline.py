"""Two models in one process, called in turns: does the second run as fast as it does alone?

    python benchmarks/pipeline.py                                  # PP-OCRv4 det then rec (f32)
    python benchmarks/pipeline.py --first ppocr-det --second ppocr-rec --rounds 6 --runs 40

A pipeline (an OCR detector, then its recognizer on each line) compiles several models in one
process and runs them one after another from the same thread. Each compiled model has its own
thread pool; this tool times the second model alone and right after the first, in alternating
rounds, with the second pool's counters per run (futex wake-ups of its workers, the caller's wait
for them), so a pool that gets in the other's way shows (it did: PP-OCRv4 rec right after det ran
2.7x its own time while the second pool's worker shared the caller's CPU). Models are
``compare.py``'s zoo keys at its input shapes. Figures are wall-time medians; compare the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # noqa: E402


def _compile(core: Any, key: str, precision: str) -> Any:
    spec = compare.zoo_model(key)
    model = core.read_model(str(spec.path))
    model.reshape(dict(spec.shapes))
    return core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                             "INFERENCE_PRECISION_HINT": precision})


def _inputs(compiled: Any, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(p.get_shape())).astype(np.float32) for p in compiled.inputs]


def _pool(compiled: Any) -> Any:
    return getattr(getattr(compiled, "_executable", None), "pool", None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--first", default="ppocr-det")
    ap.add_argument("--second", default="ppocr-rec")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args(argv)
    for key in (args.first, args.second):
        if key not in compare.ZOO_MODELS:
            ap.error(f"unknown model '{key}': one of {', '.join(compare.ZOO_MODELS)}")
    if args.rounds < 1 or args.runs < 1:
        ap.error("--rounds and --runs must be at least 1")

    import ember

    core = ember.Core()
    first, second = _compile(core, args.first, args.precision), _compile(core, args.second, args.precision)
    r1, r2 = first.create_infer_request(), second.create_infer_request()
    x1, x2 = _inputs(first, 0), _inputs(second, 1)
    for _ in range(10):
        r1.infer(x1)
        r2.infer(x2)
    pool = _pool(second)
    times: dict[str, list[float]] = {"alone": [], "after": []}
    counters: dict[str, list[Any]] = {"alone": [], "after": []}
    for _ in range(args.rounds):
        for mode in ("alone", "after"):
            before = pool.stats() if pool is not None else None
            for _ in range(args.runs):
                if mode == "after":
                    r1.infer(x1)
                t = time.perf_counter()
                r2.infer(x2)
                times[mode].append(time.perf_counter() - t)
            if before is not None:
                counters[mode].append(pool.stats() - before)
    print(f"{args.second} ({args.precision}) alone and right after {args.first}, one process, "
          f"{args.rounds} alternating rounds of {args.runs} runs")
    print(f"{'':28} {'median ms':>10} {'wake-ups/run':>13} {'wait us/run':>12}")
    for mode, label in (("alone", f"{args.second} alone"), ("after", f"after {args.first}")):
        n = args.rounds * args.runs
        wakes = sum(d.wakes for d in counters[mode]) / n if counters[mode] else float("nan")
        wait = sum(d.wait_us for d in counters[mode]) / n if counters[mode] else float("nan")
        print(f"{label:28} {np.median(times[mode]) * 1e3:10.2f} {wakes:13.1f} {wait:12.0f}")
    print(f"after / alone: {np.median(times['after']) / np.median(times['alone']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
