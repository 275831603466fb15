"""Lowering a static-shaped Model to a :class:`~ember.devices.cpu.runtime.plan.Program`.

Nodes are visited in topological order. A *rule* (registered per op type with
:func:`lowers`) turns a node, and possibly the elementwise tail after it, into native ops;
it returns False when it cannot (an unsupported attribute, dtype or shape), and the node then
runs its numpy reference kernel inside the plan (logged once per op type at INFO).

Layouts: 4-D tensors that convolutions and pooling produce are kept NHWC (``nhwc`` tensors);
consumers that need the logical NCHW order get a conversion, made once per tensor. Views:
Reshape and friends on a contiguous computed tensor alias its memory.

This module holds the driver, the rule table (:data:`RULES`) and what rules share (epilogue
chains, shapes, constants, the reorder op); the rules are in ``compute`` (convolution, GEMM,
attention, pooling, reductions, rows), ``eltwise`` (fused elementwise chains), ``movement``
(views and copies) and ``control`` (If); every module of this package but ``driver`` and
``passes`` is imported when the first lowering starts.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import pkgutil
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

from ember.devices.cpu.llvm.isa import Isa
from ember.devices.cpu.runtime.kernel_call import BoundKernel
from ember.devices.cpu.runtime.plan import NHWC, PLAIN, Op, Program, Tensor
from ember.errors import EmberError
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.passes.fusions import same_fused_group

log = logging.getLogger("ember.cpu")

Rule = Callable[["Lowering", Node], bool]
#: compiles a body model (an If branch) for this device, with this lowering's threads and precision
BodyCompiler = Callable[[Model], Any]
RULES: dict[str, Rule] = {}
# modules of this package that hold no rules; every other module registers its rules itself
_NOT_RULES = ("driver", "passes")


@functools.cache
def load_rules() -> None:
    """Import every rule module of ``ember.devices.cpu.lowering`` (once, at the first lowering)."""
    import ember.devices.cpu.lowering as package

    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name not in _NOT_RULES:
            importlib.import_module(f"{package.__name__}.{mod.name}")


#: op types whose rules also take inputs of dynamic shape
DYNAMIC_OK: set[str] = set()


def lowers(*type_names: str, dynamic: bool = False) -> Callable[[Rule], Rule]:
    """Register a lowering rule for op types ``type_names`` (``dynamic``: the rule copes with
    inputs whose shapes are only known at run time)."""
    def wrap(fn: Rule) -> Rule:
        for t in type_names:
            other = RULES.get(t)
            if other is not None and other.__qualname__ != fn.__qualname__:
                raise EmberError(f"ember: internal: two CPU lowering rules for {t}: "
                                 f"{other.__module__}.{other.__qualname__} and {fn.__module__}.{fn.__qualname__}")
            RULES[t] = fn
            if dynamic:
                DYNAMIC_OK.add(t)
        return fn
    return wrap


F32 = np.dtype(np.float32)
_T = TypeVar("_T")


class SharedWeights:
    """Packed weights of one compiled model, shared by the plans of all its input shapes.

    A model with dynamic dimensions is lowered once per input shape; the constants it reads
    are the same arrays each time (a model clone shares constant data), so a rule packs a
    weight once and later lowerings reuse it. Entries are keyed by the source array's identity
    (held here, so the identity stays unique) and a tag naming everything else the packing
    depends on. ``packed`` and ``reused`` count misses and hits (tests and benchmarks read them).
    """

    def __init__(self) -> None:
        self._items: dict[tuple[int, Hashable], tuple[np.ndarray, Any]] = {}
        self._lock = threading.RLock()  # control-flow bodies may be lowered on another stream's thread
        self.packed = 0
        self.reused = 0

    def get(self, source: np.ndarray, tag: Hashable, make: Callable[[], _T]) -> _T:
        key = (id(source), tag)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] is source:
                self.reused += 1
                return hit[1]
            value = make()
            self._items[key] = (source, value)
            self.packed += 1
            return value

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> list[Any]:
        """Everything packed so far."""
        with self._lock:
            return [v for _, v in self._items.values()]


#: element types whose values are Python objects (they stay on reference kernels)
_OBJECT_TYPES = frozenset({"string", "sequence"})
#: the profiling exec type of a node that runs its numpy reference kernel inside a plan
REFERENCE_EXEC_TYPE = "ref_any"


class Lowering:
    """State of one lowering: the program being built and the tensor of every graph port."""

    def __init__(self, model: Model, threads: int, isa: Isa, precision: str = "f32",
                 compile_body: BodyCompiler | None = None, weights: SharedWeights | None = None,
                 order: list[Node] | None = None) -> None:
        load_rules()
        self._model: Model | None = model
        #: the model's nodes in topological order, if the caller has them (else the graph is walked);
        #: nodes no output needs may be in it (their ops are pruned)
        self.order = order
        self.threads = threads
        self.isa = isa
        #: "f32" or "bf16": the arithmetic of the weight GEMMs and convolutions
        self.precision = precision
        #: compiles control-flow bodies into executables (None: control flow stays on reference kernels)
        self.compile_body = compile_body
        #: packed weights shared with the other lowerings of the same compiled model (other input shapes)
        self.weights = weights if weights is not None else SharedWeights()
        self.bf16_ops = 0
        self.program = Program(threads=threads)
        self.ports: dict[tuple[int, int], Tensor] = {}
        self.done: set[int] = set()
        self.results: set[tuple[int, int]] = {(id(r.input_values()[0].node), r.input_values()[0].index) for r in model.get_results()}
        self._converted: dict[tuple[int, str], Tensor] = {}
        self.fallbacks: dict[str, int] = {}
        self.native_nodes = 0

    @property
    def model(self) -> Model:
        """The model being lowered (released with the graph once the program is built)."""
        if self._model is None:
            raise EmberError("ember: internal: this lowering is done; its graph was released")
        return self._model

    # -- ports and tensors ----------------------------------------------------------------
    def tensor(self, port: Output) -> Tensor:
        key = (id(port.node), port.index)
        t = self.ports.get(key)
        if t is None and isinstance(port.node, Constant):  # made when first asked for (most never are)
            t = self.ports[key] = self.program.const(port.node.data, port.node.friendly_name)
        return self.ports[key] if t is None else t

    def has(self, port: Output) -> bool:
        return (id(port.node), port.index) in self.ports or isinstance(port.node, Constant)

    def bind_port(self, port: Output, t: Tensor) -> None:
        self.ports[(id(port.node), port.index)] = t

    def is_result(self, port: Output) -> bool:
        return (id(port.node), port.index) in self.results

    def sole_consumer(self, node: Node) -> Node | None:
        """The only node reading ``node``'s single output, if its value is not a model output."""
        if node.get_output_size() != 1 or (id(node), 0) in self.results:
            return None
        targets = node.output(0).targets
        return targets[0].node if len(targets) == 1 else None

    def value(self, shape: Any, layout: str = PLAIN, dtype: Any = F32, name: str = "") -> Tensor:
        return self.program.tensor(shape, dtype, layout, "value", name)

    def packed(self, source: np.ndarray, tag: Hashable, make: Callable[[], _T]) -> _T:
        """``make()`` (packing constant ``source`` for a kernel), done once per compiled model:
        ``tag`` names whatever else the result depends on (layout, transposition); the ISA and
        precision of this lowering are added to it."""
        return self.weights.get(source, (tag, self.isa.key, self.precision), make)

    # -- conversions -------------------------------------------------------------------------
    def native_input(self, t: Tensor, layout: str = PLAIN, contiguous: bool = True) -> Tensor:
        """``t`` as a native op can read it: in the arena (or a constant), in ``layout``,
        contiguous (unless ``contiguous=False`` and it is a strided view)."""
        if t.kind == "input":
            t = self._cached(t, "arena", lambda: self._input_copy(t))
        if layout == NHWC and t.layout != NHWC:
            return self._cached(t, NHWC, lambda: self._to_nhwc(t))
        if layout == PLAIN and t.layout == NHWC:
            return self.plain(t)
        if contiguous and not t.contiguous:
            return self._cached(t, "contiguous", lambda: self._copy(t, t.layout))
        return t

    def plain(self, t: Tensor) -> Tensor:
        """``t`` in the logical (plain) layout: free for NHWC tensors with H = W = 1."""
        if t.layout != NHWC:
            return t
        n, h, w, c = t.shape
        if h == 1 and w == 1:
            shape = (n, c, 1, 1)
            return self._cached(t, PLAIN, lambda: self.program.view(t, shape, lambda a: a.reshape(shape),
                                                                    contiguous=t.contiguous))
        return self._cached(t, PLAIN, lambda: self._to_plain(t))

    def _cached(self, t: Tensor, key: str, make: Callable[[], Tensor]) -> Tensor:
        k = (t.id, key)
        if k not in self._converted:
            self._converted[k] = make()
        return self._converted[k]

    def _copy(self, t: Tensor, layout: str) -> Tensor:
        out = self.value(t.shape, layout, t.dtype, t.name + "/copy")
        self.program.add(copy_op(t.name + "/copy", t, out, None, self.threads))
        return out

    def _input_copy(self, t: Tensor) -> Tensor:
        """A model input as native ops read it: a buffer of its own, outside the arena. The
        instance points the kernels at the caller's array instead when it can (no copy)."""
        out = self.value(t.shape, t.layout, t.dtype, t.name)
        out.external = True
        self.program.add(Op(t.name + "/input", "InputCopy", [t], [out], native=False, physical=True,
                            fn=lambda a: [a[0]]))
        return out

    def _to_nhwc(self, t: Tensor) -> Tensor:
        n, c, h, w = t.shape
        out = self.value((n, h, w, c), NHWC, t.dtype, t.name + "/nhwc")
        src = self.native_input(t, PLAIN, contiguous=False) if t.kind == "input" else t
        # a small model input was just written by the calling thread: in its cache, one thread
        # reorders it faster than two (MobileNetV2's 3x224x224: 0.67x on two, layers.py --steps)
        small = ((t.kind == "input" or t.external)
                 and n * c * h * w * t.dtype.itemsize <= INPUT_REORDER_SERIAL_BYTES)
        self.program.add(copy_op(t.name + "/to_nhwc", src, out, (0, 2, 3, 1), 1 if small else self.threads))
        return out

    def _to_plain(self, t: Tensor) -> Tensor:
        out = self.value(t.logical_shape, PLAIN, t.dtype, t.name + "/nchw")
        self.program.add(copy_op(t.name + "/to_nchw", t, out, (0, 3, 1, 2), self.threads))
        return out

    # -- driving ----------------------------------------------------------------------------
    def run(self) -> Program:
        params = {id(p): i for i, p in enumerate(self.model.get_parameters())}
        for node in (self.order if self.order is not None else self.model.get_ordered_ops()):
            if id(node) in self.done:
                continue
            self.done.add(id(node))
            if isinstance(node, Parameter):
                t = self.program.tensor(shape_or_none(node.output(0)), node.output(0).element_type.dtype, PLAIN,
                                    "input", node.friendly_name)
                t.index = params[id(node)]
                self.program.inputs.append(t)
                self.bind_port(node.output(0), t)
            elif isinstance(node, Constant):  # its tensor is made when a rule asks for it (``tensor``)
                continue
            elif isinstance(node, Result):
                continue
            else:
                rule = RULES.get(node.type_name)
                ok = False
                # a dynamic-shaped input (a Python value) keeps a node on its reference kernel, and so
                # do strings and sequences: object arrays hold Python references native code must not copy
                usable = rule is not None
                dynamic_ok = node.type_name in DYNAMIC_OK
                if usable:
                    for s in node.input_values():  # (one loop: this runs for every node of every shape)
                        if s.element_type.name in _OBJECT_TYPES or not (dynamic_ok or self.tensor(s).shape is not None):
                            usable = False
                            break
                if usable:
                    usable = not any(p.element_type.name in _OBJECT_TYPES for p in node.outputs())
                if usable and rule is not None:
                    try:
                        ok = rule(self, node)
                    except NotHere:
                        ok = False
                if ok:
                    self.native_nodes += 1
                    last = self.program.ops[-1] if self.program.ops else None
                    log.debug("CPU: %s '%s' -> %s", node.type_name, node.friendly_name,
                              last.type_name if last is not None and last.native else "view")
                else:
                    self.reference(node)
        self.program.inputs.sort(key=lambda t: t.index)
        for r in self.model.get_results():
            self.program.outputs.append(self.tensor(r.input_values()[0]))
        self.program.stats["pruned"] = self.program.prune()
        self.program.stats["fallbacks"] = dict(self.fallbacks)
        self.program.stats["native_nodes"] = self.native_nodes
        self.program.stats["bf16_ops"] = self.bf16_ops
        program = self.program
        self.release()
        return program

    def release(self) -> None:
        """Forget the graph and the port map once the program is built: kernel binders keep
        this object (for ``isa`` and ``threads``), and a cached plan need not keep a graph."""
        self.ports, self._converted, self.done, self.results, self.order = {}, {}, set(), set(), None
        self._model = None

    def reference(self, node: Node) -> None:
        """Run ``node`` through its numpy reference kernel inside the plan."""
        if node.type_name not in self.fallbacks:
            log.info("CPU: no native kernel for %s, using the reference kernel", node.type_name)
        log.debug("CPU: %s '%s' -> reference kernel", node.type_name, node.friendly_name)
        self.fallbacks[node.type_name] = self.fallbacks.get(node.type_name, 0) + 1
        # profiling names it as OpenVINO's CPU plugin names its reference implementations
        self.program.stats.setdefault("exec_types", {})[node.friendly_name] = REFERENCE_EXEC_TYPE
        ins = [self.tensor(s) for s in node.input_values()]
        outs = []
        for o in node.outputs():  # a dynamic shape is fine here: the value stays a Python array
            t = self.value(shape_or_none(o), PLAIN, o.element_type.dtype, node.friendly_name)
            outs.append(t)
            self.bind_port(o, t)
        evaluate = node.evaluate
        self.program.add(Op(node.friendly_name, node.type_name, ins, outs, native=False, fn=evaluate))

    def finish(self, last: Node, out: Tensor, fused: list[Node]) -> None:
        """``out`` is the value of ``last``'s output; ``fused`` nodes are done."""
        for n in fused:
            self.done.add(id(n))
        self.bind_port(last.output(0), out)


#: model inputs up to this size are reordered to NHWC on the calling thread alone
INPUT_REORDER_SERIAL_BYTES = 1 << 20


def copy_op(name: str, src: Tensor, dst: Tensor, perm: tuple[int, ...] | None, threads: int) -> Op:
    """An op writing ``transpose(src, perm)`` (physical arrays) into ``dst``."""

    def view(a: np.ndarray) -> np.ndarray:
        return a if perm is None else a.transpose(perm)

    from ember.devices.cpu.kernels.movement import MAX_DIMS, nchw_to_nhwc, strided_copy, transpose_copy

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[BoundKernel]:
        k = nchw_to_nhwc(ins[0], outs[0], threads) if perm == (0, 2, 3, 1) else None
        k = k or transpose_copy(view(ins[0]), outs[0], threads)
        k = k or strided_copy(view(ins[0]), outs[0], threads)
        if k is None:
            raise EmberError(f"ember: internal: no copy kernel fits the reorder '{name}'")
        return [k]

    if src.dtype.itemsize != 4 or len(src.shape) > MAX_DIMS:
        return Op(name, "Reorder", [src], [dst], native=False, physical=True,
                  fn=lambda a: [np.asarray(view(a[0]), order="C")])
    return Op(name, "Reorder", [src], [dst], native=True, bind=bind)


class NotHere(Exception):
    """A rule found it cannot lower this node after all."""


def static_shape(port: Output) -> tuple[int, ...]:
    """The static shape of ``port``; a native rule meeting a dynamic one gives up (NotHere)."""
    shape = shape_or_none(port)
    if shape is None:
        raise NotHere
    return shape


def shape_or_none(port: Output) -> tuple[int, ...] | None:
    """The static shape of ``port``, or None (rules ask this often: one pass over the dims)."""
    dims = port.partial_shape._dims  # (read directly: rules ask this thousands of times per lowering)
    if dims is None:
        return None
    out = tuple([d._min for d in dims])
    for d, lo in zip(dims, out):
        if d._max != lo:
            return None
    return out


def probe_array(t: Tensor) -> np.ndarray:
    """An array with ``t``'s physical shape and strides (memory reserved, never touched)."""
    if t.kind == "view":
        assert t.base is not None and t.make_view is not None
        return t.make_view(probe_array(t.base))
    if t.kind == "const":
        assert t.data is not None
        return t.data
    return np.empty(t.shape, t.dtype)


def const_of(port: Output) -> np.ndarray | None:
    return port.node.data if isinstance(port.node, Constant) else None


# -- epilogue chains --------------------------------------------------------------------------

def _channel_vector(c: np.ndarray, rank: int, axis: int, channels: int) -> np.ndarray | None:
    """``c`` as a float32 vector of ``channels`` if it broadcasts along ``axis`` only."""
    if c.dtype != F32 or c.ndim > rank:
        return None
    full = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(full) if i != axis):
        return None
    v = c.reshape(-1)
    if v.size == 1:
        return np.full(channels, v[0], np.float32)
    return np.ascontiguousarray(v, np.float32) if v.size == channels else None


def epilogue_chain(lowering: Lowering, node: Node, axis: int, channels: int, layout: str, broadcast_residual: bool = False,
                   allow_residual: bool = True) -> tuple[np.ndarray | None, Tensor | None, tuple[float, float], Node,
                                                    list[Node]]:
    """The elementwise tail after ``node`` that a kernel epilogue can take: the members of the
    epilogue group the optimizer marked (``mark_epilogue_groups``), as far as this kernel supports them:
    ``(bias vector, residual tensor, (lo, hi), last node, fused nodes)``. With
    ``broadcast_residual`` the residual may broadcast to the output (not along ``axis``)."""
    out_shape = node.output(0).partial_shape
    rank = len(out_shape)
    bias: np.ndarray | None = None
    residual: Tensor | None = None
    lo, hi = -math.inf, math.inf
    last, fused = node, []
    while True:
        nxt = lowering.sole_consumer(last)
        if nxt is None or not same_fused_group(last, nxt):  # the group the optimizer marked
            break
        if nxt.output(0).partial_shape != out_shape or nxt.output(0).element_type.dtype != F32:
            break
        if nxt.type_name == "Add" and len(nxt.input_values()) == 2:
            other = nxt.input_values()[1] if nxt.input_values()[0].node is last else nxt.input_values()[0]
            if other.node is last:
                break
            c = const_of(other)
            if c is not None:
                vec = _channel_vector(c, rank, axis, channels)
                if vec is None or bias is not None:
                    break
                bias = vec
            else:
                if not allow_residual or residual is not None or not lowering.has(other) \
                        or other.element_type.dtype != F32:
                    break
                if other.partial_shape != out_shape and not (
                        broadcast_residual and _broadcasts_to(other, out_shape, axis)):
                    break
                residual = lowering.tensor(other)
            last = nxt
            fused.append(nxt)
            continue
        if nxt.type_name == "ReLU":
            lo = 0.0
        elif nxt.type_name == "Clamp":
            lo, hi = float(nxt.attrs["min"]), float(nxt.attrs["max"])
        else:
            break
        last = nxt
        fused.append(nxt)
        break
    if residual is not None:
        residual = lowering.native_input(residual, layout)
    return bias, residual, (lo, hi), last, fused


def _broadcasts_to(port: Output, out_shape: Any, axis: int) -> bool:
    """Whether ``port`` broadcasts to ``out_shape`` while keeping the full extent of ``axis``."""
    if not port.partial_shape.is_static or not out_shape.is_static:
        return False
    shp = static_shape(port)
    out = tuple(int(d) for d in out_shape.to_shape())
    if len(shp) > len(out):
        return False
    full = (1,) * (len(out) - len(shp)) + shp
    return all(d in (1, o) for d, o in zip(full, out)) and full[axis] == out[axis]


def reshaper(shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """A view maker: ``a.reshape(shape)``."""
    return lambda a: a.reshape(shape)


def transposer(perm: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """A view maker: ``a.transpose(perm)``."""
    return lambda a: a.transpose(perm)


def scalar_of(port: Output) -> float | None:
    """The value of a one-element float constant, else None."""
    c = const_of(port)
    return float(c.reshape(-1)[0]) if c is not None and c.size == 1 and c.dtype.kind == "f" else None
