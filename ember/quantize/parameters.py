"""Typed options of the quantization API, with NNCF's names and values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from ember.errors import EmberError


class QuantizationError(EmberError):
    """Quantization could not run: an empty dataset, inputs that do not fit the model, an
    ignored scope that matches nothing, a model with nothing to quantize."""


_E = TypeVar("_E", bound=Enum)


def as_enum(value: Any, kind: type[_E], what: str) -> _E:
    """``value`` as a member of ``kind``: the member itself, its name or value as a string (any
    case), or the same-named member of NNCF's own enum; anything else is a QuantizationError
    that lists the choices."""
    if isinstance(value, kind):
        return value
    key = getattr(value, "name", value)
    if isinstance(key, str):
        for member in kind:
            if key.lower() in (member.name.lower(), str(member.value).lower()):
                return member
    choices = ", ".join(f"{kind.__name__}.{m.name}" for m in kind)
    raise QuantizationError(f"ember: {what} must be one of {choices}; got {value!r}")


def check_count(value: Any, what: str) -> int:
    """``value`` as a positive int (a QuantizationError for 0, negatives, floats, bools)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise QuantizationError(f"ember: {what} must be a positive integer, got {value!r}")
    return int(value)


class BackupMode(Enum):
    """The format of the weights ``compress_weights`` keeps out of INT4 (``ratio < 1``, and the
    layers INT4 skips). ember implements NNCF's default, INT8_ASYM; the others are refused."""

    NONE = "none"
    INT8_SYM = "int8_sym"
    INT8_ASYM = "int8_asym"


class QuantizationPreset(Enum):
    """PERFORMANCE: symmetric activations; MIXED: asymmetric activations (weights symmetric)."""

    PERFORMANCE = "performance"
    MIXED = "mixed"


class ModelType(Enum):
    """TRANSFORMER: asymmetric activations by default, no quantizers on elementwise, MVN,
    reductions and comparisons, SmoothQuant before the range search."""

    TRANSFORMER = "transformer"


class TargetDevice(Enum):
    """The device the quantized model is for. ember uses one rule set (the CPU one) for all,
    as NNCF does for INT8 (GPU/NPU 8-bit requests switch to CPU rules)."""

    ANY = "ANY"
    CPU = "CPU"
    GPU = "GPU"
    NPU = "NPU"
    CPU_SPR = "CPU_SPR"


class QuantizationMode(Enum):
    """Only the INT8 default is implemented; FP8 modes are refused loudly."""

    FP8_E4M3 = "fp8_e4m3"
    FP8_E5M2 = "fp8_e5m2"


class OverflowFix(Enum):
    """Half-range weights for the first convolutions (NNCF's default FIRST_LAYER) avoid the
    int16 accumulator overflow of pre-VNNI CPUs."""

    ENABLE = "enable"
    DISABLE = "disable"
    FIRST_LAYER = "first_layer_only"


class CompressWeightsMode(Enum):
    """Weight-only compression formats of ``compress_weights``."""

    INT8_SYM = "int8_sym"
    INT8_ASYM = "int8_asym"
    INT4_SYM = "int4_sym"
    INT4_ASYM = "int4_asym"
    INT8 = "int8"  # NNCF's deprecated alias of INT8_ASYM


class DropType(Enum):
    """How ``quantize_with_accuracy_control`` measures the drop: ABSOLUTE (metric points) or
    RELATIVE (fraction of the float metric)."""

    ABSOLUTE = "absolute"
    RELATIVE = "relative"


@dataclass(frozen=True)
class IgnoredScope:
    """Nodes to keep in float: exact ``names``, regex ``patterns`` (``re.fullmatch`` on the
    friendly name), op ``types`` (IR type names, e.g. ``"Multiply"``) and ``subgraphs``
    (``Subgraph(inputs=[...], outputs=[...])``: every node between). With ``validate=True``
    a name, pattern, type or subgraph that matches nothing is an error."""

    names: Sequence[str] = ()
    patterns: Sequence[str] = ()
    types: Sequence[str] = ()
    subgraphs: Sequence[Subgraph] = ()
    validate: bool = True

    def __post_init__(self) -> None:
        for f in ("names", "patterns", "types", "subgraphs"):
            v = getattr(self, f)
            if isinstance(v, str):
                object.__setattr__(self, f, (v,))
            else:
                object.__setattr__(self, f, tuple(v or ()))

    def __bool__(self) -> bool:
        return bool(self.names or self.patterns or self.types or self.subgraphs)


@dataclass(frozen=True)
class Subgraph:
    """Every node on a path from one of ``inputs`` to one of ``outputs`` (friendly names)."""

    inputs: Sequence[str] = ()
    outputs: Sequence[str] = ()


@dataclass(frozen=True)
class SmoothQuantParameters:
    """SmoothQuant strength per op family (negative disables it, as in NNCF)."""

    matmul: float = 0.95
    convolution: float = -1.0


class StatisticsType(Enum):
    """What is measured on each calibration sample (NNCF's names)."""

    MIN = "min"
    MAX = "max"
    ABS_MAX = "abs_max"
    QUANTILE = "quantile"
    ABS_QUANTILE = "abs_quantile"
    RAW = "raw"  # the whole tensor (HISTOGRAM)


class AggregatorType(Enum):
    """How the per-sample measurements become one number: MEAN, MEDIAN, MIN, MAX, or the mean /
    median of the samples inside the [q, 1 - q] quantiles (NO_OUTLIERS, q = quantile_outlier_prob)."""

    MEAN = "mean"
    MEDIAN = "median"
    MIN = "min"
    MAX = "max"
    MEAN_NO_OUTLIERS = "mean_no_outliers"
    MEDIAN_NO_OUTLIERS = "median_no_outliers"
    HISTOGRAM = "histogram"  # every value in one histogram, then the least-error range


@dataclass(frozen=True)
class StatisticsCollectorParameters:
    """One end of a range: the per-sample ``statistics_type`` and its ``aggregator_type`` over
    samples; ``quantile_outlier_prob`` is the q of QUANTILE statistics and NO_OUTLIERS aggregators.
    None keeps NNCF's default for the quantizer (MIN/MAX with MEAN per tensor)."""

    statistics_type: StatisticsType | None = None
    aggregator_type: AggregatorType | None = None
    clipping_value: float | None = None
    quantile_outlier_prob: float = 1e-4


@dataclass(frozen=True)
class RangeEstimatorParameters:
    """How the low (``min``) and high (``max``) ends of a quantizer's range are estimated."""

    min: StatisticsCollectorParameters = field(default_factory=StatisticsCollectorParameters)
    max: StatisticsCollectorParameters = field(default_factory=StatisticsCollectorParameters)


class RangeEstimatorParametersSet:
    """NNCF's named range estimators. MEAN_MINMAX is the default for per-tensor activations;
    MEAN_QUANTILE averages each sample's 0.01% / 99.99% quantiles, which ignores the few extreme
    values that set a sample's min or max; HISTOGRAM takes the range with the least 8-bit
    quantization error of all values seen (per-tensor quantizers only)."""

    MINMAX = RangeEstimatorParameters(StatisticsCollectorParameters(StatisticsType.MIN, AggregatorType.MIN),
                                      StatisticsCollectorParameters(StatisticsType.MAX, AggregatorType.MAX))
    MEAN_MINMAX = RangeEstimatorParameters(StatisticsCollectorParameters(StatisticsType.MIN, AggregatorType.MEAN),
                                           StatisticsCollectorParameters(StatisticsType.MAX, AggregatorType.MEAN))
    MEDIAN_MINMAX = RangeEstimatorParameters(StatisticsCollectorParameters(StatisticsType.MIN, AggregatorType.MEDIAN),
                                             StatisticsCollectorParameters(StatisticsType.MAX, AggregatorType.MEDIAN))
    MEAN_NO_OUTLIERS_MINMAX = RangeEstimatorParameters(
        StatisticsCollectorParameters(StatisticsType.MIN, AggregatorType.MEAN_NO_OUTLIERS),
        StatisticsCollectorParameters(StatisticsType.MAX, AggregatorType.MEAN_NO_OUTLIERS))
    MEAN_QUANTILE = RangeEstimatorParameters(
        StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN),
        StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN))
    HISTOGRAM = RangeEstimatorParameters(StatisticsCollectorParameters(StatisticsType.RAW, AggregatorType.HISTOGRAM),
                                         StatisticsCollectorParameters(StatisticsType.RAW, AggregatorType.HISTOGRAM))


@dataclass(frozen=True)
class AdvancedQuantizationParameters:
    """The knobs of NNCF's ``AdvancedQuantizationParameters`` that ember implements."""

    overflow_fix: OverflowFix | None = None
    inplace_statistics: bool = True
    disable_bias_correction: bool = False
    batchwise_statistics: bool | None = None
    smooth_quant_alphas: SmoothQuantParameters = field(default_factory=SmoothQuantParameters)
    smooth_quant_alpha: float | None = None
    #: per-tensor activation ranges (default MEAN_MINMAX); per-channel ones stay MINMAX
    activations_range_estimator_params: RangeEstimatorParameters | None = None
    #: weights: MINMAX only (NNCF's default), other estimators are refused
    weights_range_estimator_params: RangeEstimatorParameters | None = None
    #: FastBiasCorrection applies a shift only when max |shift / bias| stays under this
    bias_correction_threshold: float = 2.0
    #: show a progress bar (tqdm when installed, else log lines)
    show_progress: bool = True


@dataclass(frozen=True)
class AdvancedAccuracyRestorerParameters:
    """Options of ``quantize_with_accuracy_control``."""

    max_num_iterations: int = 2**31 - 1
    #: NNCF's default (off); ember has no hyperparameter tuning step
    tune_hyperparams: bool = False
    ranking_subset_size: int | None = None
    num_ranking_workers: int | None = None
    restore_mode: str = "activations_and_weights"
    intermediate_model_dir: str | None = None
    #: ember: how groups are ranked: "revert" (NNCF's: each group reverted alone, the subset run
    #: again) or "layer_error" (the error each layer adds, ``compare``: two passes in all)
    ranking: str = "revert"


class SensitivityMetric(Enum):
    """How ``compress_weights`` ranks layers when ``ratio`` < 1 (the least sensitive go to INT4
    first). Without a dataset only WEIGHT_QUANTIZATION_ERROR applies; with one the default is
    MAX_ACTIVATION_VARIANCE (NNCF's)."""

    WEIGHT_QUANTIZATION_ERROR = "weight_quantization_error"
    HESSIAN_INPUT_ACTIVATION = "hessian_input_activation"
    MEAN_ACTIVATION_VARIANCE = "mean_activation_variance"
    MAX_ACTIVATION_VARIANCE = "max_activation_variance"
    MEAN_ACTIVATION_MAGNITUDE = "mean_activation_magnitude"


@dataclass(frozen=True)
class AdvancedAWQParameters:
    """AWQ's search: the ``percent_to_apply`` largest input channels (at least one) have their
    groups rescaled by ``s ** alpha``, alpha over ``steps`` values in [alpha_min, alpha_max);
    statistics of the first ``subset_size`` samples."""

    subset_size: int = 32
    percent_to_apply: float = 0.002
    alpha_min: float = 0.0
    alpha_max: float = 1.0
    steps: int = 100
    prefer_data_aware_scaling: bool = True


@dataclass(frozen=True)
class AdvancedScaleEstimationParameters:
    """Scale estimation: ``initial_steps`` rounds of importance-weighted scale fitting, then
    ``scale_steps`` restarts from the min/max scale times 1, 0.95, 0.9, ..."""

    subset_size: int = 64
    initial_steps: int = 5
    scale_steps: int = 5
    weight_penalty: float = -1.0


@dataclass(frozen=True)
class AdvancedCompressionParameters:
    """The knobs of NNCF's ``AdvancedCompressionParameters`` that ember implements."""

    awq_params: AdvancedAWQParameters = field(default_factory=AdvancedAWQParameters)
    scale_estimation_params: AdvancedScaleEstimationParameters = field(
        default_factory=AdvancedScaleEstimationParameters)
