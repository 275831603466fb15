"""ember's random ops: ONNX RandomNormal, RandomUniform (and their ``*Like`` forms),
Multinomial, Bernoulli and training-mode Dropout.

OpenVINO has no counterpart for these ONNX ops, so they are ember's own (IR version
``ember_opset1``) with numpy reference kernels that the CPU device also runs.

Generator: a ``seed`` attribute makes an op deterministic: every evaluation draws from a fresh
``numpy.random.RandomState(int(seed))`` (Mersenne Twister, numpy's legacy stream), so the same
seed gives the same values run after run, on every device, and the same values ONNX's own test
generator computes with ``np.random.seed(seed)``. Without a seed, each evaluation draws fresh
values from the operating system's entropy. These ops are never constant-folded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type, as_type

NO_SEED = math.nan


def generator(seed: float) -> np.random.RandomState:
    """The generator an op with ``seed`` (NaN: none) draws from."""
    if math.isnan(seed):
        return np.random.RandomState(np.random.SeedSequence().generate_state(1)[0])
    return np.random.RandomState(int(seed) & 0xFFFFFFFF)


class _RandomOp(Node):
    version = "ember_opset1"
    foldable = False


class _Distribution(_RandomOp):
    """Values drawn elementwise; the shape comes from ``shape`` or from the optional input
    (the ``*Like`` form, whose element type is also the default output type)."""

    num_inputs = (0, 1)

    def _out_type(self) -> Type:
        et = self.attrs["element_type"]
        if et.is_dynamic and self.get_input_size():
            et = self.input_type(0)
        if et.is_dynamic:
            et = Type.f32
        if not et.is_real:
            raise self.fail(f"draws floating-point values; {et} was asked for")
        return et

    def infer(self) -> list[tuple[Type, PartialShape]]:
        shape = self.input_shape(0) if self.get_input_size() else PartialShape(self.attrs["shape"])
        return [(self._out_type(), shape)]

    def _shape(self, inputs: Sequence[np.ndarray]) -> tuple[int, ...]:
        return tuple(np.shape(inputs[0])) if inputs else tuple(self.attrs["shape"])

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        values = self.draw(generator(self.attrs["seed"]), self._shape(inputs))
        return [np.asarray(values).astype(self._out_type().dtype)]

    def draw(self, rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError


@register_op
class RandomNormal(_Distribution):
    """Normally distributed values of ``mean`` and standard deviation ``scale``."""

    type_name = "RandomNormal"
    attributes = (Attr("mean", "float", 0.0), Attr("scale", "float", 1.0), Attr("seed", "float", NO_SEED),
                  Attr("shape", "ints", []), Attr("element_type", "type", Type.dynamic))

    def draw(self, rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
        return rng.normal(self.attrs["mean"], self.attrs["scale"], shape)


@register_op
class RandomUniform(_Distribution):
    """Values drawn uniformly from ``[low, high)``."""

    type_name = "RandomUniformValues"
    attributes = (Attr("low", "float", 0.0), Attr("high", "float", 1.0), Attr("seed", "float", NO_SEED),
                  Attr("shape", "ints", []), Attr("element_type", "type", Type.dynamic))

    def draw(self, rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(self.attrs["low"], self.attrs["high"], shape)


@register_op
class Bernoulli(_RandomOp):
    """1 with the probability the input gives, else 0, elementwise."""

    type_name = "Bernoulli"
    num_inputs = (1, 1)
    attributes = (Attr("seed", "float", NO_SEED), Attr("element_type", "type", Type.dynamic))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        et = self.attrs["element_type"]
        return [(self.input_type(0) if et.is_dynamic else et, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        p = np.asarray(inputs[0], dtype=np.float64)
        draws = generator(self.attrs["seed"]).uniform(0.0, 1.0, p.shape) < p
        return [draws.astype(self.get_output_element_type(0).dtype)]


@register_op
class Multinomial(_RandomOp):
    """``sample_size`` class indices per batch row, drawn from the row's unnormalized log
    probabilities (input ``[batch, classes]``)."""

    type_name = "Multinomial"
    num_inputs = (1, 1)
    attributes = (Attr("sample_size", "int", 1), Attr("seed", "float", NO_SEED),
                  Attr("element_type", "type", Type.i32))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        ps = self.input_shape(0)
        if ps.rank_is_static and len(ps) != 2:
            raise self.fail(f"the input must be [batch, classes], got {ps}")
        if self.attrs["element_type"] not in (Type.i32, Type.i64):
            raise self.fail("the output type must be i32 or i64")
        batch = ps[0] if ps.rank_is_static else Dimension()
        return [(self.attrs["element_type"], PartialShape([batch, self.attrs["sample_size"]]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        logits = np.asarray(inputs[0], dtype=np.float64)
        rng = generator(self.attrs["seed"])
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        cdf = np.cumsum(z / z.sum(axis=1, keepdims=True), axis=1)
        u = rng.uniform(0.0, 1.0, (logits.shape[0], self.attrs["sample_size"]))
        idx = np.stack([np.searchsorted(cdf[b], u[b], side="right") for b in range(logits.shape[0])]) \
            if logits.shape[0] else np.zeros((0, self.attrs["sample_size"]), np.int64)
        idx = np.minimum(idx, logits.shape[1] - 1)
        return [idx.astype(self.attrs["element_type"].dtype)]


@register_op
class TrainingDropout(_RandomOp):
    """ONNX Dropout with ``training_mode`` known only at run time: when training, each element
    is kept with probability ``1 - ratio`` and scaled by ``1 / (1 - ratio)``; outputs the result
    and the keep mask. Inputs: data, ratio (scalar), training_mode (boolean scalar)."""

    type_name = "TrainingDropout"
    num_inputs = (3, 3)
    attributes = (Attr("seed", "float", NO_SEED),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.input_type(0), self.input_shape(0)), (Type.boolean, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        ratio = float(np.asarray(inputs[1]).reshape(-1)[0])
        training = bool(np.asarray(inputs[2]).reshape(-1)[0])
        if not training or ratio == 0.0:
            return [x.copy(), np.ones(x.shape, dtype=bool)]
        if not 0.0 <= ratio < 1.0:
            raise self.fail(f"ratio {ratio} must be in [0, 1)")
        mask = generator(self.attrs["seed"]).uniform(0.0, 1.0, x.shape) >= ratio
        scale = x.dtype.type(1.0 / (1.0 - ratio))
        return [np.asarray(mask * x * scale, dtype=x.dtype), mask]


def _seed(seed: float | None) -> float:
    return NO_SEED if seed is None else float(seed)


@builder
def random_normal(shape: Sequence[int] | Any = (), mean: float = 0.0, scale: float = 1.0, seed: float | None = None,
                  element_type: Any = Type.f32, like: Any = None, name: str | None = None) -> Node:
    """Normal values of ``shape`` (or of ``like``'s shape)."""
    return RandomNormal([] if like is None else [like],
                        {"mean": mean, "scale": scale, "seed": _seed(seed), "shape": list(shape),
                         "element_type": as_type(element_type)}, name)


@builder
def random_uniform_values(shape: Sequence[int] | Any = (), low: float = 0.0, high: float = 1.0,
                          seed: float | None = None, element_type: Any = Type.f32, like: Any = None,
                          name: str | None = None) -> Node:
    """Uniform values in ``[low, high)`` of ``shape`` (or of ``like``'s shape)."""
    return RandomUniform([] if like is None else [like],
                         {"low": low, "high": high, "seed": _seed(seed), "shape": list(shape),
                          "element_type": as_type(element_type)}, name)


@builder
def bernoulli(probabilities: Any, seed: float | None = None, element_type: Any = Type.dynamic,
              name: str | None = None) -> Node:
    """0/1 draws with the given probabilities."""
    return Bernoulli([probabilities], {"seed": _seed(seed), "element_type": as_type(element_type)}, name)


@builder
def multinomial(logits: Any, sample_size: int = 1, seed: float | None = None, element_type: Any = Type.i32,
                name: str | None = None) -> Node:
    """Class samples from unnormalized log probabilities ``[batch, classes]``."""
    return Multinomial([logits], {"sample_size": sample_size, "seed": _seed(seed),
                                  "element_type": as_type(element_type)}, name)


@builder
def training_dropout(data: Any, ratio: Any, training_mode: Any, seed: float | None = None,
                     name: str | None = None) -> Node:
    """Dropout whose training mode is decided at run time."""
    return TrainingDropout([data, ratio, training_mode], {"seed": _seed(seed)}, name)
