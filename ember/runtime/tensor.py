"""``Tensor``: an n-dimensional array with an element type, as OpenVINO's Python API has it."""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.errors import EmberError
from ember.graph.shape import PartialShape, Shape
from ember.graph.types import Type, as_type


class Tensor:
    """Data for one input or output.

    ``Tensor(array)`` copies the array; ``Tensor(array, shared_memory=True)`` wraps it without
    copying (changes to the array are seen by the tensor and the other way round).
    ``Tensor(Type.f32, [1, 3])`` allocates zeros.
    """

    __slots__ = ("_data", "_type")

    def __init__(self, array: Any = None, shape: Any = None, *, shared_memory: bool = False,
                 element_type: Any = None) -> None:
        if isinstance(array, (Type, str)) or (array is not None and isinstance(array, type)):
            et = as_type(array)
            dims = tuple(Shape(shape if shape is not None else ()))
            self._type = et
            try:
                self._data = np.zeros(dims, dtype=et.dtype if et is not Type.string else object)
            except (MemoryError, ValueError) as e:
                raise EmberError(f"ember: cannot allocate a {et.name} tensor of shape {list(dims)}: "
                                 f"{type(e).__name__}") from None
            return
        if isinstance(array, Tensor):
            self._type, self._data = array._type, array._data
            return
        if array is None:
            raise EmberError("ember: Tensor needs an array or an element type and shape")
        arr = np.asarray(array)
        et = as_type(element_type) if element_type is not None else Type.from_dtype(arr.dtype)
        if et is Type.string and arr.dtype.kind in "US":
            arr = arr.astype(object)
        self._type = et
        try:
            self._data = arr if shared_memory else np.array(arr, copy=True)
        except MemoryError:
            raise EmberError(f"ember: a tensor of shape {list(arr.shape)} ({arr.nbytes} bytes) does not fit in "
                             "memory to be copied; use shared_memory=True or a smaller batch") from None

    @property
    def data(self) -> np.ndarray:
        """The tensor's array (no copy: writes go into the tensor)."""
        return self._data

    @property
    def element_type(self) -> Type:
        """The tensor's element type."""
        return self._type

    def get_element_type(self) -> Type:
        """The tensor's element type."""
        return self._type

    @property
    def shape(self) -> Shape:
        """The tensor's shape."""
        return Shape(self._data.shape)

    @shape.setter
    def shape(self, value: Any) -> None:
        self.set_shape(value)

    def get_shape(self) -> Shape:
        """The tensor's shape."""
        return self.shape

    def set_shape(self, shape: Any) -> None:
        """Change the shape; a different shape allocates new zeroed storage (the old data is not
        kept)."""
        dims = tuple(PartialShape(shape).to_shape()) if not isinstance(shape, Shape) else tuple(shape)
        if dims != self._data.shape:
            self._data = np.zeros(dims, dtype=self._data.dtype)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(self._data.size)

    def get_size(self) -> int:
        """Number of elements."""
        return self.size

    @property
    def byte_size(self) -> int:
        """Bytes of storage (for sub-byte types: of the unpacked in-memory array)."""
        return int(self._data.nbytes)

    def get_byte_size(self) -> int:
        """Bytes of storage (see ``byte_size``)."""
        return self.byte_size

    def copy_to(self, other: Tensor) -> None:
        """Copy this tensor's data, shape and type into ``other`` (a real copy: later changes to
        either do not show in the other)."""
        other._data = np.array(self._data, copy=True)
        other._type = self._type

    def copy_from(self, source: Any) -> None:
        """Copy ``source`` (a Tensor or an array) into this tensor; a different shape gives this
        tensor new storage of that shape (the element type stays this tensor's)."""
        data = source.data if isinstance(source, Tensor) else np.asarray(source)
        if data.shape != self._data.shape:
            self._data = np.empty(data.shape, dtype=self._data.dtype)
        np.copyto(self._data, data, casting="unsafe")

    @property
    def strides(self) -> tuple[int, ...]:
        """Byte strides of the storage, per axis."""
        return tuple(int(x) for x in self._data.strides)

    def get_strides(self) -> tuple[int, ...]:
        """Byte strides of the storage (see ``strides``)."""
        return self.strides

    def is_continuous(self) -> bool:
        """Whether the elements are stored densely in row-major order."""
        return bool(self._data.flags.c_contiguous)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self._data if dtype is None else self._data.astype(dtype)

    def __repr__(self) -> str:
        return f"<Tensor: shape{self.shape} type: {self._type.name}>"
