"""The README's figures, generated from the tools that measure them.

Each generated block in README.md sits between ``<!-- generated:NAME -->`` and
``<!-- /generated:NAME -->``; this script renders every block from its source and either
rewrites README.md (``--write``) or checks that it is current (``--check``, exit code 1 and a
diff when not). Tests call the same functions, so a README whose figures disagree with the
tools' output fails the suite.

    python benchmarks/readme_tables.py --write [--only compare,conformance]
    python benchmarks/readme_tables.py --check

Blocks:
- ``compare``: the newest ``benchmarks/results/*-compare.json`` written by ``compare.py --out``.
- ``conformance``: ``tests/conformance/results.json`` written by ``tests/conformance/run_node_tests.py``.
- ``optimizer``: nodes before and after ``optimize(level=2)`` on the PyTorch-exported networks of
  ``tests/models/torch_models.py`` (exports them once, cached; needs torch).
"""

from __future__ import annotations

import argparse
import collections
import difflib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
CONFORMANCE = ROOT / "tests" / "conformance" / "results.json"

_NAMES = {"resnet50": "ResNet-50", "mobilenet_v2": "MobileNetV2", "bert_like": "BERT-like (seq 128)",
          "efficientnet_lite0": "EfficientNet-Lite0", "efficientnet-lite0": "EfficientNet-Lite0",
          "minilm": "all-MiniLM-L6-v2 (seq 128)", "ppocr-det": "PP-OCRv4 det (480x640)",
          "ppocr-rec": "PP-OCRv4 rec (48x320)"}


def newest_compare() -> Path:
    files = list(RESULTS.glob("*-compare.json"))
    if not files:
        raise SystemExit(f"no *-compare.json in {RESULTS}; run benchmarks/compare.py --out results/DATE-compare")

    def measured(f: Path) -> tuple[str, str]:  # when the run started (names sort s10 before s9)
        try:
            return str(json.loads(f.read_text())["environment"]["date"]), f.name
        except (ValueError, KeyError, TypeError):
            return "", f.name

    return max(files, key=measured)


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"


def compare_block(data: dict[str, Any] | None = None, source: str | None = None) -> str:
    """The README's speed table: ember against OpenVINO and ONNX Runtime, per model and precision."""
    if data is None:
        path = newest_compare()
        data, source = json.loads(path.read_text()), f"benchmarks/results/{path.name}"
    env = data["environment"]
    precisions = [p for p in data["config"]["precisions"] if p in ("f32", "bf16", "int8")]
    head = ["model"]
    for p in precisions:
        head += [f"ember {p}", f"OpenVINO {p}", f"ember / OpenVINO {p}"]
    head.append("ember / ORT f32")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    thr: list[str] = []
    load: list[str] = []
    rss: list[str] = []
    for m in data["models"]:
        engines = {(e["kind"], e.get("precision")): e for e in m.get("engines", [])}
        row = [_NAMES.get(m["model"], m["model"])]
        for p in precisions:
            ours, ov = engines.get(("ember", p)), engines.get(("openvino", p))
            lat = lambda e: e["latency"]["median_ms"] if e and e.get("latency") else None  # noqa: E731
            # compare.py's ratio (the median of the rounds' paired ratios), else the medians' ratio
            ratio = (ov.get("latency_ratio") or lat(ours) / lat(ov)) if lat(ours) and lat(ov) else None
            row += [_ms(lat(ours)), _ms(lat(ov)), f"{ratio:.2f}" if ratio else "-"]
            if ours and ov and ours.get("throughput_ips") and ov.get("throughput_ips"):
                tr = ov.get("throughput_ratio") or ov["throughput_ips"] / ours["throughput_ips"]
                thr.append(f"{row[0]} {p} {tr:.2f}")
            if ov and ov.get("load_ratio"):
                load.append(f"{row[0]} {p} {ov['load_ratio']:.2f}")
            if ov and ov.get("rss_ratio") and ours and ours.get("peak_rss_mb"):
                rss.append(f"{row[0]} {p} {ours['peak_rss_mb']:.0f} / {ov['peak_rss_mb']:.0f} MB")
        ours, ort = engines.get(("ember", "f32")), engines.get(("onnxruntime", "f32"))
        if ours and ort and ours.get("latency") and ort.get("latency"):
            row.append(f"{ort.get('latency_ratio') or ours['latency']['median_ms'] / ort['latency']['median_ms']:.2f}")
        else:
            row.append("-")
        lines.append("| " + " | ".join(row) + " |")
    versions = f"OpenVINO {env.get('openvino')}, ONNX Runtime {env.get('onnxruntime')}"
    lines += ["", f"Batch 1, LATENCY hint, medians of {data['config']['rounds']} alternating rounds "
              f"({env['date'][:10]}, {env['cores']} cores of {env['cpu']}; {versions}; `{source}`). "
              + ("Each ratio is the median of the rounds' ratios (ember's slice against the peer's, seconds "
                 "apart). " if any(e.get("latency_ratio_pooled") for m in data["models"] for e in m.get("engines", []))
                 else "") + "Ratios above 1: ember slower."]
    if thr:
        lines.append(f"Throughput (THROUGHPUT hint), ember / OpenVINO time per inference: {', '.join(thr)}.")
    if load:
        lines.append("Latency while another process spins on one of the cores, ember / OpenVINO: "
                     f"{', '.join(load)}.")
    if rss:
        lines.append(f"Peak resident memory of read + compile + 10 inferences, ember / OpenVINO: {', '.join(rss)}.")
    return "\n".join(lines)


_CATEGORY_WORDS = {"type": "element types OpenVINO lacks", "not-in-openvino": "ops OpenVINO has no counterpart for",
                   "sequence": "sequence-typed model I/O", "strings": "string ops", "random": "random ops",
                   "openvino-semantics": "OpenVINO semantics", "image": "image decoding", "ml-domain": "ai.onnx.ml ops",
                   "training": "training ops", "optional": "optional-typed model I/O", "known-bug": "known bugs"}


def conformance_block(summary: dict[str, Any] | None = None) -> str:
    """The README's ONNX conformance sentence."""
    if summary is None:
        summary = json.loads(CONFORMANCE.read_text())["summary"]
    cats = sorted(summary.get("excluded_by_category", {}).items(), key=lambda kv: (-kv[1], kv[0]))
    parts = ", ".join(f"{n} {_CATEGORY_WORDS.get(c, c)}" for c, n in cats if n)
    failed = summary["failed"]
    return (f"**Conformance: {summary['passed']} of the {summary['total']} ONNX backend node tests of onnx "
            f"1.23.2 pass ({100 * summary['passed'] / summary['total']:.1f}%)**, "
            f"{'none fail' if not failed else f'{failed} fail'}, {summary['excluded']} are excluded with a reason "
            f"category each (`tests/conformance/exclusions.txt`: {parts}).")


def optimizer_block() -> str:
    """Nodes before and after optimize(level=2) on the PyTorch-exported networks."""
    sys.path.insert(0, str(ROOT / "tests"))
    from models.torch_models import export

    from ember.frontends.onnx import convert
    from ember.passes import OptimizationReport, optimize

    lines = ["| model | before | after | what changed (passes that fired, rewrites) |", "|---|---|---|---|"]
    for name in ("resnet50", "mobilenet_v2", "bert_like"):
        model = convert(export(name))
        rep = OptimizationReport(2)
        after = optimize(model, 2, report=rep)
        before_n, after_n = len(model.get_ordered_ops()), len(after.get_ordered_ops())
        counts = collections.Counter(n.type_name for n in after.get_ordered_ops())
        fired = ", ".join(f"{p} {c}" for p, c in sorted(_fired(rep).items(), key=lambda kv: -kv[1]) if c)
        made = ", ".join(f"{counts[t]} {t}" for t in ("Gelu", "MVN", "ScaledDotProductAttention", "Swish", "HSwish")
                         if counts[t])
        lines.append(f"| {_NAMES.get(name, name)} | {before_n} | {after_n} | {fired}{'; now ' + made if made else ''} |")
    return "\n".join(lines)


def _fired(rep: Any) -> dict[str, int]:
    return dict(rep.fired())


def passes_block() -> str:
    """Every registered pass with its level and the first line of its docstring."""
    from ember.passes import pipeline

    known = pipeline.passes()
    order = list(dict.fromkeys([n for n in pipeline.PIPELINE if n in known] + sorted(set(known) - set(pipeline.PIPELINE))))
    rows = sorted((known[n] for n in order), key=lambda i: i.level)
    lines = ["| level | pass | what it does |", "|---|---|---|"]
    lines += [f"| {i.level} | `{i.name}` | {i.doc.rstrip('.').replace('``', '`')} |" for i in rows]
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[], str]] = {"compare": compare_block, "conformance": conformance_block,
                                        "optimizer": optimizer_block, "passes": passes_block}


def block_in(text: str, name: str) -> str | None:
    m = re.search(rf"<!-- generated:{name} -->\n(.*?)<!-- /generated:{name} -->", text, re.S)
    return m.group(1).removesuffix("\n") if m else None


def replace_block(text: str, name: str, body: str) -> str:
    pattern = rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)"
    if not re.search(pattern, text, re.S):
        raise SystemExit(f"README.md has no '<!-- generated:{name} -->' block")
    return re.sub(pattern, lambda m: m.group(1) + body + "\n" + m.group(2), text, count=1, flags=re.S)


def check(name: str, body: str | None = None, readme: Path = README) -> str | None:
    """None when README's block ``name`` equals ``body`` (rendered from its source when None);
    otherwise a unified diff."""
    body = BLOCKS[name]() if body is None else body
    current = block_in(readme.read_text(), name)
    if current == body:
        return None
    return "\n".join(difflib.unified_diff((current or "").splitlines(), body.splitlines(), "README.md",
                                          f"generated:{name}", lineterm=""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true", help="rewrite README.md's generated blocks")
    g.add_argument("--check", action="store_true", help="exit 1 when a block is not current")
    p.add_argument("--only", default=",".join(BLOCKS), help="comma-separated blocks (default: all)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    text = README.read_text()
    stale = 0
    for name in names:
        body = BLOCKS[name]()
        if args.write:
            text = replace_block(text, name, body)
        else:
            diff = check(name, body)
            if diff:
                stale += 1
                print(diff)
    if args.write:
        README.write_text(text)
        print(f"README.md: wrote {', '.join(names)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
