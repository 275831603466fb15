"""Whole recurrent layers as TorchScript graphs keep them (``aten::lstm``, ``aten::gru``) as
OpenVINO's LSTMSequence / GRUSequence, one per layer (both directions in one op)."""

from __future__ import annotations

import numpy as np

import ember.opset as ops
from ember.frontends.pytorch.context import Call, const, i64, rank_of
from ember.frontends.pytorch.registry import converter
from ember.graph.node import Output


def _reorder(w: Output, blocks: list[int], hidden: int) -> Output:
    """Gate blocks of ``hidden`` rows in torch's order rearranged as ``blocks`` (OpenVINO's order)."""
    order = np.concatenate([np.arange(b * hidden, (b + 1) * hidden) for b in blocks])
    return ops.gather(w, i64(order), i64(0)).output(0)


def _stack(parts: list[Output]) -> Output:
    ups = [ops.unsqueeze(p, i64([0])).output(0) for p in parts]
    return ups[0] if len(ups) == 1 else ops.concat(ups, 0).output(0)


def _layer_state(state: Output, layer: int, dirs: int) -> Output:
    """Rows ``layer*dirs .. +dirs`` of a ``[layers*dirs, batch, H]`` state as ``[batch, dirs, H]``."""
    rows = ops.slice(state, i64([layer * dirs]), i64([(layer + 1) * dirs]), i64([1]), i64([0])).output(0)
    return ops.transpose(rows, i64([1, 0, 2])).output(0)


def _recurrent(call: Call, gates: int, torch_to_ov: list[int]) -> tuple[Output, list[Output], list[Output]]:
    x = call.tensor("input")
    params = list(call["params"])
    has_bias = bool(call.get("has_biases", True))
    layers = call.int("num_layers")
    dirs = 2 if call.get("bidirectional", False) else 1
    batch_first = bool(call.get("batch_first", False))
    per = 4 if has_bias else 2
    if rank_of(x) != 3:
        raise call.fail("unbatched recurrent input is not supported")
    if not batch_first:
        x = ops.transpose(x, i64([1, 0, 2])).output(0)
    hidden = params[1].partial_shape[1].get_length()
    lstm = gates == 4
    hx = call["hx"]
    h0 = hx[0] if lstm else hx
    c0 = hx[1] if lstm else None
    shape = ops.shape_of(x, "i64").output(0)
    lengths = ops.broadcast(ops.gather(shape, i64(1), i64(0)), ops.gather(shape, i64([0]), i64(0))).output(0)
    h_out, c_out = [], []
    for layer in range(layers):
        w, r, b = [], [], []
        for d in range(dirs):
            p = params[(layer * dirs + d) * per:(layer * dirs + d + 1) * per]
            w.append(_reorder(p[0], torch_to_ov, hidden))
            r.append(_reorder(p[1], torch_to_ov, hidden))
            if has_bias:
                if lstm:
                    b.append(_reorder(ops.add(p[2], p[3]).output(0), torch_to_ov, hidden))
                else:  # linear_before_reset: [z, r] biases summed, then the input and hidden biases of n
                    zr_i = _reorder(p[2], torch_to_ov[:2], hidden)
                    zr_h = _reorder(p[3], torch_to_ov[:2], hidden)
                    n_i = ops.slice(p[2], i64([2 * hidden]), i64([3 * hidden]), i64([1])).output(0)
                    n_h = ops.slice(p[3], i64([2 * hidden]), i64([3 * hidden]), i64([1])).output(0)
                    b.append(ops.concat([ops.add(zr_i, zr_h).output(0), n_i, n_h], 0).output(0))
            else:
                b.append(const(np.zeros((gates + (0 if lstm else 1)) * hidden), x.element_type))
        direction = "bidirectional" if dirs == 2 else "forward"
        h_l = _layer_state(h0, layer, dirs)
        if lstm:
            node = ops.lstm_sequence(x, h_l, _layer_state(c0, layer, dirs), lengths, _stack(w), _stack(r), _stack(b),
                                     hidden, direction)
            c_out.append(ops.transpose(node.output(2), i64([1, 0, 2])).output(0))
        else:
            node = ops.gru_sequence(x, h_l, lengths, _stack(w), _stack(r), _stack(b), hidden, direction,
                                    linear_before_reset=True)
        h_out.append(ops.transpose(node.output(1), i64([1, 0, 2])).output(0))
        y = ops.transpose(node.output(0), i64([0, 2, 1, 3])).output(0)  # [batch, seq, dirs, H]
        x = ops.reshape(y, i64([0, 0, -1]), True).output(0)
    if not batch_first:
        x = ops.transpose(x, i64([1, 0, 2])).output(0)
    return x, h_out, c_out


def _cat(parts: list[Output]) -> Output:
    return parts[0] if len(parts) == 1 else ops.concat(parts, 0).output(0)


@converter("aten.lstm.input")
def lstm(call: Call) -> tuple[Output, Output, Output]:
    y, h, c = _recurrent(call, 4, [1, 0, 2, 3])  # torch i, f, g, o -> OpenVINO f, i, c, o
    return y, _cat(h), _cat(c)


@converter("aten.gru.input")
def gru(call: Call) -> tuple[Output, Output]:
    y, h, _ = _recurrent(call, 3, [1, 0, 2])  # torch r, z, n -> OpenVINO z, r, h
    return y, _cat(h)
