"""LSTM, GRU and RNN onto OpenVINO's LSTMSequence, GRUSequence and RNNSequence.

ONNX keeps time first (``layout=0``), states direction first and LSTM gates in i, o, f, c
order; OpenVINO keeps batch first and gates in f, i, c, o. The converters transpose and
reorder around one sequence op.
"""

from __future__ import annotations

import numpy as np

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const_like, convert, i64, shape_of
from ember.graph.node import Output, constant_value
from ember.graph.types import Type

_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def _gates(x: Output, n: int, axis: int) -> list[Output]:
    return ops.split(x, i64(axis), n).outputs() if n > 1 else [x]


def _activations(ctx: NodeContext, n_dirs: int, op: str) -> tuple[list[str], list[float], list[float]]:
    default = _DEFAULT_ACTS[op]
    acts = ctx.attr("activations", default * n_dirs)
    k = len(default)
    if len(acts) == k * 2 and acts[:k] != acts[k:]:
        raise ctx.fail("different activations per direction are not supported")
    alpha = ctx.attr("activations_alpha", [])
    beta = ctx.attr("activations_beta", [])
    return [a.lower() for a in acts[:k]], alpha, beta


def _zeros_state(x_bt: Output, n_dirs: int, hidden: int) -> Output:
    batch = ops.gather(shape_of(x_bt), i64([0]), i64(0)).output(0)
    shape = ops.concat([batch, i64([n_dirs, hidden])], 0).output(0)
    return ops.broadcast(const_like(0, x_bt), shape).output(0)


def _state(s: Output | None, x_bt: Output, n_dirs: int, hidden: int, layout: int) -> Output:
    if s is not None:
        return s if layout else ops.transpose(s, i64([1, 0, 2])).output(0)
    return _zeros_state(x_bt, n_dirs, hidden)


@converter(["LSTM", "GRU", "RNN"], since=7)
def recurrent(ctx: NodeContext) -> list[Output | None]:
    return _recurrent(ctx, ctx.op_type, [ctx.input(i) if ctx.has_input(i) else None for i in range(8)])


def lstm_from(ctx: NodeContext, x: Output, w: Output, r: Output, *rest: Output | None) -> list[Output | None]:
    """An ONNX LSTM of ``ctx``'s attributes on given inputs (X, W, R, then B, sequence_lens,
    initial_h, initial_c, P as ONNX orders them; None where absent)."""
    values: list[Output | None] = [x, w, r, *rest]
    return _recurrent(ctx, "LSTM", values + [None] * (8 - len(values)))


def _recurrent(ctx: NodeContext, op: str, inputs: list[Output | None]) -> list[Output | None]:
    x, w, r = inputs[0], inputs[1], inputs[2]
    if x is None or w is None or r is None:
        raise ctx.fail("inputs X, W and R are required")
    hidden = ctx.attr("hidden_size")
    direction = ctx.attr("direction", "forward")
    n_dirs = 2 if direction == "bidirectional" else 1
    layout = ctx.attr("layout", 0)
    acts, alpha, beta = _activations(ctx, n_dirs, op)
    clip = ctx.attr("clip", 0.0)
    if op == "LSTM":
        p = constant_value(inputs[7]) if inputs[7] is not None else None
        if ctx.attr("input_forget", 0) or (inputs[7] is not None and (p is None or p.any())):
            return _lstm_onnx(ctx, inputs)  # LSTMSequence has no peepholes nor coupled gates
    x_bt = x if layout else ops.transpose(x, i64([1, 0, 2])).output(0)
    if inputs[4] is not None:
        lens = convert(inputs[4], Type.i32)
    else:
        b_t = ops.gather(shape_of(x_bt, Type.i32), i64([0, 1]), i64(0)).output(0)
        steps = ops.gather(b_t, i64([1]), i64(0)).output(0)
        lens = ops.broadcast(steps, ops.gather(b_t, i64([0]), i64(0))).output(0)
    if inputs[3] is not None:
        wb, rb = _gates(inputs[3], 2, 1)
    else:
        wb = rb = None
    h0 = _state(inputs[5], x_bt, n_dirs, hidden, layout)
    if op == "LSTM":
        order = [2, 0, 3, 1]  # ONNX i, o, f, c -> OpenVINO f, i, c, o
        w = ops.concat([_gates(w, 4, 1)[k] for k in order], 1).output(0)
        r = ops.concat([_gates(r, 4, 1)[k] for k in order], 1).output(0)
        if wb is not None:
            b = ops.add(wb, rb).output(0)
            b = ops.concat([_gates(b, 4, 1)[k] for k in order], 1).output(0)
        else:
            b = _zero_bias(w, 4 * hidden)
        c0 = _state(inputs[6], x_bt, n_dirs, hidden, layout)
        node = ops.lstm_sequence(x_bt, h0, c0, lens, w, r, b, hidden, direction, acts, alpha, beta, clip)
    elif op == "GRU":
        lbr = bool(ctx.attr("linear_before_reset", 0))
        if wb is None:
            b = _zero_bias(w, (4 if lbr else 3) * hidden)
        elif lbr:
            wz, wr, wh = _gates(wb, 3, 1)
            rz, rr, rh = _gates(rb, 3, 1)
            b = ops.concat([ops.add(wz, rz), ops.add(wr, rr), wh, rh], 1).output(0)
        else:
            b = ops.add(wb, rb).output(0)
        node = ops.gru_sequence(x_bt, h0, lens, w, r, b, hidden, direction, acts, alpha, beta, clip, lbr)
    else:
        b = ops.add(wb, rb).output(0) if wb is not None else _zero_bias(w, hidden)
        node = ops.rnn_sequence(x_bt, h0, lens, w, r, b, hidden, direction, acts, alpha, beta, clip)
    outs = node.outputs()
    y = ops.transpose(outs[0], i64([0, 2, 1, 3] if layout else [2, 1, 0, 3])).output(0)
    states = [s if layout else ops.transpose(s, i64([1, 0, 2])).output(0) for s in outs[1:]]
    return [y, *states]


def _lstm_onnx(ctx: NodeContext, inputs: list[Output | None]) -> list[Output | None]:
    """ember's own LSTMONNX op (peepholes, input_forget), on ONNX's time-first layout."""
    from ember.frontends.onnx.utils import const

    if ctx.attr("layout", 0):
        raise ctx.fail("layout=1 with peepholes or input_forget is not supported")
    x = inputs[0]
    assert x is not None
    filled = [v if v is not None else const(np.zeros(0), x.element_type if i != 4 else Type.i32)
              for i, v in enumerate(inputs)]
    dirs = 2 if ctx.attr("direction", "forward") == "bidirectional" else 1
    acts = [a.lower() for a in ctx.attr("activations", ["Sigmoid", "Tanh", "Tanh"] * dirs)]
    node = ops.lstm_onnx(*filled, hidden_size=ctx.attr("hidden_size"), direction=ctx.attr("direction", "forward"),
                         activations=acts, activations_alpha=ctx.attr("activations_alpha", []),
                         activations_beta=ctx.attr("activations_beta", []),
                         clip=ctx.attr("clip", 0.0), input_forget=bool(ctx.attr("input_forget", 0)))
    return list(node.outputs())


def _zero_bias(w: Output, width: int) -> Output:
    dirs = ops.gather(shape_of(w), i64([0]), i64(0)).output(0)
    shape = ops.concat([dirs, i64([width])], 0).output(0)
    return ops.broadcast(const_like(0, w), shape).output(0)
