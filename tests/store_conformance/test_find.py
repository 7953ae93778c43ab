"""``find`` and ``find_wrapped_by`` (scenarios 2, 3, 12 and the find semantics)."""

from __future__ import annotations

from typing import Any

import pytest

from kms_iface.kmip.attributes import ApplicationSpecificInformation, Attributes, Link, Name
from kms_iface.kmip.enums import (
    CryptographicAlgorithm,
    CryptographicUsageMask,
    KeyFormatType,
    KmipOperation,
    LinkType,
    NameType,
    ObjectType,
    State,
)
from kms_iface.stores.base import FoundObject
from tests.store_conformance.backends import Store
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


def uids(found: list[FoundObject]) -> list[str]:
    return sorted(uid for uid, _, _ in found)


# --- Scenario 2: find by attributes -----------------------------------------------------------


async def test_find_by_attributes(store: Store) -> None:
    """Scenario 2."""
    attributes = key_attributes(cryptographic_usage_mask=2108)
    uid = await store.create("aes-256", OWNER, symmetric_key("k", attributes), attributes, set())
    searches = {
        "AES+SymmetricKey": Attributes(
            cryptographic_algorithm=CryptographicAlgorithm.AES, object_type=ObjectType.SymmetricKey
        ),
        "256+SymmetricKey": Attributes(
            cryptographic_length=256, object_type=ObjectType.SymmetricKey
        ),
        "AES+256+SymmetricKey": Attributes(
            cryptographic_algorithm=CryptographicAlgorithm.AES,
            cryptographic_length=256,
            object_type=ObjectType.SymmetricKey,
        ),
        "TransparentSymmetricKey+SymmetricKey": Attributes(
            key_format_type=KeyFormatType.TransparentSymmetricKey,
            object_type=ObjectType.SymmetricKey,
        ),
        "AES+256+Encrypt+TransparentSymmetricKey+SymmetricKey": Attributes(
            cryptographic_algorithm=CryptographicAlgorithm.AES,
            cryptographic_length=256,
            cryptographic_usage_mask=int(CryptographicUsageMask.Encrypt),
            key_format_type=KeyFormatType.TransparentSymmetricKey,
            object_type=ObjectType.SymmetricKey,
        ),
    }
    for label, search in searches.items():
        found = await store.find(search, State.PreActive, OWNER, True)
        assert found == [(uid, State.PreActive, key_attributes(cryptographic_usage_mask=2108))], (
            label
        )
    covercrypt = Attributes(cryptographic_algorithm=CryptographicAlgorithm.CoverCrypt)
    assert await store.find(covercrypt, State.PreActive, OWNER, True) == []
    covercrypt_key = Attributes(key_format_type=KeyFormatType.CoverCryptSecretKey)
    assert await store.find(covercrypt_key, State.PreActive, OWNER, True) == []


# Each filter of the contract: a search that finds the target and one that must not.
_TARGET: dict[str, Any] = {
    "object_group": "group é::1",
    "object_group_member": "GroupMemberFresh",
    "application_specific_information": ApplicationSpecificInformation(
        application_namespace="ns::é", application_data="data 1"
    ),
    "link": [
        Link(link_type=LinkType.ParentLink, linked_object_identifier="parent::1"),
        Link(link_type=LinkType.WrappingKeyLink, linked_object_identifier="kek é"),
    ],
    "name": [
        Name(name_value="first name"),
        Name(name_value="https://x.org/é", name_type=NameType.URI),
    ],
}
_FILTERS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("unique_identifier", {"unique_identifier": "target"}, {"unique_identifier": "decoy"}),
    ("object_group", {"object_group": "group é::1"}, {"object_group": "group é::2"}),
    ("object_group prefix", {"object_group": "group é::1"}, {"object_group": "group"}),
    (
        "object_group_member",
        {"object_group_member": "GroupMemberFresh"},
        {"object_group_member": "GroupMemberDefault"},
    ),
    (
        "cryptographic_algorithm",
        {"cryptographic_algorithm": CryptographicAlgorithm.AES},
        {"cryptographic_algorithm": CryptographicAlgorithm.ChaCha20},
    ),
    ("cryptographic_length", {"cryptographic_length": 256}, {"cryptographic_length": 128}),
    (
        "key_format_type",
        {"key_format_type": KeyFormatType.TransparentSymmetricKey},
        {"key_format_type": KeyFormatType.Raw},
    ),
    (
        "object_type",
        {"object_type": ObjectType.SymmetricKey},
        {"object_type": ObjectType.PrivateKey},
    ),
    (
        "application namespace",
        {
            "application_specific_information": ApplicationSpecificInformation(
                application_namespace="ns::é"
            )
        },
        {
            "application_specific_information": ApplicationSpecificInformation(
                application_namespace="ns::e"
            )
        },
    ),
    (
        "application namespace and data",
        {
            "application_specific_information": ApplicationSpecificInformation(
                application_namespace="ns::é", application_data="data 1"
            )
        },
        {
            "application_specific_information": ApplicationSpecificInformation(
                application_namespace="ns::é", application_data="data 2"
            )
        },
    ),
    (
        "one link: the linked id",
        {"link": [Link(link_type=LinkType.ParentLink, linked_object_identifier="parent::1")]},
        {"link": [Link(link_type=LinkType.ParentLink, linked_object_identifier="parent::2")]},
    ),
    (
        "one link: the link type",
        {"link": [Link(link_type=LinkType.WrappingKeyLink, linked_object_identifier="kek é")]},
        {"link": [Link(link_type=LinkType.ParentLink, linked_object_identifier="kek é")]},
    ),
    (
        "every link",
        {"link": _TARGET["link"]},
        {
            "link": [
                *_TARGET["link"],
                Link(link_type=LinkType.ChildLink, linked_object_identifier="child"),
            ]
        },
    ),
    (
        "one name: the value",
        {"name": [Name(name_value="first name")]},
        {"name": [Name(name_value="first")]},
    ),
    (
        "one name: the type",
        {"name": [Name(name_value="https://x.org/é", name_type=NameType.URI)]},
        {"name": [Name(name_value="https://x.org/é")]},
    ),
    (
        "every name",
        {"name": _TARGET["name"]},
        {"name": [*_TARGET["name"], Name(name_value="third name")]},
    ),
]


async def test_find_filters(store: Store) -> None:
    """Every filter of the contract narrows: a matching value finds, another value does not."""
    # stored attributes carry the uid as their UniqueIdentifier, as a KMS stores them
    target_attributes = key_attributes(unique_identifier="target", **_TARGET)
    await store.create("target", OWNER, symmetric_key("t"), target_attributes, set())
    # a decoy with none of the distinguishing values (and another algorithm, length, type...)
    decoy = Attributes(
        cryptographic_algorithm=CryptographicAlgorithm.ChaCha20,
        cryptographic_length=128,
        key_format_type=KeyFormatType.Raw,
        object_type=ObjectType.PrivateKey,
        object_group="group é::2",
        object_group_member="GroupMemberDefault",
        application_specific_information=ApplicationSpecificInformation(
            application_namespace="ns::e", application_data="data 2"
        ),
        link=[Link(link_type=LinkType.ParentLink, linked_object_identifier="parent::2")],
        name=[Name(name_value="first")],
        unique_identifier="decoy",
    )
    await store.create("decoy", OWNER, symmetric_key("d"), decoy, set())
    failures = []
    for label, matching, not_matching in _FILTERS:
        found = await store.find(Attributes(**matching), None, OWNER, True)
        if uids(found) != ["target"]:
            failures.append(f"{label}: {matching} found {uids(found)}, expected ['target']")
        found = await store.find(Attributes(**not_matching), None, OWNER, True)
        if "target" in uids(found):
            failures.append(f"{label}: {not_matching} found the target")
    everything = key_attributes(unique_identifier="target", **_TARGET)
    found = await store.find(everything, None, OWNER, True)
    if uids(found) != ["target"]:
        failures.append(f"all filters together found {uids(found)}")
    assert failures == []


async def test_find_by_links_and_names(store: Store) -> None:
    """Scenario 3."""
    attributes = key_attributes(
        name=[Name(name_value="bar", name_type=NameType.UninterpretedTextString)],
        link=[Link(link_type=LinkType.ParentLink, linked_object_identifier="foo")],
    )
    uid = await store.create("linked", OWNER, symmetric_key("l", attributes), attributes, set())
    by_link = Attributes(link=[Link(link_type=LinkType.ParentLink, linked_object_identifier="foo")])
    by_name = Attributes(name=[Name(name_value="bar", name_type=NameType.UninterpretedTextString)])
    by_both = Attributes(link=by_link.link, name=by_name.name)
    for search in (by_link, by_name, by_both):
        assert uids(await store.find(search, None, OWNER, True)) == [uid]
    wrong = Attributes(link=[Link(link_type=LinkType.ParentLink, linked_object_identifier="bar")])
    assert await store.find(wrong, None, OWNER, True) == []


async def test_find_ignores_other_attributes(store: Store) -> None:
    """Usage mask, Sensitive, comment, dates... in the search do not narrow it."""
    attributes = key_attributes(sensitive=False)
    uid = await store.create("ignored", OWNER, symmetric_key("i"), attributes, set())
    for ignored in (
        {"cryptographic_usage_mask": int(CryptographicUsageMask.Sign)},
        {"cryptographic_usage_mask": 0},
        {"sensitive": True},
        {"extractable": False},
        {"comment": "no such comment"},
        {"description": "nothing"},
        {"rotate_name": "lineage"},
    ):
        found = await store.find(Attributes(**ignored), None, OWNER, True)
        assert uids(found) == [uid], ignored
        found = await store.find(
            Attributes(cryptographic_algorithm=CryptographicAlgorithm.AES, **ignored),
            None,
            OWNER,
            True,
        )
        assert uids(found) == [uid], ignored


async def test_find_reads_the_stored_attributes_not_the_embedded_ones(store: Store) -> None:
    embedded = key_attributes(object_group="embedded group")
    stored = key_attributes(object_group="stored group")
    uid = await store.create("two-sets", OWNER, symmetric_key("t", embedded), stored, set())
    found = await store.find(Attributes(object_group="stored group"), None, OWNER, True)
    assert found == [(uid, State.PreActive, key_attributes(object_group="stored group"))]
    assert await store.find(Attributes(object_group="embedded group"), None, OWNER, True) == []
    # after update_object, the new stored attributes are what find reads
    await store.update_object(uid, symmetric_key("t", stored), embedded)
    assert await store.find(Attributes(object_group="stored group"), None, OWNER, True) == []
    assert uids(await store.find(Attributes(object_group="embedded group"), None, OWNER, True)) == [
        uid
    ]


async def test_find_state_filter_reads_the_stored_state(store: Store) -> None:
    pre = await store.create("pre", OWNER, symmetric_key("p"), key_attributes(), set())
    act = await store.create(
        "act", OWNER, symmetric_key("a"), key_attributes(state=State.Active), set()
    )
    assert uids(await store.find(None, State.PreActive, OWNER, True)) == [pre]
    assert uids(await store.find(None, State.Active, OWNER, True)) == [act]
    assert uids(await store.find(None, None, OWNER, True)) == sorted([pre, act])
    assert await store.find(None, State.Deactivated, OWNER, True) == []
    await store.update_state(pre, State.Deactivated)
    found = await store.find(None, State.Deactivated, OWNER, True)
    # the stored state, with the stored attributes (which update_state leaves alone)
    assert found == [(pre, State.Deactivated, key_attributes())]
    assert uids(await store.find(None, State.PreActive, OWNER, True)) == []


async def test_find_results_carry_stored_state_and_attributes(store: Store) -> None:
    attributes = key_attributes(comment="é", state=State.Active)
    uid = await store.create("res", U1, symmetric_key("r"), attributes, {"t"})
    found = await store.find(None, None, U1, True)
    assert found == [(uid, State.Active, key_attributes(comment="é", state=State.Active))]


async def test_find_by_tags(store: Store) -> None:
    """Tags come from the ``tag`` vendor attribute of ``vendor_id`` and are matched AND."""
    one = await store.create("one", OWNER, symmetric_key("1"), key_attributes(), {"t1", "é::t"})
    two = await store.create("two", OWNER, symmetric_key("2"), key_attributes(), {"t1", "t2"})
    await store.create("three", OWNER, symmetric_key("3"), key_attributes(), set())

    def tagged(tags: set[str], vendor_id: str = "cosmian") -> Attributes:
        search = Attributes()
        search.set_tags(vendor_id, tags)
        return search

    assert uids(await store.find(tagged({"t1"}), None, OWNER, True)) == [one, two]
    assert uids(await store.find(tagged({"t1", "t2"}), None, OWNER, True)) == [two]
    assert uids(await store.find(tagged({"é::t"}), None, OWNER, True)) == [one]
    assert await store.find(tagged({"t2", "é::t"}), None, OWNER, True) == []
    assert await store.find(tagged({"nobody"}), None, OWNER, True) == []
    # tags and other filters combine
    both = tagged({"t1"})
    both.cryptographic_length = 256
    assert uids(await store.find(both, None, OWNER, True)) == [one, two]
    both.cryptographic_length = 128
    assert await store.find(both, None, OWNER, True) == []
    # another vendor's tag attribute is read for that vendor id only
    assert uids(await store.find(tagged({"t2"}, "acme é"), None, OWNER, True, "acme é")) == [two]
    assert len(await store.find(tagged({"t2"}, "acme é"), None, OWNER, True)) == 3
    assert len(await store.find(tagged({"nobody"}), None, OWNER, True, "acme é")) == 3


async def test_find_candidates_are_owned_or_directly_granted(store: Store) -> None:
    """Scenario 4 (find part) and the candidate rules: no wildcard, no duplicates."""
    mine = await store.create("mine", OWNER, symmetric_key("m"), key_attributes(), set())
    theirs = await store.create("theirs", OTHER, symmetric_key("t"), key_attributes(), set())
    public = await store.create("public", OTHER, symmetric_key("p"), key_attributes(), set())
    await store.grant_operations(theirs, OWNER, {KmipOperation.Get})
    await store.grant_operations(public, "*", {KmipOperation.Get})
    # an object both owned by and granted to OWNER
    await store.grant_operations(mine, OWNER, {KmipOperation.Encrypt})

    assert uids(await store.find(None, None, OWNER, True)) == [mine]
    found = await store.find(None, None, OWNER, False)
    assert uids(found) == sorted([mine, theirs])  # no duplicate of mine, no wildcard grant
    assert len(found) == 2
    assert uids(await store.find(None, None, OTHER, True)) == sorted([public, theirs])
    assert await store.find(None, None, STRANGER, False) == []
    assert await store.find(None, None, "*", True) == []
    # once the grant is gone, the object is no longer a candidate
    await store.remove_operations(theirs, OWNER, {KmipOperation.Get})
    assert uids(await store.find(None, None, OWNER, False)) == [mine]


# --- Scenario 12: wrapped-by ------------------------------------------------------------------


async def test_find_wrapped_by(store: Store) -> None:
    """Scenario 12, with the ownership and grant rules."""
    attributes = key_attributes()
    wrapped = await store.create("wrapped", OWNER, wrapped_key("w", "kek-1"), attributes, set())
    await store.create("plain", OWNER, symmetric_key("p"), attributes, set())
    await store.create("by-kek-2", OWNER, wrapped_key("w2", "kek-1 "), attributes, set())
    foreign = await store.create("foreign", U2, wrapped_key("f", "kek-1"), attributes, set())

    found = await store.find_wrapped_by("kek-1", OWNER)
    assert found == [(wrapped, State.PreActive, key_attributes())]
    assert await store.find_wrapped_by("kek", OWNER) == []
    assert await store.find_wrapped_by("no-such-kek", OWNER) == []
    # only objects owned by or directly granted to the user
    assert uids(await store.find_wrapped_by("kek-1", U2)) == [foreign]
    assert await store.find_wrapped_by("kek-1", U1) == []
    await store.grant_operations(wrapped, "*", {KmipOperation.Get})
    assert await store.find_wrapped_by("kek-1", U1) == []
    await store.grant_operations(wrapped, U1, {KmipOperation.Get})
    assert uids(await store.find_wrapped_by("kek-1", U1)) == [wrapped]


async def test_wrapping_key_index_follows_update_object_and_delete(store: Store) -> None:
    uid = await store.create("rewrap", OWNER, wrapped_key("r", "kek-a"), key_attributes(), set())
    assert uids(await store.find_wrapped_by("kek-a", OWNER)) == [uid]
    await store.update_object(uid, wrapped_key("r", "kek-b::é"), key_attributes())
    assert await store.find_wrapped_by("kek-a", OWNER) == []
    assert uids(await store.find_wrapped_by("kek-b::é", OWNER)) == [uid]
    await store.update_state(uid, State.Active)
    assert await store.find_wrapped_by("kek-b::é", OWNER) == [(uid, State.Active, key_attributes())]
    await store.update_object(uid, symmetric_key("r"), key_attributes())  # unwrapped
    assert await store.find_wrapped_by("kek-b::é", OWNER) == []
    await store.update_object(uid, wrapped_key("r", "kek-c"), key_attributes())
    assert uids(await store.find_wrapped_by("kek-c", OWNER)) == [uid]
    await store.delete(uid)
    assert await store.find_wrapped_by("kek-c", OWNER) == []
