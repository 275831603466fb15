"""Lowering rules for the recurrent ops: LSTMSequence, GRUSequence, RNNSequence and their
cells (LSTMCell, GRUCell, RNNCell), and ember's LSTMONNX (ONNX LSTM with peepholes or
``input_forget``, time-first).

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

from ember.devices.cpu.lowering.driver import F32, Lowering, const_of, copy_op, lowers, static_shape
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


def same_memory(shape: tuple[int, ...], perm: tuple[int, ...]) -> bool:
    """Whether ``transpose(a, perm)`` of a C-contiguous ``a`` of ``shape`` has ``a``'s bytes in order."""
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


@lowers("LSTMONNX")
def lower_lstm_onnx(lowering: Lowering, node: Node) -> bool:
    """ONNX LSTM with peepholes or ``input_forget`` (ember's LSTMONNX, time-first layout): the
    LSTM kernel with its peephole/coupled-gate variant, the layouts swapped by copies around it
    (none when a swap moves only size-1 axes, e.g. batch 1 forward)."""
    from ember.devices.cpu.kernels.rnn import Recurrent, bind_activations

    ports = node.input_values()
    x_port = ports[0]
    if any(p.element_type.dtype != F32 for i, p in enumerate(ports) if i != 4):
        return False
    consts = [const_of(ports[i]) for i in (1, 2, 3, 4, 7)]
    w, r, b, lens, peep = consts
    if w is None or r is None or b is None or lens is None or peep is None:
        return False
    attrs = node.attrs
    names = [str(a).lower() for a in attrs["activations"]]
    direction = str(attrs["direction"]).lower()
    dirs = 2 if direction == "bidirectional" else 1
    if attrs["activations_alpha"] or attrs["activations_beta"] or len(names) not in (3, 3 * dirs) \
            or names[3:] not in ([], names[:3]):
        return False
    acts = bind_activations(names[:3], [], [])
    if acts is None:
        return False
    hidden = int(attrs["hidden_size"])
    seq, batch, isz = static_shape(x_port)
    if min(seq, batch, isz, hidden) <= 0 or w.shape != (dirs, 4 * hidden, isz) or r.shape != (dirs, 4 * hidden, hidden):
        return False
    order = [2, 0, 3, 1]  # ONNX gates i, o, f, c -> the kernel's f, i, c, o

    def gates(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.reshape(dirs, 4, hidden, -1)[:, order].reshape(dirs, 4 * hidden, -1))

    if b.size == 0:
        bias = np.zeros((dirs, 4 * hidden), np.float32)
    elif b.shape == (dirs, 8 * hidden):
        bias = gates((b[:, :4 * hidden] + b[:, 4 * hidden:]).reshape(dirs, 4 * hidden, 1)).reshape(dirs, -1)
    else:
        return False
    peepholes = None
    if peep.size:
        if peep.shape != (dirs, 3 * hidden):
            return False
        pi, po, pf = np.split(peep.astype(np.float32), 3, axis=1)
        peepholes = np.concatenate([pi, pf, po], axis=1)
    lens_t: Tensor | None = None
    if lens.size:
        lv = np.broadcast_to(np.asarray(lens).reshape(-1), (batch,))
        if np.any(lv <= 0):  # length 0: the reference keeps the initial states (the kernel gives zeros)
            return False
        if not np.all(lv >= seq):
            lens_t = lowering.program.const(np.ascontiguousarray(np.minimum(lv, seq), np.int32))
    cell = "lstm" + ("p" if peepholes is not None else "") + ("f" if attrs["input_forget"] else "")
    cell = {"lstm": "lstm", "lstmp": "lstm_p", "lstmf": "lstm_f", "lstmpf": "lstm_pf"}[cell]
    reverse = [False, True] if direction == "bidirectional" else [direction == "reverse"]
    rec = Recurrent(cell, gates(w), gates(r), bias, hidden, reverse, batch, seq, acts, float(attrs["clip"]),
                    lowering.threads, lowering.isa, lowering.precision, peepholes=peepholes)
    lowering.bf16_ops += lowering.precision == "bf16"
    name = node.friendly_name

    def kernel_input(port: Any, shape: tuple[int, ...], perm: tuple[int, ...]) -> Tensor:
        """``port`` (ONNX layout ``shape``) as the kernel reads it: ``transpose(., perm)``."""
        t = lowering.native_input(lowering.tensor(port), PLAIN)
        if same_memory(shape, perm):
            return t
        out = lowering.value(tuple(shape[p] for p in perm), PLAIN, name=name + "/to_batch_first")
        lowering.program.add(copy_op(out.name, t, out, perm, lowering.threads))
        return out

    x = kernel_input(x_port, (seq, batch, isz), (1, 0, 2))
    states = []
    for i in (5, 6):
        if ports[i].partial_shape.is_static and static_shape(ports[i]) == (dirs, batch, hidden):
            states.append(kernel_input(ports[i], (dirs, batch, hidden), (1, 0, 2)))
        elif (cv := const_of(ports[i])) is not None and cv.size == 0:
            states.append(lowering.program.const(np.zeros((batch, dirs, hidden), np.float32)))
        else:
            return False
    ins = [x, *states] + ([lens_t] if lens_t is not None else [])
    # outputs in ONNX layout; the kernel writes batch-first buffers, copied when the layouts differ
    onnx_shapes = [(seq, dirs, batch, hidden), (dirs, batch, hidden), (dirs, batch, hidden)]
    kernel_perm = [(2, 1, 0, 3), (1, 0, 2), (1, 0, 2)]  # kernel layout -> ONNX layout
    kernel_shapes = [(batch, dirs, seq, hidden), (batch, dirs, hidden), (batch, dirs, hidden)]
    outs, written, copies = [], [], []
    for shape, perm, kshape in zip(onnx_shapes, kernel_perm, kernel_shapes):
        t = lowering.value(shape, PLAIN, name=name)
        outs.append(t)
        if same_memory(kshape, perm):
            written.append(t)
        else:
            k = lowering.value(kshape, PLAIN, name=name + "/batch_first")
            written.append(k)
            copies.append(copy_op(name + "/to_time_first", k, t, perm, lowering.threads))
    scratch = lowering.value((rec.scratch_floats,), PLAIN, name=name + "/scratch")

    def bind(arrs: list[np.ndarray], out_arrs: list[np.ndarray]) -> list[Any]:
        la = arrs[3] if lens_t is not None else None
        return rec.bind(arrs[0], arrs[1], arrs[2], la, out_arrs[0], out_arrs[1], out_arrs[2], out_arrs[3])

    lowering.program.add(PlanOp(name, node.type_name, ins, written + [scratch], native=True, bind=bind))
    for c in copies:
        lowering.program.add(c)
    for o, t in zip(node.outputs(), outs):
        lowering.bind_port(o, t)
    return True
