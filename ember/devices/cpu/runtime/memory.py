"""Memory of a plan: aligned buffers and the arena plan (values whose lifetimes do not
overlap share bytes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ember.devices.cpu.runtime.plan import Program

ALIGN = 64


def aligned_empty(shape: tuple[int, ...] | int, dtype: np.dtype | type = np.float32, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an ``align``-byte boundary."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize
    raw = np.empty(n + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + n].view(dt).reshape(shape)


def plan_memory(program: Program) -> None:
    """Give every arena value of ``program`` an offset; values alive at the same step never
    overlap (largest first, first fit)."""
    n = len(program.ops)
    for t in program.tensors:
        t.first, t.last, t.offset = 1 << 60, -1, -1
    for i, op in enumerate(program.ops):
        for t in op.outputs:
            r = t.root()
            r.first = min(r.first, i)
            r.last = max(r.last, i)
        for t in op.inputs:
            r = t.root()
            r.first = min(r.first, i)
            r.last = max(r.last, i)
    for t in program.outputs:
        t.root().last = n
    roots = [t for t in program.tensors if t.kind == "value" and t.arena and t.last >= 0 and not t.external]
    roots.sort(key=lambda t: (-t.nbytes, t.first))
    placed: list[tuple[int, int, int, int]] = []  # offset, end, first, last
    top = 0
    for t in roots:
        size = -(-max(t.nbytes, 1) // ALIGN) * ALIGN
        busy = sorted((o, e) for o, e, f, la in placed if not (la < t.first or t.last < f))
        off = 0
        for o, e in busy:
            if off + size <= o:
                break
            off = max(off, e)
        t.offset = off
        placed.append((off, off + size, t.first, t.last))
        top = max(top, off + size)
    program.arena_bytes = top
    program.stats["arena_bytes"] = top
    program.stats["values_bytes"] = sum(-(-max(t.nbytes, 1) // ALIGN) * ALIGN for t in roots)
