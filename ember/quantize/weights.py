"""``compress_weights``: weight-only compression as NNCF writes it for OpenVINO.

Each weight becomes a ``u8``/``i8``/``u4``/``i4`` constant decompressed in the graph:
``Convert(f16) -> Subtract(zero point) -> Multiply(scale) [-> Reshape for groups] -> Convert(f32)``
(no Subtract for symmetric modes). INT8 is per output channel; INT4 per group of
``group_size`` input channels, on the fraction ``ratio`` of the weights that loses least in
INT4 (the rest, and with ``all_layers=False`` the embeddings and the last layer, stay INT8_ASYM).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

import ember.opset as ops
from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.graph.types import Type
from ember.quantize.graph_utils import Constants, load_model
from ember.quantize.parameters import (
    AdvancedCompressionParameters,
    BackupMode,
    CompressWeightsMode,
    IgnoredScope,
    QuantizationError,
    SensitivityMetric,
    as_enum,
    check_count,
)
from ember.quantize.placement import ignored_nodes

log = logging.getLogger("ember.quantize")


@dataclass
class _Target:
    node: Node
    port: int
    source: Output
    reduction_axis: int
    kind: str  # "matmul", "embedding", "conv"

    @property
    def size(self) -> int:
        return int(np.prod(self.source.shape))


def compress_weights(model: Any, mode: CompressWeightsMode = CompressWeightsMode.INT8_ASYM, ratio: float | None = None,
                     group_size: int | None = None, ignored_scope: IgnoredScope | None = None,
                     all_layers: bool | None = None, dataset: Any = None,
                     sensitivity_metric: SensitivityMetric | None = None, subset_size: int = 128,
                     awq: bool | None = None, scale_estimation: bool | None = None, gptq: bool | None = None,
                     lora_correction: bool | None = None, backup_mode: Any = None,
                     advanced_parameters: AdvancedCompressionParameters | None = None,
                     **unsupported: Any) -> Model:
    """Compress the weights of MatMul, embedding Gather and convolution layers, as NNCF 3.4.

    INT8 modes: every weight per output channel. INT4 modes (``group_size=128``, ``ratio=1`` by
    default): the MatMuls (and with ``all_layers`` the embeddings and the last MatMul) in INT4
    groups, the ``1 - ratio`` share of weights most sensitive by ``sensitivity_metric`` in
    INT8_ASYM. With a ``dataset`` (INT4 only) the MatMul inputs are observed on the first
    ``subset_size`` items: the default metric becomes MAX_ACTIVATION_VARIANCE, ``awq=True``
    rescales input channels (activation-aware), ``scale_estimation=True`` fits each group's
    scale to the calibration outputs. ``model`` as for ``quantize``; returns a new ember Model.
    GPTQ and LoRA correction are not implemented and are refused."""
    refused = {"gptq": gptq, "lora_correction": lora_correction, **unsupported}
    bad = {k: v for k, v in refused.items() if v not in (None, False)}
    if bad:
        raise QuantizationError(f"ember: compress_weights option(s) not supported: {', '.join(sorted(bad))} "
                                "(ember implements the data-free path, mixed precision, AWQ and scale estimation)")
    if backup_mode is not None and as_enum(backup_mode, BackupMode, "backup_mode") != BackupMode.INT8_ASYM:
        raise QuantizationError(f"ember: backup_mode {backup_mode} is not supported (only BackupMode.INT8_ASYM, "
                                "NNCF's default)")
    mode = as_enum(mode, CompressWeightsMode, "mode")
    if sensitivity_metric is not None:
        sensitivity_metric = as_enum(sensitivity_metric, SensitivityMetric, "sensitivity_metric")
    if mode == CompressWeightsMode.INT8:
        mode = CompressWeightsMode.INT8_ASYM
    int4 = mode in (CompressWeightsMode.INT4_SYM, CompressWeightsMode.INT4_ASYM)
    if not int4 and (ratio not in (None, 1) or group_size not in (None, -1)):
        raise QuantizationError(f"ember: ratio and group_size apply to INT4 modes only, not {mode.name}")
    data_options = {"dataset": dataset, "sensitivity_metric": sensitivity_metric, "awq": awq,
                    "scale_estimation": scale_estimation}
    if not int4 and any(v is not None for v in data_options.values()):
        used = ", ".join(k for k, v in data_options.items() if v is not None)
        raise QuantizationError(f"ember: INT8 modes compress every weight per channel from the weights alone; "
                                f"{used} apply to INT4 modes only")
    ratio = 1.0 if ratio is None else float(ratio)
    group_size = (128 if int4 else -1) if group_size is None else int(group_size)
    if not 0 <= ratio <= 1:
        raise QuantizationError(f"ember: ratio must be in [0, 1], got {ratio}")
    if int4 and group_size not in (-1,) and group_size <= 0:
        raise QuantizationError(f"ember: group_size must be positive or -1, got {group_size}")
    subset_size = check_count(subset_size, "subset_size")
    if scale_estimation and dataset is None:
        raise QuantizationError("ember: scale_estimation needs a dataset (compress_weights(..., dataset=...))")
    metric = sensitivity_metric or (SensitivityMetric.WEIGHT_QUANTIZATION_ERROR if dataset is None
                                    else SensitivityMetric.MAX_ACTIVATION_VARIANCE)
    if dataset is None and metric != SensitivityMetric.WEIGHT_QUANTIZATION_ERROR and ratio < 1:
        raise QuantizationError(f"ember: sensitivity_metric {metric.name} needs a dataset")
    advanced = advanced_parameters or AdvancedCompressionParameters()

    out = load_model(model)
    ignored = ignored_nodes(out, ignored_scope)
    consts = Constants()
    targets = _targets(out, consts, ignored)
    if not targets:
        raise QuantizationError("ember: the model has no weights to compress (no MatMul, embedding Gather or "
                                "convolution with a constant float weight)")
    modes = {id(t.node): mode for t in targets}
    data_mixed = metric != SensitivityMetric.WEIGHT_QUANTIZATION_ERROR and ratio != 1
    data_compression = bool((awq and advanced.awq_params.prefer_data_aware_scaling) or scale_estimation)
    stats = None
    if int4:
        backup = CompressWeightsMode.INT8_ASYM
        primary = [t for t in targets if t.kind == "matmul" or (all_layers and t.kind == "embedding")]
        if not all_layers:
            last = _last_matmul(out, primary)
            primary = [t for t in primary if t is not last]
        for t in targets:
            if t not in primary:
                modes[id(t.node)] = backup
        fits = [t for t in primary if group_size == -1 or t.source.shape[t.reduction_axis] % group_size == 0]
        for t in primary:
            if t not in fits:
                log.info("ember: '%s' keeps INT8: %d input channels are not a multiple of group_size %d",
                         t.node.friendly_name, t.source.shape[t.reduction_axis], group_size)
                modes[id(t.node)] = backup
        if dataset is not None and (data_mixed or data_compression):
            from ember.quantize.dataset import as_dataset
            from ember.quantize.weights_data import collect

            matmuls = [t for t in targets if t.kind == "matmul" and t.port == 1]
            stats = collect(out, matmuls, as_dataset(dataset), subset_size, metric if data_mixed else None)
        _mixed_precision(fits, consts, mode, backup, group_size, ratio, modes,
                         metric if data_mixed else SensitivityMetric.WEIGHT_QUANTIZATION_ERROR, stats)
    values: dict[Output, np.ndarray] = {}
    for t in targets:
        if t.source not in values:
            values[t.source] = consts.value(t.source).astype(np.float32)
    precomputed: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    if int4 and awq:
        from ember.quantize.weights_data import apply_awq, awq_matches

        matches = [m for m in awq_matches(targets, modes) if _is_2d(m.target)
                   and (m.merge_target is None or _is_2d(m.merge_target))]
        if not matches:
            log.info("ember: AWQ found no Activation/MatMul -> [Multiply ->] MatMul pattern to apply to")
        apply_awq(out, matches, values, stats, modes, group_size, advanced.awq_params, _Layout)
    if int4 and scale_estimation and stats is not None:
        from ember.quantize.weights_data import estimate_scale

        for t in targets:
            if _is_2d(t) and t.kind == "matmul" and id(t.node) in stats and \
                    modes[id(t.node)] in (CompressWeightsMode.INT4_SYM, CompressWeightsMode.INT4_ASYM):
                precomputed[id(t.node)] = estimate_scale(_Layout.to_out_in(values[t.source], t), stats[id(t.node)],
                                                         modes[id(t.node)], group_size,
                                                         advanced.scale_estimation_params)
    done: dict[Output, Output] = {}
    for t in targets:
        if t.source not in done:
            done[t.source] = _compress(t, values[t.source], modes[id(t.node)], group_size,
                                       precomputed.get(id(t.node))).output(0)
        t.node.set_argument(t.port, done[t.source])
    for src, w in values.items():  # AWQ may rescale a weight that stays float (ignored or not a target)
        if src not in done:
            for c in list(src.targets):
                c.node.set_argument(c.index, Constant(w.astype(src.element_type.dtype)).output(0))
    out.validate_nodes_and_infer_types()
    counts: dict[str, int] = {}
    for m in modes.values():
        counts[m.name] = counts.get(m.name, 0) + 1
    log.info("ember: compressed %d weights of '%s': %s", len(targets), out.friendly_name, counts)
    return out


def _is_2d(t: _Target) -> bool:
    return t.kind == "matmul" and len(t.source.shape) == 2


class _Layout:
    """A 2-D MatMul weight seen as [out, in] (the layout AWQ and scale estimation work in)."""

    @staticmethod
    def to_out_in(w: np.ndarray, t: _Target) -> np.ndarray:
        return w if t.reduction_axis == 1 else w.T

    @staticmethod
    def from_out_in(w: np.ndarray, t: _Target) -> np.ndarray:
        return np.ascontiguousarray(w if t.reduction_axis == 1 else w.T)


def _targets(model: Model, consts: Constants, ignored: set[int]) -> list[_Target]:
    found: list[_Target] = []
    for n in model.get_ordered_ops():
        if id(n) in ignored:
            continue
        t = n.type_name
        if t == "MatMul":
            src = n.input(1).source
            rank = len(src.partial_shape)
            if consts.is_const(src) and src.element_type.is_real and rank >= 2:
                axis = rank - 1 if n.attrs["transpose_b"] else rank - 2
                found.append(_Target(n, 1, src, axis, "matmul"))
        elif t == "Gather":
            src = n.input(0).source
            if consts.is_const(src) and src.element_type.is_real and len(src.partial_shape) == 2 and \
                    not consts.is_const(n.input(1).source):
                found.append(_Target(n, 0, src, 1, "embedding"))
        elif t in ("Convolution", "GroupConvolution"):
            src = n.input(1).source
            if consts.is_const(src) and src.element_type.is_real:
                found.append(_Target(n, 1, src, -1, "conv"))
    return found


def _last_matmul(model: Model, matmuls: list[_Target]) -> _Target | None:
    order = {id(n): i for i, n in enumerate(model.get_ordered_ops())}
    return max(matmuls, key=lambda t: order[id(t.node)], default=None)


def _mixed_precision(targets: list[_Target], consts: Constants, mode: CompressWeightsMode,
                     backup: CompressWeightsMode, group_size: int, ratio: float, modes: dict[int, Any],
                     metric: SensitivityMetric = SensitivityMetric.WEIGHT_QUANTIZATION_ERROR,
                     stats: dict[int, Any] | None = None) -> None:
    """NNCF's rule: layers go to INT4 in ascending score order while the INT4 share of all
    weights stays under ``ratio``. Scores: 1 / (INT8 error: the largest per-channel mean squared
    error), times the activation statistic for the variance and magnitude metrics; the INT8
    error's Frobenius norm times the Hessian trace estimate for HESSIAN_INPUT_ACTIVATION;
    embeddings score 0 with data-aware metrics (INT4 first)."""
    if ratio >= 1 or not targets:
        return
    from ember.quantize.weights_data import activation_score

    scores = []
    for t in targets:
        if metric != SensitivityMetric.WEIGHT_QUANTIZATION_ERROR and t.kind == "embedding":
            scores.append(0.0)
            continue
        w = consts.value(t.source).astype(np.float32)
        q, scale, zp, _ = quantize_weight(w, t.reduction_axis, backup, -1)
        diff = _dequantize(q, scale, zp).reshape(w.shape) - w
        if metric == SensitivityMetric.HESSIAN_INPUT_ACTIVATION:
            score = float(np.sqrt(np.sum(diff.astype(np.float64) ** 2)))
        else:
            err = diff ** 2
            per_channel = err.reshape(w.shape[0], -1).mean(axis=1) if t.reduction_axis == -1 else \
                err.mean(axis=t.reduction_axis)
            score = 1.0 / (float(np.max(per_channel)) + float(np.finfo(np.float32).eps))
        if metric != SensitivityMetric.WEIGHT_QUANTIZATION_ERROR:
            assert stats is not None
            score *= activation_score(stats[id(t.node)], metric)
        scores.append(score)
    total = sum(t.size for t in targets)
    used = 0
    chosen: set[int] = set()
    for i in sorted(range(len(targets)), key=lambda k: scores[k]):
        t = targets[i]
        if (used + t.size) / total >= ratio:
            break
        used += t.size
        chosen.add(i)
    for i, t in enumerate(targets):
        if i not in chosen:
            modes[id(t.node)] = backup


def quantize_weight(w: np.ndarray, axis: int, mode: CompressWeightsMode, group_size: int,
                    precomputed: tuple[np.ndarray, np.ndarray | None] | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """(integer values, scale, zero point or None, grouped shape) with NNCF's formulas. ``axis``
    is the reduction axis (-1 for "every axis but the first", convolutions). ``precomputed``:
    (scale, zero point) already in the grouped layout (scale estimation's)."""
    bits = 4 if mode in (CompressWeightsMode.INT4_SYM, CompressWeightsMode.INT4_ASYM) else 8
    asym = mode in (CompressWeightsMode.INT8_ASYM, CompressWeightsMode.INT4_ASYM)
    if axis == -1:
        x = w.reshape(w.shape[0], -1)
        red: tuple[int, ...] = (1,)
        grouped = w.shape
    elif bits == 4 and group_size != -1:
        shape = list(w.shape)
        shape[axis:axis + 1] = [shape[axis] // group_size, group_size]
        x = w.reshape(shape)
        red = (axis + 1,)
        grouped = tuple(shape)
    else:
        x, red, grouped = w, (axis,), w.shape
    eps = np.finfo(np.float32).eps
    if precomputed is not None:
        scale, zp = precomputed
        top = 2**bits - 1 if asym else 2 ** (bits - 1) - 1
        q = x / scale + (zp if zp is not None else 0)
        q = np.clip(np.round(q), 0 if asym else -(2 ** (bits - 1)), top)
        return q.astype(np.uint8 if asym else np.int8), scale.astype(np.float32), \
            None if zp is None else zp.astype(np.uint8), grouped
    if asym:
        top = 2**bits - 1
        lo = np.minimum(x.min(axis=red, keepdims=True), 0)
        hi = np.maximum(x.max(axis=red, keepdims=True), 0)
        scale = (hi - lo) / np.float32(top)
        scale = np.where(np.abs(scale) < eps, eps, scale).astype(np.float32)
        zp = np.clip(-np.round(lo / scale), 0, top).astype(np.int32)
        q = np.clip(np.round(x / scale + zp), 0, top)
        return q.astype(np.uint8), scale, zp.astype(np.uint8), grouped
    factor = 2 ** (bits - 1)
    mn = np.abs(x.min(axis=red, keepdims=True))
    mx = x.max(axis=red, keepdims=True)
    scale = np.where(mn >= mx, mn, -mx) / np.float32(factor)
    scale = np.where(np.abs(scale) < eps, eps, scale).astype(np.float32)
    q = np.clip(np.round(x / scale), -factor, factor - 1)
    return q.astype(np.int8), scale, None, grouped


def _dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None) -> np.ndarray:
    x = q.astype(np.float32)
    if zp is not None:
        x = x - zp.astype(np.float32)
    return x * scale


_TYPES = {CompressWeightsMode.INT8_ASYM: Type.u8, CompressWeightsMode.INT8_SYM: Type.i8,
          CompressWeightsMode.INT4_ASYM: Type.u4, CompressWeightsMode.INT4_SYM: Type.i4}


def _compress(t: _Target, w: np.ndarray, mode: CompressWeightsMode, group_size: int,
              precomputed: tuple[np.ndarray, np.ndarray | None] | None = None) -> Node:
    """The decompression subgraph that replaces ``t``'s weight; ``precomputed``: (scale, zero
    point) shaped [out, groups, 1] for the weight seen as [out, in] (scale estimation)."""
    w = w.astype(np.float32)
    if precomputed is not None:
        precomputed = tuple(None if p is None else _params_layout(p, t, w.shape, group_size)  # type: ignore[assignment]
                            for p in precomputed)
    q, scale, zp, grouped = quantize_weight(w, t.reduction_axis, mode, group_size, precomputed)
    if t.reduction_axis == -1:
        shape = [w.shape[0]] + [1] * (w.ndim - 1)
        scale = scale.reshape(shape)
        zp = None if zp is None else zp.reshape(shape)
    base = t.source.node.friendly_name
    et = _TYPES[mode]
    qc = Constant(q.reshape(grouped), et, name=base)
    x = ops.convert(qc, Type.f16)
    x.rt_info["decompression"] = {"version": "0"}  # folding passes keep it: the weights stay compressed
    if zp is not None:
        zc = Constant(zp, et, name=f"{base}/zero_point")
        zconv = ops.convert(zc, Type.f16)
        zconv.rt_info["decompression"] = {"version": "0"}
        x = ops.subtract(x, zconv, name=f"{base}/zero_point/subtract")
    x = ops.multiply(x, Constant(scale.astype(np.float16), Type.f16, name=f"{base}/scale"),
                     name=f"{base}/fq_weights_{t.port}")
    if tuple(grouped) != tuple(w.shape):
        x = ops.reshape(x, np.array(w.shape, np.int64), False)
    return ops.convert(x, t.source.element_type, name=f"{base}/fq_weights_{t.port}/convert")


def _params_layout(p: np.ndarray, t: _Target, shape: tuple[int, ...], group_size: int) -> np.ndarray:
    """[out, groups, 1] parameters (of the [out, in] view) in the layout ``quantize_weight`` uses."""
    if group_size == -1:
        return p.reshape(shape[0], 1) if t.reduction_axis == 1 else p.reshape(1, shape[1])
    return p if t.reduction_axis == 1 else np.moveaxis(p, 0, -1)
