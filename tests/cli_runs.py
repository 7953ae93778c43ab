"""What every ``kms-iface`` subprocess test checks of a failed command."""

from __future__ import annotations

import subprocess


def assert_failed(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Exit ``code``, no traceback; exit 1 is exactly one ``kms-iface:`` line; each of
    ``words`` is in stderr. Returns stderr."""
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    if code == 1:
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kms-iface: "), done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    return done.stderr
