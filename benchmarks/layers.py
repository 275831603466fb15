"""ember against OpenVINO op by op: both engines' per-layer counters (``PERF_COUNT``), in one
process, in alternating rounds, so that a busy machine's noise hits both alike.

    python benchmarks/layers.py --models ppocr-det                 # zoo key, as compare.py
    python benchmarks/layers.py --models ppocr-rec,efficientnet-lite0 --rounds 40 --top 15
    python benchmarks/layers.py --models model.onnx --precision bf16
    python benchmarks/layers.py --models mobilenet_v2 --precision int8 --threads 1
    taskset -c 1 python benchmarks/layers.py --models mobilenet_v2 --threads 1 --convs

For each network: the median wall time of each engine, the time per op type (ember's exec
graph types against OpenVINO's, which names fused groups ``Subgraph`` and its fully connected
layers ``FullyConnected``) and each engine's most expensive ops. Times are means over the
rounds of each op's counter; shares of the total are steadier than absolute figures under load.
OpenVINO names a convolution with fused post-ops after the last op it took in (``Multiply_…``):
an elementwise op that ember lists and OpenVINO does not is one OpenVINO fused.

``--convs`` adds a table of the convolutions (``Convolution``, ``GroupConvolution``) paired by
execution order (both engines keep the model's order; the pairing is checked by op type):
each layer's median time in both engines and their ratio, the way to see which layers of a
depthwise network (1x1, depthwise, 3x3) make its gap. With ``--threads 1`` and ``taskset -c 1``
the per-layer times are single-thread times. OpenVINO's counters of a few layers are
occasionally inflated by preemption on a busy machine: read medians over enough rounds.

``--steps`` (ember alone) times each native step of ember's plan (one ``parallel_for``: a
kernel call, a convolution, a fused group) at one thread and at two, alternating per step in
the same plan and arena, and prints its tasks, both times, the speed-up and the bound that
its task count sets with equal tasks on two threads (``ceil(n / 2) / (n / 2)``), with the
thread pool's counters per inference (jobs, futex wake-ups of sleeping workers, the caller's
wait for workers) and the plan's Python steps. The two-thread column is only meaningful on a
quiet machine (with another process on the second core the worker runs late and the step
goes serial):

    python benchmarks/layers.py --models mobilenet_v2 --steps --rounds 40 [--precision bf16]

``--ab`` (ember alone) runs whole inferences at two threads in alternating rounds: the default
against the pool's shared task counter (``ThreadPool.tasks_from_ends`` off), against small
depthwise layers split over both threads (``depthwise.SERIAL_BELOW = 0``), against small even
maps split into 4 depthwise tasks per thread (``depthwise.WHOLE_ROWS_BELOW = 0``), against the model
input's reorder split (``driver.INPUT_REORDER_SERIAL_BYTES = 0``), against the expand 1x1 not
fused into the block (``dw_pointwise.EXPAND = False``), against depthwise + 1x1 not
fused either (``dw_pointwise.ENABLED = False``) and fused on every map (``dw_pointwise.MIN_PIXELS_PER_COUT
= 0``), against reductions over rows in whole inner blocks (``reduce.MID_TASKS_PER_THREAD = 0``:
PP-OCR det's SE means on one thread), and against one thread; it
prints each variant's median and its ratio to the default, per round. A quiet machine is needed
for the two-thread figures to mean anything:

    python benchmarks/layers.py --models mobilenet_v2,efficientnet-lite0 --ab --rounds 40 [--precision bf16]
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


def _compile(core: Any, path: Path, shapes: dict[str, list[int]], precision: str, threads: int = 0) -> Any:
    model = core.read_model(str(path))
    if shapes:
        model.reshape(shapes)
    config: dict[str, Any] = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY",
                              "INFERENCE_PRECISION_HINT": "f32" if precision == "int8" else precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(model, "CPU", config).create_infer_request()


def _us(t: Any) -> float:
    return t.total_seconds() * 1e6 if hasattr(t, "total_seconds") else float(t)


def profile(name: str, rounds: int, precision: str, seed: int, threads: int = 0) -> dict[str, Any]:
    """Per-op and per-type mean times (us) and median wall times (ms) of ember and OpenVINO."""
    import openvino as ov

    import ember

    spec = model_spec(name)
    feeds = spec.make_inputs(seed)
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    path = spec.path
    if precision == "int8":  # the NNCF IR compare.py --precision int8 makes (cached), run by both engines
        from compare import int8_models

        path = int8_models(spec)[0]
    reqs = {"ember": _compile(ember.Core(), path, shapes, precision, threads),
            "OpenVINO": _compile(ov.Core(), path, shapes, precision, threads)}
    convs: dict[str, dict[str, list[float]]] = {k: collections.defaultdict(list) for k in reqs}
    order: dict[str, list[tuple[str, str, str]]] = {k: [] for k in reqs}
    ops: dict[str, collections.Counter] = {k: collections.Counter() for k in reqs}
    types: dict[str, collections.Counter] = {k: collections.Counter() for k in reqs}
    wall: dict[str, list[float]] = {k: [] for k in reqs}
    for req in reqs.values():
        for _ in range(3):
            req.infer(feeds)
    for _ in range(rounds):
        for k, req in reqs.items():
            t0 = time.perf_counter()
            req.infer(feeds)
            wall[k].append(time.perf_counter() - t0)
            info = req.get_profiling_info()
            for p in info:
                us = _us(p.real_time) / rounds
                ops[k][(p.node_name, p.node_type or "-", p.exec_type)] += us
                types[k][p.node_type or "-"] += us
            layers = [p for p in info if p.node_type in CONV_TYPES and _us(p.real_time) > 0]
            if not order[k]:
                order[k] = [(p.node_name, p.node_type, p.exec_type) for p in layers]
            for p in layers:
                convs[k][p.node_name].append(_us(p.real_time))
    return {"name": spec.name, "ops": ops, "types": types, "convs": convs, "order": order,
            "wall": {k: float(np.median(v)) * 1e3 for k, v in wall.items()}}


CONV_TYPES = ("Convolution", "GroupConvolution", "Int8Convolution", "Int8DepthwiseConv")
#: ember's int8 op types paired with OpenVINO's (which keeps the float op's type)
_CONV_KIND = {"Int8Convolution": "Convolution", "Int8DepthwiseConv": "GroupConvolution"}


def conv_table(r: dict[str, Any]) -> str:
    """The convolutions of both engines paired by execution order: median us and ratio."""
    e_ord, o_ord = r["order"]["ember"], r["order"]["OpenVINO"]
    lines = [f"-- convolutions in execution order (ember {len(e_ord)}, OpenVINO {len(o_ord)}): median us",
             f"{'#':>3s} {'type':5s} {'OpenVINO kernel':24s} {'ember':>8s} {'OpenVINO':>9s} {'ratio':>6s}  ember node"]
    te = to = 0.0
    for i, (e, o) in enumerate(zip(e_ord, o_ord)):
        if _CONV_KIND.get(e[1], e[1]) != o[1]:
            lines.append(f"   (pairing stops at #{i}: ember {e[1]}, OpenVINO {o[1]})")
            break
        ue = float(np.median(r["convs"]["ember"][e[0]]))
        uo = float(np.median(r["convs"]["OpenVINO"][o[0]]))
        te, to = te + ue, to + uo
        lines.append(f"{i:3d} {o[1][:5]:5s} {o[2][:24]:24s} {ue:8.1f} {uo:9.1f} {ue / max(uo, 1e-9):6.2f}  {e[0][-48:]}")
    lines.append(f"    sum of the paired layers: ember {te / 1e3:.2f} ms, OpenVINO {to / 1e3:.2f} ms "
                 f"(ratio {te / max(to, 1e-9):.2f})")
    return "\n".join(lines)


def steps_table(name: str, rounds: int, seed: int, threads: int = 2, precision: str = "f32") -> str:
    """Each native step of ember's plan at one thread and at ``threads``, alternating per step."""
    import ember

    spec = model_spec(name)
    feeds = spec.make_inputs(seed)
    core = ember.Core()
    path = spec.path
    if precision == "int8":  # compare.py's NNCF IR, the float remainder in f32
        from compare import int8_models

        path, precision = int8_models(spec)[0], "f32"
    model = core.read_model(str(path))
    model.reshape({k: list(v.shape) for k, v in feeds.items()})
    cm = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                                           "INFERENCE_PRECISION_HINT": precision})
    req = cm.create_infer_request()
    for _ in range(3):
        req.infer(feeds)
    inst = next(reversed(cm._executable._instances.values()))  # the bound plan (a benchmark may look inside)
    pool, table = inst.pool, inst.table
    before = pool.stats()
    for _ in range(rounds):
        req.infer(feeds)
    per = pool.stats() - before
    python_steps = sum(not isinstance(s, tuple) for s in inst.segments)
    names: list[tuple[str, str]] = [("-", "-")] * len(table)
    for op, span in inst.op_spans:
        if isinstance(span, tuple):
            for i in range(span[0], span[0] + span[1]):
                names[i] = (op.type_name, op.name)
    pool.chooser, pool.serial = None, False  # every two-thread step really goes parallel
    wide = table[:, 3].copy()
    times: list[tuple[list[float], list[float]]] = [([], []) for _ in range(len(table))]
    try:
        for r in range(rounds):
            for i in range(len(table)):
                for mode in ((0, 1) if r % 2 == 0 else (1, 0)):
                    table[i, 3] = 1 if mode == 0 else wide[i]
                    inst._native(i, 1)
                    t0 = time.perf_counter()
                    for _ in range(3):
                        inst._native(i, 1)
                    times[i][mode].append((time.perf_counter() - t0) / 3 * 1e6)
    finally:
        table[:, 3] = wide
    lines = [f"== {spec.name}: {len(table)} native steps, {python_steps} Python steps; per inference at "
             f"{threads} threads: {per.jobs / rounds:.0f} parallel jobs, {per.wakes / rounds:.1f} worker wake-ups, "
             f"{per.wait_us / rounds:.0f} us waiting for workers",
             f"{'#':>4s} {'type':18s} {'tasks':>6s} {'1t us':>8s} {f'{threads}t us':>8s} {'speed-up':>8s} "
             f"{'tasks bound':>11s}  node"]
    t1 = t2 = 0.0
    for i, (a, b) in enumerate(times):
        u1, u2 = float(np.median(a)), float(np.median(b))
        t1, t2 = t1 + u1, t2 + u2
        n, th = int(table[i, 2]), max(1, min(int(wide[i]), int(table[i, 2])))
        bound = n / (-(-n // th)) if n else 1.0
        lines.append(f"{i:4d} {names[i][0][:18]:18s} {n:6d} {u1:8.1f} {u2:8.1f} {u1 / max(u2, 1e-9):8.2f} "
                     f"{bound:11.2f}  {names[i][1][-48:]}")
    lines.append(f"     sum of the steps: {t1 / 1e3:.2f} ms at one thread, {t2 / 1e3:.2f} ms at {threads} "
                 f"(speed-up {t1 / max(t2, 1e-9):.2f})")
    return "\n".join(lines)


def ab_table(name: str, rounds: int, seed: int, precision: str = "f32", runs: int = 10) -> str:
    """ember alone at two threads, whole inferences: the default against each of these choices
    switched off (the pool's task order, the one-thread small depthwise layers, whole-row
    depthwise bands, the one-thread input reorder, the fused depthwise + 1x1 pairs, split
    reductions, Winograd F(4x4, 3x3), outputs over their residual) and against one thread, in
    alternating rounds of ``runs`` inferences each."""
    import ember
    from ember.devices.cpu.kernels import depthwise, dw_pointwise, reduce, winograd
    from ember.devices.cpu.lowering import driver
    from ember.devices.cpu.runtime import memory
    from ember.devices.cpu.runtime.threadpool import default_pool

    spec = model_spec(name)
    feeds = spec.make_inputs(seed)
    core = ember.Core()

    pools: list[Any] = []

    def compiled(threads: int) -> Any:
        model = core.read_model(str(spec.path))
        model.reshape({k: list(v.shape) for k, v in feeds.items()})
        cm = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                                               "INFERENCE_PRECISION_HINT": precision})
        lease = getattr(getattr(cm, "_executable", None), "pool", None)
        if lease is not None:  # each model leases the shared pool with a run-mode chooser of its own
            lease.chooser = None  # every two-thread run really goes parallel
            pools.append(lease)
        return cm.create_infer_request()

    pool = default_pool()
    pool.chooser = None
    below, rows, small_input = depthwise.SERIAL_BELOW, depthwise.WHOLE_ROWS_BELOW, driver.INPUT_REORDER_SERIAL_BYTES
    fuse, min_pixels, expand = dw_pointwise.ENABLED, dw_pointwise.MIN_PIXELS_PER_COUT, dw_pointwise.EXPAND
    mid_tasks = reduce.MID_TASKS_PER_THREAD
    f4_share, in_place = winograd.F4_MAX_SHARE, memory.IN_PLACE
    reqs = {"default (2 threads)": compiled(2), "shared task counter": compiled(2)}
    try:
        depthwise.SERIAL_BELOW = 0
        reqs["small depthwise split"] = compiled(2)
        depthwise.SERIAL_BELOW, depthwise.WHOLE_ROWS_BELOW = below, 0
        reqs["dw 4 tasks per thread"] = compiled(2)
        depthwise.WHOLE_ROWS_BELOW, driver.INPUT_REORDER_SERIAL_BYTES = rows, 0
        reqs["input reorder split"] = compiled(2)
        driver.INPUT_REORDER_SERIAL_BYTES = small_input
        dw_pointwise.EXPAND = False
        reqs["expand 1x1 not fused"] = compiled(2)
        dw_pointwise.ENABLED = False
        reqs["dw+1x1 not fused"] = compiled(2)
        dw_pointwise.ENABLED, dw_pointwise.EXPAND, dw_pointwise.MIN_PIXELS_PER_COUT = fuse, expand, 0.0
        reqs["dw+1x1 all fused"] = compiled(2)
        dw_pointwise.MIN_PIXELS_PER_COUT, reduce.MID_TASKS_PER_THREAD = min_pixels, 0
        reqs["reduce blocks unsplit"] = compiled(2)
        reduce.MID_TASKS_PER_THREAD, winograd.F4_MAX_SHARE = mid_tasks, 0.0
        reqs["Winograd F(2x2) only"] = compiled(2)
        winograd.F4_MAX_SHARE, memory.IN_PLACE = f4_share, False
        reqs["residuals apart"] = compiled(2)
    finally:
        winograd.F4_MAX_SHARE, memory.IN_PLACE = f4_share, in_place
        reduce.MID_TASKS_PER_THREAD = mid_tasks
        depthwise.SERIAL_BELOW, depthwise.WHOLE_ROWS_BELOW = below, rows
        driver.INPUT_REORDER_SERIAL_BYTES = small_input
        dw_pointwise.ENABLED, dw_pointwise.MIN_PIXELS_PER_COUT, dw_pointwise.EXPAND = fuse, min_pixels, expand
    reqs["1 thread"] = compiled(1)
    times: dict[str, list[float]] = {k: [] for k in reqs}
    for req in reqs.values():
        for _ in range(3):
            req.infer(feeds)
    try:
        for r in range(rounds):
            for k in (list(reqs) if r % 2 == 0 else list(reqs)[::-1]):
                for p in [pool, *pools]:
                    p.tasks_from_ends = k != "shared task counter"
                one = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    reqs[k].infer(feeds)
                    one.append(time.perf_counter() - t0)
                times[k].append(float(np.median(one)) * 1e3)
    finally:
        for p in [pool, *pools]:
            p.tasks_from_ends = True
    base = np.array(times["default (2 threads)"])
    lines = [f"== {spec.name} {precision}: ember alone, {rounds} alternating rounds of {runs} inferences "
             f"(median per round)", f"{'variant':24s} {'median ms':>10s} {'/ default':>10s} {'q25-q75 of the round ratios':>28s}"]
    for k, v in times.items():
        ratio = np.array(v) / base
        lines.append(f"{k:24s} {np.median(v):10.3f} {np.median(ratio):10.3f} "
                     f"{np.quantile(ratio, 0.25):13.3f}-{np.quantile(ratio, 0.75):.3f}")
    return "\n".join(lines)


def report(r: dict[str, Any], top: int) -> str:
    e, o = r["types"]["ember"], r["types"]["OpenVINO"]
    te, to = sum(e.values()) or 1.0, sum(o.values()) or 1.0
    lines = [f"== {r['name']}: median wall ember {r['wall']['ember']:.2f} ms, OpenVINO {r['wall']['OpenVINO']:.2f} ms "
             f"(ember / OpenVINO {r['wall']['ember'] / r['wall']['OpenVINO']:.2f})",
             f"{'op type':28s} {'ember ms':>9s} {'share':>6s}   {'OpenVINO ms':>11s} {'share':>6s}"]
    for t in sorted(set(e) | set(o), key=lambda t: -max(e.get(t, 0.0), o.get(t, 0.0))):
        if max(e.get(t, 0.0), o.get(t, 0.0)) < 0.005 * max(te, to):
            continue
        lines.append(f"{t:28s} {e.get(t, 0) / 1e3:9.2f} {e.get(t, 0) / te:6.1%}   {o.get(t, 0) / 1e3:11.2f} "
                     f"{o.get(t, 0) / to:6.1%}")
    for k in ("ember", "OpenVINO"):
        total = sum(r["ops"][k].values()) or 1.0
        lines.append(f"-- {k}: top {top} ops")
        for (node, typ, exe), us in r["ops"][k].most_common(top):
            lines.append(f"   {us / 1e3:7.2f} ms {us / total:6.1%}  {typ:24s} {exe:26s} {node}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ppocr-det,ppocr-rec", help="comma-separated zoo keys (as compare.py) or .onnx paths")
    ap.add_argument("--rounds", type=int, default=30, help="alternating inferences per engine")
    ap.add_argument("--precision", default="f32",
                    help="INFERENCE_PRECISION_HINT of both engines, or int8: compare.py's NNCF IR (f32 remainder)")
    ap.add_argument("--threads", type=int, default=0, help="INFERENCE_NUM_THREADS of both engines (0: default)")
    ap.add_argument("--top", type=int, default=20, help="most expensive ops listed per engine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--convs", action="store_true", help="also pair the convolutions by execution order, layer by layer")
    ap.add_argument("--steps", action="store_true",
                    help="ember alone: each native step of the plan at one thread and at --threads (default 2)")
    ap.add_argument("--ab", action="store_true",
                    help="ember alone, whole inferences at two threads: the default against each of its "
                         "choices switched off (task order, depthwise splits, fusions, Winograd F(4x4), "
                         "outputs over residuals) and one thread, alternating")
    args = ap.parse_args(argv)
    for name in args.models.split(","):
        if args.ab:
            print(ab_table(name.strip(), args.rounds, args.seed, args.precision), flush=True)
            continue
        if args.steps:
            print(steps_table(name.strip(), args.rounds, args.seed, args.threads or 2, args.precision), flush=True)
            continue
        r = profile(name.strip(), args.rounds, args.precision, args.seed, args.threads)
        print(report(r, args.top), flush=True)
        if args.convs:
            print(conv_table(r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
