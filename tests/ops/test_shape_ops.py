"""Shape ops (ember/ops/shape_ops.py) against real OpenVINO: one table of run cases, one table of
shape-inference cases on dynamic and bounded shapes, one table of errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ember.opset as eo  # noqa: E402
from ember.errors import ShapeInferenceError  # noqa: E402
from ember.graph.shape import PartialShape  # noqa: E402
from ember.graph.types import Type, cast_array  # noqa: E402
from ember.ops import shape_ops as so  # noqa: E402
from oracle import Const, _build, compare_with_openvino, run_ember  # noqa: E402

ov = pytest.importorskip("openvino")
import openvino.opset16 as ov16  # noqa: E402
from openvino.utils.node_factory import NodeFactory  # noqa: E402

rng = np.random.default_rng(7)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def i64(v: Any) -> Const:
    return Const(np.array(v, dtype=np.int64))


def i32(v: Any) -> Const:
    return Const(np.array(v, dtype=np.int32))


# -- older op versions: ember's class next to OpenVINO's node factory for that opset ------------


def old(ember_cls: type, opset: str, type_name: str, attrs: dict | None = None) -> tuple[Callable, Callable]:
    """(ember builder, OpenVINO builder) pair for an op version opset16 no longer builds."""
    factory = NodeFactory(opset)

    def ours(*ins: Any) -> Any:
        return ember_cls(list(ins), dict(attrs or {}))

    def theirs(*ins: Any) -> Any:
        return factory.create(type_name, [i.output(0) if hasattr(i, "output") else i for i in ins], dict(attrs or {}))

    return ours, theirs


def listed(builder: str, **kwargs: Any) -> tuple[Callable, Callable]:
    """(ember, OpenVINO) pair for builders that take their inputs as one list (concat, einsum)."""
    return (lambda *ins: getattr(eo, builder)(list(ins), **kwargs),
            lambda *ins: getattr(ov16, builder)(list(ins), **kwargs))


def compare_numpy(op: str, inputs: list[Any], args: tuple, kwargs: dict, expect: Callable[..., Any]) -> None:
    """For the few cases that crash OpenVINO's CPU plugin: compare with numpy written here."""
    ours = run_ember(op, inputs, *args, **kwargs)
    want = expect(*[x.value if isinstance(x, Const) else x for x in inputs])
    want = want if isinstance(want, list) else [want]
    for a, b in zip(ours, want):
        assert a.shape == np.shape(b)
        np.testing.assert_allclose(a, b)


def compare_pair(pair: tuple[Callable, Callable], inputs: list[Any], rtol: float = 1e-5, atol: float = 1e-6) -> None:
    from ember.devices.reference import run_model
    from ember.graph import Model

    ours_fn, theirs_fn = pair
    ens = SimpleNamespace(parameter=eo.parameter, constant=eo.constant, result=eo.result, op=ours_fn)
    model, feeds = _build(ens, Model, "op", inputs, (), {}, None)
    ours = run_model(model, feeds)
    for o, r in zip(ours, model.get_results()):
        assert r.output(0).partial_shape.accepts(o.shape), f"inferred {r.output(0).partial_shape}, got {o.shape}"
        assert o.dtype == r.output(0).element_type.dtype
    ons = SimpleNamespace(parameter=ov16.parameter, constant=ov16.constant, result=ov16.result, op=theirs_fn)
    omodel, ofeeds = _build(ons, ov.Model, "op", inputs, (), {}, None)
    compiled = ov.Core().compile_model(omodel, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(ofeeds)
    theirs = [np.asarray(res[o]) for o in compiled.outputs]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape, f"shape {a.shape} != OpenVINO's {b.shape}"
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)


# -- one table of run cases: (id, builder name or (ember, OpenVINO) pair, inputs, args, kwargs) ---

x234 = f32(2, 3, 4)
CASES: list[tuple[str, Any, list[Any], tuple, dict]] = [
    # Reshape
    ("reshape_minus1", "reshape", [x234, i64([4, -1])], (False,), {}),
    ("reshape_special_zero", "reshape", [x234, i64([0, -1])], (True,), {}),
    ("reshape_zero_no_special", "reshape", [f32(0, 3), i64([3, 0])], (False,), {}),
    ("reshape_empty_special", "reshape", [f32(2, 0, 3), i64([0, -1])], (True,), {}),
    ("reshape_i32_target", "reshape", [x234, i32([3, 2, 2, 2])], (False,), {}),
    ("reshape_to_1d", "reshape", [x234, i64([-1])], (False,), {}),
    ("reshape_runtime_target", "reshape", [x234, np.array([4, 0, 2], np.int64)], (True,), {}),
    ("reshape_scalar_to_1", "reshape", [np.float32(3.5), i64([1, 1])], (False,), {}),
    # Squeeze
    ("squeeze_axes", "squeeze", [f32(1, 3, 1, 2), i64([0, 2])], (), {}),
    ("squeeze_neg_axis", "squeeze", [f32(1, 3, 1, 2), i64([-2])], (), {}),
    ("squeeze_scalar_axis", "squeeze", [f32(1, 3), i64(0)], (), {}),
    ("squeeze_no_axes", "squeeze", [f32(1, 3, 1, 2)], (), {}),
    ("squeeze_non1_kept", "squeeze", [f32(1, 3), i64([0, 1])], (), {}),
    ("squeeze_skip", "squeeze", [f32(1, 3), i64([0, 1])], (), {"allow_axis_skip": True}),
    ("squeeze_i32_axes", "squeeze", [f32(2, 1), i32([1])], (), {}),
    ("squeeze_empty_dim", "squeeze", [f32(1, 0, 1)], (), {}),
    ("squeeze_v0", old(so.Squeeze, "opset1", "Squeeze"), [f32(1, 3, 1), i64([0, -1])], (), {}),
    ("squeeze_v0_no_axes", old(so.Squeeze, "opset1", "Squeeze"), [f32(1, 1, 3)], (), {}),
    # Unsqueeze
    ("unsqueeze", "unsqueeze", [f32(2, 3), i64([0, 3])], (), {}),
    ("unsqueeze_neg", "unsqueeze", [f32(2, 3), i64([-1])], (), {}),
    ("unsqueeze_scalar", "unsqueeze", [np.float32(2), i64([0])], (), {}),
    ("unsqueeze_dup", "unsqueeze", [f32(2, 3), i64([0, 0])], (), {}),
    ("unsqueeze_i32_empty_dim", "unsqueeze", [f32(0, 2), i32([1])], (), {}),
    # ShapeOf
    ("shape_of_i64", "shape_of", [f32(2, 0, 3)], (), {}),
    ("shape_of_i32", "shape_of", [f32(2, 3)], ("i32",), {}),
    ("shape_of_scalar", "shape_of", [np.float32(1)], (), {}),
    ("shape_of_v0", old(so.ShapeOf, "opset1", "ShapeOf"), [f32(4, 1)], (), {}),
    # Broadcast
    ("bcast_numpy", "broadcast", [f32(3, 1), i64([2, 3, 4])], (), {}),
    ("bcast_scalar", "broadcast", [np.float32(2), i64([2, 2])], (), {}),
    # OpenVINO 2026.4's CPU plugin dies with SIGFPE on this one: numpy is the oracle
    ("bcast_empty", "broadcast", [f32(0, 1), i64([0, 4])], (), {"expect": lambda x, t: np.broadcast_to(x, t)}),
    ("bcast_explicit", "broadcast", [f32(3), i64([2, 3, 4]), i64([1])], (), {"broadcast_spec": "EXPLICIT"}),
    ("bcast_explicit_2", "broadcast", [f32(2, 4), i64([2, 3, 4]), i32([0, 2])], (), {"broadcast_spec": "EXPLICIT"}),
    ("bcast_bidir", "broadcast", [f32(3, 1), i64([2, 1, 4])], (), {"broadcast_spec": "BIDIRECTIONAL"}),
    ("bcast_bidir_small_target", "broadcast", [x234, i64([3, 1])], (), {"broadcast_spec": "BIDIRECTIONAL"}),
    ("bcast_pdpd", "broadcast", [f32(3, 1), i64([1, 4])], (), {"broadcast_spec": "PDPD"}),
    ("bcast_runtime_target", "broadcast", [f32(3, 1), np.array([2, 3, 5], np.int64)], (), {}),
    ("bcast_v1_numpy", old(so.Broadcast1, "opset1", "Broadcast", {"mode": "numpy"}), [f32(4), i64([3, 4])], (), {}),
    ("bcast_v1_explicit", old(so.Broadcast1, "opset1", "Broadcast", {"mode": "explicit"}),
     [f32(3), i64([3, 2]), i64([0])], (), {}),
    # Tile
    ("tile", "tile", [f32(2, 3), i64([2, 1])], (), {}),
    ("tile_short_repeats", "tile", [x234, i64([2])], (), {}),
    ("tile_long_repeats", "tile", [f32(2, 3), i32([2, 1, 3])], (), {}),
    ("tile_zero", "tile", [f32(2, 3), i64([0, 2])], (), {}),
    ("tile_negative", "tile", [f32(2, 3), i64([-1, 2])], (), {}),
    ("tile_scalar", "tile", [np.float32(1.5), i64([3])], (), {}),
    # Range (v4 and v0)
    ("range_i64", "range", [i64(0), i64(10), i64(3)], ("i64",), {}),
    ("range_negative_step", "range", [i64(10), i64(0), i64(-3)], ("i32",), {}),
    ("range_f32", "range", [Const(np.float32(0.5)), Const(np.float32(2.5)), Const(np.float32(0.5))], ("f32",), {}),
    ("range_f32_to_i32", "range", [Const(np.float32(0.5)), Const(np.float32(5.9)), Const(np.float32(1.5))],
     ("i32",), {}),
    ("range_int_to_f32", "range", [i64(0), i64(5), i64(2)], ("f32",), {}),
    ("range_empty", "range", [i64(5), i64(0), i64(1)], ("i64",), {}),
    ("range_runtime", "range", [np.int64(1), i64(7), i64(2)], ("i64",), {}),
    ("range_v0_i32", old(so.Range0, "opset1", "Range"), [i32(2), i32(-7), i32(-2)], (), {}),
    ("range_v0_f32", old(so.Range0, "opset1", "Range"),
     [Const(np.float32(0.1)), Const(np.float32(1.0)), Const(np.float32(0.3))], (), {}),
    # Convert (values OpenVINO defines: in range of the destination)
    ("convert_f32_i32", "convert", [np.array([-2.7, -0.5, 0, 0.5, 2.7, 1e6, -2e9], np.float32)], ("i32",), {}),
    ("convert_f32_u8", "convert", [np.array([0, 1.9, 127.5, 254.99], np.float32)], ("u8",), {}),
    ("convert_f32_i8", "convert", [np.array([-128.5, -1.5, 126.9], np.float32)], ("i8",), {}),
    ("convert_f32_bool", "convert", [np.array([0, -0.0, 1.5, -3, np.inf], np.float32)], ("boolean",), {}),
    ("convert_bool_f32", "convert", [np.array([True, False])], ("f32",), {}),
    ("convert_i64_f32", "convert", [np.array([-(2 ** 40), 7, 0], np.int64)], ("f32",), {}),
    ("convert_f32_f16", "convert", [np.array([1e-8, 3.14159, 70000, -np.inf, np.nan], np.float32)], ("f16",), {}),
    ("convert_i32_i8_wrap", "convert", [np.array([300, -129, 127, -1], np.int32)], ("i8",), {}),
    ("convert_u8_i32", "convert", [np.array([0, 255, 128], np.uint8)], ("i32",), {}),
    ("convert_empty", "convert", [f32(0, 2)], ("i64",), {}),
    ("convert_like", "convert_like", [np.array([1.7, -3.2], np.float32), Const(np.zeros(1, np.int32))], (), {}),
    ("convert_like_i32_f16", "convert_like", [np.array([1, -3], np.int32), Const(np.zeros(1, np.float16))], (), {}),
    # NonZero
    ("non_zero", "non_zero", [np.array([[0, 1.5, 0], [2, 0, -1]], np.float32)], (), {}),
    ("non_zero_i32_out", "non_zero", [np.array([[0, 1], [1, 1]], np.int32)], ("i32",), {}),
    ("non_zero_all_zero", "non_zero", [np.zeros((2, 3), np.float32)], (), {}),
    ("non_zero_bool_3d", "non_zero", [rng.random((2, 3, 2)) > 0.5], (), {}),
    ("non_zero_empty", "non_zero", [np.zeros((0, 3), np.float32)], (), {}),
    ("non_zero_nan", "non_zero", [np.array([np.nan, 0, -0.0, np.inf], np.float32)], (), {}),
    ("non_zero_scalar", "non_zero", [np.float32(3)], (), {}),
    # Concat
    ("concat_0", listed("concat", axis=0), [f32(2, 3), f32(1, 3)], (), {}),
    ("concat_neg", listed("concat", axis=-1), [f32(2, 3), f32(2, 1), Const(f32(2, 2))], (), {}),
    ("concat_empty", listed("concat", axis=0), [f32(0, 3), f32(2, 3), f32(0, 3)], (), {}),
    ("concat_i32", listed("concat", axis=0), [np.array([1, 2], np.int32), Const(np.array([3], np.int32))], (), {}),
    ("concat_one", listed("concat", axis=1), [x234], (), {}),
    # Split
    ("split_0", "split", [f32(6, 4), i64(0)], (3,), {}),
    ("split_neg", "split", [f32(2, 4), i64(-1)], (2,), {}),
    ("split_i32_axis", "split", [x234, i32(1)], (3,), {}),
    ("split_one", "split", [f32(2, 4), i64(1)], (1,), {}),
    ("split_empty", "split", [f32(0, 4), i64(1)], (2,), {}),
    # VariadicSplit
    ("vsplit", "variadic_split", [f32(6, 4), i64(0), i64([1, 2, 3])], (), {}),
    ("vsplit_minus1", "variadic_split", [f32(6, 4), i64(0), i64([-1, 2])], (), {}),
    ("vsplit_neg_axis", "variadic_split", [f32(2, 5), i64(-1), i32([1, -1])], (), {}),
    ("vsplit_zero_part", "variadic_split", [f32(6, 4), i64(0), i64([0, 6])], (), {}),
]


def check_case(case: tuple) -> None:
    """Run one row of a CASES table: OpenVINO by builder name, an (ember, OpenVINO) pair, or
    numpy when the row has ``expect``."""
    _, op, inputs, args, kwargs = case
    if "expect" in kwargs:
        kwargs = dict(kwargs)
        compare_numpy(op, inputs, args, kwargs, kwargs.pop("expect"))
    elif isinstance(op, str):
        compare_with_openvino(op, inputs, *args, **kwargs)
    else:
        compare_pair(op, inputs)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_openvino(case: tuple) -> None:
    check_case(case)


# -- shape inference on dynamic and bounded shapes ----------------------------------------------


def P(o: Any, shape: str, dtype: Any = np.float32) -> Any:
    """A parameter of partial shape ``shape`` in ember (``o is eo``) or OpenVINO."""
    return o.parameter(shape if o is eo else ov.PartialShape(shape), dtype)


def C(o: Any, v: Any, dtype: Any = np.int64) -> Any:
    return o.constant(np.array(v, dtype=dtype))


# (id, build(o) -> node, expected ember shape or None for "same as OpenVINO")
INFER: list[tuple[str, Callable[[Any], Any], str | None]] = [
    ("reshape_shapeof_static", lambda o: o.reshape(P(o, "6"), o.shape_of(P(o, "2,3")), False), None),
    ("reshape_shapeof_dynamic", lambda o: o.reshape(P(o, "?"), o.shape_of(P(o, "?,3")), False), None),
    ("reshape_shapeof_bounded", lambda o: o.reshape(P(o, "1..20"), o.shape_of(P(o, "1..4,3")), False), None),
    ("reshape_shapeof_dynamic_rank_known",
     lambda o: o.reshape(P(o, "?,?,4"), o.shape_of(P(o, "?,?,?")), False), None),
    ("reshape_gather_concat",
     lambda o: o.reshape(P(o, "2..5,3,4"), o.concat([o.gather(o.shape_of(P(o, "2..5,3,4")), C(o, [0]), C(o, 0)),
                                                     C(o, [-1])], 0), False), None),
    *[(f"reshape_onnx_flatten_{i}",
       lambda o, s=shape: o.reshape(P(o, s), o.concat([o.unsqueeze(o.gather(o.shape_of(P(o, s)), C(o, 0), C(o, 0)),
                                                                  C(o, [0])), C(o, [-1])], 0), False), None)
      for i, shape in enumerate(["?,3,4", "2..5,3,4", "2,3,4"])],
    *[(f"reshape_multiplied_dims_{i}",
       lambda o, s=shape: o.reshape(P(o, s), o.concat([C(o, [-1]), o.multiply(
           o.gather(o.shape_of(P(o, s)), C(o, [1]), C(o, 0)), o.gather(o.shape_of(P(o, s)), C(o, [2]), C(o, 0)))],
           0), False), None)
      for i, shape in enumerate(["?,3,4", "2..5,3,4"])],
    ("reshape_target_param", lambda o: o.reshape(P(o, "2,3"), P(o, "3", np.int64), True), None),
    ("reshape_dynamic_rank_in", lambda o: o.reshape(P(o, "..."), C(o, [0, -1]), True), None),
    ("reshape_minus1_dynamic", lambda o: o.reshape(P(o, "?,3,4"), C(o, [-1, 6]), False), None),
    ("reshape_minus1_bounded", lambda o: o.reshape(P(o, "2..8,3,4"), C(o, [-1, 6]), False), None),
    ("reshape_minus1_bounded_uneven", lambda o: o.reshape(P(o, "2..8,3,4"), C(o, [-1, 5]), False), None),
    ("reshape_special_zero_bounded", lambda o: o.reshape(P(o, "2..8,3,4"), C(o, [0, -1]), True), None),
    ("squeeze_dynamic_axis", lambda o: o.squeeze(P(o, "?,3"), C(o, [0])), None),
    ("squeeze_bounded_not1", lambda o: o.squeeze(P(o, "2..5,3,1"), C(o, [0, 2])), None),
    ("squeeze_no_axes_dynamic", lambda o: o.squeeze(P(o, "?,1,3")), None),
    ("squeeze_no_axes_bounded", lambda o: o.squeeze(P(o, "2..3,1,3")), None),
    ("squeeze_skip_dynamic", lambda o: o.squeeze(P(o, "?,1,3"), C(o, [0, 1]), True), None),
    ("squeeze_axes_param", lambda o: o.squeeze(P(o, "2,3"), P(o, "1", np.int64)), "[2,3]"),
    ("unsqueeze_dynamic", lambda o: o.unsqueeze(P(o, "?,2..3"), C(o, [0, -1])), None),
    ("unsqueeze_dynamic_rank", lambda o: o.unsqueeze(P(o, "..."), C(o, [0])), None),
    ("shape_of_dynamic_rank", lambda o: o.shape_of(P(o, "...")), None),
    # numpy mode: the last target dimension must be the data's 5
    ("bcast_target_param", lambda o: o.broadcast(P(o, "5"), P(o, "2", np.int64)), "[?,5]"),
    ("bcast_target_shapeof", lambda o: o.broadcast(P(o, "5"), o.shape_of(P(o, "?,?"))), "[?,5]"),
    ("bcast_bidir_param", lambda o: o.broadcast(P(o, "5,1"), P(o, "3", np.int64), None, "BIDIRECTIONAL"), None),
    ("bcast_bidir_dynamic", lambda o: o.broadcast(P(o, "?,1"), C(o, [2, 1, 4]), None, "BIDIRECTIONAL"), None),
    ("bcast_numpy_shapeof_bounded", lambda o: o.broadcast(P(o, "1,3"), o.shape_of(P(o, "2..4,3"))), None),
    ("tile_dynamic", lambda o: o.tile(P(o, "?,2..3"), C(o, [2, 2])), None),
    ("tile_param", lambda o: o.tile(P(o, "2,3"), P(o, "3", np.int64)), None),
    ("range_param", lambda o: o.range(P(o, "", np.int64), C(o, 5), C(o, 1), "i64"), None),
    ("range_bounded_stop", lambda o: o.range(C(o, 1), o.gather(o.shape_of(P(o, "2..6,?")), C(o, 0), C(o, 0)),
                                             C(o, 2), "i64"), "[1..3]"),
    ("range_bounded_start_negative_step",
     lambda o: o.range(o.gather(o.shape_of(P(o, "2..6,?")), C(o, 0), C(o, 0)), C(o, 0), C(o, -1), "i32"), "[2..6]"),
    ("bcast_bidir_one_side_may_be_1", lambda o: o.broadcast(P(o, "?,2..5"), o.shape_of(P(o, "2..5,?")), None,
                                                            "BIDIRECTIONAL"), "[2..5,2..5]"),
    ("nonzero_static", lambda o: o.non_zero(P(o, "2,3,4")), None),
    ("nonzero_bounded", lambda o: o.non_zero(P(o, "2..3,4")), None),
    ("nonzero_dynamic_rank", lambda o: o.non_zero(P(o, "...")), None),
    ("concat_dynamic", lambda o: o.concat([P(o, "?,3"), P(o, "2,?"), P(o, "1..4,3")], 0), None),
    ("concat_dynamic_rank", lambda o: o.concat([P(o, "..."), P(o, "2,?")], -1), None),
    ("split_bounded", lambda o: o.split(P(o, "?,4..9"), C(o, 1), 2), None),
    ("split_axis_param", lambda o: o.split(P(o, "2,4"), P(o, "", np.int64), 2), None),
    ("vsplit_dynamic", lambda o: o.variadic_split(P(o, "?,10"), C(o, 1), C(o, [2, -1, 3])), None),
    ("vsplit_bounded_minus1", lambda o: o.variadic_split(P(o, "?,3..10"), C(o, 1), C(o, [2, -1])), "[?,2] [?,1..8]"),
    ("vsplit_lengths_param", lambda o: o.variadic_split(P(o, "5,10"), C(o, 0), P(o, "2", np.int64)), None),
    ("convert_dynamic", lambda o: o.convert(P(o, "?,2.."), "i32"), None),
]


def _shapes(node: Any) -> list[str]:
    return [str(node.get_output_partial_shape(i)) for i in range(node.get_output_size())]


def check_infer(case: tuple) -> None:
    """ember's inferred shapes are within OpenVINO's, and equal them unless the row expects better."""
    _, build, expected = case
    ours, theirs = _shapes(build(eo)), _shapes(build(ov16))
    for a, b in zip(ours, theirs):
        assert PartialShape(a).refines(PartialShape(b)), f"ember {a} is not within OpenVINO's {b}"
    if expected is None:
        assert ours == theirs
    else:
        assert " ".join(ours) == expected, f"ember {ours}, OpenVINO {theirs}"


@pytest.mark.parametrize("case", INFER, ids=[c[0] for c in INFER])
def test_infer_dynamic(case: tuple) -> None:
    check_infer(case)


def test_reshape_of_shape_of_static_folds() -> None:
    x = eo.parameter([2, 3, 4], np.float32)
    target = eo.concat([eo.gather(eo.shape_of(x), [0], 0), eo.constant(np.array([-1], np.int64))], 0)
    r = eo.reshape(x, target, False)
    assert r.get_output_partial_shape(0) == PartialShape([2, 12])
    assert r.input_value(1).tolist() == [2, -1]  # the whole shape subgraph folded to a constant


def test_reshape_of_shape_of_dynamic_keeps_rank_and_bounds() -> None:
    x = eo.parameter("?,3..6,4", np.float32)
    r = eo.reshape(eo.parameter("...", np.float32), eo.shape_of(x), False)
    assert str(r.get_output_partial_shape(0)) == "[?,3..6,4]"
    assert so.value_bounds(eo.shape_of(x).output(0)) == [(0, so.INF), (3, 6), (4, 4)]


def test_shape_of_bounds_through_convert_and_slice() -> None:
    x = eo.parameter("1..8,?,5", np.float32)
    s = eo.convert(eo.slice(eo.shape_of(x, "i32"), [0], [3], [2]), "i64")
    r = eo.reshape(eo.parameter("?", np.float32), s, False)
    assert str(r.get_output_partial_shape(0)) == "[1..8,5]"
    # with 40 elements the one unknown dimension can only be 8
    r = eo.reshape(eo.parameter([40], np.float32), s, False)
    assert str(r.get_output_partial_shape(0)) == "[8,5]"


def test_reshape_runs_with_dynamic_parameters() -> None:
    out = run_ember("reshape", [x234, np.array([0, -1], np.int64)], True)
    np.testing.assert_array_equal(out[0], x234.reshape(2, 12))


# -- attribute names and versions as OpenVINO's IR writes them ---------------------------------

META = [
    (lambda o: o.reshape(P(o, "2,3"), C(o, [3, 2]), True), ("Reshape", "opset1")),
    (lambda o: o.squeeze(P(o, "1,3"), C(o, [0]), True), ("Squeeze", "opset15")),
    (lambda o: o.unsqueeze(P(o, "3"), C(o, [0])), ("Unsqueeze", "opset1")),
    (lambda o: o.shape_of(P(o, "3"), "i32"), ("ShapeOf", "opset3")),
    (lambda o: o.broadcast(P(o, "3"), C(o, [2, 3]), None, "BIDIRECTIONAL"), ("Broadcast", "opset3")),
    (lambda o: o.tile(P(o, "3"), C(o, [2])), ("Tile", "opset1")),
    (lambda o: o.range(C(o, 0), C(o, 3), C(o, 1), "i32"), ("Range", "opset4")),
    (lambda o: o.convert(P(o, "3"), "f16"), ("Convert", "opset1")),
    (lambda o: o.convert_like(P(o, "3"), C(o, [1])), ("ConvertLike", "opset1")),
    (lambda o: o.non_zero(P(o, "3"), "i32"), ("NonZero", "opset3")),
    (lambda o: o.concat([P(o, "3"), P(o, "3")], 0), ("Concat", "opset1")),
    (lambda o: o.split(P(o, "4"), C(o, 0), 2), ("Split", "opset1")),
    (lambda o: o.variadic_split(P(o, "4"), C(o, 0), C(o, [1, 3])), ("VariadicSplit", "opset1")),
]


def check_ir_meta(build: Callable, type_info: tuple[str, str], skip: tuple[str, ...] = ()) -> None:
    """Type name, version and attributes (names and written values) as OpenVINO has them."""
    ours, theirs = build(eo), build(ov16)
    assert (ours.type_name, ours.version) == type_info
    assert (theirs.get_type_name(), theirs.get_type_info().version_id) == type_info
    assert set(ours.attrs) == set(theirs.get_attributes())
    for k, v in theirs.get_attributes().items():
        if k in skip:
            continue
        a = next(a for a in type(ours).attributes if a.name == k)
        assert a.format(ours.attrs[k]) == a.format(a.coerce(v)), k


@pytest.mark.parametrize("build,type_info", META, ids=[m[1][0] for m in META])
def test_ir_attributes_and_version(build: Callable, type_info: tuple[str, str]) -> None:
    check_ir_meta(build, type_info)


# -- errors a user can cause name the node and the reason ---------------------------------------

ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    ("reshape_count", lambda: eo.reshape(eo.parameter([2, 3]), [4, 2], False, name="r"), "6 elements"),
    ("reshape_two_minus1", lambda: eo.reshape(eo.parameter([2, 3]), [-1, -1], False, name="r"), "more than one -1"),
    ("reshape_not_divisible", lambda: eo.reshape(eo.parameter([2, 3]), [4, -1], False, name="r"), "not divisible"),
    ("reshape_float_target", lambda: eo.reshape(eo.parameter([2, 3]), np.array([6.0], np.float32), False, name="r"),
     "integer"),
    ("concat_rank", lambda: eo.concat([eo.parameter([2, 3]), eo.parameter([2])], 0, name="r"), "rank"),
    ("concat_dims", lambda: eo.concat([eo.parameter([2, 3]), eo.parameter([2, 4])], 0, name="r"), "differ"),
    ("concat_axis", lambda: eo.concat([eo.parameter([2, 3])], 2, name="r"), "out of range"),
    ("split_divisible", lambda: eo.split(eo.parameter([5]), 0, 2, name="r"), "not divisible"),
    ("vsplit_sum", lambda: eo.variadic_split(eo.parameter([5]), 0, [1, 2], name="r"), "sum to 3"),
    ("bcast_numpy", lambda: eo.broadcast(eo.parameter([3]), [2, 4], name="r"), "cannot be broadcast"),
    ("bcast_rank", lambda: eo.broadcast(eo.parameter([2, 3]), [3], name="r"), "smaller rank"),
    ("range_step0", lambda: eo.range(0, 5, 0, "i64", name="r"), "zero"),
    ("shape_of_type", lambda: eo.shape_of(eo.parameter([2]), "f32", name="r"), "i32 or i64"),
    ("unsqueeze_axis", lambda: eo.unsqueeze(eo.parameter([2]), [3], name="r"), "out of range"),
]


def check_error(case: tuple) -> None:
    """Building the row's node (named 'r') raises an error naming it and saying why."""
    _, build, words = case
    with pytest.raises(ShapeInferenceError) as info:
        build()
    assert "'r'" in str(info.value) and words in str(info.value), str(info.value)


@pytest.mark.parametrize("case", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_node_and_reason(case: tuple) -> None:
    check_error(case)


# -- Convert: ember's float-to-integer rule where OpenVINO leaves the result undefined ----------

SATURATE = [
    (np.float32, Type.i8, [np.nan, np.inf, -np.inf, 1e10, -1e10, 255.5, -2.7], [0, 127, -128, 127, -128, 127, -2]),
    (np.float32, Type.u8, [np.nan, -2.7, 300.2, np.inf], [0, 0, 255, 255]),
    (np.float32, Type.i32, [np.nan, 3e9, -3e9], [0, 2 ** 31 - 1, -(2 ** 31)]),
    (np.float64, Type.u64, [-1.0, 1e30], [0, 2 ** 64 - 1]),
    (np.float16, Type.i64, [np.inf, -np.inf, np.nan], [2 ** 63 - 1, -(2 ** 63), 0]),
]


@pytest.mark.parametrize("src,dst,values,expected", SATURATE)
def test_convert_saturates_out_of_range(src: Any, dst: Type, values: list, expected: list) -> None:
    x = np.array(values, dtype=src)
    with np.errstate(all="ignore"):
        want = cast_array(x, Type.from_dtype(x.dtype), dst)
    assert want.tolist() == expected
    out = run_ember("convert", [x], dst.name)
    assert out[0].tolist() == expected
