"""Named passes, optimization levels, and the pipeline that runs them with a report.

Levels as ONNX Runtime users know them: 0 none, 1 basic (folding, cleanup), 2 extended
(fusions and op recognition), 3 all (plus layout and device passes, which run inside
``compile_model``). A pass is a function ``Model -> Model`` registered by name; it may change
the model it is given (the pipeline hands it a private copy) and returns the result.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ember.errors import EmberError
from ember.graph.model import Model

log = logging.getLogger("ember.passes")

PassFn = Callable[[Model], Model]


@dataclass(frozen=True)
class PassInfo:
    name: str
    level: int
    fn: PassFn
    doc: str


_PASSES: dict[str, PassInfo] = {}

# The pipeline, in order. A pass runs when its level <= the requested level.
PIPELINE: list[str] = [
    "fold_shapes",
    "fold_constants",
    "fold_shape_chains",
    "eliminate_noops",
    "merge_reshapes",
    "merge_transposes",
    "eliminate_common_subexpressions",
    "fold_pad_into_conv",
    "fold_conv_batchnorm",
    "fold_conv_scale",
    "recognize_gelu",
    "recognize_layernorm",
    "recognize_swish",
    "recognize_hswish",
    "recognize_mish",
    "recognize_attention",
    "merge_transposes",
    "fold_constants",
    "eliminate_common_subexpressions",
    "mark_epilogue_groups",
    "eliminate_dead_code",
]

_MODULES = ("ember.passes.cleanup", "ember.passes.fusions", "ember.passes.shape_chains",
            "ember.passes.pad_fusion")


def register_pass(name: str, level: int) -> Callable[[PassFn], PassFn]:
    """Decorator: make ``fn`` the pass called ``name``, run from optimization ``level`` up."""
    def wrap(fn: PassFn) -> PassFn:
        _PASSES[name] = PassInfo(name, level, fn, (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return wrap


def _load() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def get_pass(name: str) -> PassInfo:
    _load()
    if name not in _PASSES:
        raise EmberError(f"ember: unknown pass '{name}'; passes: {', '.join(sorted(_PASSES))}")
    return _PASSES[name]


def passes() -> dict[str, PassInfo]:
    _load()
    return dict(_PASSES)


@dataclass
class PassRecord:
    name: str
    fired: int
    nodes_before: int
    nodes_after: int
    seconds: float


@dataclass
class OptimizationReport:
    """What the pipeline did: one record per pass run, and node counts before and after."""

    level: int
    records: list[PassRecord] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0

    def fired(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.name] = out.get(r.name, 0) + r.fired
        return out

    def format(self) -> str:
        lines = [f"optimization level {self.level}: {self.nodes_before} -> {self.nodes_after} nodes"]
        lines.append(f"  {'pass':<34}{'fired':>7}{'nodes':>16}{'ms':>9}")
        for r in self.records:
            lines.append(f"  {r.name:<34}{r.fired:>7}{r.nodes_before:>8} ->{r.nodes_after:>5}{r.seconds * 1e3:>9.1f}")
        return "\n".join(lines)


_fired: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("ember_pass_fired", default=None)


def note_fired(count: int) -> None:
    """Passes call this with how many rewrites they made (for the report)."""
    counter = _fired.get()
    if counter is not None:
        counter[0] += count


def _node_count(model: Model) -> int:
    return len(model.get_ordered_ops())


def optimize(model: Model, level: int = 2, *, report: OptimizationReport | None = None,
             disabled: Iterable[str] = (), copy: bool = True) -> Model:
    """Run the pipeline up to ``level`` on a copy of ``model`` (``copy=False`` works in place)."""
    if level not in (0, 1, 2, 3):
        raise EmberError(f"ember: optimization level must be 0, 1, 2 or 3, got {level}")
    _load()
    skip = set(disabled)
    unknown = skip - set(_PASSES)
    if unknown:
        raise EmberError(f"ember: unknown pass(es) {', '.join(sorted(unknown))}; passes: {', '.join(sorted(_PASSES))}")
    m = model.clone() if copy else model
    rep = report if report is not None else OptimizationReport(level)
    rep.level = level
    rep.nodes_before = _node_count(m)
    from ember import progress

    # a bar over the passes for big models (each pass walks the whole graph)
    steps = progress.bar(PIPELINE, len(PIPELINE), "optimizing", unit="pass",
                         min_total=0 if rep.nodes_before >= 2000 else len(PIPELINE) + 1)
    after = rep.nodes_before  # (nothing changes the graph between passes: each starts at the last one's count)
    # node counts per pass are a walk of the graph each: only for a report someone reads
    counting = report is not None or log.isEnabledFor(logging.DEBUG)
    for name in steps:
        info = _PASSES[name]
        if info.level > level or name in skip:
            continue
        before = after
        counter = [0]
        token = _fired.set(counter)
        t0 = time.perf_counter()
        try:
            m = info.fn(m)
        finally:
            _fired.reset(token)
        dt = time.perf_counter() - t0
        after = _node_count(m) if counting else -1
        rep.records.append(PassRecord(name, counter[0], before, after, dt))
        if counter[0]:
            log.debug("ember: pass %s fired %d times (%d -> %d nodes)", name, counter[0], before, after)
    rep.nodes_after = after if counting else _node_count(m)
    return m
