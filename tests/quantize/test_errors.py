"""Bad input to ember.nncf.quantize / compress_weights: each case one QuantizationError whose
message says what was wrong (never a bare KeyError, ValueError or a crash)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import ember.nncf as nncf
import ember.opset as ops
from ember.graph.model import Model

RNG = np.random.default_rng(3)


def _conv_model() -> Model:
    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    c = ops.convolution(x, RNG.standard_normal((6, 4, 3, 3)).astype(np.float32), [1, 1], [1, 1], [1, 1], [1, 1])
    return Model([ops.relu(c)], [x])


def _matmul_model() -> Model:
    x = ops.parameter([1, 64], np.float32, name="x")
    return Model([ops.matmul(x, RNG.standard_normal((64, 64)).astype(np.float32), False, False)], [x])


def _plain_model() -> Model:
    y = ops.parameter([1, 4], np.float32, name="y")
    return Model([ops.relu(y)], [y])


ITEMS = [RNG.standard_normal((1, 4, 8, 8)).astype(np.float32) for _ in range(2)]
QUIET = nncf.AdvancedQuantizationParameters(show_progress=False)


def _q(model: Callable[[], Model], data: Any, **kw: Any) -> Callable[[], Any]:
    return lambda: nncf.quantize(model(), data, advanced_parameters=QUIET, **kw)


def _cw(**kw: Any) -> Callable[[], Any]:
    return lambda: nncf.compress_weights(_matmul_model(), **kw)


INT4 = nncf.CompressWeightsMode.INT4_SYM
CASES: list[tuple[str, Callable[[], Any], str]] = [
    ("empty dataset", _q(_conv_model, nncf.Dataset([])), "empty"),
    ("wrong shape from transform_fn", _q(_conv_model, nncf.Dataset(ITEMS, lambda a: a[:, :2])),
     r"takes \[x: f32\[1,4,8,8\]\], transform_fn gave an array float32\[1, 2, 8, 8\]"),
    ("wrong input name", _q(_conv_model, nncf.Dataset(ITEMS, lambda a: {"nope": a})), "no input named 'nope'"),
    ("text from transform_fn", _q(_conv_model, nncf.Dataset(ITEMS, lambda a: "text")), "element type f32"),
    ("transform_fn raises", _q(_conv_model, nncf.Dataset(ITEMS, lambda a: a["key"])),
     "calibration item 0 failed in the data source or transform_fn: IndexError"),
    ("nothing to quantize", _q(_plain_model, nncf.Dataset([np.ones((1, 4), np.float32)])), "nothing to quantize"),
    ("subset_size 0", _q(_conv_model, nncf.Dataset(ITEMS), subset_size=0), "subset_size must be a positive integer"),
    ("subset_size 2.5", _q(_conv_model, nncf.Dataset(ITEMS), subset_size=2.5), "subset_size must be a positive"),
    ("unknown model_type", _q(_conv_model, nncf.Dataset(ITEMS), model_type="bert"), "ModelType.TRANSFORMER"),
    ("unknown preset", _q(_conv_model, nncf.Dataset(ITEMS), preset="fast"), "QuantizationPreset.PERFORMANCE"),
    ("fp8 mode", _q(_conv_model, nncf.Dataset(ITEMS), mode=nncf.QuantizationMode.FP8_E4M3), "not supported"),
    ("ratio 2", _cw(mode=INT4, ratio=2.0), r"ratio must be in \[0, 1\]"),
    ("group_size 0", _cw(mode=INT4, group_size=0), "group_size must be positive or -1"),
    ("ratio with INT8", _cw(mode=nncf.CompressWeightsMode.INT8_ASYM, ratio=0.5), "INT4 modes only"),
    ("unknown mode", _cw(mode="int3"), "mode must be one of CompressWeightsMode.INT8_SYM"),
    ("no weights", lambda: nncf.compress_weights(_plain_model()), "no weights to compress"),
    ("compress: empty dataset", _cw(mode=INT4, group_size=32, awq=True, dataset=nncf.Dataset([])), "empty"),
    ("compress: subset_size 0", _cw(mode=INT4, group_size=32, awq=True, subset_size=0,
                                    dataset=nncf.Dataset([np.ones((1, 64), np.float32)])), "subset_size"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(nncf.QuantizationError, match=message):
        call()


def test_enum_options_take_their_names_and_values() -> None:
    """NNCF's enums are string-valued: the strings and the members give the same model."""
    a = nncf.quantize(_conv_model(), nncf.Dataset(ITEMS), preset="mixed", advanced_parameters=QUIET)
    b = nncf.quantize(_conv_model(), nncf.Dataset(ITEMS), preset=nncf.QuantizationPreset.MIXED,
                      advanced_parameters=QUIET)
    c = nncf.quantize(_conv_model(), nncf.Dataset(ITEMS), preset="PERFORMANCE", advanced_parameters=QUIET)
    fq = [[n.input_value(i) for i in range(1, 5)] for m in (a, b, c) for n in m.get_ordered_ops()
          if n.type_name == "FakeQuantize"]
    assert len(fq) == 3
    for x, y in zip(fq[0], fq[1]):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(fq[0][0], fq[2][0])  # PERFORMANCE: symmetric, another input_low


def test_nncf_names_code_calls() -> None:
    """Names NNCF sample code uses beyond quantize/compress_weights, with NNCF's values."""
    real = pytest.importorskip("nncf")
    from ember.nncf.parameters import BackupMode, CompressWeightsMode

    assert {m.value for m in BackupMode} <= {m.value for m in real.BackupMode}
    # INT8: older NNCF's alias of INT8_ASYM, kept for old scripts
    assert {m.value for m in CompressWeightsMode} - {"int8"} <= {m.value for m in real.CompressWeightsMode}
    a = nncf.compress_weights(_matmul_model(), mode=INT4, group_size=32, ratio=0.5)
    b = nncf.compress_weights(_matmul_model(), mode=INT4, group_size=32, ratio=0.5,
                              backup_mode=nncf.BackupMode.INT8_ASYM)
    assert [n.type_name for n in a.get_ordered_ops()] == [n.type_name for n in b.get_ordered_ops()]
    with pytest.raises(nncf.ValidationError, match="backup_mode"):
        nncf.compress_weights(_matmul_model(), mode=INT4, group_size=32, ratio=0.5, backup_mode=real.BackupMode.NONE)
    q = nncf.quantize(_conv_model(), nncf.Dataset(ITEMS), advanced_parameters=QUIET)
    stripped = nncf.strip(q)
    assert stripped is not q and len(stripped.get_ordered_ops()) == len(q.get_ordered_ops())
    assert nncf.strip(q, do_copy=False) is q
    nncf.set_log_level(30)
    assert nncf.AdvancedSmoothQuantParameters().matmul == real.AdvancedSmoothQuantParameters().matmul
