"""IR files: a live model survives its files being rewritten or truncated, declared port
shapes are checked (real OpenVINO decides which malformed <dim>s must be refused), explicit
broadcasts must match, and hostile nesting, port ids and dims give one-line ember errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import loop_net, run_child, small_model

import ember
from ember.errors import EmberError, IRFormatError, ShapeInferenceError
from ember.io import read_ir_bytes, serialize

# -- SIGBUS: a live model's files change underneath it ------------------------------------------

_LIVE = """
import numpy as np, ember, sys
sys.path.insert(0, {tests!r})
from reliability_helpers import small_model
core = ember.Core()
ember.save_model(small_model(), "s.xml", compress_to_fp16=False)
m = core.read_model("s.xml")
x = np.ones((2, 64), np.float32)
want = ember.compile_model(m, "REFERENCE")(x)[0]
{action}
for device in ("REFERENCE", "CPU"):
    got = ember.compile_model(m, device)(x)[0]
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5), device
print("survived")
"""

_ACTIONS = {
    # ov.save_model(m, "s.xml") over the model's own files, at half the size (f16 weights)
    "save over own files": 'ember.save_model(m, "s.xml", compress_to_fp16=True)',
    "truncate bin": 'open("s.bin", "r+b").truncate(100)',
    "empty bin": 'open("s.bin", "wb").close()',
    "overwrite bin in place": 'f = open("s.bin", "r+b"); f.write(b"\\xff" * 4096); f.close()',
}


@pytest.mark.parametrize("action", list(_ACTIONS), ids=list(_ACTIONS))
def test_live_model_survives_file_changes(tmp_path: Path, action: str) -> None:
    r = run_child(_LIVE.format(tests=str(Path(__file__).parent), action=_ACTIONS[action]), cwd=tmp_path)
    assert r.returncode == 0, f"child died with {r.returncode}: {r.stderr[-2000:]}"
    assert "survived" in r.stdout


def test_writer_replaces_files_atomically(tmp_path: Path) -> None:
    xml = tmp_path / "m.xml"
    ember.save_model(small_model(), xml, compress_to_fp16=False)
    old_inode = (tmp_path / "m.bin").stat().st_ino
    held = open(tmp_path / "m.bin", "rb")  # a reader holding the old file keeps the old bytes
    old = held.read()
    ember.save_model(small_model(8), xml, compress_to_fp16=False)
    held.seek(0)
    assert held.read() == old
    held.close()
    assert (tmp_path / "m.bin").stat().st_ino != old_inode
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"
    assert ember.Core().read_model(xml).inputs[0].partial_shape == ember.PartialShape([2, 8])


def test_bin_that_is_a_fifo_or_device_is_refused(tmp_path: Path) -> None:
    xml, _ = serialize(small_model(4))
    (tmp_path / "m.xml").write_bytes(xml)
    (tmp_path / "m.bin").symlink_to("/dev/zero")
    with pytest.raises(IRFormatError, match="not a regular file"):
        ember.Core().read_model(tmp_path / "m.xml")
    (tmp_path / "m.bin").unlink()
    import os

    os.mkfifo(tmp_path / "m.bin")
    with pytest.raises(IRFormatError, match="not a regular file"):
        ember.Core().read_model(tmp_path / "m.xml")


# -- declared <dim>s: the oracle is real OpenVINO ------------------------------------------------

def _dim_mutants() -> list[tuple[str, str]]:
    xml, _ = serialize(small_model(4))
    text = xml.decode()
    spans = [m.span() for m in re.finditer(r"<dim>\d+</dim>", text)]
    out = []
    for i in (0, 3, len(spans) // 2, len(spans) - 1):
        a, b = spans[i]
        for v in ("abc", "-5", "", "?", "99999999999999999999", "-1", "2..4", " 4 "):
            out.append((f"dim{i}={v!r}", text[:a] + f"<dim>{v}</dim>" + text[b:]))
    return out


_MUTANTS = _dim_mutants()


@pytest.mark.parametrize("case", range(len(_MUTANTS)), ids=[n for n, _ in _MUTANTS])
def test_malformed_dims_rejected_like_openvino(case: int) -> None:
    ov = pytest.importorskip("openvino")
    name, text = _MUTANTS[case]
    _, weights = serialize(small_model(4))
    try:
        ov.Core().read_model(text, ov.Tensor(np.frombuffer(weights, np.uint8).copy()))
        ov_ok = True
    except Exception:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
        ov_ok = False
    try:
        read_ir_bytes(text, weights)
        ember_ok = True
    except IRFormatError as e:
        ember_ok = False
        assert "port" in str(e) and "layer" in str(e), str(e)
    if not ov_ok:
        assert not ember_ok, f"{name}: OpenVINO refuses this file, ember accepted it"
    elif not ember_ok:
        # ember may be stricter only where the declared shape disagrees with the inferred one
        assert "-1" not in name and "?" not in name, f"{name}: OpenVINO reads this file, ember refused it"


@pytest.mark.parametrize("value", ["5", "1", "0"])
def test_declared_shape_that_disagrees_is_an_error_naming_node_and_port(value: str) -> None:
    xml, weights = serialize(small_model(4))
    text = xml.decode()
    # the Add's output port: its second <dim> (4) becomes value
    m = re.search(r'type="Add".*?<output>\s*<port id="(\d+)"[^>]*>\s*<dim>2</dim>\s*<dim>4</dim>', text, re.S)
    assert m is not None
    start = m.end() - len("<dim>4</dim>")
    bad = text[:start] + f"<dim>{value}</dim>" + text[m.end():]
    with pytest.raises(IRFormatError, match=rf"layer '.*' \(Add\) port {m.group(1)} declares shape"):
        read_ir_bytes(bad, weights)


def test_explicit_broadcast_with_different_shapes_is_refused() -> None:
    xml, weights = serialize(small_model(4))
    text = xml.decode().replace('auto_broadcast="numpy"', 'auto_broadcast="explicit"')
    with pytest.raises(ShapeInferenceError, match="equal shapes|incompatible"):
        read_ir_bytes(text, weights)


# -- nesting, port ids, huge dims ---------------------------------------------------------------

def test_nested_loop_bodies() -> None:
    xml, w = loop_net(3)
    m = read_ir_bytes(xml, w)
    out = ember.compile_model(m, "REFERENCE")([np.ones(2, np.float32), np.full(2, 2, np.float32)])
    assert out[1].shape == (2,)
    for depth in (70, 600):
        xml, w = loop_net(depth)
        with pytest.raises(IRFormatError, match="nests more than 64"):
            read_ir_bytes(xml, w)


def test_deep_rt_info() -> None:
    xml, w = serialize(small_model(4))
    deep = "<a>" * 5000 + "</a>" * 5000
    text = xml.decode().replace("<rt_info />", f"<rt_info>{deep}</rt_info>", 1)
    if text == xml.decode():
        text = xml.decode().replace("</net>", f"<rt_info>{deep}</rt_info></net>")
    with pytest.raises(IRFormatError, match="rt_info nests"):
        read_ir_bytes(text, w)


_BAD_PORTS = ['id="abc"', 'id="-1"', 'id=""', 'id="99999999999999999999999"', 'id="1e3"']


@pytest.mark.parametrize("bad", _BAD_PORTS)
def test_bad_port_ids(bad: str) -> None:
    xml, w = serialize(small_model(4))
    text = xml.decode().replace('<port id="0" precision="FP32" names="x">', f'<port {bad} precision="FP32">', 1)
    with pytest.raises(IRFormatError, match="bad id"):
        read_ir_bytes(text, w)


@pytest.mark.parametrize("shape", ["99999999999999999999", "4294967296, 4294967296", "-3", "1e9"])
def test_huge_or_bad_const_dims(shape: str) -> None:
    xml, w = serialize(small_model(4))
    text = re.sub(r'(type="Const".*?shape=")[^"]*(")', rf"\g<1>{shape}\g<2>", xml.decode(), count=1, flags=re.S)
    with pytest.raises(EmberError) as info:
        read_ir_bytes(text, w)
    assert "\n" not in str(info.value)


_OTHER_MUTANTS = [
    ("output precision 'numpy'", 'precision="FP32" names="x"', 'precision="numpy" names="x"'),
    ("output precision ''", 'precision="FP32" names="x"', 'precision="" names="x"'),
    ("output precision 'BIN'", 'precision="FP32" names="x"', 'precision="BIN" names="x"'),
    ("output precision 'UNSPECIFIED'", 'precision="FP32" names="x"', 'precision="UNSPECIFIED" names="x"'),
    ("Parameter opset99", 'type="Parameter" version="opset1"', 'type="Parameter" version="opset99"'),
    ("Parameter opset17", 'type="Parameter" version="opset1"', 'type="Parameter" version="opset17"'),
    ("Parameter 'none'", 'type="Parameter" version="opset1"', 'type="Parameter" version="none"'),
    ("Const opset0", 'type="Const" version="opset1"', 'type="Const" version="opset0"'),
    ("Result 'Result'", 'type="Result" version="opset1"', 'type="Result" version="Result"'),
]


@pytest.mark.parametrize("case", range(len(_OTHER_MUTANTS)), ids=[m[0] for m in _OTHER_MUTANTS])
def test_precisions_and_core_op_versions_like_openvino(case: int) -> None:
    ov = pytest.importorskip("openvino")
    _, old, new = _OTHER_MUTANTS[case]
    xml, weights = serialize(small_model(4))
    text = xml.decode()
    assert old in text
    text = text.replace(old, new, 1)
    try:
        ov.Core().read_model(text, ov.Tensor(np.frombuffer(weights, np.uint8).copy()))
        ov_ok = True
    except Exception:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
        ov_ok = False
    try:
        read_ir_bytes(text, weights)
        ember_ok = True
    except IRFormatError:
        ember_ok = False
    assert ember_ok == ov_ok
