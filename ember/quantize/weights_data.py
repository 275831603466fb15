"""The data-aware half of ``compress_weights`` (NNCF's, with a ``dataset``): statistics of the
MatMul inputs on the calibration data, the data-aware mixed-precision criteria, AWQ and scale
estimation. Weights are numpy arrays in and out; ``weights.py`` writes the graph."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

import ember.opset as ops
from ember.graph.core_ops import Constant, Result
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.quantize.dataset import samples
from ember.quantize.parameters import (
    AdvancedAWQParameters,
    AdvancedScaleEstimationParameters,
    CompressWeightsMode,
    QuantizationError,
    SensitivityMetric,
)
from ember.quantize.progress import track
from ember.quantize.statistics import compile_for_statistics, infer

if TYPE_CHECKING:
    from ember.quantize.weights import _Target

log = logging.getLogger("ember.quantize")
EPS = float(np.finfo(np.float32).eps)
FP16_LIMIT = 0.25 * 65504.0  # AWQ keeps a merged MatMul's outputs this far inside f16
#: elementwise activations AWQ can put its inverse scale after (NNCF's "atomic activations")
ACTIVATIONS = {"ReLU", "Clamp", "Elu", "PRelu", "Sigmoid", "HSigmoid", "HardSigmoid", "Swish", "HSwish", "Selu"}


@dataclass
class ActivationStats:
    """One MatMul input seen on each calibration sample: the mean over every axis but the
    channel axis, the number of elements averaged, and the mixed-precision statistic."""

    channel_axis: int
    means: list[np.ndarray] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    sensitivity: list[float] = field(default_factory=list)

    def copy(self) -> ActivationStats:
        return ActivationStats(self.channel_axis, [m.copy() for m in self.means], list(self.sizes),
                               list(self.sensitivity))


def activation_port(t: _Target) -> tuple[Output, int]:
    """The activation input of a weighted MatMul and its channel axis."""
    return t.node.input(0).source, (-2 if t.node.attrs["transpose_a"] else -1)


def collect(model: Model, targets: list[_Target], dataset: Any, subset_size: int,
            metric: SensitivityMetric | None, show_progress: bool = True) -> dict[int, ActivationStats]:
    """Run the float model on the first ``subset_size`` items and reduce each MatMul input per
    sample (``metric``: also the mixed-precision statistic). Keyed by ``id(matmul node)``.

    As NNCF's in-place statistics, the reductions are added to the graph (a per-channel mean,
    the shape, the statistic), so each sample returns a few numbers per MatMul input instead of
    whole activations; an input of unknown rank comes back whole and is reduced in numpy."""
    ports: dict[Output, int] = {}
    for t in targets:
        port, axis = activation_port(t)
        if port.partial_shape.rank.is_static and len(port.partial_shape) < 2 and \
                metric not in (None, SensitivityMetric.WEIGHT_QUANTIZATION_ERROR):
            raise QuantizationError(f"ember: data-aware mixed precision needs MatMul inputs of rank 2 or more; "
                                    f"'{t.node.friendly_name}' reads a {port.partial_shape} input")
        ports.setdefault(port, axis)
    order = list(ports)
    readers = {p: {id(t) for t in p.targets} for p in order}
    layout: list[tuple[Output, int, int]] = []  # port, first extra output, how many (0: the raw tensor)
    extra_ports: list[Output] = []
    for p in order:
        red = _reductions(p, ports[p], metric)
        layout.append((p, len(extra_ports), 0 if red is None else len(red)))
        extra_ports += red if red is not None else [p]
    extra = [Result([p]) for p in extra_ports]
    model.add_results(extra)
    try:
        compiled = compile_for_statistics(model)
    finally:
        for r in extra:
            model.remove_result(r)
            r.input(0).source.remove_target_input(r.input(0))
        for p in order:  # detach the reductions: the model is left as it came
            for t in list(p.targets):
                if id(t) not in readers[p]:
                    p.remove_target_input(t)
    base = len(compiled.outputs) - len(extra)
    request = compiled.create_infer_request()
    stats = {p: ActivationStats(ports[p]) for p in order}
    length = dataset.get_length() if hasattr(dataset, "get_length") else None
    total = subset_size if length is None else min(subset_size, length)
    for item in track(samples(dataset, subset_size), "Statistics collection", total, show_progress):
        outputs = infer(request, item, model)
        for p, first, count in layout:
            if count == 0:
                _update(stats[p], np.asarray(outputs[base + first], np.float32), metric)
                continue
            mean, shape = outputs[base + first], outputs[base + first + 1]
            st = stats[p]
            st.means.append(np.asarray(mean, np.float32).reshape(-1))
            shape = [int(d) for d in np.asarray(shape).reshape(-1)]
            st.sizes.append(int(np.prod(shape)) // max(shape[st.channel_axis], 1))
            if count > 2:
                st.sensitivity.append(float(np.asarray(outputs[base + first + 2])))
    return {id(t.node): stats[activation_port(t)[0]].copy() for t in targets}


def _reductions(port: Output, channel_axis: int, metric: SensitivityMetric | None) -> list[Output] | None:
    """[per-channel mean, shape (, the mixed-precision statistic)] computed in the graph, or
    None when the rank is unknown (the tensor is then reduced in numpy, ``_update``)."""
    shape = port.partial_shape
    if not shape.rank.is_static or len(shape) < 1 or not port.element_type.is_real:
        return None
    rank = len(shape)
    axis = channel_axis % rank
    other = np.array([a for a in range(rank) if a != axis], np.int64)
    everything = np.arange(rank, dtype=np.int64)
    mean = ops.reduce_mean(port, other, False) if len(other) else port
    outs = [mean.output(0) if isinstance(mean, Node) else mean, ops.shape_of(port).output(0)]
    if metric in (None, SensitivityMetric.WEIGHT_QUANTIZATION_ERROR):
        return outs
    seq = np.array([rank - 2], np.int64)
    if metric == SensitivityMetric.HESSIAN_INPUT_ACTIVATION:  # sum(x * x) / size
        stat = ops.reduce_mean(ops.multiply(port, port), everything, False)
    elif metric == SensitivityMetric.MEAN_ACTIVATION_MAGNITUDE:
        stat = ops.reduce_mean(ops.reduce_max(ops.absolute(port), seq, True), everything, False)
    else:
        var = ops.reduce_mean(ops.squared_difference(port, ops.reduce_mean(port, seq, True)), seq, True)
        reduce = ops.reduce_mean if metric == SensitivityMetric.MEAN_ACTIVATION_VARIANCE else ops.reduce_max
        stat = reduce(var, everything, False)
    return outs + [stat.output(0)]


def _update(st: ActivationStats, x: np.ndarray, metric: SensitivityMetric | None) -> None:
    if x.ndim < 2 and metric not in (None, SensitivityMetric.WEIGHT_QUANTIZATION_ERROR):
        raise QuantizationError(f"ember: data-aware mixed precision needs MatMul inputs of rank 2 or more, "
                                f"got one of shape {list(x.shape)}")
    axis = st.channel_axis % x.ndim
    other = tuple(a for a in range(x.ndim) if a != axis)
    st.means.append(x.mean(axis=other))
    st.sizes.append(int(x.size // x.shape[axis]))
    if metric in (None, SensitivityMetric.WEIGHT_QUANTIZATION_ERROR):
        return
    if metric == SensitivityMetric.HESSIAN_INPUT_ACTIVATION:
        st.sensitivity.append(float(np.sum(x * x)) / x.size)
    elif metric == SensitivityMetric.MEAN_ACTIVATION_MAGNITUDE:  # along the sequence axis (-2), as NNCF
        st.sensitivity.append(float(np.abs(x).max(axis=-2).mean()))
    else:
        var = x.var(axis=-2)
        st.sensitivity.append(float(var.mean() if metric == SensitivityMetric.MEAN_ACTIVATION_VARIANCE else var.max()))


def activation_score(st: ActivationStats, metric: SensitivityMetric) -> float:
    """The mean over samples of the per-sample statistic (twice that for the Hessian trace)."""
    mean = float(np.mean(st.sensitivity))
    return 2.0 * mean if metric == SensitivityMetric.HESSIAN_INPUT_ACTIVATION else mean


def process_stats(st: ActivationStats, subset_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(s, X): the largest magnitude of each channel over all samples, and the per-sample channel
    means [channels, samples] of at most about ``subset_size`` samples, longest first."""
    full = np.stack(st.means, axis=-1).astype(np.float32)
    x = full
    if full.shape[-1] > subset_size > 0:
        step = full.shape[-1] // subset_size
        idxs = sorted(range(len(st.sizes)), key=lambda i: -st.sizes[i])[::step]
        x = full[..., idxs]
    return np.abs(full).max(axis=-1), x


# -- quantize-dequantize helpers on [rows, ..., reduced] layouts ------------------------------------

def _is_asym(mode: CompressWeightsMode) -> bool:
    return mode in (CompressWeightsMode.INT8_ASYM, CompressWeightsMode.INT4_ASYM)


def _bits(mode: CompressWeightsMode) -> int:
    return 4 if mode in (CompressWeightsMode.INT4_SYM, CompressWeightsMode.INT4_ASYM) else 8


def params_last_axis(w: np.ndarray, mode: CompressWeightsMode) -> tuple[np.ndarray, np.ndarray | None]:
    """Scale (and zero point, asymmetric) over the last axis, NNCF's min/max formulas."""
    bits = _bits(mode)
    if _is_asym(mode):
        top = 2**bits - 1
        lo = np.minimum(w.min(axis=-1, keepdims=True), 0)
        hi = np.maximum(w.max(axis=-1, keepdims=True), 0)
        scale = ((hi - lo) / np.float32(top)).astype(np.float32)
        scale = np.where(np.abs(scale) < EPS, EPS, scale).astype(np.float32)
        zp = np.clip(-np.round(lo / scale), 0, top).astype(np.float32)
        return scale, zp
    factor = 2 ** (bits - 1)
    mn = np.abs(w.min(axis=-1, keepdims=True))
    mx = w.max(axis=-1, keepdims=True)
    scale = (np.where(mn >= mx, mn, -mx) / np.float32(factor)).astype(np.float32)
    return np.where(np.abs(scale) < EPS, EPS, scale).astype(np.float32), None


def integers(w: np.ndarray, mode: CompressWeightsMode, scale: np.ndarray, zp: np.ndarray | None) -> np.ndarray:
    bits = _bits(mode)
    q = w / scale
    if zp is not None:
        q = q + zp
        return np.clip(np.round(q), 0, 2**bits - 1)
    return np.clip(np.round(q), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def qdq(w: np.ndarray, mode: CompressWeightsMode, scale: np.ndarray | None = None,
        zp: np.ndarray | None = None) -> np.ndarray:
    """Quantize then dequantize along the last axis (min/max parameters unless given)."""
    if scale is None:
        scale, zp = params_last_axis(w, mode)
    q = integers(w, mode, scale, zp)
    return ((q - zp) if zp is not None else q).astype(np.float32) * scale


def _grouped(w: np.ndarray, group_size: int) -> np.ndarray:
    """[out, in] -> [out, in / group, group]."""
    return w.reshape(w.shape[0], w.shape[1] // group_size, group_size)


# -- AWQ ----------------------------------------------------------------------------------------

@dataclass
class AWQMatch:
    target: _Target
    merge: Node  # the node the inverse scale goes after (or into, when it is a weighted MatMul)
    merge_target: _Target | None  # set when the scale merges into that MatMul's weight
    reader: Node  # the node on the path that reads ``merge``: the Multiply goes on that edge only


def awq_matches(targets: list[_Target], modes: dict[int, CompressWeightsMode]) -> list[AWQMatch]:
    """NNCF's AWQ patterns ending at an INT4 MatMul, first match wins in NNCF's order:
    MatMul -> Multiply -> MatMul, activation -> Multiply -> MatMul, activation -> MatMul.

    Unlike NNCF, which multiplies the pattern's first output for all its consumers, the inverse
    scale goes on the pattern's own edge, a Multiply feeding other layers too is skipped, and a
    MatMul output read elsewhere is not merged into: forks keep their other branches exact."""
    by_node = {id(t.node): t for t in targets}
    found: list[AWQMatch] = []
    for t in targets:
        if t.kind != "matmul" or _bits(modes[id(t.node)]) != 4 or t.port != 1:
            continue
        producer = t.node.input(0).source.node
        merge = None
        reader = t.node
        if producer.type_name == "Multiply":
            feeds = [o.node for o in producer.input_values()]
            merge = next((n for n in feeds if n.type_name == "MatMul"), None) or \
                next((n for n in feeds if n.type_name in ACTIVATIONS), None)
            reader = producer
            if merge is not None and len(producer.output(0).targets) > 1:
                log.info("ember: AWQ skips '%s': its input Multiply feeds other layers too", t.node.friendly_name)
                continue
        elif producer.type_name in ACTIVATIONS:
            merge = producer
        if merge is None:
            continue
        prev = by_node.get(id(merge))
        mergeable = prev is not None and len(prev.source.partial_shape) == len(t.source.partial_shape) and \
            len(merge.output(0).targets) == 1
        found.append(AWQMatch(t, merge, prev if mergeable else None, reader))
    return found


def awq_scale(w: np.ndarray, st: ActivationStats | None, mode: CompressWeightsMode, group_size: int,
              params: AdvancedAWQParameters, prev_w: np.ndarray | None = None,
              prev_st: ActivationStats | None = None) -> np.ndarray:
    """The per-input-channel scale AWQ multiplies into a weight ``w`` laid out [out, in] (its
    inverse goes on the activations). Data-free without statistics: 1 / mean |w| per channel."""
    if st is None or not params.prefer_data_aware_scaling:
        return (1.0 / np.maximum(np.abs(w).mean(axis=0), EPS)).astype(np.float32)
    s, x = process_stats(st, params.subset_size)
    prev_s = prev_mag = None
    if prev_w is not None and prev_st is not None:
        prev_s = float(process_stats(prev_st, params.subset_size)[0].max())
        prev_mag = np.abs(prev_w).mean(axis=1)  # prev_w laid out [out = this layer's in, in]
        prev_len = prev_w.shape[1]
    k = max(int(s.shape[-1] * params.percent_to_apply), 1)
    top = np.argsort(-s, kind="stable")[:k]
    gs = s.shape[-1] if group_size == -1 else group_size
    groups = sorted({int(i) // gs for i in top})
    scale = np.ones_like(x.mean(axis=-1))
    step = (params.alpha_max - params.alpha_min) / params.steps
    for g in groups:
        lo = g * gs
        gscale = s[lo:lo + gs]
        gscale = np.clip(gscale, np.float32(np.quantile(gscale, 0.1)), 1e2)
        gw, ga = w[:, lo:lo + gs], x[lo:lo + gs]
        ref = gw @ ga
        best_diff, best = float(np.max(np.abs(ref))), None
        alpha = params.alpha_min
        for _ in range(params.steps):
            cur = gscale ** alpha
            if prev_s is not None:
                base = prev_mag[lo:lo + gs] * prev_s * prev_len
                mags = base / cur
                if mags.max() >= FP16_LIMIT:
                    cur = np.where(mags < FP16_LIMIT, cur, base / FP16_LIMIT)
            out = qdq(gw * cur, mode) @ (ga / cur[:, None])
            diff = float(np.mean(np.abs(out - ref)))
            if diff < best_diff:
                best_diff, best = diff, cur
            alpha += step
        if best is not None:
            scale[lo:lo + gs] = best
    return scale.astype(np.float32)


def apply_awq(model: Model, matches: list[AWQMatch], values: dict[Output, np.ndarray],
              stats: dict[int, ActivationStats] | None, mode_of: dict[int, CompressWeightsMode], group_size: int,
              params: AdvancedAWQParameters, layout: Any, show_progress: bool = True) -> None:
    """Scale each matched weight's input channels (``values`` holds the new weights, as laid out
    in the graph) and put the inverse on the activations: into the previous MatMul's weight
    when the pattern starts with one, else as a Multiply after the pattern's first node."""
    names: set[str] = set()
    for m in track(matches, "Applying AWQ", len(matches), show_progress):
        t = m.target
        w = layout.to_out_in(values[t.source], t)
        st = None if stats is None else stats.get(id(t.node))
        prev_w = prev_st = None
        if m.merge_target is not None and st is not None:
            prev_w = layout.to_out_in(values[m.merge_target.source], m.merge_target)
            prev_st = stats.get(id(m.merge_target.node)) if stats is not None else None
        scale = awq_scale(w, st, mode_of[id(t.node)], group_size, params, prev_w, prev_st)
        values[t.source] = layout.from_out_in(w * scale[None, :], t)
        inv = (1.0 / scale).astype(np.float32)
        if m.merge_target is not None:
            pw = layout.to_out_in(values[m.merge_target.source], m.merge_target)
            values[m.merge_target.source] = layout.from_out_in(pw * inv[:, None], m.merge_target)
        else:
            port, axis = activation_port(t)
            rank = len(port.partial_shape)
            shape = [1] * rank
            shape[axis % rank] = inv.shape[0]
            out = m.merge.output(0)
            edges = [c for c in out.targets if c.node is m.reader]
            name = f"{m.merge.friendly_name}/awq_mul"
            if name in names:  # a second branch of the same fork
                name = f"{name}_{t.node.friendly_name}"
            names.add(name)
            mul = ops.multiply(out, Constant(inv.reshape(shape), name=f"{name}/scale"), name=name)
            for c in edges:
                c.node.set_argument(c.index, mul.output(0))
        if st is not None:
            for mean in st.means:
                mean *= inv
    model.validate_nodes_and_infer_types()


# -- scale estimation ------------------------------------------------------------------------------

def estimate_scale(w: np.ndarray, st: ActivationStats, mode: CompressWeightsMode, group_size: int,
                   params: AdvancedScaleEstimationParameters) -> tuple[np.ndarray, np.ndarray | None]:
    """NNCF's scale estimation for a weight laid out [out, in]: scales per [out, group] that
    make the layer's outputs on the calibration activations closest to the float ones. Returns
    (scale, zero point) shaped [out, groups, 1] (zero point as from min/max, asymmetric)."""
    _, x = process_stats(st, params.subset_size)
    x = x.astype(np.float32)
    w = w.astype(np.float32)
    gs = w.shape[1] if group_size == -1 else group_size
    wg = _grouped(w, gs)  # [out, g, gs]
    scale, zp = params_last_axis(wg, mode)
    q = integers(wg, mode, scale, zp)
    deq = ((q - zp) if zp is not None else q).astype(np.float32) * scale
    s = _grouped(process_stats(st, params.subset_size)[0][None, :], gs)  # [1, g, gs]
    target = q - zp if zp is not None else q
    zero = np.isclose(target, 0)
    importance = np.where(zero, 0.0, np.ones_like(wg) * s)
    importance = importance / (importance.sum(axis=-1, keepdims=True) + EPS)
    xg = x.reshape(x.shape[0] // gs, gs, x.shape[1])  # [g, gs, n]
    ref = np.matmul(np.moveaxis(wg, -2, -3), xg)  # [g, out, n]

    def error(dq: np.ndarray) -> np.ndarray:
        d = np.mean((ref - np.matmul(np.moveaxis(dq, -2, -3), xg)) ** 2, axis=-1).T  # [out, g]
        if params.weight_penalty > 0:
            d = d + params.weight_penalty * np.mean((dq - wg) ** 2, axis=-1)
        return d

    def fitted(tgt: np.ndarray, zmask: np.ndarray) -> np.ndarray:
        ideal = np.abs(wg) / (np.abs(tgt) + zmask)
        return (ideal * importance).sum(axis=-1, keepdims=True) * sign

    def deq_with(sc: np.ndarray) -> np.ndarray:
        qq = integers(wg, mode, sc, zp)
        return ((qq - zp) if zp is not None else qq).astype(np.float32) * sc

    def targets_of(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        qq = integers(wg, mode, sc, zp)
        tg = qq - zp if zp is not None else qq
        return tg, 0.001 * np.isclose(tg, 0).astype(np.float32)

    best = error(deq)
    result = scale.copy()
    sign = scale / np.abs(scale)
    zmask = 0.001 * zero.astype(np.float32)

    def keep_better(candidate: np.ndarray) -> None:
        nonlocal best, result
        d = error(deq_with(candidate))
        worse = d > best
        best = np.where(worse, best, d)
        result = np.where(worse[..., None], result, candidate)

    for i in range(params.initial_steps):
        keep_better(fitted(target, zmask))
        if i < params.initial_steps - 1:
            target, zmask = targets_of(result)
    for k in range(params.scale_steps):
        tg, zm = targets_of((1.0 - 0.05 * k) * scale)
        keep_better(fitted(tg, zm))
    return result.astype(np.float32), zp
