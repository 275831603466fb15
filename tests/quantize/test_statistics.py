"""The statistics pass (ember.quantize.statistics.Collector) against numpy on the float
activations, at varying input shapes, and the CPU device's memory plan of such a pass against a
plain first-fit written here."""

from __future__ import annotations

import numpy as np
import pytest

import ember.opset as ops
from ember.devices.reference.executor import run_model
from ember.graph.model import Model
from ember.quantize.statistics import Collector

RNG = np.random.default_rng(5)


def _model(width: int | None) -> tuple[Model, dict[str, object]]:
    """Conv -> bias -> ReLU -> conv -> MatMul over width; ``width`` None: dynamic."""
    x = ops.parameter([-1, 3, 6, width or -1], np.float32, name="x")
    c1 = ops.convolution(x, RNG.standard_normal((5, 3, 3, 3)).astype(np.float32), [1, 1], [1, 1], [1, 1], [1, 1])
    b1 = ops.add(c1, RNG.standard_normal((1, 5, 1, 1)).astype(np.float32))
    r1 = ops.relu(b1)
    c2 = ops.convolution(r1, RNG.standard_normal((4, 5, 3, 3)).astype(np.float32), [1, 2], [0, 1], [0, 1], [1, 1])
    seq = ops.transpose(ops.reshape(c2, np.array([0, 16, -1], np.int64), True), np.array([0, 2, 1], np.int64))
    mm = ops.matmul(seq, RNG.standard_normal((16, 7)).astype(np.float32), False, False)
    m = Model([mm], [x])
    return m, {"x": x.output(0), "b1": b1.output(0), "r1": r1.output(0), "c2": c2.output(0), "seq": seq.output(0),
               "mm": mm.output(0)}


#: port, channel axis (None: per tensor), what is measured
CASES = [("b1", 1, "means"), ("r1", None, "ranges"), ("r1", 1, "ranges"), ("c2", 1, "both"), ("seq", None, "ranges"),
         ("seq", 2, "both"), ("mm", 2, "means"), ("x", None, "ranges")]


def _numpy_stats(values: list[np.ndarray], axis: int | None, batchwise: bool) -> dict[str, np.ndarray]:
    samples = [v[i:i + 1] for v in values for i in range(v.shape[0])] if batchwise else values
    out = {"mean_min": np.mean([s.min() for s in samples]), "mean_max": np.mean([s.max() for s in samples])}
    if axis is not None:
        other = lambda v: tuple(a for a in range(v.ndim) if a != axis)  # noqa: E731
        out["ch_min"] = np.min([v.min(axis=other(v)) for v in values], axis=0)
        out["ch_max"] = np.max([v.max(axis=other(v)) for v in values], axis=0)
        out["channel_mean"] = np.mean([s.mean(axis=other(s)) for s in samples], axis=0)
    return out


@pytest.mark.parametrize("batchwise", [False, True])
def test_collected_statistics_equal_numpy_at_varying_shapes(batchwise: bool) -> None:
    model, ports = _model(None)
    inputs = [RNG.standard_normal((2 if batchwise else 1, 3, 6, w)).astype(np.float32) for w in (9, 14, 9, 21)]
    collector = Collector(model, batchwise)
    for name, axis, what in CASES:
        collector.observe(ports[name], axis, ranges=what != "means", means=what != "ranges")
    assert collector.run(inputs, len(inputs), show_progress=False) == len(inputs)
    # the oracle: the float activations from the REFERENCE device, reduced in numpy
    probe = Model([ports[n] for n in ("b1", "r1", "c2", "seq", "mm")], model.get_parameters())
    acts = {n: [] for n in ("b1", "r1", "c2", "seq", "mm")}
    for x in inputs:
        for n, v in zip(acts, run_model(probe, [x])):
            acts[n].append(v)
    acts["x"] = inputs
    for name, _, _ in CASES:
        st = collector.stats[ports[name]]
        want = _numpy_stats(acts[name], st.axis, batchwise)
        assert st.count == sum(v.shape[0] if batchwise else 1 for v in inputs)
        if st.ranges:
            np.testing.assert_allclose(st.mean_min, want["mean_min"], rtol=1e-5, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(st.mean_max, want["mean_max"], rtol=1e-5, atol=1e-5, err_msg=name)
            if st.axis is not None:
                np.testing.assert_allclose(st.ch_min, want["ch_min"], rtol=1e-5, atol=1e-5, err_msg=name)
                np.testing.assert_allclose(st.ch_max, want["ch_max"], rtol=1e-5, atol=1e-5, err_msg=name)
        if st.means and st.axis is not None:
            np.testing.assert_allclose(st.channel_mean, want["channel_mean"], rtol=1e-4, atol=1e-5, err_msg=name)
        if st.axis is not None:
            assert st.shape == acts[name][-1].shape


def _first_fit(program: object) -> tuple[dict[int, int], int]:
    """The arena plan by the rule plan_memory documents, walked plainly: values largest first
    (then earliest), each at the lowest offset free of every value alive at the same step."""
    tensors = [t for t in program.tensors if t.kind == "value" and t.arena and t.last >= 0 and not t.external]
    tensors.sort(key=lambda t: (-t.nbytes, t.first))
    placed: list[tuple[int, int, int, int]] = []
    offsets = {}
    for t in tensors:
        size = -(-max(t.nbytes, 1) // 64) * 64
        off = 0
        for o, e in sorted((o, e) for o, e, f, la in placed if f <= t.last and la >= t.first):
            if off + size <= o:
                break
            off = max(off, e)
        offsets[id(t)] = off
        placed.append((off, off + size, t.first, t.last))
    return offsets, max((e for _, e, _, _ in placed), default=0)


def test_memory_plan_of_a_statistics_pass_is_first_fit() -> None:
    from ember.quantize import statistics

    model, ports = _model(None)
    compiled: list[object] = []
    real = statistics.compile_for_statistics

    def keep(m: Model) -> object:
        compiled.append(real(m))
        return compiled[-1]

    collector = Collector(model)
    for name, axis, what in CASES:
        collector.observe(ports[name], axis, ranges=what != "means", means=what != "ranges")
    mp = pytest.MonkeyPatch()
    mp.setattr(statistics, "compile_for_statistics", keep)
    try:
        collector.run([RNG.standard_normal((1, 3, 6, 40)).astype(np.float32)], 1, show_progress=False)
    finally:
        mp.undo()
    program = compiled[0]._executable.program
    offsets, top = _first_fit(program)
    assert program.arena_bytes == top
    for t in program.tensors:
        if id(t) in offsets:
            assert t.offset == offsets[id(t)]
