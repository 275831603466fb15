"""``quantize_with_accuracy_control``: quantize, then give layers back to float until the metric
drop is within ``max_drop`` (NNCF's accuracy-aware quantization).

ember ranks the quantized layers by the error each one adds on the validation samples (see
``compare``) instead of NNCF's per-group re-validation, which costs one validation per group;
then, like NNCF, it reverts the worst layer (its input quantizers, its int8 weights and its
corrected bias), validates again, and repeats.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.node import Input, Node
from ember.quantize.algorithm import quantize
from ember.quantize.compare import _input_fq, _is_compressed_weight, compare
from ember.quantize.dataset import as_dataset
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

log = logging.getLogger("ember.quantize")


def _validate(model: Model, validation_dataset: Any, validation_fn: Callable[..., Any]) -> float:
    from ember.runtime import Core

    compiled = Core().compile_model(model, "CPU")
    value = validation_fn(compiled, validation_dataset.get_data())
    if isinstance(value, tuple):  # NNCF allows (metric, per-sample values)
        value = value[0]
    return float(value)


def _drop(reference: float, value: float, drop_type: DropType) -> float:
    if drop_type == DropType.RELATIVE:
        return (reference - value) / max(abs(reference), 1e-12)
    return reference - value


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
    """Quantize ``model`` and revert the layers that hurt most until
    ``validation_fn(compiled_model, validation_items)`` (higher is better) drops by at most
    ``max_drop`` (ABSOLUTE: metric points; RELATIVE: a fraction of the float metric) from the
    float model's. Returns the quantized ember Model (possibly with some layers float)."""
    restorer = advanced_accuracy_restorer_parameters or AdvancedAccuracyRestorerParameters()
    fmodel = load_model(model)
    validation = as_dataset(validation_dataset)
    q = quantize(fmodel, calibration_dataset, preset=preset, target_device=target_device, subset_size=subset_size,
                 fast_bias_correction=fast_bias_correction, model_type=model_type, ignored_scope=ignored_scope,
                 advanced_parameters=advanced_quantization_parameters)
    reference = _validate(fmodel, validation, validation_fn)
    value = _validate(q, validation, validation_fn)
    drop = _drop(reference, value, drop_type)
    log.info("ember: float metric %.5f, quantized %.5f, drop %.5f (max %.5f)", reference, value, drop, max_drop)
    if drop <= max_drop:
        return q
    show = advanced_quantization_parameters.show_progress if advanced_quantization_parameters else True
    report = compare(fmodel, q, validation, subset_size=restorer.ranking_subset_size or 8, show_progress=show)
    ranking = [e.name for e in report.ranked]
    by_name = {n.friendly_name: n for n in q.get_ordered_ops()}
    f_by_name = {n.friendly_name: n for n in fmodel.get_ordered_ops()}
    reverted: list[str] = []
    for name in ranking[:restorer.max_num_iterations]:
        if not revert_layer(by_name[name], f_by_name.get(name)):
            continue
        reverted.append(name)
        q.validate_nodes_and_infer_types()
        value = _validate(q, validation, validation_fn)
        drop = _drop(reference, value, drop_type)
        log.info("ember: reverted '%s' to float: metric %.5f, drop %.5f", name, value, drop)
        if drop <= max_drop:
            break
    if drop > max_drop:
        log.warning("ember: the accuracy drop %.5f is still above %.5f after reverting %d layer(s)", drop, max_drop,
                    len(reverted))
    log.info("ember: accuracy control kept %d layer(s) float: %s", len(reverted), reverted)
    q.rt_info["ember_reverted_layers"] = list(reverted)
    return q


def revert_layer(node: Node, float_node: Node | None) -> bool:
    """Give ``node`` its float inputs back (weights, bias) and bypass the FakeQuantize in front
    of it when nothing else reads it. False if there was nothing to revert."""
    if float_node is None:
        raise QuantizationError(f"ember: the float model has no layer '{node.friendly_name}' to restore")
    consts = Constants()
    changed = False
    for port, src in enumerate(node.input_values()):
        if _is_compressed_weight(src):
            value = consts.value(float_node.input(port).source)
            node.set_argument(port, Constant(value).output(0))
            changed = True
            continue
        fq = _input_fq(src)
        if fq is None:
            continue
        if src.node is fq:
            Input(node, port).replace_source_output(fq.input(0).source)
            changed = True
        elif all(c.node is src.node or c.node is node for c in fq.output(0).targets) and \
                len(fq.output(0).targets) == 1:
            fq.output(0).replace(fq.input(0).source)  # only this layer reads it, through the agnostic op
            changed = True
    targets = node.output(0).targets
    f_targets = float_node.output(0).targets
    if changed and len(targets) == 1 and targets[0].node.type_name == "Add" and len(f_targets) == 1:
        add, fadd = targets[0].node, f_targets[0].node
        for p in (0, 1):
            if consts.is_const(add.input(p).source) and consts.is_const(fadd.input(p).source):
                original = np.asarray(consts.value(fadd.input(p).source))
                add.set_argument(p, Constant(original).output(0))
    return changed
