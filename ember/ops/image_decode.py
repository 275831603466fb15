"""ember's ImageDecoder op: ONNX ImageDecoder (compressed image bytes -> an [H, W, C] uint8 array).

OpenVINO has no decoder op, so this one is ember's own (IR version ``ember_opset1``). Decoding
uses Pillow, an optional extra (``pip install ember[images]``), imported only when a model with
the op runs: BMP, JPEG, JPEG 2000, PNG, PNM, TIFF and WebP, whatever the installed Pillow reads.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.errors import InferenceError
from ember.graph.node import Attr, Node
from ember.graph.registry import builder, register_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type

FORMATS = ("RGB", "BGR", "Grayscale")


def _pillow() -> Any:
    try:
        import PIL.Image
    except ImportError:
        raise InferenceError("ember: ImageDecoder needs Pillow: pip install 'ember[images]' (or pillow)") from None
    return PIL.Image


@register_op
class ImageDecoder(Node):
    """Decodes one compressed image (a 1-D uint8 tensor of the file's bytes) into [H, W, 3]
    RGB or BGR, or [H, W, 1] grayscale, uint8."""

    type_name = "ImageDecoder"
    version = "ember_opset1"
    num_inputs = (1, 1)
    attributes = (Attr("pixel_format", "str", "RGB"),)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        if self.attrs["pixel_format"] not in FORMATS:
            raise self.fail(f"pixel_format '{self.attrs['pixel_format']}' is not one of {FORMATS}")
        t = self.input_type(0)
        if not (t is Type.u8 or t.is_dynamic):
            raise self.fail(f"the encoded image must be u8 bytes, got {t}")
        channels = 1 if self.attrs["pixel_format"] == "Grayscale" else 3
        return [(Type.u8, PartialShape([Dimension(), Dimension(), channels]))]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        image = _pillow()
        data = np.ascontiguousarray(inputs[0], dtype=np.uint8).tobytes()
        try:
            img = image.open(io.BytesIO(data))
            img.load()
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for bad data
            raise InferenceError(f"ember: ImageDecoder '{self.friendly_name}': the bytes are not an image "
                                 f"Pillow can decode: {e}") from None
        fmt = self.attrs["pixel_format"]
        if fmt == "Grayscale":
            return [np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None]]
        rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
        return [np.ascontiguousarray(rgb[:, :, ::-1]) if fmt == "BGR" else rgb]


@builder
def image_decoder(encoded: Any, pixel_format: str = "RGB", name: str | None = None) -> Node:
    """Decode a compressed image into pixels."""
    return ImageDecoder([encoded], {"pixel_format": pixel_format}, name)
