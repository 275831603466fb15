"""The CPU device against REFERENCE: one table of small graphs (each lowered op and fusion),
the device's registration and properties, and the real networks (slow)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.graph.model import Model

RNG = np.random.default_rng(1234)


def _f(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _w(*shape: int) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return _f(*shape, scale=1.0 / np.sqrt(max(fan_in, 1)))


def _param(shape: tuple[int, ...], name: str = "x", dtype=np.float32):  # noqa: ANN202
    return ops.parameter(list(shape), dtype, name=name)


def _model(out, params) -> Model:  # noqa: ANN001
    return Model([out] if not isinstance(out, list) else out, params, "case")


# -- graph builders ---------------------------------------------------------------------------

def conv_chain(n: int, c: int, h: int, w: int, oc: int, k: int, stride: int = 1, pad: int = 0, dil: int = 1,
               groups: int = 1, bias: bool = True, act: str | None = "relu", residual: str | None = None):  # noqa: ANN201
    def build() -> Model:
        x = _param((n, c, h, w))
        if groups == 1:
            y = ops.convolution(x, _w(oc, c, k, k), [stride] * 2, [pad] * 2, [pad] * 2, [dil] * 2)
        else:
            y = ops.group_convolution(x, _w(groups, oc // groups, c // groups, k, k), [stride] * 2, [pad] * 2,
                                      [pad] * 2, [dil] * 2)
        if bias:
            y = ops.add(y, _f(1, oc, 1, 1))
        if residual == "input":
            y = ops.add(x, y)
        elif residual == "conv":  # as ResNet's downsample branch: conv + bias, added to the main one
            z = ops.convolution(x, _w(oc, c, 1, 1), [stride] * 2, [0, 0], [0, 0], [1, 1])
            y = ops.add(y, ops.add(z, _f(1, oc, 1, 1)))
        if act == "relu":
            y = ops.relu(y)
        elif act == "relu6":
            y = ops.clamp(y, 0.0, 6.0)
        elif act == "sigmoid":
            y = ops.sigmoid(y)
        return _model(y, [x])
    return build, [(n, c, h, w)], {"Convolution", "GroupConvolution", "Add", "ReLU", "Clamp"}


def matmul_chain(shape: tuple[int, ...], n: int, transpose_b: bool = False, bias: bool = True,
                 act: str | None = None, residual: bool = False):  # noqa: ANN201
    def build() -> Model:
        x = _param(shape)
        k = shape[-1]
        w = _w(n, k) if transpose_b else _w(k, n)
        y = ops.matmul(x, w, False, transpose_b)
        if bias:
            y = ops.add(_f(n), y)
        if residual:
            y = ops.add(y, ops.matmul(x, _w(k, n), False, False))
        if act == "relu":
            y = ops.relu(y)
        elif act == "gelu":
            y = ops.gelu(y)
        return _model(y, [x])
    return build, [shape], {"MatMul", "Add", "ReLU"}


def pool_case(shape: tuple[int, ...], kind: str, k: int, stride: int, pad: tuple[int, int] = (0, 0),
              rounding: str = "floor", exclude_pad: bool = True, after_conv: bool = True):  # noqa: ANN201
    def build() -> Model:
        x = _param(shape)
        y = ops.convolution(x, _w(shape[1], shape[1], 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]) if after_conv else x
        pb, pe = [pad[0]] * 2, [pad[1]] * 2
        if kind == "max":
            y = ops.max_pool(y, [stride] * 2, [1, 1], pb, pe, [k, k], rounding)
        else:
            y = ops.avg_pool(y, [stride] * 2, pb, pe, [k, k], exclude_pad, rounding)
        return _model(y.output(0), [x])
    return build, [shape], {"MaxPool", "AvgPool", "Convolution"}


def reduce_case(shape: tuple[int, ...], op: str, axes: list[int], keep: bool, after_conv: bool = False):  # noqa: ANN201
    def build() -> Model:
        x = _param(shape)
        y = ops.convolution(x, _w(shape[1], shape[1], 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]) if after_conv else x
        y = getattr(ops, op)(y, np.array(axes, np.int64), keep)
        return _model(y, [x])
    return build, [shape], {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "Convolution"}


EDGE = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-6, 0.3, -0.45, 0.55, 1.0, -2.5, 9.5, 20.0, -30.0, 88.0,
                 -100.0, 200.0, np.inf, -np.inf, np.nan], np.float32)


def eltwise_case(fn, shapes: list[tuple[int, ...]], edge: bool = False, positive: bool = False,  # noqa: ANN001
                 native: frozenset[str] = frozenset({"Eltwise"})):  # noqa: ANN201
    """``fn(*params) -> node``; ``edge`` puts special values (inf, NaN, huge, tiny) in input 0."""
    def build() -> Model:
        params = [_param(s, f"x{i}") for i, s in enumerate(shapes)]
        return _model(fn(*params), params)

    def inputs() -> list[np.ndarray]:
        arrs = [_f(*s) for s in shapes]
        if positive:
            arrs = [np.abs(a) + np.float32(0.01) for a in arrs]
        if edge:
            flat = arrs[0].reshape(-1)
            flat[:min(flat.size, EDGE.size)] = EDGE[:flat.size]
        return arrs
    return build, inputs, set(native)


UNARY_BUILDERS = {
    "relu": ops.relu, "sigmoid": ops.sigmoid, "tanh": ops.tanh, "exp": ops.exp, "erf": ops.erf,
    "neg": ops.negative, "floor": ops.floor, "ceil": ops.ceiling, "hswish": ops.hswish, "hsigmoid": ops.hsigmoid,
    "softplus": ops.softplus, "mish": ops.mish, "swish": ops.swish,
    "gelu-erf": ops.gelu, "gelu-tanh": lambda x: ops.gelu(x, "tanh"),
    "clamp": lambda x: ops.clamp(x, -0.5, 2.0), "elu": lambda x: ops.elu(x, 0.7),
    "abs": lambda x: ops.absolute(x), "square": lambda x: ops.power(x, np.float32(2.0)),
}
POSITIVE_BUILDERS = {"log": ops.log, "sqrt": ops.sqrt, "pow-2.5": lambda x: ops.power(x, np.float32(2.5))}


CASES = {
    # convolutions with their fused tails
    "conv3x3-bias-relu": conv_chain(1, 3, 8, 8, 5, 3, pad=1),
    "conv1x1-17ch": conv_chain(1, 17, 5, 7, 17, 1, act=None),
    "conv-stride2-relu6": conv_chain(2, 8, 9, 9, 16, 3, stride=2, pad=1, act="relu6"),
    "conv-dilated-nobias": conv_chain(1, 4, 11, 11, 3, 3, pad=2, dil=2, bias=False),
    "conv-residual-input-relu": conv_chain(1, 8, 6, 6, 8, 3, pad=1, residual="input"),
    "conv-residual-conv-relu": conv_chain(1, 8, 6, 6, 16, 3, stride=2, pad=1, residual="conv"),
    "conv-sigmoid-tail": conv_chain(1, 3, 7, 7, 4, 3, pad=1, act="sigmoid"),
    "conv-7x7-stem": conv_chain(1, 3, 20, 20, 16, 7, stride=2, pad=3),
    "conv-1x1-1ch": conv_chain(1, 1, 1, 1, 1, 1),
    "grouped-conv": conv_chain(1, 8, 9, 9, 12, 3, pad=1, groups=4),
    "conv1d-bias-relu": (lambda: _conv1d_model(1), lambda: [_f(2, 6, 17)], {"Convolution"}),
    "conv1d-grouped-strided": (lambda: _conv1d_model(3, stride=2), lambda: [_f(1, 6, 17)], {"GroupConvolution"}),
    "depthwise-relu6": conv_chain(1, 17, 10, 10, 17, 3, pad=1, groups=17, act="relu6"),
    "depthwise-stride2": conv_chain(1, 32, 12, 12, 32, 3, stride=2, pad=1, groups=32),
    # matrix products
    "matmul-bias": matmul_chain((3, 17), 5),
    "matmul-3d-bias-relu": matmul_chain((1, 17, 33), 19, act="relu"),
    "matmul-transpose-b": matmul_chain((2, 3, 16), 8, transpose_b=True),
    "matmul-residual": matmul_chain((4, 32), 32, residual=True),
    "matmul-gelu": matmul_chain((5, 24), 40, act="gelu"),
    "matmul-1x1000": matmul_chain((1, 64), 1000, bias=True),
    # pooling
    "maxpool-3x3s2-pad": pool_case((1, 17, 11, 11), "max", 3, 2, (1, 1)),
    "maxpool-ceil": pool_case((2, 3, 8, 8), "max", 3, 2, rounding="ceil"),
    "maxpool-plain-input": pool_case((1, 5, 7, 6), "max", 2, 2, after_conv=False),
    "avgpool-exclude-pad": pool_case((1, 20, 9, 9), "avg", 3, 1, (1, 1), exclude_pad=True),
    "avgpool-include-pad": pool_case((1, 20, 9, 9), "avg", 3, 2, (1, 1), exclude_pad=False),
    "avgpool-ceil-nopad": pool_case((1, 3, 7, 7), "avg", 2, 2, rounding="ceil"),
    # reductions: global pooling over NHWC, rows of plain tensors
    "global-avgpool-keep": reduce_case((1, 33, 7, 7), "reduce_mean", [2, 3], True, after_conv=True),
    "global-avgpool-drop": reduce_case((2, 17, 3, 5), "reduce_mean", [-1, -2], False, after_conv=True),
    "reduce-mean-last": reduce_case((3, 5, 17), "reduce_mean", [2], True),
    "reduce-sum-middle": reduce_case((3, 5, 17), "reduce_sum", [1], False),
    "reduce-max-rows": reduce_case((4, 33), "reduce_max", [1], False),
    "reduce-min-middle2": reduce_case((2, 3, 4, 19), "reduce_min", [1, 2], True),
    # elementwise chains with broadcasting
    "add-broadcast-rows": eltwise_case(lambda a, b: ops.add(a, b), [(3, 17), (17,)]),
    "sub-broadcast-cols": eltwise_case(lambda a, b: ops.subtract(a, b), [(3, 17), (3, 1)]),
    "div-scalar-lhs": eltwise_case(lambda a: ops.divide(np.float32(3.0), ops.add(a, np.float32(10.0))), [(1000,)]),
    "max-min-nan-order": eltwise_case(lambda a, b: ops.minimum(ops.maximum(a, b), b), [(19,), (19,)], edge=True),
    "sqdiff-3d": eltwise_case(lambda a, b: ops.squared_difference(a, b), [(2, 3, 5), (2, 1, 5)]),
    "chain-mul-add-sigmoid": eltwise_case(
        lambda a, b: ops.sigmoid(ops.add(ops.multiply(a, np.float32(0.5)), b)), [(4, 1, 33), (4, 7, 33)]),
    "prelu-channels": eltwise_case(lambda a: ops.prelu(a, _f(5)), [(2, 5, 3, 4)]),
    "mask-like-int-chain": eltwise_case(
        lambda a: ops.multiply(ops.subtract(np.float32(1.0), a), np.float32(-10000.0)), [(1, 1, 1, 128)]),
    "convert-int-inputs": (lambda: _convert_model(), lambda: [_ids((1, 37), -3, 3), _ids((3, 1), 0, 2, np.int32),
                                                             _ids((37,), 0, 2, np.bool_)], {"Eltwise"}),
    "convert-u4-falls-back": eltwise_case(lambda a: ops.convert(a, "u4"), [(2, 3, 4, 5)], native=frozenset()),
    # products of two runtime tensors
    "batched-matmul": eltwise_case(lambda a, b: ops.matmul(a, b, False, False), [(2, 3, 17, 9), (2, 3, 9, 5)],
                                   native=frozenset({"MatMul"})),
    "batched-matmul-transposes-broadcast": eltwise_case(
        lambda a, b: ops.matmul(a, b, True, True), [(4, 9, 17), (1, 5, 9)], native=frozenset({"MatMul"})),
    "batched-matmul-scale-mask": eltwise_case(
        lambda a, b, m: ops.add(ops.multiply(ops.matmul(a, b, False, True), np.float32(0.25)), m),
        [(1, 2, 7, 16), (1, 2, 11, 16), (1, 1, 1, 11)], native=frozenset({"MatMul"})),
    "batched-matmul-1d": eltwise_case(lambda a, b: ops.matmul(a, b, False, False), [(17,), (3, 17, 4)],
                                      native=frozenset({"MatMul"})),
    # rows
    "softmax-last": eltwise_case(lambda a: ops.softmax(a, -1), [(3, 4, 17)], native=frozenset({"Softmax"})),
    "softmax-edge": eltwise_case(lambda a: ops.softmax(a, 1), [(1, 19)], edge=True, native=frozenset({"Softmax"})),
    "logsoftmax-1000": eltwise_case(lambda a: ops.log_softmax(a, 1), [(2, 1000)],
                                    native=frozenset({"LogSoftmax"})),
    "softmax-nhwc-channels": (lambda: _conv_then(lambda y: ops.softmax(y, 1)), lambda: [_f(1, 3, 5, 5)],
                              {"Softmax", "Convolution"}),
    "softmax-middle-axis-falls-back": eltwise_case(lambda a: ops.softmax(a, 1), [(2, 5, 3)], native=frozenset()),
    "layernorm-affine": eltwise_case(
        lambda a: ops.add(ops.multiply(ops.mvn(a, np.array([-1], np.int64), True, 1e-5, "inside_sqrt"), _f(33)),
                          _f(33)), [(2, 7, 33)], native=frozenset({"MVN", "Multiply", "Add"})),
    "mvn-outside-sqrt-no-variance": eltwise_case(
        lambda a: ops.mvn(a, np.array([2, 3], np.int64), False, 1e-3, "outside_sqrt"), [(2, 3, 4, 5)],
        native=frozenset({"MVN"})),
    "mvn-outside-sqrt": eltwise_case(
        lambda a: ops.mvn(a, np.array([1, 2], np.int64), True, 1e-3, "outside_sqrt"), [(2, 3, 17)],
        native=frozenset({"MVN"})),
    # attention (heads split and merged by transposes) and transposes as views
    "attention-bert-like": (lambda: _attention_model(2, 3, 17, 8, mask="row"), lambda: [_f(2, 17, 24)],
                            {"ScaledDotProductAttention", "MatMul"}),
    "attention-causal": (lambda: _attention_model(1, 2, 13, 5, causal=True), lambda: [_f(1, 13, 10)],
                         {"ScaledDotProductAttention", "MatMul"}),
    "attention-scalar-scale-full-mask": (lambda: _attention_model(1, 4, 33, 16, mask="full", scale=0.3),
                                         lambda: [_f(1, 33, 64)], {"ScaledDotProductAttention", "MatMul"}),
    "attention-edge-mask": (lambda: _attention_model(1, 1, 3, 1, mask="edge"), lambda: [_f(1, 3, 1)],
                            {"ScaledDotProductAttention", "MatMul"}),
    "transpose-nhwc-view": (lambda: _conv_then(lambda y: ops.transpose(y, np.array([0, 2, 3, 1]))),
                            lambda: [_f(1, 3, 5, 5)], {"Convolution", "Transpose"}),
    "transpose-nhwc-to-nchw-many-channels": (lambda: _conv_then(lambda y: ops.softmax(y, 3), 33, (17, 19)),
                                             lambda: [_f(1, 3, 17, 19)], {"Convolution", "Softmax"}),
    "transpose-batched-tiles": eltwise_case(lambda a: ops.exp(ops.transpose(ops.relu(a), np.array([0, 2, 1]))),
                                            [(3, 37, 20)], native=frozenset({"Transpose", "Eltwise"})),
    "conv-transpose-2x2s2-bias-relu": (lambda: _conv_then(lambda y: ops.relu(ops.add(
        ops.convolution_backprop_data(y, _w(6, 5, 2, 2), [2, 2], pads_begin=[0, 0], pads_end=[0, 0]), _f(1, 5, 1, 1)))),
        lambda: [_f(1, 3, 5, 5)], {"Convolution", "ConvolutionBackpropData"}),
    "conv-transpose-3x3s3-1ch": (lambda: _conv_then(lambda y: ops.convolution_backprop_data(
        y, _w(6, 1, 3, 3), [3, 3], pads_begin=[0, 0], pads_end=[0, 0])), lambda: [_f(1, 3, 5, 5)],
        {"Convolution", "ConvolutionBackpropData"}),
    "resize-nearest-2x": (lambda: _conv_then(lambda y: ops.interpolate(y, np.array([1, 1, 2, 2], np.float32),
                                                                       "nearest", "scales")),
                          lambda: [_f(1, 3, 5, 5)], {"Convolution", "Interpolate"}),
    "resize-nearest-sizes-odd": (lambda: _conv_then(
        lambda y: ops.interpolate(y, np.array([1, 6, 7, 3], np.int64), "nearest", "sizes",
                                  coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil"),
        6, (5, 5)), lambda: [_f(1, 3, 5, 5)], {"Convolution", "Interpolate"}),
    "transpose-copy": eltwise_case(lambda a: ops.relu(ops.transpose(ops.exp(a), np.array([2, 0, 1]))),
                                   [(3, 5, 17)], native=frozenset({"Transpose", "Eltwise"})),
    # memory movement
    "gather-embedding": (lambda: _gather_model((50, 17), 0, (2, 7)), lambda: [_ids((2, 7), -50, 55)],
                         {"Gather"}),
    "gather-axis1-i32": (lambda: _gather_model((3, 9, 5), 1, (4,), np.int32), lambda: [_ids((4,), -9, 9, np.int32)],
                         {"Gather"}),
    "concat-plain": eltwise_case(lambda a, b: ops.concat([ops.exp(a), b, _f(2, 1, 5)], 1), [(2, 3, 5), (2, 4, 5)],
                                 native=frozenset({"Concat", "Eltwise"})),
    "concat-nhwc-channels": (lambda: _conv_then(lambda y: ops.relu(ops.concat([y, ops.negative(y)], 1))),
                             lambda: [_f(1, 3, 5, 5)], {"Concat", "Convolution"}),
    "slice-split-views": eltwise_case(
        lambda a: ops.add(ops.slice(ops.exp(a), np.array([1, 0], np.int64), np.array([3, 18], np.int64),
                                    np.array([1, 2], np.int64)),
                          ops.slice(ops.split(ops.relu(a), np.int64(1), 2).output(1), np.array([0], np.int64),
                                    np.array([2], np.int64), np.array([1], np.int64))), [(4, 18)],
        native=frozenset({"Slice", "Split", "Eltwise"})),
    "matmul-on-column-slice": eltwise_case(
        lambda a: ops.matmul(ops.split(ops.relu(a), np.int64(-1), 3).output(1), _w(5, 7), False, False),
        [(2, 4, 15)], native=frozenset({"MatMul", "Split"})),
    "scalar-input": eltwise_case(lambda a, s: ops.multiply(ops.add(a, s), s), [(3, 7), ()]),
    # empty tensors
    "empty-eltwise": eltwise_case(lambda a: ops.relu(ops.add(a, _f(5))), [(0, 5)]),
    "empty-matmul": eltwise_case(lambda a: ops.matmul(a, _w(5, 3), False, False), [(0, 5)],
                                 native=frozenset({"MatMul"})),
    "empty-batch-conv": (lambda: _empty_conv(), lambda: [_f(0, 3, 5, 5)], {"Convolution"}),
    "empty-concat-part": eltwise_case(lambda a: ops.concat([ops.exp(a), _f(2, 3)], 1), [(2, 0)],
                                      native=frozenset({"Concat"})),
    # CPU vs REFERENCE differences found by the reliability audit (issue 18)
    "reduce-mean-empty-axis": reduce_case((2, 0, 3), "reduce_mean", [1], False),  # 0, not NaN
    "reduce-mean-empty-axes-keep": reduce_case((2, 3, 0, 4), "reduce_mean", [2, 3], True),
    "matvec-runtime-vector-bias": eltwise_case(lambda a, v: ops.add(ops.matmul(a, v, False, False), _f(2)),
                                               [(2, 65), (65,)], native=frozenset({"MatMul"})),
    "matvec-runtime-vector-relu": eltwise_case(lambda a, v: ops.relu(ops.matmul(a, v, False, False)),
                                               [(3, 2, 9), (9,)], native=frozenset({"MatMul"})),
    "batchnorm-standalone": eltwise_case(
        lambda a: ops.batch_norm_inference(a, np.abs(_f(5)) + 0.5, _f(5), _f(5), np.abs(_f(5)) + 0.1, 1e-3),
        [(2, 5, 3, 3)], native=frozenset({"Eltwise"})),
    "se-scale-nhwc": (lambda: _se_model(), lambda: [_f(1, 8, 5, 5)], {"Eltwise", "Convolution"}),
    **{f"unary-{k}": eltwise_case(fn, [(3, 41)], edge=True) for k, fn in UNARY_BUILDERS.items()},
    **{f"unary-{k}": eltwise_case(fn, [(2, 33)], positive=True) for k, fn in POSITIVE_BUILDERS.items()},
}


#: cases whose op must run on its reference kernel inside the plan (no native kernel fits)
FALLBACKS = {"convert-u4-falls-back": "Convert", "softmax-middle-axis-falls-back": "SoftMax"}
assert set(FALLBACKS) == {k for k in CASES if k.endswith("falls-back")}


def _se_model() -> Model:
    """Squeeze-and-excitation: conv, global pool, sigmoid scale back onto the NHWC tensor."""
    x = _param((1, 8, 5, 5))
    y = ops.relu(ops.convolution(x, _w(8, 8, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1]))
    s = ops.sigmoid(ops.reduce_mean(y, np.array([2, 3], np.int64), True))
    return _model(ops.multiply(y, s), [x])


def _attention_model(b: int, heads: int, seq: int, d: int, mask: str | None = None, causal: bool = False,
                     scale: float | None = None) -> Model:
    """q, k, v projections of x [b, seq, heads*d], split into heads, attention, heads merged."""
    x = _param((b, seq, heads * d))
    hid = heads * d

    def split(t):  # noqa: ANN001, ANN202
        r = ops.reshape(t, np.array([b, seq, heads, d], np.int64), False)
        return ops.transpose(r, np.array([0, 2, 1, 3]))

    q, k, v = (split(ops.add(ops.matmul(x, _w(hid, hid), False, False), _f(hid))) for _ in range(3))
    m = None
    if mask == "row":
        m = _f(b, 1, 1, seq)
    elif mask == "full":
        m = _f(1, heads, seq, seq)
    elif mask == "edge":  # one key masked out with -inf, large finite offsets elsewhere
        m = np.array([[[[-np.inf, 30.0, -30.0]]]], np.float32)
    a = ops.scaled_dot_product_attention(q, k, v, m, None if scale is None else np.float32(scale), causal)
    merged = ops.reshape(ops.transpose(a, np.array([0, 2, 1, 3])), np.array([b, seq, hid], np.int64), False)
    return _model(ops.matmul(merged, _w(hid, hid), False, False), [x])


def _conv1d_model(groups: int, stride: int = 1) -> Model:
    x = _param((2 if groups == 1 else 1, 6, 17))
    if groups == 1:
        y = ops.convolution(x, _w(5, 6, 3), [stride], [1], [2], [1])
        oc = 5
    else:
        y = ops.group_convolution(x, _w(3, 3, 2, 3), [stride], [1], [1], [2])
        oc = 9
    return _model(ops.relu(ops.add(y, _f(1, oc, 1))), [x])


def _empty_conv() -> Model:
    x = _param((0, 3, 5, 5))
    return _model(ops.relu(ops.convolution(x, _w(2, 3, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1])), [x])


def _convert_model() -> Model:
    """BERT's mask: reshape an int64 input, convert to f32, (1 - m) * -10000; plus i32 and bool."""
    m = _param((1, 37), "m", np.int64)
    i = _param((3, 1), "i", np.int32)
    flag = _param((37,), "flag", np.bool_)
    r = ops.reshape(m, np.array([1, 1, 1, 37], np.int64), False)
    y = ops.multiply(ops.subtract(np.float32(1.0), ops.convert(r, "f32")), np.float32(-10000.0))
    y = ops.add(y, ops.convert(i, "f32"))
    return _model(ops.multiply(y, ops.convert(flag, "f32")), [m, i, flag])


def _gather_model(data_shape: tuple[int, ...], axis: int, idx_shape: tuple[int, ...], dtype=np.int64) -> Model:  # noqa: ANN001
    ids = _param(idx_shape, "ids", dtype)
    return _model(ops.relu(ops.gather(_f(*data_shape), ids, np.int64(axis))), [ids])


def _ids(shape: tuple[int, ...], lo: int, hi: int, dtype=np.int64) -> np.ndarray:  # noqa: ANN001
    return RNG.integers(lo, hi, shape).astype(dtype)


def _conv_then(fn, channels: int = 6, size: tuple[int, int] = (5, 5)) -> Model:  # noqa: ANN001
    x = _param((1, 3, *size))
    return _model(fn(ops.convolution(x, _w(channels, 3, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1])), [x])


def _inputs(shapes) -> list[np.ndarray]:  # noqa: ANN001
    return shapes() if callable(shapes) else [_f(*s) for s in shapes]


def _run(model: Model, device: str, inputs: list[np.ndarray], config: dict | None = None) -> list[np.ndarray]:
    return _run_compiled(ember.Core().compile_model(model, device, config or {}), inputs)


def _run_compiled(cm: ember.CompiledModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    res = cm(inputs)
    return [res[i] for i in range(len(cm.outputs))]


@pytest.mark.parametrize("name", list(CASES))
def test_case_matches_reference(name: str) -> None:
    build, shapes, native = CASES[name]
    model = build()
    inputs = _inputs(shapes)
    want = _run(model, "REFERENCE", inputs)
    cm = ember.Core().compile_model(model, "CPU")
    prog = cm._executable.program
    fallbacks = set(prog.stats["fallbacks"])
    if native:  # cases that list native ops must not fall back at all
        assert not fallbacks, f"ran on reference kernels: {fallbacks}"
    if name in FALLBACKS:  # cases that claim a fallback show it
        assert FALLBACKS[name] in fallbacks, f"expected {FALLBACKS[name]} on its reference kernel, got {fallbacks}"
    if "Eltwise" in native:
        assert any(op.type_name.startswith("Eltwise") for op in prog.ops)
    got = _run_compiled(cm, inputs)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        finite = np.isfinite(w)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_array_equal(g[~finite & ~np.isnan(w)], w[~finite & ~np.isnan(w)])
        scale = max(1.0, float(np.abs(w[finite]).max())) if finite.any() else 1.0
        np.testing.assert_allclose(g[finite], w[finite], rtol=2e-5, atol=2e-6 * scale)


@pytest.mark.parametrize("out_shape, other", [((0,), (1,)), ((0, 3), (3,)), ((3, 0), (3, 1)), ((2, 0, 3), ()),
                                              ((1, 0), (1, 0)), ((2, 3, 4, 0), (1, 3, 1, 1))])
def test_eltwise_kernel_on_empty_outputs(out_shape: tuple[int, ...], other: tuple[int, ...]) -> None:
    """A zero-size output (any broadcast partner) binds to a kernel with no tasks (issue 18:
    'elementwise ops on zero-size tensors fail on CPU with an internal error')."""
    from ember.devices.cpu.kernels.eltwise import eltwise_fits, eltwise_kernel

    prog = [("load", 0, 0, 0, 0.0, 0.0), ("load", 1, 1, 0, 0.0, 0.0), ("add", 0, 0, 1, 0.0, 0.0),
            ("store", 0, 0, 0, 0.0, 0.0)]
    y = np.empty(out_shape, np.float32)
    assert eltwise_fits(out_shape, [out_shape, other])
    k = eltwise_kernel(y, [np.empty(out_shape, np.float32), np.ones(other, np.float32)], prog, 2)
    assert k is not None and k.n_tasks == 0
    k.run()


# -- the device itself ------------------------------------------------------------------------

def test_optimizer_runs_once_per_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    import ember.passes

    calls = []
    real = ember.passes.optimize

    def counting(model, level=2, **kw):  # noqa: ANN001, ANN202
        calls.append(level)
        return real(model, level, **kw)

    monkeypatch.setattr(ember.passes, "optimize", counting)
    build, _, _ = CASES["batchnorm-standalone"]  # weights folded and a BatchNorm decomposed after the pipeline
    ember.Core().compile_model(build(), "CPU")
    assert calls == [2]


def test_cpu_fuses_the_groups_the_optimizer_marks() -> None:
    """One source of truth: the epilogue the CPU fuses is the group ``mark_epilogue_groups``
    marks (and ``ember graph`` draws); without marks nothing is fused."""
    from ember.devices.base import get_device
    from ember.runtime.properties import CompileConfig

    cpu = get_device("CPU")
    build, shapes, _ = CASES["conv-residual-input-relu"]
    original = build()
    model = cpu.transform(original.clone(), CompileConfig())
    marked = [n.type_name for n in model.get_ordered_ops() if "fused_group" in n.rt_info]
    assert marked == ["Convolution", "Add", "Add", "ReLU"]
    types = [op.type_name for op in cpu.compile(model, CompileConfig()).program.ops]  # a transformed model compiles as is
    assert "Convolution" in types and not any(t.startswith("Eltwise") for t in types)
    for n in model.get_ordered_ops():
        n.rt_info.pop("fused_group", None)
    exe = cpu.compile(model, CompileConfig())
    assert any(op.type_name.startswith("Eltwise") for op in exe.program.ops)
    x = _inputs(shapes)
    np.testing.assert_allclose(exe.run(x)[0], _run(original, "REFERENCE", x)[0], rtol=1e-5, atol=1e-5)


def test_registered_without_importing_llvmlite() -> None:
    code = ("import sys, ember; assert 'llvmlite' not in sys.modules; "
            "assert 'CPU' in ember.Core().available_devices; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_auto_prefers_cpu() -> None:
    build, _, _ = CASES["conv3x3-bias-relu"]
    cm = ember.Core().compile_model(build(), "AUTO")
    assert cm.get_property("EXECUTION_DEVICES") == ["CPU"]


def _small_conv_model() -> Model:
    build, _, _ = CASES["conv-residual-conv-relu"]
    return build()


def test_f32_is_the_default_precision() -> None:
    cm = ember.Core().compile_model(_small_conv_model(), "CPU")
    assert cm.get_property("INFERENCE_PRECISION_HINT") == ember.Type.f32
    assert cm._executable.program.stats["bf16_ops"] == 0


def test_bf16_when_asked_and_supported() -> None:
    from ember.devices.cpu.kernels.gemm import bf16_supported

    if not bf16_supported():
        pytest.skip("this CPU has no AVX512_BF16")
    build, _, _ = CASES["matmul-3d-bias-relu"]
    model = build()
    cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    assert cm.get_property("INFERENCE_PRECISION_HINT") == ember.Type.bf16
    x = _f(1, 17, 33)
    want = _run(model, "REFERENCE", [x])[0]
    got = _run_compiled(cm, [x])[0]
    assert not np.array_equal(got, _run(model, "CPU", [x])[0])  # really computed differently
    np.testing.assert_allclose(got, want, rtol=3e-2, atol=3e-2 * float(np.abs(want).max()))


def test_bf16_convnet_within_bf16_tolerance() -> None:
    from ember.devices.cpu.kernels.gemm import bf16_supported

    if not bf16_supported():
        pytest.skip("this CPU has no AVX512_BF16")
    build, _, _ = CASES["conv-residual-conv-relu"]
    model = build()
    cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    assert cm.get_property("INFERENCE_PRECISION_HINT") == ember.Type.bf16
    x = _f(1, 8, 6, 6)
    want = _run(model, "REFERENCE", [x])[0]
    np.testing.assert_allclose(_run_compiled(cm, [x])[0], want, rtol=3e-2, atol=3e-2 * float(np.abs(want).max()))


def test_hetero_over_cpu() -> None:
    model = _small_conv_model()
    x = _f(1, 8, 6, 6)
    cm = ember.Core().compile_model(model, "HETERO:CPU,REFERENCE")
    assert "CPU" in cm.get_property("EXECUTION_DEVICES")
    np.testing.assert_allclose(_run_compiled(cm, [x])[0], _run(model, "REFERENCE", [x])[0], rtol=1e-5, atol=1e-5)


def test_bf16_without_support_runs_f32_and_says_so(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:  # noqa: ANN001
    import ember.devices.cpu.kernels.gemm as gemm

    monkeypatch.setattr(gemm, "bf16_supported", lambda isa=None: False)
    model = _small_conv_model()
    with caplog.at_level("WARNING", logger="ember"):
        cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    assert cm.get_property("INFERENCE_PRECISION_HINT") == ember.Type.f32
    assert any("bf16" in r.getMessage().lower() and "f32" in r.getMessage() for r in caplog.records)
    x = _f(1, 8, 6, 6)
    np.testing.assert_allclose(_run_compiled(cm, [x])[0], _run(model, "REFERENCE", [x])[0], rtol=1e-5, atol=1e-5)


def test_threads_follow_inference_num_threads() -> None:
    model = _small_conv_model()
    cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1})
    exe = cm._executable
    assert exe.pool.num_threads == 1 and exe.program.threads == 1
    x = _f(1, 8, 6, 6)
    np.testing.assert_allclose(_run_compiled(cm, [x])[0], _run(model, "REFERENCE", [x])[0], rtol=1e-5, atol=1e-5)


def test_streams_get_their_own_executors_and_agree() -> None:
    model = _small_conv_model()
    cm = ember.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2})
    exes = cm._executor._free
    got = [exes.get() for _ in range(2)]
    for e in got:
        exes.put(e)
    assert got[0] is not got[1] and got[0].program is got[1].program  # shared plan, own arena and pool
    assert got[0]._instances[()].arena is not got[1]._instances[()].arena
    inputs = [_f(1, 8, 6, 6) for _ in range(8)]
    want = [_run(model, "REFERENCE", [x])[0] for x in inputs]
    results: dict[int, np.ndarray] = {}
    queue = ember.AsyncInferQueue(cm, 4)
    queue.set_callback(lambda req, i: results.__setitem__(i, req.get_output_tensor(0).data.copy()))
    for i, x in enumerate(inputs):
        queue.start_async([x], userdata=i)
    queue.wait_all()
    for i, w in enumerate(want):
        np.testing.assert_allclose(results[i], w, rtol=1e-5, atol=1e-5)


def test_dynamic_shapes_replan_per_input_shape() -> None:
    x = ops.parameter([-1, 3, -1, -1], np.float32, name="x")
    y = ops.relu(ops.add(ops.convolution(x, _w(4, 3, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1]), _f(1, 4, 1, 1)))
    model = _model(ops.reduce_mean(y, np.array([2, 3], np.int64), True), [x])
    cm = ember.Core().compile_model(model, "CPU")
    for shape in [(1, 3, 5, 5), (2, 3, 7, 4), (1, 3, 5, 5)]:
        a = _f(*shape)
        np.testing.assert_allclose(_run_compiled(cm, [a])[0], _run(model, "REFERENCE", [a])[0], rtol=1e-5,
                                   atol=1e-5)
    assert len(cm._executable._instances) == 2


def test_profiling_names_every_node() -> None:
    model = _small_conv_model()
    cm = ember.Core().compile_model(model, "CPU", {"PERF_COUNT": True})
    req = cm.create_infer_request()
    req.infer([_f(1, 8, 6, 6)])
    names = {p.node_name for p in req.profiling_info}
    assert any("Convolution" in n for n in names)


def test_wrong_input_shape_is_an_error() -> None:
    cm = ember.Core().compile_model(_small_conv_model(), "CPU")
    with pytest.raises(ember.EmberError, match="shape"):
        cm([_f(1, 8, 7, 6)])


def test_model_cache_round_trip(tmp_path) -> None:  # noqa: ANN001
    model = _small_conv_model()
    x = _f(1, 8, 6, 6)
    core = ember.Core()
    first = core.compile_model(model, "CPU", {"CACHE_DIR": str(tmp_path)})
    second = core.compile_model(model, "CPU", {"CACHE_DIR": str(tmp_path)})
    assert not first.get_property("LOADED_FROM_CACHE") and second.get_property("LOADED_FROM_CACHE")
    np.testing.assert_array_equal(_run_compiled(first, [x])[0], _run_compiled(second, [x])[0])
    blob = second.export_model()
    third = core.import_model(blob, "CPU")
    np.testing.assert_array_equal(_run_compiled(third, [x])[0], _run_compiled(first, [x])[0])


def test_weight_decompression_is_folded() -> None:
    """int8 weights with a zero point and a scale run natively (the compressed MatMul kernel
    sums in the code domain and scales after, so its rounding differs from f32 weights': the
    tolerance is relative to the output's range)."""
    x = _param((1, 16))
    w = (RNG.integers(-8, 8, (16, 8))).astype(np.int8)
    wf = ops.multiply(ops.subtract(ops.convert(w, "f32"), np.float32(1.0)), np.float32(0.05))
    model = _model(ops.matmul(x, wf, False, False), [x])
    cm = ember.Core().compile_model(model, "CPU")
    assert not cm._executable.program.stats["fallbacks"]
    a = _f(1, 16)
    want = _run(model, "REFERENCE", [a])[0]
    np.testing.assert_allclose(_run_compiled(cm, [a])[0], want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def _if_model(dynamic: bool) -> Model:
    """If on a boolean input: then = conv + relu, else = matmul-free elementwise; one-sided input."""
    c = ops.parameter([], np.bool_, name="c")
    x = ops.parameter([1, 3, -1, -1] if dynamic else [1, 3, 6, 6], np.float32, name="x")
    y = ops.parameter([1, 3, -1, -1] if dynamic else [1, 3, 6, 6], np.float32, name="y")
    tp = ops.parameter([1, 3, -1, -1] if dynamic else [1, 3, 6, 6], np.float32, name="tp")
    ep = ops.parameter([1, 3, -1, -1] if dynamic else [1, 3, 6, 6], np.float32, name="ep")
    tr = ops.result(ops.relu(ops.convolution(tp, _w(3, 3, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1])))
    er = ops.result(ops.sigmoid(ops.multiply(ep, np.float32(2.0))))
    node = ops.if_op(c)
    node.set_then_body(Model([tr], [tp], "then"))
    node.set_else_body(Model([er], [ep], "else"))
    node.set_input(x.output(0), tp, None)
    node.set_input(y.output(0), None, ep)
    return _model(ops.add(node.set_output(tr, er), np.float32(1.0)), [c, x, y])


@pytest.mark.parametrize("dynamic", [False, True])
def test_if_branches_run_native_plans(dynamic: bool) -> None:
    model = _if_model(dynamic)
    cm = ember.Core().compile_model(model, "CPU")
    for cond in (True, False, True):
        for size in ((6, 6), (4, 5)) if dynamic else ((6, 6),):
            feeds = [np.bool_(cond), _f(1, 3, *size), _f(1, 3, *size)]
            want = _run(model, "REFERENCE", feeds)[0]
            np.testing.assert_allclose(_run_compiled(cm, feeds)[0], want, rtol=1e-5, atol=1e-5)
    prog = cm._executable.program
    assert any(op.type_name == "If" for op in prog.ops) and "If" not in prog.stats["fallbacks"]


def test_inputs_read_in_place_each_run_and_left_untouched() -> None:
    build, _, _ = CASES["conv3x3-bias-relu"]
    model = build()
    cm = ember.Core().compile_model(model, "CPU")
    bindings = cm._executable._instances[()].bindings  # the stem reads the caller's array directly
    assert len(bindings) == 1 and bindings[0].slots
    for ctx, word, delta in bindings[0].slots:  # explicit slots: declared pointer words of its readers
        assert delta == 0 and ctx[word] != 0
    base = _f(1, 8, 8, 3)
    for x in (_f(1, 3, 8, 8), np.ascontiguousarray(base.transpose(0, 3, 1, 2)), base.transpose(0, 3, 1, 2),
              _f(1, 3, 8, 8).astype(np.float64)):
        before = x.copy()
        got = _run_compiled(cm, [x])[0]
        np.testing.assert_array_equal(x, before)
        np.testing.assert_allclose(got, _run(model, "REFERENCE", [x.astype(np.float32)])[0], rtol=1e-5, atol=1e-5)


def test_enable_cpu_pinning_fixes_the_pool_choice() -> None:
    """OpenVINO's ENABLE_CPU_PINNING: True pins the workers, False never does; unset, the pool
    adapts to the machine's load. Results stay equal to REFERENCE either way."""
    import os

    import ember.properties.hint as hints

    model = _small_conv_model()
    x = _f(1, 8, 6, 6)
    want = _run(model, "REFERENCE", [x])[0]
    two_cores = len(os.sched_getaffinity(0)) >= 2
    for value, pinned in ((True, two_cores), ("NO", False)):
        cm = ember.Core().compile_model(model, "CPU", {hints.enable_cpu_pinning: value, "INFERENCE_NUM_THREADS": 2})
        pool = cm._executable.pool
        assert not pool.adaptive_pinning and bool(pool.pinned_cpus) == pinned
        assert cm.get_property("ENABLE_CPU_PINNING") is (value is True)
        np.testing.assert_allclose(_run_compiled(cm, [x])[0], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ember.EmberError, match="ENABLE_CPU_PINNING"):
        ember.Core().compile_model(model, "CPU", {"ENABLE_CPU_PINNING": "sometimes"})
