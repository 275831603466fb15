"""The ONNX frontend: ``convert(model)`` turns an ONNX model into an ember ``Model``.

ONNX ops map onto OpenVINO ops the way OpenVINO's own ONNX frontend maps them; one small
converter function per ONNX op (or per opset range of it) lives in ``ember.frontends.onnx.ops``
and registers itself with ``@converter``.
"""

from ember.frontends.onnx.convert import convert, unsupported_ops
from ember.frontends.onnx.registry import converter, supported_ops

__all__ = ["convert", "converter", "supported_ops", "unsupported_ops"]
