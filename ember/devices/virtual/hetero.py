"""HETERO: split a model into subgraphs by device, compile each on its device, run them in order.

``HETERO:CPU,REFERENCE`` places every op on the first listed device that supports it
(``Core.query_model`` shows the placement). Ops that are not on the first device are a
*fallback*: logged, or an error with ``ALLOW_FALLBACK=False``. The ops are then ordered so
that ops of one device stay together where the dependencies allow, and each run of
consecutive ops on one device becomes a subgraph: values crossing between subgraphs become
its Parameters and Results, constants are copied into every subgraph that reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.devices.base import Device, Executable
from ember.devices.virtual.common import STRUCTURAL, describe, load, priorities
from ember.errors import EmberError
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model

if TYPE_CHECKING:
    from ember.runtime.properties import CompileConfig  # the interface's type only: devices read its fields
from ember.graph.node import Node, Output

log = logging.getLogger("ember.devices")

Key = tuple[int, int]  # (id of an original node, output index)


def _key(o: Output) -> Key:
    return (id(o.node), o.index)


@dataclass
class Subgraph:
    """One device's piece of a split model: ``inputs``/``outputs`` name original values."""

    device: str
    model: Model
    inputs: list[Key] = field(default_factory=list)
    outputs: list[Key] = field(default_factory=list)


def place(model: Model, devices: Sequence[str], config: CompileConfig) -> dict[str, str]:
    """``{friendly name: device}``: each compute node on the first device that supports it;
    Parameters and Constants go with their first consumer, Results with their producer."""
    placement: dict[str, str] = {}
    for name in devices:
        for node_name in load(name, "HETERO").query_model(model, config):
            placement.setdefault(node_name, name)
    ops = model.get_ordered_ops()
    out: dict[str, str] = {}
    for n in ops:
        if not isinstance(n, STRUCTURAL) and n.friendly_name in placement:
            out[n.friendly_name] = placement[n.friendly_name]
    for n in ops:
        if isinstance(n, Result):
            src = n.input_values()[0].node
            out[n.friendly_name] = out.get(src.friendly_name, devices[0])
        elif isinstance(n, (Parameter, Constant)):
            users = [i.node for o in n.outputs() for i in o.targets]
            dev = next((out[u.friendly_name] for u in users if u.friendly_name in out), devices[0])
            out[n.friendly_name] = dev
    return out


def _order(compute: list[Node], device_of: dict[int, str], devices: Sequence[str]) -> list[Node]:
    """A topological order of ``compute`` that stays on one device as long as it can."""
    ids = {id(n) for n in compute}
    deps: dict[int, int] = {}
    users: dict[int, list[Node]] = {id(n): [] for n in compute}
    for n in compute:
        srcs = {id(s.node) for s in n.input_values() if id(s.node) in ids}
        deps[id(n)] = len(srcs)
        for s in srcs:
            users[s].append(n)
    rank = {id(n): i for i, n in enumerate(compute)}
    ready: dict[str, list[Node]] = {d: [] for d in devices}
    for n in compute:
        if deps[id(n)] == 0:
            ready[device_of[id(n)]].append(n)
    order: list[Node] = []
    current = devices[0]
    while len(order) < len(compute):
        if not ready[current]:
            current = min((d for d in devices if ready[d]), key=lambda d: min(rank[id(n)] for n in ready[d]))
        ready[current].sort(key=lambda n: rank[id(n)])
        n = ready[current].pop(0)
        order.append(n)
        for u in users[id(n)]:
            deps[id(u)] -= 1
            if deps[id(u)] == 0:
                ready[device_of[id(u)]].append(u)
    return order


def split_model(model: Model, placement: Mapping[str, str], devices: Sequence[str]) -> list[Subgraph]:
    """Cut ``model`` into per-device subgraphs, in the order they must run."""
    compute = [n for n in model.get_ordered_ops() if not isinstance(n, STRUCTURAL)]
    device_of = {id(n): placement[n.friendly_name] for n in compute}
    order = _order(compute, device_of, devices)
    runs: list[list[Node]] = []
    for n in order:
        if runs and device_of[id(runs[-1][0])] == device_of[id(n)]:
            runs[-1].append(n)
        else:
            runs.append([n])
    model_outputs = {_key(r.input_values()[0]) for r in model.get_results()}
    segment_of = {id(n): i for i, run in enumerate(runs) for n in run}
    subgraphs = []
    for i, run in enumerate(runs):
        members = {id(n) for n in run}
        new: dict[Key, Output] = {}
        params: list[Parameter] = []
        inputs: list[Key] = []
        for n in run:
            args = []
            for src in n.input_values():
                k = _key(src)
                if k not in new:
                    if id(src.node) in members:
                        raise EmberError("ember: HETERO split out of order")  # not reached: run is topological
                    if isinstance(src.node, Constant):
                        c = Constant.from_array(src.node.data, src.node.element_type, src.node.friendly_name)
                        new[k] = c.output(0)
                    else:
                        p = Parameter(src.element_type, src.partial_shape,
                                      f"{src.node.friendly_name}/{src.index}")
                        p.output(0).set_names({f"{src.node.friendly_name}/{src.index}"})
                        params.append(p)
                        inputs.append(k)
                        new[k] = p.output(0)
                args.append(new[k])
            clone = n.clone_with_inputs(args)
            for k_out, o in enumerate(clone.outputs()):
                new[(id(n), k_out)] = o
        outputs: list[Key] = []
        results: list[Result] = []
        for n in run:
            for o in n.outputs():
                leaves = any(segment_of.get(id(t.node), -1) != i for t in o.targets if not isinstance(t.node, Result))
                if leaves or _key(o) in model_outputs:
                    outputs.append(_key(o))
                    results.append(Result([new[_key(o)]]))
        sub = Model(results, params, f"{model.friendly_name}/{i}:{device_of[id(run[0])]}", validate=False)
        subgraphs.append(Subgraph(device_of[id(run[0])], sub, inputs, outputs))
    return subgraphs


class HeteroExecutable:
    """Runs the subgraphs in order, passing values between them."""

    def __init__(self, model: Model, parts: list[tuple[Subgraph, Any]], devices: list[str], thread_safe: bool):
        self._parts = parts
        self._params = [_key(p.output(0)) for p in model.get_parameters()]
        self._results: list[tuple[Key, np.ndarray | None]] = []
        for r in model.get_results():
            src = r.input_values()[0]
            self._results.append((_key(src), src.node.data if isinstance(src.node, Constant) else None))
        self.execution_devices = devices
        self.thread_safe = thread_safe
        self.exec_type = "hetero"

    def run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None = None) -> list[np.ndarray]:
        values: dict[Key, np.ndarray] = dict(zip(self._params, inputs))
        for sub, exe in self._parts:
            outs = exe.run([values[k] for k in sub.inputs], profile)
            values.update(zip(sub.outputs, outs))
        return [const if const is not None else values[k] for k, const in self._results]


class HeteroDevice(Device):
    name = "HETERO"
    full_name = "ember HETERO (splits a model across devices)"
    virtual = True

    def query_model(self, model: Model, config: CompileConfig) -> dict[str, str]:
        return place(model, priorities(config, "HETERO", "HETERO:CPU,REFERENCE"), config)

    def supported_nodes(self, model: Model) -> set[str]:
        return set()

    def compile(self, model: Model, config: CompileConfig) -> Executable:
        devices = priorities(config, "HETERO", "HETERO:CPU,REFERENCE")
        placement = place(model, devices, config)
        compute = [n for n in model.get_ordered_ops() if not isinstance(n, STRUCTURAL)]
        missing = [n for n in compute if n.friendly_name not in placement]
        if missing:
            raise EmberError(f"ember: HETERO:{','.join(devices)} cannot run {describe(missing)}; "
                             "add a device that supports them (REFERENCE runs every op)")
        moved = [n for n in compute if placement[n.friendly_name] != devices[0]]
        if moved:
            by_dev: dict[str, list[Node]] = {}
            for n in moved:
                by_dev.setdefault(placement[n.friendly_name], []).append(n)
            msg = f"ember: HETERO placed ops of '{model.friendly_name}' off {devices[0]}: " + "; ".join(
                f"{describe(ns)} on {d}" for d, ns in by_dev.items())
            if not config.allow_fallback:
                raise EmberError(msg + " (ALLOW_FALLBACK is off)")
            log.warning(msg)
        subgraphs = split_model(model, placement, devices)
        parts = []
        thread_safe = True
        used: list[str] = []
        for sub in subgraphs:
            dev = load(sub.device, "HETERO")
            exe = dev.compile(dev.transform(sub.model, config), config)
            thread_safe = thread_safe and bool(getattr(exe, "thread_safe", dev.thread_safe_executables))
            parts.append((sub, exe))
            if sub.device not in used:
                used.append(sub.device)
        log.info("ember: HETERO split '%s' into %d subgraph(s): %s", model.friendly_name, len(subgraphs),
                 " -> ".join(f"{s.device}[{len(s.model.get_ordered_ops())}]" for s in subgraphs))
        return HeteroExecutable(model, parts, used or [devices[0]], thread_safe)

    def export_model(self, executable: Executable) -> bytes | None:
        return None
