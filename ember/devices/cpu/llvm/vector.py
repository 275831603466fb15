"""Vector helpers every kernel family shares: lane masks, masked loads and stores, stack
buffers, fused multiply-add, horizontal reductions and f32 math approximations
(:class:`VectorMath`: exp, log, tanh, erf, sigmoid, softplus as polynomials, no libm calls)."""

from __future__ import annotations

import math

from llvmlite import ir

from ember.devices.cpu.llvm.codegen import F32, I8, I32, I64, PTR, VOID, Emitter, c32, c64, vec


def fmuladd(e: Emitter, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
    t = a.type
    return e.call(f"llvm.fmuladd.v{t.count}f32", t, [a, b, c])


def lane_mask(e: Emitter, count: ir.Value, lanes: int) -> ir.Value:
    """<lanes x i1> with the first ``count`` lanes set (count may be <= 0 or > lanes)."""
    idx = ir.Constant(vec(I64, lanes), list(range(lanes)))
    return e.b.icmp_signed("<", idx, e.splat(count, lanes))


def masked_load(e: Emitter, vt: ir.VectorType, ptr: ir.Value, mask: ir.Value | None) -> ir.Value:
    if mask is None:
        return e.load(vt, ptr, align=4)
    return e.call(f"llvm.masked.load.v{vt.count}f32.p0", vt, [ptr, c32(4), mask, ir.Constant(vt, None)])


def masked_store(e: Emitter, v: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
    if mask is None:
        e.b.store(v, ptr, align=4)
    else:
        e.call(f"llvm.masked.store.v{v.type.count}f32.p0", VOID, [v, ptr, c32(4), mask])


def aligned_alloca(e: Emitter, typ: ir.Type, count: ir.Value, align: int = 64) -> ir.Value:
    """A stack buffer of ``count`` elements starting on an ``align``-byte boundary."""
    b = e.b
    size = typ.width // 8 if isinstance(typ, ir.IntType) else 4
    raw = b.alloca(I8, size=b.add(b.mul(count, c64(size)), c64(align)))
    addr = b.ptrtoint(raw, I64)
    return b.inttoptr(b.and_(b.add(addr, c64(align - 1)), c64(-align)), PTR)


def vector_addresses(e: Emitter, base: ir.Value, index: ir.Value, lanes: int) -> ir.Value:
    """<lanes x ptr> of ``base + 4 * index`` (built from integers: llvmlite has no vector GEP)."""
    b = e.b
    addr = b.add(e.splat(b.ptrtoint(base, I64), lanes), b.mul(index, e.splat(c64(4), lanes)))
    return b.inttoptr(addr, vec(PTR, lanes))


def hsum(e: Emitter, v: ir.Value, lanes: int) -> ir.Value:
    b = e.b
    s = b.extract_element(v, ir.Constant(ir.IntType(32), 0))
    for i in range(1, lanes):
        s = b.fadd(s, b.extract_element(v, ir.Constant(ir.IntType(32), i)))
    return s


def hmax(e: Emitter, v: ir.Value, lanes: int) -> ir.Value:
    b = e.b
    s = b.extract_element(v, ir.Constant(ir.IntType(32), 0))
    for i in range(1, lanes):
        x = b.extract_element(v, ir.Constant(ir.IntType(32), i))
        s = b.select(b.fcmp_ordered(">", x, s), x, s)
    return s


def vmax(b: ir.IRBuilder, acc: ir.Value, x: ir.Value) -> ir.Value:
    return b.select(b.fcmp_ordered(">", x, acc), x, acc)


def vmin(b: ir.IRBuilder, acc: ir.Value, x: ir.Value) -> ir.Value:
    return b.select(b.fcmp_ordered("<", x, acc), x, acc)


class VectorMath:
    """Vector math in LLVM IR for ``lanes`` x f32 (polynomials; no libm calls)."""

    def __init__(self, e: Emitter, lanes: int):
        self.e, self.b, self.lanes = e, e.b, lanes
        self.vt = vec(F32, lanes)
        self.vi = vec(I32, lanes)

    def c(self, x: float) -> ir.Constant:
        return ir.Constant(self.vt, [float(x)] * self.lanes)

    def ci(self, x: int) -> ir.Constant:
        return ir.Constant(self.vi, [int(x)] * self.lanes)

    def poly(self, x: ir.Value, coeffs: list[float]) -> ir.Value:
        """coeffs[0] * x^n + ... + coeffs[n] (Horner)."""
        acc = self.c(coeffs[0])
        for k in coeffs[1:]:
            acc = fmuladd(self.e, acc, x, self.c(k))
        return acc

    def sel(self, cond: ir.Value, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.select(cond, a, c)

    def lt(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.fcmp_ordered("<", a, c)

    def gt(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.fcmp_ordered(">", a, c)

    def isnan(self, a: ir.Value) -> ir.Value:
        return self.b.fcmp_unordered("uno", a, a)

    def abs(self, x: ir.Value) -> ir.Value:
        return self.e.call(f"llvm.fabs.v{self.lanes}f32", self.vt, [x])

    def floor(self, x: ir.Value) -> ir.Value:
        return self.e.call(f"llvm.floor.v{self.lanes}f32", self.vt, [x])

    def ceil(self, x: ir.Value) -> ir.Value:
        return self.e.call(f"llvm.ceil.v{self.lanes}f32", self.vt, [x])

    def sqrt(self, x: ir.Value) -> ir.Value:
        return self.e.call(f"llvm.sqrt.v{self.lanes}f32", self.vt, [x])

    def copysign(self, mag: ir.Value, sign: ir.Value) -> ir.Value:
        b = self.b
        bits = b.or_(b.and_(b.bitcast(mag, self.vi), self.ci(0x7FFFFFFF)),
                     b.and_(b.bitcast(sign, self.vi), self.ci(-0x80000000)))
        return b.bitcast(bits, self.vt)

    def exp(self, x: ir.Value, subnormal: bool = False, nonpositive: bool = False) -> ir.Value:
        """e**x in f32. Results below the smallest normal float are 0 unless ``subnormal``
        (numpy's subnormal results, for Power; off in the hot paths: arithmetic on subnormals
        takes a microcode assist, and softmax/GELU/sigmoid tails would produce them).
        ``nonpositive``: the caller knows ``x <= 0`` or NaN (softmax's ``x - max``), so the
        overflow clamp and the infinity test are left out."""
        b = self.b
        low = -103.972084 if subnormal else -87.33654
        xc = self.sel(self.lt(x, self.c(low)), self.c(low), x)
        if not nonpositive:
            xc = self.sel(self.gt(xc, self.c(88.72283)), self.c(88.72283), xc)
        k = self.floor(fmuladd(self.e, xc, self.c(1.4426950408889634), self.c(0.5)))
        r = fmuladd(self.e, k, self.c(-0.693359375), xc)
        r = fmuladd(self.e, k, self.c(2.12194440e-4), r)
        p = self.poly(r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                          1.6666665459e-1, 5.0000001201e-1])
        p = fmuladd(self.e, p, b.fmul(r, r), b.fadd(r, self.c(1.0)))
        ki = b.fptosi(k, self.vi)
        if subnormal:  # 2**k as two normal factors, so that k below -126 still scales
            k1 = b.ashr(ki, self.ci(1))
            k2 = b.sub(ki, k1)
            scale1 = b.bitcast(b.shl(b.add(k1, self.ci(127)), self.ci(23)), self.vt)
            scale2 = b.bitcast(b.shl(b.add(k2, self.ci(127)), self.ci(23)), self.vt)
            y = b.fmul(b.fmul(p, scale1), scale2)
        else:
            y = b.fmul(p, b.bitcast(b.shl(b.add(ki, self.ci(127)), self.ci(23)), self.vt))
        if not nonpositive:
            y = self.sel(self.gt(x, self.c(88.72283)), self.c(math.inf), y)
        y = self.sel(self.lt(x, self.c(low)), self.c(0.0), y)
        return self.sel(self.isnan(x), x, y)

    def log(self, x: ir.Value) -> ir.Value:
        """The natural logarithm in f32, subnormal inputs included."""
        b = self.b
        tiny = b.fcmp_ordered("<", self.abs(x), self.c(1.1754943508222875e-38))  # subnormal: scale by 2**25 first
        xs = self.sel(tiny, b.fmul(x, self.c(33554432.0)), x)
        bits = b.bitcast(xs, self.vi)
        e_ = b.sub(b.and_(b.lshr(bits, self.ci(23)), self.ci(0xFF)), self.sel(tiny, self.ci(151), self.ci(126)))
        m = b.bitcast(b.or_(b.and_(bits, self.ci(0x007FFFFF)), self.ci(0x3F000000)), self.vt)
        ef = b.sitofp(e_, self.vt)
        small = self.lt(m, self.c(0.707106781186547524))
        ef = self.sel(small, b.fsub(ef, self.c(1.0)), ef)
        m = self.sel(small, b.fsub(b.fadd(m, m), self.c(1.0)), b.fsub(m, self.c(1.0)))
        z = b.fmul(m, m)
        y = self.poly(m, [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                          3.3333331174e-1])
        y = b.fmul(b.fmul(y, m), z)
        y = fmuladd(self.e, ef, self.c(-2.12194440e-4), y)
        y = fmuladd(self.e, z, self.c(-0.5), y)
        r = b.fadd(m, y)
        r = fmuladd(self.e, ef, self.c(0.693359375), r)
        r = self.sel(b.fcmp_ordered("==", x, self.c(0.0)), self.c(-math.inf), r)
        r = self.sel(self.lt(x, self.c(0.0)), self.c(math.nan), r)
        r = self.sel(b.fcmp_ordered("==", x, self.c(math.inf)), x, r)
        return self.sel(self.isnan(x), x, r)

    def sigmoid(self, x: ir.Value) -> ir.Value:
        b = self.b
        return b.fdiv(self.c(1.0), b.fadd(self.c(1.0), self.exp(b.fneg(x))))

    def tanh(self, x: ir.Value) -> ir.Value:
        b = self.b
        a = self.abs(x)
        big = b.fsub(self.c(1.0), b.fdiv(self.c(2.0), b.fadd(self.exp(b.fadd(a, a)), self.c(1.0))))
        x2 = b.fmul(x, x)
        small = b.fmul(x, self.poly(x2, [-1382 / 155925, 62 / 2835, -17 / 315, 2 / 15, -1 / 3, 1.0]))
        return self.sel(self.lt(a, self.c(0.4)), small, self.copysign(big, x))

    def erf(self, x: ir.Value) -> ir.Value:
        b = self.b
        a = self.abs(x)
        t = b.fdiv(self.c(1.0), fmuladd(self.e, a, self.c(0.3275911), self.c(1.0)))
        p = b.fmul(t, self.poly(t, [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592]))
        big = b.fsub(self.c(1.0), b.fmul(p, self.exp(b.fneg(b.fmul(a, a)))))
        x2 = b.fmul(x, x)
        c = 2 / math.sqrt(math.pi)
        small = b.fmul(x, self.poly(x2, [-c / 1320, c / 216, -c / 42, c / 10, -c / 3, c]))
        return self.sel(self.lt(a, self.c(0.5)), small, self.copysign(big, x))

    def softplus(self, x: ir.Value) -> ir.Value:
        b = self.b
        y = self.log(b.fadd(self.c(1.0), self.exp(x)))
        return self.sel(self.gt(x, self.c(20.0)), x, y)
