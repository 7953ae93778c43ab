"""The store contracts: ``ObjectsStore`` and ``PermissionsStore``, and the values they carry.

Both are abstract base classes with ``async def`` methods that run under any anyio backend. The
exact semantics every backend must show are those of the conformance suite
(``tests/store_conformance``); expected failures raise ``InterfaceError`` subclasses only
(``DbError`` for store failures and duplicate uids, ``UnauthorizedError`` for an Upsert over
someone else's object, ``InvalidRequestError`` for bad arguments).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Self, TypeAlias

import msgspec

from kms_iface.kmip.attributes import Attributes
from kms_iface.kmip.enums import KmipOperation, State
from kms_iface.kmip.objects import Object

__all__ = [
    "AtomicOperation",
    "Create",
    "Delete",
    "Dumpable",
    "FoundObject",
    "Grant",
    "ObjectWithMetadata",
    "ObjectsStore",
    "PermissionsStore",
    "StoredObject",
    "UpdateObject",
    "UpdateState",
    "Upsert",
]


class ObjectWithMetadata(msgspec.Struct, frozen=True):
    """A stored object: its uid, the object, its owner, its stored state and its attributes.

    ``attributes`` are the stored (external) attributes; the object may carry its own set inside
    its key block, and the two need not agree (``update_state`` changes only ``state``).
    """

    id: str
    object: Object
    owner: str
    state: State
    attributes: Attributes


class Create(msgspec.Struct, frozen=True):
    """Create an object owned by the batch's user; ``uid=None`` makes a fresh UUIDv4."""

    uid: str | None
    object: Object
    attributes: Attributes
    tags: frozenset[str] | set[str]


class Upsert(msgspec.Struct, frozen=True):
    """Insert, or replace object/attributes/state (and tags unless None) of the user's object."""

    uid: str
    object: Object
    attributes: Attributes
    tags: frozenset[str] | set[str] | None
    state: State


class UpdateObject(msgspec.Struct, frozen=True):
    """Replace object and attributes, keep the state; tags unless None."""

    uid: str
    object: Object
    attributes: Attributes
    tags: frozenset[str] | set[str] | None = None


class UpdateState(msgspec.Struct, frozen=True):
    """Change only the stored state."""

    uid: str
    state: State


class Delete(msgspec.Struct, frozen=True):
    """Remove the object, its tags and its permissions (an unknown uid is not an error)."""

    uid: str


AtomicOperation: TypeAlias = Create | Upsert | UpdateObject | UpdateState | Delete

FoundObject: TypeAlias = tuple[str, State, Attributes]
"""One ``find`` result: the uid, its stored state and its stored attributes."""


class _Lifecycle(abc.ABC):
    """``async with store:`` or ``await store.open()`` / ``await store.close()`` (idempotent)."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Open the store (no-op when already open)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the store, waiting for pending writes (no-op when already closed)."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ObjectsStore(_Lifecycle):
    """Where KMIP objects live, with their owner, state, attributes and tags."""

    @abc.abstractmethod
    async def create(
        self,
        uid: str | None,
        owner: str,
        object: Object,
        attributes: Attributes,
        tags: Iterable[str],
    ) -> str:
        """Store a new object; returns its uid. An existing uid raises ``DbError``."""

    @abc.abstractmethod
    async def retrieve(self, uid: str) -> ObjectWithMetadata | None:
        """The object with its metadata, or None."""

    @abc.abstractmethod
    async def retrieve_tags(self, uid: str) -> set[str]:
        """The object's tags (empty for an unknown uid)."""

    @abc.abstractmethod
    async def update_object(
        self,
        uid: str,
        object: Object,
        attributes: Attributes,
        tags: Iterable[str] | None = None,
    ) -> None:
        """Replace object and attributes, keep the state; ``tags=None`` keeps the tags."""

    @abc.abstractmethod
    async def update_state(self, uid: str, state: State) -> None:
        """Change only the stored state."""

    @abc.abstractmethod
    async def delete(self, uid: str) -> None:
        """Remove the object, its tags and its permissions; an unknown uid is not an error."""

    @abc.abstractmethod
    async def atomic(self, user: str, operations: Sequence[AtomicOperation]) -> list[str]:
        """Apply the operations in one all-or-nothing transaction; the uids in order."""

    @abc.abstractmethod
    async def is_object_owned_by(self, uid: str, owner: str) -> bool:
        """Whether ``owner`` is exactly the object's owner."""

    @abc.abstractmethod
    async def list_uids_for_tags(self, tags: Iterable[str]) -> set[str]:
        """The uids having every one of ``tags``."""

    @abc.abstractmethod
    async def find(
        self,
        researched_attributes: Attributes | None,
        state: State | None,
        user: str,
        user_must_be_owner: bool,
        vendor_id: str = "cosmian",
    ) -> list[FoundObject]:
        """Objects owned by (or directly granted to) ``user`` matching the searched attributes."""

    @abc.abstractmethod
    async def find_wrapped_by(self, wrapping_key_uid: str, user: str) -> list[FoundObject]:
        """Objects owned by or granted to ``user`` whose key is wrapped by ``wrapping_key_uid``."""

    async def find_due_for_rotation(self, now: object) -> list[str]:
        """Uids of keys whose automatic rotation is due (default: none)."""
        return []

    async def find_by_rotate_name(self, rotate_name: str) -> list[str]:
        """Uids of the keys of one rotation lineage (default: none)."""
        return []

    async def count_all_non_destroyed(self) -> int:
        """How many objects are not Destroyed (default: 0, meaning unknown)."""
        return 0

    async def count_non_destroyed_keys(self) -> int:
        """How many keys are not Destroyed (default: 0, meaning unknown)."""
        return 0


class PermissionsStore(_Lifecycle):
    """Which users may perform which KMIP operations on which objects."""

    @abc.abstractmethod
    async def list_user_operations_granted(
        self, user: str
    ) -> dict[str, tuple[str, State, set[KmipOperation]]]:
        """``{uid: (owner, state, operations)}`` for every uid directly granted to ``user``."""

    @abc.abstractmethod
    async def list_object_operations_granted(self, uid: str) -> dict[str, set[KmipOperation]]:
        """``{user: operations}`` granted on ``uid``."""

    @abc.abstractmethod
    async def grant_operations(
        self, uid: str, user: str, operations: Iterable[KmipOperation]
    ) -> None:
        """Add ``operations`` to the grant of ``user`` on ``uid`` (set union)."""

    @abc.abstractmethod
    async def remove_operations(
        self, uid: str, user: str, operations: Iterable[KmipOperation]
    ) -> None:
        """Remove ``operations`` from the grant (set difference); an empty grant disappears."""

    @abc.abstractmethod
    async def list_user_operations_on_object(
        self, uid: str, user: str, no_inherited_access: bool
    ) -> set[KmipOperation]:
        """Direct grants of ``user``, plus those of ``"*"`` unless ``no_inherited_access``."""


# -- bulk reading, for copying a whole store ----------------------------------------------------


class StoredObject(msgspec.Struct, frozen=True):
    """One object with everything a store keeps of it (its grants aside)."""

    uid: str
    owner: str
    state: State
    object: Object
    attributes: Attributes
    tags: frozenset[str]


class Grant(msgspec.Struct, frozen=True):
    """The operations ``user`` was granted on ``uid``."""

    uid: str
    user: str
    operations: frozenset[KmipOperation]


class Dumpable(abc.ABC):
    """A store whose whole content can be read out, for ``kms-iface store copy``.

    Writing goes through the contracts (``atomic`` with ``Upsert``, ``grant_operations``), so any
    store can be a target; only reading every object whatever its owner needs this.
    """

    @abc.abstractmethod
    def dump_objects(self, batch: int = 1000) -> AsyncIterator[list[StoredObject]]:
        """Every object (Destroyed ones too), ``batch`` at a time, in uid order.

        Order is code point order (UTF-8 byte order; ``COLLATE "C"`` in SQL). The objects are
        fresh copies that belong to the caller.
        """

    @abc.abstractmethod
    def dump_grants(self, batch: int = 1000) -> AsyncIterator[list[Grant]]:
        """Every grant, ``batch`` at a time, in (uid, user) code point order."""
