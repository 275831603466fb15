"""``quantize_with_accuracy_control``: quantize, then give layers back to float until the metric
drop is within ``max_drop`` (NNCF's accuracy-aware quantization, ``QuantizationAccuracyRestorer``).

As NNCF 3.4 does it:

- the float and the quantized model are validated once each (``validation_fn`` may return
  ``(metric, per_item_values)``, as NNCF allows; the per-item values pick the ranking subset);
- the quantized layers are **grouped** as NNCF's ``Ranker`` groups them: layers that share a
  quantizer (a FakeQuantize feeding several layers, through precision-preserving ops) are
  reverted together, one group per step;
- the **ranking subset** is the ``ranking_subset_size`` validation items whose per-item values
  differ most between the float and the quantized model (NNCF's ``select_subset``), the first
  items when ``validation_fn`` returns a bare metric;
- the greedy loop reverts the worst group, validates, stops when the drop is within ``max_drop``,
  and **steps back** (undoes the revert) when the drop grew, unless the step before was a step
  back; at most ``max_num_iterations`` steps; "tune hyperparameters" is off, as NNCF's default.

Where ember differs: the ranking subset is smaller by default (``DEFAULT_RANKING_SUBSET``), a
stepped-back group is skipped instead of re-ranking every group, and ``ranking="layer_error"``
ranks the groups by the error each layer adds on the subset (``compare``: one float and one
quantized pass in all) instead of re-validating each group. Each piece's time is logged and kept
in ``rt_info["ember_accuracy_control"]``.

On dynamic-shape models every new input shape of a quantized model is a plan of its own (int8
plans are static-shaped), and every step is a new model: give the validation items a few shapes
(pad them to a few widths, as batched inference does) so that a step costs a few plans, not one
per item (docs/quantization.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.quantize.algorithm import quantize
from ember.quantize.compare import compare, input_quantizer, is_compressed_weight, quantized_layers
from ember.quantize.dataset import Dataset, as_dataset, samples
from ember.quantize.graph_utils import Constants, load_model
from ember.quantize.parameters import (
    AdvancedAccuracyRestorerParameters,
    AdvancedQuantizationParameters,
    DropType,
    IgnoredScope,
    ModelType,
    QuantizationError,
    QuantizationPreset,
    TargetDevice,
)
from ember.quantize.progress import track
from ember.quantize.statistics import compile_for_statistics, infer

log = logging.getLogger("ember.quantize")

#: ranking subset when ``ranking_subset_size`` is not given (ember ranks by per-layer error, whose
#: reference-kernel pass costs per item; NNCF's 300 re-validations per group would not be needed)
DEFAULT_RANKING_SUBSET = 8


@dataclass
class _Validated:
    metric: float
    per_item: list[Any] | None
    seconds: float


def _validate(model: Model, validation_dataset: Any, validation_fn: Callable[..., Any]) -> _Validated:
    from ember.runtime import Core

    start = time.perf_counter()
    compiled = Core().compile_model(model, "CPU")
    value = validation_fn(compiled, validation_dataset.get_data())
    per_item = None
    if isinstance(value, tuple):  # NNCF allows (metric, per-sample values)
        value, per_item = value[0], list(value[1])
    return _Validated(float(value), per_item, time.perf_counter() - start)


def _drop(reference: float, value: float, drop_type: DropType) -> float:
    if drop_type == DropType.RELATIVE:
        return (reference - value) / max(abs(reference), 1e-12)
    return reference - value


@dataclass
class LayerGroup:
    """Layers reverted together (they share a quantizer), ranked by their worst added error."""

    layers: list[str]
    score: float


@dataclass
class _Undo:
    """How to put back what reverting a group changed: (node, port, previous source)."""

    edits: list[tuple[Node, int, Output]] = field(default_factory=list)

    def set(self, node: Node, port: int, new: Output) -> None:
        self.edits.append((node, port, node.input(port).source))
        node.set_argument(port, new)

    def undo(self) -> None:
        for node, port, old in reversed(self.edits):
            node.set_argument(port, old)
        self.edits.clear()


def quantize_with_accuracy_control(model: Any, calibration_dataset: Any, validation_dataset: Any,
                                   validation_fn: Callable[..., Any], max_drop: float = 0.01,
                                   drop_type: DropType = DropType.ABSOLUTE,
                                   preset: QuantizationPreset | None = None,
                                   target_device: TargetDevice = TargetDevice.ANY, subset_size: int = 300,
                                   fast_bias_correction: bool = True, model_type: ModelType | None = None,
                                   ignored_scope: IgnoredScope | None = None,
                                   advanced_quantization_parameters: AdvancedQuantizationParameters | None = None,
                                   advanced_accuracy_restorer_parameters: AdvancedAccuracyRestorerParameters | None
                                   = None) -> Model:
    """Quantize ``model`` and revert the layer groups that hurt most until
    ``validation_fn(compiled_model, validation_items)`` (higher is better; a metric or
    ``(metric, per_item_values)``) drops by at most ``max_drop`` (ABSOLUTE: metric points;
    RELATIVE: a fraction of the float metric) from the float model's. Returns the quantized ember
    Model (possibly with some layers float); ``rt_info["ember_reverted_layers"]`` names them."""
    restorer = advanced_accuracy_restorer_parameters or AdvancedAccuracyRestorerParameters()
    if restorer.tune_hyperparams:
        raise QuantizationError("ember: tune_hyperparams=True is not supported (NNCF's default, False, is)")
    seconds: dict[str, float] = {}
    fmodel = load_model(model)
    validation = as_dataset(validation_dataset)
    start = time.perf_counter()
    q = quantize(fmodel, calibration_dataset, preset=preset, target_device=target_device, subset_size=subset_size,
                 fast_bias_correction=fast_bias_correction, model_type=model_type, ignored_scope=ignored_scope,
                 advanced_parameters=advanced_quantization_parameters)
    seconds["quantize"] = time.perf_counter() - start
    ref = _validate(fmodel, validation, validation_fn)
    first = _validate(q, validation, validation_fn)
    seconds["validate float"], seconds["validate int8"] = ref.seconds, first.seconds
    drop = _drop(ref.metric, first.metric, drop_type)
    log.info("ember: float metric %.5f, quantized %.5f, drop %.5f (max %.5f)", ref.metric, first.metric, drop, max_drop)
    reverted: list[str] = []
    steps: list[float] = []
    if drop > max_drop:
        show = advanced_quantization_parameters.show_progress if advanced_quantization_parameters else True
        start = time.perf_counter()
        groups = rank_groups(fmodel, q, validation, ref.per_item, first.per_item,
                             restorer.ranking_subset_size or DEFAULT_RANKING_SUBSET, show, validation_fn,
                             restorer.ranking)
        seconds["ranking"] = time.perf_counter() - start
        drop, reverted, steps = _restore(fmodel, q, groups, validation, validation_fn, ref.metric, drop, max_drop,
                                         drop_type, restorer.max_num_iterations)
        if drop > max_drop:
            log.warning("ember: the accuracy drop %.5f is still above %.5f after reverting %d layer(s)", drop, max_drop,
                        len(reverted))
    seconds["revert steps"] = float(sum(steps))
    log.info("ember: accuracy control kept %d layer(s) float: %s; seconds %s", len(reverted), reverted,
             {k: round(v, 2) for k, v in seconds.items()})
    q.rt_info["ember_reverted_layers"] = list(reverted)
    q.rt_info["ember_accuracy_control"] = {"drop": f"{drop:.6f}", "steps": str(len(steps)),
                                           **{k.replace(" ", "_") + "_seconds": f"{v:.3f}" for k, v in seconds.items()}}
    return q


def _restore(fmodel: Model, q: Model, groups: list[LayerGroup], validation: Any, validation_fn: Callable[..., Any],
             reference: float, drop: float, max_drop: float, drop_type: DropType, max_iterations: int
             ) -> tuple[float, list[str], list[float]]:
    """NNCF's greedy loop with its step back; returns the final drop, the reverted layers and
    each step's seconds."""
    by_name = {n.friendly_name: n for n in q.get_ordered_ops()}
    f_by_name = {n.friendly_name: n for n in fmodel.get_ordered_ops()}
    reverted: list[str] = []
    steps: list[float] = []
    previous, step_back = drop, True
    queue = list(groups)
    while queue and len(steps) < max_iterations:
        group = queue.pop(0)
        start = time.perf_counter()
        undo = _Undo()
        changed = [name for name in group.layers if revert_layer(by_name[name], f_by_name.get(name), undo)]
        if not changed:
            continue
        q.validate_nodes_and_infer_types()
        value = _validate(q, validation, validation_fn).metric
        drop = _drop(reference, value, drop_type)
        steps.append(time.perf_counter() - start)
        log.info("ember: reverted %s to float: metric %.5f, drop %.5f", changed, value, drop)
        if drop <= max_drop:
            reverted += changed
            return drop, reverted, steps
        if drop <= previous or step_back:
            reverted += changed
            previous, step_back = drop, False
            continue
        undo.undo()  # the drop grew: NNCF steps back (ember skips the group instead of re-ranking)
        q.validate_nodes_and_infer_types()
        log.info("ember: stepped back from %s (drop %.5f > %.5f)", changed, drop, previous)
        drop, step_back = previous, True
    return drop, reverted, steps


def rank_groups(fmodel: Model, q: Model, validation: Any, reference_items: list[Any] | None,
                quantized_items: list[Any] | None, subset_size: int, show_progress: bool = False,
                validation_fn: Callable[..., Any] | None = None, ranking: str = "revert") -> list[LayerGroup]:
    """The quantized layers of ``q`` in groups sharing a quantizer, worst first, scored on the
    ranking subset of ``validation``. ``ranking="revert"`` (NNCF's): each group reverted alone
    and the model run on the subset: the metric it then reaches (``validation_fn`` on the subset,
    when it returns per-item values) or, otherwise, how much it lowers the outputs' normalized
    MSE against the float model. ``"layer_error"``: the error each layer adds (``compare``),
    one float and one quantized pass for all groups."""
    items = list(samples(validation, None))
    metric_mode = reference_items is not None and quantized_items is not None and len(reference_items) == len(items)
    if metric_mode:
        errors = [_item_error(a, b) for a, b in zip(reference_items or [], quantized_items or [])]
        picked = sorted(np.argsort(errors, kind="stable")[::-1][:subset_size].tolist())
    else:
        picked = few_shapes_first(items, subset_size)
    subset = [items[i] for i in picked]
    if ranking == "layer_error":
        report = compare(fmodel, q, Dataset(subset), subset_size=len(subset), show_progress=show_progress)
        added = {e.name: (e.added if np.isfinite(e.added) else 0.0) for e in report.layers}
        groups = [LayerGroup(names, max(added[n] for n in names)) for names in layer_groups(q, list(added))]
        return sorted(groups, key=lambda g: -g.score)
    if ranking != "revert":
        raise QuantizationError(f"ember: unknown ranking '{ranking}' (revert or layer_error)")
    names = [n.friendly_name for n in quantized_layers(q)]
    f_names = {n.friendly_name for n in fmodel.get_ordered_ops()}
    by_name = {n.friendly_name: n for n in q.get_ordered_ops()}
    f_by_name = {n.friendly_name: n for n in fmodel.get_ordered_ops()}
    reference = None if metric_mode else _outputs(fmodel, subset)
    groups = []
    for group in track(layer_groups(q, [n for n in names if n in f_names]), "Ranking groups", None, show_progress):
        undo = _Undo()
        if not any([revert_layer(by_name[n], f_by_name[n], undo) for n in group]):
            continue
        q.validate_nodes_and_infer_types()
        try:
            if metric_mode and validation_fn is not None:
                score = _validate_items(q, subset, validation_fn)
            else:
                score = -_nmse(reference or [], _outputs(q, subset))
        finally:
            undo.undo()
            q.validate_nodes_and_infer_types()
        groups.append(LayerGroup(group, score))
    return sorted(groups, key=lambda g: -g.score)


def few_shapes_first(items: list[Any], n: int) -> list[int]:
    """Indices of ``n`` of ``items``, taken from the most common input shapes first (data order
    within a shape): every group ranked is a new model, and each input shape of a new model is a
    plan of its own, so a subset of few shapes costs few plans."""
    keys = [_shape_key(x) for x in items]
    count: dict[Any, int] = {}
    for k in keys:
        count[k] = count.get(k, 0) + 1
    order = sorted(range(len(items)), key=lambda i: (-count[keys[i]], keys.index(keys[i]), i))
    return sorted(order[:n])


def _shape_key(item: Any) -> Any:
    if isinstance(item, dict):
        return tuple((k, np.shape(v)) for k, v in sorted(item.items()))
    if isinstance(item, (list, tuple)):
        return tuple(np.shape(v) for v in item)
    return np.shape(item)


def _outputs(model: Model, items: list[Any]) -> list[list[np.ndarray]]:
    compiled = compile_for_statistics(model)
    request = compiled.create_infer_request()
    return [[np.array(v, copy=True) for v in infer(request, item, model)] for item in items]


def _validate_items(model: Model, items: list[Any], validation_fn: Callable[..., Any]) -> float:
    from ember.runtime import Core

    value = validation_fn(Core().compile_model(model, "CPU"), items)
    return float(value[0] if isinstance(value, tuple) else value)


def _nmse(reference: list[list[np.ndarray]], approx: list[list[np.ndarray]]) -> float:
    """NNCF's normalized MSE: |ref - approx|^2 / |ref|^2 per output, averaged over items."""
    out = []
    for ref_item, approx_item in zip(reference, approx):
        for r, a in zip(ref_item, approx_item):
            r64, a64 = np.asarray(r, np.float64).ravel(), np.asarray(a, np.float64).ravel()
            out.append(float(np.dot(r64 - a64, r64 - a64) / max(float(np.dot(r64, r64)), 1e-30)))
    return float(np.mean(out)) if out else 0.0


def _item_error(a: Any, b: Any) -> float:
    try:
        return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
    except (TypeError, ValueError):
        return float(a != b)


def layer_groups(q: Model, names: list[str]) -> list[list[str]]:
    """``names`` partitioned into groups of layers that share an input quantizer (NNCF's
    ``find_quantizer_nodes_to_cut``): reverting one of them means taking the shared quantizer
    away from all of them."""
    by_name = {n.friendly_name: n for n in q.get_ordered_ops()}
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    owner: dict[int, str] = {}
    for name in names:
        for src in by_name[name].input_values():
            fq = input_quantizer(src)
            if fq is None:
                continue
            if id(fq) in owner:
                parent[root(name)] = root(owner[id(fq)])
            else:
                owner[id(fq)] = name
    out: dict[str, list[str]] = {}
    for name in names:
        out.setdefault(root(name), []).append(name)
    return list(out.values())


def revert_layer(node: Node, float_node: Node | None, undo: _Undo | None = None) -> bool:
    """Give ``node`` its float inputs back (weights, bias) and bypass the FakeQuantize in front
    of it (for every layer it feeds: they are one group). False if there was nothing to revert.
    ``undo`` records the edits so that they can be taken back."""
    if float_node is None:
        raise QuantizationError(f"ember: the float model has no layer '{node.friendly_name}' to restore")
    undo = undo or _Undo()
    consts = Constants()
    changed = False
    for port, src in enumerate(node.input_values()):
        if is_compressed_weight(src):
            value = consts.value(float_node.input(port).source)
            undo.set(node, port, Constant(value).output(0))
            changed = True
            continue
        fq = input_quantizer(src)
        if fq is None:
            continue
        if src.node is fq:
            undo.set(node, port, fq.input(0).source)
        else:  # through precision-preserving ops: every reader of the quantizer loses it
            for target in list(fq.output(0).targets):
                undo.set(target.node, target.index, fq.input(0).source)
        changed = True
    targets = node.output(0).targets
    f_targets = float_node.output(0).targets
    if changed and len(targets) == 1 and targets[0].node.type_name == "Add" and len(f_targets) == 1:
        add, fadd = targets[0].node, f_targets[0].node
        for p in (0, 1):
            if consts.is_const(add.input(p).source) and consts.is_const(fadd.input(p).source):
                original = np.asarray(consts.value(fadd.input(p).source))
                undo.set(add, p, Constant(original).output(0))
    return changed
