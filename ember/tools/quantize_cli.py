"""``ember quantize MODEL --data DIR``: INT8 post-training quantization, and ``ember compress MODEL
--mode int4_asym [--data DIR --awq --scale-estimation]``: weight compression, from the command
line, calibrated on a folder of images or ``.npy``/``.npz`` files.

Each step is a function over library objects: ``find_samples`` lists the files,
``sample_reader`` turns one file into model inputs, ``build_dataset`` wraps them lazily in an
``ember.nncf.Dataset``, and ``quantize_options`` turns the flags into ``quantize`` arguments.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ember.quantize.parameters import QuantizationError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
ARRAY_SUFFIXES = {".npy", ".npz"}
MODES = ("int8_asym", "int8_sym", "int4_sym", "int4_asym")
RANGE_ESTIMATORS = ("mean_minmax", "minmax", "median_minmax", "mean_no_outliers_minmax", "mean_quantile", "histogram")


def find_samples(paths: Sequence[str]) -> list[Path]:
    """Image and array files given directly or found (sorted, not recursively) in folders."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES | ARRAY_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise QuantizationError(f"ember: calibration data '{p}' does not exist")
    if not found:
        raise QuantizationError(f"ember: no images or .npy/.npz files in {', '.join(paths)}")
    return found


def _floats(text: str | None) -> np.ndarray | None:
    return None if text is None else np.array([float(v) for v in text.strip("[]").split(",")], np.float32)


def sample_reader(model: Any, mean: str | None = None, scale: str | None = None, layout: str = "NCHW",
                  reverse_channels: bool = False) -> Callable[[Path], Any]:
    """A function from one file to the model's inputs. Images are resized to the (static)
    height and width of the model's one image input, then ``(pixel - mean) / scale``; arrays are
    fed as they are (``.npz``: one array per input name)."""
    inputs = model.inputs
    mean_v, scale_v = _floats(mean), _floats(scale)

    def read(path: Path) -> Any:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if len(inputs) != 1:
            raise QuantizationError("ember: images calibrate one-input models only; give .npz files for "
                                    f"the {len(inputs)} inputs")
        shape = inputs[0].partial_shape
        if not shape.rank.is_static or len(shape) != 4 or not all(shape[i].is_static for i in (1, 2, 3)):
            raise QuantizationError(f"ember: the model input has shape {shape}; images need a static "
                                    "[N, C, H, W] or [N, H, W, C] input (reshape the model first)")
        dims = [d.get_length() for d in list(shape)[1:]]
        h, w = (dims[1], dims[2]) if layout.upper() == "NCHW" else (dims[0], dims[1])
        from ember.zoo.efficientnet import resize, to_rgb
        from ember.zoo.images import load_image

        img = resize(to_rgb(load_image(path)), h, w)
        if reverse_channels:
            img = img[:, :, ::-1]
        if mean_v is not None:
            img = img - mean_v
        if scale_v is not None:
            img = img / scale_v
        x = img.transpose(2, 0, 1) if layout.upper() == "NCHW" else img
        return np.ascontiguousarray(x[None], dtype=np.float32)

    return read


def build_dataset(files: list[Path], reader: Callable[[Path], Any]) -> Any:
    """An ``ember.nncf.Dataset`` that reads each file only when it is used."""
    from ember.quantize.dataset import Dataset

    return Dataset(files, reader)


def quantize_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``quantize`` keyword arguments the flags ask for."""
    from ember.quantize import (
        AdvancedQuantizationParameters,
        IgnoredScope,
        ModelType,
        QuantizationPreset,
        RangeEstimatorParametersSet,
    )

    scope = IgnoredScope(names=args.ignore or (), patterns=args.ignore_pattern or (), types=args.ignore_type or ())
    return {
        "subset_size": 300 if args.subset_size is None else args.subset_size,
        "preset": None if args.preset is None else QuantizationPreset[args.preset.upper()],
        "model_type": ModelType.TRANSFORMER if args.model_type == "transformer" else None,
        "fast_bias_correction": args.bias_correction != "full",
        "ignored_scope": scope if scope else None,
        "advanced_parameters": AdvancedQuantizationParameters(
            disable_bias_correction=args.bias_correction == "none",
            activations_range_estimator_params=getattr(RangeEstimatorParametersSet, args.range_estimator.upper())),
    }


def summarize(model: Any) -> str:
    """One line: how many quantizers went in and which compute ops stayed float."""
    ops = model.get_ordered_ops()
    fq = sum(n.type_name == "FakeQuantize" for n in ops)
    weights = sum("/fq_weights_" in n.friendly_name and n.type_name == "Multiply" for n in ops)
    quantized = {c.node.friendly_name for n in ops if n.type_name == "FakeQuantize" or "/fq_weights_" in n.friendly_name
                 for c in n.output(0).targets}
    float_ops = Counter(n.type_name for n in ops if n.type_name in ("Convolution", "GroupConvolution", "MatMul")
                        and n.friendly_name not in quantized)
    rest = ", ".join(f"{k} x{v}" for k, v in sorted(float_ops.items())) or "none"
    return f"{fq} activation quantizers (FakeQuantize), {weights} int8/int4 weights; compute ops left float: {rest}"


def compress_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``compress_weights`` keyword arguments the flags ask for (without the dataset)."""
    from ember.quantize import CompressWeightsMode, IgnoredScope, SensitivityMetric

    scope = IgnoredScope(names=args.ignore or (), patterns=args.ignore_pattern or (), types=args.ignore_type or ())
    opts: dict[str, Any] = {"mode": CompressWeightsMode[args.compress_weights.upper()], "ratio": args.ratio,
                            "group_size": args.group_size, "all_layers": args.all_layers or None,
                            "ignored_scope": scope if scope else None}
    if args.sensitivity_metric:
        opts["sensitivity_metric"] = SensitivityMetric[args.sensitivity_metric.upper()]
    if args.awq:
        opts["awq"] = True
    if args.scale_estimation:
        opts["scale_estimation"] = True
    if args.subset_size is not None:
        opts["subset_size"] = args.subset_size
    return opts


def cmd_quantize(args: argparse.Namespace) -> int:
    from ember.io import write_ir
    from ember.quantize.graph_utils import load_model

    model = load_model(args.model)
    if args.shape:
        from ember.tools.benchmark import parse_shapes

        model.reshape(parse_shapes(args.shape))
    dataset = None
    files: list[Path] = []
    if args.data:
        files = find_samples(args.data)
        dataset = build_dataset(files, sample_reader(model, args.mean_values, args.scale_values, args.layout,
                                                     args.reverse_input_channels))
    if args.compress_weights:
        from ember.quantize import compress_weights

        # data-aware compression (mixed precision by activations, AWQ, scale estimation) when --data is given
        out = compress_weights(model, dataset=dataset, **compress_options(args))
        suffix = "_" + args.compress_weights.lower()
    else:
        if dataset is None:
            raise QuantizationError("ember: quantize needs calibration data: --data DIR (images or .npy files)")
        from ember.quantize import quantize

        if args.awq or args.scale_estimation or args.sensitivity_metric:
            raise QuantizationError("ember: --awq, --scale-estimation and --sensitivity-metric apply to weight "
                                    "compression (--compress-weights MODE, or ember compress)")
        out = quantize(model, dataset, **quantize_options(args))
        suffix = "_int8"
        if args.report:
            from ember.quantize import compare

            print(compare(model, out, dataset, subset_size=min(args.report_samples, len(files))))
    output = Path(args.output or Path(args.model).with_suffix("").as_posix() + suffix + ".xml")
    write_ir(out, output, compress_to_fp16=False)
    print(f"ember: {summarize(out)}")
    print(f"ember: wrote {output}")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    """``ember compress MODEL --mode int4_asym ...``: ``ember quantize --compress-weights MODE``."""
    args.compress_weights = args.mode
    return cmd_quantize(args)


def _add_common(p: Any) -> None:
    """Flags both subcommands take: the model, the data, the output, ignored layers."""
    p.add_argument("model", help="IR .xml or .onnx file")
    p.add_argument("--data", action="append", metavar="PATH",
                   help="calibration images or .npy/.npz files, or folders of them (repeatable)")
    p.add_argument("-o", "--output", help="output IR .xml (default MODEL_int8.xml, MODEL_<mode>.xml)")
    p.add_argument("--subset-size", type=int, default=None,
                   help="calibration samples to use (default 300 for quantize, 128 for weight compression)")
    p.add_argument("--ignore", action="append", metavar="NAME", help="keep this layer float (repeatable)")
    p.add_argument("--ignore-pattern", action="append", metavar="REGEX", help="keep matching layers float")
    p.add_argument("--ignore-type", action="append", metavar="TYPE", help="keep ops of this type float, e.g. MatMul")
    p.add_argument("--shape", help="reshape inputs first: [1,3,224,224] or x[1,3,224,224]")
    p.add_argument("--mean-values", help="images: subtract per channel, e.g. 127,127,127")
    p.add_argument("--scale-values", help="images: divide per channel, e.g. 128,128,128")
    p.add_argument("--reverse-input-channels", action="store_true", help="images: feed BGR instead of RGB")
    p.add_argument("--layout", default="NCHW", choices=("NCHW", "NHWC"), help="images: the input layout")


def _add_compression(p: Any) -> None:
    """Weight-compression flags; with --data the INT4 modes are data-aware as in NNCF."""
    from ember.quantize.parameters import SensitivityMetric

    p.add_argument("--ratio", type=float, help="INT4: share of weights in INT4 (default 1)")
    p.add_argument("--group-size", type=int, help="INT4: group size (default 128)")
    p.add_argument("--all-layers", action="store_true", help="INT4: embeddings and the last layer too")
    p.add_argument("--sensitivity-metric", choices=[m.name.lower() for m in SensitivityMetric],
                   help="INT4 with --ratio: how layers are ranked (default max_activation_variance with --data)")
    p.add_argument("--awq", action="store_true", help="INT4 with --data: activation-aware weight scaling (AWQ)")
    p.add_argument("--scale-estimation", action="store_true",
                   help="INT4 with --data: fit each group's scale to the calibration outputs")


def add_parser(subparsers: Any) -> None:
    """Register ``ember quantize`` and ``ember compress``."""
    p = subparsers.add_parser("quantize", help="INT8 post-training quantization (NNCF's algorithm) or weight compression")
    _add_common(p)
    p.add_argument("--preset", choices=("performance", "mixed"), help="symmetric (performance) or asymmetric "
                   "(mixed) activations; default performance, mixed for transformers")
    p.add_argument("--model-type", choices=("transformer",), help="transformer rules and SmoothQuant")
    p.add_argument("--bias-correction", choices=("fast", "full", "none"), default="fast")
    p.add_argument("--range-estimator", default="mean_minmax", choices=RANGE_ESTIMATORS,
                   help="activation ranges (NNCF's RangeEstimatorParametersSet; default mean_minmax; "
                   "histogram: least-error ranges, for activations whose min/max are set by rare values)")
    p.add_argument("--report", action="store_true", help="print the per-layer error report after quantizing")
    p.add_argument("--report-samples", type=int, default=4, help="samples for --report (default 4)")
    p.add_argument("--compress-weights", choices=MODES,
                   help="weight-only compression instead of quantization (data-aware with --data for INT4)")
    _add_compression(p)
    p.set_defaults(func=cmd_quantize)

    c = subparsers.add_parser("compress", help="weight-only compression (NNCF's compress_weights): INT8, INT4, "
                              "data-aware with --data")
    _add_common(c)
    c.add_argument("--mode", choices=MODES, default="int8_asym", help="weight format (default int8_asym)")
    _add_compression(c)
    c.set_defaults(func=cmd_compress, report=False)
