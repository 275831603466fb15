"""The native plan runner: one foreign call runs a whole sequence of kernel calls.

A lowered plan keeps its native steps as rows of an int64 table ``[task, ctx, n_tasks,
threads]``; ``run_steps(pool, parallel_for, table, first, count)`` calls
``parallel_for(pool, task, ctx, n_tasks, threads)`` for each row in order. Python makes one
ctypes call (the GIL released) per run of consecutive native steps instead of one per step.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import I64, PTR, VOID, Emitter, c64
from ember.devices.cpu.llvm.isa import host_isa

STEP_WORDS = 4


def _build(prefix: str, triple: str) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = triple
    task_t = ir.FunctionType(VOID, [PTR, I64])
    pfor_t = ir.PointerType(ir.FunctionType(VOID, [PTR, ir.PointerType(task_t), PTR, I64, I64]))
    fn = Emitter.function(m, f"{prefix}_run_steps", VOID, [PTR, I64, PTR, I64, I64])
    pool, pfor_addr, table, first, count = fn.args
    e = Emitter(m, fn)
    b = e.b
    pfor = b.inttoptr(pfor_addr, pfor_t)
    with e.loop(first, b.add(first, count), name="s") as s:
        row = b.mul(s, c64(STEP_WORDS))
        task = e.load(I64, e.gep(I64, table, row))
        ctx = e.load(I64, e.gep(I64, table, b.add(row, c64(1))))
        n = e.load(I64, e.gep(I64, table, b.add(row, c64(2))))
        threads = e.load(I64, e.gep(I64, table, b.add(row, c64(3))))
        with b.if_then(b.icmp_signed(">", n, c64(0))):
            b.call(pfor, [pool, b.inttoptr(task, ir.PointerType(task_t)), b.inttoptr(ctx, PTR), n, threads])
    b.ret_void()
    return m


@functools.cache
def run_steps_function() -> Callable[..., None]:
    """``run_steps(pool, parallel_for, table, first, count)`` as a ctypes function (releases the GIL)."""
    isa = host_isa("generic")
    lib = jit.load("runner", isa, lambda p: _build(p, isa.triple))
    return lib.cfunc("run_steps", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                     ctypes.c_int64)
