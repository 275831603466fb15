"""The f32 micro-kernels' activation and affine applied to the accumulators before the single
store (``gemm.REGISTER_ACTIVATIONS``, ``gemm.ACT_IN_REGISTERS``): bit for bit the pass over the
stored tile they replace (the knob off), except HSwish and HSigmoid's division by 6, a product by
RN(1/6) in registers (within an ulp; bit for bit a float32 numpy twin of that formula), and
within tolerance of the numpy epilogue, on every ISA level the host runs: K 3..512, N and M
tails, several K chunks, the k-paired kernels, every activation (those not in registers still
take the pass), clamp, affine, a residual, one and two threads."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ember.devices.cpu.kernels import gemm as G
from ember.devices.cpu.llvm.isa import host_isa, supported_levels

# (m, k, n): 1x1 layers with few input channels (PP-OCR rec's 16-32), a stem-like K = 3, the
# 240/480-channel ones, one row, N tails inside the first and the second vector, M tails
SHAPES = [(37, 3, 70), (14, 16, 16), (29, 32, 24), (1, 24, 33), (45, 96, 40), (15, 240, 480), (20, 512, 45)]
EPILOGUES = [G.Epilogue(*lohi, activation=act, affine=aff)
             for act, aff, lohi in itertools.product(G.EPILOGUE_ACTIVATIONS, [None, (0.7, -0.2)],
                                                     [(-math.inf, math.inf), (-1.0, 2.0)])]


def _both(packed: G.PackedWeights, m: int, epi: G.Epilogue, a: np.ndarray, bias: np.ndarray,
          res: np.ndarray | None, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """The GEMM with the activation in registers, then as the pass over the stored tile."""
    out = []
    old = G.ACT_IN_REGISTERS
    try:
        for knob in (True, False):
            G.ACT_IN_REGISTERS = knob
            c = np.full((m, packed.cout), np.nan, np.float32)
            out.append(G.Gemm(packed, m, epi, num_threads=threads)(a, c, bias, res))
    finally:
        G.ACT_IN_REGISTERS = old
    return out[0], out[1]


def _data(rng: np.random.Generator, m: int, k: int, n: int) -> tuple[np.ndarray, ...]:
    a = (rng.standard_normal((m, k)) * 2).astype(np.float32)
    b = (rng.standard_normal((k, n)) * 2 / math.sqrt(k)).astype(np.float32)
    return a, b, rng.standard_normal(n).astype(np.float32), rng.standard_normal((m, n)).astype(np.float32)


def _check(regs: np.ndarray, rows: np.ndarray, want: np.ndarray, what: str, epi: G.Epilogue) -> None:
    if epi.activation in ("hswish", "hsigmoid"):  # x h / 6 against x h RN(1/6): an ulp, then the affine
        scale = max(1.0, float(np.abs(rows).max()))
        np.testing.assert_allclose(regs, rows, rtol=3e-7, atol=3e-7 * scale, err_msg=what)
    else:
        assert np.array_equal(regs.view(np.uint32), rows.view(np.uint32)), f"{what}: not the bits of the rows pass"
    np.testing.assert_allclose(regs, want, rtol=3e-5, atol=3e-5, err_msg=what)


@pytest.mark.parametrize("level", supported_levels())
def test_registers_give_the_bits_of_the_rows_pass(level: str) -> None:
    isa = host_isa(level)
    rng = np.random.default_rng(20)
    for (m, k, n), threads in itertools.product(SHAPES, (1, 2)):
        a, b, bias, res = _data(rng, m, k, n)
        packed = G.pack_b(b, isa=isa)
        exact = a.astype(np.float64) @ b + bias
        for i, epi in enumerate(EPILOGUES):
            r = res if i % 2 else None  # a residual with every other epilogue
            regs, rows = _both(packed, m, epi, a, bias, r, threads)
            want = epi.apply((exact + (0 if r is None else r)).astype(np.float32))
            _check(regs, rows, want, f"{level} {m}x{k}x{n} {epi} residual={r is not None} threads={threads}",
                   epi)


@pytest.mark.parametrize("level", supported_levels())
def test_registers_after_several_k_chunks(level: str) -> None:
    """The activation only on the last chunk's store (the earlier chunks accumulate in C)."""
    isa = host_isa(level)
    rng = np.random.default_rng(21)
    m, k, n = 33, 100, 50
    a, b, bias, res = _data(rng, m, k, n)
    packed = G.pack_weights(b[None, None], isa, chunk=32)
    assert packed.chunk < k
    exact = a.astype(np.float64) @ b + bias + res
    for act in ("hswish", "hsigmoid", "swish"):
        epi = G.Epilogue(activation=act, affine=(1.5, 0.25))
        regs, rows = _both(packed, m, epi, a, bias, res, 2)
        _check(regs, rows, epi.apply(exact.astype(np.float32)), f"{level} chunked {act}", epi)


def test_registers_in_the_k_paired_kernels() -> None:
    """Weights packed with a k-paired last vector (AVX-512: N tails of at most 8 columns)."""
    if "avx512" not in supported_levels():
        pytest.skip("k-paired micro-kernels are AVX-512 only")
    isa = host_isa("avx512")
    rng = np.random.default_rng(22)
    for m, k, n in [(40, 16, 24), (27, 33, 8), (13, 120, 40)]:
        a, b, bias, res = _data(rng, m, k, n)
        packed = G.pack_weights(b[None, None], isa, pair_tail=True)
        assert packed.pair_tail
        exact = a.astype(np.float64) @ b + bias
        for epi in [G.Epilogue(activation="hswish", affine=(0.7, -0.2)), G.Epilogue(-1.0, 2.0, "hsigmoid"),
                    G.Epilogue(affine=(2.0, 1.0)), G.Epilogue(activation="gelu_erf")]:
            for r, threads in [(None, 1), (res, 2)]:
                regs, rows = _both(packed, m, epi, a, bias, r, threads)
                want = epi.apply((exact + (0 if r is None else r)).astype(np.float32))
                _check(regs, rows, want, f"pairs {m}x{k}x{n} {epi} threads={threads}", epi)


@pytest.mark.parametrize("level", supported_levels())
@pytest.mark.parametrize("act", ["hswish", "hsigmoid"])
def test_hard_activations_are_the_product_by_a_sixth(level: str, act: str) -> None:
    """Bit for bit ``x * clamp(x + 3, 0, 6) * RN(1/6)`` in float32 (numpy), over whole binades of
    x, random bit patterns, zeros, subnormals, infinities and NaN (K = 1, B = 1: the
    accumulator is 0 + x)."""
    rng = np.random.default_rng(23)
    mant = np.arange(0, 1 << 23, 7, dtype=np.uint32)
    xs = [((np.uint32(127 + e) << np.uint32(23)) | mant).view(np.float32) * s for e in (-2, 0, 1) for s in (1, -1)]
    xs.append(rng.integers(0, 1 << 32, 1 << 18, dtype=np.uint64).astype(np.uint32).view(np.float32))
    xs.append(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-38, -1e-38, 3e38, -3e38, -3.0, 3.0,
                        -2.9999998, 2.9999998, 6.0], np.float32))
    x = np.concatenate(xs).reshape(-1, 1)
    packed = G.pack_b(np.ones((1, 1), np.float32), isa=host_isa(level))
    y = G.Gemm(packed, x.shape[0], G.Epilogue(activation=act), num_threads=2)(x, np.empty_like(x))
    with np.errstate(invalid="ignore", over="ignore"):
        acc = np.float32(0) + x  # the accumulator starts at +0: -0 becomes +0
        h = np.minimum(np.maximum(acc + np.float32(3), np.float32(0)), np.float32(6))
        want = (acc * h if act == "hswish" else h) * np.float32(G.SIXTH)
    same = (y.view(np.uint32) == want.view(np.uint32)) | (np.isnan(y) & np.isnan(want))
    assert same.all(), f"{level} {act}: x {x[~same][:4]} gave {y[~same][:4]}, want {want[~same][:4]}"


def test_register_activations_are_known() -> None:
    assert set(G.REGISTER_ACTIVATIONS) <= set(G.EPILOGUE_ACTIVATIONS) - {""}
