"""Writer subprocesses (``_writer.py``) and the acknowledgements they print."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

__all__ = ["REPO_ROOT", "WriterProcess"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class WriterProcess:
    """One ``_writer.py`` process; a thread collects its acknowledgements as they are printed."""

    def __init__(
        self,
        backend: str,
        descriptor: str,
        writer_id: str,
        stderr_path: Path,
        *,
        seconds: float | None = None,
        mixed: bool = False,
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "tests.store_conformance._writer",
            backend,
            descriptor,
            writer_id,
        ]
        if seconds is not None:
            command += ["--seconds", str(seconds)]
        if mixed:
            command.append("--mixed")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(REPO_ROOT), env.get("PYTHONPATH")) if part
        )
        self.writer_id = writer_id
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=REPO_ROOT,
            env=env,
            text=True,
            encoding="utf-8",
        )
        self._lock = threading.Condition()
        self._acks: dict[str, int] = {}
        self._count = 0
        self._ready = False
        self._garbage: list[str] = []
        stdout = self.process.stdout
        assert stdout is not None
        self._thread = threading.Thread(target=self._collect, args=(stdout,), daemon=True)
        self._thread.start()

    def _collect(self, stdout: IO[str]) -> None:
        for line in stdout:
            uid, _, version = line.rstrip("\n").rpartition(" ")
            with self._lock:
                if uid == "ready" and version == "-1":
                    self._ready = True
                elif uid and version.isdigit():
                    self._acks[uid] = max(self._acks.get(uid, -1), int(version))
                    self._count += 1
                else:
                    self._garbage.append(line)
                self._lock.notify_all()
        with self._lock:
            self._lock.notify_all()

    def acks(self) -> dict[str, int]:
        """``{uid: highest acknowledged version}`` so far."""
        with self._lock:
            return dict(self._acks)

    def wait_for_acks(self, count: int, timeout: float) -> int:
        """Block until ``count`` writes were acknowledged, the process ended, or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._count < count and self.process.poll() is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(min(remaining, 0.1))
            return self._count

    def kill(self) -> None:
        """SIGKILL, then collect the acknowledgements still in the pipe."""
        self.process.kill()
        self.finish(timeout=30)

    def finish(self, timeout: float) -> int:
        """Wait for the process to end and its output to be read; its return code."""
        try:
            code = self.process.wait(timeout)
        finally:
            self._thread.join(timeout)
            self._stderr.close()
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def garbage(self) -> list[str]:
        """Lines on stdout that are not acknowledgements."""
        with self._lock:
            return list(self._garbage)

    def is_ready(self) -> bool:
        with self._lock:
            return self._ready

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill the process if it still runs (cleanup after a failure)."""
        if self.process.poll() is None:
            self.process.kill()
        self.finish(timeout=30)
