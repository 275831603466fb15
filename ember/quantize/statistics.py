"""Statistics of activations, collected by running the float model on the calibration set.

The model runs on the CPU device with every observed port added as an extra output; each
sample is reduced to a few numbers right away (per-sample min/max/abs-max, per-channel
min/max/mean), so memory stays bounded however many samples there are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.errors import EmberError
from ember.graph.core_ops import Result
from ember.graph.model import Model
from ember.graph.node import Output
from ember.quantize.histogram import Histogram
from ember.quantize.parameters import QuantizationError
from ember.quantize.progress import track

log = logging.getLogger("ember.quantize")


@dataclass
class TensorStats:
    """What was seen on one port: means over samples of per-sample min / max / abs-max, and
    per-channel min / max / abs-max / mean along ``axis`` when asked for."""

    axis: int | None = None
    count: int = 0
    sum_min: float = 0.0
    sum_max: float = 0.0
    sum_absmax: float = 0.0
    ch_min: np.ndarray | None = None
    ch_max: np.ndarray | None = None
    ch_absmax: np.ndarray | None = None
    ch_sum_mean: np.ndarray | None = None
    shape: tuple[int, ...] = ()
    #: each batch item is a sample (NNCF's batchwise_statistics); else each dataset item is
    batchwise: bool = False
    #: q of the per-sample [q, 1 - q] quantiles to measure too (QUANTILE range estimators)
    quantile: float | None = None
    #: per sample: min, max, abs-max, then (with ``quantile``) the q and 1 - q quantiles and the
    #: q and 1 - q quantiles of the absolute values, for the range estimators' aggregators
    per_sample: list[np.ndarray] = field(default_factory=list)
    #: every value seen, for the HISTOGRAM range estimator
    histogram: Histogram | None = None

    def sample_values(self, column: int) -> np.ndarray:
        """One per-sample measurement (a column of ``per_sample``) over all samples seen."""
        return np.concatenate([v[:, column] for v in self.per_sample]) if self.per_sample else np.zeros(0)

    @property
    def mean_min(self) -> float:
        return self.sum_min / self.count

    @property
    def mean_max(self) -> float:
        return self.sum_max / self.count

    @property
    def mean_absmax(self) -> float:
        return self.sum_absmax / self.count

    @property
    def channel_mean(self) -> np.ndarray:
        assert self.ch_sum_mean is not None
        return self.ch_sum_mean / self.count

    def update_reduced(self, mn: np.ndarray, mx: np.ndarray, cmin: np.ndarray | None = None,
                       cmax: np.ndarray | None = None, cmean: np.ndarray | None = None,
                       shape: np.ndarray | None = None) -> None:
        """Fold in one sample's reductions computed in the graph (see ``Collector``)."""
        mn = np.asarray(mn, np.float32).reshape(-1)
        mx = np.asarray(mx, np.float32).reshape(-1)
        self.count += mn.shape[0]
        self.sum_min += float(mn.sum())
        self.sum_max += float(mx.sum())
        self.sum_absmax += float(np.maximum(-mn, mx).sum())
        self.per_sample.append(np.stack([mn, mx, np.maximum(-mn, mx)], axis=1).astype(np.float64))
        if cmin is None or self.axis is None:
            return
        assert cmax is not None and cmean is not None and shape is not None
        self.shape = tuple(int(d) for d in shape)
        axis = self.axis % len(self.shape)
        cmin = np.asarray(cmin, np.float32).reshape(-1)
        cmax = np.asarray(cmax, np.float32).reshape(-1)
        cm = np.asarray(cmean, np.float32)
        if axis == 0:
            cmean_sum = cm.reshape(-1) * mn.shape[0]
        else:
            per_item = np.moveaxis(cm, axis, -1).reshape(cm.shape[0], -1)  # [batch, channels]
            cmean_sum = per_item.sum(axis=0) if self.batchwise else per_item.mean(axis=0)
        cabs = np.maximum(-cmin, cmax)
        if self.ch_min is None:
            self.ch_min, self.ch_max, self.ch_absmax, self.ch_sum_mean = cmin, cmax, cabs, cmean_sum
        else:
            assert self.ch_max is not None and self.ch_absmax is not None and self.ch_sum_mean is not None
            self.ch_min = np.minimum(self.ch_min, cmin)
            self.ch_max = np.maximum(self.ch_max, cmax)
            self.ch_absmax = np.maximum(self.ch_absmax, cabs)
            self.ch_sum_mean = self.ch_sum_mean + cmean_sum

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            return
        self.shape = x.shape
        if self.histogram is not None:
            self.histogram.add(x)
        items = x.reshape(x.shape[0], -1) if x.ndim > 1 and self.batchwise else x.reshape(1, -1)
        self.count += items.shape[0]
        mn, mx = items.min(axis=1), items.max(axis=1)
        self.sum_min += float(mn.sum())
        self.sum_max += float(mx.sum())
        self.sum_absmax += float(np.maximum(-mn, mx).sum())
        rows = [mn, mx, np.maximum(-mn, mx)]
        if self.quantile is not None:
            q = [self.quantile, 1.0 - self.quantile]
            rows += list(np.quantile(items, q, axis=1)) + list(np.quantile(np.abs(items), q, axis=1))
        self.per_sample.append(np.stack(rows, axis=1).astype(np.float64))
        if self.axis is not None:
            axis = self.axis % x.ndim
            other = tuple(a for a in range(x.ndim) if a != axis)
            cmin, cmax = x.min(axis=other), x.max(axis=other)
            if axis == 0:
                cmean = x.mean(axis=other) * items.shape[0]
            else:  # per sample, mean over everything but the channel axis, summed over samples
                moved = np.moveaxis(x, axis, -1).reshape(items.shape[0], -1, x.shape[axis])
                cmean = moved.mean(axis=1).sum(axis=0)
            cabs = np.maximum(-cmin, cmax)
            if self.ch_min is None:
                self.ch_min, self.ch_max, self.ch_absmax, self.ch_sum_mean = cmin, cmax, cabs, cmean
            else:
                assert self.ch_max is not None and self.ch_absmax is not None and self.ch_sum_mean is not None
                self.ch_min = np.minimum(self.ch_min, cmin)
                self.ch_max = np.maximum(self.ch_max, cmax)
                self.ch_absmax = np.maximum(self.ch_absmax, cabs)
                self.ch_sum_mean = self.ch_sum_mean + cmean


class Collector:
    """Ports to observe, then one pass over the data that fills a ``TensorStats`` per port.

    As NNCF's in-place statistics, the reductions (min, max, per-channel min/max/mean) are added
    to the graph, so the run returns a few numbers per port instead of whole activations: the
    device keeps its memory plan and the statistics pass needs little more memory than one
    inference. Ports of unknown rank are returned whole and reduced in numpy.
    """

    def __init__(self, model: Model, batchwise: bool = False) -> None:
        self.model = model
        self.batchwise = batchwise
        self.stats: dict[Output, TensorStats] = {}

    def observe(self, out: Output, axis: int | None = None, quantile: float | None = None,
                histogram: bool = False) -> TensorStats:
        """Measure ``out`` (per channel along ``axis``; per-sample quantiles when ``quantile``; a
        histogram of all values when ``histogram``)."""
        st = self.stats.get(out)
        if st is None:
            st = self.stats[out] = TensorStats(axis=axis, batchwise=self.batchwise)
        if axis is not None and st.axis is None:
            st.axis = axis
        if quantile is not None:
            st.quantile = quantile
        if histogram and st.histogram is None:
            st.histogram = Histogram()
        return st

    def _reductions(self, port: Output, st: TensorStats) -> list[Output] | None:
        """[min, max] (per sample) + [ch_min, ch_max, ch_mean, shape] when per channel."""
        import ember.opset as ops

        shape = port.partial_shape
        if not shape.rank.is_static or len(shape) == 0 or not port.element_type.is_real or st.quantile is not None \
                or st.histogram is not None:
            return None  # returned whole (quantiles are computed in numpy)
        rank = len(shape)
        keep = [0] if self.batchwise and rank > 1 else []
        axes = np.array([a for a in range(rank) if a not in keep], np.int64)
        outs = [ops.reduce_min(port, axes, False).output(0), ops.reduce_max(port, axes, False).output(0)]
        if st.axis is not None:
            axis = st.axis % rank
            other = np.array([a for a in range(rank) if a != axis], np.int64)
            outs += [ops.reduce_min(port, other, False).output(0), ops.reduce_max(port, other, False).output(0)]
            mean_axes = np.array([a for a in range(rank) if a not in (0, axis)], np.int64)
            mean = ops.reduce_mean(port, mean_axes, True).output(0) if len(mean_axes) else port
            outs += [mean, ops.shape_of(port).output(0)]
        return outs

    def run(self, data: Iterable[Any], total: int | None, show_progress: bool = True) -> int:
        """Run the model on every item of ``data``; returns the number of items."""
        ports = list(self.stats)
        readers = {p: {id(t) for t in p.targets} for p in ports}
        layout: list[tuple[Output, int, int]] = []  # port, first extra output, how many (0: raw)
        extra_ports: list[Output] = []
        for p in ports:
            red = self._reductions(p, self.stats[p])
            layout.append((p, len(extra_ports), 0 if red is None else len(red)))
            extra_ports += red if red is not None else [p]
        extra = [Result([p]) for p in extra_ports]
        self.model.add_results(extra)
        try:
            compiled = compile_for_statistics(self.model)
        finally:
            for r in extra:
                self.model.remove_result(r)
                r.input(0).source.remove_target_input(r.input(0))
            for p in ports:  # detach the reductions: later passes see the model's own consumers only
                for t in list(p.targets):
                    if id(t) not in readers[p]:
                        p.remove_target_input(t)
        base = len(compiled.outputs) - len(extra)
        request = compiled.create_infer_request()
        n = 0
        for item in track(data, "Statistics collection", total, show_progress):
            outputs = infer(request, item, self.model)
            for p, first, count in layout:
                vals = outputs[base + first:base + first + max(count, 1)]
                if count == 0:
                    self.stats[p].update(vals[0])
                else:
                    self.stats[p].update_reduced(*vals)
            n += 1
        if n == 0:
            raise QuantizationError("ember: the calibration dataset is empty: it yielded no items")
        return n


def compile_for_statistics(model: Model) -> Any:
    """The model compiled on the CPU device; REFERENCE (logged) when the CPU device cannot
    compile it."""
    from ember.runtime import Core

    core = Core()
    try:
        return core.compile_model(model, "CPU")
    except Exception as e:  # noqa: BLE001 - any CPU failure: the reference device still gives exact statistics
        log.warning("ember: statistics run on REFERENCE: the CPU device failed to compile the model (%s: %s)",
                    type(e).__name__, e)
        return core.compile_model(model, "REFERENCE")


def infer(request: Any, item: Any, model: Model) -> list[np.ndarray]:
    """One inference; a ``transform_fn`` result that does not fit the model's inputs becomes a
    QuantizationError naming what the model expects."""
    if isinstance(item, tuple):
        item = list(item)
    try:
        res = request.infer(item)
    except (EmberError, KeyError, ValueError, TypeError, IndexError) as e:
        want = ", ".join(f"{sorted(p.names)[0] if p.names else p.node.friendly_name}: "
                         f"{p.element_type.name}{p.partial_shape}" for p in model.inputs)
        got = _describe(item)
        raise QuantizationError(f"ember: a calibration item does not fit the model's inputs ({e}); the model "
                                f"takes [{want}], transform_fn gave {got}") from None
    return [res[i] for i in range(len(res))]


def _describe(item: Any) -> str:
    if isinstance(item, np.ndarray):
        return f"an array {item.dtype}{list(item.shape)}"
    if isinstance(item, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in item.items()) + "}"
    if isinstance(item, (list, tuple)):
        return "[" + ", ".join(_describe(v) for v in item) + "]"
    return type(item).__name__
