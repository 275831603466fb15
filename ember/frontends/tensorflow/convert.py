"""``convert``: a TensorFlow model to an ember ``Model`` through its frozen GraphDef.

The steps: freeze (``loader.load``), pick the nodes the outputs need, check every one has a
converter (one error lists every unsupported op type), make the inputs, convert node by node
(``ember.frontends.tensorflow.ops``), make the outputs. NHWC tensors are handled as in the TFLite
frontend: convolution chains run in NCHW and a Transpose appears only where an op needs
TensorFlow's own layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import ember.opset as ops
from ember.errors import ConversionError, UnsupportedOpError
from ember.frontends.tensorflow.loader import Frozen, load
from ember.frontends.tflite.context import TO_NCHW, TO_NHWC, Value, _contiguous
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.model import Model
from ember.graph.node import Output, constant_value
from ember.graph.shape import Dimension, PartialShape
from ember.graph.types import Type

# TensorFlow DataType enum -> ember element type
DTYPES: dict[int, Type] = {1: Type.f32, 2: Type.f64, 3: Type.i32, 4: Type.u8, 5: Type.i16, 6: Type.i8, 7: Type.string,
                           9: Type.i64, 10: Type.boolean, 14: Type.bf16, 17: Type.u16, 19: Type.f16, 22: Type.u32,
                           23: Type.u64}
_SKIPPED = ("NoOp", "Assert")

Converter = Callable[["NodeContext"], None]
_CONVERTERS: dict[str, Converter] = {}
_loaded = False


def converter(names: str | list[str]) -> Callable[[Converter], Converter]:
    """Register ``fn(ctx)`` for TensorFlow op types ``names``."""
    def register(fn: Converter) -> Converter:
        for n in [names] if isinstance(names, str) else names:
            _CONVERTERS[n] = fn
        return fn
    return register


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        import ember.frontends.tensorflow.control_flow  # noqa: F401
        import ember.frontends.tensorflow.ops  # noqa: F401


def supported_ops() -> list[str]:
    """Every TensorFlow op type ember converts."""
    _load()
    return sorted(_CONVERTERS)


def _split_name(ref: str) -> tuple[str, int]:
    name, _, idx = ref.lstrip("^").partition(":")
    return name, int(idx) if idx else 0


class NodeContext:
    """One GraphDef node: ``ctx.plain(i)``/``ctx.nchw(i)`` inputs, ``ctx.const(i)``,
    ``ctx.attr(name)``, ``ctx.out(port, j, nchw=...)``."""

    def __init__(self, node: Any, graph: GraphConverter) -> None:
        self.node = node
        self.graph = graph
        self.inputs = [_split_name(i) for i in node.input if not i.startswith("^")]

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def fail(self, reason: str) -> ConversionError:
        return ConversionError(f"ember: TensorFlow {self.node.op} node '{self.node.name}': {reason}")

    def attr(self, name: str, default: Any = None) -> Any:
        if name not in self.node.attr:
            return default
        a = self.node.attr[name]
        kind = a.WhichOneof("value")
        if kind == "s":
            return a.s.decode()
        if kind in ("i", "f", "b"):
            return getattr(a, kind)
        if kind == "type":
            return DTYPES.get(a.type)
        if kind == "shape":
            return None if a.shape.unknown_rank else [d.size for d in a.shape.dim]
        if kind == "func":
            return a.func.name
        if kind == "tensor":
            from tensorflow import make_ndarray

            return make_ndarray(a.tensor)
        if kind == "list":
            lst = a.list
            for f in ("i", "f", "s", "b"):
                if len(getattr(lst, f)):
                    vals = list(getattr(lst, f))
                    return [v.decode() for v in vals] if f == "s" else vals
            if len(lst.type):
                return [DTYPES.get(t) for t in lst.type]
            return []
        return default

    def value(self, i: int) -> Value:
        return self.graph.values[self.inputs[i]]

    def rank(self, i: int) -> int:
        rank = self.value(i).rank()
        if rank is None:
            raise self.fail(f"input {i} has a dynamic rank")
        return rank

    def is_nchw(self, i: int) -> bool:
        return self.value(i).nchw is not None

    def const(self, i: int) -> np.ndarray | None:
        v = self.value(i)
        if v.is_const:
            return v.data
        return constant_value(v.plain) if v.plain is not None else None

    def req_const(self, i: int, what: str) -> np.ndarray:
        c = self.const(i)
        if c is None:
            raise self.fail(f"{what} (input {i}) must be a constant")
        return c

    def weight(self, i: int, transform: Callable[[np.ndarray], np.ndarray]) -> Output:
        data = self.req_const(i, "the weights")
        arr = _contiguous(transform(data))
        return Constant.from_array(arr, Type.from_dtype(arr.dtype)).output(0)

    def plain(self, i: int) -> Output:
        v = self.value(i)
        if v.plain is None:
            if v.is_const:
                arr = _contiguous(v.data)
                v.plain = Constant.from_array(arr, Type.from_dtype(arr.dtype)).output(0)
            else:
                v.plain = ops.transpose(v.nchw, ops.constant(np.array(TO_NHWC, np.int64))).output(0)
        return v.plain

    def nchw(self, i: int) -> Output:
        v = self.value(i)
        if v.nchw is None:
            if v.is_const:
                arr = _contiguous(v.data.transpose(TO_NCHW))  # type: ignore[union-attr]
                v.nchw = Constant.from_array(arr, Type.from_dtype(arr.dtype)).output(0)
            else:
                v.nchw = ops.transpose(self.plain(i), ops.constant(np.array(TO_NCHW, np.int64))).output(0)
        return v.nchw

    def as4d_nchw(self, i: int) -> Output:
        r = self.rank(i)
        if r == 4:
            return self.nchw(i)
        v = self.value(i)
        if v.is_const:
            a = v.data
            arr = _contiguous(a.reshape((1,) * (4 - a.ndim) + a.shape).transpose(TO_NCHW))  # type: ignore
            return Constant.from_array(arr, Type.from_dtype(arr.dtype)).output(0)
        x = self.plain(i)
        if r < 4:
            x = ops.unsqueeze(x, ops.constant(np.arange(4 - r, dtype=np.int64))).output(0)
        return ops.transpose(x, ops.constant(np.array(TO_NCHW, np.int64))).output(0)

    def out(self, port: Output, j: int = 0, nchw: bool = False) -> None:
        """Define output ``j``; an op of constants is folded into a constant (Keras freezes
        batch normalization as arithmetic on its statistics)."""
        if not isinstance(port.node, (Constant, Parameter)):
            data = constant_value(port)
            if data is not None:
                data = np.asarray(data)
                self.graph.values[(self.node.name, j)] = Value(data=data.transpose(TO_NHWC) if nchw else data)
                return
        self.graph.values[(self.node.name, j)] = Value(nchw=port) if nchw else Value(plain=port)

    def alias(self, i: int, j: int = 0) -> None:
        """Output ``j`` is input ``i`` unchanged (in whatever layouts it is available)."""
        self.graph.values[(self.node.name, j)] = self.value(i)


class GraphConverter:
    """Values of a graph's tensors while its nodes are converted; ``library``: the GraphDef's
    functions by name (While bodies and conditions)."""

    def __init__(self, library: dict[str, Any] | None = None) -> None:
        self.values: dict[tuple[str, int], Any] = {}
        self.library = library or {}

    def run(self, nodes: dict[str, Any], order: list[Any]) -> None:
        """Convert ``order`` (nodes not yet defined; Placeholders must be)."""
        for n in order:
            if (n.name, 0) in self.values or n.op in _SKIPPED:
                continue
            ctx = NodeContext(n, self)
            if n.op == "Const":
                self.values[(n.name, 0)] = Value(data=np.asarray(ctx.attr("value")))
                continue
            if n.op == "Placeholder":
                raise ConversionError(f"ember: TensorFlow placeholder '{n.name}' is not a model input; feed it "
                                      "through input=")
            _CONVERTERS[n.op](ctx)


def function_graph(fdef: Any) -> tuple[dict[str, Any], list[tuple[str, int]], list[str]]:
    """A library function as ``(nodes by name, output tensors, input placeholder names)``."""
    from tensorflow.python.framework.function_def_to_graph import function_def_to_graph_def

    gdef, flat = function_def_to_graph_def(fdef)
    nodes = {n.name: n for n in gdef.node}
    outs = [_split_name(flat.get(fdef.ret[a.name], fdef.ret[a.name])) for a in fdef.signature.output_arg]
    return nodes, outs, [a.name for a in fdef.signature.input_arg]


def _missing_ops(nodes: dict[str, Any], order: list[Any], library: dict[str, Any], skip: set[str],
                 missing: dict[str, list[str]]) -> None:
    for n in order:
        if n.name in skip or n.op in _SKIPPED or n.op in ("Placeholder", "Const"):
            continue
        if n.op not in _CONVERTERS:
            missing.setdefault(n.op, []).append(n.name)
        for key in ("body", "cond", "then_branch", "else_branch"):
            if key in n.attr and n.attr[key].func.name in library:
                fnodes, outs, args = function_graph(library[n.attr[key].func.name])
                _missing_ops(fnodes, _needed(fnodes, [o for o, _ in outs], set(args)), library, set(args), missing)


def _needed(nodes: dict[str, Any], outputs: list[str], stop: set[str]) -> list[Any]:
    order: list[Any] = []
    state: dict[str, int] = {}
    for out in outputs:
        stack = [(out, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(nodes[name])
                continue
            if state.get(name):
                continue
            if name not in nodes:
                raise ConversionError(f"ember: the TensorFlow graph has no node '{name}'")
            state[name] = 1
            stack.append((name, True))
            if name in stop:
                continue
            for i in nodes[name].input:
                if not i.startswith("^"):
                    dep = _split_name(i)[0]
                    if not state.get(dep):
                        stack.append((dep, False))
    return order


def convert(src: Any, input: Any = None, output: Any = None, example_input: Any = None) -> Model:
    """Convert a TensorFlow SavedModel folder, frozen GraphDef ``.pb``, Keras model or
    ``tf.function`` into an ember ``Model`` (TensorFlow is needed to read and freeze it).

    ``input`` overrides input shapes (``[1, 224, 224, 3]`` or ``{name: shape}``); ``output``
    names the output tensors (``"node:0"``) to return instead of the signature's.
    Raises ``UnsupportedOpError`` listing every unsupported op type before building anything.
    """
    _load()
    frozen = load(src, example_input)
    return convert_frozen(frozen, input, output)


def convert_frozen(frozen: Frozen, input: Any = None, output: Any = None) -> Model:
    from ember.frontends.onnx.convert import parse_input

    _load()
    nodes = {n.name: n for n in frozen.graph_def.node}
    outputs = frozen.outputs
    if output is not None:
        names = [output] if isinstance(output, str) else list(output)
        outputs = [(n if ":" in n else f"{n}:0", n) for n in names]
    input_nodes = {_split_name(t)[0] for t, _ in frozen.inputs}
    order = _needed(nodes, [_split_name(t)[0] for t, _ in outputs], input_nodes)
    library = {f.signature.name: f for f in frozen.graph_def.library.function}
    missing: dict[str, list[str]] = {}
    _missing_ops(nodes, order, library, input_nodes, missing)
    if missing:
        parts = [f"{op} ({len(v)} node{'s' if len(v) > 1 else ''}, first '{v[0]}')" for op, v in sorted(missing.items())]
        raise UnsupportedOpError(f"ember: the TensorFlow model uses {len(parts)} unsupported op type(s): "
                                 + ", ".join(parts) + ". ember.frontends.tensorflow.supported_ops() lists what "
                                 "converts")
    specs = parse_input(input) if input is not None else []
    by_name = {s.name: s for s in specs if s.name is not None}
    unnamed = [s for s in specs if s.name is None]
    g = GraphConverter(library)
    params = []
    for k, (tensor, name) in enumerate(frozen.inputs):
        node = nodes[_split_name(tensor)[0]]
        ctx = NodeContext(node, g)
        et = ctx.attr("dtype") or Type.f32
        dims = ctx.attr("shape")
        shape = PartialShape.dynamic() if dims is None else PartialShape([Dimension() if d < 0 else Dimension(d)
                                                                          for d in dims])
        spec = by_name.get(name) or (unnamed[k] if k < len(unnamed) else None)
        if spec is not None and spec.shape is not None:
            shape = spec.shape
        p = Parameter(et, shape, name)
        p.output(0).set_names({name})
        params.append(p)
        g.values[(node.name, 0)] = Value(plain=p.output(0))
    g.run(nodes, order)
    results = []
    for tensor, name in outputs:
        key = _split_name(tensor)
        v = g.values.get(key)
        if v is None:
            raise ConversionError(f"ember: TensorFlow output '{tensor}' was not produced")
        ctx = NodeContext(nodes[key[0]], g)
        ctx.inputs = [key]
        y = ctx.plain(0)
        y.add_names({name})
        results.append(Result([y], None, f"{name}/sink_port_0"))
    return Model(results, params, "tensorflow_model")
