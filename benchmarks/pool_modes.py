"""ember's thread-pool policies side by side on one compiled model, in alternating rounds in one
process: the pool as it is, without its run-mode chooser (always parallel on a busy machine),
without rescues, without the adaptive spin, on one thread (``ThreadPool.serial``), and on
session 5's run-mode policy (``s5``: the busy judgement from the workers' preemptions, no
parallel probe; ``load_alone.session5_policy``).

    python benchmarks/pool_modes.py --models gru_encoder,decoder,unet1d,bilstm_tagger
    python benchmarks/pool_modes.py --models decoder --load       # a spinner on the worker's CPU
    python benchmarks/pool_modes.py --models decoder --never-busy # as if the machine were quiet

Every policy runs the same plan, arena and pool (only the pool's settings change between
rounds), so the ratios compare policies under the same machine load, which on a shared machine
moves a lot between runs of the tool. Per policy: median and p99 latency, the median over the
first policy's, and the pool's counters per run (parallel and serial jobs, futex wake-ups, the
caller's wait for workers, rescues). ``--load`` spins another process on the CPU ember pinned
its worker to (or the last CPU); ``--never-busy`` keeps the pool's busy judgement off (the spin
budgets and the chooser then act as on a quiet machine). Per policy also the share of runs
judged busy and of serial runs (no parallel job).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "tests", ROOT / "benchmarks"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import compare  # noqa: E402  (benchmarks/compare.py: the background spinner)
import load_alone  # noqa: E402  (session 5's pool policy)

POLICIES = ("default", "no-chooser", "no-rescue", "no-spin", "1T", "s5")


def run_model(name: str, runs: int, rounds: int, load: bool, policies: Sequence[str]) -> list[str]:
    from models.op_models import example_inputs, export

    import ember
    from ember.devices.cpu.runtime import threadpool as tp

    model = ember.convert_model(str(export(name)), opt_level=2)
    compiled = ember.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                         "INFERENCE_PRECISION_HINT": "f32"})
    feeds = list(example_inputs(name, 0).values())
    pool = compiled._executable.pool
    chooser = pool.chooser
    request = compiled.create_infer_request()
    for _ in range(20):
        request.infer(feeds)
    times: dict[str, list[float]] = {p: [] for p in policies}
    stats: dict[str, list[tp.PoolStats]] = {p: [] for p in policies}
    flags: dict[str, list[tuple[bool, bool]]] = {p: [] for p in policies}  # judged busy, serial run
    reference = chooser.reference
    spinner = None
    if load:
        cpu = pool.pinned_cpus[0] if pool.pinned_cpus else max(os.sched_getaffinity(0))
        spinner = subprocess.Popen([sys.executable, "-c", compare.SPINNER, str(cpu)])
        time.sleep(0.2)
    try:
        for _ in range(rounds):
            for policy in policies:
                pool.chooser = None if policy == "no-chooser" else chooser
                pool.rescue_ms = 0.0 if policy == "no-rescue" else tp.RESCUE_MS
                pool.max_spin_us = pool.spin_us if policy == "no-spin" else tp.MAX_SPIN_US
                pool.serial = policy == "1T"
                if policy == "s5":
                    load_alone.session5_policy(pool)
                for _ in range(5):
                    request.infer(feeds)
                before = pool.stats()
                for _ in range(runs):
                    jobs = pool.stats().jobs
                    t0 = time.perf_counter()
                    request.infer(feeds)
                    times[policy].append(time.perf_counter() - t0)
                    flags[policy].append((pool.busy, pool.stats().jobs == jobs))
                stats[policy].append(pool.stats() - before)
                if policy == "s5":  # back to the machine's counters and the probe
                    pool._machine_counters, chooser.reference = True, reference
    finally:
        pool.serial = False
        pool.chooser, pool.rescue_ms, pool.max_spin_us = chooser, tp.RESCUE_MS, tp.MAX_SPIN_US
        pool._machine_counters, chooser.reference = True, reference
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    lines = [f"{name}: load {'spinner' if load else 'none'}, pool busy {pool.busy}, "
             f"pinned {pool.pinned_cpus or 'no'}, let go {pool.unpinned_for_load}x"]
    base = float(np.median(times[policies[0]]))
    for policy in policies:
        ms = np.asarray(times[policy]) * 1e3
        n = len(times[policy])
        st = stats[policy]
        per = {k: sum(getattr(s, k) for s in st) / n for k in ("jobs", "serial_jobs", "wakes", "wait_us", "rescues")}
        med = float(np.median(ms))
        lines.append(f"  {policy:10s} median {med:8.3f} ms  p99 {np.percentile(ms, 99):8.3f}  "
                     f"p99/median {np.percentile(ms, 99) / med:5.2f}  /{policies[0]} {med / base / 1e3:5.2f}  "
                     f"per run: parallel jobs {per['jobs']:4.1f}, serial {per['serial_jobs']:4.1f}, "
                     f"wake-ups {per['wakes']:4.1f}, wait {per['wait_us']:5.0f} us, rescues {per['rescues']:.2f}, "
                     f"busy {100 * np.mean([b for b, _ in flags[policy]]):3.0f}%, "
                     f"serial runs {100 * np.mean([r for _, r in flags[policy]]):3.0f}%")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pool_modes.py", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="gru_encoder,decoder,unet1d,bilstm_tagger",
                   help="op-coverage networks (tests/models/op_models.py)")
    p.add_argument("--runs", type=int, default=60, help="runs per policy and round")
    p.add_argument("--rounds", type=int, default=8, help="alternating rounds")
    p.add_argument("--policies", default=",".join(POLICIES), help=f"among {', '.join(POLICIES)}")
    p.add_argument("--load", action="store_true", help="a spinner on the worker's CPU")
    p.add_argument("--never-busy", action="store_true", help="the pool never judges the machine busy")
    args = p.parse_args(argv)
    if args.never_busy:
        from ember.devices.cpu.runtime import threadpool as tp

        tp.BUSY_PREEMPTIONS = tp.BUSY_SPARE = float("inf")
    policies = [x for x in args.policies.split(",") if x]
    unknown = set(policies) - set(POLICIES)
    if unknown:
        p.error(f"unknown policies {sorted(unknown)}")
    for name in args.models.split(","):
        for line in run_model(name, args.runs, args.rounds, args.load, policies):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
