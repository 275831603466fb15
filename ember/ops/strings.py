"""ember's string ops: ONNX StringNormalizer, StringConcat, StringSplit, RegexFullMatch,
TfIdfVectorizer and the ``com.microsoft`` Tokenizer that scikit-learn text pipelines use.

OpenVINO's only string ops pack and unpack string tensors, so these are ember's own (IR version
``ember_opset1``). String tensors have the element type ``Type.string``: numpy object arrays of
Python ``str``. Regular expressions use Python's ``re`` module (RE2, which ONNX names, is close
to a subset of it: no look-around or back-references in RE2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type
from ember.ops._util import broadcast_shapes


def _json_list(value: Any) -> str:
    """A list of strings as one IR attribute (JSON keeps commas and spaces that a plain
    comma-separated list would lose)."""
    return value if isinstance(value, str) else json.dumps(list(value), ensure_ascii=False)


def _strings(shape: tuple[int, ...], values: Sequence[str]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out.reshape(shape)


class _StringOp(Node):
    version = "ember_opset1"

    def _check_string(self, i: int) -> None:
        t = self.input_type(i)
        if not (t is Type.string or t.is_dynamic):
            raise self.fail(f"input {i} must be a string tensor, got {t}")


@register_op
class StringNormalizer(_StringOp):
    """ONNX StringNormalizer: drops the elements equal to a stop word (case-insensitively unless
    ``is_case_sensitive``), then changes case (``LOWER``, ``UPPER`` or ``NONE``). Input ``[C]`` or
    ``[1, C]``; when every element is dropped the output holds one empty string."""

    type_name = "StringNormalizer"
    num_inputs = (1, 1)
    attributes = (Attr("case_change_action", "str", "NONE"), Attr("is_case_sensitive", "bool", False),
                  Attr("locale", "str", ""), Attr("stopwords", "str", "[]"))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._check_string(0)
        ps = self.input_shape(0)
        if ps.rank_is_static and len(ps) not in (1, 2):
            raise self.fail(f"the input must be [C] or [1, C], got {ps}")
        if self.attrs["case_change_action"] not in ("NONE", "LOWER", "UPPER"):
            raise self.fail(f"case_change_action '{self.attrs['case_change_action']}' is not NONE, LOWER or UPPER")
        if not json.loads(self.attrs["stopwords"]):
            return [(Type.string, ps)]
        return [(Type.string, PartialShape([1, Dimension()]) if ps.rank_is_static and len(ps) == 2
                 else PartialShape([Dimension()]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0], dtype=object)
        if x.ndim == 2 and x.shape[0] != 1:
            raise self.fail(f"a 2-D input must be [1, C], got {list(x.shape)}")
        words = [str(w) for w in x.reshape(-1)]
        stop = json.loads(self.attrs["stopwords"])
        if stop:
            if self.attrs["is_case_sensitive"]:
                drop = set(stop)
                words = [w for w in words if w not in drop]
            else:
                drop = {s.lower() for s in stop}
                words = [w for w in words if w.lower() not in drop]
            if not words:
                words = [""]
        action = self.attrs["case_change_action"]
        if action == "LOWER":
            words = [w.lower() for w in words]
        elif action == "UPPER":
            words = [w.upper() for w in words]
        shape = (1, len(words)) if x.ndim == 2 else (len(words),)
        return [_strings(shape, words)]


@register_op
class StringConcat(_StringOp):
    """ONNX StringConcat: elementwise ``a + b`` with numpy broadcasting."""

    type_name = "StringConcat"
    num_inputs = (2, 2)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._check_string(0)
        self._check_string(1)
        return [(Type.string, broadcast_shapes(self.input_shape(0), self.input_shape(1), "numpy"))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        a, b = np.broadcast_arrays(np.asarray(inputs[0], dtype=object), np.asarray(inputs[1], dtype=object))
        return [_strings(a.shape, [str(x) + str(y) for x, y in zip(a.reshape(-1), b.reshape(-1))])]


@register_op
class StringSplit(_StringOp):
    """ONNX StringSplit: each string split on ``delimiter`` (empty: runs of whitespace) at most
    ``maxsplit`` times (0: no limit); outputs the pieces padded with "" to the longest split, and
    the number of pieces per string."""

    type_name = "StringSplit"
    num_inputs = (1, 1)
    attributes = (Attr("delimiter", "str", ""), Attr("maxsplit", "int", 0))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._check_string(0)
        ps = self.input_shape(0)
        pieces = PartialShape(list(ps) + [Dimension()]) if ps.rank_is_static else PartialShape.dynamic()
        return [(Type.string, pieces), (Type.i64, ps)]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0], dtype=object)
        sep = self.attrs["delimiter"] or None
        limit = self.attrs["maxsplit"] if self.attrs["maxsplit"] > 0 else -1
        parts = [str(s).split(sep, limit) for s in x.reshape(-1)]
        width = max((len(p) for p in parts), default=0)
        padded = [p + [""] * (width - len(p)) for p in parts]
        flat = [w for p in padded for w in p]
        counts = np.array([len(p) for p in parts], dtype=np.int64).reshape(x.shape)
        return [_strings(x.shape + (width,), flat), counts]


@register_op
class RegexFullMatch(_StringOp):
    """ONNX RegexFullMatch: whether each string matches ``pattern`` as a whole (Python ``re``)."""

    type_name = "RegexFullMatch"
    num_inputs = (1, 1)
    attributes = (Attr("pattern", "str", ""),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._check_string(0)
        try:
            re.compile(self.attrs["pattern"])
        except re.error as e:
            raise self.fail(f"pattern '{self.attrs['pattern']}' is not a valid regular expression: {e}") from None
        return [(Type.boolean, self.input_shape(0))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0], dtype=object)
        rx = re.compile(self.attrs["pattern"])
        return [np.array([rx.fullmatch(str(s)) is not None for s in x.reshape(-1)], dtype=bool).reshape(x.shape)]


@register_op
class Tokenizer(_StringOp):
    """com.microsoft Tokenizer: each string cut into tokens, by ``separators`` (regular
    expressions) or as the matches of ``tokenexp``; tokens shorter than ``mincharnum`` are
    dropped; ``mark`` adds start/end marks (0x02, 0x03); rows are padded with ``pad_value`` to
    the longest one. Input ``[N]`` or ``[N, C]``; output one more axis."""

    type_name = "Tokenizer"
    num_inputs = (1, 1)
    attributes = (Attr("mark", "bool", False), Attr("mincharnum", "int", 1), Attr("pad_value", "str", "#"),
                  Attr("separators", "str", "[]"), Attr("tokenexp", "str", ""))

    def infer(self) -> list[tuple[Type, PartialShape]]:
        self._check_string(0)
        if bool(json.loads(self.attrs["separators"])) == bool(self.attrs["tokenexp"]):
            raise self.fail("exactly one of separators and tokenexp must be given")
        ps = self.input_shape(0)
        return [(Type.string, PartialShape(list(ps) + [Dimension()]) if ps.rank_is_static
                 else PartialShape.dynamic())]

    def _tokens(self, s: str) -> list[str]:
        if self.attrs["tokenexp"]:
            toks = re.findall(self.attrs["tokenexp"], s)
            toks = [t if isinstance(t, str) else t[0] for t in toks]
        else:
            rx = "|".join(f"(?:{p})" for p in json.loads(self.attrs["separators"]))
            toks = [t for t in re.split(rx, s) if t]
        toks = [t for t in toks if len(t) >= self.attrs["mincharnum"]]
        if self.attrs["mark"]:
            toks = ["\x02"] + toks + ["\x03"]
        return toks

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0], dtype=object)
        rows = [self._tokens(str(s)) for s in x.reshape(-1)]
        width = max((len(r) for r in rows), default=0)
        pad = self.attrs["pad_value"]
        flat = [t for r in rows for t in r + [pad] * (width - len(r))]
        return [_strings(x.shape + (width,), flat)]


@register_op
class TfIdfVectorizer(_StringOp):
    """ONNX TfIdfVectorizer: counts the n-grams of a pool in each row of an integer or string
    input (``[C]`` or ``[N, C]``), with up to ``max_skip_count`` items skipped between the items
    of an n-gram (unigrams are counted once), and weighs the counts (``TF``: counts, ``IDF``:
    weight where present, ``TFIDF``: weight * count). Output f32 ``[size]`` or ``[N, size]``."""

    type_name = "TfIdfVectorizer"
    num_inputs = (1, 1)
    attributes = (Attr("max_gram_length", "int", 1), Attr("min_gram_length", "int", 1),
                  Attr("max_skip_count", "int", 0), Attr("mode", "str", "TF"), Attr("ngram_counts", "ints", []),
                  Attr("ngram_indexes", "ints", []), Attr("pool_int64s", "ints", []),
                  Attr("pool_strings", "str", "[]"), Attr("weights", "floats", []))

    def _size(self) -> int:
        return max(self.attrs["ngram_indexes"], default=-1) + 1

    def infer(self) -> list[tuple[Type, PartialShape]]:
        if self.attrs["mode"] not in ("TF", "IDF", "TFIDF"):
            raise self.fail(f"mode '{self.attrs['mode']}' is not TF, IDF or TFIDF")
        pool = len(json.loads(self.attrs["pool_strings"])) or len(self.attrs["pool_int64s"])
        starts = list(self.attrs["ngram_counts"])
        ends = starts[1:] + [pool]
        grams = sum(max(0, b - a) // n for n, (a, b) in enumerate(zip(starts, ends), start=1))
        if grams != len(self.attrs["ngram_indexes"]):
            raise self.fail(f"the pool holds {grams} n-grams but ngram_indexes has "
                            f"{len(self.attrs['ngram_indexes'])} entries")
        if self.attrs["weights"] and len(self.attrs["weights"]) != self._size():
            raise self.fail(f"weights has {len(self.attrs['weights'])} entries for {self._size()} outputs")
        ps = self.input_shape(0)
        if ps.rank_is_static and len(ps) == 2:
            return [(Type.f32, PartialShape([ps[0], self._size()]))]
        if ps.rank_is_static and len(ps) not in (1, 2):
            raise self.fail(f"the input must be [C] or [N, C], got {ps}")
        return [(Type.f32, PartialShape([self._size()]) if ps.rank_is_static else PartialShape.dynamic())]

    def _pool(self) -> dict[tuple[Any, ...], int]:
        """n-gram -> output index."""
        pool: list[Any] = list(json.loads(self.attrs["pool_strings"])) or list(self.attrs["pool_int64s"])
        starts = list(self.attrs["ngram_counts"])
        ends = starts[1:] + [len(pool)]
        grams: dict[tuple[Any, ...], int] = {}
        k = 0
        for n, (a, b) in enumerate(zip(starts, ends), start=1):
            for i in range(a, b, n):
                grams[tuple(pool[i:i + n])] = self.attrs["ngram_indexes"][k]
                k += 1
        return grams

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        rows = x.reshape(1, -1) if x.ndim < 2 else x
        lo, hi = self.attrs["min_gram_length"], self.attrs["max_gram_length"]
        grams = {g: i for g, i in self._pool().items() if lo <= len(g) <= hi}
        strings = bool(json.loads(self.attrs["pool_strings"]))
        counts = np.zeros((rows.shape[0], self._size()), dtype=np.float32)
        for r, row in enumerate(rows):
            items = [str(v) for v in row] if strings else [int(v) for v in row]
            for d in range(1, self.attrs["max_skip_count"] + 2):
                for start in range(len(items)):
                    for n in range(max(lo, 1 if d == 1 else 2), hi + 1):
                        end = start + d * (n - 1)
                        if end >= len(items):
                            break
                        idx = grams.get(tuple(items[start:end + 1:d]))
                        if idx is not None:
                            counts[r, idx] += 1
        w = np.asarray(self.attrs["weights"], dtype=np.float32)
        mode = self.attrs["mode"]
        if mode == "IDF":
            out = np.where(counts > 0, w if w.size else np.float32(1), np.float32(0))
        elif mode == "TFIDF" and w.size:
            out = counts * w
        else:
            out = counts
        out = out.astype(np.float32)
        return [out if x.ndim == 2 else out.reshape(-1)]


@builder
def string_normalizer(data: Any, case_change_action: str = "NONE", is_case_sensitive: bool = False,
                      locale: str = "", stopwords: Sequence[str] = (), name: str | None = None) -> Node:
    """Drop stop words and change the case of a string tensor."""
    return StringNormalizer([data], {"case_change_action": case_change_action, "is_case_sensitive": is_case_sensitive,
                                     "locale": locale, "stopwords": _json_list(stopwords)}, name)


@builder
def string_concat(a: Any, b: Any, name: str | None = None) -> Node:
    """Elementwise concatenation of two string tensors."""
    return StringConcat([a, b], {}, name)


@builder
def string_split(data: Any, delimiter: str = "", maxsplit: int = 0, name: str | None = None) -> Node:
    """Split each string; outputs the padded pieces and their counts."""
    return StringSplit([data], {"delimiter": delimiter, "maxsplit": maxsplit}, name)


@builder
def regex_full_match(data: Any, pattern: str, name: str | None = None) -> Node:
    """Whether each string matches ``pattern`` entirely."""
    return RegexFullMatch([data], {"pattern": pattern}, name)


@builder
def tokenizer(data: Any, mark: bool = False, mincharnum: int = 1, pad_value: str = "#",
              separators: Sequence[str] = (), tokenexp: str = "", name: str | None = None) -> Node:
    """Cut strings into tokens (com.microsoft Tokenizer)."""
    return Tokenizer([data], {"mark": mark, "mincharnum": mincharnum, "pad_value": pad_value,
                              "separators": _json_list(separators), "tokenexp": tokenexp}, name)


@builder
def tf_idf_vectorizer(data: Any, name: str | None = None, **attrs: Any) -> Node:
    """Weighted n-gram counts (ONNX TfIdfVectorizer attributes as keywords)."""
    if "pool_strings" in attrs:
        attrs["pool_strings"] = _json_list(attrs["pool_strings"])
    return TfIdfVectorizer([data], attrs, name)
