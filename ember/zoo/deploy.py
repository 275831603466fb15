"""Zoo models as deployable IR, ready for OpenVINO-style scripts as Open Model Zoo's models are.

The cached IR of a zoo model is the network itself (f32 input, dynamic batch). The deployable
form adds what a script written for OpenVINO expects from a model file: a static default shape
(``N, C, H, W = compiled.input(0).shape`` works) and the preprocessing inside the graph, so the
input is the ``uint8`` BGR image ``cv2.imread`` gives, resized by the caller and transposed to
NCHW; channel order, mean and scale happen in the model (``PrePostProcessor`` steps, saved
with the IR).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ember.graph.model import Model
from ember.zoo.errors import ZooError


@dataclass(frozen=True)
class ImageInput:
    """How a zoo image model's input is made deployable: the static shape of the deployed input
    (``-1`` keeps a dimension dynamic), whether the network wants RGB (the deployed input is BGR
    like ``cv2.imread``), and the normalization ``(pixel - mean) / scale``."""

    shape: tuple[int, ...]
    rgb: bool
    mean: float
    scale: float


DEPLOY: dict[str, ImageInput] = {
    "efficientnet-lite0": ImageInput((1, 3, 224, 224), rgb=True, mean=127.0, scale=128.0),
    "ppocr-det": ImageInput((1, 3, -1, -1), rgb=False, mean=127.5, scale=127.5),
    "ppocr-rec": ImageInput((1, 3, 48, 320), rgb=False, mean=127.5, scale=127.5),
    "ppocr-cls": ImageInput((1, 3, 48, 192), rgb=False, mean=127.5, scale=127.5),
}


def deployable(name: str, model: Model) -> Model:
    """``model`` (zoo entry ``name``'s network) with a static default shape and, for image models,
    u8 BGR NCHW input with the normalization embedded. Other models are returned unchanged."""
    spec = DEPLOY.get(name)
    if spec is None:
        return model
    from ember.graph.layout import Layout
    from ember.graph.types import Type
    from ember.preprocess import PrePostProcessor

    model = model.clone()
    model.reshape({0: list(spec.shape)})
    ppp = PrePostProcessor(model)
    ppp.input(0).tensor().set_element_type(Type.u8).set_layout(Layout("NCHW"))
    ppp.input(0).model().set_layout(Layout("NCHW"))
    steps = ppp.input(0).preprocess().convert_element_type(Type.f32)
    if spec.rgb:
        steps.reverse_channels()
    steps.mean(spec.mean).scale(spec.scale)
    return ppp.build()


def export(name: str, output_dir: str | os.PathLike, cache: str | os.PathLike | None = None,
           compress_to_fp16: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Write zoo model ``name`` in deployable form as ``output_dir/model.xml`` + ``model.bin``
    (fetched and converted first if needed); returns the ``.xml`` path."""
    from ember.io import read_ir, write_ir
    from ember.zoo.prepare import fetch

    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ZooError(f"ember: --output_dir '{out}' exists and is not a folder")
    prepared = fetch(name, cache)
    if progress:
        progress(f"{name}: writing deployable IR")
    model = deployable(name, read_ir(prepared.xml))
    model.friendly_name = name
    out.mkdir(parents=True, exist_ok=True)
    xml = out / "model.xml"
    write_ir(model, xml, compress_to_fp16=compress_to_fp16)
    return xml
