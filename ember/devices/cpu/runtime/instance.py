"""A plan bound to memory and a thread pool: the object that runs inferences.

:func:`instantiate` binds a :class:`~ember.devices.cpu.runtime.plan.Program` to a fresh arena:
native ops become rows of the native runner's step table (one foreign call, GIL released,
per run of consecutive native steps); python ops become callables. A model input that only
native kernels read is not copied: its kernels read the caller's array, re-pointed before
each run through the input's binding slots (the declared pointer words of those kernels,
recorded once here). An instance is used by one thread at a time.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.devices.cpu.runtime.blas import BlasGuard
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.memory import ALIGN, aligned_empty, plan_memory
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op, Program, Tensor
from ember.devices.cpu.runtime.runner import STEP_WORDS, run_steps_function
from ember.devices.cpu.runtime.threadpool import PoolLease, ThreadPool
from ember.errors import EmberError, InferenceError

log = logging.getLogger("ember.cpu")

#: on a machine the pool judges busy, a parallel run can use a second step table whose GEMMs and
#: convolutions are cut for ``BUSY_SPLIT`` times the plan's threads (``BoundKernel.finer``): a
#: worker that loses its core to another process then holds a smaller part of a job, and the
#: caller takes the rest (bf16's AMX jobs are 2 tasks on 2 threads on a quiet plan). 0 or 1:
#: off, the default: A/B runs on a loaded machine showed no gain (docs/cpu-performance.md,
#: session 7); ``EMBER_BUSY_SPLIT=3`` turns it on for the quiet-machine A/B under a spinner. A
#: quiet machine is never affected.
BUSY_SPLIT = 0


def busy_split() -> int:
    """:data:`BUSY_SPLIT`, or ``EMBER_BUSY_SPLIT`` when set."""
    env = os.environ.get("EMBER_BUSY_SPLIT", "").strip()
    try:
        return int(env) if env else BUSY_SPLIT
    except ValueError:
        return BUSY_SPLIT

#: where a control-flow body's plan adds its per-op times while the If/Loop step that runs it is
#: being profiled (a body's executable is called by the step, which has no profile argument)
_BODY_PROFILE: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("body_profile",
                                                                                         default=None)


@dataclass
class InputBinding:
    """Where model input ``index`` is read in place: ``slots`` are ``(context, word, offset)``
    triples, each context word set to the caller's array address plus ``offset`` per run."""

    index: int
    dtype: np.dtype
    shape: tuple[int, ...]
    slots: list[tuple[np.ndarray, int, int]] = field(default_factory=list)


def instantiate(program: Program, pool: ThreadPool | PoolLease, arena: np.ndarray | None = None) -> Instance:
    """Bind ``program`` to ``pool`` and an arena: ``arena`` (uint8, at least the plan's
    ``arena_bytes``, 64-byte aligned; shared by instances that never run at the same time) or a
    fresh one. Memory is planned first if needed."""
    if program.arena_bytes == 0 and any(t.kind == "value" and t.arena for t in program.tensors):
        plan_memory(program)
    return Instance(program, pool, arena)


class Instance:
    """A program bound to its own arena: runs inferences, one at a time."""

    def __init__(self, program: Program, pool: ThreadPool | PoolLease, arena: np.ndarray | None = None) -> None:
        self.program = program
        self.pool = pool
        if arena is None:
            arena = aligned_empty(max(program.arena_bytes, ALIGN), np.uint8)
        elif arena.nbytes < program.arena_bytes or arena.ctypes.data % ALIGN:
            raise EmberError(f"ember: internal: an arena of {arena.nbytes} bytes for a plan that needs "
                             f"{program.arena_bytes} (aligned to {ALIGN})")
        self.arena = arena
        arrays: dict[int, np.ndarray] = {}
        for t in program.tensors:
            if t.kind == "const":
                assert t.data is not None
                arrays[t.id] = t.data
            elif t.kind == "value" and t.arena and np.dtype(t.dtype) == object:  # strings: no bytes to plan
                arrays[t.id] = np.empty(t.shape, dtype=object)
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
        patchable, readers = self._patchable_inputs(program)
        self._finer_rows: list[tuple[int, BoundKernel]] = []  # steps whose tasks can be cut finer
        self._busy_table: np.ndarray | None = None
        self.bindings: list[InputBinding] = []
        kernels_of: dict[int, list[BoundKernel]] = {}  # op index -> its bound kernels
        for op_index, op in enumerate(program.ops):
            if op.type_name == "InputCopy" and op.outputs[0].id in patchable:
                continue  # the kernels read the caller's array (pointers patched per run)
            if op.native:
                assert op.bind is not None
                kernels = op.bind([arrays[t.id] for t in op.inputs], [arrays[t.id] for t in op.outputs])
                kernels_of[op_index] = kernels
                first = len(rows)
                for k in kernels:
                    rows.append([k.task, k.ctx.ctypes.data, k.n_tasks, k.num_threads])
                    keep.append(k)
                    if k.finer is not None and k.num_threads > 1:
                        self._finer_rows.append((len(rows) - 1, k))
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
            self.bindings.append(self._input_binding(program, tid, index, kernels_of, readers.get(tid, [])))
        self.table = np.array(rows if rows else [[0] * STEP_WORDS], np.int64).reshape(-1, STEP_WORDS)
        self._table = self.table  # the table of the current run
        self.segments = [tuple(s) if isinstance(s, list) else s for s in segments]
        self._runner = run_steps_function()
        self._input_ids = [t.id for t in program.inputs]
        #: threads of the widest native step: the workers woken as a run starts (pool.wake)
        self._wake_threads = max((int(r[3]) for r in rows if r[2] > 1), default=1)
        # reference kernels run with numpy's BLAS on this thread only (see runtime/blas.py)
        self._reference_ops = [op for op in program.ops if not op.native and not op.physical]
        self._blas_guard: Any = BlasGuard() if self._reference_ops else contextlib.nullcontext()
        self._reference_logged = False

    def _input_binding(self, program: Program, tid: int, index: int,
                       kernels_of: dict[int, list[BoundKernel]], readers: list[int]) -> InputBinding:
        """The binding slots of model input ``index`` (read in place through tensor ``tid``):
        the declared pointer words of the kernels of its readers (``readers``: the indices of
        the ops that read ``tid`` or a view of it, ascending) that point into its buffer."""
        t = program.tensors[tid]
        start = self.arrays[tid].ctypes.data
        end = start + max(t.nbytes, 1)
        slots: list[tuple[np.ndarray, int, int]] = []
        for op_index in readers:
            for k in kernels_of.get(op_index, ()):
                for word in k.pointer_words:
                    addr = int(k.ctx[word])
                    if start <= addr < end:
                        slots.append((k.ctx, word, addr - start))
        return InputBinding(index, t.dtype, t.shape, slots)

    @property
    def busy_table(self) -> np.ndarray:
        """The step table a parallel run uses on a machine the pool judges busy: the GEMM and
        convolution steps cut for :data:`BUSY_SPLIT` times their threads (the same array as
        :attr:`table` when no step has a finer split, or the split is off). Made at the first
        busy run (a quiet machine never pays for it); the finer contexts join the input
        bindings' slots."""
        if self._busy_table is None:
            split = busy_split()
            table = self.table
            fine_of: dict[int, np.ndarray] = {}
            for row, k in self._finer_rows if split > 1 else ():
                assert k.finer is not None
                fine = k.finer(k.num_threads * split)
                if fine is None:
                    continue
                if table is self.table:
                    table = self.table.copy()
                table[row, 1], table[row, 2] = fine[0].ctypes.data, fine[1]
                fine_of[id(k.ctx)] = fine[0]
            for binding in self.bindings:
                binding.slots += [(fine_of[id(ctx)], word, delta) for ctx, word, delta in binding.slots
                                  if id(ctx) in fine_of]
            self._keep_finer = list(fine_of.values())
            self._busy_table = table
        return self._busy_table

    @busy_table.setter
    def busy_table(self, table: np.ndarray) -> None:
        """Set to :attr:`table` to keep the plan's own tasks on a busy machine too (A/B runs)."""
        if table is not self.table:
            raise EmberError("ember: busy_table can only be set to the plan's own table")
        self._busy_table = table

    @staticmethod
    def _patchable_inputs(program: Program) -> tuple[dict[int, int], dict[int, list[int]]]:
        """{copy tensor id: input index} of model inputs that only native ops read (directly
        or through views): their kernels can read the caller's array in place; and per tensor
        (a root: not a view), the indices of the ops that read it or a view of it (each once,
        ascending)."""
        readers: dict[int, list[Op]] = {}
        indices: dict[int, list[int]] = {}
        for op_index, op in enumerate(program.ops):
            for t in op.inputs:
                rid = t.root().id
                readers.setdefault(rid, []).append(op)
                seen = indices.setdefault(rid, [])
                if not seen or seen[-1] != op_index:
                    seen.append(op_index)
        out = {}
        for op in program.ops:
            if op.type_name == "InputCopy":
                t = op.outputs[0]
                if t in program.outputs or any(v.root() is t for v in program.outputs):
                    continue
                if t.arena and readers.get(t.id) and all(r.native for r in readers[t.id]):
                    out[t.id] = op.inputs[0].index
        return out, indices

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

        return step

    # -- running --------------------------------------------------------------------------
    def _native(self, first: int, count: int) -> None:
        self._runner(self.pool.handle, self.pool.parallel_for_address, self._table.ctypes.data, first, count)

    def run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None = None) -> list[np.ndarray]:
        body_profile = _BODY_PROFILE.get()
        if body_profile is not None:  # a control-flow body run by a profiled If/Loop step
            token = _BODY_PROFILE.set(None)  # (its own If/Loop steps set their own)
            try:
                return self._run(inputs, body_profile if profile is None else profile)
            finally:
                _BODY_PROFILE.reset(token)
        try:
            return self._run(inputs, profile)
        finally:
            if self._wake_threads > 1:  # the gap to the next run sets the workers' spin budget
                self.pool.finished()

    def _run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None) -> list[np.ndarray]:
        if self._wake_threads > 1:
            self.pool.adapt()  # the load, the spin budget, on a busy machine this run's mode
            if not self.pool.serial_run:  # the workers wake up while the inputs are bound, not in the first job
                self.pool.wake(self._wake_threads)
            # finer tasks while other processes take cores (a serial run keeps the coarse ones)
            self._table = self.busy_table if self.pool.busy and not self.pool.serial_run else self.table
        slots: dict[int, np.ndarray] = dict(zip(self._input_ids, inputs))
        held = []
        for binding in self.bindings:
            a = np.asarray(inputs[binding.index], dtype=binding.dtype, order="C")  # keeps 0-d arrays 0-d
            if a.shape != binding.shape:
                raise InferenceError(f"ember: input {binding.index} has shape {list(a.shape)}, "
                                     f"expected {list(binding.shape)}")
            held.append(a)
            addr = a.ctypes.data
            for ctx, word, delta in binding.slots:
                ctx[word] = addr + delta
        if self._reference_ops and not self._reference_logged and log.isEnabledFor(logging.DEBUG):
            self._reference_logged = True
            timed: dict[str, float] = {}
            with self._blas_guard:
                self._run_profiled(slots, timed)
            self._log_reference_share(timed)
            if profile is not None:
                for k, v in timed.items():
                    profile[k] = profile.get(k, 0.0) + v
            return [self._fetch(t, slots) for t in self.program.outputs]
        with self._blas_guard:
            if profile is not None:
                self._run_profiled(slots, profile)
            else:
                for seg in self.segments:
                    if isinstance(seg, tuple):
                        self._native(seg[0], seg[1])
                    else:
                        seg(slots)
        return [self._fetch(t, slots) for t in self.program.outputs]

    def _log_reference_share(self, timed: dict[str, float]) -> None:
        """DEBUG lines: each op that ran on its reference kernel and its share of this (first) run."""
        total = sum(timed.values()) or 1e-12
        ref = 0.0
        for op in self._reference_ops:
            t = timed.get(op.name, 0.0)
            ref += t
            log.debug("CPU: reference kernel %s '%s': %.3f ms, %.1f%% of the run", op.type_name, op.name, t * 1e3,
                      100 * t / total)
        log.debug("CPU: %d op(s) on reference kernels took %.3f ms, %.1f%% of a %.3f ms run",
                  len(self._reference_ops), ref * 1e3, 100 * ref / total, total * 1e3)

    def _run_profiled(self, slots: dict[int, np.ndarray], profile: dict[str, float]) -> None:
        """Each op's time added to ``profile`` (by op name); the ops of the body plans an If or
        Loop step runs are added too, named ``<If/Loop name>/<body op name>`` (summed over a
        Loop's iterations), after the step's own entry, which keeps the step's own time only
        (choosing the branch, feeding it, the Loop's slicing and concatenation), so that the
        entries add up to the inference."""
        for op, span in self.op_spans:
            body = getattr(op.fn, "branches", None) is not None
            inner: dict[str, float] = {}
            token = _BODY_PROFILE.set(inner) if body else None
            t0 = time.perf_counter()
            try:
                if isinstance(span, tuple):
                    self._native(*span)
                else:
                    span(slots)
            finally:
                if token is not None:
                    _BODY_PROFILE.reset(token)
            profile[op.name] = profile.get(op.name, 0.0) + max(time.perf_counter() - t0 - sum(inner.values()), 0.0)
            for name, secs in inner.items():
                key = f"{op.name}/{name}"
                profile[key] = profile.get(key, 0.0) + secs

    def _fetch(self, t: Tensor, slots: dict[int, np.ndarray]) -> np.ndarray:
        arr = self.arrays.get(t.id)
        if arr is None:
            return np.array(slots[t.id], copy=True)
        if t.layout == NHWC:
            return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
        return np.array(arr, copy=True)
