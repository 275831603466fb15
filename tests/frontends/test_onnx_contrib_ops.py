"""com.microsoft contrib ops one node at a time, against ONNX Runtime, on REFERENCE and CPU:
the attributes and input forms the tool-made models in test_onnx_contrib.py do not reach."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.frontends.onnx import convert

ort = pytest.importorskip("onnxruntime")
F = TensorProto.FLOAT
RNG = np.random.default_rng(9)
MS = "com.microsoft"


def _f(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _model(op: str, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray], n_out: int = 1,
           inputs: list[str] | None = None, **attrs: Any) -> onnx.ModelProto:
    names = inputs if inputs is not None else list(feeds) + list(consts)
    node = helper.make_node(op, names, [f"y{i}" for i in range(n_out)], domain=MS, **attrs)
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
           for k, v in feeds.items()]
    inits = [onnx.numpy_helper.from_array(v, k) for k, v in consts.items()]
    outs = [helper.make_value_info(f"y{i}", onnx.TypeProto()) for i in range(n_out)]
    m = helper.make_model(helper.make_graph([node], "g", vis, outs, initializer=inits),
                          opset_imports=[helper.make_operatorsetid("", 17), helper.make_operatorsetid(MS, 1)])
    m.ir_version = 8
    return m


def _nbits(n: int, k: int, block: int) -> dict[str, np.ndarray]:
    blocks = (k + block - 1) // block
    q = RNG.integers(0, 16, (n, blocks, block)).astype(np.uint8)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    zp = RNG.integers(0, 16, (n, blocks + blocks % 2)).astype(np.uint8)
    zp_packed = (zp[:, 0::2] | (zp[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
    return {"b": packed, "scales": (RNG.random(n * blocks).astype(np.float32) * 0.1 + 0.01), "zp": zp_packed}


def _cos_sin(positions: int, half: int) -> dict[str, np.ndarray]:
    ang = np.arange(positions)[:, None] / (10000 ** (np.arange(half) / half))[None]
    return {"cos": np.cos(ang).astype(np.float32), "sin": np.sin(ang).astype(np.float32)}


def _case(op: str, feeds: dict, consts: dict | None = None, n_out: int = 1, inputs: list[str] | None = None,
          **attrs: Any) -> tuple:
    return (op, feeds, consts or {}, n_out, inputs, attrs)


CASES = {
    "attention_causal": _case("Attention", {"x": _f(2, 5, 16)}, {"w": _f(16, 48), "b": _f(48)},
                              num_heads=4, unidirectional=1),
    "attention_raw_mask": _case("Attention", {"x": _f(2, 5, 16), "m": np.array([[1, 1, 1, 0, 0], [1] * 5], np.int32)},
                                {"w": _f(16, 48), "b": _f(48)}, inputs=["x", "w", "b", "m"], num_heads=2),
    "attention_3d_mask_sizes": _case("Attention", {"x": _f(1, 4, 8), "m": RNG.integers(0, 2, (1, 4, 4)).astype(
        np.int32) | np.eye(4, dtype=np.int32)}, {"w": _f(8, 40), "b": _f(40)}, inputs=["x", "w", "b", "m"],
        num_heads=2, qkv_hidden_sizes=[16, 16, 8]),
    "mha_bias_padding": _case("MultiHeadAttention", {"q": _f(2, 3, 8), "k": _f(2, 6, 8), "v": _f(2, 6, 8),
                                                     "kpm": np.array([[1] * 6, [1, 1, 1, 1, 0, 0]], np.int32)},
                              {"bias": _f(24)}, inputs=["q", "k", "v", "bias", "kpm"], num_heads=2),
    "mha_attention_bias": _case("MultiHeadAttention", {"q": _f(1, 3, 8), "k": _f(1, 4, 8), "v": _f(1, 4, 8),
                                                       "ab": _f(1, 2, 3, 4)},
                                inputs=["q", "k", "v", "", "", "ab"], num_heads=2, scale=0.3),
    "attention_past_present": _case("Attention", {"x": _f(2, 2, 16), "m": np.ones((2, 5), np.int32),
                                                  "past": _f(2, 2, 4, 3, 4)},
                                    {"w": _f(16, 48), "b": _f(48)}, n_out=2, inputs=["x", "w", "b", "m", "past"],
                                    num_heads=4, unidirectional=1),
    "mha_past_present": _case("MultiHeadAttention", {"q": _f(1, 2, 8), "k": _f(1, 2, 8), "v": _f(1, 2, 8),
                                                     "pk": _f(1, 2, 3, 4), "pv": _f(1, 2, 3, 4)},
                              n_out=3, inputs=["q", "k", "v", "", "", "", "pk", "pv"], num_heads=2, unidirectional=1),
    "skip_layer_norm_sum": _case("SkipLayerNormalization", {"x": _f(2, 3, 8), "s": _f(2, 3, 8)},
                                 {"g": _f(8), "be": _f(8), "bi": _f(8)}, n_out=4, epsilon=1e-5),
    "skip_simplified": _case("SkipSimplifiedLayerNormalization", {"x": _f(2, 3, 8), "s": _f(2, 3, 8)},
                             {"g": _f(8)}, epsilon=1e-6),
    "embed_layer_norm_segments": _case("EmbedLayerNormalization",
                                       {"ids": RNG.integers(0, 10, (2, 4)).astype(np.int32),
                                        "seg": RNG.integers(0, 2, (2, 4)).astype(np.int32)},
                                       {"we": _f(10, 8), "pe": _f(6, 8), "se": _f(2, 8), "g": _f(8), "b": _f(8)},
                                       n_out=2, epsilon=1e-5),
    "fast_gelu_nobias": _case("FastGelu", {"x": _f(3, 7)}),
    "quick_gelu": _case("QuickGelu", {"x": _f(3, 7)}, alpha=1.5),
    "gelu": _case("Gelu", {"x": _f(3, 7)}),
    "fused_matmul": _case("FusedMatMul", {"a": _f(2, 4, 3), "b": _f(2, 5, 4)}, transA=1, transB=1, alpha=0.5),
    "fused_conv_relu_z": _case("FusedConv", {"x": _f(1, 3, 6, 6), "z": _f(1, 4, 6, 6)},
                               {"w": _f(4, 3, 3, 3), "b": _f(4)}, inputs=["x", "w", "b", "z"],
                               activation="Relu", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
    "matmul_integer16": _case("MatMulInteger16", {"a": RNG.integers(-30000, 30000, (3, 4)).astype(np.int16),
                                                  "b": RNG.integers(-30000, 30000, (4, 2)).astype(np.int16)}),
    "matmul_nbits_padded_zp": _case("MatMulNBits", {"a": _f(3, 40)}, _nbits(6, 40, 16),
                                    inputs=["a", "b", "scales", "zp"], K=40, N=6, bits=4, block_size=16),
    "rotary_bsd": _case("RotaryEmbedding", {"x": _f(2, 3, 16), "pos": np.array([[0, 1, 2], [4, 5, 6]], np.int64)},
                        _cos_sin(8, 4), inputs=["x", "pos", "cos", "sin"], num_heads=2),
    "rotary_interleaved_bnsh": _case("RotaryEmbedding", {"x": _f(1, 2, 3, 8), "pos": np.array([[2, 3, 4]], np.int64)},
                                     _cos_sin(8, 4), inputs=["x", "pos", "cos", "sin"], interleaved=1),
    "qlinear_leaky_relu": _case("QLinearLeakyRelu", {"x": RNG.integers(0, 256, (2, 9)).astype(np.uint8)},
                                {"xs": np.float32(0.05), "xz": np.uint8(128), "ys": np.float32(0.03),
                                 "yz": np.uint8(100)}, alpha=0.2),
    "qlinear_average_pool": _case("QLinearAveragePool", {"x": RNG.integers(0, 256, (1, 2, 5, 5)).astype(np.uint8)},
                                  {"xs": np.float32(0.1), "xz": np.uint8(3), "ys": np.float32(0.08),
                                   "yz": np.uint8(7)}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "qlinear_add_broadcast": _case("QLinearAdd", {"a": RNG.integers(-128, 128, (2, 3, 4)).astype(np.int8),
                                                  "b": RNG.integers(-128, 128, (4,)).astype(np.int8)},
                                   {"as": np.float32(0.02), "az": np.int8(1), "bs": np.float32(0.05),
                                    "bz": np.int8(-3), "ys": np.float32(0.07), "yz": np.int8(2)},
                                   inputs=["a", "as", "az", "b", "bs", "bz", "ys", "yz"]),
    "gqa_prefill_rotary": _case("GroupQueryAttention",
                                {"q": _f(1, 4, 64), "k": _f(1, 4, 32), "v": _f(1, 4, 32),
                                 "pk": np.zeros((1, 2, 0, 16), np.float32), "pv": np.zeros((1, 2, 0, 16), np.float32),
                                 "sl": np.array([3], np.int32), "tl": np.array(4, np.int32)},
                                _cos_sin(16, 8), n_out=3, inputs=["q", "k", "v", "pk", "pv", "sl", "tl", "cos", "sin"],
                                num_heads=4, kv_num_heads=2, do_rotary=1),
    "gqa_decode": _case("GroupQueryAttention",
                        {"q": _f(2, 1, 32), "k": _f(2, 1, 16), "v": _f(2, 1, 16), "pk": _f(2, 2, 5, 8),
                         "pv": _f(2, 2, 5, 8), "sl": np.array([5, 5], np.int32), "tl": np.array(6, np.int32)},
                        n_out=3, inputs=["q", "k", "v", "pk", "pv", "sl", "tl"], num_heads=4, kv_num_heads=2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_contrib_op_matches_onnxruntime(case: str) -> None:
    op, feeds, consts, n_out, inputs, attrs = CASES[case]
    model = _model(op, feeds, consts, n_out, inputs, **attrs)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    converted = convert(model)
    for device in ("REFERENCE", "CPU"):
        got = ember.Core().compile_model(converted, device)(feeds).to_tuple()
        for k, w in enumerate(want):
            g = got[k]
            assert g.shape == w.shape, (device, k)
            if op.startswith("QLinear"):  # within one step of requantization rounding
                np.testing.assert_allclose(g.astype(np.int32), w.astype(np.int32), atol=1, err_msg=device)
            elif w.dtype.kind in "iu":
                np.testing.assert_array_equal(g, w)
            else:
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"{device} output {k}")
