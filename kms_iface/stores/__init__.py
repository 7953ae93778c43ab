"""Object and permission stores: the contracts and the LMDB reference store."""

from kms_iface.stores.base import (
    AtomicOperation,
    Create,
    Delete,
    FoundObject,
    ObjectsStore,
    ObjectWithMetadata,
    PermissionsStore,
    UpdateObject,
    UpdateState,
    Upsert,
)
from kms_iface.stores.lmdb import LmdbStore

__all__ = [
    "AtomicOperation",
    "Create",
    "Delete",
    "FoundObject",
    "LmdbStore",
    "ObjectWithMetadata",
    "ObjectsStore",
    "PermissionsStore",
    "UpdateObject",
    "UpdateState",
    "Upsert",
]
