"""GFLOP/s of ember's native CPU kernels next to numpy (OpenBLAS), at 1 and 2 threads.

    python benchmarks/kernel_gflops.py            # every shape
    python benchmarks/kernel_gflops.py --quick    # a few shapes, fewer rounds
    python benchmarks/kernel_gflops.py --isa avx2 --threads 1

GEMM shapes are the matrix products of ResNet-50, MobileNetV2 and a BERT-like encoder
(hidden 384, sequence 128), including the batched attention products of two activations
(12 heads); convolution shapes are their layers (NHWC, batch 1). ember runs
the way a compiled plan does: weights packed and buffers bound once, then one
``parallel_for`` per call. numpy computes ``matmul(A, B, out=C)``; for convolutions it does im2col
(``sliding_window_view``) + matmul, and an einsum over the windows for depthwise layers.
Runs alternate ember / numpy in rounds (the machine is shared and noisy), with a pause
before each timed block so neither side's idle threads still spin, and report medians.
The peak is measured here with a tight FMA loop (per core), and for bf16 with a tight
``vdpbf16ps`` loop (twice the f32 peak in theory). bf16 columns (when the CPU has
AVX512_BF16, or with ``--precision``) run the same weights rounded to bf16; depthwise
convolutions stay f32 and show "-".
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from llvmlite import ir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ember.devices.cpu.kernels.batched_gemm import BatchedGemm  # noqa: E402
from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry  # noqa: E402
from ember.devices.cpu.kernels.gemm import Epilogue, Gemm, bf16_supported, pack_b  # noqa: E402
from ember.devices.cpu.llvm import jit  # noqa: E402
from ember.devices.cpu.llvm.codegen import BF16, F32, I64, Emitter, vec  # noqa: E402
from ember.devices.cpu.llvm.isa import Isa, host_isa  # noqa: E402
from ember.devices.cpu.runtime.memory import aligned_empty  # noqa: E402
from ember.devices.cpu.runtime.threadpool import ThreadPool  # noqa: E402

GEMMS = [  # (label, M, K, N)
    ("resnet50 res2 1x1 64->256", 3136, 64, 256),
    ("resnet50 res3 1x1 512->128", 784, 512, 128),
    ("resnet50 res4 1x1 256->1024", 196, 256, 1024),
    ("resnet50 res5 3x3 as GEMM", 49, 4608, 512),
    ("resnet50 fc", 1, 2048, 1000),
    ("mobilenetv2 expand 24->144", 3136, 24, 144),
    ("mobilenetv2 project 384->64", 196, 384, 64),
    ("mobilenetv2 last 320->1280", 49, 320, 1280),
    ("bert qkv", 128, 384, 1152),
    ("bert ffn up", 128, 384, 1536),
    ("bert ffn down", 128, 1536, 384),
    ("bert attn out", 128, 384, 384),
]

BATCHED = [  # (label, shape A, shape B, transpose A, transpose B): MatMul of two activations
    ("bert attention Q.K^T", (1, 12, 128, 32), (1, 12, 128, 32), False, True),
    ("bert attention P.V", (1, 12, 128, 128), (1, 12, 128, 32), False, False),
]

CONVS = [  # (label, h, w, cin, cout, k, stride, groups)
    ("resnet50 stem 7x7/2", 224, 224, 3, 64, 7, 2, 1),
    ("resnet50 res2 3x3", 56, 56, 64, 64, 3, 1, 1),
    ("resnet50 res3 3x3", 28, 28, 128, 128, 3, 1, 1),
    ("resnet50 res4 3x3", 14, 14, 256, 256, 3, 1, 1),
    ("resnet50 res5 3x3", 7, 7, 512, 512, 3, 1, 1),
    ("resnet50 down 1x1/2", 56, 56, 256, 512, 1, 2, 1),
    ("mobilenetv2 stem 3x3/2", 224, 224, 3, 32, 3, 2, 1),
    ("mobilenetv2 dw 112x32", 112, 112, 32, 32, 3, 1, 32),
    ("mobilenetv2 dw 112x96/2", 112, 112, 96, 96, 3, 2, 96),
    ("mobilenetv2 dw 56x144", 56, 56, 144, 144, 3, 1, 144),
    ("mobilenetv2 dw 14x576", 14, 14, 576, 576, 3, 1, 576),
    ("mobilenetv2 dw 7x960", 7, 7, 960, 960, 3, 1, 960),
]

QUICK = {"resnet50 res2 1x1 64->256", "resnet50 res5 3x3 as GEMM", "bert ffn up", "resnet50 res2 3x3",
         "mobilenetv2 dw 56x144", "bert attention Q.K^T"}


# --------------------------------------------------------------------------- helpers
def openblas_threads(n: int) -> bool:
    """Set OpenBLAS's thread count through its C API; False if not found."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    for path in sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower()}):
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                     "scipy_openblas_set_num_threads", "openblas_set_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return True
    return False


def peak_gflops(isa: Isa, bf16: bool = False) -> float:
    """GFLOP/s of one core: 12 independent FMA (or bf16 dot-product) chains in a loop."""
    lanes = isa.f32_lanes
    vt = vec(F32, lanes)
    bt = vec(BF16, 2 * lanes)

    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        fn = Emitter.function(m, f"{prefix}_peak", F32, [I64])
        e = Emitter(m, fn)
        one = ir.Constant(vt, [1.0000001] * lanes)
        accs = [e.var(vt, ir.Constant(vt, [0.5] * lanes)) for _ in range(12)]
        with e.loop(0, fn.args[0]):
            for a in accs:
                if bf16:
                    ob = e.b.bitcast(one, bt)
                    x = e.call("llvm.x86.avx512bf16.dpbf16ps.512", vt, [e.load(vt, a), ob, ob])
                else:
                    x = e.call(f"llvm.fmuladd.v{lanes}f32", vt, [e.load(vt, a), one, one])
                e.b.store(x, a)
        s = e.load(vt, accs[0])
        for a in accs[1:]:
            s = e.b.fadd(s, e.load(vt, a))
        e.b.ret(e.b.extract_element(s, ir.Constant(ir.IntType(32), 0)))
        return m

    lib = jit.load(f"bench-peak|v2|{isa.level}|{'bf16' if bf16 else 'f32'}", isa, build)
    f = lib.cfunc("peak", ctypes.c_float, ctypes.c_int64)
    n = 20_000_000
    f(n // 10)
    best = min(_timed(lambda: f(n)) for _ in range(5))
    return n * 12 * lanes * 2 * (2 if bf16 else 1) / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(*fns: Callable[[], object], rounds: int = 5, target_s: float = 0.02,
              gap_s: float = 0.12) -> list[float]:
    """Median seconds per call of each function, timed in alternating rounds (A B C A B C ...).

    Each timed block starts after ``gap_s`` of sleep, so the other side's thread pool has
    gone idle (OpenBLAS workers busy-wait about 2**28 cycles after a call; ember's 100 us)."""
    for fn in fns:
        fn()
    per = min(_timed(fn) for fn in fns)
    reps = max(1, min(200, int(target_s / max(per, 1e-7))))
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, times):
            time.sleep(gap_s)
            fn()
            out.append(_timed(lambda fn=fn: [fn() for _ in range(reps)]) / reps)
    return [statistics.median(t) for t in times]


def numpy_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """im2col + matmul (or einsum for depthwise) in numpy, NHWC in and out."""
    n, h, wd, c = x.shape
    oc, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    if groups == c == oc:
        return np.einsum("nhwckl,ckl->nhwc", win, w[:, 0], optimize=True)
    cols = win.reshape(-1, c * k * k)
    return (cols @ w.reshape(oc, -1).T).reshape(n, win.shape[1], win.shape[2], oc)


# --------------------------------------------------------------------------- runs
def _check_bf16(got: np.ndarray, want: np.ndarray, depth: int) -> None:
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * np.sqrt(depth))


def bench_gemm(label: str, m: int, k: int, n: int, threads: int, pool: ThreadPool, isa: Isa, rounds: int,
               precisions: list[str]) -> tuple[float, dict[str, float], float]:
    rng = np.random.default_rng(0)
    a = aligned_empty((m, k))
    a[...] = rng.standard_normal((m, k))
    bmat = rng.standard_normal((k, n)).astype(np.float32)
    want = a @ bmat
    runs = []
    for prec in precisions:
        c = aligned_empty((m, n))
        bound = Gemm(pack_b(bmat, isa, precision=prec), m, Epilogue(), num_threads=threads).bind(a, c)
        bound.run(pool)
        if prec == "f32":
            np.testing.assert_allclose(c, want, rtol=1e-3, atol=1e-3 * np.sqrt(k))
        else:
            _check_bf16(c, want, k)
        runs.append(lambda bound=bound, c=c: bound.run(pool))  # c: bound kernels do not keep buffers alive
    c_np = aligned_empty((m, n))  # numpy also writes into a preallocated output
    *te, tn = alternate(*runs, lambda: np.matmul(a, bmat, out=c_np), rounds=rounds)
    return 2.0 * m * k * n, dict(zip(precisions, te)), tn


def bench_batched(label: str, sa: tuple[int, ...], sb: tuple[int, ...], ta: bool, tb: bool, threads: int,
                  pool: ThreadPool, isa: Isa, rounds: int,
                  precisions: list[str]) -> tuple[float, dict[str, float], float]:
    rng = np.random.default_rng(0)
    a, b = aligned_empty(sa), aligned_empty(sb)
    a[...] = rng.standard_normal(sa)
    b[...] = rng.standard_normal(sb)
    an = np.swapaxes(a, -1, -2) if ta else a
    bn = np.swapaxes(b, -1, -2) if tb else b
    want = np.matmul(an, bn)
    runs = []
    for prec in precisions:
        op = BatchedGemm(sa, sb, ta, tb, threads, isa=isa, precision=prec)
        c = aligned_empty(op.output_shape)
        bound = op.bind(a, b, c)
        bound.run(pool)
        if prec == "f32":
            np.testing.assert_allclose(c, want, rtol=1e-3, atol=1e-3 * np.sqrt(op.shapes.k))
        else:
            _check_bf16(c, want, op.shapes.k)
        runs.append(lambda bound=bound, c=c: bound.run(pool))
    c_np = aligned_empty(op.output_shape)
    *te, tn = alternate(*runs, lambda: np.matmul(an, bn, out=c_np), rounds=rounds)
    return float(op.flops), dict(zip(precisions, te)), tn


def bench_conv(label: str, h: int, w: int, cin: int, cout: int, k: int, stride: int, groups: int,
               threads: int, pool: ThreadPool, isa: Isa, rounds: int,
               precisions: list[str]) -> tuple[float, dict[str, float], float]:
    rng = np.random.default_rng(0)
    pad = k // 2
    geo = ConvGeometry(1, h, w, cin, cout, k, k, (stride, stride), (1, 1), (pad, pad), (pad, pad), groups)
    x = aligned_empty((1, h, w, cin))
    x[...] = rng.standard_normal(x.shape)
    wt = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    want = numpy_conv(x, wt, stride, pad, groups)
    runs, used = [], []
    for prec in precisions:
        conv = Conv2d(geo, wt, num_threads=threads, isa=isa, precision=prec)
        if conv.precision.value != prec:  # depthwise stays f32
            continue
        y = aligned_empty(geo.output_shape)
        bound = conv.bind(x, y)
        bound.run(pool)
        if prec == "f32":
            np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-3 * np.sqrt(cin * k * k))
        else:
            _check_bf16(y, want, cin * k * k)
        runs.append(lambda bound=bound, y=y: bound.run(pool))
        used.append(prec)
    *te, tn = alternate(*runs, lambda: numpy_conv(x, wt, stride, pad, groups), rounds=rounds)
    return float(geo.flops), dict(zip(used, te)), tn


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few shapes, fewer rounds")
    ap.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    ap.add_argument("--isa", default=None, help="avx512, avx2 or generic (default: best)")
    ap.add_argument("--precision", default=None, help="f32, bf16 or f32,bf16 (default: both if the CPU has bf16)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--only", default=None, help="run shapes whose label contains this text")
    args = ap.parse_args(argv)
    isa = host_isa(args.isa)
    precisions = (args.precision or ("f32,bf16" if bf16_supported(isa) else "f32")).split(",")
    threads = [int(t) for t in args.threads.split(",")]
    rounds = args.rounds or (3 if args.quick else 5)
    pool = ThreadPool(max(threads))
    has_blas_ctl = openblas_threads(1)
    peak = {"f32": peak_gflops(isa)}
    if "bf16" in precisions:
        peak["bf16"] = peak_gflops(isa, bf16=True)
    print(f"ember CPU kernels, ISA {isa.level} ({isa.cpu}); measured peak per core "
          + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peak.items())
          + f"; numpy {np.__version__}{'' if has_blas_ctl else ' (OpenBLAS thread count not settable)'}")
    print(f"kernel cache: {jit.get_jit().cache_dir}; medians of {rounds} alternating rounds\n")
    head = f"{'shape':30s} {'MxKxN / HxWxC->OC':>20s} " + " ".join(
        "".join(f"{f'{p} {t}T':>13s}" for p in precisions) + f"{f'numpy {t}T':>10s} {'x':>5s}" for t in threads)
    print(head + "\n" + "-" * len(head))

    def cells(flops: float, times: dict[str, float], tn: float, t: int) -> str:
        out = ""
        for p in precisions:
            if p in times:
                g = flops / times[p] / 1e9
                out += f"{g:8.1f}{100 * g / (peak[p] * t):4.0f}%"
            else:
                out += f"{'-':>13s}"
        best = min(times.values())
        return out + f"{flops / tn / 1e9:10.1f} {tn / best:5.2f}"

    def skip(label: str) -> bool:
        return (args.quick and label not in QUICK) or (args.only is not None and args.only not in label)

    def row(label: str, dims: str, run: Callable[[int], tuple[float, dict[str, float], float]]) -> None:
        if skip(label):
            return
        out = []
        for t in threads:
            openblas_threads(t)
            out.append(cells(*run(t), t))
        print(f"{label:30s} {dims:>20s} " + " ".join(out), flush=True)

    for label, m, k, n in GEMMS:
        row(label, f"{m}x{k}x{n}", lambda t: bench_gemm(label, m, k, n, t, pool, isa, rounds, precisions))
    for label, sa, sb, ta, tb in BATCHED:
        dims = f"{sa[-2]}x{sa[-1]}x{sb[-2] if tb else sb[-1]} x{sa[-3]}"
        row(label, dims, lambda t: bench_batched(label, sa, sb, ta, tb, t, pool, isa, rounds, precisions))
    for label, h, w, cin, cout, k, s, g in CONVS:
        row(label, f"{h}x{w}x{cin}->{cout}",
            lambda t: bench_conv(label, h, w, cin, cout, k, s, g, t, pool, isa, rounds, precisions))
    print("\nGFLOP/s and percent of the measured per-core peak of that precision times threads; "
          "x = numpy time / best ember time")
    pool.close()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
