"""kms_iface: plugin interfaces for a Python key-management server.

The public names live here; the synchronous PKCS#11 core is ``kms_iface.pkcs11``, the KMIP model
``kms_iface.kmip`` and the stores (``LmdbStore``) ``kms_iface.stores``.
"""

from kms_iface.database import Database
from kms_iface.errors import (
    DbConnectionError,
    DbError,
    DbOutcomeUnknownError,
    DecryptionError,
    HsmError,
    HsmTimeoutError,
    InterfaceError,
    InvalidRequestError,
    MalformedKmipError,
    NotSupportedError,
    Pkcs11Error,
    SessionPoolTimeoutError,
    UnauthorizedError,
)
from kms_iface.hsm import (
    HSM,
    AesKeyMaterial,
    CryptoAlgorithm,
    EncryptedContent,
    HsmKeyAlgorithm,
    HsmKeypairAlgorithm,
    HsmObject,
    HsmObjectFilter,
    KeyMaterial,
    KeyMetadata,
    KeyType,
    MacCapable,
    RsaPrivateKeyMaterial,
    RsaPublicKeyMaterial,
    SigningAlgorithm,
)
from kms_iface.hsm_oracle import HsmEncryptionOracle
from kms_iface.hsm_store import HsmStore
from kms_iface.oracle import CryptoOracle, EncryptionOracle
from kms_iface.pkcs11 import Mechanism, Module, Session, SessionPool
from kms_iface.pkcs11_hsm import Pkcs11Hsm
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
    "HSM",
    "AesKeyMaterial",
    "AtomicOperation",
    "Create",
    "CryptoAlgorithm",
    "CryptoOracle",
    "Database",
    "DbConnectionError",
    "DbError",
    "DbOutcomeUnknownError",
    "DecryptionError",
    "Delete",
    "EncryptedContent",
    "EncryptionOracle",
    "HsmEncryptionOracle",
    "HsmError",
    "HsmKeyAlgorithm",
    "HsmKeypairAlgorithm",
    "HsmObject",
    "HsmObjectFilter",
    "HsmStore",
    "HsmTimeoutError",
    "InterfaceError",
    "InvalidRequestError",
    "KeyMaterial",
    "KeyMetadata",
    "KeyType",
    "MacCapable",
    "MalformedKmipError",
    "Mechanism",
    "Module",
    "NotSupportedError",
    "ObjectWithMetadata",
    "ObjectsStore",
    "PermissionsStore",
    "Pkcs11Error",
    "Pkcs11Hsm",
    "RsaPrivateKeyMaterial",
    "RsaPublicKeyMaterial",
    "SecretBytes",
    "Session",
    "SessionPool",
    "SessionPoolTimeoutError",
    "SigningAlgorithm",
    "UnauthorizedError",
    "UpdateObject",
    "UpdateState",
    "Upsert",
    "__version__",
    "wipe",
]
