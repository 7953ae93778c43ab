"""The KMIP struct model: construction, accessors, tags, the symmetric key builder, MessagePack.

The sample builders here (one object of every kind and key material variant, attributes with
every field set) are shared with test_kmip_json.py.
"""

from __future__ import annotations

import datetime
import typing
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

import kms_iface.kmip
from kms_iface import InvalidRequestError, SecretBytes
from kms_iface.errors import MalformedKmipError
from kms_iface.kmip import (
    ApplicationSpecificInformation,
    Attributes,
    BlockCipherMode,
    ByteStringKeyMaterial,
    Certificate,
    CertificateRequest,
    CertificateRequestType,
    CertificateType,
    CryptographicAlgorithm,
    CryptographicParameters,
    CryptographicUsageMask,
    DigitalSignatureAlgorithm,
    EncodingOption,
    EncryptionKeyInformation,
    HashingAlgorithm,
    KeyBlock,
    KeyCompressionType,
    KeyFormatType,
    KeyRoleType,
    KeyWrappingData,
    Link,
    LinkType,
    MACSignatureKeyInformation,
    MaskGenerator,
    Name,
    NameType,
    Object,
    ObjectType,
    OpaqueDataType,
    OpaqueObject,
    PaddingMethod,
    PGPKey,
    PlainKeyValue,
    PrivateKey,
    PublicKey,
    RecommendedCurve,
    SecretData,
    SecretDataType,
    SplitKey,
    SplitKeyMethod,
    State,
    SymmetricKey,
    TransparentDHPrivateKey,
    TransparentDHPublicKey,
    TransparentDSAPrivateKey,
    TransparentDSAPublicKey,
    TransparentECPrivateKey,
    TransparentECPublicKey,
    TransparentRSAPrivateKey,
    TransparentRSAPublicKey,
    TransparentSymmetricKey,
    UsageLimits,
    VendorAttribute,
    VendorValue,
    WrappingMethod,
    attributes_from_msgpack,
    attributes_to_msgpack,
    object_from_msgpack,
    object_to_msgpack,
    symmetric_key_object,
)
from kms_iface.kmip import objects as kmip_objects

UTC = datetime.UTC
KEY32 = bytes(range(1, 33))

# ---------------------------------------------------------------------------------------------
# Sample builders (fresh objects on every call: SecretBytes are mutable).
# ---------------------------------------------------------------------------------------------


def full_cryptographic_parameters() -> CryptographicParameters:
    """CryptographicParameters with every field set."""
    return CryptographicParameters(
        block_cipher_mode=BlockCipherMode.GCM,
        padding_method=PaddingMethod["None"],
        hashing_algorithm=HashingAlgorithm.SHA256,
        key_role_type=KeyRoleType.KEK,
        digital_signature_algorithm=DigitalSignatureAlgorithm.RSASSAPSS,
        cryptographic_algorithm=CryptographicAlgorithm.AES,
        random_iv=True,
        iv_length=96,
        tag_length=128,
        fixed_field_length=32,
        invocation_field_length=64,
        counter_length=32,
        initial_counter_value=1,
        salt_length=32,
        mask_generator=MaskGenerator.MFG1,
        mask_generator_hashing_algorithm=HashingAlgorithm.SHA1,
        p_source=b"\x00label",
        trailer_field=1,
    )


def vendor_values() -> list[VendorValue]:
    """One vendor value of every type."""
    return [
        VendorValue(type="TextString", value="text é"),
        VendorValue(type="Integer", value=-(2**31)),
        VendorValue(type="LongInteger", value=2**63 - 1),
        VendorValue(type="BigInteger", value=b"\x00\xff\x01"),
        VendorValue(type="ByteString", value=b"\x00\x01\xfe"),
        VendorValue(type="Boolean", value=False),
        VendorValue(type="DateTime", value=datetime.datetime(2024, 2, 29, 12, 0, 1, tzinfo=UTC)),
        VendorValue(type="Interval", value=2**32 - 1),
        VendorValue(type="DateTimeExtended", value=-(2**63)),
    ]


def full_attributes() -> Attributes:
    """Attributes with every field set (test_full_attributes_sets_every_field pins that)."""
    day = datetime.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    attrs = Attributes(
        activation_date=day,
        always_sensitive=False,
        application_specific_information=ApplicationSpecificInformation(
            application_namespace="ssl", application_data="www.example.com"
        ),
        certificate_type=CertificateType.X509,
        comment="a comment",
        compromise_date=day + datetime.timedelta(days=1),
        compromise_occurrence_date=day + datetime.timedelta(days=2),
        contact_information="security@example.com",
        cryptographic_algorithm=CryptographicAlgorithm.AES,
        cryptographic_length=256,
        cryptographic_parameters=full_cryptographic_parameters(),
        cryptographic_usage_mask=2108,
        deactivation_date=day + datetime.timedelta(days=3),
        description="a description",
        destroy_date=day + datetime.timedelta(days=4),
        digital_signature_algorithm=DigitalSignatureAlgorithm.SHA256WithRSAEncryption,
        extractable=True,
        fresh=True,
        initial_date=day - datetime.timedelta(days=1),
        key_format_type=KeyFormatType.TransparentSymmetricKey,
        last_change_date=day + datetime.timedelta(seconds=5),
        link=[
            Link(link_type=LinkType.WrappingKeyLink, linked_object_identifier="wrapper"),
            Link(link_type=LinkType.PublicKeyLink, linked_object_identifier="pk"),
        ],
        name=[Name(name_value="my key"), Name(name_value="urn:key", name_type=NameType.URI)],
        never_extractable=False,
        object_group="group",
        object_group_member="GroupMemberFresh",
        object_type=ObjectType.SymmetricKey,
        original_creation_date=day - datetime.timedelta(days=2),
        process_start_date=day + datetime.timedelta(hours=1),
        protect_stop_date=day + datetime.timedelta(hours=2),
        rotate_automatic=True,
        rotate_date=day + datetime.timedelta(days=30),
        rotate_generation=3,
        rotate_interval=86400,
        rotate_latest=True,
        rotate_name="rotation",
        rotate_offset=60,
        sensitive=True,
        state=State.Destroyed_Compromised,
        unique_identifier="925f2175-0676-4785-b9d9-61fff30771f3",
        usage_limits=UsageLimits(
            usage_limits_total=2**40, usage_limits_count=7, usage_limits_unit="Byte"
        ),
        vendor_attributes=[
            VendorAttribute(vendor_identification="acme", attribute_name=f"a{i}", attribute_value=v)
            for i, v in enumerate(vendor_values())
        ],
        x509_certificate_identifier=b"\x30\x03\x02\x01\x01",
        x509_certificate_issuer=b"CN=issuer",
        x509_certificate_subject=b"CN=subject",
    )
    attrs.set_tags("cosmian", {"_kk", "user-tag"})
    return attrs


def _block(fmt: KeyFormatType, material: Any, algorithm: CryptographicAlgorithm) -> KeyBlock:
    return KeyBlock(
        key_format_type=fmt,
        key_value=PlainKeyValue(key_material=material),
        cryptographic_algorithm=algorithm,
        cryptographic_length=2048,
    )


def rsa_private_material() -> TransparentRSAPrivateKey:
    return TransparentRSAPrivateKey(
        modulus=b"\xc3" * 256,
        private_exponent=SecretBytes(b"\x11" * 256),
        public_exponent=b"\x01\x00\x01",
        p=SecretBytes(b"\x21" * 128),
        q=SecretBytes(b"\x22" * 128),
        prime_exponent_p=SecretBytes(b"\x23" * 128),
        prime_exponent_q=SecretBytes(b"\x24" * 128),
        crt_coefficient=SecretBytes(b"\x25" * 128),
    )


def wrapped_symmetric_key() -> SymmetricKey:
    return SymmetricKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.TransparentSymmetricKey,
            key_value=b"\x9a" * 40,
            cryptographic_algorithm=CryptographicAlgorithm.AES,
            cryptographic_length=256,
            key_wrapping_data=KeyWrappingData(
                wrapping_method=WrappingMethod.Encrypt,
                encryption_key_information=EncryptionKeyInformation(
                    unique_identifier="aes_wrapper",
                    cryptographic_parameters=CryptographicParameters(
                        block_cipher_mode=BlockCipherMode.AESKeyWrapPadding
                    ),
                ),
                mac_signature_key_information=MACSignatureKeyInformation(
                    unique_identifier="mac_key",
                    cryptographic_parameters=full_cryptographic_parameters(),
                ),
                mac_signature=b"\x01\x02",
                iv_counter_nonce=b"\x00" * 12,
                encoding_option=EncodingOption.NoEncoding,
            ),
        )
    )


SAMPLES: dict[str, Callable[[], Object]] = {
    "symmetric": lambda: symmetric_key_object(KEY32, full_attributes(), tags=["t1"]),
    "symmetric_wrapped": wrapped_symmetric_key,
    "symmetric_raw": lambda: SymmetricKey(
        block=_block(
            KeyFormatType.Raw,
            ByteStringKeyMaterial(value=SecretBytes(KEY32)),
            CryptographicAlgorithm.ChaCha20,
        )
    ),
    "symmetric_metadata_only": lambda: SymmetricKey(
        block=KeyBlock(key_format_type=KeyFormatType.TransparentSymmetricKey)
    ),
    "rsa_private": lambda: PrivateKey(
        block=_block(
            KeyFormatType.TransparentRSAPrivateKey,
            rsa_private_material(),
            CryptographicAlgorithm.RSA,
        )
    ),
    "rsa_private_modulus_only": lambda: PrivateKey(
        block=_block(
            KeyFormatType.TransparentRSAPrivateKey,
            TransparentRSAPrivateKey(modulus=b"\x01\x00"),
            CryptographicAlgorithm.RSA,
        )
    ),
    "rsa_public": lambda: PublicKey(
        block=_block(
            KeyFormatType.TransparentRSAPublicKey,
            TransparentRSAPublicKey(modulus=b"\xc3" * 256, public_exponent=b"\x01\x00\x01"),
            CryptographicAlgorithm.RSA,
        )
    ),
    "pkcs8_private": lambda: PrivateKey(
        block=_block(
            KeyFormatType.PKCS8,
            ByteStringKeyMaterial(value=SecretBytes(b"\x30\x82\x01\x00" + KEY32)),
            CryptographicAlgorithm.RSA,
        )
    ),
    "x509_public": lambda: PublicKey(
        block=_block(
            KeyFormatType.X509,
            ByteStringKeyMaterial(value=SecretBytes(b"\x30\x59")),
            CryptographicAlgorithm.EC,
        )
    ),
    "ec_private": lambda: PrivateKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.TransparentECPrivateKey,
            key_compression_type=KeyCompressionType.ECPublicKeyTypeUncompressed,
            key_value=PlainKeyValue(
                key_material=TransparentECPrivateKey(
                    recommended_curve=RecommendedCurve.P256, d=SecretBytes(KEY32)
                ),
                attributes=Attributes(cryptographic_algorithm=CryptographicAlgorithm.ECDSA),
            ),
            cryptographic_algorithm=CryptographicAlgorithm.ECDSA,
            cryptographic_length=256,
        )
    ),
    "ec_public": lambda: PublicKey(
        block=_block(
            KeyFormatType.TransparentECPublicKey,
            TransparentECPublicKey(recommended_curve=RecommendedCurve.P384, q_string=b"\x04" * 97),
            CryptographicAlgorithm.ECDH,
        )
    ),
    "dsa_private": lambda: PrivateKey(
        block=_block(
            KeyFormatType.TransparentDSAPrivateKey,
            TransparentDSAPrivateKey(p=b"\x01", q=b"\x02", g=b"\x03", x=SecretBytes(b"\x04")),
            CryptographicAlgorithm.DSA,
        )
    ),
    "dsa_public": lambda: PublicKey(
        block=_block(
            KeyFormatType.TransparentDSAPublicKey,
            TransparentDSAPublicKey(p=b"\x01", q=b"\x02", g=b"\x03", y=b"\x05"),
            CryptographicAlgorithm.DSA,
        )
    ),
    "dh_private": lambda: PrivateKey(
        block=_block(
            KeyFormatType.TransparentDHPrivateKey,
            TransparentDHPrivateKey(
                p=b"\x01", g=b"\x02", x=SecretBytes(b"\x03"), q=b"\x04", j=b"\x05"
            ),
            CryptographicAlgorithm.DH,
        )
    ),
    "dh_public": lambda: PublicKey(
        block=_block(
            KeyFormatType.TransparentDHPublicKey,
            TransparentDHPublicKey(p=b"\x01", g=b"\x02", y=b"\x06"),
            CryptographicAlgorithm.DH,
        )
    ),
    "secret_data": lambda: SecretData(
        secret_data_type=SecretDataType.Password,
        block=_block(
            KeyFormatType.Opaque,
            ByteStringKeyMaterial(value=SecretBytes(b"hunter2")),
            CryptographicAlgorithm.AES,
        ),
    ),
    "split_key": lambda: SplitKey(
        split_key_parts=5,
        key_part_identifier=2,
        split_key_threshold=3,
        split_key_method=SplitKeyMethod.PolynomialSharingPrimeField,
        prime_field_size=b"\x01\x00\x00\x00\x01",
        block=_block(
            KeyFormatType.Raw,
            ByteStringKeyMaterial(value=SecretBytes(b"share")),
            CryptographicAlgorithm.AES,
        ),
    ),
    "pgp_key": lambda: PGPKey(
        pgp_key_version=4,
        block=_block(
            KeyFormatType.Opaque,
            ByteStringKeyMaterial(value=SecretBytes(b"\x99\x01\x0d")),
            CryptographicAlgorithm.RSA,
        ),
    ),
    "certificate": lambda: Certificate(
        certificate_type=CertificateType.X509, certificate_value=b"\x30\x82\x03\x00"
    ),
    "certificate_request": lambda: CertificateRequest(
        certificate_request_type=CertificateRequestType.PKCS10,
        certificate_request_value=b"\x30\x82\x02\x00",
    ),
    "opaque_object": lambda: OpaqueObject(
        opaque_data_type=OpaqueDataType.Vendor, opaque_data_value=b"\x00opaque\xff"
    ),
}


def material_buffers(obj: Object) -> Iterator[tuple[str, Any, bool]]:
    """(name, value, declared secret) of every byte field set in the key material of ``obj``."""
    block = getattr(obj, "block", None)
    if block is None or not isinstance(block.key_value, PlainKeyValue):
        return
    material = block.key_value.key_material
    for field in msgspec.structs.fields(type(material)):
        value = getattr(material, field.name)
        declared = repr(field.type)
        if value is not None and ("SecretBytes" in declared or "bytes" in declared):
            yield field.name, value, "SecretBytes" in declared


# ---------------------------------------------------------------------------------------------
# The samples themselves.
# ---------------------------------------------------------------------------------------------


def test_samples_cover_every_object_kind_and_key_material_variant() -> None:
    objects = [build() for build in SAMPLES.values()]
    kinds = {type(obj) for obj in objects}
    assert kinds == set(typing.get_args(Object))
    materials = {
        type(obj.key_block().key_material())
        for obj in objects
        if isinstance(getattr(obj, "block", None), KeyBlock)
        and isinstance(obj.key_block().key_value, PlainKeyValue)
    }
    assert materials == set(typing.get_args(kmip_objects.KeyMaterial))


def test_package_exports() -> None:
    exported = kms_iface.kmip.__all__
    assert len(exported) == len(set(exported))
    for name in exported:
        assert getattr(kms_iface.kmip, name) is not None, name
    codecs = {
        f"{kind}_{direction}_{form}"
        for kind in ("object", "attributes")
        for direction in ("from", "to")
        for form in ("json", "msgpack")
    }
    assert codecs <= set(exported)
    structs = {
        name
        for module in (kms_iface.kmip.objects, kms_iface.kmip.attributes)
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and not name.startswith("_")
        and value.__module__ == module.__name__
    }
    assert structs <= set(exported)
    assert {"Object", "KeyMaterial", "symmetric_key_object", "State", "PaddingMethod"} <= set(
        exported
    )
    assert "from_name" not in exported


def test_full_attributes_sets_every_field() -> None:
    attrs = full_attributes()
    unset = [name for name in Attributes.__struct_fields__ if getattr(attrs, name) is None]
    assert unset == []
    params = full_cryptographic_parameters()
    assert [
        n for n in CryptographicParameters.__struct_fields__ if getattr(params, n) is None
    ] == []
    assert {v.type for v in vendor_values()} == set(typing.get_args(kms_iface.kmip.VendorValueType))


# ---------------------------------------------------------------------------------------------
# Construction and accessors.
# ---------------------------------------------------------------------------------------------


def test_structs_require_their_required_fields_and_default_the_rest() -> None:
    with pytest.raises(TypeError):
        KeyBlock()  # type: ignore[call-arg]
    assert Name(name_value="n").name_type is NameType.UninterpretedTextString
    assert UsageLimits(usage_limits_total=1).usage_limits_unit == "Object"


def test_frozen_structs_refuse_assignment_and_attributes_are_mutable() -> None:
    link = Link(link_type=LinkType.ParentLink, linked_object_identifier="p")
    with pytest.raises(AttributeError):
        link.linked_object_identifier = "q"  # type: ignore[misc]
    attrs = Attributes()
    attrs.comment = "c"
    assert attrs.comment == "c"


@pytest.mark.parametrize(
    ("sample", "object_type"),
    [
        ("symmetric", ObjectType.SymmetricKey),
        ("rsa_private", ObjectType.PrivateKey),
        ("rsa_public", ObjectType.PublicKey),
        ("secret_data", ObjectType.SecretData),
        ("split_key", ObjectType.SplitKey),
        ("pgp_key", ObjectType.PGPKey),
        ("certificate", ObjectType.Certificate),
        ("certificate_request", ObjectType.CertificateRequest),
        ("opaque_object", ObjectType.OpaqueObject),
    ],
)
def test_object_type(sample: str, object_type: ObjectType) -> None:
    assert SAMPLES[sample]().object_type() is object_type


@pytest.mark.parametrize("sample", ["certificate", "certificate_request", "opaque_object"])
def test_objects_without_key_block(sample: str) -> None:
    obj = SAMPLES[sample]()
    with pytest.raises(InvalidRequestError, match="no key block"):
        obj.key_block()
    assert obj.attributes() is None
    assert not obj.is_wrapped()
    assert obj.wrapping_key_uid() is None
    obj.zeroize()  # nothing to wipe, no error


def test_key_block_and_embedded_attributes() -> None:
    key = SAMPLES["symmetric"]()
    block = key.key_block()
    assert isinstance(key, SymmetricKey)
    assert block is key.block
    assert isinstance(block.key_material(), TransparentSymmetricKey)
    attrs = key.attributes()
    assert attrs is not None
    assert attrs.unique_identifier == "925f2175-0676-4785-b9d9-61fff30771f3"
    assert SAMPLES["rsa_public"]().attributes() is None


def test_wrapped_key_accessors() -> None:
    key = SAMPLES["symmetric_wrapped"]()
    assert key.is_wrapped()
    assert key.wrapping_key_uid() == "aes_wrapper"
    assert key.attributes() is None
    with pytest.raises(InvalidRequestError, match="wrapped"):
        key.key_block().key_material()
    plain = SAMPLES["symmetric"]()
    assert not plain.is_wrapped()
    assert plain.wrapping_key_uid() is None


def test_wrapping_data_without_encryption_key_information() -> None:
    key = SymmetricKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.Raw,
            key_value=b"\x00" * 8,
            key_wrapping_data=KeyWrappingData(wrapping_method=WrappingMethod.MACSign),
        )
    )
    assert key.is_wrapped()
    assert key.wrapping_key_uid() is None


def test_metadata_only_key_block() -> None:
    key = SAMPLES["symmetric_metadata_only"]()
    with pytest.raises(InvalidRequestError, match="no key value"):
        key.key_block().key_material()
    assert key.attributes() is None
    key.zeroize()


@pytest.mark.parametrize("sample", ["symmetric", "rsa_private", "ec_private", "dh_private"])
def test_zeroize_wipes_every_secret_field(sample: str) -> None:
    obj = SAMPLES[sample]()
    secrets = [value for _, value, secret in material_buffers(obj) if secret]
    assert secrets
    views = [memoryview(s) for s in secrets]
    assert any(any(view.tolist()) for view in views)
    obj.zeroize()
    for secret, view in zip(secrets, views, strict=True):
        assert secret.zeroized
        assert not any(view.tolist())


def test_zeroize_leaves_public_fields() -> None:
    key = SAMPLES["rsa_private"]()
    key.zeroize()
    material = key.key_block().key_material()
    assert isinstance(material, TransparentRSAPrivateKey)
    assert material.modulus == b"\xc3" * 256


# ---------------------------------------------------------------------------------------------
# Links, vendor attributes and tags.
# ---------------------------------------------------------------------------------------------


def test_links() -> None:
    attrs = Attributes()
    assert attrs.get_link(LinkType.ParentLink) is None
    attrs.set_link(LinkType.ParentLink, "a")
    attrs.set_link(LinkType.ChildLink, "c")
    attrs.set_link(LinkType.ParentLink, "b")
    assert attrs.get_link(LinkType.ParentLink) == "b"
    assert attrs.get_link(LinkType.ChildLink) == "c"
    assert attrs.link is not None and len(attrs.link) == 2


def test_vendor_attributes() -> None:
    attrs = Attributes()
    assert attrs.get_vendor_attribute("acme", "x") is None
    attrs.set_vendor_attribute("acme", "x", VendorValue(type="Integer", value=1))
    attrs.set_vendor_attribute("acme", "x", VendorValue(type="Integer", value=2))
    attrs.set_vendor_attribute("other", "x", VendorValue.text("t"))
    assert attrs.get_vendor_attribute("acme", "x") == VendorValue(type="Integer", value=2)
    assert attrs.get_vendor_attribute("other", "x") == VendorValue(type="TextString", value="t")
    attrs.remove_vendor_attribute("acme", "x")
    assert attrs.get_vendor_attribute("acme", "x") is None
    attrs.remove_vendor_attribute("other", "x")
    assert attrs.vendor_attributes is None
    attrs.remove_vendor_attribute("other", "x")  # absent: no error


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("Integer", True),
        ("Integer", 2**31),
        ("Integer", "1"),
        ("LongInteger", 2**63),
        ("Interval", -1),
        ("DateTimeExtended", 2**63),
        ("Boolean", 1),
        ("TextString", b"x"),
        ("ByteString", "x"),
        ("BigInteger", 5),
        ("DateTime", datetime.datetime(2024, 1, 1)),
        ("DateTime", "2024-01-01T00:00:00Z"),
    ],
)
def test_vendor_value_validates_its_value(kind: str, value: Any) -> None:
    with pytest.raises(ValueError):
        VendorValue(type=kind, value=value)  # type: ignore[arg-type]


def test_tags_round_trip_sorted_json_array() -> None:
    attrs = Attributes()
    assert attrs.get_tags() == set()
    attrs.set_tags("cosmian", ["b", "a", "b"])
    value = attrs.get_vendor_attribute("cosmian", "tag")
    assert value == VendorValue(type="TextString", value='["a","b"]')
    assert attrs.get_tags() == {"a", "b"}
    assert attrs.get_tags("cosmian") == {"a", "b"}
    assert attrs.get_tags("other") == set()
    attrs.set_tags("other", {"z"})
    attrs.set_tags("cosmian", [])
    assert attrs.get_tags() == set()
    assert attrs.get_tags("other") == {"z"}


@pytest.mark.parametrize("tags", ["abc", b"abc", [""], ["ok", 3], [None]])
def test_set_tags_rejects_bad_tags(tags: Any) -> None:
    attrs = Attributes()
    with pytest.raises(InvalidRequestError):
        attrs.set_tags("cosmian", tags)
    assert attrs.vendor_attributes is None


@pytest.mark.parametrize(
    "value",
    [
        VendorValue(type="Integer", value=1),
        VendorValue.text("not json"),
        VendorValue.text('{"a": 1}'),
        VendorValue.text("[1, 2]"),
    ],
)
def test_get_tags_rejects_a_malformed_tag_attribute(value: VendorValue) -> None:
    attrs = Attributes()
    attrs.set_vendor_attribute("cosmian", "tag", value)
    with pytest.raises(InvalidRequestError, match="tag"):
        attrs.get_tags()


# ---------------------------------------------------------------------------------------------
# symmetric_key_object.
# ---------------------------------------------------------------------------------------------


def test_symmetric_key_object_defaults() -> None:
    key = symmetric_key_object(KEY32)
    block = key.key_block()
    assert block.key_format_type is KeyFormatType.TransparentSymmetricKey
    assert block.cryptographic_algorithm is CryptographicAlgorithm.AES
    assert block.cryptographic_length == 256
    material = block.key_material()
    assert isinstance(material, TransparentSymmetricKey)
    assert isinstance(material.key, SecretBytes)
    assert material.key == KEY32
    attrs = key.attributes()
    assert attrs is not None
    assert attrs.cryptographic_usage_mask == 2108
    assert CryptographicUsageMask(2108) == (
        CryptographicUsageMask.Encrypt
        | CryptographicUsageMask.Decrypt
        | CryptographicUsageMask.WrapKey
        | CryptographicUsageMask.UnwrapKey
        | CryptographicUsageMask.KeyAgreement
    )
    assert attrs.cryptographic_algorithm is CryptographicAlgorithm.AES
    assert attrs.cryptographic_length == 256
    assert attrs.key_format_type is KeyFormatType.TransparentSymmetricKey
    assert attrs.object_type is ObjectType.SymmetricKey
    assert attrs.get_tags() == {"_kk"}


def test_symmetric_key_object_keeps_given_attributes_and_copies() -> None:
    given = Attributes(
        cryptographic_algorithm=CryptographicAlgorithm.ChaCha20,
        cryptographic_usage_mask=int(CryptographicUsageMask.Encrypt),
        cryptographic_length=1,
        comment="kept",
    )
    given.set_tags("acme", {"mine"})
    raw = bytearray(b"\x07" * 16)
    key = symmetric_key_object(raw, given, vendor_id="acme", tags=["extra"])
    attrs = key.attributes()
    assert attrs is not None
    assert attrs.cryptographic_algorithm is CryptographicAlgorithm.ChaCha20
    assert key.key_block().cryptographic_algorithm is CryptographicAlgorithm.ChaCha20
    assert attrs.cryptographic_usage_mask == 4
    assert attrs.cryptographic_length == 128  # the key's, not the given one
    assert attrs.comment == "kept"
    assert attrs.get_tags("acme") == {"mine", "extra", "_kk"}
    assert attrs.get_tags("cosmian") == set()
    # The caller's attributes and buffer are not shared with the object.
    assert given.cryptographic_length == 1
    assert given.get_tags("acme") == {"mine"}
    raw[0] = 0
    assert key.key_block().key_material() == TransparentSymmetricKey(key=SecretBytes(b"\x07" * 16))


def test_symmetric_key_object_refuses_an_empty_key() -> None:
    with pytest.raises(InvalidRequestError):
        symmetric_key_object(b"")


# ---------------------------------------------------------------------------------------------
# MessagePack.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_msgpack_round_trip_of_every_kind(sample: str) -> None:
    obj = SAMPLES[sample]()
    data = object_to_msgpack(obj)
    back = object_from_msgpack(data)
    assert type(back) is type(obj)
    assert back == obj
    assert object_to_msgpack(back) == data
    for name, value, secret in material_buffers(back):
        assert type(value) is (SecretBytes if secret else bytes), name


def test_msgpack_accepts_bytearray_and_memoryview() -> None:
    data = object_to_msgpack(SAMPLES["symmetric"]())
    assert object_from_msgpack(bytearray(data)) == object_from_msgpack(memoryview(data))


def test_msgpack_round_trip_of_every_attribute_field() -> None:
    attrs = full_attributes()
    back = attributes_from_msgpack(attributes_to_msgpack(attrs))
    assert back == attrs
    for name in Attributes.__struct_fields__:
        assert getattr(back, name) == getattr(attrs, name), name
    assert back.get_tags() == {"_kk", "user-tag"}
    assert attributes_from_msgpack(attributes_to_msgpack(Attributes())) == Attributes()


def test_msgpack_shape() -> None:
    decoded = msgspec.msgpack.decode(object_to_msgpack(SAMPLES["symmetric"]()))
    assert decoded["ObjectType"] == "SymmetricKey"
    block = decoded["KeyBlock"]
    assert block["KeyFormatType"] == int(KeyFormatType.TransparentSymmetricKey)
    assert block["KeyValue"]["KeyMaterial"] == {"_k": "TransparentSymmetricKey", "Key": KEY32}
    assert "KeyCompressionType" not in block  # absent optionals are omitted


def test_msgpack_secret_fields_decode_as_secret_bytes() -> None:
    key = object_from_msgpack(object_to_msgpack(SAMPLES["rsa_private"]()))
    material = key.key_block().key_material()
    assert isinstance(material, TransparentRSAPrivateKey)
    assert isinstance(material.private_exponent, SecretBytes)
    assert isinstance(material.crt_coefficient, SecretBytes)
    assert type(material.modulus) is bytes


def _msgpack(value: Any) -> bytes:
    return msgspec.msgpack.encode(value)


def _sym(block: dict[str, Any]) -> dict[str, Any]:
    return {"ObjectType": "SymmetricKey", "KeyBlock": block}


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (_sym({"KeyFormatType": 7, "CryptographicLength": "x"}), "$.KeyBlock.CryptographicLength"),
        (
            _sym({"KeyFormatType": 7, "CryptographicLength": 2**31}),
            "$.KeyBlock.CryptographicLength",
        ),
        (_sym({"KeyFormatType": 7, "CryptographicLength": True}), "$.KeyBlock.CryptographicLength"),
        (_sym({"KeyFormatType": 999}), "$.KeyBlock.KeyFormatType"),
        (_sym({"KeyFormatType": 7, "Bogus": 1}), "$.KeyBlock"),
        (_sym({}), "$.KeyBlock"),
        ({"ObjectType": "Bogus"}, "$.ObjectType"),
        ([1, 2], "$"),
        (
            _sym(
                {"KeyFormatType": 7, "KeyValue": {"KeyMaterial": {"_k": "TransparentSymmetricKey"}}}
            ),
            "$.KeyBlock.KeyValue.KeyMaterial",
        ),
    ],
)
def test_msgpack_malformed_object_names_the_path(value: Any, path: str) -> None:
    with pytest.raises(MalformedKmipError) as info:
        object_from_msgpack(_msgpack(value))
    assert info.value.path == path
    assert path in str(info.value)
    assert isinstance(info.value, InvalidRequestError)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x82\xa1", b"\xff" * 10])
def test_msgpack_garbage_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedKmipError) as info:
        object_from_msgpack(data)
    assert info.value.path == "$"


_BAD_KEY = b"\xa1\xad"  # a one-byte str that is not UTF-8


@pytest.mark.parametrize(
    ("decode", "data"),
    [
        (attributes_from_msgpack, b"\x81\xa2\x00\x80\x01"),
        (attributes_from_msgpack, b"\x81" + _BAD_KEY + b"\x01"),
        (
            object_from_msgpack,
            b"\x82" + _msgpack("ObjectType") + _msgpack("PGPKey") + _BAD_KEY + b"\x01",
        ),
    ],
)
def test_msgpack_invalid_utf8_is_malformed(decode: Callable[[bytes], Any], data: bytes) -> None:
    # Found by test_kmip_fuzz: a map key that is not UTF-8 used to escape as UnicodeDecodeError.
    with pytest.raises(MalformedKmipError) as info:
        decode(data)
    assert "UTF-8" in str(info.value)
    assert "0xad" not in str(info.value) and "0x80" not in str(info.value)


def test_msgpack_malformed_attributes() -> None:
    with pytest.raises(MalformedKmipError) as info:
        attributes_from_msgpack(_msgpack({"Link": [{"LinkType": 0x101}]}))
    assert info.value.path == "$.Link[0]"
    with pytest.raises(MalformedKmipError) as info:
        attributes_from_msgpack(_msgpack({"CryptographicUsageMask": -1}))
    assert info.value.path == "$.CryptographicUsageMask"
    with pytest.raises(MalformedKmipError) as info:
        attributes_from_msgpack(_msgpack({"NotAnAttribute": 1}))
    assert info.value.path == "$"
    assert "NotAnAttribute" in str(info.value)
