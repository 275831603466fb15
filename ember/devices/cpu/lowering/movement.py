"""Lowering rules for memory movement: views (Reshape, Transpose, slices, splits) and copies
(Gather, Concat)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import (
    Lowering,
    const_of,
    lowers,
    probe_array,
    shape_or_none,
    static_shape,
    transposer,
)
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op, Tensor
from ember.errors import EmberError
from ember.graph.node import Node, Output

# -- shape glue on constants -----------------------------------------------------------------

_FOLD_MAX = 1 << 16


def fold_small(lowering: Lowering, node: Node) -> bool:
    """A node whose inputs are all constants of the plan (a shape computation the optimizer
    could not fold because a shape became static only while lowering, after a Loop whose length
    the lowering found): computed once here, its value a constant of the plan."""
    ins = [lowering.tensor(p) for p in node.input_values()]
    if not ins or any(t.kind != "const" for t in ins) or len(node.outputs()) != 1:
        return False
    shape = static_shape(node.output(0))
    if int(np.prod(shape)) > _FOLD_MAX or node.output(0).element_type.name in ("string", "sequence"):
        return False
    values = []
    for t, p in zip(ins, node.input_values()):
        assert t.data is not None
        want = shape_or_none(p)
        if t.layout != PLAIN or want is None or t.data.size != int(np.prod(want)):
            return False
        values.append(t.data.reshape(want))
    out = np.asarray(node.evaluate(values)[0])
    if out.shape != shape:
        return False
    lowering.bind_port(node.output(0), lowering.program.const(np.ascontiguousarray(out), node.friendly_name))
    return True


@lowers("ShapeOf")
def lower_shape_of(lowering: Lowering, node: Node) -> bool:
    """The shape of a tensor whose shape is static is a constant."""
    shape = static_shape(node.input_values()[0])
    dtype = node.output(0).element_type.dtype
    lowering.bind_port(node.output(0), lowering.program.const(np.array(shape, dtype).reshape(-1), node.friendly_name))
    return True


# -- views ------------------------------------------------------------------------------------

@lowers("Reshape", "Squeeze", "Unsqueeze")
def lower_reshape(lowering: Lowering, node: Node) -> bool:
    if fold_small(lowering, node):
        return True
    src = lowering.tensor(node.input_values()[0])
    if src.kind == "input" and src.shape is not None:
        src = lowering.native_input(src, PLAIN)
    if src.kind not in ("value", "view"):
        return False
    if src.layout == NHWC:
        src = lowering.plain(src)
    shape = static_shape(node.output(0))
    try:  # a strided view (a column slice, say) often reshapes without a copy too
        contiguous = np.reshape(probe_array(src), shape, copy=False).flags.c_contiguous
    except ValueError:
        src = lowering.native_input(src, PLAIN, contiguous=True)
        contiguous = True
    t = lowering.program.view(src, shape, lambda a: np.reshape(a, shape, copy=False), contiguous=contiguous,
                              name=node.friendly_name)
    lowering.finish(node, t, [])
    return True


def _is_identity(perm: list[int], shape: tuple[int, ...]) -> bool:
    """Whether permuting axes ``perm`` of ``shape`` keeps the memory order (size-1 axes move freely)."""
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


@lowers("Transpose")
def lower_transpose(lowering: Lowering, node: Node) -> bool:
    if fold_small(lowering, node):
        return True
    src = lowering.tensor(node.input_values()[0])
    perm_v = const_of(node.input_values()[1])
    if src.kind == "input" and src.shape is not None:  # a model input (an NHWC image, say): its arena copy
        src = lowering.native_input(src, PLAIN)
    if src.kind not in ("value", "view") or perm_v is None:
        return False
    rank = len(src.logical_shape)
    perm = [int(p) % rank for p in np.asarray(perm_v).reshape(-1)] if perm_v.size else list(range(rank))[::-1]
    shape = static_shape(node.output(0))
    if src.layout == NHWC:  # permute the logical axes of the physical NHWC array
        full = [(0, 3, 1, 2)[p] for p in perm]
        contiguous = src.contiguous and _is_identity(full, src.shape)
        t = lowering.program.view(src, shape, transposer(tuple(full)), contiguous=contiguous, name=node.friendly_name)
    else:
        contiguous = src.contiguous and _is_identity(perm, src.shape)
        t = lowering.program.view(src, shape, transposer(tuple(perm)), contiguous=contiguous, name=node.friendly_name)
    lowering.finish(node, _materialized(lowering, t, node.friendly_name), [])
    return True


def _materialized(lowering: Lowering, view: Tensor, name: str) -> Tensor:
    """A strided view of 1-, 2- or 8-byte items as a contiguous value, copied by the native copy
    kernel (the driver's reorders copy only 4-byte items natively); other views are kept."""
    from ember.devices.cpu.kernels.movement import strided_copy

    if view.contiguous or view.dtype.itemsize not in (1, 2, 8):
        return view
    if strided_copy(probe_array(view), np.empty(view.shape, view.dtype), 1, lowering.isa) is None:
        return view
    out = lowering.value(view.shape, PLAIN, view.dtype, name + "/copy")
    threads, isa = lowering.threads, lowering.isa

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        k = strided_copy(ins[0], outs[0], threads, isa)
        if k is None:
            raise EmberError(f"ember: internal: no copy kernel fits '{name}'")
        return [k]

    lowering.program.add(Op(name + "/copy", "Reorder", [view], [out], native=True, bind=bind))
    return out


# -- memory movement: Gather, Concat, slices as views -----------------------------------------

@lowers("Gather")
def lower_gather(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.movement import gather_rows

    if fold_small(lowering, node):
        return True
    data_p, idx_p, ax_p = node.input_values()
    ax = const_of(ax_p)
    if ax is None or data_p.element_type.name in ("string", "sequence") or idx_p.element_type.dtype not in (
            np.dtype(np.int32), np.dtype(np.int64)):
        return False
    dshape, ishape = static_shape(data_p), static_shape(idx_p)
    axis = int(np.asarray(ax).reshape(-1)[0]) % max(len(dshape), 1)
    bd = int(node.attrs.get("batch_dims", 0))
    if bd < 0:
        bd += len(ishape)
    if bd != 0 or not dshape:
        return False
    out_shape = static_shape(node.output(0))
    data = lowering.tensor(data_p)
    data = data if data.kind == "const" else lowering.native_input(data, PLAIN)
    idx = lowering.tensor(idx_p)
    idx = idx if idx.kind == "const" else lowering.native_input(idx, PLAIN)
    if data.kind == "const":
        data = lowering.program.const(np.ascontiguousarray(data.data))
    if idx.kind == "const":
        idx = lowering.program.const(np.ascontiguousarray(idx.data))
    y = lowering.value(out_shape, PLAIN, data_p.element_type.dtype, name=node.friendly_name)
    negative = node.version == "opset8"
    threads = lowering.threads

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [gather_rows(arrs[0], arrs[1], outs[0], axis, negative, threads, lowering.isa)]

    lowering.program.add(Op(node.friendly_name, "Gather", [data, idx], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True


#: per lowering, the NHWC buffer of each 4-D channel Concat (by node id) that some of its inputs'
#: producers write in place (:func:`concat_slot`), and the first channel of each such part (by
#: the id of the view the producer wrote)
_CONCAT_BUFFERS: weakref.WeakKeyDictionary[Lowering, dict[int, Tensor]] = weakref.WeakKeyDictionary()
_CONCAT_PARTS: weakref.WeakKeyDictionary[Lowering, dict[int, int]] = weakref.WeakKeyDictionary()


def concat_slot(lowering: Lowering, port: Output, dtype: Any) -> Tensor | None:
    """Where the producer of ``port`` (a 4-D value of ``dtype`` it writes NHWC) can put it so
    that no copy is made: the channel slice of a 4-D channel Concat's NHWC buffer, when that
    Concat is the only reader of ``port`` and reads it once. None otherwise (the producer makes
    its own value). An FPN's upsampled maps and the last branch go straight into the Concat."""
    targets = port.targets
    if len(port.partial_shape) != 4 or not targets or lowering.is_result(port):
        return None
    cat = targets[0].node
    if cat.type_name != "Concat" or any(t.node is not cat for t in targets) or len(targets) != 1:
        return None
    out = cat.output(0)
    dtype = np.dtype(dtype)
    if not out.partial_shape.is_static or lowering.is_result(out) or int(cat.attrs["axis"]) % 4 != 1 \
            or out.element_type.dtype != dtype or dtype.itemsize not in (1, 2, 4, 8) \
            or any(p.element_type.dtype != dtype or not p.partial_shape.is_static for p in cat.input_values()):
        return None
    ins = cat.input_values()
    at = next((i for i, p in enumerate(ins) if p.node is port.node and p.index == port.index), None)
    if at is None:
        return None
    n, c, h, w = static_shape(out)
    buffers = _CONCAT_BUFFERS.setdefault(lowering, {})
    if id(cat) not in buffers:
        buffers[id(cat)] = lowering.value((n, h, w, c), NHWC, dtype, name=cat.friendly_name)
    start = sum(static_shape(p)[1] for p in ins[:at])
    size = static_shape(port)[1]
    part = lowering.program.view(buffers[id(cat)], (n, h, w, size), _channels(start, size), NHWC,
                                 contiguous=False, name=port.node.friendly_name)
    _CONCAT_PARTS.setdefault(lowering, {})[part.id] = start
    return part


def _channels(start: int, size: int) -> Any:
    return lambda a: a[..., start:start + size]


@lowers("Concat")
def lower_concat(lowering: Lowering, node: Node) -> bool:
    """Copies of each input into its part of the output; a part whose producer wrote it in
    place (:func:`concat_slot`) is not copied."""
    from ember.devices.cpu.kernels.movement import strided_copy

    if fold_small(lowering, node):
        return True
    dtype = node.output(0).element_type.dtype
    if dtype.itemsize not in (1, 2, 4, 8) or any(s.element_type.dtype != dtype for s in node.input_values()):
        return False
    out_shape = static_shape(node.output(0))
    rank = len(out_shape)
    if rank == 0:
        return False
    axis = int(node.attrs["axis"]) % rank
    tensors = [lowering.tensor(s) for s in node.input_values()]
    written = _CONCAT_BUFFERS.get(lowering, {}).get(id(node))
    nhwc = written is not None or rank == 4 and axis == 1 and all(
        t.layout == NHWC for t in tensors if t.kind != "const") and any(t.layout == NHWC for t in tensors)
    srcs: list[Tensor] = []
    for t in tensors:
        if t.kind == "const":
            assert t.data is not None
            arr = np.ascontiguousarray(t.data.transpose(0, 2, 3, 1)) if nhwc else t.data
            srcs.append(lowering.program.const(arr))
        else:
            srcs.append(lowering.native_input(t, NHWC if nhwc else PLAIN, contiguous=False))
    phys_axis = 3 if nhwc else axis
    phys = (out_shape[0], out_shape[2], out_shape[3], out_shape[1]) if nhwc else out_shape
    y = written if written is not None else lowering.value(phys, NHWC if nhwc else PLAIN, dtype,
                                                           name=node.friendly_name)
    parts, start = [], 0
    for t in srcs:
        size = t.shape[phys_axis]
        if written is None or t.base is not written or _CONCAT_PARTS[lowering].get(t.id) != start:
            parts.append((t, start, size))
        start += size
    threads = lowering.threads
    sizes = [(start, size) for _, start, size in parts]

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        kernels = []
        for a, (begin, size) in zip(arrs, sizes):
            dst = outs[0][(slice(None),) * phys_axis + (slice(begin, begin + size),)]
            if a.size:
                k = strided_copy(a, dst, threads, lowering.isa)
                if k is None:
                    raise EmberError(f"ember: internal: Concat '{node.friendly_name}' input does not fit the copy kernel")
                kernels.append(k)
        return kernels

    if parts or written is None:
        lowering.program.add(Op(node.friendly_name, "Concat", [t for t, _, _ in parts], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True


_MAX_INDEX_MAP = 1 << 22


def _affine(index_map: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
    """(offset, element strides) when ``index_map`` is a strided view of a flat buffer."""
    if index_map.size == 0:
        return 0, (0,) * index_map.ndim
    off = int(index_map.reshape(-1)[0])
    strides = []
    for ax, d in enumerate(index_map.shape):
        if d > 1:
            sl = [0] * index_map.ndim
            sl[ax] = 1
            strides.append(int(index_map[tuple(sl)]) - off)
        else:
            strides.append(0)
    grid = np.full(index_map.shape, off, np.int64)
    for ax, st in enumerate(strides):
        shape = [1] * index_map.ndim
        shape[ax] = index_map.shape[ax]
        grid = grid + (np.arange(index_map.shape[ax], dtype=np.int64) * st).reshape(shape)
    return (off, tuple(strides)) if np.array_equal(grid, index_map) else None


class StridedView:
    """A view maker: elements ``off + sum(i_k * strides[k])`` of the flat base, of ``shape``
    (strides in elements, ``item`` bytes each). Its numbers are attributes, so a shape-generic
    plan can make the view again for other sizes (``runtime/generic.py``)."""

    __slots__ = ("off", "strides", "shape", "item")

    def __init__(self, off: int, strides: tuple[int, ...], shape: tuple[int, ...], item: int) -> None:
        self.off, self.strides, self.shape, self.item = off, tuple(strides), tuple(shape), item

    def with_numbers(self, off: int, strides: tuple[int, ...], shape: tuple[int, ...]) -> StridedView:
        """The same kind of view with other numbers (another input shape's)."""
        return StridedView(off, strides, shape, self.item)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        flat = a.reshape(-1)
        return np.lib.stride_tricks.as_strided(flat[self.off:] if flat.size else flat, self.shape,
                                               tuple(s * self.item for s in self.strides), writeable=False)


@lowers("Slice", "StridedSlice", "Split", "VariadicSplit")
def lower_slice_view(lowering: Lowering, node: Node) -> bool:
    """Slices and splits with constant parameters: views of their input (an index map
    computed once with the op's reference kernel says where each element comes from)."""
    if fold_small(lowering, node):
        return True
    maybe = [const_of(p) for p in node.input_values()[1:]]
    consts = [c for c in maybe if c is not None]
    if len(consts) != len(maybe):
        return False
    src = lowering.tensor(node.input_values()[0])
    if src.kind == "input" and src.shape is not None:  # a model input: its arena copy (read in place)
        src = lowering.native_input(src, PLAIN)
    if src.kind not in ("value", "view"):
        return False
    shape = static_shape(node.input_values()[0])
    size = int(np.prod(shape))
    views = []
    if size <= _MAX_INDEX_MAP:
        maps = node.evaluate([np.arange(size, dtype=np.int64).reshape(shape), *consts])
        for port, imap in zip(node.outputs(), maps):
            aff = _affine(np.asarray(imap))
            if aff is None or tuple(imap.shape) != static_shape(port):
                return False
            views.append((port, tuple(imap.shape), aff))
    else:
        found = _affine_by_axes(node, shape, consts)
        if found is None:
            return False
        views = [(port, shp, aff) for port, (shp, aff) in zip(node.outputs(), found)]
    src = lowering.native_input(src, PLAIN, contiguous=True)
    item = src.dtype.itemsize
    for port, shp, (off, st) in views:
        contiguous = all(s == e for s, e, d in zip(st, _c_strides(shp), shp) if d > 1)
        view = lowering.program.view(src, shp, StridedView(off, st, shp, item), contiguous=contiguous,
                                     name=node.friendly_name)
        lowering.bind_port(port, _materialized(lowering, view, node.friendly_name))
    return True


def _affine_by_axes(node: Node, shape: tuple[int, ...], consts: list[np.ndarray]
                    ) -> list[tuple[tuple[int, ...], tuple[int, tuple[int, ...]]]] | None:
    """(shape, (offset, strides)) of each output of a slice of a large input: the op's reference
    kernel runs once per input axis on that axis' coordinates (small integers, broadcast), the
    flat source index is their sum times the input's strides; checked at sampled positions."""
    rank = len(shape)
    cs = _c_strides(shape)
    per_axis = []
    for a in range(rank):
        dt = np.int16 if shape[a] < 1 << 15 else np.int32 if shape[a] < 1 << 31 else np.int64
        coords = np.arange(shape[a], dtype=dt).reshape([-1 if i == a else 1 for i in range(rank)])
        per_axis.append(node.evaluate([np.broadcast_to(coords, shape), *consts]))
    rng = np.random.default_rng(0)
    out = []
    for k, port in enumerate(node.outputs()):
        maps = [np.asarray(p[k]) for p in per_axis]
        oshape = tuple(maps[0].shape)
        if any(m.shape != oshape for m in maps) or oshape != static_shape(port):
            return None
        if 0 in oshape:
            out.append((oshape, (0, (0,) * len(oshape))))
            continue

        def flat(pos: tuple[int, ...], maps: list[np.ndarray] = maps) -> int:
            return sum(int(m[pos]) * c for m, c in zip(maps, cs))

        zero = (0,) * len(oshape)
        off = flat(zero)
        strides = tuple(flat(tuple(1 if i == j else 0 for i in range(len(oshape)))) - off if d > 1 else 0
                        for j, d in enumerate(oshape))
        for _ in range(64):
            pos = tuple(int(rng.integers(0, d)) for d in oshape)
            if flat(pos) != off + sum(p * st for p, st in zip(pos, strides)):
                return None
        out.append((oshape, (off, strides)))
    return out


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def _pixel_map(node: Node, consts: list[np.ndarray], n: int, c: int, h: int, w: int,
               out: tuple[int, ...]) -> np.ndarray | None:
    """The source pixel (``y * w + x``) of each output pixel of a nearest resize, ``[n, 1, oh,
    ow]`` in f32, or None when the resize is not a gather of whole pixels.

    The reference kernel runs on an index map of one channel (``[n, 1, h, w]``): the table
    depends on the spatial sizes only, so its cost does not grow with the channels (a detector
    at a new image size lowers its upsamplings in well under a millisecond each). A resize whose
    output for one channel is not one channel (``sizes`` naming the channel axis) is checked on
    the whole map instead, channel by channel."""
    one = np.arange(n * h * w, dtype=np.float32).reshape(n, 1, h, w)
    imap = np.asarray(node.evaluate([one, *consts])[0])
    if imap.shape == (n, 1, *out[2:]):
        pix = imap - (np.arange(n, dtype=np.float32) * (h * w)).reshape(n, 1, 1, 1)
        ok = np.array_equal(pix, np.floor(pix)) and pix.min() >= 0 and pix.max() < h * w
        return pix if ok else None
    # f32 holds every index exactly (at most 2**22); the map is checked channel by channel, so
    # that no temporary is larger than one map (an upsampled map is tens of MB in f64 and int64)
    index = np.arange(n * c * h * w, dtype=np.float32).reshape(n, c, h, w)
    imap = np.asarray(node.evaluate([index, *consts])[0])
    if imap.shape != out:
        return None
    first = imap[:, :1]
    pix = first - (np.arange(n, dtype=np.float32) * (c * h * w)).reshape(n, 1, 1, 1)
    if not (np.array_equal(pix, np.floor(pix)) and pix.min() >= 0 and pix.max() < h * w):
        return None  # not a gather of whole pixels
    for ci in range(1, c):
        if not np.array_equal(imap[:, ci:ci + 1], first + np.float32(ci * h * w)):
            return None
    return pix


def lower_resize_nearest(lowering: Lowering, node: Node) -> bool:
    """Nearest-neighbour resizes of NHWC tensors: a gather of whole pixels, with the source
    pixel of each output pixel found once from the reference kernel (an index map). Called by
    the Interpolate rule in ``resize``."""
    from ember.devices.cpu.kernels.movement import gather_rows

    if str(node.attrs.get("mode", "")).lower() != "nearest" or node.input_values()[0].element_type.dtype.itemsize % 4:
        return False
    maybe = [const_of(p) for p in node.input_values()[1:]]
    consts = [c for c in maybe if c is not None]
    if len(consts) != len(maybe) or len(node.input_values()[0].partial_shape) != 4:
        return False
    n, c, h, w = static_shape(node.input_values()[0])
    out = static_shape(node.output(0))
    if n * c * h * w > _MAX_INDEX_MAP or 0 in out or out[:2] != (n, c):
        return False
    pix = _pixel_map(node, consts, n, c, h, w, out)
    if pix is None:
        return False
    table_of = _nearest_tables(node, consts, (n, c, h, w), out)
    fixed = np.ascontiguousarray((pix[:, 0].astype(np.int64) + (np.arange(n) * h * w).reshape(n, 1, 1)).reshape(-1))
    if table_of is not None and not np.array_equal(table_of(n, h, w, out[2], out[3]), fixed):
        table_of = None  # (the reference kernel on the node decides)
    src = lowering.native_input(lowering.tensor(node.input_values()[0]), NHWC)
    oh, ow = out[2], out[3]
    y = concat_slot(lowering, node.output(0), src.dtype) or lowering.value((n, oh, ow, c), NHWC, src.dtype,
                                                                           name=node.friendly_name)
    threads = lowering.threads
    ins = [src] if table_of is not None else [src, lowering.program.const(fixed)]

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        o = outs[0]  # (n, oh, ow, c), pixels evenly spaced (a Concat's channel slice or contiguous)
        bn, bh, bw, bc = arrs[0].shape
        on, oy, ox = o.shape[:3]
        # the map from the arrays' sizes (a shape-generic plan binds this at other image sizes)
        table = arrs[1] if table_of is None else fixed if (bn, bh, bw, oy, ox) == (n, h, w, oh, ow) \
            else table_of(bn, bh, bw, oy, ox)
        rows = np.lib.stride_tricks.as_strided(o, (1, on * oy * ox, bc), (0, o.strides[2], o.strides[3]))
        return [gather_rows(arrs[0].reshape(1, bn * bh * bw, bc), table, rows, 1, False, threads, lowering.isa)]

    lowering.program.add(Op(node.friendly_name, "Interpolate", ins, [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    fy, fx = oh // h, ow // w
    replicated = (np.arange(oh) // max(fy, 1) * w).reshape(oh, 1) + np.arange(ow) // max(fx, 1)
    if y.base is None and oh == fy * h and ow == fx * w and (fy > 1 or fx > 1) and np.array_equal(
            pix[:, 0], np.broadcast_to(replicated, pix[:, 0].shape)):
        UPSAMPLED.setdefault(lowering, {})[y.id] = (src, fy, fx)
    return True


def axes_and_scales(node: Node, consts: list[np.ndarray], in_shape: tuple[int, ...],
                     out_shape: tuple[int, ...]) -> tuple[list[int], list[np.float32]]:
    """The resized axes and their scales, as the op's evaluate computes them."""
    rank = len(in_shape)
    if node.version == "opset1":  # axes attribute, target sizes
        axes = [int(a) for a in node.attrs["axes"]]
        return axes, [np.float32(out_shape[a]) / np.float32(in_shape[a]) if in_shape[a] else np.float32(1)
                      for a in axes]
    inputs = [None, *consts]
    axes = ([int(a) % rank for a in np.asarray(inputs[node.axes_port]).reshape(-1)]
            if len(inputs) > node.axes_port else list(range(rank)))
    if str(node.attrs["shape_calculation_mode"]).lower() == "scales":
        scales = [np.float32(s) for s in np.asarray(inputs[node.scales_port]).reshape(-1)[: len(axes)]]
    else:
        scales = [np.float32(out_shape[a]) / np.float32(in_shape[a]) if in_shape[a] else np.float32(1) for a in axes]
    return axes, scales


def _nearest_tables(node: Node, consts: list[np.ndarray], in_shape: tuple[int, ...], out: tuple[int, ...]
                    ) -> Callable[[int, int, int, int, int], np.ndarray] | None:
    """For a nearest resize of H and W only (no padding): a function of the sizes giving the
    source pixel of every output pixel, from the reference kernel's arithmetic without the graph
    node (a binder keeps no node), so a plan bound at other image sizes makes its own map;
    None when the resize is of another form (its map then stays the lowered shape's constant)."""
    from ember.ops.misc import interpolate_kernel

    if node.version == "opset1" or any(node.attrs.get("pads_begin") or ()) or any(node.attrs.get("pads_end") or ()):
        return None
    axes, scales = axes_and_scales(node, consts, in_shape, out)
    kept = [(a, sc) for a, sc in zip(axes, scales) if a in (2, 3) or sc != 1]  # (batch and channels at scale 1)
    if not kept or any(a not in (2, 3) for a, _ in kept):
        return None
    axes, scales = [a for a, _ in kept], [sc for _, sc in kept]
    by_scales = str(node.attrs["shape_calculation_mode"]).lower() == "scales"
    attrs = {k: node.attrs[k] for k in ("mode", "coordinate_transformation_mode", "nearest_mode")}

    def table(n: int, h: int, w: int, oh: int, ow: int) -> np.ndarray:
        sizes = {2: (h, oh), 3: (w, ow)}
        sc = ([float(v) for v in scales] if by_scales
              else [float(np.float32(sizes[a][1]) / np.float32(sizes[a][0])) for a in axes])
        one = np.arange(n * h * w, dtype=np.float32).reshape(n, 1, h, w)
        imap = interpolate_kernel(one, [n, 1, oh, ow], axes, sc, attrs)
        return np.ascontiguousarray(np.asarray(imap).astype(np.int64).reshape(-1))

    return table


#: per lowering, the nearest upsamplings by whole factors (by output tensor id): the source and
#: the factors, so an elementwise program reading the output can read the source instead (the
#: upsampling's own op is then pruned when nothing else reads it)
UPSAMPLED: weakref.WeakKeyDictionary[Lowering, dict[int, tuple[Tensor, int, int]]] = weakref.WeakKeyDictionary()


# -- Roll ---------------------------------------------------------------------------------------

@lowers("Roll")
def lower_roll(lowering: Lowering, node: Node) -> bool:
    """Roll with constant shifts: per rolled axis the output is the input's two parts swapped,
    so ``2 ** axes`` strided copies (any item size of 1, 2, 4 or 8 bytes)."""
    import itertools

    from ember.devices.cpu.kernels.movement import strided_copy

    if fold_small(lowering, node):
        return True
    data_p = node.input_values()[0]
    sv, av = const_of(node.input_values()[1]), const_of(node.input_values()[2])
    dtype = data_p.element_type.dtype
    if sv is None or av is None or dtype.itemsize not in (1, 2, 4, 8) or data_p.element_type.name in (
            "string", "sequence"):
        return False
    shape = static_shape(data_p)
    rank = len(shape)
    shifts = [int(s) for s in np.asarray(sv).reshape(-1)]
    axes = [int(a) % rank for a in np.asarray(av).reshape(-1)] if rank else []
    if len(shifts) == 1 and len(axes) > 1:
        shifts = shifts * len(axes)
    if not axes or len(shifts) != len(axes) or 0 in shape:
        return False
    total = dict.fromkeys(axes, 0)
    for s, a in zip(shifts, axes):
        total[a] += s
    moved = {a: s % shape[a] for a, s in total.items() if s % shape[a]}
    src = lowering.native_input(lowering.tensor(data_p), PLAIN)
    y = lowering.value(shape, PLAIN, dtype, name=node.friendly_name)
    # per rolled axis two parts: output [s:] <- input [:n-s], output [:s] <- input [n-s:]
    parts = [[(slice(s, None), slice(None, shape[a] - s)), (slice(None, s), slice(shape[a] - s, None))]
             for a, s in moved.items()]
    blocks = []
    for combo in itertools.product(*parts) if parts else [()]:
        dst_ix: list[slice] = [slice(None)] * rank
        src_ix: list[slice] = [slice(None)] * rank
        for a, (d, s_) in zip(moved, combo):
            dst_ix[a], src_ix[a] = d, s_
        blocks.append((tuple(src_ix), tuple(dst_ix)))
    threads, isa = lowering.threads, lowering.isa

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        kernels = []
        for s_ix, d_ix in blocks:
            k = strided_copy(arrs[0][s_ix], outs[0][d_ix], threads, isa)
            if k is None:
                raise EmberError(f"ember: internal: Roll '{node.friendly_name}' does not fit the copy kernel")
            kernels.append(k)
        return kernels

    probe = np.empty(shape, dtype)
    if any(strided_copy(probe[s_ix], probe[d_ix], 1, isa) is None for s_ix, d_ix in blocks):
        return False
    lowering.program.add(Op(node.friendly_name, "Roll", [src], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
