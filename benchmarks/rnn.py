"""Recurrent networks: ember's CPU device against ONNX Runtime and OpenVINO, median latency.

    python benchmarks/rnn.py                       # both models, 5 alternating rounds of 1 s each
    python benchmarks/rnn.py --models lstm-tagger --rounds 9 --seconds 2

Models, built in PyTorch with seeded weights and exported to ONNX once (cached in
``~/.cache/ember/bench-rnn``):

- ``lstm-tagger``: embedding (1000 x 128), a 2-layer bidirectional LSTM (hidden 256), a linear
  head of 20 tags; token ids ``[1, 100]``.
- ``gru-encoder``: a 1-layer GRU (80 features, hidden 256) over a padded batch of 4 sequences of
  100 frames with lengths 100, 80, 50, 20 (``pack_padded_sequence``, so the ONNX GRU gets
  ``sequence_lens``).
- ``crnn``: a CRNN text recognizer: five conv + BatchNorm + ReLU blocks with pooling over a
  32 x 256 grayscale line, a 2-layer bidirectional LSTM (hidden 256) over the 64 columns, a
  linear CTC head of 37 classes with log-softmax.

Each engine runs its default threads in f32 (OpenVINO with ``INFERENCE_PRECISION_HINT=f32``:
it picks bf16 on CPUs that have it), latency hint, one request. Engines alternate round by
round (A B C A B C ...) so that machine noise hits all alike; the table gives the median over
all runs, the 99th percentile, the spread of the round medians (slowest / fastest round) and
the ratios to ONNX Runtime and OpenVINO. Outputs are checked against ONNX Runtime first.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CACHE = Path.home() / ".cache" / "ember" / "bench-rnn"


def _export_tagger(path: Path) -> None:
    import torch
    from torch import nn

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(1000, 128)
            self.lstm = nn.LSTM(128, 256, 2, batch_first=True, bidirectional=True)
            self.out = nn.Linear(512, 20)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.out(self.lstm(self.emb(ids))[0])

    torch.manual_seed(0)
    torch.onnx.export(Tagger().eval(), (torch.randint(0, 1000, (1, 100)),), str(path), dynamo=False,
                      opset_version=17, input_names=["ids"], output_names=["tags"])


def _export_encoder(path: Path) -> None:
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(80, 256, 1, batch_first=True)

        def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            packed = nn.utils.rnn.pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
            y, h = self.gru(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
            return y, h

    torch.manual_seed(0)
    torch.onnx.export(Encoder().eval(), (torch.randn(4, 100, 80), torch.tensor([100, 80, 50, 20])), str(path),
                      dynamo=False, opset_version=17, input_names=["x", "lens"], output_names=["y", "h"])


def _export_crnn(path: Path) -> None:
    import torch
    from torch import nn

    class CRNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()

            def block(cin: int, cout: int, pool: tuple[int, int] | None) -> list[nn.Module]:
                layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
                return layers + ([nn.MaxPool2d(pool)] if pool else [])

            self.cnn = nn.Sequential(*block(1, 64, (2, 2)), *block(64, 128, (2, 2)), *block(128, 256, None),
                                     *block(256, 256, (2, 1)), *block(256, 256, (4, 1)))
            self.rnn = nn.LSTM(256, 256, 2, batch_first=True, bidirectional=True)
            self.head = nn.Linear(512, 37)

        def forward(self, img: torch.Tensor) -> torch.Tensor:
            f = self.cnn(img).squeeze(2).transpose(1, 2)  # [batch, width / 4, channels]
            return self.head(self.rnn(f)[0]).log_softmax(-1)

    torch.manual_seed(0)
    model = CRNN().eval()
    for m in model.modules():  # seeded, non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.onnx.export(model, (torch.randn(1, 1, 32, 256),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"])


def _feeds(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if name == "lstm-tagger":
        return {"ids": rng.integers(0, 1000, (1, 100)).astype(np.int64)}
    if name == "crnn":
        return {"image": rng.random((1, 1, 32, 256), dtype=np.float32)}
    return {"x": rng.standard_normal((4, 100, 80)).astype(np.float32), "lens": np.array([100, 80, 50, 20], np.int64)}


MODELS: dict[str, Callable[[Path], None]] = {"lstm-tagger": _export_tagger, "gru-encoder": _export_encoder,
                                             "crnn": _export_crnn}


def model_path(name: str) -> Path:
    """The model's ONNX file, exported once per torch version."""
    import torch

    path = CACHE / f"{name}-torch{torch.__version__.split('+')[0]}.onnx"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.onnx")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MODELS[name](tmp)
        tmp.replace(path)
    return path


def engines(path: Path, threads: int = 0) -> dict[str, Callable[[dict[str, np.ndarray]], list[np.ndarray]]]:
    """name -> run(feeds) for ember CPU, ONNX Runtime and OpenVINO (f32, latency hint;
    ``threads`` > 0: that many threads each, else each engine's default)."""
    import onnxruntime as ort
    import openvino as ov

    import ember

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    options = ort.SessionOptions()
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
        options.intra_op_num_threads = threads
    em = ember.Core().compile_model(ember.convert_model(str(path)), "CPU", config)
    em_names = [p.friendly_name for p in em.model.get_parameters()] if hasattr(em, "model") else None
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ovc = ov.Core().compile_model(ov.Core().read_model(str(path)), "CPU", config)

    def run_ember(f: dict[str, np.ndarray]) -> list[np.ndarray]:
        res = em(f if em_names is None else [f[n] for n in em_names])
        return [np.asarray(a) for a in res.to_tuple()]

    def run_ov(f: dict[str, np.ndarray]) -> list[np.ndarray]:
        res = ovc(f)
        return [np.asarray(res[i]) for i in range(len(ovc.outputs))]

    return {"ember CPU": run_ember, f"ONNX Runtime {ort.__version__}": lambda f: list(sess.run(None, f)),
            f"OpenVINO {ov.__version__.split('-')[0]}": run_ov}


def fallbacks(path: Path) -> dict[str, int]:
    """Op types the CPU plan runs on reference kernels (the top-level plan)."""
    import ember

    cm = ember.Core().compile_model(ember.convert_model(str(path)), "CPU")
    names = [p.friendly_name for p in ember.convert_model(str(path)).get_parameters()]
    feeds = _feeds(path.stem.split("-torch")[0])
    cm([feeds[n] for n in names])
    program = cm._executable.program
    return dict(program.stats.get("fallbacks", {})) if program is not None else {}


def measure(name: str, rounds: int, seconds: float, threads: int = 0) -> list[dict[str, Any]]:
    path = model_path(name)
    feeds = _feeds(name)
    runs = engines(path, threads)
    ref = next(v for k, v in runs.items() if k.startswith("ONNX Runtime"))(feeds)
    rows: list[dict[str, Any]] = []
    for label, fn in runs.items():
        out = fn(feeds)
        err = max(float(np.abs(a.astype(np.float64) - b).max() / max(float(np.abs(b).max()), 1e-6))
                  for a, b in zip(out, ref))
        for _ in range(3):
            fn(feeds)
        rows.append({"engine": label, "fn": fn, "err": err, "times": [], "rounds": []})
    for _ in range(rounds):
        for row in rows:
            times: list[float] = []
            start = time.perf_counter()
            while not times or time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                row["fn"](feeds)
                times.append(time.perf_counter() - t0)
            row["times"] += times
            row["rounds"].append(float(np.median(times)))
    for row in rows:
        t = np.array(row["times"]) * 1e3
        row.update(median=float(np.median(t)), p99=float(np.percentile(t, 99)), runs=len(t),
                   spread=max(row["rounds"]) / min(row["rounds"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per engine per round")
    ap.add_argument("--threads", type=int, default=0, help="threads per engine (default: each engine's own)")
    args = ap.parse_args(argv)
    for name in args.models.split(","):
        rows = measure(name, args.rounds, args.seconds, args.threads)
        ort_ms = next(r["median"] for r in rows if r["engine"].startswith("ONNX Runtime"))
        ov_ms = next(r["median"] for r in rows if r["engine"].startswith("OpenVINO"))
        print(f"\n{name}  (reference kernels in ember's plan: {fallbacks(model_path(name)) or 'none'})")
        print(f"{'engine':<22} {'median ms':>10} {'p99 ms':>8} {'p99/med':>8} {'rounds':>7} {'x ORT':>6} "
              f"{'x OV':>6} {'runs':>5} {'max rel err':>12}")
        for r in rows:
            print(f"{r['engine']:<22} {r['median']:>10.3f} {r['p99']:>8.3f} {r['p99'] / r['median']:>8.2f} "
                  f"{r['spread']:>7.2f} {r['median'] / ort_ms:>6.2f} {r['median'] / ov_ms:>6.2f} {r['runs']:>5} "
                  f"{r['err']:>12.1e}")


if __name__ == "__main__":
    main()
