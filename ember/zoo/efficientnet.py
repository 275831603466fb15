"""EfficientNet-Lite0 built with ember's opset from a state dict, and its image preprocessing.

The network is TensorFlow's EfficientNet-Lite0 (as ported to PyTorch by the
``efficientnet_lite_pytorch`` package, whose parameter names the weights use): a 3x3 stride-2
stem, 16 inverted-residual blocks (1x1 expand, depthwise kxk, 1x1 project, a residual add when
stride is 1 and the channel count is kept), a 1x1 head to 1280 channels, global average pooling
and a 1000-way linear layer. Lite means ReLU6 everywhere, no squeeze-excitation, and a fixed
stem and head. Convolutions pad like TensorFlow's SAME (the extra row and column at the end),
and every batch norm (epsilon 1e-3) is folded into the convolution before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ember.errors import ConversionError
from ember.graph.model import Model

BN_EPS = 1e-3
IMAGE_SIZE = 224
CROP_FRACTION = 224 / 256
MEAN, STD = 127.0, 128.0
# (repeats, kernel, first stride, expand ratio, output channels) per stage.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


class _Weights:
    """The state dict, with a clear error for a missing or misshapen tensor."""

    def __init__(self, state: Mapping[str, np.ndarray]) -> None:
        self.state = state
        self.used: set[str] = set()

    def __call__(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        arr = self.state.get(key)
        if arr is None:
            raise ConversionError(f"ember: the EfficientNet-Lite0 state dict has no '{key}'")
        if shape is not None and tuple(arr.shape) != shape:
            raise ConversionError(f"ember: '{key}' has shape {list(arr.shape)}, EfficientNet-Lite0 needs "
                                  f"{list(shape)}")
        self.used.add(key)
        return arr

    def folded(self, conv: str, bn: str, out_ch: int) -> tuple[np.ndarray, np.ndarray]:
        """Convolution weights and bias with batch norm ``bn`` folded in."""
        w = self(f"{conv}.weight").astype(np.float64)
        if w.shape[0] != out_ch:
            raise ConversionError(f"ember: '{conv}.weight' has {w.shape[0]} output channels, expected {out_ch}")
        gamma, beta = self(f"{bn}.weight", (out_ch,)), self(f"{bn}.bias", (out_ch,))
        mean, var = self(f"{bn}.running_mean", (out_ch,)), self(f"{bn}.running_var", (out_ch,))
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPS)
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        b = beta.astype(np.float64) - mean.astype(np.float64) * scale
        return w.astype(np.float32), b.astype(np.float32)


def _conv_bn(ops: Any, x: Any, wts: _Weights, conv: str, bn: str, out_ch: int, stride: int = 1,
             depthwise: bool = False, relu6: bool = True) -> Any:
    w, b = wts.folded(conv, bn, out_ch)
    s = [stride, stride]
    if depthwise:
        w = w.reshape(out_ch, 1, 1, *w.shape[2:])
        y = ops.group_convolution(x, w, s, [0, 0], [0, 0], [1, 1], "same_upper", name=conv)
    else:
        y = ops.convolution(x, w, s, [0, 0], [0, 0], [1, 1], "same_upper", name=conv)
    y = ops.add(y, b.reshape(1, out_ch, 1, 1), name=f"{bn}.folded")
    return ops.clamp(y, 0.0, 6.0, name=f"{bn}.relu6") if relu6 else y


def build(state: Mapping[str, np.ndarray], batch: int | None = None) -> Model:
    """EfficientNet-Lite0 from its PyTorch state dict (``_conv_stem.weight`` ... ``_fc.bias``).

    Input ``image`` f32 ``[batch, 3, 224, 224]`` (``batch=None``: dynamic), output ``logits``
    f32 ``[batch, 1000]``.
    """
    import ember.opset as ops

    wts = _Weights(state)
    image = ops.parameter([-1 if batch is None else batch, 3, IMAGE_SIZE, IMAGE_SIZE], np.float32, name="image")
    image.output(0).set_names({"image"})
    x = _conv_bn(ops, image, wts, "_conv_stem", "_bn0", 32, stride=2)
    in_ch, index = 32, 0
    for repeats, kernel, first_stride, expand, out_ch in STAGES:
        for r in range(repeats):
            stride = first_stride if r == 0 else 1
            p = f"_blocks.{index}"
            block_in = x
            mid = in_ch * expand
            if expand != 1:
                x = _conv_bn(ops, x, wts, f"{p}._expand_conv", f"{p}._bn0", mid)
            if wts(f"{p}._depthwise_conv.weight").shape != (mid, 1, kernel, kernel):
                raise ConversionError(f"ember: '{p}._depthwise_conv.weight' is not a {kernel}x{kernel} "
                                      f"depthwise kernel over {mid} channels")
            x = _conv_bn(ops, x, wts, f"{p}._depthwise_conv", f"{p}._bn1", mid, stride, depthwise=True)
            x = _conv_bn(ops, x, wts, f"{p}._project_conv", f"{p}._bn2", out_ch, relu6=False)
            if stride == 1 and in_ch == out_ch:
                x = ops.add(x, block_in, name=f"{p}.residual")
            in_ch, index = out_ch, index + 1
    x = _conv_bn(ops, x, wts, "_conv_head", "_bn1", 1280)
    pooled = ops.reduce_mean(x, np.array([2, 3], np.int64), False, name="avg_pool")
    fc_w = wts("_fc.weight", (1000, 1280))
    fc_b = wts("_fc.bias", (1000,))
    logits = ops.add(ops.matmul(pooled, fc_w, False, True, name="_fc"), fc_b, name="logits")
    logits.output(0).set_names({"logits"})
    unused = {k for k in state if not k.endswith("num_batches_tracked")} - wts.used
    if unused:
        raise ConversionError(f"ember: the state dict has tensors EfficientNet-Lite0 does not use: "
                              f"{sorted(unused)[:5]}; is it another network?")
    return Model([logits], [image], "efficientnet-lite0")


def convert(files: Mapping[str, Path]) -> Model:
    """The zoo converter: read the ``.pth`` without torch and build the network."""
    from ember.zoo.torch_state import load_state_dict

    (pth,) = [p for m, p in files.items() if m.endswith(".pth")]
    return build(load_state_dict(pth))


# -- preprocessing ---------------------------------------------------------------------------

def _resample_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``[size_out, size_in]`` weights of a triangle (bilinear) filter widened when shrinking, so
    that downscaling averages every source pixel (antialiasing)."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    centers = (np.arange(size_out) + 0.5) * scale
    src = np.arange(size_in) + 0.5
    w = np.maximum(0.0, 1.0 - np.abs(src[None, :] - centers[:, None]) / support)
    return w / w.sum(axis=1, keepdims=True)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an ``[H, W, C]`` image (any dtype) to ``[height, width, C]`` float32."""
    rows = _resample_matrix(image.shape[0], height)
    cols = _resample_matrix(image.shape[1], width)
    out = np.einsum("ij,jkc->ikc", rows, image.astype(np.float64))
    return np.einsum("kj,ijc->ikc", cols, out).astype(np.float32)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An ``[H, W, 3]`` RGB array from grey ``[H, W]``, ``[H, W, 1]``, RGB or RGBA input."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.shape[0] < 1 or img.shape[1] < 1:
        raise ConversionError(f"ember: expected an image [height, width, channels], got shape {list(img.shape)}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.dtype.kind == "f" and img.size and float(np.nanmax(img)) <= 1.0:
        img = img * 255.0  # float images in [0, 1]
    elif img.dtype == np.uint16:
        img = img / 257.0
    return img[:, :, :3]


def preprocess(image: np.ndarray) -> np.ndarray:
    """An RGB image (``[H, W, 3]``, uint8 or float) as EfficientNet-Lite0's input
    ``[1, 3, 224, 224]`` float32: center crop of 87.5% of the shorter side, antialiased resize
    to 224x224, then ``(pixel - 127) / 128``."""
    img = to_rgb(image)
    h, w = img.shape[:2]
    side = max(1, int(round(min(h, w) * CROP_FRACTION)))
    top, left = (h - side) // 2, (w - side) // 2
    crop = resize(img[top:top + side, left:left + side], IMAGE_SIZE, IMAGE_SIZE)
    return ((crop - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


def top_k(logits: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` most likely classes of one row of logits as ``(class index, probability)``."""
    z = np.asarray(logits, np.float64).reshape(-1)
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")[:k]
    return [(int(i), float(p[i])) for i in order]
