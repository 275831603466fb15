"""``ember graph MODEL -o graph.html``: draw a model so a person can see what the optimizer did.

Constant inputs (weights, their f16 -> f32 ``Convert``, reshaped ONNX initializers) are folded
into their consumer's box ("weights 64x3x3x3 f16"), so the drawing is as wide as the network's
real branching, not as wide as its number of constants. Fused groups (``fused_group`` markers)
share a colour.

Outputs, chosen by the suffix of ``-o``:

- ``.html`` (default): a self-contained page (one inline SVG, no scripts), laid out by ember.
- ``.svg``: laid out by graphviz's ``dot`` when it is installed, else by ember (same SVG as
  the HTML holds).
- ``.png``: rendered by graphviz's ``dot``; without it the command fails and says what to install.
- ``.dot`` / ``.gv``: the graphviz source, for other graphviz formats (``dot -Tpdf``).
"""

from __future__ import annotations

import argparse
import html
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ember.errors import EmberError
from ember.graph.model import Model
from ember.tools.graph_layout import LINE_H, PAD, Item, Layout, box_lines, fold_constants, layout_graph

_PALETTE = ["#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d7f2ff", "#ffe5cc", "#e6f5d0"]
_IO_FILL, _PLAIN_FILL = "#cfe8cf", "#f4f4f4"
FORMATS = {".html": "html", ".htm": "html", ".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot"}
INSTALL_GRAPHVIZ = ("install graphviz (apt install graphviz, brew install graphviz or conda install graphviz) "
                    "or write -o graph.html / graph.svg, which need nothing")
DOT_TIMEOUT = 300


class _Colours:
    """Fill colours: inputs and outputs green, one palette colour per fused group."""

    def __init__(self) -> None:
        self.groups: dict[str, str] = {}

    def fill(self, node: Any) -> str:
        if node.type_name in ("Parameter", "Result"):
            return _IO_FILL
        group = node.rt_info.get("fused_group")
        if isinstance(group, dict):
            key = str(group.get("value", ""))
            return self.groups.setdefault(key, _PALETTE[len(self.groups) % len(_PALETTE)])
        return _PLAIN_FILL


def _edge_path(edge_path: list[Item], start_x: float, end_x: float) -> str:
    """SVG path data from the producer (or from a bend point) through bend points to the consumer."""
    src, dst = edge_path[0], edge_path[-1]
    x, y = (start_x if src.is_box else src.x), src.y + src.height
    d = [f"M{x:.1f},{y:.1f}"]

    def curve(x2: float, y2: float) -> None:
        ym = (y + y2) / 2
        d.append(f"C{x:.1f},{ym:.1f} {x2:.1f},{ym:.1f} {x2:.1f},{y2:.1f}")

    for bend in edge_path[1:-1]:
        curve(bend.x, bend.y)
        x, y = bend.x, bend.y + bend.height
        d.append(f"L{x:.1f},{y:.1f}")
    curve(end_x, dst.y - 2)
    return " ".join(d)


def _ports(layout: Layout) -> tuple[dict[int, float], dict[int, float]]:
    """Where each edge leaves its producer (spread by output port) and enters its consumer
    (spread by the side it comes from), so edges into one box do not share an arrow tip."""
    start: dict[int, float] = {}
    incoming: dict[int, list[int]] = {}
    for k, e in enumerate(layout.edges):
        src = e.path[0]
        n_out = max(src.node.get_output_size(), 1)
        start[k] = src.x - src.width / 2 + src.width * (e.port + 1) / (n_out + 1)
        incoming.setdefault(id(e.path[-1]), []).append(k)
    end: dict[int, float] = {}
    for ks in incoming.values():
        ks.sort(key=lambda k: layout.edges[k].path[-2].x)
        dst = layout.edges[ks[0]].path[-1]
        for j, k in enumerate(ks):
            end[k] = dst.x - dst.width / 2 + dst.width * (j + 1) / (len(ks) + 1)
    return start, end


def render_svg(model: Model, layout: Layout | None = None) -> str:
    """The model drawn by ember's own layout as one SVG document (no scripts, no external files)."""
    layout = layout or layout_graph(model)
    colours = _Colours()
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{layout.width:.0f}" height="{layout.height:.0f}" '
             f'viewBox="0 0 {layout.width:.0f} {layout.height:.0f}" font-family="sans-serif" font-size="11">',
             '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
             '<path d="M0,0 L8,4 L0,8 z" fill="#666"/></marker></defs>',
             '<rect width="100%" height="100%" fill="white"/>']
    start, end = _ports(layout)
    drawn_bends: set[int] = set()  # a tensor's consumers share its chain of bends: draw it once
    for k in sorted(range(len(layout.edges)), key=lambda k: -len(layout.edges[k].path)):
        e = layout.edges[k]
        path = e.path
        if len(path) > 2 and id(path[-2]) in drawn_bends:
            path = path[-2:]
        drawn_bends.update(id(it) for it in path[1:-1])
        parts.append(f'<path d="{_edge_path(path, start[k], end[k])}" fill="none" stroke="#777" '
                     f'stroke-width="1.2" marker-end="url(#a)"><title>{html.escape(e.label)}</title></path>')
    for it in layout.boxes:
        left = it.x - it.width / 2
        parts.append(f'<g><title>{html.escape(it.title)}</title>'
                     f'<rect x="{left:.1f}" y="{it.y:.1f}" width="{it.width:.0f}" height="{it.height:.0f}" rx="6" '
                     f'fill="{colours.fill(it.node)}" stroke="#888"/>')
        for i, text in enumerate(it.lines):
            y = it.y + PAD / 2 + LINE_H * (i + 1) - 3
            style = ' font-weight="bold"' if i == 0 else (' fill="#555"' if i == 1 or text.startswith("\u2192") else
                                                          ' fill="#1f4e8c"')
            parts.append(f'<text x="{left + PAD:.1f}" y="{y:.1f}"{style}>{html.escape(text)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(model: Model) -> str:
    """A self-contained page: a one-line op census and the SVG drawing."""
    counts: dict[str, int] = {}
    for n in model.get_ordered_ops():
        counts[n.type_name] = counts.get(n.type_name, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    title = html.escape(model.friendly_name)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            "<style>body{font-family:sans-serif;margin:12px}p{max-width:70em;color:#333}</style>"
            f"</head><body><h2>{title}</h2><p>{sum(counts.values())} nodes: {html.escape(summary)}</p>"
            "<p>Constant inputs are folded into their consumer's box (blue lines: stored shape and type); "
            "boxes of one colour form a fused group; hover a box for its full name and how each "
            f"constant is computed.</p>{render_svg(model)}</body></html>")


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render_dot(model: Model) -> str:
    """The same folded graph as graphviz source (``dot`` lays it out)."""
    drawn, folded = fold_constants(model)
    ids = {id(n): f"n{k}" for k, n in enumerate(drawn)}
    colours = _Colours()
    lines = ["digraph G {", '  node [shape=box, style="rounded,filled", fontname="sans-serif", fontsize=10];',
             '  edge [color="#777777", arrowsize=0.6];']
    for n in drawn:
        text, _ = box_lines(n, folded[id(n)])
        label = "\\n".join(_dot_text(t) for t in text)
        lines.append(f'  {ids[id(n)]} [label="{label}", fillcolor="{colours.fill(n)}"];')
    for n in drawn:
        for s in n.input_values():
            if id(s.node) in ids:
                lines.append(f'  {ids[id(s.node)]} -> {ids[id(n)]} [tooltip="{_dot_text(str(s.partial_shape))}"];')
    lines.append("}")
    return "\n".join(lines)


def run_dot(source: str, fmt: str) -> bytes:
    """Graphviz's ``dot -T<fmt>`` on ``source``; an EmberError when dot is missing or fails."""
    dot = shutil.which("dot")
    if not dot:
        raise EmberError(f"ember graph: writing {fmt.upper()} needs graphviz's 'dot', which is not on PATH; "
                         + INSTALL_GRAPHVIZ)
    try:
        done = subprocess.run([dot, f"-T{fmt}"], input=source.encode(), capture_output=True, timeout=DOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise EmberError(f"ember graph: graphviz's dot took over {DOT_TIMEOUT} s; write -o graph.html instead") from None
    if done.returncode != 0:
        why = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[0]
        raise EmberError(f"ember graph: graphviz's dot failed ({why})")
    return done.stdout


def output_format(path: Path) -> str:
    """The format ``-o`` asks for, from its suffix; an EmberError naming the known suffixes otherwise."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise EmberError(f"ember graph: cannot write '{path.name}': unknown suffix '{path.suffix}'; "
                         f"use one of {', '.join(FORMATS)}")
    return fmt


def write_drawing(model: Model, out: Path, fmt: str) -> None:
    """Write ``model`` drawn in ``fmt`` (see the module doc) to ``out``."""
    if fmt == "html":
        out.write_text(render_html(model), encoding="utf-8")
    elif fmt == "dot":
        out.write_text(render_dot(model), encoding="utf-8")
    elif fmt == "svg":
        if shutil.which("dot"):
            out.write_bytes(run_dot(render_dot(model), "svg"))
        else:
            out.write_text(render_svg(model), encoding="utf-8")
    else:
        out.write_bytes(run_dot(render_dot(model), fmt))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("graph", help="draw a model as HTML (or SVG/PNG with graphviz)")
    p.add_argument("model", help="the model: IR .xml, .onnx or .tflite")
    p.add_argument("-o", "--output", default="graph.html",
                   help="graph.html (default, self-contained), graph.svg, graph.png (needs graphviz) or graph.dot")
    p.add_argument("--opt-level", dest="opt_level", type=int, default=None, choices=[0, 1, 2],
                   help="optimize before drawing (default: draw the model as stored)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.runtime import read_model

    out = Path(args.output)
    if out.is_dir():
        raise EmberError(f"ember graph: '{out}' is a folder; give a file name such as {out / 'graph.html'}")
    fmt = output_format(out)
    if fmt == "png" and not shutil.which("dot"):  # fail before the (slow) model read
        run_dot("", fmt)
    model = read_model(args.model)
    if args.opt_level:
        from ember.passes import optimize

        model = optimize(model, args.opt_level)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_drawing(model, out, fmt)
    print(f"wrote {out}")
    return 0
