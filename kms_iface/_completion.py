"""A one-shot result that any thread may set and one task awaits, under asyncio or trio.

Worker threads (the LMDB group-commit writer) finish work for tasks of any event loop; they must
wake the waiting tasks without blocking on those loops. ``anyio.from_thread`` would block the
worker until the loop ran the callback, so this uses each backend's own non-blocking thread-safe
scheduling (``loop.call_soon_threadsafe``, ``TrioToken.run_sync_soon``), once per loop for a whole
group of completions (each call costs a wake-up write to the loop's self-pipe). The running
backend is told apart with ``asyncio._get_running_loop()`` (a C-level read, unlike anyio's
backend lookup) because a completion is made for every write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import anyio

T = TypeVar("T")

__all__ = ["Completion", "deliver"]


class Completion(Generic[T]):
    """Made in the awaiting task; filled from any thread with ``deliver``."""

    __slots__ = ("_delivered", "_error", "_event", "_native", "_value")

    def __init__(self) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._delivered = False
        loop = asyncio._get_running_loop()
        if loop is not None:
            self._native: Any = loop
            self._event: Any = loop.create_future()
        else:
            import trio

            self._native = trio.lowlevel.current_trio_token()
            self._event = trio.Event()

    def _wake(self) -> None:
        # Runs in the waiter's own loop thread, so it never races with ``wait``.
        self._delivered = True
        event = self._event
        if isinstance(event, asyncio.Future):
            if not event.done():
                event.set_result(None)
        else:
            event.set()

    async def wait(self) -> T:
        """The result once delivered; a delivered exception is raised here.

        Cancellation is deferred until the outcome is known: the work was handed to another
        thread and will happen anyway, so the caller must not lose track of it.
        """
        event = self._event
        if isinstance(event, asyncio.Future):
            try:
                await event
            except asyncio.CancelledError:
                # The cancellation cancelled ``event`` too; wait on a fresh future, shielded from
                # anyio scopes, and looping because a bare task.cancel() gets through the shield.
                with anyio.CancelScope(shield=True):
                    while not self._delivered:
                        self._event = event = event.get_loop().create_future()
                        try:
                            await asyncio.shield(event)
                        except asyncio.CancelledError:
                            continue
                raise
        else:
            try:
                await event.wait()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await event.wait()
                raise
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value  # type: ignore[return-value]


def deliver(outcomes: Iterable[tuple[Completion[Any], bool, Any]]) -> None:
    """Fill each completion with its value (``ok``) or exception, waking each loop once.

    A completion whose event loop has gone is skipped: its outcome has nobody to go to.
    """
    by_loop: dict[int, tuple[Any, list[Completion[Any]]]] = {}
    for completion, ok, value in outcomes:
        if ok:
            completion._value = value
        else:
            completion._error = value
        native = completion._native
        by_loop.setdefault(id(native), (native, []))[1].append(completion)
    for native, completions in by_loop.values():

        def wake_all(completions: list[Completion[Any]] = completions) -> None:
            for completion in completions:
                completion._wake()

        try:
            if isinstance(native, asyncio.AbstractEventLoop):
                native.call_soon_threadsafe(wake_all)
            else:
                native.run_sync_soon(wake_all)
        except RuntimeError:
            continue
