"""The uid router ``Database`` over real LMDB stores (and a real HSM oracle), asyncio and trio.

The whole store conformance suite also runs through the router (backend ``router``); this file
covers what only a router has: prefixes, routing, merging, batches over stores, ownership. The
``FaultyStore`` below exists only to inject faults (failures, a stall) into a registered store.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from kms_iface import (
    Create,
    DbError,
    Delete,
    HsmKeyAlgorithm,
    InvalidRequestError,
    UpdateState,
    Upsert,
)
from kms_iface.database import Database
from kms_iface.hsm_oracle import HsmEncryptionOracle
from kms_iface.kmip.attributes import Attributes
from kms_iface.kmip.enums import KmipOperation, State
from kms_iface.kmip.objects import Object
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.pkcs11_hsm import Pkcs11Hsm
from kms_iface.stores import LmdbStore
from kms_iface.stores.base import AtomicOperation, FoundObject, ObjectsStore, ObjectWithMetadata
from tests.store_conformance.model import OWNER, U1, key_attributes, symmetric_key, wrapped_key

pytestmark = pytest.mark.anyio

GET = {KmipOperation.Get}


def no_hsm(uid: str) -> str:
    return (
        f"Invalid Request: No HSM is configured for UID '{uid}'. "
        "Start the server with an HSM plugin to create HSM keys."
    )


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Stores:
    """The real stores behind ``db``: ``main`` (default + permissions) and ``ext`` ("ext::")."""

    def __init__(self, tmp_path: Path) -> None:
        self.main = LmdbStore(tmp_path / "main")
        self.ext = LmdbStore(tmp_path / "ext")
        self.db = Database(self.main, self.main)
        self.db.register_objects_store("ext", self.ext)


@pytest.fixture
async def stores(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Stores]:
    s = Stores(tmp_path)
    async with s.db:
        yield s


async def put(store: ObjectsStore, uid: str, tags: Iterable[str] = (), owner: str = OWNER) -> None:
    await store.create(uid, owner, symmetric_key(uid), key_attributes(), set(tags))


# --------------------------------------------------------------------------------------------
# Fault injection only: a registered store whose every call first awaits ``fault``
# --------------------------------------------------------------------------------------------


class FaultyStore(ObjectsStore):
    """Awaits ``fault()`` (which raises or stalls) in every call, then answers "nothing";
    ``close`` raises ``close_error`` when set."""

    def __init__(
        self, fault: Callable[[], Awaitable[None]], close_error: Exception | None = None
    ) -> None:
        self.fault = fault
        self.close_error = close_error

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        if self.close_error is not None:
            raise self.close_error

    async def create(
        self, uid: str | None, owner: str, object: Object, attributes: Attributes, tags: Any
    ) -> str:
        await self.fault()
        return ""

    async def retrieve(self, uid: str) -> ObjectWithMetadata | None:
        await self.fault()
        return None

    async def retrieve_tags(self, uid: str) -> set[str]:
        await self.fault()
        return set()

    async def update_object(
        self, uid: str, object: Object, attributes: Attributes, tags: Any = None
    ) -> None:
        await self.fault()

    async def update_state(self, uid: str, state: State) -> None:
        await self.fault()

    async def delete(self, uid: str) -> None:
        await self.fault()

    async def atomic(self, user: str, operations: Sequence[AtomicOperation]) -> list[str]:
        await self.fault()
        return []

    async def is_object_owned_by(self, uid: str, owner: str) -> bool:
        await self.fault()
        return False

    async def list_uids_for_tags(self, tags: Iterable[str]) -> set[str]:
        await self.fault()
        return set()

    async def find(
        self,
        researched_attributes: Attributes | None,
        state: State | None,
        user: str,
        user_must_be_owner: bool,
        vendor_id: str = "cosmian",
    ) -> list[FoundObject]:
        await self.fault()
        return []

    async def find_wrapped_by(self, wrapping_key_uid: str, user: str) -> list[FoundObject]:
        await self.fault()
        return []

    async def find_due_for_rotation(self, now: object) -> list[str]:
        await self.fault()
        return []

    async def find_by_rotate_name(self, rotate_name: str) -> list[str]:
        await self.fault()
        return []

    async def count_all_non_destroyed(self) -> int:
        await self.fault()
        return 0

    async def count_non_destroyed_keys(self) -> int:
        await self.fault()
        return 0


def raising(error: Exception) -> Callable[[], Awaitable[None]]:
    async def fault() -> None:
        raise error

    return fault


async def no_fault() -> None:
    pass


@pytest.fixture
async def hsm(anyio_backend: str, token: SoftHsmToken, slot: int) -> AsyncIterator[Pkcs11Hsm]:
    async with Pkcs11Hsm(token.module, {slot: token.user_pin}, profile="softhsm2") as opened:
        yield opened


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------


async def test_every_objects_method_follows_the_uid(stores: Stores) -> None:
    db, main, ext = stores.db, stores.main, stores.ext
    for uid, home, other in [("k", main, ext), ("ext::k", ext, main)]:
        assert await db.create(uid, OWNER, symmetric_key(uid), key_attributes(), {"t"}) == uid
        assert await other.retrieve(uid) is None
        got = await db.retrieve(uid)
        assert got == await home.retrieve(uid)
        assert got is not None
        assert got.owner == OWNER
        assert await db.retrieve_tags(uid) == {"t"}
        assert await db.is_object_owned_by(uid, OWNER)
        assert not await db.is_object_owned_by(uid, U1)
        await db.update_object(uid, symmetric_key("new"), key_attributes(comment="c"), {"u"})
        assert await home.retrieve_tags(uid) == {"u"}
        await db.update_state(uid, State.Active)
        updated = await home.retrieve(uid)
        assert updated is not None
        assert (updated.state, updated.object) == (State.Active, symmetric_key("new"))
        await db.delete(uid)
        assert await home.retrieve(uid) is None


async def test_a_create_without_uid_goes_to_the_default_store(stores: Stores) -> None:
    uid = await stores.db.create(None, OWNER, symmetric_key("x"), key_attributes(), set())
    assert uuid.UUID(uid).version == 4
    assert await stores.main.retrieve(uid) is not None


async def test_the_longest_prefix_wins(stores: Stores, tmp_path: Path) -> None:
    deep = LmdbStore(tmp_path / "deep")
    async with deep:
        stores.db.register_objects_store("ext::deep", deep)
        for uid, home in [
            ("ext::deep::k", deep),
            ("ext::deeper::k", stores.ext),  # a prefix ends at "::", not inside a word
            ("ext::k", stores.ext),
            ("extra::k", stores.main),
            ("ext", stores.main),
        ]:
            assert stores.db.objects_store_for(uid) is home, uid
            await put(stores.db, uid)
            assert await home.retrieve(uid) is not None, uid


async def test_an_unrouted_uid_with_a_separator_goes_to_the_default_store(stores: Stores) -> None:
    for uid in ["a::b", "ext:k", "hsm", "HSM::0::k", "x::hsm::0::k"]:
        assert stores.db.objects_store_for(uid) is stores.main
        await put(stores.db, uid)
        assert await stores.main.retrieve(uid) is not None


async def test_an_unrouted_hsm_uid_is_refused_by_every_routed_method(stores: Stores) -> None:
    db, uid = stores.db, "hsm::0::k"
    key, attrs = symmetric_key("k"), key_attributes()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: db.create(uid, OWNER, key, attrs, set()),
        lambda: db.retrieve(uid),
        lambda: db.retrieve_objects(uid),
        lambda: db.retrieve_tags(uid),
        lambda: db.update_object(uid, key, attrs),
        lambda: db.update_state(uid, State.Active),
        lambda: db.delete(uid),
        lambda: db.is_object_owned_by(uid, OWNER),
        lambda: db.atomic(OWNER, [Create(uid, key, attrs, set())]),
        lambda: db.atomic(OWNER, [Create("k", key, attrs, set()), Delete(uid)]),
    ]
    for call in calls:
        with pytest.raises(InvalidRequestError) as refused:
            await call()
        assert str(refused.value) == no_hsm(uid)
    with pytest.raises(InvalidRequestError) as refused:
        db.objects_store_for("hsm::softhsm2::0::a::b")
    assert str(refused.value) == no_hsm("hsm::softhsm2::0::a::b")
    assert await stores.main.retrieve("k") is None  # the refused batch wrote nothing


async def test_an_hsm_uid_goes_to_a_registered_hsm_prefix(stores: Stores, tmp_path: Path) -> None:
    hsm_like = LmdbStore(tmp_path / "hsm-like")
    async with hsm_like:
        stores.db.register_objects_store("hsm::softhsm2", hsm_like)
        assert stores.db.objects_store_for("hsm::softhsm2::0::k") is hsm_like
        with pytest.raises(InvalidRequestError) as refused:
            stores.db.objects_store_for("hsm::0::k")  # "hsm" itself is still not registered
        assert str(refused.value) == no_hsm("hsm::0::k")
        stores.db.register_objects_store("hsm", stores.ext)
        assert stores.db.objects_store_for("hsm::0::k") is stores.ext
        assert stores.db.objects_store_for("hsm::softhsm2::0::k") is hsm_like


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------

BAD_PREFIX = (
    "Invalid Request: Invalid uid prefix {!r}: a prefix is non-empty words joined by '::' "
    "(e.g. 'hsm::utimaco'), without white space or control characters"
)


@pytest.mark.parametrize(
    "prefix", ["", "::", "a::", "::a", "a::::b", "a b", " a", "a\tb", "a\nb", "a\x00b", "a\x7f"]
)
async def test_a_malformed_prefix_is_refused(tmp_path: Path, hsm: Pkcs11Hsm, prefix: str) -> None:
    db = Database(LmdbStore(tmp_path / "m"), LmdbStore(tmp_path / "m"))
    oracle = HsmEncryptionOracle(hsm, "hsm")
    registrations: list[Callable[[], None]] = [
        lambda: db.register_objects_store(prefix, LmdbStore(tmp_path / "x")),
        lambda: db.register_encryption_oracle(prefix, oracle),
    ]
    for register in registrations:
        with pytest.raises(InvalidRequestError) as refused:
            register()
        assert str(refused.value) == BAD_PREFIX.format(prefix)
    assert dict(db.objects_stores) == {}
    assert dict(db.encryption_oracles) == {}


async def test_registration_and_unregistration(stores: Stores, tmp_path: Path) -> None:
    db, other = stores.db, LmdbStore(tmp_path / "other")
    with pytest.raises(InvalidRequestError) as refused:
        db.register_objects_store("ext", other)
    assert str(refused.value) == (
        "Invalid Request: An objects store is already registered under the prefix 'ext'"
    )
    assert db.objects_store_for("ext::k") is stores.ext  # unchanged
    db.register_objects_store("hsm::utimaco_1", other)
    assert dict(db.objects_stores) == {"ext": stores.ext, "hsm::utimaco_1": other}
    with pytest.raises(TypeError):
        db.objects_stores["x"] = other  # type: ignore[index]

    assert db.unregister_objects_store("ext") is stores.ext
    assert db.objects_store_for("ext::k") is stores.main
    await put(db, "ext::k")
    assert await stores.main.retrieve("ext::k") is not None
    assert await stores.ext.retrieve("ext::k") is None  # handed back still open
    with pytest.raises(InvalidRequestError) as refused:
        db.unregister_objects_store("ext")
    assert (
        str(refused.value)
        == "Invalid Request: No objects store is registered under the prefix 'ext'"
    )
    assert db.default_store is stores.main
    assert db.permissions_store is stores.main


# --------------------------------------------------------------------------------------------
# Oracles (a real HsmEncryptionOracle over the SoftHSM2 test token)
# --------------------------------------------------------------------------------------------


async def test_encryption_oracles_by_longest_prefix(
    tmp_path: Path, hsm: Pkcs11Hsm, slot: int
) -> None:
    db = Database(LmdbStore(tmp_path / "m"), LmdbStore(tmp_path / "m"))
    single, named = HsmEncryptionOracle(hsm, "hsm"), HsmEncryptionOracle(hsm, "hsm::softhsm2")
    db.register_encryption_oracle("hsm", single)
    db.register_encryption_oracle("hsm::softhsm2", named)
    assert db.encryption_oracle(f"hsm::{slot}::k") is single
    assert db.encryption_oracle(f"hsm::softhsm2::{slot}::k") is named
    assert db.encryption_oracle(f"hsm::softhsm2_1::{slot}::k") is single
    for unrouted in ["k", "hsm", "other::0::k", "hsmx::0::k"]:
        assert db.encryption_oracle(unrouted) is None
    assert dict(db.encryption_oracles) == {"hsm": single, "hsm::softhsm2": named}

    key_id = f"router-{uuid.uuid4()}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, sensitive=True)
    try:
        uid = f"hsm::softhsm2::{slot}::{key_id}"
        oracle = db.encryption_oracle(uid)
        assert oracle is not None
        sealed = await oracle.encrypt(uid, b"data")
        assert sealed.iv is not None and sealed.tag is not None
        with await oracle.decrypt(uid, sealed.iv + sealed.ciphertext + sealed.tag) as plain:
            assert plain == b"data"
    finally:
        await hsm.delete(slot, key_id)

    with pytest.raises(InvalidRequestError) as refused:
        db.register_encryption_oracle("hsm", named)
    assert str(refused.value) == (
        "Invalid Request: An encryption oracle is already registered under the prefix 'hsm'"
    )
    assert db.unregister_encryption_oracle("hsm::softhsm2") is named
    assert db.encryption_oracle(f"hsm::softhsm2::{slot}::k") is single
    with pytest.raises(InvalidRequestError) as refused:
        db.unregister_encryption_oracle("hsm::softhsm2")
    assert str(refused.value) == (
        "Invalid Request: No encryption oracle is registered under the prefix 'hsm::softhsm2'"
    )


# --------------------------------------------------------------------------------------------
# retrieve_objects
# --------------------------------------------------------------------------------------------


async def test_retrieve_objects_by_uid(stores: Stores) -> None:
    await put(stores.db, "k")
    await put(stores.db, "ext::k")
    for uid in ["k", "ext::k"]:
        got = await stores.db.retrieve_objects(uid)
        assert list(got) == [uid]
        assert got[uid] == await stores.db.retrieve(uid)
    assert await stores.db.retrieve_objects("missing") == {}
    assert await stores.db.retrieve_objects("t1") == {}  # not a tag list: a uid


async def test_retrieve_objects_by_tags_over_every_store(stores: Stores) -> None:
    await put(stores.db, "a", {"t1", "t2"})
    await put(stores.db, "b", {"t1"})
    await put(stores.db, "ext::c", {"t1", "t2", "é"})
    both = await stores.db.retrieve_objects('["t1", "t2"]')
    assert sorted(both) == ["a", "ext::c"]
    assert both["ext::c"] == await stores.ext.retrieve("ext::c")
    assert sorted(await stores.db.retrieve_objects('["t1"]')) == ["a", "b", "ext::c"]
    assert list(await stores.db.retrieve_objects('["é"]')) == ["ext::c"]
    assert await stores.db.retrieve_objects('["nobody"]') == {}


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('["t1",', "Input data was truncated"),
        ('["t1" "t2"]', "JSON is malformed: expected ',' or ']' (byte 6)"),
        ('["t1"] x', "JSON is malformed: trailing characters (byte 8)"),
        ("[1]", "Expected `str`, got `int` - at `$[0]`"),
    ],
)
async def test_retrieve_objects_refuses_a_malformed_tag_list(
    stores: Stores, text: str, detail: str
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        await stores.db.retrieve_objects(text)
    assert (
        str(refused.value) == f"Invalid Request: The tags must be a JSON array of strings: {detail}"
    )


async def test_one_str_is_not_a_tag_list(stores: Stores) -> None:
    await put(stores.main, "k", tags=["a", "b"])
    with pytest.raises(InvalidRequestError, match="not one str"):
        await stores.db.list_uids_for_tags("ab")


# --------------------------------------------------------------------------------------------
# Queries over every store
# --------------------------------------------------------------------------------------------


async def test_queries_merge_every_store(stores: Stores, tmp_path: Path) -> None:
    db = stores.db
    await put(db, "a", {"t"})
    await put(db, "ext::b", {"t"})
    await db.create("w1", OWNER, wrapped_key("w1", "kek"), key_attributes(), set())
    await db.create("ext::w2", OWNER, wrapped_key("w2", "kek"), key_attributes(), set())
    assert await db.list_uids_for_tags(iter(["t"])) == {"a", "ext::b"}  # a one-shot iterable
    found = await db.find(key_attributes(), None, OWNER, True)
    uids = [uid for uid, _, _ in found]
    assert (sorted(uids[:2]), sorted(uids[2:])) == (["a", "w1"], ["ext::b", "ext::w2"])
    assert all((state, attrs) == (State.PreActive, key_attributes()) for _, state, attrs in found)
    assert sorted(uid for uid, _, _ in await db.find_wrapped_by("kek", OWNER)) == [
        "ext::w2",
        "w1",
    ]
    assert await db.count_all_non_destroyed() == 4
    assert await db.count_non_destroyed_keys() == 0  # LmdbStore cannot count keys apart
    assert await db.find_due_for_rotation(None) == []
    assert await db.find_by_rotate_name("r") == []
    # a store registered under two prefixes is asked once
    db.register_objects_store("alias", stores.ext)
    assert await db.list_uids_for_tags({"t"}) == {"a", "ext::b"}
    assert len(await db.find(None, None, OWNER, True)) == 4


def _fan_out_calls(db: Database) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "list_uids_for_tags": lambda: db.list_uids_for_tags({"secret-tag"}),
        "find": lambda: db.find(None, None, "secret-user", False),
        "find_wrapped_by": lambda: db.find_wrapped_by("kek", "secret-user"),
        "find_due_for_rotation": lambda: db.find_due_for_rotation(None),
        "find_by_rotate_name": lambda: db.find_by_rotate_name("secret-name"),
        "count_all_non_destroyed": lambda: db.count_all_non_destroyed(),
        "count_non_destroyed_keys": lambda: db.count_non_destroyed_keys(),
    }


async def test_a_failing_registered_store_is_logged_and_left_out(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    db = stores.db
    await put(db, "a", {"secret-tag"}, owner="secret-user")
    await put(db, "ext::b", {"secret-tag"}, owner="secret-user")
    db.register_objects_store("bad", FaultyStore(raising(DbError("disk on fire"))))
    db.register_objects_store("odd", FaultyStore(raising(RuntimeError("secret-detail"))))
    expected: dict[str, object] = {
        "list_uids_for_tags": {"a", "ext::b"},
        "find": ["a", "ext::b"],
        "find_wrapped_by": [],
        "find_due_for_rotation": [],
        "find_by_rotate_name": [],
        "count_all_non_destroyed": 2,
        "count_non_destroyed_keys": 0,
    }
    for operation, call in _fan_out_calls(db).items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kms_iface.database"):
            answer = await call()
        if operation == "find":
            assert isinstance(answer, list)
            answer = [uid for uid, _, _ in answer]
        assert answer == expected[operation], operation
        assert [(r.name, r.levelno) for r in caplog.records] == [
            ("kms_iface.database", logging.WARNING)
        ] * 2
        assert [r.getMessage() for r in caplog.records] == [
            f"the objects store of prefix 'bad' failed in {operation} and is left out of the "
            "answer: DbError: Database Error: disk on fire",
            f"the objects store of prefix 'odd' failed in {operation} and is left out of the "
            "answer: RuntimeError",  # only an InterfaceError's text is known to be secret-free
        ]
        assert "secret" not in caplog.text


async def test_a_failing_default_store_raises(tmp_path: Path) -> None:
    ext = LmdbStore(tmp_path / "ext")
    db = Database(FaultyStore(raising(DbError("default down"))), LmdbStore(tmp_path / "perms"))
    db.register_objects_store("ext", ext)
    async with ext:
        await put(ext, "ext::b", {"secret-tag"}, owner="secret-user")
        for operation, call in _fan_out_calls(db).items():
            with pytest.raises(DbError) as failed:
                await call()
            assert str(failed.value) == "Database Error: default down", operation


async def test_every_store_is_asked_at_once(stores: Stores) -> None:
    """Two registered stores that each wait for the other: a sequential fan-out would hang."""
    arrived = [anyio.Event(), anyio.Event()]

    def meet(me: int) -> Callable[[], Awaitable[None]]:
        async def fault() -> None:
            arrived[me].set()
            await arrived[1 - me].wait()

        return fault

    stores.db.register_objects_store("s0", FaultyStore(meet(0)))
    stores.db.register_objects_store("s1", FaultyStore(meet(1)))
    await put(stores.db, "a", {"t"})
    with anyio.fail_after(30):  # a deadlock guard, not a timing assertion
        assert await stores.db.list_uids_for_tags({"t"}) == {"a"}


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


async def test_a_batch_goes_to_the_store_of_its_uids(stores: Stores) -> None:
    db, key, attrs = stores.db, symmetric_key("k"), key_attributes()
    assert await db.atomic(OWNER, []) == []
    uids = await db.atomic(
        OWNER,
        [
            Create("ext::a", key, attrs, {"t"}),
            Upsert("ext::b", key, attrs, None, State.Active),
            UpdateState("ext::a", State.Deactivated),
        ],
    )
    assert uids == ["ext::a", "ext::b", "ext::a"]
    got = await stores.ext.retrieve("ext::a")
    assert got is not None
    assert got.state == State.Deactivated
    assert await stores.main.retrieve("ext::a") is None

    fresh = await db.atomic(
        OWNER, [Create(None, key, attrs, set()), Create("c", key, attrs, set())]
    )
    assert fresh[1] == "c"
    assert await stores.main.retrieve(fresh[0]) is not None

    # a store registered under two prefixes is one store: its batch may mix them
    db.register_objects_store("alias", stores.main)
    await db.atomic(OWNER, [Create("d", key, attrs, set()), Create("alias::e", key, attrs, set())])
    assert await stores.main.retrieve("alias::e") is not None


@pytest.mark.parametrize(
    ("first", "second", "names"),
    [
        ("a", "ext::b", "'a' and 'ext::b'"),
        ("ext::b", "a", "'ext::b' and 'a'"),
    ],
)
async def test_a_batch_over_two_stores_is_refused(
    stores: Stores, first: str | None, second: str | None, names: str
) -> None:
    key, attrs = symmetric_key("k"), key_attributes()
    batch: list[AtomicOperation] = [
        Create(first, key, attrs, set()),
        Create(second, key, attrs, set()),
    ]
    with pytest.raises(InvalidRequestError) as refused:
        await stores.db.atomic(OWNER, batch)
    assert str(refused.value) == (
        f"Invalid Request: An atomic batch cannot span several stores: {names} are in "
        "different stores"
    )
    assert await stores.main.find(None, None, OWNER, True) == []
    assert await stores.ext.find(None, None, OWNER, True) == []


async def test_a_create_without_uid_goes_with_its_batch(stores: Stores) -> None:
    """As an HSM key pair's public half does: the store of the batch's uids makes its uid."""
    key, attrs = symmetric_key("k"), key_attributes()
    made = await stores.db.atomic(
        OWNER, [Create(None, key, attrs, set()), Create("ext::b", key, attrs, set())]
    )
    assert made[1] == "ext::b" and await stores.ext.retrieve(made[0]) is not None
    [alone] = await stores.db.atomic(OWNER, [Create(None, key, attrs, set())])
    assert await stores.main.retrieve(alone) is not None


# --------------------------------------------------------------------------------------------
# Permissions
# --------------------------------------------------------------------------------------------


async def test_permissions_go_to_the_permissions_store_for_every_uid(tmp_path: Path) -> None:
    objects, perms, ext = (LmdbStore(tmp_path / name) for name in ("objects", "perms", "ext"))
    db = Database(objects, perms)
    db.register_objects_store("ext", ext)
    async with db:
        await put(db, "ext::k")
        for uid in ["k", "ext::k", "hsm::0::k"]:
            await db.grant_operations(uid, U1, {KmipOperation.Get, KmipOperation.Encrypt})
            await db.remove_operations(uid, U1, {KmipOperation.Encrypt})
            assert await perms.list_object_operations_granted(uid) == {U1: GET}
            assert await db.list_object_operations_granted(uid) == {U1: GET}
            assert await db.list_user_operations_on_object(uid, U1, True) == GET
            for other in (objects, ext):
                assert await other.list_object_operations_granted(uid) == {}
        assert await db.list_user_operations_granted(U1) == {
            uid: ("", State.Active, GET) for uid in ["k", "ext::k", "hsm::0::k"]
        }


async def test_deleting_an_object_held_elsewhere_drops_its_grants(stores: Stores) -> None:
    db = stores.db
    for uid in ["ext::a", "ext::b", "k"]:
        await put(db, uid)
        await db.grant_operations(uid, U1, GET)
        await db.grant_operations(uid, "*", GET)
    await db.grant_operations("ext::kept", U1, GET)
    await db.delete("ext::a")
    await db.atomic(OWNER, [Delete("ext::b")])
    await db.delete("k")
    for uid in ["ext::a", "ext::b", "k"]:
        assert await stores.main.list_object_operations_granted(uid) == {}, uid
    assert await db.list_object_operations_granted("ext::kept") == {U1: GET}


# --------------------------------------------------------------------------------------------
# Life cycle: the Database opens and closes every store it holds
# --------------------------------------------------------------------------------------------


async def _is_open(store: LmdbStore) -> bool:
    try:
        await store.retrieve("probe")
    except DbError:
        return False
    return True


async def test_open_and_close_cover_every_store_held(tmp_path: Path) -> None:
    objects, perms, ext, late = (
        LmdbStore(tmp_path / name) for name in ("objects", "perms", "ext", "late")
    )
    db = Database(objects, perms)
    db.register_objects_store("ext", ext)
    async with db:
        assert [await _is_open(s) for s in (objects, perms, ext)] == [True, True, True]
        await late.open()  # registered while open: the caller opens it, the Database closes it
        db.register_objects_store("late", late)
        await put(db, "late::k")
        assert db.unregister_objects_store("ext") is ext  # handed back: not closed
    assert [await _is_open(s) for s in (objects, perms, late)] == [False, False, False]
    assert await _is_open(ext)
    await ext.close()
    await db.close()  # idempotent

    await db.open()  # and open again
    got = await db.retrieve("late::k")
    assert got is not None
    await db.close()


async def test_a_failed_open_closes_what_it_opened(tmp_path: Path) -> None:
    objects = LmdbStore(tmp_path / "objects")
    (tmp_path / "a-file").write_bytes(b"")
    unopenable = LmdbStore(tmp_path / "a-file")
    db = Database(objects, objects)
    db.register_objects_store("x", unopenable)
    with pytest.raises(DbError, match="cannot open the LMDB store"):
        await db.open()
    assert not await _is_open(objects)


async def test_close_closes_every_store_and_raises_the_first_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    objects = LmdbStore(tmp_path / "objects")
    first = FaultyStore(no_fault, close_error=DbError("a failed"))
    second = FaultyStore(no_fault, close_error=DbError("b failed"))
    db = Database(objects, objects)
    db.register_objects_store("a", first)
    db.register_objects_store("b", second)
    await db.open()
    with (
        caplog.at_level(logging.WARNING, logger="kms_iface.database"),
        pytest.raises(DbError) as failed,
    ):
        await db.close()
    assert str(failed.value) == "Database Error: b failed"  # registered stores close last first
    assert [r.getMessage() for r in caplog.records] == [
        f"closing {first!r} failed too: DbError: Database Error: a failed"
    ]
    assert not await _is_open(objects)
