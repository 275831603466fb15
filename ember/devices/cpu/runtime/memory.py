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
    # the values placed so far (offset, end, first and last step), as arrays: finding the ones
    # alive with the next value is one vectorized test, not a Python walk over all of them
    count = len(roots)
    offsets, ends = np.zeros(count, np.int64), np.zeros(count, np.int64)
    firsts, lasts = np.zeros(count, np.int64), np.zeros(count, np.int64)
    top = 0
    for k, t in enumerate(roots):
        size = -(-max(t.nbytes, 1) // ALIGN) * ALIGN
        alive = np.flatnonzero((lasts[:k] >= t.first) & (firsts[:k] <= t.last))
        off = 0
        if len(alive):
            order = np.lexsort((ends[alive], offsets[alive]))  # by offset, then end
            starts = offsets[alive][order]
            # first fit: before the i-th busy block (by offset) the candidate is the furthest end of
            # the blocks before it; take the first gap that holds ``size``, else after them all
            reach = np.maximum.accumulate(np.concatenate(([0], ends[alive][order])))
            fits = np.flatnonzero(reach[:-1] + size <= starts)
            off = int(reach[fits[0]] if len(fits) else reach[-1])
        t.offset = off
        offsets[k], ends[k], firsts[k], lasts[k] = off, off + size, t.first, t.last
        top = max(top, off + size)
    program.arena_bytes = top
    program.stats["arena_bytes"] = top
    program.stats["values_bytes"] = sum(-(-max(t.nbytes, 1) // ALIGN) * ALIGN for t in roots)
