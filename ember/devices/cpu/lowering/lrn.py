"""Lowering rule for LRN over one axis (across channels, or along one spatial axis) of an f32
tensor; NHWC tensors across channels are read in place (see :mod:`~ember.devices.cpu.kernels.lrn`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import F32, Lowering, const_of, lowers, static_shape
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op
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
    if rank == 0 or len(axes) != 1:
        return False
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
