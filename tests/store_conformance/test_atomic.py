"""``atomic`` batches (scenarios 8 and 9, and the batch semantics)."""

from __future__ import annotations

import uuid

import pytest

from kms_iface.errors import DbError, UnauthorizedError
from kms_iface.kmip.attributes import Attributes, Link
from kms_iface.kmip.enums import KmipOperation, LinkType, State
from kms_iface.stores.base import (
    Create,
    Delete,
    ObjectWithMetadata,
    UpdateObject,
    UpdateState,
    Upsert,
)
from tests.store_conformance.backends import Store
from tests.store_conformance.model import (
    OTHER,
    OWNER,
    U1,
    key_attributes,
    symmetric_key,
)

pytestmark = pytest.mark.anyio


def found_uids(found: list[tuple[str, State, Attributes]]) -> set[str]:
    return {uid for uid, _, _ in found}


async def test_batches(store: Store) -> None:
    """Scenario 8."""
    batch = [
        Create("u1", symmetric_key("u1"), key_attributes(comment="u1"), {"batch"}),
        Create("u2::é", symmetric_key("u2"), key_attributes(comment="u2"), {"batch"}),
    ]
    assert await store.atomic(OWNER, batch) == ["u1", "u2::é"]
    for uid, seed in (("u1", "u1"), ("u2::é", "u2")):
        assert await store.retrieve(uid) == ObjectWithMetadata(
            uid, symmetric_key(seed), OWNER, State.PreActive, key_attributes(comment=seed)
        )
    assert found_uids(await store.find(None, None, OWNER, True)) == {"u1", "u2::é"}
    assert await store.list_uids_for_tags({"batch"}) == {"u1", "u2::é"}

    # repeating it fails and leaves the store as it was
    before = [await store.retrieve("u1"), await store.retrieve("u2::é")]
    with pytest.raises(DbError):
        await store.atomic(OWNER, batch)
    assert [await store.retrieve("u1"), await store.retrieve("u2::é")] == before

    upserts = [
        Upsert("u1", symmetric_key("u1"), key_attributes(comment="u1"), None, State.Deactivated),
        Upsert("u2::é", symmetric_key("u2"), key_attributes(comment="u2"), None, State.Deactivated),
    ]
    assert await store.atomic(OWNER, upserts) == ["u1", "u2::é"]
    for uid in ("u1", "u2::é"):
        got = await store.retrieve(uid)
        assert got is not None
        assert got.state == State.Deactivated
    assert await store.list_uids_for_tags({"batch"}) == {"u1", "u2::é"}  # tags=None kept them

    u3 = await store.create("u3", OWNER, symmetric_key("u3"), key_attributes(), set())
    deactivated = key_attributes(state=State.Deactivated)
    await store.atomic(
        OWNER,
        [
            UpdateObject(u3, symmetric_key("u3", deactivated), deactivated, None),
            UpdateState(u3, State.Deactivated),
        ],
    )
    got = await store.retrieve(u3)
    assert got is not None
    assert got.state == State.Deactivated
    embedded = got.object.attributes()
    assert embedded is not None
    assert embedded.state == State.Deactivated
    assert got.attributes == key_attributes(state=State.Deactivated)


async def test_failing_batch_leaves_nothing(store: Store) -> None:
    """Scenario 8: [Create new, Create existing] leaves ``new`` absent (and untagged)."""
    existing = await store.create("existing", OWNER, symmetric_key("e"), key_attributes(), {"e"})
    with pytest.raises(DbError):
        await store.atomic(
            OWNER,
            [
                Create("new", symmetric_key("n"), key_attributes(), {"new-tag"}),
                UpdateState(existing, State.Active),
                Create(existing, symmetric_key("x"), key_attributes(comment="x"), {"x"}),
            ],
        )
    assert await store.retrieve("new") is None
    assert await store.retrieve_tags("new") == set()
    assert await store.list_uids_for_tags({"new-tag"}) == set()
    assert await store.list_uids_for_tags({"x"}) == set()
    assert await store.retrieve(existing) == ObjectWithMetadata(
        existing, symmetric_key("e"), OWNER, State.PreActive, key_attributes()
    )
    assert await store.retrieve_tags(existing) == {"e"}
    # the uid ``new`` is still free
    assert await store.create("new", OWNER, symmetric_key("n"), key_attributes(), set()) == "new"


async def test_upsert_new_uid(store: Store) -> None:
    """Scenario 9: Upsert of a new uid with a link and a state, then delete."""
    attributes = key_attributes(
        link=[Link(link_type=LinkType.PreviousLink, linked_object_identifier="foo")]
    )
    obj = symmetric_key("upsert", attributes)
    assert await store.atomic(
        U1, [Upsert("upserted é", obj, attributes, {"up"}, State.Deactivated)]
    ) == ["upserted é"]
    got = await store.retrieve("upserted é")
    assert got is not None
    assert got.state == State.Deactivated
    assert got.owner == U1
    assert got.attributes.get_link(LinkType.PreviousLink) == "foo"
    assert got.object == obj
    assert await store.retrieve_tags("upserted é") == {"up"}
    assert await store.atomic(U1, [Delete("upserted é")]) == ["upserted é"]
    assert await store.retrieve("upserted é") is None
    assert await store.retrieve_tags("upserted é") == set()


async def test_upsert_replaces_the_users_object(store: Store) -> None:
    uid = await store.create("mine", OWNER, symmetric_key("old"), key_attributes(), {"old"})
    await store.atomic(
        OWNER,
        [Upsert(uid, symmetric_key("new"), key_attributes(comment="new"), None, State.Active)],
    )
    assert await store.retrieve(uid) == ObjectWithMetadata(
        uid, symmetric_key("new"), OWNER, State.Active, key_attributes(comment="new")
    )
    assert await store.retrieve_tags(uid) == {"old"}
    await store.atomic(
        OWNER,
        [Upsert(uid, symmetric_key("newer"), key_attributes(), {"é", "a::b"}, State.Compromised)],
    )
    assert await store.retrieve(uid) == ObjectWithMetadata(
        uid, symmetric_key("newer"), OWNER, State.Compromised, key_attributes()
    )
    assert await store.retrieve_tags(uid) == {"é", "a::b"}
    assert await store.list_uids_for_tags({"old"}) == set()


async def test_upsert_over_someone_elses_object_is_refused_and_rolls_back(store: Store) -> None:
    theirs = await store.create("theirs", OTHER, symmetric_key("t"), key_attributes(), {"t"})
    mine = await store.create("mine", OWNER, symmetric_key("m"), key_attributes(), {"m"})
    theirs_before = await store.retrieve(theirs)
    mine_before = await store.retrieve(mine)
    with pytest.raises(UnauthorizedError):
        await store.atomic(
            OWNER,
            [
                Create("fresh", symmetric_key("f"), key_attributes(), {"fresh"}),
                UpdateState(mine, State.Active),
                UpdateObject(mine, symmetric_key("m2"), key_attributes(comment="m2"), {"m2"}),
                Upsert(theirs, symmetric_key("stolen"), key_attributes(), {"stolen"}, State.Active),
                Create("after", symmetric_key("a"), key_attributes(), set()),
            ],
        )
    assert await store.retrieve(theirs) == theirs_before
    assert await store.retrieve_tags(theirs) == {"t"}
    assert await store.is_object_owned_by(theirs, OTHER)
    assert await store.retrieve(mine) == mine_before
    assert await store.retrieve_tags(mine) == {"m"}
    assert await store.retrieve("fresh") is None
    assert await store.retrieve("after") is None
    assert await store.list_uids_for_tags({"fresh"}) == set()
    assert await store.list_uids_for_tags({"stolen"}) == set()
    assert await store.list_uids_for_tags({"m2"}) == set()
    # the owner differs only by case: still someone else
    with pytest.raises(UnauthorizedError):
        await store.atomic(
            "é@X.org",
            [Upsert(mine, symmetric_key("s"), key_attributes(), None, State.Active)],
        )
    assert await store.retrieve(mine) == mine_before


async def test_empty_batch(store: Store) -> None:
    assert await store.atomic(OWNER, []) == []
    assert await store.find(None, None, OWNER, False) == []


async def test_batch_returns_uids_in_operation_order(store: Store) -> None:
    await store.create("pre", OWNER, symmetric_key("pre"), key_attributes(), set())
    result = await store.atomic(
        OWNER,
        [
            UpdateState("pre", State.Active),
            Create(None, symmetric_key("a"), key_attributes(comment="a"), set()),
            Create("named", symmetric_key("b"), key_attributes(comment="b"), set()),
            Create(None, symmetric_key("c"), key_attributes(comment="c"), set()),
            Upsert("ups", symmetric_key("d"), key_attributes(), None, State.Active),
            Delete("pre"),
        ],
    )
    assert len(result) == 6
    assert [result[0], result[2], result[4], result[5]] == ["pre", "named", "ups", "pre"]
    for fresh, comment in ((result[1], "a"), (result[3], "c")):
        assert uuid.UUID(fresh).version == 4
        assert str(uuid.UUID(fresh)) == fresh
        got = await store.retrieve(fresh)
        assert got is not None
        assert got.owner == OWNER
        assert got.attributes == key_attributes(comment=comment)
    assert result[1] != result[3]
    assert await store.retrieve("pre") is None


async def test_operations_see_earlier_ones(store: Store) -> None:
    result = await store.atomic(
        U1,
        [
            Create("seq", symmetric_key("1"), key_attributes(comment="1"), {"one"}),
            UpdateState("seq", State.Active),
            UpdateObject("seq", symmetric_key("2"), key_attributes(comment="2"), {"two"}),
            Create("temp", symmetric_key("t"), key_attributes(), {"temp"}),
            Delete("temp"),
            Upsert("seq", symmetric_key("3"), key_attributes(comment="3"), None, State.Deactivated),
        ],
    )
    assert result == ["seq", "seq", "seq", "temp", "temp", "seq"]
    assert await store.retrieve("seq") == ObjectWithMetadata(
        "seq", symmetric_key("3"), U1, State.Deactivated, key_attributes(comment="3")
    )
    assert await store.retrieve_tags("seq") == {"two"}
    assert await store.retrieve("temp") is None
    assert await store.list_uids_for_tags({"temp"}) == set()
    # a Create after a Delete of the same uid in one batch
    await store.atomic(
        U1, [Delete("seq"), Create("seq", symmetric_key("4"), key_attributes(), {"four"})]
    )
    got = await store.retrieve("seq")
    assert got is not None
    assert got.state == State.PreActive
    assert await store.retrieve_tags("seq") == {"four"}


async def test_batch_state_and_owner_of_creates(store: Store) -> None:
    """``user`` owns what Create/Upsert make; a Create's state comes from its attributes."""
    await store.atomic(
        "a::b",
        [
            Create("c1", symmetric_key("1"), key_attributes(), set()),
            Create("c2", symmetric_key("2"), key_attributes(state=State.Active), set()),
            Upsert("c3", symmetric_key("3"), key_attributes(), None, State.PreActive),
        ],
    )
    for uid, state in (("c1", State.PreActive), ("c2", State.Active), ("c3", State.PreActive)):
        got = await store.retrieve(uid)
        assert got is not None
        assert (got.owner, got.state) == ("a::b", state)
        assert await store.is_object_owned_by(uid, "a::b")
    assert await store.retrieve_tags("c3") == set()


async def test_batch_delete_removes_tags_and_permissions(store: Store) -> None:
    uid = await store.create("bd", OWNER, symmetric_key("bd"), key_attributes(), {"bd"})
    await store.grant_operations(uid, U1, {KmipOperation.Get})
    await store.atomic(OWNER, [Delete(uid), Delete("never existed")])
    assert await store.retrieve(uid) is None
    assert await store.list_uids_for_tags({"bd"}) == set()
    assert await store.list_object_operations_granted(uid) == {}
    assert await store.list_user_operations_granted(U1) == {}
