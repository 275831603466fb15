"""Convolutions the implicit-GEMM path does not take: weights computed at run time (a model
input, a weight built by other ops) and negative pads (a crop of the input). 1-D and 2-D,
grouped or not, any strides and dilations.

The input is unfolded into columns ``[N, groups, C/groups, KH, KW, OH, OW]`` (one strided copy
per kernel tap over the output rows and columns whose input position exists, the rest zero:
padding; a negative pad only moves the taps' windows), then one batched GEMM per image and group:
``y[N, g, O/g, OH*OW] = W[g, O/g, K] @ cols[N, g, K, OH*OW]``. The weights are read where they
are each run, so nothing is packed at compile time. The epilogue (bias, activation) stays a
separate elementwise step.

``lower_conv`` (``conv.py``) calls :func:`im2col_conv` where it declines a node.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import F32, Lowering, static_shape
from ember.devices.cpu.runtime.plan import PLAIN, Op
from ember.errors import EmberError
from ember.graph.node import Node

#: the most column elements the unfolded input may hold (512 MB of f32)
MAX_COLUMNS = 1 << 27


def _taps(size: int, out: int, kernel: int, stride: int, dil: int, pad: int) -> list[tuple[int, int, int]]:
    """Per kernel tap along one axis: (first output, end output, first input) of the outputs
    whose input position ``o * stride + k * dil - pad`` lies inside ``[0, size)``."""
    taps = []
    for k in range(kernel):
        off = k * dil - pad
        first = max(0, -(off // stride) if off < 0 else 0)
        while first < out and first * stride + off < 0:
            first += 1
        end = min(out, (size - 1 - off) // stride + 1) if size - 1 - off >= 0 else 0
        end = max(end, first)
        taps.append((first, end, first * stride + off))
    return taps


def im2col_conv(lowering: Lowering, node: Node) -> bool:
    """``node`` (Convolution or GroupConvolution, f32, 1-D or 2-D) as columns and one batched
    GEMM; False when it does not fit (other types or ranks, too many columns)."""
    from ember.devices.cpu.kernels.batched_gemm import BatchedGemm
    from ember.devices.cpu.kernels.eltwise import eltwise_kernel
    from ember.devices.cpu.kernels.gemm import Epilogue
    from ember.devices.cpu.kernels.movement import strided_copy

    xport, wport = node.input_values()
    if xport.element_type.dtype != F32 or wport.element_type.dtype != F32:
        return False
    xs, ws, out_shape = static_shape(xport), static_shape(wport), static_shape(node.output(0))
    rank = len(xs)
    grouped = node.type_name == "GroupConvolution"
    if rank not in (3, 4) or len(ws) != rank + int(grouped):
        return False
    g, og, cg = (ws[0], ws[1], ws[2]) if grouped else (1, ws[0], ws[1])
    kernel = list(ws[-(rank - 2):])
    pb, pe = node.resolved_pads(xs, kernel)
    strides = [int(s) for s in node.attrs["strides"]]
    dil = [int(d) for d in (node.attrs["dilations"] or [1] * (rank - 2))]
    spatial, out_sp = list(xs[2:]), list(out_shape[2:])
    if rank == 3:  # 1-D as 2-D with a height of 1
        kernel, pb, strides, dil, spatial, out_sp = [1, *kernel], [0, *pb], [1, *strides], [1, *dil], \
            [1, *spatial], [1, *out_sp]
    n, c = xs[0], xs[1]
    (h, w), (kh, kw), (oh, ow) = spatial, kernel, out_sp
    if c != g * cg or 0 in (n, c, oh, ow, og):
        return False
    k_len, p_len = cg * kh * kw, oh * ow
    if n * g * k_len * p_len > MAX_COLUMNS:
        return False
    rows = _taps(h, oh, kh, strides[0], dil[0], int(pb[0]))
    cols_ = _taps(w, ow, kw, strides[1], dil[1], int(pb[1]))
    padded = any(r[0] > 0 or r[1] < oh for r in rows) or any(q[0] > 0 or q[1] < ow for q in cols_)
    threads, isa = lowering.threads, lowering.isa
    name = node.friendly_name
    x = lowering.native_input(lowering.tensor(xport), PLAIN)
    wt = lowering.tensor(wport)
    if wt.kind == "const":
        assert wt.data is not None
        wt = lowering.program.const(np.ascontiguousarray(wt.data, np.float32))
    else:
        wt = lowering.native_input(wt, PLAIN)
    cols = lowering.value((n, g, cg, kh, kw, oh, ow), PLAIN, name=name + "/columns")
    zero = np.zeros((), np.float32)
    sh, sw = strides

    def bind_columns(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        xa = arrs[0].reshape(n, g, cg, h, w)
        ca = outs[0]
        kernels = []
        if padded:
            kernels.append(eltwise_kernel(ca, [zero], [("load", 0, 0, 0, 0.0, 0.0), ("store", 0, 0, 0, 0.0, 0.0)],
                                          threads, isa))
        for ki, (r0, r1, ih) in enumerate(rows):
            for kj, (q0, q1, iw) in enumerate(cols_):
                if r1 <= r0 or q1 <= q0:
                    continue
                src = xa[:, :, :, ih:ih + (r1 - r0 - 1) * sh + 1:sh, iw:iw + (q1 - q0 - 1) * sw + 1:sw]
                k = strided_copy(src, ca[:, :, :, ki, kj, r0:r1, q0:q1], threads, isa)
                if k is None:
                    raise EmberError(f"ember: internal: the columns of '{name}' do not fit the copy kernel")
                kernels.append(k)
        return kernels

    lowering.program.add(Op(name + "/columns", "Im2Col", [x], [cols], native=True, bind=bind_columns))
    gemm = BatchedGemm((g, og, k_len), (n, g, k_len, p_len), False, False, num_threads=threads,
                       epilogue=Epilogue(-math.inf, math.inf), alpha=1.0, isa=isa)
    y = lowering.value(out_shape, PLAIN, name=name)

    def bind_gemm(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [gemm.bind(arrs[0].reshape(g, og, k_len), arrs[1].reshape(n, g, k_len, p_len),
                          outs[0].reshape(n, g, og, p_len), None, None)]

    lowering.program.add(Op(name, node.type_name, [wt, cols], [y], native=True, bind=bind_gemm))
    lowering.finish(node, y, [])
    return True
