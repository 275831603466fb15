"""The REFERENCE device's executor: evaluate a Model with the ops' numpy reference kernels
(the REFERENCE device and the bodies of control-flow ops use it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ember.errors import EmberError, InferenceError
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Node


class ReferenceExecutor:
    """A Model compiled for the reference kernels: nodes in order, with the last use of every
    value known so that intermediate arrays are released as soon as possible."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.order: list[Node] = model.get_ordered_ops()
        self.param_index = {id(p): i for i, p in enumerate(model.get_parameters())}
        pos = {id(n): i for i, n in enumerate(self.order)}
        last_use: dict[tuple[int, int], int] = {}
        for i, n in enumerate(self.order):
            for src in n.input_values():
                last_use[(id(src.node), src.index)] = i
        self.release_after: list[list[tuple[int, int]]] = [[] for _ in self.order]
        keep = {(id(r.input_values()[0].node), r.input_values()[0].index) for r in model.get_results()}
        for key, i in last_use.items():
            if key not in keep and pos.get(key[0], -1) >= 0:
                self.release_after[i].append(key)

    def run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None = None) -> list[np.ndarray]:
        """Evaluate the model; ``inputs`` in parameter order. Returns one array per Result."""
        import time

        values: dict[tuple[int, int], np.ndarray] = {}
        results: dict[int, np.ndarray] = {}
        for i, node in enumerate(self.order):
            if isinstance(node, Parameter):
                values[(id(node), 0)] = inputs[self.param_index[id(node)]]
                continue
            if isinstance(node, Constant):
                values[(id(node), 0)] = node.data
                continue
            args = [values[(id(s.node), s.index)] for s in node.input_values()]
            if isinstance(node, Result):
                results[id(node)] = args[0]
                continue
            t0 = time.perf_counter() if profile is not None else 0.0
            try:
                outs = node.evaluate(args)
            except EmberError:
                raise
            except Exception as e:  # a kernel failure names the node that failed
                raise InferenceError(
                    f"ember: {node.type_name} '{node.friendly_name}' failed on inputs of shapes "
                    f"{[tuple(np.shape(a)) for a in args]}: {type(e).__name__}: {e}") from e
            if profile is not None:
                profile[node.friendly_name] = profile.get(node.friendly_name, 0.0) + time.perf_counter() - t0
            for k, out in enumerate(outs):
                values[(id(node), k)] = out
            for key in self.release_after[i]:
                values.pop(key, None)
        return [results[id(r)] for r in self.model.get_results()]


def run_model(model: Model, inputs: Sequence[Any] | Mapping[str, Any]) -> list[np.ndarray]:
    """Evaluate ``model`` on ``inputs`` (a list in parameter order, or a dict by input name)."""
    params = model.get_parameters()
    if isinstance(inputs, Mapping):
        ordered = []
        for p in params:
            keys = set(p.output(0).names) | {p.friendly_name}
            hit = [inputs[k] for k in keys if k in inputs]
            if not hit:
                raise InferenceError(f"ember: no value given for input '{p.friendly_name}'")
            ordered.append(hit[0])
        inputs = ordered
    arrays = [np.asarray(x) for x in inputs]
    return ReferenceExecutor(model).run(arrays)
