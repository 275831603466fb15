"""``openvino.op``'s node classes: ``ember.op.Constant(array)``,
``ember.op.Parameter(Type.f32, Shape([1, 3]))``, ``ember.op.Result(output)``."""

from ember.graph.core_ops import Constant, Parameter, Result

__all__ = ["Constant", "Parameter", "Result"]
