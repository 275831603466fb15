"""Lowering rules for the index ops: ScatterElementsUpdate, ScatterNDUpdate, ScatterUpdate,
GatherND, GatherElements, TopK and CumSum (static shapes; f32, i32 and i64 data; i32 and i64
indices). The index arithmetic that depends on shapes only (the data offset of every outer and
inner coordinate, row strides) is computed here once, as small int64 tables the kernels read."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import Lowering, NotHere, const_of, lowers, shape_or_none, static_shape
from ember.devices.cpu.runtime.plan import PLAIN, Op, Tensor
from ember.graph.node import Node, Output

_INDEX_TYPES = (np.dtype(np.int32), np.dtype(np.int64))
_MAX_TABLE = 1 << 22


def _elem_strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _offsets(shape: tuple[int, ...], strides: list[int]) -> np.ndarray:
    """The offset ``sum(i * stride)`` of every coordinate of ``shape`` (C order), int64."""
    off = np.zeros(shape, np.int64)
    for a, (d, s) in enumerate(zip(shape, strides)):
        off = off + (np.arange(d, dtype=np.int64) * s).reshape([d if i == a else 1 for i in range(len(shape))])
    return np.ascontiguousarray(off.reshape(-1))


def _input(lowering: Lowering, port: Output) -> Tensor:
    """A tensor a native kernel can read: a contiguous constant or an arena value."""
    t = lowering.tensor(port)
    if t.kind == "const":
        assert t.data is not None
        return t if t.data.flags.c_contiguous else lowering.program.const(np.ascontiguousarray(t.data))
    return lowering.native_input(t, PLAIN)


def _axis(node: Node, i: int, rank: int) -> int:
    c = const_of(node.input_values()[i])
    if c is None or c.size != 1 or rank == 0:
        raise NotHere
    a = int(np.asarray(c).reshape(-1)[0])
    if not -rank <= a < rank:
        raise NotHere
    return a % rank


def _index_source(lowering: Lowering, port: Output) -> tuple[Tensor, list[int]]:
    """The tensor to read an index input from and its element strides over the index's shape.
    An index made by a Broadcast (PyTorch's ``index.unsqueeze(1).expand(-1, F)``) is read from the
    Broadcast's input with zero strides, so the broadcast index is never written out (and the
    Broadcast is dropped from the plan when nothing else reads it)."""
    from ember.devices.cpu.lowering.broadcast import zero_offset_strides

    shape = static_shape(port)
    node = port.node
    if node.type_name == "Broadcast" and port.element_type.dtype in _INDEX_TYPES:
        src_p = node.input_values()[0]
        consts = [const_of(p) for p in node.input_values()[1:]]
        if lowering.has(src_p) and src_p.partial_shape.is_static and all(c is not None for c in consts):
            in_shape = static_shape(src_p)
            size = math.prod(in_shape)
            mode = str(node.attrs.get("mode", "numpy")).lower()
            full = (1,) * (len(shape) - len(in_shape)) + in_shape
            if mode in ("numpy", "bidirectional") and len(in_shape) <= len(shape) and size > 0 \
                    and all(d in (1, o) for d, o in zip(full, shape)):  # numpy broadcasting: no probe needed
                st = _elem_strides(full)
                return _input(lowering, src_p), [0 if d == 1 else s for d, s in zip(full, st)]
            if 0 < size <= _MAX_TABLE and 0 < math.prod(shape) <= _MAX_TABLE:
                probe = np.arange(size, dtype=np.int64).reshape(in_shape)
                index_map = np.asarray(node.evaluate([probe, *[c for c in consts if c is not None]])[0])
                strides = zero_offset_strides(index_map) if index_map.shape == shape else None
                if strides is not None:
                    return _input(lowering, src_p), list(strides)
    return _input(lowering, port), _elem_strides(shape)


def _writable_in_place(lowering: Lowering, data_p: Output, shape: tuple[int, ...]) -> bool:
    """Whether a scatter may write into its data's buffer: a contiguous plain value that a native
    op computed (or an earlier in-place scatter's view of one), read by this scatter only: no
    other node still to run reads that memory through any port, and it is no model output."""
    t = lowering.tensor(data_p)
    root = t.root()
    if root.kind != "value" or root.external or t.layout != PLAIN or not t.contiguous or tuple(t.shape) != shape \
            or tuple(root.shape) != shape or root.producer is None or not root.producer.native:
        return False
    if len(data_p.targets) != 1 or lowering.is_result(data_p):
        return False
    key = (id(data_p.node), data_p.index)
    others = [k for k, other in lowering.ports.items() if k != key and other.root() is root]
    if not others:
        return True
    nodes = {id(n): n for n in lowering.model.get_ordered_ops()}
    for node_id, index in others:  # an earlier holder of the memory must be dead: all its readers ran
        node = nodes.get(node_id)
        if node is None:
            return False
        port = node.output(index)
        if lowering.is_result(port) or any(id(target.node) not in lowering.done for target in port.targets):
            return False
    return True


# -- scatters ------------------------------------------------------------------------------------

def _scatter_op(lowering: Lowering, node: Node, *, mode: str, reduction: str, use_init: bool, outer: int, K: int,
                inner: int, tab_outer: np.ndarray, tab_inner: np.ndarray | None, dims: list[int],
                astr: list[int], is_o: int = 0, is_j: int = 1, idx: Tensor | None = None,
                tab_io: np.ndarray | None = None, tab_ic: np.ndarray | None = None) -> bool:
    from ember.devices.cpu.kernels.scatter import fill_bits, init_output, scatter, supported

    data_p, idx_p, upd_p = node.input_values()[:3]
    dtype = data_p.element_type.dtype
    if not supported(dtype, idx_p.element_type.dtype, reduction) or upd_p.element_type.dtype != dtype:
        return False
    if tab_outer.size > _MAX_TABLE or (tab_inner is not None and tab_inner.size > _MAX_TABLE):
        return False
    shape = static_shape(node.output(0))
    data = lowering.tensor(data_p)
    fill: int | None = None
    if data.kind == "const":
        assert data.data is not None
        flat = data.data.reshape(-1)
        if flat.size and np.all(flat == flat[0]) and not (dtype.kind == "f" and np.isnan(flat[0])):
            fill = fill_bits(flat[0].item(), dtype)
    ins = [idx if idx is not None else _input(lowering, idx_p), _input(lowering, upd_p)]
    in_place = fill is None and _writable_in_place(lowering, data_p, shape)
    if in_place:  # the scatter writes into the data's own buffer: no copy
        y = lowering.program.view(data, shape, lambda a: a, name=node.friendly_name)
    else:
        if fill is None:
            ins.append(_input(lowering, data_p))
        y = lowering.value(shape, PLAIN, dtype, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        out = outs[0]
        init = [] if in_place else [init_output(arrs[2] if fill is None else None, out, fill or 0, threads, isa)]
        return [*init, scatter(out, arrs[1], arrs[0], mode=mode, reduction=reduction, use_init=use_init,
                              outer=outer, K=K, inner=inner, tab_outer=tab_outer, tab_inner=tab_inner,
                              dims=np.array(dims, np.int64), astr=np.array(astr, np.int64), is_o=is_o, is_j=is_j,
                              tab_io=tab_io, tab_ic=tab_ic, threads=threads, isa=isa)]

    lowering.program.add(Op(node.friendly_name, node.type_name, ins, [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True


@lowers("ScatterElementsUpdate")
def lower_scatter_elements(lowering: Lowering, node: Node) -> bool:
    dshape, ishape = static_shape(node.input_values()[0]), static_shape(node.input_values()[1])
    rank = len(dshape)
    if rank == 0 or len(ishape) != rank:
        return False
    axis = _axis(node, 3, rank)
    red = str(node.attrs.get("reduction", "none")).lower()
    ds = _elem_strides(dshape)
    outer, K, inner = math.prod(ishape[:axis]), ishape[axis], math.prod(ishape[axis + 1:])
    idx, ist = _index_source(lowering, node.input_values()[1])
    return _scatter_op(lowering, node, mode="elem", reduction=red, use_init=bool(node.attrs.get("use_init_val", True)),
                       outer=outer, K=K, inner=inner, tab_outer=_offsets(ishape[:axis], ds[:axis]),
                       tab_inner=_offsets(ishape[axis + 1:], ds[axis + 1:]), dims=[dshape[axis]], astr=[ds[axis]],
                       idx=idx, is_j=ist[axis], tab_io=_offsets(ishape[:axis], ist[:axis]),
                       tab_ic=_offsets(ishape[axis + 1:], ist[axis + 1:]))


@lowers("ScatterNDUpdate")
def lower_scatter_nd(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.scatter import MAX_INDEX_DIMS

    dshape, ishape = static_shape(node.input_values()[0]), static_shape(node.input_values()[1])
    if not ishape:
        return False
    k = ishape[-1]
    if k > len(dshape) or k > MAX_INDEX_DIMS:
        return False
    inner = math.prod(dshape[k:])
    rows = _elem_strides(dshape[:k])
    red = str(node.attrs.get("reduction", "none")).lower()
    return _scatter_op(lowering, node, mode="row", reduction=red, use_init=True, outer=1, K=math.prod(ishape[:-1]),
                       inner=inner, tab_outer=np.zeros(1, np.int64), tab_inner=None, dims=list(dshape[:k]),
                       astr=[r * inner for r in rows], is_o=0, is_j=k)


@lowers("ScatterUpdate")
def lower_scatter_update(lowering: Lowering, node: Node) -> bool:
    dshape, ishape = static_shape(node.input_values()[0]), static_shape(node.input_values()[1])
    rank = len(dshape)
    axis = _axis(node, 3, rank)
    outer, n, inner = math.prod(dshape[:axis]), dshape[axis], math.prod(dshape[axis + 1:])
    return _scatter_op(lowering, node, mode="row", reduction="none", use_init=True, outer=outer,
                       K=math.prod(ishape), inner=inner,
                       tab_outer=np.arange(outer, dtype=np.int64) * (n * inner), tab_inner=None, dims=[n],
                       astr=[inner], is_o=0, is_j=1)


# -- gathers -------------------------------------------------------------------------------------

def _gather_inputs(lowering: Lowering, node: Node) -> tuple[Tensor, np.dtype] | None:
    """The data tensor and its dtype, when the kernels take this data and index type."""
    data_p, idx_p = node.input_values()[:2]
    dtype = data_p.element_type.dtype
    if dtype.itemsize not in (1, 2, 4, 8) or dtype.kind not in "fiub" or idx_p.element_type.dtype not in _INDEX_TYPES:
        return None
    return _input(lowering, data_p), dtype


@lowers("GatherND")
def lower_gather_nd(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.gather import MAX_INDEX_DIMS, gather_nd

    dshape, ishape = static_shape(node.input_values()[0]), static_shape(node.input_values()[1])
    bd = int(node.attrs.get("batch_dims", 0))
    if not ishape or ishape[-1] > MAX_INDEX_DIMS:
        return False
    k = ishape[-1]
    got = _gather_inputs(lowering, node)
    if got is None:
        return False
    data, dtype = got
    idx = _input(lowering, node.input_values()[1])
    unit = dtype.itemsize  # the kernel moves bytes
    inner = math.prod(dshape[bd + k:]) * unit
    rows = math.prod(ishape[:-1])
    M = math.prod(ishape[bd:-1])
    addressed = dshape[bd:bd + k]
    astr = [s * inner for s in _elem_strides(addressed)]
    bstride = math.prod(dshape[bd:]) * unit
    if rows and inner and math.prod(dshape) == 0:
        return False  # every index is out of range: the reference kernel says so
    y = lowering.value(static_shape(node.output(0)), PLAIN, dtype, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [gather_nd(arrs[0], arrs[1], outs[0], rows=rows, M=M, bstride=bstride, dims=list(addressed), astr=astr,
                          inner=inner, threads=threads, isa=isa)]

    lowering.program.add(Op(node.friendly_name, "GatherND", [data, idx], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True


@lowers("GatherElements")
def lower_gather_elements(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.gather import gather_elements

    dshape, ishape = static_shape(node.input_values()[0]), static_shape(node.input_values()[1])
    rank = len(dshape)
    if rank == 0 or len(ishape) != rank:
        return False
    axis = int(node.attrs["axis"]) % rank
    if any(d != i for a, (d, i) in enumerate(zip(dshape, ishape)) if a != axis):
        return False
    got = _gather_inputs(lowering, node)
    if got is None:
        return False
    data, dtype = got
    idx, ist = _index_source(lowering, node.input_values()[1])
    outer, K, inner, n = math.prod(ishape[:axis]), ishape[axis], math.prod(ishape[axis + 1:]), dshape[axis]
    if n == 0 and outer * K * inner:
        return False
    tab_io, is_j, tab_ic = _offsets(ishape[:axis], ist[:axis]), ist[axis], _offsets(ishape[axis + 1:], ist[axis + 1:])
    y = lowering.value(ishape, PLAIN, dtype, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [gather_elements(arrs[0], arrs[1], outs[0], outer=outer, K=K, n=n, inner=inner, tab_io=tab_io,
                                is_j=is_j, tab_ic=tab_ic, threads=threads, isa=isa)]

    lowering.program.add(Op(node.friendly_name, "GatherElements", [data, idx], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True


# -- TopK and CumSum -------------------------------------------------------------------------------

_MAX_TOPK_AXIS = 1 << 22


@lowers("TopK")
def lower_topk(lowering: Lowering, node: Node) -> bool:
    """TopK with a static output shape: ``k`` is the output's axis length (a constant or a runtime
    ``k`` input whose value shape inference already knows)."""
    from ember.devices.cpu.kernels.topk import supported, topk

    data_p = node.input_values()[0]
    dtype = data_p.element_type.dtype
    if not supported(dtype) or len(node.outputs()) != 2:
        return False
    dshape = static_shape(data_p)
    rank = len(dshape)
    if rank == 0:
        return False
    axis = int(node.attrs["axis"]) % rank
    kc = const_of(node.input_values()[1])
    if kc is None and shape_or_none(node.output(0)) is None:
        return _topk_runtime_k(lowering, node, dshape, axis)
    out_shape = static_shape(node.output(0))
    n, k = dshape[axis], out_shape[axis]
    if k > n or n > _MAX_TOPK_AXIS or (kc is not None and int(np.asarray(kc).reshape(-1)[0]) != k):
        return False
    index_dtype = node.output(1).element_type.dtype
    if index_dtype not in _INDEX_TYPES:
        return False
    outer, inner = math.prod(dshape[:axis]), math.prod(dshape[axis + 1:])
    largest = str(node.attrs["mode"]).lower() == "max"
    by_index = str(node.attrs["sort"]).lower() == "index"
    data = _input(lowering, data_p)
    values = lowering.value(out_shape, PLAIN, dtype, name=node.friendly_name)
    indices = lowering.value(out_shape, PLAIN, index_dtype, name=node.friendly_name + "/indices")
    threads, isa = lowering.threads, lowering.isa

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [topk(arrs[0], outs[0], outs[1], outer=outer, n=n, inner=inner, k=k, largest=largest,
                     by_index=by_index, threads=threads, isa=isa)]

    lowering.program.add(Op(node.friendly_name, "TopK", [data], [values, indices], native=True, bind=bind))
    lowering.bind_port(node.output(1), indices)
    lowering.finish(node, values, [])
    return True


def _topk_runtime_k(lowering: Lowering, node: Node, dshape: tuple[int, ...], axis: int) -> bool:
    """TopK whose ``k`` is only known at run time (its output shape depends on a value): a step
    that reads k, makes the outputs and runs the native kernel on them (one thread, called
    directly: a python step has no pool); a k outside ``[0, n]`` takes the reference kernel's
    path (its error or its empty result)."""
    import ctypes

    from ember.devices.cpu.kernels.topk import topk

    data_p, k_p = node.input_values()[:2]
    index_dtype = node.output(1).element_type.dtype
    n = dshape[axis]
    if index_dtype not in _INDEX_TYPES or n > _MAX_TOPK_AXIS or k_p.element_type.dtype.kind not in "iu" \
            or lowering.tensor(k_p).shape is None:
        return False
    dtype = data_p.element_type.dtype
    outer, inner = math.prod(dshape[:axis]), math.prod(dshape[axis + 1:])
    largest = str(node.attrs["mode"]).lower() == "max"
    by_index = str(node.attrs["sort"]).lower() == "index"
    isa = lowering.isa
    call = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)
    evaluate = node.evaluate

    def run(arrs: list[np.ndarray]) -> list[np.ndarray]:
        data, kv = arrs
        k = int(np.asarray(kv).reshape(-1)[0]) if np.asarray(kv).size == 1 else -1
        if not 0 <= k <= n:
            return list(evaluate(arrs))
        shape = dshape[:axis] + (k,) + dshape[axis + 1:]
        values, indices = np.empty(shape, dtype), np.empty(shape, index_dtype)
        bound = topk(np.ascontiguousarray(data), values, indices, outer=outer, n=n, inner=inner, k=k,
                     largest=largest, by_index=by_index, threads=1, isa=isa)
        fn = call(bound.task)
        for t in range(bound.n_tasks):
            fn(bound.ctx.ctypes.data, t)
        return [values, indices]

    ins = [_input(lowering, data_p), lowering.tensor(k_p)]
    outs = [lowering.value(None, PLAIN, dtype, name=node.friendly_name),
            lowering.value(None, PLAIN, index_dtype, name=node.friendly_name + "/indices")]
    lowering.program.add(Op(node.friendly_name, "TopK", ins, outs, native=False, fn=run))
    lowering.bind_port(node.output(1), outs[1])
    lowering.finish(node, outs[0], [])
    return True


@lowers("CumSum")
def lower_cumsum(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.cumsum import cumsum, supported

    data_p = node.input_values()[0]
    dtype = data_p.element_type.dtype
    if not supported(dtype):
        return False
    shape = static_shape(data_p)
    rank = len(shape)
    if rank == 0:
        return False
    axis = _axis(node, 1, rank) if len(node.input_values()) > 1 else 0
    outer, n, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    exclusive, reverse = bool(node.attrs["exclusive"]), bool(node.attrs["reverse"])
    src = _input(lowering, data_p)
    y = lowering.value(shape, PLAIN, dtype, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [cumsum(arrs[0], outs[0], outer=outer, n=n, inner=inner, exclusive=exclusive, reverse=reverse,
                       threads=threads, isa=isa)]

    lowering.program.add(Op(node.friendly_name, "CumSum", [src], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
