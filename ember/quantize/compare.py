"""``compare``: where a quantized model loses accuracy, layer by layer, on real samples.

For every quantized layer (a Convolution, MatMul, ... with FakeQuantize inputs or int8 weights)
two errors are measured against the float model, as relative L2 norms ``|q - f| / |f|``:

- **added**: the layer run with its quantizers on the float model's own inputs, so only this
  layer's quantization counts;
- **accumulated**: the quantized model's value at the layer's output, so everything above counts.

The report ranks layers by added error, names the first layer where the accumulated error
jumps past ``divergence``, and proposes the ``IgnoredScope`` that keeps the worst layers float.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.graph.core_ops import Result
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.quantize.dataset import as_dataset, samples
from ember.quantize.graph_utils import Constants, load_model
from ember.quantize.parameters import IgnoredScope, QuantizationError
from ember.quantize.placement import AGNOSTIC
from ember.quantize.progress import track
from ember.quantize.statistics import compile_for_statistics, infer


@dataclass
class LayerError:
    name: str
    type_name: str
    added: float
    accumulated: float


@dataclass
class CompareReport:
    """The per-layer errors (model order), the worst first in ``ranked``."""

    layers: list[LayerError]
    first_divergence: LayerError | None
    suggested_ignored_scope: IgnoredScope
    samples: int
    outputs: dict[str, float] = field(default_factory=dict)

    @property
    def ranked(self) -> list[LayerError]:
        return sorted(self.layers, key=lambda e: -e.added)

    def __str__(self) -> str:
        lines = [f"per-layer quantization error on {self.samples} sample(s) (relative L2 vs the float model)"]
        for name, err in self.outputs.items():
            lines.append(f"  model output {name}: {err:.4f}")
        lines.append(f"  {'rank':>4}  {'added':>8}  {'accum.':>8}  layer")
        for i, e in enumerate(self.ranked[:15], 1):
            lines.append(f"  {i:>4}  {e.added:8.4f}  {e.accumulated:8.4f}  {e.name} ({e.type_name})")
        if self.first_divergence is not None:
            d = self.first_divergence
            lines.append(f"  outputs first diverge at {d.name} ({d.type_name}): accumulated error {d.accumulated:.4f}")
        if self.suggested_ignored_scope.names:
            lines.append(f"  to keep the worst layers float: IgnoredScope(names={list(self.suggested_ignored_scope.names)})")
        return "\n".join(lines)


def quantized_layers(model: Model) -> list[Node]:
    """Nodes with a FakeQuantize (possibly through precision-preserving ops) or int8 weights on an input."""
    out = []
    for n in model.get_ordered_ops():
        if n.type_name in ("FakeQuantize", "Result", "Const", "Parameter", "Convert") or \
                n.type_name in AGNOSTIC or "/fq_weights_" in n.friendly_name:
            continue
        if any(input_quantizer(o) is not None or is_compressed_weight(o) for o in n.input_values()):
            out.append(n)
    return out


def input_quantizer(src: Output) -> Node | None:
    for _ in range(8):
        if src.node.type_name == "FakeQuantize":
            return src.node
        if src.node.type_name not in AGNOSTIC:
            return None
        src = src.node.input(0).source
    return None


def is_compressed_weight(src: Output) -> bool:
    n = src.node
    for _ in range(4):
        if "/fq_weights_" in n.friendly_name:
            return True
        if n.type_name not in ("Convert", "Reshape"):
            return False
        n = n.input(0).source.node
    return False


def compare(float_model: Any, quantized_model: Any, dataset: Any, subset_size: int = 8, top: int = 3,
            divergence: float = 0.1, show_progress: bool = True) -> CompareReport:
    """Measure what each quantized layer of ``quantized_model`` costs against ``float_model`` on
    up to ``subset_size`` items of ``dataset`` (see the module docstring). Layers are matched by
    name, as ``quantize`` keeps them. Both models run on the CPU device; the per-layer "added"
    error runs each layer's reference kernel."""
    fmodel = load_model(float_model)
    qmodel = load_model(quantized_model)
    dataset = as_dataset(dataset)
    by_name = {n.friendly_name: n for n in fmodel.get_ordered_ops()}
    layers = [n for n in quantized_layers(qmodel) if n.friendly_name in by_name]
    if not layers:
        raise QuantizationError("ember: the quantized model has no quantized layer that the float model also has "
                                "(compare matches layers by name)")
    # float values needed: each layer's output and the float tensor behind each of its inputs
    f_ports: dict[tuple[str, int], Output] = {}
    plans = []
    for q in layers:
        f = by_name[q.friendly_name]
        f_ports[(f.friendly_name, 0)] = f.output(0)
        inputs = []
        for port, src in enumerate(q.input_values()):
            fq = input_quantizer(src)
            if is_compressed_weight(src) or (fq is None and Constants().is_const(src)):
                inputs.append(("const", src))
                continue
            fsrc = f.input(port).source
            f_ports[(fsrc.node.friendly_name, fsrc.index)] = fsrc
            inputs.append(("float", (fsrc.node.friendly_name, fsrc.index), fq))
        plans.append((q, inputs))
    f_list = list(f_ports.values())
    q_list = [q.output(0) for q in layers]
    f_vals = _run(fmodel, f_list, dataset, subset_size, show_progress, "Float model")
    q_vals = _run(qmodel, q_list, dataset, subset_size, show_progress, "Quantized model")
    f_index = {k: i for i, k in enumerate(f_ports)}
    consts = Constants()
    errors: list[LayerError] = []
    n_samples = len(f_vals)
    for li, (q, inputs) in enumerate(track(plans, "Per-layer error", len(plans), show_progress)):
        added, accum = [], []
        for s in range(n_samples):
            args = []
            for item in inputs:
                if item[0] == "const":
                    args.append(consts.value(item[1]))
                    continue
                x = f_vals[s][f_index[item[1]]]
                fq = item[2]
                if fq is not None:
                    x = fq.evaluate([x] + [consts.value(o) for o in fq.input_values()[1:]])[0]
                args.append(x)
            ref = f_vals[s][f_index[(q.friendly_name, 0)]]
            try:
                local = q.evaluate(args)[0]
            except Exception:  # noqa: BLE001 - a shape that changed through an agnostic op: no local figure
                local = None
            if local is not None and local.shape == ref.shape:
                added.append(_rel(local, ref))
            accum.append(_rel(q_vals[s][li], ref))
        errors.append(LayerError(q.friendly_name, q.type_name, float(np.mean(added)) if added else float("nan"),
                                 float(np.mean(accum))))
    first = next((e for e in errors if e.accumulated > divergence), None)
    ranked = [e for e in sorted(errors, key=lambda e: -e.added) if np.isfinite(e.added)]
    median = float(np.median([e.added for e in ranked])) if ranked else 0.0
    worst = [e.name for e in ranked[:top] if e.added > 2 * median]
    report = CompareReport(errors, first, IgnoredScope(names=worst), n_samples)
    fo = _run(fmodel, [r.input(0).source for r in fmodel.get_results()], dataset, subset_size, False, "")
    qo = _run(qmodel, [r.input(0).source for r in qmodel.get_results()], dataset, subset_size, False, "")
    for i, o in enumerate(fmodel.outputs):
        name = sorted(o.names)[0] if o.names else o.node.friendly_name
        report.outputs[name] = float(np.mean([_rel(qo[s][i], fo[s][i]) for s in range(len(fo))]))
    return report


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def _run(model: Model, ports: list[Output], dataset: Any, subset_size: int, show: bool, what: str
         ) -> list[list[np.ndarray]]:
    extra = [Result([p]) for p in ports]
    model.add_results(extra)
    try:
        compiled = compile_for_statistics(model)
    finally:
        for r in extra:
            model.remove_result(r)
            r.input(0).source.remove_target_input(r.input(0))
    base = len(compiled.outputs) - len(extra)
    request = compiled.create_infer_request()
    out = []
    for item in track(samples(dataset, subset_size), f"{what} run", None, show):
        vals = infer(request, item, model)
        out.append([np.array(vals[base + k], copy=True) for k in range(len(extra))])
    return out
