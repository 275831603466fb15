"""The process-wide LLVM JIT: compile generated modules, cache their object code on disk.

There is one MCJIT execution engine per process. A kernel module is identified by a
*signature* (a string that fully determines the IR its builder emits, including the
generator's version) and an :class:`~ember.devices.cpu.isa.Isa`. :func:`load` returns the
already-loaded module, or the object code from the disk cache, or builds, optimizes and
compiles the IR and stores the object code in the cache.

The cache lives in ``$EMBER_KERNEL_CACHE`` (default ``~/.cache/ember/kernels``; set it to
``off`` to disable). An entry is keyed by signature, CPU name and features and the llvmlite
and LLVM versions; entries that fail their checksum are ignored and rewritten.
Set ``EMBER_KERNEL_DUMP`` to a directory to get each compiled module's IR and assembly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

from ember.devices.cpu.isa import Isa, _llvm_init

log = logging.getLogger("ember.cpu")

CACHE_ENV = "EMBER_KERNEL_CACHE"
DUMP_ENV = "EMBER_KERNEL_DUMP"
_FORMAT = b"EMBEROBJ2"  # header of a cache file; bump when the file layout changes

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


class Library:
    """The functions of one compiled module: symbol addresses and ctypes callables.

    Symbol names are ``<prefix>_<name>``; :meth:`address` takes the short name.
    """

    def __init__(self, engine: llvm.ExecutionEngine, prefix: str, from_cache: bool, seconds: float):
        self._engine = engine
        self.prefix = prefix
        self.from_cache = from_cache
        self.seconds = seconds
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


class Jit:
    """The single execution engine of this process and its module table."""

    def __init__(self, cache_dir: Path | str | None | bool = True) -> None:
        """``cache_dir``: True for :func:`default_cache_dir`, a path, or None/False for no cache."""
        _llvm_init()
        _register_libc()
        self._lock = threading.RLock()
        self._machines: dict[str, llvm.TargetMachine] = {}
        self._engine: llvm.ExecutionEngine | None = None
        self._libraries: dict[str, Library] = {}
        self._keep: list = []  # object buffers and modules the engine points into
        if cache_dir is True:
            self.cache_dir = default_cache_dir()
        else:
            self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.stats = {"compiled": 0, "cache_hits": 0, "compile_seconds": 0.0}

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
        ``<prefix>_<name>``; everything else in it should have internal linkage.
        """
        digest = _digest(signature, isa)
        prefix = "ember_" + re.sub(r"[^A-Za-z0-9]+", "_", signature.split("|", 1)[0])[:40] + "_" + digest[:12]
        with self._lock:
            lib = self._libraries.get(prefix)
            if lib is not None:
                return lib
            t0 = time.perf_counter()
            obj = self._cache_read(digest)
            from_cache = obj is not None
            if obj is None:
                obj = self._compile(build(prefix), isa, prefix)
                self._cache_write(digest, obj)
            engine = self._get_engine(isa)
            objref = llvm.ObjectFileRef.from_data(obj)
            self._keep.append((obj, objref))
            engine.add_object_file(objref)
            engine.finalize_object()
            dt = time.perf_counter() - t0
            lib = Library(engine, prefix, from_cache, dt)
            self._libraries[prefix] = lib
            if from_cache:
                self.stats["cache_hits"] += 1
            else:
                self.stats["compiled"] += 1
                self.stats["compile_seconds"] += dt
            log.debug("kernel module %s: %s in %.3f s", prefix, "cache" if from_cache else "compiled", dt)
            return lib

    def _compile(self, module: ir.Module, isa: Isa, prefix: str) -> bytes:
        tm = self.target_machine(isa)
        module.triple = isa.triple
        text = str(module)
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

    def _cache_path(self, digest: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{digest}.o"

    def _cache_read(self, digest: str) -> bytes | None:
        path = self._cache_path(digest)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        head = len(_FORMAT)
        if len(data) < head + 32 or data[:head] != _FORMAT:
            log.warning("ember: ignoring corrupt kernel cache entry %s", path)
            return None
        check, payload = data[head:head + 32], data[head + 32:]
        if hashlib.sha256(payload).digest() != check:
            log.warning("ember: ignoring corrupt kernel cache entry %s", path)
            return None
        return payload

    def _cache_write(self, digest: str, obj: bytes) -> None:
        path = self._cache_path(digest)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(_FORMAT + hashlib.sha256(obj).digest() + obj)
            os.replace(tmp, path)
        except OSError as e:  # a read-only or full disk only costs the next compile
            log.warning("ember: cannot write kernel cache entry %s: %s", path, e)


def _digest(signature: str, isa: Isa) -> str:
    text = "\n".join([_FORMAT.decode(), signature, isa.key, f"llvmlite {llvmlite.__version__}",
                      "llvm " + ".".join(map(str, llvm.llvm_version_info))])
    return hashlib.sha256(text.encode()).hexdigest()


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
