"""The ONNX frontend on small hand-built models, compared against onnxruntime."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember.graph.node as node_mod
from ember.devices.reference import run_model
from ember.errors import ConversionError, UnsupportedOpError
from ember.frontends.onnx import convert, unsupported_ops
from ember.graph import Dimension, PartialShape, Type

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(7)


def _model(nodes: list, inputs: list, outputs: list, inits: list | None = None, opset: int = 17,
           **kw: Any) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [])
    m = helper.make_model(g, opset_imports=[helper.make_operatorsetid("", opset)], **kw)
    m.ir_version = min(m.ir_version, 10)
    return m


def _vi(name: str, shape: list | None, t: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, t, shape)


def _ort(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    src = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-6,
           **kw: Any) -> Any:
    ours = convert(model, **kw)
    got = run_model(ours, feeds)
    want = _ort(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return ours


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# -- one table of small models, each checked against onnxruntime ---------------------------------
def _conv_bias() -> tuple[onnx.ModelProto, dict]:
    w = numpy_helper.from_array(_x(4, 3, 3, 3), "w")
    b = numpy_helper.from_array(_x(4), "b")
    n = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])
    return _model([n], [_vi("x", [1, 3, 8, 8])], [_vi("y", None)], [w, b]), {"x": _x(1, 3, 8, 8)}


def _group_conv() -> tuple[onnx.ModelProto, dict]:
    w = numpy_helper.from_array(_x(6, 2, 3, 3), "w")
    n = helper.make_node("Conv", ["x", "w"], ["y"], group=2, auto_pad="SAME_UPPER")
    return _model([n], [_vi("x", [2, 4, 7, 7])], [_vi("y", None)], [w]), {"x": _x(2, 4, 7, 7)}


def _gemm() -> tuple[onnx.ModelProto, dict]:
    b = numpy_helper.from_array(_x(5, 4), "b")
    c = numpy_helper.from_array(_x(5), "c")
    n = helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=0.5, beta=2.0, transB=1)
    return _model([n], [_vi("a", [3, 4])], [_vi("y", None)], [b, c]), {"a": _x(3, 4)}


def _constant_node() -> tuple[onnx.ModelProto, dict]:
    k = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.float32([1, 2, 3])))
    n = helper.make_node("Mul", ["x", "k"], ["y"])
    return _model([k, n], [_vi("x", [2, 3])], [_vi("y", None)]), {"x": _x(2, 3)}


def _softmax_opset11() -> tuple[onnx.ModelProto, dict]:
    n = helper.make_node("Softmax", ["x"], ["y"], axis=1)  # flattens [2, 3*4] before opset 13
    return _model([n], [_vi("x", [2, 3, 4])], [_vi("y", None)], opset=11), {"x": _x(2, 3, 4)}


def _batchnorm_pool() -> tuple[onnx.ModelProto, dict]:
    inits = [numpy_helper.from_array(np.abs(_x(3)) + 0.5, k) for k in ("s", "v")] + \
        [numpy_helper.from_array(_x(3), k) for k in ("b", "m")]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["t"]),
             helper.make_node("MaxPool", ["t"], ["p"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
             helper.make_node("GlobalAveragePool", ["p"], ["y"])]
    return _model(nodes, [_vi("x", [1, 3, 10, 10])], [_vi("y", None)], inits), {"x": _x(1, 3, 10, 10)}


def _resize() -> tuple[onnx.ModelProto, dict]:
    scales = numpy_helper.from_array(np.float32([1, 1, 2, 1.5]), "s")
    n = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear")
    return _model([n], [_vi("x", [1, 2, 4, 4])], [_vi("y", None)], [scales]), {"x": _x(1, 2, 4, 4)}


def _clip_dynamic() -> tuple[onnx.ModelProto, dict]:
    n = helper.make_node("Clip", ["x", "lo", "hi"], ["y"])
    feeds = {"x": _x(3, 4), "lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}
    return _model([n], [_vi("x", [3, 4]), _vi("lo", []), _vi("hi", [])], [_vi("y", None)]), feeds


def _lstm() -> tuple[onnx.ModelProto, dict]:
    h, i = 5, 3
    inits = [numpy_helper.from_array(_x(2, 4 * h, i) * 0.3, "W"), numpy_helper.from_array(_x(2, 4 * h, h) * 0.3, "R"),
             numpy_helper.from_array(_x(2, 8 * h) * 0.1, "B")]
    n = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "yh", "yc"], hidden_size=h, direction="bidirectional")
    outs = [_vi("y", None), _vi("yh", None), _vi("yc", None)]
    return _model([n], [_vi("x", [4, 2, i])], outs, inits), {"x": _x(4, 2, i)}


def _gru_seq_lens() -> tuple[onnx.ModelProto, dict]:
    h, i = 4, 3
    inits = [numpy_helper.from_array(_x(1, 3 * h, i) * 0.3, "W"), numpy_helper.from_array(_x(1, 3 * h, h) * 0.3, "R"),
             numpy_helper.from_array(_x(1, 6 * h) * 0.1, "B"),
             numpy_helper.from_array(np.int32([3, 1]), "L")]
    n = helper.make_node("GRU", ["x", "W", "R", "B", "L"], ["y", "yh"], hidden_size=h, linear_before_reset=1,
                         direction="reverse")
    return _model([n], [_vi("x", [3, 2, i])], [_vi("y", None), _vi("yh", None)], inits), {"x": _x(3, 2, i)}


def _if_outer_scope() -> tuple[onnx.ModelProto, dict]:
    then = helper.make_graph([helper.make_node("Add", ["x", "x"], ["t"])], "then", [], [_vi("t", None)])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", None)])
    n = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)
    m = _model([n], [_vi("c", [], TensorProto.BOOL), _vi("x", [2, 3])], [_vi("y", None)])
    return m, {"c": np.array(False), "x": _x(2, 3)}


def _loop_scan_output() -> tuple[onnx.ModelProto, dict]:
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["acc_out", "acc_out"], ["sq"])],
        "body", [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("acc_in", [3])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("acc_out", [3]), _vi("sq", [3])])
    n = helper.make_node("Loop", ["n", "", "a0"], ["acc", "sqs"], body=body)
    m = _model([n], [_vi("n", [], TensorProto.INT64), _vi("a0", [3]), _vi("x", [3])],
               [_vi("acc", None), _vi("sqs", None)])
    return m, {"n": np.array(4, np.int64), "a0": _x(3), "x": _x(3)}


def _qdq() -> tuple[onnx.ModelProto, dict]:
    path = Path("/work/shared/reference/ir_examples/qdq.onnx")
    if not path.exists():
        pytest.skip("the shared qdq.onnx reference is not present")
    return onnx.load(str(path)), {"x": _x(1, 3, 8, 8)}


def _function_expansion() -> tuple[onnx.ModelProto, dict]:
    n = helper.make_node("Celu", ["x"], ["y"], alpha=0.7)  # no converter: expanded from its ONNX function
    m = _model([helper.make_node("Shrink", ["y"], ["z"], lambd=0.3), n], [_vi("x", [2, 5])], [_vi("z", None)])
    m.graph.node.reverse()  # also checks that nodes out of topological order are sorted
    return m, {"x": _x(2, 5)}


CASES: dict[str, Callable[[], tuple[onnx.ModelProto, dict]]] = {
    "conv_bias": _conv_bias, "group_conv": _group_conv, "gemm": _gemm, "constant_node": _constant_node,
    "softmax_opset11": _softmax_opset11, "batchnorm_pool": _batchnorm_pool, "resize": _resize,
    "clip_dynamic": _clip_dynamic, "lstm": _lstm, "gru_seq_lens": _gru_seq_lens, "if": _if_outer_scope,
    "loop": _loop_scan_output, "qdq": _qdq, "function_expansion": _function_expansion,
}


@pytest.mark.parametrize("name", list(CASES))
def test_against_onnxruntime(name: str) -> None:
    model, feeds = CASES[name]()
    _check(model, feeds, rtol=1e-4, atol=1e-5)


# -- names, initializers, the Q/DQ patterns -------------------------------------------------------
def test_tensor_names_and_friendly_names() -> None:
    model, feeds = _conv_bias()
    m = convert(model)
    assert m.output(0).get_names() == {"y"}
    assert m.input(0).get_names() == {"x"}
    assert m.output(0).node.input_values()[0].node.friendly_name == "y"
    consts = {n.friendly_name for n in m.get_ordered_ops() if n.type_name == "Const"}
    assert "w" in consts


def test_qdq_becomes_fake_quantize_and_weight_decompression() -> None:
    model, feeds = _qdq()
    m = convert(model)
    types = [n.type_name for n in m.get_ordered_ops()]
    assert "FakeQuantize" in types
    conv = next(n for n in m.get_ordered_ops() if n.type_name == "Convolution")
    w = conv.input_values()[1].node
    assert w.type_name == "Multiply"
    chain = w.input_values()[0].node
    assert chain.type_name == "Convert" and chain.input_values()[0].node.get_element_type() == Type.i8
    fq = conv.input_values()[0].node
    assert fq.type_name == "FakeQuantize" and fq.attrs["levels"] == 256
    # the same ops and FakeQuantize ranges as OpenVINO's own conversion of qdq.onnx
    from ember.io import read_ir

    ref = read_ir(Path("/work/shared/reference/ir_examples/onnx_qdq_converted.xml"))
    assert {n.type_name for n in m.get_ordered_ops()} == {n.type_name for n in ref.get_ordered_ops()}
    ref_fq = next(n for n in ref.get_ordered_ops() if n.type_name == "FakeQuantize")
    for ours, theirs in zip(fq.input_values()[1:], ref_fq.input_values()[1:]):
        np.testing.assert_allclose(ours.node.get_data(), theirs.node.get_data())


# -- external data --------------------------------------------------------------------------------
def _save_external(tmp: Path, location: str = "weights.bin") -> Path:
    model, _ = _gemm()
    path = tmp / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
              size_threshold=0)
    return path


def test_external_data(tmp_path: Path) -> None:
    path = _save_external(tmp_path)
    feeds = {"a": _x(3, 4)}
    got = run_model(convert(path), feeds)
    np.testing.assert_allclose(got[0], _ort(str(path), feeds)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin", "link.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    inner = tmp_path / "model"
    inner.mkdir()
    path = _save_external(inner)
    (tmp_path / "outside.bin").write_bytes((inner / "weights.bin").read_bytes())
    if location == "link.bin":
        os.symlink(tmp_path / "outside.bin", inner / "link.bin")
    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(model, str(path))
    with pytest.raises(ConversionError, match="outside the model's folder|relative to the model's folder"):
        convert(path)


def test_external_data_missing_file_and_proto_without_data(tmp_path: Path) -> None:
    path = _save_external(tmp_path)
    with pytest.raises(ConversionError, match="ModelProto"):
        convert(onnx.load(str(path), load_external_data=False))
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ConversionError, match="not found"):
        convert(path)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="does not exist"):
        convert(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01not a model")
    with pytest.raises(ConversionError):
        convert(junk)


# -- shapes: symbolic dims, input=, output= ------------------------------------------------------
def _dynamic_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "r"], ["mid"]),
             helper.make_node("ReduceSum", ["mid"], ["y"], keepdims=0)]
    return _model(nodes, [_vi("x", ["batch", 3, None])], [_vi("y", None)])


def test_symbolic_dims_are_dynamic() -> None:
    m = convert(_dynamic_model())
    ps = m.input(0).partial_shape
    assert ps[0].is_dynamic and ps[1] == 3 and ps[2].is_dynamic
    for shape in [(1, 3, 2), (5, 3, 7)]:
        x = _x(*shape)
        np.testing.assert_allclose(run_model(m, [x])[0], 2 * np.maximum(x, 0).sum(), rtol=1e-5)


@pytest.mark.parametrize("spec, want", [
    ({"x": [2, 3, 4]}, PartialShape([2, 3, 4])),
    ([("x", [-1, 3, Dimension(1, 8)])], PartialShape([Dimension(), 3, Dimension(1, 8)])),
    ("x[1..4,3,5]", PartialShape([Dimension(1, 4), 3, 5])),
    ([[2, 3, (2, 6)]], PartialShape([2, 3, Dimension(2, 6)])),
    ({"x": PartialShape("?,3,?")}, PartialShape("?,3,?")),
])
def test_input_shape_overrides(spec: Any, want: PartialShape) -> None:
    m = convert(_dynamic_model(), input=spec)
    assert m.input(0).partial_shape == want


def test_input_type_override_and_example_input() -> None:
    m = convert(_dynamic_model(), input=[("x", [2, 3, 4], Type.f16)])
    assert m.input(0).element_type == Type.f16 and m.output(0).element_type == Type.f16
    m = convert(_dynamic_model(), example_input=[np.zeros((4, 3, 2), np.float32)])
    assert m.input(0).partial_shape == PartialShape([4, 3, 2])


def test_input_cut_at_internal_tensor_and_output_cut() -> None:
    m = convert(_dynamic_model(), input={"r": [2, 3, 4]})
    assert [p.friendly_name for p in m.get_parameters()] == ["r"]
    assert "Relu" not in {n.type_name for n in m.get_ordered_ops()}
    x = np.abs(_x(2, 3, 4))
    np.testing.assert_allclose(run_model(m, [x])[0], 2 * x.sum(), rtol=1e-5)
    m = convert(_dynamic_model(), output=["mid"])
    assert m.get_output_size() == 1 and m.output(0).get_names() >= {"mid"}
    assert "ReduceSum" not in {n.type_name for n in m.get_ordered_ops()}


def test_bad_input_and_output_names() -> None:
    with pytest.raises(ConversionError, match="no tensor named 'nope'"):
        convert(_dynamic_model(), input={"nope": [1]})
    with pytest.raises(ConversionError, match="no tensor named 'gone'"):
        convert(_dynamic_model(), output="gone")
    with pytest.raises(ConversionError, match="rank"):
        convert(_dynamic_model(), input={"x": [1, 2]})


# -- the unsupported-op error -----------------------------------------------------------------------
def test_unsupported_ops_are_listed_before_anything_is_built() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("FancyOp", ["a"], ["b"], name="fancy1", domain="com.example"),
             helper.make_node("FancyOp", ["b"], ["c"], name="fancy2", domain="com.example"),
             helper.make_node("MaxRoiPool", ["c", "c"], ["d"], name="roipool", pooled_shape=[1, 1]),
             helper.make_node("NoSuchOp", ["d"], ["y"], name="nosuch")]
    g = helper.make_graph(nodes, "g", [_vi("x", [2])], [_vi("y", None)])
    m = helper.make_model(g, opset_imports=[helper.make_operatorsetid("", 17),
                                            helper.make_operatorsetid("com.example", 3)])
    before = next(node_mod._ids)
    with pytest.raises(UnsupportedOpError) as err:
        convert(m)
    assert next(node_mod._ids) == before + 1, "nodes were built before the support check"
    msg = str(err.value)
    assert "3 unsupported op type(s)" in msg
    assert "FancyOp (domain 'com.example', opset 3, first node 'fancy1')" in msg
    assert "MaxRoiPool (domain 'ai.onnx', opset 17, first node 'roipool')" in msg
    assert "NoSuchOp (domain 'ai.onnx', opset 17, first node 'nosuch')" in msg
    assert "fancy2" not in msg
    assert [r[1] for r in unsupported_ops(m)] == ["MaxRoiPool", "NoSuchOp", "FancyOp"]


def test_unsupported_op_inside_a_subgraph_and_unknown_domain() -> None:
    then = helper.make_graph([helper.make_node("Weird", ["x"], ["t"], name="w")], "then", [], [_vi("t", None)])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", None)])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other),
             helper.make_node("Thing", ["y"], ["z"], name="t1", domain="not.imported")]
    m = _model(nodes, [_vi("c", [], TensorProto.BOOL), _vi("x", [2])], [_vi("z", None)])
    with pytest.raises(UnsupportedOpError, match=r"Weird .*first node 'w'.*|Thing .*not imported"):
        convert(m)


def test_opset_ranges_pick_the_right_converter() -> None:
    x = _x(2, 3, 4)
    for opset in (7, 11, 13, 18):
        n = helper.make_node("Softmax", ["x"], ["y"], axis=1)
        _check(_model([n], [_vi("x", [2, 3, 4])], [_vi("y", None)], opset=opset), {"x": x})


# -- older opsets: attribute forms that later became inputs ------------------------------------------
def _legacy(op: str, opset: int, inputs: dict[str, np.ndarray], outs: int = 1,
            out_types: tuple[int, ...] = (), **attrs: Any) -> tuple:
    names = list(inputs)
    n = helper.make_node(op, names, [f"y{i}" for i in range(outs)], **attrs)
    vis = [_vi(k, list(v.shape), helper.np_dtype_to_tensor_dtype(v.dtype)) for k, v in inputs.items()]
    types = list(out_types) + [TensorProto.FLOAT] * (outs - len(out_types))
    return _model([n], vis, [_vi(f"y{i}", None, t) for i, t in enumerate(types)], opset=opset), inputs


LEGACY = {
    "slice_1": lambda: _legacy("Slice", 7, {"x": _x(4, 5)}, starts=[1, -3], ends=[3, 100], axes=[0, 1]),
    "pad_2": lambda: _legacy("Pad", 7, {"x": _x(2, 3)}, pads=[0, 1, 1, 2], mode="reflect"),
    "upsample_7": lambda: _legacy("Upsample", 7, {"x": _x(1, 1, 2, 3)}, scales=[1.0, 1.0, 2.0, 3.0]),
    "split_2": lambda: _legacy("Split", 7, {"x": _x(6, 2)}, outs=2, split=[2, 4]),
    "squeeze_1": lambda: _legacy("Squeeze", 7, {"x": _x(1, 3, 1)}, axes=[0, 2]),
    "reducesum_11": lambda: _legacy("ReduceSum", 11, {"x": _x(2, 3, 4)}, axes=[1], keepdims=0),
    "topk_1": lambda: _legacy("TopK", 7, {"x": _x(3, 5)}, outs=2, out_types=(TensorProto.FLOAT, TensorProto.INT64),
                              k=2),
    "clip_6": lambda: _legacy("Clip", 7, {"x": _x(3, 5)}, min=-0.3, max=0.4),
    "batchnorm_7": lambda: _legacy("BatchNormalization", 7, {
        "x": _x(2, 3, 4), "s": _x(3), "b": _x(3), "m": _x(3), "v": np.abs(_x(3)) + 0.1}),
    "hardmax_11": lambda: _legacy("Hardmax", 11, {"x": _x(2, 3, 4)}, axis=1),
    "argmax_last_12": lambda: _legacy("ArgMax", 12, {"x": np.float32([[1, 3, 3], [2, 2, 0]])},
                                      out_types=(TensorProto.INT64,), axis=1, select_last_index=1),
    "resize_10": lambda: _legacy("Resize", 10, {"x": _x(1, 1, 2, 2), "s": np.float32([1, 1, 2, 2])}),
}


@pytest.mark.parametrize("name", list(LEGACY))
def test_older_opsets_against_onnxruntime(name: str) -> None:
    model, feeds = LEGACY[name]()
    _check(model, feeds)


def test_model_local_function() -> None:
    body = [helper.make_node("Mul", ["a", "a"], ["sq"]),
            helper.make_node("Add", ["sq", "b"], ["out"])]
    fn = helper.make_function("my.domain", "SquarePlus", ["a", "b"], ["out"], body,
                              [helper.make_operatorsetid("", 17)])
    n = helper.make_node("SquarePlus", ["x", "y"], ["z"], domain="my.domain")
    g = helper.make_graph([n], "g", [_vi("x", [3]), _vi("y", [3])], [_vi("z", None)])
    m = helper.make_model(g, functions=[fn], opset_imports=[helper.make_operatorsetid("", 17),
                                                            helper.make_operatorsetid("my.domain", 1)])
    _check(m, {"x": _x(3), "y": _x(3)})


# -- what ember converts, OpenVINO reads back from ember's IR ---------------------------------------
@pytest.mark.parametrize("name", ["lstm", "gru_seq_lens", "if", "loop", "qdq", "resize", "group_conv"])
def test_converted_ir_runs_in_openvino(name: str) -> None:
    ov = pytest.importorskip("openvino")
    from ember.io.ir_writer import serialize

    model, feeds = CASES[name]()
    xml, weights = serialize(convert(model))
    core = ov.Core()
    compiled = core.compile_model(core.read_model(xml.decode(), ov.Tensor(np.frombuffer(weights, np.uint8))),
                                  "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(feeds)
    for out, want in zip(compiled.outputs, _ort(model, feeds)):
        np.testing.assert_allclose(res[out], want, rtol=1e-4, atol=1e-5)
