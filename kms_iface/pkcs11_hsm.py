"""``Pkcs11Hsm``: the HSM contract over any PKCS#11 module, for asyncio and trio.

Blocking work runs in worker threads of the slot, never on the event loop. Each slot has a
*dispatcher*: a queue and up to ``pool size`` worker threads, of which the idle ones take turns
to wait on the queue (leader/followers). The leader takes every job queued at that moment (at
most ``MAX_BATCH`` jobs or ``MAX_BATCH_BYTES`` of input), passes the leadership on, runs the
batch on one pooled session and wakes all its tasks with one call into each event loop. Under
load, a small operation costs a queue put and a share of one thread hop instead of a hop of its
own; a lone operation costs one hop, as ``anyio.to_thread`` would. The dispatcher learns how long
a small job takes: fast ones (a local token) stay on one worker, because a second only contends
for the GIL; slow ones (a network HSM's round trip, RSA) and large inputs are spread over more
workers, up to the pool size.

Cancellation: a job that no worker has taken yet is dropped at once; a job already running is
finished by its worker (whose session goes back to the pool clean: the pool's lease cancels any
open operation) while the cancelled task waits, shielded, then raises its cancellation. No task
ever abandons a session in the middle of a C call.

Timeout: ``call_timeout`` bounds each call, queueing included, for a module that stops
answering. When it expires the task raises ``HsmTimeoutError``: a job not yet taken is dropped
(``started`` False); a taken one is left to its worker, which keeps its session until the C
call returns, and its result is discarded (``started`` True: it may yet take effect); a taken
job the worker has not reached by then is skipped. The slot's watchdog thread (see
``_Dispatcher``) does the expiring, so that a call pays no timer of its own.

Key handles are cached per slot under ``(id, wanted key type)``: a warm lookup is a dictionary
read and makes no C call. The cache is cleared when the pool logs in again
(``login_generation``), entries are evicted on ``delete`` and ``set_key_label``, and a stale
handle (``CKR_OBJECT_HANDLE_INVALID`` / ``CKR_KEY_HANDLE_INVALID``) is evicted and looked up
again once. Known limit: an object destroyed behind the HSM's back whose handle number the
module hands to a new object is not noticed (every handle cache shares this).
"""

from __future__ import annotations

import copy
import datetime
import functools
import itertools
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final, Self, TypeVar

import anyio
import anyio.to_thread

from kms_iface._completion import ABANDONED, PENDING, RUNNING, Completion, deliver, expire_soon
from kms_iface._pkcs11 import SecretBytes, Session
from kms_iface.errors import (
    CKR_OPERATION_ACTIVE,
    CKR_USER_NOT_LOGGED_IN,
    LOGIN_LOST_CODES,
    SESSION_LOST_CODES,
    STALE_HANDLE_CODES,
    HsmError,
    HsmTimeoutError,
    InvalidRequestError,
    KeyHandleInvalidError,
    ObjectHandleInvalidError,
    pkcs11_error,
)
from kms_iface.hsm import (
    HSM,
    CryptoAlgorithm,
    EncryptedContent,
    HsmKeyAlgorithm,
    HsmKeypairAlgorithm,
    HsmObject,
    HsmObjectFilter,
    KeyId,
    KeyMetadata,
    KeyType,
    MacCapable,
    SigningAlgorithm,
)
from kms_iface.kmip.enums import CryptographicAlgorithm
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11 import hsm_ops, keys
from kms_iface.pkcs11.module import Module
from kms_iface.pkcs11.pool import DEFAULT_POOL_CAP, SessionPool
from kms_iface.pkcs11.profiles import (
    DEFAULT_CALL_TIMEOUT,
    VendorProfile,
    check_call_timeout,
    get_profile,
    resolve_library,
)

__all__ = ["MAX_BATCH", "MAX_BATCH_BYTES", "Pkcs11Hsm"]

T = TypeVar("T")
Data = bytes | bytearray | memoryview

MAX_BATCH: Final = 32
"""Jobs a worker takes in one hop at most (bounds the latency a burst adds)."""
MAX_BATCH_BYTES: Final = 256 * 1024
"""Input bytes a worker takes in one hop at most: large operations go one per hop."""
MIN_PASS_JOBS: Final = 4
"""AES-GCM operations run in one pass of the core at least (half a batch, down to this many)."""
HEAVY: Final = MAX_BATCH_BYTES
"""The cost of jobs that may take long (key generation, find, writes to the token): each ends
its batch, and the jobs before it are answered before it starts."""
BATCH_SECONDS: Final = 0.002
"""Work a worker takes in one hop at most, by the running average of job durations: slow jobs
(a network HSM's round trip, RSA) go a few per hop, so that other workers take the rest."""
SLOW_JOB: Final = 200e-6
"""Jobs slower than this on average start more workers (up to the pool size) when they queue
up; faster ones are run by one worker (a second one only contends for the GIL)."""
PARALLEL_BYTES: Final = 64 * 1024
"""A job with this much input starts another worker when none is idle."""
STALLED_SECONDS: Final = 0.1
"""A batch running this long (a call the device is slow to answer, or never answers) starts
another worker for the jobs queued behind it when none is idle, whatever the jobs' usual pace."""
WATCH_SECONDS: Final = 0.05
"""How often the watchdog looks for stalled batches and expired calls while jobs are out."""
WORKER_IDLE_SECONDS: Final = 30.0
"""A worker with nothing to do for this long ends (a new one starts on demand)."""

_RECOVERABLE: Final = (
    SESSION_LOST_CODES | LOGIN_LOST_CODES | STALE_HANDLE_CODES | {CKR_OPERATION_ACTIVE}
)
"""Errors handed to the pool's lease, which recovers (CKR_OPERATION_ACTIVE: closes the session)."""
_STALE: Final = (ObjectHandleInvalidError, KeyHandleInvalidError)
_PUBLIC_STATES: Final = frozenset({ck.CKS_RO_PUBLIC_SESSION, ck.CKS_RW_PUBLIC_SESSION})
_GCM: Final = CryptoAlgorithm.AES_GCM
_CBC: Final = CryptoAlgorithm.AES_CBC
_OAEP: Final = frozenset({CryptoAlgorithm.RSA_OAEP_SHA1, CryptoAlgorithm.RSA_OAEP_SHA256})
_names = itertools.count(1)

# What a lookup wants, as short strings (cheap to hash in the cache's keys): the key type and
# the verb of the error raised when the id names a key of another type.
_ANY: Final = ""
_AES_KEY: Final = "aes"
_PUBLIC: Final = "pk"
_PRIVATE_DECRYPT: Final = "sk-decrypt"
_PRIVATE_SIGN: Final = "sk-sign"
_VERIFY: Final = "verify"  # the public key, ``<id>_pk`` tried first
_HMAC: Final = "hmac"  # a secret key of type CKK_GENERIC_SECRET or CKK_SHA*_HMAC
_WANTS: Final[dict[str, tuple[KeyType | None, str]]] = {
    _ANY: (None, ""),
    _AES_KEY: (KeyType.AES_KEY, "encrypt or decrypt with AES"),
    _PUBLIC: (KeyType.RSA_PUBLIC_KEY, "encrypt"),
    _PRIVATE_DECRYPT: (KeyType.RSA_PRIVATE_KEY, "decrypt"),
    _PRIVATE_SIGN: (KeyType.RSA_PRIVATE_KEY, "sign"),
}


def _nbytes(data: Data) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


MAX_RANDOM_BYTES: Final = 1 << 20
"""The most random bytes one ``generate_random`` call returns."""


def _buffer(value: object, name: str) -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidRequestError(f"{name} must be bytes-like, not {type(value).__name__}")
    if type(value) is memoryview and not value.c_contiguous:
        raise InvalidRequestError(f"{name} must be a contiguous buffer")


def _optional_buffer(value: object, name: str) -> None:
    if value is not None:
        _buffer(value, name)


def _member(value: object, kind: type, name: str) -> None:
    if not isinstance(value, kind):
        raise InvalidRequestError(f"{name} must be a {kind.__name__}, not {type(value).__name__}")


def _date(value: object, name: str) -> None:
    if value is not None and not isinstance(value, datetime.date):
        raise InvalidRequestError(f"{name} must be a date or None, not {type(value).__name__}")


def _copy_error(exc: BaseException) -> BaseException:
    """A copy of an error that several tasks will raise (each gets its own traceback)."""
    try:
        return copy.copy(exc)
    except Exception:
        return exc


# -- jobs and the dispatcher ------------------------------------------------------------------


class _Job(Completion):
    """One blocking call ``fn(session, *args)`` for a worker, awaited by one task.

    ``batch``: "encrypt" or "decrypt" for an AES-GCM operation ``(key_id, algorithm, data,
    aad)`` that may run in one pass of the core with its neighbours (None: alone).
    """

    __slots__ = ("args", "batch", "cost", "expiring", "fn", "idempotent", "submitted")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        cost: int,
        idempotent: bool,
        batch: str | None = None,
    ) -> None:
        super().__init__()
        self.fn = fn
        self.args = args
        self.cost = cost
        self.idempotent = idempotent
        self.batch = batch
        self.submitted = 0.0  # time.monotonic() when queued
        self.expiring = False  # the watchdog has asked the task's loop to expire it


_dispatchers: weakref.WeakSet[_Dispatcher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """The parent's worker threads do not exist in a child: start from none."""
    for dispatcher in list(_dispatchers):
        dispatcher._forget_workers()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Dispatcher:
    """The worker threads of one slot and their queue.

    ``submit`` never blocks. Of the idle workers only the *leader* waits on the queue; it takes
    every queued job at once (at most ``MAX_BATCH`` jobs or ``MAX_BATCH_BYTES`` of input),
    hands the leadership on, and runs its batch. ``job_seconds`` learns how long a small job
    takes: fast jobs (below ``SLOW_JOB``, a local token) are run by one worker in full batches,
    since a second worker only contends for the GIL; slow ones (a network HSM's round trip,
    RSA) go a few per hop and start more workers, up to ``max_workers``, as do large inputs.
    Extra workers retire when jobs turn fast again, idle ones after ``WORKER_IDLE_SECONDS``.

    A *watchdog* thread runs while workers do: every ``WATCH_SECONDS`` that jobs are out, it
    starts another worker when jobs wait behind a batch running for ``STALLED_SECONDS`` (a hung
    call must not hold up the rest), and expires the jobs queued or running for ``timeout``.
    Jobs are only put in a set while queued and a batch is known while it runs, so the
    timeouts cost a call almost nothing.
    """

    def __init__(
        self,
        name: str,
        prepare: Callable[[], None],
        run_batch: Callable[[list[_Job]], None],
        max_workers: int,
        timeout: float | None = None,
    ) -> None:
        self.name = name
        self.max_workers = max_workers
        self.timeout = timeout
        self._prepare = prepare
        self._run_batch = run_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._leader = threading.Lock()
        self._idle = 0
        self._busy = 0
        self._pending: set[_Job] = set()  # queued, not yet taken by a worker
        self._running: dict[int, tuple[float, list[_Job]]] = {}  # worker id -> (start, batch)
        self._watchdog: threading.Thread | None = None
        self._dozing = False  # the watchdog waits for ``_wake`` (no job out)
        self._wake = threading.Event()
        self._workers = 0
        self._threads: set[threading.Thread] = set()
        self._closed = False
        self.job_seconds = 0.0
        """How long a small job takes, uncontended (a running average; racy but only a hint)."""
        _dispatchers.add(self)

    def _forget_workers(self) -> None:
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._leader = threading.Lock()
        self._idle = self._busy = self._workers = 0
        self._pending = set()
        self._running = {}
        self._watchdog = None
        self._dozing = False
        self._wake = threading.Event()
        self._threads = set()

    @property
    def workers(self) -> int:
        """Worker threads alive now."""
        return self._workers

    # -- the event loop's side -----------------------------------------------------------------

    async def run(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        cost: int,
        idempotent: bool = True,
        batch: str | None = None,
    ) -> Any:
        """``fn(session, *args)`` in a worker; the calling task waits for the outcome.

        Cancelled before a worker took the job: the job is dropped and the cancellation raised
        at once. Cancelled while it runs: the worker finishes it (and cleans the session) while
        the task waits, then the task raises its cancellation (the outcome is dropped). After
        ``timeout`` seconds the task raises ``HsmTimeoutError`` (see the module's docstring).
        """
        job = _Job(fn, args, cost, idempotent, batch)
        self.submit(job)
        return await job.wait(self.abandon)

    def _expired(self, started: bool) -> HsmTimeoutError:
        if started:
            return HsmTimeoutError(
                f"the HSM did not answer within {self.timeout:g} s (call_timeout): the call is "
                "still running and may yet take effect; check the HSM's state before retrying",
                started=True,
            )
        return HsmTimeoutError(
            f"the HSM call did not start within {self.timeout:g} s (call_timeout): every "
            "session was busy; nothing was done",
            started=False,
        )

    def submit(self, job: _Job) -> None:
        job.submitted = time.monotonic()
        # Under the lock that _retire takes: a worker retiring after its last look at the queue
        # is either counted out here (and a new one starts) or sees this job and stays.
        with self._lock:
            if self._closed:
                raise InvalidRequestError("the HSM is closed")
            self._pending.add(job)
            self._queue.put(job)
            needed = (
                not self._idle
                and self._workers < self.max_workers
                and (
                    not self._workers or job.cost >= PARALLEL_BYTES or self.job_seconds >= SLOW_JOB
                )
            )
            wake = self._dozing
            self._dozing = False
        if wake:
            self._wake.set()
        if needed:
            self._spawn()

    def _watch(self) -> None:
        """The watchdog's loop (see the class docstring); it ends with the last worker."""
        while True:
            with self._lock:
                out = bool(self._pending or self._running)
                # Not while jobs are out, even once closed: the callers of a closing HSM still
                # time out while a stuck call holds its ``stop`` up.
                if not out and (self._closed or not self._workers):
                    self._watchdog = None
                    return
                self._dozing = not out
            self._wake.wait(WATCH_SECONDS if out else WORKER_IDLE_SECONDS)
            self._wake.clear()
            self._check(time.monotonic())

    def _check(self, now: float) -> None:
        """One look: start a worker past a stalled batch; expire the calls out too long."""
        expired: list[_Job] = []
        with self._lock:
            stalled = (
                bool(self._pending)
                and not self._idle
                and self._workers < self.max_workers
                and self._stalled(now)
            )
            if self.timeout is not None:
                limit = now - self.timeout
                expired = [
                    job for job in self._pending if job.submitted <= limit and not job.expiring
                ]
                for _, batch in self._running.values():
                    expired.extend(
                        job
                        for job in batch
                        if job.submitted <= limit and not (job.sent or job.expiring)
                    )
                for job in expired:
                    job.expiring = True  # scheduled once: the loop drops or detaches it
        if stalled:
            self._spawn()
        for job in expired:
            expire_soon(job, self.abandon, self._expired)

    def _stalled(self, now: float) -> bool:
        """Under the lock: some worker's batch has run for ``STALLED_SECONDS`` or more."""
        return any(start <= now - STALLED_SECONDS for start, _ in self._running.values())

    def abandon(self, job: _Job) -> bool:
        """Drop a job no worker has taken yet; False when it is running or done."""
        with self._lock:
            if job.state == PENDING:
                job.state = ABANDONED
                self._pending.discard(job)
                return True
            return False

    # -- the workers' side ---------------------------------------------------------------------

    def _spawn(self) -> None:
        watchdog = None
        with self._lock:
            if self._closed or self._workers >= self.max_workers:
                return
            self._workers += 1
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{next(_names)}", daemon=True
            )
            self._threads.add(thread)
            if self._watchdog is None:
                watchdog = self._watchdog = threading.Thread(
                    target=self._watch, name=f"{self.name}-watchdog", daemon=True
                )
        thread.start()
        if watchdog is not None:
            watchdog.start()

    def _work(self) -> None:
        counted = True
        try:
            counted = self._serve()
        finally:
            if counted:  # only if something went wrong: _serve un-counts itself
                with self._lock:
                    self._workers -= 1
                    self._threads.discard(threading.current_thread())

    def _serve(self) -> bool:
        """The worker's loop; returns False once it has taken itself off the counts."""
        q = self._queue
        lock = self._lock
        leader = self._leader
        me = threading.get_ident()
        while True:
            with lock:
                self._idle += 1
            if not leader.acquire(timeout=WORKER_IDLE_SECONDS):
                if self._retire(idle=True):
                    return False
                continue
            try:
                first = q.get(timeout=WORKER_IDLE_SECONDS)
            except queue.Empty:
                leader.release()
                if self._retire(idle=True):
                    return False
                continue
            with lock:
                self._idle -= 1
            if first is None:
                leader.release()
                self._retire(idle=False)
                return False
            try:
                batch = self._take(first)
            finally:
                leader.release()
            with lock:
                claimed = [job for job in batch if job.state == PENDING]
                for job in claimed:
                    job.state = RUNNING
                self._pending.difference_update(claimed)
                self._busy += 1
                self._running[me] = (time.monotonic(), claimed)
            small = all(job.cost < PARALLEL_BYTES for job in claimed)
            try:
                if claimed:
                    self._run(claimed, small)
            finally:
                with lock:
                    self._busy -= 1
                    del self._running[me]
            if small and self.job_seconds < SLOW_JOB and self._idle and self._retire(idle=False):
                return False  # fast jobs again: the idle workers are enough

    def _take(self, first: _Job) -> list[_Job]:
        """The leader's batch: what is queued, within the count and input limits."""
        q = self._queue
        batch = [first]
        cost = first.cost
        limit = MAX_BATCH
        if self.job_seconds >= SLOW_JOB:
            limit = max(1, int(BATCH_SECONDS / self.job_seconds))
        while len(batch) < limit and cost < MAX_BATCH_BYTES:
            try:
                job = q.get_nowait()
            except queue.Empty:
                break
            if job is None:
                q.put(None)  # a stop request: honoured after this batch
                break
            batch.append(job)
            cost += job.cost
        if self.job_seconds >= SLOW_JOB and not self._idle and not q.empty():
            self._spawn()  # slow jobs still queued: run them side by side
        return batch

    def _run(self, claimed: list[_Job], small: bool) -> None:
        """Run a claimed batch, answer every task whatever happens, and learn its pace."""
        try:
            self._prepare()
        except BaseException as exc:
            for job in claimed:
                job.value = _copy_error(exc)
            deliver(claimed)
            return
        started, started_cpu = time.perf_counter(), time.thread_time()
        try:
            self._run_batch(claimed)
        except BaseException as exc:  # a bug: still answer every task
            left = [job for job in claimed if not job.sent]
            for job in left:
                job.ok, job.value = False, exc
            deliver(left)
        if small:
            wall = (time.perf_counter() - started) / len(claimed)
            cpu = (time.thread_time() - started_cpu) / len(claimed)
            self._learn(wall, cpu, self._busy)

    def _learn(self, wall: float, cpu: float, busy: int) -> None:
        """Update ``job_seconds``, the time a small job takes when nothing gets in its way.

        A worker waits either for the device (a network HSM's round trip: the CPU is idle) or
        for the GIL and the CPU that other workers use. When the busy workers together kept
        the CPU busy (``busy * cpu`` near ``wall``), the wall time is inflated by contention and
        the job's own CPU time is the better estimate; otherwise the wall time is.
        """
        sample = cpu if busy * cpu >= 0.5 * wall else wall
        self.job_seconds += (sample - self.job_seconds) * 0.25

    def _retire(self, *, idle: bool) -> bool:
        """End this worker (True), unless it was idle and a job arrived meanwhile."""
        with self._lock:
            if idle:
                self._idle -= 1
                # A job queued while this worker was counted idle started no worker: stay.
                if not self._queue.empty():
                    return False
            self._workers -= 1
            self._threads.discard(threading.current_thread())
            return True

    def stop(self) -> None:
        """Finish the queued jobs, then end every worker (blocking: run it in a thread).

        A job left in the queue once the workers ended fails.
        """
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        self._wake.set()  # the watchdog ends
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()
        left: list[_Job] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                left.append(job)
        with self._lock:
            claimed = [job for job in left if job.state == PENDING]
            for job in claimed:
                job.state = RUNNING
                job.value = InvalidRequestError("the HSM is closed")
            self._pending.clear()
        deliver(claimed)


# -- one slot ---------------------------------------------------------------------------------


class _Slot:
    """A configured slot: its session pool, dispatcher, handle cache and algorithm list."""

    def __init__(
        self,
        module: Module,
        slot_id: int,
        pin: SecretBytes | None,
        profile: VendorProfile,
        pool_size: int | None,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self.module = module
        self.slot_id = slot_id
        self.batch = profile.find_batch
        self.cbc_limit = profile.cbc_limit
        self.pool = SessionPool(module, slot_id, pin, size=pool_size)
        self.dispatcher = _Dispatcher(
            f"kms-hsm-slot{slot_id}",
            self.start,
            self.run_batch,
            pool_size or DEFAULT_POOL_CAP,
            call_timeout,
        )
        self._has_pin = pin is not None
        self._cache: dict[tuple[bytes, str], int] = {}
        self._cache_generation = -1
        self._started = False
        self._start_lock = threading.Lock()
        self._create_lock = threading.Lock()
        self._algorithms_lock = threading.Lock()
        self.algorithms: list[CryptoAlgorithm] | None = None

    # -- running jobs ------------------------------------------------------------------------

    def start(self) -> None:
        """Check the slot holds an initialised token and log in (before the first job)."""
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            if self.slot_id not in self.module.slots(True):
                raise InvalidRequestError(f"slot {self.slot_id} is not accessible")
            if not self.module.token_info(self.slot_id).flags & ck.CKF_TOKEN_INITIALIZED:
                raise InvalidRequestError(f"slot {self.slot_id} is not accessible")
            with self.pool.session():
                pass
            self.dispatcher.max_workers = max(1, self.pool.size)
            self._started = True

    def run_batch(self, jobs: list[_Job]) -> None:
        """Run claimed jobs on one pooled session (in a worker), then wake their tasks.

        Jobs finished before a heavy one (``cost >= MAX_BATCH_BYTES``) are handed back before it
        starts, so that a key generation does not hold up the small operations queued with it;
        so are those of each pass of AES-GCM jobs (``_run_gcm``), so that their tasks queue their
        next operation while the core runs the following pass.
        """
        i, n, sent, setbacks = 0, len(jobs), 0, 0
        pool = self.pool
        while i < n:
            failed: HsmError | None = None
            try:
                with pool.session() as session:
                    while i < n:
                        job = jobs[i]
                        if job.batch is not None:
                            i += self._run_gcm(session, jobs, i)
                            if sent < i < n:  # the last pass is answered once the session is back
                                deliver(jobs[sent:i])
                                sent = i
                            continue
                        if job.cost >= MAX_BATCH_BYTES and i > sent:
                            deliver(jobs[sent:i])
                            sent = i
                        if job.detached:  # its caller timed out before it started: skip it
                            i += 1
                            continue
                        try:
                            job.value = job.fn(session, *job.args)
                            job.ok = True
                        except HsmError as exc:
                            if exc.rv in _RECOVERABLE:
                                failed = exc
                                raise  # the lease recovers the session or the login
                            job.value = exc
                        except BaseException as exc:
                            job.value = exc
                        i += 1
            except BaseException as exc:
                if failed is not None:  # jobs[i] lost its session or login; the pool recovered
                    if exc is failed:
                        self._retry(jobs[i], failed)
                    else:  # the recovery failed too: the job's own error, not retried
                        jobs[i].value = failed
                    i += 1
                    continue
                # No session could be had; none of jobs[i:] ran. One more try (a fault while
                # opening or logging in a session is often transient), then fail them.
                if setbacks == 0 and isinstance(exc, HsmError) and exc.rv is not None:
                    setbacks += 1
                    continue
                for job in jobs[i:]:
                    job.value = _copy_error(exc)
                break
        deliver(jobs[sent:])

    def _run_gcm(self, session: Session, jobs: list[_Job], start: int) -> int:
        """Run the AES-GCM jobs from ``start`` of one direction in one pass of the core.

        Jobs whose key handle is cached and whose operation succeeded are done; the others
        (no cached handle, a failure: stale handle, bad tag, session lost) are put after them,
        unmarked, for the one-by-one path, which gives each its exact outcome. Returns how many
        jobs are done.
        """
        kind = jobs[start].batch
        end = start + 1
        while (
            end < len(jobs)
            and jobs[end].batch == kind
            and jobs[end].cost < MAX_BATCH_BYTES  # a heavy job starts a pass of its own
            and jobs[start].cost < MAX_BATCH_BYTES
        ):
            end += 1
        # Half the run per pass: the tasks of the first half are woken (and queue their next
        # operation) while the core runs the second half without the GIL.
        end = start + max(min(end - start, MIN_PASS_JOBS), (end - start + 1) // 2)
        ready: list[_Job] = []
        handles: list[int] = []
        left: list[_Job] = []
        for job in jobs[start:end]:
            handle = self._cached(job.args[0], _AES_KEY)
            if handle is None or job.detached:  # (the one-by-one path skips detached jobs)
                left.append(job)
            else:
                ready.append(job)
                handles.append(handle)
        done: list[_Job] = []
        if ready:
            run_many = hsm_ops.gcm_encrypt_many if kind == "encrypt" else hsm_ops.gcm_decrypt_many
            try:
                outs: list[Any] = run_many(
                    session, handles, [job.args[2] for job in ready], [job.args[3] for job in ready]
                )
            except Exception:
                # A lost session, or one job's unusable buffer: the one-by-one path gives each
                # job its own outcome (and recovers the session).
                outs = [None] * len(ready)
            for job, out in zip(ready, outs, strict=True):
                if out is None:
                    left.append(job)
                else:
                    job.value, job.ok = out, True
                    done.append(job)
        for job in left:
            job.batch = None
        jobs[start:end] = done + left
        return len(done)

    def _retry(self, job: _Job, error: HsmError) -> None:
        """Once more on a fresh session after a recovery (idempotent jobs only)."""
        job.value = error
        if not job.idempotent or job.detached:
            return
        try:
            with self.pool.session() as session:
                job.value = job.fn(session, *job.args)
                job.ok = True
        except BaseException as exc:
            job.value = exc

    # -- handle cache ------------------------------------------------------------------------

    def _resolve(self, session: Session, key_id: bytes, want: str, required: bool) -> int | None:
        """The cached handle, else a lookup (cached when found)."""
        generation = self.pool.login_generation
        if generation != self._cache_generation:
            self._cache.clear()
            self._cache_generation = generation
        handle = self._cache.get((key_id, want))
        if handle is not None:
            return handle
        handle = self._find(session, key_id, want)
        if handle is None:
            if self._login_lost(session):
                # A lost login hides private keys: not "not found", but a login to restore
                # (the pool logs in again and the job runs once more).
                raise pkcs11_error(CKR_USER_NOT_LOGGED_IN, "C_FindObjects")
            if self._has_pin and (required or self.pool.login_generation != generation):
                # The search may have run while the token was logged out: a login by another
                # worker overlapped it, or a logout was under way (SoftHSM2 then hides private
                # keys while reporting the session logged in). One more look before calling a
                # key missing (on the error path only, unless a login overlapped).
                handle = self._find(session, key_id, want)
            if handle is None:
                if required:
                    raise InvalidRequestError(keys.OBJECT_NOT_FOUND)
                return None
        if self.pool.login_generation == generation:
            self._cache[(key_id, want)] = handle
        return handle

    def _find(self, session: Session, key_id: bytes, want: str) -> int | None:
        if want == _VERIFY:
            return self._find_verify_key(session, key_id)
        if want == _HMAC:
            return keys.find_hmac_key(session, key_id, batch=self.batch)
        wanted, purpose = _WANTS[want]
        return keys.find_key(session, key_id, wanted, batch=self.batch, purpose=purpose)

    def _find_verify_key(self, session: Session, key_id: bytes) -> int | None:
        """The public key to verify with: ``<id>_pk`` first, then ``<id>`` itself."""
        public = KeyType.RSA_PUBLIC_KEY
        if not key_id.endswith(b"_pk"):
            handle = keys.find_key(
                session, key_id + b"_pk", public, batch=self.batch, purpose="verify"
            )
            if handle is not None:
                return handle
        return keys.find_key(session, key_id, public, batch=self.batch, purpose="verify")

    def cache_size(self) -> int:
        """Handles cached now."""
        return len(self._cache)

    def evict_handle(self, handle: int) -> None:
        """Forget every id that resolved to ``handle``."""
        for entry, cached in list(self._cache.items()):
            if cached == handle:
                self._cache.pop(entry, None)

    def evict_ids(self, *key_ids: bytes) -> None:
        """Forget these ids, whatever key type was wanted."""
        for entry in list(self._cache):
            if entry[0] in key_ids:
                self._cache.pop(entry, None)

    def _login_lost(self, session: Session) -> bool:
        return self._has_pin and session.get_info().state in _PUBLIC_STATES

    def keyed(
        self, session: Session, key_id: bytes, want: str, op: Callable[[Session, int], T]
    ) -> T:
        """``op(session, handle)`` for the key ``key_id``; a stale handle is looked up again
        once. A missing key raises ``InvalidRequestError("Object not found")``."""
        handle = self._resolve(session, key_id, want, True)
        assert handle is not None
        try:
            return op(session, handle)
        except _STALE:
            if self._login_lost(session):
                raise  # the pool logs in again (which clears the cache) and retries the job
            self.evict_handle(handle)
            handle = self._resolve(session, key_id, want, True)
            assert handle is not None
            return op(session, handle)

    def lookup(self, session: Session, key_id: bytes, op: Callable[[Session, int], T]) -> T | None:
        """``op(session, handle)``, or None when there is no such key."""
        handle = self._resolve(session, key_id, _ANY, False)
        if handle is None:
            return None
        try:
            return op(session, handle)
        except _STALE:
            if self._login_lost(session):
                raise
            self.evict_handle(handle)
            handle = self._resolve(session, key_id, _ANY, False)
            return None if handle is None else op(session, handle)

    # -- operations (run in workers) ---------------------------------------------------------

    def _cached(self, key_id: bytes, want: str) -> int | None:
        """The cached handle (the warm path: one dictionary read, no C call)."""
        if self.pool.login_generation != self._cache_generation:
            return None
        return self._cache.get((key_id, want))

    def _crypt(
        self,
        fn: Callable[..., T],
        session: Session,
        key_id: bytes,
        want: str,
        algorithm: CryptoAlgorithm,
        data: Data,
        aad: bytes | None,
    ) -> T:
        """``fn`` (``hsm_ops.encrypt``/``decrypt``) on the key: the warm path calls it directly."""
        handle = self._cached(key_id, want)
        if handle is not None:
            try:
                return fn(session, handle, algorithm, data, aad=aad, cbc_limit=self.cbc_limit)
            except _STALE:
                if self._login_lost(session):
                    raise
                self.evict_handle(handle)
        op = functools.partial(
            fn, algorithm=algorithm, data=data, aad=aad, cbc_limit=self.cbc_limit
        )
        return self.keyed(session, key_id, want, op)

    def encrypt(
        self,
        session: Session,
        key_id: bytes,
        algorithm: CryptoAlgorithm,
        data: Data,
        aad: bytes | None,
    ) -> EncryptedContent:
        want = _AES_KEY if algorithm is _GCM or algorithm is _CBC else _PUBLIC
        return self._crypt(hsm_ops.encrypt, session, key_id, want, algorithm, data, aad)

    def decrypt(
        self,
        session: Session,
        key_id: bytes,
        algorithm: CryptoAlgorithm,
        data: Data,
        aad: bytes | None,
    ) -> SecretBytes:
        want = _AES_KEY if algorithm is _GCM or algorithm is _CBC else _PRIVATE_DECRYPT
        return self._crypt(hsm_ops.decrypt, session, key_id, want, algorithm, data, aad)

    def sign(
        self, session: Session, key_id: bytes, algorithm: SigningAlgorithm, data: Data
    ) -> bytes:
        op = functools.partial(hsm_ops.sign, algorithm=algorithm, data=data)
        return self.keyed(session, key_id, _PRIVATE_SIGN, op)

    def verify(
        self,
        session: Session,
        key_id: bytes,
        algorithm: SigningAlgorithm,
        data: Data,
        signature: Data,
    ) -> bool:
        op = functools.partial(hsm_ops.verify, algorithm=algorithm, data=data, signature=signature)
        return self.keyed(session, key_id, _VERIFY, op)

    def mac(
        self, session: Session, key_id: bytes, algorithm: CryptographicAlgorithm, data: Data
    ) -> bytes:
        op = functools.partial(hsm_ops.mac, algorithm=algorithm, data=data)
        return self.keyed(session, key_id, _HMAC, op)

    def mac_verify(
        self,
        session: Session,
        key_id: bytes,
        algorithm: CryptographicAlgorithm,
        data: Data,
        mac: Data,
    ) -> bool:
        op = functools.partial(hsm_ops.mac_verify, algorithm=algorithm, data=data, mac=mac)
        return self.keyed(session, key_id, _HMAC, op)

    def create_key(self, session: Session, key_id: bytes, bits: int, sensitive: bool) -> None:
        with self._create_lock:
            generation = self.pool.login_generation
            handle = keys.create_aes_key(session, key_id, bits, sensitive, batch=self.batch)
            self.evict_ids(key_id)
            if generation == self.pool.login_generation == self._cache_generation:
                self._cache[(key_id, _AES_KEY)] = handle

    def create_keypair(
        self, session: Session, sk_id: bytes, pk_id: bytes, bits: int, sensitive: bool
    ) -> None:
        with self._create_lock:
            generation = self.pool.login_generation
            public, private = keys.create_rsa_key_pair(
                session, sk_id, pk_id, bits, sensitive, batch=self.batch
            )
            self.evict_ids(sk_id, pk_id)
            if generation == self.pool.login_generation == self._cache_generation:
                self._cache[(pk_id, _PUBLIC)] = public
                for want in (_PRIVATE_DECRYPT, _PRIVATE_SIGN):
                    self._cache[(sk_id, want)] = private

    def delete(self, session: Session, key_id: bytes) -> None:
        def destroy(session: Session, handle: int) -> None:
            session.destroy_object(handle)
            self.evict_handle(handle)

        self.keyed(session, key_id, _ANY, destroy)

    def export(self, session: Session, key_id: bytes) -> HsmObject | None:
        return self.lookup(session, key_id, keys.export)

    def get_key_type(self, session: Session, key_id: bytes) -> KeyType | None:
        return self.lookup(session, key_id, keys.get_key_type)

    def get_key_metadata(self, session: Session, key_id: bytes) -> KeyMetadata | None:
        return self.lookup(session, key_id, keys.get_key_metadata)

    def find(self, session: Session, object_filter: HsmObjectFilter) -> list[bytes]:
        return keys.find(session, object_filter, batch=self.batch)

    def set_key_dates(
        self,
        session: Session,
        key_id: bytes,
        start: datetime.date | None,
        end: datetime.date | None,
    ) -> None:
        op = functools.partial(keys.set_key_dates, start_date=start, end_date=end)
        self.keyed(session, key_id, _ANY, op)

    def set_key_label(self, session: Session, key_id: bytes, label: str) -> None:
        def relabel(session: Session, handle: int) -> None:
            keys.set_key_label(session, handle, label)
            self.evict_handle(handle)
            self.evict_ids(keys.key_id_bytes(label))

        self.keyed(session, key_id, _ANY, relabel)

    def supported_algorithms(self, session: Session) -> list[CryptoAlgorithm]:
        with self._algorithms_lock:
            if self.algorithms is None:
                found = hsm_ops.algorithms_from_mechanisms(self.module.mechanisms(self.slot_id))
                if found & _OAEP:
                    found = (found - _OAEP) | (found & hsm_ops.probe_oaep_hashes(session))
                self.algorithms = [a for a in CryptoAlgorithm if a in found]
            return list(self.algorithms)

    def close(self) -> None:
        """Stop the workers (after the queued jobs) and close the pool (blocking)."""
        self.dispatcher.stop()
        self.pool.close()
        self._cache.clear()


# -- the HSM ----------------------------------------------------------------------------------


def _pin(password: str | bytes | SecretBytes | None) -> SecretBytes | None:
    if password is None:
        return None
    return SecretBytes(password.encode() if isinstance(password, str) else password)


class Pkcs11Hsm(HSM, MacCapable):
    """An HSM reached through a PKCS#11 module, by slot.

    ``passwords`` maps each usable slot to its user PIN (``None``: no login, public objects
    only); the PINs are kept in wipeable buffers and wiped by ``aclose``. ``profile`` names the
    vendor profile (find batch size, CBC size limit); ``pool_size`` bounds the sessions (and
    worker threads) per slot, by default the token's limit capped at 16; ``call_timeout`` bounds
    each call in seconds, queueing included (``None``: no bound), raising ``HsmTimeoutError``.
    The constructor only loads the module; each slot logs in on first use.

    It is ``MacCapable``: ``mac`` / ``mac_verify`` run HMAC-SHA* with a token secret key of type
    CKK_GENERIC_SECRET or CKK_SHA*_HMAC (such keys stay invisible to ``find`` and
    ``get_key_type``); an id naming only keys of other types raises ``NotSupportedError``.
    """

    def __init__(
        self,
        library_path: str | os.PathLike[str],
        passwords: Mapping[int, str | bytes | SecretBytes | None],
        *,
        profile: str = "softhsm2",
        pool_size: int | None = None,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        if pool_size is not None and pool_size < 1:
            raise InvalidRequestError(f"pool size must be at least 1, got {pool_size}")
        check_call_timeout(call_timeout)
        self.call_timeout = call_timeout
        self.profile = get_profile(profile)
        self.library_path = resolve_library(self.profile, library_path)
        self.pool_size = pool_size
        self._passwords: dict[int, SecretBytes | None] = {
            int(slot): _pin(password) for slot, password in passwords.items()
        }
        self._slots: dict[int, _Slot] = {}
        self._slots_lock = threading.Lock()
        self._closed = False
        self.module = Module(self.library_path)

    @classmethod
    def from_profile(
        cls,
        name: str,
        passwords: Mapping[int, str | bytes | SecretBytes | None],
        *,
        pool_size: int | None = None,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT,
    ) -> Self:
        """The HSM of vendor profile ``name``: its module from ``$<ENV_VAR>`` or the default
        path (a missing file raises ``InvalidRequestError`` naming the profile and path)."""
        profile = get_profile(name)
        return cls(
            resolve_library(profile),
            passwords,
            profile=name,
            pool_size=pool_size,
            call_timeout=call_timeout,
        )

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<Pkcs11Hsm {self.profile.name} {self.library_path!r}{state}>"

    # -- plumbing ----------------------------------------------------------------------------

    def _slot(self, slot_id: int) -> _Slot:
        if type(slot_id) is not int:
            raise InvalidRequestError(f"a slot id must be an int, not {type(slot_id).__name__}")
        state = self._slots.get(slot_id)
        if state is not None:
            return state
        if self._closed:
            raise InvalidRequestError("the HSM is closed")
        if slot_id not in self._passwords:
            raise InvalidRequestError(f"slot {slot_id} is not accessible")
        with self._slots_lock:
            state = self._slots.get(slot_id)
            if state is None:
                state = _Slot(
                    self.module,
                    slot_id,
                    self._passwords[slot_id],
                    self.profile,
                    self.pool_size,
                    self.call_timeout,
                )
                self._slots[slot_id] = state
        return state

    @staticmethod
    async def _run(
        state: _Slot,
        method: Callable[..., T],
        *args: Any,
        cost: int = HEAVY,
        idempotent: bool = True,
    ) -> T:
        """``method(session, *args)``, run by one of the slot's workers."""
        result: T = await state.dispatcher.run(method, args, cost, idempotent)
        return result

    async def _cipher(
        self,
        operation: str,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptoAlgorithm,
        data: Data,
        aad: bytes | None,
    ) -> Any:
        """``encrypt`` or ``decrypt`` (the hot path: checks, then straight to the dispatcher)."""
        state = self._slot(slot_id)
        key = key_id if type(key_id) is bytes else keys.key_id_bytes(key_id)
        _member(algorithm, CryptoAlgorithm, "algorithm")
        _buffer(data, "data")
        _optional_buffer(aad, "aad")
        cost = len(data) if type(data) is not memoryview else data.nbytes
        return await state.dispatcher.run(
            getattr(state, operation),
            (key, algorithm, data, aad),
            cost,
            batch=operation if algorithm is _GCM else None,
        )

    def slot_state(self, slot_id: int) -> _Slot:
        """The slot's internals (pool, handle cache); for tests and benchmarks."""
        return self._slot(slot_id)

    # -- life cycle --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Finish queued work, close every pool and the module, wipe the PINs (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """``aclose`` for code without an event loop (blocking: never call it from one)."""
        self._closed = True
        with self._slots_lock:
            states = list(self._slots.values())
            self._slots.clear()
        try:
            for state in states:
                state.close()
        finally:
            self.module.close()
            for pin in self._passwords.values():
                if pin is not None:
                    pin.zeroize()

    # -- the contract ------------------------------------------------------------------------

    async def get_available_slot_list(self) -> list[int]:
        return sorted(self._passwords)

    async def get_supported_algorithms(self, slot_id: int) -> list[CryptoAlgorithm]:
        state = self._slot(slot_id)
        if state.algorithms is not None:
            return list(state.algorithms)
        return await self._run(state, state.supported_algorithms)

    async def create_key(
        self,
        slot_id: int,
        id: KeyId,
        algorithm: HsmKeyAlgorithm,
        key_length_in_bits: int,
        sensitive: bool,
    ) -> None:
        if algorithm is not HsmKeyAlgorithm.AES:
            raise InvalidRequestError(f"unsupported key algorithm: {algorithm!r}")
        _member(key_length_in_bits, int, "key_length_in_bits")
        _member(sensitive, bool, "sensitive")
        keys.check_aes_bits(key_length_in_bits)
        state = self._slot(slot_id)
        key_id = keys.key_id_bytes(id)
        await self._run(
            state, state.create_key, key_id, key_length_in_bits, sensitive, idempotent=False
        )

    async def create_keypair(
        self,
        slot_id: int,
        sk_id: KeyId,
        pk_id: KeyId,
        algorithm: HsmKeypairAlgorithm,
        key_length_in_bits: int,
        sensitive: bool,
    ) -> None:
        if algorithm is not HsmKeypairAlgorithm.RSA:
            raise InvalidRequestError(f"unsupported key pair algorithm: {algorithm!r}")
        _member(key_length_in_bits, int, "key_length_in_bits")
        _member(sensitive, bool, "sensitive")
        keys.check_rsa_bits(key_length_in_bits)
        state = self._slot(slot_id)
        sk, pk = keys.key_id_bytes(sk_id), keys.key_id_bytes(pk_id)
        await self._run(
            state, state.create_keypair, sk, pk, key_length_in_bits, sensitive, idempotent=False
        )

    async def export(self, slot_id: int, object_id: KeyId) -> HsmObject | None:
        state = self._slot(slot_id)
        return await self._run(state, state.export, keys.key_id_bytes(object_id), cost=0)

    async def delete(self, slot_id: int, object_id: KeyId) -> None:
        state = self._slot(slot_id)
        await self._run(state, state.delete, keys.key_id_bytes(object_id))

    async def find(self, slot_id: int, object_filter: HsmObjectFilter) -> list[bytes]:
        state = self._slot(slot_id)
        _member(object_filter, HsmObjectFilter, "object_filter")
        return await self._run(state, state.find, object_filter)

    async def encrypt(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptoAlgorithm,
        data: Data,
        *,
        aad: bytes | None = None,
    ) -> EncryptedContent:
        result: EncryptedContent = await self._cipher(
            "encrypt", slot_id, key_id, algorithm, data, aad
        )
        return result

    async def decrypt(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptoAlgorithm,
        data: Data,
        *,
        aad: bytes | None = None,
    ) -> SecretBytes:
        result: SecretBytes = await self._cipher("decrypt", slot_id, key_id, algorithm, data, aad)
        return result

    async def get_key_type(self, slot_id: int, key_id: KeyId) -> KeyType | None:
        state = self._slot(slot_id)
        return await self._run(state, state.get_key_type, keys.key_id_bytes(key_id), cost=0)

    async def get_key_metadata(self, slot_id: int, key_id: KeyId) -> KeyMetadata | None:
        state = self._slot(slot_id)
        return await self._run(state, state.get_key_metadata, keys.key_id_bytes(key_id), cost=0)

    async def sign(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: SigningAlgorithm,
        data: Data,
    ) -> bytes:
        state = self._slot(slot_id)
        key = keys.key_id_bytes(key_id)
        _member(algorithm, SigningAlgorithm, "algorithm")
        _buffer(data, "data")
        return await self._run(state, state.sign, key, algorithm, data, cost=_nbytes(data))

    async def verify(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: SigningAlgorithm,
        data: Data,
        signature: Data,
    ) -> bool:
        state = self._slot(slot_id)
        key = keys.key_id_bytes(key_id)
        _member(algorithm, SigningAlgorithm, "algorithm")
        _buffer(data, "data")
        _buffer(signature, "signature")
        return await self._run(
            state, state.verify, key, algorithm, data, signature, cost=_nbytes(data)
        )

    async def mac(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptographicAlgorithm,
        data: Data,
    ) -> bytes:
        state = self._slot(slot_id)
        key = keys.key_id_bytes(key_id)
        _member(algorithm, CryptographicAlgorithm, "algorithm")
        hsm_ops.hmac_mechanism(algorithm)  # an algorithm that is no HMAC fails before any hop
        _buffer(data, "data")
        return await self._run(state, state.mac, key, algorithm, data, cost=_nbytes(data))

    async def mac_verify(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptographicAlgorithm,
        data: Data,
        mac: Data,
    ) -> bool:
        state = self._slot(slot_id)
        key = keys.key_id_bytes(key_id)
        _member(algorithm, CryptographicAlgorithm, "algorithm")
        hsm_ops.hmac_mechanism(algorithm)
        _buffer(data, "data")
        _buffer(mac, "mac")
        return await self._run(
            state, state.mac_verify, key, algorithm, data, mac, cost=_nbytes(data)
        )

    async def generate_random(self, slot_id: int, length: int) -> bytes:
        if type(length) is not int or not 0 <= length <= MAX_RANDOM_BYTES:
            raise InvalidRequestError(
                f"a random length must be an int from 0 to {MAX_RANDOM_BYTES}, got {length!r}"
            )
        state = self._slot(slot_id)
        return await self._run(state, Session.generate_random, length, cost=length)

    async def seed_random(self, slot_id: int, seed: Data) -> None:
        state = self._slot(slot_id)
        _buffer(seed, "seed")
        if _nbytes(seed) == 0:
            return
        await self._run(state, Session.seed_random, seed, cost=_nbytes(seed))

    async def set_key_dates(
        self,
        slot_id: int,
        key_id: KeyId,
        start_date: datetime.date | None,
        end_date: datetime.date | None,
    ) -> None:
        state = self._slot(slot_id)
        key = keys.key_id_bytes(key_id)
        _date(start_date, "start_date")
        _date(end_date, "end_date")
        await self._run(state, state.set_key_dates, key, start_date, end_date)

    async def set_key_label(self, slot_id: int, key_id: KeyId, label: str) -> None:
        state = self._slot(slot_id)
        _member(label, str, "label")
        keys.key_id_bytes(label)  # a label must be usable as an id: non-empty, valid text
        await self._run(state, state.set_key_label, keys.key_id_bytes(key_id), label)
