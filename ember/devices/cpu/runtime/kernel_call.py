"""A kernel call bound to its buffers: what a lowered plan stores for each native step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ember.devices.cpu.llvm.context import ContextLayout
from ember.devices.cpu.runtime.threadpool import ThreadPool, default_pool


@dataclass
class BoundKernel:
    """A kernel call with every address fixed: ``fn(ctx, task)`` for task in ``range(n_tasks)``.

    This is what a lowered plan stores per op: :meth:`run` is one ``parallel_for``; the
    native plan runner uses ``task``, ``ctx.ctypes.data`` and ``n_tasks`` directly. ``keep``
    holds the arrays whose addresses are in ``ctx`` (weights, bias), so they stay alive.
    ``layout`` names the context's words; its pointer words are the binding slots a plan
    re-points when a kernel reads a model input in place. ``finer`` (kernels whose split is a
    block plan in their context: the implicit GEMMs) gives, for a thread count, a copy of ``ctx``
    with a block plan made for that many threads and its task count (None when that plan has
    no more tasks): the same work in smaller tasks, which a plan runs on a busy machine.
    """

    task: int
    ctx: np.ndarray
    n_tasks: int
    num_threads: int
    keep: tuple = ()
    layout: ContextLayout = field(kw_only=True)
    finer: Callable[[int], tuple[np.ndarray, int] | None] | None = field(default=None, kw_only=True)

    @property
    def pointer_words(self) -> tuple[int, ...]:
        """Indices of the context words that hold buffer addresses."""
        return self.layout.pointer_words

    def run(self, pool: ThreadPool | None = None) -> None:
        """Run it (the GIL is released while it runs)."""
        if self.n_tasks:
            (pool or default_pool()).parallel_for(self.task, self.ctx.ctypes.data, self.n_tasks, self.num_threads)
