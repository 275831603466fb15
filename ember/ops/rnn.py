"""Recurrent cells and sequences: LSTMCell/LSTMSequence, GRUCell/GRUSequence, RNNCell/RNNSequence.

Layouts as OpenVINO defines them: sequences take ``X [batch, seq, input]``, states
``[batch, num_directions, hidden]``, weights ``W [dirs, gates*hidden, input]``,
``R [dirs, gates*hidden, hidden]``, ``B [dirs, gates*hidden]`` (GRU with
``linear_before_reset`` has 4 bias blocks) and return ``Y [batch, dirs, seq, hidden]`` and the
last states. LSTM gates are ordered f, i, c, o; GRU gates z, r, h. Steps past a batch item's
sequence length leave its state unchanged and write zeros to ``Y``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# name -> (function(x, alpha, beta), uses alpha, uses beta, default alpha, default beta)
_ACTIVATIONS: dict[str, tuple[Callable[..., np.ndarray], bool, bool, float, float]] = {
    "sigmoid": (lambda x, a, b: _sigmoid(x), False, False, 0.0, 0.0),
    "tanh": (lambda x, a, b: np.tanh(x), False, False, 0.0, 0.0),
    "relu": (lambda x, a, b: np.maximum(x, 0.0), False, False, 0.0, 0.0),
    "affine": (lambda x, a, b: a * x + b, True, True, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), True, False, 0.01, 0.0),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0.0), True, False, 1.0, 0.0),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), True, True, 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0.0, 1.0), True, True, 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * (np.exp(np.minimum(x, 0.0)) - 1.0)), True, False, 1.0, 0.0),
    "softsign": (lambda x, a, b: x / (1.0 + np.abs(x)), False, False, 0.0, 0.0),
    "softplus": (lambda x, a, b: np.logaddexp(0.0, x), False, False, 0.0, 0.0),
}


def _activations(node: Node) -> list[Callable[[np.ndarray], np.ndarray]]:
    """The node's activation functions with their alpha/beta values bound, in order."""
    alphas = list(node.attrs["activations_alpha"])
    betas = list(node.attrs["activations_beta"])
    out = []
    for name in node.attrs["activations"]:
        fn, ua, ub, da, db = _ACTIVATIONS[name.lower()]
        a = alphas.pop(0) if ua and alphas else da
        b = betas.pop(0) if ub and betas else db
        out.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    return out


def _clip(x: np.ndarray, clip: float) -> np.ndarray:
    return np.clip(x, -clip, clip) if clip > 0 else x


def _lstm_step(x: np.ndarray, h: np.ndarray, c: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray,
               acts: Sequence[Callable[..., np.ndarray]], clip: float) -> tuple[np.ndarray, np.ndarray]:
    f_act, g_act, h_act = acts
    gates = x @ w.T + h @ r.T + b
    hs = h.shape[-1]
    f, i, cc, o = (_clip(gates[:, k * hs:(k + 1) * hs], clip) for k in range(4))
    c_new = f_act(f) * c + f_act(i) * g_act(cc)
    return f_act(o) * h_act(c_new), c_new


def _gru_step(x: np.ndarray, h: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray,
              acts: Sequence[Callable[..., np.ndarray]], clip: float, lbr: bool) -> np.ndarray:
    f_act, g_act = acts
    hs = h.shape[-1]
    xw = x @ w.T
    wz, wr, wh = (xw[:, k * hs:(k + 1) * hs] for k in range(3))
    rz, rr, rh = (r[k * hs:(k + 1) * hs] for k in range(3))
    bz, br, bh = b[:hs], b[hs:2 * hs], b[2 * hs:3 * hs]
    z = f_act(_clip(wz + h @ rz.T + bz, clip))
    rg = f_act(_clip(wr + h @ rr.T + br, clip))
    if lbr:
        hh = g_act(_clip(wh + rg * (h @ rh.T + b[3 * hs:4 * hs]) + bh, clip))
    else:
        hh = g_act(_clip(wh + (rg * h) @ rh.T + bh, clip))
    return (1.0 - z) * hh + z * h


def _rnn_step(x: np.ndarray, h: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray,
              acts: Sequence[Callable[..., np.ndarray]], clip: float) -> np.ndarray:
    return acts[0](_clip(x @ w.T + h @ r.T + b, clip))


def _merge(*dims: Dimension) -> Dimension:
    out = Dimension()
    for d in dims:
        try:
            out = out.merge(d)
        except Exception:  # noqa: BLE001 - keep the first when they disagree; evaluate will say
            pass
    return out


def _dims(shape: PartialShape, n: int) -> list[Dimension]:
    return list(shape) if shape.rank_is_static and len(shape) == n else [Dimension()] * n


class _Recurrent(Node):
    """Shared attributes and checks of the six recurrent ops."""

    gates: int = 1
    default_activations: tuple[str, ...] = ("tanh",)

    def _common_checks(self) -> Type:
        for name in self.attrs["activations"]:
            if name.lower() not in _ACTIVATIONS:
                raise self.fail(f"unknown activation '{name}'; known: {', '.join(_ACTIVATIONS)}")
        if len(self.attrs["activations"]) != len(self.default_activations):
            raise self.fail(f"needs {len(self.default_activations)} activations, got "
                            f"{len(self.attrs['activations'])}")
        et = self.input_type(0)
        if not (et.is_real or et.is_dynamic):
            raise self.fail(f"needs floating-point data, got {et}")
        return et

    def _acts(self) -> list[Callable[[np.ndarray], np.ndarray]]:
        return _activations(self)


def _rnn_attrs(activations: tuple[str, ...], sequence: bool, gru: bool = False) -> tuple[Attr, ...]:
    rows: list[Attr] = []
    if sequence:
        rows.append(Attr("direction", "str"))
    if gru:
        rows.append(Attr("linear_before_reset", "bool", False))
    rows += [Attr("hidden_size", "int"), Attr("activations", "strs", list(activations)),
             Attr("activations_alpha", "floats", []), Attr("activations_beta", "floats", []),
             Attr("clip", "float", 0.0)]
    return tuple(rows)


class _Sequence(_Recurrent):
    """``X, H0, [C0], seq_lengths, W, R, B`` -> ``Y, Ho, [Co]``."""

    has_cell = False

    def infer(self) -> list[tuple[Type, PartialShape]]:
        et = self._common_checks()
        direction = self.attrs["direction"].lower()
        if direction not in ("forward", "reverse", "bidirectional"):
            raise self.fail(f"unknown direction '{self.attrs['direction']}'")
        n_dir = 2 if direction == "bidirectional" else 1
        k = 1 if self.has_cell else 0
        b, t, _ = _dims(self.input_shape(0), 3)
        hb, hd, hh = _dims(self.input_shape(1), 3)
        w_port = 3 + k
        wd = _dims(self.input_shape(w_port), 3)[0]
        hidden = _merge(Dimension(self.attrs["hidden_size"]), hh)
        batch = _merge(b, hb)
        dirs = _merge(Dimension(n_dir), hd, wd)
        if dirs.is_static and dirs.get_length() != n_dir:
            raise self.fail(f"direction '{direction}' needs {n_dir} direction(s) in the weights and states")
        y = PartialShape([batch, Dimension(n_dir), t, hidden])
        state = PartialShape([batch, Dimension(n_dir), hidden])
        return [(et, y), (et, state)] + ([(et, state)] if self.has_cell else [])

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        k = 1 if self.has_cell else 0
        x = inputs[0].astype(np.float64)
        h0 = inputs[1].astype(np.float64)
        c0 = inputs[2].astype(np.float64) if self.has_cell else None
        lens = inputs[2 + k].astype(np.int64).reshape(-1)
        w, r, b = (inputs[i].astype(np.float64) for i in (3 + k, 4 + k, 5 + k))
        batch, steps, _ = x.shape
        hidden = self.attrs["hidden_size"]
        direction = self.attrs["direction"].lower()
        dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        acts = self._acts()
        y = np.zeros((batch, len(dirs), steps, hidden))
        ho = np.zeros((batch, len(dirs), hidden))
        co = np.zeros((batch, len(dirs), hidden))
        lens = np.broadcast_to(np.clip(lens, 0, steps), (batch,))
        for d, dname in enumerate(dirs):
            h = h0[:, d].copy()
            c = c0[:, d].copy() if c0 is not None else None
            for s in range(steps):
                # for the reverse direction step s reads position len-1-s of each item
                pos = np.where(dname == "reverse", lens - 1 - s, np.full(batch, s))
                active = s < lens
                idx = np.clip(pos, 0, steps - 1)
                xt = x[np.arange(batch), idx]
                h_new, c_new = self._step(xt, h, c, w[d], r[d], b[d], acts)
                h = np.where(active[:, None], h_new, h)
                if c is not None:
                    c = np.where(active[:, None], c_new, c)
                on = np.nonzero(active)[0]
                y[on, d, idx[on]] = h[on]
            ho[:, d] = h
            if c is not None:
                co[:, d] = c
        # a row of length 0 runs no step: its final states are zeros (as OpenVINO and ONNX Runtime give)
        ho[lens == 0] = 0.0
        co[lens == 0] = 0.0
        dt = inputs[0].dtype
        outs = [y.astype(dt), ho.astype(dt)]
        if self.has_cell:
            outs.append(co.astype(dt))
        return outs

    def _step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray | None, w: np.ndarray, r: np.ndarray,
              b: np.ndarray, acts: list[Callable[..., np.ndarray]]) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError


@register_op
class LSTMSequence(_Sequence):
    """OpenVINO LSTMSequence-5: an LSTM over a sequence, forward, reverse or both ways."""

    type_name = "LSTMSequence"
    version = "opset5"
    num_inputs = (7, 7)
    has_cell = True
    gates = 4
    default_activations = ("sigmoid", "tanh", "tanh")
    attributes = _rnn_attrs(default_activations, True)

    def _step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray | None, w: np.ndarray, r: np.ndarray,
              b: np.ndarray, acts: list[Callable[..., np.ndarray]]) -> tuple[np.ndarray, np.ndarray | None]:
        assert c is not None
        return _lstm_step(x, h, c, w, r, b, acts, self.attrs["clip"])


@register_op
class GRUSequence(_Sequence):
    """OpenVINO GRUSequence-5."""

    type_name = "GRUSequence"
    version = "opset5"
    num_inputs = (6, 6)
    gates = 3
    default_activations = ("sigmoid", "tanh")
    attributes = _rnn_attrs(default_activations, True, gru=True)

    def _step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray | None, w: np.ndarray, r: np.ndarray,
              b: np.ndarray, acts: list[Callable[..., np.ndarray]]) -> tuple[np.ndarray, np.ndarray | None]:
        return _gru_step(x, h, w, r, b, acts, self.attrs["clip"], self.attrs["linear_before_reset"]), None


@register_op
class RNNSequence(_Sequence):
    """OpenVINO RNNSequence-5."""

    type_name = "RNNSequence"
    version = "opset5"
    num_inputs = (6, 6)
    default_activations = ("tanh",)
    attributes = _rnn_attrs(default_activations, True)

    def _step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray | None, w: np.ndarray, r: np.ndarray,
              b: np.ndarray, acts: list[Callable[..., np.ndarray]]) -> tuple[np.ndarray, np.ndarray | None]:
        return _rnn_step(x, h, w, r, b, acts, self.attrs["clip"]), None


class _Cell(_Recurrent):
    """``X [batch, input], H [batch, hidden], [C], W, R, B`` -> ``Ho, [Co]``."""

    has_cell = False

    def infer(self) -> list[tuple[Type, PartialShape]]:
        et = self._common_checks()
        b, _ = _dims(self.input_shape(0), 2)
        hb, hh = _dims(self.input_shape(1), 2)
        state = PartialShape([_merge(b, hb), _merge(Dimension(self.attrs["hidden_size"]), hh)])
        return [(et, state)] + ([(et, state)] if self.has_cell else [])


@register_op
class LSTMCell(_Cell):
    """OpenVINO LSTMCell-4: one LSTM step."""

    type_name = "LSTMCell"
    version = "opset4"
    num_inputs = (6, 6)
    has_cell = True
    default_activations = ("sigmoid", "tanh", "tanh")
    attributes = _rnn_attrs(default_activations, False)

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, h, c, w, r, b = (a.astype(np.float64) for a in inputs)
        hn, cn = _lstm_step(x, h, c, w, r, b, self._acts(), self.attrs["clip"])
        return [hn.astype(inputs[0].dtype), cn.astype(inputs[0].dtype)]


@register_op
class GRUCell(_Cell):
    """OpenVINO GRUCell-3: one GRU step."""

    type_name = "GRUCell"
    version = "opset3"
    num_inputs = (5, 5)
    default_activations = ("sigmoid", "tanh")
    attributes = _rnn_attrs(default_activations, False, gru=True)

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, h, w, r, b = (a.astype(np.float64) for a in inputs)
        hn = _gru_step(x, h, w, r, b, self._acts(), self.attrs["clip"], self.attrs["linear_before_reset"])
        return [hn.astype(inputs[0].dtype)]


@register_op
class RNNCell(_Cell):
    """OpenVINO RNNCell-1 (opset1): one simple RNN step."""

    type_name = "RNNCell"
    version = "opset1"
    num_inputs = (5, 5)
    default_activations = ("tanh",)
    attributes = _rnn_attrs(default_activations, False)

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, h, w, r, b = (a.astype(np.float64) for a in inputs)
        return [_rnn_step(x, h, w, r, b, self._acts(), self.attrs["clip"]).astype(inputs[0].dtype)]


def _attrs(hidden_size: int, activations: Any, alpha: Any, beta: Any, clip: float, default: tuple[str, ...],
           **extra: Any) -> dict[str, Any]:
    return {"hidden_size": hidden_size, "activations": list(activations or default),
            "activations_alpha": list(alpha or []), "activations_beta": list(beta or []), "clip": clip, **extra}


@builder
def lstm_sequence(X: Any, initial_hidden_state: Any, initial_cell_state: Any, sequence_lengths: Any, W: Any,  # noqa: N803
                  R: Any, B: Any, hidden_size: int, direction: str, activations: list[str] | None = None,  # noqa: N803
                  activations_alpha: list[float] | None = None, activations_beta: list[float] | None = None,
                  clip: float = 0.0, name: str | None = None) -> Node:
    """An LSTMSequence-5 node; gates in W/R/B are ordered f, i, c, o."""
    return LSTMSequence([X, initial_hidden_state, initial_cell_state, sequence_lengths, W, R, B],
                        _attrs(hidden_size, activations, activations_alpha, activations_beta, clip,
                               LSTMSequence.default_activations, direction=direction.lower()), name)


@builder
def gru_sequence(X: Any, initial_hidden_state: Any, sequence_lengths: Any, W: Any, R: Any, B: Any,  # noqa: N803
                 hidden_size: int, direction: str, activations: list[str] | None = None,
                 activations_alpha: list[float] | None = None, activations_beta: list[float] | None = None,
                 clip: float = 0.0, linear_before_reset: bool = False, name: str | None = None) -> Node:
    """A GRUSequence-5 node; gates ordered z, r, h."""
    return GRUSequence([X, initial_hidden_state, sequence_lengths, W, R, B],
                       _attrs(hidden_size, activations, activations_alpha, activations_beta, clip,
                              GRUSequence.default_activations, direction=direction.lower(),
                              linear_before_reset=linear_before_reset), name)


@builder
def rnn_sequence(X: Any, initial_hidden_state: Any, sequence_lengths: Any, W: Any, R: Any, B: Any,  # noqa: N803
                 hidden_size: int, direction: str, activations: list[str] | None = None,
                 activations_alpha: list[float] | None = None, activations_beta: list[float] | None = None,
                 clip: float = 0.0, name: str | None = None) -> Node:
    """An RNNSequence-5 node."""
    return RNNSequence([X, initial_hidden_state, sequence_lengths, W, R, B],
                       _attrs(hidden_size, activations, activations_alpha, activations_beta, clip,
                              RNNSequence.default_activations, direction=direction.lower()), name)


@builder
def lstm_cell(X: Any, initial_hidden_state: Any, initial_cell_state: Any, W: Any, R: Any, B: Any,  # noqa: N803
              hidden_size: int, activations: list[str] | None = None, activations_alpha: list[float] | None = None,
              activations_beta: list[float] | None = None, clip: float = 0.0, name: str | None = None) -> Node:
    """An LSTMCell-4 node."""
    return LSTMCell([X, initial_hidden_state, initial_cell_state, W, R, B],
                    _attrs(hidden_size, activations, activations_alpha, activations_beta, clip,
                           LSTMCell.default_activations), name)


@builder
def gru_cell(X: Any, initial_hidden_state: Any, W: Any, R: Any, B: Any, hidden_size: int,  # noqa: N803
             activations: list[str] | None = None, activations_alpha: list[float] | None = None,
             activations_beta: list[float] | None = None, clip: float = 0.0, linear_before_reset: bool = False,
             name: str | None = None) -> Node:
    """A GRUCell-3 node."""
    return GRUCell([X, initial_hidden_state, W, R, B],
                   _attrs(hidden_size, activations, activations_alpha, activations_beta, clip,
                          GRUCell.default_activations, linear_before_reset=linear_before_reset), name)


@builder
def rnn_cell(X: Any, initial_hidden_state: Any, W: Any, R: Any, B: Any, hidden_size: int,  # noqa: N803
             activations: list[str], activations_alpha: list[float], activations_beta: list[float],
             clip: float = 0.0, name: str | None = None) -> Node:
    """An RNNCell-1 node."""
    return RNNCell([X, initial_hidden_state, W, R, B],
                   _attrs(hidden_size, activations, activations_alpha, activations_beta, clip,
                          RNNCell.default_activations), name)
