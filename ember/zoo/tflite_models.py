"""Zoo models shipped as TFLite files (MediaPipe's face, hand and pose models): converted by
ember's TFLite frontend, without TensorFlow."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ember.graph.model import Model
from ember.zoo.download import WheelSource
from ember.zoo.errors import ZooError

# MediaPipe's wheel is built per platform and Python version; its .tflite files are the same in
# every build, so the zoo pins the CPython 3.11 manylinux one (pip downloads it on any host).
MEDIAPIPE = WheelSource("mediapipe", "0.10.21", "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
                        "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3")

MEDIAPIPE_FILES = {
    "hand_landmark_lite": "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
    "palm_detection_lite": "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
    "iris_landmark": "mediapipe/modules/iris_landmark/iris_landmark.tflite",
    "face_landmark": "mediapipe/modules/face_landmark/face_landmark.tflite",
    "pose_detection": "mediapipe/modules/pose_detection/pose_detection.tflite",
    "selfie_segmentation": "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
    "face_landmark_with_attention": "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite",
}


def convert(files: Mapping[str, Path]) -> Model:
    """Convert the entry's single ``.tflite`` file with ``ember.frontends.tflite.convert``."""
    tflite_files = [p for m, p in files.items() if m.endswith(".tflite")]
    if len(tflite_files) != 1:
        raise ZooError(f"ember: expected one .tflite file, got {sorted(files)}")
    from ember.frontends.tflite import convert as tflite_convert

    return tflite_convert(tflite_files[0])


def mediapipe_file(name: str, cache: str | None = None) -> Path:
    """One of MediaPipe's ``.tflite`` files (``MEDIAPIPE_FILES`` keys), from the verified wheel."""
    from ember.zoo.download import cache_dir, extract, fetch_wheel

    member = MEDIAPIPE_FILES[name]
    target = cache_dir(cache) / "tflite" / "mediapipe-0.10.21"
    path = target / Path(member).name
    if not path.exists():
        extract(fetch_wheel(MEDIAPIPE, cache), member, target)
    return path
