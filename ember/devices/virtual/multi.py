"""MULTI: compile the whole model on several devices and spread inferences across them.

``MULTI:CPU,REFERENCE`` needs every listed device to run the whole model. Each inference goes
to the device with the fewest inferences in flight (ties: the earlier listed). The compiled
model gets one stream per device and stream of each device, so that concurrent requests
(``AsyncInferQueue``, several threads) keep all devices busy.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.devices.base import Device, Executable
from ember.devices.virtual.common import describe, load, priorities, unsupported
from ember.errors import EmberError
from ember.graph.model import Model

if TYPE_CHECKING:
    from ember.runtime.properties import CompileConfig  # the interface's type only: devices read its fields


class MultiExecutable:
    """Dispatches each ``run`` to the least busy device."""

    thread_safe = True
    exec_type = "multi"

    def __init__(self, names: list[str], exes: list[Any], locks: list[threading.Lock | None], streams: int):
        self.execution_devices = names
        self._exes = exes
        self._locks = locks
        self._busy = [0] * len(exes)
        self._lock = threading.Lock()
        self.runs = dict.fromkeys(names, 0)  # inferences each device ran (for tests and reports)
        self.preferred_streams = streams

    def run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None = None) -> list[np.ndarray]:
        with self._lock:
            i = min(range(len(self._exes)), key=lambda k: (self._busy[k], k))
            self._busy[i] += 1
            self.runs[self.execution_devices[i]] += 1
        try:
            lock = self._locks[i]
            with lock if lock is not None else nullcontext():
                return self._exes[i].run(inputs, profile)
        finally:
            with self._lock:
                self._busy[i] -= 1


class MultiDevice(Device):
    name = "MULTI"
    full_name = "ember MULTI (spreads requests across devices)"
    virtual = True

    def compile(self, model: Model, config: CompileConfig) -> Executable:
        names = list(dict.fromkeys(priorities(config, "MULTI", "MULTI:CPU,REFERENCE")))
        exes, locks = [], []
        per_device = max(1, config.num_streams or 1)
        for name in names:
            dev = load(name, "MULTI")
            missing = unsupported(dev, model, config)
            if missing:
                raise EmberError(f"ember: MULTI: {name} cannot run {describe(missing)} of '{model.friendly_name}'; "
                                 "every device of MULTI must run the whole model (HETERO splits models)")
            exe = dev.compile(dev.transform(model.clone(), config), config)
            exes.append(exe)
            safe = bool(getattr(exe, "thread_safe", dev.thread_safe_executables))
            locks.append(None if safe else threading.Lock())
        return MultiExecutable(names, exes, locks, per_device * len(names))

    def query_model(self, model: Model, config: CompileConfig) -> dict[str, str]:
        names = priorities(config, "MULTI", "MULTI:CPU,REFERENCE")
        common: set[str] | None = None
        for name in names:
            ok = set(load(name, "MULTI").query_model(model, config))
            common = ok if common is None else common & ok
        return {n: ",".join(names) for n in sorted(common or ())}

    def supported_nodes(self, model: Model) -> set[str]:
        return set()

    def export_model(self, executable: Executable) -> bytes | None:
        return None
