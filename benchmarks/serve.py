"""Load test of ``ember serve``: the server in its own process, clients in this one, all on
127.0.0.1, each run bounded in time.

    python benchmarks/serve.py                      # EfficientNet-Lite0 and MiniLM, 1/8/32 clients, 5 s each
    python benchmarks/serve.py --seconds 3 --clients 1,8 --models efficientnet-lite0 --out results/serve

For every model, client count and batching setting (off, or dynamic batching up to
``--max-batch`` rows waiting at most ``--delay-us``) it prints throughput, p50/p99 latency, the
rows per executed inference, failed requests, and the server's resident memory before and after;
and the server's overhead over the same model run in-process (p50 at one client, in alternating
rounds so the machine's changing load hits both alike). Each
client is a thread with its own HTTP connection sending binary tensors (tritonclient); every
answer is checked against the in-process output. Needs ``pip install "ember[serve]"`` and
``tritonclient[http]``; the models come from the zoo (downloaded once, cached).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_inputs(name: str) -> dict[str, np.ndarray]:
    """One request's inputs: a fixed random image, or a tokenized sentence (32 tokens)."""
    if name == "efficientnet-lite0":
        return {"image": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    from ember.zoo import load_tokenizer

    enc = load_tokenizer(name).encode(["ember serves models over the KServe v2 protocol, with dynamic "
                                       "batching and Prometheus metrics, to many clients at once."])
    feeds = {k: np.asarray(v, np.int64) for k, v in enc.as_inputs().items()}
    return {k: v[:, :32] for k, v in feeds.items()}


def in_process(xml: Path, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, Any]:
    """The reference output and an infer request of the model compiled in this process."""
    from ember.runtime import Core

    req = Core().compile_model(str(xml), "CPU").create_infer_request()
    return np.array(req.infer(feeds)[0]), req


def local_latencies(req: Any, feeds: dict[str, np.ndarray], seconds: float) -> list[float]:
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t = time.perf_counter()
        req.infer(feeds)
        times.append(time.perf_counter() - t)
    return times


def overhead(port: int, model: str, output: str, feeds: dict[str, np.ndarray], want: np.ndarray, req: Any,
             rounds: int, seconds: float) -> tuple[float, float]:
    """p50 in-process and through the server at one client, measured in alternating rounds (the
    machine's load moves between rounds; alternating keeps the two comparable)."""
    local, served = [], []
    for _ in range(rounds):
        local.append(float(np.median(local_latencies(req, feeds, seconds))) * 1e3)
        served.append(load(port, model, output, feeds, want, 1, seconds)["p50"])
    return float(np.median(local)), float(np.median(served))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batch_stats(port: int, model: str) -> tuple[float, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    count = total = 0.0
    for line in text.splitlines():
        if f'name="{model}"' in line:
            if line.startswith("ember_batch_size_count"):
                count += float(line.rsplit(" ", 1)[1])
            elif line.startswith("ember_batch_size_sum"):
                total += float(line.rsplit(" ", 1)[1])
    return count, total


def load(port: int, model: str, output: str, feeds: dict[str, np.ndarray], want: np.ndarray, clients: int,
         seconds: float) -> dict[str, float]:
    """``clients`` threads sending requests for ``seconds``; latencies and failures."""
    import tritonclient.http as httpclient

    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    wrong = [0] * clients
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(k: int) -> None:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=120, connection_timeout=60)
        inputs = []
        for name, arr in feeds.items():
            i = httpclient.InferInput(name, list(arr.shape), "FP32" if arr.dtype == np.float32 else "INT64")
            i.set_data_from_numpy(arr)
            inputs.append(i)
        outs = [httpclient.InferRequestedOutput(output)]
        start_gate.wait()
        while time.perf_counter() < stop_at[0]:
            t = time.perf_counter()
            try:
                r = c.infer(model, inputs, outputs=outs)
                got = r.as_numpy(output)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                failures[k] += 1
                continue
            latencies[k].append(time.perf_counter() - t)
            if not np.allclose(got, want, rtol=1e-3, atol=1e-3):
                wrong[k] += 1
        c.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    begin = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - begin
    lat = np.array([x for per in latencies for x in per]) * 1e3
    return {"requests": int(lat.size), "throughput": lat.size / elapsed,
            "p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "p99": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "failed": sum(failures), "wrong": sum(wrong)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="efficientnet-lite0,all-minilm-l6-v2")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per model and client count")
    ap.add_argument("--rounds", type=int, default=5, help="alternating 1 s rounds for the overhead figure")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--delay-us", type=int, default=2000)
    ap.add_argument("--out", help="write <out>.json and <out>.md")
    args = ap.parse_args(argv)

    from ember.zoo import fetch

    models = args.models.split(",")
    counts = [int(c) for c in args.clients.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="ember-serve-bench-"))
    configs = []
    prepared = {}
    for name in models:
        xml = fetch(name).xml
        folder = tmp / name / "1"
        folder.mkdir(parents=True)
        (folder / "model.xml").symlink_to(xml)
        (folder / "model.bin").symlink_to(xml.with_suffix(".bin"))
        feeds = model_inputs(name)
        print(f"{name}: compiling the in-process reference...", flush=True)
        want, req = in_process(folder / "model.xml", feeds)
        prepared[name] = (feeds, want, req)
        configs.append({"config": {"name": name, "base_path": str(tmp / name)}})
        configs.append({"config": {"name": f"{name}-batched", "base_path": str(tmp / name),
                                   "dynamic_batching": {"max_batch_size": args.max_batch,
                                                        "max_queue_delay_microseconds": args.delay_us}}})
    (tmp / "config.json").write_text(json.dumps({"model_config_list": configs}))
    rest, grpc_port = _free_port(), _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen([sys.executable, "-m", "ember", "serve", "--config_path", str(tmp / "config.json"),
                               "--rest_port", str(rest), "--port", str(grpc_port), "--no-access_log",
                               "--max_queue_size", "1024"], env=env, stderr=subprocess.DEVNULL)
    rows = []
    overheads: dict[str, tuple[float, float]] = {}
    try:
        import tritonclient.http as httpclient

        c = httpclient.InferenceServerClient(f"127.0.0.1:{rest}")
        deadline = time.monotonic() + 300
        while True:
            try:
                if c.is_server_ready():
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("ember serve did not start")
            time.sleep(0.2)
        # warm-up: per-shape plans (batch sizes, the sentence length) compile on first use
        warm = min(max(counts), args.max_batch)
        for name in models:
            feeds, want, _ = prepared[name]
            output = c.get_model_metadata(name)["outputs"][0]["name"]
            for served in (name, f"{name}-batched"):
                for n in sorted({1, 2, warm}):
                    load(rest, served, output, feeds, want, n, args.warmup)
        rss_start = rss_mb(server.pid)
        print(f"server RSS after loading and warm-up: {rss_start:.0f} MB", flush=True)
        for name in models:
            feeds, want, req = prepared[name]
            output = c.get_model_metadata(name)["outputs"][0]["name"]
            p50_local, p50_served = overhead(rest, name, output, feeds, want, req, args.rounds, 1.0)
            overheads[name] = (p50_local, p50_served)
            print(f"  {name}: p50 in-process {p50_local:.2f} ms, through the server {p50_served:.2f} ms "
                  f"({args.rounds} alternating rounds)", flush=True)
            for served in (name, f"{name}-batched"):
                for n in counts:
                    before_rss = rss_mb(server.pid)
                    b0 = batch_stats(rest, served)
                    r = load(rest, served, output, feeds, want, n, args.seconds)
                    b1 = batch_stats(rest, served)
                    r |= {"model": name, "batching": served.endswith("-batched"), "clients": n,
                          "rows_per_inference": (b1[1] - b0[1]) / max(b1[0] - b0[0], 1),
                          "rss_before_mb": before_rss, "rss_after_mb": rss_mb(server.pid)}
                    rows.append(r)
                    print(f"  {served:<28} {n:>3} clients: {r['throughput']:7.1f} req/s  p50 {r['p50']:7.2f} ms  "
                          f"p99 {r['p99']:7.2f} ms  rows/inference {r['rows_per_inference']:.2f}  "
                          f"failed {r['failed']}  wrong {r['wrong']}  RSS {r['rss_after_mb']:.0f} MB", flush=True)
        rss_end = rss_mb(server.pid)
        c.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    table = render(rows, overheads, rss_start, rss_end)
    print()
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps({"rows": rows, "overhead": overheads,
                                                        "rss_start_mb": rss_start, "rss_end_mb": rss_end}, indent=1))
        out.with_suffix(".md").write_text(table + "\n")
    return 1 if any(r["failed"] or r["wrong"] for r in rows) else 0


def render(rows: list[dict], overheads: dict[str, tuple[float, float]], rss_start: float, rss_end: float) -> str:
    lines = ["| model | dynamic batching | clients | throughput (req/s) | p50 (ms) | p99 (ms) | rows per inference "
             "| failed | server RSS (MB) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {'on' if r['batching'] else 'off'} | {r['clients']} | {r['throughput']:.1f} "
                     f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['rows_per_inference']:.2f} | {r['failed'] + r['wrong']} "
                     f"| {r['rss_after_mb']:.0f} |")
    lines.append("")
    lines.append("| model | in-process p50 (ms) | server p50, 1 client (ms) | overhead (ms) |")
    lines.append("|---|---|---|---|")
    for model, (local, served) in overheads.items():
        lines.append(f"| {model} | {local:.2f} | {served:.2f} | {served - local:+.2f} |")
    lines.append("")
    lines.append(f"server RSS: {rss_start:.0f} MB after loading and warm-up, {rss_end:.0f} MB at the end "
                 f"({rss_end - rss_start:+.0f} MB over {len(rows)} runs); "
                 f"requests: {sum(r['requests'] for r in rows)}, failed or wrong: "
                 f"{sum(r['failed'] + r['wrong'] for r in rows)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
