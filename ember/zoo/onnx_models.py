"""Zoo models shipped as ONNX files: converted by ember's ONNX frontend."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ember.graph.model import Model
from ember.zoo.errors import ZooError


def convert(files: Mapping[str, Path]) -> Model:
    """Convert the entry's single ``.onnx`` file with ``ember.frontends.onnx.convert``."""
    onnx_files = [p for m, p in files.items() if m.endswith(".onnx")]
    if len(onnx_files) != 1:
        raise ZooError(f"ember: expected one .onnx file, got {sorted(files)}")
    try:
        from ember.frontends.onnx import convert as onnx_convert
    except ImportError as e:  # the frontend is an optional part of an ember checkout in progress
        raise ZooError(f"ember: the ONNX frontend is not available ({e})") from None
    return onnx_convert(onnx_files[0])
