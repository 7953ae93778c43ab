"""``HsmEncryptionOracle``: any ``HSM`` seen as a ``CryptoOracle`` keyed by uid.

A uid is ``<prefix>::<slot>::<key_id>``: the slot an unsigned integer, the key id the rest,
verbatim (it may contain ``::``). The rules follow Cosmian's HSM oracle, with three extensions
that leave default calls byte-compatible:

- additional authenticated data is accepted with AES-GCM (Cosmian refuses any AAD); with any
  other algorithm it is refused. Empty AAD counts as none;
- ``signature_verify`` works (Cosmian: NotSupported), through ``HSM.verify``;
- an RSA private key uid is redirected to ``<uid>_pk`` for encryption whenever the algorithm is
  RSA, and an RSA public key is refused for decryption even with an explicit algorithm (Cosmian
  checks the key type only when it picks the algorithm itself).

``mac`` and ``mac_verify`` work when the HSM is ``MacCapable`` (``Pkcs11Hsm`` is) and the token
has an HMAC key and mechanism: the algorithm is the parameters' HMAC algorithm (default
HMACSHA256); a missing key is an ``InvalidRequestError``; a key that is not an HMAC key, an
algorithm that is not HMAC-SHA*, a token without the mechanism or an HSM that is not
``MacCapable`` raise ``NotSupportedError``.
"""

from __future__ import annotations

from typing import Final

from kms_iface.errors import InvalidRequestError, MechanismInvalidError, NotSupportedError
from kms_iface.hsm import (
    HSM,
    CryptoAlgorithm,
    EncryptedContent,
    KeyMetadata,
    KeyType,
    MacCapable,
    SigningAlgorithm,
)
from kms_iface.kmip.attributes import CryptographicParameters
from kms_iface.kmip.enums import CryptographicAlgorithm
from kms_iface.oracle import CryptoOracle, Data
from kms_iface.secrets import SecretBytes

__all__ = ["HsmEncryptionOracle", "hsm_uid", "parse_hsm_uid"]

_USIZE_MAX: Final = 2**64 - 1
_USIZE_DIGITS: Final = len(str(_USIZE_MAX))
_RSA: Final = frozenset(
    {CryptoAlgorithm.RSA_PKCS_V15, CryptoAlgorithm.RSA_OAEP_SHA1, CryptoAlgorithm.RSA_OAEP_SHA256}
)
# Rust's Debug names of Cosmian's KeyType, for messages identical to Cosmian's.
_RUST_NAMES: Final = {
    KeyType.AES_KEY: "AesKey",
    KeyType.RSA_PRIVATE_KEY: "RsaPrivateKey",
    KeyType.RSA_PUBLIC_KEY: "RsaPublicKey",
}


def parse_hsm_uid(uid: str, prefix: str) -> tuple[int, str]:
    """Split ``<prefix>::<slot>::<key_id>`` into ``(slot, key_id)``.

    Raises ``InvalidRequestError`` with Cosmian's texts: the uid form, or the slot's integer
    parse error (Rust's ``usize`` messages).
    """
    rest = uid.removeprefix(prefix + "::") if uid.startswith(prefix + "::") else None
    parts = rest.split("::", 1) if rest is not None else []
    if len(parts) != 2 or not parts[1]:
        raise InvalidRequestError(
            "An HSM request must have a uid in the form of "
            f"'{prefix}::<slot_id>::<key_id>', got: {uid}"
        )
    slot, key_id = parts
    return _parse_usize(slot), key_id


def hsm_uid(prefix: str, slot_id: int, key_id: str) -> str:
    """The uid of key ``key_id`` in slot ``slot_id`` behind ``prefix``."""
    return f"{prefix}::{slot_id}::{key_id}"


def _parse_usize(text: str) -> int:
    """Rust's ``str::parse::<usize>`` (a leading ``+`` allowed, ASCII digits only)."""
    digits = text[1:] if text.startswith("+") else text
    # Leading zeros off before int(), which refuses strings of over 4300 digits (ValueError).
    significant = digits.lstrip("0") or "0"
    if not text:
        reason = "cannot parse integer from empty string"
    elif not digits or not (digits.isascii() and digits.isdigit()):
        reason = "invalid digit found in string"
    elif len(significant) > _USIZE_DIGITS or int(significant) > _USIZE_MAX:
        reason = "number too large to fit in target type"
    else:
        return int(significant)
    raise InvalidRequestError(f"The slot_id must be a valid unsigned integer: {reason}")


class HsmEncryptionOracle(CryptoOracle):
    """The ``CryptoOracle`` of the keys of ``hsm``, registered under the uid ``prefix``."""

    def __init__(self, hsm: HSM, prefix: str) -> None:
        self._hsm = hsm
        self._prefix = prefix

    @property
    def hsm(self) -> HSM:
        """The wrapped HSM."""
        return self._hsm

    @property
    def prefix(self) -> str:
        """The uid prefix this oracle answers for."""
        return self._prefix

    def __repr__(self) -> str:
        return f"HsmEncryptionOracle({type(self._hsm).__name__}, prefix={self._prefix!r})"

    def parse_uid(self, uid: str) -> tuple[int, str]:
        """``(slot, key_id)`` of ``uid`` (see ``parse_hsm_uid``)."""
        return parse_hsm_uid(uid, self._prefix)

    async def encrypt(
        self,
        uid: str,
        data: Data,
        cryptographic_algorithm: CryptoAlgorithm | None = None,
        authenticated_encryption_additional_data: bytes | None = None,
    ) -> EncryptedContent:
        """Encrypt; default: AES-GCM > CBC, RSA OAEP-SHA256 > OAEP-SHA1 > PKCS#1 v1.5.

        An RSA private key uid encrypts with its public key ``<uid>_pk``.
        """
        slot, key_id = self.parse_uid(uid)
        algorithm = cryptographic_algorithm
        if algorithm is None or algorithm in _RSA:
            key_type = await self._hsm.get_key_type(slot, key_id)
            if key_type is None:
                raise InvalidRequestError(f"The key type of key: {uid}, cannot be determined")
            if key_type is KeyType.RSA_PRIVATE_KEY:
                key_id += "_pk"
                public = await self._hsm.get_key_type(slot, key_id)
                if public is not KeyType.RSA_PUBLIC_KEY:
                    raise InvalidRequestError(
                        f"The key {uid} is a private key, but no public key {uid}_pk is available"
                    )
                key_type = public
            if algorithm is None:
                algorithm = await self._default_algorithm(slot, key_type)
        aad = _check_aad(algorithm, authenticated_encryption_additional_data)
        return await self._hsm.encrypt(slot, key_id, algorithm, data, aad=aad)

    async def decrypt(
        self,
        uid: str,
        data: Data,
        cryptographic_algorithm: CryptoAlgorithm | None = None,
        authenticated_encryption_additional_data: bytes | None = None,
    ) -> SecretBytes:
        """Decrypt (default algorithm as for ``encrypt``); an RSA public key is refused."""
        slot, key_id = self.parse_uid(uid)
        algorithm = cryptographic_algorithm
        if algorithm is None or algorithm in _RSA:
            key_type = await self._hsm.get_key_type(slot, key_id)
            if key_type is None:
                raise InvalidRequestError(f"The key type of key: {uid}, cannot be determined")
            if key_type is KeyType.RSA_PUBLIC_KEY:
                raise InvalidRequestError("An RSA public key cannot be used to decrypt")
            if algorithm is None:
                algorithm = await self._default_algorithm(slot, key_type)
        aad = _check_aad(algorithm, authenticated_encryption_additional_data)
        return await self._hsm.decrypt(slot, key_id, algorithm, data, aad=aad)

    async def get_key_type(self, uid: str) -> KeyType | None:
        """The key's type, or None."""
        slot, key_id = self.parse_uid(uid)
        return await self._hsm.get_key_type(slot, key_id)

    async def get_key_metadata(self, uid: str) -> KeyMetadata | None:
        """The key's metadata, or None."""
        slot, key_id = self.parse_uid(uid)
        return await self._hsm.get_key_metadata(slot, key_id)

    async def sign(
        self, uid: str, data: Data, cryptographic_parameters: CryptographicParameters | None = None
    ) -> bytes:
        """Sign with the RSA private key ``uid`` (scheme: ``SigningAlgorithm.from_kmip``)."""
        slot, key_id = self.parse_uid(uid)
        algorithm = SigningAlgorithm.from_kmip(cryptographic_parameters)
        key_type = await self._hsm.get_key_type(slot, key_id)
        if key_type is None:
            raise InvalidRequestError(f"Sign: key {uid} not found on the HSM")
        if key_type is not KeyType.RSA_PRIVATE_KEY:
            raise InvalidRequestError(
                f"Sign: key {uid} is a {_RUST_NAMES[key_type]}, expected an RSA private key"
            )
        return await self._hsm.sign(slot, key_id, algorithm, data)

    async def signature_verify(
        self,
        uid: str,
        data: Data,
        signature: Data,
        cryptographic_parameters: CryptographicParameters | None = None,
    ) -> bool:
        """Verify with the RSA key ``uid`` (a private key's uid uses its public key)."""
        slot, key_id = self.parse_uid(uid)
        algorithm = SigningAlgorithm.from_kmip(cryptographic_parameters)
        key_type = await self._hsm.get_key_type(slot, key_id)
        if key_type is None:
            raise InvalidRequestError(f"Verify: key {uid} not found on the HSM")
        if key_type is KeyType.AES_KEY:
            raise InvalidRequestError(
                f"Verify: key {uid} is a {_RUST_NAMES[key_type]}, expected an RSA key"
            )
        return await self._hsm.verify(slot, key_id, algorithm, data, signature)

    async def mac(
        self, uid: str, data: Data, cryptographic_parameters: CryptographicParameters | None = None
    ) -> bytes:
        """The HMAC of ``data`` under the HMAC key ``uid`` (default HMACSHA256); an HSM that is
        not ``MacCapable`` raises ``NotSupportedError``."""
        hsm = self._hsm
        if not isinstance(hsm, MacCapable):
            raise NotSupportedError("MAC is not supported by the HSM oracle")
        slot, key_id = self.parse_uid(uid)
        algorithm = _mac_algorithm(cryptographic_parameters)
        try:
            return await hsm.mac(slot, key_id, algorithm, data)
        except MechanismInvalidError:
            raise NotSupportedError(
                f"MAC: the HSM does not support {algorithm.name} (no such mechanism)"
            ) from None

    async def mac_verify(
        self,
        uid: str,
        data: Data,
        mac: Data,
        cryptographic_parameters: CryptographicParameters | None = None,
    ) -> bool:
        """Whether ``mac`` is the HMAC of ``data`` under the HMAC key ``uid`` (as ``mac``)."""
        hsm = self._hsm
        if not isinstance(hsm, MacCapable):
            raise NotSupportedError("MAC verification is not supported by the HSM oracle")
        slot, key_id = self.parse_uid(uid)
        algorithm = _mac_algorithm(cryptographic_parameters)
        try:
            return await hsm.mac_verify(slot, key_id, algorithm, data, mac)
        except MechanismInvalidError:
            raise NotSupportedError(
                f"MAC verification: the HSM does not support {algorithm.name} (no such mechanism)"
            ) from None

    async def _default_algorithm(self, slot: int, key_type: KeyType) -> CryptoAlgorithm:
        supported = await self._hsm.get_supported_algorithms(slot)
        if key_type is KeyType.AES_KEY:
            return CryptoAlgorithm.get_aes_algorithm(supported)
        return CryptoAlgorithm.get_rsa_algorithm(supported)


def _mac_algorithm(parameters: CryptographicParameters | None) -> CryptographicAlgorithm:
    """The HMAC algorithm the parameters name (HMACSHA256 when they name none)."""
    if parameters is None or parameters.cryptographic_algorithm is None:
        return CryptographicAlgorithm.HMACSHA256
    return parameters.cryptographic_algorithm


def _check_aad(algorithm: CryptoAlgorithm, aad: bytes | None) -> bytes | None:
    """The AAD to pass on (None when empty); refused unless the algorithm is AES-GCM."""
    if not aad:
        return None
    if algorithm is not CryptoAlgorithm.AES_GCM:
        raise InvalidRequestError(
            f"Additional authenticated data are only supported with AES_GCM, not {algorithm.name}"
        )
    return aad
