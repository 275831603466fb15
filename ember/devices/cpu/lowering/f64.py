"""f64 SoftMax / LogSoftmax / MVN, AvgPool and MatMul on the f64 kernels (``kernels/f64.py``):
the rules of these op types (``compute.py``, ``conv.py``) hand their f64 nodes here. Computed
in f64 as the reference kernels compute them; nothing is narrowed to f32."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import Lowering, const_of, static_shape
from ember.devices.cpu.runtime.plan import PLAIN, Op
from ember.graph.node import Node

F64 = np.dtype(np.float64)
#: the most tap-table entries (output positions x kernel taps) an f64 AvgPool compiles
_MAX_POOL_TABLE = 1 << 24


def _plain(lowering: Lowering, node: Node, port: int = 0) -> Any:
    return lowering.native_input(lowering.tensor(node.input_values()[port]), PLAIN)


def lower_rows_f64(lowering: Lowering, node: Node) -> bool:
    """SoftMax, LogSoftmax (any axis) and MVN-6 (constant axes that are one contiguous run) of f64."""
    from ember.devices.cpu.kernels.f64 import rows64
    from ember.ops.reduce import reduction_axes

    port = node.input_values()[0]
    if port.element_type.dtype != F64:
        return False
    shape = static_shape(port)
    rank = len(shape)
    if rank == 0:
        return False
    kw: dict[str, Any] = {}
    if node.type_name == "MVN":
        axes_v = const_of(node.input_values()[1]) if len(node.input_values()) > 1 else None
        if node.version != "opset6" or axes_v is None:
            return False
        axes = sorted(set(reduction_axes(node, axes_v, rank)))
        if not axes or axes != list(range(axes[0], axes[-1] + 1)):  # one run of axes, reduced as one
            return False
        first, last = axes[0], axes[-1]
        kind = "mvn"
        kw = {"eps": float(np.float32(node.attrs["eps"])), "normalize_variance": bool(node.attrs["normalize_variance"]),
              "eps_inside": str(node.attrs["eps_mode"]).lower() == "inside_sqrt"}
    else:
        first = last = int(node.attrs["axis"]) % rank
        kind = "logsoftmax" if node.type_name == "LogSoftmax" else "softmax"
    outer, n, inner = math.prod(shape[:first]), math.prod(shape[first:last + 1]), math.prod(shape[last + 1:])
    x = _plain(lowering, node)
    y = lowering.value(shape, PLAIN, F64, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [rows64(ins[0], outs[0], outer=outer, n=n, inner=inner, kind=kind, threads=threads, isa=isa, **kw)]

    lowering.program.add(Op(node.friendly_name, node.type_name, [x], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True


def lower_avgpool_f64(lowering: Lowering, node: Node) -> bool:
    """AvgPool and MaxPool (values; 1-, 2- and 3-D, every padding and rounding mode) of f64 from
    a tap table; a MaxPool whose indices are used stays on the reference kernel."""
    from ember.devices.cpu.kernels.f64 import avgpool64, pool_tables

    port = node.input_values()[0]
    is_max = node.type_name == "MaxPool"
    if node.type_name not in ("AvgPool", "MaxPool") or port.element_type.dtype != F64:
        return False
    if any(o.targets or lowering.is_result(o) for o in node.outputs()[1:]):
        return False
    shape = static_shape(port)
    out_shape = static_shape(node.output(0))
    nd = len(shape) - 2
    if nd < 1:
        return False
    pb, pe, _ = node.plan(port.partial_shape)
    kernel = [int(k) for k in node.attrs["kernel"]]
    strides = [int(s) for s in node.attrs["strides"]]
    dil = [int(d) for d in node._dilations(nd)]
    out = list(out_shape[2:])
    if math.prod(out) * math.prod(kernel) > _MAX_POOL_TABLE or min(*pb, *pe, 0) < 0:
        return False
    padded = any(pb) or any(pe)
    tab, div = pool_tables(tuple(shape[2:]), kernel, strides, dil, list(pb), out,
                           bool(node.attrs.get("exclude-pad", False)), padded)
    planes, in_plane, out_plane = shape[0] * shape[1], math.prod(shape[2:]), math.prod(out)
    x = _plain(lowering, node)
    consts = [lowering.program.const(tab), lowering.program.const(div)]
    y = lowering.value(out_shape, PLAIN, F64, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [avgpool64(ins[0].reshape(planes, in_plane), outs[0].reshape(planes, out_plane), ins[1], ins[2],
                          threads, isa, is_max)]

    lowering.program.add(Op(node.friendly_name, node.type_name, [x, *consts], [y], native=True, bind=bind))
    for o in node.outputs()[1:]:  # MaxPool's indices: not used (else the reference kernel computes them)
        lowering.bind_port(o, lowering.value(static_shape(o), PLAIN, o.element_type.dtype))
    lowering.finish(node, y, [])
    return True


def lower_matmul_f64(lowering: Lowering, node: Node) -> bool:
    """MatMul of f64 (constant or runtime operands, transposes, 1-D operands, any batch broadcast)."""
    from ember.devices.cpu.kernels.f64 import matmul64

    a_port, b_port = node.input_values()
    if a_port.element_type.dtype != F64 or b_port.element_type.dtype != F64:
        return False
    a_shape, b_shape = static_shape(a_port), static_shape(b_port)
    out_shape = static_shape(node.output(0))
    ta, tb = bool(node.attrs["transpose_a"]), bool(node.attrs["transpose_b"])
    # 1-D operands: a row (A) or a column (B), whatever the transpose flags say
    a2 = ((1,) + a_shape) if len(a_shape) == 1 else a_shape
    b2 = (b_shape + (1,)) if len(b_shape) == 1 else b_shape
    ta = ta and len(a_shape) > 1
    tb = tb and len(b_shape) > 1
    m, k = (a2[-1], a2[-2]) if ta else (a2[-2], a2[-1])
    n = b2[-2] if tb else b2[-1]
    batch_shape = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    batch = math.prod(batch_shape)
    if math.prod(out_shape) != batch * m * n:
        return False

    def offsets(bshape: tuple[int, ...], matrix: int) -> Any:
        """Where each output batch's matrix starts in the operand (its batch broadcast)."""
        first = np.arange(math.prod(bshape), dtype=np.int64).reshape(bshape) * matrix
        return lowering.program.const(np.ascontiguousarray(np.broadcast_to(first, batch_shape).reshape(-1)))

    a_strides = (1, a2[-1]) if ta else (a2[-1], 1)   # A[i, k]
    b_strides = (1, b2[-1]) if tb else (b2[-1], 1)   # B[k, j]
    a, b = _plain(lowering, node, 0), _plain(lowering, node, 1)
    offs = [offsets(a2[:-2], a2[-2] * a2[-1]), offsets(b2[:-2], b2[-2] * b2[-1])]
    y = lowering.value(out_shape, PLAIN, F64, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [matmul64(ins[0], ins[1], outs[0], m=m, n=n, k=k, a_offsets=ins[2], b_offsets=ins[3],
                         a_strides=a_strides, b_strides=b_strides, threads=threads, isa=isa)]

    lowering.program.add(Op(node.friendly_name, "MatMul", [a, b, *offs], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
