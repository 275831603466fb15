"""The op registry: op classes by IR type name and version, and opset builder functions.

Op modules register themselves with ``@register_op`` and ``@builder``; nothing keeps a
central list. ``ember.ops`` hands this registry a loader that imports its modules (this layer
never imports the op layer). A miss raises an error naming what was asked for and what exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from ember.errors import EmberError, UnsupportedOpError

T = TypeVar("T")

_OPS: dict[str, dict[int, type]] = {}
_BUILDERS: dict[str, Callable[..., Any]] = {}
_loaded = False


def opset_number(version: str) -> int:
    """``"opset8"`` -> 8. The IR's ``version`` attribute names the opset an op version came in;
    ember's own ops (no OpenVINO counterpart) use ``"ember_opsetN"``."""
    if version.startswith("ember_"):
        version = version[len("ember_"):]
    if not version.startswith("opset") or not version[5:].isdigit():
        raise UnsupportedOpError(f"ember: unknown op version '{version}' (expected 'opsetN')")
    return int(version[5:])


def register_op(cls: T) -> T:
    """Class decorator: make an op class known by its ``type_name`` and ``version``."""
    op = cast(Any, cls)  # an op class: it has ``type_name`` and ``version``
    _OPS.setdefault(op.type_name, {})[opset_number(op.version)] = op
    return cls


def builder(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Function decorator: expose ``fn`` as ``ember.opset.<fn name>``. A second, different
    function with the same name is refused (it would silently replace the first)."""
    name = fn.__name__.rstrip("_")
    other = _BUILDERS.get(name)
    if other is not None and (other.__module__, other.__qualname__) != (fn.__module__, fn.__qualname__):
        raise EmberError(f"ember: two opset builders named '{name}': {other.__module__}.{other.__qualname__} "
                         f"and {fn.__module__}.{fn.__qualname__}")
    _BUILDERS[name] = fn
    return fn


_LOADERS: list[Callable[[], None]] = []


def add_op_loader(load: Callable[[], None]) -> None:
    """Register a function that imports op modules (``ember.ops`` registers its own when it is
    imported), so this layer never imports the op layer itself."""
    if load not in _LOADERS:
        _LOADERS.append(load)


def load_ops() -> None:
    """Run the op loaders once, so that all ops are registered."""
    global _loaded
    if _loaded:
        return
    import ember.graph.core_ops  # noqa: F401

    if not _LOADERS:  # nothing registered yet (``ember.ops`` not imported): try again later
        return
    _loaded = True
    for load in list(_LOADERS):
        load()


def get_op(type_name: str, version: str = "opset1", *, where: str = "") -> type:
    """The op class for ``type_name`` as opset ``version`` defines it.

    An op that first appeared in opset N is found for any requested opset >= N; the newest
    version not newer than the one asked for wins.
    """
    load_ops()
    versions = _OPS.get(type_name)
    if not versions:
        near = ", ".join(sorted(_OPS))
        raise UnsupportedOpError(
            f"ember: unknown op type '{type_name}' ({version}){where}; supported: {near}")
    n = opset_number(version)
    fitting = [v for v in versions if v <= n]
    if not fitting:
        have = ", ".join(f"opset{v}" for v in sorted(versions))
        raise UnsupportedOpError(
            f"ember: op '{type_name}' version {version}{where} is not supported; ember has {have}")
    return versions[max(fitting)]


def op_types() -> dict[str, list[str]]:
    """Every registered op type with its versions."""
    load_ops()
    return {t: [f"opset{v}" for v in sorted(vs)] for t, vs in sorted(_OPS.items())}


def get_builder(name: str) -> Callable[..., Any]:
    load_ops()
    fn = _BUILDERS.get(name)
    if fn is None:
        raise AttributeError(f"ember.opset has no builder '{name}'; available: {', '.join(sorted(_BUILDERS))}")
    return fn


def builders() -> dict[str, Callable[..., Any]]:
    load_ops()
    return dict(_BUILDERS)
