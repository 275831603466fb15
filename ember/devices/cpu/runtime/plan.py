"""A lowered model: tensors placed in one arena, a list of steps, and the code that runs it.

Lowering (``plan_ops``) builds a :class:`Program`: :class:`Tensor` descriptions (constants,
model inputs, computed values and views of them) and :class:`Op` steps in execution order.
An op is *native* (it binds buffer addresses into kernel calls once) or *python* (a numpy
function called per inference: the ops' reference kernels, and small glue).

:meth:`Program.instantiate` plans the memory (every computed value that a native op
touches lives in one arena; values whose lifetimes do not overlap share bytes), binds the
native ops to their buffers and returns an :class:`Instance`, which runs inferences. Runs of
consecutive native steps go to the native runner in one foreign call with the GIL released.
An instance is used by one thread at a time; clones share the program (packed weights).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.devices.cpu.kernels.gemm import BoundKernel, aligned_empty
from ember.devices.cpu.runtime.runner import STEP_WORDS, run_steps_function
from ember.devices.cpu.runtime.threadpool import ThreadPool
from ember.errors import EmberError, InferenceError

ALIGN = 64
NHWC = "nhwc"
PLAIN = "plain"


class Tensor:
    """One tensor of a plan. ``shape`` is the physical shape: for layout ``nhwc`` a 4-D
    logical ``[N, C, H, W]`` tensor is stored as ``[N, H, W, C]``.

    kind: ``const`` (``data``), ``input`` (model input ``index``), ``value`` (computed by
    ``producer``; in the arena when ``arena``), ``view`` (of ``base``: ``make_view(base array)``).
    """

    __slots__ = ("id", "shape", "dtype", "layout", "kind", "data", "index", "producer", "arena", "base",
                 "make_view", "contiguous", "external", "first", "last", "offset", "name")

    def __init__(self, tid: int, shape: Sequence[int] | None, dtype: Any, layout: str = PLAIN,
                 kind: str = "value", name: str = "") -> None:
        self.id = tid
        self.shape: tuple[int, ...] = tuple(int(d) for d in shape) if shape is not None else None  # type: ignore
        self.dtype = np.dtype(dtype)
        self.layout = layout
        self.kind = kind
        self.data: np.ndarray | None = None
        self.index = -1
        self.producer: Op | None = None
        self.arena = False
        self.base: Tensor | None = None
        self.make_view: Callable[[np.ndarray], np.ndarray] | None = None
        self.contiguous = True
        #: a buffer of its own (not in the arena), e.g. the copy of a model input
        self.external = False
        self.first = 1 << 60
        self.last = -1
        self.offset = -1
        self.name = name

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def logical_shape(self) -> tuple[int, ...]:
        if self.layout == NHWC:
            n, h, w, c = self.shape
            return (n, c, h, w)
        return self.shape

    def root(self) -> Tensor:
        t = self
        while t.kind == "view":
            assert t.base is not None
            t = t.base
        return t

    @property
    def in_arena(self) -> bool:
        r = self.root()
        return r.kind == "value" and r.arena

    def __repr__(self) -> str:
        return f"<Tensor {self.id} {self.kind} {self.layout}{list(self.shape)} {self.dtype} {self.name!r}>"


@dataclass
class Op:
    """One step. Native: ``bind(inputs, outputs) -> [BoundKernel]`` with physical arrays.
    Python: ``fn(inputs) -> outputs`` with logical arrays (``plain`` layout outputs)."""

    name: str
    type_name: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    native: bool
    bind: Callable[[list[np.ndarray], list[np.ndarray]], list[BoundKernel]] | None = None
    fn: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None
    #: a python op that reads and writes physical arrays (layout conversions, copies)
    physical: bool = False


@dataclass
class Program:
    """The result of lowering: tensors, ops in order, the model's inputs and outputs."""

    tensors: list[Tensor] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    threads: int = 1
    arena_bytes: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    # -- building -------------------------------------------------------------------------
    def tensor(self, shape: Sequence[int], dtype: Any, layout: str = PLAIN, kind: str = "value",
               name: str = "") -> Tensor:
        t = Tensor(len(self.tensors), shape, dtype, layout, kind, name)
        self.tensors.append(t)
        return t

    def const(self, data: np.ndarray, name: str = "") -> Tensor:
        t = self.tensor(data.shape, data.dtype, PLAIN, "const", name)
        t.data = data
        return t

    def view(self, base: Tensor, shape: Sequence[int], make: Callable[[np.ndarray], np.ndarray],
             layout: str = PLAIN, contiguous: bool = True, name: str = "") -> Tensor:
        """A tensor that aliases ``base`` (whose root becomes an arena value)."""
        root = base.root()
        if root.kind != "value":
            raise EmberError("ember: internal: views need a computed base")
        root.arena = True
        t = self.tensor(shape, base.dtype, layout, "view", name)
        t.base, t.make_view, t.contiguous = base, make, contiguous
        return t

    def add(self, op: Op) -> Op:
        for t in op.outputs:
            if t.kind == "value":
                t.producer = op
                if op.native:
                    t.arena = True
        if op.native:
            for t in op.inputs + op.outputs:
                if t.shape is None:
                    raise EmberError(f"ember: internal: native op {op.name} on a dynamic shape")
            for t in op.inputs:
                r = t.root()
                if r.kind == "value":
                    r.arena = True
                elif r.kind == "input":
                    raise EmberError("ember: internal: a native op reads a model input directly")
        self.ops.append(op)
        return op

    def prune(self) -> int:
        """Drop ops whose results nobody reads (left behind by rules that gave up)."""
        live = {t.root().id for t in self.outputs}
        kept: list[Op] = []
        for op in reversed(self.ops):
            if any(t.root().id in live or t.id in live for t in op.outputs):
                kept.append(op)
                live.update(t.root().id for t in op.inputs)
                live.update(t.id for t in op.inputs)
        dropped = len(self.ops) - len(kept)
        self.ops = kept[::-1]
        return dropped

    # -- memory ---------------------------------------------------------------------------
    def plan_memory(self) -> None:
        """Give every arena value an offset; values alive at the same step never overlap."""
        n = len(self.ops)
        for t in self.tensors:
            t.first, t.last, t.offset = 1 << 60, -1, -1
        for i, op in enumerate(self.ops):
            for t in op.outputs:
                r = t.root()
                r.first = min(r.first, i)
                r.last = max(r.last, i)
            for t in op.inputs:
                r = t.root()
                r.first = min(r.first, i)
                r.last = max(r.last, i)
        for t in self.outputs:
            t.root().last = n
        roots = [t for t in self.tensors if t.kind == "value" and t.arena and t.last >= 0 and not t.external]
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
        self.arena_bytes = top
        self.stats["arena_bytes"] = top
        self.stats["values_bytes"] = sum(-(-max(t.nbytes, 1) // ALIGN) * ALIGN for t in roots)

    def instantiate(self, pool: ThreadPool) -> Instance:
        """Bind the program to a fresh arena and ``pool``."""
        if self.arena_bytes == 0 and any(t.kind == "value" and t.arena for t in self.tensors):
            self.plan_memory()
        return Instance(self, pool)


class Instance:
    """A program bound to its own arena: runs inferences, one at a time."""

    def __init__(self, program: Program, pool: ThreadPool) -> None:
        self.program = program
        self.pool = pool
        self.arena = aligned_empty(max(program.arena_bytes, ALIGN), np.uint8)
        arrays: dict[int, np.ndarray] = {}
        for t in program.tensors:
            if t.kind == "const":
                arrays[t.id] = t.data  # type: ignore[assignment]
            elif t.kind == "value" and t.arena and t.external:
                arrays[t.id] = aligned_empty(max(t.nbytes, 1), np.uint8)[:t.nbytes].view(t.dtype).reshape(t.shape)
            elif t.kind == "value" and t.arena and t.offset >= 0:
                arrays[t.id] = self.arena[t.offset:t.offset + t.nbytes].view(t.dtype).reshape(t.shape)
        for t in program.tensors:  # views come after their bases
            if t.kind == "view" and t.base is not None and t.base.id in arrays:
                assert t.make_view is not None
                v = t.make_view(arrays[t.base.id])
                if v.shape != t.shape:
                    raise EmberError(f"ember: internal: view {t} has shape {v.shape}")
                arrays[t.id] = v
        self.arrays = arrays
        rows: list[list[int]] = []
        keep: list[Any] = []
        segments: list[Any] = []  # (first, count) native runs, or python callables
        self.op_spans: list[tuple[Op, Any]] = []
        patchable = self._patchable_inputs(program)
        self.patches: list[tuple[int, np.dtype, tuple[int, ...], list[tuple[np.ndarray, int, int]]]] = []
        for op in program.ops:
            if op.type_name == "InputCopy" and op.outputs[0].id in patchable:
                continue  # the kernels read the caller's array (pointers patched per run)
            if op.native:
                assert op.bind is not None
                kernels = op.bind([arrays[t.id] for t in op.inputs], [arrays[t.id] for t in op.outputs])
                first = len(rows)
                for k in kernels:
                    rows.append([k.task, k.ctx.ctypes.data, k.n_tasks, k.num_threads])
                    keep.append(k)
                span = (first, len(kernels))
                if segments and isinstance(segments[-1], list):
                    segments[-1][1] += len(kernels)
                else:
                    segments.append([first, len(kernels)])
                self.op_spans.append((op, span))
            else:
                step = self._python_step(op)
                segments.append(step)
                self.op_spans.append((op, step))
        self._keep = keep
        for tid, index in patchable.items():
            t = program.tensors[tid]
            start = arrays[tid].ctypes.data
            fields = []
            for k in keep:
                hit = np.nonzero((k.ctx >= start) & (k.ctx < start + max(t.nbytes, 1)))[0]
                fields += [(k.ctx, int(f), int(k.ctx[f]) - start) for f in hit]
            self.patches.append((index, t.dtype, t.shape, fields))
        self.table = np.array(rows if rows else [[0] * STEP_WORDS], np.int64).reshape(-1, STEP_WORDS)
        self.segments = [tuple(s) if isinstance(s, list) else s for s in segments]
        self._runner = run_steps_function()
        self._input_ids = [t.id for t in program.inputs]

    @staticmethod
    def _patchable_inputs(program: Program) -> dict[int, int]:
        """{copy tensor id: input index} of model inputs that only native ops read (directly
        or through views): their kernels can read the caller's array in place."""
        readers: dict[int, list[Op]] = {}
        for op in program.ops:
            for t in op.inputs:
                readers.setdefault(t.root().id, []).append(op)
        out = {}
        for op in program.ops:
            if op.type_name == "InputCopy":
                t = op.outputs[0]
                if t in program.outputs or any(v.root() is t for v in program.outputs):
                    continue
                if t.arena and readers.get(t.id) and all(r.native for r in readers[t.id]):
                    out[t.id] = op.inputs[0].index
        return out

    # -- python steps ---------------------------------------------------------------------
    def _getter(self, t: Tensor, physical: bool) -> Callable[[dict[int, np.ndarray]], np.ndarray]:
        arr = self.arrays.get(t.id)
        if arr is not None:
            if t.layout == NHWC and not physical:
                logical = arr.transpose(0, 3, 1, 2)
                return lambda slots: logical
            return lambda slots: arr
        tid = t.id
        return lambda slots: slots[tid]

    def _python_step(self, op: Op) -> Callable[[dict[int, np.ndarray]], None]:
        getters = [self._getter(t, op.physical) for t in op.inputs]
        fn = op.fn
        assert fn is not None
        arena = self.arena
        targets: list[tuple[int, np.ndarray | None]] = []
        for t in op.outputs:
            if t.layout != PLAIN and not op.physical:
                raise EmberError(f"ember: internal: python op {op.name} writes a {t.layout} tensor")
            targets.append((t.id, self.arrays.get(t.id)))

        def step(slots: dict[int, np.ndarray]) -> None:
            try:
                outs = fn([g(slots) for g in getters])
            except EmberError:
                raise
            except Exception as e:  # a kernel failure names the node that failed
                raise InferenceError(f"ember: {op.type_name} '{op.name}' failed: {type(e).__name__}: {e}") from e
            for (tid, dst), val in zip(targets, outs):
                if dst is not None:
                    if val.shape != dst.shape:
                        val = np.broadcast_to(val, dst.shape) if val.size == dst.size else val
                    np.copyto(dst, val.reshape(dst.shape), casting="unsafe")
                else:
                    if isinstance(val, np.ndarray) and np.may_share_memory(val, arena):
                        val = val.copy()
                    slots[tid] = val

        step.op = op  # type: ignore[attr-defined]
        return step

    # -- running --------------------------------------------------------------------------
    def _native(self, first: int, count: int) -> None:
        self._runner(self.pool.handle, self.pool.parallel_for_address, self.table.ctypes.data, first, count)

    def run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None = None) -> list[np.ndarray]:
        slots: dict[int, np.ndarray] = dict(zip(self._input_ids, inputs))
        held = []
        for index, dtype, shape, fields in self.patches:
            a = np.asarray(inputs[index], dtype=dtype, order="C")  # keeps 0-d arrays 0-d
            if a.shape != shape:
                raise InferenceError(f"ember: input {index} has shape {list(a.shape)}, expected {list(shape)}")
            held.append(a)
            addr = a.ctypes.data
            for ctx, f, delta in fields:
                ctx[f] = addr + delta
        if profile is not None:
            self._run_profiled(slots, profile)
        else:
            for seg in self.segments:
                if isinstance(seg, tuple):
                    self._native(seg[0], seg[1])
                else:
                    seg(slots)
        return [self._fetch(t, slots) for t in self.program.outputs]

    def _run_profiled(self, slots: dict[int, np.ndarray], profile: dict[str, float]) -> None:
        for op, span in self.op_spans:
            t0 = time.perf_counter()
            if isinstance(span, tuple):
                self._native(*span)
            else:
                span(slots)
            profile[op.name] = profile.get(op.name, 0.0) + time.perf_counter() - t0

    def _fetch(self, t: Tensor, slots: dict[int, np.ndarray]) -> np.ndarray:
        arr = self.arrays.get(t.id)
        if arr is None:
            return np.array(slots[t.id], copy=True)
        if t.layout == NHWC:
            return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
        return np.array(arr, copy=True)

