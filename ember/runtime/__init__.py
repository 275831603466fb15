"""The runtime API: ``Core``, ``CompiledModel``, ``InferRequest``, ``AsyncInferQueue``, ``Tensor``
(``from ember.runtime import Core`` works like ``from openvino.runtime import Core``)."""

from ember.graph import Dimension, Layout, Model, PartialShape, Shape, Type
from ember.runtime import properties
from ember.runtime.core import CompiledModel, Core, read_model
from ember.runtime.request import AsyncInferQueue, InferRequest, OVDict, ProfilingInfo
from ember.runtime.tensor import Tensor

__all__ = ["AsyncInferQueue", "CompiledModel", "Core", "Dimension", "InferRequest", "Layout", "Model", "OVDict",
           "PartialShape", "ProfilingInfo", "Shape", "Tensor", "Type", "properties", "read_model"]
