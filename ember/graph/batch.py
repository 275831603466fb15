"""``get_batch`` / ``set_batch``: the batch dimension of a model, found through its inputs'
layouts (the ``N`` axis), as OpenVINO's ``openvino.get_batch`` / ``openvino.set_batch``."""

from __future__ import annotations

from typing import Any

from ember.errors import EmberError
from ember.graph.model import Model
from ember.graph.shape import Dimension, PartialShape


def _batch_axes(model: Model) -> list[tuple[int, int]]:
    """``(input index, axis)`` of every input whose layout names ``N``."""
    found = []
    for i, param in enumerate(model.get_parameters()):
        layout = param.get_layout()
        if layout is not None and not layout.empty and layout.has_name("N"):
            found.append((i, layout.get_index_by_name("N")))
    if not found:
        names = ", ".join(p.friendly_name for p in model.get_parameters())
        raise EmberError(f"ember: no input of the model has a layout with a batch axis 'N' (inputs: {names}); "
                         "set one first, e.g. model.get_parameters()[0].set_layout(ember.Layout('NCHW'))")
    return found


def get_batch(model: Model) -> Dimension:
    """The batch dimension shared by the inputs whose layout has ``N`` (an error when they
    disagree or none has one)."""
    batch: Dimension | None = None
    for i, axis in _batch_axes(model):
        shape = model.inputs[i].partial_shape
        d = shape[axis] if shape.rank_is_static else Dimension.dynamic()
        if batch is not None and not batch.compatible(d):
            raise EmberError(f"ember: the inputs disagree on the batch: {batch} and {d} (input {i})")
        batch = d if batch is None else batch.merge(d)
    assert batch is not None
    return batch


def set_batch(model: Model, batch_size: Any = -1) -> None:
    """Set the ``N`` axis of every input whose layout has one to ``batch_size`` (an int, -1 for
    dynamic, or a Dimension) and re-infer the model; inputs without ``N`` keep their shape."""
    d = batch_size if isinstance(batch_size, Dimension) else None
    if d is None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise EmberError(f"ember: set_batch takes an int or a Dimension, got {type(batch_size).__name__}")
        if batch_size == 0 or batch_size < -1:
            raise EmberError(f"ember: the batch must be positive (or -1 for dynamic), got {batch_size}")
        d = Dimension() if batch_size == -1 else Dimension(batch_size)
    shapes: dict[int, PartialShape] = {}
    for i, axis in _batch_axes(model):
        shape = model.inputs[i].partial_shape
        if not shape.rank_is_static:
            raise EmberError(f"ember: input {i} has a dynamic rank; its batch axis cannot be set")
        dims = list(shape)
        dims[axis] = d
        shapes[i] = PartialShape(dims)
    model.reshape(shapes)
