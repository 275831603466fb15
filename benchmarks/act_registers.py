"""The f32 GEMM epilogue's activation in registers against the pass over the stored tile
(``gemm.ACT_IN_REGISTERS`` on / off), ember alone, same process, alternating rounds.

Whole inferences: CPU time of the process per inference (``time.process_time``; run it under
``taskset -c 1`` at one thread so that the figure is the kernel work, not the machine's load),
median of the rounds and the median of the per-round ratios on / off. Per step: the
profiling counters of every step (a second pair of requests with ``PERF_COUNT``), paired by
execution order, median per step, the steps whose time moved most first:

    taskset -c 1 python benchmarks/act_registers.py --models ppocr-rec,ppocr-det,mobilenet_v2 --rounds 21
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import model_spec  # noqa: E402 - the sibling benchmark's model table


def _request(core: Any, path: Path, shapes: dict[str, list[int]], threads: int, profiled: bool,
             on: bool) -> Any:
    from ember.devices.cpu.kernels import gemm

    old = gemm.ACT_IN_REGISTERS
    gemm.ACT_IN_REGISTERS = on
    try:
        model = core.read_model(str(path))
        model.reshape(shapes)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                                  "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": profiled}
        return core.compile_model(model, "CPU", config).create_infer_request()
    finally:
        gemm.ACT_IN_REGISTERS = old


def ab(name: str, rounds: int, runs: int, threads: int, top: int, seed: int = 0) -> str:
    import ember

    spec = model_spec(name)
    feeds = spec.make_inputs(seed)
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    core = ember.Core()
    plain = {on: _request(core, spec.path, shapes, threads, False, on) for on in (True, False)}
    prof = {on: _request(core, spec.path, shapes, threads, True, on) for on in (True, False)}
    outs = {on: plain[on].infer(feeds) for on in plain}
    diff = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
               for a, b in zip(outs[True].values(), outs[False].values()))
    for req in [*plain.values(), *prof.values()]:
        for _ in range(2):
            req.infer(feeds)
    whole: dict[bool, list[float]] = {True: [], False: []}
    layers: dict[bool, dict[int, list[float]]] = {on: collections.defaultdict(list) for on in (True, False)}
    names: dict[int, str] = {}
    for r in range(rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            t0 = time.process_time()
            for _ in range(runs):
                plain[on].infer(feeds)
            whole[on].append((time.process_time() - t0) / runs * 1e3)
            prof[on].infer(feeds)
            for i, p in enumerate(prof[on].get_profiling_info()):  # paired by execution order
                t = p.real_time
                layers[on][i].append(t.total_seconds() * 1e6 if hasattr(t, "total_seconds") else float(t))
                if on:
                    names[i] = f"{p.node_type or 'fused'} {p.node_name}"
    ratio = np.array(whole[True]) / np.array(whole[False])
    lines = [f"== {spec.name} f32, {threads} thread(s): {rounds} alternating rounds of {runs} inferences, "
             f"CPU time per inference; outputs on vs off differ by at most {diff:.3g}",
             f"   registers {np.median(whole[True]):.3f} ms, rows pass {np.median(whole[False]):.3f} ms, "
             f"on / off {np.median(ratio):.3f} (q25-q75 {np.quantile(ratio, 0.25):.3f}-{np.quantile(ratio, 0.75):.3f})",
             f"   {'step (profiling counters, median us)':56s} {'off us':>8s} {'on us':>8s} {'on/off':>7s}"]
    med = {on: {k: float(np.median(v)) for k, v in layers[on].items()} for on in layers}
    order = sorted(med[True], key=lambda k: med[True][k] - med[False].get(k, med[True][k]))
    for k in order[:top]:
        off, on_ = med[False].get(k, float("nan")), med[True][k]
        lines.append(f"   {names[k][-56:]:56s} {off:8.1f} {on_:8.1f} {on_ / max(off, 1e-9):7.3f}")
    tot_on, tot_off = sum(med[True].values()), sum(med[False].values())
    lines.append(f"   all steps: off {tot_off / 1e3:.3f} ms, on {tot_on / 1e3:.3f} ms ({tot_on / tot_off:.3f})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ppocr-rec,ppocr-det,mobilenet_v2")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--runs", type=int, default=3, help="inferences per round and variant")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=12, help="layers listed per model")
    args = ap.parse_args()
    for name in args.models.split(","):
        print(ab(name, args.rounds, args.runs, args.threads, args.top), flush=True)


if __name__ == "__main__":
    main()
