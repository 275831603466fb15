"""FP32 GEMM kernel vs numpy (float64), every ISA level this CPU supports."""

import math
import threading
import time

import numpy as np
import pytest

from ember.devices.cpu.kernels.gemm import (
    TILES,
    Epilogue,
    Gemm,
    Precision,
    activation_reference,
    bf16_supported,
    gemm,
    pack_b,
    plan_blocks,
    round_to_bf16,
    to_bf16_bits,
)
from ember.devices.cpu.llvm.isa import host_isa, supported_levels
from ember.errors import EmberError

LEVELS = supported_levels()

# (M, K, N, epilogue, bias, residual, chunk)
CASES = [
    (1, 1, 1, "none", False, False, None),
    (1, 17, 3, "relu", True, False, None),
    (3, 1000, 17, "none", True, False, None),
    (17, 3, 1000, "relu", True, False, None),
    (1000, 17, 3, "clamp", True, True, None),
    (17, 17, 17, "none", False, True, None),
    (14, 32, 32, "relu", True, False, None),
    (15, 33, 31, "clamp", False, False, 7),       # K split into chunks: accumulate path
    (29, 200, 65, "relu", True, True, 64),
    (1, 1000, 1000, "none", True, False, None),
    (100, 64, 256, "relu", True, False, None),
    (5, 0, 7, "relu", True, False, None),         # K == 0: the output is the epilogue of the bias
]

EPILOGUES = {"none": Epilogue(), "relu": Epilogue.relu(), "clamp": Epilogue.clamp(-0.5, 0.75)}


def reference(a, b, bias, residual, epi):
    y = a.astype(np.float64) @ b.astype(np.float64)
    if bias is not None:
        y = y + bias
    if residual is not None:
        y = y + residual
    return epi.apply(y)


def tolerance(k):
    return 1e-5 * max(1.0, math.sqrt(k)) * 4


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-{c[3]}")
@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_matches_numpy(level, case, threads):
    m, k, n, epi_name, has_bias, has_res, chunk = case
    rng = np.random.default_rng(m * 7919 + k * 31 + n)
    a = rng.standard_normal((m, k), np.float32)
    b = rng.standard_normal((k, n), np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if has_bias else None
    res = rng.standard_normal((m, n)).astype(np.float32) if has_res else None
    epi = EPILOGUES[epi_name]
    packed = pack_b(b, host_isa(level), chunk)
    c = np.full((m, n), np.nan, np.float32)
    Gemm(packed, m, epi, num_threads=threads)(a, c, bias, res)
    want = reference(a, b, bias, res, epi)
    np.testing.assert_allclose(c, want, rtol=tolerance(k), atol=tolerance(k))


def bf16_inputs(*arrays):
    """The inputs as the bf16 kernels see them: rounded to bf16 (by ml_dtypes, independently)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return [None if a is None else a.astype(ml_dtypes.bfloat16).astype(np.float64) for a in arrays]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-{c[3]}")
def test_gemm_bf16_matches_numpy(level, case):
    """bf16 products of bf16-rounded inputs, summed in f32: equal to exact math on the rounded
    inputs within f32 summation error, and within bf16 rounding of the unrounded product."""
    m, k, n, epi_name, has_bias, has_res, chunk = case
    isa = host_isa(level)
    rng = np.random.default_rng(m * 7919 + k * 31 + n)
    a = rng.standard_normal((m, k), np.float32)
    b = rng.standard_normal((k, n), np.float32)
    if not bf16_supported(isa):
        with pytest.raises(EmberError, match="AVX512_BF16"):
            pack_b(b, isa, precision="bf16")
        return
    bias = rng.standard_normal(n).astype(np.float32) if has_bias else None
    res = rng.standard_normal((m, n)).astype(np.float32) if has_res else None
    epi = EPILOGUES[epi_name]
    packed = pack_b(b, isa, None if chunk is None else chunk + chunk % 2, precision=Precision.BF16)
    for threads in (1, 2):
        c = np.full((m, n), np.nan, np.float32)
        Gemm(packed, m, epi, num_threads=threads)(a, c, bias, res)
        ar, br = bf16_inputs(a, b)
        np.testing.assert_allclose(c, reference(ar, br, bias, res, epi), rtol=tolerance(k), atol=tolerance(k))
        # rounding each input to bf16 (unit roundoff 2**-8) moves a product by at most 2**-7 of it
        bound = (np.abs(a).astype(np.float64) @ np.abs(b)) * 2.0**-7 + tolerance(k)
        assert (np.abs(c - reference(a, b, bias, res, epi)) <= bound).all()


def test_bf16_rounding_matches_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    specials = np.array([0.0, -0.0, 1.0, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 1e-40, 1.00390625,
                         1.01171875, 1.0 + 2**-8 + 2**-20, 65504.0], np.float32)  # ties, overflow, denormal
    x = np.concatenate([specials, np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 1e3])
    want = x.astype(ml_dtypes.bfloat16)
    got = to_bf16_bits(x)
    ok = ~np.isnan(x)
    np.testing.assert_array_equal(got[ok], want.view(np.uint16)[ok])
    assert np.isnan(round_to_bf16(x)[~ok]).all()
    np.testing.assert_array_equal(round_to_bf16(x)[ok], want.astype(np.float32)[ok])


@pytest.mark.skipif(not bf16_supported(), reason="no AVX512_BF16")
def test_bf16_arguments():
    b = np.ones((40, 5), np.float32)
    with pytest.raises(EmberError, match="even"):
        pack_b(b, chunk=7, precision="bf16")
    with pytest.raises(EmberError, match="precision"):
        pack_b(b, precision="fp8")
    with pytest.raises(EmberError, match="packed for bf16"):
        gemm(np.ones((2, 40), np.float32), pack_b(b, precision="bf16"), precision="f32")
    c = gemm(np.ones((2, 40), np.float32), b, precision="BF16")
    np.testing.assert_array_equal(c, np.full((2, 5), 40.0, np.float32))


@pytest.mark.skipif(not bf16_supported(), reason="no AVX512_BF16")
def test_bf16_nan_and_inf_propagate():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((20, 16), np.float32)
    b = rng.standard_normal((16, 40), np.float32)
    a[3, 5] = np.nan
    a[7, 2] = np.inf
    c = gemm(a, b, precision="bf16")
    want = reference(*bf16_inputs(a, b), None, None, Epilogue())
    np.testing.assert_array_equal(np.isnan(c), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(c), np.isinf(want))


@pytest.mark.parametrize("level", LEVELS)
def test_strided_rows(level):
    """A, C and the residual may be row slices of wider buffers (lda, ldc, ldr)."""
    rng = np.random.default_rng(3)
    m, k, n = 37, 45, 50
    abig = rng.standard_normal((m, k + 19), np.float32)
    cbig = np.full((m, n + 13), 7.0, np.float32)
    rbig = rng.standard_normal((m, n + 5)).astype(np.float32)
    b = rng.standard_normal((k, n), np.float32)
    a, c, r = abig[:, 3:3 + k], cbig[:, 6:6 + n], rbig[:, :n]
    Gemm(pack_b(b, host_isa(level)), m, Epilogue.relu())(a, c, None, r)
    np.testing.assert_allclose(c, reference(a, b, None, r, Epilogue.relu()), rtol=1e-4, atol=1e-4)
    assert (cbig[:, :6] == 7).all() and (cbig[:, 6 + n:] == 7).all()


@pytest.mark.parametrize("level", LEVELS)
def test_nan_and_inf_propagate(level):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((20, 16), np.float32)
    b = rng.standard_normal((16, 40), np.float32)
    a[3, 5] = np.nan
    a[7, 2] = np.inf
    c = gemm(a, pack_b(b, host_isa(level)), epilogue=Epilogue.relu())
    want = reference(a, b, None, None, Epilogue.relu())
    np.testing.assert_array_equal(np.isnan(c), np.isnan(want))
    assert np.isnan(c[3]).all()  # ReLU keeps NaN, as numpy's maximum does
    ok = ~np.isnan(want)
    np.testing.assert_allclose(c[ok], want[ok], rtol=1e-4, atol=1e-4)


def test_empty_m():
    b = np.ones((4, 5), np.float32)
    c = gemm(np.zeros((0, 4), np.float32), b)
    assert c.shape == (0, 5)


def test_bad_arguments():
    packed = pack_b(np.ones((4, 5), np.float32))
    g = Gemm(packed, 3)
    with pytest.raises(EmberError):
        g(np.ones((3, 5), np.float32), np.empty((3, 5), np.float32))
    with pytest.raises(EmberError):
        g(np.ones((3, 4), np.float64), np.empty((3, 5), np.float32))
    with pytest.raises(EmberError):
        g(np.ones((3, 4), np.float32), np.empty((3, 5), np.float32), bias=np.ones(4, np.float32))
    with pytest.raises(EmberError):
        pack_b(np.ones(3, np.float32))


def test_schedule_covers_work():
    """Blocks chosen by the scheduler tile the whole output, for any thread count."""
    tile = TILES["avx512"]
    for m, n, k, threads in [(3136, 256, 64, 2), (49, 512, 4608, 2), (128, 1536, 384, 2), (1, 3, 5, 4),
                             (1000, 17, 3, 1)]:
        tm, tn, gm, gn = plan_blocks(m, n, k, 1, 1, tile, threads)
        assert gm * tm * tile.mr >= m and (gm - 1) * tm * tile.mr < m
        npan = -(-n // tile.nr)
        assert gn * tn >= npan and (gn - 1) * tn < npan


def _plan_blocks_by_brute_force(m, n, k_per_tap, taps, groups, tile, threads, max_tm=8):
    """The schedule model of ``plan_blocks`` spelled out block by block (each block's own
    ``block_cost``), with a heap."""
    import heapq

    from ember.devices.cpu.kernels import gemm as g

    ntm, ntn = max(1, -(-m // tile.mr)), max(1, -(-n // tile.nr))
    max_tm = max(1, min(max_tm, ntm, 4096 // max(taps, 1)))
    kdepth = k_per_tap * taps
    if threads <= 1 or -(-ntm // max_tm) >= 4 * threads:
        return max_tm, ntn, -(-ntm // max_tm), 1
    if n * kdepth * 4 > g.B_REREAD_BYTES:  # large B: up to A_BLOCK_BYTES of rows per task
        max_tm = max(max_tm, min(ntm, g.A_BLOCK_BYTES // (tile.mr * kdepth * 4), 4096 // taps))
    best = None
    for tm in range(1, max_tm + 1):
        gm = -(-ntm // tm)
        for gn in range(1, min(ntn, 8 * threads) + 1):
            tn = -(-ntn // gn)
            if -(-ntn // tn) != gn:
                continue
            costs = []
            for im in range(gm):
                rows = min(m, (im + 1) * tm * tile.mr) - im * tm * tile.mr
                for jn in range(gn):
                    cols = min(ntn, (jn + 1) * tn) - jn * tn
                    costs.append(g.block_cost(rows, cols, tile.nr, kdepth))
            heap = [0.0] * threads
            for c in costs * groups:
                heapq.heappush(heap, heapq.heappop(heap) + c)
            key = (round(max(heap) * 1e8), gm * gn)
            if best is None or key < best[0]:
                best = (key, (tm, tn, gm, gn))
    return best[1]


def test_schedule_equals_the_block_by_block_model():
    """The planner's shortcuts (two block sizes per axis, no heap at two threads) choose what the
    model computed block by block chooses, over GEMM geometries of every kind."""
    rng = np.random.default_rng(7)
    for tile in {TILES["avx512"], TILES["avx2"]}:
        for _ in range(150):
            m = int(rng.choice([1, 5, 13, 14, 29, 64, 97, 128, 200, 784]))
            n = int(rng.choice([1, 3, 16, 64, 100, 384, 1000, 1536]))
            k = int(rng.choice([1, 3, 32, 64, 384, 1152]))
            taps, groups = int(rng.choice([1, 9])), int(rng.choice([1, 2, 12]))
            threads = int(rng.choice([2, 3, 4]))
            args = (m, n, k, taps, groups, tile, threads)
            assert plan_blocks.__wrapped__(*args) == _plan_blocks_by_brute_force(*args), args


def test_kernel_call_releases_gil():
    """While a long GEMM runs in one Python thread, another Python thread keeps running."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2000, 1024), np.float32)
    b = pack_b(rng.standard_normal((1024, 1024), np.float32))
    c = np.empty((2000, 1024), np.float32)
    g = Gemm(b, 2000, num_threads=1)
    g(a, c)  # warm up
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    calls = []
    for _ in range(5):
        t0 = time.perf_counter()
        g(a, c)
        calls.append((t0, time.perf_counter()))
    stop.set()
    t.join()
    # ticks strictly inside one call: none can happen if the call holds the GIL; a busy machine
    # only thins them out (no rate is assumed, so load cannot fail the test)
    inside = [x for x in ticks if any(s < x < e for s, e in calls)]
    assert len(inside) >= 2, (len(ticks), calls)


@pytest.mark.parametrize("level", supported_levels())
def test_gelu_erf_epilogue_extremes(level: str) -> None:
    """The epilogue's own GELU (erf) against math.erf on [-12, 12], infinities, NaN, signed
    zeros and tiny values (fed through the residual so that no product mixes them)."""
    x = np.concatenate([np.linspace(-12, 12, 4001, dtype=np.float32),
                        np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-30, 3e-5, -3e-5, 88, -88, 1e30, -1e30],
                                 np.float32)])
    n = 32
    x = np.resize(x, -(-x.size // n) * n).reshape(-1, n)
    isa = host_isa(level)
    y = gemm(np.zeros_like(x), pack_b(np.eye(n, dtype=np.float32), isa), residual=x,
             epilogue=Epilogue(activation="gelu_erf"), isa=isa, num_threads=1)
    want = activation_reference("gelu_erf", x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("text, want", [("", 1 << 20), ("0", 0), ("65536", 65536), ("-5", 0), ("lots", 1 << 20)])
def test_a_block_bytes_knob(text: str, want: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``EMBER_GEMM_A_BLOCK_BYTES``: a byte count (negative: 0); anything else keeps the default
    instead of failing the import."""
    from ember.devices.cpu.kernels import gemm as g

    monkeypatch.setenv("EMBER_GEMM_A_BLOCK_BYTES", text)
    assert g._a_block_bytes() == want
