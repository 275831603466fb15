"""Bytes of a ``.bin`` <-> arrays, per element type, exactly as OpenVINO packs them.

Measured on OpenVINO 2026.4: u1 packs 8 values a byte from the high bit down; u2, u4, i4,
nf4 and f4e2m1 pack from the low bits up; u3 packs 8 values into 3 bytes (the low two bits
of each value in bytes 0-1 from the high bits down, the third bit of each in byte 2 from the
high bit down); u6 packs 4 values into 3 bytes (low nibbles in bytes 0-1, high nibble first,
the two high bits of each in byte 2 from the high bits down). Strings are an int32 count,
count + 1 int32 offsets, then the UTF-8 bytes.
"""

from __future__ import annotations

import numpy as np

from ember.errors import IRFormatError
from ember.graph.types import Type

_LOW_FIRST = {Type.u2: 2, Type.u4: 4, Type.i4: 4, Type.nf4: 4, Type.f4e2m1: 4}


def byte_size(t: Type, count: int) -> int:
    """Bytes that ``count`` elements of ``t`` take in a ``.bin`` (not for strings)."""
    if t is Type.u3 or t is Type.u6:
        per_block = 8 if t is Type.u3 else 4
        return -(-count // per_block) * 3
    return -(-count * t.bitwidth // 8)


def decode(buf: memoryview | bytes, t: Type, shape: tuple[int, ...]) -> np.ndarray:
    """The array of ``shape`` stored in ``buf`` (exactly ``byte_size`` bytes; strings: any)."""
    count = int(np.prod(shape, dtype=np.int64))
    if t is Type.string:
        return _decode_strings(buf, count).reshape(shape)
    raw = np.frombuffer(buf, dtype=np.uint8)
    if t is Type.u1:
        vals = np.unpackbits(raw, bitorder="big")[:count]
    elif t in _LOW_FIRST:
        bits = _LOW_FIRST[t]
        per = 8 // bits
        mask = (1 << bits) - 1
        vals = ((raw[:, None] >> (np.arange(per, dtype=np.uint8) * bits)) & mask).reshape(-1)[:count]
        if t is Type.i4:
            vals = vals.astype(np.int8)
            vals = np.where(vals > 7, vals - 16, vals).astype(np.int8)
        elif t is Type.f4e2m1:
            vals = vals.astype(np.uint8).view(t.dtype)
    elif t is Type.u3:
        blocks = raw.reshape(-1, 3)
        low = np.unpackbits(blocks[:, :2], axis=1, bitorder="big").reshape(-1, 8, 2)
        high = np.unpackbits(blocks[:, 2:3], axis=1, bitorder="big").reshape(-1, 8)
        vals = (high << 2 | low[..., 0] << 1 | low[..., 1]).reshape(-1)[:count].astype(np.uint8)
    elif t is Type.u6:
        blocks = raw.reshape(-1, 3)
        low = np.stack([blocks[:, 0] >> 4, blocks[:, 0] & 15, blocks[:, 1] >> 4, blocks[:, 1] & 15], axis=1)
        high = np.stack([(blocks[:, 2] >> s) & 3 for s in (6, 4, 2, 0)], axis=1)
        vals = (high << 4 | low).reshape(-1)[:count].astype(np.uint8)
    else:
        return np.frombuffer(buf, dtype=t.dtype, count=count).reshape(shape)
    return np.asarray(vals, dtype=t.dtype).reshape(shape)


def encode(arr: np.ndarray, t: Type) -> bytes:
    """The bytes OpenVINO would write for ``arr`` held as element type ``t``."""
    if t is Type.string:
        return _encode_strings(arr)
    flat = np.asarray(arr).reshape(-1)
    if t is Type.u1:
        return np.packbits(flat.astype(np.uint8) & 1, bitorder="big").tobytes()
    if t in _LOW_FIRST:
        bits = _LOW_FIRST[t]
        per = 8 // bits
        codes = flat.view(np.uint8) if t is Type.f4e2m1 else flat.astype(np.int16).astype(np.uint8)
        codes = codes & ((1 << bits) - 1)
        pad = (-len(codes)) % per
        codes = np.concatenate([codes, np.zeros(pad, np.uint8)]).reshape(-1, per)
        out = np.zeros(len(codes), np.uint8)
        for k in range(per):
            out |= (codes[:, k] << (k * bits)).astype(np.uint8)
        return out.tobytes()
    if t is Type.u3:
        codes = flat.astype(np.uint8) & 7
        codes = np.concatenate([codes, np.zeros((-len(codes)) % 8, np.uint8)]).reshape(-1, 8)
        low = np.stack([(codes >> 1) & 1, codes & 1], axis=2).reshape(-1, 16)
        b01 = np.packbits(low, axis=1, bitorder="big")
        b2 = np.packbits((codes >> 2) & 1, axis=1, bitorder="big")
        return np.concatenate([b01, b2], axis=1).tobytes()
    if t is Type.u6:
        codes = flat.astype(np.uint8) & 63
        codes = np.concatenate([codes, np.zeros((-len(codes)) % 4, np.uint8)]).reshape(-1, 4)
        low = codes & 15
        high = codes >> 4
        b0 = (low[:, 0] << 4) | low[:, 1]
        b1 = (low[:, 2] << 4) | low[:, 3]
        b2 = (high[:, 0] << 6) | (high[:, 1] << 4) | (high[:, 2] << 2) | high[:, 3]
        return np.stack([b0, b1, b2], axis=1).astype(np.uint8).tobytes()
    return np.ascontiguousarray(flat, dtype=t.dtype).tobytes()


def _encode_strings(arr: np.ndarray) -> bytes:
    items = [str(s).encode("utf-8") for s in np.asarray(arr, dtype=object).reshape(-1)]
    offsets = np.zeros(len(items) + 1, np.int32)
    offsets[1:] = np.cumsum([len(b) for b in items])
    return np.int32(len(items)).tobytes() + offsets.tobytes() + b"".join(items)


def _decode_strings(buf: memoryview | bytes, count: int) -> np.ndarray:
    data = bytes(buf)
    if len(data) < 4:
        raise IRFormatError("ember: a string constant is shorter than its header")
    n = int(np.frombuffer(data, np.int32, 1)[0])
    if n != count or len(data) < 4 * (n + 2):
        raise IRFormatError(f"ember: a string constant holds {n} strings but its shape needs {count}")
    offsets = np.frombuffer(data, np.int32, n + 1, 4)
    base = 4 * (n + 2)
    if np.any(np.diff(offsets) < 0) or offsets[0] < 0 or base + offsets[-1] > len(data):
        raise IRFormatError("ember: a string constant has offsets outside its data")
    out = np.empty(n, dtype=object)
    for i in range(n):
        out[i] = data[base + offsets[i]: base + offsets[i + 1]].decode("utf-8", errors="replace")
    return out
