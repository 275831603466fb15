"""Normalizations: SoftMax (v1, v8), LogSoftmax, MVN (v0, v6), NormalizeL2, BatchNormInference
(v0, v5), LRN and GRN.

Kernels compute in float64 and cast back to the data's type, so they serve as the reference
that faster kernels are checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type
from ember.ops.reduce import reduction_axes


def _check_float(node: Node, port: int = 0) -> Type:
    t = node.input_type(port)
    if not (t.is_real or t.is_dynamic):
        raise node.fail(f"input {port} must be a floating-point tensor, got {t}")
    return t


def _axis_in_rank(node: Node, axis: int, shape: PartialShape, allow_negative: bool) -> None:
    if not shape.rank_is_static:
        return
    rank = max(len(shape), 1)  # a scalar takes axis 0 or -1, as in OpenVINO
    lo = -rank if allow_negative else 0
    if not lo <= axis < rank:
        raise node.fail(f"axis {axis} is out of range for rank {rank} (allowed [{lo}, {rank - 1}])")


def _f64(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64)


# -- SoftMax, LogSoftmax ------------------------------------------------------------------


class _SoftmaxBase(Node):
    num_inputs = (1, 1)
    allow_negative = True
    log = False

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = _check_float(self)
        _axis_in_rank(self, self.attrs["axis"], self.input_shape(0), self.allow_negative)
        return [(t, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        if x.size == 0:
            return [np.array(x, copy=True)]
        axis = self.attrs["axis"] % x.ndim if x.ndim else 0
        x64 = _f64(x).reshape(x.shape or (1,))
        with np.errstate(all="ignore"):
            shifted = x64 - np.max(x64, axis=axis, keepdims=True)
            e = np.exp(shifted)
            s = np.sum(e, axis=axis, keepdims=True)
            out = shifted - np.log(s) if self.log else e / s
        return [out.reshape(x.shape).astype(x.dtype)]


@register_op
class Softmax1(_SoftmaxBase):
    """exp(x) / sum(exp(x)) along a non-negative ``axis`` (opset1)."""

    type_name = "SoftMax"
    version = "opset1"
    attributes = (Attr("axis", "int", 1),)
    allow_negative = False


@register_op
class Softmax(_SoftmaxBase):
    """exp(x) / sum(exp(x)) along ``axis``; negative axes count from the end (opset8)."""

    type_name = "SoftMax"
    version = "opset8"
    attributes = (Attr("axis", "int", 1),)


@register_op
class LogSoftmax(_SoftmaxBase):
    """x - log(sum(exp(x))) along ``axis`` (negative axes allowed)."""

    type_name = "LogSoftmax"
    version = "opset5"
    attributes = (Attr("axis", "int", 1),)
    log = True


@builder
def softmax(data: Any, axis: int, name: str | None = None) -> Node:
    """Build a SoftMax (opset8) node over ``axis``."""
    return Softmax([data], {"axis": axis}, name)


@builder
def log_softmax(data: Any, axis: int, name: str | None = None) -> Node:
    """Build a LogSoftmax node over ``axis``."""
    return LogSoftmax([data], {"axis": axis}, name)


# -- MVN ------------------------------------------------------------------------------------


def _mvn(x: np.ndarray, axes: Sequence[int], normalize_variance: bool, eps: float, inside_sqrt: bool) -> np.ndarray:
    x64 = _f64(x)
    ax = tuple(axes)  # an empty tuple reduces nothing: the mean is x itself
    with np.errstate(all="ignore"):
        centered = x64 - np.mean(x64, axis=ax, keepdims=True)
        if normalize_variance:
            var = np.mean(centered * centered, axis=ax, keepdims=True)
            centered = centered / (np.sqrt(var + eps) if inside_sqrt else np.sqrt(var) + eps)
    return centered.astype(x.dtype)


@register_op
class MVN0(Node):
    """Mean-variance normalization over ``reduction_axes`` (or, when empty, the axes from 1
    (``across_channels``) or 2 to the last); the variance is ``var + eps`` under the root."""

    type_name = "MVN"
    version = "opset2"
    num_inputs = (1, 1)
    attributes = (Attr("eps", "float", 1e-9), Attr("across_channels", "bool", True),
                  Attr("normalize_variance", "bool", True), Attr("reduction_axes", "ints", []))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = _check_float(self)
        shape = self.input_shape(0)
        if shape.rank_is_static:
            rank = len(shape)
            if not self.attrs["reduction_axes"]:
                # as OpenVINO does: the axes are fixed once the rank is known (and written to IR)
                start = 1 if self.attrs["across_channels"] else 2
                self.attrs["reduction_axes"] = list(range(start, rank))
            for a in self.attrs["reduction_axes"]:
                if not 0 <= a < rank:
                    raise self.fail(f"reduction axis {a} is out of range for rank {rank}")
        return [(t, shape)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        axes = self.attrs["reduction_axes"] or list(range(1 if self.attrs["across_channels"] else 2, x.ndim))
        return [_mvn(x, sorted(set(axes)), self.attrs["normalize_variance"], self.attrs["eps"], True)]


_EPS_MODES = ("inside_sqrt", "outside_sqrt")


@register_op
class MVN(Node):
    """Mean-variance normalization over the axes in input 1; ``eps_mode`` puts eps inside
    (``sqrt(var + eps)``) or outside (``sqrt(var) + eps``) the square root."""

    type_name = "MVN"
    version = "opset6"
    num_inputs = (2, 2)
    attributes = (Attr("eps", "float"), Attr("normalize_variance", "bool"), Attr("eps_mode", "str"))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = _check_float(self)
        if self.attrs["eps_mode"].lower() not in _EPS_MODES:
            raise self.fail(f"eps_mode must be one of {', '.join(_EPS_MODES)}, got '{self.attrs['eps_mode']}'")
        it = self.input_type(1)
        if not (it.is_integral_number or it.is_dynamic):
            raise self.fail(f"axes must be an integer tensor, got {it}")
        axes_shape = self.input_shape(1)
        if axes_shape.rank_is_static and len(axes_shape) != 1:
            raise self.fail(f"axes must be a 1-D tensor, got shape {axes_shape}")
        shape = self.input_shape(0)
        axes = self.input_value(1)
        if axes is not None and shape.rank_is_static:
            reduction_axes(self, axes, len(shape))
        return [(t, shape)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, axes = inputs
        eps = float(np.float32(self.attrs["eps"]))
        inside = self.attrs["eps_mode"].lower() == "inside_sqrt"
        return [_mvn(x, reduction_axes(self, axes, x.ndim), self.attrs["normalize_variance"], eps, inside)]


@builder
def mvn(data: Any, axes: Any, normalize_variance: bool, eps: float, eps_mode: str, name: str | None = None) -> Node:
    """Build an MVN (opset6) node; ``eps_mode`` is ``"inside_sqrt"`` or ``"outside_sqrt"``."""
    return MVN([data, axes], {"eps": eps, "normalize_variance": normalize_variance,
                              "eps_mode": eps_mode.upper()}, name)


# -- NormalizeL2 ----------------------------------------------------------------------------


@register_op
class NormalizeL2(Node):
    """x / sqrt(sum(x^2) + eps) (``eps_mode="add"``) or x / sqrt(max(sum(x^2), eps)) (``"max"``)
    over the axes in input 1. With no axes every element is divided by itself: 1, or 0 for 0."""

    type_name = "NormalizeL2"
    version = "opset1"
    num_inputs = (2, 2)
    attributes = (Attr("eps", "float"), Attr("eps_mode", "str"))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = _check_float(self)
        if self.attrs["eps_mode"].lower() not in ("add", "max"):
            raise self.fail(f"eps_mode must be 'add' or 'max', got '{self.attrs['eps_mode']}'")
        it = self.input_type(1)
        if not (it.is_integral_number or it.is_dynamic):
            raise self.fail(f"axes must be an integer tensor, got {it}")
        axes_shape = self.input_shape(1)
        if axes_shape.rank_is_static and len(axes_shape) > 1:
            raise self.fail(f"axes must be a scalar or 1-D tensor, got shape {axes_shape}")
        shape = self.input_shape(0)
        axes = self.input_value(1)
        if axes is not None and shape.rank_is_static:
            reduction_axes(self, axes, len(shape))
        return [(t, shape)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, axes = inputs
        ax = tuple(reduction_axes(self, axes, x.ndim))
        if not ax:
            return [np.where(x == 0, 0, 1).astype(x.dtype)]
        x64 = _f64(x)
        eps = float(np.float32(self.attrs["eps"]))
        with np.errstate(all="ignore"):
            ss = np.sum(x64 * x64, axis=ax, keepdims=True)
            ss = ss + eps if self.attrs["eps_mode"].lower() == "add" else np.maximum(ss, eps)
            out = x64 / np.sqrt(ss)
        return [out.astype(x.dtype)]


@builder
def normalize_l2(data: Any, axes: Any, eps: float, eps_mode: str, name: str | None = None) -> Node:
    """Build a NormalizeL2 node; ``eps_mode`` is ``"add"`` or ``"max"``.

    Unlike ``openvino.opset1.normalize_l2`` (which drops ``eps_mode`` and always adds), the
    mode given here is the one the node uses.
    """
    return NormalizeL2([data, axes], {"eps": eps, "eps_mode": eps_mode.lower()}, name)


# -- BatchNormInference ---------------------------------------------------------------------


class _BatchNormBase(Node):
    num_inputs = (5, 5)
    attributes = (Attr("epsilon", "float"),)
    data_port = 2
    param_ports = (0, 1, 3, 4)  # gamma, beta, mean, variance

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = _check_float(self, self.data_port)
        for p in self.param_ports:
            if not self.input_type(p).compatible(t):
                raise self.fail(f"input {p} has type {self.input_type(p)}, the data has {t}")
        if self.attrs["epsilon"] < 0:
            raise self.fail(f"epsilon must be non-negative, got {self.attrs['epsilon']}")
        data = self.input_shape(self.data_port)
        channels = Dimension()
        for p in self.param_ports:
            s = self.input_shape(p)
            if s.rank_is_static:
                if len(s) != 1:
                    raise self.fail(f"input {p} must be 1-D, got shape {s}")
                try:
                    channels = channels.merge(s[0])
                except Exception:
                    raise self.fail(f"gamma, beta, mean and variance disagree on the channel count ({s[0]} "
                                    f"vs {channels})") from None
        if data.rank_is_static:
            if len(data) < 2:
                raise self.fail(f"data must have rank >= 2, got {data}")
            try:
                c = data[1].merge(channels)
            except Exception:
                raise self.fail(f"data has {data[1]} channels but the parameters have {channels}") from None
            data = PartialShape([data[0], c, *list(data)[2:]])
        return [(t if not t.is_dynamic else self.input_type(self.param_ports[0]), data)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[self.data_port]
        gamma, beta, mean, var = (_f64(inputs[p]) for p in self.param_ports)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        gamma, beta, mean, var = (a.reshape(shape) for a in (gamma, beta, mean, var))
        with np.errstate(all="ignore"):
            out = gamma * (_f64(x) - mean) / np.sqrt(var + self.attrs["epsilon"]) + beta
        return [out.astype(x.dtype)]


@register_op
class BatchNormInference0(_BatchNormBase):
    """gamma * (x - mean) / sqrt(variance + epsilon) + beta along axis 1; inputs are
    (gamma, beta, data, mean, variance)."""

    type_name = "BatchNormInference"
    version = "opset1"


@register_op
class BatchNormInference(_BatchNormBase):
    """gamma * (x - mean) / sqrt(variance + epsilon) + beta along axis 1; inputs are
    (data, gamma, beta, mean, variance)."""

    type_name = "BatchNormInference"
    version = "opset5"
    data_port = 0
    param_ports = (1, 2, 3, 4)


@builder
def batch_norm_inference(data: Any, gamma: Any, beta: Any, mean: Any, variance: Any, epsilon: float,
                         name: str | None = None) -> Node:
    """Build a BatchNormInference (opset5) node."""
    return BatchNormInference([data, gamma, beta, mean, variance], {"epsilon": epsilon}, name)


# -- LRN, GRN -------------------------------------------------------------------------------


@register_op
class LRN(Node):
    """Local response normalization: x / (bias + alpha / size^len(axes) * sum(x^2 in window))^beta,
    the window spanning ``(size - 1) // 2`` elements either side along each axis of input 1."""

    type_name = "LRN"
    version = "opset1"
    num_inputs = (2, 2)
    attributes = (Attr("alpha", "float"), Attr("beta", "float"), Attr("bias", "float"), Attr("size", "int"))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = _check_float(self)
        axes_shape = self.input_shape(1)
        if axes_shape.rank_is_static and len(axes_shape) != 1:
            raise self.fail(f"axes must be a 1-D tensor, got shape {axes_shape}")
        shape = self.input_shape(0)
        if shape.rank_is_static and axes_shape.is_static and axes_shape[0].get_length() > len(shape):
            raise self.fail(f"{axes_shape[0]} axes given for a rank-{len(shape)} input")
        axes = self.input_value(1)
        if axes is not None and shape.rank_is_static:
            for a in np.asarray(axes).reshape(-1).tolist():
                if not 0 <= a < len(shape):
                    raise self.fail(f"axis {a} is out of range for rank {len(shape)}")
        return [(t, shape)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, axes = inputs
        ax = sorted({int(a) % max(x.ndim, 1) for a in np.asarray(axes).reshape(-1)})
        half = (self.attrs["size"] - 1) // 2
        x64 = _f64(x)
        sq = x64 * x64
        # a window sum along each axis in turn is the sum over the hypercube window
        for a in ax:
            n = sq.shape[a]
            c = np.cumsum(sq, axis=a)
            c = np.concatenate([np.zeros_like(np.take(c, [0], axis=a)), c], axis=a)
            idx = np.arange(n)
            hi = np.minimum(idx + half + 1, n)
            lo = np.maximum(idx - half, 0)
            sq = np.take(c, hi, axis=a) - np.take(c, lo, axis=a)
        scale = self.attrs["alpha"] / float(self.attrs["size"]) ** len(ax)
        with np.errstate(all="ignore"):
            out = x64 / np.power(self.attrs["bias"] + scale * sq, self.attrs["beta"])
        return [out.astype(x.dtype)]


@builder
def lrn(data: Any, axes: Any, alpha: float = 1, beta: float = 0.5, bias: float = 1, size: int = 5,
        name: str | None = None) -> Node:
    """Build an LRN node."""
    return LRN([data, axes], {"alpha": alpha, "beta": beta, "bias": bias, "size": size}, name)


@register_op
class GRN(Node):
    """Global response normalization: x / sqrt(sum over channels (axis 1) of x^2 + bias)."""

    type_name = "GRN"
    version = "opset1"
    num_inputs = (1, 1)
    attributes = (Attr("bias", "float"),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        t = _check_float(self)
        shape = self.input_shape(0)
        if shape.rank_is_static and not 2 <= len(shape) <= 4:
            raise self.fail(f"data must have rank 2, 3 or 4, got {shape}")
        return [(t, shape)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        x64 = _f64(x)
        with np.errstate(all="ignore"):
            out = x64 / np.sqrt(np.sum(x64 * x64, axis=1, keepdims=True) + self.attrs["bias"])
        return [out.astype(x.dtype)]


@builder
def grn(data: Any, bias: float, name: str | None = None) -> Node:
    """Build a GRN node."""
    return GRN([data], {"bias": bias}, name)
