"""Object and permission stores: the contracts and the LMDB reference store.

``PostgresStore`` (several servers sharing one database) is in ``kms_iface.stores.postgres``; it
needs the ``postgres`` extra (psycopg), so it is not imported here.
"""

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
