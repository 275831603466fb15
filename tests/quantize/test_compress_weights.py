"""ember.nncf.compress_weights against real NNCF 3.4 (the same stored integers, scales and zero
points, so the same decompressed weights) and the IR it writes against real OpenVINO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ember
import ember.nncf as nncf
import ember.opset as ops
from ember.graph.model import Model
from ember.io import read_ir
from ember.quantize.graph_utils import Constants

pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")

RNG = np.random.default_rng(3)


def _mlp() -> Model:
    """Embedding Gather -> 3 MatMuls (transposed and not) -> logits, the shapes of a small LM."""
    ids = ops.parameter([1, 8], np.int64, name="ids")
    emb = ops.gather(ops.constant(RNG.standard_normal((100, 64)).astype(np.float32), name="emb"), ids,
                     np.int64(0), name="embed")
    h = ops.matmul(emb, ops.constant(RNG.standard_normal((128, 64)).astype(np.float32), name="w1"), False, True,
                   name="fc1")
    h = ops.relu(h, name="act")
    w2 = RNG.standard_normal((128, 64)).astype(np.float32)
    w2[:, 3] = 0.0  # a zero column: the eps floor of the scale
    h = ops.matmul(h, ops.constant(w2, name="w2"), False, False, name="fc2")
    out = ops.matmul(h, ops.constant(RNG.standard_normal((100, 64)).astype(np.float32), name="lm_head"), False,
                     True, name="logits")
    return Model([out], [ids], "mlp")


def _weights(model: Model) -> dict[str, tuple[str, np.ndarray]]:
    """Each weighted layer's (stored element type, decompressed weight)."""
    consts = Constants()
    out = {}
    for n in model.get_ordered_ops():
        port = {"MatMul": 1, "Gather": 0}.get(n.type_name)
        if port is None:
            continue
        src = n._inputs[port]
        node = src.node
        while node.type_name != "Const":  # down the decompression chain to the stored constant
            node = node._inputs[0].node
        out[n.friendly_name] = (node.element_type.name, consts.value(src).astype(np.float32))
    return out


CASES = [
    ("INT8_ASYM", {}),
    ("INT8_SYM", {}),
    ("INT4_SYM", {"group_size": 32, "ratio": 1.0, "all_layers": True}),
    ("INT4_ASYM", {"group_size": 64, "ratio": 1.0, "all_layers": True}),
    ("INT4_SYM", {"group_size": 32}),  # embeddings and the last layer stay INT8_ASYM
    ("INT4_ASYM", {"group_size": 32, "ratio": 0.5, "all_layers": True}),
]


@pytest.mark.parametrize(("mode", "kwargs"), CASES, ids=[f"{m}-{'-'.join(f'{k}{v}' for k, v in kw.items())}"
                                                         for m, kw in CASES])
def test_compress_weights_matches_nncf_and_runs_in_openvino(mode: str, kwargs: dict, tmp_path: Path) -> None:
    import nncf as real_nncf

    model = _mlp()
    ember.save_model(model, tmp_path / "f.xml", compress_to_fp16=False)
    theirs_ov = real_nncf.compress_weights(ov.Core().read_model(tmp_path / "f.xml"),
                                           mode=getattr(real_nncf.CompressWeightsMode, mode), **kwargs)
    ov.save_model(theirs_ov, tmp_path / "nncf.xml", compress_to_fp16=False)
    theirs = _weights(read_ir(tmp_path / "nncf.xml"))
    ours_model = nncf.compress_weights(model, mode=getattr(nncf.CompressWeightsMode, mode), **kwargs)
    ours = _weights(ours_model)
    assert sorted(ours) == sorted(theirs)
    for k in ours:
        assert ours[k][0] == theirs[k][0], f"{k}: stored as {ours[k][0]}, NNCF {theirs[k][0]}"
        np.testing.assert_allclose(ours[k][1], theirs[k][1], rtol=1e-3, atol=1e-6, err_msg=k)
    ember.save_model(ours_model, tmp_path / "ours.xml")
    ids = RNG.integers(0, 100, (1, 8)).astype(np.int64)
    ov_out = ov.Core().compile_model(tmp_path / "ours.xml", "CPU")(ids)[0]
    ref = ember.compile_model(ours_model, "REFERENCE")(ids)[0]
    np.testing.assert_allclose(ov_out, ref, rtol=2e-2, atol=2e-2 * float(np.max(np.abs(ref))))


def test_compress_weights_errors() -> None:
    model = _mlp()
    with pytest.raises(nncf.QuantizationError, match="INT4 modes only"):
        nncf.compress_weights(model, ratio=0.5)
    with pytest.raises(nncf.QuantizationError, match="ratio"):
        nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, ratio=2.0)
    x = ops.parameter([2, 3], np.float32, name="x")
    with pytest.raises(nncf.QuantizationError, match="no weights"):
        nncf.compress_weights(Model([ops.relu(x)], [x]))


def _gpt2() -> tuple[Model, np.ndarray]:
    """A GPT-2-shaped decoder (transformers' GPT2LMHeadModel from a small config, seeded random
    weights, tied embedding / LM head) through ember's PyTorch frontend."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=512, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    lm = transformers.GPT2LMHeadModel(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, ids: object) -> object:
            return self.lm(input_ids=ids, use_cache=False).logits

    ids = torch.randint(0, 512, (1, 16))
    return ember.convert_model(Logits(), example_input=ids), ids.numpy()


def _minilm() -> tuple[Model, dict[str, np.ndarray]]:
    from ember import zoo

    try:
        model = zoo.load("all-minilm-l6-v2")
    except zoo.RegistryUnreachableError as e:  # pragma: no cover - offline
        pytest.skip(f"zoo model cannot be fetched: {e}")
    enc = zoo.load_tokenizer().encode(["Weight compression keeps the embeddings close."])
    return model, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
                   "token_type_ids": enc.token_type_ids}


@pytest.mark.slow
@pytest.mark.parametrize(("which", "mode"), [("gpt2", "INT4_SYM"), ("minilm", "INT8_ASYM")])
def test_real_models_compressed_run_in_openvino_as_in_ember(which: str, mode: str, tmp_path: Path) -> None:
    model, inputs = _gpt2() if which == "gpt2" else _minilm()
    kwargs = {"group_size": 64} if mode == "INT4_SYM" else {}
    compressed = nncf.compress_weights(model, mode=getattr(nncf.CompressWeightsMode, mode), **kwargs)
    stored = {n.element_type.name for n in compressed.get_ordered_ops() if n.type_name == "Const"}
    assert ("i4" if mode == "INT4_SYM" else "u8") in stored
    ember.save_model(compressed, tmp_path / "c.xml")
    ov_out = ov.Core().compile_model(str(tmp_path / "c.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(inputs)[0]
    ref = ember.compile_model(compressed, "REFERENCE")(inputs)[0]
    np.testing.assert_allclose(ov_out, ref, rtol=1e-3, atol=1e-3 * float(np.max(np.abs(ref))))
    float_out = ember.compile_model(model, "REFERENCE")(inputs)[0]
    assert np.max(np.abs(ref - float_out)) < (0.3 if mode == "INT4_SYM" else 0.05) * np.max(np.abs(float_out))
