"""ember: convert, optimize and run neural networks fast on the CPU at hand.

Code written for OpenVINO runs with ``import ember as ov``.
"""

from __future__ import annotations

import sys
from typing import Any

import ember.ops  # noqa: F401 - registers the op modules' loader with ember.graph.registry (first)
from ember import layout_helpers, op, opset, preprocess, properties, utils  # noqa: F401 - `ov.properties.hint...`, `ov.op`
from ember.errors import EmberError
from ember.graph import Dimension, Layout, Model, PartialShape, Shape, Type
from ember.graph.batch import get_batch, set_batch
from ember.graph.node import Input, Node, Output
from ember.runtime import AsyncInferQueue, CompiledModel, Core, InferRequest, ProfilingInfo, Tensor, read_model

__version__ = "0.1.0"


def tensor_from_file(path: Any) -> Tensor:
    """A u8 Tensor holding the bytes of the file at ``path`` (OpenVINO's ``tensor_from_file``)."""
    import numpy as np

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise EmberError(f"ember: cannot read {path}: {e.strerror or e}") from None
    return Tensor(data, shared_memory=True)


def get_version() -> str:
    """ember's version string (``openvino.get_version()``'s counterpart)."""
    return __version__

# `import ember.opset8 as ops` works like `import openvino.opset8 as ops`.
ConstOutput = Output  # the ports of a compiled model (OpenVINO's ConstOutput)

for _n in range(1, 18):
    sys.modules[f"{__name__}.opset{_n}"] = opset
    globals()[f"opset{_n}"] = opset


def convert_model(input_model: Any, **kwargs: Any) -> Model:
    """Convert a model (``.onnx`` path or ``onnx.ModelProto``) into an optimized ember Model;
    see ``ember.convert.convert_model`` for the options."""
    from ember.convert import convert_model as _convert

    return _convert(input_model, **kwargs)


def save_model(model: Model, output_model: Any, compress_to_fp16: bool = True) -> None:
    """Write ``model`` as OpenVINO IR v11 (``.xml`` + ``.bin`` beside it). Like OpenVINO,
    f32 weights are stored as f16 by default (``compress_to_fp16=False`` keeps f32)."""
    from ember.io import write_ir

    write_ir(model, output_model, compress_to_fp16=compress_to_fp16)


def serialize(model: Model, xml_path: Any, bin_path: Any = None) -> None:
    """Write ``model`` as IR without weight compression (OpenVINO's ``serialize``)."""
    from ember.io import write_ir

    write_ir(model, xml_path, bin_path, compress_to_fp16=False)


def compile_model(model: Any, device_name: str | None = None, config: Any = None) -> CompiledModel:
    """Shortcut for ``Core().compile_model`` (as ``openvino.compile_model``)."""
    return Core().compile_model(model, device_name, config)


__all__ = ["AsyncInferQueue", "CompiledModel", "Core", "Dimension", "EmberError", "InferRequest", "Layout", "Model",
           "PartialShape", "ProfilingInfo", "Shape", "Tensor", "Type", "compile_model", "convert_model", "opset", "read_model", "save_model",
           "serialize", "Dataset", "compress_weights", "quantize", "get_version", "utils",
           "get_batch", "set_batch", "op", "Node", "Output", "Input", "ConstOutput", "tensor_from_file"]

# NNCF's functions at the top level. Imported eagerly (the package is light) so that the name
# `ember.quantize` is the function, not the package `ember/quantize` it lives in.
from ember.quantize import Dataset, compress_weights, quantize  # noqa: E402
