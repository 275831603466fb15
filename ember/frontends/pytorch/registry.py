"""The converter registry: which function converts an ATen op (or a Python operator on sizes).

A converter is registered with ``@converter("aten.add", "aten.sub")`` for every overload of
those ops, or with a full name (``"aten.div.Tensor_mode"``) for one overload; the full name
wins. Both paths (torch.export graphs and TorchScript graphs) name ops the same way
(``aten::add`` in TorchScript becomes ``aten.add``) and hand the converter the op's arguments
by their schema names, so one converter serves both.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

Converter = Callable[..., Any]

_CONVERTERS: dict[str, Converter] = {}
_loaded = False


def converter(*names: str) -> Callable[[Converter], Converter]:
    """Register ``fn(call) -> Output | tuple`` for ops ``names`` (``aten.op`` or ``aten.op.overload``)."""

    def register(fn: Converter) -> Converter:
        for name in names:
            if name in _CONVERTERS:
                raise ValueError(f"a converter for {name} is already registered")
            _CONVERTERS[name] = fn
        return fn

    return register


def load_converters() -> None:
    """Import every module of ``ember.frontends.pytorch.ops`` once."""
    global _loaded
    if _loaded:
        return
    import ember.frontends.pytorch.ops as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    _loaded = True


def find_converter(op: str, overload: str = "") -> Converter | None:
    """The converter for ``op`` (``aten.add``) at ``overload`` (``Tensor``), or None."""
    load_converters()
    if overload:
        fn = _CONVERTERS.get(f"{op}.{overload}")
        if fn is not None:
            return fn
    return _CONVERTERS.get(op)


def supported_ops() -> list[str]:
    """Every op name with a converter (``aten.add``, ``aten.div.Tensor_mode``, ``operator.mul`` ...)."""
    load_converters()
    return sorted(_CONVERTERS)
