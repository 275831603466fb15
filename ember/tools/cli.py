"""The ``ember`` command: a thin shell over the library. Each subcommand is a small function
over library calls; argument parsing stays here."""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ember.errors import EmberError


def _load(path: str) -> Any:
    from ember.runtime import read_model

    return read_model(path)


def describe_model(model: Any) -> str:
    """A readable summary: inputs, outputs and op counts."""
    lines = [f"model: {model.friendly_name}"]
    lines.append("inputs:")
    for p in model.inputs:
        lines.append(f"  {', '.join(sorted(p.names)) or p.node.friendly_name}: {p.element_type.name}{p.partial_shape}")
    lines.append("outputs:")
    for p in model.outputs:
        lines.append(f"  {', '.join(sorted(p.names)) or p.node.friendly_name}: {p.element_type.name}{p.partial_shape}")
    counts = collections.Counter(n.type_name for n in model.get_ordered_ops())
    lines.append(f"ops: {sum(counts.values())} nodes")
    for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {t:<28}{c:>6}")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    print(describe_model(_load(args.model)))
    return 0


def load_array_file(path: Path) -> dict[str, np.ndarray]:
    """A ``.npy`` file as ``{"": array}`` or a ``.npz`` as its named arrays; pickled (object)
    arrays are refused."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        return {"": np.load(path, allow_pickle=False)}
    except (ValueError, OSError, EOFError) as e:
        raise EmberError(f"ember: cannot read '{path}' as a .npy/.npz array (object arrays are refused): "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def parse_input_specs(specs: Sequence[str]) -> dict[str, np.ndarray]:
    """``NAME=path.npy`` pairs (or a bare ``path.npy`` for a one-input model, keyed ``""``)."""
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, path = spec.rpartition("=")
        if not sep:
            name, path = "", spec
        p = Path(path)
        if not p.exists():
            raise EmberError(f"ember: input file '{p}' does not exist")
        arrays = load_array_file(p)
        if p.suffix == ".npz":
            feeds.update(arrays)
        else:
            feeds[name] = arrays[""]
    return feeds


def sequence_feeds(model: Any, feeds: dict[Any, Any]) -> dict[Any, Any]:
    """Sequence and optional (ONNX) inputs from an .npz: the items of a sequence input NAME are
    the arrays ``NAME/0``, ``NAME/1``... (none: an empty sequence); an optional input absent
    from the files is empty (None)."""
    from ember.ops.sequence import boundary_kind

    out = dict(feeds)
    for p in model.get_parameters():
        kind = boundary_kind(p)
        if kind is None:
            continue
        name = p.output(0).get_any_name() if p.output(0).names else p.friendly_name
        items = sorted(((int(k.rsplit("/", 1)[1]), out.pop(k)) for k in list(out)
                        if isinstance(k, str) and k.startswith(name + "/") and k.rsplit("/", 1)[1].isdigit()),
                       key=lambda kv: kv[0])
        if kind in ("sequence", "optional.sequence") and (items or kind == "sequence"):
            out[name] = [a for _, a in items]
        elif kind == "optional" and name not in out:
            out[name] = None
    return out


def _show_value(name: str, value: Any, out_dir: Path | None) -> None:
    """Print (or save) one output: a tensor, a sequence of tensors (a list) or an empty optional."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if value is None:
        print(f"{name}: empty optional")
        return
    if isinstance(value, list):
        print(f"{name}: sequence of {len(value)}")
        for k, item in enumerate(value):
            _show_value(f"{name}/{k}", item, out_dir)
        return
    print(f"{name}: {value.dtype}{list(value.shape)}")
    if out_dir:
        np.save(out_dir / f"{safe}.npy", value, allow_pickle=False)
    else:
        print(value)


def random_inputs(model: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every model input; the inputs' shapes must be static (reshape first)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    seqs = [p.get_any_name() if p.names else p.node.friendly_name for p in model.inputs
            if p.element_type.name == "sequence"]
    if seqs:
        raise EmberError(f"ember: input '{seqs[0]}' is a sequence (or optional); random values need item shapes: "
                         f"give it with -i file.npz holding arrays '{seqs[0]}/0', '{seqs[0]}/1', ...")
    dynamic = [f"{p.get_any_name() if p.names else p.node.friendly_name}{p.partial_shape}"
               for p in model.inputs if not p.partial_shape.rank_is_static
               or any(d.is_dynamic and d.max_length == -1 for d in p.partial_shape)]
    if dynamic:
        raise EmberError(f"ember: the model has dynamic dimensions ({', '.join(dynamic)}); give static shapes "
                         f"for random inputs with --shape (e.g. --shape \"{dynamic[0].split('[')[0]}[1,...]\") "
                         f"or real inputs with -i NAME=path.npy")
    for p in model.inputs:  # bounded intervals (2..5) take their lower bound
        dims = [d.get_length() if d.is_static else max(1, d.min_length) for d in p.partial_shape]
        et = p.element_type
        if et.is_real:
            arr = rng.standard_normal(dims).astype(et.dtype)
        elif et.name == "boolean":
            arr = rng.integers(0, 2, dims).astype(bool)
        else:
            arr = rng.integers(0, 10, dims).astype(et.dtype)
        feeds[sorted(p.names)[0] if p.names else p.node.friendly_name] = arr
    return feeds


def cmd_run(args: argparse.Namespace) -> int:
    from ember.runtime import Core

    core = Core()
    model = _load(args.model)
    if args.shape:
        from ember.tools.benchmark import parse_shapes

        model.reshape(parse_shapes(args.shape))
    feeds = parse_input_specs(args.input or [])
    if "" in feeds:
        if len(model.inputs) != 1:
            raise EmberError("ember: name the input (NAME=path.npy): the model has several inputs")
        feeds = {0: feeds.pop("")} | feeds  # type: ignore[dict-item]
    if not feeds and args.random:
        feeds = random_inputs(model, args.seed)  # type: ignore[assignment]
    feeds = sequence_feeds(model, feeds)
    if not feeds and model.inputs:
        names = ", ".join(p.get_any_name() if p.names else p.node.friendly_name for p in model.inputs)
        raise EmberError(f"ember: no inputs given; the model takes {names}: give them with -i NAME=path.npy "
                         f"(or a .npz), or use --random")
    compiled = core.compile_model(model, args.device)
    results = compiled(feeds)
    out_dir = Path(args.output) if args.output else None
    if out_dir:
        if out_dir.exists() and not out_dir.is_dir():
            raise EmberError(f"ember: --output '{out_dir}' is a file; give a folder for the .npy outputs")
        out_dir.mkdir(parents=True, exist_ok=True)
    np.set_printoptions(threshold=20, edgeitems=3, precision=5)
    for i, port in enumerate(compiled.outputs):
        name = sorted(port.names)[0] if port.names else f"output{i}"
        _show_value(name, results[i], out_dir)
    if out_dir:
        print(f"saved {len(compiled.outputs)} outputs to {out_dir}")
    return 0


_LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ember")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "unknown"


def _log_level_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``--log-level`` after any subcommand too (``ember convert m.onnx --log-level DEBUG``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                if not any("--log-level" in a.option_strings for a in sub._actions):
                    sub.add_argument("--log-level", default=argparse.SUPPRESS, type=str.upper, choices=_LOG_LEVELS,
                                     help="DEBUG prints each pass that fired and each kernel chosen")
                _log_level_everywhere(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ember", description="Convert, optimize and run neural networks.")
    parser.add_argument("--version", action="version", version=f"ember {_version()}")
    parser.add_argument("--log-level", default=os.environ.get("EMBER_LOG_LEVEL", "WARNING").upper(),
                        type=str.upper, choices=_LOG_LEVELS,
                        help="DEBUG prints each pass that fired and each kernel chosen (env EMBER_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="show a model's inputs, outputs and op counts")
    p.add_argument("model", help="the model: IR .xml, .onnx or .tflite")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("run", help="run a model once and print or save its outputs")
    p.add_argument("model", help="the model: IR .xml, .onnx or .tflite")
    p.add_argument("--input", "-i", action="append", metavar="NAME=path.npy",
                   help="an input array (repeat for several inputs; .npz gives several at once)")
    p.add_argument("--random", action="store_true", help="feed random inputs when none are given")
    p.add_argument("-shape", "--shape", default=None,
                   help="reshape dynamic inputs first: [1,3,224,224] or x[1,3,224,224],mask[1,16]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", "-d", default="AUTO", help="device name (default AUTO)")
    p.add_argument("--output", "-o", help="folder to save outputs as .npy (default: print them)")
    p.set_defaults(func=cmd_run)

    _add_optional(sub)
    _log_level_everywhere(parser)
    return parser


def _add_optional(sub: Any) -> None:
    """Subcommands that live in other modules register here when those modules exist."""
    import importlib

    for module in ("ember.tools.convert", "ember.tools.benchmark", "ember.tools.zoo_cli", "ember.tools.demo", "ember.tools.graph_cli",
                   "ember.tools.serve_cli", "ember.tools.quantize_cli"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.add_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except EmberError as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (``ember info m.xml | head``): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
