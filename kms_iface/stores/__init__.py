"""Object and permission stores: the contracts, the LMDB reference store and PostgreSQL.

``PostgresStore`` (several servers sharing one database) needs the ``postgres`` extra (psycopg):
it is imported on first use of ``kms_iface.stores.PostgresStore``, so the package imports
without psycopg.
"""

from typing import TYPE_CHECKING, Any

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
    "PostgresStore",
    "StoredObject",
    "UpdateObject",
    "UpdateState",
    "Upsert",
]

if TYPE_CHECKING:
    from kms_iface.stores.postgres import PostgresStore


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from kms_iface.stores.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
