"""The KServe v2 REST API as a Starlette (ASGI) app, run by uvicorn.

Routes (as OpenVINO Model Server and Triton serve them)::

    GET  /v2/health/live                      server live
    GET  /v2/health/ready                     every model has an available version
    GET  /v2                                  server metadata
    GET  /v2/models/{name}[/versions/{v}]     model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer   JSON, or JSON + binary tensors
    POST /v2/repository/index                 every model version and its state
    GET  /metrics                             Prometheus text format

Errors are ``{"error": "..."}`` with 400 (bad request), 404 (unknown model/version), 413 (body
over the limit), 503 (not ready, queue full). Decoding and encoding tensors run on a worker
thread, inference on the model's own workers: the event loop only routes and waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from ember.serve.protocol import (
    BadRequest,
    PayloadTooLarge,
    ServeError,
    build_infer_response,
    parse_infer_request,
)

access_log = logging.getLogger("ember.serve.access")
log = logging.getLogger("ember.serve")

HEADER_LENGTH = "inference-header-content-length"
INLINE_BYTES = 64 * 1024


def create_app(repository: Any, metrics: Any, max_request_bytes: int = 64 * 1024 * 1024,
               server_name: str = "ember") -> Any:
    """The ASGI app over a :class:`~ember.serve.repository.ModelRepository`."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    import ember

    def error(e: ServeError) -> Response:
        return JSONResponse({"error": str(e)}, status_code=e.status)

    async def logged(request: Request, method: str, handler: Any) -> Response:
        start = time.perf_counter()
        name = request.path_params.get("name", "")
        version = request.path_params.get("version", "")
        try:
            response = await handler()
        except ServeError as e:
            response = error(e)
        except Exception as e:  # noqa: BLE001 - a bug must answer 500, not drop the connection
            log.exception("ember serve: internal error on %s", request.url.path)
            response = JSONResponse({"error": f"internal error: {e}"}, status_code=500)
        seconds = time.perf_counter() - start
        if name and method != "ServerLive":
            resolved = response.headers.get("x-ember-version", version)
            metrics.request("REST", method, name, resolved, response.status_code < 400,
                            seconds if method == "ModelInfer" else None)
        access_log.info(json.dumps({
            "ts": round(time.time(), 3), "interface": "REST", "method": method, "path": request.url.path,
            "client": request.client.host if request.client else None, "model": name or None,
            "version": response.headers.get("x-ember-version", version) or None, "status": response.status_code,
            "ms": round(seconds * 1e3, 3), "request_id": response.headers.get("x-ember-request-id"),
        }, separators=(",", ":")))
        return response

    async def live(request: Request) -> Response:
        async def h() -> Response:
            return JSONResponse({"live": True})
        return await logged(request, "ServerLive", h)

    async def ready(request: Request) -> Response:
        async def h() -> Response:
            ok = repository.ready()
            return JSONResponse({"ready": ok}, status_code=200 if ok else 503)
        return await logged(request, "ServerReady", h)

    async def server_metadata(request: Request) -> Response:
        async def h() -> Response:
            return JSONResponse({"name": server_name, "version": ember.__version__,
                                 "extensions": ["binary_tensor_data", "model_repository"]})
        return await logged(request, "ServerMetadata", h)

    async def model_metadata(request: Request) -> Response:
        async def h() -> Response:
            name = request.path_params["name"]
            mv = repository.get(name, request.path_params.get("version"))
            versions = [str(v.version) for v in repository.versions(name)]
            body = {"name": name, "versions": versions, "platform": "OpenVINO"} | mv.metadata()
            return JSONResponse(body, headers={"x-ember-version": mv.label})
        return await logged(request, "ModelMetadata", h)

    async def model_ready(request: Request) -> Response:
        async def h() -> Response:
            name = request.path_params["name"]
            mv = repository.get(name, request.path_params.get("version"))
            return JSONResponse({"name": name, "version": mv.label, "ready": True},
                                headers={"x-ember-version": mv.label})
        return await logged(request, "ModelReady", h)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_request_bytes:
            raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {max_request_bytes}")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_request_bytes:
                raise PayloadTooLarge(f"request body is over the limit of {max_request_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def infer(request: Request) -> Response:
        async def h() -> Response:
            name = request.path_params["name"]
            mv = repository.get(name, request.path_params.get("version"))
            body = await read_body(request)
            hl = request.headers.get(HEADER_LENGTH)
            if hl is not None and not hl.strip().isdigit():
                raise BadRequest(f"Inference-Header-Content-Length must be a byte count, got {hl!r}")

            def decode() -> Any:
                data = parse_infer_request(body, int(hl) if hl is not None else None)
                feeds = mv.check_inputs(data.inputs, data.datatypes)
                if data.outputs is not None:
                    mv.check_outputs([o.name for o in data.outputs])
                return data, feeds

            # small bodies decode on the loop: a thread hop costs more than the work
            data, feeds = decode() if len(body) < INLINE_BYTES else await run_in_threadpool(decode)
            outputs = await asyncio.wrap_future(mv.submit(feeds))
            results = {s.name: (outputs[s.name], s.datatype) for s in mv.outputs}
            if sum(a.nbytes for a in outputs.values()) < INLINE_BYTES:
                payload, header_len = build_infer_response(name, mv.label, data, results)
            else:
                payload, header_len = await run_in_threadpool(build_infer_response, name, mv.label, data, results)
            headers = {"x-ember-version": mv.label}
            if data.id is not None:
                headers["x-ember-request-id"] = data.id
            if header_len is None:
                return Response(payload, media_type="application/json", headers=headers)
            headers["Inference-Header-Content-Length"] = str(header_len)
            return Response(payload, media_type="application/octet-stream", headers=headers)
        return await logged(request, "ModelInfer", h)

    async def repository_index(request: Request) -> Response:
        async def h() -> Response:
            return JSONResponse(repository.index())
        return await logged(request, "RepositoryIndex", h)

    async def prometheus(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, headers={"content-type": content_type})

    routes = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST", "GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(base, model_metadata, methods=["GET"]),
                   Route(base + "/ready", model_ready, methods=["GET"]),
                   Route(base + "/infer", infer, methods=["POST"])]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return JSONResponse({"error": f"{request.method} {request.url.path}: "
                                      f"{'no such endpoint' if status == 404 else 'method not allowed'}"},
                            status_code=status)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
