"""Scenario 14 (durability): SIGKILL a writer mid-stream, 20 times; nothing acknowledged is lost."""

from __future__ import annotations

import random
import time
from pathlib import Path

import anyio
import pytest

from tests.store_conformance.backends import Backend, open_store
from tests.store_conformance.processes import WriterProcess
from tests.store_conformance.workload import check_read

KILLS = 20


async def _verify(backend: Backend, descriptor: str, acked: dict[str, int]) -> list[str]:
    failures = []
    async with open_store(backend.name, descriptor) as store:
        for uid, version in acked.items():
            problem = await check_read(store, uid, version)
            if problem is not None:
                failures.append(problem)
    return failures


@pytest.mark.slow
def test_sigkilled_writer_loses_no_acknowledged_write(backend: Backend, tmp_path: Path) -> None:
    """Scenario 14: the store opens cleanly after each kill and holds every acknowledged create."""
    descriptor = anyio.run(backend.new_descriptor, tmp_path)
    rng = random.Random(14)
    all_acked: dict[str, int] = {}
    try:
        for kill in range(KILLS):
            wanted = rng.randint(24, 72)
            writer = WriterProcess(
                backend.name, descriptor, f"k{kill}", tmp_path / f"writer-{kill}.stderr"
            )
            try:
                count = writer.wait_for_acks(wanted, timeout=60.0)
                assert writer.alive(), (
                    f"kill {kill}: the writer ended by itself after {count} acks "
                    f"(code {writer.process.returncode}):\n{writer.stderr()}"
                )
                assert count >= wanted, f"kill {kill}: only {count} acks in 60 s"
                time.sleep(rng.random() * 0.01)
                writer.kill()
            finally:
                writer.stop()
            assert writer.process.returncode == -9, writer.stderr()
            assert writer.garbage() == [], writer.garbage()
            acked = writer.acks()
            assert len(acked) >= wanted
            failures = anyio.run(_verify, backend, descriptor, acked)
            assert failures == [], f"after kill {kill}: {failures}"
            all_acked.update(acked)
        # everything acknowledged before any of the kills is still there
        assert anyio.run(_verify, backend, descriptor, all_acked) == []
    finally:
        anyio.run(backend.discard, descriptor)
