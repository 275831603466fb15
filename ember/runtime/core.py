"""``Core`` and ``CompiledModel``: OpenVINO's runtime API over ember devices.

``Core`` reads models, holds properties (per device, or for all devices) and compiles;
``CompiledModel`` owns the compiled executables and the streams that run them (see
``ember.runtime.streams``). Requests are in ``ember.runtime.request``.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import weakref
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from ember.devices.base import Device, device_names, get_device
from ember.errors import EmberError, PropertyError
from ember.graph.core_ops import Parameter
from ember.graph.model import Model
from ember.graph.node import Input, Output
from ember.runtime import properties as P
from ember.runtime.cache import CacheEntryError, ModelCache, cache_key, files_digest, model_digest, pack, unpack
from ember.runtime.properties import CompileConfig, LogLevel, PropertySpec
from ember.runtime.request import AsyncInferQueue, InferRequest, OVDict
from ember.runtime.streams import StreamExecutor, StreamPlan, available_cores, plan_streams
from ember.runtime.tensor import Tensor

log = logging.getLogger("ember.runtime")

__all__ = ["AsyncInferQueue", "CompiledModel", "Core", "InferRequest", "OVDict", "read_model"]


def read_model(model: Any, weights: Any = None) -> Model:
    """Read a model from an IR ``.xml`` (+ ``.bin``), an ``.onnx`` file, or IR xml bytes."""
    if isinstance(model, Model):
        return model
    if isinstance(model, (bytes, bytearray)) or (isinstance(model, str) and model.lstrip().startswith("<")):
        from ember.io import read_ir_bytes

        w = weights.data.tobytes() if isinstance(weights, Tensor) else (weights or b"")
        return read_ir_bytes(model if isinstance(model, (bytes, bytearray)) else model.encode(), w)
    path = Path(os.fspath(model))
    if not path.exists():
        raise EmberError(f"ember: model file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix == ".xml":
        from ember.io import read_ir

        return read_ir(path, weights)
    if suffix == ".onnx":
        from ember.frontends.onnx import convert

        return convert(path)
    if suffix == ".tflite":
        from ember.frontends.tflite import convert as convert_tflite

        return convert_tflite(path)
    raise EmberError(f"ember: cannot read '{path}': expected an OpenVINO IR .xml, an .onnx or a .tflite file")


def split_device_name(name: str) -> tuple[str, tuple[str, ...]]:
    """``"HETERO:CPU,REFERENCE"`` -> ``("HETERO", ("CPU", "REFERENCE"))``."""
    base, _, rest = name.strip().partition(":")
    devices = tuple(d.strip().upper() for d in rest.split(",") if d.strip())
    if _ and not devices:
        raise EmberError(f"ember: device name '{name}' lists no devices after ':'")
    return base.strip().upper(), devices


_HANDLER: logging.Handler | None = None


def apply_log_level(level: LogLevel) -> None:
    """Make the ``ember`` logger print at ``level`` (to stderr unless the application has
    configured logging itself)."""
    global _HANDLER
    logger = logging.getLogger("ember")
    logger.setLevel(level.logging_level)
    if level is not LogLevel.NO and not logger.handlers and _HANDLER is None:
        _HANDLER = logging.StreamHandler(sys.stderr)
        _HANDLER.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
        logger.addHandler(_HANDLER)


class CompiledModel:
    """A model compiled for a device. Calling it runs a synchronous inference on an internal
    request: ``compiled_model([input_image])[output_layer]`` (thread safe, serialized).

    A compiled model owns its streams' worker threads (daemon threads, started by the first
    asynchronous request); they stop when it is closed (``close()`` or ``with``) or
    garbage-collected.
    """

    def __init__(self, model: Model, device: str, config: CompileConfig, executable: Any,
                 plan: StreamPlan, device_plugin: Device, loaded_from_cache: bool = False) -> None:
        self._model = model
        self._device_name = device
        self._cfg = config
        self._plan = plan
        self._loaded_from_cache = loaded_from_cache
        self._params: list[Parameter] = model.get_parameters()
        self._profiling = config.enable_profiling
        self._node_types = {n.friendly_name: n.type_name for n in model.get_ordered_ops()}
        self._exec_type = str(getattr(executable, "exec_type", device.lower()))
        self._executable = executable
        exes = [executable]
        thread_safe = getattr(executable, "thread_safe", device_plugin.thread_safe_executables)
        for _ in range(plan.streams - 1):
            if thread_safe:
                exes.append(executable)
            elif hasattr(executable, "clone"):
                exes.append(executable.clone())
            else:
                exes.append(device_plugin.compile(model, _with_plan(config, plan)))
        self._executor = StreamExecutor(exes, f"{device}-{id(self):x}")
        self._finalizer = weakref.finalize(self, self._executor.close)
        self._lock = threading.Lock()
        self._request: InferRequest | None = None

    # -- ports --------------------------------------------------------------------------
    @property
    def inputs(self) -> list[Output]:
        """The compiled model's input ports, in order."""
        return self._model.inputs

    @property
    def outputs(self) -> list[Output]:
        """The compiled model's output ports, in order."""
        return self._model.outputs

    def input(self, key: Any = None) -> Output:
        """One input port of the compiled model, by index, tensor name, or none for a one-input
        model."""
        return self._model.input(key)

    def output(self, key: Any = None) -> Output:
        """One output port of the compiled model, by index, tensor name, or none for a one-output
        model."""
        return self._model.output(key)

    def _input_index(self, key: Any) -> int:
        if isinstance(key, Input):
            key = key.source
        if isinstance(key, Output):
            for i, p in enumerate(self.inputs):
                if p == key or (key.names and key.names & p.names):
                    return i
            raise EmberError(f"ember: {key} is not an input of this model")
        port = self._model.input(key)
        return self.inputs.index(port)

    def _has_input_name(self, name: str) -> bool:
        return any(name in p.names or name == p.node.friendly_name for p in self.inputs)

    def _output_index(self, key: Any) -> int:
        if isinstance(key, Output):
            for i, p in enumerate(self.outputs):
                if p == key:
                    return i
            raise EmberError(f"ember: {key} is not an output of this model")
        port = self._model.output(key)
        return self.outputs.index(port)

    def _input_label(self, i: int) -> str:
        p = self.inputs[i]
        return sorted(p.names)[0] if p.names else p.node.friendly_name

    # -- inference ----------------------------------------------------------------------
    def create_infer_request(self) -> InferRequest:
        """A new request; each may run one inference at a time."""
        return InferRequest(self)

    def __call__(self, inputs: Any = None, share_inputs: bool = True, share_outputs: bool = False) -> OVDict:
        """Run one inference on an internal request (see ``InferRequest.infer``; inputs are
        shared by default, as in OpenVINO)."""
        with self._lock:
            if self._request is None:  # holds this model weakly: no cycle keeps it (and its threads) alive
                self._request = InferRequest(cast("CompiledModel", weakref.proxy(self)))
            return self._request.infer(inputs, share_inputs=share_inputs, share_outputs=share_outputs)

    def infer_new_request(self, inputs: Any = None) -> OVDict:
        """Run one inference on a new request (thread-safe: nothing is shared with other requests)
        and return its outputs."""
        return self.create_infer_request().infer(inputs)

    def get_runtime_model(self) -> Model:
        """The model as the device runs it (after its passes); read-only in spirit: changing it does
        not change the compiled code."""
        return self._model

    # -- properties ---------------------------------------------------------------------
    @property
    def stream_plan(self) -> StreamPlan:
        """How the hints became streams, requests and threads per stream for this compiled model."""
        return self._plan

    def get_property(self, name: Any) -> Any:
        """A property of the compiled model (``NUM_STREAMS``, ``OPTIMAL_NUMBER_OF_INFER_REQUESTS``,
        ``EXECUTION_DEVICES``, the hints it was compiled with ...)."""
        key = P.canonical_key(name)
        cfg = self._cfg
        if key == "SUPPORTED_PROPERTIES":
            return {k: "RO" for k in P.COMPILED_KEYS} | {k: "RO" for k, _ in cfg.extra}
        if key == "NETWORK_NAME":
            return self._model.friendly_name
        if key == "OPTIMAL_NUMBER_OF_INFER_REQUESTS":
            return self._plan.optimal_requests
        if key == "NUM_STREAMS":
            return self._plan.streams
        if key == "INFERENCE_NUM_THREADS":
            return self._plan.total_threads
        if key == "EXECUTION_DEVICES":
            return list(getattr(self._executable, "execution_devices", [self._device_name]))
        if key == "LOADED_FROM_CACHE":
            return self._loaded_from_cache
        if key == "INFERENCE_PRECISION_HINT":  # what the device really computes in, when it says
            return getattr(self._executable, "inference_precision", None) or cfg.effective_precision
        if key in P.COMPILED_KEYS or key in dict(cfg.extra):
            return cfg.value_of(key)
        raise PropertyError(f"ember: compiled model has no property '{name}'; it has: "
                            f"{', '.join(sorted(self.get_property('SUPPORTED_PROPERTIES')))}")

    def set_property(self, properties: Any) -> None:
        """Compiled models' properties are fixed: always raises PropertyError (pass properties to
        ``compile_model``)."""
        raise PropertyError("ember: a compiled model's properties are fixed; pass them to compile_model")

    # -- export and lifetime -------------------------------------------------------------
    def export_model(self) -> bytes:
        """The compiled model as bytes for ``Core.import_model`` (same format as the cache)."""
        plugin = get_device(self._device_name)
        blob = plugin.export_model(self._executable)
        if blob is None:
            raise EmberError(f"ember: models compiled for {self._device_name} cannot be exported")
        return pack("", self._device_name, self._model, blob)

    def close(self) -> None:
        """Stop this model's worker threads (requests still queued run first)."""
        self._finalizer()

    def release_memory(self) -> None:
        """Release memory held between inferences (ember plans its arena per request, so nothing is
        held here)."""
        return None

    def __enter__(self) -> CompiledModel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<CompiledModel on {self._device_name}: {len(self.inputs)} inputs, {len(self.outputs)} outputs, "
                f"{self._plan.streams} streams>")


class Core:
    """Entry point: reads models, holds properties, compiles models for devices.

    Properties set without a device apply to every device; ``CACHE_DIR`` and ``LOG_LEVEL``
    are the Core's own. Device names: ``REFERENCE``, ``CPU`` (when registered), and the
    virtual ``AUTO``, ``AUTO:CPU,REFERENCE``, ``HETERO:CPU,REFERENCE``, ``MULTI:CPU,REFERENCE``.
    """

    def __init__(self, xml_config_file: str | None = None) -> None:
        self._properties: dict[str, dict[str, Any]] = {"": {}}

    # -- devices ------------------------------------------------------------------------
    @property
    def available_devices(self) -> list[str]:
        """Registered devices that run models themselves (not AUTO/HETERO/MULTI)."""
        out = []
        for d in device_names():
            try:
                if not get_device(d).virtual:
                    out.append(d)
            except Exception as e:  # noqa: BLE001 - a plugin that fails to load is not available
                log.warning("ember: device %s is registered but failed to load: %s", d, e)
        return out

    def get_available_devices(self) -> list[str]:
        """The device names ``compile_model`` accepts on this machine (e.g. ``['CPU',
        'REFERENCE']``)."""
        return self.available_devices

    def _device(self, name: str) -> tuple[str, tuple[str, ...], Device]:
        base, listed = split_device_name(name)
        if base not in device_names():
            raise EmberError(f"ember: unknown device '{name}'; available: {', '.join(device_names())}")
        return base, listed, get_device(base)

    @staticmethod
    def _extra_specs(dev: Device) -> dict[str, PropertySpec]:
        specs = {}
        for k, default in dict(dev.extra_properties).items():
            try:  # a key ember knows keeps its parser (and its validation)
                parse = P.spec_of(k).parse
            except PropertyError:
                parse = _identity
            specs[k] = PropertySpec(k, parse, default)
        return specs

    # -- properties ---------------------------------------------------------------------
    def set_property(self, device_name: Any = None, properties: Any = None) -> None:
        """``set_property({key: value})`` for every device, ``set_property("CPU", {...})`` for one.
        Keys are OpenVINO's names or ``ember.properties`` objects; values are validated."""
        if properties is None and not isinstance(device_name, str):
            device_name, properties = "", device_name
        device = (device_name or "").upper()
        if device:
            base, listed, dev = self._device(device)
            parsed = P.parse_properties(properties, self._extra_specs(dev), f" (device {base})")
            if listed:
                parsed["MULTI_DEVICE_PRIORITIES"] = listed
            device = base
        else:
            parsed = P.parse_properties(properties)
        if "LOG_LEVEL" in parsed:
            apply_log_level(parsed["LOG_LEVEL"])
        self._properties.setdefault(device, {}).update(parsed)

    def get_property(self, device_name: str, name: Any = None) -> Any:
        """A device's property (``core.get_property("REFERENCE", props.supported_properties)``),
        or with one argument a Core-wide one (``core.get_property(props.cache_dir)``)."""
        if name is None:
            device_name, name = "", device_name
        key = P.canonical_key(name)
        if not device_name:
            if key in P.CORE_KEYS or key in ("PERFORMANCE_HINT", "PERF_COUNT"):
                return self._properties[""].get(key, P.default_of(key))
            if key == "AVAILABLE_DEVICES":
                return self.available_devices
            raise PropertyError(f"ember: Core has no property '{name}' of its own; name a device")
        base, _, dev = self._device(device_name)
        extra = dict(dev.extra_properties)
        if key == "SUPPORTED_PROPERTIES":
            out = {k: "RO" for k in P.DEVICE_RO_KEYS} | {k: "RW" for k in P.DEVICE_RW_KEYS}
            if dev.virtual:
                out["MULTI_DEVICE_PRIORITIES"] = "RW"
            return out | {k: "RW" for k in extra}
        if key == "AVAILABLE_DEVICES":
            return dev.available_ids()
        if key == "FULL_DEVICE_NAME":
            return dev.full_name
        if key == "OPTIMIZATION_CAPABILITIES":
            return dev.capabilities()
        if key == "DEVICE_TYPE":
            return P.DeviceType.INTEGRATED
        if key == "RANGE_FOR_STREAMS":
            return (1, dev.max_streams or available_cores())
        if key == "RANGE_FOR_ASYNC_INFER_REQUESTS":
            return (1, 1, 1)
        if key in P.DEVICE_RW_KEYS or key in extra or (dev.virtual and key == "MULTI_DEVICE_PRIORITIES"):
            for scope in (base, ""):
                if key in self._properties.get(scope, {}):
                    return self._properties[scope][key]
            return extra[key] if key in extra else P.default_of(key)
        supported = self.get_property(base, "SUPPORTED_PROPERTIES")
        raise PropertyError(f"ember: device {base} has no property '{name}'; supported: {', '.join(sorted(supported))}")

    def _merged(self, base: str, listed: tuple[str, ...], dev: Device, config: Any) -> dict[str, Any]:
        """Core-wide, then this device's, then the call's properties, validated."""
        merged = dict(self._properties.get("", {}))
        merged.update(self._properties.get(base, {}))
        call = P.parse_properties(config, self._extra_specs(dev), f" (device {base})")
        merged.update(call)
        if listed:
            merged["MULTI_DEVICE_PRIORITIES"] = listed
        if "LOG_LEVEL" in call:
            apply_log_level(call["LOG_LEVEL"])
        return merged

    def _config(self, base: str, listed: tuple[str, ...], dev: Device, config: Any) -> CompileConfig:
        return CompileConfig.from_properties(self._merged(base, listed, dev, config))

    # -- models -------------------------------------------------------------------------
    def read_model(self, model: Any, weights: Any = None, config: Any = None) -> Model:
        """Read an IR ``.xml`` (weights from ``weights`` or the ``.bin`` beside it), an ``.onnx``
        file, or IR xml given as bytes/str."""
        return read_model(model, weights)

    def compile_model(self, model: Any, device_name: Any = None, config: Any = None) -> CompiledModel:
        """Compile ``model`` (a Model or a file path) for ``device_name`` (default ``AUTO``).

        ``config`` holds properties for this compilation (they override those set on the
        Core). With ``CACHE_DIR`` set, the device's result is stored, and a later compile of
        the same model, device and config loads it instead (a file path is hashed without
        being parsed, so a cache hit skips reading and converting the model too).
        """
        if isinstance(device_name, Mapping) and config is None:
            device_name, config = None, device_name
        base, listed, dev = self._device(device_name or "AUTO")
        merged = self._merged(base, listed, dev, config)
        # A chooser (AUTO) picks the device that really compiles, so that caching and the
        # stream plan apply to that device; the properties given to AUTO go along.
        source: Path | None = None
        if not isinstance(model, Model):
            if isinstance(model, (str, os.PathLike)) and not str(model).lstrip().startswith("<"):
                source = Path(os.fspath(model))
            else:
                model = self.read_model(model)
        updates: dict[str, Any] = {}  # CompileConfig fields the chooser sets (MULTI's device list)
        for _ in range(4):
            if not hasattr(dev, "select"):
                break
            if not isinstance(model, Model):
                model = self.read_model(source)
            choice, chosen_updates = dev.select(model, replace(CompileConfig.from_properties(merged), **updates))
            if choice == base:
                break
            chosen = get_device(choice)
            own = {k: v for k, v in merged.items() if k != "MULTI_DEVICE_PRIORITIES"}
            merged = dict(self._properties.get("", {}))
            merged.update(self._properties.get(choice, {}))
            merged.update(own)
            updates = dict(chosen_updates)
            base, dev = choice, chosen
        return self._compile_on(model, source, base, dev, replace(CompileConfig.from_properties(merged), **updates))

    def _compile_on(self, model: Any, source: Path | None, base: str, dev: Device, cfg: CompileConfig
                    ) -> CompiledModel:
        cache = ModelCache(cfg.cache_dir) if cfg.cache_dir and not dev.virtual else None
        key = None
        if cache is not None:
            try:
                if isinstance(model, Model):
                    digest = model_digest(model)
                else:
                    assert source is not None
                    digest = files_digest(_model_files(source))
                key = cache_key(digest, base, dev.cache_fingerprint(), cfg)
            except EmberError as e:
                log.warning("ember: not caching this model: %s", e)
                cache = None
        plan = plan_streams(cfg, max_streams=dev.max_streams)
        cfg_for_device = _with_plan(cfg, plan)
        if cache is not None and key is not None:
            entry = cache.load(key, base)
            if entry is not None:
                try:
                    exe = dev.import_model(entry.model, entry.blob, cfg_for_device)
                    return self._finish(entry.model, base, cfg, exe, dev, plan, True)
                except EmberError as e:
                    log.warning("ember: ignoring model cache entry %s: %s", cache.path(key), e)
                except MemoryError:
                    from ember.runtime.limits import out_of_memory

                    raise out_of_memory(entry.model, base) from None
        if not isinstance(model, Model):
            assert source is not None
            model = self.read_model(source)
        try:
            runtime_model = dev.transform(model.clone(), cfg_for_device)
            exe = dev.compile(runtime_model, cfg_for_device)
        except MemoryError:
            from ember.runtime.limits import out_of_memory

            raise out_of_memory(model, base) from None
        if cache is not None and key is not None:
            blob = dev.export_model(exe)
            if blob is not None:
                cache.store(key, base, runtime_model, blob)
        return self._finish(runtime_model, base, cfg, exe, dev, plan, False)

    @staticmethod
    def _finish(model: Model, base: str, cfg: CompileConfig, exe: Any, dev: Device, plan: StreamPlan,
                cached: bool) -> CompiledModel:
        preferred = getattr(exe, "preferred_streams", None)
        if preferred and cfg.num_streams is None and plan.streams < preferred:
            plan = StreamPlan(preferred, preferred, plan.threads_per_stream)
        log.info("ember: compiled '%s' for %s: %d stream(s), %d request(s) optimal%s", model.friendly_name, base,
                 plan.streams, plan.optimal_requests, " (from cache)" if cached else "")
        return CompiledModel(model, base, cfg, exe, plan, dev, cached)

    def import_model(self, model_stream: Any, device_name: str | None = None, config: Any = None) -> CompiledModel:
        """Load a model written by ``CompiledModel.export_model`` (bytes or a binary file).

        ``device_name`` defaults to the device the model was exported for; naming another
        device raises an error that names both."""
        data = model_stream.read() if isinstance(model_stream, io.IOBase) else bytes(model_stream)
        if device_name is None:
            try:
                device_name = unpack(data).device
            except CacheEntryError as e:
                raise EmberError(f"ember: cannot import this model: {e}") from None
        base, listed, dev = self._device(device_name)
        cfg = self._config(base, listed, dev, config)
        try:
            entry = unpack(data, expected_device=base)
        except CacheEntryError as e:
            raise EmberError(f"ember: cannot import this model for {base}: {e}") from None
        plan = plan_streams(cfg, max_streams=dev.max_streams)
        try:
            exe = dev.import_model(entry.model, entry.blob, _with_plan(cfg, plan))
        except MemoryError:
            from ember.runtime.limits import out_of_memory

            raise out_of_memory(entry.model, base, "import") from None
        return self._finish(entry.model, base, cfg, exe, dev, plan, False)

    def query_model(self, model: Model, device_name: str, config: Any = None) -> dict[str, str]:
        """``{node friendly name: device}`` for the nodes ``device_name`` can run (for HETERO:
        where each node would go)."""
        base, listed, dev = self._device(device_name)
        cfg = self._config(base, listed, dev, config)
        return dev.query_model(model, cfg)

    def get_versions(self, device_name: str) -> dict[str, str]:
        """``{device_name: ember version}``."""
        from ember import __version__

        return {device_name: __version__}

    def register_plugin(self, plugin_name: str, device_name: str, config: Any = None) -> None:
        """Register a device factory given as ``"module:attribute"``."""
        from ember.devices.base import register_device

        register_device(device_name.upper(), plugin_name)


def _with_plan(cfg: CompileConfig, plan: StreamPlan) -> CompileConfig:
    """What a device's compile sees: the config with streams and threads resolved."""
    return replace(cfg, num_streams=plan.streams, inference_num_threads=plan.threads_per_stream)


def _model_files(source: Path) -> list[Path]:
    if source.suffix.lower() == ".xml":
        return [source, source.with_suffix(".bin")]
    files = [source]
    return files


def _identity(value: Any) -> Any:
    return value
