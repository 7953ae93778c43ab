"""Values the conformance tests store: unusual owners and tags, keys, wrapped keys, records.

Everything here is deterministic: ``record(uid, version)`` rebuilds, in any process, exactly the
object, attributes and tags a writer stored for that uid at that version, which is how readers
recognise a torn read.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from kms_iface.kmip.attributes import Attributes, Link, Name
from kms_iface.kmip.enums import (
    CryptographicAlgorithm,
    CryptographicUsageMask,
    KeyFormatType,
    LinkType,
    ObjectType,
    WrappingMethod,
)
from kms_iface.kmip.objects import (
    EncryptionKeyInformation,
    KeyBlock,
    KeyWrappingData,
    SymmetricKey,
    symmetric_key_object,
)

__all__ = [
    "OTHER",
    "OWNER",
    "STRANGER",
    "U1",
    "U2",
    "attributes_with",
    "copy_attributes",
    "key_attributes",
    "record",
    "record_version",
    "symmetric_key",
    "wrapped_key",
]

# Owners and users: non-ASCII, the route separator, spaces, a near-twin of OWNER.
OWNER: Final = "é@x.org"
U1: Final = "a::b"
U2: Final = "ü 用户 <u2@例え.jp>"
OTHER: Final = "É@x.org"  # OWNER with an upper-case accent: a different user
STRANGER: Final = "stranger@x.org"

USAGE_ENCRYPT_DECRYPT: Final = int(CryptographicUsageMask.Encrypt | CryptographicUsageMask.Decrypt)


def key_attributes(**changes: Any) -> Attributes:
    """Stored attributes of an AES-256 TransparentSymmetricKey SymmetricKey, with ``changes``."""
    attributes = Attributes(
        cryptographic_algorithm=CryptographicAlgorithm.AES,
        cryptographic_length=256,
        cryptographic_usage_mask=USAGE_ENCRYPT_DECRYPT,
        key_format_type=KeyFormatType.TransparentSymmetricKey,
        object_type=ObjectType.SymmetricKey,
    )
    return attributes_with(attributes, **changes)


def attributes_with(attributes: Attributes, **changes: Any) -> Attributes:
    """A copy of ``attributes`` with ``changes`` (the original is left alone)."""
    return msgspec.structs.replace(attributes, **changes)


def copy_attributes(attributes: Attributes) -> Attributes:
    """A deep copy, to compare with what the store returns whatever it does to its input."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(attributes), type=Attributes)


def _key_bytes(seed: str) -> bytes:
    return hashlib.sha256(seed.encode()).digest()


def symmetric_key(seed: str, attributes: Attributes | None = None) -> SymmetricKey:
    """An AES-256 key (bytes derived from ``seed``) with ``attributes`` embedded, Cosmian-style."""
    return symmetric_key_object(_key_bytes(seed), attributes)


def wrapped_key(seed: str, wrapping_key_uid: str) -> SymmetricKey:
    """An AES-256 key whose key value is wrapped by ``wrapping_key_uid``."""
    return SymmetricKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.TransparentSymmetricKey,
            key_value=_key_bytes(seed) + b"\x00" * 8,
            cryptographic_algorithm=CryptographicAlgorithm.AES,
            cryptographic_length=256,
            key_wrapping_data=KeyWrappingData(
                wrapping_method=WrappingMethod.Encrypt,
                encryption_key_information=EncryptionKeyInformation(
                    unique_identifier=wrapping_key_uid
                ),
            ),
        )
    )


def record(uid: str, version: int) -> tuple[SymmetricKey, Attributes, set[str]]:
    """The object, attributes and tags a writer stores for ``uid`` at ``version``.

    The version is carried in the stored attributes (``comment``) and, differently derived, in the
    key bytes, the embedded attributes and a link: a read mixing two versions cannot equal any
    record.
    """
    seed = f"{uid}#{version}"
    attributes = key_attributes(
        comment=f"v{version}",
        name=[Name(name_value=f"name {seed} é")],
        link=[Link(link_type=LinkType.ParentLink, linked_object_identifier=f"parent-{seed}")],
    )
    return symmetric_key(seed, attributes), attributes, {"conc", f"uid:{uid}", "é::tag"}


def record_version(attributes: Attributes) -> int:
    """The version of a record read back (from its stored attributes)."""
    comment = attributes.comment
    if comment is None or not comment.startswith("v"):
        raise AssertionError(f"not a record's attributes: {attributes!r}")
    return int(comment[1:])
