"""Keys wrapped by an HSM key-encryption key: key material, stored form, unwrapping, the cache.

``cryptography`` stands in for the KEK's oracle (AES-GCM giving iv ‖ ct ‖ tag, RSA-OAEP giving
the raw ciphertext) and is the reference for PKCS#1 DER.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import msgspec
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kms_iface.errors import InvalidRequestError, NotSupportedError
from kms_iface.kmip import (
    Attributes,
    BlockCipherMode,
    ByteStringKeyMaterial,
    Certificate,
    CertificateType,
    CryptographicAlgorithm,
    CryptographicParameters,
    CryptographicUsageMask,
    EncodingOption,
    EncryptionKeyInformation,
    HashingAlgorithm,
    KeyBlock,
    KeyCompressionType,
    KeyFormatType,
    KeyMaterial,
    KeyWrappingData,
    Object,
    ObjectType,
    OpaqueDataType,
    OpaqueObject,
    PaddingMethod,
    PlainKeyValue,
    PrivateKey,
    PublicKey,
    RecommendedCurve,
    SecretData,
    SecretDataType,
    SymmetricKey,
    TransparentECPrivateKey,
    TransparentRSAPrivateKey,
    TransparentRSAPublicKey,
    TransparentSymmetricKey,
    WrappingMethod,
    object_from_json,
    object_from_msgpack,
    object_to_json,
    object_to_msgpack,
    symmetric_key_object,
)
from kms_iface.kmip.wrapping import (
    UnwrappedKeyCache,
    WrappingParameters,
    key_material_bytes,
    unwrapped_object,
    wrapped_fingerprint,
    wrapped_object,
    wrapping_parameters,
)
from kms_iface.secrets import SecretBytes
from kms_iface.stores import LmdbStore

KEK_UID = "hsm::0::kek"
GCM = CryptographicParameters(
    cryptographic_algorithm=CryptographicAlgorithm.AES, block_cipher_mode=BlockCipherMode.GCM
)
OAEP_SHA1 = CryptographicParameters(
    cryptographic_algorithm=CryptographicAlgorithm.RSA,
    padding_method=PaddingMethod.OAEP,
    hashing_algorithm=HashingAlgorithm.SHA1,
)
RSA_FIELDS = (
    "modulus",
    "public_exponent",
    "private_exponent",
    "p",
    "q",
    "prime_exponent_p",
    "prime_exponent_q",
    "crt_coefficient",
)
TYPED_ERRORS = (InvalidRequestError, NotSupportedError)


# --- helpers: the oracle stand-in, the reference DER, the objects -------------------------------


def gcm_wrap(kek: bytes, plaintext: SecretBytes) -> bytes:
    iv = os.urandom(12)
    return iv + AESGCM(kek).encrypt(iv, bytes(plaintext), None)  # iv ‖ ct ‖ tag


def gcm_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], None)


def int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def der_length(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([0x80 | len(int_bytes(n))]) + int_bytes(n)


def der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_length(len(content)) + content


def der_int(value: int) -> bytes:
    """A reference DER INTEGER built from a Python int (signed, minimal)."""
    return der_tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def der_seq(*elements: bytes) -> bytes:
    return der_tlv(0x30, b"".join(elements))


def reference_der(values: list[int]) -> bytes:
    return der_seq(der_int(0), *(der_int(v) for v in values))


def rsa_values(key: rsa.RSAPrivateKey) -> list[int]:
    n = key.private_numbers()
    pub = n.public_numbers
    return [pub.n, pub.e, n.d, n.p, n.q, n.dmp1, n.dmq1, n.iqmp]


def transparent_rsa(values: list[int], pad: int = 0) -> TransparentRSAPrivateKey:
    """The material of ``values``, each integer with ``pad`` extra leading zero bytes."""
    raw = [bytes(pad) + int_bytes(v) for v in values]
    return TransparentRSAPrivateKey(
        modulus=raw[0],
        public_exponent=raw[1],
        **{f: SecretBytes(b) for f, b in zip(RSA_FIELDS[2:], raw[2:], strict=True)},
    )


def rsa_attributes(fmt: KeyFormatType, bits: int) -> Attributes:
    attributes = Attributes(
        cryptographic_algorithm=CryptographicAlgorithm.RSA,
        cryptographic_length=bits,
        cryptographic_usage_mask=int(CryptographicUsageMask.Sign | CryptographicUsageMask.Decrypt),
        key_format_type=fmt,
        object_type=ObjectType.PrivateKey,
        comment="an RSA key",
    )
    attributes.set_tags("cosmian", {"_sk", "team"})
    return attributes


def private_key(
    material: TransparentRSAPrivateKey | ByteStringKeyMaterial,
    fmt: KeyFormatType,
    bits: int = 2048,
) -> PrivateKey:
    return PrivateKey(
        block=KeyBlock(
            key_format_type=fmt,
            key_value=PlainKeyValue(key_material=material, attributes=rsa_attributes(fmt, bits)),
            cryptographic_algorithm=CryptographicAlgorithm.RSA,
            cryptographic_length=bits,
        )
    )


def raw_symmetric_key(key: bytes) -> SymmetricKey:
    attributes = Attributes(
        cryptographic_algorithm=CryptographicAlgorithm.AES,
        cryptographic_length=len(key) * 8,
        key_format_type=KeyFormatType.Raw,
        object_type=ObjectType.SymmetricKey,
    )
    return SymmetricKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.Raw,
            key_value=PlainKeyValue(
                key_material=ByteStringKeyMaterial(value=SecretBytes(key)), attributes=attributes
            ),
            cryptographic_algorithm=CryptographicAlgorithm.AES,
            cryptographic_length=len(key) * 8,
        )
    )


def assert_codecs_round_trip(obj: Object) -> None:
    assert object_from_msgpack(object_to_msgpack(obj)) == obj
    assert object_from_json(object_to_json(obj)) == obj


def assert_no_secret(exc: BaseException, secret: bytes) -> None:
    """The message shows none of ``secret``: not as hex, escapes or integers."""
    text = str(exc)
    head = secret[:4]
    for form in (head.hex(), head.hex().upper(), repr(head)[2:-1], ", ".join(map(str, head))):
        assert form not in text


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa1024() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def pkcs1(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption()
    )


def wrapped_rsa(fmt: KeyFormatType) -> Object:
    """A stored RSA key in ``fmt`` whose wrapped bytes are irrelevant (unwrap is given material)."""
    return PrivateKey(
        block=KeyBlock(
            key_format_type=fmt,
            key_value=b"wrapped",
            cryptographic_algorithm=CryptographicAlgorithm.RSA,
            key_wrapping_data=KeyWrappingData(
                wrapping_method=WrappingMethod.Encrypt,
                encryption_key_information=EncryptionKeyInformation(unique_identifier=KEK_UID),
                encoding_option=EncodingOption.NoEncoding,
            ),
        )
    )


WRAPPED_RSA_FORMATS = (KeyFormatType.TransparentRSAPrivateKey, KeyFormatType.PKCS1)


# --- symmetric keys -----------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [128, 256])
@pytest.mark.parametrize("fmt", [KeyFormatType.TransparentSymmetricKey, KeyFormatType.Raw])
def test_symmetric_key_round_trip_through_aes_gcm(bits: int, fmt: KeyFormatType) -> None:
    key = os.urandom(bits // 8)
    if fmt == KeyFormatType.Raw:
        obj: Object = raw_symmetric_key(key)
    else:
        obj = symmetric_key_object(key, Attributes(comment="wrapped by the HSM"), tags={"t"})
    kek = AESGCM.generate_key(256)

    with key_material_bytes(obj) as material:
        assert material == key
        wrapped = gcm_wrap(kek, material)
    stored = wrapped_object(obj, wrapped, KEK_UID, GCM)
    assert_codecs_round_trip(stored)
    assert stored.key_block().key_value == wrapped
    assert wrapping_parameters(stored) == WrappingParameters(KEK_UID, GCM, wrapped)

    back = unwrapped_object(stored, gcm_unwrap(kek, wrapped), obj.attributes())
    assert back == obj
    assert_codecs_round_trip(back)
    assert not back.is_wrapped()


def test_wrapped_form_is_cosmians_and_keeps_the_key_block_metadata() -> None:
    obj = symmetric_key_object(bytes(range(32)), Attributes(comment="c"))
    obj.block.key_compression_type = KeyCompressionType.ECPublicKeyTypeUncompressed
    stored = wrapped_object(obj, b"\x01\x02\x03", KEK_UID, GCM)

    assert type(stored) is SymmetricKey
    assert stored.block == KeyBlock(
        key_format_type=KeyFormatType.TransparentSymmetricKey,
        key_compression_type=KeyCompressionType.ECPublicKeyTypeUncompressed,
        key_value=b"\x01\x02\x03",
        cryptographic_algorithm=CryptographicAlgorithm.AES,
        cryptographic_length=256,
        key_wrapping_data=KeyWrappingData(
            wrapping_method=WrappingMethod.Encrypt,
            encryption_key_information=EncryptionKeyInformation(
                unique_identifier=KEK_UID, cryptographic_parameters=GCM
            ),
            encoding_option=EncodingOption.NoEncoding,
        ),
    )
    assert type(stored.block.key_value) is bytes
    assert stored.is_wrapped() and stored.wrapping_key_uid() == KEK_UID
    assert stored.attributes() is None  # a Byte String key value carries no attributes
    body = msgspec.json.decode(object_to_json(stored))["SymmetricKey"]["KeyBlock"]
    assert body["KeyValue"] == [1, 2, 3]
    assert body["KeyWrappingData"]["EncodingOption"] == "NoEncoding"
    assert body["KeyWrappingData"]["EncryptionKeyInformation"]["UniqueIdentifier"] == KEK_UID
    # The source object is left as it was.
    assert obj.block.key_wrapping_data is None and not obj.is_wrapped()


def test_wrapped_object_without_parameters_records_none() -> None:
    stored = wrapped_object(symmetric_key_object(bytes(16)), b"w", KEK_UID)
    assert wrapping_parameters(stored) == WrappingParameters(KEK_UID, None, b"w")
    assert_codecs_round_trip(stored)


def test_unwrapped_object_without_attributes_embeds_none_and_copies_them_otherwise() -> None:
    obj = symmetric_key_object(bytes(range(16)), Attributes(comment="x"))
    stored = wrapped_object(obj, b"w", KEK_UID)
    assert unwrapped_object(stored, bytes(range(16))).attributes() is None
    given_attributes = Attributes(comment="stored")
    back = unwrapped_object(stored, bytes(range(16)), given_attributes)
    embedded = back.attributes()
    assert embedded == given_attributes and embedded is not given_attributes


def test_material_and_unwrapped_key_are_fresh_buffers() -> None:
    obj = symmetric_key_object(b"k" * 16)
    material = key_material_bytes(obj)
    material.zeroize()  # the caller wipes its plaintext once encrypted
    assert obj.block.key_material() == TransparentSymmetricKey(key=SecretBytes(b"k" * 16))

    decrypted = SecretBytes(b"k" * 16)
    back = unwrapped_object(wrapped_object(obj, b"w", KEK_UID), decrypted)
    decrypted.zeroize()  # the caller wipes the decrypted bytes; the key keeps its own copy
    assert back.key_block().key_material() == TransparentSymmetricKey(key=SecretBytes(b"k" * 16))


def test_rsa_oaep_kek_wraps_a_symmetric_key(rsa2048: rsa.RSAPrivateKey) -> None:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    obj = symmetric_key_object(os.urandom(32))
    with key_material_bytes(obj) as material:
        wrapped = rsa2048.public_key().encrypt(bytes(material), oaep)
    stored = wrapped_object(obj, wrapped, "hsm::0::rsa", OAEP_SHA1)
    kek_uid, parameters, ciphertext = wrapping_parameters(stored)
    assert (kek_uid, parameters) == ("hsm::0::rsa", OAEP_SHA1)
    back = unwrapped_object(stored, rsa2048.decrypt(ciphertext, oaep), obj.attributes())
    assert back == obj


# --- RSA private keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1024, 2048])
def test_rsa_der_is_cryptographys_pkcs1(
    bits: int, rsa1024: rsa.RSAPrivateKey, rsa2048: rsa.RSAPrivateKey
) -> None:
    key = rsa1024 if bits == 1024 else rsa2048
    obj = private_key(transparent_rsa(rsa_values(key)), KeyFormatType.TransparentRSAPrivateKey)
    with key_material_bytes(obj) as der:
        assert bytes(der) == pkcs1(key)
        loaded = ser.load_der_private_key(bytes(der), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert loaded.private_numbers() == key.private_numbers()


def test_rsa_2048_round_trip_through_aes_gcm(rsa2048: rsa.RSAPrivateKey) -> None:
    fmt = KeyFormatType.TransparentRSAPrivateKey
    obj = private_key(transparent_rsa(rsa_values(rsa2048)), fmt)
    kek = AESGCM.generate_key(256)
    with key_material_bytes(obj) as material:
        wrapped = gcm_wrap(kek, material)
    stored = wrapped_object(obj, wrapped, KEK_UID, GCM)
    assert_codecs_round_trip(stored)
    assert stored.key_block().key_format_type == fmt  # what unwrapping rebuilds

    back = unwrapped_object(stored, gcm_unwrap(kek, wrapped), obj.attributes())
    assert back == obj
    assert_codecs_round_trip(back)
    rebuilt = back.key_block().key_material()
    assert isinstance(rebuilt, TransparentRSAPrivateKey)
    assert type(rebuilt.modulus) is bytes and type(rebuilt.public_exponent) is bytes
    assert all(type(getattr(rebuilt, f)) is SecretBytes for f in RSA_FIELDS[2:])


def test_rsa_pkcs1_format_round_trip(rsa2048: rsa.RSAPrivateKey) -> None:
    der = pkcs1(rsa2048)
    obj = private_key(ByteStringKeyMaterial(value=SecretBytes(der)), KeyFormatType.PKCS1)
    kek = AESGCM.generate_key(128)
    with key_material_bytes(obj) as material:
        assert material == der
        wrapped = gcm_wrap(kek, material)
    stored = wrapped_object(obj, wrapped, KEK_UID, GCM)
    assert_codecs_round_trip(stored)
    back = unwrapped_object(stored, gcm_unwrap(kek, wrapped), obj.attributes())
    assert back == obj
    assert_codecs_round_trip(back)


def test_rsa_integers_with_leading_zeros_encode_and_come_back_minimal(
    rsa1024: rsa.RSAPrivateKey,
) -> None:
    values = rsa_values(rsa1024)
    padded = private_key(transparent_rsa(values, pad=3), KeyFormatType.TransparentRSAPrivateKey)
    with key_material_bytes(padded) as der:
        assert bytes(der) == pkcs1(rsa1024)
        back = unwrapped_object(wrapped_object(padded, b"w", KEK_UID), der)
    assert back.key_block().key_material() == transparent_rsa(values)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(1, 0xFF),
            st.integers(0x80, 0x1_0000),
            st.integers(1, 2**1100),
            st.integers(2**1023, 2**1030),  # lengths written with two octets
        ),
        min_size=8,
        max_size=8,
    )
)
def test_der_of_any_positive_integers_matches_the_reference_and_parses_back(
    values: list[int],
) -> None:
    obj = private_key(transparent_rsa(values), KeyFormatType.TransparentRSAPrivateKey)
    with key_material_bytes(obj) as der:
        assert bytes(der) == reference_der(values)
        back = unwrapped_object(wrapped_rsa(KeyFormatType.TransparentRSAPrivateKey), der)
    assert back.key_block().key_material() == transparent_rsa(values)


# --- what cannot be wrapped ---------------------------------------------------------------------


def test_rsa_key_without_crt_parameters_is_refused_naming_the_fields(
    rsa1024: rsa.RSAPrivateKey,
) -> None:
    material = transparent_rsa(rsa_values(rsa1024))
    material.prime_exponent_p = None
    material.crt_coefficient = None
    obj = private_key(material, KeyFormatType.TransparentRSAPrivateKey)
    with pytest.raises(InvalidRequestError, match="lacks PrimeExponentP, CRTCoefficient"):
        key_material_bytes(obj)


@pytest.mark.parametrize("value", [b"", b"\x00", b"\x00\x00\x00"])
def test_zero_rsa_integer_is_refused(value: bytes, rsa1024: rsa.RSAPrivateKey) -> None:
    material = transparent_rsa(rsa_values(rsa1024))
    material.q = SecretBytes(value)
    obj = private_key(material, KeyFormatType.TransparentRSAPrivateKey)
    with pytest.raises(InvalidRequestError, match="the RSA integer Q is zero"):
        key_material_bytes(obj)


def test_wiped_keys_are_refused(rsa1024: rsa.RSAPrivateKey) -> None:
    symmetric = symmetric_key_object(bytes(range(1, 17)))
    symmetric.zeroize()
    with pytest.raises(InvalidRequestError, match="the symmetric key has been wiped"):
        key_material_bytes(symmetric)
    private = private_key(
        transparent_rsa(rsa_values(rsa1024)), KeyFormatType.TransparentRSAPrivateKey
    )
    private.zeroize()
    with pytest.raises(InvalidRequestError, match="PrivateExponent has been wiped"):
        key_material_bytes(private)


def test_empty_symmetric_key_is_refused() -> None:
    stub = SymmetricKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.TransparentSymmetricKey,
            key_value=PlainKeyValue(key_material=TransparentSymmetricKey(key=SecretBytes(b""))),
        )
    )
    with pytest.raises(InvalidRequestError, match="the symmetric key is empty"):
        key_material_bytes(stub)


def test_already_wrapped_key_is_refused() -> None:
    stored = wrapped_object(symmetric_key_object(bytes(16)), b"w", KEK_UID)
    for call in (key_material_bytes, lambda o: wrapped_object(o, b"w", "other")):
        with pytest.raises(InvalidRequestError, match=f"already wrapped by '{KEK_UID}'"):
            call(stored)


def test_metadata_only_key_is_refused() -> None:
    stub = SymmetricKey(block=KeyBlock(key_format_type=KeyFormatType.TransparentSymmetricKey))
    for call in (key_material_bytes, lambda o: wrapped_object(o, b"w", KEK_UID)):
        with pytest.raises(InvalidRequestError, match="has no key value"):
            call(stub)


def test_key_material_that_contradicts_the_format_is_refused() -> None:
    obj = SymmetricKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.TransparentSymmetricKey,
            key_value=PlainKeyValue(key_material=ByteStringKeyMaterial(value=SecretBytes(b"k"))),
        )
    )
    with pytest.raises(InvalidRequestError, match="does not match the KeyFormatType"):
        key_material_bytes(obj)


def _key(
    kind: type[SymmetricKey | PrivateKey | PublicKey], fmt: KeyFormatType, material: KeyMaterial
) -> Object:
    return kind(block=KeyBlock(key_format_type=fmt, key_value=PlainKeyValue(key_material=material)))


UNSUPPORTED: list[tuple[str, Callable[[], Object]]] = [
    (
        "PublicKey",
        lambda: _key(
            PublicKey,
            KeyFormatType.TransparentRSAPublicKey,
            TransparentRSAPublicKey(modulus=b"\x01", public_exponent=b"\x03"),
        ),
    ),
    (
        "KeyFormatType PKCS8",
        lambda: _key(
            PrivateKey, KeyFormatType.PKCS8, ByteStringKeyMaterial(value=SecretBytes(b"k"))
        ),
    ),
    (
        "KeyFormatType TransparentECPrivateKey",
        lambda: _key(
            PrivateKey,
            KeyFormatType.TransparentECPrivateKey,
            TransparentECPrivateKey(recommended_curve=RecommendedCurve.P256, d=SecretBytes(b"d")),
        ),
    ),
    (
        "KeyFormatType Opaque",
        lambda: _key(
            SymmetricKey, KeyFormatType.Opaque, ByteStringKeyMaterial(value=SecretBytes(b"k"))
        ),
    ),
    (
        "SecretData",
        lambda: SecretData(
            secret_data_type=SecretDataType.Password,
            block=KeyBlock(
                key_format_type=KeyFormatType.Opaque,
                key_value=PlainKeyValue(
                    key_material=ByteStringKeyMaterial(value=SecretBytes(b"pw"))
                ),
            ),
        ),
    ),
    (
        "Certificate",
        lambda: Certificate(certificate_type=CertificateType.X509, certificate_value=b"c"),
    ),
    (
        "OpaqueObject",
        lambda: OpaqueObject(opaque_data_type=OpaqueDataType.Unknown, opaque_data_value=b"o"),
    ),
]


@pytest.mark.parametrize(("what", "make"), UNSUPPORTED, ids=[w for w, _ in UNSUPPORTED])
def test_other_kinds_and_formats_are_not_supported(what: str, make: Callable[[], Object]) -> None:
    for call in (key_material_bytes, lambda o: wrapped_object(o, b"w", KEK_UID)):
        with pytest.raises(NotSupportedError, match=what) as caught:
            call(make())
        assert "SymmetricKey in TransparentSymmetricKey or Raw format" in str(caught.value)


def test_wrapped_object_arguments_are_checked() -> None:
    obj = symmetric_key_object(bytes(16))
    with pytest.raises(InvalidRequestError, match="wrapped key bytes are empty"):
        wrapped_object(obj, b"", KEK_UID)
    with pytest.raises(InvalidRequestError, match="wrapping key uid is empty"):
        wrapped_object(obj, b"w", "")


# --- what cannot be unwrapped -------------------------------------------------------------------


def _with_wrapping_data(**changes: object) -> Object:
    stored = wrapped_object(symmetric_key_object(bytes(16)), b"w", KEK_UID)
    data = stored.key_block().key_wrapping_data
    assert data is not None
    stored.key_block().key_wrapping_data = msgspec.structs.replace(data, **changes)
    return stored


@pytest.mark.parametrize(
    ("stored", "error", "message"),
    [
        (symmetric_key_object(bytes(16)), InvalidRequestError, "not wrapped"),
        (
            Certificate(certificate_type=CertificateType.X509, certificate_value=b"c"),
            InvalidRequestError,
            "not wrapped",
        ),
        (
            _with_wrapping_data(encoding_option=EncodingOption.TTLVEncoding),
            NotSupportedError,
            "EncodingOption TTLVEncoding",
        ),
        (
            _with_wrapping_data(encoding_option=None),  # KMIP's default is TTLV
            NotSupportedError,
            "EncodingOption TTLVEncoding",
        ),
        (
            _with_wrapping_data(wrapping_method=WrappingMethod.MACSign),
            NotSupportedError,
            "wrapping method MACSign",
        ),
        (
            _with_wrapping_data(encryption_key_information=None),
            InvalidRequestError,
            "names no wrapping key",
        ),
    ],
    ids=["plain", "certificate", "ttlv", "default-encoding", "mac-sign", "no-kek"],
)
def test_keys_not_wrapped_by_wrapped_object_are_refused(
    stored: Object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        wrapping_parameters(stored)
    with pytest.raises(error, match=message):
        unwrapped_object(stored, bytes(16))


def test_wrapped_key_without_wrapped_bytes_is_refused() -> None:
    stored = wrapped_object(symmetric_key_object(bytes(16)), b"w", KEK_UID)
    stored.key_block().key_value = None
    with pytest.raises(InvalidRequestError, match="has no wrapped bytes"):
        wrapping_parameters(stored)


def test_wrapped_public_key_is_not_supported() -> None:
    public = PublicKey(block=wrapped_rsa(KeyFormatType.PKCS1).key_block())
    with pytest.raises(NotSupportedError, match="a PublicKey cannot be wrapped"):
        wrapping_parameters(public)


@pytest.mark.parametrize(
    "fmt",
    [
        KeyFormatType.TransparentSymmetricKey,
        KeyFormatType.PKCS1,
        KeyFormatType.TransparentRSAPrivateKey,
    ],
)
def test_empty_unwrapped_material_is_refused(fmt: KeyFormatType) -> None:
    stored = (
        wrapped_object(symmetric_key_object(bytes(16)), b"w", KEK_UID)
        if fmt == KeyFormatType.TransparentSymmetricKey
        else wrapped_rsa(fmt)
    )
    with pytest.raises(InvalidRequestError, match="material is empty"):
        unwrapped_object(stored, b"")


# --- malformed PKCS#1 DER -----------------------------------------------------------------------

SECRET = bytes.fromhex("deadbeefcafe")  # a recognisable "secret" inside every integer below
SMALL = [int.from_bytes(SECRET + bytes([i]), "big") for i in range(1, 9)]
VALID = reference_der(SMALL)
INTS = b"".join(der_int(v) for v in SMALL)


def _int_content(content: bytes) -> bytes:
    return der_tlv(0x02, content)


MALFORMED: list[tuple[str, bytes, type[Exception], str]] = [
    ("header only", b"\x30", InvalidRequestError, "SEQUENCE is missing or truncated"),
    ("not a sequence", b"\x31" + VALID[1:], InvalidRequestError, "is not a SEQUENCE"),
    ("indefinite length", b"\x30\x80" + VALID[2:] + b"\x00\x00", InvalidRequestError, "indefinite"),
    ("long form for a short length", b"\x30\x81" + VALID[1:], InvalidRequestError, "minimally"),
    (
        "length with a leading zero octet",
        b"\x30\x82\x00" + VALID[1:],
        InvalidRequestError,
        "minimally",
    ),
    ("five length octets", b"\x30\x85\x00\x00\x00\x00\x85", InvalidRequestError, "longer than"),
    ("length octets past the end", b"\x30\x84\x01", InvalidRequestError, "longer than"),
    ("truncated", VALID[:-1], InvalidRequestError, "SEQUENCE is truncated"),
    ("trailing byte", VALID + b"\x00", InvalidRequestError, "bytes follow"),
    ("version 1", der_seq(der_int(1), INTS), NotSupportedError, "multi-prime"),
    ("version 2", der_seq(der_int(2), INTS), InvalidRequestError, "version is not 0"),
    (
        "version not minimal",
        der_seq(_int_content(b"\x00\x00"), INTS),
        InvalidRequestError,
        "version is not 0",
    ),
    ("version missing", der_seq(INTS), InvalidRequestError, "version is not 0"),
    ("empty sequence", der_seq(), InvalidRequestError, "version is missing"),
    (
        "coefficient missing",
        der_seq(der_int(0), *(der_int(v) for v in SMALL[:7])),
        InvalidRequestError,
        "CRTCoefficient is missing",
    ),
    (
        "other prime infos in a version 0 key",
        der_seq(der_int(0), INTS, der_seq(der_int(3))),
        InvalidRequestError,
        "more than the nine INTEGERs",
    ),
    (
        "negative integer",
        der_seq(der_int(0), _int_content(b"\xde" + SECRET), *(der_int(v) for v in SMALL[1:])),
        InvalidRequestError,
        "Modulus is negative",
    ),
    (
        "zero integer",
        der_seq(der_int(0), der_int(SMALL[0]), der_int(0), *(der_int(v) for v in SMALL[2:])),
        InvalidRequestError,
        "PublicExponent is zero",
    ),
    (
        "integer with a redundant zero",
        der_seq(der_int(0), *(der_int(v) for v in SMALL[:2]), _int_content(b"\x00\x01" + SECRET)),
        InvalidRequestError,
        "PrivateExponent is not minimally encoded",
    ),
    (
        "empty integer",
        der_seq(der_int(0), *(der_int(v) for v in SMALL[:3]), _int_content(b"")),
        InvalidRequestError,
        "P is an empty INTEGER",
    ),
    (
        "octet string for an integer",
        der_seq(der_int(0), *(der_int(v) for v in SMALL[:4]), der_tlv(0x04, SECRET)),
        InvalidRequestError,
        "Q is not an INTEGER",
    ),
    (
        "integer overrunning the sequence",
        der_seq(der_int(0), *(der_int(v) for v in SMALL[:7]), b"\x02\x20" + SECRET),
        InvalidRequestError,
        "CRTCoefficient is truncated",
    ),
]


@pytest.mark.parametrize("fmt", WRAPPED_RSA_FORMATS)
@pytest.mark.parametrize(
    ("what", "der", "error", "message"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_der_raises_a_typed_error_without_key_bytes(
    fmt: KeyFormatType, what: str, der: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        unwrapped_object(wrapped_rsa(fmt), der)
    assert type(caught.value) is error
    assert_no_secret(caught.value, SECRET)
    if error is InvalidRequestError:
        assert str(caught.value).startswith("Invalid Request: malformed PKCS#1 RSAPrivateKey DER: ")


def test_valid_der_reference_is_accepted() -> None:
    back = unwrapped_object(wrapped_rsa(KeyFormatType.TransparentRSAPrivateKey), VALID)
    assert back.key_block().key_material() == transparent_rsa(SMALL)


def test_pkcs1_key_with_malformed_der_cannot_be_wrapped() -> None:
    broken = private_key(ByteStringKeyMaterial(value=SecretBytes(VALID[:-1])), KeyFormatType.PKCS1)
    with pytest.raises(InvalidRequestError, match="malformed PKCS#1") as caught:
        key_material_bytes(broken)
    assert_no_secret(caught.value, SECRET)
    multi_prime = der_seq(der_int(1), INTS, der_seq(der_seq(der_int(3), der_int(1), der_int(1))))
    obj = private_key(ByteStringKeyMaterial(value=SecretBytes(multi_prime)), KeyFormatType.PKCS1)
    with pytest.raises(NotSupportedError, match="multi-prime"):
        key_material_bytes(obj)


def _unwrap_or_typed_error(fmt: KeyFormatType, data: bytes) -> Object | None:
    """Unwrap ``data``; only a typed error may come out, and what parses is canonical DER."""
    try:
        back = unwrapped_object(wrapped_rsa(fmt), data)
    except TYPED_ERRORS as exc:
        assert_no_secret(exc, SECRET)
        return None
    assert bytes(key_material_bytes(back)) == data  # strict DER: one encoding per key
    return back


@settings(max_examples=300, deadline=None)
@given(fmt=st.sampled_from(WRAPPED_RSA_FORMATS), data=st.binary(max_size=300))
def test_arbitrary_bytes_give_a_typed_error_only(fmt: KeyFormatType, data: bytes) -> None:
    _unwrap_or_typed_error(fmt, data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(WRAPPED_RSA_FORMATS),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete", "truncate"]),
            st.integers(0, len(VALID) - 1),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_der_gives_a_typed_error_or_canonical_der(
    fmt: KeyFormatType, edits: list[tuple[str, int, int]]
) -> None:
    data = bytearray(VALID)
    for op, position, byte in edits:
        at = min(position, len(data))
        if op == "set" and at < len(data):
            data[at] = byte
        elif op == "insert":
            data.insert(at, byte)
        elif op == "delete" and at < len(data):
            del data[at]
        elif op == "truncate":
            del data[at:]
    _unwrap_or_typed_error(fmt, bytes(data))


# --- the store's index --------------------------------------------------------------------------


def test_lmdb_store_indexes_the_wrapped_object(tmp_path: Path) -> None:
    obj = symmetric_key_object(os.urandom(32), Attributes(comment="c"))
    attributes = obj.attributes()
    assert attributes is not None
    stored = wrapped_object(obj, b"wrapped bytes", KEK_UID, GCM)
    material = obj.block.key_material()
    assert isinstance(material, TransparentSymmetricKey)
    key = material.key

    async def main() -> None:
        async with LmdbStore(str(tmp_path / "store"), durable=False) as store:
            uid = await store.create("k1", "alice", obj, attributes, set())
            assert await store.find_wrapped_by(KEK_UID, "alice") == []
            await store.update_object(uid, stored, attributes)
            assert [found[0] for found in await store.find_wrapped_by(KEK_UID, "alice")] == [uid]
            read = await store.retrieve(uid)
            assert read is not None and read.object == stored
            back = unwrapped_object(read.object, key, read.attributes)
            assert back == obj
            await store.update_object(uid, back, read.attributes)
            assert await store.find_wrapped_by(KEK_UID, "alice") == []

    anyio.run(main)


# --- the cache ----------------------------------------------------------------------------------


def _cached_buffer(cache: UnwrappedKeyCache, uid: str) -> memoryview:
    """A view of the cache's own copy of ``uid``'s material (to watch it being wiped)."""
    return memoryview(cache._entries[uid][1])


def test_fingerprint_follows_the_stored_object() -> None:
    obj = symmetric_key_object(bytes(16))
    stored = wrapped_object(obj, b"w1", KEK_UID, GCM)
    fingerprint = wrapped_fingerprint(stored)
    assert len(fingerprint) == 32
    assert wrapped_fingerprint(object_from_msgpack(object_to_msgpack(stored))) == fingerprint
    assert wrapped_fingerprint(wrapped_object(obj, b"w2", KEK_UID, GCM)) != fingerprint
    assert wrapped_fingerprint(wrapped_object(obj, b"w1", "hsm::0::other", GCM)) != fingerprint
    assert wrapped_fingerprint(wrapped_object(obj, b"w1", KEK_UID)) != fingerprint
    with pytest.raises(InvalidRequestError, match="only a wrapped object"):
        wrapped_fingerprint(obj)


def test_cache_hit_hands_out_a_copy_and_keeps_its_own() -> None:
    cache = UnwrappedKeyCache(4)
    assert cache.max_entries == 4
    material = SecretBytes(b"key-one")
    cache.put("a", b"f1", material)
    material.zeroize()  # the caller's buffer is its own
    first = cache.get("a", b"f1")
    assert first == b"key-one"
    assert first is not None
    first.zeroize()  # so is the copy handed out
    assert cache.get("a", b"f1") == b"key-one"
    assert cache.get("b", b"f1") is None


def test_cache_evicts_the_least_recently_used_and_wipes_it() -> None:
    cache = UnwrappedKeyCache(2)
    cache.put("a", b"f", b"material-a")
    cache.put("b", b"f", b"material-b")
    view_a, view_b = _cached_buffer(cache, "a"), _cached_buffer(cache, "b")
    assert cache.get("a", b"f") == b"material-a"  # "a" is now the most recently used
    cache.put("c", b"f", b"material-c")
    assert len(cache) == 2
    assert bytes(view_b) == bytes(len(b"material-b"))  # evicted, and wiped
    assert cache.get("b", b"f") is None
    assert bytes(view_a) == b"material-a"
    assert cache.get("a", b"f") == b"material-a" and cache.get("c", b"f") == b"material-c"


def test_cache_entry_of_another_version_misses_and_is_wiped() -> None:
    cache = UnwrappedKeyCache(2)
    cache.put("a", b"old", b"material")
    view = _cached_buffer(cache, "a")
    assert cache.get("a", b"new") is None
    assert len(cache) == 0 and bytes(view) == bytes(8)
    assert cache.get("a", b"old") is None


def test_cache_put_replaces_and_wipes_the_previous_entry() -> None:
    cache = UnwrappedKeyCache(2)
    cache.put("a", b"v1", b"material-1")
    view = _cached_buffer(cache, "a")
    cache.put("a", b"v2", b"material-2")
    assert len(cache) == 1 and bytes(view) == bytes(10)
    assert cache.get("a", b"v2") == b"material-2"


def test_cache_invalidate_and_clear_wipe() -> None:
    cache = UnwrappedKeyCache(3)
    for uid in "abc":
        cache.put(uid, b"f", uid.encode() * 8)
    views = {uid: _cached_buffer(cache, uid) for uid in "abc"}
    cache.invalidate("b")
    cache.invalidate("unknown")
    assert len(cache) == 2 and bytes(views["b"]) == bytes(8)
    assert cache.get("b", b"f") is None and cache.get("a", b"f") == b"a" * 8
    cache.clear()
    assert len(cache) == 0
    assert bytes(views["a"]) == bytes(8) and bytes(views["c"]) == bytes(8)


def test_cache_of_size_zero_is_disabled_and_negative_sizes_are_refused() -> None:
    cache = UnwrappedKeyCache(0)
    material = SecretBytes(b"material")
    cache.put("a", b"f", material)
    assert len(cache) == 0 and cache.get("a", b"f") is None
    assert material == b"material"  # nothing of the caller's is touched
    with pytest.raises(InvalidRequestError, match="cache size"):
        UnwrappedKeyCache(-1)


def test_cache_shared_by_threads_stays_bounded_and_never_mixes_keys() -> None:
    cache = UnwrappedKeyCache(8)
    errors: list[str] = []

    def worker(seed: int) -> None:
        for i in range(2000):
            uid = f"k{(seed * 7 + i) % 20}"
            if i % 3 == 0:
                cache.put(uid, b"f", uid.encode() * 4)
            elif i % 17 == 0:
                cache.invalidate(uid)
            else:
                got = cache.get(uid, b"f")
                if got is not None and got != uid.encode() * 4:
                    errors.append(uid)
            if len(cache) > 8:
                errors.append("over the bound")

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 8
