"""ember against LiteRT and OpenVINO's TFLite frontend on MediaPipe's ``.tflite`` models.

    python benchmarks/tflite.py                          # the five MediaPipe models, ~4 s an engine
    python benchmarks/tflite.py --models iris_landmark --time 2 --rounds 5 --threads 2

Each engine reads the same ``.tflite`` file (from the mediapipe 0.10.21 wheel, cached by the
zoo): ember converts it with ``convert_model`` and compiles for its CPU device; OpenVINO 2026.4
reads it with its own TFLite frontend and compiles for its CPU plugin with
``INFERENCE_PRECISION_HINT=f32`` (it would pick bf16 by itself on this CPU); LiteRT
(ai-edge-litert) runs it with its default XNNPACK delegate and ``--threads`` threads. Outputs
on a scikit-image photo are checked first (relative difference to LiteRT under 1e-3, else the
model is not timed); then batch-1 latency in alternating rounds (A B C A B C) so that machine
noise hits every engine alike; the table gives medians and ember / peer ratios (above 1: ember
is slower).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from compare import alternate, latency_slice, warm_up  # noqa: E402

MODELS = ("hand_landmark_lite", "palm_detection_lite", "iris_landmark", "face_landmark", "pose_detection")


def photo(shape: Sequence[int]) -> np.ndarray:
    from skimage import data

    img = data.astronaut().astype(np.float32) / 255.0
    _, h, w, _ = shape
    ys = (np.arange(h) * img.shape[0] / h).astype(int)
    xs = (np.arange(w) * img.shape[1] / w).astype(int)
    return np.ascontiguousarray(img[ys][:, xs][None])


def ember_engine(path: Path, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
    import ember as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    compiled = core.compile_model(ov.convert_model(path), "CPU", config)
    request = compiled.create_infer_request()
    outputs = compiled.outputs
    return lambda x: [np.asarray(request.infer([x])[o]) for o in outputs]


def openvino_engine(path: Path, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
    import openvino

    core = openvino.Core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    outputs = compiled.outputs
    return lambda x: [np.asarray(request.infer([x])[o]) for o in outputs]


def litert_engine(path: Path, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads or None)
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    outs = [d["index"] for d in it.get_output_details()]

    def run(x: np.ndarray) -> list[np.ndarray]:
        it.set_tensor(inp, x)
        it.invoke()
        return [it.get_tensor(o) for o in outs]

    return run


ENGINES = {"ember": ember_engine, "LiteRT": litert_engine, "OpenVINO": openvino_engine}


def rel_diff(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> float:
    return max(float(np.abs(g.astype(np.float64) - w).max() / max(np.abs(w).max(), 1e-12))
               for g, w in zip(got, want))


def bench_model(name: str, seconds: float, rounds: int, threads: int) -> dict[str, Any]:
    from ember.zoo.tflite_models import mediapipe_file

    path = mediapipe_file(name)
    runs = {k: make(path, threads) for k, make in ENGINES.items()}
    from ember.frontends.tflite import load

    shape = load(path).subgraphs[0].tensors[load(path).subgraphs[0].inputs[0]].shape
    x = photo(shape)
    ref = runs["LiteRT"](x)
    diffs = {k: rel_diff(fn(x), ref) for k, fn in runs.items()}
    row: dict[str, Any] = {"model": name, "diff": diffs}
    if max(diffs.values()) > 1e-3:
        row["skipped"] = "outputs differ"
        return row
    for fn in runs.values():
        warm_up(lambda fn=fn: fn(x), 20, 1.0)
    jobs = [lambda fn=fn: latency_slice(lambda: fn(x), seconds / rounds) for fn in runs.values()]
    times = alternate(jobs, rounds)
    row["median_ms"] = {k: 1e3 * statistics.median([t for r in ts for t in r]) for k, ts in zip(runs, times)}
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    head = "| model | ember CPU | LiteRT (XNNPACK) | OpenVINO (TFLite frontend) | ember / LiteRT | ember / OpenVINO | " \
           "max rel. diff to LiteRT (ember) |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        if "median_ms" not in r:
            lines.append(f"| {r['model']} | {r.get('skipped')} | | | | | {r['diff']['ember']:.1e} |")
            continue
        m = r["median_ms"]
        lines.append(f"| {r['model']} | {m['ember']:.2f} ms | {m['LiteRT']:.2f} ms | {m['OpenVINO']:.2f} ms | "
                     f"{m['ember'] / m['LiteRT']:.2f} | {m['ember'] / m['OpenVINO']:.2f} | {r['diff']['ember']:.1e} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated MediaPipe model names")
    ap.add_argument("--time", type=float, default=4.0, help="seconds of timing per engine and model")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    ap.add_argument("--threads", type=int, default=0, help="threads per engine (0: each engine's default)")
    args = ap.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        rows.append(bench_model(name.strip(), args.time, args.rounds, args.threads))
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
