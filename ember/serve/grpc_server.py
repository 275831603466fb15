"""The KServe v2 gRPC API (``inference.GRPCInferenceService``) on grpcio.

The message classes are KServe's ``grpc_predict_v2.proto`` as shipped, compiled, in
``tritonclient.grpc`` (Triton's service is a superset under the same package and service name;
the Triton-only RPCs answer UNIMPLEMENTED). Outputs always travel in ``raw_output_contents``;
inputs come either typed (``contents``) or raw (``raw_input_contents``).
"""

from __future__ import annotations

import json
import logging
import time
from concurrent import futures
from typing import Any

import numpy as np

from ember.serve.protocol import DATATYPES, BadRequest, ServeError, decode_raw, encode_raw

access_log = logging.getLogger("ember.serve.access")
log = logging.getLogger("ember.serve")

# InferTensorContents field per datatype (FP16/BF16 have none: raw only)
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _stubs() -> tuple[Any, Any]:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    return service_pb2, service_pb2_grpc


def _decode_contents(t: Any, where: str) -> np.ndarray:
    shape = tuple(int(d) for d in t.shape)
    if any(d < 0 for d in shape):
        raise BadRequest(f"{where}: negative dimension in shape {list(shape)}")
    field = _CONTENTS.get(t.datatype)
    if field is None:
        raise BadRequest(f"{where}: {t.datatype} tensors travel in raw_input_contents")
    values = getattr(t.contents, field)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(values) != count:
        raise BadRequest(f"{where}: {len(values)} values in contents for shape {list(shape)} ({count} expected)")
    if t.datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        try:
            arr[:] = [b.decode("utf-8") for b in values]
        except UnicodeDecodeError:
            raise BadRequest(f"{where}: a BYTES element is not UTF-8") from None
        return arr.reshape(shape)
    dtype = np.dtype(DATATYPES[t.datatype].dtype)
    try:
        return np.array(values, dtype=np.int64 if dtype.kind in "iu" and dtype != np.uint64 else None) \
            .astype(dtype, casting="unsafe").reshape(shape)
    except (ValueError, OverflowError) as e:
        raise BadRequest(f"{where}: cannot read contents as {t.datatype}: {e}") from None


def decode_request(request: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays and datatypes by input name from a ``ModelInferRequest``."""
    if not request.inputs:
        raise BadRequest("the request has no inputs")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: "
                         "give raw data for every input or for none")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for i, t in enumerate(request.inputs):
        where = f"input '{t.name}'"
        if t.name in inputs:
            raise BadRequest(f"{where} is given twice")
        if t.datatype not in DATATYPES:
            raise BadRequest(f"{where}: unknown datatype {t.datatype!r}; the protocol's: {', '.join(DATATYPES)}")
        shape = tuple(int(d) for d in t.shape)
        if any(d < 0 for d in shape):
            raise BadRequest(f"{where}: negative dimension in shape {list(shape)}")
        inputs[t.name] = decode_raw(raw[i], t.datatype, shape, where) if raw else _decode_contents(t, where)
        datatypes[t.name] = t.datatype
    return inputs, datatypes


def make_servicer(repository: Any, metrics: Any, server_name: str = "ember") -> Any:
    """A ``GRPCInferenceService`` servicer over the repository."""
    pb, pb_grpc = _stubs()
    import grpc

    import ember

    def call(method: str, context: Any, name: str, version: str, fn: Any) -> Any:
        start = time.perf_counter()
        code = "OK"
        resolved = version
        try:
            out, resolved = fn()
            return out
        except ServeError as e:
            code = e.grpc_code
            context.abort(getattr(grpc.StatusCode, code), str(e))
        except Exception as e:  # noqa: BLE001 - answer INTERNAL, keep serving
            code = "INTERNAL"
            log.exception("ember serve: internal error in gRPC %s", method)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {e}")
        finally:
            seconds = time.perf_counter() - start
            if name:
                metrics.request("gRPC", method, name, resolved or version, code == "OK",
                                seconds if method == "ModelInfer" else None)
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "interface": "gRPC", "method": method, "client": context.peer(),
                "model": name or None, "version": (resolved or version) or None, "status": code,
                "ms": round(seconds * 1e3, 3)}, separators=(",", ":")))

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - the proto's names
            return pb.ServerLiveResponse(live=True)

        def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
            return pb.ServerReadyResponse(ready=repository.ready())

        def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
            return pb.ServerMetadataResponse(name=server_name, version=ember.__version__,
                                             extensions=["binary_tensor_data", "model_repository"])

        def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
            def fn() -> Any:
                try:
                    mv = repository.get(request.name, request.version)
                except ServeError as e:
                    if e.status == 503:
                        return pb.ModelReadyResponse(ready=False), request.version
                    raise
                return pb.ModelReadyResponse(ready=True), mv.label
            return call("ModelReady", context, request.name, request.version, fn)

        def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
            def fn() -> Any:
                mv = repository.get(request.name, request.version)
                tm = pb.ModelMetadataResponse.TensorMetadata
                return pb.ModelMetadataResponse(
                    name=request.name, versions=[str(v.version) for v in repository.versions(request.name)],
                    platform="OpenVINO",
                    inputs=[tm(name=s.name, datatype=s.datatype, shape=list(s.shape or ())) for s in mv.inputs],
                    outputs=[tm(name=s.name, datatype=s.datatype, shape=list(s.shape or ())) for s in mv.outputs],
                ), mv.label
            return call("ModelMetadata", context, request.name, request.version, fn)

        def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
            def fn() -> Any:
                mv = repository.get(request.model_name, request.model_version)
                inputs, datatypes = decode_request(request)
                feeds = mv.check_inputs(inputs, datatypes)
                wanted = [o.name for o in request.outputs] or [s.name for s in mv.outputs]
                mv.check_outputs(wanted)
                outputs = mv.submit(feeds).result()
                kinds = {s.name: s.datatype for s in mv.outputs}
                resp = pb.ModelInferResponse(model_name=request.model_name, model_version=mv.label, id=request.id)
                for n in wanted:
                    arr = outputs[n]
                    resp.outputs.add(name=n, datatype=kinds[n], shape=list(arr.shape))
                    resp.raw_output_contents.append(encode_raw(arr, kinds[n]))
                return resp, mv.label
            return call("ModelInfer", context, request.model_name, request.model_version, fn)

    return Servicer()


def start_grpc_server(repository: Any, metrics: Any, host: str, port: int, workers: int,
                      max_message_bytes: int) -> tuple[Any, int]:
    """Start the gRPC server; returns it and the bound port (``port=0`` picks a free one)."""
    import grpc

    _, pb_grpc = _stubs()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ember-grpc"),
                         options=[("grpc.max_receive_message_length", max_message_bytes),
                                  ("grpc.max_send_message_length", -1),
                                  ("grpc.so_reuseport", 0)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(make_servicer(repository, metrics), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"ember serve: cannot bind gRPC to {host}:{port}")
    server.start()
    return server, bound
