"""Every class of bad request gets a clear error with the right status, and the server keeps
serving: raw HTTP bodies (to send what no client library would) and gRPC messages."""

from __future__ import annotations

import http.client
import json
import struct

import numpy as np
import pytest

grpclib = pytest.importorskip("grpc")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402


def post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else {}
    finally:
        conn.close()


def get(server, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def tensor(data=None, shape=(1, 4), datatype="FP32", name="x", **params):
    t = {"name": name, "shape": list(shape), "datatype": datatype}
    if data is not None:
        t["data"] = data
    if params:
        t["parameters"] = params
    return t


GOOD = json.dumps({"inputs": [tensor([1, 2, 3, 4])]}).encode()
RAW16 = np.ones(4, np.float32).tobytes()


def binary(head: dict, payload: bytes) -> tuple[bytes, dict]:
    h = json.dumps(head).encode()
    return h + payload, {"Inference-Header-Content-Length": str(len(h))}


# (case id, path, body, headers, status, words the error must contain)
REST_CASES = [
    ("malformed-json", "/v2/models/scale/infer", b'{"inputs": [', {}, 400, "not valid JSON"),
    ("not-an-object", "/v2/models/scale/infer", b"[1, 2]", {}, 400, "JSON object"),
    ("no-inputs", "/v2/models/scale/infer", b'{"inputs": []}', {}, 400, "non-empty 'inputs'"),
    ("wrong-shape", "/v2/models/scale/infer", json.dumps({"inputs": [tensor([1] * 5, (1, 5))]}).encode(), {},
     400, "shape [1, 5] does not match"),
    ("wrong-rank", "/v2/models/scale/infer", json.dumps({"inputs": [tensor([1] * 4, (4,))]}).encode(), {},
     400, "does not match"),
    ("wrong-datatype", "/v2/models/scale/infer", json.dumps({"inputs": [tensor([1, 2, 3, 4], datatype="FP64")]})
     .encode(), {}, 400, "FP64 does not match the model's FP32"),
    ("unknown-datatype", "/v2/models/scale/infer", json.dumps({"inputs": [tensor([1], datatype="FP128")]})
     .encode(), {}, 400, "unknown datatype"),
    ("count-mismatch", "/v2/models/scale/infer", json.dumps({"inputs": [tensor([1, 2, 3])]}).encode(), {},
     400, "3 values for shape [1, 4]"),
    ("strings-for-floats", "/v2/models/scale/infer", json.dumps({"inputs": [tensor(["a", "b", "c", "d"])]})
     .encode(), {}, 400, "must be numbers"),
    ("float-for-int", "/v2/models/t_int32/infer", json.dumps({"inputs": [tensor([1.5, 2, 3], (1, 3), "INT32",
                                                                              name="in")]}).encode(), {},
     400, "must be integers"),
    ("int-out-of-range", "/v2/models/t_uint8/infer", json.dumps({"inputs": [tensor([1, 2, 300], (1, 3), "UINT8",
                                                                                 name="in")]}).encode(), {},
     400, "out of range"),
    ("negative-dim", "/v2/models/scale/infer", json.dumps({"inputs": [tensor([1], (-1, 4))]}).encode(), {},
     400, "non-negative integers"),
    ("unknown-input", "/v2/models/scale/infer", json.dumps({"inputs": [tensor([1, 2, 3, 4], name="z")]})
     .encode(), {}, 400, "has no input 'z'"),
    ("duplicate-input", "/v2/models/scale/infer", json.dumps({"inputs": [tensor([1, 2, 3, 4])] * 2}).encode(),
     {}, 400, "given twice"),
    ("no-data", "/v2/models/scale/infer", json.dumps({"inputs": [tensor()]}).encode(), {}, 400,
     "neither 'data' nor binary_data_size"),
    ("unknown-output", "/v2/models/scale/infer", json.dumps({"inputs": [tensor([1, 2, 3, 4])],
                                                             "outputs": [{"name": "nope"}]}).encode(), {},
     400, "has no output 'nope'"),
    ("unknown-model", "/v2/models/nope/infer", GOOD, {}, 404, "'nope' is not served"),
    ("unknown-version", "/v2/models/scale/versions/9/infer", GOOD, {}, 404, "has no version 9"),
    ("policy-hidden-version", "/v2/models/latest2/versions/1/infer", GOOD, {}, 404, "has no version 1"),
    ("bad-version", "/v2/models/scale/versions/abc/infer", GOOD, {}, 400, "must be an integer"),
    ("oversized-declared", "/v2/models/scale/infer", b"x" * (1 << 20 | 1), {}, 413, "over the limit"),
    ("truncated-binary", "/v2/models/scale/infer",
     *binary({"inputs": [tensor(shape=(1, 4), binary_data_size=16)]}, RAW16[:10]), 400, "truncated"),
    ("binary-size-mismatch", "/v2/models/scale/infer",
     *binary({"inputs": [tensor(shape=(1, 4), binary_data_size=12)]}, RAW16[:12]), 400,
     "12 bytes of data for shape [1, 4] FP32, expected 16"),
    ("binary-left-over", "/v2/models/scale/infer",
     *binary({"inputs": [tensor(shape=(1, 4), binary_data_size=16)]}, RAW16 + b"xx"), 400, "no input claims"),
    ("header-past-body", "/v2/models/scale/infer", GOOD, {"Inference-Header-Content-Length": "99999"}, 400,
     "outside the"),
    ("header-not-number", "/v2/models/scale/infer", GOOD, {"Inference-Header-Content-Length": "ten"}, 400,
     "must be a byte count"),
    ("truncated-bytes-element", "/v2/models/t_bytes/infer",
     *binary({"inputs": [tensor(shape=(1, 3), datatype="BYTES", name="in", binary_data_size=9)]},
             struct.pack("<I", 1) + b"a" + struct.pack("<I", 50)), 400, "claims 50 bytes"),
    ("bf16-as-json", "/v2/models/t_bf16/infer", json.dumps({"inputs": [tensor([1, 2, 3], (1, 3), "BF16",
                                                                           name="in")]}).encode(), {},
     400, "BF16 tensors travel as binary"),
    ("classification-extension", "/v2/models/scale/infer",
     json.dumps({"inputs": [tensor([1, 2, 3, 4])], "outputs": [{"name": "y", "parameters": {"classification": 3}}]})
     .encode(), {}, 400, "classification extension is not supported"),
    ("unknown-endpoint", "/v2/models/scale/explain", GOOD, {}, 404, "no such endpoint"),
]


@pytest.mark.parametrize("path, body, headers, status, words",
                         [pytest.param(*c[1:], id=c[0]) for c in REST_CASES])
def test_rest_bad_requests(server, path, body, headers, status, words):
    got_status, payload = post(server, path, body, headers)
    assert got_status == status, payload
    assert set(payload) == {"error"} and words in payload["error"], payload
    ok_status, ok = post(server, "/v2/models/scale/infer", GOOD)  # still serving
    assert ok_status == 200 and ok["outputs"][0]["data"] == [4.0, 8.0, 12.0, 16.0]


def test_rest_oversized_streamed_body(server):
    """A chunked body (no Content-Length) is cut off at the limit too."""
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        conn.request("POST", "/v2/models/scale/infer", body=iter([b"x" * 65536] * 20), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        r = conn.getresponse()
        assert r.status == 413 and "over the limit" in json.loads(r.read())["error"]
    finally:
        conn.close()
    assert post(server, "/v2/models/scale/infer", GOOD)[0] == 200


def test_rest_get_errors(server):
    assert get(server, "/v2/models/nope")[0] == 404
    assert get(server, "/v2/models/scale/versions/7/ready")[0] == 404
    status, body = get(server, "/v2/models/scale/infer")
    assert status == 405 and "method not allowed" in body["error"]


def _req(model="scale", version="", shape=(1, 4), datatype="FP32", raw=RAW16, name="x", **kw):
    r = pb.ModelInferRequest(model_name=model, model_version=version, **kw)
    r.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if raw is not None:
        r.raw_input_contents.append(raw)
    return r


def _two_raw():
    r = _req()
    r.raw_input_contents.append(RAW16)
    return r


def _typed_short():
    r = _req(raw=None)
    r.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    return r


def _unknown_output():
    r = _req()
    r.outputs.add(name="nope")
    return r


GRPC_CASES = [
    ("wrong-shape", lambda: _req(shape=(1, 5), raw=np.ones(5, np.float32).tobytes()), "INVALID_ARGUMENT",
     "does not match"),
    ("wrong-datatype", lambda: _req(datatype="FP64", raw=np.ones(4).tobytes()), "INVALID_ARGUMENT",
     "FP64 does not match"),
    ("unknown-datatype", lambda: _req(datatype="FP128"), "INVALID_ARGUMENT", "unknown datatype"),
    ("short-raw", lambda: _req(raw=RAW16[:12]), "INVALID_ARGUMENT", "expected 16"),
    ("raw-count", _two_raw, "INVALID_ARGUMENT", "2 raw_input_contents for 1 inputs"),
    ("typed-count", _typed_short, "INVALID_ARGUMENT", "2 values in contents"),
    ("fp16-typed", lambda: _req(model="t_fp16", name="in", shape=(1, 3), datatype="FP16", raw=None),
     "INVALID_ARGUMENT", "travel in raw_input_contents"),
    ("negative-dim", lambda: _req(shape=(-1, 4)), "INVALID_ARGUMENT", "negative dimension"),
    ("no-inputs", lambda: pb.ModelInferRequest(model_name="scale"), "INVALID_ARGUMENT", "no inputs"),
    ("unknown-input", lambda: _req(name="z"), "INVALID_ARGUMENT", "no input 'z'"),
    ("unknown-output", _unknown_output, "INVALID_ARGUMENT", "no output 'nope'"),
    ("unknown-model", lambda: _req(model="nope"), "NOT_FOUND", "not served"),
    ("unknown-version", lambda: _req(version="9"), "NOT_FOUND", "no version 9"),
    ("oversized", lambda: _req(raw=b"x" * (2 << 20)), "RESOURCE_EXHAUSTED", ""),
]


@pytest.mark.parametrize("make, code, words", [pytest.param(*c[1:], id=c[0]) for c in GRPC_CASES])
def test_grpc_bad_requests(server, make, code, words):
    with grpclib.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        with pytest.raises(grpclib.RpcError) as e:
            stub.ModelInfer(make(), timeout=30)
        assert e.value.code().name == code and words in e.value.details()
        ok = stub.ModelInfer(_req(), timeout=30)
        assert np.frombuffer(ok.raw_output_contents[0], np.float32).tolist() == [4.0] * 4
        with pytest.raises(grpclib.RpcError) as e:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=30)
        assert e.value.code().name == "NOT_FOUND"


@pytest.mark.parametrize("raised, status, code", [
    (lambda: __import__("ember.errors").errors.InferenceError("index 7 is out of range"), 400, "INVALID_ARGUMENT"),
    (lambda: RuntimeError("kernel exploded"), 500, "INTERNAL")])
def test_inference_failures(server, raised, status, code):
    """A model that fails at run time: the client's fault (InferenceError) is 400, anything else
    500 / INTERNAL with the reason; the version keeps serving afterwards."""
    mv = server.repository.get("scale", 1)
    original = mv._execute

    def failing(request, feeds):
        raise raised()

    mv._execute = failing
    try:
        got, body = post(server, "/v2/models/scale/versions/1/infer", GOOD)
        assert got == status and str(raised()) in body["error"]
        with grpclib.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
            with pytest.raises(grpclib.RpcError) as e:
                pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(_req(version="1"), timeout=30)
            assert e.value.code().name == code and str(raised()) in e.value.details()
    finally:
        mv._execute = original
    assert post(server, "/v2/models/scale/versions/1/infer", GOOD)[0] == 200
