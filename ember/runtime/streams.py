"""Streams: how a performance hint becomes executors, and the executors themselves.

A *stream* is one independent executor of a compiled model: its own executable (or a shared
one when the device's executables are thread safe) and, for asynchronous requests, its own
worker thread. Streams run at the same time for real when the device's kernels release the
GIL (the CPU device); on the numpy REFERENCE device they still overlap wherever numpy does.

The mapping (``plan_streams``), with ``cores`` the CPUs this process may use:

==========================  ===============================  ====================  =================
hint / property             streams                          optimal requests      threads/stream
==========================  ===============================  ====================  =================
LATENCY (default)           1                                1                     threads or cores
THROUGHPUT                  min(cores, NUM_REQUESTS or ∞)    streams               threads / streams
                            (cores // threads if threads)
CUMULATIVE_THROUGHPUT       as THROUGHPUT (AUTO: one         streams               as THROUGHPUT
                            executor per device, MULTI)
NUM_STREAMS = n             n (overrides the hint)           n                     threads / n
NUM_STREAMS = AUTO          as THROUGHPUT                    streams               as THROUGHPUT
NUM_STREAMS = NUMA          NUMA nodes (1 here)              streams               threads / streams
==========================  ===============================  ====================  =================

``threads`` is ``INFERENCE_NUM_THREADS`` (0 = all cores; set, it also caps the streams, as
OpenVINO's CPU plugin does); every count is at least 1 and a device may cap streams with
``Device.max_streams``.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ember.runtime.properties import CompileConfig, PerformanceMode, StreamsNum


def available_cores() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def numa_nodes() -> int:
    try:
        nodes = [n for n in os.listdir("/sys/devices/system/node") if n.startswith("node") and n[4:].isdigit()]
        return max(1, len(nodes))
    except OSError:
        return 1


@dataclass(frozen=True)
class StreamPlan:
    """What a compiled model runs with: streams, the request count to use, threads per stream."""

    streams: int
    optimal_requests: int
    threads_per_stream: int

    @property
    def total_threads(self) -> int:
        return self.streams * self.threads_per_stream


def plan_streams(config: CompileConfig, cores: int | None = None, max_streams: int | None = None) -> StreamPlan:
    """Turn hints and explicit properties into a ``StreamPlan`` (see the module docstring)."""
    cores = available_cores() if cores is None else max(1, cores)
    threads = config.inference_num_threads or cores
    n = config.num_streams
    if n is None or n == int(StreamsNum.AUTO):
        if n is None and config.performance_mode is PerformanceMode.LATENCY:
            streams = 1
        else:
            streams = cores // threads if config.inference_num_threads else cores
            if config.num_requests:
                streams = min(streams, config.num_requests)
    elif n == int(StreamsNum.NUMA):
        streams = numa_nodes()
    else:
        streams = n
    if config.inference_num_threads:  # as OpenVINO's CPU plugin: never more streams than threads
        streams = min(streams, config.inference_num_threads)
    streams = max(1, streams)
    if max_streams:
        streams = min(streams, max_streams)
    return StreamPlan(streams=streams, optimal_requests=streams, threads_per_stream=max(1, threads // streams))


# -- executors ---------------------------------------------------------------------------------

_STOP = object()


def _worker(jobs: queue.SimpleQueue) -> None:
    # The thread holds only the job queue, never the compiled model, so that a compiled model
    # nobody references can be collected (which stops this thread, see StreamExecutor.close).
    while True:
        job = jobs.get()
        if job is _STOP:
            return
        try:
            job()
        finally:
            del job


class StreamExecutor:
    """A set of streams: ``run`` borrows a free stream on the calling thread, ``submit`` queues a
    job for the worker threads (one per stream, started on first use, daemon threads).

    An executable is used by one thread at a time: each stream owns one (the same object for
    all streams when the device's executables are thread safe).
    """

    def __init__(self, executables: Sequence[Any], name: str) -> None:
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for exe in executables:
            self._free.put(exe)
        self.size = len(executables)
        self._name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None,
            guard: Any = None) -> list[np.ndarray]:
        """Run on the calling thread with the first stream that is free (blocks until one is).
        ``guard`` (a context manager) brackets the run alone, inside the stream's borrowing:
        cancellation may interrupt what it brackets, never the borrowing."""
        exe = self._free.get()
        try:
            if guard is None:
                return exe.run(inputs, profile)
            with guard:
                return exe.run(inputs, profile)
        finally:
            self._free.put(exe)

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` for a worker thread; it should call ``run`` itself."""
        with self._lock:
            if self._closed:
                from ember.errors import EmberError

                raise EmberError("ember: this compiled model has been closed")
            if not self._threads:
                for i in range(self.size):
                    t = threading.Thread(target=_worker, args=(self._jobs,), daemon=True,
                                         name=f"ember-stream-{self._name}-{i}")
                    t.start()
                    self._threads.append(t)
        self._jobs.put(job)

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def close(self, wait: bool = True) -> None:
        """Stop the worker threads after the jobs already queued (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(_STOP)
        if wait:
            me = threading.current_thread()
            for t in threads:
                if t is not me:
                    t.join(timeout=30)
