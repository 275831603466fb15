"""The one pattern-matcher engine every rewrite uses.

A ``Pattern`` describes a node by op type(s), input patterns, attribute values, a predicate
and how many consumers it may have; ``name=`` captures the matched node (or port) in the
``Match``. A ``Rule`` pairs a pattern with a rewrite callback that returns the port that
replaces the root's output (or None to decline). ``rewrite`` runs a list of rules over a
model, in topological order, until nothing changes.

    conv_bias = Pattern("Add", Pattern("Convolution", name="conv"), Const(name="bias"))

    @rule(conv_bias)
    def fuse(m: Match) -> Output | None: ...
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.node import Node, Output

log = logging.getLogger("ember.passes")


class Pattern:
    """Matches one output port of a node.

    ``op``: a type name, a tuple of names, or None for any node. ``inputs``: patterns for the
    node's inputs in order (fewer than the node has = the rest are unconstrained); with
    ``commutative=True`` two inputs may match in either order. ``attrs``: required attribute
    values. ``pred(node)`` must hold. ``consumers``: the port may feed at most this many
    inputs (1 = "used only here", so rewriting it loses nothing). ``output``: which output port.
    """

    def __init__(self, op: str | tuple[str, ...] | None = None, *inputs: Pattern, name: str | None = None,
                 attrs: Mapping[str, Any] | None = None, pred: Callable[[Node], bool] | None = None,
                 consumers: int | None = None, commutative: bool = False, output: int = 0) -> None:
        self.ops = (op,) if isinstance(op, str) else op
        self.inputs = inputs
        self.name = name
        self.attrs = dict(attrs or {})
        self.pred = pred
        self.consumers = consumers
        self.commutative = commutative
        self.output = output

    def match(self, port: Output, m: Match) -> bool:
        node = port.node
        if self.ops is not None and node.type_name not in self.ops:
            return False
        if port.index != self.output:
            return False
        if self.consumers is not None and len(node.output(port.index).targets) > self.consumers:
            return False
        for k, v in self.attrs.items():
            if node.attrs.get(k) != v:
                return False
        if self.pred is not None and not self.pred(node):
            return False
        if len(self.inputs) > len(node.input_values()):
            return False
        if self.name is not None:
            prev = m.ports.get(self.name)
            if prev is not None and prev != port:
                return False
        orders = [list(range(len(self.inputs)))]
        if self.commutative and len(self.inputs) == 2:
            orders.append([1, 0])
        for order in orders:
            trial = m.copy()
            if all(p.match(node.input_values()[i], trial) for p, i in zip(self.inputs, order)):
                if self.name is not None:
                    trial.ports[self.name] = port
                if self.ops is not None:
                    trial.nodes.append(node)
                m.ports, m.nodes = trial.ports, trial.nodes
                return True
        return False

    def __repr__(self) -> str:
        ops = "|".join(self.ops) if self.ops else "*"
        return f"Pattern({ops}{', ' if self.inputs else ''}{', '.join(map(repr, self.inputs))})"


def Any_(name: str | None = None, **kw: Any) -> Pattern:  # noqa: N802 - reads like a pattern constructor
    """Any port."""
    return Pattern(None, name=name, **kw)


def Const(name: str | None = None, pred: Callable[[np.ndarray], bool] | None = None, **kw: Any) -> Pattern:  # noqa: N802
    """A Constant, optionally with a predicate on its data."""
    return Pattern("Const", name=name, pred=(lambda n: pred(n.data)) if pred else None, **kw)


def scalar_close(value: float, tol: float = 1e-5) -> Callable[[np.ndarray], bool]:
    """Predicate: a constant whose every element is ``value`` (within ``tol``)."""
    def check(data: np.ndarray) -> bool:
        if data.size == 0 or data.dtype.kind not in "fiu":
            return False
        return bool(np.all(np.abs(data.astype(np.float64) - value) <= tol * max(1.0, abs(value))))
    return check


@dataclass
class Match:
    """Captured ports by pattern name; ``m["conv"]`` is the node, ``m.port("conv")`` the port."""

    ports: dict[str, Output] = field(default_factory=dict)
    #: every node a typed pattern matched (for fused_names)
    nodes: list[Node] = field(default_factory=list)

    def copy(self) -> Match:
        return Match(dict(self.ports), list(self.nodes))

    def __getitem__(self, name: str) -> Node:
        return self.ports[name].node

    def port(self, name: str) -> Output:
        return self.ports[name]

    def const(self, name: str) -> np.ndarray:
        node = self.ports[name].node
        assert isinstance(node, Constant)
        return node.data

    def __contains__(self, name: str) -> bool:
        return name in self.ports


@dataclass
class Rule:
    pattern: Pattern
    fn: Callable[[Match], Output | Node | None]
    name: str


def rule(pattern: Pattern, name: str | None = None) -> Callable[[Callable[[Match], Any]], Rule]:
    """Decorator: turn a rewrite callback into a ``Rule`` over ``pattern``."""
    def wrap(fn: Callable[[Match], Any]) -> Rule:
        return Rule(pattern, fn, name or fn.__name__)
    return wrap


def replace_output(old: Output, new: Output) -> None:
    """Point every consumer of ``old`` at ``new``; ``new`` takes over ``old``'s tensor names.

    When ``old`` feeds a Result, its names are the model's output names, so they move."""
    if old == new:
        return
    names = set(old.names)
    if names:
        new.add_names(names)
        old.set_names(set())
    old.replace(new)


def rewrite(model: Model, rules: Iterable[Rule], max_rounds: int = 20) -> dict[str, int]:
    """Apply ``rules`` until a fixed point; returns how often each rule fired."""
    rules = list(rules)
    by_op: dict[str | None, list[Rule]] = {}
    for r in rules:
        for op in (r.pattern.ops or (None,)):
            by_op.setdefault(op, []).append(r)
    fired: dict[str, int] = {}
    for _ in range(max_rounds):
        changed = False
        for node in model.get_ordered_ops():
            if not any(o.targets for o in node.outputs()):
                continue  # dead or a Result
            for r in by_op.get(node.type_name, []) + by_op.get(None, []):
                port = Output(node, r.pattern.output)
                if r.pattern.output >= node.get_output_size():
                    continue
                m = Match()
                if not r.pattern.match(port, m):
                    continue
                new = r.fn(m)
                if new is None:
                    continue
                new_port = new if isinstance(new, Output) else new.output(0)
                if new_port == port:
                    continue
                _record_fused_names(new_port.node, node, m)
                replace_output(port, new_port)
                fired[r.name] = fired.get(r.name, 0) + 1
                log.debug("ember: rule %s fired on %s '%s'", r.name, node.type_name, node.friendly_name)
                changed = True
                break
        if changed:
            prune_dead_consumers(model)
        else:
            break
    return fired


def _record_fused_names(new: Node, root: Node, m: Match) -> None:
    """The new node remembers the friendly names of what it replaced (OpenVINO's
    ``fused_names`` rt_info), so profiles and errors still point at the source model."""
    if isinstance(new, Constant) or new is root:
        return
    names = [root.friendly_name] + [n.friendly_name for n in m.nodes
                                    if n is not root and not isinstance(n, Constant) and n.type_name != "Parameter"]
    old = new.rt_info.get("fused_names", {}).get("value", "")
    merged = [n for n in old.split(",") if n] + names
    new.rt_info["fused_names"] = {"version": "0", "value": ",".join(dict.fromkeys(merged))}


def prune_dead_consumers(model: Model) -> int:
    """Drop consumer links from nodes that no longer reach a Result (so consumer counts in
    patterns see only live users). Returns how many dead nodes were unlinked."""
    live = {id(n) for n in model.get_ordered_ops()}
    dead = 0
    for node in model.get_ordered_ops():
        for port in node.outputs():
            for user in port.targets:
                if id(user.node) not in live:
                    port.remove_target_input(user)
                    dead += 1
    return dead
