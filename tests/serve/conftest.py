"""Fixtures of the serve tests: a repository of small models (built in the test, saved as IR in
tmp folders) and a server on free loopback ports. Only 127.0.0.1 traffic."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("starlette", reason='the serve extra is not installed: pip install "ember[serve]"')

from serve_helpers import concat_model, save_version, scale_model  # noqa: E402

from ember.serve import BatchingConfig, ModelConfig, ServerConfig, VersionPolicy  # noqa: E402
from ember.serve.protocol import DATATYPES  # noqa: E402


@pytest.fixture(scope="session")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for v in (1, 2, 3):
        save_version(root / "scale", v, scale_model(float(v + 1)))
    for dt in DATATYPES:
        save_version(root / f"t_{dt.lower()}", 1, concat_model(dt))
    return root


@pytest.fixture(scope="session")
def server(repo):
    from ember.serve import Server

    P = VersionPolicy
    R = "REFERENCE"  # the protocol is under test here; the CPU device has its own tests
    models = (
        ModelConfig("scale", repo / "scale", P("all"), target_device=R),
        ModelConfig("latest2", repo / "scale", P("latest", 2), target_device=R),
        ModelConfig("specific", repo / "scale", P("specific", versions=(1, 3)), target_device=R),
        ModelConfig("batched", repo / "scale", target_device=R, nireq=1, batching=BatchingConfig(4, 5_000_000)),
        ModelConfig("small_queue", repo / "scale", target_device=R, nireq=1, max_queue_size=1),
        *(ModelConfig(f"t_{dt.lower()}", repo / f"t_{dt.lower()}", target_device=R) for dt in DATATYPES),
    )
    cfg = ServerConfig(models=models, rest_port=0, grpc_port=0, poll_wait_seconds=0,
                       max_request_bytes=1 << 20, shutdown_grace_seconds=10)
    with Server(cfg) as s:
        yield s
