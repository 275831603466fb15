"""Movement and creation ATen ops: views, concatenation, slicing, indexing, constants, ranges."""

from __future__ import annotations

from typing import Any

import numpy as np

import ember.opset as ops
from ember.frontends.pytorch.context import (
    Call,
    const,
    convert,
    dim_of,
    folded,
    i64,
    promote,
    rank_of,
    shape_tensor,
    static_dims,
)
from ember.frontends.pytorch.registry import converter
from ember.graph.node import Output
from ember.graph.types import Type

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def _target(sizes: Any) -> Output:
    return sizes if isinstance(sizes, Output) else i64(sizes)


@converter("aten.view", "aten.reshape", "aten._unsafe_view", "aten.view_copy")
def view(call: Call) -> Output:
    x = call.tensor("self")
    sizes = call.sizes("size" if "size" in call.args else "shape")
    return ops.reshape(x, _target(sizes), False).output(0)


@converter("aten.permute", "aten.permute_copy")
def permute(call: Call) -> Output:
    x = call.tensor("self")
    r = rank_of(x)
    dims = [d % r for d in call.ints("dims")] if r else []
    return ops.transpose(x, i64(dims)).output(0)


@converter("aten.transpose")
def transpose(call: Call) -> Output:
    x = call.tensor("self")
    r = rank_of(x)
    order = list(range(r))
    a, b = call.int("dim0") % r, call.int("dim1") % r
    order[a], order[b] = order[b], order[a]
    return ops.transpose(x, i64(order)).output(0)


@converter("aten.t", "aten.numpy_T")
def t(call: Call) -> Output:
    x = call.tensor("self")
    r = rank_of(x)
    return x if r < 2 else ops.transpose(x, i64(list(range(r))[::-1])).output(0)


@converter("aten.unsqueeze", "aten.unsqueeze_copy")
def unsqueeze(call: Call) -> Output:
    x = call.tensor("self")
    d = call.int("dim")
    if d < 0:
        d += rank_of(x) + 1
    return ops.unsqueeze(x, i64([d])).output(0)


@converter("aten.squeeze", "aten.squeeze_copy")
def squeeze(call: Call) -> Output:
    x = call.tensor("self")
    if call.args.get("dim") is None:
        return ops.squeeze(x).output(0)
    r = rank_of(x)
    dims = [d % r for d in call.ints("dim")] if r else []
    ps = x.partial_shape
    dims = [d for d in dims if not (ps[d].is_static and ps[d].get_length() != 1)]
    if not dims:
        return x
    return ops.squeeze(x, i64(dims)).output(0)


@converter("aten.expand", "aten.expand_copy", "aten.broadcast_to", "aten.expand_as")
def expand(call: Call) -> Output:
    x = call.tensor("self")
    if call.op == "aten.expand_as":
        return ops.broadcast(x, ops.shape_of(call.tensor("other")), None, "BIDIRECTIONAL").output(0)
    sizes = call.sizes("size")
    if isinstance(sizes, list):
        sizes = [1 if s == -1 else s for s in sizes]
        target = i64(sizes)
    else:
        target = ops.maximum(sizes, i64([1])).output(0)  # -1 keeps the input's size: broadcast from 1
    return ops.broadcast(x, target, None, "BIDIRECTIONAL").output(0)


def _common(tensors: list[Any], out_type: Type | None) -> list[Output]:
    ports = [v for v in tensors if isinstance(v, Output)]
    t = out_type
    if t is None:
        t = ports[0].element_type
        for p in ports[1:]:
            t = promote(const(np.zeros(1), t), p) if t is not p.element_type else t
    return [convert(v, t) if isinstance(v, Output) else const(v, t) for v in tensors]


@converter("aten.cat", "aten.concat", "aten.concatenate")
def cat(call: Call) -> Output:
    tensors = [v for v in call["tensors"]]
    parts = _common(tensors, call.out_type)
    # torch skips 1-D empty tensors in cat
    parts = [p for p in parts if not (p.partial_shape.is_static and p.partial_shape.rank_is_static and
                                      len(p.partial_shape) == 1 and p.partial_shape[0].get_length() == 0)] or parts
    r = rank_of(parts[0])
    d = call.int("dim", 0) % max(r, 1)
    return parts[0] if len(parts) == 1 else ops.concat(parts, d).output(0)


@converter("aten.stack")
def stack(call: Call) -> Output:
    parts = _common(list(call["tensors"]), call.out_type)
    r = rank_of(parts[0]) + 1
    d = call.int("dim", 0) % r
    return ops.concat([ops.unsqueeze(p, i64([d])).output(0) for p in parts], d).output(0)


def _split_lengths(call: Call, x: Output, dim: int, size: int) -> list[int]:
    total = x.partial_shape[dim]
    if not total.is_static:
        raise call.fail("splitting a dynamic dimension into equal parts is not supported")
    n = total.get_length()
    lengths = [size] * (n // size) + ([n % size] if n % size else [])
    return lengths or [0]


@converter("aten.split", "aten.split_with_sizes", "aten.split_copy", "aten.chunk", "aten.unsafe_split",
           "aten.unsafe_chunk", "aten.unsafe_split_with_sizes")
def split(call: Call) -> tuple[Output, ...]:
    x = call.tensor("self")
    r = rank_of(x)
    dim = call.int("dim", 0) % r
    if call.op in ("aten.chunk", "aten.unsafe_chunk"):
        total = x.partial_shape[dim]
        if not total.is_static:
            raise call.fail("chunk of a dynamic dimension is not supported")
        chunks = call.int("chunks")
        lengths = _split_lengths(call, x, dim, -(-total.get_length() // chunks))
    else:
        sizes = call["split_size" if "split_size" in call.args else "split_sizes"]
        sizes = folded(sizes)
        if isinstance(sizes, (int, np.integer)):
            lengths = _split_lengths(call, x, dim, int(sizes))
        else:
            lengths = call.ints("split_size" if "split_size" in call.args else "split_sizes")
    if len(lengths) == 1:
        return (x,)
    node = ops.variadic_split(x, i64(dim), i64(lengths))
    return tuple(node.output(i) for i in range(len(lengths)))


@converter("aten.unbind")
def unbind(call: Call) -> tuple[Output, ...]:
    x = call.tensor("self")
    r = rank_of(x)
    dim = call.int("dim", 0) % r
    n = x.partial_shape[dim]
    if not n.is_static:
        raise call.fail("unbind of a dynamic dimension is not supported")
    node = ops.split(x, i64(dim), n.get_length())
    return tuple(ops.squeeze(node.output(i), i64([dim])).output(0) for i in range(n.get_length()))


def _bound(v: Any, default: int) -> Any:
    v = folded(v)
    if v is None:
        return default
    if isinstance(v, list):
        v = v[0]
    if isinstance(v, Output):
        return v
    return min(max(int(v), INT64_MIN), INT64_MAX)


@converter("aten.slice", "aten.slice_copy")
def slice_(call: Call) -> Output:
    x = call.tensor("self")
    r = rank_of(x)
    dim = call.int("dim", 0) % r
    start = _bound(call.args.get("start"), 0)
    end = _bound(call.args.get("end"), INT64_MAX)
    step = call.int("step", 1)
    if start == 0 and end == INT64_MAX and step == 1:
        return x
    if not isinstance(end, Output) and x.partial_shape[dim].is_static and \
            end >= x.partial_shape[dim].get_length() and start == 0 and step == 1:
        return x
    return ops.slice(x, shape_tensor([start]), shape_tensor([end]), i64([step]), i64([dim])).output(0)


@converter("aten.select", "aten.select_copy")
def select(call: Call) -> Output:
    x = call.tensor("self")
    r = rank_of(x)
    dim = call.int("dim") % r
    idx = folded(call["index"])
    index = convert(idx, Type.i64) if isinstance(idx, Output) else i64(int(idx[0] if isinstance(idx, list) else idx))
    return ops.gather(x, index, i64(dim)).output(0)


@converter("aten.index_select")
def index_select(call: Call) -> Output:
    x = call.tensor("self")
    dim = call.int("dim") % rank_of(x)
    return ops.gather(x, call.tensor("index"), i64(dim)).output(0)


@converter("aten.embedding")
def embedding(call: Call) -> Output:
    return ops.gather(call.tensor("weight"), convert(call.tensor("indices"), Type.i64), i64(0)).output(0)


@converter("aten.gather")
def gather(call: Call) -> Output:
    x = call.tensor("self")
    dim = call.int("dim") % rank_of(x)
    return ops.gather_elements(x, call.tensor("index"), dim).output(0)


@converter("aten.index")
def index(call: Call) -> Output:
    x = call.tensor("self")
    indices = list(call["indices"])
    present = [i for i, v in enumerate(indices) if v is not None]
    if not present:
        return x
    tensors = [indices[i] if isinstance(indices[i], Output) else i64(indices[i]) for i in present]
    if any(t.element_type is Type.boolean for t in tensors):
        if len(tensors) != 1:
            raise call.fail("boolean indexing together with other indices is not supported")
        nz = ops.transpose(ops.non_zero(tensors[0], "i64"), i64([1, 0])).output(0)
        k = rank_of(tensors[0])
        if present[0] != 0:
            raise call.fail("boolean indexing after the first axis is not supported")
        return ops.gather_nd(x, nz, 0).output(0) if k else x
    if len(present) == 1:
        return ops.gather(x, tensors[0], i64(present[0])).output(0)
    # several advanced indices: move their axes first, GatherND with the broadcast indices stacked on a
    # last axis; torch keeps the result where adjacent indices were, else puts it first
    r = rank_of(x)
    idx64 = [convert(t_, Type.i64) for t_ in tensors]
    b = max(rank_of(t_) for t_ in idx64)
    acc = idx64[0]
    for t_ in idx64[1:]:
        acc = ops.add(acc, t_).output(0)
    target = ops.shape_of(acc)
    nd = ops.concat([ops.unsqueeze(ops.broadcast(t_, target), i64([-1])).output(0) for t_ in idx64], -1).output(0)
    rest = [a for a in range(r) if a not in present]
    if present != list(range(len(present))):
        x = ops.transpose(x, i64(present + rest)).output(0)
    y = ops.gather_nd(x, nd, 0).output(0)
    k = present[0]
    adjacent = present == list(range(k, k + len(present)))
    if adjacent and k > 0:
        n_rest = r - len(present)
        order = list(range(b, b + k)) + list(range(b)) + list(range(b + k, b + n_rest))
        y = ops.transpose(y, i64(order)).output(0)
    return y


@converter("aten.flatten")
def flatten(call: Call) -> Output:
    x = call.tensor("self")
    r = rank_of(x)
    if r == 0:
        return ops.reshape(x, i64([1]), False).output(0)
    s, e = call.int("start_dim", 0) % r, call.int("end_dim", -1) % r
    dims = static_dims(x)
    if dims is not None:
        new = dims[:s] + [int(np.prod(dims[s:e + 1], dtype=np.int64))] + dims[e + 1:]
        return ops.reshape(x, i64(new), False).output(0)
    new_shape = [0] * s + [-1] + [0] * (r - e - 1)
    return ops.reshape(x, i64(new_shape), True).output(0)


@converter("aten.sym_size", "aten.size")
def sym_size(call: Call) -> Any:
    x = call.tensor("self")
    if call.args.get("dim") is None:
        dims = static_dims(x)
        return dims if dims is not None else ops.shape_of(x, "i64").output(0)
    return dim_of(x, call.int("dim"))


@converter("aten.sym_numel", "aten.numel")
def numel(call: Call) -> Any:
    x = call.tensor("self")
    dims = static_dims(x)
    if dims is not None:
        return int(np.prod(dims, dtype=np.int64))
    return ops.reduce_prod(ops.shape_of(x, "i64"), i64([0]), False).output(0)


@converter("aten.dim")
def dim(call: Call) -> int:
    return rank_of(call.tensor("self"))


def _fill(call: Call, sizes: Any, value: Any, et: Type) -> Output:
    v = value if isinstance(value, Output) else const(value, et)
    v = convert(v, et)
    return ops.broadcast(v, _target(sizes)).output(0)


def _creation_type(call: Call, value: Any, like: Output | None = None) -> Type:
    et = call.out_type or call.dtype("dtype")
    if et is None and like is not None:
        et = like.element_type
    if et is None:
        et = Type.f32 if isinstance(value, float) else (Type.boolean if isinstance(value, bool) else Type.i64)
    return et


@converter("aten.full", "aten.zeros", "aten.ones", "aten.empty", "aten.new_full", "aten.new_zeros", "aten.new_ones",
           "aten.new_empty", "aten.empty_strided", "aten.new_empty_strided")
def full(call: Call) -> Output:
    value = {"aten.zeros": 0, "aten.ones": 1, "aten.new_zeros": 0, "aten.new_ones": 1, "aten.empty": 0,
             "aten.new_empty": 0, "aten.empty_strided": 0, "aten.new_empty_strided": 0}.get(call.op)
    if value is None:
        value = folded(call["fill_value"])
    like = call.args.get("self") if isinstance(call.args.get("self"), Output) else None
    et = _creation_type(call, value if not isinstance(value, Output) else 0.0, like)
    return _fill(call, call.sizes("size"), value, et)


@converter("aten.full_like", "aten.zeros_like", "aten.ones_like", "aten.empty_like")
def full_like(call: Call) -> Output:
    x = call.tensor("self")
    value = {"aten.zeros_like": 0, "aten.ones_like": 1, "aten.empty_like": 0}.get(call.op)
    if value is None:
        value = folded(call["fill_value"])
    et = call.out_type or call.dtype("dtype") or x.element_type
    dims = static_dims(x)
    return _fill(call, dims if dims is not None else ops.shape_of(x, "i64").output(0), value, et)


@converter("aten.scalar_tensor", "aten.tensor")
def scalar_tensor(call: Call) -> Output:
    v = folded(call["s"] if "s" in call.args else call["data"])
    et = _creation_type(call, v)
    return convert(v, et) if isinstance(v, Output) else const(v, et)


@converter("aten.arange")
def arange(call: Call) -> Output:
    start = folded(call.args.get("start", 0)) if call.overload != "default" else 0
    end = folded(call["end"])
    step = folded(call.args.get("step", 1)) if "step" in call.args else 1
    vals = [v for v in (start, end, step)]
    is_float = any(isinstance(v, float) or (isinstance(v, Output) and v.element_type.is_real) for v in vals)
    et = call.out_type or call.dtype("dtype") or (Type.f32 if is_float else Type.i64)
    work = Type.f32 if is_float and not et.is_real else et

    def port(v: Any) -> Output:
        if isinstance(v, Output):
            return convert(ops.reshape(v, i64([]), False).output(0) if rank_of(v) else v, work)
        return const(v, work)

    return convert(ops.range(port(start), port(end), port(step), work).output(0), et)


@converter("aten.constant_pad_nd", "aten.pad")
def constant_pad(call: Call) -> Output:
    x = call.tensor("self")
    mode = call.get("mode", "constant")
    pad = call.ints("pad")
    r = rank_of(x)
    begin, end = [0] * r, [0] * r
    for i in range(len(pad) // 2):
        begin[r - 1 - i] = pad[2 * i]
        end[r - 1 - i] = pad[2 * i + 1]
    value = call.get("value", 0.0)
    if mode != "constant":
        mode = {"reflect": "reflect", "replicate": "edge", "circular": "circular"}.get(mode)
        if mode is None or mode == "circular":
            raise call.fail(f"pad mode '{call.get('mode')}' is not supported")
        return ops.pad(x, i64(begin), i64(end), mode).output(0)
    return ops.pad(x, i64(begin), i64(end), "constant", const(value, x.element_type)).output(0)


@converter("aten.reflection_pad1d", "aten.reflection_pad2d", "aten.replication_pad1d", "aten.replication_pad2d")
def reflection_pad(call: Call) -> Output:
    x = call.tensor("self")
    pad = call.ints("padding")
    r = rank_of(x)
    begin, end = [0] * r, [0] * r
    for i in range(len(pad) // 2):
        begin[r - 1 - i] = pad[2 * i]
        end[r - 1 - i] = pad[2 * i + 1]
    mode = "reflect" if "reflection" in call.op else "edge"
    return ops.pad(x, i64(begin), i64(end), mode).output(0)


@converter("aten.repeat")
def repeat(call: Call) -> Output:
    x = call.tensor("self")
    reps = call.sizes("repeats")
    return ops.tile(x, _target(reps)).output(0)


@converter("aten.flip")
def flip(call: Call) -> Output:
    x = call.tensor("self")
    r = rank_of(x)
    dims = [d % r for d in call.ints("dims")]
    n = len(dims)
    return ops.slice(x, i64([-1] * n), i64([INT64_MIN] * n), i64([-1] * n), i64(dims)).output(0)


@converter("aten.roll")
def roll(call: Call) -> Output:
    x = call.tensor("self")
    shifts, dims = call.ints("shifts"), call.ints("dims", [])
    if not dims:
        flat = ops.reshape(x, i64([-1]), False).output(0)
        return ops.reshape(ops.roll(flat, i64(shifts), i64([0])), ops.shape_of(x), False).output(0)
    return ops.roll(x, i64(shifts), i64(dims)).output(0)


@converter("aten.cumsum")
def cumsum(call: Call) -> Output:
    x = call.tensor("self")
    et = call.out_type or call.dtype("dtype") or (x.element_type if x.element_type.is_real else Type.i64)
    return ops.cumsum(convert(x, et), i64(call.int("dim") % rank_of(x))).output(0)


@converter("aten.tril", "aten.triu")
def tril(call: Call) -> Output:
    x = call.tensor("self")
    k = call.int("diagonal", 0)
    rows = ops.range(i64(0), _scalar(dim_of(x, -2)), i64(1), "i64").output(0)
    cols = ops.range(i64(0), _scalar(dim_of(x, -1)), i64(1), "i64").output(0)
    diff = ops.subtract(cols, ops.unsqueeze(rows, i64([1])))
    keep = ops.less_equal(diff, i64(k)) if call.op == "aten.tril" else ops.greater_equal(diff, i64(k))
    return ops.select(keep, x, const(0, x.element_type)).output(0)


def _scalar(v: Any) -> Output:
    return v if isinstance(v, Output) else i64(int(v))


@converter("aten.index_put")
def index_put(call: Call) -> Output:
    """``x[indices] = values`` (``+=`` with ``accumulate``): a boolean mask with a scalar value, or
    one integer index tensor on the first axis."""
    x = call.tensor("self")
    indices = list(call["indices"])
    values = convert(call.tensor("values"), x.element_type)
    accumulate = bool(call.get("accumulate", False))
    present = [i for i, v in enumerate(indices) if v is not None]
    if len(present) != 1 or present[0] != 0:
        raise call.fail("index assignment is supported for one index on the first axis")
    index = indices[0]
    if index.element_type is Type.boolean:
        ps = values.partial_shape
        if not (ps.rank_is_static and (len(ps) == 0 or (ps.is_static and int(np.prod(ps.to_shape())) == 1))):
            raise call.fail("a boolean mask assignment needs a single value")
        mask = index
        while rank_of(mask) < rank_of(x):
            mask = ops.unsqueeze(mask, i64([-1])).output(0)
        scalar = ops.reshape(values, i64([]), False).output(0)
        new = ops.add(x, scalar).output(0) if accumulate else scalar
        return ops.select(mask, new, x).output(0)
    idx = ops.unsqueeze(convert(index, Type.i64), i64([-1])).output(0)
    rest = ops.slice(ops.shape_of(x), i64([1]), i64([INT64_MAX]), i64([1])).output(0)
    upd_shape = ops.concat([ops.shape_of(index), rest], 0).output(0)
    updates = ops.broadcast(values, upd_shape).output(0)
    return ops.scatter_nd_update(x, idx, updates, "sum" if accumulate else None).output(0)


@converter("aten.scatter", "aten.scatter_add", "aten.scatter_reduce")
def scatter(call: Call) -> Output:
    x = call.tensor("self")
    dim = call.int("dim") % rank_of(x)
    index = call.tensor("index")
    src = call.args.get("src", call.args.get("value"))
    updates = src if isinstance(src, Output) else ops.broadcast(const(src, x.element_type), ops.shape_of(index)).output(0)
    updates = convert(updates, x.element_type)
    reduction = "sum" if call.op == "aten.scatter_add" else call.get("reduce", "none")
    reduction = {"add": "sum", "multiply": "prod", "amax": "max", "amin": "min"}.get(reduction, reduction)
    include_self = bool(call.get("include_self", True))
    return ops.scatter_elements_update(x, index, updates, i64(dim), reduction, include_self).output(0)


@converter("aten.slice_scatter")
def slice_scatter(call: Call) -> Output:
    x = call.tensor("self")
    dim = call.int("dim", 0) % rank_of(x)
    start = _bound(call.args.get("start"), 0)
    end = _bound(call.args.get("end"), INT64_MAX)
    step = call.int("step", 1)
    return ops.slice_scatter(x, convert(call.tensor("src"), x.element_type), shape_tensor([start]),
                             shape_tensor([end]), i64([step]), i64([dim])).output(0)


@converter("aten.select_scatter")
def select_scatter(call: Call) -> Output:
    x = call.tensor("self")
    dim = call.int("dim") % rank_of(x)
    idx = call.int("index")
    src = ops.unsqueeze(convert(call.tensor("src"), x.element_type), i64([dim])).output(0)
    end = idx + 1 if idx != -1 else INT64_MAX
    return ops.slice_scatter(x, src, i64([idx]), i64([end]), i64([1]), i64([dim])).output(0)


@converter("aten.nonzero")
def nonzero(call: Call) -> Output:
    return ops.transpose(ops.non_zero(call.tensor("self"), "i64"), i64([1, 0])).output(0)


@converter("aten.topk")
def topk(call: Call) -> tuple[Output, Output]:
    x = call.tensor("self")
    axis = call.int("dim", -1) % rank_of(x)
    k = call["k"]
    k = convert(k, Type.i64) if isinstance(k, Output) else i64(int(k))
    mode = "max" if call.get("largest", True) else "min"
    node = ops.topk(x, k, axis, mode, "value" if call.get("sorted", True) else "none", "i64", True)
    return node.output(0), node.output(1)


@converter("aten.sort", "aten.argsort")
def sort(call: Call) -> Any:
    x = call.tensor("self")
    axis = call.int("dim", -1) % rank_of(x)
    n = dim_of(x, axis)
    k = n if isinstance(n, Output) else i64(n)
    mode = "max" if call.get("descending", False) else "min"
    node = ops.topk(x, k, axis, mode, "value", "i64", True)
    return node.output(1) if call.op == "aten.argsort" else (node.output(0), node.output(1))


@converter("aten.einsum")
def einsum(call: Call) -> Output:
    return ops.einsum(list(call["tensors"]), str(call["equation"]).replace(" ", "")).output(0)


@converter("aten.pixel_unshuffle")
def pixel_unshuffle(call: Call) -> Output:
    return ops.space_to_depth(call.tensor("self"), "depth_first", call.int("downscale_factor")).output(0)
