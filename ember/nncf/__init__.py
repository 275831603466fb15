"""NNCF's API on ember: code written for NNCF runs with ``import ember.nncf as nncf``.

``nncf.quantize(model, nncf.Dataset(items, transform_fn))`` returns an ember Model with
FakeQuantize on activations and int8 weights, the IR NNCF writes; ``nncf.compress_weights``
writes OpenVINO's int8/int4 weight-decompression patterns. See ``ember.quantize``.
"""

from __future__ import annotations

from typing import Any

from ember.quantize import (
    AdvancedAccuracyRestorerParameters,
    AdvancedAWQParameters,
    AdvancedCompressionParameters,
    AdvancedQuantizationParameters,
    AdvancedScaleEstimationParameters,
    BackupMode,
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

#: NNCF's newer name of the SmoothQuant strengths (``AdvancedQuantizationParameters.smooth_quant_alphas``)
AdvancedSmoothQuantParameters = SmoothQuantParameters
#: the errors NNCF raises for bad arguments are ember's QuantizationError
ValidationError = QuantizationError


def strip(model: Any, do_copy: bool = True, strip_format: Any = None, example_input: Any = None) -> Any:
    """NNCF's ``strip``: for a post-training quantized model there is nothing to strip (the
    FakeQuantize and int8 weights are the deployable form), so ``model`` itself is returned, or a
    copy with ``do_copy`` (NNCF's default), as NNCF does for OpenVINO models."""
    return model.clone() if do_copy and hasattr(model, "clone") else model


def set_log_level(level: int) -> None:
    """Log level of the quantization messages (the ``ember.quantize`` logger), as NNCF's."""
    import logging

    logging.getLogger("ember.quantize").setLevel(level)


__all__ = ["AdvancedAccuracyRestorerParameters", "AdvancedAWQParameters", "AdvancedCompressionParameters",
           "AdvancedSmoothQuantParameters", "BackupMode", "ValidationError", "set_log_level", "strip",
           "AdvancedScaleEstimationParameters", "SensitivityMetric", "AdvancedQuantizationParameters", "CompareReport", "CompressWeightsMode", "Dataset",
           "DropType", "IgnoredScope", "ModelType", "OverflowFix", "QuantizationError", "QuantizationMode",
           "QuantizationPreset", "RangeEstimatorParameters", "RangeEstimatorParametersSet", "SmoothQuantParameters", "Subgraph", "TargetDevice", "compare", "compress_weights", "quantize",
           "quantize_with_accuracy_control"]
