"""Convolutions: Convolution, GroupConvolution, ConvolutionBackpropData, GroupConvolutionBackpropData.

All four share one attribute set (strides, dilations, pads, ``auto_pad``; the backprop ops add
``output_padding``), one shape rule per direction, and two numpy kernels that loop over kernel
taps (never over pixels), each tap one matrix product over all output positions.

Filter layouts, as OpenVINO has them:
``Convolution [O, C, k...]``, ``GroupConvolution [G, O/G, C/G, k...]``,
``ConvolutionBackpropData [C, O, k...]``, ``GroupConvolutionBackpropData [G, C/G, O/G, k...]``.
As in OpenVINO, when ``auto_pad`` is not ``explicit`` inference writes the pads it resolved
into ``pads_begin``/``pads_end`` (zeros where a dimension is not static).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type
from ember.ops._util import dim_ceil_div, dim_div_exact, dim_floor_div, dim_sub, same_padding

AUTO_PADS = ("explicit", "same_upper", "same_lower", "valid")


def normalize_auto_pad(node: Node) -> str:
    """The node's ``auto_pad`` in IR spelling (``notset`` is ``explicit``)."""
    mode = str(node.attrs["auto_pad"]).lower()
    mode = "explicit" if mode == "notset" else mode
    if mode not in AUTO_PADS:
        raise node.fail(f"auto_pad must be one of {', '.join(AUTO_PADS)}, got '{node.attrs['auto_pad']}'")
    return mode


def accumulator_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype kernels compute in: f64 stays, other floats use f32, integers int64."""
    if dtype == np.float64:
        return np.dtype(np.float64)
    if dtype.kind in "iub":
        return np.dtype(np.int64)
    return np.dtype(np.float32)


def pad_spatial(x: np.ndarray, begin: Sequence[int], end: Sequence[int], value: Any = 0,
                first_axis: int = 1) -> np.ndarray:
    """Pad (or crop, for negative amounts) the axes ``first_axis...`` of ``x``."""
    crop = [slice(None)] * x.ndim
    width = [(0, 0)] * x.ndim
    for i, (b, e) in enumerate(zip(begin, end)):
        ax = first_axis + i
        width[ax] = (max(b, 0), max(e, 0))
        crop[ax] = slice(max(-b, 0), x.shape[ax] - max(-e, 0))
    x = x[tuple(crop)]
    if any(w != (0, 0) for w in width):
        x = np.pad(x, width, constant_values=value)
    return np.ascontiguousarray(x)


def _taps(kernel: Sequence[int]) -> itertools.product:
    return itertools.product(*(range(k) for k in kernel))


def conv_forward(x: np.ndarray, w: np.ndarray, strides: Sequence[int], dilations: Sequence[int],
                 pads_begin: Sequence[int], pads_end: Sequence[int]) -> np.ndarray:
    """Grouped N-d convolution. ``x`` is ``[N, C, *S]``, ``w`` is ``[G, O/G, C/G, *K]``;
    returns ``[N, O, *out]`` in the accumulator dtype."""
    acc = accumulator_dtype(x.dtype)
    n_sp = x.ndim - 2
    groups, og, cg = w.shape[:3]
    kernel = w.shape[3:]
    xl = pad_spatial(np.moveaxis(x, 1, -1).astype(acc, copy=False), pads_begin, pads_end)
    out_sp = [max((xl.shape[1 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1, 0)
              for i in range(n_sp)]
    batch = x.shape[0]
    m = batch * math.prod(out_sp)
    out = np.zeros((m, groups, og), acc)
    wl = w.astype(acc, copy=False)
    if m and cg:
        for tap in _taps(kernel):
            window = (slice(None),) + tuple(
                slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, dilations, out_sp, strides))
            patch = xl[window].reshape(m, groups, cg)
            wt = wl[(slice(None),) * 3 + tap]  # [G, O/G, C/G]
            if groups == 1:
                out[:, 0, :] += patch[:, 0, :] @ wt[0].T
            elif cg == 1:
                out += patch * wt[None, :, :, 0]
            else:
                out += np.matmul(patch.transpose(1, 0, 2), wt.transpose(0, 2, 1)).transpose(1, 0, 2)
    res = out.reshape(batch, *out_sp, groups * og)
    return np.ascontiguousarray(np.moveaxis(res, -1, 1))


def conv_backprop(x: np.ndarray, w: np.ndarray, strides: Sequence[int], dilations: Sequence[int],
                  pads_begin: Sequence[int], out_spatial: Sequence[int]) -> np.ndarray:
    """Grouped N-d transposed convolution. ``x`` is ``[N, C, *S]``, ``w`` is ``[G, C/G, O/G, *K]``;
    input position ``i`` and tap ``t`` land on output ``i * stride + t * dilation - pads_begin``.
    Returns ``[N, O, *out_spatial]`` in the accumulator dtype."""
    acc = accumulator_dtype(x.dtype)
    groups, cg, og = w.shape[:3]
    kernel = w.shape[3:]
    batch, spatial = x.shape[0], x.shape[2:]
    m = batch * math.prod(spatial)
    xg = np.ascontiguousarray(np.moveaxis(x, 1, -1).astype(acc, copy=False).reshape(m, groups, cg).transpose(1, 0, 2))
    full = [(s_in - 1) * s + (k - 1) * d + 1 for s_in, s, k, d in zip(spatial, strides, kernel, dilations)]
    lo = [min(0, p) for p in pads_begin]
    hi = [max(f, p + y) for f, p, y in zip(full, pads_begin, out_spatial)]
    buf = np.zeros((batch, *(h - low for h, low in zip(hi, lo)), groups * og), acc)
    wl = w.astype(acc, copy=False)
    if m and cg and all(s_in > 0 for s_in in spatial):
        for tap in _taps(kernel):
            wt = wl[(slice(None),) * 3 + tap]  # [G, C/G, O/G]
            if groups == 1:
                part = xg[0] @ wt[0]
            else:
                part = np.matmul(xg, wt).transpose(1, 0, 2)
            part = part.reshape(batch, *spatial, groups * og)
            window = (slice(None),) + tuple(
                slice(t * d - low, t * d - low + (n - 1) * s + 1, s)
                for t, d, low, n, s in zip(tap, dilations, lo, spatial, strides))
            buf[window] += part
    crop = (slice(None),) + tuple(slice(p - low, p - low + y) for p, low, y in zip(pads_begin, lo, out_spatial))
    return np.ascontiguousarray(np.moveaxis(buf[crop], -1, 1))


# -- shared attribute handling ----------------------------------------------------------

class _ConvBase(Node):
    """What the four convolutions share: attribute checks, element types, pads."""

    num_inputs = (2, 2)
    #: Filter dimensions before the spatial ones (2, or 3 with a groups axis).
    filter_lead: ClassVar[int] = 2

    def _element_type(self) -> Type:
        a, b = self.input_type(0), self.input_type(1)
        if not a.compatible(b):
            raise self.fail(f"element types of data ({a}) and filters ({b}) do not match")
        et = b if a.is_dynamic else a
        if et is Type.boolean or et is Type.string:
            raise self.fail(f"element type must be numeric, got {et}")
        return et

    def _num_spatial(self, extra: PartialShape | None = None) -> int | None:
        data, filt = self.input_shape(0), self.input_shape(1)
        if data.rank_is_static:
            return len(data) - 2
        if filt.rank_is_static:
            return len(filt) - self.filter_lead
        if extra is not None and extra.rank_is_static and len(extra):
            return len(extra)
        for key in ("strides", "dilations", "pads_begin", "pads_end"):
            if self.attrs[key]:
                return len(self.attrs[key])
        return None

    def _check_attrs(self, n: int) -> tuple[list[int], list[int], list[int], list[int]]:
        strides, dil = list(self.attrs["strides"]), list(self.attrs["dilations"]) or [1] * n
        pb, pe = list(self.attrs["pads_begin"]) or [0] * n, list(self.attrs["pads_end"]) or [0] * n
        if len(strides) != n:
            raise self.fail(f"strides {strides} must have one value per spatial dimension ({n})")
        if len(dil) != n:
            raise self.fail(f"dilations {dil} must have one value per spatial dimension ({n})")
        if len(pb) != n or len(pe) != n:
            raise self.fail(f"pads_begin {pb} and pads_end {pe} must have one value per spatial dimension ({n})")
        if any(s <= 0 for s in strides):
            raise self.fail(f"strides must be positive, got {strides}")
        if any(d <= 0 for d in dil):
            raise self.fail(f"dilations must be positive, got {dil}")
        data, filt = self.input_shape(0), self.input_shape(1)
        if data.rank_is_static and len(data) not in (3, 4, 5):
            raise self.fail(f"data must be a 3D, 4D or 5D tensor, got {data}")
        if data.rank_is_static and filt.rank_is_static and len(filt) != len(data) + self.filter_lead - 2:
            raise self.fail(f"ranks of data {data} and filters {filt} do not match")
        return strides, dil, pb, pe

    def _store_pads(self, pb: Sequence[int], pe: Sequence[int]) -> None:
        self.attrs["pads_begin"] = [int(p) for p in pb]
        self.attrs["pads_end"] = [int(p) for p in pe]


def _dilated(k: Dimension, d: int) -> Dimension:
    return dim_sub(k, 1) * d + 1


def _spatial(shape: PartialShape, n: int) -> list[Dimension]:
    return list(shape)[-n:] if shape.rank_is_static else [Dimension() for _ in range(n)]


def _channel_groups(node: Node, groups: Dimension, channels: Dimension, per_group: Dimension) -> Dimension:
    if per_group.is_static and per_group.get_length() > 0:
        quotient = dim_div_exact(channels, per_group.get_length())
        if quotient is None or not groups.compatible(quotient):
            raise node.fail(f"data channels ({channels}) do not split into {groups} groups of {per_group}")
        return groups.merge(quotient)
    return groups


# -- forward convolutions ---------------------------------------------------------------

class _ConvForward(_ConvBase):

    def _out_channels(self, data: PartialShape, filt: PartialShape) -> Dimension:
        raise NotImplementedError

    def infer(self) -> list[tuple[Type, PartialShape]]:
        et = self._element_type()
        mode = normalize_auto_pad(self)
        n = self._num_spatial()
        if n is None:
            return [(et, PartialShape.dynamic())]
        strides, dil, pb, pe = self._check_attrs(n)
        data, filt = self.input_shape(0), self.input_shape(1)
        out_ch = self._out_channels(data, filt) if filt.rank_is_static else Dimension()
        xs, ks = _spatial(data, n), _spatial(filt, n)
        if mode in ("same_upper", "same_lower"):
            if data.rank_is_static and filt.rank_is_static:
                pads = [same_padding(x.get_length(), k.get_length(), s, d, mode == "same_upper")
                        if x.is_static and k.is_static else (0, 0) for x, k, s, d in zip(xs, ks, strides, dil)]
                self._store_pads([p[0] for p in pads], [p[1] for p in pads])
            spatial = [dim_ceil_div(x, s) for x, s in zip(xs, strides)]
        else:
            if mode == "valid":
                pb, pe = [0] * n, [0] * n
                self._store_pads(pb, pe)
            spatial = []
            for i in range(n):
                padded = xs[i] + (pb[i] + pe[i]) if pb[i] + pe[i] >= 0 else dim_sub(xs[i], -(pb[i] + pe[i]))
                eff = _dilated(ks[i], dil[i])
                if padded.is_static and eff.is_static and eff.get_length() > padded.get_length():
                    raise self.fail(f"the dilated kernel ({eff}) is larger than the padded data ({padded}) "
                                    f"on spatial axis {i}")
                spatial.append(dim_floor_div(dim_sub(padded, eff), strides[i]) + 1)
        batch = data[0] if data.rank_is_static else Dimension()
        return [(et, PartialShape([batch, out_ch, *spatial]))]

    def resolved_pads(self, data_shape: Sequence[int], kernel: Sequence[int]) -> tuple[list[int], list[int]]:
        """``(pads_begin, pads_end)`` for a concrete data shape and kernel size."""
        mode = normalize_auto_pad(self)
        n = len(kernel)
        if mode == "valid":
            return [0] * n, [0] * n
        if mode == "explicit":
            return list(self.attrs["pads_begin"]) or [0] * n, list(self.attrs["pads_end"]) or [0] * n
        dil = list(self.attrs["dilations"]) or [1] * n
        pads = [same_padding(x, k, s, d, mode == "same_upper")
                for x, k, s, d in zip(data_shape[2:], kernel, self.attrs["strides"], dil)]
        return [p[0] for p in pads], [p[1] for p in pads]

    def _grouped_filters(self, w: np.ndarray) -> np.ndarray:
        return w

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, w = inputs
        wg = self._grouped_filters(w)
        n = x.ndim - 2
        pb, pe = self.resolved_pads(x.shape, wg.shape[3:])
        dil = list(self.attrs["dilations"]) or [1] * n
        out = conv_forward(x, wg, self.attrs["strides"], dil, pb, pe)
        return [out.astype(self.output(0).element_type.dtype, copy=False)]


_STRIDES = Attr("strides", "ints")
_DILATIONS = Attr("dilations", "ints", [])
_PADS_BEGIN = Attr("pads_begin", "ints", [])
_PADS_END = Attr("pads_end", "ints", [])
_AUTO_PAD = Attr("auto_pad", "str", "explicit", ("explicit", "same_upper", "same_lower", "valid", "notset"))
_OUTPUT_PADDING = Attr("output_padding", "ints", [])


@register_op
class Convolution(_ConvForward):
    """OpenVINO Convolution-1: ``[N, C, *S] x [O, C, *K] -> [N, O, *S_out]``."""

    type_name = "Convolution"
    version = "opset1"
    attributes = (_STRIDES, _DILATIONS, _PADS_BEGIN, _PADS_END, _AUTO_PAD)

    def _out_channels(self, data: PartialShape, filt: PartialShape) -> Dimension:
        if data.rank_is_static and not data[1].compatible(filt[1]):
            raise self.fail(f"data channels ({data[1]}) do not match filter input channels ({filt[1]})")
        return filt[0]

    def _grouped_filters(self, w: np.ndarray) -> np.ndarray:
        return w[None]


@register_op
class GroupConvolution(_ConvForward):
    """OpenVINO GroupConvolution-1: ``[N, G*C, *S] x [G, O, C, *K] -> [N, G*O, *S_out]``."""

    type_name = "GroupConvolution"
    version = "opset1"
    attributes = (_STRIDES, _PADS_BEGIN, _PADS_END, _DILATIONS, _AUTO_PAD)
    filter_lead = 3

    def _out_channels(self, data: PartialShape, filt: PartialShape) -> Dimension:
        groups = filt[0]
        if data.rank_is_static:
            groups = _channel_groups(self, groups, data[1], filt[2])
        return groups * filt[1]


# -- backward (transposed) convolutions --------------------------------------------------

class _ConvBackprop(_ConvBase):
    num_inputs = (2, 3)

    def _out_channels(self, data: PartialShape, filt: PartialShape) -> Dimension:
        raise NotImplementedError

    def _out_spatial_input(self) -> PartialShape | None:
        """The spatial output shape given as input 2, as far as it is known (None: no input)."""
        if self.get_input_size() < 3:
            return None
        t, shape = self.input_type(2), self.input_shape(2)
        if not (t.is_integral_number or t.is_dynamic):
            raise self.fail(f"output_shape must be an integer tensor, got {t}")
        if shape.rank_is_static and len(shape) != 1:
            raise self.fail(f"output_shape must be 1D, got shape {shape}")
        value = self.input_value(2)
        if value is not None:
            return PartialShape([int(v) for v in np.asarray(value).reshape(-1)])
        if shape.is_static:
            return PartialShape.dynamic(shape[0].get_length())
        return PartialShape.dynamic()

    def infer(self) -> list[tuple[Type, PartialShape]]:
        et = self._element_type()
        mode = normalize_auto_pad(self)
        given = self._out_spatial_input()
        n = self._num_spatial(given)
        if n is None:
            return [(et, PartialShape.dynamic())]
        if given is not None and given.rank_is_static and len(given) != n:
            raise self.fail(f"output_shape has {len(given)} values but there are {n} spatial dimensions")
        strides, dil, pb, pe = self._check_attrs(n)
        out_pad = list(self.attrs["output_padding"]) or [0] * n
        if len(out_pad) != n:
            raise self.fail(f"output_padding {out_pad} must have one value per spatial dimension ({n})")
        data, filt = self.input_shape(0), self.input_shape(1)
        out_ch = self._out_channels(data, filt) if filt.rank_is_static else Dimension()
        xs, ks = _spatial(data, n), _spatial(filt, n)
        if mode in ("same_upper", "same_lower", "valid"):
            pb, pe = [0] * n, [0] * n
            if given is not None and mode != "valid" and data.rank_is_static and filt.rank_is_static:
                ys = _spatial(given, n)
                for i in range(n):
                    if xs[i].is_static and ks[i].is_static and ys[i].is_static:
                        pb[i], pe[i] = _backprop_same_pads(
                            xs[i].get_length(), ks[i].get_length(), strides[i], dil[i], ys[i].get_length(),
                            out_pad[i], mode == "same_upper")
            self._store_pads(pb, pe)
        if given is not None:
            spatial = _spatial(given, n)
        else:
            spatial = []
            for i in range(n):
                full = dim_sub(xs[i], 1) * strides[i] + _dilated(ks[i], dil[i])
                delta = out_pad[i] - pb[i] - pe[i]
                if full.is_static and full.get_length() + delta < 0:
                    raise self.fail(f"pads make the output negative on spatial axis {i}")
                spatial.append(full + delta if delta >= 0 else dim_sub(full, -delta))
        batch = data[0] if data.rank_is_static else Dimension()
        return [(et, PartialShape([batch, out_ch, *spatial]))]

    def _grouped_filters(self, w: np.ndarray) -> np.ndarray:
        return w

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, w = inputs[0], inputs[1]
        wg = self._grouped_filters(w)
        n = x.ndim - 2
        kernel = wg.shape[3:]
        strides = list(self.attrs["strides"])
        dil = list(self.attrs["dilations"]) or [1] * n
        out_pad = list(self.attrs["output_padding"]) or [0] * n
        mode = normalize_auto_pad(self)
        full = [(x.shape[2 + i] - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 for i in range(n)]
        if len(inputs) > 2:
            ys = [int(v) for v in np.asarray(inputs[2]).reshape(-1)]
            if mode in ("same_upper", "same_lower"):
                pb = [_backprop_same_pads(x.shape[2 + i], kernel[i], strides[i], dil[i], ys[i], out_pad[i],
                                          mode == "same_upper")[0] for i in range(n)]
            elif mode == "valid":
                pb = [0] * n
            else:
                pb = list(self.attrs["pads_begin"]) or [0] * n
        else:
            if mode == "explicit":
                pb, pe = list(self.attrs["pads_begin"]) or [0] * n, list(self.attrs["pads_end"]) or [0] * n
            else:
                pb, pe = [0] * n, [0] * n
            ys = [full[i] - pb[i] - pe[i] + out_pad[i] for i in range(n)]
        out = conv_backprop(x, wg, strides, dil, pb, ys)
        return [out.astype(self.output(0).element_type.dtype, copy=False)]


def _backprop_same_pads(x: int, k: int, s: int, d: int, y: int, out_pad: int, upper: bool) -> tuple[int, int]:
    total = max((x - 1) * s + (k - 1) * d + 1 - y + out_pad, 0)
    small = total // 2
    return (total - small, small) if upper else (small, total - small)


@register_op
class ConvolutionBackpropData(_ConvBackprop):
    """OpenVINO ConvolutionBackpropData-1 (transposed convolution): ``[N, C, *S] x [C, O, *K]``,
    with an optional third input giving the spatial output shape."""

    type_name = "ConvolutionBackpropData"
    version = "opset1"
    attributes = (_STRIDES, _DILATIONS, _PADS_BEGIN, _PADS_END, _AUTO_PAD, _OUTPUT_PADDING)

    def _out_channels(self, data: PartialShape, filt: PartialShape) -> Dimension:
        if data.rank_is_static and not data[1].compatible(filt[0]):
            raise self.fail(f"data channels ({data[1]}) do not match filter input channels ({filt[0]})")
        return filt[1]

    def _grouped_filters(self, w: np.ndarray) -> np.ndarray:
        return w[None]


@register_op
class GroupConvolutionBackpropData(_ConvBackprop):
    """OpenVINO GroupConvolutionBackpropData-1: ``[N, G*C, *S] x [G, C, O, *K] -> [N, G*O, *S_out]``."""

    type_name = "GroupConvolutionBackpropData"
    version = "opset1"
    attributes = (_STRIDES, _PADS_BEGIN, _PADS_END, _DILATIONS, _AUTO_PAD, _OUTPUT_PADDING)
    filter_lead = 3

    def _out_channels(self, data: PartialShape, filt: PartialShape) -> Dimension:
        groups = filt[0]
        if data.rank_is_static:
            groups = _channel_groups(self, groups, data[1], filt[1])
        return groups * filt[2]


# -- builders (openvino.opset16 signatures) -----------------------------------------------

def _conv_attrs(strides: Sequence[int], pads_begin: Sequence[int], pads_end: Sequence[int],
                dilations: Sequence[int], auto_pad: str) -> dict[str, Any]:
    return {"strides": strides, "pads_begin": pads_begin, "pads_end": pads_end, "dilations": dilations,
            "auto_pad": auto_pad.lower()}


@builder
def convolution(data: Any, filters: Any, strides: list[int], pads_begin: list[int], pads_end: list[int],
                dilations: list[int], auto_pad: str = "EXPLICIT", name: str | None = None) -> Node:
    """A Convolution node: filters ``[O, C, *K]`` over data ``[N, C, *S]``."""
    return Convolution([data, filters], _conv_attrs(strides, pads_begin, pads_end, dilations, auto_pad), name)


@builder
def group_convolution(data: Any, filters: Any, strides: list[int], pads_begin: list[int], pads_end: list[int],
                      dilations: list[int], auto_pad: str = "EXPLICIT", name: str | None = None) -> Node:
    """A GroupConvolution node: filters ``[G, O/G, C/G, *K]`` over data ``[N, C, *S]``."""
    return GroupConvolution([data, filters], _conv_attrs(strides, pads_begin, pads_end, dilations, auto_pad),
                            name)


def _backprop_attrs(strides: Sequence[int], pads_begin: Sequence[int] | None, pads_end: Sequence[int] | None,
                    dilations: Sequence[int] | None, auto_pad: str | None,
                    output_padding: Sequence[int] | None) -> dict[str, Any]:
    n = len(strides)
    return {"strides": strides,
            "pads_begin": [0] * n if pads_begin is None else pads_begin,
            "pads_end": [0] * n if pads_end is None else pads_end,
            "dilations": [1] * n if dilations is None else dilations,
            "auto_pad": (auto_pad or "explicit").lower(),
            "output_padding": [0] * n if output_padding is None else output_padding}


@builder
def convolution_backprop_data(data: Any, filters: Any, strides: list[int], output_shape: Any = None,
                              pads_begin: list[int] | None = None, pads_end: list[int] | None = None,
                              dilations: list[int] | None = None, auto_pad: str | None = None,
                              output_padding: list[int] | None = None, name: str | None = None) -> Node:
    """A ConvolutionBackpropData (transposed convolution) node; filters are ``[C, O, *K]``."""
    inputs = [data, filters] if output_shape is None else [data, filters, output_shape]
    return ConvolutionBackpropData(
        inputs, _backprop_attrs(strides, pads_begin, pads_end, dilations, auto_pad, output_padding), name)


@builder
def group_convolution_backprop_data(data: Any, filters: Any, strides: list[int], output_shape: Any = None,
                                    pads_begin: list[int] | None = None, pads_end: list[int] | None = None,
                                    dilations: list[int] | None = None, auto_pad: str = "EXPLICIT",
                                    output_padding: list[int] | None = None, name: str | None = None) -> Node:
    """A GroupConvolutionBackpropData node; filters are ``[G, C/G, O/G, *K]``.

    As in OpenVINO's builder, explicit pads are used only when ``output_shape`` is not given."""
    inputs = [data, filters] if output_shape is None else [data, filters, output_shape]
    if output_shape is not None:
        pads_begin = pads_end = None
    return GroupConvolutionBackpropData(
        inputs, _backprop_attrs(strides, pads_begin, pads_end, dilations, auto_pad, output_padding), name)
