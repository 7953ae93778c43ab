"""kms_iface: plugin interfaces for a Python key-management server.

The public names live here; the synchronous PKCS#11 core is ``kms_iface.pkcs11``, the KMIP model
``kms_iface.kmip`` and the stores (``LmdbStore``) ``kms_iface.stores``.
"""

from kms_iface.errors import (
    DbError,
    DecryptionError,
    HsmError,
    InterfaceError,
    InvalidRequestError,
    MalformedKmipError,
    NotSupportedError,
    Pkcs11Error,
    SessionPoolTimeoutError,
    UnauthorizedError,
)
from kms_iface.pkcs11 import Mechanism, Module, Session, SessionPool
from kms_iface.secrets import SecretBytes, wipe
from kms_iface.stores.base import (
    AtomicOperation,
    Create,
    Delete,
    ObjectsStore,
    ObjectWithMetadata,
    PermissionsStore,
    UpdateObject,
    UpdateState,
    Upsert,
)

__version__ = "0.1.0"

__all__ = [
    "AtomicOperation",
    "Create",
    "DbError",
    "DecryptionError",
    "Delete",
    "HsmError",
    "InterfaceError",
    "InvalidRequestError",
    "MalformedKmipError",
    "Mechanism",
    "Module",
    "NotSupportedError",
    "ObjectWithMetadata",
    "ObjectsStore",
    "PermissionsStore",
    "Pkcs11Error",
    "SecretBytes",
    "Session",
    "SessionPool",
    "SessionPoolTimeoutError",
    "UnauthorizedError",
    "UpdateObject",
    "UpdateState",
    "Upsert",
    "__version__",
    "wipe",
]
