"""The classic OpenVINO image-classification flow as a small command-line program, on ember.

The flow is OpenVINO's classic one (read the model, compile it, unpack the input's
``N, C, H, W``, resize the image, run ``compiled_model([input_image])[output_layer]``, argmax);
unlike the original it reads images without OpenCV and takes its arguments from the command
line. ``examples/openvino_classic.py`` is the original script itself, with only its import
changed.

    python examples/classify.py MODEL.xml [IMAGE] [--device CPU|AUTO|REFERENCE|...]

IMAGE is a ``.npy`` array (H x W x 3, RGB, uint8) or, when Pillow is installed, any image
file; without one a synthetic test image is used. The device defaults to CPU when ember
has it, else AUTO.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ember.runtime import Core  # the only change: was `from openvino.runtime import Core`


def load_image(path: str | None) -> np.ndarray:
    """An RGB image as an H x W x 3 uint8 array."""
    if path is None:
        y, x = np.mgrid[0:240, 0:320]
        return np.stack([x * 255 // 319, y * 255 // 239, (x + y) % 256], axis=-1).astype(np.uint8)
    if Path(path).suffix == ".npy":
        return np.load(path, allow_pickle=False).astype(np.uint8)
    try:
        from PIL import Image
    except ImportError:
        sys.exit("reading image files needs Pillow (pip install pillow); or pass a .npy array")
    return np.asarray(Image.open(path).convert("RGB"))


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize (the original uses cv2.resize)."""
    rows = (np.arange(height) * image.shape[0] // height).clip(0, image.shape[0] - 1)
    cols = (np.arange(width) * image.shape[1] // width).clip(0, image.shape[1] - 1)
    return image[rows][:, cols]


def main(argv: Sequence[str] | None = None) -> list[int]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("image", nargs="?")
    parser.add_argument("--device", "-d", default=None, help="default: CPU if available, else AUTO")
    args = parser.parse_args(argv)

    core = Core()
    device = args.device or ("CPU" if "CPU" in core.available_devices else "AUTO")
    model = core.read_model(model=args.model)
    compiled_model = core.compile_model(model=model, device_name=device)

    input_layer = compiled_model.input(0)
    output_layer = compiled_model.output(0)
    N, C, H, W = input_layer.shape

    image = load_image(args.image)
    resized_image = resize(image, W, H)
    input_image = np.expand_dims(np.transpose(resized_image, (2, 0, 1)), 0)

    result = compiled_model([input_image])[output_layer]
    result_index = int(np.argmax(result))

    top5 = [int(i) for i in np.argsort(result.reshape(-1))[-5:][::-1]]
    print(f"device: {device}; input {N}x{C}x{H}x{W}; top class {result_index}")
    for i in top5:
        print(f"  class {i:4d}  score {float(result.reshape(-1)[i]):.6f}")
    return top5


if __name__ == "__main__":
    main()
