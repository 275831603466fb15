"""``nncf.quantization.range_estimator``: the activation range estimators of
``AdvancedQuantizationParameters(activations_range_estimator_params=...)``."""

from __future__ import annotations

from ember.quantize.parameters import (
    AggregatorType,
    RangeEstimatorParameters,
    RangeEstimatorParametersSet,
    StatisticsCollectorParameters,
    StatisticsType,
)

__all__ = ["AggregatorType", "RangeEstimatorParameters", "RangeEstimatorParametersSet",
           "StatisticsCollectorParameters", "StatisticsType"]
