"""KMIP 2.1 managed objects: the ``Object`` union, key blocks, key values and key material.

Secret material (symmetric keys, private RSA/EC/DH/DSA parts, byte-string key material such as
PKCS#8) is held as ``SecretBytes`` and zeroised by ``zeroize()`` on the object or when freed. RSA
and other big integers are big-endian unsigned bytes. A ``KeyValue`` is either a ``PlainKeyValue``
(key material and optional embedded attributes) or, when the key is wrapped, the wrapped bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

import msgspec

from kms_iface.errors import InvalidRequestError
from kms_iface.kmip._struct import Int32, KmipStruct
from kms_iface.kmip.attributes import Attributes, CryptographicParameters
from kms_iface.kmip.enums import (
    CertificateRequestType,
    CertificateType,
    CryptographicAlgorithm,
    CryptographicUsageMask,
    EncodingOption,
    KeyCompressionType,
    KeyFormatType,
    ObjectType,
    OpaqueDataType,
    RecommendedCurve,
    SecretDataType,
    SplitKeyMethod,
    WrappingMethod,
)
from kms_iface.secrets import SecretBytes

__all__ = [
    "ByteStringKeyMaterial",
    "Certificate",
    "CertificateRequest",
    "EncryptionKeyInformation",
    "KeyBlock",
    "KeyMaterial",
    "KeyWrappingData",
    "MACSignatureKeyInformation",
    "Object",
    "OpaqueObject",
    "PGPKey",
    "PlainKeyValue",
    "PrivateKey",
    "PublicKey",
    "SecretData",
    "SplitKey",
    "SymmetricKey",
    "TransparentDHPrivateKey",
    "TransparentDHPublicKey",
    "TransparentDSAPrivateKey",
    "TransparentDSAPublicKey",
    "TransparentECPrivateKey",
    "TransparentECPublicKey",
    "TransparentRSAPrivateKey",
    "TransparentRSAPublicKey",
    "TransparentSymmetricKey",
    "symmetric_key_object",
]


class _KeyMaterialStruct(KmipStruct, tag_field="_k", tag=True):
    """Base of the key material variants (tagged by class name in storage, untagged in JSON)."""


class ByteStringKeyMaterial(_KeyMaterialStruct):
    """Key material as one byte string in the encoding the key block's format names (Raw, PKCS8)."""

    value: SecretBytes


class TransparentSymmetricKey(_KeyMaterialStruct):
    """A symmetric key's raw bytes."""

    key: SecretBytes


class TransparentRSAPrivateKey(_KeyMaterialStruct):
    """An RSA private key by its integers (big-endian bytes); only the modulus is required."""

    modulus: bytes
    private_exponent: SecretBytes | None = None
    public_exponent: bytes | None = None
    p: SecretBytes | None = None
    q: SecretBytes | None = None
    prime_exponent_p: SecretBytes | None = None
    prime_exponent_q: SecretBytes | None = None
    crt_coefficient: SecretBytes | None = None


class TransparentRSAPublicKey(_KeyMaterialStruct):
    """An RSA public key by its integers (big-endian bytes)."""

    modulus: bytes
    public_exponent: bytes


class TransparentECPrivateKey(_KeyMaterialStruct):
    """An EC private key: the curve and the private scalar (big-endian bytes)."""

    recommended_curve: RecommendedCurve
    d: SecretBytes


class TransparentECPublicKey(_KeyMaterialStruct):
    """An EC public key: the curve and the encoded point."""

    recommended_curve: RecommendedCurve
    q_string: bytes


class TransparentDSAPrivateKey(_KeyMaterialStruct):
    """A DSA private key (big-endian integers)."""

    p: bytes
    q: bytes
    g: bytes
    x: SecretBytes


class TransparentDSAPublicKey(_KeyMaterialStruct):
    """A DSA public key (big-endian integers)."""

    p: bytes
    q: bytes
    g: bytes
    y: bytes


class TransparentDHPrivateKey(_KeyMaterialStruct):
    """A Diffie-Hellman private key (big-endian integers)."""

    p: bytes
    g: bytes
    x: SecretBytes
    q: bytes | None = None
    j: bytes | None = None


class TransparentDHPublicKey(_KeyMaterialStruct):
    """A Diffie-Hellman public key (big-endian integers)."""

    p: bytes
    g: bytes
    y: bytes
    q: bytes | None = None
    j: bytes | None = None


KeyMaterial: TypeAlias = (
    ByteStringKeyMaterial
    | TransparentSymmetricKey
    | TransparentRSAPrivateKey
    | TransparentRSAPublicKey
    | TransparentECPrivateKey
    | TransparentECPublicKey
    | TransparentDSAPrivateKey
    | TransparentDSAPublicKey
    | TransparentDHPrivateKey
    | TransparentDHPublicKey
)


class PlainKeyValue(KmipStruct):
    """An unwrapped key value: the key material and, optionally, attributes embedded with it."""

    key_material: KeyMaterial
    attributes: Attributes | None = None


class EncryptionKeyInformation(KmipStruct, frozen=True):  # type: ignore[misc]  # frozen subclass of the non-frozen base
    """The key that encrypted (wrapped) a key value."""

    unique_identifier: str
    cryptographic_parameters: CryptographicParameters | None = None


class MACSignatureKeyInformation(KmipStruct, frozen=True):  # type: ignore[misc]  # frozen subclass of the non-frozen base
    """The key that MACed or signed a wrapped key value."""

    unique_identifier: str
    cryptographic_parameters: CryptographicParameters | None = None


class KeyWrappingData(KmipStruct):
    """How a wrapped key value was wrapped, and by which key."""

    wrapping_method: WrappingMethod
    encryption_key_information: EncryptionKeyInformation | None = None
    mac_signature_key_information: MACSignatureKeyInformation | None = None
    mac_signature: bytes | None = None
    iv_counter_nonce: bytes | None = None
    encoding_option: EncodingOption | None = None


class KeyBlock(KmipStruct):
    """The key value of a key object with its format, algorithm, length and wrapping data.

    ``key_value`` is a ``PlainKeyValue``, the wrapped bytes when ``key_wrapping_data`` is set, or
    None (a metadata-only object).
    """

    key_format_type: KeyFormatType
    key_compression_type: KeyCompressionType | None = None
    key_value: PlainKeyValue | bytes | None = None
    cryptographic_algorithm: CryptographicAlgorithm | None = None
    cryptographic_length: Int32 | None = None
    key_wrapping_data: KeyWrappingData | None = None

    def key_material(self) -> KeyMaterial:
        """The plain key material; a wrapped or empty key block raises ``InvalidRequestError``."""
        if isinstance(self.key_value, PlainKeyValue):
            return self.key_value.key_material
        if self.key_value is None:
            raise InvalidRequestError("the key block has no key value")
        raise InvalidRequestError("the key block is wrapped: unwrap it to read its key material")


class _ObjectStruct(KmipStruct, tag_field="ObjectType", tag=True):
    """Base of the managed objects; the class name is the KMIP ObjectType name."""

    def object_type(self) -> ObjectType:
        """The KMIP object type of this object."""
        return ObjectType[type(self).__name__]

    def key_block(self) -> KeyBlock:
        """The key block; objects without one (certificates, opaque objects) raise."""
        block: KeyBlock | None = getattr(self, "block", None)
        if block is None:
            raise InvalidRequestError(f"a {type(self).__name__} object has no key block")
        return block

    def attributes(self) -> Attributes | None:
        """The attributes embedded in the key value, if any (never those of a wrapped key)."""
        block = getattr(self, "block", None)
        if block is not None and isinstance(block.key_value, PlainKeyValue):
            return block.key_value.attributes
        return None

    def is_wrapped(self) -> bool:
        """Whether the key value is wrapped (the key block carries key wrapping data)."""
        block = getattr(self, "block", None)
        return block is not None and block.key_wrapping_data is not None

    def wrapping_key_uid(self) -> str | None:
        """The uid of the key that wrapped this object's key value, or None."""
        block = getattr(self, "block", None)
        if block is None or block.key_wrapping_data is None:
            return None
        info = block.key_wrapping_data.encryption_key_information
        return None if info is None else info.unique_identifier

    def zeroize(self) -> None:
        """Wipe every secret buffer of the key material now."""
        block = getattr(self, "block", None)
        if block is None or not isinstance(block.key_value, PlainKeyValue):
            return
        material = block.key_value.key_material
        for field in material.__struct_fields__:
            value = getattr(material, field)
            if isinstance(value, SecretBytes):
                value.zeroize()


class SymmetricKey(_ObjectStruct):
    """A symmetric key."""

    block: KeyBlock


class PrivateKey(_ObjectStruct):
    """The private part of an asymmetric key pair."""

    block: KeyBlock


class PublicKey(_ObjectStruct):
    """The public part of an asymmetric key pair."""

    block: KeyBlock


class SecretData(_ObjectStruct):
    """A secret that is not a key (a password, a seed)."""

    secret_data_type: SecretDataType
    block: KeyBlock


class SplitKey(_ObjectStruct):
    """One part of a key split with a secret-sharing method."""

    split_key_parts: Int32
    key_part_identifier: Int32
    split_key_threshold: Int32
    split_key_method: SplitKeyMethod
    block: KeyBlock
    prime_field_size: bytes | None = None


class PGPKey(_ObjectStruct):
    """An OpenPGP key."""

    pgp_key_version: Int32
    block: KeyBlock


class Certificate(_ObjectStruct):
    """A certificate (DER for X.509)."""

    certificate_type: CertificateType
    certificate_value: bytes


class CertificateRequest(_ObjectStruct):
    """A certificate signing request."""

    certificate_request_type: CertificateRequestType
    certificate_request_value: bytes


class OpaqueObject(_ObjectStruct):
    """Data the server does not interpret."""

    opaque_data_type: OpaqueDataType
    opaque_data_value: bytes


Object: TypeAlias = (
    SymmetricKey
    | PrivateKey
    | PublicKey
    | SecretData
    | SplitKey
    | Certificate
    | CertificateRequest
    | OpaqueObject
    | PGPKey
)

SYMMETRIC_KEY_DEFAULT_USAGE_MASK = int(
    CryptographicUsageMask.Encrypt
    | CryptographicUsageMask.Decrypt
    | CryptographicUsageMask.WrapKey
    | CryptographicUsageMask.UnwrapKey
    | CryptographicUsageMask.KeyAgreement
)


def symmetric_key_object(
    key: SecretBytes | bytes | bytearray | memoryview,
    attributes: Attributes | None = None,
    vendor_id: str = "cosmian",
    *,
    tags: Iterable[str] = (),
) -> SymmetricKey:
    """A SymmetricKey built as Cosmian builds one: TransparentSymmetricKey, embedded attributes.

    Algorithm defaults to AES and the usage mask to 2108 (Encrypt | Decrypt | WrapKey | UnwrapKey |
    KeyAgreement); the length is the key's; the ``_kk`` system tag is added to ``tags``. The key
    bytes are copied into a fresh ``SecretBytes`` (the caller still owns ``key``).
    """
    secret = SecretBytes(key)
    if len(secret) == 0:
        raise InvalidRequestError("a symmetric key cannot be empty")
    embedded = Attributes() if attributes is None else _copy_attributes(attributes)
    if embedded.cryptographic_algorithm is None:
        embedded.cryptographic_algorithm = CryptographicAlgorithm.AES
    embedded.cryptographic_length = len(secret) * 8
    if embedded.cryptographic_usage_mask is None:
        embedded.cryptographic_usage_mask = SYMMETRIC_KEY_DEFAULT_USAGE_MASK
    embedded.key_format_type = KeyFormatType.TransparentSymmetricKey
    embedded.object_type = ObjectType.SymmetricKey
    embedded.set_tags(vendor_id, {*embedded.get_tags(vendor_id), *tags, "_kk"})
    return SymmetricKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.TransparentSymmetricKey,
            key_value=PlainKeyValue(
                key_material=TransparentSymmetricKey(key=secret), attributes=embedded
            ),
            cryptographic_algorithm=embedded.cryptographic_algorithm,
            cryptographic_length=embedded.cryptographic_length,
        )
    )


def _copy_attributes(attributes: Attributes) -> Attributes:
    return msgspec.structs.replace(attributes)
