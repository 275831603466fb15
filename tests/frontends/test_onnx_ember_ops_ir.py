"""ember's own ops (sequences, strings, ai.onnx.ml, random, BitCast/Det/MelWeightMatrix) save as
IR under version ``ember_opset1`` and read back to the same results; sequence and optional model
inputs and outputs keep their kind through the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.frontends.onnx import convert

F, S, I64 = TensorProto.FLOAT, TensorProto.STRING, TensorProto.INT64


def _model(nodes: list, inputs: list, outputs: list, opset: int = 20, ml: bool = False) -> onnx.ModelProto:
    imports = [helper.make_operatorsetid("", opset), helper.make_operatorsetid("com.microsoft", 1)]
    if ml:
        imports.append(helper.make_operatorsetid("ai.onnx.ml", 4))
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=imports)
    m.ir_version = 10
    return m


def _vi(name: str, t: int = F, shape: Any = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, t, shape)


def _seq(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_sequence_value_info(name, F, None)


def _opt(name: str) -> onnx.ValueInfoProto:
    return helper.make_value_info(name, helper.make_optional_type_proto(helper.make_tensor_type_proto(F, None)))


def _s(*v: str) -> np.ndarray:
    return np.array(v, dtype=object)


CASES = {
    "sequence_insert_at": (_model([helper.make_node("SequenceInsert", ["s", "x", "p"], ["y"]),
                                   helper.make_node("SequenceLength", ["y"], ["n"])],
                                  [_seq("s"), _vi("x", F, [2]), _vi("p", I64, [])], [_seq("y"), _vi("n", I64)]),
                           {"s": [np.ones(2, np.float32), np.zeros(2, np.float32)], "x": np.full(2, 5, np.float32),
                            "p": np.array(-1, np.int64)}),
    "optional_empty": (_model([helper.make_node("OptionalHasElement", ["o"], ["h"]),
                               helper.make_node("Identity", ["o"], ["y"])],
                              [_opt("o")], [_vi("h", TensorProto.BOOL), _opt("y")]), {"o": None}),
    "split_runtime": (_model([helper.make_node("SplitToSequence", ["x", "sp"], ["y"], axis=1)],
                             [_vi("x", F, [2, 5]), _vi("sp", I64, [None])], [_seq("y")]),
                      {"x": np.arange(10, dtype=np.float32).reshape(2, 5), "sp": np.array([2, 3], np.int64)}),
    "tokenizer_commas": (_model([helper.make_node("Tokenizer", ["x"], ["y"], domain="com.microsoft", mark=0,
                                                  mincharnum=1, pad_value="#", separators=[" ", ",", "a b"])],
                                [_vi("x", S)], [_vi("y", S)]), {"x": _s("x,y z", "pa bq,,r")}),
    "normalizer_tfidf": (_model([helper.make_node("StringNormalizer", ["x"], ["n"], case_change_action="LOWER",
                                                  stopwords=["the", "a,b"]),
                                 helper.make_node("TfIdfVectorizer", ["n"], ["y"], mode="TF", min_gram_length=1,
                                                  max_gram_length=1, ngram_counts=[0], ngram_indexes=[0, 1],
                                                  pool_strings=["cat", "x, y"])],
                                [_vi("x", S)], [_vi("y", F)]), {"x": _s("The", "cat", "X, Y", "a,b", "CAT")}),
    "label_encoder": (_model([helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml",
                                               keys_strings=["a", "b,c"], values_int64s=[1, 2], default_int64=-7)],
                             [_vi("x", S)], [_vi("y", I64)], ml=True), {"x": _s("a", "b,c", "zz")}),
    "random_seeded": (_model([helper.make_node("RandomNormal", [], ["y"], shape=[3, 4], seed=3.0)], [], [_vi("y")]),
                      {}),
    "det_mel": (_model([helper.make_node("Det", ["m"], ["d"]),
                        helper.make_node("MelWeightMatrix", ["n", "l", "r", "lo", "hi"], ["w"])],
                       [_vi("m", F, [2, 3, 3]), _vi("n", I64, []), _vi("l", I64, []), _vi("r", I64, []),
                        _vi("lo", F, []), _vi("hi", F, [])], [_vi("d"), _vi("w")], opset=18),
                {"m": np.random.default_rng(0).standard_normal((2, 3, 3)).astype(np.float32),
                 "n": np.array(4, np.int64), "l": np.array(16, np.int64), "r": np.array(8000, np.int64),
                 "lo": np.array(0.0, np.float32), "hi": np.array(4000.0, np.float32)}),
}


def _same(a: Any, b: Any) -> None:
    if isinstance(a, list) or a is None:
        assert (a is None and b is None) or (isinstance(b, list) and len(a) == len(b))
        for x, y in zip(a or [], b or []):
            _same(x, y)
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert a.tolist() == b.tolist()


@pytest.mark.parametrize("case", sorted(CASES))
def test_ir_round_trip(case: str, tmp_path: Path) -> None:
    proto, feeds = CASES[case]
    model = convert(proto)
    ember.save_model(model, tmp_path / "m.xml")
    assert 'version="ember_opset1"' in (tmp_path / "m.xml").read_text()
    back = ember.Core().read_model(tmp_path / "m.xml")
    want = ember.Core().compile_model(model, "REFERENCE")(feeds).to_tuple()
    for device in ("REFERENCE", "CPU"):
        got = ember.Core().compile_model(back, device)(feeds).to_tuple()
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _same(g, w)
