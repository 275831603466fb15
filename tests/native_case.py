"""One-op (or few-op) cases for the CPU device's native-coverage tests: the model built over
Parameters shaped like the inputs, REFERENCE's outputs, and the CPU compiled model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import ember
import ember.opset as ops
from ember.graph.model import Model


def native_case(fn: Callable[..., Any], inputs: list[np.ndarray]) -> tuple[Model, Any, Any]:
    """``(model, REFERENCE's outputs, CPU compiled model)`` for ``fn(*parameters)`` (one output
    or a list of them)."""
    params = [ops.parameter(list(a.shape), a.dtype, name=f"x{i}") for i, a in enumerate(inputs)]
    out = fn(*params)
    model = Model(out if isinstance(out, list) else [out], params, "case")
    core = ember.Core()
    return model, core.compile_model(model, "REFERENCE")(inputs), core.compile_model(model, "CPU")
