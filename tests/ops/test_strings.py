"""ember's string ops (ember.ops.strings) through the ONNX frontend, against onnxruntime (which
implements all of them, Tokenizer included) on REFERENCE and CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.frontends.onnx import convert

S = TensorProto.STRING
ort = pytest.importorskip("onnxruntime")


def _model(node: onnx.NodeProto, inputs: list, outputs: list, opset: int = 20) -> onnx.ModelProto:
    g = helper.make_graph([node], "g", inputs, outputs)
    imports = [helper.make_operatorsetid("", opset)]
    if node.domain:
        imports.append(helper.make_operatorsetid(node.domain, 1))
    m = helper.make_model(g, opset_imports=imports)
    m.ir_version = 9
    return m


def _s(*v: Any) -> np.ndarray:
    return np.array(v, dtype=object)


def _vi(name: str, t: int = S, shape: Any = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, t, shape)


# (name, node, inputs, outputs, feeds)
CASES = [
    ("normalizer_lower_stop", helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="LOWER",
                                               stopwords=["the", "A"]),
     [_vi("x")], [_vi("y")], {"x": _s("The", "Cat", "a", "Ünïcode", "the")}),
    ("normalizer_all_dropped_2d", helper.make_node("StringNormalizer", ["x"], ["y"], is_case_sensitive=1,
                                                   stopwords=["x"]),
     [_vi("x")], [_vi("y")], {"x": _s(["x", "x"])}),
    ("normalizer_upper", helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="UPPER"),
     [_vi("x")], [_vi("y")], {"x": _s(["mixed Case", ""])}),
    ("concat_broadcast", helper.make_node("StringConcat", ["a", "b"], ["y"]),
     [_vi("a"), _vi("b")], [_vi("y")], {"a": _s(["a", "bé"], ["", "c"]), "b": _s("!", "?")}),
    ("split_whitespace", helper.make_node("StringSplit", ["x"], ["y", "n"]),
     [_vi("x")], [_vi("y"), _vi("n", TensorProto.INT64)], {"x": _s(" a  b c", "", "one")}),
    ("split_delim_max", helper.make_node("StringSplit", ["x"], ["y", "n"], delimiter="-", maxsplit=1),
     [_vi("x")], [_vi("y"), _vi("n", TensorProto.INT64)], {"x": _s(["a-b-c", "--"], ["x", "y-"])}),
    ("regex", helper.make_node("RegexFullMatch", ["x"], ["y"], pattern=r"[a-z]+@\w+\.com"),
     [_vi("x")], [_vi("y", TensorProto.BOOL)], {"x": _s("me@site.com", "me@site.org", "", "A@b.com")}),
    ("tokenizer_tokenexp", helper.make_node("Tokenizer", ["x"], ["y"], domain="com.microsoft", mark=0,
                                            mincharnum=2, pad_value="#", tokenexp="[a-zA-Z0-9_]+"),
     [_vi("x")], [_vi("y")], {"x": _s(["the cat, a dog!"], ["hello"])}),
    ("tokenizer_separators", helper.make_node("Tokenizer", ["x"], ["y"], domain="com.microsoft", mark=1,
                                              mincharnum=1, pad_value="#", separators=[" ", ","]),
     [_vi("x")], [_vi("y")], {"x": _s("a,b c", "dd")}),
    ("tfidf_strings_skip", helper.make_node(
        "TfIdfVectorizer", ["x"], ["y"], mode="TFIDF", min_gram_length=1, max_gram_length=2, max_skip_count=1,
        ngram_counts=[0, 3], ngram_indexes=[0, 1, 2, 3, 4], pool_strings=["a", "b", "c", "a", "b", "b", "c"],
        weights=[0.5, 1.0, 2.0, 3.0, 4.0]),
     [_vi("x")], [_vi("y", TensorProto.FLOAT)], {"x": _s(["a", "b", "a", "c", "b"], ["c", "c", "a", "x", "b"])}),
    ("tfidf_ints_idf", helper.make_node(
        "TfIdfVectorizer", ["x"], ["y"], mode="IDF", min_gram_length=2, max_gram_length=2, max_skip_count=3,
        ngram_counts=[0, 2], ngram_indexes=[1, 0, 3, 2], pool_int64s=[7, 8, 7, 9, 8, 8]),
     [_vi("x", TensorProto.INT64)], [_vi("y", TensorProto.FLOAT)],
     {"x": np.array([[7, 1, 9, 8, 8, 7, 7, 8], [8, 8, 8, 7, 9, 9, 1, 1]], np.int64)}),
]
# onnxruntime needs an installed locale for StringNormalizer: these cases state their expected
# values (the ONNX spec: stop words dropped as whole elements, then the case changed)
EXPECTED = {
    "normalizer_lower_stop": [_s("cat", "ünïcode")],
    "normalizer_all_dropped_2d": [_s([""])],
    "normalizer_upper": [_s(["MIXED CASE", ""])],
}
ONNX_REFERENCE: set[str] = set()


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_against_onnxruntime(case: tuple, device: str) -> None:
    _, node, inputs, outputs, feeds = case
    model = _model(node, inputs, outputs)
    if case[0] in EXPECTED:
        want = EXPECTED[case[0]]
    elif case[0] in ONNX_REFERENCE:
        want = ReferenceEvaluator(model).run(None, feeds)
    else:
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ember.Core().compile_model(convert(model), device)(feeds)
    for i, w in enumerate(want):
        g = np.asarray(got[i])
        assert g.shape == w.shape, (g, w)
        if w.dtype.kind in "OUS":
            assert g.astype(str).tolist() == w.astype(str).tolist()
        else:
            np.testing.assert_allclose(g, w, rtol=1e-6)


def test_tfidf_checks_its_pool() -> None:
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], mode="TF", min_gram_length=1, max_gram_length=2,
                            ngram_counts=[0, 2], ngram_indexes=[0, 1, 2], pool_int64s=[7, 8, 7, 9, 8, 8])
    with pytest.raises(Exception, match="ngram_indexes"):
        convert(_model(node, [_vi("x", TensorProto.INT64)], [_vi("y", TensorProto.FLOAT)]))


def test_bad_pattern_names_the_node() -> None:
    model = _model(helper.make_node("RegexFullMatch", ["x"], ["y"], pattern="(unclosed", name="rx"),
                   [_vi("x")], [_vi("y", TensorProto.BOOL)])
    with pytest.raises(Exception, match="not a valid regular expression"):
        convert(model)


def test_string_movement_on_cpu_stays_on_reference_kernels() -> None:
    """Gather/Concat/Transpose/Reshape of strings on CPU: a native copy of an object array would
    copy Python references without counting them (a crash some runs later), so these nodes run
    their reference kernels; the results match REFERENCE run after run."""
    nodes = [helper.make_node("Gather", ["x", "i"], ["g"], axis=0),
             helper.make_node("Concat", ["g", "x"], ["c"], axis=0),
             helper.make_node("Transpose", ["c"], ["t"], perm=[1, 0]),
             helper.make_node("Reshape", ["t", "s"], ["y"])]
    inits = [onnx.numpy_helper.from_array(np.array([2, 0, 2, 1], np.int64), "i"),
             onnx.numpy_helper.from_array(np.array([-1], np.int64), "s")]
    g = helper.make_graph(nodes, "g", [_vi("x", S, [3, 2])], [_vi("y", S)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_operatorsetid("", 18)])
    m.ir_version = 9
    x = np.array([["w", "a"], ["b", "c"], ["é", "d"]], dtype=object)
    compiled = ember.Core().compile_model(convert(m), "CPU")
    fallbacks = set(compiled._executable.program.stats["fallbacks"])
    assert {"Gather", "Concat", "Transpose", "Reshape"} <= fallbacks
    want = ember.Core().compile_model(convert(m), "REFERENCE")({"x": x})[0]
    for _ in range(20):
        assert compiled({"x": x})[0].tolist() == want.tolist()
