"""A short soak (``benches/soak.py``) in a subprocess: memory flat after warm-up, sessions bounded.

50,000 mixed operations (about 10-20 s on two cores), 20 samples, the first fifth warm-up;
growth is the median of the last five samples less that of the first five after warm-up, whose
centres lie 27,500 operations apart. Measured on this machine: RssAnon grows 0.1-0.25 MiB and
tracemalloc 0.005-0.03 MiB (allocator and cache settling). The thresholds, 4 MiB and 1 MiB, sit
more than ten times above that noise and catch a leak of about 150 bytes (RssAnon) or 40 bytes
(Python objects) per operation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "benches" / "soak.py"
OPS = 50_000
MIB = 1 << 20
RSS_ANON_LIMIT = 4 * MIB
TRACED_LIMIT = 1 * MIB


def test_short_soak_is_flat(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(SOAK), "--ops", str(OPS), "--warmup", "0.2", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    report = done.stdout
    assert result["rss_anon_growth"] < RSS_ANON_LIMIT, report
    assert result["traced_growth"] < TRACED_LIMIT, report
    # The soak fills the pool (sized to its tasks) before the run: the count never moves.
    assert {s["sessions"] for s in result["samples"]} == {result["pool_size"]}, report
