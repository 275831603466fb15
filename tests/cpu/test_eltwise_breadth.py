"""Elementwise, logical, conversion and reduction breadth of the CPU device against REFERENCE:
one table per family (comparisons/logical/Select, activations, integer and f64 chains, Convert,
reductions, movement), with edge values (NaN, inf, -0.0, integer wrap, division by zero, empty
tensors, broadcasting, rank 0). Every case must run with no op on a reference kernel."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from native_case import native_case  # noqa: E402

import ember
import ember.opset as ops
from ember.graph.model import Model

RNG = np.random.default_rng(2026)
EDGE = np.array([0.0, -0.0, 1e-30, 0.5, -0.5, 1.5, -2.5, 2.5, 0.49999997, 1.0, -1.0, 3.0, 20.0, -30.0,
                 100.0, 1e10, -1e10, np.inf, -np.inf, np.nan], np.float32)
I32 = np.iinfo(np.int32)
I64 = np.iinfo(np.int64)


def _f(shape: tuple[int, ...], dtype=np.float32, edge: bool = True) -> np.ndarray:  # noqa: ANN001
    a = (RNG.standard_normal(shape) * 3).astype(dtype)
    if edge and a.size:
        flat = a.reshape(-1)
        k = min(flat.size, EDGE.size)
        flat[:k] = RNG.permutation(EDGE)[:k]
    return a


def _i(shape: tuple[int, ...], dtype=np.int32, lo: int = -20, hi: int = 20, edge: bool = True) -> np.ndarray:  # noqa: ANN001
    a = RNG.integers(lo, hi, shape).astype(dtype)
    if edge and a.size:
        info = np.iinfo(dtype)
        vals = np.array([0, 1, -1, info.max, info.min, 7, -7, info.max - 1, info.min + 1], dtype)
        flat = a.reshape(-1)
        k = min(flat.size, vals.size)
        flat[:k] = vals[:k]
    return a


def _b(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.integers(0, 2, shape).astype(np.bool_)


Case = tuple[Callable[..., object], list[np.ndarray]]


def _case(fn: Callable[..., object], *inputs: np.ndarray) -> Case:
    return fn, list(inputs)


def _check(fn: Callable[..., object], inputs: list[np.ndarray], rtol: float = 2e-6, strict: bool = False) -> None:
    """CPU against REFERENCE, with no op on a reference kernel (``strict``: no python step at
    all but the copies of model inputs)."""
    model, want, cm = native_case(fn, inputs)
    outs = model.outputs
    prog = cm._executable.program
    assert not prog.stats["fallbacks"], f"ran on reference kernels: {prog.stats['fallbacks']}"
    if strict:
        python = [op.type_name for op in prog.ops if not op.native and op.type_name != "InputCopy"]
        assert not python, f"python steps: {python}"
    got = cm(inputs)
    for k in range(len(outs)):
        g, w = got[k], want[k]
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        if w.dtype.kind != "f":
            np.testing.assert_array_equal(g, w)
            continue
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        inf = np.isinf(w)
        np.testing.assert_array_equal(g[inf], w[inf])
        fin = np.isfinite(w)
        np.testing.assert_allclose(g[fin], w[fin], rtol=rtol, atol=rtol)


# -- comparisons, logical ops, Select ---------------------------------------------------------
LOGIC: dict[str, Case] = {
    **{f"cmp-{name}": _case(getattr(ops, name), _f((3, 41)), _f((3, 41)))
       for name in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal")},
    "cmp-broadcast-scalar-const": _case(lambda a: ops.less(a, np.float32(0.5)), _f((2, 3, 17))),
    "cmp-nan-self": _case(lambda a: ops.equal(a, a), _f((41,))),
    "cmp-neg-zero": _case(lambda a: ops.equal(a, np.float32(-0.0)), np.array([0.0, -0.0, 1.0], np.float32)),
    "logical-and-or-xor-not": _case(lambda a, b: ops.logical_xor(ops.logical_not(ops.logical_and(a, b)),
                                                                 ops.logical_or(a, b)), _b((4, 33)), _b((1, 33))),
    "select-from-compare": _case(lambda a, b: ops.select(ops.greater(a, b), a, ops.multiply(b, np.float32(2))),
                                 _f((3, 37)), _f((3, 37))),
    "select-broadcast-cond": _case(lambda c, a, b: ops.select(c, a, b), _b((1, 19)), _f((4, 19)), _f((4, 1))),
    "select-chain-cond-const-branches": _case(
        lambda a: ops.select(ops.is_nan(a), np.float32(0.0), ops.relu(a)), _f((5, 20))),
    "select-bool-branches": _case(lambda c, a, b: ops.select(c, a, b), _b((33,)), _b((33,)), _b((33,))),
    "select-int64": _case(lambda c, a, b: ops.select(c, a, b), _b((2, 9)), _i((2, 9), np.int64), _i((9,), np.int64)),
    "select-rank0": _case(lambda c, a, b: ops.select(c, a, b), _b(()), _f(()), _f(())),
    "select-empty": _case(lambda c, a, b: ops.select(c, a, b), _b((0, 3)), _f((0, 3)), _f((1, 3))),
    "isnan-isinf-isfinite": _case(lambda a: [ops.is_nan(a), ops.is_inf(a), ops.is_finite(a),
                                             ops.is_inf(a, {"detect_negative": False}),
                                             ops.is_inf(a, {"detect_positive": False})], _f((2, 21))),
    "mask-to-float": _case(lambda a: ops.multiply(ops.convert(ops.greater(a, np.float32(0)), "f32"), a), _f((50,))),
    "int-compare-then-float-select": _case(
        lambda i, a: ops.select(ops.less(i, np.int64(3)), a, np.float32(-1e9)), _i((2, 1, 7), np.int64),
        _f((2, 5, 7))),
}

# -- activations and float ops ----------------------------------------------------------------
ACTIVATIONS: dict[str, Case] = {
    "sign": _case(ops.sign, _f((3, 41))),
    "softsign": _case(ops.softsign, _f((3, 41))),
    "selu": _case(lambda a: ops.selu(a, np.array([1.6732632], np.float32), np.array([1.0507], np.float32)),
                  _f((3, 41))),
    "hard-sigmoid": _case(lambda a: ops.hard_sigmoid(a, np.float32(0.2), np.float32(0.5)), _f((3, 41))),
    "round-half-even": _case(lambda a: ops.round(a, mode="half_to_even"), _f((3, 41))),
    "round-half-away": _case(lambda a: ops.round(a, mode="half_away_from_zero"), _f((3, 41))),
    "leaky-relu-scalar-prelu": _case(lambda a: ops.prelu(a, np.array([0.1], np.float32)), _f((2, 5, 7))),
    "mod": _case(ops.mod, _f((3, 41)), _f((3, 41))),
    "floor-mod": _case(ops.floor_mod, _f((3, 41)), _f((41,))),
    "floor-mod-by-zero": _case(ops.floor_mod, _f((8,)), np.zeros(8, np.float32)),
    "div-by-zero": _case(ops.divide, _f((20,)), np.array([0.0, -0.0] * 10, np.float32)),
    "sin-cos": _case(lambda a: [ops.sin(a), ops.cos(a)], _f((4, 50))),
    "sin-cos-large-args": _case(lambda a: [ops.sin(a), ops.cos(a)],
                                np.linspace(-3000, 3000, 999).astype(np.float32)),
    "tan-atan-sinh-cosh": _case(lambda a: [ops.tan(a), ops.atan(a), ops.sinh(a), ops.cosh(a)], _f((4, 50))),
    "atan-wide-range": _case(ops.atan, np.concatenate([np.linspace(-50, 50, 301), [1e30, -1e30, 0.4142, 2.4142]])
                             .astype(np.float32)),
    "asin-acos-atanh": _case(lambda a: [ops.asin(a), ops.acos(a), ops.atanh(a)],
                             np.concatenate([np.linspace(-1, 1, 201), [1e-6, -3e-5, 0.2499, 0.2501, 0.4999, 0.5001,
                                                                       1.5, -2.0, np.nan]]).astype(np.float32)),
    "asinh-acosh": _case(lambda a: [ops.asinh(a), ops.acosh(ops.add(ops.absolute(a), np.float32(1.0)))],
                         np.concatenate([np.linspace(-30, 30, 301), [1e-7, 0.2499, 0.2501, 3e12, -3e12, np.inf]])
                         .astype(np.float32)),
    "rope-like-cos-sin": _case(lambda p: ops.multiply(ops.cos(ops.multiply(p, np.float32(0.01))), ops.sin(p)),
                               np.arange(256, dtype=np.float32).reshape(1, 256)),
    "pow-cube-const": _case(lambda a: ops.power(a, np.float32(3.0)), _f((3, 41))),
    "pow-int-exponents": _case(lambda a: [ops.power(a, np.float32(k)) for k in (0.0, 4.0, -2.0, -3.0)],
                               _f((2, 20), edge=False)),
    "pow-tensor": _case(ops.power, np.array([2.0, -2.0, -2.0, 0.0, -0.0, -0.0, 0.0, 1.0, np.nan, np.inf, -np.inf,
                                            -np.inf, 0.5, 3.0, np.nan, -8.0], np.float32),
                        np.array([3.0, 3.0, 0.5, -1.0, -1.0, 3.0, 0.0, np.nan, 0.0, -1.0, 3.0, 2.0, 2.5, -1.5,
                                  1.0, 1.0 / 3.0], np.float32)),
    "pow-base-broadcast": _case(lambda e: ops.power(np.float32(10000.0), e), np.linspace(-1, 0, 64).astype(np.float32)),
    "short-rows-const-vectors": _case(lambda a: ops.add(ops.multiply(a, _f((4,), edge=False)), _f((4,), edge=False)),
                                      _f((600, 4))),
    "short-rows-const-2d-and-scalar": _case(lambda a: ops.maximum(ops.multiply(a, _f((3, 2), edge=False)),
                                                                  np.float32(0.1)), _f((50, 3, 2))),
    "short-rows-prime-count": _case(lambda a: ops.multiply(a, _f((4,), edge=False)), _f((997, 4))),
    "short-rows-runtime-vector": _case(ops.multiply, _f((600, 4)), _f((4,))),
    "short-rows-per-row-scalar": _case(lambda a, b: ops.divide(ops.exp(a), b), _f((600, 4)), _f((600, 1))),
    "short-rows-per-row-scalar-3d-int64": _case(lambda a, b: ops.subtract(a, b), _i((40, 10, 3), np.int64),
                                                _i((40, 10, 1), np.int64)),
    "short-rows-scalar-and-const-vector": _case(
        lambda a, b: ops.select(ops.greater(a, b), ops.multiply(a, _f((2,), edge=False)), b), _f((300, 2)),
        _f((300, 1))),
    "short-rows-int64-bool-consts": _case(
        lambda a: ops.select(np.array([True, False, True], np.bool_), ops.add(a, np.array([1, 2, 3], np.int64)), a),
        _i((400, 3), np.int64)),
    "chain-many": _case(lambda a, b: ops.sign(ops.floor_mod(ops.softsign(ops.maximum(a, b)), np.float32(0.3))),
                        _f((4, 33)), _f((4, 33))),
}

def _trunc_div(a, b):  # noqa: ANN001, ANN202
    from ember.ops.elementwise import Divide

    return Divide([a, b], {"auto_broadcast": "numpy", "m_pythondiv": False})


# -- integers and f64 -------------------------------------------------------------------------
INTEGERS: dict[str, Case] = {}
for _dt in (np.int32, np.int64):
    _n = np.dtype(_dt).name
    INTEGERS.update({
        f"{_n}-add-sub-mul-wrap": _case(lambda a, b: ops.subtract(ops.multiply(ops.add(a, b), b), a),
                                        _i((3, 17), _dt), _i((3, 17), _dt)),
        f"{_n}-div-python": _case(ops.divide, _i((60,), _dt), _i((60,), _dt, -5, 5)),
        f"{_n}-div-trunc": _case(_trunc_div, _i((60,), _dt, -1000, 1000, edge=False), _i((60,), _dt, -5, 5)),
        f"{_n}-mod-floormod": _case(lambda a, b: [ops.mod(a, b), ops.floor_mod(a, b)], _i((60,), _dt),
                                    _i((60,), _dt, -5, 5)),
        f"{_n}-min-max-compare": _case(lambda a, b: [ops.maximum(a, b), ops.minimum(a, b), ops.less_equal(a, b)],
                                       _i((2, 30), _dt), _i((30,), _dt)),
        f"{_n}-neg-abs-sign-clamp": _case(lambda a: ops.clamp(ops.sign(ops.absolute(ops.negative(a))), -0.5, 100.7),
                                          _i((40,), _dt)),
        f"{_n}-broadcast-rank0": _case(lambda a, b: ops.add(a, b), _i((2, 3), _dt), _i((), _dt)),
    })
INTEGERS.update({
    "uint8-arith-compare-wrap": _case(
        lambda a, b: [ops.add(a, b), ops.subtract(a, b), ops.multiply(a, b), ops.divide(a, b), ops.equal(a, b),
                      ops.greater(a, np.uint8(200)), ops.maximum(a, b)],
        RNG.integers(0, 256, (3, 33)).astype(np.uint8), RNG.integers(0, 256, (33,)).astype(np.uint8)),
    "int8-arith-wrap-select": _case(
        lambda a, b, c: ops.select(c, ops.multiply(ops.add(a, b), np.int8(3)), ops.negative(a)),
        RNG.integers(-128, 128, (40,)).astype(np.int8), RNG.integers(-128, 128, (40,)).astype(np.int8), _b((40,))),
    "int8-to-uint8-chain": _case(lambda a: ops.add(ops.convert(a, "u8"), np.uint8(10)),
                                 RNG.integers(-128, 128, (50,)).astype(np.int8)),
    "bitwise-int-and-bool": _case(
        lambda a, b, c, d: [ops.bitwise_xor(ops.bitwise_and(a, b), ops.bitwise_or(a, ops.bitwise_not(b))),
                            ops.bitwise_not(ops.bitwise_and(c, d)), ops.bitwise_or(ops.bitwise_not(c), d)],
        _i((3, 17), np.int32), _i((17,), np.int32), _b((2, 9)), _b((2, 9))),
    "bitwise-u8-i64": _case(lambda a, b: [ops.bitwise_not(a), ops.bitwise_xor(ops.convert(a, "i64"), b)],
                            RNG.integers(0, 256, (40,)).astype(np.uint8), _i((40,), np.int64)),
    "int-floor-ceil-round-identity": _case(lambda a: [ops.floor(a), ops.ceiling(a), ops.round(a, mode="half_to_even")],
                                           _i((3, 7), np.int32)),
    "int32-min-div-minus-one": _case(ops.divide, np.array([I32.min, I32.max, 7], np.int32), np.full(3, -1, np.int32)),
    "int64-min-div-minus-one": _case(ops.divide, np.array([I64.min, 5, -5], np.int64), np.full(3, -1, np.int64)),
    "int-div-by-zero": _case(lambda a, b: [ops.divide(a, b), ops.mod(a, b), ops.floor_mod(a, b)],
                             _i((20,), np.int32), np.zeros(20, np.int32)),
    "int64-shape-glue": _case(lambda s: ops.multiply(ops.divide(ops.add(s, np.int64(1)), np.int64(2)), np.int64(3)),
                              np.array([1, 7, 224, 224], np.int64)),
    "f64-chain": _case(lambda a, b: ops.sqrt(ops.absolute(ops.add(ops.multiply(a, b), np.array(1e-300, np.float64)))),
                       _f((3, 33), np.float64), _f((3, 33), np.float64)),
    "f64-compare-select": _case(lambda a, b: ops.select(ops.greater(a, b), a, b), _f((40,), np.float64),
                                _f((40,), np.float64)),
    "f64-floor-ceil-round": _case(lambda a: [ops.floor(a), ops.ceiling(a), ops.round(a, mode="half_to_even")],
                                  _f((40,), np.float64)),
    "int64-div-mod-beyond-2^52": _case(
        lambda a, b: [ops.divide(a, b), ops.floor_mod(a, b), ops.mod(a, b), _trunc_div(a, b)],
        np.array([2**62, -2**62 + 1, 2**53 + 1, 9, I64.max, I64.min, -(2**60) - 3, 17], np.int64),
        np.array([3, -7, 2, 4, -3, 5, 2**40 + 1, -(2**55)], np.int64)),
    "empty-int": _case(ops.add, _i((0, 4), np.int64), _i((4,), np.int64)),
})

# -- Convert ----------------------------------------------------------------------------------
CONVERTS: dict[str, Case] = {
    **{f"convert-f32-{d}": _case(lambda a, d=d: ops.convert(a, d), _f((3, 41)))
       for d in ("i32", "i64", "u8", "boolean", "f64")},
    **{f"convert-i64-{d}": _case(lambda a, d=d: ops.convert(a, d), _i((3, 41), np.int64))
       for d in ("i32", "f32", "f64", "boolean", "u8")},
    **{f"convert-i32-{d}": _case(lambda a, d=d: ops.convert(a, d), _i((3, 41), np.int32)) for d in ("i64", "f32")},
    "convert-saturating-edges": _case(
        lambda a: [ops.convert(a, "i64"), ops.convert(a, "i32"), ops.convert(a, "u8")],
        np.array([1e19, -1e19, 9.2233715e18, -9.2233715e18, 2147483520.0, 2147483648.0, -2147483648.0, 255.9,
                  256.0, -0.9, -1.0, np.nan, np.inf, -np.inf], np.float32)),
    "convert-f64-i32-edges": _case(lambda a: ops.convert(a, "i32"),
                                   np.array([2147483647.9, 2147483648.0, -2147483648.9, -2147483649.0, np.nan], np.float64)),
    "convert-narrow-ints-wrap": _case(
        lambda a: [ops.convert(ops.convert(a, "u8"), "f32"), ops.convert(ops.convert(a, "i8"), "i32"),
                   ops.convert(ops.convert(a, "i16"), "f32"), ops.convert(a, "i8")],
        np.array([0, 1, -1, 127, 128, 255, 256, -129, 40000, -40000, 2**40 + 7], np.int64)),
    "convert-float-to-narrow-saturates": _case(
        lambda a: [ops.convert(a, "i8"), ops.convert(a, "i16"), ops.convert(ops.convert(a, "i8"), "f32")],
        np.array([0.5, -0.5, 127.9, 128.0, -128.9, -129.0, 1e6, -1e6, np.nan, np.inf, -np.inf], np.float32)),
    "convert-i8-input-to-f32": _case(lambda a: ops.multiply(ops.convert(a, "f32"), np.float32(0.5)),
                                     RNG.integers(-128, 128, (3, 20)).astype(np.int8)),
    "convert-u8-to-i8-wraps": _case(lambda a: ops.convert(a, "i8"), np.arange(0, 256, 5, dtype=np.uint8)),
    "convert-bool-i64": _case(lambda a: ops.convert(a, "i64"), _b((2, 19))),
    "convert-f64-f32": _case(lambda a: ops.convert(a, "f32"), _f((40,), np.float64)),
    "convert-in-int-chain": _case(lambda a, b: ops.add(ops.convert(a, "i64"), b), _i((30,), np.int32),
                                  _i((30,), np.int64)),
    "convert-float-chain-to-int": _case(lambda a: ops.convert(ops.floor(ops.multiply(a, np.float32(10))), "i32"),
                                        _f((50,))),
    "convert-int-arith-to-float": _case(lambda a, b: ops.convert(ops.add(a, b), "f32"), _i((30,), np.int64),
                                        _i((30,), np.int64)),
    "convert-f32-i64-then-int-math": _case(lambda a: ops.add(ops.convert(a, "i64"), np.int64(5)),
                                           _f((30,), edge=False)),
}

TABLES = {**LOGIC, **ACTIVATIONS, **INTEGERS, **CONVERTS}


@pytest.mark.parametrize("name", list(TABLES))
def test_eltwise_matches_reference(name: str) -> None:
    fn, inputs = TABLES[name]
    _check(fn, inputs)


# -- reductions -------------------------------------------------------------------------------
def _red(op: str, shape: tuple[int, ...], axes: list[int], keep: bool = False, edge: bool = False,
         positive: bool = False) -> Case:
    x = _f(shape, edge=edge)
    if positive:
        x = np.abs(x) * np.float32(0.3) + np.float32(0.8)
    return _case(lambda a: getattr(ops, op)(a, np.array(axes, np.int64), keep), x)


REDUCTIONS: dict[str, Case] = {
    "max-inner-3": _red("reduce_max", (64, 100, 3), [-1]),
    "max-inner-3-nan-inf": _red("reduce_max", (7, 11, 3), [2], edge=True),
    "min-inner-3-keep": _red("reduce_min", (5, 33, 3), [-1], keep=True, edge=True),
    "sum-inner-2": _red("reduce_sum", (37, 2), [1]),
    "mean-inner-5-odd-rows": _red("reduce_mean", (3, 23, 5), [2]),
    "max-inner-16": _red("reduce_max", (9, 16), [1]),
    "max-inner-17": _red("reduce_max", (9, 17), [1], edge=True),
    "sum-inner-1000": _red("reduce_sum", (4, 1000), [1]),
    "prod-inner-4": _red("reduce_prod", (6, 7, 4), [-1], positive=True),
    "prod-middle": _red("reduce_prod", (3, 5, 9), [1], positive=True),
    "l1-inner-3": _red("reduce_l1", (8, 9, 3), [2]),
    "l2-inner-3": _red("reduce_l2", (8, 9, 3), [2]),
    "l2-all": _red("reduce_l2", (4, 5, 6), [0, 1, 2], keep=True),
    "l1-middle-keep": _red("reduce_l1", (4, 5, 6), [1], keep=True),
    "mean-axes-0-2": _red("reduce_mean", (4, 5, 6), [0, 2]),
    "sum-axes-1-3": _red("reduce_sum", (2, 3, 4, 5), [1, 3], keep=True),
    "l2-axes-0-2": _red("reduce_l2", (3, 4, 5), [0, -1]),
    "max-axes-0-2-nan": _red("reduce_max", (3, 4, 5), [0, 2], edge=True),
    "min-axes-0-2-4": _red("reduce_min", (2, 3, 2, 3, 4), [0, 2, 4]),
    "mean-axis-0": _red("reduce_mean", (7, 3, 5), [0]),
    "sum-rank1": _red("reduce_sum", (29,), [0]),
    "mean-empty-axis": _red("reduce_mean", (3, 0, 4), [1]),
    "prod-empty-axis": _red("reduce_prod", (3, 0), [1], keep=True),
    "sum-empty-outer": _red("reduce_sum", (0, 3), [1]),
    **{f"{op}-int{bits}-{name}": _case(lambda a, op=op, axes=axes: getattr(ops, op)(a, np.array(axes, np.int64), False),
                                      _i(shape, np.int32 if bits == 32 else np.int64, -9, 9, edge=op != "reduce_prod"))
       for op in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_l1") for bits in (32, 64)
       for name, shape, axes in (("inner3", (11, 3), [1]), ("axes02", (3, 4, 5), [0, 2]), ("rows", (4, 37), [1]))},
    "int32-sum-wraps": _case(lambda a: ops.reduce_sum(a, np.array([0], np.int64), False),
                             np.array([I32.max, 5, I32.max, -3], np.int32)),
    "int64-max-empty-axis": _case(lambda a: ops.reduce_max(a, np.array([1], np.int64), False), _i((3, 0), np.int64)),
    "normalize-l2-last-max": _case(lambda a: ops.normalize_l2(a, np.array([-1], np.int64), 1e-12, "max"),
                                   _f((2, 7, 384), edge=False)),
    "normalize-l2-channels-add": _case(lambda a: ops.normalize_l2(a, np.array([1], np.int64), 1e-3, "add"),
                                       _f((2, 5, 3, 4), edge=False)),
    "normalize-l2-axes-1-3-zeros": _case(lambda a: ops.normalize_l2(a, np.array([1, 3], np.int64), 1e-6, "max"),
                                         np.concatenate([np.zeros((1, 3, 2, 4), np.float32),
                                                         _f((1, 3, 2, 4), edge=False)])),
    "mean-max-over-nhwc-channels": _case(lambda a: (lambda y: [
        ops.reduce_mean(y, np.array([1], np.int64), True), ops.reduce_max(y, np.array([-3], np.int64), False),
        ops.reduce_l2(y, np.array([1], np.int64), True)])(ops.convolution(
            a, (RNG.standard_normal((19, 3, 3, 3)) * 0.3).astype(np.float32), [1, 1], [1, 1], [1, 1], [1, 1])),
        _f((2, 3, 5, 6), edge=False)),
    "logical-and-inner": _case(lambda a: ops.reduce_logical_and(a, np.array([-1], np.int64), False), _b((9, 3))),
    "logical-or-axes-0-2-keep": _case(lambda a: ops.reduce_logical_or(a, np.array([0, 2], np.int64), True),
                                      _b((3, 4, 5))),
    "logical-and-all-true": _case(lambda a: ops.reduce_logical_and(a, np.array([1], np.int64), False),
                                  np.ones((4, 7), np.bool_)),
    "logical-or-empty-axis": _case(lambda a: ops.reduce_logical_or(a, np.array([1], np.int64), False),
                                   np.zeros((3, 0), np.bool_)),
    "logical-and-empty-axis": _case(lambda a: ops.reduce_logical_and(a, np.array([1], np.int64), False),
                                    np.zeros((3, 0), np.bool_)),
}


@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reduction_matches_reference(name: str) -> None:
    fn, inputs = REDUCTIONS[name]
    _check(fn, inputs, rtol=2e-5)


# -- movement: transposes of any rank, slices, splits, concat of 8-byte items ------------------
def _relu_then(fn: Callable[..., object]) -> Callable[..., object]:
    return lambda a: ops.relu(fn(ops.relu(a)))


def _i64_then(fn: Callable[..., object]) -> Callable[..., object]:
    return lambda a: ops.multiply(fn(ops.add(a, np.int64(1))), np.int64(3))


def _slice(start: list[int], stop: list[int], step: list[int], axes: list[int]) -> Callable[..., object]:
    return lambda a: ops.slice(a, np.array(start, np.int64), np.array(stop, np.int64), np.array(step, np.int64),
                               np.array(axes, np.int64))


MOVEMENT: dict[str, Case] = {
    "transpose-7d": _case(_relu_then(lambda a: ops.transpose(a, np.array([6, 5, 4, 3, 2, 1, 0]))),
                          _f((2, 3, 2, 3, 2, 3, 2))),
    "transpose-8d-odd": _case(_relu_then(lambda a: ops.transpose(a, np.array([1, 3, 5, 7, 0, 2, 4, 6]))),
                              _f((2, 1, 3, 2, 2, 3, 1, 2))),
    "transpose-5d": _case(_relu_then(lambda a: ops.transpose(a, np.array([0, 3, 1, 4, 2]))), _f((2, 3, 5, 4, 3))),
    "transpose-int64": _case(_i64_then(lambda a: ops.transpose(a, np.array([2, 0, 1]))),
                             _i((3, 4, 5), np.int64)),
    "transpose-f64": _case(lambda a: ops.sqrt(ops.absolute(ops.transpose(ops.negative(a), np.array([1, 0])))),
                           _f((7, 9), np.float64)),
    "slice-negative-step": _case(_relu_then(_slice([-1], [-100], [-2], [1])), _f((3, 9))),
    "slice-negative-steps-2-axes": _case(_relu_then(_slice([-1, 7], [-100, 0], [-1, -3], [0, 2])), _f((4, 3, 9))),
    "slice-int64-step": _case(_i64_then(_slice([1], [9], [3], [0])), _i((10, 2), np.int64)),
    "slice-model-input": _case(lambda a: ops.relu(_slice([1], [3], [1], [0])(a)), _f((4, 5))),
    "strided-slice-masks": _case(_relu_then(lambda a: ops.strided_slice(
        a, np.array([0, 1, 0], np.int64), np.array([0, 4, 0], np.int64), np.array([1, 2, 1], np.int64),
        [1, 0, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0])), _f((2, 5, 3))),
    "strided-slice-shrink-ellipsis": _case(_relu_then(lambda a: ops.strided_slice(
        a, np.array([0, 2], np.int64), np.array([0, 3], np.int64), np.array([1, 1], np.int64),
        [0, 0], [0, 0], [0, 0], [0, 1], [1, 0])), _f((2, 3, 4, 5))),
    "split-int64-middle": _case(lambda a: [ops.multiply(o, np.int64(2)) for o in
                                           ops.split(ops.add(a, np.int64(1)), np.int64(1), 2).outputs()],
                                _i((3, 4, 5), np.int64)),
    "variadic-split-negative-axis": _case(lambda a: [ops.relu(o) for o in ops.variadic_split(
        ops.relu(a), np.int64(-1), np.array([1, 4, -1], np.int64)).outputs()], _f((3, 2, 9))),
    "transpose-u8-image-then-convert": _case(
        lambda a: ops.multiply(ops.convert(ops.transpose(a, np.array([0, 3, 1, 2])), "f32"), np.float32(1 / 255)),
        RNG.integers(0, 256, (1, 7, 9, 3)).astype(np.uint8)),
    "transpose-bool-then-select": _case(
        lambda c, a: ops.select(ops.transpose(ops.logical_not(c), np.array([1, 0])), a, np.float32(0.0)),
        _b((5, 33)), _f((33, 5))),
    "slice-bool-negative-step": _case(lambda c: ops.logical_not(_slice([-1], [-100], [-2], [0])(ops.logical_not(c))),
                                      _b((9, 4))),
    "concat-bool-u8": _case(lambda a, b, u: [ops.logical_not(ops.concat([ops.logical_not(a), b], 1)),
                                             ops.concat([ops.transpose(u, np.array([1, 0])), u], 0)],
                            _b((3, 2)), _b((3, 5)), RNG.integers(0, 256, (4, 4)).astype(np.uint8)),
    "gather-bool-last-axis": _case(lambda c, i: ops.logical_not(ops.gather(ops.logical_not(c), i, np.int64(-1))),
                                   _b((3, 7)), np.array([[0, 6], [-1, 3]], np.int64)),
    "gather-u8-rows": _case(lambda a, i: ops.convert(ops.gather(a, i, np.int64(0)), "f32"),
                            RNG.integers(0, 256, (9, 3)).astype(np.uint8), np.array([8, 0, -2, 4], np.int32)),
    "gather-int16-odd": _case(lambda a, i: ops.convert(ops.gather(ops.convert(a, "i16"), i, np.int64(1)), "f32"),
                              _f((2, 5, 3), edge=False) * 100, np.array([4, 1, 1], np.int64)),
    "slice-large-input-negative-step": _case(
        _relu_then(_slice([-1, 2], [-10**9, 300], [-2, 3], [1, 2])), _f((2, 40, 300, 180), edge=False)),
    "split-large-input": _case(lambda a: [ops.relu(o) for o in ops.split(ops.relu(a), np.int64(1), 2).outputs()],
                               _f((1, 64, 260, 260), edge=False)),
    "concat-int64": _case(lambda a, b: ops.multiply(ops.concat([ops.add(a, np.int64(1)), b, np.zeros((2, 1), np.int64)],
                                                               1), np.int64(2)),
                          _i((2, 3), np.int64), _i((2, 4), np.int64)),
}


@pytest.mark.parametrize("name", list(MOVEMENT))
def test_movement_matches_reference(name: str) -> None:
    fn, inputs = MOVEMENT[name]
    _check(fn, inputs, strict=True)


# -- LRN --------------------------------------------------------------------------------------
def _lrn(shape: tuple[int, ...], axes: list[int], alpha: float, beta: float, bias: float, size: int,
         after_conv: bool = False) -> Case:
    def fn(a):  # noqa: ANN001, ANN202
        if after_conv:  # an NHWC tensor, as a convolution leaves it
            w = (RNG.standard_normal((shape[1], shape[1], 1, 1)) * 0.5).astype(np.float32)
            a = ops.convolution(a, w, [1, 1], [0, 0], [0, 0], [1, 1])
        return ops.lrn(a, np.array(axes, np.int64), alpha, beta, bias, size)
    return fn, [_f(shape, edge=False)]


LRNS: dict[str, Case] = {
    "lrn-channels-alexnet": _lrn((2, 19, 5, 6), [1], 1e-4, 0.75, 1.0, 5),
    "lrn-channels-nhwc": _lrn((1, 21, 4, 5), [1], 2e-3, 0.75, 2.0, 5, after_conv=True),
    "lrn-channels-size-1": _lrn((1, 7, 3, 3), [1], 0.5, 0.5, 1.0, 1),
    "lrn-channels-even-size": _lrn((1, 9, 2, 17), [1], 0.1, 0.6, 1.5, 4),
    "lrn-last-axis": _lrn((3, 4, 23), [2], 0.3, 0.75, 1.0, 3),
    "lrn-rank2-wide-window": _lrn((5, 40), [1], 1.0, 1.2, 0.5, 11),
    "lrn-empty": _lrn((0, 5, 3, 3), [1], 1e-4, 0.75, 1.0, 5),
}


@pytest.mark.parametrize("name", list(LRNS))
def test_lrn_matches_reference(name: str) -> None:
    fn, inputs = LRNS[name]
    _check(fn, inputs, rtol=2e-5)


def test_sub_byte_converts_keep_their_ranges() -> None:
    """u4 values live unpacked in u8 arrays: Convert to u4 must clip to 0..15, which the u8
    store would not; such converts stay on their reference kernels and agree with REFERENCE."""
    x = ops.parameter([8], np.float32, name="x")
    model = Model([ops.add(ops.convert(ops.convert(x, "u4"), "f32"), np.float32(1.0))], [x], "u4")
    a = np.array([-3, 0, 3.7, 15, 16, 100, np.nan, 7], np.float32)
    cm = ember.Core().compile_model(model, "CPU")
    assert cm._executable.program.stats["fallbacks"].get("Convert")
    np.testing.assert_array_equal(cm([a])[0], ember.Core().compile_model(model, "REFERENCE")([a])[0])


def test_constant_only_elementwise_nodes_become_plan_constants() -> None:
    """A Convert of an f16 constant the optimizer keeps (decompression) is computed once at
    lowering: no step runs for it, and its value is the converted constant."""
    from ember.devices.cpu.llvm.isa import host_isa
    from ember.devices.cpu.lowering.driver import Lowering

    w = RNG.standard_normal(8).astype(np.float16)
    x = ops.parameter([2, 8], np.float32, name="x")
    cv = ops.convert(w, "f32")
    cv.rt_info["decompression"] = ""
    program = Lowering(Model([ops.multiply(x, cv)], [x], "fold"), 1, host_isa()).run()
    assert not program.stats["fallbacks"]
    assert not any(op.type_name.startswith("Convert") or "Convert" in op.type_name for op in program.ops)
    consts = [t.data for t in program.tensors if t.kind == "const" and t.data is not None and t.data.dtype == np.float32]
    assert any(c.size == 8 and np.array_equal(c.reshape(-1), w.astype(np.float32)) for c in consts)


def test_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/eltwise_breadth.py runs one case end to end and ember agrees with ONNX Runtime."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "eltwise_breadth.py"
    spec = importlib.util.spec_from_file_location("eltwise_breadth", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--time", "0.01", "--cases", "reducemax"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| reducemax")]
    assert row and "| yes |" in row[0] and row[0].endswith("| none |")
