"""Helpers of the serve tests: small models built with ember.opset and saved as IR, bounded waits,
and a gate that holds a model version's inferences."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import ember as ov
import ember.opset8 as ops
from ember.serve.protocol import DATATYPES


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
