"""``Model``: a graph from Parameters to Results, in OpenVINO's shape."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ember.errors import EmberError, GraphError
from ember.graph.core_ops import Parameter, Result
from ember.graph.node import Node, Output, as_output
from ember.graph.shape import as_partial_shape


class Model:
    """A neural network: ``Model(results, parameters, name)``.

    ``results`` may be Result nodes, other nodes or output ports (wrapped in Results).
    """

    def __init__(self, results: Any, parameters: Sequence[Parameter] | None = None,
                 name: str = "Model", *, validate: bool = True) -> None:
        if isinstance(results, (Node, Output)):
            results = [results]
        self._results: list[Result] = []
        for r in results:
            if isinstance(r, Result):
                self._results.append(r)
            else:
                self._results.append(Result([as_output(r)]))
        if parameters is None:
            parameters = [n for n in self._walk() if isinstance(n, Parameter)]
        self._parameters: list[Parameter] = list(parameters)
        self.friendly_name = name
        self.name = name
        self.rt_info: dict[str, Any] = {}
        if validate:
            self._check_parameters()

    # -- structure ----------------------------------------------------------------------
    def _walk(self) -> list[Node]:
        """Nodes in topological order (inputs before users); raises on a cycle."""
        order: list[Node] = []
        state: dict[int, int] = {}  # 1 = on stack, 2 = done
        roots: list[Node] = list(self._results) + list(getattr(self, "_parameters", []))
        for root in roots:
            if state.get(id(root)) == 2:
                continue
            stack: list[tuple[Node, int]] = [(root, 0)]
            state[id(root)] = 1
            while stack:
                node, i = stack[-1]
                if i < len(node._inputs):
                    stack[-1] = (node, i + 1)
                    child = node._inputs[i].node
                    s = state.get(id(child))
                    if s == 1:
                        raise GraphError(f"ember: the graph has a cycle through {child.type_name} "
                                         f"'{child.friendly_name}'")
                    if s is None:
                        state[id(child)] = 1
                        stack.append((child, 0))
                else:
                    stack.pop()
                    state[id(node)] = 2
                    order.append(node)
        return order

    def _check_parameters(self) -> None:
        reachable = {id(n) for n in self._walk()}
        own = {id(p) for p in self._parameters}
        for n in self._walk():
            if isinstance(n, Parameter) and id(n) not in own and id(n) in reachable:
                raise GraphError(f"ember: Parameter '{n.friendly_name}' is used but not listed in the "
                                 "model's parameters")

    def get_ordered_ops(self) -> list[Node]:
        """Every node that leads to an output, in topological order (inputs before their users)."""
        return self._walk()

    def get_ops(self) -> list[Node]:
        """Every node that leads to an output, inputs before their users (the same list as
        ``get_ordered_ops``)."""
        return self._walk()

    def get_parameters(self) -> list[Parameter]:
        """The model's Parameter nodes, in input order (a new list; the nodes are shared)."""
        return list(self._parameters)

    def get_results(self) -> list[Result]:
        """The model's Result nodes, in output order (a new list; the nodes are shared)."""
        return list(self._results)

    @property
    def parameters(self) -> list[Parameter]:
        """The model's Parameter nodes, in input order."""
        return list(self._parameters)

    @property
    def results(self) -> list[Result]:
        """The model's Result nodes, in output order."""
        return list(self._results)

    def add_results(self, results: Iterable[Result]) -> None:
        """Append Result nodes to the model's outputs (in place)."""
        self._results.extend(results)

    def add_outputs(self, outputs: Any) -> list[Output]:
        """Make internal tensors (an Output, ``(node name, port)`` or a tensor name, or a list of
        them) extra model outputs; returns the new outputs. The model is changed in place."""
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        added = []
        for o in outputs:
            if isinstance(o, str):
                o = self._find_tensor(o)
            r = Result([as_output(o)])
            self._results.append(r)
            added.append(r.output(0))
        return added

    def remove_result(self, result: Result) -> None:
        """Drop a Result from the model's outputs (in place)."""
        self._results = [r for r in self._results if r is not result]

    def replace_parameter(self, index: int, new: Parameter) -> None:
        """Put Parameter ``new`` in place of input ``index``: its users now read ``new`` (in place)."""
        old = self._parameters[index]
        old.output(0).replace(new.output(0))
        self._parameters[index] = new

    def _find_tensor(self, name: str) -> Output:
        for n in self._walk():
            for o in n.outputs():
                if name in o.names:
                    return o
        raise EmberError(f"ember: the model has no tensor named '{name}'")

    # -- ports --------------------------------------------------------------------------
    @property
    def inputs(self) -> list[Output]:
        """The model's input ports (the Parameters' outputs), in order."""
        return [p.output(0) for p in self._parameters]

    @property
    def outputs(self) -> list[Output]:
        """The model's output ports (what the Results read), in order."""
        return [r.output(0) for r in self._results]

    def input(self, key: int | str | None = None) -> Output:
        """One model input port, by index, tensor name, or none when the model has exactly one
        input."""
        return _pick(self.inputs, key, "input", self.friendly_name)

    def output(self, key: int | str | None = None) -> Output:
        """One model output port, by index, tensor name, or none when the model has exactly one
        output."""
        return _pick(self.outputs, key, "output", self.friendly_name)

    def get_output_size(self) -> int:
        """How many outputs the model has."""
        return len(self._results)

    def get_output_op(self, i: int) -> Result:
        """The Result node of output ``i``."""
        return self._results[i]

    def get_parameter_index(self, p: Parameter) -> int:
        """The input index of Parameter ``p``, or -1 when it is not one of this model's."""
        for i, q in enumerate(self._parameters):
            if q is p:
                return i
        return -1

    def get_result_index(self, out: Any) -> int:
        """The output index of a Result node or an Output port, or -1."""
        for i, r in enumerate(self._results):
            if (isinstance(out, Result) and r is out) or (isinstance(out, Output) and r.output(0) == out):
                return i
        return -1

    def is_dynamic(self) -> bool:
        """Whether any input or output shape has a dynamic dimension or rank (a method, as
        OpenVINO's ``Model.is_dynamic()``; the property is ``dynamic``)."""
        return any(p.partial_shape.is_dynamic for p in self._parameters) or \
            any(r.output(0).partial_shape.is_dynamic for r in self._results)

    @property
    def dynamic(self) -> bool:
        """``is_dynamic()`` as a property (OpenVINO's ``Model.dynamic``)."""
        return self.is_dynamic()

    def get_output_element_type(self, index: int) -> Any:
        """The element type of output ``index``."""
        return self.output(index).element_type

    def get_output_partial_shape(self, index: int) -> Any:
        """The (possibly dynamic) shape of output ``index``."""
        return self.output(index).partial_shape

    def get_output_shape(self, index: int) -> Any:
        """The static shape of output ``index`` (an error when it is dynamic)."""
        return self.output(index).shape

    def get_result(self) -> Result:
        """The only Result of a one-output model."""
        if len(self._results) != 1:
            raise EmberError(f"ember: get_result() needs a model with one output; this one has {len(self._results)}")
        return self._results[0]

    @property
    def result(self) -> Result:
        """``get_result()`` as a property."""
        return self.get_result()

    def get_sinks(self) -> list[Node]:
        """The model's sinks (Assign nodes of stateful models): ember has no stateful ops, so
        always empty."""
        return []

    @property
    def sinks(self) -> list[Node]:
        """``get_sinks()`` as a property."""
        return self.get_sinks()

    def get_variables(self) -> list[Any]:
        """The model's state variables (ReadValue/Assign): ember has no stateful ops, so always
        empty."""
        return []

    @property
    def variables(self) -> list[Any]:
        """``get_variables()`` as a property."""
        return self.get_variables()

    def get_friendly_name(self) -> str:
        """The model's readable name (``friendly_name``)."""
        return self.friendly_name

    def set_friendly_name(self, name: str) -> None:
        """Set the model's readable name."""
        self.friendly_name = name

    def get_name(self) -> str:
        """The model's unique name."""
        return self.name

    def get_rt_info(self, path: Any = None) -> Any:
        """Runtime info: the whole dict (no ``path``) or the value at ``path`` (a key or a list of
        keys); a missing key raises EmberError."""
        if path is None:
            return self.rt_info
        keys = [path] if isinstance(path, str) else list(path)
        cur: Any = self.rt_info
        for k in keys:
            if not isinstance(cur, dict) or k not in cur:
                raise EmberError(f"ember: the model's rt_info has no '{'/'.join(keys)}'")
            cur = cur[k]
        return cur

    def has_rt_info(self, path: Any) -> bool:
        """Whether runtime info has a value at ``path`` (a key or a list of keys)."""
        try:
            self.get_rt_info(path)
            return True
        except EmberError:
            return False

    def set_rt_info(self, value: Any, path: Any) -> None:
        """Store ``value`` in runtime info at ``path`` (a key or a list of keys; missing levels are
        created). Saved with the IR."""
        keys = [path] if isinstance(path, str) else list(path)
        cur = self.rt_info
        for k in keys[:-1]:
            cur = cur.setdefault(k, {})
        cur[keys[-1]] = value

    # -- whole-graph operations ----------------------------------------------------------
    def validate_nodes_and_infer_types(self) -> None:
        """Re-run type and shape inference over every node, inputs first."""
        for node in self._walk():
            node.validate_and_infer_types()

    def validate(self) -> None:
        """Check the graph (inputs are Parameters of this model, every node's types and shapes
        infer); raises EmberError naming the node."""
        self._check_parameters()
        self.validate_nodes_and_infer_types()

    def reshape(self, shapes: Any) -> None:
        """Change input shapes: a shape for a one-input model, or a map from input
        (index, tensor name or port) to shape; then re-infer every node."""
        if not isinstance(shapes, Mapping):
            if len(self._parameters) != 1:
                raise EmberError("ember: reshape with one shape needs a one-input model; "
                                 "pass {input name: shape}")
            shapes = {0: shapes}
        for key, shape in shapes.items():
            port = self.input(key) if not isinstance(key, Output) else key
            param = port.node
            assert isinstance(param, Parameter)
            param.partial_shape = as_partial_shape(shape)
        self.validate_nodes_and_infer_types()

    def clone(self) -> Model:
        """A deep copy of the graph; constant data is shared (it is read-only)."""
        mapping: dict[int, Node] = {}
        for node in self._walk():
            new_inputs = [Output(mapping[id(o.node)], o.index) for o in node._inputs]
            mapping[id(node)] = node.clone_with_inputs(new_inputs)
        params = [mapping[id(p)] for p in self._parameters]
        results = [mapping[id(r)] for r in self._results]
        m = Model(results, params, self.friendly_name, validate=False)  # type: ignore[arg-type]
        m.name = self.name
        m.rt_info = _deep_copy(self.rt_info)
        return m

    def __repr__(self) -> str:
        ins = ", ".join(f"{_name(o)}{o.partial_shape}" for o in self.inputs)
        outs = ", ".join(f"{_name(o)}{o.partial_shape}" for o in self.outputs)
        return f"<Model: '{self.friendly_name}'\ninputs[{ins}]\noutputs[{outs}]>"


def _name(o: Output) -> str:
    return sorted(o.names)[0] if o.names else o.node.friendly_name


def _pick(ports: list[Output], key: Any, what: str, model: str) -> Output:
    if key is None:
        if len(ports) != 1:
            raise EmberError(f"ember: model '{model}' has {len(ports)} {what}s; name one")
        return ports[0]
    if isinstance(key, int):
        if not -len(ports) <= key < len(ports):
            raise EmberError(f"ember: model '{model}' has no {what} {key} (it has {len(ports)})")
        return ports[key]
    if isinstance(key, Output):
        return key
    for p in ports:
        if key in p.names:
            return p
    for p in ports:
        n = p.node if what == "input" else p.node._inputs[0].node
        if key == n.friendly_name or key == p.node.friendly_name:
            return p
    names = ", ".join(_name(p) for p in ports)
    raise EmberError(f"ember: model '{model}' has no {what} named '{key}'; it has: {names}")


def _deep_copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _deep_copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_deep_copy(x) for x in v]
    return v

