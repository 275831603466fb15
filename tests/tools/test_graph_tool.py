"""``ember graph``: constants folded beside their consumers, bounded width, real images or clear errors."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
import ember.opset as ops
from ember.graph.core_ops import Constant
from ember.runtime import read_model
from ember.tools import graph_cli
from ember.tools.cli import main
from ember.tools.graph_layout import MAX_W, layout_graph

ONNX = Path(__file__).parent.parent / "data" / "ir_examples" / "convreluadd.onnx"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BLOCKS = 6  # residual blocks: every one adds 4 weight constants (and, in f16 IR, 4 Converts)


def _conv_net() -> ember.Model:
    """A small residual conv net: the widest real fan-out is 2 (a block's input feeds conv and skip add)."""
    rng = np.random.default_rng(0)

    def conv(x, cin: int, cout: int, name: str):
        w = ops.constant((rng.standard_normal((cout, cin, 3, 3)) / 10).astype(np.float32))
        c = ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1], name=name)
        return ops.add(c, ops.constant(rng.standard_normal((1, cout, 1, 1)).astype(np.float32)), name=name + "/bias")

    x = ops.parameter([1, 3, 16, 16], np.float32, name="image")
    h = ops.relu(conv(x, 3, 8, "stem"))
    for b in range(BLOCKS):
        y = ops.relu(conv(h, 8, 8, f"block{b}/conv0"))
        h = ops.relu(ops.add(conv(y, 8, 8, f"block{b}/conv1"), h))
    return ember.Model([ops.result(h)], [x], "resnet_toy")


@pytest.fixture(scope="module")
def f16_ir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("graph") / "net.xml"
    ember.save_model(_conv_net(), path)  # f16 weights by default: Constant f16 -> Convert f32
    return path


def _onnx_net(path: Path) -> int:
    """An ONNX file with many initializers (conv weights, BatchNorm's four, a depthwise weight that
    ember reshapes, an f16 scale cast to f32, Reshape's shape); returns the widest real fan-out,
    counted on the ONNX graph itself."""
    rng = np.random.default_rng(1)
    inits, nodes, x = [], [], "input"

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    for b in range(BLOCKS):
        p = f"b{b}"
        w = init(p + "_w", (rng.standard_normal((8, 8 if b else 3, 3, 3)) / 10).astype(np.float32))
        nodes.append(helper.make_node("Conv", [x, w, init(p + "_cb", np.zeros(8, np.float32))], [p + "_c"], pads=[1] * 4))
        bn = [init(f"{p}_{k}", v) for k, v in (("s", np.ones(8, np.float32)), ("o", np.zeros(8, np.float32)),
                                               ("m", np.zeros(8, np.float32)), ("v", np.ones(8, np.float32)))]
        nodes.append(helper.make_node("BatchNormalization", [p + "_c", *bn], [p + "_bn"]))
        dw = init(p + "_dw", (rng.standard_normal((8, 1, 3, 3)) / 10).astype(np.float32))  # a Reshape in ember
        nodes.append(helper.make_node("Conv", [p + "_bn", dw], [p + "_d"], pads=[1] * 4, group=8))
        nodes.append(helper.make_node("Cast", [init(p + "_h", np.full((1, 8, 1, 1), 0.5, np.float16))], [p + "_hc"],
                                      to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Mul", [p + "_d", p + "_hc"], [p + "_mul"]))
        nodes.append(helper.make_node("Relu", [p + "_mul"], [p + "_r"]))
        if b:
            nodes.append(helper.make_node("Add", [p + "_r", x], [p + "_out"]))
            x = p + "_out"
        else:
            x = p + "_r"
    nodes.append(helper.make_node("Reshape", [x, init("shape", np.array([1, -1], np.int64))], ["output"]))
    graph = helper.make_graph(nodes, "many_initializers",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    names = {i.name for i in inits}
    computed = {n.output[0] for n in nodes if n.op_type == "Cast"}
    uses = Counter(t for n in nodes for t in n.input if t not in names | computed)
    return max(uses.values())


def _assert_bounded(model: ember.Model, fan_out: int, convolutions: int) -> None:
    layout = layout_graph(model)
    constants = sum(isinstance(n, Constant) for n in model.get_ordered_ops())
    assert constants > 4 * BLOCKS
    assert layout.widest_row() <= 2 * fan_out, Counter(it.node.type_name for it in layout.rows[0] if it.is_box)
    assert layout.width <= 2 * fan_out * (MAX_W + 60)
    types = Counter(it.node.type_name for it in layout.boxes)
    assert "Const" not in types and "Constant" not in types and "Convert" not in types, types
    assert types["Convolution"] == convolutions


def test_f16_ir_constants_fold_into_consumers(f16_ir: Path) -> None:
    model = read_model(f16_ir)
    converts = [n for n in model.get_ordered_ops() if n.type_name == "Convert"]
    assert len(converts) >= 4 * BLOCKS, "save_model no longer compresses weights to f16: the test lost its point"
    _assert_bounded(model, fan_out=2, convolutions=2 * BLOCKS + 1)
    labels = {it.node.friendly_name: it.lines for it in layout_graph(model).boxes}
    assert "weights 8x3x3x3 f16" in labels["stem"]
    assert any(t.startswith("const 1x8x1x1 f16") for t in labels["stem/bias"])


def test_onnx_initializers_fold_into_consumers(tmp_path: Path) -> None:
    path = tmp_path / "net.onnx"
    fan_out = _onnx_net(path)
    model = read_model(path)
    _assert_bounded(model, fan_out, convolutions=BLOCKS)
    assert "GroupConvolution" in {it.node.type_name for it in layout_graph(model).boxes}
    lines = [t for it in layout_graph(model).boxes for t in it.lines]
    assert "const [1, -1] i64" in lines  # a tiny constant shows its value


@pytest.mark.parametrize("suffix", [".html", ".svg"])
def test_graph_drawing_fused_groups(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"g{suffix}"
    assert main(["graph", str(ONNX), "-o", str(out), "--opt-level", "2"]) == 0
    text = out.read_text()
    assert "<svg" in text and "Convolution" in text and "ReLU" in text
    if suffix == ".html":
        assert "fused group" in text and "nodes:" in text
        ET.fromstring(text[text.index("<svg"): text.index("</svg>") + 6])  # well-formed


def test_builtin_svg_without_graphviz(tmp_path: Path, f16_ir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph_cli.shutil, "which", lambda name: None)
    out = tmp_path / "g.svg"
    assert main(["graph", str(f16_ir), "-o", str(out)]) == 0
    root = ET.fromstring(out.read_text())
    assert root.tag.endswith("svg") and float(root.get("width")) <= 2 * (MAX_W + 60)
    assert "weights 8x8x3x3 f16" in out.read_text()


def test_png_without_graphviz_fails_in_one_line(tmp_path: Path, f16_ir: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(graph_cli.shutil, "which", lambda name: None)
    out = tmp_path / "g.png"
    assert main(["graph", str(f16_ir), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "graphviz" in err and "graph.html" in err
    assert not out.exists()


def test_unknown_suffix_is_refused(tmp_path: Path, f16_ir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(f16_ir), "-o", str(tmp_path / "g.pdf")]) == 2
    err = capsys.readouterr().err
    assert ".pdf" in err and ".html" in err and ".png" in err


def test_output_paths(tmp_path: Path, f16_ir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(f16_ir), "-o", str(tmp_path)]) == 2  # a folder is not a file name
    assert "is a folder" in capsys.readouterr().err
    nested = tmp_path / "new" / "dir" / "g.html"
    assert main(["graph", str(f16_ir), "-o", str(nested)]) == 0 and nested.read_text().startswith("<!doctype html>")


def test_dot_source(tmp_path: Path, f16_ir: Path) -> None:
    out = tmp_path / "g.dot"
    assert main(["graph", str(f16_ir), "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("digraph") and "weights 8x3x3x3 f16" in text and "Convert" not in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed (apt install graphviz)")
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_graphviz_images(tmp_path: Path, f16_ir: Path, suffix: str) -> None:
    onnx_path = tmp_path / "net.onnx"
    _onnx_net(onnx_path)
    for model in (f16_ir, onnx_path):
        out = tmp_path / f"{model.stem}{suffix}"
        assert main(["graph", str(model), "-o", str(out)]) == 0
        data = out.read_bytes()
        if suffix == ".png":
            assert data.startswith(PNG_MAGIC)
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            assert width < 3 * MAX_W * 2 and height > width  # tall and narrow: a chain, not one wide row
        else:
            root = ET.fromstring(data)
            assert root.tag.endswith("svg") and b"Convolution" in data


def _browser() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium to render the page (apt install chromium)")
def test_html_renders_in_chromium(tmp_path: Path, f16_ir: Path) -> None:
    from PIL import Image

    page, shot = tmp_path / "g.html", tmp_path / "g.png"
    assert main(["graph", str(f16_ir), "-o", str(page)]) == 0
    subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1000,1600", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    io_fill = np.all(np.abs(image - [0xCF, 0xE8, 0xCF]) <= 3, axis=-1)  # the input box's green
    assert io_fill.sum() > 500, "the drawing did not render"
    ink = np.where((image < 200).any(axis=-1).any(axis=0))[0]
    assert ink.max() < 1000 - 20  # nothing cut off on the right: the page fits a narrow window


def _edge_models() -> dict[str, ember.Model]:
    """Odd shapes of graph: a constant-only output, multi-output nodes, dynamic dimensions, an unused input."""
    x = ops.parameter([-1, 6, 4], np.float32, name="x")
    unused = ops.parameter([2], np.float32, name="unused")
    parts = ops.split(x, ops.constant(np.int64(1)), 3, name="split")
    joined = ops.concat([parts.output(2), parts.output(0), parts.output(1)], 1, name="join")
    table = ops.multiply(ops.constant(np.arange(3, dtype=np.float32)), ops.constant(np.float32(2)), name="folded")
    return {
        "multi_output": ember.Model([ops.result(joined)], [x], "multi_output"),
        "constant_output": ember.Model([ops.result(table), ops.result(x)], [x, unused], "constant_output"),
    }


@pytest.mark.parametrize("name", ["multi_output", "constant_output"])
def test_odd_graphs_draw(name: str) -> None:
    model = _edge_models()[name]
    layout = layout_graph(model)
    types = Counter(it.node.type_name for it in layout.boxes)
    assert types["Result"] == len(model.get_results()) and types["Parameter"] == len(model.get_parameters())
    assert "Multiply" not in types  # computed from constants only: folded into the Result
    for edge in layout.edges:  # every edge goes one row down per step
        assert [it.level for it in edge.path] == list(range(edge.path[0].level, edge.path[-1].level + 1))
    ET.fromstring(graph_cli.render_svg(model, layout))
    if name == "constant_output":
        results = [it for it in layout.boxes if it.node.type_name == "Result"]
        assert any("const [0, 2, 4] f32" in it.lines for it in results)


def _onnx_fan_out(path: Path) -> int:
    """The widest fan-out of a tensor computed from the graph's inputs (not from initializers alone)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    live = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    uses: Counter[str] = Counter()
    for node in graph.node:
        if any(t in live for t in node.input):
            live.update(node.output)
            uses.update(t for t in node.input if t in live)
    return max(uses.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "bert_like"])
def test_exported_networks_stay_narrow(name: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from models.torch_models import export

    path = export(name)
    fan_out = _onnx_fan_out(path)
    model = read_model(path)
    ember.save_model(model, tmp_path / "model.xml")  # and the same network as f16-compressed IR
    drawn = [Counter(), Counter()]
    for k, m in enumerate((model, read_model(tmp_path / "model.xml"))):
        layout = layout_graph(m)
        assert layout.widest_row() <= 2 * fan_out
        assert layout.width <= 2 * fan_out * (MAX_W + 60)
        drawn[k].update(it.node.type_name for it in layout.boxes)
    assert drawn[0] == drawn[1]  # the f16 weights' Converts are folded: the same boxes as the f32 model


def test_shared_long_edges_drawn_once() -> None:
    """An input used all the way down (a mask, a position table) is one line, not one line per use."""
    x = ops.parameter([1, 8], np.float32, name="x")
    mask = ops.parameter([1, 8], np.float32, name="mask")
    h = x
    for i in range(600):
        h = ops.add(h, mask) if i % 10 == 0 else ops.relu(h)
    model = ember.Model([ops.result(h)], [x, mask], "long_chain")
    layout = layout_graph(model)
    assert layout.widest_row() == 2 and layout.width <= 2 * (MAX_W + 60)
    svg = graph_cli.render_svg(model, layout)
    assert len(svg) < 1000 * len(layout.boxes)  # drawn per use, the mask's edges alone would be ~10 kB a box
