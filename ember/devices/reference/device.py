"""The REFERENCE device plugin: runs any Model with the ops' numpy kernels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ember.devices.base import Device
from ember.devices.reference.executor import ReferenceExecutor
from ember.graph.model import Model
from ember.graph.registry import get_op

if TYPE_CHECKING:
    from ember.runtime.properties import CompileConfig  # the interface's type only: devices read its fields


class ReferenceDevice(Device):
    name = "REFERENCE"
    full_name = "ember numpy reference"
    thread_safe_executables = True
    auto_rank = 100  # the executable spec: AUTO picks it only when nothing faster runs the model

    def compile(self, model: Model, config: CompileConfig) -> ReferenceExecutor:
        return ReferenceExecutor(model)

    def supported_nodes(self, model: Model) -> set[str]:
        out = set()
        for n in model.get_ordered_ops():
            try:
                get_op(n.type_name, n.version)
                out.add(n.friendly_name)
            except Exception:  # noqa: BLE001 - unsupported simply means "not in the set"
                pass
        return out

    def capabilities(self) -> list[str]:
        return ["FP32", "FP16", "BF16", "INT8", "U8", "BIN", "DYNAMIC"]
