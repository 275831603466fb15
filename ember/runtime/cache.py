"""The model cache (``CACHE_DIR``) and the blob format of ``export_model``/``import_model``.

An entry is one file ``<CACHE_DIR>/<key>.blob`` holding the model after the device's own
passes (as IR v11, read back with the hardened IR reader) and the device's extra data. The
key is a SHA-256 of the model's bytes (its files when compile_model got a path, else its
serialized IR), the device's fingerprint, the config keys that change compilation and
ember's version. When compile_model gets a path, every file the model reads is hashed: the
``.xml`` and its ``.bin``, or the ``.onnx`` and each external data file it names, so a
changed weights file is a cache miss. Nothing in an entry is trusted: only a regular file
(not a symbolic link, FIFO or device) of at most ``MAX_ENTRY_BYTES`` is read, the header is
JSON, every section carries its own SHA-256, the key inside must match the file's key, and
any failure is logged and the entry ignored (then overwritten). Nothing is ever unpickled.

The folder is a trust boundary: a folder (or entry) that another user owns or that others
may write is not used (a warning is logged and the model is compiled without the cache),
since whoever can write an entry decides what model a later compile gets.

Layout: ``MAGIC`` (10 bytes) | header length (4 bytes, little endian) | header JSON |
sections, in the header's order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember.errors import EmberError
from ember.graph.model import Model
from ember.io.files import iter_chunks, read_regular
from ember.runtime.properties import COMPILE_RELEVANT, CompileConfig

log = logging.getLogger("ember.runtime")

MAGIC = b"EMBERBLOB\x01"
FORMAT = 1
_MAX_HEADER = 1 << 20
#: the largest cache entry ember reads (larger files are ignored, never read)
MAX_ENTRY_BYTES = 1 << 36


class CacheEntryError(EmberError):
    """A cache entry or exported blob is corrupt, foreign or from another ember."""


@dataclass
class CachedModel:
    device: str
    model: Model
    blob: bytes
    header: dict[str, Any]


def _version() -> str:
    from ember import __version__

    return __version__


def model_digest(model: Model) -> str:
    """SHA-256 of a Model's serialized IR (names, attributes, rt_info and weights)."""
    from ember.io import serialize

    xml, weights = serialize(model, compress_to_fp16=False)
    h = hashlib.sha256()
    h.update(len(xml).to_bytes(8, "little"))
    h.update(xml)
    h.update(weights)
    return h.hexdigest()


def files_digest(paths: list[Path]) -> str:
    """SHA-256 of the files a model is read from (read in chunks): the files given and, for
    an ``.onnx`` file, every external data file it names. Only regular files are read (a
    FIFO or a device raises ``EmberError``: the model is then not cached)."""
    h = hashlib.sha256()
    todo = list(paths)
    for p in paths:
        if p.suffix.lower() == ".onnx" and p.is_file():
            todo.extend(onnx_external_files(p))
    for p in todo:
        h.update(len(str(p.name)).to_bytes(8, "little") + str(p.name).encode("utf-8", "surrogateescape"))
        if not os.path.lexists(p):
            h.update(b"\0missing")
            continue
        n = 0
        for chunk in iter_chunks(p, "model file"):
            h.update(chunk)
            n += len(chunk)
        h.update(n.to_bytes(8, "little"))
    return h.hexdigest()


def onnx_external_files(path: Path) -> list[Path]:
    """The external data files an ONNX model names (inside its folder; others are refused
    later by the loader, and hashed here as missing), in first-use order."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several kinds
        raise EmberError(f"ember: '{path}' is not a readable ONNX model: {e}") from None
    root = os.path.realpath(path.parent)
    seen: dict[str, Path] = {}
    graphs: list[Any] = [proto.graph] + [f for f in proto.functions]
    tensors: list[Any] = []
    while graphs:  # iterative: nested subgraphs cannot exhaust the stack
        g = graphs.pop()
        tensors.extend(getattr(g, "initializer", ()))
        for s in getattr(g, "sparse_initializer", ()):
            tensors.extend([s.values, s.indices])
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    tensors.append(a.t)
                tensors.extend(a.tensors)
                if a.HasField("g"):
                    graphs.append(a.g)
                graphs.extend(a.graphs)
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        full = os.path.realpath(os.path.join(root, location)) if location and "\0" not in location else ""
        if full and os.path.commonpath([root, full]) == root and full not in seen:
            seen[full] = Path(full)
    return list(seen.values())


def cache_key(digest: str, device_name: str, fingerprint: str, config: CompileConfig) -> str:
    relevant = {k: str(config.as_mapping().get(k)) for k in COMPILE_RELEVANT}
    relevant.update({k: repr(v) for k, v in config.extra})
    text = json.dumps({"model": digest, "device": device_name, "fingerprint": fingerprint,
                       "config": relevant, "ember": _version(), "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def pack(key: str, device: str, model: Model, blob: bytes) -> bytes:
    """One self-checking entry: the model's IR and the device's data."""
    from ember.io import serialize

    xml, weights = serialize(model, compress_to_fp16=False)
    sections = [("model.xml", xml), ("model.bin", weights), ("device", blob)]
    header = {"format": FORMAT, "key": key, "device": device, "ember": _version(),
              "sections": [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                           for n, b in sections]}
    hb = json.dumps(header, sort_keys=True).encode()
    return b"".join([MAGIC, struct.pack("<I", len(hb)), hb] + [b for _, b in sections])


def unpack(data: bytes | memoryview, expected_key: str | None = None, expected_device: str | None = None
           ) -> CachedModel:
    """Parse and check an entry; raises ``CacheEntryError`` saying what is wrong. The sections are
    read in place (``data`` a memoryview: the weights are not copied again)."""
    data = memoryview(data).cast("B")
    if data[:len(MAGIC)] != MAGIC:
        raise CacheEntryError("not an ember blob (bad magic)")
    if len(data) < len(MAGIC) + 4:
        raise CacheEntryError("truncated header")
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    if n > _MAX_HEADER or start + n > len(data):
        raise CacheEntryError("truncated or oversized header")
    try:
        header = json.loads(bytes(data[start:start + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheEntryError(f"unreadable header ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CacheEntryError(f"unsupported format {header.get('format') if isinstance(header, dict) else '?'}")
    if header.get("ember") != _version():
        raise CacheEntryError(f"written by ember {header.get('ember')}, this is {_version()}")
    if expected_key is not None and header.get("key") != expected_key:
        raise CacheEntryError("its key does not match (a foreign entry)")
    if expected_device is not None and header.get("device") != expected_device:
        raise CacheEntryError(f"compiled for {header.get('device')}, not {expected_device}")
    secs: dict[str, memoryview] = {}
    pos = start + n
    sections = header.get("sections")
    if not isinstance(sections, list):
        raise CacheEntryError("no section table")
    for s in sections:
        try:
            name, size, digest = str(s["name"]), int(s["size"]), str(s["sha256"])
        except (KeyError, TypeError, ValueError):
            raise CacheEntryError("bad section table") from None
        if size < 0 or pos + size > len(data):
            raise CacheEntryError(f"section {name} is truncated")
        body = data[pos:pos + size]
        if hashlib.sha256(body).hexdigest() != digest:
            raise CacheEntryError(f"section {name} fails its checksum")
        secs[name] = body
        pos += size
    if pos != len(data) or set(secs) != {"model.xml", "model.bin", "device"}:
        raise CacheEntryError("unexpected sections or trailing bytes")
    from ember.io import read_ir_bytes

    try:
        model = read_ir_bytes(bytes(secs["model.xml"]), secs["model.bin"], source="<cache entry>")
    except EmberError as e:
        raise CacheEntryError(f"its model does not load ({e})") from None
    return CachedModel(str(header.get("device")), model, bytes(secs["device"]), header)


def untrusted_reason(path: Path) -> str | None:
    """Why ``path`` (a cache folder or entry) must not be trusted, or None: owned by another
    user, or writable by the group or by others."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # not there (yet): nothing to trust or distrust
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"it is owned by user id {st.st_uid}, not by this user"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"others may write it (mode {stat.filemode(st.st_mode)})"
    return None


class ModelCache:
    """A directory of entries, written atomically (a reader never sees half an entry)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self._refused = False

    def _usable(self) -> bool:
        why = untrusted_reason(self.dir)
        if why is not None:
            if not self._refused:
                log.warning("ember: not using model cache folder %s: %s; compiling without the cache", self.dir, why)
            self._refused = True
            return False
        return True

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.blob"

    def load(self, key: str, device: str) -> CachedModel | None:
        p = self.path(key)
        if not self._usable():
            return None
        if not os.path.lexists(p):
            log.debug("ember: model cache miss %s", p.name)
            return None
        why = untrusted_reason(p) if not p.is_symlink() else None
        if why is not None:
            log.warning("ember: ignoring model cache entry %s: %s", p, why)
            return None
        try:
            # Not a symbolic link, FIFO or device (they would read forever or block), bounded.
            data = read_regular(p, "model cache entry", CacheEntryError, MAX_ENTRY_BYTES, follow_symlinks=False)
            entry = unpack(data, key, device)
        except (OSError, CacheEntryError) as e:
            log.warning("ember: ignoring model cache entry %s: %s", p, e)
            return None
        log.info("ember: model cache hit %s", p.name)
        return entry

    def store(self, key: str, device: str, model: Model, blob: bytes) -> None:
        if not self._usable():
            return
        try:
            data = pack(key, device, model, blob)
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".blob")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except (OSError, EmberError) as e:
            log.warning("ember: could not write model cache entry in %s: %s", self.dir, e)
            return
        log.info("ember: model cache stored %s", self.path(key).name)
