"""If, Loop and TensorIterator against real OpenVINO.

Every case is a function ``build(ops, Model)`` that builds one model with an opset module's
API (``ember.opset`` or ``openvino.opset16``, which ember mirrors) and returns it with a list
of feeds; the table runs each case in both and compares outputs, output shapes (inferred and
computed) and the IR round trip through real OpenVINO.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ember.opset as eo
from ember.devices.reference.executor import run_model
from ember.errors import EmberError, InferenceError, ShapeInferenceError
from ember.graph import Model, PartialShape
from ember.io import read_ir, serialize, write_ir
from ember.ops.control_flow import If, Loop

ov = pytest.importorskip("openvino")
import openvino.opset16 as oo  # noqa: E402

DATA = Path(__file__).parent.parent / "data" / "ir_examples"
F32 = np.float32
RNG = np.random.default_rng(7)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(F32)


# -- the cases ----------------------------------------------------------------------------------
# Each returns (model, [feeds, ...]): one model, several sets of inputs.

Case = Callable[[Any, Any], tuple[Any, list[list[np.ndarray]]]]


def if_basic(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    c = ops.parameter([], np.bool_, name="c")
    a = ops.parameter([2, 3], F32, name="a")
    tp = ops.parameter([2, 3], F32, name="tp")
    ep = ops.parameter([2, 3], F32, name="ep")
    tr = ops.result(ops.multiply(tp, ops.constant(np.array([1.0, 2.0, 3.0], F32))))
    er = ops.result(ops.negative(ep))
    node = ops.if_op(c)
    node.set_then_body(M([tr], [tp], "then"))
    node.set_else_body(M([er], [ep], "else"))
    node.set_input(a.output(0), tp, ep)
    out = node.set_output(tr, er)
    x = _rand(2, 3)
    return M([ops.result(out)], [c, a], "if_basic"), [[np.bool_(True), x], [np.bool_(False), x]]


def if_one_sided_inputs(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    """Each branch sees only one of the two inputs (set_input with None); two outputs."""
    c = ops.parameter([1], np.bool_, name="c")
    a = ops.parameter([4], F32, name="a")
    b = ops.parameter([4], F32, name="b")
    tp = ops.parameter([4], F32, name="tp")
    ep = ops.parameter([4], F32, name="ep")
    tr1, tr2 = ops.result(ops.relu(tp)), ops.result(ops.reduce_sum(tp, ops.constant(np.int64(0)), False))
    er1, er2 = ops.result(ops.add(ep, ep)), ops.result(ops.reduce_max(ep, ops.constant(np.int64(0)), False))
    node = ops.if_op(c)
    node.set_then_body(M([tr1, tr2], [tp], "then"))
    node.set_else_body(M([er1, er2], [ep], "else"))
    node.set_input(a.output(0), tp, None)
    node.set_input(b.output(0), None, ep)
    o1, o2 = node.set_output(tr1, er1), node.set_output(tr2, er2)
    x, y = _rand(4), _rand(4)
    return M([ops.result(o1), ops.result(o2)], [c, a, b], "if_one_sided"), \
        [[np.array([True]), x, y], [np.array([False]), x, y]]


def if_shape_merge(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    """Branches of different shapes: the output shape is their union ([2,3..6])."""
    c = ops.parameter([], np.bool_, name="c")
    a = ops.parameter([2, 3], F32, name="a")
    tp, ep = ops.parameter([2, 3], F32), ops.parameter([2, 3], F32)
    tr = ops.result(ops.concat([tp, tp], 1))
    er = ops.result(ops.sigmoid(ep))
    node = ops.if_op(c)
    node.set_then_body(M([tr], [tp]))
    node.set_else_body(M([er], [ep]))
    node.set_input(a.output(0), tp, ep)
    out = node.set_output(tr, er)
    x = _rand(2, 3)
    return M([ops.result(out)], [c, a], "if_merge"), [[np.bool_(True), x], [np.bool_(False), x]]


def if_constant_condition(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    """A constant condition: the output takes the chosen branch's exact shape."""
    a = ops.parameter([2, 3], F32, name="a")
    tp, ep = ops.parameter([2, 3], F32), ops.parameter([2, 3], F32)
    tr = ops.result(ops.concat([tp, tp], 0))
    er = ops.result(ops.exp(ep))
    node = ops.if_op(ops.constant(np.array(False)))
    node.set_then_body(M([tr], [tp]))
    node.set_else_body(M([er], [ep]))
    node.set_input(a.output(0), tp, ep)
    out = node.set_output(tr, er)
    return M([ops.result(out)], [a], "if_const"), [[_rand(2, 3)]]


def loop_accumulate(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    """The shared loop_subgraph example: acc = acc + x, three times."""
    x = ops.parameter([2], F32, name="x")
    init = ops.parameter([2], F32, name="init")
    bx, bacc = ops.parameter([2], F32, name="bx"), ops.parameter([2], F32, name="bacc")
    rc, ra = ops.result(ops.constant(True)), ops.result(ops.add(bacc, bx))
    node = ops.loop(ops.constant(np.int64(3)), ops.constant(True))
    node.set_function(M([rc, ra], [bx, bacc], "body"))
    node.set_special_body_ports([-1, 0])
    node.set_invariant_input(bx, x.output(0))
    node.set_merged_input(bacc, init.output(0), ra.output(0))
    out = node.get_iter_value(ra.output(0), -1)
    return M([ops.result(out)], [x, init], "loop_acc"), [[_rand(2), _rand(2)]]


def loop_while(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    """trip count and first condition are inputs; the body counts with current_iteration and
    stops when it reaches a limit; a sliced input and a concatenated output."""
    x = ops.parameter([6, 3], F32, name="x")
    trip = ops.parameter([], np.int64, name="trip")
    first = ops.parameter([], np.bool_, name="first")
    it = ops.parameter([], np.int64, name="it")
    bs = ops.parameter([1, 3], F32, name="bs")
    bacc = ops.parameter([1, 3], F32, name="bacc")
    grown = ops.multiply(bs, ops.convert(ops.add(it, ops.constant(np.int64(1))), "f32"))
    r_c = ops.result(ops.less(it, ops.constant(np.int64(3))))
    r_a = ops.result(ops.add(bacc, grown))
    r_s = ops.result(grown)
    node = ops.loop(trip, first)
    node.set_function(M([r_c, r_a, r_s], [it, bs, bacc], "body"))
    node.set_special_body_ports([0, 0])
    node.set_sliced_input(bs, x.output(0), 0, 1, 1, -1, 0)
    node.set_merged_input(bacc, ops.constant(np.full((1, 3), 0.5, F32)).output(0), r_a.output(0))
    oa = node.get_iter_value(r_a.output(0), -1)
    oc = node.get_concatenated_slices(r_s.output(0), 0, 1, 1, -1, 0)
    xs = _rand(6, 3)
    feeds = [[xs, np.int64(t), np.bool_(True)] for t in (1, 2, 3, 4, 6, -1)]
    return M([ops.result(oa), ops.result(oc)], [x, trip, first], "loop_while"), feeds


def loop_do_while(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    """A body condition that is constantly false runs exactly once."""
    x = ops.parameter([2, 2], F32, name="x")
    bp = ops.parameter([2, 2], F32)
    sq = ops.multiply(bp, bp)
    rc, rv = ops.result(ops.constant(np.array([False]))), ops.result(sq)
    ru = ops.result(ops.unsqueeze(sq, ops.constant(np.int64(1))))
    node = ops.loop(ops.constant(np.int64(10)), ops.constant(True))
    node.set_function(M([rc, rv, ru], [bp]))
    node.set_special_body_ports([-1, 0])
    node.set_merged_input(bp, x.output(0), rv.output(0))
    out = node.get_iter_value(rv.output(0), -1)
    cat = node.get_concatenated_slices(ru.output(0), 0, 1, 1, -1, 1)
    return M([ops.result(out), ops.result(cat)], [x], "loop_do_while"), [[_rand(2, 2)]]


def loop_i32_counter(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    """An i32 trip count and a 1-element i32 current_iteration; scalar values concatenated."""
    trip = ops.parameter([1], np.int32, name="trip")
    it = ops.parameter([1], np.int32, name="it")
    bs = ops.parameter([1], np.int32, name="acc")
    nxt = ops.add(bs, ops.multiply(it, it))
    rc, ra = ops.result(ops.constant(np.array([True]))), ops.result(nxt)
    node = ops.loop(trip, ops.constant(np.array([True])))
    node.set_function(M([rc, ra], [it, bs]))
    node.set_special_body_ports([0, 0])
    node.set_merged_input(bs, ops.constant(np.array([7], np.int32)).output(0), ra.output(0))
    out = node.get_iter_value(ra.output(0), -1)
    cat = node.get_concatenated_slices(ra.output(0), 0, 1, 1, -1, 0)
    feeds = [[np.array([t], np.int32)] for t in (1, 4)]
    return M([ops.result(out), ops.result(cat)], [trip], "loop_i32"), feeds


def loop_growing_state(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    """A merged input that grows each iteration: its body parameter becomes dynamic."""
    x = ops.parameter([2], F32, name="x")
    trip = ops.parameter([], np.int64, name="trip")
    bp = ops.parameter([2], F32)
    rc = ops.result(ops.constant(True))
    rv = ops.result(ops.concat([bp, ops.constant(np.ones(1, F32))], 0))
    node = ops.loop(trip, ops.constant(True))
    node.set_function(M([rc, rv], [bp]))
    node.set_special_body_ports([-1, 0])
    node.set_merged_input(bp, x.output(0), rv.output(0))
    out = node.get_iter_value(rv.output(0), -1)
    return M([ops.result(out)], [x, trip], "loop_grow"), [[_rand(2), np.int64(t)] for t in (1, 3)]


def loop_with_nested_if(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    """The body of a Loop holds an If on the iteration number: even iterations add, odd subtract."""
    x = ops.parameter([3], F32, name="x")
    init = ops.parameter([3], F32, name="init")
    it = ops.parameter([], np.int64, name="it")
    bx, bacc = ops.parameter([3], F32, name="bx"), ops.parameter([3], F32, name="bacc")
    even = ops.equal(ops.floor_mod(it, ops.constant(np.int64(2))), ops.constant(np.int64(0)))
    ta, tb = ops.parameter([3], F32), ops.parameter([3], F32)
    ea, eb = ops.parameter([3], F32), ops.parameter([3], F32)
    tr, er = ops.result(ops.add(ta, tb)), ops.result(ops.subtract(ea, eb))
    inner = ops.if_op(even.output(0))  # OpenVINO drops a Node condition (not an Output)
    inner.set_then_body(M([tr], [ta, tb]))
    inner.set_else_body(M([er], [ea, eb]))
    inner.set_input(bacc.output(0), ta, ea)
    inner.set_input(bx.output(0), tb, eb)
    new = inner.set_output(tr, er)
    scaled = ops.multiply(new, ops.constant(np.float32(1.5)))
    rc, ra = ops.result(ops.constant(True)), ops.result(scaled)
    ru = ops.result(ops.unsqueeze(scaled, ops.constant(np.int64(0))))
    node = ops.loop(ops.constant(np.int64(5)), ops.constant(True))
    node.set_function(M([rc, ra, ru], [it, bx, bacc]))
    node.set_special_body_ports([0, 0])
    node.set_invariant_input(bx, x.output(0))
    node.set_merged_input(bacc, init.output(0), ra.output(0))
    out = node.get_iter_value(ra.output(0), -1)
    cat = node.get_concatenated_slices(ru.output(0), 0, 1, 1, -1, 0)
    return M([ops.result(out), ops.result(cat)], [x, init], "loop_nested_if"), [[_rand(3), _rand(3)]]


def ti_rnn(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    """An RNN-like TensorIterator: sequence sliced on axis 1, hidden state merged, weights
    invariant, hidden states concatenated forwards and the last one returned."""
    X = ops.parameter([2, 5, 3], F32, name="X")
    H0 = ops.parameter([2, 4], F32, name="H0")
    W = ops.parameter([3, 4], F32, name="W")
    U = ops.parameter([4, 4], F32, name="U")
    bx = ops.parameter([2, 1, 3], F32, name="bx")
    bh = ops.parameter([2, 4], F32, name="bh")
    bw, bu = ops.parameter([3, 4], F32, name="bw"), ops.parameter([4, 4], F32, name="bu")
    xt = ops.squeeze(bx, ops.constant(np.array([1], np.int64)))
    h = ops.tanh(ops.add(ops.matmul(xt, bw, False, False), ops.matmul(bh, bu, False, False)))
    rh = ops.result(h)
    rs = ops.result(ops.unsqueeze(h, ops.constant(np.int64(1))))
    node = ops.tensor_iterator()
    node.set_body(M([rh, rs], [bx, bh, bw, bu], "cell"))
    node.set_sliced_input(bx, X.output(0), 0, 1, 1, -1, 1)
    node.set_merged_input(bh, H0.output(0), rh.output(0))
    node.set_invariant_input(bw, W.output(0))
    node.set_invariant_input(bu, U.output(0))
    last = node.get_iter_value(rh.output(0), -1)
    seq = node.get_concatenated_slices(rs.output(0), 0, 1, 1, -1, 1)
    feeds = [[_rand(2, 5, 3), _rand(2, 4), _rand(3, 4) * 0.5, _rand(4, 4) * 0.5]]
    return M([ops.result(last), ops.result(seq)], [X, H0, W, U], "ti_rnn"), feeds


def ti_reverse(ops: Any, M: Any) -> tuple[Any, list[list[np.ndarray]]]:
    """Backward iteration (stride -1 from the end) with a reversed concatenated output, and
    parts of two elements (stride 2) in a second TensorIterator on the same input."""
    X = ops.parameter([1, 6], F32, name="X")
    bx = ops.parameter([1, 1], F32)
    bc = ops.parameter([1, 1], F32)
    cum = ops.add(bc, bx)
    rc, rcum = ops.result(cum), ops.result(ops.multiply(cum, ops.constant(np.float32(2))))
    t1 = ops.tensor_iterator()
    t1.set_body(M([rc, rcum], [bx, bc]))
    t1.set_sliced_input(bx, X.output(0), -1, -1, 1, 0, 1)
    t1.set_merged_input(bc, ops.constant(np.zeros((1, 1), F32)).output(0), rc.output(0))
    fwd = t1.get_concatenated_slices(rcum.output(0), 0, 1, 1, -1, 1)
    bwd = t1.get_concatenated_slices(rcum.output(0), -1, -1, 1, 0, 1)
    px = ops.parameter([1, 2], F32)
    rp = ops.result(ops.multiply(px, px))
    t2 = ops.tensor_iterator()
    t2.set_body(M([rp], [px]))
    t2.set_sliced_input(px, X.output(0), 0, 2, 2, -1, 1)
    pairs = t2.get_concatenated_slices(rp.output(0), 0, 2, 2, -1, 1)
    pairs_rev = t2.get_concatenated_slices(rp.output(0), -1, -2, 2, 0, 1)
    outs = [ops.result(o) for o in (fwd, bwd, pairs, pairs_rev)]
    return M(outs, [X], "ti_reverse"), [[np.arange(6, dtype=F32)[None] + 1]]


CASES: list[Case] = [if_basic, if_one_sided_inputs, if_shape_merge, if_constant_condition, loop_accumulate,
                     loop_while, loop_do_while, loop_i32_counter, loop_growing_state, loop_with_nested_if,
                     ti_rnn, ti_reverse]
IDS = [c.__name__ for c in CASES]


def _openvino(model: Any, feeds: list[np.ndarray]) -> list[np.ndarray]:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(feeds)
    return [np.asarray(res[o]) for o in compiled.outputs]


def _ember(model: Model, feeds: list[np.ndarray]) -> list[np.ndarray]:
    outs = run_model(model, feeds)
    for o, port in zip(outs, model.outputs):
        assert port.partial_shape.accepts(o.shape), f"inferred {port.partial_shape} but computed {o.shape}"
        assert o.dtype == port.element_type.dtype
    return outs


def _close(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape, f"shape {a.shape} != OpenVINO's {b.shape}"
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_openvino(case: Case) -> None:
    ours, feeds = case(eo, Model)
    theirs, _ = case(oo, ov.Model)
    # Inferred output types and shapes agree with OpenVINO's.
    for a, b in zip(ours.outputs, theirs.outputs):
        assert a.element_type.name == b.get_element_type().get_type_name()
        assert str(a.partial_shape) == str(b.get_partial_shape()), (a.partial_shape, b.get_partial_shape())
    for f in feeds:
        _close(_ember(ours, f), _openvino(theirs, f))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ember_ir_runs_in_openvino(case: Case, tmp_path: Path) -> None:
    """ember writes the IR; real OpenVINO and ember read it back and agree."""
    ours, feeds = case(eo, Model)
    write_ir(ours, tmp_path / "m.xml")
    theirs = ov.Core().read_model(str(tmp_path / "m.xml"))
    back = read_ir(tmp_path / "m.xml")
    for f in feeds:
        expected = _ember(ours, f)
        _close(_ember(back, f), expected)
        _close(_openvino(theirs, f), expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_openvino_ir_reads_in_ember(case: Case, tmp_path: Path) -> None:
    """OpenVINO writes the IR; ember reads it, agrees, and writes the same port maps back."""
    theirs, feeds = case(oo, ov.Model)
    ov.save_model(theirs, str(tmp_path / "ov.xml"), compress_to_fp16=False)
    ours = read_ir(tmp_path / "ov.xml")
    for f in feeds:
        _close(_ember(ours, f), _openvino(theirs, f))
    xml, _ = serialize(ours)
    assert _port_maps(xml) == _port_maps((tmp_path / "ov.xml").read_bytes())


def _port_maps(xml: bytes) -> dict[str, list[str]]:
    """Per body op (by name): the order of its children, its port maps and back edges as text."""
    out = {}
    for layer in ET.fromstring(xml).iter("layer"):
        if layer.get("type") not in ("If", "Loop", "TensorIterator"):
            continue
        rows = [" ".join(child.tag for child in layer)]
        for child in layer:
            if child.tag.endswith("port_map") or child.tag == "back_edges":
                rows.append(child.tag + ": " + ";".join(str(sorted(e.attrib.items())) for e in child))
        out[layer.get("name", "")] = rows
    return out


@pytest.mark.parametrize("name", ["if_subgraph", "loop_subgraph"])
def test_reference_ir_examples(name: str) -> None:
    """The If and Loop IRs written by OpenVINO 2026.4: ember's outputs equal OpenVINO's."""
    ours = read_ir(DATA / f"{name}.xml")
    core = ov.Core()
    theirs = core.compile_model(core.read_model(str(DATA / f"{name}.xml")), "CPU")
    rng = np.random.default_rng(3)
    for trial in range(4):
        feeds = []
        for port in ours.inputs:
            if port.element_type.name == "boolean":
                feeds.append(np.array(trial % 2 == 0))
            else:
                feeds.append(rng.standard_normal(tuple(port.shape)).astype(F32))
        res = theirs(feeds)
        _close(_ember(ours, feeds), [np.asarray(res[o]) for o in theirs.outputs])


# -- type and shape inference ------------------------------------------------------------------


def _sliced_loop(ops: Any, M: Any, trip: Any, x_shape: Any) -> tuple[Any, Any]:
    x = ops.parameter(x_shape, F32, name="x")
    bs = ops.parameter([1, 3], F32)
    rc, rs = ops.result(ops.constant(True)), ops.result(ops.relu(bs))
    t = ops.parameter([], np.int64) if trip is None else ops.constant(trip)
    node = ops.loop(t, ops.constant(True))
    node.set_function(M([rc, rs], [bs]))
    node.set_special_body_ports([-1, 0])
    node.set_sliced_input(bs, x.output(0), 0, 1, 1, -1, 0)
    node.get_concatenated_slices(rs.output(0), 0, 1, 1, -1, 0)
    node.get_iter_value(rs.output(0), -1)
    return node, bs


@pytest.mark.parametrize("trip, x_shape, param, cat, last, n", [
    (np.int64(4), [6, 3], "[1,3]", "[4,3]", "[1,3]", 4),
    (np.int64(-1), [6, 3], "[1,3]", "[?,3]", "[1,3]", -1),
    (None, [6, 3], "[1,3]", "[?,3]", "[1,3]", -1),
    (np.int64(4), [-1, -1], "[1,?]", "[4,?]", "[1,?]", 4),
    (np.int64(4), "...", "[...]", "[...]", "[...]", 4),
])
def test_loop_shapes(trip: Any, x_shape: Any, param: str, cat: str, last: str, n: int) -> None:
    ov_shape = ov.PartialShape.dynamic() if x_shape == "..." else x_shape
    for node, bs in (_sliced_loop(eo, Model, trip, x_shape), _sliced_loop(oo, ov.Model, trip, ov_shape)):
        assert str(bs.get_partial_shape()) == param
        assert str(node.get_output_partial_shape(0)) == cat
        assert str(node.get_output_partial_shape(1)) == last
        assert node.get_num_iterations() == n


def test_slices_with_offsets_follow_the_spec() -> None:
    """start/end inside the axis pick the parts between them (both ends included).

    OpenVINO's CPU plugin counts the parts the same way but always starts cutting at index 0
    (or at the end for negative strides), so these cases are checked against numpy."""
    x = np.arange(10, dtype=F32)[None]
    for start, stride, part, end, expected in [
        (1, 1, 1, -2, [1, 2, 3, 4, 5, 6, 7, 8]),
        (2, 2, 2, 7, [2, 3, 4, 5, 6, 7]),
        (-2, -1, 1, 0, [8, 7, 6, 5, 4, 3, 2, 1, 0]),
        (-1, -3, 2, 0, [8, 9, 5, 6, 2, 3]),
        (0, 3, 2, -1, [0, 1, 3, 4, 6, 7]),
    ]:
        X = eo.parameter([1, 10], F32)
        bx = eo.parameter([1, part], F32)
        r = eo.result(eo.relu(bx))
        ti = eo.tensor_iterator()
        ti.set_body(Model([r], [bx]))
        ti.set_sliced_input(bx, X.output(0), start, stride, part, end, 1)
        out = ti.get_concatenated_slices(r.output(0), 0, 1, part, -1, 1)
        assert str(out.partial_shape) == f"[1,{len(expected)}]"
        got = run_model(Model([eo.result(out)], [X]), [x])[0]
        np.testing.assert_array_equal(got[0], np.array(expected, F32))


def test_if_reinfers_bodies_on_reshape() -> None:
    model, _ = if_basic(eo, Model)
    model.reshape({"a": [-1, 3]})
    assert str(model.output(0).partial_shape) == "[?,3]"
    node = next(n for n in model.get_ordered_ops() if isinstance(n, If))
    assert str(node.get_then_body().get_parameters()[0].get_partial_shape()) == "[?,3]"
    out = run_model(model, [np.bool_(False), np.ones((5, 3), F32)])[0]
    np.testing.assert_array_equal(out, -np.ones((5, 3), F32))


def test_zero_iterations_return_initial_values() -> None:
    """trip count 0 or a false first condition: merged outputs are the initial values and
    concatenated outputs are empty along their axis."""
    for trip, first in ((0, True), (5, False)):
        model, _ = loop_while(eo, Model)
        xs = _rand(6, 3)
        acc, cat = run_model(model, [xs, np.int64(trip), np.bool_(first)])
        np.testing.assert_array_equal(acc, np.full((1, 3), 0.5, F32))
        assert cat.shape == (0, 3)


def test_zero_iterations_leave_other_outputs_zero() -> None:
    """A last-iteration output that no iteration computed (not a merged input) is zeros of
    its inferred shape (OpenVINO leaves it undefined)."""
    node, _ = _sliced_loop(eo, Model, None, [6, 3])
    x, trip = node.input_value(2), node.input_value(0)
    assert x is None and trip is None
    model = Model([eo.result(node.output(0)), eo.result(node.output(1))],
                  [node._inputs[2].node, node._inputs[0].node])
    cat, last = run_model(model, [_rand(6, 3), np.int64(0)])
    assert cat.shape == (0, 3)
    np.testing.assert_array_equal(last, np.zeros((1, 3), F32))


def test_zero_iterations_known_statically() -> None:
    x = eo.parameter([2], F32, name="x")
    bp = eo.parameter([2], F32)
    rc, rv = eo.result(eo.constant(True)), eo.result(eo.concat([bp, bp], 0))
    node = eo.loop(eo.constant(np.int64(0)), eo.constant(True))
    node.set_function(Model([rc, rv], [bp]))
    node.set_special_body_ports([-1, 0])
    node.set_merged_input(bp, x.output(0), rv.output(0))
    out = node.get_iter_value(rv.output(0), -1)
    cat = node.get_concatenated_slices(rv.output(0), 0, 1, 1, -1, 0)
    assert str(out.partial_shape) == "[2]" and str(cat.partial_shape) == "[0]"
    model = Model([eo.result(out), eo.result(cat)], [x])
    got = run_model(model, [np.arange(2, dtype=F32)])
    np.testing.assert_array_equal(got[0], np.arange(2, dtype=F32))
    assert got[1].shape == (0,)


def test_executor_is_built_once_per_body() -> None:
    model, feeds = loop_while(eo, Model)
    node = next(n for n in model.get_ordered_ops() if isinstance(n, Loop))
    run_model(model, feeds[0])
    first = node._executors[0]
    assert first is not None
    run_model(model, feeds[1])
    assert node._executors[0] is first


def test_clone_copies_bodies() -> None:
    model, feeds = loop_with_nested_if(eo, Model)
    copy = model.clone()
    a = next(n for n in model.get_ordered_ops() if isinstance(n, Loop))
    b = next(n for n in copy.get_ordered_ops() if isinstance(n, Loop))
    assert a.get_function() is not b.get_function()
    assert a.get_special_body_ports() == b.get_special_body_ports()
    _close(run_model(copy, feeds[0]), run_model(model, feeds[0]))


def test_descriptions_mirror_openvino() -> None:
    ours, _ = ti_rnn(eo, Model)
    theirs, _ = ti_rnn(oo, ov.Model)
    node = next(n for n in ours.get_ordered_ops() if n.type_name == "TensorIterator")
    ov_node = next(n for n in theirs.get_ordered_ops() if n.get_type_name() == "TensorIterator")

    def fields(d: Any) -> tuple:
        keys = ("input_index", "body_parameter_index", "body_value_index", "output_index", "start", "stride",
                "part_size", "end", "axis")
        return (type(d).__name__,) + tuple(getattr(d, k) for k in keys if hasattr(d, k))

    assert [fields(d) for d in node.get_input_descriptions()] == \
        [fields(d) for d in ov_node.get_input_descriptions()]
    assert [fields(d) for d in node.get_output_descriptions()] == \
        [fields(d) for d in ov_node.get_output_descriptions()]
    assert node.get_num_iterations() == ov_node.get_num_iterations() == 5


# -- errors -------------------------------------------------------------------------------------


def test_negative_trip_count_is_an_error() -> None:
    model, _ = loop_while(eo, Model)
    with pytest.raises(InferenceError, match="trip count is -2"):
        run_model(model, [_rand(6, 3), np.int64(-2), np.bool_(True)])
    with pytest.raises(ShapeInferenceError, match="trip count is -3"):
        _sliced_loop(eo, Model, np.int64(-3), [6, 3])


def test_running_out_of_slices_is_an_error() -> None:
    x = eo.parameter([3, 2], F32)
    bs = eo.parameter([1, 2], F32)
    rc, rs = eo.result(eo.constant(True)), eo.result(eo.relu(bs))
    node = eo.loop(eo.constant(np.int64(-1)), eo.constant(True))
    node.set_function(Model([rc, rs], [bs]))
    node.set_special_body_ports([-1, 0])
    node.set_sliced_input(bs, x.output(0), 0, 1, 1, -1, 0)
    out = node.get_iter_value(rs.output(0), -1)
    with pytest.raises(InferenceError, match="iteration 3 needs part 3 of sliced input 2"):
        run_model(Model([eo.result(out)], [x]), [_rand(3, 2)])


def test_building_errors_name_the_node() -> None:
    c = eo.parameter([], np.bool_)
    tp, ep = eo.parameter([2], F32), eo.parameter([2], F32)
    node = eo.if_op(c, name="choose")
    node.set_then_body(Model([eo.result(tp)], [tp]))
    node.set_else_body(Model([eo.result(ep)], [ep]))
    with pytest.raises(EmberError, match="'choose'.*then or an else parameter"):
        node.set_input(eo.parameter([2], F32).output(0), None, None)
    with pytest.raises(EmberError, match="'choose'.*not a parameter of its then_body"):
        node.set_input(eo.parameter([2], F32).output(0), ep, None)
    with pytest.raises(ShapeInferenceError, match="condition must be boolean"):
        eo.if_op(eo.parameter([], F32))
    loop = eo.loop(eo.constant(np.int64(2)), eo.constant(True))
    bp = eo.parameter([2], F32)
    r = eo.result(bp)
    loop.set_function(Model([eo.result(eo.constant(True)), r], [bp]))
    with pytest.raises(EmberError, match="only the last iteration"):
        loop.get_iter_value(r.output(0), 0)
    with pytest.raises(ShapeInferenceError, match="trip count must be i32 or i64"):
        eo.loop(eo.constant(np.float32(2)), eo.constant(True))


def test_mismatched_branch_types_are_an_error() -> None:
    c = eo.parameter([], np.bool_)
    tp, ep = eo.parameter([2], F32), eo.parameter([2], np.int32)
    tr, er = eo.result(tp), eo.result(ep)
    node = eo.if_op(c)
    node.set_then_body(Model([tr], [tp]))
    node.set_else_body(Model([er], [ep]))
    with pytest.raises(ShapeInferenceError, match="output 0 is f32 in then_body but i32 in else_body"):
        node.set_output(tr, er)


def test_partial_shape_of_branches_with_different_ranks() -> None:
    c = eo.parameter([], np.bool_)
    tp, ep = eo.parameter([2, 3], F32), eo.parameter([2], F32)
    tr, er = eo.result(tp), eo.result(ep)
    node = eo.if_op(c)
    node.set_then_body(Model([tr], [tp]))
    node.set_else_body(Model([er], [ep]))
    assert node.set_output(tr, er).partial_shape == PartialShape.dynamic()


def test_unfed_body_parameter_is_an_error() -> None:
    c = eo.parameter([], np.bool_)
    a = eo.parameter([2], F32)
    tp, tq, ep = eo.parameter([2], F32), eo.parameter([2], F32, name="lonely"), eo.parameter([2], F32)
    tr, er = eo.result(eo.add(tp, tq)), eo.result(ep)
    node = eo.if_op(c)
    node.set_then_body(Model([tr], [tp, tq]))
    node.set_else_body(Model([er], [ep]))
    node.set_input(a.output(0), tp, ep)
    model = Model([eo.result(node.set_output(tr, er))], [c, a])
    np.testing.assert_array_equal(run_model(model, [np.bool_(False), np.ones(2, F32)])[0], np.ones(2, F32))
    with pytest.raises(InferenceError, match="parameter 'lonely' of its then_body receives no value"):
        run_model(model, [np.bool_(True), np.ones(2, F32)])


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("<port_map>", "<port_mop>").replace("</port_map>", "</port_mop>"), "has no port map"),
    (lambda t: t.replace('internal_layer_id="1"', 'internal_layer_id="99"', 1), "names no layer"),
    (lambda t: t.replace(' purpose="execution_condition"', ""), "names no port of the layer"),
    (lambda t: t.replace('<edge from-layer="5" to-layer="1"', '<edge from-layer="0" to-layer="1"'),
     "does not start at a Result"),
    (lambda t: t.replace("<body>", "<bodie>").replace("</body>", "</bodie>"), "has no <body>"),
])
def test_malformed_port_maps_are_refused(edit: Callable[[str], str], message: str) -> None:
    from ember.errors import IRFormatError
    from ember.io import read_ir_bytes

    model, _ = loop_accumulate(eo, Model)
    xml, weights = serialize(model)
    with pytest.raises(IRFormatError, match=message):
        read_ir_bytes(edit(xml.decode()), weights)


def test_loop_body_reads_the_trip_count_port(tmp_path: Path) -> None:
    """A port map entry may name input 0 (the trip count) directly, without a duplicate input."""
    trip = oo.constant(np.int64(3))
    x = oo.parameter([1], np.int64, name="x")
    bt, bx = oo.parameter([], np.int64, name="bt"), oo.parameter([1], np.int64, name="bx")
    rc, rv = oo.result(oo.constant(True)), oo.result(oo.add(bx, bt))
    node = oo.loop(trip, oo.constant(True))
    node.set_function(ov.Model([rc, rv], [bt, bx]))
    node.set_special_body_ports([-1, 0])
    node.set_invariant_input(bt, trip.output(0))
    node.set_merged_input(bx, x.output(0), rv.output(0))
    ov.save_model(ov.Model([oo.result(node.get_iter_value(rv.output(0)))], [x]), str(tmp_path / "t.xml"))
    root = ET.parse(tmp_path / "t.xml").getroot()
    loop = next(la for la in root.iter("layer") if la.get("type") == "Loop")
    entry = next(e for e in loop.find("port_map") if e.get("internal_layer_id") == "0")
    dup = int(entry.get("external_port_id", ""))
    entry.set("external_port_id", "0")
    # Drop the duplicate input port and renumber the ports after it.
    lid = loop.get("id")
    inputs = loop.find("input")
    inputs.remove(next(p for p in inputs if p.get("id") == str(dup)))
    edges = root.find("edges")
    edges.remove(next(e for e in edges if e.get("to-layer") == lid and e.get("to-port") == str(dup)))

    def shift(value: str | None) -> str:
        return str(int(value) - 1) if value is not None and int(value) > dup else str(value)

    for p in loop.iter("port"):
        p.set("id", shift(p.get("id")))
    for e in loop.find("port_map"):
        if e.get("external_port_id") != "-1":
            e.set("external_port_id", shift(e.get("external_port_id")))
    for e in edges:
        if e.get("to-layer") == lid:
            e.set("to-port", shift(e.get("to-port")))
        if e.get("from-layer") == lid:
            e.set("from-port", shift(e.get("from-port")))
    ET.ElementTree(root).write(tmp_path / "t.xml")
    ours = read_ir(tmp_path / "t.xml")
    assert next(n for n in ours.get_ordered_ops() if isinstance(n, Loop)).get_input_size() == 3
    np.testing.assert_array_equal(_ember(ours, [np.array([1])])[0], [10])
    # OpenVINO reads it too (its CPU plugin cannot compile a body fed by the trip count).
    assert str(ov.Core().read_model(str(tmp_path / "t.xml")).output(0).get_partial_shape()) == "[1]"
