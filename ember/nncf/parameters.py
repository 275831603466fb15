"""``nncf.parameters``'s names, for code that imports them from there."""

from ember.quantize.parameters import (
    BackupMode,
    CompressWeightsMode,
    DropType,
    ModelType,
    QuantizationMode,
    SensitivityMetric,
    TargetDevice,
)

__all__ = ["BackupMode", "CompressWeightsMode", "DropType", "ModelType", "QuantizationMode", "SensitivityMetric",
           "TargetDevice"]
