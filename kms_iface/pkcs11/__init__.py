"""The synchronous, thread-safe PKCS#11 core: modules, session pools, sessions, mechanisms."""

from kms_iface._pkcs11 import (
    Library,
    LibraryInfo,
    Mechanism,
    MechanismInfo,
    SecretBytes,
    Session,
    SessionInfo,
    SlotInfo,
    TokenInfo,
    Version,
)
from kms_iface.pkcs11 import constants
from kms_iface.pkcs11.module import Module
from kms_iface.pkcs11.pool import DEFAULT_POOL_CAP, SessionPool
from kms_iface.pkcs11.templates import aes_key_template, find_keys, rsa_key_pair_templates

__all__ = [
    "DEFAULT_POOL_CAP",
    "Library",
    "LibraryInfo",
    "Mechanism",
    "MechanismInfo",
    "Module",
    "SecretBytes",
    "Session",
    "SessionInfo",
    "SessionPool",
    "SlotInfo",
    "TokenInfo",
    "Version",
    "aes_key_template",
    "constants",
    "find_keys",
    "rsa_key_pair_templates",
]
