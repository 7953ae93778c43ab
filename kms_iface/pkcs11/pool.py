"""A bounded, thread-safe pool of logged-in sessions for one slot.

The pool owns the token's login: it logs in once, keeps one *anchor* session open for the life of
the login (closing a token's last session logs it out), and never calls ``C_Logout`` when a
session comes back. A session is lent to one thread at a time and returns only with no operation
active. Sessions that the module reports lost (or that hold an operation nothing could end:
CKR_OPERATION_ACTIVE) are discarded; ``call`` retries an idempotent operation once on a fresh,
logged-in session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final, TypeVar

from kms_iface._pkcs11 import SecretBytes, Session
from kms_iface.errors import (
    CKR_OPERATION_ACTIVE,
    LOGIN_LOST_CODES,
    SESSION_LOST_CODES,
    STALE_HANDLE_CODES,
    HsmError,
    InvalidRequestError,
    SessionPoolTimeoutError,
)
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11._closing import Closing

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from kms_iface.pkcs11.module import Module

__all__ = ["DEFAULT_POOL_CAP", "SessionPool"]

_log = logging.getLogger(__name__)


def _close(session: Session) -> None:
    """Close a session the pool gives up; a module that fails to is asked once more (a session
    left open counts against the token's limit), and a second failure is logged."""
    for attempt in (1, 2):
        try:
            session.close()
            return
        except HsmError as exc:
            if session.closed:
                return  # lost anyway
            if attempt == 2:
                _log.warning(
                    "could not close a session of slot %s (%s): it stays open on the token",
                    session.slot_id,
                    exc.rv_name,
                )


T = TypeVar("T")

#: Upper bound on pooled sessions per slot when the token allows more (or any number).
DEFAULT_POOL_CAP: Final = 16
_PUBLIC_STATES: Final = frozenset({ck.CKS_RO_PUBLIC_SESSION, ck.CKS_RW_PUBLIC_SESSION})
_EFFECTIVELY_INFINITE: Final = frozenset(
    {ck.CK_EFFECTIVELY_INFINITE, ck.CK_UNAVAILABLE_INFORMATION}
)
_RW_SERIAL: Final = ck.CKF_RW_SESSION | ck.CKF_SERIAL_SESSION

_pools: weakref.WeakSet[SessionPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._forget_all()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Reservation:
    """A place held in the pool while a new session is being opened outside the lock."""

    __slots__ = ("generation",)

    def __init__(self, generation: int) -> None:
        self.generation = generation


class _Lease:
    """Context manager lending one session; it goes back (or is discarded) on exit."""

    __slots__ = ("_pool", "_session", "_timeout")

    def __init__(self, pool: SessionPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._session: Session | None = None

    def __enter__(self) -> Session:
        self._session = self._pool.acquire(self._timeout)
        return self._session

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        if isinstance(exc, HsmError) and self._pool._recover(session, exc):
            return
        self._pool.release(session)


class SessionPool(Closing):
    """Sessions of one slot, logged in once with ``pin`` (``None``: no login, public objects).

    ``size`` bounds the lent sessions; by default the token's maximum read-write session count
    (less the anchor) capped at ``DEFAULT_POOL_CAP``. ``timeout`` is how long ``acquire`` waits
    for a free session by default (``None``: forever). The PIN is copied into a wipeable buffer
    and wiped by ``close()``.
    """

    def __init__(
        self,
        module: Module,
        slot_id: int,
        pin: Buffer | str | None,
        *,
        size: int | None = None,
        timeout: float | None = 30.0,
        user_type: int = ck.CKU_USER,
    ) -> None:
        if size is not None and size < 1:
            raise InvalidRequestError(f"pool size must be at least 1, got {size}")
        if timeout is not None and timeout < 0:
            raise InvalidRequestError(f"pool timeout must not be negative, got {timeout}")
        self.module = module
        self.slot_id = slot_id
        self.timeout = timeout
        self.user_type = user_type
        self._pin: SecretBytes | None = None
        if pin is not None:
            self._pin = SecretBytes(pin.encode() if isinstance(pin, str) else pin)
        self._requested_size = size
        self._size = 0
        self._idle: deque[Session] = deque()
        self._members: dict[Session | _Reservation, int] = {}
        self._generation = 0
        self._anchor: Session | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._login_lock = threading.Lock()
        self._waiters = 0
        self._closed = False
        self.login_generation = 0
        """Moves twice per login, before the C_Login and after it: a handle cache keyed to it is
        cleared, and a search that overlapped a login in any way can tell."""
        _pools.add(self)

    def __repr__(self) -> str:
        return (
            f"<SessionPool slot={self.slot_id} size={self._size} open={len(self._members)} "
            f"idle={len(self._idle)}{' closed' if self._closed else ''}>"
        )

    @property
    def size(self) -> int:
        """The bound on lent sessions (0 until the pool has started)."""
        return self._size

    @property
    def open_sessions(self) -> int:
        """Sessions the pool holds, lent or idle, not counting the anchor."""
        return len(self._members)

    @property
    def idle_sessions(self) -> int:
        return len(self._idle)

    # -- lending -----------------------------------------------------------------------------

    def session(self, timeout: float | None = -1.0) -> _Lease:
        """``with pool.session() as s:`` lends a session for the block (``timeout`` as for
        ``acquire``)."""
        return _Lease(self, self.timeout if timeout == -1.0 else timeout)

    def acquire(self, timeout: float | None = -1.0) -> Session:
        """Take a session; ``release`` it (or use ``session()``). Waits at most ``timeout``
        seconds (left out: the pool's ``timeout``; ``None``: forever)."""
        idle = self._idle
        while idle:
            try:
                session = idle.pop()
            except IndexError:
                break
            if not session.stale:
                return session
            self._forget(session)
        return self._acquire_slow(self.timeout if timeout == -1.0 else timeout)

    def _acquire_slow(self, timeout: float | None) -> Session:
        if self._closed:
            raise InvalidRequestError(f"the session pool of slot {self.slot_id} is closed")
        if self._size == 0:
            self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            # Counted as a waiter before looking at the idle sessions: a release that does not
            # see this count appended before the look, so the look finds its session.
            self._waiters += 1
            try:
                room = self._wait_for_room(deadline, timeout)
            finally:
                self._waiters -= 1
            if isinstance(room, Session):
                return room
        try:
            session = self._open_logged_in()
        except BaseException:
            with self._cond:
                self._members.pop(room, None)
                self._cond.notify()
            raise
        with self._cond:
            self._members.pop(room, None)
            if room.generation == self._generation:
                self._members[session] = room.generation
                return session
        _close(session)
        return self._acquire_slow(timeout)

    def _wait_for_room(
        self, deadline: float | None, timeout: float | None
    ) -> Session | _Reservation:
        """Under the lock: an idle session, or a reserved place for a new one."""
        while True:
            if self._idle:
                session = self._idle.pop()
                if not session.stale:
                    return session
                self._members.pop(session, None)
                continue
            if self._closed:
                raise InvalidRequestError(f"the session pool of slot {self.slot_id} is closed")
            if len(self._members) < self._size:
                room = _Reservation(self._generation)
                self._members[room] = room.generation
                return room
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise SessionPoolTimeoutError(
                    f"no session of slot {self.slot_id} became free within {timeout} s "
                    f"(pool size {self._size})"
                )
            self._cond.wait(remaining)

    def release(self, session: Session) -> None:
        """Give a session back. An open operation is cancelled first; a session that cannot be
        cleaned, is stale, or belongs to an older generation is dropped instead."""
        if session.operation_active:
            try:
                session.cancel()
            except HsmError:
                self._discard(session, close=True)
                return
        if self._members.get(session) != self._generation or session.stale:
            self._forget(session)  # its handle died with the slot's sessions; never close it
            return
        if self._closed or session.closed:
            self._discard(session, close=True)
            return
        self._idle.append(session)
        if self._waiters:
            with self._cond:
                self._cond.notify()

    def call(
        self, fn: Callable[..., T], /, *args: object, idempotent: bool = True, **kwargs: object
    ) -> T:
        """Run ``fn(session, *args, **kwargs)`` on a lent session.

        If the session or the login was lost, the pool recovers (new session, new login) and,
        for an idempotent ``fn``, runs it once more. A non-idempotent one (key generation) is
        never repeated: its error is raised after recovery.
        """
        session = self.acquire()
        try:
            result = fn(session, *args, **kwargs)
        except HsmError as exc:
            if not self._recover(session, exc):
                self.release(session)
                raise
            if not idempotent:
                raise
        except BaseException:
            self.release(session)
            raise
        else:
            self.release(session)
            return result
        with self.session() as retry:
            return fn(retry, *args, **kwargs)

    # -- recovery ----------------------------------------------------------------------------

    def _recover(self, session: Session, exc: HsmError) -> bool:
        """Handle a lost session or login; True when ``session`` was consumed by the recovery."""
        if exc.rv == CKR_OPERATION_ACTIVE:
            # An operation the core could not end (a module that keeps it open after an
            # error, or a quirk): closing the session is the only sure way to end it.
            self._discard(session, close=True)
            return True
        if exc.rv in SESSION_LOST_CODES:
            self._discard(session, close=False)
            self._check_anchor()
            return True
        if exc.rv in LOGIN_LOST_CODES:
            self.release(session)
            self._login(force=True)
            return True
        if exc.rv in STALE_HANDLE_CODES and self._token_is_public():
            self.release(session)
            self._login(force=True)
            return True
        return False

    def _token_is_public(self) -> bool:
        """True when the login is gone (a logout behind the pool's back hides private
        objects, which then answer OBJECT/KEY_HANDLE_INVALID instead of USER_NOT_LOGGED_IN)."""
        anchor = self._anchor
        if self._pin is None or anchor is None or anchor.stale:
            return False
        try:
            return anchor.get_info().state in _PUBLIC_STATES
        except HsmError:
            # Unknown (a second failure): the caller keeps its session and raises its error;
            # raising here would lose that session from the pool's count.
            return False

    def _check_anchor(self) -> None:
        """After a lost session: is the anchor gone too? If an idle session went with it (a
        device reboot), every session of the slot is gone; if only the anchor went (an HSM
        that drops idle sessions), a new anchor replaces it and the other sessions stay."""
        with self._login_lock:
            anchor = self._anchor
            if anchor is None:
                return
            if not anchor.stale:
                try:
                    anchor.get_info()
                    return
                except HsmError as exc:
                    if exc.rv not in SESSION_LOST_CODES:
                        return  # unknown: the next lost session asks again
            if self._an_idle_session_lives():
                self._anchor = None
                with contextlib.suppress(HsmError):  # else the next new session makes one
                    self._ensure_anchor()
                return
            with self._cond:
                self._generation += 1
                self._idle.clear()
                self._members.clear()
                self._anchor = None
                self._cond.notify_all()

    def _an_idle_session_lives(self) -> bool:
        """Ask the longest-idle session whether it is still open (False when none is idle, or
        on any error: then the slot is treated as rebooted, the safe side). The oldest one is
        asked because a session opened since a reboot would say yes."""
        with self._cond:
            probe = self._idle.popleft() if self._idle else None
        if probe is None:
            return False
        try:
            probe.get_info()
        except HsmError:
            self._forget(probe)
            return False
        with self._cond:
            self._idle.appendleft(probe)
            self._cond.notify()
        return True

    def _discard(self, session: Session, *, close: bool) -> None:
        with self._cond:
            self._members.pop(session, None)
            self._cond.notify()
        if close:
            _close(session)

    def _forget(self, session: Session) -> None:
        with self._cond:
            self._members.pop(session, None)
            self._cond.notify()

    def _forget_all(self) -> None:
        """In a forked child: the parent's sessions and login are not ours."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._login_lock = threading.Lock()
        self._waiters = 0
        self._idle.clear()
        self._members.clear()
        self._anchor = None
        self._generation += 1

    # -- login -------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._login_lock:
            if self._size:
                return
            info = self.module.token_info(self.slot_id)
            limit = info.max_rw_session_count
            size = self._requested_size or DEFAULT_POOL_CAP
            if limit not in _EFFECTIVELY_INFINITE:
                size = min(size, max(1, limit - 1))
            self._ensure_anchor()
            self._size = size

    def _ensure_anchor(self) -> Session:
        anchor = self._anchor
        if anchor is None or anchor.stale or anchor.closed:
            anchor = self.module.library.open_session(self.slot_id, _RW_SERIAL)
            self._anchor = anchor
            self._login_on(anchor)
        return anchor

    def _open_logged_in(self) -> Session:
        with self._login_lock:
            self._ensure_anchor()
        session = self.module.library.open_session(self.slot_id, _RW_SERIAL)
        try:
            if self._pin is not None and session.get_info().state in _PUBLIC_STATES:
                with self._login_lock:
                    self._login_on(session)
        except BaseException:
            _close(session)  # quietly: the first error is the one to report
            raise
        return session

    def _login_on(self, session: Session) -> None:
        if self._pin is None:
            return
        self.login_generation += 1
        try:
            session.login(self.user_type, self._pin)
        finally:
            self.login_generation += 1

    def _login(self, *, force: bool) -> None:
        with self._login_lock:
            anchor = self._ensure_anchor()
            if force or anchor.get_info().state in _PUBLIC_STATES:
                self._login_on(anchor)

    # -- life cycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close every idle session and the anchor (which ends the login); idempotent.
        Sessions still lent are closed when they come back."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            for session in idle:
                self._members.pop(session, None)
            anchor, self._anchor = self._anchor, None
            self._cond.notify_all()
        for session in [*idle, *([anchor] if anchor is not None else [])]:
            if not session.stale:
                _close(session)
        if self._pin is not None:
            self._pin.zeroize()
