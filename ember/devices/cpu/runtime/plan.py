"""A lowered model: its tensors and its steps, before any memory is bound.

Lowering (``ember.devices.cpu.lowering``) builds a :class:`Program`: :class:`Tensor`
descriptions (constants, model inputs, computed values and views of them) and :class:`Op`
steps in execution order. An op is *native* (it binds buffer addresses into kernel calls
once) or *python* (a numpy function called per inference: the ops' reference kernels, and
small glue). ``runtime.memory`` plans the arena (every computed value that a native op
touches lives in one arena; values whose lifetimes do not overlap share bytes) and
``runtime.instance`` binds a program to memory and a thread pool. Instances of one program
share it (packed weights).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.errors import EmberError

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
        # None only for a python-side value of dynamic shape (native ops refuse those, Program.add)
        self.shape: tuple[int, ...] = tuple(int(d) for d in shape) if shape is not None else None  # type: ignore[assignment]
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

    def copy(self) -> Tensor:
        """A tensor with every field of this one (a plan made at another shape from a template;
        written out: this runs for every tensor of every new shape)."""
        u = Tensor.__new__(Tensor)
        u.id, u.shape, u.dtype, u.layout, u.kind, u.data = self.id, self.shape, self.dtype, self.layout, self.kind, self.data
        u.index, u.producer, u.arena, u.base, u.make_view = self.index, self.producer, self.arena, self.base, self.make_view
        u.contiguous, u.external, u.first, u.last = self.contiguous, self.external, self.first, self.last
        u.offset, u.name = self.offset, self.name
        return u

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

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
    #: the index of an input whose memory output 0 may take over where this op is that input's
    #: last reader (:func:`~ember.devices.cpu.runtime.memory.plan_memory`): a residual its kernel
    #: reads element by element right before it writes the same element, so the output is
    #: written into lines already in the cache instead of fetching another buffer's
    inplace: int | None = None


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
    def tensor(self, shape: Sequence[int] | None, dtype: Any, layout: str = PLAIN, kind: str = "value",
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
