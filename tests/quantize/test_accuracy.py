"""compare (per-layer error report) against numpy, and quantize_with_accuracy_control reverting
the layer that hurts."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nncf as nncf
import ember.opset as ops
from ember.graph.model import Model
from ember.quantize.accuracy_control import few_shapes_first, layer_groups

RNG = np.random.default_rng(5)


def _fq(x: np.ndarray, low: float, high: float, levels: int = 256) -> np.ndarray:
    steps = np.float32(levels - 1)
    q = np.rint((x - low) / (high - low) * steps) / steps * (high - low) + low
    return np.where(x <= low, low, np.where(x > high, high, q)).astype(np.float32)


def _two_layer(outlier: float = 1.0) -> tuple[Model, np.ndarray, np.ndarray]:
    w1 = (RNG.standard_normal((16, 8)) * 0.3).astype(np.float32)
    w2 = (RNG.standard_normal((4, 16)) * 0.3).astype(np.float32)
    w1[0] *= outlier  # one output channel far larger than the rest feeds fc2's input range
    x = ops.parameter([4, 8], np.float32, name="x")
    h = ops.matmul(x, w1, False, True, name="fc1")
    y = ops.matmul(h, w2, False, True, name="fc2")
    return Model([y], [x], "two"), w1, w2


def test_compare_added_error_is_the_layers_own_quantization_error() -> None:
    model, w1, _ = _two_layer()
    data = [RNG.standard_normal((4, 8)).astype(np.float32) for _ in range(3)]
    q = nncf.quantize(model, nncf.Dataset(data), subset_size=3, fast_bias_correction=False)
    report = nncf.compare(model, q, nncf.Dataset(data), subset_size=3)
    fc1 = next(e for e in report.layers if e.name == "fc1")
    # numpy twin: fc1 with its input FakeQuantize and its int8 weights, on the float input
    fq = next(n for n in q.get_ordered_ops() if n.type_name == "FakeQuantize" and n.output(0).targets[0].node.friendly_name == "fc1")
    low, high = float(fq.input_value(1)), float(fq.input_value(2))
    mul = next(n for n in q.get_ordered_ops() if n.friendly_name == "fc1/fq_weights_1")
    wq = mul._inputs[0].node._inputs[0].node.data.astype(np.float32) * mul.input_value(1)
    errs = [np.linalg.norm(_fq(x, low, high) @ wq.T - x @ w1.T) / np.linalg.norm(x @ w1.T) for x in data]
    assert fc1.added == pytest.approx(float(np.mean(errs)), rel=1e-4)
    assert {e.name for e in report.layers} == {"fc1", "fc2"}
    assert report.layers[1].accumulated >= report.layers[1].added * 0.5
    assert "fc1" in str(report) and "model output" in str(report)


@pytest.mark.parametrize("ranking", ["revert", "layer_error"])
def test_accuracy_control_reverts_the_layer_that_hurts(ranking: str) -> None:
    model, _, _ = _two_layer(outlier=200.0)
    data = [RNG.standard_normal((4, 8)).astype(np.float32) for _ in range(4)]
    float_out = [ember.compile_model(model, "REFERENCE")(x)[0] for x in data]

    def validate(compiled: object, items: object) -> float:
        # higher is better: minus the mean relative error against the float model's outputs
        errs = [np.linalg.norm(compiled(x)[0] - f) / np.linalg.norm(f) for x, f in zip(items, float_out)]
        return -float(np.mean(errs))

    q = nncf.quantize(model, nncf.Dataset(data), subset_size=4)
    assert -validate(ember.compile_model(q, "CPU"), data) > 0.01
    qa = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(data), nncf.Dataset(data), validate, max_drop=0.01,
        advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(ranking=ranking))
    assert -validate(ember.compile_model(qa, "CPU"), data) <= 0.01
    reverted = qa.rt_info["ember_reverted_layers"]
    assert reverted and reverted[0] == "fc2"  # fc2 reads the outlier-stretched range
    fc2 = next(n for n in qa.get_ordered_ops() if n.friendly_name == "fc2")
    assert all(o.node.type_name not in ("FakeQuantize", "Multiply") for o in fc2._inputs)


def _chain(n: int) -> Model:
    x = ops.parameter([4, 8], np.float32, name="x")
    h = x
    for i in range(n):
        h = ops.relu(ops.matmul(h, (RNG.standard_normal((8, 8)) * 0.4).astype(np.float32), False, True,
                                name=f"fc{i}"))
    return Model([h], [x], "chain")


def _float_inputs(model: Model, name: str) -> bool:
    node = next(n for n in model.get_ordered_ops() if n.friendly_name == name)
    return all(o.node.type_name not in ("FakeQuantize", "Multiply") for o in node._inputs)


def test_accuracy_control_steps_back_as_nncf() -> None:
    """NNCF's greedy loop: a revert that makes the drop worse is kept once (the step after a
    step back, or the first), undone the next time; the loop stops once the drop is within."""
    model = _chain(3)
    data = [RNG.standard_normal((4, 8)).astype(np.float32) for _ in range(3)]
    metrics = iter([1.0, 0.5, 0.4, 0.3, 0.995])  # float, int8, then one value per step

    def validate(compiled: object, items: object) -> float:
        return next(metrics)

    qa = nncf.quantize_with_accuracy_control(model, nncf.Dataset(data), nncf.Dataset(data), validate, max_drop=0.01)
    reverted = qa.rt_info["ember_reverted_layers"]
    assert len(reverted) == 2 and len(set(reverted)) == 2  # the second step was taken back
    info = qa.rt_info["ember_accuracy_control"]
    assert info["steps"] == "3" and float(info["drop"]) == pytest.approx(0.005)
    names = {f"fc{i}" for i in range(3)}
    (kept,) = names - set(reverted)
    assert not _float_inputs(qa, kept) and all(_float_inputs(qa, n) for n in reverted)
    # the model after the step back computes what a fresh quantize with those layers ignored does
    ref = nncf.quantize(model, nncf.Dataset(data), subset_size=3, ignored_scope=nncf.IgnoredScope(names=reverted))
    x = data[0]
    np.testing.assert_allclose(ember.compile_model(qa, "CPU")(x)[0], ember.compile_model(ref, "CPU")(x)[0],
                               rtol=1e-5, atol=1e-5)


def test_layers_sharing_a_quantizer_are_one_group() -> None:
    x = ops.parameter([4, 8], np.float32, name="x")
    a = ops.matmul(x, (RNG.standard_normal((8, 8))).astype(np.float32), False, True, name="a")
    b = ops.matmul(x, (RNG.standard_normal((8, 8))).astype(np.float32), False, True, name="b")
    c = ops.matmul(ops.relu(ops.add(a, b)), (RNG.standard_normal((8, 8))).astype(np.float32), False, True, name="c")
    model = Model([c], [x], "fork")
    data = [RNG.standard_normal((4, 8)).astype(np.float32) for _ in range(3)]
    q = nncf.quantize(model, nncf.Dataset(data), subset_size=3)
    groups = sorted(sorted(g) for g in layer_groups(q, ["a", "b", "c"]))
    assert groups == [["a", "b"], ["c"]]  # a and b read the same FakeQuantize of x


def test_ranking_subset_takes_few_shapes() -> None:
    items = [np.zeros((1, 3, 48, w), np.float32) for w in (320, 480, 320, 640, 480, 320)]
    assert few_shapes_first(items, 3) == [0, 2, 5]  # the three 320-wide items
    assert few_shapes_first(items, 5) == [0, 1, 2, 4, 5]
    assert few_shapes_first([{"a": np.zeros(2)}, {"a": np.zeros(3)}, {"a": np.zeros(3)}], 2) == [1, 2]


def _ppocr_like() -> Model:
    """The recognizer's quantizer kinds in one graph: a first convolution on the input, biases
    (FastBiasCorrection moves them), a hswish spelled out feeding a fork, a Concat
    sharing one range, a fork, a LayerNorm spelled out, a MatMul of two activations, a head MatMul."""
    def w(*shape: int) -> np.ndarray:
        return (RNG.standard_normal(shape) * 0.3).astype(np.float32)

    x = ops.parameter([1, 3, 4, 8], np.float32, name="x")
    c1 = ops.add(ops.convolution(x, w(6, 3, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1], name="c1"), w(1, 6, 1, 1),
                 name="c1/bias")
    hs = ops.multiply(c1, ops.clamp(ops.add(c1, np.float32(3.0), name="plus3"), 0.0, 6.0, name="clip"), name="hsw")
    c2 = ops.convolution(hs, w(6, 6, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1], name="c2")
    cat = ops.concat([ops.relu(c2, name="r2"), hs], 1, name="cat")
    c3 = ops.add(ops.convolution(cat, w(8, 12, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1], name="c3"), w(1, 8, 1, 1),
                 name="c3/bias")
    seq = ops.transpose(ops.reshape(c3, [1, 8, 32], False, name="flat"), [0, 2, 1], name="seq")  # [1, 32, 8]
    mean = ops.reduce_mean(seq, np.array([-1]), True, name="mean")
    d = ops.subtract(seq, mean, name="sub")
    var = ops.reduce_mean(ops.power(d, np.float32(2.0), name="pow"), np.array([-1]), True, name="var")
    norm = ops.divide(d, ops.sqrt(ops.add(var, np.float32(1e-5), name="eps"), name="sqrt"), name="div")
    q = ops.matmul(norm, w(8, 8), False, True, name="q")
    k = ops.matmul(norm, w(8, 8), False, True, name="k")
    att = ops.softmax(ops.matmul(q, k, False, True, name="qk"), -1, name="sm")
    ctx = ops.matmul(att, norm, False, False, name="av")
    head = ops.matmul(ops.add(ctx, norm, name="res"), w(5, 8), False, True, name="head")
    return Model([ops.softmax(head, -1, name="probs")], [x], "ppocr_like")


def test_reverting_every_group_gives_the_float_model_back() -> None:
    """Accuracy control's bookkeeping (issue 12's "112 of 160 layers reverted, drop still 0.167"):
    with every group reverted no FakeQuantize or int8 weight is left in use and the model computes
    exactly what the float model does (biases moved by bias correction put back too)."""
    from ember.quantize.accuracy_control import revert_layer
    from ember.quantize.compare import quantized_layers

    model = _ppocr_like()
    data = [RNG.standard_normal((1, 3, 4, 8)).astype(np.float32) for _ in range(4)]
    q = nncf.quantize(model, nncf.Dataset(data), subset_size=4)
    f_by_name = {n.friendly_name: n for n in model.get_ordered_ops()}
    q_by_name = {n.friendly_name: n for n in q.get_ordered_ops()}
    names = [n.friendly_name for n in quantized_layers(q)]
    assert {"c1", "cat", "sqrt", "qk", "av", "res", "head"} <= set(names)  # the kinds the docstring lists
    x = data[0]
    assert not np.array_equal(ember.compile_model(q, "CPU")(x)[0], ember.compile_model(model, "CPU")(x)[0])
    for group in layer_groups(q, names):
        for name in group:
            revert_layer(q_by_name[name], f_by_name[name])
    q.validate_nodes_and_infer_types()
    assert not [n.friendly_name for n in q.get_ordered_ops() if n.type_name == "FakeQuantize" and n.output(0).targets]
    assert not quantized_layers(q)
    for item in data:
        np.testing.assert_array_equal(ember.compile_model(q, "CPU")(item)[0], ember.compile_model(model, "CPU")(item)[0])
