"""The TensorFlow frontend: SavedModel folders, frozen GraphDef ``.pb`` files and in-memory Keras
models / ``tf.function`` s, converted from their frozen GraphDef by ember's own converters.

TensorFlow is imported lazily, only to read and freeze these models; ``.tflite`` files go
through ``ember.frontends.tflite`` and need no TensorFlow.
"""

from ember.frontends.tensorflow.convert import convert, converter, supported_ops
from ember.frontends.tensorflow.loader import is_tensorflow_object

__all__ = ["convert", "converter", "is_tensorflow_object", "supported_ops"]
