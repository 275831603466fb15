"""``ember serve``: a model server speaking the KServe v2 protocol over REST and gRPC.

    from ember.serve import ModelConfig, Server, ServerConfig
    cfg = ServerConfig(models=(ModelConfig("resnet", Path("models/resnet")),), rest_port=8000, grpc_port=9000)
    with Server(cfg) as server:   # serves on background threads until the block ends
        ...

The web and gRPC libraries come with the optional extra (``pip install "ember[serve]"``) and
are imported only when a server starts; the configuration types and the protocol codec
(:mod:`ember.serve.protocol`) need nothing beyond ember's own dependencies.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ember.errors import EmberError
from ember.serve.config import BatchingConfig, ConfigError, ModelConfig, ServerConfig, VersionPolicy, load_config_file

INSTALL_HINT = 'pip install "ember[serve]"'
_NEEDED = ("starlette", "uvicorn", "grpc", "prometheus_client", "tritonclient")


class MissingExtraError(EmberError):
    """A package of the ``serve`` extra is not installed."""


def require_extra() -> None:
    """Raise a one-line install hint when a package of the ``serve`` extra is missing."""
    missing = [m for m in _NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(f"ember serve needs {', '.join(missing)}: {INSTALL_HINT}")


def __getattr__(name: str) -> Any:
    if name == "Server":
        from ember.serve.server import Server

        return Server
    if name == "ModelRepository":
        from ember.serve.repository import ModelRepository

        return ModelRepository
    raise AttributeError(f"module 'ember.serve' has no attribute {name!r}")


__all__ = ["BatchingConfig", "ConfigError", "INSTALL_HINT", "MissingExtraError", "ModelConfig", "ModelRepository",
           "Server", "ServerConfig", "VersionPolicy", "load_config_file", "require_extra"]
