"""Every op of ember/ops/elementwise.py against real OpenVINO (and numpy where OpenVINO's CPU
plugin cannot run a case), from tables: broadcasting modes, size-1 and empty dimensions,
negative/zero/NaN/inf values, integer and boolean types."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ember.opset as eo  # noqa: E402
from ember.errors import ShapeInferenceError  # noqa: E402
from ember.graph.shape import PartialShape  # noqa: E402
from oracle import Const, compare_with_openvino, run_ember  # noqa: E402

ov = pytest.importorskip("openvino")
oo = pytest.importorskip("openvino.opset16")

SPECIAL = np.array([-np.inf, -3.5, -2.5, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 1.5, 2.5, 3.0, np.inf, np.nan], np.float32)
INTS = np.array([-7, -3, -2, -1, 0, 1, 2, 3, 7], np.int32)


def _rand(shape: tuple, dtype: Any = np.float32, seed: int = 0, lo: int = -6, hi: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(lo, info.min), min(hi, info.max), size=shape).astype(dtype)
    return (rng.standard_normal(shape) * 2).astype(dtype)


def reference(op: str, arrays: list[np.ndarray], **kw: Any) -> np.ndarray | None:
    """OpenVINO's own reference kernel (``Node.evaluate``), None where it has none for the case.

    Used where the CPU plugin departs from the op's specification: NaN and inf handling, integer
    Divide (the CPU plugin truncates although ``m_pythondiv`` asks for floor division)."""
    params = [oo.parameter(list(a.shape), a.dtype) for a in arrays]
    node = getattr(oo, op)(*params, **kw)
    shape = [d.get_length() for d in node.get_output_partial_shape(0)]
    out = ov.Tensor(np.zeros(shape, node.get_output_element_type(0).to_dtype()))
    try:
        ok = node.evaluate([out], [ov.Tensor(np.ascontiguousarray(a)) for a in arrays])
    except Exception:  # noqa: BLE001 - the reference kernel refuses the case
        return None
    return np.array(out.data, copy=True) if ok else None


def check(op: str, arrays: list[np.ndarray], kw: dict, tol: float, spec: bool) -> None:
    """Compare with OpenVINO: its reference kernel when ``spec`` (falling back to the CPU
    plugin where there is none), else the CPU plugin."""
    if spec:
        theirs = reference(op, arrays, **kw)
        if theirs is not None:
            ours = run_ember(op, arrays, **kw)[0]
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
            if ours.dtype.kind == "b":
                np.testing.assert_array_equal(ours, theirs)
            else:
                np.testing.assert_allclose(ours.astype(np.float64), theirs.astype(np.float64), rtol=tol, atol=tol,
                                           equal_nan=True)
            return
    compare_with_openvino(op, arrays, rtol=tol, atol=tol, **kw)


ARITH = ["add", "subtract", "multiply", "divide", "maximum", "minimum", "squared_difference", "floor_mod", "mod",
         "power"]
COMPARE = ["equal", "not_equal", "greater", "greater_equal", "less", "less_equal"]
LOGICAL = ["logical_and", "logical_or", "logical_xor"]
BITWISE = ["bitwise_and", "bitwise_or", "bitwise_xor"]

BROADCAST_SHAPES = [
    ((2, 3, 4), (2, 3, 4)),
    ((2, 3, 4), (3, 1)),
    ((1, 3, 1), (2, 1, 4)),
    ((4,), (2, 3, 4)),
    ((), (2, 3)),
    ((2, 3), ()),
    ((1, 1), (1, 1)),
    ((0, 3), (1, 3)),
    ((2, 0, 3), (3,)),
]


def _binary_cases() -> list[tuple]:
    cases = []
    for op in ARITH + COMPARE:
        for i, (sa, sb) in enumerate(BROADCAST_SHAPES):
            a, b = _rand(sa, seed=i), _rand(sb, seed=100 + i)
            if op in ("power",):
                a = np.abs(a) + 0.1
            cases.append((f"{op}-f32-{sa}x{sb}", op, a, b, {}))
        # every pair of special values: NaN, +-inf, +-0
        cases.append((f"{op}-special", op, SPECIAL.reshape(-1, 1), SPECIAL.reshape(1, -1), {}))
        cases.append((f"{op}-none", op, _rand((2, 3), seed=1), _rand((2, 3), seed=2), {"auto_broadcast": "none"}))
        # OpenVINO's pdpd axis is 0 unless given: b lines up with a's leading axes
        cases.append((f"{op}-pdpd", op, _rand((2, 3, 4, 5), seed=3), _rand((2, 3), seed=4), {"auto_broadcast": "pdpd"}))
        cases.append((f"{op}-pdpd-ones", op, _rand((2, 3, 4, 5), seed=5), _rand((1, 3, 1), seed=6),
                      {"auto_broadcast": "pdpd"}))
        cases.append((f"{op}-pdpd-same", op, _rand((2, 3), seed=5), _rand((2, 3), seed=6), {"auto_broadcast": "pdpd"}))
        for dt in (np.int32, np.int64, np.int8, np.uint8):
            if op == "divide" and dt == np.int8:
                continue  # no reference kernel for i8 Divide and the CPU plugin truncates: numpy below
            a, b = _rand((3, 4), dt, seed=7), _rand((4,), dt, seed=8)
            if op in ("divide", "floor_mod", "mod"):
                b = np.where(b == 0, 3, b).astype(dt)  # integer division by zero: see below
            if op == "power":
                b = np.abs(b).astype(dt) % 4
            if np.dtype(dt).kind == "u" and op in ("subtract", "squared_difference"):
                a, b = np.maximum(a, b), np.minimum(a, b)  # keep unsigned results in range
            cases.append((f"{op}-{np.dtype(dt).name}", op, a, b, {}))
        cases.append((f"{op}-i32-signs", op, INTS.reshape(-1, 1), INTS[INTS != 0].reshape(1, -1)
                      if op in ("divide", "floor_mod", "mod", "power") else INTS.reshape(1, -1), {}))
    for op in COMPARE:
        cases.append((f"{op}-bool", op, np.array([[True], [False]]), np.array([[True, False]]), {}))
    for op in LOGICAL:
        cases.append((f"{op}-truth-table", op, np.array([[True], [False]]), np.array([[True, False]]), {}))
        cases.append((f"{op}-broadcast", op, _rand((2, 3, 4), bool, 1), _rand((3, 1), bool, 2), {}))
        cases.append((f"{op}-empty", op, _rand((0, 4), bool, 1), _rand((1, 4), bool, 2), {}))
        cases.append((f"{op}-none", op, _rand((2, 3), bool, 1), _rand((2, 3), bool, 2), {"auto_broadcast": "none"}))
        cases.append((f"{op}-pdpd", op, _rand((2, 3, 4), bool, 1), _rand((2, 3), bool, 2), {"auto_broadcast": "pdpd"}))
    for op in BITWISE:
        for dt in (np.int32, np.uint8, np.int8, np.int64):
            cases.append((f"{op}-{np.dtype(dt).name}", op, _rand((3, 4), dt, 1, -100, 100),
                          _rand((4,), dt, 2, -100, 100), {}))
        cases.append((f"{op}-bool", op, np.array([[True], [False]]), np.array([[True, False]]), {}))
    return cases


BINARY = _binary_cases()

# Cases where OpenVINO's CPU plugin itself is known to differ from OpenVINO's specification or
# to fail; these are checked against numpy instead (see test_binary_against_numpy).
_NOT_ON_CPU = {
    # the CPU plugin runs u8/i8 arithmetic through f32 and saturates instead of wrapping
    "power-uint8", "power-int8", "multiply-int8", "multiply-uint8", "squared_difference-int8",
    "squared_difference-uint8",
}


def _spec_case(name: str, op: str, dtype: np.dtype) -> bool:
    """Checked against OpenVINO's reference kernel rather than its CPU plugin."""
    # the CPU plugin also loses the pdpd axis in several of its own graph rewrites
    return "special" in name or "pdpd" in name or (op == "divide" and dtype.kind in "iu")


# pdpd cases OpenVINO cannot check: Mod with pdpd runs neither on the CPU plugin nor in its
# reference kernels, and the reference Greater/GreaterEqual misalign pdpd inputs.
_PDPD_NUMPY = {"mod": np.fmod, "greater": np.greater, "greater_equal": np.greater_equal}


@pytest.mark.parametrize("case", BINARY, ids=[c[0] for c in BINARY])
def test_binary_matches_openvino(case: tuple) -> None:
    name, op, a, b, kw = case
    if name in _NOT_ON_CPU:
        pytest.skip("the CPU plugin saturates small integer types; see test_binary_against_numpy")
    if "pdpd" in name and op in _PDPD_NUMPY:
        aligned = b.reshape(b.shape + (1,) * (a.ndim - b.ndim))  # pdpd axis 0
        expected = _PDPD_NUMPY[op](a, aligned)
        np.testing.assert_allclose(run_ember(op, [a, b], **kw)[0], expected, rtol=1e-6, atol=1e-6)
        return
    tol = 1e-5 if a.dtype.kind == "f" else 0
    check(op, [a, b], kw, tol, _spec_case(name, op, a.dtype))


# -- integer division and remainders: OpenVINO's semantics checked against numpy ------------------

@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8, np.uint8])
def test_integer_divide_floors_like_python(dtype: Any) -> None:
    a = np.array([7, -7, 7, -7, 6, -6, 0, 1], np.int64)
    b = np.array([2, 2, -2, -2, 3, 3, 5, -5], np.int64)
    if np.dtype(dtype).kind == "u":
        a, b = np.abs(a), np.abs(b)
    a, b = a.astype(dtype), b.astype(dtype)
    out = run_ember("divide", [a, b])[0]
    np.testing.assert_array_equal(out, a // b)  # Divide's m_pythondiv defaults to true: floor division
    theirs = reference("divide", [a, b])
    if theirs is not None:
        np.testing.assert_array_equal(out, theirs)
    np.testing.assert_array_equal(run_ember("floor_mod", [a, b])[0], np.mod(a, b))  # sign of the divisor
    np.testing.assert_array_equal(run_ember("mod", [a, b])[0], np.fmod(a, b))  # sign of the dividend


def test_integer_divide_truncates_without_pythondiv() -> None:
    from ember.ops.elementwise import Divide

    a = np.array([7, -7, 7, -7, 6, -6], np.int32)
    b = np.array([2, 2, -2, -2, 3, 3], np.int32)
    node = Divide([eo.constant(a), eo.constant(b)], {"m_pythondiv": False})
    np.testing.assert_array_equal(node.evaluate([a, b])[0], np.trunc(a / b).astype(np.int32))
    assert node.evaluate([a, b])[0].dtype == np.int32


def test_integer_division_by_zero_gives_zero() -> None:
    # OpenVINO leaves integer division by zero undefined (its reference kernel throws); ember
    # defines x / 0 and x % 0 as 0 so that a model never traps.
    a = np.array([5, -5, 0], np.int32)
    b = np.zeros(3, np.int32)
    for op in ("divide", "floor_mod", "mod"):
        np.testing.assert_array_equal(run_ember(op, [a, b])[0], np.zeros(3, np.int32))


@pytest.mark.parametrize("case", [c for c in BINARY if c[0] in _NOT_ON_CPU], ids=sorted(_NOT_ON_CPU))
def test_binary_against_numpy(case: tuple) -> None:
    name, op, a, b, kw = case
    wide = {"power": lambda x, y: x.astype(np.int64) ** y.astype(np.int64),
            "multiply": lambda x, y: x.astype(np.int64) * y,
            "squared_difference": lambda x, y: (x.astype(np.int64) - y) ** 2}[op]
    expected = wide(a, b).astype(a.dtype)  # wraps around like C integer arithmetic
    np.testing.assert_array_equal(run_ember(op, [a, b])[0], expected)


def test_float_division_by_zero_is_ieee() -> None:
    a = np.array([1, -1, 0, np.nan, np.inf], np.float32)
    b = np.array([0, 0, 0, 0, -0.0], np.float32)
    compare_with_openvino("divide", [a, b])


# -- unary ops ---------------------------------------------------------------------------------------

UNARY_FLOAT = ["relu", "sigmoid", "tanh", "exp", "log", "sqrt", "absolute", "negative", "erf", "floor", "ceiling",
               "sign", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh",
               "softplus", "softsign", "hswish", "hsigmoid", "mish", "is_nan", "is_inf", "is_finite"]
UNARY_INT = ["relu", "absolute", "negative", "sign", "floor", "ceiling"]
# ops whose CPU kernels use approximations a little looser than 1e-5
_LOOSE = {"erf": 1e-4, "mish": 1e-4, "softplus": 1e-4, "tan": 1e-4, "sinh": 1e-4, "cosh": 1e-4, "exp": 1e-4}


def _unary_cases() -> list[tuple]:
    cases = []
    grid = np.linspace(-4, 4, 41, dtype=np.float32).reshape(1, 41)
    unit = np.linspace(-0.99, 0.99, 23, dtype=np.float32)
    for op in UNARY_FLOAT:
        x = unit if op in ("asin", "acos", "atanh") else (np.abs(grid) + 1 if op == "acosh" else grid)
        cases.append((f"{op}-f32", op, x, {}))
        cases.append((f"{op}-special", op, SPECIAL, {}))
        cases.append((f"{op}-empty", op, np.zeros((2, 0, 3), np.float32), {}))
        cases.append((f"{op}-scalar", op, np.array(0.75, np.float32), {}))
        if op not in ("is_nan", "acosh", "asin", "acos", "atanh", "log", "sqrt"):
            cases.append((f"{op}-f16", op, _rand((3, 5), np.float16, 4), {}))
    for op in UNARY_INT:
        for dt in (np.int32, np.int64, np.int8):
            cases.append((f"{op}-{np.dtype(dt).name}", op, INTS.astype(dt), {}))
    cases.append(("logical_not", "logical_not", np.array([True, False, True]), {}))
    cases.append(("logical_not-empty", "logical_not", np.zeros((0, 2), bool), {}))
    for dt in (np.int32, np.uint8, np.int8, np.int64):
        cases.append((f"bitwise_not-{np.dtype(dt).name}", "bitwise_not", _rand((3, 4), dt, 1, -100, 100), {}))
    cases.append(("bitwise_not-bool", "bitwise_not", np.array([True, False]), {}))
    for mode in ("half_to_even", "half_away_from_zero"):
        cases.append((f"round-{mode}", "round", SPECIAL, {"mode": mode}))
        cases.append((f"round-{mode}-grid", "round", np.linspace(-3, 3, 25, dtype=np.float32), {"mode": mode}))
        cases.append((f"round-{mode}-i32", "round", INTS, {"mode": mode}))
    for lo, hi in ((-1.0, 2.0), (0.5, 0.5), (-np.inf, 0.0)):
        cases.append((f"clamp-{lo}-{hi}", "clamp", SPECIAL, {"min_value": lo, "max_value": hi}))
    cases.append(("clamp-i32-fractional-bounds", "clamp", INTS, {"min_value": -2.5, "max_value": 2.5}))
    cases.append(("clamp-i8", "clamp", INTS.astype(np.int8), {"min_value": -200.0, "max_value": 3.0}))
    for alpha in (0.5, 1.0, 2.0):
        cases.append((f"elu-{alpha}", "elu", SPECIAL, {"alpha": alpha}))
        cases.append((f"elu-{alpha}-grid", "elu", np.linspace(-4, 4, 17, dtype=np.float32), {"alpha": alpha}))
    for mode in ("erf", "tanh"):
        cases.append((f"gelu-{mode}", "gelu", np.linspace(-5, 5, 41, dtype=np.float32), {"approximation_mode": mode}))
        cases.append((f"gelu-{mode}-special", "gelu", SPECIAL, {"approximation_mode": mode}))
    return cases


UNARY = _unary_cases()


@pytest.mark.parametrize("case", UNARY, ids=[c[0] for c in UNARY])
def test_unary_matches_openvino(case: tuple) -> None:
    name, op, x, kw = case
    if x.dtype == np.float16:
        tol = 5e-3
    elif x.dtype.kind == "f":
        tol = _LOOSE.get(op, 1e-5)
    else:
        tol = 0
    check(op, [x], kw, tol, "special" in name or x is SPECIAL)


# -- ops with extra inputs --------------------------------------------------------------------------------

def test_swish_default_and_given_beta() -> None:
    x = np.linspace(-6, 6, 25, dtype=np.float32)
    compare_with_openvino("swish", [x], rtol=1e-5, atol=1e-5)
    compare_with_openvino("swish", [x, Const(np.array(0.75, np.float32))], rtol=1e-5, atol=1e-5)
    compare_with_openvino("swish", [SPECIAL, Const(np.array(2.0, np.float32))], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape, slope_shape", [
    ((2, 3, 4, 5), (3,)),  # per-channel
    ((2, 3, 4, 5), (1,)),
    ((2, 3, 4, 5), (5,)),  # last axis
    ((2, 3, 4, 5), (3, 1, 1)),
    ((4, 3), (3,)),
    ((6,), (6,)),
])
def test_prelu_slope_layouts(x_shape: tuple, slope_shape: tuple) -> None:
    compare_with_openvino("prelu", [_rand(x_shape, seed=1), Const(_rand(slope_shape, seed=2))], rtol=1e-6, atol=1e-6)


def test_prelu_special_values() -> None:
    compare_with_openvino("prelu", [SPECIAL, Const(np.array([0.25], np.float32))])


def test_selu() -> None:
    alpha, lam = np.array([1.6732632], np.float32), np.array([1.0507010], np.float32)
    compare_with_openvino("selu", [np.linspace(-5, 5, 21, dtype=np.float32), Const(alpha), Const(lam)],
                          rtol=1e-5, atol=1e-5)
    compare_with_openvino("selu", [SPECIAL, Const(alpha), Const(lam)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cs, ts, es, mode", [
    ((2, 3), (2, 3), (2, 3), "numpy"),
    ((2, 1), (1, 3), (3,), "numpy"),
    ((), (2, 3), (2, 3), "numpy"),
    ((1, 3), (4, 1), (), "numpy"),
    ((2, 3), (2, 3), (2, 3), "none"),
    ((0, 3), (1, 3), (3,), "numpy"),
    ((2, 3, 4), (2, 3, 4), (2, 3), "pdpd"),
    ((2, 3), (2, 3, 4), (2, 1, 4), "pdpd"),
    ((1,), (2, 3, 4), (1, 3, 4), "pdpd"),
])
def test_select(cs: tuple, ts: tuple, es: tuple, mode: str) -> None:
    c = _rand(cs, bool, 1)
    check("select", [c, _rand(ts, seed=2), _rand(es, seed=3)], {"auto_broadcast": mode}, 1e-6, mode == "pdpd")


def test_select_integers_and_nan() -> None:
    c = np.array([True, False, True, False])
    compare_with_openvino("select", [c, INTS[:4], INTS[4:8]])
    compare_with_openvino("select", [c, SPECIAL[:4], SPECIAL[-4:]])


# -- shape inference and errors ------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, mode, expected", [
    ("2,3,4", "3,1", "numpy", "[2,3,4]"),
    ("?,3", "2,1", "numpy", "[2,3]"),
    ("?,3", "1,3", "numpy", "[?,3]"),
    ("1..4,3", "2..6,1", "numpy", None),
    ("1..4,?", "3", "numpy", "[1..4,3]"),
    ("...", "2,3", "numpy", "[...]"),
    ("2,?", "2,3", "none", "[2,3]"),
    ("2,3,4", "2,3", "pdpd", "[2,3,4]"),
])
def test_binary_shape_inference(a: str, b: str, mode: str, expected: str | None) -> None:
    import openvino as ov
    import openvino.opset16 as oo

    ours = eo.add(eo.parameter(PartialShape(a)), eo.parameter(PartialShape(b)), mode).output(0).partial_shape
    if a == "...":
        theirs_shape = ov.PartialShape.dynamic()
    else:
        theirs_shape = ov.PartialShape(a)
    theirs = oo.add(oo.parameter(theirs_shape, np.float32), oo.parameter(ov.PartialShape(b), np.float32),
                    mode).get_output_partial_shape(0)
    assert str(ours) == str(theirs)
    if expected is not None:
        assert str(ours) == expected


@pytest.mark.parametrize("build, match", [
    (lambda: eo.add(eo.parameter([2, 3]), eo.parameter([4])), "broadcast"),
    (lambda: eo.maximum(eo.parameter([2, 3]), eo.parameter([3, 3])), "broadcast"),
    (lambda: eo.add(eo.parameter([2, 3]), eo.parameter([2, 3], np.int32)), "element types"),
    (lambda: eo.add(eo.parameter([2, 3]), eo.parameter([3]), "none"), "none"),
    (lambda: eo.add(eo.parameter([2, 3]), eo.parameter([2, 3]), "sideways"), "auto_broadcast"),
    (lambda: eo.logical_and(eo.parameter([2]), eo.parameter([2])), "boolean"),
    (lambda: eo.select(eo.parameter([2]), eo.parameter([2]), eo.parameter([2])), "boolean"),
    (lambda: eo.softplus(eo.parameter([2], np.int32)), "floating"),
])
def test_elementwise_errors_name_the_node(build: Any, match: str) -> None:
    with pytest.raises(ShapeInferenceError, match=match) as info:
        build()
    assert "'" in str(info.value)
