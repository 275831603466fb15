"""Post-training quantization and weight compression with NNCF's API (``ember.nncf`` is the
NNCF-named facade). Quantized models are ordinary IR: FakeQuantize on activations, int8/int4
weight constants with Convert / Subtract / Multiply."""

from __future__ import annotations

from ember.quantize.accuracy_control import quantize_with_accuracy_control
from ember.quantize.algorithm import quantize
from ember.quantize.compare import CompareReport, LayerError, compare
from ember.quantize.dataset import Dataset
from ember.quantize.parameters import (
    AdvancedAccuracyRestorerParameters,
    AdvancedAWQParameters,
    AdvancedCompressionParameters,
    AdvancedQuantizationParameters,
    AdvancedScaleEstimationParameters,
    BackupMode,
    CompressWeightsMode,
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
)
from ember.quantize.weights import compress_weights  # noqa: I001 - after parameters

__all__ = ["AdvancedAccuracyRestorerParameters", "AdvancedAWQParameters", "AdvancedCompressionParameters",
           "AdvancedScaleEstimationParameters", "BackupMode", "SensitivityMetric", "AdvancedQuantizationParameters", "CompareReport", "LayerError", "CompressWeightsMode", "Dataset",
           "DropType", "IgnoredScope", "ModelType", "OverflowFix", "QuantizationError", "QuantizationMode",
           "QuantizationPreset", "RangeEstimatorParameters", "RangeEstimatorParametersSet", "SmoothQuantParameters", "Subgraph", "TargetDevice", "compare", "compress_weights", "quantize",
           "quantize_with_accuracy_control"]
