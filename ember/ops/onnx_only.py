"""ember's ops for ONNX ops with no OpenVINO counterpart and no ONNX function body: BitCast,
Det and MelWeightMatrix (IR version ``ember_opset1``, numpy reference kernels)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type, as_type


@register_op
class BitCast(Node):
    """The bits of each element read as ``destination_type`` (same bit width)."""

    type_name = "BitCast"
    version = "ember_opset1"
    num_inputs = (1, 1)
    attributes = (Attr("destination_type", "type", Type.f32),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        src, dst = self.input_type(0), self.attrs["destination_type"]
        for t in (src, dst):
            if t is Type.string or t is Type.sequence or (t.is_static and t.is_sub_byte):
                raise self.fail(f"cannot reinterpret the bits of {t}")
        if src.is_static and src.bitwidth != dst.bitwidth:
            raise self.fail(f"{src} has {src.bitwidth} bits, {dst} has {dst.bitwidth}")
        return [(dst, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        shape = np.shape(inputs[0])
        x = np.ascontiguousarray(inputs[0]).reshape(-1)
        dst = self.attrs["destination_type"].dtype
        if x.dtype == np.bool_:
            x = x.view(np.uint8)
        if dst == np.bool_:
            return [(x.view(np.uint8) != 0).reshape(shape)]
        return [x.view(dst).reshape(shape)]


@register_op
class Det(Node):
    """Determinants of the ``[..., M, M]`` input's square matrices."""

    type_name = "Det"
    version = "ember_opset1"
    num_inputs = (1, 1)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t, ps = self.input_type(0), self.input_shape(0)
        if not (t.is_real or t.is_dynamic):
            raise self.fail(f"needs floating-point input, got {t}")
        if not ps.rank_is_static:
            return [(t, PartialShape.dynamic())]
        if len(ps) < 2:
            raise self.fail(f"needs [..., M, M] input, got {ps}")
        if ps[-1].is_static and ps[-2].is_static and ps[-1].get_length() != ps[-2].get_length():
            raise self.fail(f"the matrices must be square, got {ps}")
        return [(t, PartialShape(list(ps)[:-2]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        return [np.asarray(np.linalg.det(x.astype(np.float64)), dtype=x.dtype)]


@register_op
class MelWeightMatrix(Node):
    """ONNX MelWeightMatrix: ``[dft_length // 2 + 1, num_mel_bins]`` triangular filters between
    ``lower_edge_hertz`` and ``upper_edge_hertz`` (inputs: num_mel_bins, dft_length, sample_rate,
    lower_edge_hertz, upper_edge_hertz), as the ONNX reference computes them."""

    type_name = "MelWeightMatrix"
    version = "ember_opset1"
    num_inputs = (5, 5)
    attributes = (Attr("output_type", "type", Type.f32),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        bins, dft = self.input_value(0), self.input_value(1)
        rows = Dimension(int(np.asarray(dft).reshape(-1)[0]) // 2 + 1) if dft is not None else Dimension()
        cols = Dimension(int(np.asarray(bins).reshape(-1)[0])) if bins is not None else Dimension()
        return [(self.attrs["output_type"], PartialShape([rows, cols]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        n_mel, dft, rate = (int(np.asarray(v).reshape(-1)[0]) for v in inputs[:3])
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in inputs[3:5])
        n_spec = dft // 2 + 1
        edges = np.arange(n_mel + 2)
        mel_lo = 2595 * np.log1p(lo / 700) / np.log(10)
        mel_hi = 2595 * np.log1p(hi / 700) / np.log(10)
        mel = edges * ((mel_hi - mel_lo) / len(edges)) + mel_lo
        hz = 700 * np.expm1(mel / 2595 * np.log(10))
        points = (((dft + 1) * hz) // rate).astype(int)
        out = np.zeros((n_spec, n_mel))
        for i in range(n_mel):
            left, center, right = points[i], points[i + 1], points[i + 2]
            if center == left:
                out[center, i] = 1.0
            else:
                j = np.arange(left, center + 1)
                out[j, i] = (j - left) / (center - left)
            if right > center:
                j = np.arange(center, right)
                out[j, i] = (right - j) / (right - center)
        return [out.astype(self.attrs["output_type"].dtype)]


@builder
def bitcast(data: Any, destination_type: Any, name: str | None = None) -> Node:
    """``data``'s bits read as ``destination_type``."""
    return BitCast([data], {"destination_type": as_type(destination_type)}, name)


@builder
def det(data: Any, name: str | None = None) -> Node:
    """Determinants of square matrices."""
    return Det([data], {}, name)


@builder
def mel_weight_matrix(num_mel_bins: Any, dft_length: Any, sample_rate: Any, lower_edge_hertz: Any,
                      upper_edge_hertz: Any, output_type: Any = Type.f32, name: str | None = None) -> Node:
    """Mel filter bank weights."""
    return MelWeightMatrix([num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz],
                           {"output_type": as_type(output_type)}, name)
