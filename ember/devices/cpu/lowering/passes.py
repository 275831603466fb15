"""The CPU device's own graph passes, run after the optimizer's level-2 pipeline."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from ember.devices.cpu.lowering.activations import epilogue_activation
from ember.graph.core_ops import Constant, Parameter
from ember.graph.model import Model
from ember.graph.node import Node, Output
from ember.graph.types import Type

if TYPE_CHECKING:
    from ember.devices.cpu.lowering.driver import Lowering

log = logging.getLogger("ember.cpu")

# op types whose input 1 is a weight the CPU kernels want as one f32 constant
_WEIGHT_USERS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul",
                 "Gather")
_MAX_FOLD_BYTES = 1 << 31


def _constant_subgraph_value(port: Output, memo: dict[tuple[int, int], np.ndarray | None]) -> np.ndarray | None:
    """The value of ``port`` if it depends on constants only (evaluated with reference kernels)."""
    key = (id(port.node), port.index)
    if key in memo:
        return memo[key]
    node = port.node
    val: np.ndarray | None = None
    if isinstance(node, Constant):
        val = node.data
    elif not isinstance(node, Parameter) and node.foldable and not node.bodies() and node.input_values():
        args = [_constant_subgraph_value(s, memo) for s in node.input_values()]
        known = [a for a in args if a is not None]
        if len(known) == len(args):
            try:
                val = node.evaluate(known)[port.index]
            except Exception:  # noqa: BLE001 - not foldable after all
                val = None
    memo[key] = val
    return val


def fold_weight_decompression(model: Model) -> int:
    """Replace constant subgraphs that feed weights (f16 ``Convert``, int8/int4
    ``Convert -> Subtract -> Multiply`` decompression) by one f32 constant each, so that the
    kernels pack plain f32 weights once. Returns how many were folded."""
    memo: dict[tuple[int, int], np.ndarray | None] = {}
    folded = 0
    for node in model.get_ordered_ops():
        if node.type_name not in _WEIGHT_USERS:
            continue
        idx = 0 if node.type_name == "Gather" else 1
        if len(node.input_values()) <= idx:
            continue
        port = node.input_values()[idx]
        if isinstance(port.node, Constant):
            continue
        val = _constant_subgraph_value(port, memo)
        if val is None or val.dtype.kind != "f" or val.nbytes > _MAX_FOLD_BYTES:
            continue
        c = Constant.from_array(np.asarray(val, order="C"), Type.from_dtype(val.dtype),
                                name=port.node.friendly_name + "/folded")
        port.replace(c.output(0))
        folded += 1
    if folded:
        log.debug("CPU: folded %d weight decompression subgraphs", folded)
    return folded


def fold_constant_converts(model: Model) -> int:
    """A float Constant behind a Convert to another float type (an IR's f16-compressed biases
    and scales) -> one Constant of the converted type, so bias Adds see a constant. Returns
    how many were folded."""
    folded = 0
    for node in model.get_ordered_ops():
        if node.type_name != "Convert" or not isinstance(node.input_values()[0].node, Constant):
            continue
        src, out = node.input_values()[0].node.data, node.output(0)
        if src.dtype.kind != "f" or out.element_type.dtype.kind != "f" or src.nbytes > _MAX_FOLD_BYTES:
            continue
        c = Constant.from_array(src.astype(out.element_type.dtype), out.element_type, name=node.friendly_name)
        out.replace(c.output(0))
        folded += 1
    return folded


def decompose_batchnorm(model: Model) -> int:
    """BatchNormInference with constant parameters (one the optimizer could not fold into a
    convolution) -> ``x * scale + shift`` per channel, which the elementwise kernel runs."""
    import ember.opset as ops

    done = 0
    for node in model.get_ordered_ops():
        if node.type_name != "BatchNormInference":
            continue
        data = node.input_values()[node.data_port]
        params = [node.input_values()[p].node for p in node.param_ports]
        rank = data.partial_shape.rank
        if not all(isinstance(c, Constant) for c in params) or not rank.is_static or rank.get_length() < 2:
            continue
        gamma, beta, mean, var = (c.data.astype(np.float64).reshape(-1) for c in params)
        scale = gamma / np.sqrt(var + node.attrs["epsilon"])
        shape = (1, -1) + (1,) * (rank.get_length() - 2)
        dtype = data.element_type.dtype
        y = ops.add(ops.multiply(data, (scale.reshape(shape)).astype(dtype)),
                    (beta - mean * scale).reshape(shape).astype(dtype), name=node.friendly_name)
        node.output(0).replace(y.output(0))
        done += 1
    return done


# elementwise ops the CPU device runs as (part of) one fused program (``lowering/eltwise.py``)
_CHAINABLE = frozenset({
    "Add", "Subtract", "Multiply", "Divide", "Maximum", "Minimum", "SquaredDifference", "Power", "PRelu",
    "ReLU", "Clamp", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Abs", "Negative", "Elu", "Erf", "Gelu",
    "HSwish", "HSigmoid", "Swish", "Mish", "SoftPlus", "Floor", "Ceiling", "Convert"})
_COMMUTATIVE = ("Add", "Multiply", "Maximum", "Minimum")


def _chains_into(port: Output, node: Node) -> bool:
    """Whether the elementwise program computing ``port`` can run on into ``node``: an
    elementwise op read by ``node`` only, of ``node``'s shape (as far as known: lowering checks
    the static shapes; the reorder itself is exact whatever they are)."""
    src = port.node
    return src.type_name in _CHAINABLE and src.get_output_size() == 1 and len(port.targets) == 1 \
        and port.partial_shape.rank_is_static and port.partial_shape.compatible(node.output(0).partial_shape)


def order_chain_operands(model: Model) -> int:
    """Put first the computed operand of a commutative binary elementwise op (Add, Multiply,
    Maximum, Minimum) that no elementwise program leads into, when its other operand is such a
    program: lowering visits inputs in order, so that operand (an FPN's upsampled map, a
    residual) is computed before the program starts, and the program runs on through this op
    instead of storing a full-size intermediate for it (PP-OCR's neck: ``x * se + x + up`` is
    one pass). Epilogue groups are marked again for the new order; if that would lose any, the
    order is left as it was. Returns how many ops were reordered."""
    from ember.passes.fusions import FUSED_GROUP, mark_epilogue_groups

    def groups() -> int:
        return sum(1 for n in model.get_ordered_ops() if isinstance(n.rt_info.get(FUSED_GROUP), dict))

    before = groups()
    swapped: list[Node] = []
    for node in model.get_ordered_ops():
        if node.type_name not in _COMMUTATIVE or len(node.input_values()) != 2 or FUSED_GROUP in node.rt_info:
            continue
        a, b = node.input_values()
        if isinstance(b.node, (Constant, Parameter)) or not _chains_into(a, node) or _chains_into(b, node):
            continue
        node.input(0).replace_source_output(b)
        node.input(1).replace_source_output(a)
        swapped.append(node)
    if not swapped:
        return 0
    mark_epilogue_groups(model)
    if groups() < before:  # an epilogue's residual would come after its producer: undo
        for node in swapped:
            b, a = node.input_values()
            node.input(0).replace_source_output(a)
            node.input(1).replace_source_output(b)
        mark_epilogue_groups(model)
        return 0
    log.debug("CPU: %d elementwise operands reordered to extend fused chains", len(swapped))
    return len(swapped)


def take_epilogue_activation(lowering: Lowering, producer: Node, last: Node, fused: list[Node],
                             lohi: tuple[float, float]) -> tuple[str, Node, list[Node]]:
    """The activation after an epilogue chain ending at ``last`` (``lohi``: its clamp), when
    ``last``'s only consumer is one (:func:`epilogue_activation`) of the producer's shape:
    ``(activation, new last, new fused)``, else ``("", last, fused)``. A clamp and an
    activation are not combined (no network has both)."""
    none = "", last, fused
    if lohi != (-math.inf, math.inf):
        return none
    after = lowering.sole_consumer(last)
    if after is None or after.input_values()[0].node is not last:
        return none
    act = epilogue_activation(after)
    if act is None or after.output(0).partial_shape != producer.output(0).partial_shape \
            or after.output(0).element_type.dtype != np.float32:
        return none
    log.debug("CPU: %s fused into the epilogue of %s", after.friendly_name, producer.friendly_name)
    return act, after, [*fused, after]


def bf16_gemm_readers_only(lowering: Lowering, last: Node) -> bool:
    """Whether ``last``'s output may be kept bf16 under the bf16 hint because every reader is a
    MatMul with constant f32 weights reading it as A (the bf16 GEMM then reads it straight into
    its packed rows): a transformer's FFN up-projection (GELU fused) read by the down-projection."""
    port = last.output(0)
    if lowering.precision != "bf16" or lowering.is_result(port) or not port.targets \
            or port.element_type.dtype != np.float32:
        return False
    rank = port.partial_shape.rank
    if not port.partial_shape.is_static or rank.get_length() < 2:
        return False
    for t in port.targets:  # the MatMul rule's own conditions (it must not fall back to REFERENCE)
        reader = t.node
        if reader.type_name != "MatMul" or t.index != 0 or reader.attrs["transpose_a"]:
            return False
        w = reader.input_values()[1].node
        if not isinstance(w, Constant) or w.data.dtype != np.float32 or w.data.ndim < 2 \
                or w.data.ndim > rank.get_length() or any(d != 1 for d in w.data.shape[:-2]):
            return False
    return True


def device_passes(model: Model) -> Model:
    """Everything the CPU device does to a model before lowering, with one optimizer run:
    quantized convolutions and MatMuls made int8 ops first (``low_precision``), weight
    decompression folded next (so the optimizer's fusions see plain f32 weights),
    the level-2 pipeline, then what it exposed folded and leftover BatchNorms decomposed."""
    from ember.devices.cpu.lowering.halves import compute_halves_in_f32
    from ember.devices.cpu.lowering.low_precision import lower_precision
    from ember.passes import optimize
    from ember.passes.matcher import prune_dead_consumers

    lower_precision(model)  # quantized patterns -> int8 ops, before their weights are folded to f32
    fold_weight_decompression(model)
    fold_constant_converts(model)
    compute_halves_in_f32(model)  # f16/bf16 through f32-only kernels: Converts around them
    model = optimize(model, 2, copy=False)
    if fold_weight_decompression(model) + decompose_batchnorm(model):
        prune_dead_consumers(model)  # the replaced nodes must not count as consumers when lowering
    order_chain_operands(model)
    return model


__all__ = ["bf16_gemm_readers_only", "decompose_batchnorm", "device_passes", "epilogue_activation", "fold_constant_converts",
           "fold_weight_decompression", "order_chain_operands", "take_epilogue_activation"]
