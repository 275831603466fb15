"""BERT's WordPiece tokenizer (uncased), in plain Python.

The steps are BERT's: clean the text (drop control characters, map whitespace to spaces), put
spaces around CJK ideographs, split on whitespace, lower-case and strip accents, split off
punctuation, then split each word into the longest vocabulary pieces from the left (``##``
marks a piece that continues a word); a word that cannot be split becomes ``[UNK]``.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ember.errors import EmberError


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # BERT counts every non-alphanumeric ASCII symbol as punctuation ("$", "^", "`").
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokenize(text: str, lower_case: bool = True, never_split: frozenset[str] = frozenset()) -> list[str]:
    """Split ``text`` into words and punctuation marks the way BERT's basic tokenizer does."""
    cleaned = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_cjk(cp):
            cleaned.append(f" {ch} ")
        else:
            cleaned.append(" " if _is_whitespace(ch) else ch)
    words: list[str] = []
    for word in "".join(cleaned).split():
        if word in never_split:
            words.append(word)
            continue
        if lower_case:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower())
                           if unicodedata.category(c) != "Mn")
        current = ""
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                    current = ""
                words.append(ch)
            else:
                current += ch
        if current:
            words.append(current)
    return words


@dataclass(frozen=True)
class Encoding:
    """A batch of token ids with its attention mask and token type ids, each ``int64 [batch, seq]``."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    def as_inputs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "token_type_ids": self.token_type_ids}


class WordPieceTokenizer:
    """A BERT WordPiece tokenizer over a ``vocab.txt`` (one token per line, id = line number).

    ``tokenize(text)`` gives the pieces, ``encode(texts)`` a padded batch of ids with
    ``[CLS]``/``[SEP]`` added, truncated to ``max_length`` tokens.
    """

    def __init__(self, vocab: Sequence[str], lower_case: bool = True, max_length: int = 512,
                 unk_token: str = "[UNK]", cls_token: str = "[CLS]", sep_token: str = "[SEP]",
                 pad_token: str = "[PAD]", max_word_chars: int = 100) -> None:
        self.vocab = {tok: i for i, tok in enumerate(vocab)}
        for tok in (unk_token, cls_token, sep_token, pad_token):
            if tok not in self.vocab:
                raise EmberError(f"ember: the WordPiece vocabulary has no '{tok}' token")
        self.lower_case = lower_case
        self.max_length = max_length
        self.unk, self.cls, self.sep, self.pad = unk_token, cls_token, sep_token, pad_token
        self.special = frozenset((unk_token, cls_token, sep_token, pad_token, "[MASK]"))
        self.max_word_chars = max_word_chars

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: object) -> WordPieceTokenizer:
        """Load ``vocab.txt``."""
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls([line.rstrip("\r") for line in lines], **kwargs)  # type: ignore[arg-type]

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match-first split of one word into vocabulary pieces."""
        if len(word) > self.max_word_chars:
            return [self.unk]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    pieces.append(piece)
                    break
                end -= 1
            else:
                return [self.unk]
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of ``text`` (without ``[CLS]``/``[SEP]``)."""
        out: list[str] = []
        for word in basic_tokenize(text, self.lower_case, self.special):
            out.extend([word] if word in self.special else self.wordpiece(word))
        return out

    def ids(self, text: str) -> list[int]:
        """``[CLS] tokens [SEP]`` as ids, truncated to ``max_length``."""
        ids = [self.vocab[t] for t in self.tokenize(text)][: max(self.max_length - 2, 0)]
        return [self.vocab[self.cls], *ids, self.vocab[self.sep]]

    def encode(self, texts: str | Sequence[str]) -> Encoding:
        """A batch padded with ``[PAD]`` to its longest sequence."""
        if isinstance(texts, str):
            texts = [texts]
        rows = [self.ids(t) for t in texts]
        width = max((len(r) for r in rows), default=2)
        ids = np.full((len(rows), width), self.vocab[self.pad], np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return Encoding(ids, mask, np.zeros_like(ids))
