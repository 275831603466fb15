"""Outputs written over their residual (``Op.inplace``, ``plan_memory``): a GEMM or convolution
whose residual Add is fused, and whose residual dies there, writes its output into the
residual's bytes. Checked against REFERENCE, with the cases where sharing would be wrong (the
residual read later, read by the same op as its input, a model input's copy, K in several
chunks) planned apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.devices.cpu.runtime import memory
from ember.graph.model import Model

RNG = np.random.default_rng(7)


def _f(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _conv1x1(x: Any, cin: int, cout: int) -> Any:
    return ops.add(ops.convolution(x, _f(cout, cin, 1, 1, scale=cin ** -0.5), [1, 1], [0, 0], [0, 0], [1, 1]),
                   _f(1, cout, 1, 1))


def bottleneck(blocks: int = 1, read_later: bool = False) -> Model:
    """``blocks`` ResNet bottlenecks (1x1 -> 1x1 -> 1x1 + residual, ReLU); ``read_later``: the
    first block's residual is also a model output (alive after its last convolution)."""
    x = ops.parameter([1, 32, 9, 7], np.float32, name="x")
    a = ops.relu(_conv1x1(x, 32, 64))
    first = a
    for _ in range(blocks):
        b = ops.relu(_conv1x1(a, 64, 16))
        a = ops.relu(ops.add(_conv1x1(b, 16, 64), a))
    return Model([a, first] if read_later else [a], [x], "bottleneck")


def self_residual() -> Model:
    """conv(h) + h: the residual is also the convolution's input (it must not be overwritten)."""
    x = ops.parameter([1, 32, 6, 6], np.float32, name="x")
    h = ops.relu(_conv1x1(x, 32, 32))
    return Model([ops.relu(ops.add(_conv1x1(h, 32, 32), h))], [x], "self_residual")


def input_residual() -> Model:
    """conv(x1) + x2 with x2 a model input: its copy may be read from the caller's array."""
    x1 = ops.parameter([1, 32, 6, 6], np.float32, name="x1")
    x2 = ops.parameter([1, 48, 6, 6], np.float32, name="x2")
    return Model([ops.add(_conv1x1(x1, 32, 48), x2)], [x1, x2], "input_residual")


def mlp(k: int) -> Model:
    """h = x W1; o = relu(h W2) W3 + h (a transformer's feed-forward block), inner width ``k``."""
    x = ops.parameter([2, 5, 24], np.float32, name="x")
    h = ops.matmul(x, _f(24, 40, scale=0.2), False, False)
    g = ops.relu(ops.matmul(h, _f(40, k, scale=0.2), False, False))
    return Model([ops.add(ops.matmul(g, _f(k, 40, scale=k ** -0.5), False, False), h)], [x], "mlp")


def _compare(build: Callable[[], Model], inputs: list[np.ndarray]) -> tuple[list[np.ndarray], object]:
    model = build()
    ref = ember.Core().compile_model(model, "REFERENCE")
    cm = ember.Core().compile_model(model, "CPU")
    kept = [a.copy() for a in inputs]
    want, got = ref(inputs), cm(inputs)
    for i in range(len(cm.outputs)):
        np.testing.assert_allclose(got[cm.output(i)], want[ref.output(i)], rtol=1e-5, atol=1e-5)
    for a, b in zip(inputs, kept):
        np.testing.assert_array_equal(a, b)  # the caller's arrays untouched
    return [got[cm.output(i)] for i in range(len(cm.outputs))], cm


def _program(cm: object):  # noqa: ANN202 - the bound plan's program
    return next(iter(cm._executable._instances.values())).program  # type: ignore[attr-defined]


@pytest.mark.parametrize(("build", "inputs", "shared"), [
    (lambda: bottleneck(1), [_f(1, 32, 9, 7)], 1),
    (lambda: bottleneck(3), [_f(1, 32, 9, 7)], 3),  # a chain: each block's output takes the last one's bytes
    (lambda: bottleneck(2, read_later=True), [_f(1, 32, 9, 7)], 1),  # the first residual is alive to the end
    (self_residual, [_f(1, 32, 6, 6)], 0),
    (input_residual, [_f(1, 32, 6, 6), _f(1, 48, 6, 6)], 0),
    (lambda: mlp(64), [_f(2, 5, 24)], 1),
    (lambda: mlp(600), [_f(2, 5, 24)], 0),  # K in two chunks: the first would overwrite the residual
], ids=["bottleneck", "chain", "read-later", "self", "model-input", "matmul", "matmul-k-chunks"])
def test_outputs_over_dying_residuals(build: Callable[[], Model], inputs: list[np.ndarray], shared: int) -> None:
    _, cm = _compare(build, inputs)
    prog = _program(cm)
    assert prog.stats["in_place_outputs"] == shared
    owners = memory._in_place_owners(prog)
    by_id = {t.id: t for t in prog.tensors}
    for out, res in owners.items():
        assert by_id[out].offset == by_id[res].offset >= 0
    # apart from those pairs, no two values alive at one step share a byte
    roots = [t for t in prog.tensors if t.kind == "value" and t.arena and t.offset >= 0]
    group = {t.id: memory._owner_of(t.id, owners) for t in roots}
    for i, t in enumerate(roots):
        for u in roots[:i]:
            if group[t.id] == group[u.id] or not (t.first <= u.last and u.first <= t.last):
                continue
            assert t.offset + t.nbytes <= u.offset or u.offset + u.nbytes <= t.offset, (t.name, u.name)


def test_in_place_off_plans_apart_with_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """``memory.IN_PLACE = False`` (A/B runs): nothing shared, the same bits."""
    x = [_f(1, 32, 9, 7)]
    model = bottleneck(3)
    on = ember.Core().compile_model(model, "CPU")
    monkeypatch.setattr(memory, "IN_PLACE", False)
    off = ember.Core().compile_model(model, "CPU")
    assert _program(off).stats["in_place_outputs"] == 0 and _program(on).stats["in_place_outputs"] == 3
    np.testing.assert_array_equal(on(x)[on.output(0)], off(x)[off.output(0)])


def test_winograd_output_over_its_residual() -> None:
    """A 3x3 Winograd convolution's output transform reads each residual pixel right before it
    writes it: a basic block (ResNet-18's) shares too."""
    def basic() -> Model:
        x = ops.parameter([1, 64, 12, 12], np.float32, name="x")
        h = ops.relu(_conv1x1(x, 64, 64))
        c = ops.convolution(ops.relu(_conv1x1(h, 64, 64)), _f(64, 64, 3, 3, scale=1 / 24), [1, 1], [1, 1],
                            [1, 1], [1, 1])
        return Model([ops.relu(ops.add(c, h))], [x], "basic")

    _, cm = _compare(basic, [_f(1, 64, 12, 12)])
    prog = _program(cm)
    assert any(t.name.endswith("/winograd_v") for op in prog.ops for t in op.outputs)
    assert prog.stats["in_place_outputs"] == 1
