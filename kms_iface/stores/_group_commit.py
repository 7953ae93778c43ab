"""Group commit for LMDB: one writer thread, concurrent writes share one durable commit.

A durable LMDB commit costs two fsyncs, so one-commit-per-write caps a store at about 1,800
writes/s here. The writer thread takes every job queued while the previous commit was flushing,
runs each in its own nested transaction (a failing job is rolled back alone), commits the parent
once, and only then delivers each job's outcome: a caller returns once its write is durable.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Final

import lmdb

from kms_iface._completion import Completion, deliver
from kms_iface.errors import DbError, InterfaceError

__all__ = ["GroupCommitWriter", "Job"]

# Jobs committed together at most; bounds the latency a burst adds to its first caller.
MAX_JOBS_PER_COMMIT: Final = 512

Job = Callable[[lmdb.Transaction], Any]


class _Pending:
    __slots__ = ("completion", "job")

    def __init__(self, job: Job, completion: Completion[Any]) -> None:
        self.job = job
        self.completion = completion


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

    def submit(self, job: Job, completion: Completion[Any]) -> None:
        """Queue ``job`` (run in the writer thread with a write transaction)."""
        with self._gate:
            if self._stopping:
                raise DbError("the store is closed")
            self._queue.put(_Pending(job, completion))

    def stop(self) -> None:
        """Finish every queued job, then end the thread (blocking; call it off the event loop)."""
        with self._gate:
            self._stopping = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [] if first is None else [first]
            stop = first is None
            while len(batch) < MAX_JOBS_PER_COMMIT:
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    break
                if pending is None:
                    stop = True
                else:
                    batch.append(pending)
            if batch:
                self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Pending]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self._env.begin(write=True, buffers=True) as parent:
                self._start_batch(parent)
                for pending in batch:
                    outcomes.append(self._run_job(parent, pending.job))
        except lmdb.MapFullError:
            outcomes = [(False, self._full()) for _ in batch]
        except lmdb.Error as exc:
            outcomes = [(False, DbError(f"LMDB commit failed: {exc}")) for _ in batch]
        deliver(
            (pending.completion, ok, value)
            for pending, (ok, value) in zip(batch, outcomes, strict=True)
        )

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
