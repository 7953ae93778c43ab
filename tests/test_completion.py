"""Completions: work finished by a thread for a task of asyncio or trio, with a timeout.

The work here is a real thread blocked on an Event, standing for a C call that does not return;
the dispatcher's own use (``call_timeout``) is tested through the fault module.
"""

from __future__ import annotations

import threading

import anyio
import pytest

from kms_iface import HsmTimeoutError, SecretBytes
from kms_iface._completion import ABANDONED, DONE, PENDING, RUNNING, Completion, deliver

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


async def test_timeout_drops_work_not_started() -> None:
    owner = Owner()
    item = Completion()
    with pytest.raises(HsmTimeoutError) as caught:
        await item.wait(owner.abandon, 0.02, expired)
    assert caught.value.started is False
    assert item.state == ABANDONED and not item.detached


async def test_timeout_detaches_running_work_and_wipes_its_secret() -> None:
    owner, release = Owner(), threading.Event()
    item = Completion()
    thread = owner.run(item, release)
    with pytest.raises(HsmTimeoutError) as caught:
        await item.wait(owner.abandon, 0.02, expired)
    assert caught.value.started is True
    assert item.detached and item.state == RUNNING
    release.set()  # the "C call" returns after its caller gave up
    await anyio.to_thread.run_sync(thread.join)
    await until_done(item)
    assert owner.answers[0].zeroized and item.value is None


async def test_outcome_before_the_timeout_is_returned() -> None:
    owner, release = Owner(), threading.Event()
    item = Completion()
    release.set()
    thread = owner.run(item, release)
    with await item.wait(owner.abandon, 30.0, expired) as plain:
        assert plain == SECRET
    await anyio.to_thread.run_sync(thread.join)
    assert item.state == DONE and not item.detached


async def test_wait_without_timeout_needs_no_error_factory() -> None:
    with pytest.raises(ValueError, match="expired"):
        await Completion().wait(None, 1.0)


async def test_cancelled_wait_for_running_work_ends_at_the_timeout() -> None:
    """A cancellation the running work refuses makes the task wait for it, but not past the
    timeout: a hung call cannot hold a cancelled task forever."""
    owner, release = Owner(), threading.Event()
    item = Completion()
    thread = owner.run(item, release)
    with anyio.move_on_after(0.01) as scope:
        await item.wait(owner.abandon, 0.1, expired)
    assert scope.cancelled_caught  # the cancellation, not the timeout's error
    assert item.detached and not release.is_set()  # it stopped waiting while the work ran
    release.set()
    await anyio.to_thread.run_sync(thread.join)
    await until_done(item)
    assert owner.answers[0].zeroized and item.value is None


async def test_cancelled_wait_without_timeout_waits_for_running_work() -> None:
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


async def test_cancelled_before_start_is_dropped_even_with_a_timeout() -> None:
    owner = Owner()
    item = Completion()
    with anyio.move_on_after(0.01) as scope:
        await item.wait(owner.abandon, 30.0, expired)
    assert scope.cancelled_caught and item.state == ABANDONED and not item.detached
