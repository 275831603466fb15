"""NNCF's activation range estimators (``AdvancedQuantizationParameters(
activations_range_estimator_params=...)``) against real NNCF 3.4: the same FakeQuantize ranges
on the same graph and calibration samples, for every named set and both presets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import ember.nncf as nncf
from ember.graph.model import Model
from ember.nncf.quantization.range_estimator import RangeEstimatorParametersSet as NamedSets
from ember.quantize.parameters import (
    AggregatorType,
    QuantizationError,
    RangeEstimatorParameters,
    RangeEstimatorParametersSet,
    StatisticsCollectorParameters,
    StatisticsType,
)

from .nncf_oracle import compare_placement, nncf_quantize
from .test_quantize import _data, _named, g_concat, g_layernorm_spelled, g_scale_shift_input

pytest.importorskip("nncf")

#: (estimator set, preset, graph): each set once, both presets, a Concat's shared range and a
#: LayerNorm with signed and unsigned tensors
CASES = [("MINMAX", None, g_concat), ("MEDIAN_MINMAX", "MIXED", g_layernorm_spelled),
         ("MEAN_NO_OUTLIERS_MINMAX", None, g_layernorm_spelled), ("MEAN_QUANTILE", None, g_concat),
         ("MEAN_QUANTILE", "MIXED", g_layernorm_spelled), ("HISTOGRAM", None, g_layernorm_spelled),
         ("HISTOGRAM", "MIXED", g_concat)]


def _theirs(name: str) -> object:
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as Real

    return getattr(Real, name)


@pytest.mark.parametrize(("name", "preset", "build"), CASES, ids=[f"{c[0]}-{c[1] or 'PERFORMANCE'}" for c in CASES])
def test_range_estimators_match_nncf(name: str, preset: str | None, build: Callable[[], Model], tmp_path: Path) -> None:
    import nncf as real_nncf

    model = _named(build())
    data = _data(model, 7)
    for x in data[2].values():  # one sample with an outlier: the estimators differ on it
        x.flat[3] = 40.0
    real_adv = real_nncf.AdvancedQuantizationParameters(activations_range_estimator_params=_theirs(name))
    theirs = nncf_quantize(model, data, tmp_path, advanced_parameters=real_adv,
                           preset=None if preset is None else real_nncf.QuantizationPreset.MIXED)
    adv = nncf.AdvancedQuantizationParameters(
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, name))
    ours = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data), advanced_parameters=adv,
                         preset=None if preset is None else nncf.QuantizationPreset.MIXED)
    compare_placement(ours, theirs, model)


def test_range_estimators_change_the_range_and_refuse_what_is_missing() -> None:
    model = _named(g_scale_shift_input())
    data = _data(model, 5)
    data[0][next(iter(data[0]))].flat[0] = 50.0

    def high(params: RangeEstimatorParameters | None) -> float:
        q = nncf.quantize(model, nncf.Dataset(data), subset_size=5,
                          advanced_parameters=nncf.AdvancedQuantizationParameters(
                              activations_range_estimator_params=params))
        return max(float(n.input_value(2).max()) for n in q.get_ordered_ops() if n.type_name == "FakeQuantize")

    assert NamedSets.MINMAX is RangeEstimatorParametersSet.MINMAX  # NNCF's import path works too
    default, minmax = high(None), high(nncf.RangeEstimatorParametersSet.MINMAX)
    median = high(RangeEstimatorParameters(max=StatisticsCollectorParameters(aggregator_type=AggregatorType.MEDIAN)))
    assert minmax > default > median  # the outlier sample sets MINMAX, moves the mean, not the median
    assert high(nncf.RangeEstimatorParametersSet.HISTOGRAM) not in (default, minmax, median)
    with pytest.raises(QuantizationError, match="HISTOGRAM"):
        high(RangeEstimatorParameters(max=StatisticsCollectorParameters(StatisticsType.RAW, AggregatorType.HISTOGRAM)))
    with pytest.raises(QuantizationError, match="weights_range_estimator_params"):
        nncf.quantize(model, nncf.Dataset(data), subset_size=5, advanced_parameters=nncf.AdvancedQuantizationParameters(
            weights_range_estimator_params=RangeEstimatorParametersSet.MEAN_QUANTILE))
    with pytest.raises(QuantizationError, match="clipping_value"):
        nncf.quantize(model, nncf.Dataset(data), subset_size=5, advanced_parameters=nncf.AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParameters(
                max=StatisticsCollectorParameters(StatisticsType.MAX, clipping_value=1.0))))
