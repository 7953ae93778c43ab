"""The KMIP 2.1 enumerations of the kms_iface object model, named as Cosmian's JSON names them.

Each member's name is the exact string Cosmian's JSON carries (``State.PreActive``,
``State.Destroyed_Compromised``, ``CryptographicAlgorithm.THREE_DES``), so that ``E[name]`` reads
Cosmian's JSON and ``member.name`` writes it; each member's value is its KMIP integer (the TTLV
Enumeration value). Values are those of the KMIP 2.1 specification tables, checked against
Cosmian's ``kmip`` crate and PyKMIP; values from 0x8000_0000 up are vendor extensions (Cosmian's,
marked below), which carry no meaning outside Cosmian.

How each form carries them:

    form                        enumerations                  CryptographicUsageMask
    Cosmian JSON (interchange)  by member name                integer
    JSON-TTLV                   by member name                integer
    TTLV                        by value                      integer
    MessagePack (storage)       the codec's choice; State     integer
                                is stored by name

Two exceptions to "the name is the member name": ``KmipOperation`` is stored and written in lower
case without separators (``"getattributes"``), and Cosmian's legacy block cipher mode name
``LegacyNISTKeyWrap`` (value 0x8000_000D in databases written before Cosmian KMS 5.15) must be
read as ``BlockCipherMode.AESKeyWrapPadding``. The first is handled by ``from_name``/``to_name``;
the second is the codecs' job and deliberately has no member here, so that it can never be
written back.
"""

from __future__ import annotations

import enum
from typing import Final, TypeVar

__all__ = [
    "BlockCipherMode",
    "CertificateRequestType",
    "CertificateType",
    "CryptographicAlgorithm",
    "CryptographicUsageMask",
    "DigitalSignatureAlgorithm",
    "EncodingOption",
    "HashingAlgorithm",
    "KeyCompressionType",
    "KeyFormatType",
    "KeyRoleType",
    "KmipOperation",
    "LinkType",
    "MaskGenerator",
    "NameType",
    "ObjectType",
    "OpaqueDataType",
    "PaddingMethod",
    "RecommendedCurve",
    "SecretDataType",
    "SplitKeyMethod",
    "State",
    "WrappingMethod",
    "from_name",
    "to_name",
]


@enum.unique
class State(enum.IntEnum):
    """Life-cycle state of a managed object (SP 800-57); stored by name."""

    PreActive = 0x1
    Active = 0x2
    Deactivated = 0x3
    Compromised = 0x4
    Destroyed = 0x5
    Destroyed_Compromised = 0x6


@enum.unique
class ObjectType(enum.IntEnum):
    """Kind of managed object; also the external tag of an ``Object`` in JSON."""

    Certificate = 0x1
    SymmetricKey = 0x2
    PublicKey = 0x3
    PrivateKey = 0x4
    SplitKey = 0x5
    # 0x6 was Template, reserved since KMIP 2.0.
    SecretData = 0x7
    OpaqueObject = 0x8
    PGPKey = 0x9
    CertificateRequest = 0xA


@enum.unique
class CryptographicAlgorithm(enum.IntEnum):
    """Algorithm of a key or of a cryptographic operation."""

    DES = 0x1
    THREE_DES = 0x2
    AES = 0x3
    RSA = 0x4
    DSA = 0x5
    ECDSA = 0x6
    HMACSHA1 = 0x7
    HMACSHA224 = 0x8
    HMACSHA256 = 0x9
    HMACSHA384 = 0xA
    HMACSHA512 = 0xB
    HMACMD5 = 0xC
    DH = 0xD
    ECDH = 0xE
    ECMQV = 0xF
    Blowfish = 0x10
    Camellia = 0x11
    CAST5 = 0x12
    IDEA = 0x13
    MARS = 0x14
    RC2 = 0x15
    RC4 = 0x16
    RC5 = 0x17
    SKIPJACK = 0x18
    Twofish = 0x19
    EC = 0x1A
    OneTimePad = 0x1B
    ChaCha20 = 0x1C
    Poly1305 = 0x1D
    ChaCha20Poly1305 = 0x1E
    SHA3224 = 0x1F
    SHA3256 = 0x20
    SHA3384 = 0x21
    SHA3512 = 0x22
    HMACSHA3224 = 0x23
    HMACSHA3256 = 0x24
    HMACSHA3384 = 0x25
    HMACSHA3512 = 0x26
    SHAKE128 = 0x27
    SHAKE256 = 0x28
    ARIA = 0x29
    SEED = 0x2A
    SM2 = 0x2B
    SM3 = 0x2C
    SM4 = 0x2D
    GOSTR34102012 = 0x2E
    GOSTR34112012 = 0x2F
    GOSTR34132015 = 0x30
    GOST2814789 = 0x31
    XMSS = 0x32
    SPHINCS_256 = 0x33
    # KMIP's "McEliece"; Cosmian's JSON name keeps a page header copied from the spec's PDF.
    Page166Of230McEliece = 0x34
    McEliece6960119 = 0x35
    McEliece8192128 = 0x36
    Ed25519 = 0x37
    Ed448 = 0x38
    # Beyond the KMIP 2.1 table (which ends at Ed448): Cosmian's values, not confirmed by any
    # OASIS table.
    MLKEM_512 = 0x39
    MLKEM_768 = 0x3A
    MLKEM_1024 = 0x3B
    # Cosmian extensions.
    ConfigurableKEM = 0x8880_0003
    CoverCrypt = 0x8880_0004
    CoverCryptBulk = 0x8880_0005


@enum.unique
class KeyFormatType(enum.IntEnum):
    """Encoding of the key material in a ``KeyBlock``."""

    Raw = 0x1
    Opaque = 0x2
    PKCS1 = 0x3
    PKCS8 = 0x4
    X509 = 0x5
    ECPrivateKey = 0x6
    TransparentSymmetricKey = 0x7
    TransparentDSAPrivateKey = 0x8
    TransparentDSAPublicKey = 0x9
    TransparentRSAPrivateKey = 0xA
    TransparentRSAPublicKey = 0xB
    TransparentDHPrivateKey = 0xC
    TransparentDHPublicKey = 0xD
    # 0xE-0x13 (the ECDSA/ECDH/ECMQV transparent formats) are reserved since KMIP 2.0.
    TransparentECPrivateKey = 0x14
    TransparentECPublicKey = 0x15
    PKCS12 = 0x16
    PKCS10 = 0x17
    # Cosmian extensions.
    Pkcs12Legacy = 0x8880_0001
    PKCS7 = 0x8880_0002
    ConfigurableKEM = 0x8880_0003
    EnclaveECKeyPair = 0x8880_0005
    EnclaveECSharedKey = 0x8880_0006
    CoverCryptSecretKey = 0x8880_000C
    CoverCryptPublicKey = 0x8880_000D


@enum.unique
class CryptographicUsageMask(enum.IntFlag, boundary=enum.KEEP):
    """What a key may be used for: a bit mask, always carried as an integer.

    Cosmian's default for a symmetric key is 2108 = Encrypt | Decrypt | WrapKey | UnwrapKey |
    KeyAgreement. Bits without a member (reserved or vendor extension bits) are kept, never
    dropped, so any integer read back is written back unchanged.
    """

    Sign = 0x1
    Verify = 0x2
    Encrypt = 0x4
    Decrypt = 0x8
    WrapKey = 0x10
    UnwrapKey = 0x20
    # 0x40 (Export) and 0x400 (Content Commitment) are reserved since KMIP 2.0.
    MACGenerate = 0x80
    MACVerify = 0x100
    DeriveKey = 0x200
    KeyAgreement = 0x800
    CertificateSign = 0x1000
    CRLSign = 0x2000
    Authenticate = 0x10_0000
    Unrestricted = 0x20_0000
    # KMIP 2.0+ (PyKMIP); not in Cosmian's bit set, so Cosmian never sets them.
    FPEEncrypt = 0x40_0000
    FPEDecrypt = 0x80_0000


@enum.unique
class KmipOperation(enum.IntEnum):
    """Cosmian's permission vocabulary: the operations a user may be granted on an object.

    Not KMIP's Operation enumeration: the values are Cosmian's own discriminants, in its order
    (new operations are only ever appended). Stored and written as the lower-case name without
    separators (``"get"``, ``"derivekey"``, ``"getattributes"``); see ``to_name``/``from_name``.
    """

    Create = 0
    Certify = 1
    Decrypt = 2
    DeriveKey = 3
    Destroy = 4
    Encrypt = 5
    Export = 6
    Get = 7
    GetAttributes = 8
    Hash = 9
    Import = 10
    Locate = 11
    MAC = 12
    Revoke = 13
    Rekey = 14
    Sign = 15
    SignatureVerify = 16
    Validate = 17
    SetAttribute = 18
    ModifyAttribute = 19
    AddAttribute = 20
    DeleteAttribute = 21
    Activate = 22


@enum.unique
class LinkType(enum.IntEnum):
    """Relation named by a ``Link`` attribute (``WrappingKeyLink``: the key that wrapped this)."""

    CertificateLink = 0x101
    PublicKeyLink = 0x102
    PrivateKeyLink = 0x103
    DerivationBaseObjectLink = 0x104
    DerivedKeyLink = 0x105
    ReplacementObjectLink = 0x106
    ReplacedObjectLink = 0x107
    ParentLink = 0x108
    ChildLink = 0x109
    PreviousLink = 0x10A
    NextLink = 0x10B
    PKCS12CertificateLink = 0x10C
    PKCS12PasswordLink = 0x10D
    WrappingKeyLink = 0x10E


@enum.unique
class NameType(enum.IntEnum):
    """How the value of a ``Name`` attribute is to be read."""

    UninterpretedTextString = 0x1
    URI = 0x2


@enum.unique
class BlockCipherMode(enum.IntEnum):
    """Block cipher mode in ``CryptographicParameters``.

    ``AESKeyWrapPadding`` is RFC 5649 (the mode Cosmian wraps keys with), ``NISTKeyWrap`` RFC 3394.
    The legacy name ``LegacyNISTKeyWrap`` is read as ``AESKeyWrapPadding`` by the codecs.
    """

    CBC = 0x1
    ECB = 0x2
    PCBC = 0x3
    CFB = 0x4
    OFB = 0x5
    CTR = 0x6
    CMAC = 0x7
    CCM = 0x8
    GCM = 0x9
    CBCMAC = 0xA
    XTS = 0xB
    AESKeyWrapPadding = 0xC
    NISTKeyWrap = 0xD
    X9102AESKW = 0xE
    X9102TDKW = 0xF
    X9102AKW1 = 0x10
    X9102AKW2 = 0x11
    AEAD = 0x12
    # Cosmian extension: AES-GCM-SIV.
    GCMSIV = 0x8000_0002


# Functional form because one member is named "None", which the class syntax cannot define;
# read it as PaddingMethod["None"].
PaddingMethod = enum.IntEnum(
    "PaddingMethod",
    [
        ("None", 0x1),
        ("OAEP", 0x2),
        ("PKCS5", 0x3),
        ("SSL3", 0x4),
        ("Zeros", 0x5),
        ("ANSI_X923", 0x6),
        ("ISO10126", 0x7),
        ("PKCS1v15", 0x8),
        ("X931", 0x9),
        ("PSS", 0xA),
    ],
    module=__name__,
    qualname="PaddingMethod",
)
PaddingMethod.__doc__ = (
    "Padding method in ``CryptographicParameters`` (``OAEP``, ``PKCS1v15`` and ``PSS`` for RSA)."
)
enum.unique(PaddingMethod)


@enum.unique
class HashingAlgorithm(enum.IntEnum):
    """Hash function in ``CryptographicParameters`` (also the OAEP mask generator's hash)."""

    MD2 = 0x1
    MD4 = 0x2
    MD5 = 0x3
    SHA1 = 0x4
    SHA224 = 0x5
    SHA256 = 0x6
    SHA384 = 0x7
    SHA512 = 0x8
    RIPEMD160 = 0x9
    Tiger = 0xA
    Whirlpool = 0xB
    SHA512224 = 0xC
    SHA512256 = 0xD
    SHA3224 = 0xE
    SHA3256 = 0xF
    SHA3384 = 0x10
    SHA3512 = 0x11


@enum.unique
class WrappingMethod(enum.IntEnum):
    """How a wrapped key value was protected (``KeyWrappingData``)."""

    Encrypt = 0x1
    MACSign = 0x2
    EncryptThenMACSign = 0x3
    MACSignThenEncrypt = 0x4
    TR31 = 0x5


@enum.unique
class EncodingOption(enum.IntEnum):
    """What was wrapped: the raw key bytes, or the TTLV-encoded ``KeyValue`` structure."""

    NoEncoding = 0x1
    TTLVEncoding = 0x2


@enum.unique
class SecretDataType(enum.IntEnum):
    """Kind of a ``SecretData`` object."""

    Password = 0x1
    Seed = 0x2


@enum.unique
class CertificateType(enum.IntEnum):
    """Kind of a ``Certificate`` object."""

    X509 = 0x1
    PGP = 0x2
    # Cosmian extension: an X.509 certificate exported as PKCS#7.
    PKCS7 = 0x8000_0001


@enum.unique
class CertificateRequestType(enum.IntEnum):
    """Encoding of a ``CertificateRequest`` object (0x4, PGP, is reserved since KMIP 2.0)."""

    CRMF = 0x1
    PKCS10 = 0x2
    PEM = 0x3


@enum.unique
class OpaqueDataType(enum.IntEnum):
    """Kind of an ``OpaqueObject``: KMIP defines none, so both values are Cosmian's."""

    Unknown = 0x8000_0001
    # Used by the KMIP interoperability test vectors Cosmian replays.
    Vendor = 0x8012_3456


@enum.unique
class SplitKeyMethod(enum.IntEnum):
    """How a ``SplitKey`` was split."""

    XOR = 0x1
    PolynomialSharingGf216 = 0x2
    PolynomialSharingPrimeField = 0x3
    PolynomialSharingGf28 = 0x4


@enum.unique
class DigitalSignatureAlgorithm(enum.IntEnum):
    """Signature scheme in ``CryptographicParameters``; when present it decides the scheme."""

    MD2WithRSAEncryption = 0x1
    MD5WithRSAEncryption = 0x2
    SHA1WithRSAEncryption = 0x3
    SHA224WithRSAEncryption = 0x4
    SHA256WithRSAEncryption = 0x5
    SHA384WithRSAEncryption = 0x6
    SHA512WithRSAEncryption = 0x7
    RSASSAPSS = 0x8
    DSAWithSHA1 = 0x9
    DSAWithSHA224 = 0xA
    DSAWithSHA256 = 0xB
    ECDSAWithSHA1 = 0xC
    ECDSAWithSHA224 = 0xD
    ECDSAWithSHA256 = 0xE
    ECDSAWithSHA384 = 0xF
    ECDSAWithSHA512 = 0x10
    SHA3256WithRSAEncryption = 0x11
    SHA3384WithRSAEncryption = 0x12
    SHA3512WithRSAEncryption = 0x13


@enum.unique
class MaskGenerator(enum.IntEnum):
    """Mask generation function of RSA-OAEP/PSS (``CryptographicParameters``)."""

    # KMIP's "MGF1"; Cosmian's JSON name transposes the letters.
    MFG1 = 0x1


@enum.unique
class KeyRoleType(enum.IntEnum):
    """Role of a key in financial-services key schemes (``CryptographicParameters``)."""

    BDK = 0x1
    CVK = 0x2
    DEK = 0x3
    MKAC = 0x4
    MKSMC = 0x5
    MKSMI = 0x6
    MKDAC = 0x7
    MKDN = 0x8
    MKCP = 0x9
    MKOTH = 0xA
    KEK = 0xB
    MAC16609 = 0xC
    MAC97971 = 0xD
    MAC97972 = 0xE
    MAC97973 = 0xF
    MAC97974 = 0x10
    MAC97975 = 0x11
    ZPK = 0x12
    PVKIBM = 0x13
    PVKPVV = 0x14
    PVKOTH = 0x15
    DUKPT = 0x16
    IV = 0x17
    TRKBK = 0x18


@enum.unique
class KeyCompressionType(enum.IntEnum):
    """Point encoding of an EC public key in a ``KeyBlock``."""

    ECPublicKeyTypeUncompressed = 0x1
    ECPublicKeyTypeX962CompressedPrime = 0x2
    ECPublicKeyTypeX962CompressedChar2 = 0x3
    ECPublicKeyTypeX962Hybrid = 0x4


@enum.unique
class RecommendedCurve(enum.IntEnum):
    """Named elliptic curve of a transparent EC key."""

    P192 = 0x1
    K163 = 0x2
    B163 = 0x3
    P224 = 0x4
    K233 = 0x5
    B233 = 0x6
    P256 = 0x7
    K283 = 0x8
    B283 = 0x9
    P384 = 0xA
    K409 = 0xB
    B409 = 0xC
    P521 = 0xD
    K571 = 0xE
    B571 = 0xF
    SECP112R1 = 0x10
    SECP112R2 = 0x11
    SECP128R1 = 0x12
    SECP128R2 = 0x13
    SECP160K1 = 0x14
    SECP160R1 = 0x15
    SECP160R2 = 0x16
    SECP192K1 = 0x17
    SECP224K1 = 0x18
    SECP256K1 = 0x19
    SECT113R1 = 0x1A
    # In the KMIP table (and PyKMIP) but missing from Cosmian's enum; named in Cosmian's style.
    SECT113R2 = 0x1B
    SECT131R1 = 0x1C
    SECT131R2 = 0x1D
    SECT163R1 = 0x1E
    SECT193R1 = 0x1F
    SECT193R2 = 0x20
    SECT239K1 = 0x21
    ANSIX9P192V2 = 0x22
    ANSIX9P192V3 = 0x23
    ANSIX9P239V1 = 0x24
    ANSIX9P239V2 = 0x25
    ANSIX9P239V3 = 0x26
    ANSIX9C2PNB163V1 = 0x27
    ANSIX9C2PNB163V2 = 0x28
    ANSIX9C2PNB163V3 = 0x29
    ANSIX9C2PNB176V1 = 0x2A
    ANSIX9C2TNB191V1 = 0x2B
    ANSIX9C2TNB191V2 = 0x2C
    ANSIX9C2TNB191V3 = 0x2D
    ANSIX9C2PNB208W1 = 0x2E
    ANSIX9C2TNB239V1 = 0x2F
    ANSIX9C2TNB239V2 = 0x30
    ANSIX9C2TNB239V3 = 0x31
    ANSIX9C2PNB272W1 = 0x32
    ANSIX9C2PNB304W1 = 0x33
    ANSIX9C2TNB359V1 = 0x34
    ANSIX9C2PNB368W1 = 0x35
    ANSIX9C2TNB431R1 = 0x36
    BRAINPOOLP160R1 = 0x37
    BRAINPOOLP160T1 = 0x38
    BRAINPOOLP192R1 = 0x39
    BRAINPOOLP192T1 = 0x3A
    BRAINPOOLP224R1 = 0x3B
    BRAINPOOLP224T1 = 0x3C
    BRAINPOOLP256R1 = 0x3D
    BRAINPOOLP256T1 = 0x3E
    BRAINPOOLP320R1 = 0x3F
    BRAINPOOLP320T1 = 0x40
    BRAINPOOLP384R1 = 0x41
    BRAINPOOLP384T1 = 0x42
    BRAINPOOLP512R1 = 0x43
    BRAINPOOLP512T1 = 0x44
    CURVE25519 = 0x45
    CURVE448 = 0x46
    # Cosmian extensions.
    CURVEED25519 = 0x8000_0001
    CURVEED448 = 0x8000_0002


_E = TypeVar("_E", bound=enum.IntEnum)

_OPERATION_MEMBER_NAMES: Final[dict[str, str]] = {op.name.lower(): op.name for op in KmipOperation}
"""Stored (lower-case) KmipOperation name -> member name."""


def to_name(member: enum.IntEnum) -> str:
    """The name a member is written under: its own name, lower-cased for ``KmipOperation``."""
    if isinstance(member, KmipOperation):
        return member.name.lower()
    return member.name


def from_name(enum_type: type[_E], name: str) -> _E:
    """The member of ``enum_type`` written as ``name`` (inverse of ``to_name``).

    ``KmipOperation`` accepts its stored lower-case form as well as the member name. Raises
    ``ValueError`` (which msgspec reports with the path of the field) for an unknown name.
    """
    if enum_type is KmipOperation:
        name = _OPERATION_MEMBER_NAMES.get(name, name)
    try:
        return enum_type[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a {enum_type.__name__} name") from None
