"""SmoothQuant (NNCF's, for TRANSFORMER models): move activation outliers into the weights.

For the MatMuls with a constant weight that read the same tensor, a per-input-channel scale
``s = act_absmax^alpha / weight_absmax^(1 - alpha)`` (clipped to [10% quantile, 100]; of the
group's candidates the flattest one wins) multiplies the weights, and a
``Multiply(x, 1/s)`` named ``<source>_<port>_0/nncf_smooth_quant`` goes in front of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import ember.opset as ops
from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.node import Input, Node, Output
from ember.quantize.dataset import samples
from ember.quantize.graph_utils import Constants
from ember.quantize.progress import track
from ember.quantize.statistics import Collector


def _channel_axes(node: Node, act_port: int) -> tuple[int, int]:
    """(activation channel axis, weight channel axis): the contracted axis of each MatMul input."""
    if act_port == 0:
        act = -2 if node.attrs["transpose_a"] else -1
        wt = -1 if node.attrs["transpose_b"] else -2
    else:
        act = -1 if node.attrs["transpose_b"] else -2
        wt = -2 if node.attrs["transpose_a"] else -1
    return act, wt


def smooth_quant(model: Model, dataset: Any, subset_size: int, alpha: float, ignored: set[int],
                 show_progress: bool = True) -> int:
    """Apply SmoothQuant in place; returns the number of smoothed groups."""
    consts = Constants()
    groups: dict[tuple[Output, int], list[tuple[Node, int]]] = {}
    for n in model.get_ordered_ops():
        if n.type_name != "MatMul" or id(n) in ignored:
            continue
        const_ports = [p for p in (0, 1) if consts.is_const(n.input(p).source)]
        if len(const_ports) != 1:
            continue
        wport = const_ports[0]
        act_port = 1 - wport
        weight = n.input(wport).source
        if len(weight.targets) > 1 or not weight.element_type.is_real or len(weight.partial_shape) < 2:
            continue  # shared weights are skipped, as NNCF does
        src = n.input(act_port).source
        if not src.partial_shape.rank.is_static:
            continue
        groups.setdefault((src, _channel_axes(n, act_port)[0] % len(src.partial_shape)), []).append((n, act_port))
    if not groups:
        return 0
    collector = Collector(model)
    for src, axis in groups:
        collector.observe(src, axis, means=False)
    collector.run(samples(dataset, subset_size), None, show_progress)

    done = 0
    for (src, axis), members in track(list(groups.items()), "Applying Smooth Quant", len(groups), show_progress):
        st = collector.stats[src]
        if st.ch_absmax is None:
            continue
        act = np.maximum(st.ch_absmax.astype(np.float32), 1e-5)
        best, best_ratio = None, 0.0
        for n, act_port in members:
            w = consts.value(n.input(1 - act_port).source).astype(np.float32)
            w_axis = _channel_axes(n, act_port)[1] % w.ndim
            w_stat = np.maximum(np.abs(w).max(axis=tuple(a for a in range(w.ndim) if a != w_axis)), 1e-5)
            eps = np.finfo(np.float32).eps
            scales = np.power(act, alpha) / (np.power(w_stat, 1 - alpha) + eps)
            scales = np.clip(scales, np.quantile(scales, 0.1), 1e2).astype(np.float32)
            ratio = float(scales.min() / (scales.max() + eps))
            if ratio > best_ratio:
                best, best_ratio = scales, ratio
        if best is None:
            continue
        for n, act_port in members:
            wport = 1 - act_port
            w = consts.value(n.input(wport).source).astype(np.float32)
            view = [1] * w.ndim
            view[_channel_axes(n, act_port)[1] % w.ndim] = -1
            dtype = n.input(wport).source.element_type
            n.set_argument(wport, Constant((w * best.reshape(view)).astype(dtype.dtype),
                                           name=n.input(wport).source.node.friendly_name).output(0))
        rank = len(src.partial_shape)
        view = [1] * rank
        view[axis] = -1
        scale = Constant((1.0 / best).reshape(view).astype(src.element_type.dtype))
        mul = ops.multiply(src, scale, name=f"{src.node.friendly_name}_{src.index}_0/nncf_smooth_quant")
        for n, act_port in members:
            Input(n, act_port).replace_source_output(mul.output(0))
        done += 1
    model.validate_nodes_and_infer_types()
    return done
