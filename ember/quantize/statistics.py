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
from ember.graph.core_ops import Constant, Result
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
    #: what to measure: min/max (per sample, and per channel along ``axis``), per-channel means
    ranges: bool = True
    means: bool = True

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

    def update_partial(self, pmin: np.ndarray | None = None, pmax: np.ndarray | None = None,
                       cmean: np.ndarray | None = None, shape: np.ndarray | None = None) -> None:
        """Fold in one dataset item's min/max/mean over every axis but the batch axis and
        ``Collector.kept_axis`` (dims kept), as ``Collector`` computes them in the graph."""
        ref = pmin if pmin is not None else cmean
        if ref is None:
            self.update_reduced(shape=shape)
            return
        rank = np.ndim(ref)
        kept = Collector.kept_axis(rank, self.axis)
        mn = mx = cmin = cmax = None
        if pmin is not None and pmax is not None:
            pmin = np.asarray(pmin, np.float32)
            pmax = np.asarray(pmax, np.float32)
            if self.batchwise and rank > 1:
                mn, mx = pmin.reshape(pmin.shape[0], -1).min(axis=1), pmax.reshape(pmax.shape[0], -1).max(axis=1)
            else:
                mn, mx = pmin.min().reshape(1), pmax.max().reshape(1)
            if self.axis is not None:
                other = tuple(a for a in range(rank) if a != kept)
                cmin, cmax = pmin.min(axis=other), pmax.max(axis=other)
        self.update_reduced(mn, mx, cmin, cmax, cmean, shape)

    def update_reduced(self, mn: np.ndarray | None = None, mx: np.ndarray | None = None,
                       cmin: np.ndarray | None = None, cmax: np.ndarray | None = None,
                       cmean: np.ndarray | None = None, shape: np.ndarray | None = None) -> None:
        """Fold in one dataset item's reductions computed in the graph (see ``Collector``): per-sample
        min/max, per-channel min/max/mean and the item's shape, each only when it was measured.
        Without per-sample min/max, an item's are its channels' (one sample per item)."""
        if shape is not None:
            self.shape = tuple(int(d) for d in shape)
        if mn is None and cmin is not None and cmax is not None:
            mn, mx = np.min(cmin).reshape(1), np.max(cmax).reshape(1)
        if mn is not None:
            assert mx is not None
            mn = np.asarray(mn, np.float32).reshape(-1)
            mx = np.asarray(mx, np.float32).reshape(-1)
            samples = mn.shape[0]
            self.sum_min += float(mn.sum())
            self.sum_max += float(mx.sum())
            self.sum_absmax += float(np.maximum(-mn, mx).sum())
            self.per_sample.append(np.stack([mn, mx, np.maximum(-mn, mx)], axis=1).astype(np.float64))
        else:
            samples = self.shape[0] if self.batchwise and len(self.shape) > 1 else 1
        self.count += samples
        if self.axis is None or not self.shape:
            return
        axis = self.axis % len(self.shape)
        if cmin is not None and cmax is not None:
            cmin = np.asarray(cmin, np.float32).reshape(-1)
            cmax = np.asarray(cmax, np.float32).reshape(-1)
            cabs = np.maximum(-cmin, cmax)
            if self.ch_min is None:
                self.ch_min, self.ch_max, self.ch_absmax = cmin, cmax, cabs
            else:
                assert self.ch_max is not None and self.ch_absmax is not None
                self.ch_min = np.minimum(self.ch_min, cmin)
                self.ch_max = np.maximum(self.ch_max, cmax)
                self.ch_absmax = np.maximum(self.ch_absmax, cabs)
        if cmean is not None:
            cm = np.asarray(cmean, np.float32)
            if axis == 0:
                cmean_sum = cm.reshape(-1) * samples
            else:
                per_item = np.moveaxis(cm, axis, -1).reshape(cm.shape[0], -1)  # [batch, channels]
                cmean_sum = per_item.sum(axis=0) if self.batchwise else per_item.mean(axis=0)
            self.ch_sum_mean = cmean_sum if self.ch_sum_mean is None else self.ch_sum_mean + cmean_sum

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
        self._axes: dict[tuple[int, ...], Output] = {}

    def observe(self, out: Output, axis: int | None = None, quantile: float | None = None,
                histogram: bool = False, ranges: bool = True, means: bool = True) -> TensorStats:
        """Measure ``out``: its min/max (``ranges``: per sample, and per channel along ``axis``),
        its per-channel means along ``axis`` (``means``), per-sample quantiles when ``quantile``,
        a histogram of all values when ``histogram``. Observing a port again adds to what is
        measured there."""
        st = self.stats.get(out)
        if st is None:
            st = self.stats[out] = TensorStats(axis=axis, batchwise=self.batchwise, ranges=ranges, means=means)
        else:
            st.ranges, st.means = st.ranges or ranges, st.means or means
        if axis is not None and st.axis is None:
            st.axis = axis
        if quantile is not None:
            st.quantile = quantile
        if histogram and st.histogram is None:
            st.histogram = Histogram()
        return st

    @staticmethod
    def kept_axis(rank: int, axis: int | None) -> int:
        """The axis besides the batch axis that the in-graph reductions keep: the channel axis
        (``axis``), else 1 for 4-D and larger tensors and the last for smaller ones."""
        if axis is not None:
            return axis % rank
        return 1 if rank >= 4 else rank - 1

    def _reductions(self, port: Output, st: TensorStats) -> dict[str, Output] | None:
        """The reductions measuring ``port``, by ``update_partial`` argument: min/max (``ranges``)
        and mean (``means``, per channel) over every axis but the batch and the kept axis
        (``kept_axis``), with their dims kept, and the port's ``shape`` when per channel; numpy
        finishes them (a few numbers per batch item and channel). On an NCHW activation these are
        reductions over H and W, which the CPU device runs in place on its NHWC layout. None when
        the port is returned whole."""
        import ember.opset as ops

        shape = port.partial_shape
        if not shape.rank.is_static or len(shape) == 0 or not port.element_type.is_real or st.quantile is not None \
                or st.histogram is not None:
            return None  # returned whole (quantiles are computed in numpy)
        rank = len(shape)
        kept = self.kept_axis(rank, st.axis)
        reduced = tuple(a for a in range(rank) if a not in (0, kept))
        if not reduced:
            return None  # nothing to reduce in the graph
        if reduced not in self._axes:  # one axes constant for every reduction over them (fewer nodes)
            self._axes[reduced] = Constant(np.array(reduced, np.int64)).output(0)
        axes = self._axes[reduced]
        outs: dict[str, Output] = {}
        if st.ranges:
            outs["pmin"] = ops.reduce_min(port, axes, True).output(0)
            outs["pmax"] = ops.reduce_max(port, axes, True).output(0)
        if st.axis is not None:
            if st.means:
                outs["cmean"] = ops.reduce_mean(port, axes, True).output(0)
            outs["shape"] = ops.shape_of(port).output(0)
        return outs

    def run(self, data: Iterable[Any], total: int | None, show_progress: bool = True) -> int:
        """Run the model on every item of ``data``; returns the number of items."""
        position = {id(n): i for i, n in enumerate(self.model.get_ordered_ops())}
        # ports in graph order, and the model's own results last: the device schedules each port's
        # reductions right after the port (a depth-first walk from the results in their order), so
        # an observed activation is not kept alive to the end of the run
        ports = sorted(self.stats, key=lambda p: _place(p, position))
        readers = {p: {id(t) for t in p.targets} for p in ports}
        layout: list[tuple[Output, int, list[str] | None]] = []  # port, first extra output, parts (None: raw)
        extra_ports: list[Output] = []
        for p in ports:
            red = self._reductions(p, self.stats[p])
            layout.append((p, len(extra_ports), None if red is None else list(red)))
            extra_ports += list(red.values()) if red is not None else [p]
        extra = [Result([p]) for p in extra_ports]
        observed = Model(extra + self.model.get_results(), self.model.get_parameters(), self.model.friendly_name,
                         validate=False)
        try:
            compiled = compile_for_statistics(observed)
        finally:
            for r in extra:
                r.input(0).source.remove_target_input(r.input(0))
            for p in ports:  # detach the reductions: later passes see the model's own consumers only
                for t in list(p.targets):
                    if id(t) not in readers[p]:
                        p.remove_target_input(t)
            self._axes.clear()
        request = compiled.create_infer_request()
        n = 0
        for item in track(data, "Statistics collection", total, show_progress):
            outputs = infer(request, item, self.model)
            for p, first, parts in layout:
                if parts is None:
                    self.stats[p].update(outputs[first])
                else:
                    self.stats[p].update_partial(**dict(zip(parts, outputs[first:first + len(parts)])))
            n += 1
        if n == 0:
            raise QuantizationError("ember: the calibration dataset is empty: it yielded no items")
        return n


def _place(port: Output, position: dict[int, int]) -> tuple[int, int]:
    """Where ``port`` comes in the model's order; a port of a node outside the model (a
    subtraction added to measure something) right after its inputs."""
    at = position.get(id(port.node))
    if at is not None:
        return at, port.index
    return max((position.get(id(v.node), -1) for v in port.node.input_values()), default=-1), 1 + port.index


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
