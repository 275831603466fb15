"""ember's ops for ONNX ops with no OpenVINO counterpart and no ONNX function body: BitCast,
Det and MelWeightMatrix (IR version ``ember_opset1``, numpy reference kernels)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type, as_type


@register_op
class BitCast(Node):
    """The bits of each element read as ``destination_type`` (same bit width)."""

    type_name = "BitCast"
    version = "ember_opset1"
    num_inputs = (1, 1)
    attributes = (Attr("destination_type", "type", Type.f32),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        src, dst = self.input_type(0), self.attrs["destination_type"]
        for t in (src, dst):
            if t is Type.string or t is Type.sequence or (t.is_static and t.is_sub_byte):
                raise self.fail(f"cannot reinterpret the bits of {t}")
        if src.is_static and src.bitwidth != dst.bitwidth:
            raise self.fail(f"{src} has {src.bitwidth} bits, {dst} has {dst.bitwidth}")
        return [(dst, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        shape = np.shape(inputs[0])
        x = np.ascontiguousarray(inputs[0]).reshape(-1)
        dst = self.attrs["destination_type"].dtype
        if x.dtype == np.bool_:
            x = x.view(np.uint8)
        if dst == np.bool_:
            return [(x.view(np.uint8) != 0).reshape(shape)]
        return [x.view(dst).reshape(shape)]


@register_op
class Det(Node):
    """Determinants of the ``[..., M, M]`` input's square matrices."""

    type_name = "Det"
    version = "ember_opset1"
    num_inputs = (1, 1)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t, ps = self.input_type(0), self.input_shape(0)
        if not (t.is_real or t.is_dynamic):
            raise self.fail(f"needs floating-point input, got {t}")
        if not ps.rank_is_static:
            return [(t, PartialShape.dynamic())]
        if len(ps) < 2:
            raise self.fail(f"needs [..., M, M] input, got {ps}")
        if ps[-1].is_static and ps[-2].is_static and ps[-1].get_length() != ps[-2].get_length():
            raise self.fail(f"the matrices must be square, got {ps}")
        return [(t, PartialShape(list(ps)[:-2]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        return [np.asarray(np.linalg.det(x.astype(np.float64)), dtype=x.dtype)]


@register_op
class MelWeightMatrix(Node):
    """ONNX MelWeightMatrix: ``[dft_length // 2 + 1, num_mel_bins]`` triangular filters between
    ``lower_edge_hertz`` and ``upper_edge_hertz`` (inputs: num_mel_bins, dft_length, sample_rate,
    lower_edge_hertz, upper_edge_hertz), as the ONNX reference computes them."""

    type_name = "MelWeightMatrix"
    version = "ember_opset1"
    num_inputs = (5, 5)
    attributes = (Attr("output_type", "type", Type.f32),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        bins, dft = self.input_value(0), self.input_value(1)
        rows = Dimension(int(np.asarray(dft).reshape(-1)[0]) // 2 + 1) if dft is not None else Dimension()
        cols = Dimension(int(np.asarray(bins).reshape(-1)[0])) if bins is not None else Dimension()
        return [(self.attrs["output_type"], PartialShape([rows, cols]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        n_mel, dft, rate = (int(np.asarray(v).reshape(-1)[0]) for v in inputs[:3])
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in inputs[3:5])
        n_spec = dft // 2 + 1
        edges = np.arange(n_mel + 2)
        mel_lo = 2595 * np.log1p(lo / 700) / np.log(10)
        mel_hi = 2595 * np.log1p(hi / 700) / np.log(10)
        mel = edges * ((mel_hi - mel_lo) / len(edges)) + mel_lo
        hz = 700 * np.expm1(mel / 2595 * np.log(10))
        points = (((dft + 1) * hz) // rate).astype(int)
        out = np.zeros((n_spec, n_mel))
        for i in range(n_mel):
            left, center, right = points[i], points[i + 1], points[i + 2]
            if center == left:
                out[center, i] = 1.0
            else:
                j = np.arange(left, center + 1)
                out[j, i] = (j - left) / (center - left)
            if right > center:
                j = np.arange(center, right)
                out[j, i] = (right - j) / (right - center)
        return [out.astype(self.attrs["output_type"].dtype)]


@builder
def bitcast(data: Any, destination_type: Any, name: str | None = None) -> Node:
    """``data``'s bits read as ``destination_type``."""
    return BitCast([data], {"destination_type": as_type(destination_type)}, name)


@builder
def det(data: Any, name: str | None = None) -> Node:
    """Determinants of square matrices."""
    return Det([data], {}, name)


@builder
def mel_weight_matrix(num_mel_bins: Any, dft_length: Any, sample_rate: Any, lower_edge_hertz: Any,
                      upper_edge_hertz: Any, output_type: Any = Type.f32, name: str | None = None) -> Node:
    """Mel filter bank weights."""
    return MelWeightMatrix([num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz],
                           {"output_type": as_type(output_type)}, name)


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect coordinates outside [lo, hi] back inside, bouncing off both borders."""
    span = hi - lo
    below, above = x < lo, x > hi
    dx = np.where(below, lo - x, np.where(above, x - hi, 0.0))
    turns = np.floor(dx / span) if span > 0 else np.zeros_like(dx)
    r = dx - turns * span
    even = turns % 2 == 0
    out = np.where(below, np.where(even, lo + r, hi - r), x)
    return np.where(above, np.where(even, hi - r, lo + r), out)


@register_op
class GridSampleND(Node):
    """ONNX GridSample for any number of spatial dimensions (OpenVINO's GridSample is 2-D):
    data [N, C, D1..Dk], grid [N, O1..Om, k] with the coordinates of the last axis first (x, y,
    z...), normalized to [-1, 1]; modes ``linear`` and ``nearest`` (rounding half to even),
    padding ``zeros``, ``border`` or ``reflection``."""

    type_name = "GridSampleND"
    version = "ember_opset1"
    num_inputs = (2, 2)
    attributes = (Attr("mode", "str", "linear"), Attr("padding_mode", "str", "zeros"),
                  Attr("align_corners", "bool", False))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        if self.attrs["mode"] not in ("linear", "nearest"):
            raise self.fail(f"mode '{self.attrs['mode']}' is not linear or nearest")
        if self.attrs["padding_mode"] not in ("zeros", "border", "reflection"):
            raise self.fail(f"padding_mode '{self.attrs['padding_mode']}' is not zeros, border or reflection")
        xs, gs = self.input_shape(0), self.input_shape(1)
        if not (xs.rank_is_static and gs.rank_is_static):
            return [(self.input_type(0), PartialShape.dynamic())]
        if len(gs) != len(xs) or (gs[-1].is_static and gs[-1].get_length() != len(xs) - 2):
            raise self.fail(f"grid {gs} does not fit data {xs}")
        return [(self.input_type(0), PartialShape([xs[0], xs[1]] + list(gs)[1:-1]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, grid = np.asarray(inputs[0]), np.asarray(inputs[1], dtype=np.float64)
        dims = x.shape[2:]
        k = len(dims)
        align = self.attrs["align_corners"]
        pad = self.attrs["padding_mode"]
        coords = []
        for d in range(k):  # grid's last axis lists x (the last spatial axis) first
            g = grid[..., k - 1 - d]
            c = (g + 1) / 2 * (dims[d] - 1) if align else ((g + 1) * dims[d] - 1) / 2
            coords.append(c)
        lo = [0.0 if align else -0.5 for _ in dims]
        hi = [dims[d] - 1.0 if align else dims[d] - 0.5 for d in range(k)]
        if self.attrs["mode"] == "nearest":
            coords = [np.rint(c) for c in coords]
        for d in range(k):
            out = (coords[d] < lo[d]) | (coords[d] > hi[d])
            if pad == "border":
                coords[d] = np.where(out, np.clip(coords[d], 0, dims[d] - 1), coords[d])
            elif pad == "reflection":
                coords[d] = np.where(out, _reflect(coords[d], lo[d], hi[d]), coords[d])
        xt = np.moveaxis(x, 1, -1)  # [N, D1..Dk, C]
        batch = np.arange(x.shape[0]).reshape((-1,) + (1,) * (grid.ndim - 2))

        def pixels(index: list[np.ndarray]) -> np.ndarray:
            valid = np.ones(index[0].shape, dtype=bool)
            fixed = []
            for d, i in enumerate(index):
                if pad == "zeros":
                    valid &= (i >= 0) & (i < dims[d])
                elif pad == "border":
                    i = np.clip(i, 0, dims[d] - 1)
                else:
                    i = np.trunc(_reflect(i.astype(np.float64), lo[d], hi[d])).astype(np.int64)
                fixed.append(np.clip(i, 0, dims[d] - 1))
            v = xt[(batch, *fixed)].astype(np.float64)
            return v * valid[..., None]

        if self.attrs["mode"] == "nearest":
            y = pixels([c.astype(np.int64) for c in coords])
        else:
            base = [np.floor(c).astype(np.int64) for c in coords]
            frac = [c - b for c, b in zip(coords, base)]
            y = 0.0
            for corner in range(1 << k):
                bits = [(corner >> (k - 1 - d)) & 1 for d in range(k)]
                w = np.ones(base[0].shape)
                for d, b in enumerate(bits):
                    w = w * (frac[d] if b else 1 - frac[d])
                y = y + pixels([base[d] + bits[d] for d in range(k)]) * w[..., None]
        return [np.moveaxis(np.asarray(y), -1, 1).astype(x.dtype)]


@register_op
class Col2ImND(Node):
    """ONNX Col2Im for any number of spatial dimensions (OpenVINO's Col2Im is 2-D): columns
    [N, C * prod(block_shape), L] summed back into an image [N, C, *image_shape]. Inputs: data,
    image_shape, block_shape."""

    type_name = "Col2ImND"
    version = "ember_opset1"
    num_inputs = (3, 3)
    attributes = (Attr("strides", "ints", []), Attr("dilations", "ints", []), Attr("pads", "ints", []))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        image, block = self.input_value(1), self.input_value(2)
        ps, ips = self.input_shape(0), self.input_shape(1)
        n = ps[0] if ps.rank_is_static else Dimension()
        c = Dimension()
        if block is not None and ps.rank_is_static and ps[1].is_static:
            c = Dimension(ps[1].get_length() // int(np.prod(block)))
        if image is not None:
            spatial = [Dimension(int(v)) for v in np.asarray(image).reshape(-1)]
        elif ips.rank_is_static and len(ips) == 1 and ips[0].is_static:
            spatial = [Dimension() for _ in range(ips[0].get_length())]
        else:
            return [(self.input_type(0), PartialShape.dynamic())]
        return [(self.input_type(0), PartialShape([n, c] + spatial))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        cols = np.asarray(inputs[0])
        image = [int(v) for v in np.asarray(inputs[1]).reshape(-1)]
        block = [int(v) for v in np.asarray(inputs[2]).reshape(-1)]
        k = len(image)
        strides = self.attrs["strides"] or [1] * k
        dil = self.attrs["dilations"] or [1] * k
        pads = self.attrs["pads"] or [0] * (2 * k)
        n, cb, length = cols.shape
        c = cb // int(np.prod(block))
        padded = [image[d] + pads[d] + pads[k + d] for d in range(k)]
        counts = [(padded[d] - (dil[d] * (block[d] - 1) + 1)) // strides[d] + 1 for d in range(k)]
        if int(np.prod(counts)) != length:
            raise self.fail(f"{length} columns do not fit {counts} block positions")
        out = np.zeros((n, c, *padded), dtype=np.float64)
        cols = cols.reshape(n, c, *block, *counts).astype(np.float64)
        for offset in np.ndindex(*block):
            index = tuple(slice(offset[d] * dil[d], offset[d] * dil[d] + strides[d] * (counts[d] - 1) + 1, strides[d])
                          for d in range(k))
            out[(slice(None), slice(None), *index)] += cols[(slice(None), slice(None), *offset)]
        crop = tuple(slice(pads[d], pads[d] + image[d]) for d in range(k))
        return [out[(slice(None), slice(None), *crop)].astype(cols.dtype if cols.dtype != np.float64
                                                              else inputs[0].dtype)]


@builder
def grid_sample_nd(data: Any, grid: Any, mode: str = "linear", padding_mode: str = "zeros",
                   align_corners: bool = False, name: str | None = None) -> Node:
    """GridSample over any number of spatial dimensions."""
    return GridSampleND([data, grid], {"mode": mode, "padding_mode": padding_mode, "align_corners": align_corners},
                        name)


@builder
def col2im_nd(data: Any, image_shape: Any, block_shape: Any, strides: Sequence[int] = (),
              dilations: Sequence[int] = (), pads: Sequence[int] = (), name: str | None = None) -> Node:
    """Col2Im over any number of spatial dimensions."""
    return Col2ImND([data, image_shape, block_shape], {"strides": list(strides), "dilations": list(dilations),
                                                      "pads": list(pads)}, name)


def _cubic(r: np.ndarray, a: float) -> np.ndarray:
    """Keys cubic convolution weights of the 4 taps around a point at fraction ``r``."""
    d = [r + 1, r, 1 - r, 2 - r]  # distances to the taps

    def near(t: np.ndarray) -> np.ndarray:
        return ((a + 2) * t - (a + 3)) * t * t + 1

    def far(t: np.ndarray) -> np.ndarray:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

    return np.stack([far(d[0]), near(d[1]), near(d[2]), far(d[3])], -1)


@register_op
class ResizeONNX(Node):
    """ONNX Resize (opset 11+) for the modes OpenVINO's Interpolate lacks: coordinate modes
    ``tf_crop_and_resize`` (with ``roi`` and ``extrapolation_value``) and
    ``half_pixel_symmetric``, and ``exclude_outside`` for cubic; the other coordinate modes too.
    Inputs: data, roi, scales, sizes (empty tensors where not given). Axes are resized one after
    the other, as the ONNX reference does."""

    type_name = "ResizeONNX"
    version = "ember_opset1"
    num_inputs = (4, 4)
    attributes = (Attr("mode", "str", "nearest"), Attr("coordinate_transformation_mode", "str", "half_pixel"),
                  Attr("nearest_mode", "str", "round_prefer_floor"), Attr("cubic_coeff_a", "float", -0.75),
                  Attr("exclude_outside", "bool", False), Attr("extrapolation_value", "float", 0.0),
                  Attr("axes", "ints", []))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        if self.attrs["mode"] not in ("nearest", "linear", "cubic"):
            raise self.fail(f"mode '{self.attrs['mode']}' is not nearest, linear or cubic")
        ps = self.input_shape(0)
        if not ps.rank_is_static:
            return [(self.input_type(0), PartialShape.dynamic())]
        r = len(ps)
        axes = [a + r if a < 0 else a for a in self.attrs["axes"]] or list(range(r))
        dims = list(ps)
        sizes, scales = self.input_value(3), self.input_value(2)
        for k, a in enumerate(axes):
            if sizes is not None and np.asarray(sizes).size:
                dims[a] = Dimension(int(np.asarray(sizes).reshape(-1)[k]))
            elif scales is not None and np.asarray(scales).size and dims[a].is_static:
                dims[a] = Dimension(int(dims[a].get_length() * float(np.asarray(scales).reshape(-1)[k])))
            else:
                dims[a] = Dimension()
        return [(self.input_type(0), PartialShape(dims))]

    def _coords(self, out: int, length: int, scale: float, roi: tuple[float, float] | None
                ) -> tuple[np.ndarray, np.ndarray | None]:
        mode = self.attrs["coordinate_transformation_mode"]
        y = np.arange(out, dtype=np.float64)
        width = scale * length  # the output length before rounding
        if mode == "align_corners":
            return (np.zeros(out) if width == 1 else y * (length - 1) / (width - 1)), None
        if mode == "asymmetric":
            return y / scale, None
        if mode == "pytorch_half_pixel":
            return (np.full(out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5), None
        if mode == "half_pixel":
            return (y + 0.5) / scale - 0.5, None
        if mode == "half_pixel_symmetric":
            offset = length / 2 * (1 - out / width)
            return offset + (y + 0.5) / scale - 0.5, None
        if mode == "tf_crop_and_resize":
            lo, hi = roi if roi is not None else (0.0, 1.0)
            x = np.full(out, (hi - lo) * (length - 1) / 2) if width == 1 else \
                y * (hi - lo) * (length - 1) / (width - 1)
            x = x + lo * (length - 1)
            return x, (x < 0) | (x > length - 1)
        raise self.fail(f"coordinate_transformation_mode '{mode}' is not supported")

    def _weights(self, x: np.ndarray) -> np.ndarray:
        whole = np.floor(x)
        r = np.where(x == whole, 1.0, x - whole)
        mode = self.attrs["mode"]
        if mode == "linear":
            return np.stack([1 - r, r], -1)
        if mode == "cubic":
            return _cubic(r, self.attrs["cubic_coeff_a"])
        how = self.attrs["nearest_mode"]
        integer = x == whole
        if how == "round_prefer_floor":
            first = r <= 0.5
        elif how == "round_prefer_ceil":
            first = r < 0.5
        elif how == "floor":
            first = np.ones_like(r, dtype=bool)
        elif how == "ceil":
            first = np.zeros_like(r, dtype=bool)
        else:
            raise self.fail(f"nearest_mode '{how}' is not supported")
        first = first & ~integer
        return np.stack([first, ~first], -1).astype(np.float64)

    def _along(self, data: np.ndarray, axis: int, out: int, scale: float, roi: tuple[float, float] | None
               ) -> np.ndarray:
        length = data.shape[axis]
        x, outside = self._coords(out, length, scale, roi)
        w = self._weights(x)
        n = w.shape[-1]
        pad = (n + 1) // 2
        xp = x + pad
        p = np.floor(xp)
        frac = xp - p
        if n % 2 == 0:
            first = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
        else:
            first = np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
        idx = (p + first).astype(np.int64)[:, None] + np.arange(n)[None, :] - pad
        if self.attrs["exclude_outside"]:
            w = np.where((idx < 0) | (idx >= length), 0.0, w)
            total = w.sum(-1, keepdims=True)
            w = w / np.where(total == 0, 1.0, total)
        taps = np.take(data, np.clip(idx, 0, length - 1), axis=axis)  # [.., out, n, ..]
        shape = (1,) * axis + w.shape + (1,) * (data.ndim - axis - 1)
        result = (taps * w.reshape(shape)).sum(axis=axis + 1)
        if outside is not None and outside.any():
            mask = outside.reshape((1,) * axis + (out,) + (1,) * (data.ndim - axis - 1))
            result = np.where(mask, self.attrs["extrapolation_value"], result)
        return result

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        roi, scales, sizes = (np.asarray(v).reshape(-1) for v in inputs[1:4])
        r = x.ndim
        axes = [a + r if a < 0 else a for a in self.attrs["axes"]] or list(range(r))
        y = x.astype(np.float64)
        for k, a in enumerate(axes):
            if sizes.size:
                out = int(sizes[k])
                scale = out / x.shape[a]
            else:
                scale = float(scales[k])
                out = int(x.shape[a] * scale)
            box = (float(roi[k]), float(roi[len(axes) + k])) if roi.size else None
            if np.isclose(scale, 1.0) and out == y.shape[a] and (box is None or (np.isclose(box[0], 0.0)
                                                                                and np.isclose(box[1], 1.0))):
                continue
            y = self._along(y, a, out, scale, box)
        if x.dtype.kind in "iu":
            y = np.clip(np.rint(y), np.iinfo(x.dtype).min, np.iinfo(x.dtype).max)
        return [y.astype(x.dtype)]


@builder
def resize_onnx(data: Any, roi: Any, scales: Any, sizes: Any, name: str | None = None, **attrs: Any) -> Node:
    """ONNX Resize semantics (ember's own op, for modes OpenVINO's Interpolate lacks)."""
    return ResizeONNX([data, roi, scales, sizes], attrs, name)


def _activation(name: str, alpha: float | None, beta: float | None) -> Any:
    """An ONNX RNN activation function by name (lower case), with its alpha/beta."""
    a, b = alpha, beta
    table = {
        "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
        "tanh": np.tanh,
        "relu": lambda x: np.maximum(x, 0),
        "affine": lambda x: (1.0 if a is None else a) * x + (0.0 if b is None else b),
        "leakyrelu": lambda x: np.where(x >= 0, x, (0.01 if a is None else a) * x),
        "thresholdedrelu": lambda x: np.where(x > (1.0 if a is None else a), x, 0),
        "scaledtanh": lambda x: (1.0 if a is None else a) * np.tanh((1.0 if b is None else b) * x),
        "hardsigmoid": lambda x: np.clip((0.2 if a is None else a) * x + (0.5 if b is None else b), 0, 1),
        "elu": lambda x: np.where(x >= 0, x, (1.0 if a is None else a) * (np.exp(x) - 1)),
        "softsign": lambda x: x / (1 + np.abs(x)),
        "softplus": lambda x: np.log1p(np.exp(x)),
    }
    if name not in table:
        raise ValueError(f"activation '{name}' is not supported")
    return table[name]


@register_op
class LSTMONNX(Node):
    """ONNX LSTM with what OpenVINO's LSTMSequence lacks: peephole weights P and
    ``input_forget`` (coupled input and forget gates). Inputs as ONNX orders them (X [T, B, I]
    time first, W [D, 4H, I], R [D, 4H, H], B [D, 8H], sequence_lens [B], initial_h, initial_c
    [D, B, H], P [D, 3H]; gates i, o, f, c); outputs Y [T, D, B, H], Y_h and Y_c [D, B, H]."""

    type_name = "LSTMONNX"
    version = "ember_opset1"
    num_inputs = (8, 8)
    attributes = (Attr("hidden_size", "int", 1), Attr("direction", "str", "forward"),
                  Attr("activations", "strs", ["sigmoid", "tanh", "tanh"]), Attr("activations_alpha", "floats", []),
                  Attr("activations_beta", "floats", []), Attr("clip", "float", 0.0),
                  Attr("input_forget", "bool", False))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        ps = self.input_shape(0)
        d = 2 if self.attrs["direction"] == "bidirectional" else 1
        h = self.attrs["hidden_size"]
        t, b = (ps[0], ps[1]) if ps.rank_is_static else (Dimension(), Dimension())
        et = self.input_type(0)
        return [(et, PartialShape([t, d, b, h])), (et, PartialShape([d, b, h])), (et, PartialShape([d, b, h]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0], dtype=np.float64)
        w, r = np.asarray(inputs[1], dtype=np.float64), np.asarray(inputs[2], dtype=np.float64)
        steps, batch, _ = x.shape
        hs = self.attrs["hidden_size"]
        dirs = 2 if self.attrs["direction"] == "bidirectional" else 1
        bias = np.asarray(inputs[3], dtype=np.float64) if inputs[3].size else np.zeros((dirs, 8 * hs))
        lens = np.asarray(inputs[4]).astype(np.int64) if inputs[4].size else np.full(batch, steps)
        h0 = np.asarray(inputs[5], dtype=np.float64) if inputs[5].size else np.zeros((dirs, batch, hs))
        c0 = np.asarray(inputs[6], dtype=np.float64) if inputs[6].size else np.zeros((dirs, batch, hs))
        peep = np.asarray(inputs[7], dtype=np.float64) if inputs[7].size else np.zeros((dirs, 3 * hs))
        names = [n.lower() for n in self.attrs["activations"]]
        alphas, betas = list(self.attrs["activations_alpha"]), list(self.attrs["activations_beta"])
        clip = self.attrs["clip"]
        y = np.zeros((steps, dirs, batch, hs))
        y_h, y_c = np.zeros((dirs, batch, hs)), np.zeros((dirs, batch, hs))
        for d in range(dirs):
            k = 3 * d
            f, g, hfn = (_activation(names[k + j], alphas[k + j] if k + j < len(alphas) else None,
                                     betas[k + j] if k + j < len(betas) else None) for j in range(3))
            reverse = self.attrs["direction"] == "reverse" or d == 1
            h, c = h0[d].copy(), c0[d].copy()
            pi, po, pf = np.split(peep[d], 3)
            wb, rb = np.split(bias[d], 2)
            for b in range(batch):
                order = range(lens[b] - 1, -1, -1) if reverse else range(lens[b])
                hb, cb = h[b], c[b]
                for t in order:
                    gates = x[t, b] @ w[d].T + hb @ r[d].T + wb + rb
                    gi, go, gf, gc = np.split(gates, 4)

                    def clipped(v: np.ndarray) -> np.ndarray:  # clip bounds the inputs of activations
                        return np.clip(v, -clip, clip) if clip > 0 else v

                    i_t = f(clipped(gi + pi * cb))
                    f_t = 1 - i_t if self.attrs["input_forget"] else f(clipped(gf + pf * cb))
                    cb = f_t * cb + i_t * g(clipped(gc))
                    o_t = f(clipped(go + po * cb))
                    hb = o_t * hfn(cb)
                    y[t, d, b] = hb
                y_h[d, b], y_c[d, b] = hb, cb
        et = inputs[0].dtype
        return [y.astype(et), y_h.astype(et), y_c.astype(et)]


@builder
def lstm_onnx(x: Any, w: Any, r: Any, b: Any, sequence_lens: Any, initial_h: Any, initial_c: Any, p: Any,
              name: str | None = None, **attrs: Any) -> Node:
    """ONNX LSTM semantics with peepholes and input_forget (absent inputs: empty tensors)."""
    return LSTMONNX([x, w, r, b, sequence_lens, initial_h, initial_c, p], attrs, name)
