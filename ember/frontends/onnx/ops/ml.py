"""ONNX ``ai.onnx.ml`` ops: the ones scikit-learn pipelines export (skl2onnx) and ONNX tests.

LabelEncoder and the tree ensembles become ember's own ops (``ember.ops.ml``); Scaler,
Normalizer, Binarizer, ArrayFeatureExtractor, LinearClassifier and LinearRegressor become
ordinary OpenVINO ops, so they run on every device and save as plain IR.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const, convert, i64, reshape
from ember.graph.core_ops import Constant
from ember.graph.node import Output
from ember.graph.types import Type
from ember.ops.ml import AGGREGATES, MODES, POST_TRANSFORMS

ML = "ai.onnx.ml"


def _strings(values: list[str]) -> Output:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return Constant(arr, Type.string).output(0)


def _table(ctx: NodeContext, prefix: str, defaults: dict[str, Any]) -> tuple[Output, Type] | None:
    """keys_* / values_* / default_* attributes as a constant and its type."""
    if ctx.has_attr(f"{prefix}_tensor"):
        arr, et = ctx.attr_tensor(f"{prefix}_tensor")  # type: ignore[misc]
        c = Constant(arr.reshape(-1) if prefix != "default" else arr.reshape(-1)[:1], et)
        return c.output(0), et
    for suffix, et in (("strings", Type.string), ("int64s", Type.i64), ("floats", Type.f32),
                       ("string", Type.string), ("int64", Type.i64), ("float", Type.f32)):
        if ctx.has_attr(f"{prefix}_{suffix}"):
            v = ctx.attr(f"{prefix}_{suffix}")
            v = v if isinstance(v, list) else [v]
            return (_strings(v) if et is Type.string else const(np.asarray(v), et)), et
    return None


@converter("LabelEncoder", since=2, domain=ML)
def label_encoder(ctx: NodeContext) -> Output:
    keys = _table(ctx, "keys", {})
    values = _table(ctx, "values", {})
    if keys is None or values is None:
        raise ctx.fail("keys and values are required")
    default = _table(ctx, "default", {})
    if default is None or default[1] is not values[1]:
        vt = values[1]
        fallback: Any = {Type.string: "_Unused", Type.i64: -1, Type.f32: -0.0}.get(vt, 0)
        default = (_strings([fallback]) if vt is Type.string else const(np.asarray([fallback]), vt), vt)
    return ops.label_encoder(ctx.req(0), keys[0], values[0], default[0]).output(0)


@converter("LabelEncoder", since=1, until=1, domain=ML)
def label_encoder1(ctx: NodeContext) -> Output:
    """LabelEncoder-1: strings -> their index in ``classes_strings``, or back."""
    x = ctx.req(0)
    classes = ctx.attr("classes_strings", [])
    idx = const(np.arange(len(classes), dtype=np.int64), Type.i64)
    if x.element_type is Type.string:
        return ops.label_encoder(x, _strings(classes), idx, const(np.asarray([ctx.attr("default_int64", -1)]),
                                                                  Type.i64)).output(0)
    return ops.label_encoder(x, idx, _strings(classes), _strings([ctx.attr("default_string", "_Unused")])).output(0)


@converter("Binarizer", domain=ML)
def binarizer(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    return convert(ops.greater(x, const(ctx.attr("threshold", 0.0), x.element_type)).output(0), x.element_type)


@converter("ArrayFeatureExtractor", domain=ML)
def array_feature_extractor(ctx: NodeContext) -> Output:
    x, idx = ctx.req(0), ctx.req(1)
    return ops.gather(x, reshape(convert(idx, Type.i64), [-1]), i64(-1)).output(0)


@converter("Scaler", domain=ML)
def scaler(ctx: NodeContext) -> Output:
    x = convert(ctx.req(0), Type.f32)
    offset = np.asarray(ctx.attr("offset", [0.0]), dtype=np.float32)
    scale = np.asarray(ctx.attr("scale", [1.0]), dtype=np.float32)
    return ops.multiply(ops.subtract(x, const(offset, Type.f32)), const(scale, Type.f32)).output(0)


@converter("Normalizer", domain=ML)
def normalizer(ctx: NodeContext) -> Output:
    x = convert(ctx.req(0), Type.f32)
    norm = ctx.attr("norm", "MAX")
    axis = i64([-1])
    if norm == "MAX":
        d = ops.reduce_max(x, axis, True).output(0)
    elif norm == "L1":
        d = ops.reduce_sum(ops.absolute(x), axis, True).output(0)
    elif norm == "L2":
        d = ops.sqrt(ops.reduce_sum(ops.multiply(x, x), axis, True)).output(0)
    else:
        raise ctx.fail(f"norm '{norm}' is not MAX, L1 or L2")
    safe = ops.select(ops.equal(d, const(0.0, Type.f32)), const(1.0, Type.f32), d).output(0)
    return ops.divide(x, safe).output(0)


def _post(ctx: NodeContext, scores: Output, how: str) -> Output:
    if how == "NONE":
        return scores
    if how == "SOFTMAX":
        return ops.softmax(scores, -1).output(0)
    if how == "LOGISTIC":
        return ops.sigmoid(scores).output(0)
    raise ctx.fail(f"post_transform '{how}' is not supported here")


def _labels(ctx: NodeContext, scores: Output) -> Output:
    """The class label of the highest score of every row."""
    idx = ops.topk(scores, i64(1), 1, "max", "none", "i64").output(1)
    idx = reshape(idx, [-1])
    if ctx.has_attr("classlabels_strings"):
        return ops.gather(_strings(ctx.attr("classlabels_strings")), idx, i64(0)).output(0)
    labels = np.asarray(ctx.attr("classlabels_ints", None) or ctx.attr("classlabels_int64s", None) or [],
                        dtype=np.int64)
    return ops.gather(const(labels, Type.i64), idx, i64(0)).output(0)


def _num_labels(ctx: NodeContext) -> int:
    for name in ("classlabels_strings", "classlabels_ints", "classlabels_int64s"):
        if ctx.has_attr(name):
            return len(ctx.attr(name))
    raise ctx.fail("the class labels are missing")


@converter("LinearClassifier", domain=ML)
def linear_classifier(ctx: NodeContext) -> list[Output]:
    x = convert(ctx.req(0), Type.f32)
    coef = np.asarray(ctx.attr("coefficients"), dtype=np.float32)
    n_labels = _num_labels(ctx)
    inter = np.asarray(ctx.attr("intercepts", []), dtype=np.float32)
    n_rows = len(inter) if len(inter) else (n_labels if n_labels > 2 else 1)
    w = coef.reshape(n_rows, -1)
    scores = ops.matmul(x, const(w, Type.f32), False, True).output(0)
    if len(inter):
        scores = ops.add(scores, const(inter, Type.f32)).output(0)
    how = ctx.attr("post_transform", "NONE")
    if n_rows == 1 and n_labels == 2:  # binary: one score column, as scikit-learn's decision_function
        s = scores
        if how == "LOGISTIC":
            p = ops.sigmoid(s).output(0)
            scores = ops.concat([ops.subtract(const(1.0, Type.f32), p), p], 1).output(0)
        else:
            scores = ops.concat([ops.negative(s), s], 1).output(0)
            scores = _post(ctx, scores, how) if how != "NONE" else scores
    else:
        scores = _post(ctx, scores, how)
    return [_labels(ctx, scores), scores]


@converter("LinearRegressor", domain=ML)
def linear_regressor(ctx: NodeContext) -> Output:
    x = convert(ctx.req(0), Type.f32)
    targets = ctx.attr("targets", 1)
    w = np.asarray(ctx.attr("coefficients"), dtype=np.float32).reshape(targets, -1)
    y = ops.matmul(x, const(w, Type.f32), False, True).output(0)
    inter = ctx.attr("intercepts", [])
    if inter:
        y = ops.add(y, const(np.asarray(inter, dtype=np.float32), Type.f32)).output(0)
    return _post(ctx, y, ctx.attr("post_transform", "NONE"))


# -- tree ensembles ---------------------------------------------------------------------------
_OLD_MODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5}


def _old_trees(ctx: NodeContext, prefix: str) -> dict[str, Any]:
    """TreeEnsembleClassifier/Regressor-1/3 attributes in TreeEnsemble-5's layout: every
    (tree id, node id) pair gets an index; leaves keep their (target, weight) entries."""
    def floats(name: str) -> list[float]:
        if ctx.has_attr(f"{name}_as_tensor"):
            return [float(v) for v in np.asarray(ctx.attr(f"{name}_as_tensor")).reshape(-1)]
        return [float(v) for v in ctx.attr(name, [])]

    trees, ids = ctx.attr("nodes_treeids"), ctx.attr("nodes_nodeids")
    modes = ctx.attr("nodes_modes")
    feats, values = ctx.attr("nodes_featureids"), floats("nodes_values")
    trues, falses = ctx.attr("nodes_truenodeids"), ctx.attr("nodes_falsenodeids")
    missing = ctx.attr("nodes_missing_value_tracks_true", [0] * len(ids))
    node_index: dict[tuple[int, int], int] = {}
    leaf_index: dict[tuple[int, int], int] = {}
    for t, n, m in zip(trees, ids, modes):
        (leaf_index if m == "LEAF" else node_index).setdefault((t, n), len(leaf_index if m == "LEAF" else node_index))
    out: dict[str, list[Any]] = {k: [] for k in (
        "nodes_featureids", "nodes_modes", "nodes_splits", "nodes_truenodeids", "nodes_falsenodeids",
        "nodes_trueleafs", "nodes_falseleafs", "nodes_missing_value_tracks_true", "leaf_ids",
        "leaf_targetids", "leaf_weights")}
    interior = [k for k, m in enumerate(modes) if m != "LEAF"]
    interior.sort(key=lambda k: node_index[(trees[k], ids[k])])
    for k in interior:
        if modes[k] not in _OLD_MODES:
            raise ctx.fail(f"node mode '{modes[k]}' is not supported")
        t = trees[k]
        out["nodes_featureids"].append(feats[k])
        out["nodes_modes"].append(_OLD_MODES[modes[k]])
        out["nodes_splits"].append(values[k])
        for side, child in (("true", trues[k]), ("false", falses[k])):
            leaf = (t, child) in leaf_index
            out[f"nodes_{side}nodeids"].append(leaf_index[(t, child)] if leaf else node_index[(t, child)])
            out[f"nodes_{side}leafs"].append(int(leaf))
        out["nodes_missing_value_tracks_true"].append(int(missing[k]) if k < len(missing) else 0)
    roots: dict[int, tuple[int, int]] = {}
    children = {(trees[k], c) for k in interior for c in (trues[k], falses[k])}
    for t, n, m in zip(trees, ids, modes):
        if (t, n) not in children and t not in roots:
            roots[t] = (leaf_index[(t, n)], 1) if m == "LEAF" else (node_index[(t, n)], 0)
    out["tree_roots"] = [roots[t][0] for t in sorted(roots)]
    out["roots_are_leaves"] = [roots[t][1] for t in sorted(roots)]
    w_trees = ctx.attr(f"{prefix}_treeids")
    w_nodes = ctx.attr(f"{prefix}_nodeids")
    w_targets = ctx.attr(f"{prefix}_ids")
    w_values = floats(f"{prefix}_weights")
    for t, n, target, w in zip(w_trees, w_nodes, w_targets, w_values):
        if (t, n) not in leaf_index:
            raise ctx.fail(f"weight for tree {t} node {n}, which is not a leaf")
        out["leaf_ids"].append(leaf_index[(t, n)])
        out["leaf_targetids"].append(target)
        out["leaf_weights"].append(w)
    out["base_values"] = floats("base_values")
    return out


@converter("TreeEnsembleRegressor", domain=ML)
def tree_ensemble_regressor(ctx: NodeContext) -> Output:
    attrs = _old_trees(ctx, "target")
    attrs.update(n_targets=ctx.attr("n_targets", 1), aggregate_function=ctx.attr("aggregate_function", "SUM"),
                 post_transform=ctx.attr("post_transform", "NONE"), element_type=Type.f32)
    return ops.tree_ensemble(convert(ctx.req(0), Type.f32), **attrs).output(0)


@converter("TreeEnsembleClassifier", domain=ML)
def tree_ensemble_classifier(ctx: NodeContext) -> list[Output]:
    attrs = _old_trees(ctx, "class")
    n_labels = _num_labels(ctx)
    how = ctx.attr("post_transform", "NONE")
    binary = n_labels == 2 and len(set(attrs["leaf_targetids"])) == 1
    attrs.update(n_targets=1 if binary else n_labels, aggregate_function="SUM",
                 post_transform="NONE" if binary else how, element_type=Type.f32)
    if binary:
        attrs["leaf_targetids"] = [0] * len(attrs["leaf_targetids"])
    scores = ops.tree_ensemble(convert(ctx.req(0), Type.f32), **attrs).output(0)
    if binary:  # one score column for the second class, as onnxruntime completes it
        s = ops.sigmoid(scores).output(0) if how == "LOGISTIC" else scores
        scores = ops.concat([ops.subtract(const(1.0, Type.f32), s), s], 1).output(0)
    return [_labels(ctx, scores), scores]


@converter("TreeEnsemble", since=5, domain=ML)
def tree_ensemble(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    attrs: dict[str, Any] = {}
    for name in ("nodes_featureids", "nodes_truenodeids", "nodes_falsenodeids", "nodes_trueleafs",
                 "nodes_falseleafs", "tree_roots", "leaf_targetids"):
        attrs[name] = ctx.attr(name)
    for name in ("nodes_splits", "leaf_weights", "membership_values", "nodes_modes",
                 "nodes_missing_value_tracks_true"):
        if ctx.has_attr(name):
            attrs[name] = [float(v) for v in np.asarray(ctx.attr(name)).reshape(-1)]
    attrs["nodes_modes"] = [int(v) for v in attrs["nodes_modes"]]
    if "nodes_missing_value_tracks_true" in attrs:
        attrs["nodes_missing_value_tracks_true"] = [int(v) for v in attrs["nodes_missing_value_tracks_true"]]
    attrs["leaf_ids"] = list(range(len(attrs["leaf_targetids"])))
    attrs["n_targets"] = ctx.attr("n_targets")
    attrs["aggregate_function"] = AGGREGATES[ctx.attr("aggregate_function", 1)]
    attrs["post_transform"] = POST_TRANSFORMS[ctx.attr("post_transform", 0)]
    attrs["element_type"] = x.element_type
    if any(m >= len(MODES) for m in attrs["nodes_modes"]):
        raise ctx.fail("unknown node mode")
    return ops.tree_ensemble(x, **attrs).output(0)


@converter("ZipMap", domain=ML)
def zip_map(ctx: NodeContext) -> Output:
    """Per-row {label: probability} dicts: a sequence ember returns as a list of dicts."""
    port = ops.zip_map(ctx.req(0), ctx.attr("classlabels_int64s", []), ctx.attr("classlabels_strings", [])).output(0)
    port.rt_info["sequence_of_maps"] = True
    return port


@converter("Imputer", domain=ML)
def imputer(ctx: NodeContext) -> Output:
    """Replaces ``replaced_value_*`` (NaN by default for floats) with ``imputed_value_*`` (one
    value, or one per feature of the last axis)."""
    x = ctx.req(0)
    if x.element_type.is_real:
        imputed = np.asarray(ctx.attr("imputed_value_floats", []), dtype=np.float32)
        replaced = float(ctx.attr("replaced_value_float", float("nan")))
        target = ops.is_nan(x).output(0) if np.isnan(replaced) else \
            ops.equal(x, const(replaced, x.element_type)).output(0)
    else:
        imputed = np.asarray(ctx.attr("imputed_value_int64s", []), dtype=np.int64)
        target = ops.equal(x, const(ctx.attr("replaced_value_int64", 0), x.element_type)).output(0)
    if imputed.size == 0:
        raise ctx.fail("imputed values are required")
    return ops.select(target, const(imputed, x.element_type), x).output(0)


@converter("CategoryMapper", domain=ML)
def category_mapper(ctx: NodeContext) -> Output:
    """Strings to integers (``cats_strings`` -> ``cats_int64s``) or back, by position."""
    x = ctx.req(0)
    strings, ints = ctx.attr("cats_strings"), ctx.attr("cats_int64s")
    if x.element_type is Type.string:
        return ops.label_encoder(x, _strings(strings), const(np.asarray(ints, np.int64), Type.i64),
                                 const(np.asarray([ctx.attr("default_int64", -1)]), Type.i64)).output(0)
    return ops.label_encoder(convert(x, Type.i64), const(np.asarray(ints, np.int64), Type.i64), _strings(strings),
                             _strings([ctx.attr("default_string", "_Unused")])).output(0)


@converter("FeatureVectorizer", domain=ML)
def feature_vectorizer(ctx: NodeContext) -> Output:
    """The inputs as [N, d_k] f32 columns, concatenated (``inputdimensions`` = each d_k)."""
    dims = ctx.attr("inputdimensions", [])
    parts = []
    for i in range(ctx.num_inputs):
        x = convert(ctx.req(i), Type.f32)
        parts.append(reshape(x, [-1, dims[i]] if i < len(dims) else [0, -1], i >= len(dims)))
    return ops.concat(parts, 1).output(0)


@converter("OneHotEncoder", domain=ML)
def one_hot_encoder(ctx: NodeContext) -> Output:
    """One f32 column per category (``cats_int64s`` or ``cats_strings``) after the input's axes;
    unknown values give zeros (``zeros=1``, the default)."""
    x = ctx.req(0)
    if ctx.has_attr("cats_strings"):
        cats: list[Any] = ctx.attr("cats_strings")
        keys = _strings(cats)
        x_keys = x
    else:
        cats = ctx.attr("cats_int64s")
        keys = const(np.asarray(cats, np.int64), Type.i64)
        x_keys = convert(x, Type.i64)
    idx = ops.label_encoder(x_keys, keys, const(np.arange(len(cats), dtype=np.int64), Type.i64),
                            const(np.asarray([-1]), Type.i64)).output(0)
    return ops.one_hot(idx, i64(len(cats)), const(1.0, Type.f32), const(0.0, Type.f32), -1).output(0)


def _kernel(ctx: NodeContext, x: Output, sv: np.ndarray) -> Output:
    """[N, n_sv] kernel values of the rows of ``x`` against the support vectors."""
    kind = ctx.attr("kernel_type", "LINEAR")
    gamma, coef0, degree = (list(ctx.attr("kernel_params", [])) + [0.0, 0.0, 0.0])[:3]
    svc = const(sv, Type.f32)
    if kind == "RBF":
        diff = ops.subtract(ops.unsqueeze(x, i64([1])), svc).output(0)
        d2 = ops.reduce_sum(ops.multiply(diff, diff), i64([2]), False).output(0)
        return ops.exp(ops.multiply(d2, const(-gamma, Type.f32))).output(0)
    dot = ops.matmul(x, svc, False, True).output(0)
    if kind == "LINEAR":
        return dot
    z = ops.add(ops.multiply(dot, const(gamma, Type.f32)), const(coef0, Type.f32)).output(0)
    if kind == "POLY":
        return ops.power(z, const(float(degree), Type.f32)).output(0)
    if kind == "SIGMOID":
        return ops.tanh(z).output(0)
    raise ctx.fail(f"kernel_type '{kind}' is not LINEAR, POLY, RBF or SIGMOID")


@converter("SVMRegressor", domain=ML)
def svm_regressor(ctx: NodeContext) -> Output:
    """sum_i coefficients[i] * K(x, support_vector[i]) + rho; +1/-1 for a one-class SVM."""
    x = convert(ctx.req(0), Type.f32)
    n_sv = ctx.attr("n_supports", 0)
    coef = np.asarray(ctx.attr("coefficients"), dtype=np.float32)
    if n_sv:
        sv = np.asarray(ctx.attr("support_vectors"), dtype=np.float32).reshape(n_sv, -1)
        k = _kernel(ctx, x, sv)
        y = ops.matmul(k, const(coef.reshape(-1, 1), Type.f32), False, False).output(0)
    else:  # a linear SVM: coefficients are the weights
        y = ops.matmul(x, const(coef.reshape(-1, 1), Type.f32), False, False).output(0)
    y = ops.add(y, const(np.asarray(ctx.attr("rho", [0.0]), dtype=np.float32)[:1], Type.f32)).output(0)
    if ctx.attr("one_class", 0):
        y = ops.select(ops.greater(y, const(0.0, Type.f32)), const(1.0, Type.f32), const(-1.0, Type.f32)).output(0)
    return _post(ctx, y, ctx.attr("post_transform", "NONE"))


@converter("SVMClassifier", domain=ML)
def svm_classifier(ctx: NodeContext) -> list[Output]:
    """One-vs-one support-vector classification (``vectors_per_class`` given): the pairwise
    decision values (class i vs j, i < j: coefficients of row j-1 over class i's vectors plus
    row i over class j's, plus rho) are the scores; each pair votes, the most votes win (the
    lowest class on ties). Linear SVMs (no support vectors): one score per class, the largest
    wins. Platt probabilities (prob_a/prob_b) are not supported."""
    if ctx.attr("prob_a", []):
        raise ctx.fail("probability estimates (prob_a, prob_b) are not supported")
    x = convert(ctx.req(0), Type.f32)
    per_class = ctx.attr("vectors_per_class", [])
    coef = np.asarray(ctx.attr("coefficients"), dtype=np.float32)
    rho = np.asarray(ctx.attr("rho", []), dtype=np.float32)
    n_labels = _num_labels(ctx)
    if not per_class:
        w = coef.reshape(-1, coef.size // max(1, len(rho) or n_labels))
        scores = ops.matmul(x, const(w, Type.f32), False, True).output(0)
        if rho.size:
            scores = ops.add(scores, const(rho, Type.f32)).output(0)
        scores = _post(ctx, scores, ctx.attr("post_transform", "NONE"))
        return [_labels(ctx, scores), scores]
    n_sv = int(sum(per_class))
    sv = np.asarray(ctx.attr("support_vectors"), dtype=np.float32).reshape(n_sv, -1)
    k = _kernel(ctx, x, sv)  # [N, n_sv]
    coef = coef.reshape(-1, n_sv)
    starts = np.concatenate([[0], np.cumsum(per_class)]).astype(int)
    n_classes = len(per_class)
    pair_weights = []
    wins, losses = [], []
    for i in range(n_classes):
        for j in range(i + 1, n_classes):
            w = np.zeros(n_sv, dtype=np.float32)
            w[starts[i]:starts[i + 1]] = coef[j - 1, starts[i]:starts[i + 1]]
            w[starts[j]:starts[j + 1]] = coef[i, starts[j]:starts[j + 1]]
            pair_weights.append(w)
            wins.append(np.eye(n_classes, dtype=np.float32)[i])
            losses.append(np.eye(n_classes, dtype=np.float32)[j])
    scores = ops.matmul(k, const(np.stack(pair_weights, 1), Type.f32), False, False).output(0)
    scores = ops.add(scores, const(rho[:len(pair_weights)], Type.f32)).output(0)
    positive = convert(ops.greater(scores, const(0.0, Type.f32)).output(0), Type.f32)
    negative = ops.subtract(const(1.0, Type.f32), positive).output(0)
    votes = ops.add(ops.matmul(positive, const(np.stack(wins), Type.f32), False, False),
                    ops.matmul(negative, const(np.stack(losses), Type.f32), False, False)).output(0)
    # the lowest class wins a tie: a tiny bonus that never outweighs a vote
    votes = ops.subtract(votes, const(np.arange(n_classes, dtype=np.float32) * 1e-3, Type.f32)).output(0)
    scores = _post(ctx, scores, ctx.attr("post_transform", "NONE"))
    return [_labels(ctx, votes), scores]
