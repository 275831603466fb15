"""The convolution family on the CPU device against REFERENCE, from one table of cases:
transposed convolutions (1-D to 3-D, strides, dilations, asymmetric and negative pads, output
padding, output shapes, auto_pad, groups, depthwise), 1-D and 3-D convolutions, 1-D and 3-D
pooling; odd channels, empty batches, NaN and inf. A few ConvTranspose models also run
against ONNX Runtime through the ONNX frontend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.llvm.isa import supported_levels
from ember.graph.model import Model

RNG = np.random.default_rng(2026)


def _f(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _w(*shape: int, fan: int | None = None) -> np.ndarray:
    fan = fan or int(np.prod(shape[1:]))
    return _f(*shape, scale=1.0 / np.sqrt(max(fan, 1)))


def _with_tail(y: Any, oc: int, rank: int, tail: str) -> Any:
    """An epilogue the CPU device fuses: bias, ReLU, clamp (or nothing)."""
    if "bias" in tail:
        y = ops.add(y, _f(1, oc, *([1] * (rank - 2))))
    if "relu" in tail:
        y = ops.relu(y)
    if "clamp" in tail:
        y = ops.clamp(y, -0.5, 0.5)
    return y


def deconv(shape: tuple[int, ...], oc: int, k: tuple[int, ...], s: tuple[int, ...], pb: tuple[int, ...] | None = None,
           pe: tuple[int, ...] | None = None, dil: tuple[int, ...] | None = None, out_pad: tuple[int, ...] | None = None,
           groups: int = 0, output_shape: tuple[int, ...] | None = None, auto_pad: str | None = None,
           tail: str = "bias,relu") -> Callable[[], Model]:
    """A (Group)ConvolutionBackpropData case; ``groups=0`` builds the ungrouped op."""
    def build() -> Model:
        x = ops.parameter(list(shape), np.float32, name="x")
        c = shape[1]
        n = len(k)
        os_ = None if output_shape is None else np.array(output_shape, np.int64)
        kw = dict(pads_begin=list(pb or [0] * n), pads_end=list(pe or [0] * n), dilations=list(dil or [1] * n),
                  output_padding=list(out_pad or [0] * n), auto_pad=auto_pad)
        if groups:
            w = _w(groups, c // groups, oc // groups, *k, fan=c // groups * int(np.prod(k)))
            y = ops.group_convolution_backprop_data(x, w, list(s), os_, **kw)
        else:
            y = ops.convolution_backprop_data(x, _w(c, oc, *k, fan=c * int(np.prod(k))), list(s), os_, **kw)
        return Model([_with_tail(y, oc, len(shape), tail)], [x], "deconv")
    return build


def conv(shape: tuple[int, ...], oc: int, k: tuple[int, ...], s: tuple[int, ...], pb: tuple[int, ...],
         pe: tuple[int, ...], dil: tuple[int, ...] | None = None, groups: int = 1,
         tail: str = "bias,relu") -> Callable[[], Model]:
    def build() -> Model:
        x = ops.parameter(list(shape), np.float32, name="x")
        c, n = shape[1], len(k)
        d = list(dil or [1] * n)
        if groups == 1:
            y = ops.convolution(x, _w(oc, c, *k), list(s), list(pb), list(pe), d)
        else:
            y = ops.group_convolution(x, _w(groups, oc // groups, c // groups, *k), list(s), list(pb), list(pe), d)
        return Model([_with_tail(y, oc, len(shape), tail)], [x], "conv")
    return build


def pool(shape: tuple[int, ...], kind: str, k: tuple[int, ...], s: tuple[int, ...], pb: tuple[int, ...],
         pe: tuple[int, ...], rounding: str = "floor", exclude_pad: bool = True,
         dil: tuple[int, ...] | None = None) -> Callable[[], Model]:
    def build() -> Model:
        x = ops.parameter(list(shape), np.float32, name="x")
        d = list(dil or [1] * len(k))
        if kind == "max":
            y = ops.max_pool(x, list(s), d, list(pb), list(pe), list(k), rounding).output(0)
        else:
            y = ops.avg_pool(x, list(s), list(pb), list(pe), list(k), exclude_pad, rounding, dilations=d)
        return Model([y], [x], "pool")
    return build


def unet1d() -> Model:
    """A small 1-D U-Net: channel-last tensors passed along a chain with a skip Concat, and a
    plain consumer (Exp) of a tensor in the chain."""
    x = ops.parameter([1, 5, 16], np.float32, name="x")
    skip = ops.relu(ops.add(ops.convolution(x, _w(8, 5, 3), [1], [1], [1], [1]), _f(1, 8, 1)))
    down = ops.max_pool(skip, [2], [1], [0], [0], [2]).output(0)
    mid = ops.relu(ops.convolution(down, _w(16, 8, 3), [1], [1], [1], [1]))
    up = ops.convolution_backprop_data(mid, _w(16, 6, 4, fan=64), [2], pads_begin=[1], pads_end=[1])
    cat = ops.concat([up, skip, ops.exp(skip)], 1)
    y = ops.sigmoid(ops.convolution(cat, _w(3, 22, 1), [1], [0], [0], [1]))
    return Model([y], [x], "unet1d")


def concat1d_mixed() -> Model:
    """1-D channel Concats whose inputs are written in place or copied: one input twice, one from
    a pooling, one from an elementwise op; the Concat also read by a plain op and a model output."""
    x = ops.parameter([2, 4, 12], np.float32, name="x")
    a = ops.relu(ops.convolution(x, _w(5, 4, 3), [1], [1], [1], [1]))
    b = ops.convolution(x, _w(3, 4, 1), [1], [0], [0], [1])
    p = ops.max_pool(ops.convolution(x, _w(6, 4, 3), [1], [1], [1], [1]), [1], [1], [1], [1], [3]).output(0)
    cat = ops.concat([a, b, a, p, ops.exp(b)], 1)
    y = ops.convolution(cat, _w(7, 22, 3), [2], [1], [1], [1])
    other = ops.concat([ops.convolution(x, _w(2, 4, 1), [1], [0], [0], [1]), x], 1)
    return Model([y, ops.sigmoid(cat), ops.convolution(other, _w(3, 6, 1), [1], [0], [0], [1])], [x], "concat1d")


def chain3d() -> Model:
    """3-D convolution -> pooling -> transposed convolution, channel-last all along."""
    x = ops.parameter([1, 4, 6, 6, 6], np.float32, name="x")
    a = ops.relu(ops.convolution(x, _w(6, 4, 3, 3, 3), [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]))
    b = ops.max_pool(a, [2, 2, 2], [1, 1, 1], [0, 0, 0], [0, 0, 0], [2, 2, 2]).output(0)
    y = ops.convolution_backprop_data(b, _w(6, 3, 2, 2, 2, fan=48), [2, 2, 2])
    return Model([y], [x], "chain3d")


def pool_indices(shape: tuple[int, ...], k: tuple[int, ...], s: tuple[int, ...], pb: tuple[int, ...],
                 pe: tuple[int, ...], axis: int, index_type: str = "i64", rounding: str = "floor") -> Callable[[], Model]:
    """MaxPool-14 with both outputs used (values and flat indices)."""
    def build() -> Model:
        x = ops.parameter(list(shape), np.float32, name="x")
        p = ops.max_pool(x, list(s), [1] * len(k), list(pb), list(pe), list(k), rounding,
                         index_element_type=index_type, axis=axis)
        return Model([p.output(1), p.output(0)], [x], "pool_indices")
    return build


def residual(kind: str) -> Callable[[], Model]:
    """A convolution or transposed convolution + bias + residual Add + ReLU (fused whole), 1-D or 3-D."""
    def build() -> Model:
        if kind == "conv1d":
            x = ops.parameter([2, 6, 11], np.float32, name="x")
            y = ops.add(ops.add(ops.convolution(x, _w(6, 6, 3), [1], [1], [1], [1]), _f(1, 6, 1)), x)
        elif kind == "conv2d":
            x = ops.parameter([1, 64, 12, 11], np.float32, name="x")
            y = ops.add(ops.add(ops.convolution(x, _w(64, 64, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1]),
                                _f(1, 64, 1, 1)), x)
        elif kind == "conv3d":
            x = ops.parameter([1, 5, 4, 5, 3], np.float32, name="x")
            y = ops.add(x, ops.convolution(x, _w(5, 5, 3, 3, 3), [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]))
        else:
            shape = [1, 6, 9] if kind == "deconv1d" else [1, 6, 3, 4, 3]
            n = len(shape) - 2
            x = ops.parameter(shape, np.float32, name="x")
            r = ops.relu(ops.convolution_backprop_data(x, _w(6, 4, *[4] * n, fan=24), [2] * n,
                                                       pads_begin=[1] * n, pads_end=[1] * n))
            y = ops.add(r, ops.convolution_backprop_data(x, _w(6, 4, *[4] * n, fan=24), [2] * n,
                                                         pads_begin=[1] * n, pads_end=[1] * n))
        return Model([ops.relu(y)], [x], "residual")
    return build


def _edges(shape: tuple[int, ...]) -> np.ndarray:
    x = _f(*shape)
    flat = x.reshape(-1)
    if flat.size > 8:
        flat[[1, 5]] = np.nan
        flat[3], flat[7] = np.inf, -np.inf
    return x


# name -> (model builder, input shape, input maker or None for normals)
CASES: dict[str, tuple[Callable[[], Model], tuple[int, ...], Callable[..., np.ndarray] | None]] = {
    # transposed 2-D
    "deconv-k4s2p1": (deconv((1, 16, 5, 6), 8, (4, 4), (2, 2), (1, 1), (1, 1)), (1, 16, 5, 6), None),
    "deconv-k3s2-outpad": (deconv((2, 7, 4, 5), 5, (3, 3), (2, 2), (1, 1), (1, 1), out_pad=(1, 1)), (2, 7, 4, 5), None),
    "deconv-asym-dilated": (deconv((1, 5, 6, 4), 9, (3, 2), (2, 3), (0, 2), (1, 0), dil=(2, 1)), (1, 5, 6, 4), None),
    "deconv-negative-pads": (deconv((1, 4, 5, 5), 3, (3, 3), (2, 2), (-1, 0), (2, -1)), (1, 4, 5, 5), None),
    "deconv-1x1-s2": (deconv((1, 6, 4, 4), 6, (1, 1), (2, 2)), (1, 6, 4, 4), None),
    "deconv-5x5s3": (deconv((1, 3, 3, 4), 17, (5, 5), (3, 3), (2, 1), (1, 2), tail="clamp"), (1, 3, 3, 4), None),
    "deconv-k2s2": (deconv((1, 12, 4, 3), 7, (2, 2), (2, 2), tail="bias"), (1, 12, 4, 3), None),
    "deconv-s1-as-conv": (deconv((1, 8, 7, 6), 5, (3, 3), (1, 1), (1, 1), (1, 1)), (1, 8, 7, 6), None),
    "deconv-s1-1x1-input": (deconv((1, 20, 1, 1), 9, (4, 4), (1, 1)), (1, 20, 1, 1), None),
    "deconv-output-shape": (deconv((1, 6, 4, 4), 4, (3, 3), (2, 2), output_shape=(9, 8)), (1, 6, 4, 4), None),
    "deconv-same-upper": (deconv((1, 6, 4, 5), 4, (3, 3), (2, 2), output_shape=(8, 10), auto_pad="same_upper"),
                          (1, 6, 4, 5), None),
    "deconv-same-lower-1d": (deconv((1, 5, 7), 3, (4,), (3,), output_shape=(20,), auto_pad="same_lower"),
                             (1, 5, 7), None),
    "deconv-same-no-shape": (deconv((1, 4, 3, 3), 5, (3, 3), (2, 2), auto_pad="same_upper"), (1, 4, 3, 3), None),
    "deconv-valid": (deconv((1, 6, 3, 3), 4, (3, 3), (2, 2), (1, 1), (1, 1), auto_pad="valid"), (1, 6, 3, 3), None),
    "deconv-grouped": (deconv((1, 12, 5, 5), 9, (4, 4), (2, 2), (1, 1), (1, 1), groups=3), (1, 12, 5, 5), None),
    "deconv-depthwise-s2": (deconv((1, 21, 5, 6), 21, (4, 4), (2, 2), (1, 1), (1, 1), groups=21),
                            (1, 21, 5, 6), None),
    "deconv-depthwise-s1": (deconv((1, 19, 6, 6), 19, (3, 3), (1, 1), (1, 1), (1, 1), groups=19),
                            (1, 19, 6, 6), None),
    "deconv-empty-batch": (deconv((0, 6, 4, 4), 4, (4, 4), (2, 2), (1, 1), (1, 1)), (0, 6, 4, 4), None),
    "deconv-nan-inf": (deconv((1, 3, 4, 4), 5, (3, 3), (2, 2), (1, 1), (1, 1), tail="bias"), (1, 3, 4, 4), _edges),
    "deconv-batch3-odd": (deconv((3, 33, 3, 5), 31, (4, 3), (2, 1), (1, 1), (1, 1)), (3, 33, 3, 5), None),
    # transposed 1-D and 3-D
    "deconv1d-k4s2p1": (deconv((2, 10, 9), 6, (4,), (2,), (1,), (1,)), (2, 10, 9), None),
    "deconv1d-s1": (deconv((1, 7, 11), 5, (5,), (1,), (2,), (2,)), (1, 7, 11), None),
    "deconv1d-grouped-outpad": (deconv((1, 8, 7), 6, (3,), (3,), (1,), (0,), out_pad=(2,), groups=2),
                                (1, 8, 7), None),
    "deconv1d-depthwise": (deconv((1, 16, 9), 16, (4,), (2,), (1,), (1,), groups=16), (1, 16, 9), None),
    "deconv3d-k2s2": (deconv((1, 6, 3, 4, 3), 5, (2, 2, 2), (2, 2, 2)), (1, 6, 3, 4, 3), None),
    "deconv3d-k3s2p1": (deconv((1, 4, 3, 3, 4), 3, (3, 3, 3), (2, 1, 2), (1, 1, 1), (1, 0, 1), out_pad=(1, 0, 0)),
                        (1, 4, 3, 3, 4), None),
    "unet1d-chain": (unet1d, (1, 5, 16), None),
    "concat1d-mixed": (concat1d_mixed, (2, 4, 12), None),
    "conv3d-chain": (chain3d, (1, 4, 6, 6, 6), None),
    "residual-conv1d": (residual("conv1d"), (2, 6, 11), None),
    "residual-conv3d": (residual("conv3d"), (1, 5, 4, 5, 3), None),
    "residual-deconv1d": (residual("deconv1d"), (1, 6, 9), None),
    "residual-deconv3d": (residual("deconv3d"), (1, 6, 3, 4, 3), None),
    # forward 1-D and 3-D convolutions
    "conv1d-dilated-strided": (conv((2, 9, 20), 7, (3,), (2,), (2,), (1,), dil=(2,)), (2, 9, 20), None),
    "conv1d-depthwise": (conv((1, 12, 15), 12, (5,), (1,), (2,), (2,), groups=12), (1, 12, 15), None),
    "conv1d-grouped": (conv((1, 6, 13), 9, (3,), (1,), (0,), (1,), groups=3), (1, 6, 13), None),
    "conv3d-k3p1": (conv((1, 5, 4, 5, 6), 7, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1)), (1, 5, 4, 5, 6), None),
    "conv3d-strided-dilated": (conv((2, 3, 7, 6, 5), 4, (3, 2, 3), (2, 1, 2), (2, 0, 1), (0, 1, 1), dil=(2, 1, 1)),
                               (2, 3, 7, 6, 5), None),
    "conv3d-depthwise": (conv((1, 8, 4, 4, 4), 8, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), groups=8),
                         (1, 8, 4, 4, 4), None),
    "conv3d-empty-batch": (conv((0, 3, 3, 4, 4), 2, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1)), (0, 3, 3, 4, 4), None),
    "conv1d-empty-batch": (conv((0, 3, 9), 4, (3,), (2,), (1,), (1,)), (0, 3, 9), None),
    "conv3d-nan-inf": (conv((1, 3, 3, 4, 4), 2, (2, 2, 2), (1, 1, 1), (0, 0, 0), (0, 0, 0), tail="bias"),
                       (1, 3, 3, 4, 4), _edges),
    # 2-D with K = taps x channels packed as one chunk (up to 2304) or in chunks (beyond)
    "conv2d-3x3-one-chunk": (conv((1, 130, 6, 7), 37, (3, 3), (1, 1), (1, 1), (1, 1)), (1, 130, 6, 7), None),
    "conv2d-3x3-chunked": (conv((1, 300, 5, 4), 33, (3, 3), (1, 1), (1, 1), (1, 1)), (1, 300, 5, 4), None),
    # 3x3 stride 1 with >= 64 channels: Winograd F(2x2, 3x3); odd sizes, asymmetric pads, residual
    "conv2d-winograd": (conv((1, 64, 11, 13), 70, (3, 3), (1, 1), (1, 1), (1, 1)), (1, 64, 11, 13), None),
    "conv2d-winograd-asym-clamp": (conv((2, 80, 9, 8), 64, (3, 3), (1, 1), (0, 1), (2, 0), tail="bias,clamp"),
                                   (2, 80, 9, 8), None),
    "residual-winograd": (residual("conv2d"), (1, 64, 12, 11), None),
    "conv1d-winograd": (conv((2, 256, 71), 67, (3,), (1,), (1,), (0,), tail="bias,clamp"), (2, 256, 71), None),
    # pooling 1-D and 3-D
    "maxpool1d": (pool((2, 5, 17), "max", (3,), (2,), (1,), (1,)), (2, 5, 17), _edges),
    "avgpool1d-ceil": (pool((1, 7, 10), "avg", (3,), (2,), (0,), (0,), rounding="ceil"), (1, 7, 10), None),
    "avgpool1d-include-pad": (pool((1, 4, 9), "avg", (4,), (3,), (2,), (1,), exclude_pad=False), (1, 4, 9), None),
    "maxpool3d": (pool((1, 6, 5, 6, 7), "max", (2, 3, 3), (2, 2, 2), (0, 1, 1), (1, 1, 0)), (1, 6, 5, 6, 7), _edges),
    "avgpool3d-exclude": (pool((1, 3, 4, 5, 5), "avg", (3, 3, 3), (1, 2, 2), (1, 1, 1), (1, 1, 1)),
                          (1, 3, 4, 5, 5), None),
    "avgpool3d-include-ceil": (pool((2, 4, 5, 4, 6), "avg", (2, 2, 3), (2, 2, 2), (1, 0, 1), (0, 0, 1),
                                    rounding="ceil", exclude_pad=False), (2, 4, 5, 4, 6), None),
    "maxpool-indices-axis0": (pool_indices((2, 5, 7, 8), (3, 3), (2, 2), (1, 1), (1, 1), 0), (2, 5, 7, 8), _edges),
    "maxpool-indices-axis1-i32": (pool_indices((2, 19, 6, 5), (2, 2), (2, 1), (0, 0), (1, 1), 1, "i32", "ceil"),
                                  (2, 19, 6, 5), None),
    "maxpool-indices-axis3": (pool_indices((1, 4, 5, 6), (3, 2), (1, 2), (1, 0), (1, 1), -1), (1, 4, 5, 6), None),
    "maxpool1d-indices-axis2": (pool_indices((2, 3, 11), (3,), (2,), (1,), (1,), 2), (2, 3, 11), _edges),
    "maxpool1d-indices-axis1": (pool_indices((1, 17, 9), (2,), (2,), (0,), (0,), 1), (1, 17, 9), None),
    "maxpool3d-dilated": (pool((1, 3, 6, 6, 6), "max", (2, 2, 2), (1, 2, 1), (0, 0, 0), (0, 0, 0), dil=(2, 1, 2)),
                          (1, 3, 6, 6, 6), None),
    # 2-D pooling over wide channels: blocks of 4 channel vectors, single vectors, a masked tail
    "maxpool2d-wide-crnn": (pool((1, 84, 6, 9), "max", (2, 1), (2, 1), (0, 0), (0, 0)), (1, 84, 6, 9), _edges),
    "maxpool2d-wide-padded": (pool((2, 150, 5, 7), "max", (3, 3), (2, 2), (1, 1), (1, 1)), (2, 150, 5, 7), _edges),
    "avgpool2d-wide": (pool((1, 128, 4, 6), "avg", (2, 2), (2, 2), (0, 1), (1, 0), exclude_pad=False),
                       (1, 128, 4, 6), None),
    "maxpool1d-wide": (pool((1, 70, 13), "max", (2,), (2,), (0,), (0,)), (1, 70, 13), None),
}


def _run(model: Model, device: str, x: np.ndarray) -> tuple[list[np.ndarray], Any]:
    cm = ember.Core().compile_model(model, device)
    res = cm([x])
    return [res[cm.output(i)] for i in range(len(cm.outputs))], cm


@pytest.mark.parametrize("name", list(CASES))
def test_conv_family_matches_reference(name: str) -> None:
    build, shape, make = CASES[name]
    model = build()
    x = make(shape) if make is not None else _f(*shape)
    wants, _ = _run(model, "REFERENCE", x)
    gots, cm = _run(model, "CPU", x)
    program = cm._executable.program
    assert not program.stats["fallbacks"], f"ran on reference kernels: {program.stats['fallbacks']}"
    if name not in ("unet1d-chain", "concat1d-mixed"):  # bias, ReLU and clamp tails are fused into the kernels
        assert not [op.type_name for op in program.ops if op.type_name.startswith("Eltwise")]
    if name.endswith("chain"):  # layouts change on the way in and out (and for unet1d's Exp)
        assert len([op for op in program.ops if op.type_name == "Reorder"]) == (4 if "unet" in name else 2)
    for got, want in zip(gots, wants):
        assert got.shape == want.shape and got.dtype == want.dtype
        if want.dtype.kind in "iu":  # MaxPool indices
            np.testing.assert_array_equal(got, want)
            continue
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        finite = np.isfinite(want)
        np.testing.assert_array_equal(got[~finite], want[~finite])
        scale = max(1.0, float(np.abs(want[finite]).max())) if finite.any() else 1.0
        np.testing.assert_allclose(got[finite], want[finite], rtol=2e-5, atol=1e-5 * scale)


KERNEL_CASES = [
    # (batch, spatial, out spatial, cin, cout, kernel, strides, dilations, pads_begin, groups)
    (1, (4, 5), (8, 10), 8, 5, (4, 4), (2, 2), (1, 1), (1, 1), 1),
    (2, (3, 4), (9, 7), 6, 9, (3, 2), (3, 2), (2, 1), (0, -1), 3),
    (1, (5, 5), (10, 10), 37, 37, (4, 4), (2, 2), (1, 1), (1, 1), 37),   # depthwise, channel tail
    (1, (7,), (16,), 70, 33, (4,), (2,), (1,), (1,), 1),                  # 1-D, block + tail channels
    (1, (2, 3, 3), (4, 5, 6), 5, 4, (2, 3, 2), (2, 2, 2), (1, 1, 1), (0, 1, 0), 1),
]


@pytest.mark.parametrize("level", supported_levels())
@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: f"{len(c[1])}d-g{c[9]}-c{c[3]}")
def test_conv_transpose_kernel_every_isa(level: str, case: tuple) -> None:
    """The GEMM + gather (and depthwise gather) kernels on every ISA level the host has, against
    the numpy transposed convolution, with bias and ReLU."""
    from ember.devices.cpu.kernels.deconv import ConvTranspose, DeconvGeometry
    from ember.devices.cpu.kernels.gemm import Epilogue
    from ember.devices.cpu.llvm.isa import host_isa
    from ember.ops.conv import conv_backprop

    n, sp, out, cin, cout, k, s, d, pb, g = case
    geo = DeconvGeometry(n, sp, out, cin, cout, k, s, d, pb, g)
    w = _w(g, cin // g, cout // g, *k)
    x, bias = _f(n, *sp, cin), _f(cout)
    for threads in (1, 2):
        y = ConvTranspose(geo, w, Epilogue.relu(), num_threads=threads, isa=host_isa(level))(x, None, bias)
        want = np.moveaxis(conv_backprop(np.moveaxis(x, -1, 1), w, s, d, pb, out), 1, -1) + bias
        np.testing.assert_allclose(y, np.maximum(want, 0), rtol=2e-5, atol=2e-5)


def test_conv_transpose_kernel_channel_slices_and_residual() -> None:
    """The kernel reads a channel slice of a wider NHWC buffer and fuses a residual add."""
    from ember.devices.cpu.kernels.deconv import ConvTranspose, DeconvGeometry
    from ember.devices.cpu.kernels.gemm import Epilogue
    from ember.ops.conv import conv_backprop

    wide = _f(2, 5, 4, 20)
    x = wide[..., 3:15]  # 12 channels, pixel stride 20
    geo = DeconvGeometry(2, (5, 4), (10, 8), 12, 8, (4, 4), (2, 2), (1, 1), (1, 1), 2)
    w = _w(2, 6, 4, 4, 4)
    bias, res = _f(8), _f(2, 10, 8, 8)
    y = ConvTranspose(geo, w, Epilogue.relu(), num_threads=2)(x, None, bias, res)
    want = np.moveaxis(conv_backprop(np.moveaxis(x, -1, 1), w, (2, 2), (1, 1), (1, 1), (10, 8)), 1, -1)
    np.testing.assert_allclose(y, np.maximum(want + bias + res, 0), rtol=1e-5, atol=1e-5)


WINOGRAD_CASES = [
    # (batch, h, w, cin, cout, pads (top, left, bottom, right), residual, channel slices)
    (1, 16, 12, 64, 128, (1, 1, 1, 1), False, False),  # CRNN-like
    (2, 7, 9, 67, 73, (1, 0, 2, 1), True, True),  # odd sizes: masked channel tails, partial tiles
    (1, 1, 1, 64, 64, (1, 1, 1, 1), True, False),  # one pixel: one tile, mostly padding
    (1, 5, 5, 96, 64, (0, 0, 0, 0), False, True),  # no padding, odd output (3x3)
    (1, 13, 18, 64, 80, (1, 2, 0, 1), True, False),  # F(4x4): partial tiles on both edges
]


@pytest.mark.parametrize("kind", ["f2", "f4", "1d"])
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=lambda c: f"n{c[0]}-{c[1]}x{c[2]}-{c[3]}to{c[4]}")
def test_winograd_kernel(case: tuple, kind: str) -> None:
    """F(2x2, 3x3), F(4x4, 3x3) and (over one row, three taps) F(2, 3) against the direct
    implicit-GEMM convolution: bias, residual, ReLU, channel slices of wider buffers (the
    channels around the output untouched), one and two threads. F(4x4)'s transforms round more
    (coefficients up to 8 and 1/24): its tolerance is 1e-4."""
    from ember.devices.cpu.kernels.conv import conv2d
    from ember.devices.cpu.kernels.gemm import Epilogue
    from ember.devices.cpu.kernels.winograd import WinogradConv3x3, winograd_ok

    n, h, w, cin, cout, pads, with_res, slices = case
    one_d, tile = kind == "1d", 4 if kind == "f4" else 2
    tol = 1e-4 if tile == 4 else 2e-5
    assert winograd_ok(3, 3, (1, 1), (1, 1), 1, cin, cout) and not winograd_ok(3, 3, (2, 2), (1, 1), 1, cin, cout)
    assert winograd_ok(1, 3, (1, 1), (1, 1), 1, 256, cout, h=1) and not winograd_ok(1, 3, (1, 1), (1, 1), 1, 128, cout, h=1)
    if one_d:
        h, pads = 1, (0, pads[1], 0, pads[3])
    wide_x = _f(n, h, w, cin + (3 if slices else 0))
    x = wide_x[..., 1:1 + cin] if slices else wide_x
    wt, bias = _w(cout, cin, 1 if one_d else 3, 3), _f(cout)
    for threads in (1, 2):
        k = WinogradConv3x3(n, h, w, cin, cout, pads, wt, Epilogue(0.0), num_threads=threads, tile=tile)
        assert k.tile == tile
        res = _f(*k.output_shape) if with_res else None
        wide_y = np.full((*k.output_shape[:3], cout + (5 if slices else 0)), 2.5, np.float32)
        y = wide_y[..., 2:2 + cout] if slices else wide_y
        k(x, y, bias, res)
        want = conv2d(np.ascontiguousarray(x), wt, bias, pads_begin=pads[:2], pads_end=pads[2:],
                      epilogue=Epilogue(0.0), residual=res)
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
        if slices:
            assert (wide_y[..., :2] == 2.5).all() and (wide_y[..., 2 + cout:] == 2.5).all()


def test_winograd_non_finite_inputs() -> None:
    """NaN and inf make exactly the outputs whose window holds them non-finite, as in the direct
    convolution (in F(2x2, 3x3) an input reaches only the transformed terms of the outputs whose
    windows hold it); an infinity may come out as NaN where the direct sum gives +-inf (the
    transforms subtract it from itself)."""
    x = _f(1, 64, 12, 12)
    x[0, 3, 1, 2], x[0, 10, 5, 6], x[0, 7, 6, 1], x[0, 5, 0, 0] = np.nan, np.inf, -np.inf, np.inf
    model = conv((1, 64, 12, 12), 64, (3, 3), (1, 1), (1, 1), (1, 1), tail="bias")()
    (want,), _ = _run(model, "REFERENCE", x)
    (got,), cm = _run(model, "CPU", x)
    assert any(t.name.endswith("/winograd_v") for op in cm._executable.program.ops for t in op.outputs)
    finite = np.isfinite(want)
    assert not finite.all()
    np.testing.assert_array_equal(np.isfinite(got), finite)
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-5, atol=2e-5)


def test_winograd_f4_non_finite_stays_in_its_tiles() -> None:
    """F(4x4, 3x3) mixes an input into all 36 terms of the tiles that read it: an infinity makes
    NaN or inf of outputs of those 4x4 tiles only (a superset of the direct convolution's window
    outputs), and every other output matches the direct convolution."""
    from ember.devices.cpu.kernels.conv import conv2d
    from ember.devices.cpu.kernels.gemm import Epilogue
    from ember.devices.cpu.kernels.winograd import WinogradConv3x3

    x, wt = _f(1, 16, 16, 64), _w(64, 64, 3, 3)
    x[0, 5, 6, 3] = np.inf
    y = WinogradConv3x3(1, 16, 16, 64, 64, (1, 1, 1, 1), wt, Epilogue(), num_threads=2, tile=4)(x)
    want = conv2d(x, wt, None, pads_begin=(1, 1), pads_end=(1, 1))
    tiles = np.zeros((16, 16), bool)  # outputs of the tiles whose 6x6 input block holds (5, 6)
    for ty in range(4):
        for tx in range(4):
            if 4 * ty - 1 <= 5 < 4 * ty + 5 and 4 * tx - 1 <= 6 < 4 * tx + 5:
                tiles[4 * ty:4 * ty + 4, 4 * tx:4 * tx + 4] = True
    bad = ~np.isfinite(y[0]).all(axis=-1)
    assert (~np.isfinite(want[0]).all(axis=-1) <= bad).all() and (bad <= tiles).all()
    np.testing.assert_allclose(y[0][~tiles], want[0][~tiles], rtol=1e-4, atol=1e-4)


def test_winograd_tile_by_map_size() -> None:
    """F(4x4, 3x3) from 32 tiles of 4x4 where it saves 30% of F(2x2)'s multiply-adds; the plan
    runs it (its transformed input: 36 terms per 4x4 tile) within 1e-4 of REFERENCE."""
    from ember.devices.cpu.kernels.winograd import winograd_tile

    assert [winograd_tile(1, s, s) for s in (56, 28, 24, 14, 7)] == [4, 4, 4, 2, 2]
    assert winograd_tile(1, 16, 16) == 2 and winograd_tile(4, 16, 16) == 4  # 16 tiles, then 64
    x = _f(1, 64, 26, 22)
    model = conv((1, 64, 26, 22), 64, (3, 3), (1, 1), (1, 1), (1, 1), tail="bias,relu")()
    (want,), _ = _run(model, "REFERENCE", x)
    (got,), cm = _run(model, "CPU", x)
    v = [t for op in cm._executable.program.ops for t in op.outputs if t.name.endswith("/winograd_v")]
    assert [t.shape for t in v] == [(7 * 6 * 36 * 64,)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_winograd_lowered_for_3x3_only() -> None:
    """The CPU plan runs a 3x3 stride-1 convolution of 64+ channels and 32+ output tiles as
    Winograd (its scratch buffers in the plan), a strided, narrow or small one as the direct
    implicit GEMM."""
    for build, shape, want in ((conv((1, 64, 12, 12), 64, (3, 3), (1, 1), (1, 1), (1, 1)), (1, 64, 12, 12), True),
                               (conv((1, 64, 12, 12), 64, (3, 3), (2, 2), (1, 1), (1, 1)), (1, 64, 12, 12), False),
                               (conv((1, 32, 12, 12), 64, (3, 3), (1, 1), (1, 1), (1, 1)), (1, 32, 12, 12), False),
                               (conv((1, 64, 7, 7), 64, (3, 3), (1, 1), (1, 1), (1, 1)), (1, 64, 7, 7), False),
                               (conv((1, 256, 80), 64, (3,), (1,), (1,), (1,)), (1, 256, 80), True),
                               (conv((1, 128, 80), 64, (3,), (1,), (1,), (1,)), (1, 128, 80), False)):
        _, cm = _run(build(), "CPU", _f(*shape))
        names = [t.name for op in cm._executable.program.ops for t in op.outputs]
        assert any(name.endswith("/winograd_v") for name in names) == want


PHASE_CASES = [
    # (batch, width, out width, cin, cout, kernel, stride, dilation, pad_begin, groups, residual, slices)
    (1, 512 // 16, 64, 32, 16, 4, 2, 1, 1, 1, False, False),   # the U-Net's ConvTranspose1d(k4, s2, p1)
    (3, 7, 14, 10, 6, 4, 2, 1, 1, 1, True, True),              # whole batch in one call per phase
    (2, 7, 15, 10, 6, 4, 2, 1, 1, 1, True, False),             # odd output: one call per image and phase
    (1, 6, 19, 4, 9, 5, 3, 1, -1, 1, False, True),             # negative pad, phases of 2 and 1 taps
    (2, 5, 17, 6, 4, 3, 3, 2, 2, 2, True, True),               # dilated, grouped
    (1, 9, 20, 5, 3, 4, 2, 3, 0, 1, False, False),             # dilation 3: phases of offsets 3 apart
    (1, 1, 4, 8, 5, 4, 4, 1, 0, 1, False, False),              # one input pixel, one tap per phase
]


@pytest.mark.parametrize("case", PHASE_CASES, ids=lambda c: f"n{c[0]}-w{c[1]}-k{c[5]}s{c[6]}d{c[7]}p{c[8]}g{c[9]}")
def test_phase_conv_transpose_1d_kernel(case: tuple) -> None:
    """Strided 1-D transposed convolutions as one convolution per output phase, against the
    numpy transposed convolution: bias, residual, ReLU, channel slices of wider buffers (the
    channels around the output untouched), batches in one call or per image."""
    from ember.devices.cpu.kernels.deconv import DeconvGeometry, PhaseConvTranspose1d, phase_plans
    from ember.devices.cpu.kernels.gemm import Epilogue
    from ember.ops.conv import conv_backprop

    n, w_in, w_out, cin, cout, k, s, d, pb, g, with_res, slices = case
    assert phase_plans(w_in, w_out, k, s, d, pb) is not None
    geo = DeconvGeometry(n, (w_in,), (w_out,), cin, cout, (k,), (s,), (d,), (pb,), g)
    w = _w(g, cin // g, cout // g, k)
    wide_x = _f(n, w_in, cin + (5 if slices else 0))
    x = wide_x[..., 2:2 + cin] if slices else wide_x
    wide_y = np.full((n, w_out, cout + (7 if slices else 0)), 3.5, np.float32)
    y = wide_y[..., 4:4 + cout] if slices else wide_y
    bias = _f(cout)
    res = _f(n, w_out, cout) if with_res else None
    PhaseConvTranspose1d(geo, w, Epilogue.relu(), num_threads=2)(x, y, bias, res)
    want = np.moveaxis(conv_backprop(np.moveaxis(x, -1, 1), w, (s,), (d,), (pb,), (w_out,)), 1, -1) + bias
    want = np.maximum(want + (res if res is not None else 0), 0)
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5)
    if slices:
        assert (wide_y[..., :4] == 3.5).all() and (wide_y[..., 4 + cout:] == 3.5).all()


def test_phase_plans_and_lowering() -> None:
    """A phase with no tap (kernel 2, stride 3) keeps the GEMM + gather path; a strided 1-D
    transposed convolution lowers to phase convolutions, with no column buffer."""
    from ember.devices.cpu.kernels.deconv import phase_plans

    assert phase_plans(5, 15, 2, 3, 1, 0) is None
    plans = phase_plans(512, 1024, 4, 2, 1, 1)
    assert plans is not None and [p.taps for p in plans] == [(3, 1), (2, 0)]
    for build, shape in ((deconv((1, 10, 9), 6, (4,), (2,), (1,), (1,)), (1, 10, 9)),
                         (deconv((1, 5, 4), 3, (2,), (3,)), (1, 5, 4))):
        _, cm = _run(build(), "CPU", _f(*shape))
        names = [t.name for op in cm._executable.program.ops for t in op.outputs]
        assert any(name.endswith("/cols") for name in names) == (shape[1] == 5)


@pytest.mark.parametrize("name", ["deconv-k4s2p1", "deconv1d-k4s2p1", "deconv-grouped", "deconv3d-k3s2p1"])
def test_conv_transpose_bf16(name: str) -> None:
    """bf16 when asked (and supported): the GEMM runs in bf16, within bf16's tolerance."""
    from ember.devices.cpu.kernels.gemm import bf16_supported

    if not bf16_supported():
        pytest.skip("no AVX512_BF16 on this CPU")
    build, shape, _ = CASES[name]
    model = build()
    x = _f(*shape)
    want = _run(model, "REFERENCE", x)[0][0]
    cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    assert cm._executable.program.stats["bf16_ops"] >= 1
    got = cm([x])[cm.output(0)]
    np.testing.assert_allclose(got, want, rtol=3e-2, atol=3e-2 * max(1.0, float(np.abs(want).max())))


# -- against ONNX Runtime through the ONNX frontend --------------------------------------------

ORT_CASES = [
    # (input shape, out channels, kernel, strides, pads, output_padding, dilations, group)
    ((1, 8, 5, 5), 6, (4, 4), (2, 2), (1, 1, 1, 1), (0, 0), (1, 1), 1),
    ((1, 6, 4, 7), 4, (3, 3), (2, 3), (1, 0, 0, 2), (1, 2), (1, 1), 2),
    ((1, 10, 12), 10, (4,), (2,), (1, 1), (0,), (1,), 10),
    ((2, 4, 3, 3, 3), 3, (3, 3, 3), (2, 2, 2), (1, 1, 1, 1, 1, 1), (1, 1, 1), (1, 1, 1), 1),
]


@pytest.mark.parametrize("case", ORT_CASES, ids=lambda c: f"{len(c[0]) - 2}d-g{c[7]}-s{c[3][0]}")
def test_conv_transpose_against_onnxruntime(case: tuple) -> None:
    ort = pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape, oc, k, s, pads, out_pad, dil, group = case
    w = _w(shape[1], oc // group, *k)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], kernel_shape=list(k), strides=list(s),
                            pads=list(pads), output_padding=list(out_pad), dilations=list(dil), group=group)
    # BatchNormalization + ReLU after it (and its bias): folded into the weights and a bias, fused
    bn = helper.make_node("BatchNormalization", ["t", "g", "beta", "mean", "var"], ["n"])
    relu = helper.make_node("Relu", ["n"], ["y"])
    stats = [numpy_helper.from_array((RNG.random(oc) + 0.5).astype(np.float32), name) for name in ("g", "var")]
    stats += [numpy_helper.from_array(_f(oc), name) for name in ("beta", "mean")]
    graph = helper.make_graph([node, bn, relu], "deconv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(_f(oc), "b"), *stats])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = _f(*shape)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    model = ember.convert_model(onnx.load_from_string(proto.SerializeToString()))
    cm = ember.Core().compile_model(model, "CPU")
    program = cm._executable.program
    assert not program.stats["fallbacks"]
    assert [op.type_name for op in program.ops if op.native and "Convolution" in op.type_name]
    assert not [op.type_name for op in program.ops if op.type_name.startswith("Eltwise")]  # all fused
    got = cm([x])[cm.output(0)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet1d", "dcgan"])
def test_benchmark_networks_native_and_right(name: str) -> None:
    """benchmarks/conv_family.py's networks (PyTorch exports): no op on a reference kernel, and
    the output of ONNX Runtime."""
    import sys
    from pathlib import Path

    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    bench = str(Path(__file__).resolve().parents[2] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import conv_family

    path = conv_family.export(name)
    cm = ember.Core().compile_model(ember.convert_model(str(path)), "CPU")
    assert not cm._executable.program.stats["fallbacks"]
    shape = {"unet1d": (1, 8, 4096), "dcgan": (1, 100, 1, 1)}[name]
    x = _f(*shape)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(cm([x])[cm.output(0)], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["deconv-k4s2p1", "deconv-grouped", "conv1d-grouped", "residual-deconv1d"])
def test_compressed_ir_runs_native(name: str, tmp_path: Any) -> None:
    """An IR saved with f16-compressed weights and biases (``save_model``'s default) reads back
    and runs with no op on a reference kernel (the Converts are folded), as REFERENCE runs it."""
    model = CASES[name][0]()
    ember.save_model(model, str(tmp_path / "m.xml"))
    read = ember.Core().read_model(str(tmp_path / "m.xml"))
    assert any(n.type_name == "Convert" for n in read.get_ordered_ops())
    x = _f(*CASES[name][1])
    want = _run(read, "REFERENCE", x)[0][0]
    got, cm = _run(read, "CPU", x)
    assert not cm._executable.program.stats["fallbacks"]
    np.testing.assert_allclose(got[0], want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kind", ["plain", "grouped", "output-shape", "bias-add"])
def test_batchnorm_and_scale_fold_into_transposed_convolutions(kind: str) -> None:
    """fold_conv_batchnorm and fold_conv_scale on (Group)ConvolutionBackpropData (BatchNorm also
    through a bias Add): nothing left of them, the same values (both graphs on REFERENCE)."""
    from collections import Counter

    from ember.devices.reference.executor import run_model
    from ember.passes import get_pass

    def transposed(x: Any) -> Any:
        shape = np.array([8, 10], np.int64) if kind == "output-shape" else None
        if kind == "grouped":
            return ops.group_convolution_backprop_data(x, _w(3, 2, 3, 4, 4), [2, 2], shape, [1, 1], [1, 1])
        y = ops.convolution_backprop_data(x, _w(6, 9, 4, 4), [2, 2], shape, [1, 1], [1, 1])
        return ops.add(y, _f(1, 9, 1, 1)) if kind == "bias-add" else y

    feeds = [_f(1, 6, 4, 5)]
    x = ops.parameter([1, 6, 4, 5], np.float32, name="x")
    g, b, mu = (_f(9) for _ in range(3))
    bn = ops.batch_norm_inference(transposed(x), g, b, mu, (RNG.random(9) + 0.5).astype(np.float32), 1e-5)
    scaled = ops.multiply(transposed(x), _f(1, 9, 1, 1))
    for model, pass_name, gone in ((Model([ops.relu(bn)], [x], "bn"), "fold_conv_batchnorm", "BatchNormInference"),
                                   (Model([scaled], [x], "scale"), "fold_conv_scale", "Multiply")):
        if pass_name == "fold_conv_scale" and kind == "bias-add":
            continue  # a scale after the bias Add is not a convolution's scale
        before = run_model(model, feeds)[0]
        folded = get_pass(pass_name).fn(model.clone())
        assert Counter(n.type_name for n in folded.get_ordered_ops())[gone] == 0
        np.testing.assert_allclose(run_model(folded, feeds)[0], before, rtol=1e-4, atol=1e-5)
