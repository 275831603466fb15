"""Builder functions for every op, as ``openvino.runtime.opsetN`` has them.

``ember.opset.convolution(...)``, ``ember.opset.parameter(...)``; ``ember.opset8`` and the
other numbered aliases resolve to the same builders (each builds the newest op version ember
has, which is what new code written against any opset expects).
"""

from __future__ import annotations

from typing import Any

from ember.graph.registry import builders, get_builder


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return get_builder(name)


def __dir__() -> list[str]:
    return sorted(builders())
