"""What the test suite costs, per test and per file, in CPU time (not wall time).

    PYTHONPATH=benchmarks python -m pytest -q -n 2 -p suite_cost --suite-cost=/tmp/cost   # record
    python benchmarks/suite_cost.py /tmp/cost                      # table: the heaviest files
    python benchmarks/suite_cost.py /tmp/cost --tests 30 --before /tmp/cost_before   # and a diff

As a pytest plugin (``-p suite_cost``) it records, for every test, the process CPU time
(``time.process_time``: all threads of the test process, so the thread pool's workers too) and
the wall time of setup + call + teardown, one JSON line per test in ``<prefix>.<worker>.jsonl``
(xdist workers write their own file). CPU time hardly moves with the machine's load, wall time
does: on the shared machine compare CPU figures. Not counted: the CPU time of subprocesses the
tests start (CLI runs, fuzz workers, the conformance runner's jobs).

As a script it sums the records per file (``--before``: the same for an earlier recording, on the
tests both recorded) and prints the heaviest files and tests.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import time
from typing import Any

import pytest

_OUT: dict[str, Any] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--suite-cost", metavar="PREFIX", default=None,
                     help="write per-test CPU and wall seconds to PREFIX.<worker>.jsonl")


def _write(config: pytest.Config, record: dict[str, Any]) -> None:
    prefix = config.getoption("--suite-cost")
    if not prefix:
        return
    if "file" not in _OUT:
        _OUT["file"] = open(f"{prefix}.{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl", "a")  # noqa: SIM115
    _OUT["file"].write(json.dumps(record) + "\n")
    _OUT["file"].flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    _write(item.config, {"id": item.nodeid, "cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall})


def pytest_collection_finish(session: pytest.Session) -> None:
    _write(session.config, {"id": "<collection>", "cpu": time.process_time(), "wall": 0.0})


def load(prefix: str) -> dict[str, dict[str, float]]:
    """Test id -> {"cpu", "wall"} from a recording (the collection line under ``<collection>``,
    summed over workers)."""
    out: dict[str, dict[str, float]] = {}
    for path in sorted(glob.glob(f"{prefix}.*.jsonl")):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                prev = out.get(r["id"], {"cpu": 0.0, "wall": 0.0})
                out[r["id"]] = {"cpu": prev["cpu"] + r["cpu"], "wall": prev["wall"] + r["wall"]}
    return out


def per_file(tests: dict[str, dict[str, float]], ids: list[str]) -> dict[str, list[float]]:
    files: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for k in ids:
        f = files[k.split("::")[0]]
        f[0] += 1
        f[1] += tests[k]["cpu"]
        f[2] += tests[k]["wall"]
    return files


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("prefix", help="the --suite-cost prefix of a recording")
    p.add_argument("--before", help="an earlier recording: both columns, on the tests both have")
    p.add_argument("--files", type=int, default=30, help="heaviest files shown (default 30)")
    p.add_argument("--tests", type=int, default=15, help="heaviest tests shown (default 15)")
    args = p.parse_args(argv)
    now = load(args.prefix)
    collection = now.pop("<collection>", {"cpu": 0.0})["cpu"]
    before = load(args.before) if args.before else None
    if before is not None:
        before.pop("<collection>", None)
    ids = [k for k in now if before is None or k in before]
    files = per_file(now, ids)
    old = per_file(before, ids) if before is not None else None
    head = f"{'file':58s} {'tests':>6s} {'CPU s':>8s} {'wall s':>8s}" + (f" {'CPU before':>10s} {'x':>6s}" if old else "")
    print(head)
    print("-" * len(head))
    for name, (n, cpu, wall) in sorted(files.items(), key=lambda kv: -kv[1][1])[:args.files]:
        row = f"{name:58s} {int(n):6d} {cpu:8.1f} {wall:8.1f}"
        if old:
            row += f" {old[name][1]:10.1f} {old[name][1] / max(cpu, 1e-9):6.1f}"
        print(row)
    cpu = sum(v[1] for v in files.values())
    wall = sum(v[2] for v in files.values())
    total = f"{'all (' + str(len(files)) + ' files)':58s} {len(ids):6d} {cpu:8.1f} {wall:8.1f}"
    if old:
        ocpu = sum(v[1] for v in old.values())
        total += f" {ocpu:10.1f} {ocpu / max(cpu, 1e-9):6.1f}"
    print(total)
    print(f"collection (all workers): {collection:.1f} s CPU")
    print("\nheaviest tests (CPU s, wall s):")
    for k in sorted(ids, key=lambda k: -now[k]["cpu"])[:args.tests]:
        print(f"  {now[k]['cpu']:7.1f} {now[k]['wall']:7.1f}  {k}")


if __name__ == "__main__":
    main()
