"""Where quantizers go, decided as NNCF's propagation solver decides for OpenVINO models.

Quantizers start at the activation inputs of the ops the CPU runs in int8 (convolutions,
MatMul, and elementwise/pooling/normalization ops fed by two activations), move up through
precision-preserving ops (MaxPool, Reshape, Transpose, Split, Pad, ...), merge at a fork when
every branch wants the same quantizer, and become one shared-scale group at a Concat's inputs.
Weights of convolutions and MatMuls are quantized per output channel.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ember.graph.model import Model
from ember.graph.node import Input, Node, Output
from ember.quantize.graph_utils import Constants
from ember.quantize.parameters import IgnoredScope, ModelType, QuantizationError

LINEAR = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
          "DeformableConvolution", "MatMul"}
#: ops whose weights get the first-layer overflow fix (NNCF: the Convolution metatype only)
CONVOLUTIONS = {"Convolution"}
#: quantized when at least two inputs are activations (a constant operand makes them a fused
#: scale/shift, which NNCF never quantizes)
BINARY_QUANTIZABLE = {"Add", "Subtract", "Multiply", "Divide", "Maximum", "Minimum", "FloorMod",
                      "Less", "LessEqual", "Greater", "GreaterEqual", "Equal", "NotEqual", "LogicalAnd",
                      "LogicalOr", "LogicalXor", "SquaredDifference"}
#: quantized on their data input
UNARY_QUANTIZABLE = {"AvgPool", "AdaptiveAvgPool", "ReduceMean", "MVN", "NormalizeL2", "Interpolate", "LogicalNot",
                     "GroupNormalization", "ReduceL2", "ReduceSum", "BatchNormInference", "Power", "Sqrt"}
SEQUENCES = {"LSTMSequence": (0, 1, 2), "GRUSequence": (0, 1)}
#: precision-preserving ops a quantizer moves up through: {type: data input port}
AGNOSTIC = {t: 0 for t in ("MaxPool", "AdaptiveMaxPool", "ReduceMax", "Reshape", "Squeeze", "Unsqueeze", "Split",
                           "VariadicSplit", "Transpose", "Tile", "StridedSlice", "ShuffleChannels", "Broadcast", "Pad",
                           "ConvertLike", "Gather", "GatherND", "GatherElements", "DepthToSpace", "SpaceToDepth",
                           "BatchToSpace", "SpaceToBatch")}
#: agnostic ops that keep the channel axis where it is (a per-channel quantizer may pass them)
CHANNEL_PRESERVING = {"MaxPool", "Pad", "ConvertLike"}
#: what TRANSFORMER models keep in float (NNCF's ignored metatypes for that model type; quantizers
#: do not pass through them either)
TRANSFORMER_IGNORED = {"Add", "Power", "Squeeze", "Subtract", "AvgPool", "ReduceMean", "ReduceL2", "ReduceSum",
                       "SquaredDifference", "MVN", "GroupNormalization", "BatchNormInference", "Divide", "Sqrt",
                       "Maximum", "GreaterEqual", "Greater", "LessEqual", "Less", "NotEqual", "Equal", "Multiply"}
FLOATS = {"f32", "f16", "bf16", "f64"}


@dataclass(frozen=True)
class Config:
    """How one activation quantizer is shaped: per tensor, or per channel along ``axis``;
    quantizers with the same ``group`` share one range (a Concat's inputs)."""

    axis: int | None = None
    group: int | None = None


@dataclass
class ActivationQuantizer:
    """A FakeQuantize on ``output``, read by ``consumers`` (all of the port's consumers when
    ``shared``, else the one edge)."""

    output: Output
    consumers: list[Input]
    config: Config
    shared: bool
    #: forced symmetric whatever the preset (TRANSFORMER: inputs of MatMuls of two activations)
    symmetric: bool = False

    @property
    def name(self) -> str:
        if self.shared:
            return f"{self.output.node.friendly_name}/fq_output_{self.output.index}"
        c = self.consumers[0]
        return f"{c.node.friendly_name}/fq_input_{c.index}"


@dataclass
class WeightQuantizer:
    """Per-output-channel quantization of the constant on input ``port`` of ``node``."""

    node: Node
    port: int
    channel_axes: tuple[int, ...]
    half_range: bool = False


@dataclass
class Placement:
    activations: list[ActivationQuantizer] = field(default_factory=list)
    weights: list[WeightQuantizer] = field(default_factory=list)
    #: quantizable ops left in float, with the reason ("ignored scope", "transformer rules", ...)
    skipped: dict[str, str] = field(default_factory=dict)


# -- the graph questions ------------------------------------------------------------------------

def _is_float(out: Output) -> bool:
    return out.element_type.name in FLOATS


def _activation(consts: Constants, node: Node, port: int) -> bool:
    src = node.input(port).source
    return _is_float(src) and not consts.is_const(src)


def is_depthwise(node: Node) -> bool:
    """A GroupConvolution with one input channel per group and more than one group."""
    if node.type_name != "GroupConvolution":
        return False
    w = node.input_shape(1)
    return w.rank.is_static and len(w) >= 3 and w[0].is_static and w[2].is_static and \
        w[2].get_length() == 1 and w[0].get_length() > 1


def weight_channel_axes(node: Node, port: int) -> tuple[int, ...]:
    """The axes kept (not reduced) when a weight is quantized per output channel."""
    rank = len(node.input_shape(port))
    t = node.type_name
    if t in ("Convolution", "DeformableConvolution"):
        return (0,)
    if t == "GroupConvolution":
        return (0, 1)
    if t == "ConvolutionBackpropData":
        return (1,)
    if t == "GroupConvolutionBackpropData":
        return (0, 2)
    # MatMul: reduce over the contracted axis of the constant, keep the others
    if rank == 1:
        return ()
    if port == 1:
        contracted = rank - 1 if node.attrs["transpose_b"] else rank - 2
    else:
        contracted = rank - 2 if node.attrs["transpose_a"] else rank - 1
    return tuple(a for a in range(rank) if a != contracted)


# -- ignored scope -----------------------------------------------------------------------------

def ignored_nodes(model: Model, scope: IgnoredScope | None) -> set[int]:
    """ids of the nodes ``scope`` names; with ``scope.validate`` a rule matching nothing is an error."""
    if not scope:
        return set()
    nodes = model.get_ordered_ops()
    by_name = {n.friendly_name: n for n in nodes}
    out: set[int] = set()
    missing: list[str] = []
    for name in scope.names:
        if name in by_name:
            out.add(id(by_name[name]))
        else:
            missing.append(f"name '{name}'")
    for pat in scope.patterns:
        rx = re.compile(pat)
        hit = [n for n in nodes if rx.fullmatch(n.friendly_name) or rx.match(n.friendly_name)]
        out |= {id(n) for n in hit}
        if not hit:
            missing.append(f"pattern '{pat}'")
    for t in scope.types:
        hit = [n for n in nodes if n.type_name == t]
        out |= {id(n) for n in hit}
        if not hit:
            missing.append(f"type '{t}'")
    for sg in scope.subgraphs:
        inner = _between(nodes, by_name, sg.inputs, sg.outputs)
        if not inner:
            missing.append(f"subgraph {list(sg.inputs)} -> {list(sg.outputs)}")
        out |= inner
    if missing and scope.validate:
        raise QuantizationError(f"ember: the ignored scope matches nothing for: {', '.join(missing)} "
                                "(pass IgnoredScope(..., validate=False) to allow this)")
    return out


def _between(nodes: list[Node], by_name: dict[str, Node], inputs: Iterable[str], outputs: Iterable[str]) -> set[int]:
    down: set[int] = set()
    for n in nodes:  # topological: a node is below an input when one of its sources is
        if n.friendly_name in inputs or any(id(o.node) in down for o in n.input_values()):
            down.add(id(n))
    up: set[int] = set()
    for n in reversed(nodes):
        if n.friendly_name in outputs or any(id(c.node) in up for o in n.outputs() for c in o.targets):
            up.add(id(n))
    return down & up


def _reads_softmax(n: Node) -> bool:
    """A MatMul fed by a SoftMax (directly or through a Reshape): NNCF's attention-output pattern."""
    for o in n.input_values():
        src = o.node
        if src.type_name == "Reshape":
            src = src.input(0).source.node
        if src.type_name in ("SoftMax", "Softmax"):
            return True
    return False


def _se_blocks(nodes: list[Node], consts: Constants) -> set[int]:
    """Squeeze-and-excitation blocks (ReduceMean -> conv -> act -> conv -> sigmoid -> Multiply,
    the gate a Sigmoid/HSigmoid op as NNCF's pattern asks): NNCF leaves them in float."""
    found: set[int] = set()
    for mul in nodes:
        if mul.type_name != "Multiply":
            continue
        for gate_port in (0, 1):
            chain: list[Node] = []
            n = mul.input(gate_port).source.node
            if n.type_name not in ("Sigmoid", "HSigmoid"):
                continue
            while n.type_name in ("Sigmoid", "HSigmoid", "Add", "Convolution", "MatMul", "ReLU", "PRelu", "Swish",
                                  "Reshape") and len(chain) < 10:
                chain.append(n)
                data = [o for o in n.input_values() if not consts.is_const(o)]
                if len(data) != 1:
                    break
                n = data[0].node
            if n.type_name == "ReduceMean" and n.input(0).source == mul.input(1 - gate_port).source and \
                    any(c.type_name in ("Sigmoid", "HSigmoid", "HardSigmoid") for c in chain[:2]):
                found |= {id(x) for x in chain} | {id(n), id(mul)}
    return found


# -- the solver ----------------------------------------------------------------------------------

def place(model: Model, ignored: set[int], model_type: ModelType | None = None) -> Placement:
    """Decide every quantizer of ``model``; ``ignored`` holds ids of nodes kept in float."""
    consts = Constants()
    nodes = model.get_ordered_ops()
    placement = Placement()
    ignored = set(ignored) | _se_blocks(nodes, consts)
    transformer = model_type == ModelType.TRANSFORMER
    if transformer:
        for n in nodes:
            if n.type_name in TRANSFORMER_IGNORED and id(n) not in ignored:
                ignored.add(id(n))
                placement.skipped[n.friendly_name] = "transformer rules"
    requests: dict[Input, Config] = {}
    groups = itertools.count()

    for n in nodes:
        t = n.type_name
        if t == "Gather" and id(n) not in ignored and consts.is_const(n.input(0).source) and _is_float(n.input(0).source) and \
                not consts.is_const(n.input(1).source) and n.get_input_size() > 2 and consts.is_const(n.input(2).source) and \
                len(n.input_shape(0)) == 2 and int(consts.value(n.input(2).source)) == 0:
            placement.weights.append(WeightQuantizer(n, 0, (0,)))  # an embedding table, per row
            continue
        if t in LINEAR or t in BINARY_QUANTIZABLE or t in UNARY_QUANTIZABLE or t in SEQUENCES:
            if id(n) in ignored:
                placement.skipped.setdefault(n.friendly_name, "ignored scope")
                continue
            if transformer and t == "MatMul" and _reads_softmax(n):
                placement.skipped[n.friendly_name] = "attention output (softmax x values)"
                continue
        else:
            continue
        if t in LINEAR:
            ports = (0, 1) if t == "MatMul" else (0,)
            for p in ports:
                if _activation(consts, n, p):
                    requests[Input(n, p)] = Config(axis=1 if is_depthwise(n) else None)
            wport = 1
            if t == "MatMul" and consts.is_const(n.input(0).source) and not consts.is_const(n.input(1).source):
                wport = 0
            src = n.input(wport).source
            if consts.is_const(src) and _is_float(src):
                placement.weights.append(WeightQuantizer(n, wport, weight_channel_axes(n, wport)))
        elif t in BINARY_QUANTIZABLE:
            acts = [p for p in range(n.get_input_size()) if _activation(consts, n, p)]
            fused = _fused_activation(consts, n) if len(acts) >= 2 else None
            if fused is not None:
                # an hswish ending a linear layer fuses into it; elsewhere NNCF quantizes the
                # Multiply's inputs and the input of the hard-sigmoid branch (its Add+Clamp)
                x, readers = fused
                if not _after_linear(consts, x):
                    for r in readers + [Input(n, p) for p in acts]:
                        requests[r] = Config()
            elif len(acts) >= 2:
                for p in acts:
                    requests[Input(n, p)] = Config()
        elif t in SEQUENCES:
            for p in SEQUENCES[t]:
                if p < n.get_input_size() and _activation(consts, n, p):
                    requests[Input(n, p)] = Config()
        elif _activation(consts, n, 0):
            requests[Input(n, 0)] = Config()

    # move requests up: merge at forks, pass precision-preserving ops, unify Concat inputs
    shared: dict[Output, Config] = {}
    changed = True
    while changed:
        changed = False
        for n in reversed(nodes):
            for out in n.outputs():
                targets = out.targets
                if out in shared or not targets:
                    continue
                # a ShapeOf reads only the shape: it neither wants nor blocks a shared quantizer
                wanting = [c for c in targets if c.node.type_name != "ShapeOf"]
                merged = _merge([requests.get(c) for c in wanting])
                if merged is None:
                    continue
                for c in wanting:
                    del requests[c]
                shared[out] = merged
                changed = True
            if _pass_through(consts, n, shared, requests, groups, ignored):
                changed = True

    for out, cfg in shared.items():
        placement.activations.append(ActivationQuantizer(out, out.targets, cfg, True))
    for inp, cfg in requests.items():
        placement.activations.append(ActivationQuantizer(inp.source, [inp], cfg, False))
    if transformer:
        for q in placement.activations:
            q.symmetric = any(m.type_name == "MatMul" and not any(consts.is_const(o) for o in m.input_values())
                              for m in _directly_quantized(q.consumers))
    _mark_first_layer(model, placement)
    return placement


def _merge(cfgs: list[Config | None]) -> Config | None:
    """The one quantizer a fork's branches can share: all must want one; a per-channel wish
    (depthwise input) gives way to per-tensor when another branch wants that, as NNCF does."""
    if not cfgs or any(c is None for c in cfgs):
        return None
    kinds = set(cfgs)
    if len(kinds) == 1:
        return cfgs[0]
    if all(c.group is None for c in kinds) and Config() in kinds:  # type: ignore[union-attr]
        return Config()
    return None


#: ops that make a hard-sigmoid out of their input (with constant operands only); NNCF fuses
#: ``x * hard_sigmoid(x)`` (hswish spellings) but quantizes ``x * sigmoid(x)``
_ACTIVATION_STEPS = {"Clamp", "HSigmoid", "HardSigmoid", "ReLU", "Add", "Multiply", "Divide", "Subtract", "Minimum",
                     "Maximum"}


def _fused_activation(consts: Constants, n: Node) -> tuple[Output, list[Input]] | None:
    """``x * f(x)`` with ``f`` a hard sigmoid spelled with clamps and constant arithmetic
    (hswish: ``x * clamp(x + 3, 0, 6) / 6``): one fused activation for NNCF, not quantized inside.
    Returns ``x`` and the group's inputs that read it."""
    if n.type_name != "Multiply":
        return None
    for p in (0, 1):
        other = n.input(1 - p).source
        src = n.input(p).source
        for _ in range(6):
            node = src.node
            if node.type_name not in _ACTIVATION_STEPS:
                break
            data = [i for i, o in enumerate(node.input_values()) if not consts.is_const(o)]
            if len(data) != 1:
                break
            src = node.input(data[0]).source
            if src == other:
                return other, [Input(n, 1 - p), Input(node, data[0])]
    return None


def _after_linear(consts: Constants, out: Output) -> bool:
    """``out`` is a convolution's or MatMul's output, maybe through a constant bias/scale: a
    following activation fuses into that layer (NNCF's LINEAR + ARITHMETIC + ACTIVATION)."""
    node = out.node
    for _ in range(3):
        if node.type_name in LINEAR:
            return True
        if node.type_name not in ("Add", "Multiply", "Subtract", "Divide"):
            return False
        data = [o for o in node.input_values() if not consts.is_const(o)]
        if len(data) != 1:
            return False
        node = data[0].node
    return False


def _directly_quantized(consumers: list[Input]) -> list[Node]:
    """The ops a quantizer serves: its consumers, looking through precision-preserving ops."""
    out: list[Node] = []
    todo = [c.node for c in consumers]
    seen: set[int] = set()
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.type_name in AGNOSTIC or n.type_name == "Concat":
            todo.extend(c.node for o in n.outputs() for c in o.targets)
        else:
            out.append(n)
    return out


def _pass_through(consts: Constants, n: Node, shared: dict[Output, Config], requests: dict[Input, Config], groups: itertools.count,
                  ignored: set[int]) -> bool:
    """Move a request on ``n``'s outputs to ``n``'s data input when ``n`` preserves precision."""
    outs = n.outputs()
    if id(n) in ignored or not outs or any(o not in shared for o in outs if o.targets):
        return False
    live = [o for o in outs if o.targets]
    cfgs = {shared[o] for o in live}
    if len(cfgs) != 1 or (n.type_name in ("MaxPool",) and live != [outs[0]]):
        return False
    cfg = cfgs.pop()
    t = n.type_name
    if t == "Concat":
        if cfg.axis is not None:
            return False
        ports = [p for p in range(n.get_input_size()) if _activation(consts, n, p)]
        if len(ports) != n.get_input_size():
            return False
        group = cfg.group if cfg.group is not None else next(groups)
        for o in live:
            del shared[o]
        for p in ports:
            requests[Input(n, p)] = Config(None, group)
        return True
    port = AGNOSTIC.get(t)
    if t in ("Maximum", "Minimum"):
        const_ports = [p for p in (0, 1) if consts.is_const(n.input(p).source)]
        port = 1 - const_ports[0] if len(const_ports) == 1 else None
    if port is None or not _activation(consts, n, port) or (cfg.axis is not None and t not in CHANNEL_PRESERVING):
        return False
    if len(live) > 1 and t not in ("Split", "VariadicSplit"):
        return False
    for o in live:
        del shared[o]
    requests[Input(n, port)] = cfg
    return True


def _mark_first_layer(model: Model, placement: Placement) -> None:
    """NNCF's overflow fix: the first quantized convolutions met from each input get
    half-range weights."""
    convs = {id(w.node): w for w in placement.weights if w.node.type_name in CONVOLUTIONS}
    for param in model.get_parameters():
        queue = [c.node for c in param.output(0).targets]
        seen: set[int] = set()
        while queue:
            n = queue.pop(0)
            if id(n) in seen:
                continue
            seen.add(id(n))
            if id(n) in convs:
                convs[id(n)].half_range = True
                continue
            queue.extend(c.node for o in n.outputs() for c in o.targets)
