"""Reading ONNX files: the model proto, tensors (with path-checked external data), types.

External data is read by ember itself, never by ``onnx.load``: every ``location`` is resolved
against the model's folder and refused when it would leave that folder (absolute paths,
``..``, symbolic links pointing outside, NUL bytes), must name a regular file, and its
``offset``/``length`` must be integers within the file. ``check_structure`` refuses model-local
functions that call themselves (directly or through others) and subgraphs nested deeper than
``MAX_GRAPH_DEPTH``; sparse initializers are checked (index ranges, counts, size) before a
dense array is made. Every failure is a ``ConversionError`` naming the tensor or function.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ember.errors import ConversionError, EmberError, UnsupportedOpError
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type

_TYPES: dict[int, Type] = {
    TensorProto.FLOAT: Type.f32, TensorProto.UINT8: Type.u8, TensorProto.INT8: Type.i8,
    TensorProto.UINT16: Type.u16, TensorProto.INT16: Type.i16, TensorProto.INT32: Type.i32,
    TensorProto.INT64: Type.i64, TensorProto.STRING: Type.string, TensorProto.BOOL: Type.boolean,
    TensorProto.FLOAT16: Type.f16, TensorProto.DOUBLE: Type.f64, TensorProto.UINT32: Type.u32,
    TensorProto.UINT64: Type.u64, TensorProto.BFLOAT16: Type.bf16,
    TensorProto.FLOAT8E4M3FN: Type.f8e4m3, TensorProto.FLOAT8E5M2: Type.f8e5m2,
    TensorProto.UINT4: Type.u4, TensorProto.INT4: Type.i4, TensorProto.FLOAT4E2M1: Type.f4e2m1,
    TensorProto.FLOAT8E8M0: Type.f8e8m0, TensorProto.UINT2: Type.u2,
    TensorProto.FLOAT8E4M3FNUZ: Type.f8e4m3fnuz, TensorProto.FLOAT8E5M2FNUZ: Type.f8e5m2fnuz,
    TensorProto.INT2: Type.i2,
}
_ONNX_OF: dict[Type, int] = {t: k for k, t in _TYPES.items()}
#: element types whose raw bytes are the little-endian numpy array as it is
_PLAIN_DTYPES: dict[int, np.dtype] = {k: np.dtype(v).newbyteorder("<") for k, v in {
    TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16,
    TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8, TensorProto.INT16: np.int16,
    TensorProto.UINT16: np.uint16, TensorProto.INT32: np.int32, TensorProto.UINT32: np.uint32,
    TensorProto.INT64: np.int64, TensorProto.UINT64: np.uint64}.items()}
#: how deeply subgraphs (If/Loop/Scan bodies) may nest
MAX_GRAPH_DEPTH = 64
#: the largest dense array a sparse initializer may expand to
MAX_SPARSE_DENSE_BYTES = 1 << 32
#: ONNX files at least this large are read without their weights first (``skeleton.py``)
SKELETON_MIN_BYTES = 1 << 20


def element_type(onnx_type: int, where: str = "") -> Type:
    """The ember element type of an ONNX ``TensorProto.DataType`` value."""
    t = _TYPES.get(onnx_type)
    if t is None:
        name = TensorProto.DataType.Name(onnx_type) if onnx_type in TensorProto.DataType.values() \
            else str(onnx_type)
        raise UnsupportedOpError(f"ember: ONNX element type {name}{where} is not supported")
    return t


def onnx_type(t: Type) -> int:
    """The ONNX ``TensorProto.DataType`` of an ember element type."""
    if t not in _ONNX_OF:
        raise UnsupportedOpError(f"ember: element type {t} has no ONNX equivalent")
    return _ONNX_OF[t]


def load_model(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, Path | None]:
    """Parse an ONNX file (external data is left for ``tensor_value`` to read) or take a proto."""
    if isinstance(model, onnx.ModelProto):
        check_structure(model)
        return model, None
    if isinstance(model, (bytes, bytearray)):
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as e:  # noqa: BLE001 - protobuf raises several kinds
            raise ConversionError(f"ember: the bytes given are not an ONNX model: {e}") from None
        check_structure(proto)
        return proto, None
    path = Path(model)
    if not path.is_file():
        raise ConversionError(f"ember: ONNX model file '{path}' does not exist or is not a regular file")
    try:
        proto = _load_skeleton(path)
        if proto is None:
            proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"ember: '{path}' is not a readable ONNX model: {e}") from None
    check_structure(proto, str(path))
    return proto, path.resolve().parent


def _load_skeleton(path: Path) -> onnx.ModelProto | None:
    """A large file's proto with its big initializers left in the file (``skeleton.py``), so
    that each weight is read once, straight into its array; None for a small or unusual file."""
    from ember.frontends.onnx.skeleton import read_skeleton
    from ember.io.files import open_regular

    real = path.resolve()
    f, size = open_regular(real, "ONNX model file", ConversionError)
    with f:
        if size < SKELETON_MIN_BYTES:
            return None
        skeleton = read_skeleton(f, size, real)
    return None if skeleton is None else onnx.load_from_string(skeleton)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    out = []
    for a in node.attribute:
        if a.HasField("g"):
            out.append(a.g)
        out.extend(a.graphs)
    return out


def _check_names(g: Any, source: str) -> None:
    """Every tensor name must be text: protobuf hands a name that is not valid UTF-8 back
    as ``bytes``, which nothing downstream expects."""
    groups = [("graph input", [getattr(v, "name", v) for v in getattr(g, "input", ())]),
              ("graph output", [getattr(v, "name", v) for v in getattr(g, "output", ())]),
              ("initializer", [t.name for t in getattr(g, "initializer", ())]),
              ("value_info", [v.name for v in getattr(g, "value_info", ())])]
    for n in g.node:
        groups.append((f"node '{n.name}' ({n.op_type!r})", [*n.input, *n.output, n.name, n.op_type, n.domain]))
    for what, names in groups:
        for name in names:
            if not isinstance(name, str):
                raise ConversionError(f"ember: {source}: {what} has a name or op type that is not valid UTF-8 "
                                      f"({bytes(name)[:40]!r}); refused")


def check_structure(proto: onnx.ModelProto, source: str = "the model") -> None:
    """Refuse what would recurse without end when converted: model-local functions that call
    themselves (directly or through other functions) and subgraphs nested too deeply. The
    walk is iterative, so a hostile model cannot exhaust Python's stack here."""
    stack: list[tuple[onnx.GraphProto, int]] = [(proto.graph, 0)]
    while stack:
        g, depth = stack.pop()
        if depth > MAX_GRAPH_DEPTH:
            raise ConversionError(f"ember: {source}: subgraphs nest more than {MAX_GRAPH_DEPTH} deep (graph "
                                  f"'{g.name}'); refused")
        _check_names(g, source)
        for n in g.node:
            stack.extend((sub, depth + 1) for sub in _subgraphs(n))
    for f in proto.functions:
        _check_names(f, source)
    for o in proto.opset_import:
        if not isinstance(o.domain, str):
            raise ConversionError(f"ember: {source}: an opset domain is not valid UTF-8; refused")
    local = {(f.domain, f.name): f for f in proto.functions}
    if not local:
        return

    def calls(f: onnx.FunctionProto) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        todo: list[tuple[Any, int]] = [(f, 0)]
        while todo:
            g, depth = todo.pop()
            if depth > MAX_GRAPH_DEPTH:
                raise ConversionError(f"ember: {source}: function '{f.name}' nests subgraphs more than "
                                      f"{MAX_GRAPH_DEPTH} deep; refused")
            for n in g.node:
                if (n.domain, n.op_type) in local:
                    out.add((n.domain, n.op_type))
                todo.extend((sub, depth + 1) for sub in _subgraphs(n))
        return out

    edges = {k: calls(f) for k, f in local.items()}
    state: dict[tuple[str, str], int] = {}  # 1: on the current path, 2: done
    for start in edges:
        if start in state:
            continue
        path = [start]
        iters = [iter(sorted(edges[start]))]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                names = " -> ".join(f"{d + '.' if d else ''}{n}" for d, n in cycle)
                raise ConversionError(f"ember: {source}: model-local functions call themselves ({names}); "
                                      "such a model cannot be expanded")
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(edges[nxt])))


def _external_bytes(t: TensorProto, base_dir: Path | None) -> bytes:
    f, offset, n, location = _external_range(t, base_dir)
    with f:
        f.seek(offset)
        data = f.read(n)
    if len(data) != n:
        raise ConversionError(f"ember: tensor '{t.name}': '{location}' changed while it was read")
    return data


def _external_array(t: TensorProto, base_dir: Path | None) -> np.ndarray | None:
    """External data of a plain numeric type read straight into its array (no bytes copy in
    between); None when the type or the length needs the general path."""
    dtype = _PLAIN_DTYPES.get(t.data_type)
    if dtype is None or any(d < 0 for d in t.dims):
        return None
    shape = tuple(int(d) for d in t.dims)
    f, offset, n, location = _external_range(t, base_dir)
    with f:
        if n != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            return None
        arr = np.empty(shape, dtype)
        view = memoryview(arr.reshape(-1)).cast("B")
        f.seek(offset)
        got = 0
        while got < n:
            k = f.readinto(view[got:])
            if not k:
                raise ConversionError(f"ember: tensor '{t.name}': '{location}' changed while it was read")
            got += k
    return arr


def _external_range(t: TensorProto, base_dir: Path | None) -> tuple[Any, int, int, str]:
    """The opened external data file of ``t``, the offset and length of its bytes, its location."""
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    if base_dir is None:
        raise ConversionError(
            f"ember: tensor '{t.name}' keeps its data in the external file '{location}', but the "
            "model was given as a ModelProto; pass the model's file path instead")
    if "\0" in location:
        raise ConversionError(f"ember: tensor '{t.name}': external data location {location!r} contains a NUL "
                              "byte; refused")
    if not location or os.path.isabs(location) or Path(location).drive:
        raise ConversionError(f"ember: tensor '{t.name}': external data location '{location}' must be "
                              "a path relative to the model's folder")
    root = os.path.realpath(base_dir)
    full = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, full]) != root:
        raise ConversionError(f"ember: tensor '{t.name}': external data location '{location}' points "
                              f"outside the model's folder '{root}'; refused")
    if not os.path.isfile(full):
        raise ConversionError(f"ember: tensor '{t.name}': external data file '{location}' not found "
                              f"next to the model")
    try:
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        n_given = None if length is None or length == "" else int(length)
    except ValueError:
        raise ConversionError(f"ember: tensor '{t.name}': external data offset {info.get('offset')!r} or length "
                              f"{info.get('length')!r} is not an integer") from None
    from ember.io.files import open_regular

    try:
        f, size = open_regular(full, f"external data file of tensor '{t.name}'", ConversionError)
    except EmberError as e:
        raise ConversionError(str(e)) from None
    n = size - offset if n_given is None else n_given
    if offset < 0 or n < 0 or offset + n > size:
        f.close()
        raise ConversionError(f"ember: tensor '{t.name}': external data range {offset}+{n} is beyond the "
                              f"end of '{location}' ({size} bytes)")
    return f, offset, n, location


def tensor_value(t: TensorProto, base_dir: Path | None = None) -> tuple[np.ndarray, Type]:
    """A TensorProto's data as an ndarray in ember's in-memory form, and its element type."""
    et = element_type(t.data_type, f" (tensor '{t.name}')")
    if t.data_location == TensorProto.EXTERNAL:
        arr = _external_array(t, base_dir)
        if arr is not None:
            return to_ember_array(arr, et), et
        proto = TensorProto()
        proto.CopyFrom(t)
        del proto.external_data[:]
        proto.data_location = TensorProto.DEFAULT
        proto.raw_data = _external_bytes(t, base_dir)
        t = proto
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 - malformed protos raise ValueError/TypeError
        raise ConversionError(f"ember: tensor '{t.name}' cannot be read: {e}") from None
    return to_ember_array(arr, et), et


def to_ember_array(arr: np.ndarray, et: Type) -> np.ndarray:
    """Bring an array as onnx/numpy hold it (ml_dtypes int4, bytes) into ember's memory form."""
    if et is Type.string:
        flat = [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s) for s in arr.reshape(-1)]
        return np.array(flat, dtype=object).reshape(arr.shape)
    if arr.dtype != et.dtype:
        arr = arr.astype(et.dtype)
    return arr


def from_ember_array(arr: np.ndarray, onnx_dtype: int) -> np.ndarray:
    """The inverse of ``to_ember_array``: the dtype onnx's own numpy helpers use."""
    want = onnx.helper.tensor_dtype_to_np_dtype(onnx_dtype)
    if want == np.dtype(object) or arr.dtype == want:
        return arr
    return arr.astype(want)


def sparse_value(s: onnx.SparseTensorProto, base_dir: Path | None = None) -> tuple[np.ndarray, Type]:
    """A dense ndarray from a SparseTensorProto (COO, linear or per-dimension indices), after
    checking its dims, the index array's shape and every index against the dims."""
    name = s.values.name or "?"
    values, et = tensor_value(s.values, base_dir)
    indices, _ = tensor_value(s.indices, base_dir)
    dims = tuple(int(d) for d in s.dims)

    def bad(why: str) -> ConversionError:
        return ConversionError(f"ember: sparse initializer '{name}' (dims {list(dims)}): {why}")

    if any(d < 0 for d in dims):
        raise bad("negative dimension")
    count = int(np.prod(dims, dtype=object)) if dims else 1
    if count * max(1, values.dtype.itemsize) > MAX_SPARSE_DENSE_BYTES:
        raise bad(f"the dense tensor would take more than {MAX_SPARSE_DENSE_BYTES} bytes")
    if values.ndim != 1:
        raise bad(f"values must be 1-D, got shape {list(values.shape)}")
    nnz = values.shape[0]
    if indices.dtype.kind not in "iu":
        raise bad(f"indices must be integers, got {indices.dtype}")
    indices = indices.astype(np.int64, copy=False)
    if indices.ndim == 1 and indices.shape[0] == nnz:
        if nnz and (indices.min() < 0 or indices.max() >= count):
            raise bad(f"an index is outside 0..{count - 1}")
    elif indices.ndim == 2 and indices.shape == (nnz, len(dims)):
        if nnz and (indices.min() < 0 or np.any(indices >= np.array(dims, np.int64))):
            raise bad("an index is outside the dims")
    else:
        raise bad(f"indices of shape {list(indices.shape)} do not fit {nnz} values of rank {len(dims)}")
    try:
        dense = np.zeros(dims, dtype=values.dtype)
    except (MemoryError, ValueError):
        raise bad("the dense tensor does not fit in memory") from None
    if nnz:
        if indices.ndim == 1:
            dense.reshape(-1)[indices] = values
        else:
            dense[tuple(indices.T)] = values
    return dense, et


def value_info_type(vi: onnx.ValueInfoProto) -> tuple[str, Type | None, PartialShape]:
    """``(kind, element type, shape)`` of a graph input/output; kind is tensor, sequence, optional."""
    tp = vi.type
    kind = tp.WhichOneof("value")
    if kind == "sequence_type":
        return "sequence", _elem(tp.sequence_type.elem_type), PartialShape.dynamic()
    if kind == "optional_type":
        return "optional", _elem(tp.optional_type.elem_type), PartialShape.dynamic()
    if kind == "sparse_tensor_type":
        raise UnsupportedOpError(f"ember: sparse tensor input '{vi.name}' is not supported")
    if kind != "tensor_type":
        return "tensor", None, PartialShape.dynamic()
    tt = tp.tensor_type
    et = element_type(tt.elem_type, f" (value '{vi.name}')") if tt.elem_type else None
    return "tensor", et, shape_of(tt)


def _elem(tp: onnx.TypeProto) -> Type | None:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type" and tp.tensor_type.elem_type:
        return element_type(tp.tensor_type.elem_type)
    return None


def shape_of(tt: Any) -> PartialShape:
    """The PartialShape of an ONNX tensor type: ``dim_param`` and unset dims are dynamic."""
    if not tt.HasField("shape"):
        return PartialShape.dynamic()
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(Dimension(int(d.dim_value)))
        else:
            dims.append(Dimension())
    return PartialShape(dims)
