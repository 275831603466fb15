"""``Core``, ``CompiledModel`` and ``InferRequest``: OpenVINO's runtime API over ember devices."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ember.devices.base import device_names, get_device
from ember.errors import EmberError, InferenceError
from ember.graph.core_ops import Parameter
from ember.graph.model import Model
from ember.graph.node import Input, Output
from ember.graph.types import Type
from ember.runtime.tensor import Tensor

log = logging.getLogger("ember.runtime")


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
    raise EmberError(f"ember: cannot read '{path}': expected an OpenVINO IR .xml or an .onnx file")


class OVDict(Mapping):
    """Inference results: look up by output port, by index, or by tensor name."""

    def __init__(self, ports: list[Output], values: list[np.ndarray]) -> None:
        self._ports = ports
        self._values = values

    def _index(self, key: Any) -> int:
        if isinstance(key, int):
            if not -len(self._ports) <= key < len(self._ports):
                raise KeyError(f"ember: there are {len(self._ports)} outputs; no output {key}")
            return key % len(self._ports)
        if isinstance(key, Output):
            for i, p in enumerate(self._ports):
                if p == key:
                    return i
            names = key.names if key.node._outputs_desc else set()
            for i, p in enumerate(self._ports):
                if names and names & p.names:
                    return i
            raise KeyError(f"ember: {key} is not an output of this model")
        if isinstance(key, str):
            for i, p in enumerate(self._ports):
                if key in p.names:
                    return i
            for i, p in enumerate(self._ports):
                if key == p.node.friendly_name:
                    return i
            raise KeyError(f"ember: no output named '{key}'; outputs: "
                           f"{', '.join(sorted(n for p in self._ports for n in p.names))}")
        raise KeyError(f"ember: cannot look up results by {type(key).__name__}")

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._values[self._index(key)]

    def __iter__(self) -> Iterator[Output]:
        return iter(self._ports)

    def __len__(self) -> int:
        return len(self._ports)

    def to_tuple(self) -> tuple[np.ndarray, ...]:
        return tuple(self._values)

    def to_dict(self) -> dict[Output, np.ndarray]:
        return dict(zip(self._ports, self._values))

    def names(self) -> tuple[set[str], ...]:
        return tuple(p.names for p in self._ports)

    def __repr__(self) -> str:
        return "<OVDict " + ", ".join(f"{sorted(p.names)}: {v.shape}" for p, v in zip(self._ports, self._values)) + ">"


def _convert_input(value: Any, param: Parameter, where: str) -> np.ndarray:
    arr = value.data if isinstance(value, Tensor) else np.asarray(value)
    et = param.element_type
    if et is Type.string:
        if arr.dtype.kind not in "USO":
            raise InferenceError(f"ember: input '{where}' expects strings, got {arr.dtype}")
        arr = arr.astype(object)
    elif arr.dtype != et.dtype and not et.is_dynamic:
        src = arr.dtype
        ok = np.can_cast(src, et.dtype, "same_kind") or (src.kind in "biu" and et.is_real) or \
            (src.kind == "f" and et.is_real)
        if not ok:
            raise InferenceError(f"ember: input '{where}' expects element type {et.name}, got {src}; "
                                 f"convert it first (e.g. arr.astype(np.{et.dtype.name}))")
        arr = arr.astype(et.dtype)
    if not param.partial_shape.accepts(arr.shape):
        raise InferenceError(f"ember: input '{where}' expects shape {param.partial_shape}, got "
                             f"{list(arr.shape)}")
    return arr


class InferRequest:
    """One inference at a time on a compiled model; create several for concurrency.

    ``infer`` runs on the calling thread. With ``share_inputs=False`` (default) inputs are
    copied into the request's tensors; with ``True`` the given arrays are read in place and
    must not change until ``infer`` returns. Results are fresh arrays unless
    ``share_outputs=True`` (then they are the request's own buffers, overwritten by the next
    inference).
    """

    def __init__(self, compiled: CompiledModel) -> None:
        self._compiled = compiled
        self._inputs: list[np.ndarray | None] = [None] * len(compiled.inputs)
        self._outputs: list[np.ndarray] | None = None
        self._profile: dict[str, float] | None = None
        self.userdata: Any = None

    # -- tensors ------------------------------------------------------------------------
    def _in_index(self, key: Any) -> int:
        return self._compiled._input_index(key)

    def set_tensor(self, key: Any, tensor: Tensor | np.ndarray) -> None:
        for p in self._compiled.outputs:
            if (isinstance(key, Output) and key == p) or (isinstance(key, str) and key in p.names
                                                          and not self._compiled._has_input_name(key)):
                raise EmberError("ember: set_tensor on an output is not supported; read results instead")
        i = self._in_index(key)
        self._inputs[i] = _convert_input(tensor, self._compiled._params[i], self._compiled._input_label(i))

    def set_input_tensor(self, *args: Any) -> None:
        if len(args) == 1:
            self.set_tensor(0, args[0])
        else:
            self.set_tensor(args[0], args[1])

    def set_input_tensors(self, tensors: Mapping[Any, Any]) -> None:
        for k, v in tensors.items():
            self.set_tensor(k, v)

    def get_tensor(self, key: Any) -> Tensor:
        try:
            o = self._compiled._output_index(key)
        except EmberError:
            i = self._in_index(key)
            value = self._inputs[i]
            if value is None:
                raise EmberError(f"ember: input '{self._compiled._input_label(i)}' has no tensor yet") from None
            return Tensor(value, shared_memory=True)
        if self._outputs is None:
            raise EmberError("ember: no inference has run yet, so there are no output tensors")
        return Tensor(self._outputs[o], shared_memory=True)

    def get_input_tensor(self, index: int = 0) -> Tensor:
        return self.get_tensor(self._compiled.inputs[index])

    def get_output_tensor(self, index: int = 0) -> Tensor:
        return self.get_tensor(self._compiled.outputs[index])

    # -- inference ----------------------------------------------------------------------
    def _feed(self, inputs: Any) -> None:
        if inputs is None:
            return
        c = self._compiled
        if isinstance(inputs, Mapping):
            for k, v in inputs.items():
                self.set_tensor(k, v)
        elif isinstance(inputs, (list, tuple)):
            if len(inputs) != len(c.inputs):
                raise InferenceError(f"ember: the model has {len(c.inputs)} inputs, {len(inputs)} were given")
            for i, v in enumerate(inputs):
                self.set_tensor(i, v)
        else:
            if len(c.inputs) != 1:
                raise InferenceError(f"ember: the model has {len(c.inputs)} inputs; pass a list or a dict")
            self.set_tensor(0, inputs)

    def infer(self, inputs: Any = None, share_inputs: bool = False, share_outputs: bool = False) -> OVDict:
        """Run one inference and return the results (see the class docstring on copies)."""
        self._feed(inputs)
        missing = [self._compiled._input_label(i) for i, v in enumerate(self._inputs) if v is None]
        if missing:
            raise InferenceError(f"ember: no value for input(s) {', '.join(missing)}")
        profile: dict[str, float] | None = {} if self._compiled._profiling else None
        outs = self._compiled._run([v for v in self._inputs if v is not None], profile)  # type: ignore[misc]
        self._profile = profile
        self._outputs = outs
        values = outs if share_outputs else [np.array(o, copy=True) for o in outs]
        return OVDict(self._compiled.outputs, values)

    @property
    def results(self) -> OVDict:
        if self._outputs is None:
            raise EmberError("ember: no inference has run yet")
        return OVDict(self._compiled.outputs, self._outputs)

    @property
    def model_inputs(self) -> list[Output]:
        return self._compiled.inputs

    @property
    def model_outputs(self) -> list[Output]:
        return self._compiled.outputs

    def get_compiled_model(self) -> CompiledModel:
        return self._compiled

    def get_profiling_info(self) -> list[Any]:
        from types import SimpleNamespace

        if self._profile is None:
            return []
        nodes = {n.friendly_name: n for n in self._compiled._model.get_ordered_ops()}
        return [SimpleNamespace(node_name=k, node_type=nodes[k].type_name if k in nodes else "",
                                real_time=v, cpu_time=v, status="EXECUTED", exec_type="ref")
                for k, v in self._profile.items()]


class CompiledModel:
    """A model compiled for a device. Calling it runs a synchronous inference on an internal
    request: ``compiled_model([input_image])[output_port]``."""

    def __init__(self, model: Model, device: str, config: Mapping[str, Any]) -> None:
        self._model = model
        self._device_name = device
        self._config = dict(config)
        self._params: list[Parameter] = model.get_parameters()
        self._profiling = str(self._config.get("PERF_COUNT", self._config.get("ENABLE_PROFILING", "NO"))).upper() \
            in ("YES", "TRUE", "1")
        self._executable = get_device(device).compile(model, self._config)
        self._lock = threading.Lock()
        self._request: InferRequest | None = None

    def _run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None) -> list[np.ndarray]:
        return self._executable.run(inputs, profile)

    # -- ports --------------------------------------------------------------------------
    @property
    def inputs(self) -> list[Output]:
        return self._model.inputs

    @property
    def outputs(self) -> list[Output]:
        return self._model.outputs

    def input(self, key: Any = None) -> Output:
        return self._model.input(key)

    def output(self, key: Any = None) -> Output:
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
        return InferRequest(self)

    def __call__(self, inputs: Any = None, share_inputs: bool = True, share_outputs: bool = False) -> OVDict:
        with self._lock:
            if self._request is None:
                self._request = self.create_infer_request()
            return self._request.infer(inputs, share_inputs=share_inputs, share_outputs=share_outputs)

    def infer_new_request(self, inputs: Any = None) -> OVDict:
        return self.create_infer_request().infer(inputs)

    def get_runtime_model(self) -> Model:
        return self._model

    def get_property(self, name: str) -> Any:
        if name in self._config:
            return self._config[name]
        if name == "EXECUTION_DEVICES":
            return [self._device_name]
        raise EmberError(f"ember: compiled model has no property '{name}'")

    def __repr__(self) -> str:
        return f"<CompiledModel on {self._device_name}: {len(self.inputs)} inputs, {len(self.outputs)} outputs>"


class Core:
    """Entry point: reads models and compiles them for devices."""

    def __init__(self, xml_config_file: str | None = None) -> None:
        self._properties: dict[str, dict[str, Any]] = {}

    @property
    def available_devices(self) -> list[str]:
        return [d for d in device_names() if d not in ("AUTO", "HETERO", "MULTI", "BATCH")]

    def get_available_devices(self) -> list[str]:
        return self.available_devices

    def read_model(self, model: Any, weights: Any = None, config: Any = None) -> Model:
        """Read an IR ``.xml`` (weights from ``weights`` or the ``.bin`` beside it), an ``.onnx``
        file, or IR xml given as bytes/str."""
        return read_model(model, weights)

    def compile_model(self, model: Any, device_name: str | None = None, config: Mapping[str, Any] | None = None
                      ) -> CompiledModel:
        """Compile ``model`` (a Model or a path) for ``device_name`` (default ``AUTO``)."""
        if not isinstance(model, Model):
            model = self.read_model(model)
        device = (device_name or "AUTO").upper()
        merged = dict(self._properties.get(device, {}))
        merged.update(config or {})
        if device == "AUTO" or device.startswith("AUTO:"):
            choices = device[5:].split(",") if ":" in device else ["CPU", "REFERENCE"]
            device = next((d for d in choices if d in device_names()), "REFERENCE")
            log.info("ember: AUTO chose %s", device)
        return CompiledModel(model.clone(), device, merged)

    def set_property(self, device_name: Any = None, properties: Any = None) -> None:
        if isinstance(device_name, Mapping):
            device_name, properties = "", device_name
        self._properties.setdefault((device_name or "").upper(), {}).update(properties or {})

    def get_property(self, device_name: str, name: str) -> Any:
        if name == "FULL_DEVICE_NAME":
            return get_device(device_name.upper()).full_name
        if name == "OPTIMIZATION_CAPABILITIES":
            return get_device(device_name.upper()).capabilities()
        props = self._properties.get(device_name.upper(), {})
        if name in props:
            return props[name]
        raise EmberError(f"ember: device '{device_name}' has no property '{name}' set")

    def query_model(self, model: Model, device_name: str, config: Mapping[str, Any] | None = None) -> dict[str, str]:
        dev = device_name.upper()
        return {name: dev for name in get_device(dev).supported_nodes(model)}

    def get_versions(self, device_name: str) -> dict[str, str]:
        from ember import __version__

        return {device_name: __version__}
