"""A Loop that is an LSTM layer over a sequence (Keras' ``LSTM`` through the TensorFlow
frontend, or any while loop of the same shape) lowered to the native recurrent kernel.

The loop is recognised, not assumed:

- its **iteration count** is known at compile time: the body's condition depends only on
  counters (merged inputs with constant initial values, or the current-iteration port) whose
  back edges depend only on counters and constants; that small part of the body is evaluated
  iteration by iteration here (reference kernels on scalars) until the condition or the trip
  count ends it, which also gives the counters' final values and the time index of each
  iteration;
- the **step** is ``x_t = Gather(X, t, axis 0)`` of an invariant ``X[T, B, I]`` where ``t`` is a
  counter running ``0 .. T-1``, gates
  ``x_t @ W + h @ R (+ b)`` split in four along the last axis in Keras' order (i, f, c, o),
  ``c' = sigmoid(f) * c + sigmoid(i) * tanh(g)``, ``h' = sigmoid(o) * tanh(c')``, with ``h`` and
  ``c`` merged inputs whose back edges are ``h'`` and ``c'``;
- the Loop's **outputs** are the final ``h``/``c``, counters, or the sequence of ``h`` stacked
  along a new first axis (Keras' ``return_sequences=True``: a concatenated output of
  ``Unsqueeze(h', 0)``), which the kernel writes as it goes.

Anything else returns False and the Loop runs its body as a CPU plan per iteration.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import F32, Lowering, copy_op, static_shape
from ember.devices.cpu.runtime.plan import PLAIN, Tensor
from ember.devices.cpu.runtime.plan import Op as PlanOp
from ember.errors import EmberError
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.node import Node, Output
from ember.graph.shape import PartialShape

#: the most iterations the compile-time counter walk tries
MAX_STEPS = 1 << 16


def _ancestors(outs: list[Output]) -> list[Node]:
    """The nodes ``outs`` depend on, in topological order."""
    seen: dict[int, Node] = {}
    order: list[Node] = []

    def visit(n: Node) -> None:
        stack = [(n, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen[id(node)] = node
            stack.append((node, True))
            for v in node.input_values():
                if id(v.node) not in seen:
                    stack.append((v.node, False))
    for o in outs:
        visit(o.node)
    return order


class _Counters:
    """The counter part of a Loop body, walked at compile time."""

    def __init__(self, node: Node) -> None:
        self.ok = False
        body = node.bodies()[0]
        params = body.get_parameters()
        results = body.get_results()
        self.results = results
        it_port, cond_port = node.get_special_body_ports()
        self.it_param = params[it_port] if it_port >= 0 else None
        merged = {d.body_parameter_index: d for d in node.get_input_descriptions(0)
                  if type(d).__name__ == "MergedInputDescription"}
        self.merged = merged
        trip = node.input_value(0)
        first = node.input_value(1)
        if trip is None or first is None or not bool(np.asarray(first).reshape(-1)[0]):
            return
        self.trip = int(np.asarray(trip).reshape(-1)[0])
        if cond_port < 0:
            return
        self.cond = results[cond_port].input_values()[0]
        # counters: the closed set of parameters the condition needs (initial values constant)
        needed: dict[int, int] = {}  # body parameter index -> result index of its back edge
        self.values: dict[int, np.ndarray] = {}
        pending = [self.cond]
        while pending:
            nodes, pending = _ancestors(pending), []
            for n in nodes:
                if isinstance(n, Parameter):
                    k = body.get_parameter_index(n)
                    if n is self.it_param or k in needed:
                        continue
                    d = merged.get(k)
                    init = None if d is None else node.input_value(d.input_index)
                    if d is None or init is None:
                        return
                    needed[k] = d.body_value_index
                    self.values[k] = np.asarray(init)
                    pending.append(results[d.body_value_index].input_values()[0])
                elif not isinstance(n, (Constant, Result)) and not n.foldable:
                    return
        self.needed = needed
        self.params = params
        self.nodes = _ancestors([self.cond] + [results[r].input_values()[0] for r in needed.values()])
        self.ok = True

    def walk(self) -> tuple[int, list[dict[int, np.ndarray]]] | None:
        """(iterations, per iteration the counter values it saw), or None past MAX_STEPS."""
        values = dict(self.values)
        seen: list[dict[int, np.ndarray]] = []
        limit = self.trip if self.trip >= 0 else MAX_STEPS
        for k in range(min(limit, MAX_STEPS)):
            env: dict[tuple[int, int], np.ndarray] = {}
            for i, p in enumerate(self.params):
                if i in values:
                    env[(id(p), 0)] = values[i]
            if self.it_param is not None:
                env[(id(self.it_param), 0)] = np.asarray(k, self.it_param.output(0).element_type.dtype)
            seen.append({i: v for i, v in values.items()} | (
                {-1: env[(id(self.it_param), 0)]} if self.it_param is not None else {}))
            for n in self.nodes:
                if isinstance(n, (Parameter, Result)):
                    continue
                if isinstance(n, Constant):
                    env[(id(n), 0)] = n.data
                    continue
                outs = n.evaluate([env[(id(v.node), v.index)] for v in n.input_values()])
                for j, o in enumerate(outs):
                    env[(id(n), j)] = np.asarray(o)
            for i, r in self.needed.items():
                src = self.results[r].input_values()[0]
                values[i] = env[(id(src.node), src.index)]
            if not bool(np.asarray(env[(id(self.cond.node), self.cond.index)]).reshape(-1)[0]):
                return k + 1, seen + [values]
        if self.trip >= 0 and self.trip <= MAX_STEPS:
            return self.trip, seen + [values]
        return None


def _act(port: Output, name: str) -> Output | None:
    n = port.node
    return n.input_values()[0] if n.type_name == name else None


def _pair(node: Node, type_name: str) -> tuple[Output, Output] | None:
    if node.type_name != type_name:
        return None
    a, b = node.input_values()
    return a, b


def _stacks_h(d: Any, src: Output, h_new: Output) -> bool:
    """Whether concatenated output ``d`` stacks ``h'`` of every iteration, in order, along a new
    first axis (``Unsqueeze(h', 0)`` parts of one step each)."""
    if (int(d.axis), int(d.start), int(d.stride), int(d.part_size), int(d.end)) != (0, 0, 1, 1, -1):
        return False
    n = src.node
    if n.type_name != "Unsqueeze" or n.input_values()[0] != h_new:
        return False
    axes = n.input_value(1)
    return axes is not None and [int(a) for a in np.asarray(axes).reshape(-1)] == [0]


def lower_loop_lstm(lowering: Lowering, node: Node) -> bool:
    """The Loop as one LSTM sequence on the recurrent kernel, if it is one (see the module doc)."""
    from ember.devices.cpu.kernels.rnn import Recurrent, bind_activations
    from ember.devices.cpu.lowering.rnn import same_memory

    counters = _Counters(node)
    if not counters.ok:
        return False
    body = node.bodies()[0]
    params = body.get_parameters()
    results = body.get_results()
    merged = counters.merged
    # h' and c': merged parameters whose back edge is a Multiply (h) and an Add (c)
    cells = []
    for k, d in merged.items():
        if k in counters.needed:
            continue
        cells.append((k, d))
    if len(cells) != 2:
        return False
    by_kind = {}
    for k, d in cells:
        src = results[d.body_value_index].input_values()[0]
        by_kind[src.node.type_name] = (k, d, src)
    if set(by_kind) != {"Multiply", "Add"}:
        return False
    h_k, h_d, h_new = by_kind["Multiply"]
    c_k, c_d, c_new = by_kind["Add"]
    h_param, c_param = params[h_k], params[c_k]
    # h' = sigmoid(o) * tanh(c')
    a, b = h_new.node.input_values()
    if _act(b, "Tanh") is None or _act(a, "Sigmoid") is None:
        a, b = b, a
    if _act(b, "Tanh") != c_new or _act(a, "Sigmoid") is None:
        return False
    o_port = _act(a, "Sigmoid")
    # c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
    terms = list(c_new.node.input_values())
    f_port: Output | None = None
    i_port: Output | None = None
    g_port: Output | None = None
    for term in terms:
        pair = _pair(term.node, "Multiply")
        if pair is None:
            return False
        x, y = pair
        if y.node is c_param or x.node is c_param:
            other = x if y.node is c_param else y
            f_port = _act(other, "Sigmoid")
        else:
            if _act(x, "Tanh") is not None:
                x, y = y, x
            i_port, g_port = _act(x, "Sigmoid"), _act(y, "Tanh")
    if f_port is None or i_port is None or g_port is None or o_port is None:
        return False
    split = o_port.node
    if split.type_name != "Split" or any(p.node is not split for p in (f_port, i_port, g_port)) \
            or int(split.attrs["num_splits"]) != 4 or sorted(p.index for p in (i_port, f_port, g_port, o_port)) != [0, 1, 2, 3]:
        return False
    if [i_port.index, f_port.index, g_port.index, o_port.index] != [0, 1, 2, 3]:
        return False  # Keras' order; others are possible but not seen
    gates_port, axis_port = split.input_values()
    axis = split.input_value(1)
    g_shape = gates_port.partial_shape
    if axis is None or not g_shape.is_static or len(g_shape) != 2 or int(np.asarray(axis)) not in (1, -1):
        return False
    batch, four_h = static_shape(gates_port)
    hidden = four_h // 4
    # gates = sum of MatMul(x_t, W), MatMul(h, R) and an optional constant bias
    stack: list[Output] = [gates_port]
    leaves: list[Output] = []
    while stack:
        p = stack.pop()
        if p.node.type_name == "Add" and len(leaves) + len(stack) < 4:
            stack.extend(p.node.input_values())
        else:
            leaves.append(p)
    bias = np.zeros(four_h, np.float32)
    w_in = w_rec = None
    gather = None
    for p in leaves:
        if isinstance(p.node, Constant):
            bv = np.asarray(p.node.data, np.float32)
            if bv.size != four_h:
                return False
            bias = bias + bv.reshape(-1)
            continue
        if p.node.type_name != "MatMul" or p.node.attrs["transpose_a"]:
            return False
        lhs, rhs = p.node.input_values()
        wv = p.node.input_value(1)
        if wv is None:
            return False
        wv = np.asarray(wv, np.float32)
        wv = wv if p.node.attrs["transpose_b"] else wv.T  # [4H, K]
        if lhs.node is h_param:
            w_rec = wv
        elif lhs.node.type_name == "Gather":
            gather, w_in = lhs.node, wv
        else:
            return False
    if w_in is None or w_rec is None or gather is None or w_rec.shape != (four_h, hidden):
        return False
    # x_t = Gather(X, t, 0): X an invariant input, t a counter (maybe through a Convert)
    xs, idx, gaxis = gather.input_values()
    if gather.input_value(2) is None or int(np.asarray(gather.input_value(2))) != 0 or gather.attrs.get("batch_dims", 0):
        return False
    if not isinstance(xs.node, Parameter):
        return False
    x_k = body.get_parameter_index(xs.node)
    x_desc = next((d for d in node.get_input_descriptions(0) if d.body_parameter_index == x_k
                   and type(d).__name__ == "InvariantInputDescription"), None)
    if x_desc is None:
        return False
    t_node = idx.node
    if t_node.type_name == "Convert":
        t_node = t_node.input_values()[0].node
    if not isinstance(t_node, Parameter):
        return False
    t_k = -1 if t_node is counters.it_param else body.get_parameter_index(t_node)
    if t_k != -1 and t_k not in counters.needed:
        return False
    walked = counters.walk()
    if walked is None:
        return False
    steps, seen = walked
    x_port = node.input_values()[x_desc.input_index]
    if not x_port.partial_shape.is_static or x_port.element_type.dtype != F32:
        return False
    seq, xb, isz = static_shape(x_port)
    times = [int(np.asarray(s[t_k]).reshape(-1)[0]) for s in seen[:steps]]
    if xb != batch or w_in.shape != (four_h, isz) or steps != seq or seq == 0:
        return False
    if times != list(range(seq)):  # (a backwards walk would be the kernel's reverse direction: not seen yet)
        return False
    reverse = False
    # outputs: final h / c, or counters (their final values are constants)
    out_of: dict[int, Any] = {}
    for d in node.get_output_descriptions(0):
        src = results[d.body_value_index].input_values()[0]
        if type(d).__name__ == "ConcatOutputDescription":
            if not _stacks_h(d, src, h_new):
                return False
            out_of[d.output_index] = "seq"
            continue
        if type(d).__name__ != "BodyOutputDescription" or d.iteration != -1:
            return False
        if src == h_new:
            out_of[d.output_index] = "h"
        elif src == c_new:
            out_of[d.output_index] = "c"
        else:
            k = next((k for k, r in counters.needed.items() if r == d.body_value_index), None)
            if k is None:
                return False
            out_of[d.output_index] = np.asarray(seen[steps][k])
    if set(out_of) != set(range(node.get_output_size())):
        return False
    h0_port = node.input_values()[h_d.input_index]
    c0_port = node.input_values()[c_d.input_index]
    for p in (h0_port, c0_port):
        if p.element_type.dtype != F32 or not p.partial_shape.is_static or static_shape(p) != (batch, hidden):
            return False
    acts = bind_activations(["sigmoid", "tanh", "tanh"], [], [])
    assert acts is not None
    order = [1, 0, 2, 3]  # Keras i, f, c, o -> the kernel's f, i, c, o

    def gates(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.reshape(4, hidden, -1)[order].reshape(1, four_h, -1))

    rec = Recurrent("lstm", gates(w_in), gates(w_rec), gates(bias.reshape(four_h, 1)).reshape(1, four_h), hidden,
                    [reverse], batch, seq, acts, 0.0, lowering.threads, lowering.isa, lowering.precision)
    lowering.bf16_ops += lowering.precision == "bf16"
    name = node.friendly_name
    xin = lowering.native_input(lowering.tensor(x_port), PLAIN)
    if not same_memory((seq, batch, isz), (1, 0, 2)):
        xt = lowering.value((batch, seq, isz), PLAIN, name=name + "/to_batch_first")
        lowering.program.add(copy_op(xt.name, xin, xt, (1, 0, 2), lowering.threads))
        xin = xt
    h0 = lowering.native_input(lowering.tensor(h0_port), PLAIN)
    c0 = lowering.native_input(lowering.tensor(c0_port), PLAIN)
    ho = lowering.value((batch, hidden), PLAIN, name=name + "/h")
    co = lowering.value((batch, hidden), PLAIN, name=name + "/c")
    scratch = lowering.value((rec.scratch_floats,), PLAIN, name=name + "/scratch")
    stacked = "seq" in [w for w in out_of.values() if isinstance(w, str)]
    outs = [ho, co, scratch]
    if stacked:  # the kernel's y[batch, 1, seq, H]; the Loop stacks h time-major: [seq, batch, H]
        outs.append(lowering.value((batch, 1, seq, hidden), PLAIN, name=name + "/y"))

    def bind(arrs: list[np.ndarray], out_arrs: list[np.ndarray]) -> list[Any]:
        y = out_arrs[3] if stacked else None
        return rec.bind(arrs[0], arrs[1], arrs[2], None, y, out_arrs[0], out_arrs[1], out_arrs[2])

    lowering.program.add(PlanOp(name, "LSTMSequence", [xin, h0, c0], outs, native=True, bind=bind))
    seq_t: Tensor | None = None
    if stacked:
        ys = outs[3]
        if batch == 1:
            seq_t = lowering.program.view(ys, (seq, 1, hidden), lambda a: a.reshape(seq, 1, hidden), name=name + "/seq")
        else:
            by_batch = lowering.program.view(ys, (batch, seq, hidden), lambda a: a.reshape(batch, seq, hidden))
            seq_t = lowering.value((seq, batch, hidden), PLAIN, name=name + "/seq")
            lowering.program.add(copy_op(seq_t.name, by_batch, seq_t, (1, 0, 2), lowering.threads))
    for i, o in enumerate(node.outputs()):
        what = out_of[i]
        t: Tensor
        if isinstance(what, str) and what == "seq":
            assert seq_t is not None
            t = seq_t
        elif isinstance(what, str):
            t = ho if what == "h" else co
        else:
            t = lowering.program.const(np.ascontiguousarray(what, o.element_type.dtype).reshape(static_shape(o)))
        lowering.bind_port(o, t)
    if stacked:
        _settle(lowering.model, node, {i: (seq, batch, hidden) for i, w in out_of.items()
                                       if isinstance(w, str) and w == "seq"})
    return True


def _settle(model: Any, node: Node, shapes: dict[int, tuple[int, ...]]) -> None:
    """Give the stacked outputs the static shape the walk found (a Loop's inference cannot know
    its iteration count) and infer the nodes after them again, so that the layers after a
    ``return_sequences`` LSTM (the next LSTM, the Dense head) see static shapes and lower natively.
    The plan's model is the device's own copy for these input shapes."""
    for i, shape in shapes.items():
        node.set_output_type(i, node.get_output_element_type(i), PartialShape(list(shape)))
    reach = {id(node)}
    for n in model.get_ordered_ops():
        if id(n) in reach or not any(id(v.node) in reach for v in n.input_values()):
            continue
        reach.add(id(n))
        try:
            n.validate_and_infer_types()
        except EmberError:  # leave the rest as it was: those nodes keep their dynamic shapes
            return
