"""fold_pad_into_conv: a constant-zero spatial Pad before a convolution becomes its padding.

Outputs must stay equal on REFERENCE; Pads that are not a zero spatial padding stay.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

import ember.opset as ops
from ember.devices.reference import run_model
from ember.graph import Model
from ember.passes import get_pass

RNG = np.random.default_rng(0)


def _build(conv: str, begin: list[int], end: list[int], mode: str = "constant", value: float | None = None,
           own: tuple[list[int], list[int]] = ([0, 0], [0, 0]), auto_pad: str = "explicit", stride: int = 1,
           rank: int = 2) -> Model:
    x = ops.parameter([-1, 4] + [7] * rank, np.float32, name="x")
    pad_value = None if value is None else ops.constant(np.float32(value))
    p = ops.pad(x, begin, end, mode, pad_value)
    k = [3] * rank
    if conv == "Convolution":
        w = RNG.standard_normal([6, 4] + k).astype(np.float32)
        y = ops.convolution(p, w, [stride] * rank, own[0][:rank], own[1][:rank], [1] * rank, auto_pad)
    else:
        w = RNG.standard_normal([4, 1, 1] + k).astype(np.float32)
        y = ops.group_convolution(p, w, [stride] * rank, own[0][:rank], own[1][:rank], [1] * rank, auto_pad)
    return Model([y], [x])


# name, model, whether the Pad folds
CASES = [
    ("conv_same_tf", lambda: _build("Convolution", [0, 0, 0, 0], [0, 0, 1, 1], stride=2), True),
    ("conv_symmetric", lambda: _build("Convolution", [0, 0, 1, 1], [0, 0, 1, 1]), True),
    ("conv_plus_own_pads", lambda: _build("Convolution", [0, 0, 1, 0], [0, 0, 0, 2], own=([1, 1], [1, 0])), True),
    ("conv_valid", lambda: _build("Convolution", [0, 0, 2, 1], [0, 0, 1, 2], auto_pad="valid"), True),
    ("group_conv_depthwise", lambda: _build("GroupConvolution", [0, 0, 0, 0], [0, 0, 1, 1], stride=2), True),
    ("conv_1d", lambda: _build("Convolution", [0, 0, 2], [0, 0, 1], rank=1), True),
    ("explicit_zero_value", lambda: _build("Convolution", [0, 0, 1, 1], [0, 0, 1, 1], value=0.0), True),
    ("nonzero_value", lambda: _build("Convolution", [0, 0, 1, 1], [0, 0, 1, 1], value=1.5), False),
    ("reflect", lambda: _build("Convolution", [0, 0, 1, 1], [0, 0, 1, 1], mode="reflect"), False),
    ("pads_channels", lambda: _channel_pad(), False),
    ("same_upper", lambda: _build("Convolution", [0, 0, 1, 1], [0, 0, 1, 1], auto_pad="same_upper"), False),
]


def _channel_pad() -> Model:
    x = ops.parameter([-1, 3, 7, 7], np.float32, name="x")
    p = ops.pad(x, [0, 1, 0, 0], [0, 0, 0, 0], "constant")
    w = RNG.standard_normal([6, 4, 3, 3]).astype(np.float32)
    return Model([ops.convolution(p, w, [1, 1], [0, 0], [0, 0], [1, 1])], [x])


@pytest.mark.parametrize(("name", "build", "folds"), CASES, ids=[c[0] for c in CASES])
def test_pad_into_conv(name: str, build: object, folds: bool) -> None:
    model = build()  # type: ignore[operator]
    after = get_pass("fold_pad_into_conv").fn(model.clone())
    for batch in (1, 3):
        shape = [batch] + [d.get_length() for d in list(model.inputs[0].partial_shape)[1:]]
        x = RNG.standard_normal(shape).astype(np.float32)
        want, got = run_model(model, [x])[0], run_model(after, [x])[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    pads = collections.Counter(n.type_name for n in after.get_ordered_ops())["Pad"]
    assert pads == (0 if folds else 1)
    if folds:
        conv = after.outputs[0].node.input_values()[0].node
        assert conv.attrs["auto_pad"] == "explicit"
