"""Reading photos for the zoo's image models: scikit-image or Pillow, imported only when needed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ember.errors import EmberError

INSTALL_HINT = "pip install scikit-image (or Pillow), e.g. pip install 'ember[demo]'"
# scikit-image's bundled sample photos used by ``ember demo``: (loader name, caption).
SAMPLES = (("chelsea", "Chelsea the cat"), ("coffee", "a cup of coffee"))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an RGB ``[H, W, 3]`` uint8 array (scikit-image, else Pillow)."""
    p = Path(path)
    if not p.is_file():
        raise EmberError(f"ember: image '{p}' does not exist")
    try:
        import skimage.io

        img = np.asarray(skimage.io.imread(p))
    except ImportError:
        try:
            from PIL import Image
        except ImportError:
            raise EmberError(f"ember: reading images needs scikit-image or Pillow: {INSTALL_HINT}") from None
        try:
            with Image.open(p) as im:
                img = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise EmberError(f"ember: cannot read image '{p}': {e}") from None
    except (OSError, ValueError) as e:
        raise EmberError(f"ember: cannot read image '{p}': {e}") from None
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] < 3:
        raise EmberError(f"ember: '{p}' is not an RGB or grey image (shape {list(img.shape)})")
    return img[:, :, :3]


def sample_images() -> list[tuple[str, np.ndarray]]:
    """scikit-image's sample photos as ``(caption, RGB array)`` pairs."""
    try:
        import skimage.data
    except ImportError:
        raise EmberError(f"ember: the sample photos come with scikit-image: {INSTALL_HINT}; "
                         "or give image paths") from None
    return [(caption, np.asarray(getattr(skimage.data, name)())) for name, caption in SAMPLES]
