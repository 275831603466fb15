"""A Gradio image-classification demo: upload an image, see EfficientNet-Lite0's top-5 (ember).

    pip install "ember[serve]" gradio
    python examples/gradio_app.py                     # then open http://127.0.0.1:7860

The model comes from ember's zoo (fetched from PyPI once, converted to IR, cached) and runs
in-process on the CPU device; the classifier is the one of ``examples/fastapi_app.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastapi_app import Classifier  # noqa: E402


def build_demo(classifier: Classifier | None = None) -> Any:
    """The Gradio interface (the classifier is built here unless one is given)."""
    import gradio as gr

    clf = classifier or Classifier()

    def predict(image: np.ndarray | None) -> dict[str, float]:
        if image is None:
            return {}
        return {c["label"]: c["probability"] for c in clf.classify(image)}

    return gr.Interface(fn=predict, inputs=gr.Image(type="numpy", label="image"),
                        outputs=gr.Label(num_top_classes=5, label="top-5"),
                        title="EfficientNet-Lite0 on ember",
                        description="Upload an image: the five most likely ImageNet classes appear.",
                        flagging_mode="never")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--device", default="CPU")
    args = ap.parse_args(argv)
    build_demo(Classifier(args.device)).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
