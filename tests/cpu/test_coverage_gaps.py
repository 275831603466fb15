"""Ops that ran on reference kernels inside CPU plans and now run natively (issue 13, the
coverage gaps): elementwise broadcasts of rank 5-8 that do not collapse to 4 dims, f64
transcendental functions, f16/bf16 elementwise, reductions on f64/f16/u8/i8 and integer means,
Broadcast/Tile of 1- and 2-byte items, ... Each case runs on CPU against REFERENCE from one
table, with edge values (odd sizes, empty tensors, NaN/inf), and must have no op on a
reference kernel (the fallback report, ``program.stats["fallbacks"]``, is empty)."""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest
from native_case import native_case  # noqa: E402

import ember
import ember.errors
import ember.opset as ops
from ember.devices.cpu.kernels.eltwise import halves_ok
from ember.devices.cpu.llvm.isa import host_isa
from ember.graph.model import Model
from ember.graph.types import Type

RNG = np.random.default_rng(1313)
EDGE = np.array([0.0, -0.0, 0.5, -0.5, 1.5, -2.5, 1.0, -1.0, 3.0, 20.0, -30.0, 100.0, -100.0,
                 np.inf, -np.inf, np.nan], np.float64)


def _f(shape: tuple[int, ...], dtype=np.float32, edge: bool = True, scale: float = 3.0) -> np.ndarray:  # noqa: ANN001
    a = (RNG.standard_normal(shape) * scale).astype(dtype)
    if edge and a.size:
        flat = a.reshape(-1)
        k = min(flat.size, EDGE.size)
        flat[:k] = RNG.permutation(EDGE)[:k].astype(dtype)
    return a


def _i(shape: tuple[int, ...], dtype=np.int32, lo: int = -20, hi: int = 20) -> np.ndarray:  # noqa: ANN001
    return RNG.integers(lo, hi, shape).astype(dtype)


def _b(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.integers(0, 2, shape).astype(np.bool_)


Case = tuple[Callable[..., object], list[np.ndarray], float]


def _case(fn: Callable[..., object], *inputs: np.ndarray, rtol: float = 2e-6) -> Case:
    return fn, list(inputs), rtol


def _alternating(rank: int, dims: tuple[int, ...] = (2, 3, 4, 5, 3, 2, 3, 2)) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes whose broadcast alternates axis by axis (collapses to ``rank`` dims)."""
    full = dims[:rank]
    return (tuple(d if i % 2 == 0 else 1 for i, d in enumerate(full)),
            tuple(d if i % 2 == 1 else 1 for i, d in enumerate(full)))


def _check(fn: Callable[..., object], inputs: list[np.ndarray], rtol: float) -> None:
    """CPU against REFERENCE, with no op on a reference kernel."""
    model, want, cm = native_case(fn, inputs)
    outs = model.outputs
    prog = cm._executable.program
    halves = any(o.element_type == Type.f16 for n in model.get_ordered_ops() for o in n.outputs())
    if not halves or halves_ok(host_isa()):  # f16 needs F16C on x86 (EMBER_CPU_ISA=generic lacks it)
        assert not prog.stats["fallbacks"], f"ran on reference kernels: {prog.stats['fallbacks']}"
    got = cm(inputs)
    for k in range(len(outs)):
        g, w = np.asarray(got[k]), np.asarray(want[k])
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        if w.dtype.kind not in "fV" and w.dtype.name != "bfloat16":
            np.testing.assert_array_equal(g, w)
            continue
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        np.testing.assert_array_equal(np.isnan(g64), np.isnan(w64))
        inf = np.isinf(w64)
        np.testing.assert_array_equal(g64[inf], w64[inf])
        fin = np.isfinite(w64)
        np.testing.assert_allclose(g64[fin], w64[fin], rtol=rtol, atol=rtol)


# -- elementwise broadcasts that do not collapse to 4 dims ------------------------------------
BROADCASTS: dict[str, Case] = {
    **{f"add-f32-r{r}": _case(ops.add, _f(_alternating(r)[0]), _f(_alternating(r)[1])) for r in (5, 6, 7, 8)},
    "add-i64-r6": _case(ops.add, _i(_alternating(6)[0], np.int64), _i(_alternating(6)[1], np.int64)),
    "select-r5-three-ways": _case(lambda c, a, b: ops.select(c, a, b), _b((2, 1, 4, 1, 3)), _f((1, 3, 1, 5, 3)),
                                  _f((2, 3, 4, 1, 1))),
    "chain-r5": _case(lambda a, b: ops.relu(ops.multiply(ops.add(a, b), np.float32(2))), _f((2, 1, 4, 1, 3)),
                      _f((1, 3, 1, 5, 1))),
    "compare-r7-odd": _case(ops.less, _f((3, 1, 5, 1, 7, 1, 3)), _f((1, 2, 1, 3, 1, 5, 1))),
    "r5-empty": _case(ops.add, _f((2, 0, 4, 1, 3)), _f((1, 1, 1, 5, 1))),
}


@pytest.mark.parametrize("name", list(BROADCASTS))
def test_broadcast_rank_5_to_8(name: str) -> None:
    _check(*BROADCASTS[name])


# -- f64 transcendental functions (the C library's, lane by lane) -----------------------------
def _f64(shape: tuple[int, ...], scale: float = 3.0) -> np.ndarray:
    return _f(shape, np.float64, scale=scale)


def _unit64(shape: tuple[int, ...]) -> np.ndarray:
    """Values in (-1, 1) and around it, for the inverse functions."""
    a = RNG.uniform(-1.2, 1.2, shape)
    a.reshape(-1)[:4] = [1.0, -1.0, np.nan, 0.0]
    return a


F64: dict[str, Case] = {
    **{f"f64-{name}": _case(getattr(ops, name), _f64((3, 37)), rtol=1e-13)
       for name in ("exp", "log", "tanh", "sigmoid", "erf", "softplus", "sin", "cos", "tan", "atan", "sinh", "cosh",
                    "asinh", "mish", "softsign", "hswish", "hsigmoid")},
    **{f"f64-{name}": _case(getattr(ops, name), _unit64((2, 29)), rtol=1e-13) for name in ("asin", "acos", "atanh")},
    "f64-acosh": _case(ops.acosh, np.abs(_f64((2, 29))) + 0.5, rtol=1e-13),
    "f64-gelu-erf-tanh": _case(lambda a: [ops.gelu(a), ops.gelu(a, "tanh")], _f64((4, 21)), rtol=1e-13),
    "f64-swish-elu-selu": _case(lambda a: [ops.swish(a, np.array(1.5, np.float64)), ops.elu(a, 0.7),
                                           ops.selu(a, np.array([1.67], np.float64), np.array([1.05], np.float64))],
                                _f64((2, 33)), rtol=1e-13),
    "f64-power-runtime": _case(ops.power, np.abs(_f64((3, 17))), _f64((1, 17)), rtol=1e-13),
    "f64-power-scalar": _case(lambda a: ops.power(a, np.array([1.7], np.float64)), np.abs(_f64((40,))), rtol=1e-13),
    "f64-chain-exp-log-mul": _case(lambda a, b: ops.log(ops.add(ops.exp(ops.multiply(a, b)), np.array([1.0], np.float64))),
                                   _f64((5, 13)), _f64((13,)), rtol=1e-13),
    "f64-exp-extremes": _case(ops.exp, np.array([700.0, 710.0, -745.0, -750.0, 1e-300, -0.0, np.inf, -np.inf, np.nan]),
                              rtol=1e-13),
    "f64-empty": _case(ops.tanh, np.zeros((0, 4), np.float64)),
    "f64-sigmoid-r5-broadcast": _case(lambda a, b: ops.sigmoid(ops.add(a, b)), _f64(_alternating(5)[0]),
                                      _f64(_alternating(5)[1]), rtol=1e-13),
}


F64.update({
    "i32-power": _case(ops.power, _i((3, 17), np.int32, -6, 7), _i((17,), np.int32, -2, 9)),
    "i64-power-overflow-and-zero-neg": _case(
        ops.power, np.array([2, 3, 0, -2, 10, 7, -1, 2**31, 5], np.int64),
        np.array([62, 40, -1, 63, 19, 0, -3, 2, 30], np.int64)),
    "i32-power-range": _case(ops.power, np.array([2, -2, 46341, 0, 9], np.int32), np.array([31, 31, 2, -2, 3], np.int32)),
    "u8-power-wraps": _case(ops.power, _i((20,), np.uint8, 0, 20), _i((20,), np.uint8, 0, 4)),
})


@pytest.mark.parametrize("name", list(F64))
def test_f64_math(name: str) -> None:
    _check(*F64[name])


# -- f16 and bf16 tensors (computed in f32, rounded after each op as numpy does) --------------
BF = np.dtype(ml_dtypes.bfloat16)


def _h(shape: tuple[int, ...], dtype=np.float16, scale: float = 3.0, edge: bool = True) -> np.ndarray:  # noqa: ANN001
    return _f(shape, np.float32, edge, scale).astype(dtype)


HALVES: dict[str, Case] = {
    **{f"f16-{name}": _case(getattr(ops, name), _h((3, 37)), rtol=2e-3)
       for name in ("exp", "log", "tanh", "sigmoid", "erf", "sqrt", "relu", "negative", "floor", "softplus", "gelu")},
    **{f"bf16-{name}": _case(getattr(ops, name), _h((3, 37), BF), rtol=1.6e-2)
       for name in ("exp", "tanh", "sigmoid", "relu", "gelu")},
    **{f"{t}-{name}": _case(getattr(ops, name), _h((2, 3, 19), dt), _h((3, 1), dt), rtol=2e-3 if t == "f16" else 1.6e-2)
       for t, dt in (("f16", np.float16), ("bf16", BF))
       for name in ("add", "subtract", "multiply", "divide", "maximum", "minimum", "squared_difference")},
    "f16-compare-select": _case(lambda a, b: ops.select(ops.less(a, b), a, b), _h((4, 33)), _h((33,))),
    "f16-chain-scalar": _case(lambda a: ops.tanh(ops.add(ops.multiply(a, np.array([0.5], np.float16)), np.array([1.0], np.float16))),
                              _h((5, 40)), rtol=2e-3),
    "f16-overflow": _case(lambda a: ops.multiply(a, np.array([1000.0], np.float16)), _h((64,), scale=100.0)),
    "f16-to-f32-and-back": _case(lambda a: ops.convert(ops.exp(ops.convert(a, "f32")), "f16"), _h((3, 21)), rtol=2e-3),
    "f32-to-f16-to-i32": _case(lambda a: ops.convert(ops.convert(a, "f16"), "i32"), _f((50,), scale=100.0)),
    "f32-to-bf16-exp": _case(lambda a: ops.exp(ops.convert(a, "bf16")), _f((3, 30)), rtol=1.6e-2),
    "bf16-to-f32": _case(lambda a: ops.convert(a, "f32"), _h((7, 9), BF)),
    "f16-empty": _case(ops.sigmoid, np.zeros((2, 0), np.float16)),
    "f16-power": _case(lambda a: ops.power(ops.absolute(a), np.array([1.5], np.float16)), _h((40,)), rtol=2e-3),
}


@pytest.mark.parametrize("name", list(HALVES))
def test_f16_bf16_elementwise(name: str) -> None:
    _check(*HALVES[name])


# -- reductions on f64, f16, bf16, u8, i8, i16, and integer means ------------------------------
def _red(name: str, axes: list[int], keep: bool = False) -> Callable[..., object]:
    return lambda a: getattr(ops, name)(a, np.array(axes, np.int64), keep)


_REDUCERS = ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_l1", "reduce_l2")
REDUCTIONS: dict[str, Case] = {
    **{f"f64-{n}-{ax}": _case(_red(n, list(ax)), _f((3, 5, 17), np.float64, scale=1.0), rtol=1e-12)
       for n in _REDUCERS for ax in ((2,), (0, 2))},
    "f64-max-short-rows": _case(_red("reduce_max", [-1]), _f((100, 3), np.float64)),
    "f64-mean-keep-odd": _case(_red("reduce_mean", [1], True), _f((7, 33, 5), np.float64, edge=False), rtol=1e-13),
    "f64-sum-empty": _case(_red("reduce_sum", [1]), np.zeros((3, 0, 2), np.float64)),
    **{f"f16-{n}": _case(_red(n, [1]), _h((4, 9, 6), scale=1.0), rtol=4e-3) for n in _REDUCERS},
    "f16-mean-last-short": _case(_red("reduce_mean", [-1]), _h((50, 3)), rtol=4e-3),
    **{f"bf16-{n}": _case(_red(n, [2]), _h((4, 9, 6), BF, scale=1.0), rtol=2e-2)
       for n in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_l2")},
    **{f"u8-{n}": _case(_red(n, [1]), _i((5, 7, 3), np.uint8, 0, 255))
       for n in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_l1")},
    **{f"i8-{n}": _case(_red(n, [0, 2]), _i((5, 7, 3), np.int8, -128, 127))
       for n in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_l1")},
    "i16-sum-mean": _case(lambda a: [_red("reduce_sum", [1])(a), _red("reduce_mean", [1])(a)],
                          _i((4, 300), np.int16, -30000, 30000)),
    "u8-max-empty": _case(_red("reduce_max", [1]), np.zeros((2, 0), np.uint8)),
    "u8-min-empty": _case(_red("reduce_min", [1]), np.zeros((2, 0), np.uint8)),
    **{f"{t}-mean": _case(_red("reduce_mean", [1]), _i((6, 7, 5), dt, -1000, 1000))
       for t, dt in (("i32", np.int32), ("i64", np.int64))},
    "i32-mean-wraps": _case(_red("reduce_mean", [0]), np.full((4, 3), 2**30, np.int32)),
    "i64-mean-keep-axes-0-2": _case(_red("reduce_mean", [0, 2], True), _i((3, 4, 5), np.int64, -50, 50)),
}


@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reductions_other_types(name: str) -> None:
    _check(*REDUCTIONS[name])


# -- Broadcast and Tile of 1- and 2-byte items, and of rank 5-8 -------------------------------
def _bcast(target: tuple[int, ...]) -> Callable[..., object]:
    return lambda a: ops.broadcast(a, np.array(target, np.int64))


def _tile(repeats: tuple[int, ...]) -> Callable[..., object]:
    return lambda a: ops.tile(a, np.array(repeats, np.int64))


MOVES: dict[str, Case] = {
    **{f"broadcast-{t}": _case(_bcast((2, 3, 4, 5)), a) for t, a in (
        ("u8", _i((1, 3, 1, 5), np.uint8, 0, 255)), ("i8", _i((3, 1, 5), np.int8, -128, 127)),
        ("bool", _b((1, 3, 1, 5))), ("f16", _h((1, 3, 1, 5))), ("bf16", _h((3, 1, 1), BF)),
        ("i16", _i((1, 1, 4, 1), np.int16, -999, 999)))},
    **{f"tile-{t}": _case(_tile((2, 1, 3)), a) for t, a in (
        ("u8", _i((3, 4, 5), np.uint8, 0, 255)), ("bool", _b((2, 3, 7))), ("f16", _h((3, 1, 5))),
        ("i8-odd", _i((1, 7, 3), np.int8, -128, 127)))},
    "tile-f16-new-axes": _case(_tile((2, 2, 1, 3)), _h((3, 5))),
    "broadcast-bidirectional-u8": _case(lambda a: ops.broadcast(a, np.array([3, 1, 4], np.int64),
                                                                broadcast_spec="BIDIRECTIONAL"),
                                        _i((2, 1), np.uint8, 0, 255)),
    "broadcast-explicit-bool": _case(lambda a: ops.broadcast(a, np.array([2, 3, 4], np.int64), np.array([1], np.int64),
                                                             "EXPLICIT"), _b((3,))),
    **{f"broadcast-f32-r{r}": _case(_bcast((2, 3, 4, 5, 3, 2, 3, 2)[:r]), _f(_alternating(r)[0])) for r in (5, 8)},
    "tile-i64-r6": _case(_tile((1, 2, 1, 2, 1, 2)), _i((2, 3, 2, 1, 2, 3), np.int64)),
}


@pytest.mark.parametrize("name", list(MOVES))
def test_broadcast_tile_items(name: str) -> None:
    _check(*MOVES[name])


# -- TopK with k fed at run time (the output's shape is only known when k is) ------------------
def _topk_model(shape: tuple[int, ...], axis: int, mode: str, sort: str, index: str = "i32",
                dtype=np.float32) -> Model:  # noqa: ANN001
    x = ops.parameter(list(shape), dtype, name="x")
    k = ops.parameter([], np.int64, name="k")
    t = ops.topk(x, k, axis, mode, sort, index)
    return Model([t.output(0), t.output(1)], [x, k], "topk")


TOPK: dict[str, tuple[Model, np.ndarray, list[int]]] = {
    "max-value-last": (_topk_model((5, 37), 1, "max", "value"), _f((5, 37)), [3, 0, 37, 1]),
    "min-index-middle-i64": (_topk_model((3, 41, 4), 1, "min", "index", "i64"), _f((3, 41, 4), edge=False), [5, 41]),
    "max-i32-axis0": (_topk_model((19, 3), 0, "max", "value", dtype=np.int32), _i((19, 3), np.int32), [7, 19]),
    "max-none-axis0-odd": (_topk_model((1000,), 0, "max", "none"), _f((1000,), edge=False), [10, 999]),
}


@pytest.mark.parametrize("name", list(TOPK))
def test_topk_runtime_k(name: str) -> None:
    model, x, ks = TOPK[name]
    core = ember.Core()
    ref, cm = core.compile_model(model, "REFERENCE"), core.compile_model(model, "CPU")
    assert not cm._executable.program.stats["fallbacks"], cm._executable.program.stats["fallbacks"]
    for k in ks:  # one compiled model, k changing between runs
        feeds = [x, np.array(k, np.int64)]
        got, want = cm(feeds), ref(feeds)
        for g, w in zip(got.to_tuple(), want.to_tuple()):
            assert g.shape == w.shape and g.dtype == w.dtype
            if "none" not in name:
                np.testing.assert_array_equal(g, w)
        if "none" in name:  # unsorted: the same set of values
            np.testing.assert_array_equal(np.sort(got[0]), np.sort(want[0]))


def test_topk_runtime_k_beyond_axis_raises() -> None:
    model, x, _ = TOPK["max-value-last"]
    cm = ember.Core().compile_model(model, "CPU")
    with pytest.raises(ember.errors.EmberError, match="exceeds"):
        cm([x, np.array(38, np.int64)])


# -- Keras LSTM with return_sequences (TensorFlow frontend: a Loop with a stacked output) -------
@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_keras_return_sequences_lstm_native(batch: int) -> None:
    """Two stacked ``LSTM(return_sequences=True)`` layers and a Dense head: each Loop is
    recognised as an LSTM layer writing the whole sequence, the shapes after it become static,
    and nothing runs on a reference kernel; the model matches Keras."""
    tf = pytest.importorskip("tensorflow")
    from ember.devices.cpu.lowering.control import plan_fallbacks

    tf.keras.utils.set_random_seed(1)
    layers = tf.keras.layers
    i = tf.keras.Input((9, 5))
    y = layers.LSTM(4, return_sequences=True)(layers.LSTM(7, return_sequences=True)(i))
    km = tf.keras.Model(i, layers.Dense(3)(y))
    cm = ember.Core().compile_model(ember.convert_model(km), "CPU")
    x = np.random.default_rng(batch).standard_normal((batch, 9, 5)).astype(np.float32)
    got = np.asarray(cm([x])[0])
    prog = cm._executable.program
    assert plan_fallbacks(prog) == {}
    assert [op.type_name for op in prog.ops].count("LSTMSequence") == 2
    np.testing.assert_allclose(got, km(x).numpy(), rtol=1e-4, atol=1e-5)


# -- convolutions with runtime weights or negative pads (columns and a batched GEMM) ----------
def _conv(strides: list[int], pb: list[int], pe: list[int], dil: list[int], grouped: bool = False,
          const_w: np.ndarray | None = None) -> Callable[..., object]:
    build = ops.group_convolution if grouped else ops.convolution
    if const_w is not None:
        return lambda x: build(x, const_w, strides, pb, pe, dil)
    return lambda x, w: build(x, w, strides, pb, pe, dil)


CONVS: dict[str, Case] = {
    "runtime-w-3x3-pad1": _case(_conv([1, 1], [1, 1], [1, 1], [1, 1]), _f((2, 3, 9, 11), edge=False),
                                _f((5, 3, 3, 3), edge=False), rtol=1e-4),
    "runtime-w-stride2-dil2-odd": _case(_conv([2, 3], [2, 1], [0, 3], [2, 2]), _f((1, 4, 13, 10), edge=False),
                                        _f((6, 4, 3, 2), edge=False), rtol=1e-4),
    "runtime-w-grouped": _case(_conv([1, 1], [1, 1], [1, 1], [1, 1], grouped=True), _f((1, 6, 7, 7), edge=False),
                               _f((3, 4, 2, 3, 3), edge=False), rtol=1e-4),
    "runtime-w-depthwise-1d": _case(_conv([2], [2], [1], [1], grouped=True), _f((2, 5, 17), edge=False),
                                    _f((5, 1, 1, 4), edge=False), rtol=1e-4),
    "runtime-w-1x1": _case(_conv([1, 1], [0, 0], [0, 0], [1, 1]), _f((1, 8, 5, 6), edge=False),
                           _f((4, 8, 1, 1), edge=False), rtol=1e-4),
    "runtime-w-nan": _case(_conv([1, 1], [0, 0], [0, 0], [1, 1]), _f((1, 2, 4, 4)), _f((3, 2, 2, 2), edge=False),
                           rtol=1e-4),
    "negative-pads-const-w": _case(_conv([1, 1], [-1, 0], [0, -2], [1, 1], const_w=_f((4, 3, 3, 3), edge=False)),
                                   _f((1, 3, 10, 10), edge=False), rtol=1e-4),
    "negative-and-positive-pads-strided": _case(
        _conv([2, 2], [-2, 1], [1, -1], [1, 1], const_w=_f((2, 3, 3, 2), edge=False)), _f((2, 3, 11, 9), edge=False),
        rtol=1e-4),
    "negative-pads-1d-grouped": _case(_conv([1], [-3], [-1], [1], grouped=True, const_w=_f((2, 3, 2, 3), edge=False)),
                                      _f((1, 4, 20), edge=False), rtol=1e-4),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_runtime_weights_negative_pads(name: str) -> None:
    _check(*CONVS[name])


# -- 3-D MaxPool with its indices output used ---------------------------------------------------
def _pool3d(kernel: list[int], strides: list[int], dil: list[int], pb: list[int], pe: list[int],
            rounding: str = "floor", index: str = "i64", axis: int = 0) -> Callable[..., object]:
    def build(x: object) -> list:
        p = ops.max_pool(x, strides, dil, pb, pe, kernel, rounding, index_element_type=index, axis=axis)
        return [p.output(0), p.output(1)]
    return build


POOLS3D: dict[str, Case] = {
    "2x2x2-s2": _case(_pool3d([2, 2, 2], [2, 2, 2], [1, 1, 1], [0, 0, 0], [0, 0, 0]), _f((2, 3, 6, 6, 6))),
    "3x3x3-s1-pad1-i32": _case(_pool3d([3, 3, 3], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1], index="i32"),
                               _f((1, 2, 5, 7, 6))),
    "odd-ceil-dilated": _case(_pool3d([2, 3, 2], [2, 1, 3], [2, 1, 1], [0, 1, 0], [1, 0, 1], "ceil"),
                              _f((1, 4, 7, 5, 9))),
    "axis-2": _case(_pool3d([2, 2, 2], [1, 2, 2], [1, 1, 1], [0, 0, 0], [0, 0, 0], axis=2), _f((2, 2, 4, 5, 5))),
    "all-nan-window": _case(_pool3d([2, 2, 2], [2, 2, 2], [1, 1, 1], [0, 0, 0], [0, 0, 0]),
                            np.full((1, 1, 2, 2, 2), np.nan, np.float32)),
}


@pytest.mark.parametrize("name", list(POOLS3D))
def test_maxpool3d_indices(name: str) -> None:
    _check(*POOLS3D[name])


# -- LRN over several axes ----------------------------------------------------------------------
def _lrn(axes: list[int], size: int, alpha: float = 1e-2, beta: float = 0.75, bias: float = 1.0) -> Callable[..., object]:
    return lambda x: ops.lrn(x, np.array(axes, np.int64), alpha, beta, bias, size)


LRNS: dict[str, Case] = {
    "within-channel-2-3": _case(_lrn([2, 3], 3), _f((2, 5, 7, 9), edge=False), rtol=1e-5),
    "all-three-size5": _case(_lrn([1, 2, 3], 5, beta=0.5, bias=2.0), _f((1, 6, 5, 8), edge=False), rtol=1e-5),
    "axes-0-2-even-size": _case(_lrn([0, 2], 4, alpha=0.1), _f((3, 4, 11), edge=False), rtol=1e-5),
    # (no NaN/inf here: REFERENCE's window sums are prefix-sum differences, along which an inf or
    # NaN spreads to every later window; the native sums keep it inside its own windows)
    "last-axes-3d": _case(_lrn([1, 2], 3), _f((2, 9, 17), edge=False), rtol=1e-5),
    "size-bigger-than-axes": _case(_lrn([2, 3], 9), _f((1, 2, 3, 4), edge=False), rtol=1e-5),
}


@pytest.mark.parametrize("name", list(LRNS))
def test_lrn_several_axes(name: str) -> None:
    _check(*LRNS[name])


def test_profiling_reports_these_ops_native() -> None:
    """The per-op profile (what ``ember benchmark -pc`` prints) names no reference kernel for a
    model mixing the paths above: f16 and f64 chains, an f64 reduction, a rank-6 broadcast, a
    u8 Broadcast and a TopK whose k is fed at run time."""
    h = ops.parameter([4, 33], np.float16, name="h")
    d = ops.parameter([4, 33], np.float64, name="d")
    a, b = (ops.parameter(list(s), np.float32, name=f"b{i}") for i, s in enumerate(_alternating(6)))
    u = ops.parameter([1, 3, 1], np.uint8, name="u")
    k = ops.parameter([], np.int64, name="k")
    outs = [ops.gelu(ops.multiply(h, h)), ops.reduce_sum(ops.erf(d), np.array([1], np.int64)), ops.add(a, b),
            ops.broadcast(u, np.array([2, 3, 4], np.int64)),
            ops.topk(ops.convert(h, "f32"), k, 1, "max", "value").output(0)]
    model = Model(outs, [h, d, a, b, u, k], "mixed")
    cm = ember.Core().compile_model(model, "CPU", {"PERF_COUNT": True})
    req = cm.create_infer_request()
    feeds = [_h((4, 33)), _f((4, 33), np.float64), _f(_alternating(6)[0]), _f(_alternating(6)[1]),
             _i((1, 3, 1), np.uint8, 0, 255), np.array(7, np.int64)]
    req.infer(feeds)
    kinds = {p.node_name: p.exec_type for p in req.get_profiling_info()}
    assert kinds and "ref_any" not in kinds.values(), kinds
    want = ember.Core().compile_model(model, "REFERENCE")(feeds)
    for i in range(len(outs)):
        np.testing.assert_allclose(np.asarray(req.get_output_tensor(i).data, np.float64),
                                   np.asarray(want[i], np.float64), rtol=2e-3, atol=1e-5)


# -- f16/bf16 tensors through f32-only kernels (computed in f32, Converts around) ----------------
def _w16(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.3).astype(np.float16)


HALF_OPS: dict[str, Case] = {
    "f16-softmax": _case(lambda a: ops.softmax(a, 1), _h((3, 37), scale=1.0), rtol=2e-3),
    "bf16-log-softmax": _case(lambda a: ops.log_softmax(a, -1), _h((3, 37), BF, scale=1.0), rtol=1.6e-2),
    "f16-mvn": _case(lambda a: ops.mvn(a, np.array([2], np.int64), True, 1e-5, "inside_sqrt"), _h((2, 3, 40)),
                     rtol=4e-3),
    "f16-matmul-runtime": _case(lambda a, b: ops.matmul(a, b, False, False), _h((3, 19), scale=1.0),
                                _h((19, 7), scale=1.0), rtol=1e-2),
    "f16-matmul-const-weights": _case(lambda a: ops.matmul(a, _w16(24, 5), False, False), _h((4, 24), scale=1.0),
                                      rtol=1e-2),
    "f16-conv-f16-weights": _case(lambda a: ops.convolution(a, _w16(4, 3, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1]),
                                  _h((1, 3, 8, 9), scale=1.0), rtol=1e-2),
    "f16-avgpool": _case(lambda a: ops.avg_pool(a, [2, 2], [0, 0], [0, 0], [2, 2], True), _h((1, 2, 6, 6)),
                         rtol=2e-3),
    "f16-interpolate": _case(lambda a: ops.interpolate(a, np.array([1, 1, 2, 2], np.float32), "linear", "scales"),
                             _h((1, 2, 5, 5), edge=False), rtol=2e-3),  # (REFERENCE spreads a NaN: cpu-fallbacks.md)
    "f16-topk": _case(lambda a: [ops.topk(a, np.int64(4), 1, "max", "value").output(i) for i in (0, 1)],
                      _h((3, 30), scale=1.0)),
    "f16-cumsum": _case(lambda a: ops.cumsum(a, np.int64(1)), _h((3, 12), scale=1.0), rtol=4e-3),
    "f16-pad-value": _case(lambda a: ops.pad(a, np.array([1, 0], np.int64), np.array([0, 2], np.int64), "constant",
                                             np.array(1.5, np.float16)), _h((4, 5))),
    "f16-softmax-is-model-output-name": _case(lambda a: ops.softmax(ops.exp(a), 1), _h((2, 9), scale=1.0), rtol=2e-3),
}


@pytest.mark.parametrize("name", list(HALF_OPS))
def test_f16_bf16_through_f32_kernels(name: str) -> None:
    _check(*HALF_OPS[name])


def test_f16_output_keeps_its_name() -> None:
    x = ops.parameter([2, 9], np.float16, name="x")
    sm = ops.softmax(x, 1, name="probs")
    sm.output(0).set_names({"probs"})
    cm = ember.Core().compile_model(Model([sm], [x], "named"), "CPU")
    assert "probs" in cm.output(0).get_names()
    got = cm([_h((2, 9), scale=1.0)])["probs"]
    assert got.dtype == np.float16


# -- Roll (Swin Transformer's shifted windows) --------------------------------------------------
def _roll(shift: list[int], axes: list[int]) -> Callable[..., object]:
    return lambda x: ops.roll(x, np.array(shift, np.int64), np.array(axes, np.int64))


ROLLS: dict[str, Case] = {
    "swin-two-axes-f32": _case(_roll([-3, -3], [1, 2]), _f((2, 14, 14, 8))),
    "one-axis-negative-i64": _case(_roll([2], [-1]), _i((5, 6), np.int64)),
    "scalar-shift-many-axes-u8": _case(_roll([4], [0, 1]), _i((3, 7), np.uint8, 0, 255)),
    "repeated-axis-f16": _case(_roll([1, 5], [0, 0]), _h((6, 3))),
    "full-turn-bool": _case(_roll([4], [1]), _b((3, 4))),
    "bigger-than-axis-f64": _case(_roll([13, -7], [0, 2]), _f((5, 2, 3), np.float64)),
}


@pytest.mark.parametrize("name", list(ROLLS))
def test_roll(name: str) -> None:
    _check(*ROLLS[name])
