"""Reading a large ONNX file without holding its weights twice.

``onnx.load`` reads the whole file into memory and parses it, so every weight exists as the
file's bytes, then as the parsed message's bytes, then as an ndarray copied from them: three
times a model's weights at the peak, and the freed halves fragment the heap. ``read_skeleton``
instead walks the protobuf wire format of the file and returns the model's bytes *without* the
``raw_data`` of the main graph's large initializers: each such tensor is rewritten to say that
its data is external, in the model file itself at the offset where it lies. The skeleton parses
into a small ``ModelProto``, and ``tensor_value`` later reads each tensor straight from the
file into its own array (the path checks of external data apply unchanged).

Anything unexpected in the wire format (a malformed or unusual file) makes ``read_skeleton``
return None, and the caller reads the file the ordinary way, which reports the real error.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

#: initializers with fewer raw bytes than this stay inline in the skeleton
MIN_EXTERNAL_BYTES = 4096

_MODEL_GRAPH = 7  # ModelProto.graph
_GRAPH_INITIALIZER = 5  # GraphProto.initializer
_TENSOR_RAW_DATA = 9  # TensorProto.raw_data
_TENSOR_EXTERNAL_DATA = 13  # TensorProto.external_data
_TENSOR_DATA_LOCATION = 14  # TensorProto.data_location
_EXTERNAL = 1  # TensorProto.EXTERNAL


class _Unusual(Exception):
    """The file is not in the shape this reader handles; read it the ordinary way."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


class _Reader:
    """Random access to the file's bytes by position, without reading what is skipped."""

    def __init__(self, f: io.RawIOBase, size: int) -> None:
        self.f, self.size = f, size

    def read(self, pos: int, n: int) -> bytes:
        if n < 0 or pos + n > self.size:
            raise _Unusual
        self.f.seek(pos)
        data = self.f.read(n)
        if data is None or len(data) != n:
            raise _Unusual
        return data

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        data = self.read(pos, min(10, end - pos))
        value = shift = 0
        for i, b in enumerate(data):
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value, pos + i + 1
            shift += 7
        raise _Unusual

    def fields(self, pos: int, end: int) -> Iterator[tuple[int, int, int, int, int | None, int]]:
        """(field number, wire type, start of the field's key, start of its payload, payload
        length or None, end of the field) for each field in ``[pos, end)``."""
        while pos < end:
            key, p = self.varint(pos, end)
            field, wire = key >> 3, key & 7
            if field == 0:
                raise _Unusual
            n: int | None = None
            if wire == 0:
                _, stop = self.varint(p, end)
            elif wire == 1:
                stop = p + 8
            elif wire == 5:
                stop = p + 4
            elif wire == 2:
                n, p = self.varint(p, end)
                stop = p + n
            else:  # groups (3, 4) do not occur in ONNX
                raise _Unusual
            if stop > end:
                raise _Unusual
            yield field, wire, pos, p, n, stop
            pos = stop


def _tensor(r: _Reader, start: int, end: int, location: str) -> bytes:
    """One initializer's bytes, its large ``raw_data`` replaced by an external reference."""
    parts: list[bytes] = []
    raw: tuple[int, int] | None = None
    for field, _, key_at, at, n, stop in r.fields(start, end):
        if field in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION):
            return r.read(start, end - start)  # already external (or odd): leave it as it is
        if field == _TENSOR_RAW_DATA and n is not None and n >= MIN_EXTERNAL_BYTES:
            raw = (at, n)
            continue
        parts.append(r.read(key_at, stop - key_at))
    if raw is None:
        return b"".join(parts)
    for k, v in (("location", location), ("offset", str(raw[0])), ("length", str(raw[1]))):
        parts.append(_length_delimited(_TENSOR_EXTERNAL_DATA,
                                       _length_delimited(1, k.encode()) + _length_delimited(2, v.encode())))
    parts.append(_key(_TENSOR_DATA_LOCATION, 0) + _varint(_EXTERNAL))
    return b"".join(parts)


def _graph(r: _Reader, start: int, end: int, location: str) -> bytes:
    parts = []
    for field, wire, key_at, at, _, stop in r.fields(start, end):
        if field == _GRAPH_INITIALIZER and wire == 2:
            parts.append(_length_delimited(field, _tensor(r, at, stop, location)))
        else:
            parts.append(r.read(key_at, stop - key_at))
    return b"".join(parts)


def read_skeleton(f: io.RawIOBase, size: int, path: Path) -> bytes | None:
    """The bytes of the ONNX model in ``f`` (``size`` bytes, the file at ``path``) with the
    main graph's large initializers made external references into ``path`` itself; None when
    the file is not a shape this reader handles."""
    r = _Reader(f, size)
    location = path.name
    try:
        parts = []
        for field, wire, key_at, at, _, stop in r.fields(0, size):
            if field == _MODEL_GRAPH and wire == 2:
                parts.append(_length_delimited(field, _graph(r, at, stop, location)))
            else:
                parts.append(r.read(key_at, stop - key_at))
        return b"".join(parts)
    except (_Unusual, OSError, RecursionError):
        return None
