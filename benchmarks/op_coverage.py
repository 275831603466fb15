"""ember against ONNX Runtime and OpenVINO on the op-coverage networks: recurrent, transposed
convolution, scatter/gather models (tests/models/op_models.py), with the tail of the latency.

    python benchmarks/op_coverage.py                          # all six, 1,000 runs per engine
    python benchmarks/op_coverage.py --models gnn,crnn --runs 200 --rounds 4
    python benchmarks/op_coverage.py --out results/DATE-op-coverage

For each network: every engine reads the same ONNX file (ember with ``convert_model``, opt
level 2), compiles it with the LATENCY hint, and runs the same seeded inputs once; outputs must
agree with ONNX Runtime within 1e-3 of their magnitude, else the network is not timed. Then
``--runs`` synchronous batch-1 inferences per engine in ``--rounds`` alternating rounds
(A B C A B C, so machine noise hits all alike). Reported per engine: median, p99 and p99 /
median over all runs, and the spread of the rounds (slowest round's median / fastest round's
median: a whole round 10x slower than the others shows here); for ember, every op that ran on a
reference kernel instead of a native one.

Fairness between engines: after each engine's round the process *settles* (it sleeps until
three consecutive 10 ms windows in which its own threads used under 5% of a core, at most 1 s;
``compare.settle``, which compare.py's rounds use too) before the next
engine's round starts. ONNX Runtime's intra-op threads keep spinning after a run (its default
``session.intra_op.allow_spinning``, left as it is): measured 10-30% of a core for 100-150 ms
after a round on this machine, where OpenVINO's and ember's threads are quiet within 10 ms. A
fixed 50 ms pause let that spinning fall on the first runs of the next engine's round. The
settle time each engine leaves behind is reported (``settle ms``).

    python benchmarks/op_coverage.py --diagnose               # why ember's slow runs were slow
    python benchmarks/op_coverage.py --alone --diagnose       # ember only, no peer loaded

``--diagnose`` records, for each of ember's runs, the garbage collections that ran inside it
(``gc.get_stats``), and its thread pool's counters (``ThreadPool.stats``): parallel jobs,
futex wake-ups of sleeping workers, the time the caller waited for workers after its own
tasks, the workers it moved to its own CPU after waiting ``RESCUE_MS``, the runs that ran
every job on the caller alone (*serial runs*: the run-mode chooser's, on a machine the pool
judged busy) and the runs after which the pool judged the machine busy; it prints them for the
slowest 1% of runs against all runs. ``--s5`` adds ember a second time with its
pool on session 5's run-mode policy (``load_alone.session5_policy``), in the same rounds.
``--alone`` runs ember
without creating the peers' sessions (their threads cannot disturb it; no output check).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "tests", ROOT / "benchmarks"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import compare  # noqa: E402  (benchmarks/compare.py: the engines and the output check)

TOLERANCE = 1e-3


def fallback_ops(compiled: compare.Compiled) -> dict[str, int]:
    """How many ops of each type ember's CPU device runs on a reference kernel (empty on other
    devices), from the plan's ``stats["fallbacks"]``."""
    executable = getattr(getattr(compiled, "compiled", None), "_executable", None)
    stats = getattr(getattr(executable, "program", None), "stats", None)
    return dict(stats.get("fallbacks", {})) if isinstance(stats, dict) else {}


settle = compare.settle  # sleep until the process's threads are idle (three quiet 10 ms windows, at most 1 s)


def measure(jobs: Sequence[Callable[[], Any]], runs: int, rounds: int,
            settled: list[list[float]] | None = None) -> list[list[list[float]]]:
    """``runs`` calls of each job split into ``rounds`` alternating rounds: [job][round][seconds].
    Each round is followed by :func:`settle`; ``settled[job]`` gets the seconds it took."""
    per_round = max(1, runs // rounds)
    out: list[list[list[float]]] = [[] for _ in jobs]
    for _ in range(rounds):
        for i, job in enumerate(jobs):
            times = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                job()
                times.append(time.perf_counter() - t0)
            out[i].append(times)
            waited = settle()
            if settled is not None:
                settled[i].append(waited)
    return out


class Diagnosis:
    """Per-run causes for one ember compiled model: garbage collections inside the run and its
    pool's counters (jobs, futex wake-ups, caller wait, workers rescued, jobs run on the caller
    alone) and whether the pool judged the machine busy, with the run's latency. A *serial run*
    ran every job on the caller alone (the run-mode chooser's choice on a busy machine, or a
    straggling spell)."""

    def __init__(self, compiled: compare.Compiled) -> None:
        executable = getattr(getattr(compiled, "compiled", None), "_executable", None)
        self.pool = getattr(executable, "pool", None)
        # seconds, gc gen0/1/2, jobs, wakes, wait_us, rescues, serial jobs, busy after the run
        self.rows: list[tuple[float, ...]] = []

    def wrap(self, job: Callable[[], Any]) -> Callable[[], Any]:
        """``job`` recording its causes (a few microseconds more per run, the same for every run)."""
        def run() -> Any:
            g0 = [s["collections"] for s in gc.get_stats()]
            p0 = self.pool.stats() if self.pool is not None else None
            t0 = time.perf_counter()
            out = job()
            dt = time.perf_counter() - t0
            g1 = [s["collections"] for s in gc.get_stats()]
            d = (self.pool.stats() - p0) if p0 is not None else None
            self.rows.append((dt, *(b - a for a, b in zip(g0, g1)), d.jobs if d else 0, d.wakes if d else 0,
                              d.wait_us if d else 0.0, d.rescues if d else 0, d.serial_jobs if d else 0,
                              float(bool(getattr(self.pool, "busy", False)))))
            return out
        return run

    def summary(self) -> dict[str, Any]:
        """Means over all runs and over the slowest 1% (at least one run)."""
        if not self.rows:
            return {}
        a = np.asarray(self.rows)
        slow = a[np.argsort(a[:, 0])[-max(1, len(a) // 100):]]

        def means(x: np.ndarray) -> dict[str, float]:
            return {"ms": float(x[:, 0].mean() * 1e3), "gc_runs": float((x[:, 1:4].sum(1) > 0).mean()),
                    "gc_gen2_runs": float((x[:, 3] > 0).mean()), "jobs": float(x[:, 4].mean()),
                    "wakes": float(x[:, 5].mean()), "wait_us": float(x[:, 6].mean()),
                    "rescues": float(x[:, 7].mean()),
                    "serial_runs": float(((x[:, 4] == 0) & (x[:, 8] > 0)).mean()),
                    "busy_runs": float(x[:, 9].mean())}

        return {"all": means(a), "slowest_1pct": means(slow), "runs": len(a)}


def summarize(rounds: list[list[float]]) -> dict[str, float]:
    ms = np.concatenate([np.asarray(r) for r in rounds]) * 1e3
    medians = [float(np.median(r)) * 1e3 for r in rounds]
    med = float(np.median(ms))
    p99 = float(np.percentile(ms, 99))
    return {"median_ms": med, "p99_ms": p99, "p99_over_median": p99 / med, "runs": int(ms.size),
            "round_spread": max(medians) / min(medians)}


def run_network(name: str, runs: int, rounds: int, device: str, log: Callable[[str], None],
                diagnose: bool = False, alone: bool = False, s5: bool = False) -> dict[str, Any]:
    from models.op_models import example_inputs, export

    spec = compare.ModelSpec(name, export(name), inputs=lambda path, seed, n=name: example_inputs(n, seed))
    engines: list[compare.Engine] = [compare.EmberEngine(device, "f32")]
    if not alone:
        engines += [compare.OrtEngine(1), compare.OpenVINOEngine("f32")]
    if s5:  # ember again, its pool on session 5's run-mode policy (load_alone.session5_policy)
        engines.append(compare.EmberEngine(device, "f32"))
        engines[-1].label += " s5 pool"
    feeds = spec.make_inputs(0)
    result: dict[str, Any] = {"model": name, "engines": [], "error": "", "fallbacks": {}}
    compiled: list[compare.Compiled] = []
    try:
        for e in engines:
            e.prepare(spec)
            compiled.append(e.compile("LATENCY"))
        if s5:
            import load_alone

            load_alone.session5_policy(Diagnosis(compiled[-1]).pool)
        outputs = [c.infer(feeds) for c in compiled]
        diffs = [compare.max_rel_diff(o, outputs[1]) if not alone else None for o in outputs]
        result["fallbacks"] = fallback_ops(compiled[0])
        for e, d in zip(engines, diffs):
            result["engines"].append({"engine": e.label, "max_rel_diff": d})
        if not alone and max(d for d in diffs if d is not None) > TOLERANCE:
            result["error"] = "outputs disagree with ONNX Runtime beyond 1e-3; not timed"
            log(f"{name}: MISMATCH {diffs}")
            return result
        for c in compiled:
            compare.warm_up(lambda c=c: c.infer(feeds), 10, 3.0)
        jobs = [lambda c=c: c.infer(feeds) for c in compiled]
        diagnosis = Diagnosis(compiled[0]) if diagnose else None
        if diagnosis is not None:
            jobs[0] = diagnosis.wrap(jobs[0])
        settled: list[list[float]] = [[] for _ in jobs]
        timings = measure(jobs, runs, rounds, settled)
        for row, t, waits in zip(result["engines"], timings, settled):
            row.update(summarize(t))
            row["settle_ms"] = float(np.mean(waits)) * 1e3
        if diagnosis is not None:
            result["diagnosis"] = diagnosis.summary()
        ember = result["engines"][0]["median_ms"]
        for row in result["engines"][1:]:
            row["ember_over"] = ember / row["median_ms"]
        log(f"{name}: " + ", ".join(f"{r['engine']} {r['median_ms']:.2f} ms" for r in result["engines"]))
    except Exception as e:  # noqa: BLE001 - one network's failure must not end the others'
        result["error"] = f"{type(e).__name__}: {e}"
        log(f"{name}: FAILED: {result['error']}")
    finally:
        for c in compiled:
            c.close()
    return result


COLUMNS = ("model", "engine", "median ms", "p99 ms", "p99/median", "round spread", "ember/x", "max diff",
           "settle ms")


def table(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for m in results:
        for r in m["engines"]:
            f = lambda key, fmt: "-" if r.get(key) is None else format(r[key], fmt)  # noqa: E731
            rows.append([m["model"], r["engine"], f("median_ms", ".2f"), f("p99_ms", ".2f"),
                         f("p99_over_median", ".2f"), f("round_spread", ".2f"), f("ember_over", ".2f"),
                         f("max_rel_diff", ".0e"), f("settle_ms", ".0f")])
    return rows


def format_text(results: list[dict[str, Any]]) -> str:
    rows = [list(COLUMNS)] + table(results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    for m in results:
        if m["fallbacks"]:
            lines.append(f"{m['model']}: ember ran {sum(m['fallbacks'].values())} op(s) on reference kernels: "
                         + ", ".join(f"{k} x{v}" for k, v in sorted(m["fallbacks"].items())))
        elif not m["error"]:
            lines.append(f"{m['model']}: every op native on ember")
        if m["error"]:
            lines.append(f"{m['model']}: {m['error']}")
    for m in results:
        d = m.get("diagnosis")
        if d:
            for key, label in (("all", "all runs"), ("slowest_1pct", "slowest 1%")):
                x = d[key]
                lines.append(f"{m['model']}: ember {label:10s} {x['ms']:7.2f} ms; runs with a gc "
                             f"{100 * x['gc_runs']:4.1f}% (gen 2: {100 * x['gc_gen2_runs']:.1f}%); per run "
                             f"{x['jobs']:.1f} parallel jobs, {x['wakes']:.1f} futex wake-ups, "
                             f"{x['wait_us']:.0f} us waiting for workers, {x.get('rescues', 0.0):.2f} rescues; "
                             f"serial runs {100 * x.get('serial_runs', 0.0):.1f}%, judged busy "
                             f"{100 * x.get('busy_runs', 0.0):.1f}%")
    return "\n".join(lines)


def format_markdown(results: list[dict[str, Any]], env: dict[str, Any]) -> str:
    out = [f"# ember vs ONNX Runtime vs OpenVINO: op-coverage networks ({env['date']})", "",
           f"CPU: {env['cpu']}, {env['cores']} cores; ember {env['ember']}, OpenVINO {env['openvino']}, "
           f"ONNX Runtime {env['onnxruntime']}. Batch-1 synchronous latency, alternating rounds.", "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(r) + " |" for r in table(results)]
    out += ["", "```", *format_text(results).splitlines()[2 + len(table(results)):], "```"]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from models.op_models import NAMES

    p = argparse.ArgumentParser(prog="op_coverage.py", description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(NAMES), help=f"comma-separated, among {', '.join(NAMES)}")
    p.add_argument("--runs", type=int, default=1000, help="inferences per engine and network (default 1000)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds the runs are split into")
    p.add_argument("--device", default="CPU", help="ember's device (default CPU)")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    p.add_argument("--diagnose", action="store_true",
                   help="record gc collections and pool counters per ember run; compare the slowest 1%%")
    p.add_argument("--alone", action="store_true", help="ember only: the peers' sessions are not created")
    p.add_argument("--s5", action="store_true",
                   help="also time ember with its pool on session 5's run-mode policy (an A/B in the same rounds)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown or args.runs < 1 or args.rounds < 1:
        print(f"op_coverage.py: unknown network(s) {unknown} or runs/rounds < 1; known: {', '.join(NAMES)}",
              file=sys.stderr)
        return 2
    env = compare.environment(compare.CompareConfig(models=(compare.ModelSpec("-", Path("-")),), device=args.device))
    log = lambda line: print(line, flush=True)  # noqa: E731
    results = [run_network(n, args.runs, args.rounds, args.device, log, args.diagnose, args.alone, args.s5)
               for n in names]
    print()
    print(format_text(results))
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".json").write_text(json.dumps({"environment": env, "models": results}, indent=2) + "\n")
        path.with_suffix(".md").write_text(format_markdown(results, env))
        print(f"wrote {path.with_suffix('.json')} and {path.with_suffix('.md')}")
    return 0 if all(not m["error"] for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
