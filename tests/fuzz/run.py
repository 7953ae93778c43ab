"""The long fuzz run (``make fuzz``): every fuzz property with many examples, then a summary.

Usage: ``python -m tests.fuzz.run [--examples N] [--watchdog SECONDS] [--json PATH]
[pytest args...]``. Runs ``tests/test_kmip_fuzz.py`` and ``tests/test_fuzz_inputs.py`` in this
process with ``KMS_FUZZ_EXAMPLES=N`` and prints, per target, the examples run, the outcome and the
time, then the totals. Exits non-zero when a property failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

_FILES = ["tests/test_kmip_fuzz.py", "tests/test_fuzz_inputs.py"]


class _Summary:
    """A pytest plugin that records each test's outcome and time."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.rsplit("::", 1)[-1]
        entry = self.results.setdefault(name, {"outcome": "passed", "seconds": 0.0})
        entry["seconds"] += report.duration
        if report.failed:
            entry["outcome"] = "FAILED"
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"


def main(argv: list[str] | None = None) -> int:
    """Run the long fuzz campaign and print its summary; the exit status is pytest's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per property")
    parser.add_argument("--watchdog", type=float, default=1800.0, help="seconds per test")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args, pytest_args = parser.parse_known_args(argv)
    os.environ["KMS_FUZZ_EXAMPLES"] = str(args.examples)
    os.environ["KMS_FUZZ_WATCHDOG"] = str(args.watchdog)
    # Imported after the environment is set: the settings are read at import.
    from tests.fuzz.strategies import COUNTS

    summary = _Summary()
    start = time.perf_counter()
    status = pytest.main(["-q", "-p", "no:cacheprovider", *_FILES, *pytest_args], [summary])
    elapsed = time.perf_counter() - start
    rows = [
        {"target": name, "examples": COUNTS.get(name, 0), **entry}
        for name, entry in summary.results.items()
    ]
    failures = sum(row["outcome"] == "FAILED" for row in rows)
    total = sum(row["examples"] for row in rows)
    width = max((len(row["target"]) for row in rows), default=6)
    print(f"\nfuzz summary: {args.examples} examples per property requested")
    print(f"{'target':<{width}}  {'examples':>8}  {'seconds':>8}  outcome")
    for row in rows:
        print(
            f"{row['target']:<{width}}  {row['examples']:>8}  {row['seconds']:>8.1f}  "
            f"{row['outcome']}"
        )
    print(
        f"{len(rows)} targets, {total} examples, {failures} failed, {elapsed:.0f} s "
        f"(pytest exit status {int(status)})"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"examples_per_property": args.examples, "seconds": elapsed, "targets": rows}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
