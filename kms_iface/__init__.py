"""kms_iface: plugin interfaces for a Python key-management server.

The public names live here; the synchronous PKCS#11 core is ``kms_iface.pkcs11``.
"""

from kms_iface.errors import (
    DbError,
    DecryptionError,
    HsmError,
    InterfaceError,
    InvalidRequestError,
    NotSupportedError,
    Pkcs11Error,
    SessionPoolTimeoutError,
    UnauthorizedError,
)
from kms_iface.pkcs11 import Mechanism, Module, Session, SessionPool
from kms_iface.secrets import SecretBytes, wipe

__version__ = "0.1.0"

__all__ = [
    "DbError",
    "DecryptionError",
    "HsmError",
    "InterfaceError",
    "InvalidRequestError",
    "Mechanism",
    "Module",
    "NotSupportedError",
    "Pkcs11Error",
    "SecretBytes",
    "Session",
    "SessionPool",
    "SessionPoolTimeoutError",
    "UnauthorizedError",
    "__version__",
    "wipe",
]
