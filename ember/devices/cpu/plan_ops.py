"""Lowering a static-shaped Model to a :class:`~ember.devices.cpu.plan.Program`.

Nodes are visited in topological order. A *rule* (registered per op type with
:func:`lowers`) turns a node, and possibly the elementwise tail after it, into native ops;
it returns False when it cannot (an unsupported attribute, dtype or shape), and the node then
runs its numpy reference kernel inside the plan (logged once per op type at INFO).

Layouts: 4-D tensors that convolutions and pooling produce are kept NHWC (``nhwc`` tensors);
consumers that need the logical NCHW order get a conversion, made once per tensor. Views:
Reshape and friends on a contiguous computed tensor alias its memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ember.devices.cpu.isa import Isa
from ember.devices.cpu.plan import NHWC, PLAIN, Op, Program, Tensor
from ember.errors import EmberError
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Node, Output

log = logging.getLogger("ember.cpu")

Rule = Callable[["Lowering", Node], bool]
RULES: dict[str, Rule] = {}


def lowers(*type_names: str) -> Callable[[Rule], Rule]:
    """Register a lowering rule for op types ``type_names``."""
    def wrap(fn: Rule) -> Rule:
        for t in type_names:
            RULES[t] = fn
        return fn
    return wrap


F32 = np.dtype(np.float32)


class Lowering:
    """State of one lowering: the program being built and the tensor of every graph port."""

    def __init__(self, model: Model, threads: int, isa: Isa, precision: str = "f32") -> None:
        self.model = model
        self.threads = threads
        self.isa = isa
        #: "f32" or "bf16": the arithmetic of the weight GEMMs and convolutions
        self.precision = precision
        self.bf16_ops = 0
        self.p = Program(threads=threads)
        self.ports: dict[tuple[int, int], Tensor] = {}
        self.done: set[int] = set()
        self.results: set[tuple[int, int]] = {(id(r._inputs[0].node), r._inputs[0].index) for r in model.get_results()}
        self._converted: dict[tuple[int, str], Tensor] = {}
        self.fallbacks: dict[str, int] = {}
        self.native_nodes = 0

    # -- ports and tensors ----------------------------------------------------------------
    def tensor(self, port: Output) -> Tensor:
        return self.ports[(id(port.node), port.index)]

    def has(self, port: Output) -> bool:
        return (id(port.node), port.index) in self.ports

    def bind_port(self, port: Output, t: Tensor) -> None:
        self.ports[(id(port.node), port.index)] = t

    def is_result(self, port: Output) -> bool:
        return (id(port.node), port.index) in self.results

    def sole_consumer(self, node: Node) -> Node | None:
        """The only node reading ``node``'s single output, if its value is not a model output."""
        if len(node._consumers) != 1 or len(node._consumers[0]) != 1 or self.is_result(node.output(0)):
            return None
        return node._consumers[0][0].node

    def value(self, shape: Any, layout: str = PLAIN, dtype: Any = F32, name: str = "") -> Tensor:
        return self.p.tensor(shape, dtype, layout, "value", name)

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
            return self._cached(t, PLAIN, lambda: self.p.view(t, shape, lambda a: a.reshape(shape),
                                                              contiguous=t.contiguous))
        return self._cached(t, PLAIN, lambda: self._to_plain(t))

    def _cached(self, t: Tensor, key: str, make: Callable[[], Tensor]) -> Tensor:
        k = (t.id, key)
        if k not in self._converted:
            self._converted[k] = make()
        return self._converted[k]

    def _copy(self, t: Tensor, layout: str) -> Tensor:
        from ember.devices.cpu.eltwise import copy_op

        out = self.value(t.shape, layout, t.dtype, t.name + "/copy")
        self.p.add(copy_op(t.name + "/copy", t, out, None, self.threads))
        return out

    def _input_copy(self, t: Tensor) -> Tensor:
        """A model input as native ops read it: a buffer of its own, outside the arena. The
        instance points the kernels at the caller's array instead when it can (no copy)."""
        out = self.value(t.shape, t.layout, t.dtype, t.name)
        out.external = True
        self.p.add(Op(t.name + "/input", "InputCopy", [t], [out], native=False, physical=True,
                      fn=lambda a: [a[0]]))
        return out

    def _to_nhwc(self, t: Tensor) -> Tensor:
        from ember.devices.cpu.eltwise import copy_op

        n, c, h, w = t.shape
        out = self.value((n, h, w, c), NHWC, t.dtype, t.name + "/nhwc")
        src = self.native_input(t, PLAIN, contiguous=False) if t.kind == "input" else t
        self.p.add(copy_op(t.name + "/to_nhwc", src, out, (0, 2, 3, 1), self.threads))
        return out

    def _to_plain(self, t: Tensor) -> Tensor:
        from ember.devices.cpu.eltwise import copy_op

        out = self.value(t.logical_shape, PLAIN, t.dtype, t.name + "/nchw")
        self.p.add(copy_op(t.name + "/to_nchw", t, out, (0, 3, 1, 2), self.threads))
        return out

    # -- driving ----------------------------------------------------------------------------
    def run(self) -> Program:
        params = {id(p): i for i, p in enumerate(self.model.get_parameters())}
        for node in self.model.get_ordered_ops():
            if id(node) in self.done:
                continue
            self.done.add(id(node))
            if isinstance(node, Parameter):
                t = self.p.tensor(_shape_or_none(node.output(0)), node.output(0).element_type.dtype, PLAIN,
                                  "input", node.friendly_name)
                t.index = params[id(node)]
                self.p.inputs.append(t)
                self.bind_port(node.output(0), t)
            elif isinstance(node, Constant):
                self.bind_port(node.output(0), self.p.const(node.data, node.friendly_name))
            elif isinstance(node, Result):
                continue
            else:
                rule = RULES.get(node.type_name)
                ok = False
                if rule is not None:
                    try:
                        ok = rule(self, node)
                    except _NotHere:
                        ok = False
                if ok:
                    self.native_nodes += 1
                    last = self.p.ops[-1] if self.p.ops else None
                    log.debug("CPU: %s '%s' -> %s", node.type_name, node.friendly_name,
                              last.type_name if last is not None and last.native else "view")
                else:
                    self.reference(node)
        self.p.inputs.sort(key=lambda t: t.index)
        for r in self.model.get_results():
            self.p.outputs.append(self.tensor(r._inputs[0]))
        self.p.stats["pruned"] = self.p.prune()
        self.p.stats["fallbacks"] = dict(self.fallbacks)
        self.p.stats["native_nodes"] = self.native_nodes
        self.p.stats["bf16_ops"] = self.bf16_ops
        return self.p

    def reference(self, node: Node) -> None:
        """Run ``node`` through its numpy reference kernel inside the plan."""
        if node.type_name not in self.fallbacks:
            log.info("CPU: no native kernel for %s, using the reference kernel", node.type_name)
        self.fallbacks[node.type_name] = self.fallbacks.get(node.type_name, 0) + 1
        ins = [self.tensor(s) for s in node._inputs]
        outs = []
        for o in node.outputs():  # a dynamic shape is fine here: the value stays a Python array
            t = self.value(_shape_or_none(o), PLAIN, o.element_type.dtype, node.friendly_name)
            outs.append(t)
            self.bind_port(o, t)
        evaluate = node.evaluate
        self.p.add(Op(node.friendly_name, node.type_name, ins, outs, native=False, fn=evaluate))

    def finish(self, last: Node, out: Tensor, fused: list[Node]) -> None:
        """``out`` is the value of ``last``'s output; ``fused`` nodes are done."""
        for n in fused:
            self.done.add(id(n))
        self.bind_port(last.output(0), out)


class _NotHere(Exception):
    """A rule found it cannot lower this node after all."""


def _static(port: Output) -> tuple[int, ...]:
    """The static shape of ``port``; a native rule meeting a dynamic one gives up (_NotHere)."""
    ps = port.partial_shape
    if not ps.is_static:
        raise _NotHere
    return tuple(int(d) for d in ps.to_shape())


def _shape_or_none(port: Output) -> tuple[int, ...] | None:
    ps = port.partial_shape
    return tuple(int(d) for d in ps.to_shape()) if ps.is_static else None


def probe_array(t: Tensor) -> np.ndarray:
    """An array with ``t``'s physical shape and strides (memory reserved, never touched)."""
    if t.kind == "view":
        assert t.base is not None and t.make_view is not None
        return t.make_view(probe_array(t.base))
    if t.kind == "const":
        return t.data  # type: ignore[return-value]
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


def epilogue_chain(L: Lowering, node: Node, axis: int, channels: int, layout: str, broadcast_residual: bool = False
                   ) -> tuple[np.ndarray | None, Tensor | None, tuple[float, float], Node, list[Node]]:
    """The elementwise tail after ``node`` that a kernel epilogue can take:
    ``(bias vector, residual tensor, (lo, hi), last node, fused nodes)``. With
    ``broadcast_residual`` the residual may broadcast to the output (not along ``axis``)."""
    out_shape = node.output(0).partial_shape
    rank = len(out_shape)
    bias: np.ndarray | None = None
    residual: Tensor | None = None
    lo, hi = -math.inf, math.inf
    last, fused = node, []
    while True:
        nxt = L.sole_consumer(last)
        if nxt is None or nxt.output(0).partial_shape != out_shape or nxt.output(0).element_type.dtype != F32:
            break
        if nxt.type_name == "Add" and len(nxt._inputs) == 2:
            other = nxt._inputs[1] if nxt._inputs[0].node is last else nxt._inputs[0]
            if other.node is last:
                break
            c = const_of(other)
            if c is not None:
                vec = _channel_vector(c, rank, axis, channels)
                if vec is None or bias is not None:
                    break
                bias = vec
            else:
                if residual is not None or not L.has(other) or other.element_type.dtype != F32:
                    break
                if other.partial_shape != out_shape and not (
                        broadcast_residual and _broadcasts_to(other, out_shape, axis)):
                    break
                residual = L.tensor(other)
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
        residual = L.native_input(residual, layout)
    return bias, residual, (lo, hi), last, fused


def _broadcasts_to(port: Output, out_shape: Any, axis: int) -> bool:
    """Whether ``port`` broadcasts to ``out_shape`` while keeping the full extent of ``axis``."""
    if not port.partial_shape.is_static or not out_shape.is_static:
        return False
    shp = _static(port)
    out = tuple(int(d) for d in out_shape.to_shape())
    if len(shp) > len(out):
        return False
    full = (1,) * (len(out) - len(shp)) + shp
    return all(d in (1, o) for d, o in zip(full, out)) and full[axis] == out[axis]


# -- convolution ------------------------------------------------------------------------------

@lowers("Convolution", "GroupConvolution")
def lower_conv(L: Lowering, node: Node) -> bool:
    from ember.devices.cpu.conv import Conv2d, ConvGeometry
    from ember.devices.cpu.gemm import Epilogue

    w = const_of(node._inputs[1])
    xport = node._inputs[0]
    if w is None or w.dtype != F32 or xport.element_type.dtype != F32 or len(xport.partial_shape) != 4:
        return False
    n, c, h, wd = _static(xport)
    groups = 1
    if node.type_name == "GroupConvolution":
        groups = w.shape[0]
        w = w.reshape(w.shape[0] * w.shape[1], *w.shape[2:])
    oc, _, kh, kw = w.shape
    pb, pe = node.resolved_pads((n, c, h, wd), (kh, kw))
    if min(*pb, *pe) < 0:
        return False
    dil = list(node.attrs["dilations"]) or [1, 1]
    geo = ConvGeometry(n, h, wd, c, oc, kh, kw, tuple(node.attrs["strides"]), tuple(dil), tuple(pb), tuple(pe),
                       groups)
    bias, residual, (lo, hi), last, fused = epilogue_chain(L, node, 1, oc, NHWC)
    kernel = Conv2d(geo, w, Epilogue(lo, hi), num_threads=L.threads, isa=L.isa, precision=L.precision)
    L.bf16_ops += kernel.precision.value == "bf16"
    x = L.native_input(L.tensor(xport), NHWC, contiguous=False)
    y = L.value(geo.output_shape, NHWC, name=last.friendly_name)
    ins = [x] + ([residual] if residual is not None else [])

    def bind(a: list[np.ndarray], o: list[np.ndarray]) -> list[Any]:
        return [kernel.bind(a[0], o[0], bias, a[1] if residual is not None else None)]

    L.p.add(Op(node.friendly_name, node.type_name, ins, [y], native=True, bind=bind))
    L.finish(last, y, fused)
    return True


# -- matrix products --------------------------------------------------------------------------

@lowers("MatMul")
def lower_matmul(L: Lowering, node: Node) -> bool:
    from ember.devices.cpu.gemm import Epilogue, Gemm, pack_b

    a_port, b_port = node._inputs
    w = const_of(b_port)
    if w is None or const_of(a_port) is not None:
        return _lower_batched_matmul(L, node)
    if w.dtype != F32 or a_port.element_type.dtype != F32 or node.attrs["transpose_a"]:
        return False
    a_shape = _static(a_port)
    if w.ndim < 2 or len(a_shape) < 2 or w.ndim > len(a_shape) or any(d != 1 for d in w.shape[:-2]):
        return False
    w2 = w.reshape(w.shape[-2:])
    if node.attrs["transpose_b"]:
        w2 = w2.T
    k, nn = w2.shape
    if a_shape[-1] != k:
        return False
    out_shape = _static(node.output(0))
    m = int(np.prod(a_shape[:-1]))
    bias, residual, (lo, hi), last, fused = epilogue_chain(L, node, len(out_shape) - 1, nn, PLAIN)
    gemm = Gemm(pack_b(np.ascontiguousarray(w2), L.isa, precision=L.precision), m, Epilogue(lo, hi),
                num_threads=L.threads)
    L.bf16_ops += L.precision == "bf16"
    a = L.native_input(L.tensor(a_port), PLAIN, contiguous=False)
    try:  # rows of A may be strided (a column slice): the GEMM takes any row stride
        rows = np.reshape(probe_array(a), (m, k), copy=False)
        if k > 1 and rows.strides[-1] != rows.itemsize:
            raise ValueError
    except ValueError:
        a = L.native_input(a, PLAIN, contiguous=True)
    y = L.value(out_shape, PLAIN, name=last.friendly_name)
    ins = [a] + ([residual] if residual is not None else [])

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        r = arrs[1].reshape(m, nn) if residual is not None else None
        return [gemm.bind(np.reshape(arrs[0], (m, k), copy=False), outs[0].reshape(m, nn), bias, r)]

    L.p.add(Op(node.friendly_name, "MatMul", ins, [y], native=True, bind=bind))
    L.finish(last, y, fused)
    return True


def _lower_batched_matmul(L: Lowering, node: Node) -> bool:
    """MatMul of two runtime tensors (attention scores, context): strided views, no copies."""
    from ember.devices.cpu.batched_gemm import BatchedGemm
    from ember.devices.cpu.gemm import Epilogue

    a_port, b_port = node._inputs
    if a_port.element_type.dtype != F32 or b_port.element_type.dtype != F32:
        return False
    sa, sb = _static(a_port), _static(b_port)
    out_shape = _static(node.output(0))
    if not sa or not sb or 0 in out_shape:
        return False
    ta, tb = bool(node.attrs["transpose_a"]), bool(node.attrs["transpose_b"])
    # a scalar scale right after the product becomes the kernel's alpha
    alpha, start = 1.0, node
    nxt = L.sole_consumer(node)
    if nxt is not None and nxt.type_name in ("Multiply", "Divide") and len(nxt._inputs) == 2 \
            and _static(nxt.output(0)) == out_shape and nxt._inputs[0].node is node:
        s = _scalar(nxt._inputs[1])
        if s is not None and (nxt.type_name == "Multiply" or s != 0):
            alpha, start = (s if nxt.type_name == "Multiply" else 1.0 / s), nxt
    n_axis = len(out_shape) - 1
    bias, residual, (lo, hi), last, fused = epilogue_chain(L, start, n_axis, out_shape[-1], PLAIN,
                                                           broadcast_residual=True)
    if start is not node:
        fused = [start, *fused]
    ins = []
    for port in (a_port, b_port):
        t = L.native_input(L.tensor(port), PLAIN, contiguous=False)
        probe = probe_array(t)
        st = [x // probe.itemsize for x in probe.strides]
        if probe.ndim >= 2 and st[-1] != 1 and st[-2] != 1 and probe.shape[-1] > 1 and probe.shape[-2] > 1:
            t = L.native_input(t, PLAIN, contiguous=True)
        ins.append(t)
    if residual is not None:
        rp = probe_array(residual)
        if rp.shape[-1] > 1 and rp.strides[-1] != rp.itemsize:
            residual = L.native_input(residual, PLAIN, contiguous=True)
    kernel = BatchedGemm(sa, sb, ta, tb, num_threads=L.threads, epilogue=Epilogue(lo, hi), alpha=alpha, isa=L.isa)
    y = L.value(out_shape, PLAIN, name=last.friendly_name)
    all_ins = ins + ([residual] if residual is not None else [])

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [kernel.bind(arrs[0], arrs[1], outs[0], bias, arrs[2] if residual is not None else None)]

    L.p.add(Op(node.friendly_name, "MatMul", all_ins, [y], native=True, bind=bind))
    L.finish(last, y, fused)
    return True


# -- views ------------------------------------------------------------------------------------

@lowers("Reshape", "Squeeze", "Unsqueeze")
def lower_reshape(L: Lowering, node: Node) -> bool:
    src = L.tensor(node._inputs[0])
    if src.kind == "input" and src.shape is not None:
        src = L.native_input(src, PLAIN)
    if src.kind not in ("value", "view"):
        return False
    if src.layout == NHWC:
        src = L.plain(src)
    shape = _static(node.output(0))
    try:  # a strided view (a column slice, say) often reshapes without a copy too
        contiguous = np.reshape(probe_array(src), shape, copy=False).flags.c_contiguous
    except ValueError:
        src = L.native_input(src, PLAIN, contiguous=True)
        contiguous = True
    t = L.p.view(src, shape, lambda a: np.reshape(a, shape, copy=False), contiguous=contiguous,
                 name=node.friendly_name)
    L.finish(node, t, [])
    return True


# -- pooling and reductions -------------------------------------------------------------------

@lowers("MaxPool", "AvgPool")
def lower_pool(L: Lowering, node: Node) -> bool:
    from ember.devices.cpu.pool import pool2d

    xport = node._inputs[0]
    if xport.element_type.dtype != F32 or len(xport.partial_shape) != 4:
        return False
    if len(node._consumers) > 1 and any(node._consumers[1:]) or any(L.is_result(o) for o in node.outputs()[1:]):
        return False  # MaxPool-8 indices are used
    pb, pe, _ = node.plan(xport.partial_shape)
    kernel = tuple(node.attrs["kernel"])
    if len(kernel) != 2 or min(*pb, *pe) < 0:
        return False
    strides = tuple(node.attrs["strides"])
    dil = tuple(node._dilations(2))
    n, c, oh, ow = _static(node.output(0))
    mode = "max" if node.type_name == "MaxPool" else "avg"
    exclude = bool(node.attrs.get("exclude-pad", False))
    x = L.native_input(L.tensor(xport), NHWC, contiguous=False)
    y = L.value((n, oh, ow, c), NHWC, name=node.friendly_name)
    threads = L.threads

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [pool2d(ins[0], outs[0], kernel, strides, dil, tuple(pb), tuple(pe), mode, exclude, threads, L.isa)]

    L.p.add(Op(node.friendly_name, node.type_name, [x], [y], native=True, bind=bind))
    for o in node.outputs()[1:]:  # unused indices: never computed
        L.bind_port(o, L.value(_static(o), PLAIN, o.element_type.dtype))
    L.finish(node, y, [])
    return True


_REDUCE_OPS = {"ReduceMean": "sum", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min"}


@lowers(*_REDUCE_OPS)
def lower_reduce(L: Lowering, node: Node) -> bool:
    from ember.devices.cpu.pool import reduce_middle

    xport = node._inputs[0]
    axes_v = const_of(node._inputs[1])
    if xport.element_type.dtype != F32 or axes_v is None:
        return False
    shape = _static(xport)
    rank = len(shape)
    if rank == 0:
        return False
    axes = sorted({int(a) % rank for a in np.asarray(axes_v).reshape(-1)})
    if not axes:
        return False
    keep = bool(node.attrs["keep_dims"])
    out_shape = _static(node.output(0))
    src = L.tensor(xport)
    op = _REDUCE_OPS[node.type_name]
    if src.layout == NHWC and axes == [2, 3]:
        n, h, w, c = src.shape
        outer, r, inner = n, h * w, c
        layout = NHWC if keep else PLAIN
        phys_out = (n, 1, 1, c) if keep else out_shape
        src = L.native_input(src, NHWC, contiguous=True)
    else:
        if axes != list(range(axes[0], axes[-1] + 1)):
            return False
        src = L.native_input(src, PLAIN)
        outer = int(np.prod(shape[:axes[0]]))
        r = int(np.prod([shape[a] for a in axes]))
        inner = int(np.prod(shape[axes[-1] + 1:]))
        layout, phys_out = PLAIN, out_shape
    if r == 0 and op != "sum":
        return False
    scale = 1.0 / r if node.type_name == "ReduceMean" and r else (math.nan if node.type_name == "ReduceMean" else 1.0)
    y = L.value(phys_out, layout, name=node.friendly_name)
    threads = L.threads

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        x3 = ins[0].reshape(outer, r, inner)
        return [reduce_middle(x3, outs[0].reshape(outer, inner), op, scale, threads, L.isa)]

    L.p.add(Op(node.friendly_name, node.type_name, [src], [y], native=True, bind=bind))
    L.finish(node, y, [])
    return True


# -- elementwise chains -----------------------------------------------------------------------

_EW_UNARY = {"Negative": "neg", "Abs": "abs", "ReLU": "relu", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
             "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf", "HSwish": "hswish", "HSigmoid": "hsigmoid",
             "Floor": "floor", "Ceiling": "ceil", "SoftPlus": "softplus", "Mish": "mish"}
_EW_BINARY = {"Add": "add", "Subtract": "sub", "Multiply": "mul", "Divide": "div", "Maximum": "max",
              "Minimum": "min", "SquaredDifference": "sqdiff", "PRelu": "prelu"}


def _scalar(port: Output) -> float | None:
    c = const_of(port)
    return float(c.reshape(-1)[0]) if c is not None and c.size == 1 and c.dtype.kind == "f" else None


LOADABLE = {np.dtype(d) for d in (np.float32, np.int32, np.int64, np.uint8, np.bool_)}


def _ew_unary(node: Node) -> tuple[str, float, float] | None:
    """(op, imm0, imm1) of a unary elementwise node, or None."""
    t = node.type_name
    if t == "Convert":  # to f32 from an integer or bool input: the load converts
        return "mulc", 1.0, 0.0
    if t in _EW_UNARY and len(node._inputs) == 1:
        return _EW_UNARY[t], 0.0, 0.0
    if t == "Clamp":
        return "clamp", float(node.attrs["min"]), float(node.attrs["max"])
    if t == "Elu":
        return "elu", float(node.attrs["alpha"]), 0.0
    if t == "Gelu":
        mode = str(node.attrs.get("approximation_mode", "ERF")).upper()
        return ("gelu_tanh" if mode == "TANH" else "gelu_erf"), 0.0, 0.0
    if t == "Swish":
        beta = 1.0 if len(node._inputs) == 1 else _scalar(node._inputs[1])
        return None if beta is None else ("swish", beta, 0.0)
    if t == "Power":
        ex = _scalar(node._inputs[1])
        if ex is None or node._inputs[1].partial_shape.rank.get_length() > len(node.output(0).partial_shape):
            return None
        if ex == 2.0:
            return "square", 0.0, 0.0
        if ex == 0.5:
            return "sqrt", 0.0, 0.0
        if ex == 1.0:
            return "mulc", 1.0, 0.0
        if ex == -1.0:
            return "rdivc", 1.0, 0.0
        if ex != math.floor(ex):
            return "powc", ex, 0.0
    return None


def _ew_ok(node: Node) -> bool:
    if len(node.outputs()) != 1 or node.output(0).element_type.dtype != F32:
        return False
    if node.type_name == "Convert":
        return node._inputs[0].element_type.dtype in LOADABLE
    if any(s.element_type.dtype != F32 for s in node._inputs):
        return False
    mode = str(node.attrs.get("auto_broadcast", "numpy")).lower()
    return mode in ("numpy", "none")


def _prelu_slope(node: Node, slope: np.ndarray | None, slope_shape: tuple[int, ...]) -> tuple[int, ...]:
    """PRelu's 1-D slope applies along axis 1 (as its reference kernel does)."""
    x = node.input_shape(0)
    if len(slope_shape) == 1 and len(x) >= 2 and x[1].is_static and slope_shape[0] == x[1].get_length() \
            and (not x[-1].is_static or slope_shape[0] != x[-1].get_length()):
        return (slope_shape[0],) + (1,) * (len(x) - 2)
    return slope_shape


@lowers(*_EW_UNARY, *_EW_BINARY, "Clamp", "Elu", "Gelu", "Swish", "Power", "Convert")
def lower_eltwise(L: Lowering, node: Node) -> bool:
    from ember.devices.cpu.eltwise import eltwise_fits, eltwise_kernel

    if not _ew_ok(node):
        return False
    out_port = node.output(0)
    out_shape = _static(out_port)
    rank = len(out_shape)
    # operands: ("tensor", Tensor, logical shape) or ("const", array)
    operands: list[tuple[str, Any, tuple[int, ...]]] = []

    def operand(port: Output, shape_override: tuple[int, ...] | None = None) -> int:
        c = const_of(port)
        shape = shape_override or _static(port)
        if c is not None:
            keep = c.dtype if c.dtype in LOADABLE else F32
            operands.append(("const", np.ascontiguousarray(c, keep).reshape(shape), shape))
        else:
            operands.append(("tensor", L.tensor(port), shape))
        return len(operands) - 1

    prog: list[tuple] = []  # (op, dst, a, b, imm0, imm1) with operand indices in 'load'

    def emit(n: Node, chain: Output | None) -> bool:
        u = _ew_unary(n)
        if u is not None and (n.type_name != "Power" or chain is None or n._inputs[0] == chain):
            if chain is None:
                prog.append(("load", 0, operand(n._inputs[0]), 0, 0.0, 0.0))
            if n.type_name != "Convert":
                prog.append((u[0], 0, 0, 0, u[1], u[2]))
            return True
        if n.type_name not in _EW_BINARY or len(n._inputs) != 2:
            return False
        op = _EW_BINARY[n.type_name]
        a, b_ = n._inputs
        if chain is None:
            prog.append(("load", 0, operand(a), 0, 0.0, 0.0))
            shape = _prelu_slope(n, None, _static(b_)) if op == "prelu" else None
            prog.append(("load", 1, operand(b_, shape), 0, 0.0, 0.0))
            prog.append((op, 0, 0, 1, 0.0, 0.0))
            return True
        first = a == chain
        other = b_ if first else a
        if other == chain:
            prog.append((op, 0, 0, 0, 0.0, 0.0))
            return True
        s = _scalar(other)
        if s is not None and op in ("add", "mul") or (s is not None and op == "sub" and first):
            imm = -s if op == "sub" else s
            prog.append(("mulc" if op == "mul" else "addc", 0, 0, 0, imm, 0.0))
            return True
        if s is not None and op in ("sub", "div") and not first:
            prog.append(("rsubc" if op == "sub" else "rdivc", 0, 0, 0, s, 0.0))
            return True
        if op == "prelu" and not first:
            return False
        shape = _prelu_slope(n, None, _static(other)) if op == "prelu" else None
        if const_of(other) is None and not L.has(other):
            return False
        prog.append(("load", 1, operand(other, shape), 0, 0.0, 0.0))
        prog.append((op, 0, 0, 1, 0.0, 0.0) if first else (op, 0, 1, 0, 0.0, 0.0))
        return True

    if not emit(node, None):
        return False
    last, fused = node, []
    while len(prog) < 20:
        nxt = L.sole_consumer(last)
        if nxt is None or not _ew_ok(nxt) or _static(nxt.output(0)) != out_shape:
            break
        mark = (len(prog), len(operands))
        if not emit(nxt, last.output(0)):
            del prog[mark[0]:]
            del operands[mark[1]:]
            break
        last = nxt
        fused.append(nxt)
    if len(operands) > 8:
        return False
    prog.append(("store", 0, 0, 0, 0.0, 0.0))
    from ember.devices.cpu.eltwise import LOAD_FOR

    prog = [(LOAD_FOR[operands[a][1].dtype], dst, a, *rest) if op == "load" else (op, dst, a, *rest)
            for op, dst, a, *rest in prog]
    # layout: NHWC when a full-size input is NHWC and every other tensor input can be viewed so
    tensors = [t for kind, t, _ in operands if kind == "tensor"]
    nhwc = rank == 4 and any(t.layout == NHWC and shp == out_shape for (kind, t, shp) in operands
                             if kind == "tensor")
    ins: list[Tensor] = []
    makers: list[Callable[[np.ndarray], np.ndarray]] = []
    for kind, t, shp in operands:
        full = (1,) * (rank - len(shp)) + tuple(shp)
        if kind == "const":
            arr = t.reshape(full)
            if nhwc:
                arr = np.ascontiguousarray(arr.transpose(0, 2, 3, 1))
            ins.append(L.p.const(arr))
            makers.append(lambda a: a)
            continue
        if nhwc:
            if t.layout == NHWC:
                src = L.native_input(t, NHWC)
                makers.append(lambda a: a)
            elif full[2] == 1 and full[3] == 1:  # [n, c, 1, 1] has the same memory in both layouts
                src = L.native_input(t, PLAIN)
                makers.append(lambda a, f=full: a.reshape(f[0], 1, 1, f[1]))
            else:
                src = L.native_input(t, NHWC)
                makers.append(lambda a: a)
        else:
            src = L.native_input(t, PLAIN)
            makers.append(lambda a, f=full: a.reshape(f))
        ins.append(src)
    phys = (out_shape[0], out_shape[2], out_shape[3], out_shape[1]) if nhwc else out_shape
    layout = NHWC if nhwc else PLAIN
    if not eltwise_fits(phys, [mk(np.empty(t.shape, np.float32)).shape for mk, t in zip(makers, ins)]):
        return False
    y: Tensor | None = None
    for (kind, t, _), src in zip(operands, ins):  # in place over a dying full-size input
        if kind == "tensor" and src is t and t.kind == "value" and t.producer is not None and t.producer.native \
                and t.shape == phys and t.layout == layout and len(tensors) >= 1 and _dies_here(L, t, node):
            y = L.p.view(t, phys, lambda a: a, layout=layout, name=last.friendly_name)
            break
    if y is None:
        y = L.value(phys, layout, name=last.friendly_name)
    threads = L.threads

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        k = eltwise_kernel(outs[0], [mk(a) for mk, a in zip(makers, arrs)], prog, threads, L.isa)
        if k is None:
            raise EmberError(f"ember: internal: elementwise chain at '{node.friendly_name}' does not fit the kernel")
        return [k]

    L.p.add(Op(node.friendly_name, "Eltwise:" + "+".join(n.type_name for n in [node, *fused]), ins, [y],
               native=True, bind=bind))
    L.finish(last, y, fused)
    return True


def _dies_here(L: Lowering, t: Tensor, node: Node) -> bool:
    """Whether ``node`` is the last reader of ``t`` (so its output may reuse t's memory)."""
    keys = [key for key, v in L.ports.items() if v is t]
    if len(keys) != 1 or any(v.base is t for v in L.p.tensors if v.kind == "view"):
        return False
    for s in node._inputs:
        if (id(s.node), s.index) == keys[0]:
            return all(c.node is node for c in s.node._consumers[s.index]) and not L.is_result(s)
    return False


# -- rows: SoftMax, LogSoftmax, MVN -----------------------------------------------------------

def _row_source(L: Lowering, port: Output, axis: int) -> tuple[Tensor, int, int, str] | None:
    """The input of a last-axis row op as ``(tensor, rows, n, layout)``: NHWC tensors
    normalized over channels are rows already; otherwise plain and contiguous."""
    shape = _static(port)
    t = L.tensor(port)
    if t.layout == NHWC and axis == 1:
        n, c, h, w = shape
        return L.native_input(t, NHWC), n * h * w, c, NHWC
    if axis != len(shape) - 1:
        return None
    t = L.native_input(t, PLAIN)
    n = shape[-1] if shape else 1
    return t, int(np.prod(shape[:-1])), n, PLAIN


@lowers("Softmax", "SoftMax", "LogSoftmax")
def lower_softmax(L: Lowering, node: Node) -> bool:
    from ember.devices.cpu.norm import row_kernel

    port = node._inputs[0]
    if port.element_type.dtype != F32 or len(port.partial_shape) == 0:
        return False
    rank = len(port.partial_shape)
    src = _row_source(L, port, node.attrs["axis"] % rank)
    if src is None:
        return False
    x, rows, n, layout = src
    if rows * n == 0:
        return False
    y = L.value(x.shape, layout, name=node.friendly_name)
    kind = "logsoftmax" if node.type_name == "LogSoftmax" else "softmax"
    threads = L.threads

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [row_kernel(ins[0].reshape(rows, n), outs[0].reshape(rows, n), kind, threads, isa=L.isa)]

    L.p.add(Op(node.friendly_name, node.type_name, [x], [y], native=True, bind=bind))
    L.finish(node, y, [])
    return True


@lowers("MVN")
def lower_mvn(L: Lowering, node: Node) -> bool:
    from ember.devices.cpu.norm import row_kernel
    from ember.ops.reduce import reduction_axes

    port = node._inputs[0]
    axes_v = const_of(node._inputs[1])
    if port.element_type.dtype != F32 or node.version != "opset6" or axes_v is None:
        return False
    shape = _static(port)
    rank = len(shape)
    if rank == 0:
        return False
    axes = reduction_axes(node, axes_v, rank)
    if sorted(axes) != list(range(rank - len(axes), rank)):  # the trailing axes only
        return False
    n = int(np.prod([shape[a] for a in axes]))
    rows = int(np.prod(shape)) // n if n else 0
    if rows * n == 0:
        return False
    x = L.native_input(L.tensor(port), PLAIN)
    # LayerNorm's affine tail: * scale (per column or scalar), + shift (per column or scalar)
    scale = shift = None
    last, fused = node, []
    for kind in ("Multiply", "Add"):
        nxt = L.sole_consumer(last)
        if nxt is None or nxt.type_name != kind or len(nxt._inputs) != 2:
            break
        other = nxt._inputs[1] if nxt._inputs[0].node is last else nxt._inputs[0]
        c = const_of(other)
        if c is None or c.dtype != F32 or nxt.output(0).partial_shape != node.output(0).partial_shape:
            break
        full = (1,) * (rank - c.ndim) + c.shape if c.ndim <= rank else None
        if full is None or any(d != 1 for d in full[:rank - len(axes)]):
            break
        vec_ = np.ascontiguousarray(np.broadcast_to(c.reshape(full[rank - len(axes):]),
                                                    [shape[a] for a in axes]).reshape(-1), np.float32)
        if kind == "Multiply":
            scale = vec_
        else:
            shift = vec_
        last = nxt
        fused.append(nxt)
    y = L.value(shape, PLAIN, name=last.friendly_name)
    eps = float(np.float32(node.attrs["eps"]))
    variance = bool(node.attrs["normalize_variance"])
    inside = str(node.attrs["eps_mode"]).lower() == "inside_sqrt"
    threads = L.threads

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [row_kernel(ins[0].reshape(rows, n), outs[0].reshape(rows, n), "mvn", threads, eps=eps,
                           normalize_variance=variance, eps_inside=inside, scale=scale, shift=shift, isa=L.isa)]

    L.p.add(Op(node.friendly_name, "MVN", [x], [y], native=True, bind=bind))
    L.finish(last, y, fused)
    return True


# -- transposes and attention -----------------------------------------------------------------

def _is_identity(perm: list[int], shape: tuple[int, ...]) -> bool:
    """Whether permuting axes ``perm`` of ``shape`` keeps the memory order (size-1 axes move freely)."""
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


@lowers("Transpose")
def lower_transpose(L: Lowering, node: Node) -> bool:
    src = L.tensor(node._inputs[0])
    perm_v = const_of(node._inputs[1])
    if src.kind not in ("value", "view") or perm_v is None:
        return False
    rank = len(src.logical_shape)
    perm = [int(p) % rank for p in np.asarray(perm_v).reshape(-1)] if perm_v.size else list(range(rank))[::-1]
    shape = _static(node.output(0))
    if src.layout == NHWC:  # permute the logical axes of the physical NHWC array
        full = [(0, 3, 1, 2)[p] for p in perm]
        contiguous = src.contiguous and _is_identity(full, src.shape)
        t = L.p.view(src, shape, lambda a, f=tuple(full): a.transpose(f), contiguous=contiguous,
                     name=node.friendly_name)
    else:
        contiguous = src.contiguous and _is_identity(perm, src.shape)
        t = L.p.view(src, shape, lambda a, f=tuple(perm): a.transpose(f), contiguous=contiguous,
                     name=node.friendly_name)
    L.finish(node, t, [])
    return True


@lowers("ScaledDotProductAttention")
def lower_attention(L: Lowering, node: Node) -> bool:
    from ember.devices.cpu.attention import attention_kernel, fits

    ports = node._inputs
    if any(p.element_type.dtype != F32 for p in ports[:3]) or node.output(0).element_type.dtype != F32:
        return False
    shapes = [_static(p) for p in ports[:3]]
    out_shape = _static(node.output(0))
    if any(len(s) < 2 or len(s) > 4 for s in shapes) or len(out_shape) > 4:
        return False
    causal = bool(node.attrs["causal"])
    mask_t = None
    if len(ports) > 3 and not causal:
        mc = const_of(ports[3])
        if ports[3].element_type.dtype != F32 or len(ports[3].partial_shape) > 4:
            return False
        if mc is None or np.any(mc != 0):
            mask_t = L.p.const(np.ascontiguousarray(mc, np.float32)) if mc is not None \
                else L.native_input(L.tensor(ports[3]), PLAIN)
    if len(ports) > 4:
        s = _scalar(ports[4])
        if s is None:
            return False
        scale = s
    else:
        scale = 1.0 / math.sqrt(shapes[0][-1])
    e, s_len = shapes[0][-1], shapes[1][-2]
    if not fits(s_len, e, L.isa) or s_len == 0 or shapes[1][-1] != e:
        return False

    def four(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (1,) * (4 - len(shape)) + tuple(shape)

    ins = []
    for p in ports[:3]:  # strided views are fine while their last axis is contiguous
        t = L.native_input(L.tensor(p), PLAIN, contiguous=False)
        probe = probe_array(t)
        if probe.shape[-1] > 1 and probe.strides[-1] != probe.itemsize:
            t = L.native_input(t, PLAIN, contiguous=True)
        ins.append(t)
    o4 = four(out_shape)
    # the usual consumer merges heads back: Transpose(0, 2, 1, 3); write into its layout directly
    nxt = L.sole_consumer(node)
    merged = None
    if nxt is not None and nxt.type_name == "Transpose" and len(out_shape) == 4:
        pv = const_of(nxt._inputs[1])
        if pv is not None and [int(x) for x in np.asarray(pv).reshape(-1)] == [0, 2, 1, 3]:
            merged = nxt
    z = L.value(_static(merged.output(0)) if merged is not None else out_shape, PLAIN, name=node.friendly_name)
    mask_shape = None if mask_t is None else four(tuple(mask_t.logical_shape))
    threads = L.threads

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        q, k, v = (_contig_last(a.reshape(four(a.shape)) if a.ndim < 4 else a) for a in arrs[:3])
        m = arrs[3].reshape(mask_shape) if mask_t is not None else None
        o = outs[0].transpose(0, 2, 1, 3) if merged is not None else outs[0].reshape(o4)
        bshape = o4[:2]
        q, k, v = (np.broadcast_to(x, bshape + x.shape[2:]) for x in (q, k, v))
        return [attention_kernel(q, k, v, m, o, scale, causal, threads, L.isa)]

    all_ins = ins + ([mask_t] if mask_t is not None else [])
    L.p.add(Op(node.friendly_name, "ScaledDotProductAttention", all_ins, [z], native=True, bind=bind))
    if merged is not None:
        L.finish(merged, z, [merged])
    else:
        L.finish(node, z, [])
    return True


def _contig_last(a: np.ndarray) -> np.ndarray:
    if a.shape[-1] > 1 and a.strides[-1] != 4:
        raise EmberError("ember: internal: attention operand without a contiguous last axis")
    return a


# -- memory movement: Gather, Concat, slices as views -----------------------------------------

@lowers("Gather")
def lower_gather(L: Lowering, node: Node) -> bool:
    from ember.devices.cpu.eltwise import gather_rows

    data_p, idx_p, ax_p = node._inputs
    ax = const_of(ax_p)
    if ax is None or data_p.element_type.dtype.itemsize % 4 or idx_p.element_type.dtype not in (
            np.dtype(np.int32), np.dtype(np.int64)):
        return False
    dshape, ishape = _static(data_p), _static(idx_p)
    axis = int(np.asarray(ax).reshape(-1)[0]) % max(len(dshape), 1)
    bd = int(node.attrs.get("batch_dims", 0))
    if bd < 0:
        bd += len(ishape)
    if bd != 0 or not dshape:
        return False
    out_shape = _static(node.output(0))
    data = L.tensor(data_p)
    data = data if data.kind == "const" else L.native_input(data, PLAIN)
    idx = L.tensor(idx_p)
    idx = idx if idx.kind == "const" else L.native_input(idx, PLAIN)
    if data.kind == "const":
        data = L.p.const(np.ascontiguousarray(data.data))
    if idx.kind == "const":
        idx = L.p.const(np.ascontiguousarray(idx.data))
    y = L.value(out_shape, PLAIN, data_p.element_type.dtype, name=node.friendly_name)
    negative = node.version == "opset8"
    threads = L.threads

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        return [gather_rows(arrs[0], arrs[1], outs[0], axis, negative, threads, L.isa)]

    L.p.add(Op(node.friendly_name, "Gather", [data, idx], [y], native=True, bind=bind))
    L.finish(node, y, [])
    return True


@lowers("Concat")
def lower_concat(L: Lowering, node: Node) -> bool:
    from ember.devices.cpu.eltwise import strided_copy

    dtype = node.output(0).element_type.dtype
    if dtype.itemsize != 4 or any(s.element_type.dtype != dtype for s in node._inputs):
        return False
    out_shape = _static(node.output(0))
    rank = len(out_shape)
    if rank == 0:
        return False
    axis = int(node.attrs["axis"]) % rank
    tensors = [L.tensor(s) for s in node._inputs]
    nhwc = rank == 4 and axis == 1 and all(t.layout == NHWC for t in tensors if t.kind != "const") \
        and any(t.layout == NHWC for t in tensors)
    srcs: list[Tensor] = []
    for t in tensors:
        if t.kind == "const":
            arr = np.ascontiguousarray(t.data.transpose(0, 2, 3, 1)) if nhwc else t.data
            srcs.append(L.p.const(arr))
        else:
            srcs.append(L.native_input(t, NHWC if nhwc else PLAIN, contiguous=False))
    phys_axis = 3 if nhwc else axis
    phys = (out_shape[0], out_shape[2], out_shape[3], out_shape[1]) if nhwc else out_shape
    y = L.value(phys, NHWC if nhwc else PLAIN, dtype, name=node.friendly_name)
    sizes = [t.shape[phys_axis] for t in srcs]
    threads = L.threads

    def bind(arrs: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        kernels, start = [], 0
        for a, size in zip(arrs, sizes):
            dst = outs[0][(slice(None),) * phys_axis + (slice(start, start + size),)]
            start += size
            if a.size:
                k = strided_copy(a, dst, threads, L.isa)
                if k is None:
                    raise EmberError(f"ember: internal: Concat '{node.friendly_name}' input does not fit the copy kernel")
                kernels.append(k)
        return kernels

    L.p.add(Op(node.friendly_name, "Concat", srcs, [y], native=True, bind=bind))
    L.finish(node, y, [])
    return True


_MAX_INDEX_MAP = 1 << 24


def _affine(index_map: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
    """(offset, element strides) when ``index_map`` is a strided view of a flat buffer."""
    if index_map.size == 0:
        return 0, (0,) * index_map.ndim
    off = int(index_map.reshape(-1)[0])
    strides = []
    for ax, d in enumerate(index_map.shape):
        if d > 1:
            sl = [0] * index_map.ndim
            sl[ax] = 1
            strides.append(int(index_map[tuple(sl)]) - off)
        else:
            strides.append(0)
    grid = np.full(index_map.shape, off, np.int64)
    for ax, st in enumerate(strides):
        shape = [1] * index_map.ndim
        shape[ax] = index_map.shape[ax]
        grid = grid + (np.arange(index_map.shape[ax], dtype=np.int64) * st).reshape(shape)
    return (off, tuple(strides)) if np.array_equal(grid, index_map) else None


@lowers("Slice", "StridedSlice", "Split", "VariadicSplit")
def lower_slice_view(L: Lowering, node: Node) -> bool:
    """Slices and splits with constant parameters: views of their input (an index map
    computed once with the op's reference kernel says where each element comes from)."""
    consts = [const_of(p) for p in node._inputs[1:]]
    if any(c is None for c in consts):
        return False
    src = L.tensor(node._inputs[0])
    if src.kind not in ("value", "view"):
        return False
    shape = _static(node._inputs[0])
    size = int(np.prod(shape))
    if size > _MAX_INDEX_MAP:
        return False
    src = L.native_input(src, PLAIN, contiguous=True)
    maps = node.evaluate([np.arange(size, dtype=np.int64).reshape(shape), *consts])  # type: ignore[list-item]
    views = []
    for port, imap in zip(node.outputs(), maps):
        aff = _affine(np.asarray(imap))
        if aff is None or tuple(imap.shape) != _static(port):
            return False
        views.append((port, tuple(imap.shape), aff))
    item = src.dtype.itemsize
    for port, shp, (off, st) in views:
        contiguous = all(s == e for s, e, d in zip(st, _c_strides(shp), shp) if d > 1)

        def make(a: np.ndarray, off: int = off, st: tuple[int, ...] = st, shp: tuple[int, ...] = shp) -> np.ndarray:
            flat = a.reshape(-1)
            return np.lib.stride_tricks.as_strided(flat[off:] if flat.size else flat, shp,
                                                   tuple(s * item for s in st), writeable=False)

        L.bind_port(port, L.p.view(src, shp, make, contiguous=contiguous, name=node.friendly_name))
    return True


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))
