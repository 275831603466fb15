"""FP16 weight compression on save: weights shrink, sensitive values stay f32, outputs stay close."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import ember as ov
import ember.opset as ops
from ember.devices.reference import run_model
from ember.io import read_ir


def test_compression_rules(tmp_path: Path) -> None:
    x = ops.parameter([2, 8], np.float32, name="x")
    w = ops.constant(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), name="w")
    y = ops.matmul(x, w, False, False)
    y = ops.add(y, ops.constant(np.float32(1e-12), name="eps"))
    y = ops.power(y, ops.constant(np.float32(2.0), name="exponent"))
    y = ops.multiply(y, ops.constant(np.float32(1e5), name="big"))
    m = ov.Model([y], [x])
    ov.save_model(m, tmp_path / "m.xml")
    back = read_ir(tmp_path / "m.xml")
    consts = {n.friendly_name: n.element_type.name for n in back.get_ordered_ops() if n.type_name == "Const"}
    assert consts["w_compressed"] == "f16"
    assert consts["eps"] == "f32" and consts["exponent"] == "f32" and consts["big"] == "f32"
    feed = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    want = run_model(m, [feed])[0]
    np.testing.assert_allclose(run_model(back, [feed])[0], want, rtol=1e-2, atol=1e-2 * np.abs(want).max())
    size_f32 = (tmp_path / "m.bin").stat().st_size
    ov.save_model(m, tmp_path / "f.xml", compress_to_fp16=False)
    assert size_f32 < (tmp_path / "f.bin").stat().st_size


def test_bodies_are_compressed_and_scalars_kept(tmp_path: Path) -> None:
    import openvino  # noqa: F401 - only to be sure the oracle is there
    c = ops.parameter([], np.bool_, name="c")
    a = ops.parameter([8], np.float32, name="a")
    tp = ops.parameter([8], np.float32, name="tp")
    then = ov.Model([ops.result(ops.multiply(tp, np.arange(8, dtype=np.float32)))], [tp])
    ep = ops.parameter([8], np.float32, name="ep")
    other = ov.Model([ops.result(ops.multiply(ep, np.float32(0.2)))], [ep])
    node = ops.if_op(c)
    node.set_then_body(then)
    node.set_else_body(other)
    node.set_input(a.output(0), tp, ep)
    out = node.set_output(then.get_results()[0], other.get_results()[0])
    m = ov.Model([ops.result(out, name="y")], [c, a])
    ov.save_model(m, tmp_path / "if.xml")
    xml = (tmp_path / "if.xml").read_text()
    assert 'element_type="f16" shape="8"' in xml
    assert 'element_type="f32" shape=""' in xml
    back = read_ir(tmp_path / "if.xml")
    feed = np.arange(8, dtype=np.float32)
    for cond in (True, False):
        np.testing.assert_allclose(run_model(back, [np.array(cond), feed])[0], run_model(m, [np.array(cond), feed])[0],
                                   rtol=1e-3)
