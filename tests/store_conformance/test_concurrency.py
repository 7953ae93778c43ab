"""Scenario 13 (concurrency) and group commit: many writers, many readers, one store."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import anyio
import pytest

from kms_iface.errors import DbError
from kms_iface.kmip.enums import State
from kms_iface.stores.base import Create, ObjectWithMetadata
from tests.store_conformance.backends import Store
from tests.store_conformance.conftest import StoreCase
from tests.store_conformance.model import OWNER, U1, key_attributes, symmetric_key
from tests.store_conformance.processes import WriterProcess
from tests.store_conformance.workload import WRITER_OWNER, check_read, write_stream

pytestmark = pytest.mark.anyio

WRITERS = 4
READERS = 4
TASK_SECONDS = 1.5
PROCESS_WRITERS = 2
PROCESS_SECONDS = 3.0
GROUP = 32


async def test_writer_and_reader_tasks(store: Store) -> None:
    """Scenario 13 in one process: N writer tasks, M reader tasks (retrieve and find)."""
    acked: dict[str, int] = {}
    failures: list[str] = []
    reads = 0
    writes_done = anyio.Event()

    def on_ack(uid: str, version: int) -> None:
        acked[uid] = max(acked.get(uid, -1), version)

    async def writer(index: int) -> None:
        await write_stream(store, f"t{index}", on_ack, seconds=TASK_SECONDS, mixed=True, seed=index)

    async def reader(index: int) -> None:
        nonlocal reads
        rng = random.Random(index)
        while not writes_done.is_set():
            if not acked:
                await anyio.sleep(0.001)
                continue
            if index == 0:
                # every create acknowledged before the call is among the owner's objects
                before = set(acked)
                found = {uid for uid, _, _ in await store.find(None, None, WRITER_OWNER, True)}
                missing = before - found
                if missing:
                    failures.append(f"find misses acknowledged {sorted(missing)[:5]}")
            else:
                uid = rng.choice(list(acked))
                problem = await check_read(store, uid, acked[uid])
                if problem is not None:
                    failures.append(problem)
            reads += 1
            # point reads may complete without suspending: let the writers run
            await anyio.sleep(0)

    async with anyio.create_task_group() as readers:
        for index in range(READERS):
            readers.start_soon(reader, index)
        async with anyio.create_task_group() as writers:
            for index in range(WRITERS):
                writers.start_soon(writer, index)
        writes_done.set()

    for uid, version in acked.items():
        problem = await check_read(store, uid, version)
        if problem is not None:
            failures.append(problem)
    assert failures == []
    assert len(acked) >= WRITERS  # every writer got at least one write through
    assert reads > 0


async def test_writer_and_reader_threads(store: Store, store_case: StoreCase) -> None:
    """Scenario 13 in threads: each thread runs its own event loop and its own store object."""
    lock = threading.Lock()
    acked: dict[str, int] = {}
    failures: list[str] = []
    reads = [0]
    stop = threading.Event()

    def on_ack(uid: str, version: int) -> None:
        with lock:
            acked[uid] = max(acked.get(uid, -1), version)

    async def writer(index: int) -> None:
        async with store_case.make_store() as own:
            await write_stream(own, f"th{index}", on_ack, seconds=TASK_SECONDS, mixed=True)

    async def reader(index: int) -> None:
        rng = random.Random(index)
        async with store_case.make_store() as own:
            while not stop.is_set():
                with lock:
                    snapshot = dict(acked)
                if not snapshot:
                    await anyio.sleep(0.001)
                    continue
                uid = rng.choice(list(snapshot))
                problem = await check_read(own, uid, snapshot[uid])
                with lock:
                    if problem is not None:
                        failures.append(problem)
                    reads[0] += 1

    def in_thread(role: str, index: int) -> None:
        try:
            anyio.run(writer if role == "writer" else reader, index)
        except BaseException as exc:
            with lock:
                failures.append(f"{role} thread {index} raised {exc!r}")
            raise

    async with anyio.create_task_group() as readers:
        for index in range(READERS):
            readers.start_soon(anyio.to_thread.run_sync, in_thread, "reader", index)
        try:
            async with anyio.create_task_group() as writers:
                for index in range(WRITERS):
                    writers.start_soon(anyio.to_thread.run_sync, in_thread, "writer", index)
        finally:
            stop.set()

    for uid, version in acked.items():
        problem = await check_read(store, uid, version)
        if problem is not None:
            failures.append(problem)
    assert failures == []
    assert len(acked) >= WRITERS
    assert reads[0] > 0


async def test_writer_processes_and_reader_tasks(
    store: Store, store_case: StoreCase, tmp_path: Path
) -> None:
    """Scenario 13 across processes: 2 writer processes, reader tasks in this process."""
    writers = [
        WriterProcess(
            store_case.backend.name,
            store_case.descriptor,
            f"p{index}",
            tmp_path / f"writer-{index}.stderr",
            seconds=PROCESS_SECONDS,
            mixed=True,
        )
        for index in range(PROCESS_WRITERS)
    ]
    failures: list[str] = []
    reads = 0
    try:

        async def reader(index: int) -> None:
            nonlocal reads
            rng = random.Random(index)
            while any(writer.alive() for writer in writers):
                acked = {}
                for writer in writers:
                    acked.update(writer.acks())
                if not acked:
                    await anyio.sleep(0.01)
                    continue
                uid = rng.choice(list(acked))
                problem = await check_read(store, uid, acked[uid])
                if problem is not None:
                    failures.append(problem)
                reads += 1
                await anyio.sleep(0)

        async with anyio.create_task_group() as readers:
            for index in range(READERS):
                readers.start_soon(reader, index)
        codes = [await anyio.to_thread.run_sync(writer.finish, 60.0) for writer in writers]
    finally:
        for writer in writers:
            writer.stop()
    for writer, code in zip(writers, codes, strict=True):
        assert code == 0, f"writer {writer.writer_id} exited {code}:\n{writer.stderr()}"
        assert writer.garbage() == [], writer.garbage()
        assert writer.is_ready()
    total = {}
    for writer in writers:
        acks = writer.acks()
        assert acks, f"writer {writer.writer_id} acknowledged nothing:\n{writer.stderr()}"
        total.update(acks)
    for uid, version in total.items():
        problem = await check_read(store, uid, version)
        if problem is not None:
            failures.append(problem)
    assert failures == []
    assert reads > 0


async def test_concurrent_durable_creates_each_visible_when_acknowledged(store: Store) -> None:
    """Group commit: 32 concurrent creates all succeed; each is retrievable once it returned."""
    failures: list[str] = []
    created: list[str] = []

    async def create(round_: int, index: int, go: anyio.Event) -> None:
        await go.wait()
        uid = f"gc-{round_}-{index}::é"
        attributes = key_attributes(comment=uid)
        returned = await store.create(uid, OWNER, symmetric_key(uid), attributes, {"gc", uid})
        got = await store.retrieve(uid)
        expected = ObjectWithMetadata(
            uid, symmetric_key(uid), OWNER, State.PreActive, key_attributes(comment=uid)
        )
        if returned != uid or got != expected:
            failures.append(f"{uid}: returned {returned!r}, read back {got!r}")
        created.append(uid)

    for round_ in range(4):
        go = anyio.Event()
        async with anyio.create_task_group() as group:
            for index in range(GROUP):
                group.start_soon(create, round_, index, go)
            await anyio.sleep(0.01)
            go.set()
    assert failures == []
    assert len(created) == 4 * GROUP
    assert await store.list_uids_for_tags({"gc"}) == set(created)
    assert len(await store.find(None, None, OWNER, True)) == 4 * GROUP


async def test_a_failing_write_in_a_group_fails_only_its_caller(store: Store) -> None:
    """Group commit: duplicate creates (and a batch holding one) fail alone; the rest succeed."""
    outcomes: dict[str, str] = {}

    async def create(uid: str, seed: str, go: anyio.Event) -> None:
        await go.wait()
        try:
            await store.create(uid, U1, symmetric_key(seed), key_attributes(comment=seed), {seed})
        except DbError:
            outcomes[seed] = "DbError"
        else:
            outcomes[seed] = "ok"

    async def batch(fresh: str, duplicate: str, go: anyio.Event) -> None:
        await go.wait()
        try:
            await store.atomic(
                U1,
                [
                    Create(fresh, symmetric_key(fresh), key_attributes(), {fresh}),
                    Create(duplicate, symmetric_key("batch"), key_attributes(), set()),
                ],
            )
        except DbError:
            outcomes[fresh] = "DbError"
        else:
            outcomes[fresh] = "ok"

    expected: dict[str, str] = {}
    for round_ in range(4):
        duplicate = f"dup-{round_}"
        await store.create(duplicate, OWNER, symmetric_key(duplicate), key_attributes(), {"orig"})
        go = anyio.Event()
        async with anyio.create_task_group() as group:
            for index in range(GROUP):
                seed = f"r{round_}-{index}"
                if index % 8 == 3:
                    group.start_soon(create, duplicate, seed, go)
                    expected[seed] = "DbError"
                elif index % 8 == 6:
                    group.start_soon(batch, seed, duplicate, go)
                    expected[seed] = "DbError"
                else:
                    group.start_soon(create, seed, seed, go)
                    expected[seed] = "ok"
            await anyio.sleep(0.01)
            go.set()
        assert await store.retrieve(duplicate) == ObjectWithMetadata(
            duplicate, symmetric_key(duplicate), OWNER, State.PreActive, key_attributes()
        )
        assert await store.retrieve_tags(duplicate) == {"orig"}
    assert outcomes == expected
    for seed, outcome in expected.items():
        got = await store.retrieve(seed)
        if outcome == "ok":
            assert got == ObjectWithMetadata(
                seed, symmetric_key(seed), U1, State.PreActive, key_attributes(comment=seed)
            )
            assert await store.retrieve_tags(seed) == {seed}
        else:
            assert got is None, seed
            assert await store.list_uids_for_tags({seed}) == set(), seed
