"""Control flow and real models run natively on the CPU device (issue 13), against REFERENCE.

- If whose condition is known when the plan is lowered (a constant, a test on a static shape)
  is inlined: no If step, no reference kernel, nested Ifs too;
- If on a scalar compared with a constant (``sr == 16000``) evaluates the comparison itself;
- an If body that is invalid for the given input shapes (the dead 8 kHz branch of Silero VAD)
  no longer stops specialization: the If takes the other body's shapes, and taking the invalid
  body raises;
- real models (slow): Silero VAD over 20 chunks with the state carried, against REFERENCE and
  ONNX Runtime, with no reference kernel in any plan.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.lowering.control import plan_fallbacks
from ember.errors import EmberError
from ember.graph.model import Model

RNG = np.random.default_rng(13)


def _f(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _run(model: Model, device: str, feeds: list[np.ndarray]) -> list[np.ndarray]:
    cm = ember.Core().compile_model(model, device)
    return [np.asarray(x) for x in cm(feeds).to_tuple()]


def _if(cond: object, then: Callable, other: Callable, inputs: list) -> object:
    """An If on ``cond`` over ``inputs``: ``then``/``other`` build each body's value from its parameters."""
    node = ops.if_op(cond)
    results = []
    params = []
    for body, setter in ((then, node.set_then_body), (other, node.set_else_body)):
        ps = [ops.parameter(x.get_partial_shape(), x.get_element_type()) for x in inputs]
        r = ops.result(body(ps))
        setter(Model([r], ps, "body"))
        results.append(r)
        params.append(ps)
    for x, tp, ep in zip(inputs, *params):
        node.set_input(x.output(0) if hasattr(x, "output") else x, tp, ep)
    return node.set_output(*results)


def _shape_test_model(dynamic: bool) -> Model:
    """An If whose condition tests the input's last dimension (6 or not)."""
    x = ops.parameter([1, 3, -1] if dynamic else [1, 3, 6], np.float32, name="x")
    last = ops.gather(ops.shape_of(x), np.int64(2), np.int64(0))
    is6 = ops.equal(last, np.int64(6))

    def then_body(ps: list) -> object:
        return ops.multiply(ops.relu(ps[0]), np.float32(2.0))

    def else_body(ps: list) -> object:
        return ops.add(ops.tanh(ps[0]), np.float32(1.0))

    y = _if(is6, then_body, else_body, [x])
    return Model([ops.result(ops.add(y, np.float32(0.5)))], [x], "shape_if")


def _nested_model() -> Model:
    """An If in an If, both conditions tests on static shapes: everything inlines."""
    x = ops.parameter([2, 4], np.float32, name="x")
    rows = ops.gather(ops.shape_of(x), np.int64(0), np.int64(0))

    def then_body(ps: list) -> object:
        q = ps[0]
        cols = ops.gather(ops.shape_of(q), np.int64(1), np.int64(0))
        return _if(ops.greater(cols, np.int64(3)), lambda r: ops.exp(r[0]), lambda r: ops.negative(r[0]), [q])

    return Model([ops.result(_if(ops.equal(rows, np.int64(2)), then_body,
                                 lambda ps: ops.absolute(ps[0]), [x]))], [x], "nested")


def test_if_on_static_shape_is_inlined() -> None:
    model = _shape_test_model(dynamic=False)
    cm = ember.Core().compile_model(model, "CPU")
    prog = cm._executable.program
    assert not any(op.type_name == "If" for op in prog.ops) and prog.stats["fallbacks"] == {}
    x = _f(1, 3, 6)
    np.testing.assert_allclose(np.asarray(cm([x]).to_tuple()[0]), _run(model, "REFERENCE", [x])[0], rtol=1e-6)


@pytest.mark.parametrize("size", [6, 5, 0])
def test_if_on_dynamic_shape_inlined_per_shape(size: int) -> None:
    model = _shape_test_model(dynamic=True)
    cm = ember.Core().compile_model(model, "CPU")
    x = _f(1, 3, size)
    np.testing.assert_allclose(np.asarray(cm([x]).to_tuple()[0]), _run(model, "REFERENCE", [x])[0], rtol=1e-6)
    assert not any(op.type_name == "If" for op in cm._executable.program.ops)


def test_nested_ifs_are_inlined() -> None:
    model = _nested_model()
    cm = ember.Core().compile_model(model, "CPU")
    prog = cm._executable.program
    assert not any(op.type_name == "If" for op in prog.ops) and prog.stats["fallbacks"] == {}
    x = _f(2, 4)
    np.testing.assert_allclose(np.asarray(cm([x]).to_tuple()[0]), np.exp(x), rtol=1e-6)


@pytest.mark.parametrize("compare,dtype,shape,values", [
    ("equal", np.int64, [], [16000, 8000]),
    ("not_equal", np.int32, [1], [3, 4]),
    ("less", np.float32, [], [-1.5, 2.0, np.nan]),
    ("greater_equal", np.int64, [1, 1], [4, 3]),
])
def test_if_on_scalar_comparison(compare: str, dtype: type, shape: list, values: list) -> None:
    s = ops.parameter(shape, dtype, name="s")
    x = ops.parameter([2, 3], np.float32, name="x")
    constant = np.array({"equal": 16000, "not_equal": 4, "less": 0.5, "greater_equal": 4}[compare], dtype)
    cond = getattr(ops, compare)(s, constant)
    if shape:
        cond = ops.reshape(cond, np.zeros(0, np.int64), False)
    y = _if(cond, lambda ps: ops.relu(ps[0]), lambda ps: ops.multiply(ps[0], np.float32(-3.0)), [x])
    model = Model([ops.result(y)], [s, x], "scalar_if")
    cm = ember.Core().compile_model(model, "CPU")
    prog = cm._executable.program
    assert prog.stats["fallbacks"] == {}
    python_steps = [op.type_name for op in prog.ops if not op.native and op.type_name != "InputCopy"]
    assert python_steps == ["If"]  # the comparison: in the If step, or native (after a Reshape)
    for v in values:
        feeds = [np.full(shape, v, dtype), _f(2, 3)]
        np.testing.assert_array_equal(np.asarray(cm(feeds).to_tuple()[0]), _run(model, "REFERENCE", feeds)[0])


def _invalid_branch_model() -> Model:
    """then: Reshape to [-1, 4] (valid for 8 elements), else: Reshape to [3, -1] (invalid for 8)."""
    c = ops.parameter([], np.bool_, name="c")
    x = ops.parameter([-1], np.float32, name="x")
    y = _if(c, lambda ps: ops.reshape(ps[0], np.array([-1, 4], np.int64), False),
            lambda ps: ops.reshape(ps[0], np.array([3, -1], np.int64), False), [x])
    return Model([ops.result(y)], [c, x], "invalid_branch")


def test_invalid_untaken_body_does_not_stop_specialization() -> None:
    model = _invalid_branch_model()
    cm = ember.Core().compile_model(model, "CPU")
    x = _f(8)
    got = np.asarray(cm([np.bool_(True), x]).to_tuple()[0])
    np.testing.assert_array_equal(got, x.reshape(2, 4))
    assert cm._executable._programs.stats["specializations"] == 1
    assert cm._executable.program.ops and all(t.shape is not None for t in cm._executable.program.outputs)
    with pytest.raises(EmberError):
        cm([np.bool_(False), x])
    with pytest.raises(EmberError):
        _run(model, "REFERENCE", [np.bool_(False), x])
    x9 = _f(9)  # both bodies valid for 9 elements? then [-1, 4] is not: else runs
    np.testing.assert_array_equal(np.asarray(cm([np.bool_(False), x9]).to_tuple()[0]), x9.reshape(3, 3))


def test_if_both_bodies_invalid_still_raises() -> None:
    model = _invalid_branch_model()
    with pytest.raises(EmberError, match="then_body"):
        model.reshape({"x": [7]})


# -- real models (slow) ------------------------------------------------------------------------


def _zoo(name: str) -> tuple[Model, object]:
    from ember import zoo

    try:
        return zoo.load(name), zoo.fetch(name)
    except zoo.RegistryUnreachableError as e:
        pytest.skip(f"zoo model {name} cannot be fetched: {e}")


@pytest.mark.slow
def test_silero_vad_20_chunks_native() -> None:
    ort = pytest.importorskip("onnxruntime")
    model, prepared = _zoo("silero-vad")
    core = ember.Core()
    cpu, ref = core.compile_model(model, "CPU"), core.compile_model(model, "REFERENCE")
    sess = ort.InferenceSession(str(next(iter(prepared.files.values()))), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(4)
    t = np.arange(512 * 20) / 16000.0
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) +
             0.02 * rng.standard_normal(t.size)).astype(np.float32)
    sr = np.array(16000, np.int64)
    sc = sr_ = so = np.zeros((2, 1, 128), np.float32)
    for k in range(20):
        chunk = audio[None, k * 512:(k + 1) * 512]
        out_c, sc = cpu([chunk, sc, sr]).to_tuple()
        out_r, sr_ = ref([chunk, sr_, sr]).to_tuple()
        out_o, so = sess.run(None, {"input": chunk, "state": so, "sr": sr})
        np.testing.assert_allclose(out_c, out_r, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(sc, sr_, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out_c, out_o, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(sc, so, rtol=1e-4, atol=1e-4)
    exe = cpu._executable
    # the dead 8 kHz branch no longer stops specialization: the plan has static shapes
    assert all(t.shape is not None for t in exe.program.outputs)
    assert plan_fallbacks(exe.program) == {}
    # the 16 kHz branch is one plan: its shape-test Ifs were inlined
    assert [op.type_name for op in exe.program.ops if not op.native] == ["If"]
    # 8 kHz: 256-sample chunks take the other branch (its own specialization); a 512-sample
    # chunk at 8 kHz is invalid for that branch and raises, as on REFERENCE
    s8c = s8r = np.zeros((2, 1, 128), np.float32)
    sr8 = np.array(8000, np.int64)
    for k in range(3):
        chunk = audio[None, k * 256:(k + 1) * 256]
        out_c, s8c = cpu([chunk, s8c, sr8]).to_tuple()
        out_r, s8r = ref([chunk, s8r, sr8]).to_tuple()
        np.testing.assert_allclose(out_c, out_r, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s8c, s8r, rtol=1e-4, atol=1e-4)
    with pytest.raises(EmberError, match="else_body"):
        cpu([audio[None, :512], s8c, sr8])


_SHAPES = {"ppocr-rec": (1, 3, 48, 320), "ppocr-det": (1, 3, 480, 640), "ppocr-cls": (1, 3, 48, 192)}


def _feeds(name: str, model: Model) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    feeds = []
    for p in model.get_parameters():
        shape = _SHAPES.get(name) or [d.get_length() if d.is_static else (1 if i == 0 else 24)
                                      for i, d in enumerate(p.get_partial_shape())]
        dt = p.get_element_type().dtype
        if dt.kind in "iu":
            feeds.append(np.ones(shape, dt) if "mask" in p.friendly_name else rng.integers(0, 1000, shape).astype(dt))
        else:
            feeds.append((rng.random(shape, dtype=np.float32) * 2 - 1).astype(dt))
    return feeds


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ppocr-rec", "ppocr-det", "ppocr-cls", "efficientnet-lite0", "all-minilm-l6-v2",
                                  "mediapipe-hand-landmark", "mediapipe-palm-detection", "mediapipe-face-landmark"])
def test_zoo_model_has_no_reference_kernel(name: str) -> None:
    model, _ = _zoo(name)
    feeds = _feeds(name, model)
    core = ember.Core()
    cm = core.compile_model(model, "CPU")
    got = [np.asarray(x) for x in cm(feeds).to_tuple()]
    assert plan_fallbacks(cm._executable.program) == {}
    want = [np.asarray(x) for x in core.compile_model(model, "REFERENCE")(feeds).to_tuple()]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        err = float(np.abs(g.astype(np.float64) - w).max() / max(float(np.abs(w).max()), 1e-6))
        assert err < 1e-4, f"relative error {err:.2e}"


# -- ONNX LSTM with peepholes / input_forget (ember's LSTMONNX) --------------------------------

_LSTM_ONNX_CASES = [
    # (seq, batch, input, hidden, direction, peepholes, input_forget, clip, lens, states)
    (5, 1, 8, 16, "forward", True, False, 0.0, None, True),
    (4, 3, 5, 17, "forward", True, True, 0.0, None, True),
    (6, 2, 7, 9, "reverse", False, True, 0.0, [6, 3], False),
    (3, 4, 6, 20, "bidirectional", True, False, 1.5, [3, 1, 2, 3], True),
    (1, 1, 3, 5, "bidirectional", True, True, 0.0, None, False),
]


@pytest.mark.parametrize("case", _LSTM_ONNX_CASES, ids=lambda c: f"{c[4]}-p{int(c[5])}-f{int(c[6])}-b{c[1]}")
def test_lstm_onnx_native(case: tuple) -> None:
    seq, batch, isz, hidden, direction, peep, coupled, clip, lens, states = case
    dirs = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(seq * 100 + hidden)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.4).astype(np.float32)

    x = ops.parameter([seq, batch, isz], np.float32, name="x")
    params = [x]
    if states:
        h0 = ops.parameter([dirs, batch, hidden], np.float32, name="h0")
        c0 = ops.parameter([dirs, batch, hidden], np.float32, name="c0")
        params += [h0, c0]
    empty = ops.constant(np.zeros(0, np.float32))
    node = ops.lstm_onnx(x, ops.constant(w(dirs, 4 * hidden, isz)), ops.constant(w(dirs, 4 * hidden, hidden)),
                         ops.constant(w(dirs, 8 * hidden)),
                         ops.constant(np.array(lens if lens else [], np.int32)),
                         h0 if states else empty, c0 if states else empty,
                         ops.constant(w(dirs, 3 * hidden)) if peep else empty,
                         hidden_size=hidden, direction=direction, activations=["sigmoid", "tanh", "tanh"] * dirs,
                         clip=clip, input_forget=coupled)
    model = Model([ops.result(o) for o in node.outputs()], params, "lstm_onnx")
    cm = ember.Core().compile_model(model, "CPU")
    assert cm._executable.program.stats["fallbacks"] == {}
    feeds = [(rng.standard_normal(p.get_partial_shape().to_shape()) * 0.8).astype(np.float32) for p in params]
    got = [np.asarray(v) for v in cm(feeds).to_tuple()]
    want = _run(model, "REFERENCE", feeds)
    for g, wv in zip(got, want):
        np.testing.assert_allclose(g, wv, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("input_forget", [0, 1])
def test_onnx_lstm_peepholes_against_onnxruntime(input_forget: int, tmp_path: object) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ort = pytest.importorskip("onnxruntime")
    seq, batch, isz, hidden, dirs = 7, 3, 6, 12, 2
    rng = np.random.default_rng(31 + input_forget)
    inits = {"W": rng.standard_normal((dirs, 4 * hidden, isz)), "R": rng.standard_normal((dirs, 4 * hidden, hidden)),
             "B": rng.standard_normal((dirs, 8 * hidden)), "P": rng.standard_normal((dirs, 3 * hidden))}
    inits = {k: (v * 0.3).astype(np.float32) for k, v in inits.items()}
    lens = numpy_helper.from_array(np.array([7, 4, 2], np.int32), "L")
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "L", "", "", "P"], ["Y", "Yh", "Yc"], hidden_size=hidden,
                            direction="bidirectional", input_forget=input_forget)
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [seq, batch, isz])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Yh", "Yc")],
        [numpy_helper.from_array(v, k) for k, v in inits.items()] + [lens])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    path = str(tmp_path) + "/lstm.onnx"  # type: ignore[operator]
    onnx.save(proto, path)
    x = rng.standard_normal((seq, batch, isz)).astype(np.float32)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"X": x})
    cm = ember.Core().compile_model(path, "CPU")
    assert cm._executable.program.stats["fallbacks"] == {}
    for g, wv in zip(cm([x]).to_tuple(), want):
        np.testing.assert_allclose(np.asarray(g), wv, rtol=1e-4, atol=2e-5)


# -- Loop and TensorIterator: bodies as CPU plans -----------------------------------------------


def _control_flow_cases() -> list:
    from tests.ops.test_control_flow import CASES

    return CASES


@pytest.mark.parametrize("case", _control_flow_cases(), ids=lambda c: c.__name__)
def test_control_flow_cases_on_cpu(case: Callable) -> None:
    """The control-flow op tests' table (If, Loop, TensorIterator), CPU against REFERENCE."""
    model, feed_sets = case(ops, Model)
    cm = ember.Core().compile_model(model, "CPU")
    ref = ember.Core().compile_model(model, "REFERENCE")
    for feeds in feed_sets:
        got = [np.asarray(v) for v in cm(feeds).to_tuple()]
        want = [np.asarray(v) for v in ref(feeds).to_tuple()]
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    fallbacks = plan_fallbacks(cm._executable.program)
    assert not set(fallbacks) & {"If", "Loop", "TensorIterator"}, fallbacks


@pytest.mark.slow
@pytest.mark.parametrize("units,batch", [(24, 3), (17, 1)])
def test_keras_lstm_loop_native(units: int, batch: int) -> None:
    """Keras' LSTM converts to a Loop over the time steps (TensorFlow frontend): recognised as an
    LSTM layer, it runs on the recurrent kernel (one plan step), and the model matches Keras."""
    tf = pytest.importorskip("tensorflow")
    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    i = tf.keras.Input((12,), dtype="int32")
    lstm = layers.LSTM(units)
    km = tf.keras.Model(i, layers.Dense(5)(lstm(layers.Embedding(100, 16)(i))))
    model = ember.convert_model(km)
    assert sum(n.type_name == "Loop" for n in model.get_ordered_ops()) == 1
    cm = ember.Core().compile_model(model, "CPU")
    ids = np.random.default_rng(8).integers(0, 100, (batch, 12)).astype(np.int32)
    got = np.asarray(cm([ids]).to_tuple()[0])
    prog = cm._executable.program
    assert plan_fallbacks(prog) == {}
    assert [op.type_name for op in prog.ops].count("LSTMSequence") == 1
    np.testing.assert_allclose(got, km(ids).numpy(), rtol=1e-4, atol=1e-5)


def _loop_lstm(trip: int, seq: int = 8, batch: int = 2, isz: int = 5, hidden: int = 6) -> Model:
    """An LSTM written as a Loop over the current-iteration port (Keras' cell, gates i, f, c, o)."""
    rng = np.random.default_rng(trip)
    x = ops.parameter([seq, batch, isz], np.float32, name="x")
    h0 = ops.parameter([batch, hidden], np.float32, name="h0")
    it = ops.parameter([], np.int64, name="it")
    bx = ops.parameter([seq, batch, isz], np.float32, name="bx")
    bh = ops.parameter([batch, hidden], np.float32, name="bh")
    bc = ops.parameter([batch, hidden], np.float32, name="bc")
    w = (rng.standard_normal((isz, 4 * hidden)) * 0.5).astype(np.float32)
    r = (rng.standard_normal((hidden, 4 * hidden)) * 0.5).astype(np.float32)
    bias = (rng.standard_normal(4 * hidden) * 0.5).astype(np.float32)
    xt = ops.gather(bx, it, np.int64(0))
    g = ops.add(ops.add(ops.matmul(xt, w, False, False), ops.matmul(bh, r, False, False)), bias)
    i, f, cc, o = ops.split(g, np.int64(1), 4).outputs()
    c_new = ops.add(ops.multiply(ops.sigmoid(f), bc), ops.multiply(ops.sigmoid(i), ops.tanh(cc)))
    h_new = ops.multiply(ops.sigmoid(o), ops.tanh(c_new))
    rc, rh, rcc = ops.result(ops.constant(True)), ops.result(h_new), ops.result(c_new)
    node = ops.loop(ops.constant(np.int64(trip)), ops.constant(True))
    node.set_function(Model([rc, rh, rcc], [it, bx, bh, bc], "cell"))
    node.set_special_body_ports([0, 0])
    node.set_invariant_input(bx, x.output(0))
    node.set_merged_input(bh, h0.output(0), rh.output(0))
    node.set_merged_input(bc, ops.constant(np.zeros((batch, hidden), np.float32)).output(0), rcc.output(0))
    outs = [node.get_iter_value(rh.output(0), -1), node.get_iter_value(rcc.output(0), -1)]
    return Model([ops.result(v) for v in outs], [x, h0], "loop_lstm")


@pytest.mark.parametrize("trip,native", [(8, True), (5, False)])
def test_loop_lstm_recognised_only_when_it_is_one(trip: int, native: bool) -> None:
    """A Loop over all 8 steps of its sequence is one LSTM kernel; over 5 it keeps the
    body-plan path. Both match REFERENCE."""
    model = _loop_lstm(trip)
    cm = ember.Core().compile_model(model, "CPU")
    feeds = [_f(8, 2, 5), _f(2, 6)]
    got = [np.asarray(v) for v in cm(feeds).to_tuple()]
    want = _run(model, "REFERENCE", feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    types = [op.type_name for op in cm._executable.program.ops]
    assert ("LSTMSequence" in types) == native and ("Loop" in types) == (not native)
