"""One compiled model, many input shapes: ember against OpenVINO on a dynamic-shape model.

    python benchmarks/dynamic_shapes.py                        # MiniLM, 200 sentences, both engines
    python benchmarks/dynamic_shapes.py --models minilm,ppocr-det --calls 200 --rounds 3
    python benchmarks/dynamic_shapes.py --engines ember --profile   # where ember's new-shape time goes
    python benchmarks/dynamic_shapes.py --baseline /tmp/old-checkout  # before/after, in alternating rounds
    python benchmarks/dynamic_shapes.py --engines ember,ember-per-shape,openvino  # shape-generic plans A/B

Each engine runs in a process of its own (so that its peak resident memory is its own): it
reads the zoo model's IR (dynamic dimensions kept: MiniLM ``[batch, seq]``, the PP-OCRv4
detector ``[batch, 3, H, W]``; ``minilm-int8``: MiniLM quantized by NNCF, the same IR for both
engines), compiles it once (LATENCY hint, f32), then runs ``--calls``
seeded inputs of changing shape (MiniLM: batch 1, sentence lengths uniform in 5..128 tokens;
the detector: images of one of ``DETECTOR_SIZES``, sides multiples of 32 from 320 to 736). It reports the
total time of all calls, the first call at each new shape against the warm calls (a shape seen
before), and the peak resident memory above the process's imports. Outputs of the first calls
are compared between the engines (relative to the output's magnitude) before any figure is
printed: a benchmark of wrong results is worthless.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# EMBER_BENCH_ROOT: run another checkout's ember (``--baseline``), with this script
ROOT = Path(os.environ.get("EMBER_BENCH_ROOT") or Path(__file__).resolve().parents[1])
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS = {"minilm": "all-minilm-l6-v2", "ppocr-det": "ppocr-det", "minilm-int8": "all-minilm-l6-v2"}
#: where ``minilm-int8``'s IR is kept: the zoo's MiniLM (dynamic dimensions kept) quantized by NNCF
#: (TRANSFORMER preset) on INT8_CALIBRATION sentences of random lengths
INT8_CACHE = Path.home() / ".cache" / "ember" / "int8" / "dynamic"
INT8_CALIBRATION = 10
ENGINES = ("ember", "openvino")
#: ember with shape-generic plans off (``EMBER_CPU_GENERIC_PLANS=0``): every new shape lowered, the A/B peer
PER_SHAPE = "ember-per-shape"
#: image sizes the detector is fed (height, width: multiples of 32, as PP-OCR resizes to)
DETECTOR_SIZES = ((320, 320), (480, 640), (640, 480), (352, 608), (544, 544), (416, 736), (736, 416), (640, 640))
CHECKED_CALLS = 4  # outputs of the first calls are compared between engines
TOLERANCE = 1e-3


@dataclass
class Run:
    """What one engine measured on one model."""

    engine: str
    model: str
    version: str = ""
    compile_s: float = 0.0
    calls: int = 0
    new_shapes: int = 0
    total_s: float = 0.0
    first_ms: list[float] = field(default_factory=list)  # first call at each new shape
    warm_ms: list[float] = field(default_factory=list)   # calls at a shape seen before
    peak_mb: float = 0.0
    cpu_total_s: float = 0.0  # process CPU time of all calls (every thread): steadier than wall time on a busy machine
    cpu_first_ms: list[float] = field(default_factory=list)
    cpu_warm_ms: list[float] = field(default_factory=list)
    threads: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def first_median(self) -> float:
        return statistics.median(self.first_ms) if self.first_ms else float("nan")

    @property
    def warm_median(self) -> float:
        return statistics.median(self.warm_ms) if self.warm_ms else float("nan")

    @property
    def cpu_ratio(self) -> float:
        """CPU time of a first call at a new shape over a warm call's (medians)."""
        if not self.cpu_first_ms or not self.cpu_warm_ms:
            return float("nan")
        return statistics.median(self.cpu_first_ms) / max(statistics.median(self.cpu_warm_ms), 1e-9)


def model_xml(model: str) -> str:
    """The IR ``model`` runs: the zoo's, or for ``minilm-int8`` the zoo's MiniLM quantized by
    NNCF once (cached in :data:`INT8_CACHE`, keyed by the zoo file and the tools' versions; the
    pair is written aside and moved in, the .xml last)."""
    from ember.zoo import fetch

    xml = fetch(MODELS[model]).xml
    if model != "minilm-int8":
        return str(xml)
    import hashlib

    try:
        import nncf
        import openvino
    except ImportError as e:
        raise SystemExit(f"dynamic_shapes.py: --models minilm-int8 quantizes with NNCF and OpenVINO "
                         f"(pip install -e '.[test]'): {e}") from None

    h = hashlib.sha1(f"{INT8_CALIBRATION}-{nncf.__version__}-{openvino.__version__}".encode())
    h.update(Path(xml).read_bytes())
    h.update(Path(xml).with_suffix(".bin").read_bytes())
    out = INT8_CACHE / h.hexdigest()[:16] / "int8.xml"
    if out.exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model_ = openvino.Core().read_model(str(xml))
    names = [p.get_any_name() for p in model_.inputs]
    rng = np.random.default_rng(1)
    data = [dict(zip(names, inputs_for("minilm", [[1, int(n)]] * 3, i)))
            for i, n in enumerate(rng.integers(5, 129, INT8_CALIBRATION))]
    quantized = nncf.quantize(model_, nncf.Dataset(data), subset_size=INT8_CALIBRATION,
                              model_type=nncf.ModelType.TRANSFORMER)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        openvino.save_model(quantized, Path(tmp) / "int8.xml", compress_to_fp16=False)
        for suffix in (".bin", ".xml"):
            (Path(tmp) / "int8.xml").with_suffix(suffix).replace(out.with_suffix(suffix))
    return str(out)


def shapes_for(model: str, calls: int, seed: int) -> list[list[list[int]]]:
    """The input shapes of each call (one list per model input)."""
    rng = np.random.default_rng(seed)
    if model.startswith("minilm"):
        return [[[1, int(n)]] * 3 for n in rng.integers(5, 129, calls)]
    picks = rng.integers(0, len(DETECTOR_SIZES), calls)
    return [[[1, 3, *DETECTOR_SIZES[i]]] for i in picks]


def inputs_for(model: str, shapes: list[list[int]], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if model.startswith("minilm"):
        (b, n), _, _ = shapes
        ids = rng.integers(1000, 30000, (b, n)).astype(np.int64)
        ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
        return [ids, np.ones((b, n), np.int64), np.zeros((b, n), np.int64)]
    return [rng.random(shapes[0], dtype=np.float32)]


def _status_kb(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def worker(engine: str, model: str, calls: int, seed: int, outputs: Path | None, profile: bool,
           threads: int = 0) -> Run:
    """One engine on one model, in this process."""
    xml = model_xml(model)
    if engine == "ember":
        import ember as ov
    else:
        import openvino as ov  # type: ignore[no-redef]
    base = _status_kb("VmRSS")
    core = ov.Core()
    run = Run(engine, model, version=getattr(ov, "__version__", ""), threads=threads)
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    t0 = time.perf_counter()
    compiled = core.compile_model(core.read_model(xml), "CPU", config)
    run.compile_s = time.perf_counter() - t0
    request = compiled.create_infer_request()
    seen: set[str] = set()
    kept: dict[str, np.ndarray] = {}
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    start, cpu_start = time.perf_counter(), time.process_time()
    for i, shapes in enumerate(shapes_for(model, calls, seed)):
        feeds = inputs_for(model, shapes, seed + i)
        key = repr(shapes)
        new = key not in seen
        if profiler is not None and new:
            profiler.enable()
        c0, t0 = time.process_time(), time.perf_counter()
        request.infer(feeds)
        dt, dc = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
        if profiler is not None and new:
            profiler.disable()
        (run.first_ms if new else run.warm_ms).append(dt)
        (run.cpu_first_ms if new else run.cpu_warm_ms).append(dc)
        seen.add(key)
        if i < CHECKED_CALLS:
            kept[f"call{i}"] = np.array(request.get_output_tensor(0).data, copy=True)
    run.total_s, run.cpu_total_s = time.perf_counter() - start, time.process_time() - cpu_start
    run.calls, run.new_shapes = calls, len(seen)
    run.peak_mb = (_status_kb("VmHWM") - base) / 1024
    if engine == "ember":
        run.stats = _ember_stats(compiled)
    if outputs is not None:
        np.savez(outputs, **kept)
    if profiler is not None:
        import pstats

        print(f"-- {engine} {model}: where the first calls at new shapes went (cumulative) --", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(35)
    return run


def _ember_stats(compiled: Any) -> dict[str, Any]:
    """The CPU device's counters of shape specializations, if it keeps them."""
    try:
        from ember.devices.cpu.device import dynamic_stats

        return dynamic_stats(compiled)
    except (ImportError, AttributeError, TypeError):
        return {}


def run_engine(engine: str, model: str, calls: int, seed: int, outputs: Path, baseline: str | None = None,
               threads: int = 0) -> Run:
    """``worker`` in a fresh process (its own peak memory); ``engine`` "baseline" is ember
    imported from the checkout ``baseline``."""
    env = dict(os.environ)
    worker_engine = engine
    if engine == "baseline":
        env["EMBER_BENCH_ROOT"], worker_engine = str(Path(baseline or ".").resolve()), "ember"
    elif engine == PER_SHAPE:
        env["EMBER_CPU_GENERIC_PLANS"], worker_engine = "0", "ember"
    cmd = [sys.executable, __file__, "--worker", worker_engine, "--models", model, "--calls", str(calls),
           "--seed", str(seed), "--outputs", str(outputs), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    if engine == "baseline":
        data["engine"] = "ember (baseline)"
    elif engine == PER_SHAPE:
        data["engine"] = "ember (per-shape plans)"
    return Run(**data)


def check(outputs: dict[str, Path]) -> dict[str, float]:
    """Largest difference of each engine's first outputs to the first engine's, relative to
    the output's magnitude."""
    names = list(outputs)
    ref = np.load(outputs[names[0]])
    out = {names[0]: 0.0}
    for name in names[1:]:
        got = np.load(outputs[name])
        worst = 0.0
        for k in ref.files:
            a, b = ref[k].astype(np.float64), got[k].astype(np.float64)
            worst = max(worst, float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), 1e-12))
        out[name] = worst
    return out


def table(runs: list[Run], diffs: dict[tuple[str, str], float]) -> str:
    lines = ["| model | engine | compile | calls (new shapes) | total | first call at a new shape | warm call "
             "| first / warm | total / OpenVINO | CPU time total (/ OpenVINO) | first / warm CPU time | peak RSS "
             "| max rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        peer = next((p for p in runs if p.model == r.model and p.engine == "openvino"), None)
        ratio = f"{r.total_s / peer.total_s:.2f}" if peer is not None else "-"
        cpu = f"{r.cpu_total_s:.2f} s" + (f" ({r.cpu_total_s / peer.cpu_total_s:.2f})"
                                          if peer is not None and peer.cpu_total_s > 0 else "")
        lines.append(f"| {r.model} | {r.engine} | {r.compile_s:.2f} s | {r.calls} ({r.new_shapes}) | {r.total_s:.2f} s "
                     f"| {r.first_median:.1f} ms | {r.warm_median:.2f} ms | {r.first_median / r.warm_median:.1f} "
                     f"| {ratio} | {cpu} | {r.cpu_ratio:.1f} | {r.peak_mb:.0f} MB "
                     f"| {diffs.get((r.model, r.engine), 0.0):.1e} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{len(os.sched_getaffinity(0))} cores of {cpu}, load {os.getloadavg()[0]:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="minilm", help=f"comma-separated: {', '.join(MODELS)}")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=1, help="runs per engine, alternating; the median total is kept")
    ap.add_argument("--out", help="also write the table (markdown) here")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also run the ember of another checkout (e.g. `git worktree` of an older commit), in turn")
    ap.add_argument("--profile", action="store_true", help="cProfile the first calls at new shapes (in-process)")
    ap.add_argument("--threads", type=int, default=0, help="INFERENCE_NUM_THREADS (0: the engines' default)")
    ap.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--outputs", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {', '.join(bad)}; known: {', '.join(MODELS)}")
    if args.worker:
        run = worker(args.worker, models[0], args.calls, args.seed, Path(args.outputs) if args.outputs else None,
                     args.profile, args.threads)
        print(json.dumps(asdict(run)))
        return 0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in (*ENGINES, PER_SHAPE)]
    if unknown:
        ap.error(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join((*ENGINES, PER_SHAPE))}")
    if args.baseline:
        engines.append("baseline")
    if args.profile:
        for model in models:
            for engine in engines:
                if engine == PER_SHAPE:  # (in-process: set EMBER_CPU_GENERIC_PLANS=0 and profile "ember")
                    continue
                worker(engine, model, args.calls, args.seed, None, True, args.threads)
        return 0
    runs: list[Run] = []
    diffs: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            model_xml(model)  # an int8 IR made here, not inside a measured worker
            outputs = {}
            tries: dict[str, list[Run]] = {e: [] for e in engines}
            for r in range(args.rounds):  # engines in turn, so that machine noise hits all alike
                for engine in engines:
                    path = Path(tmp) / f"{model}-{engine}.npz"
                    print(f"{model}: {engine} (round {r + 1} of {args.rounds}) ...", file=sys.stderr, flush=True)
                    tries[engine].append(run_engine(engine, model, args.calls, args.seed, path, args.baseline,
                                                    args.threads))
                    outputs[engine] = path
            for engine in engines:  # the round with the median total
                runs.append(sorted(tries[engine], key=lambda x: x.total_s)[(len(tries[engine]) - 1) // 2])
            for engine, d in check(outputs).items():
                label = {"baseline": "ember (baseline)", PER_SHAPE: "ember (per-shape plans)"}.get(engine, engine)
                diffs[(model, label)] = d
                if d > TOLERANCE:
                    print(f"{model}: {engine}'s outputs differ from {engines[0]}'s by {d:.1e} (relative)",
                          file=sys.stderr)
    text = table(runs, diffs)
    versions = ", ".join(sorted({f"{r.engine} {r.version}" for r in runs}))
    text += (f"\n\n{args.calls} calls per model, one compile, seed {args.seed}, {args.rounds} alternating round(s) "
             f"(the median total kept), batch 1, LATENCY hint, f32, "
             f"{f'{args.threads} thread(s)' if args.threads else 'default threads'}; "
             f"{machine()}; {versions}. 'first call': median over the calls at a shape not seen before; "
             "'warm call': median over the calls at a shape seen before; CPU time: the process's, every thread; "
             "peak RSS above the imports.")
    for r in runs:
        if r.stats:
            text += f"\n{r.model} {r.engine} device counters: {json.dumps(r.stats)}"
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
