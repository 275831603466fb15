"""Every public method users call on the main API classes says what it does."""

from __future__ import annotations

import inspect

import pytest

import ember as ov


@pytest.mark.parametrize("cls", [ov.Model, ov.Tensor, ov.InferRequest, ov.CompiledModel, ov.Core,
                                 ov.AsyncInferQueue], ids=lambda c: c.__name__)
def test_public_methods_have_docstrings(cls: type) -> None:
    assert cls.__doc__
    missing = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        fn = member.fget if isinstance(member, property) else member
        if inspect.isfunction(fn) and not fn.__doc__:
            missing.append(name)
    assert not missing, f"{cls.__name__} methods without a docstring: {missing}"
