"""Wrapping a stored key with a key-encryption key (KEK) reached through an encryption oracle.

The KEK decides the algorithm, written into the wrapped object so that unwrapping never depends
on an oracle's defaults: an AES KEK wraps with AES-GCM (stored bytes ``iv ‖ ct ‖ tag``); an RSA
KEK with RSA-OAEP SHA-1 (Cosmian's choice: 214 bytes at most with RSA-2048), through the public
key ``<uid>_pk`` of the private key that unwraps. The object forms are those of
``kms_iface.kmip.wrapping``.
"""

from __future__ import annotations

from typing import Final

from kms_iface.errors import InterfaceError, InvalidRequestError, NotSupportedError
from kms_iface.hsm import CryptoAlgorithm, KeyType
from kms_iface.kmip.attributes import CryptographicParameters
from kms_iface.kmip.enums import (
    BlockCipherMode,
    CryptographicAlgorithm,
    HashingAlgorithm,
    PaddingMethod,
)
from kms_iface.kmip.objects import Object
from kms_iface.kmip.wrapping import key_material_bytes, wrapped_object, wrapping_parameters
from kms_iface.oracle import EncryptionOracle
from kms_iface.secrets import SecretBytes

__all__ = ["unwrap_key_material", "wrap_object"]

_AES_GCM: Final = CryptographicParameters(
    cryptographic_algorithm=CryptographicAlgorithm.AES, block_cipher_mode=BlockCipherMode.GCM
)
_RSA_OAEP_SHA1: Final = CryptographicParameters(
    cryptographic_algorithm=CryptographicAlgorithm.RSA,
    padding_method=PaddingMethod["OAEP"],
    hashing_algorithm=HashingAlgorithm.SHA1,
)


async def _parameters(oracle: EncryptionOracle, kek_uid: str) -> CryptographicParameters:
    key_type = await oracle.get_key_type(kek_uid)
    if key_type is KeyType.AES_KEY:
        return _AES_GCM
    if key_type is KeyType.RSA_PRIVATE_KEY:
        return _RSA_OAEP_SHA1
    if key_type is KeyType.RSA_PUBLIC_KEY:
        raise InvalidRequestError(
            f"The key-encryption key {kek_uid} is an RSA public key: name its private key, "
            "which can unwrap"
        )
    raise InvalidRequestError(f"The key-encryption key {kek_uid} does not exist")


async def wrap_object(
    oracle: EncryptionOracle, kek_uid: str, obj: Object, aad: bytes | None = None
) -> Object:
    """``obj`` with its key material encrypted by the KEK ``kek_uid`` (held by ``oracle``).

    ``aad`` (AES KEKs only) binds the wrapping to something the unwrapper must present again.
    """
    parameters = await _parameters(oracle, kek_uid)
    algorithm = CryptoAlgorithm.from_kmip(parameters)
    if aad is not None and algorithm is not CryptoAlgorithm.AES_GCM:
        raise NotSupportedError(f"binding data to a wrapping needs an AES KEK: {kek_uid} is not")
    with key_material_bytes(obj) as plaintext, memoryview(plaintext) as view:
        encrypted = await oracle.encrypt(kek_uid, view, algorithm, aad)
    wrapped = b"".join(
        part for part in (encrypted.iv, encrypted.ciphertext, encrypted.tag) if part is not None
    )
    return wrapped_object(obj, wrapped, kek_uid, parameters)


async def unwrap_key_material(
    oracle: EncryptionOracle, uid: str, stored: Object, aad: bytes | None = None
) -> SecretBytes:
    """The plaintext key material of the wrapped ``stored`` (the object of ``uid``).

    ``aad``: what the wrapping was bound to. A KEK that is gone, or a ciphertext it does not
    open, raises ``InvalidRequestError`` naming both uids (the oracle's error is chained).
    """
    kek_uid, parameters, wrapped = wrapping_parameters(stored)
    algorithm = CryptoAlgorithm.from_kmip(parameters)
    try:
        return await oracle.decrypt(kek_uid, wrapped, algorithm, aad)
    except InterfaceError as exc:
        if await oracle.get_key_type(kek_uid) is None:
            raise InvalidRequestError(
                f"Cannot unwrap {uid}: its key-encryption key {kek_uid} does not exist"
            ) from exc
        raise InvalidRequestError(
            f"Cannot unwrap {uid} with its key-encryption key {kek_uid}: {exc}"
        ) from exc
