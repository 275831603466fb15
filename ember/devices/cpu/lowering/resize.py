"""Lowering rule for Interpolate (opset 1, 4, 11): nearest resizes are a gather of pixels (``movement``);
linear, linear_onnx and cubic resizes of 4-D f32 or f64 tensors over H and W (and of 3-D ones over
their last axis) run the separable tap kernel (``kernels/resize.py``), with tap tables computed
once here from the op's own per-axis weight matrices (so every coordinate_transformation_mode
the op has is covered): on NHWC data, vectors over channels; with few channels in plain layout,
on each (n, c) plane as a one-channel image (no layout change)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import F32, Lowering, const_of, lowers, static_shape
from ember.devices.cpu.lowering.movement import axes_and_scales, lower_resize_nearest
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op
from ember.errors import EmberError
from ember.graph.node import Node
from ember.ops.misc import interpolate_kernel

_SEPARABLE = ("linear", "linear_onnx", "cubic")


@lowers("Interpolate")
def lower_interpolate(lowering: Lowering, node: Node) -> bool:
    if str(node.attrs.get("mode", "")).lower() == "nearest":
        return lower_resize_nearest(lowering, node)
    return lower_resize_separable(lowering, node)


def axis_weights(attrs: dict[str, Any], in_len: int, out_len: int, scale: np.float32) -> np.ndarray:
    """The (out_len, in_len) weight matrix of one resized axis, from the reference kernel."""
    probe = interpolate_kernel(np.eye(in_len), (in_len, out_len), [1], [float(scale)], {**attrs, "antialias": False})
    return np.asarray(probe).T


def linear_taps(weights: np.ndarray) -> np.ndarray:
    """(out, 2): the two source indices a linear resize reads for each output index, zero weight
    or not: its first tap j and j + 1 (clipped), so a source coordinate that falls exactly on j
    still reads j + 1, as OpenVINO's kernels do."""
    first = np.argmax(weights != 0, axis=1)
    return np.stack([first, np.minimum(first + 1, weights.shape[1] - 1)], axis=1)


def lower_resize_separable(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.resize import resize_nhwc, tap_table

    data_p = node.input_values()[0]
    rank = len(data_p.partial_shape)
    dtype = data_p.element_type.dtype
    if dtype not in (F32, np.dtype(np.float64)) or rank not in (3, 4):
        return False
    if any(node.attrs["pads_begin"]) or any(node.attrs["pads_end"]):
        return False
    # Interpolate-1 computes as the Interpolate-4 attributes it maps onto
    attrs = node.v4_attrs(rank) if node.version == "opset1" else node.attrs
    if str(attrs["mode"]).lower() not in _SEPARABLE:
        return False
    maybe = [const_of(p) for p in node.input_values()[1:]]
    consts = [c for c in maybe if c is not None]
    if len(consts) != len(maybe):
        return False
    in_shape, out_shape = static_shape(data_p), static_shape(node.output(0))
    if out_shape[:2] != in_shape[:2] or (0 in in_shape and 0 not in out_shape):
        return False
    axes, scales = axes_and_scales(node, consts, in_shape, out_shape)
    if bool(attrs["antialias"]) and any(s < 1 for s in scales):
        return False
    per_axis = dict(zip(axes, scales))
    # 3-D (n, c, w) data is resized as (n, c, 1, w)
    n, c, h, w = in_shape if rank == 4 else (in_shape[0], in_shape[1], 1, in_shape[2])
    oh, ow = (out_shape[2], out_shape[3]) if rank == 4 else (1, out_shape[2])
    for ax in (0, 1):  # batch and channels must come through unchanged
        if ax in per_axis and not np.array_equal(axis_weights(attrs, in_shape[ax], out_shape[ax], per_axis[ax]),
                                                 np.eye(in_shape[ax])):
            return False
    plain = dict(attrs)  # (the binder keeps no graph node, nor its attribute map)
    by_scales = node.version != "opset1" and str(attrs["shape_calculation_mode"]).lower() == "scales"
    cubic = str(attrs["mode"]).lower() == "cubic"

    def tables_for(sizes: tuple[int, int, int, int]) -> list[np.ndarray] | None:
        """The (index, weight) tap tables of H and W for input ``h, w`` into ``oh, ow``."""
        th, tw, toh, tow = sizes
        found = []
        for ax, size, out in ((rank - 2, th, toh), (rank - 1, tw, tow)):
            if rank == 3 and ax == 1:
                mat = np.eye(1)
            elif ax in per_axis:
                sc = per_axis[ax] if by_scales else (np.float32(out) / np.float32(size) if size else np.float32(1))
                if bool(plain["antialias"]) and sc < 1:
                    return None
                mat = axis_weights(plain, size, out, sc)
            else:
                mat = np.eye(size)
            required = None
            if ax in per_axis and not cubic and size != out and size and out:
                required = linear_taps(mat)
            table = tap_table(mat, required, dtype.type)
            if table is None:
                return None
            found += [np.ascontiguousarray(a) for a in table]
        return found

    lowered = tables_for((h, w, oh, ow))
    if lowered is None:
        return False
    t = lowering.tensor(data_p)
    threads = lowering.threads
    if rank == 4 and dtype == F32 and (t.layout == NHWC or c >= lowering.isa.f32_lanes):  # vectors over channels
        src = lowering.native_input(t, NHWC)
        y = lowering.value((n, oh, ow, c), NHWC, src.dtype, name=node.friendly_name)
        planes = None
    else:  # few channels in plain layout: each (n, c) plane is an image of one channel
        src = lowering.native_input(t, PLAIN)
        y = lowering.value(out_shape, PLAIN, src.dtype, name=node.friendly_name)
        planes = ((n * c, h, w, 1), (n * c, oh, ow, 1))

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        x, out = arrs[0], outs[0]
        if planes is not None:  # (n, c, [h,] w) planes of one channel each
            x, out = x.reshape(x.shape[0] * x.shape[1], *((1,) * (4 - x.ndim)), *x.shape[2:], 1), \
                out.reshape(out.shape[0] * out.shape[1], *((1,) * (4 - out.ndim)), *out.shape[2:], 1)
        # the tap tables from the arrays' sizes (a shape-generic plan binds this at other sizes)
        sizes = (x.shape[1], x.shape[2], out.shape[1], out.shape[2])
        found = lowered if sizes == (h, w, oh, ow) else tables_for(sizes)
        if found is None:
            raise EmberError("ember: internal: a resize's taps do not fit the kernel at these sizes")
        yi, yw, xi, xw = found
        return [resize_nhwc(x, out, (yi, yw), (xi, xw), threads, lowering.isa)]

    lowering.program.add(Op(node.friendly_name, "Interpolate", [src], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
