"""Lowering rule for Pad (opset 1 and 12; constant, edge, reflect, symmetric, negative pads) of
tensors of any rank with 1-, 2-, 4- or 8-byte items (any element type: a pad moves bits), in the layout its input has (NHWC or plain): the op's own
reference kernel, run once on an index probe, gives the source of every output element; the
rule checks that this map is separable per axis and hands the per-axis maps to ``kernels/pad.py``
(above 4-D, the outer axes merge pairwise: a merged axis's map is one more table)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import Lowering, const_of, lowers, static_shape
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op
from ember.graph.node import Node

_MAX_PROBE = 1 << 22


def separable_maps(index_map: np.ndarray, in_shape: tuple[int, ...]) -> list[np.ndarray] | None:
    """Per-axis source maps (-1: pad value) whose product is ``index_map`` (flat source index of
    each output element, -1 for the pad value); None when it is not separable."""
    out_shape = index_map.shape
    if int(np.prod(in_shape)) == 0:
        return [np.full(d, -1, np.int64) for d in out_shape]
    valid = index_map >= 0
    coords = np.unravel_index(np.where(valid, index_map, 0), in_shape)
    maps = []
    for a, ca in enumerate(coords):
        ca = np.where(valid, ca, -1)
        other = tuple(i for i in range(len(out_shape)) if i != a)
        maps.append(ca.max(axis=other, initial=-1).astype(np.int64) if other else ca.astype(np.int64))
    grids = np.meshgrid(*maps, indexing="ij")
    inside = np.logical_and.reduce([g >= 0 for g in grids]) if grids else np.ones((), bool)
    flat = np.ravel_multi_index([np.where(inside, g, 0) for g in grids], in_shape) if grids else np.zeros((), np.int64)
    rebuilt = np.where(inside, flat, -1)
    return maps if np.array_equal(rebuilt, index_map) else None


@lowers("Pad")
def lower_pad(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.pad import pad_4d

    data_p = node.input_values()[0]
    dtype = data_p.element_type.dtype
    maybe = [const_of(p) for p in node.input_values()[1:]]
    if dtype.itemsize not in (1, 2, 4, 8) or any(c is None for c in maybe):
        return False
    in_shape, out_shape = static_shape(data_p), static_shape(node.output(0))
    rank = len(in_shape)
    if rank < 1 or max(int(np.prod(in_shape)), int(np.prod(out_shape))) > _MAX_PROBE:
        return False
    value = np.asarray(maybe[2]).astype(dtype) if len(maybe) == 3 else np.zeros((), dtype)
    consts: list[Any] = [maybe[0], maybe[1], np.array(-1, np.int64)]  # the probe pads with -1
    probe = np.arange(int(np.prod(in_shape)), dtype=np.int64).reshape(in_shape)
    try:
        index_map = np.asarray(node.evaluate([probe, *consts])[0])
    except Exception:  # noqa: BLE001 - a pad the reference refuses stays on the reference kernel (and fails there)
        return False
    maps = separable_maps(index_map, in_shape) if index_map.shape == out_shape else None
    if maps is None:
        return False
    k_in, k_out = list(in_shape), list(out_shape)
    while len(maps) > 4:  # merge the two outer axes: source m0 * in1 + m1, or -1
        m0, m1 = maps[0][:, None], maps[1][None, :]
        maps = [np.where((m0 >= 0) & (m1 >= 0), m0 * k_in[1] + m1, -1).reshape(-1), *maps[2:]]
        k_in, k_out = [k_in[0] * k_in[1], *k_in[2:]], [k_out[0] * k_out[1], *k_out[2:]]
    t = lowering.tensor(data_p)
    nhwc = rank == 4 and t.layout == NHWC
    if nhwc:
        src = lowering.native_input(t, NHWC)
        maps = [maps[0], maps[2], maps[3], maps[1]]
        phys: tuple[int, ...] = (out_shape[0], out_shape[2], out_shape[3], out_shape[1])
    else:
        src = lowering.native_input(t, PLAIN)
        pad = 4 - len(maps)
        maps = [np.zeros(1, np.int64)] * pad + maps
        phys = (1,) * pad + tuple(k_out)
    y = lowering.value(phys if nhwc else out_shape, NHWC if nhwc else PLAIN, dtype, name=node.friendly_name)
    size = dtype.itemsize
    item = np.dtype(f"i{size}")  # the bits of one item, whatever its type
    bits = int(np.asarray(value, dtype).reshape(1).view(item)[0])
    in4 = (1,) * (4 - len(k_in)) + tuple(k_in) if not nhwc else tuple(src.shape)
    threads = lowering.threads

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        x = arrs[0].reshape(in4).view(item)
        return [pad_4d(x, outs[0].view(item).reshape(phys), maps, bits, threads, lowering.isa)]

    lowering.program.add(Op(node.friendly_name, "Pad", [src], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
