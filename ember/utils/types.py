"""Conversions between ember's element types and numpy, as ``openvino.utils.types`` has them
(``get_dtype``, ``get_element_type``, ``get_element_type_str``, ``get_ndarray``, ``get_shape``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.errors import EmberError
from ember.graph.types import Type, as_type

__all__ = ["get_dtype", "get_element_type", "get_element_type_str", "get_ndarray", "get_shape"]


def _from_python(data_type: Any) -> Type:
    if data_type is bool:
        return Type.boolean
    if data_type is int:
        return Type.i32  # as OpenVINO: a Python int of undefined width becomes i32
    if data_type is float:
        return Type.f32
    if data_type is str:
        return Type.string
    try:
        return Type.from_dtype(np.dtype(data_type))
    except (TypeError, ValueError, EmberError) as e:
        raise EmberError(f"ember: no element type for {data_type!r}") from e


def get_element_type(data_type: Any) -> Type:
    """The element type of a numpy dtype, a numpy scalar type or a Python type (``int`` is
    ``i32``, ``float`` is ``f32``, as in OpenVINO)."""
    if isinstance(data_type, Type):
        return data_type
    return _from_python(data_type)


def get_element_type_str(data_type: Any) -> str:
    """The short name of ``get_element_type(data_type)`` (``"f32"``, ``"i64"``, ...)."""
    return get_element_type(data_type).get_type_name()


def get_dtype(openvino_type: Any) -> np.dtype:
    """The numpy dtype that holds elements of ``openvino_type`` (``Type.u8`` -> ``uint8``)."""
    et = as_type(openvino_type)
    if et.is_dynamic:
        raise EmberError(f"ember: element type {et.name} has no numpy dtype")
    return np.dtype(object) if et is Type.string else et.dtype


def get_ndarray(data: Any) -> np.ndarray:
    """``data`` (a Tensor, an array, a scalar or a list) as a numpy array."""
    return np.asarray(data.data if hasattr(data, "data") and not isinstance(data, np.ndarray) else data)


def get_shape(data: Any) -> list[int]:
    """The shape of ``data`` (an array, a Tensor or a scalar) as a list."""
    return list(get_ndarray(data).shape)
