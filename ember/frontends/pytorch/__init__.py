"""The PyTorch frontend: ``convert(model, example_input=..., input=...)`` -> ember ``Model``.

Takes a ``torch.nn.Module`` (exported with ``torch.export`` and decomposed to core ATen, keeping
the high-level ops ember converts whole), a ``torch.export.ExportedProgram``, or a TorchScript
module (``torch.jit.ScriptModule`` or the path of a saved archive), whose graph is converted
directly. One small converter per ATen op lives in ``ember.frontends.pytorch.ops`` and
registers itself with ``@converter``. torch is imported only when this package is.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ember.errors import ConversionError
from ember.frontends.pytorch.registry import converter, supported_ops
from ember.graph.model import Model

log = logging.getLogger("ember.frontends.pytorch")
INSTALL_HINT = "ember: converting PyTorch models needs torch: pip install torch"


def _torch() -> Any:
    try:
        import torch
    except ModuleNotFoundError:
        raise ConversionError(INSTALL_HINT) from None
    return torch


def convert(model: Any, example_input: Any = None, input: Any = None, output: Any = None) -> Model:
    """Convert a PyTorch model into an ember ``Model``.

    ``model``: an ``nn.Module`` (needs ``example_input``, or ``input=`` with shapes and types),
    a ``torch.export.ExportedProgram``, a ``torch.jit.ScriptModule``, or a path to a TorchScript
    archive (``.pt``/``.jit``).

    ``example_input``: a tensor or array, a tuple/list of them (positional arguments of
    ``forward``), or a dict (keyword arguments).

    ``input``: shapes and types as ``ovc`` takes them; a dimension of -1 or a ``Dimension``
    range makes that axis dynamic (``torch.export``'s ``dynamic_shapes``). Without ``input``
    the shapes are the example's (an ExportedProgram keeps its own).

    When ``torch.export`` refuses a module (data-dependent control flow), its TorchScript graph
    (``torch.jit.script``) is converted instead, with a warning; if scripting fails too, the
    export error is raised.

    Raises ``UnsupportedOpError`` listing every unsupported op (with the source line of its
    first use) before building anything, ``ConversionError`` when torch cannot export the model.
    """
    torch = _torch()
    from ember.frontends.onnx.convert import parse_input

    specs = parse_input(input)
    if output is not None:
        raise ConversionError("ember: output= is not supported for PyTorch models; return the tensors you "
                              "need from forward")
    if isinstance(model, (str, os.PathLike)):
        from ember.frontends.pytorch.script import convert_script, load_script

        return convert_script(load_script(model), example_input, specs)
    if isinstance(model, torch.jit.ScriptModule) or isinstance(model, torch.jit.ScriptFunction):
        from ember.frontends.pytorch.script import convert_script

        return convert_script(model, example_input, specs)
    from ember.frontends.pytorch import exported

    if isinstance(model, torch.export.ExportedProgram):
        return exported.convert_exported(model, specs)
    if isinstance(model, torch.nn.Module):
        if example_input is None and not specs:
            raise ConversionError("ember: converting a torch.nn.Module needs example_input (or input= with "
                                  "shapes and types)")
        try:
            ep = exported.export(model, example_input, specs)
        except ConversionError as refused:
            scripted = _script_or_none(torch, model)
            if scripted is None:
                raise
            log.warning("%s; converting the module's TorchScript graph (torch.jit.script) instead",
                        str(refused).split(";")[0])
            from ember.frontends.pytorch.script import convert_script

            return convert_script(scripted, example_input, specs)
        return exported.convert_exported(ep, specs)
    raise ConversionError(f"ember: cannot convert a {type(model).__name__} as a PyTorch model")


def _script_or_none(torch: Any, model: Any) -> Any:
    try:
        return torch.jit.script(model.eval())
    except Exception:  # noqa: BLE001 - scripting fails in many ways; the export error is the one to show
        return None


def unsupported_ops(model: Any, example_input: Any = None) -> list[tuple[str, str, str]]:
    """Every ``(op, overload, first source location)`` of ``model`` ember cannot convert."""
    torch = _torch()
    from ember.frontends.pytorch import exported

    ep = model if isinstance(model, torch.export.ExportedProgram) else exported.export(model, example_input, [])
    return exported.missing_ops(exported.decompose(ep))


__all__ = ["convert", "converter", "supported_ops", "unsupported_ops"]
