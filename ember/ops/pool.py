"""Pooling: MaxPool (v1, v8, v14), AvgPool (v1, v14, v16), AdaptiveAvgPool and AdaptiveMaxPool (v8).

One shape rule serves every windowed pool (``_PoolBase.plan``): pads resolved from
``auto_pad``, then ``floor``/``ceil`` rounding of the window count and, for ``ceil_torch``
(v14 and later), no window that starts in the end padding. The numpy kernels loop over
kernel taps, each tap one strided slice of the padded input.
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
from ember.graph.types import Type, as_type
from ember.ops._util import dim_ceil_div, dim_floor_div, dim_sub, normalize_axis, same_padding
from ember.ops.conv import accumulator_dtype, normalize_auto_pad, pad_spatial

ROUNDING_TYPES = ("floor", "ceil", "ceil_torch")


class _PoolBase(Node):
    """Windowed pooling over the axes after N and C."""

    num_inputs = (1, 1)
    #: Whether ``rounding_type="ceil_torch"`` exists in this version (v14 and later).
    ceil_torch: ClassVar[bool] = False

    def _dilations(self, n: int) -> list[int]:
        return list(self.attrs.get("dilations") or []) or [1] * n

    def _rounding(self) -> str:
        mode = str(self.attrs["rounding_type"]).lower()
        if mode not in ROUNDING_TYPES or (mode == "ceil_torch" and not self.ceil_torch):
            allowed = ROUNDING_TYPES if self.ceil_torch else ROUNDING_TYPES[:2]
            raise self.fail(f"rounding_type must be one of {', '.join(allowed)} in {self.version}, "
                            f"got '{self.attrs['rounding_type']}'")
        return mode

    def _check_padding(self, kernel: int, pb: int, pe: int, axis: int) -> None:
        """A version-specific check of pads against the dilated kernel (AvgPool has one)."""

    def plan(self, data: PartialShape) -> tuple[list[int], list[int], PartialShape]:
        """``(pads_begin, pads_end, output shape)`` for input ``data``, as OpenVINO infers them."""
        kernel = list(self.attrs["kernel"])
        n = len(kernel)
        strides = list(self.attrs["strides"])
        dil = self._dilations(n)
        pb, pe = list(self.attrs["pads_begin"]) or [0] * n, list(self.attrs["pads_end"]) or [0] * n
        if len(pb) != n or len(pe) != n:
            raise self.fail(f"pads_begin {pb} and pads_end {pe} must have one value per kernel dimension ({n})")
        if len(strides) != n:
            raise self.fail(f"strides {strides} must have one value per kernel dimension ({n})")
        if len(dil) != n:
            raise self.fail(f"dilations {dil} must have one value per kernel dimension ({n})")
        if any(s <= 0 for s in strides):
            raise self.fail(f"strides must be positive, got {strides}")
        if any(d <= 0 for d in dil):
            raise self.fail(f"dilations must be positive, got {dil}")
        if any(k <= 0 for k in kernel):
            raise self.fail(f"kernel sizes must be positive, got {kernel}")
        if data.rank_is_static and len(data) not in (3, 4, 5):
            raise self.fail(f"data must be a 3D, 4D or 5D tensor, got {data}")
        if data.rank_is_static and len(data) - 2 != n:
            raise self.fail(f"kernel {kernel} does not fit data of rank {len(data)}")
        mode = normalize_auto_pad(self)
        rounding = self._rounding()
        if not data.rank_is_static:
            if mode == "valid":
                pb, pe = [0] * n, [0] * n
            return pb, pe, PartialShape.dynamic(n + 2)
        xs = list(data)[2:]
        if mode in ("same_upper", "same_lower"):
            pads = [same_padding(x.get_length(), k, s, d, mode == "same_upper") if x.is_static else (0, 0)
                    for x, k, s, d in zip(xs, kernel, strides, dil)]
            pb, pe = [p[0] for p in pads], [p[1] for p in pads]
        elif mode == "valid":
            pb, pe = [0] * n, [0] * n
        for i, d in enumerate(data[:2]):
            if d.is_static and d.get_length() == 0:
                raise self.fail(f"{'batch size' if i == 0 else 'channel count'} is zero")
        spatial = []
        for i, x in enumerate(xs):
            if x.is_dynamic and mode in ("same_upper", "same_lower"):
                spatial.append(Dimension())
                continue
            eff = (kernel[i] - 1) * dil[i] + 1
            padded = x + (pb[i] + pe[i]) if pb[i] + pe[i] >= 0 else dim_sub(x, -(pb[i] + pe[i]))
            if x.is_static:
                if eff > padded.get_length():
                    raise self.fail(f"the dilated kernel ({eff}) is larger than the padded data "
                                    f"({padded.get_length()}) on spatial axis {i}")
                self._check_padding(eff, pb[i], pe[i], i)
            rest = dim_sub(padded, eff)
            out = (dim_floor_div(rest, strides[i]) if rounding == "floor" else dim_ceil_div(rest, strides[i])) + 1
            if rounding == "ceil_torch" and x.is_static and (out.get_length() - 1) * strides[i] >= x.get_length() + pb[i]:
                out = Dimension(out.get_length() - 1)
            spatial.append(out)
        return pb, pe, PartialShape([data[0], data[1], *spatial])

    def _infer_shape(self) -> PartialShape:
        pb, pe, shape = self.plan(self.input_shape(0))
        if normalize_auto_pad(self) != "explicit":
            self.attrs["pads_begin"], self.attrs["pads_end"] = pb, pe
        return shape

    def _geometry(self, x: np.ndarray) -> tuple[list[int], list[int], list[int], list[int], list[int], list[int]]:
        """kernel, strides, dilations, pads_begin, pads_end and output spatial size for input ``x``."""
        pb, pe, shape = self.plan(PartialShape(x.shape))
        n = x.ndim - 2
        out = [d.get_length() for d in list(shape)[2:]]
        return list(self.attrs["kernel"]), list(self.attrs["strides"]), self._dilations(n), pb, pe, out


def _windows(kernel: Sequence[int], strides: Sequence[int], dil: Sequence[int],
             out: Sequence[int]) -> itertools.product:
    """For every kernel tap: (flat tap number, tap coordinates, slice tuple over the spatial axes)."""
    for number, tap in enumerate(itertools.product(*(range(k) for k in kernel))):
        window = tuple(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, dil, out, strides))
        yield number, tap, window


def _padded_input(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dil: Sequence[int],
                  pb: Sequence[int], pe: Sequence[int], out: Sequence[int], value: Any) -> np.ndarray:
    """``x`` padded so that every window of every output position lies inside it."""
    n = x.ndim - 2
    need = [(o - 1) * s + (k - 1) * d + 1 if o else 0 for o, s, k, d in zip(out, strides, kernel, dil)]
    extra = [max(0, need[i] - (x.shape[2 + i] + pb[i] + pe[i])) for i in range(n)]
    return pad_spatial(x, pb, [pe[i] + extra[i] for i in range(n)], value, first_axis=2)


def _lowest(dtype: np.dtype) -> Any:
    if dtype.kind == "b":
        return False
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return np.asarray(-np.inf).astype(dtype) if dtype.kind != "f" else np.finfo(dtype).min


def max_pool_kernel(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dil: Sequence[int],
                    pb: Sequence[int], pe: Sequence[int], out: Sequence[int],
                    axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling; returns values and int64 indices into ``x`` flattened from ``axis`` on.

    As OpenVINO's kernels do, each window starts from the type's lowest finite value and index
    0 of its channel, and takes a real (non-padding) element only when it is greater: so NaN
    never wins, and a window of only ``-inf``, NaN or padding gives the lowest finite value.
    """
    batch, chans = x.shape[:2]
    spatial = x.shape[2:]
    n = len(kernel)
    low = _lowest(x.dtype)
    xp = _padded_input(x, kernel, strides, dil, pb, pe, out, low)
    best = np.full((batch, chans, *out), low, dtype=x.dtype)
    best_tap = np.full((batch, chans, *out), -1, dtype=np.int64)
    lead = (slice(None), slice(None))
    for number, tap, window in _windows(kernel, strides, dil, out):
        v = xp[lead + window]
        take = _real_positions(spatial, tap, strides, dil, pb, out) & (v > best)
        best = np.where(take, v, best)
        best_tap = np.where(take, number, best_tap)
    taps = np.array(list(itertools.product(*(range(k) for k in kernel))), dtype=np.int64).reshape(-1, n)
    safe = np.maximum(best_tap, 0)
    flat = np.zeros(best.shape, dtype=np.int64)
    for i in range(n):
        start = (np.arange(out[i]) * strides[i] - pb[i]).reshape((-1,) + (1,) * (n - 1 - i))
        coord = np.where(best_tap >= 0, start + taps[safe, i] * dil[i], 0)
        flat = flat * spatial[i] + coord
    chan_base = (np.arange(batch)[:, None] * chans + np.arange(chans)[None, :]) * math.prod(spatial)
    flat = flat + chan_base.reshape(batch, chans, *([1] * n))
    if axis:
        flat = flat % math.prod(x.shape[axis:])
    return best, flat


def _real_positions(spatial: Sequence[int], tap: Sequence[int], strides: Sequence[int], dil: Sequence[int],
                    pb: Sequence[int], out: Sequence[int]) -> np.ndarray:
    """Broadcastable mask: whether tap ``tap`` of each output window reads real data."""
    mask = np.ones((1, 1) + (1,) * len(out), dtype=bool)
    for i, t in enumerate(tap):
        pos = np.arange(out[i]) * strides[i] + t * dil[i] - pb[i]
        ok = (pos >= 0) & (pos < spatial[i])
        shape = [1, 1] + [1] * len(out)
        shape[2 + i] = out[i]
        mask = mask & ok.reshape(shape)
    return mask


def _real_counts(size: int, k: int, s: int, d: int, pb: int, o: int) -> np.ndarray:
    pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - pb
    return ((pos >= 0) & (pos < size)).sum(axis=1)


def avg_pool_kernel(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dil: Sequence[int],
                    pb: Sequence[int], pe: Sequence[int], out: Sequence[int], exclude_pad: bool) -> np.ndarray:
    """Average pooling in the accumulator dtype (f64 for integers).

    The divisor, as OpenVINO's CPU plugin computes it: with ``exclude_pad``, or when there is
    no padding at all, the number of real elements in the window; otherwise the full kernel
    size, even for a window that ``ceil`` rounding pushes past the padding. A window with no
    real element to count gives 0 when there is padding, else NaN (0/0).
    """
    acc = accumulator_dtype(x.dtype) if x.dtype.kind not in "iub" else np.dtype(np.float64)
    xp = _padded_input(x.astype(acc, copy=False), kernel, strides, dil, pb, pe, out, 0)
    total = np.zeros((*x.shape[:2], *out), acc)
    lead = (slice(None), slice(None))
    for _number, _tap, window in _windows(kernel, strides, dil, out):
        total += xp[lead + window]
    if not exclude_pad and (any(pb) or any(pe)):
        return total / acc.type(math.prod(kernel))
    count = np.ones((1, 1) + (1,) * len(out), acc)
    for i in range(len(out)):
        c = _real_counts(x.shape[2 + i], kernel[i], strides[i], dil[i], pb[i], out[i])
        shape = [1, 1] + [1] * len(out)
        shape[2 + i] = out[i]
        count = count * c.reshape(shape).astype(acc)
    with np.errstate(invalid="ignore", divide="ignore"):
        res = total / count
    if any(pb) or any(pe):
        res = np.where(count > 0, res, 0)
    return res.astype(acc, copy=False)


# -- MaxPool -------------------------------------------------------------------------------

_STRIDES = Attr("strides", "ints")
_DILATIONS = Attr("dilations", "ints", [])
_PADS_BEGIN = Attr("pads_begin", "ints", [])
_PADS_END = Attr("pads_end", "ints", [])
_KERNEL = Attr("kernel", "ints")
_ROUNDING = Attr("rounding_type", "str", "floor", ROUNDING_TYPES)
_AUTO_PAD = Attr("auto_pad", "str", "explicit", ("explicit", "same_upper", "same_lower", "valid", "notset"))
_INDEX_TYPE = Attr("index_element_type", "type", Type.i64)
_AXIS = Attr("axis", "int", 0)


@register_op
class MaxPool1(_PoolBase):
    """OpenVINO MaxPool-1: the largest value in each window; padding never wins."""

    type_name = "MaxPool"
    version = "opset1"
    attributes = (_STRIDES, _PADS_BEGIN, _PADS_END, _KERNEL, _ROUNDING, _AUTO_PAD)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.input_type(0), self._infer_shape())]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        values, _ = max_pool_kernel(inputs[0], *self._geometry(inputs[0]))
        return [values]


@register_op
class MaxPool8(_PoolBase):
    """OpenVINO MaxPool-8: MaxPool-1 plus ``dilations`` and a second output with the indices of
    the selected elements, flattened from axis ``axis`` on."""

    type_name = "MaxPool"
    version = "opset8"
    attributes = (_STRIDES, _DILATIONS, _PADS_BEGIN, _PADS_END, _KERNEL, _ROUNDING, _AUTO_PAD, _INDEX_TYPE, _AXIS)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        it = as_type(self.attrs["index_element_type"])
        if it not in (Type.i32, Type.i64):
            raise self.fail(f"index_element_type must be i32 or i64, got {it}")
        shape = self._infer_shape()
        data = self.input_shape(0)
        if data.rank_is_static:
            self.attrs["axis"] = normalize_axis(self.attrs["axis"], len(data),
                                                f"{self.type_name} '{self.friendly_name}'")
        return [(self.input_type(0), shape), (it, shape)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        axis = normalize_axis(self.attrs["axis"], x.ndim)
        values, indices = max_pool_kernel(x, *self._geometry(x), axis=axis)
        return [values, indices.astype(as_type(self.attrs["index_element_type"]).dtype)]


@register_op
class MaxPool14(MaxPool8):
    """OpenVINO MaxPool-14: MaxPool-8 plus ``rounding_type="ceil_torch"``."""

    version = "opset14"
    ceil_torch = True


# -- AvgPool -------------------------------------------------------------------------------

_EXCLUDE_PAD = Attr("exclude-pad", "bool")


@register_op
class AvgPool1(_PoolBase):
    """OpenVINO AvgPool-1: the mean of each window; ``exclude-pad`` leaves padding out of the
    divisor."""

    type_name = "AvgPool"
    version = "opset1"
    attributes = (_KERNEL, _STRIDES, _PADS_BEGIN, _PADS_END, _EXCLUDE_PAD, _AUTO_PAD, _ROUNDING)

    def _check_padding(self, kernel: int, pb: int, pe: int, axis: int) -> None:
        if self.attrs["exclude-pad"] and not (kernel > pb and kernel > pe):
            raise self.fail(f"the kernel ({kernel}) would lie wholly in the padding on spatial axis {axis} "
                            f"(pads {pb}, {pe}) with exclude-pad")

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = self.input_type(0)
        if t is Type.boolean or t is Type.string:
            raise self.fail(f"needs a numeric input, got {t}")
        return [(t, self._infer_shape())]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        res = avg_pool_kernel(x, *self._geometry(x), exclude_pad=bool(self.attrs["exclude-pad"]))
        if x.dtype.kind in "iu":
            res = np.rint(res)
        return [res.astype(x.dtype)]


@register_op
class AvgPool14(AvgPool1):
    """OpenVINO AvgPool-14: AvgPool-1 plus ``rounding_type="ceil_torch"``."""

    version = "opset14"
    ceil_torch = True


@register_op
class AvgPool16(AvgPool14):
    """OpenVINO AvgPool-16: AvgPool-14 plus ``dilations`` (empty means all ones)."""

    version = "opset16"
    attributes = (_KERNEL, _STRIDES, _PADS_BEGIN, _PADS_END, _EXCLUDE_PAD, _AUTO_PAD, _ROUNDING, _DILATIONS)


# -- adaptive pooling ------------------------------------------------------------------------

def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


class _AdaptiveBase(Node):
    num_inputs = (2, 2)

    def _infer_shape(self) -> PartialShape:
        data, sizes = self.input_shape(0), self.input_shape(1)
        t = self.input_type(1)
        if not (t.is_integral_number or t.is_dynamic):
            raise self.fail(f"output_shape must be an integer tensor, got {t}")
        if sizes.rank_is_static and len(sizes) != 1:
            raise self.fail(f"output_shape must be 1D, got shape {sizes}")
        if not data.rank_is_static:
            return PartialShape.dynamic()
        if len(data) not in (3, 4, 5):
            raise self.fail(f"data must be a 3D, 4D or 5D tensor, got {data}")
        n = len(data) - 2
        if sizes.rank_is_static and not sizes[0].compatible(n):
            raise self.fail(f"output_shape has {sizes[0]} values but data has {n} spatial dimensions")
        value = self.input_value(1)
        if value is None:
            return PartialShape([data[0], data[1], *[Dimension() for _ in range(n)]])
        vals = [int(v) for v in np.asarray(value).reshape(-1)]
        if len(vals) != n:
            raise self.fail(f"output_shape {vals} does not have one value per spatial dimension ({n})")
        if any(v < 0 for v in vals):
            raise self.fail(f"output_shape {vals} has negative values")
        return PartialShape([data[0], data[1], *vals])


@register_op
class AdaptiveAvgPool(_AdaptiveBase):
    """OpenVINO AdaptiveAvgPool-8: bin ``i`` of ``O`` over ``L`` covers
    ``[floor(i*L/O), ceil((i+1)*L/O))``."""

    type_name = "AdaptiveAvgPool"
    version = "opset8"

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.input_type(0), self._infer_shape())]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, sizes = inputs
        out_sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
        acc = accumulator_dtype(x.dtype) if x.dtype.kind == "f" else np.dtype(np.float64)
        res = x.astype(acc, copy=False)
        for i, o in enumerate(out_sizes):
            size = x.shape[2 + i]
            mat = np.zeros((o, size), acc)  # each row averages one bin
            for j, (lo, hi) in enumerate(_adaptive_bins(size, o)):
                mat[j, lo:hi] = 1.0 / (hi - lo)
            res = np.moveaxis(np.tensordot(res, mat, axes=([2 + i], [1])), -1, 2 + i)
        return [np.ascontiguousarray(res).astype(x.dtype, copy=False)]


@register_op
class AdaptiveMaxPool(_AdaptiveBase):
    """OpenVINO AdaptiveMaxPool-8: the max of each adaptive bin and its index, flattened over the
    spatial axes of its channel."""

    type_name = "AdaptiveMaxPool"
    version = "opset8"
    attributes = (_INDEX_TYPE,)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        it = as_type(self.attrs["index_element_type"])
        if it not in (Type.i32, Type.i64):
            raise self.fail(f"index_element_type must be i32 or i64, got {it}")
        shape = self._infer_shape()
        return [(self.input_type(0), shape), (it, shape)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, sizes = inputs
        out_sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
        spatial = x.shape[2:]
        lead = x.shape[:2]
        values = np.empty((*lead, *out_sizes), x.dtype)
        indices = np.empty((*lead, *out_sizes), np.int64)
        bins = [_adaptive_bins(s, o) for s, o in zip(spatial, out_sizes)]
        for pos in itertools.product(*(range(o) for o in out_sizes)):
            box = [bins[i][p] for i, p in enumerate(pos)]
            region = x[(slice(None), slice(None)) + tuple(slice(lo, hi) for lo, hi in box)]
            flat = region.reshape(*lead, -1)
            arg = np.argmax(flat, axis=-1) if flat.shape[-1] else np.zeros(lead, np.int64)
            local = np.unravel_index(arg, region.shape[2:])
            index = np.zeros(lead, np.int64)
            for i, (lo, _hi) in enumerate(box):
                index = index * spatial[i] + local[i] + lo
            values[(slice(None), slice(None)) + pos] = np.take_along_axis(flat, arg[..., None], -1)[..., 0]
            indices[(slice(None), slice(None)) + pos] = index
        return [values, indices.astype(as_type(self.attrs["index_element_type"]).dtype)]


# -- builders (openvino.opset16 signatures) ---------------------------------------------------

@builder
def max_pool(data: Any, strides: list[int], dilations: list[int], pads_begin: list[int], pads_end: list[int],
             kernel_shape: list[int], rounding_type: str = "floor", auto_pad: str | None = None,
             index_element_type: Any = "i64", axis: int = 0, name: str | None = None) -> Node:
    """A MaxPool-14 node with two outputs: values and indices."""
    return MaxPool14([data], {
        "strides": strides, "dilations": dilations, "pads_begin": pads_begin, "pads_end": pads_end,
        "kernel": kernel_shape, "rounding_type": rounding_type.lower(), "auto_pad": (auto_pad or "explicit").lower(),
        "index_element_type": index_element_type, "axis": axis}, name)


@builder
def avg_pool(data_batch: Any, strides: list[int], pads_begin: list[int], pads_end: list[int],
             kernel_shape: list[int], exclude_pad: bool, rounding_type: str = "floor", auto_pad: str | None = None,
             dilations: list[int] | None = None, name: str | None = None) -> Node:
    """An AvgPool-16 node (``dilations=None`` means no dilation)."""
    return AvgPool16([data_batch], {
        "kernel": kernel_shape, "strides": strides, "pads_begin": pads_begin, "pads_end": pads_end,
        "exclude-pad": exclude_pad, "auto_pad": (auto_pad or "explicit").lower(),
        "rounding_type": rounding_type.lower(), "dilations": dilations or []}, name)


@builder
def adaptive_avg_pool(data: Any, output_shape: Any, name: str | None = None) -> Node:
    """An AdaptiveAvgPool-8 node; ``output_shape`` holds the spatial output sizes."""
    return AdaptiveAvgPool([data, output_shape], None, name)


@builder
def adaptive_max_pool(data: Any, output_shape: Any, index_element_type: str = "i64",
                      name: str | None = None) -> Node:
    """An AdaptiveMaxPool-8 node with two outputs: values and indices."""
    return AdaptiveMaxPool([data, output_shape], {"index_element_type": index_element_type}, name)
