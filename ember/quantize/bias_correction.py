"""Bias correction after quantization.

FastBiasCorrection (NNCF's default, for Convolution and MatMul): feed a tensor whose every
channel holds that channel's mean float input through the layer with its int8 weights, and
shift the bias by the difference between the float output's per-channel mean and what came
out (this corrects the mean error the weight rounding adds). A shift larger than ``threshold`` times the bias
(or any zero bias) is skipped, as in NNCF.

BiasCorrection (``fast_bias_correction=False``, NNCF's algorithm): the int8-weight model with float
activations runs layer by layer on a fifth of the calibration items, and each bias is corrected
before the layers after it are measured (see ``bias_correction``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.node import Node
from ember.quantize.graph_utils import Constants
from ember.quantize.parameters import QuantizationError
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


def _apply_shift(b: Any, shift: np.ndarray, threshold: float, consts: Constants, eps: bool = False) -> bool:
    """Move ``b``'s bias by ``shift`` unless max |shift / bias| reaches ``threshold``. A zero bias
    is never moved by FastBiasCorrection; BiasCorrection (``eps``) divides by bias + eps, as NNCF."""
    bias_out = b.add.input(b.bias_port).source
    bias = consts.value(bias_out).astype(np.float32)
    view = [1] * bias.ndim
    if bias.ndim:
        view[int(np.argmax(bias.shape))] = -1
    new_bias = bias + shift.reshape(view) if bias.ndim else bias + shift
    if (not eps and np.count_nonzero(bias == 0)) or not np.all(np.isfinite(new_bias)):
        return False
    denominator = bias + np.finfo(np.float32).eps if eps else bias
    magnitude = float(np.max(np.abs((new_bias - bias) / denominator)))
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
        out_stats = stats.get(b.output)
        if in_stats is None or out_stats is None or in_stats.ch_sum_mean is None or not in_stats.shape \
                or out_stats.ch_sum_mean is None:
            continue
        q_mean = _mean_of_channel_constant_input(b, in_stats.shape, in_stats.channel_mean, consts)
        shift = out_stats.channel_mean - q_mean
        done += _apply_shift(b, shift, threshold, consts)
    return done


def bias_correction(model: Model, biases: Sequence[Any], dataset: Any, subset_size: int, threshold: float,
                    float_weights: dict[tuple[int, int], np.ndarray], show_progress: bool = True) -> int:
    """NNCF's BiasCorrection: the model with int8 weights and float activations (every
    FakeQuantize bypassed) runs layer by layer on the first ``subset_size`` items; when a biased
    layer is reached, its bias moves by the per-channel mean of (float output - output here), so
    every later layer is measured on inputs its corrected predecessors produced. The float
    reference is the same graph with ``float_weights`` ({(id(layer), port): weight}) in place of
    the int8 ones. Returns how many biases changed."""
    from ember.quantize.dataset import samples

    items = [_feeds(model, item) for item in samples(dataset, subset_size)]
    by_layer = {id(b.layer): b for b in biases}
    reference: dict[int, np.ndarray] = {}

    def record(node: Node, outs: list[np.ndarray]) -> None:
        b = by_layer.get(id(node))
        if b is not None:
            reference[id(node)] = np.mean([_channel_mean(o, b.out_axis) for o in outs], axis=0)

    _evaluate(model, items, float_weights, record)
    consts = Constants()
    done = 0
    progress = iter(track(range(len(biases)), "Applying Bias correction", len(biases), show_progress))

    def correct(node: Node, outs: list[np.ndarray]) -> None:
        nonlocal done
        b = by_layer.get(id(node))
        if b is None:
            return
        next(progress, None)
        shift = reference[id(node)] - np.mean([_channel_mean(o, b.out_axis) for o in outs], axis=0)
        done += _apply_shift(b, shift, threshold, consts, eps=True)

    _evaluate(model, items, {}, correct)
    for _ in progress:
        pass
    return done


def _feeds(model: Model, item: Any) -> list[np.ndarray]:
    """A calibration item as one array per model input, in parameter order."""
    params = model.get_parameters()
    if isinstance(item, dict):
        out = []
        for p in params:
            keys = set(p.output(0).names) | {p.friendly_name}
            hit = [item[k] for k in keys if k in item]
            if not hit:
                raise QuantizationError(f"ember: a calibration item has no value for input '{p.friendly_name}'")
            out.append(np.asarray(hit[0]))
        return out
    if isinstance(item, (list, tuple)):
        return [np.asarray(x) for x in item]
    return [np.asarray(item)]


def _evaluate(model: Model, items: list[list[np.ndarray]], weights: dict[tuple[int, int], np.ndarray],
              visit: Any) -> None:
    """Run ``model`` node by node on every item at once with the reference kernels, every
    FakeQuantize bypassed and the inputs in ``weights`` replaced; ``visit(node, outputs)`` sees
    each node's first output for all items before anything downstream runs (and may change
    constants downstream)."""
    order = model.get_ordered_ops()
    params = {id(p): i for i, p in enumerate(model.get_parameters())}
    last: dict[tuple[int, int], int] = {}
    for i, n in enumerate(order):
        for src in n.input_values():
            last[(id(src.node), src.index)] = i
    values: dict[tuple[int, int], list[np.ndarray]] = {}
    constant: set[tuple[int, int]] = set()  # values equal for every item (weights, their decompression)
    for i, node in enumerate(order):
        if node.type_name in ("Result", "Const"):
            continue
        if id(node) in params:
            values[(id(node), 0)] = [item[params[id(node)]] for item in items]
            continue
        srcs = node.input_values()
        args = []
        fixed = True
        for k, s in enumerate(srcs):
            w = weights.get((id(node), k))
            if w is not None:
                args.append([w] * len(items))
            elif s.node.type_name == "Const":
                args.append([s.node.data] * len(items))
            else:
                args.append(values[(id(s.node), s.index)])
                fixed = fixed and (id(s.node), s.index) in constant
        if fixed and items:
            res = node.evaluate([a[0] for a in args])
            outs = [[r] * len(items) for r in res]
            constant.update((id(node), k) for k in range(len(res)))
        elif node.type_name == "FakeQuantize":
            outs = [args[0]]
        else:
            per_item = [node.evaluate([a[j] for a in args]) for j in range(len(items))]
            outs = [[r[k] for r in per_item] for k in range(len(per_item[0]))] if per_item else []
        for k, o in enumerate(outs):
            values[(id(node), k)] = o
        if outs:
            visit(node, outs[0])
        for s in srcs:
            key = (id(s.node), s.index)
            if last.get(key) == i:
                values.pop(key, None)
