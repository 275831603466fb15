"""``ember graph MODEL -o graph.html``: draw a model so a person can see what the optimizer did.

The HTML is self-contained (one inline SVG, no scripts): ops as boxes in layers from inputs
to outputs, with output shapes on the edges, constants folded into their consumer's label,
and fused groups (``fused_group`` markers) sharing a colour. ``-o graph.svg`` uses graphviz's
``dot`` when it is installed, else writes the same SVG as the HTML holds.
"""

from __future__ import annotations

import argparse
import html
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ember.graph.core_ops import Constant
from ember.graph.model import Model

_PALETTE = ["#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d7f2ff", "#ffe5cc", "#e6f5d0"]
BOX_W, BOX_H, GAP_X, GAP_Y = 210, 54, 30, 46


def _label(node: Any) -> tuple[str, str, str]:
    consts = [s.node for s in node._inputs if isinstance(s.node, Constant)]
    extra = ", ".join(f"{c.element_type.name}{list(c.data.shape)}" for c in consts[:2])
    shapes = ", ".join(f"{t.name}{s}" for t, s in zip(node._out_types, node._out_shapes))
    return node.type_name, node.friendly_name, (f"w: {extra}  " if extra else "") + shapes


def layout_graph(model: Model) -> tuple[list[tuple[Any, int, int]], list[tuple[int, int, str]], int, int]:
    """Boxes ``(node, x, y)`` and edges ``(from box, to box, label)`` of a layered drawing."""
    nodes = [n for n in model.get_ordered_ops() if not isinstance(n, Constant)]
    index = {id(n): i for i, n in enumerate(nodes)}
    level: dict[int, int] = {}
    for n in nodes:
        ins = [level[id(s.node)] for s in n._inputs if id(s.node) in level]
        level[id(n)] = max(ins) + 1 if ins else 0
    rows: dict[int, list[Any]] = {}
    for n in nodes:
        rows.setdefault(level[id(n)], []).append(n)
    width = max(len(r) for r in rows.values()) * (BOX_W + GAP_X) + GAP_X if rows else 100
    boxes = []
    for lv, row in sorted(rows.items()):
        offset = (width - len(row) * (BOX_W + GAP_X)) // 2
        for k, n in enumerate(row):
            boxes.append((n, offset + GAP_X // 2 + k * (BOX_W + GAP_X), 20 + lv * (BOX_H + GAP_Y)))
    pos = {id(n): i for i, (n, _, _) in enumerate(boxes)}
    edges = []
    for n in nodes:
        for s in n._inputs:
            if id(s.node) in index:
                edges.append((pos[id(s.node)], pos[id(n)], str(s.partial_shape)))
    height = 40 + (max(rows) + 1 if rows else 1) * (BOX_H + GAP_Y)
    return boxes, edges, width, height


def render_svg(model: Model) -> str:
    boxes, edges, width, height = layout_graph(model)
    groups: dict[str, str] = {}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
             '<path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>']
    for a, b, label in edges:
        _, x1, y1 = boxes[a]
        _, x2, y2 = boxes[b]
        sx, sy, ex, ey = x1 + BOX_W // 2, y1 + BOX_H, x2 + BOX_W // 2, y2
        parts.append(f'<line x1="{sx}" y1="{sy}" x2="{ex}" y2="{ey}" stroke="#555" marker-end="url(#a)"/>')
        parts.append(f'<text x="{(sx + ex) // 2 + 4}" y="{(sy + ey) // 2}" fill="#777">{html.escape(label)}</text>')
    for n, x, y in boxes:
        op, name, detail = _label(n)
        group = n.rt_info.get("fused_group")
        fill = "#f4f4f4"
        if isinstance(group, dict):
            key = str(group.get("value", ""))
            fill = groups.setdefault(key, _PALETTE[len(groups) % len(_PALETTE)])
        if op in ("Parameter", "Result"):
            fill = "#cfe8cf"
        parts.append(f'<g><title>{html.escape(name)}\n{html.escape(detail)}</title>'
                     f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" stroke="#888"/>'
                     f'<text x="{x + 8}" y="{y + 16}" font-weight="bold">{html.escape(op)}</text>'
                     f'<text x="{x + 8}" y="{y + 31}">{html.escape(name[:32])}</text>'
                     f'<text x="{x + 8}" y="{y + 46}" fill="#444">{html.escape(detail[:36])}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(model: Model) -> str:
    counts: dict[str, int] = {}
    for n in model.get_ordered_ops():
        counts[n.type_name] = counts.get(n.type_name, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(model.friendly_name)}</title>"
            f"</head><body><h2>{html.escape(model.friendly_name)}</h2><p>{sum(counts.values())} nodes: "
            f"{html.escape(summary)}</p><p>Boxes of one colour form a fused group; constants are listed in "
            f"their consumer's label; hover a box for its full name.</p>{render_svg(model)}</body></html>")


def render_dot(model: Model) -> str:
    lines = ["digraph G {", "  node [shape=box, style=rounded, fontname=sans];"]
    for n in model.get_ordered_ops():
        if isinstance(n, Constant):
            continue
        op, name, detail = _label(n)
        lines.append(f'  n{id(n)} [label="{op}\\n{name}\\n{detail}"];')
        for s in n._inputs:
            if not isinstance(s.node, Constant):
                lines.append(f'  n{id(s.node)} -> n{id(n)} [label="{s.partial_shape}"];')
    lines.append("}")
    return "\n".join(lines)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("graph", help="draw a model as HTML (or SVG with graphviz)")
    p.add_argument("model", help="IR .xml or .onnx file")
    p.add_argument("-o", "--output", default="graph.html", help="graph.html or graph.svg")
    p.add_argument("--opt-level", dest="opt_level", type=int, default=None, choices=[0, 1, 2],
                   help="optimize before drawing (default: draw the model as stored)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.runtime import read_model

    model = read_model(args.model)
    if args.opt_level:
        from ember.passes import optimize

        model = optimize(model, args.opt_level)
    out = Path(args.output)
    if out.suffix == ".svg":
        dot = shutil.which("dot")
        if dot:
            svg = subprocess.run([dot, "-Tsvg"], input=render_dot(model), capture_output=True, text=True,
                                 check=True, timeout=120).stdout
        else:
            svg = render_svg(model)
        out.write_text(svg)
    else:
        out.write_text(render_html(model))
    print(f"wrote {out}")
    return 0
