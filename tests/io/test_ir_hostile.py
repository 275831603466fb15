"""Malformed and hostile IR files give an ember error that names the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ember.opset as ops
from ember.errors import EmberError, GraphError, IRFormatError, UnsupportedOpError
from ember.graph import Model
from ember.io import read_ir, read_ir_bytes, serialize


def _small_model() -> Model:
    x = ops.parameter([2, 3], np.float32, name="x")
    w = ops.constant(np.arange(6, dtype=np.float32).reshape(2, 3), name="w")
    y = ops.multiply(x, w, name="mul")
    y.output(0).set_names({"y"})
    return Model([y], [x], "small")


def _xml_bin() -> tuple[str, bytes]:
    xml, blob = serialize(_small_model())
    return xml.decode(), blob


def test_valid_model_reads() -> None:
    xml, blob = _xml_bin()
    m = read_ir_bytes(xml, blob)
    assert [o.names for o in m.outputs] == [{"y"}]


def test_truncated_bin() -> None:
    xml, blob = _xml_bin()
    with pytest.raises(IRFormatError, match=r"Const 'w' reads bytes 0\.\.24 but the \.bin has 10 bytes"):
        read_ir_bytes(xml, blob[:10])


def test_offset_past_end() -> None:
    xml, blob = _xml_bin()
    with pytest.raises(IRFormatError, match="truncated or wrong offsets"):
        read_ir_bytes(xml.replace('offset="0"', 'offset="4096"'), blob)


def test_negative_offset_and_wrong_size() -> None:
    xml, blob = _xml_bin()
    with pytest.raises(IRFormatError):
        read_ir_bytes(xml.replace('offset="0"', 'offset="-8"'), blob)
    with pytest.raises(IRFormatError, match="needs 24 bytes"):
        read_ir_bytes(xml.replace('size="24"', 'size="20"'), blob)


def test_unknown_op_type_is_named() -> None:
    xml, blob = _xml_bin()
    with pytest.raises(UnsupportedOpError, match=r"unknown op type 'FancyMul' \(opset1\) in layer 'mul'"):
        read_ir_bytes(xml.replace('type="Multiply"', 'type="FancyMul"'), blob)


def test_unknown_op_version_is_named() -> None:
    xml, blob = _xml_bin()
    with pytest.raises(UnsupportedOpError, match="version"):
        read_ir_bytes(xml.replace('type="Multiply" version="opset1"', 'type="Multiply" version="extension"'), blob)


def test_unknown_element_type_is_named() -> None:
    xml, blob = _xml_bin()
    with pytest.raises(UnsupportedOpError, match="unknown element type 'f17'"):
        read_ir_bytes(xml.replace('element_type="f32" shape="2, 3"', 'element_type="f17" shape="2, 3"'), blob)


@pytest.mark.parametrize("doctype", [
    '<!DOCTYPE net [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    '<!DOCTYPE net [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE net SYSTEM "http://example.invalid/net.dtd">',
])
def test_entity_declarations_refused(doctype: str) -> None:
    xml, blob = _xml_bin()
    hostile = xml.replace('<?xml version="1.0"?>\n', '<?xml version="1.0"?>\n' + doctype + "\n")
    with pytest.raises(IRFormatError, match="DOCTYPE or entities"):
        read_ir_bytes(hostile, blob)


@pytest.mark.parametrize("version", ["7", "12", "abc", ""])
def test_wrong_ir_version(version: str) -> None:
    xml, blob = _xml_bin()
    with pytest.raises(IRFormatError, match="IR version .* is not supported"):
        read_ir_bytes(xml.replace('version="11"', f'version="{version}"', 1), blob)


def test_cycle_in_edges() -> None:
    xml, blob = _xml_bin()
    # feed the multiply's output back into its own first input instead of the parameter
    hostile = xml.replace('<edge from-layer="0" from-port="0" to-layer="2" to-port="0" />',
                          '<edge from-layer="2" from-port="2" to-layer="2" to-port="0" />')
    assert hostile != xml
    with pytest.raises(GraphError, match="cycle"):
        read_ir_bytes(hostile, blob)


def test_edge_to_missing_port() -> None:
    xml, blob = _xml_bin()
    with pytest.raises(GraphError, match="no such input port"):
        read_ir_bytes(xml.replace('to-layer="2" to-port="1"', 'to-layer="2" to-port="7"'), blob)
    with pytest.raises(GraphError, match="no such output port"):
        read_ir_bytes(xml.replace('from-layer="1" from-port="0"', 'from-layer="1" from-port="5"'), blob)
    with pytest.raises(GraphError, match="missing layer 99"):
        read_ir_bytes(xml.replace('from-layer="1" from-port="0"', 'from-layer="99" from-port="0"'), blob)


def test_unconnected_input() -> None:
    xml, blob = _xml_bin()
    with pytest.raises(GraphError, match="not connected"):
        read_ir_bytes(xml.replace('<edge from-layer="1" from-port="0" to-layer="2" to-port="1" />', ""), blob)


def test_not_xml_and_not_ir(tmp_path: Path) -> None:
    with pytest.raises(IRFormatError, match="not well-formed"):
        read_ir_bytes(b"\x00\x01garbage", b"")
    with pytest.raises(IRFormatError, match="not an OpenVINO IR"):
        read_ir_bytes(b"<html></html>", b"")
    with pytest.raises(IRFormatError, match="cannot read"):
        read_ir(tmp_path / "missing.xml")


def test_bad_attribute_value_is_named() -> None:
    x = ops.parameter([2, 3], np.float32, name="x")
    m = Model([ops.add(x, x, name="add")], [x])
    xml, blob = serialize(m)
    with pytest.raises(EmberError, match="add"):
        read_ir_bytes(xml.decode().replace('auto_broadcast="numpy"', 'auto_broadcast="sideways"'), blob)


def test_huge_shape_is_refused_without_allocating() -> None:
    xml, blob = _xml_bin()
    huge = xml.replace('shape="2, 3" offset="0" size="24"', 'shape="100000, 100000, 100000" offset="0" size="24"')
    with pytest.raises(IRFormatError, match="needs"):
        read_ir_bytes(huge, blob)
