"""com.microsoft contrib ops on models ONNX Runtime's own tools produce, against ONNX Runtime,
on REFERENCE and CPU: its transformer optimizer on a small BERT (EmbedLayerNormalization,
Attention or MultiHeadAttention, SkipLayerNormalization, BiasGelu or FastGelu), its graph
optimizer's saved models (FusedMatMul, DynamicQuantizeMatMul), ``quantize_dynamic`` on an LSTM
model (DynamicQuantizeLSTM), ``quantize_static`` in QOperator form (QLinearAdd/Mul/Sigmoid/
Concat/GlobalAveragePool) and the n-bit MatMul quantizer on a small decoder (MatMulNBits).

The models are built once and cached under ~/.cache/ember/test_models/contrib (keyed by the
versions of the tools that made them).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import ember
from ember.frontends.onnx import convert
from ember.zoo.download import cache_dir

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(5)
pytestmark = pytest.mark.slow


def _cache() -> Path:
    import torch
    import transformers

    tag = f"ort{ort.__version__}-torch{torch.__version__}-tf{transformers.__version__}".replace("+", "_")
    d = cache_dir().parent / "test_models" / "contrib" / tag
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached(name: str, make: Callable[[Path], None]) -> Path:
    path = _cache() / name
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make(tmp)
        tmp.replace(path)
    return path


# -- model makers ----------------------------------------------------------------------------------
def _export(module: Any, args: tuple, path: Path, names: list[str], dynamic: dict) -> None:
    import torch

    torch.onnx.export(module.eval(), args, str(path), input_names=names, output_names=["y"], dynamic_axes=dynamic,
                      opset_version=14, dynamo=False)


def _bert(path: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    bert = BertModel(cfg, add_pooling_layer=False)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.b(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    ids = torch.randint(0, 100, (2, 8))
    axes = {n: {0: "b", 1: "s"} for n in ("input_ids", "attention_mask", "token_type_ids")}
    _export(Wrap(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), path,
            ["input_ids", "attention_mask", "token_type_ids"], axes)


def _optimized_bert(approximate: bool) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        src = _cached("bert.onnx", _bert)
        opts = FusionOptions("bert")
        opts.enable_gelu_approximation = approximate
        opts.use_multi_head_attention = approximate
        optimize_model(str(src), model_type="bert", num_heads=2, hidden_size=32,
                       optimization_options=opts).save_model_to_file(str(path))
    return make


def _ort_saved(src_name: str, src_make: Callable[[Path], None]) -> Callable[[Path], None]:
    """The model as ONNX Runtime's graph optimizer rewrites it (its contrib fusions)."""
    def make(path: Path) -> None:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(path)
        ort.InferenceSession(str(_cached(src_name, src_make)), so, providers=["CPUExecutionProvider"])
    return make


def _lstm(path: Path) -> None:
    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(16, 24, batch_first=True, bidirectional=True)
            self.fc = torch.nn.Linear(48, 5)

        def forward(self, x: Any) -> Any:
            return self.fc(self.lstm(x)[0])

    _export(Net(), (torch.randn(2, 7, 16),), path, ["x"], {"x": {0: "b", 1: "t"}})


def _lstm_quantized(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(_cached("lstm.onnx", _lstm)), str(path), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["LSTM", "MatMul", "Gemm"])


def _convnet(path: Path) -> None:
    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.b = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.c = torch.nn.Conv2d(16, 8, 1)

        def forward(self, x: Any) -> Any:
            a, b = torch.relu(self.a(x)), torch.sigmoid(self.b(x))
            y = torch.cat([a + b, a * b], 1)
            return torch.nn.functional.adaptive_avg_pool2d(torch.sigmoid(self.c(y)), 1)

    _export(Net(), (torch.randn(1, 3, 12, 12),), path, ["x"], {"x": {0: "b"}})


def _convnet_qoperator(path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.data = iter([{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(8)])

        def get_next(self) -> Any:
            return next(self.data, None)

    quantize_static(str(_cached("convnet.onnx", _convnet)), str(path), Reader(), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _decoder(path: Path) -> None:
    """A two-block causal decoder (embedding, layer-normed causal self-attention, SiLU MLP, LM head)."""
    import torch

    torch.manual_seed(0)
    d, heads, vocab = 64, 4, 96

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
            self.out = torch.nn.Linear(d, d, bias=False)
            self.up = torch.nn.Linear(d, 2 * d, bias=False)
            self.down = torch.nn.Linear(2 * d, d, bias=True)
            self.n1 = torch.nn.LayerNorm(d)
            self.n2 = torch.nn.LayerNorm(d)

        def forward(self, x: Any) -> Any:
            b, s, _ = x.shape
            q, k, v = self.qkv(self.n1(x)).reshape(b, s, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            mask = torch.triu(torch.full((s, s), float("-inf")), 1)
            w = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5 + mask, -1)
            x = x + self.out((w @ v).transpose(1, 2).reshape(b, s, d))
            return x + self.down(torch.nn.functional.silu(self.up(self.n2(x))))

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, d)
            self.blocks = torch.nn.Sequential(Block(), Block())
            self.head = torch.nn.Linear(d, vocab, bias=False)

        def forward(self, input_ids: Any) -> Any:
            return self.head(self.blocks(self.emb(input_ids)))

    _export(Decoder(), (torch.randint(0, vocab, (1, 6)),), path, ["input_ids"], {"input_ids": {0: "b", 1: "s"}})


def _decoder_nbits(path: Path) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(onnx.load(str(_cached("decoder.onnx", _decoder))), block_size=32, is_symmetric=False)
    q.process()
    q.model.save_model_to_file(str(path))


# -- cases -------------------------------------------------------------------------------------------
def _bert_feeds() -> dict[str, np.ndarray]:
    ids = RNG.integers(0, 100, (2, 8))
    mask = np.array([[1] * 8, [1] * 5 + [0] * 3], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((2, 8), np.int64)}


# name: (maker, feeds, contrib ops it must hold, tolerance: "float" or "quantized")
CASES: dict[str, tuple[Callable[[Path], None], Callable[[], dict], set[str], str]] = {
    "bert_fused": (_optimized_bert(False), _bert_feeds,
                   {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu"}, "float"),
    "bert_fused_mha_fastgelu": (_optimized_bert(True), _bert_feeds,
                                {"EmbedLayerNormalization", "MultiHeadAttention", "SkipLayerNormalization",
                                 "FastGelu"}, "float"),
    "bert_ort_saved": (_ort_saved("bert.onnx", _bert), _bert_feeds, {"FusedMatMul", "BiasGelu"}, "float"),
    "lstm_quantize_dynamic": (_lstm_quantized, lambda: {"x": RNG.standard_normal((2, 7, 16)).astype(np.float32)},
                              {"DynamicQuantizeLSTM"}, "quantized"),
    "lstm_quantize_dynamic_ort_saved": (_ort_saved("lstm_q.onnx", _lstm_quantized),
                                        lambda: {"x": RNG.standard_normal((3, 5, 16)).astype(np.float32)},
                                        {"DynamicQuantizeLSTM", "DynamicQuantizeMatMul"}, "quantized"),
    "convnet_qoperator": (_convnet_qoperator, lambda: {"x": RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)},
                          {"QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearConcat",
                           "QLinearGlobalAveragePool"}, "quantized"),
    "decoder_matmul_nbits": (_decoder_nbits, lambda: {"input_ids": RNG.integers(0, 96, (2, 7))},
                             {"MatMulNBits"}, "float"),
}
FLOAT_SOURCES = {"lstm_quantize_dynamic": ("lstm.onnx", _lstm), "lstm_quantize_dynamic_ort_saved": ("lstm.onnx", _lstm),
                 "convnet_qoperator": ("convnet.onnx", _convnet)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_contrib_model_matches_onnxruntime(case: str) -> None:
    make, feeds_of, expected_ops, tolerance = CASES[case]
    path = _cached(f"{case}.onnx", make)
    proto = onnx.load(str(path))
    ops = Counter(n.op_type for n in proto.graph.node if n.domain == "com.microsoft")
    assert expected_ops <= set(ops), f"the tool did not produce {expected_ops - set(ops)}: {dict(ops)}"
    feeds = feeds_of()
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    model = convert(proto)
    if tolerance == "quantized":
        # ONNX Runtime quantizes activations too; allow twice its own distance from the float model
        src = _cached(*FLOAT_SOURCES[case])
        ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feeds)
        budget = [2 * float(np.abs(w - r).max()) + 1e-6 for w, r in zip(want, ref)]
    for device in ("REFERENCE", "CPU"):
        got = ember.Core().compile_model(model, device)(feeds).to_tuple()
        for k, (g, w) in enumerate(zip(got, want)):
            assert g.shape == w.shape
            if tolerance == "float":
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()), err_msg=device)
            else:
                assert float(np.abs(g - w).max()) <= budget[k], (device, float(np.abs(g - w).max()), budget[k])
