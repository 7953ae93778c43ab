"""``copy_store`` and ``kms-iface store copy`` on real LMDB stores, and ``LmdbStore``'s dumps."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec
import pytest

from kms_iface.errors import DbError, InvalidRequestError, UnauthorizedError
from kms_iface.kmip.attributes import Attributes, Link, Name
from kms_iface.kmip.enums import KmipOperation, LinkType, State
from kms_iface.stores import (
    AtomicOperation,
    Dumpable,
    Grant,
    LmdbStore,
    ObjectsStore,
    ObjectWithMetadata,
    PermissionsStore,
    StoredObject,
    Upsert,
)
from kms_iface.stores.copy import CopyReport, CopyStage, TargetNotEmptyError, copy_store
from kms_iface.stores.postgres import PostgresStore
from tests.cli_runs import assert_failed
from tests.postgres_cluster import PASSWORD, drop_database, new_database
from tests.store_conformance.model import (
    OTHER,
    OWNER,
    STRANGER,
    U1,
    U2,
    key_attributes,
    symmetric_key,
    wrapped_key,
)

pytestmark = pytest.mark.anyio

KEK = "kek-1"
OWNERS = (OWNER, U1, U2)
USERS = (*OWNERS, OTHER, STRANGER, "*")
TAGS = ("all", "é::tag", "owner:0", "owner:1", "owner:2", "wrapped")
ORPHAN = "no-object-yet"
# Uids of several lengths (grants are read as one run per uid length) and non-ASCII ones.
PREFIXES = ("", "k-", "ключ-", "x" * 40 + "-")
Get, Encrypt, Decrypt = KmipOperation.Get, KmipOperation.Encrypt, KmipOperation.Decrypt


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Corpus:
    """What ``populate`` stored: every uid, and every uid a query should be asked about."""

    uids: list[str] = field(default_factory=list)
    grants: int = 0


async def populate(store: LmdbStore) -> Corpus:
    """Objects of three owners in every state, tagged, some wrapped, linked or named; grants,
    one to ``"*"`` and one on a uid without an object."""
    corpus = Corpus()
    await store.create(KEK, OWNER, symmetric_key("kek"), key_attributes(), {"all"})
    corpus.uids.append(KEK)
    for n in range(24):
        uid = f"{PREFIXES[n % len(PREFIXES)]}{n}"
        owner_index = n % len(OWNERS)
        tags = {"all", f"owner:{owner_index}"} | ({"é::tag"} if n % 5 == 0 else set())
        if n % 4 == 1:
            obj = wrapped_key(uid, KEK if n % 8 == 1 else "kek-2")
            tags.add("wrapped")
        else:
            obj = symmetric_key(uid)
        attributes = key_attributes(
            comment=f"object {n}",
            name=[Name(name_value=f"name {n % 3}")],
            link=[Link(LinkType.ParentLink, KEK)] if n % 3 == 0 else None,
        )
        await store.create(uid, OWNERS[owner_index], obj, attributes, tags)
        await store.update_state(uid, list(State)[n % len(State)])
        corpus.uids.append(uid)
    grants: list[tuple[str, str, set[KmipOperation]]] = [
        (corpus.uids[1], U1, {Get, Encrypt}),
        (corpus.uids[2], "*", {Get}),
        (corpus.uids[2], U2, {Decrypt}),
        (corpus.uids[3], OTHER, {Get}),
        (corpus.uids[5], "*", {Get, Decrypt}),  # a Destroyed object
        (corpus.uids[10], OTHER, {Get}),  # wrapped by KEK
        (corpus.uids[20], STRANGER, {Encrypt}),
        (ORPHAN, U1, {Get}),
    ]
    for uid, user, operations in grants:
        await store.grant_operations(uid, user, operations)
    corpus.grants = len(grants)
    return corpus


async def dumped(store: Dumpable, batch: int = 1000) -> tuple[list[StoredObject], list[Grant]]:
    objects = [item async for page in store.dump_objects(batch) for item in page]
    grants = [grant async for page in store.dump_grants(batch) for grant in page]
    return objects, grants


def by_uid(found: Iterable[tuple[str, State, Attributes]]) -> list[tuple[str, State, Attributes]]:
    """``find`` answers in uid order (LMDB answers in creation order, which a copy changes)."""
    return sorted(found, key=lambda row: row[0])


def tag_search(tag: str) -> Attributes:
    search = Attributes()
    search.set_tags("cosmian", {tag})
    return search


async def assert_same_objects(source: ObjectsStore, target: ObjectsStore, corpus: Corpus) -> None:
    """Every ObjectsStore query of interest gets the same answer from both stores."""
    for uid in [*corpus.uids, ORPHAN, "absent"]:
        assert await target.retrieve(uid) == await source.retrieve(uid)
        assert await target.retrieve_tags(uid) == await source.retrieve_tags(uid)
        for user in USERS:
            owned = await source.is_object_owned_by(uid, user)
            assert await target.is_object_owned_by(uid, user) == owned
    searches = [None, tag_search("é::tag"), tag_search("wrapped"), key_attributes()]
    searches.append(Attributes(link=[Link(LinkType.ParentLink, KEK)]))
    searches.append(Attributes(name=[Name(name_value="name 1")]))
    for user in USERS:
        for must_own in (True, False):
            for state in (None, *State):
                for search in searches:
                    found = by_uid(await source.find(search, state, user, must_own))
                    assert by_uid(await target.find(search, state, user, must_own)) == found
        for kek in (KEK, "kek-2"):
            wrapped = by_uid(await source.find_wrapped_by(kek, user))
            assert by_uid(await target.find_wrapped_by(kek, user)) == wrapped
    for tag in TAGS:
        assert await target.list_uids_for_tags({tag}) == await source.list_uids_for_tags({tag})
    assert await target.count_all_non_destroyed() == await source.count_all_non_destroyed()


async def assert_same_grants(
    source: PermissionsStore, target: PermissionsStore, corpus: Corpus
) -> None:
    """Every PermissionsStore query of interest gets the same answer from both stores."""
    for uid in [*corpus.uids, ORPHAN, "absent"]:
        granted = await source.list_object_operations_granted(uid)
        assert await target.list_object_operations_granted(uid) == granted
        for user in USERS:
            for direct in (True, False):
                operations = await source.list_user_operations_on_object(uid, user, direct)
                assert await target.list_user_operations_on_object(uid, user, direct) == operations
    for user in USERS:
        by_user = await source.list_user_operations_granted(user)
        assert await target.list_user_operations_granted(user) == by_user


# -- LmdbStore's dumps -------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 7, 1000])
async def test_dumps_are_complete_and_ordered_in_any_batch(tmp_path: Path, batch: int) -> None:
    async with LmdbStore(tmp_path / "s") as store:
        corpus = await populate(store)
        objects, grants = await dumped(store, batch)
        pages = [len(page) async for page in store.dump_objects(batch)]
    assert [item.uid for item in objects] == sorted(corpus.uids)
    assert all(size == batch for size in pages[:-1]) and 0 < pages[-1] <= batch
    assert [(g.uid, g.user) for g in grants] == sorted((g.uid, g.user) for g in grants)
    assert len(grants) == corpus.grants
    assert Grant(ORPHAN, U1, frozenset({Get})) in grants
    destroyed = [item for item in objects if item.state == State.Destroyed]
    assert destroyed and all(item.tags for item in destroyed)


async def test_grant_dump_merges_uid_lengths_in_uid_order(tmp_path: Path) -> None:
    # Keys are ordered by uid length first: "b" < "aa" < "a\x00b" there, not in uid order.
    pairs = [
        (uid, user) for uid in ("b", "aa", "a", "a\x00b", "ab", "é", "z" * 250) for user in "yx"
    ]
    async with LmdbStore(tmp_path / "s") as store:
        for uid, user in pairs:
            await store.grant_operations(uid, user, {Get})
        for batch in (1, 3, 100):
            _, grants = await dumped(store, batch)
            assert [(g.uid, g.user) for g in grants] == sorted(pairs)


async def test_empty_store_dumps_nothing_and_batch_is_checked(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "s") as store:
        assert await dumped(store) == ([], [])
        for bad in (0, -1, True, 1.5):
            with pytest.raises(InvalidRequestError, match="batch"):
                await anext(store.dump_objects(bad))  # type: ignore[arg-type]
            with pytest.raises(InvalidRequestError, match="batch"):
                await anext(store.dump_grants(bad))  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="batch"):
            await copy_store(store, store, batch=0)


# -- copy_store --------------------------------------------------------------------------------


async def test_copy_answers_every_query_like_the_source(tmp_path: Path) -> None:
    seen: dict[CopyStage, int] = {}

    def progress(stage: CopyStage, count: int) -> None:
        seen[stage] = seen.get(stage, 0) + count

    async with LmdbStore(tmp_path / "a") as source, LmdbStore(tmp_path / "b") as target:
        corpus = await populate(source)
        report = await copy_store(source, target, batch=4, progress=progress)
        assert report == CopyReport(len(corpus.uids), corpus.grants, "dump")
        assert seen == {
            "objects": len(corpus.uids),
            "grants": corpus.grants,
            "verify objects": len(corpus.uids),
            "verify grants": corpus.grants,
        }
        assert await dumped(target) == await dumped(source)
        await assert_same_objects(source, target, corpus)
        await assert_same_grants(source, target, corpus)


async def test_non_empty_target_is_refused_unless_allowed(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "a") as source, LmdbStore(tmp_path / "b") as target:
        corpus = await populate(source)
        await target.create("mine", STRANGER, symmetric_key("mine"), key_attributes(), {"t"})
        before = await dumped(target)
        with pytest.raises(TargetNotEmptyError, match="not empty"):
            await copy_store(source, target)
        assert await dumped(target) == before
        report = await copy_store(source, target, allow_non_empty=True)
        assert (report.objects, report.grants) == (len(corpus.uids), corpus.grants)
        objects, grants = await dumped(target)
        assert [item.uid for item in objects if item.owner == STRANGER] == ["mine"]
        assert ([item for item in objects if item.uid != "mine"], grants) == await dumped(source)

    async with LmdbStore(tmp_path / "c") as only_grants:
        await only_grants.grant_operations("x", U1, {Get})
        async with LmdbStore(tmp_path / "a") as source:
            with pytest.raises(TargetNotEmptyError):
                await copy_store(source, only_grants)


async def test_write_failures_propagate(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "a") as source, LmdbStore(tmp_path / "b") as target:
        corpus = await populate(source)
        taken = corpus.uids[5]
        await target.create(taken, STRANGER, symmetric_key("other"), key_attributes(), set())
        with pytest.raises(UnauthorizedError, match="belongs to another user"):
            await copy_store(source, target, allow_non_empty=True, batch=3)


class DropsOneObject(LmdbStore):
    """Loses the last object of its first ``atomic`` batch."""

    dropped = False

    async def atomic(self, user: str, operations: Sequence[AtomicOperation]) -> list[str]:
        if not self.dropped:
            self.dropped = True
            operations = operations[:-1]
        return await super().atomic(user, operations)


class AltersOneObject(LmdbStore):
    """Stores the first object of its first ``atomic`` batch with another comment."""

    altered = False

    async def atomic(self, user: str, operations: Sequence[AtomicOperation]) -> list[str]:
        first = operations[0]
        if not self.altered and isinstance(first, Upsert):
            self.altered = True
            changed = msgspec.structs.replace(first.attributes, comment="changed")
            operations = [msgspec.structs.replace(first, attributes=changed), *operations[1:]]
        return await super().atomic(user, operations)


class DropsOneGrant(LmdbStore):
    """Loses its first ``grant_operations``."""

    dropped = False

    async def grant_operations(
        self, uid: str, user: str, operations: Iterable[KmipOperation]
    ) -> None:
        if not self.dropped:
            self.dropped = True
            return
        await super().grant_operations(uid, user, operations)


class ContractsOnly:
    """A target with only the contract methods ``copy_store`` uses: it cannot list its content."""

    def __init__(self, inner: LmdbStore) -> None:
        self.inner = inner

    async def atomic(self, user: str, operations: Sequence[AtomicOperation]) -> list[str]:
        return await self.inner.atomic(user, operations)

    async def grant_operations(
        self, uid: str, user: str, operations: Iterable[KmipOperation]
    ) -> None:
        await self.inner.grant_operations(uid, user, operations)

    async def retrieve(self, uid: str) -> ObjectWithMetadata | None:
        return await self.inner.retrieve(uid)

    async def retrieve_tags(self, uid: str) -> set[str]:
        return await self.inner.retrieve_tags(uid)

    async def list_user_operations_on_object(
        self, uid: str, user: str, no_inherited_access: bool
    ) -> set[KmipOperation]:
        return await self.inner.list_user_operations_on_object(uid, user, no_inherited_access)


FAULTS = [
    (DropsOneObject, r"object '.*' is missing from the target"),
    (AltersOneObject, r"object '.*' differs in the target"),
    (DropsOneGrant, r"the grant of '.*' on '.*' (is missing from|differs in) the target"),
]


@pytest.mark.parametrize(("faulty", "message"), FAULTS, ids=["drop", "alter", "drop-grant"])
@pytest.mark.parametrize("verification", ["dump", "lookup"])
async def test_a_faulty_target_fails_the_verification(
    tmp_path: Path, faulty: type[LmdbStore], message: str, verification: str
) -> None:
    async with LmdbStore(tmp_path / "a") as source, faulty(tmp_path / "b") as target:
        await populate(source)
        with pytest.raises(DbError, match="the copy does not match the source: " + message):
            if verification == "dump":
                await copy_store(source, target, batch=5)
            else:
                await copy_store(source, ContractsOnly(target), batch=5, allow_non_empty=True)


async def test_a_target_that_cannot_list_its_content(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "a") as source, LmdbStore(tmp_path / "b") as target:
        corpus = await populate(source)
        with pytest.raises(TargetNotEmptyError, match="cannot list its content"):
            await copy_store(source, ContractsOnly(target))
        assert await dumped(target) == ([], [])
        report = await copy_store(source, ContractsOnly(target), allow_non_empty=True)
        assert report == CopyReport(len(corpus.uids), corpus.grants, "lookup")
        await assert_same_objects(source, target, corpus)
        await assert_same_grants(source, target, corpus)


class Unordered(Dumpable):
    """A source whose pages list objects last first: it breaks the ``Dumpable`` order."""

    def __init__(self, inner: LmdbStore) -> None:
        self.inner = inner

    async def dump_objects(self, batch: int = 1000) -> AsyncIterator[list[StoredObject]]:
        async for page in self.inner.dump_objects(batch):
            yield page[::-1]

    def dump_grants(self, batch: int = 1000) -> AsyncIterator[list[Grant]]:
        return self.inner.dump_grants(batch)


class ChangesAfterTheCopy(LmdbStore):
    """Deletes one of its objects when its content is read the second time (the verification)."""

    reads = 0

    async def dump_objects(self, batch: int = 1000) -> AsyncIterator[list[StoredObject]]:
        self.reads += 1
        if self.reads == 2:
            await self.delete(KEK)
        async for page in super().dump_objects(batch):
            yield page


async def test_a_source_out_of_order_or_changing_is_detected(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "a") as source, LmdbStore(tmp_path / "b") as target:
        await populate(source)
        with pytest.raises(
            DbError, match="source store does not list its content in code point order"
        ):
            await copy_store(Unordered(source), target, batch=5)
    async with ChangesAfterTheCopy(tmp_path / "c") as source:
        await populate(source)
        async with LmdbStore(tmp_path / "d") as target:
            with pytest.raises(DbError, match=f"the target has object '{KEK}', the source has not"):
                await copy_store(source, target)
        source.reads = 0
        await source.create(KEK, OWNER, symmetric_key("kek"), key_attributes(), {"all"})
        async with LmdbStore(tmp_path / "e") as target:
            with pytest.raises(DbError, match="the source changed during the copy"):
                await copy_store(source, target, allow_non_empty=True)


# -- kms-iface store copy ----------------------------------------------------------------------


def run_cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m kms_iface ARGS`` (or ``python -c CODE ARGS``), no terminal on stdin."""
    command = [sys.executable, "-m", "kms_iface"] if code is None else [sys.executable, "-c", code]
    return subprocess.run(
        [*command, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def make_store(path: Path) -> Corpus:
    async def fill() -> Corpus:
        async with LmdbStore(path) as store:
            return await populate(store)

    return anyio.run(fill)


def dump_of(path: Path) -> tuple[list[StoredObject], list[Grant]]:
    async def read() -> tuple[list[StoredObject], list[Grant]]:
        async with LmdbStore(path) as store:
            return await dumped(store)

    return anyio.run(read)


def config_file(path: Path, store: str) -> Path:
    path.write_text(store)
    path.chmod(0o600)
    return path


def lmdb_config(path: Path, directory: Path) -> Path:
    return config_file(path, f'[default_store]\nkind = "lmdb"\npath = "{directory}"\n')


def test_cli_copies_between_directories_and_refuses_a_non_empty_target(tmp_path: Path) -> None:
    corpus = make_store(tmp_path / "a")
    done = run_cli("store", "copy", "--from", str(tmp_path / "a"), "--to", str(tmp_path / "new/b"))
    assert done.returncode == 0, done.stderr
    assert f"copied {len(corpus.uids)} objects and {corpus.grants} grants" in done.stdout
    assert "verified" in done.stdout and done.stderr == ""
    assert dump_of(tmp_path / "new/b") == dump_of(tmp_path / "a")

    again = run_cli("store", "copy", "--from", str(tmp_path / "a"), "--to", str(tmp_path / "new/b"))
    assert_failed(again, 1, "not empty", "--force")
    forced = run_cli(
        "store", "copy", "--from", str(tmp_path / "a"), "--to", str(tmp_path / "new/b"), "--force"
    )
    assert forced.returncode == 0, forced.stderr
    assert dump_of(tmp_path / "new/b") == dump_of(tmp_path / "a")


def test_cli_copies_between_configuration_files(tmp_path: Path) -> None:
    corpus = make_store(tmp_path / "a")
    source = lmdb_config(tmp_path / "from.toml", tmp_path / "a")
    target = lmdb_config(tmp_path / "to.toml", tmp_path / "b")
    done = run_cli("store", "copy", "--from", str(source), "--to", str(target), "--batch", "3")
    assert done.returncode == 0, done.stderr
    assert f"copied {len(corpus.uids)} objects and {corpus.grants} grants" in done.stdout
    assert str(source) in done.stdout and str(tmp_path / "b") in done.stdout
    assert dump_of(tmp_path / "b") == dump_of(tmp_path / "a")


def test_cli_bad_arguments_exit_2(tmp_path: Path) -> None:
    make_store(tmp_path / "a")
    a = str(tmp_path / "a")
    (tmp_path / "plain").mkdir()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/notes.txt").write_text("not a store")
    cases: list[tuple[list[str], str]] = [
        (["--to", str(tmp_path / "b")], "--from"),
        (["--from", a], "--to"),
        (["--from", str(tmp_path / "missing"), "--to", str(tmp_path / "b")], "neither"),
        (["--from", str(tmp_path / "plain"), "--to", str(tmp_path / "b")], "no data.mdb"),
        (["--from", a, "--to", str(tmp_path / "busy")], "other files"),
        (["--from", a, "--to", a], "the same store"),
        (["--from", a, "--to", str(lmdb_config(tmp_path / "same.toml", tmp_path / "a"))], "same"),
        (["--from", a, "--to", str(tmp_path / "b"), "--batch", "0"], "--batch"),
        (["--from", a, "--to", str(tmp_path / "b"), "--unknown"], "--unknown"),
    ]
    for args, word in cases:
        assert_failed(run_cli("store", "copy", *args), 2, word)
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "busy/data.mdb").exists()


def test_cli_without_postgres_support_says_which_extra(tmp_path: Path) -> None:
    make_store(tmp_path / "a")
    # Whatever is installed here, the PostgreSQL store cannot be imported in this process.
    code = (
        "import sys; sys.modules['kms_iface.stores.postgres'] = None; "
        "from kms_iface.cli import main; main()"
    )
    dsn_config = config_file(
        tmp_path / "pg.toml",
        '[default_store]\nkind = "postgres"\ndsn = "postgresql://kms:s3cret@db.example/kms"\n',
    )
    for target in ("postgresql://kms:s3cret@db.example/kms", "host=db.example password=s3cret"):
        for to in (target, str(dsn_config)):
            done = run_cli("store", "copy", "--from", str(tmp_path / "a"), "--to", to, code=code)
            assert_failed(done, 2, "kms-iface[postgres]")
            assert "s3cret" not in done.stderr + done.stdout


def test_cli_errors_of_the_library_are_one_line(tmp_path: Path) -> None:
    broken = config_file(tmp_path / "broken.toml", '[default_store]\nkind = "sqlite"\n')
    done = run_cli("store", "copy", "--from", str(broken), "--to", str(tmp_path / "b"))
    assert_failed(done, 1, "default_store.kind")


# -- LMDB <-> PostgreSQL ----------------------------------------------------------------------


async def test_copy_lmdb_to_postgres_and_back(tmp_path: Path) -> None:
    dsn = await anyio.to_thread.run_sync(new_database)
    try:
        async with (
            LmdbStore(tmp_path / "a") as source,
            PostgresStore(dsn, pool_size=4) as postgres,
            LmdbStore(tmp_path / "b") as back,
        ):
            corpus = await populate(source)
            expected = CopyReport(len(corpus.uids), corpus.grants, "dump")
            assert await copy_store(source, postgres, batch=4) == expected
            assert await dumped(postgres, 3) == await dumped(source)
            await assert_same_objects(source, postgres, corpus)
            await assert_same_grants(source, postgres, corpus)
            assert await copy_store(postgres, back, batch=4) == expected
            assert await dumped(back) == await dumped(source)
            await assert_same_objects(source, back, corpus)
            await assert_same_grants(source, back, corpus)
    finally:
        await anyio.to_thread.run_sync(drop_database, dsn)


def test_cli_lmdb_to_postgres_and_back(tmp_path: Path) -> None:
    dsn = new_database()
    try:
        corpus = make_store(tmp_path / "a")
        done = run_cli("store", "copy", "--from", str(tmp_path / "a"), "--to", dsn)
        assert done.returncode == 0, done.stderr
        assert f"copied {len(corpus.uids)} objects and {corpus.grants} grants" in done.stdout
        again = run_cli("store", "copy", "--from", str(tmp_path / "a"), "--to", dsn)
        assert_failed(again, 1, "--force")
        config = config_file(
            tmp_path / "pg.toml", f'[default_store]\nkind = "postgres"\ndsn = "{dsn}"\n'
        )
        back = run_cli("store", "copy", "--from", str(config), "--to", str(tmp_path / "b"))
        assert back.returncode == 0, back.stderr
        assert dump_of(tmp_path / "b") == dump_of(tmp_path / "a")
        assert PASSWORD not in done.stdout + done.stderr + back.stdout + back.stderr
    finally:
        drop_database(dsn)
