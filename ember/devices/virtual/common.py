"""What the virtual devices share: device lists and "does this device run the whole model"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ember.devices.base import Device, device_names, get_device
from ember.errors import EmberError
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model

if TYPE_CHECKING:
    from ember.runtime.properties import CompileConfig  # the interface's type only: devices read its fields
from ember.graph.node import Node

STRUCTURAL = (Parameter, Constant, Result)


def priorities(config: CompileConfig, who: str, example: str) -> tuple[str, ...]:
    """The device list a virtual device was given (``HETERO:CPU,REFERENCE``), or an error."""
    listed = config.device_priorities
    if not listed:
        raise EmberError(f"ember: {who} needs a device list, e.g. '{example}' "
                         "(or the MULTI_DEVICE_PRIORITIES property)")
    return listed


def concrete_devices() -> list[str]:
    """Registered non-virtual devices, best first (by ``auto_rank``, then name)."""
    out = []
    for name in device_names():
        try:
            dev = get_device(name)
        except Exception:  # noqa: BLE001 - a plugin that fails to load is skipped
            continue
        if not dev.virtual:
            out.append((dev.auto_rank, name))
    return [n for _, n in sorted(out)]


def load(name: str, who: str) -> Device:
    if name not in device_names():
        raise EmberError(f"ember: {who}: unknown device '{name}'; available: {', '.join(concrete_devices())}")
    dev = get_device(name)
    if dev.virtual:
        raise EmberError(f"ember: {who}: '{name}' is itself a virtual device; list real devices")
    return dev


def compute_nodes(model: Model) -> list[Node]:
    return [n for n in model.get_ordered_ops() if not isinstance(n, STRUCTURAL)]


def unsupported(dev: Device, model: Model, config: CompileConfig) -> list[Node]:
    """The model's compute nodes that ``dev`` cannot run."""
    ok = set(dev.query_model(model, config))
    return [n for n in compute_nodes(model) if n.friendly_name not in ok]


def describe(nodes: list[Node], limit: int = 5) -> str:
    types = sorted({n.type_name for n in nodes})
    names = ", ".join(f"'{n.friendly_name}'" for n in nodes[:limit]) + (" ..." if len(nodes) > limit else "")
    return f"{len(nodes)} op(s) of type {', '.join(types)} ({names})"
