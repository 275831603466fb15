"""Lowering rule for If: each branch is a model of its own, compiled for the CPU device (native
plans, lowered again per input shape when its shapes are dynamic) by the ``compile_body``
callback the device gives the lowering (so rules never import the device); the plan step
evaluates the condition and runs the chosen branch."""

from __future__ import annotations

import queue
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import BodyCompiler, Lowering, lowers, shape_or_none
from ember.devices.cpu.runtime.plan import PLAIN, Op
from ember.graph.model import Model
from ember.graph.node import Node


class Branch:
    """One body of an If on the CPU device. Executables are not thread safe, so concurrent
    callers (streams) each take one from a free list, made on first need."""

    def __init__(self, body: Model, compile_body: BodyCompiler) -> None:
        from ember.devices.cpu.lowering.passes import device_passes

        self.model = device_passes(body.clone())
        self.compile_body = compile_body
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._first: Any = None

    def _make(self) -> Any:
        if self._first is None:
            self._first = self.compile_body(self.model)
            return self._first
        return self._first.clone()

    def run(self, feed: Sequence[np.ndarray]) -> list[np.ndarray]:
        try:
            exe = self._free.get_nowait()
        except queue.Empty:
            exe = self._make()
        try:
            return exe.run(feed)
        finally:
            self._free.put(exe)


@lowers("If", dynamic=True)
def lower_if(lowering: Lowering, node: Node) -> bool:
    bodies = node.bodies()
    if len(bodies) != 2 or any(b is None for b in bodies):
        return False
    if lowering.compile_body is None:
        return False
    branches = [Branch(b, lowering.compile_body) for b in bodies]
    in_descs = [[(d.input_index, d.body_parameter_index) for d in node.get_input_descriptions(b)] for b in (0, 1)]
    out_descs = [[(d.body_value_index, d.output_index) for d in node.get_output_descriptions(b)] for b in (0, 1)]
    n_params = [len(b.get_parameters()) for b in bodies]
    dtypes = [o.element_type.dtype for o in node.outputs()]
    name = node.friendly_name

    def run(args: list[np.ndarray]) -> list[np.ndarray]:
        b = 0 if bool(np.asarray(args[0]).reshape(-1)[0]) else 1
        feed: list[Any] = [None] * n_params[b]
        for i, p in in_descs[b]:
            feed[p] = np.asarray(args[i])
        values = branches[b].run(feed)
        outs: list[Any] = [None] * len(dtypes)
        for v, o in out_descs[b]:
            outs[o] = np.asarray(values[v], dtype=dtypes[o])
        if any(x is None for x in outs):
            from ember.errors import InferenceError

            raise InferenceError(f"ember: If '{name}': its {('then', 'else')[b]} branch does not produce every output")
        return outs

    ins = [lowering.tensor(s) for s in node.input_values()]
    outs = []
    for o in node.outputs():
        t = lowering.value(shape_or_none(o), PLAIN, o.element_type.dtype, node.friendly_name)
        outs.append(t)
        lowering.bind_port(o, t)
    lowering.program.add(Op(node.friendly_name, "If", ins, outs, native=False, fn=run))
    return True
