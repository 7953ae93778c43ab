"""Grants (scenarios 4, 5, 6 and the grant semantics)."""

from __future__ import annotations

import pytest

from kms_iface.kmip.enums import KmipOperation, State
from tests.store_conformance.backends import Store
from tests.store_conformance.model import (
    OTHER,
    OWNER,
    STRANGER,
    U1,
    U2,
    key_attributes,
    symmetric_key,
)

pytestmark = pytest.mark.anyio

GET = KmipOperation.Get
ENCRYPT = KmipOperation.Encrypt
DECRYPT = KmipOperation.Decrypt


async def test_ownership_and_grants(store: Store) -> None:
    """Scenario 4."""
    uid = await store.create("granted é", OWNER, symmetric_key("g"), key_attributes(), set())
    await store.grant_operations(uid, U1, {GET})
    assert await store.list_user_operations_on_object(uid, U1, False) == {GET}
    await store.grant_operations(uid, U2, {GET})
    await store.grant_operations(uid, U2, {GET})
    assert await store.list_user_operations_on_object(uid, U2, False) == {GET}
    assert [found[0] for found in await store.find(None, None, OWNER, True)] == [uid]
    assert await store.find(None, None, U2, True) == []
    assert [found[0] for found in await store.find(None, None, U2, False)] == [uid]
    granted = await store.list_user_operations_granted(U2)
    assert granted == {uid: (OWNER, State.PreActive, {GET})}


async def test_permission_algebra_without_objects(store: Store) -> None:
    """Scenario 5: grants need no object; union; per-object listing; difference."""
    uid = "no object é::1"
    await store.grant_operations(uid, U1, {GET})
    await store.grant_operations(uid, U1, {GET})
    await store.grant_operations(uid, U1, {ENCRYPT})
    assert await store.list_user_operations_on_object(uid, U1, False) == {GET, ENCRYPT}
    assert await store.list_user_operations_on_object(uid, U1, True) == {GET, ENCRYPT}
    await store.grant_operations(uid, U2, [GET])
    assert await store.list_object_operations_granted(uid) == {U1: {GET, ENCRYPT}, U2: {GET}}
    await store.remove_operations(uid, U1, {GET})
    assert await store.list_user_operations_on_object(uid, U1, False) == {ENCRYPT}
    assert await store.list_object_operations_granted(uid) == {U1: {ENCRYPT}, U2: {GET}}
    # the grant made no object
    assert await store.retrieve(uid) is None


async def test_wildcard(store: Store) -> None:
    """Scenario 6."""
    uid = "wild::1"
    await store.grant_operations(uid, U1, {GET})
    await store.grant_operations(uid, "*", {ENCRYPT})
    assert await store.list_user_operations_on_object(uid, U1, False) == {GET, ENCRYPT}
    assert await store.list_user_operations_on_object(uid, U1, True) == {GET}
    assert await store.list_user_operations_on_object(uid, "*", False) == {ENCRYPT}
    assert await store.list_user_operations_on_object(uid, "*", True) == {ENCRYPT}
    # a user without a grant of their own inherits the wildcard's
    assert await store.list_user_operations_on_object(uid, STRANGER, False) == {ENCRYPT}
    assert await store.list_user_operations_on_object(uid, STRANGER, True) == set()

    await store.grant_operations(uid, "*", {GET})
    await store.remove_operations(uid, U1, {GET})
    assert await store.list_user_operations_on_object(uid, U1, False) == {GET, ENCRYPT}
    assert await store.list_user_operations_on_object(uid, U1, True) == set()

    await store.remove_operations(uid, "*", {ENCRYPT})
    await store.remove_operations(uid, U1, {GET})
    assert await store.list_user_operations_on_object(uid, U1, True) == set()
    assert await store.list_user_operations_on_object(uid, U1, False) == {GET}
    assert await store.list_user_operations_on_object(uid, "*", False) == {GET}


async def test_grant_is_a_set_union(store: Store) -> None:
    uid = "union"
    await store.grant_operations(uid, U1, {GET, ENCRYPT})
    await store.grant_operations(uid, U1, {ENCRYPT, DECRYPT})
    await store.grant_operations(uid, U1, set())
    assert await store.list_object_operations_granted(uid) == {U1: {GET, ENCRYPT, DECRYPT}}
    await store.grant_operations(uid, U1, {GET, ENCRYPT, DECRYPT})
    assert await store.list_object_operations_granted(uid) == {U1: {GET, ENCRYPT, DECRYPT}}
    every = set(KmipOperation)
    await store.grant_operations(uid, U2, iter(every))
    assert await store.list_user_operations_on_object(uid, U2, True) == every


async def test_remove_is_a_set_difference_and_empty_grants_disappear(store: Store) -> None:
    uid = await store.create("rm", OWNER, symmetric_key("rm"), key_attributes(), set())
    await store.grant_operations(uid, U1, {GET, ENCRYPT})
    await store.grant_operations(uid, U2, {GET})
    await store.remove_operations(uid, U1, {DECRYPT})  # not granted: nothing changes
    assert await store.list_object_operations_granted(uid) == {U1: {GET, ENCRYPT}, U2: {GET}}
    await store.remove_operations(uid, U1, {GET, DECRYPT})
    assert await store.list_object_operations_granted(uid) == {U1: {ENCRYPT}, U2: {GET}}
    await store.remove_operations(uid, U1, {ENCRYPT})
    assert await store.list_object_operations_granted(uid) == {U2: {GET}}
    assert uid not in await store.list_user_operations_granted(U1)
    assert await store.find(None, None, U1, False) == []
    await store.remove_operations(uid, U2, {GET, ENCRYPT})
    assert await store.list_object_operations_granted(uid) == {}
    # removing from a grant that does not exist is not an error
    await store.remove_operations(uid, STRANGER, {GET})
    await store.remove_operations("no such uid", U1, {GET})
    assert await store.list_object_operations_granted("no such uid") == {}
    # a fresh grant after emptying starts from nothing
    await store.grant_operations(uid, U1, {DECRYPT})
    assert await store.list_object_operations_granted(uid) == {U1: {DECRYPT}}


async def test_list_object_operations_granted_includes_the_wildcard(store: Store) -> None:
    uid = "listed"
    await store.grant_operations(uid, "*", {GET})
    await store.grant_operations(uid, OWNER, {ENCRYPT})
    await store.grant_operations("other", U1, {GET})
    assert await store.list_object_operations_granted(uid) == {"*": {GET}, OWNER: {ENCRYPT}}
    assert await store.list_object_operations_granted("unknown") == {}


async def test_list_user_operations_granted(store: Store) -> None:
    """(owner, state, ops) per directly granted uid; missing object -> ("", Active); no wildcard."""
    existing = await store.create(
        "existing", OTHER, symmetric_key("e"), key_attributes(state=State.Active), set()
    )
    await store.grant_operations(existing, U1, {GET, ENCRYPT})
    await store.grant_operations("missing::é", U1, {DECRYPT})
    await store.grant_operations("wild-only", "*", {GET})
    await store.grant_operations(existing, U2, {GET})
    granted = await store.list_user_operations_granted(U1)
    assert granted == {
        existing: (OTHER, State.Active, {GET, ENCRYPT}),
        "missing::é": ("", State.Active, {DECRYPT}),
    }
    assert await store.list_user_operations_granted(STRANGER) == {}
    # the state reported is the stored state
    await store.update_state(existing, State.Deactivated)
    granted = await store.list_user_operations_granted(U1)
    assert granted[existing] == (OTHER, State.Deactivated, {GET, ENCRYPT})
    # a wildcard grant on an object is not listed for a user either
    await store.grant_operations(existing, "*", {DECRYPT})
    assert await store.list_user_operations_granted(U2) == {
        existing: (OTHER, State.Deactivated, {GET})
    }


async def test_users_are_matched_exactly(store: Store) -> None:
    uid = "exact"
    await store.grant_operations(uid, OWNER, {GET})
    await store.grant_operations(uid, U1, {ENCRYPT})
    assert await store.list_user_operations_on_object(uid, OTHER, True) == set()
    assert await store.list_user_operations_on_object(uid, "a:", True) == set()
    assert await store.list_user_operations_on_object(uid, "a::b ", True) == set()
    assert await store.list_user_operations_granted(OTHER) == {}
    assert await store.list_user_operations_granted("a:") == {}
    assert await store.list_user_operations_on_object(uid, OWNER, True) == {GET}
    assert await store.list_user_operations_on_object(uid + " ", OWNER, True) == set()
    assert await store.list_user_operations_on_object("exac", OWNER, True) == set()
