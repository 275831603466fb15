"""AUTO: compile on the best device that runs the whole model.

Candidates are the listed devices (``AUTO:CPU,REFERENCE``, in that order) or every registered
device, fastest first (``Device.auto_rank``: CPU before REFERENCE). The first candidate that
supports every op of the model wins; the choice is logged at INFO. Passing over a candidate
is a *fallback*: logged as a warning, or an error with ``ALLOW_FALLBACK=False``. With the
CUMULATIVE_THROUGHPUT hint and several capable devices, AUTO compiles on MULTI over all of
them.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ember.devices.base import Device, Executable, get_device
from ember.devices.virtual.common import concrete_devices, describe, load, unsupported
from ember.errors import EmberError
from ember.graph.model import Model

if TYPE_CHECKING:
    from ember.runtime.properties import CompileConfig  # the interface's type only: devices read its fields

log = logging.getLogger("ember.devices")


class AutoDevice(Device):
    name = "AUTO"
    full_name = "ember AUTO (chooses a device per model)"
    virtual = True

    def select(self, model: Model, config: CompileConfig) -> tuple[str, dict[str, Any]]:
        """``(device name, ``CompileConfig`` field updates)`` to compile ``model`` with."""
        listed = config.device_priorities
        candidates = list(listed) or concrete_devices()
        capable: list[str] = []
        passed_over: list[tuple[str, str]] = []
        for name in candidates:
            try:
                dev = load(name, "AUTO")
                missing = unsupported(dev, model, config)
            except EmberError as e:
                passed_over.append((name, str(e).removeprefix("ember: ")))
                continue
            if missing:
                passed_over.append((name, f"{name} does not support {describe(missing)}"))
                continue
            capable.append(name)
        if not capable:
            raise EmberError(f"ember: AUTO found no device that runs model '{model.friendly_name}': "
                             + "; ".join(r for _, r in passed_over))
        mode = str(config.performance_mode)
        if mode == "CUMULATIVE_THROUGHPUT" and len(capable) > 1:
            log.info("ember: AUTO runs '%s' on MULTI:%s (CUMULATIVE_THROUGHPUT)", model.friendly_name,
                     ",".join(capable))
            return "MULTI", {"device_priorities": tuple(capable)}
        choice = capable[0]
        skipped = [r for n, r in passed_over if candidates.index(n) < candidates.index(choice)]
        if skipped:
            msg = (f"ember: AUTO fell back to {choice} for model '{model.friendly_name}': "
                   + "; ".join(skipped))
            if not config.allow_fallback:
                raise EmberError(msg + " (ALLOW_FALLBACK is off)")
            log.warning(msg)
        else:
            log.info("ember: AUTO chose %s for model '%s' (%s hint; candidates %s)", choice, model.friendly_name,
                     mode, ",".join(candidates))
        return choice, {}

    def compile(self, model: Model, config: CompileConfig) -> Executable:
        choice, updates = self.select(model, config)
        dev = get_device(choice)
        merged = replace(config, **updates)
        return dev.compile(dev.transform(model.clone(), merged), merged)

    def query_model(self, model: Model, config: CompileConfig) -> dict[str, str]:
        choice, updates = self.select(model, config)
        return get_device(choice).query_model(model, replace(config, **updates))

    def supported_nodes(self, model: Model) -> set[str]:
        out: set[str] = set()
        for name in concrete_devices():
            out |= get_device(name).supported_nodes(model)
        return out

    def capabilities(self) -> list[str]:
        caps: list[str] = []
        for name in concrete_devices():
            caps += [c for c in get_device(name).capabilities() if c not in caps]
        return caps
