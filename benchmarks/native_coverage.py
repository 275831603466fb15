"""Which op types, element types and ranks the CPU device lowers natively (issue 13).

    python benchmarks/native_coverage.py            # every case, one line each
    python benchmarks/native_coverage.py --missing  # only the cases that fall back
    taskset -c 1 python benchmarks/native_coverage.py --time f64-erf,f16-gelu   # CPU time ratios

``--time NAMES`` times the named timing cases (``TIMED``, larger tensors) on one CPU thread:
the CPU device's plan against the same op's numpy reference kernel (what a fallback ran), as
process CPU time per run in alternating rounds, and prints the ratio.

Each case is a one-op model (parameters in, so nothing folds) compiled for CPU; a case is
``native`` when no op of its plan runs on a numpy reference kernel
(``program.stats["fallbacks"]`` is empty), else the fallback op types are listed. Nothing is
timed: this is the map of what still runs on reference kernels.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

import ember
import ember.opset as ops
from ember.graph.model import Model
from ember.graph.types import Type

Build = Callable[[list[Any]], Any]
#: (label, input shapes and dtypes, builder over the parameters)
Case = tuple[str, list[tuple[tuple[int, ...], Any]], Build]

F = np.float32
UNARY_FLOAT = ("exp", "log", "tanh", "sigmoid", "erf", "sqrt", "absolute", "negative", "floor", "sin", "softplus",
               "gelu", "relu")
BINARY = ("add", "subtract", "multiply", "divide", "maximum", "power", "less")
REDUCE = ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_l2")


def _shape(rank: int) -> tuple[int, ...]:
    return tuple([2, 3, 4, 5, 3, 2, 2, 2][:rank])


def _bshape(rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes of ``rank`` whose broadcast alternates (does not collapse below ``rank`` dims)."""
    full = _shape(rank)
    a = tuple(d if i % 2 == 0 else 1 for i, d in enumerate(full))
    b = tuple(d if i % 2 == 1 else 1 for i, d in enumerate(full))
    return a, b


def cases() -> list[Case]:
    out: list[Case] = []
    for dt in (np.float32, np.float64, np.float16, np.int32, np.int64):
        for name in UNARY_FLOAT:
            if dt in (np.int32, np.int64) and name not in ("absolute", "negative", "relu"):
                continue
            out.append((f"{name} {np.dtype(dt).name} r4", [((2, 3, 4, 5), dt)],
                        lambda p, n=name: getattr(ops, n)(p[0])))
        for name in BINARY:
            out.append((f"{name} {np.dtype(dt).name} r4", [((2, 3, 4, 5), dt), ((1, 3, 1, 5), dt)],
                        lambda p, n=name: getattr(ops, n)(p[0], p[1])))
    for dt in (np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.int8):
        for name in REDUCE:
            if name == "reduce_l2" and np.dtype(dt).kind != "f":
                continue
            out.append((f"{name} {np.dtype(dt).name} axis 1", [((4, 6, 5), dt)],
                        lambda p, n=name: getattr(ops, n)(p[0], np.array([1], np.int64), False)))
    out.append(("reduce_logical_or bool", [((4, 6, 5), np.bool_)],
                lambda p: ops.reduce_logical_or(p[0], np.array([1], np.int64), False)))
    for rank in range(5, 9):
        a, b = _bshape(rank)
        out.append((f"add f32 alternating broadcast r{rank}", [(a, F), (b, F)], lambda p: ops.add(p[0], p[1])))
        out.append((f"add i64 alternating broadcast r{rank}", [(a, np.int64), (b, np.int64)],
                    lambda p: ops.add(p[0], p[1])))
        full = _shape(rank)
        out.append((f"broadcast f32 to r{rank}", [(a, F)],
                    lambda p, s=full: ops.broadcast(p[0], np.array(s, np.int64))))
        out.append((f"tile f32 r{rank}", [(full, F)],
                    lambda p, r=rank: ops.tile(p[0], np.array([2, 1] * (r // 2) + [1] * (r % 2), np.int64))))
        out.append((f"transpose f32 r{rank}", [(full, F)],
                    lambda p, r=rank: ops.transpose(p[0], np.array(list(range(r))[::-1], np.int64))))
    for dt in (np.float16, np.uint8, np.int8, np.bool_):
        out.append((f"broadcast {np.dtype(dt).name} r4", [((1, 3, 1, 5), dt)],
                    lambda p: ops.broadcast(p[0], np.array([2, 3, 4, 5], np.int64))))
        out.append((f"tile {np.dtype(dt).name} r3", [((2, 3, 5), dt)],
                    lambda p: ops.tile(p[0], np.array([1, 2, 3], np.int64))))
    out.append(("topk f32 constant k", [((4, 50), F)], lambda p: ops.topk(p[0], np.int64(5), 1, "max", "value").output(0)))
    out.append(("topk f32 runtime k", [((4, 50), F), ((), np.int64)],
                lambda p: ops.topk(p[0], p[1], 1, "max", "value").output(0)))
    w = np.ones((4, 3, 3, 3), F)
    out.append(("conv negative pads", [((1, 3, 10, 10), F)],
                lambda p: ops.convolution(p[0], w, [1, 1], [-1, 0], [0, -1], [1, 1])))
    out.append(("conv runtime weights", [((1, 3, 10, 10), F), ((4, 3, 3, 3), F)],
                lambda p: ops.convolution(p[0], p[1], [1, 1], [1, 1], [1, 1], [1, 1])))
    out.append(("group conv runtime weights", [((1, 4, 10, 10), F), ((2, 2, 2, 3, 3), F)],
                lambda p: ops.group_convolution(p[0], p[1], [1, 1], [1, 1], [1, 1], [1, 1])))
    out.append(("matmul runtime weights 2-D", [((8, 16), F), ((16, 12), F)],
                lambda p: ops.matmul(p[0], p[1], False, False)))
    out.append(("matmul runtime 3-D batched", [((2, 8, 16), F), ((2, 16, 12), F)],
                lambda p: ops.matmul(p[0], p[1], False, False)))
    out.append(("maxpool 3-D with indices", [((1, 2, 6, 6, 6), F)],
                lambda p: ops.max_pool(p[0], [2, 2, 2], [1, 1, 1], [0, 0, 0], [0, 0, 0], [2, 2, 2]).output(1)))
    out.append(("maxpool 2-D with indices", [((1, 2, 6, 6), F)],
                lambda p: ops.max_pool(p[0], [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]).output(1)))
    out.append(("lrn one axis", [((1, 8, 5, 5), F)], lambda p: ops.lrn(p[0], np.array([1], np.int64), 1e-4, 0.75, 1.0, 3)))
    out.append(("lrn axes (2, 3)", [((1, 8, 5, 5), F)],
                lambda p: ops.lrn(p[0], np.array([2, 3], np.int64), 1e-4, 0.75, 1.0, 3)))
    out.append(("lrn axes (1, 2, 3)", [((1, 8, 5, 5), F)],
                lambda p: ops.lrn(p[0], np.array([1, 2, 3], np.int64), 1e-4, 0.75, 1.0, 3)))
    for dt in (np.float32, np.int64, np.uint8, np.float16):
        out.append((f"slice {np.dtype(dt).name} r3 step 2", [((4, 6, 8), dt)],
                    lambda p: ops.slice(p[0], np.array([1, 0], np.int64), np.array([4, 8], np.int64),
                                        np.array([1, 2], np.int64), np.array([0, 2], np.int64))))
        out.append((f"split {np.dtype(dt).name} r3 axis 2", [((4, 6, 8), dt)],
                    lambda p: ops.split(p[0], np.int64(2), 2).output(1)))
        out.append((f"transpose {np.dtype(dt).name} r3", [((4, 6, 8), dt)],
                    lambda p: ops.transpose(p[0], np.array([2, 0, 1], np.int64))))
        out.append((f"concat {np.dtype(dt).name} r3", [((4, 6, 8), dt), ((4, 2, 8), dt)],
                    lambda p: ops.concat([p[0], p[1]], 1)))
    out += _other_types()
    return out


def _other_types() -> list[Case]:
    """The ops with f32-only kernels, and copies, on the other element types."""
    out: list[Case] = []
    kinds = {"f64": np.float64, "f16": np.float16, "bf16": Type.bf16.dtype, "i64": np.int64, "u8": np.uint8}
    for name, dt in kinds.items():
        floating = np.dtype(dt).kind in "fV"
        out.append((f"pad {name}", [((5, 6), dt)], lambda p: ops.pad(p[0], np.array([1, 0], np.int64),
                                                                   np.array([0, 2], np.int64), "constant")))
        out.append((f"cumsum {name}", [((5, 6), dt)], lambda p: ops.cumsum(p[0], np.int64(1))))
        out.append((f"roll {name}", [((5, 6), dt)], lambda p: ops.roll(p[0], np.array([2], np.int64),
                                                                     np.array([1], np.int64))))
        out.append((f"depth_to_space {name}", [((1, 8, 3, 3), dt)],
                    lambda p: ops.depth_to_space(p[0], "blocks_first", 2)))
        out.append((f"gather_elements {name}", [((5, 6), dt)],
                    lambda p: ops.gather_elements(p[0], np.zeros((5, 3), np.int64), 1)))
        if not floating:
            continue
        out.append((f"softmax {name}", [((3, 17), dt)], lambda p: ops.softmax(p[0], 1)))
        out.append((f"mvn {name}", [((3, 17), dt)],
                    lambda p: ops.mvn(p[0], np.array([1], np.int64), True, 1e-5, "inside_sqrt")))
        out.append((f"matmul runtime {name}", [((3, 17), dt), ((17, 5), dt)],
                    lambda p: ops.matmul(p[0], p[1], False, False)))
        out.append((f"interpolate {name}", [((1, 2, 5, 5), dt)],
                    lambda p: ops.interpolate(p[0], np.array([1, 1, 2, 2], np.float32), "linear", "scales")))
        out.append((f"avgpool {name}", [((1, 2, 6, 6), dt)],
                    lambda p: ops.avg_pool(p[0], [2, 2], [0, 0], [0, 0], [2, 2], True)))
        out.append((f"maxpool {name}", [((1, 2, 7, 7), dt)],
                    lambda p: ops.max_pool(p[0], [2, 2], [1, 1], [1, 1], [0, 0], [3, 3]).output(0)))
        out.append((f"pad 5-D {name}", [((1, 2, 3, 4, 5), dt)], lambda p: ops.pad(
            p[0], np.array([0, 0, 1, 1, 1], np.int64), np.array([0, 0, 1, 1, 1], np.int64), "reflect")))
        out.append((f"topk {name}", [((3, 17), dt)],
                    lambda p: ops.topk(p[0], np.int64(3), 1, "max", "value").output(0)))
    return out


#: timing cases: (input shapes and dtypes, builder)
TIMED: dict[str, tuple[list[tuple[tuple[int, ...], Any]], Build]] = {
    "f64-exp": ([((256, 1024), np.float64)], lambda p: ops.exp(p[0])),
    "f64-erf": ([((256, 1024), np.float64)], lambda p: ops.erf(p[0])),
    "f64-tanh": ([((256, 1024), np.float64)], lambda p: ops.tanh(p[0])),
    "f16-gelu": ([((256, 1024), np.float16)], lambda p: ops.gelu(p[0])),
    "f16-add-mul": ([((256, 1024), np.float16), ((1024,), np.float16)], lambda p: ops.multiply(ops.add(p[0], p[1]), p[1])),
    "bf16-sigmoid": ([((256, 1024), Type.bf16.dtype)], lambda p: ops.sigmoid(p[0])),
    "f64-reduce-sum-rows": ([((1024, 256), np.float64)], lambda p: ops.reduce_sum(p[0], np.array([1], np.int64))),
    "u8-reduce-max": ([((1024, 256), np.uint8)], lambda p: ops.reduce_max(p[0], np.array([0], np.int64))),
    "f16-reduce-mean": ([((1024, 256), np.float16)], lambda p: ops.reduce_mean(p[0], np.array([1], np.int64))),
    "add-r6-alternating": ([(_bshape(6)[0], F), (_bshape(6)[1], F)], lambda p: ops.add(p[0], p[1])),
    "broadcast-u8": ([((1, 3, 1, 512), np.uint8)], lambda p: ops.broadcast(p[0], np.array([8, 3, 64, 512], np.int64))),
    "conv-runtime-weights": ([((1, 16, 56, 56), F), ((32, 16, 3, 3), F)],
                             lambda p: ops.convolution(p[0], p[1], [1, 1], [1, 1], [1, 1], [1, 1])),
    "conv-negative-pads": ([((1, 16, 56, 56), F)], lambda p: ops.convolution(
        p[0], np.full((32, 16, 3, 3), 0.01, np.float32), [1, 1], [-1, -1], [0, 0], [1, 1])),
    "topk-runtime-k": ([((64, 1000), F), ((), np.int64)], lambda p: ops.topk(p[0], p[1], 1, "max", "value").output(0)),
    "maxpool3d-indices": ([((1, 8, 16, 32, 32), F)], lambda p: ops.max_pool(
        p[0], [2, 2, 2], [1, 1, 1], [0, 0, 0], [0, 0, 0], [2, 2, 2]).output(1)),
    "lrn-axes-2-3": ([((1, 32, 56, 56), F)], lambda p: ops.lrn(p[0], np.array([2, 3], np.int64), 1e-4, 0.75, 1.0, 5)),
    "f64-softmax": ([((256, 1000), np.float64)], lambda p: ops.softmax(p[0], 1)),
    "f64-mvn": ([((256, 1024), np.float64)], lambda p: ops.mvn(p[0], np.array([1], np.int64), True, 1e-5, "inside_sqrt")),
    "f64-matmul": ([((256, 256), np.float64), ((256, 256), np.float64)], lambda p: ops.matmul(p[0], p[1], False, False)),
    "f64-avgpool": ([((1, 32, 56, 56), np.float64)], lambda p: ops.avg_pool(p[0], [2, 2], [1, 1], [1, 1], [3, 3], True)),
    "f64-interpolate": ([((1, 16, 56, 56), np.float64)], lambda p: ops.interpolate(
        p[0], np.array([1, 1, 2, 2], np.float32), "linear", "scales")),
    "f64-topk": ([((64, 1000), np.float64)], lambda p: ops.topk(p[0], np.int64(10), 1, "max", "value").output(0)),
    "f64-cumsum": ([((256, 1024), np.float64)], lambda p: ops.cumsum(p[0], np.int64(1))),
    "u8-pad-reflect": ([((1, 3, 224, 224), np.uint8)], lambda p: ops.pad(
        p[0], np.array([0, 0, 3, 3], np.int64), np.array([0, 0, 3, 3], np.int64), "reflect")),
    "i64-depth-to-space": ([((1, 64, 56, 56), np.int64)], lambda p: ops.depth_to_space(p[0], "blocks_first", 2)),
}


def time_case(name: str, rounds: int = 5, runs: int = 20) -> tuple[float, float]:
    """(CPU plan, reference kernel) median process CPU time per run, in ms."""
    import time

    inputs, build = TIMED[name]
    params = [ops.parameter(list(s), np.dtype(d), name=f"x{i}") for i, (s, d) in enumerate(inputs)]
    model = Model([build(params)], params, name)
    core = ember.Core()
    cpu = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1})
    assert not cpu._executable.program.stats["fallbacks"], cpu._executable.program.stats["fallbacks"]
    ref = core.compile_model(model, "REFERENCE")
    feeds = [_feed(s, d) if s else np.array(10, d) for s, d in inputs]
    got: dict[str, list[float]] = {"cpu": [], "ref": []}
    for _ in range(rounds):
        for key, cm in (("cpu", cpu), ("ref", ref)):
            cm(feeds)
            t0 = time.process_time()
            for _ in range(runs):
                cm(feeds)
            got[key].append((time.process_time() - t0) / runs * 1e3)
    return float(np.median(got["cpu"])), float(np.median(got["ref"]))


def _feed(shape: tuple[int, ...], dt: Any) -> np.ndarray:
    rng = np.random.default_rng(0)
    if np.dtype(dt) == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.dtype(dt).kind in "iu":
        return rng.integers(1, 5, shape).astype(dt)
    return (rng.random(shape) + 0.5).astype(dt)


def check(case: Case) -> tuple[bool, str]:
    """(native, what fell back or why it failed) of one case."""
    label, inputs, build = case
    params = [ops.parameter(list(s), np.dtype(d), name=f"x{i}") for i, (s, d) in enumerate(inputs)]
    try:
        out = build(params)
        model = Model([out], params, label)
        cm = ember.Core().compile_model(model, "CPU")
        fallbacks = dict(cm._executable.program.stats["fallbacks"])
    except Exception as exc:  # noqa: BLE001  (a case ember cannot build is a finding too)
        return False, f"error: {type(exc).__name__}: {exc}"[:100]
    if fallbacks:
        return False, ", ".join(f"{k} x{v}" for k, v in sorted(fallbacks.items()))
    return True, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--missing", action="store_true", help="only list the cases that fall back")
    ap.add_argument("--time", default="", help=f"comma-separated timing cases, or 'all': {', '.join(TIMED)}")
    args = ap.parse_args(argv)
    logging.getLogger("ember").setLevel(logging.ERROR)
    if args.time:
        names = list(TIMED) if args.time == "all" else args.time.split(",")
        print(f"{'case':<22} {'CPU plan':>10} {'reference':>10} {'ratio':>7}")
        for name in names:
            cpu, ref = time_case(name)
            print(f"{name:<22} {cpu:>8.3f}ms {ref:>8.3f}ms {ref / cpu:>6.1f}x")
        return 0
    rows = [(c[0], *check(c)) for c in cases()]
    width = max(len(r[0]) for r in rows)
    for label, native, why in rows:
        if args.missing and native:
            continue
        print(f"{label:<{width}}  {'native' if native else 'REFERENCE'}  {why}")
    n = sum(r[1] for r in rows)
    print(f"\n{n} of {len(rows)} cases native")
    return 0


if __name__ == "__main__":
    sys.exit(main())
