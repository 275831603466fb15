"""The TFLite converter registry: ``@converter("CONV_2D")`` registers ``fn(ctx)`` for a builtin
op, ``@converter("Convolution2DTransposeBias", custom=True)`` for a custom op code."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from typing import Any

Converter = Callable[[Any], None]

_BUILTIN: dict[str, Converter] = {}
_CUSTOM: dict[str, Converter] = {}
_loaded = False


def converter(names: str | Sequence[str], custom: bool = False) -> Callable[[Converter], Converter]:
    """Register ``fn(ctx)`` for the builtin ops (or custom op codes) ``names``."""
    table = _CUSTOM if custom else _BUILTIN

    def register(fn: Converter) -> Converter:
        for name in [names] if isinstance(names, str) else names:
            if name in table:
                raise ValueError(f"TFLite converter for {name} registered twice")
            table[name] = fn
        return fn

    return register


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import ember.frontends.tflite.ops as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")


def find_converter(op: str, custom: bool) -> Converter | None:
    _load()
    return (_CUSTOM if custom else _BUILTIN).get(op)


def supported_ops() -> dict[str, list[str]]:
    """``{"builtin": [...], "custom": [...]}``: every TFLite op ember converts."""
    _load()
    return {"builtin": sorted(_BUILTIN), "custom": sorted(_CUSTOM)}
