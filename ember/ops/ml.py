"""ember's classical-ML ops (ONNX domain ``ai.onnx.ml``): LabelEncoder and TreeEnsemble.

OpenVINO has no counterpart, so they are ember's own (IR version ``ember_opset1``). The other
``ai.onnx.ml`` ops scikit-learn exports (Scaler, Normalizer, LinearClassifier, Binarizer,
ArrayFeatureExtractor...) convert into ordinary OpenVINO ops in the ONNX frontend.

``TreeEnsemble`` holds the trees in the layout of ONNX's ``TreeEnsemble`` (ai.onnx.ml 5):
interior nodes with a feature, a comparison and a threshold, children that are either nodes
or leaves, and leaves holding (target, weight) entries (several per leaf for the older
TreeEnsembleClassifier/Regressor, which the frontend rewrites into this layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type

MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ", "BRANCH_MEMBER")
AGGREGATES = ("AVERAGE", "SUM", "MIN", "MAX")
POST_TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")


@register_op
class LabelEncoder(Node):
    """Maps each element of the input through a table: inputs data, keys, values (1-D, same
    length) and default (one element, for elements with no key). Keys and values may be
    strings, integers or floats; a NaN key matches NaN elements."""

    type_name = "LabelEncoder"
    version = "ember_opset1"
    num_inputs = (4, 4)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        kt, vt, dt = self.input_type(1), self.input_type(2), self.input_type(3)
        if not vt.compatible(dt):
            raise self.fail(f"values ({vt}) and default ({dt}) differ in type")
        ks, vs = self.input_shape(1), self.input_shape(2)
        if ks.is_static and vs.is_static and ks.to_shape() != vs.to_shape():
            raise self.fail(f"{ks} keys for {vs} values")
        if not self.input_type(0).compatible(kt) and not (self.input_type(0).is_real and kt.is_real):
            raise self.fail(f"the input is {self.input_type(0)}, the keys {kt}")
        return [(vt, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, keys, values, default = (np.asarray(a) for a in inputs)
        default = default.reshape(-1)[0]
        table, nan_value = label_table(keys, values)
        flat = []
        for e in x.reshape(-1):
            key = e.item() if isinstance(e, np.generic) else e
            if nan_value is not None and isinstance(key, float) and np.isnan(key):
                flat.append(nan_value)
            else:
                flat.append(table.get(key, default))
        out = np.empty(len(flat), dtype=values.dtype)
        out[:] = flat
        return [out.reshape(x.shape)]


def label_table(keys: np.ndarray, values: np.ndarray) -> tuple[dict[Any, Any], Any]:
    """LabelEncoder's lookup as a dict (a later duplicate key wins; -0.0 and 0.0 are one key)
    and the value of a NaN key (None without one)."""
    table: dict[Any, Any] = {}
    nan_value = None
    for k, v in zip(keys.reshape(-1), values.reshape(-1)):
        if isinstance(k, float | np.floating) and np.isnan(k):
            nan_value = v
        else:
            table[k.item() if isinstance(k, np.generic) else k] = v
    return table, nan_value


@register_op
class TreeEnsemble(Node):
    """A sum (or average, min, max) of decision trees over the features of ``[N, F]`` input
    rows, then ``base_values`` and a ``post_transform``; output ``[N, n_targets]`` in
    ``element_type``.

    Nodes: ``nodes_featureids``, ``nodes_modes`` (index into ``MODES``), ``nodes_splits``,
    ``nodes_truenodeids``/``nodes_falsenodeids`` with ``nodes_trueleafs``/``nodes_falseleafs``
    (1: the id is a leaf's), ``nodes_missing_value_tracks_true``; ``membership_values`` lists
    the sets of the BRANCH_MEMBER nodes in node order, each ended by NaN. ``tree_roots`` are
    node ids (or leaf ids when ``roots_are_leaves``). Leaves: entries ``leaf_ids`` ->
    (``leaf_targetids``, ``leaf_weights``).
    """

    type_name = "TreeEnsemble"
    version = "ember_opset1"
    num_inputs = (1, 1)
    attributes = (
        Attr("nodes_featureids", "ints", []), Attr("nodes_modes", "ints", []), Attr("nodes_splits", "floats", []),
        Attr("nodes_truenodeids", "ints", []), Attr("nodes_falsenodeids", "ints", []),
        Attr("nodes_trueleafs", "ints", []), Attr("nodes_falseleafs", "ints", []),
        Attr("nodes_missing_value_tracks_true", "ints", []), Attr("membership_values", "floats", []),
        Attr("tree_roots", "ints", []), Attr("roots_are_leaves", "ints", []),
        Attr("leaf_ids", "ints", []), Attr("leaf_targetids", "ints", []), Attr("leaf_weights", "floats", []),
        Attr("n_targets", "int", 1), Attr("aggregate_function", "str", "SUM"),
        Attr("base_values", "floats", []), Attr("post_transform", "str", "NONE"),
        Attr("element_type", "type", Type.f32),
    )

    def infer(self) -> list[tuple[Type, PartialShape]]:
        a = self.attrs
        n = len(a["nodes_featureids"])
        for name in ("nodes_modes", "nodes_splits", "nodes_truenodeids", "nodes_falsenodeids",
                     "nodes_trueleafs", "nodes_falseleafs"):
            if len(a[name]) != n:
                raise self.fail(f"{name} has {len(a[name])} entries for {n} nodes")
        if not len(a["leaf_ids"]) == len(a["leaf_targetids"]) == len(a["leaf_weights"]):
            raise self.fail("leaf_ids, leaf_targetids and leaf_weights differ in length")
        if any(m < 0 or m >= len(MODES) for m in a["nodes_modes"]):
            raise self.fail(f"a node mode is not one of {MODES}")
        if a["aggregate_function"] not in AGGREGATES:
            raise self.fail(f"aggregate_function '{a['aggregate_function']}' is not one of {AGGREGATES}")
        if a["post_transform"] not in POST_TRANSFORMS:
            raise self.fail(f"post_transform '{a['post_transform']}' is not one of {POST_TRANSFORMS}")
        if any(t < 0 or t >= a["n_targets"] for t in a["leaf_targetids"]):
            raise self.fail(f"a leaf target is outside [0, {a['n_targets']})")
        ps = self.input_shape(0)
        rows = ps[0] if ps.rank_is_static and len(ps) >= 1 else Dimension()
        if ps.rank_is_static and len(ps) == 1:
            rows = Dimension(1)
        return [(a["element_type"], PartialShape([rows, a["n_targets"]]))]

    def _leaf_table(self) -> tuple[np.ndarray, np.ndarray]:
        a = self.attrs
        n_leaves = max(a["leaf_ids"], default=-1) + 1
        weights = np.zeros((n_leaves, a["n_targets"]), dtype=np.float64)
        has = np.zeros((n_leaves, a["n_targets"]), dtype=bool)
        for leaf, t, w in zip(a["leaf_ids"], a["leaf_targetids"], a["leaf_weights"]):
            weights[leaf, t] += w
            has[leaf, t] = True
        return weights, has

    def _members(self) -> dict[int, np.ndarray]:
        sets: dict[int, np.ndarray] = {}
        values = list(self.attrs["membership_values"])
        k = 0
        for node, mode in enumerate(self.attrs["nodes_modes"]):
            if MODES[mode] != "BRANCH_MEMBER":
                continue
            current = []
            while k < len(values) and not np.isnan(values[k]):
                current.append(values[k])
                k += 1
            k += 1
            sets[node] = np.asarray(current, dtype=np.float64)
        return sets

    def _descend(self, x: np.ndarray, root: int, root_is_leaf: bool) -> np.ndarray:
        """The leaf id every row of ``x`` reaches from ``root``."""
        a = self.attrs
        rows = x.shape[0]
        node = np.full(rows, root, dtype=np.int64)
        done = np.full(rows, root_is_leaf)
        leaf = np.where(done, root, -1)
        feats = np.asarray(a["nodes_featureids"], dtype=np.int64)
        modes = np.asarray(a["nodes_modes"], dtype=np.int64)
        splits = np.asarray(a["nodes_splits"], dtype=np.float64)
        missing = np.zeros(len(feats), dtype=bool)
        missing[: len(a["nodes_missing_value_tracks_true"])] = np.asarray(
            a["nodes_missing_value_tracks_true"], dtype=bool)
        members = self._members()
        for _ in range(len(feats) + 1):
            live = np.nonzero(~done)[0]
            if live.size == 0:
                break
            nd = node[live]
            v = x[live, feats[nd]]
            s = splits[nd]
            m = modes[nd]
            with np.errstate(invalid="ignore"):
                cond = np.select([m == 0, m == 1, m == 2, m == 3, m == 4, m == 5],
                                 [v <= s, v < s, v >= s, v > s, v == s, v != s], False)
            for k in np.nonzero(m == 6)[0]:
                cond[k] = bool(np.isin(v[k], members[int(nd[k])]))
            cond = np.where(np.isnan(v), missing[nd], cond)
            nxt = np.where(cond, np.asarray(a["nodes_truenodeids"])[nd], np.asarray(a["nodes_falsenodeids"])[nd])
            is_leaf = np.where(cond, np.asarray(a["nodes_trueleafs"])[nd], np.asarray(a["nodes_falseleafs"])[nd])
            is_leaf = is_leaf.astype(bool)
            node[live] = nxt
            leaf[live[is_leaf]] = nxt[is_leaf]
            done[live[is_leaf]] = True
        if not done.all():
            raise self.fail("a tree has a cycle")
        return leaf

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        a = self.attrs
        x = np.asarray(inputs[0])
        x = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], int(np.prod(x.shape[1:])))  # 0 rows too
        x = x.astype(np.float64)
        weights, has = self._leaf_table()
        agg = a["aggregate_function"]
        n_targets = a["n_targets"]
        rows = x.shape[0]
        if agg in ("MIN", "MAX"):
            scores = np.full((rows, n_targets), np.inf if agg == "MIN" else -np.inf)
        else:
            scores = np.zeros((rows, n_targets))
        hit = np.zeros((rows, n_targets), dtype=bool)
        leaf_roots = list(a["roots_are_leaves"]) + [0] * (len(a["tree_roots"]) - len(a["roots_are_leaves"]))
        for root, root_leaf in zip(a["tree_roots"], leaf_roots):
            leaves = self._descend(x, root, bool(root_leaf))
            w, h = weights[leaves], has[leaves]
            if agg == "MIN":
                scores = np.where(h, np.minimum(scores, w), scores)
            elif agg == "MAX":
                scores = np.where(h, np.maximum(scores, w), scores)
            else:
                scores = scores + w
            hit |= h
        if agg == "AVERAGE" and a["tree_roots"]:
            scores = scores / len(a["tree_roots"])
        if agg in ("MIN", "MAX"):
            scores = np.where(hit, scores, 0.0)
        if a["base_values"]:
            scores = scores + np.asarray(a["base_values"], dtype=np.float64)
        return [_post_transform(scores, a["post_transform"]).astype(a["element_type"].dtype)]


def _post_transform(s: np.ndarray, how: str) -> np.ndarray:
    if how == "SOFTMAX":
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if how == "LOGISTIC":
        return 1.0 / (1.0 + np.exp(-s))
    if how == "SOFTMAX_ZERO":
        nz = s != 0
        m = np.where(nz, s, -np.inf).max(axis=1, keepdims=True)
        e = np.where(nz, np.exp(s - np.where(np.isfinite(m), m, 0.0)), 0.0)
        total = e.sum(axis=1, keepdims=True)
        return np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)
    if how == "PROBIT":
        from math import erf, sqrt

        def inv(p: float) -> float:  # inverse of the normal CDF by bisection on erf
            lo, hi = -10.0, 10.0
            for _ in range(80):
                mid = (lo + hi) / 2
                if 0.5 * (1 + erf(mid / sqrt(2))) < p:
                    lo = mid
                else:
                    hi = mid
            return (lo + hi) / 2

        return np.vectorize(inv)(s)
    return s


@register_op
class ZipMap(Node):
    """ai.onnx.ml ZipMap: each row of [N, C] scores as a dict {class label: score}; the output
    is a sequence (``Type.sequence``) of N dicts. Labels come from ``classlabels_int64s`` or
    ``classlabels_strings`` (JSON, so any characters survive the IR)."""

    type_name = "ZipMap"
    version = "ember_opset1"
    num_inputs = (1, 1)
    foldable = False
    attributes = (Attr("classlabels_int64s", "ints", []), Attr("classlabels_strings", "str", "[]"))

    def _labels(self) -> list[Any]:
        import json

        return list(self.attrs["classlabels_int64s"]) or json.loads(self.attrs["classlabels_strings"])

    def infer(self) -> list[tuple[Type, PartialShape]]:
        ps = self.input_shape(0)
        n = len(self._labels())
        if ps.rank_is_static and (len(ps) != 2 or (ps[1].is_static and ps[1].get_length() != n)):
            raise self.fail(f"the scores must be [N, {n}], got {ps}")
        return [(Type.sequence, PartialShape([ps[0] if ps.rank_is_static else Dimension()]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        labels = self._labels()
        rows = np.asarray(inputs[0], dtype=np.float32)
        out = np.empty(rows.shape[0], dtype=object)
        for i, row in enumerate(rows):
            out[i] = {k: float(v) for k, v in zip(labels, row)}
        return [out]


@builder
def zip_map(scores: Any, classlabels_int64s: Sequence[int] = (), classlabels_strings: Sequence[str] = (),
            name: str | None = None) -> Node:
    """Rows of scores as {label: score} dicts."""
    import json

    return ZipMap([scores], {"classlabels_int64s": list(classlabels_int64s),
                             "classlabels_strings": json.dumps(list(classlabels_strings), ensure_ascii=False)},
                  name)


@builder
def label_encoder(data: Any, keys: Any, values: Any, default: Any, name: str | None = None) -> Node:
    """Map ``data`` through ``keys`` -> ``values`` (``default`` for misses)."""
    return LabelEncoder([data, keys, values, default], {}, name)


@builder
def tree_ensemble(data: Any, name: str | None = None, **attrs: Any) -> Node:
    """A tree ensemble (``TreeEnsemble`` attributes as keywords)."""
    return TreeEnsemble([data], attrs, name)
