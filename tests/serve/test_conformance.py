"""KServe v2 conformance of ``ember serve`` driven by tritonclient (HTTP JSON, HTTP binary, gRPC,
and their asyncio clients) against a server on a free loopback port: every endpoint, every
datatype, versions and policies, requested outputs, request ids. Expected values come from
numpy (the models are y = x * (version + 1), a row sum, and concat([x, x], -1))."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from serve_helpers import Gate

tritonclient = pytest.importorskip("tritonclient")
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from ember.serve.protocol import DATATYPES  # noqa: E402


@pytest.fixture(scope="session")
def http(server):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}", concurrency=8)
    yield c
    c.close()


@pytest.fixture(scope="session")
def grpc(server):
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield c
    c.close()


def sample(datatype: str, rows: int = 2, json_safe: bool = False) -> np.ndarray:
    """Values with the type's edges (min/max, +-inf, NaN unless JSON, unicode and empty strings)."""
    rng = np.random.default_rng(len(datatype) * rows)
    if datatype == "BYTES":
        words = ["", "a", "héllo", "日本語", "tab\tnew\nline", "x" * 300]
        return np.array([[words[(i + j) % len(words)] for j in range(3)] for i in range(rows)], dtype=object)
    if datatype == "BOOL":
        return rng.integers(0, 2, (rows, 3)).astype(bool)
    dtype = np.dtype(DATATYPES[datatype].dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        a = rng.integers(max(info.min, -1000), min(info.max, 1000), (rows, 3)).astype(dtype)
        a.flat[0], a.flat[1] = info.min, info.max
        return a
    a = rng.standard_normal((rows, 3)).astype(dtype)
    if not json_safe:
        a.flat[0], a.flat[1] = np.inf, -np.inf
        if rows * 3 > 2:
            a.flat[2] = np.nan
    return a


def expected_concat(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a, a], -1)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        assert [g.decode() if isinstance(g, bytes) else g for g in got.reshape(-1)] == list(want.reshape(-1))
    else:
        np.testing.assert_array_equal(got.astype(want.dtype), want)


# ---- endpoints

def test_health_and_server_metadata(http, grpc):
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    meta = http.get_server_metadata()
    assert meta["name"] == "ember" and "binary_tensor_data" in meta["extensions"]
    gmeta = grpc.get_server_metadata(as_json=True)
    assert gmeta["name"] == "ember" and gmeta["version"] == meta["version"]
    index = http.get_model_repository_index()
    assert {"name": "latest2", "version": "2", "state": "AVAILABLE"} in index
    assert not any(e["name"] == "latest2" and e["version"] == "1" for e in index)


@pytest.mark.parametrize("name, versions, default", [
    ("scale", ["1", "2", "3"], "3"), ("latest2", ["2", "3"], "3"), ("specific", ["1", "3"], "3")])
def test_model_metadata_and_ready_per_version(http, grpc, name, versions, default):
    meta = http.get_model_metadata(name)
    assert meta["versions"] == versions
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["y", "row_sum"]
    gmeta = grpc.get_model_metadata(name, as_json=True)
    assert gmeta["versions"] == versions and gmeta["inputs"][0]["shape"] == ["-1", "4"]
    for v in versions:
        assert http.get_model_metadata(name, v)["name"] == name
        assert http.is_model_ready(name, v) and grpc.is_model_ready(name, v)
    for v in {"1", "2", "3"} - set(versions):
        assert not http.is_model_ready(name, v)
        with pytest.raises(InferenceServerException, match="NOT_FOUND"):
            grpc.is_model_ready(name, v)
        with pytest.raises(InferenceServerException, match="no version"):
            http.get_model_metadata(name, v)
    assert not http.is_model_ready("nope")
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):  # as OVMS answers
        grpc.is_model_ready("nope")


@pytest.mark.parametrize("name, version, factor", [
    ("scale", "", 4), ("scale", "1", 2), ("scale", "2", 3), ("latest2", "2", 3), ("specific", "1", 2),
    ("specific", "", 4)])
@pytest.mark.parametrize("transport", ["http-json", "http-binary", "grpc"])
def test_versions_answer_their_own_outputs(http, grpc, name, version, factor, transport):
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    r = infer(http, grpc, transport, name, {"x": x}, version=version)
    np.testing.assert_array_equal(r.as_numpy("y"), x * factor)
    np.testing.assert_array_equal(r.as_numpy("row_sum"), x.sum(1, keepdims=True))
    resp = r.get_response(as_json=True) if transport == "grpc" else r.get_response()
    assert resp["model_version"] == (version or "3")


def infer(http, grpc, transport, name, arrays, version="", outputs=None, request_id="", bf16=False):
    if transport == "grpc":
        ins = []
        for n, a in arrays.items():
            i = grpcclient.InferInput(n, list(a.shape), "BF16" if bf16 else _dt(a))
            i.set_data_from_numpy(a)
            ins.append(i)
        outs = [grpcclient.InferRequestedOutput(o) for o in outputs] if outputs else None
        return grpc.infer(name, ins, model_version=version, outputs=outs, request_id=request_id)
    binary = transport == "http-binary"
    ins = []
    for n, a in arrays.items():
        i = httpclient.InferInput(n, list(a.shape), "BF16" if bf16 else _dt(a))
        i.set_data_from_numpy(a, binary_data=binary)
        ins.append(i)
    outs = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs] if outputs else None
    if outs is None and not binary:  # JSON outputs too: name them all with binary_data=False
        outs = [httpclient.InferRequestedOutput(o["name"], binary_data=False)
                for o in http.get_model_metadata(name)["outputs"]]
    return http.infer(name, ins, model_version=version, outputs=outs, request_id=request_id)


def _dt(a: np.ndarray) -> str:
    if a.dtype == object:
        return "BYTES"
    return next(d for d, t in DATATYPES.items() if d != "BYTES" and np.dtype(t.dtype) == a.dtype)


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("transport", ["http-json", "http-binary", "grpc"])
def test_every_datatype(http, grpc, datatype, transport):
    if datatype == "BF16" and transport == "http-json":
        pytest.skip("BF16 has no JSON form (tritonclient refuses; the server answers it as binary)")
    a = sample(datatype)  # NaN and +-inf travel in JSON too (as Python and rapidjson write them)
    if datatype == "BF16":  # tritonclient takes and gives BF16 as float32 arrays
        a = a.astype(np.float32)
        r = infer(http, grpc, transport, "t_bf16", {"in": a}, bf16=True)
    else:
        r = infer(http, grpc, transport, f"t_{datatype.lower()}", {"in": a})
    assert_same(r.as_numpy("out"), expected_concat(a))
    out = r.get_output("out")
    assert (out.datatype if transport == "grpc" else out["datatype"]) == datatype


@pytest.mark.parametrize("transport", ["http-json", "http-binary", "grpc"])
def test_requested_outputs_and_request_id(http, grpc, transport):
    x = np.ones((3, 4), np.float32)
    r = infer(http, grpc, transport, "scale", {"x": x}, outputs=["row_sum"], request_id="req-42")
    assert r.as_numpy("y") is None
    np.testing.assert_array_equal(r.as_numpy("row_sum"), np.full((3, 1), 4, np.float32))
    resp = r.get_response(as_json=True) if transport == "grpc" else r.get_response()
    assert resp["id"] == "req-42"


def test_grpc_typed_contents(server):
    """Inputs in InferTensorContents (not raw) for every datatype that has a contents field."""
    import grpc as grpclib
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    fields = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
              "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
              "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
              "FP64": "fp64_contents", "BYTES": "bytes_contents"}
    with grpclib.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        for dt, field in fields.items():
            a = sample(dt, json_safe=True)
            req = pb.ModelInferRequest(model_name=f"t_{dt.lower()}")
            t = req.inputs.add(name="in", datatype=dt, shape=list(a.shape))
            values = [s.encode() for s in a.reshape(-1)] if dt == "BYTES" else a.reshape(-1).tolist()
            getattr(t.contents, field).extend(values)
            resp = stub.ModelInfer(req, timeout=30)
            got = grpcclient.InferResult(resp).as_numpy("out")
            assert_same(got, expected_concat(a))


# ---- async clients

def test_async_http_and_grpc_clients(server):
    import tritonclient.grpc.aio as agrpc
    import tritonclient.http.aio as ahttp

    async def run():
        hc = ahttp.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
        gc = agrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        try:
            assert await hc.is_server_ready() and await gc.is_server_ready()
            xs = [np.full((1, 4), k, np.float32) for k in range(6)]

            async def one(k, x):
                if k % 2:
                    i = agrpc.InferInput("x", [1, 4], "FP32")
                    i.set_data_from_numpy(x)
                    return await gc.infer("scale", [i], model_version="2")
                i = ahttp.InferInput("x", [1, 4], "FP32")
                i.set_data_from_numpy(x, binary_data=k % 4 == 0)
                return await hc.infer("scale", [i], model_version="2")

            results = await asyncio.gather(*(one(k, x) for k, x in enumerate(xs)))
            for x, r in zip(xs, results):
                np.testing.assert_array_equal(r.as_numpy("y"), x * 3)
        finally:
            await hc.close()
            await gc.close()

    asyncio.run(run())


# ---- dynamic batching, bounded queue, metrics

def test_dynamic_batching_joins_concurrent_requests(server, http):
    """Four single-row requests (and then 2 + 2 rows) arrive within the 5 s window of a
    max-4 batcher: one inference each time, every caller gets its own rows back."""
    import urllib.request

    def batch_count() -> tuple[float, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/metrics", timeout=10).read().decode()
        vals = {}
        for line in text.splitlines():
            if line.startswith("ember_batch_size_") and 'name="batched"' in line:
                vals[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
        return vals.get("ember_batch_size_count", 0.0), vals.get("ember_batch_size_sum", 0.0)

    before = batch_count()
    for shapes in ([1, 1, 1, 1], [2, 2]):
        xs = [np.random.default_rng(i).standard_normal((r, 4)).astype(np.float32) for i, r in enumerate(shapes)]
        results: list = [None] * len(xs)

        def call(i):
            c = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
            inp = httpclient.InferInput("x", list(xs[i].shape), "FP32")
            inp.set_data_from_numpy(xs[i])
            results[i] = c.infer("batched", [inp]).as_numpy("y")
            c.close()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for x, r in zip(xs, results):
            np.testing.assert_allclose(r, x * 4, rtol=0)
    after = batch_count()
    assert after[0] - before[0] == 2, "each group of 4 rows ran as one inference"
    assert after[1] - before[1] == 8


def test_queue_full_answers_503_and_recovers(server, http, grpc):
    mv = server.repository.get("small_queue")
    gate = Gate(mv)
    x = np.ones((1, 4), np.float32)
    done = {}

    def first():
        c = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
        inp = httpclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        done["y"] = c.infer("small_queue", [inp]).as_numpy("y")
        c.close()

    t = threading.Thread(target=first)
    try:
        t.start()
        assert gate.entered.acquire(timeout=30)
        with pytest.raises(InferenceServerException, match="queue is full") as e:
            infer(http, grpc, "http-binary", "small_queue", {"x": x})
        assert e.value.status() == "503"
        with pytest.raises(InferenceServerException, match="queue is full") as e:
            infer(http, grpc, "grpc", "small_queue", {"x": x})
        assert "RESOURCE_EXHAUSTED" in e.value.status()
    finally:
        gate.close()
        t.join(30)
    np.testing.assert_array_equal(done["y"], x * 4)
    np.testing.assert_array_equal(infer(http, grpc, "grpc", "small_queue", {"x": x}).as_numpy("y"), x * 4)


def test_metrics_use_ovms_names(server, http):
    import urllib.request

    infer(http, None, "http-binary", "scale", {"x": np.ones((1, 4), np.float32)}, version="1")
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/metrics", timeout=10).read().decode()
    for needle in ('ovms_requests_success{api="KServe",interface="REST",method="ModelInfer",name="scale",version="1"}',
                   'ovms_request_time_us_bucket{interface="REST"', 'ovms_inference_time_us_count{name="scale"',
                   'ovms_streams{name="scale",version="1"}', 'ovms_infer_req_queue_size{name="scale"',
                   'ovms_current_requests{name="scale"', 'ovms_wait_for_infer_req_time_us_bucket',
                   'ember_batch_size_bucket', '# TYPE ovms_requests_success counter'):
        assert needle in text, needle
