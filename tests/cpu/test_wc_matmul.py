"""Weight-compressed MatMul on the CPU device: the kernel (codes kept 8/4 bits, decompressed in
the inner loop) against numpy from one table of shapes on every ISA level; whole graphs
compressed by ember.nncf.compress_weights (INT8/INT4, sym/asym, per channel/group) and the
IRs OpenVINO wrote against REFERENCE, numpy and OpenVINO; what the compiled model reports."""

import numpy as np
import pytest

import ember
from ember.devices.cpu.kernels import wc_gemm
from ember.devices.cpu.llvm.isa import host_isa, supported_levels

LEVELS = [pytest.param(level, id=level) for level in supported_levels()]

# (M, N, K, bits, signed codes, group size, asymmetric)
KERNEL_CASES = [
    (1, 1, 8, 8, True, 8, False),
    (1, 70, 64, 8, True, 64, False),
    (3, 130, 96, 8, False, 96, True),
    (1, 17, 10, 8, False, 5, True),
    (9, 200, 256, 8, False, 256, True),
    (1, 64, 128, 4, True, 16, False),
    (5, 130, 96, 4, False, 32, True),
    (4, 33, 64, 4, False, 64, True),
    (2, 7, 2, 4, True, 2, False),
    (0, 16, 32, 4, True, 32, False),
]


def _codes(rng, n, k, bits, signed, groups, asym):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    q = rng.integers(lo, hi + 1, (n, k)).astype(np.int8 if signed else np.uint8)
    scale = (rng.random((n, groups)) * 0.1 + 0.01).astype(np.float32)
    zp = rng.integers(lo, hi + 1, (n, groups)).astype(np.float32) if asym else np.zeros((n, groups), np.float32)
    return q, scale, zp


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-w{c[3]}{'s' if c[4] else 'u'}-g{c[5]}")
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_matches_numpy(level, case, threads):
    m, n, k, bits, signed, gs, asym = case
    isa = host_isa(level)
    rng = np.random.default_rng(m * 1000 + n + k + bits)
    q, scale, zp = _codes(rng, n, k, bits, signed, k // gs, asym)
    w = ((q.astype(np.float64).reshape(n, k // gs, gs) - zp[:, :, None]) * scale[:, :, None]).reshape(n, k)
    x = rng.standard_normal((m, k + 3)).astype(np.float32)[:, :k]  # strided rows
    y = np.full((m, n + 2), np.float32(7.0))[:, :n]  # columns past N must stay untouched
    packed = wc_gemm.pack(q, scale, zp, bits, isa)
    wc_gemm.bind(packed, x, y, threads, isa).run()
    want = x.astype(np.float64) @ w.T
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * max(float(np.abs(want).max(initial=0)), 1.0))
    assert np.all(y.base[:, n:] == 7.0) if m else True
    # bytes a run reads: the codes at their width (a panel of columns padded to the vector width)
    panels = -(-n // packed.nr)
    assert packed.packed.nbytes == panels * packed.nr * k * bits // 8


def _matmul_model(rng, k=96, n=64, shape=(2, 3)):
    import ember.opset as ops
    from ember.graph.types import Type

    x = ops.parameter([*shape, k], Type.f32, name="x")
    w1 = ops.constant((rng.standard_normal((n, k)) * 0.2).astype(np.float32))
    bias = ops.constant((rng.standard_normal(n) * 0.1).astype(np.float32), name="bias")
    h = ops.relu(ops.add(ops.matmul(x, w1, False, True), bias))  # the bias Add runs in the kernel's store
    w2 = ops.constant((rng.standard_normal((n, 40)) * 0.2).astype(np.float32))
    y = ops.matmul(h, w2, False, False)  # [K, N] weights: the other orientation
    return ember.Model([y], [x], "mlp")


# (mode, group size, bits written)
MODES = [("INT8_ASYM", None, 8), ("INT8_SYM", None, 8), ("INT4_SYM", 32, 4), ("INT4_ASYM", 16, 4)]


@pytest.mark.parametrize("mode, group_size, bits", MODES, ids=[m[0] for m in MODES])
def test_compress_weights_runs_compressed(mode, group_size, bits):
    """compress_weights' output on CPU: every MatMul runs the compressed kernel (profiling's
    exec type says FP32 arithmetic on W8/W4), within f16 rounding of REFERENCE (which
    decompresses in f16, as the IR says) and f32-exact against a numpy twin of the codes."""
    from ember import nncf

    rng = np.random.default_rng(len(mode))
    model = _matmul_model(rng)
    options = {"group_size": group_size, "ratio": 1.0, "all_layers": True} if group_size else {}
    compressed = nncf.compress_weights(model, mode=getattr(nncf.CompressWeightsMode, mode), **options)
    xin = rng.standard_normal((2, 3, 96)).astype(np.float32)
    core = ember.Core()
    cm = core.compile_model(compressed, "CPU", {"PERF_COUNT": True})
    request = cm.create_infer_request()
    got = request.infer({0: xin})[0]
    stats = cm._executable.program.stats
    assert stats.get("compressed_ops") == 2 and not stats["fallbacks"]
    assert not any("Add" in op.type_name for op in cm._executable.program.ops)  # the bias is in the kernel
    exec_types = {p.node_name: p.exec_type for p in request.get_profiling_info()}
    assert sorted(v for v in exec_types.values() if "_W" in v) == [wc_gemm.exec_type(host_isa(), bits)] * 2
    assert not any(v.endswith("_I8") for v in exec_types.values())  # f32 arithmetic: never reported as int8
    nodes = [n for n in cm.get_runtime_model().get_ordered_ops() if n.type_name == "CompressedMatMul"]
    assert len(nodes) == 2 and all(n.rt_info["runtimePrecision"] == "FP32" for n in nodes)
    assert {str(n.input_values()[1].element_type) for n in nodes} <= {"u8", "i8", "u4", "i4"}
    assert all(n.bits == bits for n in nodes)
    want = core.compile_model(compressed, "REFERENCE")(xin)[0]
    mag = float(np.abs(want).max())
    assert float(np.abs(got - want).max()) <= 2e-3 * mag
    # numpy twin: the same codes decompressed in f32
    bias = next(n for n in compressed.get_ordered_ops() if n.friendly_name == "bias").data
    h = xin @ nodes[0].weights(*(n.data for n in (i.node for i in nodes[0].input_values()[1:]))).T + bias
    twin = np.maximum(h, 0) @ nodes[1].weights(*(n.data for n in (i.node for i in nodes[1].input_values()[1:]))).T
    np.testing.assert_allclose(got, twin, rtol=1e-4, atol=1e-5 * mag)


@pytest.mark.parametrize("name", ["matmul_int8_asym_wc", "matmul_int4_sym_g32_wc"])
def test_openvino_compressed_ir(name):
    """IRs written by OpenVINO/NNCF (u8 asym per channel; i4 sym groups of 32 in f16) with a
    dynamic batch and sequence: compressed kernels, against REFERENCE and OpenVINO's CPU."""
    from pathlib import Path

    import openvino

    path = Path(__file__).resolve().parents[1] / "data" / "ir_examples" / f"{name}.xml"
    core = ember.Core()
    xin = np.random.default_rng(0).standard_normal([2, 5, 64]).astype(np.float32)
    cm = core.compile_model(core.read_model(path), "CPU")
    got = cm(xin)[0]
    stats = cm._executable.program.stats
    assert stats.get("compressed_ops") == 2 and not stats["fallbacks"]
    want = core.compile_model(core.read_model(path), "REFERENCE")(xin)[0]
    theirs = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(xin)[0]
    mag = float(np.abs(want).max())
    assert float(np.abs(got - want).max()) <= 2e-3 * mag
    # OpenVINO quantizes the activations of compressed MatMuls on the fly: 6e-3 of REFERENCE
    assert float(np.abs(got - theirs).max()) <= 2e-2 * mag


def test_compressed_model_from_cache_dir(tmp_path):
    """A CACHE_DIR entry of an INT4-compressed model holds CompressedMatMul with u4 codes; it
    reads back (cache hit) and gives the same outputs."""
    from ember import nncf

    rng = np.random.default_rng(9)
    compressed = nncf.compress_weights(_matmul_model(rng), mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32,
                                       ratio=1.0, all_layers=True)
    xin = rng.standard_normal((2, 3, 96)).astype(np.float32)
    first = ember.Core().compile_model(compressed, "CPU", {"CACHE_DIR": str(tmp_path)})
    again = ember.Core().compile_model(compressed, "CPU", {"CACHE_DIR": str(tmp_path)})
    assert again._loaded_from_cache and again._executable.program.stats.get("compressed_ops") == 2
    np.testing.assert_array_equal(again(xin)[0], first(xin)[0])


def test_many_rows_use_decompressed_weights():
    """A dynamic number of rows: few rows run the compressed kernel, many rows (a prefill) the
    f32 GEMM on weights decompressed once per compiled model; both equal to REFERENCE."""
    from ember import nncf

    rng = np.random.default_rng(4)
    model = _matmul_model(rng, shape=(1, 4))
    model.reshape({0: ember.PartialShape([1, -1, 96])})
    compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=32, ratio=1.0,
                                       all_layers=True)
    core = ember.Core()
    cm = core.compile_model(compressed, "CPU")
    ref = core.compile_model(compressed, "REFERENCE")
    for rows, path in ((3, "compressed_ops"), (40, "decompressed_ops"), (2, "compressed_ops")):
        xin = rng.standard_normal((1, rows, 96)).astype(np.float32)
        got, want = cm(xin)[0], ref(xin)[0]
        stats = cm._executable.program.stats
        assert stats.get(path) == 2 and not stats["fallbacks"]
        assert not any("Add" in op.type_name for op in cm._executable.program.ops)
        assert float(np.abs(got - want).max()) <= 2e-3 * float(np.abs(want).max())


@pytest.mark.slow
def test_zoo_minilm_int4():
    """all-MiniLM-L6-v2 from the zoo, INT4_ASYM groups of 32 by ember.nncf.compress_weights: its
    36 Linear layers and its INT8 embedding tables run the compressed kernels at a 12-token
    input, within 1e-3 of REFERENCE."""
    from ember import nncf, zoo

    core = ember.Core()
    model = core.read_model(zoo.fetch("all-minilm-l6-v2").xml)
    compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32, ratio=1.0)
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(1000, 20000, (1, 12)).astype(np.int64),
             "attention_mask": np.ones((1, 12), np.int64), "token_type_ids": np.zeros((1, 12), np.int64)}
    cm = core.compile_model(compressed, "CPU")
    got = cm(feeds)[0]
    stats = cm._executable.program.stats
    # 36 Linear layers and 2 embedding tables (CompressedGather)
    assert stats.get("compressed_ops") == 38 and not stats.get("decompressed_ops")
    want = core.compile_model(compressed, "REFERENCE")(feeds)[0]
    assert float(np.abs(got - want).max()) <= 1e-3 * float(np.abs(want).max())


# (V, H, bits, signed codes, group size, index type, Gather-8 negative indices)
GATHER_CASES = [
    (50, 64, 8, False, 64, np.int64, True),
    (30, 96, 4, True, 32, np.int32, True),
    (20, 10, 8, True, 5, np.int64, False),
    (9, 6, 4, False, 2, np.int32, True),
]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", GATHER_CASES, ids=lambda c: f"{c[0]}x{c[1]}-w{c[2]}-g{c[4]}-{np.dtype(c[5]).name}")
def test_gather_kernel_matches_numpy(level, case):
    """Rows of a compressed table, with negative and out-of-range indices (zeros)."""
    v, h, bits, signed, gs, idt, negative = case
    isa = host_isa(level)
    rng = np.random.default_rng(v + h)
    q, scale, zp = _codes(rng, v, h, bits, signed, h // gs, True)
    w = ((q.astype(np.float64).reshape(v, h // gs, gs) - zp[:, :, None]) * scale[:, :, None]).reshape(v, h)
    idx = rng.integers(-v - 2, v + 2, 37).astype(idt)
    y = np.full((37, h), np.float32(9.0))
    wc_gemm.bind_gather(wc_gemm.pack_table(q, scale, zp, bits), idx, y, negative, 2, isa).run()
    real = np.where((idx < 0) & negative, idx + v, idx)
    ok = (real >= 0) & (real < v)
    want = np.where(ok[:, None], w[np.where(ok, real, 0)], 0.0)
    # q * s - zp * s in one fma: the rounding of zp * s, relative to the table's magnitude
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6 * float(np.abs(w).max()))


@pytest.mark.parametrize("mode, options", [("INT8_ASYM", {}), ("INT4_SYM", {"group_size": 16, "all_layers": True})])
def test_compressed_embedding(mode, options):
    """An embedding Gather on compress_weights' table: CompressedGather (the table stays 8/4
    bits wide), equal to REFERENCE, with negative (Gather-8) and out-of-range indices."""
    import ember.opset as ops
    from ember import nncf
    from ember.graph.types import Type

    rng = np.random.default_rng(5)
    ids = ops.parameter([2, 7], Type.i64, name="ids")
    table = ops.constant((rng.standard_normal((300, 48)) * 0.1).astype(np.float32))
    emb = ops.gather(table, ids, np.int64(0))
    model = ember.Model([emb], [ids], "embedding")
    compressed = nncf.compress_weights(model, mode=getattr(nncf.CompressWeightsMode, mode), ratio=1.0, **options)
    idx = np.array([[0, 5, 299, -1, -300, 300, 17], [1, 2, 3, 4, -5, 6, 7]], np.int64)
    core = ember.Core()
    cm = core.compile_model(compressed, "CPU")
    got = cm(idx)[0]
    stats = cm._executable.program.stats
    assert stats.get("compressed_ops") == 1 and not stats["fallbacks"]
    nodes = [n for n in cm.get_runtime_model().get_ordered_ops() if n.type_name == "CompressedGather"]
    assert len(nodes) == 1 and nodes[0].rt_info["runtimePrecision"] == "FP32"
    want = core.compile_model(compressed, "REFERENCE")(idx)[0]
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * float(np.abs(want).max()))
    assert not np.any(got[0, 5])  # index 300 is out of range: zeros, as Gather


def test_benchmark_smoke(monkeypatch, tmp_path):
    """benchmarks/int8.py --wc on a tiny MatMul: the table has the three rows and the
    compressed ones read fewer bytes."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "int8.py"
    spec = importlib.util.spec_from_file_location("int8_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "CACHE", tmp_path)
    rows = bench.weight_compression(256, 0.01, 1, 1)
    assert [r["kind"] for r in rows] == ["f32", "INT8", "INT4"]
    assert rows[0]["bytes"] > rows[1]["bytes"] > rows[2]["bytes"]
    assert all(r["err"] < 1e-2 for r in rows)
    assert "INT4" in bench.wc_table(rows, 256)
