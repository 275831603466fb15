"""``PrePostProcessor``: describe what the application feeds and wants back, and embed the
conversions into the model as ordinary ops (saved with the IR, run by every device).

Input steps run in the order given, then the implicit ones: a ``Convert`` to the model's
element type and a ``Transpose`` to the model's layout when they still differ. Ops made
(OpenVINO makes the same ones): ``Convert`` (element type), ``Gather`` on the channel axis
(``convert_color`` RGB<->BGR, ``reverse_channels``), ``Interpolate``-11 on the H and W axes
(``resize``), ``Subtract`` (``mean``), ``Multiply`` by the reciprocal (``scale``),
``Transpose`` (layouts). ``mean``, ``scale`` and ``reverse_channels`` nodes carry the
``preprocessing`` rt_info mark, and the new Parameter the tensor's layout, as in OpenVINO.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from ember.errors import EmberError
from ember.graph.core_ops import Constant, Parameter, Result
from ember.graph.layout import Layout
from ember.graph.model import Model
from ember.graph.node import Node, Output, as_output
from ember.graph.registry import get_builder
from ember.graph.shape import Dimension, PartialShape, as_partial_shape
from ember.graph.types import Type, as_type


class ColorFormat(Enum):
    """Color formats a tensor may carry (ember converts between RGB and BGR)."""

    UNDEFINED = 0
    NV12_SINGLE_PLANE = 1
    NV12_TWO_PLANES = 2
    I420_SINGLE_PLANE = 3
    I420_THREE_PLANES = 4
    RGB = 5
    BGR = 6
    GRAY = 7
    RGBX = 8
    BGRX = 9


class ResizeAlgorithm(Enum):
    """How ``resize`` interpolates (Interpolate-11 modes, half-pixel coordinates)."""

    RESIZE_LINEAR = "linear"
    RESIZE_CUBIC = "cubic"
    RESIZE_NEAREST = "nearest"
    RESIZE_BILINEAR_PILLOW = "bilinear_pillow"
    RESIZE_BICUBIC_PILLOW = "bicubic_pillow"


_MARK = {"version": "0"}  # rt_info "preprocessing", written as <attribute name="preprocessing" version="0"/>


def _as_layout(value: Any) -> Layout:
    return value if isinstance(value, Layout) else Layout(str(value))


def _port_layout(port: Output) -> Layout | None:
    lay = port.rt_info.get("layout")
    if isinstance(lay, dict):
        lay = lay.get("layout")
    if isinstance(lay, Layout):
        return lay if not lay.empty else None
    return Layout(lay) if isinstance(lay, str) and lay else None


def _axis(layout: Layout | None, name: str, rank: int, what: str, where: str) -> int:
    if layout is None or not layout.has_name(name):
        raise EmberError(f"ember: {where}: {what} needs to know the '{name}' axis; set a layout "
                         "(tensor().set_layout(...) or model().set_layout(...))")
    i = layout.get_index_by_name(name)
    return i + rank if i < 0 else i


def _last_layout(steps: list[_Step]) -> Layout | None:
    named = [s.target for s in steps if isinstance(s, _ConvertLayout) and isinstance(s.target, Layout)]
    return named[-1] if named else None


def _permutation(src: Layout, dst: Layout, where: str) -> list[int]:
    if sorted(n for n in src.names if n != "?") != sorted(n for n in dst.names if n != "?") or \
            len(src.names) != len(dst.names) or "?" in src.names or "?" in dst.names:
        raise EmberError(f"ember: {where}: cannot convert layout {src} to {dst}: they name different axes")
    return [src.names.index(n) for n in dst.names]


@dataclass
class _Context:
    """The value being converted: its port, layout, element type and color format."""

    out: Output
    layout: Layout | None
    color: ColorFormat | None
    where: str
    model_shape: PartialShape
    model_layout: Layout | None
    model_type: Type
    log: list[str] = field(default_factory=list)

    @property
    def rank(self) -> int:
        ps = self.out.partial_shape
        if not ps.rank_is_static:
            raise EmberError(f"ember: {self.where}: this step needs a tensor of known rank")
        return len(ps)

    def per_axis_constant(self, values: Any, what: str) -> np.ndarray:
        et = self.out.element_type
        if not et.is_real:
            raise EmberError(f"ember: {self.where}: {what} needs a floating-point tensor, this one is {et.name}; "
                             "add convert_element_type(Type.f32) before it")
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.size == 1:
            return arr.astype(et.dtype)
        c = _axis(self.layout, "C", self.rank, f"{what} with one value per channel", self.where)
        dim = self.out.partial_shape[c]
        if dim.is_static and dim.get_length() != arr.size:
            raise EmberError(f"ember: {self.where}: {what} has {arr.size} values but the tensor has "
                             f"{dim.get_length()} channels")
        shape = [1] * self.rank
        shape[c] = arr.size
        return arr.reshape(shape).astype(et.dtype)


# -- steps -------------------------------------------------------------------------------------


class _Step:
    def apply(self, ctx: _Context) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class _ConvertType(_Step):
    element_type: Type | None

    def apply(self, ctx: _Context) -> None:
        et = self.element_type or ctx.model_type
        if et != ctx.out.element_type:
            ctx.log.append(f"convert type ({et.name})")
            ctx.out = get_builder("convert")(ctx.out, et).output(0)


@dataclass(frozen=True)
class _ConvertColor(_Step):
    dst: ColorFormat

    def apply(self, ctx: _Context) -> None:
        src = ctx.color
        if src is None or src is ColorFormat.UNDEFINED:
            raise EmberError(f"ember: {ctx.where}: convert_color needs the tensor's color format "
                             "(tensor().set_color_format(ColorFormat.BGR))")
        if src == self.dst:
            return
        if {src, self.dst} != {ColorFormat.RGB, ColorFormat.BGR}:
            raise EmberError(f"ember: {ctx.where}: color conversion {src.name} -> {self.dst.name} is not "
                             "supported; ember converts between RGB and BGR")
        _gather_channels(ctx, mark=False, what="convert_color")
        ctx.color = self.dst
        ctx.log.append(f"convert color ({self.dst.name})")


def _gather_channels(ctx: _Context, mark: bool, what: str) -> None:
    c = _axis(ctx.layout, "C", ctx.rank, what, ctx.where)
    dim = ctx.out.partial_shape[c]
    if not dim.is_static:
        raise EmberError(f"ember: {ctx.where}: {what} needs a static channel count")
    idx = np.arange(dim.get_length() - 1, -1, -1, dtype=np.int32)
    g = get_builder("gather")(ctx.out, Constant(idx), Constant(np.array([c], np.int32)), 0)
    if mark:
        g.rt_info["preprocessing"] = dict(_MARK)
    ctx.out = g.output(0)


@dataclass(frozen=True)
class _ReverseChannels(_Step):
    def apply(self, ctx: _Context) -> None:
        _gather_channels(ctx, mark=True, what="reverse_channels")
        if ctx.color in (ColorFormat.RGB, ColorFormat.BGR):
            ctx.color = ColorFormat.BGR if ctx.color is ColorFormat.RGB else ColorFormat.RGB
        ctx.log.append("reverse channels")


@dataclass(frozen=True)
class _Resize(_Step):
    algorithm: ResizeAlgorithm
    height: int | None
    width: int | None

    def apply(self, ctx: _Context) -> None:
        rank = ctx.rank
        h = _axis(ctx.layout, "H", rank, "resize", ctx.where)
        w = _axis(ctx.layout, "W", rank, "resize", ctx.where)
        size = [self.height, self.width]
        if None in size:
            mlay = ctx.model_layout or ctx.layout
            mrank = len(ctx.model_shape) if ctx.model_shape.rank_is_static else rank
            dims = [ctx.model_shape[_axis(mlay, n, mrank, "resize", ctx.where)] for n in "HW"]
            if not all(d.is_static for d in dims):
                raise EmberError(f"ember: {ctx.where}: resize to the model's size needs the model's H and W "
                                 f"static (model shape {ctx.model_shape}); pass resize(alg, height, width)")
            size = [d.get_length() for d in dims]
        node = get_builder("interpolate")(
            ctx.out, Constant(np.array(size, np.int64)), self.algorithm.value, "sizes",
            pads_begin=[0] * rank, pads_end=[0] * rank, axes=Constant(np.array([h, w], np.int64)))
        ctx.out = node.output(0)
        ctx.log.append(f"resize to {size[0]}x{size[1]} ({self.algorithm.name})")


@dataclass(frozen=True)
class _Mean(_Step):
    values: Any

    def apply(self, ctx: _Context) -> None:
        c = ctx.per_axis_constant(self.values, "mean")
        node = get_builder("subtract")(ctx.out, Constant(c))
        node.rt_info["preprocessing"] = dict(_MARK)
        ctx.out = node.output(0)
        ctx.log.append(f"mean ({', '.join(f'{v:g}' for v in np.asarray(c).reshape(-1))})")


@dataclass(frozen=True)
class _Scale(_Step):
    values: Any

    def apply(self, ctx: _Context) -> None:
        c = ctx.per_axis_constant(self.values, "scale")
        if np.any(c == 0):
            raise EmberError(f"ember: {ctx.where}: scale by zero")
        inv = Constant((1.0 / c.astype(np.float64)).astype(c.dtype))
        inv.rt_info["preprocessing"] = dict(_MARK)
        node = get_builder("multiply")(ctx.out, inv)
        node.rt_info["preprocessing"] = dict(_MARK)
        ctx.out = node.output(0)
        ctx.log.append(f"scale ({', '.join(f'{v:g}' for v in np.asarray(c).reshape(-1))})")


@dataclass(frozen=True)
class _ConvertLayout(_Step):
    target: Layout | tuple[int, ...] | None  # None: the model's layout

    def apply(self, ctx: _Context) -> None:
        dst = self.target if self.target is not None else ctx.model_layout
        if isinstance(dst, tuple):
            perm = list(dst)
            if sorted(perm) != list(range(ctx.rank)):
                raise EmberError(f"ember: {ctx.where}: convert_layout({perm}) is not a permutation of "
                                 f"{ctx.rank} axes")
            if ctx.layout is not None and "..." not in str(ctx.layout) and len(ctx.layout.names) == len(perm):
                ctx.layout = Layout("[" + ",".join(ctx.layout.names[p] for p in perm) + "]")
            else:
                ctx.layout = None
        else:
            if dst is None or ctx.layout is None:
                raise EmberError(f"ember: {ctx.where}: convert_layout needs the tensor's layout and the target "
                                 "layout (tensor().set_layout(...), model().set_layout(...))")
            perm = _permutation(ctx.layout, dst, ctx.where)
            ctx.layout = dst
        if perm != list(range(len(perm))):
            ctx.out = get_builder("transpose")(ctx.out, Constant(np.array(perm, np.int64))).output(0)
        ctx.log.append(f"convert layout {dst}")


@dataclass(frozen=True)
class _Custom(_Step):
    fn: Callable[[Output], Any]

    def apply(self, ctx: _Context) -> None:
        ctx.out = as_output(self.fn(ctx.out))
        ctx.log.append("custom")


# -- the builder objects -----------------------------------------------------------------------


class PreProcessSteps:
    """Steps applied to an input, in the order they are added (chainable)."""

    def __init__(self) -> None:
        self.steps: list[_Step] = []

    def _add(self, step: _Step) -> PreProcessSteps:
        self.steps.append(step)
        return self

    def convert_element_type(self, type: Any = None) -> PreProcessSteps:  # noqa: A002 - OpenVINO's name
        """Convert to ``type`` (default: the model's element type)."""
        return self._add(_ConvertType(None if type is None else as_type(type)))

    def convert_color(self, dst_format: ColorFormat) -> PreProcessSteps:
        return self._add(_ConvertColor(dst_format))

    def resize(self, alg: ResizeAlgorithm, dst_height: int | None = None, dst_width: int | None = None
               ) -> PreProcessSteps:
        """Resize H and W to ``dst_height``x``dst_width`` (default: the model's H and W)."""
        if (dst_height is None) != (dst_width is None):
            raise EmberError("ember: resize needs both dst_height and dst_width, or neither")
        return self._add(_Resize(alg, dst_height, dst_width))

    def mean(self, value: float | Sequence[float]) -> PreProcessSteps:
        """Subtract ``value`` (one number, or one per channel)."""
        return self._add(_Mean(value))

    def scale(self, value: float | Sequence[float]) -> PreProcessSteps:
        """Divide by ``value`` (one number, or one per channel)."""
        return self._add(_Scale(value))

    def convert_layout(self, dst_layout: Any = None) -> PreProcessSteps:
        """Transpose to ``dst_layout`` (a Layout, or a permutation like ``[0, 3, 1, 2]``;
        default: the model's layout)."""
        if isinstance(dst_layout, (list, tuple)):
            return self._add(_ConvertLayout(tuple(int(i) for i in dst_layout)))
        return self._add(_ConvertLayout(None if dst_layout is None else _as_layout(dst_layout)))

    def reverse_channels(self) -> PreProcessSteps:
        return self._add(_ReverseChannels())

    def custom(self, fn: Callable[[Output], Any]) -> PreProcessSteps:
        """``fn(port) -> node or port``: any graph the application builds with ``ember.opset``."""
        return self._add(_Custom(fn))


class PostProcessSteps:
    """Steps applied to an output, in the order they are added (chainable)."""

    def __init__(self) -> None:
        self.steps: list[_Step] = []

    def convert_element_type(self, type: Any = None) -> PostProcessSteps:  # noqa: A002 - OpenVINO's name
        self.steps.append(_ConvertType(None if type is None else as_type(type)))
        return self

    def convert_layout(self, dst_layout: Any = None) -> PostProcessSteps:
        if isinstance(dst_layout, (list, tuple)):
            self.steps.append(_ConvertLayout(tuple(int(i) for i in dst_layout)))
        else:
            self.steps.append(_ConvertLayout(None if dst_layout is None else _as_layout(dst_layout)))
        return self

    def custom(self, fn: Callable[[Output], Any]) -> PostProcessSteps:
        self.steps.append(_Custom(fn))
        return self


class InputTensorInfo:
    """What the application will feed: element type, layout, color format, shape."""

    def __init__(self) -> None:
        self.element_type: Type | None = None
        self.layout: Layout | None = None
        self.color_format: ColorFormat | None = None
        self.spatial: tuple[int, int] | str | None = None
        self.shape: PartialShape | None = None

    def set_element_type(self, type: Any) -> InputTensorInfo:  # noqa: A002 - OpenVINO's name
        self.element_type = as_type(type)
        return self

    def set_layout(self, layout: Any) -> InputTensorInfo:
        self.layout = _as_layout(layout)
        return self

    def set_color_format(self, format: ColorFormat, sub_names: Sequence[str] = ()) -> InputTensorInfo:  # noqa: A002
        if format not in (ColorFormat.RGB, ColorFormat.BGR, ColorFormat.UNDEFINED):
            raise EmberError(f"ember: color format {format.name} is not supported; ember handles RGB and BGR")
        self.color_format = format
        return self

    def set_spatial_static_shape(self, height: int, width: int) -> InputTensorInfo:
        self.spatial = (int(height), int(width))
        return self

    def set_spatial_dynamic_shape(self) -> InputTensorInfo:
        self.spatial = "dynamic"
        return self

    def set_shape(self, shape: Any) -> InputTensorInfo:
        self.shape = as_partial_shape(shape)
        return self

    def set_from(self, tensor: Any) -> InputTensorInfo:
        """Element type and shape of an example tensor or array."""
        arr = tensor.data if hasattr(tensor, "data") and not isinstance(tensor, np.ndarray) else np.asarray(tensor)
        self.element_type = Type.from_dtype(arr.dtype)
        self.shape = PartialShape(list(arr.shape))
        return self

    def set_memory_type(self, memory_type: str) -> InputTensorInfo:
        return self  # host memory only


class ModelInfo:
    """What the model itself expects (its layout)."""

    def __init__(self) -> None:
        self.layout: Layout | None = None

    def set_layout(self, layout: Any) -> ModelInfo:
        self.layout = _as_layout(layout)
        return self


class OutputTensorInfo:
    """What the application wants back: element type and layout."""

    def __init__(self) -> None:
        self.element_type: Type | None = None
        self.layout: Layout | None = None

    def set_element_type(self, type: Any) -> OutputTensorInfo:  # noqa: A002 - OpenVINO's name
        self.element_type = as_type(type)
        return self

    def set_layout(self, layout: Any) -> OutputTensorInfo:
        self.layout = _as_layout(layout)
        return self


class InputInfo:
    def __init__(self) -> None:
        self._tensor = InputTensorInfo()
        self._steps = PreProcessSteps()
        self._model = ModelInfo()

    def tensor(self) -> InputTensorInfo:
        return self._tensor

    def preprocess(self) -> PreProcessSteps:
        return self._steps

    def model(self) -> ModelInfo:
        return self._model


class OutputInfo:
    def __init__(self) -> None:
        self._tensor = OutputTensorInfo()
        self._steps = PostProcessSteps()
        self._model = ModelInfo()

    def tensor(self) -> OutputTensorInfo:
        return self._tensor

    def postprocess(self) -> PostProcessSteps:
        return self._steps

    def model(self) -> ModelInfo:
        return self._model


class PrePostProcessor:
    """Add input preprocessing and output postprocessing to ``model``::

        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(Type.u8).set_layout(Layout("NHWC"))
        ppp.input().model().set_layout(Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(Type.f32).mean([123.7, 116.3, 103.5]).scale(58.4)
        model = ppp.build()

    ``build`` changes ``model`` in place (as OpenVINO does) and returns it.
    """

    def __init__(self, model: Model) -> None:
        if not isinstance(model, Model):
            raise EmberError(f"ember: PrePostProcessor needs a Model, got {type(model).__name__}")
        self._model = model
        self._inputs: dict[int, InputInfo] = {}
        self._outputs: dict[int, OutputInfo] = {}
        self._log: list[str] = []

    def input(self, key: Any = None) -> InputInfo:
        """The input ``key`` (index, tensor name, or nothing for a one-input model)."""
        port = self._model.input(key)
        i = self._model.inputs.index(port)
        return self._inputs.setdefault(i, InputInfo())

    def output(self, key: Any = None) -> OutputInfo:
        port = self._model.output(key)
        i = self._model.outputs.index(port)
        return self._outputs.setdefault(i, OutputInfo())

    def build(self) -> Model:
        """Embed every step into the model as ops; returns the model."""
        params = self._model.get_parameters()
        results = self._model.get_results()
        for i, info in sorted(self._inputs.items()):
            self._build_input(i, params[i], info)
        for i, info in sorted(self._outputs.items()):
            self._build_output(results[i], info)
        self._model.validate_nodes_and_infer_types()
        return self._model

    # -- inputs -------------------------------------------------------------------------
    def _tensor_shape(self, info: InputInfo, param: Parameter, model_layout: Layout | None,
                      tensor_layout: Layout | None, where: str) -> PartialShape:
        t = info.tensor()
        if t.shape is not None:
            shape = t.shape
        else:
            shape = param.partial_shape
            target = model_layout
            for step in info.preprocess().steps:  # undo permutations to find the tensor's shape
                if isinstance(step, _ConvertLayout) and isinstance(step.target, tuple) and shape.rank_is_static:
                    inv = [0] * len(step.target)
                    for k, p in enumerate(step.target):
                        inv[p] = k
                    shape = PartialShape([shape[k] for k in inv])
            if (tensor_layout is not None and target is not None and tensor_layout != target
                    and shape.rank_is_static):
                perm = _permutation(target, tensor_layout, where)
                shape = PartialShape([shape[k] for k in perm])
        if t.spatial is not None:
            if not shape.rank_is_static:
                raise EmberError(f"ember: {where}: a spatial shape needs a tensor of known rank")
            rank = len(shape)
            dims = list(shape)
            h = _axis(tensor_layout, "H", rank, "a spatial shape", where)
            w = _axis(tensor_layout, "W", rank, "a spatial shape", where)
            if t.spatial == "dynamic":
                dims[h], dims[w] = Dimension(), Dimension()
            else:
                dims[h], dims[w] = Dimension(t.spatial[0]), Dimension(t.spatial[1])
            shape = PartialShape(dims)
        return shape

    def _build_input(self, index: int, param: Parameter, info: InputInfo) -> None:
        port = param.output(0)
        where = f"preprocessing of input '{sorted(port.names)[0] if port.names else param.friendly_name}'"
        known_layout = info.model().layout or _port_layout(port)
        tensor_layout = info.tensor().layout or known_layout
        # Without a model layout, the model is taken to expect what the steps produce.
        model_layout = known_layout or _last_layout(info.preprocess().steps) or tensor_layout
        tensor_type = info.tensor().element_type or param.element_type
        shape = self._tensor_shape(info, param, model_layout, tensor_layout, where)
        new = Parameter(tensor_type, shape, param.friendly_name)
        new.output(0).set_names(port.names)
        new.rt_info = dict(param.rt_info)
        if tensor_layout is not None:
            new.set_layout(tensor_layout)
        consumers = list(port.targets)
        ctx = _Context(new.output(0), tensor_layout, info.tensor().color_format, where, param.partial_shape,
                       model_layout, param.element_type)
        for step in info.preprocess().steps:
            step.apply(ctx)
        explicit = len(ctx.log)
        _ConvertType(param.element_type).apply(ctx)
        if ctx.layout is not None and known_layout is not None and ctx.layout != known_layout:
            _ConvertLayout(known_layout).apply(ctx)
        got = ctx.out.partial_shape
        if not got.compatible(param.partial_shape):
            raise EmberError(f"ember: {where}: the steps give shape {got} but the model expects "
                             f"{param.partial_shape}; add resize or convert_layout, or set the tensor's shape")
        self._model.replace_parameter(index, new)
        for inp in consumers:
            inp.replace_source_output(ctx.out)
        self._log.append(f"input {where[len('preprocessing of input '):]}: {tensor_type.name}{shape} "
                         f"{tensor_layout or '<no layout>'}: " + "; ".join(ctx.log[:explicit])
                         + (" (implicit: " + "; ".join(ctx.log[explicit:]) + ")" if ctx.log[explicit:] else ""))

    # -- outputs ------------------------------------------------------------------------
    def _build_output(self, result: Result, info: OutputInfo) -> None:
        src = result.input_values()[0]
        name = sorted(src.names)[0] if src.names else result.friendly_name
        where = f"postprocessing of output '{name}'"
        model_layout = info.model().layout or _port_layout(src)
        ctx = _Context(src, model_layout, None, where, src.partial_shape, model_layout,
                       info.tensor().element_type or src.element_type)
        for step in info.postprocess().steps:
            step.apply(ctx)
        explicit = len(ctx.log)
        if info.tensor().element_type is not None:
            _ConvertType(info.tensor().element_type).apply(ctx)
        tensor_layout = info.tensor().layout
        if tensor_layout is not None and ctx.layout is not None and ctx.layout != tensor_layout:
            _ConvertLayout(tensor_layout).apply(ctx)
        if model_layout is not None:
            src.rt_info["layout"] = {"version": "0", "layout": str(model_layout)}
        if ctx.out == src:
            return
        # The tensor names move to the last new node, named after the old producer (as OpenVINO).
        names = set(src.names)
        src.set_names(set())
        result.input(0).replace_source_output(ctx.out)
        ctx.out.set_names(names)
        last: Node = ctx.out.node
        last.friendly_name = f"{src.node.friendly_name}.{src.index}"
        if ctx.layout is not None:
            ctx.out.rt_info["layout"] = {"version": "0", "layout": str(ctx.layout)}
        self._log.append(f"output '{name}': " + "; ".join(ctx.log[:explicit])
                         + (" (implicit: " + "; ".join(ctx.log[explicit:]) + ")" if ctx.log[explicit:] else ""))

    def __str__(self) -> str:
        if self._log:
            return "\n".join(self._log)
        lines = []
        for i, info in sorted(self._inputs.items()):
            t = info.tensor()
            lines.append(f"input {i}: tensor {t.element_type.name if t.element_type else '(model type)'} "
                         f"{t.layout or '(model layout)'}; {len(info.preprocess().steps)} step(s)")
        for i, o in sorted(self._outputs.items()):
            lines.append(f"output {i}: {len(o.postprocess().steps)} step(s)")
        return "\n".join(lines) or "no pre- or postprocessing"

    def __repr__(self) -> str:
        return f"<PrePostProcessor for '{self._model.friendly_name}'>"
