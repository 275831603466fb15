"""The CPU device plugin: lowers a Model to a plan of native kernels (see ``lowering``).

``compile`` runs the optimizer (level 2) and the device's passes, then lowers the model to a
:class:`~ember.devices.cpu.runtime.plan.Program` (weights packed once, memory planned once) and binds
it to an arena and a native thread pool. Models with dynamic input shapes are lowered again
for each new input shape (a small cache of plans keyed by the shapes).

Threads: each executable (one per stream) owns a native :class:`ThreadPool` with the
stream's ``INFERENCE_NUM_THREADS``; its kernels run with the GIL released, so streams on
separate Python threads run in parallel. Executables are not thread safe: the runtime gives
each stream its own (``clone``, which shares the packed weights).

Precision: f32 by default. ``INFERENCE_PRECISION_HINT=bf16`` on a CPU with AVX512_BF16 runs
the weight GEMMs and convolutions in bf16 (f32 accumulation; depthwise convolutions,
attention, elementwise and normalization stay f32, as in OpenVINO). Without AVX512_BF16,
or for f16, the model runs in f32 with a warning. The compiled model's
``INFERENCE_PRECISION_HINT`` reports what really runs, never a precision it does not use.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.devices.base import Device
from ember.errors import EmberError, InferenceError
from ember.graph.model import Model
from ember.graph.types import Type

if TYPE_CHECKING:
    from ember.runtime.properties import CompileConfig  # the interface's type only: devices read its fields

log = logging.getLogger("ember.cpu")

_TRANSFORMED = "ember_cpu_passes"
MAX_SHAPE_PLANS = 8


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class CPUExecutable:
    """A model compiled for the CPU device (one stream's executor; not thread safe)."""

    thread_safe = False
    execution_devices = ["CPU"]

    def __init__(self, model: Model, threads: int, precision: Type, programs: _Programs | None = None) -> None:
        from ember.devices.cpu.runtime.instance import instantiate
        from ember.devices.cpu.runtime.threadpool import ThreadPool

        self.model = model
        self.threads = threads
        self.precision = precision
        self.exec_type = "cpu"
        self._programs = programs or _Programs(model, threads, "bf16" if precision is Type.bf16 else "f32")
        self.pool = ThreadPool(threads)
        self._instances: OrderedDict[tuple, Any] = OrderedDict()
        self._params = model.get_parameters()
        self._static = self._programs.static
        if self._static:
            self._instances[()] = instantiate(self._programs.get(()), self.pool)

    @property
    def inference_precision(self) -> Type:
        """bf16 when asked for and the heavy kernels (GEMMs, convolutions) run in bf16, else f32."""
        prog = self.program
        if self.precision is Type.bf16 and (prog is None or prog.stats.get("bf16_ops")):
            return Type.bf16
        return Type.f32

    @property
    def exec_types(self) -> dict[str, str]:
        """Op name -> how it runs, for ops not run by the f32 kernels (``exec_type``): the int8
        kernels report ``jit_<isa>[_vnni]_I8``, as OpenVINO's profiling does."""
        prog = self.program
        return dict(prog.stats.get("exec_types", {})) if prog is not None else {}

    @property
    def program(self) -> Any:
        """The plan for the static input shapes (or the last one used)."""
        return next(reversed(self._instances.values())).program if self._instances else None

    def _instance(self, inputs: Sequence[np.ndarray]) -> Any:
        if self._static:
            inst = self._instances[()]
            for p, x, t in zip(self._params, inputs, inst.program.inputs):
                if x.shape != t.shape:
                    raise InferenceError(f"ember: input '{p.friendly_name}' has shape {list(x.shape)}, the model "
                                         f"expects {list(t.shape)}")
            return inst
        key = tuple(tuple(x.shape) for x in inputs)
        inst = self._instances.get(key)
        if inst is None:
            from ember.devices.cpu.runtime.instance import instantiate

            inst = instantiate(self._programs.get(key), self.pool)
            self._instances[key] = inst
            while len(self._instances) > MAX_SHAPE_PLANS:
                self._instances.popitem(last=False)
        else:
            self._instances.move_to_end(key)
        return inst

    def run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None = None) -> list[np.ndarray]:
        if len(inputs) != len(self._params):
            raise InferenceError(f"ember: the model takes {len(self._params)} inputs, got {len(inputs)}")
        return self._instance(inputs).run(inputs, profile)

    def clone(self) -> CPUExecutable:
        """Another executor of the same plans (shared packed weights, own arena and pool)."""
        return CPUExecutable(self.model, self.threads, self.precision, self._programs)

    def close(self) -> None:
        self.pool.close()


class _Programs:
    """Lowered programs of one model, shared by the executables of its streams."""

    def __init__(self, model: Model, threads: int, precision: str = "f32") -> None:
        self.model = model
        self.threads = threads
        self.precision = precision
        self.static = all(p.get_partial_shape().is_static for p in model.get_parameters())
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple) -> Any:
        with self._lock:
            prog = self._cache.get(key)
            if prog is None:
                prog = self._lower(key)
                self._cache[key] = prog
                while len(self._cache) > MAX_SHAPE_PLANS:
                    self._cache.popitem(last=False)
            return prog

    def _lower(self, key: tuple) -> Any:
        from ember.devices.cpu.llvm.isa import host_isa
        from ember.devices.cpu.lowering.driver import Lowering
        from ember.devices.cpu.lowering.passes import device_passes
        from ember.devices.cpu.runtime.memory import plan_memory

        model = self.model
        if key:
            try:
                model = model.clone()
                model.reshape({i: list(s) for i, s in enumerate(key)})
                model = device_passes(model)
            except EmberError as e:  # e.g. an If branch that is invalid for these shapes
                log.info("CPU: cannot specialize '%s' to input shapes %s (%s); running it with dynamic shapes",
                         self.model.friendly_name, list(key), e)
                model = self.model
        prog = Lowering(model, self.threads, host_isa(), self.precision, compile_body=self._compile_body).run()
        plan_memory(prog)
        return prog


    def _compile_body(self, body: Model) -> CPUExecutable:
        """An executable for a control-flow body (an If branch) with this model's settings."""
        return CPUExecutable(body, self.threads, Type.bf16 if self.precision == "bf16" else Type.f32)


class CPUDevice(Device):
    """ember's fast path: native kernels generated with LLVM for this CPU."""

    name = "CPU"
    thread_safe_executables = False
    auto_rank = 20  # before REFERENCE (100); after devices that declare themselves faster

    def __init__(self) -> None:
        from ember.devices.cpu.llvm.isa import host_isa

        self.isa = host_isa()
        self.full_name = _cpu_name()

    def capabilities(self) -> list[str]:
        from ember.devices.cpu.kernels.gemm import bf16_supported

        return ["FP32", *(["BF16"] if bf16_supported(self.isa) else []), "EXPORT_IMPORT"]

    def cache_fingerprint(self) -> str:
        return f"{self.name}|{self.isa.key}"

    def supported_nodes(self, model: Model) -> set[str]:
        """Every node with a reference kernel runs on CPU (natively, or through that kernel)."""
        from ember.devices.base import get_device

        return get_device("REFERENCE").supported_nodes(model)

    def transform(self, model: Model, config: CompileConfig) -> Model:
        from ember.devices.cpu.lowering.passes import device_passes

        model = device_passes(model)
        model.rt_info[_TRANSFORMED] = "1"
        return model

    def compile(self, model: Model, config: CompileConfig) -> CPUExecutable:
        if model.rt_info.get(_TRANSFORMED) != "1":
            model = self.transform(model.clone(), config)
        threads = config.inference_num_threads or _cores()
        return CPUExecutable(model, threads, self._precision(config))

    def _precision(self, config: CompileConfig) -> Type:
        from ember.devices.cpu.kernels.gemm import bf16_supported

        want = config.effective_precision
        if want is Type.bf16 and bf16_supported(self.isa):
            return Type.bf16
        if want is not Type.f32:
            why = "this CPU lacks AVX512_BF16" if want is Type.bf16 else f"CPU has no {want} kernels"
            log.warning("ember: %s; this model runs in f32 (its INFERENCE_PRECISION_HINT property says f32)", why)
        return Type.f32

    def export_model(self, executable: Any) -> bytes | None:
        return b""

    def import_model(self, model: Model, blob: bytes, config: CompileConfig) -> CPUExecutable:
        if blob:
            raise EmberError("ember: this CPU cache entry has data this version cannot read")
        return self.compile(model, config)
