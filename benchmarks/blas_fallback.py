"""Tail latency of a CPU plan whose reference kernels call numpy's BLAS, with and without the
BLAS guard (``ember/devices/cpu/runtime/blas.py``: one BLAS thread while such a plan runs).

    python benchmarks/blas_fallback.py                 # 6 rounds x 150 runs per setting
    python benchmarks/blas_fallback.py --rounds 10 --runs 100 --threads 2

The model alternates native f32 MatMuls (ember's pool) with f64 1x1 convolutions, which the CPU
device runs on their numpy reference kernels (OpenBLAS dgemm). Settings alternate round by round so
that machine noise hits both alike; the table gives the median, the 99th percentile, their ratio
and the spread of the round medians.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build(size: int, layers: int):  # noqa: ANN201
    import ember.opset as ops
    from ember.graph.model import Model

    rng = np.random.default_rng(0)
    x = ops.parameter([size, size], np.float32, name="x")
    y = x
    for _ in range(layers):
        y = ops.relu(ops.matmul(y, (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32), False, False))
        # an f64 1x1 convolution (f64 MatMul is native since session 5; f64 convolutions still run
        # their reference kernel, one numpy matmul (OpenBLAS dgemm) of size x size by size x size)
        w64 = (rng.standard_normal((size, size, 1, 1)) / np.sqrt(size))
        img = ops.reshape(ops.convert(y, "f64"), np.array([1, size, size, 1], np.int64), False)
        conv = ops.convolution(ops.transpose(img, np.array([0, 2, 1, 3], np.int64)), w64, [1, 1], [0, 0], [0, 0], [1, 1])
        y = ops.convert(ops.reshape(ops.transpose(conv, np.array([0, 2, 1, 3], np.int64)), np.array([size, size], np.int64),
                                    False), "f32")
    return Model([y], [x], "blas-fallback")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--runs", type=int, default=150, help="inferences per round and setting")
    ap.add_argument("--threads", type=int, default=0, help="INFERENCE_NUM_THREADS (0: ember's default)")
    args = ap.parse_args(argv)
    import ember

    config = {"INFERENCE_NUM_THREADS": args.threads} if args.threads else {}
    compiled = ember.Core().compile_model(build(args.size, args.layers), "CPU", config)
    instance = compiled._executable._instances[()]
    guard = instance._blas_guard
    settings = {"BLAS guard (1 thread)": guard, "no guard (BLAS default)": contextlib.nullcontext()}
    x = np.random.default_rng(1).standard_normal((args.size, args.size)).astype(np.float32)
    for _ in range(20):
        compiled([x])
    times: dict[str, list[list[float]]] = {k: [] for k in settings}
    for _ in range(args.rounds):
        for name, g in settings.items():
            instance._blas_guard = g
            ts = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                compiled([x])
                ts.append((time.perf_counter() - t0) * 1e3)
            times[name].append(ts)
    instance._blas_guard = guard
    print("| setting | median | p99 | p99 / median | round medians (min-max) |")
    print("|---|---|---|---|---|")
    for name, rounds in times.items():
        flat = np.concatenate(rounds)
        med, p99 = float(np.median(flat)), float(np.percentile(flat, 99))
        meds = [float(np.median(r)) for r in rounds]
        print(f"| {name} | {med:.2f} ms | {p99:.2f} ms | {p99 / med:.2f} | {min(meds):.2f}-{max(meds):.2f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
