"""Threads against a real SoftHSM2 token: many threads on their own pooled sessions (the module
was initialised with OS locking, so this runs clean), C calls that release the GIL, and more
threads than sessions waiting their turn."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from kms_iface.pkcs11 import Mechanism, Module, Session, SessionPool
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.pkcs11.templates import aes_key_template, rsa_key_pair_templates

T = TypeVar("T")

STRESS_THREADS = 8
STRESS_SECONDS = 10.0


@dataclass(frozen=True)
class Keys:
    """Session objects (token=False) every pooled session can use while the pool lives."""

    aes: int
    rsa_public: int
    rsa_private: int


@dataclass
class Tally:
    """What one thread did: rounds completed, checks that failed, errors raised."""

    rounds: int = 0
    failed_checks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def make_keys(s: Session) -> Keys:
    aes = s.generate_key(ck.CKM_AES_KEY_GEN, aes_key_template(256, token=False))
    public, private = s.generate_key_pair(
        ck.CKM_RSA_PKCS_KEY_PAIR_GEN, *rsa_key_pair_templates(2048, token=False)
    )
    return Keys(aes, public, private)


def in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(index)`` in ``count`` threads at once; their results, or the first failure."""
    with ThreadPoolExecutor(count) as executor:
        futures = [executor.submit(work, index) for index in range(count)]
        return [future.result() for future in futures]


def gcm_round_trip(s: Session, key: int, data: bytes) -> bool:
    mechanism = Mechanism.aes_gcm(os.urandom(12), aad=b"kms_iface")
    return bytes(s.decrypt(mechanism, key, s.encrypt(mechanism, key, data))) == data


def cbc_round_trip(s: Session, key: int, data: bytes) -> bool:
    mechanism = Mechanism.aes_cbc(os.urandom(16), pad=True)
    return bytes(s.decrypt(mechanism, key, s.encrypt(mechanism, key, data))) == data


def rsa_sign_verify(s: Session, keys: Keys, data: bytes) -> bool:
    signature = s.sign(ck.CKM_SHA256_RSA_PKCS, keys.rsa_private, data)
    return s.verify(ck.CKM_SHA256_RSA_PKCS, keys.rsa_public, data, signature)


def one_round(s: Session, keys: Keys, data: bytes) -> list[str]:
    """The names of the checks that failed."""
    checks = {
        "AES-GCM decrypt != plaintext": gcm_round_trip(s, keys.aes, data),
        "AES-CBC-PAD decrypt != plaintext": cbc_round_trip(s, keys.aes, data),
        "RSA-2048 verify is False": rsa_sign_verify(s, keys, data),
    }
    return [name for name, passed in checks.items() if not passed]


def stress(pool: SessionPool, keys: Keys, deadline: float, seed: int) -> Tally:
    tally = Tally()
    sizes = random.Random(seed)
    while time.monotonic() < deadline:
        data = os.urandom(sizes.randrange(0, 4096))
        try:
            with pool.session() as s:
                tally.failed_checks += one_round(s, keys, data)
        except Exception as exc:
            tally.errors.append(repr(exc))
            break
        tally.rounds += 1
    return tally


@pytest.fixture
def wide_pool(module: Module, slot: int, token: SoftHsmToken) -> Iterator[SessionPool]:
    with module.pool(slot, token.user_pin, size=STRESS_THREADS, timeout=30.0) as pool:
        yield pool


def test_threads_on_their_own_sessions_run_clean(wide_pool: SessionPool) -> None:
    keys = wide_pool.call(make_keys, idempotent=False)
    deadline = time.monotonic() + STRESS_SECONDS
    tallies = in_threads(
        STRESS_THREADS, lambda index: stress(wide_pool, keys, deadline, seed=index)
    )
    assert [t.errors for t in tallies] == [[]] * STRESS_THREADS
    assert [t.failed_checks for t in tallies] == [[]] * STRESS_THREADS
    assert all(t.rounds > 0 for t in tallies), [t.rounds for t in tallies]


class Heartbeat:
    """A pure-Python thread noting the time (at most once a millisecond) until stopped. It can
    only run while no other thread holds the GIL."""

    def __init__(self) -> None:
        self.beats: list[float] = []
        self._running = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self._running.set()
        last = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last >= 0.001:
                self.beats.append(now)
                last = now

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        self._running.wait()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def beats_between(self, start: float, end: float) -> list[float]:
        return [beat for beat in self.beats if start < beat < end]


def test_rsa_4096_key_generation_releases_the_gil(pool: SessionPool) -> None:
    """The other thread must run in the middle third of the call. Progress between a reading
    just before and one just after the call proves nothing: a thread holding the GIL through a
    long C call hands it over at its first bytecode boundary, right before or after the call."""
    public, private = rsa_key_pair_templates(4096, token=False)
    with pool.session() as s, Heartbeat() as heartbeat:
        started = time.monotonic()
        s.generate_key_pair(ck.CKM_RSA_PKCS_KEY_PAIR_GEN, public, private)
        finished = time.monotonic()
    third = (finished - started) / 3
    assert heartbeat.beats_between(started + third, finished - third), (
        "the other thread never ran during the C call: it held the GIL"
    )


class Occupancy:
    """How many sessions are lent at once, and which ones were ever lent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = 0
        self.peak = 0
        self.handles: set[int] = set()

    def round_trip(self, s: Session, key: int, data: bytes) -> bool:
        with self._lock:
            self._current += 1
            self.peak = max(self.peak, self._current)
            self.handles.add(s.handle)
        try:
            return gcm_round_trip(s, key, data)
        finally:
            with self._lock:
                self._current -= 1


def test_more_threads_than_sessions_wait_their_turn(
    module: Module, slot: int, token: SoftHsmToken
) -> None:
    threads, calls = 8, 25
    occupancy = Occupancy()
    with module.pool(slot, token.user_pin, size=2, timeout=30.0) as pool:
        key = pool.call(make_keys, idempotent=False).aes
        start = threading.Barrier(threads)

        def work(index: int) -> list[bool]:
            start.wait()
            data = index.to_bytes(2, "big") * 50
            return [pool.call(occupancy.round_trip, key, data) for _ in range(calls)]

        results = in_threads(threads, work)
        assert pool.open_sessions <= 2
    assert results == [[True] * calls] * threads
    assert occupancy.peak <= 2
    assert len(occupancy.handles) <= 2
