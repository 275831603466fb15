"""numpy's BLAS held to one thread while a CPU plan runs reference kernels.

A reference kernel inside a CPU plan (an op with no native kernel) may call numpy's BLAS
(``matmul``, ``tensordot``, ``einsum``). OpenBLAS then wakes its own worker threads, which spin
after each call; ember's pool, pinned to the same cores, spins too, and the two fight: whole runs
10-30x slower than usual were measured on a 2-core machine. So while such a plan runs, BLAS runs
on the calling thread only; the previous setting comes back when the last concurrent run ends
(the setting is process-wide, so concurrent streams share one count).

The thread count is set through ``threadpoolctl`` when it is installed, else through OpenBLAS's
own ``*openblas_set_num_threads*`` entry point found in the loaded libraries (Linux); with
neither, nothing is limited and one INFO line says so. The libraries are looked up once, at the
first guarded run: a BLAS loaded later (another package's) is not limited.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ember.cpu")

#: BLAS threads while reference kernels run inside a CPU plan
BLAS_THREADS = 1

_Setter = tuple[Callable[[], int], Callable[[int], Any]]


def _threadpoolctl_setters() -> list[_Setter] | None:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    def getter(lib: Any) -> Callable[[], int]:
        return lambda: int(lib.num_threads)

    return [(getter(lib), lib.set_num_threads) for lib in libs]


def _openblas_setters() -> list[_Setter]:
    """OpenBLAS's get/set entry points in the libraries this process has loaded (Linux)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return []
    out = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", "")):
            get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                out.append((get, put))
                break
    return out


@functools.cache
def _setters() -> list[_Setter]:
    setters = _threadpoolctl_setters()
    if setters is None:
        setters = _openblas_setters()
    if not setters:
        log.info("CPU: numpy's BLAS threads are not controlled while reference kernels run "
                 "(pip install threadpoolctl to control them)")
    return setters


class BlasGuard:
    """A context manager: numpy's BLAS at :data:`BLAS_THREADS` threads while any guarded run is
    inside (reentrant across threads; the first entry saves the setting, the last exit restores it)."""

    _lock = threading.Lock()
    _depth = 0
    _saved: list[int] = []

    def __enter__(self) -> BlasGuard:
        cls = BlasGuard
        with cls._lock:
            if cls._depth == 0:
                setters = _setters()
                cls._saved = [get() for get, _ in setters]
                for (_, put), n in zip(setters, cls._saved):
                    if n != BLAS_THREADS:
                        put(BLAS_THREADS)
            cls._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        cls = BlasGuard
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0:
                for (_, put), n in zip(_setters(), cls._saved):
                    if n != BLAS_THREADS:
                        put(n)
