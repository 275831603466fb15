"""Giving memory back once a model is compiled.

Compiling leaves memory resident that no inference needs: graph objects the passes and the
lowering dropped but that sit in reference cycles (with the constant arrays they hold), heap
pages freed by Python and LLVM that glibc keeps mapped, and pages of LLVM's library touched by
the code generator. The arena's pages are touched only by the first inference, so what
compiling leaves behind adds directly to the peak. ``release_after_compile`` returns it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

_MALLOC_TRIM: object | None = None


def malloc_trim() -> None:
    """glibc's ``malloc_trim(0)``: return free heap pages (also inside the heap) to the
    system. Nothing on other C libraries."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
                fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):  # musl and others have no malloc_trim
                fn = None
        _MALLOC_TRIM = fn or False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)  # type: ignore[operator]


def release_after_compile() -> None:
    """Collect graph cycles, drop LLVM's clean library pages and trim the C heap (about 10
    ms); called once at the end of ``CPUDevice.compile``."""
    gc.collect()
    jit = sys.modules.get("ember.devices.cpu.llvm.jit")
    if jit is not None:
        jit.release_library_pages()
    malloc_trim()
