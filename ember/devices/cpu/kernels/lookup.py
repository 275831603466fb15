"""LabelEncoder of numbers (ai.onnx.ml; scikit-learn's IsolationForest and label pipelines): each
element looked up in the sorted keys by binary search (integer keys compared as i64, float keys
and float inputs as f64), its value copied (1-, 2-, 4- or 8-byte items), the default where no
key matches; a NaN element takes the NaN key's value when there is one. A task is a block of
elements.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I64, PTR, VOID, c64
from ember.devices.cpu.llvm.context import ContextEmitter, ContextLayout
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.runtime.kernel_call import BoundKernel

F64 = ir.DoubleType()
LOOKUP_CONTEXT = ContextLayout(
    "lookup", ("x", "y", "keys", "values", "default", "nan_value", "has_nan", "n", "ept", "size"),
    pointers=("x", "y", "keys", "values", "default", "nan_value"))
#: input dtypes the kernel reads, and how (f: to f64; i: to i64)
INPUTS = {"float32": "f", "float64": "f", "int64": "i", "int32": "i", "int16": "i", "int8": "i", "uint8": "i",
          "uint16": "i", "uint32": "i"}


def _emit(m: ir.Module, prefix: str, xname: str, vsize: int) -> None:
    fn = ContextEmitter.function(m, f"{prefix}_lookup_task", VOID, [PTR, I64])
    e = ContextEmitter(m, fn, LOOKUP_CONTEXT)
    b = e.b
    task = fn.args[1]
    xdt = np.dtype(xname)
    floating = INPUTS[xname] == "f"
    xt = {4: F32, 8: F64}[xdt.itemsize] if floating else ir.IntType(8 * xdt.itemsize)
    kt = F64 if floating else I64
    vt = ir.IntType(8 * vsize)
    x, y, keys = e.arg("x", PTR), e.arg("y", PTR), e.arg("keys", PTR)
    values, n = e.arg("values", PTR), e.arg("n")
    default = e.load(vt, e.arg("default", PTR))
    nan_value = e.load(vt, e.arg("nan_value", PTR))
    has_nan = b.icmp_signed("!=", e.arg("has_nan"), c64(0))
    i0 = b.mul(task, e.arg("ept"))
    i1 = e.min(e.arg("size"), b.add(i0, e.arg("ept")))
    lo, hi = e.var(I64), e.var(I64)
    with e.loop(i0, i1, name="i") as i:
        v = e.load(xt, e.gep(xt, x, i))
        if floating:
            key = b.fpext(v, F64) if xt == F32 else v
        else:
            key = b.zext(v, I64) if xdt.kind == "u" and xt.width < 64 else (b.sext(v, I64) if xt.width < 64 else v)
        b.store(c64(0), lo)
        b.store(n, hi)
        hdr, body, done = (fn.append_basic_block(f"bs.{s}") for s in ("hdr", "body", "done"))
        b.branch(hdr)
        b.position_at_end(hdr)
        b.cbranch(b.icmp_signed("<", e.load(I64, lo), e.load(I64, hi)), body, done)
        b.position_at_end(body)
        lv, hv = e.load(I64, lo), e.load(I64, hi)
        mid = b.ashr(b.add(lv, hv), c64(1))
        km = e.load(kt, e.gep(kt, keys, mid))
        below = b.fcmp_ordered("<", km, key) if floating else b.icmp_signed("<", km, key)
        b.store(b.select(below, b.add(mid, c64(1)), lv), lo)
        b.store(b.select(below, hv, mid), hi)
        b.branch(hdr)
        b.position_at_end(done)
        at = e.load(I64, lo)
        inside = b.icmp_signed("<", at, n)
        safe = b.select(inside, at, c64(0))
        kat = e.load(kt, e.gep(kt, keys, safe))
        same = b.fcmp_ordered("==", kat, key) if floating else b.icmp_signed("==", kat, key)
        found = b.and_(inside, same)
        out = b.select(found, e.load(vt, e.gep(vt, values, safe)), default)
        if floating:
            out = b.select(b.and_(has_nan, b.fcmp_unordered("uno", key, key)), nan_value, out)
        b.store(out, e.gep(vt, y, i))
    b.ret_void()


@functools.cache
def _library(isa: Isa, xname: str, vsize: int) -> jit.Library:
    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit(m, prefix, xname, vsize)
        return m
    return jit.load(f"lookup|{isa.level}|{xname}|v{vsize}", isa, build)


def lookup(x: np.ndarray, y: np.ndarray, keys: np.ndarray, values: np.ndarray, default: np.ndarray,
           nan_value: np.ndarray, has_nan: bool, threads: int, isa: Isa | None = None) -> BoundKernel:
    """A bound lookup of contiguous ``x`` into ``y``: ``keys`` sorted, unique (f64 for float
    inputs, i64 for integer ones), ``values`` (of ``y``'s item type) in the keys' order,
    ``default``/``nan_value`` one item each."""
    size = x.size
    ept = max(1 << 12, -(-size // (4 * threads)))
    tasks = -(-size // ept) if size else 0
    ctx = LOOKUP_CONTEXT.new(x=x.ctypes.data, y=y.ctypes.data, keys=keys.ctypes.data, values=values.ctypes.data,
                             default=default.ctypes.data, nan_value=nan_value.ctypes.data, has_nan=int(has_nan),
                             n=keys.size, ept=ept, size=size)
    lib = _library(isa or host_isa(), x.dtype.name, y.dtype.itemsize)
    return BoundKernel(lib.address("lookup_task"), ctx, tasks, threads, (x, y, keys, values, default, nan_value),
                       layout=LOOKUP_CONTEXT)
