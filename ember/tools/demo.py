"""``ember demo``: classify real photos with EfficientNet-Lite0 from the zoo.

Each step is a small function over library calls: fetch and convert the model
(:func:`ember.zoo.fetch`), compile it (``Core.compile_model``), read the photos, classify them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "efficientnet-lite0"


def prepare_model(cache: str | None = None) -> Any:
    """Fetch and convert the demo model (cached after the first run)."""
    from ember import zoo

    prepared = zoo.fetch(MODEL, cache)
    how = "converted to IR" if prepared.converted else "reused cached IR"
    fetched = f", downloaded in {prepared.download_seconds:.1f} s" if prepared.download_seconds >= 0.05 else ""
    print(f"{MODEL}: {how} in {prepared.seconds:.1f} s{fetched}  ({prepared.entry.source.requirement}, "
          f"{prepared.entry.licence.split(' ')[0]})")
    return prepared


def compile_model(xml: Path, device: str) -> Any:
    """Compile the IR on ``device`` (``AUTO`` picks the best available one)."""
    from ember.runtime import Core

    start = time.perf_counter()
    compiled = Core().compile_model(str(xml), device)
    try:
        chosen = ", ".join(compiled.get_property("EXECUTION_DEVICES"))
    except Exception:  # noqa: BLE001 - the device list is only informative
        chosen = device
    print(f"compiled for {chosen} in {time.perf_counter() - start:.2f} s")
    return compiled


def read_photos(paths: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """The photos to classify: the given files, or scikit-image's sample photos."""
    from ember.zoo.images import load_image, sample_images

    if paths:
        return [(str(p), load_image(p)) for p in paths]
    return sample_images()


def classify(compiled: Any, image: np.ndarray, top: int = 5, runs: int = 3) -> tuple[list[tuple[int, float]], float]:
    """Top-``top`` classes of ``image`` and the median latency of ``runs`` inferences, in ms."""
    from ember.zoo.efficientnet import preprocess, top_k

    x = preprocess(image)
    request = compiled.create_infer_request()
    request.infer({0: x})  # warm-up: the first run may finish compiling lazily
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        result = request.infer({0: x})
        times.append((time.perf_counter() - start) * 1000)
    return top_k(result[0][0], top), statistics.median(times)


def print_result(caption: str, image: np.ndarray, ranked: list[tuple[int, float]], latency_ms: float) -> None:
    from ember.zoo import imagenet_labels

    labels = imagenet_labels()
    print(f"\n{caption} ({image.shape[1]}x{image.shape[0]}): {latency_ms:.1f} ms per inference")
    for rank, (index, prob) in enumerate(ranked, 1):
        print(f"  {rank}. {labels[index]:<28}{prob * 100:6.2f}%")


def cmd_demo(args: argparse.Namespace) -> int:
    photos = read_photos(args.images)  # before any download: a bad path fails at once
    prepared = prepare_model(args.cache)
    compiled = compile_model(prepared.xml, args.device)
    for caption, image in photos:
        ranked, ms = classify(compiled, image, args.top, args.runs)
        print_result(caption, image, ranked, ms)
    print(f"\nFor OpenVINO-style scripts (u8 BGR input, preprocessing inside): "
          f"ember zoo fetch {MODEL} --output_dir openvino_model/")
    print(f"IR saved at {prepared.xml} (+ .bin); try: ember info {prepared.xml}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``ember demo``."""
    p = subparsers.add_parser("demo", help="classify photos with EfficientNet-Lite0 from the model zoo")
    p.add_argument("images", nargs="*", help="image files (default: scikit-image's cat and coffee photos)")
    p.add_argument("--device", "-d", default="AUTO", help="device name (default AUTO: the best available)")
    p.add_argument("--top", type=int, default=5, help="how many classes to show (default 5)")
    p.add_argument("--runs", type=int, default=3, help="timed inferences per photo (default 3)")
    p.add_argument("--cache", help="zoo cache folder (default $EMBER_ZOO_CACHE or ~/.cache/ember/zoo)")
    p.set_defaults(func=cmd_demo)
