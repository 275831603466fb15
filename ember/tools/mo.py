"""``from ember.tools import mo``: the Model Optimizer's Python API, as ``openvino.tools.mo``.

    from ember.tools import mo
    model = mo.convert_model("model.onnx", input_shape=[1, 3, 224, 224], mean_values=[127.5] * 3,
                             scale_values=[127.5] * 3, reverse_input_channels=True)
    ember.save_model(model, "openvino_model/model.xml")

The arguments are the Model Optimizer's; they map onto :func:`ember.convert_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ember.errors import ConversionError
from ember.graph.model import Model

_UNSUPPORTED = ("transformations_config", "tensorflow_custom_operations_config_update", "extensions",
                "use_legacy_frontend", "use_new_frontend", "batch", "static_shape")


def convert_model(input_model: Any, *, input: Any = None, output: Any = None, input_shape: Any = None,
                  example_input: Any = None, mean_values: Any = None, scale_values: Any = None,
                  reverse_input_channels: bool = False, layout: Any = None, source_layout: Any = None,
                  target_layout: Any = None, compress_to_fp16: bool = False, model_name: str | None = None,
                  silent: bool = True, **unsupported: Any) -> Model:
    """Convert ``input_model`` (an ``.onnx`` path, ``onnx.ModelProto``, IR ``.xml`` or ember Model)
    into an ember Model, with Model Optimizer's arguments.

    ``input`` names inputs (``"data,mask"``, a list, or ovc's forms); ``input_shape`` gives their
    shapes (one shape, or a list in the order of ``input`` or of the model's inputs).
    ``mean_values``/``scale_values``/``reverse_input_channels``/``layout`` embed preprocessing in
    the graph as in ``mo``. ``compress_to_fp16`` is a property of saving: pass it to
    ``ember.save_model`` (which compresses by default, as ``mo`` does); it is accepted here so
    that MO scripts run. Arguments of MO's legacy TensorFlow extensions raise an error naming them.
    """
    if unsupported or any(k in unsupported for k in _UNSUPPORTED):
        raise ConversionError(f"ember: mo.convert_model does not support {', '.join(sorted(unsupported))}")
    from ember.convert import convert_model as ember_convert

    if source_layout is not None or target_layout is not None:
        if target_layout is not None and source_layout != target_layout:
            raise ConversionError("ember: mo's target_layout differs from source_layout: transpose the input "
                                  "with PrePostProcessor (ppp.input().tensor().set_layout(...))")
        layout = layout or source_layout
    model = ember_convert(input_model, input=_inputs(input, input_shape), output=output,
                          example_input=example_input, mean_values=mean_values, scale_values=scale_values,
                          reverse_input_channels=reverse_input_channels, layout=layout)
    if model_name:
        model.friendly_name = model_name
    return model


def _names(input: Any) -> list[Any]:
    if input is None:
        return []
    if isinstance(input, str):
        return [s.strip() for s in input.split(",") if s.strip()]
    if isinstance(input, Sequence):
        return list(input)
    return [input]


def _shapes(input_shape: Any) -> list[Any]:
    if input_shape is None:
        return []
    if isinstance(input_shape, str):
        from ember.tools.convert import _mo_shapes

        return _mo_shapes(input_shape)
    if isinstance(input_shape, Sequence) and input_shape and all(isinstance(d, int) for d in input_shape):
        return [list(input_shape)]
    return list(input_shape) if isinstance(input_shape, Sequence) else [input_shape]


def _inputs(input: Any, input_shape: Any) -> Any:
    shapes = _shapes(input_shape)
    if not shapes:
        return input
    names = _names(input)
    if names and len(names) != len(shapes):
        raise ConversionError(f"ember: input names {len(names)} inputs but input_shape gives {len(shapes)} shapes")
    if not names:
        return shapes[0] if len(shapes) == 1 else [(s,) if isinstance(s, str) else s for s in shapes]
    return [(str(n), s) for n, s in zip(names, shapes)]
