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
