"""Lowering rules for the recurrent ops: LSTMSequence, GRUSequence, RNNSequence and their
cells (LSTMCell, GRUCell, RNNCell).

Each becomes one op of three kernel calls (``kernels/rnn.py``): the input projection of every
time step as one GEMM, the initial states into scratch rows, then the whole time loop in one
native call. Weights, recurrent
weights and biases must be constants (they are packed once); sequence lengths may be a
constant or a runtime int32/int64 tensor. Activations the kernel lacks, non-f32 data, dynamic
shapes or empty dimensions keep the node on its reference kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import F32, Lowering, const_of, lowers, static_shape
from ember.devices.cpu.runtime.plan import PLAIN, Tensor
from ember.devices.cpu.runtime.plan import Op as PlanOp
from ember.graph.node import Node

_CELL_OF = {"LSTMSequence": "lstm", "GRUSequence": "gru", "RNNSequence": "rnn",
            "LSTMCell": "lstm", "GRUCell": "gru", "RNNCell": "rnn"}


@lowers("LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell", "RNNCell")
def lower_recurrent(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.rnn import Recurrent, bind_activations

    sequence = node.type_name.endswith("Sequence")
    cell = _CELL_OF[node.type_name]
    if cell == "gru" and node.attrs["linear_before_reset"]:
        cell = "gru_lbr"
    has_c = cell == "lstm"
    ports = node.input_values()
    k = 1 if has_c else 0
    # X, H0, [C0], [lens], W, R, B
    x_port, h_port = ports[0], ports[1]
    c_port = ports[2] if has_c else None
    lens_port = ports[2 + k] if sequence else None
    w_port, r_port, b_port = ports[-3], ports[-2], ports[-1]
    for p in [x_port, h_port, c_port, w_port, r_port, b_port]:
        if p is not None and p.element_type.dtype != F32:
            return False
    w, r, bias = const_of(w_port), const_of(r_port), const_of(b_port)
    if w is None or r is None or bias is None:
        return False
    acts = bind_activations(node.attrs["activations"], node.attrs["activations_alpha"], node.attrs["activations_beta"])
    if acts is None:
        return False
    hidden = int(node.attrs["hidden_size"])
    x_shape = static_shape(x_port)
    if sequence:
        batch, seq, isz = x_shape
        direction = str(node.attrs["direction"]).lower()
        reverse = [False, True] if direction == "bidirectional" else [direction == "reverse"]
    else:
        (batch, isz), seq, reverse = x_shape, 1, [False]
        w, r, bias = w[None], r[None], bias[None]
    dirs = len(reverse)
    gates = {"lstm": 4, "gru": 3, "gru_lbr": 3, "rnn": 1}[cell]
    if min(batch, seq, isz, hidden) <= 0 or w.shape != (dirs, gates * hidden, isz) \
            or r.shape != (dirs, gates * hidden, hidden) or bias.size != dirs * (gates + (cell == "gru_lbr")) * hidden:
        return False
    lens_t: Tensor | None = None
    if lens_port is not None:
        lv = const_of(lens_port)
        if lv is not None:
            lv = np.broadcast_to(np.asarray(lv).reshape(-1), (batch,))
            if not np.all(lv >= seq):  # full lengths need no table
                lens_t = lowering.program.const(np.ascontiguousarray(np.clip(lv, 0, seq), np.int32))
        else:
            if lens_port.element_type.dtype not in (np.dtype(np.int32), np.dtype(np.int64)) \
                    or static_shape(lens_port) != (batch,):
                return False
            lens_t = lowering.native_input(lowering.tensor(lens_port), PLAIN)
    rec = Recurrent(cell, w, r, bias, hidden, reverse, batch, seq, acts, float(node.attrs["clip"]),
                    lowering.threads, lowering.isa, lowering.precision)
    lowering.bf16_ops += lowering.precision == "bf16"
    x = lowering.native_input(lowering.tensor(x_port), PLAIN)
    h0 = lowering.native_input(lowering.tensor(h_port), PLAIN)
    ins = [x, h0]
    if c_port is not None:
        ins.append(lowering.native_input(lowering.tensor(c_port), PLAIN))
    if lens_t is not None:
        ins.append(lens_t)
    outs = []
    for o in node.outputs():
        t = lowering.value(static_shape(o), PLAIN, name=node.friendly_name)
        outs.append(t)
    scratch = lowering.value((rec.scratch_floats,), PLAIN, name=node.friendly_name + "/scratch")

    def bind(arrs: list[np.ndarray], out_arrs: list[np.ndarray]) -> list[Any]:
        xa, ha = arrs[0], arrs[1]
        ca = arrs[2] if has_c else None
        la = arrs[-1] if lens_t is not None else None
        if sequence:
            ya, hoa = out_arrs[0], out_arrs[1]
            coa = out_arrs[2] if has_c else None
        else:
            ya, hoa = None, out_arrs[0]
            coa = out_arrs[1] if has_c else None
        return rec.bind(xa, ha, ca, la, ya, hoa, coa, out_arrs[-1])

    lowering.program.add(PlanOp(node.friendly_name, node.type_name, ins, outs + [scratch], native=True, bind=bind))
    for o, t in zip(node.outputs(), outs):
        lowering.bind_port(o, t)
    return True
