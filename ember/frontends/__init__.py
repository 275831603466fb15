"""Frontends: read a model from another framework's format and build an ember ``Model``.

Each frontend lives in its own subpackage (``ember.frontends.onnx``) and is imported lazily,
so importing ember never imports a framework it does not need.
"""
