"""Convolutions with cold weights against the same convolutions with hot ones (ember alone).

    python benchmarks/cold_weights.py                        # bf16 and f32, 2 threads
    python benchmarks/cold_weights.py --precision f32 --threads 1
    EMBER_GEMM_PF_IN_KERNEL=0 python benchmarks/cold_weights.py   # the prefetch after each tile

In a network a layer's weights come from L3 or memory (ResNet-50's are 51 MB in bf16), while a
layer timed alone keeps them in cache. "cold" runs as many copies of the layer (each its own
weights) as fill more than the L3 cache, one after the other, so that every call reads its
weights from memory; "hot" runs one copy again and again. Both report the median time of a call
in microseconds. Kernel-level evidence for docs/cpu-performance.md (session 9: the micro-kernel
prefetches the next weight panel); whole networks are measured side by side with OpenVINO by
``compare.py`` and ``layers.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# (h, w, cin, cout, k): ResNet-50's layer3/4 3x3 and 1x1 layers, EfficientNet-Lite0's 7x7 1x1 layers
LAYERS = [(14, 14, 256, 256, 3), (7, 7, 512, 512, 3), (7, 7, 512, 2048, 1), (14, 14, 1024, 256, 1),
          (7, 7, 192, 1152, 1), (7, 7, 1152, 192, 1), (7, 7, 320, 1280, 1)]
COLD_BYTES = 64 << 20  # more than this machine's 32 MB of L3


def measure(layer: tuple[int, int, int, int, int], precision: str, threads: int, calls: int) -> tuple[float, float]:
    """(cold, hot) median microseconds of one call of ``layer``."""
    from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry
    from ember.devices.cpu.kernels.gemm import Epilogue, to_bf16_bits
    from ember.devices.cpu.runtime.memory import aligned_empty
    from ember.devices.cpu.runtime.threadpool import ThreadPool

    h, w, ci, co, k = layer
    pool = ThreadPool(threads)
    rng = np.random.default_rng(0)
    g = ConvGeometry(1, h, w, ci, co, k, k, (1, 1), (1, 1), (k // 2, k // 2), (k // 2, k // 2))
    bf16 = precision == "bf16"
    x = aligned_empty((1, h, w, ci), np.uint16 if bf16 else np.float32)
    xf = rng.standard_normal(x.shape).astype(np.float32)
    x[:] = to_bf16_bits(xf) if bf16 else xf
    wbytes = ci * co * k * k * (2 if bf16 else 4)
    copies = max(2, -(-COLD_BYTES // wbytes))
    kept, bound = [], []
    for _ in range(copies):
        conv = Conv2d(g, rng.standard_normal((co, ci, k, k)).astype(np.float32) * 0.05, Epilogue(0.0, 6.0),
                      num_threads=threads, precision=precision)
        y = aligned_empty(g.output_shape, np.uint16 if bf16 and conv.y_bf16_ok() else np.float32)
        kept.append((conv, y))  # the bound call reads their buffers
        bound.append(conv.bind(x, y))

    def timed(kernels: list) -> float:
        times = []
        for _ in range(max(1, calls // len(kernels))):
            for kern in kernels:
                t = time.perf_counter()
                kern.run(pool)
                times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e6

    for kern in bound:
        kern.run(pool)
    cold = timed(bound)
    for _ in range(10):
        bound[0].run(pool)
    return cold, timed(bound[:1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precision", default="bf16,f32", help="comma-separated: bf16, f32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=600, help="timed calls per layer and variant")
    args = ap.parse_args()
    from ember.devices.cpu.kernels.gemm import PF_IN_KERNEL, bf16_supported

    print(f"prefetch inside the micro-kernel: {'on' if PF_IN_KERNEL else 'off'} (EMBER_GEMM_PF_IN_KERNEL), "
          f"{args.threads} thread(s)")
    print("| layer | precision | cold us | hot us | cold / hot |")
    print("|---|---|---|---|---|")
    for precision in [p.strip() for p in args.precision.split(",") if p.strip()]:
        if precision not in ("bf16", "f32"):
            sys.exit(f"cold_weights.py: unknown precision {precision!r} (bf16, f32)")
        if precision == "bf16" and not bf16_supported():
            print("| - | bf16 | this CPU has no AVX512_BF16 | | |")
            continue
        for layer in LAYERS:
            h, w, ci, co, k = layer
            cold, hot = measure(layer, precision, args.threads, args.calls)
            print(f"| {h}x{w} {ci}->{co} {k}x{k} | {precision} | {cold:.0f} | {hot:.0f} | {cold / hot:.2f} |", flush=True)


if __name__ == "__main__":
    main()
