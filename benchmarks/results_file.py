"""The command line of a benchmark module: `--quick`, run, save the raw figures, print the report."""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def run_and_report(doc: str | None, name: str, run_all: Callable[[bool], dict],
                   report: Callable[[dict], str]) -> int:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a fast check")
    args = parser.parse_args()
    started = time.time()
    results = run_all(args.quick)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(results, indent=1))
    print(report(results))
    print(f"\n(took {time.time() - started:.0f} s; raw figures in {RESULTS / name})")
    return 0
