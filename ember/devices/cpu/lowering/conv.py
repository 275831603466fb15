"""Lowering rules for convolutions (Convolution, GroupConvolution, ConvolutionBackpropData)
and pooling."""
from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import (
    F32,
    Lowering,
    const_of,
    epilogue_chain,
    lowers,
    static_shape,
)
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op
from ember.errors import EmberError
from ember.graph.node import Node

# -- convolution ------------------------------------------------------------------------------

@lowers("Convolution", "GroupConvolution")
def lower_conv(lowering: Lowering, node: Node) -> bool:
    """2-D convolutions on NHWC tensors; 1-D ones as 2-D with a height of 1 (converted back to
    the plain layout after)."""
    from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry
    from ember.devices.cpu.kernels.gemm import Epilogue

    w = const_of(node.input_values()[1])
    xport = node.input_values()[0]
    rank = len(xport.partial_shape)
    if w is None or w.dtype != F32 or xport.element_type.dtype != F32 or rank not in (3, 4):
        return False
    one_d = rank == 3
    xs = static_shape(xport)
    n, c, h, wd = (xs[0], xs[1], 1, xs[2]) if one_d else xs
    groups = 1
    if node.type_name == "GroupConvolution":
        groups = w.shape[0]
        w = w.reshape(w.shape[0] * w.shape[1], *w.shape[2:])
    if one_d:
        w = w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])
    oc, _, kh, kw = w.shape
    pb, pe = node.resolved_pads(xs, w.shape[3:] if one_d else (kh, kw))
    if min(*pb, *pe) < 0:
        return False
    dil = list(node.attrs["dilations"]) or [1] * (rank - 2)
    strides = list(node.attrs["strides"])
    if one_d:
        pb, pe, dil, strides = [0, *pb], [0, *pe], [1, *dil], [1, *strides]
    geo = ConvGeometry(n, h, wd, c, oc, kh, kw, tuple(strides), tuple(dil), tuple(pb), tuple(pe), groups)
    bias, residual, (lo, hi), last, fused = epilogue_chain(lowering, node, 1, oc, NHWC, allow_residual=not one_d)
    kernel = Conv2d(geo, w, Epilogue(lo, hi), num_threads=lowering.threads, isa=lowering.isa, precision=lowering.precision)
    lowering.bf16_ops += kernel.precision.value == "bf16"
    src = lowering.tensor(xport)
    if one_d:
        src = lowering.native_input(src, PLAIN)
        src = lowering.program.view(src, (n, c, 1, wd), lambda a: a.reshape(n, c, 1, wd), contiguous=src.contiguous)
    x = lowering.native_input(src, NHWC, contiguous=False)
    y = lowering.value(geo.output_shape, NHWC, name=last.friendly_name)
    ins = [x] + ([residual] if residual is not None else [])

    def bind(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        return [kernel.bind(a[0], o[0], bias, a[1] if residual is not None else None)]

    lowering.program.add(Op(node.friendly_name, node.type_name, ins, [y], native=True, bind=bind))
    if one_d:  # back to [N, C, W]
        flat = lowering.plain(y)
        out3 = (n, oc, geo.ow)
        y = lowering.program.view(flat, out3, lambda a: a.reshape(out3), name=last.friendly_name)
    lowering.finish(last, y, fused)
    return True


@lowers("ConvolutionBackpropData")
def lower_conv_transpose(lowering: Lowering, node: Node) -> bool:
    """A transposed convolution whose kernel equals its stride (upsampling, no overlap): one
    GEMM to ``[pixels, kh * kw * Cout]`` (bias and clamp fused), then a strided copy that
    puts each pixel's kh x kw block in place."""
    from ember.devices.cpu.kernels.gemm import Epilogue, Gemm, pack_b
    from ember.devices.cpu.kernels.movement import strided_copy

    w = const_of(node.input_values()[1])
    xport = node.input_values()[0]
    if len(node.input_values()) != 2 or w is None or w.dtype != F32 or xport.element_type.dtype != F32 \
            or len(xport.partial_shape) != 4:
        return False
    n, cin, h, wd = static_shape(xport)
    _, cout, kh, kw = w.shape
    attrs = node.attrs
    if list(attrs["strides"]) != [kh, kw] or any(d != 1 for d in attrs["dilations"] or [1]) \
            or any(attrs["pads_begin"]) or any(attrs["pads_end"]) or any(attrs.get("output_padding") or []) \
            or str(attrs["auto_pad"]).lower() not in ("explicit", "notset", "valid"):
        return False
    if static_shape(node.output(0)) != (n, cout, h * kh, wd * kw):
        return False
    bias, _, (lo, hi), last, fused = epilogue_chain(lowering, node, 1, cout, NHWC, allow_residual=False)
    b_mat = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(cin, kh * kw * cout))
    m = n * h * wd
    gemm = Gemm(pack_b(b_mat, lowering.isa, precision=lowering.precision), m, Epilogue(lo, hi), num_threads=lowering.threads)
    lowering.bf16_ops += lowering.precision == "bf16"
    tiled_bias = None if bias is None else np.ascontiguousarray(np.tile(bias, kh * kw))
    x = lowering.native_input(lowering.tensor(xport), NHWC)
    tmp = lowering.value((m, kh * kw * cout), PLAIN, name=node.friendly_name + "/blocks")
    lowering.program.add(Op(node.friendly_name, "ConvolutionBackpropData", [x], [tmp], native=True,
                            bind=lambda a, o: [gemm.bind(a[0].reshape(m, cin), o[0], tiled_bias)]))
    y = lowering.value((n, h * kh, wd * kw, cout), NHWC, name=last.friendly_name)
    threads = lowering.threads

    def place(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        src = a[0].reshape(n, h, wd, kh, kw, cout).transpose(0, 1, 3, 2, 4, 5)
        k = strided_copy(src, o[0].reshape(n, h, kh, wd, kw, cout), threads, lowering.isa)
        if k is None:
            raise EmberError(f"ember: internal: '{node.friendly_name}' blocks do not fit the copy kernel")
        return [k]

    lowering.program.add(Op(node.friendly_name + "/place", "Reorder", [tmp], [y], native=True, bind=place))
    lowering.finish(last, y, fused)
    return True


# -- pooling and reductions -------------------------------------------------------------------

@lowers("MaxPool", "AvgPool")
def lower_pool(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.pool import pool2d

    xport = node.input_values()[0]
    if xport.element_type.dtype != F32 or len(xport.partial_shape) != 4:
        return False
    if any(o.targets for o in node.outputs()[1:]) or any(lowering.is_result(o) for o in node.outputs()[1:]):
        return False  # MaxPool-8 indices are used
    pb, pe, _ = node.plan(xport.partial_shape)
    kernel = tuple(node.attrs["kernel"])
    if len(kernel) != 2 or min(*pb, *pe) < 0:
        return False
    strides = tuple(node.attrs["strides"])
    dil = tuple(node._dilations(2))
    n, c, oh, ow = static_shape(node.output(0))
    mode = "max" if node.type_name == "MaxPool" else "avg"
    exclude = bool(node.attrs.get("exclude-pad", False))
    x = lowering.native_input(lowering.tensor(xport), NHWC, contiguous=False)
    y = lowering.value((n, oh, ow, c), NHWC, name=node.friendly_name)
    threads = lowering.threads

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [pool2d(ins[0], outs[0], kernel, strides, dil, tuple(pb), tuple(pe), mode, exclude, threads, lowering.isa)]

    lowering.program.add(Op(node.friendly_name, node.type_name, [x], [y], native=True, bind=bind))
    for o in node.outputs()[1:]:  # unused indices: never computed
        lowering.bind_port(o, lowering.value(static_shape(o), PLAIN, o.element_type.dtype))
    lowering.finish(node, y, [])
    return True
