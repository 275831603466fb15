"""Turn a TensorFlow model (SavedModel folder, frozen ``.pb``, Keras model, ``tf.function``) into
a frozen ``GraphDef`` plus the names of its inputs and outputs.

TensorFlow is imported here, lazily, only for these inputs: it reads the SavedModel and freezes
variables into constants (``convert_variables_to_constants_v2``). The GraphDef's nodes are then
converted by ember's own converters. As in OpenVINO's TensorFlow frontend, a SavedModel's
``serving_default`` signature (else its only signature) picks the inputs and outputs, which are
named by the signature's argument and output keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.errors import ConversionError


@dataclass
class Frozen:
    """A frozen graph: its GraphDef, input tensors (``"node:0"``) with the names the model
    gives them, and output tensors with theirs."""

    graph_def: Any
    inputs: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)


def import_tensorflow() -> Any:
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
    except ModuleNotFoundError:
        raise ConversionError("ember: converting TensorFlow models needs TensorFlow: pip install tensorflow-cpu "
                              "(a .tflite file converts without it)") from None
    return tf


def is_tensorflow_object(obj: Any) -> bool:
    """Whether ``obj`` is a Keras model, a ``tf.function`` or a concrete function (checked by
    module name, without importing TensorFlow)."""
    return any(c.__module__.split(".")[0] in ("tensorflow", "keras", "tf_keras") for c in type(obj).__mro__)


def _freeze(func: Any) -> Any:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # control flow stays functional (While with body/cond functions), which converts to Loop
    return convert_variables_to_constants_v2(func, lower_control_flow=False)


def _from_concrete(func: Any, input_names: list[str] | None, output_names: list[str] | None) -> Frozen:
    frozen = _freeze(func)
    gd = frozen.graph.as_graph_def()
    ins = [t.name for t in frozen.inputs if t.dtype.name != "resource"]
    outs = [t.name for t in frozen.outputs]
    in_names = input_names if input_names and len(input_names) == len(ins) else [n.split(":")[0] for n in ins]
    out_names = output_names if output_names and len(output_names) == len(outs) else [n.split(":")[0] for n in outs]
    return Frozen(gd, list(zip(ins, in_names)), list(zip(outs, out_names)))


def _signature_names(func: Any) -> tuple[list[str] | None, list[str] | None]:
    args, kwargs = func.structured_input_signature
    ins = [s.name for s in args if hasattr(s, "name")] + sorted(kwargs) if (args or kwargs) else None
    outs = func.structured_outputs
    if isinstance(outs, dict):
        return ins, sorted(outs)
    return ins, None


def load_saved_model(path: Path) -> Frozen:
    tf = import_tensorflow()
    loaded = tf.saved_model.load(str(path))
    sigs = loaded.signatures
    if "serving_default" in sigs:
        func = sigs["serving_default"]
    elif len(sigs) == 1:
        func = next(iter(sigs.values()))
    else:
        raise ConversionError(f"ember: SavedModel '{path}' has no serving_default signature; its signatures are: "
                              f"{', '.join(sigs) or 'none'}")
    ins, outs = _signature_names(func)
    # the signature's outputs come back as a dict sorted by key, as the frozen function lists them
    return _from_concrete(func, ins, outs)


def load_frozen_pb(path: Path) -> Frozen:
    tf = import_tensorflow()
    gd = tf.compat.v1.GraphDef()
    try:
        gd.ParseFromString(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError
        raise ConversionError(f"ember: '{path}' is not a frozen TensorFlow GraphDef ({e})") from None
    inputs = [(f"{n.name}:0", n.name) for n in gd.node if n.op == "Placeholder"]
    consumed = {i.lstrip("^").split(":")[0] for n in gd.node for i in n.input}
    outputs = [(f"{n.name}:0", n.name) for n in gd.node
               if n.name not in consumed and n.op not in ("NoOp", "Const", "Placeholder", "Assert")]
    return Frozen(gd, inputs, outputs)


def load_object(obj: Any, example_input: Any) -> Frozen:
    """A Keras model, a ``tf.function`` (with an input signature or ``example_input``) or a
    concrete function."""
    tf = import_tensorflow()
    if hasattr(obj, "structured_input_signature") and hasattr(obj, "graph"):  # a ConcreteFunction
        return _from_concrete(obj, *_signature_names(obj))
    if isinstance(obj, tf.keras.Model):
        specs = [tf.TensorSpec(t.shape, t.dtype, name=getattr(t, "name", None)) for t in obj.inputs]
        names = [s.name for s in specs]
        fn = tf.function(lambda *args: obj(list(args) if len(args) > 1 else args[0]))
        out_names = list(getattr(obj, "output_names", []) or [])
        return _from_concrete(fn.get_concrete_function(*specs), names, out_names)
    if hasattr(obj, "get_concrete_function"):
        if example_input is not None:
            args = example_input if isinstance(example_input, (list, tuple)) else [example_input]
            func = obj.get_concrete_function(*[tf.TensorSpec(tf.convert_to_tensor(a).shape,
                                                             tf.convert_to_tensor(a).dtype) for a in args])
        else:
            try:
                func = obj.get_concrete_function()
            except (TypeError, ValueError):
                raise ConversionError("ember: a tf.function without an input_signature needs example_input") from None
        return _from_concrete(func, *_signature_names(func))
    raise ConversionError(f"ember: cannot convert an object of type {type(obj).__name__}")


def load(src: Any, example_input: Any = None) -> Frozen:
    """A frozen graph of ``src``: a SavedModel folder, a frozen ``.pb`` or an in-memory object."""
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if path.is_dir():
            if not (path / "saved_model.pb").exists():
                raise ConversionError(f"ember: folder '{path}' is not a TensorFlow SavedModel (no saved_model.pb)")
            return load_saved_model(path)
        if path.suffix.lower() == ".pb":
            return load_frozen_pb(path)
        raise ConversionError(f"ember: '{path}' is not a TensorFlow model")
    return load_object(src, example_input)
