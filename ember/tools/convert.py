"""``ember convert`` (alias ``ember mo``): a model file -> optimized OpenVINO IR, with the flags
of ``ovc`` and of the Model Optimizer (``mo --input_model m.onnx --output_dir out/``)."""

from __future__ import annotations

import argparse
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ember.errors import EmberError


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", aliases=["mo"],
                       help="convert a model (.onnx) into optimized OpenVINO IR (.xml + .bin); ovc and mo flags")
    p.add_argument("model", nargs="?", help="the model to convert (.onnx, or IR .xml to re-optimize)")
    p.add_argument("--input_model", "-m", dest="input_model", help="the model, as mo's --input_model")
    p.add_argument("-o", "--output_dir", default=".",
                   help="folder for the IR (default: current folder); a path ending in .xml names the IR file")
    p.add_argument("--output_model", help="IR .xml path (overrides --output_dir)")
    p.add_argument("--model_name", "-n", help="name of the IR files and the model (default: the input's name)")
    p.add_argument("--input", help="inputs with optional shapes and types: data[1,3,224,224],mask{i64}[1,?] "
                                   "(on IR: reshapes)")
    p.add_argument("--input_shape", help="mo's shapes: [1,3,224,224] or [1,3,224,224],[1,10] "
                                         "(in the order of --input names, or of the model's inputs)")
    p.add_argument("--output", help="comma-separated output tensor names to keep")
    p.add_argument("--compress_to_fp16", type=_bool, nargs="?", const=True, default=True,
                   help="store f32 weights as f16 (default true, as ovc)")
    p.add_argument("--mean_values", help="[123.7,116.3,103.5] or data[...] per input; subtracted in the graph")
    p.add_argument("--scale_values", help="[58.4,57.1,57.4] or data[...] per input; divided in the graph")
    p.add_argument("--reverse_input_channels", action="store_true", help="flip RGB<->BGR of 3-channel inputs")
    p.add_argument("--layout", help="input layouts: NCHW or data(NCHW),x(NC)")
    p.add_argument("--opt-level", "--opt_level", dest="opt_level", type=int, default=2, choices=[0, 1, 2, 3],
                   help="graph optimization level: 0 none, 1 basic, 2 extended (default), 3 all (the device "
                        "passes of level 3 run inside compile_model, so the IR is level 2's)")
    p.add_argument("--report", action="store_true", help="print which passes fired and node counts")
    p.set_defaults(func=run)


def _layouts(text: str | None) -> Any:
    if not text:
        return None
    if "(" not in text:
        return text
    out = {}
    for part in text.split(")"):
        part = part.strip(", ")
        if part:
            name, _, lay = part.partition("(")
            out[name.strip()] = lay.strip()
    return out


def _mo_shapes(text: str) -> list[str]:
    """``[1,3,224,224],[1,10]`` or ``(1,3,224,224)`` -> one ``[...]`` string per input."""
    import re

    parts = re.findall(r"[\[(]([^\])]*)[\])]", text)
    if not parts or re.sub(r"[\[(][^\])]*[\])]", "", text).replace(",", "").strip():
        raise EmberError(f"ember: cannot read --input_shape {text!r}; expected [1,3,224,224] or [1,3,224,224],[1,10]")
    return [f"[{p}]" for p in parts]


def input_argument(input_text: str | None, input_shape: str | None) -> Any:
    """``--input`` (ovc syntax) combined with mo's ``--input_shape`` into ``convert_model``'s ``input=``."""
    from ember.convert import parse_input_arg

    specs = parse_input_arg(input_text) if input_text else []
    if not input_shape:
        return specs or None
    shapes = _mo_shapes(input_shape)
    if specs and len(specs) != len(shapes):
        raise EmberError(f"ember: --input names {len(specs)} inputs but --input_shape gives {len(shapes)} shapes")
    if not specs:
        return [(shape,) for shape in shapes] if len(shapes) > 1 else shapes[0]
    out = []
    for spec, shape in zip(specs, shapes):
        if len(spec) > 1 and spec[1] is not None:
            raise EmberError(f"ember: input '{spec[0]}' has a shape in --input and in --input_shape; give one")
        out.append((spec[0], shape, *spec[2:]))
    return out


def count_ir_layers(xml: Path) -> int:
    """Nodes of the written IR's top-level graph, as ``ember info`` counts them."""
    root = ET.parse(xml).getroot()
    layers = root.find("layers")
    return 0 if layers is None else len(layers.findall("layer"))


def run(args: argparse.Namespace) -> int:
    from ember import progress
    from ember.passes import OptimizationReport

    source = args.input_model or args.model
    if not source:
        raise EmberError("ember convert: give the model to convert (ember convert MODEL or --input_model MODEL)")
    if args.input_model and args.model and args.input_model != args.model:
        raise EmberError("ember convert: the model is given twice (positional and --input_model)")
    args.model = source
    report = OptimizationReport(args.opt_level)
    started = time.perf_counter()
    with progress.shown(sys.stderr.isatty()):
        model = _convert(args, report)
    converted = time.perf_counter()
    _write(args, model, report, started, converted)
    return 0


def _convert(args: argparse.Namespace, report: Any) -> Any:
    from ember.convert import convert_model, parse_values

    return convert_model(
        args.model,
        input=input_argument(args.input, args.input_shape),
        output=[s.strip() for s in args.output.split(",")] if args.output else None,
        opt_level=args.opt_level,
        mean_values=parse_values(args.mean_values) if args.mean_values else None,
        scale_values=parse_values(args.scale_values) if args.scale_values else None,
        reverse_input_channels=args.reverse_input_channels,
        layout=_layouts(args.layout),
        report=report,
    )


def _write(args: argparse.Namespace, model: Any, report: Any, started: float, converted: float) -> None:
    from ember.io import write_ir

    stem = args.model_name or Path(args.model).stem
    if args.output_model:
        xml = Path(args.output_model)
    elif args.output_dir.lower().endswith(".xml"):
        xml = Path(args.output_dir)  # -o model.xml names the file, as ovc's --output_model
    else:
        xml = Path(args.output_dir) / (stem + ".xml")
    if xml.suffix != ".xml":
        raise EmberError(f"ember: --output_model must end in .xml, got '{xml}'")
    if xml.exists() and xml.is_dir():
        raise EmberError(f"ember: '{xml}' is a folder; give a .xml file path or an output folder")
    if args.model_name:
        model.friendly_name = args.model_name
    model.set_rt_info(str(Path(args.model).name), ["conversion_parameters", "input_model"])
    write_ir(model, xml, compress_to_fp16=args.compress_to_fp16)
    if args.report:
        print(report.format())
    nodes = count_ir_layers(xml)
    f16 = " with f16 weights" if args.compress_to_fp16 else ""
    print(f"saved {xml} and {xml.with_suffix('.bin')} ({nodes} nodes{f16}; converted in "
          f"{converted - started:.1f} s, written in {time.perf_counter() - converted:.1f} s)")
