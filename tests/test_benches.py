"""The store, codec and HSM benchmarks still run: a --quick pass of each prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"


@pytest.mark.parametrize(
    ("script", "row"),
    [
        ("store_bench.py", "| retrieve (get + decode) |"),
        ("codec_bench.py", "| round trip |"),
        ("hsm_bench.py", "| warm lookup by id among 100 token keys"),
    ],
)
def test_quick_bench_prints_its_table(script: str, row: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHES / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert row in done.stdout
