"""Control flow: If (opset8), Loop (opset5) and TensorIterator (opset1), the ops with bodies.

A body is a ``Model``. Port descriptions say how the op's inputs feed body Parameters
(invariant, sliced along an axis, or merged with a back edge from a body Result) and how body
Results become the op's outputs (the last iteration's value, or the iterations' values
concatenated along an axis). The builders follow ``openvino.opset16``: build the op, attach
the body, then add inputs and outputs one by one::

    loop = ops.loop(trip_count, execution_condition)
    loop.set_function(body)
    loop.set_special_body_ports([current_iteration_index, condition_result_index])
    loop.set_merged_input(body_acc, initial, body_acc_result.output(0))
    out = loop.get_iter_value(body_acc_result.output(0), -1)

Shape inference gives body Parameters the shapes of the outer inputs (one slice for sliced
inputs) and re-infers the bodies; a merged input whose shape changes across iterations gets
dynamic dimensions. The reference kernels run the bodies with ``ReferenceExecutor``, built
once per body and shared by every call (it keeps no state between runs).

Where OpenVINO leaves behaviour undefined, ember chooses and says so: after zero iterations
a merged output is its initial value, a concatenated output is empty along its axis and any
other last-iteration output is zeros of its inferred shape; sliced inputs honour ``start``
and ``end`` as the Loop/TensorIterator spec states (OpenVINO's CPU plugin counts the parts
the same way but always cuts from index 0); a Loop that needs more parts than a sliced input
has, or gets a trip count below -1, raises ``InferenceError``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ember.errors import EmberError, InferenceError, IRFormatError, ShapeInferenceError
from ember.graph.core_ops import Parameter, Result
from ember.graph.model import Model
from ember.graph.node import _FOLD_LIMIT, Node, Output, as_output, constant_value
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type

if TYPE_CHECKING:  # bodies run on the REFERENCE device's executor, imported when first run
    from ember.devices.reference.executor import ReferenceExecutor

# -- port descriptions (``openvino.op.util.*Description``) ------------------------------------


@dataclass
class InvariantInputDescription:
    """Input ``input_index`` feeds body Parameter ``body_parameter_index`` unchanged every iteration."""

    input_index: int
    body_parameter_index: int

    def copy(self) -> InvariantInputDescription:
        return replace(self)


@dataclass
class SliceInputDescription:
    """Input ``input_index`` is cut along ``axis``; iteration ``i`` sees part ``i``.

    ``start``/``end`` (inclusive, negative counts from the end) bound the sliced range,
    ``stride`` steps between parts (negative: backwards from ``start``), ``part_size`` is
    the length of one part.
    """

    input_index: int
    body_parameter_index: int
    start: int
    stride: int
    part_size: int
    end: int
    axis: int

    def copy(self) -> SliceInputDescription:
        return replace(self)


@dataclass
class MergedInputDescription:
    """Input ``input_index`` is the first value of body Parameter ``body_parameter_index``;
    later iterations get body Result ``body_value_index`` of the previous one (a back edge)."""

    input_index: int
    body_parameter_index: int
    body_value_index: int

    def copy(self) -> MergedInputDescription:
        return replace(self)


@dataclass
class BodyOutputDescription:
    """Output ``output_index`` is body Result ``body_value_index`` after the last iteration."""

    body_value_index: int
    output_index: int
    iteration: int = -1

    def copy(self) -> BodyOutputDescription:
        return replace(self)


@dataclass
class ConcatOutputDescription:
    """Output ``output_index`` concatenates body Result ``body_value_index`` of every iteration
    along ``axis`` (in reverse iteration order when ``stride`` is negative)."""

    body_value_index: int
    output_index: int
    start: int
    stride: int
    part_size: int
    end: int
    axis: int

    def copy(self) -> ConcatOutputDescription:
        return replace(self)


InputDescription = InvariantInputDescription | SliceInputDescription | MergedInputDescription
OutputDescription = BodyOutputDescription | ConcatOutputDescription

WriteBody = Callable[[Model, str], dict[int, int]]
ReadBody = Callable[[ET.Element, str], tuple[Model, dict[int, Node]]]

# Merged-input shapes are widened until they stop changing; each round makes at least one
# dimension dynamic, so this bound is only reached by pathological bodies.
_MAX_SETTLE_ROUNDS = 64


def _strip(e: Exception) -> str:
    msg = str(e)
    return msg[len("ember: "):] if msg.startswith("ember: ") else msg


def _union(a: PartialShape, b: PartialShape) -> PartialShape:
    """A shape that both ``a`` and ``b`` fit: equal dimensions stay, the others become ``?``."""
    if not a.rank_is_static or not b.rank_is_static or len(a) != len(b):
        return PartialShape.dynamic()
    return PartialShape([x if x == y else Dimension() for x, y in zip(a, b)])


def _hull(a: PartialShape, b: PartialShape) -> PartialShape:
    """The smallest shape with interval dimensions that both ``a`` and ``b`` fit."""
    if not a.rank_is_static or not b.rank_is_static or len(a) != len(b):
        return PartialShape.dynamic()
    dims = []
    for x, y in zip(a, b):
        hi = -1 if -1 in (x.max_length, y.max_length) else max(x.max_length, y.max_length)
        lo = min(x.min_length, y.min_length)
        dims.append(Dimension(lo) if lo == hi else Dimension(lo, hi))
    return PartialShape(dims)


def _if_union(a: PartialShape, b: PartialShape) -> PartialShape:
    """If's merge of its branches' shapes: static dimensions that differ become an interval."""
    if not a.rank_is_static or not b.rank_is_static:
        return PartialShape.dynamic()
    if len(a) != len(b):
        return PartialShape.dynamic(1) if len(a) <= 1 and len(b) <= 1 else PartialShape.dynamic()
    dims = []
    for x, y in zip(a, b):
        if x.is_dynamic or y.is_dynamic:
            dims.append(Dimension())
        elif x == y:
            dims.append(x)
        else:
            lo, hi = sorted((x.get_length(), y.get_length()))
            dims.append(Dimension(lo, hi))
    return PartialShape(dims)


def _slice_count(dim: int, start: int, stride: int, part: int, end: int) -> int:
    """How many parts of ``part`` elements fit between ``start`` and ``end`` (inclusive)."""
    s = start + dim if start < 0 else start
    e = end + dim if end < 0 else end
    span = (e - s + 1) if stride > 0 else (s - e + 1)
    if span < part:
        return 0
    return (span - part) // abs(stride) + 1


def _slice_begin(dim: int, i: int, start: int, stride: int, part: int) -> int:
    """First index of part ``i`` along the sliced axis."""
    s = start + dim if start < 0 else start
    return s + i * stride if stride > 0 else s + i * stride - part + 1


def _first_value(arr: np.ndarray) -> Any:
    return np.asarray(arr).reshape(-1)[0]


# -- the shared machinery --------------------------------------------------------------------


class _SubGraphOp(Node):
    """An op with bodies: holds the body Models and their port descriptions."""

    body_tags: ClassVar[tuple[str, ...]] = ("body",)
    foldable = False

    def __init__(self, inputs: Sequence[Any] = (), name: str | None = None) -> None:
        self._setup()
        super().__init__(inputs, None, name)

    def _setup(self) -> None:
        n = len(self.body_tags)
        self._bodies: list[Model | None] = [None] * n
        self._in_descs: list[list[Any]] = [[] for _ in range(n)]
        self._out_descs: list[list[Any]] = [[] for _ in range(n)]
        self._executors: list[ReferenceExecutor | None] = [None] * n

    @classmethod
    def _blank(cls, inputs: Sequence[Output], name: str) -> _SubGraphOp:
        node = cls.__new__(cls)
        node._setup()
        Node.__init__(node, inputs, None, name, validate=False)
        return node

    # -- structure -----------------------------------------------------------------------
    def bodies(self) -> list[Model]:
        return [b for b in self._bodies if b is not None]

    def get_function(self, index: int = 0) -> Model:
        body = self._bodies[index]
        if body is None:
            raise EmberError(f"ember: {self.type_name} '{self.friendly_name}' has no {self.body_tags[index]} yet")
        return body

    def set_function(self, *args: Any) -> None:
        """``set_function(model)`` (Loop, TensorIterator) or ``set_function(index, model)`` (If)."""
        index, model = (0, args[0]) if len(args) == 1 else (int(args[0]), args[1])
        if not isinstance(model, Model):
            raise EmberError(f"ember: {self.type_name} '{self.friendly_name}': a body must be a Model, "
                             f"got {type(model).__name__}")
        self._bodies[index] = model
        self.validate_and_infer_types()

    def get_input_descriptions(self, index: int = 0) -> list[Any]:
        return [d.copy() for d in self._in_descs[index]]

    def get_output_descriptions(self, index: int = 0) -> list[Any]:
        return [d.copy() for d in self._out_descs[index]]

    def set_input_descriptions(self, *args: Any) -> None:
        index, descs = (0, args[0]) if len(args) == 1 else (int(args[0]), args[1])
        self._in_descs[index] = [d.copy() for d in descs]
        self.validate_and_infer_types()

    def set_output_descriptions(self, *args: Any) -> None:
        index, descs = (0, args[0]) if len(args) == 1 else (int(args[0]), args[1])
        self._out_descs[index] = [d.copy() for d in descs]
        self.validate_and_infer_types()

    def _copy_extra_from(self, other: Node) -> None:
        assert isinstance(other, _SubGraphOp)
        self._setup()
        self._bodies = [None if b is None else b.clone() for b in other._bodies]
        self._in_descs = [[d.copy() for d in ds] for ds in other._in_descs]
        self._out_descs = [[d.copy() for d in ds] for ds in other._out_descs]

    def _append_input(self, value: Any) -> int:
        return self.append_input(value)

    def _param_index(self, b: int, param: Any) -> int:
        body = self.get_function(b)
        if not isinstance(param, Parameter):
            raise EmberError(f"ember: {self.type_name} '{self.friendly_name}': expected a body Parameter, "
                             f"got {type(param).__name__}")
        i = body.get_parameter_index(param)
        if i < 0:
            raise EmberError(f"ember: {self.type_name} '{self.friendly_name}': Parameter '{param.friendly_name}' "
                             f"is not a parameter of its {self.body_tags[b]}")
        return i

    def _result_index(self, b: int, value: Any) -> int:
        """The index of the body Result given as a Result, its output, or the port it reads."""
        body = self.get_function(b)
        if isinstance(value, Node) and not isinstance(value, Result):
            value = as_output(value)
        for i, r in enumerate(body.get_results()):
            if value is r or (isinstance(value, Output) and (r.output(0) == value or r.input(0).source == value)):
                return i
        raise EmberError(f"ember: {self.type_name} '{self.friendly_name}': {value!r} is not a Result of its "
                         f"{self.body_tags[b]}")

    # -- inference helpers ---------------------------------------------------------------
    def _feed_parameters(self, b: int) -> None:
        """Give body Parameters the types and shapes of the outer values they receive."""
        params = self.get_function(b).get_parameters()
        for d in self._in_descs[b]:
            if not 0 <= d.body_parameter_index < len(params):
                raise self.fail(f"{self.body_tags[b]} has no parameter {d.body_parameter_index}")
            if not 0 <= d.input_index < self.get_input_size():
                raise self.fail(f"no input {d.input_index}")
            p = params[d.body_parameter_index]
            shape = self.input_shape(d.input_index)
            if isinstance(d, SliceInputDescription):
                if d.stride == 0 or d.part_size <= 0:
                    raise self.fail(f"sliced input {d.input_index} needs a non-zero stride and a positive "
                                    f"part_size, got stride={d.stride} part_size={d.part_size}")
                if shape.rank_is_static:
                    axis = self._axis(d.axis, len(shape), f"sliced input {d.input_index}")
                    dims = list(shape)
                    dims[axis] = Dimension(d.part_size)
                    shape = PartialShape(dims)
            p.element_type = self.input_type(d.input_index)
            p.partial_shape = shape

    def _infer_body(self, b: int) -> None:
        try:
            self.get_function(b).validate_nodes_and_infer_types()
        except EmberError as e:
            raise self.fail(f"in its {self.body_tags[b]}: {_strip(e)}") from e

    def _axis(self, axis: int, rank: int, what: str) -> int:
        if not -rank <= axis < max(rank, 1):
            raise self.fail(f"{what}: axis {axis} is out of range for rank {rank}")
        return axis + rank if axis < 0 else axis

    def _body_value(self, b: int, index: int) -> Output:
        results = self.get_function(b).get_results()
        if not 0 <= index < len(results):
            raise self.fail(f"{self.body_tags[b]} has no result {index}")
        return results[index].input(0).source

    def _settle_merged(self, b: int) -> None:
        """Widen merged Parameters until the body's back-edge values fit them."""
        body = self.get_function(b)
        params = body.get_parameters()
        merged = [d for d in self._in_descs[b] if isinstance(d, MergedInputDescription)]
        for _ in range(_MAX_SETTLE_ROUNDS):
            changed = False
            for d in merged:
                p, v = params[d.body_parameter_index], self._body_value(b, d.body_value_index)
                if not v.element_type.compatible(p.element_type):
                    raise self.fail(f"back edge from result {d.body_value_index} carries {v.element_type} into "
                                    f"parameter '{p.friendly_name}' of {p.element_type}")
                wider = _union(p.partial_shape, v.partial_shape)
                if wider != p.partial_shape:
                    p.partial_shape = wider
                    changed = True
            if not changed:
                return
            self._infer_body(b)
        for d in merged:
            params[d.body_parameter_index].partial_shape = PartialShape.dynamic()
        self._infer_body(b)

    def _iteration_outputs(self, b: int, n_iter: int | None) -> list[tuple[Type, PartialShape]]:
        """Output types and shapes of Loop and TensorIterator; ``n_iter`` None when unknown."""
        descs = sorted(self._out_descs[b], key=lambda d: d.output_index)
        if [d.output_index for d in descs] != list(range(len(descs))):
            raise self.fail(f"output descriptions do not number the outputs 0..{len(descs) - 1}")
        merged = {d.body_value_index: d for d in self._in_descs[b] if isinstance(d, MergedInputDescription)}
        outs = []
        for d in descs:
            v = self._body_value(b, d.body_value_index)
            shape = v.partial_shape
            if isinstance(d, ConcatOutputDescription):
                if shape.rank_is_static:
                    dims = list(shape) if len(shape) else [Dimension(1)]
                    axis = self._axis(d.axis, len(dims), f"concatenated output {d.output_index}")
                    part = dims[axis]
                    if n_iter == 0:
                        dims[axis] = Dimension(0)
                    elif n_iter is not None and part.is_static:
                        dims[axis] = Dimension(part.get_length() * n_iter)
                    else:
                        dims[axis] = Dimension()
                    shape = PartialShape(dims)
            else:
                if d.iteration != -1:
                    raise self.fail(f"output {d.output_index}: only the last iteration (-1) can be an output, "
                                    f"got iteration {d.iteration}")
                m = merged.get(d.body_value_index)
                if m is not None:
                    if n_iter == 0:
                        shape = self.input_shape(m.input_index)
                    elif n_iter is None:  # zero iterations would return the initial value
                        shape = _hull(shape, self.input_shape(m.input_index))
            outs.append((v.element_type, shape))
        return outs

    # -- evaluation helpers --------------------------------------------------------------
    def use_body_runner(self, b: int, runner: Any) -> None:
        """Run body ``b`` in :meth:`evaluate` with ``runner.run(feed) -> outputs`` (a device's
        compiled body) instead of the reference executor, until the next shape inference."""
        self._executors[b] = runner

    def _executor(self, b: int) -> ReferenceExecutor:
        ex = self._executors[b]
        if ex is None:
            from ember.devices.reference.executor import ReferenceExecutor

            ex = ReferenceExecutor(self.get_function(b))
            self._executors[b] = ex
        return ex

    def _run_body(self, b: int, feed: list[np.ndarray | None]) -> list[np.ndarray]:
        missing = [i for i, x in enumerate(feed) if x is None]
        if missing:
            p = self.get_function(b).get_parameters()[missing[0]]
            raise InferenceError(f"ember: {self.type_name} '{self.friendly_name}': parameter '{p.friendly_name}' "
                                 f"of its {self.body_tags[b]} receives no value (no input description)")
        return self._executor(b).run(feed)  # type: ignore[arg-type]

    def _iterate(self, inputs: Sequence[np.ndarray], max_iter: int | None, first: bool,
                 cond_index: int = -1, cur_index: int = -1) -> list[np.ndarray]:
        """Run the body of a Loop or TensorIterator and assemble the outputs."""
        body = self.get_function(0)
        params = body.get_parameters()
        feed: list[np.ndarray | None] = [None] * len(params)
        slices = []
        for d in self._in_descs[0]:
            value = np.asarray(inputs[d.input_index])
            if isinstance(d, SliceInputDescription):
                axis = self._axis(d.axis, value.ndim, f"sliced input {d.input_index}")
                dim = value.shape[axis]
                slices.append((d, value, axis, _slice_count(dim, d.start, d.stride, d.part_size, d.end)))
            else:
                feed[d.body_parameter_index] = value
        described = {d.body_parameter_index for d in self._in_descs[0]}
        cur = None
        if cur_index >= 0 and cur_index not in described:
            p = params[cur_index]
            cur = (p.element_type.dtype, (1,) if p.partial_shape.rank_is_static and len(p.partial_shape) else ())
        merged = [d for d in self._in_descs[0] if isinstance(d, MergedInputDescription)]
        concat = [d for d in self._out_descs[0] if isinstance(d, ConcatOutputDescription)]
        parts: dict[int, list[np.ndarray]] = {d.output_index: [] for d in concat}
        last: list[np.ndarray] | None = None
        go, i = first, 0
        while go and (max_iter is None or i < max_iter):
            for d, value, axis, count in slices:
                if i >= count:
                    raise InferenceError(
                        f"ember: {self.type_name} '{self.friendly_name}': iteration {i} needs part {i} of sliced "
                        f"input {d.input_index} (shape {list(value.shape)}), which has only {count} parts")
                lo = _slice_begin(value.shape[axis], i, d.start, d.stride, d.part_size)
                index = [slice(None)] * value.ndim
                index[axis] = slice(lo, lo + d.part_size)
                feed[d.body_parameter_index] = value[tuple(index)]
            if cur is not None:
                feed[cur_index] = np.full(cur[1], i, dtype=cur[0])
            last = self._run_body(0, feed)
            for d in concat:
                parts[d.output_index].append(last[d.body_value_index])
            if cond_index >= 0:
                go = bool(_first_value(last[cond_index]))
            for d in merged:
                feed[d.body_parameter_index] = last[d.body_value_index]
            i += 1
        return self._assemble(inputs, last, parts)

    def _assemble(self, inputs: Sequence[np.ndarray], last: list[np.ndarray] | None,
                  parts: dict[int, list[np.ndarray]]) -> list[np.ndarray]:
        merged = {d.body_value_index: d for d in self._in_descs[0] if isinstance(d, MergedInputDescription)}
        outs: list[np.ndarray] = [np.empty(0)] * len(self._out_descs[0])
        for d in self._out_descs[0]:
            et = self.get_output_element_type(d.output_index)
            if isinstance(d, ConcatOutputDescription):
                values = parts[d.output_index]
                if d.stride < 0:
                    values = values[::-1]
                if values:
                    values = [v.reshape(1) if v.ndim == 0 else v for v in values]
                    axis = self._axis(d.axis, values[0].ndim, f"concatenated output {d.output_index}")
                    out = np.concatenate(values, axis=axis)
                else:
                    out = self._empty(d, axis_of=d.axis)
            elif last is not None:
                out = last[d.body_value_index]
            elif d.body_value_index in merged:
                out = np.asarray(inputs[merged[d.body_value_index].input_index])
            else:
                out = self._zeros(d)
            outs[d.output_index] = out if et.is_dynamic else np.asarray(out, dtype=et.dtype)
        return outs

    def _empty(self, d: Any, axis_of: int) -> np.ndarray:
        """A concatenated output after zero iterations: empty along its axis."""
        dims = self._zeros(d).shape
        if not dims:
            dims = (0,)
        dims = list(dims)
        dims[self._axis(axis_of, len(dims), f"output {d.output_index}")] = 0
        return np.empty(dims, dtype=self.get_output_element_type(d.output_index).dtype)

    def _zeros(self, d: Any) -> np.ndarray:
        """A body value that no iteration computed (zero iterations, not a merged input):
        zeros of its inferred shape, dynamic dimensions taken as 0."""
        shape = self.get_output_partial_shape(d.output_index)
        et = self.get_output_element_type(d.output_index)
        if not shape.rank_is_static:
            raise InferenceError(f"ember: {self.type_name} '{self.friendly_name}': output {d.output_index} has "
                                 "no value after zero iterations (its rank is unknown)")
        if et.is_dynamic:
            raise InferenceError(f"ember: {self.type_name} '{self.friendly_name}': output {d.output_index} has "
                                 "no value after zero iterations (its element type is unknown)")
        return np.zeros([x.get_length() if x.is_static else 0 for x in shape], dtype=et.dtype)

    # -- IR ------------------------------------------------------------------------------
    def _write_port_map(self, parent: ET.Element, b: int, ids: dict[int, int],
                        extra: Sequence[tuple[str, dict[str, str]]] = ()) -> None:
        body = self.get_function(b)
        params, results = body.get_parameters(), body.get_results()
        n_in = self.get_input_size()
        for d in self._in_descs[b]:
            attrs: dict[str, str] = {}
            if isinstance(d, SliceInputDescription):
                attrs["axis"] = str(d.axis)
            attrs["external_port_id"] = str(d.input_index)
            attrs["internal_layer_id"] = str(ids[id(params[d.body_parameter_index])])
            if isinstance(d, SliceInputDescription):
                attrs.update(start=str(d.start), end=str(d.end), stride=str(d.stride), part_size=str(d.part_size))
            ET.SubElement(parent, "input", attrs)
        for d in sorted(self._out_descs[b], key=lambda d: d.output_index):
            attrs = {}
            if isinstance(d, ConcatOutputDescription):
                attrs["axis"] = str(d.axis)
            attrs["external_port_id"] = str(n_in + d.output_index)
            attrs["internal_layer_id"] = str(ids[id(results[d.body_value_index])])
            if isinstance(d, ConcatOutputDescription):
                attrs.update(start=str(d.start), end=str(d.end), stride=str(d.stride), part_size=str(d.part_size))
            ET.SubElement(parent, "output", attrs)
        for tag, attrs in extra:
            ET.SubElement(parent, tag, attrs)

    def _write_back_edges(self, layer: ET.Element, ids: dict[int, int]) -> None:
        body = self.get_function(0)
        merged = [d for d in self._in_descs[0] if isinstance(d, MergedInputDescription)]
        if not merged:
            return
        edges = ET.SubElement(layer, "back_edges")
        for d in merged:
            ET.SubElement(edges, "edge", {
                "from-layer": str(ids[id(body.get_results()[d.body_value_index])]),
                "to-layer": str(ids[id(body.get_parameters()[d.body_parameter_index])])})

    def to_ir_bodies(self, layer: ET.Element, write_body: WriteBody) -> None:
        # to_ir wrote the bodies first (the port maps need their layer ids); OpenVINO puts
        # them after the ports, so move them to the end.
        for tag in self.body_tags:
            elem = layer.find(tag)
            if elem is not None:
                layer.remove(elem)
                layer.append(elem)

    @staticmethod
    def _port_ids(elem: ET.Element, kind: str) -> list[int]:
        return [int(p.get("id", "-1")) for p in elem.findall(f"{kind}/port")]

    def _read_port_map(self, elem: ET.Element, pm: ET.Element | None, b: int, lids: dict[int, Node],
                       back_edges: dict[int, int]) -> tuple[int, int]:
        """Fill body ``b``'s descriptions from a port map; returns the Loop special ports."""
        body = self.get_function(b)
        where = f"{self.type_name} '{self.friendly_name}'"
        if pm is None:
            raise IRFormatError(f"ember: {where} has no port map for its {self.body_tags[b]}")
        in_ports, out_ports = self._port_ids(elem, "input"), self._port_ids(elem, "output")

        def node_of(m: ET.Element) -> Node:
            try:
                return lids[int(m.get("internal_layer_id", ""))]
            except (KeyError, ValueError):
                raise IRFormatError(f"ember: {where}: port map entry {m.attrib} names no layer of its "
                                    f"{self.body_tags[b]}") from None

        def ext(m: ET.Element, ports: list[int]) -> int:
            try:
                return ports.index(int(m.get("external_port_id", "")))
            except ValueError:
                raise IRFormatError(f"ember: {where}: port map entry {m.attrib} names no port of the layer") from None

        def ints(m: ET.Element) -> dict[str, int]:
            try:
                return {k: int(m.get(k, dflt)) for k, dflt in
                        (("start", "0"), ("stride", "1"), ("part_size", "1"), ("end", "-1"), ("axis", "0"))}
            except ValueError:
                raise IRFormatError(f"ember: {where}: port map entry {m.attrib} has a non-integer value") from None

        cur, cond = -1, -1
        for m in pm.findall("input"):
            node = node_of(m)
            pi = body.get_parameter_index(node) if isinstance(node, Parameter) else -1
            if pi < 0:
                raise IRFormatError(f"ember: {where}: input port map entry {m.attrib} names no body Parameter")
            if m.get("purpose") == "current_iteration":
                cur = pi
                continue
            index = ext(m, in_ports)
            lid = int(m.get("internal_layer_id", "-1"))
            if m.get("axis") is not None:
                v = ints(m)
                self._in_descs[b].append(SliceInputDescription(index, pi, v["start"], v["stride"], v["part_size"],
                                                               v["end"], v["axis"]))
            elif lid in back_edges:
                src = lids.get(back_edges[lid])
                ri = body.get_result_index(src) if isinstance(src, Result) else -1
                if ri < 0:
                    raise IRFormatError(f"ember: {where}: a back edge into layer {lid} does not start at a Result")
                self._in_descs[b].append(MergedInputDescription(index, pi, ri))
            else:
                self._in_descs[b].append(InvariantInputDescription(index, pi))
        for m in pm.findall("output"):
            node = node_of(m)
            ri = body.get_result_index(node) if isinstance(node, Result) else -1
            if ri < 0:
                raise IRFormatError(f"ember: {where}: output port map entry {m.attrib} names no body Result")
            if m.get("purpose") == "execution_condition":
                cond = ri
                continue
            index = ext(m, out_ports)
            if m.get("axis") is not None:
                v = ints(m)
                self._out_descs[b].append(ConcatOutputDescription(ri, index, v["start"], v["stride"],
                                                                  v["part_size"], v["end"], v["axis"]))
            else:
                self._out_descs[b].append(BodyOutputDescription(ri, index))
        return cur, cond

    @staticmethod
    def _read_back_edges(elem: ET.Element) -> dict[int, int]:
        """``{to-layer (Parameter): from-layer (Result)}``."""
        edges: dict[int, int] = {}
        for e in elem.findall("back_edges/edge"):
            try:
                edges[int(e.get("to-layer", ""))] = int(e.get("from-layer", ""))
            except ValueError:
                raise IRFormatError("ember: a back edge has a non-integer layer id") from None
        return edges


# -- If -------------------------------------------------------------------------------------


@register_op
class If(_SubGraphOp):
    """OpenVINO If (opset8): runs ``then_body`` when the condition is true, else ``else_body``."""

    type_name = "If"
    version = "opset8"
    num_inputs = (0, None)
    body_tags = ("then_body", "else_body")
    THEN_BODY_INDEX: ClassVar[int] = 0
    ELSE_BODY_INDEX: ClassVar[int] = 1

    def __init__(self, execution_condition: Any = None, name: str | None = None) -> None:
        super().__init__(() if execution_condition is None else [execution_condition], name)

    # -- OpenVINO's building API ---------------------------------------------------------
    def get_then_body(self) -> Model:
        return self.get_function(0)

    def get_else_body(self) -> Model:
        return self.get_function(1)

    def set_then_body(self, body: Model) -> None:
        self.set_function(0, body)

    def set_else_body(self, body: Model) -> None:
        self.set_function(1, body)

    def set_input(self, value: Any, then_parameter: Parameter | None, else_parameter: Parameter | None) -> None:
        """Feed ``value`` to ``then_parameter`` and ``else_parameter`` (either may be None)."""
        if then_parameter is None and else_parameter is None:
            raise EmberError(f"ember: If '{self.friendly_name}': set_input needs a then or an else parameter")
        indices = [None if p is None else self._param_index(b, p)
                   for b, p in enumerate((then_parameter, else_parameter))]
        if not self.get_input_size():
            raise EmberError(f"ember: If '{self.friendly_name}' has no condition input yet")
        index = self._append_input(value)
        for b, pi in enumerate(indices):
            if pi is not None:
                self._in_descs[b].append(InvariantInputDescription(index, pi))
        self.validate_and_infer_types()

    def set_output(self, then_result: Result, else_result: Result) -> Output:
        """A new output: ``then_result`` when the condition holds, else ``else_result``."""
        ti, ei = self._result_index(0, then_result), self._result_index(1, else_result)
        index = len(self._out_descs[0])
        self._out_descs[0].append(BodyOutputDescription(ti, index))
        self._out_descs[1].append(BodyOutputDescription(ei, index))
        self.validate_and_infer_types()
        return self.output(index)

    # -- inference -----------------------------------------------------------------------
    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._executors = [None, None]
        if not self.get_input_size():
            return []
        ct, cs = self.input_type(0), self.input_shape(0)
        if not (ct is Type.boolean or ct.is_dynamic):
            raise self.fail(f"the condition must be boolean, got {ct}")
        if cs.rank_is_static and len(cs) > 1:
            raise self.fail(f"the condition must be a scalar or a 1-element 1D tensor, got shape {cs}")
        cond = self.input_value(0)
        chosen = None if cond is None else (0 if bool(_first_value(cond)) else 1)
        # As OpenVINO: a known condition validates the taken body only. With an unknown one, a
        # body that is invalid for these inputs can never run without failing, so the outputs
        # are the other body's (a dead 8 kHz branch given a 16 kHz chunk): running it raises.
        self._invalid: list[ShapeInferenceError | None] = [None, None]
        for b in (0, 1):
            if self._bodies[b] is not None and chosen in (None, b):
                self._feed_parameters(b)
                try:
                    self._infer_body(b)
                except ShapeInferenceError as e:
                    if chosen is not None or self._bodies[1 - b] is None:
                        raise
                    self._invalid[b] = e
        if self._invalid[0] is not None and self._invalid[1] is not None:
            raise self._invalid[0]
        if chosen is None and any(e is not None for e in self._invalid):
            chosen = 0 if self._invalid[0] is None else 1
        n_out = max((d.output_index + 1 for ds in self._out_descs for d in ds), default=0)
        if n_out == 0:
            return []
        if self._bodies[0] is None or self._bodies[1] is None:
            raise self.fail("has outputs but lacks a then or an else body")
        per_body: list[dict[int, Output]] = [{}, {}]
        for b in (0, 1) if chosen is None else (chosen,):
            for d in self._out_descs[b]:
                per_body[b][d.output_index] = self._body_value(b, d.body_value_index)
        outs = []
        for k in range(n_out):
            then_v, else_v = per_body[0].get(k), per_body[1].get(k)
            if chosen is not None:
                v = per_body[chosen].get(k)
                if v is None:
                    raise self.fail(f"output {k} is not produced by its {self.body_tags[chosen]}")
                outs.append((v.element_type, v.partial_shape))
                continue
            if then_v is None or else_v is None:
                raise self.fail(f"output {k} is not produced by its {'then' if then_v is None else 'else'}_body")
            tt, et = then_v.element_type, else_v.element_type
            if not tt.compatible(et):
                raise self.fail(f"output {k} is {tt} in then_body but {et} in else_body")
            outs.append((tt if not tt.is_dynamic else et, _if_union(then_v.partial_shape, else_v.partial_shape)))
        return outs

    def constant_outputs(self) -> list[np.ndarray] | None:
        # Fold only when both bodies are pure (Loop and TensorIterator never fold).
        for body in self.bodies():
            for n in body.get_ordered_ops():
                if not isinstance(n, (Parameter, Result)) and not n.foldable:
                    return None
        values = [constant_value(o) for o in self.input_values()]
        if not values or any(v is None for v in values):
            return None
        if sum(int(np.asarray(v).size) for v in values) > _FOLD_LIMIT:
            return None
        try:
            return self.evaluate(values)  # type: ignore[arg-type]
        except EmberError:
            return None

    def invalid_body_error(self, b: int) -> ShapeInferenceError | None:
        """Why body ``b`` cannot run with this node's input shapes (None: it can)."""
        return getattr(self, "_invalid", (None, None))[b]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        b = 0 if bool(_first_value(inputs[0])) else 1
        if self.invalid_body_error(b) is not None:
            raise InferenceError(str(self.invalid_body_error(b)))
        feed: list[np.ndarray | None] = [None] * len(self.get_function(b).get_parameters())
        for d in self._in_descs[b]:
            feed[d.body_parameter_index] = np.asarray(inputs[d.input_index])
        values = self._run_body(b, feed)
        outs: list[np.ndarray] = [np.empty(0)] * self.get_output_size()
        if len(self._out_descs[b]) != self.get_output_size():
            raise InferenceError(f"ember: If '{self.friendly_name}': its {self.body_tags[b]} does not produce "
                                 "every output")
        for d in self._out_descs[b]:
            et = self.get_output_element_type(d.output_index)
            v = values[d.body_value_index]
            outs[d.output_index] = v if et.is_dynamic else np.asarray(v, dtype=et.dtype)
        return outs

    # -- IR ------------------------------------------------------------------------------
    def to_ir(self, layer: ET.Element, write_body: WriteBody) -> None:
        ids = [write_body(self.get_function(b), self.body_tags[b]) for b in (0, 1)]
        for b in (1, 0):  # OpenVINO writes else_port_map first
            self._write_port_map(ET.SubElement(layer, ("then", "else")[b] + "_port_map"), b, ids[b])

    @classmethod
    def from_ir(cls, elem: ET.Element, inputs: list[Output], attrs: dict[str, Any], name: str,
                read_body: ReadBody) -> If:
        node = cls._blank(inputs, name)
        assert isinstance(node, If)
        for b, tag in enumerate(cls.body_tags):
            belem = elem.find(tag)
            if belem is None:
                raise IRFormatError(f"ember: If '{name}' has no <{tag}>")
            model, lids = read_body(belem, f"{name}/{tag}")
            node._bodies[b] = model
            node._read_port_map(elem, elem.find(tag.replace("body", "port_map")), b, lids, {})
        node.validate_and_infer_types()
        return node


# -- Loop and TensorIterator ---------------------------------------------------------------


class _IterationOp(_SubGraphOp):
    """What Loop and TensorIterator share: one body, sliced/merged/invariant inputs."""

    def get_body(self) -> Model:
        return self.get_function(0)

    def set_body(self, body: Model) -> None:
        self.set_function(body)

    def set_invariant_input(self, body_parameter: Parameter, value: Any) -> None:
        """Feed ``value`` to ``body_parameter`` unchanged in every iteration."""
        pi = self._param_index(0, body_parameter)
        self._in_descs[0].append(InvariantInputDescription(self._append_input(value), pi))
        self.validate_and_infer_types()

    def set_merged_input(self, body_parameter: Parameter, initial_value: Any, successive_value: Any) -> None:
        """``body_parameter`` starts as ``initial_value`` and then gets the body result
        ``successive_value`` of the previous iteration."""
        pi = self._param_index(0, body_parameter)
        ri = self._result_index(0, successive_value)
        self._in_descs[0].append(MergedInputDescription(self._append_input(initial_value), pi, ri))
        self.validate_and_infer_types()

    def set_sliced_input(self, parameter: Parameter, value: Any, start: int, stride: int, part_size: int,
                         end: int, axis: int) -> None:
        """Iteration ``i`` feeds ``parameter`` with part ``i`` of ``value`` along ``axis``."""
        pi = self._param_index(0, parameter)
        index = self._append_input(value)
        self._in_descs[0].append(SliceInputDescription(index, pi, int(start), int(stride), int(part_size),
                                                       int(end), int(axis)))
        self.validate_and_infer_types()

    def get_iter_value(self, body_value: Any, iteration: int = -1) -> Output:
        """A new output: ``body_value`` after the last iteration (``iteration`` must be -1)."""
        if iteration != -1:
            raise EmberError(f"ember: {self.type_name} '{self.friendly_name}': only the last iteration (-1) can "
                             f"be an output (as OpenVINO IR stores it), got {iteration}")
        ri = self._result_index(0, body_value)
        index = len(self._out_descs[0])
        self._out_descs[0].append(BodyOutputDescription(ri, index, -1))
        self.validate_and_infer_types()
        return self.output(index)

    def get_concatenated_slices(self, value: Any, start: int, stride: int, part_size: int, end: int,
                                axis: int) -> Output:
        """A new output: ``value`` of every iteration concatenated along ``axis``."""
        ri = self._result_index(0, value)
        index = len(self._out_descs[0])
        self._out_descs[0].append(ConcatOutputDescription(ri, index, int(start), int(stride), int(part_size),
                                                          int(end), int(axis)))
        self.validate_and_infer_types()
        return self.output(index)

    def get_num_iterations(self) -> int:
        """The iteration count when shape inference knows it, else -1."""
        n = self._num_iterations()
        return -1 if n is None else n

    def _num_iterations(self) -> int | None:
        raise NotImplementedError

    def _slice_iterations(self) -> int | None:
        """The number of parts the sliced inputs give, when their axes are static."""
        n = None
        for d in self._in_descs[0]:
            if not isinstance(d, SliceInputDescription):
                continue
            shape = self.input_shape(d.input_index)
            if not shape.rank_is_static:
                continue
            dim = shape[self._axis(d.axis, len(shape), f"sliced input {d.input_index}")]
            if not dim.is_static:
                continue
            k = _slice_count(dim.get_length(), d.start, d.stride, d.part_size, d.end)
            if n is not None and k != n:
                raise self.fail(f"sliced inputs give different iteration counts ({n} and {k})")
            n = k
        return n

    def to_ir(self, layer: ET.Element, write_body: WriteBody) -> None:
        ids = write_body(self.get_function(0), "body")
        self._write_port_map(ET.SubElement(layer, "port_map"), 0, ids, self._special_port_entries(ids))
        self._write_back_edges(layer, ids)

    def _special_port_entries(self, ids: dict[int, int]) -> list[tuple[str, dict[str, str]]]:
        return []

    @classmethod
    def _read_common(cls, elem: ET.Element, inputs: list[Output], name: str,
                     read_body: ReadBody) -> tuple[_IterationOp, tuple[int, int]]:
        node = cls._blank(inputs, name)
        assert isinstance(node, _IterationOp)
        belem = elem.find("body")
        if belem is None:
            raise IRFormatError(f"ember: {cls.type_name} '{name}' has no <body>")
        model, lids = read_body(belem, f"{name}/body")
        node._bodies[0] = model
        special = node._read_port_map(elem, elem.find("port_map"), 0, lids, cls._read_back_edges(elem))
        return node, special


@register_op
class Loop(_IterationOp):
    """OpenVINO Loop (opset5): runs its body while the condition holds, at most ``trip_count``
    times (-1: no limit). Inputs 0 and 1 are the trip count and the first condition."""

    type_name = "Loop"
    version = "opset5"
    num_inputs = (0, None)

    def __init__(self, trip_count: Any = None, execution_condition: Any = None, name: str | None = None) -> None:
        inputs = [] if trip_count is None else [trip_count, execution_condition]
        if trip_count is not None and execution_condition is None:
            raise EmberError("ember: Loop needs both a trip count and an execution condition")
        super().__init__(inputs, name)

    def _setup(self) -> None:
        super()._setup()
        self.special_body_ports = [-1, -1]

    def _copy_extra_from(self, other: Node) -> None:
        super()._copy_extra_from(other)
        assert isinstance(other, Loop)
        self.special_body_ports = list(other.special_body_ports)

    def set_special_body_ports(self, special_body_ports: Sequence[int]) -> None:
        """``[current_iteration parameter index or -1, condition result index]`` of the body."""
        ports = [int(x) for x in special_body_ports]
        if len(ports) != 2:
            raise EmberError(f"ember: Loop '{self.friendly_name}': special body ports are two indices, got {ports}")
        self.special_body_ports = ports
        self.validate_and_infer_types()

    def get_special_body_ports(self) -> list[int]:
        return list(self.special_body_ports)

    def set_arguments(self, outputs: Sequence[Any]) -> None:
        """Set every input; on a Loop built without arguments this adds them."""
        for i, o in enumerate(outputs):
            if i < self.get_input_size():
                self.set_argument(i, o)
            else:
                self._append_input(o)
        self.validate_and_infer_types()

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._executors = [None]
        if self.get_input_size() < 2:
            return []
        for i, what in ((0, "trip count"), (1, "execution condition")):
            s = self.input_shape(i)
            if s.rank_is_static and len(s) > 1:
                raise self.fail(f"the {what} must be a scalar or a 1-element 1D tensor, got shape {s}")
        tt, ct = self.input_type(0), self.input_type(1)
        if not (tt.is_dynamic or tt in (Type.i32, Type.i64)):
            raise self.fail(f"the trip count must be i32 or i64, got {tt}")
        if not (ct.is_dynamic or ct is Type.boolean):
            raise self.fail(f"the execution condition must be boolean, got {ct}")
        trip = self.input_value(0)
        if trip is not None and int(_first_value(trip)) < -1:
            raise self.fail(f"the trip count is {int(_first_value(trip))}; it must be >= 0, or -1 for no limit")
        body = self._bodies[0]
        if body is None:
            return []
        cur, cond = self.special_body_ports
        params, results = body.get_parameters(), body.get_results()
        if cur >= len(params):
            raise self.fail(f"the current_iteration port {cur} is not a body parameter (it has {len(params)})")
        if cur >= 0:
            p = params[cur]
            if p.partial_shape.rank_is_static and len(p.partial_shape) > 1:
                raise self.fail(f"the current_iteration parameter must be a scalar or 1D, got {p.partial_shape}")
            if not (p.element_type.is_dynamic or p.element_type in (Type.i32, Type.i64)):
                raise self.fail(f"the current_iteration parameter must be i32 or i64, got {p.element_type}")
        self._feed_parameters(0)
        self._infer_body(0)
        self._settle_merged(0)
        if cond < 0:
            if self._out_descs[0]:
                raise self.fail("set_special_body_ports must name the body's condition result")
            return []
        if cond >= len(results):
            raise self.fail(f"the condition port {cond} is not a body result (it has {len(results)})")
        cv = results[cond].input(0).source
        if cv.partial_shape.rank_is_static and len(cv.partial_shape) > 1:
            raise self.fail(f"the body's condition must be a scalar or 1D, got {cv.partial_shape}")
        if not (cv.element_type.is_dynamic or cv.element_type is Type.boolean):
            raise self.fail(f"the body's condition must be boolean, got {cv.element_type}")
        return self._iteration_outputs(0, self._num_iterations())

    def _num_iterations(self) -> int | None:
        if self.get_input_size() < 2 or self._bodies[0] is None or self.special_body_ports[1] < 0:
            return None
        first = self.input_value(1)
        trip = self.input_value(0)
        if first is not None and not bool(_first_value(first)):
            return 0
        if trip is not None and int(_first_value(trip)) == 0:
            return 0
        body_cond = self._body_condition()
        if first is None or body_cond is None:
            return None
        if not body_cond:
            return 1
        if trip is None or int(_first_value(trip)) < 0:
            return None
        return int(_first_value(trip))

    def _body_condition(self) -> bool | None:
        """The body's condition when it is the same in every iteration."""
        body = self.get_function(0)
        src = body.get_results()[self.special_body_ports[1]].input(0).source
        value = constant_value(src)
        if value is not None:
            return bool(_first_value(value))
        if isinstance(src.node, Parameter):
            pi = body.get_parameter_index(src.node)
            for d in self._in_descs[0]:
                if d.body_parameter_index == pi and isinstance(d, InvariantInputDescription):
                    v = self.input_value(d.input_index)
                    return None if v is None else bool(_first_value(v))
        return None

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        trip = int(_first_value(inputs[0]))
        if trip < -1:
            raise InferenceError(f"ember: Loop '{self.friendly_name}': the trip count is {trip}; it must be >= 0, "
                                 "or -1 for no limit")
        first = bool(_first_value(inputs[1]))
        cur, cond = self.special_body_ports
        return self._iterate(inputs, None if trip == -1 else trip, first, cond_index=cond, cur_index=cur)

    def _special_port_entries(self, ids: dict[int, int]) -> list[tuple[str, dict[str, str]]]:
        body = self.get_function(0)
        cur, cond = self.special_body_ports
        out = []
        if cur >= 0:
            out.append(("input", {"external_port_id": "-1", "internal_layer_id": str(ids[id(body.get_parameters()[cur])]),
                                  "purpose": "current_iteration"}))
        if cond >= 0:
            out.append(("output", {"external_port_id": "-1", "internal_layer_id": str(ids[id(body.get_results()[cond])]),
                                   "purpose": "execution_condition"}))
        return out

    @classmethod
    def from_ir(cls, elem: ET.Element, inputs: list[Output], attrs: dict[str, Any], name: str,
                read_body: ReadBody) -> Loop:
        if len(inputs) < 2:
            raise IRFormatError(f"ember: Loop '{name}' needs a trip count and an execution condition input")
        node, special = cls._read_common(elem, inputs, name, read_body)
        assert isinstance(node, Loop)
        if special[1] < 0:
            raise IRFormatError(f"ember: Loop '{name}': the port map has no output with "
                                "purpose=\"execution_condition\"")
        node.special_body_ports = list(special)
        node.validate_and_infer_types()
        return node


@register_op
class TensorIterator(_IterationOp):
    """OpenVINO TensorIterator (opset1): runs its body once per part of its sliced inputs."""

    type_name = "TensorIterator"
    version = "opset1"
    num_inputs = (0, None)

    def __init__(self, inputs: Sequence[Any] = (), name: str | None = None) -> None:
        super().__init__(inputs, name)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._executors = [None]
        if self._bodies[0] is None:
            return []
        self._feed_parameters(0)
        self._infer_body(0)
        self._settle_merged(0)
        return self._iteration_outputs(0, self._num_iterations())

    def _num_iterations(self) -> int | None:
        return self._slice_iterations() if self._bodies[0] is not None else None

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        counts = set()
        for d in self._in_descs[0]:
            if isinstance(d, SliceInputDescription):
                value = np.asarray(inputs[d.input_index])
                axis = self._axis(d.axis, value.ndim, f"sliced input {d.input_index}")
                counts.add(_slice_count(value.shape[axis], d.start, d.stride, d.part_size, d.end))
        if not counts:
            raise InferenceError(f"ember: TensorIterator '{self.friendly_name}' has no sliced input, so its "
                                 "iteration count is unknown")
        if len(counts) > 1:
            raise InferenceError(f"ember: TensorIterator '{self.friendly_name}': its sliced inputs give different "
                                 f"iteration counts {sorted(counts)}")
        return self._iterate(inputs, counts.pop(), True)

    @classmethod
    def from_ir(cls, elem: ET.Element, inputs: list[Output], attrs: dict[str, Any], name: str,
                read_body: ReadBody) -> TensorIterator:
        node, _ = cls._read_common(elem, inputs, name, read_body)
        assert isinstance(node, TensorIterator)
        node.validate_and_infer_types()
        return node


# -- builders (``openvino.opset16.if_op``, ``loop``, ``tensor_iterator``) -------------------


@builder
def if_op(execution_condition: Any = None, name: str | None = None) -> If:
    """An If on ``execution_condition``; attach bodies with ``set_then_body``/``set_else_body``,
    inputs with ``set_input`` and outputs with ``set_output``."""
    return If(execution_condition, name)


@builder
def loop(trip_count: Any = None, execution_condition: Any = None, name: str | None = None) -> Loop:
    """A Loop running at most ``trip_count`` times (-1: no limit) while the condition holds;
    attach the body with ``set_function`` and ``set_special_body_ports``."""
    return Loop(trip_count, execution_condition, name)


@builder
def tensor_iterator(name: str | None = None) -> TensorIterator:
    """A TensorIterator; attach the body with ``set_body``, then sliced/merged/invariant inputs."""
    return TensorIterator((), name)
