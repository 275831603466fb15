"""The WordPiece tokenizer: BERT's rules on a small vocabulary, and the real MiniLM vocabulary
against Hugging Face's BertTokenizer when transformers is installed."""

from __future__ import annotations

import numpy as np
import pytest

from ember.errors import EmberError
from ember.zoo.tokenizer import WordPieceTokenizer, basic_tokenize

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "a", "man", "eat", "##ing",
         ",", ".", "!", "naive", "cafe", "東", "$", "1", "##0", "##00"]


@pytest.mark.parametrize("text, words", [
    ("Hello, World!", ["hello", ",", "world", "!"]),
    ("  tabs\tand\nnew\r\nlines ", ["tabs", "and", "new", "lines"]),
    ("Naïve CAFÉ", ["naive", "cafe"]),
    ("東京", ["東", "京"]),
    ("a\x00b\x07c\ufffd", ["abc"]),
    ("$100^x`y", ["$", "100", "^", "x", "`", "y"]),
    ("don't", ["don", "'", "t"]),
    ("", []),
    ("keep [SEP] whole", ["keep", "[SEP]", "whole"]),
])
def test_basic_tokenization(text: str, words: list[str]) -> None:
    assert basic_tokenize(text, True, frozenset({"[SEP]"})) == words


def test_wordpiece_longest_match_and_unknown_words() -> None:
    tok = WordPieceTokenizer(VOCAB)
    assert tok.tokenize("unaffable man eating, Naïve!") == \
        ["un", "##aff", "##able", "man", "eat", "##ing", ",", "naive", "!"]
    assert tok.tokenize("unx") == ["[UNK]"]
    assert tok.tokenize("$1000") == ["$", "1", "##00", "##0"]
    assert tok.tokenize("a" * 101) == ["[UNK]"]


def test_encode_pads_truncates_and_masks() -> None:
    tok = WordPieceTokenizer(VOCAB, max_length=5)
    enc = tok.encode(["a man", "a man eating man"])
    np.testing.assert_array_equal(enc.input_ids, [[2, 8, 9, 3, 0], [2, 8, 9, 10, 3]])
    np.testing.assert_array_equal(enc.attention_mask, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    assert enc.token_type_ids.dtype == np.int64 and not enc.token_type_ids.any()
    assert set(enc.as_inputs()) == {"input_ids", "attention_mask", "token_type_ids"}


def test_a_vocabulary_without_special_tokens_is_refused() -> None:
    with pytest.raises(EmberError, match=r"\[CLS\]"):
        WordPieceTokenizer(["[PAD]", "[UNK]", "[SEP]", "a"])


TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The quick brown fox jumps over the lazy dog",
         "Héllo wörld — naïve café, déjà vu!", "東京タワーは高い。", "unbelievably antidisestablishmentarianism",
         "emails: someone@example.com, prices $3.50 & 100%", "Tabs\tand\nnewlines\r\nand   spaces",
         "ALL CAPS and MiXeD cAsE", "Ünïcödé ßtraße İstanbul", "emoji 🙂 and symbols ©®™", ""]


@pytest.mark.slow
def test_minilm_vocabulary_matches_huggingface(minilm) -> None:
    transformers = pytest.importorskip("transformers")
    vocab = [p for m, p in minilm.files.items() if m.endswith("vocab.txt")][0]
    ours = WordPieceTokenizer.from_file(vocab, max_length=256)
    theirs = transformers.BertTokenizer(str(vocab), do_lower_case=True)
    for text in TEXTS:
        assert ours.ids(text) == theirs(text)["input_ids"], text
