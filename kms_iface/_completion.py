"""Work finished by worker threads for tasks of any event loop, asyncio or trio.

A ``Completion`` is made in the awaiting task; a worker thread fills ``ok``/``value`` and calls
``deliver`` with a group of them. ``anyio.from_thread`` would block the worker until the loop ran
the callback, so ``deliver`` uses each backend's own non-blocking thread-safe scheduling
(``loop.call_soon_threadsafe``, ``TrioToken.run_sync_soon``), once per event loop for the whole
group (each call costs a wake-up write to the loop's self-pipe). The backend is told apart with
``asyncio._get_running_loop()`` (a C-level read) because a completion is made for every write or
HSM operation. Under trio the task parks itself with ``wait_task_rescheduled`` (cheaper than an
Event).

``state`` moves PENDING -> RUNNING (claimed by a worker) -> DONE (outcome handed to the task, in
its loop's thread), or PENDING -> ABANDONED (the task was cancelled first and the owner agreed
to drop the work). A cancelled task whose work cannot be dropped waits, shielded, for the outcome
and then raises its cancellation (never the work's own error): work handed to another thread
happens anyway, and the caller must not lose track of it.

A *timeout* bounds the wait itself, whatever the worker does (a C call may never return): when it
expires, work not started is dropped, and running work is *detached*: the task raises the error
``expired(started)`` makes at once, and the outcome, when it comes, is discarded (a secret in it
is wiped).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

import anyio

from kms_iface.errors import InterfaceError

__all__ = ["ABANDONED", "DONE", "PENDING", "RUNNING", "Completion", "deliver"]

PENDING: Final = 0
RUNNING: Final = 1
ABANDONED: Final = 2
DONE: Final = 3

_trio: Any = None  # the trio module, once a trio task has made a completion


def _import_trio() -> Any:
    global _trio
    import trio

    _trio = trio
    return trio


class Completion:
    """One outcome awaited by the task that made it; filled by a worker, then ``deliver``."""

    __slots__ = ("detached", "loop", "ok", "sent", "state", "value", "waiter")

    def __init__(self) -> None:
        loop = asyncio._get_running_loop()
        if loop is not None:
            self.loop: Any = loop
            self.waiter: Any = loop.create_future()
        else:
            lowlevel = (_trio or _import_trio()).lowlevel
            self.loop = lowlevel.current_trio_token()
            self.waiter = lowlevel.current_task()
        self.state = PENDING
        self.ok = False
        self.sent = False  # handed to the task's event loop (set by ``deliver``)
        self.detached = False  # the wait timed out while the work ran: its outcome is discarded
        self.value: Any = None

    async def wait(
        self,
        abandon: Callable[[Any], bool] | None = None,
        timeout: float | None = None,
        expired: Callable[[bool], BaseException] | None = None,
    ) -> Any:
        """The outcome (a delivered exception is raised here).

        On cancellation, ``abandon(self)`` may drop work that has not started (then the
        cancellation is raised at once); otherwise the task waits for the outcome first.
        After ``timeout`` seconds the task raises ``expired(started)`` instead: the work is
        dropped if it had not started, detached if it had (``started``).
        """
        if timeout is not None and expired is None:
            raise ValueError("a timeout needs the error it raises (expired)")
        if isinstance(self.loop, asyncio.AbstractEventLoop):
            return await self._wait_asyncio(abandon, timeout, expired)
        return await self._wait_trio(abandon, timeout, expired)

    def _expire(
        self, abandon: Callable[[Any], bool] | None, expired: Callable[[bool], BaseException]
    ) -> None:
        """In the loop's thread, when an asyncio wait times out: drop or detach the work."""
        waiter = self.waiter
        if waiter.done():
            return  # the outcome came first
        started = abandon is None or not abandon(self)
        self.detached = started
        waiter.set_exception(expired(started))

    async def _wait_asyncio(
        self,
        abandon: Callable[[Any], bool] | None,
        timeout: float | None,
        expired: Callable[[bool], BaseException] | None,
    ) -> Any:
        waiter = self.waiter
        timer = (
            None
            if timeout is None
            else self.loop.call_later(timeout, self._expire, abandon, expired)
        )
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                raise  # the work's own error, or the timeout's
            if abandon is None or not abandon(self):
                with anyio.CancelScope(shield=True):
                    # A bare task.cancel() gets through anyio's shield: wait again until done
                    # (or until the timeout detaches the work).
                    while self.state != DONE and not self.detached:
                        waiter = self.waiter = self.loop.create_future()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await waiter
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def _wait_trio(
        self,
        abandon: Callable[[Any], bool] | None,
        timeout: float | None,
        expired: Callable[[bool], BaseException] | None,
    ) -> Any:
        import outcome

        trio = _trio or _import_trio()
        lowlevel = trio.lowlevel
        refused = False
        late: BaseException | None = None
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        timer: threading.Timer | None = None

        def detach() -> None:
            """In trio's thread, at the deadline of a wait that refused a cancellation."""
            if self.state != DONE and not self.detached and expired is not None:
                self.detached = True
                # The task raises its cancellation at the checkpoint below, not this error.
                lowlevel.reschedule(self.waiter, outcome.Error(expired(True)))

        def abort(_: Any) -> Any:
            nonlocal refused, late, timer
            dropped = abandon is not None and abandon(self)
            if trio.current_time() >= deadline and expired is not None:
                self.detached = not dropped
                late = expired(not dropped)
                return lowlevel.Abort.SUCCEEDED
            if dropped:
                return lowlevel.Abort.SUCCEEDED
            refused = True
            if timeout is not None:  # trio asks once: bound the wait that follows by a timer
                remaining = max(0.0, deadline - trio.current_time())
                timer = threading.Timer(remaining, self.loop.run_sync_soon, (detach,))
                timer.daemon = True
                timer.start()
            return lowlevel.Abort.FAILED  # running: its outcome reschedules the task

        with trio.CancelScope(deadline=deadline):
            try:
                return await lowlevel.wait_task_rescheduled(abort)
            finally:
                if timer is not None:
                    timer.cancel()
                if refused:
                    await lowlevel.checkpoint()  # raise the cancellation, as under asyncio
        if late is None:  # our deadline's cancellation, caught after the outcome came
            raise RuntimeError("a timed-out wait ended without its error")
        raise late


def _error_of(item: Completion) -> BaseException:
    value = item.value
    if not isinstance(value, BaseException):
        return InterfaceError("the operation failed")
    if isinstance(value, (StopIteration, StopAsyncIteration)):
        # A future refuses these; they can only come from a bug, so report one.
        failure = InterfaceError(f"the operation failed unexpectedly: {type(value).__name__}")
        failure.__cause__ = value
        return failure
    return value


def _discard(item: Completion) -> None:
    """Drop an outcome nobody waits for any more, wiping it if it is a secret."""
    value, item.value = item.value, None
    if item.ok:
        zeroize = getattr(value, "zeroize", None)
        if zeroize is not None:
            zeroize()


def _finish_asyncio(items: list[Completion]) -> None:
    """In the event loop's thread: hand each outcome to its task's future."""
    for item in items:
        item.state = DONE
        waiter = item.waiter
        if waiter.done():
            _discard(item)  # the wait timed out
            continue
        try:
            if item.ok:
                waiter.set_result(item.value)
            else:
                waiter.set_exception(_error_of(item))
        except Exception as exc:  # never leave the other tasks of the group unanswered
            waiter.set_exception(InterfaceError(f"the operation failed: {type(exc).__name__}"))


def _finish_trio(items: list[Completion]) -> None:
    """In trio's thread: reschedule each task with its outcome."""
    import outcome

    reschedule = (_trio or _import_trio()).lowlevel.reschedule
    for item in items:
        item.state = DONE
        if item.detached:
            _discard(item)  # the wait timed out: the task is gone on
            continue
        reschedule(
            item.waiter, outcome.Value(item.value) if item.ok else outcome.Error(_error_of(item))
        )


def deliver(items: Iterable[Completion]) -> None:
    """From a worker: wake the tasks of filled completions, with one call into each event loop.

    A completion whose event loop has gone is skipped: its outcome has nobody to go to.
    """
    groups: dict[int, tuple[Any, list[Completion]]] = {}
    for item in items:
        item.sent = True
        groups.setdefault(id(item.loop), (item.loop, []))[1].append(item)
    for native, group in groups.values():
        try:
            if isinstance(native, asyncio.AbstractEventLoop):
                native.call_soon_threadsafe(_finish_asyncio, group)
            else:
                native.run_sync_soon(_finish_trio, group)
        except RuntimeError:
            continue
