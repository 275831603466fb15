"""NNCF's API on ember: code written for NNCF runs with ``import ember.nncf as nncf``.

``nncf.quantize(model, nncf.Dataset(items, transform_fn))`` returns an ember Model with
FakeQuantize on activations and int8 weights, the IR NNCF writes; ``nncf.compress_weights``
writes OpenVINO's int8/int4 weight-decompression patterns. See ``ember.quantize``.
"""

from __future__ import annotations

from ember.quantize import (
    AdvancedAccuracyRestorerParameters,
    AdvancedAWQParameters,
    AdvancedCompressionParameters,
    AdvancedQuantizationParameters,
    AdvancedScaleEstimationParameters,
    CompareReport,
    CompressWeightsMode,
    Dataset,
    DropType,
    IgnoredScope,
    ModelType,
    OverflowFix,
    QuantizationError,
    QuantizationMode,
    QuantizationPreset,
    RangeEstimatorParameters,
    RangeEstimatorParametersSet,
    SensitivityMetric,
    SmoothQuantParameters,
    Subgraph,
    TargetDevice,
    compare,
    compress_weights,
    quantize,
    quantize_with_accuracy_control,
)

__all__ = ["AdvancedAccuracyRestorerParameters", "AdvancedAWQParameters", "AdvancedCompressionParameters",
           "AdvancedScaleEstimationParameters", "SensitivityMetric", "AdvancedQuantizationParameters", "CompareReport", "CompressWeightsMode", "Dataset",
           "DropType", "IgnoredScope", "ModelType", "OverflowFix", "QuantizationError", "QuantizationMode",
           "QuantizationPreset", "RangeEstimatorParameters", "RangeEstimatorParametersSet", "SmoothQuantParameters", "Subgraph", "TargetDevice", "compare", "compress_weights", "quantize",
           "quantize_with_accuracy_control"]
