"""ember int8 against OpenVINO int8 layer by layer, on the NNCF IR that ``compare.py --precision
int8`` makes (cached), with the depthwise layers on the per-shape kernel and, with ``--ab``, on
the generic one as well (a third engine in the same rounds).

    python benchmarks/int8_depthwise.py --models mobilenet_v2,efficientnet-lite0 --threads 1 --ab

Both engines' per-op counters (``PERF_COUNT``) are joined on the original layer: OpenVINO names a
fused node after one of the layers it took in (``originalLayersNames`` of its runtime model),
ember keeps the convolution's name. Per op, the minimum over the rounds (a preempted round only
makes a counter larger); per engine, the median wall and CPU time (``time.process_time``) of a
whole inference. Layers are grouped by kind: depthwise (kernel, stride), 1x1 (by input channels),
other convolutions (the stem), the rest by op type.
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
from compare import int8_models, model_spec  # noqa: E402 - the sibling benchmark's model table


def _kinds(compiled: Any) -> dict[str, str]:
    """ember's runtime ops by name: depthwise / 1x1 / conv with their shapes, else the op type."""
    out = {}
    for op in compiled.get_runtime_model().get_ops():
        kind = op.get_type_name()
        if kind == "Int8Convolution":
            ws = op.input_values()[1].partial_shape.to_shape()
            xs = op.input_values()[0].partial_shape.to_shape()  # NCHW
            a = op.attrs
            if a["groups"] > 1:
                kind = f"dw{ws[2]}x{ws[3]}/s{a['strides'][0]} {xs[2]}x{xs[3]}x{xs[1]}"
            elif ws[2] == ws[3] == 1:
                kind = f"1x1 {xs[2]}x{xs[3]}x{ws[1]}->{ws[0]}"
            else:
                kind = f"conv{ws[2]}x{ws[3]} {xs[2]}x{xs[3]}x{ws[1]}->{ws[0]}"
        out[op.get_friendly_name()] = kind
    return out


def profile(name: str, rounds: int, threads: int, ab: bool) -> dict[str, Any]:
    import openvino as ov

    import ember
    import ember.devices.cpu.kernels.int8_depthwise as dw

    spec = model_spec(name)
    path = int8_models(spec)[0]
    feeds = spec.make_inputs(0)
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    config: dict[str, Any] = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads

    def compile_with(core: Any) -> Any:
        model = core.read_model(str(path))
        model.reshape(shapes)
        return core.compile_model(model, "CPU", config)

    compiled = {"ember": compile_with(ember.Core()), "OpenVINO": compile_with(ov.Core())}
    if ab:
        keep = dw.supported
        dw.supported = lambda geometry: False  # type: ignore[assignment] - the generic kernel for every layer
        try:
            compiled["ember generic dw"] = compile_with(ember.Core())
        finally:
            dw.supported = keep  # type: ignore[assignment]
    kinds = _kinds(compiled["ember"])
    original = {op.get_friendly_name(): str(op.get_rt_info()["originalLayersNames"].astype(str)).split(",")
                for op in compiled["OpenVINO"].get_runtime_model().get_ops()}
    requests = {k: c.create_infer_request() for k, c in compiled.items()}
    per_op: dict[str, dict[str, list[float]]] = {k: collections.defaultdict(list) for k in requests}
    wall: dict[str, list[float]] = {k: [] for k in requests}
    cpu: dict[str, list[float]] = {k: [] for k in requests}
    for req in requests.values():
        for _ in range(3):
            req.infer(feeds)
    for _ in range(rounds):
        for k, req in requests.items():
            t0, c0 = time.perf_counter(), time.process_time()
            req.infer(feeds)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
            this: collections.Counter = collections.Counter()
            for p in req.get_profiling_info():
                layer = p.node_name
                if k == "OpenVINO":
                    hits = [n for n in original.get(layer, [layer]) if n in kinds]
                    layer = hits[0] if hits else f"{p.node_type} {layer}"
                this[layer] += p.real_time.total_seconds() * 1e6
            for layer, us in this.items():
                per_op[k][layer].append(us)
    best = {k: {layer: min(v) for layer, v in ops.items()} for k, ops in per_op.items()}
    return {"name": spec.name, "threads": threads, "kinds": kinds, "best": best,
            "wall": {k: float(np.median(v)) * 1e3 for k, v in wall.items()},
            "cpu": {k: float(np.median(v)) * 1e3 for k, v in cpu.items()}}


def _group(kind: str) -> str:
    head = kind.split()[0]
    if head.startswith("1x1"):
        k = int(kind.split()[1].split("x")[2].split("-")[0])
        return "1x1, K <= 32" if k <= 32 else "1x1, K > 32"
    return head


def report(r: dict[str, Any], top: int) -> str:
    engines = list(r["best"])
    others = [k for k in engines if k != "OpenVINO"]
    lines = [f"== {r['name']}, {r['threads'] or 'default'} thread(s): median ms per inference, wall / CPU"]
    for k in engines:
        lines.append(f"   {k:18s} {r['wall'][k]:7.2f} / {r['cpu'][k]:6.2f}"
                     + ("" if k == "OpenVINO" else f"   ratio to OpenVINO {r['wall'][k] / r['wall']['OpenVINO']:.2f}"
                        f" / {r['cpu'][k] / r['cpu']['OpenVINO']:.2f}"))
    groups: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    layers = set().union(*(set(v) for v in r["best"].values()))
    for layer in layers:
        g = _group(r["kinds"][layer]) if layer in r["kinds"] else "OpenVINO only: " + layer.split()[0]
        for k in engines:
            groups[g][k] += r["best"][k].get(layer, 0.0)
    head = "".join(f" {k[:18]:>18s}" for k in engines)
    lines.append(f"{'layers (sum of per-op minimum, us)':36s}{head}" + "".join(f" {k[:10] + ' / OV':>16s}" for k in others))
    for g in sorted(groups, key=lambda g: -max(groups[g].values())):
        v = groups[g]
        lines.append(f"{g:36s}" + "".join(f" {v[k]:18.0f}" for k in engines)
                     + "".join(f" {v[k] / v['OpenVINO']:16.2f}" if v["OpenVINO"] else f" {'-':>16s}" for k in others))
    lines.append(f"-- the {top} slowest ember layers (us): " + ", ".join(engines))
    for layer in sorted(r["best"]["ember"], key=lambda n: -r["best"]["ember"][n])[:top]:
        lines.append(f"   {r['kinds'].get(layer, '?'):34s}" + "".join(f" {r['best'][k].get(layer, 0.0):8.0f}" for k in engines)
                     + f"  {layer}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2,efficientnet-lite0", help="comma-separated, as compare.py")
    ap.add_argument("--rounds", type=int, default=40, help="alternating inferences per engine")
    ap.add_argument("--threads", type=int, default=0, help="INFERENCE_NUM_THREADS of every engine (0: default)")
    ap.add_argument("--ab", action="store_true", help="also ember with the generic depthwise kernel")
    ap.add_argument("--top", type=int, default=15, help="slowest ember layers listed")
    args = ap.parse_args(argv)
    for name in args.models.split(","):
        print(report(profile(name.strip(), args.rounds, args.threads, args.ab), args.top), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
