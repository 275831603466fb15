"""ember's sequence ops: ONNX sequences and optionals whose length is known only at run time.

OpenVINO has no sequence values, so these ops are ember's own (IR version ``ember_opset1``).
A sequence value has the element type ``Type.sequence``: in memory a 1-D numpy object array
whose items are the tensors (each an ndarray in ember's memory form). An ONNX optional is a
sequence of zero or one item. Most models keep their sequences at conversion time (the ONNX
frontend resolves them into tensors); these ops run only where the length is not known then:
sequence-typed model inputs and outputs, sequences carried through a Loop, split sizes
computed at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type, as_type

SEQUENCE_SHAPE = PartialShape([Dimension()])


def make_sequence(items: Iterable[Any]) -> np.ndarray:
    """A sequence value holding ``items`` (arrays, or nested sequence values)."""
    items = list(items)
    out = np.empty(len(items), dtype=object)
    for k, it in enumerate(items):
        out[k] = it
    return out


def sequence_items(value: Any) -> list[Any]:
    """The items of a sequence value."""
    return list(np.asarray(value, dtype=object).reshape(-1)) if value is not None else []


class _SequenceOp(Node):
    version = "ember_opset1"
    foldable = False  # a folded sequence would be a Constant no IR can hold

    def _check_sequence(self, i: int) -> None:
        t = self.input_type(i)
        if not (t is Type.sequence or t.is_dynamic):
            raise self.fail(f"input {i} must be a sequence, got a {t} tensor")

    def _position(self, value: Any, length: int, insert: bool) -> int:
        pos = int(np.asarray(value).reshape(-1)[0])
        hi = length if insert else length - 1
        if pos < 0:
            pos += length
        if not 0 <= pos <= hi:
            raise self.fail(f"position {int(np.asarray(value).reshape(-1)[0])} is out of range for a "
                            f"sequence of {length}")
        return pos


@register_op
class SequenceEmpty(_SequenceOp):
    """An empty sequence."""

    type_name = "SequenceEmpty"
    num_inputs = (0, 0)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(Type.sequence, SEQUENCE_SHAPE)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [make_sequence([])]


@register_op
class SequenceConstruct(_SequenceOp):
    """A sequence of its inputs, in order (tensors, or sequences for an optional of one)."""

    type_name = "SequenceConstruct"
    num_inputs = (0, None)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(Type.sequence, PartialShape([self.get_input_size()]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [make_sequence(inputs)]


@register_op
class SequenceInsert(_SequenceOp):
    """ONNX SequenceInsert: a copy of the sequence with a tensor inserted before ``position``
    (default: at the end; a negative position counts from the end, -1 is before the last)."""

    type_name = "SequenceInsert"
    num_inputs = (2, 3)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._check_sequence(0)
        return [(Type.sequence, SEQUENCE_SHAPE)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        items = sequence_items(inputs[0])
        pos = len(items) if len(inputs) < 3 else self._position(inputs[2], len(items), insert=True)
        items.insert(pos, inputs[1])
        return [make_sequence(items)]


@register_op
class SequenceErase(_SequenceOp):
    """ONNX SequenceErase: a copy without the item at ``position`` (default: the last)."""

    type_name = "SequenceErase"
    num_inputs = (1, 2)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._check_sequence(0)
        return [(Type.sequence, SEQUENCE_SHAPE)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        items = sequence_items(inputs[0])
        if not items:
            raise self.fail("cannot erase from an empty sequence")
        pos = len(items) - 1 if len(inputs) < 2 else self._position(inputs[1], len(items), insert=False)
        del items[pos]
        return [make_sequence(items)]


@register_op
class SequenceAt(_SequenceOp):
    """ONNX SequenceAt: the item at ``position``. ``element_type`` is the items' type
    (``sequence`` when the items are sequences, as in an optional holding a sequence)."""

    type_name = "SequenceAt"
    num_inputs = (2, 2)
    attributes = (Attr("element_type", "type", Type.dynamic),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._check_sequence(0)
        et = self.attrs["element_type"]
        return [(et, SEQUENCE_SHAPE if et is Type.sequence else PartialShape.dynamic())]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        items = sequence_items(inputs[0])
        if not items:
            raise self.fail("the sequence is empty")
        return [items[self._position(inputs[1], len(items), insert=False)]]


@register_op
class SequenceLength(_SequenceOp):
    """ONNX SequenceLength: the number of items, an i64 scalar."""

    type_name = "SequenceLength"
    num_inputs = (1, 1)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._check_sequence(0)
        return [(Type.i64, PartialShape([]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.array(len(sequence_items(inputs[0])), dtype=np.int64)]


@register_op
class ConcatFromSequence(_SequenceOp):
    """ONNX ConcatFromSequence: the items concatenated along ``axis`` (stacked along a new
    axis when ``new_axis``)."""

    type_name = "ConcatFromSequence"
    num_inputs = (1, 1)
    attributes = (Attr("axis", "int", 0), Attr("new_axis", "bool", False),
                  Attr("element_type", "type", Type.dynamic))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._check_sequence(0)
        return [(self.attrs["element_type"], PartialShape.dynamic())]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        items = [np.asarray(x) for x in sequence_items(inputs[0])]
        if not items:
            raise self.fail("cannot concatenate an empty sequence")
        axis = self.attrs["axis"]
        if self.attrs["new_axis"]:
            r = items[0].ndim + 1
            return [np.stack(items, axis=axis + r if axis < 0 else axis)]
        return [np.concatenate(items, axis=axis)]


@register_op
class SplitToSequence(_SequenceOp):
    """ONNX SplitToSequence with the split known only at run time: ``split`` a scalar (chunks
    of that size, the last one smaller) or a 1-D list of sizes; without it, single items
    (squeezed unless ``keepdims``)."""

    type_name = "SplitToSequence"
    num_inputs = (1, 2)
    attributes = (Attr("axis", "int", 0), Attr("keepdims", "bool", True))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(Type.sequence, SEQUENCE_SHAPE)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        axis = self.attrs["axis"]
        axis = axis + x.ndim if axis < 0 else axis
        n = x.shape[axis]
        if len(inputs) < 2:
            parts = [np.take(x, [k], axis=axis) for k in range(n)]
            if not self.attrs["keepdims"]:
                parts = [np.squeeze(p, axis=axis) for p in parts]
            return [make_sequence(parts)]
        split = np.asarray(inputs[1]).astype(np.int64)
        if split.ndim == 0:
            size = int(split)
            if size <= 0:
                raise self.fail(f"split size {size} must be positive")
            sizes = [min(size, n - k) for k in range(0, n, size)]
        else:
            sizes = [int(s) for s in split]
            if sum(sizes) != n or any(s < 0 for s in sizes):
                raise self.fail(f"split sizes {sizes} do not add up to the dimension {n}")
        bounds = np.cumsum([0] + sizes)
        parts = [np.take(x, np.arange(bounds[k], bounds[k + 1]), axis=axis) for k in range(len(sizes))]
        return [make_sequence(parts)]


@builder
def sequence_empty(name: str | None = None) -> Node:
    """An empty sequence."""
    return SequenceEmpty([], {}, name)


@builder
def sequence_construct(items: Sequence[Any], name: str | None = None) -> Node:
    """A sequence of ``items``."""
    return SequenceConstruct(list(items), {}, name)


@builder
def sequence_insert(sequence: Any, tensor: Any, position: Any = None, name: str | None = None) -> Node:
    """``sequence`` with ``tensor`` inserted before ``position`` (default: appended)."""
    return SequenceInsert([sequence, tensor] + ([] if position is None else [position]), {}, name)


@builder
def sequence_erase(sequence: Any, position: Any = None, name: str | None = None) -> Node:
    """``sequence`` without the item at ``position`` (default: the last)."""
    return SequenceErase([sequence] + ([] if position is None else [position]), {}, name)


@builder
def sequence_at(sequence: Any, position: Any, element_type: Any = Type.dynamic, name: str | None = None) -> Node:
    """The item of ``sequence`` at ``position``."""
    return SequenceAt([sequence, position], {"element_type": as_type(element_type)}, name)


@builder
def sequence_length(sequence: Any, name: str | None = None) -> Node:
    """The number of items of ``sequence``."""
    return SequenceLength([sequence], {}, name)


@builder
def concat_from_sequence(sequence: Any, axis: int, new_axis: bool = False, element_type: Any = Type.dynamic,
                         name: str | None = None) -> Node:
    """The items of ``sequence`` concatenated (or stacked) along ``axis``."""
    return ConcatFromSequence([sequence], {"axis": axis, "new_axis": new_axis,
                                           "element_type": as_type(element_type)}, name)


@builder
def split_to_sequence(data: Any, split: Any = None, axis: int = 0, keepdims: bool = True,
                      name: str | None = None) -> Node:
    """``data`` split along ``axis`` into a sequence."""
    return SplitToSequence([data] + ([] if split is None else [split]), {"axis": axis, "keepdims": keepdims},
                           name)


# -- values at a model's boundary ---------------------------------------------------------
#: rt_info key on a Parameter or Result whose value is a sequence or an optional; the value is
#: "sequence", "optional" (of a tensor), "optional.sequence" (of a sequence) or "sequence.map"
#: (an output of dicts, as ai.onnx.ml ZipMap makes).
VALUE_KIND = "ember_value_kind"
#: rt_info key with the element type of the items (of a sequence or an optional)
ITEM_TYPE = "ember_item_type"


def _rt_value(node: Any, key: str) -> str | None:
    v = getattr(node, "rt_info", {}).get(key)
    if isinstance(v, dict):  # as the IR reader returns rt_info attributes
        v = v.get("value")
    return None if v is None else str(v)


def boundary_kind(node: Any) -> str | None:
    """The value kind of a Parameter or Result (None for a tensor)."""
    return _rt_value(node, VALUE_KIND)


def item_type_name(node: Any) -> str | None:
    """The element type name of a sequence or optional Parameter's items, if known."""
    return _rt_value(node, ITEM_TYPE)


def pack_value(kind: str, value: Any, convert_item: Any = None) -> np.ndarray:
    """A user's value for an input of ``kind`` as a sequence value: a list (or tuple) of arrays
    for a sequence, None or the held value for an optional. ``convert_item`` turns one user
    array into ember's memory form (default ``np.asarray``)."""
    conv = convert_item or np.asarray
    if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 1 and \
            all(isinstance(v, np.ndarray) for v in value):
        return value  # already packed
    if kind == "sequence":
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"a sequence input takes a list of arrays, got a {type(value).__name__}")
        return make_sequence(conv(v) for v in value)
    if value is None:
        return make_sequence([])
    if kind == "optional.sequence":
        return make_sequence([pack_value("sequence", value, convert_item)])
    return make_sequence([conv(value)])


def unpack_value(kind: str | None, value: Any) -> Any:
    """The user-facing form of an output of ``kind``: a list of arrays for a sequence, None or
    the held value for an optional, the array itself for a tensor."""
    if kind is None:
        return value
    items = sequence_items(value)
    if kind == "sequence.map":
        return [dict(v) for v in items]
    if kind == "sequence":
        return [np.asarray(v) for v in items]
    if not items:
        return None
    return unpack_value("sequence", items[0]) if kind == "optional.sequence" else np.asarray(items[0])
