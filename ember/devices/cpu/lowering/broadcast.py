"""Lowering rule for Broadcast and Tile of tensors with 1-, 2-, 4- or 8-byte items: one strided copy from a
view of the input with zero strides on the repeated axes. The op's own reference kernel, run
once on an index probe, says where each output element comes from; the rule checks that this is
such a view (for Tile, over the output split into (repeat, dimension) pairs)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import Lowering, const_of, lowers, static_shape
from ember.devices.cpu.runtime.plan import PLAIN, Op
from ember.errors import EmberError
from ember.graph.node import Node, Output

_MAX_PROBE = 1 << 22


def zero_offset_strides(index_map: np.ndarray) -> tuple[int, ...] | None:
    """Element strides ``s`` with ``index_map[i] == sum(i * s)`` (a strided view of a flat
    buffer from its start, zero strides allowed), else None."""
    shape = index_map.shape
    if index_map.size == 0 or int(index_map.reshape(-1)[0]) != 0:
        return None
    strides = []
    for a, d in enumerate(shape):
        at = tuple(1 if i == a else 0 for i in range(len(shape)))
        strides.append(int(index_map[at]) if d > 1 else 0)
    grid = np.zeros(shape, np.int64)
    for a, (d, s) in enumerate(zip(shape, strides)):
        grid = grid + (np.arange(d, dtype=np.int64) * s).reshape([d if i == a else 1 for i in range(len(shape))])
    return tuple(strides) if np.array_equal(grid, index_map) else None


def _plan_const(lowering: Lowering, port: Output) -> np.ndarray | None:
    """The value of ``port`` if it is a constant of the graph or of the plan (folded while lowering)."""
    c = const_of(port)
    if c is not None:
        return c
    t = lowering.tensor(port)
    return t.data if t.kind == "const" else None


@lowers("Broadcast", "Tile")
def lower_broadcast(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.movement import strided_copy

    data_p = node.input_values()[0]
    dtype = data_p.element_type.dtype
    consts = [_plan_const(lowering, p) for p in node.input_values()[1:]]
    if dtype.itemsize not in (1, 2, 4, 8) or any(c is None for c in consts):
        return False
    in_shape, out_shape = static_shape(data_p), static_shape(node.output(0))
    size, out_size = int(np.prod(in_shape)), int(np.prod(out_shape))
    if size == 0 or out_size == 0 or max(size, out_size) > _MAX_PROBE:
        return False
    if node.type_name == "Tile":  # the output as (repeat, dimension) pairs
        dims = (1,) * (len(out_shape) - len(in_shape)) + in_shape
        split = tuple(x for o, d in zip(out_shape, dims) for x in (o // d, d))
    else:
        split = out_shape
    probe = np.arange(size, dtype=np.int64).reshape(in_shape)
    index_map = np.asarray(node.evaluate([probe, *[c for c in consts if c is not None]])[0])
    if index_map.shape != out_shape:
        return False
    strides = zero_offset_strides(index_map.reshape(split))
    if strides is None:
        return False
    src = lowering.native_input(lowering.tensor(data_p), PLAIN)

    # an 8-byte item moves as two 4-byte words (a last axis of 2); 1- and 2-byte items as they are
    word = np.dtype({1: np.uint8, 2: np.uint16}.get(dtype.itemsize, np.float32))
    unit = max(1, dtype.itemsize // 4)
    words = split + (unit,) if unit > 1 else split

    def views(a: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = a.reshape(-1).view(word)
        st = tuple(word.itemsize * unit * s for s in strides) + ((4,) if unit > 1 else ())
        return (np.lib.stride_tricks.as_strided(flat, words, st, writeable=False),
                out.reshape(-1).view(word).reshape(words))

    if strided_copy(*views(np.empty(in_shape, dtype), np.empty(out_shape, dtype)), 1, lowering.isa) is None:
        return False
    y = lowering.value(out_shape, PLAIN, dtype, name=node.friendly_name)
    threads = lowering.threads

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        k = strided_copy(*views(arrs[0], outs[0]), threads, lowering.isa)
        if k is None:
            raise EmberError(f"ember: internal: {node.type_name} '{node.friendly_name}' does not fit the copy kernel")
        return [k]

    lowering.program.add(Op(node.friendly_name, node.type_name, [src], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
