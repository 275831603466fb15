"""Quantizer ranges from statistics, with NNCF's formulas (``nncf.quantization.fake_quantize``):
symmetric ranges from abs-max with a signed low end of ``-high * levels / (levels - 2)``,
asymmetric ranges widened to hold zero and tuned so that zero is exactly representable."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ember.quantize.parameters import (
    AggregatorType,
    QuantizationError,
    RangeEstimatorParameters,
    RangeEstimatorParametersSet,
    StatisticsType,
)

if TYPE_CHECKING:
    from ember.quantize.statistics import TensorStats

#: columns of ``TensorStats.per_sample``
_COLUMNS = {StatisticsType.MIN: 0, StatisticsType.MAX: 1, StatisticsType.ABS_MAX: 2}


def estimator(params: RangeEstimatorParameters | None) -> RangeEstimatorParameters:
    """``params`` over NNCF's per-tensor default (MEAN_MINMAX): unset fields keep the default."""
    base = RangeEstimatorParametersSet.MEAN_MINMAX
    if params is None:
        return base
    ends = []
    for user, default in ((params.min, base.min), (params.max, base.max)):
        if user.clipping_value is not None:
            raise QuantizationError("ember: clipping_value in range estimators is not supported")
        ends.append(type(default)(user.statistics_type or default.statistics_type,
                                  user.aggregator_type or default.aggregator_type, None, user.quantile_outlier_prob))
    return RangeEstimatorParameters(ends[0], ends[1])


def uses_histogram(params: RangeEstimatorParameters) -> bool:
    """HISTOGRAM (only as NNCF's whole set: both ends, nothing else changed)."""
    if AggregatorType.HISTOGRAM not in (params.min.aggregator_type, params.max.aggregator_type):
        return False
    if params != RangeEstimatorParametersSet.HISTOGRAM:
        raise QuantizationError("ember: the HISTOGRAM aggregator works only as RangeEstimatorParametersSet.HISTOGRAM")
    return True


def needs_quantiles(params: RangeEstimatorParameters) -> float | None:
    """The q whose per-sample quantiles ``params`` reads, if any."""
    for end in (params.min, params.max):
        if end.statistics_type in (StatisticsType.QUANTILE, StatisticsType.ABS_QUANTILE):
            return end.quantile_outlier_prob
    return None


def aggregate(values: np.ndarray, how: AggregatorType, q: float) -> float:
    """One number from the per-sample ``values``, as NNCF's aggregators."""
    if how in (AggregatorType.MEAN_NO_OUTLIERS, AggregatorType.MEDIAN_NO_OUTLIERS):
        lo, hi = np.quantile(values, [q, 1.0 - q])
        values = values[(values >= lo) & (values <= hi)]
        how = AggregatorType.MEAN if how == AggregatorType.MEAN_NO_OUTLIERS else AggregatorType.MEDIAN
    if how == AggregatorType.MEDIAN:
        return float(np.median(values))
    if how == AggregatorType.MIN:
        return float(np.min(values))
    if how == AggregatorType.MAX:
        return float(np.max(values))
    return float(np.mean(values))


def range_statistics(st: TensorStats, params: RangeEstimatorParameters) -> tuple[float, float, float]:
    """(low, high, abs-high) of a per-tensor quantizer: the estimator's min end, its max end, and its
    max end as a symmetric quantizer measures it (MAX read as ABS_MAX, as NNCF does)."""
    def column(stat: StatisticsType, upper: bool) -> int:
        if stat == StatisticsType.QUANTILE:
            return 4 if upper else 3
        if stat == StatisticsType.ABS_QUANTILE:
            return 6 if upper else 5
        return _COLUMNS[stat]

    lo, hi = params.min, params.max
    if lo.aggregator_type == AggregatorType.HISTOGRAM:
        assert st.histogram is not None
        low, high = st.histogram.best_range()
        return low, high, high
    assert lo.statistics_type and lo.aggregator_type and hi.statistics_type and hi.aggregator_type
    low = aggregate(st.sample_values(column(lo.statistics_type, False)), lo.aggregator_type, lo.quantile_outlier_prob)
    high = aggregate(st.sample_values(column(hi.statistics_type, True)), hi.aggregator_type, hi.quantile_outlier_prob)
    abs_stat = StatisticsType.ABS_MAX if hi.statistics_type == StatisticsType.MAX else hi.statistics_type
    abs_high = aggregate(st.sample_values(column(abs_stat, True)), hi.aggregator_type, hi.quantile_outlier_prob)
    return low, high, abs_high


def fix_zero_symmetric(high: np.ndarray, eps: float = 0.01) -> np.ndarray:
    """Channels with a (near) zero range get a floor of 1% of the largest one (at least 8e-5)."""
    floor = max(float(np.max(high)) * eps, 8e-5)
    return np.maximum(high, floor)


def symmetric(min_v: np.ndarray, absmax: np.ndarray, levels: int, narrow: bool,
              signed: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input_low, input_high) of a symmetric quantizer; unsigned when nothing is negative."""
    high = fix_zero_symmetric(np.asarray(absmax, np.float32))
    if signed is None:
        signed = bool(np.any(np.asarray(min_v) < 0))
    if signed:
        low = -high * (1.0 if narrow else levels / (levels - 2))
    else:
        low = np.zeros_like(high)
    return np.asarray(low, np.float32), np.asarray(high, np.float32)


def asymmetric(min_v: np.ndarray, max_v: np.ndarray, num_bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(input_low, input_high) of an asymmetric quantizer."""
    lo = np.asarray(min_v, np.float32)
    hi = np.asarray(max_v, np.float32)
    width = hi - lo
    corr = np.where(width > 8e-4, (np.maximum(1e-8 * width, width) - width) * 0.5, np.float32(8e-4))
    lo, hi = lo - corr, hi + corr
    lo = np.where(lo < 0.0, lo, 0.0).astype(np.float32)
    hi = np.where(hi > 0.0, hi, 0.0).astype(np.float32)
    return tune_range(lo, hi, num_bits)


def tune_range(left: np.ndarray, right: np.ndarray, num_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Move one border outwards (the one that costs less range) so that the zero point is an
    integer and 0.0 is exactly representable."""
    top = 2**num_bits - 1
    zp = np.round(-left * (top / (right - left)))
    with np.errstate(divide="ignore", invalid="ignore"):
        new_left = np.where(zp < top, zp / (zp - top) * right, left)
        new_right = np.where(zp > 0.0, (zp - top) / zp * left, right)
    move_left = (right - new_left) > (new_right - left)
    out_left = np.where(move_left, new_left, left)
    out_right = np.where(move_left, right, new_right)
    return out_left.astype(np.float32), out_right.astype(np.float32)


def weight_ranges(w: np.ndarray, channel_axes: tuple[int, ...], half_range: bool = False,
                  levels: int = 255) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel symmetric ranges of a weight (shape broadcastable to ``w``) and the levels.

    ``half_range`` (the overflow fix) computes the range for 7 bits and stretches it to the
    8-bit levels, so the stored values use only half of the int8 range.
    """
    reduce = tuple(a for a in range(w.ndim) if a not in channel_axes)
    wmin = w.min(axis=reduce, keepdims=True) if reduce else w
    wabs = np.abs(w).max(axis=reduce, keepdims=True) if reduce else np.abs(w)
    signed = bool(np.any(wmin < 0))
    if half_range:
        low, high = symmetric(wmin, wabs, 128, narrow=False, signed=signed)
        low = -high if signed else low  # 7-bit symmetric levels are narrow for weights
        scale = (levels - 1) / (128 - 1)
        return low * np.float32(scale), high * np.float32(scale), levels
    low, high = symmetric(wmin, wabs, levels, narrow=True, signed=signed)
    return low, high, levels
