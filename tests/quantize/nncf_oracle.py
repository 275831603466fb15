"""Real NNCF 3.4 on OpenVINO as the oracle: the same ember graph saved as IR, quantized by NNCF
with the same calibration samples, read back with ember for comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import ember
from ember.graph.model import Model
from ember.io import read_ir


def nncf_quantize(model: Model, data: list[Any], tmp: Path, **kwargs: Any) -> Model:
    """NNCF's quantization of ``model`` on ``data``, as an ember Model."""
    import nncf
    import openvino as ov

    src = tmp / "float.xml"
    ember.save_model(model, src, compress_to_fp16=False)
    ov_model = ov.Core().read_model(src)
    q = nncf.quantize(ov_model, nncf.Dataset(data), subset_size=len(data), **kwargs)
    dst = tmp / "nncf.xml"
    ov.save_model(q, dst, compress_to_fp16=False)
    return read_ir(dst)


def fake_quantizers(model: Model) -> dict[str, tuple[list[tuple[str, int]], np.ndarray, np.ndarray, int]]:
    """Every FakeQuantize by name: (consumers, input_low, input_high, levels)."""
    out = {}
    for n in model.get_ordered_ops():
        if n.type_name == "FakeQuantize":
            cons = sorted((c.node.friendly_name, c.index) for c in n.output(0).targets)
            out[n.friendly_name] = (cons, n.input_value(1), n.input_value(2), n.attrs["levels"])
    return out


def weight_scales(model: Model) -> dict[str, np.ndarray]:
    """Every int8 weight's per-channel scale, keyed by NNCF's Multiply name ``<layer>/fq_weights_<port>``."""
    out = {}
    for n in model.get_ordered_ops():
        if n.type_name == "Multiply" and "/fq_weights_" in n.friendly_name:
            assert n._inputs[0].node.type_name == "Convert" and n._inputs[0].node._inputs[0].element_type.name == "i8"
            out[n.friendly_name] = n.input_value(1)
    return out


def biases(model: Model) -> dict[str, np.ndarray]:
    """Constant addends of Adds that follow a Convolution or MatMul, by the Add's name."""
    out = {}
    for n in model.get_ordered_ops():
        if n.type_name != "Add":
            continue
        for i, o in enumerate(n._inputs):
            other = n._inputs[1 - i].node.type_name
            if o.node.type_name == "Const" and other in ("Convolution", "GroupConvolution", "MatMul"):
                out[n.friendly_name] = np.asarray(o.node.data, np.float32)
    return out


def compare_placement(ours: Model, theirs: Model, float_model: Model | None = None, rtol: float = 1e-4,
                      bias_rtol: float = 5e-3, weight_rtol: float = 1e-6) -> None:
    """Same FakeQuantize names, consumers, levels and ranges; same weight scales; same bias shifts."""
    a, b = fake_quantizers(ours), fake_quantizers(theirs)
    assert sorted(a) == sorted(b), f"only ember: {sorted(set(a) - set(b))}; only NNCF: {sorted(set(b) - set(a))}"
    for k in a:
        assert a[k][0] == b[k][0], f"{k}: consumers {a[k][0]} vs NNCF {b[k][0]}"
        assert a[k][3] == b[k][3], k
        for x, y in ((a[k][1], b[k][1]), (a[k][2], b[k][2])):
            assert np.size(x) == np.size(y), f"{k}: range shape {np.shape(x)} vs NNCF {np.shape(y)}"
            np.testing.assert_allclose(np.ravel(x), np.ravel(y), rtol=rtol, atol=1e-6, err_msg=k)
    wa, wb = weight_scales(ours), weight_scales(theirs)
    assert sorted(wa) == sorted(wb)
    for k in wa:
        np.testing.assert_allclose(np.ravel(wa[k]), np.ravel(wb[k]), rtol=weight_rtol, err_msg=k)
    if float_model is not None:
        b0, ba, bb = biases(float_model), biases(ours), biases(theirs)
        for k in bb:
            shift_n, shift_e = (bb[k] - b0[k]).ravel(), (ba[k] - b0[k]).ravel()
            scale = max(float(np.max(np.abs(shift_n))), 1e-7)
            diff = float(np.max(np.abs(shift_e - shift_n)))
            assert diff <= bias_rtol * scale + 1e-5, f"bias shift of {k}: off by {diff:.3g}, NNCF shift up to {scale:.3g}"
