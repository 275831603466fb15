"""The model cache: stored once, loaded faster, corrupt or foreign entries ignored with a log line."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from runtime_helpers import SMALL_OPS, FakeDevice, small_expected, small_model

import ember
import ember.properties as props
from ember.devices.base import register_device, unregister_device
from ember.errors import EmberError
from ember.runtime import Core

X = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
# The key hashes the model's IR, names included (like OpenVINO's): build each model once.
SMALL = small_model()
SMALL_4x3 = small_model(shape=(4, 3))


def _entries(d):
    return sorted(p for p in d.iterdir() if p.suffix == ".blob")


def test_reference_stores_then_loads(tmp_path):
    core = Core()
    core.set_property({props.cache_dir: str(tmp_path)})
    first = core.compile_model(SMALL, "REFERENCE")
    assert first.get_property(props.loaded_from_cache) is False
    assert len(_entries(tmp_path)) == 1
    second = core.compile_model(SMALL, "REFERENCE")
    assert second.get_property(props.loaded_from_cache) is True
    np.testing.assert_array_equal(second([X])["y"], small_expected(X))
    assert len(_entries(tmp_path)) == 1


def test_key_depends_on_model_device_and_relevant_config(tmp_path):
    core = Core()
    cfg = {props.cache_dir: str(tmp_path)}
    core.compile_model(SMALL, "REFERENCE", cfg)
    core.compile_model(SMALL, "REFERENCE", cfg | {props.num_streams: 2})  # streams: same artefact
    assert len(_entries(tmp_path)) == 1
    core.compile_model(SMALL, "REFERENCE", cfg | {"INFERENCE_PRECISION_HINT": "f16"})
    assert len(_entries(tmp_path)) == 2
    core.compile_model(SMALL_4x3, "REFERENCE", cfg)
    assert len(_entries(tmp_path)) == 3


@pytest.fixture
def slow_device():
    dev = FakeDevice("SLOWCOMPILE", SMALL_OPS, compile_work=60)
    register_device("SLOWCOMPILE", lambda: dev)
    yield dev
    unregister_device("SLOWCOMPILE")


def test_second_compile_is_faster(tmp_path, slow_device):
    core = Core()
    cfg = {props.cache_dir: str(tmp_path)}
    core.compile_model(SMALL, "SLOWCOMPILE", cfg)
    warm_model = core.compile_model(SMALL, "SLOWCOMPILE", cfg)
    assert warm_model.get_property(props.loaded_from_cache)
    # The speed-up is structural: the second compile generates no code (the slow part), it
    # imports the cached artefact. Timing is measured by benchmarks, not asserted here.
    assert len(slow_device.compiled) == 1 and len(slow_device.imported) == 1
    np.testing.assert_array_equal(warm_model([X])["y"], small_expected(X))


def test_onnx_path_skips_conversion_on_a_hit(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes, x = [], "x"
    rng = np.random.default_rng(0)
    inits = []
    for i in range(40):
        w = helper.make_tensor(f"w{i}", TensorProto.FLOAT, [16, 16], rng.standard_normal(256).astype(np.float32) * .1)
        inits.append(w)
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        x = f"r{i}"
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 16])], inits)
    path = tmp_path / "deep.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    core = Core()
    cfg = {props.cache_dir: str(tmp_path / "cache")}
    cold = core.compile_model(path, "REFERENCE", cfg)

    def no_conversion(*a, **k):
        raise AssertionError("a cache hit must not convert the ONNX model again")
    import ember.frontends.onnx as onnx_frontend
    monkeypatch.setattr(onnx_frontend, "convert", no_conversion)
    warm = core.compile_model(path, "REFERENCE", cfg)
    assert warm.get_property(props.loaded_from_cache) and not cold.get_property(props.loaded_from_cache)
    feed = rng.standard_normal((1, 16)).astype(np.float32)
    np.testing.assert_array_equal(cold([feed])[0], warm([feed])[0])


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def _garbage(path):
    path.write_bytes(b"\x00garbage" * 50)


class _Trap:
    def __reduce__(self):
        return (open, ("/tmp/ember_cache_trap_was_unpickled", "w"))


def _pickle(path):
    path.write_bytes(pickle.dumps(_Trap()))


def _foreign_key(path):
    # a valid entry of another model, stored under this key's name
    other = Core().compile_model(small_model(shape=(5, 3)), "REFERENCE").export_model()
    path.write_bytes(other)


def _other_version(path):
    path.write_bytes(path.read_bytes().replace(ember.__version__.encode(), b"9.9.9", 1))


@pytest.mark.parametrize("damage", [_corrupt, _truncate, _garbage, _pickle, _foreign_key, _other_version])
def test_bad_entries_are_ignored_and_replaced(tmp_path, caplog, damage):
    import os

    trap = "/tmp/ember_cache_trap_was_unpickled"
    if os.path.exists(trap):
        os.remove(trap)
    core = Core()
    cfg = {props.cache_dir: str(tmp_path)}
    core.compile_model(SMALL, "REFERENCE", cfg)
    (entry,) = _entries(tmp_path)
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="ember"):
        cm = core.compile_model(SMALL, "REFERENCE", cfg)
    assert cm.get_property(props.loaded_from_cache) is False
    assert any("ignoring model cache entry" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(cm([X])["y"], small_expected(X))
    assert not os.path.exists(trap), "a cache entry was unpickled"
    again = core.compile_model(SMALL, "REFERENCE", cfg)  # the entry was rewritten
    assert again.get_property(props.loaded_from_cache) is True


def test_path_key_follows_file_contents(tmp_path):
    core = Core()
    ember.serialize(small_model(), tmp_path / "m.xml")
    cfg = {props.cache_dir: str(tmp_path / "c")}
    core.compile_model(tmp_path / "m.xml", "REFERENCE", cfg)
    assert core.compile_model(str(tmp_path / "m.xml"), "REFERENCE", cfg).get_property(props.loaded_from_cache)
    ember.serialize(small_model(shape=(2, 4)), tmp_path / "m.xml")
    changed = core.compile_model(tmp_path / "m.xml", "REFERENCE", cfg)
    assert not changed.get_property(props.loaded_from_cache)
    assert list(changed.input(0).shape) == [2, 4]


def test_unwritable_cache_dir_only_logs(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="ember"):
        cm = Core().compile_model(SMALL, "REFERENCE", {props.cache_dir: str(blocker / "sub")})
    np.testing.assert_array_equal(cm([X])["y"], small_expected(X))
    assert any("could not write" in r.getMessage() for r in caplog.records)


def test_export_import_roundtrip():
    core = Core()
    blob = core.compile_model(SMALL, "REFERENCE").export_model()
    cm = core.import_model(blob, "REFERENCE")
    np.testing.assert_array_equal(cm([X])["y"], small_expected(X))
    with pytest.raises(EmberError, match="cannot import"):
        core.import_model(blob[:50], "REFERENCE")
