"""OpenVINO ops the ONNX frontend needs that no other family module holds: BitwiseLeftShift,
BitwiseRightShift, Eye, Unique and Col2Im."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type, as_type
from ember.ops._util import broadcast_shapes, normalize_axis


class _Shift(Node):
    """Integer shifts with numpy broadcasting; shifts outside ``[0, bits)`` are defined:
    a left shift gives 0, a right shift the sign fill (0 or -1)."""

    num_inputs = (2, 2)
    attributes = (Attr("auto_broadcast", "str", "numpy"),)
    left = True

    def infer(self) -> list[tuple[Type, PartialShape]]:
        a, b = self.input_type(0), self.input_type(1)
        if not a.compatible(b):
            raise self.fail(f"input element types differ: {a} and {b}")
        if not (a.is_integral_number or a.is_dynamic):
            raise self.fail(f"needs integer inputs, got {a}")
        shape = broadcast_shapes(self.input_shape(0), self.input_shape(1), self.attrs["auto_broadcast"])
        return [(a, shape)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        a, b = np.broadcast_arrays(*inputs)
        bits = a.dtype.itemsize * 8
        inside = (b >= 0) & (b < bits)
        shift = np.where(inside, b, 0).astype(a.dtype)
        if self.left:
            unsigned = np.dtype(f"u{a.dtype.itemsize}")
            out = np.left_shift(a.view(unsigned), shift.view(unsigned)).view(a.dtype)
            out = np.where(inside, out, 0)
        else:
            out = np.right_shift(a, shift)
            fill = np.where(a < 0, -1, 0) if a.dtype.kind == "i" else 0
            out = np.where(inside, out, fill)
        return [np.asarray(out, dtype=a.dtype)]


@register_op
class BitwiseLeftShift(_Shift):
    """OpenVINO BitwiseLeftShift-15."""

    type_name = "BitwiseLeftShift"
    version = "opset15"


@register_op
class BitwiseRightShift(_Shift):
    """OpenVINO BitwiseRightShift-15 (arithmetic for signed types)."""

    type_name = "BitwiseRightShift"
    version = "opset15"
    left = False


@builder
def bitwise_left_shift(arg0: Any, arg1: Any, auto_broadcast: str = "NUMPY", name: str | None = None) -> Node:
    """``arg0 << arg1`` elementwise."""
    return BitwiseLeftShift([arg0, arg1], {"auto_broadcast": auto_broadcast.lower()}, name)


@builder
def bitwise_right_shift(arg0: Any, arg1: Any, auto_broadcast: str = "NUMPY", name: str | None = None) -> Node:
    """``arg0 >> arg1`` elementwise."""
    return BitwiseRightShift([arg0, arg1], {"auto_broadcast": auto_broadcast.lower()}, name)


def _scalar_int(node: Node, port: int) -> int | None:
    v = node.input_value(port)
    return None if v is None else int(np.asarray(v).reshape(-1)[0])


@register_op
class Eye(Node):
    """OpenVINO Eye-9: ``[*batch_shape, rows, cols]`` with ones on diagonal ``diagonal_index``."""

    type_name = "Eye"
    version = "opset9"
    num_inputs = (3, 4)
    attributes = (Attr("output_type", "type"),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        for i in range(self.get_input_size()):
            if not (self.input_type(i).is_integral_number or self.input_type(i).is_dynamic):
                raise self.fail(f"input {i} must be an integer, got {self.input_type(i)}")
        dims = []
        for port in (0, 1):
            n = _scalar_int(self, port)
            if n is not None and n < 0:
                raise self.fail(f"input {port} must not be negative, got {n}")
            dims.append(Dimension() if n is None else Dimension(n))
        if self.get_input_size() == 4:
            batch = self.input_value(3)
            bs = self.input_shape(3)
            if batch is not None:
                lead = [Dimension(int(d)) for d in np.asarray(batch).reshape(-1)]
            elif bs.is_static:
                lead = [Dimension() for _ in range(bs.to_shape()[0])]
            else:
                return [(self.attrs["output_type"], PartialShape.dynamic())]
            dims = lead + dims
        return [(self.attrs["output_type"], PartialShape(dims))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        rows, cols, k = (int(np.asarray(v).reshape(-1)[0]) for v in inputs[:3])
        out = np.eye(rows, cols, k=k, dtype=self.attrs["output_type"].dtype)
        if len(inputs) == 4:
            lead = tuple(int(d) for d in np.asarray(inputs[3]).reshape(-1))
            out = np.broadcast_to(out, lead + out.shape).copy()
        return [out]


@builder
def eye(num_rows: Any, num_columns: Any, diagonal_index: Any, output_type: Any, batch_shape: Any = None,
        name: str | None = None) -> Node:
    """An Eye-9 node."""
    inputs = [num_rows, num_columns, diagonal_index] + ([] if batch_shape is None else [batch_shape])
    return Eye(inputs, {"output_type": as_type(output_type)}, name)


@register_op
class Unique(Node):
    """OpenVINO Unique-10: unique elements (or slices along ``axis``), first-occurrence indices,
    the inverse mapping and the counts; ``sorted`` orders them ascending, else by first occurrence."""

    type_name = "Unique"
    version = "opset10"
    num_inputs = (1, 2)
    attributes = (Attr("sorted", "bool", True), Attr("index_element_type", "type", Type.i64),
                  Attr("count_element_type", "type", Type.i64))

    def _axis(self) -> int | None:
        if self.get_input_size() < 2:
            return None
        v = self.input_value(1)
        if v is None:
            raise self.fail("the axis must be a constant")
        ps = self.input_shape(0)
        if not ps.rank_is_static:
            raise self.fail("the data rank must be known when an axis is given")
        return normalize_axis(int(np.asarray(v).reshape(-1)[0]), len(ps), self.friendly_name)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        it, ct = self.attrs["index_element_type"], self.attrs["count_element_type"]
        if it not in (Type.i32, Type.i64) or ct not in (Type.i32, Type.i64):
            raise self.fail("index and count types must be i32 or i64")
        et, ps = self.input_type(0), self.input_shape(0)
        axis = self._axis()
        if axis is None:
            total: Dimension | None = None
            if ps.rank_is_static:
                total = Dimension(1)
                for d in ps:
                    total = total * d
            n = Dimension() if total is None else Dimension(min(1, total.min_length), total.max_length)
            rev = Dimension() if total is None else total
            return [(et, PartialShape([n])), (it, PartialShape([n])), (it, PartialShape([rev])),
                    (ct, PartialShape([n]))]
        d = ps[axis]
        n = Dimension(min(1, d.min_length), d.max_length)
        dims = list(ps)
        dims[axis] = n
        return [(et, PartialShape(dims)), (it, PartialShape([n])), (it, PartialShape([d])),
                (ct, PartialShape([n]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        axis = self._axis()
        if axis is None:
            items = x.reshape(-1)
            keys = [items[i].item() for i in range(items.size)]
        else:
            moved = np.moveaxis(x, axis, 0)
            keys = [tuple(moved[i].reshape(-1).tolist()) for i in range(moved.shape[0])]
        first: dict[Any, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        order = list(first)
        if self.attrs["sorted"]:
            order = sorted(order)
        pos = {k: j for j, k in enumerate(order)}
        idx = np.array([first[k] for k in order], dtype=np.int64)
        inverse = np.array([pos[k] for k in keys], dtype=np.int64)
        counts = np.bincount(inverse, minlength=len(order)) if keys else np.zeros(0, np.int64)
        if axis is None:
            uniq = x.reshape(-1)[idx]
        else:
            uniq = np.take(x, idx, axis=axis)
        it, ct = self.attrs["index_element_type"].dtype, self.attrs["count_element_type"].dtype
        return [uniq, idx.astype(it), inverse.astype(it), counts.astype(ct)]


@builder
def unique(data: Any, axis: Any = None, sorted: bool = True, index_element_type: Any = "i64",  # noqa: A002
           count_element_type: Any = "i64", name: str | None = None) -> Node:
    """A Unique-10 node with four outputs: unique values, indices, reverse indices, counts."""
    inputs = [data] if axis is None else [data, axis]
    return Unique(inputs, {"sorted": sorted, "index_element_type": as_type(index_element_type),
                           "count_element_type": as_type(count_element_type)}, name)


@register_op
class Col2Im(Node):
    """OpenVINO Col2Im-15: sum sliding-window columns ``[N, C*kh*kw, L]`` back into ``[N, C, H, W]``."""

    type_name = "Col2Im"
    version = "opset15"
    num_inputs = (3, 3)
    attributes = (Attr("strides", "ints", [1, 1]), Attr("dilations", "ints", [1, 1]),
                  Attr("pads_begin", "ints", [0, 0]), Attr("pads_end", "ints", [0, 0]))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        ps = self.input_shape(0)
        if ps.rank_is_static and len(ps) not in (2, 3):
            raise self.fail(f"data must be 2-D or 3-D, got {ps}")
        size, kernel = self.input_value(1), self.input_value(2)
        hw = [Dimension(), Dimension()] if size is None else [Dimension(int(v)) for v in np.asarray(size)]
        if not ps.rank_is_static:
            return [(self.input_type(0), PartialShape.dynamic())]
        batched = len(ps) == 3
        col = ps[1] if batched else ps[0]
        channels = Dimension()
        if kernel is not None and col.is_static:
            k = int(np.prod(np.asarray(kernel)))
            if col.get_length() % k:
                raise self.fail(f"{col} columns are not a multiple of the kernel size {k}")
            channels = Dimension(col.get_length() // k)
        dims = ([ps[0]] if batched else []) + [channels] + hw
        return [(self.input_type(0), PartialShape(dims))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        data = inputs[0]
        batched = data.ndim == 3
        x = data if batched else data[None]
        oh, ow = (int(v) for v in np.asarray(inputs[1]))
        kh, kw = (int(v) for v in np.asarray(inputs[2]))
        sh, sw = self.attrs["strides"]
        dh, dw = self.attrs["dilations"]
        pt, pl = self.attrs["pads_begin"]
        pb, pr = self.attrs["pads_end"]
        n, ck, _ = x.shape
        c = ck // (kh * kw)
        bh = (oh + pt + pb - (dh * (kh - 1) + 1)) // sh + 1
        bw = (ow + pl + pr - (dw * (kw - 1) + 1)) // sw + 1
        cols = x.reshape(n, c, kh, kw, bh, bw)
        acc = np.zeros((n, c, oh + pt + pb, ow + pl + pr), dtype=np.float64 if x.dtype.kind == "f" else x.dtype)
        for i in range(kh):
            for j in range(kw):
                acc[:, :, i * dh: i * dh + sh * bh: sh, j * dw: j * dw + sw * bw: sw] += cols[:, :, i, j]
        out = acc[:, :, pt: pt + oh, pl: pl + ow].astype(x.dtype)
        return [out if batched else out[0]]


@builder
def col2im(data: Any, output_size: Any, kernel_size: Any, strides: list[int] | None = None,
           dilations: list[int] | None = None, pads_begin: list[int] | None = None,
           pads_end: list[int] | None = None, name: str | None = None) -> Node:
    """A Col2Im-15 node."""
    return Col2Im([data, output_size, kernel_size], {
        "strides": strides or [1, 1], "dilations": dilations or [1, 1],
        "pads_begin": pads_begin or [0, 0], "pads_end": pads_end or [0, 0]}, name)
