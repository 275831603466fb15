"""The runtime API: ``Core``, ``CompiledModel``, ``InferRequest``, ``Tensor``
(``from ember.runtime import Core`` works like ``from openvino.runtime import Core``)."""

from ember.graph import Dimension, Layout, Model, PartialShape, Shape, Type
from ember.runtime.core import CompiledModel, Core, InferRequest, OVDict, read_model
from ember.runtime.tensor import Tensor

__all__ = ["CompiledModel", "Core", "Dimension", "InferRequest", "Layout", "Model", "OVDict", "PartialShape",
           "Shape", "Tensor", "Type", "read_model"]
