"""``convert_model``: any supported model file or object -> an optimized ember ``Model``."""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ember.errors import ConversionError
from ember.graph.layout import Layout
from ember.graph.model import Model


def convert_model(input_model: Any, *, input: Any = None, output: Any = None, example_input: Any = None,
                  opt_level: int = 2, mean_values: Any = None, scale_values: Any = None,
                  reverse_input_channels: bool = False, layout: Any = None, report: Any = None) -> Model:
    """Convert ``input_model`` (an ``.onnx`` path or ``onnx.ModelProto``, an IR ``.xml``, or an
    ember Model) into an ember Model optimized at ``opt_level`` (0-2; see ``ember.passes``).

    PyTorch models (a ``torch.nn.Module`` with ``example_input``, a ``torch.export``
    ``ExportedProgram``, a TorchScript module or ``.pt`` archive) go through
    ``ember.frontends.pytorch`` (docs/pytorch.md); torch is imported only for them.

    ``input``/``output``/``example_input`` select and shape the inputs and outputs as
    ``ovc`` does. ``mean_values``/``scale_values`` (a list for every input, or ``{name: list}``)
    and ``reverse_input_channels`` are embedded as graph ops in front of the model, so the
    converted model takes raw inputs: ``(reverse(x) - mean) / scale``. ``layout`` (a string or
    ``{name: layout}``) names the inputs' axes and decides the channel axis for those steps.
    """
    model = _frontend(input_model, input, output, example_input)
    if layout is not None:
        _set_layouts(model, layout)
    if reverse_input_channels or mean_values is not None or scale_values is not None:
        _embed_normalization(model, mean_values, scale_values, reverse_input_channels)
    if opt_level:
        from ember.passes import optimize

        model = optimize(model, opt_level, report=report, copy=False)
        # graph nodes form reference cycles: the weights the passes replaced (e.g. convolution
        # weights with a BatchNorm folded in) are freed now, not in the middle of compiling
        gc.collect()
    return model


def _reshape_inputs(model: Model, input: Any) -> Model:
    """``input=`` on a model that is already ember's (IR or ``Model``): the shapes reshape it, as
    ``ovc --input`` does; names must be the model's inputs."""
    from ember.frontends.onnx.convert import parse_input

    specs = parse_input(input)
    shapes: dict[Any, Any] = {}
    for i, spec in enumerate(specs):
        if spec.element_type is not None:
            raise ConversionError(f"ember: input= cannot change the element type of input "
                                  f"'{spec.name or i}' of an IR model; use PrePostProcessor "
                                  f"(ppp.input().tensor().set_element_type(...))")
        if spec.shape is None:
            continue
        if spec.name is None:
            if len(specs) > len(model.inputs):
                raise ConversionError(f"ember: input= gives {len(specs)} shapes but the model has "
                                      f"{len(model.inputs)} inputs")
            shapes[i] = spec.shape
        else:
            names = {n for p in model.inputs for n in p.names} | {p.node.friendly_name for p in model.inputs}
            if spec.name not in names:
                raise ConversionError(f"ember: the model has no input named '{spec.name}'; its inputs are: "
                                      + ", ".join(sorted(p.any_name for p in model.inputs)))
            shapes[spec.name] = spec.shape
    if shapes:
        model.reshape(shapes)
    return model


def _frontend(src: Any, input: Any, output: Any, example_input: Any) -> Model:
    if isinstance(src, Model):
        if output is not None:
            raise ConversionError("ember: output= selection applies to framework models, not to an ember Model")
        return _reshape_inputs(src.clone(), input) if input is not None else src.clone()
    try:
        import onnx

        if isinstance(src, onnx.ModelProto):
            from ember.frontends.onnx import convert

            return convert(src, input=input, output=output, example_input=example_input)
    except ModuleNotFoundError:  # pragma: no cover - onnx is a runtime dependency
        pass
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise ConversionError(f"ember: model file '{path}' does not exist")
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            from ember.frontends.onnx import convert

            return convert(path, input=input, output=output, example_input=example_input)
        if suffix == ".xml":
            from ember.io import read_ir

            if output is not None:
                raise ConversionError("ember: output= selection applies to framework models, not IR")
            model = read_ir(path)
            return _reshape_inputs(model, input) if input is not None else model
        if suffix == ".tflite":
            from ember.frontends.tflite import convert as convert_tflite

            return convert_tflite(path, input=input, output=output, example_input=example_input)
        if suffix in (".pt", ".pth", ".jit", ".torchscript"):
            from ember.frontends.pytorch import convert as convert_torch

            return convert_torch(path, example_input=example_input, input=input, output=output)
        if suffix == ".pb" or (path.is_dir() and (path / "saved_model.pb").exists()):
            from ember.frontends.tensorflow import convert as convert_tf

            return convert_tf(path, input=input, output=output, example_input=example_input)
        raise ConversionError(f"ember: cannot convert '{path}': supported formats are .onnx, .tflite, "
                              "TorchScript .pt, TensorFlow SavedModel folders and frozen .pb, and IR .xml")
    if any(c.__module__.split(".")[0] == "torch" for c in type(src).__mro__):
        from ember.frontends.pytorch import convert as convert_torch

        return convert_torch(src, example_input=example_input, input=input, output=output)
    if any(c.__module__.split(".")[0] in ("tensorflow", "keras", "tf_keras") for c in type(src).__mro__):
        from ember.frontends.tensorflow import convert as convert_tf

        return convert_tf(src, input=input, output=output, example_input=example_input)
    raise ConversionError(f"ember: cannot convert an object of type {type(src).__name__}")


def _per_input(model: Model, value: Any, what: str) -> dict[int, Any]:
    """``value`` for each input index: one value for all inputs, or a ``{name: value}`` map."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        out = {}
        for name, v in value.items():
            port = model.input(name)
            out[model.inputs.index(port)] = v
        return out
    return {i: value for i in range(len(model.inputs))}


def _set_layouts(model: Model, layout: Any) -> None:
    for i, lay in _per_input(model, layout, "layout").items():
        param = model.get_parameters()[i]
        param.set_layout(Layout(str(lay)))


def _channel_axis(model: Model, index: int, channels: int) -> int:
    param = model.get_parameters()[index]
    lay = param.get_layout()
    if not lay.empty and lay.has_name("C"):
        return lay.get_index_by_name("C") % len(param.partial_shape)
    shape = param.partial_shape
    if not shape.rank_is_static:
        raise ConversionError(f"ember: input '{param.friendly_name}' has a dynamic rank; give --layout")
    fits = [a for a, d in enumerate(shape) if d.is_static and d.get_length() == channels]
    if len(shape) == 4 and 1 in fits:
        return 1
    if fits:
        return fits[-1]
    raise ConversionError(f"ember: cannot tell the channel axis of input '{param.friendly_name}' "
                          f"{shape} for {channels} values; give --layout")


def _embed_normalization(model: Model, mean: Any, scale: Any, reverse: bool) -> None:
    import ember.opset as ops
    from ember.graph.core_ops import Parameter

    means, scales = _per_input(model, mean, "mean"), _per_input(model, scale, "scale")
    for i, param in enumerate(list(model.get_parameters())):
        m, s = means.get(i), scales.get(i)
        if m is None and s is None and not reverse:
            continue
        if not param.element_type.is_real:
            continue
        consumers = param.output(0).targets
        new = Parameter(param.element_type, param.partial_shape, param.friendly_name)
        new.output(0).set_names(param.output(0).names)
        new.output(0).rt_info.update(param.output(0).rt_info)
        x: Any = new.output(0)
        rank = len(param.partial_shape)
        if reverse:
            axis = _channel_axis(model, i, 3)
            x = ops.gather(x, ops.constant(np.array([2, 1, 0], np.int64)), ops.constant(np.int64(axis))).output(0)
        for values, op in ((m, ops.subtract), (s, ops.divide)):
            if values is None:
                continue
            arr = np.atleast_1d(np.asarray(values, dtype=param.element_type.dtype))
            shape = [1] * rank
            if arr.size > 1:
                shape[_channel_axis(model, i, arr.size)] = arr.size
            x = op(x, ops.constant(arr.reshape(shape))).output(0)
        for inp in consumers:
            inp.replace_source_output(x)
        param.output(0).set_names(set())
        model._parameters[i] = new
    model.validate_nodes_and_infer_types()


def parse_values(text: str) -> Any:
    """ovc's value syntax: ``[123,117,104]`` for all inputs or ``data[123,117,104],x[1]``."""
    text = text.strip()
    if text.startswith("["):
        return [float(v) for v in text.strip("[]").split(",") if v.strip()]
    out: dict[str, list[float]] = {}
    for part in _split_top(text):
        name, _, rest = part.partition("[")
        out[name.strip()] = [float(v) for v in rest.rstrip("]").split(",") if v.strip()]
    return out


def _split_top(text: str) -> Sequence[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur:
        parts.append("".join(cur))
    return [p for p in (p.strip() for p in parts) if p]


def parse_input_arg(text: str) -> list[tuple]:
    """ovc's ``--input``: ``data[1,3,224,224]``, ``x{i32}[?,16..64]``, ``a,b``."""
    specs: list[tuple] = []
    for part in _split_top(text):
        name, shape, et = part, None, None
        if "{" in name:
            head, _, tail = name.partition("{")
            et, _, rest = tail.partition("}")
            name = head + rest
        if "[" in name:
            head, _, tail = name.partition("[")
            shape = tail.rstrip("]")
            name = head
        name = name.strip()
        spec: tuple = (name,)
        if shape is not None:
            spec += (shape,)
        if et is not None:
            spec += (et.strip(),) if shape is not None else (None, et.strip())
        specs.append(spec)
    return specs
