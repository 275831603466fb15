"""The graph layer: types, shapes, layouts, nodes, models."""

from __future__ import annotations

import numpy as np
import pytest

import ember as ov
import ember.opset as ops
from ember.errors import EmberError, GraphError, ShapeInferenceError, UnsupportedOpError
from ember.graph import Dimension, Layout, Model, PartialShape, Type
from ember.graph.types import cast_array

ALL_TYPES = ["boolean", "bf16", "f16", "f32", "f64", "i4", "i8", "i16", "i32", "i64", "u1", "u2", "u3", "u4",
             "u6", "u8", "u16", "u32", "u64", "nf4", "f8e4m3", "f8e5m2", "f8e8m0", "f4e2m1", "string", "dynamic"]


@pytest.mark.parametrize("name", ALL_TYPES)
def test_every_openvino_type_exists(name: str) -> None:
    t = Type.from_name(name)
    assert t.name == name
    assert getattr(Type, name) is t
    assert Type.from_name(t.precision) is t


def test_types_match_openvino_properties() -> None:
    ov_rt = pytest.importorskip("openvino")
    for name in ALL_TYPES:
        if name in ("dynamic",):
            continue
        theirs = getattr(ov_rt.Type, name)
        ours = getattr(Type, name)
        assert ours.bitwidth == theirs.bitwidth, name
        assert ours.is_real == theirs.is_real(), name
        assert ours.is_signed == theirs.is_signed(), name


def test_type_lookup_errors() -> None:
    with pytest.raises(UnsupportedOpError, match="unknown element type 'f7'"):
        Type.from_name("f7")
    assert Type.from_dtype(np.float32) is Type.f32
    assert Type.from_dtype(np.dtype("int64")) is Type.i64
    assert Type.from_dtype(np.bool_) is Type.boolean


@pytest.mark.parametrize("src,dst,values,expected", [
    (Type.f32, Type.i8, [1.7, -1.7, 300, -300, np.nan, np.inf, -np.inf], [1, -1, 127, -128, 0, 127, -128]),
    (Type.f32, Type.u8, [-5, 255.9, 3.2], [0, 255, 3]),
    (Type.f32, Type.boolean, [0.0, -0.0, 2.0, np.nan], [False, False, True, True]),
    (Type.i64, Type.u4, [-1, 3, 20], [0, 3, 15]),
    (Type.i32, Type.i4, [-9, -8, 7, 8], [-8, -8, 7, 7]),
    (Type.nf4, Type.f32, [0, 7, 15], [-1.0, 0.0, 1.0]),
])
def test_cast_array(src: Type, dst: Type, values: list, expected: list) -> None:
    arr = np.asarray(values).astype(src.dtype)
    np.testing.assert_array_equal(cast_array(arr, src, dst), np.asarray(expected).astype(dst.dtype))


def test_dimensions() -> None:
    assert str(Dimension()) == "?" and Dimension().is_dynamic
    assert str(Dimension(5)) == "5" and Dimension(5).get_length() == 5
    assert str(Dimension(1, 8)) == "1..8" and Dimension(1, 8).contains(8) and not Dimension(1, 8).contains(9)
    assert str(Dimension(0, 8)) == "..8" and str(Dimension(2, -1)) == "2.."
    assert Dimension(-1) == Dimension()
    assert Dimension(1, 8).merge(Dimension(4, 10)) == Dimension(4, 8)
    assert Dimension(3).compatible(Dimension(1, 4)) and not Dimension(5).compatible(Dimension(1, 4))
    with pytest.raises(EmberError):
        Dimension(3).merge(4)
    with pytest.raises(EmberError):
        Dimension(5, 2)
    with pytest.raises(EmberError):
        Dimension(4).get_length() and Dimension().get_length()


def test_partial_shapes() -> None:
    p = PartialShape("1..8,?,16..64,3")
    assert str(p) == "[1..8,?,16..64,3]" and p.ir_string() == "1..8,?,16..64,3"
    assert p.rank == 4 and p.is_dynamic and p.accepts((2, 100, 32, 3)) and not p.accepts((9, 1, 32, 3))
    assert PartialShape([1, 3, 224, 224]).to_shape() == (1, 3, 224, 224)
    assert PartialShape([1, -1]) == PartialShape([1, Dimension()])
    assert not PartialShape.dynamic().rank_is_static
    assert PartialShape.dynamic().compatible([1, 2, 3])
    assert PartialShape([]).is_static and PartialShape([]).to_shape() == ()
    with pytest.raises(EmberError):
        PartialShape([1, -1]).to_shape()


def test_layouts() -> None:
    assert Layout("NCHW").get_index_by_name("C") == 1
    assert Layout("[N,H,W,C]").get_index_by_name("c") == 3
    assert Layout("N...C").get_index_by_name("C") == -1
    assert str(Layout("NCHW")) == "[N,C,H,W]"
    assert Layout("NCHW") == "[N,C,H,W]"
    with pytest.raises(EmberError):
        Layout("NCHN")


def test_inference_errors_name_the_node() -> None:
    a = ops.parameter([2, 3], np.float32, name="a")
    b = ops.parameter([4, 3], np.float32, name="b")
    with pytest.raises(ShapeInferenceError, match=r"Add 'bad_add'.*do not broadcast"):
        ops.add(a, b, name="bad_add")
    c = ops.parameter([2, 3], np.int32, name="c")
    with pytest.raises(ShapeInferenceError, match=r"Multiply 'm'.*element types differ"):
        ops.multiply(a, c, name="m")


def test_dynamic_broadcast_inference() -> None:
    a = ops.parameter(PartialShape("?,3"), np.float32)
    b = ops.parameter(PartialShape("4,1"), np.float32)
    assert str(ops.add(a, b).output(0).partial_shape) == "[4,3]"
    c = ops.parameter(PartialShape.dynamic(), np.float32)
    assert not ops.add(a, c).output(0).partial_shape.rank_is_static


def test_model_order_clone_names_rt_info() -> None:
    x = ops.parameter([1, 4], np.float32, name="x")
    h = ops.relu(x, name="r")
    y = ops.add(h, np.ones((1, 4), np.float32), name="y")
    y.output(0).set_names({"out"})
    m = Model([y], [x], "net")
    m.set_rt_info("v1", ["framework", "version"])
    order = [n.friendly_name for n in m.get_ordered_ops()]
    assert order.index("x") < order.index("r") < order.index("y")
    c = m.clone()
    assert [n.friendly_name for n in c.get_ordered_ops()] == order
    assert c.output(0).names == {"out"} and c.get_rt_info(["framework", "version"]) == "v1"
    assert all(a is not b for a, b in zip(c.get_ordered_ops(), m.get_ordered_ops()))
    c.get_ordered_ops()[1].set_friendly_name("changed")
    assert "changed" not in [n.friendly_name for n in m.get_ordered_ops()]
    assert m.output("out") == m.outputs[0] and m.input("x") == m.inputs[0]
    with pytest.raises(EmberError, match="no output named 'nope'"):
        m.output("nope")


def test_cycle_detected() -> None:
    x = ops.parameter([2], np.float32, name="x")
    a = ops.relu(x)
    b = ops.relu(a)
    a.set_argument(0, b.output(0))
    with pytest.raises(GraphError, match="cycle"):
        Model([b], [x]).get_ordered_ops()


def test_unlisted_parameter_refused() -> None:
    x = ops.parameter([2], np.float32, name="x")
    z = ops.parameter([2], np.float32, name="z")
    with pytest.raises(GraphError, match="'z' is used but not listed"):
        Model([ops.add(x, z)], [x])


def test_reshape_reinfers() -> None:
    x = ops.parameter([1, 4], np.float32, name="x")
    m = Model([ops.relu(x)], [x])
    m.reshape([3, 4])
    assert m.output(0).partial_shape == PartialShape([3, 4])
    m.reshape({"x": PartialShape("?,4")})
    assert str(m.output(0).partial_shape) == "[?,4]"


def test_import_ember_as_ov_builds_and_runs() -> None:
    import ember.opset8 as ops8

    x = ops8.parameter([2, 2], np.float32, name="x")
    m = ov.Model([ops8.sigmoid(x)], [x], "s")
    res = ov.Core().compile_model(m, "REFERENCE")([np.zeros((2, 2), np.float32)])
    np.testing.assert_allclose(res[0], 0.5)


def test_unknown_builder_names_alternatives() -> None:
    with pytest.raises(AttributeError, match="no builder 'convolutoin'"):
        ops.convolutoin  # noqa: B018
