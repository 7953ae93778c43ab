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

A wait can also be ended from outside, whatever the worker does (a C call may never return):
``expire_soon`` (from any thread) has the item's loop drop work not started, or *detach* running
work, and wake the task with the error ``expired(started)`` makes; the outcome, when it comes,
is discarded (a secret in it is wiped). The dispatcher's watchdog uses it for call timeouts, so
a wait itself costs nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Final

import anyio

from kms_iface.errors import InterfaceError

__all__ = ["ABANDONED", "DONE", "PENDING", "RUNNING", "Completion", "deliver", "expire_soon"]

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
        self.detached = False  # the wait was ended while the work ran: its outcome is discarded
        self.value: Any = None

    async def wait(self, abandon: Callable[[Any], bool] | None = None) -> Any:
        """The outcome (a delivered exception is raised here).

        On cancellation, ``abandon(self)`` may drop work that has not started (then the
        cancellation is raised at once); otherwise the task waits for the outcome first, or
        until ``expire`` detaches the work.
        """
        if isinstance(self.loop, asyncio.AbstractEventLoop):
            return await self._wait_asyncio(abandon)
        return await self._wait_trio(abandon)

    @property
    def finished(self) -> bool:
        """Nothing left to wait for: answered, dropped or detached."""
        return self.state == DONE or self.state == ABANDONED or self.detached

    def expire(
        self, abandon: Callable[[Any], bool] | None, expired: Callable[[bool], BaseException]
    ) -> None:
        """In the item's loop thread: drop the work (``abandon``) or detach it, and wake the
        task with ``expired(started)``; nothing if it has finished meanwhile."""
        if self.finished:
            return
        started = abandon is None or not abandon(self)
        self.detached = started
        error = expired(started)
        if isinstance(self.loop, asyncio.AbstractEventLoop):
            if not self.waiter.done():
                self.waiter.set_exception(error)
            return
        import outcome

        _trio.lowlevel.reschedule(self.waiter, outcome.Error(error))

    async def _wait_asyncio(self, abandon: Callable[[Any], bool] | None) -> Any:
        waiter = self.waiter
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                raise  # the work's own error, or the expiry's
            if abandon is None or not abandon(self):
                with anyio.CancelScope(shield=True):
                    # A bare task.cancel() gets through anyio's shield: wait again until done
                    # (or until ``expire`` detaches the work).
                    while self.state != DONE and not self.detached:
                        waiter = self.waiter = self.loop.create_future()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await waiter
            raise

    async def _wait_trio(self, abandon: Callable[[Any], bool] | None) -> Any:
        lowlevel = _trio.lowlevel
        refused = False

        def abort(_: Any) -> Any:
            nonlocal refused
            if abandon is not None and abandon(self):
                return lowlevel.Abort.SUCCEEDED
            refused = True
            return lowlevel.Abort.FAILED  # running: its outcome (or ``expire``) wakes the task

        try:
            return await lowlevel.wait_task_rescheduled(abort)
        finally:
            if refused:
                await lowlevel.checkpoint()  # raise the cancellation, as under asyncio


def expire_soon(
    item: Completion,
    abandon: Callable[[Any], bool] | None,
    expired: Callable[[bool], BaseException],
) -> None:
    """From any thread: ``item.expire(abandon, expired)`` in the item's loop (a loop that has
    gone is skipped: nobody waits there any more)."""
    try:
        if isinstance(item.loop, asyncio.AbstractEventLoop):
            item.loop.call_soon_threadsafe(item.expire, abandon, expired)
        else:
            item.loop.run_sync_soon(item.expire, abandon, expired)
    except RuntimeError:
        pass


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
