"""Ops that ran on reference kernels inside CPU plans and now run natively (issue 13, the
coverage gaps): elementwise broadcasts of rank 5-8 that do not collapse to 4 dims, f64
transcendental functions, f16/bf16 elementwise, reductions on f64/f16/u8/i8 and integer means,
Broadcast/Tile of 1- and 2-byte items, ... Each case runs on CPU against REFERENCE from one
table, with edge values (odd sizes, empty tensors, NaN/inf), and must have no op on a
reference kernel (the fallback report, ``program.stats["fallbacks"]``, is empty)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.graph.model import Model

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
    params = [ops.parameter(list(a.shape), a.dtype, name=f"x{i}") for i, a in enumerate(inputs)]
    out = fn(*params)
    outs = out if isinstance(out, list) else [out]
    model = Model(outs, params, "case")
    core = ember.Core()
    want = core.compile_model(model, "REFERENCE")(inputs)
    cm = core.compile_model(model, "CPU")
    prog = cm._executable.program
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
