"""Activations in the GEMM/convolution epilogue (HSwish, HSigmoid, Swish, GELU erf/tanh, Sigmoid):
the kernels against an independent numpy twin on every ISA level and in bf16 (AVX512-BF16 and AMX),
and conv/MatMul + bias [+ residual] + activation models on the CPU device against REFERENCE,
with the activation checked to be inside the producing kernel (no elementwise op left)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.kernels.gemm import EPILOGUE_ACTIVATIONS, Epilogue, bf16_supported, gemm
from ember.devices.cpu.llvm.isa import host_isa, supported_levels
from ember.errors import EmberError
from ember.graph.model import Model

ACTS = [a for a in EPILOGUE_ACTIVATIONS if a]
_erf = np.vectorize(math.erf, otypes=[np.float64])


def twin(name: str, x: np.ndarray) -> np.ndarray:
    """The activations in float64, written from their definitions."""
    x = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        sig = 1.0 / (1.0 + np.exp(-x))
        return {"hswish": x * np.minimum(np.maximum(x + 3, 0), 6) / 6,
                "hsigmoid": np.minimum(np.maximum(x + 3, 0), 6) / 6,
                "swish": x * sig, "sigmoid": sig,
                "gelu_erf": 0.5 * x * (1 + _erf(x / math.sqrt(2))),
                "gelu_tanh": 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))}[name]


# (m, k, n): tails in both directions, one row, a wide FFN-like shape
SHAPES = [(37, 64, 70), (1, 24, 33), (130, 96, 160)]


@pytest.mark.parametrize("level", supported_levels())
@pytest.mark.parametrize("act", ACTS)
def test_gemm_activation_matches_numpy(level: str, act: str) -> None:
    rng = np.random.default_rng(len(act))
    isa = host_isa(level)
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = (rng.standard_normal((k, n)) * 2 / math.sqrt(k)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        res = rng.standard_normal((m, n)).astype(np.float32)
        y = gemm(a, b, bias, Epilogue(activation=act), residual=res, isa=isa)
        want = twin(act, a.astype(np.float64) @ b + bias + res)
        np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5, err_msg=f"{act} {m}x{k}x{n}")


@pytest.mark.skipif(not bf16_supported(), reason="no AVX512_BF16 here")
@pytest.mark.parametrize("amx", [False, True])
def test_bf16_gemm_activation_is_the_f32_epilogue_then_the_activation(amx: bool) -> None:
    isa = host_isa("amx" if amx else "avx512") if amx and host_isa().amx_bf16 else host_isa("avx512")
    if amx and not isa.amx_bf16:
        pytest.skip("no AMX here")
    rng = np.random.default_rng(3)
    a = rng.standard_normal((75, 96)).astype(np.float32)
    b = (rng.standard_normal((96, 50)) / 8).astype(np.float32)
    bias = rng.standard_normal(50).astype(np.float32)
    plain = gemm(a, b, bias, isa=isa, precision="bf16")
    for act in ACTS:
        y = gemm(a, b, bias, Epilogue(activation=act), isa=isa, precision="bf16")
        np.testing.assert_allclose(y, twin(act, plain), rtol=2e-6, atol=2e-6, err_msg=act)


def test_activation_edge_values() -> None:
    """NaN stays NaN; +-inf and large inputs give the activations' limits."""
    k = 1
    a = np.array([[np.nan], [np.inf], [-np.inf], [100.0], [-100.0], [0.0], [-3.0], [3.0]], np.float32)
    b = np.ones((k, 17), np.float32)
    for act in ACTS:
        y = gemm(a, b, epilogue=Epilogue(activation=act))
        want = twin(act, a @ b)
        assert np.isnan(y[0]).all(), act
        finite = np.isfinite(want[3:])
        np.testing.assert_allclose(y[3:][finite], want[3:][finite], rtol=1e-6, atol=1e-6, err_msg=act)
        for row in (1, 2):  # inf inputs: the limit (or NaN where the formula gives inf * 0)
            if np.isfinite(want[row]).all():
                np.testing.assert_allclose(y[row], want[row], err_msg=act)


@pytest.mark.parametrize("level", supported_levels())
def test_gemm_affine_after_the_activation(level: str) -> None:
    """PP-LCNetV3's learnable affine: ``act(y) * s + t``, also after a clamp alone."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((29, 40)).astype(np.float32)
    b = (rng.standard_normal((40, 45)) / 6).astype(np.float32)
    for epi, act in ((Epilogue(activation="hswish", affine=(1.25, -0.5)), "hswish"),
                     (Epilogue(0.0, 6.0, affine=(-0.75, 2.0)), "")):
        y = gemm(a, b, epilogue=epi, isa=host_isa(level))
        z = a.astype(np.float64) @ b
        z = twin(act, z) if act else np.clip(z, 0, 6)
        np.testing.assert_allclose(y, z * epi.affine[0] + epi.affine[1], rtol=2e-5, atol=2e-5)


def test_unknown_activation_is_refused() -> None:
    with pytest.raises(EmberError, match="gelu_erf"):
        Epilogue(activation="mish")


# -- lowering: the activation after a convolution or MatMul runs in its epilogue --------------

def _w(*shape: int, fan: int) -> np.ndarray:
    return (np.random.default_rng(sum(shape)).standard_normal(shape) / np.sqrt(fan)).astype(np.float32)


def _activate(y, act: str):
    if act.startswith("gelu"):
        return ops.gelu(y, act.split("_")[1])
    if act == "swish":
        return ops.swish(y)
    return {"hswish": ops.hswish, "hsigmoid": ops.hsigmoid, "sigmoid": ops.sigmoid}[act](y)


def conv_model(act: str, k: int, residual: bool, affine: bool = False) -> Model:
    """conv kxk + bias [+ input] -> act [* s + t] (the PP-OCR / EfficientNet shape of things)."""
    x = ops.parameter([1, 24, 9, 11], np.float32, name="x")
    y = ops.add(ops.convolution(x, _w(24, 24, k, k, fan=24 * k * k), [1, 1], [k // 2] * 2, [k // 2] * 2, [1, 1]),
                _w(1, 24, 1, 1, fan=4))
    if residual:
        y = ops.add(y, x)
    y = _activate(y, act)
    if affine:  # PP-LCNetV3's learnable affine after the activation
        y = ops.add(ops.multiply(np.float32(1.25), y), np.array(-0.5, np.float32))
    return Model([y], [x], "conv_act")


def ffn_model(act: str) -> Model:
    """MatMul + bias -> act -> MatMul (a transformer's feed-forward block)."""
    x = ops.parameter([1, 13, 32], np.float32, name="x")
    h = _activate(ops.add(ops.matmul(x, _w(32, 128, fan=32), False, False), _w(128, fan=4)), act)
    return Model([ops.add(ops.matmul(h, _w(128, 32, fan=128), False, False), _w(32, fan=4))], [x], "ffn")


def _run(model: Model, x: np.ndarray, config: dict | None = None) -> dict[str, np.ndarray]:
    outs = {}
    for device in ("REFERENCE", "CPU"):
        cm = ember.Core().compile_model(model, device, config if device == "CPU" else None)
        outs[device] = cm([x])[cm.output(0)]
        if device == "CPU":
            program = cm._executable.program
            assert not program.stats["fallbacks"]
            kinds = [op.type_name for op in program.ops]
            assert not any(t.startswith("Eltwise") for t in kinds), kinds  # the activation is in the epilogue
    return outs


MODELS = {**{f"conv1x1-{a}": (a, 1, False) for a in ACTS}, "conv3x3-residual-hswish": ("hswish", 3, True),
          "conv3x3-gelu_erf": ("gelu_erf", 3, False), "conv1x1-residual-swish": ("swish", 1, True),
          "conv1x1-hswish-affine": ("hswish", 1, False, True), "conv3x3-residual-hswish-affine": ("hswish", 3, True, True)}


@pytest.mark.parametrize("name", list(MODELS))
def test_conv_activation_fused_matches_reference(name: str) -> None:
    x = (np.random.default_rng(1).standard_normal((1, 24, 9, 11)) * 2).astype(np.float32)
    x[0, 3, 4, 5] = np.nan
    outs = _run(conv_model(*MODELS[name]), x)
    np.testing.assert_allclose(outs["CPU"], outs["REFERENCE"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", ACTS)
def test_ffn_activation_fused_matches_reference(act: str) -> None:
    x = np.random.default_rng(2).standard_normal((1, 13, 32)).astype(np.float32)
    outs = _run(ffn_model(act), x)
    np.testing.assert_allclose(outs["CPU"], outs["REFERENCE"], rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not bf16_supported(), reason="no AVX512_BF16 here")
@pytest.mark.parametrize("model", ["conv", "ffn"])
def test_bf16_activation_fused_within_tolerance(model: str) -> None:
    m = conv_model("hswish", 3, True) if model == "conv" else ffn_model("gelu_erf")
    shape = (1, 24, 9, 11) if model == "conv" else (1, 13, 32)
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    outs = _run(m, x, {"INFERENCE_PRECISION_HINT": "bf16"})
    np.testing.assert_allclose(outs["CPU"], outs["REFERENCE"], rtol=0.03, atol=0.03)


def test_activation_with_two_readers_stays_separate() -> None:
    """A producer read by the activation and by another op keeps its value: not fused."""
    x = ops.parameter([1, 7, 16], np.float32, name="x")
    h = ops.matmul(x, _w(16, 16, fan=16), False, False)
    model = Model([ops.add(ops.gelu(h), h)], [x], "two")
    xv = np.random.default_rng(5).standard_normal((1, 7, 16)).astype(np.float32)
    outs = {}
    for device in ("REFERENCE", "CPU"):
        cm = ember.Core().compile_model(model, device)
        outs[device] = cm([xv])[cm.output(0)]
    np.testing.assert_allclose(outs["CPU"], outs["REFERENCE"], rtol=1e-5, atol=1e-5)
