"""Basic passes (level 1): constant and shape folding, dead code, common subexpressions,
no-op removal, and merging of Reshape and Transpose chains."""

from __future__ import annotations

import hashlib

import numpy as np

import ember.opset as ops
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.graph.types import Type
from ember.passes.matcher import Const, Pattern, prune_dead_consumers, replace_output, rewrite, rule
from ember.passes.pipeline import note_fired, register_pass

#: Constant folding leaves results larger than this many elements alone (they would bloat
#: the weights; OpenVINO has a similar guard).
FOLD_MAX_ELEMENTS = 1 << 22
_NOT_FOLDED = {"If", "Loop", "TensorIterator", "Parameter", "Const", "Result", "ReadValue", "Assign"}


def _static_size(node: Node) -> int | None:
    total = 0
    for s in (o.partial_shape for o in node.outputs()):
        if not s.is_static:
            return None
        total += int(np.prod(s.to_shape(), dtype=np.int64))
    return total


def _as_constant(value: np.ndarray, port: Output, name: str) -> Constant:
    et = port.element_type
    arr = np.asarray(value)
    if et is not Type.string and arr.dtype != et.dtype:
        arr = arr.astype(et.dtype)
    c = Constant.from_array(arr, et, name)
    return c


@register_pass("fold_constants", level=1)
def fold_constants(model: Model) -> Model:
    """Replace nodes whose inputs are all constants by their computed value.

    Decompression Converts (f16 weights -> f32) stay, so saved models keep their compressed
    weights; devices fold them at compile time."""
    fired = 0
    for node in model.get_ordered_ops():
        if node.type_name in _NOT_FOLDED or not node.foldable or "decompression" in node.rt_info:
            continue
        if not node.input_values() or not all(isinstance(s.node, Constant) for s in node.input_values()):
            continue
        size = _static_size(node)
        if size is None or size > FOLD_MAX_ELEMENTS:
            continue
        try:
            outs = node.evaluate([s.node.data for s in node.input_values()])  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a node that cannot be evaluated now is left as it is
            continue
        for k, out in enumerate(outs):
            port = node.output(k)
            if not port.targets:
                continue
            name = node.friendly_name if len(outs) == 1 else f"{node.friendly_name}.{k}"
            replace_output(port, _as_constant(out, port, name).output(0))
        fired += 1
    prune_dead_consumers(model)
    note_fired(fired)
    return model


@register_pass("fold_shapes", level=1)
def fold_shapes(model: Model) -> Model:
    """Replace ShapeOf of a statically shaped tensor by a constant (then folding cascades)."""
    fired = 0
    for node in model.get_ordered_ops():
        if node.type_name != "ShapeOf" or not node.input_shape(0).is_static:
            continue
        port = node.output(0)
        shape = np.asarray(node.input_shape(0).to_shape(), dtype=port.element_type.dtype)
        replace_output(port, _as_constant(shape, port, node.friendly_name).output(0))
        fired += 1
    prune_dead_consumers(model)
    note_fired(fired)
    return model


@register_pass("eliminate_dead_code", level=1)
def eliminate_dead_code(model: Model) -> Model:
    """Unlink nodes that no longer lead to a Result."""
    note_fired(prune_dead_consumers(model))
    return model


#: bytes of a constant read for its CSE key (evenly spaced samples; equal keys are then compared whole)
_CSE_SAMPLES = 64


def _const_bytes(node: Constant) -> np.ndarray:
    return np.ascontiguousarray(node.data).view(np.uint8).reshape(-1)


def _cse_key(node: Node) -> tuple | None:
    if isinstance(node, (Parameter, Result)) or not node.foldable or node.bodies():
        return None
    if isinstance(node, Constant):
        if node.element_type is Type.string:
            return None
        raw = _const_bytes(node)
        if raw.size <= 4 * _CSE_SAMPLES:
            sample = raw.tobytes()
        else:  # a few bytes spread over the data: constants that differ almost always differ here
            sample = raw[np.linspace(0, raw.size - 1, _CSE_SAMPLES).astype(np.int64)].tobytes()
        return ("Const", node.element_type.name, node.data.shape, raw.size, hashlib.sha1(sample).hexdigest())
    attrs = tuple(sorted((k, repr(v)) for k, v in node.attrs.items()))
    srcs = tuple((id(s.node), s.index) for s in node.input_values())
    return (node.type_name, node.version, attrs, srcs)


@register_pass("eliminate_common_subexpressions", level=1)
def eliminate_common_subexpressions(model: Model) -> Model:
    """Merge nodes of the same op, attributes and inputs (and identical constants).

    Constants are keyed by a sample of their bytes, then compared whole among equal keys
    (hashing every weight cost ResNet-50 0.1 s a compile)."""
    seen: dict[tuple, list[Node]] = {}
    fired = 0
    for node in model.get_ordered_ops():
        key = _cse_key(node)
        if key is None:
            continue
        firsts = seen.setdefault(key, [])
        first: Node | None = None
        if isinstance(node, Constant):
            raw = _const_bytes(node)
            first = next((c for c in firsts if isinstance(c, Constant) and np.array_equal(_const_bytes(c), raw)), None)
        elif firsts:
            first = firsts[0]
        if first is None:
            firsts.append(node)
            continue
        for k in range(node.get_output_size()):
            replace_output(node.output(k), first.output(k))
        fired += 1
    prune_dead_consumers(model)
    note_fired(fired)
    return model


def _same_static_shape(node: Node) -> bool:
    a, b = node.input_shape(0), node.output(0).partial_shape
    return a.is_static and b.is_static and a == b


def _keeps_input(m) -> Output | None:  # noqa: ANN001 - Match
    node = m["op"]
    if node.input_type(0) is not node.output(0).element_type or not _same_static_shape(node):
        return None
    return node.input_values()[0]


_noop_shape = rule(Pattern(("Reshape", "Squeeze", "Unsqueeze", "Broadcast", "Tile", "ConvertLike"), name="op"),
                   "reshape_to_same_shape")(_keeps_input)


@rule(Pattern("Convert", name="op"))
def convert_to_same_type(m) -> Output | None:  # noqa: ANN001
    node = m["op"]
    return node.input_values()[0] if node.input_type(0) is node.output(0).element_type else None


@rule(Pattern("Transpose", name="op", pred=lambda n: isinstance(n.input_values()[1].node, Constant)))
def identity_transpose(m) -> Output | None:  # noqa: ANN001
    node = m["op"]
    perm = node.input_values()[1].node.data.reshape(-1)
    return node.input_values()[0] if np.array_equal(perm, np.arange(perm.size)) else None


@rule(Pattern("Concat", name="op", pred=lambda n: len(n.input_values()) == 1))
def single_input_concat(m) -> Output | None:  # noqa: ANN001
    return m["op"].input_values()[0]


def _neutral(value: float):  # noqa: ANN202
    def check(data: np.ndarray) -> bool:
        return data.size > 0 and data.dtype.kind in "fiu" and bool(np.all(data == value))
    return check


@rule(Pattern(("Add", "Subtract"), Pattern(None, name="x"), Const(pred=_neutral(0)), name="op"))
def add_zero(m) -> Output | None:  # noqa: ANN001
    return _keeps_input(m)


@rule(Pattern(("Multiply", "Divide"), Pattern(None, name="x"), Const(pred=_neutral(1)), name="op"))
def multiply_one(m) -> Output | None:  # noqa: ANN001
    return _keeps_input(m)


@register_pass("eliminate_noops", level=1)
def eliminate_noops(model: Model) -> Model:
    """Remove ops that change nothing: Reshape/Squeeze/Unsqueeze/Broadcast/Tile to the same
    shape, Convert to the same type, identity Transpose, one-input Concat, + 0, * 1."""
    fired = rewrite(model, [_noop_shape, convert_to_same_type, identity_transpose, single_input_concat,
                            add_zero, multiply_one])
    note_fired(sum(fired.values()))
    return model


_RESHAPES = ("Reshape", "Squeeze", "Unsqueeze")


@rule(Pattern(_RESHAPES, Pattern(_RESHAPES, Pattern(None, name="x"), name="inner"), name="outer",
              pred=lambda n: n.output(0).partial_shape.is_static))
def reshape_chain(m) -> Output | None:  # noqa: ANN001
    outer = m["outer"]
    shape = np.asarray(outer.output(0).partial_shape.to_shape(), dtype=np.int64)
    new = ops.reshape(m.port("x"), ops.constant(shape), False, name=outer.friendly_name)
    return new.output(0)


@register_pass("merge_reshapes", level=1)
def merge_reshapes(model: Model) -> Model:
    """Collapse chains of Reshape/Squeeze/Unsqueeze with a static result into one Reshape."""
    note_fired(sum(rewrite(model, [reshape_chain]).values()))
    return model


def _const_perm(n: Node) -> bool:
    return isinstance(n.input_values()[1].node, Constant)


@rule(Pattern("Transpose", Pattern("Transpose", Pattern(None, name="x"), name="inner", pred=_const_perm),
              name="outer", pred=_const_perm))
def transpose_chain(m) -> Output | None:  # noqa: ANN001
    p1 = m["inner"].input_values()[1].node.data.reshape(-1).astype(np.int64)
    p2 = m["outer"].input_values()[1].node.data.reshape(-1).astype(np.int64)
    perm = p1[p2]
    if np.array_equal(perm, np.arange(perm.size)):
        return m.port("x")
    return ops.transpose(m.port("x"), ops.constant(perm), name=m["outer"].friendly_name).output(0)


@register_pass("merge_transposes", level=1)
def merge_transposes(model: Model) -> Model:
    """Compose chains of constant-permutation Transposes (cancelling pairs vanish)."""
    note_fired(sum(rewrite(model, [transpose_chain]).values()))
    return model
