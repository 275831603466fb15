"""Lowering rule for LRN of an f32 tensor. Over one axis (across channels, or along one spatial
axis) one kernel; NHWC tensors across channels are read in place (see
:mod:`~ember.devices.cpu.kernels.lrn`). Over several axes (Caffe's WITHIN_CHANNEL, ``[2, 3]``)
the box sum of squares is a window sum along each axis in turn, then one elementwise program
``x * (bias + alpha / size ** len(axes) * sum) ** -beta``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import F32, Lowering, const_of, lowers, static_shape
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op
from ember.errors import EmberError
from ember.graph.node import Node


@lowers("LRN")
def lower_lrn(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.lrn import lrn_kernel

    xport = node.input_values()[0]
    axes_v = const_of(node.input_values()[1])
    if xport.element_type.dtype != F32 or axes_v is None:
        return False
    shape = static_shape(xport)
    rank = len(shape)
    axes = sorted({int(a) % max(rank, 1) for a in np.asarray(axes_v).reshape(-1)})
    if rank == 0 or not axes:
        return False
    if len(axes) > 1:
        return _lower_box(lowering, node, shape, axes)
    axis = axes[0]
    size = int(node.attrs["size"])
    half = (size - 1) // 2
    scale = float(node.attrs["alpha"]) / float(size)
    bias, beta = float(node.attrs["bias"]), float(node.attrs["beta"])
    src = lowering.tensor(xport)
    if src.layout == NHWC and axis == 1:
        n, h, w, c = src.shape
        src = lowering.native_input(src, NHWC)
        dims, layout, phys = (n * h * w, c, 1), NHWC, src.shape
    else:
        src = lowering.native_input(src, PLAIN)
        dims = (int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:])))
        layout, phys = PLAIN, shape
    y = lowering.value(phys, layout, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [lrn_kernel(ins[0].reshape(dims), outs[0].reshape(dims), half, bias, scale, beta, threads, isa)]

    lowering.program.add(Op(node.friendly_name, "LRN", [src], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True


def _lower_box(lowering: Lowering, node: Node, shape: tuple[int, ...], axes: list[int]) -> bool:
    """LRN over several axes: window sums axis by axis (squares on the first), then the scale."""
    from ember.devices.cpu.kernels.eltwise import eltwise_kernel
    from ember.devices.cpu.kernels.lrn import window_sum

    size = int(node.attrs["size"])
    half = (size - 1) // 2
    scale = float(node.attrs["alpha"]) / float(size) ** len(axes)
    bias, beta = float(node.attrs["bias"]), float(node.attrs["beta"])
    threads, isa = lowering.threads, lowering.isa
    name = node.friendly_name
    src = lowering.native_input(lowering.tensor(node.input_values()[0]), PLAIN)
    cur = src
    for k, axis in enumerate(axes):
        dims = (int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:])))
        out = lowering.value(shape, PLAIN, name=f"{name}/sum{k}")

        def bind_sum(ins: list[np.ndarray], outs: list[np.ndarray], dims: tuple[int, int, int] = dims,
                     squares: bool = k == 0) -> list[Any]:
            return [window_sum(ins[0].reshape(dims), outs[0].reshape(dims), half, squares, threads, isa)]

        lowering.program.add(Op(f"{name}/sum{k}", "LRN", [cur], [out], native=True, bind=bind_sum))
        cur = out
    program = [("load", 0, 0, 0, 0.0, 0.0), ("load", 1, 1, 0, 0.0, 0.0), ("mulc", 1, 1, 0, scale, 0.0),
               ("addc", 1, 1, 0, bias, 0.0), ("powc", 1, 1, 0, -beta, 0.0), ("mul", 0, 0, 1, 0.0, 0.0),
               ("store", 0, 0, 0, 0.0, 0.0)]
    y = lowering.value(shape, PLAIN, name=name)

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        k = eltwise_kernel(outs[0], [ins[0], ins[1]], program, threads, isa)
        if k is None:
            raise EmberError(f"ember: internal: LRN '{name}' does not fit the elementwise kernel")
        return [k]

    lowering.program.add(Op(name, "LRN", [src, cur], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
