"""Group commit for LMDB: one writer thread, concurrent writes share one durable commit.

A durable LMDB commit costs two fsyncs, so one-commit-per-write caps a store at about 1,800
writes/s here. The writer thread takes every job queued while the previous commit was flushing,
runs each in its own nested transaction (a failing job is rolled back alone), commits the parent
once, and only then delivers each job's outcome: a caller returns once its write is durable.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import lmdb

from kms_iface._completion import Completion, deliver
from kms_iface.errors import DbError, InterfaceError

__all__ = ["GroupCommitWriter", "Job"]

# Jobs committed together at most; bounds the latency a burst adds to its first caller.
MAX_JOBS_PER_COMMIT: Final = 512
# When writers are concurrent, keep gathering jobs while they arrive less than GATHER_GAP
# seconds apart, for at most GATHER_MAX: a durable commit costs about the same for 8 jobs as for
# 32 (two fsyncs), so full batches are worth a fraction of a millisecond of waiting.
GATHER_GAP: Final = 100e-6
GATHER_MAX: Final = 2e-3

Job = Callable[[lmdb.Transaction], Any]


class _Pending:
    __slots__ = ("completion", "guarded", "job")

    def __init__(self, job: Job, completion: Completion, guarded: bool) -> None:
        self.job = job
        self.completion = completion
        self.guarded = guarded


class _Redo(Exception):
    """A guarded job failed after writing: the batch is redone with every job isolated."""


class GroupCommitWriter:
    """The single writer thread of one LMDB environment in this process.

    ``start_batch(txn)`` runs at the start of every write transaction, before its jobs.
    """

    def __init__(
        self,
        env: lmdb.Environment,
        name: str,
        start_batch: Callable[[lmdb.Transaction], None],
    ) -> None:
        self._env = env
        self._start_batch = start_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._stopping = False
        # Held while checking ``_stopping`` and queueing, and while ``stop`` sets it: no job can be
        # queued after the thread's last look at the queue.
        self._gate = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job, completion: Completion, *, guarded: bool = False) -> None:
        """Queue ``job`` (run in the writer thread with a write transaction).

        A ``guarded`` job promises to raise ``InterfaceError`` only before its first write; it
        runs in the batch's transaction directly instead of a nested one (one begin and commit
        less per job). Should it fail any other way, the batch is redone with every job nested.
        """
        with self._gate:
            if self._stopping:
                raise DbError("the store is closed")
            self._queue.put(_Pending(job, completion, guarded))

    def stop(self) -> None:
        """Finish every queued job, then end the thread (blocking; call it off the event loop)."""
        with self._gate:
            self._stopping = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        previous = 0
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = self._take(batch, None)
            if not stop and max(len(batch), previous) > 1:
                # Concurrent writers: the callers of the last commit are about to come back.
                deadline = time.monotonic() + GATHER_MAX
                while not stop and len(batch) < MAX_JOBS_PER_COMMIT:
                    wait = min(GATHER_GAP, deadline - time.monotonic())
                    if wait <= 0:
                        break
                    size = len(batch)
                    stop = self._take(batch, wait)
                    if len(batch) == size:
                        break
            self._commit(batch)
            previous = len(batch)
            if stop:
                return

    def _take(self, batch: list[_Pending], wait: float | None) -> bool:
        """Move queued jobs into ``batch``, waiting up to ``wait`` s for the first; True: stop."""
        try:
            while len(batch) < MAX_JOBS_PER_COMMIT:
                if wait is None:
                    pending = self._queue.get_nowait()
                else:
                    pending = self._queue.get(timeout=wait)
                    wait = None
                if pending is None:
                    return True
                batch.append(pending)
        except queue.Empty:
            pass
        return False

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            outcomes = self._attempt(batch, isolate_all=False)
        except _Redo:
            outcomes = self._attempt(batch, isolate_all=True)
        for pending, (ok, value) in zip(batch, outcomes, strict=True):
            pending.completion.ok = ok
            pending.completion.value = value
        deliver(pending.completion for pending in batch)

    def _attempt(self, batch: list[_Pending], isolate_all: bool) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        parent = self._env.begin(write=True, buffers=True)
        try:
            self._start_batch(parent)
            for pending in batch:
                if pending.guarded and not isolate_all:
                    outcomes.append(self._run_guarded(parent, pending.job))
                else:
                    outcomes.append(self._run_job(parent, pending.job))
            parent.commit()
        except _Redo:
            parent.abort()
            raise
        except lmdb.MapFullError:
            parent.abort()
            outcomes = [(False, self._full()) for _ in batch]
        except lmdb.Error as exc:
            parent.abort()
            outcomes = [(False, DbError(f"LMDB commit failed: {exc}")) for _ in batch]
        return outcomes

    @staticmethod
    def _run_guarded(parent: lmdb.Transaction, job: Job) -> tuple[bool, Any]:
        try:
            return True, job(parent)
        except InterfaceError as exc:
            return False, exc  # raised before the job wrote anything: the batch is intact
        except Exception as exc:
            raise _Redo from exc

    def _run_job(self, parent: lmdb.Transaction, job: Job) -> tuple[bool, Any]:
        child = self._env.begin(write=True, parent=parent, buffers=True)
        try:
            result = job(child)
        except InterfaceError as exc:
            child.abort()
            return False, exc
        except lmdb.MapFullError:
            child.abort()
            return False, self._full()
        except lmdb.Error as exc:
            child.abort()
            return False, DbError(f"LMDB write failed: {exc}")
        except Exception as exc:
            child.abort()
            failure = DbError(f"the write failed unexpectedly: {type(exc).__name__}")
            failure.__cause__ = exc
            return False, failure
        child.commit()
        return True, result

    def _full(self) -> DbError:
        return DbError(
            f"the store is full (map_size {self._env.info()['map_size']} bytes): reopen it with "
            "a larger map_size; nothing of this write was stored"
        )
