"""ember's exception types: every failure a user can cause raises one of these."""

from __future__ import annotations


class EmberError(Exception):
    """Base class of every error ember raises on purpose."""


class IRFormatError(EmberError):
    """An IR file (.xml/.bin) is malformed, hostile or of an unsupported version."""


class UnsupportedOpError(EmberError):
    """An op type, version or element type is not known to ember."""


class ShapeInferenceError(EmberError):
    """Type or shape inference failed for a node; the message names the node."""


class GraphError(EmberError):
    """The graph itself is invalid: a cycle, a dangling edge, a missing port."""


class InferenceError(EmberError):
    """Inputs given to an inference do not fit the model, or a kernel failed."""


class InferenceCancelled(InferenceError):
    """An inference was stopped: by ``InferRequest.cancel`` or by the ``INFERENCE_TIMEOUT``
    property."""


class ConversionError(EmberError):
    """A frontend could not convert a model."""


class PropertyError(EmberError):
    """An unknown property key or a bad value."""
