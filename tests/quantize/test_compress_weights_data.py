"""Data-aware compress_weights (a ``dataset``: mixed-precision criteria, AWQ, scale estimation)
against real NNCF 3.4 on the same IR and the same calibration items: the same layers in INT4 and
INT8, the same AWQ multiplies, the same decompressed weights, and an output error no worse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ember
import ember.nncf as nncf
import ember.opset as ops
from ember.graph.model import Model
from ember.io import read_ir
from ember.quantize.graph_utils import Constants
from tests.quantize.test_compress_weights import _gpt2, _minilm

pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")


def _glu_lm() -> Model:
    """The MLP shapes AWQ is for: embedding -> SwiGLU (gate/up/down) -> ReLU -> MatMul ->
    sigmoid * 2 -> MatMul -> LM head, with an outlier channel in the embeddings."""
    rng = np.random.default_rng(5)

    def w(*shape: int) -> Any:
        return ops.constant((rng.standard_normal(shape) * 0.1).astype(np.float32))

    v, h, f = 200, 64, 128
    ids = ops.parameter([1, 12], np.int64, name="ids")
    emb = rng.standard_normal((v, h)).astype(np.float32)
    emb[:, 5] *= 20
    x = ops.gather(ops.constant(emb), ids, np.int64(0), name="embed")
    gate = ops.matmul(x, w(f, h), False, True, name="gate")
    up = ops.matmul(x, w(f, h), False, True, name="up")
    glu = ops.multiply(ops.swish(gate, name="silu"), up, name="glu")
    down = ops.matmul(glu, w(h, f), False, True, name="down")  # MatMul -> Multiply -> MatMul: merged into up
    proj = ops.matmul(ops.relu(down, name="relu"), w(h, h), False, True, name="proj")  # activation -> MatMul
    sig = ops.multiply(ops.sigmoid(proj, name="sig"), ops.constant(np.float32(2.0)), name="mul2")
    proj2 = ops.matmul(sig, w(h, h), False, False, name="proj2")  # activation -> Multiply -> MatMul
    out = ops.matmul(proj2, w(v, h), False, True, name="lm_head")
    return Model([out], [ids], "glu_lm")


def _nncf_compress(model: Model, tmp: Path, data: list[Any], monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> Model:
    import nncf as real_nncf

    # NNCF 3.4's OpenVINO-accelerated compression path writes scale-estimation scales as i16
    # constants under OpenVINO 2026.4 (f16 bits read as integers); its numpy path is correct.
    monkeypatch.setenv("NNCF_DISABLE_OPTIMIZED_COMPRESSION", "1")
    ember.save_model(model, tmp / "float.xml", compress_to_fp16=False)
    kwargs = {k: (getattr(real_nncf.SensitivityMetric, v) if k == "sensitivity_metric" else v)
              for k, v in kwargs.items()}
    mode = getattr(real_nncf.CompressWeightsMode, kwargs.pop("mode"))
    out = real_nncf.compress_weights(ov.Core().read_model(tmp / "float.xml"), mode=mode,
                                     dataset=real_nncf.Dataset(data), **kwargs)
    ov.save_model(out, tmp / "nncf.xml", compress_to_fp16=False)
    return read_ir(tmp / "nncf.xml")


def _ember_compress(model: Model, data: list[Any], **kwargs: Any) -> Model:
    kwargs = {k: (getattr(nncf.SensitivityMetric, v) if k == "sensitivity_metric" else v) for k, v in kwargs.items()}
    mode = getattr(nncf.CompressWeightsMode, kwargs.pop("mode"))
    return nncf.compress_weights(model, mode=mode, dataset=nncf.Dataset(data), **kwargs)


def _weights(model: Model) -> dict[str, tuple[str, np.ndarray]]:
    """Each constant-weighted MatMul/Gather: (stored element type, decompressed weight)."""
    consts = Constants()
    out = {}
    for n in model.get_ordered_ops():
        port = {"MatMul": 1, "Gather": 0}.get(n.type_name)
        if port is None or not consts.is_const(n.input(port).source):
            continue
        src = n.input(port).source
        node = src.node
        while node.type_name != "Const":  # down the decompression chain to the stored constant
            node = node.input(0).source.node
        out[n.friendly_name] = (node.output(0).element_type.name, consts.value(src).astype(np.float32))
    return out


def _awq_scales(model: Model) -> dict[str, np.ndarray]:
    return {n.friendly_name: np.ravel(n.input_value(1)) for n in model.get_ordered_ops()
            if n.type_name == "Multiply" and "/awq_mul" in n.friendly_name}


def _error(model: Model, compressed: Model, items: list[Any]) -> float:
    """Mean relative L2 error of the compressed model's output against the float model's."""
    ref, test = ember.compile_model(model, "REFERENCE"), ember.compile_model(compressed, "REFERENCE")
    errs = []
    for x in items:
        a, b = ref(x)[0], test(x)[0]
        errs.append(float(np.linalg.norm(b - a) / np.linalg.norm(a)))
    return float(np.mean(errs))


def _check(model: Model, ours: Model, theirs: Model, evaluation: list[Any], weight_atol: float = 0.2) -> None:
    a, b = _weights(ours), _weights(theirs)
    assert sorted(a) == sorted(b)
    kinds = {k: (a[k][0], b[k][0]) for k in a}
    assert all(x == y for x, y in kinds.values()), f"stored types (ember, NNCF) differ: {kinds}"
    for k in a:  # equal up to f16 scale rounding, and a rare rounding flip (one INT4 step at most)
        scale = float(np.max(np.abs(b[k][1])))
        close = np.isclose(a[k][1], b[k][1], rtol=2e-3, atol=2e-3 * scale)
        assert close.mean() > 0.999, f"{k}: {100 * (1 - close.mean()):.2f}% of the weights differ from NNCF's"
        assert float(np.max(np.abs(a[k][1] - b[k][1]))) <= weight_atol * scale + 1e-6, k
    sa, sb = _awq_scales(ours), _awq_scales(theirs)
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_allclose(sa[k], sb[k], rtol=1e-3, err_msg=k)
    ours_err, theirs_err = _error(model, ours, evaluation), _error(model, theirs, evaluation)
    assert ours_err <= theirs_err * 1.02 + 1e-4, f"output error {ours_err:.4f} vs NNCF's {theirs_err:.4f}"


GLU_CASES = [
    {"mode": "INT4_SYM", "ratio": 0.5, "group_size": 32},  # default metric with data: MAX_ACTIVATION_VARIANCE
    {"mode": "INT4_ASYM", "ratio": 0.6, "group_size": 32, "sensitivity_metric": "MEAN_ACTIVATION_VARIANCE"},
    {"mode": "INT4_SYM", "ratio": 0.6, "group_size": 32, "sensitivity_metric": "MEAN_ACTIVATION_MAGNITUDE"},
    {"mode": "INT4_SYM", "ratio": 0.5, "group_size": 64, "sensitivity_metric": "HESSIAN_INPUT_ACTIVATION",
     "all_layers": True},
    {"mode": "INT4_ASYM", "ratio": 0.5, "group_size": 32, "sensitivity_metric": "WEIGHT_QUANTIZATION_ERROR"},
    {"mode": "INT4_ASYM", "group_size": 32, "awq": True},
    {"mode": "INT4_SYM", "group_size": 32, "awq": True, "ratio": 0.6},
    {"mode": "INT4_SYM", "group_size": 32, "scale_estimation": True},
    {"mode": "INT4_ASYM", "group_size": 32, "awq": True, "scale_estimation": True},
    {"mode": "INT4_SYM", "group_size": -1, "awq": True, "scale_estimation": True},
]


@pytest.mark.parametrize("kwargs", GLU_CASES, ids=["-".join(f"{k}{v}" for k, v in c.items()) for c in GLU_CASES])
def test_data_aware_compression_matches_nncf(kwargs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _glu_lm()
    rng = np.random.default_rng(1)
    data = [rng.integers(0, 200, (1, 12)).astype(np.int64) for _ in range(16)]
    evaluation = [rng.integers(0, 200, (1, 12)).astype(np.int64) for _ in range(6)]
    theirs = _nncf_compress(model, tmp_path, data, monkeypatch, **kwargs)
    ours = _ember_compress(model, data, **kwargs)
    if kwargs.get("awq"):
        assert _awq_scales(ours), "AWQ inserted no scale"
    _check(model, ours, theirs, evaluation)


def test_data_aware_compression_errors() -> None:
    model = _glu_lm()
    data = nncf.Dataset([np.zeros((1, 12), np.int64)])
    with pytest.raises(nncf.QuantizationError, match="INT4 modes only"):
        nncf.compress_weights(model, dataset=data)
    with pytest.raises(nncf.QuantizationError, match="needs a dataset"):
        nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, scale_estimation=True)
    with pytest.raises(nncf.QuantizationError, match="needs a dataset"):
        nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, ratio=0.5,
                              sensitivity_metric=nncf.SensitivityMetric.MEAN_ACTIVATION_VARIANCE)
    with pytest.raises(nncf.QuantizationError, match="gptq"):
        nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, dataset=data, gptq=True)
    with pytest.raises(nncf.QuantizationError, match="lora_correction"):
        nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, dataset=data, lora_correction=True)
    with pytest.raises(nncf.QuantizationError, match="empty"):
        nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, ratio=0.5, dataset=nncf.Dataset([]))


def test_data_free_awq_matches_nncf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``awq=True`` without a dataset: NNCF's data-free scales (1 / mean |w| per input channel)."""
    import nncf as real_nncf

    model = _glu_lm()
    ember.save_model(model, tmp_path / "float.xml", compress_to_fp16=False)
    monkeypatch.setenv("NNCF_DISABLE_OPTIMIZED_COMPRESSION", "1")
    theirs = real_nncf.compress_weights(ov.Core().read_model(tmp_path / "float.xml"),
                                        mode=real_nncf.CompressWeightsMode.INT4_ASYM, group_size=32, awq=True)
    ov.save_model(theirs, tmp_path / "nncf.xml", compress_to_fp16=False)
    ours = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32, awq=True)
    rng = np.random.default_rng(2)
    _check(model, ours, read_ir(tmp_path / "nncf.xml"), [rng.integers(0, 200, (1, 12)).astype(np.int64)
                                                        for _ in range(4)])


REAL_CASES = [
    ("gpt2", {"mode": "INT4_SYM", "ratio": 0.5, "group_size": 32}),
    ("gpt2", {"mode": "INT4_ASYM", "ratio": 0.6, "group_size": 32, "sensitivity_metric": "HESSIAN_INPUT_ACTIVATION",
              "scale_estimation": True, "awq": True}),
    ("minilm", {"mode": "INT4_SYM", "ratio": 0.6, "group_size": 32, "scale_estimation": True}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("which", "kwargs"), REAL_CASES, ids=[f"{w}-{'-'.join(f'{k}{v}' for k, v in c.items())}"
                                                              for w, c in REAL_CASES])
def test_real_models_data_aware_match_nncf(which: str, kwargs: dict, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    if which == "gpt2":
        model, _ = _gpt2()
        data: list[Any] = [rng.integers(0, 512, (1, 16)).astype(np.int64) for _ in range(12)]
        evaluation: list[Any] = [rng.integers(0, 512, (1, 16)).astype(np.int64) for _ in range(4)]
    else:
        model, _ = _minilm()
        from ember import zoo

        tok = zoo.load_tokenizer()
        sentences = [f"Sentence number {i} talks about {w} and weight compression." for i, w in
                     enumerate(["rivers", "mountains", "compilers", "music", "gardens", "trains", "stars", "bread",
                                "chess", "oceans", "cities", "winter"])]
        items = []
        for s in sentences:
            enc = tok.encode([s])
            items.append({"input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
                          "token_type_ids": enc.token_type_ids})
        data, evaluation = items[:9], items[9:]
    theirs = _nncf_compress(model, tmp_path, data, monkeypatch, **kwargs)
    ours = _ember_compress(model, data, **kwargs)
    _check(model, ours, theirs, evaluation)


def test_awq_on_a_fork_keeps_every_branch_exact() -> None:
    """A ReLU read by two INT4 MatMuls: each gets its own inverse scale on its own edge (NNCF
    would scale the ReLU output for both consumers), so every branch stays equal to the float
    model up to the INT4 rounding."""
    rng = np.random.default_rng(9)
    x = ops.parameter([1, 10, 64], np.float32, name="x")
    act = ops.relu(x, name="relu")
    outs = [ops.matmul(act, (rng.standard_normal((32, 64)) * 0.1).astype(np.float32), False, True, name=f"fc{i}")
            for i in range(2)]
    model = Model([ops.add(outs[0], outs[1], name="sum"), ops.matmul(act, np.eye(64, dtype=np.float32), False,
                                                                     False, name="tail")], [x])
    data = [(rng.standard_normal((1, 10, 64)) * np.where(np.arange(64) == 3, 30, 1)).astype(np.float32)
            for _ in range(8)]
    kwargs = {"mode": nncf.CompressWeightsMode.INT4_SYM, "group_size": 32, "all_layers": True,
              "ignored_scope": nncf.IgnoredScope(["tail"])}
    plain = nncf.compress_weights(model, dataset=nncf.Dataset(data), **kwargs)
    awq = nncf.compress_weights(model, dataset=nncf.Dataset(data), awq=True, **kwargs)
    assert len(_awq_scales(awq)) == 2
    ref, p, a = (ember.compile_model(m, "REFERENCE") for m in (model, plain, awq))
    for item in data[:3]:
        np.testing.assert_allclose(a(item)[1], ref(item)[1], rtol=1e-6, atol=1e-6)  # the float branch untouched
        err_awq = np.linalg.norm(a(item)[0] - ref(item)[0])
        assert err_awq <= 1.5 * np.linalg.norm(p(item)[0] - ref(item)[0]) + 1e-6
