"""The safetensors reader against files written by hand and by the safetensors package."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from ember.errors import ConversionError
from ember.zoo.safetensors import read_safetensors, read_safetensors_metadata

CODES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64",
         np.dtype("int8"): "I8", np.dtype("uint8"): "U8", np.dtype("bool"): "BOOL", np.dtype("float64"): "F64"}


def write(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    header: dict = {"__metadata__": metadata} if metadata else {}
    blob = b""
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": CODES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + blob


TENSORS = {
    "w": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    "nan": np.array([np.nan, np.inf, -0.0], np.float32),
    "h": np.linspace(-1, 1, 5).astype(np.float16),
    "ids": np.array([[1, -2], [3, 2**40]], np.int64),
    "flags": np.array([True, False]),
    "empty": np.zeros((0, 4), np.float32),
    "scalar": np.array(3.5),
}


def test_handmade_file_round_trips() -> None:
    got = read_safetensors(write(TENSORS, {"format": "pt"}))
    assert set(got) == set(TENSORS)
    for k, v in TENSORS.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)
    assert read_safetensors_metadata(write(TENSORS, {"format": "pt"})) == {"format": "pt"}


def test_bf16_becomes_f32() -> None:
    values = np.array([1.0, -2.5, 3e38], np.float32)
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    head = json.dumps({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    got = read_safetensors(struct.pack("<Q", len(head)) + head + raw)["x"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, (values.view(np.uint32) & 0xFFFF0000).view(np.float32))


def test_files_written_by_the_safetensors_package(tmp_path) -> None:
    st = pytest.importorskip("safetensors.numpy")
    tensors = {k: v for k, v in TENSORS.items() if k != "scalar"}
    st.save_file(tensors, tmp_path / "m.safetensors", metadata={"k": "v"})
    got = read_safetensors(tmp_path / "m.safetensors")
    for k, v in tensors.items():
        np.testing.assert_array_equal(got[k], v)


def _bad(kind: str) -> bytes:
    good = write({"w": np.ones(4, np.float32)})
    head = json.loads(good[8:8 + struct.unpack("<Q", good[:8])[0]])
    if kind == "short":
        return b"\x01\x02"
    if kind == "huge header length":
        return struct.pack("<Q", 2**40) + good[8:]
    if kind == "not json":
        return struct.pack("<Q", 3) + b"{x}"
    if kind == "truncated body":
        return good[:-3]
    if kind == "offsets outside":
        head["w"]["data_offsets"] = [0, 1000]
    elif kind == "size mismatch":
        head["w"]["shape"] = [5]
    elif kind == "unknown dtype":
        head["w"]["dtype"] = "C64"
    elif kind == "negative dim":
        head["w"]["shape"] = [-4]
    raw = json.dumps(head).encode()
    return struct.pack("<Q", len(raw)) + raw + good[8 + struct.unpack("<Q", good[:8])[0]:]


@pytest.mark.parametrize("kind", ["short", "huge header length", "not json", "truncated body", "offsets outside",
                                  "size mismatch", "unknown dtype", "negative dim"])
def test_malformed_files_raise_conversion_errors(kind: str) -> None:
    with pytest.raises(ConversionError, match="ember: "):
        read_safetensors(_bad(kind), name="bad.safetensors")
