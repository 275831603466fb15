"""Writing quantizers into the graph as NNCF writes them: ``FakeQuantize(levels=256)`` on
activations, weights as ``i8`` constants with ``Convert`` and a per-channel ``Multiply`` (and a
``Subtract`` only for a weight whose zero point is not 0)."""

from __future__ import annotations

import numpy as np

import ember.opset as ops
from ember.graph.core_ops import Constant
from ember.graph.node import Input, Node, Output
from ember.graph.types import Type


def insert_fake_quantize(source: Output, consumers: list[Input], low: np.ndarray, high: np.ndarray, levels: int,
                         name: str) -> Node:
    """A FakeQuantize(low, high, low, high) on ``source``, read by ``consumers``."""
    low = np.asarray(low, np.float32)
    high = np.asarray(high, np.float32)
    dtype = source.element_type
    lo = Constant(low.astype(dtype.dtype) if dtype.is_real else low, name=f"{name}/input_low")
    hi = Constant(high.astype(dtype.dtype) if dtype.is_real else high, name=f"{name}/input_high")
    lo_out = Constant(low.astype(dtype.dtype) if dtype.is_real else low, name=f"{name}/output_low")
    hi_out = Constant(high.astype(dtype.dtype) if dtype.is_real else high, name=f"{name}/output_high")
    fq = ops.fake_quantize(source, lo, hi, lo_out, hi_out, levels, name=name)
    for c in consumers:
        c.replace_source_output(fq.output(0))
    return fq


def quantize_weight_values(w: np.ndarray, low: np.ndarray, high: np.ndarray, levels: int
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 values, scale, zero point) such that ``(q - zp) * scale`` equals
    FakeQuantize(w, low, high, low, high, levels) exactly (same rounding)."""
    steps = np.float32(levels - 1)
    with np.errstate(all="ignore"):
        idx = np.rint((w.astype(np.float32) - low) / (high - low) * steps)
    idx = np.clip(idx, 0, levels - 1)
    offset = 127 if levels <= 255 else 128
    q = (idx - offset).astype(np.int8)
    scale = ((high - low) / steps).astype(np.float32)
    zp = (-offset - low / scale).astype(np.float32)  # 0 for a symmetric range
    return q, scale, zp


def compress_weight(node: Node, port: int, w: np.ndarray, low: np.ndarray, high: np.ndarray, levels: int) -> Node:
    """Replace the constant on ``node``'s input ``port`` by i8 -> Convert -> (Subtract) -> Multiply."""
    q, scale, zp = quantize_weight_values(w, low, high, levels)
    dtype = node.input(port).source.element_type
    const = Constant.from_array(q, Type.i8, name=f"{node.friendly_name}/weights_i8")
    x = ops.convert(const, dtype, name=f"{node.friendly_name}/weights_convert")
    x.rt_info["decompression"] = {"version": "0"}  # folding passes keep it: the weights stay int8
    zp_r = np.round(zp)
    if np.any(zp_r != 0):
        x = ops.subtract(x, Constant(zp_r.astype(dtype.dtype)), name=f"{node.friendly_name}/fq_weights_{port}/zp")
    deq = ops.multiply(x, Constant(scale.astype(dtype.dtype)), name=f"{node.friendly_name}/fq_weights_{port}")
    node.set_argument(port, deq.output(0))
    node.validate_and_infer_types()
    return deq


def dequantized(q: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    return ((q.astype(np.float32) - np.round(zp)) * scale).astype(np.float32)
