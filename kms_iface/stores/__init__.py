"""Object and permission stores: the contracts and the LMDB reference store."""

from kms_iface.stores.base import (
    AtomicOperation,
    Create,
    Delete,
    Dumpable,
    FoundObject,
    Grant,
    ObjectsStore,
    ObjectWithMetadata,
    PermissionsStore,
    StoredObject,
    UpdateObject,
    UpdateState,
    Upsert,
)
from kms_iface.stores.lmdb import LmdbStore

__all__ = [
    "AtomicOperation",
    "Create",
    "Delete",
    "Dumpable",
    "FoundObject",
    "Grant",
    "LmdbStore",
    "ObjectWithMetadata",
    "ObjectsStore",
    "PermissionsStore",
    "StoredObject",
    "UpdateObject",
    "UpdateState",
    "Upsert",
]
