"""ember's own slowdown under a background load, in a process without the peer engines.

    python benchmarks/load_alone.py --models resnet50 --precisions f32,bf16

``compare.py --load`` measures every engine in one process; the peers' threads (OpenVINO's,
ONNX Runtime's) may still spin after their rounds and take the free core from ember's worker.
This tool compiles ember alone at 2 threads and at 1 thread per precision, and times alternating
rounds quiet and with ``compare.BackgroundLoad()`` (another process spinning on one core):
median latency quiet and loaded, and their ratio. Figures are wall-time medians; on a shared
machine compare the ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "benchmarks", ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import compare  # noqa: E402  (model specs, seeded inputs, the background spinner)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50")
    ap.add_argument("--precisions", default="f32,bf16")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds quiet and loaded")
    ap.add_argument("--runs", type=int, default=20, help="runs per configuration and round")
    args = ap.parse_args(argv)
    import ember

    core = ember.Core()
    rows = ["| model | precision | threads | quiet ms | loaded ms | loaded / quiet |", "|---|---|---|---|---|---|"]
    for name in args.models.split(","):
        spec = compare.model_spec(name)
        feeds = compare.default_inputs(spec.path, 0, spec.shapes)
        configs = {(p, t): core.compile_model(str(spec.path), "CPU", {"INFERENCE_PRECISION_HINT": p,
                                                                    "INFERENCE_NUM_THREADS": t})
                   for p in args.precisions.split(",") for t in (2, 1)}
        for cm in configs.values():
            for _ in range(3):
                cm(feeds)
        times: dict[tuple[str, int, bool], list[float]] = {}
        for _ in range(args.rounds):
            for loaded in (False, True):
                load = compare.BackgroundLoad() if loaded else None
                if load is not None:
                    load.__enter__()
                try:
                    for key, cm in configs.items():
                        for _ in range(args.runs):
                            t0 = time.perf_counter()
                            cm(feeds)
                            times.setdefault((*key, loaded), []).append(time.perf_counter() - t0)
                finally:
                    if load is not None:
                        load.__exit__(None, None, None)
        for p, t in configs:
            q = float(np.median(times[(p, t, False)])) * 1e3
            lo = float(np.median(times[(p, t, True)])) * 1e3
            rows.append(f"| {name} | {p} | {t} | {q:.2f} | {lo:.2f} | {lo / q:.2f} |")
        print("\n".join(rows[-len(configs):]), flush=True)
    print()
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
