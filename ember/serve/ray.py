"""ember models as Ray Serve deployments behind the same KServe v2 HTTP routes as ``ember serve``.

    from ember.serve import ModelConfig
    from ember.serve.ray import deploy
    handle = deploy([ModelConfig("resnet", Path("/models/resnet"))], num_replicas=2,
                    http_host="127.0.0.1", http_port=8000)
    # POST http://127.0.0.1:8000/v2/models/resnet/infer  (the KServe v2 REST protocol)

Each replica is a Ray actor holding its own :class:`~ember.serve.repository.ModelRepository`
(the same version policies, dynamic batching and bounded queue as ``ember serve``) and the same
ASGI app; Ray Serve routes HTTP requests to replicas and, with ``autoscaling_config``, adds or
removes replicas with the load (e.g. ``{"min_replicas": 1, "max_replicas": 4,
"target_ongoing_requests": 8}``). Model folders must be readable at the same path on every node
that runs a replica. ``pip install "ember[serve]" "ray[serve]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ember.serve.config import ModelConfig

INSTALL_HINT = 'pip install "ember[serve]" "ray[serve]"'


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        from ember.serve import MissingExtraError

        raise MissingExtraError(f"ember.serve.ray needs Ray Serve: {INSTALL_HINT}") from None
    return serve


class KServeReplica:
    """One replica: a model repository and the KServe v2 ASGI app, called once per request."""

    def __init__(self, models: Sequence[ModelConfig], poll_wait_seconds: float = 0.0,
                 max_request_bytes: int = 64 * 1024 * 1024) -> None:
        from ember.serve import require_extra
        from ember.serve.metrics import Metrics
        from ember.serve.repository import ModelRepository
        from ember.serve.rest import create_app

        require_extra()
        self.metrics = Metrics()
        self.repository = ModelRepository(models, self.metrics)
        self.repository.sync()
        self.repository.start_polling(poll_wait_seconds)
        self.app = create_app(self.repository, self.metrics, max_request_bytes, server_name="ember-ray")

    async def __call__(self, request: Any) -> Any:
        """Run the request through the ASGI app and hand Ray Serve the finished response."""
        from starlette.responses import Response

        messages: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        await self.app(dict(request.scope), request.receive, send)
        start = next(m for m in messages if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        response = Response(body, status_code=start["status"])
        response.raw_headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"] + \
            [(b"content-length", str(len(body)).encode())]
        return response

    def check_health(self) -> None:
        """Ray Serve's health probe: a replica whose models are all gone is unhealthy."""
        if not self.repository.ready():
            raise RuntimeError("ember: no version of some model is available")

    def __del__(self) -> None:
        repo = getattr(self, "repository", None)
        if repo is not None:
            repo.close(5)


def build_app(models: Sequence[ModelConfig], *, name: str = "ember-kserve", num_replicas: int | str | None = None,
              autoscaling_config: dict[str, Any] | None = None, ray_actor_options: dict[str, Any] | None = None,
              max_ongoing_requests: int = 64, poll_wait_seconds: float = 0.0) -> Any:
    """A Ray Serve application (not yet running) serving ``models`` over KServe v2 HTTP.

    ``num_replicas`` and ``autoscaling_config`` are Ray Serve's; give one or neither (one
    replica). ``ray_actor_options`` sets each replica's resources, e.g. ``{"num_cpus": 2}``.
    """
    serve = _serve()
    options: dict[str, Any] = {"name": name, "max_ongoing_requests": max_ongoing_requests}
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    elif num_replicas is not None:
        options["num_replicas"] = num_replicas
    if ray_actor_options is not None:
        options["ray_actor_options"] = ray_actor_options
    deployment = serve.deployment(**options)(KServeReplica)
    return deployment.bind(tuple(models), poll_wait_seconds)


def deploy(models: Sequence[ModelConfig], *, http_host: str = "127.0.0.1", http_port: int = 8000,
           app_name: str = "ember", **options: Any) -> Any:
    """Start Ray Serve (in the Ray cluster ``ray.init`` connected to, or a local one) with its HTTP
    proxy on ``http_host:http_port`` and run :func:`build_app`; returns the deployment handle.
    ``serve.shutdown()`` (or ``serve.delete(app_name)``) stops it."""
    serve = _serve()
    serve.start(http_options={"host": http_host, "port": http_port})
    return serve.run(build_app(models, **options), name=app_name, route_prefix="/", blocking=False)
