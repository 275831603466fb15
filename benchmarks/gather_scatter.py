"""A scatter/gather graph network on ember's CPU device, ONNX Runtime and OpenVINO: median latency.

    python benchmarks/gather_scatter.py                      # 2,000 nodes, 10,000 edges, 3 layers
    python benchmarks/gather_scatter.py --rounds 8 --runs 100 --features 128
    python benchmarks/gather_scatter.py --threads 1            # every engine on one thread

The network is a 3-layer message-passing GNN built in PyTorch (seeded weights and graph):
node degrees by ``scatter_add_``; layer 1 gathers messages with ``index_select`` (Gather), layers
2 and 3 with ``torch.gather`` (GatherElements) on an expanded index; every layer sums the
messages into the target nodes with ``scatter_add_`` (ScatterElements, reduction add). It is
exported to ONNX once (TorchScript exporter, opset 17; ``index_add_`` with repeated indices does
not export, so the sums use ``scatter_add_``) and cached in ``~/.cache/ember/gather_scatter``.

Every engine must agree with ONNX Runtime (max |diff| relative to the output's scale < 1e-4)
before it is timed. Engines then take turns round by round (A B C A B C: machine noise hits all
alike); the table gives the median, the 99th percentile, the spread of the round medians
(slowest / fastest round) and ember's ratio to each peer (above 1: ember is slower). ember and
OpenVINO compile with the LATENCY hint (OpenVINO in f32); ONNX Runtime runs with its defaults.
The CPU plan must run no op on a reference kernel: the script says so when one does.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CACHE = Path.home() / ".cache" / "ember" / "gather_scatter"


def export_gnn(nodes: int, edges: int, features: int, layers: int, seed: int) -> Path:
    """The GNN as ONNX (exported once per configuration, cached)."""
    path = CACHE / f"gnn-n{nodes}-e{edges}-f{features}-l{layers}-s{seed}.onnx"
    if path.exists():
        return path
    import torch

    class GNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.message = torch.nn.ModuleList(torch.nn.Linear(features, features) for _ in range(layers))
            self.update = torch.nn.ModuleList(torch.nn.Linear(features, features) for _ in range(layers))

        def forward(self, x: Any, src: Any, dst: Any) -> Any:  # noqa: ANN401
            n, f = x.shape
            ones = torch.ones(dst.shape[0], 1)
            deg = torch.zeros(n, 1).scatter_add_(0, dst.unsqueeze(1), ones).clamp(min=1)
            h = x
            for i, (msg_lin, upd_lin) in enumerate(zip(self.message, self.update)):
                m = msg_lin(h)
                msg = m.index_select(0, src) if i == 0 else torch.gather(m, 0, src.unsqueeze(1).expand(-1, f))
                agg = torch.zeros_like(h).scatter_add_(0, dst.unsqueeze(1).expand(-1, f), msg)
                h = torch.relu(upd_lin(h) + agg / deg)
            return h

    torch.manual_seed(seed)
    model = GNN().eval()
    x, src, dst = (torch.from_numpy(a) for a in make_inputs(nodes, edges, features, seed))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x, src, dst), str(tmp), dynamo=False, opset_version=17,
                          input_names=["x", "src", "dst"], output_names=["h"])
    tmp.replace(path)
    return path


def make_inputs(nodes: int, edges: int, features: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((nodes, features)).astype(np.float32),
            rng.integers(0, nodes, edges).astype(np.int64), rng.integers(0, nodes, edges).astype(np.int64)]


def engines(path: Path, feeds: list[np.ndarray], threads: int = 0) -> dict[str, Callable[[], Any]]:
    import onnxruntime as ort
    import openvino

    import ember

    names = ["x", "src", "dst"]
    pinned = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    compiled = ember.Core().compile_model(ember.convert_model(str(path)), "CPU",
                                          {"PERFORMANCE_HINT": "LATENCY", **pinned})
    fallbacks = compiled._executable.program.stats.get("fallbacks", {})
    print(f"ember CPU plan: {'no reference kernels' if not fallbacks else f'REFERENCE KERNELS: {fallbacks}'}")
    request = compiled.create_infer_request()
    ov_compiled = openvino.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                                    "INFERENCE_PRECISION_HINT": "f32", **pinned})
    ov_request = ov_compiled.create_infer_request()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    by_name = dict(zip(names, feeds))
    return {
        "ember CPU": lambda: request.infer(feeds)[0],
        f"OpenVINO {openvino.__version__.split('-')[0]}": lambda: ov_request.infer(feeds)[0],
        f"ONNX Runtime {ort.__version__}": lambda: session.run(None, by_name)[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--edges", type=int, default=10000)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--runs", type=int, default=60, help="inferences per engine and round")
    ap.add_argument("--threads", type=int, default=0, help="threads for every engine (0: each engine's default)")
    args = ap.parse_args(argv)

    path = export_gnn(args.nodes, args.edges, args.features, args.layers, args.seed)
    feeds = make_inputs(args.nodes, args.edges, args.features, args.seed + 1)
    runs = engines(path, feeds, args.threads)
    names = list(runs)
    reference = np.asarray(runs[names[-1]]())  # ONNX Runtime
    scale = float(np.abs(reference).max()) or 1.0
    for name in names[:-1]:
        diff = float(np.abs(np.asarray(runs[name]()) - reference).max()) / scale
        print(f"{name}: max |diff| to ONNX Runtime / scale = {diff:.2e}")
        if diff > 1e-4:
            print(f"{name} disagrees with ONNX Runtime: not timed")
            return 1
    for fn in runs.values():  # warm-up
        for _ in range(10):
            fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    rounds: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            fn, ts = runs[name], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            times[name] += ts
            rounds[name].append(float(np.median(ts)))
    med = {n: float(np.median(times[n])) * 1e3 for n in names}
    print(f"\nGNN {args.layers} layers, {args.nodes} nodes, {args.edges} edges, {args.features} features; "
          f"{args.rounds} rounds x {args.runs} runs; threads {args.threads or 'default'}; "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'engine':<22} {'median ms':>10} {'p99 ms':>9} {'p99/med':>8} {'round spread':>13} {'ember/this':>11}")
    for n in names:
        p99 = float(np.percentile(times[n], 99)) * 1e3
        spread = max(rounds[n]) / min(rounds[n])
        print(f"{n:<22} {med[n]:>10.3f} {p99:>9.3f} {p99 / med[n]:>8.2f} {spread:>13.2f} "
              f"{med[names[0]] / med[n]:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
