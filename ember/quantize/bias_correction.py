"""Bias correction after quantization.

FastBiasCorrection (NNCF's default, for Convolution and MatMul): feed a tensor whose every
channel holds that channel's mean float input through the layer with its int8 weights, and
shift the bias by the difference between the float output's per-channel mean and what came
out (this corrects the mean error the weight rounding adds). A shift larger than ``threshold`` times the bias
(or any zero bias) is skipped, as in NNCF.

BiasCorrection (``fast_bias_correction=False``): run the quantized model on the calibration data
and shift each bias by the per-channel mean error of its output against the float model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.quantize.graph_utils import Constants
from ember.quantize.progress import track
from ember.quantize.statistics import TensorStats

log = logging.getLogger("ember.quantize")


def _channel_blob(shape: tuple[int, ...], means: np.ndarray, axis: int) -> np.ndarray:
    view = [1] * len(shape)
    view[axis % len(shape)] = -1
    return np.broadcast_to(means.astype(np.float32).reshape(view), shape).copy()


def _channel_mean(x: np.ndarray, axis: int) -> np.ndarray:
    axis = axis % x.ndim
    return x.mean(axis=tuple(a for a in range(x.ndim) if a != axis))


def _mean_of_channel_constant_input(b: Any, shape: tuple[int, ...], means: np.ndarray, consts: Constants
                                    ) -> np.ndarray:
    """Per-output-channel mean of the layer applied to an input that holds each channel's mean
    everywhere (NNCF's FastBiasCorrection blob). A convolution's mean is computed exactly from
    how often each kernel tap lands inside the input (the rest is zero padding), without
    running the convolution; other layers run their reference kernel on the blob."""
    layer = b.layer
    if layer.type_name == "Convolution" and len(shape) >= 3 and b.port == 0:
        w = consts.value(layer.input(1).source).astype(np.float64)  # [O, C, k...]
        kernel = w.shape[2:]
        pb, _ = layer.resolved_pads(shape, kernel)
        out_spatial = [int(d.get_length()) for d in layer.output(0).partial_shape[2:]] \
            if layer.output(0).partial_shape.is_static else None
        if out_spatial is not None:
            dil = list(layer.attrs["dilations"]) or [1] * len(kernel)
            weights = None
            for size, k, s, d, p, o in zip(shape[2:], kernel, layer.attrs["strides"], dil, pb, out_spatial):
                pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - p
                frac = ((pos >= 0) & (pos < size)).mean(axis=0)  # share of outputs where each tap is inside
                weights = frac if weights is None else np.multiply.outer(weights, frac)
            per_tap = (w * weights).reshape(w.shape[0], w.shape[1], -1).sum(axis=2)  # [O, C]
            return (per_tap @ means.astype(np.float64)).astype(np.float32)
    x = _channel_blob(shape, means, b.in_axis)
    args = [consts.value(o) if i != b.port else x for i, o in enumerate(layer.input_values())]
    return _channel_mean(layer.evaluate(args)[0], b.out_axis)


def _apply_shift(b: Any, shift: np.ndarray, threshold: float, consts: Constants) -> bool:
    bias_out = b.add.input(b.bias_port).source
    bias = consts.value(bias_out).astype(np.float32)
    view = [1] * bias.ndim
    if bias.ndim:
        view[int(np.argmax(bias.shape))] = -1
    new_bias = bias + shift.reshape(view) if bias.ndim else bias + shift
    if np.count_nonzero(bias == 0) or not np.all(np.isfinite(new_bias)):
        return False
    magnitude = float(np.max(np.abs((new_bias - bias) / bias)))
    if magnitude >= threshold:
        log.debug("ember: bias of '%s' not corrected (shift magnitude %.3g)", b.layer.friendly_name, magnitude)
        return False
    et = bias_out.element_type
    b.add.set_argument(b.bias_port, Constant(new_bias.astype(et.dtype), name=bias_out.node.friendly_name).output(0))
    return True


def fast_bias_correction(biases: Sequence[Any], stats: dict[Any, TensorStats], threshold: float,
                         show_progress: bool = True) -> int:
    """Correct every bias in ``biases`` (see the module docstring); returns how many changed."""
    consts = Constants()
    done = 0
    for b in track(biases, "Applying Fast Bias correction", len(biases), show_progress):
        in_stats = stats.get(b.source)
        out_stats = stats.get(b.layer.output(0))
        if in_stats is None or out_stats is None or in_stats.ch_sum_mean is None or not in_stats.shape:
            continue
        q_mean = _mean_of_channel_constant_input(b, in_stats.shape, in_stats.channel_mean, consts)
        shift = out_stats.channel_mean - q_mean
        done += _apply_shift(b, shift, threshold, consts)
    return done


def bias_correction(model: Model, biases: Sequence[Any], float_stats: dict[Any, TensorStats], dataset: Any,
                    subset_size: int, threshold: float, show_progress: bool = True) -> int:
    """Shift each bias by the mean error of its output measured on the quantized model."""
    from ember.quantize.dataset import samples
    from ember.quantize.statistics import Collector

    collector = Collector(model)
    for b in biases:
        collector.observe(b.add.output(0), b.out_axis)
    collector.run(samples(dataset, subset_size), None, show_progress)
    consts = Constants()
    done = 0
    for b in biases:
        ref = float_stats.get(b.add.output(0))
        if ref is None or ref.ch_sum_mean is None:
            continue
        done += _apply_shift(b, ref.channel_mean - collector.stats[b.add.output(0)].channel_mean, threshold, consts)
    return done
