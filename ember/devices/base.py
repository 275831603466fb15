"""The device plugin interface and registry.

A device turns a Model into an ``Executable`` that maps input arrays to output arrays.
Devices register a factory by name; ``get_device`` creates each device once, lazily, so that
importing ember imports no device code.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ember.errors import EmberError
from ember.graph.model import Model


class Executable(Protocol):
    """A compiled model on one device. ``run`` may be called from several threads at once
    only if the device says so (``Device.thread_safe_executables``); otherwise each infer
    request gets its own executable through ``Device.compile``/``clone``."""

    def run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None = None) -> list[np.ndarray]:
        ...


class Device:
    """Base class of device plugins."""

    name: str = ""
    full_name: str = ""
    #: whether one Executable may run concurrently on several threads
    thread_safe_executables: bool = True

    def compile(self, model: Model, config: Mapping[str, Any]) -> Executable:
        raise NotImplementedError

    def supported_nodes(self, model: Model) -> set[str]:
        """Friendly names of the nodes this device can run (``Core.query_model``)."""
        raise NotImplementedError

    def capabilities(self) -> list[str]:
        return ["FP32"]


_FACTORIES: dict[str, str] = {
    # name -> "module:attribute" of a zero-argument factory, imported on first use
    "REFERENCE": "ember.devices.reference.device:ReferenceDevice",
}
_INSTANCES: dict[str, Device] = {}
_LOCK = threading.Lock()


def register_device(name: str, factory: str | Callable[[], Device]) -> None:
    """Register a device under ``name``; ``factory`` is a callable or ``"module:attr"``."""
    if callable(factory):
        with _LOCK:
            _INSTANCES.pop(name, None)
        _CALLABLES[name] = factory
    else:
        _FACTORIES[name] = factory


_CALLABLES: dict[str, Callable[[], Device]] = {}


def device_names() -> list[str]:
    return sorted(set(_FACTORIES) | set(_CALLABLES))


def get_device(name: str) -> Device:
    """The device plugin called ``name`` (upper-case, without ``:`` options)."""
    with _LOCK:
        dev = _INSTANCES.get(name)
        if dev is not None:
            return dev
        if name in _CALLABLES:
            dev = _CALLABLES[name]()
        elif name in _FACTORIES:
            mod, _, attr = _FACTORIES[name].partition(":")
            dev = getattr(importlib.import_module(mod), attr)()
        else:
            raise EmberError(f"ember: unknown device '{name}'; available: {', '.join(device_names())}")
        _INSTANCES[name] = dev
        return dev
