"""Small helpers for emitting LLVM IR with llvmlite: types, constants, loops, intrinsics.

Mutable values (accumulators, counters) are kept in ``alloca`` slots made by
:meth:`Emitter.var`; LLVM's SROA pass turns them into registers, so loops stay simple.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from llvmlite import ir

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
PTR = ir.PointerType()
VOID = ir.VoidType()


class _BFloat(ir.Type):
    """LLVM's ``bfloat`` (llvmlite has no type for it; IR is text, so its name is enough)."""

    def _to_string(self) -> str:
        return "bfloat"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _BFloat)

    def __hash__(self) -> int:
        return hash("bfloat")


BF16 = _BFloat()


def c64(x: int) -> ir.Constant:
    return ir.Constant(I64, x)


def c32(x: int) -> ir.Constant:
    return ir.Constant(I32, x)


def vec(t: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(t, n)


class Emitter:
    """An ``ir.IRBuilder`` positioned in one function, with the helpers kernels need."""

    def __init__(self, module: ir.Module, fn: ir.Function):
        self.module = module
        self.fn = fn
        self.entry = fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)

    # ---- functions and intrinsics
    @staticmethod
    def function(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type],
                 internal: bool = False, noinline: bool = False) -> ir.Function:
        fn = ir.Function(module, ir.FunctionType(ret, list(args)), name)
        if internal:
            fn.linkage = "internal"
        if noinline:
            fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        return fn

    def declare(self, name: str, ret: ir.Type, args: Sequence[ir.Type], var_arg: bool = False) -> ir.Function:
        try:
            return self.module.get_global(name)
        except KeyError:
            return ir.Function(self.module, ir.FunctionType(ret, list(args), var_arg=var_arg), name)

    def call(self, name: str, ret: ir.Type, args: Sequence[ir.Value]) -> ir.Value:
        return self.b.call(self.declare(name, ret, [a.type for a in args]), list(args))

    # ---- variables and memory
    def var(self, typ: ir.Type, init: ir.Value | None = None, count: int | None = None) -> ir.Value:
        """An alloca in the entry block (a 'variable'), optionally initialised here."""
        with self.b.goto_block(self.entry):
            if self.entry.instructions:
                self.b.position_before(self.entry.instructions[0])
            slot = self.b.alloca(typ, size=None if count is None else c64(count))
        if init is not None:
            self.b.store(init, slot)
        return slot

    def load(self, typ: ir.Type, ptr: ir.Value, align: int | None = None) -> ir.Value:
        return self.b.load(ptr, typ=typ, align=align)

    def store_atomic(self, value: ir.Value, ptr: ir.Value, ordering: str = "seq_cst") -> None:
        """An atomic store through an opaque pointer (llvmlite's own needs a typed one)."""
        align = value.type.width // 8
        self.b._insert(ir.instructions.StoreAtomicInstr(self.b.block, value, ptr, ordering, align))

    def gep(self, typ: ir.Type, ptr: ir.Value, idx: ir.Value | int) -> ir.Value:
        if isinstance(idx, int):
            idx = c64(idx)
        return self.b.gep(ptr, [idx], inbounds=True, source_etype=typ)

    def field(self, ctx: ir.Value, i: int, typ: ir.Type = I64) -> ir.Value:
        """Word ``i`` of an i64 array (a kernel context), read as ``typ``."""
        v = self.load(I64, self.gep(I64, ctx, i), align=8)
        if typ == I64:
            return v
        if isinstance(typ, ir.PointerType):
            return self.b.inttoptr(v, typ)
        if typ == F32:
            return self.b.bitcast(self.b.trunc(v, I32), F32)
        return self.b.trunc(v, typ)

    # ---- arithmetic
    def min(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed("<", x, y), x, y)

    def max(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed(">", x, y), x, y)

    def cdiv(self, x: ir.Value, d: int | ir.Value) -> ir.Value:
        d = c64(d) if isinstance(d, int) else d
        return self.b.sdiv(self.b.add(x, self.b.sub(d, c64(1))), d)

    def splat(self, x: ir.Value, n: int) -> ir.Value:
        vt = vec(x.type, n)
        u = self.b.insert_element(ir.Constant(vt, ir.Undefined), x, c32(0))
        return self.b.shuffle_vector(u, ir.Constant(vt, ir.Undefined), ir.Constant(vec(I32, n), [0] * n))

    # ---- control flow
    @contextmanager
    def loop(self, start: ir.Value | int, stop: ir.Value | int, step: ir.Value | int = 1,
             name: str = "i") -> Iterator[ir.Value]:
        """``for i in range(start, stop, step)`` (step > 0); yields the index."""
        b = self.b
        start = c64(start) if isinstance(start, int) else start
        stop = c64(stop) if isinstance(stop, int) else stop
        step = c64(step) if isinstance(step, int) else step
        pre = b.block
        hdr = self.fn.append_basic_block(name + ".hdr")
        body = self.fn.append_basic_block(name + ".body")
        done = self.fn.append_basic_block(name + ".done")
        b.branch(hdr)
        b.position_at_end(hdr)
        idx = b.phi(I64, name)
        idx.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", idx, stop), body, done)
        b.position_at_end(body)
        yield idx
        nxt = b.add(idx, step)
        idx.add_incoming(nxt, b.block)
        b.branch(hdr)
        b.position_at_end(done)

    @contextmanager
    def if_(self, cond: ir.Value) -> Iterator[None]:
        with self.b.if_then(cond):
            yield

    def if_else(self, cond: ir.Value):
        return self.b.if_else(cond)
