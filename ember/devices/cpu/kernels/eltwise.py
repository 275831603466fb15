"""Elementwise kernels: ``eltwise_task(ctx, task)`` runs a small program (a fused chain of
unary, binary and select ops with broadcasting) over blocks of the output; see
:func:`eltwise_kernel`.

A program runs in one register type (``f32``, ``f64`` or ``i64``; int32/int16/int8/uint8 values
live in i64 registers and wrap to their width after each arithmetic op, ``wrap32``...). Booleans are 0/1 in
registers of any type. Loads convert inputs of any supported element type into the register
type, stores convert back (floats to integers truncate and saturate, NaN to 0, as ember's
Convert; integers to narrower integers wrap).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir

from ember.devices.cpu.llvm import jit
from ember.devices.cpu.llvm.codegen import F32, I1, I8, I32, I64, PTR, VOID, Emitter, c32, c64, vec
from ember.devices.cpu.llvm.context import ContextLayout, f32_bits
from ember.devices.cpu.llvm.isa import Isa, host_isa
from ember.devices.cpu.llvm.vector import VectorMath, fmuladd, lane_mask, masked_load, masked_store
from ember.devices.cpu.runtime.kernel_call import BoundKernel

F64 = ir.DoubleType()
I16 = ir.IntType(16)
BF16 = np.dtype(ml_dtypes.bfloat16)

# =========================================================================== elementwise programs
# A fused elementwise chain runs as a small program over blocks of BLOCK elements: each
# instruction loops over the block in vector registers (scratch rows on the stack), so one
# compiled kernel serves every chain. Inputs broadcast by strides (0 along broadcast dims);
# the output is collapsed to [d0, d1, d2, inner] with contiguous or broadcast inner loads.

BLOCK = 256
MAX_INPUTS = 8
MAX_INSTR = 24
REGS = 4
EW_HEAD = ("y", "d0", "d1", "d2", "inner", "ys0", "ys1", "ys2", "rpt", "nrows", "cb", "ncb", "ninstr")
EW_IN0, EW_IN_WORDS = 16, 5       # per input: ptr, s0, s1, s2, inner stride (0, 1, or -r: item j // r)
EW_PROG0, EW_INSTR_WORDS = EW_IN0 + MAX_INPUTS * EW_IN_WORDS, 6  # op, dst, a, b, imm0, imm1
#: the head, then the inputs and the program (indexed by register and instruction number in IR)
ELTWISE_CONTEXT = ContextLayout(
    "eltwise",
    (*EW_HEAD, *(f"unused{i}" for i in range(len(EW_HEAD), EW_IN0)),
     *(f"in{i}_{w}" for i in range(MAX_INPUTS) for w in ("ptr", "s0", "s1", "s2", "s3")),
     *(f"op{j}_{w}" for j in range(MAX_INSTR) for w in ("code", "dst", "a", "b", "imm0", "imm1"))),
    pointers=("y", *(f"in{i}_ptr" for i in range(MAX_INPUTS))))
EW_WORDS = ELTWISE_CONTEXT.words
assert ELTWISE_CONTEXT["in0_ptr"] == EW_IN0 and ELTWISE_CONTEXT["op0_code"] == EW_PROG0

#: register types a program runs in
RTYPES = ("f32", "f64", "i64")
#: unary ops of the f32 programs (imm0/imm1: f32 parameters)
UNARY_OPS = ("neg", "abs", "relu", "clamp", "exp", "log", "sqrt", "sigmoid", "tanh", "erf", "gelu_erf",
             "gelu_tanh", "swish", "hswish", "hsigmoid", "elu", "floor", "ceil", "softplus", "mish", "square",
             "mulc", "addc", "rsubc", "rdivc", "powc", "sign", "softsign", "selu", "hardsigmoid", "round_even",
             "round_away", "isnan", "isinf", "isinf_pos", "isinf_neg", "isfinite", "not", "tobool", "wrap32",
             "wrap16", "wrap8", "wrapu8", "bnot", "tan", "atan", "sinh", "cosh", "asin", "acos", "asinh",
             "acosh", "atanh",
             "sin", "cos", "round_f16", "round_bf16")
BINARY_OPS = ("add", "sub", "mul", "div", "max", "min", "sqdiff", "prelu", "mod", "floormod", "pydiv",
              "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "xor", "pow", "band", "bor", "bxor", "ipow32", "ipow64")
#: f64 functions computed by the C library's scalar functions, lane by lane (exact as numpy's
#: float64 math, which uses the same library or matches it within an ulp or two)
F64_LIBM = ("exp", "log", "tanh", "erf", "sin", "cos", "tan", "atan", "sinh", "cosh", "asin", "acos", "asinh",
            "acosh", "atanh", "expm1", "log1p", "pow")
#: f64 ops built from those and arithmetic
_F64_MATH = ("exp", "log", "sigmoid", "tanh", "erf", "gelu_erf", "gelu_tanh", "swish", "hswish", "hsigmoid", "elu",
             "softplus", "mish", "mulc", "addc", "rsubc", "rdivc", "powc", "softsign", "selu", "hardsigmoid", "tan",
             "atan", "sinh", "cosh", "asin", "acos", "asinh", "acosh", "atanh", "sin", "cos")
#: the ops each register type implements (i64 has no float ones)
_F64_UNARY = ("neg", "abs", "relu", "clamp", "floor", "ceil", "sqrt", "square", "sign", "round_even",
              "round_away", "isnan", "isinf", "isinf_pos", "isinf_neg", "isfinite", "not", "tobool", *_F64_MATH)
_I64_UNARY = ("neg", "abs", "relu", "clamp", "square", "sign", "not", "tobool", "wrap32", "wrap16", "wrap8", "wrapu8",
              "bnot")
SUPPORTED = {
    "f32": frozenset(UNARY_OPS) - {"wrap32", "wrap16", "wrap8", "wrapu8", "bnot"}
    | frozenset(BINARY_OPS) - {"pydiv", "band", "bor", "bxor", "ipow32", "ipow64"},
    "f64": frozenset(_F64_UNARY) | frozenset(BINARY_OPS) - {"pydiv", "band", "bor", "bxor", "ipow32", "ipow64"},
    "i64": frozenset(_I64_UNARY) | frozenset(BINARY_OPS) - {"prelu", "pow"},
}
#: op types that run as one opcode of the program (the elementwise lowering rule reads these
#: tables: a new native unary op is a row here, a name in UNARY_OPS and its IR in ``_unary``)
NATIVE_UNARY = {"Negative": "neg", "Abs": "abs", "ReLU": "relu", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
                "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf", "HSwish": "hswish", "HSigmoid": "hsigmoid",
                "Floor": "floor", "Ceiling": "ceil", "SoftPlus": "softplus", "Mish": "mish", "Sign": "sign",
                "SoftSign": "softsign", "IsNaN": "isnan", "IsFinite": "isfinite", "LogicalNot": "not", "Sin": "sin",
                "Cos": "cos", "BitwiseNot": "bnot", "Tan": "tan", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh",
                "Asin": "asin", "Acos": "acos", "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh"}
NATIVE_BINARY = {"BitwiseAnd": "band", "BitwiseOr": "bor", "BitwiseXor": "bxor", "Add": "add", "Subtract": "sub", "Multiply": "mul", "Divide": "div", "Maximum": "max",
                 "Minimum": "min", "SquaredDifference": "sqdiff", "PRelu": "prelu", "Mod": "mod",
                 "FloorMod": "floormod", "Equal": "eq", "NotEqual": "ne", "Less": "lt", "LessEqual": "le",
                 "Greater": "gt", "GreaterEqual": "ge", "LogicalAnd": "and", "LogicalOr": "or",
                 "LogicalXor": "xor"}
#: f32 ops that round a value to f16 or bf16 (a chain on f16/bf16 tensors rounds after each op, as
#: numpy and REFERENCE do: each op computes in f32 and rounds its result)
ROUND_FOR = {np.dtype(np.float16): "round_f16", BF16: "round_bf16"}
#: ops whose result is a boolean (0/1 in the register type)
BOOL_RESULT = frozenset({"isnan", "isinf", "isinf_pos", "isinf_neg", "isfinite", "not", "tobool", "eq", "ne",
                         "lt", "le", "gt", "ge", "and", "or", "xor"})
assert set(NATIVE_UNARY.values()) <= set(UNARY_OPS) and set(NATIVE_BINARY.values()) <= set(BINARY_OPS)

#: element types a program loads and stores (bool is stored as 0/1 bytes)
#: (f16 and bf16 travel as their 16 bits, converted to and from f32 in registers)
_ELEM = {"f32": F32, "f64": F64, "i32": I32, "i64": I64, "u8": I8, "bool": I8, "i8": I8, "i16": ir.IntType(16),
         "f16": ir.IntType(16), "bf16": ir.IntType(16)}
LOAD_OPS = {"load": "f32", "load_f64": "f64", "load_i32": "i32", "load_i64": "i64", "load_u8": "u8", "load_i8": "i8",
            "load_i16": "i16", "load_f16": "f16", "load_bf16": "bf16"}
STORE_OPS = {"store": "f32", "store_f64": "f64", "store_i32": "i32", "store_i64": "i64", "store_u8": "u8",
             "store_bool": "bool", "store_i8": "i8", "store_i16": "i16", "store_f16": "f16", "store_bf16": "bf16"}
assert len(LOAD_OPS) + len(STORE_OPS) <= 20
OPCODES: dict[str, int] = {}
for _i, _n in enumerate((*LOAD_OPS, *STORE_OPS)):
    OPCODES[_n] = _i
for _i, _n in enumerate(UNARY_OPS):
    OPCODES[_n] = 20 + _i
for _i, _n in enumerate(BINARY_OPS):
    OPCODES[_n] = 100 + _i
#: ``("select", dst, a, b, c, 0)``: dst = a ? b : c (registers; c travels in imm0)
OPCODES["select"] = 200
#: the LOAD opcode for an input's numpy dtype (converted to the register type as it is read)
LOAD_FOR = {np.dtype(np.float32): "load", np.dtype(np.float64): "load_f64", np.dtype(np.int32): "load_i32",
            np.dtype(np.int64): "load_i64", np.dtype(np.uint8): "load_u8", np.dtype(np.bool_): "load_u8",
            np.dtype(np.int8): "load_i8", np.dtype(np.int16): "load_i16", np.dtype(np.float16): "load_f16",
            BF16: "load_bf16"}
#: the STORE opcode for an output's numpy dtype
STORE_FOR = {np.dtype(np.float32): "store", np.dtype(np.float64): "store_f64", np.dtype(np.int32): "store_i32",
             np.dtype(np.int64): "store_i64", np.dtype(np.uint8): "store_u8", np.dtype(np.bool_): "store_bool",
             np.dtype(np.int8): "store_i8", np.dtype(np.int16): "store_i16", np.dtype(np.float16): "store_f16",
             BF16: "store_bf16"}


class _Regs:
    """Typed vector helpers for one register type (f32 math comes from VectorMath)."""

    def __init__(self, e: Emitter, lanes: int, rtype: str, mvec: int = 0) -> None:
        self.e, self.b, self.lanes, self.rtype = e, e.b, lanes, rtype
        #: lanes of the C library's vector f64 functions (glibc's libmvec) to call; 0: scalar calls
        self.mvec = mvec if mvec and lanes % mvec == 0 else 0
        self.et = {"f32": F32, "f64": F64, "i64": I64}[rtype]
        self.vt = vec(self.et, lanes)
        self.is_float = rtype != "i64"
        self.sfx = f"v{lanes}{ {'f32': 'f32', 'f64': 'f64', 'i64': 'i64'}[rtype] }"
        self.mth = VectorMath(e, lanes)

    def c(self, x: float) -> ir.Constant:
        return ir.Constant(self.vt, [float(x) if self.is_float else int(x)] * self.lanes)

    def intr(self, name: str, *args: ir.Value) -> ir.Value:
        return self.e.call(f"llvm.{name}.{self.sfx}", self.vt, list(args))

    def cmp(self, op: str, x: ir.Value, y: ir.Value) -> ir.Value:
        if self.is_float:  # numpy: every comparison with NaN is false except !=
            return self.b.fcmp_unordered(op, x, y) if op == "!=" else self.b.fcmp_ordered(op, x, y)
        return self.b.icmp_signed(op, x, y)

    def sel(self, m: ir.Value, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.select(m, x, y)

    def truth(self, x: ir.Value) -> ir.Value:
        return self.cmp("!=", x, self.c(0))

    def from_mask(self, m: ir.Value) -> ir.Value:
        return self.sel(m, self.c(1), self.c(0))

    def neg(self, x: ir.Value) -> ir.Value:
        return self.b.fneg(x) if self.is_float else self.b.sub(self.c(0), x)

    def add(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.fadd(x, y) if self.is_float else self.b.add(x, y)

    def sub(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.fsub(x, y) if self.is_float else self.b.sub(x, y)

    def mul(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.fmul(x, y) if self.is_float else self.b.mul(x, y)

    def abs(self, x: ir.Value) -> ir.Value:
        return self.intr("fabs", x) if self.is_float else self.sel(self.cmp("<", x, self.c(0)), self.neg(x), x)

    def sign(self, x: ir.Value) -> ir.Value:  # numpy's: 0 for +-0, NaN stays NaN
        rest = self.sel(self.b.fcmp_unordered("uno", x, x), x, self.c(0)) if self.is_float else self.c(0)
        return self.sel(self.cmp(">", x, self.c(0)), self.c(1), self.sel(self.cmp("<", x, self.c(0)), self.c(-1), rest))


def _unary(r: _Regs, name: str, x: ir.Value, imm0: ir.Value, imm1: ir.Value) -> ir.Value:
    b = r.b
    mth = r.mth
    c = r.c
    # -- every register type
    if name == "neg":
        return r.neg(x)
    if name == "abs":
        return r.abs(x)
    if name == "relu":
        return r.sel(r.cmp("<", x, c(0)), c(0), x)
    if name == "clamp":
        y = r.sel(r.cmp("<", x, imm0), imm0, x)
        return r.sel(r.cmp(">", y, imm1), imm1, y)
    if name == "square":
        return r.mul(x, x)
    if name == "sign":
        return r.sign(x)
    if name == "not":
        return r.from_mask(b.not_(r.truth(x)))
    if name == "tobool":
        return r.from_mask(r.truth(x))
    if name == "bnot":
        return b.xor(x, r.c(-1))
    if name in ("wrap32", "wrap16", "wrap8", "wrapu8"):  # integers of a narrower type wrap in it
        narrow = vec(ir.IntType({"wrap32": 32, "wrap16": 16}.get(name, 8)), r.lanes)
        return b.zext(b.trunc(x, narrow), r.vt) if name == "wrapu8" else b.sext(b.trunc(x, narrow), r.vt)
    # -- floats
    if name == "floor":
        return r.intr("floor", x)
    if name == "ceil":
        return r.intr("ceil", x)
    if name == "sqrt":
        return r.intr("sqrt", x)
    if name == "round_even":
        return r.intr("roundeven", x)
    if name == "round_away":  # OpenVINO's reference: sign(x) * floor(|x| + 0.5)
        return r.mul(r.sign(x), r.intr("floor", b.fadd(r.abs(x), c(0.5))))
    if name == "isnan":
        return r.from_mask(b.fcmp_unordered("uno", x, x))
    if name == "isinf":
        return r.from_mask(b.fcmp_ordered("==", r.abs(x), c(math.inf)))
    if name == "isinf_pos":
        return r.from_mask(b.fcmp_ordered("==", x, c(math.inf)))
    if name == "isinf_neg":
        return r.from_mask(b.fcmp_ordered("==", x, c(-math.inf)))
    if name == "isfinite":
        return r.from_mask(b.fcmp_ordered("<", r.abs(x), c(math.inf)))
    if name == "round_f16":  # f32 -> f16 -> f32 (rounds to nearest even, overflows to inf)
        return b.fpext(b.fptrunc(x, vec(ir.HalfType(), r.lanes)), r.vt)
    if name == "round_bf16":
        return _bf16_to_f32(r.e, _f32_to_bf16(r.e, x, r.lanes), r.lanes)
    if r.rtype == "f64":
        return _unary_f64(r, name, x, imm0, imm1)
    # -- f32 only
    if name == "exp":
        return mth.exp(x)
    if name == "log":
        return mth.log(x)
    if name == "sigmoid":
        return mth.sigmoid(x)
    if name == "tanh":
        return mth.tanh(x)
    if name == "erf":
        return mth.erf(x)
    if name == "gelu_erf":
        return b.fmul(b.fmul(c(0.5), x), b.fadd(c(1.0), mth.erf(b.fmul(x, c(1 / math.sqrt(2))))))
    if name == "gelu_tanh":
        inner = b.fmul(c(math.sqrt(2 / math.pi)), fmuladd(r.e, b.fmul(b.fmul(x, x), x), c(0.044715), x))
        return b.fmul(b.fmul(c(0.5), x), b.fadd(c(1.0), mth.tanh(inner)))
    if name == "swish":
        return b.fmul(x, mth.sigmoid(b.fmul(x, imm0)))
    if name in ("hswish", "hsigmoid"):
        h = b.fadd(x, c(3.0))
        h = mth.sel(mth.lt(h, c(0.0)), c(0.0), h)
        h = mth.sel(mth.gt(h, c(6.0)), c(6.0), h)
        return b.fdiv(b.fmul(x, h), c(6.0)) if name == "hswish" else b.fdiv(h, c(6.0))
    if name == "elu":
        return mth.sel(mth.gt(x, c(0.0)), x, b.fmul(imm0, b.fsub(mth.exp(x), c(1.0))))
    if name == "selu":  # imm0 alpha, imm1 lambda
        return b.fmul(imm1, mth.sel(mth.gt(x, c(0.0)), x, b.fmul(imm0, b.fsub(mth.exp(x), c(1.0)))))
    if name == "hardsigmoid":  # clip(alpha * x + beta, 0, 1); NaN stays NaN
        h = b.fadd(b.fmul(imm0, x), imm1)
        h = mth.sel(mth.lt(h, c(0.0)), c(0.0), h)
        return mth.sel(mth.gt(h, c(1.0)), c(1.0), h)
    if name == "softsign":
        return b.fdiv(x, b.fadd(c(1.0), r.abs(x)))
    if name == "softplus":
        return mth.softplus(x)
    if name == "mish":
        return b.fmul(x, mth.tanh(mth.softplus(x)))
    if name == "mulc":
        return b.fmul(x, imm0)
    if name == "addc":
        return b.fadd(x, imm0)
    if name == "rsubc":
        return b.fsub(imm0, x)
    if name == "rdivc":
        return b.fdiv(imm0, x)
    if name == "powc":  # x ** imm0 for a non-integer imm0 (NaN below 0, as numpy)
        return mth.exp(b.fmul(imm0, mth.log(x)), subnormal=True)
    if name in ("sin", "cos", "tan"):
        return _sincos(r, x, name == "cos", name == "tan")
    if name == "atan":
        return _atan(r, x)
    if name in ("sinh", "cosh"):
        return _sinh_cosh(r, x, name == "cosh")
    if name in ("asin", "acos", "asinh", "acosh", "atanh"):
        return _inverse(r, name, x)
    raise AssertionError(name)


def libm_symbols() -> dict[str, int]:
    """The C library's f64 functions the f64 programs call, registered with LLVM under
    ``ember_libm_<name>`` (once per process; the kernels resolve them when loaded)."""
    return _libm_symbols()


@functools.cache
def _libm_symbols() -> dict[str, int]:
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m") or None)
    out = {}
    for name in F64_LIBM:
        addr = ctypes.cast(getattr(libm, name), ctypes.c_void_p).value
        assert addr is not None
        llvm.add_symbol(f"ember_libm_{name}", addr)
        out[name] = addr
    return out


@functools.cache
def _libmvec(width: int) -> bool:
    """Whether glibc's vector math library has every f64 function for ``width`` lanes
    (AVX-512: 8, AVX2: 4); registers them with LLVM as ``ember_mvec<width>_<name>``."""
    import ctypes

    try:
        lib = ctypes.CDLL("libmvec.so.1")
    except OSError:
        return False
    tag = "e" if width == 8 else "d"
    found = {}
    for name in F64_LIBM:
        try:
            fn = getattr(lib, f"_ZGV{tag}N{width}{'vv' if name == 'pow' else 'v'}_{name}")
        except AttributeError:
            return False
        found[name] = ctypes.cast(fn, ctypes.c_void_p).value
    for name, addr in found.items():
        llvm.add_symbol(f"ember_mvec{width}_{name}", addr)
    return True


def mvec_width(isa: Isa) -> int:
    """Lanes of the vector f64 functions the f64 programs of ``isa`` call (0: scalar calls)."""
    if not isa.triple.startswith("x86_64"):
        return 0
    width = 8 if isa.level in ("avx512", "amx") else 4 if isa.level == "avx2" else 0
    return width if width and _libmvec(width) else 0


def _libm(r: _Regs, name: str, *xs: ir.Value) -> ir.Value:
    """The C library's f64 ``name`` of each lane of f64 vectors ``xs``: glibc's vector functions
    (at most 4 ulp from the scalar ones) when there, else one scalar call per lane."""
    b = r.b
    dvt = vec(F64, r.lanes)
    if r.mvec:
        w = r.mvec
        wt = vec(F64, w)
        vfn = r.e.declare(f"ember_mvec{w}_{name}", wt, [wt] * len(xs))
        undef = ir.Constant(dvt, ir.Undefined)
        parts = []
        for k in range(0, r.lanes, w):
            idx = ir.Constant(vec(I32, w), list(range(k, k + w)))
            parts.append(b.call(vfn, [b.shuffle_vector(x, undef, idx) for x in xs]))
        while len(parts) > 1:
            n = parts[0].type.count
            idx = ir.Constant(vec(I32, 2 * n), list(range(2 * n)))
            parts = [b.shuffle_vector(parts[i], parts[i + 1], idx) for i in range(0, len(parts), 2)]
        return parts[0]
    fn = r.e.declare(f"ember_libm_{name}", F64, [F64] * len(xs))
    out: ir.Value = ir.Constant(dvt, None)
    for i in range(r.lanes):
        out = b.insert_element(out, b.call(fn, [b.extract_element(x, c32(i)) for x in xs]), c32(i))
    return out


def _unary_f64(r: _Regs, name: str, x: ir.Value, imm0: ir.Value, imm1: ir.Value) -> ir.Value:
    """f64 functions, with REFERENCE's formulas (numpy in float64)."""
    b, c = r.b, r.c
    if name in F64_LIBM:
        return _libm(r, name, x)
    if name == "sigmoid":  # 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below
        t = _libm(r, "exp", b.fneg(r.abs(x)))
        return r.sel(b.fcmp_ordered(">=", x, c(0.0)), b.fdiv(c(1.0), b.fadd(c(1.0), t)), b.fdiv(t, b.fadd(c(1.0), t)))
    if name == "softplus":  # numpy's logaddexp(0, x): max(x, 0) + log1p(e^-|x|)
        y = b.fadd(r.sel(b.fcmp_ordered(">", x, c(0.0)), x, c(0.0)), _libm(r, "log1p", _libm(r, "exp", b.fneg(r.abs(x)))))
        return r.sel(b.fcmp_unordered("uno", x, x), x, y)
    if name == "gelu_erf":
        return b.fmul(b.fmul(c(0.5), x), b.fadd(c(1.0), _libm(r, "erf", b.fdiv(x, c(math.sqrt(2))))))
    if name == "gelu_tanh":
        inner = b.fmul(c(math.sqrt(2 / math.pi)), b.fadd(x, b.fmul(c(0.044715), b.fmul(b.fmul(x, x), x))))
        return b.fmul(b.fmul(c(0.5), x), b.fadd(c(1.0), _libm(r, "tanh", inner)))
    if name == "swish":
        return b.fmul(x, _unary_f64(r, "sigmoid", b.fmul(x, imm0), imm0, imm1))
    if name in ("hswish", "hsigmoid"):
        h = b.fadd(x, c(3.0))
        h = r.sel(b.fcmp_ordered("<", h, c(0.0)), c(0.0), h)
        h = r.sel(b.fcmp_ordered(">", h, c(6.0)), c(6.0), h)
        return b.fdiv(b.fmul(x, h), c(6.0)) if name == "hswish" else b.fdiv(h, c(6.0))
    if name == "elu":
        return r.sel(b.fcmp_ordered(">", x, c(0.0)), x, b.fmul(imm0, b.fsub(_libm(r, "exp", x), c(1.0))))
    if name == "selu":
        return b.fmul(imm1, r.sel(b.fcmp_ordered(">", x, c(0.0)), x, b.fmul(imm0, b.fsub(_libm(r, "exp", x), c(1.0)))))
    if name == "hardsigmoid":
        h = b.fadd(b.fmul(imm0, x), imm1)
        h = r.sel(b.fcmp_ordered("<", h, c(0.0)), c(0.0), h)
        return r.sel(b.fcmp_ordered(">", h, c(1.0)), c(1.0), h)
    if name == "softsign":
        return b.fdiv(x, b.fadd(c(1.0), r.abs(x)))
    if name == "mish":
        return b.fmul(x, _libm(r, "tanh", _unary_f64(r, "softplus", x, imm0, imm1)))
    if name == "mulc":
        return b.fmul(x, imm0)
    if name == "addc":
        return b.fadd(x, imm0)
    if name == "rsubc":
        return b.fsub(imm0, x)
    if name == "rdivc":
        return b.fdiv(imm0, x)
    if name == "powc":
        return _libm(r, "pow", x, imm0)
    raise AssertionError(name)


def _f32_to_bf16(e: Emitter, x: ir.Value, lanes: int) -> ir.Value:
    """f32 lanes as bf16 bits: rounded to nearest even, NaN kept quiet (as ml_dtypes)."""
    b = e.b
    vi = vec(I32, lanes)
    bits = b.bitcast(x, vi)

    def k(v: int) -> ir.Constant:
        return ir.Constant(vi, [v] * lanes)

    odd = b.and_(b.lshr(bits, k(16)), k(1))
    rounded = b.lshr(b.add(bits, b.add(k(0x7FFF), odd)), k(16))
    nan = b.or_(b.lshr(bits, k(16)), k(0x40))
    out = b.select(b.fcmp_unordered("uno", x, x), nan, rounded)
    return b.trunc(out, vec(I16, lanes))


def _bf16_to_f32(e: Emitter, v: ir.Value, lanes: int) -> ir.Value:
    b = e.b
    vi = vec(I32, lanes)
    return b.bitcast(b.shl(b.zext(v, vi), ir.Constant(vi, [16] * lanes)), vec(F32, lanes))


def _sincos(r: _Regs, x: ir.Value, cosine: bool, tangent: bool = False) -> ir.Value:
    """sin or cos of f32 x: k = round(x * 2/pi) and x - k pi/2 in f64 with pi/2 in three parts
    (fused multiply-adds, so accurate far beyond any f32 a model feeds), then cephes'
    sinf/cosf polynomials on [-pi/4, pi/4] in f32."""
    b, c, e = r.b, r.c, r.e
    lanes = r.lanes
    dvt = vec(F64, lanes)

    def d(v: float) -> ir.Constant:
        return ir.Constant(dvt, [v] * lanes)

    xd = b.fpext(x, dvt)
    k = e.call(f"llvm.roundeven.v{lanes}f64", dvt, [b.fmul(xd, d(2 / math.pi))])
    red = xd
    for part in (1.5707963267948966, 6.123233995736766e-17, -1.4973849048591698e-33):
        red = e.call(f"llvm.fma.v{lanes}f64", dvt, [b.fneg(k), d(part), red])
    red = b.fptrunc(red, r.vt)
    red = r.sel(b.fcmp_ordered("<", red, c(-1.0)), c(-1.0), red)  # bounded even where k overflows
    red = r.sel(b.fcmp_ordered(">", red, c(1.0)), c(1.0), red)
    z = b.fmul(red, red)
    sin_r = fmuladd(e, b.fmul(z, red), r.mth.poly(z, [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1]), red)
    cos_r = fmuladd(e, b.fmul(z, z), r.mth.poly(z, [2.443315711809948e-5, -1.388731625493765e-3,
                                                    4.166664568298827e-2]), fmuladd(e, z, c(-0.5), c(1.0)))
    vi = vec(I64, lanes)
    kd = b.select(b.fcmp_ordered("<", e.call(f"llvm.fabs.v{lanes}f64", dvt, [k]), d(2.0 ** 60)), k, d(0.0))
    q = b.fptosi(kd, vi)
    if cosine:
        q = b.add(q, ir.Constant(vi, [1] * lanes))
    q = b.and_(q, ir.Constant(vi, [3] * lanes))
    odd = b.icmp_signed("!=", b.and_(q, ir.Constant(vi, [1] * lanes)), ir.Constant(vi, None))
    neg = b.icmp_signed("!=", b.and_(q, ir.Constant(vi, [2] * lanes)), ir.Constant(vi, None))
    if tangent:  # tan = sin / cos of the reduced argument, the quadrant's sign and swap
        v = r.sel(odd, b.fneg(b.fdiv(cos_r, sin_r)), b.fdiv(sin_r, cos_r))
    else:
        v = r.sel(odd, cos_r, sin_r)
        v = r.sel(neg, b.fneg(v), v)
    return r.sel(b.fcmp_ordered("==", r.abs(x), c(math.inf)), c(math.nan), v)


def _atan(r: _Regs, x: ir.Value) -> ir.Value:
    """cephes' atanf: |x| reduced to [0, tan(pi/8)] around 0, pi/4 or pi/2, then a polynomial."""
    b, c = r.b, r.c
    a = r.abs(x)
    big, mid = b.fcmp_ordered(">", a, c(2.414213562373095)), b.fcmp_ordered(">", a, c(0.4142135623730950))
    t = r.sel(big, b.fdiv(c(-1.0), a), r.sel(mid, b.fdiv(b.fsub(a, c(1.0)), b.fadd(a, c(1.0))), a))
    y0 = r.sel(big, c(math.pi / 2), r.sel(mid, c(math.pi / 4), c(0.0)))
    z = b.fmul(t, t)
    p = r.mth.poly(z, [8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1])
    y = b.fadd(y0, fmuladd(r.e, b.fmul(p, z), t, t))
    return r.mth.copysign(y, x)


def _asin_core(r: _Regs, a: ir.Value) -> ir.Value:
    """cephes' asinf for 0 <= a <= 1 (NaN above 1)."""
    b, c = r.b, r.c
    upper = b.fcmp_ordered(">", a, c(0.5))
    z = r.sel(upper, b.fmul(c(0.5), b.fsub(c(1.0), a)), b.fmul(a, a))
    s = r.sel(upper, r.intr("sqrt", z), a)
    p = r.mth.poly(z, [4.2163199048e-2, 2.4181311049e-2, 4.5470025998e-2, 7.4953002686e-2, 1.6666752422e-1])
    y = fmuladd(r.e, b.fmul(p, z), s, s)
    y = r.sel(upper, b.fsub(c(math.pi / 2), b.fadd(y, y)), y)
    return r.sel(b.fcmp_ordered(">", a, c(1.0)), c(math.nan), y)


def _inverse(r: _Regs, name: str, x: ir.Value) -> ir.Value:
    """asin, acos, asinh, acosh, atanh of f32 x."""
    b, c, mth = r.b, r.c, r.mth
    a = r.abs(x)
    if name == "asin":
        return mth.copysign(_asin_core(r, a), x)
    if name == "acos":  # pi/2 - asin(x) in the middle, 2 asin(sqrt((1 -+ x) / 2)) near +-1
        half = r.intr("sqrt", b.fmul(c(0.5), b.fsub(c(1.0), a)))
        edge = b.fadd(_asin_core(r, half), _asin_core(r, half))
        edge = r.sel(b.fcmp_ordered("<", x, c(0.0)), b.fsub(c(math.pi), edge), edge)
        mid = b.fsub(c(math.pi / 2), mth.copysign(_asin_core(r, a), x))
        out = r.sel(b.fcmp_ordered(">", a, c(0.5)), edge, mid)
        return r.sel(b.fcmp_ordered(">", a, c(1.0)), c(math.nan), out)
    z = b.fmul(x, x)
    if name == "asinh":
        big = b.fcmp_ordered(">", a, c(1e10))
        root = r.intr("sqrt", b.fadd(b.fmul(a, a), c(1.0)))
        y = r.sel(big, b.fadd(mth.log(a), c(math.log(2))), mth.log(b.fadd(a, root)))
        series = fmuladd(r.e, b.fmul(z, x), mth.poly(z, [105 / 3456, -15 / 336, 3 / 40, -1 / 6]), x)
        return r.sel(b.fcmp_ordered("<", a, c(0.25)), series, mth.copysign(y, x))
    if name == "acosh":  # NaN below 1 (the root of a negative number)
        big = b.fcmp_ordered(">", x, c(1e10))
        y = mth.log(b.fadd(x, r.intr("sqrt", b.fsub(b.fmul(x, x), c(1.0)))))
        return r.sel(big, b.fadd(mth.log(x), c(math.log(2))), y)
    if name == "atanh":
        y = b.fmul(c(0.5), mth.log(b.fdiv(b.fadd(c(1.0), x), b.fsub(c(1.0), x))))
        series = fmuladd(r.e, b.fmul(z, x), mth.poly(z, [1 / 11, 1 / 9, 1 / 7, 1 / 5, 1 / 3]), x)
        return r.sel(b.fcmp_ordered("<", a, c(0.25)), series, y)
    raise AssertionError(name)


def _sinh_cosh(r: _Regs, x: ir.Value, cosh: bool) -> ir.Value:
    """(e^x +- e^-x) / 2; sinh below |x| = 1 from its odd Taylor series (no cancellation)."""
    b, c, mth = r.b, r.c, r.mth
    ep, en = mth.exp(x), mth.exp(b.fneg(x))
    if cosh:
        return b.fmul(c(0.5), b.fadd(ep, en))
    z = b.fmul(x, x)
    small = fmuladd(r.e, b.fmul(z, x), mth.poly(z, [1 / 362880, 1 / 5040, 1 / 120, 1 / 6]), x)
    return r.sel(b.fcmp_ordered("<", r.abs(x), c(1.0)), small, b.fmul(c(0.5), b.fsub(ep, en)))


def _pow(r: _Regs, x: ir.Value, y: ir.Value) -> ir.Value:
    """numpy's float power: |x| ** y as exp(y log|x|), the sign of x for odd integer y, NaN for
    x < 0 and a non-integer y, 1 for y == 0 or x == 1."""
    b, c, mth = r.b, r.c, r.mth
    mag = mth.exp(b.fmul(y, mth.log(r.abs(x))), subnormal=True)
    integer = b.fcmp_ordered("==", r.intr("floor", y), y)
    half = b.fmul(y, c(0.5))
    odd = b.and_(integer, b.fcmp_ordered("!=", r.intr("floor", half), half))
    out = r.sel(odd, mth.copysign(mag, x), mag)
    out = r.sel(b.and_(b.fcmp_ordered("<", x, c(0.0)), b.not_(integer)), c(math.nan), out)
    return r.sel(b.or_(b.fcmp_ordered("==", y, c(0.0)), b.fcmp_ordered("==", x, c(1.0))), c(1.0), out)


def _int_division(r: _Regs, x: ir.Value, y: ir.Value, name: str) -> ir.Value:
    """OpenVINO's integer Divide/Mod/FloorMod: a zero divisor gives 0; no lane ever traps."""
    b = r.b
    zero, one, minus = r.c(0), r.c(1), r.c(-1)
    is0, ism1 = b.icmp_signed("==", y, zero), b.icmp_signed("==", y, minus)
    safe = r.sel(b.or_(is0, ism1), one, y)
    # x86 has no vector integer division: below 2^52 a double division truncated is exact
    e = r.e
    lim = r.c(1 << 52)
    small = b.and_(b.and_(b.icmp_signed("<", x, lim), b.icmp_signed("<", r.neg(lim), x)),
                   b.and_(b.icmp_signed("<", safe, lim), b.icmp_signed("<", r.neg(lim), safe)))
    all_small = e.call(f"llvm.vector.reduce.and.v{r.lanes}i1", I1, [small])
    slot = e.var(r.vt)
    with b.if_else(all_small) as (fast, slow):
        with fast:
            dvt = vec(F64, r.lanes)
            qf = e.call(f"llvm.trunc.v{r.lanes}f64", dvt, [b.fdiv(b.sitofp(x, dvt), b.sitofp(safe, dvt))])
            b.store(b.fptosi(qf, r.vt), slot)
        with slow:
            b.store(b.sdiv(x, safe), slot)
    q = e.load(r.vt, slot)
    rem = b.sub(x, b.mul(q, safe))
    off = b.and_(b.icmp_signed("!=", rem, zero), b.xor(b.icmp_signed("<", rem, zero), b.icmp_signed("<", y, zero)))
    if name in ("div", "pydiv"):
        if name == "pydiv":
            q = r.sel(off, b.sub(q, one), q)
        q = r.sel(ism1, r.neg(x), q)
        return r.sel(is0, zero, q)
    if name == "floormod":
        rem = r.sel(off, b.add(rem, y), rem)
    return r.sel(b.or_(is0, ism1), zero, rem)


def _int_power(r: _Regs, x: ir.Value, y: ir.Value, wide: bool) -> ir.Value:
    """OpenVINO's integer Power (REFERENCE's rule): ``trunc(pow(double(x), double(y)))``; a
    value outside int32 (int64 with ``wide``) or not finite gives that type's minimum."""
    b = r.b
    dvt = vec(F64, r.lanes)
    f = _libm(r, "pow", b.sitofp(x, dvt), b.sitofp(y, dvt))
    f = r.e.call(f"llvm.trunc.v{r.lanes}f64", dvt, [f])
    lo, hi = (-(2.0 ** 63), 2.0 ** 63) if wide else (-(2.0 ** 31), 2.0 ** 31)
    ok = b.and_(b.fcmp_ordered(">=", f, ir.Constant(dvt, [lo] * r.lanes)),
                b.fcmp_ordered("<", f, ir.Constant(dvt, [hi] * r.lanes)))
    safe = b.select(ok, f, ir.Constant(dvt, [0.0] * r.lanes))
    return r.sel(ok, b.fptosi(safe, r.vt), r.c(int(lo)))


def _binary(r: _Regs, name: str, x: ir.Value, y: ir.Value) -> ir.Value:
    b = r.b
    cmps = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
    if name in cmps:
        return r.from_mask(r.cmp(cmps[name], x, y))
    if name in ("band", "bor", "bxor"):
        return {"band": b.and_, "bor": b.or_, "bxor": b.xor}[name](x, y)
    if name in ("and", "or", "xor"):
        tx, ty = r.truth(x), r.truth(y)
        return r.from_mask({"and": b.and_, "or": b.or_, "xor": b.xor}[name](tx, ty))
    if name == "add":
        return r.add(x, y)
    if name == "sub":
        return r.sub(x, y)
    if name == "mul":
        return r.mul(x, y)
    if name == "max":  # OpenVINO's std::max: NaN wins only as the first operand
        return r.sel(r.cmp("<", x, y), y, x)
    if name == "min":
        return r.sel(r.cmp("<", y, x), y, x)
    if name == "sqdiff":
        d = r.sub(x, y)
        return r.mul(d, d)
    if name in ("ipow32", "ipow64"):
        return _int_power(r, x, y, name == "ipow64")
    if not r.is_float:
        return _int_division(r, x, y, name)
    if name == "div":
        return b.fdiv(x, y)
    if name == "mod":  # OpenVINO's formula: a - trunc(a / b) * b
        return b.fsub(x, b.fmul(r.intr("trunc", b.fdiv(x, y)), y))
    if name == "floormod":
        return b.fsub(x, b.fmul(r.intr("floor", b.fdiv(x, y)), y))
    if name == "prelu":
        return r.sel(r.cmp("<", x, r.c(0)), b.fmul(x, y), x)
    if name == "pow":
        return _libm(r, "pow", x, y) if r.rtype == "f64" else _pow(r, x, y)
    raise AssertionError(name)


def _convert(e: Emitter, v: ir.Value, src: str, dst: str, lanes: int) -> ir.Value:
    """A vector of element kind ``src`` as kind ``dst`` (kinds: f32 f64 i32 i64 u8 bool)."""
    b = e.b
    if src == dst or (src, dst) == ("bool", "u8"):
        return v
    if src in ("f16", "bf16"):  # through f32
        f = b.fpext(b.bitcast(v, vec(ir.HalfType(), lanes)), vec(F32, lanes)) if src == "f16" else \
            _bf16_to_f32(e, v, lanes)
        return _convert(e, f, "f32", dst, lanes)
    if dst in ("f16", "bf16"):
        f = _convert(e, v, src, "f32", lanes)
        if dst == "bf16":
            return _f32_to_bf16(e, f, lanes)
        return b.bitcast(b.fptrunc(f, vec(ir.HalfType(), lanes)), vec(I16, lanes))
    st, dt = _ELEM[src], _ELEM[dst]
    svt, dvt = vec(st, lanes), vec(dt, lanes)
    sfloat, dfloat = src in ("f32", "f64"), dst in ("f32", "f64")
    if dst == "bool":
        m = b.fcmp_unordered("!=", v, ir.Constant(svt, None)) if sfloat else b.icmp_signed("!=", v, ir.Constant(svt, None))
        return b.zext(m, dvt)
    if sfloat and dfloat:
        return b.fpext(v, dvt) if dst == "f64" else b.fptrunc(v, dvt)
    if sfloat:  # truncate toward zero, saturate, NaN -> 0 (ember's Convert; llvm's fpto*i.sat is slow)
        lo, hi = (0, 255) if dst == "u8" else (-(1 << (dt.width - 1)), (1 << (dt.width - 1)) - 1)
        below = float(np.nextafter(np.array(hi + 1, np.float32 if src == "f32" else np.float64), 0))
        c = (lambda x: ir.Constant(svt, [x] * lanes))  # noqa: E731
        clamped = b.select(b.fcmp_ordered("<", v, c(float(lo))), c(float(lo)), v)
        clamped = b.select(b.fcmp_ordered(">", clamped, c(min(below, float(hi)))), c(min(below, float(hi))), clamped)
        clamped = b.select(b.fcmp_unordered("uno", v, v), c(0.0), clamped)
        r = b.fptoui(clamped, dvt) if dst == "u8" else b.fptosi(clamped, dvt)
        return b.select(b.fcmp_ordered(">=", v, c(float(hi + 1))), ir.Constant(dvt, [hi] * lanes), r)
    unsigned = src in ("u8", "bool")
    if dfloat:
        return b.uitofp(v, dvt) if unsigned else b.sitofp(v, dvt)
    if dt.width > st.width:
        return b.zext(v, dvt) if unsigned else b.sext(v, dvt)
    return b.trunc(v, dvt) if dt.width < st.width else v


#: ops only the "full" library of a register type holds: rarely used and large in IR, so the
#: library most models load (and compile once per machine) stays small
EXTENDED = frozenset({"sin", "cos", "tan", "atan", "sinh", "cosh", "asin", "acos", "asinh", "acosh", "atanh", "pow",
                      "selu", "hardsigmoid", "softsign", "round_away", "mod", "floormod", "load_i8", "load_i16",
                      "store_i8", "store_i16", "load_f64", "store_f64", "load_f16", "store_f16", "load_bf16",
                      "store_bf16", "round_f16", "round_bf16", "ipow32", "ipow64"})
#: besides EXTENDED, the ops of each register type's full library (f64: the C library's functions)
_EXTENDED_FOR = {"f32": EXTENDED, "f64": EXTENDED | frozenset(_F64_MATH), "i64": EXTENDED}


def _emit_eltwise(m: ir.Module, prefix: str, lanes: int, rtype: str, full: bool = True, mvec: int = 0,
                  halves: bool = True) -> None:
    fn = Emitter.function(m, f"{prefix}_eltwise_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    regs_t = _Regs(e, lanes, rtype, mvec)
    vt = regs_t.vt
    nvec = BLOCK // lanes
    h = {k: e.field(ctx, ELTWISE_CONTEXT[k]) for k in EW_HEAD}
    regs = e.var(vt, count=REGS * nvec)
    rb, cbk = b.sdiv(task, h["ncb"]), b.srem(task, h["ncb"])
    r0 = b.mul(rb, h["rpt"])
    r1 = e.min(h["nrows"], b.add(r0, h["rpt"]))
    c0 = b.mul(cbk, h["cb"])
    c1 = e.min(h["inner"], b.add(c0, h["cb"]))
    ninstr = h["ninstr"]
    y = b.inttoptr(h["y"], PTR)
    supported = SUPPORTED[rtype] if full else SUPPORTED[rtype] - _EXTENDED_FOR[rtype]
    skip = frozenset() if halves else _HALF_OPS

    def reg(rg: ir.Value, v: int | ir.Value) -> ir.Value:
        return e.gep(vt, regs, b.add(b.mul(rg, c64(nvec)), v if isinstance(v, ir.Value) else c64(v)))

    def word(i: ir.Value) -> ir.Value:
        return e.load(I64, e.gep(I64, ctx, i))

    def imm(w: ir.Value) -> ir.Value:
        if rtype == "f32":
            return e.splat(b.bitcast(b.trunc(w, I32), F32), lanes)
        return e.splat(b.bitcast(w, F64) if rtype == "f64" else w, lanes)

    with e.loop(r0, r1, name="row") as row:
        i2 = b.srem(row, h["d2"])
        t = b.sdiv(row, h["d2"])
        i1, i0 = b.srem(t, h["d1"]), b.sdiv(t, h["d1"])
        yoff = b.add(b.add(b.mul(i0, h["ys0"]), b.mul(i1, h["ys1"])), b.mul(i2, h["ys2"]))
        with e.loop(c0, c1, BLOCK, name="blk") as col:
            n = e.min(c64(BLOCK), b.sub(c1, col))
            nv = e.cdiv(n, lanes)
            tail_mask = lane_mask(e, b.sub(n, b.mul(b.sub(nv, c64(1)), c64(lanes))), lanes)
            with e.loop(0, ninstr, name="ins") as ins:
                base = b.add(c64(EW_PROG0), b.mul(ins, c64(EW_INSTR_WORDS)))
                op = word(base)
                dst = word(b.add(base, c64(1)))
                ra = word(b.add(base, c64(2)))
                rb_ = word(b.add(base, c64(3)))
                w4, w5 = word(b.add(base, c64(4))), word(b.add(base, c64(5)))
                done = fn.append_basic_block("op.done")
                sw = b.switch(op, done)

                def case(code: int, body) -> None:  # noqa: ANN001
                    blk = fn.append_basic_block(f"op.{code}")
                    sw.add_case(c64(code), blk)
                    b.position_at_end(blk)
                    body()
                    b.branch(done)

                def vload(kind: str, p: ir.Value, mask: ir.Value | None) -> ir.Value:
                    et = _ELEM[kind]
                    ivt = vec(et, lanes)
                    if mask is None:
                        return e.load(ivt, p, align=1)
                    name = "f32" if kind == "f32" else "f64" if kind == "f64" else f"i{et.width}"
                    return e.call(f"llvm.masked.load.v{lanes}{name}.p0", ivt, [p, c32(1), mask, ir.Constant(ivt, None)])

                def load_input(kind: str) -> Any:
                    """LOAD of an input of element kind ``kind`` (converted to the register type)."""
                    et = _ELEM[kind]

                    def body() -> None:
                        ib = b.add(c64(EW_IN0), b.mul(ra, c64(EW_IN_WORDS)))
                        ptr = b.inttoptr(word(ib), PTR)
                        off = b.add(b.add(b.mul(i0, word(b.add(ib, c64(1)))), b.mul(i1, word(b.add(ib, c64(2))))),
                                    b.mul(i2, word(b.add(ib, c64(3)))))
                        src = e.gep(et, ptr, off)
                        si = word(b.add(ib, c64(4)))
                        with b.if_else(b.icmp_signed("==", si, c64(0))) as (bcast, contig):
                            with bcast:
                                x = e.load(et, src)
                                v = _convert(e, e.splat(x, lanes), kind, rtype, lanes)
                                with e.loop(0, nv, name="lv") as k:
                                    b.store(v, reg(dst, k))
                            with contig:
                                with b.if_else(b.icmp_signed("==", si, c64(1))) as (unit, repeat):
                                    with unit:
                                        p = e.gep(et, src, col)
                                        last = b.sub(nv, c64(1))
                                        with e.loop(0, last, name="lc") as k:
                                            v = vload(kind, e.gep(et, p, b.mul(k, c64(lanes))), None)
                                            b.store(_convert(e, v, kind, rtype, lanes), reg(dst, k))
                                        v = vload(kind, e.gep(et, p, b.mul(last, c64(lanes))), tail_mask)
                                        b.store(_convert(e, v, kind, rtype, lanes), reg(dst, last))
                                    with repeat:  # element j reads item j // r (per-row scalars of short rows)
                                        gather_repeat(kind, src, b.sub(c64(0), si))
                    return body

                def gather_repeat(kind: str, src: ir.Value, rep: ir.Value) -> None:
                    et = _ELEM[kind]
                    ivt = vec(et, lanes)
                    name = "f32" if kind == "f32" else "f64" if kind == "f64" else f"i{et.width}"
                    fvt = vec(F32, lanes)
                    inv = e.splat(b.fdiv(ir.Constant(F32, 1.0), b.sitofp(rep, F32)), lanes)
                    ids = ir.Constant(vec(I64, lanes), list(range(lanes)))
                    size = et.width // 8 if isinstance(et, ir.IntType) else (4 if et == F32 else 8)
                    base = e.splat(b.ptrtoint(src, I64), lanes)
                    last = b.sub(nv, c64(1))
                    with e.loop(0, nv, name="lg") as k:
                        j = b.add(e.splat(b.add(col, b.mul(k, c64(lanes))), lanes), ids)
                        q = b.fmul(b.fadd(b.sitofp(j, fvt), ir.Constant(fvt, [0.5] * lanes)), inv)
                        idx = b.fptosi(e.call(f"llvm.floor.v{lanes}f32", fvt, [q]), vec(I64, lanes))
                        ptrs = b.inttoptr(b.add(base, b.mul(idx, e.splat(c64(size), lanes))), vec(PTR, lanes))
                        full = ir.Constant(vec(ir.IntType(1), lanes), [1] * lanes)
                        m_ = b.select(b.icmp_signed("==", k, last), tail_mask, full)
                        v = e.call(f"llvm.masked.gather.v{lanes}{name}.v{lanes}p0", ivt,
                                   [ptrs, c32(1), m_, ir.Constant(ivt, None)])
                        b.store(_convert(e, v, kind, rtype, lanes), reg(dst, k))

                def store(kind: str) -> Any:
                    et = _ELEM[kind]
                    name = "f32" if kind == "f32" else "f64" if kind == "f64" else f"i{et.width}"

                    def body() -> None:
                        p = e.gep(et, e.gep(et, y, yoff), col)
                        last = b.sub(nv, c64(1))
                        with e.loop(0, last, name="sc") as k:
                            v = _convert(e, e.load(vt, reg(ra, k)), rtype, kind, lanes)
                            b.store(v, e.gep(et, p, b.mul(k, c64(lanes))), align=1)
                        v = _convert(e, e.load(vt, reg(ra, last)), rtype, kind, lanes)
                        e.call(f"llvm.masked.store.v{lanes}{name}.p0", VOID,
                               [v, e.gep(et, p, b.mul(last, c64(lanes))), c32(1), tail_mask])
                    return body

                def unary(name: str) -> Any:
                    def body() -> None:
                        i0_, i1_ = imm(w4), imm(w5)
                        with e.loop(0, nv, name="u") as k:
                            b.store(_unary(regs_t, name, e.load(vt, reg(ra, k)), i0_, i1_), reg(dst, k))
                    return body

                def binary(name: str) -> Any:
                    def body() -> None:
                        with e.loop(0, nv, name="bi") as k:
                            b.store(_binary(regs_t, name, e.load(vt, reg(ra, k)), e.load(vt, reg(rb_, k))),
                                    reg(dst, k))
                    return body

                def select() -> None:
                    with e.loop(0, nv, name="sel") as k:
                        cond = regs_t.truth(e.load(vt, reg(ra, k)))
                        b.store(b.select(cond, e.load(vt, reg(rb_, k)), e.load(vt, reg(w4, k))), reg(dst, k))

                for name, kind in LOAD_OPS.items():
                    if (full or name not in EXTENDED) and name not in skip:
                        case(OPCODES[name], load_input(kind))
                for name, kind in STORE_OPS.items():
                    if (full or name not in EXTENDED) and name not in skip:
                        case(OPCODES[name], store(kind))
                for name in UNARY_OPS:
                    if name in supported and name not in skip:
                        case(OPCODES[name], unary(name))
                for name in BINARY_OPS:
                    if name in supported:
                        case(OPCODES[name], binary(name))
                case(OPCODES["select"], select)
                b.position_at_end(done)
    b.ret_void()


def halves_ok(isa: Isa) -> bool:
    """Whether ``isa`` converts f16 in registers (x86 needs F16C; without it LLVM would call a
    runtime helper the JIT does not have)."""
    return not isa.triple.startswith("x86_64") or "+f16c" in isa.features


#: the ops that convert f16 (left out of the libraries of an ISA without F16C)
_HALF_OPS = frozenset({"load_f16", "store_f16", "round_f16"})


def _build_eltwise(prefix: str, isa: Isa, rtype: str, full: bool, mvec: int = 0) -> ir.Module:
    m = ir.Module(name=prefix)
    m.triple = isa.triple
    _emit_eltwise(m, prefix, isa.f32_lanes, rtype, full, mvec, halves_ok(isa))
    return m


@functools.cache
def _eltwise_library(isa: Isa, rtype: str = "f32", full: bool = False) -> jit.Library:
    tier = "full" if full else "core"
    mvec = 0
    if rtype in ("f64", "i64") and full:  # f64 math; integer Power
        libm_symbols()
        mvec = mvec_width(isa)
    return jit.load(f"eltwise|{isa.level}|{rtype}|{tier}|b{BLOCK}|r{REGS}|mvec{mvec}|h{int(halves_ok(isa))}", isa,
                    lambda p: _build_eltwise(p, isa, rtype, full, mvec))


# --------------------------------------------------------------------------- compiled programs
# The interpreter above pays a dispatch and a pass over the block per instruction per row:
# about 100 cycles a row, most of the time on short rows (PP-OCR det's 24- and 96-channel
# ``x * se + x (+ up)`` programs: 19,200 rows each at 120x160). A program over such rows, with
# enough elements to pay for a compile, gets a module of its own instead: the same context and
# tasks, the instructions emitted in order per vector with values in registers. Only f32
# programs of f32 loads and stores, inputs contiguous or broadcast along the row.

#: rows up to this long get a compiled program (longer ones amortize the interpreter's cost)
COMPILE_BELOW = 1024
#: and programs over at least this many elements (a compile costs about 70-90 ms, once per
#: program on disk); ``None`` switches compiled programs off
COMPILE_FROM: int | None = 1 << 16


def _compiled_ops_ok(program: Sequence[tuple]) -> bool:
    ok = (SUPPORTED["f32"] - EXTENDED - _HALF_OPS) | {"load", "store", "select"}
    return all(op[0] in ok for op in program)


def _emit_program(m: ir.Module, prefix: str, lanes: int, program: tuple[tuple[str, int, int, int, int], ...],
                  kinds: tuple[int, ...]) -> None:
    """``eltwise_task`` for one f32 ``program`` of ``(op, dst, a, b, select's third register)``
    whose input ``i`` has inner stride ``kinds[i]`` (0 or 1); immediates come from the context."""
    fn = Emitter.function(m, f"{prefix}_eltwise_task", VOID, [PTR, I64])
    ctx, task = fn.args
    e = Emitter(m, fn)
    b = e.b
    r = _Regs(e, lanes, "f32")
    vt = r.vt
    h = {k: e.field(ctx, ELTWISE_CONTEXT[k]) for k in EW_HEAD}
    rb, cbk = b.sdiv(task, h["ncb"]), b.srem(task, h["ncb"])
    r0 = b.mul(rb, h["rpt"])
    r1 = e.min(h["nrows"], b.add(r0, h["rpt"]))
    c0 = b.mul(cbk, h["cb"])
    c1 = e.min(h["inner"], b.add(c0, h["cb"]))
    y = b.inttoptr(h["y"], PTR)
    imms = [(e.splat(e.field(ctx, EW_PROG0 + j * EW_INSTR_WORDS + 4, F32), lanes),
             e.splat(e.field(ctx, EW_PROG0 + j * EW_INSTR_WORDS + 5, F32), lanes)) for j in range(len(program))]
    ins = [[e.field(ctx, EW_IN0 + i * EW_IN_WORDS + w) for w in range(4)] for i in range(len(kinds))]
    nmain = b.add(c0, b.mul(b.sdiv(b.sub(c1, c0), c64(lanes)), c64(lanes)))
    with e.loop(r0, r1, name="row") as row:
        i2 = b.srem(row, h["d2"])
        t = b.sdiv(row, h["d2"])
        i1, i0 = b.srem(t, h["d1"]), b.sdiv(t, h["d1"])
        yrow = e.gep(F32, y, b.add(b.add(b.mul(i0, h["ys0"]), b.mul(i1, h["ys1"])), b.mul(i2, h["ys2"])))
        rows, splats = [], []
        for (ptr, s0, s1, s2), kind in zip(ins, kinds):
            p = e.gep(F32, b.inttoptr(ptr, PTR), b.add(b.add(b.mul(i0, s0), b.mul(i1, s1)), b.mul(i2, s2)))
            rows.append(p)
            splats.append(e.splat(e.load(F32, p), lanes) if kind == 0 else None)

        def vector(col: ir.Value, mask: ir.Value | None) -> None:
            regs: dict[int, ir.Value] = {}
            for j, (op, dst, a, b_, third) in enumerate(program):
                if op == "load":
                    regs[dst] = splats[a] if kinds[a] == 0 else masked_load(e, vt, e.gep(F32, rows[a], col), mask)
                elif op == "store":
                    masked_store(e, regs[a], e.gep(F32, yrow, col), mask)
                elif op == "select":
                    regs[dst] = b.select(r.truth(regs[a]), regs[b_], regs[third])
                elif op in BINARY_OPS:
                    regs[dst] = _binary(r, op, regs[a], regs[b_])
                else:
                    regs[dst] = _unary(r, op, regs[a], *imms[j])

        with e.loop(c0, nmain, lanes, name="col") as col:
            vector(col, None)
        with b.if_then(b.icmp_signed("<", nmain, c1)):
            vector(nmain, lane_mask(e, b.sub(c1, nmain), lanes))
    b.ret_void()


@functools.cache
def _program_library(isa: Isa, program: tuple[tuple[str, int, int, int, int], ...], kinds: tuple[int, ...]) -> jit.Library:
    text = ";".join(f"{op},{d},{a},{b_},{t}" for op, d, a, b_, t in program)
    kinds_text = "".join(map(str, kinds))

    def build(prefix: str) -> ir.Module:
        m = ir.Module(name=prefix)
        m.triple = isa.triple
        _emit_program(m, prefix, isa.f32_lanes, program, kinds)
        return m

    return jit.load(f"eltwise_program|{isa.level}|{text}|k{kinds_text}", isa, build)


def _collapse_operands(shape: tuple[int, ...], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Merge adjacent dims where every operand is contiguous across them; drop size-1 dims."""
    dims: list[int] = []
    st: list[list[int]] = [[] for _ in strides]
    for i, d in enumerate(shape):
        if d == 1:
            continue
        if dims and all(s[-1] == o[i] * d for s, o in zip(st, strides)):
            dims[-1] *= d
            for s, o in zip(st, strides):
                s[-1] = o[i]
            continue
        dims.append(d)
        for s, o in zip(st, strides):
            s.append(o[i])
    return dims, st


def eltwise_fits(out_shape: tuple[int, ...], input_shapes: list[tuple[int, ...]]) -> bool:
    """Whether contiguous inputs of these shapes, broadcast to ``out_shape``, fit the kernel."""
    if len(input_shapes) > MAX_INPUTS:
        return False

    def contiguous(shape: tuple[int, ...]) -> list[int]:
        out: list[int] = []
        acc = 1
        for d in reversed(shape):
            out.append(acc if d != 1 else 0)
            acc *= d
        return list(reversed(out))

    rank = len(out_shape)
    strides = [contiguous(out_shape)]
    for shp in input_shapes:
        full = (1,) * (rank - len(shp)) + tuple(shp)
        if any(d not in (1, o) for d, o in zip(full, out_shape)):
            return False
        full_strides = contiguous(full)
        strides.append([0 if d == 1 else s for d, s in zip(full, full_strides)])
    dims, st = _collapse_operands(out_shape, strides)
    return _splits(dims) <= MAX_SPLITS and (not dims or all(s[-1] in (0, 1) for s in st))


#: at most this many kernel calls for a broadcast that does not collapse to 4 dims
MAX_SPLITS = 4096


def views_fit(y: np.ndarray, inputs: list[np.ndarray]) -> bool:
    """Whether :func:`eltwise_kernels` takes these arrays (any strides: views made at bind time
    from arrays of the same shapes and strides, e.g. unallocated ``np.empty`` stand-ins)."""
    if len(inputs) > MAX_INPUTS:
        return False
    try:
        views = [np.broadcast_to(a, y.shape) for a in inputs]
    except ValueError:
        return False
    return _collapse_views(y, views) is not None


def _collapse_views(y: np.ndarray, views: list[np.ndarray]) -> tuple[list[int], list[list[int]]] | None:
    """The collapsed dims and element strides (output first) of ``y`` and its broadcast input
    ``views``; None when a stride is not a whole number of items, the innermost dim is not unit
    stride (output) or unit/zero stride (inputs), or it needs more than MAX_SPLITS 4-D calls."""
    if any(s % v.itemsize for v in (y, *views) for s in v.strides):
        return None
    strides = [[s // y.itemsize for s in y.strides]] + [[s // v.itemsize for s in v.strides] for v in views]
    dims, st = _collapse_operands(y.shape, strides)
    if dims and (_splits(dims) > MAX_SPLITS or st[0][-1] != 1 or any(s[-1] not in (0, 1) for s in st[1:])):
        return None
    return dims, st


def _splits(dims: Sequence[int]) -> int:
    """How many 4-D kernel calls cover collapsed ``dims`` (one per index of the leading dims)."""
    return int(np.prod(dims[:-4], dtype=np.int64)) if len(dims) > 4 else 1


def eltwise_kernels(y: np.ndarray, inputs: list[np.ndarray], program: list[tuple], threads: int,
                    isa: Isa | None = None, rtype: str = "f32", constant: Sequence[bool] = ()) -> list[BoundKernel] | None:
    """:func:`eltwise_kernel`, also for broadcasts that collapse to more than 4 dims (rank 5-8
    with alternating broadcast axes): then one call per index of the leading dims, each over
    4-D views (at most :data:`MAX_SPLITS` calls). None when the shapes do not fit."""
    k = eltwise_kernel(y, inputs, program, threads, isa, rtype, constant)
    if k is not None:
        return [k]
    if y.size == 0 or len(inputs) > MAX_INPUTS or len(program) > MAX_INSTR:
        return None
    views = [np.broadcast_to(a, y.shape) for a in inputs]
    collapsed = _collapse_views(y, views)
    if collapsed is None or len(collapsed[0]) <= 4:
        return None
    dims, st = collapsed
    as_strided = np.lib.stride_tricks.as_strided
    yc = as_strided(y, dims, [s * y.itemsize for s in st[0]])
    vcs = [as_strided(v, dims, [s * v.itemsize for s in sv], writeable=False) for v, sv in zip(views, st[1:])]
    out: list[BoundKernel] = []
    for idx in np.ndindex(*dims[:-4]):
        sub = eltwise_kernel(yc[idx], [v[idx] for v in vcs], program, threads, isa, rtype, constant)
        if sub is None:
            return None
        out.append(sub)
    return out


def _imm_word(op: str, v: float, rtype: str) -> int:
    """A context word holding immediate ``v`` as the register type reads it."""
    if op == "select":  # a register number
        return int(v)
    if rtype == "f32":
        return f32_bits(v)
    if rtype == "f64":
        return int(np.array([v], np.float64).view(np.int64)[0])
    return int(v)


@functools.lru_cache(maxsize=4096)
def _program_words(program: tuple, rtype: str) -> np.ndarray:
    """The context words of an elementwise program (``EW_INSTR_WORDS`` per instruction): the same
    for every shape it is bound at (a shape-generic plan binds its programs again per shape)."""
    words = np.zeros(len(program) * EW_INSTR_WORDS, np.int64)
    for j, (op, dst, a, b_, imm0, imm1) in enumerate(program):
        words[j * EW_INSTR_WORDS:(j + 1) * EW_INSTR_WORDS] = [OPCODES[op], dst, a, b_, _imm_word(op, imm0, rtype),
                                                              _imm_word(op, imm1, rtype)]
    words.flags.writeable = False
    return words


def _widen_rows(dims: list[int], st: list[list[int]], views: list[np.ndarray],
                constant: Sequence[bool]) -> tuple[list[int], list[list[int]], list[np.ndarray]]:
    """Short rows (``[..., rows, inner]`` with a small inner extent) as fewer, longer rows of k
    rows each, so a program runs over whole vectors: inputs contiguous across rows stay as they
    are; a constant row vector broadcast over the rows is tiled k times (once, at bind time);
    per-row scalars are gathered (element j of a long row reads item j // inner: an inner
    stride word of -inner)."""
    if len(dims) < 2 or dims[-1] >= 64 or dims[-2] < 4:
        return dims, st, views
    inner, rows = dims[-1], dims[-2]
    fits: list[str | None] = []
    for i, s in enumerate(st):
        if s[-2] == inner and s[-1] == 1 or s[-2] == 0 and s[-1] == 0:
            fits.append(None)
        elif s[-2] == 0 and s[-1] == 1 and i > 0 and constant[i - 1]:
            fits.append("tile")
        elif s[-2] == 1 and s[-1] == 0 and i > 0:
            fits.append("repeat")
        else:
            return dims, st, views
    best = 1
    for k in range(2, min(rows, 2048 // inner) + 1):
        if rows % k == 0:
            best = k
    if best < 4:
        return dims, st, views
    dims = dims[:-2] + [rows // best, inner * best]
    out_st, out_views = [], list(views)
    for i, (s, how) in enumerate(zip(st, fits)):
        if how == "tile":
            out_views[i - 1] = np.tile(_first_row(views[i - 1], inner), best)
            out_st.append(s[:-2] + [0, 1])
        elif how == "repeat":  # one item per short row: element j of a long row reads item j // inner
            out_st.append(s[:-2] + [best, -inner])
        elif s[-1] == 0:
            out_st.append(s[:-2] + [0, 0])
        else:
            out_st.append(s[:-2] + [s[-2] * best, 1])
    return dims, out_st, out_views


def _first_row(view: np.ndarray, inner: int) -> np.ndarray:
    """The ``inner`` elements a row-broadcast input holds (its last axis, where it varies)."""
    flat = np.lib.stride_tricks.as_strided(view, (inner,), (view.itemsize,), writeable=False)
    return np.array(flat)


def eltwise_kernel(y: np.ndarray, inputs: list[np.ndarray], program: list[tuple], threads: int,
                   isa: Isa | None = None, rtype: str = "f32", constant: Sequence[bool] = ()) -> BoundKernel | None:
    """A bound elementwise program writing ``y`` (contiguous innermost axis; f32, f64, i32,
    i64, u8 or bool).

    ``inputs`` are arrays broadcastable to ``y`` (read with the ``load*`` opcode of their
    dtype, :data:`LOAD_FOR`); ``program`` is a list of ``(op, dst, a, b, imm0, imm1)`` with
    ``op`` a name in :data:`OPCODES` (``load*``: register ``dst`` = input ``a``; ``store*``:
    ``y`` = register ``a``; ``select``: ``dst = a ? b : imm0``), run in registers of type
    ``rtype`` (``f32``, ``f64`` or ``i64``). None when the shapes do not fit the kernel (more
    than 4 collapsed dims, an input whose innermost stride is not 0 or 1)."""
    if len(inputs) > MAX_INPUTS or len(program) > MAX_INSTR:
        return None
    isa = isa or host_isa()
    lib = _eltwise_library(isa, rtype, any(op[0] in _EXTENDED_FOR[rtype] for op in program))
    if y.size == 0:  # nothing to compute (numpy gives empty arrays arbitrary strides)
        return BoundKernel(lib.address("eltwise_task"), ELTWISE_CONTEXT.new(), 0,
                           threads, (y, *inputs), layout=ELTWISE_CONTEXT)
    views = [np.broadcast_to(a, y.shape) for a in inputs]
    if any(s % v.itemsize for v in (y, *views) for s in v.strides):
        return None
    strides = [[s // y.itemsize for s in y.strides]] + [[s // v.itemsize for s in v.strides] for v in views]
    dims, st = _collapse_operands(y.shape, strides)
    if not dims:
        dims, st = [1], [[1] for _ in strides]
    if len(dims) > 4 or st[0][-1] != 1 or any(s[-1] not in (0, 1) for s in st[1:]):
        return None
    dims, st, views = _widen_rows(dims, st, views, constant or [False] * len(views))
    pad = 4 - len(dims)
    dims = [1] * pad + dims
    st = [[0] * pad + s for s in st]
    ctx = ELTWISE_CONTEXT.new()
    inner = dims[3]
    nrows = dims[0] * dims[1] * dims[2]
    target = 1 << 14
    if inner >= target:
        cb, rpt = target, 1
    else:
        cb, rpt = max(inner, 1), max(1, target // max(inner, 1))
    ncb = -(-inner // cb)
    want = 4 * threads
    if -(-nrows // rpt) * ncb < want and nrows * inner > 4096:
        if nrows >= want:
            rpt = -(-nrows // want)
        else:
            rpt = 1
            per = -(-inner * nrows // want)
            cb = max(BLOCK, -(-per // BLOCK) * BLOCK)
            ncb = -(-inner // cb)
    head = dict(y=y.ctypes.data, d0=dims[0], d1=dims[1], d2=dims[2], inner=inner, ys0=st[0][0], ys1=st[0][1],
                ys2=st[0][2], rpt=rpt, nrows=nrows, cb=cb, ncb=ncb, ninstr=len(program))
    for k, v in head.items():
        ctx[ELTWISE_CONTEXT[k]] = v
    for i, view in enumerate(views):
        base = EW_IN0 + i * EW_IN_WORDS
        ctx[base:base + EW_IN_WORDS] = [view.ctypes.data, st[i + 1][0], st[i + 1][1], st[i + 1][2], st[i + 1][3]]
    words = _program_words(tuple(program), rtype)
    ctx[EW_PROG0:EW_PROG0 + len(words)] = words
    n_tasks = -(-nrows // rpt) * ncb if y.size else 0
    address = lib.address("eltwise_task")
    if (rtype == "f32" and COMPILE_FROM is not None and inner < COMPILE_BELOW and y.size >= COMPILE_FROM
            and y.dtype == np.float32 and all(v.dtype == np.float32 for v in views)
            and all(s[3] in (0, 1) for s in st[1:]) and _compiled_ops_ok(program)):
        compiled = tuple((op, dst, a, b_, int(imm0) if op == "select" else 0) for op, dst, a, b_, imm0, _ in program)
        address = _program_library(isa, compiled, tuple(s[3] for s in st[1:])).address("eltwise_task")
    return BoundKernel(address, ctx, n_tasks, threads, (y, *inputs, *views), layout=ELTWISE_CONTEXT)
