"""The converter registry: which function converts an ONNX op of a domain at an opset.

A converter is registered with ``@converter("Softmax", since=13)``; several can share an op
type with disjoint opset ranges (``since`` .. ``until``, inclusive). An ONNX op without a
converter whose schema defines a function body is expanded into that body (as OpenVINO's ONNX
frontend expands them), so it is supported too.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import onnx

Converter = Callable[..., Any]


@dataclass(frozen=True)
class ConverterSpec:
    """One registered converter: an op type of a domain over an opset range."""

    op_type: str
    domain: str
    since: int
    until: int | None
    fn: Converter

    def covers(self, opset: int) -> bool:
        return self.since <= opset and (self.until is None or opset <= self.until)


_CONVERTERS: dict[tuple[str, str], list[ConverterSpec]] = {}
_loaded = False


def normalize_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def converter(op_types: str | Sequence[str], since: int = 1, until: int | None = None,
              domain: str = "") -> Callable[[Converter], Converter]:
    """Register ``fn(ctx) -> outputs`` for ``op_types`` of ``domain`` at opsets since..until."""
    names = [op_types] if isinstance(op_types, str) else list(op_types)
    dom = normalize_domain(domain)

    def register(fn: Converter) -> Converter:
        for name in names:
            specs = _CONVERTERS.setdefault((dom, name), [])
            for s in specs:
                overlap = s.since <= (until if until is not None else 1 << 30) and \
                    since <= (s.until if s.until is not None else 1 << 30)
                if overlap:
                    raise ValueError(f"converter for {name} opsets {since}..{until} overlaps {s.since}..{s.until}")
            specs.append(ConverterSpec(name, dom, since, until, fn))
        return fn

    return register


def load_converters() -> None:
    """Import every module of ``ember.frontends.onnx.ops`` once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import ember.frontends.onnx.ops as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")


def find_converter(domain: str, op_type: str, opset: int) -> Converter | None:
    """The converter for ``op_type`` at ``opset``, or None."""
    load_converters()
    for s in _CONVERTERS.get((normalize_domain(domain), op_type), ()):
        if s.covers(opset):
            return s.fn
    return None


def schema(domain: str, op_type: str, opset: int) -> Any:
    """onnx's OpSchema for the op as of ``opset``, or None when onnx does not know it."""
    try:
        return onnx.defs.get_schema(op_type, opset, normalize_domain(domain))
    except Exception:  # noqa: BLE001 - onnx raises SchemaError
        return None


def function_version(sch: Any, opset: int) -> tuple[int, bool] | None:
    """``(function opset version, context dependent)`` of a schema's function body, if any."""
    plain = [v for v in sch.function_opset_versions if v <= opset] or list(sch.function_opset_versions)
    ctx = [v for v in sch.context_dependent_function_opset_versions if v <= opset] or \
        list(sch.context_dependent_function_opset_versions)
    if plain:
        return max(v for v in plain if v <= opset) if any(v <= opset for v in plain) else min(plain), False
    if ctx:
        return max(v for v in ctx if v <= opset) if any(v <= opset for v in ctx) else min(ctx), True
    return None


def is_supported(domain: str, op_type: str, opset: int) -> bool:
    """Whether a converter or an ONNX function body exists for the op at ``opset``."""
    if find_converter(domain, op_type, opset) is not None:
        return True
    sch = schema(domain, op_type, opset)
    return sch is not None and function_version(sch, opset) is not None


def supported_ops() -> dict[str, list[str]]:
    """Every op type with a converter, by domain (``""`` is the default ONNX domain)."""
    load_converters()
    out: dict[str, list[str]] = {}
    for (dom, name) in sorted(_CONVERTERS):
        out.setdefault(dom, []).append(name)
    return out
