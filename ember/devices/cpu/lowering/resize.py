"""Lowering rule for Interpolate: nearest resizes are a gather of pixels (``movement``);
linear, linear_onnx and cubic resizes of 4-D f32 tensors over H and W run the separable tap
kernel (``kernels/resize.py``) on NHWC data, with tap tables computed once here from the op's
own per-axis weight matrices (so every coordinate_transformation_mode the op has is covered)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import F32, Lowering, const_of, lowers, static_shape
from ember.devices.cpu.lowering.movement import lower_resize_nearest
from ember.devices.cpu.runtime.plan import NHWC, Op
from ember.graph.node import Node
from ember.ops.misc import interpolate_kernel

_SEPARABLE = ("linear", "linear_onnx", "cubic")


@lowers("Interpolate")
def lower_interpolate(lowering: Lowering, node: Node) -> bool:
    if str(node.attrs.get("mode", "")).lower() == "nearest":
        return lower_resize_nearest(lowering, node)
    return lower_resize_separable(lowering, node)


def _axes_and_scales(node: Node, consts: list[np.ndarray], in_shape: tuple[int, ...],
                     out_shape: tuple[int, ...]) -> tuple[list[int], list[np.float32]]:
    """The resized axes and their scales, as the op's evaluate computes them."""
    rank = len(in_shape)
    inputs = [None, *consts]
    axes = ([int(a) % rank for a in np.asarray(inputs[node.axes_port]).reshape(-1)]
            if len(inputs) > node.axes_port else list(range(rank)))
    if node._uses_scales():
        scales = [np.float32(s) for s in np.asarray(inputs[node.scales_port]).reshape(-1)[: len(axes)]]
    else:
        scales = [np.float32(out_shape[a]) / np.float32(in_shape[a]) if in_shape[a] else np.float32(1) for a in axes]
    return axes, scales


def axis_weights(attrs: dict[str, Any], in_len: int, out_len: int, scale: np.float32) -> np.ndarray:
    """The (out_len, in_len) weight matrix of one resized axis, from the reference kernel."""
    probe = interpolate_kernel(np.eye(in_len), (in_len, out_len), [1], [scale], {**attrs, "antialias": False})
    return np.asarray(probe).T


def lower_resize_separable(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.resize import resize_nhwc, tap_table

    if node.version not in ("opset4", "opset11"):
        return False
    attrs = node.attrs
    if str(attrs["mode"]).lower() not in _SEPARABLE or any(attrs["pads_begin"]) or any(attrs["pads_end"]):
        return False
    data_p = node.input_values()[0]
    if data_p.element_type.dtype != F32 or len(data_p.partial_shape) != 4:
        return False
    maybe = [const_of(p) for p in node.input_values()[1:]]
    consts = [c for c in maybe if c is not None]
    if len(consts) != len(maybe):
        return False
    in_shape, out_shape = static_shape(data_p), static_shape(node.output(0))
    n, c, h, w = in_shape
    if out_shape[:2] != (n, c) or (0 in in_shape and 0 not in out_shape):
        return False
    axes, scales = _axes_and_scales(node, consts, in_shape, out_shape)
    if bool(attrs["antialias"]) and any(s < 1 for s in scales):
        return False
    per_axis = dict(zip(axes, scales))
    taps = []
    for ax in (2, 3):
        if ax in per_axis:
            mat = axis_weights(attrs, in_shape[ax], out_shape[ax], per_axis[ax])
        else:
            mat = np.eye(in_shape[ax])
        table = tap_table(mat)
        if table is None:
            return False
        taps.append(table)
    for ax in (0, 1):  # batch and channels must come through unchanged
        if ax in per_axis and not np.array_equal(axis_weights(attrs, in_shape[ax], out_shape[ax], per_axis[ax]),
                                                 np.eye(in_shape[ax])):
            return False
    src = lowering.native_input(lowering.tensor(data_p), NHWC)
    oh, ow = out_shape[2], out_shape[3]
    tables = [lowering.program.const(np.ascontiguousarray(a)) for pair in taps for a in pair]
    y = lowering.value((n, oh, ow, c), NHWC, src.dtype, name=node.friendly_name)
    threads = lowering.threads

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        yi, yw, xi, xw = arrs[1:]
        return [resize_nhwc(arrs[0], outs[0], (yi, yw), (xi, xw), threads, lowering.isa)]

    lowering.program.add(Op(node.friendly_name, "Interpolate", [src, *tables], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
