"""Reductions, CumSum and normalizations against real OpenVINO (CPU plugin, f32), from one table.

Each case builds the op in ember and in OpenVINO on the same inputs (arrays become Parameters,
``Const`` values constants) and compares the outputs; ``INFER`` cases compare the inferred
element types and partial shapes (dynamic, bounded, dynamic rank) instead. The helpers here are
shared with test_misc_ops.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from oracle import Const  # noqa: E402

ov = pytest.importorskip("openvino")
import openvino.opset1 as ov1  # noqa: E402
import openvino.opset2 as ov2  # noqa: E402
import openvino.opset16 as oo  # noqa: E402

import ember.opset as eo  # noqa: E402
from ember.devices.reference import run_model  # noqa: E402
from ember.errors import ShapeInferenceError  # noqa: E402
from ember.graph import Model  # noqa: E402
from ember.ops import normalization as N  # noqa: E402

rng = np.random.default_rng(7)


def f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@dataclass
class Dyn:
    """A Parameter of a partial shape, for inference-only cases."""

    shape: str
    dtype: Any = np.float32


@dataclass
class Case:
    """One row: the op built by ``ember`` and by ``ov`` on the same inputs, and how to compare.

    ``oracle`` picks what the ember outputs are checked against: ``"cpu"``, OpenVINO's CPU plugin;
    ``"ref"``, OpenVINO's reference implementation (``Node.evaluate`` on constant inputs), for
    cases where the CPU plugin departs from the op specification. ``numpy`` replaces both when
    OpenVINO cannot run a case at all.
    """

    id: str
    ember: Callable[..., Any]
    ov: Callable[..., Any]
    inputs: list[Any]
    tol: tuple[float, float] = (1e-5, 1e-6)
    numpy: Callable[..., list[np.ndarray]] | None = None
    oracle: str = "cpu"


def same(builder: str, *args: Any, **kwargs: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The same opset16 builder call on both sides."""
    return (lambda *n: getattr(eo, builder)(*n, *args, **kwargs),
            lambda *n: getattr(oo, builder)(*n, *args, **kwargs))


def case(id: str, fns: tuple[Callable[..., Any], Callable[..., Any]], inputs: list[Any],
         tol: tuple[float, float] = (1e-5, 1e-6), oracle: str = "cpu") -> Case:
    return Case(id, fns[0], fns[1], inputs, tol, oracle=oracle)


def build_graph(ns: Any, fn: Callable[..., Any], inputs: list[Any],
                all_const: bool = False) -> tuple[Any, list[Any], list[np.ndarray]]:
    """``fn`` applied in opset namespace ``ns`` to Parameters (arrays, ``Dyn``) and constants."""
    params, feeds, args = [], [], []
    for i, x in enumerate(inputs):
        if isinstance(x, Const) or all_const:
            args.append(ns.constant(np.asarray(x.value if isinstance(x, Const) else x)))
        elif isinstance(x, Dyn):
            p = ns.parameter(x.shape if ns is eo else ov.PartialShape(x.shape), x.dtype, name=f"in{i}")
            params.append(p)
            args.append(p)
        else:
            arr = np.asarray(x)
            p = ns.parameter(list(arr.shape), arr.dtype, name=f"in{i}")
            params.append(p)
            feeds.append(arr)
            args.append(p)
    return fn(*args), params, feeds


def run_ember_case(c: Case) -> list[np.ndarray]:
    """ember's REFERENCE outputs; the inferred types and shapes must admit them."""
    node, params, feeds = build_graph(eo, c.ember, c.inputs)
    model = Model([eo.result(o) for o in node.outputs()], params, "t")
    outs = run_model(model, feeds)
    for o, r in zip(outs, model.get_results()):
        ps, et = r.output(0).partial_shape, r.output(0).element_type
        assert ps.accepts(o.shape), f"inferred {ps} but computed {o.shape}"
        assert o.dtype == et.dtype, f"inferred {et} but computed {o.dtype}"
    return outs


def run_oracle_case(c: Case) -> list[np.ndarray]:
    """The expected outputs: OpenVINO's CPU plugin or reference, or numpy."""
    if c.numpy is not None:
        return c.numpy(*[x.value if isinstance(x, Const) else x for x in c.inputs])
    if c.oracle == "ref":
        node, _, _ = build_graph(oo, c.ov, c.inputs, all_const=True)
        outs = [ov.Tensor(node.get_output_element_type(i), node.get_output_partial_shape(i).to_shape())
                for i in range(node.get_output_size())]
        values = [np.ascontiguousarray(x.value if isinstance(x, Const) else x) for x in c.inputs]
        assert node.evaluate(outs, [ov.Tensor(v) for v in values]), "OpenVINO has no reference for this case"
        return [t.data.copy() for t in outs]
    node, params, feeds = build_graph(oo, c.ov, c.inputs)
    model = ov.Model([node.output(i) for i in range(node.get_output_size())], params, "t")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(feeds)
    return [np.asarray(res[o]) for o in compiled.outputs]


def assert_close(ours: list[np.ndarray], theirs: list[np.ndarray], tol: tuple[float, float]) -> None:
    """Same shapes and element types; values within ``tol`` (rtol, atol), NaN where NaN."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape, f"shape {a.shape} != OpenVINO's {b.shape}"
        assert a.dtype.kind == b.dtype.kind and a.dtype.itemsize == b.dtype.itemsize, \
            f"dtype {a.dtype} != OpenVINO's {b.dtype}"
        if a.dtype.kind == "b":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol[0], atol=tol[1],
                                       equal_nan=True)


def check_infer(c: Case) -> None:
    """ember infers the element types and partial shapes OpenVINO infers."""
    node, _, _ = build_graph(eo, c.ember, c.inputs)
    onode, _, _ = build_graph(oo, c.ov, c.inputs)
    ours = [(o.element_type.name, str(o.partial_shape)) for o in node.outputs()]
    theirs = [(o.get_element_type().get_type_name(), str(o.get_partial_shape())) for o in onode.outputs()]
    assert ours == theirs


def _i64(*v: int) -> Const:
    return Const(np.array(v, dtype=np.int64))


NAN_INF = np.array([[1.0, np.nan, 3.0, -2.0], [np.inf, 1.0, 2.0, 0.5], [-np.inf, 2.0, 1.0, 4.0]], np.float32)
INF = np.array([[1.0, -np.inf, 3.0, -2.0], [np.inf, 1.0, 2.0, 0.5], [-np.inf, 2.0, 1.0, 4.0]], np.float32)
INTS = rng.integers(-5, 6, (3, 4, 2)).astype(np.int32)
BOOLS = rng.random((3, 4, 2)) > 0.4

REDUCE = ["reduce_sum", "reduce_mean", "reduce_prod", "reduce_max", "reduce_min", "reduce_l1", "reduce_l2"]

CASES: list[Case] = []
for r in REDUCE:
    CASES += [
        case(f"{r}-axis1", same(r, keep_dims=False), [f32(2, 3, 4), _i64(1)]),
        case(f"{r}-neg-keep", same(r, keep_dims=True), [f32(2, 3, 4), _i64(-1, 0)]),
        case(f"{r}-scalar-axis", same(r), [f32(2, 3, 4), Const(np.int32(-2))]),
        case(f"{r}-all", same(r, keep_dims=True), [f32(2, 3, 4), _i64(0, 1, 2)]),
        # OpenVINO's CPU plugin rejects empty axes; the spec says the data passes unchanged
        Case(f"{r}-no-axes", *same(r, keep_dims=False), [f32(2, 3), Const(np.zeros(0, np.int64))],
             numpy=lambda x, a: [x]),
        case(f"{r}-dup-axes", same(r), [f32(2, 3, 4), _i64(1, -2)]),
        case(f"{r}-size1", same(r, keep_dims=False), [f32(1, 3, 1), _i64(0, 2)]),
        case(f"{r}-empty-dim", same(r, keep_dims=True), [np.zeros((2, 0, 3), np.float32), _i64(1)]),
        case(f"{r}-empty-kept", same(r), [np.zeros((2, 0, 3), np.float32), _i64(2)]),
        case(f"{r}-runtime-axes", same(r, keep_dims=True), [f32(2, 3, 4), np.array([0, -1], np.int64)]),
        case(f"{r}-inf", same(r), [INF, _i64(1)]),
        case(f"{r}-int", same(r), [INTS, _i64(1)]),
        Case(f"{r}-0d", *same(r), [np.array(2.5, np.float32), Const(np.zeros(0, np.int64))],
             numpy=lambda x, a: [x]),
    ]
    if r not in ("reduce_max", "reduce_min"):  # max/min NaN order is unspecified in OpenVINO's CPU plugin
        CASES.append(case(f"{r}-nan", same(r, keep_dims=True), [NAN_INF, _i64(0)]))
for r in ("reduce_logical_and", "reduce_logical_or"):
    CASES += [
        case(f"{r}-axis", same(r), [BOOLS, _i64(-1)]),
        case(f"{r}-keep", same(r, keep_dims=True), [BOOLS, _i64(0, 2)]),
        case(f"{r}-empty-dim", same(r), [np.zeros((2, 0), bool), _i64(1)]),
        Case(f"{r}-no-axes", *same(r), [BOOLS, Const(np.zeros(0, np.int32))], numpy=lambda x, a: [x]),
    ]
CASES += [
    case("cumsum", same("cumsum"), [f32(3, 4, 5), Const(np.int64(1))]),
    case("cumsum-excl", same("cumsum", exclusive=True), [f32(3, 4, 5), Const(np.int32(-1))]),
    case("cumsum-rev", same("cumsum", reverse=True), [f32(3, 4, 5), Const(np.int64(0))]),
    case("cumsum-excl-rev", same("cumsum", exclusive=True, reverse=True), [f32(3, 4, 5), Const(np.int64(2))]),
    case("cumsum-int", same("cumsum", exclusive=True), [INTS, Const(np.int64(1))]),
    case("cumsum-runtime-axis", same("cumsum", reverse=True), [f32(3, 4), np.array(-1, np.int64)]),
    case("cumsum-nan", same("cumsum"), [NAN_INF, Const(np.int64(1))]),
    case("cumsum-len1", same("cumsum", exclusive=True), [f32(3, 1), Const(np.int64(1))]),
    case("cumsum-empty", same("cumsum", exclusive=True), [np.zeros((3, 0), np.float32), Const(np.int64(1))]),
]

# -- normalizations ---------------------------------------------------------------------------
X4 = f32(2, 5, 3, 4)
BIG = np.array([[1000.0, 1001.0, -1000.0], [-np.inf, 0.0, 1.0], [-np.inf, -np.inf, 2.0]], np.float32)
for ax in (-1, 0, 1, -4):
    CASES.append(case(f"softmax-v8-{ax}", same("softmax", ax), [X4]))
    CASES.append(case(f"log_softmax-{ax}", same("log_softmax", ax), [X4], (1e-5, 1e-5)))
CASES += [
    case("softmax-v8-extremes", same("softmax", -1), [BIG]),
    case("log_softmax-extremes", same("log_softmax", 1), [BIG]),
    Case("softmax-v1", lambda x: N.Softmax1([x], {"axis": 2}), lambda x: ov1.softmax(x, 2), [X4]),
    Case("softmax-v1-default", lambda x: N.Softmax1([x]), lambda x: ov1.softmax(x, 1), [f32(3, 6)]),
    case("softmax-size1", same("softmax", 1), [f32(4, 1)]),
    case("softmax-scalar", same("softmax", 0), [np.array(3.0, np.float32)]),
    case("log_softmax-scalar", same("log_softmax", -1), [np.array(3.0, np.float32)]),
]
for r in ("reduce_sum", "reduce_max", "reduce_mean"):
    for ax in (0, -1):  # OpenVINO infers a scalar's axis 0 / -1 as nothing to reduce; its CPU plugin fails to run it
        CASES.append(Case(f"{r}-scalar-axis{ax}", *same(r, keep_dims=True), [np.array(2.5, np.float32), _i64(ax)],
                          numpy=lambda x, a: [x]))
NORM_TOL = (1e-4, 1e-5)
for axes in ([2, 3], [1, 2, 3], [-1], [0], [1, -1]):
    for mode in ("inside_sqrt", "outside_sqrt"):
        CASES.append(case(f"mvn6-{axes}-{mode}", same("mvn", normalize_variance=True, eps=0.01, eps_mode=mode),
                          [X4, Const(np.array(axes, np.int64))], NORM_TOL))
    CASES.append(case(f"mvn6-{axes}-mean-only", same("mvn", normalize_variance=False, eps=1e-9, eps_mode="inside_sqrt"),
                      [X4, Const(np.array(axes, np.int32))], NORM_TOL))
for across in (True, False):
    for nv in (True, False):
        CASES.append(Case(f"mvn0-across{across}-var{nv}",
                          lambda x, a=across, v=nv: N.MVN0([x], {"across_channels": a, "normalize_variance": v,
                                                                 "eps": 0.1}),
                          lambda x, a=across, v=nv: ov2.mvn(x, a, v, 0.1), [X4], NORM_TOL))


def _ov_normalize_l2(mode: str, eps: float) -> Callable[..., Any]:
    # openvino.opset1.normalize_l2 drops eps_mode (it passes "mode"); set it on the node instead
    def build(x: Any, axes: Any) -> Any:
        n = oo.normalize_l2(x, axes, eps, mode)
        n.set_attribute("eps_mode", mode)
        return n
    return build


X_NL2 = f32(2, 5, 3, 4)
X_NL2[0, 0, 0, :] = 0.0
X_NL2[1, 1, 1, 1] = 1e-4
for axes in ([1], [2, 3], [-1], [0, 1, 2, 3], [1, 2, 3], []):
    for mode in ("add", "max"):
        CASES.append(Case(f"normalize_l2-{axes}-{mode}", lambda x, a, m=mode: eo.normalize_l2(x, a, 0.3, m),
                          _ov_normalize_l2(mode, 0.3), [X_NL2, Const(np.array(axes, np.int64))], NORM_TOL))
CASES.append(Case("normalize_l2-tiny-eps-max", lambda x, a: eo.normalize_l2(x, a, 1e-12, "max"),
                  _ov_normalize_l2("max", 1e-12), [X_NL2, Const(np.array([1], np.int64))], NORM_TOL))

C5 = [np.abs(f32(5)) + 0.5, f32(5), f32(5), np.abs(f32(5)) + 0.1]
CASES += [
    case("batch_norm-v5", same("batch_norm_inference", epsilon=1e-3), [X4, *C5], NORM_TOL),
    case("batch_norm-v5-const", same("batch_norm_inference", epsilon=0.5), [X4, *[Const(c) for c in C5]], NORM_TOL),
    case("batch_norm-v5-2d", same("batch_norm_inference", epsilon=1e-5), [f32(3, 5), *C5], NORM_TOL),
    Case("batch_norm-v0", lambda g, b, x, m, v: N.BatchNormInference0([g, b, x, m, v], {"epsilon": 1e-3}),
         lambda g, b, x, m, v: ov1.batch_norm_inference(x, g, b, m, v, 1e-3),
         [C5[0], C5[1], X4, C5[2], C5[3]], NORM_TOL),
]
for size in (1, 2, 3, 4, 5):
    for axes in ([1], [2, 3]):
        CASES.append(case(f"lrn-{size}-{axes}", same("lrn", alpha=0.5, beta=0.75, bias=2.0, size=size),
                          [f32(2, 6, 4, 5), Const(np.array(axes, np.int64))], NORM_TOL))
CASES.append(case("lrn-defaults", same("lrn"), [f32(1, 7, 3, 3), Const(np.array([1], np.int64))], NORM_TOL))
for shape in ((3, 4), (2, 5, 3), (2, 5, 3, 4)):
    CASES.append(case(f"grn-{len(shape)}d", same("grn", 0.5), [f32(*shape)], NORM_TOL))


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_matches_openvino(c: Case) -> None:
    assert_close(run_ember_case(c), run_oracle_case(c), c.tol)


# -- inference with dynamic, bounded and dynamic-rank shapes -----------------------------------

INFER: list[Case] = []
for r in ("reduce_sum", "reduce_l2", "reduce_max"):
    INFER += [
        case(f"{r}-bounded", same(r, keep_dims=False), [Dyn("1,?,4,2..5"), _i64(1, -1)]),
        case(f"{r}-bounded-keep", same(r, keep_dims=True), [Dyn("1,?,4,2..5"), _i64(-1)]),
        case(f"{r}-dyn-axes-1", same(r), [Dyn("1,?,4,2..5"), Dyn("1", np.int64)]),
        case(f"{r}-dyn-axes-scalar", same(r), [Dyn("1,?,4"), Dyn("", np.int32)]),
        case(f"{r}-dyn-axes-2", same(r), [Dyn("1,?,4,2..5"), Dyn("2", np.int64)]),
        case(f"{r}-dyn-axes-keep", same(r, keep_dims=True), [Dyn("1,?,4,2..5"), Dyn("2", np.int64)]),
        case(f"{r}-dyn-axes-len", same(r), [Dyn("1,?,4,2..5"), Dyn("?", np.int64)]),
        case(f"{r}-dyn-rank", same(r, keep_dims=True), [Dyn("..."), _i64(1)]),
        case(f"{r}-dyn-rank-dyn-axes", same(r), [Dyn("..."), Dyn("1", np.int64)]),
    ]
INFER += [
    case("reduce_logical_or-dyn", same("reduce_logical_or", keep_dims=True), [Dyn("?,3", bool), _i64(0)]),
    case("cumsum-dyn", same("cumsum"), [Dyn("?,2..3"), Const(np.int64(1))]),
    case("cumsum-dyn-rank", same("cumsum"), [Dyn("..."), Dyn("", np.int64)]),
    case("cumsum-scalar", same("cumsum"), [Dyn(""), Const(np.int64(-1))]),
    case("reduce_sum-scalar", same("reduce_sum", keep_dims=False), [Dyn(""), _i64(-1)]),
    case("reduce_l1-scalar", same("reduce_l1"), [Dyn(""), _i64(0)]),
    case("softmax-scalar", same("softmax", -1), [Dyn("")]),
    case("softmax-dyn", same("softmax", -1), [Dyn("?,1..4")]),
    case("softmax-dyn-rank", same("softmax", 3), [Dyn("...")]),
    case("log_softmax-dyn", same("log_softmax", 0), [Dyn("?,1..4,5")]),
    case("mvn-dyn", same("mvn", normalize_variance=True, eps=1e-9, eps_mode="outside_sqrt"),
         [Dyn("?,3,?"), Dyn("?", np.int64)]),
    case("mvn-dyn-rank", same("mvn", normalize_variance=True, eps=1e-9, eps_mode="inside_sqrt"),
         [Dyn("..."), _i64(1)]),
    case("normalize_l2-dyn", same("normalize_l2", eps=1e-6, eps_mode="add"), [Dyn("2..,3"), _i64(1)]),
    case("batch_norm-dyn", same("batch_norm_inference", epsilon=1e-3),
         [Dyn("?,?,4"), Dyn("?"), Dyn("3"), Dyn("?"), Dyn("1..5")]),
    case("batch_norm-dyn-rank", same("batch_norm_inference", epsilon=1e-3),
         [Dyn("..."), Dyn("?"), Dyn("3"), Dyn("?"), Dyn("?")]),
    case("batch_norm-bounded", same("batch_norm_inference", epsilon=1e-3),
         [Dyn("?,2..8,4"), Dyn("?"), Dyn("1..5"), Dyn("?"), Dyn("?")]),
    case("lrn-dyn", same("lrn"), [Dyn("?,?,4..8,?"), _i64(1)]),
    case("grn-dyn", same("grn", 1e-6), [Dyn("?,3,?")]),
    case("grn-dyn-rank", same("grn", 1e-6), [Dyn("...")]),
]


@pytest.mark.parametrize("c", INFER, ids=[c.id for c in INFER])
def test_inference_matches_openvino(c: Case) -> None:
    check_infer(c)


# -- errors a user can cause -----------------------------------------------------------------

ERRORS = [
    ("reduce axis out of range", lambda: eo.reduce_sum(eo.parameter([2, 3]), np.array([2], np.int64)), "axis 2"),
    ("reduce float axes", lambda: eo.reduce_sum(eo.parameter([2, 3]), np.array([1.0], np.float32)), "integer"),
    ("logical on floats", lambda: eo.reduce_logical_and(eo.parameter([2, 3]), np.array([1])), "boolean"),
    ("softmax v1 negative axis", lambda: N.Softmax1([eo.parameter([2, 3])], {"axis": -1}), "axis -1"),
    ("softmax axis", lambda: eo.softmax(eo.parameter([2, 3]), 2), "axis 2"),
    ("softmax scalar axis", lambda: eo.softmax(eo.parameter([]), 1), "axis 1"),
    ("mvn eps_mode", lambda: eo.mvn(eo.parameter([2, 3]), np.array([1]), True, 1e-9, "bad"), "eps_mode"),
    ("batch norm channels", lambda: eo.batch_norm_inference(eo.parameter([2, 3]), np.ones(4, np.float32),
                                                            np.ones(4, np.float32), np.ones(4, np.float32),
                                                            np.ones(4, np.float32), 1e-5), "channels"),
    ("grn rank", lambda: eo.grn(eo.parameter([2, 3, 4, 5, 6]), 1e-6), "rank"),
    ("cumsum axis shape", lambda: eo.cumsum(eo.parameter([2, 3]), np.array([0, 1])), "scalar"),
]


@pytest.mark.parametrize("make,needle", [(m, n) for _, m, n in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_node(make: Callable[[], Any], needle: str) -> None:
    with pytest.raises(ShapeInferenceError, match=needle) as info:
        make()
    assert "'" in str(info.value)  # the message names the node


def test_mvn0_writes_reduction_axes_like_openvino() -> None:
    node = N.MVN0([eo.parameter([1, 3, 4, 4])], {"across_channels": False})
    assert node.attrs["reduction_axes"] == [2, 3]
    assert node.get_type_info() == ("MVN", "opset2")
    assert N.Softmax.type_name == "SoftMax"


def check_ir_round_trip(tmp_path: Path, outputs: Callable[[Any], list[Any]], shape: list[int]) -> None:
    """ember writes IR that OpenVINO runs to ember's results, and reads back OpenVINO's IR of it."""
    from ember.io import read_ir, write_ir

    p = eo.parameter(shape, np.float32, name="x")
    model = Model([eo.result(o) for o in outputs(p)], [p], "t")
    x = f32(*shape)
    ours = run_model(model, [x])
    write_ir(model, tmp_path / "ember.xml")
    core = ov.Core()
    ov_model = core.read_model(tmp_path / "ember.xml")
    compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled([x])
    assert_close(ours, [res[o] for o in compiled.outputs], (1e-4, 1e-5))
    ov.save_model(ov_model, tmp_path / "openvino.xml", compress_to_fp16=False)
    # attributes come back as OpenVINO stores them (eps as f32), so allow an ulp
    assert_close(run_model(read_ir(tmp_path / "openvino.xml"), [x]), ours, (1e-6, 1e-7))


def test_ir_round_trip_with_openvino(tmp_path: Path) -> None:
    gamma = np.abs(f32(4)) + 0.1
    check_ir_round_trip(tmp_path, lambda p: [
        eo.reduce_mean(p, np.array([1, -1]), True), eo.reduce_l2(p, np.array([2])), eo.reduce_max(p, np.array(0)),
        eo.reduce_logical_or(eo.greater(p, np.float32(0)), np.array([0])),
        eo.cumsum(p, np.int64(2), True, True), eo.softmax(p, -2), N.Softmax1([p], {"axis": 1}), eo.log_softmax(p, 3),
        eo.mvn(p, np.array([2, 3]), True, 1e-5, "outside_sqrt"),
        N.MVN0([p], {"across_channels": False, "normalize_variance": True, "eps": 1e-3}),
        eo.normalize_l2(p, np.array([1]), 1e-3, "add"), eo.grn(p, 0.1), eo.lrn(p, np.array([1]), 0.1, 0.75, 1.0, 3),
        eo.batch_norm_inference(p, gamma, f32(4), f32(4), gamma, 1e-3),
        N.BatchNormInference0([gamma, f32(4), p, f32(4), gamma], {"epsilon": 1e-3}),
    ], [2, 4, 6, 6])

