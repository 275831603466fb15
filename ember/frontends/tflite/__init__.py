"""The TFLite frontend: ``convert("model.tflite")`` turns a TFLite flatbuffer into an ember ``Model``.

The flatbuffer is read by ember's own small reader of TFLite's schema (no TensorFlow, no
``tflite``/``flatbuffers`` package); one converter per builtin op (and per supported custom op)
lives in ``ember.frontends.tflite.ops`` and registers itself with ``@converter``.
"""

from ember.frontends.tflite.convert import convert, load, unsupported
from ember.frontends.tflite.registry import converter, supported_ops

__all__ = ["convert", "converter", "load", "supported_ops", "unsupported"]
