"""Nodes and their ports.

A ``Node`` is one op instance: typed attributes, inputs connected to other nodes' ``Output``
ports, and outputs whose element type and partial shape are inferred when the node is built
(``validate_and_infer_types``). Every op class declares its attributes with ``Attr`` rows and
implements two methods: ``infer`` (types and shapes) and ``evaluate`` (the numpy reference).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ember.errors import EmberError, ShapeInferenceError
from ember.graph.shape import PartialShape, Shape, as_partial_shape
from ember.graph.types import Type, as_type

REQUIRED: Any = object()

# How attribute values look in an IR file, per kind (parse, format).
_BOOL = {"true": True, "false": False, "1": True, "0": False}


def _split(text: str) -> list[str]:
    text = text.strip()
    return [t.strip() for t in text.split(",")] if text else []


def _fmt_float(v: float) -> str:
    r = repr(float(v))
    return r[:-2] if r.endswith(".0") else r


_ATTR_KINDS: dict[str, tuple[Any, Any]] = {
    "int": (lambda s: int(s), lambda v: str(int(v))),
    "float": (lambda s: float(s), _fmt_float),
    "bool": (lambda s: _BOOL[s.strip().lower()], lambda v: "true" if v else "false"),
    "str": (lambda s: s, str),
    "ints": (lambda s: [int(t) for t in _split(s)], lambda v: ", ".join(str(int(x)) for x in v)),
    "floats": (lambda s: [float(t) for t in _split(s)], lambda v: ", ".join(_fmt_float(x) for x in v)),
    "strs": (_split, lambda v: ",".join(v)),
    "type": (lambda s: as_type(s), lambda v: as_type(v).name),
    "shape": (lambda s: PartialShape(s), lambda v: as_partial_shape(v).ir_string()),
}


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its IR name, its kind (see ``_ATTR_KINDS``) and default."""

    name: str
    kind: str
    default: Any = REQUIRED
    #: allowed values of a "str" attribute (compared lower-case), empty for any
    choices: tuple[str, ...] = ()

    def parse(self, text: str) -> Any:
        return self._check(_ATTR_KINDS[self.kind][0](text))

    def _check(self, value: Any) -> Any:
        if self.choices and str(value).lower() not in self.choices:
            raise ValueError(f"attribute '{self.name}' is {value!r}; allowed: {', '.join(self.choices)}")
        return value

    def format(self, value: Any) -> str:
        return _ATTR_KINDS[self.kind][1](value)

    def coerce(self, value: Any) -> Any:
        return self._check(self._coerce(value))

    def _coerce(self, value: Any) -> Any:
        if isinstance(value, str) and self.kind not in ("str", "type", "shape"):
            return self.parse(value)
        if self.kind == "type":
            return as_type(value)
        if self.kind == "shape":
            return as_partial_shape(value)
        if self.kind == "ints":
            return [int(x) for x in np.asarray(value).reshape(-1)]
        if self.kind == "floats":
            return [float(x) for x in np.asarray(value).reshape(-1)]
        if self.kind == "strs":
            return [str(x) for x in value]
        if self.kind == "int":
            return int(value)
        if self.kind == "float":
            return float(value)
        if self.kind == "bool":
            return bool(value)
        return value


class TensorDesc:
    """What one output carries besides its type: tensor names and port ``rt_info``."""

    __slots__ = ("names", "rt_info")

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.rt_info: dict[str, Any] = {}

    def get_names(self) -> set[str]:
        """The tensor's names."""
        return set(self.names)

    def set_names(self, names: Iterable[str]) -> None:
        """Replace the tensor's names."""
        self.names = set(names)

    def add_names(self, names: Iterable[str]) -> None:
        """Add names to the tensor."""
        self.names |= set(names)

    def get_any_name(self) -> str:
        """One of the tensor's names (the first in sorted order)."""
        if not self.names:
            raise EmberError("ember: the tensor has no name")
        return sorted(self.names)[0]

    @property
    def any_name(self) -> str:
        """``get_any_name()`` as a property."""
        return self.get_any_name()


class Output:
    """An output port: ``(node, index)``. Equal ports compare equal and hash alike."""

    __slots__ = ("node", "index")

    def __init__(self, node: Node, index: int) -> None:
        self.node = node
        self.index = index

    # -- type and shape -----------------------------------------------------------------
    @property
    def element_type(self) -> Type:
        return self.node._out_types[self.index]

    @property
    def partial_shape(self) -> PartialShape:
        return self.node._out_shapes[self.index]

    @property
    def shape(self) -> Shape:
        return self.partial_shape.to_shape()

    def get_element_type(self) -> Type:
        return self.element_type

    def get_partial_shape(self) -> PartialShape:
        return self.partial_shape

    def get_shape(self) -> Shape:
        return self.shape

    # -- identity -----------------------------------------------------------------------
    def get_node(self) -> Node:
        return self.node

    def get_index(self) -> int:
        return self.index

    @property
    def tensor(self) -> TensorDesc:
        return self.node._tensor(self.index)

    def get_tensor(self) -> TensorDesc:
        """The port's tensor descriptor (names and rt_info), as OpenVINO's ``Output.get_tensor()``."""
        return self.tensor

    @property
    def names(self) -> set[str]:
        return self.tensor.names

    def get_names(self) -> set[str]:
        return set(self.names)

    def set_names(self, names: Iterable[str]) -> None:
        self.tensor.names = set(names)

    def add_names(self, names: Iterable[str]) -> None:
        self.tensor.names |= set(names)

    @property
    def any_name(self) -> str:
        return self.get_any_name()

    def get_any_name(self) -> str:
        if not self.names:
            raise EmberError(f"ember: output {self.index} of '{self.node.friendly_name}' has no tensor name")
        return sorted(self.names)[0]

    @property
    def rt_info(self) -> dict[str, Any]:
        return self.tensor.rt_info

    def get_rt_info(self) -> dict[str, Any]:
        return self.rt_info

    # -- connections --------------------------------------------------------------------
    @property
    def targets(self) -> list[Input]:
        return [i for i in self.node._consumers[self.index]]

    def get_target_inputs(self) -> set[Input]:
        return set(self.targets)

    @property
    def target_inputs(self) -> set[Input]:
        """``get_target_inputs()`` as a property."""
        return self.get_target_inputs()

    def remove_target_input(self, target: Input) -> None:
        """Forget consumer ``target`` of this port (as OpenVINO's ``Output.remove_target_input``):
        for unlinking dead nodes; ``target``'s node keeps its own input link."""
        users = self.node._consumers[self.index]
        self.node._consumers[self.index] = [i for i in users if not (i.node is target.node and i.index == target.index)]

    def replace(self, new: Output) -> None:
        """Reconnect every consumer of this port to ``new`` (Results keep their names)."""
        new = as_output(new)
        for inp in self.targets:
            inp.replace_source_output(new)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Output) and other.node is self.node and other.index == self.index

    def __hash__(self) -> int:
        return hash((id(self.node), self.index))

    def __repr__(self) -> str:
        names = ",".join(sorted(self.names)) if self.node._outputs_desc else ""
        return (f"<Output: names[{names}] shape{self.partial_shape} type: {self.element_type.name} "
                f"of {self.node.type_name} '{self.node.friendly_name}'>")


class Input:
    """An input port of a node: ``(node, index)``, connected to one ``Output``."""

    __slots__ = ("node", "index")

    def __init__(self, node: Node, index: int) -> None:
        self.node = node
        self.index = index

    @property
    def source(self) -> Output:
        return self.node._inputs[self.index]

    def get_source_output(self) -> Output:
        return self.source

    def get_node(self) -> Node:
        return self.node

    def get_index(self) -> int:
        return self.index

    def get_element_type(self) -> Type:
        return self.source.element_type

    def get_partial_shape(self) -> PartialShape:
        return self.source.partial_shape

    def get_shape(self) -> Shape:
        return self.source.shape

    def replace_source_output(self, new: Output) -> None:
        self.node.set_argument(self.index, new)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Input) and other.node is self.node and other.index == self.index

    def __hash__(self) -> int:
        return hash((id(self.node), self.index, "in"))

    def __repr__(self) -> str:
        return f"<Input {self.index} of {self.node.type_name} '{self.node.friendly_name}'>"


_ids = itertools.count()


class Node:
    """Base of every op. Subclasses set ``type_name``, ``version`` and ``attributes``.

    ``infer(self)`` returns ``[(Type, PartialShape), ...]`` for the outputs, reading inputs
    with ``input_type(i)``, ``input_shape(i)`` and ``input_value(i)`` (a constant ndarray or
    None). ``evaluate(self, inputs)`` maps numpy arrays to numpy arrays.
    """

    type_name: ClassVar[str] = ""
    version: ClassVar[str] = "opset1"
    attributes: ClassVar[tuple[Attr, ...]] = ()
    num_inputs: ClassVar[tuple[int, int | None]] = (0, None)
    #: False for nodes whose value is not a pure function of their inputs.
    foldable: ClassVar[bool] = True

    def __init__(self, inputs: Sequence[Any] = (), attrs: Mapping[str, Any] | None = None,
                 name: str | None = None, *, validate: bool = True) -> None:
        self._id = next(_ids)
        self._inputs: list[Output] = [as_output(x) for x in inputs]
        self._consumers: list[list[Input]] = []
        self._out_types: list[Type] = []
        self._out_shapes: list[PartialShape] = []
        self._outputs_desc: list[TensorDesc] = []
        self.friendly_name = name or f"{self.type_name}_{self._id}"
        self.rt_info: dict[str, Any] = {}
        self.attrs: dict[str, Any] = {}
        self._const_cache: dict[int, np.ndarray | None] | None = None
        given = dict(attrs or {})
        for a in self.attributes:
            if a.name in given:
                try:
                    self.attrs[a.name] = a.coerce(given.pop(a.name))
                except (ValueError, TypeError) as e:
                    raise ShapeInferenceError(f"ember: {self.type_name} '{self.friendly_name}': {e}") from None
            elif a.default is REQUIRED:
                raise ShapeInferenceError(
                    f"ember: {self.type_name} '{self.friendly_name}': attribute '{a.name}' is required")
            else:
                self.attrs[a.name] = a.default
        if given:
            known = ", ".join(a.name for a in self.attributes) or "none"
            raise ShapeInferenceError(
                f"ember: {self.type_name} '{self.friendly_name}': unknown attribute(s) "
                f"{', '.join(sorted(given))}; known: {known}")
        lo, hi = self.num_inputs
        if len(self._inputs) < lo or (hi is not None and len(self._inputs) > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{'' if hi is None else hi}"
            raise ShapeInferenceError(
                f"ember: {self.type_name} '{self.friendly_name}' takes {want} inputs, got {len(self._inputs)}")
        for i, src in enumerate(self._inputs):
            src.node._add_consumer(src.index, Input(self, i))
        if validate:
            self.validate_and_infer_types()

    # -- attribute access ---------------------------------------------------------------
    def __getattr__(self, item: str) -> Any:
        attrs = self.__dict__.get("attrs")
        if attrs is not None and item in attrs:
            return attrs[item]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{item}'")

    def get_attributes(self) -> dict[str, Any]:
        return dict(self.attrs)

    # -- inference ----------------------------------------------------------------------
    def infer(self) -> list[tuple[Type, PartialShape]]:
        raise NotImplementedError

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError(f"ember: {self.type_name} has no reference kernel")

    def validate_and_infer_types(self) -> None:
        """Run type and shape inference; raise ``ShapeInferenceError`` naming this node."""
        self._const_cache = None
        try:
            outs = self.infer()
        except EmberError as e:
            if isinstance(e, ShapeInferenceError) and f"'{self.friendly_name}'" in str(e):
                raise
            raise ShapeInferenceError(f"ember: {self.type_name} '{self.friendly_name}': {_strip(e)}") from e
        except (ValueError, IndexError, TypeError, KeyError, ZeroDivisionError) as e:
            raise ShapeInferenceError(
                f"ember: {self.type_name} '{self.friendly_name}': shape inference failed: {e}") from e
        self._set_outputs(outs)

    def _set_outputs(self, outs: Sequence[tuple[Type, Any]]) -> None:
        n = len(outs)
        self._out_types = [t for t, _ in outs]
        self._out_shapes = [as_partial_shape(s) for _, s in outs]
        while len(self._consumers) < n:
            self._consumers.append([])
            self._outputs_desc.append(TensorDesc())

    def fail(self, reason: str) -> ShapeInferenceError:
        """An error for this node: ``raise self.fail("...")`` inside ``infer``."""
        return ShapeInferenceError(f"ember: {self.type_name} '{self.friendly_name}': {reason}")

    def input_type(self, i: int) -> Type:
        return self._inputs[i].element_type

    def input_shape(self, i: int) -> PartialShape:
        return self._inputs[i].partial_shape

    def input_value(self, i: int) -> np.ndarray | None:
        """The value of input ``i`` when it is known before inference (constant-foldable)."""
        return constant_value(self._inputs[i])

    def constant_outputs(self) -> list[np.ndarray] | None:
        """This node's output values when computable without running the model."""
        if not self.foldable:
            return None
        vals = [constant_value(o) for o in self._inputs]
        if any(v is None for v in vals):
            return None
        if sum(int(np.asarray(v).size) for v in vals) > _FOLD_LIMIT:
            return None
        try:
            return self.evaluate(vals)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - a failed fold just means "not known"
            return None

    # -- ports --------------------------------------------------------------------------
    def _add_consumer(self, index: int, inp: Input) -> None:
        while len(self._consumers) <= index:
            self._consumers.append([])
            self._outputs_desc.append(TensorDesc())
        self._consumers[index].append(inp)

    def _tensor(self, index: int) -> TensorDesc:
        return self._outputs_desc[index]

    def set_argument(self, index: int, new: Any) -> None:
        new = as_output(new)
        old = self._inputs[index]
        old.node._consumers[old.index] = [i for i in old.node._consumers[old.index]
                                          if not (i.node is self and i.index == index)]
        self._inputs[index] = new
        new.node._add_consumer(new.index, Input(self, index))
        self._const_cache = None

    def set_arguments(self, outputs: Sequence[Any]) -> None:
        for i, o in enumerate(outputs):
            self.set_argument(i, o)

    def append_input(self, value: Any) -> int:
        """Connect ``value`` as a new last input and return its index: for ops whose inputs
        grow as they are built (TensorIterator/Loop's ``set_invariant_input`` ...). Inference
        is not re-run; call ``validate_and_infer_types`` when the node is complete."""
        out = as_output(value)
        index = len(self._inputs)
        self._inputs.append(out)
        out.node._add_consumer(out.index, Input(self, index))
        self._const_cache = None
        return index

    def output(self, i: int) -> Output:
        if not 0 <= i < len(self._out_types):
            raise EmberError(f"ember: {self.type_name} '{self.friendly_name}' has no output {i}")
        return Output(self, i)

    def outputs(self) -> list[Output]:
        return [Output(self, i) for i in range(len(self._out_types))]

    def input(self, i: int) -> Input:
        if not 0 <= i < len(self._inputs):
            raise EmberError(f"ember: {self.type_name} '{self.friendly_name}' has no input {i}")
        return Input(self, i)

    def inputs(self) -> list[Input]:
        return [Input(self, i) for i in range(len(self._inputs))]

    def input_values(self) -> list[Output]:
        return list(self._inputs)

    def get_input_size(self) -> int:
        return len(self._inputs)

    def get_output_size(self) -> int:
        return len(self._out_types)

    def get_output_element_type(self, i: int) -> Type:
        return self._out_types[i]

    def get_output_partial_shape(self, i: int) -> PartialShape:
        return self._out_shapes[i]

    def get_output_shape(self, i: int) -> Shape:
        return self._out_shapes[i].to_shape()

    def set_output_type(self, i: int, element_type: Type, shape: Any) -> None:
        """Set output ``i``'s element type and shape (as OpenVINO's ``Node.set_output_type``);
        the next ``validate_and_infer_types`` recomputes them."""
        self._out_types[i] = element_type
        self._out_shapes[i] = as_partial_shape(shape)

    def get_element_type(self) -> Type:
        return self._out_types[0]

    def get_input_element_type(self, i: int) -> Type:
        return self.input_type(i)

    def get_input_partial_shape(self, i: int) -> PartialShape:
        return self.input_shape(i)

    def get_input_shape(self, i: int) -> Shape:
        return self.input_shape(i).to_shape()

    # -- names, rt_info ------------------------------------------------------------------
    def get_friendly_name(self) -> str:
        return self.friendly_name

    def set_friendly_name(self, name: str) -> None:
        self.friendly_name = name

    def get_name(self) -> str:
        return self.friendly_name

    def get_type_name(self) -> str:
        return self.type_name

    def get_rt_info(self) -> dict[str, Any]:
        return self.rt_info

    @classmethod
    def get_type_info(cls) -> tuple[str, str]:
        return cls.type_name, cls.version

    def __repr__(self) -> str:
        outs = ", ".join(f"{t.name}{s}" for t, s in zip(self._out_types, self._out_shapes))
        return f"<{self.type_name} '{self.friendly_name}': ({outs})>"

    # -- structure for subclasses with bodies (If, Loop) ----------------------------------
    def bodies(self) -> list[Any]:
        return []

    def clone_with_inputs(self, inputs: Sequence[Output], types: Sequence[tuple[Type, Any]] | None = None) -> Node:
        """A new node of the same op and attributes on other inputs. ``types``: its outputs'
        (element type, shape) when the caller knows them (a node of the same op, attributes and
        input types inferred before): inference is not run again."""
        new = type(self).__new__(type(self))
        Node.__init__(new, inputs, self.attrs, self.friendly_name, validate=False)
        new._copy_extra_from(self)
        new.rt_info = _copy_rt(self.rt_info)
        if types is None:
            new.validate_and_infer_types()
        else:
            new._set_outputs(types)
        for i, d in enumerate(self._outputs_desc[: len(new._outputs_desc)]):
            new._outputs_desc[i].names = set(d.names)
            new._outputs_desc[i].rt_info = _copy_rt(d.rt_info)
        return new

    def _copy_extra_from(self, other: Node) -> None:
        """Copy state that is not an attribute (constant data, bodies); subclasses extend."""


_FOLD_LIMIT = 1 << 16


def _copy_rt(rt: dict[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in rt.items()}


def _strip(e: Exception) -> str:
    msg = str(e)
    return msg[len("ember: "):] if msg.startswith("ember: ") else msg


def constant_value(out: Output) -> np.ndarray | None:
    """The value of ``out`` if it can be computed from constants alone, else None."""
    node = out.node
    if node._const_cache is None:
        node._const_cache = {}
        vals = node.constant_outputs()
        for i in range(len(node._out_types)):
            node._const_cache[i] = None if vals is None else vals[i]
    return node._const_cache.get(out.index)


def as_output(value: Any) -> Output:
    """Accept an Output, a single-output Node, an ndarray or a Python scalar (made a Constant)."""
    if isinstance(value, Output):
        return value
    if isinstance(value, Node):
        if len(value._out_types) != 1:
            raise EmberError(
                f"ember: {value.type_name} '{value.friendly_name}' has {len(value._out_types)} outputs; "
                "pass one of node.output(i)")
        return Output(value, 0)
    from ember.graph.core_ops import Constant

    return Output(Constant(value), 0)
