"""ember's int8 execution against OpenVINO's on the same NNCF-quantized IR, in one process.

    python benchmarks/int8.py                                  # resnet50 and mobilenet_v2
    python benchmarks/int8.py --models resnet50 --time 3 --rounds 3
    python benchmarks/int8.py --out benchmarks/results/int8.md
    python benchmarks/int8.py --wc 4096                         # weight-compressed MatMul, batch 1
    taskset -c 1 python benchmarks/int8.py --cpu-time resnet50,bert_like   # 1 thread, CPU time

``--cpu-time`` takes compare.py's networks (its cached NNCF IRs, ``compare.int8_models``) and
measures ember int8, OpenVINO int8 and ember f32 on one thread each in alternating rounds, as
the median ``time.process_time`` per inference: on a loaded machine the CPU time a thread spends
is far steadier than wall time (run it pinned to one core with ``taskset``).

For each network (torchvision's ResNet-50 / MobileNetV2 architectures from tests/models, seeded
weights, exported to ONNX): ember converts the ONNX and saves the float IR; real NNCF quantizes
that IR on OpenVINO (``nncf.quantize``, 10 seeded calibration inputs, default preset) and saves
the int8 IR; both IRs are cached in ``~/.cache/ember/int8``. Then, batch 1, hint LATENCY,
``INFERENCE_PRECISION_HINT=f32`` on both engines (OpenVINO would otherwise run the float parts
in bf16 on a CPU with AVX512_BF16, ember would not):

1. outputs on one seeded input: ember CPU int8 against ember REFERENCE on the int8 IR (the
   FakeQuantize graph in float) and against OpenVINO's int8 output, relative to the logits'
   magnitude; how many convolutions/MatMuls ember runs in int8;
2. latency: ember int8, ember f32 (the float IR), OpenVINO int8 and OpenVINO f32, in rounds
   that give every engine an equal time slice in turn; median per engine and the ratios the
   issue asks for (ember int8 / OpenVINO int8, ember f32 / ember int8);
3. throughput of the int8 IR (hint THROUGHPUT, an AsyncInferQueue of the compiled model's
   OPTIMAL_NUMBER_OF_INFER_REQUESTS), ember and OpenVINO in alternating rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CACHE = Path.home() / ".cache" / "ember" / "int8"


def quantized_ir(name: str, calib: int = 10) -> tuple[Path, Path]:
    """(float IR, NNCF int8 IR) of test network ``name``, made once and cached."""
    import nncf
    import openvino as ov
    from models.torch_models import export

    import ember

    onnx_path = export(name)
    key = hashlib.sha1(f"{onnx_path.name}-{calib}-{nncf.__version__}-{ov.__version__}".encode()).hexdigest()[:10]
    folder = CACHE / f"{name}-{key}"
    fp, q = folder / "float.xml", folder / "int8.xml"
    if q.exists():
        return fp, q
    folder.mkdir(parents=True, exist_ok=True)
    ember.save_model(ember.convert_model(onnx_path), fp, compress_to_fp16=False)
    model = ov.Core().read_model(fp)
    shape = [int(d) for d in model.inputs[0].get_partial_shape().to_shape()]
    rng = np.random.default_rng(0)
    data = [rng.standard_normal(shape).astype(np.float32) for _ in range(calib)]
    qm = nncf.quantize(model, nncf.Dataset(data), subset_size=calib)
    ov.save_model(qm, q, compress_to_fp16=False)
    return fp, q


def _time_rounds(fns: dict[str, Callable[[], Any]], seconds: float, rounds: int) -> dict[str, list[float]]:
    """Per-call latencies of each function, in alternating rounds of ``seconds`` each."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                fn()
                out[k].append(time.perf_counter() - t0)
    return out


def _throughput(module: Any, compiled: Any, x: np.ndarray, seconds: float) -> float:
    """Inferences per second through an AsyncInferQueue of OPTIMAL_NUMBER_OF_INFER_REQUESTS."""
    queue = module.AsyncInferQueue(compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    for _ in range(4):
        queue.start_async({0: x})
    queue.wait_all()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        queue.start_async({0: x})  # blocks while every request is busy
        n += 1
    queue.wait_all()
    return n / (time.perf_counter() - start)


def throughput(name: str, seconds: float, rounds: int) -> dict[str, float]:
    """int8 throughput (hint THROUGHPUT) of ember and OpenVINO on the NNCF IR, alternating rounds."""
    import openvino as ov

    import ember

    _, q = quantized_ir(name)
    cfg = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
    engines = {"ember int8": (ember, ember.Core().compile_model(q, "CPU", cfg)),
               "OpenVINO int8": (ov, ov.Core().compile_model(q, "CPU", cfg))}
    x = np.random.default_rng(7).standard_normal([1, 3, 224, 224]).astype(np.float32)
    out: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(rounds):
        for k, (module, compiled) in engines.items():
            out[k].append(_throughput(module, compiled, x, seconds))
    return {k: statistics.median(v) for k, v in out.items()}


def run(name: str, seconds: float, rounds: int, threads: int | None) -> dict[str, Any]:
    import openvino as ov

    import ember

    fp, q = quantized_ir(name)
    cfg_e: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    cfg_o: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        cfg_e["INFERENCE_NUM_THREADS"] = cfg_o["INFERENCE_NUM_THREADS"] = threads
    core_e, core_o = ember.Core(), ov.Core()
    e_int8 = core_e.compile_model(core_e.read_model(q), "CPU", cfg_e)
    e_f32 = core_e.compile_model(core_e.read_model(fp), "CPU", cfg_e)
    o_int8 = core_o.compile_model(core_o.read_model(q), "CPU", cfg_o)
    o_f32 = core_o.compile_model(core_o.read_model(fp), "CPU", cfg_o)
    x = np.random.default_rng(7).standard_normal([1, 3, 224, 224]).astype(np.float32)
    got = e_int8(x)[0]
    ref = ember.compile_model(core_e.read_model(q), "REFERENCE")(x)[0]
    theirs = o_int8(x)[0]
    mag = float(np.abs(ref).max())
    types = [n.type_name for n in e_int8.get_runtime_model().get_ordered_ops()]
    quantized = sum(t in ("Convolution", "GroupConvolution", "MatMul") for t in types)
    int8 = sum(t in ("Int8Convolution", "Int8MatMul") for t in types)
    reqs = {k: m.create_infer_request() for k, m in
            (("ember int8", e_int8), ("ember f32", e_f32), ("OpenVINO int8", o_int8), ("OpenVINO f32", o_f32))}
    fns = {k: (lambda r=r: r.infer({0: x})) for k, r in reqs.items()}
    lat = {k: statistics.median(v) * 1e3 for k, v in _time_rounds(fns, seconds, rounds).items()}
    del reqs, fns, e_int8, e_f32, o_int8, o_f32
    return {"throughput": throughput(name, seconds, rounds),"name": name, "int8_ops": int8, "float_ops": quantized, "err_ref": float(np.abs(got - ref).max()) / mag,
            "err_ov": float(np.abs(got - theirs).max()) / mag, "ov_vs_ref": float(np.abs(theirs - ref).max()) / mag,
            "top1_same": bool(np.argmax(got) == np.argmax(theirs)), "latency_ms": lat}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| network | int8 ops (f32 left) | max err vs REFERENCE / vs OpenVINO (OpenVINO vs REFERENCE) "
             "| ember int8 ms | ember f32 ms | OpenVINO int8 ms | OpenVINO f32 ms | ember int8 / OV int8 "
             "| ember f32 / ember int8 | int8 inf/s ember / OpenVINO (THROUGHPUT) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['name']} | {r['int8_ops']} ({r['float_ops']}) | {r['err_ref']:.1e} / {r['err_ov']:.1e} "
            f"({r['ov_vs_ref']:.1e}) | {lat['ember int8']:.2f} | {lat['ember f32']:.2f} | {lat['OpenVINO int8']:.2f} "
            f"| {lat['OpenVINO f32']:.2f} | {lat['ember int8'] / lat['OpenVINO int8']:.2f} "
            f"| {lat['ember f32'] / lat['ember int8']:.2f} "
            f"| {r['throughput']['ember int8']:.0f} / {r['throughput']['OpenVINO int8']:.0f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- weight-compressed MatMul
def compressed_irs(size: int) -> dict[str, Path]:
    """IRs of one ``[1, size] x [size, size]`` MatMul (seeded f32 weights): f32, INT8_ASYM (per
    channel) and INT4_ASYM (groups of 128) written by ember.nncf.compress_weights; cached."""
    import ember
    import ember.opset as ops
    from ember import nncf
    from ember.graph.types import Type

    folder = CACHE / f"wc-{size}"
    paths = {k: folder / f"{k}.xml" for k in ("f32", "INT8", "INT4")}
    if all(p.exists() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def model() -> Any:
        x = ops.parameter([1, size], Type.f32, name="x")
        w = ops.constant((rng.standard_normal((size, size)) * 0.02).astype(np.float32))
        return ember.Model([ops.matmul(x, w, False, True)], [x], "matmul")

    made = {"f32": model()}
    made["INT8"] = nncf.compress_weights(made["f32"], mode=nncf.CompressWeightsMode.INT8_ASYM)
    made["INT4"] = nncf.compress_weights(made["f32"], mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=128,
                                         ratio=1.0, all_layers=True)
    for k, m in made.items():
        ember.save_model(m, paths[k], compress_to_fp16=False)
    return paths


def weight_compression(size: int, seconds: float, rounds: int, threads: int | None) -> list[dict[str, Any]]:
    """Batch-1 latency of the MatMul in f32, INT8 and INT4 on ember and OpenVINO (same IRs,
    alternating rounds), the weight bytes each inference reads, and the error against REFERENCE."""
    import openvino as ov

    import ember

    paths = compressed_irs(size)
    x = np.random.default_rng(1).standard_normal([1, size]).astype(np.float32)
    cfg: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    core, ov_core = ember.Core(), ov.Core()
    rows, fns = [], {}
    for kind, path in paths.items():
        e = core.compile_model(str(path), "CPU", cfg)
        o = ov_core.compile_model(str(path), "CPU", cfg)
        # OpenVINO's own choice too: on a CPU with AVX512_BF16/AMX it runs bf16 and quantizes the
        # activations of compressed MatMuls on the fly
        od = ov_core.compile_model(str(path), "CPU", {k: v for k, v in cfg.items() if k != "INFERENCE_PRECISION_HINT"})
        stats = e._executable.program.stats
        got = e(x)[0]
        ref = core.compile_model(str(path), "REFERENCE")(x)[0]
        mag = float(np.abs(ref).max())
        read = stats.get("compressed_weight_bytes") or size * size * 4
        rows.append({"kind": kind, "bytes": read, "ir_bytes": path.with_suffix(".bin").stat().st_size,
                     "exec": next(iter(stats.get("exec_types", {}).values()), "jit f32 GEMM"),
                     "err": float(np.abs(got - ref).max()) / mag,
                     "err_ov": float(np.abs(o(x)[0] - ref).max()) / mag})
        re, ro, rd = e.create_infer_request(), o.create_infer_request(), od.create_infer_request()
        fns[f"ember {kind}"] = lambda r=re: r.infer({0: x})
        fns[f"OpenVINO {kind}"] = lambda r=ro: r.infer({0: x})
        fns[f"OpenVINO default {kind}"] = lambda r=rd: r.infer({0: x})
    times = _time_rounds(fns, seconds, rounds)
    for r in rows:
        for engine in ("ember", "OpenVINO", "OpenVINO default"):
            t = times[f"{engine} {r['kind']}"]
            r[engine] = (statistics.median(t) * 1e3, min(t) * 1e3)
    return rows


def wc_table(rows: list[dict[str, Any]], size: int) -> str:
    f32 = next(r for r in rows if r["kind"] == "f32")
    lines = [f"| {size}x{size} MatMul, batch 1 | ember kernel | weight bytes read / inference | IR weights "
             "| ember ms (median / best) | OpenVINO f32 hint ms (median / best) "
             "| OpenVINO default hint ms (median / best) | ember f32 / this | ember / OpenVINO (f32 hint) "
             "| err vs REFERENCE ember / OpenVINO |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['exec']} | {r['bytes'] / 1e6:.1f} MB | {r['ir_bytes'] / 1e6:.1f} MB "
                     f"| {r['ember'][0]:.3f} / {r['ember'][1]:.3f} | {r['OpenVINO'][0]:.3f} / {r['OpenVINO'][1]:.3f} "
                     f"| {r['OpenVINO default'][0]:.3f} / {r['OpenVINO default'][1]:.3f} "
                     f"| {f32['ember'][0] / r['ember'][0]:.2f} | {r['ember'][0] / r['OpenVINO'][0]:.2f} "
                     f"| {r['err']:.1e} / {r['err_ov']:.1e} |")
    return "\n".join(lines)


def cpu_time(names: list[str], runs: int, rounds: int) -> list[dict[str, Any]]:
    """Median CPU time (ms) per inference of ember int8, OpenVINO int8 and ember f32 on one
    thread, on compare.py's networks and NNCF IRs, in ``rounds`` alternating rounds of ``runs``."""
    import openvino as ov

    import ember

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compare import int8_models, model_spec

    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    out = []
    for name in names:
        spec = model_spec(name)
        feeds = spec.make_inputs(0)
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        q = int8_models(spec)[0]
        reqs = {}
        for label, core, path in (("ember int8", ember.Core(), q), ("OpenVINO int8", ov.Core(), q),
                                  ("ember f32", ember.Core(), spec.path)):
            model = core.read_model(str(path))
            model.reshape(shapes)
            reqs[label] = core.compile_model(model, "CPU", dict(cfg)).create_infer_request()
        times: dict[str, list[float]] = {k: [] for k in reqs}
        for r in reqs.values():
            r.infer(feeds)
        for _ in range(rounds):
            for label, r in reqs.items():
                for _ in range(runs):
                    t0 = time.process_time()
                    r.infer(feeds)
                    times[label].append(time.process_time() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        row = {"name": name, **med}
        print(f"{name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items())
              + f"; ember/OpenVINO int8 {med['ember int8'] / med['OpenVINO int8']:.2f}"
              + f", ember f32/int8 {med['ember f32'] / med['ember int8']:.2f}", flush=True)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet50,mobilenet_v2")
    p.add_argument("--time", type=float, default=2.0, help="seconds per engine per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="INFERENCE_NUM_THREADS for both engines")
    p.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    p.add_argument("--wc", type=int, default=0, metavar="SIZE",
                   help="instead of the networks: a SIZE x SIZE MatMul at batch 1 in f32, INT8 and INT4 "
                        "(compress_weights) on ember and OpenVINO (the issue's figure: 4096)")
    p.add_argument("--cpu-time", default="", metavar="MODELS",
                   help="instead: compare.py's networks (comma-separated) on one thread, median CPU time")
    p.add_argument("--runs", type=int, default=20, help="runs per engine per round of --cpu-time")
    args = p.parse_args(argv)
    if args.cpu_time:
        cpu_time([n.strip() for n in args.cpu_time.split(",")], args.runs, args.rounds)
        return
    if args.wc:
        text = wc_table(weight_compression(args.wc, args.time, args.rounds, args.threads), args.wc)
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")
        return
    results = []
    for name in args.models.split(","):
        results.append(run(name.strip(), args.time, args.rounds, args.threads))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    text = table(results)
    print()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
