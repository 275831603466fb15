"""MatMul: batched matrix product with embedded transposes and numpy-style batch broadcasting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type
from ember.ops._util import broadcast_merge


@register_op
class MatMul(Node):
    """OpenVINO MatMul-0 (``version="opset1"``).

    ``transpose_a``/``transpose_b`` swap the two last axes of an input of rank 2 or more. A 1-D
    first input is a row vector, a 1-D second input a column vector; the axes added for them
    are removed from the result (1-D x 1-D gives a scalar). Batch axes broadcast.
    """

    type_name = "MatMul"
    version = "opset1"
    num_inputs = (2, 2)
    attributes = (Attr("transpose_a", "bool", False), Attr("transpose_b", "bool", False))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        a_t, b_t = self.input_type(0), self.input_type(1)
        if not a_t.compatible(b_t):
            raise self.fail(f"input element types differ: {a_t} and {b_t}")
        et = b_t if a_t.is_dynamic else a_t
        a_ps, b_ps = self.input_shape(0), self.input_shape(1)
        if not (a_ps.rank_is_static and b_ps.rank_is_static):
            return [(et, PartialShape.dynamic())]
        if len(a_ps) == 0 or len(b_ps) == 0:
            raise self.fail("scalars are not supported as MatMul inputs")
        a, b = list(a_ps), list(b_ps)
        if self.attrs["transpose_a"] and len(a) > 1:
            a[-2], a[-1] = a[-1], a[-2]
        if self.attrs["transpose_b"] and len(b) > 1:
            b[-2], b[-1] = b[-1], b[-2]
        if len(a) == 1:
            a = [Dimension(1)] + a
        if len(b) == 1:
            b = b + [Dimension(1)]
        k_a, k_b = a[-1], b[-2]
        if k_a.is_static and k_b.is_static and k_a != k_b:
            raise self.fail(f"inner dimensions do not match: {a_ps} x {b_ps} "
                            f"(transpose_a={self.attrs['transpose_a']}, transpose_b={self.attrs['transpose_b']})")
        rank = max(len(a), len(b))
        a = [Dimension(1)] * (rank - len(a)) + a
        b = [Dimension(1)] * (rank - len(b)) + b
        out = []
        for i in range(rank - 2):
            d = broadcast_merge(a[i], b[i])
            if d is None:
                if a[i].is_static and b[i].is_static:
                    raise self.fail(f"batch dimensions of {a_ps} and {b_ps} do not broadcast (axis {i})")
                d = Dimension()
            out.append(d)
        out += [a[-2], b[-1]]
        if len(a_ps) == 1:
            del out[-2]
        if len(b_ps) == 1:
            del out[-1]
        return [(et, PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        a, b = inputs
        out_dtype = self.output(0).element_type.dtype if not self.output(0).element_type.is_dynamic else a.dtype
        if a.ndim > 1 and self.attrs["transpose_a"]:
            a = np.swapaxes(a, -1, -2)
        if b.ndim > 1 and self.attrs["transpose_b"]:
            b = np.swapaxes(b, -1, -2)
        if a.dtype.kind == "f" and a.dtype.itemsize >= 4 or a.dtype.kind in "iu":
            work = a.dtype
        elif a.dtype.kind == "b":
            work = np.dtype(np.int64)
        else:  # f16, bf16 and the small floats accumulate in f32
            work = np.dtype(np.float32)
        out = np.matmul(a.astype(work, copy=False), b.astype(work, copy=False))
        return [np.asarray(out).astype(out_dtype, copy=False)]


@builder
def matmul(data_a: Any, data_b: Any, transpose_a: bool, transpose_b: bool, name: str | None = None) -> Node:
    """A MatMul node: ``data_a @ data_b`` with optional transposes of the two last axes."""
    return MatMul([data_a, data_b], {"transpose_a": transpose_a, "transpose_b": transpose_b}, name)
