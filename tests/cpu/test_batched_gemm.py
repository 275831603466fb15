"""Batched GEMM of two runtime tensors (MatMul) vs numpy's matmul in float64, every ISA level."""

import math

import numpy as np
import pytest

from ember.devices.cpu.kernels.batched_gemm import BatchedGemm, batched_matmul, matmul_shapes
from ember.devices.cpu.kernels.gemm import Epilogue, bf16_supported
from ember.devices.cpu.llvm.isa import host_isa, supported_levels
from ember.errors import EmberError

LEVELS = supported_levels()

# (shape_a, shape_b, transpose_a, transpose_b, residual shape or None, bias, alpha, epilogue)
CASES = [
    ((1, 12, 128, 32), (1, 12, 32, 128), False, False, None, False, 1.0, "none"),    # attention Q.K^T, K^T given
    ((1, 12, 128, 32), (1, 12, 128, 32), False, True, (1, 1, 1, 128), False, 0.17677669, "none"),  # scale + mask
    ((1, 12, 128, 128), (1, 12, 128, 32), False, False, None, False, 1.0, "none"),  # attention P.V
    ((1, 1), (1, 1), False, False, None, False, 1.0, "none"),
    ((3, 17), (17, 3), False, False, None, True, 1.0, "relu"),
    ((17, 1), (1, 17), False, False, None, False, 1.0, "none"),                     # K = 1
    ((17, 3), (17, 1), True, False, None, False, 1.0, "none"),                      # A transposed, N = 1
    ((1, 1000), (3, 1000), False, True, None, True, 1.0, "none"),                   # M = 1, B transposed
    ((17, 33), (40, 17), True, True, None, False, 1.0, "clamp"),                    # both transposed
    ((2, 1, 3, 17), (4, 17, 5), False, False, (4, 3, 5), False, 1.0, "none"),       # batch broadcasting
    ((5, 3, 17), (17, 3), False, False, None, False, 2.0, "none"),                  # B shared by the batch
    ((1, 17), (6, 17, 2), False, False, (6, 1, 2), True, 1.0, "relu"),              # A shared by the batch
    ((17,), (3, 17, 2), False, False, None, False, 1.0, "none"),                    # 1-D A
    ((2, 5, 17), (17,), False, False, (2, 5), False, 1.0, "none"),                  # 1-D B
    ((17,), (17,), True, True, None, False, 1.0, "none"),                           # dot product
    ((2, 3, 1100), (2, 1100, 37), False, False, None, True, 1.0, "relu"),           # K chunks: accumulate
    ((1100, 3), (37, 1100), True, True, (3, 37), False, 0.5, "none"),               # K chunks, transposed
    ((3, 29, 45), (3, 45, 70), False, False, (29, 70), True, 1.0, "clamp"),
    ((2, 0, 3), (3, 4), False, False, None, False, 1.0, "none"),                    # M = 0
    ((3, 0), (0, 4), False, False, (3, 4), True, 1.0, "relu"),                      # K = 0: bias + residual
    ((0, 3, 4), (4, 2), False, False, None, False, 1.0, "none"),                    # empty batch
]

EPILOGUES = {"none": Epilogue(), "relu": Epilogue.relu(), "clamp": Epilogue.clamp(-0.5, 0.75)}


def reference(a, b, ta, tb, bias, residual, alpha, epi):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if ta and a.ndim > 1:
        a = np.swapaxes(a, -1, -2)
    if tb and b.ndim > 1:
        b = np.swapaxes(b, -1, -2)
    y = alpha * np.matmul(a, b)
    if bias is not None:
        y = y + bias
    if residual is not None:
        y = y + residual
    return epi.apply(y)


def case_id(c):
    return f"{'x'.join(map(str, c[0]))}{'T' * c[2]}-{'x'.join(map(str, c[1]))}{'T' * c[3]}"


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_batched_gemm_matches_numpy(level, case):
    sa, sb, ta, tb, rshape, has_bias, alpha, epi_name = case
    rng = np.random.default_rng(sum(sa) * 31 + sum(sb))
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    out_shape = matmul_shapes(sa, sb, ta, tb).output
    n = 1 if len(sb) == 1 else (sb[-2] if tb else sb[-1])
    bias = rng.standard_normal(n).astype(np.float32) if has_bias else None
    res = rng.standard_normal(rshape).astype(np.float32) if rshape else None
    epi = EPILOGUES[epi_name]
    want = reference(a, b, ta, tb, bias, res, alpha, epi)
    assert want.shape == out_shape
    k = sa[0] if len(sa) == 1 else sa[-2] if ta else sa[-1]
    tol = 4e-5 * max(1.0, math.sqrt(k))
    for threads in (1, 2):
        op = BatchedGemm(sa, sb, ta, tb, threads, epi, alpha, host_isa(level))
        c = np.full(out_shape, np.nan, np.float32)
        assert op(a, b, c, bias, res) is c
        np.testing.assert_allclose(c, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_batched_gemm_bf16(level, case):
    """bf16: exact products of the bf16-rounded operands (rounded by ml_dtypes), f32 sums."""
    sa, sb, ta, tb, rshape, has_bias, alpha, epi_name = case
    isa = host_isa(level)
    if not bf16_supported(isa):
        with pytest.raises(EmberError, match="AVX512_BF16"):
            BatchedGemm(sa, sb, ta, tb, isa=isa, precision="bf16")
        return
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(sum(sa) * 31 + sum(sb))
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    n = 1 if len(sb) == 1 else (sb[-2] if tb else sb[-1])
    bias = rng.standard_normal(n).astype(np.float32) if has_bias else None
    res = rng.standard_normal(rshape).astype(np.float32) if rshape else None
    epi = EPILOGUES[epi_name]
    ar, br = (t.astype(ml_dtypes.bfloat16).astype(np.float32) for t in (a, b))
    want = reference(ar, br, ta, tb, bias, res, alpha, epi)
    k = sa[0] if len(sa) == 1 else sa[-2] if ta else sa[-1]
    tol = 4e-5 * max(1.0, math.sqrt(k))
    for threads in (1, 2):
        c = BatchedGemm(sa, sb, ta, tb, threads, epi, alpha, isa, "bf16")(a, b, None, bias, res)
        np.testing.assert_allclose(c, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("level", LEVELS)
def test_attention_heads_as_strided_views(level):
    """Q, K, V read as head views of one [seq, 3 * hidden] projection, the context written
    into head slices of a [seq, hidden] buffer: no copies, no transposes."""
    rng = np.random.default_rng(7)
    seq, heads, d = 37, 3, 20
    hidden = heads * d
    qkv = rng.standard_normal((seq, 3 * hidden)).astype(np.float32)
    q, k, v = (qkv[:, i * hidden:(i + 1) * hidden].reshape(seq, heads, d).transpose(1, 0, 2) for i in range(3))
    mask = np.where(rng.random((1, seq)) < 0.2, -1e4, 0).astype(np.float32)
    isa = host_isa(level)
    scores = BatchedGemm(q.shape, k.shape, transpose_b=True, alpha=1 / math.sqrt(d), isa=isa)(q, k, residual=mask)
    want = reference(q, k, False, True, None, mask, 1 / math.sqrt(d), Epilogue())
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-4)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ctx = np.full((seq, hidden + 5), 9.0, np.float32)
    out = ctx[:, :hidden].reshape(seq, heads, d).transpose(1, 0, 2)
    BatchedGemm(p.shape, v.shape, isa=isa)(p, v, out)
    np.testing.assert_allclose(out, reference(p, v, False, False, None, None, 1.0, Epilogue()), rtol=1e-4,
                               atol=1e-4)
    assert (ctx[:, hidden:] == 9).all()


@pytest.mark.parametrize("level", LEVELS)
def test_nan_and_inf_propagate(level):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 20, 16)).astype(np.float32)
    b = rng.standard_normal((2, 16, 40)).astype(np.float32)
    a[1, 3, 5] = np.nan
    b[0, 2, 7] = np.inf
    c = batched_matmul(a, b, epilogue=Epilogue.relu(), isa=host_isa(level))
    want = reference(a, b, False, False, None, None, 1.0, Epilogue.relu())
    np.testing.assert_array_equal(np.isnan(c), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(c[ok], want[ok], rtol=1e-4, atol=1e-4)


def test_bind_runs_repeatedly_on_new_data():
    a = np.ones((4, 6, 8), np.float32)
    b = np.ones((4, 8, 5), np.float32)
    c = np.empty((4, 6, 5), np.float32)
    bound = BatchedGemm(a.shape, b.shape).bind(a, b, c)
    bound.run()
    assert (c == 8).all()
    a[...] = 2
    bound.run()
    assert (c == 16).all()


def test_bad_arguments():
    with pytest.raises(EmberError, match="inner dimensions"):
        BatchedGemm((3, 4), (5, 6))
    with pytest.raises(EmberError, match="broadcast"):
        BatchedGemm((2, 3, 4), (3, 4, 5))
    op = BatchedGemm((2, 3, 4), (4, 5))
    a, b = np.ones((2, 3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(EmberError, match="output"):
        op(a, b, np.empty((2, 3, 6), np.float32))
    with pytest.raises(EmberError, match="shape"):
        op(np.ones((2, 3, 5), np.float32), b)
    with pytest.raises(EmberError, match="float32"):
        op(a.astype(np.float64), b)
    with pytest.raises(EmberError, match="contiguous along K or N"):
        op(a, np.ones((8, 10), np.float32)[::2, ::2])
    with pytest.raises(EmberError, match="contiguous along M or K"):
        op(np.ones((2, 6, 8), np.float32)[:, ::2, ::2], b)
    with pytest.raises(EmberError, match="residual"):
        op(a, b, residual=np.ones((2, 3, 1), np.float32))
    with pytest.raises(EmberError, match="residual"):
        op(a, b, residual=np.ones((4, 5), np.float32))
