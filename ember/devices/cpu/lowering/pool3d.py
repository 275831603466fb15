"""3-D MaxPool whose indices output is used: the window-walking kernel of
:mod:`~ember.devices.cpu.kernels.pool3d` on the plain ``[N, C, D, H, W]`` tensor. ``lower_pool``
(``conv.py``) calls :func:`maxpool3d_with_indices` for such nodes (its separable 3-D pooling
does not track indices)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import F32, Lowering, static_shape
from ember.devices.cpu.runtime.plan import PLAIN, Op
from ember.graph.node import Node

_INDEX_TYPES = (np.dtype(np.int32), np.dtype(np.int64))


def maxpool3d_with_indices(lowering: Lowering, node: Node) -> bool:
    """``node`` (MaxPool-8/14 of a 5-D f32 tensor, two outputs) natively; False if it does not fit."""
    from ember.devices.cpu.kernels.pool3d import maxpool3d_indices

    xport = node.input_values()[0]
    if node.type_name != "MaxPool" or len(node.outputs()) != 2 or xport.element_type.dtype != F32:
        return False
    xs = static_shape(xport)
    if len(xs) != 5:
        return False
    index_dtype = node.output(1).element_type.dtype
    if index_dtype not in _INDEX_TYPES:
        return False
    pb, pe, _ = node.plan(xport.partial_shape)
    if min(*pb, *pe) < 0:
        return False
    kernel = [int(k) for k in node.attrs["kernel"]]
    strides = [int(s) for s in node.attrs["strides"]]
    dil = [int(d) for d in node._dilations(3)]
    out_shape = static_shape(node.output(0))
    axis = int(node.attrs.get("axis", 0)) % 5
    x = lowering.native_input(lowering.tensor(xport), PLAIN)
    y = lowering.value(out_shape, PLAIN, name=node.friendly_name)
    idx = lowering.value(out_shape, PLAIN, index_dtype, name=node.friendly_name + "/indices")
    threads, isa = lowering.threads, lowering.isa
    pads = [int(p) for p in pb]

    def bind(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        return [maxpool3d_indices(a[0], o[0], o[1], kernel, strides, dil, pads, axis, threads, isa)]

    lowering.program.add(Op(node.friendly_name, "MaxPool", [x], [y, idx], native=True, bind=bind))
    lowering.bind_port(node.output(1), idx)
    lowering.finish(node, y, [])
    return True
