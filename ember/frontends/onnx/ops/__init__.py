"""ONNX op converters, one module per family; each registers itself with ``@converter``."""
