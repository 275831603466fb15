"""Lowering rule for TreeEnsemble (ai.onnx.ml; scikit-learn forests and gradient boosting through
skl2onnx) on the tree-walk kernel (``kernels/trees.py``): the node, root and leaf tables are
built here once from the op's attributes. Ensembles the kernel does not take (BRANCH_MEMBER
nodes, SOFTMAX_ZERO/PROBIT, a cycle or an id out of range) stay on the reference kernel, which
computes them or raises."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import Lowering, lowers, static_shape
from ember.devices.cpu.runtime.plan import PLAIN, Op
from ember.graph.node import Node

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def tree_tables(attrs: dict[str, Any], features: int) -> list[np.ndarray] | None:
    """The kernel's tables (feature, mode, split, true/false next, NaN-goes-true, roots, leaf
    weights, leaf holds target, base values), or None when the kernel cannot take the ensemble."""
    n = len(attrs["nodes_featureids"])
    modes = np.asarray(attrs["nodes_modes"], np.int64).reshape(n)
    if np.any((modes < 0) | (modes > 5)):  # BRANCH_MEMBER: a set test
        return None
    feat = np.asarray(attrs["nodes_featureids"], np.int64).reshape(n)
    if np.any((feat < 0) | (feat >= features)):
        return None
    targets = int(attrs["n_targets"])
    leaf_ids = np.asarray(attrs["leaf_ids"], np.int64)
    n_leaves = int(leaf_ids.max(initial=-1)) + 1
    if targets < 1 or np.any(leaf_ids < 0):
        return None
    weights = np.zeros((max(n_leaves, 1), targets), np.float64)
    has = np.zeros((max(n_leaves, 1), targets), np.uint8)
    for leaf, t, w in zip(attrs["leaf_ids"], attrs["leaf_targetids"], attrs["leaf_weights"]):
        weights[leaf, t] += w  # as the reference adds duplicate entries
        has[leaf, t] = 1

    def encode(ids: Any, leafs: Any) -> np.ndarray | None:
        ids_a = np.asarray(ids, np.int64).reshape(-1)
        lf = np.asarray(leafs, np.int64).reshape(-1).astype(bool)
        if np.any(ids_a < 0) or np.any(ids_a[lf] >= n_leaves) or np.any(ids_a[~lf] >= n):
            return None
        return np.where(lf, -(ids_a + 1), ids_a)

    tnext = encode(attrs["nodes_truenodeids"], attrs["nodes_trueleafs"])
    fnext = encode(attrs["nodes_falsenodeids"], attrs["nodes_falseleafs"])
    roots_leaf = list(attrs["roots_are_leaves"]) + [0] * (len(attrs["tree_roots"]) - len(attrs["roots_are_leaves"]))
    roots = encode(attrs["tree_roots"], roots_leaf[:len(attrs["tree_roots"])])
    if tnext is None or fnext is None or roots is None:
        return None
    # no cycles: a depth-first walk from every root meets no node on its own path
    state = np.zeros(n, np.int8)  # 0 new, 1 on the stack, 2 done
    for start in roots[roots >= 0]:
        stack = [(int(start), 0)]
        while stack:
            node, k = stack.pop()
            if k == 0:
                if state[node] == 1:
                    return None
                if state[node] == 2:
                    continue
                state[node] = 1
            kids = [int(c) for c in (tnext[node], fnext[node]) if c >= 0]
            if k < len(kids):
                stack.append((node, k + 1))
                stack.append((kids[k], 0))
            else:
                state[node] = 2
    miss = np.zeros(n, np.uint8)
    given = np.asarray(attrs["nodes_missing_value_tracks_true"], np.int64).reshape(-1)[:n]
    miss[:given.size] = given != 0
    base = np.zeros(targets, np.float64)
    if attrs["base_values"]:
        b = np.asarray(attrs["base_values"], np.float64).reshape(-1)
        if b.size != targets:
            return None
        base = b
    split = np.asarray(attrs["nodes_splits"], np.float64).reshape(n)
    pad = [np.zeros(1, a.dtype) if a.size == 0 else a for a in (feat, modes, split, tnext, fnext, miss)]
    return [*pad, roots, weights, has, base]


@lowers("TreeEnsemble")
def lower_tree_ensemble(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.trees import AGGREGATES, TRANSFORMS, tree_ensemble

    a = node.attrs
    port = node.input_values()[0]
    out_dt = node.output(0).element_type.dtype
    if port.element_type.dtype not in _FLOATS or out_dt not in _FLOATS:
        return False
    agg, transform = str(a["aggregate_function"]), str(a["post_transform"])
    if agg not in AGGREGATES or transform not in TRANSFORMS:
        return False
    shape = static_shape(port)
    out_shape = static_shape(node.output(0))
    if len(shape) == 0:
        return False
    rows = 1 if len(shape) == 1 else shape[0]
    features = math.prod(shape) // rows if rows else math.prod(shape[1:])
    tables = tree_tables(a, features)
    if tables is None:
        return False
    x = lowering.native_input(lowering.tensor(port), PLAIN)
    consts = [lowering.program.const(t) for t in tables]
    y = lowering.value(out_shape, PLAIN, out_dt, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa
    targets = int(a["n_targets"])

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [tree_ensemble(ins[0].reshape(rows, features), outs[0].reshape(rows, targets), ins[1:], agg=agg,
                              transform=transform, threads=threads, isa=isa)]

    lowering.program.add(Op(node.friendly_name, "TreeEnsemble", [x, *consts], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
