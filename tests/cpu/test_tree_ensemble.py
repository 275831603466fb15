"""TreeEnsemble (scikit-learn's trees through skl2onnx) on the CPU device's tree-walk kernel and
LabelEncoder of numbers on its lookup kernel, against REFERENCE (bit for bit: the kernels compute
as the reference does) and against scikit-learn itself, with no op on a reference kernel; NaN features (the
missing-value branch), f64 inputs, every aggregate and post-transform the kernel takes, and
ensembles it refuses (they stay on the reference kernel and still match)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.graph.model import Model

pytest.importorskip("skl2onnx")
RNG = np.random.default_rng(1317)


def _data(rows: int = 120, features: int = 7, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(rows, features, n_informative=4, n_classes=classes, random_state=3)
    return x.astype(np.float32), y


def _estimators() -> dict[str, Callable[[], object]]:
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.tree import DecisionTreeClassifier

    return {
        "random-forest-regressor": lambda: RandomForestRegressor(7, max_depth=5, random_state=0),
        "gradient-boosting-3-classes": lambda: GradientBoostingClassifier(n_estimators=6, max_depth=3, random_state=0),
        "gradient-boosting-binary": lambda: GradientBoostingClassifier(n_estimators=5, random_state=0),
        "gradient-boosting-regressor": lambda: GradientBoostingRegressor(n_estimators=8, random_state=0),
        "extra-trees": lambda: ExtraTreesClassifier(5, max_depth=6, random_state=0),
        "decision-tree": lambda: DecisionTreeClassifier(max_depth=7, random_state=0),
        "random-forest-nan": lambda: RandomForestClassifier(4, max_depth=5, random_state=0),
    }


def _compare(model: Model, feeds: list[np.ndarray], exact: bool = True) -> list[np.ndarray]:
    """CPU against REFERENCE (the ops after the trees, e.g. a binary classifier's probabilities,
    may differ by an ulp: ``exact=False``)."""
    core = ember.Core()
    cm = core.compile_model(model, "CPU")
    got = [np.asarray(v) for v in cm(feeds).to_tuple()]
    want = [np.asarray(v) for v in core.compile_model(model, "REFERENCE")(feeds).to_tuple()]
    assert not cm._executable.program.stats["fallbacks"], cm._executable.program.stats["fallbacks"]
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        if exact or g.dtype.kind not in "f":
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
    return got


@pytest.mark.parametrize("name", list(_estimators()))
def test_sklearn_trees_native(name: str) -> None:
    from skl2onnx import to_onnx

    double = list(_estimators()).index(name) % 2 == 1  # f64 inputs in every other case
    binary = name.endswith("binary")
    x, y = _data(classes=2 if binary else 3)
    if name.endswith("nan"):
        x[::9, 2] = np.nan  # learned missing-value branches
    est = _estimators()[name]().fit(x, y)
    xx = x.astype(np.float64) if double else x
    options = {"zipmap": False} if hasattr(est, "predict_proba") else None
    model = ember.convert_model(to_onnx(est, xx[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3}))
    test = np.concatenate([xx[:40], RNG.standard_normal((9, x.shape[1])).astype(xx.dtype)])
    test[3, 1] = np.nan  # a NaN feature takes the missing-value branch
    params = model.get_parameters()
    got = _compare(model, [test.reshape([d.get_length() if d.is_static else test.shape[0]
                                         for d in params[0].get_partial_shape()])], exact=False)
    scores = got[-1] if hasattr(est, "predict_proba") else got[0]
    ok = np.isfinite(test).all(axis=1)  # against scikit-learn: the rows without NaN
    want = est.predict_proba(test[ok]) if hasattr(est, "predict_proba") else est.predict(test[ok]).reshape(-1, 1)
    np.testing.assert_allclose(scores.reshape(-1, want.shape[1])[ok], want, rtol=1e-5, atol=1e-5)


def _hand_ensemble(**over: object) -> dict[str, object]:
    """Two trees over 3 features, 2 targets; tree 0 a node then leaves, tree 1 a leaf root."""
    attrs: dict[str, object] = dict(
        nodes_featureids=[0, 2], nodes_modes=[0, 3], nodes_splits=[0.25, -1.0],
        nodes_truenodeids=[1, 1], nodes_falsenodeids=[0, 2], nodes_trueleafs=[0, 1], nodes_falseleafs=[1, 1],
        nodes_missing_value_tracks_true=[1, 0], tree_roots=[0, 3], roots_are_leaves=[0, 1],
        leaf_ids=[0, 1, 1, 2, 3], leaf_targetids=[0, 0, 1, 1, 0], leaf_weights=[1.5, -2.0, 0.5, 3.0, 0.25],
        n_targets=2, aggregate_function="SUM", base_values=[0.1, -0.2], post_transform="NONE")
    attrs.update(over)
    return attrs


HAND = [
    {}, {"aggregate_function": "AVERAGE"}, {"aggregate_function": "MIN"}, {"aggregate_function": "MAX"},
    {"post_transform": "LOGISTIC"}, {"post_transform": "SOFTMAX"}, {"nodes_modes": [1, 2]}, {"nodes_modes": [4, 5]},
    {"base_values": []}, {"leaf_weights": [np.nan, -2.0, 0.5, np.inf, 0.25], "aggregate_function": "MAX"},
]


@pytest.mark.parametrize("over", HAND, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "sum")
def test_hand_ensembles_native(over: dict) -> None:
    x = RNG.standard_normal((11, 3)).astype(np.float32)
    x[:, 0] = [0.25, 0.2, 0.3, np.nan, -1, 2, 0.25, np.inf, -np.inf, 0, 1]
    x[:, 2] = [-1, -1.5, -0.5, 0, np.nan, 3, -1, -1, 2, np.inf, -np.inf]
    p = ops.parameter([11, 3], np.float32, name="x")
    _compare(Model([ops.tree_ensemble(p, **_hand_ensemble(**over))], [p], "trees"), [x])


@pytest.mark.parametrize("over", [{"nodes_modes": [6, 3], "membership_values": [1.0, 2.0, np.nan]},
                                  {"post_transform": "PROBIT"}, {"nodes_falsenodeids": [0, 0], "nodes_falseleafs": [0, 0]}],
                         ids=["member", "probit", "cycle"])
def test_refused_ensembles_stay_on_reference(over: dict) -> None:
    p = ops.parameter([4, 3], np.float32, name="x")
    model = Model([ops.tree_ensemble(p, **_hand_ensemble(**over))], [p], "trees")
    cm = ember.Core().compile_model(model, "CPU")
    assert cm._executable.program.stats["fallbacks"] == {"TreeEnsemble": 1}
    x = np.abs(RNG.standard_normal((4, 3))).astype(np.float32) + 2  # every test false: no walk reaches a cycle
    x[:, 2] = -5
    if "nodes_falsenodeids" in over:
        return  # a cycle: the reference raises when a row walks into it; the CPU plan does the same (its reference)
    np.testing.assert_array_equal(cm([x])[0], ember.Core().compile_model(model, "REFERENCE")([x])[0])


# -- LabelEncoder of numbers ---------------------------------------------------------------------

LABELS = [  # (input, keys, values, default)
    (np.array([[4, 6, 5], [11, -3, 4]], np.int64), np.array([4, 6, 7, 4, -3], np.int64),
     np.array([0.5, 1.5, 2.5, 9.0, -1.0], np.float32), np.array([7.0], np.float32)),  # a later duplicate key wins
    (np.array([0.0, -0.0, np.nan, 1.5, 2.0, np.inf, 3.0], np.float32), np.array([-0.0, 0.0, np.nan, 2.0, np.inf]),
     np.array([1, 2, 3, 4, 5], np.int64), np.array([-1], np.int64)),  # -0.0 and 0.0 one key; a NaN key
    (np.array([1, 2, 3, 200], np.uint8), np.array([2, 200, 9], np.uint8), np.array([True, False, True]),
     np.array([False])),
    (np.array([2.0, 2.5, -7.0], np.float64), np.array([-7, 2], np.float32), np.array([10, 20], np.int16),
     np.array([0], np.int16)),
    (np.arange(-5, 40, dtype=np.int32).reshape(5, 9), np.arange(0, 60, 3, dtype=np.int32),
     np.arange(20, dtype=np.float64) / 3, np.array([np.nan])),
    (np.array([1.0, np.nan], np.float32), np.array([], np.float32), np.array([], np.float32), np.array([4.0], np.float32)),
]


@pytest.mark.parametrize("case", LABELS, ids=lambda c: f"{c[0].dtype}-{c[1].dtype}-{c[2].dtype}-{c[1].size}")
def test_label_encoder_native(case: tuple) -> None:
    x, keys, values, default = case
    p = ops.parameter(list(x.shape), x.dtype, name="x")
    _compare(Model([ops.label_encoder(p, keys, values, default)], [p], "labels"), [x])


def test_isolation_forest_native() -> None:
    """IsolationForest: trees, then per-leaf path lengths through LabelEncoders, averaged by a
    chain of Adds over the ten trees' values (an elementwise chain past the kernel's 8 operands:
    the rule used to give up on it, leaving its head on reference kernels)."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import IsolationForest

    x, _ = _data()
    est = IsolationForest(n_estimators=10, random_state=0).fit(x)  # 10 trees: a 10-operand average
    model = ember.convert_model(to_onnx(est, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}))
    cm = ember.Core().compile_model(model, "CPU")
    got = [np.asarray(v) for v in cm([x[:50]]).to_tuple()]
    fallbacks = cm._executable.program.stats["fallbacks"]
    assert not fallbacks, fallbacks
    np.testing.assert_array_equal(got[0].reshape(-1), est.predict(x[:50]))
    np.testing.assert_allclose(got[1].reshape(-1), est.decision_function(x[:50]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [0, 1, 300])
def test_tree_ensemble_row_counts(rows: int) -> None:
    """No rows (an empty batch: [0, targets], where both devices used to raise a raw ValueError),
    one row, more rows than one task takes."""
    x = RNG.standard_normal((rows, 3)).astype(np.float32)
    p = ops.parameter([-1, 3], np.float32, name="x")
    _compare(Model([ops.tree_ensemble(p, **_hand_ensemble(post_transform="SOFTMAX"))], [p], "trees"), [x])
