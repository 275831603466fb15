"""Dynamic input shapes on the CPU device: one compile, many shapes, each against REFERENCE;
a new shape re-packs no weight and runs no optimizer; the plan cache and the arena stay bounded."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu import device as cpu_device
from ember.devices.cpu.device import dynamic_stats
from ember.graph.model import Model

RNG = np.random.default_rng(2020)
HIDDEN = 32


def _f(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def encoder() -> Model:
    """A small transformer block on ``[batch, seq, HIDDEN]`` with dynamic batch and seq: weight
    GEMMs with bias and GELU, layer normalization, attention (scores over the sequence, softmax,
    context), a Reshape and a Broadcast whose shapes come from ShapeOf (folded per shape), mean
    pooling."""
    x = ops.parameter([-1, -1, HIDDEN], np.float32, name="x")
    w = 1.0 / np.sqrt(HIDDEN)
    q = ops.add(ops.matmul(x, _f(HIDDEN, HIDDEN, scale=w), False, False), _f(HIDDEN))
    k = ops.add(ops.matmul(x, _f(HIDDEN, HIDDEN, scale=w), False, False), _f(HIDDEN))
    v = ops.add(ops.matmul(x, _f(HIDDEN, HIDDEN, scale=w), False, False), _f(HIDDEN))
    scores = ops.multiply(ops.matmul(q, k, False, True), np.float32(w))
    ctx = ops.matmul(ops.softmax(scores, -1), v, False, False)
    h = ops.add(x, ops.matmul(ctx, _f(HIDDEN, HIDDEN, scale=w), False, False))
    h = ops.mvn(h, np.array([-1], np.int64), True, 1e-6, "inside_sqrt")
    f = ops.gelu(ops.add(ops.matmul(h, _f(HIDDEN, 2 * HIDDEN, scale=w), False, False), _f(2 * HIDDEN)))
    h = ops.add(h, ops.matmul(f, _f(2 * HIDDEN, HIDDEN, scale=w / 2), False, False))
    # [batch, seq, H] -> [batch * seq, H] -> back, through the runtime shape (a ShapeOf chain)
    flat = ops.reshape(h, np.array([-1, HIDDEN], np.int64), False)
    h = ops.reshape(flat, ops.shape_of(x), False)
    h = ops.add(h, ops.broadcast(_f(HIDDEN, scale=0.1), ops.shape_of(h)))  # a constant once the shape is known
    pooled = ops.reduce_mean(h, np.array([1], np.int64), False)
    out = ops.matmul(pooled, _f(HIDDEN, 8, scale=w), False, False)
    return Model([out], [x], "encoder")


def detector() -> Model:
    """Convolutions on ``[1, 3, H, W]`` with dynamic H and W (stride 2, residual, upsampling)."""
    x = ops.parameter([1, 3, -1, -1], np.float32, name="image")
    a = ops.relu(ops.add(ops.convolution(x, _f(8, 3, 3, 3, scale=0.3), [2, 2], [1, 1], [1, 1], [1, 1]),
                         _f(1, 8, 1, 1)))
    b = ops.convolution(a, _f(8, 8, 3, 3, scale=0.1), [1, 1], [1, 1], [1, 1], [1, 1])
    c = ops.relu(ops.add(a, b))
    d = ops.group_convolution(c, _f(8, 1, 1, 3, 3, scale=0.3), [1, 1], [1, 1], [1, 1], [1, 1])
    y = ops.sigmoid(ops.convolution(d, _f(1, 8, 1, 1, scale=0.3), [1, 1], [0, 0], [0, 0], [1, 1]))
    return Model([y], [x], "detector")


CASES = {
    "encoder": (encoder, lambda n: [_f(1 + n % 2, 3 + 5 * n, HIDDEN)]),
    "detector": (detector, lambda n: [_f(1, 3, 16 + 8 * (n % 3), 24 + 8 * n)]),
}


@pytest.fixture(autouse=True)
def _per_shape_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the plans lowered per input shape: shape-generic plans (which skip
    that lowering at later shapes) are tested in test_generic_plans.py."""
    monkeypatch.setattr(cpu_device, "GENERIC_PLANS", False)


def _reference(model: Model, inputs: list[np.ndarray]) -> np.ndarray:
    return ember.Core().compile_model(model, "REFERENCE")(inputs)[0]


@pytest.mark.parametrize("case", list(CASES))
def test_many_shapes_match_reference(case: str) -> None:
    build, make = CASES[case]
    model = build()
    compiled = ember.Core().compile_model(model, "CPU")
    order = [0, 3, 1, 5, 2, 4, 3, 0, 6]  # new shapes, then shapes seen before (and a larger one last)
    for n in order:
        inputs = make(n)
        got = compiled(inputs)[0]
        np.testing.assert_allclose(got, _reference(model, inputs), rtol=2e-5, atol=2e-5,
                                   err_msg=f"{case} at {[list(a.shape) for a in inputs]}")
    stats = dynamic_stats(compiled)
    assert stats["specializations"] == len(set(order))
    assert stats["plans_cached"] == len(set(order))
    assert stats["arena_growths"] >= 1  # a larger shape came after smaller ones: the one arena grew


def _count(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    calls = [0]
    real = getattr(module, name)

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_new_shape_does_not_repack_weights_or_rerun_the_optimizer(monkeypatch: pytest.MonkeyPatch) -> None:
    import ember.devices.cpu.kernels.gemm as gemm
    import ember.passes as passes

    packs = _count(monkeypatch, gemm, "pack_b")
    optimizer = _count(monkeypatch, passes, "optimize")
    model = encoder()
    compiled = ember.Core().compile_model(model, "CPU")
    assert optimizer[0] == 1  # once, at compile time, on the dynamic model
    compiled(CASES["encoder"][1](0))
    first_packs = packs[0]
    assert first_packs == 7  # the seven weight GEMMs, at the first shape
    for n in range(1, 6):
        inputs = CASES["encoder"][1](n)
        np.testing.assert_allclose(compiled(inputs)[0], _reference(model, inputs), rtol=2e-5, atol=2e-5)
    assert packs[0] == first_packs and optimizer[0] == 1
    stats = dynamic_stats(compiled)
    assert stats["specializations"] == 6 and stats["optimizer_runs"] == 0
    assert stats["weights_packed"] == 7 and stats["weights_reused"] == 5 * 7
    assert stats["folded"] == 2 * 6  # the Reshape target and the broadcast constant, at each shape


@pytest.mark.parametrize("case", list(CASES))
def test_specialization_plans_like_the_full_pipeline(case: str) -> None:
    """The shape-only folding gives the same plan as the whole optimizer run again would."""
    build, make = CASES[case]
    compiled = ember.Core().compile_model(build(), "CPU")
    inputs = make(2)
    compiled(inputs)
    _assert_plans_like_the_full_pipeline(compiled, inputs)


def _assert_plans_like_the_full_pipeline(compiled: ember.CompiledModel, inputs: list[np.ndarray]) -> None:
    from ember.devices.cpu.llvm.isa import host_isa
    from ember.devices.cpu.lowering.driver import Lowering
    from ember.devices.cpu.lowering.passes import device_passes

    exe = compiled._executable
    cheap = exe.program
    full_model = exe.model.clone()
    full_model.reshape({i: list(a.shape) for i, a in enumerate(inputs)})
    full = Lowering(device_passes(full_model), exe.threads, host_isa()).run()
    def ops_of(program) -> list:  # noqa: ANN001
        # the same ops on the same shapes (their order may differ: passes reorder commutative operands)
        return sorted((op.type_name, tuple(t.shape for t in op.outputs)) for op in program.ops)

    assert ops_of(cheap) == ops_of(full)
    assert cheap.stats["fallbacks"] == full.stats["fallbacks"]


def test_plan_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_device, "MAX_SHAPE_PLANS", 3)
    model = encoder()
    compiled = ember.Core().compile_model(model, "CPU")
    make = CASES["encoder"][1]
    for n in [0, 1, 2, 3, 4, 0, 1]:  # 0 and 1 were evicted: lowered again, still right
        inputs = make(n)
        np.testing.assert_allclose(compiled(inputs)[0], _reference(model, inputs), rtol=2e-5, atol=2e-5)
    stats = dynamic_stats(compiled)
    assert stats["plans_cached"] == 3 and len(compiled._executable._instances) <= 3
    assert stats["specializations"] == 7 and stats["evictions"] == 4
    assert stats["weights_packed"] == 7  # evicted plans do not take the packed weights with them


def test_plan_cache_respects_its_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = ember.Core().compile_model(detector(), "CPU")
    make = CASES["detector"][1]
    compiled(make(11))  # the largest shape first: the arena does not grow (bindings stay)
    one = dynamic_stats(compiled)["plans_owned_bytes"]
    assert one > 0
    monkeypatch.setattr(cpu_device, "MAX_SHAPE_PLAN_BYTES", int(2.5 * one))
    for n in range(1, 6):
        compiled(make(n))
        assert dynamic_stats(compiled)["plans_owned_bytes"] <= max(int(2.5 * one), one * 1.5)
    assert dynamic_stats(compiled)["evictions"] >= 2
    exe = compiled._executable
    assert set(exe._instances) <= set(exe._programs._cache)  # no binding keeps an evicted plan alive


def test_streams_share_plans_and_weights_with_arenas_of_their_own() -> None:
    model = encoder()
    compiled = ember.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2})
    make = CASES["encoder"][1]
    inputs = [make(n % 4) for n in range(12)]
    want = [_reference(model, x) for x in inputs]
    results: dict[int, np.ndarray] = {}
    lock = threading.Lock()

    def done(request: ember.InferRequest, i: int) -> None:
        with lock:
            results[i] = request.get_output_tensor(0).data.copy()

    queue = ember.AsyncInferQueue(compiled, 4)
    queue.set_callback(done)
    for i, x in enumerate(inputs):
        queue.start_async(x, userdata=i)
    queue.wait_all()
    for i, w in enumerate(want):
        np.testing.assert_allclose(results[i], w, rtol=2e-5, atol=2e-5)
    stats = dynamic_stats(compiled)
    assert stats["specializations"] == 4 and stats["weights_packed"] == 7  # lowered once per shape for both streams


@pytest.mark.slow
def test_minilm_at_many_lengths_matches_reference() -> None:
    """The zoo's MiniLM (dynamic [batch, seq]) through one compiled model at several lengths."""
    from ember.zoo import load

    model = load("all-minilm-l6-v2")
    compiled = ember.Core().compile_model(model, "CPU")
    reference = ember.Core().compile_model(model, "REFERENCE")
    rng = np.random.default_rng(20)
    for n in (5, 17, 64, 9, 17, 128):
        ids = rng.integers(1000, 30000, (1, n)).astype(np.int64)
        feeds = [ids, np.ones((1, n), np.int64), np.zeros((1, n), np.int64)]
        np.testing.assert_allclose(compiled(feeds)[0], reference(feeds)[0], rtol=1e-4, atol=1e-5,
                                   err_msg=f"length {n}")
    stats = dynamic_stats(compiled)
    assert stats["specializations"] == 5 and stats["optimizer_runs"] == 0
    assert stats["weights_packed"] == 36 and stats["weights_reused"] == 4 * 36
    _assert_plans_like_the_full_pipeline(compiled, feeds)


def test_benchmark_tool_shapes_check_and_table(tmp_path) -> None:  # noqa: ANN001
    """benchmarks/dynamic_shapes.py's pieces (no engine run: that is the benchmark's job)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "dynamic_shapes.py"
    spec = importlib.util.spec_from_file_location("ember_benchmarks_dynamic_shapes", path)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool  # dataclasses look their module up
    spec.loader.exec_module(tool)
    shapes = tool.shapes_for("minilm", 200, 0)
    assert shapes == tool.shapes_for("minilm", 200, 0) and len(shapes) == 200  # seeded
    lengths = {s[0][1] for s in shapes}
    assert min(lengths) >= 5 and max(lengths) <= 128 and len(lengths) > 60
    feeds = tool.inputs_for("minilm", shapes[0], 0)
    assert [f.shape for f in feeds] == [tuple(s) for s in shapes[0]] and feeds[0].dtype == np.int64
    assert {tuple(s[0][2:]) for s in tool.shapes_for("ppocr-det", 40, 0)} <= set(tool.DETECTOR_SIZES)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, call0=np.array([1.0, 2.0]))
    np.savez(b, call0=np.array([1.0, 2.002]))
    diffs = tool.check({"ember": a, "openvino": b})
    assert diffs["ember"] == 0.0 and diffs["openvino"] == pytest.approx(1e-3)
    runs = [tool.Run("ember", "minilm", calls=3, new_shapes=2, total_s=0.2, first_ms=[50.0, 60.0], warm_ms=[5.0]),
            tool.Run("openvino", "minilm", calls=3, new_shapes=2, total_s=0.1, first_ms=[9.0], warm_ms=[8.0])]
    text = tool.table(runs, {("minilm", "openvino"): 1e-3})
    assert "| minilm | ember |" in text and "| 2.00 |" in text and "55.0 ms" in text


def test_memory_stays_bounded_as_new_shapes_keep_coming(monkeypatch: pytest.MonkeyPatch) -> None:
    """Traced memory over many new shapes grows by about the plan budget, not by a plan per shape."""
    import gc
    import tracemalloc

    model = encoder()
    compiled = ember.Core().compile_model(model, "CPU")
    x = np.zeros((1, 64, HIDDEN), np.float32)
    compiled([x])  # the largest shape first: the arena never grows below
    per_plan = dynamic_stats(compiled)["plans_owned_bytes"]
    monkeypatch.setattr(cpu_device, "MAX_SHAPE_PLAN_BYTES", 3 * per_plan)
    for n in range(2, 6):
        compiled([x[:, :n]])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(6, 36):  # 30 new shapes
            compiled([x[:, :n]])
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = dynamic_stats(compiled)
    assert stats["plans_cached"] <= 3 and stats["evictions"] >= 30
    assert grown < 4 * per_plan, (grown, per_plan)  # without eviction: about 30 plans


def test_bf16_plans_share_their_packed_weights_too() -> None:
    core = ember.Core()
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no AVX512_BF16")  # the precision then falls back to f32 (tested elsewhere)
    model = encoder()
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    make = CASES["encoder"][1]
    for n in (1, 4, 2):
        inputs = make(n)
        want = _reference(model, inputs)
        got = compiled(inputs)[0]
        assert np.max(np.abs(got - want)) <= 3e-2 * max(float(np.max(np.abs(want))), 1.0)
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ember.Type.bf16
    stats = dynamic_stats(compiled)
    assert stats["weights_packed"] == 7 and stats["weights_reused"] == 2 * 7


@pytest.mark.parametrize("case", list(CASES))
def test_a_new_shape_compiles_no_new_kernel(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels take their sizes from their contexts: the signatures a new shape asks for were
    all asked for by the first shape (the in-process and on-disk caches serve them)."""
    from ember.devices.cpu.llvm import jit

    asked: list[str] = []
    real = jit.load

    def load(signature: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        asked.append(signature)
        return real(signature, *args, **kwargs)

    monkeypatch.setattr(jit, "load", load)
    build, make = CASES[case]
    compiled = ember.Core().compile_model(build(), "CPU")
    compiled(make(1))
    first = set(asked)
    for n in (2, 4, 7):
        compiled(make(n))
    # (first may be empty: kernels loaded by earlier tests come from the in-process cache, and
    # since models share one thread pool a compile no longer loads the pool's library)
    assert set(asked) == first


def test_if_bodies_share_the_packed_weights_across_outer_shapes() -> None:
    c = ops.parameter([], np.bool_, name="c")
    x = ops.parameter([-1, 16], np.float32, name="x")
    tp = ops.parameter([-1, 16], np.float32, name="tp")
    ep = ops.parameter([-1, 16], np.float32, name="ep")
    then = ops.result(ops.relu(ops.matmul(tp, _f(16, 8, scale=0.25), False, False)))
    other = ops.result(ops.reduce_sum(ops.multiply(ep, np.float32(2.0)), np.array([1], np.int64), True))
    node = ops.if_op(c)
    node.set_then_body(Model([then], [tp], "then"))
    node.set_else_body(Model([other], [ep], "else"))
    node.set_input(x.output(0), tp, ep)
    model = Model([ops.add(node.set_output(then, other), np.float32(1.0))], [c, x], "if")
    compiled = ember.Core().compile_model(model, "CPU")
    for rows in (3, 7, 5):
        for cond in (True, False):
            feeds = [np.bool_(cond), _f(rows, 16)]
            np.testing.assert_allclose(compiled(feeds)[0], _reference(model, feeds), rtol=2e-5, atol=2e-5)
    stats = dynamic_stats(compiled)
    assert stats["specializations"] == 3 and stats["weights_packed"] == 1


def _if_model() -> Model:
    c = ops.parameter([], np.bool_, name="c")
    x = ops.parameter([-1, 16], np.float32, name="x")
    tp = ops.parameter([-1, 16], np.float32, name="tp")
    ep = ops.parameter([-1, 16], np.float32, name="ep")
    mm = ops.matmul(tp, _f(16, 8, scale=0.25), False, False)
    mm.set_friendly_name("then_matmul")
    then = ops.result(ops.relu(mm))
    red = ops.reduce_sum(ops.multiply(ep, np.float32(2.0)), np.array([1], np.int64), True)
    red.set_friendly_name("else_sum")
    other = ops.result(red)
    node = ops.if_op(c)
    node.set_friendly_name("branch")
    node.set_then_body(Model([then], [tp], "then"))
    node.set_else_body(Model([other], [ep], "else"))
    node.set_input(x.output(0), tp, ep)
    return Model([ops.add(node.set_output(then, other), np.float32(1.0))], [c, x], "if")


def _loop_model() -> Model:
    x = ops.parameter([-1, 8], np.float32, name="x")
    it = ops.parameter([], np.int64, name="it")
    acc = ops.parameter([-1, 8], np.float32, name="acc")
    step = ops.tanh(ops.add(ops.matmul(acc, _f(8, 8, scale=0.3), False, False), np.float32(0.5)))
    step.set_friendly_name("cell")
    rc, racc = ops.result(ops.constant(True)), ops.result(step)
    node = ops.loop(ops.constant(np.int64(3)), ops.constant(True))
    node.set_friendly_name("steps")
    node.set_function(Model([rc, racc], [it, acc], "body"))
    node.set_special_body_ports([0, 0])
    node.set_merged_input(acc, x.output(0), racc.output(0))
    return Model([ops.result(node.get_iter_value(racc.output(0), -1))], [x], "loop")


@pytest.mark.parametrize("case", ["if-then", "if-else", "loop"])
def test_profiling_shows_the_ops_inside_control_flow_bodies(case: str) -> None:
    """PERF_COUNT (``ember benchmark -pc``) lists the ops of the body plans an If or Loop runs,
    named ``<If/Loop>/<body op>``; the If/Loop entry keeps its own time only (the entries add up
    to no more than the inference); results as REFERENCE."""
    model = _loop_model() if case == "loop" else _if_model()
    feeds = [_f(5, 8)] if case == "loop" else [np.bool_(case == "if-then"), _f(5, 16)]
    compiled = ember.Core().compile_model(model, "CPU", {"PERF_COUNT": True})
    request = compiled.create_infer_request()
    for _ in range(2):  # the second run: the body's plan is bound already, the times are replaced
        t0 = time.perf_counter()
        request.infer(feeds)
        elapsed = time.perf_counter() - t0
        np.testing.assert_allclose(request.get_output_tensor(0).data, _reference(model, feeds), rtol=2e-5, atol=2e-5)
        times = {p.node_name: p.real_time.total_seconds() for p in request.get_profiling_info()}
        outer = "steps" if case == "loop" else "branch"
        inner = {"loop": "cell", "if-then": "then_matmul", "if-else": "else_sum"}[case]
        assert outer in times, sorted(times)
        names = [n for n in times if n.startswith(f"{outer}/")]
        assert any(n.split("/", 1)[1].startswith(inner) for n in names), sorted(times)
        assert times[outer] >= 0 and sum(times.values()) <= elapsed
    if case == "if-then":  # the other body's ops are not listed for a run that did not take it
        assert not any("else_sum" in n for n in times)


def _upsampler(mode: str, coord: str, nearest: str, axes4: bool) -> Model:
    """Convolution (an NHWC tensor), nearest upsampling to a size read from the input's shape
    (a ShapeOf chain folded per shape: the PP-OCR neck), added to a 2x one."""
    x = ops.parameter([1, 4, -1, -1], np.float32, name="x")
    y = ops.relu(ops.convolution(x, _f(6, 4, 1, 1, scale=0.5), [1, 1], [0, 0], [0, 0], [1, 1]))
    hw = ops.gather(ops.shape_of(x), np.array([2, 3], np.int64), np.int64(0))
    small = ops.avg_pool(y, [2, 2], [0, 0], [0, 0], [2, 2], True)
    attrs = dict(mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest)
    if axes4:  # sizes and scales naming every axis (the channel axis too)
        sizes = ops.concat([np.array([1, 6], np.int64), hw], 0)
        up = ops.interpolate(small, sizes, shape_calculation_mode="sizes", **attrs)
        up2 = ops.interpolate(y, np.array([1, 1, 2, 2], np.float32), shape_calculation_mode="scales", **attrs)
    else:
        up = ops.interpolate(small, hw, shape_calculation_mode="sizes", axes=np.array([2, 3], np.int64), **attrs)
        up2 = ops.interpolate(y, np.array([2, 2], np.float32), shape_calculation_mode="scales",
                              axes=np.array([2, 3], np.int64), **attrs)
    out = ops.add(ops.add(up, y), ops.reduce_mean(up2, np.array([2, 3], np.int64), True))
    return Model([out], [x], "upsampler")


@pytest.mark.parametrize("coord,nearest,axes4", [
    ("asymmetric", "floor", False), ("half_pixel", "round_prefer_floor", False),
    ("align_corners", "round_prefer_ceil", True), ("tf_half_pixel_for_nn", "ceil", False)])
def test_nearest_resize_tables_at_many_sizes(coord: str, nearest: str, axes4: bool) -> None:
    """A nearest Interpolate's gather table (built from one channel's index map) at odd and even
    sizes, against REFERENCE; the resizes run natively."""
    model = _upsampler("nearest", coord, nearest, axes4)
    compiled = ember.Core().compile_model(model, "CPU")
    for h, w in ((8, 8), (9, 13), (16, 6), (7, 21)):
        feeds = [_f(1, 4, h, w)]
        np.testing.assert_allclose(compiled(feeds)[0], _reference(model, feeds), rtol=2e-5, atol=2e-5,
                                   err_msg=f"{coord}/{nearest} at {h}x{w}")
        ops_run = [op.type_name for op in compiled._executable._instance(feeds).program.ops]
        # (an upsampling by whole factors that only the Add reads is read from its source by the
        # elementwise program: no Interpolate op of its own)
        assert ops_run.count("Interpolate") in (1, 2) and not compiled._executable.program.stats["fallbacks"]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_new_shape_leaves_the_garbage_collector_as_it_was(enabled: bool) -> None:
    """The collector is paused while a plan is made, then restored as the caller had it."""
    import gc

    model = encoder()
    compiled = ember.Core().compile_model(model, "CPU")
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        for n in (0, 1, 0):
            inputs = CASES["encoder"][1](n)
            np.testing.assert_allclose(compiled(inputs)[0], _reference(model, inputs), rtol=2e-5, atol=2e-5)
            assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()


def layered() -> Model:
    """Three identical layers on ``[batch, seq, HIDDEN]`` (their nodes share inference
    signatures), plus look-alikes that must not share it: two Reshapes of one input with
    different constant targets, two MatMuls with weights of other shapes, a Reshape whose target
    comes from the runtime shape (ShapeOf chains: two of them, of one input, to ``[b, s, H]`` and
    ``[s, b, H]``), a Convert to another type."""
    x = ops.parameter([-1, -1, HIDDEN], np.float32, name="x")
    h = x
    w = 1.0 / np.sqrt(HIDDEN)
    for _ in range(3):
        a = ops.add(ops.matmul(h, _f(HIDDEN, HIDDEN, scale=w), False, False), _f(HIDDEN))
        a = ops.transpose(ops.reshape(a, np.array([0, 0, 4, HIDDEN // 4], np.int64), True),
                          np.array([0, 2, 1, 3], np.int64))
        s = ops.softmax(ops.matmul(a, a, False, True), -1)
        c = ops.reshape(ops.transpose(ops.matmul(s, a, False, False), np.array([0, 2, 1, 3], np.int64)),
                        np.array([0, 0, HIDDEN], np.int64), True)
        h = ops.mvn(ops.add(h, c), np.array([-1], np.int64), True, 1e-6, "inside_sqrt")
    r1 = ops.reshape(h, np.array([0, -1, 2, HIDDEN // 2], np.int64), True)  # same op and input as r2...
    r2 = ops.reshape(h, np.array([0, -1, HIDDEN // 2, 2], np.int64), True)  # ...another target
    m1 = ops.reduce_sum(ops.matmul(r1, _f(HIDDEN // 2, 3), False, False), np.array([2, 3], np.int64), False)
    m2 = ops.reduce_sum(ops.matmul(r2, _f(2, 5), False, False), np.array([2, 3], np.int64), False)
    flat = ops.reshape(h, np.array([-1, HIDDEN], np.int64), False)
    back = ops.reshape(flat, ops.shape_of(h), False)  # [b, s, H] and, from the same input and...
    swapped = ops.reshape(flat, ops.shape_of(ops.transpose(h, np.array([1, 0, 2], np.int64))), False)  # [s, b, H]
    back = ops.add(back, ops.transpose(swapped, np.array([1, 0, 2], np.int64)))
    pooled = ops.add(ops.add(m1, m2), ops.convert(ops.convert(ops.reduce_mean(back, np.array([2], np.int64),
                                                                               False), "f16"), "f32"))
    return Model([pooled], [x], "layered")


def _types(nodes: list) -> list:  # noqa: ANN001
    return [(n.type_name, [(str(o.element_type), str(o.partial_shape)) for o in n.outputs()]) for n in nodes]


@pytest.mark.parametrize("case", ["layered", *CASES])
def test_shared_inference_gives_the_types_inference_gives(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A specialization infers each distinct node signature once; every node's types are those
    a full inference gives (compared node by node), the layers do share, and the results match
    REFERENCE at many shapes."""
    from ember.graph.core_ops import Constant
    from ember.graph.node import Node

    build, make = (layered, lambda n: [_f(1 + n % 2, 2 + 3 * n, HIDDEN)]) if case == "layered" else CASES[case]
    model = build()
    compiled = ember.Core().compile_model(model, "CPU")
    programs = compiled._executable._programs
    shared = [0]
    real = Node.clone_with_inputs

    def counted(self, inputs, types=None):  # noqa: ANN001, ANN202
        shared[0] += types is not None and not isinstance(self, Constant)  # constants take their data's types
        return real(self, inputs, types)

    monkeypatch.setattr(Node, "clone_with_inputs", counted)
    for n in range(5):
        inputs = make(n)
        key = tuple(tuple(a.shape) for a in inputs)
        _, fast = cpu_device._clone_with_shapes(programs.model, key, programs._order, {})
        before = shared[0]
        _, slow = cpu_device._clone_with_shapes(programs.model, key, programs._order,
                                                {id(node): None for node in programs._order})
        assert shared[0] == before  # no signature: everything inferred
        assert _types(fast) == _types(slow)
        np.testing.assert_allclose(compiled(inputs)[0], _reference(model, inputs), rtol=2e-5, atol=2e-5,
                                   err_msg=f"{case} at {[list(a.shape) for a in inputs]}")
    if case in ("layered", "detector"):
        assert shared[0] > 0  # repeated layers (and the detector's repeated activations) did share


@pytest.mark.parametrize("case", list(CASES))
def test_specializations_share_one_copy_of_each_constant(case: str) -> None:
    """Each constant of the model is copied once, for the first shape; later shapes' graphs read
    the same copies (results still equal REFERENCE), and no copy keeps a reader once its shape
    is lowered (a specialized graph does not keep the next one alive)."""
    from ember.graph.core_ops import Constant

    build, make = CASES[case]
    model = build()
    compiled = ember.Core().compile_model(model, "CPU")
    programs = compiled._executable._programs
    constants = sum(isinstance(n, Constant) for n in programs._order)
    for n in range(5):
        inputs = make(n)
        np.testing.assert_allclose(compiled(inputs)[0], _reference(model, inputs), rtol=2e-5, atol=2e-5,
                                   err_msg=f"{case} at {[list(a.shape) for a in inputs]}")
        assert dynamic_stats(compiled)["constant_copies"] == constants  # not one more per shape
        assert all(not port.targets for c in programs._consts.values() for port in c.outputs())
    assert dynamic_stats(compiled)["specializations"] == 5


@pytest.mark.parametrize("case", list(CASES))
def test_a_cached_plan_keeps_no_node_of_its_specialized_graph(case: str) -> None:
    """Once a shape is lowered, its specialized graph is garbage: no binder keeps a node (nor the
    lowering's model), so cached plans do not keep ~one graph each alive (memory, and the work of
    every later garbage collection). Only the shared constant copies stay."""
    import gc

    from ember.graph.node import Node

    build, make = CASES[case]
    model = build()
    compiled = ember.Core().compile_model(model, "CPU")

    def live_nodes() -> int:
        gc.collect()
        return sum(isinstance(o, Node) for o in gc.get_objects())

    compiled(make(0))
    after_one = live_nodes()
    for n in range(1, 5):
        inputs = make(n)
        np.testing.assert_allclose(compiled(inputs)[0], _reference(model, inputs), rtol=2e-5, atol=2e-5)
    assert dynamic_stats(compiled)["plans_cached"] == 5
    assert live_nodes() == after_one


def test_plan_bytes_count_the_graph_only_when_the_plan_keeps_it() -> None:
    """The per-node allowance of a plan's owned bytes is counted when one of its ops holds a graph
    node (a reference kernel's ``evaluate``), not for a plan of native kernels only."""
    from ember.devices.cpu.runtime.plan import Op, Program

    compiled = ember.Core().compile_model(encoder(), "CPU")
    compiled(CASES["encoder"][1](0))
    programs = compiled._executable._programs
    native = compiled._executable.program
    shared = programs._shared_arrays()
    assert cpu_device._owned_bytes(native, shared, 1000) == cpu_device._owned_bytes(native, shared, 0)
    node = programs._order[-2]  # a node of the (dynamic) graph
    with_ref = Program(tensors=native.tensors, ops=[*native.ops, Op("ref", node.type_name, [], [], False,
                                                                     fn=node.evaluate)])
    assert cpu_device._owned_bytes(with_ref, shared, 1000) == \
        cpu_device._owned_bytes(with_ref, shared, 0) + 1000 * cpu_device._NODE_BYTES
