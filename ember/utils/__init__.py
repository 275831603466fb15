"""``openvino.utils`` counterparts that user code imports (``from ember.utils.types import
get_dtype``)."""

from ember.utils import types  # noqa: F401

__all__ = ["types"]
