"""KMIP 2.1 attributes: the ``Attributes`` struct and the small structs it carries.

Every attribute is optional. Field names are snake_case in Python and KMIP's PascalCase in both
encodings (``cryptographic_usage_mask`` <-> ``CryptographicUsageMask``); vendor attributes are the
JSON key ``Attribute``. Tags are a vendor attribute (``<vendor_id>``/``tag``, a TextString holding a
JSON array of strings), read and written with ``get_tags``/``set_tags``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any, Final, Literal

import msgspec

from kms_iface.errors import InvalidRequestError
from kms_iface.kmip._struct import Int32, Int64, KmipStruct, UInt32
from kms_iface.kmip.enums import (
    BlockCipherMode,
    CertificateType,
    CryptographicAlgorithm,
    DigitalSignatureAlgorithm,
    HashingAlgorithm,
    KeyFormatType,
    KeyRoleType,
    LinkType,
    MaskGenerator,
    NameType,
    ObjectType,
    PaddingMethod,
    State,
)

__all__ = [
    "ApplicationSpecificInformation",
    "Attributes",
    "CryptographicParameters",
    "Link",
    "Name",
    "UsageLimits",
    "VendorAttribute",
    "VendorValue",
    "VendorValueType",
]

TAG_ATTRIBUTE_NAME: Final = "tag"

VendorValueType = Literal[
    "TextString",
    "Integer",
    "LongInteger",
    "BigInteger",
    "ByteString",
    "Boolean",
    "DateTime",
    "Interval",
    "DateTimeExtended",
]

# Python type each vendor value kind holds (BigInteger: big-endian two's-complement bytes).
_VENDOR_VALUE_PYTHON_TYPES: Final[dict[str, type]] = {
    "TextString": str,
    "Integer": int,
    "LongInteger": int,
    "BigInteger": bytes,
    "ByteString": bytes,
    "Boolean": bool,
    "DateTime": datetime.datetime,
    "Interval": int,
    "DateTimeExtended": int,
}
_INT_RANGES: Final[dict[str, tuple[int, int]]] = {
    "Integer": (-(2**31), 2**31 - 1),
    "LongInteger": (-(2**63), 2**63 - 1),
    "Interval": (0, 2**32 - 1),
    # KMIP Date-Time Extended: signed 64-bit microseconds (also what MessagePack can hold).
    "DateTimeExtended": (-(2**63), 2**63 - 1),
}


class VendorValue(KmipStruct, frozen=True):  # type: ignore[misc]  # frozen subclass of the non-frozen base
    """A typed vendor attribute value; Cosmian's JSON writes it as ``{"_t": type, "_c": value}``."""

    type: VendorValueType
    value: Any

    def __post_init__(self) -> None:
        expected = _VENDOR_VALUE_PYTHON_TYPES[self.type]
        value = self.value
        if expected is int:
            if type(value) is not int:
                raise ValueError(f"a {self.type} vendor value must be an int")
            low, high = _INT_RANGES[self.type]
            if not low <= value <= high:
                raise ValueError(f"{self.type} vendor value out of range")
        elif expected is bool:
            if type(value) is not bool:
                raise ValueError("a Boolean vendor value must be a bool")
        elif expected is datetime.datetime:
            if not isinstance(value, datetime.datetime) or value.tzinfo is None:
                raise ValueError("a DateTime vendor value must be a timezone-aware datetime")
        elif not isinstance(value, expected):
            raise ValueError(f"a {self.type} vendor value must be {expected.__name__}")

    @classmethod
    def text(cls, value: str) -> VendorValue:
        """A TextString value."""
        return cls(type="TextString", value=value)


class VendorAttribute(KmipStruct, frozen=True):  # type: ignore[misc]  # frozen subclass of the non-frozen base
    """A vendor-defined attribute: who defined it, its name, and its typed value."""

    vendor_identification: str
    attribute_name: str
    attribute_value: VendorValue


class Link(KmipStruct, frozen=True):  # type: ignore[misc]  # frozen subclass of the non-frozen base
    """A relation to another managed object (``WrappingKeyLink``, ``PublicKeyLink``, ...)."""

    link_type: LinkType
    linked_object_identifier: str


class Name(KmipStruct, frozen=True):  # type: ignore[misc]  # frozen subclass of the non-frozen base
    """A name of a managed object."""

    name_value: str
    name_type: NameType = NameType.UninterpretedTextString


class ApplicationSpecificInformation(KmipStruct, frozen=True):  # type: ignore[misc]  # frozen subclass of the non-frozen base
    """An application's own name space and data for the object."""

    application_namespace: str
    application_data: str | None = None


class UsageLimits(KmipStruct, frozen=True):  # type: ignore[misc]  # frozen subclass of the non-frozen base
    """How much the key may be used; the unit is Cosmian's name (``Byte`` or ``Object``)."""

    usage_limits_total: Int64
    usage_limits_count: Int64 | None = None
    usage_limits_unit: Literal["Byte", "Object"] = "Object"


class CryptographicParameters(KmipStruct, frozen=True):  # type: ignore[misc]  # frozen subclass of the non-frozen base
    """How a cryptographic operation is to be performed (mode, padding, hash, ...)."""

    block_cipher_mode: BlockCipherMode | None = None
    padding_method: PaddingMethod | None = None
    hashing_algorithm: HashingAlgorithm | None = None
    key_role_type: KeyRoleType | None = None
    digital_signature_algorithm: DigitalSignatureAlgorithm | None = None
    cryptographic_algorithm: CryptographicAlgorithm | None = None
    random_iv: bool | None = None
    iv_length: Int32 | None = None
    tag_length: Int32 | None = None
    fixed_field_length: Int32 | None = None
    invocation_field_length: Int32 | None = None
    counter_length: Int32 | None = None
    initial_counter_value: Int32 | None = None
    salt_length: Int32 | None = None
    mask_generator: MaskGenerator | None = None
    mask_generator_hashing_algorithm: HashingAlgorithm | None = None
    p_source: bytes | None = None
    trailer_field: Int32 | None = None


class Attributes(KmipStruct):
    """The attributes of a managed object (all optional; unknown ones are refused by the codecs)."""

    activation_date: datetime.datetime | None = None
    always_sensitive: bool | None = None
    application_specific_information: ApplicationSpecificInformation | None = None
    certificate_type: CertificateType | None = None
    comment: str | None = None
    compromise_date: datetime.datetime | None = None
    compromise_occurrence_date: datetime.datetime | None = None
    contact_information: str | None = None
    cryptographic_algorithm: CryptographicAlgorithm | None = None
    cryptographic_length: Int32 | None = None
    cryptographic_parameters: CryptographicParameters | None = None
    cryptographic_usage_mask: UInt32 | None = None
    deactivation_date: datetime.datetime | None = None
    description: str | None = None
    destroy_date: datetime.datetime | None = None
    digital_signature_algorithm: DigitalSignatureAlgorithm | None = None
    extractable: bool | None = None
    fresh: bool | None = None
    initial_date: datetime.datetime | None = None
    key_format_type: KeyFormatType | None = None
    last_change_date: datetime.datetime | None = None
    link: list[Link] | None = None
    name: list[Name] | None = None
    never_extractable: bool | None = None
    object_group: str | None = None
    object_group_member: Literal["GroupMemberFresh", "GroupMemberDefault"] | None = None
    object_type: ObjectType | None = None
    original_creation_date: datetime.datetime | None = None
    process_start_date: datetime.datetime | None = None
    protect_stop_date: datetime.datetime | None = None
    rotate_automatic: bool | None = None
    rotate_date: datetime.datetime | None = None
    rotate_generation: Int32 | None = None
    rotate_interval: Int32 | None = None
    rotate_latest: bool | None = None
    rotate_name: str | None = None
    rotate_offset: Int32 | None = None
    sensitive: bool | None = None
    state: State | None = None
    unique_identifier: str | None = None
    usage_limits: UsageLimits | None = None
    vendor_attributes: list[VendorAttribute] | None = None
    x509_certificate_identifier: bytes | None = None
    x509_certificate_issuer: bytes | None = None
    x509_certificate_subject: bytes | None = None

    def get_link(self, link_type: LinkType) -> str | None:
        """The identifier linked with ``link_type``, or None."""
        for link in self.link or ():
            if link.link_type == link_type:
                return link.linked_object_identifier
        return None

    def set_link(self, link_type: LinkType, linked_object_identifier: str) -> None:
        """Set the link of that type, replacing any previous one."""
        kept = [link for link in self.link or () if link.link_type != link_type]
        kept.append(Link(link_type=link_type, linked_object_identifier=linked_object_identifier))
        self.link = kept

    def get_vendor_attribute(self, vendor_id: str, name: str) -> VendorValue | None:
        """The value of the vendor attribute ``vendor_id``/``name``, or None."""
        for attribute in self.vendor_attributes or ():
            if attribute.vendor_identification == vendor_id and attribute.attribute_name == name:
                return attribute.attribute_value
        return None

    def set_vendor_attribute(self, vendor_id: str, name: str, value: VendorValue) -> None:
        """Set the vendor attribute ``vendor_id``/``name``, replacing any previous value."""
        kept = [
            attribute
            for attribute in self.vendor_attributes or ()
            if not (
                attribute.vendor_identification == vendor_id and attribute.attribute_name == name
            )
        ]
        kept.append(
            VendorAttribute(
                vendor_identification=vendor_id, attribute_name=name, attribute_value=value
            )
        )
        self.vendor_attributes = kept

    def remove_vendor_attribute(self, vendor_id: str, name: str) -> None:
        """Remove the vendor attribute ``vendor_id``/``name`` if present."""
        if self.vendor_attributes is None:
            return
        kept = [
            attribute
            for attribute in self.vendor_attributes
            if not (
                attribute.vendor_identification == vendor_id and attribute.attribute_name == name
            )
        ]
        self.vendor_attributes = kept or None

    def get_tags(self, vendor_id: str = "cosmian") -> set[str]:
        """The tags held in the ``tag`` vendor attribute of ``vendor_id`` (empty when none)."""
        value = self.get_vendor_attribute(vendor_id, TAG_ATTRIBUTE_NAME)
        if value is None:
            return set()
        if value.type != "TextString":
            raise InvalidRequestError(f"the {vendor_id!r} tag attribute must be a TextString")
        try:
            tags = _TAGS_DECODER.decode(value.value)
        except UnicodeEncodeError:  # a lone surrogate in the text
            raise InvalidRequestError(
                f"the {vendor_id!r} tag attribute must hold a JSON array of strings: "
                "not valid Unicode text"
            ) from None
        except msgspec.DecodeError as exc:
            raise InvalidRequestError(
                f"the {vendor_id!r} tag attribute must hold a JSON array of strings: {exc}"
            ) from None
        return set(tags)

    def set_tags(self, vendor_id: str, tags: Iterable[str]) -> None:
        """Store ``tags`` in the ``tag`` vendor attribute of ``vendor_id`` (sorted JSON array)."""
        tag_list = sorted(validate_tags(tags))
        self.set_vendor_attribute(
            vendor_id, TAG_ATTRIBUTE_NAME, VendorValue.text(_TAGS_ENCODER.encode(tag_list).decode())
        )


_TAGS_DECODER: Final = msgspec.json.Decoder(list[str])
_TAGS_ENCODER: Final = msgspec.json.Encoder()


def validate_tags(tags: Iterable[str]) -> set[str]:
    """``tags`` as a set, refusing a bare string and any tag that is not a non-empty str of valid
    Unicode text (a lone surrogate cannot be stored)."""
    if isinstance(tags, (str, bytes)):
        raise InvalidRequestError("tags must be a collection of strings, not a single string")
    result = set()
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise InvalidRequestError("every tag must be a non-empty string")
        try:
            tag.encode()
        except UnicodeEncodeError:
            raise InvalidRequestError("every tag must be valid Unicode text") from None
        result.add(tag)
    return result
