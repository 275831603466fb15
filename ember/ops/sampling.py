"""Ops that sample an image at computed positions: GridSample-9, ROIAlign-9 and
DeformableConvolution-8 (bilinear sampling with zero padding outside the image)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type
from ember.ops._util import same_padding


def _dims(shape: PartialShape, n: int) -> list[Dimension]:
    return list(shape) if shape.rank_is_static and len(shape) == n else [Dimension()] * n


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> list[np.ndarray]:
    def near(x: np.ndarray) -> np.ndarray:
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: np.ndarray) -> np.ndarray:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


@register_op
class GridSample(Node):
    """OpenVINO GridSample-9: sample ``data [N, C, H, W]`` at ``grid [N, Ho, Wo, 2]`` (x, y in
    [-1, 1]) with bilinear, bicubic or nearest interpolation and zeros/border/reflection padding."""

    type_name = "GridSample"
    version = "opset9"
    num_inputs = (2, 2)
    attributes = (Attr("align_corners", "bool", False), Attr("mode", "str", "bilinear"),
                  Attr("padding_mode", "str", "zeros"))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        if self.attrs["mode"] not in ("bilinear", "bicubic", "nearest"):
            raise self.fail(f"unknown mode '{self.attrs['mode']}'")
        if self.attrs["padding_mode"] not in ("zeros", "border", "reflection"):
            raise self.fail(f"unknown padding_mode '{self.attrs['padding_mode']}'")
        n, c, _, _ = _dims(self.input_shape(0), 4)
        gn, ho, wo, two = _dims(self.input_shape(1), 4)
        if two.is_static and two.get_length() != 2:
            raise self.fail(f"the grid's last dimension must be 2, got {self.input_shape(1)}")
        return [(self.input_type(0), PartialShape([n.merge(gn), c, ho, wo]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        data, grid = inputs
        x_in = data.astype(np.float64)
        n, c, h, w = x_in.shape
        g = grid.astype(np.float64)
        align = self.attrs["align_corners"]
        pad = self.attrs["padding_mode"]
        mode = self.attrs["mode"]

        def denorm(v: np.ndarray, size: int) -> np.ndarray:
            return (v + 1) * (size - 1) / 2 if align else ((v + 1) * size - 1) / 2

        def fold(i: np.ndarray, size: int) -> np.ndarray:
            """Padding applied to integer tap positions (OpenVINO's reference)."""
            if pad == "border":
                return np.clip(i, 0, size - 1)
            if pad == "reflection":
                if align:
                    period = 1 if size == 1 else 2 * (size - 1)
                    i = np.abs(i) % period
                    return np.where(i >= size, period - i, i)
                period = 2 * size
                i = (i % period + period) % period
                return np.where(i >= size, period - 1 - i, i)
            return i

        x, y = denorm(g[..., 0], w), denorm(g[..., 1], h)
        batch = np.arange(n)[:, None, None]

        def fetch(iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
            """Pixels at integer positions ``[N, Ho, Wo]`` for every channel: ``[N, Ho, Wo, C]``."""
            iy, ix = fold(iy, h), fold(ix, w)
            ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
            vals = x_in[batch, :, np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)]
            return np.where(ok[..., None], vals, 0.0)

        if mode == "nearest":
            out = fetch(np.rint(y).astype(np.int64), np.rint(x).astype(np.int64))
        else:
            x0, y0 = np.floor(x), np.floor(y)
            tx, ty = x - x0, y - y0
            x0i, y0i = x0.astype(np.int64), y0.astype(np.int64)
            if mode == "bilinear":
                wx, wy, offs = [1 - tx, tx], [1 - ty, ty], [0, 1]
            else:
                wx, wy, offs = _cubic_weights(tx), _cubic_weights(ty), [-1, 0, 1, 2]
            out = np.zeros((n,) + x.shape[1:] + (c,))
            for i, oy in enumerate(offs):
                for j, ox in enumerate(offs):
                    out += (wy[i] * wx[j])[..., None] * fetch(y0i + oy, x0i + ox)
        return [np.moveaxis(out, -1, 1).astype(data.dtype)]


@builder
def grid_sample(data: Any, grid: Any, attributes: dict[str, Any], name: str | None = None) -> Node:
    """A GridSample-9 node; ``attributes`` holds align_corners, mode and padding_mode."""
    return GridSample([data, grid], dict(attributes), name)


def _bilinear_points(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """ROIAlign's bilinear taps: four weights and four ``[C, ...]`` corner values per point;
    points beyond one pixel outside the image weigh nothing."""
    _, h, w = img.shape
    outside = (ys < -1.0) | (ys > h) | (xs < -1.0) | (xs > w)
    y = np.maximum(ys, 0.0)
    x = np.maximum(xs, 0.0)
    y_lo = np.floor(y).astype(np.int64)
    x_lo = np.floor(x).astype(np.int64)
    y_top = y_lo >= h - 1
    x_top = x_lo >= w - 1
    y_lo = np.where(y_top, h - 1, y_lo)
    x_lo = np.where(x_top, w - 1, x_lo)
    y_hi = np.where(y_top, h - 1, y_lo + 1)
    x_hi = np.where(x_top, w - 1, x_lo + 1)
    y = np.where(y_top, y_lo, y)
    x = np.where(x_top, x_lo, x)
    ly, lx = y - y_lo, x - x_lo
    hy, hx = 1.0 - ly, 1.0 - lx
    weights = [hy * hx, hy * lx, ly * hx, ly * lx]
    weights = [np.where(outside, 0.0, wt) for wt in weights]
    values = [img[:, y_lo, x_lo], img[:, y_lo, x_hi], img[:, y_hi, x_lo], img[:, y_hi, x_hi]]
    return weights, values


@register_op
class ROIAlign(Node):
    """OpenVINO ROIAlign-9: average (or max) of bilinear samples in each bin of each ROI."""

    type_name = "ROIAlign"
    version = "opset9"
    num_inputs = (3, 3)
    attributes = (Attr("pooled_h", "int"), Attr("pooled_w", "int"), Attr("sampling_ratio", "int"),
                  Attr("spatial_scale", "float"), Attr("mode", "str"), Attr("aligned_mode", "str", "asymmetric"))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        if self.attrs["mode"] not in ("avg", "max"):
            raise self.fail(f"unknown mode '{self.attrs['mode']}'")
        if self.attrs["aligned_mode"] not in ("asymmetric", "half_pixel_for_nn", "half_pixel"):
            raise self.fail(f"unknown aligned_mode '{self.attrs['aligned_mode']}'")
        _, c, _, _ = _dims(self.input_shape(0), 4)
        rois, four = _dims(self.input_shape(1), 2)
        if four.is_static and four.get_length() != 4:
            raise self.fail(f"rois must be [num_rois, 4], got {self.input_shape(1)}")
        return [(self.input_type(0), PartialShape([rois, c, Dimension(self.attrs["pooled_h"]),
                                                   Dimension(self.attrs["pooled_w"])]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        data, rois, batch = inputs
        x = data.astype(np.float64)
        ph, pw = self.attrs["pooled_h"], self.attrs["pooled_w"]
        scale = self.attrs["spatial_scale"]
        ratio = self.attrs["sampling_ratio"]
        mode = self.attrs["aligned_mode"]
        # half_pixel shifts the box by half a pixel before and after scaling, half_pixel_for_nn after
        src, dst = {"asymmetric": (0.0, 0.0), "half_pixel_for_nn": (0.0, -0.5), "half_pixel": (0.5, -0.5)}[mode]
        out = np.zeros((rois.shape[0], x.shape[1], ph, pw))
        for r in range(rois.shape[0]):
            x1, y1, x2, y2 = ((float(v) + src) * scale + dst for v in rois[r])
            rw, rh = x2 - x1, y2 - y1
            if mode == "asymmetric":
                rw, rh = max(rw, 1.0), max(rh, 1.0)
            bh, bw = rh / ph, rw / pw
            gh = ratio if ratio > 0 else int(np.ceil(bh))
            gw = ratio if ratio > 0 else int(np.ceil(bw))
            if gh * gw == 0:
                continue
            iy = (np.arange(gh) + 0.5) * (bh / gh)
            ix = (np.arange(gw) + 0.5) * (bw / gw)
            ys = y1 + np.arange(ph)[:, None] * bh + iy[None, :]          # [ph, gh]
            xs = x1 + np.arange(pw)[:, None] * bw + ix[None, :]          # [pw, gw]
            yy = np.broadcast_to(ys[:, None, :, None], (ph, pw, gh, gw))
            xx = np.broadcast_to(xs[None, :, None, :], (ph, pw, gh, gw))
            weights, values = _bilinear_points(x[int(batch[r])], yy, xx)
            samples = sum(wt[None] * v for wt, v in zip(weights, values)).reshape(x.shape[1], ph, pw, -1)
            if self.attrs["mode"] == "avg":
                out[r] = samples.sum(-1) / (gh * gw)
            else:  # the running maximum starts at 0, as OpenVINO's reference does
                out[r] = np.maximum(samples.max(-1), 0.0)
        return [out.astype(data.dtype)]


@builder
def roi_align(data: Any, rois: Any, batch_indices: Any, pooled_h: int, pooled_w: int, sampling_ratio: int,
              spatial_scale: float, mode: str, aligned_mode: str = "asymmetric", name: str | None = None) -> Node:
    """A ROIAlign-9 node: rois ``[R, 4]`` as (x1, y1, x2, y2), batch_indices ``[R]``."""
    return ROIAlign([data, rois, batch_indices], {
        "pooled_h": pooled_h, "pooled_w": pooled_w, "sampling_ratio": sampling_ratio,
        "spatial_scale": spatial_scale, "mode": mode.lower(), "aligned_mode": aligned_mode.lower()}, name)


@register_op
class DeformableConvolution(Node):
    """OpenVINO DeformableConvolution-8: each kernel tap reads the input at its position moved
    by a learned (dy, dx) offset (bilinear, zero outside), optionally scaled by a mask."""

    type_name = "DeformableConvolution"
    version = "opset8"
    num_inputs = (3, 4)
    attributes = (Attr("strides", "ints"), Attr("pads_begin", "ints"), Attr("pads_end", "ints"),
                  Attr("dilations", "ints"), Attr("auto_pad", "str", "explicit"), Attr("group", "int", 1),
                  Attr("deformable_group", "int", 1), Attr("bilinear_interpolation_pad", "bool", False))

    def _pads(self, spatial: Sequence[int], kernel: Sequence[int]) -> tuple[list[int], list[int]]:
        mode = self.attrs["auto_pad"].lower()
        if mode == "valid":
            return [0] * len(kernel), [0] * len(kernel)
        if mode in ("same_upper", "same_lower"):
            pairs = [same_padding(s, k, st, d, mode == "same_upper") for s, k, st, d in
                     zip(spatial, kernel, self.attrs["strides"], self.attrs["dilations"])]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        return list(self.attrs["pads_begin"]), list(self.attrs["pads_end"])

    def infer(self) -> list[tuple[Type, PartialShape]]:
        n, _, h, w = _dims(self.input_shape(0), 4)
        o, _, kh, kw = _dims(self.input_shape(2), 4)
        out = [n, o]
        for size, k, s, d, i in zip((h, w), (kh, kw), self.attrs["strides"], self.attrs["dilations"], (0, 1)):
            if size.is_static and k.is_static:
                pb, pe = self._pads([size.get_length()], [k.get_length()]) if self.attrs["auto_pad"] != \
                    "explicit" else ([self.attrs["pads_begin"][i]], [self.attrs["pads_end"][i]])
                span = size.get_length() + pb[0] + pe[0] - (d * (k.get_length() - 1) + 1)
                out.append(Dimension(span // s + 1 if span >= 0 else 0))
            else:
                out.append(Dimension())
        return [(self.input_type(0), PartialShape(out))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        data, offsets, filters = inputs[:3]
        mask = inputs[3].astype(np.float64) if len(inputs) > 3 else None
        x = data.astype(np.float64)
        wts = filters.astype(np.float64)
        n, c, h, w = x.shape
        o, cg, kh, kw = wts.shape
        sh, sw = self.attrs["strides"]
        dh, dw = self.attrs["dilations"]
        (pt, pl), _ = self._pads((h, w), (kh, kw))
        ho, wo = offsets.shape[2], offsets.shape[3]
        groups, dgroups = self.attrs["group"], self.attrs["deformable_group"]
        k = kh * kw
        off = offsets.astype(np.float64).reshape(n, dgroups, k, 2, ho, wo)
        base_y = (np.arange(ho) * sh - pt)[:, None]
        base_x = (np.arange(wo) * sw - pl)[None, :]
        cols = np.zeros((n, c, k, ho, wo))
        per_dg = c // dgroups
        pad = self.attrs["bilinear_interpolation_pad"]
        for g in range(dgroups):
            chans = x[:, g * per_dg:(g + 1) * per_dg]
            for t in range(k):
                i, j = divmod(t, kw)
                ys = base_y + i * dh + off[:, g, t, 0]
                xs = base_x + j * dw + off[:, g, t, 1]
                val = _sample(chans, ys, xs, pad)
                if mask is not None:
                    val = val * mask.reshape(n, dgroups, k, ho, wo)[:, g, t][:, None]
                cols[:, g * per_dg:(g + 1) * per_dg, t] = val
        out = np.zeros((n, o, ho, wo))
        og = o // groups
        for gi in range(groups):
            col = cols[:, gi * cg:(gi + 1) * cg].reshape(n, cg * k, ho, wo)
            wt = wts[gi * og:(gi + 1) * og].reshape(og, cg * k)
            out[:, gi * og:(gi + 1) * og] = np.einsum("ok,nkhw->nohw", wt, col)
        return [out.astype(data.dtype)]


def _sample(chans: np.ndarray, ys: np.ndarray, xs: np.ndarray, pad: bool) -> np.ndarray:
    """Bilinear samples ``[N, C, Ho, Wo]`` of ``chans [N, C, H, W]`` at per-batch points.

    With ``pad`` a point in ``(-1, H) x (-1, W)`` mixes its four neighbours, those outside the
    image being zero; without it only points in ``[0, H) x [0, W)`` count and the neighbours
    are clamped into the image."""
    n, c, h, w = chans.shape
    b = np.arange(n)[:, None, None]
    out = np.zeros((n, c) + ys.shape[1:])
    if pad:
        valid = (np.trunc(ys) > -1) & (np.trunc(ys) < h) & (np.trunc(xs) > -1) & (np.trunc(xs) < w)
        y1, x1 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
        y2, x2 = y1 + 1, x1 + 1
    else:
        valid = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        y1 = np.maximum(np.floor(ys), 0).astype(np.int64)
        x1 = np.maximum(np.floor(xs), 0).astype(np.int64)
        y2 = np.minimum(np.ceil(ys), h - 1).astype(np.int64)
        x2 = np.minimum(np.ceil(xs), w - 1).astype(np.int64)
    dy, dx = ys - y1, xs - x1
    for yy, wy in ((y1, 1 - dy), (y2, dy)):
        for xx, wx in ((x1, 1 - dx), (x2, dx)):
            ok = valid & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            v = chans[b, :, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]  # [N, Ho, Wo, C]
            out += np.moveaxis(np.where(ok[..., None], v, 0.0) * (wy * wx)[..., None], -1, 1)
    return out


@builder
def deformable_convolution(data: Any, offsets: Any, filters: Any, strides: list[int], pads_begin: list[int],
                           pads_end: list[int], dilations: list[int], mask: Any = None, auto_pad: str = "EXPLICIT",
                           group: int = 1, deformable_group: int = 1, bilinear_interpolation_pad: bool = False,
                           name: str | None = None) -> Node:
    """A DeformableConvolution-8 node (offsets ``[N, 2*dg*kh*kw, Ho, Wo]`` as (dy, dx) pairs)."""
    inputs = [data, offsets, filters] + ([] if mask is None else [mask])
    return DeformableConvolution(inputs, {
        "strides": strides, "pads_begin": pads_begin, "pads_end": pads_end, "dilations": dilations,
        "auto_pad": auto_pad.lower(), "group": group, "deformable_group": deformable_group,
        "bilinear_interpolation_pad": bilinear_interpolation_pad}, name)
