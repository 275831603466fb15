"""Read ``.safetensors`` files: an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and byte range, then the raw little-endian bytes. Nothing in the format
can run code; the reader still checks every range and size against the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ember.errors import ConversionError

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
MAX_HEADER = 100 * 1024 * 1024


def _header(data: bytes | memoryview, source: str) -> tuple[dict[str, Any], int]:
    if len(data) < 8:
        raise ConversionError(f"ember: '{source}' is too short to be a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER or 8 + n > len(data):
        raise ConversionError(f"ember: '{source}': safetensors header length {n} does not fit the file")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"ember: '{source}': the safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ConversionError(f"ember: '{source}': the safetensors header is not a JSON object")
    return header, 8 + n


def read_safetensors(file: str | os.PathLike | bytes, name: str | None = None) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file by name, as numpy arrays in native byte order (copies).

    ``BF16`` tensors become ``float32``. Raises ``ConversionError`` on a malformed file.
    """
    if isinstance(file, (bytes, bytearray)):
        data, source = bytes(file), name or "<bytes>"
    else:
        data, source = Path(file).read_bytes(), name or os.fspath(file)
    header, start = _header(data, source)
    body = len(data) - start
    out: dict[str, np.ndarray] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise ConversionError(f"ember: '{source}': tensor '{key}' has no description")
        dtype = DTYPES.get(info.get("dtype"))  # type: ignore[arg-type]
        if dtype is None:
            raise ConversionError(f"ember: '{source}': tensor '{key}' has unsupported dtype "
                                  f"{info.get('dtype')!r}; supported: {', '.join(DTYPES)}")
        shape = info.get("shape")
        offsets = info.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ConversionError(f"ember: '{source}': tensor '{key}' has a bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise ConversionError(f"ember: '{source}': tensor '{key}' has bad data_offsets {offsets!r}")
        begin, end = offsets
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= begin <= end <= body or end - begin != count * dtype.itemsize:
            raise ConversionError(f"ember: '{source}': tensor '{key}' bytes [{begin}, {end}) do not match its "
                                  f"shape {shape} and dtype {info['dtype']} or lie outside the file")
        arr = np.frombuffer(data, dtype, count=count, offset=start + begin).reshape(shape)
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[key] = arr.astype(arr.dtype.newbyteorder("="), copy=True)
    return out


def read_safetensors_metadata(file: str | os.PathLike | bytes) -> dict[str, str]:
    """The ``__metadata__`` string map of a safetensors file (empty when there is none)."""
    data = bytes(file) if isinstance(file, (bytes, bytearray)) else Path(file).read_bytes()
    header, _ = _header(data, "<bytes>" if isinstance(file, (bytes, bytearray)) else os.fspath(file))
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
