"""Store life cycle: reopening keeps every piece of content; open and close are idempotent."""

from __future__ import annotations

import pytest

from kms_iface.kmip.enums import KmipOperation, State
from kms_iface.stores.base import ObjectWithMetadata
from tests.store_conformance.backends import Store
from tests.store_conformance.conftest import StoreCase
from tests.store_conformance.model import (
    OTHER,
    OWNER,
    U1,
    key_attributes,
    symmetric_key,
    wrapped_key,
)

pytestmark = pytest.mark.anyio


async def _snapshot(store: Store) -> tuple[object, ...]:
    return (
        await store.retrieve("kept::é"),
        await store.retrieve("wrapped"),
        await store.retrieve("deleted"),
        await store.retrieve_tags("kept::é"),
        await store.list_uids_for_tags({"é", "a::b"}),
        await store.list_object_operations_granted("kept::é"),
        await store.list_user_operations_granted(U1),
        await store.list_user_operations_on_object("grant-only", U1, False),
        await store.find(None, None, OWNER, True),
        await store.find_wrapped_by("kek é", OTHER),
        await store.is_object_owned_by("kept::é", OWNER),
    )


async def test_store_reopens_with_the_same_content(store: Store, store_case: StoreCase) -> None:
    await store.create("kept::é", OWNER, symmetric_key("k"), key_attributes(), {"é", "a::b"})
    await store.update_state("kept::é", State.Active)
    await store.create("wrapped", OTHER, wrapped_key("w", "kek é"), key_attributes(), set())
    await store.create("deleted", OWNER, symmetric_key("d"), key_attributes(), {"é"})
    await store.delete("deleted")
    await store.grant_operations("kept::é", U1, {KmipOperation.Get})
    await store.grant_operations("grant-only", "*", {KmipOperation.Encrypt})
    await store.grant_operations("grant-only", U1, {KmipOperation.Decrypt})
    before = await _snapshot(store)
    assert before[0] == ObjectWithMetadata(
        "kept::é", symmetric_key("k"), OWNER, State.Active, key_attributes()
    )
    await store.close()
    await store.close()  # idempotent

    reopened = store_case.make_store()
    async with reopened:
        assert await _snapshot(reopened) == before
        await reopened.create("after", U1, symmetric_key("a"), key_attributes(), set())
    # the first store object opens again too, and sees what the second one wrote
    await store.open()
    assert await _snapshot(store) == before
    got = await store.retrieve("after")
    assert got is not None
    assert got.owner == U1


async def test_open_is_idempotent(store: Store) -> None:
    await store.open()
    await store.create("x", OWNER, symmetric_key("x"), key_attributes(), set())
    await store.open()
    got = await store.retrieve("x")
    assert got is not None
    assert got.owner == OWNER
