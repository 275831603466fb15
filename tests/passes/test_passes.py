"""Every pass keeps outputs equal on REFERENCE and changes the structure as it claims."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import numpy as np
import pytest

import ember.opset as ops
from ember.devices.reference import run_model
from ember.errors import EmberError
from ember.graph import Model
from ember.passes import OptimizationReport, get_pass, optimize

RNG = np.random.default_rng(0)


def _counts(model: Model) -> collections.Counter:
    return collections.Counter(n.type_name for n in model.get_ordered_ops())


def _check(build: Callable[[], Model], pass_name: str, expect: dict[str, int], rtol: float = 1e-5) -> Model:
    model = build()
    feeds = [RNG.standard_normal([d.get_length() for d in p.partial_shape]).astype(np.float32)
             for p in model.inputs]
    before = run_model(model, feeds)
    after_model = get_pass(pass_name).fn(model.clone())
    after = run_model(after_model, feeds)
    for a, b in zip(before, after):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-5)
    counts = _counts(after_model)
    for op, n in expect.items():
        assert counts.get(op, 0) == n, f"{op}: {counts.get(op, 0)} != {n} in {dict(counts)}"
    assert [o.names for o in after_model.outputs] == [o.names for o in model.outputs]
    return after_model


def _x(shape: list[int]) -> object:
    return ops.parameter(shape, np.float32, name="x")


def test_fold_constants() -> None:
    def build() -> Model:
        x = _x([2, 3])
        c = ops.multiply(ops.constant(np.ones((2, 3), np.float32)), np.float32(3))
        y = ops.add(x, ops.exp(c))
        y.output(0).set_names({"y"})
        return Model([y], [x])
    _check(build, "fold_constants", {"Multiply": 0, "Exp": 0, "Add": 1})


def test_fold_constants_keeps_decompression_converts() -> None:
    from ember.io import compress_model_to_fp16

    x = _x([2, 3])
    m = compress_model_to_fp16(Model([ops.add(x, np.ones((2, 3), np.float32))], [x]))
    out = get_pass("fold_constants").fn(m)
    assert _counts(out)["Convert"] == 1


def test_common_subexpressions() -> None:
    def build() -> Model:
        x = _x([4])
        a, b = ops.relu(x), ops.relu(x)
        c1, c2 = ops.constant(np.float32([1, 2, 3, 4])), ops.constant(np.float32([1, 2, 3, 4]))
        return Model([ops.add(ops.add(a, c1), ops.add(b, c2))], [x])
    _check(build, "eliminate_common_subexpressions", {"ReLU": 1, "Add": 2, "Const": 1})


def test_common_constants_are_compared_whole() -> None:
    """Large constants are keyed by a sample of their bytes, then compared byte for byte: two
    that agree at every sampled byte but differ elsewhere stay apart; equal ones (NaNs
    included, bit for bit) merge."""
    base = np.arange(10000, dtype=np.float32)
    base[5] = np.nan
    other = base.copy()
    other[1] += 0.5  # (not a sampled position: the sample is 64 evenly spaced bytes of 40000)

    def build() -> Model:
        x = _x([10000])
        ys = [ops.add(x, ops.constant(c)) for c in (base, base.copy(), other)]
        return Model([ops.add(ops.add(ys[0], ys[1]), ys[2])], [x])
    out = get_pass("eliminate_common_subexpressions").fn(build())
    consts = [n for n in out.get_ordered_ops() if n.type_name == "Const" and n.data.size == 10000]
    assert len(consts) == 2


def test_noops() -> None:
    def build() -> Model:
        x = _x([2, 3])
        y = ops.add(x, np.zeros((2, 3), np.float32))
        y = ops.multiply(y, np.float32(1))
        y = ops.convert(y, "f32")
        y = ops.reshape(y, ops.constant(np.int64([2, 3])), False)
        y = ops.transpose(y, ops.constant(np.int64([0, 1])))
        return Model([ops.relu(y)], [x])
    _check(build, "eliminate_noops", {"Add": 0, "Multiply": 0, "Convert": 0, "Reshape": 0, "Transpose": 0})


def test_noop_that_broadcasts_stays() -> None:
    def build() -> Model:
        x = _x([1, 3])
        return Model([ops.add(x, np.zeros((2, 3), np.float32))], [x])
    _check(build, "eliminate_noops", {"Add": 1})


def test_merge_reshapes_and_transposes() -> None:
    def build() -> Model:
        x = _x([2, 3, 4])
        y = ops.reshape(x, ops.constant(np.int64([6, 4])), False)
        y = ops.unsqueeze(y, ops.constant(np.int64([0])))
        y = ops.reshape(y, ops.constant(np.int64([4, 6])), False)
        t = ops.transpose(ops.transpose(ops.relu(x), ops.constant(np.int64([2, 0, 1]))), ops.constant(np.int64([1, 2, 0])))
        return Model([y, t], [x])
    m = _check(build, "merge_reshapes", {"Reshape": 1, "Unsqueeze": 0})
    m = get_pass("merge_transposes").fn(m)
    assert _counts(m)["Transpose"] == 0


def _conv(x: object, c_in: int, c_out: int) -> object:
    w = RNG.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    return ops.convolution(x, ops.constant(w), [1, 1], [1, 1], [1, 1], [1, 1])


def test_conv_batchnorm() -> None:
    def build() -> Model:
        x = _x([1, 3, 8, 8])
        c = _conv(x, 3, 4)
        g, b, mu = (RNG.standard_normal(4).astype(np.float32) for _ in range(3))
        var = RNG.uniform(0.5, 2, 4).astype(np.float32)
        return Model([ops.relu(ops.batch_norm_inference(c, g, b, mu, var, 1e-5))], [x])
    _check(build, "fold_conv_batchnorm", {"BatchNormInference": 0, "Convolution": 1, "Add": 1}, rtol=1e-4)


def test_conv_scale() -> None:
    def build() -> Model:
        x = _x([1, 3, 8, 8])
        s = RNG.standard_normal((1, 4, 1, 1)).astype(np.float32)
        return Model([ops.multiply(_conv(x, 3, 4), ops.constant(s))], [x])
    _check(build, "fold_conv_scale", {"Multiply": 0, "Convolution": 1}, rtol=1e-4)


@pytest.mark.parametrize("form", ["a", "b", "c", "mul"])
def test_gelu(form: str) -> None:
    def build() -> Model:
        x = _x([2, 5])
        arg = ops.divide(x, np.float32(math.sqrt(2))) if form != "mul" else ops.multiply(x, np.float32(1 / math.sqrt(2)))
        one_plus = ops.add(ops.erf(arg), np.float32(1))
        if form in ("a", "mul"):
            y = ops.multiply(ops.multiply(x, one_plus), np.float32(0.5))
        elif form == "b":
            y = ops.multiply(ops.multiply(x, np.float32(0.5)), one_plus)
        else:
            y = ops.multiply(x, ops.multiply(one_plus, np.float32(0.5)))
        return Model([y], [x])
    _check(build, "recognize_gelu", {"Gelu": 1, "Erf": 0, "Multiply": 0})


def test_layernorm() -> None:
    def build() -> Model:
        x = _x([2, 4, 8])
        axes = ops.constant(np.int64([-1]))
        d = ops.subtract(x, ops.reduce_mean(x, axes, True))
        var = ops.reduce_mean(ops.power(d, np.float32(2)), axes, True)
        y = ops.divide(d, ops.sqrt(ops.add(var, np.float32(1e-5))))
        y = ops.add(ops.multiply(y, RNG.standard_normal(8).astype(np.float32)), RNG.standard_normal(8).astype(np.float32))
        return Model([y], [x])
    _check(build, "recognize_layernorm", {"MVN": 1, "ReduceMean": 0, "Sqrt": 0}, rtol=1e-4)


def test_swish_hswish_hsigmoid_mish() -> None:
    def build() -> Model:
        x = _x([3, 7])
        s = ops.multiply(ops.sigmoid(x), x)
        r6 = ops.clamp(ops.add(x, np.float32(3)), 0.0, 6.0)
        hs = ops.divide(ops.multiply(x, r6), np.float32(6))
        r6b = ops.clamp(ops.add(x, np.float32(3)), 0.0, 6.0)
        hsig = ops.multiply(r6b, np.float32(1 / 6))
        mish = ops.multiply(x, ops.tanh(ops.log(ops.add(ops.exp(x), np.float32(1)))))
        return Model([s, hs, hsig, mish], [x])
    m = _check(build, "recognize_swish", {"Swish": 1, "Sigmoid": 0})
    m = get_pass("recognize_hswish").fn(m)
    m = get_pass("recognize_mish").fn(m)
    c = _counts(m)
    assert c["HSwish"] == 1 and c["HSigmoid"] == 1 and c["Mish"] == 1 and c["Clamp"] == 0


def test_bias_activation_marks() -> None:  # noqa: D103
    x = _x([1, 3, 8, 8])
    y = ops.relu(ops.add(_conv(x, 3, 4), np.zeros((1, 4, 1, 1), np.float32)))
    m = get_pass("mark_epilogue_groups").fn(Model([y], [x]))
    marked = [n.type_name for n in m.get_ordered_ops() if "fused_group" in n.rt_info]
    assert marked == ["Convolution", "Add", "ReLU"]


def _marked(m: Model) -> list[tuple[str, str]]:
    return [(n.type_name, n.rt_info["fused_group"]["position"]) for n in m.get_ordered_ops() if "fused_group" in n.rt_info]


@pytest.mark.parametrize("case, expect", [
    ("bias-residual-relu", [("Convolution", "0"), ("Add", "1"), ("Add", "2"), ("ReLU", "3")]),
    ("residual-first-clamp", [("Convolution", "0"), ("Add", "1"), ("Add", "2"), ("Clamp", "3")]),
    ("sigmoid-tail", [("Convolution", "0"), ("Add", "1")]),  # a GEMM epilogue clamps, it does not run Sigmoid
    ("bias-shared", [("Convolution", "0"), ("Add", "1")]),  # the Add has two users: the group ends there
    ("two-biases", [("Convolution", "0"), ("Add", "1")]),  # one constant per group
    ("scaled-matmul", [("MatMul", "0"), ("Multiply", "1"), ("Add", "2")]),
    ("plain-conv", []),
])
def test_epilogue_group_marks(case: str, expect: list[tuple[str, str]]) -> None:
    x = _x([1, 3, 8, 8])
    bias = np.zeros((1, 4, 1, 1), np.float32)
    conv = _conv(x, 3, 4)
    skip = _conv(x, 3, 4)  # computed first, so the second product's kernel may add it
    if case == "bias-residual-relu":
        y = ops.relu(ops.add(skip, ops.add(_conv(x, 3, 4), bias)))
    elif case == "residual-first-clamp":
        y = ops.clamp(ops.add(bias, ops.add(skip, _conv(x, 3, 4))), 0.0, 6.0)
    elif case == "sigmoid-tail":
        y = ops.sigmoid(ops.add(conv, bias))
    elif case == "bias-shared":
        b = ops.add(conv, bias)
        y = ops.multiply(ops.relu(b), b)
    elif case == "two-biases":
        y = ops.add(ops.add(conv, bias), bias + 1)
    elif case == "scaled-matmul":
        x = _x([2, 5, 7])
        y = ops.add(ops.multiply(ops.matmul(x, ops.relu(x), False, True), np.float32(0.5)), np.zeros(5, np.float32))
    else:
        y = conv
    marked = _marked(get_pass("mark_epilogue_groups").fn(Model([y], [x])))
    assert marked == expect


def test_epilogue_marks_are_recomputed() -> None:
    """Marks from an earlier run (or a file) never outlive the graph they described."""
    x = _x([1, 3, 8, 8])
    y = ops.relu(ops.add(_conv(x, 3, 4), np.zeros((1, 4, 1, 1), np.float32)))
    m = Model([y], [x])
    for n in m.get_ordered_ops():
        n.rt_info["fused_group"] = {"version": "0", "value": "stale", "position": "7"}
    m = get_pass("mark_epilogue_groups").fn(m)
    assert _marked(m) == [("Convolution", "0"), ("Add", "1"), ("ReLU", "2")]


def test_pipeline_report_and_levels() -> None:
    x = _x([1, 3, 8, 8])
    c = _conv(x, 3, 4)
    bn = ops.batch_norm_inference(c, *(np.ones(4, np.float32) for _ in range(4)), 1e-5)
    y = ops.multiply(ops.sigmoid(bn), bn)
    m = Model([y], [x])
    rep = OptimizationReport(2)
    out = optimize(m, 2, report=rep)
    assert rep.fired()["fold_conv_batchnorm"] == 1 and rep.fired()["recognize_swish"] == 1
    assert "fold_conv_batchnorm" in rep.format() and rep.nodes_after < rep.nodes_before
    assert _counts(optimize(m, 0)) == _counts(m)
    assert _counts(optimize(m, 1))["BatchNormInference"] == 1
    assert _counts(out)["BatchNormInference"] == 0
    assert _counts(m)["BatchNormInference"] == 1  # the input model is untouched
    with pytest.raises(EmberError, match="level"):
        optimize(m, 7)
    with pytest.raises(EmberError, match="unknown pass"):
        optimize(m, 2, disabled=["nope"])


@pytest.mark.parametrize("variant", ["div_mask", "mul_nomask", "plain", "transpose_b"])
def test_attention(variant: str) -> None:
    def build() -> Model:
        q = ops.parameter([2, 4, 6, 8], np.float32, name="q")
        k = ops.parameter([2, 4, 6, 8], np.float32, name="k")
        v = ops.parameter([2, 4, 6, 8], np.float32, name="v")
        if variant == "transpose_b":
            s = ops.matmul(q, k, False, True)
        else:
            s = ops.matmul(q, ops.transpose(k, ops.constant(np.int64([0, 1, 3, 2]))), False, False)
        if variant == "div_mask":
            s = ops.add(ops.divide(s, np.float32(math.sqrt(8))), RNG.standard_normal((2, 1, 1, 6)).astype(np.float32))
        elif variant == "mul_nomask":
            s = ops.multiply(s, np.float32(0.125))
        y = ops.matmul(ops.softmax(s, -1), v, False, False)
        return Model([y], [q, k, v])
    _check(build, "recognize_attention", {"ScaledDotProductAttention": 1, "SoftMax": 0, "MatMul": 0}, rtol=1e-4)


def test_fused_node_keeps_replaced_names() -> None:
    x = _x([2, 5])
    s = ops.sigmoid(x, name="sig")
    y = ops.multiply(x, s, name="mul")
    m = get_pass("recognize_swish").fn(Model([y], [x]))
    swish = [n for n in m.get_ordered_ops() if n.type_name == "Swish"][0]
    assert swish.friendly_name == "mul"
    assert set(swish.rt_info["fused_names"]["value"].split(",")) == {"mul", "sig"}


def test_batchnorm_folds_into_f16_compressed_weights(tmp_path) -> None:
    """IR saved with f16 weights (Const f16 -> Convert) still gets its BatchNorm folded."""
    import ember
    import ember.opset as ops
    from ember.devices.reference import run_model
    from ember.passes import optimize

    rng = np.random.default_rng(0)
    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    c = ops.convolution(x, ops.constant(rng.random((4, 3, 3, 3)).astype(np.float32)), [1, 1], [1, 1], [1, 1], [1, 1])
    params = [ops.constant(rng.random(4).astype(np.float32) + 0.5) for _ in range(4)]
    model = ember.Model([ops.relu(ops.batch_norm_inference(c, *params, 1e-5))], [x])
    ember.save_model(model, tmp_path / "m.xml")  # f16 weights by default
    loaded = ember.Core().read_model(tmp_path / "m.xml")
    assert any(n.type_name == "Convert" for n in loaded.get_ordered_ops())
    opt = optimize(loaded, 2)
    assert not any(n.type_name == "BatchNormInference" for n in opt.get_ordered_ops())
    data = rng.random((1, 3, 8, 8)).astype(np.float32)
    want, got = run_model(loaded, [data])[0], run_model(opt, [data])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
