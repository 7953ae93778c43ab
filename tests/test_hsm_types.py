"""The HSM contract's value types: algorithm selection from KMIP parameters, label metadata."""

from __future__ import annotations

import pytest

from kms_iface import CryptoAlgorithm, InvalidRequestError, SigningAlgorithm
from kms_iface.hsm import LabelMetadata, parse_label_metadata
from kms_iface.kmip import (
    BlockCipherMode,
    CryptographicAlgorithm,
    CryptographicParameters,
    DigitalSignatureAlgorithm,
    HashingAlgorithm,
    PaddingMethod,
)

A = CryptoAlgorithm
S = SigningAlgorithm
AES = CryptographicAlgorithm.AES
RSA = CryptographicAlgorithm.RSA


def params(**fields: object) -> CryptographicParameters:
    return CryptographicParameters(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("supported", "expected"),
    [
        ([A.AES_GCM, A.AES_CBC], A.AES_GCM),
        ([A.AES_CBC, A.RSA_PKCS_V15], A.AES_CBC),
        ([A.AES_CBC, A.AES_GCM, A.RSA_OAEP_SHA1], A.AES_GCM),
    ],
)
def test_aes_choice_prefers_gcm(
    supported: list[CryptoAlgorithm], expected: CryptoAlgorithm
) -> None:
    assert A.get_aes_algorithm(supported) is expected


@pytest.mark.parametrize(
    ("supported", "expected"),
    [
        ([A.RSA_PKCS_V15, A.RSA_OAEP_SHA1, A.RSA_OAEP_SHA256], A.RSA_OAEP_SHA256),
        ([A.RSA_PKCS_V15, A.RSA_OAEP_SHA1], A.RSA_OAEP_SHA1),
        ([A.RSA_PKCS_V15, A.AES_GCM], A.RSA_PKCS_V15),
    ],
)
def test_rsa_choice_prefers_oaep_sha256(
    supported: list[CryptoAlgorithm], expected: CryptoAlgorithm
) -> None:
    assert A.get_rsa_algorithm(supported) is expected


def test_choices_without_candidates_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="AES not supported"):
        A.get_aes_algorithm([A.RSA_OAEP_SHA1])
    with pytest.raises(InvalidRequestError, match="RSA not supported"):
        A.get_rsa_algorithm(iter([A.AES_GCM]))


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        (None, None),
        (params(), None),
        (params(block_cipher_mode=BlockCipherMode.CBC), None),
        (params(cryptographic_algorithm=AES), A.AES_GCM),
        (params(cryptographic_algorithm=AES, block_cipher_mode=BlockCipherMode.GCM), A.AES_GCM),
        (params(cryptographic_algorithm=AES, block_cipher_mode=BlockCipherMode.CBC), A.AES_CBC),
        (params(cryptographic_algorithm=RSA), A.RSA_OAEP_SHA256),
        (
            params(
                cryptographic_algorithm=RSA,
                padding_method=PaddingMethod["OAEP"],
                hashing_algorithm=HashingAlgorithm.SHA1,
            ),
            A.RSA_OAEP_SHA1,
        ),
        (
            params(cryptographic_algorithm=RSA, padding_method=PaddingMethod["OAEP"]),
            A.RSA_OAEP_SHA256,
        ),
        (
            params(
                cryptographic_algorithm=RSA,
                padding_method=PaddingMethod["OAEP"],
                hashing_algorithm=HashingAlgorithm.SHA384,
            ),
            A.RSA_OAEP_SHA256,
        ),
        (
            params(cryptographic_algorithm=RSA, padding_method=PaddingMethod["PKCS1v15"]),
            A.RSA_PKCS_V15,
        ),
    ],
)
def test_crypto_algorithm_from_kmip(
    parameters: CryptographicParameters | None, expected: CryptoAlgorithm | None
) -> None:
    assert A.from_kmip(parameters) is expected


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (params(cryptographic_algorithm=AES, block_cipher_mode=BlockCipherMode.ECB), "ECB"),
        (params(cryptographic_algorithm=RSA, padding_method=PaddingMethod["PSS"]), "PSS"),
        (params(cryptographic_algorithm=CryptographicAlgorithm.ChaCha20), "ChaCha20"),
    ],
)
def test_crypto_algorithm_from_kmip_refuses_the_rest(
    parameters: CryptographicParameters, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        A.from_kmip(parameters)


D = DigitalSignatureAlgorithm
H = HashingAlgorithm


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        (None, S.SHA256_WITH_RSA),
        (params(digital_signature_algorithm=D.SHA1WithRSAEncryption), S.SHA1_WITH_RSA),
        (params(digital_signature_algorithm=D.SHA224WithRSAEncryption), S.SHA256_WITH_RSA),
        (params(digital_signature_algorithm=D.SHA256WithRSAEncryption), S.SHA256_WITH_RSA),
        (params(digital_signature_algorithm=D.SHA384WithRSAEncryption), S.SHA384_WITH_RSA),
        (params(digital_signature_algorithm=D.SHA512WithRSAEncryption), S.SHA512_WITH_RSA),
        (params(digital_signature_algorithm=D.RSASSAPSS), S.SHA256_WITH_RSA_PSS),
        (
            params(digital_signature_algorithm=D.RSASSAPSS, hashing_algorithm=H.SHA512),
            S.SHA512_WITH_RSA_PSS,
        ),
        (
            # The signature algorithm wins over padding and hash.
            params(
                digital_signature_algorithm=D.SHA384WithRSAEncryption,
                padding_method=PaddingMethod["PSS"],
                hashing_algorithm=H.SHA1,
            ),
            S.SHA384_WITH_RSA,
        ),
        (params(padding_method=PaddingMethod["PSS"]), S.SHA256_WITH_RSA_PSS),
        (
            params(padding_method=PaddingMethod["PSS"], hashing_algorithm=H.SHA384),
            S.SHA384_WITH_RSA_PSS,
        ),
        (params(hashing_algorithm=H.SHA1), S.SHA1_WITH_RSA),
        (params(hashing_algorithm=H.SHA512), S.SHA512_WITH_RSA),
    ],
)
def test_signing_algorithm_from_kmip(
    parameters: CryptographicParameters | None, expected: SigningAlgorithm
) -> None:
    assert S.from_kmip(parameters) is expected


@pytest.mark.parametrize(
    "parameters",
    [
        params(),
        params(digital_signature_algorithm=D.ECDSAWithSHA256),
        params(padding_method=PaddingMethod["PSS"], hashing_algorithm=H.SHA1),
        params(hashing_algorithm=H.MD5),
        params(padding_method=PaddingMethod["PKCS1v15"]),
    ],
)
def test_signing_algorithm_from_kmip_refuses_the_rest(
    parameters: CryptographicParameters,
) -> None:
    with pytest.raises(InvalidRequestError):
        S.from_kmip(parameters)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("lineage::3::key-1", LabelMetadata("lineage", 3, "key-1", False)),
        ("lineage::12::key-1@latest", LabelMetadata("lineage", 12, "key-1", True)),
        ("a::b::0::k", LabelMetadata("a::b", 0, "k", False)),
        ("plain-label", None),
        ("only::two", None),
        ("name::x1::key", None),
        ("name::-1::key", None),
        ("name::٣::key", None),
        ("::1::key", None),
        ("name::1::", None),
        ("name::1::@latest", None),
    ],
)
def test_label_metadata(label: str, expected: LabelMetadata | None) -> None:
    assert parse_label_metadata(label) == expected
