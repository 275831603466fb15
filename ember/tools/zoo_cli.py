"""``ember zoo list | info NAME | fetch NAME``: the model zoo from the command line."""

from __future__ import annotations

import argparse
from typing import Any


def _cached_ir(name: str, cache: str | None) -> Any:
    from ember.zoo.prepare import model_dir

    xml = model_dir(name, cache) / f"{name}.xml"
    return xml if xml.exists() else None


def cmd_list(args: argparse.Namespace) -> int:
    from ember import zoo

    rows = [(e.name, e.task, e.source.requirement, "yes" if _cached_ir(e.name, args.cache) else "no")
            for e in zoo.entries()]
    widths = [max(len(r[i]) for r in rows + [("model", "task", "source", "cached")]) for i in range(4)]
    for row in [("model", "task", "source", "cached"), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"\ncache: {zoo.cache_dir(args.cache)}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ember import zoo

    print(zoo.get_entry(args.name).describe())
    xml = _cached_ir(args.name, args.cache)
    print(f"  cached IR:     {xml if xml else 'not yet (ember zoo fetch ' + args.name + ')'}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ember import zoo
    from ember.zoo.deploy import export

    names = [e.name for e in zoo.entries()] if args.name == "all" else [args.name]
    for name in names:
        prepared = zoo.fetch(name, args.cache, force=args.force)
        how = "converted" if prepared.converted else "already cached"
        fetched = f" (downloaded in {prepared.download_seconds:.1f} s)" if prepared.download_seconds >= 0.05 else ""
        print(f"{name}: {how} in {prepared.seconds:.1f} s{fetched} -> {prepared.xml}")
        out = args.output_dir if len(names) == 1 or args.output_dir is None else f"{args.output_dir}/{name}"
        if out is None:
            out = str(prepared.xml.parent / "openvino")
        xml = export(name, out, args.cache, compress_to_fp16=args.compress_to_fp16)
        print(f"{name}: deployable IR (static shape, preprocessing inside) -> {xml}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``ember zoo``."""
    p = subparsers.add_parser("zoo", help="list, describe and fetch pretrained models")
    p.add_argument("--cache", help="cache folder (default $EMBER_ZOO_CACHE or ~/.cache/ember/zoo)")
    sub = p.add_subparsers(dest="zoo_command", required=True)
    s = sub.add_parser("list", help="the models in the zoo")
    s.set_defaults(func=cmd_list)
    s = sub.add_parser("info", help="a model's source, licence, inputs, preprocessing and labels")
    s.add_argument("name")
    s.set_defaults(func=cmd_info)
    s = sub.add_parser("fetch", help="download (sha256-checked) and convert a model to IR")
    s.add_argument("name", help="a model name, or 'all'")
    s.add_argument("--force", action="store_true", help="convert again even when cached IR exists")
    s.add_argument("--output_dir", "--output-dir", dest="output_dir",
                   help="also write the deployable IR (model.xml/model.bin: static shape, u8 BGR input for "
                        "image models, preprocessing inside) to this folder; default: the cache's openvino/")
    s.add_argument("--compress_to_fp16", action="store_true", help="store the deployable IR's weights as f16")
    s.set_defaults(func=cmd_fetch)
