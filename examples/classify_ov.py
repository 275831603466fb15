"""OpenVINO's newer-style classification sample (``hello_classification.py``), on ember.

The OpenVINO calls are the sample's, with ``import ember as ov`` for ``import openvino as ov``
(the argument handling and the image reader are this example's own): preprocessing (u8 NHWC input of any size, linear
resize, layout conversion) is built into the model with ``PrePostProcessor``.

    python examples/classify_ov.py MODEL.xml [IMAGE] [--device CPU|AUTO|REFERENCE|...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import ember as ov  # was: import openvino as ov
from ember.preprocess import PrePostProcessor, ResizeAlgorithm  # was: from openvino.preprocess import ...

sys.path.insert(0, str(Path(__file__).parent))
from classify import load_image  # noqa: E402 - the image reader shared with the classic example


def main(argv: Sequence[str] | None = None) -> list[int]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("image", nargs="?")
    parser.add_argument("--device", "-d", default=None, help="default: CPU if available, else AUTO")
    args = parser.parse_args(argv)

    core = ov.Core()
    device_name = args.device or ("CPU" if "CPU" in core.available_devices else "AUTO")
    model = core.read_model(args.model)

    image = load_image(args.image)
    input_tensor = np.expand_dims(image, 0)

    ppp = PrePostProcessor(model)
    _, h, w, _ = input_tensor.shape
    ppp.input().tensor() \
        .set_shape(input_tensor.shape) \
        .set_element_type(ov.Type.u8) \
        .set_layout(ov.Layout("NHWC"))
    ppp.input().preprocess().resize(ResizeAlgorithm.RESIZE_LINEAR)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.output().tensor().set_element_type(ov.Type.f32)
    model = ppp.build()

    compiled_model = core.compile_model(model, device_name)
    results = compiled_model.infer_new_request({0: input_tensor})
    predictions = next(iter(results.values()))

    probs = predictions.reshape(-1)
    top_10 = np.argsort(probs)[-10:][::-1]
    print(f"device: {device_name}; image {h}x{w}")
    print("class_id probability")
    for class_id in top_10:
        print(f"{class_id:<8} {probs[class_id]:.7f}")
    return [int(i) for i in top_10]


if __name__ == "__main__":
    main()
