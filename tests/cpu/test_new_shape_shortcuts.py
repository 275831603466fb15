"""The shortcuts that make a new input shape cheaper (memory placement in Python for small
plans, ...) give the same plan as the general paths they bypass, and a valid one."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.devices.cpu.runtime import memory
from ember.devices.cpu.runtime.memory import place_values

from .test_dynamic_plans import encoder


def _no_overlap(offsets: list[int], sizes: list[int], firsts: list[int], lasts: list[int]) -> None:
    """Oracle: two values alive at a common step never share a byte."""
    n = len(sizes)
    for i in range(n):
        for j in range(i):
            if firsts[i] <= lasts[j] and firsts[j] <= lasts[i]:
                assert offsets[i] + sizes[i] <= offsets[j] or offsets[j] + sizes[j] <= offsets[i], (i, j)


@pytest.mark.parametrize("seed", range(6))
def test_python_and_vectorized_placement_agree(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 120))
    firsts = rng.integers(0, n, n).tolist()
    lasts = [f + int(rng.integers(0, 8)) for f in firsts]
    # equal sizes and equal lifetimes included: ties in the first-fit order must break alike
    sizes = [int(x) * 64 for x in rng.choice([1, 2, 3, 16, 100], n)]
    py = place_values(sizes, firsts, lasts, vectorized=False)
    vec = place_values(sizes, firsts, lasts, vectorized=True)
    assert py == vec
    _no_overlap(py, sizes, firsts, lasts)


def test_plan_memory_same_offsets_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real specialized plan (several shapes) gets the same arena layout from both paths."""
    core = ember.Core()
    compiled = core.compile_model(encoder(), "CPU")
    exe = compiled._executable
    for seq in (3, 7, 20):
        prog = exe._programs.get(((2, seq, 32),))
        memory.plan_memory(prog)
        fast = {t.id: t.offset for t in prog.tensors}
        fast_bytes = prog.arena_bytes
        monkeypatch.setattr(memory, "PYTHON_PLACEMENT_BELOW", -1)
        memory.plan_memory(prog)
        monkeypatch.undo()
        assert {t.id: t.offset for t in prog.tensors} == fast
        assert prog.arena_bytes == fast_bytes
        roots = [t for t in prog.tensors if t.kind == "value" and t.arena and t.offset >= 0]
        assert roots
        # an output written over its dying residual shares that value's bytes (test_in_place.py):
        # such a chain is one value alive from its first step to its last
        owners = memory._in_place_owners(prog)
        chains: dict[int, list] = {}
        for t in roots:
            chains.setdefault(memory._owner_of(t.id, owners), []).append(t)
        spans = [(g[0].offset, max(t.nbytes for t in g), min(t.first for t in g), max(t.last for t in g))
                 for g in chains.values()]
        assert all(t.offset == g[0].offset for g in chains.values() for t in g)
        _no_overlap(*(list(col) for col in zip(*spans)))


def _types(nodes: list) -> list:  # noqa: ANN001
    return [(n.type_name, [(str(o.element_type), str(o.partial_shape)) for o in n.outputs()]) for n in nodes]


def test_signature_entries_kept_across_shapes_give_inferred_types() -> None:
    """The per-node entries (signature and constant inputs' key parts) are made for the first
    shape and reused by the next ones, shared constant copies included: every node of every copy
    has the types a full inference gives, at new batch sizes and lengths and back."""
    from ember.devices.cpu import device as cpu_device

    from .test_dynamic_plans import layered

    for build in (layered, encoder):
        compiled = ember.Core().compile_model(build(), "CPU")
        programs = compiled._executable._programs
        entries: dict = {}
        consts: dict = {}
        for key in [((1, 5, 32),), ((2, 9, 32),), ((1, 5, 32),), ((3, 1, 32),), ((2, 17, 32),)]:
            _, kept = cpu_device._clone_with_shapes(programs.model, key, programs._order, entries, consts)
            cpu_device._disconnect(consts.values())
            _, inferred = cpu_device._clone_with_shapes(programs.model, key, programs._order,
                                                        {id(node): None for node in programs._order})
            assert _types(kept) == _types(inferred), key
        assert any(e is not None and any(p is not None for p in e[1]) for e in entries.values())


def test_input_binding_slots_from_the_reader_index() -> None:
    """A model input read in place twice by one kernel (GEMM operand and its residual) and
    through a view: the binding slots found from the per-tensor reader index are those a scan
    of every op finds, and each call reads its own input (results against numpy)."""
    import ember.opset as ops
    from ember.graph.model import Model

    rng = np.random.default_rng(5)
    w = rng.standard_normal((16, 16)).astype(np.float32)
    x = ops.parameter([-1, 16], np.float32, name="x")
    y = ops.add(ops.matmul(x, w, False, False), x)
    z = ops.relu(ops.reshape(x, np.array([-1, 4, 4], np.int64), False))
    compiled = ember.Core().compile_model(Model([y, z], [x], "twice"), "CPU")
    exe = compiled._executable
    for rows in (3, 5, 7):
        inst = exe._instance([np.zeros((rows, 16), np.float32)])  # bound, not run: no pointer patched yet
        prog = inst.program
        assert inst.bindings
        for b in inst.bindings:
            copy = next(op.outputs[0] for op in prog.ops
                        if op.type_name == "InputCopy" and op.inputs[0].index == b.index)
            start = inst.arrays[copy.id].ctypes.data
            end = start + max(copy.nbytes, 1)
            # oracle: every bound kernel of the plan, each pointer word that points into the copy
            scanned = [(id(k.ctx), word, int(k.ctx[word]) - start) for k in inst._keep for word in k.pointer_words
                       if start <= int(k.ctx[word]) < end]
            assert len(scanned) >= 2  # the GEMM's operand and residual at least
            assert sorted((id(c), wd, off) for c, wd, off in b.slots) == sorted(scanned)
        for _ in range(2):
            a = rng.standard_normal((rows, 16)).astype(np.float32)
            out = compiled([a])
            np.testing.assert_allclose(out[0], a @ w + a, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(out[1], np.maximum(a.reshape(-1, 4, 4), 0))


def test_short_rows_of_every_length_need_no_new_module() -> None:
    """A sentence's mask summed over its length (one row of 2-16 values): the kernel that
    compiles the row length in is for many rows only, so a new length loads no kernel module
    (on a machine without a kernel cache each would be an LLVM compile, tens of ms)."""
    import ember.opset as ops
    from ember.devices.cpu.llvm import jit
    from ember.graph.model import Model

    def summed(shape: list[int]) -> Model:
        x = ops.parameter(shape, np.float32, name="x")
        return Model([ops.reduce_sum(x, ops.constant(np.array([1], np.int64)))], [x], "rows")

    req = ember.Core().compile_model(summed([1, -1]), "CPU").create_infer_request()
    rng = np.random.default_rng(0)
    req.infer({"x": np.ones((1, 17), np.float32)})
    before = len(jit.get_jit()._libraries)
    for n in range(2, 17):
        v = rng.standard_normal((1, n)).astype(np.float32)
        out = req.infer({"x": v})[0]
        np.testing.assert_allclose(out, v.sum(axis=1), rtol=1e-5, atol=1e-5)
    assert len(jit.get_jit()._libraries) == before
    # many short rows still take the row-length kernel, and sum right
    many = rng.standard_normal((40, 5)).astype(np.float32)
    out = ember.Core().compile_model(summed([40, 5]), "CPU").create_infer_request().infer({"x": many})[0]
    np.testing.assert_allclose(out, many.sum(axis=1), rtol=1e-5, atol=1e-5)
