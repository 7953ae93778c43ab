"""The oracle contracts: encryption (the seed's ``EncryptionOracle``) and signing/MAC.

An oracle is keyed by uid (``<prefix>::<slot>::<key_id>`` for HSM keys); one oracle is registered
per uid prefix. ``CryptoOracle`` is Cosmian 5.26's name for the oracle with signing and MAC.
"""

from __future__ import annotations

import abc

from kms_iface.hsm import CryptoAlgorithm, EncryptedContent, KeyMetadata, KeyType
from kms_iface.kmip.attributes import CryptographicParameters
from kms_iface.secrets import SecretBytes

__all__ = ["CryptoOracle", "EncryptionOracle"]

Data = bytes | bytearray | memoryview


class EncryptionOracle(abc.ABC):
    """Encrypts and decrypts with keys the caller never sees."""

    @abc.abstractmethod
    async def encrypt(
        self,
        uid: str,
        data: Data,
        cryptographic_algorithm: CryptoAlgorithm | None = None,
        authenticated_encryption_additional_data: bytes | None = None,
    ) -> EncryptedContent:
        """Encrypt with the key ``uid`` (default algorithm chosen from the key's type)."""

    @abc.abstractmethod
    async def decrypt(
        self,
        uid: str,
        data: Data,
        cryptographic_algorithm: CryptoAlgorithm | None = None,
        authenticated_encryption_additional_data: bytes | None = None,
    ) -> SecretBytes:
        """Decrypt with the key ``uid``; the plaintext is wipeable."""

    @abc.abstractmethod
    async def get_key_type(self, uid: str) -> KeyType | None:
        """The type of the key ``uid``, or None."""

    @abc.abstractmethod
    async def get_key_metadata(self, uid: str) -> KeyMetadata | None:
        """The metadata of the key ``uid``, or None."""


class CryptoOracle(EncryptionOracle):
    """An ``EncryptionOracle`` that also signs, verifies and computes MACs."""

    @abc.abstractmethod
    async def sign(
        self, uid: str, data: Data, cryptographic_parameters: CryptographicParameters | None = None
    ) -> bytes:
        """Sign ``data`` with the private key ``uid``."""

    @abc.abstractmethod
    async def signature_verify(
        self,
        uid: str,
        data: Data,
        signature: Data,
        cryptographic_parameters: CryptographicParameters | None = None,
    ) -> bool:
        """Whether ``signature`` over ``data`` is valid for the key ``uid``."""

    @abc.abstractmethod
    async def mac(
        self, uid: str, data: Data, cryptographic_parameters: CryptographicParameters | None = None
    ) -> bytes:
        """The MAC of ``data`` under the key ``uid``."""

    @abc.abstractmethod
    async def mac_verify(
        self,
        uid: str,
        data: Data,
        mac: Data,
        cryptographic_parameters: CryptographicParameters | None = None,
    ) -> bool:
        """Whether ``mac`` is the MAC of ``data`` under the key ``uid``."""
