"""Read a ``torch.save`` state dict of tensors without torch and without unpickling.

``pickle.load`` on a ``.pth`` file runs whatever callables the file names, so a weights file can
carry code. This reader never calls ``pickle``'s loader: it walks the opcode stream with
``pickletools.genops`` (which only decodes opcodes) and interprets the few records a state dict
of tensors needs on a small stack of its own: dicts, ``collections.OrderedDict``, tuples, lists,
ints, floats, strings, booleans, ``None``, storage persistent ids and
``torch._utils._rebuild_tensor_v2``. Anything else (another global, an object constructor, an
extension code) stops the read with :class:`~ember.zoo.errors.UnsafeFileError`.

Both of torch's file layouts are read: the legacy one (``_use_new_zipfile_serialization=False``,
and every file written before torch 1.6: magic number, protocol version, system info, the
pickle, the storage keys, then each storage's raw bytes) and the zip one (``archive/data.pkl``
plus one ``archive/data/<key>`` member per storage).
"""

from __future__ import annotations

import io
import os
import pickletools
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ember.errors import ConversionError
from ember.zoo.errors import UnsafeFileError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# The storage classes a tensor may live in, and the numpy dtype of their elements.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"), "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
_CALLABLES = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
              ("torch._utils", "_rebuild_tensor")}


@dataclass(frozen=True)
class _Global:
    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


class _OrderedDict(dict):
    """An ``OrderedDict`` built by the reader (plain dicts keep order too)."""


@dataclass(frozen=True)
class _Storage:
    kind: str
    key: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


_MARK = object()


class _Reader:
    """A stack machine for the allow-listed subset of the pickle opcodes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.storages: dict[str, _Storage] = {}

    def refuse(self, what: str) -> UnsafeFileError:
        return UnsafeFileError(
            f"ember: '{self.source}' is not a plain state dict of tensors: it holds {what}. ember reads "
            "only tensors, dicts, lists, tuples, numbers and strings from torch files and does not run "
            "code from them; re-save the weights with `torch.save(model.state_dict(), path)` or as safetensors")

    def pop_mark(self) -> list[Any]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1:]
                del self.stack[i:]
                return items
        raise self.broken("a MARK is missing")

    def broken(self, why: str) -> ConversionError:
        return ConversionError(f"ember: '{self.source}' is not a valid torch file: {why}")

    def pop(self) -> Any:
        if not self.stack or self.stack[-1] is _MARK:
            raise self.broken("the pickle stack is empty")
        return self.stack.pop()

    def run(self, ops: Iterator[tuple[Any, Any, Any]]) -> Any:
        for op, arg, _pos in ops:
            name = op.name
            handler = getattr(self, "op_" + name, None)
            if handler is None:
                raise self.refuse(f"the pickle opcode {name}, which a tensor state dict never needs")
            if name == "STOP":
                return self.pop()
            handler(arg)
        raise self.broken("the pickle stream ends without STOP")

    # -- framing and memo ------------------------------------------------------------------
    def op_PROTO(self, arg: Any) -> None:
        if arg > 5:
            raise self.broken(f"unknown pickle protocol {arg}")

    def op_FRAME(self, arg: Any) -> None:
        pass

    def op_STOP(self, arg: Any) -> None:
        pass

    def op_MARK(self, arg: Any) -> None:
        self.stack.append(_MARK)

    def op_POP(self, arg: Any) -> None:
        self.pop()

    def op_POP_MARK(self, arg: Any) -> None:
        self.pop_mark()

    def op_DUP(self, arg: Any) -> None:
        self.stack.append(self.stack[-1])

    def op_PUT(self, arg: Any) -> None:
        if not self.stack:
            raise self.broken("PUT on an empty stack")
        self.memo[int(arg)] = self.stack[-1]

    op_BINPUT = op_LONG_BINPUT = op_PUT

    def op_MEMOIZE(self, arg: Any) -> None:
        self.op_PUT(len(self.memo))

    def op_GET(self, arg: Any) -> None:
        key = int(arg)
        if key not in self.memo:
            raise self.broken(f"memo entry {key} is read before it is written")
        self.stack.append(self.memo[key])

    op_BINGET = op_LONG_BINGET = op_GET

    # -- plain values ------------------------------------------------------------------------
    def _push(self, arg: Any) -> None:
        self.stack.append(arg)

    op_INT = op_BININT = op_BININT1 = op_BININT2 = op_LONG = op_LONG1 = op_LONG4 = _push
    op_FLOAT = op_BINFLOAT = _push
    op_STRING = op_BINSTRING = op_SHORT_BINSTRING = _push
    op_UNICODE = op_BINUNICODE = op_SHORT_BINUNICODE = op_BINUNICODE8 = _push
    op_BINBYTES = op_SHORT_BINBYTES = op_BINBYTES8 = _push

    def op_NONE(self, arg: Any) -> None:
        self.stack.append(None)

    def op_NEWTRUE(self, arg: Any) -> None:
        self.stack.append(True)

    def op_NEWFALSE(self, arg: Any) -> None:
        self.stack.append(False)

    def op_EMPTY_TUPLE(self, arg: Any) -> None:
        self.stack.append(())

    def op_TUPLE(self, arg: Any) -> None:
        self.stack.append(tuple(self.pop_mark()))

    def op_TUPLE1(self, arg: Any) -> None:
        self.stack.append((self.pop(),))

    def op_TUPLE2(self, arg: Any) -> None:
        b = self.pop()
        self.stack.append((self.pop(), b))

    def op_TUPLE3(self, arg: Any) -> None:
        c = self.pop()
        b = self.pop()
        self.stack.append((self.pop(), b, c))

    def op_EMPTY_LIST(self, arg: Any) -> None:
        self.stack.append([])

    def op_LIST(self, arg: Any) -> None:
        self.stack.append(self.pop_mark())

    def op_APPEND(self, arg: Any) -> None:
        item = self.pop()
        target = self.stack[-1] if self.stack else None
        if not isinstance(target, list):
            raise self.refuse("an APPEND to something that is not a list")
        target.append(item)

    def op_APPENDS(self, arg: Any) -> None:
        items = self.pop_mark()
        target = self.stack[-1] if self.stack else None
        if not isinstance(target, list):
            raise self.refuse("an APPENDS to something that is not a list")
        target.extend(items)

    def op_EMPTY_DICT(self, arg: Any) -> None:
        self.stack.append({})

    def op_DICT(self, arg: Any) -> None:
        items = self.pop_mark()
        self.stack.append(self._dict_items({}, items))

    def _dict_items(self, target: Any, items: list[Any]) -> dict:
        if not isinstance(target, dict):
            raise self.refuse("a SETITEM on something that is not a dict")
        if len(items) % 2:
            raise self.broken("a dict has a key without a value")
        for k, v in zip(items[::2], items[1::2]):
            if not isinstance(k, (str, int, float, bool, tuple)) and k is not None:
                raise self.refuse(f"a dict key of type {type(k).__name__}")
            target[k] = v
        return target

    def op_SETITEM(self, arg: Any) -> None:
        v = self.pop()
        k = self.pop()
        self._dict_items(self.stack[-1] if self.stack else None, [k, v])

    def op_SETITEMS(self, arg: Any) -> None:
        items = self.pop_mark()
        self._dict_items(self.stack[-1] if self.stack else None, items)

    # -- the few objects allowed -------------------------------------------------------------
    def _global(self, module: str, name: str) -> None:
        if (module, name) in _CALLABLES or (module == "torch" and name in STORAGE_DTYPES):
            self.stack.append(_Global(module, name))
            return
        raise self.refuse(f"a reference to the Python object {module}.{name}")

    def op_GLOBAL(self, arg: Any) -> None:
        module, _, name = str(arg).partition(" ")
        self._global(module, name)

    def op_STACK_GLOBAL(self, arg: Any) -> None:
        name = self.pop()
        module = self.pop()
        if not isinstance(module, str) or not isinstance(name, str):
            raise self.broken("STACK_GLOBAL needs two strings")
        self._global(module, name)

    def op_REDUCE(self, arg: Any) -> None:
        args = self.pop()
        func = self.pop()
        if not isinstance(func, _Global) or (func.module, func.name) not in _CALLABLES:
            raise self.refuse(f"a call of {func!s}")
        if not isinstance(args, tuple):
            raise self.broken(f"the arguments of {func} are not a tuple")
        if func.name == "OrderedDict":
            if args not in ((), ([],)):
                raise self.refuse("an OrderedDict built from arguments")
            self.stack.append(_OrderedDict())
            return
        self.stack.append(self._tensor(func, args))

    def _tensor(self, func: _Global, args: tuple) -> _TensorRef:
        if len(args) < 4:
            raise self.broken(f"{func} gets {len(args)} arguments, expected at least 4")
        storage, offset, size, stride = args[:4]
        rest = args[4:]
        if not isinstance(storage, _Storage):
            raise self.refuse(f"a tensor whose storage is a {type(storage).__name__}")
        if not isinstance(offset, int) or not _int_tuple(size) or not _int_tuple(stride) or \
                len(size) != len(stride):
            raise self.broken(f"{func} has a malformed offset, size or stride")
        if len(rest) >= 2 and not (isinstance(rest[1], dict) and not rest[1]):
            raise self.refuse("a tensor with backward hooks")
        if len(rest) >= 3 and rest[2] not in (None, {}) and not isinstance(rest[2], dict):
            raise self.refuse("a tensor with extra metadata")
        return _TensorRef(storage, offset, tuple(size), tuple(stride))

    def op_BUILD(self, arg: Any) -> None:
        state = self.pop()
        target = self.stack[-1] if self.stack else None
        if not isinstance(target, _OrderedDict) or not isinstance(state, dict):
            raise self.refuse(f"object state set on a {type(target).__name__}")
        # A state dict's ``_metadata`` (per-module versions): not needed for the tensors.

    def op_BINPERSID(self, arg: Any) -> None:
        pid = self.pop()
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise self.refuse(f"a persistent id that is not a tensor storage ({pid!r:.60})")
        kind, key, _location, numel = pid[1:5]
        if not isinstance(kind, _Global) or kind.module != "torch" or kind.name not in STORAGE_DTYPES:
            raise self.refuse(f"a storage of type {kind!s}")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise self.broken("a storage persistent id has a bad key or size")
        seen = self.storages.get(key)
        if seen is not None and (seen.kind != kind.name or seen.numel != numel):
            raise self.broken(f"storage {key} is declared twice with different types or sizes")
        self.storages[key] = seen or _Storage(kind.name, key, numel)
        self.stack.append(self.storages[key])

    def op_PERSID(self, arg: Any) -> None:
        raise self.refuse("a text persistent id")


def _int_tuple(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in x)


def _read_pickle(stream: io.BytesIO, reader: _Reader) -> Any:
    try:
        return reader.run(pickletools.genops(stream))
    except ValueError as e:  # genops on truncated or garbled bytes
        raise reader.broken(f"the pickle stream is damaged ({e})") from None


def _tensor_array(ref: _TensorRef, storage: np.ndarray, source: str) -> np.ndarray:
    if any(s < 0 for s in ref.size) or any(s < 0 for s in ref.stride) or ref.offset < 0:
        raise ConversionError(f"ember: '{source}': a tensor has a negative size, stride or offset")
    if 0 not in ref.size:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if last >= storage.size:
            raise ConversionError(f"ember: '{source}': a tensor reaches past the end of storage "
                                  f"{ref.storage.key} ({last} >= {storage.size} elements)")
        view = np.lib.stride_tricks.as_strided(
            storage[ref.offset:], shape=ref.size, strides=[s * storage.itemsize for s in ref.stride],
            writeable=False)
    else:
        view = np.zeros(ref.size, storage.dtype)
    arr = np.ascontiguousarray(view).copy()
    if ref.storage.kind == "BFloat16Storage":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="))


def _materialize(obj: Any, storages: dict[str, np.ndarray], source: str) -> Any:
    if isinstance(obj, _TensorRef):
        return _tensor_array(obj, storages[obj.storage.key], source)
    if isinstance(obj, dict):
        return {k: _materialize(v, storages, source) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, storages, source) for v in obj)
    return obj


def _legacy_storages(stream: io.BytesIO, reader: _Reader, data: memoryview, source: str) -> dict[str, np.ndarray]:
    keys = _read_pickle(stream, _Reader(source))
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise reader.broken("the storage key list is malformed")
    out: dict[str, np.ndarray] = {}
    pos = stream.tell()
    for key in keys:
        st = reader.storages.get(key)
        if st is None:
            raise reader.broken(f"storage {key} is stored but no tensor uses it")
        if pos + 8 > len(data):
            raise reader.broken(f"the file ends inside storage {key}")
        (numel,) = struct.unpack_from("<q", data, pos)
        dtype = STORAGE_DTYPES[st.kind]
        nbytes = numel * dtype.itemsize
        if numel != st.numel or pos + 8 + nbytes > len(data):
            raise reader.broken(f"storage {key} has {numel} elements on disk, {st.numel} declared, "
                                f"or the file is truncated")
        out[key] = np.frombuffer(data, dtype, count=numel, offset=pos + 8)
        pos += 8 + nbytes
    missing = set(reader.storages) - set(out)
    if missing:
        raise reader.broken(f"storages {sorted(missing)[:5]} are used but not stored")
    return out


def _read_legacy(data: bytes, source: str) -> Any:
    stream = io.BytesIO(data)
    header = _Reader(source)
    if _read_pickle(stream, header) != LEGACY_MAGIC:
        raise ConversionError(f"ember: '{source}' is not a torch file (no torch magic number)")
    version = _read_pickle(stream, header)
    if version != LEGACY_PROTOCOL:
        raise ConversionError(f"ember: '{source}': torch file protocol {version!r} is not supported")
    info = _read_pickle(stream, header)
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise ConversionError(f"ember: '{source}' was written on a big-endian machine; not supported")
    reader = _Reader(source)
    obj = _read_pickle(stream, reader)
    storages = _legacy_storages(stream, reader, memoryview(data), source)
    return _materialize(obj, storages, source)


def _read_zip(path_or_bytes: Any, source: str) -> Any:
    with zipfile.ZipFile(path_or_bytes) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ConversionError(f"ember: '{source}' is a zip file but not a torch archive (no data.pkl)")
        root = pkl[0].rsplit("/", 1)[0]
        reader = _Reader(source)
        obj = _read_pickle(io.BytesIO(zf.read(pkl[0])), reader)
        storages: dict[str, np.ndarray] = {}
        for key, st in reader.storages.items():
            member = f"{root}/data/{key}"
            if member not in names:
                raise reader.broken(f"storage {key} is missing from the archive")
            raw = zf.read(member)
            dtype = STORAGE_DTYPES[st.kind]
            if len(raw) < st.numel * dtype.itemsize:
                raise reader.broken(f"storage {key} is shorter than declared")
            storages[key] = np.frombuffer(raw, dtype, count=st.numel)
    return _materialize(obj, storages, source)


def load_torch_file(file: str | os.PathLike | bytes, name: str | None = None) -> Any:
    """Read a ``torch.save`` file safely: dicts, lists and numbers as Python values, tensors as
    numpy arrays (copies, in native byte order; bfloat16 becomes float32).

    ``file`` is a path or the file's bytes; ``name`` is used in error messages. Raises
    :class:`~ember.zoo.errors.UnsafeFileError` when the file holds anything but tensors and plain
    containers, and ``ConversionError`` when it is damaged.
    """
    if isinstance(file, (bytes, bytearray)):
        data, source = bytes(file), name or "<bytes>"
    else:
        source = name or os.fspath(file)
        data = Path(file).read_bytes()
    if data[:4] == b"PK\x03\x04":
        return _read_zip(io.BytesIO(data), source)
    if data[:1] != b"\x80":
        raise ConversionError(f"ember: '{source}' is not a torch file (it is neither a pickle nor a zip)")
    return _read_legacy(data, source)


def load_state_dict(file: str | os.PathLike | bytes, name: str | None = None) -> dict[str, np.ndarray]:
    """The tensors of a saved state dict by parameter name (``{"conv.weight": array, ...}``).

    Accepts a bare state dict or a checkpoint dict holding one under ``state_dict`` or ``model``.
    """
    obj = load_torch_file(file, name)
    source = name or ("<bytes>" if isinstance(file, (bytes, bytearray)) else os.fspath(file))
    if isinstance(obj, dict) and not all(isinstance(v, np.ndarray) for v in obj.values()):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                                       for k, v in obj.items()):
        raise ConversionError(f"ember: '{source}' does not hold a state dict of tensors by name")
    return obj
