"""The HSM contract and its value types (Cosmian's ``HSM`` trait, in Python).

``HSM`` is an abstract base class with ``async def`` methods that run under any anyio backend.
Key ids are accepted as ``str`` or ``bytes`` (the UTF-8 of the id); ids read back are ``str``.
Secret values (AES keys, private RSA components, decrypted data) are ``SecretBytes``.
"""

from __future__ import annotations

import abc
import datetime
import enum
from collections.abc import Iterable
from types import TracebackType
from typing import Self, TypeAlias

import msgspec

from kms_iface.errors import InvalidRequestError
from kms_iface.kmip.attributes import CryptographicParameters
from kms_iface.kmip.enums import (
    BlockCipherMode,
    CryptographicAlgorithm,
    DigitalSignatureAlgorithm,
    HashingAlgorithm,
    PaddingMethod,
)
from kms_iface.secrets import SecretBytes

__all__ = [
    "HSM",
    "AesKeyMaterial",
    "CryptoAlgorithm",
    "EncryptedContent",
    "HsmKeyAlgorithm",
    "HsmKeypairAlgorithm",
    "HsmObject",
    "HsmObjectFilter",
    "KeyId",
    "KeyMaterial",
    "KeyMetadata",
    "KeyType",
    "LabelMetadata",
    "MacCapable",
    "RsaPrivateKeyMaterial",
    "RsaPublicKeyMaterial",
    "SigningAlgorithm",
    "parse_label_metadata",
]

KeyId: TypeAlias = str | bytes
"""A key id: text, or its UTF-8 bytes."""


class KeyType(enum.Enum):
    """The kinds of key an HSM implementation handles."""

    AES_KEY = "AES_KEY"
    RSA_PRIVATE_KEY = "RSA_PRIVATE_KEY"
    RSA_PUBLIC_KEY = "RSA_PUBLIC_KEY"


class HsmKeyAlgorithm(enum.Enum):
    """Algorithms of single keys an HSM creates."""

    AES = "AES"


class HsmKeypairAlgorithm(enum.Enum):
    """Algorithms of key pairs an HSM creates."""

    RSA = "RSA"


class HsmObjectFilter(enum.Enum):
    """What ``HSM.find`` looks for."""

    ANY = "ANY"
    AES_KEY = "AES_KEY"
    RSA_KEY = "RSA_KEY"
    RSA_PRIVATE_KEY = "RSA_PRIVATE_KEY"
    RSA_PUBLIC_KEY = "RSA_PUBLIC_KEY"


class CryptoAlgorithm(enum.Enum):
    """Encryption algorithms of the HSM interface (byte layouts in the README)."""

    AES_CBC = "AES_CBC"
    AES_GCM = "AES_GCM"
    RSA_PKCS_V15 = "RSA_PKCS_V15"
    RSA_OAEP_SHA256 = "RSA_OAEP_SHA256"
    RSA_OAEP_SHA1 = "RSA_OAEP_SHA1"

    @classmethod
    def get_aes_algorithm(cls, supported: Iterable[CryptoAlgorithm]) -> CryptoAlgorithm:
        """GCM if supported, else CBC."""
        available = set(supported)
        for choice in (cls.AES_GCM, cls.AES_CBC):
            if choice in available:
                return choice
        raise InvalidRequestError("AES not supported")

    @classmethod
    def get_rsa_algorithm(cls, supported: Iterable[CryptoAlgorithm]) -> CryptoAlgorithm:
        """OAEP-SHA256, else OAEP-SHA1, else PKCS#1 v1.5."""
        available = set(supported)
        for choice in (cls.RSA_OAEP_SHA256, cls.RSA_OAEP_SHA1, cls.RSA_PKCS_V15):
            if choice in available:
                return choice
        raise InvalidRequestError("RSA not supported")

    @classmethod
    def from_kmip(cls, parameters: CryptographicParameters | None) -> CryptoAlgorithm | None:
        """The algorithm KMIP cryptographic parameters ask for; None when they name none."""
        if parameters is None or parameters.cryptographic_algorithm is None:
            return None
        algorithm = parameters.cryptographic_algorithm
        if algorithm == CryptographicAlgorithm.AES:
            mode = parameters.block_cipher_mode
            if mode is None or mode == BlockCipherMode.GCM:
                return cls.AES_GCM
            if mode == BlockCipherMode.CBC:
                return cls.AES_CBC
            raise InvalidRequestError(f"AES block cipher mode {_name(mode)} is not supported")
        if algorithm == CryptographicAlgorithm.RSA:
            padding = parameters.padding_method
            if padding is None:
                return cls.RSA_OAEP_SHA256
            if padding == PaddingMethod["OAEP"]:
                if parameters.hashing_algorithm == HashingAlgorithm.SHA1:
                    return cls.RSA_OAEP_SHA1
                return cls.RSA_OAEP_SHA256
            if padding == PaddingMethod["PKCS1v15"]:
                return cls.RSA_PKCS_V15
            raise InvalidRequestError(f"RSA padding method {_name(padding)} is not supported")
        raise InvalidRequestError(f"cryptographic algorithm {_name(algorithm)} is not supported")


class SigningAlgorithm(enum.Enum):
    """RSA signature schemes (``RSA_PKCS_V15``: the caller hashed; PSS salt = hash length)."""

    RSA_PKCS_V15 = "RSA_PKCS_V15"
    SHA1_WITH_RSA = "SHA1_WITH_RSA"
    SHA256_WITH_RSA = "SHA256_WITH_RSA"
    SHA384_WITH_RSA = "SHA384_WITH_RSA"
    SHA512_WITH_RSA = "SHA512_WITH_RSA"
    SHA256_WITH_RSA_PSS = "SHA256_WITH_RSA_PSS"
    SHA384_WITH_RSA_PSS = "SHA384_WITH_RSA_PSS"
    SHA512_WITH_RSA_PSS = "SHA512_WITH_RSA_PSS"

    @classmethod
    def from_kmip(cls, parameters: CryptographicParameters | None) -> SigningAlgorithm:
        """The scheme KMIP cryptographic parameters ask for (None: SHA-256 with PKCS#1 v1.5).

        A DigitalSignatureAlgorithm decides; else PaddingMethod PSS picks the PSS variant of the
        hashing algorithm (default SHA-256); else the hashing algorithm picks the PKCS#1 v1.5
        variant. Anything else raises ``InvalidRequestError``.
        """
        if parameters is None:
            return cls.SHA256_WITH_RSA
        hashing = parameters.hashing_algorithm
        scheme = parameters.digital_signature_algorithm
        if scheme is not None:
            by_scheme = _PKCS1_SCHEMES.get(scheme)
            if by_scheme is not None:
                return by_scheme
            if scheme == DigitalSignatureAlgorithm.RSASSAPSS:
                return _pss(hashing)
            raise InvalidRequestError(f"signature algorithm {_name(scheme)} is not supported")
        if parameters.padding_method == PaddingMethod["PSS"]:
            return _pss(hashing)
        if hashing is not None and hashing in _PKCS1_HASHES:
            return _PKCS1_HASHES[hashing]
        raise InvalidRequestError(
            "the cryptographic parameters name no supported RSA signature scheme"
        )


_PKCS1_SCHEMES: dict[DigitalSignatureAlgorithm, SigningAlgorithm] = {
    DigitalSignatureAlgorithm.SHA1WithRSAEncryption: SigningAlgorithm.SHA1_WITH_RSA,
    DigitalSignatureAlgorithm.SHA224WithRSAEncryption: SigningAlgorithm.SHA256_WITH_RSA,
    DigitalSignatureAlgorithm.SHA256WithRSAEncryption: SigningAlgorithm.SHA256_WITH_RSA,
    DigitalSignatureAlgorithm.SHA384WithRSAEncryption: SigningAlgorithm.SHA384_WITH_RSA,
    DigitalSignatureAlgorithm.SHA512WithRSAEncryption: SigningAlgorithm.SHA512_WITH_RSA,
}
_PKCS1_HASHES: dict[HashingAlgorithm, SigningAlgorithm] = {
    HashingAlgorithm.SHA1: SigningAlgorithm.SHA1_WITH_RSA,
    HashingAlgorithm.SHA256: SigningAlgorithm.SHA256_WITH_RSA,
    HashingAlgorithm.SHA384: SigningAlgorithm.SHA384_WITH_RSA,
    HashingAlgorithm.SHA512: SigningAlgorithm.SHA512_WITH_RSA,
}
_PSS_HASHES: dict[HashingAlgorithm | None, SigningAlgorithm] = {
    None: SigningAlgorithm.SHA256_WITH_RSA_PSS,
    HashingAlgorithm.SHA256: SigningAlgorithm.SHA256_WITH_RSA_PSS,
    HashingAlgorithm.SHA384: SigningAlgorithm.SHA384_WITH_RSA_PSS,
    HashingAlgorithm.SHA512: SigningAlgorithm.SHA512_WITH_RSA_PSS,
}


def _pss(hashing: HashingAlgorithm | None) -> SigningAlgorithm:
    chosen = _PSS_HASHES.get(hashing)
    if chosen is None:
        raise InvalidRequestError(f"RSA-PSS with {_name(hashing)} is not supported")
    return chosen


def _name(member: enum.Enum | None) -> str:
    return "no value" if member is None else member.name


class AesKeyMaterial(msgspec.Struct, frozen=True):
    """An AES key's bytes."""

    key: SecretBytes


class RsaPrivateKeyMaterial(msgspec.Struct, frozen=True):
    """An RSA private key by its integers (big-endian bytes; secret ones wipeable)."""

    modulus: bytes
    public_exponent: bytes
    private_exponent: SecretBytes
    prime_1: SecretBytes
    prime_2: SecretBytes
    exponent_1: SecretBytes
    exponent_2: SecretBytes
    coefficient: SecretBytes


class RsaPublicKeyMaterial(msgspec.Struct, frozen=True):
    """An RSA public key by its integers (big-endian bytes)."""

    modulus: bytes
    public_exponent: bytes


KeyMaterial: TypeAlias = AesKeyMaterial | RsaPrivateKeyMaterial | RsaPublicKeyMaterial


class HsmObject(msgspec.Struct, frozen=True):
    """Exported key material with the id read back from the token (an RSA public key's ends _pk)."""

    key_material: KeyMaterial
    id: str


class KeyMetadata(msgspec.Struct, frozen=True):
    """What an HSM says about a key without exporting it."""

    key_type: KeyType
    key_length_in_bits: int
    sensitive: bool
    id: str
    start_date: datetime.date | None = None
    end_date: datetime.date | None = None
    rotate_name: str | None = None
    rotate_generation: int | None = None


class EncryptedContent(msgspec.Struct, frozen=True):
    """An encryption's output: AES-GCM gives ciphertext, 12-byte iv and 16-byte tag; CBC an iv."""

    ciphertext: bytes
    iv: bytes | None = None
    tag: bytes | None = None


class LabelMetadata(msgspec.Struct, frozen=True):
    """Rotation metadata carried by a label ``rotate_name::generation::key_id[@latest]``."""

    rotate_name: str
    rotate_generation: int
    key_id: str
    latest: bool


def parse_label_metadata(label: str) -> LabelMetadata | None:
    """Split ``label`` from the right on ``::`` into name, generation and key id (or None).

    The name may itself contain ``::``; the generation must be an unsigned integer; a trailing
    ``@latest`` on the key id marks the newest key of the lineage.
    """
    parts = label.rsplit("::", 2)
    if len(parts) != 3:
        return None
    name, generation, key_id = parts
    if not name or not key_id or not generation.isascii() or not generation.isdigit():
        return None
    latest = key_id.endswith("@latest")
    if latest:
        key_id = key_id[: -len("@latest")]
        if not key_id:
            return None
    return LabelMetadata(name, int(generation), key_id, latest)


class HSM(abc.ABC):
    """A hardware security module (or any key store that behaves like one), by slot.

    Life cycle: the constructor does no blocking I/O beyond loading a library; ``async with`` or
    ``await hsm.aclose()`` (idempotent). A slot that is not configured, or has no token, raises
    ``InvalidRequestError("slot <n> is not accessible")``.
    """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release every session and the library (idempotent)."""

    @abc.abstractmethod
    async def get_available_slot_list(self) -> list[int]:
        """The slots this HSM was configured with."""

    @abc.abstractmethod
    async def get_supported_algorithms(self, slot_id: int) -> list[CryptoAlgorithm]:
        """The encryption algorithms the slot's token supports (OAEP hashes probed once)."""

    @abc.abstractmethod
    async def create_key(
        self,
        slot_id: int,
        id: KeyId,
        algorithm: HsmKeyAlgorithm,
        key_length_in_bits: int,
        sensitive: bool,
    ) -> None:
        """Create an AES key (128 or 256 bits); an existing id is refused."""

    @abc.abstractmethod
    async def create_keypair(
        self,
        slot_id: int,
        sk_id: KeyId,
        pk_id: KeyId,
        algorithm: HsmKeypairAlgorithm,
        key_length_in_bits: int,
        sensitive: bool,
    ) -> None:
        """Create an RSA key pair (1024-4096 bits, e = 65537); an existing id is refused."""

    @abc.abstractmethod
    async def export(self, slot_id: int, object_id: KeyId) -> HsmObject | None:
        """The key material, or None; a sensitive key raises ``HsmError``."""

    @abc.abstractmethod
    async def delete(self, slot_id: int, object_id: KeyId) -> None:
        """Destroy the object."""

    @abc.abstractmethod
    async def find(self, slot_id: int, object_filter: HsmObjectFilter) -> list[bytes]:
        """Ids of the matching objects; unsupported key types are skipped."""

    @abc.abstractmethod
    async def encrypt(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptoAlgorithm,
        data: bytes | bytearray | memoryview,
        *,
        aad: bytes | None = None,
    ) -> EncryptedContent:
        """Encrypt ``data`` (``aad`` only for AES-GCM)."""

    @abc.abstractmethod
    async def decrypt(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptoAlgorithm,
        data: bytes | bytearray | memoryview,
        *,
        aad: bytes | None = None,
    ) -> SecretBytes:
        """Decrypt ``data`` laid out as ``encrypt`` produced it."""

    @abc.abstractmethod
    async def get_key_type(self, slot_id: int, key_id: KeyId) -> KeyType | None:
        """The key's type, or None if there is no such key."""

    @abc.abstractmethod
    async def get_key_metadata(self, slot_id: int, key_id: KeyId) -> KeyMetadata | None:
        """The key's metadata, or None if there is no such key."""

    @abc.abstractmethod
    async def sign(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: SigningAlgorithm,
        data: bytes | bytearray | memoryview,
    ) -> bytes:
        """Sign ``data`` with the private key."""

    @abc.abstractmethod
    async def verify(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: SigningAlgorithm,
        data: bytes | bytearray | memoryview,
        signature: bytes | bytearray | memoryview,
    ) -> bool:
        """Whether ``signature`` is valid, checked with the public key (``_pk`` is tried)."""

    @abc.abstractmethod
    async def generate_random(self, slot_id: int, length: int) -> bytes:
        """``length`` bytes from the token's RNG."""

    @abc.abstractmethod
    async def seed_random(self, slot_id: int, seed: bytes | bytearray | memoryview) -> None:
        """Mix ``seed`` into the token's RNG (empty: no-op)."""

    @abc.abstractmethod
    async def set_key_dates(
        self,
        slot_id: int,
        key_id: KeyId,
        start_date: datetime.date | None,
        end_date: datetime.date | None,
    ) -> None:
        """Set CKA_START_DATE / CKA_END_DATE (None clears)."""

    @abc.abstractmethod
    async def set_key_label(self, slot_id: int, key_id: KeyId, label: str) -> None:
        """Set CKA_LABEL."""


class MacCapable(abc.ABC):
    """An optional capability of an ``HSM``: HMAC with a secret key kept on the token.

    ``algorithm`` is one of ``CryptographicAlgorithm.HMACSHA1`` / ``HMACSHA224`` /
    ``HMACSHA256`` / ``HMACSHA384`` / ``HMACSHA512`` (others raise ``NotSupportedError``). HMAC
    keys are not part of the HSM contract's key types: ``find`` skips them and ``get_key_type``
    gives None for them. A missing key raises ``InvalidRequestError("Object not found")``; a key
    that is not an HMAC key raises ``NotSupportedError``.
    """

    @abc.abstractmethod
    async def mac(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptographicAlgorithm,
        data: bytes | bytearray | memoryview,
    ) -> bytes:
        """The HMAC of ``data`` under the key ``key_id``."""

    @abc.abstractmethod
    async def mac_verify(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptographicAlgorithm,
        data: bytes | bytearray | memoryview,
        mac: bytes | bytearray | memoryview,
    ) -> bool:
        """Whether ``mac`` is the HMAC of ``data`` under the key ``key_id`` (a wrong or
        truncated ``mac`` gives False)."""
