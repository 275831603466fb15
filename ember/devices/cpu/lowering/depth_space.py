"""Lowering rule for DepthToSpace / SpaceToDepth of 4-D tensors (1-, 2-, 4- or 8-byte items: pure
data movement, the element type only sets the item width; NHWC or plain): one strided copy between two 6-D views of the same elements, ``(n, H, i, W, j, c)`` in NHWC or
``(n, c, H, i, W, j)`` in plain layout, where the channel axis of the deep tensor splits into
``(i, j, c)`` (blocks_first) or ``(c, i, j)`` (depth_first)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import Lowering, lowers, static_shape
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op
from ember.errors import EmberError
from ember.graph.node import Node


def block_views(space: np.ndarray, depth: np.ndarray, bs: int, mode: str, nhwc: bool) -> tuple[np.ndarray, np.ndarray]:
    """Views of ``space`` (logical (n, c, H*bs, W*bs)) and ``depth`` (logical (n, c*bs*bs, H, W)),
    given as physical arrays, with the same 6-D shape and the same element at each index."""
    if nhwc:
        n, h, w, ch = depth.shape
        cc = ch // (bs * bs)
        sv = space.reshape(n, h, bs, w, bs, cc)
        if mode == "blocks_first":
            dv = depth.reshape(n, h, w, bs, bs, cc).transpose(0, 1, 3, 2, 4, 5)
        else:
            dv = depth.reshape(n, h, w, cc, bs, bs).transpose(0, 1, 4, 2, 5, 3)
    else:
        n, ch, h, w = depth.shape
        cc = ch // (bs * bs)
        sv = space.reshape(n, cc, h, bs, w, bs)
        if mode == "blocks_first":
            dv = depth.reshape(n, bs, bs, cc, h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            dv = depth.reshape(n, cc, bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    return sv, dv


@lowers("DepthToSpace", "SpaceToDepth")
def lower_depth_space(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.movement import strided_copy

    data_p = node.input_values()[0]
    dtype = data_p.element_type.dtype
    if dtype.itemsize not in (1, 2, 4, 8) or len(data_p.partial_shape) != 4:
        return False
    static_shape(data_p)  # a dynamic input gives up
    out_shape = static_shape(node.output(0))
    bs, mode = int(node.attrs["block_size"]), str(node.attrs["mode"]).lower()
    to_space = node.type_name == "DepthToSpace"
    t = lowering.tensor(data_p)
    nhwc = t.layout == NHWC
    src = lowering.native_input(t, NHWC if nhwc else PLAIN)
    phys = (out_shape[0], out_shape[2], out_shape[3], out_shape[1]) if nhwc else out_shape

    def views(a: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source view, destination view)."""
        if to_space:
            sv, dv = block_views(out, a, bs, mode, nhwc)
            return dv, sv
        return block_views(a, out, bs, mode, nhwc)

    item = np.dtype(f"u{dtype.itemsize}")  # the bits of one item, whatever its type
    probe_src, probe_dst = views(np.empty(src.shape, item), np.empty(phys, item))
    if strided_copy(probe_src, probe_dst, 1, lowering.isa) is None:
        return False
    y = lowering.value(phys, NHWC if nhwc else PLAIN, dtype, name=node.friendly_name)
    threads = lowering.threads

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        s, d = views(arrs[0].view(item), outs[0].view(item))
        k = strided_copy(s, d, threads, lowering.isa)
        if k is None:
            raise EmberError(f"ember: internal: {node.type_name} '{node.friendly_name}' does not fit the copy kernel")
        return [k]

    lowering.program.add(Op(node.friendly_name, node.type_name, [src], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
