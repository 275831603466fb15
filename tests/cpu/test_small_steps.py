"""Plan steps that run on one thread at two: a small model input's NCHW -> NHWC reorder (the
caller just wrote it) and small depthwise layers (``depthwise.spec_threads``); larger ones keep
both threads. Outputs against REFERENCE."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.graph.model import Model


def _model(c: int, hw: int, dw_channels: int) -> Model:
    rng = np.random.default_rng(hw)
    x = ops.parameter([1, c, hw, hw], np.float32, name="x")
    w = (rng.standard_normal((dw_channels, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    y = ops.clamp(ops.convolution(x, w, [1, 1], [0, 0], [0, 0], [1, 1]), 0.0, 6.0)
    wd = (rng.standard_normal((dw_channels, 1, 1, 3, 3)) / 3).astype(np.float32)
    y = ops.group_convolution(y, wd, [1, 1], [1, 1], [1, 1], [1, 1])
    return Model([y], [x], "small-steps")


def _step_threads(cm) -> dict[str, int]:
    """Each native step's op type -> its thread count (the bound plan's table, as layers.py --steps)."""
    inst = next(reversed(cm._executable._instances.values()))
    out = {}
    for op, span in inst.op_spans:
        if isinstance(span, tuple) and span[1]:
            out[op.type_name] = int(inst.table[span[0], 3])
    return out


@pytest.mark.parametrize("hw,channels,serial_reorder,serial_dw", [
    (7, 960, True, True),        # a 7x7x960 depthwise layer: ~12 us, no faster on two threads
    (56, 144, True, False),      # 56x56x144: the split pays
    (300, 16, False, False),     # a 1x3x300x300 input (1.08 MB): reordered on both threads
])
def test_small_steps_run_on_one_thread(hw: int, channels: int, serial_reorder: bool, serial_dw: bool,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.devices.cpu.kernels import depthwise

    monkeypatch.setattr(depthwise, "SERIAL_BELOW", 110_000)  # off by default (whole-network A/B): the mechanism
    model = _model(3, hw, channels)
    x = np.random.default_rng(1).standard_normal((1, 3, hw, hw)).astype(np.float32)
    core = ember.Core()
    cm = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 2})
    got = cm([x])[cm.output(0)]
    ref = core.compile_model(model, "REFERENCE")
    np.testing.assert_allclose(got, ref([x])[ref.output(0)], rtol=1e-4, atol=1e-4)
    threads = _step_threads(cm)
    assert threads["Reorder"] == (1 if serial_reorder else 2), threads
    if ember.devices.cpu.llvm.isa.host_isa().f32_lanes == 16:  # the threshold counts AVX-512 vectors
        assert threads["GroupConvolution"] == (1 if serial_dw else 2), threads
