"""Shape ops: Reshape, Squeeze, Unsqueeze, ShapeOf, Broadcast, Tile, Range, Convert, ConvertLike,
NonZero, Concat, Split, VariadicSplit.

Shape-carrying inputs (a Reshape target, a Broadcast shape) are read with ``value_bounds``: the
exact value when it folds to a constant, else per-element ``[lo, hi]`` intervals propagated
through the usual shape subgraphs (ShapeOf -> Gather/Slice/Concat/Convert -> Reshape), as
OpenVINO's bound evaluation does. That is how ``Reshape(x, ShapeOf(y))`` with ``y`` of shape
``[1..8, 3]`` infers ``[1..8, 3]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node, as_output, constant_value
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type, as_type, cast_array

#: Upper end of an unbounded interval in ``value_bounds``.
INF = 1 << 62

Bounds = list[tuple[int, int]]

# -- value bounds: what a shape subgraph computes, when it is not a constant --------------------

_VALUE_RULES: dict[str, Callable[[Node, int], Bounds | None]] = {}


def value_rule(*type_names: str) -> Callable[[Callable[[Node, int], Bounds | None]], Callable[..., Any]]:
    """Register how ops of ``type_names`` map their inputs' bounds to their output's bounds."""

    def deco(fn: Callable[[Node, int], Bounds | None]) -> Callable[[Node, int], Bounds | None]:
        for t in type_names:
            _VALUE_RULES[t] = fn
        return fn

    return deco


def value_bounds(out: Any) -> Bounds | None:
    """Per-element ``(lo, hi)`` of an integer output holding at most a few values, flattened.

    Exact (``lo == hi``) where the value folds to a constant; ``hi == INF`` when unbounded;
    None when nothing is known.
    """
    out = as_output(out)
    value = constant_value(out)
    if value is not None:
        arr = np.asarray(value)
        if arr.dtype.kind not in "biu" or arr.size > 4096:
            return None
        return [(int(v), int(v)) for v in arr.reshape(-1)]
    rule = _VALUE_RULES.get(out.node.type_name)
    if rule is None:
        return None
    try:
        return rule(out.node, out.index)
    except Exception:  # noqa: BLE001 - unknown bounds are not an error
        return None


def dim_of(lo: int, hi: int) -> Dimension:
    """A Dimension from an interval (negative ends clipped, ``INF`` unbounded)."""
    lo = max(lo, 0)
    if hi >= INF:
        return Dimension(lo, -1)
    return Dimension(lo, max(hi, lo))


def bounds_of(d: Dimension) -> tuple[int, int]:
    return d.min_length, (INF if d.max_length == -1 else d.max_length)


def shape_input(node: Node, i: int) -> PartialShape:
    """The best PartialShape a 1-D shape-carrying input ``i`` describes."""
    b = value_bounds(node.input(i).source)
    if b is not None:
        if any(lo == hi and lo < 0 for lo, hi in b):
            raise node.fail(f"input {i} holds a negative dimension: {[lo for lo, _ in b]}")
        return PartialShape([dim_of(lo, hi) for lo, hi in b])
    s = node.input_shape(i)
    if s.rank_is_static and len(s) == 1 and s[0].is_static:
        return PartialShape.dynamic(s[0].get_length())
    if s.rank_is_static and len(s) == 0:
        return PartialShape.dynamic(1)
    return PartialShape.dynamic()


def const_ints(node: Node, i: int) -> list[int] | None:
    """Input ``i`` as a flat list of ints, when it is known."""
    v = node.input_value(i)
    if v is None:
        return None
    return [int(x) for x in np.asarray(v).reshape(-1)]


def check_int_input(node: Node, i: int, what: str) -> None:
    t = node.input_type(i)
    if not (t.is_integral_number or t.is_dynamic):
        raise node.fail(f"{what} must be an integer tensor, got {t}")


def check_rank_at_most(node: Node, i: int, rank: int, what: str) -> None:
    s = node.input_shape(i)
    if s.rank_is_static and len(s) > rank:
        raise node.fail(f"{what} must have rank <= {rank}, got shape {s}")


def normalize(axis: int, rank: int, node: Node, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise node.fail(f"{what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def merge_dims(node: Node, a: Dimension, b: Dimension, what: str) -> Dimension:
    try:
        return a.merge(b)
    except Exception:
        raise node.fail(f"{what}: dimensions {a} and {b} differ") from None


def merge_types(node: Node, types: Sequence[Type], what: str = "inputs") -> Type:
    out = Type.dynamic
    for t in types:
        if not out.compatible(t):
            raise node.fail(f"{what} have different element types: {out} and {t}")
        if out.is_dynamic:
            out = t
    return out


def dim_div(d: Dimension, k: int) -> Dimension:
    """``d / k`` for a dimension known to be divisible by ``k`` (bounds rounded inward)."""
    lo, hi = bounds_of(d)
    return dim_of(-(-lo // k), INF if hi >= INF else hi // k)


def select_rule(node: Node, index: int) -> Bounds | None:
    """Bounds of an op that only moves elements of its data inputs: run its kernel on positions."""
    return _select(node, index, value_bounds, (0, 0))


def _select(node: Node, index: int, per_input: Callable[[Any], list | None], filler: Any = None) -> list | None:
    """Per-element facts (``per_input`` of each data input) carried through an op that only
    moves elements: its kernel runs on element positions and the facts are looked up."""
    data_inputs = getattr(node, "data_inputs", (0,))
    if data_inputs is None:
        data_inputs = tuple(range(node.get_input_size()))
    args: list[np.ndarray] = []
    table: list[Any] = [filler]  # position 0: values an op makes up (pads, fills)
    for i, src in enumerate(node.input_values()):
        if i in data_inputs:
            b = per_input(src)
            shape = node.input_shape(i)
            if b is None or not shape.is_static or math.prod(shape.to_shape()) != len(b):
                return None
            pos = np.arange(len(table), len(table) + len(b), dtype=np.int64).reshape(shape.to_shape())
            table.extend(b)
            args.append(pos.astype(node.input_type(i).dtype) if node.input_type(i).is_static else pos)
        else:
            v = constant_value(src)
            if v is None:
                return None
            args.append(np.asarray(v))
    picked = np.asarray(node.evaluate(args)[index]).reshape(-1)
    if picked.size > 4096:
        return None
    return [table[int(p)] for p in picked]


value_rule("Squeeze", "Unsqueeze", "Reshape", "Concat", "Gather", "StridedSlice", "Slice", "Split",
           "VariadicSplit", "Transpose", "Tile", "Broadcast", "Reverse", "Roll")(select_rule)


Origin = tuple[Any, int, int] | None  # (node, output index, dimension) a shape element came from


def value_origins(out: Any) -> list[Origin] | None:
    """For each element of a small integer tensor, the tensor dimension it was read from by
    ShapeOf (through element moves like Gather, Slice, Concat, Convert), or None."""
    out = as_output(out)
    node = out.node
    if node.type_name == "ShapeOf":
        s = node.input_shape(0)
        src = node.input(0).source
        return [(src.node, src.index, j) for j in range(len(s))] if s.rank_is_static else None
    if node.type_name in ("Convert", "ConvertLike") and node.output(0).element_type.is_integral_number:
        return value_origins(node.input(0).source)
    value = constant_value(out)
    if value is not None:
        return [None] * int(np.asarray(value).size) if np.asarray(value).size <= 4096 else None
    if _VALUE_RULES.get(node.type_name) is not select_rule:
        return None
    return _select(node, out.index, value_origins)


@value_rule("ShapeOf")
def _shape_of_rule(node: Node, index: int) -> Bounds | None:
    s = node.input_shape(0)
    return [bounds_of(d) for d in s] if s.rank_is_static else None


@value_rule("Convert", "ConvertLike")
def _convert_rule(node: Node, index: int) -> Bounds | None:
    return value_bounds(node.input(0).source) if node.output(0).element_type.is_integral_number else None


def _elementwise_bounds(node: Node, fn: Callable[[tuple[int, int], tuple[int, int]], tuple[int, int]]
                        ) -> Bounds | None:
    a, b = value_bounds(node.input(0).source), value_bounds(node.input(1).source)
    if a is None or b is None:
        return None
    if len(a) == 1:
        a = a * len(b)
    if len(b) == 1:
        b = b * len(a)
    if len(a) != len(b):
        return None
    return [fn(x, y) for x, y in zip(a, b)]


def _add(x: tuple[int, int], y: tuple[int, int]) -> tuple[int, int]:
    return x[0] + y[0], INF if INF in (x[1], y[1]) else x[1] + y[1]


def _mul(x: tuple[int, int], y: tuple[int, int]) -> tuple[int, int]:
    if min(x[0], y[0]) < 0:
        if x[0] == x[1] and y[0] == y[1]:
            return x[0] * y[0], x[0] * y[0]
        return -INF, INF
    hi = INF if INF in (x[1], y[1]) and (x[1] and y[1]) else min(x[1] * y[1], INF)
    return x[0] * y[0], hi


value_rule("Add")(lambda n, i: _elementwise_bounds(n, _add))
value_rule("Multiply")(lambda n, i: _elementwise_bounds(n, _mul))
value_rule("Maximum")(lambda n, i: _elementwise_bounds(n, lambda x, y: (max(x[0], y[0]), max(x[1], y[1]))))
value_rule("Minimum")(lambda n, i: _elementwise_bounds(n, lambda x, y: (min(x[0], y[0]), min(x[1], y[1]))))


# -- Reshape ------------------------------------------------------------------------------------


def _product(dims: Sequence[Dimension]) -> tuple[int, int]:
    lo, hi = 1, 1
    for d in dims:
        dlo, dhi = bounds_of(d)
        lo *= dlo
        hi = INF if (hi >= INF and dhi != 0) or (dhi >= INF and hi != 0) else min(hi * dhi, INF)
    return lo, hi


def reshape_dims(node: Node, in_shape: PartialShape, target: Bounds, special_zero: bool,
                 origins: dict[int, int] | None = None) -> list[Dimension]:
    """Output dimensions of Reshape for target values (or bounds), with -1 and special_zero.

    ``origins`` maps target elements known to be input dimensions (read by ShapeOf of the
    data itself) to those dimensions: like special_zero copies, they cancel out of the count."""
    dims: list[Dimension | None] = []
    minus_one: int | None = None
    copied_in: set[int] = set()  # input dims that reappear as output dims: they cancel out
    copied_out: set[int] = set()
    origins = origins or {}
    for i, (lo, hi) in enumerate(target):
        j = origins.get(i)
        if j is not None and lo != hi and in_shape.rank_is_static and j < len(in_shape) and j not in copied_in:
            dims.append(in_shape[j])
            copied_in.add(j)
            copied_out.add(i)
        elif lo == hi:
            if lo == -1:
                if minus_one is not None:
                    raise node.fail(f"more than one -1 in the target shape {[b[0] for b in target]}")
                minus_one = i
                dims.append(None)
            elif lo < -1:
                raise node.fail(f"target dimension {i} is {lo}; dimensions must be >= -1")
            elif lo == 0 and special_zero:
                if not in_shape.rank_is_static:
                    dims.append(Dimension())
                elif i >= len(in_shape):
                    raise node.fail(f"special_zero copies input dimension {i}, but the input rank is {len(in_shape)}")
                else:
                    dims.append(in_shape[i])
                    copied_in.add(i)
                    copied_out.add(i)
            else:
                dims.append(Dimension(lo))
        elif lo < 0:
            dims.append(Dimension())
        elif special_zero and lo == 0:
            if in_shape.rank_is_static and i < len(in_shape):
                a, b = bounds_of(in_shape[i])
                dims.append(dim_of(min(a, 1), max(b, hi)))
            else:
                dims.append(Dimension())
        else:
            dims.append(dim_of(lo, hi))
    total = _product([d for i, d in enumerate(in_shape) if i not in copied_in]) if in_shape.rank_is_static else (0, INF)
    known = _product([d for i, d in enumerate(dims) if d is not None and i not in copied_out])
    if minus_one is not None:
        if total[0] == total[1] and known[0] == known[1]:
            if known[0] == 0:
                if total[0] != 0:
                    raise node.fail(f"cannot reshape {in_shape} ({total[0]} elements) with a zero-sized target")
                dims[minus_one] = Dimension(1)
            elif total[0] % known[0]:
                raise node.fail(f"cannot reshape {in_shape} into {_show(dims)}: {total[0]} elements "
                                f"are not divisible by {known[0]}")
            else:
                dims[minus_one] = Dimension(total[0] // known[0])
        else:
            lo = -(-total[0] // known[1]) if 0 < known[1] < INF else 0
            hi = total[1] // known[0] if total[1] < INF and known[0] > 0 else INF
            dims[minus_one] = dim_of(lo, hi) if hi >= lo else Dimension()
    elif total[0] == total[1] and known[0] == known[1] and total[0] != known[0]:
        raise node.fail(f"cannot reshape {in_shape} ({total[0]} elements) into {_show(dims)} ({known[0]} elements)")
    elif total[0] == total[1]:
        # one unknown output dimension is fixed by the element count
        free = [i for i, d in enumerate(dims) if d is not None and d.is_dynamic and i not in copied_out]
        rest = _product([d for i, d in enumerate(dims) if d is not None and i not in copied_out and i not in free])
        if len(free) == 1 and rest[0] == rest[1] and rest[0] > 0 and total[0] % rest[0] == 0:
            dims[free[0]] = merge_dims(node, dims[free[0]], Dimension(total[0] // rest[0]), "reshape")
    return [d for d in dims if d is not None]


def _show(dims: Sequence[Dimension | None]) -> str:
    return "[" + ",".join("-1" if d is None else str(d) for d in dims) + "]"


@register_op
class Reshape(Node):
    """Reshape-1: ``data`` viewed with the shape held by input 1 (-1 inferred, 0 copies the input
    dimension when ``special_zero``)."""

    type_name = "Reshape"
    version = "opset1"
    num_inputs = (2, 2)
    attributes = (Attr("special_zero", "bool"),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        check_int_input(self, 1, "the target shape")
        check_rank_at_most(self, 1, 1, "the target shape")
        target = value_bounds(self.input(1).source)
        if target is None:
            return [(self.input_type(0), shape_input(self, 1))]
        data = self.input(0).source
        origins = {i: o[2] for i, o in enumerate(value_origins(self.input(1).source) or [])
                   if o is not None and o[0] is data.node and o[1] == data.index}
        return [(self.input_type(0), PartialShape(reshape_dims(self, self.input_shape(0), target,
                                                               self.attrs["special_zero"], origins)))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, target = inputs
        t = [(int(v), int(v)) for v in np.asarray(target).reshape(-1)]
        dims = reshape_dims(self, PartialShape(x.shape), t, self.attrs["special_zero"])
        return [x.reshape(tuple(d.get_length() for d in dims))]


@builder
def reshape(node: Any, output_shape: Any, special_zero: bool, name: str | None = None) -> Node:
    """Reshape ``node`` to ``output_shape`` (a list or a 1-D integer node)."""
    return Reshape([node, int_list(output_shape)], {"special_zero": special_zero}, name)


def int_list(value: Any) -> Any:
    """Builder arguments: Python lists (even empty ones) become i64 arrays, as in OpenVINO."""
    if isinstance(value, (list, tuple)):
        return np.asarray(value, dtype=np.int64)
    return value


# -- Squeeze / Unsqueeze ------------------------------------------------------------------------


def _may_be_one(d: Dimension) -> bool:
    return d.is_dynamic and d.contains(1)


class _SqueezeBase(Node):
    num_inputs = (1, 2)
    allow_skip = False

    def infer(self) -> list[tuple[Type, PartialShape]]:
        data = self.input_shape(0)
        if self.get_input_size() == 2:
            check_int_input(self, 1, "axes")
            check_rank_at_most(self, 1, 1, "axes")
        axes = const_ints(self, 1) if self.get_input_size() == 2 else []
        if not data.rank_is_static:
            return [(self.input_type(0), PartialShape.dynamic())]
        if axes is None:
            if any(d == 1 or _may_be_one(d) for d in data):
                return [(self.input_type(0), PartialShape.dynamic())]
            return [(self.input_type(0), data)]
        rank = len(data)
        if not axes:
            if any(_may_be_one(d) for d in data):
                return [(self.input_type(0), PartialShape.dynamic())]
            return [(self.input_type(0), PartialShape([d for d in data if d != 1]))]
        chosen = {normalize(a, rank, self) for a in axes}
        out = []
        for i, d in enumerate(data):
            if i in chosen and d == 1:
                continue
            if i in chosen and _may_be_one(d):
                if self.allow_skip and self.attrs.get("allow_axis_skip", False):
                    return [(self.input_type(0), PartialShape.dynamic())]
                continue
            out.append(d)
        return [(self.input_type(0), PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        if len(inputs) == 1 or np.asarray(inputs[1]).size == 0:
            return [x.reshape(tuple(d for d in x.shape if d != 1))]
        chosen = {normalize(int(a), x.ndim, self) for a in np.asarray(inputs[1]).reshape(-1)}
        return [x.reshape(tuple(d for i, d in enumerate(x.shape) if not (i in chosen and d == 1)))]


@register_op
class Squeeze(_SqueezeBase):
    """Squeeze-1: remove the size-1 dimensions listed in ``axes`` (all of them without axes);
    listed dimensions that are not 1 are kept."""

    type_name = "Squeeze"
    version = "opset1"


@register_op
class Squeeze15(_SqueezeBase):
    """Squeeze-15: as Squeeze-1; with ``allow_axis_skip`` a listed dynamic dimension makes the
    output rank dynamic (it may or may not be 1 at run time)."""

    type_name = "Squeeze"
    version = "opset15"
    attributes = (Attr("allow_axis_skip", "bool", False),)
    allow_skip = True


@builder
def squeeze(data: Any, axes: Any = None, allow_axis_skip: bool = False, name: str | None = None) -> Node:
    """Squeeze-15 on ``data`` (``axes`` optional)."""
    ins = [data] if axes is None else [data, int_list(axes)]
    return Squeeze15(ins, {"allow_axis_skip": allow_axis_skip}, name)


def _unsqueeze_dims(node: Node, dims: list[Any], axes: list[int]) -> list[Any]:
    out_rank = len(dims) + len(axes)
    chosen = sorted({normalize(a, out_rank, node) for a in axes})
    out = list(dims)
    for a in chosen:
        out.insert(a, 1)
    return out


@register_op
class Unsqueeze(Node):
    """Unsqueeze-1: insert size-1 dimensions at ``axes`` (counted in the output; duplicates once)."""

    type_name = "Unsqueeze"
    version = "opset1"
    num_inputs = (2, 2)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        check_int_input(self, 1, "axes")
        check_rank_at_most(self, 1, 1, "axes")
        data = self.input_shape(0)
        axes = const_ints(self, 1)
        if axes is None or not data.rank_is_static:
            return [(self.input_type(0), PartialShape.dynamic())]
        if not axes:
            raise self.fail("axes must not be empty")
        return [(self.input_type(0), PartialShape(_unsqueeze_dims(self, list(data), axes)))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, axes = inputs
        return [x.reshape(tuple(_unsqueeze_dims(self, list(x.shape), [int(a) for a in np.asarray(axes).reshape(-1)])))]


@builder
def unsqueeze(data: Any, axes: Any, name: str | None = None) -> Node:
    return Unsqueeze([data, int_list(axes)], None, name)


# -- ShapeOf ------------------------------------------------------------------------------------


class _ShapeOfBase(Node):
    num_inputs = (1, 1)

    def out_type(self) -> Type:
        return Type.i64

    def infer(self) -> list[tuple[Type, PartialShape]]:
        if self.out_type() not in (Type.i32, Type.i64):
            raise self.fail(f"output_type must be i32 or i64, got {self.out_type()}")
        s = self.input_shape(0)
        return [(self.out_type(), PartialShape([len(s)] if s.rank_is_static else [Dimension()]))]

    def constant_outputs(self) -> list[np.ndarray] | None:
        s = self.input_shape(0)
        if s.is_static:
            return [np.array(s.to_shape(), dtype=self.out_type().dtype)]
        return None

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.array(np.shape(inputs[0]), dtype=self.out_type().dtype)]


@register_op
class ShapeOf(_ShapeOfBase):
    """ShapeOf-1: the shape of the input as a 1-D i64 tensor (folds when the shape is static)."""

    type_name = "ShapeOf"
    version = "opset1"


@register_op
class ShapeOf3(_ShapeOfBase):
    """ShapeOf-3: the shape of the input as a 1-D ``output_type`` (i32 or i64) tensor."""

    type_name = "ShapeOf"
    version = "opset3"
    attributes = (Attr("output_type", "type", Type.i64),)

    def out_type(self) -> Type:
        return self.attrs["output_type"]


@builder
def shape_of(data: Any, output_type: Any = "i64", name: str | None = None) -> Node:
    return ShapeOf3([data], {"output_type": as_type(output_type)}, name)


# -- Broadcast ----------------------------------------------------------------------------------


def bidirectional_dim(node: Node, a: Dimension, b: Dimension) -> Dimension:
    """The broadcast of two dimensions where one of them must be 1 or both equal."""
    if a == 1:
        return b
    if b == 1:
        return a
    if a.is_static and not b.contains(1):
        return merge_dims(node, a, b, "broadcast")
    if b.is_static and not a.contains(1):
        return merge_dims(node, a, b, "broadcast")
    if a.is_static and b.contains(a.get_length()):
        return a
    if b.is_static and a.contains(b.get_length()):
        return b
    if a.is_static or b.is_static:
        raise node.fail(f"dimensions {a} and {b} do not broadcast")
    if not a.contains(1) and not b.contains(1):
        return merge_dims(node, a, b, "broadcast")
    if not a.contains(1):
        return a  # b is 1 or equal to a
    if not b.contains(1):
        return b
    alo, ahi = bounds_of(a)
    blo, bhi = bounds_of(b)
    return dim_of(max(alo, blo), max(ahi, bhi))


def bidirectional_shape(node: Node, a: PartialShape, b: PartialShape) -> PartialShape:
    if not a.rank_is_static or not b.rank_is_static:
        return PartialShape.dynamic()
    n = max(len(a), len(b))
    da = [Dimension(1)] * (n - len(a)) + list(a)
    db = [Dimension(1)] * (n - len(b)) + list(b)
    return PartialShape([bidirectional_dim(node, x, y) for x, y in zip(da, db)])


class _BroadcastBase(Node):
    num_inputs = (2, 3)
    modes: tuple[str, ...] = ()

    def infer(self) -> list[tuple[Type, PartialShape]]:
        mode = self.attrs["mode"].lower()
        if mode == "none":
            mode = "explicit"
        if mode not in self.modes:
            raise self.fail(f"unknown mode '{self.attrs['mode']}'; {self.type_name}-{self.version} has "
                            f"{', '.join(self.modes)}")
        if mode == "explicit" and self.get_input_size() != 3:
            raise self.fail("explicit mode needs the axes_mapping input")
        if mode != "explicit" and self.get_input_size() == 3 and self.version == "opset3":
            raise self.fail(f"axes_mapping is only used in explicit mode, not '{mode}'")
        check_int_input(self, 1, "target_shape")
        ts = self.input_shape(1)
        if ts.rank_is_static and len(ts) != 1:
            raise self.fail(f"target_shape must be 1-D, got shape {ts}")
        data = self.input_shape(0)
        target = shape_input(self, 1)
        et = self.input_type(0)
        if mode == "bidirectional":
            return [(et, bidirectional_shape(self, data, target))]
        if not target.rank_is_static:
            return [(et, target)]
        if mode == "numpy":
            if not data.rank_is_static:
                return [(et, target)]
            if len(data) > len(target):
                raise self.fail(f"target shape {target} has a smaller rank than the data {data}")
            out = list(target)
            start = len(target) - len(data)
            for i, d in enumerate(data):
                t = out[start + i]
                if d.contains(1):
                    continue
                if not d.compatible(t):
                    raise self.fail(f"data dimension {d} cannot be broadcast to {t} (numpy mode)")
                out[start + i] = d.merge(t)  # the target must equal a dimension that cannot be 1
            return [(et, PartialShape(out))]
        if mode == "pdpd":
            if not data.rank_is_static:
                return [(et, PartialShape.dynamic(len(target)))]
            if len(data) < len(target):
                raise self.fail(f"pdpd mode needs the data rank ({len(data)}) to be at least the target "
                                f"rank ({len(target)})")
            return [(et, PartialShape([bidirectional_dim(self, d, t) for d, t in zip(data, target)]))]
        # explicit
        axes = const_ints(self, 2)
        if axes is not None and data.rank_is_static:
            if len(data) and len(axes) != len(data):
                raise self.fail(f"axes_mapping {axes} does not match the data rank {len(data)}")
            if axes != sorted(axes):
                raise self.fail(f"axes_mapping {axes} must be sorted (Broadcast does not transpose)")
            for i, a in enumerate(axes):
                if not 0 <= a < len(target):
                    raise self.fail(f"axes_mapping[{i}] = {a} exceeds the target rank {len(target)}")
                if len(data) and not (target[a].compatible(data[i]) or data[i].compatible(1)):
                    raise self.fail(f"data dimension {data[i]} cannot map onto target dimension {target[a]}")
        return [(et, target)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        target = tuple(int(v) for v in np.asarray(inputs[1]).reshape(-1))
        mode = self.attrs["mode"].lower()
        if mode == "bidirectional":
            return [np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, target)))]
        if mode == "pdpd":
            shape = tuple(t if d == 1 else d for d, t in zip(x.shape, target))
            return [np.array(np.broadcast_to(x, shape))]
        if mode in ("explicit", "none"):
            axes = [int(a) for a in np.asarray(inputs[2]).reshape(-1)]
            shape = [1] * len(target)
            for a, d in zip(axes, x.shape):
                shape[a] = d
            return [np.array(np.broadcast_to(x.reshape(shape), target))]
        return [np.array(np.broadcast_to(x, target))]


@register_op
class Broadcast1(_BroadcastBase):
    """Broadcast-1: replicate ``data`` to ``target_shape`` (modes numpy, explicit, pdpd)."""

    type_name = "Broadcast"
    version = "opset1"
    attributes = (Attr("mode", "str", "numpy"),)
    modes = ("numpy", "explicit", "pdpd")


@register_op
class Broadcast(_BroadcastBase):
    """Broadcast-3: replicate ``data`` to ``target_shape`` (numpy, explicit, bidirectional, pdpd)."""

    type_name = "Broadcast"
    version = "opset3"
    attributes = (Attr("mode", "str", "numpy"),)
    modes = ("numpy", "explicit", "bidirectional", "pdpd")


@builder
def broadcast(data: Any, target_shape: Any, axes_mapping: Any = None, broadcast_spec: str = "NUMPY",
              name: str | None = None) -> Node:
    """Broadcast-3 of ``data`` to ``target_shape``."""
    ins = [data, int_list(target_shape)] + ([] if axes_mapping is None else [int_list(axes_mapping)])
    return Broadcast(ins, {"mode": broadcast_spec.lower()}, name)


# -- Tile ---------------------------------------------------------------------------------------


@register_op
class Tile(Node):
    """Tile-1: repeat ``data`` ``repeats[i]`` times along each axis (shorter side padded with 1s)."""

    type_name = "Tile"
    version = "opset1"
    num_inputs = (2, 2)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        check_int_input(self, 1, "repeats")
        check_rank_at_most(self, 1, 1, "repeats")
        data = self.input_shape(0)
        reps = value_bounds(self.input(1).source)
        et = self.input_type(0)
        if reps is None:
            rs = self.input_shape(1)
            if data.rank_is_static and rs.rank_is_static and len(rs) == 1 and rs[0].is_static:
                n = max(len(data), rs[0].get_length())
                return [(et, PartialShape.dynamic(n))]
            return [(et, PartialShape.dynamic())]
        if not data.rank_is_static:
            return [(et, PartialShape.dynamic())]
        n = max(len(data), len(reps))
        dims = [Dimension(1)] * (n - len(data)) + list(data)
        reps = [(1, 1)] * (n - len(reps)) + reps
        out = []
        for d, (lo, hi) in zip(dims, reps):
            lo, hi = max(lo, 0), max(hi, 0)
            out.append(d * dim_of(lo, hi))
        return [(et, PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, reps = inputs
        return [np.tile(x, [max(int(r), 0) for r in np.asarray(reps).reshape(-1)])]


@builder
def tile(data: Any, repeats: Any, name: str | None = None) -> Node:
    return Tile([data, int_list(repeats)], None, name)


# -- Range --------------------------------------------------------------------------------------


def _range_length(node: Node, start: float, stop: float, step: float) -> int:
    for what, v in (("start", start), ("stop", stop), ("step", step)):
        if not math.isfinite(v):
            raise node.fail(f"'{what}' cannot be NaN or infinite")
    if step == 0:
        raise node.fail("'step' cannot be zero")
    if (step > 0 and start >= stop) or (step < 0 and start <= stop):
        return 0
    return int(math.ceil(abs(stop - start) / abs(step)))


class _RangeBase(Node):
    num_inputs = (3, 3)

    def out_type(self) -> Type:
        raise NotImplementedError

    def infer(self) -> list[tuple[Type, PartialShape]]:
        for i, what in enumerate(("start", "stop", "step")):
            s = self.input_shape(i)
            if s.rank_is_static and not (len(s) == 0 or (len(s) == 1 and s[0].compatible(1))):
                raise self.fail(f"'{what}' must be a scalar, got shape {s}")
        et = self.out_type()
        if not (et.is_real or et.is_integral_number or et.is_dynamic):
            raise self.fail(f"output type must be numeric, got {et}")
        vals = [self.input_value(i) for i in range(3)]
        if any(v is None for v in vals):
            return [(et, PartialShape([self._length_bounds()]))]
        start, stop, step = (self._scalar(v) for v in vals)
        return [(et, PartialShape([_range_length(self, start, stop, step)]))]

    def _length_bounds(self) -> Dimension:
        """The length when start or stop is only known by bounds (e.g. a dimension of ShapeOf)."""
        b = [value_bounds(self.input(i).source) for i in range(3)]
        if any(x is None or len(x) != 1 for x in b) or b[2][0][0] != b[2][0][1] or b[2][0][0] == 0:
            return Dimension()
        (s_lo, s_hi), (e_lo, e_hi), ((step, _),) = b[0][0], b[1][0], b[2]
        if step < 0:  # mirror to a positive step
            s_lo, s_hi, e_lo, e_hi, step = -s_hi, -s_lo, -e_hi, -e_lo, -step
        if max(abs(s_lo), abs(s_hi), abs(e_lo), abs(e_hi)) >= INF:
            hi = INF
        else:
            hi = _range_length(self, s_lo, e_hi, step)
        if abs(s_hi) >= INF or abs(e_lo) >= INF:
            return dim_of(0, hi)
        return dim_of(_range_length(self, s_hi, e_lo, step), hi)

    def _scalar(self, v: np.ndarray) -> float:
        x = float(np.asarray(v).reshape(-1)[0])
        return math.trunc(x) if self.out_type().is_integral_number and math.isfinite(x) else x

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        start, stop, step = (self._scalar(v) for v in inputs)
        n = _range_length(self, start, stop, step)
        dt = self.out_type().dtype
        if dt.kind in "iu":
            return [(int(start) + np.arange(n, dtype=np.int64) * int(step)).astype(dt)]
        return [np.asarray(start, dtype=dt) + np.arange(n).astype(dt) * np.asarray(step, dtype=dt)]


@register_op
class Range0(_RangeBase):
    """Range-1 (v0): ``start, start + step, ...`` up to ``stop`` (exclusive), in the inputs' type."""

    type_name = "Range"
    version = "opset1"

    def out_type(self) -> Type:
        return merge_types(self, [self.input_type(i) for i in range(3)], "start, stop and step")


@register_op
class Range(_RangeBase):
    """Range-4: ``start, start + step, ...`` up to ``stop`` (exclusive), as ``output_type``; for an
    integer output the inputs are truncated toward zero first."""

    type_name = "Range"
    version = "opset4"
    attributes = (Attr("output_type", "type"),)

    def out_type(self) -> Type:
        return self.attrs["output_type"]


@builder
def range_(start: Any, stop: Any, step: Any, output_type: Any, name: str | None = None) -> Node:
    """Range-4 (``ember.opset.range``)."""
    return Range([start, stop, step], {"output_type": as_type(output_type)}, name)


# -- Convert / ConvertLike ----------------------------------------------------------------------


@register_op
class Convert(Node):
    """Convert-1: elementwise conversion to ``destination_type``.

    ember's float-to-integer rule (``ember.graph.types.cast_array``): truncate toward zero and
    saturate at the destination's range, NaN becoming 0. OpenVINO leaves out-of-range values
    undefined (on x86 they wrap); in-range values agree.
    """

    type_name = "Convert"
    version = "opset1"
    num_inputs = (1, 1)
    attributes = (Attr("destination_type", "type"),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.attrs["destination_type"], self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        dst = self.attrs["destination_type"]
        src = self.input_type(0) if self.input_type(0).is_static else Type.from_dtype(inputs[0].dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # f32 -> f16 overflow is inf, on purpose
            return [np.asarray(cast_array(inputs[0], src, dst), dtype=dst.dtype)]


@builder
def convert(data: Any, destination_type: Any, name: str | None = None) -> Node:
    return Convert([data], {"destination_type": as_type(destination_type)}, name)


@register_op
class ConvertLike(Node):
    """ConvertLike-1: convert ``data`` to the element type of ``like``."""

    type_name = "ConvertLike"
    version = "opset1"
    num_inputs = (2, 2)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.input_type(1), self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        dst = self.input_type(1) if self.input_type(1).is_static else Type.from_dtype(inputs[1].dtype)
        src = self.input_type(0) if self.input_type(0).is_static else Type.from_dtype(inputs[0].dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # f32 -> f16 overflow is inf, on purpose
            return [np.asarray(cast_array(inputs[0], src, dst), dtype=dst.dtype)]


@builder
def convert_like(data: Any, like: Any, name: str | None = None) -> Node:
    return ConvertLike([data, like], None, name)


# -- NonZero ------------------------------------------------------------------------------------


@register_op
class NonZero(Node):
    """NonZero-3: the indices of the non-zero elements, as a ``[rank, count]`` tensor."""

    type_name = "NonZero"
    version = "opset3"
    num_inputs = (1, 1)
    attributes = (Attr("output_type", "type", Type.i64),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        et = self.attrs["output_type"]
        if et not in (Type.i32, Type.i64):
            raise self.fail(f"output_type must be i32 or i64, got {et}")
        s = self.input_shape(0)
        if not s.rank_is_static:
            return [(et, PartialShape.dynamic(2))]
        _, hi = _product(s.dims)
        return [(et, PartialShape([max(len(s), 1), dim_of(0, hi)]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        if x.ndim == 0:
            x = x.reshape(1)
        return [np.array(np.nonzero(x), dtype=self.attrs["output_type"].dtype).reshape(x.ndim, -1)]


@builder
def non_zero(data: Any, output_type: Any = "i64", name: str | None = None) -> Node:
    return NonZero([data], {"output_type": as_type(output_type)}, name)


# -- Concat -------------------------------------------------------------------------------------


@register_op
class Concat(Node):
    """Concat-1: join the inputs along ``axis`` (negative counts from the end)."""

    type_name = "Concat"
    version = "opset1"
    num_inputs = (1, None)
    attributes = (Attr("axis", "int"),)
    data_inputs = None  # every input carries data

    def infer(self) -> list[tuple[Type, PartialShape]]:
        et = merge_types(self, [self.input_type(i) for i in range(self.get_input_size())])
        shapes = [self.input_shape(i) for i in range(self.get_input_size())]
        static = [s for s in shapes if s.rank_is_static]
        if not static:
            return [(et, PartialShape.dynamic())]
        rank = len(static[0])
        if rank == 0:
            raise self.fail("cannot concatenate scalars")
        axis = normalize(self.attrs["axis"], rank, self)
        out: list[Dimension] = [Dimension()] * rank
        total = Dimension(0)
        for i, s in enumerate(shapes):
            if not s.rank_is_static:
                total = total + Dimension()
                continue
            if len(s) != rank:
                raise self.fail(f"input {i} has rank {len(s)}, expected {rank} (shapes {', '.join(map(str, shapes))})")
            for k, d in enumerate(s):
                if k == axis:
                    total = total + d
                else:
                    out[k] = merge_dims(self, out[k], d, f"input {i}, axis {k}")
        out[axis] = total
        return [(et, PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        axis = self.attrs["axis"]
        return [np.concatenate(list(inputs), axis=axis).astype(self.output(0).element_type.dtype, copy=False)]


@builder
def concat(nodes: Sequence[Any], axis: int, name: str | None = None) -> Node:
    return Concat(list(nodes), {"axis": axis}, name)


# -- Split / VariadicSplit ----------------------------------------------------------------------


def _scalar_axis(node: Node, i: int) -> int | None:
    check_int_input(node, i, "axis")
    s = node.input_shape(i)
    if s.rank_is_static and not (len(s) == 0 or (len(s) == 1 and s[0].compatible(1))):
        raise node.fail(f"axis must be a scalar, got shape {s}")
    v = const_ints(node, i)
    return None if v is None else v[0]


@register_op
class Split(Node):
    """Split-1: ``num_splits`` equal parts of ``data`` along ``axis`` (input 1)."""

    type_name = "Split"
    version = "opset1"
    num_inputs = (2, 2)
    attributes = (Attr("num_splits", "int"),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        n = self.attrs["num_splits"]
        if n <= 0:
            raise self.fail(f"num_splits must be positive, got {n}")
        data = self.input_shape(0)
        axis = _scalar_axis(self, 1)
        et = self.input_type(0)
        if not data.rank_is_static:
            return [(et, PartialShape.dynamic())] * n
        if axis is None:
            return [(et, PartialShape.dynamic(len(data)))] * n
        axis = normalize(axis, len(data), self)
        d = data[axis]
        if d.is_static and d.get_length() % n:
            raise self.fail(f"dimension {axis} ({d}) is not divisible by num_splits={n}")
        out = list(data)
        out[axis] = dim_div(d, n)
        return [(et, PartialShape(out))] * n

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, axis = inputs
        return list(np.split(x, self.attrs["num_splits"], axis=int(np.asarray(axis).reshape(-1)[0])))


@builder
def split(data: Any, axis: Any, num_splits: int, name: str | None = None) -> Node:
    return Split([data, int_list(axis)], {"num_splits": num_splits}, name)


def _variadic_lengths(node: Node, dim: Dimension, lengths: list[int]) -> list[Dimension]:
    if sum(1 for v in lengths if v == -1) > 1:
        raise node.fail(f"split_lengths {lengths} has more than one -1")
    if any(v < -1 for v in lengths):
        raise node.fail(f"split_lengths {lengths} has a negative length")
    known = sum(v for v in lengths if v != -1)
    out = []
    for v in lengths:
        if v != -1:
            out.append(Dimension(v))
        elif dim.is_static:
            if known > dim.get_length():
                raise node.fail(f"split_lengths {lengths} sum past the dimension {dim}")
            out.append(Dimension(dim.get_length() - known))
        else:
            lo, hi = bounds_of(dim)
            out.append(dim_of(lo - known, hi - known if hi < INF else INF))
    if -1 not in lengths and dim.is_static and known != dim.get_length():
        raise node.fail(f"split_lengths {lengths} sum to {known}, not to the dimension {dim}")
    return out


@register_op
class VariadicSplit(Node):
    """VariadicSplit-1: split ``data`` along ``axis`` into parts of ``split_lengths`` (one may be -1)."""

    type_name = "VariadicSplit"
    version = "opset1"
    num_inputs = (3, 3)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        ls = self.input_shape(2)
        if not ls.rank_is_static or len(ls) != 1 or not ls[0].is_static:
            raise self.fail(f"split_lengths must be a 1-D tensor of static length, got shape {ls}")
        check_int_input(self, 2, "split_lengths")
        n = ls[0].get_length()
        data = self.input_shape(0)
        axis = _scalar_axis(self, 1)
        et = self.input_type(0)
        if not data.rank_is_static:
            return [(et, PartialShape.dynamic())] * n
        if axis is None:
            return [(et, PartialShape.dynamic(len(data)))] * n
        axis = normalize(axis, len(data), self)
        lengths = const_ints(self, 2)
        outs = []
        dims = _variadic_lengths(self, data[axis], lengths) if lengths is not None else [Dimension()] * n
        for d in dims:
            s = list(data)
            s[axis] = d
            outs.append((et, PartialShape(s)))
        return outs

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, axis, lengths = inputs
        ax = normalize(int(np.asarray(axis).reshape(-1)[0]), x.ndim, self)
        dims = _variadic_lengths(self, Dimension(x.shape[ax]), [int(v) for v in np.asarray(lengths).reshape(-1)])
        cuts = np.cumsum([d.get_length() for d in dims])[:-1]
        return list(np.split(x, cuts, axis=ax))


@builder
def variadic_split(data: Any, axis: Any, split_lengths: Any, name: str | None = None) -> Node:
    return VariadicSplit([data, int_list(axis), int_list(split_lengths)], None, name)
