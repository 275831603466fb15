"""``ov.layout_helpers``: the layout of model inputs and outputs and the index of named axes,
as ``openvino.layout_helpers``.

    import ember as ov
    ov.layout_helpers.set_layout(model.input(0), ov.Layout("NCHW"))
    ov.layout_helpers.height_idx(ov.layout_helpers.get_layout(model.input(0)))  # 2
"""

from __future__ import annotations

from typing import Any

from ember.errors import EmberError
from ember.graph.layout import Layout


def _as_layout(layout: Any) -> Layout:
    return layout if isinstance(layout, Layout) else Layout(str(layout))


def _index(layout: Any, name: str) -> int:
    lay = _as_layout(layout)
    if not lay.has_name(name):
        raise EmberError(f"ember: layout {lay} has no '{name}' axis")
    return lay.get_index_by_name(name)


def get_layout(port: Any) -> Layout:
    """The layout set on a model input (its Parameter) or output (its Result); empty if none."""
    node = port.get_node() if hasattr(port, "get_node") else getattr(port, "node", port)
    getter = getattr(node, "get_layout", None)
    layout = getter() if getter is not None else None
    return layout if layout is not None else Layout()


def set_layout(port: Any, layout: Any) -> None:
    """Set the layout of a model input (its Parameter) or output (its Result)."""
    node = port.get_node() if hasattr(port, "get_node") else getattr(port, "node", port)
    setter = getattr(node, "set_layout", None)
    if setter is None:
        raise EmberError(f"ember: {node} is not a model input or output; layouts live on Parameters and Results")
    setter(_as_layout(layout))


def has_batch(layout: Any) -> bool:
    return _as_layout(layout).has_name("N")


def has_channels(layout: Any) -> bool:
    return _as_layout(layout).has_name("C")


def has_depth(layout: Any) -> bool:
    return _as_layout(layout).has_name("D")


def has_height(layout: Any) -> bool:
    return _as_layout(layout).has_name("H")


def has_width(layout: Any) -> bool:
    return _as_layout(layout).has_name("W")


def batch_idx(layout: Any) -> int:
    """Index of the batch axis ``N`` (negative when the layout counts from the end, as ``...C``)."""
    return _index(layout, "N")


def channels_idx(layout: Any) -> int:
    return _index(layout, "C")


def depth_idx(layout: Any) -> int:
    return _index(layout, "D")


def height_idx(layout: Any) -> int:
    return _index(layout, "H")


def width_idx(layout: Any) -> int:
    return _index(layout, "W")


__all__ = ["batch_idx", "channels_idx", "depth_idx", "get_layout", "has_batch", "has_channels", "has_depth",
           "has_height", "has_width", "height_idx", "set_layout", "width_idx"]
