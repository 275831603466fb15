"""Write OpenVINO IR v11: ``.xml`` topology + ``.bin`` weights that real OpenVINO reads."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Node
from ember.graph.types import Type
from ember.io.elements import encode

IR_VERSION = "11"
_F16_MAX = 65504.0
# Inputs whose values steer computation rather than feed it: kept f32 when compressing.
_KEEP_F32_INPUTS: dict[str, tuple[int, ...]] = {
    "Interpolate": (1, 2, 3), "Range": (0, 1, 2), "Power": (1,), "FakeQuantize": (1, 2, 3, 4),
    "Clamp": (), "RandomUniform": (1, 2),
}


class _Weights:
    """The ``.bin`` being written: identical blobs are stored once (shared constants)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.seen: dict[bytes, int] = {}

    def add(self, blob: bytes) -> int:
        key = hashlib.sha256(blob).digest() + len(blob).to_bytes(8, "little")
        if key in self.seen:
            return self.seen[key]
        offset = self.size
        self.chunks.append(blob)
        self.size += len(blob)
        self.seen[key] = offset
        return offset

    def tobytes(self) -> bytes:
        return b"".join(self.chunks)


def serialize(model: Model, compress_to_fp16: bool = False) -> tuple[bytes, bytes]:
    """The ``(.xml, .bin)`` bytes of ``model``. With ``compress_to_fp16``, f32 constants are
    stored as f16 followed by a ``Convert`` marked ``decompression``, as OpenVINO does."""
    if compress_to_fp16:
        model = compress_model_to_fp16(model)
    weights = _Weights()
    net = ET.Element("net", {"name": model.friendly_name, "version": IR_VERSION})
    _write_net(net, model, weights)
    rt = ET.SubElement(net, "rt_info")
    _write_model_rt(rt, model.rt_info)
    ET.indent(net, space="\t")
    xml = b'<?xml version="1.0"?>\n' + ET.tostring(net, encoding="utf-8") + b"\n"
    return xml, weights.tobytes()


def write_ir(model: Model, xml_path: str | os.PathLike[str], bin_path: str | os.PathLike[str] | None = None,
             compress_to_fp16: bool = False) -> None:
    """Write ``model`` to ``xml_path`` and its ``.bin`` beside it (or to ``bin_path``).

    Each file is written to a new temporary file in the same folder and renamed into place,
    so a file that is already there (which a live model, in this process or another, may be
    reading) is never changed in place: readers keep the old contents, new readers get the
    new ones, and a failed write leaves the old files as they were."""
    xml_path = Path(xml_path)
    bpath = Path(bin_path) if bin_path is not None else xml_path.with_suffix(".bin")
    xml, blob = serialize(model, compress_to_fp16)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    bpath.parent.mkdir(parents=True, exist_ok=True)
    _replace_file(bpath, blob)
    _replace_file(xml_path, xml)


def _replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a fresh file beside ``path`` and rename it over ``path`` (atomic)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never reuse an existing file; mode 0o666 minus the umask, as a plain write gets.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_net(net: ET.Element, model: Model, weights: _Weights) -> dict[int, int]:
    """Write ``<layers>`` and ``<edges>`` into ``net``; returns node id -> layer id."""
    # Parameters first and Results last, each in the model's order, so that a reader that
    # orders them by layer id (OpenVINO, ember) gets the same inputs and outputs back.
    params, results = model.get_parameters(), model.get_results()
    special = {id(n) for n in params} | {id(n) for n in results}
    order = params + [n for n in model.get_ordered_ops() if id(n) not in special] + results
    ids: dict[int, int] = {id(n): i for i, n in enumerate(order)}
    layers = ET.SubElement(net, "layers")
    edges = []
    for node in order:
        lid = ids[id(node)]
        n_in = node.get_input_size()
        layer = ET.SubElement(layers, "layer", {"id": str(lid), "name": node.friendly_name,
                                                "type": node.type_name, "version": node.version})
        if isinstance(node, Result):
            names = node.output(0).names
            if names:
                layer.set("output_names", _join_names(names))
        data = _data_attrs(node, weights)
        if data:
            ET.SubElement(layer, "data", data)
        extra = getattr(node, "to_ir", None)
        if extra is not None:
            extra(layer, lambda m, tag, parent=layer: _write_body(parent, tag, m, weights))
        if node.rt_info:
            _write_attributes(ET.SubElement(layer, "rt_info"), node.rt_info)
        if n_in:
            inp = ET.SubElement(layer, "input")
            for i, src in enumerate(node.input_values()):
                _port(inp, i, src.element_type, src.partial_shape)
                edges.append((ids[id(src.node)], _out_port_id(src.node, src.index), lid, i))
        if not isinstance(node, Result) and node.get_output_size():
            out = ET.SubElement(layer, "output")
            for k, o in enumerate(node.outputs()):
                p = _port(out, n_in + k, o.element_type, o.partial_shape, o.names)
                if o.rt_info:
                    _write_attributes(ET.SubElement(p, "rt_info"), o.rt_info)
        # Body ops write their bodies after their ports, as OpenVINO does.
        post = getattr(node, "to_ir_bodies", None)
        if post is not None:
            post(layer, lambda m, tag, parent=layer: _write_body(parent, tag, m, weights))
    e = ET.SubElement(net, "edges")
    for fl, fp, tl, tp in edges:
        ET.SubElement(e, "edge", {"from-layer": str(fl), "from-port": str(fp),
                                  "to-layer": str(tl), "to-port": str(tp)})
    return ids


def _write_body(parent: ET.Element, tag: str, body: Model, weights: _Weights) -> dict[int, int]:
    elem = ET.SubElement(parent, tag)
    ids = _write_net(elem, body, weights)
    ET.SubElement(elem, "rt_info")
    return ids


def _out_port_id(node: Node, index: int) -> int:
    return node.get_input_size() + index


def _port(parent: ET.Element, pid: int, et: Type, shape: Any, names: set[str] | None = None) -> ET.Element:
    attrs = {"id": str(pid), "precision": et.precision}
    if names:
        attrs["names"] = _join_names(names)
    p = ET.SubElement(parent, "port", attrs)
    if shape.rank_is_static:
        for d in shape:
            ET.SubElement(p, "dim").text = str(d.get_length()) if d.is_static else "-1"
    return p


def _join_names(names: set[str]) -> str:
    return ",".join(n.replace(",", "\\,") for n in sorted(names))


def _data_attrs(node: Node, weights: _Weights) -> dict[str, str]:
    if isinstance(node, Parameter):
        return {"shape": node.partial_shape.ir_string(), "element_type": node.element_type.name}
    if isinstance(node, Constant):
        blob = encode(node.data, node.element_type)
        offset = weights.add(blob)
        return {"element_type": node.element_type.name, "shape": ", ".join(str(d) for d in node.data.shape),
                "offset": str(offset), "size": str(len(blob))}
    out = {}
    for a in node.attributes:
        out[a.name] = a.format(node.attrs[a.name])
    return out


def _write_attributes(rt: ET.Element, info: dict[str, Any]) -> None:
    for name, value in info.items():
        attrs = {"name": name}
        if isinstance(value, dict):
            attrs.update({k: str(v) for k, v in value.items()})
        else:
            attrs.update({"version": "0", "value": str(value)})
        attrs.setdefault("version", "0")
        ET.SubElement(rt, "attribute", attrs)


_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _write_model_rt(rt: ET.Element, info: dict[str, Any]) -> None:
    for key, value in info.items():
        if _XML_NAME.match(key) and not key.lower().startswith("xml"):
            child = ET.SubElement(rt, key)
        else:
            child = ET.SubElement(rt, "info", {"name": key})
        if isinstance(value, dict):
            _write_model_rt(child, value)
        else:
            child.set("value", _rt_value(value))


def _rt_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compress_model_to_fp16(model: Model) -> Model:
    """A copy of ``model`` whose f32 constants are stored as f16 + decompression Convert.

    A constant stays f32 when it holds one value (scales and epsilons, as OpenVINO keeps
    them); when f16 would change what it means: a finite value would overflow, or a non-zero
    value would underflow to zero; when it feeds a precision-sensitive input
    (``_KEEP_F32_INPUTS``: scales, ranges, exponents); or when its rt_info carries
    ``disable_fp16_compression``. Bodies of If/Loop/TensorIterator are compressed too. A model
    holding FakeQuantize (an INT8-quantized model) is not compressed at all, as OpenVINO does:
    its biases and dequantization scales keep their f32 precision.
    """
    m = model.clone()
    if any(n.type_name == "FakeQuantize" for n in m.get_ordered_ops()):
        return m
    _compress_in_place(m)
    return m


def _compress_in_place(m: Model) -> None:
    from ember.graph.registry import get_op

    convert_cls = get_op("Convert", "opset1")
    for node in m.get_ordered_ops():
        for body in node.bodies():
            _compress_in_place(body)
        if not isinstance(node, Constant) or node.element_type is not Type.f32:
            continue
        if "disable_fp16_compression" in node.rt_info or node.data.size <= 1:
            continue
        finite = node.data[np.isfinite(node.data)]
        if finite.size and float(np.abs(finite).max()) > _F16_MAX:
            continue
        if np.any((finite != 0) & (finite.astype(np.float16) == 0)):
            continue
        targets = node.output(0).targets
        if not targets or any(t.index in _KEEP_F32_INPUTS.get(t.node.type_name, ()) for t in targets):
            continue
        half = Constant.from_array(node.data.astype(np.float16), Type.f16, node.friendly_name + "_compressed")
        half.output(0).set_names(node.output(0).names)
        conv = convert_cls([half], {"destination_type": Type.f32}, node.friendly_name)
        conv.rt_info["decompression"] = {"version": "0"}
        for inp in targets:
            inp.replace_source_output(conv.output(0))
