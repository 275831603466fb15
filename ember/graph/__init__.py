"""The graph layer: element types, shapes, layouts, nodes, the op registry and Model."""

from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.layout import Layout
from ember.graph.model import Model
from ember.graph.node import REQUIRED, Attr, Input, Node, Output, as_output, constant_value
from ember.graph.registry import builder, get_op, op_types, register_op
from ember.graph.shape import Dimension, PartialShape, Shape
from ember.graph.types import Type

__all__ = [
    "REQUIRED", "Attr", "Constant", "Dimension", "Input", "Layout", "Model", "Node", "Output",
    "Parameter", "PartialShape", "Result", "Shape", "Type", "as_output", "builder",
    "constant_value", "get_op", "op_types", "register_op",
]
