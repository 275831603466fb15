"""The CPU device plugin: lowers a Model to a plan of native kernels (see ``lowering``).

``compile`` runs the optimizer (level 2) and the device's passes, then lowers the model to a
:class:`~ember.devices.cpu.runtime.plan.Program` (weights packed once, memory planned once) and binds
it to an arena and a native thread pool.

Dynamic input shapes: the optimizer and the device's passes run once, at compile time, on the
dynamic model. A new input shape costs a *specialization*: the transformed model cloned with
static inputs (types inferred once per distinct node signature: the layers of a transformer
share them), what those shapes make constant folded (``_fold_shape_reads``, one walk; the
``SPECIALIZE_PASSES`` if it declines; the whole device passes only for models with
``FakeQuantize``, as int8 needs static shapes), lowering with the weights packed by the first
lowering (:class:`~ember.devices.cpu.lowering.driver.SharedWeights`), a memory plan and
binding; kernels are shared by signature in the process. Plans are kept in an LRU of
at most ``MAX_SHAPE_PLANS`` shapes and ``MAX_SHAPE_PLAN_BYTES`` of memory they own; all plans
of one executable run in one arena (an executable runs one inference at a time), grown when a
larger shape comes. ``dynamic_stats(compiled)`` reports the counters (docs/cpu-dynamic-shapes.md).
Shape-generic plans (``runtime/generic.py``, ``GENERIC_PLANS``): once two plans lowered this way
share one structure, a new shape inside the range they verified gets the first plan's ops with
tensors of its sizes (no clone, no lowering), checked against every plan lowered per shape.

Threads: each executable (one per stream) leases a share of the process's native
:class:`ThreadPool` for the stream's ``INFERENCE_NUM_THREADS`` (``lease_pool``: compiled models
with the same thread count and pinning share one set of workers, as OpenVINO's share one
arena; stream k of a model takes pool slot k, so one model's streams never share); its kernels
run with the GIL released, so streams on separate Python threads run in parallel. Executables
are not thread safe: the runtime gives each stream its own (``clone``, which shares the packed
weights).

Precision: f32 by default. ``INFERENCE_PRECISION_HINT=bf16`` on a CPU with AVX512_BF16 runs
the weight GEMMs and convolutions in bf16 (f32 accumulation; depthwise convolutions,
attention, elementwise and normalization stay f32, as in OpenVINO). Without AVX512_BF16,
or for f16, the model runs in f32 with a warning. The compiled model's
``INFERENCE_PRECISION_HINT`` reports what really runs, never a precision it does not use.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.devices.base import Device
from ember.errors import EmberError, InferenceError
from ember.graph.core_ops import Constant
from ember.graph.model import Model
from ember.graph.types import Type

if TYPE_CHECKING:
    from ember.runtime.properties import CompileConfig  # the interface's type only: devices read its fields

log = logging.getLogger("ember.cpu")

_TRANSFORMED = "ember_cpu_passes"
#: at most this many input shapes keep a plan (per compiled model, and per executable)
MAX_SHAPE_PLANS = 256
#: ... and the memory those plans own (packed weights and the arena are shared, not counted)
MAX_SHAPE_PLAN_BYTES = 128 << 20
#: the passes a specialization to static input shapes runs (the optimizer ran at compile time):
#: what static shapes make foldable (ShapeOf chains, Reshape targets), and the cleanup after it
SPECIALIZE_PASSES = ("fold_shapes", "fold_constants", "fold_shape_chains", "eliminate_noops", "merge_reshapes",
                     "merge_transposes", "fold_constants", "eliminate_dead_code")
#: op types whose value static input shapes can fold (without them, a specialization folds nothing)
_SHAPE_READERS = frozenset({"ShapeOf"})
#: op types that make a specialization run the full device passes again (int8 needs static shapes)
_FULL_PASSES_FOR = frozenset({"FakeQuantize"})
#: a shared arena grows to at least this multiple of its old size (few re-bindings)
_ARENA_GROWTH = 1.5
#: shape-generic plans (``runtime/generic.py``): a new input shape inside the range the first
#: plans verified reuses a plan lowered for another shape (no clone, no lowering); off: every
#: new shape is lowered (``EMBER_CPU_GENERIC_PLANS=0``, for A/B)
GENERIC_PLANS = os.environ.get("EMBER_CPU_GENERIC_PLANS", "1") != "0"
#: models whose specializations run the full device passes (int8: FakeQuantize) get
#: shape-generic plans too (their int8 GEMM and quantize binders take any row count); off:
#: every new shape runs the passes and is lowered (A/B)
GENERIC_INT8 = True


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class CPUExecutable:
    """A model compiled for the CPU device (one stream's executor; not thread safe)."""

    thread_safe = False
    execution_devices = ["CPU"]

    def __init__(self, model: Model, threads: int, precision: Type, programs: _Programs | None = None,
                 weights: Any = None, pin: bool | None = None, slot: int = 0) -> None:
        from ember.devices.cpu.runtime.threadpool import lease_pool

        self.model = model
        self.threads = threads
        self.precision = precision
        self.exec_type = "cpu"
        self._programs = programs or _Programs(model, threads, "bf16" if precision is Type.bf16 else "f32", weights)
        self.pin = pin
        #: this executable's share of the process's pool for its thread count (stream k: slot k)
        self.pool = lease_pool(threads, pin=pin, slot=slot)
        self._release_pool = weakref.finalize(self, self.pool.close)
        self._instances: OrderedDict[tuple, Any] = OrderedDict()
        self._params = model.get_parameters()
        self._static = self._programs.static
        #: one arena for every plan of this executable (it runs one inference at a time)
        self._arena: np.ndarray | None = None
        self.arena_growths = 0
        self.bind_seconds = 0.0
        if self._static:
            self._instances[()] = self._bind(self._programs.get(()))

    def _bind(self, program: Any) -> Any:
        """``program`` bound to this executable's pool and arena (grown first if too small; the
        plans bound to the old arena are dropped then, and bound again when next used)."""
        from ember.devices.cpu.runtime.instance import instantiate
        from ember.devices.cpu.runtime.memory import ALIGN, aligned_empty, plan_memory

        if program.arena_bytes == 0 and any(t.kind == "value" and t.arena for t in program.tensors):
            plan_memory(program)
        need = max(program.arena_bytes, ALIGN)
        if self._arena is None or self._arena.nbytes < need:
            if self._arena is not None:
                need = max(need, int(self._arena.nbytes * _ARENA_GROWTH))
                self._instances.clear()
                self.arena_growths += 1
            self._arena = None  # freed before the larger one is taken
            self._arena = aligned_empty(need, np.uint8)
        t0 = time.perf_counter()
        inst = instantiate(program, self.pool, self._arena)
        self.bind_seconds += time.perf_counter() - t0
        return inst

    @property
    def inference_precision(self) -> Type:
        """bf16 when asked for and the heavy kernels (GEMMs, convolutions) run in bf16, else f32."""
        prog = self.program
        if self.precision is Type.bf16 and (prog is None or prog.stats.get("bf16_ops")):
            return Type.bf16
        return Type.f32

    @property
    def exec_types(self) -> dict[str, str]:
        """Op name -> how it runs, for ops not run by the f32 kernels (``exec_type``): the int8
        kernels report ``jit_<isa>[_vnni]_I8``, as OpenVINO's profiling does."""
        prog = self.program
        return dict(prog.stats.get("exec_types", {})) if prog is not None else {}

    @property
    def program(self) -> Any:
        """The plan for the static input shapes (or the last one used)."""
        return next(reversed(self._instances.values())).program if self._instances else None

    def _instance(self, inputs: Sequence[np.ndarray]) -> Any:
        if self._static:
            inst = self._instances[()]
            for p, x, t in zip(self._params, inputs, inst.program.inputs):
                if x.shape != t.shape:
                    raise InferenceError(f"ember: input '{p.friendly_name}' has shape {list(x.shape)}, the model "
                                         f"expects {list(t.shape)}")
            return inst
        key = tuple(tuple(x.shape) for x in inputs)
        inst = self._instances.get(key)
        if inst is not None and not self._programs.touch(key):  # its plan left the shared cache
            del self._instances[key]
            inst = None
        if inst is None:
            with _collector_paused():
                prog = self._programs.get(key)
                try:
                    inst = self._bind(prog)
                except Exception as e:
                    if prog.stats.get("generic_made_bytes") is None:
                        raise
                    # a shape-generic plan that does not bind (never seen in the checks): lower the shape
                    inst = self._bind(self._programs.lower_instead(key, e))
            self._instances[key] = inst
            cached = self._programs.keys()
            for old in [k for k in self._instances if k not in cached]:  # plans the budget evicted
                del self._instances[old]
            while len(self._instances) > MAX_SHAPE_PLANS:
                self._instances.popitem(last=False)
        else:
            self._instances.move_to_end(key)
        return inst

    def run(self, inputs: Sequence[np.ndarray], profile: dict[str, float] | None = None) -> list[np.ndarray]:
        if len(inputs) != len(self._params):
            raise InferenceError(f"ember: the model takes {len(self._params)} inputs, got {len(inputs)}")
        return self._instance(inputs).run(inputs, profile)

    def clone(self) -> CPUExecutable:
        """Another executor of the same plans (shared packed weights, own arena; the next stream's
        pool: streams of one model never share workers)."""
        return CPUExecutable(self.model, self.threads, self.precision, self._programs, pin=self.pin,
                             slot=self._programs.next_slot())

    def close(self) -> None:
        self._release_pool()


class _Programs:
    """Lowered programs of one model, shared by the executables of its streams: one per input
    shape for a dynamic model (an LRU bounded in count and owned bytes), with the packed weights
    shared by all of them."""

    def __init__(self, model: Model, threads: int, precision: str = "f32", weights: Any = None) -> None:
        from ember.devices.cpu.lowering.driver import SharedWeights

        self.model = model
        self.threads = threads
        self.precision = precision
        self.static = all(p.get_partial_shape().is_static for p in model.get_parameters())
        #: packed weights, shared with control-flow bodies (``weights``: the outer model's)
        self.weights = weights if weights is not None else SharedWeights()
        ops = model.get_ordered_ops()
        #: the model's nodes in order, walked once (every specialization clones them in this order)
        self._order = ops
        self._signatures: dict[int, Any] = {}  # per node of the model, for the copies' inference
        #: one copy of each constant of the model, shared by every specialization's graph (made once;
        #: its readers are disconnected after each lowering, so no graph keeps another alive)
        self._consts: dict[int, Constant] = {}
        self._full_passes = any(n.type_name in _FULL_PASSES_FOR for n in ops)
        self._shape_reads = any(n.type_name in _SHAPE_READERS for n in ops)
        #: positions in ``_order`` of the nodes a shape can fold (a ShapeOf, or a node reading one of them)
        self._foldable = _downstream_of_shape_reads(ops) if self._shape_reads else []
        self._model_arrays = {id(n.data) for n in ops if isinstance(n, Constant)}
        self._shared_ids: set[int] | None = None
        self._shared_count = -1
        self._nodes = len(ops)  # a specialization's node count, about
        self._isa: Any = None
        self._lock = threading.Lock()
        self._slots = 0  # streams made by CPUExecutable.clone (each takes the next pool slot)
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._owned: dict[tuple, int] = {}
        self._reach_tried: set[tuple] = set()  # shapes lowered only to widen the template's range
        #: plans made at new shapes from one lowered for another (None: every shape is lowered)
        self.template: Any = None
        if GENERIC_PLANS and not self.static and (GENERIC_INT8 or not self._full_passes):
            from ember.devices.cpu.runtime.generic import PlanTemplate

            self.template = PlanTemplate(None)
        #: what specializations cost: counters and seconds per phase (``dynamic_stats``)
        self.stats: dict[str, Any] = {"specializations": 0, "optimizer_runs": 0, "evictions": 0, "folded": 0,
                                      "generic": 0, "generic_reach": 0,
                                      "seconds": {"clone": 0.0, "passes": 0.0, "lowering": 0.0, "memory": 0.0,
                                                  "generic": 0.0, "generic_checks": 0.0}}

    def get(self, key: tuple) -> Any:
        with self._lock:
            prog = self._cache.get(key)
            if prog is None:
                with _collector_paused():
                    prog, nodes = self._lower(key)
                self._cache[key] = prog
                made = prog.stats.get("generic_made_bytes")
                if made is not None:  # a shape-generic plan: its ops (and what they hold) are the base plan's
                    self._owned[key] = made + _TENSOR_BYTES * len(prog.tensors) + _OP_BYTES * len(prog.ops)
                else:
                    self._owned[key] = _owned_bytes(prog, self._shared_arrays(), nodes) if key else 0
                self._evict()
            else:
                self._cache.move_to_end(key)
            return prog

    def next_slot(self) -> int:
        """The pool slot of the next stream (1, 2, ...; the first executable has slot 0)."""
        with self._lock:
            self._slots += 1
            return self._slots

    def keys(self) -> set[tuple]:
        with self._lock:
            return set(self._cache)

    def touch(self, key: tuple) -> bool:
        """Mark the plan for ``key`` used (LRU order); False if it is no longer cached (an
        executable then drops its binding too, so that the budget holds)."""
        with self._lock:
            if key not in self._cache:
                return False
            self._cache.move_to_end(key)
            return True

    def _evict(self) -> None:
        while len(self._cache) > 1 and (len(self._cache) > MAX_SHAPE_PLANS
                                        or sum(self._owned.values()) > MAX_SHAPE_PLAN_BYTES):
            key, _ = self._cache.popitem(last=False)
            self._owned.pop(key, None)
            self.stats["evictions"] += 1

    def _shared_arrays(self) -> set[int]:
        if self._shared_ids is None or self._shared_count != len(self.weights):
            found: dict[int, np.ndarray] = {}
            packed = list(self.weights.values())
            _arrays_in(packed, 3, found)
            # the packed objects too: a plan's walk stops at them (their arrays are shared)
            self._shared_ids = self._model_arrays | set(found) | {id(v) for v in packed}
            self._shared_count = len(self.weights)
        return self._shared_ids

    @property
    def owned_bytes(self) -> int:
        """Memory the cached plans own (beyond the shared weights and arenas)."""
        return sum(self._owned.values())

    def _lower(self, key: tuple) -> tuple[Any, int]:
        """The plan for input shapes ``key`` (``()``: the model as it is), and the node count of
        the graph it was lowered from (a plan's kernel binders may keep that graph alive)."""
        from ember.devices.cpu.runtime.memory import plan_memory

        seconds = self.stats["seconds"]
        t0 = time.perf_counter()
        if key and self.template is not None:
            try:
                made = self.template.program(key)
            except Exception as e:  # noqa: BLE001 - never worse than lowering the shape
                self._template_failed(e)
                made = None
            if made is None:
                made = self._reach_and_make(key)
                t0 = time.perf_counter()
            if made is not None:  # a shape-generic plan: the template's ops at these sizes
                plan_memory(made)
                self.stats["generic"] += 1
                seconds["generic"] += time.perf_counter() - t0
                return made, 0
        return self._lower_per_shape(key)

    def _reach_and_make(self, key: tuple) -> Any:
        """At input shapes ``key`` just outside the template's verified range (a sentence longer
        or shorter than any checked): lower and check the shapes the template proposes farther out
        (:meth:`PlanTemplate.reach`) instead, so one check covers this shape and the ones between;
        then the plan for ``key`` made from the template. None when there is no such shape, it is
        outside the model's declared bounds, or its check did not pass (``key`` is lowered then)."""
        template = self.template
        try:
            far = template.reach(key)
        except Exception as e:  # noqa: BLE001 - never worse than lowering the shape
            self._template_failed(e)
            return None
        if far is None or far in self._reach_tried or not _within_bounds(self.model, far):
            return None
        self._reach_tried.add(far)
        self.stats["generic_reach"] += 1
        try:
            self._lower_per_shape(far)  # (observed as a sample; the plan itself is not kept)
        except Exception as e:  # noqa: BLE001 - shapes nobody asked for: the model may not take them
            log.info("CPU: shape-generic plans: input shapes %s not lowered (%s: %s)", list(far), type(e).__name__, e)
            template.failed.append(far)
            return None
        try:
            return template.program(key)
        except Exception as e:  # noqa: BLE001 - never worse than lowering the shape
            self._template_failed(e)
            return None

    def _lower_per_shape(self, key: tuple) -> tuple[Any, int]:
        """The plan lowered for input shapes ``key``, observed by the template as a sample."""
        from ember.devices.cpu.llvm.isa import host_isa
        from ember.devices.cpu.lowering.driver import Lowering
        from ember.devices.cpu.runtime.memory import plan_memory

        seconds = self.stats["seconds"]
        model, order = self.model, None
        try:
            if key:
                self.stats["specializations"] += 1
                model, order = self._specialize(key)
            t0 = time.perf_counter()
            if self._isa is None:  # once per compiled model (it asks LLVM for the host's features)
                self._isa = host_isa()
            prog = Lowering(model, self.threads, self._isa, self.precision, compile_body=self._compile_body,
                            weights=self.weights, order=order).run()
        finally:
            _disconnect(self._consts.values())
        t1 = time.perf_counter()
        plan_memory(prog)
        seconds["lowering"] += t1 - t0
        seconds["memory"] += time.perf_counter() - t1
        self.stats["weights_packed"], self.stats["weights_reused"] = self.weights.packed, self.weights.reused
        if key and self.template is not None and model is not self.model:
            t2 = time.perf_counter()
            try:
                self.template.observe(key, prog)  # a sample: the template is fitted and checked against it
            except Exception as e:  # noqa: BLE001 - never worse than lowering every shape
                self._template_failed(e)
            seconds["generic_checks"] += time.perf_counter() - t2
        return prog, self._nodes if model is not self.model else 0

    def lower_instead(self, key: tuple, e: Exception) -> Any:
        """The plan for ``key`` lowered per shape, replacing the shape-generic one that failed to
        bind with ``e`` (the template is turned off)."""
        with self._lock:
            self._template_failed(e)
            self._cache.pop(key, None)
            self._owned.pop(key, None)
        return self.get(key)

    def _template_failed(self, e: Exception) -> None:
        """A shape-generic plan's internal error: logged, and the model's shapes lowered from now on."""
        log.warning("CPU: shape-generic plans off for '%s' after an internal error (%s: %s); new input shapes "
                    "are lowered", self.model.friendly_name, type(e).__name__, e)
        self.template.off = f"internal error: {type(e).__name__}: {e}"
        self.template.block(self.template.off)

    def _specialize(self, key: tuple) -> tuple[Model, list[Any] | None]:
        """The transformed model with static input shapes ``key``, folded for them, and its
        nodes in topological order when known without walking it (None: not known)."""
        from ember.devices.cpu.lowering.passes import device_passes
        from ember.passes import get_pass

        seconds = self.stats["seconds"]
        t0 = time.perf_counter()
        try:
            # the passes may change constants in place: their graph gets constants of its own
            consts = None if self._full_passes else self._consts
            model, nodes = _clone_with_shapes(self.model, key, self._order, self._signatures, consts)
            order: list[Any] | None = nodes
            t1 = time.perf_counter()
            seconds["clone"] += t1 - t0
            if self._full_passes:
                self.stats["optimizer_runs"] += 1
                model, order = device_passes(model), None
            elif self._shape_reads:  # without ShapeOf, static shapes make nothing foldable
                order = []
                folded = _fold_shape_reads(model, nodes, order, [nodes[i] for i in self._foldable])
                if folded < 0:  # the one-walk fold declined: the passes do it, on a graph of its own
                    _disconnect(self._consts.values())
                    model, _ = _clone_with_shapes(self.model, key, self._order, self._signatures)
                    order = None
                    for name in SPECIALIZE_PASSES:
                        model = get_pass(name).fn(model)
                self.stats["folded"] += max(folded, 0)
            seconds["passes"] += time.perf_counter() - t1
        except EmberError as e:  # e.g. an If branch that is invalid for these shapes
            log.info("CPU: cannot specialize '%s' to input shapes %s (%s); running it with dynamic shapes",
                     self.model.friendly_name, list(key), e)
            return self.model, None
        return model, order

    def _compile_body(self, body: Model) -> CPUExecutable:
        """An executable for a control-flow body (an If branch) with this model's settings and
        packed weights (a body compiled again for another outer shape reuses them)."""
        return CPUExecutable(body, self.threads, Type.bf16 if self.precision == "bf16" else Type.f32,
                             weights=self.weights)


def _within_bounds(model: Model, key: tuple) -> bool:
    """Whether input shapes ``key`` fit the model's declared input shapes (ranks, static and
    bounded dimensions)."""
    params = model.get_parameters()
    if len(params) != len(key):
        return False
    for p, shp in zip(params, key):
        ps = p.get_partial_shape()
        if ps.rank.is_dynamic:
            continue
        if len(ps) != len(shp):
            return False
        if not all(d.contains(n) for d, n in zip(ps, shp)):
            return False
    return True


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a plan is made (restored after, as it was).

    A specialization allocates tens of thousands of objects (the graph copy, the plan), which
    trigger collections of every generation meanwhile, each walking every object the process
    holds, the plans cached before included. Paused, the new objects are looked at by the next
    collection once, as they are at the end."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _clone_with_shapes(model: Model, shapes: tuple, order: list[Any] | None = None,
                       signatures: dict[int, Any] | None = None,
                       consts: dict[int, Constant] | None = None) -> tuple[Model, list[Any]]:
    """A copy of ``model`` whose inputs have the static ``shapes`` (constant data shared), and
    its nodes in topological order. ``order``: the model's own ``get_ordered_ops()``, if known
    (the model is not walked again); ``signatures``: a dict this function fills, kept by the
    caller from one copy to the next (per node, :func:`_node_entry`: its op and attributes made
    hashable, and its constant inputs' part of the key, once; None: the node is always inferred);
    ``consts``: copies of the model's constants kept by the caller from one copy to the next
    (filled here), used instead of new ones: the caller disconnects their readers
    (:func:`_disconnect`) once it is done with the copy.

    Types are inferred as the copy is made, once per distinct node *signature*: a node of the same
    op, attributes and input types and shapes as one inferred before in this copy (the same
    sublayer of the next transformer layer) takes that node's output types (``_infer_key``)."""
    import copy

    from ember.graph.node import Node, Output

    base_clone = Node.clone_with_inputs
    params = model.get_parameters()
    index = {id(p): i for i, p in enumerate(params)}
    mapping: dict[int, Any] = {}
    nodes: list[Any] = []
    if signatures is None:
        signatures = {}
    inferred: dict[Any, list[tuple[Type, Any]]] = {}
    shape_valued: set[int] = set()  # copied nodes whose value static shapes may make known
    for node in (order if order is not None else model.get_ordered_ops()):
        i = index.get(id(node))
        if i is not None:
            new = node.clone_with_inputs([])
            new.set_partial_shape(list(shapes[i]))
        elif isinstance(node, Constant) and type(node).clone_with_inputs is base_clone:  # its data's types
            twin: Any = consts.get(id(node)) if consts is not None else None
            if twin is None:
                twin = node.clone_with_inputs([], [(o.element_type, o.partial_shape) for o in node.outputs()])
                if consts is not None:
                    consts[id(node)] = twin
            new = twin
        else:
            inputs = [Output(mapping[id(o.node)], o.index) for o in node.input_values()]
            entry = signatures.get(id(node), False)
            if entry is False:
                entry = signatures[id(node)] = _node_entry(node)
            key = _infer_key(entry, inputs, shape_valued) if entry is not None else None
            outs = inferred.get(key) if key is not None else None
            if outs is not None:
                new = node.clone_with_inputs(inputs, outs)
            else:
                new = node.clone_with_inputs(inputs)
                if key is not None:
                    inferred[key] = [(o.element_type, o.partial_shape) for o in new.outputs()]
            if new.type_name == "ShapeOf" or (inputs and all(id(o.node) in shape_valued for o in inputs)):
                shape_valued.add(id(new))
        if isinstance(new, Constant):
            shape_valued.add(id(new))
        mapping[id(node)] = new
        nodes.append(new)
    out = Model([mapping[id(r)] for r in model.get_results()], [mapping[id(p)] for p in params],
                model.friendly_name, validate=False)
    out.name = model.name
    out.rt_info = copy.deepcopy(model.rt_info)
    return out, nodes


def _disconnect(nodes: Any) -> None:
    """Forget every reader of ``nodes``' outputs (shared constant copies: the graph that read
    them is done with; its nodes keep their own input links)."""
    for node in nodes:
        for port in node.outputs():
            for target in port.targets:
                port.remove_target_input(target)


#: ops whose output types never depend on the values of a large constant input (only on its
#: type and shape): their weights are keyed by shape, so that the layers of a model share them
_VALUE_BLIND = frozenset({"MatMul", "Add", "Subtract", "Multiply", "Divide", "Maximum", "Minimum", "Power",
                          "SquaredDifference", "Convolution", "GroupConvolution", "ConvolutionBackpropData",
                          "Gather", "Select", "PRelu", "FakeQuantize", "Convert"})
#: constants of at most this many elements are keyed by value (shape-like inputs: axes, targets)
_KEYED_ELEMENTS = 64


def _frozen(v: Any) -> Any:
    """``v`` made hashable (arrays by value); raises TypeError for what cannot be."""
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            raise TypeError("object array")
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, (list, tuple)):
        return tuple(_frozen(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _frozen(x)) for k, x in v.items()))
    hash(v)
    return v


def _node_signature(node: Any) -> Any:
    """What a node's inferred types depend on besides its inputs (op class, attributes),
    hashable; None for nodes whose inference is always run: constants (their types are their
    data's), nodes without inputs, results (rt_info can name what they hold), nodes with bodies
    or cloning themselves their own way. Inference reads no rt_info elsewhere (rt_info such as
    ``fused_group`` differs from layer to layer: it is not in the key)."""
    from ember.graph.core_ops import Result
    from ember.graph.node import Node

    if isinstance(node, (Constant, Result)) or not node.input_values() or node.bodies() or type(node).clone_with_inputs is not Node.clone_with_inputs:
        return None
    try:
        return (type(node), _frozen(node.get_attributes()))
    except TypeError:
        return None


def _node_entry(node: Any) -> tuple[Any, tuple[Any, ...]] | None:
    """What :func:`_infer_key` needs of a node of the model, made once per model: its signature
    (:func:`_node_signature`) and, per input, the part of the key that only depends on the model
    (a constant input: type, shape and value, the value of a small one, a large one by identity
    or, for the ``_VALUE_BLIND`` ops, not at all) or None (an input computed in the copy: looked
    at per copy). None: the node's types are always inferred (no signature; a constant of strings
    or sequences)."""
    sig = _node_signature(node)
    if sig is None:
        return None
    blind = sig[0].type_name in _VALUE_BLIND
    parts: list[Any] = []
    for o in node.input_values():
        src = o.node
        if not isinstance(src, Constant):
            parts.append(None)
            continue
        data = src.data
        if data.dtype == object or o.element_type.name in ("string", "sequence"):
            return None
        value: Any = None
        if data.size <= _KEYED_ELEMENTS:
            value = (data.dtype.str, data.tobytes())
        elif not blind:
            value = id(data)  # the copies share one constant copy (or equal data) per constant of the model
        parts.append((o.element_type, o.partial_shape, value))
    return sig, tuple(parts)


def _infer_key(entry: tuple[Any, tuple[Any, ...]], inputs: list[Any], shape_valued: set[int]) -> Any:
    """The key under which a node's inferred output types are shared in one copy: its signature
    and, per input, type and shape, and the value of a small constant (a large one by identity,
    or by shape for the ``_VALUE_BLIND`` ops): ``entry`` (:func:`_node_entry`) holds the parts of
    the constant inputs. None (infer it) when an input's value may come from the static shapes
    (a ShapeOf chain: its value is not in the key), or holds strings or sequences."""
    sig, fixed = entry
    parts: list[Any] = [sig]
    for o, part in zip(inputs, fixed):
        if part is None:
            if id(o.node) in shape_valued:
                return None
            et = o.element_type
            if et.name in ("string", "sequence"):
                return None
            part = (et, o.partial_shape, None)
        parts.append(part)
    return tuple(parts)


_FOLD_ELEMENTS = 1 << 16


def _downstream_of_shape_reads(order: list[Any]) -> list[int]:
    """Positions in ``order`` (topological) of the ShapeOf nodes and of the nodes that read one of
    them directly or through others: the only nodes :func:`_fold_shape_reads` can fold."""
    reached: set[int] = set()
    out = []
    for i, node in enumerate(order):
        if node.type_name in _SHAPE_READERS or any(id(o.node) in reached for o in node.input_values()):
            reached.add(id(node))
            out.append(i)
    return out


def _fold_shape_reads(model: Model, order: list[Any] | None = None, after: list[Any] | None = None,
                      candidates: list[Any] | None = None) -> int:
    """Fold what static input shapes make constant: each ShapeOf of a static tensor, and the
    nodes downstream of it whose inputs are all constant (``Reshape`` targets, ``Broadcast``
    shapes, ``Range`` limits...), in one walk of the graph; values of more than
    ``_FOLD_ELEMENTS`` elements stay computed. Returns how many ports became constants. The
    transformed model has every other constant subgraph folded already, so this gives what
    ``SPECIALIZE_PASSES`` give, cheaply; it returns -1 (changing nothing) on a graph it does not
    expect (a node whose reference kernel fails), and the passes run instead. ``order``: the
    model's nodes in topological order, if known (the clone gives them: no walk of the graph);
    ``after``, if given, receives the nodes in topological order after the fold (the constants
    made first, the folded nodes left out; nodes that only they read stay, as lowering prunes
    what no output needs); ``candidates``: the nodes of ``order`` that read a ShapeOf, directly or
    not, in order (:func:`_downstream_of_shape_reads`; no other node can fold), if known."""
    from ember.graph.core_ops import Parameter
    from ember.passes.matcher import replace_output

    values: dict[tuple[int, int], np.ndarray] = {}
    folded: list[Any] = []
    if order is None:
        order = model.get_ordered_ops()
    for node in (order if candidates is None else candidates):
        ins = node.input_values()
        if node.type_name == "ShapeOf":
            ps = ins[0].partial_shape
            if ps.is_static:
                values[(id(node), 0)] = np.asarray([int(d) for d in ps.to_shape()], node.output(0).element_type.dtype)
                folded.append(node)
            continue
        if not ins or isinstance(node, Parameter) or not node.foldable or node.bodies() \
                or not any((id(o.node), o.index) in values for o in ins):
            continue
        if not all(o.partial_shape.is_static and math.prod(int(d) for d in o.partial_shape.to_shape()) <= _FOLD_ELEMENTS
                   for o in node.outputs()):
            continue
        args = []
        for o in ins:
            v = values.get((id(o.node), o.index))
            if v is None and isinstance(o.node, Constant):
                v = o.node.data
            if v is None:
                break
            args.append(v)
        else:
            try:
                outs = node.evaluate(args)
            except Exception:  # noqa: BLE001 - let the passes decide
                return -1
            for i, v in enumerate(outs):
                values[(id(node), i)] = np.asarray(v)
            folded.append(node)
    done = {id(n) for n in folded}
    count = 0
    made: list[Any] = []
    for node in folded:
        for port in node.outputs():
            users = port.targets
            if not users or all(id(u.node) in done for u in users):
                continue
            et = port.element_type
            v = values[(id(node), port.index)]
            if et.name not in ("string", "sequence") and v.dtype != et.dtype:
                v = v.astype(et.dtype)
            const = Constant.from_array(v, et, node.friendly_name)
            replace_output(port, const.output(0))
            made.append(const)
            count += 1
    for node in folded:  # every folded node is dead now: unlink it from the producers that stay
        for i, src in enumerate(node.input_values()):
            if id(src.node) not in done:
                src.remove_target_input(node.input(i))
    if after is not None:
        after.extend(made)
        after.extend(n for n in order if id(n) not in done)
    return count


def _arrays_in(obj: Any, depth: int, out: dict[int, np.ndarray], seen: set[int] | None = None,
               skip: frozenset[int] | set[int] = frozenset()) -> None:
    """The numpy arrays ``obj`` holds (itself, its attributes, ``depth`` levels deep; an object
    met twice is looked at once, objects whose id is in ``skip`` not at all)."""
    if isinstance(obj, np.ndarray):
        out[id(obj)] = obj
        return
    if depth <= 0 or isinstance(obj, (int, float, str, bytes, type)) or obj is None or id(obj) in skip:
        return
    if seen is not None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
    if isinstance(obj, (list, tuple)):
        for v in obj:
            _arrays_in(v, depth - 1, out, seen, skip)
    elif hasattr(obj, "__dict__"):
        for v in vars(obj).values():
            _arrays_in(v, depth - 1, out, seen, skip)


#: bytes a cached plan costs beyond its arrays, per graph node it was lowered from (when an op keeps
#: a node, and with it the graph, alive: a reference kernel's ``evaluate``), per tensor and per op (with its bound kernel contexts;
#: measured with tracemalloc on MiniLM: ~0.95 MB a plan)
_NODE_BYTES, _TENSOR_BYTES, _OP_BYTES = 1300, 600, 4500


def _owned_bytes(program: Any, shared: set[int], nodes: int = 0) -> int:
    """A plan's own memory: arrays its ops hold (e.g. weights a kernel packed for this shape)
    and constants made for it, except ``shared`` ones (the model's constants, the packed
    weights every plan shares), plus an allowance for the specialized graph (``nodes``) when
    the plan keeps it alive (an op holds a graph node: a reference kernel's ``evaluate``, a
    binder that captured its node), the Python objects and the kernel contexts."""
    found: dict[int, np.ndarray] = {}
    for t in program.tensors:
        if t.kind == "const" and t.data is not None:
            found[id(t.data)] = t.data
    from ember.devices.cpu.lowering.driver import Lowering
    from ember.devices.cpu.runtime.plan import Tensor
    from ember.graph.node import Node, Output

    seen: set[int] = set()
    keeps_graph = False
    for op in program.ops:
        for fn in (op.bind, op.fn):
            keeps_graph = keeps_graph or isinstance(getattr(fn, "__self__", None), Node)
            for cell in getattr(fn, "__closure__", None) or ():
                try:
                    held = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                if isinstance(held, (Node, Output)):  # in the allowance per node
                    keeps_graph = True
                # a plan's tensors are counted above; the lowering a binder keeps holds only this plan
                elif not isinstance(held, (Tensor, Lowering, int, float, str)):
                    _arrays_in(held, 2, found, seen, shared)
    own = sum(a.nbytes for i, a in found.items() if i not in shared and a.base is None)
    return own + (_NODE_BYTES * nodes if keeps_graph else 0) + _TENSOR_BYTES * len(program.tensors) \
        + _OP_BYTES * len(program.ops)


def dynamic_stats(compiled: Any) -> dict[str, Any]:
    """Counters of a compiled model's shape specializations on the CPU device: how many
    shapes were lowered, optimizer runs after compile, weights packed and reused, plans
    cached and evicted, the bytes they own, constants copied (once per model: the
    specializations share the copies), arena size and growths, and seconds per phase
    (clone, passes, lowering, memory: per compiled model; binding: this executable's)."""
    exe = getattr(compiled, "_executable", compiled)
    programs: _Programs = exe._programs
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in programs.stats.items()}
    out["weights_packed"], out["weights_reused"] = programs.weights.packed, programs.weights.reused
    out["plans_cached"] = len(programs._cache)
    out["constant_copies"] = len(programs._consts)
    out["plans_owned_bytes"] = programs.owned_bytes
    out["arena_bytes"] = exe._arena.nbytes if exe._arena is not None else 0
    out["arena_growths"] = exe.arena_growths
    out["seconds"]["binding"] = exe.bind_seconds
    tpl = programs.template
    out["generic_off"] = "disabled" if tpl is None else tpl.off
    out["generic_checks"] = tpl.checks if tpl is not None else 0
    out["generic_blockers"] = list(tpl.blockers) if tpl is not None else []
    return out


class CPUDevice(Device):
    """ember's fast path: native kernels generated with LLVM for this CPU."""

    name = "CPU"
    thread_safe_executables = False
    auto_rank = 20  # before REFERENCE (100); after devices that declare themselves faster
    #: OpenVINO's CPU property; unset (None), workers are pinned while the machine is quiet
    extra_properties = {"ENABLE_CPU_PINNING": None}

    def __init__(self) -> None:
        from ember.devices.cpu.llvm.isa import host_isa

        self.isa = host_isa()
        self.full_name = _cpu_name()

    def capabilities(self) -> list[str]:
        from ember.devices.cpu.kernels.gemm import bf16_supported

        return ["FP32", *(["BF16"] if bf16_supported(self.isa) else []), "EXPORT_IMPORT"]

    def cache_fingerprint(self) -> str:
        return f"{self.name}|{self.isa.key}"

    def supported_nodes(self, model: Model) -> set[str]:
        """Every node with a reference kernel runs on CPU (natively, or through that kernel)."""
        from ember.devices.base import get_device

        return get_device("REFERENCE").supported_nodes(model)

    def transform(self, model: Model, config: CompileConfig) -> Model:
        from ember.devices.cpu.lowering.passes import device_passes

        model = device_passes(model)
        model.rt_info[_TRANSFORMED] = "1"
        return model

    def compile(self, model: Model, config: CompileConfig) -> CPUExecutable:
        if model.rt_info.get(_TRANSFORMED) != "1":
            model = self.transform(model.clone(), config)
        threads = config.inference_num_threads or _cores()
        executable = CPUExecutable(model, threads, self._precision(config),
                                   pin=dict(config.extra).get("ENABLE_CPU_PINNING"))
        from ember.devices.cpu.runtime.release import release_after_compile

        release_after_compile()  # before the first inference touches the arena (docs/cpu-memory.md)
        return executable

    def _precision(self, config: CompileConfig) -> Type:
        from ember.devices.cpu.kernels.gemm import bf16_supported

        want = config.effective_precision
        if want is Type.bf16 and bf16_supported(self.isa):
            return Type.bf16
        if want is not Type.f32:
            why = "this CPU lacks AVX512_BF16" if want is Type.bf16 else f"CPU has no {want} kernels"
            log.warning("ember: %s; this model runs in f32 (its INFERENCE_PRECISION_HINT property says f32)", why)
        return Type.f32

    def export_model(self, executable: Any) -> bytes | None:
        return b""

    def import_model(self, model: Model, blob: bytes, config: CompileConfig) -> CPUExecutable:
        if blob:
            raise EmberError("ember: this CPU cache entry has data this version cannot read")
        return self.compile(model, config)
