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
from ember.quantize.parameters import CompressWeightsMode, IgnoredScope, QuantizationError
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
                     all_layers: bool | None = None, dataset: Any = None, **unsupported: Any) -> Model:
    """Compress the weights of MatMul, embedding Gather and convolution layers (NNCF's defaults:
    INT8_ASYM per channel; INT4 modes: ``group_size=128``, ``ratio=1``). ``model`` as for
    ``quantize``; returns a new ember Model. ``dataset`` is accepted for NNCF compatibility; the
    data-aware options (AWQ, scale estimation, GPTQ) are not implemented and are refused."""
    bad = {k: v for k, v in unsupported.items() if v not in (None, False)}
    if bad:
        raise QuantizationError(f"ember: compress_weights option(s) not supported: {', '.join(sorted(bad))}")
    if mode == CompressWeightsMode.INT8:
        mode = CompressWeightsMode.INT8_ASYM
    int4 = mode in (CompressWeightsMode.INT4_SYM, CompressWeightsMode.INT4_ASYM)
    if not int4 and (ratio not in (None, 1) or group_size not in (None, -1)):
        raise QuantizationError(f"ember: ratio and group_size apply to INT4 modes only, not {mode.name}")
    ratio = 1.0 if ratio is None else float(ratio)
    group_size = (128 if int4 else -1) if group_size is None else int(group_size)
    if not 0 <= ratio <= 1:
        raise QuantizationError(f"ember: ratio must be in [0, 1], got {ratio}")
    if int4 and group_size not in (-1,) and group_size <= 0:
        raise QuantizationError(f"ember: group_size must be positive or -1, got {group_size}")

    out = load_model(model)
    ignored = ignored_nodes(out, ignored_scope)
    consts = Constants()
    targets = _targets(out, consts, ignored)
    if not targets:
        raise QuantizationError("ember: the model has no weights to compress (no MatMul, embedding Gather or "
                                "convolution with a constant float weight)")
    modes = {id(t.node): mode for t in targets}
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
        _mixed_precision(fits, consts, mode, backup, group_size, ratio, modes)
    done: dict[Output, Output] = {}
    for t in targets:
        if t.source not in done:
            done[t.source] = _compress(t, consts.value(t.source), modes[id(t.node)], group_size).output(0)
        t.node.set_argument(t.port, done[t.source])
    out.validate_nodes_and_infer_types()
    counts: dict[str, int] = {}
    for m in modes.values():
        counts[m.name] = counts.get(m.name, 0) + 1
    log.info("ember: compressed %d weights of '%s': %s", len(targets), out.friendly_name, counts)
    return out


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
                     backup: CompressWeightsMode, group_size: int, ratio: float, modes: dict[int, Any]) -> None:
    """NNCF's data-free rule: a layer's score is 1 / (its INT8 error: the largest per-channel mean
    squared error); layers go to INT4 in ascending score order while the INT4 share of all
    weights stays under ``ratio``."""
    if ratio >= 1 or not targets:
        return
    scores = []
    for t in targets:
        w = consts.value(t.source).astype(np.float32)
        q, scale, zp, _ = quantize_weight(w, t.reduction_axis, backup, -1)
        err = (_dequantize(q, scale, zp).reshape(w.shape) - w) ** 2
        per_channel = err.reshape(w.shape[0], -1).mean(axis=1) if t.reduction_axis == -1 else \
            err.mean(axis=t.reduction_axis)
        scores.append(1.0 / (float(np.max(per_channel)) + float(np.finfo(np.float32).eps)))
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


def quantize_weight(w: np.ndarray, axis: int, mode: CompressWeightsMode, group_size: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """(integer values, scale, zero point or None, grouped shape) with NNCF's formulas. ``axis``
    is the reduction axis (-1 for "every axis but the first", convolutions)."""
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


def _compress(t: _Target, w: np.ndarray, mode: CompressWeightsMode, group_size: int) -> Node:
    """The decompression subgraph that replaces ``t``'s weight."""
    w = w.astype(np.float32)
    q, scale, zp, grouped = quantize_weight(w, t.reduction_axis, mode, group_size)
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
