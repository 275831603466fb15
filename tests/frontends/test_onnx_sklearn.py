"""scikit-learn pipelines exported with skl2onnx run on ember and predict what scikit-learn
predicts: a scaler + tree ensemble on the whole digits set, a TF-IDF text classifier, a linear
regressor; on REFERENCE and CPU (the ai.onnx.ml ops, strings and com.microsoft Tokenizer)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import skl2onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.datasets import load_digits
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

import ember
from ember.frontends.onnx import convert

TEXTS = ["the cat sat on the mat", "dogs are great friends", "cats and dogs play", "a great sunny day",
         "the dog barked at the cat", "rain all day long", "my cat likes the sun", "dogs run in the park",
         "it is a dull and rainy day", "the park is great for dogs"]
TOPICS = [0, 1, 1, 2, 1, 2, 0, 1, 2, 1]


def _ort(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _export(pipe: Any, initial_types: list) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skl2onnx.convert_sklearn(pipe, initial_types=initial_types, options={id(pipe): {"zipmap": False}}
                                        if hasattr(pipe, "predict_proba") else None, target_opset=18)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
def test_scaler_random_forest_on_digits(digits: tuple, device: str) -> None:
    x, y = digits
    pipe = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, max_depth=8,
                                                                  random_state=0)).fit(x, y)
    model = _export(pipe, [("x", FloatTensorType([None, 64]))])
    labels, probs = ember.Core().compile_model(convert(model), device)({"x": x}).to_tuple()
    np.testing.assert_array_equal(labels, pipe.predict(x))  # all 1797 digits
    # the ONNX scaler computes in f32, scikit-learn in f64: a few samples fall on the other side
    # of a split in one tree, so the probabilities are compared with onnxruntime's
    np.testing.assert_allclose(probs, _ort(model, {"x": x})[1], atol=1e-5)


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
def test_tfidf_logistic_regression(device: str) -> None:
    # the ONNX Tokenizer takes token_pattern as it is; scikit-learn's default pattern (\b\w\w+\b)
    # has no ONNX equivalent, so the pipeline uses one both sides read the same way
    vec = TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"[a-zA-Z0-9_]+")
    pipe = make_pipeline(vec, LogisticRegression(max_iter=500)).fit(TEXTS, TOPICS)
    model = _export(pipe, [("text", StringTensorType([None, 1]))])
    queries = TEXTS + ["the cat and the dog", "a rainy park", "unknown words only", ""]
    feed = np.array(queries, dtype=object).reshape(-1, 1)
    labels, probs = ember.Core().compile_model(convert(model), device)({"text": feed}).to_tuple()
    np.testing.assert_array_equal(labels, pipe.predict(queries))
    np.testing.assert_allclose(probs, pipe.predict_proba(queries), atol=1e-5)


def test_binary_logistic_regression(digits: tuple) -> None:
    x, y = digits
    pipe = make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=300)).fit(x, y % 2)
    model = _export(pipe, [("x", FloatTensorType([None, 64]))])
    labels, probs = ember.Core().compile_model(convert(model), "REFERENCE")({"x": x}).to_tuple()
    np.testing.assert_array_equal(labels, pipe.predict(x))
    np.testing.assert_allclose(probs, pipe.predict_proba(x), atol=1e-5)


def test_gradient_boosting_regressor(digits: tuple) -> None:
    x, y = digits
    model_sk = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0).fit(x, y.astype(float))
    model = _export(model_sk, [("x", FloatTensorType([None, 64]))])
    got = ember.Core().compile_model(convert(model), "REFERENCE")({"x": x})[0]
    np.testing.assert_allclose(got.reshape(-1), model_sk.predict(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
def test_default_export_with_zipmap(digits: tuple, device: str) -> None:
    """skl2onnx's default classifier output is ZipMap's list of {label: probability} dicts."""
    x, y = digits
    clf = RandomForestClassifier(n_estimators=3, max_depth=4, random_state=0).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = skl2onnx.convert_sklearn(clf, initial_types=[("x", FloatTensorType([None, 64]))], target_opset=18)
    assert any(n.op_type == "ZipMap" for n in model.graph.node)
    labels, probs = ember.Core().compile_model(convert(model), device)({"x": x[:20]}).to_tuple()
    want_labels, want_probs = _ort(model, {"x": x[:20]})
    np.testing.assert_array_equal(labels, want_labels)
    assert isinstance(probs, list) and len(probs) == 20
    for got, want in zip(probs, want_probs):
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in want], [want[k] for k in want], atol=1e-6)


def test_column_transformer_imputer_one_hot() -> None:
    """Numeric columns imputed and scaled, a string column one-hot encoded (unknowns: zeros)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    num = rng.standard_normal((80, 3)).astype(np.float32)
    num[rng.random((80, 3)) < 0.15] = np.nan
    cat = rng.choice(["red", "green", "blue"], 80)
    y = ((np.nan_to_num(num[:, 0]) > 0) ^ (cat == "red")).astype(int)
    frame = pd.DataFrame({"n0": num[:, 0], "n1": num[:, 1], "n2": num[:, 2], "c": cat})
    ct = ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), ["n0", "n1", "n2"]),
                            ("cat", OneHotEncoder(handle_unknown="ignore"), ["c"])])
    pipe = Pipeline([("ct", ct), ("lr", LogisticRegression())]).fit(frame, y)
    types = [(n, FloatTensorType([None, 1])) for n in ("n0", "n1", "n2")] + [("c", StringTensorType([None, 1]))]
    model = _export(pipe, types)
    test = frame.copy()
    test.loc[:4, "c"] = "purple"  # unseen category
    feeds = {n: test[n].to_numpy(np.float32).reshape(-1, 1) for n in ("n0", "n1", "n2")}
    feeds["c"] = test["c"].to_numpy(object).reshape(-1, 1)
    for device in ("REFERENCE", "CPU"):
        labels, probs = ember.Core().compile_model(convert(model), device)(feeds).to_tuple()
        np.testing.assert_array_equal(labels, pipe.predict(test))
        np.testing.assert_allclose(probs, pipe.predict_proba(test), atol=1e-5)


@pytest.mark.parametrize("kernel", ["rbf", "poly", "linear", "sigmoid"])
def test_support_vector_machines(digits: tuple, kernel: str) -> None:
    from sklearn.svm import SVC, SVR

    x, y = digits
    x = x[:300] / 16.0
    y = y[:300] % 4
    clf = SVC(kernel=kernel, gamma=0.05, degree=2).fit(x, y)
    reg = SVR(kernel=kernel, gamma=0.05, degree=2).fit(x, y.astype(float))
    feeds = {"x": x.astype(np.float32)}
    for est in (clf, reg):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = skl2onnx.convert_sklearn(est, initial_types=[("x", FloatTensorType([None, 64]))],
                                             options={id(clf): {"zipmap": False}}, target_opset=18)
        want = _ort(model, feeds)
        got = ember.Core().compile_model(convert(model), "CPU")(feeds).to_tuple()
        if est is clf:
            np.testing.assert_array_equal(got[0], clf.predict(x))
            np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-4)
        else:
            np.testing.assert_allclose(got[0].reshape(-1), reg.predict(x), rtol=1e-4, atol=1e-4)


def test_category_mapper_both_ways() -> None:
    from onnx import TensorProto, helper

    for src, dst, x in ((TensorProto.STRING, TensorProto.INT64, np.array(["b", "zz", "a"], dtype=object)),
                        (TensorProto.INT64, TensorProto.STRING, np.array([7, 3, 9], np.int64))):
        node = helper.make_node("CategoryMapper", ["x"], ["y"], domain="ai.onnx.ml", cats_strings=["a", "b"],
                                cats_int64s=[3, 7], default_int64=-5, default_string="none")
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", src, [3])],
                              [helper.make_tensor_value_info("y", dst, [3])])
        m = helper.make_model(g, opset_imports=[helper.make_operatorsetid("", 18),
                                                helper.make_operatorsetid("ai.onnx.ml", 3)])
        m.ir_version = 9
        want = _ort(m, {"x": x})[0]
        got = ember.Core().compile_model(convert(m), "REFERENCE")({"x": x})[0]
        assert np.asarray(got).tolist() == np.asarray(want).tolist()
