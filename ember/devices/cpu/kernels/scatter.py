"""Scatter kernels: ScatterElementsUpdate, ScatterNDUpdate and ScatterUpdate with every reduction.

Every scatter is written as *columns*: the updates (and, for ScatterElementsUpdate, the indices)
are viewed as ``[outer, K, inner]``; column ``(o, c)`` holds the ``K`` updates ``upd[o, :, c]``.
Two updates of different columns never hit the same output element (ScatterElementsUpdate keeps
every coordinate but the axis; the row scatters move whole rows, one column per element of a
row), so tasks own blocks of columns and run their ``K`` updates in order: duplicate indices
give the reference's result (the last write wins for ``none``; reductions fold in index order)
with no atomics.

- ``row`` mode (ScatterUpdate, ScatterNDUpdate): update row ``(o, j)`` goes to the output row at
  ``tab_outer[o] + sum_m norm(idx[o * is_o + j * is_j + m]) * astr[m]``; the columns of a task
  are a run of that row, moved with vector loads and stores.
- ``elem`` mode (ScatterElementsUpdate): element ``e = (o * K + j) * inner + c`` goes to
  ``tab_outer[o] + norm(idx[e]) * astr[0] + tab_inner[c]`` (tables: the data offset of each
  outer and inner index coordinate, so indices smaller than data need no copy). Without
  ``use_init_val`` a first pass puts the reduction's identity at every target; ``mean`` keeps
  a count per target in a scratch buffer that a last pass, dividing, leaves zeroed again.

Indices count from the end when negative; an index still out of range skips its update (the
reference kernel raises). ``init_task`` writes the data (or one fill value) into the output
first, as its own kernel call.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I8, I16, I32, I64, PTR, VOID, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import lane_mask
from ember.devices.cpu.runtime.kernel_call import BoundKernel

#: data types the kernels scatter (numpy dtype name -> IR type)
DTYPES = {"float32": F32, "int32": I32, "int64": I64, "bool": I8, "int8": I8, "uint8": I8, "float16": I16,
          "int16": I16, "uint16": I16, "uint32": I32, "float64": I64, "uint64": I64}
#: the types whose values the reductions compute with (the others are moved, reduction "none")
ARITHMETIC = ("float32", "int32", "int64")
REDUCTIONS = ("none", "sum", "sub", "prod", "min", "max", "mean")
MAX_INDEX_DIMS = 8
#: column tasks per thread, and the fewest bytes of a row one task takes
TASKS_PER_THREAD = 4
TASK_BYTES = 256

SCATTER_CONTEXT = ContextLayout(
    "scatter",
    ("out", "upd", "idx", "tab_outer", "tab_inner", "tab_io", "tab_ic", "count", "dims", "astr",
     "outer", "K", "inner", "k", "is_o", "is_j", "cpt", "columns", "row_index"),
    pointers=("out", "upd", "idx", "tab_outer", "tab_inner", "tab_io", "tab_ic", "count", "dims", "astr"))

INIT_CONTEXT = ContextLayout("scatter_init", ("src", "dst", "n", "nbytes", "fill", "value", "upt"),
                             pointers=("src", "dst"))


def _ir_type_name(t: ir.Type) -> str:
    return "f32" if t == F32 else f"i{t.width}"


def _reduce(e: ContextEmitter, t: ir.Type, red: str, acc: ir.Value, x: ir.Value) -> ir.Value:
    """``acc (op) x`` for reduction ``red`` (scalars or vectors of ``t``)."""
    b = e.b
    fl = t == F32
    if red == "none":
        return x
    if red in ("sum", "mean"):
        return b.fadd(acc, x) if fl else b.add(acc, x)
    if red == "sub":
        return b.fsub(acc, x) if fl else b.sub(acc, x)
    if red == "prod":
        return b.fmul(acc, x) if fl else b.mul(acc, x)
    if fl:  # NaN in either operand gives NaN, as numpy's minimum/maximum
        nan = b.fcmp_unordered("uno", acc, x)
        pick = b.fcmp_ordered("<" if red == "min" else ">", x, acc)
        return b.select(nan, b.fadd(acc, x), b.select(pick, x, acc))
    return b.select(b.icmp_signed("<" if red == "min" else ">", x, acc), x, acc)


def identity(red: str, dtype: np.dtype) -> int | float:
    """The value a target starts from when ``use_init_val`` is false."""
    if red in ("sum", "sub", "mean", "none"):
        return 0
    if red == "prod":
        return 1
    if dtype.kind == "f":
        return float(np.inf) if red == "min" else float(-np.inf)
    info = np.iinfo(dtype)
    return int(info.max) if red == "min" else int(info.min)


def _const(t: ir.Type, v: int | float) -> ir.Constant:
    return ir.Constant(t, float(v) if t == F32 else int(v))


def _emit_scatter(m: ir.Module, prefix: str, lanes32: int, mode: str, dtype: str, red: str, idx64: bool,
                  use_init: bool) -> None:
    fn = ContextEmitter.function(m, f"{prefix}_scatter_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, SCATTER_CONTEXT)
    b = e.b
    task = fn.args[1]
    t = DTYPES[dtype]
    lanes = lanes32 * 4 // (t.width // 8 if t != F32 else 4)
    vt = vec(t, lanes)
    tn = _ir_type_name(t)
    out, upd, idx = e.arg("out", PTR), e.arg("upd", PTR), e.arg("idx", PTR)
    tab_outer, tab_inner = e.arg("tab_outer", PTR), e.arg("tab_inner", PTR)
    dims, astr = e.arg("dims", PTR), e.arg("astr", PTR)
    K, inner, k = e.arg("K"), e.arg("inner"), e.arg("k")
    col0 = b.mul(task, e.arg("cpt"))
    col1 = e.min(e.arg("columns"), b.add(col0, e.arg("cpt")))
    zero = c64(0)

    def load_index(pos: ir.Value) -> ir.Value:
        if idx64:
            return e.load(I64, e.gep(I64, idx, pos), align=8)
        return b.sext(e.load(I32, e.gep(I32, idx, pos), align=4), I64)

    def norm(v: ir.Value, n: ir.Value) -> tuple[ir.Value, ir.Value]:
        v = b.select(b.icmp_signed("<", v, zero), b.add(v, n), v)
        return v, b.icmp_unsigned("<", v, n)

    def columns(body) -> None:  # noqa: ANN001 - body(o, c_start, c_end) for the task's columns
        o_first = b.sdiv(col0, inner)
        o_last = b.sdiv(b.sub(col1, c64(1)), inner)
        with e.loop(o_first, b.add(o_last, c64(1)), name="o") as o:
            base = b.mul(o, inner)
            cs = e.max(b.sub(col0, base), zero)
            ce = e.min(b.sub(col1, base), inner)
            body(o, cs, ce)

    def vector_run(dst: ir.Value, src: ir.Value, cs: ir.Value, ce: ir.Value) -> None:
        """dst[c] = dst[c] (op) src[c] for c in [cs, ce), in vectors."""
        n = b.sub(ce, cs)
        nmain = b.add(cs, b.mul(b.sdiv(n, c64(lanes)), c64(lanes)))
        align = t.width // 8 if t != F32 else 4

        def move(c: ir.Value, mask: ir.Value | None) -> None:
            pd, ps = e.gep(t, dst, c), e.gep(t, src, c)
            if mask is None:
                x = e.load(vt, ps, align=align)
                acc = e.load(vt, pd, align=align) if red != "none" else None
                b.store(_reduce(e, t, red, acc, x), pd, align=align)
            else:
                undef = ir.Constant(vt, None)
                x = e.call(f"llvm.masked.load.v{lanes}{tn}.p0", vt, [ps, c32(align), mask, undef])
                acc = e.call(f"llvm.masked.load.v{lanes}{tn}.p0", vt, [pd, c32(align), mask, undef]) \
                    if red != "none" else None
                e.call(f"llvm.masked.store.v{lanes}{tn}.p0", VOID, [_reduce(e, t, red, acc, x), pd, c32(align), mask])

        with e.loop(cs, nmain, lanes, name="c") as c:
            move(c, None)
        with b.if_then(b.icmp_signed("<", nmain, ce)):
            move(nmain, lane_mask(e, b.sub(ce, nmain), lanes))

    if mode == "row":
        def row_body(o: ir.Value, cs: ir.Value, ce: ir.Value) -> None:
            toff = e.load(I64, e.gep(I64, tab_outer, o), align=8)
            ibase = b.mul(o, e.arg("is_o"))
            with e.loop(zero, K, name="j") as j:
                ia = b.add(ibase, b.mul(j, e.arg("is_j")))
                off = e.var(I64, toff)
                ok = e.var(ir.IntType(1), ir.Constant(ir.IntType(1), 1))
                with e.loop(zero, k, name="m") as mm:
                    v, good = norm(load_index(b.add(ia, mm)), e.load(I64, e.gep(I64, dims, mm), align=8))
                    b.store(b.add(e.load(I64, off), b.mul(v, e.load(I64, e.gep(I64, astr, mm), align=8))), off)
                    b.store(b.and_(e.load(ir.IntType(1), ok), good), ok)
                with b.if_then(e.load(ir.IntType(1), ok)):
                    vector_run(e.gep(t, out, e.load(I64, off)), e.gep(t, upd, b.mul(b.add(b.mul(o, K), j), inner)),
                               cs, ce)

        columns(row_body)
        b.ret_void()
        return

    # elem mode
    count = e.arg("count", PTR)
    n0 = e.load(I64, dims, align=8)
    a0 = e.load(I64, astr, align=8)
    tab_io, tab_ic = e.arg("tab_io", PTR), e.arg("tab_ic", PTR)

    def each(body) -> None:  # noqa: ANN001 - body(target, element) for every valid update of the task
        def col_body(o: ir.Value, cs: ir.Value, ce: ir.Value) -> None:
            toff = e.load(I64, e.gep(I64, tab_outer, o), align=8)
            ioff = e.load(I64, e.gep(I64, tab_io, o), align=8)
            with e.loop(zero, K, name="j") as j:
                row = b.mul(b.add(b.mul(o, K), j), inner)
                irow = b.add(ioff, b.mul(j, e.arg("is_j")))
                with e.loop(cs, ce, name="c") as c:
                    el = b.add(row, c)
                    v, good = norm(load_index(b.add(irow, e.load(I64, e.gep(I64, tab_ic, c), align=8))), n0)
                    with b.if_then(good):
                        tgt = b.add(b.add(toff, b.mul(v, a0)), e.load(I64, e.gep(I64, tab_inner, c), align=8))
                        body(tgt, el)
        columns(col_body)

    if not use_init or red == "mean":
        def prepare(tgt: ir.Value, el: ir.Value) -> None:
            if not use_init:
                b.store(_const(t, identity(red, np.dtype(dtype))), e.gep(t, out, tgt))
            if red == "mean":
                b.store(c32(1 if use_init else 0), e.gep(I32, count, tgt))
        each(prepare)

    def apply(tgt: ir.Value, el: ir.Value) -> None:
        p = e.gep(t, out, tgt)
        x = e.load(t, e.gep(t, upd, el))
        b.store(_reduce(e, t, red, e.load(t, p) if red != "none" else None, x), p)
        if red == "mean":
            pc = e.gep(I32, count, tgt)
            b.store(b.add(e.load(I32, pc), c32(1)), pc)

    if red == "mean":
        each(apply)
    else:
        # one index per row of the task's columns (a broadcast index) with a contiguous target run:
        # each update row is a vector reduction of a run, as in row mode
        with b.if_else(b.icmp_signed("!=", e.arg("row_index"), zero)) as (rows_, elems):
            with rows_:
                def row_body(o: ir.Value, cs: ir.Value, ce: ir.Value) -> None:
                    toff = b.add(e.load(I64, e.gep(I64, tab_outer, o), align=8), e.load(I64, tab_inner, align=8))
                    ioff = e.load(I64, e.gep(I64, tab_io, o), align=8)
                    with e.loop(zero, K, name="j") as j:
                        v, good = norm(load_index(b.add(ioff, b.mul(j, e.arg("is_j")))), n0)
                        with b.if_then(good):
                            vector_run(e.gep(t, out, b.add(toff, b.mul(v, a0))),
                                       e.gep(t, upd, b.mul(b.add(b.mul(o, K), j), inner)), cs, ce)
                columns(row_body)
            with elems:
                each(apply)

    if red == "mean":
        def divide(tgt: ir.Value, el: ir.Value) -> None:
            pc = e.gep(I32, count, tgt)
            cnt = e.load(I32, pc)
            with b.if_then(b.icmp_signed(">", cnt, c32(0))):
                p = e.gep(t, out, tgt)
                if t == F32:
                    q = b.fdiv(e.load(t, p), b.sitofp(cnt, F32))
                else:
                    q = b.sdiv(e.load(t, p), b.sext(cnt, t) if t.width > 32 else cnt)
                b.store(q, p)
                b.store(c32(0), pc)
        each(divide)
    b.ret_void()


def _emit_init(m: ir.Module, prefix: str, lanes: int) -> None:
    """init_task(ctx, task): dst[i] = fill ? value : src[i] for a block of 4-byte units."""
    fn = ContextEmitter.function(m, f"{prefix}_init_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, INIT_CONTEXT)
    b = e.b
    task = fn.args[1]
    vt = vec(I32, lanes)
    src, dst = e.arg("src", PTR), e.arg("dst", PTR)
    n, upt = e.arg("n"), e.arg("upt")
    u0 = b.mul(task, upt)
    u1 = e.min(n, b.add(u0, upt))
    fill = b.icmp_signed("!=", e.arg("fill"), c64(0))
    # the fill pattern repeats every 2 units (8-byte values): lane i takes word i % 2
    w = e.arg("value")
    lo, hi = b.trunc(w, I32), b.trunc(b.lshr(w, c64(32)), I32)
    pattern = ir.Constant(vt, None)
    for i in range(lanes):
        pattern = b.insert_element(pattern, lo if i % 2 == 0 else hi, c32(i))
    nmain = b.add(u0, b.mul(b.sdiv(b.sub(u1, u0), c64(lanes)), c64(lanes)))
    with b.if_else(fill) as (yes, no):
        with yes:
            with e.loop(u0, nmain, lanes, name="f") as i:
                b.store(pattern, e.gep(I32, dst, i), align=4)
            with e.loop(nmain, u1, name="ft") as i:
                b.store(b.select(b.icmp_signed("==", b.and_(i, c64(1)), c64(0)), lo, hi), e.gep(I32, dst, i), align=4)
        with no:
            with e.loop(u0, nmain, lanes, name="v") as i:
                b.store(e.load(vt, e.gep(I32, src, i), align=4), e.gep(I32, dst, i), align=4)
            with e.loop(nmain, u1, name="t") as i:
                b.store(e.load(I32, e.gep(I32, src, i), align=4), e.gep(I32, dst, i), align=4)
    # the last task writes the bytes after the last whole 4-byte unit (1- and 2-byte items)
    with b.if_then(b.icmp_signed("==", u1, n)):
        with e.loop(b.mul(n, c64(4)), e.arg("nbytes"), name="bt") as i:
            byte = b.select(fill, b.trunc(b.lshr(w, b.mul(b.and_(i, c64(7)), c64(8))), I8),
                            e.load(I8, e.gep(I8, src, b.select(fill, c64(0), i))))
            b.store(byte, e.gep(I8, dst, i))
    b.ret_void()


@functools.cache
def _library(isa: Isa, mode: str, dtype: str, red: str, idx64: bool, use_init: bool) -> jit.Library:
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit_scatter(m, prefix, isa.f32_lanes, mode, dtype, red, idx64, use_init)
        _emit_init(m, prefix, isa.f32_lanes)
        return m
    sig = f"scatter|{isa.level}|{mode}|{dtype}|{red}|i{64 if idx64 else 32}|{'init' if use_init else 'noinit'}"
    return jit.load(sig, isa, build)


def supported(dtype: np.dtype, idx_dtype: np.dtype, reduction: str = "none") -> bool:
    """Whether the kernels take data of ``dtype`` with indices of ``idx_dtype`` and ``reduction``."""
    return dtype.name in DTYPES and idx_dtype.name in ("int32", "int64") and (
        reduction == "none" or dtype.name in ARITHMETIC)


def init_output(data: np.ndarray | None, out: np.ndarray, fill_bits: int, threads: int,
                isa: Isa | None = None, library: jit.Library | None = None) -> BoundKernel:
    """A bound kernel writing contiguous ``data`` into ``out`` (or, with ``data`` None, the 8-byte
    pattern ``fill_bits`` repeated: one value of a 4-byte type in both words, or an 8-byte one)."""
    isa = isa or host_isa()
    lib = library or _library(isa, "row", "float32", "none", False, True)
    units = out.nbytes // 4
    upt = max(1 << 14, -(-units // (4 * threads)))
    upt = -(-upt // 16) * 16
    ctx = INIT_CONTEXT.new(src=out.ctypes.data if data is None else data.ctypes.data, dst=out.ctypes.data, n=units,
                           nbytes=out.nbytes, fill=int(data is None), value=int(np.uint64(fill_bits).view(np.int64)), upt=upt)
    keep = (out,) if data is None else (data, out)
    return BoundKernel(lib.address("init_task"), ctx, max(-(-units // upt), 1) if out.nbytes else 0, threads, keep,
                       layout=INIT_CONTEXT)


def fill_bits(value: int | float, dtype: np.dtype) -> int:
    """The 8-byte pattern :func:`init_output` repeats to fill an array of ``dtype`` with ``value``."""
    raw = np.array(value, dtype).tobytes()
    raw = raw * (8 // len(raw))
    return int(np.frombuffer(raw, np.uint64)[0])


def scatter(out: np.ndarray, upd: np.ndarray, idx: np.ndarray, *, mode: str, reduction: str, use_init: bool,
            outer: int, K: int, inner: int, tab_outer: np.ndarray, tab_inner: np.ndarray | None,
            dims: np.ndarray, astr: np.ndarray, is_o: int = 0, is_j: int = 1, tab_io: np.ndarray | None = None,
            tab_ic: np.ndarray | None = None, threads: int = 1, isa: Isa | None = None) -> BoundKernel:
    """A bound scatter into ``out`` (already holding the data; contiguous) of ``upd`` (contiguous,
    ``[outer, K, inner]``) at ``idx`` (int32/int64). See the module docstring for the two modes;
    the tables are int64 element offsets: ``tab_outer``/``tab_inner`` into the data,
    ``tab_io``/``tab_ic`` (elem mode) into ``idx`` with ``is_j`` between index rows (a
    broadcast index has zeros there)."""
    if reduction not in REDUCTIONS or out.dtype.name not in DTYPES:
        raise ValueError(f"ember: internal: scatter of {out.dtype} with reduction {reduction}")
    isa = isa or host_isa()
    lib = _library(isa, mode, out.dtype.name, reduction, idx.dtype.itemsize == 8, use_init)
    columns = outer * inner

    def arr(x: np.ndarray | None) -> np.ndarray:
        return np.ascontiguousarray(x if x is not None and x.size else np.zeros(1), np.int64)

    tab_outer, tab_inner, tab_io, tab_ic = arr(tab_outer), arr(tab_inner), arr(tab_io), arr(tab_ic)
    row_index = mode == "elem" and not tab_ic.any() and np.array_equal(
        tab_inner[:inner], tab_inner[0] + np.arange(inner, dtype=np.int64))
    # a task is a run of columns: at least TASK_BYTES of each row (a task re-reads every index and
    # walks every update row, so narrow runs cost more than they parallelize), whole rows when
    # rows are shorter
    chunk = max(1, TASK_BYTES // out.dtype.itemsize)
    per = -(-columns // (TASKS_PER_THREAD * max(threads, 1))) if columns else 1
    cpt = max(chunk, -(-per // chunk) * chunk) if inner >= chunk else max(per, inner, 1)
    count = np.zeros(out.size if reduction == "mean" else 1, np.int32)
    dims = np.ascontiguousarray(dims, np.int64)
    astr = np.ascontiguousarray(astr, np.int64)
    ctx = SCATTER_CONTEXT.new(
        out=out.ctypes.data, upd=upd.ctypes.data, idx=idx.ctypes.data, tab_outer=tab_outer.ctypes.data,
        tab_inner=tab_inner.ctypes.data, tab_io=tab_io.ctypes.data, tab_ic=tab_ic.ctypes.data,
        count=count.ctypes.data, dims=dims.ctypes.data, astr=astr.ctypes.data, outer=outer, K=K, inner=inner,
        k=dims.size, is_o=is_o, is_j=is_j, cpt=cpt, columns=columns, row_index=int(row_index))
    n_tasks = -(-columns // cpt) if columns and K and upd.size else 0
    return BoundKernel(lib.address("scatter_task"), ctx, n_tasks, threads,
                       (out, upd, idx, tab_outer, tab_inner, tab_io, tab_ic, count, dims, astr),
                       layout=SCATTER_CONTEXT)


def init_library(isa: Isa | None = None) -> jit.Library:
    """The library whose ``init_task`` :func:`init_output` calls."""
    return _library(isa or host_isa(), "row", "float32", "none", False, True)
