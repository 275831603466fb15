"""Memory of a plan: aligned buffers and the arena plan (values whose lifetimes do not
overlap share bytes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ember.devices.cpu.runtime.plan import Program, Tensor

ALIGN = 64

#: outputs may take over the memory of the residual their op reads last (``Op.inplace``); False
#: plans every value apart (A/B runs)
IN_PLACE = True


def aligned_empty(shape: tuple[int, ...] | int, dtype: np.dtype | type = np.float32, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an ``align``-byte boundary."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize
    raw = np.empty(n + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + n].view(dt).reshape(shape)


#: up to this many arena values, :func:`place_values` walks the placed ones in Python (quadratic);
#: above, it tests them in one vectorized step (~7 us of numpy calls a value): both place every
#: value at the same offset (single thread: 64 values 0.11 ms against 0.46, 512 values 3.2 against 3.7)
PYTHON_PLACEMENT_BELOW = 384


def plan_memory(program: Program) -> None:
    """Give every arena value of ``program`` an offset; values alive at the same step never
    overlap (largest first, first fit)."""
    n = len(program.ops)
    for t in program.tensors:
        t.first, t.last, t.offset = 1 << 60, -1, -1
    for i, op in enumerate(program.ops):
        for group in (op.outputs, op.inputs):
            for t in group:
                while t.kind == "view":  # t.root(), inlined: this runs for every port of every new shape
                    t = t.base  # type: ignore[assignment]
                if i < t.first:
                    t.first = i
                if i > t.last:
                    t.last = i
    for t in program.outputs:
        t.root().last = n
    roots = [t for t in program.tensors if t.kind == "value" and t.arena and t.last >= 0 and not t.external]
    owner = _in_place_owners(program)  # {output id: the value whose bytes it takes over}
    # one span a chain of in-place outputs (largest size, first step to last step), one a value
    spans: list[tuple[int, int, int, list[Tensor]]] = []
    if owner:
        groups: dict[int, list[Tensor]] = {}
        for t in roots:
            groups.setdefault(_owner_of(t.id, owner), []).append(t)
        spans = [(max(t.nbytes for t in g), min(t.first for t in g), max(t.last for t in g), g)
                 for g in groups.values()]
    else:  # (the common case, at every new shape: no chains)
        spans = [(t.nbytes, t.first, t.last, [t]) for t in roots]
    spans.sort(key=lambda s: (-s[0], s[1]))
    sizes = [-(-max(nbytes, 1) // ALIGN) * ALIGN for nbytes, _, _, _ in spans]
    offsets = place_values(sizes, [s[1] for s in spans], [s[2] for s in spans])
    for span, off in zip(spans, offsets):
        for t in span[3]:
            t.offset = off
    program.stats["in_place_outputs"] = len(owner)
    top = max((o + s for o, s in zip(offsets, sizes)), default=0)
    program.arena_bytes = top
    program.stats["arena_bytes"] = top
    program.stats["values_bytes"] = sum(sizes)


def _in_place_owners(program: Program) -> dict[int, int]:
    """{id of an op's output 0: id of the input it overwrites} for the ops that allow it
    (``Op.inplace``) where that is safe: both arena values of one dtype, layout and shape,
    the input's last reader is this op and no other of its inputs shares the input's memory,
    and the input is not a model input's copy (whose readers may be pointed at the caller's
    array: the output would be written there)."""
    owner: dict[int, int] = {}
    if not IN_PLACE:
        return owner
    for i, op in enumerate(program.ops):
        if op.inplace is None or not op.outputs or op.inplace >= len(op.inputs):
            continue
        r, y = op.inputs[op.inplace], op.outputs[0]
        if r.kind != "value" or y.kind != "value" or not (r.arena and y.arena) or r.external or y.external:
            continue
        if r.last != i or y.first != i or r.dtype != y.dtype or r.layout != y.layout or r.shape != y.shape:
            continue
        if r.producer is None or r.producer.type_name == "InputCopy" or y.id in owner:
            continue
        if any(k != op.inplace and t.root() is r for k, t in enumerate(op.inputs)):
            continue
        owner[y.id] = r.id
    return owner


def _owner_of(tid: int, owner: dict[int, int]) -> int:
    """The first value of a chain of in-place outputs ``tid`` belongs to."""
    while tid in owner:
        tid = owner[tid]
    return tid


def place_values(sizes: list[int], firsts: list[int], lasts: list[int],
                 vectorized: bool | None = None) -> list[int]:
    """Offsets of values of ``sizes`` bytes alive from step ``firsts[i]`` to ``lasts[i]``, placed
    in this order, each at the lowest offset where it overlaps no value placed before it that is
    alive at one of its steps (first fit). ``vectorized``: the numpy walk (None: by count)."""
    count = len(sizes)
    if vectorized is None:
        vectorized = count > PYTHON_PLACEMENT_BELOW
    out: list[int] = []
    if not vectorized:
        placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
        for size, first, last in zip(sizes, firsts, lasts):
            busy = sorted((o, e) for o, e, f, la in placed if la >= first and f <= last)
            at = 0
            for o, e in busy:  # by offset, then end: the first gap before a block that holds ``size``
                if at + size <= o:
                    break
                at = max(at, e)
            placed.append((at, at + size, first, last))
            out.append(at)
        return out
    # the values placed so far (offset, end, first and last step), as arrays: finding the ones
    # alive with the next value is one vectorized test, not a Python walk over all of them
    offsets, ends = np.zeros(count, np.int64), np.zeros(count, np.int64)
    firsts_a, lasts_a = np.zeros(count, np.int64), np.zeros(count, np.int64)
    for k in range(count):
        size, first, last = sizes[k], firsts[k], lasts[k]
        alive = np.flatnonzero((lasts_a[:k] >= first) & (firsts_a[:k] <= last))
        off = 0
        if len(alive):
            order = np.lexsort((ends[alive], offsets[alive]))  # by offset, then end
            starts = offsets[alive][order]
            # first fit: before the i-th busy block (by offset) the candidate is the furthest end of
            # the blocks before it; take the first gap that holds ``size``, else after them all
            reach = np.maximum.accumulate(np.concatenate(([0], ends[alive][order])))
            fits = np.flatnonzero(reach[:-1] + size <= starts)
            off = int(reach[fits[0]] if len(fits) else reach[-1])
        offsets[k], ends[k], firsts_a[k], lasts_a[k] = off, off + size, first, last
        out.append(off)
    return out
