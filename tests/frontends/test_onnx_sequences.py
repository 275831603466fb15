"""ONNX sequences and optionals at run time: model inputs and outputs of sequence/optional type
through Core/InferRequest on REFERENCE and CPU, compared with onnx's ReferenceEvaluator."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.errors import InferenceError
from ember.frontends.onnx import convert

F = TensorProto.FLOAT
SEQ_F = helper.make_tensor_sequence_value_info
RNG = np.random.default_rng(3)


def _model(nodes: list, inputs: list, outputs: list, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs)
    m = helper.make_model(g, opset_imports=[helper.make_operatorsetid("", opset)])
    m.ir_version = 8
    return m


def _seq(name: str, t: int = F) -> onnx.ValueInfoProto:
    return SEQ_F(name, t, None)


def _opt_seq(name: str, t: int = F) -> onnx.ValueInfoProto:
    seq = helper.make_sequence_type_proto(helper.make_tensor_type_proto(t, None))
    return helper.make_value_info(name, helper.make_optional_type_proto(seq))


def _opt(name: str, t: int = F) -> onnx.ValueInfoProto:
    return helper.make_value_info(name, helper.make_optional_type_proto(helper.make_tensor_type_proto(t, None)))


def _vi(name: str, shape: Any, t: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, t, shape)


def _items(*shapes: tuple[int, ...]) -> list[np.ndarray]:
    return [RNG.standard_normal(s).astype(np.float32) for s in shapes]


def _i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def _insert(pos: int | None) -> tuple:
    ins = ["s", "x"] + ([] if pos is None else ["p"])
    inputs = [_seq("s"), _vi("x", [2])] + ([] if pos is None else [_vi("p", [], TensorProto.INT64)])
    feeds: dict[str, Any] = {"s": _items((2,), (2,), (2,)), "x": _items((2,))[0]}
    if pos is not None:
        feeds["p"] = np.array(pos, dtype=np.int64)
    return _model([helper.make_node("SequenceInsert", ins, ["y"])], inputs, [_seq("y")]), feeds


def _loop_seq() -> tuple:
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]),
         helper.make_node("Cast", ["i"], ["f"], to=F),
         helper.make_node("Unsqueeze", ["f", "ax"], ["item"]),
         helper.make_node("SequenceInsert", ["s", "item"], ["s_out"])],
        "body", [_vi("i", [], TensorProto.INT64), _vi("c", [], TensorProto.BOOL), _seq("s")],
        [_vi("c_out", [], TensorProto.BOOL), _seq("s_out")],
        initializer=[helper.make_tensor("ax", TensorProto.INT64, [1], [0])])
    m = _model([helper.make_node("Loop", ["n", "", "s0"], ["s1"], body=body)],
               [_vi("n", [], TensorProto.INT64), _seq("s0")], [_seq("s1")])
    return m, {"n": np.array(4, dtype=np.int64), "s0": _items((1,))}


# (name, model and feeds); every case runs on ember and on onnx's ReferenceEvaluator
CASES = {
    "identity": (_model([helper.make_node("Identity", ["s"], ["y"])], [_seq("s")], [_seq("y")]),
                 {"s": _items((2, 3), (4,), ())}),
    "identity_empty": (_model([helper.make_node("Identity", ["s"], ["y"])], [_seq("s")], [_seq("y")]),
                       {"s": []}),
    "insert_append": _insert(None),
    "insert_front": _insert(0),
    "insert_minus_one": _insert(-1),  # before the last item (was off by one)
    "insert_minus_len": _insert(-3),
    "insert_at_len": _insert(3),
    "erase_minus_one": (_model([helper.make_node("SequenceErase", ["s", "p"], ["y"])],
                               [_seq("s"), _vi("p", [], TensorProto.INT64)], [_seq("y")]),
                        {"s": _items((1,), (2,), (3,)), "p": np.array(-1, dtype=np.int64)}),
    "at_length_concat": (_model([helper.make_node("SequenceAt", ["s", "p"], ["a"]),
                                 helper.make_node("SequenceLength", ["s"], ["n"]),
                                 helper.make_node("ConcatFromSequence", ["s"], ["c"], axis=-1, new_axis=1)],
                                [_seq("s"), _vi("p", [], TensorProto.INT64)],
                                [_vi("a", None), _vi("n", [], TensorProto.INT64), _vi("c", None)]),
                         {"s": _items((2, 3), (2, 3)), "p": np.array(-2, dtype=np.int64)}),
    "split_runtime_sizes": (_model([helper.make_node("SplitToSequence", ["x", "sp"], ["y"], axis=1)],
                                   [_vi("x", [3, 6]), _vi("sp", [None], TensorProto.INT64)], [_seq("y")]),
                            {"x": _items((3, 6))[0], "sp": _i64(1, 0, 5)}),
    "split_runtime_chunk": (_model([helper.make_node("SplitToSequence", ["x", "sp"], ["y"], axis=0)],
                                   [_vi("x", ["n", 2]), _vi("sp", [], TensorProto.INT64)], [_seq("y")]),
                            {"x": _items((7, 2))[0], "sp": np.array(3, dtype=np.int64)}),
    "split_dynamic_dim": (_model([helper.make_node("SplitToSequence", ["x"], ["y"], axis=0, keepdims=0)],
                                 [_vi("x", ["n", 2])], [_seq("y")]),
                          {"x": _items((3, 2))[0]}),
    "construct_to_output": (_model([helper.make_node("SequenceConstruct", ["a", "b"], ["y"])],
                                   [_vi("a", [2]), _vi("b", [3])], [_seq("y")]),
                            {"a": _items((2,))[0], "b": _items((3,))[0]}),
    "loop_carried": _loop_seq(),
    "optional_tensor_present": (_model([helper.make_node("OptionalHasElement", ["o"], ["h"]),
                                        helper.make_node("Identity", ["o"], ["y"])],
                                       [_opt("o")], [_vi("h", [], TensorProto.BOOL), _opt("y")], opset=18),
                                {"o": _items((3,))[0]}),
    "optional_tensor_empty": (_model([helper.make_node("OptionalHasElement", ["o"], ["h"]),
                                      helper.make_node("Identity", ["o"], ["y"])],
                                     [_opt("o")], [_vi("h", [], TensorProto.BOOL), _opt("y")], opset=18),
                              {"o": None}),
    "optional_sequence": (_model([helper.make_node("OptionalGetElement", ["o"], ["y"])],
                                 [_opt_seq("o")], [_seq("y")], opset=18),
                          {"o": _items((2,), (1,))}),
    "sequence_map": (_model([helper.make_node(
        "SequenceMap", ["s"], ["y"],
        body=helper.make_graph([helper.make_node("Shape", ["x"], ["sh"])], "m", [_vi("x", None)],
                               [_vi("sh", None, TensorProto.INT64)]))],
        [_seq("s")], [SEQ_F("y", TensorProto.INT64, None)]),
        {"s": _items((2, 3), (4,), (1, 1, 1))}),
}


def _check(got: Any, ref: Any) -> None:
    if ref is None or got is None:
        assert got is None and ref is None
    elif isinstance(ref, list):
        assert isinstance(got, list) and len(got) == len(ref)
        for g, r in zip(got, ref):
            _check(g, r)
    else:
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6, atol=1e-6)
        assert np.asarray(got).shape == np.asarray(ref).shape


# onnx's ReferenceEvaluator gets these wrong (position == length inserts at the front, a Loop
# without a condition input stops after one iteration, Identity of an empty optional raises):
# onnxruntime is their oracle, and the ONNX spec for the empty optional.
ORT_CASES = {"insert_at_len", "loop_carried"}
SPEC = {"optional_tensor_empty": [np.array(False), None]}


def _oracle(case: str, model: onnx.ModelProto, feeds: dict[str, Any]) -> list[Any]:
    if case in SPEC:
        return SPEC[case]
    if case in ORT_CASES:
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)
    return ReferenceEvaluator(model).run(None, copy.deepcopy(feeds))  # it may change lists in place


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_against_onnx_reference(case: str, device: str) -> None:
    model, feeds = CASES[case]
    want = _oracle(case, model, feeds)
    compiled = ember.Core().compile_model(convert(model), device)
    got = compiled(feeds)
    assert len(got) == len(want)
    for i, ref in enumerate(want):
        _check(got[i], ref)


def test_sequence_input_rejects_a_tensor() -> None:
    model, _ = CASES["identity"]
    compiled = ember.Core().compile_model(convert(model), "REFERENCE")
    with pytest.raises(InferenceError, match="list"):
        compiled({"s": np.zeros(3, np.float32)})


def test_position_out_of_range_names_the_node() -> None:
    model, feeds = _insert(5)
    compiled = ember.Core().compile_model(convert(model), "REFERENCE")
    with pytest.raises(Exception, match="out of range"):
        compiled(feeds)


def test_cli_run_with_sequence_input_and_output(tmp_path: Any, capsys: Any) -> None:
    from ember.tools.cli import main

    model, _ = _insert(-1)
    onnx.save(model, tmp_path / "m.onnx")
    items = _items((2,), (2,))
    np.savez(tmp_path / "in.npz", **{"s/0": items[0], "s/1": items[1], "x": np.ones(2, np.float32),
                                     "p": np.array(-1, np.int64)})
    assert main(["run", str(tmp_path / "m.onnx"), "-i", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "y: sequence of 3" in out
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "y_1.npy"), np.ones(2, np.float32))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "y_2.npy"), items[1])
