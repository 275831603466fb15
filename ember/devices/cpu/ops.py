"""The CPU device's own ops: what the low-precision lowering (``lowering/low_precision.py``)
rewrites quantized patterns into. They appear in the runtime model (``get_runtime_model()``)
and in the model cache's entries, so they are registered ops (IR version ``ember_opset1``)
with type and shape inference that checks every input a file could get wrong, and a numpy
reference kernel (integer math in int64), like any op.

Importing this module registers them; the CPU device package imports it, so a cached
runtime model reads back in a fresh process.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type


def _vector(node: Node, i: int, size: int, what: str) -> None:
    """Input ``i`` is a constant f32 vector of ``size`` elements."""
    v = node.input_value(i)
    if v is None or v.dtype != np.float32 or v.ndim != 1 or v.size != size:
        raise node.fail(f"{what} must be a constant f32 vector of {size} elements")


@register_op
class Int8Quantize(Node):
    """The u8 steps of a FakeQuantize (inputs: data, il, ih, ol, oh, as FakeQuantize's):
    ``rint((x - il) / (ih - il) * (levels - 1))``, 0 at or below ``il``, ``levels - 1`` above
    ``ih``. ``layout`` says which kernels read it (NHWC pixels or GEMM rows). A CPU device op."""

    type_name = "Int8Quantize"
    version = "ember_opset1"
    num_inputs = (5, 5)
    attributes = (Attr("levels", "int"), Attr("layout", "str", "rows", ("rows", "nhwc")))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        if not 2 <= self.attrs["levels"] <= 256:
            raise self.fail(f"levels {self.attrs['levels']} is not in 2..256")
        if any(self.input_type(i) != Type.f32 for i in range(5)):
            raise self.fail("data and ranges must be f32")
        return [(Type.u8, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        f = np.float32
        x, il, ih = (np.asarray(v, f) for v in inputs[:3])
        steps = f(self.attrs["levels"] - 1)
        with np.errstate(all="ignore"):
            q = np.rint((x - il) / (ih - il) * steps)
            q = np.where(x <= il, f(0), np.where(x > ih, steps, q))
        return [np.broadcast_to(q, x.shape).astype(np.uint8)]


@register_op
class Int8Dequantize(Node):
    """The values of a FakeQuantize read back from its u8 steps (inputs: steps, il, ih, ol, oh,
    as FakeQuantize's; il and ih are those that made the steps): ``q / (levels - 1) * (oh - ol)
    + ol``, ``ol`` at step 0 and ``oh`` at the last. A residual branch's FakeQuantize of a tensor
    whose steps an int8 layer already reads: the int8 epilogue that adds it reads the steps. A
    CPU device op."""

    type_name = "Int8Dequantize"
    version = "ember_opset1"
    num_inputs = (5, 5)
    attributes = (Attr("levels", "int"),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        if not 2 <= self.attrs["levels"] <= 256:
            raise self.fail(f"levels {self.attrs['levels']} is not in 2..256")
        if self.input_type(0) != Type.u8 or any(self.input_type(i) != Type.f32 for i in range(1, 5)):
            raise self.fail("steps must be u8 and ranges f32")
        return [(Type.f32, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        f = np.float32
        q = np.asarray(inputs[0]).astype(f)
        ol, oh = (np.asarray(v, f) for v in inputs[3:5])
        steps = f(self.attrs["levels"] - 1)
        out = np.where(q <= 0, ol, np.where(q >= steps, oh, q / steps * (oh - ol) + ol))
        return [np.broadcast_to(out, q.shape).astype(f)]


@register_op
class Int8Convolution(Node):
    """``scale[n] * conv(x - zero_point, w)[n] + shift[n]``: u8 NCHW ``x``, integer weights
    ``[OC, IC / groups, KH, KW]``, explicit pads (padding reads ``zero_point``); f32 out. An
    optional fifth input gives a zero point per input channel (depthwise convolutions)."""

    type_name = "Int8Convolution"
    version = "ember_opset1"
    num_inputs = (4, 5)
    attributes = (Attr("strides", "ints"), Attr("pads_begin", "ints"), Attr("pads_end", "ints"),
                  Attr("dilations", "ints"), Attr("groups", "int", 1), Attr("zero_point", "int", 0))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        xs = self.input_shape(0)
        w = self.input_value(1)
        if w is None or w.dtype != np.int8 or w.ndim != 4 or not xs.rank.is_static or xs.rank.get_length() != 4:
            raise self.fail("needs 4-D data and constant 4-D i8 weights")
        if self.input_type(0) != Type.u8:
            raise self.fail(f"data must be u8, not {self.input_type(0)}")
        a = self.attrs
        if any(len(a[k]) != 2 for k in ("strides", "pads_begin", "pads_end", "dilations")) \
                or min(a["strides"] + a["dilations"]) < 1 or min(a["pads_begin"] + a["pads_end"]) < 0:
            raise self.fail("strides, dilations (>= 1) and pads (>= 0) need two values each")
        groups = a["groups"]
        if groups < 1 or w.shape[0] % groups or not 0 <= a["zero_point"] <= 255:
            raise self.fail(f"groups {groups} do not divide {w.shape[0]} output channels, or zero point "
                            f"{a['zero_point']} is not a u8")
        if xs[1].is_static and xs[1].get_length() < w.shape[1] * groups:
            raise self.fail(f"data has {xs[1]} channels, the weights read {w.shape[1] * groups}")
        _vector(self, 2, w.shape[0], "scale")
        _vector(self, 3, w.shape[0], "shift")
        if len(self.input_values()) > 4:
            zp = self.input_value(4)
            if zp is None or zp.dtype != np.int32 or zp.ndim != 1 or zp.size != w.shape[1] * groups \
                    or zp.min() < 0 or zp.max() > 255:
                raise self.fail("per-channel zero points must be a constant i32 vector of u8 values, one per channel")
        dims = [xs[0], Dimension(w.shape[0])]
        for i in range(2):
            d = xs[2 + i]
            span = a["dilations"][i] * (w.shape[2 + i] - 1) + 1
            if d.is_static:
                size = (d.get_length() + a["pads_begin"][i] + a["pads_end"][i] - span) // a["strides"][i] + 1
                if size < 0:
                    raise self.fail("the kernel is larger than the padded data")
                dims.append(Dimension(size))
            else:
                dims.append(Dimension.dynamic())
        return [(Type.f32, PartialShape(dims))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, w, scale, shift = inputs[:4]
        a = self.attrs
        groups = a["groups"]
        zp = np.asarray(inputs[4], np.int64).reshape(1, -1, 1, 1) if len(inputs) > 4 else a["zero_point"]
        (sh, sw), (dh, dw) = a["strides"], a["dilations"]
        cin = w.shape[1] * groups
        xi = np.asarray(x)[:, :cin].astype(np.int64) - zp
        xi = np.pad(xi, ((0, 0), (0, 0), (a["pads_begin"][0], a["pads_end"][0]), (a["pads_begin"][1], a["pads_end"][1])))
        oh = (xi.shape[2] - dh * (w.shape[2] - 1) - 1) // sh + 1
        ow = (xi.shape[3] - dw * (w.shape[3] - 1) - 1) // sw + 1
        cg, og = w.shape[1], w.shape[0] // groups
        out = np.zeros((x.shape[0], w.shape[0], oh, ow), np.int64)
        wi = w.astype(np.int64)
        for ky in range(w.shape[2]):
            for kx in range(w.shape[3]):
                patch = xi[:, :, ky * dh: ky * dh + sh * (oh - 1) + 1: sh, kx * dw: kx * dw + sw * (ow - 1) + 1: sw]
                for g in range(groups):
                    out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch[:, g * cg:(g + 1) * cg],
                                                             wi[g * og:(g + 1) * og, :, ky, kx])
        y = out.astype(np.float32) * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
        return [y.astype(np.float32)]


@register_op
class Int8MatMul(Node):
    """``scale[n] * ((x - zero_point) @ w)[n] + shift[n]``: u8 ``x[..., K]``, integer ``w[K, N]``; f32 out."""

    type_name = "Int8MatMul"
    version = "ember_opset1"
    num_inputs = (4, 4)
    attributes = (Attr("zero_point", "int", 0),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        xs = self.input_shape(0)
        w = self.input_value(1)
        if w is None or w.dtype != np.int8 or w.ndim != 2 or not xs.rank.is_static or xs.rank.get_length() < 1:
            raise self.fail("needs data of static rank and constant 2-D i8 weights")
        if self.input_type(0) != Type.u8 or not 0 <= self.attrs["zero_point"] <= 255:
            raise self.fail("data must be u8 and the zero point a u8 value")
        last = xs[xs.rank.get_length() - 1]
        if last.is_static and last.get_length() < w.shape[0]:
            raise self.fail(f"data rows have {last} values, the weights read {w.shape[0]}")
        _vector(self, 2, w.shape[1], "scale")
        _vector(self, 3, w.shape[1], "shift")
        return [(Type.f32, PartialShape([*list(xs)[:-1], Dimension(w.shape[1])]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, w, scale, shift = inputs
        k = w.shape[0]
        acc = (np.asarray(x)[..., :k].astype(np.int64) - self.attrs["zero_point"]) @ w.astype(np.int64)
        return [(acc.astype(np.float32) * scale + shift).astype(np.float32)]


@register_op
class Int8MaxPool(Node):
    """Max pooling of u8 steps ``[N, C, H, W]`` (what ``Int8Quantize`` makes), explicit pads that
    never win (windows take real pixels only), output size by the floor formula; u8 out."""

    type_name = "Int8MaxPool"
    version = "ember_opset1"
    num_inputs = (1, 1)
    attributes = (Attr("kernel", "ints"), Attr("strides", "ints"), Attr("dilations", "ints"),
                  Attr("pads_begin", "ints"), Attr("pads_end", "ints"))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        xs = self.input_shape(0)
        a = self.attrs
        if self.input_type(0) != Type.u8 or not xs.rank.is_static or xs.rank.get_length() != 4:
            raise self.fail("needs 4-D u8 data")
        if any(len(a[k]) != 2 for k in ("kernel", "strides", "dilations", "pads_begin", "pads_end")) \
                or min(a["kernel"] + a["strides"] + a["dilations"]) < 1 or min(a["pads_begin"] + a["pads_end"]) < 0 \
                or any(p >= a["dilations"][i] * (a["kernel"][i] - 1) + 1 for i, p in enumerate(a["pads_begin"])):
            raise self.fail("kernel, strides, dilations (>= 1) and pads (>= 0, begin inside the window) need two "
                            "values each")
        dims = [xs[0], xs[1]]
        for i in range(2):
            d = xs[2 + i]
            span = a["dilations"][i] * (a["kernel"][i] - 1) + 1
            if d.is_static:
                size = (d.get_length() + a["pads_begin"][i] + a["pads_end"][i] - span) // a["strides"][i] + 1
                if size < 1:
                    raise self.fail("the window is larger than the padded data")
                dims.append(Dimension(size))
            else:
                dims.append(Dimension.dynamic())
        return [(Type.u8, PartialShape(dims))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0], np.uint8)
        a = self.attrs
        (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["strides"], a["dilations"]
        xp = np.pad(x, ((0, 0), (0, 0), (a["pads_begin"][0], a["pads_end"][0]), (a["pads_begin"][1], a["pads_end"][1])))
        oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
        ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
        out = np.zeros((x.shape[0], x.shape[1], oh, ow), np.uint8)  # 0 is the lowest step: padding never wins
        for ky in range(kh):
            for kx in range(kw):
                out = np.maximum(out, xp[:, :, ky * dh: ky * dh + sh * (oh - 1) + 1: sh, kx * dw: kx * dw + sw * (ow - 1) + 1: sw])
        return [out]


@register_op
class Int8AvgPool(Node):
    """Average pooling of u8 steps ``[N, C, H, W]`` into f32: ``factor[oy, ox] * sum(q -
    zero_point)`` over each window's real pixels (input 1: the constant f32 ``[OH, OW]`` factors,
    the activation scale over the window's divisor); explicit pads."""

    type_name = "Int8AvgPool"
    version = "ember_opset1"
    num_inputs = (2, 2)
    attributes = (Attr("kernel", "ints"), Attr("strides", "ints"), Attr("dilations", "ints"),
                  Attr("pads_begin", "ints"), Attr("zero_point", "int", 0))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        xs = self.input_shape(0)
        f = self.input_value(1)
        a = self.attrs
        if self.input_type(0) != Type.u8 or not xs.rank.is_static or xs.rank.get_length() != 4:
            raise self.fail("needs 4-D u8 data")
        if f is None or f.dtype != np.float32 or f.ndim != 2 or 0 in f.shape:
            raise self.fail("factors must be a constant f32 [OH, OW]")
        if any(len(a[k]) != 2 for k in ("kernel", "strides", "dilations", "pads_begin")) \
                or min(a["kernel"] + a["strides"] + a["dilations"]) < 1 or min(a["pads_begin"]) < 0 \
                or not 0 <= a["zero_point"] <= 255:
            raise self.fail("kernel, strides, dilations (>= 1), pads (>= 0) need two values each; the zero "
                            "point is a u8 value")
        return [(Type.f32, PartialShape([xs[0], xs[1], Dimension(f.shape[0]), Dimension(f.shape[1])]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0]).astype(np.int64) - self.attrs["zero_point"]
        f = np.asarray(inputs[1], np.float32)
        a = self.attrs
        (kh, kw), (sh, sw), (dh, dw), (pt, pl) = a["kernel"], a["strides"], a["dilations"], a["pads_begin"]
        oh, ow = f.shape
        need_h, need_w = (oh - 1) * sh + dh * (kh - 1) + 1, (ow - 1) * sw + dw * (kw - 1) + 1
        xp = np.pad(x, ((0, 0), (0, 0), (pt, max(need_h - pt - x.shape[2], 0)), (pl, max(need_w - pl - x.shape[3], 0))))
        acc = np.zeros((x.shape[0], x.shape[1], oh, ow), np.int64)
        for ky in range(kh):
            for kx in range(kw):
                acc += xp[:, :, ky * dh: ky * dh + sh * (oh - 1) + 1: sh, kx * dw: kx * dw + sw * (ow - 1) + 1: sw]
        return [(acc.astype(np.float32) * f).astype(np.float32)]


@register_op
class Int8Concat(Node):
    """Concatenation of u8 steps ``[N, C_i, H, W]`` on one FakeQuantize grid along the channels;
    u8 out. ``zero_point`` is the grid's step for 0.0 (what a reader's padding holds)."""

    type_name = "Int8Concat"
    version = "ember_opset1"
    num_inputs = (1, None)
    attributes = (Attr("zero_point", "int", 0),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        shapes = [self.input_shape(i) for i in range(len(self.input_values()))]
        if any(self.input_type(i) != Type.u8 for i in range(len(shapes))) \
                or any(not s.rank.is_static or s.rank.get_length() != 4 for s in shapes):
            raise self.fail("needs 4-D u8 inputs")
        if not 0 <= self.attrs["zero_point"] <= 255:
            raise self.fail("the zero point must be a u8 value")
        channels = 0
        for s in shapes:
            if not s[1].is_static:
                raise self.fail("needs static channel counts")
            channels += s[1].get_length()
        dims = list(shapes[0])
        for s in shapes[1:]:
            for i in (0, 2, 3):
                if not dims[i].compatible(s[i]):
                    raise self.fail(f"inputs differ in dimension {i}")
        dims[1] = Dimension(channels)
        return [(Type.u8, PartialShape(dims))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.concatenate([np.asarray(x, np.uint8) for x in inputs], axis=1)]


_CODES = {Type.u8: 8, Type.i8: 8, Type.u4: 4, Type.i4: 4}


@register_op
class CompressedMatMul(Node):
    """``x @ W.T`` with weight-compressed ``W[n, k] = (codes[n, k] - zero_point[n, g]) * scale[n, g]``
    (``g = k // (K / G)``): ``x[..., K]`` f32, ``codes`` a constant ``[N, K]`` of u8/i8/u4/i4,
    ``scale`` and ``zero_point`` constant f32 ``[N, G]``; f32 out ``[..., N]``. What
    ``compress_weights`` writes (INT8 per channel, INT4 per group) in one op of the CPU device,
    whose kernel keeps the codes 8 or 4 bits wide."""

    type_name = "CompressedMatMul"
    version = "ember_opset1"
    num_inputs = (4, 4)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        xs = self.input_shape(0)
        codes, scale, zp = (self.input_value(i) for i in (1, 2, 3))
        if self.input_type(1) not in _CODES or codes is None or codes.ndim != 2:
            raise self.fail("codes must be a constant [N, K] of u8, i8, u4 or i4")
        n, k = codes.shape
        for v, what in ((scale, "scale"), (zp, "zero point")):
            if v is None or v.dtype != np.float32 or v.ndim != 2 or v.shape[0] != n or v.shape[1] < 1 \
                    or k % v.shape[1]:
                raise self.fail(f"{what} must be a constant f32 [N, G] with G dividing K={k}")
        assert scale is not None and zp is not None  # checked just above
        if scale.shape != zp.shape:
            raise self.fail("scale and zero point differ in shape")
        if self.input_type(0) != Type.f32 or not xs.rank.is_static or xs.rank.get_length() < 1:
            raise self.fail("data must be f32 of static rank")
        last = xs[xs.rank.get_length() - 1]
        if last.is_static and last.get_length() != k:
            raise self.fail(f"data rows have {last} values, the weights {k}")
        return [(Type.f32, PartialShape([*list(xs)[:-1], Dimension(n)]))]

    @property
    def bits(self) -> int:
        return _CODES[self.input_type(1)]

    def weights(self, codes: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
        """The decompressed ``W`` [N, K] in f32."""
        n, k = codes.shape
        groups = scale.shape[1]
        q = codes.astype(np.float32).reshape(n, groups, k // groups)
        return ((q - zp[:, :, None]) * scale[:, :, None]).reshape(n, k)

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, codes, scale, zp = inputs
        return [np.matmul(np.asarray(x, np.float32), self.weights(codes, scale, zp).T).astype(np.float32)]


@register_op
class CompressedGather(Node):
    """Rows of a weight-compressed table (an embedding): ``W[indices]`` along axis 0 with
    ``W[v, k] = (codes[v, k] - zero_point[v, g]) * scale[v, g]`` (``codes`` constant ``[V, H]`` of
    u8/i8/u4/i4, ``scale``/``zero_point`` constant f32 ``[V, G]``); ``indices`` i32/i64 of any
    shape, negative ones counting from the end when ``negative_indices`` (Gather-8), out of range
    ones giving zeros; f32 out ``[*indices.shape, H]``."""

    type_name = "CompressedGather"
    version = "ember_opset1"
    num_inputs = (4, 4)
    attributes = (Attr("negative_indices", "bool", True),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        codes, scale, zp = (self.input_value(i) for i in (0, 1, 2))
        if self.input_type(0) not in _CODES or codes is None or codes.ndim != 2:
            raise self.fail("codes must be a constant [V, H] of u8, i8, u4 or i4")
        v, h = codes.shape
        for arr, what in ((scale, "scale"), (zp, "zero point")):
            if arr is None or arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[0] != v or arr.shape[1] < 1 \
                    or h % arr.shape[1]:
                raise self.fail(f"{what} must be a constant f32 [V, G] with G dividing H={h}")
        assert scale is not None and zp is not None  # checked just above
        if scale.shape != zp.shape or self.input_type(3) not in (Type.i32, Type.i64):
            raise self.fail("scale and zero point differ in shape, or the indices are not i32/i64")
        idx = self.input_shape(3)
        if not idx.rank.is_static:
            raise self.fail("needs indices of static rank")
        return [(Type.f32, PartialShape([*list(idx), Dimension(h)]))]

    @property
    def bits(self) -> int:
        return _CODES[self.input_type(0)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        codes, scale, zp, idx = inputs
        v, h = codes.shape
        idx = np.asarray(idx, np.int64)
        if self.attrs["negative_indices"]:
            idx = np.where(idx < 0, idx + v, idx)
        ok = (idx >= 0) & (idx < v)
        safe = np.where(ok, idx, 0).reshape(-1)
        groups = scale.shape[1]
        q = codes[safe].astype(np.float32).reshape(-1, groups, h // groups)
        rows = ((q - zp[safe][:, :, None]) * scale[safe][:, :, None]).reshape(-1, h)
        rows = np.where(ok.reshape(-1, 1), rows, np.float32(0))
        return [rows.reshape(*idx.shape, h).astype(np.float32)]


__all__ = ["CompressedGather", "CompressedMatMul", "Int8AvgPool", "Int8Concat", "Int8Convolution", "Int8MatMul", "Int8MaxPool", "Int8Quantize"]
