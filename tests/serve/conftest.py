"""Small models built in the test (ember.opset, saved as IR in tmp folders) and servers started
on free loopback ports. Only 127.0.0.1 traffic; every wait loop is bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason='the serve extra is not installed: pip install "ember[serve]"')

import ember as ov  # noqa: E402
import ember.opset8 as ops  # noqa: E402
from ember.serve import BatchingConfig, ModelConfig, ServerConfig, VersionPolicy  # noqa: E402
from ember.serve.protocol import DATATYPES  # noqa: E402


def scale_model(factor: float, rows: int = -1, width: int = 4) -> ov.Model:
    """y = x * factor on f32[rows, width]: the version number shows in the output."""
    x = ops.parameter([rows, width], np.float32, name="x")
    x.output(0).set_names({"x"})
    y = ops.multiply(x, ops.constant(np.float32(factor)))
    y.output(0).set_names({"y"})
    s = ops.reduce_sum(x, ops.constant(np.array([1], np.int64)), keep_dims=True)
    s.output(0).set_names({"row_sum"})
    return ov.Model([y, s], [x], f"scale{factor}")


def concat_model(datatype: str) -> ov.Model:
    """out = concat([in, in], -1) on [?, 3] of one KServe datatype."""
    x = ops.parameter([-1, 3], DATATYPES[datatype], name="in")
    x.output(0).set_names({"in"})
    y = ops.concat([x, x], -1)
    y.output(0).set_names({"out"})
    return ov.Model([y], [x], f"concat_{datatype}")


def save_version(base: Path, version: int, model: ov.Model) -> Path:
    """Write ``model`` as ``base/<version>/model.xml`` atomically (a hot-reload poll never
    sees half a folder)."""
    tmp = base / f".tmp{version}"
    tmp.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
    tmp.rename(base / str(version))
    return base / str(version)


def wait_until(cond: Callable[[], bool], seconds: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


class Gate:
    """Holds a model version's inferences until ``open()``: makes queue and drain tests exact."""

    def __init__(self, version) -> None:
        self.version = version
        self.event = threading.Event()
        self.entered = threading.Semaphore(0)
        self._orig = version._execute

        def held(request, feeds):
            self.entered.release()
            assert self.event.wait(30), "gate never opened"
            return self._orig(request, feeds)

        version._execute = held

    def open(self) -> None:
        self.event.set()

    def close(self) -> None:
        self.event.set()
        self.version._execute = self._orig


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
