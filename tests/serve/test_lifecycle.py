"""Hot reload of new versions (with the old one drained), a version that fails to load, graceful
shutdown with a request in flight, the config file, and ``ember serve`` as a process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient  # noqa: E402  (conftest skips without the extra)
from serve_helpers import Gate, save_version, scale_model, wait_until

from ember.serve import ModelConfig, Server, ServerConfig, VersionPolicy, load_config_file  # noqa: E402
from ember.serve.config import ConfigError  # noqa: E402

X = np.arange(4, dtype=np.float32).reshape(1, 4)


def infer_y(port: int, model: str, version: str = "") -> np.ndarray:
    c = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        inp = httpclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(X)
        return c.infer(model, [inp], model_version=version).as_numpy("y")
    finally:
        c.close()


def test_hot_reload_loads_new_version_and_drains_old(tmp_path):
    base = tmp_path / "m"
    save_version(base, 1, scale_model(2.0))
    cfg = ServerConfig(models=(ModelConfig("m", base, target_device="REFERENCE", nireq=1),),
                       rest_port=0, grpc_port=None, poll_wait_seconds=0.1)
    with Server(cfg) as s:
        port = s.rest_port
        np.testing.assert_array_equal(infer_y(port, "m"), X * 2)
        v1 = s.repository.get("m", 1)
        gate = Gate(v1)
        held = {}
        t = threading.Thread(target=lambda: held.setdefault("y", infer_y(port, "m", "1")))
        t.start()
        try:
            assert gate.entered.acquire(timeout=30)
            save_version(base, 2, scale_model(3.0))  # a new version appears while v1 works
            wait_until(lambda: v1.state == "UNLOADING", what="v2 loaded and v1 draining")
            np.testing.assert_array_equal(infer_y(port, "m"), X * 3)  # new requests go to v2
            c = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
            assert not c.is_model_ready("m", "1")
            c.close()
        finally:
            gate.open()
        t.join(30)
        np.testing.assert_array_equal(held["y"], X * 2)  # the request in flight finished on v1
        wait_until(lambda: [mv.version for mv in s.repository.versions("m")] == [2], what="v1 unloaded")
        with pytest.raises(Exception, match="no version 1"):
            infer_y(port, "m", "1")
        # a broken version is reported and skipped; fixing its files loads it
        (base / "3").mkdir()
        (base / "3" / "model.xml").write_text("<net>not ir")
        wait_until(lambda: any(e.get("state") == "LOADING_FAILED" for e in s.repository.index()),
                   what="failed load reported")
        np.testing.assert_array_equal(infer_y(port, "m"), X * 3)
        (base / "3" / "model.xml").unlink()
        save_version(base, 4, scale_model(5.0))
        wait_until(lambda: [mv.version for mv in s.repository.versions("m")] == [4], what="v4 loaded")
        np.testing.assert_array_equal(infer_y(port, "m"), X * 5)


def test_graceful_stop_finishes_request_in_flight(tmp_path):
    base = tmp_path / "m"
    save_version(base, 1, scale_model(2.0))
    cfg = ServerConfig(models=(ModelConfig("m", base, target_device="REFERENCE", nireq=1),),
                       rest_port=0, grpc_port=0, poll_wait_seconds=0, shutdown_grace_seconds=20)
    s = Server(cfg).start()
    gate = Gate(s.repository.get("m"))
    held = {}
    t = threading.Thread(target=lambda: held.setdefault("y", infer_y(s.rest_port, "m")))
    t.start()
    assert gate.entered.acquire(timeout=30)
    stopper = threading.Thread(target=s.stop)
    stopper.start()
    time.sleep(0.3)
    assert stopper.is_alive(), "stop() waits for the request in flight"
    gate.open()
    t.join(30)
    stopper.join(30)
    np.testing.assert_array_equal(held["y"], X * 2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.rest_port), timeout=2).close()


def test_config_file_and_policies(tmp_path):
    for v in (1, 2, 3):
        save_version(tmp_path / "scale", v, scale_model(float(v + 1)))
    doc = {"model_config_list": [
        {"config": {"name": "a", "base_path": "scale", "model_version_policy": {"specific": {"versions": [1, 3]}},
                    "target_device": "REFERENCE", "nireq": 2, "plugin_config": {"PERFORMANCE_HINT": "LATENCY"},
                    "dynamic_batching": {"max_batch_size": 8, "max_queue_delay_microseconds": 500}}},
        {"config": {"name": "b", "base_path": str(tmp_path / "scale"), "model_version_policy": {"all": {}},
                    "target_device": "REFERENCE", "plugin_config": {"NUM_STREAMS": 2}}}]}
    (tmp_path / "config.json").write_text(json.dumps(doc))
    a, b = load_config_file(tmp_path / "config.json")
    assert a.base_path == tmp_path / "scale" and a.version_policy.select([1, 2, 3]) == [1, 3]
    assert a.batching.max_batch_size == 8 and a.nireq == 2 and a.plugin_config == {"PERFORMANCE_HINT": "LATENCY"}
    assert b.version_policy.select([3, 1, 2]) == [1, 2, 3]
    with Server(ServerConfig(models=(a, b), rest_port=None, grpc_port=None, poll_wait_seconds=0)) as s:
        assert [mv.version for mv in s.repository.versions("a")] == [1, 3]
        assert [mv.version for mv in s.repository.versions("b")] == [1, 2, 3]
        va, vb = s.repository.get("a"), s.repository.get("b")
        assert (va.nireq, va.max_batch, va.buckets) == (2, 8, (1, 2, 4, 8))
        assert (vb.streams, vb.nireq, vb.max_batch) == (2, 2, 1)  # streams from plugin_config, nireq follows
        text = s.metrics.exposition()[0].decode()
        assert 'ovms_streams{name="b",version="2"} 2.0' in text
        assert 'ovms_infer_req_queue_size{name="a",version="3"} 2.0' in text
    assert VersionPolicy.from_json({"latest": {"num_versions": 2}}).select([5, 1, 9]) == [5, 9]
    bad = [({"latest": {"num_versions": 0}}, "positive"), ({"newest": {}}, "unknown version policy"),
           ({"all": {}, "latest": {}}, "exactly one")]
    for policy, words in bad:
        with pytest.raises(ConfigError, match=words):
            VersionPolicy.from_json(policy, "m")
    doc["model_config_list"][0]["config"]["shape"] = "(1,3,224,224)"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="reshaping is not supported"):
        load_config_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="appear twice"):
        ServerConfig(models=(a, a))


def test_missing_extra_gives_install_hint(monkeypatch):
    import importlib.util

    import ember.serve as serve

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "uvicorn" else real(n, *a))
    with pytest.raises(serve.MissingExtraError, match=r'pip install "ember\[serve\]"'):
        serve.require_extra()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ember_serve_command_runs_and_stops_on_sigterm(tmp_path):
    save_version(tmp_path / "m", 1, scale_model(2.0))
    rest, grpc_port = _free_port(), _free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    proc = subprocess.Popen([sys.executable, "-m", "ember", "serve", "--model_path", str(tmp_path / "m"),
                             "--model_name", "m", "--rest_port", str(rest), "--port", str(grpc_port),
                             "--target_device", "REFERENCE"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{rest}")

        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read()
            try:
                return c.is_server_ready()
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        wait_until(ready, 180, "ember serve to listen")
        np.testing.assert_array_equal(infer_y(rest, "m"), X * 2)
        c.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    access = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(a["method"] == "ModelInfer" and a["status"] == 200 and a["model"] == "m" for a in access)
    assert "stopped" in err


def test_batches_padded_to_preferred_sizes(tmp_path):
    """Odd row counts run padded to the next preferred size (plans warmed up at load) and
    every caller still gets exactly its rows."""
    from ember.serve import BatchingConfig

    save_version(tmp_path / "m", 1, scale_model(2.0))
    cfg = ServerConfig(models=(ModelConfig("m", tmp_path / "m", target_device="REFERENCE", nireq=1,
                                           batching=BatchingConfig(8, 1000)),), rest_port=None, grpc_port=None,
                       poll_wait_seconds=0)
    with Server(cfg) as s:
        mv = s.repository.get("m")
        assert mv.buckets == (1, 2, 4, 8)
        for rows in (3, 5, 7, 8, 9):
            x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
            out = mv.infer({0: x}, timeout=30)
            np.testing.assert_array_equal(out["y"], x * 2)
            np.testing.assert_allclose(out["row_sum"], x.sum(1, keepdims=True), rtol=1e-6)


def test_config_file_changes_apply_without_restart(tmp_path):
    """OVMS re-reads config.json: a model added is loaded, a changed one reloaded, a removed
    one unloaded; a config that does not parse leaves everything serving."""
    save_version(tmp_path / "two", 1, scale_model(2.0))
    save_version(tmp_path / "three", 1, scale_model(3.0))
    path = tmp_path / "config.json"

    def write(entries):
        doc = {"model_config_list": [{"config": {"name": n, "base_path": b, "target_device": "REFERENCE", **extra}}
                                     for n, b, extra in entries]}
        path.write_text(json.dumps(doc))
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))  # a new mtime even on coarse clocks

    write([("a", "two", {})])
    cfg = ServerConfig(models=tuple(load_config_file(path)), rest_port=0, grpc_port=None, poll_wait_seconds=0.1,
                       config_path=path)
    with Server(cfg) as s:
        port = s.rest_port
        np.testing.assert_array_equal(infer_y(port, "a"), X * 2)
        write([("a", "two", {}), ("b", "three", {})])
        wait_until(lambda: "b" in s.repository.names and s.repository.ready(), what="model b added")
        np.testing.assert_array_equal(infer_y(port, "b"), X * 3)
        write([("b", "two", {"nireq": 1})])  # b changes folder, a goes away
        wait_until(lambda: s.repository.names == ["b"], what="model a removed")
        wait_until(lambda: s.repository.get("b").nireq == 1, what="model b reloaded")
        np.testing.assert_array_equal(infer_y(port, "b"), X * 2)
        with pytest.raises(Exception, match="'a' is not served"):
            infer_y(port, "a")
        path.write_text("{not json")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
        time.sleep(0.5)
        np.testing.assert_array_equal(infer_y(port, "b"), X * 2)


def test_command_line_flags_parse_into_typed_config(tmp_path):
    from ember.errors import EmberError
    from ember.tools.cli import build_parser
    from ember.tools.serve_cli import server_config

    parse = build_parser().parse_args
    cfg = server_config(parse(["serve", "--model_path", str(tmp_path), "--model_name", "m", "--rest_port", "0",
                               "--port", "9100", "--max_batch_size", "8", "--max_queue_delay_us", "500",
                               "--model_version_policy", '{"all": {}}', "--plugin_config",
                               '{"PERFORMANCE_HINT": "THROUGHPUT"}', "--nireq", "3", "--host", "0.0.0.0"]))
    (m,) = cfg.models
    assert (cfg.rest_port, cfg.grpc_port, cfg.host, cfg.config_path) == (None, 9100, "0.0.0.0", None)
    assert (m.name, m.base_path, m.nireq, m.version_policy.kind) == ("m", tmp_path.resolve(), 3, "all")
    assert (m.batching.max_batch_size, m.batching.max_queue_delay_us) == (8, 500)
    assert m.plugin_config == {"PERFORMANCE_HINT": "THROUGHPUT"}
    for argv, words in ((["serve"], "either --config_path or --model_path"),
                        (["serve", "--model_path", "x"], "needs --model_name"),
                        (["serve", "--model_path", "x", "--model_name", "m", "--rest_port", "0", "--port", "0"],
                         "nothing would listen"),
                        (["serve", "--model_path", "x", "--model_name", "m", "--plugin_config", "{bad"], "not JSON"),
                        (["serve", "--model_path", str(tmp_path / "missing"), "--model_name", "m"], "is not a folder")):
        with pytest.raises(EmberError, match=words):
            server_config(parse(argv))


def test_onnx_version_folder(tmp_path):
    """A version folder may hold model.onnx instead of IR (converted when the version loads)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    (tmp_path / "m" / "1").mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m" / "1" / "model.onnx")
    cfg = ServerConfig(models=(ModelConfig("m", tmp_path / "m", target_device="REFERENCE"),), rest_port=0,
                       grpc_port=None, poll_wait_seconds=0)
    with Server(cfg) as s:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{s.rest_port}")
        assert c.get_model_metadata("m")["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        np.testing.assert_array_equal(infer_y(s.rest_port, "m"), X * 2)
        c.close()
