"""``ember quantize``: images and .npy folders in, IR that OpenVINO reads out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ember
import ember.opset as ops
from ember.graph.model import Model
from ember.io import read_ir
from ember.tools.cli import main

ov = pytest.importorskip("openvino")


def _model(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    x = ops.parameter([1, 3, 16, 16], np.float32, name="image")
    c = ops.relu(ops.add(ops.convolution(x, (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32), [1, 1],
                                         [1, 1], [1, 1], [1, 1], name="conv"),
                         (rng.standard_normal((1, 8, 1, 1)) * 0.1).astype(np.float32), name="conv/bias"), name="relu")
    y = ops.convolution(c, (rng.standard_normal((4, 8, 1, 1)) * 0.2).astype(np.float32), [1, 1], [0, 0], [0, 0],
                        [1, 1], name="head")
    path = tmp / "m.xml"
    ember.save_model(Model([y], [x], "m"), path, compress_to_fp16=False)
    return path


def test_quantize_image_folder_with_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    skio = pytest.importorskip("skimage.io")
    import skimage.data

    photo = skimage.data.astronaut()
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        skio.imsave(tmp_path / "imgs" / f"{i}.png", photo[i * 100:i * 100 + 120, i * 50:i * 50 + 120])
    out = tmp_path / "q.xml"
    rc = main(["quantize", str(_model(tmp_path)), "--data", str(tmp_path / "imgs"), "-o", str(out),
               "--mean-values", "127,127,127", "--scale-values", "128,128,128", "--report"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "2 activation quantizers" in text and "2 int8/int4 weights" in text and "left float: none" in text
    assert "per-layer quantization error" in text and "head (Convolution)" in text
    q = read_ir(out)
    assert sum(n.type_name == "FakeQuantize" for n in q.get_ordered_ops()) == 2
    ov_model = ov.Core().read_model(out)
    assert sum(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ordered_ops()) == 2


def test_quantize_npy_folder_and_compress_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "arrays").mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        np.save(tmp_path / "arrays" / f"{i}.npy", rng.standard_normal((1, 3, 16, 16)).astype(np.float32))
    model = _model(tmp_path)
    assert main(["quantize", str(model), "--data", str(tmp_path / "arrays"), "--subset-size", "2",
                 "--ignore", "head"]) == 0
    assert "Convolution x1" in capsys.readouterr().out  # head stayed float
    assert (tmp_path / "m_int8.xml").exists()
    assert main(["quantize", str(model), "--compress-weights", "int8_sym", "-o", str(tmp_path / "w.xml")]) == 0
    assert ov.Core().compile_model(str(tmp_path / "w.xml"), "CPU")(rng.standard_normal((1, 3, 16, 16)))[0].shape \
        == (1, 4, 16, 16)


def test_quantize_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model(tmp_path)
    assert main(["quantize", str(model)]) == 2
    assert "needs calibration data" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["quantize", str(model), "--data", str(tmp_path / "empty")]) == 2
    assert "no images" in capsys.readouterr().err
    np.save(tmp_path / "one.npy", np.zeros((1, 3, 16, 16), np.float32))
    assert main(["quantize", str(model), "--data", str(tmp_path / "one.npy"), "--ignore", "nope"]) == 2
    assert "name 'nope'" in capsys.readouterr().err


def test_compress_with_data_matches_nncf(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``ember compress --data`` (mixed precision by activations, AWQ, scale estimation) gives the
    weights real NNCF gives on the same calibration files; ``quantize --compress-weights`` too."""
    pytest.importorskip("nncf")
    from tests.quantize.test_compress_weights_data import _check, _glu_lm, _nncf_compress

    model = _glu_lm()
    path = tmp_path / "lm.xml"
    ember.save_model(model, path, compress_to_fp16=False)
    rng = np.random.default_rng(1)
    data = [rng.integers(0, 200, (1, 12)).astype(np.int64) for _ in range(12)]
    (tmp_path / "ids").mkdir()
    for i, x in enumerate(data):
        np.save(tmp_path / "ids" / f"{i:02d}.npy", x)
    out = tmp_path / "int4.xml"
    assert main(["compress", str(path), "--mode", "int4_asym", "--group-size", "32", "--ratio", "0.6", "--awq",
                 "--scale-estimation", "--data", str(tmp_path / "ids"), "-o", str(out)]) == 0
    assert "int8/int4 weights" in capsys.readouterr().out
    theirs = _nncf_compress(model, tmp_path, data, monkeypatch, mode="INT4_ASYM", group_size=32, ratio=0.6,
                            awq=True, scale_estimation=True)
    evaluation = [rng.integers(0, 200, (1, 12)).astype(np.int64) for _ in range(4)]
    _check(model, read_ir(out), theirs, evaluation)
    assert ov.Core().compile_model(str(out), "CPU")(evaluation[0])[0].shape == (1, 12, 200)

    # the same through `quantize --compress-weights`, with a metric: as the library call on those files
    out2 = tmp_path / "int4_sym.xml"
    assert main(["quantize", str(path), "--compress-weights", "int4_sym", "--group-size", "32", "--ratio", "0.5",
                 "--sensitivity-metric", "mean_activation_magnitude", "--subset-size", "8",
                 "--data", str(tmp_path / "ids"), "-o", str(out2)]) == 0
    import ember.nncf as nncf

    lib = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=32, ratio=0.5,
                                sensitivity_metric=nncf.SensitivityMetric.MEAN_ACTIVATION_MAGNITUDE, subset_size=8,
                                dataset=nncf.Dataset(data))
    ref, got = ember.compile_model(lib, "REFERENCE"), ember.compile_model(read_ir(out2), "REFERENCE")
    np.testing.assert_array_equal(got(evaluation[1])[0], ref(evaluation[1])[0])


def test_compress_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model(tmp_path)
    np.save(tmp_path / "one.npy", np.zeros((1, 3, 16, 16), np.float32))
    assert main(["quantize", str(model), "--data", str(tmp_path / "one.npy"), "--awq"]) == 2
    assert "apply to weight compression" in capsys.readouterr().err
    assert main(["compress", str(model), "--mode", "int8_sym", "--data", str(tmp_path / "one.npy")]) == 2
    assert "INT4 modes only" in capsys.readouterr().err
    assert main(["compress", str(model), "--mode", "int8_sym", "-o", str(tmp_path / "w.xml")]) == 0
    assert (tmp_path / "w.xml").exists()


def test_quantize_range_estimator_flag(tmp_path: Path) -> None:
    """``--range-estimator histogram`` gives the model ``quantize`` gives with that estimator."""
    import ember.nncf as nncf

    rng = np.random.default_rng(2)
    (tmp_path / "arrays").mkdir()
    data = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(3)]
    for i, x in enumerate(data):
        np.save(tmp_path / "arrays" / f"{i}.npy", x)
    model = _model(tmp_path)
    out = tmp_path / "h.xml"
    assert main(["quantize", str(model), "--data", str(tmp_path / "arrays"), "--range-estimator", "histogram",
                 "-o", str(out)]) == 0
    lib = nncf.quantize(read_ir(model), nncf.Dataset(data), advanced_parameters=nncf.AdvancedQuantizationParameters(
        activations_range_estimator_params=nncf.RangeEstimatorParametersSet.HISTOGRAM))
    default = nncf.quantize(read_ir(model), nncf.Dataset(data))

    def highs(m: Model) -> list[float]:
        return [float(n.input_value(2).max()) for n in m.get_ordered_ops() if n.type_name == "FakeQuantize"]

    assert highs(read_ir(out)) == pytest.approx(highs(lib)) and highs(lib) != pytest.approx(highs(default))
