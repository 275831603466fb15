"""A bf16 stem on AMX tiles as one tap per kernel row (``kernels/stem_rows.py``): the padded bf16
copy bit for bit against numpy, the convolution against the exact product of the bf16-rounded
operands and against the merged-tap kernel, and ResNet-50's entry lowered that way against
REFERENCE and against the merged stem."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.kernels import stem_rows
from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry, pack_conv_weights
from ember.devices.cpu.kernels.gemm import Epilogue, round_to_bf16, to_bf16_bits
from ember.devices.cpu.llvm import isa as isa_mod
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.graph.model import Model

pytestmark = pytest.mark.skipif(not isa_mod.amx_supported() or not isa_mod.host_isa("amx").amx_bf16,
                                reason="no AMX bf16 tiles here")

# (batch, h, w, cin, cout, k, stride, pads_begin, pads_end): ResNet-50's 7x7/2 (row wraps at
# 15 wide), MobileNetV2's 3x3/2, a 5x5 at unit stride over 2 images, 4 and 1 channels,
# asymmetric padding, a tail of output channels
CASES = [
    (1, 30, 30, 3, 64, 7, 2, (3, 3), (3, 3)),
    (1, 17, 18, 3, 32, 3, 2, (1, 1), (1, 1)),
    (2, 19, 21, 3, 40, 5, 1, (2, 2), (2, 2)),
    (1, 10, 13, 4, 16, 3, 2, (0, 0), (0, 0)),
    (1, 12, 9, 1, 24, 5, 1, (2, 1), (1, 3)),
    (1, 23, 16, 3, 70, 7, 2, (3, 2), (2, 3)),
]


def _numpy_conv(x: np.ndarray, w: np.ndarray, bias: np.ndarray, k: int, s: int, pb: tuple, pe: tuple) -> np.ndarray:
    """float64 NHWC convolution of the bf16-rounded operands."""
    xd = np.pad(round_to_bf16(x).astype(np.float64), ((0, 0), (pb[0], pe[0]), (pb[1], pe[1]), (0, 0)))
    wd = round_to_bf16(w).astype(np.float64)
    n, hp, wp, _ = xd.shape
    oh, ow = (hp - k) // s + 1, (wp - k) // s + 1
    y = np.zeros((n, oh, ow, w.shape[0]))
    for ky in range(k):
        for kx in range(k):
            patch = xd[:, ky:ky + s * (oh - 1) + 1:s, kx:kx + s * (ow - 1) + 1:s, :]
            y += patch @ wd[:, :, ky, kx].T
    return y + bias


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[3]}to{c[4]}-k{c[5]}s{c[6]}")
def test_row_taps_match_numpy_and_the_merged_stem(case: tuple, threads: int) -> None:
    """The padded copy from NHWC and from NCHW planes, then the row-tap convolution."""
    n, h, w, c, o, k, s, pb, pe = case
    isa = isa_mod.host_isa("amx")
    rng = np.random.default_rng(h * w + o)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = (rng.standard_normal((o, c, k, k)) / k).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    g = ConvGeometry(n, h, w, c, o, k, k, (s, s), (1, 1), pb, pe)
    assert stem_rows.row_taps_ok(c, k, (1, 1), 1)
    wp = stem_rows.padded_width(w, g.ow, k, s, pb[1])
    xp = aligned_empty((n, h, wp, stem_rows.PIXEL), dtype=np.uint16)
    xp[:] = 12345  # every element written: zeros included
    want_xp = np.zeros_like(xp)
    want_xp[:, :, pb[1]:pb[1] + w, :c] = to_bf16_bits(x)
    planes = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    for src, nchw in ((planes, True), (x, False)):
        xp[:] = 12345
        stem_rows.to_padded_bf16(src, xp, pb[1], threads, isa, nchw).run()
        np.testing.assert_array_equal(xp, want_xp)

    packed = pack_conv_weights(stem_rows.row_tap_weights(wt), 1, isa, "bf16", merge_taps=False)
    epi = Epilogue.clamp(-1.0, 2.0)
    y = aligned_empty(g.output_shape)
    y[:] = np.nan
    call = stem_rows.row_tap_call(packed, n, h, g.oh, g.ow, wp, k, (s, s), 1, pb[0], o, epi, threads, False)
    call.bind(xp.ctypes.data, y.ctypes.data, bias.ctypes.data, keep=(bias,)).run()
    want = np.clip(_numpy_conv(x, wt, bias, k, s, pb, pe), -1.0, 2.0)
    tol = 2e-6 * np.sqrt(c * k * k) * max(1.0, np.abs(want).max())
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=tol)
    merged = Conv2d(g, wt, epi, num_threads=threads, isa=isa, precision="bf16")(x, None, bias)
    np.testing.assert_allclose(y, merged, rtol=1e-5, atol=tol)
    # bf16 out: the f32 result rounded (the same epilogue)
    y16 = aligned_empty(g.output_shape, dtype=np.uint16)
    call16 = stem_rows.row_tap_call(packed, n, h, g.oh, g.ow, wp, k, (s, s), 1, pb[0], o, epi, threads, True)
    call16.bind(xp.ctypes.data, y16.ctypes.data, bias.ctypes.data, keep=(bias,)).run()
    np.testing.assert_array_equal(y16, to_bf16_bits(y))


def test_row_taps_only_for_few_channels_and_short_rows() -> None:
    assert not stem_rows.row_taps_ok(5, 3, (1, 1), 1)
    assert not stem_rows.row_taps_ok(3, 9, (1, 1), 1)
    assert not stem_rows.row_taps_ok(3, 3, (1, 2), 1)
    assert not stem_rows.row_taps_ok(3, 3, (1, 1), 3)
    assert stem_rows.row_taps_ok(3, 7, (2, 1), 1)


def resnet_entry(hw: int = 46) -> Model:
    """A 7x7/2 stem -> bias -> ReLU -> max pool 3x3/2 -> a 1x1 convolution."""
    rng = np.random.default_rng(5)
    x = ops.parameter([1, 3, hw, hw], np.float32, name="x")
    y = ops.convolution(x, (rng.standard_normal((64, 3, 7, 7)) / 7).astype(np.float32), [2, 2], [3, 3], [3, 3],
                        [1, 1])
    y = ops.relu(ops.add(y, rng.standard_normal((1, 64, 1, 1)).astype(np.float32)))
    p = ops.max_pool(y, [2, 2], [1, 1], [1, 1], [1, 1], [3, 3]).output(0)
    z = ops.convolution(p, (rng.standard_normal((32, 64, 1, 1)) / 8).astype(np.float32), [1, 1], [0, 0], [0, 0],
                        [1, 1])
    return Model([z], [x], "resnet_entry")


@pytest.mark.parametrize("threads", ["1", "2"])
def test_resnet_entry_lowered_as_row_taps(threads: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = resnet_entry()
    x = np.random.default_rng(2).standard_normal((1, 3, 46, 46)).astype(np.float32)
    cfg = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads}
    cm = ember.Core().compile_model(model, "CPU", cfg)
    names = [t.name for t in cm._executable.program.tensors]
    assert any(name.endswith("/rows") for name in names)  # the padded copy: row taps were used
    assert not cm._executable.program.stats["fallbacks"]
    monkeypatch.setattr(stem_rows, "ENABLED", False)
    merged = ember.Core().compile_model(model, "CPU", cfg)
    assert not any(t.name.endswith("/rows") for t in merged._executable.program.tensors)
    ref = ember.Core().compile_model(model, "REFERENCE")([x])[0]
    got, old = cm([x])[0], merged([x])[0]
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() <= 0.05 * scale
    # the same products in another order: the stem's bf16 output may differ by one rounding
    assert np.abs(got - old).max() <= 0.02 * scale
    f32 = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})
    assert not any(t.name.endswith("/rows") for t in f32._executable.program.tensors)
