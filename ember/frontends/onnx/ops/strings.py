"""ONNX string ops onto ember's own string ops (``ember.ops.strings``): StringNormalizer,
StringConcat, StringSplit, RegexFullMatch, TfIdfVectorizer and com.microsoft's Tokenizer."""

from __future__ import annotations

import ember.opset as ops
from ember.frontends.onnx.context import NodeContext
from ember.frontends.onnx.registry import converter
from ember.graph.node import Output


@converter("StringNormalizer", since=10)
def string_normalizer(ctx: NodeContext) -> Output:
    return ops.string_normalizer(ctx.req(0), ctx.attr("case_change_action", "NONE"),
                                 bool(ctx.attr("is_case_sensitive", 0)), ctx.attr("locale", ""),
                                 ctx.attr("stopwords", [])).output(0)


@converter("StringConcat", since=20)
def string_concat(ctx: NodeContext) -> Output:
    return ops.string_concat(ctx.req(0), ctx.req(1)).output(0)


@converter("StringSplit", since=20)
def string_split(ctx: NodeContext) -> list[Output]:
    return ops.string_split(ctx.req(0), ctx.attr("delimiter", ""), ctx.attr("maxsplit", 0)).outputs()


@converter("RegexFullMatch", since=20)
def regex_full_match(ctx: NodeContext) -> Output:
    return ops.regex_full_match(ctx.req(0), ctx.attr("pattern")).output(0)


@converter("TfIdfVectorizer", since=9)
def tf_idf_vectorizer(ctx: NodeContext) -> Output:
    attrs = {k: ctx.attr(k) for k in ("max_gram_length", "min_gram_length", "max_skip_count", "mode",
                                      "ngram_counts", "ngram_indexes", "pool_int64s", "pool_strings", "weights")
             if ctx.has_attr(k)}
    return ops.tf_idf_vectorizer(ctx.req(0), **attrs).output(0)


@converter("Tokenizer", domain="com.microsoft")
def tokenizer(ctx: NodeContext) -> Output:
    return ops.tokenizer(ctx.req(0), bool(ctx.attr("mark", 0)), ctx.attr("mincharnum", 1),
                         ctx.attr("pad_value", "#"), ctx.attr("separators", []),
                         ctx.attr("tokenexp", "")).output(0)
