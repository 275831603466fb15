"""Hostile ONNX files: bad external data, bad sparse initializers, self-calling functions and
constant "bombs" each give one ember error naming the tensor, function or node, never a raw
exception; valid neighbours of each case still convert and run correctly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.errors import EmberError

OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
X = np.arange(8, dtype=np.float32).reshape(2, 4)


def _model(nodes: list, inits: list | None = None, sparse: list | None = None, functions: list | None = None,
           ) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits or [])
    if sparse:
        g.sparse_initializer.extend(sparse)
    return helper.make_model(g, opset_imports=OPSETS, functions=functions or [])


def _const(arr: np.ndarray, out: str) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [out], value=numpy_helper.from_array(arr))


def _external(folder: Path, **entries: str) -> Path:
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    (folder / "w.bin").write_bytes(w.raw_data)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in entries.items():
        e = w.external_data.add()
        e.key, e.value = k, v
    path = folder / "m.onnx"
    onnx.save_model(_model([helper.make_node("MatMul", ["x", "W"], ["y"])], [w]), str(path))
    return path


_EXTERNAL = {
    "valid": ({"location": "w.bin"}, None),
    "valid with offset and length": ({"location": "w.bin", "offset": "0", "length": "64"}, None),
    "offset not an integer": ({"location": "w.bin", "offset": "abc"}, "not an integer"),
    "length not an integer": ({"location": "w.bin", "length": "1e3"}, "not an integer"),
    "offset huge": ({"location": "w.bin", "offset": str(2**70)}, "beyond the end"),
    "length negative": ({"location": "w.bin", "length": "-5"}, "beyond the end"),
    "length short": ({"location": "w.bin", "length": "3"}, "'W'"),
    "NUL in location": ({"location": "w\x00.bin"}, "NUL"),
    "outside the folder": ({"location": "../w.bin"}, "outside"),
    "absolute": ({"location": "/etc/passwd"}, "relative"),
    "link to a device": ({"location": "dev"}, "outside"),
    "FIFO": ({"location": "fifo"}, "not found|regular file"),
}


@pytest.mark.parametrize("case", list(_EXTERNAL), ids=list(_EXTERNAL))
def test_external_data(tmp_path: Path, case: str) -> None:
    entries, error = _EXTERNAL[case]
    (tmp_path / "dev").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo")
    path = _external(tmp_path, **entries)
    if error is None:
        np.testing.assert_allclose(ember.compile_model(ember.convert_model(path), "CPU")(X)[0], X)
        return
    with pytest.raises(EmberError, match=error) as info:
        ember.convert_model(path)
    assert "\n" not in str(info.value)


def _sparse(values: list, indices: np.ndarray | list, dims: list) -> onnx.SparseTensorProto:
    return helper.make_sparse_tensor(numpy_helper.from_array(np.array(values, np.float32), "S"),
                                     numpy_helper.from_array(np.array(indices, np.int64), "S_i"), dims)


_SPARSE = {
    "valid linear": (_sparse([5.0, 7.0], [1, 6], [2, 4]), None),
    "valid per-dimension": (_sparse([5.0, 7.0], [[0, 1], [1, 2]], [2, 4]), None),
    "index out of range": (_sparse([1.0], [100], [2, 4]), "outside"),
    "negative index": (_sparse([1.0], [-100], [2, 4]), "outside"),
    "per-dimension index out of range": (_sparse([1.0], [[0, 9]], [2, 4]), "outside"),
    "count mismatch": (_sparse([1.0, 2.0], [1], [2, 4]), "do not fit"),
    "bad index rank": (_sparse([1.0], [[1, 2, 3]], [2, 4]), "do not fit"),
    "huge dims": (_sparse([1.0], [1], [2**31, 2**31]), "more than"),
    "negative dims": (_sparse([1.0], [1], [-2, 4]), "negative"),
}


@pytest.mark.parametrize("case", list(_SPARSE), ids=list(_SPARSE))
def test_sparse_initializers(case: str) -> None:
    sparse, error = _SPARSE[case]
    model = _model([helper.make_node("Add", ["x", "S"], ["y"])], sparse=[sparse])
    if error is None:
        dense = np.zeros(8, np.float32)
        dense[[1, 6]] = [5.0, 7.0]
        got = ember.compile_model(ember.convert_model(model), "REFERENCE")(X)[0]
        np.testing.assert_array_equal(got, X + dense.reshape(2, 4))
        return
    with pytest.raises(EmberError, match=error):
        ember.convert_model(model)


def _function(name: str, calls: str) -> onnx.FunctionProto:
    return helper.make_function("local", name, ["a"], ["b"], [helper.make_node(calls, ["a"], ["b"], domain="local")],
                                OPSETS)


def test_self_calling_functions() -> None:
    for functions, names in [([_function("F", "F")], "local.F -> local.F"),
                             ([_function("A", "B"), _function("B", "A")], "local.A -> local.B -> local.A")]:
        model = _model([helper.make_node(functions[0].name, ["x"], ["y"], domain="local")], functions=functions)
        with pytest.raises(EmberError, match="call themselves") as info:
            ember.convert_model(model)
        assert names in str(info.value)
    # a function calling another, without a cycle, still expands
    leaf = helper.make_function("local", "Leaf", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], OPSETS)
    model = _model([helper.make_node("Top", ["x"], ["y"], domain="local")], functions=[_function("Top", "Leaf"), leaf])
    np.testing.assert_array_equal(ember.compile_model(ember.convert_model(model), "REFERENCE")(X - 4)[0],
                                  np.maximum(X - 4, 0))


def _bomb(kind: str) -> list:
    reduce_add = [helper.make_node("ReduceSum", ["c"], ["r"], keepdims=0), helper.make_node("Add", ["x", "r"], ["y"])]
    big = np.array([2**20, 2**20], np.int64)
    if kind == "ConstantOfShape":
        return [_const(big, "s"), helper.make_node("ConstantOfShape", ["s"], ["c"]), *reduce_add]
    if kind == "Expand":
        return [_const(big, "s"), _const(np.ones(1, np.float32), "one"), helper.make_node("Expand", ["one", "s"], ["c"]),
                *reduce_add]
    if kind == "Tile":
        return [_const(big, "s"), _const(np.ones((1, 1), np.float32), "one"), helper.make_node("Tile", ["one", "s"], ["c"]),
                *reduce_add]
    if kind == "Range":
        return [_const(np.array(0, np.float32), "a"), _const(np.array(1e12, np.float32), "b"),
                _const(np.array(1, np.float32), "d"), helper.make_node("Range", ["a", "b", "d"], ["c"]), *reduce_add]
    return [_const(np.ones((1, 1, 2, 2), np.float32), "one"), _const(np.array([1, 1, 1e6, 1e6], np.float32), "sc"),
            helper.make_node("Resize", ["one", "", "sc"], ["c"]), *reduce_add]


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
@pytest.mark.parametrize("kind", ["ConstantOfShape", "Expand", "Tile", "Range", "Resize"])
def test_constant_bombs(kind: str, device: str) -> None:
    model = ember.convert_model(_model(_bomb(kind)))
    with pytest.raises(EmberError) as info:
        ember.compile_model(model, device)(X)
    msg = str(info.value)
    assert "\n" not in msg and "'c'" in msg, msg


@pytest.mark.parametrize("where", ["tensor", "op_type"])
def test_names_that_are_not_utf8(tmp_path: Path, where: str) -> None:
    # protobuf hands a string field that is not valid UTF-8 back as bytes (found by fuzzing)
    model = _model([helper.make_node("Relu", ["x"], ["QQQQ"]), helper.make_node("Relu", ["QQQQ"], ["y"])])
    data = model.SerializeToString()
    data = data.replace(b"QQQQ", b"Q\x99QQ") if where == "tensor" else data.replace(b"Relu", b"R\xe9lu", 1)
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with pytest.raises(EmberError, match="not valid UTF-8"):
        ember.convert_model(path)
