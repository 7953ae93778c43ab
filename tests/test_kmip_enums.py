"""The KMIP enumerations: names as Cosmian's JSON writes them, KMIP values, flags, exports."""

from __future__ import annotations

import enum
import pickle

import pytest

import kms_iface.kmip
from kms_iface.kmip import enums
from kms_iface.kmip.enums import (
    BlockCipherMode,
    CertificateRequestType,
    CertificateType,
    CryptographicAlgorithm,
    CryptographicUsageMask,
    DigitalSignatureAlgorithm,
    EncodingOption,
    HashingAlgorithm,
    KeyCompressionType,
    KeyFormatType,
    KeyRoleType,
    KmipOperation,
    LinkType,
    MaskGenerator,
    NameType,
    ObjectType,
    OpaqueDataType,
    PaddingMethod,
    RecommendedCurve,
    SecretDataType,
    SplitKeyMethod,
    State,
    WrappingMethod,
    from_name,
    to_name,
)

# Every enumeration the module defines; test_member_counts pins which ones they are.
ALL_ENUMS: list[type[enum.Enum]] = [
    obj
    for obj in vars(enums).values()
    if isinstance(obj, type) and issubclass(obj, enum.Enum) and obj.__module__ == enums.__name__
]

# (enum, member name, KMIP value): every value kmip.md states, plus spot checks of the rest
# against the KMIP 2.1 tables (and Cosmian's vendor extensions).
EXPECTED: list[tuple[type[enum.IntEnum], str, int]] = [
    (State, "PreActive", 1),
    (State, "Active", 2),
    (State, "Deactivated", 3),
    (State, "Compromised", 4),
    (State, "Destroyed", 5),
    (State, "Destroyed_Compromised", 6),
    (ObjectType, "Certificate", 1),
    (ObjectType, "SymmetricKey", 2),
    (ObjectType, "PublicKey", 3),
    (ObjectType, "PrivateKey", 4),
    (ObjectType, "SplitKey", 5),
    (ObjectType, "SecretData", 7),
    (ObjectType, "OpaqueObject", 8),
    (ObjectType, "PGPKey", 9),
    (ObjectType, "CertificateRequest", 0xA),
    (CryptographicAlgorithm, "DES", 1),
    (CryptographicAlgorithm, "THREE_DES", 2),
    (CryptographicAlgorithm, "AES", 3),
    (CryptographicAlgorithm, "RSA", 4),
    (CryptographicAlgorithm, "DSA", 5),
    (CryptographicAlgorithm, "ECDSA", 6),
    (CryptographicAlgorithm, "HMACSHA1", 7),
    (CryptographicAlgorithm, "HMACSHA224", 8),
    (CryptographicAlgorithm, "HMACSHA256", 9),
    (CryptographicAlgorithm, "HMACSHA384", 0xA),
    (CryptographicAlgorithm, "HMACSHA512", 0xB),
    (CryptographicAlgorithm, "HMACMD5", 0xC),
    (CryptographicAlgorithm, "DH", 0xD),
    (CryptographicAlgorithm, "ECDH", 0xE),
    (CryptographicAlgorithm, "EC", 0x1A),
    (CryptographicAlgorithm, "ChaCha20", 0x1C),
    (CryptographicAlgorithm, "Poly1305", 0x1D),
    (CryptographicAlgorithm, "ChaCha20Poly1305", 0x1E),
    (CryptographicAlgorithm, "SHA3256", 0x20),
    (CryptographicAlgorithm, "SHAKE256", 0x28),
    (CryptographicAlgorithm, "Page166Of230McEliece", 0x34),
    (CryptographicAlgorithm, "Ed25519", 0x37),
    (CryptographicAlgorithm, "Ed448", 0x38),
    (CryptographicAlgorithm, "CoverCrypt", 0x8880_0004),
    (CryptographicAlgorithm, "CoverCryptBulk", 0x8880_0005),
    (KeyFormatType, "Raw", 1),
    (KeyFormatType, "Opaque", 2),
    (KeyFormatType, "PKCS1", 3),
    (KeyFormatType, "PKCS8", 4),
    (KeyFormatType, "X509", 5),
    (KeyFormatType, "ECPrivateKey", 6),
    (KeyFormatType, "TransparentSymmetricKey", 7),
    (KeyFormatType, "TransparentDSAPrivateKey", 8),
    (KeyFormatType, "TransparentDSAPublicKey", 9),
    (KeyFormatType, "TransparentRSAPrivateKey", 0xA),
    (KeyFormatType, "TransparentRSAPublicKey", 0xB),
    (KeyFormatType, "TransparentDHPrivateKey", 0xC),
    (KeyFormatType, "TransparentDHPublicKey", 0xD),
    (KeyFormatType, "TransparentECPrivateKey", 0x14),
    (KeyFormatType, "TransparentECPublicKey", 0x15),
    (KeyFormatType, "PKCS12", 0x16),
    (KeyFormatType, "PKCS10", 0x17),
    (KeyFormatType, "PKCS7", 0x8880_0002),
    (KeyFormatType, "CoverCryptSecretKey", 0x8880_000C),
    (KeyFormatType, "CoverCryptPublicKey", 0x8880_000D),
    (LinkType, "CertificateLink", 0x101),
    (LinkType, "PublicKeyLink", 0x102),
    (LinkType, "PrivateKeyLink", 0x103),
    (LinkType, "ParentLink", 0x108),
    (LinkType, "PreviousLink", 0x10A),
    (LinkType, "WrappingKeyLink", 0x10E),
    (NameType, "UninterpretedTextString", 1),
    (NameType, "URI", 2),
    (BlockCipherMode, "CBC", 1),
    (BlockCipherMode, "ECB", 2),
    (BlockCipherMode, "CTR", 6),
    (BlockCipherMode, "GCM", 9),
    (BlockCipherMode, "XTS", 0xB),
    (BlockCipherMode, "AESKeyWrapPadding", 0xC),
    (BlockCipherMode, "NISTKeyWrap", 0xD),
    (BlockCipherMode, "AEAD", 0x12),
    (BlockCipherMode, "GCMSIV", 0x8000_0002),
    (PaddingMethod, "None", 1),
    (PaddingMethod, "OAEP", 2),
    (PaddingMethod, "PKCS5", 3),
    (PaddingMethod, "ANSI_X923", 6),
    (PaddingMethod, "PKCS1v15", 8),
    (PaddingMethod, "PSS", 0xA),
    (HashingAlgorithm, "MD5", 3),
    (HashingAlgorithm, "SHA1", 4),
    (HashingAlgorithm, "SHA224", 5),
    (HashingAlgorithm, "SHA256", 6),
    (HashingAlgorithm, "SHA384", 7),
    (HashingAlgorithm, "SHA512", 8),
    (HashingAlgorithm, "RIPEMD160", 9),
    (HashingAlgorithm, "SHA3256", 0xF),
    (HashingAlgorithm, "SHA3512", 0x11),
    (WrappingMethod, "Encrypt", 1),
    (WrappingMethod, "MACSign", 2),
    (WrappingMethod, "EncryptThenMACSign", 3),
    (WrappingMethod, "MACSignThenEncrypt", 4),
    (WrappingMethod, "TR31", 5),
    (EncodingOption, "NoEncoding", 1),
    (EncodingOption, "TTLVEncoding", 2),
    (SecretDataType, "Password", 1),
    (SecretDataType, "Seed", 2),
    (CertificateType, "X509", 1),
    (CertificateType, "PGP", 2),
    (CertificateType, "PKCS7", 0x8000_0001),
    (CertificateRequestType, "CRMF", 1),
    (CertificateRequestType, "PKCS10", 2),
    (CertificateRequestType, "PEM", 3),
    (OpaqueDataType, "Unknown", 0x8000_0001),
    (SplitKeyMethod, "XOR", 1),
    (SplitKeyMethod, "PolynomialSharingGf216", 2),
    (SplitKeyMethod, "PolynomialSharingPrimeField", 3),
    (SplitKeyMethod, "PolynomialSharingGf28", 4),
    (DigitalSignatureAlgorithm, "SHA1WithRSAEncryption", 3),
    (DigitalSignatureAlgorithm, "SHA224WithRSAEncryption", 4),
    (DigitalSignatureAlgorithm, "SHA256WithRSAEncryption", 5),
    (DigitalSignatureAlgorithm, "SHA384WithRSAEncryption", 6),
    (DigitalSignatureAlgorithm, "SHA512WithRSAEncryption", 7),
    (DigitalSignatureAlgorithm, "RSASSAPSS", 8),
    (DigitalSignatureAlgorithm, "ECDSAWithSHA256", 0xE),
    (DigitalSignatureAlgorithm, "SHA3512WithRSAEncryption", 0x13),
    (MaskGenerator, "MFG1", 1),
    (KeyRoleType, "BDK", 1),
    (KeyRoleType, "KEK", 0xB),
    (KeyRoleType, "TRKBK", 0x18),
    (KeyCompressionType, "ECPublicKeyTypeUncompressed", 1),
    (KeyCompressionType, "ECPublicKeyTypeX962CompressedPrime", 2),
    (KeyCompressionType, "ECPublicKeyTypeX962Hybrid", 4),
    (RecommendedCurve, "P192", 1),
    (RecommendedCurve, "P224", 4),
    (RecommendedCurve, "P256", 7),
    (RecommendedCurve, "P384", 0xA),
    (RecommendedCurve, "P521", 0xD),
    (RecommendedCurve, "SECP256K1", 0x19),
    (RecommendedCurve, "SECT113R2", 0x1B),
    (RecommendedCurve, "BRAINPOOLP256R1", 0x3D),
    (RecommendedCurve, "BRAINPOOLP384R1", 0x41),
    (RecommendedCurve, "CURVE25519", 0x45),
    (RecommendedCurve, "CURVE448", 0x46),
    (RecommendedCurve, "CURVEED25519", 0x8000_0001),
]

# kmip.md, in its order: the stored (lower-case) names of KmipOperation.
KMIP_OPERATIONS_IN_ORDER = [
    "create",
    "certify",
    "decrypt",
    "derivekey",
    "destroy",
    "encrypt",
    "export",
    "get",
    "getattributes",
    "hash",
    "import",
    "locate",
    "mac",
    "revoke",
    "rekey",
    "sign",
    "signatureverify",
    "validate",
    "setattribute",
    "modifyattribute",
    "addattribute",
    "deleteattribute",
    "activate",
]


@pytest.mark.parametrize(
    ("enum_type", "name", "value"),
    EXPECTED,
    ids=[f"{e.__name__}.{n}" for e, n, _ in EXPECTED],
)
def test_member_name_and_value(enum_type: type[enum.IntEnum], name: str, value: int) -> None:
    member = enum_type[name]
    assert member.name == name
    assert member == value
    assert enum_type(value) is member


def test_member_names_are_the_json_names() -> None:
    assert State.PreActive.name == "PreActive"
    assert State.Destroyed_Compromised.name == "Destroyed_Compromised"
    assert CryptographicAlgorithm.AES.name == "AES"
    assert KeyFormatType.TransparentSymmetricKey.name == "TransparentSymmetricKey"
    assert KmipOperation.Get.name == "Get"
    assert ObjectType.SymmetricKey.name == "SymmetricKey"


def test_member_counts() -> None:
    counts = {e.__name__: len(e.__members__) for e in ALL_ENUMS}
    assert counts == {
        "BlockCipherMode": 19,
        "CertificateRequestType": 3,
        "CertificateType": 3,
        "CryptographicAlgorithm": 62,
        "CryptographicUsageMask": 16,
        "DigitalSignatureAlgorithm": 19,
        "EncodingOption": 2,
        "HashingAlgorithm": 17,
        "KeyCompressionType": 4,
        "KeyFormatType": 24,
        "KeyRoleType": 24,
        "KmipOperation": 23,
        "LinkType": 14,
        "MaskGenerator": 1,
        "NameType": 2,
        "ObjectType": 9,
        "OpaqueDataType": 2,
        "PaddingMethod": 10,
        "RecommendedCurve": 72,
        "SecretDataType": 2,
        "SplitKeyMethod": 4,
        "State": 6,
        "WrappingMethod": 5,
    }


@pytest.mark.parametrize("enum_type", ALL_ENUMS, ids=lambda e: e.__name__)
def test_values_unique_and_32_bit(enum_type: type[enum.Enum]) -> None:
    # __members__ includes aliases; iteration does not. Equal lengths: no accidental alias.
    assert len(enum_type.__members__) == len(list(enum_type))
    values = [member.value for member in enum_type]
    assert len(set(values)) == len(values)
    assert all(isinstance(v, int) and 0 <= v < 2**32 for v in values)


@pytest.mark.parametrize("enum_type", ALL_ENUMS, ids=lambda e: e.__name__)
def test_members_are_ints_that_pickle(enum_type: type[enum.Enum]) -> None:
    for member in enum_type:
        assert isinstance(member, int)
        assert pickle.loads(pickle.dumps(member)) is member


def test_padding_method_none_is_a_real_member() -> None:
    none = PaddingMethod["None"]
    assert none.name == "None"
    assert PaddingMethod(1) is none
    assert PaddingMethod.__qualname__ == "PaddingMethod"
    assert PaddingMethod.__module__ == "kms_iface.kmip.enums"


def test_legacy_nist_key_wrap_has_no_member() -> None:
    # Read as AESKeyWrapPadding by the codecs; never a value of the model.
    assert "LegacyNISTKeyWrap" not in BlockCipherMode.__members__
    with pytest.raises(ValueError):
        BlockCipherMode(0x8000_000D)


def test_usage_mask_bits() -> None:
    m = CryptographicUsageMask
    assert [(f.name, f.value) for f in m] == [
        ("Sign", 0x1),
        ("Verify", 0x2),
        ("Encrypt", 0x4),
        ("Decrypt", 0x8),
        ("WrapKey", 0x10),
        ("UnwrapKey", 0x20),
        ("MACGenerate", 0x80),
        ("MACVerify", 0x100),
        ("DeriveKey", 0x200),
        ("KeyAgreement", 0x800),
        ("CertificateSign", 0x1000),
        ("CRLSign", 0x2000),
        ("Authenticate", 0x100000),
        ("Unrestricted", 0x200000),
        ("FPEEncrypt", 0x400000),
        ("FPEDecrypt", 0x800000),
    ]
    assert issubclass(m, enum.IntFlag)


def test_usage_mask_cosmian_symmetric_default() -> None:
    m = CryptographicUsageMask
    default = m(2108)
    assert default == m.Encrypt | m.Decrypt | m.WrapKey | m.UnwrapKey | m.KeyAgreement
    assert list(default) == [m.Encrypt, m.Decrypt, m.WrapKey, m.UnwrapKey, m.KeyAgreement]
    assert m.Encrypt in default
    assert m.UnwrapKey in default
    for absent in (m.Sign, m.Verify, m.MACGenerate, m.DeriveKey, m.Unrestricted):
        assert absent not in default
    assert default & ~m.WrapKey == 2108 - 0x10
    assert int(default | m.Sign) == 2109


def test_usage_mask_keeps_unnamed_bits() -> None:
    # Reserved (0x40) and extension (0x1000_0000) bits survive a read and a re-write.
    mask = CryptographicUsageMask(0x1000_0000 | 0x40 | 0x4)
    assert int(mask) == 0x1000_0044
    assert CryptographicUsageMask.Encrypt in mask
    assert int(mask | CryptographicUsageMask.Decrypt) == 0x1000_004C


def test_kmip_operation_order_values_and_stored_names() -> None:
    assert [to_name(op) for op in KmipOperation] == KMIP_OPERATIONS_IN_ORDER
    assert [op.value for op in KmipOperation] == list(range(len(KMIP_OPERATIONS_IN_ORDER)))
    assert to_name(KmipOperation.GetAttributes) == "getattributes"
    assert to_name(KmipOperation.MAC) == "mac"


@pytest.mark.parametrize("stored", KMIP_OPERATIONS_IN_ORDER)
def test_kmip_operation_from_stored_name(stored: str) -> None:
    op = from_name(KmipOperation, stored)
    assert to_name(op) == stored
    assert from_name(KmipOperation, op.name) is op


def test_from_name_reads_cosmian_json_names() -> None:
    assert from_name(ObjectType, "SymmetricKey") is ObjectType.SymmetricKey
    assert from_name(KeyFormatType, "TransparentSymmetricKey") is KeyFormatType(7)
    assert from_name(CryptographicAlgorithm, "AES") is CryptographicAlgorithm.AES
    assert from_name(WrappingMethod, "Encrypt") is WrappingMethod.Encrypt
    assert from_name(BlockCipherMode, "AESKeyWrapPadding") is BlockCipherMode.AESKeyWrapPadding
    assert from_name(EncodingOption, "TTLVEncoding") is EncodingOption.TTLVEncoding
    assert from_name(PaddingMethod, "None") is PaddingMethod(1)
    assert from_name(State, "Destroyed_Compromised") is State.Destroyed_Compromised


def test_to_name_is_the_member_name_elsewhere() -> None:
    assert to_name(State.PreActive) == "PreActive"
    assert to_name(PaddingMethod(1)) == "None"
    assert to_name(CryptographicAlgorithm.THREE_DES) == "THREE_DES"


@pytest.mark.parametrize(
    ("enum_type", "name"),
    [
        (State, "preactive"),  # only KmipOperation has a lower-case form
        (State, "Pre-Active"),
        (KmipOperation, "GET"),
        (KmipOperation, "get_attributes"),
        (BlockCipherMode, "LegacyNISTKeyWrap"),
        (CryptographicAlgorithm, ""),
    ],
)
def test_from_name_rejects_unknown_names(enum_type: type[enum.IntEnum], name: str) -> None:
    with pytest.raises(ValueError, match=enum_type.__name__):
        from_name(enum_type, name)


def test_every_enum_is_exported() -> None:
    defined = {e.__name__ for e in ALL_ENUMS}
    assert defined <= set(kms_iface.kmip.__all__)
    for name in defined:
        assert getattr(kms_iface.kmip, name) is getattr(enums, name)
    assert set(enums.__all__) == defined | {"from_name", "to_name"}
