"""Fuzz ember for longer than CI does, and print the figures of docs/reliability.md.

    python tests/fuzz/fuzz.py --seconds 600                 # IR + ONNX mutants for 10 minutes
    python tests/fuzz/fuzz.py --seconds 60 --seed 100000    # another stretch of seeds
    python tests/fuzz/fuzz.py --hypothesis 500 --cache 1000 # more kernel examples, more tampering

A bad case prints its kind and seed; ``fuzzlib.run_case(kind, seed)`` replays it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fuzzlib  # noqa: E402 - after the path is set


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="time for IR/ONNX mutation fuzzing")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--kinds", default="ir,onnx", help="comma-separated: ir, onnx")
    ap.add_argument("--hypothesis", type=int, default=0, help="examples per kernel property (0: skip)")
    ap.add_argument("--cache", type=int, default=0, help="cache tampering cases (0: skip)")
    args = ap.parse_args(argv)
    failed = False
    if args.seconds > 0:
        kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
        report = fuzzlib.run_cases(kinds, seconds=args.seconds, start_seed=args.seed)
        print(f"mutation fuzzing, {report.seconds:.0f} s, seeds from {args.seed}:")
        print(report.table())
        for kind, seed, outcome, detail in report.bad:
            print(f"  {kind} seed {seed}: {outcome}: {detail}")
        failed |= bool(report.bad)
    env = dict(os.environ, EMBER_FUZZ_SEED=str(args.seed))
    tests = []
    if args.hypothesis:
        env["EMBER_HYPOTHESIS_EXAMPLES"] = str(args.hypothesis)
        tests.append(str(HERE / "test_kernels_hypothesis.py"))
    if args.cache:
        env["EMBER_FUZZ_CACHE_CASES"] = str(args.cache)
        tests.append(str(HERE / "test_fuzz_cache.py"))
    if tests:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:xdist", "-p", "no:cacheprovider",
                            *tests], env=env, cwd=HERE.parents[1])
        failed |= r.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
