"""``Server``: the model repository behind REST (uvicorn) and gRPC (grpcio), started and stopped
as one. ``with Server(config) as s: ...`` serves on background threads (tests, notebooks);
``serve_forever`` is the command line's loop, ending gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from typing import Any

from ember.serve.config import ServerConfig
from ember.serve.metrics import Metrics
from ember.serve.repository import ModelRepository

log = logging.getLogger("ember.serve")


class Server:
    """A running (or ready to run) ``ember serve``.

    ``start()`` loads every model version the policies select (a version that fails to load is
    logged and retried when its files change), starts the repository poller, the gRPC server
    and the REST server; ``rest_port``/``grpc_port`` then hold the bound ports. ``stop()``
    stops accepting connections, lets requests in flight finish (up to
    ``shutdown_grace_seconds``), then drains and unloads every model.
    """

    def __init__(self, config: ServerConfig, core: Any = None) -> None:
        from ember.serve import require_extra

        require_extra()
        self.config = config
        self.metrics = Metrics()
        self.repository = ModelRepository(config.models, self.metrics, core)
        if config.config_path is not None:
            self.repository.watch_config(config.config_path)
        self.rest_port: int | None = None
        self.grpc_port: int | None = None
        self._uvicorn: Any = None
        self._rest_thread: threading.Thread | None = None
        self._grpc: Any = None
        self._stopped = threading.Event()

    def start(self) -> Server:
        cfg = self.config
        self.repository.sync()
        self.repository.start_polling(cfg.poll_wait_seconds)
        if cfg.grpc_port is not None:
            from ember.serve.grpc_server import start_grpc_server

            self._grpc, self.grpc_port = start_grpc_server(self.repository, self.metrics, cfg.host, cfg.grpc_port,
                                                           cfg.grpc_workers, cfg.max_request_bytes)
            log.info("ember serve: gRPC on %s:%d", cfg.host, self.grpc_port)
        if cfg.rest_port is not None:
            self._start_rest()
            log.info("ember serve: REST on http://%s:%d", cfg.host, self.rest_port)
        return self

    def _start_rest(self) -> None:
        import uvicorn

        from ember.serve.rest import create_app

        cfg = self.config
        app = create_app(self.repository, self.metrics, cfg.max_request_bytes)
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family in (socket.AF_INET, socket.AF_INET6):  # accepted sockets inherit it: no Nagle delay
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((cfg.host, cfg.rest_port))
        sock.listen(2048)
        self.rest_port = sock.getsockname()[1]
        ucfg = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False,
                              timeout_graceful_shutdown=int(cfg.shutdown_grace_seconds), backlog=2048,
                              timeout_keep_alive=30)
        self._uvicorn = uvicorn.Server(ucfg)
        self._rest_thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [sock]},
                                             name="ember-serve-rest", daemon=True)
        self._rest_thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if not self._rest_thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"ember serve: the REST server did not start on {cfg.host}:{self.rest_port}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Graceful shutdown: stop listening, finish requests in flight, unload models."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.shutdown_grace_seconds
        stopping = None
        if self._grpc is not None:
            stopping = self._grpc.stop(grace)
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            self._rest_thread.join(grace + 5)
        if stopping is not None:
            stopping.wait(grace + 5)
        self.repository.close(grace)
        log.info("ember serve: stopped")

    def serve_forever(self) -> None:
        """Start, then block until SIGTERM or SIGINT; then stop gracefully."""
        done = threading.Event()
        previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            done.wait()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            self.stop()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
