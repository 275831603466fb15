"""Elementwise, logical and reduction ops on the CPU device next to ONNX Runtime (and OpenVINO
when installed): small ONNX graphs built with ``onnx.helper``, the same file given to each
engine, median latency of one inference.

    python benchmarks/eltwise_breadth.py                  # every case, ~0.3 s per engine and case
    python benchmarks/eltwise_breadth.py --time 1 --threads 2 --cases reducemax-inner3

Engines run case by case, each warmed up first. "ember" is a whole ``InferRequest.infer``
(inputs copied in, the plan, outputs copied out, OpenVINO's defaults); "ember shared" the same
with ``share_inputs=True, share_outputs=True`` (no copies, as ONNX Runtime's ``run``); "ember kernels" the plan's native steps alone
(``PERF_COUNT``), i.e. what the kernels cost. The column "ember before" is ember with
the case's ops on their numpy reference kernels inside the CPU plan (what happened before
these ops ran natively), shown when ``--before`` is given.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _graph(nodes: list, inputs: list[tuple[str, np.ndarray]], outputs: list[tuple[str, int, list[int]]],
           inits: Sequence[tuple[str, np.ndarray]] = ()) -> bytes:
    import onnx
    from onnx import helper, numpy_helper

    vi = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)) for n, a in inputs]
    vo = [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs]
    init = [numpy_helper.from_array(a, n) for n, a in inits]
    g = helper.make_graph(nodes, "case", vi, vo, init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def cases() -> dict[str, tuple[bytes, dict[str, np.ndarray]]]:
    from onnx import TensorProto as T
    from onnx import helper as h

    rng = np.random.default_rng(0)
    x3 = rng.standard_normal((64, 1000, 3)).astype(np.float32)
    big = rng.standard_normal((1, 256, 1024)).astype(np.float32)
    big2 = rng.standard_normal((1, 256, 1024)).astype(np.float32)
    ids = rng.integers(0, 1000, (1 << 18,)).astype(np.int64)
    out: dict[str, tuple[bytes, dict[str, np.ndarray]]] = {}
    out["reducemax-inner3 [64,1000,3]"] = (_graph(
        [h.make_node("ReduceMax", ["x"], ["y"], axes=[-1], keepdims=0)], [("x", x3)],
        [("y", T.FLOAT, [64, 1000])]), {"x": x3})
    out["reducesum-axes(0,2) [64,1000,3]"] = (_graph(
        [h.make_node("ReduceSum", ["x", "ax"], ["y"], keepdims=0)], [("x", x3)], [("y", T.FLOAT, [1000])],
        [("ax", np.array([0, 2], np.int64))]), {"x": x3})
    out["reducel2-inner3 [64,1000,3]"] = (_graph(
        [h.make_node("ReduceL2", ["x"], ["y"], axes=[-1], keepdims=1)], [("x", x3)],
        [("y", T.FLOAT, [64, 1000, 1])]), {"x": x3})
    out["where(a<b, a, 2b) [256,1024]"] = (_graph(
        [h.make_node("Less", ["a", "b"], ["c"]), h.make_node("Mul", ["b", "two"], ["b2"]),
         h.make_node("Where", ["c", "a", "b2"], ["y"])], [("a", big), ("b", big2)],
        [("y", T.FLOAT, list(big.shape))], [("two", np.array(2.0, np.float32))]), {"a": big, "b": big2})
    out["where(isnan(x), 0, x) [256,1024]"] = (_graph(
        [h.make_node("IsNaN", ["a"], ["c"]), h.make_node("Where", ["c", "zero", "a"], ["y"])], [("a", big)],
        [("y", T.FLOAT, list(big.shape))], [("zero", np.array(0.0, np.float32))]), {"a": big})
    out["selu(x) [256,1024]"] = (_graph(
        [h.make_node("Selu", ["a"], ["y"])], [("a", big)], [("y", T.FLOAT, list(big.shape))]), {"a": big})
    out["int64 (x+1)//2*3 [262144]"] = (_graph(
        [h.make_node("Add", ["x", "one"], ["s"]), h.make_node("Div", ["s", "two"], ["q"]),
         h.make_node("Mul", ["q", "three"], ["y"])], [("x", ids)], [("y", T.INT64, list(ids.shape))],
        [("one", np.array(1, np.int64)), ("two", np.array(2, np.int64)), ("three", np.array(3, np.int64))]),
        {"x": ids})
    boxes = rng.standard_normal((64000, 4)).astype(np.float32)
    out["boxes*[4]+[4] [64000,4]"] = (_graph(
        [h.make_node("Mul", ["b", "s"], ["m"]), h.make_node("Add", ["m", "o"], ["y"])], [("b", boxes)],
        [("y", T.FLOAT, [64000, 4])], [("s", rng.standard_normal(4).astype(np.float32)),
                                       ("o", rng.standard_normal(4).astype(np.float32))]), {"b": boxes})
    out["x/sum(x,-1) [64000,4]"] = (_graph(
        [h.make_node("ReduceSum", ["b", "ax"], ["s"], keepdims=1), h.make_node("Div", ["b", "s"], ["y"])],
        [("b", boxes)], [("y", T.FLOAT, [64000, 4])], [("ax", np.array([-1], np.int64))]),
        {"b": np.abs(boxes) + np.float32(0.1)})  # positive: a sum near 0 would make the check about rounding
    out["cast f32->int32 [256,1024]"] = (_graph(
        [h.make_node("Cast", ["a"], ["y"], to=T.INT32)], [("a", big)], [("y", T.INT32, list(big.shape))]), {"a": big})
    return out


def _time(fn: Callable[[], object], seconds: float) -> float:
    for _ in range(3):
        fn()
    ts: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(ts) < 5:
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", type=float, default=0.3, help="seconds per engine and case")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default="", help="comma-separated name prefixes")
    ap.add_argument("--before", action="store_true", help="also time ember with the ops on reference kernels")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    import ember
    from ember.devices.cpu.lowering import driver

    try:
        import openvino as ov
    except ImportError:  # optional peer
        ov = None
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="ember-eltwise-bench-"))
    rows = []
    wanted = [c for c in args.cases.split(",") if c]
    for name, (blob, feeds) in cases().items():
        if wanted and not any(name.startswith(w) for w in wanted):
            continue
        path = tmp / (str(len(rows)) + ".onnx")
        path.write_bytes(blob)
        model = ember.convert_model(str(path))
        cm = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": args.threads})
        fallbacks = cm._executable.program.stats["fallbacks"]
        req = cm.create_infer_request()
        arrs = [feeds[p.get_any_name()] for p in cm.inputs]
        t_ember = _time(lambda: req.infer(arrs), args.time)
        t_shared = _time(lambda: req.infer(arrs, share_inputs=True, share_outputs=True), args.time)
        got = req.get_output_tensor(0).data
        # the native steps alone (PERF_COUNT): what the kernels cost without the request's copies
        pcm = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": args.threads, "PERF_COUNT": True})
        preq = pcm.create_infer_request()
        kernel_ts = []
        for _ in range(max(20, int(args.time * 200))):
            preq.infer(arrs)
            kernel_ts.append(sum(p.real_time.total_seconds() for p in preq.get_profiling_info()
                                 if not p.node_name.endswith("/input")))
        t_kernels = statistics.median(kernel_ts) * 1e6
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        want = sess.run(None, feeds)[0]
        ok = np.allclose(got, want, rtol=1e-4, atol=1e-5, equal_nan=True)
        t_ort = _time(lambda: sess.run(None, feeds), args.time)
        t_ov = None
        if ov is not None:
            ocm = ov.Core().compile_model(ov.Core().read_model(str(path)), "CPU",
                                          {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "f32"})
            oreq = ocm.create_infer_request()
            t_ov = _time(lambda: oreq.infer(feeds), args.time)
        t_before = None
        if args.before:
            saved = dict(driver.RULES)
            try:
                for op in model.get_ordered_ops():
                    driver.RULES.pop(op.type_name, None)
                bcm = ember.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": args.threads})
                breq = bcm.create_infer_request()
                t_before = _time(lambda: breq.infer(arrs), args.time)
            finally:
                driver.RULES.clear()
                driver.RULES.update(saved)
        rows.append((name, t_ember, t_shared, t_kernels, t_ort, t_ov, t_before, ok, fallbacks))
    head = "| case | ember | ember shared | ember kernels | ONNX Runtime | OpenVINO | shared / ORT |" + (" ember before |" if args.before else "") \
        + " same result | ops on reference kernels |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, te, ts, tk, to, tv, tb, ok, fb in rows:
        ov_s = f"{tv:.0f} us" if tv is not None else "-"
        before = f" {tb:.0f} us |" if args.before and tb is not None else (" - |" if args.before else "")
        print(f"| {name} | {te:.0f} us | {ts:.0f} us | {tk:.0f} us | {to:.0f} us | {ov_s} | {ts / to:.2f}x |{before}"
              f" {'yes' if ok else 'NO'} |"
              f" {', '.join(fb) or 'none'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
