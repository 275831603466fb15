"""Kernel contexts: the i64 words a kernel reads its arguments from, described by one typed
layout per kernel.

A native kernel is called as ``task(ctx, task_index)``; ``ctx`` points at an array of 64-bit
words filled once at bind time (buffer addresses, sizes, strides, flags, f32 bit patterns).
A :class:`ContextLayout` names those words: kernels read them in IR through
:class:`ContextEmitter`, the host fills them with :meth:`ContextLayout.new`, and the words
that hold buffer addresses are declared (``pointers``) so a plan can re-point them (model
inputs read in place) without guessing which words are addresses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm.codegen import I64, Emitter


class ContextLayout:
    """The named words of one kernel's context; ``pointers`` are the fields holding addresses."""

    def __init__(self, kernel: str, fields: Sequence[str], pointers: Sequence[str] = (),
                 nested: Mapping[str, ContextLayout] | None = None) -> None:
        self.kernel = kernel
        self.fields = tuple(fields)
        self.index = {name: i for i, name in enumerate(self.fields)}
        if len(self.index) != len(self.fields):
            raise ValueError(f"ember: internal: {kernel} context has a field twice")
        missing = [p for p in pointers if p not in self.index]
        if missing:
            raise ValueError(f"ember: internal: {kernel} context has no fields {missing}")
        #: indices of the words that hold buffer addresses
        self.pointer_words = tuple(sorted(self.index[p] for p in pointers))
        #: words holding the address of another kernel's context (one of the bound kernel's kept
        #: arrays), with that context's layout: a plan's checks compare them word by word too
        self.nested_words = {self.index[k]: v for k, v in (nested or {}).items()}

    @property
    def words(self) -> int:
        return len(self.fields)

    def __getitem__(self, name: str) -> int:
        return self.index[name]

    def new(self, **values: int) -> np.ndarray:
        """A zeroed context with ``values`` filled in by field name."""
        ctx = np.zeros(self.words, np.int64)
        self.fill(ctx, **values)
        return ctx

    def fill(self, ctx: np.ndarray, **values: int) -> None:
        for name, v in values.items():
            ctx[self.index[name]] = v


def f32_bits(v: float) -> int:
    """The bit pattern of ``v`` as an f32, for a context word read with type ``F32``."""
    return int(np.array([v], np.float32).view(np.uint32)[0])


class ContextEmitter(Emitter):
    """An emitter for a kernel whose first argument is a context of ``layout``; each field is
    loaded once, in the entry block."""

    def __init__(self, module: ir.Module, fn: ir.Function, layout: ContextLayout) -> None:
        super().__init__(module, fn)
        self.ctx = fn.args[0]
        self.layout = layout
        self._loaded: dict[tuple[str, str], ir.Value] = {}

    def arg(self, name: str, typ: ir.Type = I64) -> ir.Value:
        """Context field ``name`` read as ``typ`` (i64, an integer type, ``F32`` or ``PTR``)."""
        v = self._loaded.get((name, str(typ)))
        if v is None:
            with self.b.goto_block(self.entry):
                v = self.field(self.ctx, self.layout[name], typ)
            self._loaded[(name, str(typ))] = v
        return v
