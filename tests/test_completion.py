"""Completions: work finished by a thread for a task of asyncio or trio, and their expiry.

The work here is a real thread blocked on an Event, standing for a C call that does not return;
the dispatcher's own use (``call_timeout``) is tested through the fault module.
"""

from __future__ import annotations

import threading

import anyio
import pytest

from kms_iface import HsmTimeoutError, SecretBytes
from kms_iface._completion import (
    ABANDONED,
    DONE,
    PENDING,
    RUNNING,
    Completion,
    deliver,
    expire_soon,
)

pytestmark = pytest.mark.anyio

SECRET = b"a plaintext nobody waits for"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def expired(started: bool) -> HsmTimeoutError:
    return HsmTimeoutError("timed out", started=started)


class Owner:
    """Claims and drops work as the dispatcher does (under its lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: list[SecretBytes] = []

    def abandon(self, item: Completion) -> bool:
        with self.lock:
            if item.state == PENDING:
                item.state = ABANDONED
                return True
            return False

    def run(self, item: Completion, release: threading.Event) -> threading.Thread:
        """Claim ``item`` now and answer it with a secret once ``release`` is set."""
        with self.lock:
            item.state = RUNNING

        def work() -> None:
            release.wait(60)
            answer = SecretBytes(SECRET)
            self.answers.append(answer)
            item.ok, item.value = True, answer
            deliver([item])

        thread = threading.Thread(target=work)
        thread.start()
        return thread


async def until_done(item: Completion) -> None:
    with anyio.fail_after(30):  # a watchdog, not a timing assertion
        while item.state != DONE:
            await anyio.sleep(0.005)


def expire_in(seconds: float, item: Completion, owner: Owner) -> threading.Timer:
    """What the dispatcher's watchdog does at a call's deadline, from another thread."""
    timer = threading.Timer(seconds, expire_soon, (item, owner.abandon, expired))
    timer.start()
    return timer


async def test_expiry_drops_work_not_started() -> None:
    owner = Owner()
    item = Completion()
    expire_in(0.02, item, owner)
    with pytest.raises(HsmTimeoutError) as caught:
        await item.wait(owner.abandon)
    assert caught.value.started is False
    assert item.state == ABANDONED and not item.detached


async def test_expiry_detaches_running_work_and_wipes_its_secret() -> None:
    owner, release = Owner(), threading.Event()
    item = Completion()
    thread = owner.run(item, release)
    expire_in(0.02, item, owner)
    with pytest.raises(HsmTimeoutError) as caught:
        await item.wait(owner.abandon)
    assert caught.value.started is True
    assert item.detached and item.state == RUNNING
    release.set()  # the "C call" returns after its caller gave up
    await anyio.to_thread.run_sync(thread.join)
    await until_done(item)
    assert owner.answers[0].zeroized and item.value is None


async def test_expiry_after_the_outcome_does_nothing() -> None:
    owner, release = Owner(), threading.Event()
    item = Completion()
    release.set()
    thread = owner.run(item, release)
    plain = await item.wait(owner.abandon)
    assert plain == SECRET
    await anyio.to_thread.run_sync(thread.join)
    await anyio.to_thread.run_sync(expire_in(0, item, owner).join)
    await anyio.sleep(0.01)  # the expiry has run in this loop: a no-op, no second wake-up
    assert item.state == DONE and not item.detached and not owner.answers[0].zeroized


async def test_cancelled_wait_for_running_work_ends_at_expiry() -> None:
    """A cancellation the running work refuses makes the task wait for it, but an expiry ends
    that wait: a hung call cannot hold a cancelled task forever."""
    owner, release = Owner(), threading.Event()
    item = Completion()
    thread = owner.run(item, release)
    expire_in(0.1, item, owner)
    with anyio.move_on_after(0.01) as scope:
        await item.wait(owner.abandon)
    assert scope.cancelled_caught  # the cancellation, not the expiry's error
    assert item.detached and not release.is_set()  # it stopped waiting while the work ran
    release.set()
    await anyio.to_thread.run_sync(thread.join)
    await until_done(item)
    assert owner.answers[0].zeroized and item.value is None


async def test_cancelled_wait_without_expiry_waits_for_running_work() -> None:
    owner, release = Owner(), threading.Event()
    item = Completion()
    thread = owner.run(item, release)
    timer = threading.Timer(0.05, release.set)
    timer.start()
    with anyio.move_on_after(0.01) as scope:
        await item.wait(owner.abandon)
    assert scope.cancelled_caught
    assert item.state == DONE and release.is_set()  # the outcome came before the task went on
    await anyio.to_thread.run_sync(thread.join)
    timer.join()
