"""Shape-generic plans (runtime/generic.py): a plan lowered for one input shape, reused at new
shapes, gives what a plan lowered for each shape gives (REFERENCE, and the per-shape plan)."""
from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu import device as cpu_device
from ember.devices.cpu.device import dynamic_stats
from ember.devices.cpu.runtime import generic
from ember.devices.cpu.runtime.generic import _fit
from ember.graph.model import Model
from tests.cpu.test_dynamic_plans import HIDDEN, detector, encoder

RNG = np.random.default_rng(77)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _run(model: Model, feeds: list[list[np.ndarray]], generic: bool, monkeypatch: pytest.MonkeyPatch,
         config: dict | None = None) -> tuple[list, dict]:
    monkeypatch.setattr(cpu_device, "GENERIC_PLANS", generic)
    compiled = ember.Core().compile_model(model, "CPU", config or {})
    outs = [np.array(compiled(f)[0], copy=True) for f in feeds]
    return outs, dynamic_stats(compiled)


def _check(model: Model, feeds: list[list[np.ndarray]], monkeypatch: pytest.MonkeyPatch, tol: float = 2e-5,
           config: dict | None = None) -> dict:
    """Generic plans against per-shape plans (bit for bit on one thread; with two, a busy machine
    may give a run finer tasks, which sum in another order) and against REFERENCE."""
    config = {"INFERENCE_NUM_THREADS": 1, **(config or {})}
    generic, stats = _run(model, feeds, True, monkeypatch, config)
    per_shape, off = _run(model, feeds, False, monkeypatch, config)
    reference = ember.Core().compile_model(model, "REFERENCE")
    for f, g, p in zip(feeds, generic, per_shape):
        shapes = [list(a.shape) for a in f]
        if config["INFERENCE_NUM_THREADS"] == 1:
            np.testing.assert_array_equal(g, p, err_msg=f"generic vs per-shape plan at {shapes}")
        else:
            np.testing.assert_allclose(g, p, rtol=1e-5, atol=1e-6, err_msg=f"generic vs per-shape plan at {shapes}")
        np.testing.assert_allclose(g, reference(f)[0], rtol=tol, atol=tol, err_msg=f"vs REFERENCE at {shapes}")
    assert off["generic"] == 0 and off["specializations"] == len({tuple(tuple(a.shape) for a in f) for f in feeds})
    # (every shape asked for was lowered or made; lowerings that only widened the range come on top)
    assert stats["specializations"] - stats["generic_reach"] + stats["generic"] == off["specializations"]
    return stats


SHAPES_2D = [(1, 9), (2, 30), (1, 17), (2, 5), (1, 1), (2, 23), (1, 30), (2, 12), (1, 4), (2, 30), (1, 2),
             (2, 2), (1, 25), (2, 1), (1, 29), (2, 17)]


def _two_dims() -> Model:
    """[batch, seq, H], both dynamic: GEMMs with bias and GELU, LayerNorm, attention scores and
    softmax over the sequence, a residual, a sum over the sequence."""
    x = ops.parameter([-1, -1, HIDDEN], np.float32, name="x")
    q = ops.add(ops.matmul(x, _x(HIDDEN, HIDDEN), False, False), _x(HIDDEN))
    scores = ops.multiply(ops.matmul(q, x, False, True), np.float32(0.1))
    h = ops.add(x, ops.matmul(ops.softmax(scores, -1), x, False, False))
    h = ops.mvn(h, np.array([-1], np.int64), True, 1e-6, "inside_sqrt")
    h = ops.gelu(ops.add(ops.matmul(h, _x(HIDDEN, 2 * HIDDEN), False, False), _x(2 * HIDDEN)))
    return Model([ops.reduce_sum(h, np.array([1], np.int64), False)], [x], "two_dims")


@pytest.mark.parametrize("precision, threads", [("f32", 1), ("f32", 2), ("bf16", 1)])
def test_a_model_with_two_dynamic_dims(precision: str, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch and sequence both change; length 1 and a batch of 1 and 2 included; bf16 GEMMs too."""
    if precision == "bf16":
        from ember.devices.cpu.kernels.gemm import bf16_supported

        if not bf16_supported():
            pytest.skip("this CPU has no bf16 GEMMs")
    stats = _check(_two_dims(), [[_x(b, s, HIDDEN)] for b, s in SHAPES_2D], monkeypatch,
                   tol=2e-5 if precision == "f32" else 0.1,
                   config={"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads})
    assert stats["generic"] > 0, stats  # the later shapes inside the verified range reuse the plan
    assert stats["generic_blockers"] == [], stats["generic_blockers"]


def test_encoder_with_a_mean_over_the_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder (test_dynamic_plans): its ReduceMean scales by 1 / the length (the binder takes
    it from its array), a Reshape and a Broadcast from ShapeOf chains."""
    stats = _check(encoder(), [[_x(b, s, HIDDEN)] for b, s in SHAPES_2D], monkeypatch)
    assert stats["generic"] > 0 and stats["generic_blockers"] == [], stats


def _embedder() -> Model:
    """Token ids [1, seq] -> embeddings + positions (a Gather of a Range over the runtime length:
    a constant per length once folded), LayerNorm, a GEMM, masked mean pooling: MiniLM in small."""
    ids = ops.parameter([1, -1], np.int64, name="ids")
    table = _x(50, HIDDEN)
    pos_table = _x(64, HIDDEN)
    emb = ops.gather(table, ids, np.array(0, np.int64))
    length = ops.gather(ops.shape_of(ids), np.array([1], np.int64), np.array(0, np.int64))
    positions = ops.range(np.array(0, np.int64), ops.squeeze(length, np.array([0], np.int64)), np.array(1, np.int64),
                          np.int64)
    h = ops.add(emb, ops.gather(pos_table, positions, np.array(0, np.int64)))
    h = ops.mvn(h, np.array([-1], np.int64), True, 1e-6, "inside_sqrt")
    h = ops.add(ops.matmul(h, _x(HIDDEN, HIDDEN), False, False), _x(HIDDEN))
    pooled = ops.reduce_sum(h, np.array([1], np.int64), False)
    return Model([pooled], [ids], "embedder")


def test_embedder_lengths_1_to_64(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every length up to the position table's end, in a shuffled order (the shape-dependent
    position constant is a prefix of the largest sample's)."""
    lengths = list(range(1, 65))
    np.random.default_rng(3).shuffle(lengths)
    feeds = [[np.random.default_rng(n).integers(0, 50, (1, n)).astype(np.int64)] for n in lengths]
    stats = _check(_embedder(), feeds, monkeypatch, tol=1e-4)
    assert stats["generic"] > len(lengths) // 2, stats


@pytest.mark.parametrize("sizes", [
    ((16, 24), (24, 32), (16, 40), (32, 24), (24, 24), (16, 32), (24, 40)),
    # odd sizes: the strided layers' sizes are ceil divisions of H and W (fitted as (v + b) // d)
    ((17, 23), (29, 41), (21, 33), (25, 37), (19, 27), (23, 35), (27, 39), (31, 29), (22, 30)),
])
def test_convnet_images_of_varying_size(sizes: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Convolutions on [1, 3, H, W] (the convolutions and their fused depthwise + 1x1 pairs are
    planned for each image size from the arrays they are bound to): the sizes between verified
    ones reuse the plan, bit for bit what a plan lowered for them gives."""
    stats = _check(detector(), [[_x(1, 3, h, w)] for h, w in sizes], monkeypatch)
    assert stats["generic"] > 0 and stats["generic_blockers"] == [], stats


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_ppocr_recognizer_widths_generic_equal_per_shape(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """PP-OCRv4's recognizer fed text lines of every width (convolutions, depthwise + 1x1 pairs,
    pooling, the SVTR neck's attention and LayerNorms over a length of width / 8)."""
    from ember.zoo import load

    model = load("ppocr-rec")
    widths = (320, 200, 480, 260, 333, 401, 217, 288, 450, 377, 241, 301)
    stats = _check(model, [[_x(1, 3, 48, w)] for w in widths], monkeypatch, tol=1e-3,
                   config={"INFERENCE_NUM_THREADS": threads})
    assert stats["generic"] >= 4, stats


def test_knob_off_lowers_every_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    _, stats = _run(encoder(), [[_x(1, n, HIDDEN)] for n in (3, 9, 5, 7)], False, monkeypatch)
    assert stats["generic"] == 0 and stats["generic_off"] == "disabled"


def test_a_constant_that_changes_with_the_shape_turns_the_template_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """x / seq (the length folded into a constant of the same shape at every length): no prefix,
    no formula; every shape is lowered and results stay right."""
    x = ops.parameter([1, -1], np.float32, name="x")
    length = ops.convert(ops.shape_of(x), np.float32)
    y = ops.divide(x, ops.reduce_max(length, np.array([0], np.int64), True))
    feeds = [[_x(1, n)] for n in (3, 9, 5, 7, 6)]
    stats = _check(Model([y], [x], "scaled"), feeds, monkeypatch)
    assert stats["generic"] == 0


@pytest.mark.parametrize("values, points, want", [
    ([3, 3, 3], [(1,), (5,), (9,)], ("c", 3)),
    ([5, 13, 21], [(1,), (5,), (9,)], ("a", 0, 2, 3)),
    ([12, 40], [(1, 12), (2, 20)], ("p", 0, 1, 1)),
])
def test_fit_finds_the_formula(values: list[int], points: list[tuple[int, ...]], want: tuple) -> None:
    fits = _fit(values, points, len(points[0]))
    assert want in fits
    assert _fit([1, 2, 4], [(1,), (2,), (3,)], 1) == []  # not affine: no formula


@pytest.mark.slow
def test_minilm_lengths_generic_equal_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.zoo import load

    model = load("all-minilm-l6-v2")
    rng = np.random.default_rng(20)
    feeds = []
    for n in (40, 100, 1, 128, 17, 16, 5, 77, 2, 64, 9, 120):
        ids = rng.integers(1000, 30000, (1, n)).astype(np.int64)
        feeds.append([ids, np.ones((1, n), np.int64), np.zeros((1, n), np.int64)])
    stats = _check(model, feeds, monkeypatch, tol=1e-4)
    assert stats["generic"] > 0 and stats["optimizer_runs"] == 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k, n", [(32, 48), (384, 1536), (5, 3)])
def test_gemm_with_rows_is_the_call_built_for_those_rows(threads: int, k: int, n: int) -> None:
    """A GEMM patched for new rows (a shape-generic plan's binding) has the context and task count
    of one built for them, and computes A @ B."""
    from ember.devices.cpu.kernels.gemm import Gemm, pack_b

    w = _x(k, n)
    packed = pack_b(w)
    base = Gemm(packed, 20, num_threads=threads)
    a20, c20 = _x(20, k), np.empty((20, n), np.float32)
    base.bind(a20, c20)  # makes its call (row strides k and n)
    for m in (1, 2, 7, 20, 64, 300, 1000):
        patched, built = base.with_rows(m), Gemm(packed, m, num_threads=threads)
        a, c = _x(m, k), np.empty((m, n), np.float32)
        kb = built.bind(a, c)
        # patched as a Gemm, or bound for these rows directly (what a plan's binder does)
        for kp in (patched.bind(a, c), base.bind(a, c, any_rows=True)):
            np.testing.assert_array_equal(kp.ctx, kb.ctx, err_msg=f"m={m}")
            assert (kp.n_tasks, kp.task, kp.num_threads) == (kb.n_tasks, kb.task, kb.num_threads)
            for t in (2, 4, 8):  # the busy machine's finer plans too
                fp, fb = kp.finer(t), kb.finer(t)
                assert (fp is None) == (fb is None)
                if fp is not None and fb is not None:
                    np.testing.assert_array_equal(fp[0], fb[0])
                    assert fp[1] == fb[1]
            c[:] = np.nan
            kp.run()
            np.testing.assert_allclose(c, a @ w, rtol=1e-4, atol=1e-4)


def test_a_binder_that_keeps_its_lowered_sizes_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the GEMM binder handed its lowered rows at every shape (as binders were before), the
    check fails at the first sample: no plan is made from the template, results stay right."""
    from ember.devices.cpu.kernels.gemm import IGemmCall

    bind = IGemmCall.bind
    monkeypatch.setattr(IGemmCall, "bind", lambda self, x, y, bias=0, residual=0, keep=(), rows=None:
                        bind(self, x, y, bias, residual, keep))  # (rows ignored)
    monkeypatch.setattr(generic, "GIVE_UP_AFTER", 3)
    model = _two_dims()
    _, stats = _run(model, [[_x(b, s, HIDDEN)] for b, s in SHAPES_2D[:6]], True, monkeypatch)
    assert stats["generic"] == 0 and stats["specializations"] == 6
    assert any(b.startswith("MatMul") for b in stats["generic_blockers"]), stats["generic_blockers"]  # (its context)
    assert stats["generic_checks"] == 3 and "no sample matched" in stats["generic_off"]  # then it stops checking


def test_the_template_is_used_only_between_verified_values() -> None:
    from ember.devices.cpu.runtime.generic import PlanTemplate

    tpl = PlanTemplate(None)
    tpl.positions = [[(0, 1)]]
    tpl.samples = [(((1, 40),), [], {})]
    tpl.verified = [((1, 40),), ((1, 100),), ((1, 5),)]
    tpl.failed = [((1, 16),)]
    assert [n for n in (3, 5, 10, 16, 17, 40, 77, 100, 101) if tpl._covered((n,))] == [5, 40, 77, 100]  # (16 failed: not between 5 and 40)
    assert tpl._vars(((2, 40),)) is None  # another batch: not this template's shapes


def _fpn() -> Model:
    """Two convolution branches concatenated on channels (written in place into the Concat: views
    that are no reshape of their base), then a 1x1 convolution: PP-OCR's neck in small."""
    x = ops.parameter([1, 3, -1, -1], np.float32, name="image")
    a = ops.relu(ops.convolution(x, _x(8, 3, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1]))
    b = ops.relu(ops.convolution(x, _x(8, 3, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]))
    cat = ops.concat([a, b], 1)
    return Model([ops.convolution(cat, _x(4, 16, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1])], [x], "fpn")


def test_convnet_with_channel_concat_views(monkeypatch: pytest.MonkeyPatch) -> None:
    feeds = [[_x(1, 3, h, w)] for h, w in ((16, 24), (24, 32), (16, 40), (32, 24), (24, 24), (16, 32))]
    stats = _check(_fpn(), feeds, monkeypatch, tol=1e-4)
    assert stats["generic"] > 0, stats


def test_an_internal_error_of_the_template_only_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: object, key: tuple, prog: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(generic.PlanTemplate, "observe", broken)
    model = _two_dims()
    feeds = [[_x(b, s, HIDDEN)] for b, s in SHAPES_2D[:4]]
    outs, stats = _run(model, feeds, True, monkeypatch)
    reference = ember.Core().compile_model(model, "REFERENCE")
    for f, got in zip(feeds, outs):
        np.testing.assert_allclose(got, reference(f)[0], rtol=2e-5, atol=2e-5)
    assert stats["generic"] == 0 and "internal error: RuntimeError: boom" in stats["generic_off"]


def test_a_generic_plan_that_does_not_bind_is_lowered_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    """A made plan whose binding fails (not seen by the checks) is replaced by the shape's own
    lowering: the call still gives the right result, the template is off."""
    model = _two_dims()
    feeds = [[_x(b, s, HIDDEN)] for b, s in SHAPES_2D]
    compiled = ember.Core().compile_model(model, "CPU")
    for f in feeds[:8]:  # the template is established and checked
        compiled(f)
    assert dynamic_stats(compiled)["generic"] > 0
    original = generic.PlanTemplate._make

    def unbindable(self: generic.PlanTemplate, key: tuple, x: tuple | None = None) -> object:
        prog = original(self, key, x)
        if prog is not None and x is not None:  # (a new shape's plan, not a check's)
            prog.ops[1].bind = lambda ins, outs: (_ for _ in ()).throw(RuntimeError("cannot bind"))
        return prog

    monkeypatch.setattr(generic.PlanTemplate, "_make", unbindable)
    reference = ember.Core().compile_model(model, "REFERENCE")
    f = [_x(2, 20, HIDDEN)]
    np.testing.assert_allclose(compiled(f)[0], reference(f)[0], rtol=2e-5, atol=2e-5)
    stats = dynamic_stats(compiled)
    assert "cannot bind" in stats["generic_off"], stats["generic_off"]


def test_samples_stay_bounded_as_the_range_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ever longer inputs (each outside the verified range: lowered, a sample) keep at most
    MAX_SAMPLES samples; the lengths between them then come from the template."""
    monkeypatch.setattr(generic, "REACH", False)  # (every longer input lowered: a sample each)
    evens, odds = list(range(2, 42, 2)), list(range(3, 41, 2))
    feeds = [[np.random.default_rng(n).integers(0, 50, (1, n)).astype(np.int64)] for n in evens + odds]
    stats = _check(_embedder(), feeds, monkeypatch, tol=1e-4)
    assert stats["specializations"] == len(evens) and stats["generic"] == len(odds), stats
    monkeypatch.setattr(cpu_device, "GENERIC_PLANS", True)
    compiled = ember.Core().compile_model(_embedder(), "CPU")
    for f in feeds[:len(evens)]:
        compiled(f)
    assert len(compiled._executable._programs.template.samples) <= generic.MAX_SAMPLES


def _fused_qkv() -> Model:
    """One projection to [batch, seq, 3H] split into q, k and v (GPT-2's c_attn): the splits are
    strided views of the projection whose offset and strides follow the length."""
    x = ops.parameter([1, -1, HIDDEN], np.float32, name="x")
    qkv = ops.add(ops.matmul(x, _x(HIDDEN, 3 * HIDDEN), False, False), _x(3 * HIDDEN))
    q, k, v = ops.split(ops.reshape(qkv, np.array([0, 0, 3, HIDDEN], np.int64), True), np.array(2, np.int64), 3).outputs()
    q, k, v = (ops.reshape(t, np.array([0, 0, HIDDEN], np.int64), True) for t in (q, k, v))
    scores = ops.multiply(ops.matmul(q, k, False, True), np.float32(0.1))
    h = ops.add(x, ops.matmul(ops.softmax(scores, -1), v, False, False))
    return Model([ops.reduce_sum(h, np.array([1], np.int64), False)], [x], "fused_qkv")


def test_split_views_follow_the_length(monkeypatch: pytest.MonkeyPatch) -> None:
    lengths = [40, 9, 30, 17, 33, 5, 28, 12, 36, 21, 7, 25]
    stats = _check(_fused_qkv(), [[_x(1, n, HIDDEN)] for n in lengths], monkeypatch, tol=1e-4)
    assert stats["generic"] > 0 and stats["generic_blockers"] == [], stats


@pytest.mark.parametrize("values, points, want", [
    ([450, 217], [(900,), (433,)], ("d", 0, 1, 2, 1)),           # ceil(W / 2): a stride-2 window
    ([24 * 113, 24 * 55, 24 * 61], [(900,), (433,), (481,)], ("d", 0, 7, 8, 24)),  # ceil(W / 8) x 24 channels
    ([160, 100, 240], [(320,), (200,), (480,)], ("d", 0, 1, 2, 1)),  # W / 2 (the samples' gcd is 20, not a scale)
])
def test_fit_finds_a_strided_size(values: list[int], points: list[tuple[int, ...]], want: tuple) -> None:
    fits = _fit(values, points, 1)
    assert want in fits
    assert generic._eval(want, (700,)) == want[4] * ((700 + want[2]) // want[3])
    assert all(generic._eval(f, p) == v for f in fits for p, v in zip(points, values))  # every candidate fits
    assert _fit([10, 10, 10], [(20,), (21,), (22,)], 1) == [("c", 10)]  # a constant stays one


def test_a_shape_output_follows_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ShapeOf the model returns (folded to a constant per shape: [1, n, 2n]) is made for each
    new length from its elements' formulas, not a reason to lower every shape."""
    x = ops.parameter([1, -1], np.float32, name="x")
    y = ops.relu(ops.concat([ops.unsqueeze(x, np.array([2], np.int64))] * 2, 2))
    wide = ops.reshape(y, np.array([1, -1, 4], np.int64), False)
    model = Model([wide, ops.shape_of(ops.matmul(ops.reshape(y, np.array([1, -1, 1], np.int64), False),
                                                 np.ones((1, 3), np.float32), False, False))], [x], "shapes")
    monkeypatch.setattr(cpu_device, "GENERIC_PLANS", True)
    compiled = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1})
    for n in (40, 8, 30, 14, 36, 20, 24, 10, 32, 18):
        out = compiled([_x(1, n)])
        assert out[1].tolist() == [1, 2 * n, 3], n
        assert out[0].shape == (1, n // 2, 4)
    stats = dynamic_stats(compiled)
    assert stats["generic"] > 0 and stats["generic_off"] is None, stats


@pytest.mark.slow
def test_ppocr_detector_sizes_generic_equal_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """PP-OCRv4's detector at page sizes (multiples of 32, as PP-OCR resizes to): its nearest
    upsamplings make their maps and its transposed convolutions their tables for each size, and
    the flattened GEMM rows of H / 4 x W / 4 pixels follow a product of strided sizes."""
    from ember.zoo import load

    sizes = ((320, 320), (480, 640), (416, 544), (352, 480), (448, 608), (384, 512), (416, 576), (352, 416))
    stats = _check(load("ppocr-det"), [[_x(1, 3, h, w)] for h, w in sizes], monkeypatch, tol=1e-3)
    assert stats["generic"] >= 3 and stats["generic_blockers"] == [], stats


def test_fit_finds_a_product_of_strided_sizes() -> None:
    fits = _fit([6400, 19200, 14144], [(320, 320), (480, 640), (416, 544)], 2)
    assert ("q", 0, 1, 0, 0, 4, 1) in fits
    assert {generic._eval(f, (352, 480)) for f in fits} == {88 * 120}
    assert len({generic._eval(f, (350, 481)) for f in fits}) > 1  # the samples cannot tell: that shape is lowered


def _upsampler(mode: str) -> Model:
    """A convolution, a 2x resize of H and W by scales (bilinear or cubic), a convolution: a
    segmentation head in small; the resize's tap tables depend on the image size."""
    x = ops.parameter([1, 3, -1, -1], np.float32, name="image")
    a = ops.relu(ops.convolution(x, _x(8, 3, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1]))
    up = ops.interpolate(a, np.array([2.0, 2.0], np.float32), mode, "scales", axes=np.array([2, 3], np.int64))
    return Model([ops.convolution(up, _x(4, 8, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1])], [x], "upsampler")


@pytest.mark.parametrize("mode", ["linear_onnx", "cubic"])
def test_resize_taps_follow_the_image_size(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = ((16, 24), (24, 32), (16, 40), (32, 24), (24, 24), (16, 32), (20, 28), (28, 36))
    stats = _check(_upsampler(mode), [[_x(1, 3, h, w)] for h, w in sizes], monkeypatch, tol=1e-4)
    assert stats["generic"] > 0 and stats["generic_blockers"] == [], stats


def _residual_block() -> Model:
    """A strided stem, then two 3x3 convolutions of 64 channels (Winograd F(2x2, 3x3): its tiles,
    scratch buffers and GEMM rows follow the image size) and a residual Add: ResNet in small."""
    rng = np.random.default_rng(5)

    def w(*s: int) -> np.ndarray:
        return (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)

    x = ops.parameter([1, 3, -1, -1], np.float32, name="image")
    a = ops.relu(ops.convolution(x, w(64, 3, 3, 3), [2, 2], [1, 1], [1, 1], [1, 1]))
    b = ops.relu(ops.convolution(a, w(64, 64, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1]))
    return Model([ops.relu(ops.add(a, ops.convolution(b, w(64, 64, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1])))],
                 [x], "residual_block")


def test_winograd_layers_follow_the_image_size(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = ((64, 96), (96, 128), (64, 160), (128, 96), (96, 96), (64, 128), (80, 112), (112, 144), (70, 90))
    model = _residual_block()
    compiled = ember.Core().compile_model(model, "CPU")
    compiled([_x(1, 3, 64, 96)])
    plan = next(iter(compiled._executable._programs._cache.values()))
    assert sum(len(op.outputs) == 3 for op in plan.ops) == 2  # (the two 3x3 layers run as Winograd)
    stats = _check(model, [[_x(1, 3, h, w)] for h, w in sizes], monkeypatch, tol=1e-3)
    assert stats["generic"] > 0 and stats["generic_blockers"] == [], stats


def test_tied_weights_of_a_convolution_and_a_transposed_one() -> None:
    """One constant read by a 3x3 convolution and by a stride-1 transposed convolution of the same
    channel count (tied weights, an autoencoder): the transposed one runs as a convolution with the
    kernel flipped, so the two must not share one packed kernel object."""
    w = np.random.default_rng(9).standard_normal((64, 64, 3, 3)).astype(np.float32) / 24
    x = ops.parameter([1, 64, -1, -1], np.float32, name="x")
    shared = ops.constant(w)
    enc = ops.convolution(x, shared, [1, 1], [1, 1], [1, 1], [1, 1])
    dec = ops.convolution_backprop_data(enc, shared, [1, 1], pads_begin=[1, 1], pads_end=[1, 1], dilations=[1, 1])
    model = Model([dec], [x], "tied")
    compiled = ember.Core().compile_model(model, "CPU")
    reference = ember.Core().compile_model(model, "REFERENCE")
    for h, wd in ((12, 16), (16, 20)):
        f = [_x(1, 64, h, wd)]
        np.testing.assert_allclose(compiled(f)[0], reference(f)[0], rtol=1e-3, atol=1e-3)


def test_tensor_copy_keeps_every_field() -> None:
    """``Tensor.copy`` (written out for speed) copies every slot, so a field added later is not lost."""
    from ember.devices.cpu.runtime.plan import Tensor

    t = Tensor(7, (2, 3), np.float32, kind="view", name="x")
    for k, name in enumerate(Tensor.__slots__):
        setattr(t, name, (name, k))  # a distinct value per field
    u = t.copy()
    assert u is not t
    assert all(getattr(u, name) == (name, k) for k, name in enumerate(Tensor.__slots__))


def _ids(*lengths: int) -> list[list[np.ndarray]]:
    return [[np.random.default_rng(n).integers(0, 50, (1, n)).astype(np.int64)] for n in lengths]


def _lowered_keys(monkeypatch: pytest.MonkeyPatch, fail_reach: bool = False) -> list[tuple]:
    """The input shapes lowered per shape from now on (``fail_reach``: a reach's lowering raises,
    as for shapes the model does not accept)."""
    seen: list[tuple] = []
    lower = cpu_device._Programs._lower_per_shape

    def spy(self: cpu_device._Programs, key: tuple) -> tuple:
        seen.append(key)
        if fail_reach and key in self._reach_tried:
            raise ember.EmberError("ember: not at these shapes")
        return lower(self, key)

    monkeypatch.setattr(cpu_device._Programs, "_lower_per_shape", spy)
    return seen


def test_a_length_outside_the_checked_range_reaches_farther(monkeypatch: pytest.MonkeyPatch) -> None:
    """A length below the verified range lowers one farther below (as far as the range's top is
    above, at most half way down), a length above it one a quarter longer: each check then
    covers the lengths between, which come from the template (equal to per-shape plans and
    REFERENCE)."""
    seen = _lowered_keys(monkeypatch)
    stats = _check(_embedder(), _ids(40, 30, 20, 10, 45, 50, 3, 25, 35, 48, 2), monkeypatch, tol=1e-4)
    generic_lowered = [k[0][1] for k in seen[:stats["specializations"]]]
    # 20 -> max(2 * 20 - 40, 20 // 2) = 10; 45 -> 45 + 11; 3 -> 1
    assert generic_lowered == [40, 30, 10, 56, 1], generic_lowered
    assert stats["generic_reach"] == 3 and stats["generic"] == 9, stats


def test_a_reach_stays_inside_the_declared_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """No shape beyond the model's declared input bounds is lowered to widen the range: the
    length asked for is lowered instead."""
    model = _embedder()
    model.reshape({"ids": ember.PartialShape([1, ember.Dimension(1, 48)])})
    seen = _lowered_keys(monkeypatch)
    compiled = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1})
    reference = ember.Core().compile_model(model, "REFERENCE")
    for f in _ids(40, 30, 44, 46, 47):
        np.testing.assert_allclose(compiled(f)[0], reference(f)[0], rtol=1e-4, atol=1e-4)
    assert max(k[0][1] for k in seen) <= 48, seen
    assert dynamic_stats(compiled)["generic_reach"] == 0


def test_a_reach_that_cannot_be_lowered_lowers_the_length_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reach whose lowering fails (the model does not take those shapes) is tried once: the
    length asked for is lowered and runs; after a failure nothing is reached for."""
    seen = _lowered_keys(monkeypatch, fail_reach=True)
    model = _embedder()
    compiled = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1})
    reference = ember.Core().compile_model(model, "REFERENCE")
    for f in _ids(40, 30, 44, 45):
        np.testing.assert_allclose(compiled(f)[0], reference(f)[0], rtol=1e-4, atol=1e-4)
    lowered = [k[0][1] for k in seen]
    # 44 reaches 55, which fails: 44 is lowered; 45 (outside [30, 44]) is lowered itself
    assert lowered == [40, 30, 55, 44, 45], lowered
    assert len(set(map(tuple, seen))) == len(seen)


def test_two_dims_need_samples_that_span_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A transposed convolution after a stride-2 one: its column buffer has H/2 x W/2 rows.
    Samples at (80, 16) and (44, 88) fit that as -18 H + 1760 and as 9 W + 176 alike; at (56,
    64), on their line, both give 752 rows, not 896: a plan made there would not bind. Points on
    the samples' line are lowered (a new sample) until the verified points span both dimensions;
    then sizes between are made (without that rule the plan made at (56, 64) failed to bind and
    turned the template off)."""
    x = ops.parameter([1, 4, -1, -1], np.float32, name="x")
    h = ops.relu(ops.convolution(x, _x(4, 4, 1, 1), [2, 2], [0, 0], [0, 0], [1, 1]))
    y = ops.sigmoid(ops.convolution_backprop_data(h, _x(4, 3, 2, 2), [2, 2]))
    model = Model([y], [x], "upsampler")
    feeds = [[_x(1, 4, h, w)] for h, w in [(80, 16), (44, 88), (56, 64), (60, 40), (52, 48), (68, 32)]]
    stats = _check(model, feeds, monkeypatch, tol=1e-4)
    assert stats["generic_off"] is None, stats["generic_off"]
    assert stats["specializations"] <= 4 and stats["generic"] >= 2, stats


def _quantized_block() -> Model:
    """A transformer block as NNCF quantizes it (FakeQuantize on activations, int8 weights with a
    scale), over a dynamic sequence length: two Int8MatMuls, a residual, a MVN; the first one's
    output quantized before a head split (as NNCF quantizes a query), which the compile-time
    passes keep (the model's specializations then run the int8 device passes)."""
    from tests.cpu.test_int8 import _fq, _weights

    rng = np.random.default_rng(5)
    x = ops.parameter([1, -1, 32], np.float32, name="x")
    w1 = rng.integers(-127, 128, (32, 64)).astype(np.int8)
    h = ops.add(ops.matmul(_fq(x, -3.0, 3.0 * 127 / 128), _weights(w1, rng.random(64) * 0.02), False, False),
                ops.constant(rng.standard_normal(64).astype(np.float32) * 0.1))
    h = ops.reshape(_fq(h, -4.0, 4.0), ops.constant(np.array([0, 0, 4, 16], np.int64)), True)
    h = ops.reshape(h, ops.constant(np.array([0, 0, 64], np.int64)), True)
    w2 = rng.integers(-127, 128, (64, 32)).astype(np.int8)
    y = ops.matmul(_fq(ops.relu(h), 0.0, 2.0), _weights(w2, rng.random(32) * 0.02), False, False)
    out = ops.mvn(ops.add(y, x), ops.constant(np.array([-1], np.int64)), True, 1e-5, "inside_sqrt")
    return Model([out], [x], "quantized_block")


def test_int8_lengths_generic_equal_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """A quantized model (its specializations run the int8 device passes) gets shape-generic
    plans too: its Int8MatMul and quantize binders take the rows of the arrays they are given."""
    feeds = [[_x(1, n, 32)] for n in (40, 9, 23, 61, 1, 17, 40, 33, 5, 64)]
    stats = _check(_quantized_block(), feeds, monkeypatch, tol=2e-2)
    assert stats["generic"] > 0
    compiled = ember.Core().compile_model(_quantized_block(), "CPU")
    assert compiled._executable._programs._full_passes
    compiled(feeds[0])
    ops_ = [op.type_name for inst in compiled._executable._instances.values() for op in inst.program.ops]
    assert ops_.count("Int8MatMul") == 2


def test_int8_gemm_any_rows_is_the_gemm_built_for_those_rows() -> None:
    """``Int8Gemm.bind(any_rows=True)`` and ``Quantize.bind(any_rows=True)`` at other row counts
    compute what kernels made for those rows compute."""
    from ember.devices.cpu.kernels.int8_gemm import Int8Gemm, Quantize, QuantizeParams

    rng = np.random.default_rng(9)
    w = rng.integers(-127, 128, (40, 24)).astype(np.int8)
    scale, shift = (rng.random(24) * 0.01).astype(np.float32), rng.standard_normal(24).astype(np.float32)
    params = QuantizeParams(-2.0, 2.0, -2.0, 2.0, 256)
    made = Int8Gemm(w, 50, scale, shift, zero_point=3, num_threads=2)
    q50 = Quantize(params, 50, 40, fill=3, num_threads=2)
    for rows in (1, 7, 50, 130):
        a = rng.integers(0, 256, (rows, 40)).astype(np.uint8)
        got = np.zeros((rows, 24), np.float32)
        made.bind(a, got, any_rows=True).run()
        fresh = Int8Gemm(w, rows, scale, shift, zero_point=3, num_threads=2)
        want = fresh(a)
        np.testing.assert_array_equal(got, want)
        # the patched call's schedule is the one a call built for these rows has
        kg, kf = made.bind(a, got, any_rows=True), fresh.bind(a, want)
        assert kg.n_tasks == kf.n_tasks
        words = [i for i in range(len(kg.ctx)) if i not in kg.layout.pointer_words]
        np.testing.assert_array_equal(kg.ctx[words], kf.ctx[words])
        x = (rng.standard_normal((rows, 40)) * 2).astype(np.float32)
        qa, qb = np.zeros((rows, 40), np.uint8), np.zeros((rows, 40), np.uint8)
        q50.bind(x, qa, any_rows=True).run()
        Quantize(params, rows, 40, fill=3, num_threads=2)(x, qb)
        np.testing.assert_array_equal(qa, qb)
