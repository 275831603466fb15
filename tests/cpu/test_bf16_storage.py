"""bf16 activations in memory (INFERENCE_PRECISION_HINT=bf16): the implicit GEMM reading X as
bf16 and storing Y as bf16 gives the very bits of the f32-in / f32-out kernel rounded (AVX512-BF16
and AMX), and networks of convolutions lowered with bf16 tensors between them stay within the bf16
tolerance of REFERENCE while f32 compiles keep no bf16 tensor at all."""

from __future__ import annotations

import numpy as np
import pytest

from ember.devices.cpu.kernels.conv import Conv2d, ConvGeometry
from ember.devices.cpu.kernels.gemm import Epilogue, IGemmCall, bf16_supported, pack_b, round_to_bf16, to_bf16_bits
from ember.devices.cpu.llvm.isa import host_isa
from ember.devices.cpu.runtime.memory import aligned_empty
from ember.errors import EmberError

pytestmark = pytest.mark.skipif(not bf16_supported(), reason="no AVX512_BF16 here")

LEVELS = ["avx512"] + (["amx"] if bf16_supported() and host_isa("amx").amx_bf16 else [])

# (h, w, cin, cout, k, stride): tails of vectors and tiles, one-chunk and many-chunk K
CASES = [(9, 11, 24, 40, 3, 1), (7, 7, 64, 33, 1, 1), (5, 6, 300, 70, 3, 1), (12, 10, 17, 16, 3, 2),
         (6, 6, 130, 96, 1, 2)]
EPILOGUES = [Epilogue(), Epilogue(0.0, 6.0), Epilogue(activation="hswish", affine=(1.5, -0.25)),
             Epilogue(activation="gelu_erf")]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_conv_bf16_in_and_out_are_the_f32_kernel_rounded(level: str, case: tuple) -> None:
    h, w, ci, co, k, st = case
    rng = np.random.default_rng(h * w + ci)
    geo = ConvGeometry(1, h, w, ci, co, k, k, (st, st), (1, 1), (k // 2, k // 2), (k // 2, k // 2), 1)
    wt = (rng.standard_normal((co, ci, k, k)) / np.sqrt(ci * k * k)).astype(np.float32)
    x = rng.standard_normal((1, h, w, ci)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    bias = rng.standard_normal(co).astype(np.float32)
    res = rng.standard_normal(geo.output_shape).astype(np.float32)
    x16 = aligned_empty(x.shape, np.uint16)
    x16[:] = to_bf16_bits(x)
    for epi in EPILOGUES:
        conv = Conv2d(geo, wt, epi, isa=host_isa(level), precision="bf16")
        want = conv(round_to_bf16(x), None, bias, res)  # f32 in memory: X rounded as it is packed
        got = aligned_empty(geo.output_shape)
        conv.bind(x16, got, bias, res).run()
        np.testing.assert_array_equal(got, want)
        if conv.y_bf16_ok():
            got16 = aligned_empty(geo.output_shape, np.uint16)
            conv.bind(x16, got16, bias, res).run()
            np.testing.assert_array_equal(got16, to_bf16_bits(want))
        else:
            assert level == "avx512" and ci > conv.packed.chunk


def test_bf16_output_needs_one_chunk_and_bf16_weights() -> None:
    many = pack_b(np.ones((2048, 32), np.float32), host_isa("avx512"), precision="bf16")
    with pytest.raises(EmberError, match="one chunk"):
        IGemmCall(many, m=4, x_geometry={}, ldx=2048, ldy=32, y_bf16=True)
    with pytest.raises(EmberError, match="bf16"):
        IGemmCall(pack_b(np.ones((8, 32), np.float32)), m=4, x_geometry={}, ldx=8, ldy=32, x_bf16=True)
