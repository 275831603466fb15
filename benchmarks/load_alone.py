"""ember's own slowdown under a background load, in a process without the peer engines.

    python benchmarks/load_alone.py --models resnet50 --precisions f32,bf16

``compare.py --load`` measures every engine in one process; the peers' threads (OpenVINO's,
ONNX Runtime's) may still spin after their rounds and take the free core from ember's worker.
This tool compiles ember alone at 2 threads and at 1 thread per precision, and times alternating
rounds quiet and with ``compare.BackgroundLoad()`` (another process spinning on one core; within
a round the configurations take turns run by run):
median latency quiet and loaded, their ratio, and the share of runs the pool ran serially
(no parallel job: the run-mode chooser's choice on a machine judged busy). Figures are wall-time medians; on a shared
machine compare the ratios.

``--s5`` also compiles each 2-thread configuration a second time with session 5's pool policy
(busy judged from the workers' own preemptions over 0.1-5 s windows, the run-mode chooser
without its parallel probe: :func:`session5_policy`), timed in the same rounds: the ratio
``/s5`` of the two is the A/B of the policies under the same load. ``--coarse`` does the same
with a configuration that keeps its plan's own tasks on a busy machine (no finer split:
``Instance.busy_table``), on the same shared pool: with ``EMBER_BUSY_SPLIT=3`` (the split is
off by default) ``/coarse`` is the A/B of the split.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "benchmarks", ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import compare  # noqa: E402  (model specs, seeded inputs, the background spinner)


def session5_policy(pool: object) -> None:
    """Turn ``pool`` (a ThreadPool) back to session 5's run-mode policy: the busy judgement from
    the workers' preemptions (as where /proc/stat is unreadable) and a chooser that alternates
    serial and parallel runs from the start of every spell (no quiet reference to probe against)."""
    from collections import deque

    pool._machine_counters = False  # type: ignore[attr-defined]
    chooser = getattr(pool, "chooser", None)
    if chooser is not None:
        chooser.reference = deque(maxlen=0)


def _compile(core: Any, spec: Any, precision: str, threads: int, own_pool: bool = False) -> Any:
    """One configuration; ``own_pool``: on a pool of its own (``EMBER_SHARE_POOLS=0``), so that
    a policy changed on its pool (:func:`session5_policy`) does not reach the models sharing
    the process's pool."""
    import os

    from ember.devices.cpu.runtime import threadpool

    old = os.environ.get(threadpool.SHARE_POOLS_ENV)
    if own_pool:
        os.environ[threadpool.SHARE_POOLS_ENV] = "0"
    try:
        return core.compile_model(str(spec.path), "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                         "INFERENCE_NUM_THREADS": threads})
    finally:
        if own_pool:
            if old is None:
                del os.environ[threadpool.SHARE_POOLS_ENV]
            else:
                os.environ[threadpool.SHARE_POOLS_ENV] = old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50")
    ap.add_argument("--precisions", default="f32,bf16")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds quiet and loaded")
    ap.add_argument("--runs", type=int, default=20, help="runs per configuration and round")
    ap.add_argument("--s5", action="store_true", help="also time 2 threads under session 5's pool policy")
    ap.add_argument("--coarse", action="store_true",
                    help="also time 2 threads without the busy machine's finer tasks (Instance.busy_table)")
    args = ap.parse_args(argv)
    if args.s5 and args.coarse:
        ap.error("--s5 and --coarse are two different A/B baselines: one at a time")
    base = "s5" if args.s5 else "coarse" if args.coarse else "s5"
    import ember

    core = ember.Core()
    rows = [f"| model | precision | threads | policy | quiet ms | loaded ms | loaded / quiet | quiet /{base} | loaded /{base} "
            "| quiet serial % | loaded serial % |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.models.split(","):
        spec = compare.model_spec(name)
        feeds = compare.default_inputs(spec.path, 0, spec.shapes)
        variants = [(t, "now") for t in (2, 1)] + ([(2, base)] if args.s5 or args.coarse else [])
        configs = {(p, t, pol): _compile(core, spec, p, t, own_pool=pol == "s5")
                   for p in args.precisions.split(",") for t, pol in variants}
        for (_, _, pol), cm in configs.items():
            if pol == "s5":
                session5_policy(cm._executable.pool)
            elif pol == "coarse":  # the plan's own tasks on a busy machine too
                for inst in cm._executable._instances.values():
                    inst.busy_table = inst.table
        for cm in configs.values():
            for _ in range(3):
                cm(feeds)
        times: dict[tuple[str, int, str, bool], list[float]] = {}
        serial: dict[tuple[str, int, str, bool], list[bool]] = {}  # runs with no parallel job
        for _ in range(args.rounds):
            for loaded in (False, True):
                load = compare.BackgroundLoad() if loaded else None
                if load is not None:
                    load.__enter__()
                try:
                    for _ in range(args.runs):  # configurations interleaved run by run (A/B under a moving load)
                        for key, cm in configs.items():
                            pool = cm._executable.pool
                            jobs = pool.stats().jobs
                            t0 = time.perf_counter()
                            cm(feeds)
                            times.setdefault((*key, loaded), []).append(time.perf_counter() - t0)
                            serial.setdefault((*key, loaded), []).append(pool.stats().jobs == jobs)
                finally:
                    if load is not None:
                        load.__exit__(None, None, None)
        for p, t, pol in configs:
            q = float(np.median(times[(p, t, pol, False)])) * 1e3
            lo = float(np.median(times[(p, t, pol, True)])) * 1e3
            ab = ""
            if (p, t, base) in configs:
                ab = " | ".join(f"{m / float(np.median(times[(p, t, base, x)])) / 1e3:.2f}"
                                for m, x in ((q, False), (lo, True)))
            ser = " | ".join(f"{100 * np.mean(serial[(p, t, pol, x)]):.0f}" if t > 1 else "" for x in (False, True))
            rows.append(f"| {name} | {p} | {t} | {pol} | {q:.2f} | {lo:.2f} | {lo / q:.2f} | {ab or ' | '} | {ser} |")
        print("\n".join(rows[-len(configs):]), flush=True)
    print()
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
