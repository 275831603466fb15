"""Turning an out-of-memory failure while compiling into an error that names the tensor."""

from __future__ import annotations

from ember.errors import EmberError
from ember.graph.model import Model


def largest_tensor(model: Model) -> tuple[str, list[int], int] | None:
    """``(node name, shape, bytes)`` of the largest static output in ``model``, or None."""
    best: tuple[str, list[int], int] | None = None
    for node in model.get_ordered_ops():
        for k, out in enumerate(node.outputs()):
            shape = out.partial_shape
            if not shape.is_static or out.element_type.is_dynamic:
                continue
            dims = [int(d) for d in shape.to_shape()]
            count = 1
            for d in dims:
                count *= d
            size = -(-count * out.element_type.bitwidth // 8)
            if best is None or size > best[2]:
                best = (f"{node.type_name} '{node.friendly_name}'" + (f" output {k}" if k else ""), dims, size)
    return best


def out_of_memory(model: Model, device: str, what: str = "compile") -> EmberError:
    """The error to raise when ``device`` ran out of memory to ``what`` ``model``."""
    big = largest_tensor(model)
    hint = f"; its largest tensor is {big[0]} of shape {big[1]} ({big[2]} bytes)" if big else ""
    return EmberError(f"ember: {device} ran out of memory to {what} '{model.friendly_name}'{hint}; "
                      "use smaller static shapes, or dynamic ones (the REFERENCE device computes lazily)")
