"""Silero VAD v6 (zoo "silero-vad"): ember's CPU device against ONNX Runtime, per-chunk latency.

    python benchmarks/silero.py                  # 7 alternating rounds of 300 chunks
    python benchmarks/silero.py --rounds 9 --chunks 500

Real use: 512-sample chunks of 16 kHz audio, one after the other, the recurrent state of each
chunk fed to the next (``sr`` is the int64 scalar 16000). The model is the ONNX file from the
pinned ``silero-vad`` wheel (the zoo fetches and caches it). Engines alternate round by round
(A B A B ...) so that machine noise hits both alike; each engine runs one thread-count default
and the latency path a user calls:

- ``ember``: ``compiled_model([chunk, state, sr])`` (the convenience call);
- ``ember (request)``: one ``InferRequest``, ``infer`` per chunk;
- ``onnxruntime``: ``InferenceSession.run`` per chunk.

The table gives the median per chunk over all rounds, the 99th percentile, the spread of the round
medians (slowest / fastest) and the ratio to ONNX Runtime. Outputs (speech probability and the
carried state over every chunk of the first round) are checked against ONNX Runtime first.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Step = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def audio(chunks: int) -> np.ndarray:
    """Speech-like test signal: a modulated tone with noise, ``chunks`` chunks of 512 samples."""
    rng = np.random.default_rng(0)
    t = np.arange(512 * chunks) / 16000.0
    sig = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.size)
    return sig.astype(np.float32).reshape(chunks, 1, 512)


def engines() -> dict[str, Step]:
    import onnxruntime as ort

    import ember
    from ember import zoo

    prepared = zoo.fetch("silero-vad")
    onnx_path = str(next(iter(prepared.files.values())))
    sr = np.array(16000, np.int64)
    compiled = ember.Core().compile_model(str(prepared.xml), "CPU")
    request = compiled.create_infer_request()
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])

    def ember_call(x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, state = compiled([x, s, sr]).to_tuple()
        return out, state

    def ember_request(x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, state = request.infer([x, s, sr]).to_tuple()
        return out, state

    def ort_run(x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, state = sess.run(None, {"input": x, "state": s, "sr": sr})
        return out, state

    return {"ember": ember_call, "ember (request)": ember_request, "onnxruntime": ort_run}


def stream(step: Step, chunks: np.ndarray, times: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run every chunk with the state carried; per-chunk seconds appended to ``times``."""
    state = np.zeros((2, 1, 128), np.float32)
    probs = []
    for x in chunks:
        t0 = time.perf_counter()
        p, state = step(x, state)
        if times is not None:
            times.append(time.perf_counter() - t0)
        probs.append(np.asarray(p).reshape(-1)[0])
    return np.array(probs), state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--chunks", type=int, default=300)
    args = ap.parse_args()
    chunks = audio(args.chunks)
    eng = engines()
    want_p, want_s = stream(eng["onnxruntime"], chunks)
    for name, step in eng.items():
        got_p, got_s = stream(step, chunks)
        err = max(float(np.abs(got_p - want_p).max()), float(np.abs(got_s - want_s).max()))
        print(f"{name:16s} max |difference| to onnxruntime over {args.chunks} chunks: {err:.2e}")
        if err > 1e-3:
            raise SystemExit(f"{name} disagrees with onnxruntime")
    times: dict[str, list[float]] = {n: [] for n in eng}
    rounds: dict[str, list[float]] = {n: [] for n in eng}
    for _ in range(args.rounds):
        for name, step in eng.items():
            t: list[float] = []
            stream(step, chunks, t)
            times[name] += t
            rounds[name].append(float(np.median(t)))
    base = float(np.median(times["onnxruntime"]))
    print(f"\nSilero VAD v6, 512-sample chunks at 16 kHz, state carried; {args.rounds} rounds x {args.chunks} chunks")
    print(f"{'engine':16s} {'median us':>10s} {'p99 us':>9s} {'round spread':>13s} {'vs ORT':>7s}")
    for name in eng:
        med = float(np.median(times[name]))
        p99 = float(np.percentile(times[name], 99))
        spread = max(rounds[name]) / min(rounds[name])
        print(f"{name:16s} {med * 1e6:10.1f} {p99 * 1e6:9.1f} {spread:12.2f}x {med / base:6.2f}x")


if __name__ == "__main__":
    main()
