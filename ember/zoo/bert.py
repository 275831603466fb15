"""A BERT encoder with mean pooling and L2 normalization (sentence-transformers' all-MiniLM-L6-v2),
built with ember's opset from a safetensors file and its ``config.json``.

Per layer: self-attention (query/key/value projections split into heads, scaled dot products,
softmax over the keys with padding masked out, the output projection) and a GELU feed-forward
block, each followed by a residual add and LayerNorm (``MVN`` times gamma plus beta). The
sentence embedding is the mean of the token vectors where ``attention_mask`` is 1, divided by
its L2 norm.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ember.errors import ConversionError
from ember.graph.model import Model


@dataclass(frozen=True)
class BertConfig:
    """The ``config.json`` fields the graph needs."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            cfg = cls(int(raw["hidden_size"]), int(raw["num_hidden_layers"]), int(raw["num_attention_heads"]),
                      int(raw["intermediate_size"]), float(raw.get("layer_norm_eps", 1e-12)),
                      str(raw.get("hidden_act", "gelu")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConversionError(f"ember: cannot read the BERT config '{path}': {e}") from None
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ConversionError(f"ember: hidden_size {cfg.hidden_size} is not a multiple of "
                                  f"num_attention_heads {cfg.num_attention_heads}")
        if cfg.hidden_act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise ConversionError(f"ember: BERT activation '{cfg.hidden_act}' is not supported (gelu only)")
        return cfg


def _tensor(weights: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = weights.get(key)
    if arr is None:
        raise ConversionError(f"ember: the BERT weights have no '{key}'")
    if tuple(arr.shape) != shape:
        raise ConversionError(f"ember: '{key}' has shape {list(arr.shape)}, expected {list(shape)}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def build(weights: Mapping[str, np.ndarray], cfg: BertConfig, prefix: str = "") -> Model:
    """The sentence-embedding graph.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (i64 ``[batch, seq]``), output
    ``sentence_embedding`` (f32 ``[batch, hidden]``). ``prefix`` is prepended to weight names
    (``"bert."`` for checkpoints that carry it).
    """
    import ember.opset as ops

    hid, heads = cfg.hidden_size, cfg.num_attention_heads
    head_dim = hid // heads
    act = "erf" if cfg.hidden_act == "gelu" else "tanh"

    def w(key: str, *shape: int) -> np.ndarray:
        return _tensor(weights, prefix + key, shape)

    def linear(x: Any, key: str, n_out: int, n_in: int) -> Any:
        y = ops.matmul(x, w(f"{key}.weight", n_out, n_in), False, True, name=key)
        return ops.add(y, w(f"{key}.bias", n_out), name=f"{key}.bias")

    def layer_norm(x: Any, key: str) -> Any:
        y = ops.mvn(x, np.array([-1], np.int64), True, cfg.layer_norm_eps, "inside_sqrt", name=key)
        y = ops.multiply(y, w(f"{key}.weight", hid), name=f"{key}.gamma")
        return ops.add(y, w(f"{key}.bias", hid), name=f"{key}.beta")

    def heads_first(x: Any, name: str) -> Any:  # [B, S, H] -> [B, heads, S, head_dim]
        x = ops.reshape(x, np.array([0, 0, heads, head_dim], np.int64), True, name=f"{name}.split")
        return ops.transpose(x, np.array([0, 2, 1, 3], np.int64), name=f"{name}.heads")

    ids = ops.parameter([-1, -1], np.int64, name="input_ids")
    mask = ops.parameter([-1, -1], np.int64, name="attention_mask")
    types = ops.parameter([-1, -1], np.int64, name="token_type_ids")
    for p in (ids, mask, types):
        p.output(0).set_names({p.friendly_name})

    word = w("embeddings.word_embeddings.weight", *weights[prefix + "embeddings.word_embeddings.weight"].shape)
    if word.shape[1] != hid:
        raise ConversionError(f"ember: word embeddings are {word.shape[1]}-d, hidden_size is {hid}")
    pos = weights.get(prefix + "embeddings.position_embeddings.weight")
    if pos is None:
        raise ConversionError("ember: the BERT weights have no position embeddings")
    pos = w("embeddings.position_embeddings.weight", pos.shape[0], hid)
    type_table = weights.get(prefix + "embeddings.token_type_embeddings.weight")
    if type_table is None:
        raise ConversionError("ember: the BERT weights have no token type embeddings")
    type_table = w("embeddings.token_type_embeddings.weight", type_table.shape[0], hid)

    zero = np.array(0, np.int64)
    seq_len = ops.gather(ops.shape_of(ids), np.array([1], np.int64), zero, name="seq_len")
    positions = ops.slice(pos, np.array([0], np.int64), seq_len, np.array([1], np.int64),
                          np.array([0], np.int64), name="positions")
    x = ops.add(ops.gather(word, ids, zero, name="word_embeddings"),
                ops.gather(type_table, types, zero, name="token_type_embeddings"), name="embeddings.sum")
    x = ops.add(x, positions, name="embeddings.positions")
    x = layer_norm(x, "embeddings.LayerNorm")

    mask_f = ops.convert(mask, "f32", name="mask.f32")
    # [B, S] -> [B, 1, 1, S]: 0 where attended, a huge negative number where padded.
    mask4 = ops.reshape(mask_f, np.array([0, 1, 1, -1], np.int64), True, name="mask.4d")
    bias = ops.multiply(ops.subtract(np.float32(1.0), mask4, name="mask.invert"),
                        np.float32(np.finfo(np.float32).min), name="mask.bias")
    scale = np.float32(1.0 / np.sqrt(head_dim))

    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}"
        q = heads_first(linear(x, f"{p}.attention.self.query", hid, hid), f"{p}.q")
        k = heads_first(linear(x, f"{p}.attention.self.key", hid, hid), f"{p}.k")
        v = heads_first(linear(x, f"{p}.attention.self.value", hid, hid), f"{p}.v")
        scores = ops.multiply(ops.matmul(q, k, False, True, name=f"{p}.qk"), scale, name=f"{p}.scaled")
        probs = ops.softmax(ops.add(scores, bias, name=f"{p}.masked"), -1, name=f"{p}.softmax")
        ctx = ops.transpose(ops.matmul(probs, v, False, False, name=f"{p}.pv"), np.array([0, 2, 1, 3], np.int64),
                            name=f"{p}.ctx")
        ctx = ops.reshape(ctx, np.array([0, 0, hid], np.int64), True, name=f"{p}.merge")
        attn = linear(ctx, f"{p}.attention.output.dense", hid, hid)
        x = layer_norm(ops.add(attn, x, name=f"{p}.attention.residual"), f"{p}.attention.output.LayerNorm")
        h = ops.gelu(linear(x, f"{p}.intermediate.dense", cfg.intermediate_size, hid), act, name=f"{p}.gelu")
        h = linear(h, f"{p}.output.dense", hid, cfg.intermediate_size)
        x = layer_norm(ops.add(h, x, name=f"{p}.output.residual"), f"{p}.output.LayerNorm")

    mask3 = ops.unsqueeze(mask_f, np.array([2], np.int64), name="mask.3d")
    summed = ops.reduce_sum(ops.multiply(x, mask3, name="pool.masked"), np.array([1], np.int64), False,
                            name="pool.sum")
    count = ops.maximum(ops.reduce_sum(mask3, np.array([1], np.int64), False, name="pool.count"),
                        np.float32(1e-9), name="pool.count_min")
    mean = ops.divide(summed, count, name="pool.mean")
    emb = ops.normalize_l2(mean, np.array([1], np.int64), 1e-24, "max", name="sentence_embedding")
    emb.output(0).set_names({"sentence_embedding"})
    return Model([emb], [ids, mask, types], "all-minilm-l6-v2")


def convert(files: Mapping[str, Path]) -> Model:
    """The zoo converter: safetensors weights + ``config.json`` to the sentence-embedding graph."""
    from ember.zoo.safetensors import read_safetensors

    by_name = {m.rsplit("/", 1)[-1]: p for m, p in files.items() if "/1_Pooling/" not in m}
    pooling = [p for m, p in files.items() if "/1_Pooling/" in m]
    if pooling:
        mode = json.loads(Path(pooling[0]).read_text(encoding="utf-8"))
        if not mode.get("pooling_mode_mean_tokens"):
            raise ConversionError(f"ember: only mean pooling is supported; the model asks for {mode}")
    cfg = BertConfig.from_json(by_name["config.json"])
    weights = read_safetensors(by_name["model.safetensors"])
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
    return build(weights, cfg, prefix)
