"""What ``ember graph`` draws and where: constants folded into their consumers, then a layered layout.

A model stored with f16 weights or read from ONNX has hundreds of constant subgraphs (a weight
``Constant -> Convert``, a BatchNorm parameter ``Constant -> Reshape``). Drawn as nodes they
all start in the first row; here every subgraph whose value is fixed at load time is folded
into the node that consumes it and shown as one line of its label ("weights 64x3x3x3 f16").

The layout is a small Sugiyama-style one: rows by longest path from the inputs, long edges
routed through bend points (one chain per tensor, shared by its consumers), a few barycenter
sweeps to order each row, then x positions: each box lines up with its main-path neighbour
(so a backbone stays one straight column and skip connections go beside it), and each row
is spread by a weighted least-squares fit in which bend points give way to boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.graph.core_ops import Constant
from ember.graph.model import Model

#: Ops whose constant input at these ports is a learned weight (labelled "weights", not "const").
WEIGHT_PORTS = {
    "Convolution": (1,), "GroupConvolution": (1,), "ConvolutionBackpropData": (1,),
    "GroupConvolutionBackpropData": (1,), "DeformableConvolution": (2,), "MatMul": (0, 1),
    "Gather": (0,), "Embedding": (0,), "EmbeddingBagOffsetsSum": (0,), "EmbeddingBagPackedSum": (0,),
    "LSTMSequence": (4, 5, 6), "GRUSequence": (3, 4, 5), "RNNSequence": (3, 4, 5),
}
CHAR_W, LINE_H, PAD = 6.4, 14, 8
MIN_W, MAX_W = 110, 250
GAP_X, GAP_Y, BEND_W = 28, 44, 10
BEND_WEIGHT = 0.02  # how hard a long edge's bend point holds its place against a box
SIDE_WEIGHT = 0.1  # ... and a box off its neighbour's main path against one on it
MAX_CONST_LINES = 3
SWEEPS = 7  # odd: the last sweep goes down, so bends line up under their source


@dataclass(frozen=True)
class Folded:
    """A constant input folded into its consumer's label."""

    port: int
    role: str  # "weights" or "const"
    shape: str  # "64x3x3x3", "scalar"
    stored: str  # element type as stored in the file: "f16" for a compressed weight
    value: str  # the values of a tiny constant ("[1, -1]"), else ""
    chain: str  # how it is computed: "Constant f16[64,3,3,3] -> Convert f32"

    def text(self) -> str:
        if self.value:
            return f"{self.role} {self.value} {self.stored}"
        return f"{self.role} {self.shape} {self.stored}"


@dataclass(eq=False)
class Item:
    """A box (``node`` set) or an edge's bend point (``node`` None) in one row of the drawing."""

    node: Any
    level: int
    width: float
    height: float = 0.0
    lines: list[str] = field(default_factory=list)
    title: str = ""
    x: float = 0.0  # centre
    y: float = 0.0  # top of the row
    ups: list[Item] = field(default_factory=list, repr=False)  # neighbours in the row above / below
    downs: list[Item] = field(default_factory=list, repr=False)
    origin: Item | None = field(default=None, repr=False)  # a bend point's producer box
    above: int = 0  # boxes upstream of this one (for a bend point: of its producer)
    below: int = 0  # boxes downstream
    main_up: Item | None = field(default=None, repr=False)  # the neighbour this box lines up under
    main_down: Item | None = field(default=None, repr=False)  # the neighbour it lines up over

    @property
    def is_box(self) -> bool:
        return self.node is not None


@dataclass
class Edge:
    """One producer -> consumer edge: the items it passes through, from producer to consumer."""

    path: list[Item]
    label: str
    port: int = 0  # the producer's output port


@dataclass
class Layout:
    """Rows of items (boxes and bend points) with positions, the edges between boxes, the size."""

    rows: list[list[Item]]
    edges: list[Edge]
    width: float
    height: float
    row_height: list[float]

    @property
    def boxes(self) -> list[Item]:
        return [it for row in self.rows for it in row if it.is_box]

    def __repr__(self) -> str:  # the rows are linked both ways: a generated repr would never end
        return f"Layout({len(self.boxes)} boxes in {len(self.rows)} rows, {self.width:.0f}x{self.height:.0f} px)"

    def widest_row(self) -> int:
        """The largest number of boxes side by side in one row."""
        return max((sum(it.is_box for it in row) for row in self.rows), default=0)


def _is_fixed(node: Any, fixed: dict[int, bool]) -> bool:
    if isinstance(node, Constant):
        return True
    inputs = node.input_values()
    return bool(inputs) and getattr(node, "foldable", True) and all(fixed[id(s.node)] for s in inputs)


def _dims(shape: Any) -> str:
    text = str(shape).strip("[]{}").replace(" ", "")
    return "scalar" if not text else text.replace(",", "x")


def _tiny_value(data: np.ndarray) -> str:
    if data.size > 4 or data.dtype.kind not in "biuf":
        return ""
    flat = [float(v) if data.dtype.kind == "f" else int(v) for v in data.reshape(-1)]
    text = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in flat)
    return text if data.ndim == 0 else f"[{text}]"


def fold_constants(model: Model) -> tuple[list[Any], dict[int, list[Folded]]]:
    """The nodes to draw (in topological order) and, per drawn node id, its folded constant inputs.

    A node is folded when its value is fixed at load time: a ``Constant``, or a pure op
    (``foldable``) whose inputs are all fixed, such as the ``Convert`` that decompresses an
    f16 weight or a ``Reshape`` of an ONNX initializer.
    """
    ops = model.get_ordered_ops()
    fixed: dict[int, bool] = {}
    for n in ops:
        fixed[id(n)] = _is_fixed(n, fixed)
    drawn = [n for n in ops if not fixed[id(n)]]
    folded: dict[int, list[Folded]] = {}
    for n in drawn:
        entries = []
        for port, src in enumerate(n.input_values()):
            if fixed[id(src.node)]:
                entries.append(_describe(n, port, src))
        folded[id(n)] = entries
    return drawn, folded


def _describe(consumer: Any, port: int, src: Any) -> Folded:
    roots: list[Constant] = []
    chain: list[str] = []
    seen: set[int] = set()
    stack = [src.node]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, Constant):
            roots.append(n)
        else:
            chain.append(f"{n.type_name} {n.output(0).element_type.name}" if n.get_output_size() else n.type_name)
            stack.extend(s.node for s in n.input_values())
    big = max(roots, key=lambda c: np.asarray(c.data).size)
    role = "weights" if port in WEIGHT_PORTS.get(consumer.type_name, ()) else "const"
    value = ""
    if src.partial_shape.is_static and int(np.prod(src.partial_shape.to_shape(), dtype=np.int64)) <= 4:
        known = consumer.input_value(port)
        value = _tiny_value(np.asarray(known)) if known is not None else ""
    how = " -> ".join([f"Constant {big.element_type.name}{list(np.asarray(big.data).shape)}"] + chain[::-1])
    return Folded(port, role, _dims(src.partial_shape), big.element_type.name, value, how)


def _fit(text: str, width: float, keep_end: bool = False) -> str:
    room = max(int((width - 2 * PAD) / CHAR_W) - 1, 1)
    if len(text) <= room + 1:
        return text
    return "\u2026" + text[-room:] if keep_end else text[:room] + "\u2026"


def box_lines(node: Any, consts: list[Folded]) -> tuple[list[str], str]:
    """The lines drawn in a node's box (op, name, folded constants, output) and its tooltip."""
    outputs = ", ".join(f"{o.element_type.name}{o.partial_shape}" for o in node.outputs())
    lines = [node.type_name, node.friendly_name]
    texts: dict[str, int] = {}
    for c in consts:
        texts[c.text()] = texts.get(c.text(), 0) + 1
    merged = [t if k == 1 else f"{t} \u00d7{k}" for t, k in texts.items()]
    shown = merged if len(merged) <= MAX_CONST_LINES else merged[: MAX_CONST_LINES - 1]
    lines += shown
    if len(shown) < len(merged):
        lines.append(f"+{len(consts) - sum(texts[t] for t in list(texts)[:len(shown)])} more constants")
    if outputs:
        lines.append("\u2192 " + outputs)
    title = "\n".join([f"{node.type_name} {node.friendly_name}"] + [f"input {c.port}: {c.chain}" for c in consts]
                      + ([f"output: {outputs}"] if outputs else []))
    return lines, title


def layout_graph(model: Model) -> Layout:
    """Place the model's non-constant nodes in rows from inputs to outputs (see the module doc)."""
    drawn, folded = fold_constants(model)
    index = {id(n): n for n in drawn}
    level: dict[int, int] = {}
    for n in drawn:
        ups = [level[id(s.node)] for s in n.input_values() if id(s.node) in index]
        level[id(n)] = max(ups) + 1 if ups else 0
    consumers: dict[int, list[tuple[int, Any]]] = {id(n): [] for n in drawn}
    for n in drawn:
        for s in n.input_values():
            if id(s.node) in index:
                consumers[id(s.node)].append((s.index, n))
    for n in drawn:  # a source (an input) sits just above its first consumer
        if not any(id(s.node) in index for s in n.input_values()) and consumers[id(n)]:
            level[id(n)] = max(0, min(level[id(c)] for _, c in consumers[id(n)]) - 1)

    items: dict[int, Item] = {}
    rows: list[list[Item]] = [[] for _ in range(max(level.values(), default=0) + 1)]
    for n in drawn:
        lines, title = box_lines(n, folded[id(n)])
        width = min(MAX_W, max(MIN_W, max(len(t) for t in lines) * CHAR_W + 2 * PAD))
        it = Item(n, level[id(n)], width, PAD + LINE_H * len(lines), [_fit(t, width, keep_end=i == 1) for i, t in enumerate(lines)], title)
        items[id(n)] = it
        rows[it.level].append(it)

    edges: list[Edge] = []
    for n in drawn:
        by_port: dict[int, list[Any]] = {}
        for port, c in consumers[id(n)]:
            by_port.setdefault(port, []).append(c)
        for port, targets in sorted(by_port.items()):
            src = items[id(n)]
            deepest = max(level[id(c)] for c in targets)
            bends = []
            for lv in range(src.level + 1, deepest):
                bend = Item(None, lv, BEND_W, origin=src)
                rows[lv].append(bend)
                bends.append(bend)
            chain = [src] + bends
            for a, b in zip(chain, chain[1:]):
                a.downs.append(b)
                b.ups.append(a)
            out = n.output(port)
            label = f"{out.element_type.name}{out.partial_shape}"
            for c in targets:
                dst = items[id(c)]
                last = chain[dst.level - src.level - 1]
                last.downs.append(dst)
                dst.ups.append(last)
                edges.append(Edge(chain[: dst.level - src.level] + [dst], label, port))

    _mark_main_paths(drawn, items, consumers)
    _order_rows(rows)
    row_height = _place(rows)
    width = max((row[-1].x + row[-1].width / 2 for row in rows if row), default=0) + GAP_X
    height = sum(row_height) + GAP_Y
    return Layout(rows, edges, width, height, row_height)


def _mark_main_paths(drawn: list[Any], items: dict[int, Item], consumers: dict[int, list[tuple[int, Any]]]) -> None:
    """Choose, for every box, the neighbour it lines up with: above, the input with the most
    boxes upstream (the main path, not a skip connection's source); below, the consumer with
    the most boxes downstream. Chains of chosen neighbours are drawn straight."""
    bit = {id(n): 1 << k for k, n in enumerate(drawn)}
    ups: dict[int, int] = {}
    for n in drawn:
        acc = 0
        for s in n.input_values():
            if id(s.node) in ups:
                acc |= ups[id(s.node)] | bit[id(s.node)]
        ups[id(n)] = acc
        items[id(n)].above = acc.bit_count()
    downs: dict[int, int] = {}
    for n in reversed(drawn):
        acc = 0
        for _, c in consumers[id(n)]:
            acc |= downs[id(c)] | bit[id(c)]
        downs[id(n)] = acc
        items[id(n)].below = acc.bit_count()
    for it in items.values():
        if it.ups:
            it.main_up = max(it.ups, key=lambda o: o.above if o.is_box else o.origin.above)
        boxes = [o for o in it.downs if o.is_box]
        if boxes:
            it.main_down = max(boxes, key=lambda o: o.below)


def _order_rows(rows: list[list[Item]]) -> None:
    """Barycenter sweeps: order each row by the mean position of its neighbours in the row before."""
    pos: dict[int, float] = {}

    def number(row: list[Item]) -> None:
        for i, it in enumerate(row):
            pos[id(it)] = i

    for row in rows:
        number(row)
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        order = range(1, len(rows)) if down else range(len(rows) - 2, -1, -1)
        for lv in order:
            row = rows[lv]

            def key(it: Item, down: bool = down) -> float:
                near = it.ups if down else it.downs
                return sum(pos[id(o)] for o in near) / len(near) if near else pos[id(it)]

            row.sort(key=key)
            number(row)


def _spread(row: list[Item], want: list[float], weights: list[float]) -> None:
    """Put the row's centres as near ``want`` as their order and spacing allow, boxes first.

    Least squares under the spacing constraints, weighted so that bend points give way to
    boxes: shifting each centre by the room its left neighbours need turns this into an
    isotonic regression, solved exactly by pooling adjacent violators.
    """
    shift, acc = [], 0.0
    for k, it in enumerate(row):
        if k:
            prev = row[k - 1]
            acc += (prev.width + it.width) / 2 + (GAP_X if prev.is_box and it.is_box else GAP_X / 2)
        shift.append(acc)
    blocks: list[list[float]] = []  # [weight, weighted sum, count]
    for w, weight, s in zip(want, weights, shift):
        blocks.append([weight, weight * (w - s), 1])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][0] > blocks[-1][1] / blocks[-1][0]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    k = 0
    for weight, total, count in blocks:
        for _ in range(int(count)):
            row[k].x = total / weight + shift[k]
            k += 1


def _place(rows: list[list[Item]]) -> list[float]:
    for row in rows:  # start packed from the left
        x = 0.0
        for it in row:
            it.x = x + it.width / 2
            x += it.width + GAP_X
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        order = range(len(rows)) if down else range(len(rows) - 1, -1, -1)
        for lv in order:
            row = rows[lv]
            want, weights = [], []
            for it in row:
                if not it.is_box:  # a bend follows its edge, and gives way to boxes
                    near = it.ups if down else it.downs
                    want.append(sum(o.x for o in near) / len(near) if near else it.x)
                    weights.append(BEND_WEIGHT)
                    continue
                main = it.main_up if down else it.main_down
                back = None if main is None else main.main_down if down else main.main_up
                want.append(it.x if main is None else main.x)
                weights.append(1.0 if main is None or back is it else SIDE_WEIGHT)
            _spread(row, want, weights)
    lo = min((row[0].x - row[0].width / 2 for row in rows if row), default=0.0)
    for row in rows:
        for it in row:
            it.x += GAP_X - lo
    heights, y = [], GAP_Y / 2
    for row in rows:
        h = max((it.height for it in row), default=0.0)
        for it in row:
            it.y = y
            if not it.is_box:
                it.height = h
        heights.append(h + GAP_Y)
        y += h + GAP_Y
    return heights
