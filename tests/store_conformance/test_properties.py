"""Property tests against a model: grant algebra and the tag index, on random sequences."""

from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kms_iface.kmip.enums import KmipOperation, State
from tests.store_conformance.backends import Store
from tests.store_conformance.model import OWNER, U1, U2, key_attributes, symmetric_key

pytestmark = pytest.mark.anyio

# Each example works under a fresh uid prefix: the store fixture lives for the whole test.
_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
USERS = [OWNER, U1, U2, "*"]
UIDS = ["a", "b::é"]
OPERATIONS = [KmipOperation.Get, KmipOperation.Encrypt, KmipOperation.Decrypt, KmipOperation.Export]
TAGS = ["t1", "é", "a::b", "t 4"]

_grant_actions = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from(UIDS),
        st.sampled_from(USERS),
        st.sets(st.sampled_from(OPERATIONS), min_size=1, max_size=3),
    ),
    max_size=10,
)


@_SETTINGS
@given(actions=_grant_actions)
async def test_grants_follow_set_algebra(
    store: Store, actions: list[tuple[bool, str, str, set[KmipOperation]]]
) -> None:
    prefix = f"{uuid.uuid4()}/"
    model: dict[tuple[str, str], set[KmipOperation]] = {}
    for grant, uid, user, operations in actions:
        current = model.setdefault((uid, user), set())
        if grant:
            await store.grant_operations(prefix + uid, user, operations)
            current |= operations
        else:
            await store.remove_operations(prefix + uid, user, operations)
            current -= operations
    for uid in UIDS:
        expected = {user: ops for (u, user), ops in model.items() if u == uid and ops}
        assert await store.list_object_operations_granted(prefix + uid) == expected
        wildcard = model.get((uid, "*"), set())
        for user in USERS:
            direct = model.get((uid, user), set())
            assert await store.list_user_operations_on_object(prefix + uid, user, True) == direct
            inherited = await store.list_user_operations_on_object(prefix + uid, user, False)
            assert inherited == direct | wildcard
    for user in USERS:
        if user == "*":
            continue
        granted = {
            uid: value
            for uid, value in (await store.list_user_operations_granted(user)).items()
            if uid.startswith(prefix)
        }
        assert granted == {
            prefix + uid: ("", State.Active, ops)
            for (uid, u), ops in model.items()
            if u == user and ops
        }


@_SETTINGS
@given(
    objects=st.lists(st.sets(st.sampled_from(TAGS)), min_size=1, max_size=5),
    queries=st.lists(st.sets(st.sampled_from(TAGS), min_size=1), min_size=1, max_size=4),
)
async def test_tag_lookups_are_intersections(
    store: Store, objects: list[set[str]], queries: list[set[str]]
) -> None:
    prefix = f"{uuid.uuid4()}/"
    marker = prefix  # a tag only this example's objects carry
    for index, tags in enumerate(objects):
        uid = f"{prefix}{index}"
        await store.create(uid, OWNER, symmetric_key(uid), key_attributes(), {marker, *tags})
    for query in itertools.chain(queries, [set(TAGS)]):
        expected = {f"{prefix}{index}" for index, tags in enumerate(objects) if query <= tags}
        assert await store.list_uids_for_tags({marker, *query}) == expected, query
