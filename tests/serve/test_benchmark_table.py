"""benchmarks/serve.py's table (the load test itself runs by hand, not in the test suite)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_render_table():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "serve.py"
    spec = importlib.util.spec_from_file_location("serve_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = {"model": "m", "batching": False, "clients": 1, "throughput": 10.0, "p50": 12.0, "p99": 20.0,
           "rows_per_inference": 1.0, "failed": 0, "wrong": 0, "rss_after_mb": 300.0, "requests": 50}
    text = bench.render([row, row | {"batching": True, "clients": 8, "rows_per_inference": 3.5}], {"m": (10.0, 12.0)},
                        290.0, 301.0)
    assert "| m | off | 1 | 10.0 | 12.00 | 20.00 | 1.00 | 0 | 300 |" in text
    assert "| m | on | 8 |" in text and "| 3.50 |" in text
    assert "| m | 10.00 | 12.00 | +2.00 |" in text
    assert "+11 MB over 2 runs" in text and "requests: 100, failed or wrong: 0" in text
