"""``ember convert``: a model file -> optimized OpenVINO IR, with ``ovc``/``mo`` flags."""

from __future__ import annotations

import argparse
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
    p = sub.add_parser("convert", help="convert a model (.onnx) into optimized OpenVINO IR (.xml + .bin)")
    p.add_argument("model", help="the model to convert (.onnx, or IR .xml to re-optimize)")
    p.add_argument("-o", "--output_dir", default=".", help="folder for the IR (default: current folder)")
    p.add_argument("--output_model", help="IR .xml path (overrides --output_dir)")
    p.add_argument("--input", help="inputs with optional shapes and types: data[1,3,224,224],mask{i64}[1,?]")
    p.add_argument("--output", help="comma-separated output tensor names to keep")
    p.add_argument("--compress_to_fp16", type=_bool, nargs="?", const=True, default=True,
                   help="store f32 weights as f16 (default true, as ovc)")
    p.add_argument("--mean_values", help="[123.7,116.3,103.5] or data[...] per input; subtracted in the graph")
    p.add_argument("--scale_values", help="[58.4,57.1,57.4] or data[...] per input; divided in the graph")
    p.add_argument("--reverse_input_channels", action="store_true", help="flip RGB<->BGR of 3-channel inputs")
    p.add_argument("--layout", help="input layouts: NCHW or data(NCHW),x(NC)")
    p.add_argument("--opt-level", "--opt_level", dest="opt_level", type=int, default=2, choices=[0, 1, 2],
                   help="graph optimization level: 0 none, 1 basic, 2 extended (default)")
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


def run(args: argparse.Namespace) -> int:
    from ember.convert import convert_model, parse_input_arg, parse_values
    from ember.io import write_ir
    from ember.passes import OptimizationReport

    report = OptimizationReport(args.opt_level)
    model = convert_model(
        args.model,
        input=parse_input_arg(args.input) if args.input else None,
        output=[s.strip() for s in args.output.split(",")] if args.output else None,
        opt_level=args.opt_level,
        mean_values=parse_values(args.mean_values) if args.mean_values else None,
        scale_values=parse_values(args.scale_values) if args.scale_values else None,
        reverse_input_channels=args.reverse_input_channels,
        layout=_layouts(args.layout),
        report=report,
    )
    xml = Path(args.output_model) if args.output_model else Path(args.output_dir) / (Path(args.model).stem + ".xml")
    if xml.suffix != ".xml":
        raise EmberError(f"ember: --output_model must end in .xml, got '{xml}'")
    model.set_rt_info(str(Path(args.model).name), ["conversion_parameters", "input_model"])
    write_ir(model, xml, compress_to_fp16=args.compress_to_fp16)
    if args.report:
        print(report.format())
    print(f"saved {xml} and {xml.with_suffix('.bin')} ({len(model.get_ordered_ops())} nodes)")
    return 0
