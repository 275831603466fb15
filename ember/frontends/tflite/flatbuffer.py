"""A small, bounds-checked reader of FlatBuffers tables (the container format of ``.tflite``).

Only reading is needed: a table is a position in the buffer whose first word points (backwards)
to a vtable of 16-bit field offsets; field ``i`` of a table is at ``vtable[2 + i]``, absent
fields take the schema's default. Vectors of scalars come back as numpy views of the buffer
(no copy); any offset outside the buffer raises ``ConversionError`` instead of reading garbage.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from ember.errors import ConversionError

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")


def _bad(what: str) -> ConversionError:
    return ConversionError(f"ember: malformed TFLite flatbuffer ({what})")


class Table:
    """One FlatBuffers table at byte ``pos`` of ``buf``."""

    __slots__ = ("buf", "pos", "_vt", "_vt_len")

    def __init__(self, buf: memoryview, pos: int) -> None:
        n = len(buf)
        if pos < 0 or pos + 4 > n:
            raise _bad(f"table offset {pos} outside the file")
        vt = pos - _I32.unpack_from(buf, pos)[0]
        if vt < 0 or vt + 4 > n:
            raise _bad(f"vtable offset {vt} outside the file")
        vt_len = _U16.unpack_from(buf, vt)[0]
        if vt_len < 4 or vt + vt_len > n:
            raise _bad("vtable size")
        self.buf, self.pos, self._vt, self._vt_len = buf, pos, vt, vt_len

    @classmethod
    def root(cls, data: bytes | bytearray | memoryview) -> Table:
        buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        if len(buf) < 8:
            raise _bad("file shorter than a header")
        return cls(buf, _U32.unpack_from(buf, 0)[0])

    def _field(self, i: int) -> int:
        """Absolute position of field ``i``, or 0 when the table does not store it."""
        slot = 4 + 2 * i
        if slot + 2 > self._vt_len:
            return 0
        off = _U16.unpack_from(self.buf, self._vt + slot)[0]
        return self.pos + off if off else 0

    def has(self, i: int) -> bool:
        return self._field(i) != 0

    def scalar(self, i: int, fmt: str, default: Any = 0) -> Any:
        """Field ``i`` as a struct scalar (``"b"``, ``"i"``, ``"f"``, ``"?"``, ``"Q"``, ...)."""
        p = self._field(i)
        if not p:
            return default
        try:
            return struct.unpack_from("<" + fmt, self.buf, p)[0]
        except struct.error:
            raise _bad(f"scalar field {i}") from None

    def _target(self, i: int) -> int:
        p = self._field(i)
        if not p:
            return 0
        if p + 4 > len(self.buf):
            raise _bad(f"offset field {i}")
        return p + _U32.unpack_from(self.buf, p)[0]

    def table(self, i: int) -> Table | None:
        t = self._target(i)
        return Table(self.buf, t) if t else None

    def _vector(self, i: int) -> tuple[int, int]:
        """``(start of elements, element count)`` of vector field ``i`` (``(0, 0)`` if absent)."""
        t = self._target(i)
        if not t:
            return 0, 0
        if t + 4 > len(self.buf):
            raise _bad(f"vector field {i}")
        return t + 4, _U32.unpack_from(self.buf, t)[0]

    def vector(self, i: int, dtype: Any) -> np.ndarray:
        """Vector field ``i`` of scalars as a read-only numpy view (empty when absent)."""
        start, count = self._vector(i)
        dt = np.dtype(dtype).newbyteorder("<")
        if start + count * dt.itemsize > len(self.buf):
            raise _bad(f"vector field {i} runs past the end of the file")
        return np.frombuffer(self.buf, dt, count, start) if count else np.zeros(0, dt)

    def tables(self, i: int) -> list[Table]:
        """Vector field ``i`` of tables."""
        start, count = self._vector(i)
        if start + 4 * count > len(self.buf):
            raise _bad(f"table vector field {i}")
        return [Table(self.buf, start + 4 * k + _U32.unpack_from(self.buf, start + 4 * k)[0]) for k in range(count)]

    def string(self, i: int, default: str = "") -> str:
        start, count = self._vector(i)
        if not start:
            return default
        if start + count > len(self.buf):
            raise _bad(f"string field {i}")
        return bytes(self.buf[start:start + count]).decode("utf-8", errors="replace")

    def strings(self, i: int) -> list[str]:
        start, count = self._vector(i)
        out = []
        for k in range(count):
            p = start + 4 * k
            s = p + _U32.unpack_from(self.buf, p)[0]
            n = _U32.unpack_from(self.buf, s)[0]
            out.append(bytes(self.buf[s + 4:s + 4 + n]).decode("utf-8", errors="replace"))
        return out
