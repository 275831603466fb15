"""Two models in one process, called in turns: does the second run as fast as it does alone?

    python benchmarks/pipeline.py                                  # PP-OCRv4 det then rec (f32)
    python benchmarks/pipeline.py --first ppocr-det --second ppocr-rec --rounds 6 --runs 40
    python benchmarks/pipeline.py --pools shared,own               # A/B: one pool vs a pool per model

A pipeline (an OCR detector, then its recognizer on each line) compiles several models in one
process and runs them one after another from the same thread. This tool times the second model
alone and right after the first, in alternating rounds, with the pool's counters over the second
model's runs only (futex wake-ups of its workers, the caller's wait for them), so a pool that gets
in the other's way shows (it did: PP-OCRv4 rec right after det ran 2.7x its own time while the
second pool's worker shared the caller's CPU). Since session 7 both models share one pool
(``lease_pool``); ``--pools shared,own`` compiles the pair twice, once with shared workers and
once with a pool per model (``EMBER_SHARE_POOLS=0``, the old way), and alternates the two pairs
round by round in the same process. Models are ``compare.py``'s zoo keys at its input shapes.
Figures are wall-time medians; compare the ratios.
"""

from __future__ import annotations

import argparse
import os
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


POOLS = ("shared", "own")


def _pair(core: Any, args: argparse.Namespace, pools: str) -> tuple[Any, Any]:
    """The two models compiled with shared workers or a pool each (``EMBER_SHARE_POOLS``)."""
    from ember.devices.cpu.runtime import threadpool

    old = os.environ.get(threadpool.SHARE_POOLS_ENV)
    os.environ[threadpool.SHARE_POOLS_ENV] = "1" if pools == "shared" else "0"
    try:
        return _compile(core, args.first, args.precision), _compile(core, args.second, args.precision)
    finally:
        if old is None:
            del os.environ[threadpool.SHARE_POOLS_ENV]
        else:
            os.environ[threadpool.SHARE_POOLS_ENV] = old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--first", default="ppocr-det")
    ap.add_argument("--second", default="ppocr-rec")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--no-chooser", action="store_true",
                    help="every run parallel (the run-mode chooser off), so a busy machine still compares parallel runs")
    ap.add_argument("--pools", default="shared", help="shared, own, or both (shared,own): the pairs alternate")
    args = ap.parse_args(argv)
    pools = tuple(p.strip() for p in args.pools.split(",") if p.strip())
    if not pools or any(p not in POOLS for p in pools) or len(set(pools)) != len(pools):
        ap.error(f"--pools takes {' or '.join(POOLS)} (or both, comma-separated), got '{args.pools}'")
    for key in (args.first, args.second):
        if key not in compare.ZOO_MODELS:
            ap.error(f"unknown model '{key}': one of {', '.join(compare.ZOO_MODELS)}")
    if args.rounds < 1 or args.runs < 1:
        ap.error("--rounds and --runs must be at least 1")

    import ember

    core = ember.Core()
    pairs = {p: _pair(core, args, p) for p in pools}
    inputs = {p: (_inputs(a, 0), _inputs(b, 1)) for p, (a, b) in pairs.items()}
    if args.no_chooser:
        for pair in pairs.values():
            for compiled in pair:
                lease = _pool(compiled)
                if lease is not None:
                    lease.chooser = None
    requests = {p: (a.create_infer_request(), b.create_infer_request()) for p, (a, b) in pairs.items()}
    for p, (r1, r2) in requests.items():
        x1, x2 = inputs[p]
        for _ in range(10):
            r1.infer(x1)
            r2.infer(x2)
    cells = [(p, mode) for p in pools for mode in ("alone", "after")]
    times: dict[tuple[str, str], list[float]] = {c: [] for c in cells}
    counters: dict[tuple[str, str], list[Any]] = {c: [] for c in cells}
    for k in range(args.rounds):
        for p in pools if k % 2 == 0 else pools[::-1]:
            (r1, r2), (x1, x2), pool = requests[p], inputs[p], _pool(pairs[p][1])
            for mode in ("alone", "after"):
                for _ in range(args.runs):
                    if mode == "after":
                        r1.infer(x1)
                    before = pool.stats() if pool is not None else None
                    t = time.perf_counter()
                    r2.infer(x2)
                    times[p, mode].append(time.perf_counter() - t)
                    if before is not None:
                        counters[p, mode].append(pool.stats() - before)
    print(f"{args.second} ({args.precision}) alone and right after {args.first}, one process, "
          f"{args.rounds} alternating rounds of {args.runs} runs")
    print(f"{'':36} {'median ms':>10} {'wake-ups/run':>13} {'wait us/run':>12} {'serial runs':>12}")
    n = args.rounds * args.runs
    for p, mode in cells:
        label = f"{args.second} alone" if mode == "alone" else f"after {args.first}"
        wakes = sum(d.wakes for d in counters[p, mode]) / n if counters[p, mode] else float("nan")
        wait = sum(d.wait_us for d in counters[p, mode]) / n if counters[p, mode] else float("nan")
        # runs with no parallel job: the run-mode chooser ran them on the caller (a busy machine)
        ser = 100 * np.mean([d.jobs == 0 for d in counters[p, mode]]) if counters[p, mode] else float("nan")
        print(f"{label + f' ({p} pool)':36} {np.median(times[p, mode]) * 1e3:10.2f} {wakes:13.1f} {wait:12.0f} "
              f"{ser:11.0f}%")
    for p in pools:
        print(f"after / alone ({p} pool): {np.median(times[p, 'after']) / np.median(times[p, 'alone']):.2f}")
    if len(pools) == 2:
        a, b = pools
        for mode in ("alone", "after"):
            print(f"{mode}: {a} / {b}: {np.median(times[a, mode]) / np.median(times[b, mode]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
