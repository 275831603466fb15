"""Lowering rules for reductions (ReduceMean/Sum/Max/Min)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import (
    F32,
    Lowering,
    const_of,
    lowers,
    static_shape,
)
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op
from ember.graph.node import Node

_REDUCE_OPS = {"ReduceMean": "sum", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min"}


@lowers(*_REDUCE_OPS)
def lower_reduce(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.pool import reduce_middle

    xport = node.input_values()[0]
    axes_v = const_of(node.input_values()[1])
    if xport.element_type.dtype != F32 or axes_v is None:
        return False
    shape = static_shape(xport)
    rank = len(shape)
    if rank == 0:
        return False
    axes = sorted({int(a) % rank for a in np.asarray(axes_v).reshape(-1)})
    if not axes:
        return False
    keep = bool(node.attrs["keep_dims"])
    out_shape = static_shape(node.output(0))
    src = lowering.tensor(xport)
    op = _REDUCE_OPS[node.type_name]
    if src.layout == NHWC and axes == [2, 3]:
        n, h, w, c = src.shape
        outer, r, inner = n, h * w, c
        layout = NHWC if keep else PLAIN
        phys_out = (n, 1, 1, c) if keep else out_shape
        src = lowering.native_input(src, NHWC, contiguous=True)
    else:
        if axes != list(range(axes[0], axes[-1] + 1)):
            return False
        src = lowering.native_input(src, PLAIN)
        outer = int(np.prod(shape[:axes[0]]))
        r = int(np.prod([shape[a] for a in axes]))
        inner = int(np.prod(shape[axes[-1] + 1:]))
        layout, phys_out = PLAIN, out_shape
    if r == 0 and op != "sum":
        return False
    # the mean of nothing is 0, as REFERENCE and OpenVINO give (a sum of nothing, scaled by 0)
    scale = (1.0 / r if r else 0.0) if node.type_name == "ReduceMean" else 1.0
    y = lowering.value(phys_out, layout, name=node.friendly_name)
    threads = lowering.threads

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        x3 = ins[0].reshape(outer, r, inner)
        return [reduce_middle(x3, outs[0].reshape(outer, inner), op, scale, threads, lowering.isa)]

    lowering.program.add(Op(node.friendly_name, node.type_name, [src], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
