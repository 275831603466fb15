"""Lowering rules for reductions (ReduceMean/Sum/Max/Min/Prod/L1/L2 of f32; Sum/Max/Min/Prod/L1
of int32/int64, wrapping as REFERENCE; ReduceLogicalAnd/Or) over any axis set.

Adjacent reduced axes are one pass of :func:`~ember.devices.cpu.kernels.reduce.reduce_kernel`
over an ``[outer, R, inner]`` view; axes that are not adjacent take one pass per run of
adjacent axes, innermost first (ReduceL1/L2's abs or square on the first pass, the mean's
scale or L2's root on the last). Global pooling of an NHWC tensor reads it in place.
"""
from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from ember.devices.cpu.lowering.driver import (
    F32,
    Lowering,
    const_of,
    lowers,
    static_shape,
)
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op, Tensor
from ember.errors import EmberError
from ember.graph.node import Node
from ember.graph.types import Type

F64 = np.dtype(np.float64)
I32 = np.dtype(np.int32)
I64 = np.dtype(np.int64)
#: element types reduced in a wider one: converted on the way in and back on the way out (f16
#: and bf16 in f32; u8/i8/i16 in int32, whose sums and products wrap to the same low bits)
_VIA = {np.dtype(np.float16): F32, np.dtype(ml_dtypes.bfloat16): F32, np.dtype(np.uint8): I32,
        np.dtype(np.int8): I32, np.dtype(np.int16): I32}
#: the i64-register op that wraps an int32 sum back to the narrow type, for integer means
_WRAP = {np.dtype(np.uint8): "wrapu8", np.dtype(np.int8): "wrap8", np.dtype(np.int16): "wrap16"}
#: op type -> (kernel op, first-pass pre-op)
_REDUCE_OPS = {"ReduceMean": ("sum", "none"), "ReduceSum": ("sum", "none"), "ReduceMax": ("max", "none"),
               "ReduceMin": ("min", "none"), "ReduceProd": ("prod", "none"), "ReduceL1": ("sum", "abs"),
               "ReduceL2": ("sum", "square")}


def _runs(axes: list[int]) -> list[list[int]]:
    """Sorted axes grouped into runs of adjacent axes."""
    runs: list[list[int]] = []
    for a in axes:
        if runs and runs[-1][-1] == a - 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    return runs


@lowers(*_REDUCE_OPS)
def lower_reduce(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.reduce import reduce_kernel

    xport = node.input_values()[0]
    axes_v = const_of(node.input_values()[1])
    dtype = xport.element_type.dtype
    if xport.element_type not in (Type.f32, Type.f64, Type.i32, Type.i64, Type.f16, Type.bf16, Type.u8, Type.i8,
                                  Type.i16) or axes_v is None:
        return False
    via = _VIA.get(dtype)
    work = via or dtype
    if dtype == np.dtype(np.float16):
        from ember.devices.cpu.kernels.eltwise import halves_ok

        if not halves_ok(lowering.isa):
            return False
    integer = work in (I32, I64)
    if integer and node.type_name == "ReduceL2":  # the root of a float sum, truncated
        return False
    shape = static_shape(xport)
    rank = len(shape)
    if rank == 0:
        return False
    axes = sorted({int(a) % rank for a in np.asarray(axes_v).reshape(-1)})
    if not axes:
        return False
    op, pre = _REDUCE_OPS[node.type_name]
    total = int(np.prod([shape[a] for a in axes]))
    if total == 0 and op in ("max", "min") and (not integer or dtype.itemsize < 4 and dtype.kind == "i"):
        return False  # REFERENCE gives the type's finite ends
    keep = bool(node.attrs["keep_dims"])
    out_shape = static_shape(node.output(0))
    src = lowering.tensor(xport)
    # the mean of nothing is 0, as REFERENCE and OpenVINO give (a sum of nothing, scaled by 0)
    scale = (1.0 / total if total else 0.0) if node.type_name == "ReduceMean" else 1.0
    sqrt = node.type_name == "ReduceL2"
    threads = lowering.threads
    isa = lowering.isa
    if via is not None or (integer and node.type_name == "ReduceMean"):
        y = _widened(lowering, node, lowering.native_input(src, PLAIN), shape, axes, op, pre, scale, sqrt, out_shape,
                     dtype, work)
        lowering.finish(node, y, [])
        return True
    if src.layout == NHWC and axes == [2, 3]:  # global pooling: reduce H*W of [N, H*W, C] in place
        n, h, w, c = src.shape
        src = lowering.native_input(src, NHWC, contiguous=True)
        y = lowering.value((n, 1, 1, c) if keep else out_shape, NHWC if keep else PLAIN, dtype, name=node.friendly_name)

        mean = node.type_name == "ReduceMean"

        def bind_nhwc(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
            # sizes from the array: a shape-generic plan binds this at other image sizes too
            bn, bh, bw, bc = ins[0].shape
            s = (1.0 / (bh * bw) if bh * bw else 0.0) if mean else scale
            return [reduce_kernel(ins[0].reshape(bn, bh * bw, bc), outs[0].reshape(bn, bc), op, threads, pre, s,
                                  sqrt, isa)]

        lowering.program.add(Op(node.friendly_name, node.type_name, [src], [y], native=True, bind=bind_nhwc))
        lowering.finish(node, y, [])
        return True
    if src.layout == NHWC and axes == [1]:  # over the channels of an NHWC tensor: its contiguous rows
        n, h, w, c = src.shape
        src = lowering.native_input(src, NHWC, contiguous=True)
        y = lowering.value(out_shape, PLAIN, dtype, name=node.friendly_name)  # [N, (1,) H, W]: same memory

        def bind_channels(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
            return [reduce_kernel(ins[0].reshape(n * h * w, c, 1), outs[0].reshape(n * h * w, 1), op, threads, pre,
                                  scale, sqrt, isa)]

        lowering.program.add(Op(node.friendly_name, node.type_name, [src], [y], native=True, bind=bind_channels))
        lowering.finish(node, y, [])
        return True
    y = _passes(lowering, node, lowering.native_input(src, PLAIN), shape, axes, op, pre, scale, sqrt, out_shape,
                dtype, mean=node.type_name == "ReduceMean")
    lowering.finish(node, y, [])
    return True


def _convert_op(lowering: Lowering, name: str, src: list[Tensor], y: Tensor, program: list[tuple],
                rtype: str) -> None:
    """An elementwise program from ``src`` into ``y`` (loads and stores convert)."""
    from ember.devices.cpu.kernels.eltwise import eltwise_kernel

    threads, isa = lowering.threads, lowering.isa

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        k = eltwise_kernel(outs[0], ins, program, threads, isa, rtype)
        if k is None:
            raise EmberError(f"ember: internal: conversion '{name}' does not fit the kernel")
        return [k]

    lowering.program.add(Op(name, "Convert", src, [y], native=True, bind=bind))


def _widened(lowering: Lowering, node: Node, src: Tensor, shape: tuple[int, ...], axes: list[int], op: str, pre: str,
             scale: float, sqrt: bool, out_shape: tuple[int, ...], dtype: np.dtype, work: np.dtype) -> Tensor:
    """A reduction computed in ``work`` (f32 for f16/bf16, int32 for narrow integers), and an
    integer mean: the input converted, the passes, then the result converted back (an integer
    mean divides the wrapped sum, truncating toward zero, as REFERENCE does)."""
    from ember.devices.cpu.kernels.eltwise import LOAD_FOR, STORE_FOR

    name = node.friendly_name
    rtype = "f32" if work == F32 else "i64"
    cur = src
    if work != dtype:
        cur = lowering.value(shape, PLAIN, work, name=name + "/in")
        _convert_op(lowering, name + "/in", [src], cur, [(LOAD_FOR[dtype], 0, 0, 0, 0.0, 0.0),
                                                         (STORE_FOR[work], 0, 0, 0, 0.0, 0.0)], rtype)
    mean = node.type_name == "ReduceMean" and rtype == "i64"
    red = _passes(lowering, node, cur, shape, axes, op, pre, 1.0 if mean else scale, sqrt, out_shape, work)
    y = lowering.value(out_shape, PLAIN, dtype, name=name + "/out")
    program: list[tuple] = [(LOAD_FOR[work], 0, 0, 0, 0.0, 0.0)]
    ins = [red]
    if mean:
        if dtype in _WRAP:
            program.append((_WRAP[dtype], 0, 0, 0, 0.0, 0.0))
        total = int(np.prod([shape[a] for a in axes]))
        ins.append(lowering.program.const(np.array(total, np.int64)))
        program += [("load_i64", 1, 1, 0, 0.0, 0.0), ("div", 0, 0, 1, 0.0, 0.0)]
    program.append((STORE_FOR[dtype], 0, 0, 0, 0.0, 0.0))
    _convert_op(lowering, name + "/out", ins, y, program, rtype)
    return y


def _passes(lowering: Lowering, node: Node, cur: Tensor, shape: tuple[int, ...], axes: list[int], op: str, pre: str,
            scale: float, sqrt: bool, out_shape: tuple[int, ...], dtype: np.dtype = F32, mean: bool = False) -> Tensor:
    """The reduction of plain ``cur`` as one pass per run of adjacent axes; the result. ``mean``:
    ``scale`` is 1 / the reduced count (a single run's binder takes it from its array's sizes)."""
    from ember.devices.cpu.kernels.reduce import reduce_kernel

    threads, isa = lowering.threads, lowering.isa
    cur_shape = list(shape)
    runs = _runs(axes)[::-1]
    mean = mean and len(runs) == 1
    for k, run in enumerate(runs):
        first, last = k == 0, k == len(runs) - 1
        a, b = run[0], run[-1]
        cur_shape = cur_shape[:a] + [1] * len(run) + cur_shape[b + 1:]
        name = node.friendly_name if last else f"{node.friendly_name}/pass{k}"
        y = lowering.value(out_shape if last else tuple(cur_shape), PLAIN, dtype, name=name)

        def bind(ins: list[np.ndarray], outs: list[np.ndarray], a: int = a, b: int = b,
                 pre: str = pre if first else "none", scale: float = scale if last else 1.0,
                 sqrt: bool = sqrt and last) -> list[Any]:
            s = ins[0].shape  # sizes from the array (a shape-generic plan binds this at other input shapes)
            outer, r, inner = math.prod(s[:a]), math.prod(s[a:b + 1]), math.prod(s[b + 1:])
            if mean:  # (the value the rule computes: 1 / the count, 0 for none)
                scale = 1.0 / r if r else 0.0
            return [reduce_kernel(ins[0].reshape(outer, r, inner), outs[0].reshape(outer, inner),
                                  op, threads, pre, scale, sqrt, isa)]

        lowering.program.add(Op(name, node.type_name, [cur], [y], native=True, bind=bind))
        cur = y
    return cur


@lowers("ReduceLogicalAnd", "ReduceLogicalOr")
def lower_reduce_logical(lowering: Lowering, node: Node) -> bool:
    """Booleans as 0/1 floats: And is a product (1 over nothing), Or a sum (0 over nothing),
    then back to booleans; the conversions are elementwise programs."""
    from ember.devices.cpu.kernels.eltwise import eltwise_kernel

    xport = node.input_values()[0]
    axes_v = const_of(node.input_values()[1])
    if xport.element_type.dtype != np.dtype(np.bool_) or axes_v is None:
        return False
    shape = static_shape(xport)
    rank = len(shape)
    axes = sorted({int(a) % max(rank, 1) for a in np.asarray(axes_v).reshape(-1)})
    if rank == 0 or not axes:
        return False
    out_shape = static_shape(node.output(0))
    threads, isa = lowering.threads, lowering.isa
    src = lowering.native_input(lowering.tensor(xport), PLAIN)
    as_f32 = lowering.value(shape, PLAIN, name=node.friendly_name + "/f32")

    def to_f32(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [eltwise_kernel(outs[0], [ins[0]], [("load_u8", 0, 0, 0, 0.0, 0.0), ("store", 0, 0, 0, 0.0, 0.0)],
                               threads, isa)]

    lowering.program.add(Op(node.friendly_name + "/f32", "Convert", [src], [as_f32], native=True, bind=to_f32))
    op = "prod" if node.type_name == "ReduceLogicalAnd" else "sum"
    red = _passes(lowering, node, as_f32, shape, axes, op, "none", 1.0, False, out_shape)
    y = lowering.value(out_shape, PLAIN, np.dtype(np.bool_), name=node.friendly_name)

    def to_bool(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [eltwise_kernel(outs[0], [ins[0]], [("load", 0, 0, 0, 0.0, 0.0), ("store_bool", 0, 0, 0, 0.0, 0.0)],
                               threads, isa)]

    lowering.program.add(Op(node.friendly_name + "/bool", "Convert", [red], [y], native=True, bind=to_bool))
    lowering.finish(node, y, [])
    return True


@lowers("NormalizeL2")
def lower_normalize_l2(lowering: Lowering, node: Node) -> bool:
    """x / sqrt(eps-guarded sum of squares): a reduction of squares over the axes (keeping
    them), then one elementwise program (guard, root, divide) with the sums broadcast back."""
    from ember.devices.cpu.kernels.eltwise import eltwise_kernel

    xport = node.input_values()[0]
    axes_v = const_of(node.input_values()[1])
    if xport.element_type.dtype != F32 or axes_v is None:
        return False
    shape = static_shape(xport)
    rank = len(shape)
    axes = sorted({int(a) % max(rank, 1) for a in np.asarray(axes_v).reshape(-1)})
    if rank == 0 or not axes:
        return False
    eps = float(np.float32(node.attrs["eps"]))
    add = str(node.attrs["eps_mode"]).lower() == "add"
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    src = lowering.native_input(lowering.tensor(xport), PLAIN)
    sums = _passes(lowering, node, src, shape, axes, "sum", "square", 1.0, False, kept)
    guard = ("addc", 1, 1, 0, eps, 0.0) if add else ("clamp", 1, 1, 0, eps, math.inf)
    program = [("load", 0, 0, 0, 0.0, 0.0), ("load", 1, 1, 0, 0.0, 0.0), guard, ("sqrt", 1, 1, 0, 0.0, 0.0),
               ("div", 0, 0, 1, 0.0, 0.0), ("store", 0, 0, 0, 0.0, 0.0)]
    y = lowering.value(shape, PLAIN, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa
    name = node.friendly_name  # (the binder keeps no graph node)

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        k = eltwise_kernel(outs[0], [ins[0], ins[1]], program, threads, isa)
        if k is None:
            raise EmberError(f"ember: internal: NormalizeL2 '{name}' does not fit the kernel")
        return [k]

    from ember.devices.cpu.kernels.eltwise import eltwise_fits

    if not eltwise_fits(shape, [shape, kept]):
        return False
    lowering.program.add(Op(node.friendly_name + "/scale", "NormalizeL2", [src, sums], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
