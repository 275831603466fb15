"""ScaledDotProductAttention (opset13): softmax(Q K^T * scale + bias) V."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import PartialShape
from ember.graph.types import Type
from ember.ops._util import broadcast_shapes


@register_op
class ScaledDotProductAttention(Node):
    """Inputs: query [N,...,L,E], key [N,...,S,E], value [N,...,S,Ev], optional attention_mask
    (boolean: False masks out; float: added) and optional scalar scale (default 1/sqrt(E))."""

    type_name = "ScaledDotProductAttention"
    version = "opset13"
    num_inputs = (3, 5)
    attributes = (Attr("causal", "bool", False),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        q, k, v = self.input_shape(0), self.input_shape(1), self.input_shape(2)
        t = self.input_type(0)
        if not (t.is_real or t.is_dynamic):
            raise self.fail(f"query must be floating-point, got {t}")
        if not (q.rank_is_static and v.rank_is_static):
            return [(t, PartialShape.dynamic())]
        if len(q) < 2 or len(v) < 2:
            raise self.fail(f"query and value need rank >= 2, got {q} and {v}")
        batch_q = PartialShape(list(q)[:-2])
        batch_v = PartialShape(list(v)[:-2])
        if k.rank_is_static and len(k) >= 2:
            if q[-1].is_static and k[-1].is_static and q[-1] != k[-1]:
                raise self.fail(f"query and key embeddings differ: {q} and {k}")
        batch = broadcast_shapes(batch_q, batch_v)
        return [(t, PartialShape(list(batch) + [q[-2], v[-1]]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        q, k, v = (x.astype(np.float64) for x in inputs[:3])
        mask = inputs[3] if len(inputs) > 3 else None
        scale = float(np.asarray(inputs[4]).reshape(-1)[0]) if len(inputs) > 4 else 1.0 / np.sqrt(q.shape[-1])
        scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
        L, S = scores.shape[-2], scores.shape[-1]
        if self.attrs["causal"]:
            scores = scores + np.triu(np.full((L, S), -np.inf), k=1)
        elif mask is not None:
            if mask.dtype == np.bool_:
                scores = np.where(mask, scores, -np.inf)
            else:
                scores = scores + mask.astype(np.float64)
        scores = scores - scores.max(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            w = np.exp(scores)
            w = w / w.sum(axis=-1, keepdims=True)
        return [np.matmul(w, v).astype(inputs[0].dtype)]


@builder
def scaled_dot_product_attention(query: Any, key: Any, value: Any, attention_mask: Any = None, scale: Any = None,
                                 causal: bool = False, name: str | None = None) -> Node:
    inputs = [query, key, value]
    if attention_mask is not None or scale is not None:
        inputs.append(attention_mask if attention_mask is not None else np.zeros((), np.float32))
    if scale is not None:
        inputs.append(scale)
    return ScaledDotProductAttention(inputs, {"causal": causal}, name)
