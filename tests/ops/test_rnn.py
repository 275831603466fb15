"""LSTM/GRU/RNN cells and sequences against OpenVINO, from one table of cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from oracle import Const, compare_with_openvino

R = np.random.default_rng(3)


def _f(*shape: int, scale: float = 0.5) -> np.ndarray:
    return (R.standard_normal(shape) * scale).astype(np.float32)


def _seq_case(kind: str, direction: str, lens: list[int], t: int = 4, **kw: Any) -> tuple:
    b, i, h = len(lens), 3, 5
    d = 2 if direction == "bidirectional" else 1
    g = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    bias_gates = 4 if kw.get("linear_before_reset") else g
    inputs: list[Any] = [_f(b, t, i), _f(b, d, h)]
    if kind == "lstm":
        inputs.append(_f(b, d, h))
    inputs += [Const(np.array(lens, np.int32)), Const(_f(d, g * h, i)), Const(_f(d, g * h, h)),
               Const(_f(d, bias_gates * h))]
    return f"{kind}_sequence", inputs, (h, direction), kw


CASES = [
    _seq_case("lstm", "forward", [4, 4]),
    _seq_case("lstm", "reverse", [4, 2, 1]),
    _seq_case("lstm", "bidirectional", [3, 4], clip=0.7),
    _seq_case("lstm", "forward", [4], activations=["relu", "tanh", "sigmoid"]),
    _seq_case("gru", "forward", [4, 3]),
    _seq_case("gru", "bidirectional", [2, 4], linear_before_reset=True),
    _seq_case("rnn", "reverse", [4, 1]),
    _seq_case("rnn", "bidirectional", [4, 4], activations=["relu"]),
    ("lstm_cell", [_f(2, 3), _f(2, 5), _f(2, 5), Const(_f(20, 3)), Const(_f(20, 5)), Const(_f(20))], (5,), {}),
    ("gru_cell", [_f(2, 3), _f(2, 5), Const(_f(15, 3)), Const(_f(15, 5)), Const(_f(20))], (5,),
     {"linear_before_reset": True}),
    ("rnn_cell", [_f(2, 3), _f(2, 5), Const(_f(5, 3)), Const(_f(5, 5)), Const(_f(5))], (5, ["tanh"], [], []), {}),
]


@pytest.mark.parametrize("builder, inputs, args, kwargs", CASES)
def test_against_openvino(builder: str, inputs: list, args: tuple, kwargs: dict) -> None:
    compare_with_openvino(builder, inputs, *args, rtol=1e-4, atol=1e-5, **kwargs)
