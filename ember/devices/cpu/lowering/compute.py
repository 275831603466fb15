"""Lowering rules for the GEMM kernels (MatMul, attention) and the row kernels (SoftMax,
LogSoftmax, MVN)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import (
    F32,
    Lowering,
    const_of,
    epilogue_chain,
    lowers,
    probe_array,
    scalar_of,
    static_shape,
)
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op, Tensor
from ember.errors import EmberError
from ember.graph.node import Node, Output

# -- matrix products --------------------------------------------------------------------------

@lowers("MatMul")
def lower_matmul(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.gemm import Epilogue, Gemm, pack_b, residual_in_place_ok, y_bf16_ok
    from ember.devices.cpu.lowering.passes import bf16_gemm_readers_only, take_epilogue_activation

    a_port, b_port = node.input_values()
    if a_port.element_type.dtype == np.float64:  # f64: its own kernel
        from ember.devices.cpu.lowering.f64 import lower_matmul_f64

        return lower_matmul_f64(lowering, node)
    w = const_of(b_port)
    if w is None or const_of(a_port) is not None:
        return _lower_batched_matmul(lowering, node)
    if w.dtype != F32 or a_port.element_type.dtype != F32 or node.attrs["transpose_a"]:
        return False
    a_shape = static_shape(a_port)
    if w.ndim < 2 or len(a_shape) < 2 or w.ndim > len(a_shape) or any(d != 1 for d in w.shape[:-2]):
        return False
    w2: np.ndarray = w.reshape(w.shape[-2:])
    if node.attrs["transpose_b"]:
        w2 = w2.T
    k, nn = int(w2.shape[0]), int(w2.shape[1])
    if a_shape[-1] != k:
        return False
    out_shape = static_shape(node.output(0))
    m = int(math.prod(a_shape[:-1]))  # (math: np.prod costs ~2.6 us a call, per GEMM per new shape)
    bias, residual, (lo, hi), last, fused = epilogue_chain(lowering, node, len(out_shape) - 1, nn, PLAIN)
    act, last, fused = take_epilogue_activation(lowering, node, last, fused, (lo, hi))  # GELU after an FFN
    packed = lowering.packed(w, ("gemm", bool(node.attrs["transpose_b"])),  # once per model, not per input shape
                             lambda: pack_b(np.ascontiguousarray(w2), lowering.isa, precision=lowering.precision))
    gemm = Gemm(packed, m, Epilogue(lo, hi, act), num_threads=lowering.threads)
    lowering.bf16_ops += lowering.precision == "bf16"
    a = lowering.native_input(lowering.tensor(a_port), PLAIN, contiguous=False)
    try:  # rows of A may be strided (a column slice): the GEMM takes any row stride
        rows = np.reshape(probe_array(a), (m, k), copy=False)
        if k > 1 and rows.strides[-1] != rows.itemsize:
            raise ValueError
    except ValueError:
        a = lowering.native_input(a, PLAIN, contiguous=True)
    y16 = y_bf16_ok(packed) and bf16_gemm_readers_only(lowering, last)  # bf16 hint: kept bf16 for bf16 GEMMs
    y = lowering.value(out_shape, PLAIN, dtype=np.uint16 if y16 else F32, name=last.friendly_name)
    ins = [a] + ([residual] if residual is not None else [])

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        # M from the arrays: a plan reused at another input shape (a shape-generic plan) binds here too
        rows = math.prod(arrs[0].shape[:-1])
        r = arrs[1].reshape(rows, nn) if residual is not None else None
        return [gemm.bind(np.reshape(arrs[0], (rows, k), copy=False), outs[0].reshape(rows, nn), bias, r,
                          any_rows=True)]

    inplace = 1 if residual is not None and residual_in_place_ok(packed) else None
    lowering.program.add(Op(node.friendly_name, "MatMul", ins, [y], native=True, bind=bind, inplace=inplace))
    lowering.finish(last, y, fused)
    return True


def _lower_batched_matmul(lowering: Lowering, node: Node) -> bool:
    """MatMul of two runtime tensors (attention scores, context): strided views, no copies."""
    from ember.devices.cpu.kernels.batched_gemm import BatchedGemm
    from ember.devices.cpu.kernels.gemm import Epilogue

    a_port, b_port = node.input_values()
    if a_port.element_type.dtype != F32 or b_port.element_type.dtype != F32:
        return False
    sa, sb = static_shape(a_port), static_shape(b_port)
    out_shape = static_shape(node.output(0))
    if not sa or not sb or not out_shape or 0 in out_shape:
        return False
    ta, tb = bool(node.attrs["transpose_a"]), bool(node.attrs["transpose_b"])
    # a scalar scale right after the product becomes the kernel's alpha
    alpha, start = 1.0, node
    nxt = lowering.sole_consumer(node)
    if nxt is not None and nxt.type_name in ("Multiply", "Divide") and len(nxt.input_values()) == 2 \
            and static_shape(nxt.output(0)) == out_shape and nxt.input_values()[0].node is node:
        s = scalar_of(nxt.input_values()[1])
        if s is not None and (nxt.type_name == "Multiply" or s != 0):
            alpha, start = (s if nxt.type_name == "Multiply" else 1.0 / s), nxt
    n_axis = len(out_shape) - 1
    fused: list[Node]
    if len(sb) == 1:  # a matrix-vector product: the output's last axis is M, the epilogue's vectors run along N
        bias, residual, (lo, hi), last, fused = None, None, (-math.inf, math.inf), start, []
    else:
        bias, residual, (lo, hi), last, fused = epilogue_chain(lowering, start, n_axis, out_shape[-1], PLAIN,
                                                               broadcast_residual=True)
    if start is not node:
        fused = [start, *fused]
    ins = []
    for port in (a_port, b_port):
        t = lowering.native_input(lowering.tensor(port), PLAIN, contiguous=False)
        probe = probe_array(t)
        st = [x // probe.itemsize for x in probe.strides]
        if probe.ndim >= 2 and st[-1] != 1 and st[-2] != 1 and probe.shape[-1] > 1 and probe.shape[-2] > 1:
            t = lowering.native_input(t, PLAIN, contiguous=True)
        ins.append(t)
    if residual is not None:
        rp = probe_array(residual)
        if rp.shape[-1] > 1 and rp.strides[-1] != rp.itemsize:
            residual = lowering.native_input(residual, PLAIN, contiguous=True)
    threads, isa = lowering.threads, lowering.isa
    kernel = BatchedGemm(sa, sb, ta, tb, num_threads=threads, epilogue=Epilogue(lo, hi), alpha=alpha, isa=isa)
    y = lowering.value(out_shape, PLAIN, name=last.friendly_name)
    all_ins = ins + ([residual] if residual is not None else [])

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        k = kernel
        if arrs[0].shape != k.shape_a or arrs[1].shape != k.shape_b:  # a shape-generic plan at other sizes
            k = BatchedGemm(arrs[0].shape, arrs[1].shape, ta, tb, num_threads=threads, epilogue=Epilogue(lo, hi),
                            alpha=alpha, isa=isa)
        return [k.bind(arrs[0], arrs[1], outs[0], bias, arrs[2] if residual is not None else None)]

    lowering.program.add(Op(node.friendly_name, "MatMul", all_ins, [y], native=True, bind=bind))
    lowering.finish(last, y, fused)
    return True


# -- attention -----------------------------------------------------------------

@lowers("ScaledDotProductAttention")
def lower_attention(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.attention import attention_kernel, fits

    ports = node.input_values()
    if any(p.element_type.dtype != F32 for p in ports[:3]) or node.output(0).element_type.dtype != F32:
        return False
    shapes = [static_shape(p) for p in ports[:3]]
    out_shape = static_shape(node.output(0))
    if any(len(s) < 2 or len(s) > 4 for s in shapes) or len(out_shape) > 4:
        return False
    causal = bool(node.attrs["causal"])
    mask_t = None
    if len(ports) > 3 and not causal:
        mc = const_of(ports[3])
        if ports[3].element_type.dtype != F32 or len(ports[3].partial_shape) > 4:
            return False
        if mc is None or np.any(mc != 0):
            mask_t = lowering.program.const(np.ascontiguousarray(mc, np.float32)) if mc is not None \
                else lowering.native_input(lowering.tensor(ports[3]), PLAIN)
    if len(ports) > 4:
        s = scalar_of(ports[4])
        if s is None:
            return False
        scale = s
    else:
        scale = 1.0 / math.sqrt(shapes[0][-1])
    e, s_len = shapes[0][-1], shapes[1][-2]
    if not fits(s_len, e, lowering.isa) or s_len == 0 or shapes[1][-1] != e:
        return False

    def four(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (1,) * (4 - len(shape)) + tuple(shape)

    ins = []
    for p in ports[:3]:  # strided views are fine while their last axis is contiguous
        t = lowering.native_input(lowering.tensor(p), PLAIN, contiguous=False)
        probe = probe_array(t)
        if probe.shape[-1] > 1 and probe.strides[-1] != probe.itemsize:
            t = lowering.native_input(t, PLAIN, contiguous=True)
        ins.append(t)
    # the usual consumer merges heads back: Transpose(0, 2, 1, 3); write into its layout directly
    nxt = lowering.sole_consumer(node)
    merged = None
    if nxt is not None and nxt.type_name == "Transpose" and len(out_shape) == 4:
        pv = const_of(nxt.input_values()[1])
        if pv is not None and [int(x) for x in np.asarray(pv).reshape(-1)] == [0, 2, 1, 3]:
            merged = nxt
    z = lowering.value(static_shape(merged.output(0)) if merged is not None else out_shape, PLAIN, name=node.friendly_name)
    threads = lowering.threads
    heads_merged = merged is not None  # (the binder keeps no graph node)

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        # sizes from the arrays (a shape-generic plan binds this at other input shapes)
        q, k, v = (_contig_last(a.reshape(four(a.shape)) if a.ndim < 4 else a) for a in arrs[:3])
        m = arrs[3].reshape(four(arrs[3].shape)) if mask_t is not None else None
        o = outs[0].transpose(0, 2, 1, 3) if heads_merged else outs[0].reshape(four(outs[0].shape))
        bshape = o.shape[:2]
        q, k, v = (np.broadcast_to(x, bshape + x.shape[2:]) for x in (q, k, v))
        return [attention_kernel(q, k, v, m, o, scale, causal, threads, lowering.isa)]

    all_ins = ins + ([mask_t] if mask_t is not None else [])
    lowering.program.add(Op(node.friendly_name, "ScaledDotProductAttention", all_ins, [z], native=True, bind=bind))
    if merged is not None:
        lowering.finish(merged, z, [merged])
    else:
        lowering.finish(node, z, [])
    return True


def _contig_last(a: np.ndarray) -> np.ndarray:
    if a.shape[-1] > 1 and a.strides[-1] != 4:
        raise EmberError("ember: internal: attention operand without a contiguous last axis")
    return a


# -- rows: SoftMax, LogSoftmax, MVN -----------------------------------------------------------

def _row_source(lowering: Lowering, port: Output, axis: int) -> tuple[Tensor, int, int, str] | None:
    """The input of a last-axis row op as ``(tensor, rows, n, layout)``: NHWC tensors
    normalized over channels are rows already; otherwise plain and contiguous."""
    shape = static_shape(port)
    t = lowering.tensor(port)
    if t.layout == NHWC and axis == 1:
        n, c, h, w = shape
        return lowering.native_input(t, NHWC), n * h * w, c, NHWC
    if axis != len(shape) - 1:
        return None
    t = lowering.native_input(t, PLAIN)
    n = shape[-1] if shape else 1
    return t, int(math.prod(shape[:-1])), n, PLAIN


@lowers("Softmax", "SoftMax", "LogSoftmax")
def lower_softmax(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.norm import row_kernel

    port = node.input_values()[0]
    if port.element_type.dtype == np.float64:  # f64: its own kernel
        from ember.devices.cpu.lowering.f64 import lower_rows_f64

        return lower_rows_f64(lowering, node)
    if port.element_type.dtype != F32 or len(port.partial_shape) == 0:
        return False
    rank = len(port.partial_shape)
    src = _row_source(lowering, port, node.attrs["axis"] % rank)
    if src is None:
        return False
    x, rows, n, layout = src
    if rows * n == 0:
        return False
    y = lowering.value(x.shape, layout, name=node.friendly_name)
    kind = "logsoftmax" if node.type_name == "LogSoftmax" else "softmax"
    threads = lowering.threads

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        # rows and their length from the array: a shape-generic plan binds this at other input shapes
        k = ins[0].shape[-1] if ins[0].ndim else 1
        r = ins[0].size // k if k else 0
        return [row_kernel(ins[0].reshape(r, k), outs[0].reshape(r, k), kind, threads, isa=lowering.isa)]

    lowering.program.add(Op(node.friendly_name, node.type_name, [x], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True


@lowers("MVN")
def lower_mvn(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.norm import row_kernel
    from ember.ops.reduce import reduction_axes

    port = node.input_values()[0]
    if port.element_type.dtype == np.float64:  # f64: its own kernel
        from ember.devices.cpu.lowering.f64 import lower_rows_f64

        return lower_rows_f64(lowering, node)
    axes_v = const_of(node.input_values()[1])
    if port.element_type.dtype != F32 or node.version != "opset6" or axes_v is None:
        return False
    shape = static_shape(port)
    rank = len(shape)
    if rank == 0:
        return False
    axes = reduction_axes(node, axes_v, rank)
    if sorted(axes) != list(range(rank - len(axes), rank)):  # the trailing axes only
        return False
    n = int(math.prod(shape[a] for a in axes))
    rows = int(math.prod(shape)) // n if n else 0
    if rows * n == 0:
        return False
    x = lowering.native_input(lowering.tensor(port), PLAIN)
    # LayerNorm's affine tail: * scale (per column or scalar), + shift (per column or scalar)
    scale = shift = None
    last, fused = node, []
    for kind in ("Multiply", "Add"):
        nxt = lowering.sole_consumer(last)
        if nxt is None or nxt.type_name != kind or len(nxt.input_values()) != 2:
            break
        other = nxt.input_values()[1] if nxt.input_values()[0].node is last else nxt.input_values()[0]
        c = const_of(other)
        if c is None or c.dtype != F32 or nxt.output(0).partial_shape != node.output(0).partial_shape:
            break
        full = (1,) * (rank - c.ndim) + c.shape if c.ndim <= rank else None
        if full is None or any(d != 1 for d in full[:rank - len(axes)]):
            break
        vec_ = np.ascontiguousarray(np.broadcast_to(c.reshape(full[rank - len(axes):]),
                                                    [shape[a] for a in axes]).reshape(-1), np.float32)
        if kind == "Multiply":
            scale = vec_
        else:
            shift = vec_
        last = nxt
        fused.append(nxt)
    y = lowering.value(shape, PLAIN, name=last.friendly_name)
    eps = float(np.float32(node.attrs["eps"]))
    variance = bool(node.attrs["normalize_variance"])
    inside = str(node.attrs["eps_mode"]).lower() == "inside_sqrt"
    threads = lowering.threads

    naxes, name = len(axes), node.friendly_name  # (the binder keeps no graph node: a cached plan does not keep its graph alive)

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        # rows and their length from the array: a shape-generic plan binds this at other input shapes
        k = int(math.prod(ins[0].shape[ins[0].ndim - naxes:]))
        r = ins[0].size // k if k else 0
        if any(v is not None and v.size != k for v in (scale, shift)):
            raise EmberError(f"ember: internal: MVN '{name}' rows of {k} with an affine of another length")
        return [row_kernel(ins[0].reshape(r, k), outs[0].reshape(r, k), "mvn", threads, eps=eps,
                           normalize_variance=variance, eps_inside=inside, scale=scale, shift=shift, isa=lowering.isa)]

    lowering.program.add(Op(node.friendly_name, "MVN", [x], [y], native=True, bind=bind))
    lowering.finish(last, y, fused)
    return True
