"""Native scatter, gather, TopK and CumSum kernels on the CPU device, from one table of cases per op:
each case runs on CPU (no reference fallback allowed) and on REFERENCE, and the cases whose
semantics are subtle (reductions over duplicate indices, use_init_val, mean, NaN ordering) on
real OpenVINO too. Odd sizes, negative and duplicate indices, empty tensors, NaN, i32/i64 data
and indices, constant and runtime inputs."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ember
import ember.opset as eo
from ember.graph.model import Model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from oracle import Const, _build, run_openvino  # noqa: E402

RNG = np.random.default_rng(2026)


def _f(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i(lo: int, hi: int, *shape: int, dtype: Any = np.int64) -> np.ndarray:
    return RNG.integers(lo, hi, shape).astype(dtype)


def _perm_rows(n: int, k: int, dtype: Any = np.int64) -> np.ndarray:
    """``k`` distinct indices in [0, n) (no duplicates: last-write order cannot matter)."""
    return RNG.permutation(n)[:k].astype(dtype)


@dataclass
class Case:
    builder: str
    inputs: list[Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    openvino: bool = False  # compare with real OpenVINO too
    native: str | None = None  # op type that must run natively (default: the builder's op)


OP_TYPES = {"scatter_elements_update": "ScatterElementsUpdate", "scatter_nd_update": "ScatterNDUpdate",
            "scatter_update": "ScatterUpdate", "gather_nd": "GatherND", "gather_elements": "GatherElements",
            "topk": "TopK", "cumsum": "CumSum"}


def _run_cpu(case: Case) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    model, feeds = _build(eo, Model, case.builder, case.inputs, case.args, case.kwargs, None)
    n = len(model.get_results())
    ref = ember.Core().compile_model(model, "REFERENCE")(feeds)
    want = [np.asarray(ref[i]) for i in range(n)]
    cm = ember.Core().compile_model(model, "CPU")
    res = cm(feeds)
    got = [np.array(res[i]) for i in range(n)]
    res = cm(feeds)  # a second run (scratch buffers, fills) gives the same
    for i, g in enumerate(got):
        np.testing.assert_array_equal(np.asarray(res[i]), g)
    return got, want, cm._executable.program


def _check(case: Case, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    got, want, program = _run_cpu(case)
    assert not program.stats["fallbacks"], program.stats["fallbacks"]
    native = case.native or OP_TYPES[case.builder]
    assert any(op.type_name == native and op.native for op in program.ops) or not any(g.size for g in got), \
        [op.type_name for op in program.ops]
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    if case.openvino:
        theirs = run_openvino(case.builder, case.inputs, *case.args, **case.kwargs)
        for g, t in zip(got, theirs):
            assert g.shape == t.shape
            np.testing.assert_allclose(g.astype(np.float64), t.astype(np.float64), rtol=rtol, atol=atol,
                                       equal_nan=True)


# -- ScatterElementsUpdate ---------------------------------------------------------------------------

SCATTER_ELEMENTS: dict[str, Case] = {}
for red in ("none", "sum", "prod", "min", "max", "mean"):
    for init in (True, False):
        # duplicates along the axis, negative indices; none + duplicates: the last write wins
        SCATTER_ELEMENTS[f"{red}-init{int(init)}-axis0-dup"] = Case(
            "scatter_elements_update", [_f(5, 7), _i(-5, 5, 9, 7), _f(9, 7), Const(np.array(0))], (red, init),
            openvino=red != "none")
    SCATTER_ELEMENTS[f"{red}-axis-last-smaller-idx"] = Case(
        "scatter_elements_update", [_f(3, 4, 11), _i(-11, 11, 2, 3, 17), _f(2, 3, 17), Const(np.array(-1))],
        (red, True), openvino=red != "none")
    SCATTER_ELEMENTS[f"{red}-int32-data"] = Case(
        "scatter_elements_update", [_i(-9, 9, 4, 6, dtype=np.int32), _i(0, 4, 7, 6, dtype=np.int32),
                                    _i(-9, 9, 7, 6, dtype=np.int32), Const(np.array(0))], (red, False),
        openvino=red != "none")
    SCATTER_ELEMENTS[f"{red}-int64-data-middle-axis"] = Case(
        "scatter_elements_update", [_i(-9, 9, 2, 5, 3), _i(-5, 5, 2, 8, 3), _i(-9, 9, 2, 8, 3),
                                    Const(np.array(1))], (red, True), openvino=red != "none")
SCATTER_ELEMENTS.update({
    "sum-const-zero-data-gnn": Case(  # the scatter-add of a graph network: constant zeros, broadcast index
        "scatter_elements_update", [Const(np.zeros((13, 33), np.float32)),
                                    np.repeat(_i(0, 13, 40, 1), 33, axis=1), _f(40, 33), Const(np.array(0))],
        ("sum", True), openvino=True),
    "sum-const-data-fill": Case(
        "scatter_elements_update", [Const(np.full((6, 3), 2.5, np.float32)), _i(0, 6, 5, 3), _f(5, 3),
                                    Const(np.array(0))], ("sum", True)),
    "none-unique-openvino": Case(
        "scatter_elements_update", [_f(8, 5), np.stack([_perm_rows(8, 6) for _ in range(5)], 1), _f(6, 5),
                                    Const(np.array(0))], ("none", True), openvino=True),
    "max-nan-in-updates": Case(
        "scatter_elements_update", [_f(4, 4), _i(0, 4, 6, 4), np.where(_f(6, 4) > 1, np.nan, _f(6, 4)).astype(
            np.float32), Const(np.array(0))], ("max", True)),
    "sum-empty-updates": Case(
        "scatter_elements_update", [_f(4, 3), np.zeros((0, 3), np.int64), _f(0, 3), Const(np.array(0))],
        ("sum", True)),
    "mean-int32-indices-1d": Case(
        "scatter_elements_update", [_f(10), _i(-10, 10, 31, dtype=np.int32), _f(31), Const(np.array(0))],
        ("mean", False), openvino=True),
    "sum-many-columns-threads": Case(
        "scatter_elements_update", [_f(50, 300), _i(0, 50, 200, 300), _f(200, 300), Const(np.array(0))],
        ("sum", True), openvino=True),
})


@pytest.mark.parametrize("name", list(SCATTER_ELEMENTS))
def test_scatter_elements_update(name: str) -> None:
    _check(SCATTER_ELEMENTS[name], rtol=1e-4, atol=1e-4)


# -- ScatterNDUpdate / ScatterUpdate -----------------------------------------------------------------

SCATTER_ND: dict[str, Case] = {}
for red in ("none", "sum", "sub", "prod", "min", "max"):
    dup = np.array([[1], [3], [-1], [1], [0]])
    SCATTER_ND[f"{red}-rows-dup"] = Case("scatter_nd_update", [_f(6, 5, 3), dup, _f(5, 5, 3)], (red,),
                                         openvino=red != "none")
    SCATTER_ND[f"{red}-elements-k2-int32"] = Case(
        "scatter_nd_update", [_f(4, 9), _i(-4, 4, 3, 7, 2, dtype=np.int32), _f(3, 7)], (red,),
        openvino=red != "none")
    SCATTER_ND[f"{red}-int64-data-long-rows"] = Case(
        "scatter_nd_update", [_i(-50, 50, 5, 37), np.array([[4], [0], [4], [-2]]), _i(-50, 50, 4, 37)], (red,))
SCATTER_ND.update({
    "none-unique-openvino": Case("scatter_nd_update", [_f(7, 2, 19), _perm_rows(7, 4).reshape(2, 2, 1),
                                                       _f(2, 2, 2, 19)], ("none",), openvino=True),
    "sum-k-full-rank3": Case("scatter_nd_update", [_f(3, 4, 5), _i(0, 3, 6, 3), _f(6)], ("sum",), openvino=True),
    "none-empty-updates": Case("scatter_nd_update", [_f(3, 4), np.zeros((0, 1), np.int64), _f(0, 4)], ("none",)),
    "sum-int32-data": Case("scatter_nd_update", [_i(-9, 9, 8, 3, dtype=np.int32), _i(0, 8, 20, 1),
                                                 _i(-9, 9, 20, 3, dtype=np.int32)], ("sum",), openvino=True),
})
SCATTER_ND.update({  # 1-, 2- and 8-byte items are moved (reduction none); odd byte counts
    "none-bool-mask-const-data": Case("scatter_nd_update", [Const(np.zeros((5, 7), bool)), _i(-5, 5, 3, 1),
                                                            RNG.random((3, 7)) > 0.5], ("none",)),
    "none-float16-rows-dup": Case("scatter_nd_update", [_f(3, 5).astype(np.float16), np.array([[0], [2], [1], [2]]),
                                                        _f(4, 5).astype(np.float16)], ("none",)),
    "none-float64-rows": Case("scatter_nd_update", [RNG.standard_normal((6, 3)), np.array([[5], [0]]),
                                                    RNG.standard_normal((2, 3))], ("none",)),
})
SCATTER_ELEMENTS.update({
    "none-bool-odd-bytes": Case("scatter_elements_update", [RNG.random((5, 7)) > 0.5, _i(0, 5, 2, 7),
                                                            RNG.random((2, 7)) > 0.5, Const(np.array(0))],
                                ("none", True)),
    "none-uint8-const-fill": Case("scatter_elements_update", [Const(np.full((3, 9), 7, np.uint8)), _i(0, 9, 3, 4),
                                                              _i(0, 255, 3, 4, dtype=np.uint8), Const(np.array(1))],
                                  ("none", True)),
})
SCATTER_UPDATE = {
    "axis1-2d-indices": Case("scatter_update", [_f(6, 7, 3), np.array([[0, 2], [4, 5]]), _f(6, 2, 2, 3),
                                                Const(np.array(1))], openvino=True),
    "axis0-int32": Case("scatter_update", [_f(9, 33), _perm_rows(9, 4, np.int32), _f(4, 33), Const(np.array(0))],
                        openvino=True),
    "axis-last-scalar-index": Case("scatter_update", [_f(3, 5), np.array(3), _f(3), Const(np.array(-1))]),
    "int64-data": Case("scatter_update", [_i(0, 9, 4, 6), np.array([1, 1, 3]), _i(0, 9, 3, 6),
                                          Const(np.array(0))]),
    "int8-data-odd": Case("scatter_update", [_i(-9, 9, 3, 5, dtype=np.int8), np.array([4, 0]),
                                             _i(-9, 9, 3, 2, dtype=np.int8), Const(np.array(1))]),
}


@pytest.mark.parametrize("name", list(SCATTER_ND))
def test_scatter_nd_update(name: str) -> None:
    _check(SCATTER_ND[name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(SCATTER_UPDATE))
def test_scatter_update(name: str) -> None:
    _check(SCATTER_UPDATE[name])


# -- GatherND / GatherElements ------------------------------------------------------------------------

GATHERS: dict[str, Case] = {
    "nd-rows-negative": Case("gather_nd", [_f(5, 7, 3), _i(-5, 5, 4, 1)], openvino=True),
    "nd-elements-k2-int32": Case("gather_nd", [_f(6, 9), _i(-6, 6, 3, 5, 2, dtype=np.int32)], openvino=True),
    "nd-batch1": Case("gather_nd", [_f(2, 5, 4, 3), _i(0, 4, 2, 6, 1)], (1,), openvino=True),
    "nd-batch2-k1": Case("gather_nd", [_f(2, 3, 5, 4), _i(-5, 5, 2, 3, 2, 1)], (2,), openvino=True),
    "nd-int64-data-k-full": Case("gather_nd", [_i(-99, 99, 4, 3, 2), _i(0, 2, 7, 3)]),
    "nd-long-rows": Case("gather_nd", [_f(9, 70), _i(0, 9, 33, 1)], openvino=True),
    "nd-empty-indices": Case("gather_nd", [_f(4, 3), np.zeros((0, 1), np.int64)]),
    "nd-nan-data": Case("gather_nd", [np.array([[np.nan, 1.0], [np.inf, -np.inf]], np.float32),
                                      np.array([[1], [0], [-1]])]),
    "el-axis0-gnn": Case("gather_elements", [_f(20, 33), np.repeat(_i(0, 20, 57, 1), 33, axis=1)], (0,),
                         openvino=True),
    "el-axis-last-negative": Case("gather_elements", [_f(3, 4, 9), _i(-9, 9, 3, 4, 5)], (-1,), openvino=True),
    "el-middle-int32-idx": Case("gather_elements", [_f(2, 7, 5), _i(0, 7, 2, 11, 5, dtype=np.int32)], (1,),
                                openvino=True),
    "el-int64-data": Case("gather_elements", [_i(-99, 99, 6, 4), _i(0, 6, 3, 4)], (0,)),
    "el-int32-data-1d": Case("gather_elements", [_i(-99, 99, 13, dtype=np.int32), _i(-13, 13, 40)], (0,)),
    "el-empty": Case("gather_elements", [_f(4, 0), np.zeros((2, 0), np.int64)], (0,)),
    # 1- and 2-byte items (masks, f16 tensors)
    "nd-bool-rows": Case("gather_nd", [RNG.random((5, 7)) > 0.5, _i(-5, 5, 3, 1)]),
    "nd-uint8-elements": Case("gather_nd", [_i(0, 255, 4, 5, dtype=np.uint8), _i(0, 4, 6, 2)], openvino=True),
    "nd-float16-batch": Case("gather_nd", [_f(2, 5, 3).astype(np.float16), _i(0, 5, 2, 4, 1)], (1,)),
    "el-bool-axis0-broadcast-rows": Case("gather_elements", [RNG.random((6, 37)) > 0.5,
                                                             np.repeat(_i(0, 6, 9, 1), 37, axis=1)], (0,)),
    "el-int8-last-axis": Case("gather_elements", [_i(-99, 99, 3, 11, dtype=np.int8), _i(-11, 11, 3, 4)], (-1,),
                              openvino=True),
    "el-float16-middle": Case("gather_elements", [_f(2, 5, 3).astype(np.float16), _i(0, 5, 2, 7, 3)], (1,)),
}


@pytest.mark.parametrize("name", list(GATHERS))
def test_gather(name: str) -> None:
    _check(GATHERS[name])


# -- an index made by a Broadcast (PyTorch's index.unsqueeze(1).expand(-1, F)) is read in place ----------

def _broadcast_index_model(op: str, n: int, e: int, f: int, red: str = "sum", idx_dtype: Any = np.int64,
                           other_reader: bool = False) -> tuple[Model, list[np.ndarray]]:
    idx = eo.parameter([e, 1], idx_dtype, name="idx")
    wide = eo.broadcast(idx, np.array([e, f], np.int64))
    x = eo.parameter([n, f], np.float32, name="x")
    if op == "scatter":
        u = eo.parameter([e, f], np.float32, name="u")
        y = eo.scatter_elements_update(eo.constant(np.zeros((n, f), np.float32)), wide, u, np.array(0), red, True)
        outs, params = [eo.add(y, x)], [idx, x, u]
    else:
        y = eo.gather_elements(x, wide, 0)
        outs, params = [y], [idx, x]
    if other_reader:  # the broadcast index is a model output too: it must still be computed
        outs.append(wide)
    feeds = [_i(-n, n, e, 1, dtype=idx_dtype), _f(n, f)] + ([_f(e, f)] if op == "scatter" else [])
    return Model(outs, params, op), feeds


@pytest.mark.parametrize("op,red,f,idx_dtype,other", [
    ("scatter", "sum", 64, np.int64, False), ("scatter", "max", 37, np.int32, False),
    ("scatter", "none", 3, np.int64, False), ("scatter", "prod", 16, np.int64, True),
    ("scatter", "mean", 20, np.int64, False),
    ("gather", None, 64, np.int64, False), ("gather", None, 5, np.int32, True)])
def test_broadcast_index_read_in_place(op: str, red: str | None, f: int, idx_dtype: Any, other: bool) -> None:
    model, feeds = _broadcast_index_model(op, 23, 57, f, red or "sum", idx_dtype, other)
    n = len(model.get_results())
    ref = ember.Core().compile_model(model, "REFERENCE")(feeds)
    cm = ember.Core().compile_model(model, "CPU")
    got = cm(feeds)
    for i in range(n):
        np.testing.assert_allclose(np.asarray(got[i]), np.asarray(ref[i]), rtol=1e-5, atol=1e-5)
    ops_ = [op_.type_name for op_ in cm._executable.program.ops]
    assert ("Broadcast" in ops_) == other, ops_  # dropped from the plan unless something else reads it


# -- Broadcast / Tile of 8-byte items (int64 indices expanded by PyTorch exports) ------------------------

EIGHT_BYTE_COPIES = {
    "broadcast-int64-rows": Case("broadcast", [_i(-9, 9, 57, 1), Const(np.array([57, 33]))], native="Broadcast"),
    "broadcast-int64-middle": Case("broadcast", [_i(-9, 9, 3, 1, 5), Const(np.array([2, 3, 4, 5]))],
                                   native="Broadcast"),
    "broadcast-float64-bidirectional": Case("broadcast", [RNG.standard_normal((3, 1)), Const(np.array([1, 4]))],
                                            kwargs={"broadcast_spec": "BIDIRECTIONAL"}, native="Broadcast"),
    "tile-int64": Case("tile", [_i(-9, 9, 2, 3), Const(np.array([2, 1, 3]))], native="Tile"),
}


@pytest.mark.parametrize("name", list(EIGHT_BYTE_COPIES))
def test_eight_byte_broadcast_tile(name: str) -> None:
    _check(EIGHT_BYTE_COPIES[name], rtol=0, atol=0)


# -- TopK --------------------------------------------------------------------------------------------

def _ties(*shape: int) -> np.ndarray:
    """Floats with many equal values (the stable order decides) and a -0.0 among the zeros."""
    x = RNG.integers(-3, 4, shape).astype(np.float32)
    x.reshape(-1)[:1] = -0.0
    return x


TOPK: dict[str, Case] = {}
for mode in ("max", "min"):
    for sort in ("value", "index"):
        for k in (1, 7, 40):  # small k (one pass) and large k (radix sort)
            TOPK[f"{mode}-{sort}-k{k}-middle-axis-ties"] = Case(
                "topk", [_ties(3, 41, 5), Const(np.array(k))], (1, mode, sort, "i32"), {"stable": True},
                openvino=sort == "value")  # OpenVINO's sort=index picks other equal elements than stable
        TOPK[f"{mode}-{sort}-long-axis-small-k"] = Case(
            "topk", [_f(2, 3000), Const(np.array(5))], (-1, mode, sort, "i64"), {"stable": True}, openvino=True)
        TOPK[f"{mode}-{sort}-heap-ties"] = Case(  # 32 < k <= n / 8: the heap path, many equal values
            "topk", [_ties(2, 900), Const(np.array(50))], (1, mode, sort, "i32"), {"stable": True},
            openvino=sort == "value")
        TOPK[f"{mode}-{sort}-heap-sorted-input"] = Case(  # every element enters the heap
            "topk", [np.sort(_f(2, 700), axis=1) * (1 if mode == "max" else -1), Const(np.array(60))],
            (1, mode, sort, "i64"), {"stable": True}, openvino=True)
        TOPK[f"{mode}-{sort}-k-equals-axis"] = Case(
            "topk", [_f(4, 300), Const(np.array(300))], (1, mode, sort, "i32"), {"stable": True}, openvino=True)
        TOPK[f"{mode}-{sort}-nan-inf"] = Case(  # NaN is the largest value, as the reference and PyTorch
            "topk", [np.array([[1, np.nan, 3, -np.inf, np.nan, 3, 0, np.inf, -0.0]] * 2, np.float32),
                     Const(np.array(6))], (1, mode, sort, "i32"), {"stable": True})
        TOPK[f"{mode}-{sort}-int32-data"] = Case(
            "topk", [_i(-5, 5, 6, 70, dtype=np.int32), Const(np.array(33))], (1, mode, sort, "i64"),
            {"stable": True}, openvino=sort == "value")
TOPK.update({
    "max-none-axis0": Case("topk", [_f(17, 6), Const(np.array(4))], (0, "max", "none", "i32")),
    "min-value-k0": Case("topk", [_f(3, 5), Const(np.array(0))], (1, "min", "value", "i32")),
    "max-value-empty-rows": Case("topk", [_f(0, 5), Const(np.array(2))], (1, "max", "value", "i32")),
    "max-value-k-int32-const": Case("topk", [_f(2, 9, 2), Const(np.array(9, np.int32))], (1, "max", "value", "i32")),
})


@pytest.mark.parametrize("name", list(TOPK))
def test_topk(name: str) -> None:
    _check(TOPK[name], rtol=0, atol=0)


# -- CumSum ------------------------------------------------------------------------------------------

CUMSUM: dict[str, Case] = {}
for ex in (False, True):
    for rev in (False, True):
        tag = f"x{int(ex)}-r{int(rev)}"
        CUMSUM[f"{tag}-innermost"] = Case("cumsum", [_f(7, 19), Const(np.array(-1))], (ex, rev), openvino=True)
        CUMSUM[f"{tag}-middle-wide"] = Case("cumsum", [_f(3, 11, 37), Const(np.array(1))], (ex, rev), openvino=True)
        CUMSUM[f"{tag}-axis0-long"] = Case("cumsum", [_f(300, 9), Const(np.array(0))], (ex, rev))
        CUMSUM[f"{tag}-int64"] = Case("cumsum", [_i(-99, 99, 4, 6, 5), Const(np.array(2))], (ex, rev), openvino=True)
        CUMSUM[f"{tag}-int32-axis0"] = Case("cumsum", [_i(-99, 99, 6, 40, dtype=np.int32), Const(np.array(0))],
                                            (ex, rev))
CUMSUM.update({
    "nan-inf": Case("cumsum", [np.array([[1, np.nan, 2], [np.inf, -np.inf, 1]], np.float32), Const(np.array(1))],
                    (False, False)),
    "empty": Case("cumsum", [_f(0, 4), Const(np.array(1))], (True, False)),
    "axis-int32-1d": Case("cumsum", [_f(1000), Const(np.array(0, np.int32))], (False, True)),
})


@pytest.mark.parametrize("name", list(CUMSUM))
def test_cumsum(name: str) -> None:
    _check(CUMSUM[name], rtol=1e-4, atol=1e-4)


# -- the kernels on every ISA level the host has ------------------------------------------------------

def _levels() -> list[str]:
    from ember.devices.cpu.llvm.isa import supported_levels

    return [lv for lv in supported_levels() if lv != "amx"]


@pytest.mark.parametrize("level", _levels())
def test_kernels_on_every_isa_level(level: str) -> None:
    from ember.devices.cpu.kernels import cumsum, gather, scatter, topk
    from ember.devices.cpu.llvm.isa import host_isa

    isa = host_isa(level)
    # ScatterElementsUpdate (sum, axis 0) with per-element and broadcast (one per row) indices
    data, upd = _f(5, 37), _f(9, 37)
    for idx in (_i(-5, 5, 9, 37), np.repeat(_i(0, 5, 9, 1), 37, axis=1)):
        out = np.empty_like(data)
        broadcast = bool((idx == idx[:, :1]).all())
        src_idx = np.ascontiguousarray(idx[:, :1]) if broadcast else idx
        scatter.init_output(data, out, 0, 2, isa).run()
        scatter.scatter(out, upd, src_idx, mode="elem", reduction="sum", use_init=True, outer=1, K=9, inner=37,
                        tab_outer=np.zeros(1, np.int64), tab_inner=np.arange(37), dims=np.array([5]),
                        astr=np.array([37]), is_j=1 if broadcast else 37, tab_io=np.zeros(1, np.int64),
                        tab_ic=np.zeros(37, np.int64) if broadcast else np.arange(37), threads=2, isa=isa).run()
        want = data.copy()
        np.add.at(want, (idx % 5, np.arange(37)[None, :].repeat(9, 0)), upd)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    # GatherND rows, GatherElements
    d = _f(6, 35)
    rows = _i(-6, 6, 11, 1)
    got = np.empty((11, 35), np.float32)
    gather.gather_nd(d, rows, got, rows=11, M=11, bstride=0, dims=[6], astr=[35 * 4], inner=35 * 4, threads=2,
                     isa=isa).run()  # sizes in bytes
    np.testing.assert_array_equal(got, d[rows[:, 0]])
    el = _i(0, 6, 4, 35)
    gather.gather_elements(d, el, got[:4], outer=1, K=4, n=6, inner=35, tab_io=np.zeros(1, np.int64), is_j=35,
                           tab_ic=np.arange(35), threads=2, isa=isa).run()
    np.testing.assert_array_equal(got[:4], np.take_along_axis(d, el, 0))
    # TopK: insertion (k <= 32), heap (k <= n / 8), radix
    x = _f(3, 400)
    for k in (3, 45, 150):
        vals, inds = np.empty((3, k), np.float32), np.empty((3, k), np.int64)
        topk.topk(x, vals, inds, outer=3, n=400, inner=1, k=k, largest=True, by_index=False, threads=2, isa=isa).run()
        np.testing.assert_array_equal(inds, np.argsort(-x, axis=1, kind="stable")[:, :k])
    # CumSum, vector and scalar paths
    for shape in ((4, 30, 37), (4, 30, 1)):
        x = _f(*shape)
        y = np.empty_like(x)
        cumsum.cumsum(x, y, outer=4, n=30, inner=shape[2], exclusive=False, reverse=False, threads=2, isa=isa).run()
        np.testing.assert_allclose(y, np.cumsum(x, axis=1), rtol=1e-4, atol=1e-4)


# -- benchmarks/gather_scatter.py end to end on a tiny graph (structure only, never speed) ---------------

@pytest.mark.slow
def test_gather_scatter_benchmark_smoke(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import importlib.util

    spec = importlib.util.spec_from_file_location("ember_bench_gather_scatter",
                                                  Path(__file__).resolve().parents[2] / "benchmarks" / "gather_scatter.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "CACHE", tmp_path)
    assert bench.main(["--nodes", "40", "--edges", "150", "--features", "8", "--rounds", "1", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "ember CPU plan: no reference kernels" in out
    assert "ember CPU" in out and "OpenVINO" in out and "ONNX Runtime" in out


def test_topk_k_from_the_input_shape_is_native_after_specialization() -> None:
    """k = min(axis length, 5) computed from ShapeOf at run time: a dynamic model, specialized to
    the first input's shape, where k folds and TopK runs natively."""
    from ember.graph.shape import Dimension, PartialShape

    x = eo.parameter(PartialShape([Dimension(), Dimension()]), np.float32, name="x")
    k = eo.minimum(eo.gather(eo.shape_of(x, "i64"), np.array(1), np.array(0)), np.array(5, np.int64))
    t = eo.topk(x, k, 1, "max", "value", "i64")
    model = Model([t.output(0), t.output(1)], [x], "shape-k")
    cm = ember.Core().compile_model(model, "CPU")
    ref = ember.Core().compile_model(model, "REFERENCE")
    for shape in ((3, 40), (2, 4)):
        a = _f(*shape)
        got, want = cm([a]), ref([a])
        for i in range(2):
            np.testing.assert_array_equal(np.asarray(got[i]), np.asarray(want[i]))
    for inst in cm._executable._instances.values():
        assert not inst.program.stats["fallbacks"]
        assert any(op.type_name == "TopK" and op.native for op in inst.program.ops)


# -- seeded random cases: shapes, axes, index shapes smaller than data, every attribute ---------------------

def _random_case(seed: int) -> Case:
    r = np.random.default_rng(seed)
    rank = int(r.integers(1, 5))
    shape = tuple(int(d) for d in r.integers(1, 6, rank))
    dtype = (np.float32, np.int32, np.int64)[seed % 3]

    def data(*s: int) -> np.ndarray:
        return (r.standard_normal(s) * 10).astype(dtype)

    axis = int(r.integers(-rank, rank))
    a = axis % rank
    kind = seed % 6
    if kind == 0:  # ScatterElementsUpdate, indices no larger than data along every axis
        ishape = tuple(int(r.integers(1, d + 1)) if i != a else int(r.integers(0, 7)) for i, d in enumerate(shape))
        red = ("none", "sum", "prod", "min", "max", "mean")[int(r.integers(0, 6))]
        return Case("scatter_elements_update", [data(*shape), r.integers(-shape[a], shape[a], ishape), data(*ishape),
                                                Const(np.array(axis))], (red, bool(r.integers(0, 2))))
    if kind == 1:  # GatherElements
        ishape = tuple(d if i != a else int(r.integers(1, 7)) for i, d in enumerate(shape))
        return Case("gather_elements", [data(*shape), r.integers(-shape[a], shape[a], ishape).astype(np.int32)],
                    (axis,))
    if kind == 2:  # GatherND with batch dims
        bd = int(r.integers(0, rank))
        k = int(r.integers(1, rank - bd + 1))
        mid = tuple(int(d) for d in r.integers(1, 4, int(r.integers(0, 3))))
        idx = np.stack([r.integers(0, shape[bd + m], shape[:bd] + mid) for m in range(k)], -1)
        return Case("gather_nd", [data(*shape), idx], (bd,))
    if kind == 3:  # ScatterNDUpdate
        k = int(r.integers(1, rank + 1))
        lead = tuple(int(d) for d in r.integers(1, 5, int(r.integers(1, 3))))
        idx = np.stack([r.integers(-shape[m], shape[m], lead) for m in range(k)], -1)
        red = ("none", "sum", "sub", "prod", "min", "max")[int(r.integers(0, 6))]
        return Case("scatter_nd_update", [data(*shape), idx, data(*(lead + shape[k:]))], (red,))
    if kind == 4:  # CumSum
        return Case("cumsum", [data(*shape), Const(np.array(axis))], (bool(r.integers(0, 2)), bool(r.integers(0, 2))))
    x = np.round(data(*shape)) if dtype == np.float32 else data(*shape)  # ties
    k = int(r.integers(0, shape[a] + 1))
    return Case("topk", [x.astype(np.float32 if dtype == np.int64 else dtype), Const(np.array(k))],
                (axis, ("max", "min")[seed % 2], ("value", "index", "none")[int(r.integers(0, 3))], "i32"))


@pytest.mark.parametrize("seed", range(36))
def test_random_cases_match_reference(seed: int) -> None:
    _check(_random_case(seed), rtol=1e-4, atol=1e-3)


# -- a scatter writes into its data's buffer when nothing else reads the data ------------------------------

def _chain_model(shared: str) -> tuple[Model, list[np.ndarray]]:
    x = eo.parameter([6, 5], np.float32, name="x")
    u = eo.parameter([3, 5], np.float32, name="u")
    h = eo.relu(x)
    y = eo.scatter_nd_update(h, np.array([[1], [4], [1]]), u, "sum")
    y = eo.scatter_nd_update(y, np.array([[0, 2], [5, -1]]), eo.constant(np.array([7.0, 8.0], np.float32)), "none")
    y = eo.scatter_elements_update(y, np.array([[0, 1, 2, 3, 4]]), eo.constant(np.ones((1, 5), np.float32)),
                                   np.array(0), "max", True)
    outs = [y]
    if shared == "consumer":  # h is read by another node too: the first scatter must copy
        outs.append(eo.multiply(h, np.array(2.0, np.float32)))
    elif shared == "output":  # h is a model output: the first scatter must copy
        outs.append(h)
    return Model(outs, [x, u], "chain"), [_f(6, 5), _f(3, 5)]


@pytest.mark.parametrize("shared", ["none", "consumer", "output"])
def test_scatter_in_place_only_when_nothing_else_reads_the_data(shared: str) -> None:
    model, feeds = _chain_model(shared)
    n = len(model.get_results())
    ref = ember.Core().compile_model(model, "REFERENCE")
    cm = ember.Core().compile_model(model, "CPU")
    program = cm._executable.program
    assert not program.stats["fallbacks"]
    scatters = [op for op in program.ops if op.type_name.startswith("Scatter")]
    in_place = [op.outputs[0].kind == "view" for op in scatters]
    assert in_place == ([True] * 3 if shared == "none" else [False, True, True]), in_place
    for _ in range(2):  # a second run recomputes the data it overwrote
        got, want = cm(feeds), ref(feeds)
        for i in range(n):
            np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want[i]), rtol=1e-6, atol=1e-6)
        feeds = [_f(6, 5), _f(3, 5)]


def test_explicit_broadcast_index_read_in_place() -> None:
    """An EXPLICIT-mode Broadcast (axes mapping) of the index: strides from the op's own probe."""
    idx = eo.parameter([57], np.int64, name="idx")
    wide = eo.broadcast(idx, np.array([57, 19], np.int64), np.array([0], np.int64), "EXPLICIT")
    u = eo.parameter([57, 19], np.float32, name="u")
    y = eo.scatter_elements_update(eo.constant(np.zeros((23, 19), np.float32)), wide, u, np.array(0), "sum", True)
    model = Model([eo.gather_elements(y, wide, 0)], [idx, u], "explicit")
    feeds = [_i(-23, 23, 57), _f(57, 19)]
    cm = ember.Core().compile_model(model, "CPU")
    np.testing.assert_allclose(np.asarray(cm(feeds)[0]), np.asarray(ember.Core().compile_model(model, "REFERENCE")(feeds)[0]),
                               rtol=1e-5, atol=1e-5)
    assert "Broadcast" not in [op.type_name for op in cm._executable.program.ops]
