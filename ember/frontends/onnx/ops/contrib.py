"""ONNX Runtime's ``com.microsoft`` contrib ops, as ONNX Runtime's own tools write them
(the transformer optimizer, ``quantize_dynamic``/``quantize_static``, the n-bit MatMul
quantizer), converted into OpenVINO ops so they run on every device and save as plain IR.

Transformer fusions: EmbedLayerNormalization, Attention, MultiHeadAttention,
SkipLayerNormalization, SkipSimplifiedLayerNormalization, SimplifiedLayerNormalization, BiasGelu,
FastGelu, Gelu, QuickGelu, FusedMatMul, FusedConv, RotaryEmbedding. Quantized: MatMulNBits (u4
weights with per-block scales, OpenVINO's weight-compression pattern), DynamicQuantizeMatMul,
MatMulInteger16, DynamicQuantizeLSTM, QLinearAdd/Mul/Sigmoid/LeakyRelu/Concat/GlobalAveragePool/
AveragePool (dequantize, compute in f32, requantize).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.registry import converter
from ember.frontends.onnx.utils import const, convert, i64, rank_of, reshape, shape_of
from ember.graph.core_ops import Constant
from ember.graph.node import Output
from ember.graph.types import Type

MS = "com.microsoft"


# -- normalization and activations ----------------------------------------------------------
def _layer_norm(x: Output, gamma: Output | None, beta: Output | None, eps: float, rms: bool = False) -> Output:
    xs = convert(x, Type.f32)
    if rms:
        ms = ops.reduce_mean(ops.multiply(xs, xs), i64([-1]), True).output(0)
        y = ops.divide(xs, ops.sqrt(ops.add(ms, const(eps, Type.f32)))).output(0)
    else:
        y = ops.mvn(xs, i64([-1]), True, eps, "inside_sqrt").output(0)
    y = convert(y, x.element_type)
    if gamma is not None:
        y = ops.multiply(y, gamma).output(0)
    if beta is not None:
        y = ops.add(y, beta).output(0)
    return y


@converter(["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"], domain=MS)
def skip_layer_norm(ctx: NodeContext) -> list[Output | None]:
    """``LayerNorm(input + skip + bias) * gamma + beta``; output 3 is the sum before the norm."""
    rms = ctx.op_type == "SkipSimplifiedLayerNormalization"
    s = ops.add(ctx.req(0), ctx.req(1)).output(0)
    bias_at = 3 if rms else 4
    if ctx.has_input(bias_at):
        s = ops.add(s, ctx.req(bias_at)).output(0)
    beta = ctx.input(3) if not rms and ctx.has_input(3) else None
    eps = ctx.attr("epsilon", 1e-12)
    y = _layer_norm(s, ctx.req(2), beta, eps, rms)
    mean = inv = None
    if ctx.output_used(1) or ctx.output_used(2):
        xs = convert(s, Type.f32)
        mean = ops.reduce_mean(xs, i64([-1]), True).output(0)
        var = ops.reduce_mean(ops.squared_difference(xs, mean), i64([-1]), True).output(0)
        inv = ops.divide(const(1.0, Type.f32), ops.sqrt(ops.add(var, const(eps, Type.f32)))).output(0)
    return [y, mean, inv, s]


@converter("SimplifiedLayerNormalization", domain="")
def simplified_layer_norm(ctx: NodeContext) -> Output:
    """RMS normalization (ONNX Runtime registers it in the default domain)."""
    return _layer_norm(ctx.req(0), ctx.req(1), None, ctx.attr("epsilon", 1e-5), rms=True)


@converter("EmbedLayerNormalization", domain=MS)
def embed_layer_norm(ctx: NodeContext) -> list[Output | None]:
    """Word + position (+ segment) embeddings, layer-normalized; output 1 is the mask index
    (the number of 1s of each mask row, 0s without a mask); output 2 the sum before the norm."""
    ids = convert(ctx.req(0), Type.i64)
    words = ops.gather(ctx.req(2), ids, i64(0)).output(0)
    if ctx.has_input(8):
        pos_ids = convert(ctx.req(8), Type.i64)
    else:
        seq = ops.gather(shape_of(ids), i64(1), i64(0)).output(0)
        pos_ids = ops.unsqueeze(ops.range(i64(0), seq, i64(1), "i64"), i64([0])).output(0)
    s = ops.add(words, ops.gather(ctx.req(3), pos_ids, i64(0))).output(0)
    if ctx.has_input(1) and ctx.has_input(4):
        s = ops.add(s, ops.gather(ctx.req(4), convert(ctx.req(1), Type.i64), i64(0))).output(0)
    y = _layer_norm(s, ctx.req(5), ctx.req(6), ctx.attr("epsilon", 1e-12))
    if ctx.has_input(7):
        mask_index = ops.reduce_sum(convert(ctx.req(7), Type.i32), i64([1]), False).output(0)
    else:
        batch = ops.gather(shape_of(ids), i64([0]), i64(0)).output(0)
        mask_index = ops.broadcast(const(0, Type.i32), batch).output(0)
    return [y, mask_index, s]


@converter("BiasGelu", domain=MS)
def bias_gelu(ctx: NodeContext) -> Output:
    return ops.gelu(ops.add(ctx.req(0), ctx.req(1)), "erf").output(0)


@converter("Gelu", domain=MS)
def gelu(ctx: NodeContext) -> Output:
    return ops.gelu(ctx.req(0), "erf").output(0)


@converter("FastGelu", domain=MS)
def fast_gelu(ctx: NodeContext) -> Output:
    x = ops.add(ctx.req(0), ctx.req(1)).output(0) if ctx.has_input(1) else ctx.req(0)
    return ops.gelu(x, "tanh").output(0)


@converter("QuickGelu", domain=MS)
def quick_gelu(ctx: NodeContext) -> Output:
    x = ctx.req(0)
    alpha = const(ctx.attr("alpha", 1.702), x.element_type)
    return ops.multiply(x, ops.sigmoid(ops.multiply(x, alpha))).output(0)


# -- attention -----------------------------------------------------------------------------------
def _heads(x: Output, n: int) -> Output:
    """[B, S, N*H] -> [B, N, S, H]."""
    return ops.transpose(reshape(x, [0, 0, n, -1], True), i64([0, 2, 1, 3])).output(0)


def _merge_heads(x: Output) -> Output:
    """[B, N, S, H] -> [B, S, N*H]."""
    return reshape(ops.transpose(x, i64([0, 2, 1, 3])).output(0), [0, 0, -1], True)


def _key_mask(ctx: NodeContext, mask: Output, q: Output, k: Output, filter_value: float) -> Output:
    """An additive f32 mask broadcastable to [B, N, S, T] from ONNX Runtime's mask forms:
    [B] key lengths, [B, T] or [B, S, T] 1/0 masks, [B, 1, M, M] 4-D masks."""
    ps = mask.partial_shape
    r = len(ps) if ps.rank_is_static else -1
    neg = const(filter_value, Type.f32)
    zero = const(0.0, Type.f32)
    if r == 1:
        t = ops.gather(shape_of(k), i64(2), i64(0)).output(0)
        pos = ops.range(i64(0), t, i64(1), "i64").output(0)
        lengths = ops.unsqueeze(convert(mask, Type.i64), i64([1])).output(0)
        valid = ops.less(ops.unsqueeze(pos, i64([0])), lengths).output(0)
        return reshape(ops.select(valid, zero, neg).output(0), [0, 1, 1, -1], True)
    if r in (2, 3, 4):
        m = convert(mask, Type.f32)
        add = ops.multiply(ops.subtract(const(1.0, Type.f32), m), neg).output(0)
        if r == 2:
            return reshape(add, [0, 1, 1, -1], True)
        if r == 3:
            return ops.unsqueeze(add, i64([1])).output(0)
        return add
    raise ctx.fail(f"a mask of shape {ps} is not supported")


def _causal(q: Output, k: Output, filter_value: float) -> Output:
    """[S, T] additive mask: query i sees keys up to T - S + i."""
    s = ops.gather(shape_of(q), i64(2), i64(0)).output(0)
    t = ops.gather(shape_of(k), i64(2), i64(0)).output(0)
    rows = ops.unsqueeze(ops.range(i64(0), s, i64(1), "i64"), i64([1])).output(0)
    cols = ops.unsqueeze(ops.range(i64(0), t, i64(1), "i64"), i64([0])).output(0)
    limit = ops.add(rows, ops.subtract(t, s)).output(0)
    return ops.select(ops.greater(cols, limit), const(filter_value, Type.f32), const(0.0, Type.f32)).output(0)


def _attend(ctx: NodeContext, q: Output, k: Output, v: Output, head_size: int | None, masks: list[Output],
            causal: bool, filter_value: float) -> Output:
    """Scaled dot-product attention of [B, N, S, H] heads with additive masks, in f32."""
    scale = ctx.attr("scale", 0.0) or None
    dtype = q.element_type
    q, k, v = (convert(t, Type.f32) for t in (q, k, v))
    if causal:
        masks = masks + [_causal(q, k, filter_value)]
    mask = None
    for m in masks:
        mask = m if mask is None else ops.add(mask, m).output(0)
    if scale is None and head_size is None:
        hs = convert(ops.gather(shape_of(q), i64(3), i64(0)).output(0), Type.f32)
        sc = ops.divide(const(1.0, Type.f32), ops.sqrt(hs)).output(0)
    else:
        sc = const(scale if scale is not None else 1.0 / math.sqrt(head_size), Type.f32)  # type: ignore[arg-type]
    y = ops.scaled_dot_product_attention(q, k, v, mask if mask is not None else const(0.0, Type.f32), sc).output(0)
    return convert(y, dtype)


@converter("Attention", domain=MS)
def ms_attention(ctx: NodeContext) -> list[Output | None]:
    """Self-attention with a packed QKV projection: input [B, S, D] @ weights [D, Dq+Dk+Dv];
    input 4 ``past`` [2, B, N, P, H] is prepended to the keys and values, output 1 ``present``
    [2, B, N, P+S, H] holds them."""
    if ctx.has_input(6) or ctx.attr("do_rotary", 0) or ctx.attr("past_present_share_buffer", 0):
        raise ctx.fail("past_sequence_length, do_rotary and past_present_share_buffer are not supported")
    n = ctx.attr("num_heads")
    x, w = ctx.req(0), ctx.req(1)
    qkv = ops.matmul(x, w, False, False).output(0)
    if ctx.has_input(2):
        qkv = ops.add(qkv, ctx.req(2)).output(0)
    sizes = ctx.attr("qkv_hidden_sizes", None)
    if sizes is None:
        width = w.partial_shape[1]
        if not width.is_static:
            raise ctx.fail("the weights' width must be known")
        sizes = [width.get_length() // 3] * 3
    q, k, v = ops.variadic_split(qkv, i64(2), i64(sizes)).outputs()
    q, k, v = _heads(q, n), _heads(k, n), _heads(v, n)
    if ctx.has_input(4):
        past_k, past_v = (ops.squeeze(p, i64([0])).output(0) for p in ops.split(ctx.req(4), i64(0), 2).outputs())
        k = ops.concat([past_k, k], 2).output(0)
        v = ops.concat([past_v, v], 2).output(0)
    present = ops.concat([ops.unsqueeze(k, i64([0])), ops.unsqueeze(v, i64([0]))], 0).output(0) \
        if ctx.output_used(1) else None
    filter_value = ctx.attr("mask_filter_value", -10000.0)
    masks = [_key_mask(ctx, ctx.req(3), q, k, filter_value)] if ctx.has_input(3) else []
    if ctx.has_input(5):
        masks.append(convert(ctx.req(5), Type.f32))
    y = _attend(ctx, q, k, v, sizes[0] // n, masks, bool(ctx.attr("unidirectional", 0)), filter_value)
    return [_merge_heads(y), present]


@converter("MultiHeadAttention", domain=MS)
def multi_head_attention(ctx: NodeContext) -> list[Output | None]:
    """Attention over separate query [B, S, D], key [B, L, D] and value [B, L, Dv] (optionally
    biased by input 3 = [Dq + Dk + Dv]), key_padding_mask (input 4) and attention_bias (input 5);
    past_key/past_value (inputs 6, 7: [B, N, P, H]) are prepended, present_key/present_value
    (outputs 1, 2) hold the result."""
    n = ctx.attr("num_heads")
    q, k, v = ctx.req(0), ctx.req(1), ctx.req(2)
    if rank_of(k) != 3 or rank_of(q) != 3:
        raise ctx.fail("only [B, S, D] query, key and value are supported (no packed forms)")
    if ctx.has_input(3):
        dq = q.partial_shape[2].get_length()
        dk = k.partial_shape[2].get_length()
        bq, bk, bv = ops.variadic_split(ctx.req(3), i64(0), i64([dq, dk, -1])).outputs()
        q, k, v = ops.add(q, bq).output(0), ops.add(k, bk).output(0), ops.add(v, bv).output(0)
    head = q.partial_shape[2].get_length() // n if q.partial_shape[2].is_static else None
    qh, kh, vh = _heads(q, n), _heads(k, n), _heads(v, n)
    if ctx.has_input(6) and ctx.has_input(7):
        kh = ops.concat([ctx.req(6), kh], 2).output(0)
        vh = ops.concat([ctx.req(7), vh], 2).output(0)
    filter_value = ctx.attr("mask_filter_value", -10000.0)
    masks = [_key_mask(ctx, ctx.req(4), qh, kh, filter_value)] if ctx.has_input(4) else []
    if ctx.has_input(5):
        masks.append(convert(ctx.req(5), Type.f32))
    y = _attend(ctx, qh, kh, vh, head, masks, bool(ctx.attr("unidirectional", 0)), filter_value)
    return [_merge_heads(y), kh, vh]


# -- fused linear ops --------------------------------------------------------------------------
@converter("FusedMatMul", domain=MS)
def fused_matmul(ctx: NodeContext) -> Output:
    """alpha * op(A) @ op(B) with optional transposes of the two last axes."""
    a, b = ctx.req(0), ctx.req(1)
    for name in ("transBatchA", "transBatchB"):
        if ctx.attr(name, 0):
            raise ctx.fail(f"{name} is not supported")
    y = ops.matmul(a, b, bool(ctx.attr("transA", 0)), bool(ctx.attr("transB", 0))).output(0)
    alpha = ctx.attr("alpha", 1.0)
    return y if alpha == 1.0 else ops.multiply(y, const(alpha, y.element_type)).output(0)


def _activation(ctx: NodeContext, y: Output) -> Output:
    act = ctx.attr("activation", "")
    params = ctx.attr("activation_params", [])
    if act in ("", "Identity"):
        return y
    if act == "Relu":
        return ops.relu(y).output(0)
    if act == "Sigmoid":
        return ops.sigmoid(y).output(0)
    if act == "Tanh":
        return ops.tanh(y).output(0)
    if act == "LeakyRelu":
        return ops.prelu(y, const(params[0] if params else 0.01, y.element_type)).output(0)
    if act == "Clip":
        return ops.clamp(y, params[0], params[1]).output(0)
    if act == "HardSigmoid":
        a, b = (params + [0.2, 0.5])[:2] if params else (0.2, 0.5)
        return ops.hard_sigmoid(y, const(a, y.element_type), const(b, y.element_type)).output(0)
    raise ctx.fail(f"activation '{act}' is not supported")


@converter("FusedConv", domain=MS)
def fused_conv(ctx: NodeContext) -> Output:
    """Conv (+ bias) (+ Z, added before the activation) then an activation."""
    from ember.frontends.onnx.ops.nn import _channel_bias
    from ember.frontends.onnx.ops.quantize import _conv_like

    x, w = ctx.req(0), ctx.req(1)
    y = _conv_like(ctx, x, w)
    if ctx.has_input(2):
        y = ops.add(y, _channel_bias(ctx.req(2), rank_of(y))).output(0)
    if ctx.has_input(3):
        y = ops.add(y, ctx.req(3)).output(0)
    return _activation(ctx, y)


# -- rotary embeddings -------------------------------------------------------------------------
@converter("RotaryEmbedding", domain=MS)
def rotary_embedding(ctx: NodeContext) -> Output:
    """Rotates the first ``rotary_embedding_dim`` (default all) of each head's dimensions by
    cos/sin caches [max_pos, rot/2] at ``position_ids`` ([B, S], or a scalar offset); input
    [B, S, N*H] (``num_heads`` given) or [B, N, S, H]; ``interleaved`` pairs (0,1), (2,3)...
    instead of halves."""
    x, pos, cos, sin = ctx.req(0), ctx.req(1), ctx.req(2), ctx.req(3)
    r = rank_of(x)
    n = ctx.attr("num_heads", 0)
    interleaved = bool(ctx.attr("interleaved", 0))
    bsnh = r == 3
    if bsnh:
        if not n:
            width = x.partial_shape[2]
            half = cos.partial_shape[1]
            if not (width.is_static and half.is_static):
                raise ctx.fail("num_heads is needed for a [B, S, D] input")
            n = width.get_length() // (2 * half.get_length())
        xh = reshape(x, [0, 0, n, -1], True)  # [B, S, N, H]
    else:
        xh = ops.transpose(x, i64([0, 2, 1, 3])).output(0)  # [B, S, N, H]
    pos = convert(pos, Type.i64)
    if pos.partial_shape.rank_is_static and len(pos.partial_shape) <= 1:  # an offset
        s = ops.gather(shape_of(xh), i64(1), i64(0)).output(0)
        start = reshape(pos, [])
        pos = ops.unsqueeze(ops.range(start, ops.add(start, s), i64(1), "i64"), i64([0])).output(0)
    c = ops.unsqueeze(ops.gather(cos, pos, i64(0)), i64([2])).output(0)  # [B, S, 1, rot/2]
    sn = ops.unsqueeze(ops.gather(sin, pos, i64(0)), i64([2])).output(0)
    half = cos.partial_shape[1].get_length()
    rot = 2 * half
    head = xh.partial_shape[3]
    rest = None
    if head.is_static and head.get_length() > rot:
        xr, rest = ops.variadic_split(xh, i64(3), i64([rot, head.get_length() - rot])).outputs()
    else:
        xr = xh
    if interleaved:
        pairs = reshape(xr, [0, 0, 0, half, 2], True)
        x1, x2 = (ops.squeeze(p, i64([4])).output(0) for p in ops.split(pairs, i64(4), 2).outputs())
    else:
        x1, x2 = ops.split(xr, i64(3), 2).outputs()
    c, sn = convert(c, x.element_type), convert(sn, x.element_type)
    y1 = ops.subtract(ops.multiply(x1, c), ops.multiply(x2, sn)).output(0)
    y2 = ops.add(ops.multiply(x2, c), ops.multiply(x1, sn)).output(0)
    if interleaved:
        y = reshape(ops.concat([ops.unsqueeze(y1, i64([4])), ops.unsqueeze(y2, i64([4]))], 4).output(0),
                    [0, 0, 0, rot], True)
    else:
        y = ops.concat([y1, y2], 3).output(0)
    if rest is not None:
        y = ops.concat([y, rest], 3).output(0)
    if bsnh:
        return reshape(y, [0, 0, -1], True)
    return ops.transpose(y, i64([0, 2, 1, 3])).output(0)


# -- quantized ops ---------------------------------------------------------------------------------
def _unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``bits``-bit values packed little end first into bytes, one per byte out."""
    per = 8 // bits
    shifts = np.arange(per, dtype=np.uint8) * bits
    vals = (packed[..., None] >> shifts) & ((1 << bits) - 1)
    return vals.reshape(*packed.shape[:-1], packed.shape[-1] * per).astype(np.uint8)


@converter("MatMulNBits", domain=MS)
def matmul_nbits(ctx: NodeContext) -> Output:
    """A @ dequantized(B)^T with B [N, K] in ``bits``-bit blocks of ``block_size`` along K; kept
    compressed as OpenVINO's weight-compression pattern (u4/u8 constant, Convert, Subtract zero
    point, Multiply scale per block)."""
    a = ctx.req(0)
    k_dim, n_dim, bits, block = ctx.attr("K"), ctx.attr("N"), ctx.attr("bits", 4), ctx.attr("block_size")
    if bits not in (2, 4, 8):
        raise ctx.fail(f"{bits}-bit weights are not supported")
    if ctx.has_input(4) and ctx.const(4) is not None and np.asarray(ctx.const(4)).size:
        raise ctx.fail("g_idx (act-order) is not supported")
    packed = ctx.const(1)
    scales = ctx.const(2)
    if packed is None or scales is None:
        raise ctx.fail("the weights and scales must be constants")
    blocks = (k_dim + block - 1) // block
    q = _unpack_bits(np.asarray(packed, dtype=np.uint8).reshape(n_dim, blocks, -1), bits)[:, :, :block]
    wtype = {2: Type.u2, 4: Type.u4, 8: Type.u8}[bits]
    w = convert(Constant(np.ascontiguousarray(q), wtype).output(0), Type.f32)
    zp_arr = ctx.const(3) if ctx.has_input(3) else None
    if zp_arr is None:
        zp = const(np.float32(1 << (bits - 1)), Type.f32)
    elif np.asarray(zp_arr).dtype == np.uint8 and ctx.req(3).element_type is Type.u8:
        z = _unpack_bits(np.asarray(zp_arr, dtype=np.uint8).reshape(n_dim, -1), bits)[:, :blocks]
        zp = convert(Constant(np.ascontiguousarray(z.reshape(n_dim, blocks, 1)), wtype).output(0), Type.f32)
    else:
        zp = const(np.asarray(zp_arr, dtype=np.float32).reshape(n_dim, blocks, 1), Type.f32)
    s = const(np.asarray(scales, dtype=np.float32).reshape(n_dim, blocks, 1), Type.f32)
    w = ops.multiply(ops.subtract(w, zp), s).output(0)
    w = reshape(w, [n_dim, blocks * block])
    if blocks * block != k_dim:
        w = ops.slice(w, i64([0]), i64([k_dim]), i64([1]), i64([1])).output(0)
    w = convert(w, a.element_type)
    y = ops.matmul(a, w, False, True).output(0)
    if ctx.has_input(5):
        y = ops.add(y, ctx.req(5)).output(0)
    return y


def _dynamic_quantize_u8(x: Output) -> tuple[Output, Output, Output]:
    """ONNX DynamicQuantizeLinear: (uint8 values as f32, scale, zero point as f32)."""
    xf = convert(x, Type.f32)
    axes = i64(list(range(rank_of(xf))))
    lo = ops.minimum(ops.reduce_min(xf, axes, False), const(0.0, Type.f32)).output(0)
    hi = ops.maximum(ops.reduce_max(xf, axes, False), const(0.0, Type.f32)).output(0)
    scale = ops.divide(ops.subtract(hi, lo), const(255.0, Type.f32)).output(0)
    safe = ops.select(ops.equal(scale, const(0.0, Type.f32)), const(1.0, Type.f32), scale).output(0)
    zp = ops.clamp(ops.round(ops.subtract(const(0.0, Type.f32), ops.divide(lo, safe)), "half_to_even"),
                   0.0, 255.0).output(0)
    q = ops.clamp(ops.add(ops.round(ops.divide(xf, safe), "half_to_even"), zp), 0.0, 255.0).output(0)
    return q, scale, zp


def _per_column(v: Output, rank: int) -> Output:
    """A scale or zero point: a scalar, or one value per output column."""
    ps = v.partial_shape
    if ps.rank_is_static and len(ps) == 1 and not (ps[0].is_static and ps[0].get_length() == 1):
        return v
    return reshape(v, [])


@converter("DynamicQuantizeMatMul", domain=MS)
def dynamic_quantize_matmul(ctx: NodeContext) -> Output:
    """A (f32) quantized to uint8 per tensor at run time, times B (int8/uint8 with b_scale and
    b_zero_point, per tensor or per column), rescaled, plus bias."""
    a, b = ctx.req(0), ctx.req(1)
    qa, a_scale, a_zp = _dynamic_quantize_u8(a)
    ia = ops.subtract(qa, a_zp).output(0)
    bf = convert(b, Type.f32)
    if ctx.has_input(3):
        bf = ops.subtract(bf, _per_column(convert(ctx.req(3), Type.f32), rank_of(b))).output(0)
    y = ops.matmul(ia, bf, False, False).output(0)
    y = ops.multiply(y, ops.multiply(a_scale, _per_column(convert(ctx.req(2), Type.f32), rank_of(b)))).output(0)
    if ctx.has_input(4):
        y = ops.add(y, ctx.req(4)).output(0)
    return y


@converter("MatMulInteger16", domain=MS)
def matmul_integer16(ctx: NodeContext) -> Output:
    a = convert(ctx.req(0), Type.f64)  # f64 holds every int16 x int16 partial sum exactly
    b = convert(ctx.req(1), Type.f64)
    return convert(ops.matmul(a, b, False, False).output(0), Type.i32)


def _dq(ctx: NodeContext, x: int, scale: int, zp: int) -> Output:
    from ember.frontends.onnx.ops.quantize import _dequantized

    return _dequantized(ctx.req(x), ctx.req(scale), ctx.input(zp) if ctx.has_input(zp) else None)


def _q(ctx: NodeContext, y: Output, scale: int, zp: int, like: Output) -> Output:
    from ember.frontends.onnx.ops.quantize import _requantized

    z = ctx.input(zp) if ctx.has_input(zp) else None
    return _requantized(y, ctx.req(scale), z, z.element_type if z is not None else like.element_type)


@converter(["QLinearAdd", "QLinearMul"], domain=MS)
def qlinear_binary(ctx: NodeContext) -> Output:
    a, b = _dq(ctx, 0, 1, 2), _dq(ctx, 3, 4, 5)
    y = ops.add(a, b) if ctx.op_type == "QLinearAdd" else ops.multiply(a, b)
    return _q(ctx, y.output(0), 6, 7, ctx.req(0))


@converter(["QLinearSigmoid", "QLinearLeakyRelu"], domain=MS)
def qlinear_unary(ctx: NodeContext) -> Output:
    x = _dq(ctx, 0, 1, 2)
    if ctx.op_type == "QLinearSigmoid":
        y = ops.sigmoid(x).output(0)
    else:
        y = ops.prelu(x, const(ctx.attr("alpha", 0.01), Type.f32)).output(0)
    return _q(ctx, y, 3, 4, ctx.req(0))


@converter("QLinearGlobalAveragePool", domain=MS)
def qlinear_global_average_pool(ctx: NodeContext) -> Output:
    x = _dq(ctx, 0, 1, 2)
    r = rank_of(x)
    if ctx.attr("channels_last", 0):
        y = ops.reduce_mean(x, i64(list(range(1, r - 1))), True).output(0)
    else:
        y = ops.reduce_mean(x, i64(list(range(2, r))), True).output(0)
    return _q(ctx, y, 3, 4, ctx.req(0))


@converter("QLinearAveragePool", domain=MS)
def qlinear_average_pool(ctx: NodeContext) -> Output:
    from ember.frontends.onnx.ops.nn import _window_attrs

    x = _dq(ctx, 0, 1, 2)
    if ctx.attr("channels_last", 0):
        raise ctx.fail("channels_last is not supported")
    n = rank_of(x) - 2
    strides, _, pb, pe, auto_pad = _window_attrs(ctx, n)
    y = ops.avg_pool(x, strides, pb, pe, ctx.attr("kernel_shape"), not ctx.attr("count_include_pad", 0),
                     "ceil" if ctx.attr("ceil_mode", 0) else "floor", auto_pad).output(0)
    return _q(ctx, y, 3, 4, ctx.req(0))


@converter("QLinearConcat", domain=MS)
def qlinear_concat(ctx: NodeContext) -> Output:
    """Inputs: Y scale, Y zero point, then (X, scale, zero point) triples."""
    from ember.frontends.onnx.ops.quantize import _dequantized

    parts = []
    for i in range(2, ctx.num_inputs, 3):
        parts.append(_dequantized(ctx.req(i), ctx.req(i + 1), ctx.input(i + 2) if ctx.has_input(i + 2) else None))
    y = ops.concat(parts, ctx.attr("axis")).output(0)
    return _q(ctx, y, 0, 1, ctx.req(2))


@converter("DynamicQuantizeLSTM", domain=MS)
def dynamic_quantize_lstm(ctx: NodeContext) -> list[Any]:
    """An LSTM whose W [D, in, 4H] and R [D, H, 4H] are int8/uint8 with per-direction (or per
    direction and column) scales and zero points: the weights are dequantized and the LSTM runs
    in f32 (ONNX Runtime also quantizes the activations at each step, so results agree within
    that rounding)."""
    from ember.frontends.onnx.ops.rnn import lstm_from

    def dequant(w: int, s: int, z: int) -> Output:
        wf = convert(ctx.req(w), Type.f32)
        scale = convert(ctx.req(s), Type.f32)
        zp = convert(ctx.req(z), Type.f32)
        shape = [-1, 1, 1] if scale.partial_shape.rank_is_static and len(scale.partial_shape) == 1 else [0, 1, -1]
        wf = ops.subtract(wf, reshape(zp, shape, True)).output(0)
        wf = ops.multiply(wf, reshape(scale, shape, True)).output(0)
        return ops.transpose(wf, i64([0, 2, 1])).output(0)  # -> ONNX's [D, 4H, in]

    w = dequant(1, 8, 9)
    r = dequant(2, 10, 11)
    optional = [ctx.input(i) if ctx.has_input(i) else None for i in (3, 4, 5, 6, 7)]
    return lstm_from(ctx, ctx.req(0), w, r, *optional)


def _repeat_heads(x: Output, groups: int) -> Output:
    """[B, Nkv, T, H] -> [B, Nkv * groups, T, H], each kv head serving ``groups`` query heads."""
    if groups == 1:
        return x
    n_kv = x.partial_shape[1].get_length()
    return ops.gather(x, i64([h // groups for h in range(n_kv * groups)]), i64(1)).output(0)


@converter("GroupQueryAttention", domain=MS)
def group_query_attention(ctx: NodeContext) -> list[Output]:
    """Causal attention with fewer key/value heads than query heads, a key/value cache
    (past_key/past_value [B, Nkv, P, H] -> present [B, Nkv, P+S, H]), per-batch valid lengths
    (seqlens_k = total length - 1) and optional rotary embeddings of q and k at positions P..P+S-1."""
    for name, default in (("local_window_size", -1), ("softcap", 0.0), ("smooth_softmax", 0)):
        if ctx.attr(name, default) != default:
            raise ctx.fail(f"{name} is not supported")
    if not ctx.has_input(1):
        raise ctx.fail("a packed QKV input is not supported")
    if ctx.has_input(11) or ctx.has_input(10):
        raise ctx.fail("position_ids and attention_bias inputs are not supported")
    n, n_kv = ctx.attr("num_heads"), ctx.attr("kv_num_heads")
    q, k, v = _heads(ctx.req(0), n), _heads(ctx.req(1), n_kv), _heads(ctx.req(2), n_kv)
    if ctx.has_input(3):
        k = ops.concat([ctx.req(3), k], 2).output(0)
        v = ops.concat([ctx.req(4), v], 2).output(0)
    present_k, present_v = k, v
    s = ops.gather(shape_of(q), i64(2), i64(0)).output(0)
    t = ops.gather(shape_of(k), i64(2), i64(0)).output(0)
    if ctx.attr("do_rotary", 0):
        past = ops.subtract(t, s).output(0)
        cos, sin = ctx.req(7), ctx.req(8)
        interleaved = bool(ctx.attr("rotary_interleaved", 0))
        q = _rotate(q, past, cos, sin, interleaved)
        k_new = _rotate(_heads(ctx.req(1), n_kv), past, cos, sin, interleaved)
        if ctx.has_input(3):
            k = ops.concat([ctx.req(3), k_new], 2).output(0)
        else:
            k = k_new
        present_k = k
    head = ctx.req(0).partial_shape[2].get_length() // n if ctx.req(0).partial_shape[2].is_static else None
    valid = ops.add(convert(ctx.req(5), Type.i64), i64(1)).output(0)
    masks = [_key_mask(ctx, valid, q, k, float(np.finfo(np.float32).min))]
    y = _attend(ctx, q, _repeat_heads(k, n // n_kv), _repeat_heads(v, n // n_kv), head, masks, True,
                float(np.finfo(np.float32).min))
    return [_merge_heads(y), present_k, present_v]


def _rotate(x: Output, start: Output, cos: Output, sin: Output, interleaved: bool) -> Output:
    """Rotary embedding of [B, N, S, H] heads at positions start..start+S-1."""
    s = ops.gather(shape_of(x), i64(2), i64(0)).output(0)
    pos = ops.range(start, ops.add(start, s), i64(1), "i64").output(0)  # [S]
    c = convert(ops.gather(cos, pos, i64(0)).output(0), x.element_type)  # [S, rot/2]
    sn = convert(ops.gather(sin, pos, i64(0)).output(0), x.element_type)
    half = cos.partial_shape[1].get_length()
    head = x.partial_shape[3].get_length()
    rot = 2 * half
    rest = None
    xr = x
    if head > rot:
        xr, rest = ops.variadic_split(x, i64(3), i64([rot, head - rot])).outputs()
    if interleaved:
        pairs = reshape(xr, [0, 0, 0, half, 2], True)
        x1, x2 = (ops.squeeze(p, i64([4])).output(0) for p in ops.split(pairs, i64(4), 2).outputs())
    else:
        x1, x2 = ops.split(xr, i64(3), 2).outputs()
    y1 = ops.subtract(ops.multiply(x1, c), ops.multiply(x2, sn)).output(0)
    y2 = ops.add(ops.multiply(x2, c), ops.multiply(x1, sn)).output(0)
    if interleaved:
        y = reshape(ops.concat([ops.unsqueeze(y1, i64([4])), ops.unsqueeze(y2, i64([4]))], 4).output(0),
                    [0, 0, 0, rot], True)
    else:
        y = ops.concat([y1, y2], 3).output(0)
    return ops.concat([y, rest], 3).output(0) if rest is not None else y
