"""The three ops every graph is made of: Parameter, Constant (IR ``Const``) and Result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ember.errors import EmberError
from ember.graph.node import Node, Output, TensorDesc
from ember.graph.registry import builder, register_op
from ember.graph.shape import PartialShape, as_partial_shape
from ember.graph.types import Type, as_type, cast_array


@register_op
class Parameter(Node):
    """A model input of a given element type and partial shape."""

    type_name = "Parameter"
    num_inputs = (0, 0)
    foldable = False

    def __init__(self, element_type: Any, shape: Any = (), name: str | None = None) -> None:
        self.element_type = as_type(element_type)
        self.partial_shape = as_partial_shape(shape)
        super().__init__((), None, name)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.element_type, self.partial_shape)]

    def set_partial_shape(self, shape: Any) -> None:
        self.partial_shape = as_partial_shape(shape)
        self.validate_and_infer_types()

    def set_element_type(self, element_type: Any) -> None:
        self.element_type = as_type(element_type)
        self.validate_and_infer_types()

    def get_partial_shape(self) -> PartialShape:
        return self.partial_shape

    def get_layout(self) -> Any:
        from ember.graph.layout import Layout

        lay = self.output(0).rt_info.get("layout")
        if isinstance(lay, dict):  # as the IR reader gives it: {"version": "0", "layout": "[N,C,H,W]"}
            lay = lay.get("layout", "")
        return Layout(lay) if isinstance(lay, str) else (lay or Layout())

    def set_layout(self, layout: Any) -> None:
        # stored as OpenVINO writes it: <attribute name="layout" version="0" layout="[N,C,H,W]"/>
        self.output(0).rt_info["layout"] = {"version": "0", "layout": str(layout)}

    @property
    def layout(self) -> Any:
        return self.get_layout()

    def clone_with_inputs(self, inputs: Sequence[Any], types: Sequence[tuple[Any, Any]] | None = None) -> Node:
        new = Parameter(self.element_type, self.partial_shape, self.friendly_name)
        new.rt_info = dict(self.rt_info)
        new.output(0).set_names(self.output(0).names)
        new.output(0).rt_info.update(self.output(0).rt_info)
        return new


@register_op
class Constant(Node):
    """A constant tensor. ``data`` is a read-only ndarray in the element type's memory dtype."""

    type_name = "Const"
    num_inputs = (0, 0)

    def __init__(self, value: Any, element_type: Any = None, name: str | None = None,
                 shape: Any = None) -> None:
        et = None if element_type is None else as_type(element_type)
        if isinstance(value, np.ndarray) and value.dtype.kind in "USO" or isinstance(value, (str, bytes)):
            arr = np.asarray(value, dtype=object)
            arr = np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else str(s), otypes=[object])(arr) \
                if arr.size else arr
            et = Type.string
        else:
            if et is None:
                if isinstance(value, float):
                    et = Type.f32
                elif isinstance(value, bool):
                    et = Type.boolean
                elif isinstance(value, int):
                    et = Type.i64
                elif isinstance(value, (list, tuple)) and not isinstance(value, np.ndarray):
                    arr0 = np.asarray(value)
                    et = Type.f32 if arr0.dtype.kind == "f" else Type.from_dtype(arr0.dtype)
                else:
                    et = Type.from_dtype(np.asarray(value).dtype)
            src = np.asarray(value)
            if src.dtype == et.dtype and not et.is_sub_byte:
                arr = src
            else:
                arr = cast_array(src, Type.from_dtype(src.dtype), et)
        if shape is not None:
            arr = np.broadcast_to(arr, tuple(as_partial_shape(shape).to_shape())) if arr.size == 1 \
                else arr.reshape(tuple(as_partial_shape(shape).to_shape()))
        arr = np.array(arr, copy=True, order="C")
        arr.flags.writeable = False
        self.data = arr
        self.element_type = et
        super().__init__((), None, name)

    @classmethod
    def from_array(cls, arr: np.ndarray, element_type: Type, name: str | None = None) -> Constant:
        """Wrap ``arr`` (already in ``element_type``'s memory dtype) without copying."""
        self = cls.__new__(cls)
        arr = np.asarray(arr, order="C")
        arr.flags.writeable = False
        self.data = arr
        self.element_type = element_type
        Node.__init__(self, (), None, name)
        return self

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.element_type, PartialShape(self.data.shape))]

    def constant_outputs(self) -> list[np.ndarray]:
        return [self.data]

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self.data]

    def get_data(self) -> np.ndarray:
        return self.data

    def get_value_strings(self) -> list[str]:
        return [str(x) for x in self.data.reshape(-1)]

    def get_vector(self) -> list[Any]:
        return self.data.reshape(-1).tolist()

    def _copy_extra_from(self, other: Node) -> None:
        assert isinstance(other, Constant)
        self.data = other.data
        self.element_type = other.element_type


@register_op
class Result(Node):
    """A model output; its tensor names are those of the port it reads."""

    type_name = "Result"
    num_inputs = (1, 1)
    foldable = False

    def __init__(self, inputs: Any = (), attrs: Mapping[str, Any] | None = None, name: str | None = None,
                 **kwargs: Any) -> None:
        if isinstance(inputs, (Output, Node)):  # OpenVINO's op.Result(output)
            inputs = [inputs]
        super().__init__(inputs, attrs, name, **kwargs)

    def infer(self) -> list[tuple[Type, PartialShape]]:
        return [(self.input_type(0), self.input_shape(0))]

    def _tensor(self, index: int) -> TensorDesc:
        if index != 0:
            raise EmberError("ember: Result has one output")
        src = self._inputs[0]
        return src.node._tensor(src.index)

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [inputs[0]]


@builder
def parameter(shape: Any, dtype: Any = np.float32, name: str | None = None) -> Parameter:
    """A model input (``ember.opset.parameter([1, 3, 224, 224], np.float32, name="x")``)."""
    p = Parameter(dtype, shape, name)
    if name:
        p.output(0).set_names({name})
    return p


@builder
def constant(value: Any, dtype: Any = None, name: str | None = None) -> Constant:
    """A constant (``ember.opset.constant(np.ones((2, 2)), np.float32)``)."""
    return Constant(value, dtype, name)


@builder
def result(data: Any, name: str | None = None) -> Result:
    """A model output. Like OpenVINO 2026, a named Result names an unnamed output tensor."""
    r = Result([data], None, name)
    if name and not r.output(0).names:
        r.output(0).set_names({name})
    return r
