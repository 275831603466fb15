"""The process-wide LLVM JIT: compile generated modules, cache their object code on disk.

There is one MCJIT execution engine per process. A kernel module is asked for by a
*signature* (a short string naming the kernel and its parameters, used to find a module
already loaded in this process) and an :class:`~ember.devices.cpu.llvm.isa.Isa`. :func:`load`
returns the already-loaded module, or else builds the module's LLVM IR and then loads the
object code from the disk cache or compiles it.

The disk cache is a trust boundary: its files are executable code.

- An entry is keyed by a hash of what is compiled: the LLVM IR text, the target triple, the
  CPU name and features, and the llvmlite and LLVM versions. Editing an emitter changes the
  IR text and so the key; there is no hand-kept version to forget.
- Building IR costs time (a GEMM module: about 0.3 s), so an index entry (``<hash>.index``,
  MAC'd like the records) remembers which key a builder produced, under a hash of the
  signature, target, versions, the CPU device's source files and the builder's constants and
  captured values: a later process loads the object without building IR, and any edit to an
  emitter's source misses the index and builds the IR again.
- Beside each object (``<key>.o``) a record (``<key>.json``) says what it is: the key, the
  kernel signature, the IR hash, the exported symbols, the versions, the CPU features, the
  object's size and SHA-256, and a MAC of all that under a per-user secret
  (``.secret`` in the cache folder, readable by the user only), so a foreign or edited file
  is never taken for one ember wrote.
- Before loading, the record is checked against what this process would compile, the object
  against the record, and the object's own symbol table against the symbol list. Any doubt
  (a bad digest, a missing symbol, swapped or truncated files, a planted object) is logged
  and the module is compiled again; a cache problem never raises.
- A cache folder or file that is not owned by the current user, or that group or others can
  write, is refused (one warning); kernels are then compiled in memory only.

The cache lives in ``$EMBER_KERNEL_CACHE`` (default ``~/.cache/ember/kernels``; set it to
``off`` to disable). Set ``EMBER_KERNEL_DUMP`` to a directory to get each compiled module's
IR and assembly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import stat
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import llvmlite
import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm.isa import Isa, llvm_init

log = logging.getLogger("ember.cpu")

CACHE_ENV = "EMBER_KERNEL_CACHE"
DUMP_ENV = "EMBER_KERNEL_DUMP"
#: the layout of a cache entry (object file + JSON record); part of every key
CACHE_FORMAT = "ember-kernel-cache-3"
#: largest object file read from the cache
MAX_OBJECT_BYTES = 256 << 20
_MAX_RECORD_BYTES = 1 << 20
_SECRET_NAME = ".secret"

# libc functions generated code may call; resolved through ctypes, registered with LLVM.
_LIBC_SYMBOLS = ("pthread_create", "pthread_join", "syscall", "sched_yield", "memset", "memcpy")


def default_cache_dir() -> Path | None:
    """The kernel cache directory, or None when caching is switched off."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        if env.strip().lower() in ("", "0", "off", "none", "false"):
            return None
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ember" / "kernels"


def versions() -> dict[str, str]:
    """The code generator's versions that a cached object depends on."""
    return {"format": CACHE_FORMAT, "llvmlite": llvmlite.__version__,
            "llvm": ".".join(map(str, llvm.llvm_version_info))}


def cache_key(ir_text: str, isa: Isa) -> str:
    """The cache key of a module: SHA-256 of its IR text, the target and the versions."""
    h = hashlib.sha256()
    for part in (*versions().values(), isa.triple, isa.cpu, isa.features):
        h.update(part.encode())
        h.update(b"\0")
    h.update(ir_text.encode())
    return h.hexdigest()


@functools.cache
def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


@functools.cache
def generator_digest() -> str:
    """SHA-256 of the CPU device's source files: every kernel emitter lives there, so an edit
    anywhere in them is seen without building any IR."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(_file_digest(str(path)).encode())
    return h.hexdigest()


def builder_key(signature: str, isa: Isa, build: Callable[[str], ir.Module]) -> str | None:
    """What determines the IR ``build`` emits, without running it: the signature, the target,
    the versions, the generator's sources (``generator_digest`` and the builder's own module)
    and the builder's constants and captured values. None when those have no stable form."""
    try:
        module = sys.modules.get(getattr(build, "__module__", "") or "")
        code = getattr(build, "__code__", None)
        cells = [c.cell_contents for c in getattr(build, "__closure__", None) or ()]
        parts = [CACHE_FORMAT, signature, isa.key, *versions().values(), generator_digest(),
                 _file_digest(getattr(module, "__file__", "") or ""),
                 repr(code.co_consts) if code is not None else "", repr(cells)]
    except Exception:  # noqa: BLE001 - an unprintable capture: no shortcut, the IR is built
        return None
    text = "\0".join(parts)
    if " at 0x" in text:  # a default repr names an address: not stable across processes
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def exported_symbols(module: ir.Module) -> list[str]:
    """Names of the functions and globals ``module`` defines with external linkage."""
    names = []
    for g in module.global_values:
        if getattr(g, "is_declaration", False) or isinstance(g, ir.Function) and not g.blocks:
            continue
        if g.linkage in ("", "external"):
            names.append(g.name)
    return sorted(names)


@dataclass(frozen=True)
class CacheRecord:
    """What a cache entry claims to be (stored as JSON beside the object file)."""

    key: str
    signature: str
    ir_sha256: str
    symbols: tuple[str, ...]
    triple: str
    cpu: str
    features: str
    versions: tuple[tuple[str, str], ...]
    object_size: int
    object_sha256: str

    def to_json(self, secret: bytes) -> bytes:
        body = asdict(self)
        body["mac"] = _mac(secret, self)
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, secret: bytes) -> CacheRecord:
        body = json.loads(data)
        mac = body.pop("mac")
        body["symbols"] = tuple(body["symbols"])
        body["versions"] = tuple(tuple(v) for v in body["versions"])
        rec = cls(**body)
        if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(secret, rec)):
            raise CacheRefused("the record's MAC does not match (not written by this user's ember)")
        return rec


def _mac(secret: bytes, rec: CacheRecord) -> str:
    text = json.dumps(asdict(rec), sort_keys=True).encode()
    return hmac.new(secret, text, hashlib.sha256).hexdigest()


class CacheRefused(Exception):
    """A cache entry or folder that must not be used (the reason is the message)."""


class Library:
    """The functions of one compiled module: symbol addresses and ctypes callables.

    Symbol names are ``<prefix>_<name>``; :meth:`address` takes the short name.
    """

    def __init__(self, engine: llvm.ExecutionEngine, prefix: str, from_cache: bool, seconds: float,
                 key: str = "") -> None:
        self._engine = engine
        self.prefix = prefix
        self.from_cache = from_cache
        self.seconds = seconds
        #: the cache key (hash of the IR text, target and versions)
        self.key = key
        self._addr: dict[str, int] = {}

    def address(self, name: str) -> int:
        """The native address of function ``name`` (short name, without the prefix)."""
        addr = self._addr.get(name)
        if addr is None:
            addr = self._engine.get_function_address(f"{self.prefix}_{name}")
            if not addr:
                raise KeyError(f"ember: no function {name!r} in kernel module {self.prefix}")
            self._addr[name] = addr
        return addr

    def cfunc(self, name: str, restype: type | None, *argtypes: type) -> Callable:
        """A ctypes callable for ``name``; calling it releases the GIL."""
        return ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))


_WARNED: set[str] = set()


def _warn_once(what: str, message: str) -> None:
    if what not in _WARNED:
        _WARNED.add(what)
        log.warning(message)


def _owned_and_private(st: os.stat_result) -> str | None:
    """Why a file or folder with this stat must not be trusted, or None."""
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"it is owned by uid {st.st_uid}, not by the current user ({os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group or others can write it (mode {stat.filemode(st.st_mode)})"
    return None


def _read_trusted(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of this user that nobody else can write."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CacheRefused("not a regular file")
        why = _owned_and_private(st)
        if why:
            raise CacheRefused(why)
        if st.st_size > limit:
            raise CacheRefused(f"{st.st_size} bytes (more than {limit})")
        chunks, left = [], st.st_size
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def elf_defined_symbols(obj: bytes) -> set[str] | None:
    """Global symbols an ELF64 little-endian object defines; None when it is not one."""
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    if shentsize < 64 or shoff + shnum * shentsize > len(obj):
        raise CacheRefused("truncated ELF section table")
    sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize) for i in range(shnum)]
    names: set[str] = set()
    for _name, sh_type, _f, _a, off, size, link, _i, _al, entsize in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        if entsize < 24 or off + size > len(obj) or link >= shnum:
            raise CacheRefused("bad ELF symbol table")
        str_off, str_size = sections[link][4], sections[link][5]
        if str_off + str_size > len(obj):
            raise CacheRefused("bad ELF string table")
        for pos in range(off, off + size - entsize + 1, entsize):
            st_name, st_info, _other, st_shndx = struct.unpack_from("<IBBH", obj, pos)
            if st_info >> 4 not in (1, 2) or st_shndx == 0:  # global/weak, defined
                continue
            end = obj.find(b"\0", str_off + st_name, str_off + str_size)
            if st_name >= str_size or end < 0:
                raise CacheRefused("bad ELF symbol name")
            names.add(obj[str_off + st_name:end].decode("utf-8", "replace"))
    return names


class KernelCache:
    """The on-disk object cache in one folder (see the module docstring for the checks)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._secret: bytes | None = None
        self.refused: str | None = None  # why the folder is not used

    def usable(self) -> bool:
        """Whether the folder can be used (made if missing; refused with one warning if unsafe)."""
        if self._secret is not None:
            return True
        if self.refused is not None:
            return False
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            st = os.stat(self.folder)
            if not stat.S_ISDIR(st.st_mode):
                raise CacheRefused("it is not a folder")
            why = _owned_and_private(st)
            if why:
                raise CacheRefused(why)
            self._secret = self._load_secret()
            return True
        except (OSError, CacheRefused, ValueError) as e:
            self.refused = str(e)
            _warn_once(str(self.folder), f"ember: not using the kernel cache folder {self.folder}: {e}; "
                                         "kernels are compiled in memory")
            return False

    def _load_secret(self) -> bytes:
        path = self.folder / _SECRET_NAME
        try:
            secret = _read_trusted(path, 4096)
        except FileNotFoundError:
            secret = os.urandom(32)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(secret)
            try:
                os.link(tmp, path)  # first writer wins, never replaced
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
            secret = _read_trusted(path, 4096)
        if len(secret) < 16:
            raise CacheRefused(f"{path} is too short to be a cache secret")
        return secret

    def read(self, key: str, expect: CacheRecord) -> bytes | None:
        """The verified object of entry ``key``, or None (missing, or refused with a log line)."""
        if not self.usable():
            return None
        obj_path, rec_path = self.folder / f"{key}.o", self.folder / f"{key}.json"
        try:
            rec = CacheRecord.from_json(_read_trusted(rec_path, _MAX_RECORD_BYTES), self._secret or b"")
            for name in ("key", "signature", "ir_sha256", "symbols", "triple", "cpu", "features", "versions"):
                if getattr(rec, name) != getattr(expect, name):
                    raise CacheRefused(f"its record is for another {name.replace('_', ' ')}")
            if rec.object_size > MAX_OBJECT_BYTES:
                raise CacheRefused("its record claims too large an object")
            obj = _read_trusted(obj_path, MAX_OBJECT_BYTES)
            if len(obj) != rec.object_size or hashlib.sha256(obj).hexdigest() != rec.object_sha256:
                raise CacheRefused("the object does not match its record's size and SHA-256")
            defined = elf_defined_symbols(obj)
            if defined is not None and defined != set(rec.symbols):
                raise CacheRefused(f"the object defines {sorted(defined)}, not the record's {list(rec.symbols)}")
            return obj
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, struct.error, CacheRefused) as e:
            log.warning("ember: ignoring kernel cache entry %s (%s): %s", obj_path.name, expect.signature,
                        f"{type(e).__name__}: {e}" if not isinstance(e, CacheRefused) else e)
            return None

    def read_index(self, memo: str) -> tuple[str, str, tuple[str, ...]] | None:
        """``(key, IR hash, symbols)`` recorded for a builder key, or None (missing or refused)."""
        if not self.usable():
            return None
        path = self.folder / f"{memo}.index"
        try:
            body = json.loads(_read_trusted(path, _MAX_RECORD_BYTES))
            mac = body.pop("mac")
            text = json.dumps(body, sort_keys=True).encode()
            if not isinstance(mac, str) or not hmac.compare_digest(mac, hmac.new(self._secret or b"", text,
                                                                                 hashlib.sha256).hexdigest()):
                raise CacheRefused("the index entry's MAC does not match")
            if body["memo"] != memo:
                raise CacheRefused("the index entry is for another builder")
            return str(body["key"]), str(body["ir_sha256"]), tuple(str(x) for x in body["symbols"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, CacheRefused) as e:
            log.warning("ember: ignoring kernel cache index %s: %s", path.name, e)
            return None

    def write_index(self, memo: str, key: str, ir_sha256: str, symbols: tuple[str, ...]) -> None:
        if not self.usable():
            return
        body = {"memo": memo, "key": key, "ir_sha256": ir_sha256, "symbols": list(symbols)}
        body["mac"] = hmac.new(self._secret or b"", json.dumps(body, sort_keys=True).encode(),
                               hashlib.sha256).hexdigest()
        self._write_file(self.folder / f"{memo}.index", json.dumps(body, sort_keys=True).encode())

    def _write_file(self, path: Path, data: bytes) -> None:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:  # a read-only or full disk only costs the next compile
            log.warning("ember: cannot write kernel cache file %s: %s", path.name, e)

    def write(self, key: str, record: CacheRecord, obj: bytes) -> None:
        if not self.usable():
            return
        try:
            for path, data in ((self.folder / f"{key}.o", obj),
                               (self.folder / f"{key}.json", record.to_json(self._secret or b""))):
                fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
        except OSError as e:  # a read-only or full disk only costs the next compile
            log.warning("ember: cannot write kernel cache entry %s: %s", key, e)


class Jit:
    """The single execution engine of this process and its module table."""

    def __init__(self, cache_dir: Path | str | None | bool = True) -> None:
        """``cache_dir``: True for :func:`default_cache_dir`, a path, or None/False for no cache."""
        llvm_init()
        _register_libc()
        release_library_pages()  # LLVM's static constructors touched pages a kernel load never needs
        self._lock = threading.RLock()
        self._machines: dict[str, llvm.TargetMachine] = {}
        self._engine: llvm.ExecutionEngine | None = None
        self._libraries: dict[str, Library] = {}
        self._keep: list[Any] = []  # object buffers and modules the engine points into
        if cache_dir is True:
            self.cache_dir = default_cache_dir()
        else:
            self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.cache = KernelCache(self.cache_dir) if self.cache_dir is not None else None
        self.stats = {"compiled": 0, "cache_hits": 0, "cache_refused": 0, "compile_seconds": 0.0}

    def target_machine(self, isa: Isa) -> llvm.TargetMachine:
        tm = self._machines.get(isa.key)
        if tm is None:
            target = llvm.Target.from_triple(isa.triple)
            tm = target.create_target_machine(cpu=isa.cpu, features=isa.features, opt=3,
                                              reloc="default", codemodel="jitdefault")
            self._machines[isa.key] = tm
        return tm

    def _get_engine(self, isa: Isa) -> llvm.ExecutionEngine:
        if self._engine is None:
            empty = llvm.parse_assembly(f'target triple = "{isa.triple}"')
            self._engine = llvm.create_mcjit_compiler(empty, self.target_machine(isa))
            self._keep.append(empty)
        return self._engine

    def load(self, signature: str, isa: Isa, build: Callable[[str], ir.Module]) -> Library:
        """The module for ``signature`` on ``isa``: loaded, from the disk cache, or compiled.

        ``build(prefix)`` must return an ``ir.Module`` whose exported functions are named
        ``<prefix>_<name>``; everything else in it should have internal linkage. The same
        signature must always build the same IR within one process.
        """
        tag = hashlib.sha256(f"{signature}\0{isa.key}".encode()).hexdigest()[:12]
        prefix = "ember_" + re.sub(r"[^A-Za-z0-9]+", "_", signature.split("|", 1)[0])[:40] + "_" + tag
        with self._lock:
            lib = self._libraries.get(prefix)
            if lib is not None:
                return lib
            t0 = time.perf_counter()
            found, key = self._from_index(signature, isa, build)
            if found is None:  # no index entry, or a refused one: build the IR (cache or compile)
                found, key = self._build_and_compile(signature, isa, build, prefix)
            obj, from_cache = found
            engine = self._get_engine(isa)
            objref = llvm.ObjectFileRef.from_data(obj)
            self._keep.append((obj, objref))
            engine.add_object_file(objref)
            engine.finalize_object()
            dt = time.perf_counter() - t0
            lib = Library(engine, prefix, from_cache, dt, key)
            self._libraries[prefix] = lib
            if from_cache:
                self.stats["cache_hits"] += 1
            else:
                self.stats["compiled"] += 1
                self.stats["compile_seconds"] += dt
            log.debug("kernel module %s: %s in %.3f s", prefix, "cache" if from_cache else "compiled", dt)
            return lib

    def _from_index(self, signature: str, isa: Isa, build: Callable[[str], ir.Module]
                    ) -> tuple[tuple[bytes, bool] | None, str]:
        """The cached object found through the builder key's index entry (no IR built)."""
        if self.cache is None:
            return None, ""
        memo = builder_key(signature, isa, build)
        found = self.cache.read_index(memo) if memo is not None else None
        if found is None:
            return None, ""
        key, ir_sha256, symbols = found
        expect = CacheRecord(key, signature, ir_sha256, symbols, isa.triple, isa.cpu, isa.features,
                             tuple(versions().items()), 0, "")
        obj = self.cache.read(key, expect)
        return ((obj, True), key) if obj is not None else (None, "")

    def _build_and_compile(self, signature: str, isa: Isa, build: Callable[[str], ir.Module],
                           prefix: str) -> tuple[tuple[bytes, bool], str]:
        """Build the IR; the object from the cache under the IR's key, or compiled and stored."""
        module = build(prefix)
        module.triple = isa.triple
        text = str(module)
        symbols = tuple(exported_symbols(module))
        del module  # a GEMM module's Python IR objects are tens of MB: not alive while LLVM compiles
        key = cache_key(text, isa)
        expect = CacheRecord(key, signature, hashlib.sha256(text.encode()).hexdigest(),
                             symbols, isa.triple, isa.cpu, isa.features,
                             tuple(versions().items()), 0, "")
        obj = self.cache.read(key, expect) if self.cache is not None else None
        from_cache = obj is not None
        if obj is None:
            if self.cache is not None and self.cache.usable() and (self.cache.folder / f"{key}.o").exists():
                self.stats["cache_refused"] += 1
            obj = self._compile(text, isa, prefix)
            from ember.devices.cpu.runtime.release import malloc_trim

            release_library_pages()  # the code generator's pages, until the next compile
            malloc_trim()  # and the heap it freed, so that compiles do not pile up fragments
            if self.cache is not None:
                record = CacheRecord(**{**asdict(expect), "object_size": len(obj),
                                        "object_sha256": hashlib.sha256(obj).hexdigest()})
                self.cache.write(key, record, obj)
        memo = builder_key(signature, isa, build) if self.cache is not None else None
        if self.cache is not None and memo is not None:
            self.cache.write_index(memo, key, expect.ir_sha256, expect.symbols)
        return (obj, from_cache), key

    def _compile(self, text: str, isa: Isa, prefix: str) -> bytes:
        tm = self.target_machine(isa)
        mod = llvm.parse_assembly(text)
        mod.data_layout = str(tm.target_data)
        mod.verify()
        pto = llvm.create_pipeline_tuning_options(speed_level=2)
        pto.loop_vectorization = False  # kernels are vectorized by construction
        pto.slp_vectorization = False
        pto.loop_unrolling = False  # unrolled by construction; LLVM's unroller only adds register pressure
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
        dump = os.environ.get(DUMP_ENV)
        if dump:
            os.makedirs(dump, exist_ok=True)
            Path(dump, prefix + ".ll").write_text(text)
            Path(dump, prefix + ".s").write_text(tm.emit_assembly(mod))
        return tm.emit_object(mod)


_MADV_DONTNEED = 4
_RELEASED: dict[str, int] = {"calls": 0, "kb": 0}


def _clean_llvm_mappings(text: str) -> list[tuple[int, int, int]]:
    """(start, end, resident kB) of LLVM's library's read-only mappings with no private
    copy-on-write pages, from the text of ``/proc/self/smaps``."""
    spans: list[tuple[int, int, int]] = []
    span: tuple[int, int, int] | None = None  # start, end, resident kB of a candidate mapping
    for line in text.splitlines():
        head = line.split(None, 6)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            span = None
            path = head[5] if len(head) > 5 else ""
            if os.path.basename(path).startswith("libllvmlite") and "w" not in head[1]:
                start, end = (int(x, 16) for x in head[0].split("-"))
                span = (start, end, 0)
        elif span is not None and head and head[0] == "Rss:":
            span = (span[0], span[1], int(head[1]))
        elif span is not None and head and head[0] == "Anonymous:":
            if int(head[1]) == 0:
                spans.append(span)
            span = None
    return spans


#: LLVM's clean read-only mappings, found once: reading ``/proc/self/smaps`` walks every mapping
#: of the process (~50 ms with torch and TensorFlow loaded), and a read-only mapping of a loaded
#: library neither moves nor gains private pages
_CLEAN_SPANS: list[tuple[int, int]] | None = None


def _resident_kb(start: int, end: int) -> int:
    """kB of ``[start, end)`` resident in this process (the present bit of
    ``/proc/self/pagemap``, readable without privileges)."""
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(start // page * 8)
        words = np.frombuffer(f.read((end - start) // page * 8), np.uint64)
    return int(np.count_nonzero(words >> np.uint64(63))) * page // 1024


def release_library_pages() -> int:
    """Drop this process's resident pages of LLVM's shared library that are clean copies of
    the file (read-only mappings with no private copy-on-write pages): they fault back from
    the page cache when LLVM runs again. LLVM's static constructors and the code generator
    touch tens of MB of it that loading a cached kernel never needs. Linux only; returns the
    kB that were resident (0 when nothing was done)."""
    global _CLEAN_SPANS
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        if _CLEAN_SPANS is None:
            spans = _clean_llvm_mappings(Path("/proc/self/smaps").read_text())
            _CLEAN_SPANS = [(a, b) for a, b, _ in spans]
        else:
            spans = [(a, b, _resident_kb(a, b)) for a, b in _CLEAN_SPANS]
    except (OSError, AttributeError):
        return 0
    released = sum(kb for start, end, kb in spans if madvise(start, end - start, _MADV_DONTNEED) == 0)
    _RELEASED["calls"] += 1
    _RELEASED["kb"] += released
    return released


def _register_libc() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    for name in _LIBC_SYMBOLS:
        try:
            addr = ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
        except AttributeError:
            continue
        llvm.add_symbol(name, addr)


_JIT: Jit | None = None
_JIT_LOCK = threading.Lock()


def get_jit() -> Jit:
    """The process-wide :class:`Jit`."""
    global _JIT
    with _JIT_LOCK:
        if _JIT is None:
            _JIT = Jit()
        return _JIT


def load(signature: str, isa: Isa, build: Callable[[str], ir.Module]) -> Library:
    """Shorthand for ``get_jit().load(...)``."""
    return get_jit().load(signature, isa, build)
