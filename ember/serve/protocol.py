"""The KServe v2 inference protocol, transport-free: datatypes, JSON tensors, the binary tensor
extension (REST), and the errors every transport maps to its own status codes.

Nothing here imports a web or gRPC library: the REST app and the gRPC servicer both call
these functions, so a tensor decodes the same way whichever way it came in.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.errors import EmberError
from ember.graph.types import Type


class ServeError(EmberError):
    """A request the server refuses; ``status`` is the HTTP code, ``grpc_code`` the gRPC one."""

    status = 500
    grpc_code = "INTERNAL"


class BadRequest(ServeError):
    status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(ServeError):
    status = 404
    grpc_code = "NOT_FOUND"


class PayloadTooLarge(ServeError):
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unavailable(ServeError):
    """The model (version) exists but cannot take requests now (loading, unloading, shutdown)."""

    status = 503
    grpc_code = "UNAVAILABLE"


class QueueFull(ServeError):
    """The model's request queue is at its bound; the client should retry later."""

    status = 503
    grpc_code = "RESOURCE_EXHAUSTED"


# KServe v2 datatype <-> ember element type (every datatype the protocol names)
DATATYPES: dict[str, Type] = {
    "BOOL": Type.boolean, "UINT8": Type.u8, "UINT16": Type.u16, "UINT32": Type.u32, "UINT64": Type.u64,
    "INT8": Type.i8, "INT16": Type.i16, "INT32": Type.i32, "INT64": Type.i64,
    "FP16": Type.f16, "FP32": Type.f32, "FP64": Type.f64, "BF16": Type.bf16, "BYTES": Type.string,
}
_BY_TYPE = {t.name: d for d, t in DATATYPES.items()}


def datatype_of(element_type: Type) -> str:
    """The KServe datatype for an element type; types the protocol lacks (u4, f8...) are refused."""
    try:
        return _BY_TYPE[element_type.name]
    except KeyError:
        raise EmberError(f"ember serve: element type {element_type.name} has no KServe v2 datatype; "
                         f"servable types: {', '.join(sorted(_BY_TYPE))}") from None


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the protocol shows it (``-1`` for a dynamic dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...] | None  # None: dynamic rank

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape) if self.shape else []}

    def check(self, arr: np.ndarray, datatype: str) -> None:
        """Refuse a tensor whose datatype or shape does not fit this input."""
        if datatype != self.datatype:
            raise BadRequest(f"input '{self.name}': datatype {datatype} does not match the model's {self.datatype}")
        if self.shape is None:
            return
        if arr.ndim != len(self.shape) or any(d != -1 and d != a for d, a in zip(self.shape, arr.shape)):
            raise BadRequest(f"input '{self.name}': shape {list(arr.shape)} does not match the model's "
                             f"{list(self.shape)} (-1: any size)")


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequestData:
    """A decoded infer request: arrays by input name plus what the client asked back."""

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: list[RequestedOutput] | None  # None: every output
    binary_output: bool
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise BadRequest(f"{where}: 'shape' must be a list of non-negative integers, got {value!r}")
    return tuple(value)


def _count(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def encode_bytes(arr: np.ndarray) -> bytes:
    """BYTES elements in row-major order, each as a 4-byte little-endian length then the bytes."""
    parts = []
    for item in arr.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def decode_bytes(buf: bytes | memoryview, count: int, where: str) -> np.ndarray:
    """The inverse of :func:`encode_bytes`; exactly ``count`` elements must fill ``buf``."""
    out = np.empty(count, dtype=object)
    view = memoryview(buf)
    pos = 0
    for i in range(count):
        if pos + 4 > len(view):
            raise BadRequest(f"{where}: BYTES data ends after {i} of {count} elements")
        (n,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + n > len(view):
            raise BadRequest(f"{where}: BYTES element {i} claims {n} bytes but only {len(view) - pos} are left")
        out[i] = _text(bytes(view[pos:pos + n]), where)
        pos += n
    if pos != len(view):
        raise BadRequest(f"{where}: {len(view) - pos} bytes left over after {count} BYTES elements")
    return out


def _text(b: bytes, where: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{where}: a BYTES element is not UTF-8 (ember's string tensors hold text)") from None


def decode_raw(buf: bytes | memoryview, datatype: str, shape: Sequence[int], where: str) -> np.ndarray:
    """A tensor from raw little-endian bytes (the binary extension, gRPC ``raw_input_contents``)."""
    count = _count(shape)
    if datatype == "BYTES":
        return decode_bytes(buf, count, where).reshape(shape)
    dtype = np.dtype(DATATYPES[datatype].dtype)
    if len(buf) != count * dtype.itemsize:
        raise BadRequest(f"{where}: {len(buf)} bytes of data for shape {list(shape)} {datatype}, "
                         f"expected {count * dtype.itemsize}")
    return np.frombuffer(buf, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)


def encode_raw(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return encode_bytes(arr)
    return np.ascontiguousarray(arr, dtype=np.dtype(DATATYPES[datatype].dtype).newbyteorder("<")).tobytes()


def decode_json_data(data: Any, datatype: str, shape: Sequence[int], where: str) -> np.ndarray:
    """A tensor from the JSON ``data`` field (flat or nested, row-major)."""
    if not isinstance(data, list):
        raise BadRequest(f"{where}: 'data' must be a list")
    count = _count(shape)
    if datatype == "BYTES":
        flat = list(_flatten(data))
        if not all(isinstance(s, str) for s in flat):
            raise BadRequest(f"{where}: BYTES data must be strings")
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
    elif datatype == "BF16":
        raise BadRequest(f"{where}: BF16 tensors travel as binary data (the binary tensor extension)")
    else:
        dtype = np.dtype(DATATYPES[datatype].dtype)
        flat = list(_flatten(data))
        if datatype == "BOOL":
            if not all(isinstance(v, bool) for v in flat):
                raise BadRequest(f"{where}: BOOL data must be true/false")
        elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
            raise BadRequest(f"{where}: {datatype} data must be numbers")
        try:
            if dtype.kind in "iu":
                if any(isinstance(v, float) for v in flat):
                    raise BadRequest(f"{where}: {datatype} data must be integers")
                info = np.iinfo(dtype)
                if flat and (min(flat) < info.min or max(flat) > info.max):
                    raise BadRequest(f"{where}: a value is out of range for {datatype}")
                arr = np.array(flat, dtype=dtype)
            else:
                arr = np.array(flat, dtype=np.float64).astype(dtype)
        except (OverflowError, ValueError, TypeError) as e:
            raise BadRequest(f"{where}: cannot read data as {datatype}: {e}") from None
    if arr.size != count:
        raise BadRequest(f"{where}: {arr.size} values for shape {list(shape)} ({count} expected)")
    return arr.reshape(shape)


def _flatten(data: Iterable[Any]) -> Iterable[Any]:
    for v in data:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


def json_data(arr: np.ndarray, datatype: str) -> list[Any]:
    """Flat row-major JSON values of an output."""
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
    if datatype in ("FP16", "BF16"):
        return arr.astype(np.float32).reshape(-1).tolist()
    return arr.reshape(-1).tolist()


def parse_infer_request(body: bytes, header_length: int | None) -> InferRequestData:
    """Decode a REST infer body: JSON, or JSON followed by binary tensors when the client sent
    ``Inference-Header-Content-Length`` (the binary tensor extension)."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {header_length} is outside the "
                             f"{len(body)}-byte body")
        head, rest = body[:header_length], memoryview(body)[header_length:]
    else:
        head, rest = body, memoryview(b"")
    try:
        req = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request is not valid JSON: {e}") from None
    if not isinstance(req, dict):
        raise BadRequest("the request must be a JSON object")
    raw_inputs = req.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("the request needs a non-empty 'inputs' list")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    pos = 0
    for i, t in enumerate(raw_inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise BadRequest(f"input {i} must be an object with a 'name'")
        name = t["name"]
        where = f"input '{name}'"
        if name in inputs:
            raise BadRequest(f"{where} is given twice")
        datatype = t.get("datatype")
        if datatype not in DATATYPES:
            raise BadRequest(f"{where}: unknown datatype {datatype!r}; the protocol's: {', '.join(DATATYPES)}")
        shape = _shape(t.get("shape"), where)
        tparams = t.get("parameters") or {}
        if not isinstance(tparams, dict):
            raise BadRequest(f"{where}: 'parameters' must be an object")
        size = tparams.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0:
                raise BadRequest(f"{where}: binary_data_size must be a non-negative integer")
            if pos + size > len(rest):
                raise BadRequest(f"{where}: binary payload truncated: {size} bytes announced, "
                                 f"{len(rest) - pos} left in the body")
            inputs[name] = decode_raw(rest[pos:pos + size], datatype, shape, where)
            pos += size
        elif "data" in t:
            inputs[name] = decode_json_data(t["data"], datatype, shape, where)
        else:
            raise BadRequest(f"{where} has neither 'data' nor binary_data_size")
        datatypes[name] = datatype
    if pos != len(rest):
        raise BadRequest(f"{len(rest) - pos} bytes of binary data follow the inputs that no input claims")
    outputs = None
    if req.get("outputs") is not None:
        if not isinstance(req["outputs"], list):
            raise BadRequest("'outputs' must be a list")
        outputs = []
        for o in req["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise BadRequest("each requested output must be an object with a 'name'")
            op = o.get("parameters") or {}
            if op.get("classification"):
                raise BadRequest(f"output '{o['name']}': the classification extension is not supported")
            outputs.append(RequestedOutput(o["name"], bool(op.get("binary_data", params.get("binary_data_output",
                                                                                             False)))))
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest("'id' must be a string")
    return InferRequestData(inputs, datatypes, outputs, bool(params.get("binary_data_output", False)), rid, params)


def build_infer_response(model_name: str, version: str, request: InferRequestData,
                         results: Mapping[str, tuple[np.ndarray, str]]) -> tuple[bytes, int | None]:
    """The REST response body and, when any output travels as binary, the JSON header length."""
    outs = []
    chunks: list[bytes] = []
    wanted = request.outputs if request.outputs is not None else [
        RequestedOutput(n, request.binary_output) for n in results]
    for o in wanted:
        arr, datatype = results[o.name]
        entry: dict[str, Any] = {"name": o.name, "datatype": datatype, "shape": list(arr.shape)}
        if o.binary or datatype == "BF16":
            raw = encode_raw(arr, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = json_data(arr, datatype)
        outs.append(entry)
    resp: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": outs}
    if request.id is not None:
        resp["id"] = request.id
    head = json.dumps(resp, separators=(",", ":")).encode()
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
