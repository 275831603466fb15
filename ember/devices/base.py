"""The device plugin interface and registry.

A device turns a Model into an ``Executable`` that maps input arrays to output arrays.
Devices register a factory by name; ``get_device`` creates each device once, lazily, so that
importing ember imports no device code.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ember.errors import EmberError
from ember.graph.model import Model

if TYPE_CHECKING:
    from ember.runtime.properties import CompileConfig  # the interface's type only: devices read its fields


class Executable(Protocol):
    """A compiled model on one device. The runtime gives each stream its own executable and
    never runs one on two threads at once, unless the device says its executables are thread
    safe (``Device.thread_safe_executables``): then all streams share one. Extra streams get
    ``executable.clone()`` when it exists, else another ``Device.compile``.

    Optional attributes the runtime reads: ``thread_safe`` (overrides the device's flag),
    ``execution_devices`` (list of device names, for EXECUTION_DEVICES), ``preferred_streams``
    (a stream count used when neither NUM_STREAMS nor a throughput hint asks for one),
    ``inference_precision`` (the ``Type`` it computes in, reported as the compiled model's
    INFERENCE_PRECISION_HINT instead of the hint it was given).
    ``run`` fills ``profile`` (``{node friendly name: seconds}``) when it is not None.
    """

    def run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None = None) -> list[np.ndarray]:
        ...


class Device:
    """Base class of device plugins.

    A plugin implements ``compile`` and ``supported_nodes``; everything else has a default.
    The runtime calls, in order: ``transform`` (the device's own graph passes, on a copy of
    the user's model), ``compile``, and, with a model cache, ``export_model`` /
    ``import_model``. Properties arrive as the typed ``CompileConfig`` (OpenVINO's string keys
    stop at ``Core.compile_model``): ``config.effective_precision`` is the ``ember.Type`` to
    compute in, ``config.performance_mode`` a ``PerformanceMode``, ``config.num_streams`` the
    resolved stream count and ``config.inference_num_threads`` the threads each stream may use;
    device-specific properties (``extra_properties``) are read with ``config.value_of(key)``.

    A virtual device that only picks another device (AUTO) defines
    ``select(model, config) -> (device name, CompileConfig field updates)``; the runtime then compiles on
    the chosen device, so that the model cache and the stream plan apply to it.
    """

    name: str = ""
    full_name: str = ""
    #: whether one Executable may run concurrently on several threads
    thread_safe_executables: bool = True
    #: AUTO, HETERO, MULTI: not a device of its own (not in ``Core.available_devices``)
    virtual: bool = False
    #: AUTO tries devices in increasing rank (REFERENCE, the slow spec, is last)
    auto_rank: int = 50
    #: an upper bound on streams (None: as many as the hint asks)
    max_streams: int | None = None
    #: device-specific properties and their defaults (accepted by Core.set_property/compile_model)
    extra_properties: Mapping[str, Any] = {}

    def compile(self, model: Model, config: CompileConfig) -> Executable:
        raise NotImplementedError

    def supported_nodes(self, model: Model) -> set[str]:
        """Friendly names of the nodes this device can run (``Core.query_model``)."""
        raise NotImplementedError

    def query_model(self, model: Model, config: CompileConfig) -> dict[str, str]:
        """``{node friendly name: device name}`` for the nodes this device would run."""
        return {n: self.name for n in self.supported_nodes(model)}

    def capabilities(self) -> list[str]:
        return ["FP32"]

    def available_ids(self) -> list[str]:
        """``AVAILABLE_DEVICES``: the ids of the physical devices behind this plugin."""
        return [""]

    def transform(self, model: Model, config: CompileConfig) -> Model:
        """The device's graph passes; gets a private copy of the model (may change it in place)."""
        return model

    def export_model(self, executable: Executable) -> bytes | None:
        """Device data to store in the model cache besides the transformed IR (``b""``: none,
        the IR is all ``import_model`` needs); ``None``: this executable cannot be cached."""
        return b""

    def import_model(self, model: Model, blob: bytes, config: CompileConfig) -> Executable:
        """Rebuild an executable from the cached transformed IR and ``export_model``'s data."""
        return self.compile(model, config)

    def cache_fingerprint(self) -> str:
        """What, besides the model and config, makes a cached artefact valid (e.g. CPU features)."""
        return f"{self.name}|{self.full_name}"


_FACTORIES: dict[str, str] = {
    # name -> "module:attribute" of a zero-argument factory, imported on first use
    "REFERENCE": "ember.devices.reference.device:ReferenceDevice",
    "CPU": "ember.devices.cpu.device:CPUDevice",
    "AUTO": "ember.devices.virtual.auto:AutoDevice",
    "HETERO": "ember.devices.virtual.hetero:HeteroDevice",
    "MULTI": "ember.devices.virtual.multi:MultiDevice",
}
_INSTANCES: dict[str, Device] = {}
_LOCK = threading.Lock()


def register_device(name: str, factory: str | Callable[[], Device]) -> None:
    """Register a device under ``name``; ``factory`` is a callable or ``"module:attr"``."""
    with _LOCK:
        _INSTANCES.pop(name, None)
    if callable(factory):
        _CALLABLES[name] = factory
    else:
        _CALLABLES.pop(name, None)
        _FACTORIES[name] = factory


_CALLABLES: dict[str, Callable[[], Device]] = {}


def unregister_device(name: str) -> None:
    """Forget device ``name`` (tests register fake devices and remove them again)."""
    with _LOCK:
        _INSTANCES.pop(name, None)
    _CALLABLES.pop(name, None)
    _FACTORIES.pop(name, None)


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
