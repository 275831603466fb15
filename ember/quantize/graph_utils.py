"""Small graph questions the quantization passes ask: is a port constant, its value, a model
given in any accepted form."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ember.graph.model import Model
from ember.graph.node import Node, Output

#: nodes whose value depends on something other than their inputs
_NOT_FOLDABLE = {"Parameter", "ReadValue", "Assign", "RandomUniform"}


class Constants:
    """Answers "is this port a constant" structurally (every ancestor a Const), and computes
    constant values on demand with the reference kernels, however large."""

    def __init__(self) -> None:
        self._const: dict[int, bool] = {}
        self._values: dict[tuple[int, int], np.ndarray] = {}
        self._keep: list[Node] = []  # keep nodes alive so their ids stay unique

    def is_const(self, out: Output) -> bool:
        return self._is_const_node(out.node)

    def _is_const_node(self, node: Node) -> bool:
        key = id(node)
        if key not in self._const:
            self._keep.append(node)
            stack = [node]
            while stack:  # iterative: chains of constant ops can be long
                n = stack[-1]
                pending = [o.node for o in n.input_values() if id(o.node) not in self._const]
                if pending:
                    self._keep.extend(pending)
                    stack.extend(pending)
                    continue
                stack.pop()
                if n.type_name == "Const":
                    self._const[id(n)] = True
                elif n.type_name in _NOT_FOLDABLE or not n.foldable or not n.get_input_size():
                    self._const[id(n)] = False
                else:
                    self._const[id(n)] = all(self._const[id(o.node)] for o in n.input_values())
        return self._const[key]

    def value(self, out: Output) -> np.ndarray:
        """The value of a constant port (``is_const`` must be True)."""
        key = (id(out.node), out.index)
        if key not in self._values:
            node = out.node
            if node.type_name == "Const":
                vals = [node.data]
            else:
                vals = node.evaluate([self.value(o) for o in node.input_values()])
            for i, v in enumerate(vals):
                self._values[(id(node), i)] = np.asarray(v)
        return self._values[key]


def load_model(model: Any) -> Model:
    """An ember Model from an ember Model (cloned: the caller's model is never changed), an
    ``.onnx``/``.xml`` path or an ``onnx.ModelProto`` (converted and optimized)."""
    if isinstance(model, Model):
        return model.clone()
    if type(model).__module__.startswith("openvino"):
        from ember.quantize.parameters import QuantizationError

        raise QuantizationError("ember: this is an openvino.Model; save it with openvino.save_model and pass the "
                                ".xml path, or pass the ember Model")
    from ember.convert import convert_model

    if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".xml"):
        return convert_model(model, opt_level=0)
    return convert_model(model)
