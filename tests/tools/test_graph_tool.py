from __future__ import annotations

from pathlib import Path

import pytest

from ember.tools.cli import main

ONNX = Path(__file__).parent.parent / "data" / "ir_examples" / "convreluadd.onnx"


@pytest.mark.parametrize("suffix", [".html", ".svg"])
def test_graph_drawing(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"g{suffix}"
    assert main(["graph", str(ONNX), "-o", str(out), "--opt-level", "2"]) == 0
    text = out.read_text()
    assert "<svg" in text and "Convolution" in text and "ReLU" in text
    if suffix == ".html":
        assert "fused group" in text and "nodes:" in text
