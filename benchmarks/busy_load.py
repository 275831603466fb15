"""ember against OpenVINO on a busy machine, with the load placed where you choose.

    python benchmarks/busy_load.py --model resnet50 --spin 1
    python benchmarks/busy_load.py --model bert_like --spin any --rounds 12
    EMBER_UNPIN_WHEN_BUSY=1 python benchmarks/busy_load.py --model bert_like   # the old rule (A/B)

Starts busy processes (``--spin``: a CPU number each, comma-separated, or ``any`` for one the
scheduler may move), then times batch-1 LATENCY inferences of ember (its default: the pool's
run-mode chooser), ember at one thread, and OpenVINO, alternating in short slices for several
rounds so that the machine's drift falls on all three alike, and prints the medians and
ember / OpenVINO. ``compare.py --load`` spins on the last CPU (``--spin 1`` on two cores).
Models: compare.py's built-in networks (``resnet50``, ``mobilenet_v2``, ``bert_like``), a zoo
key (``all-minilm-l6-v2``, ...), or an ``.onnx``/``.xml`` path. OpenVINO is a test extra.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SPINNER = "import os, sys\nif sys.argv[1] != 'any':\n    os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def model_path(name: str) -> str:
    """A path ember and OpenVINO both read: compare.py's models by the same names."""
    if name.endswith(".xml"):
        return name
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import compare

    return str(compare.model_spec(name).path)


def feeds_for(model: Any, seq: int) -> dict[str, np.ndarray]:
    """Inputs for an OpenVINO model: dynamic dims 1 (first) or ``seq``; integer inputs ones."""
    out = {}
    for port in model.inputs:
        shape = [d.get_length() if d.is_static else (1 if k == 0 else seq) for k, d in enumerate(port.get_partial_shape())]
        dtype = port.get_element_type().to_dtype()
        out[port.get_any_name()] = (np.ones(shape, dtype) if dtype.kind in "iu"
                                    else np.random.default_rng(0).random(shape).astype(dtype))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert_like")
    ap.add_argument("--spin", default="1", help="CPUs to keep busy, comma-separated, or 'any' (default 1)")
    ap.add_argument("--precision", default="f32", choices=("f32", "bf16"))
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--slice", type=float, default=0.3, help="seconds per engine and round")
    ap.add_argument("--seq", type=int, default=128, help="size of dynamic dimensions after the first")
    args = ap.parse_args(argv)
    try:
        import openvino
    except ImportError:
        print("busy_load.py needs OpenVINO: pip install -e '.[test]'", file=sys.stderr)
        return 2
    import ember

    cpus = [c.strip() for c in args.spin.split(",") if c.strip()]
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    bad = [c for c in cpus if c != "any" and not (c.isdigit() and (not allowed or int(c) in allowed))]
    if bad:
        ap.error(f"--spin: {', '.join(bad)} is not 'any' or a CPU this process may use ({allowed})")
    try:
        path = model_path(args.model)
    except ValueError as e:
        ap.error(str(e))
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": args.precision}
    requests = {}
    for name, module, threads in (("ember", ember, 0), ("ember, 1 thread", ember, 1), ("OpenVINO", openvino, 0)):
        core = module.Core()
        cfg = dict(config, **({"INFERENCE_NUM_THREADS": threads} if threads else {}))
        requests[name] = core.compile_model(core.read_model(path), "CPU", cfg).create_infer_request()
    feeds = feeds_for(openvino.Core().read_model(path), args.seq)
    spinners = [subprocess.Popen([sys.executable, "-c", SPINNER, cpu]) for cpu in cpus]
    try:
        time.sleep(0.3)
        for r in requests.values():
            for _ in range(20):
                r.infer(feeds)
        times: dict[str, list[float]] = {k: [] for k in requests}
        for _ in range(args.rounds):
            for name, r in requests.items():
                end = time.perf_counter() + args.slice
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    r.infer(feeds)
                    times[name].append(time.perf_counter() - t0)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    print(f"{Path(path).name}, {args.precision}, busy CPUs: {args.spin} ({os.cpu_count()} CPUs; "
          f"EMBER_UNPIN_WHEN_BUSY={os.environ.get('EMBER_UNPIN_WHEN_BUSY', '') or 'unset'})")
    print("| engine | median ms | runs |\n|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} | {len(times[k])} |")
    print(f"ember / OpenVINO: {med['ember'] / med['OpenVINO']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
