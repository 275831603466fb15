"""Dimensions and shapes: static, dynamic (``?``), bounded intervals (``1..8``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Union

from ember.errors import EmberError

_INF = -1  # max_length of an unbounded dimension, as OpenVINO reports it


class Dimension:
    """One dimension: a fixed length, or an interval ``[min, max]`` with max possibly unbounded.

    ``Dimension()`` is fully dynamic, ``Dimension(5)`` static, ``Dimension(1, 8)`` bounded,
    ``Dimension(-1)`` dynamic as in OpenVINO.
    """

    __slots__ = ("_min", "_max")

    def __init__(self, min_length: int | None = None, max_length: int | None = None) -> None:
        if min_length is None:
            lo, hi = 0, _INF
        elif max_length is None:
            if min_length == -1:
                lo, hi = 0, _INF
            elif min_length < 0:
                raise EmberError(f"ember: invalid dimension {min_length}")
            else:
                lo, hi = int(min_length), int(min_length)
        else:
            lo, hi = int(min_length), int(max_length)
            if lo == -1:
                lo = 0
            if lo < 0 or (hi != _INF and hi < lo):
                raise EmberError(f"ember: invalid dimension interval {min_length}..{max_length}")
        self._min, self._max = lo, hi

    @classmethod
    def dynamic(cls) -> Dimension:
        return cls()

    @classmethod
    def parse(cls, text: str) -> Dimension:
        """Parse ``"5"``, ``"?"``, ``"-1"``, ``"1..8"``, ``"..8"``, ``"2.."``."""
        text = text.strip()
        try:
            if text in ("?", "-1", ""):
                return cls()
            if ".." in text:
                a, b = text.split("..", 1)
                return cls(int(a) if a else 0, int(b) if b else _INF)
            return cls(int(text))
        except ValueError:
            raise EmberError(f"ember: cannot parse dimension '{text}'") from None

    @property
    def is_static(self) -> bool:
        return self._min == self._max

    @property
    def is_dynamic(self) -> bool:
        return not self.is_static

    @property
    def min_length(self) -> int:
        return self._min

    @property
    def max_length(self) -> int:
        return self._max

    def get_min_length(self) -> int:
        return self._min

    def get_max_length(self) -> int:
        return self._max

    def get_length(self) -> int:
        if not self.is_static:
            raise EmberError(f"ember: dimension {self} is not static")
        return self._min

    def get_interval(self) -> tuple[int, int]:
        return self._min, self._max

    def compatible(self, other: Dimension | int) -> bool:
        o = as_dimension(other)
        hi = min(self._max if self._max != _INF else 1 << 62, o._max if o._max != _INF else 1 << 62)
        return max(self._min, o._min) <= hi

    def contains(self, value: int) -> bool:
        return value >= self._min and (self._max == _INF or value <= self._max)

    def refines(self, other: Dimension) -> bool:
        return self._min >= other._min and (other._max == _INF or (self._max != _INF and self._max <= other._max))

    def merge(self, other: Dimension | int) -> Dimension:
        """The intersection of two dimensions (raises when they cannot be equal)."""
        o = as_dimension(other)
        lo = max(self._min, o._min)
        hi = o._max if self._max == _INF else (self._max if o._max == _INF else min(self._max, o._max))
        if hi != _INF and hi < lo:
            raise EmberError(f"ember: dimensions {self} and {o} are incompatible")
        return Dimension(lo, hi)

    def __int__(self) -> int:
        return self.get_length()

    def __index__(self) -> int:
        return self.get_length()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, int):
            return self.is_static and self._min == other
        if isinstance(other, Dimension):
            return (self._min, self._max) == (other._min, other._max)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._min, self._max))

    def __add__(self, other: Dimension | int) -> Dimension:
        o = as_dimension(other)
        hi = _INF if _INF in (self._max, o._max) else self._max + o._max
        return Dimension(self._min + o._min, hi)

    def __mul__(self, other: Dimension | int) -> Dimension:
        o = as_dimension(other)
        hi = _INF if _INF in (self._max, o._max) else self._max * o._max
        return Dimension(self._min * o._min, hi)

    def __str__(self) -> str:
        if self.is_static:
            return str(self._min)
        if self._min == 0 and self._max == _INF:
            return "?"
        lo = str(self._min) if self._min else ""
        hi = str(self._max) if self._max != _INF else ""
        return f"{lo}..{hi}"

    def __repr__(self) -> str:
        return f"<Dimension: {self}>"

    def to_string(self) -> str:
        return str(self)


def as_dimension(value: Any) -> Dimension:
    if isinstance(value, Dimension):
        return value
    if isinstance(value, str):
        return Dimension.parse(value)
    if isinstance(value, tuple) and len(value) == 2:
        return Dimension(value[0], value[1])
    return Dimension(int(value))


ShapeLike = Union["PartialShape", Iterable[Any], str]


class PartialShape:
    """A shape whose rank and dimensions may be dynamic.

    ``PartialShape([1, 3, -1, Dimension(16, 64)])``, ``PartialShape("1..8,?,3")``,
    ``PartialShape.dynamic()`` (unknown rank).
    """

    __slots__ = ("_dims",)

    def __init__(self, dims: ShapeLike | None = None) -> None:
        if isinstance(dims, PartialShape):
            self._dims: tuple[Dimension, ...] | None = dims._dims
        elif isinstance(dims, str):
            text = dims.strip().strip("[]{}")
            if text in ("...", "??"):
                self._dims = None
            else:
                self._dims = tuple(Dimension.parse(t) for t in text.split(",")) if text else ()
        elif dims is None:
            self._dims = ()
        else:
            self._dims = tuple(as_dimension(d) for d in dims)

    @classmethod
    def dynamic(cls, rank: int | None = None) -> PartialShape:
        p = cls.__new__(cls)
        p._dims = None if rank is None else tuple(Dimension() for _ in range(rank))
        return p

    @property
    def rank(self) -> Dimension:
        return Dimension() if self._dims is None else Dimension(len(self._dims))

    @property
    def rank_is_static(self) -> bool:
        return self._dims is not None

    @property
    def is_static(self) -> bool:
        return self._dims is not None and all(d.is_static for d in self._dims)

    @property
    def is_dynamic(self) -> bool:
        return not self.is_static

    @property
    def dims(self) -> tuple[Dimension, ...]:
        if self._dims is None:
            raise EmberError("ember: the shape has a dynamic rank")
        return self._dims

    def get_dimension(self, index: int) -> Dimension:
        """Dimension ``index`` (``shape[index]``)."""
        return self[index]

    @property
    def all_non_negative(self) -> bool:
        """Whether no static dimension is negative (always true for a valid shape)."""
        return not self.rank_is_static or all(d.is_dynamic or d.get_length() >= 0 for d in self)

    def same_scheme(self, other: ShapeLike) -> bool:
        """Whether both have the same rank (or both a dynamic rank) and every dimension is the
        same: equal when static, dynamic in both places otherwise."""
        o = other if isinstance(other, PartialShape) else PartialShape(other)
        if not self.rank_is_static or not o.rank_is_static:
            return not self.rank_is_static and not o.rank_is_static
        return len(self) == len(o) and all((a.is_dynamic and b.is_dynamic) or a == b for a, b in zip(self, o))

    def to_shape(self) -> Shape:
        if not self.is_static:
            raise EmberError(f"ember: shape {self} is not static")
        return Shape([d.get_length() for d in self.dims])

    def get_shape(self) -> Shape:
        return self.to_shape()

    def get_min_shape(self) -> Shape:
        return Shape([d.min_length for d in self.dims])

    def get_max_shape(self) -> Shape:
        return Shape([d.max_length for d in self.dims])

    def compatible(self, other: ShapeLike) -> bool:
        o = as_partial_shape(other)
        if self._dims is None or o._dims is None:
            return True
        return len(self._dims) == len(o._dims) and all(a.compatible(b) for a, b in zip(self._dims, o._dims))

    def refines(self, other: ShapeLike) -> bool:
        o = as_partial_shape(other)
        if o._dims is None:
            return True
        if self._dims is None or len(self._dims) != len(o._dims):
            return False
        return all(a.refines(b) for a, b in zip(self._dims, o._dims))

    def accepts(self, shape: Iterable[int]) -> bool:
        """Whether a concrete shape fits this partial shape."""
        shape = tuple(shape)
        if self._dims is None:
            return True
        return len(shape) == len(self._dims) and all(d.contains(s) for d, s in zip(self._dims, shape))

    def __len__(self) -> int:
        return len(self.dims)

    def __iter__(self) -> Iterator[Dimension]:
        return iter(self.dims)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return PartialShape(self.dims[index])
        return self.dims[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PartialShape):
            return self._dims == other._dims
        if isinstance(other, (list, tuple, Shape)):
            return self._dims is not None and self._dims == tuple(as_dimension(d) for d in other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._dims)

    def __str__(self) -> str:
        if self._dims is None:
            return "[...]"
        return "[" + ",".join(str(d) for d in self._dims) + "]"

    def __repr__(self) -> str:
        return f"<PartialShape: {self}>"

    def to_string(self) -> str:
        return str(self)

    def ir_string(self) -> str:
        """As the IR writes it: ``1..8,?,16..64,3``; ``...`` for a dynamic rank."""
        if self._dims is None:
            return "..."
        return ",".join(str(d) for d in self._dims)


def as_partial_shape(value: Any) -> PartialShape:
    if isinstance(value, PartialShape):
        return value
    if isinstance(value, (int,)):
        return PartialShape([value])
    return PartialShape(value)


class Shape(tuple):
    """A static shape: a tuple of ints with OpenVINO's ``Shape`` accessors."""

    def __new__(cls, dims: Iterable[Any] = ()) -> Shape:
        return super().__new__(cls, (int(d) for d in dims))

    def to_string(self) -> str:
        return "[" + ",".join(str(d) for d in self) + "]"

    def __str__(self) -> str:
        return self.to_string()

    def __repr__(self) -> str:
        return f"<Shape: {self}>"
