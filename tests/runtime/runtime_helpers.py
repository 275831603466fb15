"""Small models and fake devices shared by the runtime tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

import ember.opset as ops
from ember.devices.base import Device
from ember.devices.reference.executor import ReferenceExecutor
from ember.graph.model import Model


def small_model(shape: Sequence[Any] = (2, 3), name: str = "small") -> Model:
    """relu(x + 1) * 2 - x: Add, Relu, Multiply, Subtract."""
    x = ops.parameter(list(shape), np.float32, name="x")
    a = ops.add(x, ops.constant(np.float32(1.0)), name="add")
    r = ops.relu(a, name="relu")
    m = ops.multiply(r, ops.constant(np.float32(2.0)), name="mul")
    s = ops.subtract(m, x, name="sub")
    res = ops.result(s, name="y")
    res.output(0).set_names({"y"}) if not res.output(0).names else None
    return Model([res], [x], name)


def small_expected(x: np.ndarray) -> np.ndarray:
    return (np.maximum(x + 1, 0) * 2 - x).astype(np.float32)


def two_input_model() -> Model:
    a = ops.parameter([2, 2], np.float32, name="a")
    b = ops.parameter([2, 2], np.float32, name="b")
    s = ops.add(a, b, name="sum")
    p = ops.multiply(a, b, name="prod")
    return Model([ops.result(s, name="s"), ops.result(p, name="p")], [a, b], "two")


class FakeDevice(Device):
    """Runs only ``types`` (plus Parameter/Const/Result) with the reference kernels, and counts.

    ``compile`` refuses a model with any other op, so a test sees that a virtual device
    really split or chose correctly."""

    def __init__(self, name: str, types: Iterable[str], rank: int = 50, thread_safe: bool = True,
                 compile_work: int = 0) -> None:
        self.name = name
        self.full_name = f"fake {name}"
        self.types = set(types) | {"Parameter", "Const", "Result"}
        self.auto_rank = rank
        self.thread_safe_executables = thread_safe
        self.compile_work = compile_work
        self.compiled: list[Model] = []
        self.imported: list[Model] = []
        self.runs = 0

    def supported_nodes(self, model: Model) -> set[str]:
        return {n.friendly_name for n in model.get_ordered_ops() if n.type_name in self.types}

    def compile(self, model: Model, config: Mapping[str, Any]) -> Any:
        bad = [n.type_name for n in model.get_ordered_ops() if n.type_name not in self.types]
        if bad:
            raise AssertionError(f"{self.name} was given ops it does not support: {bad}")
        if self.compile_work:  # stands for an expensive code generator
            rng = np.random.default_rng(0)
            a = rng.standard_normal((200, 200))
            for _ in range(self.compile_work):
                a = np.tanh(a @ a.T / 200)
        self.compiled.append(model)
        device = self

        class Exe(ReferenceExecutor):
            def run(self, inputs: Any, profile: Any = None) -> list[np.ndarray]:
                device.runs += 1
                return super().run(inputs, profile)

        exe = Exe(model)
        exe.blob = f"generated code for {model.friendly_name}".encode()
        return exe

    def export_model(self, executable: Any) -> bytes:
        return executable.blob  # stands for generated machine code

    def import_model(self, model: Model, blob: bytes, config: Mapping[str, Any]) -> Any:
        assert blob.startswith(b"generated code")
        self.imported.append(model)
        saved, self.compile_work = self.compile_work, 0
        try:
            exe = self.compile(model, config)
        finally:
            self.compile_work = saved
        self.compiled.pop()
        return exe


#: the op types of ``small_model``
SMALL_OPS = frozenset({"Add", "ReLU", "Multiply", "Subtract"})
