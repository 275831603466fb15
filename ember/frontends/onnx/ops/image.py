"""Resampling and detection ONNX ops: Resize, Upsample, GridSample, RoiAlign, DeformConv,
NonMaxSuppression, MaxUnpool."""

from __future__ import annotations

import numpy as np

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const, convert, i64, rank_of
from ember.graph.node import Output
from ember.graph.types import Type

_MODES = {"nearest": "nearest", "linear": "linear_onnx", "cubic": "cubic", "bilinear": "linear_onnx",
          "trilinear": "linear_onnx"}
_COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")


def _interpolate(ctx: NodeContext, x: Output, target: Output, by_sizes: bool, mode: str, coord: str,
                 nearest: str, axes: list[int] | None = None) -> Output:
    ov_mode = _MODES.get(mode)
    if ov_mode is None:
        raise ctx.fail(f"mode '{mode}' is not supported")
    if coord not in _COORDS:
        raise ctx.fail(f"coordinate_transformation_mode '{coord}' is not supported (OpenVINO's Interpolate has "
                       f"{', '.join(_COORDS)})")
    return ops.interpolate(x, target, ov_mode, "sizes" if by_sizes else "scales", None, None, coord, nearest,
                           bool(ctx.attr("antialias", 0)), float(ctx.attr("cubic_coeff_a", -0.75)),
                           None if axes is None else i64(axes)).output(0)


@converter("Upsample", since=7, until=9)
@converter("Resize", since=10, until=10)
def upsample(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    scales = const(np.asarray(ctx.attr("scales"), np.float32), Type.f32) if ctx.opset < 9 and \
        ctx.op_type == "Upsample" else convert(ctx.req(1), Type.f32)
    mode = ctx.attr("mode", "nearest")
    return _interpolate(ctx, x, scales, False, mode, "asymmetric", "floor")


@converter("Resize", since=11)
def resize(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
    mode = ctx.attr("mode", "nearest")
    if coord in ("tf_crop_and_resize", "half_pixel_symmetric") or (ctx.attr("exclude_outside", 0) and mode == "cubic"):
        return _resize_onnx(ctx, x, coord, mode)
    nearest = ctx.attr("nearest_mode", "round_prefer_floor")
    axes = ctx.attr("axes", None)
    if axes is not None:
        r = rank_of(x)
        axes = [a + r if a < 0 else a for a in axes]
    sizes = ctx.input(3) if ctx.has_input(3) else None
    if sizes is not None and sizes.partial_shape.is_static and sizes.partial_shape.to_shape()[0] == 0:
        sizes = None
    if sizes is not None:
        sizes = convert(sizes, Type.i64)
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            sizes = _keep_aspect(ctx, x, sizes, axes, policy)
        return _interpolate(ctx, x, sizes, True, mode, coord, nearest, axes)
    scales = ctx.req(2)
    return _interpolate(ctx, x, convert(scales, Type.f32), False, mode, coord, nearest, axes)


def _resize_onnx(ctx: NodeContext, x: Output, coord: str, mode: str) -> Output:
    """Modes OpenVINO's Interpolate lacks: ember's own ResizeONNX op (ONNX semantics)."""
    if ctx.attr("antialias", 0):
        raise ctx.fail(f"antialias with coordinate_transformation_mode '{coord}' is not supported")
    if ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ctx.fail(f"keep_aspect_ratio_policy with coordinate_transformation_mode '{coord}' is not supported")

    def given(i: int, et: Type) -> Output:
        return convert(ctx.req(i), et) if ctx.has_input(i) else const(np.zeros(0), et)

    attrs = {"mode": mode, "coordinate_transformation_mode": coord,
             "nearest_mode": ctx.attr("nearest_mode", "round_prefer_floor"),
             "cubic_coeff_a": float(ctx.attr("cubic_coeff_a", -0.75)),
             "exclude_outside": bool(ctx.attr("exclude_outside", 0)),
             "extrapolation_value": float(ctx.attr("extrapolation_value", 0.0)), "axes": ctx.attr("axes", [])}
    return ops.resize_onnx(x, given(1, Type.f32), given(2, Type.f32), given(3, Type.i64), **attrs).output(0)


def _keep_aspect(ctx: NodeContext, x: Output, sizes: Output, axes: list[int] | None, policy: str) -> Output:
    """Sizes that keep the aspect ratio: one scale (the smallest or largest ratio) for all axes."""
    ax = axes if axes is not None else list(range(rank_of(x)))
    dims = convert(ops.gather(ops.shape_of(x, "i64"), i64(ax), i64(0)).output(0), Type.f32)
    ratios = ops.divide(convert(sizes, Type.f32), dims).output(0)
    pick = ops.reduce_min if policy == "not_larger" else ops.reduce_max
    scale = pick(ratios, i64([0]), False).output(0)
    scaled = ops.floor(ops.add(ops.multiply(dims, scale), const(0.5, Type.f32))).output(0)
    return convert(scaled, Type.i64)


@converter("GridSample", since=16)
def grid_sample(ctx: NodeContext) -> Output:
    mode = ctx.attr("mode", "bilinear" if ctx.opset < 20 else "linear")
    if rank_of(ctx.req(0)) != 4:  # OpenVINO's GridSample is 2-D: ember's own N-D op
        nd_mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
        if nd_mode == "cubic":
            raise ctx.fail("cubic mode needs 4-D inputs")
        return ops.grid_sample_nd(ctx.req(0), ctx.req(1), nd_mode, ctx.attr("padding_mode", "zeros"),
                                  bool(ctx.attr("align_corners", 0))).output(0)
    mode = {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode)
    attrs = {"align_corners": bool(ctx.attr("align_corners", 0)), "mode": mode,
             "padding_mode": ctx.attr("padding_mode", "zeros")}
    return ops.grid_sample(ctx.req(0), ctx.req(1), attrs).output(0)


@converter("RoiAlign", since=10)
def roi_align(ctx: NodeContext) -> Output:
    x, rois, batch = ctx.req(0), ctx.req(1), ctx.req(2)
    coord = ctx.attr("coordinate_transformation_mode", "half_pixel" if ctx.opset >= 16 else "output_half_pixel")
    # ONNX half_pixel shifts by -0.5 after scaling: OpenVINO's half_pixel_for_nn
    aligned = "half_pixel_for_nn" if coord == "half_pixel" else "asymmetric"
    return ops.roi_align(x, rois, convert(batch, Type.i32), ctx.attr("output_height", 1),
                         ctx.attr("output_width", 1), ctx.attr("sampling_ratio", 0), ctx.attr("spatial_scale", 1.0),
                         ctx.attr("mode", "avg"), aligned).output(0)


@converter("DeformConv", since=19)
def deform_conv(ctx: NodeContext) -> Output:
    x, w, offset = ctx.req(0), ctx.req(1), ctx.req(2)
    n = rank_of(x) - 2
    strides = ctx.attr("strides", [1] * n)
    dilations = ctx.attr("dilations", [1] * n)
    pads = ctx.attr("pads", [0] * (2 * n))
    inputs = [x, offset, w] + ([ctx.req(4)] if ctx.has_input(4) else [])
    y = ops.deformable_convolution(*inputs[:3], strides, pads[:n], pads[n:], dilations,
                                   mask=inputs[3] if len(inputs) > 3 else None, auto_pad="explicit",
                                   group=ctx.attr("group", 1), deformable_group=ctx.attr("offset_group", 1),
                                   bilinear_interpolation_pad=True).output(0)
    if ctx.has_input(3):
        y = ops.add(y, ops.reshape(ctx.req(3), i64([1, -1] + [1] * n), False)).output(0)
    return y


@converter("NonMaxSuppression", since=10)
def non_max_suppression(ctx: NodeContext) -> Output:
    boxes, scores = ctx.req(0), ctx.req(1)
    limit = convert(ctx.req(2), Type.i64) if ctx.has_input(2) else const(0, Type.i64)
    iou = convert(ctx.req(3), Type.f32) if ctx.has_input(3) else const(0.0, Type.f32)
    score = convert(ctx.req(4), Type.f32) if ctx.has_input(4) else const(-np.inf, Type.f32)
    scal = [ops.reshape(v, i64([]), False).output(0) for v in (limit, iou, score)]
    encoding = "center" if ctx.attr("center_point_box", 0) else "corner"
    node = ops.non_max_suppression(boxes, scores, *scal, box_encoding=encoding, sort_result_descending=False,
                                   output_type="i64")
    return node.output(0)


@converter("MaxUnpool", since=9)
def max_unpool(ctx: NodeContext) -> Output:
    """Scatter the pooled values back to their positions in a zero tensor. The indices are flat
    positions in the default-sized output; with ``output_shape`` they are re-laid into it."""
    x, idx = ctx.req(0), ctx.req(1)
    kernel = ctx.attr("kernel_shape")
    n = len(kernel)
    strides = ctx.attr("strides", [1] * n)
    pads = ctx.attr("pads", [0] * (2 * n))
    ps = x.partial_shape
    if not ps.is_static:
        raise ctx.fail("the input shape must be static")
    dims = [d.get_length() for d in ps]
    spatial = [(dims[2 + i] - 1) * strides[i] + kernel[i] - pads[i] - pads[n + i] for i in range(n)]
    default = dims[:2] + spatial
    idx = convert(idx, Type.i64)
    if ctx.has_input(2):
        out_shape = convert(ctx.req(2), Type.i64)
        # flat index in the default shape -> coordinates -> flat index in output_shape
        flat = i64(0)
        rest = idx
        coords = []
        for k in range(len(default) - 1, -1, -1):
            coords.append(ops.floor_mod(rest, i64(default[k])).output(0))
            rest = ops.divide(rest, i64(default[k])).output(0)
        coords.reverse()
        for k, cvec in enumerate(coords):
            dim_k = ops.gather(out_shape, i64(k), i64(0)).output(0)
            flat = ops.add(ops.multiply(flat, dim_k), cvec).output(0)
        idx = flat
    else:
        out_shape = i64(default)
    total = ops.reduce_prod(out_shape, i64([0]), True).output(0)
    zeros = ops.broadcast(const(0, x.element_type), total).output(0)
    scattered = ops.scatter_elements_update(zeros, ops.reshape(idx, i64([-1]), False),
                                            ops.reshape(x, i64([-1]), False), i64(0)).output(0)
    return ops.reshape(scattered, out_shape, False).output(0)
