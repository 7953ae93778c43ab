"""Driver scenarios run in a subprocess of their own against the fault-injecting PKCS#11 module.

``python tests/fault_scenarios.py NAME`` runs one scenario; a failed assertion exits non-zero.
The environment carries the module (``FAULT_PKCS11_LIB``), the module it wraps
(``FAULT_PKCS11_TARGET``), the control file (``FAULT_PKCS11_FILE``), ``SOFTHSM2_CONF`` and the
token's label and PIN (``FAULT_TOKEN_LABEL``, ``FAULT_TOKEN_PIN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import functools
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

from kms_iface import CryptoAlgorithm, HsmKeyAlgorithm
from kms_iface.errors import (
    CKR_BUFFER_TOO_SMALL,
    CKR_DEVICE_ERROR,
    CKR_DEVICE_REMOVED,
    CKR_FUNCTION_FAILED,
    CKR_GENERAL_ERROR,
    CKR_SESSION_CLOSED,
    CKR_SESSION_HANDLE_INVALID,
    CKR_TOKEN_NOT_PRESENT,
    CKR_USER_NOT_LOGGED_IN,
    SESSION_LOST_CODES,
    HsmError,
    HsmTimeoutError,
    InterfaceError,
    InvalidRequestError,
)
from kms_iface.pkcs11 import Mechanism, Module, Session, SessionPool
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.templates import aes_key_template, find_keys
from kms_iface.pkcs11_hsm import Pkcs11Hsm

LIB = os.environ.get("FAULT_PKCS11_LIB", "")
CONTROL = Path(os.environ.get("FAULT_PKCS11_FILE", "/nonexistent"))
LABEL = os.environ.get("FAULT_TOKEN_LABEL", "kms-iface-test")
PIN = os.environ.get("FAULT_TOKEN_PIN", "1234")
PLAINTEXT = b"fault injection plaintext"

CODES: dict[str, int] = {
    "DEVICE_ERROR": CKR_DEVICE_ERROR,
    "SESSION_HANDLE_INVALID": CKR_SESSION_HANDLE_INVALID,
    "SESSION_CLOSED": CKR_SESSION_CLOSED,
    "DEVICE_REMOVED": CKR_DEVICE_REMOVED,
    "TOKEN_NOT_PRESENT": CKR_TOKEN_NOT_PRESENT,
    "USER_NOT_LOGGED_IN": CKR_USER_NOT_LOGGED_IN,
    "FUNCTION_FAILED": CKR_FUNCTION_FAILED,
    "BUFFER_TOO_SMALL": CKR_BUFFER_TOO_SMALL,
    "GENERAL_ERROR": CKR_GENERAL_ERROR,
}
"""The codes injected; those in SESSION_LOST_CODES or USER_NOT_LOGGED_IN are recovered."""

_last_mtime = 0


def set_faults(spec: str) -> None:
    """Write the control file (with a strictly newer mtime, so the module reloads it and
    restarts its counters even when the text is unchanged)."""
    global _last_mtime
    CONTROL.write_text(spec + "\n")
    _last_mtime = max(_last_mtime + 1_000_000, time.time_ns())
    os.utime(CONTROL, ns=(_last_mtime, _last_mtime))


@contextmanager
def faults(spec: str) -> Iterator[None]:
    set_faults(spec)
    try:
        yield
    finally:
        set_faults("")


def open_pool(size: int = 4) -> tuple[Module, int, SessionPool]:
    module = Module(LIB)
    slot = module.find_slot(LABEL)
    return module, slot, module.pool(slot, PIN, size=size, timeout=20.0)


def module_sessions(module: Module, slot: int) -> int:
    """Sessions open through the fault module (it reports its own count in token info)."""
    return module.token_info(slot).session_count


def make_key(pool: SessionPool, label: str) -> str:
    """A token AES key labelled ``label``; returns the label."""
    template = aes_key_template(256, token=True, label=label, key_id=label.encode())
    with pool.session() as s:
        s.generate_key(ck.CKM_AES_KEY_GEN, template)
    return label


def encrypt_decrypt(s: Session, label: str) -> bytes:
    """Find the key labelled ``label`` (handles die with a reboot), encrypt then decrypt
    PLAINTEXT with it; the plaintext that came back."""
    (key,) = find_keys(s, label=label)
    iv = os.urandom(12)
    ct = s.encrypt(Mechanism.aes_gcm(iv), key, PLAINTEXT)
    with s.decrypt(Mechanism.aes_gcm(iv), key, ct) as plain:
        return bytes(plain)


def check_sessions(module: Module, slot: int, pool: SessionPool) -> None:
    """The module's open sessions are the pool's plus its anchor: nothing leaked."""
    opened = module_sessions(module, slot)
    assert opened == pool.open_sessions + 1, f"{opened} sessions open, pool: {pool!r}"
    assert pool.open_sessions <= pool.size


# -- scenarios ---------------------------------------------------------------------------------


def scenario_error_codes() -> None:
    """Each code on C_Encrypt, once: lost sessions are dropped and the call retried; a lost login
    is restored and the call retried; other codes raise a typed error and keep the session."""
    module, slot, pool = open_pool()
    key = make_key(pool, f"codes-{uuid.uuid4()}")
    report: dict[str, str] = {}
    for name, rv in CODES.items():
        # pool.call: one transparent retry where the pool recovered.
        with pool.session() as s:
            before = s
        generation = pool.login_generation
        with faults(f"C_Encrypt:rv={name}:nth=1"):
            try:
                assert pool.call(encrypt_decrypt, key) == PLAINTEXT
                outcome = "retried"
            except HsmError as exc:
                assert exc.rv == rv, (name, exc)
                outcome = "raised"
        if rv in SESSION_LOST_CODES:
            assert outcome == "retried", name
            with pool.session() as s:
                assert s is not before, f"{name}: a lost session went back to the pool"
        elif rv == CKR_USER_NOT_LOGGED_IN:
            assert outcome == "retried", name
            assert pool.login_generation == generation + 2  # one login (counted before and after)
        elif rv == CKR_BUFFER_TOO_SMALL:
            # Once, with the length passed in: the core calls once more with that length.
            assert outcome == "retried", name
        else:
            assert outcome == "raised", name
            with pool.session() as s:
                assert s is before, f"{name}: a healthy session was dropped"
        check_sessions(module, slot, pool)
        # The lease (no retry): a lost session is discarded, the error raised.
        with faults(f"C_Decrypt:rv={name}:nth=1"):
            try:
                with pool.session() as s:
                    encrypt_decrypt(s, key)
                leased = "ok"
            except InterfaceError as exc:
                leased = type(exc).__name__
        assert (leased == "ok") == (rv == CKR_BUFFER_TOO_SMALL), (name, leased)
        with pool.session() as s:
            assert encrypt_decrypt(s, key) == PLAINTEXT
        check_sessions(module, slot, pool)
        report[name] = f"{outcome}/{leased}"
    print(json.dumps(report))
    pool.close()
    module.close()


def count_labelled(pool: SessionPool, label: str) -> int:
    with pool.session() as s:
        return len(find_keys(s, label=label))


def scenario_keygen_not_retried() -> None:
    """A key generation whose reply is lost (created, then SESSION_HANDLE_INVALID or
    DEVICE_ERROR) is not repeated: exactly one key; one refused before running makes none."""
    module, slot, pool = open_pool()

    def generate(s: Session, label: str) -> int:
        return s.generate_key(ck.CKM_AES_KEY_GEN, aes_key_template(256, label=label))

    for name in ("SESSION_HANDLE_INVALID", "USER_NOT_LOGGED_IN", "DEVICE_ERROR"):
        for post, expected in ((True, 1), (False, 0)):
            label = f"gen-{name}-{post}-{uuid.uuid4()}"
            option = ":post" if post else ""
            with faults(f"C_GenerateKey:rv={name}:nth=1{option}"):
                try:
                    pool.call(generate, label, idempotent=False)
                    raise AssertionError(f"{name}: the failed key generation was retried")
                except HsmError as exc:
                    assert exc.rv == CODES[name]
            assert count_labelled(pool, label) == expected, (name, post)
            check_sessions(module, slot, pool)
            assert pool.call(generate, f"{label}-after", idempotent=False)
    pool.close()
    module.close()


def scenario_reboot() -> None:
    """A device reboot (every session closed, login gone, old handles dead): the next call
    through the pool succeeds after a new login; sessions do not pile up."""
    module, slot, pool = open_pool()
    key = make_key(pool, f"reboot-{uuid.uuid4()}")
    for _ in range(3):
        for _ in range(3):  # several sessions in the pool
            pool.call(encrypt_decrypt, key)
        generation = pool.login_generation
        with faults("*:reboot:nth=1"):
            assert pool.call(encrypt_decrypt, key) == PLAINTEXT
        assert pool.login_generation > generation
        check_sessions(module, slot, pool)
        with faults("*:reboot:nth=1"):  # a reboot under a lease: the next lease works
            try:
                with pool.session() as s:
                    encrypt_decrypt(s, key)
            except HsmError as exc:
                assert exc.rv in SESSION_LOST_CODES, exc
        with pool.session() as s:
            assert encrypt_decrypt(s, key) == PLAINTEXT
        check_sessions(module, slot, pool)
    pool.close()
    assert module_sessions(module, slot) == 0
    module.close()


async def _hsm_reboot(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = f"hsm-reboot-{uuid.uuid4()}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, sensitive=True)
    for _ in range(3):
        sealed = await hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, PLAINTEXT)
        blob = (sealed.iv or b"") + sealed.ciphertext + (sealed.tag or b"")
        set_faults("*:reboot:nth=1")
        with await hsm.decrypt(slot, key_id, CryptoAlgorithm.AES_GCM, blob) as plain:
            assert plain == PLAINTEXT
        set_faults("")
        with await hsm.decrypt(slot, key_id, CryptoAlgorithm.AES_GCM, blob) as plain:
            assert plain == PLAINTEXT
    await hsm.delete(slot, key_id)


def scenario_hsm_reboot() -> None:
    """The async façade: a reboot between calls is invisible (re-login, handle cache dropped)."""
    with Module(LIB) as module:
        slot = module.find_slot(LABEL)
    hsm = Pkcs11Hsm(LIB, {slot: PIN}, profile="other", pool_size=4)
    try:
        asyncio.run(_hsm_reboot(hsm, slot))
        pool = hsm.slot_state(slot).pool
        check_sessions(hsm.module, slot, pool)
    finally:
        hsm.close()


def scenario_quirks() -> None:
    """Vendor quirks: attribute lengths larger than the buffer, CKR_BUFFER_TOO_SMALL forever or
    with absurd lengths, and GCM parameters scribbled over by the module."""
    module, slot, pool = open_pool()
    label = make_key(pool, f"quirks-{uuid.uuid4()}")
    with pool.session() as s:
        (key,) = find_keys(s, label=label)
        with faults("C_GetAttributeValue:attrlen=64"):
            try:
                values = s.get_attributes(key, [ck.CKA_LABEL, ck.CKA_ID, ck.CKA_VALUE_LEN])
                raise AssertionError(f"overlong attribute lengths were believed: {values}")
            except HsmError:
                pass
        with faults("C_GetAttributeValue:rv=BUFFER_TOO_SMALL"):  # forever, length unchanged
            try:
                s.get_attributes(key, [ck.CKA_LABEL])
                raise AssertionError("a CKR_BUFFER_TOO_SMALL loop returned a value")
            except HsmError:
                pass
        assert s.get_attributes(key, [ck.CKA_LABEL]) == [label.encode()]
    for function in ("C_Encrypt", "C_Decrypt"):
        for length in ("", ":len=0", ":len=1000000000000"):
            with faults(f"{function}:rv=BUFFER_TOO_SMALL{length}"):
                try:
                    pool.call(encrypt_decrypt, label)
                    raise AssertionError(f"{function}: a BUFFER_TOO_SMALL loop returned")
                except HsmError as exc:
                    assert exc.rv == CKR_BUFFER_TOO_SMALL, exc
            # Every session the pool keeps is clean: no operation left open.
            sessions = [pool.acquire(5.0) for _ in range(pool.size)]
            for s in sessions:
                pool.release(s)
            for _ in range(pool.size * 2):
                assert pool.call(encrypt_decrypt, label) == PLAINTEXT
            check_sessions(module, slot, pool)
    # Regression: after a resized C_Decrypt still failed, the single-part operation stayed open
    # in the module while the session looked clean (cancel ran C_DecryptFinal, which cannot end
    # it), so the session answered CKR_OPERATION_ACTIVE from then on.
    with pool.session() as s:
        (key,) = find_keys(s, label=label)
        iv = os.urandom(12)
        ct = s.encrypt(Mechanism.aes_gcm(iv), key, PLAINTEXT)
        with faults("C_Decrypt:rv=BUFFER_TOO_SMALL:len=0:nth=1"):
            try:
                s.decrypt(Mechanism.aes_gcm(iv), key, ct)
                raise AssertionError("a decrypt told twice its buffer was too small returned")
            except HsmError as exc:
                assert exc.rv == CKR_BUFFER_TOO_SMALL, exc
        assert not s.operation_active
        assert encrypt_decrypt(s, label) == PLAINTEXT  # the same session: nothing left open
    # Regression: a length no AES or RSA output can have is not allocated (it was, up to 16 GiB).
    with faults("C_Encrypt:rv=BUFFER_TOO_SMALL:len=8589934592:nth=1"):
        try:
            pool.call(encrypt_decrypt, label)
            raise AssertionError("an 8 GiB output was allocated for a 25-byte plaintext")
        except HsmError as exc:
            assert exc.rv == CKR_BUFFER_TOO_SMALL, exc
    assert pool.call(encrypt_decrypt, label) == PLAINTEXT
    check_sessions(module, slot, pool)
    # Regression: the module's writes into the GCM parameters leaked into a reused Mechanism.
    with faults("C_EncryptInit:scribble;C_DecryptInit:scribble"), pool.session() as s:
        (key,) = find_keys(s, label=label)
        iv = bytes(range(12))
        aad = b"header"
        mechanism = Mechanism.aes_gcm(iv, aad=aad)
        ct = s.encrypt(mechanism, key, PLAINTEXT)
        assert iv == bytes(range(12)) and aad == b"header", "caller's buffers written"
        ct2 = s.encrypt(mechanism, key, PLAINTEXT)  # the same Mechanism, reused
        assert ct2 == ct, "a reused Mechanism carried the module's scribbles"
        with s.decrypt(mechanism, key, ct) as plain:
            assert plain == PLAINTEXT
    pool.close()
    module.close()


async def _hsm_scribble(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = f"scribble-{uuid.uuid4()}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, sensitive=True)
    with faults("C_EncryptInit:scribble;C_DecryptInit:scribble"):
        for _ in range(3):
            sealed = await hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, PLAINTEXT)
            blob = (sealed.iv or b"") + sealed.ciphertext + (sealed.tag or b"")
            assert sealed.iv != bytes([0xA5]) * 12
            with await hsm.decrypt(slot, key_id, CryptoAlgorithm.AES_GCM, blob) as plain:
                assert plain == PLAINTEXT
        results = await asyncio.gather(
            *(hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, PLAINTEXT) for _ in range(40))
        )
    for sealed in results:  # the batched path (crypt_many) too
        blob = (sealed.iv or b"") + sealed.ciphertext + (sealed.tag or b"")
        with await hsm.decrypt(slot, key_id, CryptoAlgorithm.AES_GCM, blob) as plain:
            assert plain == PLAINTEXT
    await hsm.delete(slot, key_id)


def scenario_hsm_scribble() -> None:
    """The façade's AES-GCM (single and batched) returns the IV it used, whatever the module
    writes into the parameters."""
    with Module(LIB) as module:
        slot = module.find_slot(LABEL)
    hsm = Pkcs11Hsm(LIB, {slot: PIN}, profile="other", pool_size=4)
    try:
        asyncio.run(_hsm_scribble(hsm, slot))
    finally:
        hsm.close()


def scenario_recovery_failure_keeps_count() -> None:
    """Regression: a stale-handle error whose recovery check itself fails (C_GetSessionInfo on
    the anchor) used to lose the session from the pool's count, until the pool ran dry."""
    module, slot, pool = open_pool(size=2)
    label = make_key(pool, f"stale-{uuid.uuid4()}")
    for _ in range(pool.size + 1):
        with faults("C_EncryptInit:rv=0x82:nth=1;C_GetSessionInfo:rv=DEVICE_ERROR"):
            try:
                pool.call(encrypt_decrypt, label)
            except HsmError as exc:
                assert exc.rv == 0x82, exc
    sessions = [pool.acquire(2.0) for _ in range(pool.size)]  # no SessionPoolTimeoutError
    for s in sessions:
        pool.release(s)
    check_sessions(module, slot, pool)
    pool.close()
    module.close()


def scenario_anchor_dropped() -> None:
    """Regression: an HSM that drops only the pool's idle anchor session (as network HSMs drop
    idle sessions) made the pool forget its other sessions, still open on the token (a leak).
    Now a live idle session shows it was not a reboot: only the anchor is replaced."""
    module, slot, pool = open_pool(size=4)
    label = make_key(pool, f"anchor-{uuid.uuid4()}")
    sessions = [pool.acquire(2.0) for _ in range(pool.size)]
    for session in sessions:
        pool.release(session)
    check_sessions(module, slot, pool)
    # C_Encrypt loses its session; the pool then asks the anchor (C_GetSessionInfo), which is
    # lost too; the idle sessions are alive.
    with faults(
        "C_Encrypt:rv=SESSION_HANDLE_INVALID:nth=1;C_GetSessionInfo:rv=SESSION_HANDLE_INVALID:nth=1"
    ):
        assert pool.call(encrypt_decrypt, label) == PLAINTEXT
    check_sessions(module, slot, pool)
    assert pool.open_sessions == pool.size - 1  # only the lost one is gone
    assert pool.call(encrypt_decrypt, label) == PLAINTEXT
    pool.close()
    assert module_sessions(module, slot) == 0
    module.close()


def scenario_close_failure_retried() -> None:
    """Regression: a C_CloseSession that failed (DEVICE_ERROR) marked the session closed, and
    the pool gave it up: it stayed open on the token. Now the session stays open after such a
    failure, and the pool asks the module once more."""
    module, slot, pool = open_pool(size=1)
    raw = module.library.open_session(slot, ck.CKF_SERIAL_SESSION)
    before = module_sessions(module, slot)
    with faults("C_CloseSession:rv=DEVICE_ERROR:nth=1"):
        try:
            raw.close()
            raise AssertionError("a failed C_CloseSession did not raise")
        except HsmError as exc:
            assert exc.rv == CKR_DEVICE_ERROR, exc
        assert not raw.closed
        raw.close()
    assert raw.closed and module_sessions(module, slot) == before - 1
    # The pool closes a session with an operation it cannot end (the find left open by a failed
    # C_FindObjectsFinal): its first C_CloseSession fails, the second closes it.
    label = make_key(pool, f"close-{uuid.uuid4()}")
    with faults("C_FindObjectsFinal:rv=DEVICE_ERROR:nth=1;C_CloseSession:rv=DEVICE_ERROR:nth=1"):
        with contextlib.suppress(HsmError):
            pool.call(encrypt_decrypt, label)
        assert pool.call(encrypt_decrypt, label) == PLAINTEXT
    check_sessions(module, slot, pool)
    pool.close()
    assert module_sessions(module, slot) == 0
    module.close()


def scenario_operation_active_closes_session() -> None:
    """Regression: a session whose module keeps an operation open after an error (here a
    C_FindObjectsFinal that failed) is closed, not lent again, and the call retried."""
    module, slot, pool = open_pool(size=1)
    label = make_key(pool, f"active-{uuid.uuid4()}")
    with faults("C_FindObjectsFinal:rv=DEVICE_ERROR:nth=1"):
        try:
            pool.call(encrypt_decrypt, label)
        except HsmError as exc:
            assert exc.rv == CKR_DEVICE_ERROR, exc
        # The one session still has the find open in SoftHSM2: the pool closes it and retries.
        assert pool.call(encrypt_decrypt, label) == PLAINTEXT
        assert pool.call(encrypt_decrypt, label) == PLAINTEXT
    check_sessions(module, slot, pool)
    pool.close()
    module.close()


async def _hsm_logged_out(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = f"logout-{uuid.uuid4()}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, sensitive=True)
    sealed = await hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, PLAINTEXT)
    blob = (sealed.iv or b"") + sealed.ciphertext + (sealed.tag or b"")
    for _ in range(3):
        hsm.slot_state(slot).evict_ids(key_id.encode())  # not cached: looked up by id
        with faults("C_GetSessionInfo:rv=USER_NOT_LOGGED_IN:nth=1"):  # logs the token out
            raw = hsm.module.open_session(slot)
            with contextlib.suppress(HsmError):
                raw.get_info()
            raw.close()
        # The token is logged out: the key is hidden, yet it exists.
        with await hsm.decrypt(slot, key_id, CryptoAlgorithm.AES_GCM, blob) as plain:
            assert plain == PLAINTEXT
        assert await hsm.get_key_type(slot, key_id) is not None
    await hsm.delete(slot, key_id)


def scenario_hsm_not_found_after_logout() -> None:
    """Regression: after the login was lost behind the façade's back, a key looked up by id
    was reported "Object not found" (private keys are hidden) instead of logging in again."""
    with Module(LIB) as module:
        slot = module.find_slot(LABEL)
    hsm = Pkcs11Hsm(LIB, {slot: PIN}, profile="other", pool_size=2)
    try:
        asyncio.run(_hsm_logged_out(hsm, slot))
    finally:
        hsm.close()


async def _timed_out(call: Callable[[], Any]) -> HsmTimeoutError:
    try:
        await call()
    except HsmTimeoutError as exc:
        return exc
    raise AssertionError("a delayed call returned within the call timeout")


async def _record(errors: dict[str, HsmTimeoutError], name: str, call: Callable[[], Any]) -> None:
    """``errors[name]``: the HsmTimeoutError ``call`` must raise."""
    errors[name] = await _timed_out(call)


async def _until_busy(hsm: Pkcs11Hsm, slot: int) -> None:
    """Wait (under a watchdog) until one of the slot's workers runs a job."""
    dispatcher = hsm.slot_state(slot).dispatcher
    with anyio.fail_after(30):
        while not dispatcher._busy:
            await anyio.sleep(0.001)


async def _until_idle(hsm: Pkcs11Hsm, slot: int) -> None:
    """Wait (under a watchdog) until the slot's workers have finished the delayed calls."""
    dispatcher = hsm.slot_state(slot).dispatcher
    with anyio.fail_after(60):
        while dispatcher._busy:
            await anyio.sleep(0.01)


async def _call_timeout(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = f"timeout-{uuid.uuid4()}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, sensitive=True)
    sealed = await hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, PLAINTEXT)
    blob = (sealed.iv or b"") + sealed.ciphertext + (sealed.tag or b"")
    state = hsm.slot_state(slot)
    sessions = state.pool.open_sessions
    errors: dict[str, HsmTimeoutError] = {}
    record = functools.partial(_record, errors)

    # The single worker hangs in C_Encrypt for 4 s: its caller gives up after 1 s (the call is
    # running: started), and so does a decrypt queued behind it (never started: dropped).
    with faults("C_Encrypt:delay=4000:nth=1"):
        async with anyio.create_task_group() as group:
            group.start_soon(
                record,
                "running",
                lambda: hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, b"delayed"),
            )
            await _until_busy(hsm, slot)
            group.start_soon(
                record,
                "queued",
                lambda: hsm.decrypt(slot, key_id, CryptoAlgorithm.AES_GCM, blob),
            )
        assert errors["running"].started and "may yet take effect" in str(errors["running"])
        assert not errors["queued"].started and "nothing was done" in str(errors["queued"])
        await _until_idle(hsm, slot)
        # The worker came back with its session: the next calls run, nothing leaked.
        with await hsm.decrypt(slot, key_id, CryptoAlgorithm.AES_GCM, blob) as plain:
            assert plain == PLAINTEXT
        assert state.pool.open_sessions == sessions
        check_sessions(hsm.module, slot, state.pool)

    # A key generation that times out may still happen: the error says so, and it did.
    late_id = f"timeout-late-{uuid.uuid4()}"
    with faults("C_GenerateKey:delay=3000:nth=1"):
        error = await _timed_out(
            lambda: hsm.create_key(slot, late_id, HsmKeyAlgorithm.AES, 256, sensitive=True)
        )
        assert error.started, error
        await _until_idle(hsm, slot)
    assert await hsm.get_key_type(slot, late_id) is not None

    for created in (key_id, late_id):
        await hsm.delete(slot, created)
    check_sessions(hsm.module, slot, state.pool)


async def _skipped_in_batch(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = f"timeout-batch-{uuid.uuid4()}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, sensitive=True)
    await hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, PLAINTEXT)  # caches the handle
    state = hsm.slot_state(slot)
    errors: dict[str, HsmTimeoutError] = {}
    record = functools.partial(_record, errors)

    # A key generation taken in the same batch as a call that hangs times out with it and is
    # never run: the worker skips work whose caller has gone. (A slow large call holds the
    # worker while both are queued, in order, so that the next batch takes them together.)
    skipped_id = f"timeout-skipped-{uuid.uuid4()}"
    pending = state.dispatcher._queue
    large = bytes(1 << 20)  # a large job: the dispatcher does not learn its pace from it
    with faults("C_Encrypt:delay=300:nth=1;C_Encrypt:delay=3000:nth=2"):
        async with anyio.create_task_group() as group:
            group.start_soon(hsm.encrypt, slot, key_id, CryptoAlgorithm.AES_GCM, large)
            await _until_busy(hsm, slot)
            group.start_soon(
                record,
                "hung",
                lambda: hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, b"hung"),
            )
            with anyio.fail_after(30):
                while pending.qsize() < 1:
                    await anyio.sleep(0.001)
            group.start_soon(
                record,
                "skipped",
                lambda: hsm.create_key(slot, skipped_id, HsmKeyAlgorithm.AES, 256, sensitive=True),
            )
            with anyio.fail_after(30):
                while pending.qsize() < 2:
                    await anyio.sleep(0.001)
        assert errors["hung"].started and errors["skipped"].started, errors
        await _until_idle(hsm, slot)
    assert await hsm.get_key_type(slot, skipped_id) is None
    await hsm.delete(slot, key_id)
    check_sessions(hsm.module, slot, state.pool)


async def _timeout_while_closing(hsm: Pkcs11Hsm, slot: int) -> None:
    """Closing the HSM while a call hangs: the callers still time out (the watchdog outlives
    ``close``, which waits for the stuck call)."""
    key_id = f"closing-{uuid.uuid4()}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, sensitive=True)
    errors: dict[str, HsmTimeoutError] = {}
    record = functools.partial(_record, errors)

    with faults("C_Encrypt:delay=3000:nth=1"):
        async with anyio.create_task_group() as group:
            group.start_soon(
                record, "hung", lambda: hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, b"x")
            )
            await _until_busy(hsm, slot)
            group.start_soon(
                record, "queued", lambda: hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, b"y")
            )
            await anyio.sleep(0.05)
            group.start_soon(hsm.aclose)
    assert errors["hung"].started and not errors["queued"].started, errors


async def _hung_call_does_not_stall(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = f"stall-{uuid.uuid4()}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, sensitive=True)
    state = hsm.slot_state(slot)
    for _ in range(50):  # learn that jobs are fast: one worker would take them all
        await hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, PLAINTEXT)
    served: list[bytes] = []
    with faults("C_Encrypt:delay=4000:nth=1"):
        async with anyio.create_task_group() as group:
            group.start_soon(
                _timed_out, lambda: hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, b"hung")
            )
            await _until_busy(hsm, slot)
            # The worker hangs for 4 s; the next calls get a worker of their own and are
            # served well within the 1 s call timeout, instead of timing out behind it.
            for _ in range(20):
                sealed = await hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, PLAINTEXT)
                blob = (sealed.iv or b"") + sealed.ciphertext + (sealed.tag or b"")
                with await hsm.decrypt(slot, key_id, CryptoAlgorithm.AES_GCM, blob) as plain:
                    served.append(bytes(plain))
    assert served == [PLAINTEXT] * 20
    await _until_idle(hsm, slot)
    await hsm.delete(slot, key_id)
    check_sessions(hsm.module, slot, state.pool)


def scenario_call_timeout() -> None:
    """``call_timeout`` bounds each façade call on asyncio and trio: a hung C call's caller gets
    HsmTimeoutError (started), a call queued behind it is dropped (not started), the worker
    comes back with its session, and a timed-out key generation is reported as possibly done.
    With a second session, the calls after a hung one are served by another worker."""
    faulthandler.dump_traceback_later(240, exit=True)  # the watchdog
    with Module(LIB) as module:
        slot = module.find_slot(LABEL)
    for backend in ("asyncio", "trio"):
        hsm = Pkcs11Hsm(LIB, {slot: PIN}, profile="other", pool_size=1, call_timeout=1.0)
        try:
            anyio.run(_call_timeout, hsm, slot, backend=backend)
        finally:
            hsm.close()
    for scenario, size in (
        (_skipped_in_batch, 1),
        (_timeout_while_closing, 1),
        (_hung_call_does_not_stall, 2),
    ):
        hsm = Pkcs11Hsm(LIB, {slot: PIN}, profile="other", pool_size=size, call_timeout=1.0)
        try:
            anyio.run(scenario, hsm, slot)
        finally:
            hsm.close()
    faulthandler.cancel_dump_traceback_later()


async def _random_faults(hsm: Pkcs11Hsm, slot: int, seconds: float) -> dict[str, int]:
    key_ids = [f"soak-{i}-{uuid.uuid4()}" for i in range(4)]
    for key_id in key_ids:
        await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, sensitive=True)
    counts: dict[str, int] = {"ok": 0}
    samples: dict[str, str] = {}
    wrong: list[str] = []
    untyped: list[str] = []
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            key_id = key_ids[(n + i) % len(key_ids)]
            plaintext = f"task {n} op {i} ".encode() * (1 + i % 5)
            try:
                sealed = await hsm.encrypt(slot, key_id, CryptoAlgorithm.AES_GCM, plaintext)
                blob = (sealed.iv or b"") + sealed.ciphertext + (sealed.tag or b"")
                with await hsm.decrypt(slot, key_id, CryptoAlgorithm.AES_GCM, blob) as plain:
                    if bytes(plain) != plaintext:
                        wrong.append(f"task {n} op {i}")
                counts["ok"] += 1
            except InvalidRequestError as exc:
                wrong.append(f"task {n} op {i}: {exc}")  # the keys exist and the input is valid
            except InterfaceError as exc:
                kind = type(exc).__name__
                counts[kind] = counts.get(kind, 0) + 1
                if kind not in samples:
                    samples[kind] = "".join(traceback.format_exception(exc))
            except Exception as exc:
                untyped.append(repr(exc))

    codes = [name for name in CODES if name != "BUFFER_TOO_SMALL"]
    rate = 0.05
    spec = [f"*:rv={name}:prob={rate / (len(codes) + 2):.6f}" for name in codes]
    spec.append(f"C_Encrypt:rv=BUFFER_TOO_SMALL:prob={rate / (len(codes) + 2):.6f}")
    spec.append(f"C_Decrypt:rv=BUFFER_TOO_SMALL:len=0:prob={rate / (len(codes) + 2):.6f}")
    spec.append("*:reboot:prob=0.0005")
    # Latency: a few ms now and then, and rare calls that outlast the 2 s call timeout.
    spec.append("*:delay=5:prob=0.002")
    spec.append("C_Encrypt:delay=2500:prob=0.0002")
    set_faults(os.environ.get("FAULT_SOAK_SPEC") or ";".join(spec))
    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker(n) for n in range(32))), timeout=seconds + 300
        )
    finally:
        set_faults("")
    for key_id in key_ids:
        await hsm.delete(slot, key_id)
    if os.environ.get("FAULT_SOAK_SAMPLES"):
        for text in samples.values():
            print(text, file=sys.stderr)
    assert not wrong, f"wrong answers: {wrong[:5]}"
    assert not untyped, f"untyped errors: {untyped[:5]}"
    assert counts["ok"] > 0, counts
    return counts


def scenario_random_faults() -> None:
    """5% of calls fail at random across 32 async tasks for FAULT_SOAK_SECONDS (default 30),
    with added latency and calls that outlast the 2 s call timeout: every decrypt that returns
    is right, every failure is typed, nothing hangs or leaks."""
    seconds = float(os.environ.get("FAULT_SOAK_SECONDS", "30"))
    faulthandler.dump_traceback_later(seconds + 240, exit=True)  # the watchdog
    module = Module(LIB)  # kept open: the library outlives the HSM, to count its sessions
    slot = module.find_slot(LABEL)
    hsm = Pkcs11Hsm(LIB, {slot: PIN}, profile="other", pool_size=8, call_timeout=2.0)
    try:
        started = time.monotonic()
        counts = asyncio.run(_random_faults(hsm, slot, seconds))
        state = hsm.slot_state(slot)
        while state.dispatcher._busy:  # workers still in calls whose callers timed out
            time.sleep(0.01)
        pool = state.pool
        # A reboot may have killed sessions the pool has not used since: at most, not equal.
        opened = module_sessions(module, slot)
        assert opened <= pool.open_sessions + 1 <= pool.size + 1, f"{opened}: {pool!r}"
        counts["seconds"] = round(time.monotonic() - started)
        print(json.dumps(counts))
    finally:
        hsm.close()
    assert module_sessions(module, slot) == 0, "sessions left open after the HSM closed"
    module.close()
    faulthandler.cancel_dump_traceback_later()


SCENARIOS: dict[str, Callable[[], None]] = {
    name.removeprefix("scenario_"): fn
    for name, fn in list(globals().items())
    if name.startswith("scenario_") and callable(fn)
}

if __name__ == "__main__":
    faulthandler.enable()
    SCENARIOS[sys.argv[1]]()
