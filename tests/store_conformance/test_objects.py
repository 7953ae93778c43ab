"""Objects: round trip, create/update/delete semantics, tags (scenarios 1, 7, 10, 11)."""

from __future__ import annotations

import uuid

import pytest

from kms_iface.errors import DbError
from kms_iface.kmip.attributes import Link
from kms_iface.kmip.enums import KmipOperation, LinkType, State
from kms_iface.stores.base import ObjectWithMetadata
from tests.store_conformance.backends import Store
from tests.store_conformance.model import (
    OTHER,
    OWNER,
    U1,
    U2,
    attributes_with,
    copy_attributes,
    key_attributes,
    symmetric_key,
)

pytestmark = pytest.mark.anyio

UNUSUAL_TAGS = {"é", "a::b", "with space", "🔑", '["json", "array"]', "*", "_kk"}


# --- Scenario 1: round trip -------------------------------------------------------------------


async def test_round_trip(store: Store) -> None:
    """Scenario 1: explicit uid, ownership, equal object back, the owner, PreActive."""
    uid = "uid-é::1"
    attributes = key_attributes()
    obj = symmetric_key("round trip", attributes)
    assert await store.create(uid, OWNER, obj, attributes, set()) == uid
    assert await store.is_object_owned_by(uid, OWNER)
    assert not await store.is_object_owned_by(uid, "INVALID OWNER")
    got = await store.retrieve(uid)
    assert got == ObjectWithMetadata(
        id=uid,
        object=symmetric_key("round trip", key_attributes()),
        owner=OWNER,
        state=State.PreActive,
        attributes=key_attributes(),
    )


async def test_create_without_uid_returns_fresh_uuid4(store: Store) -> None:
    """Scenario 1: ``create(None, ...)`` returns a fresh UUIDv4 under which the object lives."""
    uids = []
    for index in range(3):
        attributes = key_attributes(comment=f"n{index}")
        uid = await store.create(None, U1, symmetric_key(f"n{index}"), attributes, {"t"})
        parsed = uuid.UUID(uid)
        assert parsed.version == 4
        assert str(parsed) == uid  # canonical lower-case hyphenated form
        got = await store.retrieve(uid)
        assert got is not None
        assert got.id == uid
        assert got.owner == U1
        assert got.object == symmetric_key(f"n{index}")
        assert got.attributes == key_attributes(comment=f"n{index}")
        uids.append(uid)
    assert len(set(uids)) == 3
    assert await store.list_uids_for_tags({"t"}) == set(uids)


@pytest.mark.parametrize("state", [State.Active, State.Deactivated, State.PreActive])
async def test_create_state_comes_from_attributes(store: Store, state: State) -> None:
    """The stored state is ``attributes.state`` when set (PreActive otherwise: round trip)."""
    attributes = key_attributes(state=state)
    uid = await store.create("stated", OWNER, symmetric_key("s"), attributes, set())
    got = await store.retrieve(uid)
    assert got is not None
    assert got.state == state
    assert got.attributes == key_attributes(state=state)


async def test_retrieve_unknown_uid(store: Store) -> None:
    assert await store.retrieve("no such uid") is None
    assert await store.retrieve_tags("no such uid") == set()
    assert not await store.is_object_owned_by("no such uid", OWNER)
    assert not await store.is_object_owned_by("no such uid", "")


async def test_is_object_owned_by_is_an_exact_match(store: Store) -> None:
    await store.create("owned", OWNER, symmetric_key("o"), key_attributes(), set())
    await store.create("owned-2", U1, symmetric_key("o2"), key_attributes(), set())
    assert await store.is_object_owned_by("owned", OWNER)
    for not_the_owner in (
        OTHER,  # case differs
        OWNER[:-1],  # prefix
        OWNER + " ",
        " " + OWNER,
        "",
        "*",
        "e@x.org",  # accent stripped
        "é@x.org.evil",
        U1,
    ):
        assert not await store.is_object_owned_by("owned", not_the_owner), not_the_owner
    assert await store.is_object_owned_by("owned-2", U1)
    assert not await store.is_object_owned_by("owned-2", "a:")
    assert not await store.is_object_owned_by("owned-2", "a::")
    # the uid is matched exactly too
    assert not await store.is_object_owned_by("owne", OWNER)
    assert not await store.is_object_owned_by("owned ", OWNER)


async def test_duplicate_create_raises_db_error_and_changes_nothing(store: Store) -> None:
    uid = "dup é::1"
    await store.create(uid, OWNER, symmetric_key("first"), key_attributes(comment="1"), {"t1"})
    await store.grant_operations(uid, U1, {KmipOperation.Get})
    before = await store.retrieve(uid)
    for owner in (OWNER, OTHER):
        with pytest.raises(DbError):
            await store.create(
                uid,
                owner,
                symmetric_key("second"),
                key_attributes(comment="2", state=State.Active),
                {"t2"},
            )
    after = await store.retrieve(uid)
    assert after == before
    assert after == ObjectWithMetadata(
        uid, symmetric_key("first"), OWNER, State.PreActive, key_attributes(comment="1")
    )
    assert await store.retrieve_tags(uid) == {"t1"}
    assert await store.list_uids_for_tags({"t2"}) == set()
    assert await store.list_uids_for_tags({"t1"}) == {uid}
    assert not await store.is_object_owned_by(uid, OTHER)
    assert await store.list_object_operations_granted(uid) == {U1: {KmipOperation.Get}}


# --- Tags (scenarios 7 and 11) -----------------------------------------------------------------


async def test_tags(store: Store) -> None:
    """Scenario 7: exact tags back; AND lookups; attributes exactly as passed."""
    attributes = key_attributes()
    obj = symmetric_key("tagged", attributes)
    uid = await store.create("tagged", OWNER, obj, attributes, {"tag1", "tag2"})
    assert await store.retrieve_tags(uid) == {"tag1", "tag2"}
    assert await store.list_uids_for_tags({"tag1"}) == {uid}
    assert await store.list_uids_for_tags({"tag2"}) == {uid}
    assert await store.list_uids_for_tags({"tag1", "tag2"}) == {uid}
    assert await store.list_uids_for_tags({"tag1", "tag2", "tag3"}) == set()
    assert await store.list_uids_for_tags({"tag3"}) == set()
    got = await store.retrieve(uid)
    assert got is not None
    # the user tags are not merged into the stored attributes, nor into the object
    assert got.attributes == key_attributes()
    assert got.attributes.vendor_attributes is None
    assert got.object == symmetric_key("tagged", key_attributes())


async def test_tags_are_stored_apart_from_attributes(store: Store) -> None:
    """A tag vendor attribute stays as the caller put it and is never read into the tag index."""
    attributes = key_attributes()
    attributes.set_tags("cosmian", {"in-attributes", "shared"})
    expected = copy_attributes(attributes)
    uid = await store.create("apart", OWNER, symmetric_key("apart"), attributes, {"real", "shared"})
    assert await store.retrieve_tags(uid) == {"real", "shared"}
    got = await store.retrieve(uid)
    assert got is not None
    assert got.attributes == expected
    assert got.attributes.get_tags("cosmian") == {"in-attributes", "shared"}
    assert await store.list_uids_for_tags({"in-attributes"}) == set()
    assert await store.list_uids_for_tags({"real"}) == {uid}
    # the same holds for update_object with new tags
    await store.update_object(uid, symmetric_key("apart"), attributes, {"newer"})
    got = await store.retrieve(uid)
    assert got is not None
    assert got.attributes == expected
    assert await store.retrieve_tags(uid) == {"newer"}
    assert await store.list_uids_for_tags({"in-attributes"}) == set()


async def test_unusual_tags(store: Store) -> None:
    uid = await store.create("unusual", U1, symmetric_key("u"), key_attributes(), UNUSUAL_TAGS)
    assert await store.retrieve_tags(uid) == UNUSUAL_TAGS
    for tag in UNUSUAL_TAGS:
        assert await store.list_uids_for_tags({tag}) == {uid}, tag
    assert await store.list_uids_for_tags(UNUSUAL_TAGS) == {uid}
    # no normalisation, no prefix matching
    for near_miss in ("e", "É", "a:", "a::", "with", "[", '["json"]', "**", "_k", "_KK"):
        assert await store.list_uids_for_tags({near_miss}) == set(), near_miss


async def test_tag_index(store: Store) -> None:
    """Scenario 11: uid1 {t1}, uid2 {t1, t2}."""
    uid1 = await store.create("uid1", OWNER, symmetric_key("1"), key_attributes(), {"t1"})
    uid2 = await store.create("uid2", OWNER, symmetric_key("2"), key_attributes(), {"t1", "t2"})
    assert await store.list_uids_for_tags({"t1"}) == {uid1, uid2}
    assert await store.list_uids_for_tags({"t2"}) == {uid2}
    assert await store.list_uids_for_tags({"t1", "t2"}) == {uid2}
    assert await store.list_uids_for_tags({"t2", "t3"}) == set()


async def test_tags_accept_any_iterable(store: Store) -> None:
    uid = await store.create("iter", OWNER, symmetric_key("i"), key_attributes(), ["x", "y", "x"])
    assert await store.retrieve_tags(uid) == {"x", "y"}
    assert await store.list_uids_for_tags(iter(["y", "x"])) == {uid}
    await store.update_object(uid, symmetric_key("i"), key_attributes(), ("z",))
    assert await store.retrieve_tags(uid) == {"z"}


# --- Scenario 10: CRUD ------------------------------------------------------------------------


async def test_crud(store: Store) -> None:
    """Scenario 10: retrieve unknown, create, update_object, update_state, delete."""
    uid = "crud::é"
    assert await store.retrieve(uid) is None
    attributes = key_attributes()
    obj = symmetric_key("crud", attributes)
    await store.create(uid, OWNER, obj, attributes, {"crud-tag"})
    await store.grant_operations(uid, U1, {KmipOperation.Get, KmipOperation.Encrypt})

    linked = key_attributes(
        link=[Link(link_type=LinkType.PreviousLink, linked_object_identifier="foo")]
    )
    new_obj = symmetric_key("crud", linked)
    await store.update_object(uid, new_obj, linked)
    got = await store.retrieve(uid)
    assert got is not None
    assert got.state == State.PreActive
    assert got.attributes.get_link(LinkType.PreviousLink) == "foo"
    assert got.attributes == linked
    assert got.object == new_obj
    embedded = got.object.attributes()
    assert embedded is not None
    assert embedded.get_link(LinkType.PreviousLink) == "foo"
    assert got.owner == OWNER

    await store.update_state(uid, State.Deactivated)
    got = await store.retrieve(uid)
    assert got is not None
    assert got.state == State.Deactivated
    assert got.object == new_obj
    assert got.attributes == linked
    assert got.owner == OWNER

    await store.delete(uid)
    assert await store.retrieve(uid) is None
    assert await store.retrieve_tags(uid) == set()
    assert await store.list_uids_for_tags({"crud-tag"}) == set()
    assert await store.list_object_operations_granted(uid) == {}
    assert uid not in await store.list_user_operations_granted(U1)
    assert await store.list_user_operations_on_object(uid, U1, False) == set()
    assert not await store.is_object_owned_by(uid, OWNER)


async def test_update_object_replaces_object_and_attributes_keeps_state_and_owner(
    store: Store,
) -> None:
    uid = await store.create("upd", OWNER, symmetric_key("old"), key_attributes(), {"a"})
    await store.update_state(uid, State.Active)
    new_attributes = key_attributes(
        state=State.Deactivated, comment="new", cryptographic_length=128
    )
    new_obj = symmetric_key("new", attributes_with(new_attributes))
    await store.update_object(uid, new_obj, new_attributes)
    got = await store.retrieve(uid)
    assert got == ObjectWithMetadata(
        uid,
        symmetric_key(
            "new", key_attributes(state=State.Deactivated, comment="new", cryptographic_length=128)
        ),
        OWNER,
        State.Active,  # untouched, whatever the new attributes say
        key_attributes(state=State.Deactivated, comment="new", cryptographic_length=128),
    )
    assert await store.is_object_owned_by(uid, OWNER)


async def test_update_object_tags(store: Store) -> None:
    """``tags=None`` keeps the tags; a set replaces them (and the tag index follows)."""
    uid = await store.create("ut", OWNER, symmetric_key("ut"), key_attributes(), {"keep", "old"})
    await store.update_object(uid, symmetric_key("ut2"), key_attributes(comment="2"))
    assert await store.retrieve_tags(uid) == {"keep", "old"}
    await store.update_object(uid, symmetric_key("ut3"), key_attributes(comment="3"), None)
    assert await store.retrieve_tags(uid) == {"keep", "old"}
    assert await store.list_uids_for_tags({"keep", "old"}) == {uid}

    await store.update_object(
        uid, symmetric_key("ut4"), key_attributes(comment="4"), {"keep", "é-new"}
    )
    assert await store.retrieve_tags(uid) == {"keep", "é-new"}
    assert await store.list_uids_for_tags({"old"}) == set()
    assert await store.list_uids_for_tags({"é-new"}) == {uid}
    assert await store.list_uids_for_tags({"keep"}) == {uid}

    await store.update_object(uid, symmetric_key("ut5"), key_attributes(comment="5"), set())
    assert await store.retrieve_tags(uid) == set()
    assert await store.list_uids_for_tags({"keep"}) == set()
    got = await store.retrieve(uid)
    assert got is not None
    assert got.attributes == key_attributes(comment="5")


async def test_update_state_changes_only_the_stored_state(store: Store) -> None:
    embedded = key_attributes(state=State.PreActive)
    uid = await store.create("st", OWNER, symmetric_key("st", embedded), key_attributes(), {"st"})
    await store.grant_operations(uid, U1, {KmipOperation.Get})
    for state in (State.Active, State.Deactivated, State.Compromised, State.Destroyed_Compromised):
        await store.update_state(uid, state)
        got = await store.retrieve(uid)
        assert got == ObjectWithMetadata(
            uid,
            symmetric_key("st", key_attributes(state=State.PreActive)),
            OWNER,
            state,
            key_attributes(),
        )
        assert got is not None
        embedded_back = got.object.attributes()
        assert embedded_back is not None
        assert embedded_back.state == State.PreActive
        assert got.attributes.state is None
    assert await store.retrieve_tags(uid) == {"st"}
    assert await store.list_object_operations_granted(uid) == {U1: {KmipOperation.Get}}


async def test_operations_on_unknown_uid_create_nothing(store: Store) -> None:
    ghost = "ghost é::0"
    await store.update_object(ghost, symmetric_key("g"), key_attributes(), {"ghost-tag"})
    await store.update_object(ghost, symmetric_key("g"), key_attributes())
    await store.update_state(ghost, State.Active)
    await store.delete(ghost)
    assert await store.retrieve(ghost) is None
    assert await store.retrieve_tags(ghost) == set()
    assert await store.list_uids_for_tags({"ghost-tag"}) == set()
    for user in (OWNER, U1):
        assert not await store.is_object_owned_by(ghost, user)
        assert await store.find(None, None, user, False) == []
    # nothing was created: the uid is still free
    assert await store.create(ghost, OWNER, symmetric_key("g"), key_attributes(), set()) == ghost
    got = await store.retrieve(ghost)
    assert got is not None
    assert got.state == State.PreActive
    assert await store.retrieve_tags(ghost) == set()


async def test_delete_removes_object_tags_and_permissions_of_that_uid_only(store: Store) -> None:
    gone = await store.create(
        "gone", OWNER, symmetric_key("gone"), key_attributes(), {"shared", "g"}
    )
    kept = await store.create("kept", OWNER, symmetric_key("kept"), key_attributes(), {"shared"})
    for uid in (gone, kept):
        await store.grant_operations(uid, U1, {KmipOperation.Get})
        await store.grant_operations(uid, "*", {KmipOperation.Encrypt})
    await store.delete(gone)

    assert await store.retrieve(gone) is None
    assert await store.retrieve_tags(gone) == set()
    assert await store.list_uids_for_tags({"shared"}) == {kept}
    assert await store.list_uids_for_tags({"g"}) == set()
    assert await store.list_object_operations_granted(gone) == {}
    assert await store.list_user_operations_on_object(gone, U1, False) == set()
    assert await store.list_user_operations_on_object(gone, "*", False) == set()
    assert set(await store.list_user_operations_granted(U1)) == {kept}
    assert [uid for uid, _, _ in await store.find(None, None, OWNER, True)] == [kept]
    assert [uid for uid, _, _ in await store.find(None, None, U1, False)] == [kept]

    assert await store.retrieve_tags(kept) == {"shared"}
    assert await store.list_object_operations_granted(kept) == {
        U1: {KmipOperation.Get},
        "*": {KmipOperation.Encrypt},
    }
    # deleting twice, or deleting an unknown uid, is not an error
    await store.delete(gone)
    # the uid is free again and starts with no tags and no grants
    await store.create(gone, U2, symmetric_key("again"), key_attributes(), set())
    assert await store.retrieve_tags(gone) == set()
    assert await store.list_object_operations_granted(gone) == {}
    assert await store.is_object_owned_by(gone, U2)
