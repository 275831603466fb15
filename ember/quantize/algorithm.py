"""``quantize``: post-training INT8 quantization of a float model (NNCF's MinMax + FastBiasCorrection
pipeline): place quantizers, collect statistics in one pass over the calibration data, write
FakeQuantize and int8 weights, then correct biases."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

import ember.opset as ops
from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.node import Input, Node, Output
from ember.quantize import ranges
from ember.quantize.dataset import as_dataset, samples
from ember.quantize.graph_utils import Constants, load_model
from ember.quantize.insert import compress_weight, insert_fake_quantize
from ember.quantize.parameters import (
    AdvancedQuantizationParameters,
    IgnoredScope,
    ModelType,
    OverflowFix,
    QuantizationError,
    QuantizationMode,
    QuantizationPreset,
    RangeEstimatorParameters,
    RangeEstimatorParametersSet,
    TargetDevice,
    as_enum,
    check_count,
)
from ember.quantize.placement import ActivationQuantizer, Placement, ignored_nodes, place
from ember.quantize.statistics import Collector, TensorStats

log = logging.getLogger("ember.quantize")

#: NNCF's activation quantizers: 8 bits, 256 levels
ACTIVATION_LEVELS = 256


@dataclass
class _Bias:
    """A layer whose output goes through one Add of a constant: the bias FastBiasCorrection tunes."""

    layer: Node
    port: int  # the layer's activation input
    add: Node
    bias_port: int
    out_axis: int
    in_axis: int
    source: Output  # the float tensor the layer reads (before a FakeQuantize goes in between)
    output: Output | None = None  # the layer's float output as the statistics pass measures it


def quantize(model: Any, calibration_dataset: Any, mode: QuantizationMode | None = None,
             preset: QuantizationPreset | None = None, target_device: TargetDevice = TargetDevice.ANY,
             subset_size: int = 300, fast_bias_correction: bool = True, model_type: ModelType | None = None,
             ignored_scope: IgnoredScope | None = None,
             advanced_parameters: AdvancedQuantizationParameters | None = None) -> Model:
    """Quantize ``model`` to INT8 with ranges calibrated on ``calibration_dataset``, as NNCF does.

    ``model``: an ember Model (not changed: a quantized copy is returned), an ``.onnx``/``.xml``
    path or an ``onnx.ModelProto``. ``calibration_dataset``: an ``ember.nncf.Dataset`` (or any
    iterable of model inputs); the first ``subset_size`` items are used. ``preset``: PERFORMANCE
    (symmetric activations, the default) or MIXED (asymmetric activations, the default for
    ``model_type=ModelType.TRANSFORMER``). ``fast_bias_correction=False`` runs the full
    BiasCorrection instead. The statistics pass runs the float model on the CPU device, on the
    calling thread. Returns a new ember Model with FakeQuantize on activations and int8 weights.
    """
    if mode is not None:
        raise QuantizationError(f"ember: quantization mode {mode} is not supported; ember quantizes to INT8 "
                                "(leave mode=None)")
    adv = advanced_parameters or AdvancedQuantizationParameters()
    subset_size = check_count(subset_size, "subset_size")
    preset = as_enum(preset, QuantizationPreset, "preset") if preset is not None else None
    model_type = as_enum(model_type, ModelType, "model_type") if model_type is not None else None
    target_device = as_enum(target_device, TargetDevice, "target_device")
    if preset is None:
        preset = QuantizationPreset.MIXED if model_type == ModelType.TRANSFORMER else QuantizationPreset.PERFORMANCE
    dataset = as_dataset(calibration_dataset)
    qmodel = load_model(model)
    ignored = ignored_nodes(qmodel, ignored_scope)

    if model_type == ModelType.TRANSFORMER:
        alpha = adv.smooth_quant_alpha if adv.smooth_quant_alpha is not None else adv.smooth_quant_alphas.matmul
        if alpha >= 0:
            from ember.quantize.smooth_quant import smooth_quant

            smooth_quant(qmodel, dataset, subset_size, alpha, ignored, adv.show_progress)

    placement = place(qmodel, ignored, model_type)
    if not placement.activations and not placement.weights:
        types = Counter(n.type_name for n in qmodel.get_ordered_ops())
        raise QuantizationError("ember: the model has nothing to quantize: no Convolution, MatMul or other "
                                f"quantizable op with float inputs (it has: {dict(types)})")
    overflow = adv.overflow_fix or OverflowFix.FIRST_LAYER
    if overflow != OverflowFix.FIRST_LAYER:
        for w in placement.weights:
            w.half_range = overflow == OverflowFix.ENABLE
    symmetric = preset == QuantizationPreset.PERFORMANCE

    biases = _biased_layers(qmodel, placement) if not adv.disable_bias_correction else []
    batchwise = adv.batchwise_statistics
    if batchwise is None:
        batchwise = (dataset.get_batch_size() or 1) > 1 if hasattr(dataset, "get_batch_size") else False
    if adv.weights_range_estimator_params not in (None, RangeEstimatorParametersSet.MINMAX):
        raise QuantizationError("ember: weights_range_estimator_params: only MINMAX (NNCF's default) is supported")
    estimator = ranges.estimator(adv.activations_range_estimator_params)
    quantile = ranges.needs_quantiles(estimator)
    histogram = ranges.uses_histogram(estimator)
    collector = Collector(qmodel, batchwise)
    for q in placement.activations:
        per_tensor = q.config.axis is None  # per-channel quantizers keep MINMAX, as NNCF's fall back to
        collector.observe(q.output, q.config.axis, quantile if per_tensor else None, histogram and per_tensor,
                          means=False)
    for b in biases:
        collector.observe(b.source, b.in_axis, ranges=False)
        # the layer's own output, measured as the biased output minus the bias (subtracted before
        # the mean, which stays as exact as the layer's own): observing the layer's output itself
        # would keep the device from fusing the bias into the layer
        b.output = ops.subtract(b.add.output(0), Constant(Constants().value(b.add.input(b.bias_port).source))
                                ).output(0)
        collector.observe(b.output, b.out_axis, ranges=False)
    total = min(subset_size, dataset.get_length() or subset_size)
    try:
        collector.run(samples(dataset, subset_size), total, adv.show_progress)
    finally:
        for b in biases:  # the subtractions leave the graph
            if b.output is not None:
                b.add.output(0).remove_target_input(b.output.node.input(0))

    _insert_activation_quantizers(placement, collector.stats, symmetric, estimator)
    consts = Constants()
    originals = {}
    for w in placement.weights:
        value = consts.value(w.node.input(w.port).source).astype(np.float32)
        originals[id(w.node)] = value
        low, high, levels = ranges.weight_ranges(value, w.channel_axes, w.half_range)
        compress_weight(w.node, w.port, value, low, high, levels)

    if biases:
        if fast_bias_correction:
            from ember.quantize.bias_correction import fast_bias_correction as fbc

            fbc(biases, collector.stats, adv.bias_correction_threshold, adv.show_progress)
        else:
            from ember.quantize.bias_correction import bias_correction

            # NNCF's BiasCorrection: threshold 1000 (2 for the fast one), a fifth of subset_size
            float_weights = {(id(w.node), w.port): originals[id(w.node)] for w in placement.weights}
            bias_correction(qmodel, biases, dataset, max(int(subset_size * 0.2), 1),
                            max(adv.bias_correction_threshold, 1000.0), float_weights, adv.show_progress)

    qmodel.validate_nodes_and_infer_types()
    _summary(qmodel, placement)
    return qmodel


def _insert_activation_quantizers(placement: Placement, stats: dict[Output, TensorStats], symmetric: bool,
                                  estimator: RangeEstimatorParameters = RangeEstimatorParametersSet.MEAN_MINMAX
                                  ) -> dict[Input, Node]:
    """Write every activation FakeQuantize; returns which FakeQuantize feeds each quantized input."""
    per_tensor = {q.output: ranges.range_statistics(stats[q.output], estimator)
                  for q in placement.activations if q.config.axis is None}
    group_range: dict[int, tuple[float, float, float]] = {}
    for q in placement.activations:
        if q.config.group is not None:
            mn, mx, ab = per_tensor[q.output]
            lo, hi, gab = group_range.get(q.config.group, (np.inf, -np.inf, 0.0))
            group_range[q.config.group] = (min(lo, mn), max(hi, mx), max(gab, ab))
    fed: dict[Input, Node] = {}
    for q in placement.activations:
        low, high = _activation_range(q, stats[q.output], per_tensor.get(q.output), symmetric or q.symmetric,
                                      group_range)
        fq = insert_fake_quantize(q.output, list(q.consumers), low, high, ACTIVATION_LEVELS, q.name)
        for c in fq.output(0).targets:
            fed[c] = fq
    return fed


def _activation_range(q: ActivationQuantizer, st: TensorStats, estimated: tuple[float, float, float] | None,
                      symmetric: bool, group_range: dict[int, tuple[float, float, float]]
                      ) -> tuple[np.ndarray, np.ndarray]:
    if q.config.axis is not None:  # per channel: global min/max (NNCF's MINMAX)
        assert st.ch_min is not None and st.ch_max is not None and st.ch_absmax is not None
        rank = len(st.shape)
        shape = [1] * rank
        shape[q.config.axis % rank] = -1
        if symmetric:
            low, high = ranges.symmetric(st.ch_min, st.ch_absmax, ACTIVATION_LEVELS, narrow=False)
        else:
            low, high = ranges.asymmetric(st.ch_min, st.ch_max)
        return low.reshape(shape), high.reshape(shape)
    assert estimated is not None
    mn, mx, ab = estimated
    if q.config.group is not None:
        mn, mx, ab = group_range[q.config.group]
    if symmetric:
        return ranges.symmetric(np.asarray(mn, np.float32), np.asarray(ab, np.float32), ACTIVATION_LEVELS, narrow=False)
    return ranges.asymmetric(np.asarray(mn, np.float32), np.asarray(mx, np.float32))


def _biased_layers(model: Model, placement: Placement) -> list[_Bias]:
    consts = Constants()
    out: list[_Bias] = []
    for w in placement.weights:
        n = w.node
        if n.type_name not in ("Convolution", "MatMul"):  # NNCF's OPERATIONS_WITH_BIAS_REDUCED
            continue
        targets = n.output(0).targets
        if len(targets) != 1 or targets[0].node.type_name != "Add":
            continue
        add = targets[0].node
        bias_port = 1 - targets[0].index
        if not consts.is_const(add.input(bias_port).source) or not add.output(0).partial_shape.rank.is_static:
            continue
        rank = len(add.output(0).partial_shape)
        out_axis = 1 if n.type_name != "MatMul" else rank - 1
        bias = consts.value(add.input(bias_port).source)
        if bias.ndim and bias.size != max(bias.shape):
            continue  # not a per-channel bias
        port = 0 if w.port == 1 else 1
        in_rank = len(n.input_shape(port))
        if n.type_name == "MatMul":
            transposed = n.attrs["transpose_a"] if port == 0 else not n.attrs["transpose_b"]
            in_axis = in_rank - 2 if transposed else in_rank - 1
        else:
            in_axis = 1
        out.append(_Bias(n, port, add, bias_port, out_axis, in_axis, n.input(port).source))
    return out


def _summary(model: Model, placement: Placement) -> None:
    n_fq = len(placement.activations)
    n_w = len(placement.weights)
    floats = Counter(t for t in placement.skipped.values())
    quantized = {id(w.node) for w in placement.weights}
    left = Counter(n.type_name for n in model.get_ordered_ops()
                   if n.type_name in ("Convolution", "GroupConvolution", "MatMul") and id(n) not in quantized)
    extra = f"; float: {dict(left)}" if left else ""
    kept = f"; left in float by rule: {dict(floats)}" if floats else ""
    log.info("ember: quantized '%s': %d activation quantizers (FakeQuantize), %d int8 weights%s%s",
             model.friendly_name, n_fq, n_w, extra, kept)
