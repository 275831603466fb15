"""IR v11 interop with real OpenVINO, both ways, on the IR pairs real OpenVINO 2026.4 wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ember.devices.reference import run_model
from ember.graph import Model
from ember.io import read_ir, serialize, write_ir

ov = pytest.importorskip("openvino")

DATA = Path(__file__).parent.parent / "data" / "ir_examples"
PAIRS = sorted(p.stem for p in DATA.glob("*.xml"))


def _feeds(model: Model, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = []
    for p in model.inputs:
        dims = []
        for d in p.partial_shape:
            if d.is_static:
                dims.append(d.get_length())
            else:
                hi = d.max_length if d.max_length != -1 else d.min_length + 8
                dims.append(int(rng.integers(max(d.min_length, 2), max(hi, 2) + 1)))
        et = p.element_type
        if et.name == "boolean":
            feeds.append(rng.integers(0, 2, dims).astype(bool))
        elif et.is_real:
            feeds.append(rng.standard_normal(dims).astype(et.dtype))
        else:
            feeds.append(rng.integers(0, 200, dims).astype(et.dtype))
    return feeds


def _openvino_outputs(xml: Path | str, feeds: list[np.ndarray], bin_path: Path | None = None) -> list[np.ndarray]:
    core = ov.Core()
    m = core.read_model(str(xml), str(bin_path) if bin_path else None)
    c = core.compile_model(m, "CPU", OV_CONFIG)
    res = c(feeds)
    return [np.asarray(res[o]) for o in c.outputs]


# OpenVINO's CPU plugin fuses f16 weight decompression (Subtract/Multiply in f16) into its
# matmul and computes it in f32; the graph (and ember's reference) rounds each step to f16.
# The difference is f16 rounding (~5e-4 relative); everything else is held to 1e-5.
LOOSE = {"matmul_int4_sym_g32_wc": 1e-3, "matmul_int8_asym_wc": 1e-3}
OV_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


def _assert_close(ours: list[np.ndarray], theirs: list[np.ndarray], rtol: float = 1e-5) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert tuple(a.shape) == tuple(b.shape)
        if a.dtype.kind in "fc" or b.dtype.kind in "fc" or a.dtype.name == "bfloat16":
            # rtol 1e-5 relative to the output's magnitude: OpenVINO's CPU kernels sum in another
            # order, so single elements near zero differ by more than 1e-5 of themselves.
            scale = float(np.abs(b.astype(np.float64)).max()) if b.size else 1.0
            np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=rtol * scale)
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", PAIRS)
def test_openvino_ir_reads_and_matches(name: str) -> None:
    model = read_ir(DATA / f"{name}.xml")
    feeds = _feeds(model)
    ours = run_model(model, feeds)
    theirs = _openvino_outputs(DATA / f"{name}.xml", feeds)
    _assert_close(ours, theirs, LOOSE.get(name, 1e-5))


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("compress", [False, True])
def test_ember_ir_loads_in_openvino(name: str, compress: bool, tmp_path: Path) -> None:
    model = read_ir(DATA / f"{name}.xml")
    write_ir(model, tmp_path / "m.xml", compress_to_fp16=compress)
    feeds = _feeds(model, seed=1)
    theirs = _openvino_outputs(tmp_path / "m.xml", feeds)
    back = read_ir(tmp_path / "m.xml")
    ours = run_model(back, feeds)
    _assert_close(ours, theirs, LOOSE.get(name, 1e-5))
    if not compress:
        _assert_close(ours, run_model(model, feeds))


@pytest.mark.parametrize("name", PAIRS)
def test_round_trip_is_identical(name: str) -> None:
    model = read_ir(DATA / f"{name}.xml")
    xml1, bin1 = serialize(model)
    from ember.io import read_ir_bytes

    xml2, bin2 = serialize(read_ir_bytes(xml1, bin1))
    assert xml1 == xml2
    assert bin1 == bin2


def test_names_layout_and_rt_info_survive(tmp_path: Path) -> None:
    model = read_ir(DATA / "dyn_ppp_misc.xml")
    p = model.inputs[0]
    assert p.names == {"images"}
    assert p.rt_info["layout"]["layout"] == "[N,H,W,C]"
    assert str(p.partial_shape) == "[1..8,?,16..64,3]"
    assert model.get_rt_info(["custom", "key"]) == "my_value"
    write_ir(model, tmp_path / "m.xml")
    back = ov.Core().read_model(str(tmp_path / "m.xml"))
    assert back.input(0).get_partial_shape() == ov.PartialShape("[1..8,?,16..64,3]")
    assert back.get_rt_info(["custom", "key"]).astype(str) == "my_value"
    assert str(back.get_parameters()[0].get_layout()) == "[N,H,W,C]"


def test_constant_types_decode_like_openvino() -> None:
    model = read_ir(DATA / "const_types.xml")
    ours = dict(zip([sorted(o.names)[0] for o in model.outputs], run_model(model, [np.ones(1, np.float32)])))
    assert ours["r_u1"].tolist() == [1, 0, 1, 1, 0, 0, 0, 0, 1]
    assert ours["r_i4"].tolist() == [1, -2, 3, -4, 5]
    assert ours["r_nf4"][1] == 1.0 and ours["r_nf4"][2] == -1.0


def test_string_constant_round_trip(tmp_path: Path) -> None:
    model = read_ir(DATA / "string_const.xml")
    (out,) = run_model(model, [])
    assert out.tolist() == ["hello", "wörld", ""]
    write_ir(model, tmp_path / "s.xml")
    assert (tmp_path / "s.bin").read_bytes() == (DATA / "string_const.bin").read_bytes()
