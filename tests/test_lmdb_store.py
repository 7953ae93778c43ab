"""LmdbStore behaviour beyond the shared conformance suite: limits, life cycle, threads, faults."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import anyio
import lmdb
import pytest

from kms_iface import Create, DbError, InvalidRequestError, UpdateState, Upsert
from kms_iface._completion import Completion
from kms_iface.kmip.attributes import Attributes
from kms_iface.kmip.enums import KmipOperation, State
from kms_iface.kmip.objects import SymmetricKey, symmetric_key_object
from kms_iface.stores import LmdbStore

pytestmark = pytest.mark.anyio

OWNER = "owner@example.org"
NOT_A_STATE: Any = "Active"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def key(fill: int = 1, description: str | None = None) -> tuple[SymmetricKey, Attributes]:
    return symmetric_key_object(bytes([fill]) * 32), Attributes(description=description)


async def test_constructor_does_no_io(tmp_path: Path) -> None:
    target = tmp_path / "store"
    store = LmdbStore(target)
    assert not target.exists()
    with pytest.raises(DbError, match="not open"):
        await store.retrieve("x")
    async with store:
        assert target.is_dir()
    assert "closed" in repr(store)


async def test_open_and_close_are_idempotent(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "s")
    await store.open()
    await store.open()
    obj, attrs = key()
    await store.create("a", OWNER, obj, attrs, set())
    await store.close()
    await store.close()
    with pytest.raises(DbError, match="not open"):
        await store.create("b", OWNER, obj, attrs, set())
    async with LmdbStore(tmp_path / "s") as again:
        assert await again.retrieve("a") is not None


async def test_two_store_objects_share_one_environment(tmp_path: Path) -> None:
    obj, attrs = key()
    async with LmdbStore(tmp_path / "s") as first:
        async with LmdbStore(tmp_path / "s") as second:
            await first.create("a", OWNER, obj, attrs, set())
            assert await second.retrieve("a") is not None
        await first.create("b", OWNER, obj, attrs, set())
        assert await first.retrieve("b") is not None


async def test_durable_mismatch_in_one_process_is_refused(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "s"):
        with pytest.raises(InvalidRequestError, match="durable"):
            await LmdbStore(tmp_path / "s", durable=False).open()


async def test_non_durable_store_round_trips(tmp_path: Path) -> None:
    obj, attrs = key()
    async with LmdbStore(tmp_path / "s", durable=False) as store:
        await store.create("a", OWNER, obj, attrs, {"t"})
    async with LmdbStore(tmp_path / "s", durable=False) as store:
        found = await store.retrieve("a")
        assert found is not None and found.object == obj
        assert await store.retrieve_tags("a") == {"t"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, o, a: s.create("", OWNER, o, a, set()), "uid"),
        (lambda s, o, a: s.create("u" * 251, OWNER, o, a, set()), "250"),
        (lambda s, o, a: s.create("é" * 126, OWNER, o, a, set()), "250"),
        (lambda s, o, a: s.create("\ud800", OWNER, o, a, set()), "Unicode"),
        (lambda s, o, a: s.create("u", 7, o, a, set()), "owner"),
        (lambda s, o, a: s.create("u", OWNER, b"raw", a, set()), "KMIP object"),
        (lambda s, o, a: s.create("u", OWNER, o, {}, set()), "Attributes"),
        (lambda s, o, a: s.create("u", OWNER, o, a, "tag"), "single string"),
        (lambda s, o, a: s.create("u", OWNER, o, a, {""}), "non-empty"),
        (lambda s, o, a: s.create("u", OWNER, o, a, {"t" * 251}), "250"),
        (lambda s, o, a: s.update_state("u", 2), "State"),
        (lambda s, o, a: s.atomic(OWNER, [("u",)]), "atomic operation"),
        (lambda s, o, a: s.atomic(OWNER, "u"), "sequence"),
        (lambda s, o, a: s.atomic(OWNER, [UpdateState("u", NOT_A_STATE)]), "State"),
        (lambda s, o, a: s.grant_operations("u", "x", {"get"}), "KmipOperation"),
        (lambda s, o, a: s.grant_operations("u", "x", "get"), "collection"),
        (lambda s, o, a: s.list_uids_for_tags(set()), "at least one tag"),
        (lambda s, o, a: s.find({}, None, OWNER, True), "Attributes"),
    ],
)
async def test_bad_arguments_raise_and_change_nothing(
    tmp_path: Path, call: Any, message: str
) -> None:
    obj, attrs = key()
    async with LmdbStore(tmp_path / "s") as store:
        await store.create("keep", OWNER, obj, attrs, {"t"})
        with pytest.raises(InvalidRequestError, match=message):
            await call(store, obj, attrs)
        assert await store.retrieve("u") is None
        assert await store.list_object_operations_granted("u") == {}
        assert await store.count_all_non_destroyed() == 1
        assert await store.retrieve_tags("keep") == {"t"}


async def test_names_at_the_limit_are_accepted(tmp_path: Path) -> None:
    obj, attrs = key()
    uid, owner, tag = "u" * 250, "é" * 125, "t" * 250
    async with LmdbStore(tmp_path / "s") as store:
        await store.create(uid, owner, obj, attrs, {tag})
        await store.grant_operations(uid, owner, {KmipOperation.Get})
        assert await store.is_object_owned_by(uid, owner)
        assert await store.list_uids_for_tags({tag}) == {uid}
        assert await store.list_user_operations_on_object(uid, owner, True) == {KmipOperation.Get}


async def test_full_map_fails_cleanly_and_a_larger_map_grows_it(tmp_path: Path) -> None:
    path = tmp_path / "s"
    big = "x" * 200_000
    async with LmdbStore(path, map_size=1 << 20) as store:
        obj, attrs = key(description=big)
        created = []
        with pytest.raises(DbError, match="larger map_size"):
            for index in range(20):
                created.append(await store.create(f"k{index}", OWNER, obj, attrs, set()))
        assert created, "at least one object should fit in 1 MiB"
        assert await store.retrieve(f"k{len(created)}") is None
        for uid in created:
            assert await store.retrieve(uid) is not None
    async with LmdbStore(path, map_size=64 << 20) as store:
        await store.create("more", OWNER, obj, attrs, set())
        assert await store.count_all_non_destroyed() == len(created) + 1


async def test_unreadable_record_is_a_db_error(tmp_path: Path) -> None:
    path = tmp_path / "s"
    obj, attrs = key()
    async with LmdbStore(path) as store:
        await store.create("a", OWNER, obj, attrs, set())
    env = lmdb.open(str(path), max_dbs=16)
    objects = env.open_db(b"objects")
    with env.begin(write=True) as txn:
        seq = txn.cursor(db=objects)
        assert seq.first()
        txn.put(seq.key(), b"\x93garbage", db=objects)
    env.close()
    async with LmdbStore(path) as store:
        with pytest.raises(DbError, match="unreadable"):
            await store.retrieve("a")


async def test_cancelled_write_still_reports_and_lands(tmp_path: Path) -> None:
    obj, attrs = key()
    async with LmdbStore(tmp_path / "s") as store:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await store.create("a", OWNER, obj, attrs, set())
        assert scope.cancelled_caught
        # The create was handed to the writer before the cancellation took effect: it happened.
        assert await store.retrieve("a") is not None


def test_event_loops_in_several_threads_share_a_store(tmp_path: Path) -> None:
    obj, attrs = key()
    store = LmdbStore(tmp_path / "s")
    errors: list[BaseException] = []

    async def writer(prefix: str) -> None:
        async with anyio.create_task_group() as group:
            for index in range(50):
                group.start_soon(store.create, f"{prefix}-{index}", OWNER, obj, attrs, {prefix})

    def run(prefix: str, backend: str) -> None:
        try:
            anyio.run(writer, prefix, backend=backend)
        except BaseException as exc:
            errors.append(exc)

    anyio.run(store.open)
    threads = [
        threading.Thread(target=run, args=(f"t{n}", backend))
        for n, backend in enumerate(["asyncio", "trio", "asyncio", "trio"])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    async def check() -> None:
        for n in range(4):
            assert len(await store.list_uids_for_tags({f"t{n}"})) == 50
        await store.close()

    anyio.run(check)


async def test_group_commit_isolates_a_failing_batch(tmp_path: Path) -> None:
    obj, attrs = key()
    async with LmdbStore(tmp_path / "s") as store:
        await store.create("taken", OWNER, obj, attrs, set())
        outcomes: dict[str, BaseException | None] = {}

        async def attempt(name: str, ops: list[Any]) -> None:
            try:
                await store.atomic(OWNER, ops)
                outcomes[name] = None
            except DbError as exc:
                outcomes[name] = exc

        async with anyio.create_task_group() as group:
            for index in range(16):
                group.start_soon(attempt, f"good{index}", [Create(f"g{index}", obj, attrs, set())])
                bad = [Create(f"b{index}", obj, attrs, set()), Create("taken", obj, attrs, set())]
                group.start_soon(attempt, f"bad{index}", bad)
        for index in range(16):
            assert outcomes[f"good{index}"] is None
            assert isinstance(outcomes[f"bad{index}"], DbError)
            assert await store.retrieve(f"g{index}") is not None
            assert await store.retrieve(f"b{index}") is None
        found = await store.retrieve("taken")
        assert found is not None and found.state == State.PreActive


async def test_values_that_cannot_be_read_back_are_refused(tmp_path: Path) -> None:
    obj, attrs = key()
    bad_length = Attributes(cryptographic_length=2**40)
    bad_state = Attributes(state=NOT_A_STATE)
    bad_text = Attributes(comment="\ud800")
    async with LmdbStore(tmp_path / "s") as store:
        await store.create("good", OWNER, obj, attrs, set())
        for bad in (bad_length, bad_state, bad_text):
            with pytest.raises(InvalidRequestError):
                await store.create("bad", OWNER, obj, bad, set())
            with pytest.raises(InvalidRequestError):
                await store.update_object("good", obj, bad)
        assert await store.retrieve("bad") is None
        found = await store.retrieve("good")
        assert found is not None and found.attributes == attrs
        assert [uid for uid, _, _ in await store.find(None, None, OWNER, True)] == ["good"]


async def test_lookups_of_impossible_names_find_nothing(tmp_path: Path) -> None:
    obj, attrs = key()
    async with LmdbStore(tmp_path / "s") as store:
        await store.create("a", OWNER, obj, attrs, {"t"})
        for uid in ("", "\udc80", "u" * 300):
            search = Attributes(unique_identifier=uid)
            assert await store.find(search, None, OWNER, True) == []
            assert await store.find_wrapped_by(uid, OWNER) == []
        assert await store.list_uids_for_tags({"t", "t" * 300}) == set()
        search = Attributes()
        search.set_tags("cosmian", {"t" * 300})
        assert await store.find(search, None, OWNER, True) == []


async def test_upsert_uses_the_tags_it_checked(tmp_path: Path) -> None:
    obj, attrs = key()
    async with LmdbStore(tmp_path / "s") as store:
        one_shot: Any = iter(["t1", "t2"])
        await store.atomic(OWNER, [Upsert("a", obj, attrs, one_shot, State.Active)])
        assert await store.retrieve_tags("a") == {"t1", "t2"}


async def test_a_write_too_big_for_the_map_fails_alone(tmp_path: Path) -> None:
    obj, attrs = key()
    _, huge = key(description="x" * (2 << 20))
    async with LmdbStore(tmp_path / "s", map_size=1 << 20) as store:
        outcomes: dict[str, str] = {}

        async def attempt(uid: str, attributes: Attributes) -> None:
            try:
                await store.create(uid, OWNER, obj, attributes, set())
                outcomes[uid] = "ok"
            except DbError:
                outcomes[uid] = "full"

        async with anyio.create_task_group() as group:
            group.start_soon(attempt, "huge", huge)
            for index in range(5):
                group.start_soon(attempt, f"small{index}", attrs)
        assert outcomes == {"huge": "full", **{f"small{i}": "ok" for i in range(5)}}


def test_store_opened_before_fork_is_refused_in_the_child(tmp_path: Path) -> None:
    obj, attrs = key()
    path = tmp_path / "s"
    store = LmdbStore(path)
    anyio.run(store.open)
    anyio.run(store.create, "parent", OWNER, obj, attrs, set())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0

        async def child() -> None:
            nonlocal code
            try:
                await store.retrieve("parent")
                code |= 1
            except DbError as exc:
                code |= 0 if "forked" in exc.message else 2
            await store.close()
            async with LmdbStore(path) as fresh:
                await fresh.create("child", OWNER, obj, attrs, set())
                if await fresh.retrieve("parent") is None:
                    code |= 4

        try:
            anyio.run(child)
        except BaseException:
            code |= 8
        os.write(write, bytes([code]))
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    result = os.read(read, 1)
    os.close(read)
    assert status == 0 and result == b"\x00", f"child reported {result!r}"

    async def check() -> None:
        assert await store.retrieve("child") is not None
        await store.create("after", OWNER, obj, attrs, set())
        await store.close()

    anyio.run(check)


def test_a_second_cancellation_does_not_cut_the_wait_short(tmp_path: Path) -> None:
    obj, attrs = key()

    async def main() -> None:
        async with LmdbStore(tmp_path / "s") as store:
            task = asyncio.ensure_future(store.create("a", OWNER, obj, attrs, set()))
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The task ended only once its write had been committed.
            assert await store.retrieve("a") is not None

    asyncio.run(main())


async def test_writes_after_close_fail_instead_of_hanging(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "s")
    await store.open()
    shared = store._env()
    await store.close()
    with pytest.raises(DbError, match="closed"):
        shared.writer.submit(lambda txn: None, Completion())


async def test_find_by_tags_picks_either_index_and_checks_access(tmp_path: Path) -> None:
    obj, attrs = key()
    async with LmdbStore(tmp_path / "s", durable=False) as store:
        ops = [Create(f"a{i}", obj, attrs, {"x", "y"} if i else {"x"}) for i in range(3)]
        await store.atomic("alice", ops)
        ops = [Create(f"b{i}", obj, attrs, {"x", "y"}) for i in range(300)]
        await store.atomic("bob", ops)
        await store.grant_operations("b7", "alice", {KmipOperation.Get})

        async def find(user: str, must_own: bool, *tags: str) -> set[str]:
            search = Attributes()
            search.set_tags("cosmian", set(tags))
            return {uid for uid, _, _ in await store.find(search, None, user, must_own)}

        # alice's own list (3) is shorter than the tag list (303): found from the owner index.
        assert await find("alice", True, "x") == {"a0", "a1", "a2"}
        assert await find("alice", True, "x", "y") == {"a1", "a2"}
        # With grants the tag index leads; access is checked per record.
        assert await find("alice", False, "x") == {"a0", "a1", "a2", "b7"}
        assert await find("alice", False, "y", "x") == {"a1", "a2", "b7"}
        assert len(await find("bob", True, "x", "y")) == 300
        assert await find("carol", False, "x") == set()
        # Both the inline (short list) and the worker-thread (long list) lookups.
        assert await store.list_uids_for_tags({"x", "y"}) == {"a1", "a2"} | {
            f"b{i}" for i in range(300)
        }
        await store.atomic("carol", [Create("c0", obj, attrs, {"z", "x"})])
        assert await store.list_uids_for_tags({"z", "x"}) == {"c0"}
        assert await store.list_uids_for_tags({"z", "nobody"}) == set()
