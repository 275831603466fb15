"""One module per family of TFLite op converters; each registers itself with ``@converter``."""
