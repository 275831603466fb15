"""Transposed-convolution networks: ember CPU against ONNX Runtime and OpenVINO, batch 1.

    python benchmarks/conv_family.py                  # both networks, ~8 s an engine each
    python benchmarks/conv_family.py --models dcgan --time 4 --rounds 8

Two networks built in PyTorch with seeded weights and exported to ONNX once (cached in
``~/.cache/ember/bench/conv_family``):

- ``unet1d``: a 1-D U-Net (4 levels, 32 to 256 channels, Conv1d + BatchNorm + ReLU pairs,
  MaxPool1d down, ConvTranspose1d(k=4, s=2, p=1) up, skip concatenations), input
  ``[1, 8, 4096]``;
- ``dcgan``: a DCGAN-like image generator (latent ``[1, 100, 1, 1]``, ConvTranspose2d
  k=4 s=1 then four k=4 s=2 p=1 layers, 512 to 3 channels, BatchNorm + ReLU, Tanh), 64x64.

Each engine's output is checked against ONNX Runtime first; then warm-up and alternating rounds
(A B C A B C) of synchronous inferences (``benchmarks/compare.py``'s machinery). The table gives
each engine's median, best, p90 and p99 latency, the spread between its rounds (the slowest
round's median over the fastest's) and ember's ratio of medians to each peer (above 1: ember is
slower), and says which ops ember ran on reference kernels (none is the goal). On a
machine shared with other work the medians move a lot between runs (the best times much less).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import compare  # noqa: E402  (benchmarks/compare.py: engines, alternating rounds)

CACHE = Path.home() / ".cache" / "ember" / "bench" / "conv_family"
MODELS = ("unet1d", "dcgan")


def _torch_models() -> dict[str, tuple[Any, tuple[int, ...]]]:
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv1d(cin, cout, 3, padding=1), nn.BatchNorm1d(cout), nn.ReLU(),
                             nn.Conv1d(cout, cout, 3, padding=1), nn.BatchNorm1d(cout), nn.ReLU())

    class UNet1d(nn.Module):
        def __init__(self, cin: int = 8, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
            super().__init__()
            self.down = nn.ModuleList()
            c = cin
            for w in widths:
                self.down.append(block(c, w))
                c = w
            self.pool = nn.MaxPool1d(2)
            self.up = nn.ModuleList()
            self.merge = nn.ModuleList()
            for w in reversed(widths[:-1]):
                self.up.append(nn.ConvTranspose1d(c, w, 4, stride=2, padding=1))
                self.merge.append(block(2 * w, w))
                c = w
            self.head = nn.Conv1d(c, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, d in enumerate(self.down):
                x = d(x)
                if i < len(self.down) - 1:
                    skips.append(x)
                    x = self.pool(x)
            for up, merge in zip(self.up, self.merge):
                x = merge(torch.cat([up(x), skips.pop()], 1))
            return self.head(x)

    def generator(nz: int = 100, ngf: int = 64) -> nn.Module:
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8),
                                   nn.ReLU()]
        c = ngf * 8
        for out in (ngf * 4, ngf * 2, ngf):
            layers += [nn.ConvTranspose2d(c, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        layers += [nn.ConvTranspose2d(c, 3, 4, 2, 1, bias=False), nn.Tanh()]
        return nn.Sequential(*layers)

    return {"unet1d": (UNet1d(), (1, 8, 4096)), "dcgan": (generator(), (1, 100, 1, 1))}


def export(name: str, seed: int = 0) -> Path:
    """The ONNX file of ``name``, exported once with seeded weights and BatchNorm statistics."""
    import torch

    key = hashlib.sha1(f"{name}-{seed}-{torch.__version__}-v1".encode()).hexdigest()[:10]
    path = CACHE / f"{name}-{key}.onnx"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model, shape = _torch_models()[name]
    for m in model.modules():  # non-trivial BatchNorm statistics, as a trained network has
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    tmp = path.with_suffix(".tmp")
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(*shape),), str(tmp), input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)
    tmp.rename(path)
    return path


def fallbacks(path: Path) -> dict[str, int]:
    """The op types ember's CPU device runs on reference kernels for this network."""
    import ember

    cm = ember.Core().compile_model(ember.convert_model(str(path)), "CPU")
    return dict(cm._executable.program.stats["fallbacks"])


def run(name: str, time_s: float, rounds: int) -> dict[str, Any]:
    path = export(name)
    spec = compare.ModelSpec(name, path)
    config = compare.CompareConfig(models=(spec,), device="CPU", time_s=time_s, rounds=rounds,
                                   throughput=False, compile_time=False)
    engines = compare.make_engines(config)
    rows = [compare.EngineResult(e.label, e.kind, e.precision) for e in engines]
    for e in engines:
        e.prepare(spec)
    feeds = spec.make_inputs(0)
    samples: list[list[float]] = []
    spreads: list[float] = []  # slowest round's median / fastest round's, per engine
    with compare._CompiledSet(engines, "LATENCY") as compiled:
        if not compare.check_outputs(compiled, engines, rows, feeds):
            diffs = ", ".join(f"{r.engine}: {r.max_rel_diff:.2e}" for r in rows)
            raise SystemExit(f"{name}: outputs differ ({diffs}); not timing wrong results")
        for c in compiled:
            compare.warm_up(lambda c=c: c.infer(feeds), config.warmup, config.warmup_s)
        jobs = [lambda c=c: compare.latency_slice(lambda: c.infer(feeds), time_s / rounds) for c in compiled]
        for slices in compare.alternate(jobs, rounds, config.pause_s):
            samples.append([s for sl in slices for s in sl])
            medians = [float(np.median(sl)) for sl in slices]
            spreads.append(max(medians) / min(medians))
    return {"name": name, "rows": rows, "samples": samples, "spreads": spreads, "fallbacks": fallbacks(path)}


def table(result: dict[str, Any]) -> str:
    rows, samples = result["rows"], result["samples"]
    med = [float(np.median(s)) * 1e3 for s in samples]
    lines = [f"{result['name']}: ember fallbacks: {result['fallbacks'] or 'none'}",
             f"  {'engine':34} {'median ms':>10} {'best ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'runs':>6} "
             f"{'rounds max/min':>15} {'max rel diff':>13}"]
    for r, s, m, spread in zip(rows, samples, med, result["spreads"]):
        ms = np.asarray(s) * 1e3
        lines.append(f"  {r.engine:34} {m:10.3f} {ms.min():8.3f} {np.percentile(ms, 90):8.3f} {np.percentile(ms, 99):8.3f} "
                     f"{len(ms):6d} {spread:15.2f} {r.max_rel_diff:13.2e}")
    ember_i = next(i for i, r in enumerate(rows) if r.kind == "ember")
    for i, r in enumerate(rows):
        if i != ember_i:
            lines.append(f"  ember / {r.engine}: {med[ember_i] / med[i]:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--time", type=float, default=8.0, help="seconds per engine and network")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args(argv)
    for name in args.models.split(","):
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        print(table(run(name, args.time, args.rounds)), flush=True)


if __name__ == "__main__":
    main()
