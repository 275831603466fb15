"""Fourier transforms: DFT-7, IDFT-7, RDFT-9, IRDFT-9 and STFT-15.

Complex tensors are real tensors with a last dimension of 2 (real, imaginary), as in
OpenVINO. ``axes`` may be negative (counted without the complex dimension); ``signal_size``
entries of -1 keep the input length, others trim or zero-pad before the transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type


def _complex(x: np.ndarray) -> np.ndarray:
    # single precision stays single (numpy's FFT computes complex64 natively), as OpenVINO does
    ft = np.float32 if x.dtype.itemsize <= 4 else np.float64
    return x[..., 0].astype(ft) + np.array(1j, dtype=np.complex64 if ft is np.float32 else np.complex128) * \
        x[..., 1].astype(ft)


def _split(c: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.stack([c.real, c.imag], axis=-1).astype(dtype)


class _FFT(Node):
    """Shared shape inference: which axes, what signal sizes, what output shape."""

    num_inputs = (2, 3)
    complex_input = True
    complex_output = True
    half_last = False  # RDFT: the last transformed axis keeps n // 2 + 1 values
    full_last = False  # IRDFT: the last transformed axis grows to 2 * (n - 1)

    def _signal_rank(self, shape: PartialShape) -> int:
        return len(shape) - (1 if self.complex_input else 0)

    def _axes(self, rank: int) -> list[int] | None:
        v = self.input_value(1)
        if v is None:
            return None
        axes = [int(a) for a in np.asarray(v).reshape(-1)]
        out = []
        for a in axes:
            if not -rank <= a < rank:
                raise self.fail(f"axis {a} is out of range for a signal of rank {rank}")
            out.append(a + rank if a < 0 else a)
        if len(set(out)) != len(out):
            raise self.fail(f"axes {axes} repeat an axis")
        return out

    def infer(self) -> list[tuple[Type, PartialShape]]:
        et = self.input_type(0)
        if not (et.is_real or et.is_dynamic):
            raise self.fail(f"needs floating-point data, got {et}")
        ps = self.input_shape(0)
        if not ps.rank_is_static:
            return [(et, PartialShape.dynamic())]
        if self.complex_input and ps[len(ps) - 1].is_static and ps[len(ps) - 1] != 2:
            raise self.fail(f"the last dimension must be 2 (real, imaginary), got {ps}")
        rank = self._signal_rank(ps)
        dims = list(ps)[:rank]
        axes = self._axes(rank)
        out_rank = rank + (1 if self.complex_output else 0)
        if axes is None:
            return [(et, PartialShape.dynamic(out_rank))]
        sizes = self.input_value(2) if self.get_input_size() > 2 else None
        if self.get_input_size() > 2 and sizes is None:
            for a in axes:
                dims[a] = Dimension()
        elif sizes is not None:
            for a, s in zip(axes, np.asarray(sizes).reshape(-1)):
                if int(s) != -1:
                    dims[a] = Dimension(int(s))
                elif self.full_last and a == axes[-1]:
                    dims[a] = _irdft_len(dims[a])
        elif self.full_last:
            dims[axes[-1]] = _irdft_len(dims[axes[-1]])
        if self.half_last:
            d = dims[axes[-1]]
            dims[axes[-1]] = Dimension(d.get_length() // 2 + 1) if d.is_static else Dimension()
        if self.complex_output:
            dims.append(Dimension(2))
        return [(et, PartialShape(dims))]

    def _args(self, inputs: Sequence[np.ndarray]) -> tuple[list[int], list[int] | None]:
        rank = inputs[0].ndim - (1 if self.complex_input else 0)
        axes = [int(a) for a in np.asarray(inputs[1]).reshape(-1)]
        axes = [a + rank if a < 0 else a for a in axes]
        sizes = None
        if len(inputs) > 2:
            sizes = [int(s) for s in np.asarray(inputs[2]).reshape(-1)]
        return axes, sizes


def _irdft_len(d: Dimension) -> Dimension:
    return Dimension(2 * (d.get_length() - 1)) if d.is_static else Dimension()


def _resolve(x_shape: Sequence[int], axes: list[int], sizes: list[int] | None) -> list[int]:
    return [x_shape[a] if sizes is None or sizes[k] == -1 else sizes[k] for k, a in enumerate(axes)]


@register_op
class DFT(_FFT):
    """OpenVINO DFT-7: complex-to-complex discrete Fourier transform over ``axes``."""

    type_name = "DFT"
    version = "opset7"

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        c = _complex(inputs[0])
        axes, sizes = self._args(inputs)
        out = np.fft.fftn(c, _resolve(c.shape, axes, sizes), axes)
        return [_split(out, inputs[0].dtype)]


@register_op
class IDFT(_FFT):
    """OpenVINO IDFT-7: the inverse of DFT (scaled by 1 / N)."""

    type_name = "IDFT"
    version = "opset7"

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        c = _complex(inputs[0])
        axes, sizes = self._args(inputs)
        out = np.fft.ifftn(c, _resolve(c.shape, axes, sizes), axes)
        return [_split(out, inputs[0].dtype)]


@register_op
class RDFT(_FFT):
    """OpenVINO RDFT-9: real-to-complex transform; the last axis keeps ``n // 2 + 1`` values."""

    type_name = "RDFT"
    version = "opset9"
    complex_input = False
    half_last = True

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0].astype(np.float32 if inputs[0].dtype.itemsize <= 4 else np.float64)
        axes, sizes = self._args(inputs)
        out = np.fft.rfftn(x, _resolve(x.shape, axes, sizes), axes)
        return [_split(out, inputs[0].dtype)]


@register_op
class IRDFT(_FFT):
    """OpenVINO IRDFT-9: complex (Hermitian half) to real; the last axis becomes
    ``2 * (n - 1)`` long unless ``signal_size`` says otherwise."""

    type_name = "IRDFT"
    version = "opset9"
    complex_output = False
    full_last = True

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        c = _complex(inputs[0])
        axes, sizes = self._args(inputs)
        shape = [c.shape[a] for a in axes]
        shape[-1] = 2 * (shape[-1] - 1)
        if sizes is not None:
            shape = [s if sizes[k] == -1 else sizes[k] for k, s in enumerate(shape)]
        out = np.fft.irfftn(c, shape, axes)
        return [out.astype(inputs[0].dtype)]


def _fft_builder(cls: type, data: Any, axes: Any, signal_size: Any, name: str | None) -> Node:
    inputs = [data, axes] + ([] if signal_size is None else [signal_size])
    return cls(inputs, None, name)


@builder
def dft(data: Any, axes: Any, signal_size: Any = None, name: str | None = None) -> Node:
    """A DFT-7 node."""
    return _fft_builder(DFT, data, axes, signal_size, name)


@builder
def idft(data: Any, axes: Any, signal_size: Any = None, name: str | None = None) -> Node:
    """An IDFT-7 node."""
    return _fft_builder(IDFT, data, axes, signal_size, name)


@builder
def rdft(data: Any, axes: Any, signal_size: Any = None, name: str | None = None) -> Node:
    """An RDFT-9 node."""
    return _fft_builder(RDFT, data, axes, signal_size, name)


@builder
def irdft(data: Any, axes: Any, signal_size: Any = None, name: str | None = None) -> Node:
    """An IRDFT-9 node."""
    return _fft_builder(IRDFT, data, axes, signal_size, name)


@register_op
class STFT(Node):
    """OpenVINO STFT-15: frames of ``frame_size`` every ``frame_step`` samples, multiplied by
    the window (zero-padded to the frame size, centred) and transformed with a real FFT.
    Output ``[batch, frames, frame_size // 2 + 1, 2]`` (bins and frames swapped when
    ``transpose_frames``); a 1-D signal gives no batch dimension."""

    type_name = "STFT"
    version = "opset15"
    num_inputs = (4, 4)
    attributes = (Attr("transpose_frames", "bool"),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        ps = self.input_shape(0)
        if ps.rank_is_static and len(ps) not in (1, 2):
            raise self.fail(f"the signal must be 1-D or 2-D, got {ps}")
        size, step = self.input_value(2), self.input_value(3)
        frames, bins = Dimension(), Dimension()
        if size is not None:
            n = int(np.asarray(size).reshape(-1)[0])
            bins = Dimension(n // 2 + 1)
            if step is not None and ps.rank_is_static and ps[len(ps) - 1].is_static:
                length = ps[len(ps) - 1].get_length()
                frames = Dimension(max(0, (length - n) // int(np.asarray(step).reshape(-1)[0]) + 1))
        lead = [] if not ps.rank_is_static or len(ps) == 1 else [ps[0]]
        body = [bins, frames] if self.attrs["transpose_frames"] else [frames, bins]
        if not ps.rank_is_static:
            return [(self.input_type(0), PartialShape.dynamic())]
        return [(self.input_type(0), PartialShape(lead + body + [Dimension(2)]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        signal, window = inputs[0], inputs[1].astype(np.float64)
        n = int(np.asarray(inputs[2]).reshape(-1)[0])
        step = int(np.asarray(inputs[3]).reshape(-1)[0])
        x = signal.astype(np.float64)
        one = x.ndim == 1
        if one:
            x = x[None]
        pad = n - window.shape[0]
        win = np.pad(window, (pad // 2, pad - pad // 2)) if pad > 0 else window[:n]
        count = max(0, (x.shape[1] - n) // step + 1)
        frames = np.stack([x[:, f * step: f * step + n] * win for f in range(count)], 1) if count else \
            np.zeros((x.shape[0], 0, n))
        spec = np.fft.rfft(frames, n, axis=-1)
        out = np.stack([spec.real, spec.imag], -1)
        if self.attrs["transpose_frames"]:
            out = np.swapaxes(out, 1, 2)
        if one:
            out = out[0]
        return [out.astype(signal.dtype)]


@builder
def stft(data: Any, window: Any, frame_size: Any, frame_step: Any, transpose_frames: bool,
         name: str | None = None) -> Node:
    """An STFT-15 node."""
    return STFT([data, window, frame_size, frame_step], {"transpose_frames": transpose_frames}, name)
