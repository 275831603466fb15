"""What a converter sees of one ONNX node: its inputs, attributes, opset and helpers.

Values flowing between ONNX nodes are ember ``Output`` ports for tensors; ONNX sequences and
optionals, which OpenVINO has no tensor type for, are held at conversion time as
``SequenceValue`` (a list of ports) and ``OptionalValue``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import AttributeProto

from ember.errors import ConversionError
from ember.graph.node import Output, constant_value
from ember.graph.types import Type

if TYPE_CHECKING:
    from ember.frontends.onnx.graph import GraphConverter, Subgraph

_MISSING: Any = object()


@dataclass
class SequenceValue:
    """An ONNX sequence known at conversion time: its items and their element type."""

    items: list[Output] = field(default_factory=list)
    elem_type: Type | None = None


@dataclass
class OptionalValue:
    """An ONNX optional: ``value`` is None when it holds nothing.

    With ``runtime`` set, whether it holds something is known only at run time: ``value`` is
    then a ``Type.sequence`` port of zero or one item (``kind`` says what the item is).
    """

    value: Any = None
    elem_type: Type | None = None
    kind: str = "tensor"
    runtime: bool = False


class NodeContext:
    """One ONNX node being converted.

    ``ctx.input(i)`` is the i-th input port (None when the optional input is absent),
    ``ctx.attr("axis", 0)`` an attribute (strings decoded, tensors as ndarrays, graphs as
    GraphProto), ``ctx.opset`` the opset version of the node's domain.
    """

    def __init__(self, node: onnx.NodeProto, values: list[Any], graph: GraphConverter,
                 opsets: dict[str, int]) -> None:
        self.node = node
        self._values = values
        self.graph = graph
        self.opsets = opsets
        self._attrs = {a.name: a for a in node.attribute}

    # -- identity -----------------------------------------------------------------------
    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def domain(self) -> str:
        return self.node.domain if self.node.domain not in ("", "ai.onnx") else ""

    @property
    def opset(self) -> int:
        return self.opsets.get(self.domain, 1)

    @property
    def name(self) -> str:
        if self.node.name:
            return self.node.name
        outs = [o for o in self.node.output if o]
        return outs[0] if outs else self.node.op_type

    def fail(self, reason: str) -> ConversionError:
        """An error naming this node: ``raise ctx.fail("...")``."""
        return ConversionError(f"ember: ONNX {self.op_type} node '{self.name}' (opset {self.opset}): {reason}")

    # -- inputs -------------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        """How many input slots the node lists, absent optional ones included."""
        return len(self.node.input)

    def has_input(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != "" and self._values[i] is not None

    def value(self, i: int) -> Any:
        """The raw value of input ``i`` (a port, a SequenceValue, an OptionalValue or None)."""
        return self._values[i] if i < len(self._values) else None

    def input(self, i: int) -> Output | None:
        """Input ``i`` as a tensor port; None when absent."""
        v = self.value(i)
        if v is None or isinstance(v, Output):
            return v
        if isinstance(v, OptionalValue) and not v.runtime:
            if v.value is None or isinstance(v.value, Output):
                return v.value
        if isinstance(v, OptionalValue):
            from ember.frontends.onnx.ops.sequence import optional_get

            return optional_get(self, v)
        raise self.fail(f"input {i} ('{self.node.input[i]}') is a sequence, a tensor was expected")

    def req(self, i: int) -> Output:
        """Input ``i``, which must be present."""
        v = self.input(i)
        if v is None:
            raise self.fail(f"input {i} is required")
        return v

    def inputs(self) -> list[Output | None]:
        return [self.input(i) for i in range(len(self._values))]

    def const(self, i: int) -> np.ndarray | None:
        """Input ``i``'s value when it is known at conversion time, else None."""
        v = self.input(i)
        return None if v is None else constant_value(v)

    def const_ints(self, i: int) -> list[int] | None:
        c = self.const(i)
        return None if c is None else [int(x) for x in np.asarray(c).reshape(-1)]

    # -- outputs ------------------------------------------------------------------------
    @property
    def num_outputs(self) -> int:
        return len(self.node.output)

    def output_used(self, i: int) -> bool:
        return i < len(self.node.output) and self.node.output[i] != ""

    # -- attributes ---------------------------------------------------------------------
    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def attr(self, name: str, default: Any = _MISSING) -> Any:
        a = self._attrs.get(name)
        if a is None:
            if default is _MISSING:
                raise self.fail(f"attribute '{name}' is required")
            return default
        return self.graph.attribute_value(a)

    def attr_tensor(self, name: str) -> tuple[np.ndarray, Type] | None:
        """A tensor attribute with its element type (sub-byte types keep their identity)."""
        from ember.frontends.onnx import loader

        a = self._attrs.get(name)
        if a is None:
            return None
        if a.type == AttributeProto.SPARSE_TENSOR:
            return loader.sparse_value(a.sparse_tensor, self.graph.base_dir)
        return loader.tensor_value(a.t, self.graph.base_dir)

    def attr_type(self, name: str) -> int | None:
        a = self._attrs.get(name)
        return None if a is None else a.type

    def check_attrs(self, unsupported: Sequence[str]) -> None:
        for n in unsupported:
            if n in self._attrs:
                raise self.fail(f"attribute '{n}' is not supported")

    # -- subgraphs ----------------------------------------------------------------------
    def inline(self, name: str, inputs: Sequence[Any] = ()) -> list[Any]:
        """Convert graph attribute ``name`` in place with ``inputs``; returns its outputs."""
        a = self._attrs.get(name)
        if a is None or a.type != AttributeProto.GRAPH:
            raise self.fail(f"graph attribute '{name}' is missing")
        return self.graph.inline_subgraph(a.g, inputs, self.opsets)

    def subgraph(self, name: str, inputs: Sequence[tuple[Any, ...] | None] | None = None,
                 optional_outputs: Sequence[int] = ()) -> Subgraph:
        """Convert the graph attribute ``name`` into a body Model; ``inputs`` overrides the
        (element type, shape[, item type]) of its formal inputs where the ONNX graph leaves them
        open; outputs listed in ``optional_outputs`` are made run-time optionals."""
        a = self._attrs.get(name)
        if a is None or a.type != AttributeProto.GRAPH:
            raise self.fail(f"graph attribute '{name}' is missing")
        return self.graph.convert_subgraph(a.g, inputs, self.opsets, f"{self.name}/{name}", optional_outputs)
