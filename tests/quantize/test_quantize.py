"""ember.nncf.quantize against real NNCF 3.4 (placement, ranges, bias correction), the IR it
writes against real OpenVINO, and FakeQuantize semantics against numpy."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import ember
import ember.nncf as nncf
import ember.opset as ops
from ember.graph.model import Model

from .nncf_oracle import compare_placement, fake_quantizers, nncf_quantize

pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def _conv(x: object, cin: int, cout: int, name: str) -> object:
    return ops.convolution(x, _w(cout, cin, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1], name=name)


def _biased(x: object, cin: int, cout: int, name: str) -> object:
    return ops.add(_conv(x, cin, cout, name), (RNG.standard_normal((1, cout, 1, 1)) * 0.5).astype(np.float32),
                   name=f"{name}/bias")


def g_scale_shift_input() -> Model:
    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    a = ops.add(ops.multiply(x, np.float32(0.5), name="mulin"), np.float32(0.1), name="addin")
    return Model([_conv(a, 4, 4, "c1")], [x])


def g_sigmoid_then_const_multiply() -> Model:
    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    s = ops.multiply(ops.sigmoid(_biased(x, 4, 4, "c1"), name="sig"), np.float32(2.0), name="mulc")
    return Model([_conv(s, 4, 4, "c2")], [x])


def g_concat() -> Model:
    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    c1 = ops.relu(_biased(x, 4, 4, "c1"), name="r1")
    cat = ops.concat([c1, _biased(x, 4, 4, "c2")], 1, name="cat")
    return Model([_conv(cat, 8, 4, "c3")], [x])


def g_two_activation_matmul() -> Model:
    x = ops.parameter([1, 16, 32], np.float32, name="x")
    y = ops.parameter([1, 32, 16], np.float32, name="y")
    mm = ops.matmul(ops.relu(x, name="rx"), y, False, False, name="mm")
    return Model([ops.softmax(mm, -1, name="sm")], [x, y])


def g_fork_to_result() -> Model:
    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    c1 = _biased(x, 4, 4, "c1")
    return Model([ops.result(ops.sigmoid(c1, name="sig"), name="out1"), _conv(c1, 4, 4, "c2")], [x])


def g_residual_add_of_input() -> Model:
    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    add = ops.add(_biased(x, 4, 4, "c1"), x, name="res")
    return Model([_conv(ops.relu(add, name="r"), 4, 4, "c2")], [x])


def g_maxpool_fork() -> Model:
    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    mp = ops.max_pool(x, [1, 1], [1, 1], [0, 0], [0, 0], [2, 2], name="mp").output(0)
    return Model([_conv(mp, 4, 4, "c1"), ops.sigmoid(mp, name="s")], [x])


def g_pool_reshape_fc() -> Model:
    x = ops.parameter([2, 8, 6, 6], np.float32, name="x")
    r = ops.relu(_biased(x, 8, 8, "c1"), name="r")
    mp = ops.max_pool(r, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2], name="mp").output(0)
    flat = ops.reshape(mp, [2, -1], False, name="flat")
    fc = ops.add(ops.matmul(flat, _w(10, 72), False, True, name="fc"), _w(10), name="fc/bias")
    return Model([fc], [x])


def g_depthwise() -> Model:
    x = ops.parameter([1, 6, 8, 8], np.float32, name="x")
    c = ops.clamp(_biased(x, 6, 6, "c1"), 0.0, 6.0, name="relu6")
    dw = ops.group_convolution(c, _w(6, 1, 1, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1], name="dw")
    return Model([ops.add(_conv(dw, 6, 4, "c2"), _w(1, 4, 1, 1), name="c2/bias")], [x])


def g_layernorm_spelled() -> Model:
    """LayerNorm as ReduceMean/Subtract/Power/Sqrt/Divide (PP-OCR's SVTR neck): NNCF quantizes
    the Sqrt input like Power's."""
    x = ops.parameter([1, 6, 16], np.float32, name="x")
    h = ops.relu(ops.matmul(x, _w(16, 16), False, True, name="fc0"), name="r0")
    mean = ops.reduce_mean(h, np.array([-1]), True, name="mean")
    d = ops.subtract(h, mean, name="sub")
    var = ops.reduce_mean(ops.power(d, np.float32(2.0), name="pow"), np.array([-1]), True, name="var")
    norm = ops.divide(d, ops.sqrt(ops.add(var, np.float32(1e-5), name="eps"), name="sqrt"), name="div")
    return Model([ops.matmul(norm, _w(8, 16), False, True, name="fc1")], [x])


GRAPHS: list[Callable[[], Model]] = [g_scale_shift_input, g_sigmoid_then_const_multiply, g_concat,
                                     g_two_activation_matmul, g_fork_to_result, g_residual_add_of_input,
                                     g_maxpool_fork, g_pool_reshape_fc, g_depthwise, g_layernorm_spelled]


def _data(model: Model, n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{sorted(p.names)[0] if p.names else p.node.friendly_name: rng.standard_normal(tuple(p.shape)).astype(np.float32)
             for p in model.inputs} for _ in range(n)]


def _named(model: Model) -> Model:
    for p in model.get_parameters():
        if not p.output(0).names:
            p.output(0).set_names({p.friendly_name})
    return model


@pytest.mark.parametrize("build", GRAPHS, ids=[g.__name__[2:] for g in GRAPHS])
@pytest.mark.parametrize("preset", [None, nncf.QuantizationPreset.MIXED], ids=["performance", "mixed"])
def test_placement_ranges_and_biases_match_nncf(build: Callable[[], Model], preset: object, tmp_path: Path) -> None:
    import nncf as real_nncf

    model = _named(build())
    data = _data(model, 3)
    real_preset = None if preset is None else real_nncf.QuantizationPreset.MIXED
    theirs = nncf_quantize(model, data, tmp_path, preset=real_preset)
    ours = nncf.quantize(model, nncf.Dataset(data), preset=preset, subset_size=3)
    compare_placement(ours, theirs, model)


def test_quantized_reference_output_is_fake_quantize_semantics() -> None:
    """conv(FQ(x), (q - 0) * scale) + bias with numpy, against the quantized model on REFERENCE."""
    model = _named(g_scale_shift_input())
    data = _data(model, 4)
    q = nncf.quantize(model, nncf.Dataset(data), subset_size=4, fast_bias_correction=False)
    fq = next(n for n in q.get_ordered_ops() if n.type_name == "FakeQuantize")
    il, ih = float(fq.input_value(1)), float(fq.input_value(2))
    x = data[0]["x"] * np.float32(0.5) + np.float32(0.1)
    steps = np.float32(255)
    xq = np.where(x <= il, il, np.where(x > ih, ih,
                  np.rint((x - il) / (ih - il) * steps) / steps * (ih - il) + il)).astype(np.float32)
    mul = next(n for n in q.get_ordered_ops() if n.friendly_name == "c1/fq_weights_1")
    w = mul._inputs[0].node._inputs[0].node.data.astype(np.float32) * mul.input_value(1)
    ref = ember.compile_model(Model([ops.convolution(ops.parameter([1, 4, 8, 8], np.float32, name="x"),
                                                     w, [1, 1], [1, 1], [1, 1], [1, 1])]), "REFERENCE")
    expected = ref([xq])[0]
    got = ember.compile_model(q, "REFERENCE")(data[0])[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_ember_ir_runs_in_openvino_and_nncf_ir_runs_in_ember(tmp_path: Path) -> None:
    model = _named(g_concat())
    data = _data(model, 4)
    q = nncf.quantize(model, nncf.Dataset(data), subset_size=4)
    ember.save_model(q, tmp_path / "q.xml")
    core = ov.Core()
    ov_model = core.read_model(tmp_path / "q.xml")
    assert sum(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ordered_ops()) == 3
    ov_out = core.compile_model(ov_model, "CPU")(data[0])[0]
    ours = ember.compile_model(q, "REFERENCE")(data[0])[0]
    step = max(abs(float(np.max(ours))), 1e-3) / 127
    assert np.max(np.abs(ov_out - ours)) <= 2 * step  # within int8 rounding of the last layer's input
    theirs = nncf_quantize(model, data, tmp_path)
    ov_theirs = core.compile_model(core.read_model(tmp_path / "nncf.xml"), "CPU")(data[0])[0]
    ember_theirs = ember.compile_model(theirs, "REFERENCE")(data[0])[0]
    assert np.max(np.abs(ov_theirs - ember_theirs)) <= 2 * step


def test_ignored_scope_keeps_layers_float_and_validates() -> None:
    model = _named(g_concat())
    data = _data(model, 2)
    q = nncf.quantize(model, nncf.Dataset(data), ignored_scope=nncf.IgnoredScope(names=["c3"]))
    assert all(c != ("c3", 0) for cons, *_ in fake_quantizers(q).values() for c in cons)
    assert not any(n.friendly_name == "c3/fq_weights_1" for n in q.get_ordered_ops())
    with pytest.raises(nncf.QuantizationError, match="name 'nope'"):
        nncf.quantize(model, nncf.Dataset(data), ignored_scope=nncf.IgnoredScope(names=["nope"]))
    q2 = nncf.quantize(model, nncf.Dataset(data), ignored_scope=nncf.IgnoredScope(patterns=["c[12]"], validate=False))
    assert not any(n.friendly_name in ("c1/fq_weights_1", "c2/fq_weights_1") for n in q2.get_ordered_ops())


def test_user_errors_are_clear() -> None:
    model = _named(g_concat())
    with pytest.raises(nncf.QuantizationError, match="empty"):
        nncf.quantize(model, nncf.Dataset([]))
    with pytest.raises(nncf.QuantizationError, match=r"transform_fn gave .*\[1, 4, 4\]"):
        nncf.quantize(model, nncf.Dataset([0], lambda _: np.zeros((1, 4, 4), np.float32)))
    x = ops.parameter([2, 3], np.float32, name="x")
    with pytest.raises(nncf.QuantizationError, match="nothing to quantize"):
        nncf.quantize(Model([ops.relu(x)], [x]), nncf.Dataset([np.zeros((2, 3), np.float32)]))
    assert ember.quantize is nncf.quantize and ember.Dataset is nncf.Dataset


def test_bias_correction_modes_reduce_the_mean_output_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """BiasCorrection brings the quantized output's per-channel mean closer to the float model's
    than no correction does (both bias corrections correct the mean error of the weight rounding
    only, as NNCF's; they are checked against NNCF in test_bias_correction.py and above)."""
    monkeypatch.setattr(sys.modules[__name__], "RNG", np.random.default_rng(0))  # the same weights in any test order
    model = _named(g_pool_reshape_fc())
    data = _data(model, 6, seed=4)
    ref = np.stack([ember.compile_model(model, "REFERENCE")(d)[0] for d in data])

    def mean_error(q: Model) -> float:
        out = np.stack([ember.compile_model(q, "REFERENCE")(d)[0] for d in data])
        return float(np.abs((out - ref).mean(axis=(0, 1))).mean())

    none = nncf.quantize(model, nncf.Dataset(data), advanced_parameters=nncf.AdvancedQuantizationParameters(
        disable_bias_correction=True))
    full = nncf.quantize(model, nncf.Dataset(data), fast_bias_correction=False)
    assert mean_error(full) < 0.9 * mean_error(none)


def test_ignored_scope_types_and_subgraphs() -> None:
    model = _named(g_residual_add_of_input())
    data = _data(model, 2)
    q = nncf.quantize(model, nncf.Dataset(data), ignored_scope=nncf.IgnoredScope(types=["Add"]))
    assert not any(c[0] == "res" for cons, *_ in fake_quantizers(q).values() for c in cons)
    sub = nncf.IgnoredScope(subgraphs=[nncf.Subgraph(inputs=["c1"], outputs=["res"])])
    q2 = nncf.quantize(model, nncf.Dataset(data), ignored_scope=sub)
    assert not any(n.friendly_name == "c1/fq_weights_1" for n in q2.get_ordered_ops())
    with pytest.raises(nncf.QuantizationError, match="type 'Softmax'"):
        nncf.quantize(model, nncf.Dataset(data), ignored_scope=nncf.IgnoredScope(types=["Softmax"]))


def g_decomposed_swish_and_hswish() -> Model:
    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    a = _biased(x, 4, 4, "c1")
    swish = ops.multiply(a, ops.sigmoid(a, name="sig"), name="swish")
    b = _biased(swish, 4, 4, "c2")
    hs = ops.multiply(b, ops.clamp(ops.add(b, np.float32(3.0), name="plus3"), 0.0, 6.0, name="clip"), name="hsw")
    hs = ops.multiply(hs, np.float32(1 / 6), name="div6")
    return Model([_conv(hs, 4, 4, "c3")], [x])


def g_fork_to_depthwise_and_conv() -> Model:
    x = ops.parameter([1, 6, 8, 8], np.float32, name="x")
    a = ops.relu(_biased(x, 6, 6, "c1"), name="r")
    dw = ops.group_convolution(a, _w(6, 1, 1, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1], name="dw")
    return Model([ops.add(dw, _conv(a, 6, 6, "c2"), name="sum")], [x])


@pytest.mark.parametrize("build", [g_decomposed_swish_and_hswish, g_fork_to_depthwise_and_conv])
def test_fused_activations_and_mixed_forks_match_nncf(build: Callable[[], Model], tmp_path: Path) -> None:
    model = _named(build())
    data = _data(model, 3)
    compare_placement(nncf.quantize(model, nncf.Dataset(data), subset_size=3), nncf_quantize(model, data, tmp_path),
                      model)


def test_quantized_model_saves_without_fp16_compression(tmp_path: Path) -> None:
    """As OpenVINO: ``save_model`` leaves a model with FakeQuantize in f32 (biases and
    dequantization scales keep their precision); a float model is still compressed."""
    model = _named(g_pool_reshape_fc())
    q = nncf.quantize(model, nncf.Dataset(_data(model, 2)), subset_size=2)
    ember.save_model(q, tmp_path / "q.xml")
    ov.save_model(ov.Core().read_model(tmp_path / "q.xml"), tmp_path / "q_ov.xml")
    for name in ("q.xml", "q_ov.xml"):
        assert (tmp_path / name).read_text().count('element_type="f16"') == 0, name
    ember.save_model(model, tmp_path / "f.xml")
    assert (tmp_path / "f.xml").read_text().count('element_type="f16"') > 0
