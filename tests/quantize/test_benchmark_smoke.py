"""benchmarks/quantize.py's own helpers (the benchmark itself is not part of the test run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "quantize.py"


def _bench():  # noqa: ANN202 - the module
    spec = importlib.util.spec_from_file_location("quantize_benchmark", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_helpers(tmp_path: Path) -> None:
    b = _bench()
    assert b._edit("kitten", "sitting") == 3 and b._edit("", "abc") == 3 and b._edit("same", "same") == 0
    arrays = [np.full((1, 2), i, np.float32) for i in range(12)]
    np.savez(tmp_path / "a.npz", *arrays)
    assert [float(a[0, 0]) for a in b._calib_items(tmp_path / "a.npz")] == list(range(12))
    dicts = [{"ids": np.array([i]), "mask": np.array([1])} for i in range(3)]
    np.savez(tmp_path / "d.npz", **{f"{k}_{i}": v for i, d in enumerate(dicts) for k, v in d.items()})
    items = b._calib_items(tmp_path / "d.npz")
    assert [int(d["ids"][0]) for d in items] == [0, 1, 2] and set(items[0]) == {"ids", "mask"}
    assert len(b.sentences(5, 0)) == 5


def test_benchmark_intervals_and_rendered_lines() -> None:
    b = _bench()
    half = 1.96 * np.std([1.0, 0.0, 1.0, 0.0], ddof=1) / 2
    assert b._with_ci(np.array([1.0, 0.0, 1.0, 0.0])) == f"0.5000 ± {half:.4f}"
    assert b._with_ci(np.array([0.5, 0.5]), signed=True) == "+0.5000 ± 0.0000"
    lines = b.rendered_lines(["the quick brown fox jumps over the lazy dog"] * 2, seed=0)
    assert all(x.ndim == 3 and x.shape[2] == 3 and x.dtype == np.uint8 and x.shape[1] > 2 * x.shape[0] for x in lines)


def test_accuracy_control_validation_lines_are_other_text() -> None:
    """The recognizer's validation lines (accuracy control) are neither calibration nor evaluation
    sentences, and padding them to a width bucket keeps the line's own columns."""
    b = _bench()
    val = b.sentences(b.VAL_LINES, 400)
    assert len(val) == b.VAL_LINES
    assert not set(val) & (set(b.sentences(50, 0)) | set(b.sentences(b.OCR_LINES, 800)))
    line = b.rendered_lines(["accuracy control on other sentences"], seed=3)[0]
    exact, padded = b.rec_input(line), b.rec_input(line, bucket=b.VAL_BUCKET)
    assert padded.shape[-1] % b.VAL_BUCKET == 0 and padded.shape[-1] >= exact.shape[-1]
    drawn = -(-48 * line.shape[1] // line.shape[0])  # the line's own columns, then zeros
    assert padded[..., drawn - 1].any() and not padded[..., drawn:].any()


def test_ppocr_study_keeps_only_weights_or_only_activations() -> None:
    """The study's "int8 weights only" / "activations only" models: one kind of quantization left,
    and the other exactly float (checked against numpy fake quantization of the weights)."""
    import ember
    import ember.nncf as nncf
    import ember.opset as ops
    from ember.graph.model import Model
    from ember.quantize.compare import is_compressed_weight, quantized_layers

    b = _bench()
    rng = np.random.default_rng(2)
    w1, w2 = (rng.standard_normal((8, 6)) * 0.3).astype(np.float32), (rng.standard_normal((4, 8)) * 0.3).astype(np.float32)

    def build() -> Model:
        x = ops.parameter([2, 6], np.float32, name="x")
        h = ops.relu(ops.matmul(x, w1, False, True, name="fc1"), name="r")
        return Model([ops.matmul(h, w2, False, True, name="fc2")], [x])

    data = [rng.standard_normal((2, 6)).astype(np.float32) for _ in range(3)]
    fmodel = build()
    q = nncf.quantize(fmodel, nncf.Dataset(data), subset_size=3,
                      advanced_parameters=nncf.AdvancedQuantizationParameters(show_progress=False))
    weights_only, acts_only = b.read_ir_copy(q), b.read_ir_copy(q)
    b._keep_only(weights_only, fmodel, "weights")
    b._keep_only(acts_only, fmodel, "activations")
    assert not [n for n in weights_only.get_ordered_ops() if n.type_name == "FakeQuantize" and n.output(0).targets]
    assert not any(is_compressed_weight(s) for n in quantized_layers(acts_only) for s in n.input_values())
    assert any(n.type_name == "FakeQuantize" and n.output(0).targets for n in acts_only.get_ordered_ops())

    def fq_weight(w: np.ndarray) -> np.ndarray:  # per output channel, symmetric, 255 levels
        scale = np.abs(w).max(axis=1, keepdims=True) / 127
        return (np.clip(np.rint(w / scale), -127, 127) * scale).astype(np.float32)

    x = data[0]
    expected = np.maximum(x @ fq_weight(w1).T, 0) @ fq_weight(w2).T  # no bias: nothing for bias correction
    np.testing.assert_allclose(ember.compile_model(weights_only, "CPU")(x)[0], expected, rtol=1e-5, atol=1e-5)
