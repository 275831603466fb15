"""Lowering rules for If, Loop and TensorIterator (docs/cpu-control-flow.md).

An If whose condition is known when the plan is lowered (a constant, or a value the device's
passes folded, e.g. a test on a static shape) is *inlined*: the taken body, passed through the
device's graph passes, is lowered into the enclosing plan as if its nodes were the outer
graph's, so it costs nothing per call (nested Ifs of the body are inlined the same way).

Otherwise each branch is a model of its own, compiled for the CPU device (native plans, lowered
again per input shape when its shapes are dynamic) by the ``compile_body`` callback the device
gives the lowering (so rules never import the device); the plan step evaluates the condition
and runs the chosen branch. A condition that is a comparison of a scalar with a constant
(``sr == 16000``) is evaluated by that step itself, so the comparison needs no op of its own.

Loop and TensorIterator compile their body the same way; the op's own evaluation drives the
iterations and runs that plan once per iteration.
"""

from __future__ import annotations

import queue
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import (
    DYNAMIC_OK,
    RULES,
    BodyCompiler,
    Lowering,
    NotHere,
    log,
    lowers,
    shape_or_none,
)
from ember.devices.cpu.runtime.plan import PLAIN, Op
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Node, Output

#: bodies inlined into a lowering, kept alive while it runs (its ``done`` set holds node ids)
_INLINED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Branch:
    """One body of an If on the CPU device. Executables are not thread safe, so concurrent
    callers (streams) each take one from a free list, made on first need."""

    def __init__(self, body: Model, compile_body: BodyCompiler, invalid: Exception | None = None) -> None:
        self.compile_body = compile_body
        #: why this body cannot run with the If's input shapes (it is compiled when first taken)
        self.invalid = invalid
        self.model: Model | None = None
        if invalid is None:
            from ember.devices.cpu.lowering.passes import device_passes

            self.model = device_passes(body.clone())
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._first: Any = None

    def _make(self) -> Any:
        if self.model is None:
            from ember.errors import InferenceError

            raise InferenceError(str(self.invalid))
        if self._first is None:
            self._first = self.compile_body(self.model)
            return self._first
        return self._first.clone()

    def run(self, feed: Sequence[np.ndarray]) -> list[np.ndarray]:
        try:
            exe = self._free.get_nowait()
        except queue.Empty:
            exe = self._make()
        try:
            return exe.run(feed)
        finally:
            self._free.put(exe)


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "Equal": np.equal, "NotEqual": np.not_equal, "Less": np.less, "LessEqual": np.less_equal,
    "Greater": np.greater, "GreaterEqual": np.greater_equal}


def _lower_node(lowering: Lowering, node: Node) -> None:
    """``node`` (of an inlined body) lowered into ``lowering`` as its driver lowers outer nodes."""
    if id(node) in lowering.done or isinstance(node, (Parameter, Result)):
        return
    lowering.done.add(id(node))
    if isinstance(node, Constant):
        lowering.bind_port(node.output(0), lowering.program.const(node.data, node.friendly_name))
        return
    rule = RULES.get(node.type_name)
    ports = list(node.input_values()) + list(node.outputs())
    ok = False
    if rule is not None and not any(p.element_type.name in ("string", "sequence") for p in ports) \
            and (node.type_name in DYNAMIC_OK or all(lowering.tensor(s).shape is not None for s in node.input_values())):
        try:
            ok = rule(lowering, node)
        except NotHere:
            ok = False
    if ok:
        lowering.native_nodes += 1
        log.debug("CPU: %s '%s' (inlined If body) -> native", node.type_name, node.friendly_name)
    else:
        lowering.reference(node)


def _inline(lowering: Lowering, node: Node, b: int) -> bool:
    """Lower body ``b`` of ``node`` into the enclosing plan; False (nothing done) when a body
    parameter is not fed, an output is missing or an input's shape is known at run time only."""
    from ember.devices.cpu.lowering.passes import device_passes

    ins = node.input_values()
    fed = {d.body_parameter_index: d.input_index for d in node.get_input_descriptions(b)}
    outs = {d.output_index: d.body_value_index for d in node.get_output_descriptions(b)}
    if set(outs) != set(range(node.get_output_size())):
        return False
    if any(lowering.tensor(ins[i]).shape is None for i in fed.values()):
        return False
    model = device_passes(node.bodies()[b].clone())
    params = model.get_parameters()
    if set(fed) != set(range(len(params))):
        return False
    _INLINED.setdefault(lowering, []).append(model)
    for k, p in enumerate(params):
        lowering.done.add(id(p))
        lowering.bind_port(p.output(0), lowering.tensor(ins[fed[k]]))
    results = model.get_results()
    for r in results:  # a body output may leave the body: nothing fuses into it
        src = r.input_values()[0]
        lowering.results.add((id(src.node), src.index))
    for n in model.get_ordered_ops():
        _lower_node(lowering, n)
    for o, v in outs.items():
        lowering.bind_port(node.output(o), lowering.tensor(results[v].input_values()[0]))
    return True


def _scalar_test(lowering: Lowering, cond: Output) -> tuple[Output, Callable[[Any, Any], Any], Any] | None:
    """``(x, compare, c)`` when ``cond`` is ``compare(x, c)`` of a one-element value ``x`` and a
    one-element constant ``c``, read by the If alone: the If step evaluates it itself."""
    node = cond.node
    fn = _COMPARE.get(node.type_name)
    if fn is None or len(cond.targets) != 1 or lowering.is_result(cond):
        return None
    a, c = node.input_values()
    cv = node.input_value(1)
    if cv is None or np.asarray(cv).size != 1 or not lowering.has(a):  # (a fused into the comparison)
        return None
    shape = lowering.tensor(a).shape
    if shape is None or int(np.prod(shape)) != 1:
        return None
    return a, fn, np.asarray(cv).reshape(()).astype(a.element_type.dtype)


def _drop_reference_op(lowering: Lowering, node: Node) -> None:
    """Forget that ``node`` ran on its reference kernel (its op is dead: pruned with the plan)."""
    n = lowering.fallbacks.get(node.type_name, 0) - 1
    if n > 0:
        lowering.fallbacks[node.type_name] = n
    else:
        lowering.fallbacks.pop(node.type_name, None)
    lowering.program.stats.get("exec_types", {}).pop(node.friendly_name, None)


@lowers("If", dynamic=True)
def lower_if(lowering: Lowering, node: Node) -> bool:
    bodies = node.bodies()
    if len(bodies) != 2 or any(b is None for b in bodies):
        return False
    cond = node.input_value(0)
    if cond is not None and np.asarray(cond).size >= 1 \
            and _inline(lowering, node, 0 if bool(np.asarray(cond).reshape(-1)[0]) else 1):
        return True
    if lowering.compile_body is None:
        return False
    invalid = getattr(node, "invalid_body_error", lambda b: None)
    branches = [Branch(body, lowering.compile_body, invalid(b)) for b, body in enumerate(bodies)]
    in_descs = [[(d.input_index, d.body_parameter_index) for d in node.get_input_descriptions(b)] for b in (0, 1)]
    out_descs = [[(d.body_value_index, d.output_index) for d in node.get_output_descriptions(b)] for b in (0, 1)]
    n_params = [len(b.get_parameters()) for b in bodies]
    dtypes = [o.element_type.dtype for o in node.outputs()]
    name = node.friendly_name
    in_ports = list(node.input_values())
    test = _scalar_test(lowering, in_ports[0])
    if test is not None:
        cond_node, cond_t = in_ports[0].node, lowering.tensor(in_ports[0])
        in_ports[0], compare, constant = test
        if any(op.outputs and op.outputs[0] is cond_t and not op.native for op in lowering.program.ops):
            _drop_reference_op(lowering, cond_node)

        def taken(c: np.ndarray) -> int:
            return 0 if compare(c.reshape(-1)[0], constant) else 1
    else:
        def taken(c: np.ndarray) -> int:
            return 0 if bool(np.asarray(c).reshape(-1)[0]) else 1

    def run(args: list[np.ndarray]) -> list[np.ndarray]:
        b = taken(args[0])
        feed: list[Any] = [None] * n_params[b]
        for i, p in in_descs[b]:
            feed[p] = args[i]
        values = branches[b].run(feed)
        outs: list[Any] = [None] * len(dtypes)
        for v, o in out_descs[b]:
            outs[o] = np.asarray(values[v], dtype=dtypes[o])
        if any(x is None for x in outs):
            from ember.errors import InferenceError

            raise InferenceError(f"ember: If '{name}': its {('then', 'else')[b]} branch does not produce every output")
        return outs

    run.branches = branches  # type: ignore[attr-defined]  # read by plan_fallbacks
    ins = [lowering.tensor(s) for s in in_ports]
    outs = []
    for o in node.outputs():
        t = lowering.value(shape_or_none(o), PLAIN, o.element_type.dtype, node.friendly_name)
        outs.append(t)
        lowering.bind_port(o, t)
    # not a reference kernel: its branches guard numpy's BLAS themselves when they need to
    physical = all(t.layout == PLAIN for t in ins)
    lowering.program.add(Op(node.friendly_name, "If", ins, outs, native=False, physical=physical, fn=run))
    return True


@lowers("Loop", "TensorIterator", dynamic=True)
def lower_loop(lowering: Lowering, node: Node) -> bool:
    """Loop and TensorIterator: the body compiled as a CPU plan (lowered again per input shape
    when its shapes change), driven iteration by iteration by the op's own evaluation (trip
    count, condition, slicing, concatenation and back edges as the reference does)."""
    from ember.devices.cpu.lowering.loop_lstm import lower_loop_lstm

    bodies = node.bodies()
    if len(bodies) != 1 or bodies[0] is None:
        return False
    if node.type_name == "Loop" and lower_loop_lstm(lowering, node):  # an LSTM layer: one kernel
        return True
    if lowering.compile_body is None:
        return False
    branch = Branch(bodies[0], lowering.compile_body)
    evaluate = node.evaluate
    use = node.use_body_runner

    def run(args: list[np.ndarray]) -> list[np.ndarray]:
        use(0, branch)
        return evaluate(args)

    run.branches = [branch]  # type: ignore[attr-defined]  # read by plan_fallbacks
    ins = [lowering.tensor(s) for s in node.input_values()]
    outs = []
    for o in node.outputs():
        t = lowering.value(shape_or_none(o), PLAIN, o.element_type.dtype, node.friendly_name)
        outs.append(t)
        lowering.bind_port(o, t)
    physical = all(t.layout == PLAIN for t in ins)
    lowering.program.add(Op(node.friendly_name, node.type_name, ins, outs, native=False, physical=physical, fn=run))
    return True


def plan_fallbacks(program: Any) -> dict[str, int]:
    """Reference-kernel ops of ``program`` and of the If branch plans compiled so far (op type ->
    count): ``program.stats["fallbacks"]`` counts the enclosing plan only."""
    found = dict(program.stats.get("fallbacks", {}))
    for op in program.ops:
        for branch in getattr(op.fn, "branches", ()):
            exe = branch._first
            for inst_prog in ([] if exe is None else [exe.program]):
                if inst_prog is None:
                    continue
                for k, v in plan_fallbacks(inst_prog).items():
                    found[k] = found.get(k, 0) + v
    return found
