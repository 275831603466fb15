"""The model cache (CACHE_DIR): entries that are links to devices, FIFOs, huge or tampered
files are ignored (never read forever, never block); the key covers every file the model
reads (ONNX external data, the IR .bin)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from reliability_helpers import run_child, small_model

import ember
import ember.properties as props

X = np.ones((2, 64), np.float32)

_CHILD = """
import os, sys, glob, numpy as np, ember
import ember.properties as props
sys.path.insert(0, {tests!r})
from reliability_helpers import small_model
m = small_model()
cfg = {{props.cache_dir: "cache"}}
want = ember.Core().compile_model(m, "REFERENCE", cfg)(np.ones((2, 64), np.float32))[0]
entry, = glob.glob("cache/*.blob")
os.unlink(entry)
{plant}
c = ember.Core().compile_model(m, "REFERENCE", cfg)
assert c.get_property(props.loaded_from_cache) is False
assert np.array_equal(c(np.ones((2, 64), np.float32))[0], want)
print("ok")
"""

_PLANTS = {
    "symlink to /dev/zero": 'os.symlink("/dev/zero", entry)',
    "symlink to /dev/urandom": 'os.symlink("/dev/urandom", entry)',
    "fifo": "os.mkfifo(entry)",
    "folder": "os.mkdir(entry)",
    "symlink to a valid entry elsewhere": 'os.symlink(os.path.abspath("elsewhere.blob"), entry)',
    "garbage": 'open(entry, "wb").write(os.urandom(5000))',
}


@pytest.mark.parametrize("plant", list(_PLANTS), ids=list(_PLANTS))
def test_hostile_cache_entries_are_ignored(tmp_path: Path, plant: str) -> None:
    r = run_child(_CHILD.format(tests=str(Path(__file__).parent), plant=_PLANTS[plant]), timeout=30, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("ok")


def test_entry_size_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.runtime import cache

    core = ember.Core()
    m = small_model()
    core.compile_model(m, "REFERENCE", {props.cache_dir: str(tmp_path)})
    monkeypatch.setattr(cache, "MAX_ENTRY_BYTES", 100)
    c = ember.Core().compile_model(m, "REFERENCE", {props.cache_dir: str(tmp_path)})
    assert c.get_property(props.loaded_from_cache) is False


def _onnx_with_external(folder: Path, w: np.ndarray) -> Path:
    t = numpy_helper.from_array(w, "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])], [t])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.weights", size_threshold=0)
    return path


@pytest.mark.parametrize("device", ["REFERENCE", "CPU"])
def test_key_covers_onnx_external_data(tmp_path: Path, device: str) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    w1 = np.eye(4, dtype=np.float32)
    path = _onnx_with_external(tmp_path, w1)
    cfg = {props.cache_dir: str(tmp_path / "cache")}
    np.testing.assert_allclose(ember.Core().compile_model(path, device, cfg)(x)[0], x)
    # change only the external data file: the same .onnx bytes
    (tmp_path / "m.weights").write_bytes((2 * w1).tobytes())
    c = ember.Core().compile_model(path, device, cfg)
    assert c.get_property(props.loaded_from_cache) is False
    np.testing.assert_allclose(c(x)[0], 2 * x)


def test_key_covers_ir_bin(tmp_path: Path) -> None:
    xml = tmp_path / "m.xml"
    ember.serialize(small_model(), xml)
    cfg = {props.cache_dir: str(tmp_path / "cache")}
    first = ember.Core().compile_model(xml, "REFERENCE", cfg)(X)[0]
    data = bytearray((tmp_path / "m.bin").read_bytes())
    data[:4] = np.float32(100.0).tobytes()
    (tmp_path / "m.bin").write_bytes(bytes(data))
    c = ember.Core().compile_model(xml, "REFERENCE", cfg)
    assert c.get_property(props.loaded_from_cache) is False
    assert not np.array_equal(c(X)[0], first)


def test_model_file_that_is_a_device_is_refused(tmp_path: Path) -> None:
    ember.serialize(small_model(), tmp_path / "m.xml")
    (tmp_path / "m.bin").unlink()
    os.symlink("/dev/zero", tmp_path / "m.bin")
    r = run_child("""
        import ember
        import ember.properties as props
        from ember.errors import EmberError
        try:
            ember.Core().compile_model("m.xml", "REFERENCE", {props.cache_dir: "cache"})
        except EmberError as e:
            print("refused:", e)
        """, timeout=30, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused:" in r.stdout and "regular file" in r.stdout


def test_folder_others_may_write_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    m = small_model()
    ember.Core().compile_model(m, "REFERENCE", {props.cache_dir: str(folder)})
    entry, = folder.glob("*.blob")
    folder.chmod(0o777)  # anyone may now plant or replace entries
    with caplog.at_level("WARNING", logger="ember"):
        c = ember.Core().compile_model(m, "REFERENCE", {props.cache_dir: str(folder)})
    assert c.get_property(props.loaded_from_cache) is False
    assert "others may write" in caplog.text
    folder.chmod(0o700)
    entry.chmod(0o666)  # an entry others may write is not loaded either
    c = ember.Core().compile_model(m, "REFERENCE", {props.cache_dir: str(folder)})
    assert c.get_property(props.loaded_from_cache) is False
