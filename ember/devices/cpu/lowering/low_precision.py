"""Low-precision lowering: quantized patterns -> int8 kernels, compressed weights -> kernels
that keep them compressed (what OpenVINO's low-precision transformations and its compressed
FullyConnected do for its CPU plugin).

:func:`lower_precision` (the first of the CPU's device passes, before weights are folded to
f32) finds

    activation: FakeQuantize(x, levels <= 256), or its output grid moved by precision-
                preserving ops (moves, ReLU, Pad, Concat of one grid: :func:`_grid_of`), or
                a dequantized 8-bit tensor ``Convert(u8/i8) [- zp] * scale`` (ONNX QLinear*,
                ConvInteger/MatMulInteger, DequantizeLinear: :func:`_activation_dq`)
        -> Convolution / GroupConvolution / MatMul
    weights: integer Const -> Convert [-> Subtract(zero point)] -> Multiply(per-channel scale)
             [-> Reshape], or integer-valued constants (ConvInteger's)

and rewrites each into ops of this device (``ember/devices/cpu/ops.py``): ``Int8Quantize``
(x -> u8 steps of the FakeQuantize, laid out for its consumers: NHWC pixels or GEMM rows),
optionally ``Int8MaxPool``/``Int8Concat`` on those steps, and ``Int8Convolution`` /
``Int8MatMul`` (u8 x s8 with integer accumulation, then ``scale[n] * acc + shift[n]`` in f32).
``AvgPool(FakeQuantize)`` becomes ``Int8AvgPool`` (u8 steps in, f32 average out).
The arithmetic is the FakeQuantize graph's own: ``x_fq = s_a * (q - zp)`` and
``w = s_w[n] * wq``, so ``conv(x_fq, w) = s_a * s_w[n] * conv(q - zp, wq)``; padding reads
``zp`` (the step that stands for 0.0). When 0.0 is not exactly a step (a non-integer zero
point) only convolutions without padding and MatMuls are rewritten, the offset going into
``shift``. Activation ranges are per tensor, or per channel for depthwise convolutions (whose
channels are independent). Grouped convolutions with an odd channel count per group, weights
whose zero point leaves [-128, 127], and everything else stay f32.

A MatMul (or an embedding Gather) on weights that compress_weights wrote (u8/i8/u4/i4 codes,
per-channel or grouped scales) becomes ``CompressedMatMul`` / ``CompressedGather``, whose
kernels (``kernels/wc_gemm.py``) keep the codes 8/4 bits wide and compute in f32.

The new ops carry a numpy reference kernel (integer math in int64), so a node the native rule
cannot take still computes in int8 arithmetic. The lowering rules fuse the elementwise tail
into the int8 epilogue: a per-channel bias Add, a FakeQuantize (before the residual or last),
a residual Add (through its own FakeQuantize when NNCF quantized the residual branch),
ReLU/Clamp; the output is f32, or the u8 steps of the next int8 op's Int8Quantize, or both
(when a float op reads the value too). FakeQuantize nodes left in the graph run on the
native quantize kernel in f32 mode.

The compiled model reports what runs: the runtime model has the device's ops (with
``rt_info`` ``execType`` and ``runtimePrecision``, I8 or FP32, and ``weightsPrecision``), the
plan's ``stats["exec_types"]`` names the kernel per op (``jit_avx512_vnni_I8``,
``jit_avx512_FP32_W4`` ...) and profiling info shows it; a rule that declines clears any
earlier claim, so a fallback never reports int8.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import F32, Lowering, const_of, lowers, static_shape
from ember.devices.cpu.ops import (
    Int8AvgPool,
    Int8Concat,
    Int8Convolution,
    Int8Dequantize,
    Int8MatMul,
    Int8MaxPool,
    Int8Quantize,
)
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op, Tensor
from ember.errors import EmberError
from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type

log = logging.getLogger("ember.cpu")

_ZP_TOLERANCE = 1e-3  # in steps: a zero point this close to an integer is that integer


# --------------------------------------------------------------------------- the int8 ops
def ranges_along(node: Node, axis: int, first: int = 1) -> Any:
    """QuantizeParams of a FakeQuantize-like ``node`` (inputs ``first..first+3`` are constant
    il, ih, ol, oh) with each range a scalar or a vector along ``axis`` of the data; else None."""
    from ember.devices.cpu.kernels.int8_gemm import QuantizeParams

    data = node.input_values()[0].partial_shape
    if not data.rank.is_static:
        return None
    rank = len(data)
    axis = axis % rank
    vals: list[Any] = []
    for port in node.input_values()[first:first + 4]:
        c = const_of(port)
        if c is None or c.dtype.kind != "f" or c.ndim > rank:
            return None
        if c.size == 1:
            vals.append(float(c.reshape(-1)[0]))
            continue
        full = (1,) * (rank - c.ndim) + c.shape
        if any(d != 1 for i, d in enumerate(full) if i != axis) or not data[axis].is_static \
                or full[axis] != data[axis].get_length():
            return None
        vals.append(np.ascontiguousarray(c.reshape(-1), np.float32))
    params = QuantizeParams(vals[0], vals[1], vals[2], vals[3], int(node.attrs["levels"]))
    return params if params.valid() else None


# --------------------------------------------------------------------------- the graph pass
def _value(port: Output, depth: int = 0) -> np.ndarray | None:
    """The value of a constant subgraph (reference kernels), else None."""
    node = port.node
    if isinstance(node, Constant):
        return node.data
    if depth > 8 or not node.foldable or not node.input_values() or node.type_name == "Parameter":
        return None
    args = []
    for s in node.input_values():
        v = _value(s, depth + 1)
        if v is None:
            return None
        args.append(v)
    try:
        return node.evaluate(args)[port.index]
    except Exception:  # noqa: BLE001 - not a constant subgraph after all
        return None


def _int_weights(port: Output, out_axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(wq, s_w)`` with ``value(port) == wq * s_w`` (s_w broadcast along ``out_axes`` of the
    value), wq integers in [-128, 127], for ``Convert(int Const) [- zp] * scale [-> Reshape]``."""
    reshape: tuple[int, ...] | None = None
    node = port.node
    if node.type_name == "Reshape":
        target = _value(port)
        if target is None:
            return None
        reshape = tuple(target.shape)
        node = node.input_values()[0].node
    if node.type_name != "Multiply":
        return _integer_weights(port, out_axes)
    a, b = node.input_values()
    for q_port, s_port in ((a, b), (b, a)):
        src = q_port.node
        if src.type_name == "Subtract":
            src = src.input_values()[0].node
        if src.type_name != "Convert" or not isinstance(src.input_values()[0].node, Constant) \
                or src.input_values()[0].element_type.dtype.kind not in "iu":
            continue
        q, s = _value(q_port), _value(s_port)
        if q is None or s is None or q.dtype.kind != "f":
            return None
        s_full = np.broadcast_to(s.astype(np.float64), q.shape)
        if reshape is not None:
            if int(np.prod(reshape)) != q.size:
                return None
            q, s_full = q.reshape(reshape), np.ascontiguousarray(s_full).reshape(reshape)
        if q.size == 0 or np.any(q != np.rint(q)) or q.min() < -128 or q.max() > 127:
            return None
        other = tuple(i for i in range(q.ndim) if i not in out_axes)
        first = s_full[tuple(slice(0, 1) if i in other else slice(None) for i in range(q.ndim))]
        if not np.array_equal(np.broadcast_to(first, s_full.shape), s_full):
            return None  # the scale varies along an input axis: not per output channel
        return q.astype(np.int8), first.reshape(-1)
    return None


def _integer_weights(port: Output, out_axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """Weights that are integers in [-128, 127] without a scale (ONNX ConvInteger/MatMulInteger,
    whose ``Convert(int Const) - zero point`` the frontend folds): scale 1, exact."""
    v = _value(port)
    if v is None or v.size == 0 or v.dtype.kind not in "fiu":
        return None
    if v.dtype.kind == "f":  # float weights are rarely whole numbers: a sample tells most at once
        flat = v.reshape(-1)
        few = flat[np.linspace(0, flat.size - 1, min(flat.size, 64)).astype(np.int64)]
        if not np.all(np.isfinite(few)) or np.any(few != np.rint(few)):
            return None
    if not np.all(np.isfinite(v)) or np.any(v != np.rint(v)) or v.min() < -128 or v.max() > 127:
        return None
    return v.astype(np.int8), np.ones(int(np.prod([v.shape[i] for i in out_axes])))




@dataclass
class _Activation:
    """Where an int8 layer's u8 input comes from: ``data`` (f32) quantized with FakeQuantize
    ranges ``ranges`` (four f32 ports) into ``levels`` steps; ``params`` are those ranges."""

    params: Any
    data: Output | None  # None: ``t`` converted to f32 (made only once the layer is rewritten)
    ranges: list[Output]
    levels: int
    name: str
    t: Output | None = None
    moves: list[Node] = field(default_factory=list)  # precision-preserving ops to redo on ``data``
    pool: Node | None = None  # a MaxPool between the FakeQuantize and the layer: run on the u8 steps
    parts: list[_Activation] = field(default_factory=list)  # a Concat of these (one grid): on the u8 steps


def _activation(port: Output, axis: int | None = None, pixels: bool = False, rows: bool = False) -> _Activation | None:
    """The quantized activation ``port`` carries: a FakeQuantize (NNCF, OpenVINO, ONNX Q/DQ
    pairs) or a dequantized integer tensor (ONNX QLinear*/ConvInteger/MatMulInteger, a lone
    DequantizeLinear); None when ``port`` is neither. ``pixels``: the reader takes u8 NHWC
    pixels, so a MaxPool right after the FakeQuantize runs on the u8 steps."""
    if pixels and axis is None:
        pooled = _pooled_fq(port) or _concat_fq(port)
        if pooled is not None:
            return pooled
    return _activation_fq(port, axis, rows) or _activation_dq(port, axis)


def _concat_fq(port: Output) -> _Activation | None:
    """``Concat(FakeQuantize, ...)`` along the channels of 4-D data, every FakeQuantize on the
    same output grid: quantize each input and concatenate the steps (``Int8Concat``), so the
    layers before write u8 and the concatenated tensor never exists in f32."""
    cat = port.node
    ps = port.partial_shape
    if cat.type_name != "Concat" or not ps.rank.is_static or len(ps) != 4 or cat.attrs["axis"] % 4 != 1:
        return None
    parts = []
    for src in cat.input_values():
        if src.node.type_name != "FakeQuantize" or not src.partial_shape[1].is_static:
            return None
        act = _activation_fq(src)
        if act is None or _grid_values(src.node) != _grid_values(cat.input_values()[0].node):
            return None
        parts.append(act)
    first = parts[0]
    return _Activation(first.params, first.data, first.ranges, first.levels, cat.friendly_name, parts=parts)


def _pooled_fq(port: Output) -> _Activation | None:
    """``FakeQuantize -> MaxPool`` (2-D, static height and width, indices unused): quantize the
    FakeQuantize's input and pool the steps (``Int8MaxPool``), so the int8 layer before it
    writes u8 and the pooled tensor never exists in f32."""
    pool = port.node
    if pool.type_name != "MaxPool" or port.index != 0 or any(o.targets for o in pool.outputs()[1:]):
        return None
    src = pool.input_values()[0]
    ps = src.partial_shape
    if src.node.type_name != "FakeQuantize" or not ps.rank.is_static or len(ps) != 4 \
            or not all(d.is_static for d in list(ps)[1:]) or len(pool.attrs["kernel"]) != 2:
        return None
    act = _activation_fq(src)
    if act is None:
        return None
    act.pool = pool
    return act


def _activation_fq(port: Output, axis: int | None = None, rows: bool = False) -> _Activation | None:
    """A FakeQuantize's output (ranges scalar, or along ``axis`` when given), or values still on
    one FakeQuantize's output grid after precision-preserving ops (:func:`_grid_of`): then the
    moved values are quantized with the grid's ranges (they are on it already). ``rows``: a
    MatMul's activation, quantized along its last axis, where the input ranges may vary (a
    folded SmoothQuant scale: :func:`_fold_scales_into_fake_quantize`)."""
    fq = port.node
    direct = fq.type_name == "FakeQuantize"
    if not direct:
        if axis is not None:
            return None
        grid = _grid_of(port)
        if grid is None:
            return None
        fq = grid
    if fq.input_values()[0].element_type.dtype != F32:
        return None
    # (the input ranges may vary per channel along the quantized axis, as a folded scale leaves
    # them: only the output grid, the int8 ops' activation scale and zero point, must be one)
    params = ranges_along(fq, (-1 if rows and direct else 1) if axis is None else axis)
    if params is None or (axis is None and (np.ndim(params.ol) or np.ndim(params.oh)
                                            or (params.per_channel and not (rows and direct)))):
        return None
    ins = fq.input_values()
    levels, name = int(fq.attrs["levels"]), fq.friendly_name
    if not direct:
        from ember.devices.cpu.kernels.int8_gemm import QuantizeParams

        params = QuantizeParams(params.ol, params.oh, params.ol, params.oh, params.levels)
        return _Activation(params, port, [ins[3], ins[4], ins[3], ins[4]], levels, name)
    return _Activation(params, ins[0], list(ins[1:]), levels, name)


# ops whose output values are input values (moved, selected, repeated): a FakeQuantize grid
# survives them (OpenVINO's precision-preserving ops)
_MOVES = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "DepthToSpace", "SpaceToDepth", "Slice", "StridedSlice",
          "Broadcast", "Tile", "Split", "VariadicSplit", "MaxPool")


def _grid_of(port: Output, depth: int = 0) -> Node | None:
    """The FakeQuantize (scalar ranges) whose output grid ``port``'s values lie on, through
    moves (:data:`_MOVES`), ReLU, Pad and Concat (every input on the same grid), else None.
    ReLU needs 0.0 on the grid (or no negative step); Pad a pad value on the grid."""
    node = port.node
    t = node.type_name
    if t == "FakeQuantize":
        grid = _grid_values(node)
        return node if grid is not None else None
    if depth > 32 or node.output(port.index).element_type.dtype != F32:
        return None
    if t in _MOVES and (port.index == 0 or t in ("Split", "VariadicSplit")):
        return _grid_of(node.input_values()[0], depth + 1)
    if t in ("ReLU", "Pad"):
        fq = _grid_of(node.input_values()[0], depth + 1)
        if fq is None:
            return None
        ol, oh, steps = _grid_values(fq)  # type: ignore[misc]
        if t == "ReLU":
            value = 0.0 if ol < 0 else None
        else:
            value = None
            if node.attrs.get("pad_mode", "constant") == "constant":
                v = _value(node.input_values()[3]) if len(node.input_values()) > 3 else np.zeros(1)
                if v is None or v.size != 1:
                    return None
                value = float(v.reshape(-1)[0])
        if value is not None:
            step = (value - ol) / (oh - ol) * steps
            if not (0 <= step <= steps and abs(step - round(step)) <= _ZP_TOLERANCE):
                return None
        return fq
    if t == "Concat":
        grids = [_grid_of(s, depth + 1) for s in node.input_values()]
        if any(g is None for g in grids):
            return None
        first = _grid_values(grids[0])  # type: ignore[arg-type]
        return grids[0] if all(_grid_values(g) == first for g in grids) else None  # type: ignore[arg-type]
    return None


def _grid_values(fq: Node) -> tuple[float, float, int] | None:
    """``(ol, oh, steps)`` of a FakeQuantize with scalar output ranges on f32 data."""
    if fq.input_values()[0].element_type.dtype != F32:
        return None
    ol, oh = _scalar(fq.input_values()[3]), _scalar(fq.input_values()[4])
    if ol is None or oh is None or not ol < oh:
        return None
    return ol, oh, int(fq.attrs["levels"]) - 1


_INT8 = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def _activation_dq(port: Output, axis: int | None) -> _Activation | None:
    """``scale * (t - zero_point)`` of an 8-bit integer tensor ``t``, as the ONNX frontend
    writes DequantizeLinear and the QLinear*/Integer ops: ``[Multiply(scale)] <- [Convert]
    <- [Subtract(zero point)] <- [Convert to i32] <- Convert(t)``. The u8 steps are ``t - lo``
    (lo = 0 for u8, -128 for i8). They are taken, by preference, from before ``t`` was made:
    from the input of the FakeQuantize (integer output grid) that ``t`` converts, or of the
    QuantizeLinear arithmetic (``Clamp(Round(x / s) + z)``), so the previous int8 layer writes
    them in its epilogue; else from ``t`` converted to f32 (exact integers)."""
    from ember.devices.cpu.kernels.int8_gemm import QuantizeParams

    out = port
    scale: Any = np.float64(1.0)
    node = port.node
    if node.type_name == "Multiply":
        a, b = node.input_values()
        sa, sb = _value(a), _value(b)
        if sb is not None and sb.dtype.kind == "f":
            scale, port = sb.astype(np.float64), a
        elif sa is not None and sa.dtype.kind == "f":
            scale, port = sa.astype(np.float64), b
        else:
            return None
    zp: Any = np.float64(0.0)
    subtracted = False
    while True:
        node = port.node
        src = node.input_values()[0] if node.input_values() else None
        if node.type_name == "Convert" and src is not None and src.element_type.dtype in _INT8 \
                and not isinstance(src.node, Constant):
            t = src
            break
        if node.type_name == "Convert" and src is not None and src.element_type.dtype == np.int32 \
                and node.output(0).element_type.dtype in (F32, np.int32):
            port = src
            continue
        if node.type_name == "Subtract" and not subtracted and src is not None:
            z = _value(node.input_values()[1])
            if z is None or np.any(z != np.rint(z)):
                return None
            zp, port, subtracted = z.astype(np.float64), src, True
            continue
        return None
    lo, hi = _INT8[t.element_type.dtype]
    moves, base = [], t  # Reshape/Transpose/MaxPool... on the integer tensor: redone on the f32 data
    while base.node.type_name in _MOVES and base.index == 0 \
            and (base.node.get_output_size() == 1 or base.node.type_name == "MaxPool"):
        moves.append(base.node)
        base = base.node.input_values()[0]
    rank = len(out.partial_shape) if out.partial_shape.rank.is_static else 0
    vec: list[Any] = []
    for v in (scale, zp):
        if v.size == 1:
            vec.append(np.float64(v.reshape(-1)[0]))
            continue
        full = (1,) * (rank - v.ndim) + v.shape
        if axis is None or v.ndim > rank or any(d != 1 for i, d in enumerate(full) if i != axis % rank) \
                or not out.partial_shape[axis % rank].is_static or full[axis % rank] != out.partial_shape[axis % rank].get_length():
            return None
        vec.append(v.reshape(-1))
    s, z = vec
    if np.any(np.asarray(s) <= 0) or np.any(np.asarray(z) < lo) or np.any(np.asarray(z) > hi):
        return None
    ol, oh = (lo - z) * s, (hi - z) * s
    name = t.node.friendly_name
    data, il, ih = _steps_source(base, lo, hi)
    if data is None:
        moves = []
    params = QuantizeParams(il, ih, np.float32(ol) if np.ndim(ol) == 0 else ol.astype(np.float32),
                            np.float32(oh) if np.ndim(oh) == 0 else oh.astype(np.float32), 256)
    if not params.valid():
        return None
    ranges = [_range_const(v, rank, axis) for v in (il, ih, params.ol, params.oh)]
    return _Activation(params, data, ranges, 256, name, t, moves)


def _scalar(port: Output) -> float | None:
    v = _value(port)
    return float(v.reshape(-1)[0]) if v is not None and v.size == 1 and v.dtype.kind in "fiu" else None


def _steps_source(t: Output, lo: int, hi: int) -> tuple[Output | None, float, float]:
    """``(f32 data, il, ih)`` whose FakeQuantize steps are ``t - lo`` (see :func:`_activation_dq`);
    data None: ``t`` itself, converted to f32."""
    conv = t.node
    src = conv.input_values()[0] if conv.type_name == "Convert" else None
    if src is not None and src.element_type.dtype == F32:
        fq = src.node
        if fq.type_name == "FakeQuantize" and fq.attrs["levels"] == hi - lo + 1:
            il, ih, ol, oh = (_scalar(p) for p in fq.input_values()[1:])
            if ol == lo and oh == hi and il is not None and ih is not None and il < ih:
                return fq.input_values()[0], il, ih
        clamp = fq
        if clamp.type_name == "Clamp" and clamp.attrs["min"] == lo and clamp.attrs["max"] == hi \
                and clamp.input_values()[0].node.type_name == "Add":
            add = clamp.input_values()[0].node
            rnd, z = add.input_values()[0], _scalar(add.input_values()[1])
            if rnd.node.type_name == "Round" and rnd.node.attrs.get("mode") == "half_to_even" and z is not None \
                    and rnd.node.input_values()[0].node.type_name == "Divide":
                div = rnd.node.input_values()[0].node
                x, s = div.input_values()[0], _scalar(div.input_values()[1])
                if s is not None and s > 0 and x.element_type.dtype == F32:
                    return x, (lo - z) * s, (hi - z) * s
    return None, float(lo), float(hi)


def _range_const(v: Any, rank: int, axis: int | None) -> Output:
    a = np.asarray(v, np.float32)
    if a.ndim and axis is not None:
        shape = [1] * rank
        shape[axis % rank] = a.size
        a = a.reshape(shape)
    return Constant.from_array(np.ascontiguousarray(a), Type.f32).output(0)


def _quantize_node(act: _Activation, memo: dict[Any, Node], kind: str) -> Node:
    import ember.opset as ops

    if act.parts:
        qs = [_quantize_node(p, memo, kind) for p in act.parts]
        key = ("concat", *(id(q) for q in qs))
        cat = memo.get(key)
        if cat is None:
            cat = Int8Concat([q.output(0) for q in qs], dict(zero_point=_zero_point(act.params)[0]), act.name + "/u8")
            memo[key] = cat
        return cat

    src = act.data if act.data is not None else act.t
    assert src is not None
    vals = tuple(np.asarray(_value(r), np.float32).tobytes() for r in act.ranges)
    key = (id(src.node), src.index, act.data is None, tuple(id(n) for n in act.moves), kind, act.levels, vals)
    q = memo.get(key)
    if q is None:
        data = act.data if act.data is not None else ops.convert(src, "f32").output(0)
        for move in reversed(act.moves):  # FakeQuantize is monotone and elementwise: it commutes with them
            data = move.clone_with_inputs([data, *move.input_values()[1:]]).output(0)
            data.set_names(())
        q = Int8Quantize([data, *act.ranges], dict(levels=act.levels, layout=kind), act.name + "/u8")
        memo[key] = q
    if act.pool is None:
        return q
    pooled = memo.get(("pool", id(q), id(act.pool)))
    if pooled is None:
        pool = act.pool
        pb, pe, out = pool.plan(pool.input_values()[0].partial_shape)
        kernel, strides = [int(k) for k in pool.attrs["kernel"]], [int(s) for s in pool.attrs["strides"]]
        dil = [int(d) for d in pool._dilations(2)]
        h = [int(d.get_length()) for d in list(pool.input_values()[0].partial_shape)[2:]]
        # pads_end that make the floor formula give the pooling's own output size (ceil rounding)
        pe = [max(pe[i], (int(out[2 + i].get_length()) - 1) * strides[i] + dil[i] * (kernel[i] - 1) + 1 - h[i] - pb[i])
              for i in range(2)]
        pooled = Int8MaxPool([q.output(0)], dict(kernel=kernel, strides=strides, dilations=dil, pads_begin=list(pb),
                                                pads_end=pe), pool.friendly_name + "/u8")
        memo[("pool", id(q), id(act.pool))] = pooled
    return pooled


def _zero_point(params: Any) -> tuple[int, float]:
    """(integer zero point, offset left over) for a per-tensor activation FakeQuantize."""
    zp = min(max(int(round(float(params.zero_point))), 0), params.steps)
    return zp, float(params.ol) + zp * float(params.scale)


def _rewrite_conv(node: Node, memo: dict[Any, Node]) -> bool:
    xport, wport = node.input_values()
    ps = xport.partial_shape
    if not ps.rank.is_static or len(ps) != 4 or not ps[1].is_static:
        return False  # a dynamic batch (and size, with explicit pads) is fine: each shape is lowered on its own
    if not all(d.is_static for d in list(ps)[2:]) and str(node.attrs.get("auto_pad", "explicit")).startswith("same"):
        return False
    channels = int(xport.partial_shape[1].get_length())
    grouped = node.type_name == "GroupConvolution"
    got = _int_weights(wport, (0, 1) if grouped else (0,))
    if got is None:
        return False
    wq, s_w = got
    groups = 1
    if grouped:
        groups = wq.shape[0]
        wq = wq.reshape(wq.shape[0] * wq.shape[1], *wq.shape[2:])
    depthwise = grouped and groups == channels == wq.shape[0] and wq.ndim == 4 and wq.shape[1] == 1
    if wq.ndim != 4 or (groups > 1 and wq.shape[1] % 4 and not depthwise):
        return False  # grouped convolutions with an odd number of channels per group stay f32
    # a depthwise convolution takes per-channel activation ranges (each channel is on its own)
    found = _activation(xport, 1 if depthwise else None, pixels=True)
    if found is None:
        return False
    params = found.params
    xs = tuple(d.get_length() if d.is_static else 1 for d in ps)
    pb, pe = node.resolved_pads(xs, wq.shape[2:])
    if min(pb + pe) < 0:
        return False
    s_a = np.broadcast_to(np.asarray(params.scale, np.float64), (channels,))
    zpf = np.broadcast_to(np.asarray(params.zero_point, np.float64), (channels,))
    zps = np.clip(np.rint(zpf), 0, params.steps).astype(np.int64)
    offset = np.broadcast_to(np.asarray(params.ol, np.float64), (channels,)) + zps * s_a  # what zp leaves over
    exact = bool(np.all(np.abs(offset) <= _ZP_TOLERANCE * s_a))
    if not exact and any(pb + pe):
        return False  # border pixels could not be exact
    if depthwise:
        scale = s_a * s_w
        shift = np.zeros(channels) if exact else offset * s_w * wq.astype(np.int64).sum(axis=(1, 2, 3))
    else:
        scale = s_a[0] * s_w
        shift = np.zeros(wq.shape[0]) if exact else offset[0] * s_w * wq.astype(np.int64).sum(axis=(1, 2, 3))
    q = _quantize_node(found, memo, "nhwc")
    attrs = dict(strides=list(node.attrs["strides"]), pads_begin=list(pb), pads_end=list(pe),
                 dilations=list(node.attrs["dilations"]) or [1, 1], groups=groups, zero_point=int(zps[0]))
    ins = [q.output(0), Constant.from_array(wq, Type.i8), _f32_const(scale), _f32_const(shift)]
    if depthwise and np.any(zps != zps[0]):
        ins.append(Constant.from_array(zps.astype(np.int32), Type.i32))
    new = Int8Convolution(ins, attrs, node.friendly_name)
    _replace(node, new)
    return True


def _rewrite_matmul(node: Node, memo: dict[Any, Node]) -> bool:
    xport, wport = node.input_values()
    found = _activation(xport, rows=True)
    if found is None or node.attrs["transpose_a"] or not xport.partial_shape.rank.is_static \
            or len(xport.partial_shape) < 2:
        return False
    wshape = wport.partial_shape
    if not wshape.is_static or len(wshape) < 2 or any(int(d) != 1 for d in wshape.to_shape()[:-2]) \
            or len(wshape) > len(xport.partial_shape):
        return False
    params = found.params
    tb = bool(node.attrs["transpose_b"])
    rank = len(wshape)
    got = _int_weights(wport, (rank - 2,) if tb else (rank - 1,))
    if got is None:
        return False
    wq, s_w = got
    w2 = wq.reshape(wq.shape[-2:])
    w2 = np.ascontiguousarray(w2.T if tb else w2)
    xs = xport.partial_shape
    k, n = (int(v) for v in np.shape(w2))
    if not xs[len(xs) - 1].compatible(Dimension(k)) \
            or not PartialShape([*list(xs)[:-1], Dimension(n)]).compatible(node.output(0).partial_shape):
        return False
    zp, offset = _zero_point(params)
    scale = np.float64(params.scale) * s_w
    shift = offset * s_w * w2.astype(np.int64).sum(axis=0)
    q = _quantize_node(found, memo, "rows")
    new = Int8MatMul([q.output(0), Constant.from_array(w2, Type.i8), _f32_const(scale), _f32_const(shift)],
                     dict(zero_point=zp), node.friendly_name)
    if node.output(0).element_type != Type.f32:  # MatMulInteger: i32 out (exact while |sum| < 2**24)
        import ember.opset as ops

        new = ops.convert(new.output(0), node.output(0).element_type, name=node.friendly_name + "/out")
    _replace(node, new)
    return True


def _f32_const(v: np.ndarray) -> Constant:
    return Constant.from_array(np.ascontiguousarray(v, np.float32).reshape(-1), Type.f32)


def _replace(old: Node, new: Node) -> None:
    from ember.passes.matcher import replace_output

    new.rt_info.update({k: v for k, v in old.rt_info.items() if k != "fused_group"})
    replace_output(old.output(0), new.output(0))


#: a per-channel Multiply by positive constants right before a FakeQuantize (NNCF's SmoothQuant
#: scale) is folded into the FakeQuantize's input ranges (OpenVINO's MultiplyFakeQuantizeFusion);
#: off: the Multiply runs as its own elementwise op (A/B runs)
FOLD_SCALES = True


def _fold_scales_into_fake_quantize(model: Model) -> int:
    """``FakeQuantize(x * c)`` -> ``FakeQuantize(x)`` with input ranges ``il / c``, ``ih / c``, where
    ``c`` is a constant of positive finite values along the data's last axis (or a scalar), the
    Multiply has no other reader and the FakeQuantize's ranges are scalars or vectors along that
    axis. The output ranges stay: the values that come out are the same steps of the same grid
    (up to the rounding of ``x * c`` against ``x`` at a step's edge). NNCF's SmoothQuant
    Multiplies before a transformer's quantized MatMuls then cost nothing at run time."""
    import ember.opset as ops
    from ember.devices.cpu.kernels.int8_gemm import QuantizeParams

    if not FOLD_SCALES or not fast_requantize():  # (EMBER_INT8_EXACT: REFERENCE's arithmetic)
        return 0
    folded = 0
    for fq in model.get_ordered_ops():
        if fq.type_name != "FakeQuantize":
            continue
        mul = fq.input_values()[0].node
        data = fq.input_values()[0]
        if mul.type_name != "Multiply" or len(data.targets) != 1 or data.element_type.dtype != F32:
            continue
        # (only for MatMuls' activations: their quantize runs along the last axis, as the ranges will)
        if not fq.output(0).targets or any(t.node.type_name != "MatMul" or t.index != 0 for t in fq.output(0).targets):
            continue
        shape = data.partial_shape
        if not shape.rank.is_static or len(shape) == 0 or not shape[len(shape) - 1].is_static \
                or str(mul.attrs.get("auto_broadcast", "numpy")).lower() != "numpy":
            continue
        a, b_ = mul.input_values()
        ca, cb = const_of(a), const_of(b_)
        if (ca is None) == (cb is None):  # one constant scale, one tensor
            continue
        c, x = (cb, a) if cb is not None else (ca, b_)
        if c is None or x.partial_shape != shape or c.dtype != F32 or not np.all(np.isfinite(c)) or not np.all(c > 0):
            continue
        rank, channels = len(shape), int(shape[len(shape) - 1].get_length())
        full = (1,) * (rank - c.ndim) + c.shape if c.ndim <= rank else None
        if full is None or any(d != 1 for d in full[:-1]) or full[-1] not in (1, channels):
            continue
        found = [const_of(p) for p in fq.input_values()[1:]]
        ranges = [r for r in found if r is not None and r.dtype == F32 and r.size in (1, channels)
                  and (r.size == 1 or all(d == 1 for d in r.shape[:-1]))]
        if len(ranges) != 4:
            continue
        vec = np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float64)
        il = (np.broadcast_to(ranges[0].reshape(-1), (channels,)) / vec).astype(np.float32)
        ih = (np.broadcast_to(ranges[1].reshape(-1), (channels,)) / vec).astype(np.float32)
        if not QuantizeParams(il, ih, ranges[2].reshape(-1), ranges[3].reshape(-1), int(fq.attrs["levels"])).valid():
            continue
        shaped = (1,) * (rank - 1) + (channels,)
        fq.set_argument(0, x)
        fq.set_argument(1, ops.constant(il.reshape(shaped)).output(0))
        fq.set_argument(2, ops.constant(ih.reshape(shaped)).output(0))
        folded += 1
    return folded


def lower_precision(model: Model) -> int:
    """Rewrite the quantized convolutions and MatMuls of ``model`` into int8 ops, and MatMuls
    with compressed weights into ``CompressedMatMul`` (in place); returns how many int8 ops."""
    memo: dict[Any, Node] = {}
    _fold_scales_into_fake_quantize(model)
    done = compressed = pooled = 0
    for node in model.get_ordered_ops():
        if node.type_name in ("Convolution", "GroupConvolution"):
            done += _rewrite_conv(node, memo)
        elif node.type_name == "Gather":
            compressed += _rewrite_compressed_gather(node)
        elif node.type_name == "AvgPool":
            pooled += _rewrite_avg_pool(node, memo)
        elif node.type_name == "MatMul":
            if _rewrite_matmul(node, memo):
                done += 1
            else:
                compressed += _rewrite_compressed_matmul(node)
    if done or compressed or pooled:
        from ember.passes.matcher import prune_dead_consumers

        prune_dead_consumers(model)
        residuals = _dequantize_residuals(memo) + _quantize_residual_pairs(model)
        if residuals:
            prune_dead_consumers(model)  # the replaced FakeQuantizes still read the tensors
        log.info("CPU: %d convolutions/MatMuls run in int8, %d MatMuls on compressed weights, %d residuals read "
                 "as u8 steps", done, compressed, residuals)
    return done


def _dequantize_residuals(memo: dict[Any, Node]) -> int:
    """A FakeQuantize that reads the same tensor as an ``Int8Quantize`` on the same input grid
    (NNCF's ResNet block output: one FakeQuantize for the next block's first convolution and
    for its residual ``Add``) becomes ``Int8Dequantize`` of those steps. The producer then
    writes only the u8 steps and the epilogue that adds the residual reads them (a quarter of
    the bytes of the f32 tensor, written once instead of twice)."""
    count = 0
    for q in list(memo.values()):
        if q.type_name != "Int8Quantize":
            continue
        data = q.input_values()[0]
        il, ih = (_value(p) for p in q.input_values()[1:3])
        if il is None or ih is None or il.size != 1 or ih.size != 1:
            continue
        for target in list(data.targets):
            fq = target.node
            if fq is q or fq.type_name != "FakeQuantize" or target.index != 0 \
                    or fq.attrs["levels"] != q.attrs["levels"] or fq.output(0).partial_shape != data.partial_shape \
                    or str(fq.attrs.get("auto_broadcast", "numpy")).lower() != "numpy" \
                    or not all(t.node.type_name == "Add" and _adds_in_epilogue(t.node, fq) for t in fq.output(0).targets):
                continue
            found = [_value(p) for p in fq.input_values()[1:]]
            vals = [v for v in found if v is not None and v.size == 1 and v.dtype == F32]
            if len(vals) != len(found) or float(vals[0].reshape(-1)[0]) != float(il.reshape(-1)[0]) \
                    or float(vals[1].reshape(-1)[0]) != float(ih.reshape(-1)[0]):
                continue
            deq = Int8Dequantize([q.output(0), *(_f32_const(v).output(0) for v in vals)],
                                 dict(levels=int(fq.attrs["levels"])), fq.friendly_name)
            _replace(fq, deq)
            count += 1
    return count


def _int8_conv_output(port: Output) -> Node | None:
    """The int8 convolution whose output ``port`` is (or that plus a constant: its bias)."""
    node = port.node
    if node.type_name == "Add" and len(node.input_values()) == 2:
        a, b = node.input_values()
        node = a.node if const_of(b) is not None else b.node if const_of(a) is not None else node
    return node if node.type_name == "Int8Convolution" else None


def _adds_in_epilogue(add: Node, fq: Node) -> bool:
    """Whether ``add``'s other input is an int8 layer's (non-depthwise) output, after its bias and
    FakeQuantize: an epilogue that can take the residual's steps (else they would be dequantized
    by numpy)."""
    ports = [p for p in add.input_values() if p.node is not fq]
    if len(ports) != 1:
        return False
    port = ports[0]
    if port.node.type_name == "FakeQuantize":
        port = port.node.input_values()[0]
    conv = _int8_conv_output(port)
    if conv is not None:
        return conv.attrs["groups"] == 1
    node = port.node
    if node.type_name == "Add" and len(node.input_values()) == 2:
        a, b = node.input_values()
        node = a.node if const_of(b) is not None else b.node if const_of(a) is not None else node
    return node.type_name == "Int8MatMul"


def _quantize_residual_pairs(model: Model) -> int:
    """ResNet's first block of a stage: ``Add(FakeQuantize(conv3 + bias), FakeQuantize(downsample
    + bias))``. The convolution that runs first writes its FakeQuantize's u8 steps
    (``Int8Quantize``, requantized in its epilogue); the other one's epilogue adds them
    (``Int8Dequantize`` of those steps, read as u8) instead of reading an f32 tensor."""
    order = {id(n): i for i, n in enumerate(model.get_ordered_ops())}
    count = 0
    for add in list(model.get_ordered_ops()):
        if add.type_name != "Add" or len(add.input_values()) != 2:
            continue
        fqs = [p.node for p in add.input_values()]
        if any(f.type_name != "FakeQuantize" or len(f.output(0).targets) != 1 or not f.input_values()[0].targets
               for f in fqs) or fqs[0] is fqs[1]:
            continue
        shape = add.output(0).partial_shape
        if not shape.rank.is_static or len(shape) != 4 or any(f.output(0).partial_shape != shape for f in fqs) \
                or not all(_int8_conv_output(f.input_values()[0]) for f in fqs) \
                or any(str(f.attrs.get("auto_broadcast", "numpy")).lower() != "numpy" for f in fqs):
            continue
        first = min(fqs, key=lambda f: order.get(id(f.input_values()[0].node), 0))
        other = _int8_conv_output((fqs[1] if first is fqs[0] else fqs[0]).input_values()[0])
        if other is None or other.attrs["groups"] != 1:
            continue  # the epilogue that adds the steps: an int8 convolution's, not a depthwise one's
        found = [_value(p) for p in first.input_values()[1:]]
        vals = [v for v in found if v is not None and v.size == 1 and v.dtype == F32]
        if len(vals) != len(found):
            continue
        ranges = [_f32_const(v).output(0) for v in vals]
        q = Int8Quantize([first.input_values()[0], *ranges], dict(levels=int(first.attrs["levels"]), layout="nhwc"),
                         first.friendly_name + "/u8")
        deq = Int8Dequantize([q.output(0), *ranges], dict(levels=int(first.attrs["levels"])), first.friendly_name)
        _replace(first, deq)
        count += 1
    return count


def _rewrite_avg_pool(node: Node, memo: dict[Any, Node]) -> bool:
    """``AvgPool(FakeQuantize(x))`` (2-D, per-tensor ranges, 0.0 a step, static height and width)
    -> ``Int8AvgPool(Int8Quantize(x))``: the layer before writes u8 steps and the pooling reads
    them; its f32 output is the average of the FakeQuantize values (the next FakeQuantize, if
    any, quantizes it as before)."""
    xport = node.input_values()[0]
    ps = xport.partial_shape
    if xport.node.type_name != "FakeQuantize" or not ps.rank.is_static or len(ps) != 4 \
            or not all(d.is_static for d in list(ps)[1:]) or len(node.attrs["kernel"]) != 2:
        return False
    act = _activation_fq(xport)
    if act is None:
        return False
    zp, offset = _zero_point(act.params)
    scale = float(act.params.scale)
    if abs(offset) > _ZP_TOLERANCE * scale:
        return False  # 0.0 is not a step: padding would not be exact
    h, w = (int(d.get_length()) for d in list(ps)[2:])
    pb, _, out = node.plan(ps)
    if not all(d.is_static for d in list(out)[2:]):
        return False
    oh, ow = (int(d.get_length()) for d in list(out)[2:])
    kernel, strides = [int(k) for k in node.attrs["kernel"]], [int(s) for s in node.attrs["strides"]]
    dil = [int(d) for d in node._dilations(2)]
    # the divisor of each window, from the pooling's own reference on ones: mean = real / divisor
    ones = node.evaluate([np.ones((1, 1, h, w), np.float32)])[0].reshape(oh, ow).astype(np.float64)
    real = [np.array([sum(0 <= o * strides[i] - pb[i] + t * dil[i] < (h, w)[i] for t in range(kernel[i]))
                      for o in range((oh, ow)[i])], np.float64) for i in range(2)]
    count = np.outer(real[0], real[1])
    factors = np.where(count > 0, ones / np.where(count > 0, count, 1.0), 0.0) * scale
    if not np.all(np.isfinite(factors)):
        return False
    q = _quantize_node(act, memo, "nhwc")
    new = Int8AvgPool([q.output(0), Constant.from_array(factors.astype(np.float32), Type.f32)],
                      dict(kernel=kernel, strides=strides, dilations=dil, pads_begin=[int(p) for p in pb],
                           zero_point=zp), node.friendly_name)
    _replace(node, new)
    return True


# --------------------------------------------------------------------------- weight-compressed MatMul
_CODE_TYPES = (Type.u8, Type.i8, Type.u4, Type.i4)


def _compressed_weights(port: Output, transpose_b: bool) -> tuple[np.ndarray, Type, np.ndarray, np.ndarray] | None:
    """``(codes [N, K], code type, scale [N, G], zero point [N, G])`` of a MatMul weight written
    as ``Convert(u8/i8/u4/i4 Const) [- zero point] * scale [-> Reshape] [-> Convert]`` (what
    compress_weights writes: INT8 per channel, INT4 per group), else None."""
    final = port.partial_shape
    if not final.is_static or len(final) < 2 or any(int(d) != 1 for d in final.to_shape()[:-2]):
        return None
    node = port.node
    while node.type_name in ("Convert", "Reshape") and node.output(0).element_type.is_real:
        if node.type_name == "Convert" and not node.input_values()[0].element_type.is_real:
            break
        node = node.input_values()[0].node
    if node.type_name != "Multiply":
        return None
    for q_port, s_port in (tuple(node.input_values()), tuple(node.input_values())[::-1]):
        zp_port = None
        src = q_port.node
        if src.type_name == "Subtract":
            zp_port = src.input_values()[1]
            src = src.input_values()[0].node
        if src.type_name != "Convert" or not isinstance(src.input_values()[0].node, Constant) \
                or src.input_values()[0].element_type not in _CODE_TYPES:
            continue
        codes_t = src.input_values()[0].element_type
        codes = src.input_values()[0].node.data
        scale = _value(s_port)
        zp = np.zeros(1) if zp_port is None else _value(zp_port)
        if scale is None or zp is None or scale.dtype.kind != "f" or zp.dtype.kind not in "fiu":
            return None
        shape = tuple(int(d) for d in final.to_shape()[-2:])
        try:
            s_full = np.broadcast_to(scale.astype(np.float32), codes.shape).reshape(shape)
            z_full = np.broadcast_to(zp.astype(np.float32), codes.shape).reshape(shape)
            q = codes.reshape(shape)
        except ValueError:
            return None
        if not transpose_b:
            q, s_full, z_full = q.T, s_full.T, z_full.T
        n, k = q.shape
        # per channel, or groups of the [N, G, gs] / [G, gs, N] codes compress_weights writes
        sizes = {int(d) for d in codes.shape[1:] if codes.ndim == 3 and 0 < int(d) < k and k % int(d) == 0}
        for gs in sorted(sizes | {k}, reverse=True):
            s_g = s_full.reshape(n, k // gs, gs)
            z_g = z_full.reshape(n, k // gs, gs)
            if np.all(s_g == s_g[:, :, :1]) and np.all(z_g == z_g[:, :, :1]) and np.all(np.isfinite(s_g)):
                if _CODE_TYPES.index(codes_t) >= 2 and gs % 2:
                    return None  # INT4 pairs of k share a byte
                return (np.ascontiguousarray(q), codes_t, np.ascontiguousarray(s_g[:, :, 0]),
                        np.ascontiguousarray(z_g[:, :, 0]))
        return None
    return None


def _rewrite_compressed_matmul(node: Node) -> bool:
    from ember.devices.cpu.ops import CompressedMatMul

    xport, wport = node.input_values()
    if node.attrs["transpose_a"] or xport.element_type != Type.f32 or not xport.partial_shape.rank.is_static \
            or len(xport.partial_shape) < 2 or node.output(0).element_type != Type.f32:
        return False
    got = _compressed_weights(wport, bool(node.attrs["transpose_b"]))
    if got is None:
        return False
    codes, codes_t, scale, zp = got
    xs = xport.partial_shape
    if not xs[len(xs) - 1].compatible(Dimension(codes.shape[1])) \
            or not PartialShape([*list(xs)[:-1], Dimension(codes.shape[0])]).compatible(node.output(0).partial_shape):
        return False
    new = CompressedMatMul([xport, Constant.from_array(codes, codes_t), Constant.from_array(scale, Type.f32),
                            Constant.from_array(zp, Type.f32)], {}, node.friendly_name)
    _replace(node, new)
    return True


# from this many rows of x on, the f32 GEMM on weights decompressed once (at compile time) beats
# decompressing in the inner loop (measured 1024x1024, one thread: 8 rows 0.18 vs 0.21 ms, 32
# rows 0.65 vs 0.53 ms)
_DECOMPRESS_ROWS = 16


def _lower_decompressed(lowering: Lowering, node: Node, x: Tensor, m: int, out_shape: tuple[int, ...],
                        bias: np.ndarray | None, last: Node) -> bool:
    """A CompressedMatMul with many rows (a prefill): the f32 GEMM kernel on its weights
    decompressed in f32 and packed once per compiled model (shared by every input shape)."""
    from ember.devices.cpu.kernels.gemm import Gemm, pack_b

    codes, scale, zp = (const_of(node.input_values()[i]) for i in (1, 2, 3))
    assert codes is not None and scale is not None and zp is not None
    n, k = codes.shape
    packed = lowering.packed(codes, ("wc_f32", scale.tobytes(), zp.tobytes()),
                             lambda: pack_b(np.ascontiguousarray(node.weights(codes, scale, zp).T), lowering.isa,
                                            precision=lowering.precision))
    gemm = Gemm(packed, m, num_threads=lowering.threads)
    y = lowering.value(out_shape, PLAIN, name=last.friendly_name)
    lowering.program.add(Op(node.friendly_name, "CompressedMatMul", [x], [y], native=True,
                            bind=lambda a, o: [gemm.bind(a[0].reshape(m, k), o[0].reshape(m, n), bias)]))
    lowering.program.stats["decompressed_ops"] = lowering.program.stats.get("decompressed_ops", 0) + 1
    node.rt_info["runtimePrecision"] = "FP32"
    node.rt_info["weightsPrecision"] = "f32"  # decompressed for this input shape
    lowering.finish(last, y, [last] if last is not node else [])
    return True


def _rewrite_compressed_gather(node: Node) -> bool:
    """``Gather(decompressed [V, H] table, indices, axis 0)`` (an embedding compress_weights
    wrote) -> ``CompressedGather``: the table stays 8/4 bits wide, each gathered row is
    decompressed by the kernel."""
    from ember.devices.cpu.ops import CompressedGather

    data, idx, axis = node.input_values()
    ax = _value(axis)
    if ax is None or ax.size != 1 or int(ax.reshape(-1)[0]) not in (0, -2) or node.attrs.get("batch_dims", 0) \
            or idx.element_type not in (Type.i32, Type.i64) or node.output(0).element_type != Type.f32 \
            or not idx.partial_shape.rank.is_static:
        return False
    got = _compressed_weights(data, True)
    if got is None or len(data.partial_shape) != 2:
        return False
    codes, codes_t, scale, zp = got
    if _CODE_TYPES.index(codes_t) >= 2 and codes.shape[1] % 2:
        return False
    new = CompressedGather([Constant.from_array(codes, codes_t), Constant.from_array(scale, Type.f32),
                            Constant.from_array(zp, Type.f32), idx],
                           dict(negative_indices=bool(getattr(type(node), "negative_indices", False))),
                           node.friendly_name)
    _replace(node, new)
    return True


@lowers("CompressedGather")
def lower_compressed_gather(lowering: Lowering, node: Node) -> bool:
    """Rows of the compressed table decompressed by ``wc_gemm.bind_gather``."""
    from ember.devices.cpu.kernels import wc_gemm

    _unclaim(node)
    codes, scale, zp = (const_of(node.input_values()[i]) for i in (0, 1, 2))
    idx = lowering.tensor(node.input_values()[3])
    if codes is None or scale is None or zp is None or idx.dtype not in (np.int32, np.int64):
        return False
    idx = lowering.native_input(idx, PLAIN)
    out_shape = static_shape(node.output(0))
    h = out_shape[-1]
    bits = node.bits
    table = lowering.packed(codes, ("wc_table", bits, scale.tobytes(), zp.tobytes()),
                            lambda: wc_gemm.pack_table(codes, scale, zp, bits))
    y = lowering.value(out_shape, PLAIN, name=node.friendly_name)
    threads, isa, negative = lowering.threads, lowering.isa, bool(node.attrs["negative_indices"])
    lowering.program.add(Op(node.friendly_name, "CompressedGather", [idx], [y], native=True,
                            bind=lambda a, o: [wc_gemm.bind_gather(table, a[0].reshape(-1), o[0].reshape(-1, h),
                                                                   negative, threads, isa)]))
    exec_type = wc_gemm.exec_type(isa, bits)
    lowering.program.stats.setdefault("exec_types", {})[node.friendly_name] = exec_type
    lowering.program.stats["compressed_ops"] = lowering.program.stats.get("compressed_ops", 0) + 1
    lowering.program.stats["compressed_weight_bytes"] = \
        lowering.program.stats.get("compressed_weight_bytes", 0) + table.nbytes
    node.rt_info["execType"] = exec_type
    node.rt_info["runtimePrecision"] = "FP32"
    node.rt_info["weightsPrecision"] = str(node.input_values()[0].element_type)
    lowering.finish(node, y, [])
    return True


@lowers("CompressedMatMul")
def lower_compressed_matmul(lowering: Lowering, node: Node) -> bool:
    """The weight-compressed MatMul kernel (``kernels/wc_gemm.py``): codes packed once, 8 or 4
    bits wide; f32 arithmetic."""
    from ember.devices.cpu.kernels import wc_gemm

    _unclaim(node)
    x = lowering.tensor(node.input_values()[0])
    codes, scale, zp = (const_of(node.input_values()[i]) for i in (1, 2, 3))
    if x.dtype != F32 or codes is None or scale is None or zp is None:
        return False
    x = lowering.native_input(x, PLAIN)
    out_shape = static_shape(node.output(0))
    n, k = codes.shape
    m = int(np.prod(out_shape[:-1]))
    bits = node.bits
    bias, last = _column_bias(lowering, node, n)
    if m >= _DECOMPRESS_ROWS:
        return _lower_decompressed(lowering, node, x, m, out_shape, bias, last)
    packed = lowering.packed(codes, ("wc_gemm", bits, scale.tobytes(), zp.tobytes()),
                             lambda: wc_gemm.pack(codes, scale, zp, bits, lowering.isa))
    y = lowering.value(out_shape, PLAIN, name=last.friendly_name)
    threads, isa = lowering.threads, lowering.isa
    lowering.program.add(Op(node.friendly_name, "CompressedMatMul", [x], [y], native=True,
                            bind=lambda a, o: [wc_gemm.bind(packed, a[0].reshape(-1, k), o[0].reshape(-1, n), threads,
                                                            isa, bias)]))
    exec_type = wc_gemm.exec_type(isa, bits)
    lowering.program.stats.setdefault("exec_types", {})[node.friendly_name] = exec_type
    lowering.program.stats["compressed_ops"] = lowering.program.stats.get("compressed_ops", 0) + 1
    lowering.program.stats["compressed_weight_bytes"] = \
        lowering.program.stats.get("compressed_weight_bytes", 0) + packed.nbytes
    node.rt_info["execType"] = exec_type
    node.rt_info["runtimePrecision"] = "FP32"  # the arithmetic; the weights stay u8/u4 (weightsPrecision)
    node.rt_info["weightsPrecision"] = str(node.input_values()[1].element_type)
    lowering.finish(last, y, [last] if last is not node else [])
    return True


def _column_bias(lowering: Lowering, node: Node, n: int) -> tuple[np.ndarray | None, Node]:
    """``(bias [N], the Add)`` when the only reader of ``node`` adds a constant per output
    column (a Linear layer's bias), else ``(None, node)``."""
    add = lowering.sole_consumer(node)
    if add is None or add.type_name != "Add" or len(add.input_values()) != 2 \
            or add.output(0).partial_shape != node.output(0).partial_shape or add.output(0).element_type != Type.f32:
        return None, node
    others = [p for p in add.input_values() if p.node is not node]
    if len(others) != 1:
        return None, node
    c = const_of(others[0])
    if c is None and not lowering.has(others[0]):
        c = _value(others[0])  # a constant subgraph (a decompression Convert the optimizer keeps)
    if c is None or c.dtype != F32 or c.size != n or c.shape[-1] != n:
        return None, node
    return np.ascontiguousarray(c.reshape(-1), np.float32), add


# --------------------------------------------------------------------------- lowering rules
def _exec_type(lowering: Lowering, node: Node, tiles: bool = True) -> None:
    """Record that ``node`` runs on the int8 kernels: the plan's stats (profiling's exec type)
    and the runtime model's rt_info (``execType``, ``runtimePrecision`` as OpenVINO writes them).
    ``tiles=False``: a kernel on the vector units only (depthwise), never named AMX."""
    from ember.devices.cpu.kernels.int8_gemm import int8_kernels

    kernels = int8_kernels(lowering.isa)
    exec_type = kernels.exec_type if tiles else kernels.vector_exec_type
    lowering.program.stats.setdefault("exec_types", {})[node.friendly_name] = exec_type
    lowering.program.stats["int8_ops"] = lowering.program.stats.get("int8_ops", 0) + 1
    node.rt_info["execType"] = exec_type
    node.rt_info["runtimePrecision"] = "I8"


def _unclaim(node: Node) -> None:
    """Forget what an earlier lowering (a cached runtime model, another input shape) recorded:
    only a rule that really lowers the node says which kernel and precision run it."""
    for key in ("execType", "runtimePrecision", "weightsPrecision"):
        node.rt_info.pop(key, None)


@lowers("Int8MaxPool")
def lower_int8_max_pool(lowering: Lowering, node: Node) -> bool:
    """Max pooling of the u8 NHWC steps (``kernels/int8_misc.py``): the padded channel rows too."""
    from ember.devices.cpu.kernels.int8_misc import max_pool_u8

    _unclaim(node)
    x = lowering.tensor(node.input_values()[0])
    if x.dtype != np.uint8 or x.layout != NHWC or lowering.is_result(node.output(0)):
        return False
    a = node.attrs
    n, _, oh, ow = static_shape(node.output(0))
    cp = x.shape[3]
    y = lowering.value((n, oh, ow, cp), NHWC, np.uint8, node.friendly_name)
    threads, isa = lowering.threads, lowering.isa
    kernel, strides, dil, pb = (tuple(a[k]) for k in ("kernel", "strides", "dilations", "pads_begin"))
    lowering.program.add(Op(node.friendly_name, "Int8MaxPool", [x], [y], native=True,
                            bind=lambda i, o: [max_pool_u8(i[0], o[0], kernel, strides, dil, pb, threads, isa)]))
    exec_type = f"jit_{isa.level}_I8"
    lowering.program.stats.setdefault("exec_types", {})[node.friendly_name] = exec_type
    node.rt_info["execType"] = exec_type
    node.rt_info["runtimePrecision"] = "I8"
    lowering.bind_port(node.output(0), y)
    return True


@lowers("Int8AvgPool")
def lower_int8_avg_pool(lowering: Lowering, node: Node) -> bool:
    """Average pooling of the u8 NHWC steps into f32 NHWC (``kernels/int8_misc.py``)."""
    from ember.devices.cpu.kernels.int8_misc import avg_pool_u8

    _unclaim(node)
    x = lowering.tensor(node.input_values()[0])
    factors = const_of(node.input_values()[1])
    if x.dtype != np.uint8 or x.layout != NHWC or factors is None:
        return False
    a = node.attrs
    n, c, oh, ow = static_shape(node.output(0))
    y = lowering.value((n, oh, ow, c), NHWC, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa
    f = np.ascontiguousarray(factors, np.float32)
    kernel, strides, dil, pb = (tuple(a[k]) for k in ("kernel", "strides", "dilations", "pads_begin"))
    zp = int(a["zero_point"])
    lowering.program.add(Op(node.friendly_name, "Int8AvgPool", [x], [y], native=True,
                            bind=lambda i, o: [avg_pool_u8(i[0], o[0], f, kernel, strides, dil, pb, zp, threads,
                                                           isa)]))
    exec_type = f"jit_{isa.level}_I8"
    lowering.program.stats.setdefault("exec_types", {})[node.friendly_name] = exec_type
    node.rt_info["execType"] = exec_type
    node.rt_info["runtimePrecision"] = "I8"
    lowering.bind_port(node.output(0), y)
    return True


@lowers("Int8Concat")
def lower_int8_concat(lowering: Lowering, node: Node) -> bool:
    """u8 NHWC steps copied side by side along the channels (byte strided copies); the padded
    channel bytes of the result hold the zero point."""
    from ember.devices.cpu.kernels.int8_gemm import padded_channels
    from ember.devices.cpu.kernels.movement import strided_copy

    _unclaim(node)
    xs = [lowering.tensor(p) for p in node.input_values()]
    if any(x.dtype != np.uint8 or x.layout != NHWC for x in xs) or lowering.is_result(node.output(0)):
        return False
    n, c, h, w = static_shape(node.output(0))
    channels = [int(p.partial_shape[1].get_length()) for p in node.input_values()]
    cp = padded_channels(c)
    y = lowering.value((n, h, w, cp), NHWC, np.uint8, node.friendly_name)
    threads, isa = lowering.threads, lowering.isa
    fill = np.full((1, 1, 1, max(cp - c, 1)), node.attrs["zero_point"], np.uint8)

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        out, kernels, at = outs[0], [], 0
        for x, ci in zip(ins, channels):
            kernels.append(strided_copy(x[..., :ci], out[..., at:at + ci], threads, isa))
            at += ci
        if cp > c:
            kernels.append(strided_copy(np.broadcast_to(fill, (n, h, w, cp - c)), out[..., c:], threads, isa))
        if any(k is None for k in kernels):
            raise EmberError("ember: internal: an Int8Concat copy does not fit the copy kernel")
        return kernels

    lowering.program.add(Op(node.friendly_name, "Int8Concat", xs, [y], native=True, bind=bind))
    exec_type = f"jit_{isa.level}_I8"
    lowering.program.stats.setdefault("exec_types", {})[node.friendly_name] = exec_type
    node.rt_info["execType"] = exec_type
    node.rt_info["runtimePrecision"] = "I8"
    lowering.bind_port(node.output(0), y)
    return True


@lowers("Int8Quantize")
def lower_quantize(lowering: Lowering, node: Node) -> bool:
    """u8 steps, rows padded to a multiple of 4 bytes (filled with the zero point): NHWC for
    the convolutions, plain rows for the MatMuls."""
    from ember.devices.cpu.kernels.int8_gemm import Quantize, padded_channels

    users = {t.node.type_name for t in node.output(0).targets}
    want = "Int8Convolution" if node.attrs["layout"] == "nhwc" else "Int8MatMul"
    readers = {want, "Int8MaxPool", "Int8Concat", "Int8AvgPool"} if want == "Int8Convolution" else {want}
    if not users or not users <= readers or lowering.is_result(node.output(0)):
        return False
    shape = static_shape(node.output(0))
    params = ranges_along(node, 1 if want == "Int8Convolution" else -1)
    if params is None:
        return False
    zp = _zero_point(params)[0] if not params.per_channel else 0
    src = lowering.tensor(node.input_values()[0])
    if want == "Int8Convolution":
        x = lowering.native_input(src, NHWC)
        n, h, w, c = x.shape
        rows = n * h * w
        phys: tuple[int, ...] = (n, h, w, padded_channels(c))
        layout = NHWC
    else:
        x = lowering.native_input(src, PLAIN)
        c = shape[-1]
        rows = int(np.prod(shape[:-1]))
        phys = (*shape[:-1], padded_channels(c))
        layout = PLAIN
    kernel = Quantize(params, rows, c, fill=zp, num_threads=lowering.threads, isa=lowering.isa)
    y = lowering.value(phys, layout, np.uint8, node.friendly_name)
    cp = phys[-1]

    def bind(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        # rows from the arrays: a plan reused at another input shape (shape-generic) binds here too
        n = a[0].size // c if c else rows
        return [kernel.bind(a[0].reshape(n, c), o[0].reshape(n, cp), any_rows=True)]

    lowering.program.add(Op(node.friendly_name, "Int8Quantize", [x], [y], native=True, bind=bind))
    lowering.bind_port(node.output(0), y)
    return True


def fast_requantize() -> bool:
    """Whether int8 epilogues use the fast FakeQuantize arithmetic (``FLAG_FAST``: one FMA,
    round, clamp; within one step of REFERENCE at rounding ties, as OpenVINO's CPU plugin):
    the default; ``EMBER_INT8_EXACT=1`` asks for REFERENCE's arithmetic bit for bit."""
    import os

    return os.environ.get("EMBER_INT8_EXACT", "").strip().lower() not in ("1", "true", "yes", "on")


@dataclass
class _Tail:
    """The elementwise tail an int8 epilogue takes (see :func:`_tail`)."""

    last: Node
    fused: list[Node] = field(default_factory=list)
    bias: np.ndarray | None = None
    residual: Output | None = None
    lo: float = -math.inf
    hi: float = math.inf
    quantize: Any = None  # FusedQuantize
    residual_quantize: Any = None  # QuantizeParams of the residual's own FakeQuantize
    residual_u8: bool = False  # the residual is the u8 steps of residual_quantize (an Int8Dequantize's input)
    steps_only: bool = False  # the output is the u8 steps of also_quantize (requantized), no f32 values
    requantized: Node | None = None  # the Int8Quantize whose u8 steps the kernel writes
    also: Node | None = None  # an Int8Quantize of the f32 output whose steps the kernel writes beside it
    also_quantize: Any = None  # its QuantizeParams
    activation: str = ""  # an epilogue activation after the bias (EPILOGUE_ACTIVATIONS): AMX kernels only


def _tail(lowering: Lowering, node: Node, channels: int, axis: int, layout: str, allow_also: bool = True,
          u8_residual: bool = True, allow_activation: bool = False) -> _Tail:
    """[Add(per-channel const)] [FakeQuantize] [Add(tensor)] [ReLU | Clamp], then a last
    FakeQuantize, or the Int8Quantize of the next int8 op (the kernel then writes u8 steps);
    ``allow_activation``: [Add(per-channel const)] then an activation (a transformer's GELU), then
    the same end."""
    from ember.devices.cpu.kernels.int8_gemm import FusedQuantize
    from ember.devices.cpu.lowering.activations import epilogue_activation

    tail = _Tail(node)
    shape = node.output(0).partial_shape
    rank = len(shape)
    clamped = False
    while True:
        last = tail.last
        if lowering.is_result(last.output(0)) or last.get_output_size() != 1:
            break
        users = [t.node for t in last.output(0).targets]
        if len(users) == 1 and users[0].type_name == "Int8Quantize" and tail.quantize is None \
                and users[0].attrs["layout"] == layout and not lowering.is_result(users[0].output(0)):
            params = ranges_along(users[0], axis)
            if params is not None:
                tail.quantize = FusedQuantize(params, "end", u8=True)
                tail.requantized = users[0]
            break
        if len(users) == 1 and users[0].type_name == "Int8Quantize" and tail.quantize is not None \
                and tail.quantize.at == "mid" and allow_also and users[0].attrs["layout"] == layout \
                and not lowering.is_result(users[0].output(0)):
            params = ranges_along(users[0], axis)
            if params is not None:  # after a FakeQuantize mid-way: only the next op's u8 steps are stored
                tail.also_quantize, tail.requantized, tail.steps_only = params, users[0], True
            break
        quants = [u for u in users if u.type_name == "Int8Quantize" and u.attrs["layout"] == layout]
        if len(users) > 1 and len(quants) == 1 and allow_also and not lowering.is_result(quants[0].output(0)):
            params = ranges_along(quants[0], axis)
            if params is not None:  # the f32 value stays for its other readers; the steps come with it
                tail.also, tail.also_quantize = quants[0], params
            break
        nxt = lowering.sole_consumer(last)
        if nxt is None or nxt.output(0).partial_shape != shape or nxt.output(0).element_type.dtype != F32:
            break
        if nxt.type_name == "Add" and len(nxt.input_values()) == 2 and not clamped:
            other = nxt.input_values()[1] if nxt.input_values()[0].node is last else nxt.input_values()[0]
            if other.node is last:
                break
            c = const_of(other)
            if c is None and not lowering.has(other):
                c = _value(other)  # a constant subgraph (an ONNX bias: Convert(i32) * scale, reshaped)
            if c is not None and tail.bias is None and tail.residual is None and tail.quantize is None \
                    and c.dtype == F32 and c.ndim <= rank:
                full = (1,) * (rank - c.ndim) + c.shape
                if any(d != 1 for i, d in enumerate(full) if i != axis) or c.size not in (1, channels):
                    break
                tail.bias = np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float32)
            elif c is None and tail.residual is None and u8_residual and other.partial_shape == shape \
                    and _dequantized_residual(lowering, other, axis, layout, tail):
                pass  # the residual's u8 steps, dequantized in the epilogue
            elif c is None and tail.residual is None and other.partial_shape == shape and other.element_type.dtype == F32 \
                    and _residual_fake_quantize(lowering, other, axis, tail):
                pass  # the residual's FakeQuantize runs in the epilogue (fused holds it)
            elif c is None and tail.residual is None and _available(lowering, other) and other.partial_shape == shape \
                    and other.element_type.dtype == F32:
                tail.residual = other
            else:
                break
        elif allow_activation and not clamped and not tail.activation and tail.quantize is None \
                and tail.residual is None and epilogue_activation(nxt):
            tail.activation = epilogue_activation(nxt) or ""
            clamped = True  # no clamp after it (the epilogue clamps first), no residual
        elif nxt.type_name == "Multiply" and tail.quantize is None and tail.residual is None:
            folded = _scaled_requantize(lowering, nxt, last, axis, layout, channels)
            if folded is not None:
                tail.quantize, tail.requantized = folded
                tail.fused.append(nxt)
            break
        elif nxt.type_name in ("ReLU", "Clamp") and not clamped:
            tail.lo, tail.hi = (0.0, math.inf) if nxt.type_name == "ReLU" else (float(nxt.attrs["min"]),
                                                                                float(nxt.attrs["max"]))
            clamped = True
        elif nxt.type_name == "FakeQuantize" and tail.quantize is None:
            params = ranges_along(nxt, axis)
            if params is None:
                break
            late = clamped or tail.residual is not None or bool(tail.activation)
            tail.quantize = FusedQuantize(params, "end" if late else "mid")
            tail.last = nxt
            tail.fused.append(nxt)
            if late:
                break
            continue
        else:
            break
        tail.last = nxt
        tail.fused.append(nxt)
    return tail


def _scaled_requantize(lowering: Lowering, mul: Node, last: Node, axis: int, layout: str,
                       channels: int) -> tuple[Any, Node] | None:
    """``last * s`` (s > 0 per channel: NNCF's smooth-quant scale) read only by the next int8
    op's Int8Quantize: that FakeQuantize with its input ranges divided by ``s`` (the fast
    requantize only: within a step of REFERENCE at rounding ties, as OpenVINO folds it), so the
    epilogue writes the u8 steps at once. None when it does not apply."""
    from ember.devices.cpu.kernels.int8_gemm import FusedQuantize, QuantizeParams

    if not fast_requantize() or lowering.is_result(mul.output(0)):
        return None
    ins = mul.input_values()
    other = ins[1] if ins[0].node is last else ins[0]
    c = const_of(other)
    users = [t.node for t in mul.output(0).targets]
    if c is None or other.node is last or c.dtype != F32 or len(users) != 1 \
            or users[0].type_name != "Int8Quantize" or users[0].attrs["layout"] != layout \
            or lowering.is_result(users[0].output(0)):
        return None
    rank = len(mul.output(0).partial_shape)
    full = (1,) * (rank - c.ndim) + c.shape if c.ndim <= rank else None
    if full is None or any(d != 1 for i, d in enumerate(full) if i != axis % rank) or c.size not in (1, channels) \
            or not np.all(np.isfinite(c)) or not np.all(c > 0):
        return None
    params = ranges_along(users[0], axis)
    if params is None:
        return None
    s = np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float32)
    with np.errstate(all="ignore"):
        il = (np.broadcast_to(np.asarray(params.il, np.float32), (channels,)) / s).astype(np.float32)
        ih = (np.broadcast_to(np.asarray(params.ih, np.float32), (channels,)) / s).astype(np.float32)
    scaled = QuantizeParams(il, ih, params.ol, params.oh, params.levels)
    if not scaled.valid():
        return None
    return FusedQuantize(scaled, "end", u8=True), users[0]


def _residual_fake_quantize(lowering: Lowering, port: Output, axis: int, tail: _Tail) -> bool:
    """A residual that is a FakeQuantize read only here, of a tensor that exists: the kernel
    reads that tensor and applies the FakeQuantize itself (the f32 pass is never made)."""
    fq = port.node
    if fq.type_name != "FakeQuantize" or id(fq) in lowering.done or lowering.is_result(port) \
            or len(port.targets) != 1 or not lowering.has(fq.input_values()[0]):
        return False
    params = ranges_along(fq, axis)
    if params is None:
        return False
    tail.residual, tail.residual_quantize = fq.input_values()[0], params
    tail.fused.append(fq)
    return True


def _dequantized_residual(lowering: Lowering, port: Output, axis: int, layout: str, tail: _Tail) -> bool:
    """A residual that is ``Int8Dequantize`` (read only here) of u8 steps that exist, in the
    layout this kernel reads: the epilogue reads the steps and dequantizes them."""
    deq = port.node
    if deq.type_name != "Int8Dequantize" or lowering.is_result(port) or len(port.targets) != 1:
        return False
    earlier = id(deq) in lowering.done  # its turn came first (a downsample block): a reference op, unread now
    if earlier and not lowering.has(port):
        return False
    src = deq.input_values()[0]
    if not lowering.has(src) or src.node.type_name != "Int8Quantize" or src.node.attrs["layout"] != layout:
        return False
    t = lowering.tensor(src)
    if t.dtype != np.uint8 or t.layout != (NHWC if layout == "nhwc" else PLAIN):
        return False
    params = ranges_along(deq, axis)
    if params is None:
        return False
    tail.residual, tail.residual_quantize, tail.residual_u8 = src, params, True
    tail.fused.append(deq)
    if earlier:  # nothing reads that op's output any more: the program drops it, so it is no fallback
        left = lowering.fallbacks.get(deq.type_name, 0) - 1
        if left > 0:
            lowering.fallbacks[deq.type_name] = left
        else:
            lowering.fallbacks.pop(deq.type_name, None)
        lowering.program.stats.get("exec_types", {}).pop(deq.friendly_name, None)
    return True


def _available(lowering: Lowering, port: Output) -> bool:
    """Whether ``port`` has a tensor now; a FakeQuantize of a tensor that has one (a residual
    branch NNCF quantized, ordered after this node) is lowered here, ahead of its turn."""
    if lowering.has(port):
        return True
    node = port.node
    if node.type_name != "FakeQuantize" or id(node) in lowering.done or not lowering.has(node.input_values()[0]) \
            or any(not lowering.has(s) for s in node.input_values()[1:]):
        return False
    if not lower_fake_quantize(lowering, node):
        return False
    lowering.done.add(id(node))
    lowering.native_nodes += 1
    return True


def _scale_shift(node: Node, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    scale = const_of(node.input_values()[2])
    shift = const_of(node.input_values()[3])
    assert scale is not None and shift is not None
    shift = shift.astype(np.float32) + (0 if bias is None else bias)
    return scale.astype(np.float32), np.asarray(shift, np.float32)


@lowers("Int8Convolution")
def lower_int8_conv(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.conv import ConvGeometry
    from ember.devices.cpu.kernels.gemm import Epilogue
    from ember.devices.cpu.kernels.int8_depthwise import int8_depthwise
    from ember.devices.cpu.kernels.int8_gemm import Int8Conv2d, padded_channels

    _unclaim(node)
    x = lowering.tensor(node.input_values()[0])
    w = const_of(node.input_values()[1])
    if x.dtype != np.uint8 or x.layout != NHWC or w is None \
            or x.shape[3] < padded_channels(w.shape[1] * node.attrs["groups"]):
        return False
    a = node.attrs
    n, h, wd, _ = x.shape
    cin = w.shape[1] * a["groups"]
    geo = ConvGeometry(n, h, wd, cin, w.shape[0], w.shape[2], w.shape[3], tuple(a["strides"]), tuple(a["dilations"]),
                       tuple(a["pads_begin"]), tuple(a["pads_end"]), a["groups"])
    depthwise = geo.depthwise and w.shape[1] == 1
    tail = _tail(lowering, node, w.shape[0], 1, "nhwc", allow_also=not depthwise, u8_residual=not depthwise)
    scale, shift = _scale_shift(node, tail.bias)
    kernel: Any
    if depthwise:
        zps = const_of(node.input_values()[4]) if len(node.input_values()) > 4 else a["zero_point"]
        kernel = int8_depthwise(geo, w, scale, shift, zps, Epilogue(tail.lo, tail.hi), lowering.threads,
                                lowering.isa, tail.quantize, tail.residual_quantize, fast=fast_requantize())
    else:
        kernel = Int8Conv2d(geo, w, scale, shift, a["zero_point"], Epilogue(tail.lo, tail.hi), lowering.threads,
                            lowering.isa, tail.quantize, tail.residual_quantize, tail.also_quantize,
                            residual_u8=tail.residual_u8, steps_only=tail.steps_only, fast=fast_requantize())
    ins: list[Tensor] = [x]
    if tail.residual_u8 and tail.residual is not None:
        ins.append(lowering.tensor(tail.residual))
    elif tail.residual is not None:
        ins.append(lowering.native_input(lowering.tensor(tail.residual), NHWC))
    if tail.requantized is not None:
        n_, oh, ow, oc = geo.output_shape
        y = lowering.value((n_, oh, ow, padded_channels(oc)), NHWC, np.uint8, tail.requantized.friendly_name)
    else:
        y = lowering.value(geo.output_shape, NHWC, name=tail.last.friendly_name)
    outs = [y]
    if tail.also is not None:
        n_, oh, ow, oc = geo.output_shape
        outs.append(lowering.value((n_, oh, ow, padded_channels(oc)), NHWC, np.uint8, tail.also.friendly_name))

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        residual = arrs[1] if len(arrs) > 1 else None
        if depthwise:
            return [kernel.bind(arrs[0], outs[0], residual)]
        return kernel.bind_steps(arrs[0], outs[0], residual, outs[1] if len(outs) > 1 else None)

    lowering.program.add(Op(node.friendly_name, "Int8Convolution", ins, outs, native=True, bind=bind))
    _exec_type(lowering, node, tiles=not depthwise)
    _finish(lowering, tail, y, outs[1] if len(outs) > 1 else None)
    return True


def _finish(lowering: Lowering, tail: _Tail, y: Tensor, steps: Tensor | None = None) -> None:
    if tail.also is not None and steps is not None:
        lowering.bind_port(tail.also.output(0), steps)
        lowering.done.add(id(tail.also))
    if tail.requantized is not None:
        lowering.finish(tail.requantized, y, [*tail.fused, tail.requantized])
    else:
        lowering.finish(tail.last, y, tail.fused)


@lowers("Int8MatMul")
def lower_int8_matmul(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.gemm import Epilogue
    from ember.devices.cpu.kernels.int8_gemm import Int8Gemm, int8_activation_fits, pack_int8_weights, padded_channels

    _unclaim(node)
    x = lowering.tensor(node.input_values()[0])
    w = const_of(node.input_values()[1])
    if x.dtype != np.uint8 or x.layout != PLAIN or w is None or x.shape[-1] < padded_channels(w.shape[0]):
        return False
    out_shape = static_shape(node.output(0))
    k, nn = w.shape
    m = int(np.prod(out_shape[:-1]))
    tail = _tail(lowering, node, nn, len(out_shape) - 1, "rows",
                 allow_activation=int8_activation_fits(lowering.isa, k))
    scale, shift = _scale_shift(node, tail.bias)
    packed = lowering.packed(w, "int8_gemm", lambda: pack_int8_weights(w[None, None], lowering.isa))
    kernel = Int8Gemm(w, m, scale, shift, node.attrs["zero_point"], Epilogue(tail.lo, tail.hi, tail.activation),
                      lowering.threads,
                      lowering.isa, tail.quantize, tail.residual_quantize, tail.also_quantize,
                      residual_u8=tail.residual_u8, steps_only=tail.steps_only, fast=fast_requantize(), packed=packed)
    ins: list[Tensor] = [x]
    if tail.residual_u8 and tail.residual is not None:
        ins.append(lowering.tensor(tail.residual))
    elif tail.residual is not None:
        ins.append(lowering.native_input(lowering.tensor(tail.residual), PLAIN))
    kp = x.shape[-1]
    if tail.requantized is not None:
        ldy = padded_channels(nn)
        y = lowering.value((*out_shape[:-1], ldy), PLAIN, np.uint8, tail.requantized.friendly_name)
    else:
        ldy = nn
        y = lowering.value(out_shape, PLAIN, name=tail.last.friendly_name)
    outs = [y]
    ldq = padded_channels(nn)
    if tail.also is not None:
        outs.append(lowering.value((*out_shape[:-1], ldq), PLAIN, np.uint8, tail.also.friendly_name))

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        # M from the arrays: a plan reused at another input shape (shape-generic) binds here too
        rows = arrs[0].size // kp if kp else m
        r = arrs[1].reshape(rows, -1 if tail.residual_u8 else nn) if len(arrs) > 1 else None
        q = outs[1].reshape(rows, ldq) if len(outs) > 1 else None
        return [kernel.bind(arrs[0].reshape(rows, kp), outs[0].reshape(rows, ldy), r, q, any_rows=True)]

    lowering.program.add(Op(node.friendly_name, "Int8MatMul", ins, outs, native=True, bind=bind))
    _exec_type(lowering, node)
    _finish(lowering, tail, y, outs[1] if len(outs) > 1 else None)
    return True


@lowers("FakeQuantize")
def lower_fake_quantize(lowering: Lowering, node: Node) -> bool:
    """A FakeQuantize with scalar ranges that stays f32 (not in front of an int8 op): the
    quantize kernel in f32 mode, in the data's own layout."""
    from ember.devices.cpu.kernels.int8_gemm import QUANT_F32, Quantize

    src = lowering.tensor(node.input_values()[0])
    if not src.shape or 0 in src.shape or node.input_values()[0].element_type.dtype != F32:
        return False
    # the ranges may vary along the physical last axis: C of an NHWC tensor, else the last axis
    layout = NHWC if len(src.shape) == 4 and (src.layout == NHWC or ranges_along(node, -1) is None) else PLAIN
    params = ranges_along(node, 1 if layout == NHWC else -1)
    if params is None:
        return False
    x = lowering.native_input(src, layout)
    c = x.shape[-1]
    rows = int(np.prod(x.shape[:-1]))
    kernel = Quantize(params, rows, c, mode=QUANT_F32, num_threads=lowering.threads, isa=lowering.isa)
    y = lowering.value(x.shape, x.layout, name=node.friendly_name)

    def bind(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        n = a[0].size // c if c else rows  # (rows from the arrays, as Int8Quantize)
        return [kernel.bind(a[0].reshape(n, c), o[0].reshape(n, c), any_rows=True)]

    lowering.program.add(Op(node.friendly_name, "FakeQuantize", [x], [y], native=True, bind=bind))
    lowering.bind_port(node.output(0), y)
    return True


__all__ = ["Int8Convolution", "Int8MatMul", "Int8Quantize", "lower_precision"]
