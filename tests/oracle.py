"""Test oracles: build the same op in ember and in real OpenVINO and compare outputs.

``compare_with_openvino("convolution", [x, Const(w)], strides=..., ...)`` builds
``ember.opset.convolution`` and ``openvino.opset16.convolution`` with the same arguments
(plain arrays become Parameters, ``Const`` wrappers become constants), runs ember's REFERENCE
kernels and OpenVINO's CPU plugin in f32, and asserts the outputs match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest


@dataclass
class Const:
    """An input that both graphs receive as a constant instead of a Parameter."""

    value: Any


def _build(opset: Any, model_cls: Any, builder: str, inputs: list[Any], args: tuple, kwargs: dict,
           output_index: int | None) -> tuple[Any, list[np.ndarray]]:
    params, feeds, call_inputs = [], [], []
    for i, x in enumerate(inputs):
        if isinstance(x, Const):
            call_inputs.append(opset.constant(np.asarray(x.value)))
        else:
            arr = np.asarray(x)
            p = opset.parameter(list(arr.shape), arr.dtype, name=f"in{i}")
            params.append(p)
            feeds.append(arr)
            call_inputs.append(p)
    node = getattr(opset, builder)(*call_inputs, *args, **kwargs)
    outs = node.outputs() if output_index is None else [node.output(output_index)]
    results = [opset.result(o) for o in outs]
    return model_cls(results, params, "t"), feeds


def run_ember(builder: str, inputs: list[Any], *args: Any, output_index: int | None = None,
              **kwargs: Any) -> list[np.ndarray]:
    import ember.opset as eo
    from ember.devices.reference import run_model
    from ember.graph import Model

    model, feeds = _build(eo, Model, builder, inputs, args, kwargs, output_index)
    outs = run_model(model, feeds)
    for o, r in zip(outs, model.get_results()):  # inferred shapes must agree with computed ones
        ps = r.output(0).partial_shape
        assert ps.accepts(o.shape), f"inferred {ps} but computed {o.shape}"
        et = r.output(0).element_type
        assert o.dtype == et.dtype, f"inferred {et} but computed {o.dtype}"
    return outs


def run_openvino(builder: str, inputs: list[Any], *args: Any, output_index: int | None = None,
                 **kwargs: Any) -> list[np.ndarray]:
    ov = pytest.importorskip("openvino")
    import openvino.opset16 as oo

    model, feeds = _build(oo, ov.Model, builder, inputs, args, kwargs, output_index)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(feeds)
    return [np.asarray(res[o]) for o in compiled.outputs]


def compare_with_openvino(builder: str, inputs: list[Any], *args: Any, rtol: float = 1e-5,
                          atol: float = 1e-6, output_index: int | None = None, **kwargs: Any) -> None:
    ours = run_ember(builder, inputs, *args, output_index=output_index, **kwargs)
    theirs = run_openvino(builder, inputs, *args, output_index=output_index, **kwargs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape, f"shape {a.shape} != OpenVINO's {b.shape}"
        np.testing.assert_allclose(a.astype(np.float64) if a.dtype.kind != "b" else a,
                                   b.astype(np.float64) if b.dtype.kind != "b" else b,
                                   rtol=rtol, atol=atol, equal_nan=True)
