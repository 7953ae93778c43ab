"""SessionPool against a real SoftHSM2 token: lending and exhaustion, the pool's ownership of the
login, recovery from sessions and logins lost behind its back, clean returns, no session leaks,
PIN wiping and fork safety."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from kms_iface.errors import (
    CKR_OK,
    HsmError,
    InvalidRequestError,
    KeyHandleInvalidError,
    ObjectHandleInvalidError,
    PinIncorrectError,
    SessionHandleInvalidError,
    SessionPoolTimeoutError,
)
from kms_iface.pkcs11 import Mechanism, Module, Session, SessionPool
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11 import pool as pool_module
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.pkcs11.templates import aes_key_template, find_keys
from tests.conftest import count_objects

PLAINTEXT = b"kms_iface session pool test"
PRIVATE_KEY_LABEL = "pool-private-aes"
#: No object on the token has this handle.
BOGUS_HANDLE = 0x7FFF_FFF0
PUBLIC_STATES = (ck.CKS_RO_PUBLIC_SESSION, ck.CKS_RW_PUBLIC_SESSION)


# --- helpers ---------------------------------------------------------------------------------


def gcm() -> Mechanism:
    return Mechanism.aes_gcm(os.urandom(12))


def find_one(s: Session, label: str) -> int:
    handles = find_keys(s, label=label)
    assert len(handles) == 1, f"{len(handles)} objects labelled {label!r} are visible"
    return handles[0]


def round_trip(s: Session, label: str) -> bool:
    """Find the key by label, encrypt and decrypt with it: True when the plaintext came back."""
    key = find_one(s, label)
    mechanism = gcm()
    return bytes(s.decrypt(mechanism, key, s.encrypt(mechanism, key, PLAINTEXT))) == PLAINTEXT


def make_private_token_key(s: Session, label: str) -> int:
    return s.generate_key(ck.CKM_AES_KEY_GEN, aes_key_template(256, label=label))


def make_session_key(s: Session) -> int:
    return s.generate_key(ck.CKM_AES_KEY_GEN, aes_key_template(256, token=False))


def destroy_labelled(s: Session, label: str) -> None:
    for handle in find_keys(s, label=label):
        s.destroy_object(handle)


def random_bytes(s: Session) -> bytes:
    return s.generate_random(8)


def close_all_then_random(s: Session) -> bytes:
    """Loses every session of the slot, including ``s``, then uses ``s``."""
    s.library.close_all_sessions(s.slot_id)
    return s.generate_random(8)


def log_out_token(module: Module, slot: int) -> None:
    raw = module.open_session(slot)
    try:
        raw.logout()
    finally:
        raw.close()


def token_state(module: Module, slot: int) -> int:
    raw = module.open_session(slot)
    try:
        return raw.get_info().state
    finally:
        raw.close()


def in_threads(count: int, work: Callable[[], None]) -> None:
    """Run ``work`` in ``count`` threads at once; re-raise the first failure."""
    with ThreadPoolExecutor(count) as executor:
        for future in [executor.submit(work) for _ in range(count)]:
            future.result()


def run_in_child(work: Callable[[], None]) -> None:
    """Run ``work`` in a forked child; fail with the child's traceback if it raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            work()
            code = 0
        except BaseException:
            with contextlib.suppress(BaseException):
                os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the forked child failed:\n{report}"


class CountingCall:
    """A pool.call target that counts its runs."""

    def __init__(self, fn: Callable[[Session], bytes]) -> None:
        self._fn = fn
        self.runs = 0

    def __call__(self, s: Session) -> bytes:
        self.runs += 1
        return self._fn(s)


class _CkSessionInfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulong) for name in ("slot_id", "state", "flags", "device_error")]


class SessionProbe:
    """Asks the module itself, through its exported C functions, which session handles are open.

    SoftHSM2 numbers sessions 1, 2, 3... for the life of its initialisation (it never reuses a
    handle) and reports no session count, so the sessions a piece of work left open are the
    handles between a raw session opened before it and one opened after it that still answer
    C_GetSessionInfo. The probe shares the module instance loaded by kms_iface (same file).
    """

    def __init__(self, module: Module, slot: int) -> None:
        self._module = module
        self._slot = slot
        library = ctypes.CDLL(module.library.path)
        self._get_info = library.C_GetSessionInfo
        self._get_info.argtypes = [ctypes.c_ulong, ctypes.POINTER(_CkSessionInfo)]
        self._get_info.restype = ctypes.c_ulong
        self._close = library.C_CloseSession
        self._close.argtypes = [ctypes.c_ulong]
        self._close.restype = ctypes.c_ulong

    def next_handle(self) -> int:
        """The handle of a raw session opened (and closed) now."""
        raw = self._module.open_session(self._slot)
        raw.close()
        return raw.handle

    def open_among(self, handles: range) -> list[int]:
        info = _CkSessionInfo()
        return [h for h in handles if self._get_info(h, ctypes.byref(info)) == CKR_OK]

    def close(self, handles: list[int]) -> None:
        for handle in handles:
            self._close(handle)

    def assert_sees_a_leak(self) -> None:
        """The probe itself works: a session left open is seen, and no longer once closed."""
        before = self.next_handle()
        leaked = self._module.open_session(self._slot)
        assert self.open_among(range(before + 1, leaked.handle + 1)) == [leaked.handle]
        leaked.close()
        assert self.open_among(range(before + 1, leaked.handle + 1)) == []

    def left_open_by(self, work: Callable[[], None]) -> list[int]:
        """Run ``work``; the sessions it left open (closed here, after they were counted)."""
        before = self.next_handle()
        work()
        after = self.next_handle()
        assert after > before + 1, "the work opened no session"
        left_open = self.open_among(range(before + 1, after))
        self.close(left_open)
        return left_open


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def private_key(module: Module, slot: int, token: SoftHsmToken, pool: SessionPool) -> Iterator[str]:
    """A private AES-256 token key made through the pool; its label. It is destroyed through a
    session of its own, whatever state the test left the pool in."""
    pool.call(make_private_token_key, PRIVATE_KEY_LABEL, idempotent=False)
    yield PRIVATE_KEY_LABEL
    raw = module.open_session(slot)
    try:
        raw.login(ck.CKU_USER, token.user_pin.encode())
        destroy_labelled(raw, PRIVATE_KEY_LABEL)
    finally:
        raw.close()


@pytest.fixture
def probe(module: Module, slot: int) -> SessionProbe:
    return SessionProbe(module, slot)


# --- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "timeout"), [(0, 1.0), (-1, 1.0), (1, -0.5)], ids=["size0", "size-1", "timeout-neg"]
)
def test_bad_size_or_timeout_is_refused(
    module: Module, slot: int, token: SoftHsmToken, size: int, timeout: float
) -> None:
    with pytest.raises(InvalidRequestError):
        module.pool(slot, token.user_pin, size=size, timeout=timeout)


def test_wrong_pin_is_refused_and_changes_nothing(
    module: Module, slot: int, token: SoftHsmToken
) -> None:
    # No session may keep the token logged in: C_Login on a logged-in token answers
    # USER_ALREADY_LOGGED_IN without looking at the PIN.
    module.library.close_all_sessions(slot)
    objects = count_objects(module, slot, token.user_pin)
    with module.pool(slot, "0000", size=1) as pool:
        for _ in range(2):
            with pytest.raises(PinIncorrectError):
                pool.acquire()
        assert pool.open_sessions == 0
    assert count_objects(module, slot, token.user_pin) == objects


# --- lending ---------------------------------------------------------------------------------


def test_lease_lends_a_session_and_takes_it_back(
    module: Module, slot: int, token: SoftHsmToken
) -> None:
    with module.pool(slot, token.user_pin, size=2) as pool:
        assert (pool.open_sessions, pool.idle_sessions) == (0, 0)
        with pool.session() as first:
            assert (pool.open_sessions, pool.idle_sessions) == (1, 0)
            assert first.get_info().state == ck.CKS_RW_USER_FUNCTIONS
        assert (pool.open_sessions, pool.idle_sessions) == (1, 1)
        with pool.session() as again:
            assert again is first
        with pool.session() as one, pool.session() as two:
            assert one is not two
            assert (pool.open_sessions, pool.idle_sessions) == (2, 0)
        assert (pool.size, pool.open_sessions, pool.idle_sessions) == (2, 2, 2)


def test_exhausted_pool_times_out_and_a_released_session_goes_to_a_waiter(
    module: Module, slot: int, token: SoftHsmToken
) -> None:
    with module.pool(slot, token.user_pin, size=2) as pool:
        first, second = pool.acquire(), pool.acquire()
        with pytest.raises(SessionPoolTimeoutError) as timed_out:
            pool.acquire(timeout=0.2)
        assert isinstance(timed_out.value, HsmError)

        waiting = threading.Event()

        def wait_for_a_session() -> Session:
            waiting.set()
            return pool.acquire(timeout=30.0)

        with ThreadPoolExecutor(1) as executor:
            waiter = executor.submit(wait_for_a_session)
            waiting.wait()
            pool.release(first)
            assert waiter.result(timeout=30.0) is first
        assert pool.open_sessions == 2
        pool.release(first)
        pool.release(second)


def test_release_wakes_a_waiter_that_is_about_to_wait(
    module: Module, slot: int, token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    with module.pool(slot, token.user_pin, size=1, timeout=60.0) as pool:
        held = pool.acquire()
        in_window, released, served = threading.Event(), threading.Event(), threading.Event()

        class PausingClock:
            """The pool's clock; the waiter pauses in it while it holds the pool's lock,
            i.e. after it found no idle session and before it starts waiting."""

            @staticmethod
            def monotonic() -> float:
                if threading.current_thread() is waiter and pool._lock.locked():
                    in_window.set()
                    released.wait(1.0)
                return time.monotonic()

        def take_and_return() -> None:
            with contextlib.suppress(InvalidRequestError):
                pool.release(pool.acquire())
                served.set()

        monkeypatch.setattr(pool_module, "time", PausingClock)
        waiter = threading.Thread(target=take_and_return, daemon=True)
        waiter.start()
        try:
            assert in_window.wait(10.0), "the waiter never reached the pool's wait loop"
            pool.release(held)
            released.set()
            assert served.wait(3.0), "the released session did not wake the waiter"
        finally:
            pool.close()
            waiter.join()


# --- the login belongs to the pool -----------------------------------------------------------


def test_returning_or_closing_sessions_never_logs_out(
    module: Module, slot: int, token: SoftHsmToken, pool: SessionPool, private_key: str
) -> None:
    generation = pool.login_generation
    with pool.session() as s:
        s.close()
    with module.pool(slot, token.user_pin, size=2) as other:
        assert other.call(round_trip, private_key)
    with pool.session() as s:
        assert s.get_info().state == ck.CKS_RW_USER_FUNCTIONS
        assert round_trip(s, private_key)
    assert pool.login_generation == generation


def test_recovers_after_every_session_was_closed(
    module: Module, slot: int, pool: SessionPool, private_key: str
) -> None:
    generation = pool.login_generation
    module.library.close_all_sessions(slot)
    assert pool.call(round_trip, private_key)
    assert pool.login_generation > generation
    assert pool.open_sessions == 1


class PerLoginHandle:
    """A key handle looked up once per login. SoftHSM2 drops the handles of private objects
    at logout, so a handle found under one login is stale under the next."""

    def __init__(self, pool: SessionPool, label: str) -> None:
        self._pool = pool
        self._label = label
        self._handles: dict[int, int] = {}
        self.used: list[int] = []

    def encrypt(self, s: Session) -> bytes:
        generation = self._pool.login_generation
        if generation not in self._handles:
            self._handles[generation] = find_one(s, self._label)
        self.used.append(self._handles[generation])
        return s.encrypt(gcm(), self._handles[generation], PLAINTEXT)


def test_recovers_from_a_logout_behind_its_back(
    module: Module, slot: int, pool: SessionPool, private_key: str
) -> None:
    key = PerLoginHandle(pool, private_key)
    pool.call(key.encrypt)
    generation = pool.login_generation
    log_out_token(module, slot)
    assert len(pool.call(key.encrypt)) == len(PLAINTEXT) + 16
    assert pool.login_generation == generation + 2  # one login (counted before and after)
    assert len(key.used) == 3
    assert key.used[1] == key.used[0], "the first try after the logout used the old handle"


def test_user_not_logged_in_triggers_one_relogin(
    module: Module, slot: int, pool: SessionPool
) -> None:
    pool.call(random_bytes)
    generation = pool.login_generation
    log_out_token(module, slot)
    pool.call(make_session_key)
    assert pool.login_generation == generation + 2  # one login (counted before and after)


# --- retries ---------------------------------------------------------------------------------


def test_non_idempotent_call_is_not_retried_after_a_lost_session(
    module: Module, slot: int, pool: SessionPool
) -> None:
    pool.call(random_bytes)
    module.library.close_all_sessions(slot)
    call = CountingCall(random_bytes)
    with pytest.raises(SessionHandleInvalidError):
        pool.call(call, idempotent=False)
    assert call.runs == 1
    assert len(pool.call(random_bytes)) == 8


def test_idempotent_call_is_retried_once_after_a_lost_session(
    module: Module, slot: int, pool: SessionPool
) -> None:
    pool.call(random_bytes)
    module.library.close_all_sessions(slot)
    call = CountingCall(random_bytes)
    assert len(pool.call(call)) == 8
    assert call.runs == 2


def test_idempotent_call_is_retried_only_once(pool: SessionPool) -> None:
    call = CountingCall(close_all_then_random)
    with pytest.raises(SessionHandleInvalidError):
        pool.call(call)
    assert call.runs == 2
    assert len(pool.call(random_bytes)) == 8


# --- sessions come back clean ----------------------------------------------------------------


def cbc() -> Mechanism:
    return Mechanism.aes_cbc(os.urandom(16), pad=True)


def abandon_by_release(pool: SessionPool, key: int) -> Session:
    s = pool.acquire()
    s.encrypt_init(cbc(), key)
    s.encrypt_update(bytes(20))
    pool.release(s)
    return s


def abandon_by_exception(pool: SessionPool, key: int) -> Session:
    with pytest.raises(LookupError), pool.session() as s:
        s.encrypt_init(cbc(), key)
        s.encrypt_update(bytes(20))
        raise LookupError
    return s


def abandon_in_call(pool: SessionPool, key: int) -> Session:
    lent: list[Session] = []

    def start_and_fail(s: Session) -> None:
        lent.append(s)
        s.encrypt_init(cbc(), key)
        raise LookupError

    with pytest.raises(LookupError):
        pool.call(start_and_fail)
    return lent[0]


@pytest.mark.parametrize("abandon", [abandon_by_release, abandon_by_exception, abandon_in_call])
def test_session_with_an_active_operation_comes_back_clean(
    module: Module,
    slot: int,
    token: SoftHsmToken,
    abandon: Callable[[SessionPool, int], Session],
) -> None:
    with module.pool(slot, token.user_pin, size=1) as pool:
        key = pool.call(make_session_key)
        abandoned = abandon(pool, key)
        assert not abandoned.operation_active
        with pool.session() as s:
            assert s is abandoned
            s.encrypt_init(cbc(), key)
            assert len(s.encrypt_final()) == 16


# --- no leaks --------------------------------------------------------------------------------


def churn(pool: SessionPool, label: str, rounds: int) -> None:
    """Successful calls, failing calls and abandoned operations."""
    for _ in range(rounds):
        assert pool.call(round_trip, label)
        with pytest.raises((ObjectHandleInvalidError, KeyHandleInvalidError)):
            pool.call(Session.encrypt, gcm(), BOGUS_HANDLE, PLAINTEXT)
        with pytest.raises(LookupError), pool.session() as s:
            s.encrypt_init(gcm(), find_one(s, label))
            raise LookupError


def test_no_session_is_leaked(
    module: Module, slot: int, token: SoftHsmToken, probe: SessionProbe
) -> None:
    label = "pool-leak-aes"

    def workload() -> None:
        with module.pool(slot, token.user_pin, size=4, timeout=30.0) as pool:
            pool.call(make_private_token_key, label, idempotent=False)
            module.library.close_all_sessions(slot)
            assert pool.call(round_trip, label)
            for _ in range(2):
                in_threads(4, lambda: churn(pool, label, 25))
            pool.call(destroy_labelled, label)
            lent = pool.acquire()
        pool.release(lent)

    probe.assert_sees_a_leak()
    assert probe.left_open_by(workload) == []
    assert token_state(module, slot) in PUBLIC_STATES, "closing the pool did not end the login"


def test_threads_recover_together_after_every_session_was_closed(
    module: Module, slot: int, token: SoftHsmToken
) -> None:
    threads = 8
    with module.pool(slot, token.user_pin, size=threads, timeout=30.0) as pool:
        for s in [pool.acquire() for _ in range(threads)]:
            pool.release(s)
        module.library.close_all_sessions(slot)
        start = threading.Barrier(threads)

        def recover() -> None:
            start.wait()
            for _ in range(3):
                assert len(pool.call(random_bytes)) == 8

        in_threads(threads, recover)
        assert pool.open_sessions <= threads
    # Leave no stray logged-in session behind for later tests.
    module.library.close_all_sessions(slot)


# --- closing ---------------------------------------------------------------------------------


def test_close_wipes_the_pin_and_refuses_new_work(
    module: Module, slot: int, token: SoftHsmToken
) -> None:
    pool = module.pool(slot, token.user_pin, size=1)
    pool.call(random_bytes)
    pin = pool._pin
    assert pin is not None
    assert not pin.zeroized
    pool.close()
    assert pin.zeroized
    assert (pool.open_sessions, pool.idle_sessions) == (0, 0)
    with pytest.raises(InvalidRequestError):
        pool.acquire()
    pool.close()


# --- fork ------------------------------------------------------------------------------------


def test_fork_child_reinitialises_and_never_uses_the_parents_sessions(
    module: Module, slot: int, token: SoftHsmToken, pool: SessionPool, private_key: str
) -> None:
    held = pool.acquire()

    def child() -> None:
        assert held.stale
        raw = [module.open_session(slot)]
        while raw[-1].handle < held.handle:
            raw.append(module.open_session(slot))
        assert raw[-1].handle == held.handle, "the parent's session handle is not in use here"
        raw[-1].get_info()
        with pytest.raises(SessionHandleInvalidError):
            held.get_info()
        for s in raw:
            s.close()
        with module.pool(slot, token.user_pin, size=2) as fresh:
            assert fresh.call(round_trip, private_key)
        assert pool.call(round_trip, private_key)
        lent = [pool.acquire(timeout=1.0) for _ in range(pool.size)]
        for s in [*lent, held]:
            pool.release(s)

    run_in_child(child)
    assert not held.stale
    assert held.get_info().state == ck.CKS_RW_USER_FUNCTIONS
    pool.release(held)
    assert pool.call(round_trip, private_key)


def test_a_dropped_raw_session_is_closed(module: Module, slot: int) -> None:
    probe = SessionProbe(module, slot)
    probe.assert_sees_a_leak()
    before = probe.next_handle()
    dropped = module.open_session(slot)
    handle = dropped.handle
    del dropped
    gc.collect()
    assert probe.open_among(range(before + 1, handle + 1)) == []
