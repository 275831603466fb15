"""Interpolate (v0, v4, v11), TopK (v1, v3, v11), FakeQuantize, Bucketize, NonMaxSuppression
(v1, v3, v4, v5, v9), SpaceToBatch and BatchToSpace.

The kernels follow OpenVINO's reference implementation where it pins down numerics: coordinate
transforms and rounding in float32, FakeQuantize's formula in the data type with round-half-
to-even, Pillow's two-pass resampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ember.errors import InferenceError
from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type, as_type
from ember.ops._util import broadcast_shapes, numpy_broadcast

_F32 = np.float32


def _one_value(node: Node, port: int) -> Any:
    """The single value of a scalar (or one-element) constant input, or None when unknown."""
    v = node.input_value(port)
    if v is None:
        return None
    v = np.asarray(v).reshape(-1)
    if v.size != 1:
        raise node.fail(f"input {port} must hold exactly one value, got {v.size}")
    return v[0]


def _index_type(node: Node, name: str, value: Any) -> Type:
    t = as_type(value)
    if t not in (Type.i32, Type.i64):
        raise node.fail(f"{name} must be i32 or i64, got {t}")
    return t


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """C's ``round``: halves go away from zero (exact, no ``floor(x + 0.5)`` double rounding)."""
    t = np.trunc(x)
    return np.where(np.abs(x - t) >= 0.5, t + np.sign(x), t)


def _to_type(out: np.ndarray, dtype: np.dtype, rounding: Callable[[np.ndarray], np.ndarray] = np.trunc) -> np.ndarray:
    """Cast float results back to ``dtype``; integers are rounded by ``rounding`` and clipped."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.nan_to_num(rounding(out)), info.min, info.max).astype(dtype)
    return out.astype(dtype)


# == Interpolate ============================================================================

_MODES4 = ("nearest", "linear", "linear_onnx", "cubic")
_MODES11 = _MODES4 + ("bilinear_pillow", "bicubic_pillow")
_COORD_MODES = ("half_pixel", "pytorch_half_pixel", "asymmetric", "tf_half_pixel_for_nn", "align_corners")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


def _resized_pads(pads: Sequence[int], rank: int) -> list[int]:
    return (list(pads) + [0] * rank)[:rank]


def _scaled_length(n: int, scale: float) -> int:
    """OpenVINO's output length for ``scales`` mode: float32 ``n * (scale + 1e-6)``, truncated."""
    s = _F32(scale)
    if s == _F32(1.0):
        return n
    return int(_F32(n) * (s + _F32(1e-6)))


def _scale_dim(d: Dimension, scale: float) -> Dimension:
    if _F32(scale) == _F32(1.0):
        return d
    hi = -1 if d.max_length == -1 else _scaled_length(d.max_length, scale)
    return Dimension(hi) if d.is_static else Dimension(_scaled_length(d.min_length, scale), hi)


def _original_coord(mode: str, x: np.ndarray, scale: Any, out_len: int, in_len: int) -> np.ndarray:
    """Output coordinates -> input coordinates, in float32 as OpenVINO computes them."""
    x = x.astype(_F32)
    scale = _F32(scale)
    if scale == _F32(1.0) or out_len == in_len:
        return x
    half = _F32(0.5)
    if mode == "pytorch_half_pixel":
        return (x + half) / scale - half if out_len > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / scale
    if mode == "align_corners":
        return np.zeros_like(x) if out_len == 1 else x * _F32(in_len - 1) / _F32(out_len - 1)
    return (x + half) / scale - half


def _nearest_index(mode: str, x: np.ndarray, downsample: bool) -> np.ndarray:
    if mode == "round_prefer_ceil":
        r = _round_half_away(x)
    elif mode == "floor":
        r = np.floor(x)
    elif mode == "ceil":
        r = np.ceil(x)
    elif mode == "simple":
        r = np.ceil(x) if downsample else np.trunc(x)
    else:  # round_prefer_floor
        t = np.trunc(x)
        r = np.where(x == t + _F32(0.5), np.floor(x), _round_half_away(x))
    return r.astype(np.int64)


def _apply_along(data: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Contract ``data`` along ``axis`` with an (out, in) weight matrix."""
    return np.moveaxis(np.tensordot(data, weights, axes=([axis], [1])), -1, axis)


def _linear_onnx_weights(coords: np.ndarray, in_len: int) -> np.ndarray:
    w = np.zeros((coords.size, in_len), np.float64)
    c = np.clip(coords, _F32(0), _F32(in_len - 1))
    i1 = np.minimum(c.astype(np.int64), in_len - 1)
    i2 = np.minimum(i1 + 1, in_len - 1)
    d1 = np.abs(c - i1.astype(_F32))
    d2 = np.abs(c - i2.astype(_F32))
    same = i1 == i2
    d1 = np.where(same, _F32(0.5), d1)
    d2 = np.where(same, _F32(0.5), d2)
    rows = np.arange(coords.size)
    np.add.at(w, (rows, i1), d2)
    np.add.at(w, (rows, i2), d1)
    return w


def _cubic_weights(coords: np.ndarray, in_len: int, a: float) -> np.ndarray:
    a = _F32(a)
    base = np.floor(coords)
    s = np.abs(coords - base)
    one, two = _F32(1), _F32(2)
    coeffs = [
        ((a * (s + one) - 5 * a) * (s + one) + 8 * a) * (s + one) - 4 * a,
        ((a + 2) * s - (a + 3)) * s * s + one,
        ((a + 2) * (one - s) - (a + 3)) * (one - s) * (one - s) + one,
        ((a * (two - s) - 5 * a) * (two - s) + 8 * a) * (two - s) - 4 * a,
    ]
    w = np.zeros((coords.size, in_len), np.float64)
    rows = np.arange(coords.size)
    for k in range(4):
        idx = np.clip(base.astype(np.int64) + k - 1, 0, in_len - 1)
        np.add.at(w, (rows, idx), coeffs[k].astype(np.float64))
    return w


def _triangle_weights(coords: np.ndarray, in_len: int, a: float, r: int) -> np.ndarray:
    """Normalised triangle-filter weights; a row whose weights sum to 0 stays 0."""
    w = np.zeros((coords.size, in_len), np.float64)
    centre = _round_half_away(coords).astype(np.int64)
    a32 = _F32(a)
    for off in range(-r, r + 1):
        c = centre + off
        ok = (c >= 0) & (c < in_len)
        dz = coords - c.astype(_F32)
        wt = a32 * np.maximum(_F32(0), _F32(1) - np.abs(a32 * dz))
        rows = np.nonzero(ok)[0]
        np.add.at(w, (rows, c[ok]), wt[ok].astype(np.float64))
    s = w.sum(axis=1, keepdims=True)
    return np.divide(w, s, out=np.zeros_like(w), where=s != 0)


def _pillow_weights(in_len: int, out_len: int, support: float, a: float, bicubic: bool) -> np.ndarray:
    """Pillow's ``precompute_coeffs`` (box = the whole input) as an (out, in) matrix."""
    def filt(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        if not bicubic:
            return np.where(x < 1.0, 1.0 - x, 0.0)
        return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
                        np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0))

    scale = float(in_len) / out_len
    filterscale = max(scale, 1.0)
    sup = support * filterscale
    w = np.zeros((out_len, in_len), np.float64)
    for xx in range(out_len):
        centre = (xx + 0.5) * scale
        xmin = max(int(centre - sup + 0.5), 0)
        xmax = min(int(centre + sup + 0.5), in_len)
        xs = np.arange(xmin, xmax)
        k = filt((xs - centre + 0.5) / filterscale)
        total = k.sum()
        w[xx, xmin:xmax] = k / total if total != 0.0 else k
    return w


def interpolate_kernel(data: np.ndarray, out_shape: Sequence[int], axes: Sequence[int], scales: Sequence[float],
                       attrs: dict[str, Any]) -> np.ndarray:
    """Interpolate-4/11 on already padded ``data`` (OpenVINO's reference semantics)."""
    mode = attrs["mode"].lower()
    coord_mode = attrs["coordinate_transformation_mode"].lower()
    dtype = data.dtype
    if any(int(s) == 0 for s in out_shape) or data.size == 0:
        return np.zeros(tuple(out_shape), dtype)
    in_shape = data.shape
    axes = [int(a) for a in axes]
    scales = [_F32(s) for s in scales]
    if mode == "nearest":
        nearest = attrs["nearest_mode"].lower()
        out = data
        for ax, sc in zip(axes, scales):
            x = _original_coord(coord_mode, np.arange(out_shape[ax]), sc, out_shape[ax], in_shape[ax])
            idx = np.clip(_nearest_index(nearest, x, bool(sc < 1)), 0, in_shape[ax] - 1)
            out = np.take(out, idx, axis=ax)
        return np.ascontiguousarray(out)
    if mode in ("bilinear_pillow", "bicubic_pillow"):
        if len(axes) != 2:
            raise InferenceError(f"ember: Interpolate mode {mode} needs exactly two (H, W) axes, got {axes}")
        bicubic = mode == "bicubic_pillow"
        support, a = (2.0, float(attrs["cube_coeff"])) if bicubic else (1.0, 0.0)
        h, w = axes
        out = data
        for ax in (w, h):  # Pillow resamples horizontally first, and stores each pass in the data type
            if out_shape[ax] != in_shape[ax]:
                mat = _pillow_weights(in_shape[ax], out_shape[ax], support, a, bicubic)
                out = _to_type(_apply_along(out.astype(np.float64), mat, ax), dtype, _round_half_away)
        return np.ascontiguousarray(out)
    out = data.astype(np.float64)
    antialias = bool(attrs["antialias"]) and any(s < 1 for s in scales)
    for ax, sc in zip(axes, scales):
        x = _original_coord(coord_mode, np.arange(out_shape[ax]), sc, out_shape[ax], in_shape[ax])
        if mode == "linear_onnx":
            mat = _linear_onnx_weights(x, in_shape[ax])
        elif mode == "cubic":
            mat = _cubic_weights(x, in_shape[ax], attrs["cube_coeff"])
        else:  # linear: a triangle filter, widened by 1/scale when antialiasing a downscale
            a = float(sc) if antialias else 1.0
            r = 2 if sc > 1 else int(math.ceil(_F32(2.0) / _F32(a)))
            mat = _triangle_weights(x, in_shape[ax], a, r)
        out = _apply_along(out, mat, ax)
    # integer data is rounded to nearest (OpenVINO's CPU plugin; its reference truncates some modes)
    return _to_type(out, dtype, np.rint)


class _InterpolateBase(Node):
    """Shared shape inference of Interpolate-4 and -11 (``scales_port`` / ``sizes_port``)."""

    modes: tuple[str, ...] = _MODES4
    sizes_port = 1
    scales_port = 2
    axes_port = 3

    def _check_attrs(self) -> None:
        for name, allowed in (("mode", self.modes), ("coordinate_transformation_mode", _COORD_MODES),
                              ("nearest_mode", _NEAREST_MODES), ("shape_calculation_mode", ("sizes", "scales"))):
            if self.attrs[name].lower() not in allowed:
                raise self.fail(f"{name} must be one of {', '.join(allowed)}, got '{self.attrs[name]}'")

    def _uses_scales(self) -> bool:
        return self.attrs["shape_calculation_mode"].lower() == "scales"

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._check_attrs()
        t = self.input_type(0)
        for port in range(1, self.get_input_size()):
            s = self.input_shape(port)
            if s.rank_is_static and len(s) != 1:
                raise self.fail(f"input {port} must be 1-D, got shape {s}")
        port = self.scales_port if self._uses_scales() else self.sizes_port
        pt = self.input_type(port)
        if self._uses_scales() and not (pt.is_real or pt.is_dynamic):
            raise self.fail(f"scales must be floating-point, got {pt}")
        if not self._uses_scales() and not (pt.is_integral_number or pt.is_dynamic):
            raise self.fail(f"sizes must be an integer tensor, got {pt}")
        data = self.input_shape(0)
        if not data.rank_is_static:
            return [(t, PartialShape.dynamic())]
        rank = len(data)
        self.attrs["pads_begin"] = _resized_pads(self.attrs["pads_begin"], rank)
        self.attrs["pads_end"] = _resized_pads(self.attrs["pads_end"], rank)
        axes = self._axes(rank)
        if axes is None:
            return [(t, PartialShape.dynamic(rank))]
        dims = [d + (b + e) for d, b, e in zip(data, self.attrs["pads_begin"], self.attrs["pads_end"])]
        values = self.input_value(port)
        if values is None:
            for a in axes:
                dims[a] = Dimension()
        else:
            values = np.asarray(values).reshape(-1)
            if values.size < len(axes):
                raise self.fail(f"the {'scales' if self._uses_scales() else 'sizes'} input has {values.size} "
                                f"values for {len(axes)} axes")
            for a, v in zip(axes, values):
                dims[a] = _scale_dim(dims[a], float(v)) if self._uses_scales() else Dimension(int(v))
        return [(t, PartialShape(dims))]

    def _axes(self, rank: int) -> list[int] | None:
        if self.get_input_size() <= self.axes_port:
            return list(range(rank))
        it = self.input_type(self.axes_port)
        if not (it.is_integral_number or it.is_dynamic):
            raise self.fail(f"axes must be an integer tensor, got {it}")
        v = self.input_value(self.axes_port)
        if v is None:
            return None
        axes = [int(a) for a in np.asarray(v).reshape(-1)]
        for a in axes:
            if not 0 <= a < rank:
                raise self.fail(f"axis {a} is out of range: axes must lie in [0, {rank - 1}]")
        return axes

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        rank = x.ndim
        pb = _resized_pads(self.attrs["pads_begin"], rank)
        pe = _resized_pads(self.attrs["pads_end"], rank)
        padded = np.pad(x, list(zip(pb, pe))) if any(pb) or any(pe) else x
        axes = ([int(a) for a in inputs[self.axes_port].reshape(-1)] if len(inputs) > self.axes_port
                else list(range(rank)))
        out_shape = list(padded.shape)
        if self._uses_scales():
            scales = [_F32(s) for s in np.asarray(inputs[self.scales_port]).reshape(-1)[: len(axes)]]
            for a, s in zip(axes, scales):
                out_shape[a] = _scaled_length(padded.shape[a], s)
        else:
            sizes = [int(s) for s in np.asarray(inputs[self.sizes_port]).reshape(-1)[: len(axes)]]
            for a, s in zip(axes, sizes):
                out_shape[a] = s
            scales = [_F32(out_shape[a]) / _F32(padded.shape[a]) if padded.shape[a] else _F32(1) for a in axes]
        return [interpolate_kernel(padded, out_shape, axes, scales, self.attrs)]


_INTERP_ATTRS = (Attr("mode", "str"), Attr("shape_calculation_mode", "str"),
                 Attr("coordinate_transformation_mode", "str", "half_pixel"),
                 Attr("nearest_mode", "str", "round_prefer_floor"), Attr("antialias", "bool", False),
                 Attr("pads_begin", "ints", [0]), Attr("pads_end", "ints", [0]), Attr("cube_coeff", "float", -0.75))


@register_op
class Interpolate4(_InterpolateBase):
    """Resize over ``axes`` (input 3, default all) to ``sizes`` (input 1) or by ``scales`` (input 2),
    after zero padding; modes nearest, linear (triangle filter, antialias), linear_onnx, cubic."""

    type_name = "Interpolate"
    version = "opset4"
    num_inputs = (3, 4)
    attributes = _INTERP_ATTRS


@register_op
class Interpolate(_InterpolateBase):
    """Interpolate-11: one ``scales_or_sizes`` input (input 1), optional axes (input 2), and the
    Pillow modes bilinear_pillow / bicubic_pillow besides the Interpolate-4 ones."""

    type_name = "Interpolate"
    version = "opset11"
    num_inputs = (2, 3)
    attributes = _INTERP_ATTRS
    modes = _MODES11
    scales_port = 1
    axes_port = 2


@builder
def interpolate(image: Any, scales_or_sizes: Any, mode: str, shape_calculation_mode: str,
                pads_begin: Sequence[int] | None = None, pads_end: Sequence[int] | None = None,
                coordinate_transformation_mode: str = "half_pixel", nearest_mode: str = "round_prefer_floor",
                antialias: bool = False, cube_coeff: float = -0.75, axes: Any = None,
                name: str | None = None) -> Node:
    """Build an Interpolate (opset11) node resizing ``image`` over ``axes`` (default: all)."""
    attrs = {"mode": mode.lower(), "shape_calculation_mode": shape_calculation_mode.lower(),
             "coordinate_transformation_mode": coordinate_transformation_mode.lower(),
             "nearest_mode": nearest_mode.lower(), "antialias": antialias,
             "pads_begin": list(pads_begin or [0]), "pads_end": list(pads_end or [0]), "cube_coeff": cube_coeff}
    inputs = [image, scales_or_sizes] + ([] if axes is None else [axes])
    return Interpolate(inputs, attrs, name)


@register_op
class Interpolate0(Node):
    """Interpolate-1: resize the ``axes`` attribute's dimensions to the target shape in input 1;
    computed as OpenVINO does, by mapping onto Interpolate-4 (``align_corners`` or asymmetric /
    half-pixel coordinates, ``simple`` nearest rounding, linear as linear_onnx below rank 5)."""

    type_name = "Interpolate"
    version = "opset1"
    num_inputs = (2, 2)
    attributes = (Attr("align_corners", "bool", True), Attr("antialias", "bool", False), Attr("axes", "ints"),
                  Attr("mode", "str"), Attr("pads_begin", "ints", []), Attr("pads_end", "ints", []))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        if self.attrs["mode"].lower() not in ("nearest", "linear", "cubic", "linear_onnx"):
            raise self.fail(f"mode must be nearest, linear, linear_onnx or cubic, got '{self.attrs['mode']}'")
        data = self.input_shape(0)
        if not data.rank_is_static:
            return [(self.input_type(0), data)]
        rank = len(data)
        for a in self.attrs["axes"]:
            if not 0 <= a < rank:
                raise self.fail(f"axis {a} is out of range for rank {rank}")
        dims = list(data)
        target = self.input_value(1)
        if target is None:
            for a in self.attrs["axes"]:
                dims[a] = Dimension()
        else:
            target = np.asarray(target).reshape(-1)
            if target.size < len(self.attrs["axes"]):
                raise self.fail(f"the target shape has {target.size} values for {len(self.attrs['axes'])} axes")
            for a, v in zip(self.attrs["axes"], target):
                dims[a] = Dimension(int(v))
        return [(self.input_type(0), PartialShape(dims))]

    def v4_attrs(self, rank: int) -> dict[str, Any]:
        """The Interpolate-4 attributes this node computes with."""
        mode = self.attrs["mode"].lower()
        if mode == "linear":
            mode = "linear_onnx" if rank < 5 else "linear"
        pb, pe = self.attrs["pads_begin"], self.attrs["pads_end"]
        coord = "asymmetric"
        if self.attrs["align_corners"]:
            coord = "align_corners"
        elif (mode in ("linear", "linear_onnx") and not any(pb) and not any(pe)
              and not (rank == 4 and sorted(self.attrs["axes"]) == [2, 3])):
            coord = "half_pixel"
        return {"mode": mode, "shape_calculation_mode": "sizes", "coordinate_transformation_mode": coord,
                "nearest_mode": "simple", "antialias": self.attrs["antialias"], "cube_coeff": -0.75}

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, target = inputs
        rank = x.ndim
        pb = _resized_pads(self.attrs["pads_begin"], rank)
        pe = _resized_pads(self.attrs["pads_end"], rank)
        padded = np.pad(x, list(zip(pb, pe))) if any(pb) or any(pe) else x
        axes = list(self.attrs["axes"])
        out_shape = list(x.shape)
        for a, v in zip(axes, np.asarray(target).reshape(-1)):
            out_shape[a] = int(v)
        scales = [_F32(out_shape[a]) / _F32(padded.shape[a]) for a in axes]
        return [interpolate_kernel(padded, out_shape, axes, scales, self.v4_attrs(rank))]


# == TopK ===================================================================================


class _TopKBase(Node):
    """The k largest (``mode="max"``) or smallest elements along ``axis`` and their indices."""

    num_inputs = (2, 2)
    k_types: tuple[Type, ...] | None = None  # None: any integer type

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = self.input_type(0)
        if t in (Type.boolean, Type.string):
            raise self.fail(f"data must be numeric, got {t}")
        if self.attrs["mode"].lower() not in ("max", "min"):
            raise self.fail(f"mode must be 'max' or 'min', got '{self.attrs['mode']}'")
        sort = self.attrs["sort"].lower()
        if sort not in ("value", "index", "none"):
            raise self.fail(f"sort must be 'value', 'index' or 'none', got '{self.attrs['sort']}'")
        if self.attrs.get("stable") and sort == "none":
            raise self.fail("stable sorting needs sort='value' or sort='index'")
        index_type = _index_type(self, "index_element_type", self.attrs["index_element_type"])
        kt = self.input_type(1)
        if not (kt.is_integral_number or kt.is_dynamic) or (self.k_types and kt not in self.k_types
                                                            and not kt.is_dynamic):
            allowed = ", ".join(x.name for x in self.k_types) if self.k_types else "an integer type"
            raise self.fail(f"k must be {allowed}, got {kt}")
        ks = self.input_shape(1)
        if ks.rank_is_static and len(ks) != 0:
            raise self.fail(f"k must be a scalar, got shape {ks}")
        k = _one_value(self, 1)
        if k is not None and int(k) < 0:
            raise self.fail(f"k must be non-negative, got {int(k)}")
        data = self.input_shape(0)
        if not data.rank_is_static:
            return [(t, data), (index_type, data)]
        rank = len(data)
        axis = self.attrs["axis"]
        if not -rank <= axis < rank:
            raise self.fail(f"axis {axis} is out of range for rank {rank}")
        axis %= rank
        dims = list(data)
        # as OpenVINO: a known k is the output length; an unknown one is at most the input's
        dims[axis] = Dimension(int(k)) if k is not None else Dimension(0, data[axis].max_length)
        shape = PartialShape(dims)
        return [(t, shape), (index_type, shape)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        k = int(np.asarray(inputs[1]).reshape(-1)[0])
        axis = self.attrs["axis"] % x.ndim
        n = x.shape[axis]
        index_dtype = as_type(self.attrs["index_element_type"]).dtype
        if k > n:
            raise InferenceError(f"ember: TopK '{self.friendly_name}': k = {k} exceeds the axis length {n}")
        if self.attrs["mode"].lower() == "min":
            order = np.argsort(x, axis=axis, kind="stable")
        else:  # descending; equal values keep the lower index first
            order = n - 1 - np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
        order = np.take(order, np.arange(k), axis=axis)
        if self.attrs["sort"].lower() == "index":
            order = np.sort(order, axis=axis)
        values = np.take_along_axis(x, order, axis=axis)
        return [values, order.astype(index_dtype)]


_TOPK_ATTRS = (Attr("axis", "int"), Attr("mode", "str"), Attr("sort", "str"),
               Attr("index_element_type", "type", Type.i32))


@register_op
class TopK1(_TopKBase):
    """TopK-1: k is an i8, i32 or i64 scalar."""

    type_name = "TopK"
    version = "opset1"
    attributes = _TOPK_ATTRS
    k_types = (Type.i8, Type.i32, Type.i64)


@register_op
class TopK3(_TopKBase):
    """TopK-3: k of any integer type."""

    type_name = "TopK"
    version = "opset3"
    attributes = _TOPK_ATTRS


@register_op
class TopK(_TopKBase):
    """TopK-11: adds ``stable`` (equal values keep input order; ember always does so)."""

    type_name = "TopK"
    version = "opset11"
    attributes = _TOPK_ATTRS + (Attr("stable", "bool", False),)


@builder
def topk(data: Any, k: Any, axis: int, mode: str, sort: str, index_element_type: str = "i32",
         stable: bool = False, name: str | None = None) -> Node:
    """Build a TopK (opset11) node; outputs are the values and their indices."""
    return TopK([data, k], {"axis": axis, "mode": mode.lower(), "sort": sort.lower(),
                            "index_element_type": index_element_type, "stable": stable}, name)


# == FakeQuantize ===========================================================================


@register_op
class FakeQuantize(Node):
    """Quantize to ``levels`` steps and back: x <= min(il, ih) -> ol, x > max(il, ih) -> oh, else
    rint((x - il) / (ih - il) * (levels - 1)) / (levels - 1) * (oh - ol) + ol, in the data type,
    with round-half-to-even (OpenVINO's reference formula)."""

    type_name = "FakeQuantize"
    version = "opset1"
    num_inputs = (5, 5)
    attributes = (Attr("levels", "int"), Attr("auto_broadcast", "str", "numpy"))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = self.input_type(0)
        if not (t.is_real or t.is_dynamic):
            raise self.fail(f"data must be floating-point, got {t}")
        for p in range(1, 5):
            if not self.input_type(p).compatible(t):
                raise self.fail(f"input {p} has type {self.input_type(p)}, the data has {t}")
        if self.attrs["levels"] <= 1:
            raise self.fail(f"levels must be greater than 1, got {self.attrs['levels']}")
        mode = self.attrs["auto_broadcast"].lower()
        if mode not in ("numpy", "none", "pdpd"):
            raise self.fail(f"auto_broadcast must be numpy, none or pdpd, got '{self.attrs['auto_broadcast']}'")
        for p in range(1, 5):  # the ranges must broadcast with the data; the output keeps the data's shape
            broadcast_shapes(self.input_shape(0), self.input_shape(p), mode)
        return [(t, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        mode = self.attrs["auto_broadcast"].lower()
        ranges = [numpy_broadcast([x, r], mode)[1] for r in inputs[1:]]
        # f32 and f64 compute in their own type; f16 and bf16 in f32 (as OpenVINO's half types do)
        ct = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        xc = x.astype(ct)
        il, ih, ol, oh = (np.asarray(r).astype(ct) for r in ranges)
        steps = ct.type(self.attrs["levels"] - 1)
        with np.errstate(all="ignore"):
            q = np.rint((xc - il) / (ih - il) * steps) / steps * (oh - ol) + ol
            out = np.where(xc <= np.minimum(il, ih), ol, np.where(xc > np.maximum(il, ih), oh, q))
        if out.shape != x.shape:
            raise InferenceError(f"ember: FakeQuantize '{self.friendly_name}': ranges of shapes "
                                 f"{[r.shape for r in inputs[1:]]} broadcast the data {x.shape} to {out.shape}")
        return [np.asarray(out).astype(x.dtype)]


@builder
def fake_quantize(data: Any, input_low: Any, input_high: Any, output_low: Any, output_high: Any, levels: int,
                  auto_broadcast: str = "NUMPY", name: str | None = None) -> Node:
    """Build a FakeQuantize node with ``levels`` quantization levels."""
    return FakeQuantize([data, input_low, input_high, output_low, output_high],
                        {"levels": levels, "auto_broadcast": auto_broadcast.lower()}, name)


# == Bucketize ==============================================================================


@register_op
class Bucketize(Node):
    """The index of the bucket (between sorted boundaries in input 1) each element falls into;
    ``with_right_bound`` makes buckets (b[i-1], b[i]], otherwise [b[i-1], b[i])."""

    type_name = "Bucketize"
    version = "opset3"
    num_inputs = (2, 2)
    attributes = (Attr("output_type", "type", Type.i64), Attr("with_right_bound", "bool", True))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        ot = _index_type(self, "output_type", self.attrs["output_type"])
        for p in (0, 1):
            if self.input_type(p) in (Type.boolean, Type.string):
                raise self.fail(f"input {p} must be numeric, got {self.input_type(p)}")
        b = self.input_shape(1)
        if b.rank_is_static and len(b) != 1:
            raise self.fail(f"buckets must be a 1-D tensor, got shape {b}")
        return [(ot, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, buckets = inputs
        right = self.attrs["with_right_bound"]
        xf = x.astype(np.float64)
        out = np.searchsorted(buckets.astype(np.float64), xf, side="left" if right else "right")
        if xf.dtype.kind == "f":  # NaN compares false: a lower_bound search stops first, upper_bound last
            out = np.where(np.isnan(xf), 0 if right else buckets.size, out)
        return [np.asarray(out).astype(as_type(self.attrs["output_type"]).dtype).reshape(x.shape)]


@builder
def bucketize(data: Any, buckets: Any, output_type: str = "i64", with_right_bound: bool = True,
              name: str | None = None) -> Node:
    """Build a Bucketize node."""
    return Bucketize([data, buckets], {"output_type": output_type, "with_right_bound": with_right_bound}, name)


# == NonMaxSuppression ======================================================================


def _corner_boxes(boxes: np.ndarray, center: bool) -> np.ndarray:
    """Boxes as float32 [y1, x1, y2, x2] with y1 <= y2 and x1 <= x2."""
    b = boxes.astype(_F32)
    if center:  # [x_center, y_center, width, height]
        xc, yc, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
        half = _F32(0.5)
        return np.stack([yc - h * half, xc - w * half, yc + h * half, xc + w * half], axis=-1)
    return np.stack([np.minimum(b[..., 0], b[..., 2]), np.minimum(b[..., 1], b[..., 3]),
                     np.maximum(b[..., 0], b[..., 2]), np.maximum(b[..., 1], b[..., 3])], axis=-1)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with many, in float32 (0 when an area is not positive)."""
    zero = _F32(0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    ih = np.maximum(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), zero)
    iw = np.maximum(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), zero)
    inter = ih * iw
    with np.errstate(all="ignore"):
        iou = inter / (area + areas - inter)
    return np.where((area <= zero) | (areas <= zero), zero, iou).astype(_F32)


def _nms_one_class(boxes: np.ndarray, scores: np.ndarray, max_out: int, iou_th: Any, score_th: Any,
                   sigma: Any) -> list[tuple[int, Any]]:
    """Selected (box index, score) for one batch and class, best first.

    Hard NMS drops a box whose IoU with a kept box reaches ``iou_th`` (``>=``, as OpenVINO's CPU
    plugin does for every version); soft NMS (``sigma > 0``) only decays scores, as NMS-9 says
    (the CPU plugin treats NMS-5 the same way).
    """
    cand = np.nonzero(scores > score_th)[0]
    if max_out <= 0 or cand.size == 0:
        return []
    order = cand[np.lexsort((cand, -scores[cand]))]  # score descending, then lower index first
    if not sigma > 0:
        # hard NMS: a box is kept when it overlaps every kept box by less than the threshold
        keep: list[tuple[int, Any]] = []
        alive = np.ones(order.size, bool)
        for pos in range(order.size):
            if not alive[pos]:
                continue
            keep.append((int(order[pos]), scores[order[pos]]))
            if len(keep) == max_out:
                break
            ious = _iou(boxes[order[pos]], boxes[order[pos + 1:]])
            alive[pos + 1:] &= ious < iou_th
        return keep
    import heapq

    scale = _F32(-0.5) / _F32(sigma)
    heap = [(-scores[i], int(i), 0) for i in order]
    heapq.heapify(heap)
    selected: list[tuple[int, Any]] = []
    while heap and len(selected) < max_out:
        neg, idx, begin = heapq.heappop(heap)
        score = original = _F32(-neg)
        for j in range(len(selected) - 1, begin - 1, -1):
            iou = _iou(boxes[idx], boxes[selected[j][0]][None])[0]
            score = _F32(score * _F32(np.exp(scale * iou * iou)))
            if score <= score_th:
                break
        if score == original:
            selected.append((idx, score))
        elif score > score_th:
            heapq.heappush(heap, (-score, idx, len(selected)))
    return selected


def non_max_suppression_kernel(boxes: np.ndarray, scores: np.ndarray, max_out: int, iou_th: float,
                               score_th: float, sigma: float, center: bool,
                               sort_desc: bool) -> tuple[np.ndarray, np.ndarray]:
    """All selected boxes as (indices [n, 3] int64, scores [n, 3] float32) rows (batch, class, ...)."""
    corners = _corner_boxes(boxes, center)
    rows: list[tuple[int, int, int, Any]] = []
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            for idx, sc in _nms_one_class(corners[b], scores[b, c].astype(_F32), max_out, _F32(iou_th),
                                          _F32(score_th), _F32(sigma)):
                rows.append((b, c, idx, sc))
    if sort_desc:
        rows.sort(key=lambda r: (-float(r[3]), r[0], r[1], r[2]))
    idx = np.array([r[:3] for r in rows], np.int64).reshape(-1, 3)
    sel = np.array([(r[0], r[1], r[3]) for r in rows], np.float32).reshape(-1, 3)
    return idx, sel


class _NMSBase(Node):
    """Non-maximum suppression over boxes [batches, boxes, 4] and scores [batches, classes, boxes]."""

    soft = False  # has the soft_nms_sigma input

    def _value(self, port: int, default: Any) -> Any:
        if self.get_input_size() <= port:
            return default
        s = self.input_shape(port)
        if s.rank_is_static and (len(s) > 1 or (len(s) == 1 and s[0].is_static and s[0].get_length() != 1)):
            raise self.fail(f"input {port} must be a scalar or hold one value, got shape {s}")
        return _one_value(self, port)

    def _check(self) -> tuple[PartialShape, PartialShape]:
        if self.attrs["box_encoding"].lower() not in ("corner", "center"):
            raise self.fail(f"box_encoding must be 'corner' or 'center', got '{self.attrs['box_encoding']}'")
        for p in (0, 1):
            t = self.input_type(p)
            if not (t.is_real or t.is_dynamic):
                raise self.fail(f"input {p} must be floating-point, got {t}")
        boxes, scores = self.input_shape(0), self.input_shape(1)
        if boxes.rank_is_static and (len(boxes) != 3 or not boxes[2].compatible(4)):
            raise self.fail(f"boxes must have shape [batches, boxes, 4], got {boxes}")
        if scores.rank_is_static and len(scores) != 3:
            raise self.fail(f"scores must have shape [batches, classes, boxes], got {scores}")
        if boxes.rank_is_static and scores.rank_is_static and not (
                boxes[0].compatible(scores[0]) and boxes[1].compatible(scores[2])):
            raise self.fail(f"boxes {boxes} and scores {scores} disagree on batches or boxes")
        return boxes, scores

    def _counts(self, boxes: PartialShape, scores: PartialShape) -> tuple[Dimension, Dimension, Dimension]:
        if not (boxes.rank_is_static and scores.rank_is_static):
            return Dimension(), Dimension(), Dimension()
        return boxes[0].merge(scores[0]), scores[1], boxes[1].merge(scores[2])

    def _run(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        def scalar(port: int, default: Any) -> Any:
            return np.asarray(inputs[port]).reshape(-1)[0] if len(inputs) > port else default

        return non_max_suppression_kernel(
            inputs[0], inputs[1], int(scalar(2, 0)), float(scalar(3, 0.0)), float(scalar(4, 0.0)),
            float(scalar(5, 0.0)) if self.soft else 0.0, self.attrs["box_encoding"].lower() == "center",
            self.attrs["sort_result_descending"])


class _NMSStatic(_NMSBase):
    """NMS-1/3/4: one output of a static size, padded with -1 rows past the selected boxes."""

    num_inputs = (2, 5)

    def _rows(self, b: int, c: int, n: int, m: int) -> int:
        return min(n, m * c)  # NMS-1 and -3 (batches are not counted, as in OpenVINO)

    def _out_type(self) -> Type:
        return _index_type(self, "output_type", self.attrs.get("output_type", Type.i64))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        b, c, n = self._counts(*self._check())
        m = self._value(2, 0)
        rows = Dimension()
        if m is not None and b.is_static and c.is_static and n.is_static:
            rows = Dimension(self._rows(b.get_length(), c.get_length(), n.get_length(), int(m)))
        return [(self._out_type(), PartialShape([rows, 3]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        idx, _ = self._run(inputs)
        b, c, n = inputs[1].shape[0], inputs[1].shape[1], inputs[0].shape[1]
        m = int(np.asarray(inputs[2]).reshape(-1)[0]) if len(inputs) > 2 else 0
        out = np.full((self._rows(b, c, n, m), 3), -1, np.int64)
        k = min(len(idx), out.shape[0])
        out[:k] = idx[:k]
        return [out.astype(self._out_type().dtype)]


_NMS_ATTRS = (Attr("box_encoding", "str", "corner"), Attr("sort_result_descending", "bool", True))


@register_op
class NonMaxSuppression1(_NMSStatic):
    """NonMaxSuppression-1: i64 indices, [min(boxes, max_output * classes), 3] rows."""

    type_name = "NonMaxSuppression"
    version = "opset1"
    attributes = _NMS_ATTRS


@register_op
class NonMaxSuppression3(_NMSStatic):
    """NonMaxSuppression-3: adds ``output_type``."""

    type_name = "NonMaxSuppression"
    version = "opset3"
    attributes = _NMS_ATTRS + (Attr("output_type", "type", Type.i64),)


@register_op
class NonMaxSuppression4(_NMSStatic):
    """NonMaxSuppression-4: [min(boxes, max_output) * batches * classes, 3] rows."""

    type_name = "NonMaxSuppression"
    version = "opset4"
    attributes = _NMS_ATTRS + (Attr("output_type", "type", Type.i64),)

    def _rows(self, b: int, c: int, n: int, m: int) -> int:
        return min(n, m) * b * c


class _NMSDynamic(_NMSBase):
    """NMS-5/9: selected indices and scores of dynamic length, and the count of valid rows."""

    num_inputs = (2, 6)
    soft = True
    attributes = _NMS_ATTRS + (Attr("output_type", "type", Type.i64),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        boxes, scores = self._check()
        ot = _index_type(self, "output_type", self.attrs["output_type"])
        b, c, n = self._counts(boxes, scores)
        m = self._value(2, 0)
        rows = Dimension()
        if m is not None and -1 not in (b.max_length, c.max_length, n.max_length):
            rows = Dimension(0, min(n.max_length, max(int(m), 0)) * b.max_length * c.max_length)
        st = self.input_type(0)
        return [(ot, PartialShape([rows, 3])), (st, PartialShape([rows, 3])), (ot, PartialShape([1]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        idx, sel = self._run(inputs)
        ot = as_type(self.attrs["output_type"]).dtype
        return [idx.astype(ot), sel.astype(inputs[0].dtype), np.array([len(idx)], ot)]


@register_op
class NonMaxSuppression5(_NMSDynamic):
    """NonMaxSuppression-5: as NMS-9 (OpenVINO's CPU plugin runs both alike)."""

    type_name = "NonMaxSuppression"
    version = "opset5"


@register_op
class NonMaxSuppression(_NMSDynamic):
    """NonMaxSuppression-9: with ``soft_nms_sigma > 0`` scores decay by exp(-0.5 iou^2 / sigma) and
    nothing is suppressed outright; otherwise overlaps reaching ``iou_threshold`` are removed."""

    type_name = "NonMaxSuppression"
    version = "opset9"


@builder
def non_max_suppression(boxes: Any, scores: Any, max_output_boxes_per_class: Any = None, iou_threshold: Any = None,
                        score_threshold: Any = None, soft_nms_sigma: Any = None, box_encoding: str = "corner",
                        sort_result_descending: bool = True, output_type: str = "i64",
                        name: str | None = None) -> Node:
    """Build a NonMaxSuppression (opset9) node; missing inputs default to 0 as in OpenVINO."""
    inputs = [boxes, scores,
              np.array(0, np.int64) if max_output_boxes_per_class is None else max_output_boxes_per_class,
              np.array(0, np.float32) if iou_threshold is None else iou_threshold,
              np.array(0, np.float32) if score_threshold is None else score_threshold,
              np.array(0, np.float32) if soft_nms_sigma is None else soft_nms_sigma]
    return NonMaxSuppression(inputs, {"box_encoding": box_encoding.lower(),
                                      "sort_result_descending": sort_result_descending,
                                      "output_type": output_type}, name)


# == SpaceToBatch, BatchToSpace =============================================================


def _div_dim(d: Dimension, k: int) -> Dimension:
    """``d / k`` for a dimension that must divide evenly: bounds round inward."""
    if d.is_static:
        return Dimension(d.get_length() // k)
    hi = -1 if d.max_length == -1 else d.max_length // k
    return Dimension(-(-d.min_length // k), hi)


def _shift_dim(d: Dimension, delta: int) -> Dimension:
    """``d + delta`` for a negative ``delta`` too (the lower bound stops at 0)."""
    hi = -1 if d.max_length == -1 else d.max_length + delta
    return Dimension(hi) if d.is_static else Dimension(max(d.min_length + delta, 0), hi)


class _BlockBase(Node):
    """Shared checks of SpaceToBatch / BatchToSpace: 1-D integer block and pad/crop inputs."""

    num_inputs = (4, 4)

    def _params(self, rank: int | None) -> list[np.ndarray] | None:
        for p in (1, 2, 3):
            t = self.input_type(p)
            if not (t.is_integral_number or t.is_dynamic):
                raise self.fail(f"input {p} must be an integer tensor, got {t}")
            s = self.input_shape(p)
            if s.rank_is_static and len(s) != 1:
                raise self.fail(f"input {p} must be 1-D, got shape {s}")
            if rank is not None and s.rank_is_static and s[0].is_static and s[0].get_length() != rank:
                raise self.fail(f"input {p} has {s[0]} values for a rank-{rank} input")
        values = [self.input_value(p) for p in (1, 2, 3)]
        if any(v is None for v in values):
            return None
        block, begin, end = (np.asarray(v, np.int64).reshape(-1) for v in values)
        if (block < 1).any():
            raise self.fail(f"block_shape values must be positive, got {block.tolist()}")
        if block.size and block[0] != 1:
            raise self.fail(f"block_shape[0] must be 1, got {int(block[0])}")
        if (begin < 0).any() or (end < 0).any():
            raise self.fail("pads and crops must be non-negative")
        return [block, begin, end]


@register_op
class SpaceToBatch(_BlockBase):
    """Zero-pad the spatial dimensions, then move ``block_shape`` blocks of them into the batch."""

    type_name = "SpaceToBatch"
    version = "opset2"

    def infer(self) -> list[tuple[Type, PartialShape]]:
        data = self.input_shape(0)
        rank = len(data) if data.rank_is_static else None
        params = self._params(rank)
        if rank is None:
            return [(self.input_type(0), PartialShape.dynamic())]
        if params is None:
            return [(self.input_type(0), PartialShape.dynamic(rank))]
        block, begin, end = params
        dims = [d + int(b + e) for d, b, e in zip(data, begin, end)]
        for i in range(1, rank):
            d = dims[i]
            if d.is_static and d.get_length() % block[i]:
                raise self.fail(f"padded dimension {i} ({d}) is not a multiple of the block size {int(block[i])}")
            dims[i] = _div_dim(d, int(block[i]))
        dims[0] = dims[0] * int(np.prod(block))
        return [(self.input_type(0), PartialShape(dims))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, block, begin, end = inputs[0], *(np.asarray(v, np.int64).reshape(-1) for v in inputs[1:])
        y = np.pad(x, [(int(b), int(e)) for b, e in zip(begin, end)])
        k = y.ndim - 1
        split = [y.shape[0]]
        for i in range(1, y.ndim):
            split += [y.shape[i] // int(block[i]), int(block[i])]
        y = y.reshape(split)
        # [batch, D1/b1, b1, ..., Dk/bk, bk] -> [b1, ..., bk, batch, D1/b1, ..., Dk/bk]
        y = y.transpose([2 * i + 2 for i in range(k)] + [0] + [2 * i + 1 for i in range(k)])
        out = [y.shape[k] * int(np.prod(block))] + [y.shape[k + 1 + i] for i in range(k)]
        return [np.ascontiguousarray(y).reshape(out)]


@register_op
class BatchToSpace(_BlockBase):
    """Move ``block_shape`` blocks of the batch back into the spatial dimensions, then crop."""

    type_name = "BatchToSpace"
    version = "opset2"

    def infer(self) -> list[tuple[Type, PartialShape]]:
        data = self.input_shape(0)
        rank = len(data) if data.rank_is_static else None
        params = self._params(rank)
        if rank is None:
            return [(self.input_type(0), PartialShape.dynamic())]
        if params is None:
            return [(self.input_type(0), PartialShape.dynamic(rank))]
        block, begin, end = params
        total = int(np.prod(block))
        if data[0].is_static and data[0].get_length() % total:
            raise self.fail(f"the batch ({data[0]}) is not a multiple of the block volume {total}")
        dims = [_div_dim(data[0], total)]
        for i in range(1, rank):
            d = _shift_dim(data[i] * int(block[i]), -int(begin[i] + end[i]))
            if d.max_length != -1 and d.max_length < 0:
                raise self.fail(f"crops of dimension {i} exceed its size")
            dims.append(d)
        return [(self.input_type(0), PartialShape(dims))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, block, begin, end = inputs[0], *(np.asarray(v, np.int64).reshape(-1) for v in inputs[1:])
        k = x.ndim - 1
        blocks = [int(b) for b in block[1:]]
        batch = x.shape[0] // int(np.prod(block))
        y = x.reshape(blocks + [batch] + list(x.shape[1:]))
        # [b1, ..., bk, batch, D1, ..., Dk] -> [batch, D1, b1, ..., Dk, bk]
        order = [k]
        for i in range(k):
            order += [k + 1 + i, i]
        y = y.transpose(order).reshape([batch] + [x.shape[1 + i] * blocks[i] for i in range(k)])
        crop = tuple(slice(int(b), y.shape[i] - int(e)) for i, (b, e) in enumerate(zip(begin, end)))
        return [np.ascontiguousarray(y[crop])]


@builder
def space_to_batch(data: Any, block_shape: Any, pads_begin: Any, pads_end: Any, name: str | None = None) -> Node:
    """Build a SpaceToBatch node."""
    return SpaceToBatch([data, block_shape, pads_begin, pads_end], None, name)


@builder
def batch_to_space(data: Any, block_shape: Any, crops_begin: Any, crops_end: Any, name: str | None = None) -> Node:
    """Build a BatchToSpace node."""
    return BatchToSpace([data, block_shape, crops_begin, crops_end], None, name)
