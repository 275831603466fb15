"""Read OpenVINO IR (v10 and v11): ``.xml`` topology + headerless ``.bin`` weights.

The reader is hardened: DOCTYPE and entity declarations are refused before the XML is
parsed, every Const's offset and size are checked against the weights, edges must join
existing ports, cycles are reported, unknown op or element types are named, every port's
declared ``<dim>`` must parse (as OpenVINO requires) and agree with the shape ember infers,
and nesting (bodies, rt_info) is bounded. Any failure is an ``EmberError`` naming the layer.

Weights are read into private memory, not memory-mapped: a mapped ``.bin`` that is
truncated or rewritten while a model uses it kills the process with SIGBUS (Python cannot
recover from that), and a model must not die because its file changed. Reading costs one
pass over the file; constants are read-only views of that one buffer (no second copy).
"""

from __future__ import annotations

import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.parsers import expat

from ember.errors import EmberError, GraphError, IRFormatError, UnsupportedOpError
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.graph.registry import get_op
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type
from ember.io.elements import byte_size, decode
from ember.io.files import read_regular

log = logging.getLogger("ember.io")

SUPPORTED_VERSIONS = (10, 11)
#: the newest opset OpenVINO 2026.4 knows (Parameter, Const and Result must name one of 1..this)
MAX_OPSET = 17
#: how deeply If/Loop/TensorIterator bodies may nest, and rt_info elements
MAX_BODY_DEPTH = 64
MAX_RT_INFO_DEPTH = 64
_INT64_MAX = (1 << 63) - 1
# OpenVINO reads a <dim> as a leading integer (an interval "a..b" is kept as one here).
_DIM = re.compile(r"\s*([+-]?\d+)")
_INTERVAL = re.compile(r"\s*(-?\d*)\.\.(-?\d*)\s*$")


def _refuse_declarations(xml: bytes) -> None:
    """Parse once with expat, refusing any DOCTYPE or entity declaration (billion laughs,
    external entities) before ElementTree sees the document."""

    def refuse(*_: Any) -> None:
        raise IRFormatError("ember: the IR .xml declares a DOCTYPE or entities; refused "
                            "(OpenVINO IR never needs them)")

    p = expat.ParserCreate()
    p.StartDoctypeDeclHandler = refuse
    p.EntityDeclHandler = refuse
    p.UnparsedEntityDeclHandler = refuse
    p.ExternalEntityRefHandler = lambda *a: refuse()
    try:
        p.Parse(xml, True)
    except expat.ExpatError as e:
        raise IRFormatError(f"ember: the IR .xml is not well-formed XML: {e}") from None


def read_ir(xml_path: str | os.PathLike[str], bin_path: str | os.PathLike[str] | None = None) -> Model:
    """Read an IR pair. ``bin_path`` defaults to the ``.xml`` path with a ``.bin`` suffix;
    a model without constants needs no ``.bin``. Both files must be regular files (not a
    FIFO or device); the weights are read into memory (see the module docstring), so later
    changes to the files do not affect the returned model."""
    xml_path = Path(xml_path)
    xml = bytes(read_regular(xml_path, "IR file", IRFormatError))
    bpath = Path(bin_path) if bin_path is not None else xml_path.with_suffix(".bin")
    weights: Any = b""
    if bin_path is not None or os.path.lexists(bpath):
        weights = read_regular(bpath, "weights file", IRFormatError)
        return read_ir_bytes(xml, weights, source=str(xml_path))
    try:
        return read_ir_bytes(xml, weights, source=str(xml_path))
    except IRFormatError as e:
        if " reads bytes " in str(e):  # a constant needs the weights file that is not there
            raise IRFormatError(f"ember: the weights file '{bpath}' of '{xml_path}' was not found "
                                f"(the IR's constants are stored there)") from None
        raise


def read_ir_bytes(xml: bytes | str, weights: bytes | memoryview | Any = b"", source: str = "<memory>") -> Model:
    """Read an IR from memory (``xml`` text and ``weights`` bytes)."""
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    _refuse_declarations(xml)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise IRFormatError(f"ember: cannot parse IR xml '{source}': {e}") from None
    if root.tag != "net":
        raise IRFormatError(f"ember: '{source}' is not an OpenVINO IR (root element <{root.tag}>, expected <net>)")
    version = root.get("version")
    if version is None or not version.isdigit() or int(version) not in SUPPORTED_VERSIONS:
        raise IRFormatError(f"ember: IR version {version!r} in '{source}' is not supported; ember reads "
                            f"IR versions {', '.join(map(str, SUPPORTED_VERSIONS))}")
    buf = memoryview(weights) if not isinstance(weights, memoryview) else weights
    reader = _NetReader(buf, source)
    try:
        model, _ = reader.read(root, root.get("name", "model"))
        model.rt_info = _read_model_rt_info(root.find("rt_info"), source)
    except RecursionError:
        raise IRFormatError(f"ember: '{source}' nests too deeply to read (Python's recursion limit)") from None
    except MemoryError:
        raise IRFormatError(f"ember: '{source}' needs more memory than is available to read") from None
    return model


class _Layer:
    __slots__ = ("id", "elem", "type", "version", "name", "in_ports", "out_ports")

    def __init__(self, elem: ET.Element, where: str) -> None:
        self.elem = elem
        try:
            self.id = int(elem.get("id", ""))
        except ValueError:
            raise IRFormatError(f"ember: {where}: a layer has a bad id {elem.get('id')!r}") from None
        self.type = elem.get("type") or ""
        self.version = elem.get("version") or ""
        self.name = elem.get("name") or ""
        for key in ("name", "type", "version"):  # mandatory in OpenVINO's reader too
            if not elem.get(key):
                raise IRFormatError(f"ember: {where}: layer {self.id} ({self.type or '?'}) lacks its '{key}' attribute")
        self.in_ports = [self._port_id(p, where) for p in elem.findall("input/port")]
        self.out_ports = [self._port_id(p, where) for p in elem.findall("output/port")]
        if len(set(self.in_ports + self.out_ports)) != len(self.in_ports) + len(self.out_ports):
            raise IRFormatError(f"ember: {where}: layer '{self.name}' ({self.type}) has two ports with one id")

    def _port_id(self, port: ET.Element, where: str) -> int:
        text = port.get("id", "")
        if not text.strip().isdigit() or int(text) > _INT64_MAX:
            raise IRFormatError(f"ember: {where}: layer '{self.name}' ({self.type}) has a port with a bad "
                                f"id {text!r} (expected an integer >= 0)")
        return int(text)


class _NetReader:
    def __init__(self, weights: memoryview, source: str) -> None:
        self.weights = weights
        self.source = source
        self.depth = 0

    def read(self, net: ET.Element, name: str) -> tuple[Model, dict[int, Node]]:
        layers: dict[int, _Layer] = {}
        for elem in net.findall("layers/layer"):
            layer = _Layer(elem, self.source)
            if layer.id in layers:
                raise IRFormatError(f"ember: '{self.source}': two layers have id {layer.id}")
            layers[layer.id] = layer
        sources: dict[tuple[int, int], tuple[int, int]] = {}
        for e in net.findall("edges/edge"):
            try:
                fl, fp = int(e.get("from-layer", "")), int(e.get("from-port", ""))
                tl, tp = int(e.get("to-layer", "")), int(e.get("to-port", ""))
            except ValueError:
                raise IRFormatError(f"ember: '{self.source}': an edge has a non-integer attribute") from None
            if fl not in layers or tl not in layers:
                missing = fl if fl not in layers else tl
                raise GraphError(f"ember: '{self.source}': an edge refers to a missing layer {missing}")
            if fp not in layers[fl].out_ports:
                raise GraphError(f"ember: '{self.source}': edge from layer '{layers[fl].name}' ({fl}) port {fp}: "
                                 "no such output port")
            if tp not in layers[tl].in_ports:
                raise GraphError(f"ember: '{self.source}': edge to layer '{layers[tl].name}' ({tl}) port {tp}: "
                                 "no such input port")
            if (tl, tp) in sources:
                raise GraphError(f"ember: '{self.source}': input port {tp} of layer '{layers[tl].name}' has two edges")
            sources[(tl, tp)] = (fl, fp)
        order = self._topological(layers, sources)
        nodes: dict[int, Node] = {}
        params: list[tuple[int, Parameter]] = []
        results: list[tuple[int, Result]] = []
        for lid in order:
            layer = layers[lid]
            inputs = []
            for p in layer.in_ports:
                if (lid, p) not in sources:
                    raise GraphError(f"ember: '{self.source}': input port {p} of layer '{layer.name}' "
                                     f"({layer.type}) is not connected")
                fl, fp = sources[(lid, p)]
                inputs.append(Output(nodes[fl], layers[fl].out_ports.index(fp)))
            node = self._make_node(layer, inputs)
            nodes[lid] = node
            self._read_ports(layer, node)
            if isinstance(node, Parameter):
                params.append((lid, node))
            elif isinstance(node, Result):
                results.append((lid, node))
        # Inputs and outputs in layer-id order, as OpenVINO reads them (not in visiting order).
        params.sort(key=lambda t: t[0])
        results.sort(key=lambda t: t[0])
        model = Model([r for _, r in results], [p for _, p in params], name, validate=False)
        return model, nodes

    def _topological(self, layers: dict[int, _Layer], sources: dict[tuple[int, int], tuple[int, int]]) -> list[int]:
        indeg = {lid: 0 for lid in layers}
        users: dict[int, list[int]] = {lid: [] for lid in layers}
        for (tl, _), (fl, _) in sources.items():
            indeg[tl] += 1
            users[fl].append(tl)
        ready = sorted(lid for lid, d in indeg.items() if d == 0)
        order: list[int] = []
        while ready:
            lid = ready.pop()
            order.append(lid)
            for u in users[lid]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    ready.append(u)
        if len(order) != len(layers):
            stuck = sorted(f"'{layers[lid].name}' ({lid})" for lid, d in indeg.items() if d > 0)
            raise GraphError(f"ember: '{self.source}': the edges form a cycle through layers {', '.join(stuck[:5])}")
        return order

    def _make_node(self, layer: _Layer, inputs: list[Output]) -> Node:
        where = f" in layer '{layer.name}' (id {layer.id})"
        data = layer.elem.find("data")
        attrs = dict(data.attrib) if data is not None else {}
        if layer.type in ("Parameter", "Const", "Result"):
            v = layer.version
            if not (v.startswith("opset") and v[5:].isdigit() and 1 <= int(v[5:]) <= MAX_OPSET):
                raise IRFormatError(f"ember: '{self.source}': {layer.type} layer '{layer.name}' names an unknown "
                                    f"opset {v[:40]!r} (expected opset1 to opset{MAX_OPSET})")
        if layer.type in ("Loop", "TensorIterator"):
            self._check_body_ids(layer)
            self._check_port_map(layer)
        try:
            if layer.type == "Parameter":
                et = Type.from_name(_req(attrs, "element_type", layer))
                if any(not d.strip() for d in attrs.get("shape", "").split(",")) and attrs.get("shape", "").strip():
                    raise IRFormatError(f"ember: Parameter '{layer.name}' has an empty dimension in its shape "
                                        f"{attrs['shape'][:60]!r}")
                node: Node = Parameter(et, PartialShape(_req(attrs, "shape", layer)), layer.name)
            elif layer.type == "Const":
                node = self._constant(layer, attrs)
            elif layer.type == "Result":
                node = Result(inputs, None, layer.name)
            else:
                cls = get_op(layer.type, layer.version, where=where)
                parsed: dict[str, Any] = {}
                known = {a.name: a for a in cls.attributes}
                for key, text in attrs.items():
                    a = known.get(key)
                    if a is None:
                        log.debug("ember: ignoring attribute %s of %s%s", key, layer.type, where)
                        continue
                    try:
                        parsed[key] = a.parse(text)
                    except (ValueError, KeyError) as e:
                        why = f": {e}" if isinstance(e, ValueError) and "allowed" in str(e) else ""
                        raise IRFormatError(f"ember: bad value {text!r} for attribute '{key}'{where}{why}") from None
                from_ir: Callable[..., Node] | None = getattr(cls, "from_ir", None)
                if from_ir is not None:
                    node = from_ir(layer.elem, inputs, parsed, layer.name, self.read_body)
                else:
                    node = cls(inputs, parsed, layer.name)
        except UnsupportedOpError as e:
            msg = str(e)
            raise UnsupportedOpError(msg if where in msg else f"{msg}{where}") from None
        except EmberError:
            raise
        except RecursionError:
            raise
        except Exception as e:  # noqa: BLE001 - any other failure is a bad layer, never a raw exception
            raise IRFormatError(f"ember: '{self.source}': cannot read layer '{layer.name}' ({layer.type}): "
                                f"{type(e).__name__}: {e}") from None
        rt = _read_attributes(layer.elem.find("rt_info"))
        if rt:
            node.rt_info.update(rt)
        return node

    def _check_body_ids(self, layer: _Layer) -> None:
        """Ids in back_edges and port_map are integers (layer/port ids fit in 64 bits)."""
        for tag, keys in (("back_edges/edge", ("from-layer", "to-layer", "from-port", "to-port")),
                          ("port_map/input", ("external_port_id", "internal_layer_id")),
                          ("port_map/output", ("external_port_id", "internal_layer_id"))):
            for e in layer.elem.findall(tag):
                for key in keys:
                    text = e.get(key)
                    if text is None:
                        continue
                    t = text.strip()
                    if not (t.lstrip("-").isdigit() and -1 <= int(t) <= _INT64_MAX):
                        raise IRFormatError(f"ember: '{self.source}': {layer.type} layer '{layer.name}': {tag} has a "
                                            f"bad {key} {text[:40]!r}")

    def _check_port_map(self, layer: _Layer) -> None:
        """Each data input of a Loop/TensorIterator is described by a port_map entry, as
        OpenVINO requires (a Loop's trip count and condition, ports 0 and 1, need none)."""
        if layer.elem.find("port_map") is None:
            return  # the op itself reports a missing port map
        described = {m.get("external_port_id") for m in layer.elem.findall("port_map/input")}
        data = layer.in_ports[2:] if layer.type == "Loop" else layer.in_ports
        missing = [p for p in data if str(p) not in described]
        if missing:
            raise IRFormatError(f"ember: '{self.source}': {layer.type} layer '{layer.name}' input port {missing[0]} "
                                "has no port_map entry")

    def read_body(self, elem: ET.Element, name: str) -> tuple[Model, dict[int, Node]]:
        """Read a nested body network (If/Loop/TensorIterator) sharing this file's weights."""
        if self.depth >= MAX_BODY_DEPTH:
            raise IRFormatError(f"ember: '{self.source}': body '{name}' nests more than {MAX_BODY_DEPTH} "
                                "If/Loop/TensorIterator bodies deep; refused")
        self.depth += 1
        try:
            return self.read(elem, name)
        finally:
            self.depth -= 1

    def _constant(self, layer: _Layer, attrs: dict[str, str]) -> Constant:
        et = Type.from_name(_req(attrs, "element_type", layer))
        shape = PartialShape(attrs.get("shape", ""))
        if not shape.is_static:
            raise IRFormatError(f"ember: Const '{layer.name}' has a non-static shape {shape}")
        dims = tuple(int(d) for d in shape.to_shape())
        try:
            offset, size = int(_req(attrs, "offset", layer)), int(_req(attrs, "size", layer))
        except ValueError:
            raise IRFormatError(f"ember: Const '{layer.name}' has a non-integer offset or size") from None
        total = len(self.weights)
        if offset < 0 or size < 0 or offset + size > total:
            raise IRFormatError(f"ember: Const '{layer.name}' reads bytes {offset}..{offset + size} but the "
                                f".bin has {total} bytes (truncated or wrong offsets)")
        count = math.prod(dims)  # Python ints: a huge shape cannot wrap around
        if et is Type.string and count > size:
            raise IRFormatError(f"ember: Const '{layer.name}' of shape {list(dims)} holds more strings than "
                                f"its {size} bytes can")
        if et is not Type.string:
            need = byte_size(et, count)
            if size != need:
                raise IRFormatError(f"ember: Const '{layer.name}' of {et} shape {list(dims)} needs {need} bytes, "
                                    f"the IR says size={size}")
        arr = decode(self.weights[offset: offset + size], et, dims)
        return Constant.from_array(arr, et, layer.name)

    def _read_ports(self, layer: _Layer, node: Node) -> None:
        for k, port in enumerate(layer.elem.findall("input/port")):
            self._check_dims(layer, port, node.input_shape(k))
        for k, port in enumerate(layer.elem.findall("output/port")):
            if k >= node.get_output_size():
                raise IRFormatError(f"ember: layer '{layer.name}' ({layer.type}) declares more outputs "
                                    f"than the op has ({node.get_output_size()})")
            names = port.get("names")
            out = node.output(k)
            self._check_dims(layer, port, out.partial_shape, output=True)
            if names and not isinstance(node, Result):
                out.set_names(_split_names(names))
            rt = _read_attributes(port.find("rt_info"))
            if rt:
                out.rt_info.update(rt)


    def _check_dims(self, layer: _Layer, port: ET.Element, inferred: PartialShape, output: bool = False) -> None:
        """Each ``<dim>`` must be an integer >= -1 (or an interval), as OpenVINO requires,
        and the declared shape must be compatible with the inferred one."""
        precision = port.get("precision") if output else None  # OpenVINO reads it on outputs only
        if precision is not None and precision != "BIN":  # BIN: OpenVINO's old name of u1
            try:
                Type.from_name(precision)
            except EmberError:
                raise IRFormatError(f"ember: '{self.source}': layer '{layer.name}' ({layer.type}) port "
                                    f"{port.get('id')} has an unknown precision {precision[:40]!r}") from None
        dims = port.findall("dim")
        declared = []
        for d in dims:
            declared.append(_parse_dim(d.text or "", layer, port.get("id", "?"), self.source))
        if not dims or not inferred.rank_is_static:
            # OpenVINO writes no <dim> for a dynamic rank (and for a scalar): nothing to compare.
            return
        decl = PartialShape(declared)
        if not decl.compatible(inferred):
            raise IRFormatError(f"ember: '{self.source}': layer '{layer.name}' ({layer.type}) port "
                                f"{port.get('id')} declares shape {decl}, but its inputs give {inferred}")


def _parse_dim(text: str, layer: _Layer, port: str, source: str) -> Dimension:
    def bad(why: str) -> IRFormatError:
        return IRFormatError(f"ember: '{source}': layer '{layer.name}' ({layer.type}) port {port} has a bad "
                             f"<dim> {text[:40]!r}: {why}")

    m = _INTERVAL.match(text)
    if m:
        lo, hi = (int(g) if g else None for g in m.groups())
        lo = 0 if lo is None or lo == -1 else lo
        hi = -1 if hi is None else hi
        if lo < 0 or hi < -1 or max(lo, hi) > _INT64_MAX or (hi != -1 and hi < lo):
            raise bad("not a valid interval")
        return Dimension(lo, hi)
    m = _DIM.match(text)
    if not m:
        raise bad("expected an integer >= -1")
    v = int(m.group(1))
    if v < -1 or v > _INT64_MAX:
        raise bad(f"expected an integer from -1 to {_INT64_MAX}")
    return Dimension(v)


def _req(attrs: dict[str, str], key: str, layer: _Layer) -> str:
    if key not in attrs:
        raise IRFormatError(f"ember: layer '{layer.name}' ({layer.type}) lacks the '{key}' attribute")
    return attrs[key]


def _split_names(text: str) -> set[str]:
    """Tensor names are comma-separated; a comma inside a name is written ``\\,``."""
    names, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] == ",":
            cur.append(",")
            i += 2
            continue
        if ch == ",":
            names.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    names.append("".join(cur).strip())
    return {n for n in names if n}


def _read_attributes(rt: ET.Element | None) -> dict[str, Any]:
    """``<rt_info><attribute name="x" version="0" .../></rt_info>`` as {name: {attrs}}."""
    if rt is None:
        return {}
    out: dict[str, Any] = {}
    for a in rt.findall("attribute"):
        attrs = dict(a.attrib)
        name = attrs.pop("name", None)
        if name:
            out[name] = attrs
    return out


def _read_model_rt_info(rt: ET.Element | None, source: str = "<memory>") -> dict[str, Any]:
    if rt is None:
        return {}
    return _rt_children(rt, source, 0)


def _rt_children(elem: ET.Element, source: str, depth: int) -> dict[str, Any]:
    if depth >= MAX_RT_INFO_DEPTH:
        raise IRFormatError(f"ember: '{source}': the model's rt_info nests more than {MAX_RT_INFO_DEPTH} "
                            "elements deep; refused")
    out: dict[str, Any] = {}
    for child in elem:
        key = child.get("name") if child.tag == "info" else child.tag
        if key is None:
            continue
        if len(child):
            out[key] = _rt_children(child, source, depth + 1)
        else:
            out[key] = child.get("value", "")
    return out
