"""Extended passes (level 2): fold BatchNorm and scales into convolutions, recognize GELU,
LayerNorm (as MVN), Swish, HSwish, HSigmoid, Mish and attention from their decomposed forms,
and mark the Conv/MatMul epilogue groups (bias, residual, ReLU/Clamp) devices fuse."""

from __future__ import annotations

import math

import numpy as np

import ember.opset as ops
from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.passes.matcher import Any_, Const, Match, Pattern, Rule, rewrite, rule, scalar_close
from ember.passes.pipeline import note_fired, register_pass

_CONVS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData")


def float_value(port: Output) -> np.ndarray | None:
    """The value of a constant float input: a Constant, or a float Constant behind one Convert
    to another float type (IR with f16-compressed weights); None for anything else."""
    node = port.node
    if isinstance(node, Constant):
        return node.data
    if node.type_name == "Convert" and isinstance(node.input_values()[0].node, Constant):
        src = node.input_values()[0].node.data
        if src.dtype.kind == "f" and port.element_type.is_real:
            return src.astype(port.element_type.dtype)
    return None


def _const_weights(n: Node) -> bool:
    return float_value(n.input_values()[1]) is not None and n.output(0).partial_shape.rank_is_static


def _scaled_weights(conv: Node, scale: np.ndarray) -> np.ndarray:
    """Weights of ``conv`` multiplied per output channel by ``scale`` (length C_out), in the
    convolution's element type (compressed weights come back as full-precision constants; saving
    with ``compress_to_fp16`` compresses them again)."""
    w = float_value(conv.input_values()[1]).astype(np.float64)  # type: ignore[union-attr]
    if conv.type_name == "GroupConvolution":  # [G, C_out/G, C_in/G, k...]
        s = scale.reshape((w.shape[0], w.shape[1]) + (1,) * (w.ndim - 2))
    elif conv.type_name == "ConvolutionBackpropData":  # [C_in, C_out, k...]
        s = scale.reshape((1, w.shape[1]) + (1,) * (w.ndim - 2))
    elif conv.type_name == "GroupConvolutionBackpropData":  # [G, C_in/G, C_out/G, k...]
        s = scale.reshape((w.shape[0], 1, w.shape[2]) + (1,) * (w.ndim - 3))
    else:  # [C_out, C_in, k...]
        s = scale.reshape((w.shape[0],) + (1,) * (w.ndim - 1))
    return (w * s).astype(conv.input_values()[1].element_type.dtype)


def _rebuild_conv(conv: Node, weights: np.ndarray) -> Node:
    w = ops.constant(weights, name=conv.input_values()[1].node.friendly_name + "/fused")
    return conv.clone_with_inputs([conv.input_values()[0], w.output(0), *conv.input_values()[2:]])


def _bn_inputs(bn: Node) -> tuple[Output, list[Node]]:
    """(data port, [gamma, beta, mean, var] nodes) for BatchNormInference v0 and v5 orders."""
    ins = bn.input_values()
    if bn.version == "opset1":
        return ins[2], [ins[0].node, ins[1].node, ins[3].node, ins[4].node]
    return ins[0], [ins[1].node, ins[2].node, ins[3].node, ins[4].node]


def _conv_and_bias(data: Output) -> tuple[Node, np.ndarray] | None:
    """(convolution, per-channel bias) behind a BatchNorm's data input: the convolution itself
    (bias 0), or a constant bias Add after it (an ONNX Conv/ConvTranspose with a bias input)."""
    node = data.node
    if node.type_name in _CONVS:
        return node, np.zeros(1)
    if node.type_name != "Add" or not data.partial_shape.rank_is_static:
        return None
    a, b = node.input_values()
    for conv, other in ((a, b), (b, a)):
        c = float_value(other)
        if conv.node.type_name in _CONVS and len(conv.targets) == 1 and c is not None and _per_channel(c) \
                and c.ndim == data.partial_shape.rank.get_length() and conv.partial_shape == data.partial_shape:
            return conv.node, c.astype(np.float64).reshape(-1)
    return None


def _bn_is_foldable(bn: Node) -> bool:
    data, params = _bn_inputs(bn)
    found = _conv_and_bias(data)
    return found is not None and all(float_value(p.output(0)) is not None for p in params) \
        and _const_weights(found[0]) and len(data.targets) == 1


@rule(Pattern("BatchNormInference", name="bn", pred=_bn_is_foldable))
def conv_batchnorm(m: Match) -> Output | None:
    bn = m["bn"]
    data, (gamma, beta, mean, var) = _bn_inputs(bn)
    found = _conv_and_bias(data)
    assert found is not None  # checked by the pattern's predicate
    conv, conv_bias = found
    g, b, mu, v = (float_value(p.output(0)).astype(np.float64).reshape(-1)  # type: ignore[union-attr]
                   for p in (gamma, beta, mean, var))
    scale = g / np.sqrt(v + bn.attrs["epsilon"])
    shift = b + (conv_bias - mu) * scale
    new_conv = _rebuild_conv(conv, _scaled_weights(conv, scale))
    rank = conv.output(0).partial_shape.rank.get_length()
    bias = ops.constant(shift.astype(conv.output(0).element_type.dtype).reshape((1, -1) + (1,) * (rank - 2)),
                        name=bn.friendly_name + "/bias")
    return ops.add(new_conv, bias, name=bn.friendly_name).output(0)


@register_pass("fold_conv_batchnorm", level=2)
def fold_conv_batchnorm(model: Model) -> Model:
    """Fold BatchNormInference after a convolution into its weights and a bias Add."""
    note_fired(sum(rewrite(model, [conv_batchnorm]).values()))
    return model


def _per_channel(data: np.ndarray) -> bool:
    """A float constant shaped [1, C, 1, ...]: one value per channel."""
    return data.dtype.kind == "f" and data.ndim >= 2 and all(d == 1 for i, d in enumerate(data.shape) if i != 1)


@rule(Pattern("Multiply", Pattern(_CONVS, name="conv", consumers=1, pred=_const_weights),
              Const(name="s", pred=_per_channel), name="mul"))
def conv_scale(m: Match) -> Output | None:
    conv, s = m["conv"], m.const("s")
    c_out = conv.output(0).partial_shape[1]
    if s.ndim != conv.output(0).partial_shape.rank.get_length() or not c_out.is_static or s.shape[1] not in (1, c_out.get_length()):
        return None
    scale = np.broadcast_to(s.reshape(-1).astype(np.float64), (c_out.get_length(),))
    return _rebuild_conv(conv, _scaled_weights(conv, scale)).output(0)


def _channel_values(c: np.ndarray, port: Output) -> np.ndarray | None:
    """``c`` as float64 values per channel of ``port`` (axis 1) when it broadcasts along that
    axis only: a scalar (any rank up to the port's), or shaped ``[(1,) C, 1, ...]``."""
    shape = port.partial_shape
    if c.dtype.kind != "f" or not shape.rank_is_static or c.ndim > shape.rank.get_length() \
            or shape.rank.get_length() < 2 or not shape[1].is_static or not np.all(np.isfinite(c)):
        return None
    channels = shape[1].get_length()
    if c.size == 1:
        return np.full(channels, float(c.reshape(-1)[0]))
    full = (1,) * (shape.rank.get_length() - c.ndim) + c.shape
    if full[1] != channels or any(d != 1 for i, d in enumerate(full) if i != 1):
        return None
    return c.astype(np.float64).reshape(-1)


def _biased_conv() -> Pattern:
    return Pattern("Add", Pattern(_CONVS, name="conv", consumers=1, pred=_const_weights), Const(name="bias"),
                   name="add", consumers=1, commutative=True)


def _same_shape(m: Match, root: str) -> bool:
    return m[root].output(0).partial_shape == m.port("conv").partial_shape == m.port("add").partial_shape


@rule(Pattern("Multiply", _biased_conv(), Const(name="s"), name="mul", commutative=True))
def conv_bias_scale(m: Match) -> Output | None:
    """``(conv + bias) * s`` (s per channel or scalar) -> ``conv' + bias * s`` with ``s`` in the
    weights (PP-LCNet/MobileOne's learnable scale after a folded BatchNorm)."""
    conv, add = m["conv"], m.port("add")
    s, bias = _channel_values(m.const("s"), add), _channel_values(m.const("bias"), add)
    if s is None or bias is None or not _same_shape(m, "mul"):
        return None
    rank = add.partial_shape.rank.get_length()
    shift = ops.constant((bias * s).astype(add.element_type.dtype).reshape((1, -1) + (1,) * (rank - 2)),
                         name=m["mul"].friendly_name + "/bias")
    return ops.add(_rebuild_conv(conv, _scaled_weights(conv, s)), shift, name=m["mul"].friendly_name).output(0)


@rule(Pattern("Add", _biased_conv(), Const(name="c"), name="outer", commutative=True))
def conv_bias_shift(m: Match) -> Output | None:
    """``(conv + b1) + b2`` (both per channel or scalar) -> ``conv + (b1 + b2)``, one bias."""
    add = m.port("add")
    b1, b2 = _channel_values(m.const("bias"), add), _channel_values(m.const("c"), add)
    if b1 is None or b2 is None or not _same_shape(m, "outer"):
        return None
    rank = add.partial_shape.rank.get_length()
    bias = ops.constant((b1 + b2).astype(add.element_type.dtype).reshape((1, -1) + (1,) * (rank - 2)),
                        name=m["outer"].friendly_name + "/bias")
    return ops.add(m.port("conv"), bias, name=m["outer"].friendly_name).output(0)


@register_pass("fold_conv_scale", level=2)
def fold_conv_scale(model: Model) -> Model:
    """Fold a per-channel (or scalar) constant Multiply after a convolution, or after its bias
    Add, into its weights, and a constant Add after the bias Add into the bias."""
    note_fired(sum(rewrite(model, [conv_scale, conv_bias_scale, conv_bias_shift]).values()))
    return model


# -- GELU -------------------------------------------------------------------------------------

def _erf_arg() -> Pattern:
    return Pattern(("Divide", "Multiply"), Any_("x"), Const(name="k"), name="scaled")


def _erf_ok(m: Match) -> bool:
    k = float(m.const("k").reshape(-1)[0]) if m.const("k").size == 1 else float("nan")
    want = math.sqrt(2.0) if m["scaled"].type_name == "Divide" else 1 / math.sqrt(2.0)
    return abs(k - want) < 1e-3 * want


def _one_plus_erf() -> Pattern:
    return Pattern("Add", Pattern("Erf", _erf_arg()), Const(pred=scalar_close(1.0)), commutative=True)


def _gelu(m: Match) -> Output | None:
    if not _erf_ok(m):
        return None
    return ops.gelu(m.port("x"), "erf", name=m["root"].friendly_name).output(0)


_HALF = Const(pred=scalar_close(0.5))
gelu_a = rule(Pattern("Multiply", Pattern("Multiply", Any_("x"), _one_plus_erf(), commutative=True), _HALF,
                      name="root", commutative=True), "gelu")(_gelu)
gelu_b = rule(Pattern("Multiply", Pattern("Multiply", Any_("x"), _HALF, commutative=True), _one_plus_erf(),
                      name="root", commutative=True), "gelu")(_gelu)
gelu_c = rule(Pattern("Multiply", Any_("x"), Pattern("Multiply", _one_plus_erf(), _HALF, commutative=True),
                      name="root", commutative=True), "gelu")(_gelu)


@register_pass("recognize_gelu", level=2)
def recognize_gelu(model: Model) -> Model:
    """x * 0.5 * (1 + erf(x / sqrt 2)) in its usual orders -> Gelu."""
    note_fired(sum(rewrite(model, [gelu_a, gelu_b, gelu_c]).values()))
    return model


# -- LayerNorm ----------------------------------------------------------------------------------

def _last_axis_mean(n: Node) -> bool:
    axes = n.input_value(1)
    rank = n.input_shape(0).rank
    return axes is not None and n.attrs.get("keep_dims", False) and rank.is_static and \
        sorted(int(a) % rank.get_length() for a in np.asarray(axes).reshape(-1)) == [rank.get_length() - 1]


def _centered() -> Pattern:
    return Pattern("Subtract", Any_("x"), Pattern("ReduceMean", Any_("x"), name="mean", pred=_last_axis_mean),
                   name="d")


def _variance() -> Pattern:
    sq = Pattern(("Power", "Multiply"), _centered(), name="sq")
    return Pattern("ReduceMean", sq, name="var", pred=_last_axis_mean)


_LN = Pattern("Divide", _centered(),
              Pattern("Sqrt", Pattern("Add", _variance(), Const(name="eps"), commutative=True)), name="root")


@rule(_LN)
def layernorm(m: Match) -> Output | None:
    sq = m["sq"]
    if sq.type_name == "Power":
        e = sq.input_value(1)
        if e is None or e.size != 1 or float(e.reshape(-1)[0]) != 2.0:
            return None
    elif sq.input_values()[0] != sq.input_values()[1]:
        return None
    eps = m.const("eps")
    if eps.size != 1:
        return None
    rank = m.port("x").partial_shape.rank.get_length()
    axes = ops.constant(np.array([rank - 1], np.int64))
    return ops.mvn(m.port("x"), axes, True, float(eps.reshape(-1)[0]), "inside_sqrt",
                   name=m["root"].friendly_name).output(0)


@register_pass("recognize_layernorm", level=2)
def recognize_layernorm(model: Model) -> Model:
    """(x - mean) / sqrt(var + eps) over the last axis -> MVN (LayerNorm's scale and shift stay)."""
    note_fired(sum(rewrite(model, [layernorm]).values()))
    return model


# -- Swish, HSwish, HSigmoid, Mish ---------------------------------------------------------------

@rule(Pattern("Multiply", Any_("x"), Pattern("Sigmoid", Any_("x")), name="root", commutative=True))
def swish(m: Match) -> Output | None:
    return ops.swish(m.port("x"), name=m["root"].friendly_name).output(0)


@register_pass("recognize_swish", level=2)
def recognize_swish(model: Model) -> Model:
    """x * sigmoid(x) -> Swish."""
    note_fired(sum(rewrite(model, [swish]).values()))
    return model


def _relu6_of_x_plus_3() -> Pattern:
    plus3 = Pattern("Add", Any_("x"), Const(pred=scalar_close(3.0)), commutative=True)
    return Pattern("Clamp", plus3, pred=lambda n: n.attrs["min"] == 0.0 and n.attrs["max"] == 6.0)


def _div6(inner: Pattern) -> list[Pattern]:
    return [Pattern("Divide", inner, Const(pred=scalar_close(6.0)), name="root"),
            Pattern("Multiply", inner, Const(pred=scalar_close(1 / 6.0)), name="root", commutative=True)]


def _hswish(m: Match) -> Output | None:
    return ops.hswish(m.port("x"), name=m["root"].friendly_name).output(0)


def _hsigmoid(m: Match) -> Output | None:
    return ops.hsigmoid(m.port("x"), name=m["root"].friendly_name).output(0)


_HSWISH_RULES = [rule(p, "hswish")(_hswish) for p in
                 _div6(Pattern("Multiply", Any_("x"), _relu6_of_x_plus_3(), commutative=True))]
_HSWISH_RULES += [rule(Pattern("Multiply", Any_("x"), p, name="root", commutative=True), "hswish")(_hswish)
                  for p in [Pattern("Divide", _relu6_of_x_plus_3(), Const(pred=scalar_close(6.0))),
                            Pattern("Multiply", _relu6_of_x_plus_3(), Const(pred=scalar_close(1 / 6.0)),
                                    commutative=True)]]
_HSIGMOID_RULES = [rule(p, "hsigmoid")(_hsigmoid) for p in _div6(_relu6_of_x_plus_3())]


@register_pass("recognize_hswish", level=2)
def recognize_hswish(model: Model) -> Model:
    """x * relu6(x + 3) / 6 -> HSwish; relu6(x + 3) / 6 -> HSigmoid."""
    fired = rewrite(model, _HSWISH_RULES)
    fired2 = rewrite(model, _HSIGMOID_RULES)
    note_fired(sum(fired.values()) + sum(fired2.values()))
    return model


_SOFTPLUS = Pattern("SoftPlus", Any_("x"))
_SOFTPLUS_LOG = Pattern("Log", Pattern("Add", Pattern("Exp", Any_("x")), Const(pred=scalar_close(1.0)),
                                       commutative=True))


def _mish(m: Match) -> Output | None:
    return ops.mish(m.port("x"), name=m["root"].friendly_name).output(0)


_MISH_RULES = [rule(Pattern("Multiply", Any_("x"), Pattern("Tanh", sp), name="root", commutative=True), "mish")(_mish)
               for sp in (_SOFTPLUS, _SOFTPLUS_LOG)]


@register_pass("recognize_mish", level=2)
def recognize_mish(model: Model) -> Model:
    """x * tanh(softplus(x)) (softplus also as log(1 + exp(x))) -> Mish."""
    note_fired(sum(rewrite(model, _MISH_RULES).values()))
    return model


# -- epilogue groups ------------------------------------------------------------------------------
# A GEMM-like producer and the elementwise tail its kernel can finish in its epilogue:
# producer [-> scalar scale (MatMul)] [-> Add] [-> Add] [-> ReLU | Clamp | HSwish
# [-> scalar Multiply [-> scalar Add]]] (the last two: PP-LCNet's learnable affine after the
# activation; the CPU depthwise kernel takes them, other kernels stop before), each link the only
# consumer of the one before, every member of the producer's shape, the Adds taking one
# constant (bias) and one computed tensor (residual) at most. These rules are the one
# description of fusion: this pass marks the groups (``fused_group``), ``ember graph`` draws
# them and the CPU device fuses what they mark (taking the prefix its kernels support).

EPILOGUE_PRODUCERS = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData",
                      "GroupConvolutionBackpropData")
# HSwish: the group mark reaches it for depthwise kernels and the int8 lowering; the CPU device's
# GEMM/conv kernels also take HSwish, HSigmoid, Swish, GELU and Sigmoid outside the group
# (lowering/passes.py take_epilogue_activation)
EPILOGUE_ACTIVATIONS = ("ReLU", "Clamp", "HSwish")
FUSED_GROUP = "fused_group"


def _scalar_const(n: Node) -> bool:
    return isinstance(n, Constant) and n.data.size == 1 and n.data.dtype.kind == "f"


def _epilogue_patterns() -> list[Pattern]:
    """Every epilogue chain shape, as matcher patterns rooted at the chain's last node (inner
    links have one consumer, the next link; the last may have many)."""
    def scale(consumers: int | None) -> Pattern:
        return Pattern(("Multiply", "Divide"), Pattern("MatMul", name="producer", consumers=1),
                       Pattern("Const", name="scale_value", pred=_scalar_const), name="scale", consumers=consumers)

    def adds(k: int, below: list[Pattern], consumers: int | None) -> list[Pattern]:
        return [p for b in below for p in (Pattern("Add", b, Any_(f"operand{k}"), name=f"add{k}", consumers=consumers),
                                           Pattern("Add", Any_(f"operand{k}"), b, name=f"add{k}", consumers=consumers))]

    heads = [Pattern(EPILOGUE_PRODUCERS, name="producer", consumers=1), scale(1)]
    inner = [*heads, *adds(1, heads, 1), *adds(2, adds(1, heads, 1), 1)]
    roots = [scale(None), *adds(1, heads, None), *adds(2, adds(1, heads, 1), None)]  # a producer alone is no group
    acts = [Pattern(EPILOGUE_ACTIVATIONS, b, name="activation") for b in inner]

    def post_scale(consumers: int | None) -> list[Pattern]:
        return [Pattern("Multiply", Pattern(EPILOGUE_ACTIVATIONS, b, name="activation", consumers=1),
                        Pattern("Const", name="post_scale_value", pred=_scalar_const), name="post_scale",
                        consumers=consumers, commutative=True) for b in inner]

    post_shift = [Pattern("Add", p, Pattern("Const", name="post_shift_value", pred=_scalar_const), name="post_shift",
                          commutative=True) for p in post_scale(1)]
    return roots + acts + post_scale(None) + post_shift


def _epilogue_members(m: Match, order: dict[int, int]) -> list[Node] | None:
    """The group's nodes in chain order, or None when the match breaks a group rule."""
    members = [m[name] for name in ("producer", "scale", "add1", "add2", "activation", "post_scale", "post_shift")
               if name in m]
    shape = m.port("producer").partial_shape
    if any(n.output(0).partial_shape != shape for n in members):
        return None
    consts = tensors = 0
    for k in (1, 2):
        if f"operand{k}" not in m:
            continue
        operand = m.port(f"operand{k}")
        if isinstance(operand.node, Constant):
            consts += 1
        else:  # a residual: computed before the producer (the producer's kernel reads it)
            tensors += 1
            if order.get(id(operand.node), -1) >= order.get(id(m["producer"]), -1):
                return None
    return members if consts <= 1 and tensors <= 1 and len(members) > 1 else None


@register_pass("mark_epilogue_groups", level=2)
def mark_epilogue_groups(model: Model) -> Model:
    """Mark Conv/MatMul + bias/residual Add + ReLU/Clamp epilogue groups in rt_info
    (``fused_group``) so that devices fuse them into one kernel. The graph itself is unchanged."""
    ops_in_order = model.get_ordered_ops()
    order = {id(n): i for i, n in enumerate(ops_in_order)}
    for n in ops_in_order:
        n.rt_info.pop(FUSED_GROUP, None)
    groups: dict[int, list[Node]] = {}  # producer id -> its longest valid chain

    def mark(m: Match) -> None:
        members = _epilogue_members(m, order)
        if members is not None and len(members) > len(groups.get(id(members[0]), [])):
            groups[id(members[0])] = members
        return None

    rewrite(model, [Rule(p, mark, "mark_epilogue_groups") for p in _epilogue_patterns()], max_rounds=1)
    for members in groups.values():
        for i, n in enumerate(members):
            n.rt_info[FUSED_GROUP] = {"version": "0", "value": members[0].friendly_name, "position": str(i)}
    note_fired(len(groups))
    return model


def same_fused_group(prev: Node, nxt: Node) -> bool:
    """Whether ``nxt`` follows ``prev`` in the epilogue group the optimizer marked."""
    a, b = prev.rt_info.get(FUSED_GROUP), nxt.rt_info.get(FUSED_GROUP)
    if not isinstance(a, dict) or not isinstance(b, dict) or a.get("value") != b.get("value"):
        return False
    try:
        return int(b.get("position", -1)) == int(a.get("position", -1)) + 1
    except (TypeError, ValueError):
        return False


# -- attention ------------------------------------------------------------------------------------

def _last_axis_softmax(n: Node) -> bool:
    rank = n.output(0).partial_shape.rank
    return rank.is_static and n.attrs["axis"] % rank.get_length() == rank.get_length() - 1


def _plain_matmul(n: Node) -> bool:
    return not n.attrs.get("transpose_a", False) and not n.attrs.get("transpose_b", False)


def _attention_patterns() -> list[Pattern]:
    out = []
    for scaled in (True, False):
        for masked in (True, False):
            x: Pattern = Pattern("MatMul", Any_("q"), Any_("kt"), name="qk",
                                 pred=lambda n: not n.attrs.get("transpose_a", False))
            if scaled:
                x = Pattern(("Divide", "Multiply"), x, Const(name="s", pred=lambda d: d.size == 1), name="scaled")
            if masked:
                x = Pattern("Add", x, Any_("mask"), commutative=True)
            sm = Pattern("SoftMax", x, pred=_last_axis_softmax)
            out.append(Pattern("MatMul", sm, Any_("v"), name="root", pred=_plain_matmul))
    return out


def _key_from(m: Match) -> Output | None:
    qk, kt = m["qk"], m.port("kt")
    if qk.attrs.get("transpose_b", False):
        return kt
    rank = kt.partial_shape.rank
    if not rank.is_static or rank.get_length() < 2:
        return None
    r = rank.get_length()
    swap = np.arange(r, dtype=np.int64)
    swap[[-2, -1]] = swap[[-1, -2]]
    node = kt.node
    if node.type_name == "Transpose" and isinstance(node.input_values()[1].node, Constant) and \
            np.array_equal(node.input_values()[1].node.data.reshape(-1), swap):
        return node.input_values()[0]
    return ops.transpose(kt, ops.constant(swap)).output(0)


def _attention(m: Match) -> Output | None:
    key = _key_from(m)
    if key is None:
        return None
    scale = 1.0
    if "s" in m:
        c = float(m.const("s").reshape(-1)[0])
        if m["scaled"].type_name == "Divide":
            if c == 0:
                return None
            c = 1.0 / c
        scale = c
    q = m.port("q")
    dtype = q.element_type.dtype
    mask = m.port("mask") if "mask" in m else ops.constant(np.zeros((), dtype)).output(0)
    if mask.element_type is not q.element_type:
        return None
    return ops.scaled_dot_product_attention(q, key, m.port("v"), mask, ops.constant(np.asarray(scale, dtype)),
                                            False, name=m["root"].friendly_name).output(0)


_ATTENTION_RULES = [rule(p, "attention")(_attention) for p in _attention_patterns()]


@register_pass("recognize_attention", level=2)
def recognize_attention(model: Model) -> Model:
    """MatMul(Q, K^T) [* scale] [+ mask] -> SoftMax -> MatMul(., V) -> ScaledDotProductAttention."""
    note_fired(sum(rewrite(model, _ATTENTION_RULES).values()))
    return model
