"""What only PostgresStore can be asked: the schema and its version, an unreachable server, a
server stopped mid-run and restarted, the retry policy, timeouts, secrets in messages, names
PostgreSQL cannot hold. The contract itself is the conformance suite's (``-k postgres``)."""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import psycopg
import pytest

from kms_iface import Database
from kms_iface.config import parse_config
from kms_iface.errors import (
    DbConnectionError,
    DbError,
    DbOutcomeUnknownError,
    InvalidRequestError,
)
from kms_iface.kmip.attributes import Attributes, Name
from kms_iface.kmip.enums import KmipOperation, State
from kms_iface.stores import postgres
from kms_iface.stores.base import Grant, StoredObject
from kms_iface.stores.postgres import SCHEMA_VERSION, PostgresStore
from tests.postgres_cluster import PASSWORD, TEMPLATE, PostgresCluster, session_cluster
from tests.store_conformance.model import OWNER, U1, key_attributes, record, symmetric_key

pytestmark = pytest.mark.anyio

WATCHDOG = 60.0  # far beyond any timeout of these stores: only a hang reaches it
TABLES = {"parameters", "objects", "tags", "permissions"}
INDEXES = {
    "objects_owner",
    "objects_state",
    "objects_wrapped_by",
    "objects_attributes",
    "tags_tag",
    "permissions_user",
}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def cluster() -> PostgresCluster:
    return session_cluster()


def _fresh(cluster: PostgresCluster, template: str) -> Iterator[str]:
    name = f"kms_{uuid.uuid4().hex}"
    dsn = cluster.create_database(name, template)
    yield dsn
    cluster.drop_database(name)


@pytest.fixture
def empty_dsn(cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database without any table."""
    yield from _fresh(cluster, "template1")


@pytest.fixture
def dsn(cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database holding the store's schema."""
    yield from _fresh(cluster, TEMPLATE)


@pytest.fixture
async def store(dsn: str, anyio_backend: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(dsn, pool_size=2) as opened:
        yield opened


def _admin(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(dsn, autocommit=True)


def _scalar(dsn: str, query: str) -> Any:
    with _admin(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _terminate_other_sessions(dsn: str) -> int:
    """Kill every other connection to the database (as an administrator would)."""
    return int(
        _scalar(
            dsn,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


# -- construction, schema, versions --------------------------------------------------------------


async def test_constructor_does_no_io_and_checks_its_arguments() -> None:
    store = PostgresStore(f"host=127.0.0.1 port={_closed_port()} dbname=x password=hunter22")
    assert "hunter22" not in repr(store)
    assert "dbname=x" in repr(store)
    with pytest.raises(DbError, match="not open"):
        await store.retrieve("x")
    await store.close()  # closing a store never opened is a no-op
    with pytest.raises(InvalidRequestError, match="malformed") as caught:
        PostgresStore("host=db password=hunter22 oops")
    assert "hunter22" not in str(caught.value)
    for bad in ({"pool_size": 0}, {"statement_timeout": 0}, {"connect_timeout": float("inf")}):
        with pytest.raises(InvalidRequestError):
            PostgresStore("dbname=x", **bad)


async def test_first_open_creates_the_versioned_schema(empty_dsn: str) -> None:
    # several stores opening an empty database at once: one creates the schema, all open
    stores = [PostgresStore(empty_dsn, pool_size=1) for _ in range(4)]
    async with anyio.create_task_group() as group:
        for store in stores:
            group.start_soon(store.open)
    try:
        await stores[0].create("x", OWNER, symmetric_key("x"), key_attributes(), {"t"})
        assert await stores[3].retrieve_tags("x") == {"t"}
    finally:
        for store in stores:
            await store.close()
    with _admin(empty_dsn) as conn:
        tables = {
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        indexes = {
            row[0]
            for row in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        }
        version = conn.execute(
            "SELECT value FROM parameters WHERE name = 'schema_version'"
        ).fetchone()
    assert tables == TABLES
    assert indexes >= INDEXES
    assert version == (str(SCHEMA_VERSION),)
    # reopening keeps the schema and the content
    async with PostgresStore(empty_dsn) as again:
        assert await again.list_uids_for_tags({"t"}) == {"x"}


NEWER = SCHEMA_VERSION + 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            str(NEWER),
            f"schema version {NEWER}; this kms_iface reads schema version {SCHEMA_VERSION} and "
            "older: upgrade kms_iface",
        ),
        ("one", "an unreadable schema version"),
    ],
)
async def test_a_newer_or_unreadable_schema_is_refused(dsn: str, value: str, message: str) -> None:
    with _admin(dsn) as conn:
        conn.execute("UPDATE parameters SET value = %s WHERE name = 'schema_version'", (value,))
    store = PostgresStore(dsn)
    with pytest.raises(DbError) as caught:
        await store.open()
    assert caught.value.message.endswith(message)
    with pytest.raises(DbError, match="not open"):
        await store.retrieve("x")


async def test_tables_of_another_application_are_refused(empty_dsn: str) -> None:
    with _admin(empty_dsn) as conn:
        conn.execute("CREATE TABLE objects (id INTEGER)")
    with pytest.raises(DbError, match="did not create"):
        await PostgresStore(empty_dsn).open()
    with _admin(empty_dsn) as conn:
        conn.execute("DROP TABLE objects")
        conn.execute("CREATE TABLE parameters (id INTEGER)")
    with pytest.raises(DbError, match="did not create"):
        await PostgresStore(empty_dsn).open()


# -- unreachable servers and secrets ----------------------------------------------------------


async def test_unreachable_server_raises_a_clear_error_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = _closed_port()
    store = PostgresStore(
        f"host=127.0.0.1 port={port} dbname=kms user=kms password={PASSWORD}", connect_timeout=2
    )
    with pytest.raises(DbConnectionError) as caught:
        await store.open()
    text = str(caught.value)
    assert text.startswith("Database Error: cannot connect to the PostgreSQL server")
    assert f"host=127.0.0.1 port={port} dbname=kms user=kms" in text
    assert "refused" in text
    assert PASSWORD not in text and PASSWORD not in _all_log_text(caplog)


async def test_wrong_password_is_reported_without_any_password(
    cluster: PostgresCluster, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng-pässword-42"
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with pytest.raises(DbConnectionError, match="password authentication failed") as caught:
        await PostgresStore(cluster.dsn(str(dbname), password=wrong)).open()
    for secret in (wrong, PASSWORD):
        assert secret not in str(caught.value)
        assert secret not in _all_log_text(caplog)


# -- retries, timeouts, unknown outcomes --------------------------------------------------------


async def test_reads_and_unsent_writes_are_retried_on_a_lost_connection(
    store: PostgresStore, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Real server: every connection of the store is killed; the next calls retry and succeed."""
    await store.create("before", OWNER, symmetric_key("b"), key_attributes(), {"t"})
    assert await anyio.to_thread.run_sync(_terminate_other_sessions, dsn) >= 1
    got = await store.retrieve("before")
    assert got is not None
    assert got.object == symmetric_key("b")
    assert "retrying" in _all_log_text(caplog)

    caplog.clear()
    assert await anyio.to_thread.run_sync(_terminate_other_sessions, dsn) >= 1
    # the write's transaction never reached COMMIT: retried, and applied exactly once
    assert (
        await store.create("after", OWNER, symmetric_key("a"), key_attributes(), set()) == "after"
    )
    assert "retrying" in _all_log_text(caplog)
    assert await store.list_uids_for_tags({"t"}) == {"before"}
    assert {uid for uid, _, _ in await store.find(None, None, OWNER, True)} == {"before", "after"}


async def test_lost_commit_answer_raises_outcome_unknown_and_is_not_retried(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Injected: COMMIT reaches the server, then the connection dies before its answer."""
    original = postgres._Session.execute
    sent: list[str] = []

    async def lose_commit_answer(
        self: postgres._Session, query: str, params: Any = None
    ) -> psycopg.AsyncCursor[Any]:
        sent.append(query.split()[0])
        cursor = await original(self, query, params)
        if query == "COMMIT":
            self.conn.pgconn.finish()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return cursor

    monkeypatch.setattr(postgres._Session, "execute", lose_commit_answer)
    with pytest.raises(DbOutcomeUnknownError, match="may or may not have been applied"):
        await store.create("unknown", OWNER, symmetric_key("u"), key_attributes(), set())
    assert sent.count("BEGIN") == 1  # never retried
    assert "retrying" not in _all_log_text(caplog)
    monkeypatch.undo()
    # here the server did commit it
    got = await store.retrieve("unknown")
    assert got is not None
    assert got.owner == OWNER


async def test_constraint_violations_are_not_retried(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = postgres._Session.execute
    sent: list[str] = []

    async def spy(self: postgres._Session, query: str, params: Any = None) -> Any:
        sent.append(query.split()[0])
        return await original(self, query, params)

    await store.create("taken", OWNER, symmetric_key("t"), key_attributes(), set())
    monkeypatch.setattr(postgres._Session, "execute", spy)
    with pytest.raises(DbError, match="already exists") as caught:
        await store.create("taken", U1, symmetric_key("x"), key_attributes(), set())
    assert type(caught.value) is DbError
    assert sent == ["BEGIN", "WITH", "ROLLBACK"]
    assert "retrying" not in _all_log_text(caplog)


async def test_statement_timeout_cancels_and_is_not_retried(
    dsn: str, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Real server: a lock held elsewhere makes statements wait past the statement timeout."""
    async with PostgresStore(dsn, statement_timeout=0.5) as store:
        await store.create("present", OWNER, symmetric_key("p"), key_attributes(), set())
        with psycopg.connect(dsn) as locker:  # not autocommit: the lock is held until rollback
            locker.execute("LOCK TABLE objects IN ACCESS EXCLUSIVE MODE")
            with anyio.fail_after(WATCHDOG):
                with pytest.raises(DbError, match="statement timeout") as read_error:
                    await store.retrieve("present")
                with pytest.raises(DbError, match="statement timeout") as write_error:
                    await store.create(
                        "blocked", OWNER, symmetric_key("b"), key_attributes(), set()
                    )
            locker.rollback()
        for caught in (read_error, write_error):
            assert type(caught.value) is DbError
        assert "retrying" not in _all_log_text(caplog)
        assert await store.retrieve("blocked") is None
        assert await store.retrieve("present") is not None


async def _until_waiting_on_a_lock(dsn: str) -> None:
    """Until a session of the database waits for a lock (a statement of the store is stuck)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while not await anyio.to_thread.run_sync(_scalar, dsn, query):
        await anyio.sleep(0.01)


async def test_a_cancelled_read_stops_and_a_cancelled_write_still_finishes(
    dsn: str, anyio_backend: str
) -> None:
    async with PostgresStore(dsn, statement_timeout=30) as store:
        await store.create("present", OWNER, symmetric_key("p"), key_attributes(), set())
        with psycopg.connect(dsn) as locker, anyio.fail_after(WATCHDOG):
            locker.execute("LOCK TABLE objects IN ACCESS EXCLUSIVE MODE")
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:
                    group.start_soon(store.retrieve, "present")
                    await _until_waiting_on_a_lock(dsn)
                    scope.cancel()  # the read is cancelled on the server, the lock still held
            assert scope.cancelled_caught

            written = False

            async def write() -> None:
                nonlocal written
                await store.create("written", OWNER, symmetric_key("w"), key_attributes(), set())
                written = True

            release = anyio.Event()

            async def release_the_lock() -> None:
                await release.wait()
                await anyio.to_thread.run_sync(locker.rollback)

            async with anyio.create_task_group() as outer:
                outer.start_soon(release_the_lock)
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as group:
                        group.start_soon(write)
                        await _until_waiting_on_a_lock(dsn)
                        scope.cancel()  # the write has started: its task waits for its end
                        release.set()
            assert scope.cancelled_caught and not written
        got = await store.retrieve("written")
        assert got is not None  # the cancelled write happened all the same
        assert await store.retrieve("present") is not None


# -- a server stopped in the middle of a run -----------------------------------------------------


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of this module's own, to stop and restart."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        cluster.create_database("kms")
        yield cluster
    finally:
        cluster.destroy()


async def test_server_stopped_mid_run_and_restarted(
    own_cluster: PostgresCluster, anyio_backend: str
) -> None:
    """Calls in flight succeed or raise a typed DbError (none hangs); the same store object works
    again once the server is back; every write acknowledged before the stop is there."""
    dsn = own_cluster.dsn("kms")
    prefix = f"{anyio_backend}-{uuid.uuid4().hex[:8]}"
    acked: list[str] = []
    errors: list[BaseException] = []
    calls = 0
    stop = anyio.Event()

    async def call(store: PostgresStore, index: int, rng: random.Random) -> None:
        nonlocal calls
        calls += 1
        try:
            with anyio.fail_after(WATCHDOG):
                if index < 3 or not acked:
                    uid = f"{prefix}-{index}-{calls}"
                    obj, attributes, tags = record(uid, 0)
                    await store.create(uid, OWNER, obj, attributes, tags)
                    acked.append(uid)
                else:
                    await store.retrieve(rng.choice(acked))
        except DbError as exc:
            errors.append(exc)
            await anyio.sleep(0.05)

    async def worker(store: PostgresStore, index: int) -> None:
        rng = random.Random(index)
        while not stop.is_set():
            await call(store, index, rng)

    async with PostgresStore(dsn, pool_size=4, statement_timeout=5, connect_timeout=1) as store:
        async with anyio.create_task_group() as group:
            for index in range(5):
                group.start_soon(worker, store, index)
            await anyio.sleep(0.5)
            before_stop = len(acked)
            await anyio.to_thread.run_sync(own_cluster.stop)
            with anyio.fail_after(WATCHDOG), pytest.raises(DbConnectionError):
                await store.retrieve("anything")  # the server is down: certainly an error
            await anyio.sleep(1.5)  # every call made while it is down has failed by now
            failed_while_down = len(errors)
            await anyio.to_thread.run_sync(own_cluster.start)
            # the same store object gets through again (its pool reconnects)
            with anyio.fail_after(WATCHDOG):
                while True:
                    try:
                        await store.retrieve("anything")
                        break
                    except DbConnectionError:
                        await anyio.sleep(0.1)
                after_restart = len(acked)
                while len(acked) < after_restart + 10:
                    await anyio.sleep(0.05)
            stop.set()
        assert before_stop > 0
        assert failed_while_down > 0
        assert all(isinstance(exc, DbError) for exc in errors), errors
        for uid in acked:
            got = await store.retrieve(uid)
            obj, attributes, tags = record(uid, 0)
            assert got is not None, uid
            assert (got.object, got.attributes, got.owner) == (obj, attributes, OWNER)
            assert await store.retrieve_tags(uid) == tags


# -- names and values PostgreSQL cannot hold as they are ---------------------------------------


async def test_nul_in_names_is_refused_on_write_and_finds_nothing(store: PostgresStore) -> None:
    with pytest.raises(InvalidRequestError, match="NUL"):
        await store.create("a\x00b", OWNER, symmetric_key("n"), key_attributes(), set())
    with pytest.raises(InvalidRequestError, match="NUL"):
        await store.create("ok", OWNER, symmetric_key("n"), key_attributes(), {"t\x00"})
    with pytest.raises(InvalidRequestError, match="NUL"):
        await store.grant_operations("ok", "u\x00", {KmipOperation.Get})
    assert await store.retrieve("a\x00b") is None
    assert await store.retrieve_tags("a\x00b") == set()
    assert await store.list_uids_for_tags({"t\x00"}) == set()
    assert not await store.is_object_owned_by("ok", "o\x00")
    assert await store.find(None, None, "u\x00", False) == []
    assert await store.list_object_operations_granted("a\x00b") == {}
    await store.update_state("a\x00b", State.Active)  # no such object: nothing happens
    await store.delete("a\x00b")


async def test_nul_and_backslashes_in_attributes_round_trip_and_match_exactly(
    store: PostgresStore,
) -> None:
    values = ["a\x00b", "a\\0b", "a\\\\0b", "a\\b", "ab", "a\\u0000b"]
    for index, value in enumerate(values):
        attributes = key_attributes(comment=value, name=[Name(name_value=value)])
        await store.create(f"v{index}", OWNER, symmetric_key(value), attributes, set())
        got = await store.retrieve(f"v{index}")
        assert got is not None
        assert got.attributes == key_attributes(comment=value, name=[Name(name_value=value)])
    for index, value in enumerate(values):
        found = await store.find(Attributes(name=[Name(name_value=value)]), None, OWNER, True)
        assert [uid for uid, _, _ in found] == [f"v{index}"], repr(value)


async def test_values_are_parameters_never_sql(store: PostgresStore) -> None:
    hostile = "x'); DROP TABLE objects; --"
    await store.create(hostile, hostile, symmetric_key("h"), key_attributes(), {hostile})
    search = Attributes(object_group=hostile, name=[Name(name_value=hostile)])
    search.set_tags("cosmian", {hostile})
    assert await store.find(search, None, hostile, True) == []
    assert await store.list_uids_for_tags({hostile}) == {hostile}
    assert await store.is_object_owned_by(hostile, hostile)


# -- dumps, the router, fork ---------------------------------------------------------------------


async def test_dumps_are_complete_and_ordered_in_any_batch(store: PostgresStore) -> None:
    uids = ["b", "a", "é", "aa", "z::1"]
    for uid in uids:
        await store.create(uid, OWNER, symmetric_key(uid), key_attributes(), {uid, "all"})
        await store.grant_operations(uid, U1, {KmipOperation.Get})
    await store.update_state("a", State.Destroyed)
    await store.grant_operations("orphan", "*", {KmipOperation.Encrypt, KmipOperation.Get})
    expected_objects = [
        StoredObject(
            uid,
            OWNER,
            State.Destroyed if uid == "a" else State.PreActive,
            symmetric_key(uid),
            key_attributes(),
            frozenset({uid, "all"}),
        )
        for uid in sorted(uids)
    ]
    expected_grants = sorted(
        [Grant(uid, U1, frozenset({KmipOperation.Get})) for uid in uids]
        + [Grant("orphan", "*", frozenset({KmipOperation.Encrypt, KmipOperation.Get}))],
        key=lambda grant: (grant.uid, grant.user),
    )
    for batch in (1, 2, 1000):
        objects = [item async for page in store.dump_objects(batch) for item in page]
        grants = [item async for page in store.dump_grants(batch) for item in page]
        assert objects == expected_objects
        assert grants == expected_grants
    with pytest.raises(InvalidRequestError, match="batch"):
        await anext(store.dump_objects(0))


async def test_database_from_config_builds_a_postgres_store(dsn: str) -> None:
    config = parse_config(f'[default_store]\nkind = "postgres"\ndsn = "{dsn}"\n')
    database = Database.from_config(config)
    assert isinstance(database.objects_store_for("k"), PostgresStore)
    async with database:
        await database.create("k", OWNER, symmetric_key("k"), key_attributes(), {"cfg"})
        assert await database.list_uids_for_tags({"cfg"}) == {"k"}


def test_store_opened_before_fork_is_refused_in_the_child(dsn: str) -> None:
    store = PostgresStore(dsn, pool_size=1)
    anyio.run(store.open)
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                anyio.run(store.retrieve, "x")
            except DbError as exc:
                code = 0 if "forked" in exc.message else 2
            except BaseException:
                code = 3
            os.write(write, bytes([code]))
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        result = os.read(read, 1)
        os.close(read)
        assert result == b"\x00", f"child reported {result!r}"
        assert anyio.run(store.retrieve, "x") is None  # the parent's store still works
    finally:
        anyio.run(store.close)


def test_exported_lazily_from_kms_iface_stores() -> None:
    """``kms_iface.stores.PostgresStore`` works, and importing the package needs no psycopg."""
    import kms_iface.stores
    from kms_iface.stores import postgres

    assert kms_iface.stores.PostgresStore is postgres.PostgresStore
    code = "import sys, kms_iface, kms_iface.stores; print('psycopg' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"
